//! Training on a tiny random BERT the tests build themselves: analytic gradients against
//! finite differences, over-fitting a tiny dataset, determinism, and trained directories that
//! load back with the same outputs.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use repro::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
use repro::model::{
    encode_texts, load_model, Batch, Dropout, EncodeOptions, InputFormat, Pooling, TensorNaming,
};
use repro::train::loss::mean_pool;
use repro::train::{
    build_student, fit_cross_encoder, fit_cross_encoder_to_logits, fit_dual_encoder,
    train_cross_encoder, train_dual_encoder, CrossEncoderExample, DistillData, DistillLoss,
    LogitTarget, StudentInit, StudentSpec, TrainableBert, TrainingLog, TrainingSettings, WarmStart,
};

fn tiny_model(dir: &Path, layers: usize, cross_encoder: bool) {
    write_random_bert(
        dir,
        &tiny_config(layers, TINY_VOCAB.len()),
        TINY_VOCAB,
        11,
        cross_encoder,
    )
    .unwrap();
}

/// Over-fitting is a test of the gradients and the optimiser, so it runs without dropout
/// (the determinism test keeps it, to check that its masks are seeded).
fn tiny_model_without_dropout(dir: &Path, layers: usize) {
    let mut config = tiny_config(layers, TINY_VOCAB.len());
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    write_random_bert(dir, &config, TINY_VOCAB, 11, false).unwrap();
}

const PAIRS: &[(&str, &str)] = &[
    ("cat", "the cat sat on the mat"),
    ("protein gene", "a study of protein and gene"),
    ("cancer risk", "high cancer risk in cells"),
    ("air flow", "air flow on the wing"),
    ("shock wave", "a shock wave and pressure"),
    ("heat", "heat and low speed"),
    ("dog", "a dog sat"),
    ("boundary layer", "the boundary layer model"),
];

fn ce_examples() -> Vec<CrossEncoderExample> {
    let mut examples = Vec::new();
    for (i, (query, document)) in PAIRS.iter().enumerate() {
        examples.push(CrossEncoderExample {
            query: query.to_string(),
            document: document.to_string(),
            label: 1.0,
        });
        examples.push(CrossEncoderExample {
            query: query.to_string(),
            document: PAIRS[(i + 3) % PAIRS.len()].1.to_string(),
            label: 0.0,
        });
    }
    examples
}

fn distill_pairs() -> DistillData {
    DistillData::Pairs(
        PAIRS
            .iter()
            .map(|(q, d)| (q.to_string(), d.to_string()))
            .collect(),
    )
}

fn settings(epochs: usize, batch_size: usize, seed: u64) -> TrainingSettings {
    TrainingSettings {
        epochs,
        batch_size,
        learning_rate: 3e-3,
        warmup_fraction: 0.1,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
        max_len: 32,
        seed,
        head_learning_rate: None,
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn flat64(tensor: &Tensor) -> Vec<f64> {
    tensor.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// A scalar loss touching every output of the training forward pass of a cross encoder:
/// fixed weights on the mean-pooled last layer and on the logits.
fn probe_loss(model: &TrainableBert, batch: &Batch) -> Tensor {
    let mut dropout = Dropout::disabled();
    let states = model
        .model()
        .forward_train(batch, model.model().depth(), &mut dropout)
        .unwrap();
    let pooled = mean_pool(states.layers.last().unwrap(), &batch.pooled_mask).unwrap();
    let (rows, width) = pooled.dims2().unwrap();
    let weights: Vec<f64> = (0..rows * width).map(|i| (i as f64 * 0.37).sin()).collect();
    let weights = Tensor::from_vec(weights, (rows, width), &Device::Cpu).unwrap();
    let logits = model.model().classify_train(batch, &mut dropout).unwrap();
    let pooled_term = pooled.mul(&weights).unwrap().sum_all().unwrap();
    let logit_term = (logits.sum_all().unwrap() * 0.7).unwrap();
    (pooled_term + logit_term).unwrap()
}

fn value(loss: &Tensor) -> f64 {
    loss.to_scalar::<f64>().unwrap()
}

/// Central differences in f64 (h = 1e-5) against the analytic gradient for parameters of
/// every kind. The threshold is a relative error of 1e-4: f64 round-off and the O(h²) error
/// are far below it (~1e-9), but candle's backward of `gelu_erf` uses 0.398942 for 1/√(2π),
/// which alone puts agreement near 1e-6.
#[test]
fn analytic_gradients_match_central_differences() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 2, true);
    let model = TrainableBert::from_checkpoint(dir.path(), DType::F64).unwrap();
    let tokenizer = model.tokenizer(32).unwrap();
    let long = tokenizer
        .encode_pair(
            "what is the effect of high pressure",
            "heat flow in the wing boundary layer",
        )
        .unwrap();
    let short = tokenizer.encode_pair("cat", "the mat").unwrap();
    assert!(short.len() + 5 < long.len(), "the short pair is padded");
    let batch = Batch::new(&[&long, &short], tokenizer.pad_id(), &Device::Cpu).unwrap();

    let loss = probe_loss(&model, &batch);
    let grads = loss.backward().unwrap();
    for (name, var) in model.vars() {
        assert!(grads.get(var).is_some(), "{name} received no gradient");
    }
    let cat = 13; // "cat" in TINY_VOCAB
    let checks: &[(&str, usize)] = &[
        ("embeddings.word_embeddings.weight", cat * 32 + 5),
        ("embeddings.position_embeddings.weight", 32 + 3),
        ("embeddings.token_type_embeddings.weight", 32 + 7),
        ("embeddings.LayerNorm.weight", 4),
        ("embeddings.LayerNorm.bias", 9),
        ("encoder.layer.0.attention.self.query.weight", 37),
        ("encoder.layer.0.attention.self.key.weight", 100),
        ("encoder.layer.0.attention.self.value.bias", 3),
        ("encoder.layer.0.attention.output.dense.weight", 250),
        ("encoder.layer.0.attention.output.LayerNorm.weight", 2),
        ("encoder.layer.1.intermediate.dense.weight", 500),
        ("encoder.layer.1.intermediate.dense.bias", 17),
        ("encoder.layer.1.output.dense.weight", 77),
        ("encoder.layer.1.output.LayerNorm.bias", 30),
        ("pooler.dense.weight", 40),
        ("classifier.weight", 6),
        ("classifier.bias", 0),
    ];
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    for &(name, index) in checks {
        let var = model.var(name).unwrap();
        let analytic = flat64(grads.get(var).unwrap())[index];
        let original = var.as_tensor().copy().unwrap();
        let shifted = |delta: f64| {
            let mut values = flat64(&original);
            values[index] += delta;
            var.set(&Tensor::from_vec(values, original.shape(), &Device::Cpu).unwrap())
                .unwrap();
            value(&probe_loss(&model, &batch))
        };
        let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
        var.set(&original).unwrap();
        let error = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-8);
        worst = worst.max(error);
        assert!(
            error < 1e-4,
            "{name}[{index}]: analytic {analytic:e}, numeric {numeric:e}, relative error {error:e}"
        );
        assert!(
            analytic.abs() > 1e-6,
            "{name}[{index}] has a vanishing gradient"
        );
    }
    eprintln!("worst relative gradient error: {worst:e}");
    // Padding must not leak: no real token attends to a [PAD] position, so the [PAD]
    // embedding (which only padding uses) gets exactly zero gradient.
    let words = flat64(
        grads
            .get(model.var("embeddings.word_embeddings.weight").unwrap())
            .unwrap(),
    );
    assert!(words[..32].iter().all(|&g| g == 0.0), "[PAD] row gradient");
}

/// With dropout disabled the training forward pass computes what inference computes.
#[test]
fn training_forward_without_dropout_matches_inference() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 2, true);
    let loaded = load_model(dir.path(), 32, None, &Device::Cpu).unwrap();
    let trainable = TrainableBert::from_checkpoint(dir.path(), DType::F32).unwrap();
    let pairs: Vec<_> = PAIRS
        .iter()
        .map(|(q, d)| loaded.tokenizer.encode_pair(q, d).unwrap())
        .collect();
    let members: Vec<_> = pairs.iter().collect();
    let batch = Batch::new(&members, 0, &Device::Cpu).unwrap();
    let expected = loaded.model.score_pairs(&batch).unwrap();
    let logits = trainable
        .model()
        .classify_train(&batch, &mut Dropout::disabled())
        .unwrap();
    let actual = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(
        max_abs_diff(&expected, &actual) < 1e-5,
        "{expected:?} vs {actual:?}"
    );
    // With dropout the same pass differs.
    let dropped = trainable
        .model()
        .classify_train(&batch, &mut Dropout::new(0.1, 0.1, 1))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(max_abs_diff(&expected, &dropped) > 1e-4);
}

/// One step per epoch is noisy: the mean of the last five epochs.
fn mean_of_last_five(losses: &[f64]) -> f64 {
    losses[losses.len() - 5..].iter().sum::<f64>() / 5.0
}

fn last_epoch_loss(log: &TrainingLog) -> f64 {
    *log.epoch_losses().last().unwrap()
}

#[test]
fn a_cross_encoder_overfits_a_tiny_dataset() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model_without_dropout(dir.path(), 2);
    let out = dir.path().join("ce");
    let examples = ce_examples();
    let mut seen = 0;
    let log = train_cross_encoder(
        dir.path(),
        None,
        &examples,
        &settings(40, 4, 1),
        &out,
        &mut |_| seen += 1,
    )
    .unwrap()
    .fine_tune;
    assert_eq!(seen, 40 * 4);
    assert_eq!(log.steps.len(), 160);
    assert_eq!(log.examples_seen, 40 * examples.len());
    let losses = log.epoch_losses();
    eprintln!("cross encoder BCE by epoch: {losses:?}");
    assert!(losses[0] > 0.5, "starts near ln 2: {losses:?}");
    assert!(last_epoch_loss(&log) < 0.05, "{losses:?}");
    // The schedule warmed up (16 steps) and decayed; clipping saw real gradients.
    assert_eq!(log.steps[0].learning_rate, 0.0);
    assert!((log.steps[16].learning_rate - 3e-3).abs() < 1e-12);
    assert!(log.steps.last().unwrap().learning_rate < 1e-4);
    assert!(log
        .steps
        .iter()
        .all(|s| s.grad_norm.is_finite() && s.grad_norm > 0.0));

    // The saved model separates every positive from every negative.
    let scores = saved_logits(&out, &examples);
    let lowest_positive = scores.iter().step_by(2).fold(f32::MAX, |a, &b| a.min(b));
    let highest_negative = scores
        .iter()
        .skip(1)
        .step_by(2)
        .fold(f32::MIN, |a, &b| a.max(b));
    assert!(lowest_positive > highest_negative, "{scores:?}");
}

/// The saved cross encoder's logit of every example's pair.
fn saved_logits(dir: &Path, examples: &[CrossEncoderExample]) -> Vec<f32> {
    let loaded = load_model(dir, 32, None, &Device::Cpu).unwrap();
    let pairs: Vec<_> = examples
        .iter()
        .map(|e| loaded.tokenizer.encode_pair(&e.query, &e.document).unwrap())
        .collect();
    let members: Vec<_> = pairs.iter().collect();
    let batch = Batch::new(&members, 0, &Device::Cpu).unwrap();
    loaded.model.score_pairs(&batch).unwrap()
}

#[test]
fn a_warm_start_regresses_the_logits_onto_their_targets_before_fine_tuning() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model_without_dropout(dir.path(), 2);
    let examples = ce_examples();
    let targets: Vec<LogitTarget> = examples
        .iter()
        .enumerate()
        .map(|(index, e)| LogitTarget {
            query: e.query.clone(),
            document: e.document.clone(),
            logit: ((index * 7) % 5) as f32 - 2.0,
        })
        .collect();
    let model = TrainableBert::cross_encoder(dir.path(), 1, DType::F32).unwrap();
    let log =
        fit_cross_encoder_to_logits(&model, &targets, &settings(60, 4, 1), &mut |_| {}).unwrap();
    let (first, last) = log.loss_at_ends(0.1).unwrap();
    assert!(last < 0.05 * first, "mse {first} → {last}");
    let regressed = dir.path().join("regressed");
    model.save_cross_encoder(&regressed).unwrap();
    for (logit, target) in saved_logits(&regressed, &examples).iter().zip(&targets) {
        assert!(
            (logit - target.logit).abs() < 0.3,
            "{logit} vs {}",
            target.logit
        );
    }

    // Both phases in one call: the warm start's steps, then the fine-tuning's.
    let mut seen = 0;
    let logs = train_cross_encoder(
        dir.path(),
        Some(WarmStart {
            targets: &targets,
            epochs: 3,
        }),
        &examples,
        &settings(2, 4, 1),
        &dir.path().join("both"),
        &mut |_| seen += 1,
    )
    .unwrap();
    let warm_steps = logs.warm_start.as_ref().map_or(0, |log| log.steps.len());
    assert_eq!(warm_steps, 3 * targets.len().div_ceil(4));
    assert_eq!(seen, warm_steps + logs.fine_tune.steps.len());
    let bad = [LogitTarget {
        logit: f32::NAN,
        ..targets[0].clone()
    }];
    let error = fit_cross_encoder_to_logits(&model, &bad, &settings(1, 4, 1), &mut |_| {});
    assert!(error.unwrap_err().to_string().contains("logit NaN"));
}

#[test]
fn a_dual_encoder_student_overfits_with_mnrl() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model_without_dropout(dir.path(), 2);
    let spec = StudentSpec {
        layers: 2,
        init: StudentInit::DualEncoder(2),
        loss: DistillLoss::Mnrl,
        teacher_de: dir.path(),
        teacher_ce: None,
        known_targets: None,
    };
    let out = dir.path().join("de");
    let log = train_dual_encoder(
        &spec,
        &distill_pairs(),
        &settings(60, 4, 1),
        &out,
        &mut |_| {},
    )
    .unwrap();
    let losses = log.epoch_losses();
    eprintln!("student mnrl by epoch: {losses:?}");
    assert!(losses[0] > 0.3, "{losses:?}");
    assert!(last_epoch_loss(&log) < 0.05, "{losses:?}");
}

#[test]
fn mse_and_margin_mse_students_learn_from_their_teachers() {
    let dir = tempfile::tempdir().unwrap();
    let (de, ce) = (dir.path().join("de"), dir.path().join("ce"));
    tiny_model(&de, 2, false);
    tiny_model(&ce, 2, true);
    let texts = DistillData::Texts(
        PAIRS
            .iter()
            .flat_map(|(q, d)| [q.to_string(), d.to_string()])
            .collect(),
    );
    let mse_spec = StudentSpec {
        layers: 1,
        init: StudentInit::Random,
        loss: DistillLoss::Mse,
        teacher_de: &de,
        teacher_ce: None,
        known_targets: None,
    };
    let log = train_dual_encoder(
        &mse_spec,
        &texts,
        &settings(30, 8, 2),
        &dir.path().join("mse"),
        &mut |_| {},
    )
    .unwrap();
    let losses = log.epoch_losses();
    eprintln!("student loss by epoch: {losses:?}");
    assert!(mean_of_last_five(&losses) < 0.2 * losses[0], "{losses:?}");

    let triples = DistillData::Triples(
        PAIRS
            .iter()
            .enumerate()
            .map(|(i, (q, d))| {
                (
                    q.to_string(),
                    d.to_string(),
                    PAIRS[(i + 3) % PAIRS.len()].1.to_string(),
                )
            })
            .collect(),
    );
    let margin_spec = StudentSpec {
        layers: 1,
        init: StudentInit::CrossEncoder(1),
        loss: DistillLoss::MarginMse,
        teacher_de: &de,
        teacher_ce: Some(&ce),
        known_targets: None,
    };
    let student = build_student(&margin_spec, &settings(30, 8, 2)).unwrap();
    // ce:1 copies the cross encoder's (bert.-prefixed) embeddings and first layer.
    let teacher = TrainableBert::from_checkpoint(&ce, DType::F32).unwrap();
    for name in [
        "embeddings.word_embeddings.weight",
        "encoder.layer.0.output.dense.weight",
    ] {
        let a = student
            .var(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = teacher
            .var(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b, "{name}");
    }
    let log = fit_dual_encoder(
        &student,
        &margin_spec,
        &triples,
        &settings(30, 8, 2),
        &mut |_| {},
    )
    .unwrap();
    let losses = log.epoch_losses();
    eprintln!("student loss by epoch: {losses:?}");
    assert!(mean_of_last_five(&losses) < 0.2 * losses[0], "{losses:?}");
    // margin_mse without a teacher cross encoder is refused up front.
    let no_teacher = StudentSpec {
        teacher_ce: None,
        init: StudentInit::Random,
        ..margin_spec
    };
    let message = train_dual_encoder(
        &no_teacher,
        &triples,
        &settings(1, 8, 2),
        &dir.path().join("x"),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(message.contains("teacher cross encoder"), "{message}");
}

#[test]
fn same_seed_same_weights_and_losses_different_seed_different() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 2, false);
    let examples = ce_examples();
    let train = |seed: u64, name: &str| {
        let out = dir.path().join(name);
        let log = train_cross_encoder(
            dir.path(),
            None,
            &examples,
            &settings(2, 4, seed),
            &out,
            &mut |_| {},
        )
        .unwrap()
        .fine_tune;
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let losses: Vec<f64> = log.steps.iter().map(|s| s.loss).collect();
        (bytes, losses)
    };
    let (a_bytes, a_losses) = train(3, "a");
    let (b_bytes, b_losses) = train(3, "b");
    let (c_bytes, c_losses) = train(4, "c");
    assert_eq!(a_losses, b_losses);
    assert!(a_bytes == b_bytes, "same seed, different weights");
    assert_ne!(a_losses, c_losses);
    assert!(a_bytes != c_bytes, "different seeds, same weights");

    let spec = StudentSpec {
        layers: 2,
        init: StudentInit::DualEncoder(1),
        loss: DistillLoss::Mnrl,
        teacher_de: dir.path(),
        teacher_ce: None,
        known_targets: None,
    };
    let student = |seed: u64, name: &str| {
        let out = dir.path().join(name);
        train_dual_encoder(
            &spec,
            &distill_pairs(),
            &settings(2, 4, seed),
            &out,
            &mut |_| {},
        )
        .unwrap();
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    assert!(student(5, "s1") == student(5, "s2"));
    assert!(student(5, "s1") != student(6, "s3"));
}

#[test]
fn trained_directories_load_back_with_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), 2, false);

    // Cross encoder: BertForSequenceClassification layout, scores equal to the model in memory.
    let model = TrainableBert::cross_encoder(dir.path(), 1, DType::F32).unwrap();
    fit_cross_encoder(&model, &ce_examples(), &settings(2, 4, 1), &mut |_| {}).unwrap();
    let out = dir.path().join("ce");
    model.save_cross_encoder(&out).unwrap();
    let loaded = load_model(&out, 32, None, &Device::Cpu).unwrap();
    assert_eq!(loaded.naming, TensorNaming::Prefixed("bert.".to_string()));
    assert!(loaded.model.has_classifier());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["num_labels"], 1);
    assert!(out.join("vocab.txt").is_file());
    let pairs: Vec<_> = PAIRS
        .iter()
        .map(|(q, d)| loaded.tokenizer.encode_pair(q, d).unwrap())
        .collect();
    let members: Vec<_> = pairs.iter().collect();
    let batch = Batch::new(&members, 0, &Device::Cpu).unwrap();
    let saved = loaded.model.score_pairs(&batch).unwrap();
    let in_memory = model.model().score_pairs(&batch).unwrap();
    assert!(
        max_abs_diff(&saved, &in_memory) < 1e-5,
        "{saved:?} vs {in_memory:?}"
    );
    let untrained = load_model(dir.path(), 32, None, &Device::Cpu).unwrap();
    let before = untrained.model.forward(&batch, 2).unwrap();
    let after = loaded.model.forward(&batch, 2).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(
        max_abs_diff(&flat(&before.layers[2]), &flat(&after.layers[2])) > 1e-4,
        "trained"
    );

    // Dual encoder: sentence-transformers layout, embeddings equal to the model in memory.
    let spec = StudentSpec {
        layers: 1,
        init: StudentInit::DualEncoder(1),
        loss: DistillLoss::Mnrl,
        teacher_de: dir.path(),
        teacher_ce: None,
        known_targets: None,
    };
    let student = build_student(&spec, &settings(2, 4, 1)).unwrap();
    fit_dual_encoder(
        &student,
        &spec,
        &distill_pairs(),
        &settings(2, 4, 1),
        &mut |_| {},
    )
    .unwrap();
    let out = dir.path().join("de");
    student.save_dual_encoder(&out, 32).unwrap();
    for file in [
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "vocab.txt",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 1);
    assert_eq!(config["architectures"][0], "BertModel");
    let loaded = load_model(&out, 32, None, &Device::Cpu).unwrap();
    assert_eq!(loaded.naming, TensorNaming::Bare);
    assert_eq!(loaded.model.depth(), 1);
    let texts: Vec<&str> = PAIRS.iter().map(|(_, d)| *d).collect();
    let options = EncodeOptions {
        layers: vec![1],
        poolings: vec![Pooling::Mean],
        input: InputFormat::Single,
        batch_size: 3,
        normalize: false,
    };
    let tokenizer = student.tokenizer(32).unwrap();
    let saved = encode_texts(
        &loaded.model,
        &loaded.tokenizer,
        &texts,
        &options,
        &mut |_| {},
    )
    .unwrap();
    let in_memory =
        encode_texts(student.model(), &tokenizer, &texts, &options, &mut |_| {}).unwrap();
    let (saved, in_memory) = (
        &saved.get(1, Pooling::Mean).unwrap().data,
        &in_memory.get(1, Pooling::Mean).unwrap().data,
    );
    assert!(max_abs_diff(saved, in_memory) < 1e-5);
}
