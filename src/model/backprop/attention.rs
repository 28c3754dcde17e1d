//! Self-attention of the training pass and its backward pass, one sequence per rayon task.
//!
//! Queries, keys and values are read in place from the fused `(rows, 3 · hidden)` projection
//! and the context is written straight into its rows, as the inference kernel does. Only the
//! sequence's real keys take part (padding keys get probability 0, as with the additive mask
//! of `transformers`); padding query rows are computed like any other, as Hugging Face does.
//! The attention probabilities are kept for the backward pass; their dropout mask is drawn
//! again there.

use rayon::prelude::*;

use super::super::dropout::DropoutMask;
use super::super::kernels::{blas_product as product, softmax_with_bias, MatrixView};
use super::rows::{apply_mask, softmax_backward_row};

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub tokens: usize,
    pub heads: usize,
    pub head_size: usize,
}

impl Geometry {
    fn hidden(&self) -> usize {
        self.heads * self.head_size
    }

    /// Width of a row of the fused q/k/v projection.
    fn fused(&self) -> usize {
        3 * self.hidden()
    }

    /// Where `head`'s query, key and value columns start in a row of the projection.
    fn columns(&self, head: usize) -> (usize, usize, usize) {
        let (hidden, offset) = (self.hidden(), head * self.head_size);
        (offset, hidden + offset, 2 * hidden + offset)
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_size as f32).sqrt()
    }

    /// Index of probability `(sequence, head, query, key)` in the mask's draws: the
    /// row-major order of a `(batch, heads, tokens, tokens)` tensor.
    fn draw_index(&self, sequence: usize, head: usize, query: usize) -> usize {
        ((sequence * self.heads + head) * self.tokens + query) * self.tokens
    }
}

/// Fills `context (rows × hidden)` and `probabilities (batch × heads × tokens × tokens)`
/// from `qkv (rows × 3·hidden)`; `lengths[b]` is the number of real tokens of sequence `b`
/// (the first ones).
pub(super) fn forward(
    geometry: Geometry,
    qkv: &[f32],
    lengths: &[usize],
    dropout: &DropoutMask,
    context: &mut [f32],
    probabilities: &mut [f32],
) {
    let Geometry {
        tokens,
        heads,
        head_size,
    } = geometry;
    let (hidden, fused) = (geometry.hidden(), geometry.fused());
    context
        .par_chunks_mut(tokens * hidden)
        .zip(probabilities.par_chunks_mut(heads * tokens * tokens))
        .zip(qkv.par_chunks(tokens * fused))
        .enumerate()
        .for_each(|(sequence, ((context, probabilities), qkv))| {
            let length = lengths[sequence];
            let no_bias = vec![0f32; length];
            let mut dropped = vec![0f32; tokens * length];
            for head in 0..heads {
                let (query, key, value) = geometry.columns(head);
                let scores = &mut probabilities[head * tokens * tokens..][..tokens * tokens];
                product(
                    (tokens, length, head_size),
                    geometry.scale(),
                    MatrixView::rows(&qkv[query..], fused),
                    MatrixView::transposed(&qkv[key..], fused),
                    scores,
                    tokens,
                    false,
                );
                for (index, (row, kept)) in scores
                    .chunks_exact_mut(tokens)
                    .zip(dropped.chunks_exact_mut(length))
                    .enumerate()
                {
                    softmax_with_bias(&mut row[..length], &no_bias);
                    row[length..].fill(0.0);
                    kept.copy_from_slice(&row[..length]);
                    apply_mask(kept, dropout, geometry.draw_index(sequence, head, index));
                }
                product(
                    (tokens, head_size, length),
                    1.0,
                    MatrixView::rows(&dropped, length),
                    MatrixView::rows(&qkv[value..], fused),
                    &mut context[head * head_size..],
                    hidden,
                    false,
                );
            }
        });
}

/// The backward pass of [`forward`]: `d_qkv (rows × 3·hidden)`, which must be zero, gets the
/// gradients of queries, keys and values from `d_context`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    geometry: Geometry,
    qkv: &[f32],
    lengths: &[usize],
    dropout: &DropoutMask,
    probabilities: &[f32],
    d_context: &[f32],
    d_qkv: &mut [f32],
) {
    let Geometry {
        tokens,
        heads,
        head_size,
    } = geometry;
    let (hidden, fused) = (geometry.hidden(), geometry.fused());
    d_qkv
        .par_chunks_mut(tokens * fused)
        .zip(qkv.par_chunks(tokens * fused))
        .zip(probabilities.par_chunks(heads * tokens * tokens))
        .zip(d_context.par_chunks(tokens * hidden))
        .enumerate()
        .for_each(|(sequence, (((d_qkv, qkv), probabilities), d_context))| {
            let length = lengths[sequence];
            let mut dropped = vec![0f32; tokens * length];
            let mut d_scores = vec![0f32; tokens * length];
            for head in 0..heads {
                let (query, key, value) = geometry.columns(head);
                let probabilities = &probabilities[head * tokens * tokens..][..tokens * tokens];
                for (row, (kept, p)) in dropped
                    .chunks_exact_mut(length)
                    .zip(probabilities.chunks_exact(tokens))
                    .enumerate()
                {
                    kept.copy_from_slice(&p[..length]);
                    apply_mask(kept, dropout, geometry.draw_index(sequence, head, row));
                }
                let d_context_head = MatrixView::rows(&d_context[head * head_size..], hidden);
                // d(dropped probabilities) = d_context · vᵀ
                product(
                    (tokens, length, head_size),
                    1.0,
                    d_context_head,
                    MatrixView::transposed(&qkv[value..], fused),
                    &mut d_scores,
                    length,
                    false,
                );
                // d v = dropped probabilitiesᵀ · d_context
                product(
                    (length, head_size, tokens),
                    1.0,
                    MatrixView::transposed(&dropped, length),
                    d_context_head,
                    &mut d_qkv[value..],
                    fused,
                    false,
                );
                // Through the dropout, then the softmax: dS = P ⊙ (dP − Σ_k dP_k P_k).
                for (row, (d, p)) in d_scores
                    .chunks_exact_mut(length)
                    .zip(probabilities.chunks_exact(tokens))
                    .enumerate()
                {
                    let first = geometry.draw_index(sequence, head, row);
                    softmax_backward_row(d, &p[..length], dropout, first);
                }
                // d q = scale · dS · k ; d k = scale · dSᵀ · q
                product(
                    (tokens, head_size, length),
                    geometry.scale(),
                    MatrixView::rows(&d_scores, length),
                    MatrixView::rows(&qkv[key..], fused),
                    &mut d_qkv[query..],
                    fused,
                    false,
                );
                product(
                    (length, head_size, tokens),
                    geometry.scale(),
                    MatrixView::transposed(&d_scores, length),
                    MatrixView::rows(&qkv[query..], fused),
                    &mut d_qkv[key..],
                    fused,
                    false,
                );
            }
        });
}
