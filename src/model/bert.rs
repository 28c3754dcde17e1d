//! The BERT encoder, layer by layer, and the sequence-classification head of cross encoders.
//!
//! Struct names and `load` prefixes follow Hugging Face's `BertModel` so tensor names fall
//! out of the layout (`encoder.layer.3.attention.self.query.weight`). Unlike
//! candle-transformers' `BertModel`, the forward pass returns the hidden state after every
//! layer and can stop early: asking for layer `k` runs only `k` layers.
//!
//! A forward pass runs one of three ways ([`Pass`]): repro's CPU kernels (the inference
//! default), candle's generic ops (inference elsewhere), or differentiable ops only with
//! dropout (training, [`BertModel::forward_train`]).

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};

use super::config::{Activation, BertConfig};
use super::dropout::Dropout;
use super::kernels::{self, Bf16Kernel, Precision};
use super::tokenize::Batch;
use super::ModelError;

/// Hidden states of a batch: `layers[0]` is the embedding output, `layers[i]` the output of
/// encoder layer `i`, each `(batch, tokens, hidden)`.
#[derive(Debug)]
pub struct HiddenStates {
    pub layers: Vec<Tensor>,
}

/// How a forward pass computes; chosen once per pass and handed down the layers.
enum Pass<'a> {
    /// repro's CPU kernels ([`kernels`]): f32 on the CPU, no backward pass.
    Fast,
    /// candle's generic ops (fused softmax and layer norm): any dtype or device, no backward.
    Ops,
    /// Differentiable ops only, with dropout where Hugging Face's BERT applies it.
    Train(&'a mut Dropout),
}

impl Pass<'_> {
    fn is_fast(&self) -> bool {
        matches!(self, Pass::Fast)
    }

    /// Dropout of hidden states (the identity outside training).
    fn hidden_dropout(&mut self, xs: Tensor) -> candle_core::Result<Tensor> {
        match self {
            Pass::Train(dropout) => dropout.hidden(&xs),
            _ => Ok(xs),
        }
    }

    /// Layer norm: candle's fused op at inference, primitive (differentiable) ops in training.
    fn layer_norm(&self, norm: &LayerNorm, xs: &Tensor) -> candle_core::Result<Tensor> {
        match (self, norm.bias()) {
            (Pass::Train(_), Some(bias)) => {
                candle_nn::ops::layer_norm_slow(xs, norm.weight(), bias, norm.eps() as f32)
            }
            _ => norm.forward(xs),
        }
    }
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

    fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        pass: &mut Pass,
    ) -> candle_core::Result<Tensor> {
        let (_, seq_len) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, seq_len as u32, input_ids.device())?;
        let words = self.word_embeddings.forward(input_ids)?;
        let types = self.token_type_embeddings.forward(token_type_ids)?;
        let positions = self.position_embeddings.forward(&positions)?;
        let summed = words.add(&types)?.broadcast_add(&positions)?;
        let normed = pass.layer_norm(&self.layer_norm, &summed)?;
        pass.hidden_dropout(normed)
    }
}

struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    num_heads: usize,
    head_size: usize,
}

impl BertSelfAttention {
    fn load(vb: VarBuilder, config: &BertConfig) -> candle_core::Result<Self> {
        let hidden = config.hidden_size;
        Ok(Self {
            query: linear(hidden, hidden, vb.pp("query"))?,
            key: linear(hidden, hidden, vb.pp("key"))?,
            value: linear(hidden, hidden, vb.pp("value"))?,
            num_heads: config.num_attention_heads,
            head_size: config.head_size(),
        })
    }

    /// `query`, `key` and `value` stacked: one product projects all three.
    fn fused_projection(&self) -> candle_core::Result<kernels::DenseWeights> {
        let parts = [&self.query, &self.key, &self.value].map(kernel_weights);
        let [query, key, value] = parts;
        let (query, key, value) = (query?, key?, value?);
        Ok(kernels::DenseWeights {
            weight: Tensor::cat(&[&query.weight, &key.weight, &value.weight], 0)?,
            bias: Tensor::cat(&[&query.bias, &key.bias, &value.bias], 0)?,
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
        pass: &mut Pass,
    ) -> candle_core::Result<Tensor> {
        let (batch, tokens, width) = hidden.dims3()?;
        let query = self.split_heads(&self.query.forward(hidden)?)?;
        let key = self.split_heads(&self.key.forward(hidden)?)?;
        let value = self.split_heads(&self.value.forward(hidden)?)?;
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let scores = (query.matmul(&key.t()?)? * scale)?.broadcast_add(mask_bias)?;
        let probabilities = match pass {
            Pass::Train(dropout) => dropout.attention(&softmax_differentiable(&scores)?)?,
            _ => candle_nn::ops::softmax_last_dim(&scores)?,
        };
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

    /// The layer norm's γ and β stacked `(2, hidden)`, and its ε.
    fn norm_weights(&self) -> candle_core::Result<kernels::NormWeights> {
        let shift = self
            .layer_norm
            .bias()
            .ok_or_else(|| candle_core::Error::Msg("layer norm without bias".into()))?;
        Ok(kernels::NormWeights {
            scale_shift: Tensor::stack(&[self.layer_norm.weight(), shift], 0)?,
            eps: self.layer_norm.eps() as f32,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        residual: &Tensor,
        pass: &mut Pass,
    ) -> candle_core::Result<Tensor> {
        let projected = pass.hidden_dropout(self.dense.forward(xs)?)?;
        pass.layer_norm(&self.layer_norm, &projected.add(residual)?)
    }
}

struct BertLayer {
    attention: BertSelfAttention,
    attention_output: ResidualProjection,
    intermediate: Linear,
    activation: Activation,
    output: ResidualProjection,
    /// The same parameters arranged for [`kernels::encoder_layer`]: shared, but for the
    /// stacked query/key/value projection and the stacked layer-norm parameters (copies).
    fused: kernels::LayerWeights,
}

impl BertLayer {
    fn load(vb: VarBuilder, config: &BertConfig) -> candle_core::Result<Self> {
        let attention = BertSelfAttention::load(vb.pp("attention").pp("self"), config)?;
        let attention_output =
            ResidualProjection::load(vb.pp("attention").pp("output"), config.hidden_size, config)?;
        let intermediate = linear(
            config.hidden_size,
            config.intermediate_size,
            vb.pp("intermediate").pp("dense"),
        )?;
        let output = ResidualProjection::load(vb.pp("output"), config.intermediate_size, config)?;
        let fused = kernels::LayerWeights {
            heads: config.num_attention_heads,
            head_size: config.head_size(),
            qkv: attention.fused_projection()?,
            attention_output: kernel_weights(&attention_output.dense)?,
            attention_norm: attention_output.norm_weights()?,
            intermediate: kernel_weights(&intermediate)?,
            activation: config.hidden_act,
            output: kernel_weights(&output.dense)?,
            output_norm: output.norm_weights()?,
            bf16: None,
        };
        Ok(Self {
            attention,
            attention_output,
            intermediate,
            activation: config.hidden_act,
            output,
            fused,
        })
    }

    fn forward(
        &self,
        hidden: &Tensor,
        mask_bias: &Tensor,
        pass: &mut Pass,
    ) -> candle_core::Result<Tensor> {
        if pass.is_fast() {
            let (batch, tokens, _) = hidden.dims3()?;
            let mask_bias = mask_bias.reshape((batch, tokens))?;
            return kernels::encoder_layer(hidden, &mask_bias, &self.fused);
        }
        let context = self.attention.forward(hidden, mask_bias, pass)?;
        let attended = self.attention_output.forward(&context, hidden, pass)?;
        let intermediate = activate(self.intermediate.forward(&attended)?, self.activation)?;
        self.output.forward(&intermediate, &attended, pass)
    }
}

/// A linear layer's parameters for [`kernels`], which need the bias BERT always has.
fn kernel_weights(layer: &Linear) -> candle_core::Result<kernels::DenseWeights> {
    let bias = layer
        .bias()
        .ok_or_else(|| candle_core::Error::Msg("linear layer without bias".into()))?;
    Ok(kernels::DenseWeights {
        weight: layer.weight().clone(),
        bias: bias.clone(),
    })
}

fn activate(xs: Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    match activation {
        Activation::Gelu => xs.gelu_erf(),
        Activation::GeluNew => xs.gelu(),
        Activation::Relu => xs.relu(),
    }
}

/// Softmax over the last dimension from primitive ops, so it has a backward pass (candle's
/// fused `softmax_last_dim` has none). The row maximum is subtracted for stability and
/// detached: it cancels out of the result, so no gradient needs to flow through it.
fn softmax_differentiable(xs: &Tensor) -> candle_core::Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let exp = xs.broadcast_sub(&max)?.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
}

/// The classification head of `BertForSequenceClassification`: tanh pooler over `[CLS]`,
/// then a linear layer to `num_labels` logits.
pub struct ClassifierHead {
    pooler: Linear,
    classifier: Linear,
}

impl ClassifierHead {
    fn load(
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
        self.forward_pass(last_hidden, &mut Pass::Ops)
    }

    /// Dropout falls between the pooler and the classifier, as in Hugging Face.
    fn forward_pass(&self, last_hidden: &Tensor, pass: &mut Pass) -> candle_core::Result<Tensor> {
        let cls = last_hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = pass.hidden_dropout(self.pooler.forward(&cls)?.tanh()?)?;
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
    precision: Precision,
}

impl BertModel {
    /// Builds the encoder from `vb`, which must point at the encoder's root (the prefix that
    /// holds `embeddings.*` and `encoder.*`, and with `with_head` the cross encoder's
    /// `pooler.*` and `classifier.*`). Only the first `depth` layers are loaded.
    pub(crate) fn load(
        vb: VarBuilder,
        config: &BertConfig,
        depth: usize,
        with_head: bool,
    ) -> candle_core::Result<Self> {
        let head = if with_head {
            Some(ClassifierHead::load(
                vb.pp("pooler"),
                vb.pp("classifier"),
                config,
            )?)
        } else {
            None
        };
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
            precision: Precision::F32,
        })
    }

    /// Whether the forward pass may use repro's CPU kernels ([`kernels`]) instead of candle's
    /// generic ops (on by default; they apply to f32 on the CPU and have no backward pass).
    pub fn set_fast_kernels(&mut self, enabled: bool) {
        self.fast_kernels = enabled;
    }

    /// Sets the precision of the encoder's dense products. `Bf16` rounds and packs every
    /// layer's dense weights once, here ([`kernels::bf16`]), and fails on a CPU without a
    /// bf16 kernel or a model that cannot run repro's CPU kernels (f32 on the CPU); the
    /// training pass is always f32.
    pub fn set_precision(&mut self, precision: Precision) -> Result<(), ModelError> {
        match precision {
            Precision::F32 => {
                for layer in &mut self.layers {
                    layer.fused.bf16 = None;
                }
            }
            Precision::Bf16 => {
                if !self.can_use_kernels() {
                    return Err(ModelError::Setting(
                        "bf16 runs on repro's CPU kernels: an f32 model on the CPU with fast \
                         kernels on"
                            .to_string(),
                    ));
                }
                let kernel = Bf16Kernel::detect().map_err(ModelError::Setting)?;
                for layer in &mut self.layers {
                    layer.fused.bf16 = Some(kernels::Bf16Weights::pack(&layer.fused, kernel)?);
                }
            }
        }
        self.precision = precision;
        Ok(())
    }

    pub fn precision(&self) -> Precision {
        self.precision
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
        let fast = self.can_use_kernels();
        if !fast && self.precision == Precision::Bf16 {
            return Err(ModelError::Setting(
                "bf16 products need repro's CPU kernels, which were switched off".to_string(),
            ));
        }
        self.forward_pass(batch, up_to, if fast { Pass::Fast } else { Pass::Ops })
    }

    fn can_use_kernels(&self) -> bool {
        let weights = self.embeddings.word_embeddings.embeddings();
        self.fast_kernels && weights.device().is_cpu() && weights.dtype() == DType::F32
    }

    /// The training forward pass: differentiable ops only (it has a backward pass), with
    /// `dropout` after the embeddings, on the attention probabilities and after each dense
    /// projection before its residual connection. [`Dropout::disabled`] makes it
    /// deterministic; it then computes what [`forward`](Self::forward) computes.
    pub fn forward_train(
        &self,
        batch: &Batch,
        up_to: usize,
        dropout: &mut Dropout,
    ) -> Result<HiddenStates, ModelError> {
        self.forward_pass(batch, up_to, Pass::Train(dropout))
    }

    fn forward_pass(
        &self,
        batch: &Batch,
        up_to: usize,
        mut pass: Pass,
    ) -> Result<HiddenStates, ModelError> {
        if up_to > self.layers.len() {
            return Err(ModelError::Setting(format!(
                "layer {up_to} requested but the model has {} layers",
                self.layers.len()
            )));
        }
        let mut hidden =
            self.embeddings
                .forward(&batch.input_ids, &batch.token_type_ids, &mut pass)?;
        let mask_bias = attention_mask_bias(&batch.attention_mask)?.to_dtype(hidden.dtype())?;
        let mut layers = Vec::with_capacity(up_to + 1);
        layers.push(hidden.clone());
        for layer in &self.layers[..up_to] {
            hidden = layer.forward(&hidden, &mask_bias, &mut pass)?;
            layers.push(hidden.clone());
        }
        Ok(HiddenStates { layers })
    }

    /// Cross-encoder logits `(batch, num_labels)` for a batch of pairs.
    pub fn classify(&self, batch: &Batch) -> Result<Tensor, ModelError> {
        let head = self.head()?;
        let states = self.forward(batch, self.layers.len())?;
        Ok(head.forward(last_state(&states)?)?)
    }

    /// Cross-encoder logits in training: [`forward_train`](Self::forward_train), then the
    /// head with dropout between its pooler and classifier.
    pub fn classify_train(
        &self,
        batch: &Batch,
        dropout: &mut Dropout,
    ) -> Result<Tensor, ModelError> {
        let head = self.head()?;
        let states = self.forward_train(batch, self.layers.len(), dropout)?;
        Ok(head.forward_pass(last_state(&states)?, &mut Pass::Train(dropout))?)
    }

    /// The head of [`classify_train`](Self::classify_train) alone, on a last hidden state
    /// `(batch, tokens, hidden)` computed elsewhere (the fused training pass,
    /// [`super::backprop`]): differentiable, with dropout between pooler and classifier.
    pub fn classify_hidden_train(
        &self,
        last_hidden: &Tensor,
        dropout: &mut Dropout,
    ) -> Result<Tensor, ModelError> {
        let head = self.head()?;
        Ok(head.forward_pass(last_hidden, &mut Pass::Train(dropout))?)
    }

    fn head(&self) -> Result<&ClassifierHead, ModelError> {
        self.head.as_ref().ok_or_else(|| {
            ModelError::Setting(
                "this model has no classification head (not a cross encoder)".to_string(),
            )
        })
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

fn last_state(states: &HiddenStates) -> Result<&Tensor, ModelError> {
    states
        .layers
        .last()
        .ok_or_else(|| ModelError::Setting("model produced no hidden states".to_string()))
}

/// `(batch, tokens)` mask of 1/0 → additive bias `(batch, 1, 1, tokens)`: 0 where attended,
/// the most negative float where padded (as `transformers` does), so padding gets no weight.
fn attention_mask_bias(mask: &Tensor) -> candle_core::Result<Tensor> {
    let (batch, tokens) = mask.dims2()?;
    let inverted = (mask.to_dtype(DType::F32)?.affine(-1.0, 1.0))?;
    (inverted * f32::MIN as f64)?.reshape((batch, 1, 1, tokens))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Device;

    use super::*;
    use crate::model::loading::expected_tensors;
    use crate::model::random::tiny_config;
    use crate::model::tokenize::TokenizedText;
    use crate::rng::SplitMix64;

    /// A random BERT whose biases and layer-norm parameters are far from 0 and 1, so the
    /// fused kernels' handling of every parameter shows in the output.
    fn random_model(hidden: usize, heads: usize, activation: Activation) -> BertModel {
        let mut config = tiny_config(2, 50);
        config.hidden_size = hidden;
        config.num_attention_heads = heads;
        config.intermediate_size = 4 * hidden;
        config.hidden_act = activation;
        let mut rng = SplitMix64::new(7);
        let tensors: HashMap<String, Tensor> = expected_tensors(&config, 2, false)
            .into_iter()
            .map(|(name, shape)| {
                let count: usize = shape.iter().product();
                let offset = if name.ends_with("LayerNorm.weight") {
                    1.0
                } else {
                    0.0
                };
                let values = (0..count).map(|_| offset + 0.2 * rng.normal()).collect();
                let tensor = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
                (name, tensor)
            })
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        BertModel::load(vb, &config, 2, false).unwrap()
    }

    fn batch(lengths: &[usize]) -> Batch {
        let texts: Vec<TokenizedText> = lengths
            .iter()
            .enumerate()
            .map(|(row, &length)| TokenizedText {
                ids: (0..length)
                    .map(|i| ((i * 7 + row * 3) % 50) as u32)
                    .collect(),
                type_ids: (0..length).map(|i| u32::from(i >= length / 2)).collect(),
                special: vec![false; length],
                pooled: vec![true; length],
            })
            .collect();
        let members: Vec<&TokenizedText> = texts.iter().collect();
        Batch::new(&members, 0, &Device::Cpu).unwrap()
    }

    /// The fused encoder layer computes what candle's ops compute, hidden state by hidden
    /// state: with the generic (head size 8) and AVX-512 (head size 32) attention, each
    /// activation, several sequences per block and one long sequence per block, padded.
    #[test]
    fn fused_layers_match_candle_ops() {
        for (hidden, heads) in [(32, 4), (64, 2)] {
            for activation in [Activation::Gelu, Activation::GeluNew, Activation::Relu] {
                let mut model = random_model(hidden, heads, activation);
                for lengths in [&[60, 41, 60, 3, 59, 60, 17][..], &[300, 260, 1]] {
                    let batch = batch(lengths);
                    let fast = model.forward(&batch, 2).unwrap();
                    model.set_fast_kernels(false);
                    let ops = model.forward(&batch, 2).unwrap();
                    model.set_fast_kernels(true);
                    for (layer, (fast, ops)) in fast.layers.iter().zip(&ops.layers).enumerate() {
                        let difference = kernels::max_abs_difference(fast, ops);
                        assert!(
                            difference < 1e-4,
                            "hidden {hidden}, {activation:?}, {lengths:?}, layer {layer}: \
                             {difference}"
                        );
                    }
                }
            }
        }
    }

    /// bf16 products stay close to f32 hidden state by hidden state (each row's cosine),
    /// on every kernel this CPU has; a model without the CPU kernels refuses bf16; f32 again
    /// restores the f32 results exactly.
    #[test]
    fn bf16_layers_stay_close_to_f32() {
        let mut model = random_model(64, 2, Activation::Gelu);
        let batch = batch(&[60, 41, 7, 300]);
        let f32_states = model.forward(&batch, 2).unwrap();
        let support = kernels::bf16::Bf16Support::detect();
        for kernel in [Bf16Kernel::Amx, Bf16Kernel::Avx512] {
            if Bf16Kernel::choose(support, Some(kernel.name())).is_err() {
                eprintln!("this CPU has no {kernel:?} kernel");
                continue;
            }
            for layer in &mut model.layers {
                layer.fused.bf16 = Some(kernels::Bf16Weights::pack(&layer.fused, kernel).unwrap());
            }
            model.precision = Precision::Bf16;
            let bf16_states = model.forward(&batch, 2).unwrap();
            for (layer, (low, full)) in bf16_states
                .layers
                .iter()
                .zip(&f32_states.layers)
                .enumerate()
            {
                let rows = |t: &Tensor| t.flatten_to(1).unwrap().to_vec2::<f32>().unwrap();
                for (low, full) in rows(low).iter().zip(rows(full)) {
                    let dot: f32 = low.iter().zip(&full).map(|(a, b)| a * b).sum();
                    let norms = low.iter().map(|a| a * a).sum::<f32>().sqrt()
                        * full.iter().map(|b| b * b).sum::<f32>().sqrt();
                    assert!(
                        dot / norms > 0.999,
                        "{kernel:?} layer {layer}: {}",
                        dot / norms
                    );
                }
            }
            model.set_fast_kernels(false);
            let refused = model.forward(&batch, 2).unwrap_err().to_string();
            assert!(refused.contains("kernels"), "{refused}");
            assert!(model.set_precision(Precision::Bf16).is_err());
            model.set_fast_kernels(true);
            model.set_precision(Precision::F32).unwrap();
            let again = model.forward(&batch, 2).unwrap();
            for (a, b) in again.layers.iter().zip(&f32_states.layers) {
                assert_eq!(kernels::max_abs_difference(a, b), 0.0);
            }
        }
    }
}
