//! Self-attention of one head of one sequence in AVX-512, fused: scores, masked softmax and
//! context for a block of query rows stay in L1 and never make a round trip through memory.
//!
//! Heads are narrow (32 lanes in MiniLM, 64 in BERT-base), so a general matrix product spends
//! most of its time packing and on edge tiles: measured on a Sapphire Rapids core, the `gemm`
//! crate's AVX2 kernels ran attention at about a quarter of the speed of the dense layers.
//! Here the keys are transposed once per head (so 16 keys' lane `d` is one vector load),
//! queries are broadcast straight from the fused projection, and values are read in place.
//!
//! The mathematics is [`super::Heads::one_head`]'s: `softmax(q kᵀ · scale + bias) v` with
//! the same `exp` polynomial; only the normalisation moves to the end (the context row is
//! divided by the row sum instead of every probability), which changes results by rounding.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Keys per score tile: two vectors.
const KEY_TILE: usize = 32;
const LANES: usize = 16;

/// One head's inputs: rows of the fused `(tokens, 3 · hidden)` projection of one sequence
/// (also the AMX kernel's, [`super::amx_attention`]).
pub(super) struct Head<'a> {
    pub qkv: &'a [f32],
    pub tokens: usize,
    /// Row stride of `qkv` (3 · hidden).
    pub fused: usize,
    /// Column offsets of this head's query, key and value lanes.
    pub query: usize,
    pub key: usize,
    pub value: usize,
    pub head_size: usize,
    pub scale: f32,
    /// Additive mask, one per key.
    pub bias: &'a [f32],
}

/// Buffers reused across heads and sequences by one thread.
#[derive(Default)]
pub(super) struct Scratch {
    keys_transposed: Vec<f32>,
    bias: Vec<f32>,
    scores: Vec<f32>,
}

/// Writes a head's context into `context[t · stride + offset ..][..head_size]` for each token
/// `t`; `context` holds one sequence.
pub(super) type Kernel = fn(&Head, &mut Scratch, &mut [f32], usize, usize);

/// The kernel for this head size on this CPU, if there is one: head sizes of 16, 32, 48 or 64
/// lanes on a CPU with AVX-512F.
pub(super) fn kernel(head_size: usize) -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return None;
        }
        let kernel: Kernel = match head_size {
            16 => checked::<8, 1>,
            32 => checked::<8, 2>,
            48 => checked::<4, 3>,
            64 => checked::<4, 4>,
            _ => return None,
        };
        Some(kernel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = head_size;
        None
    }
}

/// Checks every extent the kernel reaches through raw pointers, then runs it.
#[cfg(target_arch = "x86_64")]
fn checked<const ROWS: usize, const VECTORS: usize>(
    head: &Head,
    scratch: &mut Scratch,
    context: &mut [f32],
    stride: usize,
    offset: usize,
) {
    let lanes = VECTORS * LANES;
    assert!(
        head.head_size == lanes
            && head.bias.len() == head.tokens
            && head.query.max(head.key).max(head.value) + lanes <= head.fused
            && head.qkv.len() >= head.tokens * head.fused
            && offset + lanes <= stride
            && (head.tokens == 0 || context.len() >= (head.tokens - 1) * stride + offset + lanes),
        "attention kernel: head of {} lanes over {} tokens does not fit its buffers",
        head.head_size,
        head.tokens
    );
    if head.tokens == 0 {
        return;
    }
    // SAFETY: the CPU has AVX-512F (checked in `kernel`, the only way here); the extents
    // checked above bound every pointer the kernel forms.
    unsafe { one_head::<ROWS, VECTORS>(head, scratch, context, stride, offset) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn one_head<const ROWS: usize, const VECTORS: usize>(
    head: &Head,
    scratch: &mut Scratch,
    context: &mut [f32],
    stride: usize,
    offset: usize,
) {
    let tokens = head.tokens;
    let padded = tokens.next_multiple_of(KEY_TILE);
    let lanes = VECTORS * LANES;
    let qkv = head.qkv.as_ptr();

    // Keys transposed to (lanes, padded): the 16 keys of a tile share one load per lane.
    // Padding keys are zero with the mask's most negative bias, and are zeroed after exp.
    let keys = &mut scratch.keys_transposed;
    keys.clear();
    keys.resize(lanes * padded, 0.0);
    for token in 0..tokens {
        let row = &head.qkv[token * head.fused + head.key..][..lanes];
        for (lane, &value) in row.iter().enumerate() {
            keys[lane * padded + token] = value;
        }
    }
    let bias = &mut scratch.bias;
    bias.clear();
    bias.extend_from_slice(head.bias);
    bias.resize(padded, f32::MIN);
    let scores = &mut scratch.scores;
    scores.clear();
    scores.resize(ROWS * padded, 0.0);
    let (keys, bias, scores) = (keys.as_ptr(), bias.as_ptr(), scores.as_mut_ptr());
    let scale = _mm512_set1_ps(head.scale);

    for block in (0..tokens).step_by(ROWS) {
        // Rows past the end repeat the last one; their results are not written.
        let query_rows: [*const f32; ROWS] =
            std::array::from_fn(|r| qkv.add((block + r).min(tokens - 1) * head.fused + head.query));

        // scores = q kᵀ · scale + bias, a tile of ROWS × 32 keys at a time.
        for tile in (0..padded).step_by(KEY_TILE) {
            let mut sums = [[_mm512_setzero_ps(); 2]; ROWS];
            for lane in 0..lanes {
                let k0 = _mm512_loadu_ps(keys.add(lane * padded + tile));
                let k1 = _mm512_loadu_ps(keys.add(lane * padded + tile + LANES));
                for (sum, query) in sums.iter_mut().zip(&query_rows) {
                    let q = _mm512_set1_ps(*query.add(lane));
                    sum[0] = _mm512_fmadd_ps(q, k0, sum[0]);
                    sum[1] = _mm512_fmadd_ps(q, k1, sum[1]);
                }
            }
            let b0 = _mm512_loadu_ps(bias.add(tile));
            let b1 = _mm512_loadu_ps(bias.add(tile + LANES));
            for (r, sum) in sums.iter().enumerate() {
                let row = scores.add(r * padded + tile);
                _mm512_storeu_ps(row, _mm512_fmadd_ps(sum[0], scale, b0));
                _mm512_storeu_ps(row.add(LANES), _mm512_fmadd_ps(sum[1], scale, b1));
            }
        }

        // exp(score − row max), unnormalised; padding keys become exactly zero.
        let mut inverse_sums = [0f32; ROWS];
        for (r, inverse) in inverse_sums.iter_mut().enumerate() {
            let row = scores.add(r * padded);
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            for chunk in (0..padded).step_by(LANES) {
                max = _mm512_max_ps(max, _mm512_loadu_ps(row.add(chunk)));
            }
            let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
            let mut sum = _mm512_setzero_ps();
            for chunk in (0..padded).step_by(LANES) {
                let real = tokens.saturating_sub(chunk).min(LANES);
                let keep: __mmask16 = if real == LANES {
                    !0
                } else {
                    (1u16 << real) - 1
                };
                let e = _mm512_maskz_mov_ps(
                    keep,
                    exp(_mm512_sub_ps(_mm512_loadu_ps(row.add(chunk)), max)),
                );
                _mm512_storeu_ps(row.add(chunk), e);
                sum = _mm512_add_ps(sum, e);
            }
            *inverse = 1.0 / _mm512_reduce_add_ps(sum);
        }

        // context = probabilities · v / row sum, over the real keys only.
        let mut outputs = [[_mm512_setzero_ps(); VECTORS]; ROWS];
        for token in 0..tokens {
            let value = qkv.add(token * head.fused + head.value);
            let values: [__m512; VECTORS] =
                std::array::from_fn(|v| _mm512_loadu_ps(value.add(v * LANES)));
            for (r, output) in outputs.iter_mut().enumerate() {
                let p = _mm512_set1_ps(*scores.add(r * padded + token));
                for (o, v) in output.iter_mut().zip(&values) {
                    *o = _mm512_fmadd_ps(p, *v, *o);
                }
            }
        }
        let context = context.as_mut_ptr();
        for (r, (output, inverse)) in outputs.iter().zip(inverse_sums).enumerate() {
            if block + r >= tokens {
                break;
            }
            let destination = context.add((block + r) * stride + offset);
            let inverse = _mm512_set1_ps(inverse);
            for (v, o) in output.iter().enumerate() {
                _mm512_storeu_ps(destination.add(v * LANES), _mm512_mul_ps(*o, inverse));
            }
        }
    }
}

/// [`super::fast_exp`] on 16 lanes, step for step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn exp(x: __m512) -> __m512 {
    const ROUNDER: f32 = 12_582_912.0;
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.3)),
        _mm512_set1_ps(88.3),
    );
    let rounder = _mm512_set1_ps(ROUNDER);
    let shifted = _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), rounder);
    let n = _mm512_sub_ps(shifted, rounder);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693_359_4), x);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for coefficient in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(coefficient));
    }
    let y = _mm512_add_ps(
        _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
        _mm512_set1_ps(1.0),
    );
    let exponent = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_sub_epi32(
            _mm512_castps_si512(shifted),
            _mm512_set1_epi32(ROUNDER.to_bits() as i32),
        ),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(y, _mm512_castsi512_ps(exponent))
}
