//! One optimisation step's gradients: the training pass a loss is built on, the backward pass
//! into per-variable gradient buffers, and clipping by global norm.
//!
//! A loss asks [`TrainingPass::encode`] for a batch's last hidden state: the encoder runs as
//! [`crate::model::backprop`]'s fused pass and its output enters candle's graph as a fresh
//! variable, so the head and the loss on top (small) stay candle ops. After `backward` on the
//! loss, [`TrainingPass::backward`] takes each output's gradient back through its tape into
//! [`Gradients`], and adds candle's gradients of the other variables (a cross encoder's
//! pooler and classifier). The buffers are dense and reused step after step.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Storage, Tensor, Var};
use rayon::prelude::*;

use super::params::TrainableBert;
use super::TrainError;
use crate::model::backprop::{self, EncoderTensors, Tape, TrainingInput};
use crate::model::{Batch, Dropout};

/// Elements per parallel task of the passes over every gradient.
const CHUNK: usize = 1 << 15;

/// One gradient buffer per variable of the model, in the model's variable order.
pub(crate) struct Gradients {
    buffers: Vec<Vec<f32>>,
}

impl Gradients {
    pub(crate) fn zeros(model: &TrainableBert) -> Self {
        let buffers = model
            .vars()
            .iter()
            .map(|(_, var)| vec![0f32; var.elem_count()])
            .collect();
        Gradients { buffers }
    }

    #[cfg(test)]
    pub(crate) fn buffers(&self) -> &[Vec<f32>] {
        &self.buffers
    }

    /// For the optimiser, which reads them and leaves them zero.
    pub(crate) fn buffers_mut(&mut self) -> &mut [Vec<f32>] {
        &mut self.buffers
    }

    /// The global L2 norm, summed in f64 in fixed chunks and variable order (reproducible on
    /// any thread count).
    pub(crate) fn norm(&self) -> f64 {
        let squares: f64 = self
            .buffers
            .iter()
            .map(|buffer| {
                let partials: Vec<f64> = buffer
                    .par_chunks(CHUNK)
                    .map(|chunk| chunk.iter().map(|&g| f64::from(g) * f64::from(g)).sum())
                    .collect();
                partials.into_iter().sum::<f64>()
            })
            .sum();
        squares.sqrt()
    }

    /// The norm before clipping and the factor that brings the global norm to at most
    /// `max_norm` (`torch.nn.utils.clip_grad_norm_`, with its 1e-6; 1 below the maximum),
    /// which the optimiser applies as it reads each gradient.
    pub(crate) fn clipping(&self, max_norm: f64) -> (f64, f32) {
        let norm = self.norm();
        let scale = max_norm / (norm + 1e-6);
        (norm, if scale < 1.0 { scale as f32 } else { 1.0 })
    }

    /// The encoder's buffers as mutable slices, arranged by `layout`.
    fn encoder(
        &mut self,
        layout: &EncoderTensors<usize>,
    ) -> Result<EncoderTensors<&mut [f32]>, TrainError> {
        let mut slots: Vec<Option<&mut [f32]>> = self
            .buffers
            .iter_mut()
            .map(|buffer| Some(buffer.as_mut_slice()))
            .collect();
        layout.clone().try_map(|index| {
            slots
                .get_mut(index)
                .and_then(Option::take)
                .ok_or_else(|| TrainError::Setting(format!("gradient {index} taken twice")))
        })
    }
}

/// The forward passes of one step, as a loss function sees them.
pub struct TrainingPass<'a> {
    model: &'a TrainableBert,
    layout: &'a EncoderTensors<usize>,
    dropout: &'a mut Dropout,
    tapes: Vec<(Var, Tape)>,
}

impl<'a> TrainingPass<'a> {
    pub(crate) fn new(
        model: &'a TrainableBert,
        layout: &'a EncoderTensors<usize>,
        dropout: &'a mut Dropout,
    ) -> Self {
        TrainingPass {
            model,
            layout,
            dropout,
            tapes: Vec::new(),
        }
    }

    /// The last hidden state `(batch, tokens, hidden)` of `batch`, with dropout, as a tensor
    /// the loss can be built on (its gradient is taken back through the encoder later).
    pub fn encode(&mut self, batch: &Batch) -> Result<Tensor, TrainError> {
        let input = TrainingInput::from_batch(batch)?;
        let shape = (input.batch, input.tokens, self.model.config().hidden_size);
        let config = self.model.config();
        let (hidden, tape) = with_parameters(self.model, self.layout, |params| {
            Ok(backprop::forward(config, params, input, self.dropout)?)
        })?;
        let output = Var::from_vec(hidden, shape, self.model.device())?;
        let tensor = output.as_tensor().clone();
        self.tapes.push((output, tape));
        Ok(tensor)
    }

    /// The run's dropout, for the layers of the head.
    pub fn dropout(&mut self) -> &mut Dropout {
        self.dropout
    }

    /// Adds the gradients of this step's loss (`grads`, from its `backward`) to `gradients`:
    /// through every encoder pass, and candle's own for the variables outside the encoder.
    pub(crate) fn backward(
        self,
        grads: &GradStore,
        gradients: &mut Gradients,
    ) -> Result<(), TrainError> {
        let config = self.model.config();
        let mut encoder_gradients = gradients.encoder(self.layout)?;
        with_parameters(self.model, self.layout, |params| {
            for (output, tape) in self.tapes.iter().rev() {
                let Some(d_output) = grads.get(output) else {
                    continue;
                };
                let d_output = d_output.flatten_all()?.to_vec1::<f32>()?;
                backprop::backward(config, params, tape, d_output, &mut encoder_gradients)?;
            }
            Ok(())
        })?;
        drop(encoder_gradients);
        let encoder_indices = self.layout.values();
        for (index, (_, var)) in self.model.vars().iter().enumerate() {
            if encoder_indices.contains(&index) {
                continue;
            }
            if let Some(grad) = grads.get(var) {
                let grad = grad.flatten_all()?.to_vec1::<f32>()?;
                for (total, g) in gradients.buffers[index].iter_mut().zip(grad) {
                    *total += g;
                }
            }
        }
        Ok(())
    }
}

/// The loss `loss_of` builds on one training pass of `model` and its gradient with respect to
/// every variable (in [`TrainableBert::vars`] order), without an update: gradient checks
/// against other implementations, and what a training step computes before clipping.
pub fn loss_and_gradients(
    model: &TrainableBert,
    dropout: &mut Dropout,
    loss_of: impl FnOnce(&mut TrainingPass) -> Result<Tensor, TrainError>,
) -> Result<(f64, Vec<Vec<f32>>), TrainError> {
    let layout = model.encoder_layout()?;
    let mut pass = TrainingPass::new(model, &layout, dropout);
    let loss = loss_of(&mut pass)?;
    let mut gradients = Gradients::zeros(model);
    pass.backward(&loss.backward()?, &mut gradients)?;
    Ok((super::loss::scalar(&loss)?, gradients.buffers))
}

/// Runs `f` on the encoder's parameters as slices of the variables' own storage (read-locked
/// meanwhile).
fn with_parameters<R>(
    model: &TrainableBert,
    layout: &EncoderTensors<usize>,
    f: impl FnOnce(&EncoderTensors<&[f32]>) -> Result<R, TrainError>,
) -> Result<R, TrainError> {
    let guards: Vec<_> = model
        .vars()
        .iter()
        .map(|(_, var)| var.as_tensor().storage_and_layout())
        .collect();
    let slices = guards
        .iter()
        .zip(model.vars())
        .map(
            |((storage, layout), (name, _))| match (&**storage, layout.contiguous_offsets()) {
                (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) => Ok(&data[start..end]),
                _ => Err(TrainError::Setting(format!(
                    "{name}: the fused training pass needs contiguous f32 variables on the CPU"
                ))),
            },
        )
        .collect::<Result<Vec<&[f32]>, _>>()?;
    let params = layout.clone().try_map(|index| {
        slices
            .get(index)
            .copied()
            .ok_or_else(|| TrainError::Setting(format!("no variable {index}")))
    })?;
    f(&params)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
    use crate::train::loss::mean_pool;

    fn tiny_cross_encoder(dir: &std::path::Path) -> TrainableBert {
        let mut config = tiny_config(2, TINY_VOCAB.len());
        config.hidden_dropout_prob = 0.2;
        config.attention_probs_dropout_prob = 0.3;
        write_random_bert(dir, &config, TINY_VOCAB, 5, true).unwrap();
        TrainableBert::from_checkpoint(dir, DType::F32).unwrap()
    }

    fn batches(model: &TrainableBert) -> Vec<Batch> {
        let tokenizer = model.tokenizer(32).unwrap();
        let pairs = [
            (
                "what is the effect of high pressure",
                "heat flow in the wing boundary layer",
            ),
            ("cat", "the mat"),
            ("protein gene", "a study of protein and gene in cells"),
        ];
        let first: Vec<_> = pairs
            .iter()
            .map(|(q, d)| tokenizer.encode_pair(q, d).unwrap())
            .collect();
        let second = vec![tokenizer
            .encode_pair("dog", "a dog sat on the mat")
            .unwrap()];
        [first, second]
            .iter()
            .map(|texts| {
                let members: Vec<_> = texts.iter().collect();
                Batch::new(&members, tokenizer.pad_id(), &Device::Cpu).unwrap()
            })
            .collect()
    }

    /// A training forward pass as the probe loss uses it.
    trait Forward {
        fn last_hidden(&mut self, batch: &Batch) -> Tensor;
        fn dropout(&mut self) -> &mut Dropout;
    }

    /// candle's differentiable ops ([`crate::model::BertModel::forward_train`]).
    struct Reference<'a> {
        model: &'a TrainableBert,
        dropout: Dropout,
    }

    impl Forward for Reference<'_> {
        fn last_hidden(&mut self, batch: &Batch) -> Tensor {
            let depth = self.model.model().depth();
            let states = self
                .model
                .model()
                .forward_train(batch, depth, &mut self.dropout);
            states.unwrap().layers.pop().unwrap()
        }

        fn dropout(&mut self) -> &mut Dropout {
            &mut self.dropout
        }
    }

    impl Forward for TrainingPass<'_> {
        fn last_hidden(&mut self, batch: &Batch) -> Tensor {
            self.encode(batch).unwrap()
        }

        fn dropout(&mut self) -> &mut Dropout {
            TrainingPass::dropout(self)
        }
    }

    /// A loss on every output: fixed weights on each batch's mean-pooled last layer, plus
    /// the head's logits (with its dropout).
    fn probe_loss(model: &TrainableBert, batches: &[Batch], forward: &mut impl Forward) -> Tensor {
        let mut total = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
        for batch in batches {
            let hidden = forward.last_hidden(batch);
            let pooled = mean_pool(&hidden, &batch.pooled_mask).unwrap();
            let (rows, width) = pooled.dims2().unwrap();
            let weights: Vec<f32> = (0..rows * width).map(|i| (i as f32 * 0.37).sin()).collect();
            let weights = Tensor::from_vec(weights, (rows, width), &Device::Cpu).unwrap();
            let head = model.model();
            let logits = head
                .classify_hidden_train(&hidden, forward.dropout())
                .unwrap();
            let term = (pooled.mul(&weights).unwrap().sum_all().unwrap()
                + (logits.sum_all().unwrap() * 0.7).unwrap())
            .unwrap();
            total = (total + term).unwrap();
        }
        total
    }

    /// The fused pass's gradients equal those of candle's autograd through the reference
    /// training pass (`forward_train`, itself checked against finite differences in
    /// tests/train_tiny.rs), every variable, with the same dropout masks, two batches (two
    /// tapes) per step and padding.
    #[test]
    fn fused_gradients_equal_candle_autograd_with_dropout() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_cross_encoder(dir.path());
        let batches = batches(&model);
        let layout = model.encoder_layout().unwrap();
        for seed in [3, 4] {
            let mut reference = Reference {
                model: &model,
                dropout: Dropout::from_config(model.config(), seed),
            };
            let expected = probe_loss(&model, &batches, &mut reference);
            let expected_grads = expected.backward().unwrap();

            let mut dropout = Dropout::from_config(model.config(), seed);
            let mut pass = TrainingPass::new(&model, &layout, &mut dropout);
            let loss = probe_loss(&model, &batches, &mut pass);
            let gap =
                (loss.to_scalar::<f32>().unwrap() - expected.to_scalar::<f32>().unwrap()).abs();
            assert!(gap < 1e-4, "seed {seed}: losses differ by {gap}");
            let mut gradients = Gradients::zeros(&model);
            pass.backward(&loss.backward().unwrap(), &mut gradients)
                .unwrap();
            for ((name, var), ours) in model.vars().iter().zip(gradients.buffers()) {
                let theirs = expected_grads
                    .get(var)
                    .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                    .unwrap_or_else(|| vec![0.0; ours.len()]);
                // The absolute floor is for the key biases, whose gradient is 0 up to
                // round-off (softmax ignores a shift shared by every key).
                let scale = theirs.iter().fold(0f32, |m, g| m.max(g.abs()));
                let worst = ours
                    .iter()
                    .zip(&theirs)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    worst <= 1e-4 * scale + 1e-6,
                    "seed {seed}, {name}: max difference {worst}, max |g| {scale}"
                );
            }
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm_and_reports_the_norm_before() {
        let gradients = Gradients {
            buffers: vec![vec![3.0, 0.0], vec![4.0]],
        };
        let (norm, scale) = gradients.clipping(10.0);
        assert!((norm - 5.0).abs() < 1e-9);
        assert_eq!(scale, 1.0, "below the maximum the gradients are untouched");
        let (norm, scale) = gradients.clipping(1.0);
        assert!((norm - 5.0).abs() < 1e-9);
        assert_eq!(scale, (1.0 / (5.0 + 1e-6)) as f32);
    }
}
