//! Self-attention of one head of one sequence on AMX tiles, for bf16 layers: `q kᵀ` and the
//! probabilities times `v` are bf16 tile products with f32 sums; scale, mask and softmax stay
//! f32 (the f32 kernels' `exp`); the softmax's weights are rounded to bf16 for their product
//! and the context divided by their sum at the end, as the f32 kernel does.
//!
//! Per head, queries are rounded into rows of bf16, keys and values into the tiles' pair
//! layout (keys: 16 keys × 16 pairs of head lanes per tile; values: 16 pairs of keys × 16
//! lanes); then, 16 query rows at a time, one scores tile per 16 keys, the softmax of each
//! row rounded to bf16, and one context tile per 16 lanes. Head sizes that are multiples of 32
//! (MiniLM's 32, BERT-base's 64) only; the f32 kernel serves the rest.
//!
//! This file owns the attention's tile layout; the tile configuration and the AMX
//! permission are [`super::bf16`]'s.

use std::arch::x86_64::*;

use super::avx512::{exp, Head};
use super::bf16::{amx_tile_pair, with_tiles};

/// Query rows, keys per scores tile, and lanes per context tile: one tile's rows.
const TILE: usize = 16;
/// Keys (pairs × 2) per context step and head lanes per scores step: one tile's k extent.
const K_STEP: usize = 32;

/// Whether [`attend_head`] serves this head size.
pub(super) fn serves(head_size: usize) -> bool {
    head_size > 0 && head_size.is_multiple_of(K_STEP)
}

/// Buffers one thread reuses across heads and sequences.
#[derive(Default)]
pub(super) struct Scratch {
    queries: Vec<u16>,
    keys: Vec<u16>,
    values: Vec<u16>,
    scores: Vec<f32>,
    probabilities: Vec<u16>,
    context: Vec<f32>,
}

fn grown<T: Copy + Default>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::default());
    }
    &mut buffer[..len]
}

/// Writes the head's context into `context[t · stride + offset ..][..head_size]` for each
/// token `t`. The caller has chosen the AMX kernel ([`super::bf16::Bf16Kernel::Amx`]).
pub(super) fn attend_head(
    head: &Head,
    scratch: &mut Scratch,
    context: &mut [f32],
    stride: usize,
    offset: usize,
) {
    let Head {
        qkv,
        tokens,
        fused,
        head_size,
        ..
    } = *head;
    assert!(
        serves(head_size)
            && head.bias.len() == tokens
            && head.query.max(head.key).max(head.value) + head_size <= fused
            && qkv.len() >= tokens * fused
            && offset + head_size <= stride
            && (tokens == 0 || context.len() >= (tokens - 1) * stride + offset + head_size),
        "AMX attention: head of {head_size} lanes over {tokens} tokens does not fit its buffers"
    );
    if tokens == 0 {
        return;
    }
    let rows = tokens.next_multiple_of(TILE);
    let keys = tokens.next_multiple_of(K_STEP);
    let Scratch {
        queries,
        keys: packed_keys,
        values: packed_values,
        scores,
        probabilities,
        context: staged,
    } = scratch;
    let queries = grown(queries, rows * head_size);
    let packed_keys = grown(packed_keys, keys * head_size);
    let packed_values = grown(packed_values, keys * head_size);
    // SAFETY: the AMX kernel runs on CPUs with AVX512-BW and AVX512-BF16 (`Bf16Support`);
    // the buffers were sized above for `rows` queries and `keys` keys of `head_size` lanes.
    unsafe { pack_head_avx512(head, queries, packed_keys, packed_values) };
    let scores = grown(scores, TILE * keys);
    let probabilities = grown(probabilities, TILE * keys);
    let staged = grown(staged, TILE * head_size);
    with_tiles(|| {
        for first in (0..tokens).step_by(TILE) {
            let block = TILE.min(tokens - first);
            score_block(
                head,
                &queries[first * head_size..],
                packed_keys,
                keys,
                scores,
            );
            let mut totals = [1.0f32; TILE];
            for ((row, rounded), total) in scores
                .chunks_exact(keys)
                .zip(probabilities.chunks_exact_mut(keys))
                .zip(&mut totals)
                .take(block)
            {
                // SAFETY: the AMX kernel runs on CPUs with AVX512-BF16 (`Bf16Support`).
                *total =
                    unsafe { softmax_weights_bf16(&row[..tokens], head.bias, head.scale, rounded) };
            }
            probabilities[block * keys..].fill(0);
            context_block(probabilities, packed_values, keys, head_size, staged);
            for (row, values) in staged.chunks_exact(head_size).take(block).enumerate() {
                let start = (first + row) * stride + offset;
                let inverse = 1.0 / totals[row];
                for (out, &value) in context[start..start + head_size].iter_mut().zip(values) {
                    *out = value * inverse;
                }
            }
        }
    });
}

/// The softmax's weights `exp(scores · scale + bias − max)` rounded to bf16 into `out`
/// (`scores.len()` values, then zeros to the end of `out`), 16 lanes at a time; returns their
/// sum, by which the context row is divided (as the f32 kernel normalises at the end).
///
/// # Safety
/// AVX512-F and AVX512-BF16; `bias` as long as `scores`, `out` at least as long, a multiple
/// of 32.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn softmax_weights_bf16(scores: &[f32], bias: &[f32], scale: f32, out: &mut [u16]) -> f32 {
    let count = scores.len();
    let mask = |start: usize| -> __mmask16 {
        let lanes = count.saturating_sub(start).min(16);
        ((1u32 << lanes) - 1) as __mmask16
    };
    let logit = |start: usize| {
        let m = mask(start);
        let score = _mm512_maskz_loadu_ps(m, scores.as_ptr().add(start));
        let bias = _mm512_maskz_loadu_ps(m, bias.as_ptr().add(start));
        _mm512_mask_blend_ps(
            m,
            _mm512_set1_ps(f32::NEG_INFINITY),
            _mm512_fmadd_ps(score, _mm512_set1_ps(scale), bias),
        )
    };
    let mut maximum = _mm512_set1_ps(f32::NEG_INFINITY);
    for start in (0..count).step_by(16) {
        maximum = _mm512_max_ps(maximum, logit(start));
    }
    let maximum = _mm512_set1_ps(_mm512_reduce_max_ps(maximum));
    let mut total = _mm512_setzero_ps();
    for start in (0..out.len()).step_by(32) {
        let mut half = |offset: usize| {
            let start = start + offset;
            if start >= count {
                return _mm512_setzero_ps();
            }
            let weight =
                _mm512_maskz_mov_ps(mask(start), exp(_mm512_sub_ps(logit(start), maximum)));
            total = _mm512_add_ps(total, weight);
            weight
        };
        let (low, high) = (half(0), half(16));
        let rounded = _mm512_cvtne2ps_pbh(high, low);
        _mm512_storeu_si512(
            out.as_mut_ptr().add(start).cast::<__m512i>(),
            std::mem::transmute::<__m512bh, __m512i>(rounded),
        );
    }
    _mm512_reduce_add_ps(total)
}

/// The layout [`pack_head_avx512`] writes, in plain code (the tests' reference): queries as
/// bf16 rows (padding rows zero); keys as tiles of 16 keys × 16 pairs of lanes
/// (`[key block][lane step][pair][key][2]`); values as tiles of 16 pairs of keys × 16 lanes
/// (`[lane block][key pair][lane][2]`), padding keys zero.
#[cfg(test)]
fn pack_head(head: &Head, queries: &mut [u16], keys: &mut [u16], values: &mut [u16]) {
    use super::bf16::to_bf16;
    let Head {
        qkv,
        tokens,
        fused,
        head_size,
        ..
    } = *head;
    let padded_keys = keys.len() / head_size;
    queries.fill(0);
    keys.fill(0);
    values.fill(0);
    for token in 0..tokens {
        let row = &qkv[token * fused..];
        for lane in 0..head_size {
            queries[token * head_size + lane] = to_bf16(row[head.query + lane]);
            let (step, within) = (lane / K_STEP, lane % K_STEP);
            let key_tile = ((token / TILE) * (head_size / K_STEP) + step) * TILE * K_STEP;
            keys[key_tile + ((within / 2) * TILE + token % TILE) * 2 + within % 2] =
                to_bf16(row[head.key + lane]);
            let value_panel = (lane / TILE) * padded_keys * TILE;
            values[value_panel + ((token / 2) * TILE + lane % TILE) * 2 + token % 2] =
                to_bf16(row[head.value + lane]);
        }
    }
}

/// Queries as bf16 rows (padding rows zero); keys as tiles of 16 keys × 16 pairs of lanes;
/// values as tiles of 16 pairs of keys × 16 lanes, padding keys zero (see `pack_head`), 32
/// lanes at a time: a query's lanes rounded and stored as a row; a key's
/// rounded pairs scattered down its tile's 16 pair rows; two tokens' rounded values
/// interleaved into pairs.
///
/// # Safety
/// AVX512-F, AVX512-BW and AVX512-BF16; the buffers as [`pack_head`]'s.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_head_avx512(head: &Head, queries: &mut [u16], keys: &mut [u16], values: &mut [u16]) {
    let Head {
        qkv,
        tokens,
        fused,
        head_size,
        ..
    } = *head;
    let padded_keys = keys.len() / head_size;
    queries[tokens * head_size..].fill(0);
    keys.fill(0);
    values.fill(0);
    let round = |at: *const f32| -> __m512i {
        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(
            _mm512_loadu_ps(at.add(16)),
            _mm512_loadu_ps(at),
        ))
    };
    // Pair rows of a key tile are 16 u32 (64 bytes) apart.
    let pair_rows = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(TILE as i32),
    );
    // Lane i of the first and of the second token, alternating: 16 pairs for each panel.
    let first_half: [u16; 32] = std::array::from_fn(|i| (i / 2 + 32 * (i % 2)) as u16);
    let second_half: [u16; 32] = std::array::from_fn(|i| (16 + i / 2 + 32 * (i % 2)) as u16);
    let (first_half, second_half) = (
        _mm512_loadu_si512(first_half.as_ptr().cast()),
        _mm512_loadu_si512(second_half.as_ptr().cast()),
    );
    let steps = head_size / K_STEP;
    for token in 0..tokens {
        let row = qkv.as_ptr().add(token * fused);
        for step in 0..steps {
            let lane = step * K_STEP;
            _mm512_storeu_si512(
                queries.as_mut_ptr().add(token * head_size + lane).cast(),
                round(row.add(head.query + lane)),
            );
            let tile = ((token / TILE) * steps + step) * TILE * K_STEP;
            let base = keys
                .as_mut_ptr()
                .add(tile + (token % TILE) * 2)
                .cast::<i32>();
            _mm512_i32scatter_epi32::<4>(base.cast(), pair_rows, round(row.add(head.key + lane)));
        }
    }
    for pair in 0..tokens.div_ceil(2) {
        let first = qkv.as_ptr().add(2 * pair * fused);
        let second_token = 2 * pair + 1;
        for step in 0..steps {
            let lane = step * K_STEP;
            let a = round(first.add(head.value + lane));
            let b = if second_token < tokens {
                round(qkv.as_ptr().add(second_token * fused + head.value + lane))
            } else {
                _mm512_setzero_si512()
            };
            for (half, index) in [first_half, second_half].into_iter().enumerate() {
                let panel = lane / TILE + half;
                let at = values
                    .as_mut_ptr()
                    .add(panel * padded_keys * TILE + pair * 2 * TILE);
                _mm512_storeu_si512(at.cast(), _mm512_permutex2var_epi16(a, index, b));
            }
        }
    }
}

/// `q kᵀ` of 16 query rows against every key: a pair of tiles per 32 keys into `scores` (16
/// rows of `keys` f32).
fn score_block(head: &Head, queries: &[u16], packed_keys: &[u16], keys: usize, scores: &mut [f32]) {
    let steps = head.head_size / K_STEP;
    let tile = steps * TILE * K_STEP;
    for block in (0..keys / TILE).step_by(2) {
        let first = packed_keys[block * tile..].as_ptr();
        // SAFETY: inside `with_tiles`; 16 rows of `head_size` bf16 at `queries` (padded to
        // whole tiles by the caller), `steps` key tiles at each of the two key blocks, 16 rows
        // of `keys` f32 at `scores[block · 16 ..]` (`keys` is a multiple of 32).
        unsafe {
            amx_tile_pair(
                queries.as_ptr(),
                head.head_size * 2,
                (first, first.add(tile)),
                steps,
                scores.as_mut_ptr().add(block * TILE),
                keys * 4,
            )
        };
    }
}

/// The softmax weights (16 rows of `keys` bf16) times the values: a pair of tiles per 32
/// lanes into `staged` (16 rows of `head_size` f32).
fn context_block(
    probabilities: &[u16],
    packed_values: &[u16],
    keys: usize,
    head_size: usize,
    staged: &mut [f32],
) {
    let panel_size = keys * TILE;
    for panel in (0..head_size / TILE).step_by(2) {
        let first = packed_values[panel * panel_size..].as_ptr();
        // SAFETY: inside `with_tiles`; 16 rows of `keys` bf16 at `probabilities`, `keys / 32`
        // value tiles in each of the two panels, 16 rows of `head_size` f32 at
        // `staged[panel · 16 ..]` (`head_size` is a multiple of 32).
        unsafe {
            amx_tile_pair(
                probabilities.as_ptr(),
                keys * 2,
                (first, first.add(panel_size)),
                keys / K_STEP,
                staged.as_mut_ptr().add(panel * TILE),
                head_size * 4,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::super::bf16::{Bf16Kernel, Bf16Support};
    use super::*;
    use crate::rng::SplitMix64;

    /// The f32 attention of one head, in f64: `softmax(q kᵀ · scale + bias) v`.
    fn reference(head: &Head) -> Vec<f32> {
        let Head {
            qkv,
            tokens,
            fused,
            head_size,
            ..
        } = *head;
        let at = |token: usize, column: usize| f64::from(qkv[token * fused + column]);
        let mut out = vec![0.0; tokens * head_size];
        for query in 0..tokens {
            let scores: Vec<f64> = (0..tokens)
                .map(|key| {
                    let dot: f64 = (0..head_size)
                        .map(|lane| at(query, head.query + lane) * at(key, head.key + lane))
                        .sum();
                    dot * f64::from(head.scale) + f64::from(head.bias[key])
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for lane in 0..head_size {
                let value: f64 = (0..tokens)
                    .map(|key| weights[key] / total * at(key, head.value + lane))
                    .sum();
                out[query * head_size + lane] = value as f32;
            }
        }
        out
    }

    #[test]
    fn both_packings_agree() {
        if Bf16Kernel::choose(Bf16Support::detect(), Some("amx")).is_err() {
            eprintln!("no AMX on this CPU: nothing to check");
            return;
        }
        let mut generator = SplitMix64::new(9);
        for (tokens, head_size) in [(37, 32), (6, 64), (1, 32)] {
            let fused = 3 * head_size + 4;
            let qkv: Vec<f32> = (0..tokens * fused).map(|_| generator.normal()).collect();
            let bias = vec![0.0; tokens];
            let head = Head {
                qkv: &qkv,
                tokens,
                fused,
                query: 4,
                key: head_size + 4,
                value: 2 * head_size + 4,
                head_size,
                scale: 1.0,
                bias: &bias,
            };
            let (rows, keys) = (
                tokens.next_multiple_of(TILE),
                tokens.next_multiple_of(K_STEP),
            );
            let buffers = || {
                (
                    vec![7u16; rows * head_size],
                    vec![7u16; keys * head_size],
                    vec![7u16; keys * head_size],
                )
            };
            let (mut q1, mut k1, mut v1) = buffers();
            pack_head(&head, &mut q1, &mut k1, &mut v1);
            let (mut q2, mut k2, mut v2) = buffers();
            // SAFETY: AMX implies AVX512-BW and AVX512-BF16 (`Bf16Support`).
            unsafe { pack_head_avx512(&head, &mut q2, &mut k2, &mut v2) };
            assert_eq!(q1, q2, "queries, {tokens} tokens");
            assert_eq!(k1, k2, "keys, {tokens} tokens");
            assert_eq!(v1, v2, "values, {tokens} tokens");
        }
    }

    #[test]
    fn amx_attention_stays_within_bf16_rounding_of_f32() {
        if Bf16Kernel::choose(Bf16Support::detect(), Some("amx")).is_err() {
            eprintln!("no AMX on this CPU: nothing to check");
            return;
        }
        let mut generator = SplitMix64::new(3);
        for (tokens, head_size) in [(37, 32), (16, 32), (70, 64), (5, 32)] {
            let fused = 3 * head_size + 8;
            let qkv: Vec<f32> = (0..tokens * fused)
                .map(|_| generator.normal() * 0.8)
                .collect();
            let bias: Vec<f32> = (0..tokens)
                .map(|key| if key % 7 == 3 { -10_000.0 } else { 0.0 })
                .collect();
            let head = Head {
                qkv: &qkv,
                tokens,
                fused,
                query: 0,
                key: head_size,
                value: 2 * head_size + 8,
                head_size,
                scale: 1.0 / (head_size as f32).sqrt(),
                bias: &bias,
            };
            let stride = head_size + 5;
            let mut context = vec![f32::NAN; tokens * stride];
            attend_head(&head, &mut Scratch::default(), &mut context, stride, 3);
            let expected = reference(&head);
            let mut worst = 0.0f32;
            for token in 0..tokens {
                for lane in 0..head_size {
                    let got = context[token * stride + 3 + lane];
                    let want = expected[token * head_size + lane];
                    worst = worst.max((got - want).abs());
                    assert!(
                        (got - want).abs() < 0.01,
                        "{tokens} tokens, head {head_size}: ({token}, {lane}) {got} vs {want}"
                    );
                }
            }
            eprintln!("{tokens} tokens, head {head_size}: max |AMX − f64| {worst}");
        }
    }
}
