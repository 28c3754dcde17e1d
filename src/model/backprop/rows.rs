//! Row-wise steps of the training pass and their backward passes: dense layers, residual +
//! layer norm, activations, dropout of hidden states and column sums (bias and layer-norm
//! gradients). Every pass runs over blocks of rows on every thread; every sum over rows is
//! taken in fixed blocks added in order, so results do not depend on the thread count.

use rayon::prelude::*;

use super::super::config::Activation;
use super::super::dropout::DropoutMask;
use super::super::kernels::{
    activate_in_place, dispatch, fast_erf, fast_exp, lane_sum, parallel_product, target_builds,
    MatrixView,
};
use super::{Dense, Norm};

/// Rows per parallel task of the element-wise passes and per partial sum of the column sums.
const ROW_BLOCK: usize = 32;

/// `x Wᵀ + b` for `x (rows × in)` and each dense layer's `weight (out × in)` as PyTorch stores
/// it, the layers' outputs side by side in each row (one layer, or the stacked q/k/v).
pub(super) fn dense_forward(x: &[f32], layers: &[&Dense<&[f32]>]) -> Vec<f32> {
    let row_bias: Vec<f32> = layers
        .iter()
        .flat_map(|dense| dense.bias.iter())
        .copied()
        .collect();
    let stride = row_bias.len();
    let width = layers
        .first()
        .map_or(1, |dense| dense.weight.len() / dense.bias.len().max(1));
    let rows = x.len() / width.max(1);
    // Starting from the biases, the products accumulate onto them: one pass, no zeroing.
    let mut into = row_bias.repeat(rows);
    let mut offset = 0;
    for dense in layers {
        let out = dense.bias.len();
        parallel_product(
            (rows, out, width),
            MatrixView::rows(x, width),
            MatrixView::transposed(dense.weight, width),
            &mut into[offset..],
            stride,
            true,
        );
        offset += out;
    }
    into
}

/// The parameter gradients of a dense layer, `dW += dyᵀ x` and `db += Σ dy`, for `dy`
/// read from the columns `offset..offset + out` of rows `stride` wide.
pub(super) fn dense_parameter_gradients(
    dy: &[f32],
    (stride, offset): (usize, usize),
    x: &[f32],
    gradients: &mut Dense<&mut [f32]>,
) {
    let out = gradients.bias.len();
    let width = gradients.weight.len() / out.max(1);
    let rows = x.len() / width.max(1);
    parallel_product(
        (out, width, rows),
        MatrixView::transposed(&dy[offset..], stride),
        MatrixView::rows(x, width),
        gradients.weight,
        width,
        true,
    );
    add_column_sums(dy, (stride, offset), gradients.bias);
}

/// `dx (+)= dy W` for `dy` read from the columns `offset..offset + out` of rows `stride`
/// wide: the gradient a dense layer passes down.
pub(super) fn dense_input_gradient(
    dy: &[f32],
    (stride, offset): (usize, usize),
    weight: &[f32],
    dx: &mut [f32],
    accumulate: bool,
) {
    let rows = dy.len() / stride.max(1);
    let width = dx.len() / rows.max(1);
    let out = weight.len() / width.max(1);
    parallel_product(
        (rows, width, out),
        MatrixView::rows(&dy[offset..], stride),
        MatrixView::rows(weight, width),
        dx,
        width,
        accumulate,
    );
}

/// `into[j] += Σ_rows values[row · stride + offset + j]`, in fixed blocks of rows.
pub(super) fn add_column_sums(values: &[f32], (stride, offset): (usize, usize), into: &mut [f32]) {
    let width = into.len();
    let partials: Vec<Vec<f32>> = values
        .par_chunks(stride * ROW_BLOCK)
        .map(|block| {
            let mut sums = vec![0f32; width];
            column_sums_block(block, stride, offset, &mut sums);
            sums
        })
        .collect();
    for partial in partials {
        add_block(into, &partial);
    }
}

fn column_sums_block(block: &[f32], stride: usize, offset: usize, sums: &mut [f32]) {
    dispatch!(
        column_sums_generic,
        column_sums_avx2,
        column_sums_avx512,
        (block, stride, offset, sums)
    )
}

#[inline(always)]
fn column_sums_generic(block: &[f32], stride: usize, offset: usize, sums: &mut [f32]) {
    let width = sums.len();
    for row in block.chunks_exact(stride) {
        for (sum, value) in sums.iter_mut().zip(&row[offset..offset + width]) {
            *sum += value;
        }
    }
}

/// `values ⊙ mask` for rows `width = values.len() / origins.len()` wide, element `c` of row
/// `r` being element `origins[r] · width + c` of the mask (rows at their padded places).
pub(super) fn apply_dropout(values: &mut [f32], mask: &DropoutMask, origins: &[usize]) {
    if mask.is_identity() || origins.is_empty() {
        return;
    }
    let width = values.len() / origins.len();
    values
        .par_chunks_mut(width * ROW_BLOCK)
        .zip(origins.par_chunks(ROW_BLOCK))
        .for_each(|(rows, origins)| {
            for (row, origin) in rows.chunks_exact_mut(width).zip(origins) {
                apply_mask(row, mask, origin * width);
            }
        });
}

/// `values[i] *= mask.factor(first + i)`, vectorised.
pub(super) fn apply_mask(values: &mut [f32], mask: &DropoutMask, first: usize) {
    dispatch!(
        apply_mask_generic,
        apply_mask_avx2,
        apply_mask_avx512,
        (values, mask, first)
    )
}

#[inline(always)]
fn apply_mask_generic(values: &mut [f32], mask: &DropoutMask, first: usize) {
    mask.apply(values, first)
}

/// One row of attention probabilities `p` back through their dropout and the softmax:
/// `d ← p ⊙ (d ⊙ m − Σ_k (d ⊙ m)_k p_k)`, `m` the mask's factors from index `first`.
pub(super) fn softmax_backward_row(d: &mut [f32], p: &[f32], mask: &DropoutMask, first: usize) {
    dispatch!(
        softmax_backward_generic,
        softmax_backward_avx2,
        softmax_backward_avx512,
        (d, p, mask, first)
    )
}

#[inline(always)]
fn softmax_backward_generic(d: &mut [f32], p: &[f32], mask: &DropoutMask, first: usize) {
    mask.apply(d, first);
    let dot = lane_dot(d, p);
    for (d, p) in d.iter_mut().zip(p) {
        *d = p * (*d - dot);
    }
}

/// `Σ a ⊙ b` with eight independent accumulators, so the loop vectorises.
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let (body, tail) = a.as_chunks::<8>();
    let (b_body, b_tail) = b.as_chunks::<8>();
    let mut lanes = [0f32; 8];
    for (a, b) in body.iter().zip(b_body) {
        for lane in 0..8 {
            lanes[lane] += a[lane] * b[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().zip(b_tail).map(|(a, b)| a * b).sum::<f32>()
}

/// What a layer norm's backward pass needs: the normalised rows `x̂` and each row's
/// `1 / √(var + ε)`.
pub(super) struct SavedNorm {
    pub normalized: Vec<f32>,
    pub inverse_deviation: Vec<f32>,
}

/// `y = layer_norm(x ⊙ mask + residual) · γ + β` row by row (the variance from centred
/// values, as candle's layer norm takes it; `residual` empty for none; the mask read at each
/// row's padded place, `origins` as [`apply_dropout`] reads them); returns `y` and what the
/// backward pass needs.
pub(super) fn layer_norm_forward(
    x: Vec<f32>,
    (mask, residual): (&DropoutMask, &[f32]),
    origins: &[usize],
    norm: &Norm<&[f32]>,
    eps: f32,
) -> (Vec<f32>, SavedNorm) {
    let width = norm.scale.len();
    let rows = x.len() / width.max(1);
    let mut normalized = x;
    let mut output = vec![0f32; normalized.len()];
    let mut inverse_deviation = vec![0f32; rows];
    normalized
        .par_chunks_mut(width * ROW_BLOCK)
        .zip(output.par_chunks_mut(width * ROW_BLOCK))
        .zip(inverse_deviation.par_chunks_mut(ROW_BLOCK))
        .zip(origins.par_chunks(ROW_BLOCK))
        .enumerate()
        .for_each(|(block, (((xs, ys), deviations), origins))| {
            let first = block * width * ROW_BLOCK;
            let residual = residual.get(first..first + xs.len()).unwrap_or(&[]);
            let inputs = (mask, residual, origins);
            layer_norm_block(xs, ys, deviations, inputs, norm.scale, norm.shift, eps)
        });
    let saved = SavedNorm {
        normalized,
        inverse_deviation,
    };
    (output, saved)
}

fn layer_norm_block(
    xs: &mut [f32],
    ys: &mut [f32],
    deviations: &mut [f32],
    inputs: (&DropoutMask, &[f32], &[usize]),
    scale: &[f32],
    shift: &[f32],
    eps: f32,
) {
    dispatch!(
        layer_norm_generic,
        layer_norm_avx2,
        layer_norm_avx512,
        (xs, ys, deviations, inputs, scale, shift, eps)
    )
}

/// Rows of `xs` (first masked and added to their residual, when given) become `x̂`, rows of
/// `ys` `x̂ · γ + β`.
#[inline(always)]
fn layer_norm_generic(
    xs: &mut [f32],
    ys: &mut [f32],
    deviations: &mut [f32],
    (mask, residual, origins): (&DropoutMask, &[f32], &[usize]),
    scale: &[f32],
    shift: &[f32],
    eps: f32,
) {
    let width = scale.len();
    if !mask.is_identity() {
        for (row, origin) in xs.chunks_exact_mut(width).zip(origins) {
            mask.apply(row, origin * width);
        }
    }
    if !residual.is_empty() {
        for (x, r) in xs.iter_mut().zip(residual) {
            *x += r;
        }
    }
    for ((x, y), deviation) in xs
        .chunks_exact_mut(width)
        .zip(ys.chunks_exact_mut(width))
        .zip(deviations.iter_mut())
    {
        let mean = lane_sum(x, |v| v) / width as f32;
        for v in x.iter_mut() {
            *v -= mean;
        }
        let inverse = 1.0 / (lane_sum(x, |v| v * v) / width as f32 + eps).sqrt();
        *deviation = inverse;
        for (((v, out), gamma), beta) in x.iter_mut().zip(y).zip(scale).zip(shift) {
            *v *= inverse;
            *out = *v * gamma + beta;
        }
    }
}

/// The backward pass of [`layer_norm_forward`]: `dγ += Σ dy ⊙ x̂`, `dβ += Σ dy`, and
/// `dy` becomes `d sum = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ` with `g = dy ⊙ γ`.
pub(super) fn layer_norm_backward(
    dy: &mut [f32],
    saved: &SavedNorm,
    scale: &[f32],
    gradients: &mut Norm<&mut [f32]>,
) {
    let width = scale.len();
    add_column_sums(dy, (width, 0), gradients.shift);
    let partials: Vec<Vec<f32>> = dy
        .par_chunks_mut(width * ROW_BLOCK)
        .zip(saved.normalized.par_chunks(width * ROW_BLOCK))
        .zip(saved.inverse_deviation.par_chunks(ROW_BLOCK))
        .map(|((dys, xs), deviations)| {
            let mut scale_sums = vec![0f32; width];
            layer_norm_backward_block(dys, xs, deviations, scale, &mut scale_sums);
            scale_sums
        })
        .collect();
    for partial in partials {
        add_block(gradients.scale, &partial);
    }
}

fn layer_norm_backward_block(
    dys: &mut [f32],
    xs: &[f32],
    deviations: &[f32],
    scale: &[f32],
    scale_sums: &mut [f32],
) {
    dispatch!(
        layer_norm_backward_generic,
        layer_norm_backward_avx2,
        layer_norm_backward_avx512,
        (dys, xs, deviations, scale, scale_sums)
    )
}

/// Per row: `Σ dy ⊙ x̂` into `scale_sums`, and `dy ← (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ`.
#[inline(always)]
fn layer_norm_backward_generic(
    dys: &mut [f32],
    xs: &[f32],
    deviations: &[f32],
    scale: &[f32],
    scale_sums: &mut [f32],
) {
    let width = scale.len();
    for ((dy, x), inverse) in dys
        .chunks_exact_mut(width)
        .zip(xs.chunks_exact(width))
        .zip(deviations)
    {
        for ((sum, d), x) in scale_sums.iter_mut().zip(dy.iter()).zip(x) {
            *sum += d * x;
        }
        for (d, gamma) in dy.iter_mut().zip(scale) {
            *d *= gamma;
        }
        let mean_g = lane_sum(dy, |d| d) / width as f32;
        let mean_gx = lane_dot(dy, x) / width as f32;
        for (d, &x) in dy.iter_mut().zip(x) {
            *d = (*d - mean_g - x * mean_gx) * inverse;
        }
    }
}

/// `activation(x)` element-wise into a new buffer (the encoder's own vectorised loops).
pub(super) fn activate(x: &[f32], activation: Activation) -> Vec<f32> {
    let mut out = x.to_vec();
    out.par_chunks_mut(8192)
        .for_each(|chunk| activate_in_place(chunk, activation));
    out
}

/// `d ← d ⊙ activation′(x)`.
pub(super) fn activation_backward(d: &mut [f32], x: &[f32], activation: Activation) {
    d.par_chunks_mut(8192)
        .zip(x.par_chunks(8192))
        .for_each(|(d, x)| activation_backward_block(d, x, activation));
}

fn activation_backward_block(d: &mut [f32], x: &[f32], activation: Activation) {
    dispatch!(
        activation_backward_generic,
        activation_backward_avx2,
        activation_backward_avx512,
        (d, x, activation)
    )
}

#[inline(always)]
fn activation_backward_generic(d: &mut [f32], x: &[f32], activation: Activation) {
    for (d, &x) in d.iter_mut().zip(x) {
        *d *= activation_derivative(x, activation);
    }
}

#[inline(always)]
fn activation_derivative(x: f32, activation: Activation) -> f32 {
    match activation {
        // d/dx x·Φ(x) = Φ(x) + x·φ(x)
        Activation::Gelu => {
            const INVERSE_SQRT_TWO_PI: f32 = 0.398_942_3;
            let cdf = 0.5 * (1.0 + fast_erf(x * std::f32::consts::FRAC_1_SQRT_2));
            cdf + x * INVERSE_SQRT_TWO_PI * fast_exp(-0.5 * x * x)
        }
        Activation::GeluNew => {
            const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
            let inner = SQRT_TWO_OVER_PI * x * (1.0 + 0.044_715 * x * x);
            let t = inner.tanh();
            let inner_derivative = SQRT_TWO_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x);
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * inner_derivative
        }
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
    }
}

fn add_block(into: &mut [f32], values: &[f32]) {
    dispatch!(add_generic, add_avx2, add_avx512, (into, values))
}

#[inline(always)]
fn add_generic(into: &mut [f32], values: &[f32]) {
    for (a, b) in into.iter_mut().zip(values) {
        *a += b;
    }
}

target_builds!(column_sums_generic => column_sums_avx2, column_sums_avx512(
    block: &[f32],
    stride: usize,
    offset: usize,
    sums: &mut [f32]
));
target_builds!(apply_mask_generic => apply_mask_avx2, apply_mask_avx512(
    values: &mut [f32],
    mask: &DropoutMask,
    first: usize
));
target_builds!(layer_norm_generic => layer_norm_avx2, layer_norm_avx512(
    xs: &mut [f32],
    ys: &mut [f32],
    deviations: &mut [f32],
    inputs: (&DropoutMask, &[f32], &[usize]),
    scale: &[f32],
    shift: &[f32],
    eps: f32
));
target_builds!(layer_norm_backward_generic => layer_norm_backward_avx2, layer_norm_backward_avx512(
    dys: &mut [f32],
    xs: &[f32],
    deviations: &[f32],
    scale: &[f32],
    scale_sums: &mut [f32]
));
target_builds!(activation_backward_generic => activation_backward_avx2, activation_backward_avx512(
    d: &mut [f32],
    x: &[f32],
    activation: Activation
));
target_builds!(softmax_backward_generic => softmax_backward_avx2, softmax_backward_avx512(
    d: &mut [f32],
    p: &[f32],
    mask: &DropoutMask,
    first: usize
));
target_builds!(add_generic => add_avx2, add_avx512(into: &mut [f32], values: &[f32]));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_derivatives_match_finite_differences() {
        for activation in [Activation::Gelu, Activation::GeluNew, Activation::Relu] {
            for x in [-3.0f64, -1.2, -0.3, 0.4, 1.1, 2.5] {
                let f = |x: f64| {
                    let mut v = [x as f32];
                    activate_in_place(&mut v, activation);
                    v[0] as f64
                };
                let h = 1e-3;
                let numeric = (f(x + h) - f(x - h)) / (2.0 * h);
                let analytic = activation_derivative(x as f32, activation) as f64;
                assert!(
                    (numeric - analytic).abs() < 2e-3,
                    "{activation:?} at {x}: {numeric} vs {analytic}"
                );
            }
        }
    }

    #[test]
    fn column_sums_do_not_depend_on_the_block_split() {
        let values: Vec<f32> = (0..100 * 6).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut sums = vec![1f32; 2];
        add_column_sums(&values, (6, 3), &mut sums);
        for (column, sum) in sums.iter().enumerate() {
            let expected: f32 = 1.0
                + (0..100)
                    .map(|row| values[row * 6 + 3 + column])
                    .sum::<f32>();
            assert!((sum - expected).abs() < 1e-4, "{sum} vs {expected}");
        }
    }
}
