//! Writing BERT checkpoints with seeded random weights, in Hugging Face layout.
//!
//! Tests build their own tiny models with this instead of shipping weights, and studies use
//! it for randomly initialised baselines. The generator is a fixed SplitMix64 + Box–Muller so
//! a seed gives the same bytes on every machine and thread count.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::config::BertConfig;
use super::loading::expected_tensors;
use super::ModelError;

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

/// SplitMix64: tiny, fast, and identical everywhere. Also the generator of training's
/// initialisation, shuffling and dropout masks.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        Self::mix(self.0)
    }

    /// A uniform draw from `0..n` (multiply-shift reduction of one 64-bit draw).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher–Yates over all of `items`, from the back (one draw per position).
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// Partial Fisher–Yates from the front: the first `count` items become a uniform sample
    /// of all of them, in draw order; the rest is left in some order.
    pub(crate) fn sample_prefix<T>(&mut self, items: &mut [T], count: usize) {
        for slot in 0..count.min(items.len()) {
            let pick = slot + self.below(items.len() - slot);
            items.swap(slot, pick);
        }
    }

    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    #[inline(always)]
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Reserves the next `count` draws and returns them as a [`DrawRange`] whose draws can be
    /// computed in any order and on any thread: SplitMix64's state advances by a constant,
    /// so draw `i` is a function of the starting state and `i` alone.
    pub(crate) fn reserve(&mut self, count: u64) -> DrawRange {
        let start = self.0;
        self.0 = self.0.wrapping_add(Self::GAMMA.wrapping_mul(count));
        DrawRange { start }
    }

    /// Uniform in (0, 1].
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal by Box–Muller.
    pub(crate) fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

/// Draws `0, 1, …` of a [`SplitMix64`] stream from a fixed point, by index: the same values
/// `next_u64` would have returned one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DrawRange {
    start: u64,
}

impl DrawRange {
    #[inline(always)]
    pub(crate) fn draw(&self, index: u64) -> u64 {
        SplitMix64::mix(
            self.start
                .wrapping_add(SplitMix64::GAMMA.wrapping_mul(index.wrapping_add(1))),
        )
    }
}

#[cfg(test)]
mod draw_range_tests {
    use super::*;

    #[test]
    fn reserved_draws_are_the_serial_draws() {
        let mut serial = SplitMix64::new(42);
        let mut jumping = SplitMix64::new(42);
        let range = jumping.reserve(5);
        let expected: Vec<u64> = (0..5).map(|_| serial.next_u64()).collect();
        let by_index: Vec<u64> = (0..5).map(|i| range.draw(i)).collect();
        assert_eq!(by_index, expected);
        assert_eq!(
            jumping.next_u64(),
            serial.next_u64(),
            "the stream continues after the range"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draws the samplers make, spelled out: one 64-bit draw per position, reduced by
    /// multiply-shift (what every shuffle in the crate did inline before these methods).
    #[test]
    fn shuffles_and_samples_make_the_documented_draws() {
        let reduce = |draw: u64, n: usize| ((draw as u128 * n as u128) >> 64) as usize;
        let mut expected: Vec<u32> = (0..10).collect();
        let mut draws = SplitMix64::new(5);
        for i in (1..expected.len()).rev() {
            let j = reduce(draws.next_u64(), i + 1);
            expected.swap(i, j);
        }
        let mut shuffled: Vec<u32> = (0..10).collect();
        SplitMix64::new(5).shuffle(&mut shuffled);
        assert_eq!(shuffled, expected);

        let mut expected: Vec<u32> = (0..10).collect();
        let mut draws = SplitMix64::new(6);
        for slot in 0..4 {
            let pick = slot + reduce(draws.next_u64(), 10 - slot);
            expected.swap(slot, pick);
        }
        let mut sampled: Vec<u32> = (0..10).collect();
        SplitMix64::new(6).sample_prefix(&mut sampled, 4);
        assert_eq!(sampled, expected);
        let mut short = vec![1, 2];
        SplitMix64::new(6).sample_prefix(&mut short, 5);
        assert_eq!(short.len(), 2);
    }
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
