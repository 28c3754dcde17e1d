//! Dropout for training, with masks drawn from repro's own seeded generator.
//!
//! candle's `Tensor::rand` on the CPU cannot be seeded, so a training run built on it could
//! not be repeated. Here every mask comes from one [`SplitMix64`] stream, reserved in the
//! order the forward pass asks for masks; within a mask, element `i` takes draw `i` of its
//! reservation ([`DropoutMask`]), so masks are drawn in parallel, never stored, drawn again
//! in the backward pass, and the same seed gives the same masks on every machine and thread
//! count.

use candle_core::{DType, Tensor};

use super::config::BertConfig;
use crate::rng::{DrawRange, SplitMix64};

/// The dropout of a training forward pass: where it applies, with what probability, and the
/// generator of its masks. Inference never uses one.
#[derive(Debug, Clone)]
pub struct Dropout {
    /// After the embeddings, after each dense projection before the residual connection, and
    /// before the classifier (Hugging Face's `hidden_dropout_prob`).
    hidden: f64,
    /// On the attention probabilities (`attention_probs_dropout_prob`).
    attention: f64,
    rng: SplitMix64,
}

impl Dropout {
    /// Dropout with the probabilities of `config`, masks drawn from `seed`.
    pub fn from_config(config: &BertConfig, seed: u64) -> Self {
        Self::new(
            config.hidden_dropout_prob,
            config.attention_probs_dropout_prob,
            seed,
        )
    }

    /// Dropout with the given probabilities (each clamped to `[0, 1)`), masks drawn from `seed`.
    pub fn new(hidden: f64, attention: f64, seed: u64) -> Self {
        let clamp = |p: f64| {
            if p.is_finite() {
                p.clamp(0.0, 0.999)
            } else {
                0.0
            }
        };
        Dropout {
            hidden: clamp(hidden),
            attention: clamp(attention),
            rng: SplitMix64::new(seed),
        }
    }

    /// No dropout at all: the training forward pass becomes deterministic (gradient checks).
    pub fn disabled() -> Self {
        Self::new(0.0, 0.0, 0)
    }

    pub(crate) fn hidden(&mut self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mask = self.hidden_mask(xs.elem_count());
        mask.apply_to_tensor(xs)
    }

    pub(crate) fn attention(&mut self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mask = self.attention_mask(xs.elem_count());
        mask.apply_to_tensor(xs)
    }

    /// The mask of the next hidden-state dropout over `count` elements.
    pub(crate) fn hidden_mask(&mut self, count: usize) -> DropoutMask {
        let p = self.hidden;
        self.mask(count, p)
    }

    /// The mask of the next attention-probability dropout over `count` elements.
    pub(crate) fn attention_mask(&mut self, count: usize) -> DropoutMask {
        let p = self.attention;
        self.mask(count, p)
    }

    /// A mask with probability 0 draws nothing, so switching one dropout off leaves the other
    /// masks of the stream where they were.
    fn mask(&mut self, count: usize, p: f64) -> DropoutMask {
        if p == 0.0 {
            return DropoutMask::Identity;
        }
        DropoutMask::Drawn {
            draws: self.rng.reserve(count as u64),
            // An element is dropped when a uniform 64-bit draw falls below p·2⁶⁴.
            threshold: (p * 2f64.powi(64)) as u64,
            keep: (1.0 / (1.0 - p)) as f32,
        }
    }
}

/// One dropout mask, by element index: each element is zeroed with probability `p` and the
/// survivors scaled by `1 / (1 - p)`, as `torch.nn.Dropout` does in training mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum DropoutMask {
    /// Probability 0: every factor is 1.
    Identity,
    Drawn {
        draws: DrawRange,
        threshold: u64,
        keep: f32,
    },
}

impl DropoutMask {
    #[inline(always)]
    pub(crate) fn is_identity(&self) -> bool {
        matches!(self, DropoutMask::Identity)
    }

    /// The factor of element `index`: 0 or `1 / (1 - p)`.
    #[inline(always)]
    pub(crate) fn factor(&self, index: usize) -> f32 {
        match *self {
            DropoutMask::Identity => 1.0,
            DropoutMask::Drawn {
                draws,
                threshold,
                keep,
            } => {
                if draws.draw(index as u64) < threshold {
                    0.0
                } else {
                    keep
                }
            }
        }
    }

    /// `values[i] *= factor(first + i)`.
    #[inline(always)]
    pub(crate) fn apply(&self, values: &mut [f32], first: usize) {
        if self.is_identity() {
            return;
        }
        for (offset, value) in values.iter_mut().enumerate() {
            *value *= self.factor(first + offset);
        }
    }

    fn apply_to_tensor(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if self.is_identity() {
            return Ok(xs.clone());
        }
        let mask: Vec<f32> = (0..xs.elem_count()).map(|i| self.factor(i)).collect();
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?;
        let mask = if xs.dtype() == DType::F32 {
            mask
        } else {
            mask.to_dtype(xs.dtype())?
        };
        xs.mul(&mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ones(count: usize) -> Tensor {
        Tensor::ones(count, DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn drops_about_p_and_rescales_the_survivors() {
        let mut dropout = Dropout::new(0.25, 0.0, 3);
        let out = dropout
            .hidden(&ones(40_000))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let dropped = out.iter().filter(|&&v| v == 0.0).count() as f64 / out.len() as f64;
        assert!((dropped - 0.25).abs() < 0.01, "dropped fraction {dropped}");
        let kept = 1.0f32 / 0.75;
        assert!(out.iter().all(|&v| v == 0.0 || (v - kept).abs() < 1e-6));
        // The attention probability is 0 here: attention dropout is the identity.
        let same = dropout
            .attention(&ones(100))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(same, vec![1.0; 100]);
    }

    #[test]
    fn same_seed_same_masks_different_seed_different_masks() {
        let draw = |seed| {
            let mut dropout = Dropout::new(0.5, 0.5, seed);
            let first = dropout.hidden(&ones(64)).unwrap().to_vec1::<f32>().unwrap();
            let second = dropout
                .attention(&ones(64))
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (first, second)
        };
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
        // Successive masks of one stream differ.
        let (first, second) = draw(9);
        assert_ne!(first, second);
    }

    #[test]
    fn a_mask_by_index_is_the_serial_stream() {
        // What `apply` drew one element after the other before masks were drawn by index.
        let mut serial = SplitMix64::new(5);
        let threshold = (0.3 * 2f64.powi(64)) as u64;
        let expected: Vec<f32> = (0..100)
            .map(|_| {
                if serial.next_u64() < threshold {
                    0.0
                } else {
                    (1.0 / 0.7) as f32
                }
            })
            .collect();
        let mut dropout = Dropout::new(0.3, 0.0, 5);
        assert!(dropout.attention_mask(1000).is_identity());
        let mask = dropout.hidden_mask(100);
        let mut values = vec![1f32; 100];
        mask.apply(&mut values[40..], 40);
        mask.apply(&mut values[..40], 0);
        assert_eq!(values, expected);
    }

    #[test]
    fn keeps_the_dtype_of_its_input() {
        let mut dropout = Dropout::new(0.5, 0.5, 1);
        let xs = Tensor::ones((2, 3), DType::F64, &Device::Cpu).unwrap();
        let out = dropout.hidden(&xs).unwrap();
        assert_eq!(out.dtype(), DType::F64);
        assert_eq!(out.dims(), &[2, 3]);
    }
}
