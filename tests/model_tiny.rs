//! The encoder on a tiny random BERT the tests build themselves: truncation, padding,
//! batching and loading errors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use repro::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
use repro::model::{
    encode_texts, load_model, Batch, EncodeOptions, InputFormat, ModelError, Pooling,
};

fn tiny_model(dir: &Path, layers: usize) {
    write_random_bert(
        dir,
        &tiny_config(layers, TINY_VOCAB.len()),
        TINY_VOCAB,
        11,
        false,
    )
    .unwrap();
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const TEXTS: &[&str] = &[
    "the cat sat on the mat",
    "shock wave boundary layer",
    "what is the effect of high pressure on heat flow in the wing boundary layer",
    "cells",
];

#[test]
fn truncated_forward_equals_the_prefix_of_the_full_forward() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 4);
    let full = load_model(dir.path(), 32, None, &Device::Cpu).unwrap();
    let truncated = load_model(dir.path(), 32, Some(2), &Device::Cpu).unwrap();
    assert_eq!((full.model.depth(), truncated.model.depth()), (4, 2));
    let text = full
        .tokenizer
        .encode(TEXTS[2], InputFormat::Single)
        .unwrap();
    let batch = Batch::new(&[&text], 0, &Device::Cpu).unwrap();
    let all = full.model.forward(&batch, 4).unwrap();
    let prefix = truncated.model.forward(&batch, 2).unwrap();
    assert_eq!(all.layers.len(), 5);
    assert_eq!(prefix.layers.len(), 3);
    for layer in 0..=2 {
        let a = all.layers[layer]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = prefix.layers[layer]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b, "layer {layer}");
    }
    // Layers differ from each other: the forward pass really ran them.
    let first = all.layers[1]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let last = all.layers[4]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(max_abs_diff(&first, &last) > 1e-2);
    assert!(truncated.model.forward(&batch, 3).is_err());
}

#[test]
fn batching_and_padding_do_not_change_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 3);
    let loaded = load_model(dir.path(), 32, None, &Device::Cpu).unwrap();
    for input in InputFormat::ALL {
        let options = |batch_size| EncodeOptions {
            layers: vec![0, 1, 3],
            poolings: Pooling::ALL.to_vec(),
            input,
            batch_size,
            normalize: true,
        };
        let together = encode_texts(
            &loaded.model,
            &loaded.tokenizer,
            TEXTS,
            &options(4),
            &mut |_| {},
        )
        .unwrap();
        let alone = encode_texts(
            &loaded.model,
            &loaded.tokenizer,
            TEXTS,
            &options(1),
            &mut |_| {},
        )
        .unwrap();
        assert!(together.padded_tokens > together.tokens);
        assert_eq!(alone.padded_tokens, alone.tokens);
        for (cell, matrix) in &together.cells {
            let reference = &alone.cells[cell];
            let diff = max_abs_diff(&matrix.data, &reference.data);
            assert!(diff < 1e-5, "{input} {cell:?}: {diff}");
            for row in 0..matrix.rows {
                let norm: f32 = matrix.row(row).iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-5, "{cell:?} row {row} norm {norm}");
            }
        }
    }
}

#[test]
fn progress_reports_every_text_once() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 1);
    let loaded = load_model(dir.path(), 32, None, &Device::Cpu).unwrap();
    let options = EncodeOptions {
        layers: vec![1],
        poolings: vec![Pooling::Cls],
        input: InputFormat::Single,
        batch_size: 3,
        normalize: false,
    };
    let mut done = 0;
    encode_texts(
        &loaded.model,
        &loaded.tokenizer,
        TEXTS,
        &options,
        &mut |n| done += n,
    )
    .unwrap();
    assert_eq!(done, TEXTS.len());
}

#[test]
fn layer_beyond_depth_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 2);
    let loaded = load_model(dir.path(), 32, None, &Device::Cpu).unwrap();
    let options = EncodeOptions {
        layers: vec![3],
        poolings: vec![Pooling::Mean],
        input: InputFormat::Single,
        batch_size: 2,
        normalize: true,
    };
    let err = encode_texts(
        &loaded.model,
        &loaded.tokenizer,
        TEXTS,
        &options,
        &mut |_| {},
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("layer 3"), "{err}");
}

/// Rewrites the checkpoint in `dir` after `edit` changed its tensors.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

fn load_error(dir: &Path) -> String {
    match load_model(dir, 32, None, &Device::Cpu) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(err) => err.to_string(),
    }
}

#[test]
fn missing_tensor_names_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 2);
    edit_weights(dir.path(), |tensors| {
        tensors.remove("encoder.layer.1.attention.self.key.bias");
    });
    let message = load_error(dir.path());
    assert!(message.contains("model.safetensors"), "{message}");
    assert!(
        message.contains("missing tensor `encoder.layer.1.attention.self.key.bias`"),
        "{message}"
    );
}

#[test]
fn shape_mismatch_names_tensor_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 2);
    edit_weights(dir.path(), |tensors| {
        let wrong = Tensor::zeros((64, 31), candle_core::DType::F32, &Device::Cpu).unwrap();
        tensors.insert(
            "encoder.layer.0.intermediate.dense.weight".to_string(),
            wrong,
        );
    });
    let message = load_error(dir.path());
    assert!(
        message.contains("encoder.layer.0.intermediate.dense.weight"),
        "{message}"
    );
    assert!(
        message.contains("[64, 31]") && message.contains("[64, 32]"),
        "{message}"
    );
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 1);
    std::fs::remove_file(dir.path().join("vocab.txt")).unwrap();
    assert!(load_error(dir.path()).contains("tokenizer.json or vocab.txt"));
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert!(load_error(dir.path()).contains("model.safetensors or pytorch_model.bin"));
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert!(load_error(dir.path()).contains("config.json"));
    assert!(matches!(
        load_model(&dir.path().join("absent"), 32, None, &Device::Cpu),
        Err(ModelError::MissingFile { .. })
    ));
}

#[test]
fn max_len_beyond_position_embeddings_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 1);
    let message = match load_model(dir.path(), 513, None, &Device::Cpu) {
        Ok(_) => panic!("max_len 513 > 512 positions must fail"),
        Err(err) => err.to_string(),
    };
    assert!(message.contains("max_len 513"), "{message}");
}

/// A `pytorch_model.bin` checkpoint (tiny, random, written by `scripts/gen_tiny_pickle.py`)
/// loads and gives transformers' hidden states, padding positions included.
#[test]
fn pytorch_pickle_checkpoint_matches_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_pickle");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let loaded = load_model(&dir, 64, None, &Device::Cpu).unwrap();
    let sentences: Vec<&str> = expected["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let tokenized: Vec<_> = sentences
        .iter()
        .map(|s| loaded.tokenizer.encode(s, InputFormat::Single).unwrap())
        .collect();
    let members: Vec<_> = tokenized.iter().collect();
    let batch = Batch::new(&members, loaded.tokenizer.pad_id(), &Device::Cpu).unwrap();
    let ids = batch.input_ids.to_vec2::<u32>().unwrap();
    let expected_ids: Vec<Vec<u32>> = serde_json::from_value(expected["ids"].clone()).unwrap();
    assert_eq!(ids, expected_ids);
    let states = loaded.model.forward(&batch, 2).unwrap();
    let actual = states.layers[2].get(0).unwrap().to_vec2::<f32>().unwrap();
    let reference: Vec<Vec<f32>> =
        serde_json::from_value(expected["last_hidden_first_row"].clone()).unwrap();
    for (position, (a, e)) in actual.iter().zip(&reference).enumerate() {
        let diff = max_abs_diff(a, e);
        assert!(diff < 1e-4, "position {position}: {diff}");
    }
}
