use std::path::Path;

use serde::Deserialize;

use super::ModelError;

/// The activation between a layer's intermediate and output projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU with erf, Hugging Face's `gelu`.
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
    Relu,
}

/// The fields of a Hugging Face BERT `config.json` that the model needs.
///
/// Unknown keys are allowed on purpose: Hugging Face configs carry many fields that do not
/// change the computation (`transformers_version`, `gradient_checkpointing`, ...).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_activation")]
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// `BertForSequenceClassification` and friends; empty for a bare encoder.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Labels of a classification head; their count is the head's output size.
    #[serde(default)]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub num_labels: Option<usize>,
    /// `bert` (or absent); other architectures (RoBERTa's position offsets, DistilBERT's
    /// layout) would load wrongly or not at all, so they are refused up front.
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_activation() -> Activation {
    Activation::Gelu
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".to_string()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_initializer_range() -> f64 {
    0.02
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|err| ModelError::io(path, err))?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|err| ModelError::Config {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        config.validate().map_err(|message| ModelError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        // Far above any BERT (the largest have 48 layers, hidden 2,048, vocabularies of a few
        // hundred thousand): a size beyond them is a broken file, refused before anything is
        // allocated for it.
        let limits = [
            ("num_hidden_layers", self.num_hidden_layers, 1_000),
            ("hidden_size", self.hidden_size, 65_536),
            ("num_attention_heads", self.num_attention_heads, 1_024),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("vocab_size", self.vocab_size, 1 << 24),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 20,
            ),
            ("type_vocab_size", self.type_vocab_size, 1 << 16),
        ];
        for (field, value, limit) in limits {
            if value > limit {
                return Err(format!(
                    "{field} {value} is beyond what repro loads (at most {limit}): is config.json \
                     right?"
                ));
            }
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(model_type) = self.model_type.as_deref().filter(|t| *t != "bert") {
            return Err(format!(
                "model_type `{model_type}` is not supported: repro runs BERT-architecture encoders (model_type `bert`)"
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            ));
        }
        Ok(())
    }

    /// Size of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Output size of the classification head, as `transformers` derives it.
    pub fn label_count(&self) -> usize {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|labels| labels.len()))
            .unwrap_or(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minilm_style_config_with_extra_keys() {
        let json = r#"{"architectures":["BertModel"],"attention_probs_dropout_prob":0.1,
            "gradient_checkpointing":false,"hidden_act":"gelu","hidden_dropout_prob":0.1,
            "hidden_size":384,"initializer_range":0.02,"intermediate_size":1536,
            "layer_norm_eps":1e-12,"max_position_embeddings":512,"model_type":"bert",
            "num_attention_heads":12,"num_hidden_layers":6,"pad_token_id":0,
            "position_embedding_type":"absolute","transformers_version":"4.8.2",
            "type_vocab_size":2,"use_cache":true,"vocab_size":30522}"#;
        let config: BertConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.num_hidden_layers, 6);
        assert_eq!(config.head_size(), 32);
        assert_eq!(config.hidden_act, Activation::Gelu);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn sizes_beyond_any_bert_are_refused_before_loading() {
        let config: BertConfig = serde_json::from_str(
            r#"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 1000000000,
                "num_attention_heads": 12, "intermediate_size": 1536,
                "max_position_embeddings": 512, "type_vocab_size": 2}"#,
        )
        .unwrap();
        let message = config.validate().unwrap_err();
        assert!(
            message.contains("num_hidden_layers 1000000000"),
            "{message}"
        );
        assert!(message.contains("at most 1000"), "{message}");
    }

    #[test]
    fn rejects_heads_that_do_not_divide_hidden_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"vocab_size":10,"hidden_size":10,"num_hidden_layers":1,"num_attention_heads":3,
               "intermediate_size":8,"max_position_embeddings":16}"#,
        )
        .unwrap();
        let message = BertConfig::from_file(&path).unwrap_err().to_string();
        assert!(message.contains("config.json"), "{message}");
        assert!(message.contains("num_attention_heads 3"), "{message}");
    }

    #[test]
    fn refuses_other_architectures() {
        let base = r#""vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":8,"max_position_embeddings":16"#;
        let roberta: BertConfig =
            serde_json::from_str(&format!(r#"{{{base},"model_type":"roberta"}}"#)).unwrap();
        let message = roberta.validate().unwrap_err();
        assert!(message.contains("model_type `roberta`"), "{message}");
        let bert: BertConfig =
            serde_json::from_str(&format!(r#"{{{base},"model_type":"bert"}}"#)).unwrap();
        assert!(bert.validate().is_ok());
    }

    #[test]
    fn label_count_follows_transformers_rules() {
        let base = r#""vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":8,"max_position_embeddings":16"#;
        let with_labels: BertConfig =
            serde_json::from_str(&format!(r#"{{{base},"id2label":{{"0":"LABEL_0"}}}}"#)).unwrap();
        assert_eq!(with_labels.label_count(), 1);
        let bare: BertConfig = serde_json::from_str(&format!("{{{base}}}")).unwrap();
        assert_eq!(bare.label_count(), 2);
    }
}
