//! The optimiser (AdamW in two parameter groups), the learning-rate schedule and gradient
//! clipping by global norm, each as Hugging Face's `Trainer` and sentence-transformers do them.

use candle_core::backprop::GradStore;
use candle_core::Var;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use super::loss::scalar;
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
/// sentence-transformers' `fit`). candle's `AdamW` decays every variable it holds, so the two
/// groups are two optimisers stepped together.
pub(crate) struct GroupedAdamW {
    decayed: AdamW,
    undecayed: AdamW,
}

impl GroupedAdamW {
    /// `vars` as (name, variable); the name decides the group.
    pub(crate) fn new(vars: &[(String, Var)], weight_decay: f64) -> Result<Self, TrainError> {
        let (undecayed, decayed): (Vec<_>, Vec<_>) = vars
            .iter()
            .partition(|(name, _)| name.contains("bias") || name.contains("LayerNorm"));
        let params = |weight_decay| ParamsAdamW {
            lr: 0.0,
            beta1: ADAM_BETAS.0,
            beta2: ADAM_BETAS.1,
            eps: ADAM_EPSILON,
            weight_decay,
        };
        let vars_of = |group: &[&(String, Var)]| group.iter().map(|(_, var)| var.clone()).collect();
        Ok(GroupedAdamW {
            decayed: AdamW::new(vars_of(&decayed), params(weight_decay))?,
            undecayed: AdamW::new(vars_of(&undecayed), params(0.0))?,
        })
    }

    pub(crate) fn step(&mut self, grads: &GradStore, learning_rate: f64) -> Result<(), TrainError> {
        self.decayed.set_learning_rate(learning_rate);
        self.undecayed.set_learning_rate(learning_rate);
        self.decayed.step(grads)?;
        self.undecayed.step(grads)?;
        Ok(())
    }
}

/// Scales the gradients of `vars` so that their global L2 norm is at most `max_norm`, and
/// returns the norm before clipping (`torch.nn.utils.clip_grad_norm_`, including its 1e-6 in
/// the scale). Norms are summed in the order of `vars`, so the result is reproducible.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    vars: &[(String, Var)],
    max_norm: f64,
) -> Result<f64, TrainError> {
    let mut squares = 0.0;
    for (_, var) in vars {
        if let Some(grad) = grads.get(var) {
            squares += scalar(&grad.sqr()?.sum_all()?)?;
        }
    }
    let norm = squares.sqrt();
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for (_, var) in vars {
            if let Some(grad) = grads.remove(var) {
                grads.insert(var, (grad * scale)?);
            }
        }
    }
    Ok(norm)
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

    fn vars_with_grads() -> (Vec<(String, Var)>, GradStore) {
        let a = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[3f32], &Device::Cpu).unwrap()).unwrap();
        // loss = 3·a₀ + 4·b: gradients (3, 0) and (4), global norm 5.
        let loss = (a.narrow(0, 0, 1).unwrap() * 3.0)
            .unwrap()
            .sum_all()
            .unwrap();
        let loss = (loss + (b.as_tensor() * 4.0).unwrap().sum_all().unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        (vec![("a".into(), a), ("b.bias".into(), b)], grads)
    }

    #[test]
    fn clipping_rescales_to_the_max_norm_and_reports_the_norm_before() {
        let (vars, mut grads) = vars_with_grads();
        let norm = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let a = grads.get(&vars[0].1).unwrap().to_vec1::<f32>().unwrap();
        let b = grads.get(&vars[1].1).unwrap().to_vec1::<f32>().unwrap();
        let scale = 1.0 / (5.0 + 1e-6);
        assert!((a[0] as f64 - 3.0 * scale).abs() < 1e-6 && a[1] == 0.0);
        assert!((b[0] as f64 - 4.0 * scale).abs() < 1e-6);

        let (vars, mut grads) = vars_with_grads();
        let norm = clip_grad_norm(&mut grads, &vars, 10.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let b = grads.get(&vars[1].1).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            b,
            vec![4.0],
            "below the maximum the gradients are untouched"
        );
    }

    #[test]
    fn weight_decay_spares_biases_and_layer_norms() {
        let zero = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap();
        let one = Tensor::ones(1, candle_core::DType::F32, &Device::Cpu).unwrap();
        let named = |name: &str| (name.to_string(), Var::from_tensor(&one).unwrap());
        let vars = vec![
            named("encoder.layer.0.output.dense.weight"),
            named("encoder.layer.0.output.dense.bias"),
            named("encoder.layer.0.output.LayerNorm.weight"),
        ];
        let mut optimizer = GroupedAdamW::new(&vars, 0.5).unwrap();
        // A zero gradient isolates the decay: θ ← θ·(1 − lr·λ).
        let loss = vars
            .iter()
            .map(|(_, var)| var.as_tensor().mul(&zero).unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        optimizer.step(&grads, 0.1).unwrap();
        let values: Vec<f32> = vars
            .iter()
            .map(|(_, var)| var.as_tensor().to_vec1::<f32>().unwrap()[0])
            .collect();
        assert!((values[0] - 0.95).abs() < 1e-6, "{values:?}");
        assert_eq!(&values[1..], &[1.0, 1.0]);
    }
}
