//! One BERT encoder layer as a single op, computed a block of whole sequences at a time.
//!
//! Run op by op over a batch, a layer writes every intermediate (the fused q/k/v projection,
//! the 4 × hidden feed-forward activations) for the whole batch before the next step reads
//! it back: at 32 sequences of 256 tokens that is 38 and 50 MB per step, far beyond a core's
//! L2, each freshly allocated (and page-faulted). Here each rayon task takes a block of up to
//! [`BLOCK_ROWS`] token rows (whole sequences, which attention needs) through the whole layer
//! with its thread's reusable scratch buffers, so the intermediates stay in cache and blocks
//! balance across uneven cores. The mathematics is the op-by-op layer's, step for step.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, Error, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::bf16::{self, dense_block_bf16, Bf16Kernel, PackedMatrix};
use super::{
    activate_in_place, contiguous, dense_block, residual_layer_norm_rows, AttentionScratch, Heads,
};
use crate::model::config::Activation;

/// Token rows per block (at most; a single sequence longer than this is a block of its
/// own). Each block's products pack the layer's weights afresh (OpenBLAS has no pre-packed
/// interface), 10% of the time at 256 rows; larger blocks leave the core's L2. Measured on
/// 256 SciFact documents (3 alternating rounds, documents/s): 256 rows 29.2 / 32.8 / 33.8,
/// 512 rows 31.4 / 33.6 / 37.3, 1,024 rows 30.6 / 33.6 / 30.9.
const BLOCK_ROWS: usize = 512;

/// A linear layer's parameters: `weight (out, in)` as PyTorch stores it, `bias (out)`.
pub struct DenseWeights {
    pub weight: Tensor,
    pub bias: Tensor,
}

/// A layer norm's γ and β stacked `(2, hidden)`, and its ε.
pub struct NormWeights {
    pub scale_shift: Tensor,
    pub eps: f32,
}

/// The parameters of one encoder layer, as [`encoder_layer`] reads them (f32, CPU,
/// contiguous). Weights and biases are the layer's own tensors, shared; only the stacked
/// q/k/v projection and the stacked layer-norm parameters are copies.
pub struct LayerWeights {
    pub heads: usize,
    pub head_size: usize,
    /// Query, key and value projections stacked `(3 · hidden, hidden)`.
    pub qkv: DenseWeights,
    pub attention_output: DenseWeights,
    pub attention_norm: NormWeights,
    pub intermediate: DenseWeights,
    pub activation: Activation,
    pub output: DenseWeights,
    pub output_norm: NormWeights,
    /// The four dense weights packed for bf16 products; `None`: f32 products.
    pub bf16: Option<Bf16Weights>,
}

/// A layer's dense weights rounded to bf16 and packed ([`PackedMatrix`]), and the kernel
/// that multiplies by them.
pub struct Bf16Weights {
    pub kernel: Bf16Kernel,
    pub qkv: PackedMatrix,
    pub attention_output: PackedMatrix,
    pub intermediate: PackedMatrix,
    pub output: PackedMatrix,
}

impl Bf16Weights {
    /// Packs `layer`'s dense weights for `kernel`.
    pub fn pack(layer: &LayerWeights, kernel: Bf16Kernel) -> Result<Self> {
        let pack = |dense: &DenseWeights| -> Result<PackedMatrix> {
            let (n, k) = dense.weight.dims2()?;
            let values = dense.weight.flatten_all()?.to_vec1::<f32>()?;
            Ok(PackedMatrix::pack(&values, n, k))
        };
        Ok(Self {
            kernel,
            qkv: pack(&layer.qkv)?,
            attention_output: pack(&layer.attention_output)?,
            intermediate: pack(&layer.intermediate)?,
            output: pack(&layer.output)?,
        })
    }
}

/// `hidden (batch, tokens, hidden)` through one encoder layer; `mask_bias (batch, tokens)` is
/// 0 for real tokens and a large negative number for padding.
pub fn encoder_layer(
    hidden: &Tensor,
    mask_bias: &Tensor,
    weights: &LayerWeights,
) -> Result<Tensor> {
    hidden
        .contiguous()?
        .apply_op2_no_bwd(&mask_bias.contiguous()?, &EncoderLayer(weights))
}

struct EncoderLayer<'a>(&'a LayerWeights);

/// One thread's buffers, grown to the largest block seen and reused across layers and
/// batches.
#[derive(Default)]
struct Scratch {
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    intermediate: Vec<f32>,
    attention: AttentionScratch,
    bf16: bf16::Scratch,
}

thread_local! {
    // Borrowed for a whole block, so a block must not call into rayon: a task stolen while
    // it waited would run on this thread and find the scratch taken.
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// The first `len` elements of `buffer`, growing it if needed.
fn prefix(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// The layer's parameters as slices, their shapes checked against `hidden`.
struct Parameters<'a> {
    heads: Heads,
    qkv: (&'a [f32], &'a [f32]),
    attention_output: (&'a [f32], &'a [f32]),
    attention_norm: (&'a [f32], f32),
    intermediate: (&'a [f32], &'a [f32]),
    activation: Activation,
    output: (&'a [f32], &'a [f32]),
    output_norm: (&'a [f32], f32),
    bf16: Option<&'a Bf16Weights>,
}

/// Which of a layer's dense products [`Parameters::dense`] computes.
#[derive(Clone, Copy)]
enum Dense {
    Qkv,
    AttentionOutput,
    Intermediate,
    Output,
}

impl Parameters<'_> {
    fn intermediate_size(&self) -> usize {
        self.intermediate.1.len()
    }

    /// One block of whole sequences (`tokens` rows each) through the layer, into `out`.
    fn block(
        &self,
        hidden: &[f32],
        mask_bias: &[f32],
        tokens: usize,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) {
        let width = self.heads.hidden();
        let rows = mask_bias.len();
        let inner = self.intermediate_size();
        let qkv = prefix(&mut scratch.qkv, rows * 3 * width);
        self.dense(Dense::Qkv, rows, hidden, qkv, &mut scratch.bf16);
        let context = prefix(&mut scratch.context, rows * width);
        for ((qkv, bias), context) in qkv
            .chunks_exact(tokens * 3 * width)
            .zip(mask_bias.chunks_exact(tokens))
            .zip(context.chunks_exact_mut(tokens * width))
        {
            let amx = self
                .bf16
                .is_some_and(|packed| packed.kernel == Bf16Kernel::Amx);
            self.heads
                .attend(qkv, bias, context, &mut scratch.attention, amx);
        }
        let attended = prefix(&mut scratch.attended, rows * width);
        let bf16 = &mut scratch.bf16;
        self.dense(Dense::AttentionOutput, rows, context, attended, bf16);
        layer_norm(attended, hidden, self.attention_norm);
        let intermediate = prefix(&mut scratch.intermediate, rows * inner);
        self.dense(Dense::Intermediate, rows, attended, intermediate, bf16);
        activate_in_place(intermediate, self.activation);
        self.dense(Dense::Output, rows, intermediate, out, bf16);
        layer_norm(out, attended, self.output_norm);
    }

    /// `out = x Wᵀ + b` for `rows` rows of one of the layer's dense products, in bf16 when
    /// the layer has packed weights.
    fn dense(
        &self,
        which: Dense,
        rows: usize,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut bf16::Scratch,
    ) {
        let (weight, bias) = match which {
            Dense::Qkv => self.qkv,
            Dense::AttentionOutput => self.attention_output,
            Dense::Intermediate => self.intermediate,
            Dense::Output => self.output,
        };
        let width = self.heads.hidden();
        let (n, k) = match which {
            Dense::Qkv => (3 * width, width),
            Dense::AttentionOutput => (width, width),
            Dense::Intermediate => (self.intermediate_size(), width),
            Dense::Output => (width, self.intermediate_size()),
        };
        match self.bf16 {
            None => dense_block((rows, n, k), x, weight, bias, out),
            Some(packed) => {
                let weight = match which {
                    Dense::Qkv => &packed.qkv,
                    Dense::AttentionOutput => &packed.attention_output,
                    Dense::Intermediate => &packed.intermediate,
                    Dense::Output => &packed.output,
                };
                assert_eq!((weight.rows(), weight.columns()), (n, k), "packed weight");
                dense_block_bf16(packed.kernel, rows, x, weight, bias, out, scratch)
            }
        }
    }
}

fn layer_norm(rows: &mut [f32], residual: &[f32], (scale_shift, eps): (&[f32], f32)) {
    let (scale, shift) = scale_shift.split_at(scale_shift.len() / 2);
    residual_layer_norm_rows(rows, residual, scale, shift, eps);
}

/// An f32 CPU tensor's elements, which must be contiguous.
fn elements<'a>(storage: &'a Storage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(storage) => contiguous(storage, layout, what),
        _ => Err(Error::Msg(format!("{what}: expected a CPU tensor"))),
    }
}

impl CustomOp2 for EncoderLayer<'_> {
    fn name(&self) -> &'static str {
        "repro-encoder-layer"
    }

    fn cpu_fwd(
        &self,
        hidden: &CpuStorage,
        hidden_layout: &Layout,
        mask_bias: &CpuStorage,
        mask_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let hidden = contiguous(hidden, hidden_layout, "layer input")?;
        let mask_bias = contiguous(mask_bias, mask_layout, "attention mask")?;
        let (batch, tokens, width) = hidden_layout.shape().dims3()?;
        let weights = self.0;
        let guards = [
            &weights.qkv.weight,
            &weights.qkv.bias,
            &weights.attention_output.weight,
            &weights.attention_output.bias,
            &weights.attention_norm.scale_shift,
            &weights.intermediate.weight,
            &weights.intermediate.bias,
            &weights.output.weight,
            &weights.output.bias,
            &weights.output_norm.scale_shift,
        ]
        .map(Tensor::storage_and_layout);
        let mut slices: [&[f32]; 10] = [&[]; 10];
        for (slice, (storage, layout)) in slices.iter_mut().zip(&guards) {
            *slice = elements(storage, layout, "layer weight")?;
        }
        let [qkv_weight, qkv_bias, attention_weight, attention_bias, attention_norm, intermediate_weight, intermediate_bias, output_weight, output_bias, output_norm] =
            slices;
        let heads = Heads {
            count: weights.heads,
            size: weights.head_size,
        };
        let inner = intermediate_bias.len();
        let expected = [
            (
                "query/key/value weight",
                qkv_weight.len(),
                3 * width * width,
            ),
            ("query/key/value bias", qkv_bias.len(), 3 * width),
            (
                "attention output weight",
                attention_weight.len(),
                width * width,
            ),
            ("attention output bias", attention_bias.len(), width),
            ("attention layer norm", attention_norm.len(), 2 * width),
            (
                "intermediate weight",
                intermediate_weight.len(),
                inner * width,
            ),
            ("output weight", output_weight.len(), width * inner),
            ("output bias", output_bias.len(), width),
            ("output layer norm", output_norm.len(), 2 * width),
            ("attention mask", mask_bias.len(), batch * tokens),
            ("heads × head size", heads.hidden(), width),
        ];
        if let Some((what, found, wanted)) =
            expected.iter().find(|(_, found, wanted)| found != wanted)
        {
            return Err(Error::Msg(format!(
                "encoder layer over {batch}×{tokens}×{width} with {} heads of {}: {what} has \
                 {found} values, expected {wanted}",
                heads.count, heads.size
            )));
        }
        let parameters = Parameters {
            heads,
            qkv: (qkv_weight, qkv_bias),
            attention_output: (attention_weight, attention_bias),
            attention_norm: (attention_norm, weights.attention_norm.eps),
            intermediate: (intermediate_weight, intermediate_bias),
            activation: weights.activation,
            output: (output_weight, output_bias),
            output_norm: (output_norm, weights.output_norm.eps),
            bf16: weights.bf16.as_ref(),
        };

        let total = batch * tokens * width;
        let mut out: Vec<f32> = Vec::with_capacity(total);
        if total > 0 {
            let block_rows = tokens * sequences_per_block(batch, tokens);
            out.spare_capacity_mut()[..total]
                .par_chunks_mut(block_rows * width)
                .enumerate()
                .for_each(|(index, block)| {
                    let first_row = index * block_rows;
                    let rows = block.len() / width;
                    let out = initialise(block);
                    let hidden = &hidden[first_row * width..(first_row + rows) * width];
                    let mask_bias = &mask_bias[first_row..first_row + rows];
                    SCRATCH.with_borrow_mut(|scratch| {
                        parameters.block(hidden, mask_bias, tokens, out, scratch)
                    });
                });
            // SAFETY: the blocks cover all `total` elements, and `initialise` wrote each.
            unsafe { out.set_len(total) };
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, tokens, width))))
    }
}

/// Whole sequences per block: as many as fit in [`BLOCK_ROWS`] (at least one), but few
/// enough that a small batch still makes a block for every thread.
fn sequences_per_block(batch: usize, tokens: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (BLOCK_ROWS / tokens.max(1)).clamp(1, batch.div_ceil(threads).max(1))
}

/// Zeroes a block of the output (the last dense product overwrites it) and returns it as
/// initialised floats, in the thread that computes it, so the page faults of a fresh
/// allocation are taken in parallel and the block is in cache for the product.
fn initialise(block: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for value in block.iter_mut() {
        value.write(0.0);
    }
    // SAFETY: every element was written just above; `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { std::slice::from_raw_parts_mut(block.as_mut_ptr().cast::<f32>(), block.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_whole_sequences_spread_over_the_threads() {
        let threads = rayon::current_num_threads();
        for (batch, tokens) in [
            (32, 256),
            (32, 20),
            (4, 20),
            (1, 7),
            (3, 300),
            (32, 1),
            (5, 100),
        ] {
            let per_block = sequences_per_block(batch, tokens);
            let blocks = batch.div_ceil(per_block);
            assert!(per_block >= 1 && per_block <= batch, "{batch}×{tokens}");
            assert!(
                per_block * tokens <= BLOCK_ROWS || per_block == 1,
                "{batch}×{tokens}: {per_block} sequences per block"
            );
            assert!(
                blocks >= threads.min(batch),
                "{batch}×{tokens}: {blocks} blocks for {threads} threads"
            );
        }
    }
}
