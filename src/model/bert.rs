//! The BERT encoder, layer by layer, and the sequence-classification head of cross encoders.
//!
//! Struct names and `load` prefixes follow Hugging Face's `BertModel` so tensor names fall
//! out of the layout (`encoder.layer.3.attention.self.query.weight`). Unlike
//! candle-transformers' `BertModel`, the forward pass returns the hidden state after every
//! layer and can stop early: asking for layer `k` runs only `k` layers.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};

use super::config::{Activation, BertConfig};
use super::kernels;
use super::tokenize::Batch;
use super::ModelError;

/// Hidden states of a batch: `layers[0]` is the embedding output, `layers[i]` the output of
/// encoder layer `i`, each `(batch, tokens, hidden)`.
#[derive(Debug)]
pub struct HiddenStates {
    pub layers: Vec<Tensor>,
}

struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

impl BertEmbeddings {
    fn load(vb: VarBuilder, config: &BertConfig) -> candle_core::Result<Self> {
        Ok(Self {
            word_embeddings: embedding(
                config.vocab_size,
                config.hidden_size,
                vb.pp("word_embeddings"),
            )?,
            position_embeddings: embedding(
                config.max_position_embeddings,
                config.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            token_type_embeddings: embedding(
                config.type_vocab_size,
                config.hidden_size,
                vb.pp("token_type_embeddings"),
            )?,
            layer_norm: layer_norm(
                config.hidden_size,
                config.layer_norm_eps,
                vb.pp("LayerNorm"),
            )?,
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> candle_core::Result<Tensor> {
        let (_, seq_len) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, seq_len as u32, input_ids.device())?;
        let words = self.word_embeddings.forward(input_ids)?;
        let types = self.token_type_embeddings.forward(token_type_ids)?;
        let positions = self.position_embeddings.forward(&positions)?;
        let summed = words.add(&types)?.broadcast_add(&positions)?;
        self.layer_norm.forward(&summed)
    }
}

struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    /// `query`, `key` and `value` stacked: one product projects all three.
    fused_weight: Tensor,
    fused_bias: Tensor,
    num_heads: usize,
    head_size: usize,
}

impl BertSelfAttention {
    fn load(vb: VarBuilder, config: &BertConfig) -> candle_core::Result<Self> {
        let hidden = config.hidden_size;
        let query = linear(hidden, hidden, vb.pp("query"))?;
        let key = linear(hidden, hidden, vb.pp("key"))?;
        let value = linear(hidden, hidden, vb.pp("value"))?;
        let parts = [&query, &key, &value];
        let fused_weight = Tensor::cat(&parts.map(|p| p.weight()), 0)?;
        let biases = parts
            .iter()
            .map(|p| {
                p.bias().cloned().ok_or_else(|| {
                    candle_core::Error::Msg("attention projection without bias".into())
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            fused_weight,
            fused_bias: Tensor::cat(&biases, 0)?,
            query,
            key,
            value,
            num_heads: config.num_attention_heads,
            head_size: config.head_size(),
        })
    }

    /// `(batch, tokens, hidden)` → `(batch, heads, tokens, head_size)`.
    fn split_heads(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens, _) = xs.dims3()?;
        xs.reshape((batch, tokens, self.num_heads, self.head_size))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(
        &self,
        hidden: &Tensor,
        mask_bias: &Tensor,
        fast: bool,
    ) -> candle_core::Result<Tensor> {
        let (batch, tokens, width) = hidden.dims3()?;
        if fast {
            let qkv = kernels::dense(hidden, &self.fused_weight, &self.fused_bias)?;
            let mask = mask_bias.reshape((batch, tokens))?;
            return kernels::attention(&qkv, &mask, self.num_heads, self.head_size);
        }
        let query = self.split_heads(&self.query.forward(hidden)?)?;
        let key = self.split_heads(&self.key.forward(hidden)?)?;
        let value = self.split_heads(&self.value.forward(hidden)?)?;
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let scores = (query.matmul(&key.t()?)? * scale)?.broadcast_add(mask_bias)?;
        let probabilities = candle_nn::ops::softmax_last_dim(&scores)?;
        probabilities
            .matmul(&value)?
            .transpose(1, 2)?
            .reshape((batch, tokens, width))
    }
}

/// A dense projection, then the residual connection and layer norm (`BertSelfOutput` and
/// `BertOutput` in Hugging Face have this same shape).
struct ResidualProjection {
    dense: Linear,
    layer_norm: LayerNorm,
}

impl ResidualProjection {
    fn load(vb: VarBuilder, input: usize, config: &BertConfig) -> candle_core::Result<Self> {
        Ok(Self {
            dense: linear(input, config.hidden_size, vb.pp("dense"))?,
            layer_norm: layer_norm(
                config.hidden_size,
                config.layer_norm_eps,
                vb.pp("LayerNorm"),
            )?,
        })
    }

    fn forward(&self, xs: &Tensor, residual: &Tensor, fast: bool) -> candle_core::Result<Tensor> {
        self.layer_norm
            .forward(&project(&self.dense, xs, fast)?.add(residual)?)
    }
}

struct BertLayer {
    attention: BertSelfAttention,
    attention_output: ResidualProjection,
    intermediate: Linear,
    activation: Activation,
    output: ResidualProjection,
}

impl BertLayer {
    fn load(vb: VarBuilder, config: &BertConfig) -> candle_core::Result<Self> {
        Ok(Self {
            attention: BertSelfAttention::load(vb.pp("attention").pp("self"), config)?,
            attention_output: ResidualProjection::load(
                vb.pp("attention").pp("output"),
                config.hidden_size,
                config,
            )?,
            intermediate: linear(
                config.hidden_size,
                config.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            activation: config.hidden_act,
            output: ResidualProjection::load(vb.pp("output"), config.intermediate_size, config)?,
        })
    }

    fn forward(
        &self,
        hidden: &Tensor,
        mask_bias: &Tensor,
        fast: bool,
    ) -> candle_core::Result<Tensor> {
        let context = self.attention.forward(hidden, mask_bias, fast)?;
        let attended = self.attention_output.forward(&context, hidden, fast)?;
        let intermediate = activate(
            &project(&self.intermediate, &attended, fast)?,
            self.activation,
            fast,
        )?;
        self.output.forward(&intermediate, &attended, fast)
    }
}

/// A linear layer, through [`kernels::dense`] on the fast path.
fn project(layer: &Linear, xs: &Tensor, fast: bool) -> candle_core::Result<Tensor> {
    match (fast, layer.bias()) {
        (true, Some(bias)) => kernels::dense(xs, layer.weight(), bias),
        _ => layer.forward(xs),
    }
}

fn activate(xs: &Tensor, activation: Activation, fast: bool) -> candle_core::Result<Tensor> {
    match activation {
        Activation::Gelu if fast => kernels::gelu_erf(xs),
        Activation::Gelu => xs.gelu_erf(),
        Activation::GeluNew => xs.gelu(),
        Activation::Relu => xs.relu(),
    }
}

/// The classification head of `BertForSequenceClassification`: tanh pooler over `[CLS]`,
/// then a linear layer to `num_labels` logits.
pub struct ClassifierHead {
    pooler: Linear,
    classifier: Linear,
}

impl ClassifierHead {
    pub(crate) fn load(
        pooler: VarBuilder,
        classifier: VarBuilder,
        config: &BertConfig,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            pooler: linear(config.hidden_size, config.hidden_size, pooler.pp("dense"))?,
            classifier: linear(config.hidden_size, config.label_count(), classifier)?,
        })
    }

    /// Logits `(batch, num_labels)` from the last hidden state `(batch, tokens, hidden)`.
    pub fn forward(&self, last_hidden: &Tensor) -> candle_core::Result<Tensor> {
        let cls = last_hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.pooler.forward(&cls)?.tanh()?;
        self.classifier.forward(&pooled)
    }
}

/// A BERT encoder, optionally with a cross-encoder classification head.
pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    head: Option<ClassifierHead>,
    config: BertConfig,
    fast_kernels: bool,
}

impl BertModel {
    /// Builds the encoder from `vb`, which must point at the encoder's root (the prefix that
    /// holds `embeddings.*` and `encoder.*`). Only the first `depth` layers are loaded.
    pub(crate) fn load(
        vb: VarBuilder,
        config: &BertConfig,
        depth: usize,
        head: Option<ClassifierHead>,
    ) -> candle_core::Result<Self> {
        let embeddings = BertEmbeddings::load(vb.pp("embeddings"), config)?;
        let layers = (0..depth)
            .map(|index| BertLayer::load(vb.pp("encoder").pp(format!("layer.{index}")), config))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            head,
            config: config.clone(),
            fast_kernels: true,
        })
    }

    /// Whether the forward pass may use repro's CPU kernels ([`kernels`]) instead of candle's
    /// generic ops (on by default; they apply to f32 on the CPU and have no backward pass).
    pub fn set_fast_kernels(&mut self, enabled: bool) {
        self.fast_kernels = enabled;
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Number of encoder layers loaded (hidden states 0..=depth are available).
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    pub fn has_classifier(&self) -> bool {
        self.head.is_some()
    }

    /// Runs the embeddings and the first `up_to` layers; returns hidden states `0..=up_to`.
    pub fn forward(&self, batch: &Batch, up_to: usize) -> Result<HiddenStates, ModelError> {
        if up_to > self.layers.len() {
            return Err(ModelError::Setting(format!(
                "layer {up_to} requested but the model has {} layers",
                self.layers.len()
            )));
        }
        let mask_bias = attention_mask_bias(&batch.attention_mask)?;
        let mut hidden = self
            .embeddings
            .forward(&batch.input_ids, &batch.token_type_ids)?;
        let fast = self.fast_kernels && hidden.device().is_cpu() && hidden.dtype() == DType::F32;
        let mut layers = Vec::with_capacity(up_to + 1);
        layers.push(hidden.clone());
        for layer in &self.layers[..up_to] {
            hidden = layer.forward(&hidden, &mask_bias, fast)?;
            layers.push(hidden.clone());
        }
        Ok(HiddenStates { layers })
    }

    /// Cross-encoder logits `(batch, num_labels)` for a batch of pairs.
    pub fn classify(&self, batch: &Batch) -> Result<Tensor, ModelError> {
        let head = self.head.as_ref().ok_or_else(|| {
            ModelError::Setting(
                "this model has no classification head (not a cross encoder)".to_string(),
            )
        })?;
        let states = self.forward(batch, self.layers.len())?;
        let last = states
            .layers
            .last()
            .ok_or_else(|| ModelError::Setting("model produced no hidden states".to_string()))?;
        Ok(head.forward(last)?)
    }

    /// One relevance score per pair: the single logit of a 1-label head (as
    /// ms-marco cross encoders), or the log-odds of the last label for a multi-label head.
    pub fn score_pairs(&self, batch: &Batch) -> Result<Vec<f32>, ModelError> {
        let logits = self.classify(batch)?;
        let (_, labels) = logits.dims2()?;
        let scores = if labels == 1 {
            logits.squeeze(1)?
        } else {
            let log_probabilities = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let last = log_probabilities.narrow(1, labels - 1, 1)?.squeeze(1)?;
            let rest = log_probabilities
                .narrow(1, 0, labels - 1)?
                .exp()?
                .sum(1)?
                .log()?;
            (last - rest)?
        };
        Ok(scores.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }
}

/// `(batch, tokens)` mask of 1/0 → additive bias `(batch, 1, 1, tokens)`: 0 where attended,
/// the most negative float where padded (as `transformers` does), so padding gets no weight.
fn attention_mask_bias(mask: &Tensor) -> candle_core::Result<Tensor> {
    let (batch, tokens) = mask.dims2()?;
    let inverted = (mask.to_dtype(DType::F32)?.affine(-1.0, 1.0))?;
    (inverted * f32::MIN as f64)?.reshape((batch, 1, 1, tokens))
}
