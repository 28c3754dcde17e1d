//! Encoding many texts into pooled embeddings for several layers and poolings at once.
//!
//! One forward pass per batch serves every requested (layer, pooling): a layer sweep costs one
//! encode of the corpus, not one per cell. Texts are batched by token length (longest first)
//! so padding is small and the memory peak comes at the start.
//!
//! A large corpus can be encoded in shards ([`encode_shard`]): shard `i` of `n` takes every
//! `n`-th batch of that same length order, so each of its batches is exactly a batch of the
//! unsharded encode and the merged embeddings are bit-identical to it.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::bert::BertModel;
use super::pooling::{l2_normalize_rows, pool, Pooling};
use super::tokenize::{Batch, InputFormat, TextTokenizer, TokenizedText};
use super::ModelError;

/// What to produce from an encode.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeOptions {
    /// Hidden-state indices to pool: 0 is the embedding output, `i` the output of layer `i`.
    pub layers: Vec<usize>,
    pub poolings: Vec<Pooling>,
    pub input: InputFormat,
    pub batch_size: usize,
    /// Scale every pooled vector to unit L2 norm (dot product = cosine).
    pub normalize: bool,
}

/// One (layer, pooling) cell of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LayerPooling {
    pub layer: usize,
    pub pooling: Pooling,
}

/// A dense row-major matrix of embeddings, one row per text in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub rows: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Embeddings {
    pub fn zeros(rows: usize, dim: usize) -> Self {
        Embeddings {
            rows,
            dim,
            data: vec![0.0; rows * dim],
        }
    }

    pub fn row(&self, index: usize) -> &[f32] {
        &self.data[index * self.dim..(index + 1) * self.dim]
    }

    fn row_mut(&mut self, index: usize) -> &mut [f32] {
        &mut self.data[index * self.dim..(index + 1) * self.dim]
    }
}

/// Which part of a corpus an encode covers: batch `b` of the length-sorted order belongs to
/// shard `b % count` (round robin, so every shard gets long and short texts alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    fn owns_batch(self, batch: usize) -> bool {
        batch % self.count == self.index
    }

    /// How many of `texts` texts, in batches of `batch_size`, this shard encodes.
    pub fn texts(self, texts: usize, batch_size: usize) -> usize {
        let batch_size = batch_size.max(1);
        let batches = texts.div_ceil(batch_size);
        (0..batches)
            .filter(|&batch| self.owns_batch(batch))
            .map(|batch| batch_size.min(texts - batch * batch_size))
            .sum()
    }
}

/// The result of an encode: one matrix per (layer, pooling), and what it cost.
#[derive(Debug, Clone)]
pub struct PooledEmbeddings {
    /// Row `r` of every matrix embeds input text `positions[r]`; rows are in input order.
    pub cells: BTreeMap<LayerPooling, Embeddings>,
    /// The input index of each row: every text, or the texts of one shard.
    pub positions: Vec<usize>,
    /// Real (non-padding) tokens processed.
    pub tokens: usize,
    /// Token positions processed including padding.
    pub padded_tokens: usize,
}

impl PooledEmbeddings {
    pub fn get(&self, layer: usize, pooling: Pooling) -> Option<&Embeddings> {
        self.cells.get(&LayerPooling { layer, pooling })
    }
}

/// Encodes `texts` and pools every requested layer with every requested pooling.
///
/// `on_progress` is called with the number of texts finished after each batch.
pub fn encode_texts<S: AsRef<str>>(
    model: &BertModel,
    tokenizer: &TextTokenizer,
    texts: &[S],
    options: &EncodeOptions,
    on_progress: &mut dyn FnMut(usize),
) -> Result<PooledEmbeddings, ModelError> {
    encode_shard(model, tokenizer, texts, options, None, on_progress)
}

/// Like [`encode_texts`], for the texts of one `shard` only (every text when `None`);
/// `on_progress` counts the shard's texts.
pub fn encode_shard<S: AsRef<str>>(
    model: &BertModel,
    tokenizer: &TextTokenizer,
    texts: &[S],
    options: &EncodeOptions,
    shard: Option<Shard>,
    on_progress: &mut dyn FnMut(usize),
) -> Result<PooledEmbeddings, ModelError> {
    let deepest = check_options(model, options, shard)?;
    let tokenized = texts
        .iter()
        .map(|text| tokenizer.encode(text.as_ref(), options.input))
        .collect::<Result<Vec<_>, _>>()?;
    let (batches, positions) = shard_batches(&tokenized, options.batch_size, shard);
    // Input index -> row of the output matrices.
    let mut row_of = vec![usize::MAX; texts.len()];
    for (row, &position) in positions.iter().enumerate() {
        row_of[position] = row;
    }

    let width = model.config().hidden_size;
    let mut cells: BTreeMap<LayerPooling, Embeddings> = BTreeMap::new();
    for &layer in &options.layers {
        for &pooling in &options.poolings {
            cells.insert(
                LayerPooling { layer, pooling },
                Embeddings::zeros(positions.len(), width),
            );
        }
    }
    let device = candle_core::Device::Cpu;
    let (mut tokens, mut padded_tokens) = (0, 0);
    for chunk in &batches {
        let rows: Vec<usize> = chunk.iter().map(|&index| row_of[index]).collect();
        let members: Vec<_> = chunk.iter().map(|&index| &tokenized[index]).collect();
        tokens += members.iter().map(|text| text.len()).sum::<usize>();
        padded_tokens += members.len() * members.iter().map(|text| text.len()).max().unwrap_or(0);
        let batch = Batch::new(&members, tokenizer.pad_id(), &device)?;
        let states = model.forward(&batch, deepest)?;
        for (cell, matrix) in cells.iter_mut() {
            let pooled = pool(&states.layers[cell.layer], &batch, cell.pooling)?;
            let pooled = if options.normalize {
                l2_normalize_rows(&pooled)?
            } else {
                pooled
            };
            scatter_rows(&pooled, &rows, matrix)?;
        }
        on_progress(chunk.len());
    }
    Ok(PooledEmbeddings {
        cells,
        positions,
        tokens,
        padded_tokens,
    })
}

/// Checks the request against the model; returns the deepest layer asked for.
fn check_options(
    model: &BertModel,
    options: &EncodeOptions,
    shard: Option<Shard>,
) -> Result<usize, ModelError> {
    if let Some(shard) = shard {
        if shard.count == 0 || shard.index >= shard.count {
            return Err(ModelError::Setting(format!(
                "shard {} of {} does not exist",
                shard.index, shard.count
            )));
        }
    }
    let deepest = options
        .layers
        .iter()
        .copied()
        .max()
        .ok_or_else(|| ModelError::Setting("no layers requested".to_string()))?;
    if deepest > model.depth() {
        return Err(ModelError::Setting(format!(
            "layer {deepest} requested but the model has {} layers",
            model.depth()
        )));
    }
    if options.poolings.is_empty() {
        return Err(ModelError::Setting("no pooling requested".to_string()));
    }
    if options.batch_size == 0 {
        return Err(ModelError::Setting(
            "batch size must be at least 1".to_string(),
        ));
    }
    Ok(deepest)
}

/// The batches (of input indices) the shard owns, longest texts first with ties by
/// position so that batches are deterministic, and the inputs they hold, in input order.
fn shard_batches(
    tokenized: &[TokenizedText],
    batch_size: usize,
    shard: Option<Shard>,
) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut order: Vec<usize> = (0..tokenized.len()).collect();
    order.sort_by(|&a, &b| tokenized[b].len().cmp(&tokenized[a].len()).then(a.cmp(&b)));
    let batches: Vec<Vec<usize>> = order
        .chunks(batch_size)
        .enumerate()
        .filter(|(number, _)| shard.is_none_or(|shard| shard.owns_batch(*number)))
        .map(|(_, chunk)| chunk.to_vec())
        .collect();
    let mut positions: Vec<usize> = batches.iter().flatten().copied().collect();
    positions.sort_unstable();
    (batches, positions)
}

/// The mean-pooled embeddings of one layer of `texts`, each read alone (`single`): what a
/// dual encoder's sentence embedding is when `layer` is its last.
pub fn encode_mean<S: AsRef<str>>(
    model: &BertModel,
    tokenizer: &TextTokenizer,
    texts: &[S],
    layer: usize,
    batch_size: usize,
    normalize: bool,
    on_progress: &mut dyn FnMut(usize),
) -> Result<Embeddings, ModelError> {
    let options = EncodeOptions {
        layers: vec![layer],
        poolings: vec![Pooling::Mean],
        input: InputFormat::Single,
        batch_size,
        normalize,
    };
    let mut pooled = encode_texts(model, tokenizer, texts, &options, on_progress)?;
    pooled
        .cells
        .remove(&LayerPooling {
            layer,
            pooling: Pooling::Mean,
        })
        .ok_or_else(|| ModelError::Setting(format!("the encode produced no layer {layer}")))
}

/// Copies row `i` of `pooled` to row `positions[i]` of `matrix`.
fn scatter_rows(
    pooled: &Tensor,
    positions: &[usize],
    matrix: &mut Embeddings,
) -> candle_core::Result<()> {
    let values = pooled
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let dim = matrix.dim;
    for (row, &position) in positions.iter().enumerate() {
        matrix
            .row_mut(position)
            .copy_from_slice(&values[row * dim..(row + 1) * dim]);
    }
    Ok(())
}
