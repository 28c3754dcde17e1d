//! Fine-tuning a cross encoder on labelled (query, document) pairs with binary
//! cross-entropy, as sentence-transformers' `CrossEncoder` with one label does.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::loss::bce_with_logits;
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

/// Fine-tunes a one-logit cross encoder from the checkpoint in `base` (a head is added when
/// it has none, see [`TrainableBert::cross_encoder`]) and saves it to `output` as a Hugging
/// Face `BertForSequenceClassification` directory.
pub fn train_cross_encoder(
    base: &Path,
    examples: &[CrossEncoderExample],
    settings: &TrainingSettings,
    output: &Path,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<TrainingLog, TrainError> {
    settings.validate()?;
    let model =
        TrainableBert::cross_encoder(base, stream_seed(settings.seed, Stream::Init), DType::F32)?;
    let log = fit_cross_encoder(&model, examples, settings, on_step)?;
    model.save_cross_encoder(output)?;
    Ok(log)
}

/// The training loop of [`train_cross_encoder`] on a model in memory: pairs are tokenized as
/// `[CLS] q [SEP] d [SEP]` truncated to `settings.max_len`, and the loss is binary
/// cross-entropy of the single logit against the label.
pub fn fit_cross_encoder(
    model: &TrainableBert,
    examples: &[CrossEncoderExample],
    settings: &TrainingSettings,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<TrainingLog, TrainError> {
    let started = Instant::now();
    settings.validate()?;
    if model.config().label_count() != 1 {
        return Err(TrainError::Setting(format!(
            "cross-encoder training needs a one-logit head, the model has {} labels",
            model.config().label_count()
        )));
    }
    if let Some((index, example)) = examples
        .iter()
        .enumerate()
        .find(|(_, example)| !(0.0..=1.0).contains(&example.label))
    {
        return Err(TrainError::Setting(format!(
            "example {index} has label {}, expected a probability in [0, 1]",
            example.label
        )));
    }
    let tokenizer = model.tokenizer(settings.max_len)?;
    let pairs = examples
        .iter()
        .map(|example| tokenizer.encode_pair(&example.query, &example.document))
        .collect::<Result<Vec<_>, _>>()?;
    let device = model.device().clone();
    trainer::run(
        model,
        examples.len(),
        settings,
        started,
        on_step,
        &mut |batch, pass| {
            let members: Vec<&TokenizedText> = batch.iter().map(|&i| &pairs[i]).collect();
            let inputs = Batch::new(&members, tokenizer.pad_id(), &device)?;
            let hidden = pass.encode(&inputs)?;
            let logits = model
                .model()
                .classify_hidden_train(&hidden, pass.dropout())?
                .squeeze(1)?;
            let labels: Vec<f32> = batch.iter().map(|&i| examples[i].label).collect();
            let labels = Tensor::from_vec(labels, batch.len(), &device)?;
            Ok(bce_with_logits(&logits, &labels)?)
        },
    )
}
