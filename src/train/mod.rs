/*!
Training: fine-tuning cross encoders and distilling dual-encoder students, on candle.

This module owns everything between "here are the examples and the settings" and "here is
a trained model directory": trainable parameters ([`TrainableBert`]: from a checkpoint,
BERT's initialiser or a teacher's first layers), the losses ([`loss`]), AdamW with linear
warm-up and decay and gradient clipping ([`optim`]), the seeded training loop, and saving in
Hugging Face / sentence-transformers layout. The encoder's training pass (forward with
dropout, and its hand-written backward) lives in [`crate::model::backprop`]; `step.rs` runs it
for a loss and collects the gradients.

It must not know about the DAG, the results store, datasets' file formats or the command
line: callers hand it examples as strings and paths, and get back a [`TrainingLog`]; progress
is reported through a callback, never printed.

Runs are reproducible: initialisation, shuffling and dropout each draw from their own
stream derived from [`TrainingSettings::seed`], so the same seed and thread count give the
same weights, bit for bit.
*/

mod cross_encoder;
mod dual_encoder;
mod error;
pub mod loss;
pub mod optim;
mod params;
mod save;
mod step;
mod trainer;

pub use cross_encoder::{
    fit_cross_encoder, fit_cross_encoder_to_logits, train_cross_encoder, CrossEncoderExample,
    CrossEncoderLogs, LogitTarget, WarmStart,
};
pub use dual_encoder::{
    build_student, fit_dual_encoder, train_dual_encoder, DistillData, DistillLoss, KnownTargets,
    StudentSpec,
};
pub use error::TrainError;
pub use params::{StudentInit, TrainableBert};
pub use step::{loss_and_gradients, TrainingPass};

use serde::Serialize;

/// The settings of one training run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingSettings {
    pub epochs: usize,
    pub batch_size: usize,
    /// The peak learning rate, reached at the end of warm-up.
    pub learning_rate: f64,
    /// The share of all steps spent warming up linearly from 0 (rounded up to whole steps).
    pub warmup_fraction: f64,
    /// AdamW's decoupled weight decay, applied to weights and embeddings but not to biases
    /// and LayerNorm parameters.
    pub weight_decay: f64,
    /// Gradients are rescaled so that their global L2 norm is at most this.
    pub max_grad_norm: f64,
    /// Tokens per input (per pair for a cross encoder).
    pub max_len: usize,
    pub seed: u64,
    /// The peak learning rate of the variables outside the encoder (a cross encoder's pooler
    /// and classifier), on the same schedule; `None`: `learning_rate`. A head added to a
    /// dual-encoder checkpoint starts from nothing (or, as all-MiniLM-L6-v2's pooler, from
    /// weights never trained) and learns at the encoder's fine-tuning rate too slowly.
    pub head_learning_rate: Option<f64>,
}

impl Default for TrainingSettings {
    /// sentence-transformers' defaults: one epoch of batches of 16 at 2e-5, 10% warm-up,
    /// weight decay 0.01, gradient norm 1.
    fn default() -> Self {
        TrainingSettings {
            epochs: 1,
            batch_size: 16,
            learning_rate: 2e-5,
            warmup_fraction: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            max_len: 256,
            seed: 0,
            head_learning_rate: None,
        }
    }
}

impl TrainingSettings {
    /// Checks every setting for range; the message names the setting and the value seen.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |message: String| Err(TrainError::Setting(message));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".to_string());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".to_string());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning_rate must be positive, got {}",
                self.learning_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.warmup_fraction) {
            return bad(format!(
                "warmup_fraction must be in [0, 1], got {}",
                self.warmup_fraction
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be non-negative, got {}",
                self.weight_decay
            ));
        }
        if self.max_grad_norm.is_nan() || self.max_grad_norm <= 0.0 {
            return bad(format!(
                "max_grad_norm must be positive, got {}",
                self.max_grad_norm
            ));
        }
        if let Some(rate) = self.head_learning_rate {
            if !(rate.is_finite() && rate > 0.0) {
                return bad(format!("head_learning_rate must be positive, got {rate}"));
            }
        }
        if self.max_len < 4 {
            return bad(format!("max_len must be at least 4, got {}", self.max_len));
        }
        Ok(())
    }
}

/// One optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// 0-based over the whole run.
    pub step: usize,
    /// 0-based.
    pub epoch: usize,
    /// The batch's loss before the update.
    pub loss: f64,
    /// The rate the update used.
    pub learning_rate: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingLog {
    pub steps: Vec<StepRecord>,
    /// Examples processed over all epochs.
    pub examples_seen: usize,
    /// Wall-clock seconds of the training loop (teacher targets and tokenization included,
    /// loading and saving excluded).
    pub seconds: f64,
    /// The process's peak resident memory at the end of the loop, where the platform says.
    pub peak_rss_bytes: Option<u64>,
}

impl TrainingLog {
    /// Training examples per second of the loop (0 for a run that took no time).
    pub fn examples_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.examples_seen as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The mean loss of the first and of the last `fraction` of the steps (at least one step
    /// each), the two ends of the loss curve; `None` without steps.
    pub fn loss_at_ends(&self, fraction: f64) -> Option<(f64, f64)> {
        let count = ((self.steps.len() as f64 * fraction).ceil() as usize).max(1);
        let mean = |steps: &[StepRecord]| {
            steps.iter().map(|step| step.loss).sum::<f64>() / steps.len() as f64
        };
        let last = self.steps.len().checked_sub(count)?;
        Some((mean(&self.steps[..count]), mean(&self.steps[last..])))
    }

    /// The mean loss of each epoch.
    pub fn epoch_losses(&self) -> Vec<f64> {
        let epochs = self.steps.iter().map(|s| s.epoch + 1).max().unwrap_or(0);
        (0..epochs)
            .map(|epoch| {
                let losses: Vec<f64> = self
                    .steps
                    .iter()
                    .filter(|s| s.epoch == epoch)
                    .map(|s| s.loss)
                    .collect();
                losses.iter().sum::<f64>() / losses.len().max(1) as f64
            })
            .collect()
    }
}

/// The independent random streams of a run.
#[derive(Debug, Clone, Copy)]
enum Stream {
    /// New weights (a cross encoder's head, a student's fresh layers).
    Init = 1,
    Shuffle = 2,
    Dropout = 3,
}

/// The seed of `stream` in the run seeded with `seed`.
fn stream_seed(seed: u64, stream: Stream) -> u64 {
    let mixed = seed ^ (stream as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    crate::rng::SplitMix64::new(mixed).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated_with_the_value_seen() {
        assert!(TrainingSettings::default().validate().is_ok());
        let cases = [
            TrainingSettings {
                epochs: 0,
                ..Default::default()
            },
            TrainingSettings {
                batch_size: 0,
                ..Default::default()
            },
            TrainingSettings {
                learning_rate: -1.0,
                ..Default::default()
            },
            TrainingSettings {
                warmup_fraction: 1.5,
                ..Default::default()
            },
            TrainingSettings {
                max_grad_norm: 0.0,
                ..Default::default()
            },
            TrainingSettings {
                max_len: 2,
                ..Default::default()
            },
            TrainingSettings {
                head_learning_rate: Some(0.0),
                ..Default::default()
            },
        ];
        for settings in cases {
            let message = settings.validate().unwrap_err().to_string();
            assert!(message.starts_with("invalid training setting"), "{message}");
        }
        let message = TrainingSettings {
            warmup_fraction: 1.5,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("warmup_fraction") && message.contains("1.5"),
            "{message}"
        );
    }

    #[test]
    fn streams_differ_from_each_other_and_between_seeds() {
        let seeds = [
            stream_seed(0, Stream::Init),
            stream_seed(0, Stream::Shuffle),
            stream_seed(0, Stream::Dropout),
            stream_seed(1, Stream::Init),
        ];
        for (i, a) in seeds.iter().enumerate() {
            for b in &seeds[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            stream_seed(7, Stream::Dropout),
            stream_seed(7, Stream::Dropout)
        );
    }

    #[test]
    fn epoch_losses_average_each_epoch() {
        let record = |step, epoch, loss| StepRecord {
            step,
            epoch,
            loss,
            learning_rate: 0.0,
            grad_norm: 0.0,
        };
        let log = TrainingLog {
            steps: vec![record(0, 0, 1.0), record(1, 0, 3.0), record(2, 1, 0.5)],
            examples_seen: 6,
            seconds: 0.0,
            peak_rss_bytes: None,
        };
        assert_eq!(log.epoch_losses(), vec![2.0, 0.5]);
    }

    #[test]
    fn loss_at_ends_averages_the_first_and_last_fraction_of_steps() {
        let log = |losses: &[f64]| TrainingLog {
            steps: losses
                .iter()
                .enumerate()
                .map(|(step, &loss)| StepRecord {
                    step,
                    epoch: 0,
                    loss,
                    learning_rate: 0.0,
                    grad_norm: 0.0,
                })
                .collect(),
            examples_seen: 0,
            seconds: 0.0,
            peak_rss_bytes: None,
        };
        let losses: Vec<f64> = (0..20).map(f64::from).collect();
        assert_eq!(log(&losses).loss_at_ends(0.1), Some((0.5, 18.5)));
        assert_eq!(log(&[4.0, 2.0]).loss_at_ends(0.1), Some((4.0, 2.0)));
        assert_eq!(log(&[]).loss_at_ends(0.1), None);
    }
}
