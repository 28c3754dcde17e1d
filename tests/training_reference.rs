//! Training gradients of all-MiniLM-L6-v2 against PyTorch: for one batch, dropout off, the
//! loss and every parameter's gradient of a cross encoder (BCE) and of a 2-layer student
//! (mse, mnrl) equal those `transformers` computes in float64
//! (`scripts/gen_training_reference.py` wrote `tests/fixtures/training_reference.json`).
//!
//! Needs the real model: `make models` provisions it (CI does this before `make test`).

mod common;

use candle_core::{DType, Device, Tensor};
use repro::model::{Batch, Dropout, TokenizedText};
use repro::train::loss::{bce_with_logits, mean_pool, mnrl, mse};
use repro::train::{loss_and_gradients, StudentInit, TrainableBert, TrainingPass};
use serde_json::Value;

/// Relative to each tensor's largest gradient (PyTorch's own float32 run differs from its
/// float64 one by up to 3.9e-5 on this batch).
const TOLERANCE: f64 = 1e-4;

fn reference(case: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/training_reference.json"
    );
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    all["cases"][case].clone()
}

fn numbers(value: &Value) -> Vec<f64> {
    let array = value.as_array().unwrap();
    array
        .iter()
        .flat_map(|v| match v.as_array() {
            Some(row) => row.iter().map(|x| x.as_f64().unwrap()).collect(),
            None => vec![v.as_f64().unwrap()],
        })
        .collect()
}

/// The padded batch the reference used, from its ids, token types and attention mask.
fn batch(inputs: &Value) -> Batch {
    let rows = |key: &str| -> Vec<Vec<u32>> {
        inputs[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| numbers(row).into_iter().map(|x| x as u32).collect())
            .collect()
    };
    let (ids, types, mask) = (
        rows("input_ids"),
        rows("token_type_ids"),
        rows("attention_mask"),
    );
    let texts: Vec<TokenizedText> = ids
        .iter()
        .zip(&types)
        .zip(&mask)
        .map(|((ids, types), mask)| {
            let length = mask.iter().filter(|&&m| m == 1).count();
            TokenizedText {
                ids: ids[..length].to_vec(),
                type_ids: types[..length].to_vec(),
                special: vec![false; length],
                pooled: vec![true; length],
            }
        })
        .collect();
    let members: Vec<&TokenizedText> = texts.iter().collect();
    let batch = Batch::new(&members, 0, &Device::Cpu).unwrap();
    assert_eq!(
        batch.input_ids.dims2().unwrap().1,
        ids[0].len(),
        "same padding"
    );
    batch
}

fn tensor(values: Vec<f64>, shape: &[usize]) -> Tensor {
    let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// The loss and every gradient the reference holds: sampled values to `TOLERANCE` of the
/// tensor's largest gradient, and the whole tensor's norm and largest value.
fn assert_matches(case: &str, model: &TrainableBert, loss: f64, gradients: &[Vec<f32>]) {
    let expected = reference(case);
    let expected_loss = expected["loss"].as_f64().unwrap();
    assert!(
        (loss - expected_loss).abs() <= 1e-5 * expected_loss.abs(),
        "{case}: loss {loss}, PyTorch {expected_loss}"
    );
    let references = expected["gradients"].as_object().unwrap();
    // A floor for the key biases, whose gradient is 0 in exact arithmetic (softmax ignores a
    // shift shared by every key): both sides hold round-off there, 1e-19 and 1e-10.
    let largest = references
        .values()
        .map(|r| r["max_abs"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(
        references.len(),
        gradients.len(),
        "{case}: one gradient per variable"
    );
    for ((name, _), ours) in model.vars().iter().zip(gradients) {
        let reference = &references[name.as_str()];
        let scale = reference["max_abs"].as_f64().unwrap().max(1e-3 * largest);
        let tolerance = TOLERANCE * scale;
        let indices = numbers(&reference["indices"]);
        let values = numbers(&reference["values"]);
        for (index, value) in indices.iter().zip(&values) {
            let ours = f64::from(ours[*index as usize]);
            assert!(
                (ours - value).abs() <= tolerance,
                "{case}, {name}[{index}]: {ours} vs PyTorch {value} (tolerance {tolerance:e})"
            );
        }
        let norm = ours
            .iter()
            .map(|&g| f64::from(g).powi(2))
            .sum::<f64>()
            .sqrt();
        let max_abs = ours
            .iter()
            .fold(0.0, |m: f64, &g| m.max(f64::from(g).abs()));
        for (what, ours, theirs) in [
            ("norm", norm, reference["norm"].as_f64().unwrap()),
            ("max |g|", max_abs, reference["max_abs"].as_f64().unwrap()),
        ] {
            assert!(
                (ours - theirs).abs() <= TOLERANCE * theirs.max(1e-3 * largest),
                "{case}, {name}: {what} {ours} vs PyTorch {theirs}"
            );
        }
    }
}

#[test]
fn cross_encoder_gradients_equal_pytorch() {
    let expected = reference("cross_encoder");
    let model = TrainableBert::cross_encoder(&common::minilm_dir(), 0, DType::F32).unwrap();
    let classifier = &expected["classifier"];
    let hidden = model.config().hidden_size;
    let weight = tensor(numbers(&classifier["weight"]), &[1, hidden]);
    model
        .var("classifier.weight")
        .unwrap()
        .set(&weight)
        .unwrap();
    let bias = tensor(numbers(&classifier["bias"]), &[1]);
    model.var("classifier.bias").unwrap().set(&bias).unwrap();
    let inputs = batch(&expected["inputs"]);
    let labels = numbers(&expected["labels"]);
    let labels = tensor(labels.clone(), &[labels.len()]);
    let (loss, gradients) = loss_and_gradients(
        &model,
        &mut Dropout::disabled(),
        |pass: &mut TrainingPass| {
            let hidden = pass.encode(&inputs)?;
            let logits = model
                .model()
                .classify_hidden_train(&hidden, pass.dropout())?;
            Ok(bce_with_logits(&logits.squeeze(1)?, &labels)?)
        },
    )
    .unwrap();
    assert_matches("cross_encoder", &model, loss, &gradients);
}

fn student() -> TrainableBert {
    TrainableBert::student(
        &common::minilm_dir(),
        2,
        StudentInit::DualEncoder(2),
        0,
        DType::F32,
    )
    .unwrap()
}

#[test]
fn student_mse_gradients_equal_pytorch() {
    let expected = reference("student_mse");
    let model = student();
    let inputs = batch(&expected["inputs"]);
    let targets = numbers(&expected["targets"]);
    let rows = expected["targets"].as_array().unwrap().len();
    let targets = tensor(targets, &[rows, model.config().hidden_size]);
    let (loss, gradients) = loss_and_gradients(
        &model,
        &mut Dropout::disabled(),
        |pass: &mut TrainingPass| {
            let pooled = mean_pool(&pass.encode(&inputs)?, &inputs.pooled_mask)?;
            Ok(mse(&pooled, &targets)?)
        },
    )
    .unwrap();
    assert_matches("student_mse", &model, loss, &gradients);
}

#[test]
fn student_mnrl_gradients_equal_pytorch() {
    let expected = reference("student_mnrl");
    let model = student();
    let (queries, positives) = (batch(&expected["queries"]), batch(&expected["positives"]));
    let scale = expected["scale"].as_f64().unwrap();
    let (loss, gradients) = loss_and_gradients(
        &model,
        &mut Dropout::disabled(),
        |pass: &mut TrainingPass| {
            let q = mean_pool(&pass.encode(&queries)?, &queries.pooled_mask)?;
            let p = mean_pool(&pass.encode(&positives)?, &positives.pooled_mask)?;
            Ok(mnrl(&q, &p, scale)?)
        },
    )
    .unwrap();
    assert_matches("student_mnrl", &model, loss, &gradients);
}
