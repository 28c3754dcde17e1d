//! Encoding many texts into pooled embeddings for several layers and poolings at once.
//!
//! One forward pass per batch serves every requested (layer, pooling): a layer sweep costs one
//! encode of the corpus, not one per cell. Texts are batched by token length (longest first)
//! so padding is small and the memory peak comes at the start.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::bert::BertModel;
use super::pooling::{l2_normalize_rows, pool, Pooling};
use super::tokenize::{Batch, InputFormat, TextTokenizer};
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

/// The result of an encode: one matrix per (layer, pooling), and what it cost.
#[derive(Debug, Clone)]
pub struct PooledEmbeddings {
    pub cells: BTreeMap<LayerPooling, Embeddings>,
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
    let tokenized = texts
        .iter()
        .map(|text| tokenizer.encode(text.as_ref(), options.input))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order: Vec<usize> = (0..tokenized.len()).collect();
    // Longest first, ties by position, so batches are deterministic.
    order.sort_by(|&a, &b| tokenized[b].len().cmp(&tokenized[a].len()).then(a.cmp(&b)));

    let width = model.config().hidden_size;
    let mut cells: BTreeMap<LayerPooling, Embeddings> = BTreeMap::new();
    for &layer in &options.layers {
        for &pooling in &options.poolings {
            cells.insert(
                LayerPooling { layer, pooling },
                Embeddings::zeros(texts.len(), width),
            );
        }
    }
    let device = candle_core::Device::Cpu;
    let (mut tokens, mut padded_tokens) = (0, 0);
    for chunk in order.chunks(options.batch_size) {
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
            scatter_rows(&pooled, chunk, matrix)?;
        }
        on_progress(chunk.len());
    }
    Ok(PooledEmbeddings {
        cells,
        tokens,
        padded_tokens,
    })
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
