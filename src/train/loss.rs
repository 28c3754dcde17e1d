//! Training losses, each a function of tensors that returns a scalar with a backward pass.
//!
//! Every loss is a mean over its rows (the reduction PyTorch and sentence-transformers use by
//! default), so its scale does not depend on the batch size.

use candle_core::{DType, Tensor, D};

use crate::model::l2_normalize_rows;

/// sentence-transformers' default `scale` of MultipleNegativesRankingLoss (a temperature of
/// 0.05 on cosine similarities).
pub const MNRL_SCALE: f64 = 20.0;

/// Binary cross-entropy between `logits` and `labels` in `[0, 1]` (same shape), the loss of
/// a one-logit cross encoder (PyTorch's `BCEWithLogitsLoss`). Computed in the stable form
/// `max(x, 0) − x·y + ln(1 + e^(−|x|))`.
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let labels = labels.to_dtype(logits.dtype())?;
    let softplus_tail = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (logits.relu()? - logits.mul(&labels)?)?
        .add(&softplus_tail)?
        .mean_all()
}

/// Mean squared error over every element (PyTorch's `MSELoss`): distillation of a student's
/// embeddings towards a teacher's.
pub fn mse(predicted: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
    let target = target.to_dtype(predicted.dtype())?;
    predicted.sub(&target)?.sqr()?.mean_all()
}

/// sentence-transformers' MultipleNegativesRankingLoss: the cosine similarity of every query
/// `(n, dim)` to every candidate `(m, dim)`, `m ≥ n`, times `scale`, then cross-entropy with
/// candidate `i` the answer of query `i`. Candidates are the positives of the batch, optionally
/// followed by hard negatives; every other row is an in-batch negative.
pub fn mnrl(queries: &Tensor, candidates: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    let (rows, _) = queries.dims2()?;
    let (columns, _) = candidates.dims2()?;
    if columns < rows {
        candle_core::bail!("mnrl needs at least one candidate per query ({columns} < {rows})")
    }
    let scores =
        (l2_normalize_rows(queries)?.matmul(&l2_normalize_rows(candidates)?.t()?)? * scale)?;
    let mut target = vec![0f32; rows * columns];
    for row in 0..rows {
        target[row * columns + row] = 1.0;
    }
    let target =
        Tensor::from_vec(target, (rows, columns), scores.device())?.to_dtype(scores.dtype())?;
    let log_probabilities = log_softmax_rows(&scores)?;
    (log_probabilities.mul(&target)?.sum_all()? / -(rows as f64))?.reshape(())
}

/// MarginMSE (Hofstätter et al.): the student's margin `q·p − q·n` (dot products of
/// unnormalised embeddings, each `(batch, dim)`) regressed on the teacher cross encoder's
/// margin `score(q, p) − score(q, n)` `(batch,)`.
pub fn margin_mse(
    queries: &Tensor,
    positives: &Tensor,
    negatives: &Tensor,
    teacher_margins: &Tensor,
) -> candle_core::Result<Tensor> {
    let positive = queries.mul(positives)?.sum(D::Minus1)?;
    let negative = queries.mul(negatives)?.sum(D::Minus1)?;
    mse(&positive.sub(&negative)?, teacher_margins)
}

/// Mean of `hidden` `(batch, tokens, dim)` over the tokens where `mask` `(batch, tokens)` is
/// 1: sentence-transformers' mean pooling, in the dtype of `hidden` so that it is also
/// differentiable in f64. A row with an empty mask pools to zeros.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?;
    let sums = mask.unsqueeze(1)?.matmul(hidden)?.squeeze(1)?;
    let counts = mask.sum_keepdim(D::Minus1)?.maximum(1e-9)?;
    sums.broadcast_div(&counts)
}

/// `log_softmax` over the last dimension; the row maximum is detached (it cancels out).
fn log_softmax_rows(xs: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = xs.broadcast_sub(&xs.max_keepdim(D::Minus1)?.detach())?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&log_sum)
}

/// A scalar tensor's value as f64.
pub(crate) fn scalar(xs: &Tensor) -> candle_core::Result<f64> {
    xs.to_dtype(DType::F64)?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn matrix(rows: &[&[f64]]) -> Tensor {
        let width = rows[0].len();
        let flat: Vec<f64> = rows.iter().flat_map(|row| row.iter().copied()).collect();
        Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu).unwrap()
    }

    fn vector(values: &[f64]) -> Tensor {
        Tensor::new(values, &Device::Cpu).unwrap()
    }

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-9 * expected.abs().max(1.0),
            "{actual} != {expected}"
        );
    }

    #[test]
    fn bce_matches_hand_values_and_is_stable_for_large_logits() {
        // Per row: softplus(0) − 0 = ln 2; softplus(2) − 0; softplus(−1) + 0.25.
        let expected =
            ((2f64).ln() + (2.0 + (-2f64).exp().ln_1p()) + ((-1f64).exp().ln_1p() + 0.25)) / 3.0;
        let loss = bce_with_logits(&vector(&[0.0, 2.0, -1.0]), &vector(&[1.0, 0.0, 0.25]));
        close(scalar(&loss.unwrap()).unwrap(), expected);
        close(expected, 1.127_778_959_707_047);
        let extreme = bce_with_logits(&vector(&[100.0, -100.0]), &vector(&[1.0, 1.0]));
        close(scalar(&extreme.unwrap()).unwrap(), 50.0);
    }

    #[test]
    fn mse_is_the_mean_over_every_element() {
        let loss = mse(
            &matrix(&[&[1.0, 2.0], &[3.0, 5.0]]),
            &matrix(&[&[1.0, 1.0], &[1.0, 1.0]]),
        );
        close(
            scalar(&loss.unwrap()).unwrap(),
            (0.0 + 1.0 + 4.0 + 16.0) / 4.0,
        );
    }

    #[test]
    fn mnrl_matches_hand_values_with_a_hard_negative() {
        let queries = matrix(&[&[1.0, 0.0], &[0.0, 2.0]]);
        let candidates = matrix(&[&[2.0, 0.0], &[1.0, 1.0], &[0.0, -1.0]]);
        let c = std::f64::consts::FRAC_1_SQRT_2;
        // Row 0 cosines (1, c, 0), answer 0; row 1 cosines (0, c, −1), answer 1.
        let row0 = (1f64.exp() + c.exp() + 1.0).ln() - 1.0;
        let row1 = (1.0 + c.exp() + (-1f64).exp()).ln() - c;
        let loss = mnrl(&queries, &candidates, 1.0).unwrap();
        close(scalar(&loss).unwrap(), (row0 + row1) / 2.0);
        close((row0 + row1) / 2.0, 0.632_031_430_824_201);
        let scaled = mnrl(&queries, &candidates, MNRL_SCALE).unwrap();
        close(scalar(&scaled).unwrap(), 0.001_426_994_173_814_755);
        assert!(mnrl(&candidates, &queries, 1.0).is_err());
    }

    #[test]
    fn margin_mse_regresses_dot_product_margins() {
        // Row 0: q·p − q·n = 3 − 2 = 1 against 3; row 1: 0 − 4 = −4 against −4.
        let loss = margin_mse(
            &matrix(&[&[1.0, 2.0], &[2.0, 0.0]]),
            &matrix(&[&[3.0, 0.0], &[0.0, 1.0]]),
            &matrix(&[&[0.0, 1.0], &[2.0, 5.0]]),
            &vector(&[3.0, -4.0]),
        );
        close(scalar(&loss.unwrap()).unwrap(), (4.0 + 0.0) / 2.0);
    }

    #[test]
    fn mean_pool_skips_masked_tokens() {
        let hidden =
            Tensor::new(&[[[1.0f64, 2.0], [3.0, 4.0], [100.0, 100.0]]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1f32, 1.0, 0.0]], &Device::Cpu).unwrap();
        let pooled = mean_pool(&hidden, &mask).unwrap().to_vec2::<f64>().unwrap();
        assert_eq!(pooled, vec![vec![2.0, 3.0]]);
    }

    #[test]
    fn mnrl_gradient_pulls_each_query_towards_its_own_positive() {
        // Both queries point along +x; query 0's positive lies along +y, query 1's along −y.
        let queries = Var::from_tensor(&matrix(&[&[1.0, 0.0], &[1.0, 0.0]])).unwrap();
        let candidates = matrix(&[&[0.0, 1.0], &[0.0, -1.0]]);
        let loss = mnrl(&queries, &candidates, 1.0).unwrap();
        let grads = loss.backward().unwrap();
        let grad = grads.get(&queries).unwrap().to_vec2::<f64>().unwrap();
        // Descending the gradient turns query 0 towards +y and query 1 towards −y.
        assert!(grad[0][1] < 0.0 && grad[1][1] > 0.0, "{grad:?}");
    }
}
