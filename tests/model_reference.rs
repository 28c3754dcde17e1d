//! all-MiniLM-L6-v2 against reference values from Hugging Face transformers
//! (`scripts/gen_model_reference.py` wrote `tests/fixtures/minilm_reference.json`).
//!
//! Needs the real model: `make models` provisions it (CI does this before `make test`).

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use repro::model::{
    encode_texts, load_model, Batch, EncodeOptions, InputFormat, Pooling, Precision, TensorNaming,
};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let worst = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= TOLERANCE,
        "{what}: max |diff| {worst} > {TOLERANCE}"
    );
}

#[test]
fn hidden_states_and_poolings_match_transformers() {
    let reference = reference();
    let layers: Vec<usize> = reference["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let input: InputFormat = case["input"].as_str().unwrap().parse().unwrap();
        let max_len = case["max_len"].as_u64().unwrap() as usize;
        let loaded = load_model(&common::minilm_dir(), max_len, None, &Device::Cpu).unwrap();
        let label = format!(
            "{input} max_len {max_len} `{}`",
            &text[..text.len().min(30)]
        );

        let tokenized = loaded.tokenizer.encode(text, input).unwrap();
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let type_ids: Vec<u32> = case["type_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tokenized.ids, ids, "{label}: token ids");
        assert_eq!(tokenized.type_ids, type_ids, "{label}: token type ids");

        let batch = Batch::new(&[&tokenized], loaded.tokenizer.pad_id(), &Device::Cpu).unwrap();
        let states = loaded.model.forward(&batch, 6).unwrap();
        let options = EncodeOptions {
            layers: layers.clone(),
            poolings: Pooling::ALL.to_vec(),
            input,
            batch_size: 8,
            normalize: false,
        };
        let pooled = encode_texts(
            &loaded.model,
            &loaded.tokenizer,
            &[text],
            &options,
            &mut |_| {},
        )
        .unwrap();
        for &layer in &layers {
            let expected = &case["layers"][layer.to_string()];
            let hidden = states.layers[layer].squeeze(0).unwrap();
            let tokens = hidden.dim(0).unwrap();
            let first = hidden.get(0).unwrap().to_vec1::<f32>().unwrap();
            let last = hidden.get(tokens - 1).unwrap().to_vec1::<f32>().unwrap();
            assert_close(
                &first,
                &floats(&expected["first_token"]),
                &format!("{label} layer {layer} first token"),
            );
            assert_close(
                &last,
                &floats(&expected["last_token"]),
                &format!("{label} layer {layer} last token"),
            );
            for pooling in Pooling::ALL {
                let actual = pooled.get(layer, pooling).unwrap().row(0);
                assert_close(
                    actual,
                    &floats(&expected[pooling.name()]),
                    &format!("{label} layer {layer} {pooling}"),
                );
            }
        }
    }
}

#[test]
fn sentence_embeddings_match_sentence_transformers() {
    let reference = &reference()["sentence_transformers"];
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let max_len = reference["max_len"].as_u64().unwrap() as usize;
    let loaded = load_model(&common::minilm_dir(), max_len, None, &Device::Cpu).unwrap();
    let options = EncodeOptions {
        layers: vec![6],
        poolings: vec![Pooling::Mean],
        input: InputFormat::Single,
        batch_size: 2,
        normalize: true,
    };
    let pooled = encode_texts(
        &loaded.model,
        &loaded.tokenizer,
        &sentences,
        &options,
        &mut |_| {},
    )
    .unwrap();
    let embeddings = pooled.get(6, Pooling::Mean).unwrap();
    for (row, expected) in reference["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let expected = floats(expected);
        let actual = embeddings.row(row);
        assert_close(actual, &expected, &format!("sentence {row}"));
        let cosine: f32 = actual.iter().zip(&expected).map(|(a, b)| a * b).sum();
        assert!(cosine >= 0.99999, "sentence {row}: cosine {cosine}");
    }
}

/// A cross encoder in `BertForSequenceClassification` layout (`bert.*` + `classifier.*`),
/// built from all-MiniLM-L6-v2 and the reference head, scores pairs as transformers does.
#[test]
fn cross_encoder_logits_match_transformers() {
    let reference = &reference()["cross_encoder"];
    let source = common::minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    let tensors =
        candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut prefixed: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(name, tensor)| (format!("bert.{name}"), tensor))
        .collect();
    let weight = floats(&reference["classifier_weight"]);
    let hidden = weight.len();
    prefixed.insert(
        "classifier.weight".into(),
        Tensor::from_vec(weight, (1, hidden), &Device::Cpu).unwrap(),
    );
    let bias = reference["classifier_bias"].as_f64().unwrap() as f32;
    prefixed.insert(
        "classifier.bias".into(),
        Tensor::from_vec(vec![bias], 1, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&prefixed, dir.path().join("model.safetensors")).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).unwrap())
            .unwrap();
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["id2label"] = serde_json::json!({"0": "LABEL_0"});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        source.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();

    let max_len = reference["max_len"].as_u64().unwrap() as usize;
    let loaded = load_model(dir.path(), max_len, None, &Device::Cpu).unwrap();
    assert_eq!(loaded.naming, TensorNaming::Prefixed("bert.".into()));
    let pairs: Vec<_> = reference["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            loaded
                .tokenizer
                .encode_pair(pair[0].as_str().unwrap(), pair[1].as_str().unwrap())
                .unwrap()
        })
        .collect();
    let members: Vec<_> = pairs.iter().collect();
    let batch = Batch::new(&members, loaded.tokenizer.pad_id(), &Device::Cpu).unwrap();
    let scores = loaded.model.score_pairs(&batch).unwrap();
    assert_close(
        &scores,
        &floats(&reference["logits"]),
        "cross-encoder logits",
    );
}

/// bf16 products (bf16 inputs, f32 sums) against f32 on 48 SciFact documents at 256 tokens:
/// every layer × pooling × input of all-MiniLM-L6-v2 embeds each document within cosine
/// 0.999 of f32. A CPU without a bf16 kernel must refuse bf16 with an error that says so.
#[test]
fn bf16_embeddings_stay_within_cosine_0999_of_f32() {
    let corpus =
        repro::data::beir::read_corpus(&common::mirror().join("scifact/corpus.jsonl")).unwrap();
    let texts: Vec<String> = corpus.iter().take(48).map(|d| d.full_text()).collect();
    let f32_model = load_model(&common::minilm_dir(), 256, None, &Device::Cpu).unwrap();
    let mut bf16_model = load_model(&common::minilm_dir(), 256, None, &Device::Cpu).unwrap();
    if let Err(error) = bf16_model.model.set_precision(Precision::Bf16) {
        let message = error.to_string();
        assert!(message.contains("AMX-BF16 or AVX512-BF16"), "{message}");
        eprintln!("no bf16 kernel on this CPU: {message}");
        return;
    }
    for input in [InputFormat::Single, InputFormat::SelfPair] {
        let options = EncodeOptions {
            layers: (0..=6).collect(),
            poolings: Pooling::ALL.to_vec(),
            input,
            batch_size: 16,
            normalize: true,
        };
        let encode = |loaded: &repro::model::LoadedModel| {
            encode_texts(
                &loaded.model,
                &loaded.tokenizer,
                &texts,
                &options,
                &mut |_| {},
            )
            .unwrap()
        };
        let (full, low) = (encode(&f32_model), encode(&bf16_model));
        let mut lowest = f32::MAX;
        for (cell, full) in &full.cells {
            let low = &low.cells[cell];
            let worst = full
                .data
                .chunks_exact(full.dim)
                .zip(low.data.chunks_exact(low.dim))
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
                .fold(f32::MAX, f32::min);
            assert!(worst >= 0.999, "{input} {cell:?}: cosine {worst}");
            lowest = lowest.min(worst);
        }
        eprintln!("{input}: lowest cosine to f32 over every layer and pooling {lowest:.6}");
    }
}
