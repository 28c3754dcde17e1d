//! Trainable BERT parameters: every weight a candle [`Var`], initialised from a checkpoint,
//! from BERT's initialiser, or by infusing a student with a teacher's first layers.
//!
//! The variables are kept in a name-sorted list rather than a `candle_nn::VarMap` (a
//! `HashMap`): gradient norms are then summed in the same order on every run, and a tensor
//! the model asks for but the list lacks is an error instead of a silently created variable.
//! The model is built from the variables' own tensors, so the optimiser's in-place updates are
//! what the next forward pass reads.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;

use super::save;
use super::TrainError;
use crate::model::layout;
use crate::model::{
    expected_tensors, read_checkpoint, BertConfig, BertModel, Checkpoint, ModelFiles, TextTokenizer,
};
use crate::rng::SplitMix64;

/// How a student dual encoder's weights start. Written `random`, `ce:K` or `de:K` (in
/// experiment files, cache keys and the store alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StudentInit {
    /// Every weight from BERT's initialiser.
    Random,
    /// Embeddings and layers `0..k` copied from the teacher cross encoder, the rest random.
    CrossEncoder(usize),
    /// Embeddings and layers `0..k` copied from the teacher dual encoder, the rest random.
    DualEncoder(usize),
}

impl StudentInit {
    /// How many source layers are copied (`None`: nothing, not even the embeddings).
    pub fn copied_layers(self) -> Option<usize> {
        match self {
            StudentInit::Random => None,
            StudentInit::CrossEncoder(k) | StudentInit::DualEncoder(k) => Some(k),
        }
    }
}

impl fmt::Display for StudentInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StudentInit::Random => f.write_str("random"),
            StudentInit::CrossEncoder(k) => write!(f, "ce:{k}"),
            StudentInit::DualEncoder(k) => write!(f, "de:{k}"),
        }
    }
}

impl TryFrom<String> for StudentInit {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<StudentInit> for String {
    fn from(init: StudentInit) -> Self {
        init.to_string()
    }
}

impl FromStr for StudentInit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expected = "expected random, ce:K or de:K with K a number of layers";
        if s == "random" {
            return Ok(StudentInit::Random);
        }
        let (source, layers) = s
            .split_once(':')
            .ok_or_else(|| format!("unknown student init `{s}` ({expected})"))?;
        let layers: usize = layers.parse().map_err(|_| {
            format!("student init `{s}`: `{layers}` is not a layer count ({expected})")
        })?;
        match source {
            "ce" => Ok(StudentInit::CrossEncoder(layers)),
            "de" => Ok(StudentInit::DualEncoder(layers)),
            _ => Err(format!("unknown student init `{s}` ({expected})")),
        }
    }
}

/// A BERT whose weights are variables, with what saving it needs: the source's
/// `config.json` and tokenizer.
pub struct TrainableBert {
    vars: Vec<(String, Var)>,
    model: BertModel,
    config: BertConfig,
    /// The source checkpoint's `config.json`, which saving extends (unknown keys kept).
    config_json: serde_json::Map<String, serde_json::Value>,
    tokenizer_dir: PathBuf,
    device: Device,
}

impl TrainableBert {
    /// Every tensor of the checkpoint in `dir` (with its head, when it has one) as a variable.
    pub fn from_checkpoint(dir: &Path, dtype: DType) -> Result<Self, TrainError> {
        let checkpoint = read_dir(dir)?;
        let config = checkpoint.config.clone();
        let with_head = checkpoint.has_head;
        Self::assemble(&checkpoint, config, with_head, dtype, 0, &|_| true)
    }

    /// A one-logit cross encoder to fine-tune from the checkpoint in `base`: its encoder, its
    /// pooler when it has one, and its classifier when that has one label. What is missing
    /// is drawn from BERT's initialiser with `seed`, as `transformers` does when
    /// `BertForSequenceClassification` is loaded from a bare encoder.
    pub fn cross_encoder(base: &Path, seed: u64, dtype: DType) -> Result<Self, TrainError> {
        let checkpoint = read_dir(base)?;
        let keep_classifier = checkpoint.has_head && checkpoint.config.label_count() == 1;
        let mut config = checkpoint.config.clone();
        config.num_labels = Some(1);
        config.id2label = Some([("0".to_string(), "LABEL_0".to_string())].into());
        Self::assemble(&checkpoint, config, true, dtype, seed, &|name| {
            keep_classifier || !name.starts_with("classifier.")
        })
    }

    /// A dual-encoder student of `layers` layers shaped like the checkpoint in `source`
    /// (which also gives the tokenizer): with `init` ce:k or de:k its embeddings and layers
    /// `0..k` are copied from `source`, and every other weight is drawn with `seed`.
    pub fn student(
        source: &Path,
        layers: usize,
        init: StudentInit,
        seed: u64,
        dtype: DType,
    ) -> Result<Self, TrainError> {
        let checkpoint = read_dir(source)?;
        if layers == 0 {
            return Err(TrainError::Setting(
                "a student needs at least one layer".to_string(),
            ));
        }
        let copied = init.copied_layers();
        if let Some(k) = copied {
            if k > layers {
                return Err(TrainError::Setting(format!(
                    "student init {init} copies {k} layers into a student of {layers}"
                )));
            }
            let available = checkpoint.config.num_hidden_layers;
            if k > available {
                return Err(TrainError::Setting(format!(
                    "student init {init} copies {k} layers but {} has {available}",
                    source.display()
                )));
            }
        }
        let mut config = checkpoint.config.clone();
        config.num_hidden_layers = layers;
        config.num_labels = None;
        config.id2label = None;
        config.architectures = vec!["BertModel".to_string()];
        let copies = |name: &str| match copied {
            None => false,
            Some(k) => {
                name.starts_with("embeddings.") || layer_index(name).is_some_and(|index| index < k)
            }
        };
        Self::assemble(&checkpoint, config, false, dtype, seed, &copies)
    }

    /// Builds the variables (a copy of the checkpoint's tensor where `copy` says so and the
    /// checkpoint has it, BERT's initialiser otherwise, drawn in [`expected_tensors`] order)
    /// and the model over them.
    fn assemble(
        checkpoint: &Checkpoint,
        config: BertConfig,
        with_head: bool,
        dtype: DType,
        seed: u64,
        copy: &dyn Fn(&str) -> bool,
    ) -> Result<Self, TrainError> {
        let device = Device::Cpu;
        let mut rng = SplitMix64::new(seed);
        let mut vars = BTreeMap::new();
        for (name, shape) in expected_tensors(&config, config.num_hidden_layers, with_head) {
            let stored = checkpoint.tensors.get(&name).filter(|_| copy(&name));
            let initial = match stored {
                Some(tensor) => tensor.to_dtype(dtype)?.to_device(&device)?,
                None => bert_initial(&name, &shape, &config, &mut rng)?
                    .to_dtype(dtype)?
                    .to_device(&device)?,
            };
            vars.insert(name, Var::from_tensor(&initial)?);
        }
        let tensors: HashMap<String, Tensor> = vars
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, dtype, &device);
        let mut model = BertModel::load(vb, &config, config.num_hidden_layers, with_head)?;
        // The fast kernels read fused copies of the weights made at load time, which the
        // optimiser's updates do not reach; candle's ops read the variables themselves.
        model.set_fast_kernels(false);
        Ok(TrainableBert {
            vars: vars.into_iter().collect(),
            model,
            config,
            config_json: read_config_json(&checkpoint.files.config)?,
            tokenizer_dir: checkpoint.files.dir.clone(),
            device,
        })
    }

    /// The model over the variables. Its inference [`forward`](BertModel::forward) uses
    /// candle's ops (the fast kernels would read stale copies of the weights).
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// The configuration the saved model will have.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Every variable with its bare name (`embeddings.*`, `encoder.layer.{i}.*`, `pooler.*`,
    /// `classifier.*`), sorted by name.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Where each tensor of the encoder sits in [`vars`](Self::vars), for the fused
    /// training pass.
    pub(crate) fn encoder_layout(
        &self,
    ) -> Result<crate::model::backprop::EncoderTensors<usize>, TrainError> {
        crate::model::backprop::EncoderTensors::from_names(self.config.num_hidden_layers, |name| {
            self.vars
                .binary_search_by(|(candidate, _)| candidate.as_str().cmp(name))
                .map_err(|_| TrainError::Setting(format!("the model has no variable `{name}`")))
        })
    }

    pub fn var(&self, name: &str) -> Option<&Var> {
        self.vars
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, var)| var)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The tokenizer of the source checkpoint, truncating at `max_len`.
    pub fn tokenizer(&self, max_len: usize) -> Result<TextTokenizer, TrainError> {
        if max_len > self.config.max_position_embeddings {
            return Err(TrainError::Setting(format!(
                "max_len {max_len} exceeds the model's {} position embeddings",
                self.config.max_position_embeddings
            )));
        }
        Ok(TextTokenizer::from_dir(&self.tokenizer_dir, max_len)?)
    }

    /// Saves a Hugging Face `BertForSequenceClassification` directory (atomically: `output`
    /// appears complete or not at all).
    pub fn save_cross_encoder(&self, output: &Path) -> Result<(), TrainError> {
        if !self.model.has_classifier() {
            return Err(TrainError::Setting(
                "cannot save a cross encoder without a classification head".to_string(),
            ));
        }
        let mut config = self.config_json.clone();
        config.insert(
            "architectures".into(),
            serde_json::json!(["BertForSequenceClassification"]),
        );
        config.insert("num_labels".into(), serde_json::json!(1));
        config.insert("id2label".into(), serde_json::json!({"0": "LABEL_0"}));
        config.insert("label2id".into(), serde_json::json!({"LABEL_0": 0}));
        config
            .entry("model_type")
            .or_insert_with(|| serde_json::json!("bert"));
        let tensors = self.named_tensors(|name| {
            if name.starts_with("classifier.") {
                name.to_string()
            } else {
                format!("bert.{name}")
            }
        })?;
        save::write_model_dir(output, |dir| {
            save::write_json(
                &dir.join(layout::CONFIG_FILE),
                &serde_json::Value::Object(config),
            )?;
            save::write_weights(&dir.join(layout::SAFETENSORS_FILE), &tensors)?;
            save::copy_tokenizer_files(&self.tokenizer_dir, dir)
        })
    }

    /// Saves a sentence-transformers directory: the encoder as a Hugging Face `BertModel`
    /// (bare tensor names), then mean pooling; `max_seq_length` goes into
    /// `sentence_bert_config.json`.
    pub fn save_dual_encoder(
        &self,
        output: &Path,
        max_seq_length: usize,
    ) -> Result<(), TrainError> {
        let mut config = self.config_json.clone();
        for key in ["id2label", "label2id", "num_labels"] {
            config.remove(key);
        }
        config.insert("architectures".into(), serde_json::json!(["BertModel"]));
        config.insert(
            "num_hidden_layers".into(),
            serde_json::json!(self.config.num_hidden_layers),
        );
        config
            .entry("model_type")
            .or_insert_with(|| serde_json::json!("bert"));
        let tensors = self.named_tensors(|name| name.to_string())?;
        let hidden = self.config.hidden_size;
        save::write_model_dir(output, |dir| {
            save::write_json(
                &dir.join(layout::CONFIG_FILE),
                &serde_json::Value::Object(config),
            )?;
            save::write_weights(&dir.join(layout::SAFETENSORS_FILE), &tensors)?;
            save::copy_tokenizer_files(&self.tokenizer_dir, dir)?;
            save::write_sentence_transformers_files(dir, hidden, max_seq_length)
        })
    }

    /// The variables' current values in f32 under the names `rename` gives.
    fn named_tensors(
        &self,
        rename: impl Fn(&str) -> String,
    ) -> Result<HashMap<String, Tensor>, TrainError> {
        self.vars
            .iter()
            .map(|(name, var)| {
                let value = var
                    .as_tensor()
                    .detach()
                    .to_dtype(DType::F32)?
                    .contiguous()?;
                Ok((rename(name), value))
            })
            .collect()
    }
}

/// The checkpoint in `dir` with all its layers.
fn read_dir(dir: &Path) -> Result<Checkpoint, TrainError> {
    let files = ModelFiles::locate(dir)?;
    let config = BertConfig::from_file(&files.config)?;
    let depth = config.num_hidden_layers;
    Ok(read_checkpoint(files, config, depth)?)
}

fn read_config_json(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|err| TrainError::io(path, err))?;
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(TrainError::Json {
            path: path.to_path_buf(),
            message: "config.json is not a JSON object".to_string(),
        }),
        Err(err) => Err(TrainError::Json {
            path: path.to_path_buf(),
            message: err.to_string(),
        }),
    }
}

/// `encoder.layer.{i}.…` → `i`.
fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("encoder.layer.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// BERT's initialiser (`BertPreTrainedModel._init_weights`): weights and embeddings from
/// normal(0, initializer_range), biases 0, LayerNorm γ = 1 and β = 0, and the padding row of
/// the word embeddings 0.
fn bert_initial(
    name: &str,
    shape: &[usize],
    config: &BertConfig,
    rng: &mut SplitMix64,
) -> candle_core::Result<Tensor> {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = if name.ends_with("LayerNorm.weight") {
        vec![1.0; count]
    } else if name.ends_with(".bias") {
        vec![0.0; count]
    } else {
        let std = config.initializer_range as f32;
        let mut values: Vec<f32> = (0..count).map(|_| std * rng.normal()).collect();
        if name == "embeddings.word_embeddings.weight" && config.pad_token_id < shape[0] {
            let width = shape[1];
            let row = config.pad_token_id * width;
            values[row..row + width].fill(0.0);
        }
        values
    };
    Tensor::from_vec(values, shape, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};

    #[test]
    fn student_init_parses_and_displays() {
        for (text, init) in [
            ("random", StudentInit::Random),
            ("ce:1", StudentInit::CrossEncoder(1)),
            ("de:12", StudentInit::DualEncoder(12)),
            ("ce:0", StudentInit::CrossEncoder(0)),
        ] {
            assert_eq!(text.parse::<StudentInit>().unwrap(), init);
            assert_eq!(init.to_string(), text);
        }
        for bad in ["", "ce", "ce:", "ce:x", "xe:1", "de:-1", "Random"] {
            let message = bad.parse::<StudentInit>().unwrap_err();
            assert!(message.contains("ce:K"), "{bad}: {message}");
        }
    }

    #[test]
    fn layer_index_reads_encoder_layer_names() {
        assert_eq!(
            layer_index("encoder.layer.11.output.dense.weight"),
            Some(11)
        );
        assert_eq!(layer_index("embeddings.LayerNorm.weight"), None);
    }

    fn values(model: &TrainableBert, name: &str) -> Vec<f32> {
        model
            .var(name)
            .unwrap()
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    #[test]
    fn students_copy_the_first_k_layers_and_draw_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        write_random_bert(
            dir.path(),
            &tiny_config(3, TINY_VOCAB.len()),
            TINY_VOCAB,
            5,
            false,
        )
        .unwrap();
        let teacher = TrainableBert::from_checkpoint(dir.path(), DType::F32).unwrap();
        let student =
            TrainableBert::student(dir.path(), 2, StudentInit::DualEncoder(1), 9, DType::F32)
                .unwrap();
        assert_eq!(student.config().num_hidden_layers, 2);
        assert_eq!(student.model().depth(), 2);
        let copied = [
            "embeddings.word_embeddings.weight",
            "encoder.layer.0.attention.self.query.weight",
            "encoder.layer.0.output.LayerNorm.bias",
        ];
        for name in copied {
            assert_eq!(values(&student, name), values(&teacher, name), "{name}");
        }
        let drawn = "encoder.layer.1.attention.self.query.weight";
        assert_ne!(values(&student, drawn), values(&teacher, drawn));
        // BERT's initialiser: std 0.02, zero biases, unit LayerNorm scale.
        let weights = values(&student, drawn);
        let std = (weights.iter().map(|v| v * v).sum::<f32>() / weights.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.003, "std {std}");
        assert!(values(&student, "encoder.layer.1.output.dense.bias")
            .iter()
            .all(|&v| v == 0.0));
        assert!(values(&student, "encoder.layer.1.output.LayerNorm.weight")
            .iter()
            .all(|&v| v == 1.0));

        let random =
            TrainableBert::student(dir.path(), 1, StudentInit::Random, 9, DType::F32).unwrap();
        let words = values(&random, "embeddings.word_embeddings.weight");
        assert_ne!(words, values(&teacher, "embeddings.word_embeddings.weight"));
        assert!(
            words[..32].iter().all(|&v| v == 0.0),
            "the [PAD] row is zero"
        );

        let too_many =
            TrainableBert::student(dir.path(), 2, StudentInit::DualEncoder(3), 9, DType::F32);
        assert!(matches!(too_many, Err(TrainError::Setting(_))));
        let deeper_than_source =
            TrainableBert::student(dir.path(), 5, StudentInit::CrossEncoder(4), 9, DType::F32);
        let message = deeper_than_source.err().unwrap().to_string();
        assert!(message.contains("has 3"), "{message}");
    }

    #[test]
    fn cross_encoder_from_a_bare_encoder_gets_a_new_one_logit_head() {
        let dir = tempfile::tempdir().unwrap();
        write_random_bert(
            dir.path(),
            &tiny_config(1, TINY_VOCAB.len()),
            TINY_VOCAB,
            5,
            false,
        )
        .unwrap();
        let a = TrainableBert::cross_encoder(dir.path(), 1, DType::F32).unwrap();
        let b = TrainableBert::cross_encoder(dir.path(), 2, DType::F32).unwrap();
        assert!(a.model().has_classifier());
        assert_eq!(a.var("classifier.weight").unwrap().dims(), &[1, 32]);
        assert_ne!(
            values(&a, "classifier.weight"),
            values(&b, "classifier.weight")
        );
        assert_eq!(
            values(&a, "encoder.layer.0.output.dense.weight"),
            values(&b, "encoder.layer.0.output.dense.weight")
        );
    }
}
