//! Self-attention of the training pass and its backward pass, one sequence per rayon task.
//!
//! Queries, keys and values are read in place from the fused `(rows, 3 · hidden)` projection
//! of the packed rows (each sequence's real tokens, one sequence after another) and the
//! context is written straight into its rows, as the inference kernel does. Padding takes no
//! part: its keys would get probability 0 (the additive mask of `transformers`), its query
//! rows are read by no loss. The attention probabilities, `(heads, length, length)` per
//! sequence, are kept for the backward pass; their dropout mask, indexed as the padded
//! `(batch, heads, tokens, tokens)` tensor, is drawn again there.

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

    /// Values of the kept probabilities of sequences of `lengths` real tokens.
    pub fn probabilities(&self, lengths: &[usize]) -> usize {
        lengths
            .iter()
            .map(|length| self.heads * length * length)
            .sum()
    }
}

/// `values` cut into consecutive pieces of `sizes` values.
fn split_mut(mut values: &mut [f32], sizes: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    sizes
        .map(|size| {
            let (piece, rest) = std::mem::take(&mut values).split_at_mut(size);
            values = rest;
            piece
        })
        .collect()
}

/// Each sequence's packed rows of `values` (rows `width` wide) as `(start, length)` gives them.
fn sequence_rows<'a>(
    values: &'a [f32],
    width: usize,
    (starts, lengths): (&[usize], &[usize]),
) -> Vec<&'a [f32]> {
    starts
        .iter()
        .zip(lengths)
        .map(|(start, length)| &values[start * width..][..length * width])
        .collect()
}

/// Fills `context (rows × hidden)` and `probabilities` (per sequence `heads × length ×
/// length`) from `qkv (rows × 3·hidden)`, rows packed: sequence `b` has `lengths[b]` rows from
/// row `starts[b]`.
pub(super) fn forward(
    geometry: Geometry,
    (starts, lengths): (&[usize], &[usize]),
    qkv: &[f32],
    dropout: &DropoutMask,
    context: &mut [f32],
    probabilities: &mut [f32],
) {
    let Geometry {
        heads, head_size, ..
    } = geometry;
    let (hidden, fused) = (geometry.hidden(), geometry.fused());
    let contexts = split_mut(context, lengths.iter().map(|length| length * hidden));
    let kept = split_mut(probabilities, lengths.iter().map(|l| heads * l * l));
    let projections = sequence_rows(qkv, fused, (starts, lengths));
    contexts
        .into_par_iter()
        .zip(kept)
        .zip(projections)
        .enumerate()
        .for_each(|(sequence, ((context, probabilities), qkv))| {
            let length = lengths[sequence];
            let no_bias = vec![0f32; length];
            let mut dropped = vec![0f32; length * length];
            for head in 0..heads {
                let (query, key, value) = geometry.columns(head);
                let scores = &mut probabilities[head * length * length..][..length * length];
                product(
                    (length, length, head_size),
                    geometry.scale(),
                    MatrixView::rows(&qkv[query..], fused),
                    MatrixView::transposed(&qkv[key..], fused),
                    scores,
                    length,
                    false,
                );
                for (index, (row, kept)) in scores
                    .chunks_exact_mut(length)
                    .zip(dropped.chunks_exact_mut(length))
                    .enumerate()
                {
                    softmax_with_bias(row, &no_bias);
                    kept.copy_from_slice(row);
                    apply_mask(kept, dropout, geometry.draw_index(sequence, head, index));
                }
                product(
                    (length, head_size, length),
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
    (starts, lengths): (&[usize], &[usize]),
    qkv: &[f32],
    dropout: &DropoutMask,
    probabilities: &[f32],
    d_context: &[f32],
    d_qkv: &mut [f32],
) {
    let Geometry {
        heads, head_size, ..
    } = geometry;
    let (hidden, fused) = (geometry.hidden(), geometry.fused());
    let d_projections = split_mut(d_qkv, lengths.iter().map(|length| length * fused));
    let projections = sequence_rows(qkv, fused, (starts, lengths));
    let d_contexts = sequence_rows(d_context, hidden, (starts, lengths));
    let mut kept = Vec::with_capacity(lengths.len());
    let mut rest = probabilities;
    for length in lengths {
        let (piece, tail) = rest.split_at(heads * length * length);
        kept.push(piece);
        rest = tail;
    }
    d_projections
        .into_par_iter()
        .zip(projections)
        .zip(kept)
        .zip(d_contexts)
        .enumerate()
        .for_each(|(sequence, (((d_qkv, qkv), probabilities), d_context))| {
            let length = lengths[sequence];
            let mut dropped = vec![0f32; length * length];
            let mut d_scores = vec![0f32; length * length];
            for head in 0..heads {
                let (query, key, value) = geometry.columns(head);
                let probabilities = &probabilities[head * length * length..][..length * length];
                for (row, (kept, p)) in dropped
                    .chunks_exact_mut(length)
                    .zip(probabilities.chunks_exact(length))
                    .enumerate()
                {
                    kept.copy_from_slice(p);
                    apply_mask(kept, dropout, geometry.draw_index(sequence, head, row));
                }
                let d_context_head = MatrixView::rows(&d_context[head * head_size..], hidden);
                // d(dropped probabilities) = d_context · vᵀ
                product(
                    (length, length, head_size),
                    1.0,
                    d_context_head,
                    MatrixView::transposed(&qkv[value..], fused),
                    &mut d_scores,
                    length,
                    false,
                );
                // d v = dropped probabilitiesᵀ · d_context
                product(
                    (length, head_size, length),
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
                    .zip(probabilities.chunks_exact(length))
                    .enumerate()
                {
                    let first = geometry.draw_index(sequence, head, row);
                    softmax_backward_row(d, p, dropout, first);
                }
                // d q = scale · dS · k ; d k = scale · dSᵀ · q
                product(
                    (length, head_size, length),
                    geometry.scale(),
                    MatrixView::rows(&d_scores, length),
                    MatrixView::rows(&qkv[key..], fused),
                    &mut d_qkv[query..],
                    fused,
                    false,
                );
                product(
                    (length, head_size, length),
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
