//! Writing BERT checkpoints with seeded random weights, in Hugging Face layout.
//!
//! Tests build their own tiny models with this instead of shipping weights, and studies use
//! it for randomly initialised baselines. The generator is [`crate::rng`]'s SplitMix64 +
//! Box–Muller, so a seed gives the same bytes on every machine and thread count.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::config::BertConfig;
use super::loading::expected_tensors;
use super::ModelError;
use crate::rng::SplitMix64;

/// A vocabulary big enough for test sentences: special tokens, lower-case words, and
/// `##`-suffixes so WordPiece splitting is exercised.
pub const TINY_VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "the", "of", "and", "in", "is",
    "cat", "dog", "sat", "on", "mat", "cells", "protein", "gene", "cancer", "risk", "study", "air",
    "flow", "wing", "shock", "wave", "heat", "pressure", "boundary", "layer", "##s", "##ing",
    "##ed", "what", "how", "does", "effect", "high", "low", "speed", "model",
];

/// A small BERT configuration for tests: hidden 32, 4 heads, intermediate 64.
pub fn tiny_config(layers: usize, vocab_size: usize) -> BertConfig {
    BertConfig {
        vocab_size,
        hidden_size: 32,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        intermediate_size: 64,
        hidden_act: super::Activation::Gelu,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        position_embedding_type: "absolute".to_string(),
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
        initializer_range: 0.02,
        architectures: Vec::new(),
        id2label: None,
        num_labels: None,
        model_type: Some("bert".to_string()),
    }
}

/// Writes `config.json`, `vocab.txt` and `model.safetensors` for a randomly initialised BERT
/// into `dir`. With `cross_encoder`, the checkpoint is a 1-label
/// `BertForSequenceClassification` (`bert.*` names plus `classifier.*`).
pub fn write_random_bert(
    dir: &Path,
    config: &BertConfig,
    vocab: &[&str],
    seed: u64,
    cross_encoder: bool,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|err| ModelError::io(dir, err))?;
    let mut config = config.clone();
    if cross_encoder {
        config.architectures = vec!["BertForSequenceClassification".to_string()];
        config.id2label = Some([("0".to_string(), "LABEL_0".to_string())].into());
    } else {
        config.architectures = vec!["BertModel".to_string()];
    }
    let mut rng = SplitMix64::new(seed);
    let mut tensors = HashMap::new();
    for (name, shape) in expected_tensors(&config, config.num_hidden_layers, cross_encoder) {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("LayerNorm.weight") {
            vec![1.0; count]
        } else if name.ends_with(".bias") {
            (0..count).map(|_| 0.02 * rng.normal()).collect()
        } else {
            // Larger than BERT's 0.02 so that a tiny model's layers differ visibly.
            (0..count).map(|_| 0.2 * rng.normal()).collect()
        };
        let stored = if cross_encoder && !name.starts_with("classifier.") {
            format!("bert.{name}")
        } else {
            name
        };
        tensors.insert(stored, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights)?;
    let config_json = serde_json::to_string_pretty(&config_to_json(&config))
        .map_err(|err| ModelError::Setting(err.to_string()))?;
    std::fs::write(dir.join("config.json"), config_json)
        .map_err(|err| ModelError::io(dir.join("config.json"), err))?;
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n")
        .map_err(|err| ModelError::io(dir.join("vocab.txt"), err))?;
    Ok(())
}

fn config_to_json(config: &BertConfig) -> serde_json::Value {
    let mut value = serde_json::json!({
        "model_type": "bert",
        "architectures": config.architectures,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "position_embedding_type": config.position_embedding_type,
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "initializer_range": config.initializer_range,
    });
    if let (Some(labels), Some(object)) = (&config.id2label, value.as_object_mut()) {
        object.insert("id2label".to_string(), serde_json::json!(labels));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::{load_model, InputFormat, TensorNaming};

    #[test]
    fn same_seed_same_bytes_different_seed_different_bytes() {
        let config = tiny_config(2, TINY_VOCAB.len());
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        write_random_bert(a.path(), &config, TINY_VOCAB, 7, false).unwrap();
        write_random_bert(b.path(), &config, TINY_VOCAB, 7, false).unwrap();
        write_random_bert(c.path(), &config, TINY_VOCAB, 8, false).unwrap();
        let read =
            |dir: &tempfile::TempDir| std::fs::read(dir.path().join("model.safetensors")).unwrap();
        assert_eq!(read(&a), read(&b));
        assert_ne!(read(&a), read(&c));
    }

    #[test]
    fn cross_encoder_checkpoint_loads_with_prefixed_names_and_a_head() {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(2, TINY_VOCAB.len());
        write_random_bert(dir.path(), &config, TINY_VOCAB, 3, true).unwrap();
        let loaded = load_model(dir.path(), 32, None, &Device::Cpu).unwrap();
        assert_eq!(loaded.naming, TensorNaming::Prefixed("bert.".to_string()));
        assert!(loaded.model.has_classifier());
        let pair = loaded.tokenizer.encode_pair("cat", "the cat sat").unwrap();
        let batch =
            crate::model::Batch::new(&[&pair], loaded.tokenizer.pad_id(), &Device::Cpu).unwrap();
        let scores = loaded.model.score_pairs(&batch).unwrap();
        assert_eq!(scores.len(), 1);
        assert!(scores[0].is_finite());
        let single = loaded.tokenizer.encode("cat", InputFormat::Single).unwrap();
        assert_eq!(single.ids, vec![2, 13, 3]);
    }
}
