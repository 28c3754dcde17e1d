//! Pooling token states into one sentence vector, and L2 normalisation.

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::tokenize::Batch;

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the pooled tokens, special tokens included (sentence-transformers' mean).
    Mean,
    /// Mean over the pooled tokens without `[CLS]` and `[SEP]`.
    MeanNospecial,
    /// The `[CLS]` token's state.
    Cls,
    /// Element-wise maximum over the pooled tokens.
    Max,
}

impl Pooling {
    pub const ALL: [Pooling; 4] = [
        Pooling::Mean,
        Pooling::MeanNospecial,
        Pooling::Cls,
        Pooling::Max,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::MeanNospecial => "mean_nospecial",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pooling::ALL
            .into_iter()
            .find(|pooling| pooling.name() == s)
            .ok_or_else(|| {
                format!("unknown pooling `{s}` (expected mean, mean_nospecial, cls or max)")
            })
    }
}

/// Pools `hidden` `(batch, tokens, width)` into `(batch, width)`.
pub fn pool(hidden: &Tensor, batch: &Batch, pooling: Pooling) -> candle_core::Result<Tensor> {
    match pooling {
        Pooling::Mean => masked_mean(hidden, &batch.pooled_mask),
        Pooling::MeanNospecial => masked_mean(hidden, &batch.content_mask),
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Max => masked_max(hidden, &batch.pooled_mask),
    }
}

/// Σ mask·h / Σ mask, as one batched matrix product `(batch, 1, tokens) × (batch, tokens,
/// width)`. A row with an empty mask (a sentence with no content tokens) pools to zeros.
fn masked_mean(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let weights = mask.unsqueeze(1)?;
    let sums = weights.matmul(hidden)?.squeeze(1)?;
    let counts = mask.sum_keepdim(D::Minus1)?.clamp(1e-9f32, f32::MAX)?;
    sums.broadcast_div(&counts)
}

/// Padding and unpooled tokens are pushed to -1e9 before the maximum, as
/// sentence-transformers does, so they never win.
fn masked_max(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let penalty = (mask.affine(1.0, -1.0)? * 1e9)?.unsqueeze(D::Minus1)?;
    hidden.broadcast_add(&penalty)?.max(1)
}

/// Scales each row of `(rows, width)` to unit L2 norm; norms below 1e-12 count as 1e-12, as in
/// PyTorch's `F.normalize` (rows of zeros stay zero). Differentiable: the MNRL loss uses it too.
pub fn l2_normalize_rows(xs: &Tensor) -> candle_core::Result<Tensor> {
    let norms = xs
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    xs.broadcast_div(&norms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn toy_batch() -> (Tensor, Batch) {
        // Two rows, three tokens, width two; the second row has one padded position.
        let hidden = Tensor::new(
            &[
                [[1f32, 10.0], [2.0, 20.0], [3.0, -30.0]],
                [[4.0, 40.0], [6.0, 60.0], [100.0, 100.0]],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let mask = |rows: [[f32; 3]; 2]| Tensor::new(&rows, &Device::Cpu).unwrap();
        let batch = Batch {
            input_ids: Tensor::zeros((2, 3), candle_core::DType::U32, &Device::Cpu).unwrap(),
            token_type_ids: Tensor::zeros((2, 3), candle_core::DType::U32, &Device::Cpu).unwrap(),
            attention_mask: Tensor::new(&[[1u32, 1, 1], [1, 1, 0]], &Device::Cpu).unwrap(),
            pooled_mask: mask([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
            content_mask: mask([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]),
        };
        (hidden, batch)
    }

    fn pooled(pooling: Pooling) -> Vec<Vec<f32>> {
        let (hidden, batch) = toy_batch();
        pool(&hidden, &batch, pooling).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn mean_ignores_padding() {
        assert_eq!(pooled(Pooling::Mean), vec![vec![2.0, 0.0], vec![5.0, 50.0]]);
    }

    #[test]
    fn mean_nospecial_uses_content_tokens() {
        assert_eq!(
            pooled(Pooling::MeanNospecial),
            vec![vec![2.0, 20.0], vec![6.0, 60.0]]
        );
    }

    #[test]
    fn cls_takes_first_token() {
        assert_eq!(pooled(Pooling::Cls), vec![vec![1.0, 10.0], vec![4.0, 40.0]]);
    }

    #[test]
    fn max_never_picks_padding() {
        assert_eq!(pooled(Pooling::Max), vec![vec![3.0, 20.0], vec![6.0, 60.0]]);
    }

    #[test]
    fn normalized_rows_have_unit_norm() {
        let xs = Tensor::new(&[[3f32, 4.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let normalized: Vec<Vec<f32>> = l2_normalize_rows(&xs).unwrap().to_vec2().unwrap();
        assert_eq!(normalized, vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
    }

    #[test]
    fn names_round_trip() {
        for pooling in Pooling::ALL {
            assert_eq!(pooling.name().parse::<Pooling>().unwrap(), pooling);
        }
        assert!("avg".parse::<Pooling>().is_err());
    }
}
