//! Fine-tuning a cross encoder on labelled (query, document) pairs with binary
//! cross-entropy, as sentence-transformers' `CrossEncoder` with one label does, optionally
//! after a warm start that regresses its logit onto a teacher's scores.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::loss::{bce_with_logits, mse};
use super::params::TrainableBert;
use super::{stream_seed, trainer, StepRecord, Stream, TrainError, TrainingLog, TrainingSettings};
use crate::model::{Batch, TokenizedText};

/// One labelled pair: `label` is the target probability of relevance (0 or 1, or soft).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossEncoderExample {
    pub query: String,
    pub document: String,
    pub label: f32,
}

/// One (query, document) pair and the logit a teacher gives it, the target of
/// [`fit_cross_encoder_to_logits`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitTarget {
    pub query: String,
    pub document: String,
    pub logit: f32,
}

/// The optional first phase of [`train_cross_encoder`]: `epochs` epochs of
/// [`fit_cross_encoder_to_logits`] on `targets`, with the fine-tuning's other settings.
#[derive(Debug, Clone, Copy)]
pub struct WarmStart<'a> {
    pub targets: &'a [LogitTarget],
    pub epochs: usize,
}

/// The logs of [`train_cross_encoder`]'s phases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrossEncoderLogs {
    pub warm_start: Option<TrainingLog>,
    pub fine_tune: TrainingLog,
}

/// Fine-tunes a one-logit cross encoder from the checkpoint in `base` (a head is added when
/// it has none, see [`TrainableBert::cross_encoder`]), after the warm start when there is one,
/// and saves it to `output` as a Hugging Face `BertForSequenceClassification` directory.
/// `on_step` sees the steps of both phases.
pub fn train_cross_encoder(
    base: &Path,
    warm_start: Option<WarmStart>,
    examples: &[CrossEncoderExample],
    settings: &TrainingSettings,
    output: &Path,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<CrossEncoderLogs, TrainError> {
    settings.validate()?;
    let model =
        TrainableBert::cross_encoder(base, stream_seed(settings.seed, Stream::Init), DType::F32)?;
    let warm_start = match warm_start {
        Some(WarmStart { targets, epochs }) => {
            let phase = TrainingSettings {
                epochs,
                ..settings.clone()
            };
            Some(fit_cross_encoder_to_logits(
                &model, targets, &phase, on_step,
            )?)
        }
        None => None,
    };
    let fine_tune = fit_cross_encoder(&model, examples, settings, on_step)?;
    model.save_cross_encoder(output)?;
    Ok(CrossEncoderLogs {
        warm_start,
        fine_tune,
    })
}

/// The training loop of [`train_cross_encoder`] on a model in memory: the loss is binary
/// cross-entropy of each pair's single logit against its label.
pub fn fit_cross_encoder(
    model: &TrainableBert,
    examples: &[CrossEncoderExample],
    settings: &TrainingSettings,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<TrainingLog, TrainError> {
    let pairs: Vec<(&str, &str)> = examples
        .iter()
        .map(|example| (example.query.as_str(), example.document.as_str()))
        .collect();
    let labels: Vec<f32> = examples.iter().map(|example| example.label).collect();
    let objective = Objective {
        loss: &bce_with_logits,
        item: "example",
        target: "label",
        expected: "a probability in [0, 1]",
        valid: |label| (0.0..=1.0).contains(&label),
    };
    fit_pairs(model, &pairs, &labels, &objective, settings, on_step)
}

/// Regresses a one-logit cross encoder's logit onto a teacher's score of each pair (mean
/// squared error): a warm start that gives the new head and the encoder a teacher's ranking
/// before [`fit_cross_encoder`] fine-tunes them on judgments.
pub fn fit_cross_encoder_to_logits(
    model: &TrainableBert,
    targets: &[LogitTarget],
    settings: &TrainingSettings,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<TrainingLog, TrainError> {
    let pairs: Vec<(&str, &str)> = targets
        .iter()
        .map(|target| (target.query.as_str(), target.document.as_str()))
        .collect();
    let logits: Vec<f32> = targets.iter().map(|target| target.logit).collect();
    let objective = Objective {
        loss: &mse,
        item: "target",
        target: "logit",
        expected: "a finite number",
        valid: f32::is_finite,
    };
    fit_pairs(model, &pairs, &logits, &objective, settings, on_step)
}

fn check_one_logit(model: &TrainableBert) -> Result<(), TrainError> {
    match model.config().label_count() {
        1 => Ok(()),
        labels => Err(TrainError::Setting(format!(
            "cross-encoder training needs a one-logit head, the model has {labels} labels"
        ))),
    }
}

/// What a fit regresses each pair's logit onto: its loss, and which targets it accepts
/// (named in the error for one it does not).
struct Objective<'a> {
    loss: &'a PairLoss,
    /// What one pair is called, and its target.
    item: &'a str,
    target: &'a str,
    expected: &'a str,
    valid: fn(f32) -> bool,
}

/// The loss of a batch of logits against its targets.
type PairLoss = dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

/// The loop both fits share: the settings, the head and the targets checked, pairs
/// tokenized as `[CLS] q [SEP] d [SEP]` truncated to `settings.max_len`, the logit of each
/// against its target under the objective's loss.
fn fit_pairs(
    model: &TrainableBert,
    pairs: &[(&str, &str)],
    targets: &[f32],
    objective: &Objective,
    settings: &TrainingSettings,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<TrainingLog, TrainError> {
    let started = Instant::now();
    settings.validate()?;
    check_one_logit(model)?;
    if let Some((index, value)) = targets
        .iter()
        .enumerate()
        .find(|(_, value)| !(objective.valid)(**value))
    {
        return Err(TrainError::Setting(format!(
            "{} {index} has {} {value}, expected {}",
            objective.item, objective.target, objective.expected
        )));
    }
    let tokenizer = model.tokenizer(settings.max_len)?;
    let tokenized = pairs
        .iter()
        .map(|(query, document)| tokenizer.encode_pair(query, document))
        .collect::<Result<Vec<_>, _>>()?;
    let device = model.device().clone();
    trainer::run(
        model,
        pairs.len(),
        settings,
        started,
        on_step,
        &mut |batch, pass| {
            let members: Vec<&TokenizedText> = batch.iter().map(|&i| &tokenized[i]).collect();
            let inputs = Batch::new(&members, tokenizer.pad_id(), &device)?;
            let hidden = pass.encode(&inputs)?;
            let logits = model
                .model()
                .classify_hidden_train(&hidden, pass.dropout())?
                .squeeze(1)?;
            let batch_targets: Vec<f32> = batch.iter().map(|&i| targets[i]).collect();
            let batch_targets = Tensor::from_vec(batch_targets, batch.len(), &device)?;
            Ok((objective.loss)(&logits, &batch_targets)?)
        },
    )
}
