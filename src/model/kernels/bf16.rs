//! bf16 dense products for the encoder's inference kernels (`encode.precision = "bf16"`).
//!
//! A layer's weights are rounded to bf16 and packed once, when the model is switched to bf16
//! ([`PackedMatrix`]); each block's activations are rounded to bf16 at the product's input;
//! products accumulate in f32 and the bias is added in f32. Attention, GELU, layer norm and
//! pooling stay f32 (the caller's).
//!
//! Two kernels read the same packing: Intel AMX tiles (`TDPBF16PS`: a 16×32 by 32×16 product
//! per instruction, Sapphire Rapids and later) and AVX512-BF16 dot products (`VDPBF16PS`:
//! 16 pairs per instruction, e.g. AMD Zen 4). Which one runs is decided when the weights are
//! packed ([`Bf16Kernel::detect`]); a CPU with neither gets an error, never a silent f32
//! fallback.
//!
//! This module owns the bf16 format, the packing and the kernels; it does not decide when
//! bf16 is used (the model's precision does).

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Rows and columns each step of both kernels covers: two AMX tiles of 16 each way.
const BLOCK: usize = 32;
/// The k extent of one AMX tile: 16 pairs of bf16.
const K_TILE: usize = 32;
/// Columns per packed panel: one 64-byte row of 16 bf16 pairs.
const PANEL: usize = 16;

/// The precision of the encoder's dense products.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 products (the default, and the only precision of training).
    #[default]
    F32,
    /// bf16 inputs, f32 accumulation ([`Bf16Kernel`]).
    Bf16,
}

impl Precision {
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision `{other}` (f32 or bf16)")),
        }
    }
}

/// The hardware that runs bf16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// Intel AMX-BF16 tiles.
    Amx,
    /// AVX512-BF16 dot products.
    Avx512,
}

/// What the CPU and the operating system offer for bf16, as [`Bf16Kernel::choose`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bf16Support {
    pub avx512_bf16: bool,
    /// AMX-TILE and AMX-BF16 on the CPU, and the kernel's permission to use the tile data.
    pub amx_bf16: bool,
}

/// Environment variable that forces one kernel (`amx` or `avx512`), for benchmarks and tests.
pub const KERNEL_VARIABLE: &str = "REPRO_BF16_KERNEL";

impl Bf16Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512 => "avx512",
        }
    }

    /// The kernel for this process: [`KERNEL_VARIABLE`]'s when set, else AMX where available,
    /// else AVX512-BF16. Detected once.
    pub fn detect() -> Result<Self, String> {
        static DETECTED: OnceLock<Result<Bf16Kernel, String>> = OnceLock::new();
        DETECTED
            .get_or_init(|| {
                let forced = std::env::var(KERNEL_VARIABLE).ok();
                Self::choose(Bf16Support::detect(), forced.as_deref())
            })
            .clone()
    }

    /// The kernel `support` allows, `forced` (a kernel's name) when given.
    pub fn choose(support: Bf16Support, forced: Option<&str>) -> Result<Self, String> {
        let available = |kernel: Bf16Kernel| match kernel {
            Bf16Kernel::Amx => support.amx_bf16,
            Bf16Kernel::Avx512 => support.avx512_bf16,
        };
        match forced.filter(|name| !name.is_empty()) {
            Some(name) => {
                let kernel = [Bf16Kernel::Amx, Bf16Kernel::Avx512]
                    .into_iter()
                    .find(|kernel| kernel.name() == name)
                    .ok_or_else(|| {
                        format!("{KERNEL_VARIABLE}=`{name}` names no bf16 kernel (amx, avx512)")
                    })?;
                if available(kernel) {
                    Ok(kernel)
                } else {
                    Err(format!(
                        "{KERNEL_VARIABLE}={name}, but this CPU or kernel does not offer it"
                    ))
                }
            }
            None if support.amx_bf16 => Ok(Bf16Kernel::Amx),
            None if support.avx512_bf16 => Ok(Bf16Kernel::Avx512),
            None => Err(
                "bf16 needs a CPU with AMX-BF16 or AVX512-BF16 (e.g. Intel Sapphire \
                 Rapids, AMD Zen 4); this one has neither: use precision = \"f32\""
                    .to_string(),
            ),
        }
    }
}

impl Bf16Support {
    /// This machine's support. AMX also needs Linux's permission to use the tile data
    /// (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), asked for here, once per process.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512_bf16 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16");
            Bf16Support {
                avx512_bf16,
                amx_bf16: avx512_bf16 && amx::cpu_has_it() && amx::request_permission(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Bf16Support::default()
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as the upper half of its bits. NaN stays
/// a (quiet) NaN.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 value of a bf16.
#[cfg(test)]
pub fn from_bf16(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// A weight `(n, k)` as PyTorch stores a linear layer's (`out, in`), rounded to bf16 and laid
/// out for both kernels: panels of 16 output columns, each `k_pad / 2` rows of 16 (even,
/// odd) pairs along k, zero-padded to whole tiles (`n_pad` a multiple of 32, `k_pad` of 32).
#[derive(Clone, PartialEq)]
pub struct PackedMatrix {
    n: usize,
    k: usize,
    n_pad: usize,
    k_pad: usize,
    data: Vec<u16>,
}

impl fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackedMatrix({}×{} bf16)", self.n, self.k)
    }
}

impl PackedMatrix {
    pub fn pack(weight: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(weight.len(), n * k, "a {n}×{k} weight");
        let (n_pad, k_pad) = (n.next_multiple_of(BLOCK), k.next_multiple_of(K_TILE));
        let pairs = k_pad / 2;
        let mut data = vec![0u16; n_pad * k_pad];
        for (column, row) in weight.chunks_exact(k.max(1)).enumerate().take(n) {
            let (panel, lane) = (column / PANEL, column % PANEL);
            let panel_start = panel * pairs * 2 * PANEL;
            for (index, &value) in row.iter().enumerate() {
                let (pair, half) = (index / 2, index % 2);
                data[panel_start + (pair * PANEL + lane) * 2 + half] = to_bf16(value);
            }
        }
        Self {
            n,
            k,
            n_pad,
            k_pad,
            data,
        }
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn columns(&self) -> usize {
        self.k
    }

    /// The first of a panel's packed values.
    fn panel(&self, panel: usize) -> &[u16] {
        &self.data[panel * self.k_pad * PANEL..]
    }

    /// Element `(row, column)` of the weight as packed (test helper).
    #[cfg(test)]
    fn get(&self, row: usize, column: usize) -> f32 {
        let start = (row / PANEL) * self.k_pad * PANEL;
        from_bf16(self.data[start + ((column / 2) * PANEL + row % PANEL) * 2 + column % 2])
    }
}

/// One thread's buffers for [`dense_block_bf16`], grown as needed and reused.
#[derive(Default)]
pub struct Scratch {
    inputs: Vec<u16>,
    bias: Vec<f32>,
    outputs: Vec<f32>,
}

/// `out = x Wᵀ + bias` for one block of `m` rows, `x (m×k)` row-major, `out (m×n)`, with
/// bf16 products: `x` is rounded to bf16, products accumulate in f32. Single-threaded, like
/// [`super::dense_block`].
pub fn dense_block_bf16(
    kernel: Bf16Kernel,
    m: usize,
    x: &[f32],
    weight: &PackedMatrix,
    bias: &[f32],
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    let PackedMatrix {
        n, k, n_pad, k_pad, ..
    } = *weight;
    assert!(
        x.len() >= m * k && out.len() >= m * n && bias.len() == n,
        "bf16 product of {m}×{k} by {k}×{n}: a slice is too short"
    );
    let m_pad = m.next_multiple_of(BLOCK);
    let inputs = grown(&mut scratch.inputs, m_pad * k_pad);
    round_rows(x, m, k, k_pad, inputs);
    let padded_bias = grown(&mut scratch.bias, n_pad);
    padded_bias[..n].copy_from_slice(bias);
    padded_bias[n..].fill(0.0);
    let operands = Operands {
        inputs,
        k_pad,
        weight,
        bias: padded_bias,
    };
    // Whole 32-row blocks go straight into `out` when its rows are whole panels; the rest
    // (a last partial block, or every block of an unpadded width) through a padded buffer.
    let direct = if n == n_pad { m / BLOCK * BLOCK } else { 0 };
    if direct > 0 {
        multiply(kernel, &operands, 0..direct, &mut out[..direct * n], n);
    }
    if direct < m {
        let outputs = grown(&mut scratch.outputs, (m_pad - direct) * n_pad);
        multiply(kernel, &operands, direct..m_pad, outputs, n_pad);
        for (row, padded) in out[direct * n..m * n]
            .chunks_exact_mut(n.max(1))
            .zip(outputs.chunks_exact(n_pad))
        {
            row.copy_from_slice(&padded[..n]);
        }
    }
}

/// Rows `rows` (whole 32-row blocks) of the product into `out`, row `rows.start` first, rows
/// `out_stride` apart (at least `n_pad` wide).
fn multiply(
    kernel: Bf16Kernel,
    operands: &Operands,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
    out_stride: usize,
) {
    let n_pad = operands.weight.n_pad;
    assert!(
        rows.start.is_multiple_of(BLOCK)
            && rows.len().is_multiple_of(BLOCK)
            && rows.end * operands.k_pad <= operands.inputs.len()
            && out_stride >= n_pad
            && (rows.is_empty() || out.len() >= (rows.len() - 1) * out_stride + n_pad),
        "bf16 product rows {rows:?}: a buffer is too short"
    );
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Amx => amx::product(operands, rows, out, out_stride),
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Avx512 => avx512::product(operands, rows, out, out_stride),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no bf16 kernel is detected off x86_64"),
    }
}

/// The padded bf16 inputs, the packed weight and the padded bias of one product.
struct Operands<'a> {
    inputs: &'a [u16],
    k_pad: usize,
    weight: &'a PackedMatrix,
    /// `n_pad` values.
    bias: &'a [f32],
}

fn grown<T: Copy + Default>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::default());
    }
    &mut buffer[..len]
}

/// `x`'s `m` rows of `k` rounded to bf16 into rows of `k_pad`, the padding (and the rows
/// beyond `m`) zero.
fn round_rows(x: &[f32], m: usize, k: usize, k_pad: usize, inputs: &mut [u16]) {
    assert!(x.len() >= m * k && inputs.len().is_multiple_of(k_pad) && k_pad.is_multiple_of(K_TILE));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        // SAFETY: the CPU has AVX512-BF16, checked just above; sizes checked above.
        return unsafe { round_rows_avx512(x, m, k, k_pad, inputs) };
    }
    round_rows_generic(x, m, k, k_pad, inputs)
}

fn round_rows_generic(x: &[f32], m: usize, k: usize, k_pad: usize, inputs: &mut [u16]) {
    for (index, row) in inputs.chunks_exact_mut(k_pad).enumerate() {
        if index < m {
            for (rounded, &value) in row.iter_mut().zip(&x[index * k..(index + 1) * k]) {
                *rounded = to_bf16(value);
            }
            row[k..].fill(0);
        } else {
            row.fill(0);
        }
    }
}

/// [`round_rows_generic`] with `VCVTNE2PS2BF16` (round to nearest even, as [`to_bf16`]),
/// 32 values an instruction, the row's tail loaded under a mask (zeros beyond `k`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_rows_avx512(x: &[f32], m: usize, k: usize, k_pad: usize, inputs: &mut [u16]) {
    use std::arch::x86_64::*;
    for (index, row) in inputs.chunks_exact_mut(k_pad).enumerate() {
        if index >= m {
            row.fill(0);
            continue;
        }
        let source = x.as_ptr().add(index * k);
        for start in (0..k_pad).step_by(32) {
            let load = |offset: usize| {
                let first = start + offset;
                let count = k.saturating_sub(first).min(16);
                let mask: __mmask16 = ((1u32 << count) - 1) as __mmask16;
                _mm512_maskz_loadu_ps(mask, source.add(first.min(k)))
            };
            let (low, high) = (load(0), load(16));
            let rounded = _mm512_cvtne2ps_pbh(high, low);
            _mm512_storeu_si512(
                row.as_mut_ptr().add(start).cast::<__m512i>(),
                std::mem::transmute::<__m512bh, __m512i>(rounded),
            );
        }
    }
}

/// Runs `body` with the tile registers configured for [`amx_tile_pair`] (and the AMX product),
/// releasing them after.
#[cfg(target_arch = "x86_64")]
pub(super) fn with_tiles<R>(body: impl FnOnce() -> R) -> R {
    amx::configure();
    let result = body();
    amx::release();
    result
}

/// Two 16 × 16 f32 tiles side by side at `out` and `out + 64` bytes (rows `out_stride`
/// bytes apart) become the sums over `steps` of one 16-row bf16 tile at `a + 64 · step` bytes
/// (rows `a_stride` bytes apart) times the 16-pair tiles of 1,024 bytes at `b + 1,024 · step`
/// and at `next_b + 1,024 · step`. Two independent sums keep two products in flight.
///
/// # Safety
/// Inside [`with_tiles`] on a CPU whose AMX use Linux allowed; every extent named above lies
/// inside its buffer; `steps ≥ 1`.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn amx_tile_pair(
    a: *const u16,
    a_stride: usize,
    (b, next_b): (*const u16, *const u16),
    steps: usize,
    out: *mut f32,
    out_stride: usize,
) {
    std::arch::asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "2:",
        "tileloadd tmm4, [{a} + {astride}*1]",
        "tileloadd tmm6, [{b} + {bs}*1]",
        "tileloadd tmm7, [{b2} + {bs}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "add {a}, 64",
        "add {b}, 1024",
        "add {b2}, 1024",
        "dec {k}",
        "jnz 2b",
        "tilestored [{c} + {cs}*1], tmm0",
        "tilestored [{c} + {cs}*1 + 64], tmm1",
        a = inout(reg) a => _,
        astride = in(reg) a_stride,
        b = inout(reg) b => _,
        b2 = inout(reg) next_b => _,
        bs = in(reg) 64usize,
        k = inout(reg) steps => _,
        c = in(reg) out,
        cs = in(reg) out_stride,
        options(nostack),
    );
}

#[cfg(target_arch = "x86_64")]
mod amx {
    //! The AMX kernel: eight tile registers hold a 32×32 block of the output (four 16×16 f32
    //! tiles), two 16×32 tiles of the inputs and two 16-pair tiles of the weight panels.

    use std::arch::asm;
    use std::ops::Range;

    use super::{Operands, BLOCK, PANEL};

    /// Linux's `arch_prctl` request for an extended-state component, and AMX tile data's.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;

    pub(super) fn cpu_has_it() -> bool {
        // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
        // CPUID leaf 7 exists on every x86_64 CPU with AVX-512, checked by the caller.
        let leaf = std::arch::x86_64::__cpuid_count(7, 0);
        leaf.edx & (1 << 22) != 0 && leaf.edx & (1 << 24) != 0
    }

    pub(super) fn request_permission() -> bool {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: a syscall with integer arguments; failure is a return value.
            let status = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            status == 0
        }
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Palette 1, tiles 0–7 each 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    const fn tile_config() -> TileConfig {
        let mut bytes = [0u8; 64];
        bytes[0] = 1;
        let mut tile = 0;
        while tile < 8 {
            bytes[16 + 2 * tile] = 64;
            bytes[48 + tile] = 16;
            tile += 1;
        }
        TileConfig(bytes)
    }

    static CONFIG: TileConfig = tile_config();

    pub(super) fn configure() {
        // SAFETY: loads a valid palette-1 configuration; only called on CPUs whose AMX use
        // Linux allowed (the AMX kernel was chosen).
        unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack)) };
    }

    pub(super) fn release() {
        // SAFETY: returns the tiles to their initial state.
        unsafe { asm!("tilerelease", options(nostack)) };
    }

    pub(super) fn product(
        operands: &Operands,
        rows: Range<usize>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let Operands {
            inputs,
            k_pad,
            weight,
            bias,
        } = *operands;
        let pairs = k_pad / 2;
        let k_tiles = k_pad / super::K_TILE;
        // SAFETY: the caller chose this kernel because the CPU has AMX and Linux allowed it,
        // and checked the buffers' sizes (`multiply`): every tile load and store below stays
        // inside `inputs`, the weight's panels, `bias` and `out`.
        configure();
        unsafe {
            for row in rows.clone().step_by(BLOCK) {
                let out_row = out.as_mut_ptr().add((row - rows.start) * out_stride);
                for column in (0..weight.n_pad).step_by(BLOCK) {
                    let panel = weight.panel(column / PANEL).as_ptr();
                    tile_block(
                        inputs.as_ptr().add(row * k_pad),
                        k_pad * 2,
                        panel,
                        panel.add(pairs * 2 * PANEL),
                        k_tiles,
                        bias.as_ptr().add(column),
                        out_row.add(column),
                        out_stride * 4,
                    );
                }
            }
        }
        release();
    }

    /// One 32×32 output block: its four tiles start as the bias (a row loaded with stride
    /// 0 is every row), add every k tile's products, and are stored.
    ///
    /// # Safety
    /// Tiles configured by [`CONFIG`]; 32 rows of `k_tiles · 32` bf16 at `inputs` (row stride
    /// `input_stride` bytes), `k_tiles · 16` pair rows of 64 bytes at each panel, 32 f32 at
    /// `bias`, 32 rows of 32 f32 at `outputs` (row stride `output_stride` bytes).
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_block(
        inputs: *const u16,
        input_stride: usize,
        panel: *const u16,
        next_panel: *const u16,
        k_tiles: usize,
        bias: *const f32,
        outputs: *mut f32,
        output_stride: usize,
    ) {
        let lower_inputs = inputs.add(16 * input_stride / 2);
        let lower_outputs = outputs.add(16 * output_stride / 4);
        asm!(
            "tileloadd tmm0, [{bias} + {zero}*1]",
            "tileloadd tmm1, [{bias} + {zero}*1 + 64]",
            "tileloadd tmm2, [{bias} + {zero}*1]",
            "tileloadd tmm3, [{bias} + {zero}*1 + 64]",
            "2:",
            "tileloadd tmm4, [{a} + {astride}*1]",
            "tileloadd tmm5, [{a2} + {astride}*1]",
            "tileloadd tmm6, [{b} + {bs}*1]",
            "tileloadd tmm7, [{b2} + {bs}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a}, 64",
            "add {a2}, 64",
            "add {b}, 1024",
            "add {b2}, 1024",
            "dec {k}",
            "jnz 2b",
            "tilestored [{c} + {cs}*1], tmm0",
            "tilestored [{c} + {cs}*1 + 64], tmm1",
            "tilestored [{c2} + {cs}*1], tmm2",
            "tilestored [{c2} + {cs}*1 + 64], tmm3",
            bias = in(reg) bias,
            zero = in(reg) 0usize,
            c = in(reg) outputs,
            c2 = in(reg) lower_outputs,
            cs = in(reg) output_stride,
            a = inout(reg) inputs => _,
            a2 = inout(reg) lower_inputs => _,
            astride = in(reg) input_stride,
            b = inout(reg) panel => _,
            b2 = inout(reg) next_panel => _,
            bs = in(reg) 64usize,
            k = inout(reg) k_tiles => _,
            options(nostack),
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The AVX512-BF16 kernel: 8 rows × 32 columns of the output in 16 registers; each step
    //! broadcasts a row's (even, odd) input pair against a 16-column row of pairs of two
    //! panels.

    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{Operands, BLOCK, PANEL};

    const ROWS: usize = 8;

    pub(super) fn product(
        operands: &Operands,
        rows: Range<usize>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        // SAFETY: the caller chose this kernel because the CPU has AVX512-BF16, and checked
        // the buffers' sizes (`multiply`).
        unsafe { product_avx512(operands, rows, out, out_stride) }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn product_avx512(
        operands: &Operands,
        rows: Range<usize>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let Operands {
            inputs,
            k_pad,
            weight,
            bias,
        } = *operands;
        let pairs = k_pad / 2;
        for column in (0..weight.n_pad).step_by(BLOCK) {
            let panel = weight.panel(column / PANEL).as_ptr();
            let next_panel = panel.add(pairs * 2 * PANEL);
            for row in rows.clone().step_by(ROWS) {
                rows_block(
                    inputs.as_ptr().add(row * k_pad),
                    k_pad,
                    panel,
                    next_panel,
                    pairs,
                    bias.as_ptr().add(column),
                    out.as_mut_ptr()
                        .add((row - rows.start) * out_stride + column),
                    out_stride,
                );
            }
        }
    }

    /// `ROWS` rows × 32 columns of the output, accumulated over every pair of k.
    ///
    /// # Safety
    /// AVX512-BF16; `ROWS` rows of `pairs · 2` bf16 at `inputs` (stride `input_stride`
    /// values), `pairs` rows of 32 values at each panel, 32 f32 at `bias`, `ROWS` rows of 32
    /// f32 at `outputs` (stride `output_stride`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn rows_block(
        inputs: *const u16,
        input_stride: usize,
        panel: *const u16,
        next_panel: *const u16,
        pairs: usize,
        bias: *const f32,
        outputs: *mut f32,
        output_stride: usize,
    ) {
        let start = [_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16))];
        let mut sums = [start; ROWS];
        for pair in 0..pairs {
            let left: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                panel.add(pair * 2 * PANEL).cast::<__m512i>(),
            ));
            let right: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                next_panel.add(pair * 2 * PANEL).cast::<__m512i>(),
            ));
            for (row, sum) in sums.iter_mut().enumerate() {
                let both = inputs
                    .add(row * input_stride + 2 * pair)
                    .cast::<i32>()
                    .read_unaligned();
                let broadcast: __m512bh = std::mem::transmute(_mm512_set1_epi32(both));
                sum[0] = _mm512_dpbf16_ps(sum[0], broadcast, left);
                sum[1] = _mm512_dpbf16_ps(sum[1], broadcast, right);
            }
        }
        for (row, sum) in sums.iter().enumerate() {
            let out = outputs.add(row * output_stride);
            _mm512_storeu_ps(out, sum[0]);
            _mm512_storeu_ps(out.add(16), sum[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa (1).
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        // 1 + 3·2⁻⁸ lies halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: up, to the even one.
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert_eq!(from_bf16(to_bf16(1.0 + 1.5 / 256.0)), 1.0 + 2.0 / 256.0);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
        for x in [0.1f32, -3.7, 1e-20, 65504.0] {
            assert!((from_bf16(to_bf16(x)) - x).abs() <= x.abs() / 256.0, "{x}");
        }
    }

    #[test]
    fn rows_are_rounded_and_padded_alike_by_every_path() {
        let (m, k, k_pad) = (3, 45, 64);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let mut generic = vec![7u16; 4 * k_pad];
        round_rows_generic(&x, m, k, k_pad, &mut generic);
        let mut dispatched = vec![7u16; 4 * k_pad];
        round_rows(&x, m, k, k_pad, &mut dispatched);
        assert_eq!(generic, dispatched);
        assert_eq!(generic[k - 1], to_bf16(x[k - 1]));
        assert!(generic[k..k_pad].iter().all(|&v| v == 0));
        assert!(generic[3 * k_pad..].iter().all(|&v| v == 0));
    }

    #[test]
    fn packing_keeps_every_weight_and_pads_with_zeros() {
        let (n, k) = (40, 37);
        let weight: Vec<f32> = (0..n * k).map(|i| i as f32 * 0.5 - 300.0).collect();
        let packed = PackedMatrix::pack(&weight, n, k);
        assert_eq!((packed.n_pad, packed.k_pad), (64, 64));
        for row in 0..64 {
            for column in 0..64 {
                let expected = if row < n && column < k {
                    from_bf16(to_bf16(weight[row * k + column]))
                } else {
                    0.0
                };
                assert_eq!(packed.get(row, column), expected, "({row}, {column})");
            }
        }
    }

    #[test]
    fn the_kernel_choice_follows_the_cpu_and_the_override() {
        let none = Bf16Support::default();
        let both = Bf16Support {
            avx512_bf16: true,
            amx_bf16: true,
        };
        let avx512 = Bf16Support {
            avx512_bf16: true,
            amx_bf16: false,
        };
        assert!(Bf16Kernel::choose(none, None)
            .unwrap_err()
            .contains("AMX-BF16 or AVX512-BF16"));
        assert_eq!(Bf16Kernel::choose(both, None), Ok(Bf16Kernel::Amx));
        assert_eq!(Bf16Kernel::choose(avx512, None), Ok(Bf16Kernel::Avx512));
        assert_eq!(
            Bf16Kernel::choose(both, Some("avx512")),
            Ok(Bf16Kernel::Avx512)
        );
        assert!(Bf16Kernel::choose(avx512, Some("amx"))
            .unwrap_err()
            .contains("does not offer"));
        assert!(Bf16Kernel::choose(both, Some("tpu"))
            .unwrap_err()
            .contains("names no bf16 kernel"));
        assert_eq!("bf16".parse(), Ok(Precision::Bf16));
        assert!("fp8".parse::<Precision>().is_err());
    }

    /// `x Wᵀ + bias` from the bf16-rounded operands, summed in f64.
    fn reference(m: usize, n: usize, k: usize, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
        let round = |v: f32| f64::from(from_bf16(to_bf16(v)));
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|t| round(x[i * k + t]) * round(w[j * k + t]))
                    .sum();
                out[i * n + j] = (dot + f64::from(bias[j])) as f32;
            }
        }
        out
    }

    /// Every kernel this CPU has against [`reference`], on sizes that need padding each way.
    #[test]
    fn every_available_kernel_equals_the_rounded_product() {
        let support = Bf16Support::detect();
        let kernels: Vec<Bf16Kernel> = [Bf16Kernel::Amx, Bf16Kernel::Avx512]
            .into_iter()
            .filter(|&kernel| Bf16Kernel::choose(support, Some(kernel.name())).is_ok())
            .collect();
        eprintln!("bf16 kernels on this CPU: {kernels:?}");
        let mut generator = crate::rng::SplitMix64::new(5);
        let mut values = |count: usize| -> Vec<f32> {
            (0..count)
                .map(|_| generator.uniform() as f32 * 2.0 - 1.0)
                .collect()
        };
        for (m, n, k) in [(37, 40, 50), (64, 64, 64), (1, 16, 3), (70, 96, 384)] {
            let (x, w, bias) = (values(m * k), values(n * k), values(n));
            let expected = reference(m, n, k, &x, &w, &bias);
            let packed = PackedMatrix::pack(&w, n, k);
            for &kernel in &kernels {
                let mut out = vec![f32::NAN; m * n];
                let mut scratch = Scratch::default();
                dense_block_bf16(kernel, m, &x, &packed, &bias, &mut out, &mut scratch);
                for (index, (got, want)) in out.iter().zip(&expected).enumerate() {
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()) * (k as f32).sqrt(),
                        "{kernel:?} {m}×{n}×{k} at {index}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
