//! The training loop shared by every trainer: seeded shuffling into batches, the loss of a
//! batch (the trainer's part), backward, clipping, the scheduled AdamW update and the record.

use std::time::Instant;

use candle_core::Tensor;

use super::loss::scalar;
use super::optim::{FusedAdamW, LinearSchedule};
use super::params::TrainableBert;
use super::step::{Gradients, TrainingPass};
use super::{stream_seed, StepRecord, Stream, TrainError, TrainingLog, TrainingSettings};
use crate::model::backprop::EncoderTensors;
use crate::model::Dropout;
use crate::rng::SplitMix64;

/// The loss of one batch: the examples' indices and the step's training pass in, a scalar
/// out.
pub(crate) type BatchLoss<'a> =
    dyn FnMut(&[usize], &mut TrainingPass) -> Result<Tensor, TrainError> + 'a;

/// Runs `settings.epochs` epochs over `examples` examples (indices `0..examples`, reshuffled
/// every epoch). `loss_of` gets a batch's indices and the step's [`TrainingPass`] and returns
/// the scalar loss. `started` is when the run began (preparation before the loop counts).
pub(crate) fn run(
    model: &TrainableBert,
    examples: usize,
    settings: &TrainingSettings,
    started: Instant,
    on_step: &mut dyn FnMut(&StepRecord),
    loss_of: &mut BatchLoss,
) -> Result<TrainingLog, TrainError> {
    settings.validate()?;
    if examples == 0 {
        return Err(TrainError::Setting("no training examples".to_string()));
    }
    keep_freed_memory();
    let steps_per_epoch = examples.div_ceil(settings.batch_size);
    let schedule = LinearSchedule::new(
        settings.learning_rate,
        settings.warmup_fraction,
        steps_per_epoch * settings.epochs,
    );
    let layout = model.encoder_layout()?;
    let mut gradients = Gradients::zeros(model);
    let mut optimizer = FusedAdamW::new(model.vars(), settings.weight_decay)
        .with_rate_factors(rate_factors(model, &layout, settings))?;
    let mut shuffle = SplitMix64::new(stream_seed(settings.seed, Stream::Shuffle));
    let mut dropout =
        Dropout::from_config(model.config(), stream_seed(settings.seed, Stream::Dropout));
    let mut order: Vec<usize> = (0..examples).collect();
    let mut steps = Vec::with_capacity(schedule.total_steps);
    let mut examples_seen = 0;
    for epoch in 0..settings.epochs {
        shuffle.shuffle(&mut order);
        for batch in order.chunks(settings.batch_size) {
            let step = steps.len();
            let mut pass = TrainingPass::new(model, &layout, &mut dropout);
            let loss = loss_of(batch, &mut pass)?;
            let loss_value = scalar(&loss)?;
            if !loss_value.is_finite() {
                return Err(TrainError::Diverged {
                    step,
                    what: "the loss",
                    value: loss_value,
                });
            }
            pass.backward(&loss.backward()?, &mut gradients)?;
            let (grad_norm, gradient_scale) = gradients.clipping(settings.max_grad_norm);
            if !grad_norm.is_finite() {
                return Err(TrainError::Diverged {
                    step,
                    what: "the gradient norm",
                    value: grad_norm,
                });
            }
            let learning_rate = schedule.rate(step);
            optimizer.step(
                model.vars(),
                gradients.buffers_mut(),
                learning_rate,
                gradient_scale,
            )?;
            examples_seen += batch.len();
            let record = StepRecord {
                step,
                epoch,
                loss: loss_value,
                learning_rate,
                grad_norm,
            };
            on_step(&record);
            steps.push(record);
        }
    }
    Ok(TrainingLog {
        steps,
        examples_seen,
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: crate::util::peak_rss_bytes(),
    })
}

/// Each variable's learning rate relative to the schedule's: `head_learning_rate /
/// learning_rate` for the variables outside the encoder, 1 for the encoder's.
fn rate_factors(
    model: &TrainableBert,
    layout: &EncoderTensors<usize>,
    settings: &TrainingSettings,
) -> Vec<f64> {
    let encoder = layout.values();
    let head = settings
        .head_learning_rate
        .map_or(1.0, |rate| rate / settings.learning_rate);
    (0..model.vars().len())
        .map(|index| if encoder.contains(&index) { 1.0 } else { head })
        .collect()
}

/// A training step builds a graph of several gigabytes of tensors and frees it all after the
/// update. glibc gives the freed top of the heap back to the system once it exceeds the trim
/// threshold (the binary sets it to 2 GiB, `main.rs`, enough for inference), so every step
/// page-faulted its whole graph back in (ten all-MiniLM-L6-v2 cross-encoder steps of 16 × 128
/// tokens: 6.4 million page faults and 51–59 s, against 0.8 million and 44.5 s without
/// trimming). Trimming is switched off for the process: it keeps its peak heap until it
/// exits, which a training process reaches anyway.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator threshold; -1 disables trimming.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffling_is_a_seeded_permutation() {
        let shuffled = |seed| {
            let mut order: Vec<usize> = (0..50).collect();
            SplitMix64::new(seed).shuffle(&mut order);
            order
        };
        let a = shuffled(1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, (0..50).collect::<Vec<_>>());
        assert_eq!(a, shuffled(1));
        assert_ne!(a, shuffled(2));
    }
}
