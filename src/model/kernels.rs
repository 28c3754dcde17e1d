//! CPU kernels for the encoder's inference path: one fused op per encoder layer.
//!
//! candle's generic ops spend most of a BERT forward pass outside the big matrix products:
//! attention runs as hundreds of tiny batched products plus a separate softmax pass, GELU
//! calls libm's `erff` per element, and every step writes a batch-sized intermediate that
//! the next step reads back from memory. [`encoder_layer`] keeps the same mathematics with
//! fewer passes over memory, a block of sequences at a time (see [`layer`]):
//!
//! * dense layers: `x Wᵀ + b` as one matrix product per block (OpenBLAS's `sgemm` with the
//!   `openblas` feature, the `gemm` crate otherwise), bias written first and accumulated into;
//! * attention: per sequence, per head, `softmax(q kᵀ · scale + mask) v` reading q, k and v
//!   in place from the fused q/k/v projection and writing the context straight into its
//!   rows, no transposes or copies (a fused AVX-512 kernel where the CPU has it);
//! * GELU: `x/2 · (1 + erf(x/√2))` with a rational `erf` (max error below 1e-6);
//! * the residual sum and layer norm in one pass.
//!
//! Hot loops are plain Rust compiled again with AVX2 + FMA and with AVX-512 and picked at
//! run time, so one binary is fast on new CPUs and still runs on old ones. These ops have no
//! backward pass; training's hand-written passes ([`super::backprop`]) reuse their loops and
//! products.

use candle_core::{CpuStorage, Error, Layout, Result};
use rayon::prelude::*;

use super::config::Activation;

#[cfg(target_arch = "x86_64")]
mod amx_attention;
mod avx512;
pub mod bf16;
mod layer;

pub use bf16::{Bf16Kernel, Precision};
pub use layer::{encoder_layer, Bf16Weights, DenseWeights, LayerWeights, NormWeights};

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        return Err(Error::Msg(format!("{what}: expected f32 storage")));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Msg(format!("{what}: expected a contiguous tensor")))?;
    Ok(&data[start..end])
}

/// A row-major matrix inside a slice: element `(i, j)` is `data[i * row_stride + j]`, or
/// `data[j * row_stride + i]` when `transposed`.
#[derive(Clone, Copy)]
pub(super) struct MatrixView<'a> {
    data: &'a [f32],
    row_stride: usize,
    transposed: bool,
}

impl<'a> MatrixView<'a> {
    pub(super) fn rows(data: &'a [f32], row_stride: usize) -> Self {
        Self {
            data,
            row_stride,
            transposed: false,
        }
    }

    pub(super) fn transposed(data: &'a [f32], row_stride: usize) -> Self {
        Self {
            data,
            row_stride,
            transposed: true,
        }
    }

    /// The view of rows `row..` of this one.
    fn starting_at_row(self, row: usize) -> Self {
        let offset = if self.transposed {
            row
        } else {
            row * self.row_stride
        };
        Self {
            data: &self.data[offset.min(self.data.len())..],
            ..self
        }
    }

    /// Whether a `rows × columns` view fits in the slice.
    fn holds(&self, rows: usize, columns: usize) -> bool {
        let (outer, inner) = if self.transposed {
            (columns, rows)
        } else {
            (rows, columns)
        };
        outer == 0 || inner == 0 || (outer - 1) * self.row_stride + inner <= self.data.len()
    }
}

/// `c = alpha · a b (+ c)` for `a (m×k)`, `b (k×n)` and `c (m×n)` with row stride
/// `c_stride`, as one single-threaded product of the `gemm` crate. Callers parallelise over
/// independent products themselves.
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: MatrixView,
    b: MatrixView,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
) {
    assert!(
        a.holds(m, k) && b.holds(k, n) && MatrixView::rows(c, c_stride).holds(m, n),
        "matrix product {m}×{k} · {k}×{n}: a view exceeds its slice"
    );
    let strides = |view: MatrixView| {
        if view.transposed {
            (1, view.row_stride as isize)
        } else {
            (view.row_stride as isize, 1)
        }
    };
    let ((a_rows, a_columns), (b_rows, b_columns)) = (strides(a), strides(b));
    // SAFETY: `holds` checked above that every element the strides reach lies inside its
    // slice; `c` is borrowed mutably, so it aliases neither `a` nor `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a_columns,
            a_rows,
            b.data.as_ptr(),
            b_columns,
            b_rows,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `c = a b (+ c)` as one big product over every rayon thread: training's dense layers,
/// whose operands are batch-sized. Row slabs of `c` go to [`dense_product`]s of their own
/// (no split of the inner dimension, so the sums and their rounding do not depend on the
/// thread count, only the packing is repeated per slab).
pub(super) fn parallel_product(
    (m, n, k): (usize, usize, usize),
    a: MatrixView,
    b: MatrixView,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
) {
    let tasks = rayon::current_num_threads();
    let per_task = m.div_ceil(tasks).next_multiple_of(16).max(16);
    let mut slabs = Vec::with_capacity(tasks);
    let mut rest = c;
    let mut row = 0;
    while row < m {
        let rows = per_task.min(m - row);
        let take = if row + rows < m {
            rows * c_stride
        } else {
            rest.len()
        };
        let (slab, tail) = rest.split_at_mut(take.min(rest.len()));
        slabs.push((row, rows, slab));
        rest = tail;
        row += rows;
    }
    slabs.into_par_iter().for_each(|(row, rows, slab)| {
        dense_product(
            (rows, n, k),
            a.starting_at_row(row),
            b,
            slab,
            c_stride,
            accumulate,
        )
    });
}

/// `c = alpha · a b (+ c)` on OpenBLAS's `sgemm` with the `openblas` feature, [`product`]
/// otherwise; single-threaded (training's attention products, measured 3% faster on
/// OpenBLAS, and [`dense_product`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn blas_product(
    dims: (usize, usize, usize),
    alpha: f32,
    a: MatrixView,
    b: MatrixView,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
) {
    #[cfg(feature = "openblas")]
    {
        let (m, n, k) = dims;
        assert!(
            a.holds(m, k) && b.holds(k, n) && MatrixView::rows(c, c_stride).holds(m, n),
            "matrix product {m}×{k} · {k}×{n}: a view exceeds its slice"
        );
        openblas::sgemm(dims, alpha, a, b, c, c_stride, accumulate);
    }
    #[cfg(not(feature = "openblas"))]
    product(dims, alpha, a, b, c, c_stride, accumulate);
}

/// The dense layers' product: OpenBLAS's `sgemm` with the `openblas` feature (faster than
/// the `gemm` crate at these sizes), [`product`] otherwise. The encoder's attention products
/// stay on the `gemm` crate, which measured faster there than OpenBLAS.
fn dense_product(
    dims: (usize, usize, usize),
    a: MatrixView,
    b: MatrixView,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
) {
    blas_product(dims, 1.0, a, b, c, c_stride, accumulate)
}

/// `out = x Wᵀ + bias` for one block of `m` rows: row-major `x (m×k)`, `weight (n×k)` as
/// PyTorch stores it, `out (m×n)`. Single-threaded: callers parallelise over blocks. The
/// bias is written first and the product accumulates onto it while the block is in cache.
fn dense_block(
    (m, n, k): (usize, usize, usize),
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    for row in out[..m * n].chunks_exact_mut(n) {
        row.copy_from_slice(bias);
    }
    if k == 0 {
        return;
    }
    let (x, weight) = (MatrixView::rows(x, k), MatrixView::transposed(weight, k));
    dense_product((m, n, k), x, weight, out, n, true);
}

#[cfg(feature = "openblas")]
pub(super) mod openblas {
    use std::os::raw::c_int;

    use super::MatrixView;

    const ROW_MAJOR: c_int = 101;
    const NO_TRANS: c_int = 111;
    const TRANS: c_int = 112;

    #[link(name = "openblas")]
    extern "C" {
        fn openblas_set_num_threads(threads: c_int);
        fn openblas_get_corename() -> *const std::os::raw::c_char;
        fn cblas_sgemm(
            layout: c_int,
            transa: c_int,
            transb: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
    }

    /// The kernel family to ask OpenBLAS for (through `OPENBLAS_CORETYPE`, read when the
    /// library loads) when it picked a pre-AVX2 one on a CPU with AVX2 or AVX-512.
    ///
    /// A DYNAMIC_ARCH OpenBLAS falls back to its SSE3 `Prescott` kernels on a CPU model it
    /// does not know: Debian 12's 0.3.21 does so on Sapphire Rapids, where the encoder then
    /// runs 3.4× slower than with the `SkylakeX` kernels (measured: 4.5 against 15.3
    /// documents/s on 256 SciFact documents).
    pub fn core_upgrade() -> Option<&'static str> {
        // SAFETY: returns a pointer to a static NUL-terminated string (or null).
        let name = unsafe {
            let name = openblas_get_corename();
            if name.is_null() {
                return None;
            }
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .to_lowercase()
        };
        const PRE_AVX2: [&str; 11] = [
            "prescott",
            "core2",
            "penryn",
            "dunnington",
            "nehalem",
            "atom",
            "katmai",
            "coppermine",
            "northwood",
            "banias",
            "sandybridge",
        ];
        if !PRE_AVX2.contains(&name.as_str()) {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
                return Some("SkylakeX");
            }
            if has!("avx2") && has!("fma") {
                return Some("Haswell");
            }
        }
        None
    }

    pub(super) fn sgemm(
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        a: MatrixView,
        b: MatrixView,
        c: &mut [f32],
        c_stride: usize,
        accumulate: bool,
    ) {
        static SINGLE_THREADED: std::sync::Once = std::sync::Once::new();
        // SAFETY: a configuration call; callers parallelise over products themselves.
        SINGLE_THREADED.call_once(|| unsafe { openblas_set_num_threads(1) });
        let transpose = |view: MatrixView| if view.transposed { TRANS } else { NO_TRANS };
        let beta = if accumulate { 1.0 } else { 0.0 };
        // SAFETY: the caller checked that each view's extent lies inside its slice.
        unsafe {
            cblas_sgemm(
                ROW_MAJOR,
                transpose(a),
                transpose(b),
                m as c_int,
                n as c_int,
                k as c_int,
                alpha,
                a.data.as_ptr(),
                a.row_stride as c_int,
                b.data.as_ptr(),
                b.row_stride as c_int,
                beta,
                c.as_mut_ptr(),
                c_stride as c_int,
            );
        }
    }
}

/// The attention heads of a layer: `count` heads of `size` lanes each.
#[derive(Clone, Copy, Debug)]
struct Heads {
    count: usize,
    size: usize,
}

/// Buffers one thread reuses across heads, sequences and batches.
#[derive(Default)]
struct AttentionScratch {
    /// `tokens²` scores of one head (the generic path only).
    scores: Vec<f32>,
    fused: avx512::Scratch,
    #[cfg(target_arch = "x86_64")]
    amx: amx_attention::Scratch,
}

impl Heads {
    fn hidden(self) -> usize {
        self.count * self.size
    }

    /// Self-attention of one sequence: `qkv (tokens, 3 · hidden)` holds queries, keys and
    /// values side by side (heads contiguous within each); `bias (tokens)` is added to every
    /// score row. Writes the context `(tokens, hidden)` into `context`, reading q, k and v in
    /// place: no transposes, no copies. With `amx` (a bf16 layer on the AMX kernel) its
    /// products are bf16 tile products ([`amx_attention`]); otherwise the fused AVX-512
    /// kernel runs where it applies.
    fn attend(
        self,
        qkv: &[f32],
        bias: &[f32],
        context: &mut [f32],
        scratch: &mut AttentionScratch,
        amx: bool,
    ) {
        let tokens = bias.len();
        let hidden = self.hidden();
        let fused = 3 * hidden;
        let scale = 1.0 / (self.size as f32).sqrt();
        let head_at = |offset: usize| avx512::Head {
            qkv,
            tokens,
            fused,
            query: offset,
            key: hidden + offset,
            value: 2 * hidden + offset,
            head_size: self.size,
            scale,
            bias,
        };
        #[cfg(target_arch = "x86_64")]
        if amx && amx_attention::serves(self.size) {
            for offset in (0..hidden).step_by(self.size) {
                let head = head_at(offset);
                amx_attention::attend_head(&head, &mut scratch.amx, context, hidden, offset);
            }
            return;
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = amx;
        match avx512::kernel(self.size) {
            Some(kernel) => {
                for offset in (0..hidden).step_by(self.size) {
                    kernel(
                        &head_at(offset),
                        &mut scratch.fused,
                        context,
                        hidden,
                        offset,
                    );
                }
            }
            None => {
                if scratch.scores.len() < tokens * tokens {
                    scratch.scores.resize(tokens * tokens, 0.0);
                }
                for head in 0..self.count {
                    self.one_head(qkv, bias, head, scale, &mut scratch.scores, context);
                }
            }
        }
    }

    /// Scores, masked softmax and context of one head of one sequence.
    fn one_head(
        self,
        qkv: &[f32],
        bias: &[f32],
        head: usize,
        scale: f32,
        scores: &mut [f32],
        context: &mut [f32],
    ) {
        let tokens = bias.len();
        let hidden = self.hidden();
        let fused = 3 * hidden;
        let offset = head * self.size;
        let (query, key, value) = (offset, hidden + offset, 2 * hidden + offset);
        let scores_view = &mut scores[..tokens * tokens];
        // scores = scale · q kᵀ
        product(
            (tokens, tokens, self.size),
            scale,
            MatrixView::rows(&qkv[query..], fused),
            MatrixView::transposed(&qkv[key..], fused),
            scores_view,
            tokens,
            false,
        );
        for row in scores_view.chunks_exact_mut(tokens) {
            softmax_with_bias(row, bias);
        }
        // context[:, head] = probabilities · v
        product(
            (tokens, self.size, tokens),
            1.0,
            MatrixView::rows(scores_view, tokens),
            MatrixView::rows(&qkv[value..], fused),
            &mut context[offset..],
            hidden,
            false,
        );
    }
}

/// Picks the AVX-512 or AVX2+FMA build of a loop when the CPU has it.
macro_rules! dispatch {
    ($generic:ident, $avx2:ident, $avx512:ident, ($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("fma") {
                // SAFETY: the CPU supports the features the function was compiled for.
                return unsafe { $avx512($($arg),*) };
            }
            if has!("avx2") && has!("fma") {
                // SAFETY: as above.
                return unsafe { $avx2($($arg),*) };
            }
        }
        $generic($($arg),*)
    }};
}

/// The AVX2+FMA and AVX-512 builds of a generic loop, for [`dispatch!`].
macro_rules! target_builds {
    ($generic:ident => $avx2:ident, $avx512:ident ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2($($arg: $ty),*) {
            $generic($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,fma")]
        unsafe fn $avx512($($arg: $ty),*) {
            $generic($($arg),*)
        }
    };
}

pub(crate) use {dispatch, target_builds};

target_builds!(softmax_generic => softmax_avx2, softmax_avx512(row: &mut [f32], bias: &[f32]));
target_builds!(gelu_generic => gelu_avx2, gelu_avx512(values: &mut [f32]));
target_builds!(residual_layer_norm_generic => residual_layer_norm_avx2, residual_layer_norm_avx512(
    rows: &mut [f32],
    residual: &[f32],
    scale: &[f32],
    shift: &[f32],
    eps: f32
));

pub(super) fn softmax_with_bias(row: &mut [f32], bias: &[f32]) {
    dispatch!(softmax_generic, softmax_avx2, softmax_avx512, (row, bias))
}

#[inline(always)]
fn softmax_generic(row: &mut [f32], bias: &[f32]) {
    // Fixed-width chunks with eight independent accumulators: a single running max or sum
    // is a serial dependency chain the compiler may not reorder; eight lanes vectorise.
    let (body, tail) = row.as_chunks_mut::<8>();
    let (body_bias, tail_bias) = bias.as_chunks::<8>();
    let mut lanes = [f32::NEG_INFINITY; 8];
    for (scores, biases) in body.iter_mut().zip(body_bias) {
        for lane in 0..8 {
            scores[lane] += biases[lane];
            lanes[lane] = lanes[lane].max(scores[lane]);
        }
    }
    let mut max = lanes.into_iter().fold(f32::NEG_INFINITY, f32::max);
    for (score, b) in tail.iter_mut().zip(tail_bias) {
        *score += b;
        max = max.max(*score);
    }
    let mut sums = [0f32; 8];
    for scores in body.iter_mut() {
        for lane in 0..8 {
            scores[lane] = fast_exp(scores[lane] - max);
            sums[lane] += scores[lane];
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for score in tail.iter_mut() {
        *score = fast_exp(*score - max);
        sum += *score;
    }
    let inverse = 1.0 / sum;
    for score in row.iter_mut() {
        *score *= inverse;
    }
}

/// `e^x` to about 2 ulp (Cephes' `expf`): `x = n ln 2 + r` with `n` rounded by the
/// 1.5 · 2²³ trick (so `n` is read from the sum's bits), a degree-6 polynomial in `r`, and
/// `2^n` built in the exponent bits. Only arithmetic and bit operations: it vectorises.
#[inline(always)]
pub(super) fn fast_exp(x: f32) -> f32 {
    const ROUNDER: f32 = 12_582_912.0; // 1.5 · 2²³
    let x = x.clamp(-87.3, 88.3);
    let shifted = x.mul_add(std::f32::consts::LOG2_E, ROUNDER);
    let n = shifted - ROUNDER;
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 0.166_666_65);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    // The low bits of `shifted` hold n (|n| ≤ 127): 2^n has exponent field n + 127.
    let exponent = shifted
        .to_bits()
        .wrapping_sub(ROUNDER.to_bits())
        .wrapping_add(127)
        << 23;
    y * f32::from_bits(exponent)
}

/// `erf(x)` as a ratio of odd and even polynomials on [-4, 4] (the approximation Eigen and
/// XLA use for f32), error below 1e-6; ±1 beyond.
#[inline(always)]
pub(super) fn fast_erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.954_600_5e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    p *= x;
    let mut q = -1.456_607_2e-5f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329_2e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    p / q
}

fn gelu_in_place(values: &mut [f32]) {
    dispatch!(gelu_generic, gelu_avx2, gelu_avx512, (values))
}

#[inline(always)]
fn gelu_generic(values: &mut [f32]) {
    for value in values.iter_mut() {
        let x = *value;
        *value = 0.5 * x * (1.0 + fast_erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// The layer's activation, element-wise, in place: BERT's exact (erf) GELU through the
/// vectorised [`fast_erf`]; the tanh approximation and ReLU as candle computes them.
pub(super) fn activate_in_place(values: &mut [f32], activation: Activation) {
    match activation {
        Activation::Gelu => gelu_in_place(values),
        Activation::GeluNew => {
            const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
            for value in values.iter_mut() {
                let x = *value;
                *value =
                    0.5 * x * (1.0 + (SQRT_TWO_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh());
            }
        }
        Activation::Relu => {
            for value in values.iter_mut() {
                *value = value.max(0.0);
            }
        }
    }
}

/// `rows ← layer_norm(rows + residual) · γ + β`, row by row over `scale.len()` columns.
fn residual_layer_norm_rows(
    rows: &mut [f32],
    residual: &[f32],
    scale: &[f32],
    shift: &[f32],
    eps: f32,
) {
    dispatch!(
        residual_layer_norm_generic,
        residual_layer_norm_avx2,
        residual_layer_norm_avx512,
        (rows, residual, scale, shift, eps)
    )
}

#[inline(always)]
fn residual_layer_norm_generic(
    rows: &mut [f32],
    residual: &[f32],
    scale: &[f32],
    shift: &[f32],
    eps: f32,
) {
    let width = scale.len();
    for (row, residual) in rows
        .chunks_exact_mut(width)
        .zip(residual.chunks_exact(width))
    {
        residual_layer_norm_row(row, residual, scale, shift, eps);
    }
}

/// One row of [`ResidualLayerNorm`]: the variance from the centred values (two passes), as
/// candle's layer norm computes it, so there is no cancellation.
#[inline(always)]
fn residual_layer_norm_row(
    row: &mut [f32],
    residual: &[f32],
    scale: &[f32],
    shift: &[f32],
    eps: f32,
) {
    let width = row.len() as f32;
    for (x, r) in row.iter_mut().zip(residual) {
        *x += r;
    }
    let mean = lane_sum(row, |x| x) / width;
    for x in row.iter_mut() {
        *x -= mean;
    }
    let inverse_deviation = 1.0 / (lane_sum(row, |x| x * x) / width + eps).sqrt();
    for ((x, gamma), beta) in row.iter_mut().zip(scale).zip(shift) {
        *x = *x * inverse_deviation * gamma + beta;
    }
}

/// `Σ f(x)` with eight independent accumulators, so the loop vectorises.
#[inline(always)]
pub(super) fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (body, tail) = values.as_chunks::<8>();
    let mut lanes = [0f32; 8];
    for chunk in body {
        for lane in 0..8 {
            lanes[lane] += f(chunk[lane]);
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().map(|&x| f(x)).sum::<f32>()
}

/// The largest element-wise `|a − b|`, for tests that compare with candle's ops.
#[cfg(test)]
pub(super) fn max_abs_difference(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|difference| difference.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .unwrap_or(f32::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, D};

    fn values(tensor: &Tensor) -> Vec<f32> {
        tensor.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tolerance: f32) {
        let difference = max_abs_difference(a, b);
        assert!(difference <= tolerance, "max difference {difference}");
    }

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let exact = (x as f64).exp();
            let relative = ((fast_exp(x) as f64 - exact) / exact).abs();
            assert!(relative < 1e-6, "exp({x}): {relative}");
            let erf = libm_erf(x as f64);
            assert!((fast_erf(x) as f64 - erf).abs() < 1e-6, "erf({x})");
        }
        assert_eq!(fast_exp(-1e9), fast_exp(-87.3));
    }

    /// erf by its Taylor series (|x| ≤ 3) or continued fraction, in f64, as the reference.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 4.0 {
            return x.signum();
        }
        let mut sum = 0.0f64;
        let mut term = x;
        let mut n = 0.0f64;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 5.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn dense_matches_candle() {
        let device = Device::Cpu;
        let xs = Tensor::randn(0f32, 1.0, (3, 5, 16), &device).unwrap();
        let weight = Tensor::randn(0f32, 1.0, (24, 16), &device).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 24, &device).unwrap();
        let expected = xs
            .broadcast_matmul(&weight.t().unwrap())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        let mut out = vec![f32::NAN; 3 * 5 * 24];
        dense_block(
            (15, 24, 16),
            &values(&xs),
            &values(&weight),
            &values(&bias),
            &mut out,
        );
        let out = Tensor::from_vec(out, (3, 5, 24), &device).unwrap();
        close(&out, &expected, 1e-4);
    }

    /// Attention against candle's ops, padding the last `i` tokens of sequence `i`.
    fn check_attention(batch: usize, tokens: usize, heads: usize, head_size: usize) {
        let device = Device::Cpu;
        let hidden = heads * head_size;
        let qkv = Tensor::randn(0f32, 1.0, (batch, tokens, 3 * hidden), &device).unwrap();
        let mask: Vec<f32> = (0..batch * tokens)
            .map(|i| {
                if i % tokens + i / tokens >= tokens {
                    f32::MIN
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (batch, tokens), &device).unwrap();
        let split = |part: usize| {
            qkv.narrow(2, part * hidden, hidden)
                .unwrap()
                .reshape((batch, tokens, heads, head_size))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (head_size as f64).sqrt()))
            .unwrap()
            .broadcast_add(&mask.reshape((batch, 1, 1, tokens)).unwrap())
            .unwrap();
        let probabilities = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        let expected = probabilities
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((batch, tokens, hidden))
            .unwrap();
        let heads = Heads {
            count: heads,
            size: head_size,
        };
        let (qkv, mask) = (values(&qkv), values(&mask));
        let mut context = vec![f32::NAN; batch * tokens * hidden];
        let mut scratch = AttentionScratch::default();
        for sequence in 0..batch {
            heads.attend(
                &qkv[sequence * tokens * 3 * hidden..][..tokens * 3 * hidden],
                &mask[sequence * tokens..][..tokens],
                &mut context[sequence * tokens * hidden..][..tokens * hidden],
                &mut scratch,
                false,
            );
        }
        let context = Tensor::from_vec(context, (batch, tokens, hidden), &device).unwrap();
        close(&context, &expected, 1e-5);
    }

    #[test]
    fn attention_matches_candle() {
        check_attention(3, 19, 2, 4);
    }

    /// The head sizes of the fused AVX-512 kernel (run where the CPU has it), with token
    /// counts below, at and across its 8-row blocks and 32-key tiles.
    #[test]
    fn fused_attention_matches_candle() {
        for head_size in [16, 32, 48, 64] {
            for tokens in [1, 5, 8, 32, 37, 70] {
                check_attention(3, tokens, 2, head_size);
            }
        }
    }

    #[test]
    fn activations_match_candle() {
        let xs = Tensor::randn(0f32, 3.0, (4, 1000), &Device::Cpu).unwrap();
        for (activation, expected) in [
            (Activation::Gelu, xs.gelu_erf().unwrap()),
            (Activation::GeluNew, xs.gelu().unwrap()),
            (Activation::Relu, xs.relu().unwrap()),
        ] {
            let mut activated = values(&xs);
            activate_in_place(&mut activated, activation);
            let activated = Tensor::from_vec(activated, (4, 1000), &Device::Cpu).unwrap();
            close(&activated, &expected, 1e-6);
        }
    }

    #[test]
    fn residual_layer_norm_matches_candle() {
        let device = Device::Cpu;
        let xs = Tensor::randn(0f32, 2.0, (3, 5, 24), &device).unwrap();
        let residual = Tensor::randn(1f32, 1.0, (3, 5, 24), &device).unwrap();
        let scale = Tensor::randn(1f32, 0.2, 24, &device).unwrap();
        let shift = Tensor::randn(0f32, 0.2, 24, &device).unwrap();
        let expected =
            candle_nn::ops::layer_norm_slow(&(&xs + &residual).unwrap(), &scale, &shift, 1e-12)
                .unwrap();
        let mut rows = values(&xs);
        residual_layer_norm_rows(
            &mut rows,
            &values(&residual),
            &values(&scale),
            &values(&shift),
            1e-12,
        );
        let rows = Tensor::from_vec(rows, (3, 5, 24), &device).unwrap();
        close(&rows, &expected, 1e-5);
    }
}
