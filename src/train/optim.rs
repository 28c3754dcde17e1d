//! The optimiser (AdamW in two parameter groups), the learning-rate schedule and gradient
//! clipping by global norm, each as Hugging Face's `Trainer` and sentence-transformers do them.

use std::cell::RefCell;

use candle_core::{CpuStorage, InplaceOp1, Layout, Var};
use rayon::prelude::*;

use super::TrainError;

/// AdamW's ε. PyTorch's `torch.optim.AdamW` default, which Hugging Face's `Trainer`
/// (`adam_epsilon`) and sentence-transformers' trainers use; the original BERT recipe's 1e-6
/// matters only when second moments are tiny.
pub const ADAM_EPSILON: f64 = 1e-8;
pub const ADAM_BETAS: (f64, f64) = (0.9, 0.999);

/// Linear warm-up from 0 to the peak rate, then linear decay to 0 at the last step
/// (`transformers.get_linear_schedule_with_warmup`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearSchedule {
    pub peak: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LinearSchedule {
    /// The schedule of `total_steps` updates with `ceil(warmup_fraction · total_steps)` of
    /// warm-up, as Hugging Face rounds `warmup_ratio`.
    pub fn new(peak: f64, warmup_fraction: f64, total_steps: usize) -> Self {
        let warmup_steps = (warmup_fraction * total_steps as f64).ceil() as usize;
        LinearSchedule {
            peak,
            warmup_steps: warmup_steps.min(total_steps),
            total_steps,
        }
    }

    /// The rate of update `step` (0-based). As in PyTorch, where the scheduler steps after
    /// the optimiser, the first update of a warm-up uses rate 0.
    pub fn rate(&self, step: usize) -> f64 {
        let factor = if step < self.warmup_steps {
            step as f64 / self.warmup_steps as f64
        } else {
            let remaining = self.total_steps.saturating_sub(step) as f64;
            let decay = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
            (remaining / decay).max(0.0)
        };
        self.peak * factor
    }
}

/// AdamW with weight decay on weight matrices and embeddings only: biases and LayerNorm
/// parameters are not decayed (the `no_decay` groups of Hugging Face's examples and
/// sentence-transformers' `fit`). One fused, in-place pass per variable over every thread —
/// moments, bias correction, decay and update per element, no temporaries — computing what
/// candle's `AdamW` computes, operation for operation.
pub(crate) struct FusedAdamW {
    decayed: Vec<bool>,
    /// Each variable's learning rate relative to the scheduled one.
    rate_factors: Vec<f64>,
    first_moments: Vec<Vec<f32>>,
    second_moments: Vec<Vec<f32>>,
    /// Per block of [`BLOCK`] elements: whether any gradient in it has been non-zero yet.
    /// Until then its moments are exactly 0 and its update is exactly the decay `θ · (1 −
    /// lr·λ)`, so untouched blocks (most of the word embeddings' rows, most steps) skip the
    /// moments' memory without changing a bit of the result.
    touched: Vec<Vec<bool>>,
    weight_decay: f64,
    steps: i32,
}

/// Elements per parallel task of an update.
const CHUNK: usize = 1 << 15;

/// Elements per flag of [`FusedAdamW::touched`].
const BLOCK: usize = 256;

impl FusedAdamW {
    /// `vars` as (name, variable); the name decides the group. Every variable learns at the
    /// scheduled rate; see [`with_rate_factors`](Self::with_rate_factors).
    pub(crate) fn new(vars: &[(String, Var)], weight_decay: f64) -> Self {
        let decayed = vars
            .iter()
            .map(|(name, _)| !(name.contains("bias") || name.contains("LayerNorm")))
            .collect();
        let rate_factors = vec![1.0; vars.len()];
        let zeros = || {
            vars.iter()
                .map(|(_, var)| vec![0f32; var.elem_count()])
                .collect()
        };
        let touched = vars
            .iter()
            .map(|(_, var)| vec![false; var.elem_count().div_ceil(BLOCK)])
            .collect();
        FusedAdamW {
            decayed,
            rate_factors,
            first_moments: zeros(),
            second_moments: zeros(),
            touched,
            weight_decay,
            steps: 0,
        }
    }

    /// Variable `i` learns at `factors[i]` times the scheduled rate (decay scales with it, as
    /// in a PyTorch parameter group with its own `lr`).
    pub(crate) fn with_rate_factors(mut self, factors: Vec<f64>) -> Result<Self, TrainError> {
        if factors.len() != self.rate_factors.len() {
            return Err(TrainError::Setting(format!(
                "{} learning-rate factors for {} variables",
                factors.len(),
                self.rate_factors.len()
            )));
        }
        self.rate_factors = factors;
        Ok(self)
    }

    /// One update of every variable with its gradient (`gradients[i]` for `vars[i]`), each
    /// gradient multiplied by `gradient_scale` first (clipping, without a pass of its own).
    /// The gradients are consumed: they are left zero, ready for the next step's backward
    /// pass (cleared where they were read, instead of in a pass of their own).
    pub(crate) fn step(
        &mut self,
        vars: &[(String, Var)],
        gradients: &mut [Vec<f32>],
        learning_rate: f64,
        gradient_scale: f32,
    ) -> Result<(), TrainError> {
        if vars.len() != gradients.len() || vars.len() != self.decayed.len() {
            return Err(TrainError::Setting(format!(
                "optimiser of {} variables stepped with {} variables and {} gradients",
                self.decayed.len(),
                vars.len(),
                gradients.len()
            )));
        }
        self.steps += 1;
        let (beta1, beta2) = ADAM_BETAS;
        let constants = Constants {
            beta1: beta1 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            scale_first: (1.0 / (1.0 - beta1.powi(self.steps))) as f32,
            scale_second: (1.0 / (1.0 - beta2.powi(self.steps))) as f32,
            learning_rate: 0.0,
            eps: ADAM_EPSILON as f32,
            keep: 1.0,
            gradient_scale,
        };
        let moments = self
            .first_moments
            .iter_mut()
            .zip(&mut self.second_moments)
            .zip(&mut self.touched);
        let groups = self.decayed.iter().zip(&self.rate_factors);
        for ((((name, var), gradient), (decayed, factor)), ((first, second), touched)) in vars
            .iter()
            .zip(gradients.iter_mut())
            .zip(groups)
            .zip(moments)
        {
            let rate = learning_rate * factor;
            let keep = if *decayed {
                (1.0 - rate * self.weight_decay) as f32
            } else {
                1.0
            };
            let constants = Constants {
                keep,
                learning_rate: rate as f32,
                ..constants
            };
            let update = InPlace::new(|theta: &mut [f32]| {
                if theta.len() != gradient.len() {
                    return Err(candle_core::Error::Msg(format!(
                        "{name}: {} values, gradient of {}",
                        theta.len(),
                        gradient.len()
                    )));
                }
                theta
                    .par_chunks_mut(CHUNK)
                    .zip(gradient.par_chunks_mut(CHUNK))
                    .zip(first.par_chunks_mut(CHUNK))
                    .zip(second.par_chunks_mut(CHUNK))
                    .zip(touched.par_chunks_mut(CHUNK / BLOCK))
                    .for_each(|((((theta, g), m), v), touched)| {
                        update_chunk(&constants, theta, g, (m, v), touched)
                    });
                Ok(())
            });
            var.as_tensor().inplace_op1(&update)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Constants {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    scale_first: f32,
    scale_second: f32,
    learning_rate: f32,
    eps: f32,
    /// `1 − lr · λ` for a decayed variable, 1 otherwise.
    keep: f32,
    /// Clipping's factor on every gradient.
    gradient_scale: f32,
}

/// [`Constants::update`] over a chunk, block by block, skipping the moments of blocks whose
/// gradient has always been zero (see [`FusedAdamW::touched`]).
fn update_chunk(
    constants: &Constants,
    theta: &mut [f32],
    g: &mut [f32],
    (m, v): (&mut [f32], &mut [f32]),
    touched: &mut [bool],
) {
    let blocks = theta
        .chunks_mut(BLOCK)
        .zip(g.chunks_mut(BLOCK))
        .zip(m.chunks_mut(BLOCK).zip(v.chunks_mut(BLOCK)));
    for (((theta, g), (m, v)), touched) in blocks.zip(touched) {
        if !*touched {
            if g.iter().all(|&g| g == 0.0) {
                let keep = constants.keep;
                for theta in theta.iter_mut() {
                    *theta *= keep;
                }
                continue;
            }
            *touched = true;
        }
        update_block(constants, theta, g, m, v);
        g.fill(0.0);
    }
}

fn update_block(constants: &Constants, theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    crate::model::dispatch!(
        update_generic,
        update_avx2,
        update_avx512,
        (constants, theta, g, m, v)
    )
}

#[inline(always)]
fn update_generic(
    constants: &Constants,
    theta: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    constants.update(theta, g, m, v)
}

crate::model::target_builds!(update_generic => update_avx2, update_avx512(
    constants: &Constants,
    theta: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32]
));

impl Constants {
    /// candle's `AdamW::step`, element by element: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
    /// `θ ← θ(1 − lr·λ) − lr · m̂ / (√v̂ + ε)`.
    #[inline(always)]
    fn update(&self, theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((theta, &g), m), v) in theta.iter_mut().zip(g).zip(m).zip(v) {
            let g = g * self.gradient_scale;
            *m = *m * self.beta1 + g * self.one_minus_beta1;
            *v = *v * self.beta2 + g * g * self.one_minus_beta2;
            let adjusted = (*m * self.scale_first) / ((*v * self.scale_second).sqrt() + self.eps);
            *theta = *theta * self.keep - adjusted * self.learning_rate;
        }
    }
}

/// A variable's storage updated in place by a closure (candle's `InplaceOp1`, CPU only).
struct InPlace<F> {
    update: RefCell<Option<F>>,
}

impl<F> InPlace<F> {
    fn new(update: F) -> Self {
        InPlace {
            update: RefCell::new(Some(update)),
        }
    }
}

impl<F: FnOnce(&mut [f32]) -> candle_core::Result<()>> InplaceOp1 for InPlace<F> {
    fn name(&self) -> &'static str {
        "adamw-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            return Err(candle_core::Error::Msg("AdamW needs f32 variables".into()));
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("AdamW needs contiguous variables".into()))?;
        let update = self
            .update
            .borrow_mut()
            .take()
            .ok_or_else(|| candle_core::Error::Msg("an in-place update runs once".into()))?;
        update(&mut data[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn warmup_then_linear_decay_to_zero() {
        let schedule = LinearSchedule::new(1.0, 0.1, 20);
        assert_eq!(schedule.warmup_steps, 2);
        let rates: Vec<f64> = (0..20).map(|step| schedule.rate(step)).collect();
        assert_eq!(rates[0], 0.0);
        assert_eq!(rates[1], 0.5);
        assert_eq!(rates[2], 1.0);
        assert!((rates[11] - 0.5).abs() < 1e-12, "{}", rates[11]);
        assert!((rates[19] - 1.0 / 18.0).abs() < 1e-12);
        assert_eq!(schedule.rate(20), 0.0);
        // A fraction that is not a whole number of steps rounds up.
        assert_eq!(LinearSchedule::new(1.0, 0.1, 15).warmup_steps, 2);
        // No warm-up: the first step runs at the peak.
        let flat = LinearSchedule::new(2e-5, 0.0, 4);
        assert_eq!(flat.rate(0), 2e-5);
        assert_eq!(flat.rate(2), 1e-5);
    }

    fn named_ones(names: &[&str]) -> Vec<(String, Var)> {
        let one = Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        names
            .iter()
            .map(|name| (name.to_string(), Var::from_tensor(&one).unwrap()))
            .collect()
    }

    fn values(vars: &[(String, Var)]) -> Vec<Vec<f32>> {
        vars.iter()
            .map(|(_, var)| var.as_tensor().to_vec1::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn weight_decay_spares_biases_and_layer_norms() {
        let vars = named_ones(&[
            "encoder.layer.0.output.dense.weight",
            "encoder.layer.0.output.dense.bias",
            "encoder.layer.0.output.LayerNorm.weight",
        ]);
        let mut optimizer = FusedAdamW::new(&vars, 0.5);
        // A zero gradient isolates the decay: θ ← θ·(1 − lr·λ).
        optimizer
            .step(&vars, &mut vec![vec![0f32; 3]; 3], 0.1, 1.0)
            .unwrap();
        let values = values(&vars);
        assert!(
            values[0].iter().all(|v| (v - 0.95).abs() < 1e-6),
            "{values:?}"
        );
        assert_eq!(&values[1..], &[vec![1.0; 3], vec![1.0; 3]]);
    }

    /// The fused update is candle's `AdamW` (which training used before it), step for step,
    /// with the two parameter groups, a changing learning rate, and a rate factor (the bias
    /// learns at three times the rate, as a parameter group with its own `lr`).
    #[test]
    fn fused_updates_equal_candle_adamw() {
        use candle_nn::{AdamW, Optimizer, ParamsAdamW};
        let names = ["a.weight", "a.bias"];
        let fused_vars = named_ones(&names);
        let candle_vars = named_ones(&names);
        let params = |weight_decay| ParamsAdamW {
            lr: 0.0,
            beta1: ADAM_BETAS.0,
            beta2: ADAM_BETAS.1,
            eps: ADAM_EPSILON,
            weight_decay,
        };
        let mut decayed = AdamW::new(vec![candle_vars[0].1.clone()], params(0.01)).unwrap();
        let mut undecayed = AdamW::new(vec![candle_vars[1].1.clone()], params(0.0)).unwrap();
        let mut fused = FusedAdamW::new(&fused_vars, 0.01)
            .with_rate_factors(vec![1.0, 3.0])
            .unwrap();
        for step in 0..5 {
            let gradients: Vec<Vec<f32>> = (0..2)
                .map(|var| {
                    (0..3)
                        .map(|i| ((step * 7 + var * 3 + i) as f32 * 0.7).sin())
                        .collect()
                })
                .collect();
            // A loss whose gradient is `gradients`: Σ g ⊙ θ.
            let loss = candle_vars
                .iter()
                .zip(&gradients)
                .map(|((_, var), g)| {
                    let g = Tensor::new(g.as_slice(), &Device::Cpu).unwrap();
                    var.as_tensor().mul(&g).unwrap().sum_all().unwrap()
                })
                .reduce(|a, b| (a + b).unwrap())
                .unwrap();
            let grads = loss.backward().unwrap();
            let rate = 1e-2 * (step + 1) as f64;
            for (optimizer, factor) in [(&mut decayed, 1.0), (&mut undecayed, 3.0)] {
                optimizer.set_learning_rate(rate * factor);
                optimizer.step(&grads).unwrap();
            }
            fused
                .step(&fused_vars, &mut gradients.clone(), rate, 1.0)
                .unwrap();
        }
        let (ours, theirs) = (values(&fused_vars), values(&candle_vars));
        for (a, b) in ours.iter().flatten().zip(theirs.iter().flatten()) {
            assert!((a - b).abs() < 1e-6, "{ours:?} vs {theirs:?}");
        }
        assert_ne!(ours[0], vec![1.0; 3], "the test moves the parameters");
    }

    /// Blocks whose gradient has always been zero skip their moments; the parameters come
    /// out as candle's `AdamW` makes them, before and after the block is first touched, and
    /// with a clipping factor.
    #[test]
    fn untouched_blocks_and_clipping_change_nothing() {
        use candle_nn::{AdamW, Optimizer, ParamsAdamW};
        let start = Tensor::ones(600, candle_core::DType::F32, &Device::Cpu).unwrap();
        let fused_vars = vec![("e.weight".to_string(), Var::from_tensor(&start).unwrap())];
        let candle_var = Var::from_tensor(&start).unwrap();
        let params = ParamsAdamW {
            lr: 0.0,
            beta1: ADAM_BETAS.0,
            beta2: ADAM_BETAS.1,
            eps: ADAM_EPSILON,
            weight_decay: 0.01,
        };
        let mut reference = AdamW::new(vec![candle_var.clone()], params).unwrap();
        let mut fused = FusedAdamW::new(&fused_vars, 0.01);
        let scale = 0.5f32;
        for step in 0..6 {
            // The second block (elements 256..512) is first touched at step 3.
            let gradient: Vec<f32> = (0..600)
                .map(|i| {
                    if (256..512).contains(&i) && step < 3 {
                        0.0
                    } else {
                        ((step * 600 + i) as f32 * 0.37).sin()
                    }
                })
                .collect();
            let scaled: Vec<f32> = gradient.iter().map(|g| g * scale).collect();
            let g = Tensor::new(scaled.as_slice(), &Device::Cpu).unwrap();
            let loss = candle_var.as_tensor().mul(&g).unwrap().sum_all().unwrap();
            reference.set_learning_rate(0.01);
            reference.step(&loss.backward().unwrap()).unwrap();
            let mut consumed = [gradient];
            fused.step(&fused_vars, &mut consumed, 0.01, scale).unwrap();
            assert!(
                consumed[0].iter().all(|&g| g == 0.0),
                "the gradients are left zero"
            );
            let ours = values(&fused_vars).remove(0);
            let theirs = candle_var.as_tensor().to_vec1::<f32>().unwrap();
            for (a, b) in ours.iter().zip(&theirs) {
                assert!((a - b).abs() < 1e-6, "step {step}: {a} vs {b}");
            }
        }
    }
}
