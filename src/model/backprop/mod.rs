/*!
The encoder's training pass on the CPU: a forward pass that keeps what its backward pass
needs (a [`Tape`]) and a hand-written backward pass into gradient buffers.

Through candle's autograd a BERT training step is hundreds of generic ops, most of them on
one thread, each allocating its output and again its gradient. Here each step of a layer —
a dense product, attention per sequence, residual + layer norm, activation, dropout — is one
pass over every thread, reusing the encoder's vectorised loops, and dropout masks are never
stored: the backward pass draws them again from the same counter-based stream
([`DropoutMask`]).

Only real tokens are computed: their rows are packed one sequence after another
([`Packing`]), so no dense product or element-wise pass runs over padding. Dropout masks keep
their indices in the padded `(batch, tokens)` layout, so a seed draws the masks it drew
before packing. The hidden states come back padded, padding rows zero: a loss reads only real
tokens (mean pooling by mask, the first token), and padding rows' gradients are dropped.

It computes what [`super::BertModel::forward_train`] computes (candle's differentiable ops,
kept as the reference the tests compare with) for f32 on the CPU, and owns only that:
parameters and gradients come in as slices arranged by [`EncoderTensors`], named by the
caller; the head and the loss on top of the hidden states are the caller's.
*/

mod attention;
mod rows;

use super::config::{Activation, BertConfig};
use super::dropout::{Dropout, DropoutMask};
use super::ModelError;
use attention::Geometry;
use rows::SavedNorm;

/// A linear layer: `weight (out, in)` as PyTorch stores it, `bias (out)`.
#[derive(Debug, Clone)]
pub struct Dense<T> {
    pub weight: T,
    pub bias: T,
}

/// A layer norm's γ and β.
#[derive(Debug, Clone)]
pub struct Norm<T> {
    pub scale: T,
    pub shift: T,
}

#[derive(Debug, Clone)]
pub struct EmbeddingTensors<T> {
    pub words: T,
    pub positions: T,
    pub token_types: T,
    pub norm: Norm<T>,
}

#[derive(Debug, Clone)]
pub struct LayerTensors<T> {
    pub query: Dense<T>,
    pub key: Dense<T>,
    pub value: Dense<T>,
    pub attention_output: Dense<T>,
    pub attention_norm: Norm<T>,
    pub intermediate: Dense<T>,
    pub output: Dense<T>,
    pub output_norm: Norm<T>,
}

/// One `T` per tensor of a BERT encoder (embeddings and layers, no pooler): the parameters
/// as slices, their gradients as mutable slices, or where a caller keeps them.
#[derive(Debug, Clone)]
pub struct EncoderTensors<T> {
    pub embeddings: EmbeddingTensors<T>,
    pub layers: Vec<LayerTensors<T>>,
}

impl<T> Dense<T> {
    fn try_map<U, E>(self, f: &mut impl FnMut(T) -> Result<U, E>) -> Result<Dense<U>, E> {
        Ok(Dense {
            weight: f(self.weight)?,
            bias: f(self.bias)?,
        })
    }
}

impl<T> Norm<T> {
    fn try_map<U, E>(self, f: &mut impl FnMut(T) -> Result<U, E>) -> Result<Norm<U>, E> {
        Ok(Norm {
            scale: f(self.scale)?,
            shift: f(self.shift)?,
        })
    }
}

impl<T> EncoderTensors<T> {
    /// One value per tensor from its Hugging Face name (`embeddings.word_embeddings.weight`,
    /// `encoder.layer.{i}.attention.self.query.bias`, …), for `layers` layers.
    pub fn from_names<E>(
        layers: usize,
        mut of: impl FnMut(&str) -> Result<T, E>,
    ) -> Result<Self, E> {
        let embeddings = EmbeddingTensors {
            words: of("embeddings.word_embeddings.weight")?,
            positions: of("embeddings.position_embeddings.weight")?,
            token_types: of("embeddings.token_type_embeddings.weight")?,
            norm: Norm {
                scale: of("embeddings.LayerNorm.weight")?,
                shift: of("embeddings.LayerNorm.bias")?,
            },
        };
        let mut dense = |prefix: &str| -> Result<Dense<T>, E> {
            Ok(Dense {
                weight: of(&format!("{prefix}.weight"))?,
                bias: of(&format!("{prefix}.bias"))?,
            })
        };
        let layers = (0..layers)
            .map(|index| {
                let layer = format!("encoder.layer.{index}");
                Ok(LayerTensors {
                    query: dense(&format!("{layer}.attention.self.query"))?,
                    key: dense(&format!("{layer}.attention.self.key"))?,
                    value: dense(&format!("{layer}.attention.self.value"))?,
                    attention_output: dense(&format!("{layer}.attention.output.dense"))?,
                    attention_norm: norm_of(dense(&format!("{layer}.attention.output.LayerNorm"))?),
                    intermediate: dense(&format!("{layer}.intermediate.dense"))?,
                    output: dense(&format!("{layer}.output.dense"))?,
                    output_norm: norm_of(dense(&format!("{layer}.output.LayerNorm"))?),
                })
            })
            .collect::<Result<Vec<_>, E>>()?;
        Ok(EncoderTensors { embeddings, layers })
    }

    /// The same arrangement with every value replaced by `f` of it.
    pub fn try_map<U, E>(
        self,
        mut f: impl FnMut(T) -> Result<U, E>,
    ) -> Result<EncoderTensors<U>, E> {
        let f = &mut f;
        let embeddings = EmbeddingTensors {
            words: f(self.embeddings.words)?,
            positions: f(self.embeddings.positions)?,
            token_types: f(self.embeddings.token_types)?,
            norm: self.embeddings.norm.try_map(f)?,
        };
        let layers = self
            .layers
            .into_iter()
            .map(|layer| {
                Ok(LayerTensors {
                    query: layer.query.try_map(f)?,
                    key: layer.key.try_map(f)?,
                    value: layer.value.try_map(f)?,
                    attention_output: layer.attention_output.try_map(f)?,
                    attention_norm: layer.attention_norm.try_map(f)?,
                    intermediate: layer.intermediate.try_map(f)?,
                    output: layer.output.try_map(f)?,
                    output_norm: layer.output_norm.try_map(f)?,
                })
            })
            .collect::<Result<Vec<_>, E>>()?;
        Ok(EncoderTensors { embeddings, layers })
    }
}

impl<T: Copy> EncoderTensors<T> {
    /// Every value, embeddings first, then layer by layer.
    pub fn values(&self) -> Vec<T> {
        let mut values = Vec::new();
        let _ = self.clone().try_map(|value| {
            values.push(value);
            Ok::<_, std::convert::Infallible>(())
        });
        values
    }
}

/// A layer norm's `weight` and `bias`, which [`EncoderTensors::from_names`] reads as a dense
/// layer's.
fn norm_of<T>(dense: Dense<T>) -> Norm<T> {
    Norm {
        scale: dense.weight,
        shift: dense.bias,
    }
}

/// A padded batch as the training pass reads it: `(batch, tokens)` row-major ids and token
/// types, and each sequence's number of real tokens (a prefix, as [`super::Batch`] pads).
#[derive(Debug, Clone)]
pub struct TrainingInput {
    pub batch: usize,
    pub tokens: usize,
    pub ids: Vec<u32>,
    pub token_types: Vec<u32>,
    pub lengths: Vec<usize>,
}

impl TrainingInput {
    /// From a [`super::Batch`]; its attention mask must mark a prefix of each row.
    pub fn from_batch(batch: &super::Batch) -> Result<Self, ModelError> {
        let (rows, tokens) = batch.input_ids.dims2()?;
        let ids = batch.input_ids.flatten_all()?.to_vec1::<u32>()?;
        let token_types = batch.token_type_ids.flatten_all()?.to_vec1::<u32>()?;
        let mask = batch.attention_mask.flatten_all()?.to_vec1::<u32>()?;
        let lengths = mask
            .chunks(tokens.max(1))
            .take(rows)
            .enumerate()
            .map(|(row, mask)| {
                let length = mask.iter().take_while(|&&m| m != 0).count();
                if mask[length..].iter().any(|&m| m != 0) {
                    return Err(ModelError::Setting(format!(
                        "row {row} of the attention mask is not a prefix of real tokens"
                    )));
                }
                Ok(length)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrainingInput {
            batch: rows,
            tokens,
            ids,
            token_types,
            lengths,
        })
    }

    /// Rows of the padded `(batch, tokens)` layout.
    fn padded_rows(&self) -> usize {
        self.batch * self.tokens
    }
}

/// Where the real tokens of a [`TrainingInput`] lie once packed: sequence after sequence,
/// each its real tokens only.
#[derive(Debug, Clone)]
struct Packing {
    /// For each packed row, its row in the padded `(batch, tokens)` layout.
    origins: Vec<usize>,
    /// The first packed row of each sequence, and the number of packed rows at the end.
    starts: Vec<usize>,
}

impl Packing {
    fn of(input: &TrainingInput) -> Self {
        let mut origins = Vec::with_capacity(input.lengths.iter().sum());
        let mut starts = Vec::with_capacity(input.batch + 1);
        for (sequence, &length) in input.lengths.iter().enumerate() {
            starts.push(origins.len());
            origins.extend((0..length).map(|token| sequence * input.tokens + token));
        }
        starts.push(origins.len());
        Packing { origins, starts }
    }

    fn rows(&self) -> usize {
        self.origins.len()
    }

    /// The packed rows of `padded`, rows `width` wide.
    fn pack(&self, padded: &[f32], width: usize) -> Vec<f32> {
        let mut packed = Vec::with_capacity(self.rows() * width);
        for &origin in &self.origins {
            packed.extend_from_slice(&padded[origin * width..][..width]);
        }
        packed
    }

    /// `packed` rows back at their padded places among `padded_rows` rows, padding zero.
    fn unpack(&self, packed: &[f32], width: usize, padded_rows: usize) -> Vec<f32> {
        let mut padded = vec![0f32; padded_rows * width];
        for (row, &origin) in packed.chunks_exact(width).zip(&self.origins) {
            padded[origin * width..][..width].copy_from_slice(row);
        }
        padded
    }
}

/// What one training forward pass keeps for its backward pass.
pub struct Tape {
    input: TrainingInput,
    packing: Packing,
    embedding_norm: SavedNorm,
    embedding_dropout: DropoutMask,
    layers: Vec<LayerTape>,
}

struct LayerTape {
    /// The hidden state the layer read.
    input: Vec<f32>,
    qkv: Vec<f32>,
    probabilities: Vec<f32>,
    probability_dropout: DropoutMask,
    context: Vec<f32>,
    attention_dropout: DropoutMask,
    attention_norm: SavedNorm,
    /// The attention block's output, the feed-forward block's input and residual.
    attended: Vec<f32>,
    /// Before the activation.
    intermediate: Vec<f32>,
    activated: Vec<f32>,
    output_dropout: DropoutMask,
    output_norm: SavedNorm,
}

/// The sizes the pass needs from a model's configuration.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    hidden: usize,
    intermediate: usize,
    heads: usize,
    head_size: usize,
    activation: Activation,
    eps: f32,
}

impl Sizes {
    fn of(config: &BertConfig) -> Self {
        Sizes {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            head_size: config.head_size(),
            activation: config.hidden_act,
            eps: config.layer_norm_eps as f32,
        }
    }
}

/// Checks every length the pass relies on: tensor sizes against the configuration, ids and
/// positions against the embedding tables.
fn check(
    config: &BertConfig,
    params: &EncoderTensors<&[f32]>,
    input: &TrainingInput,
) -> Result<(), ModelError> {
    let sizes = Sizes::of(config);
    let (hidden, inner) = (sizes.hidden, sizes.intermediate);
    let bad = |what: String| Err(ModelError::Setting(format!("training pass: {what}")));
    if sizes.heads == 0 || sizes.heads * sizes.head_size != hidden {
        return bad(format!(
            "{} heads do not divide hidden size {hidden}",
            sizes.heads
        ));
    }
    let embeddings = &params.embeddings;
    let expect = |name: &str, actual: usize, expected: usize| {
        if actual == expected {
            Ok(())
        } else {
            Err(ModelError::Setting(format!(
                "training pass: {name} has {actual} values, expected {expected}"
            )))
        }
    };
    expect(
        "word embeddings",
        embeddings.words.len(),
        config.vocab_size * hidden,
    )?;
    expect(
        "position embeddings",
        embeddings.positions.len(),
        config.max_position_embeddings * hidden,
    )?;
    expect(
        "token type embeddings",
        embeddings.token_types.len(),
        config.type_vocab_size * hidden,
    )?;
    let norm = |name: &str, norm: &Norm<&[f32]>| {
        expect(name, norm.scale.len(), hidden)?;
        expect(name, norm.shift.len(), hidden)
    };
    let dense = |name: &str, dense: &Dense<&[f32]>, out: usize, input: usize| {
        expect(name, dense.weight.len(), out * input)?;
        expect(name, dense.bias.len(), out)
    };
    norm("embedding layer norm", &embeddings.norm)?;
    for layer in &params.layers {
        dense("query", &layer.query, hidden, hidden)?;
        dense("key", &layer.key, hidden, hidden)?;
        dense("value", &layer.value, hidden, hidden)?;
        dense("attention output", &layer.attention_output, hidden, hidden)?;
        norm("attention layer norm", &layer.attention_norm)?;
        dense("intermediate", &layer.intermediate, inner, hidden)?;
        dense("output", &layer.output, hidden, inner)?;
        norm("output layer norm", &layer.output_norm)?;
    }
    let rows = input.padded_rows();
    expect("input ids", input.ids.len(), rows)?;
    expect("token types", input.token_types.len(), rows)?;
    expect("sequence lengths", input.lengths.len(), input.batch)?;
    if input.tokens > config.max_position_embeddings {
        return bad(format!(
            "{} tokens exceed {} position embeddings",
            input.tokens, config.max_position_embeddings
        ));
    }
    if let Some(id) = input
        .ids
        .iter()
        .find(|&&id| id as usize >= config.vocab_size)
    {
        return bad(format!(
            "token id {id} outside the vocabulary of {}",
            config.vocab_size
        ));
    }
    if let Some(t) = input
        .token_types
        .iter()
        .find(|&&t| t as usize >= config.type_vocab_size)
    {
        return bad(format!(
            "token type {t} outside {} types",
            config.type_vocab_size
        ));
    }
    if let Some(length) = input.lengths.iter().find(|&&l| l == 0 || l > input.tokens) {
        return bad(format!(
            "a sequence of {length} real tokens in rows of {}",
            input.tokens
        ));
    }
    Ok(())
}

/// The training forward pass of the embeddings and every layer of `params`, with `dropout`
/// where Hugging Face's BERT applies it (masks reserved in the order the candle pass draws
/// them). Returns the last hidden state `(batch · tokens) × hidden` and the tape.
pub fn forward(
    config: &BertConfig,
    params: &EncoderTensors<&[f32]>,
    input: TrainingInput,
    dropout: &mut Dropout,
) -> Result<(Vec<f32>, Tape), ModelError> {
    check(config, params, &input)?;
    let sizes = Sizes::of(config);
    let packing = Packing::of(&input);
    let summed = embed(params, &input, &packing, sizes.hidden);
    let no_dropout = (&DropoutMask::Identity, &[][..]);
    let (mut hidden, embedding_norm) = rows::layer_norm_forward(
        summed,
        no_dropout,
        &packing.origins,
        &params.embeddings.norm,
        sizes.eps,
    );
    let embedding_dropout = dropout.hidden_mask(input.padded_rows() * sizes.hidden);
    rows::apply_dropout(&mut hidden, &embedding_dropout, &packing.origins);
    let mut layers = Vec::with_capacity(params.layers.len());
    for layer in &params.layers {
        let (output, tape) = layer_forward(sizes, layer, (&input, &packing), hidden, dropout);
        layers.push(tape);
        hidden = output;
    }
    let hidden = packing.unpack(&hidden, sizes.hidden, input.padded_rows());
    let tape = Tape {
        input,
        packing,
        embedding_norm,
        embedding_dropout,
        layers,
    };
    Ok((hidden, tape))
}

/// `word + token type + position` embedding of every packed row.
fn embed(
    params: &EncoderTensors<&[f32]>,
    input: &TrainingInput,
    packing: &Packing,
    hidden: usize,
) -> Vec<f32> {
    let embeddings = &params.embeddings;
    let mut summed = vec![0f32; packing.rows() * hidden];
    for (out, &origin) in summed.chunks_exact_mut(hidden).zip(&packing.origins) {
        let word = &embeddings.words[input.ids[origin] as usize * hidden..][..hidden];
        let kind = &embeddings.token_types[input.token_types[origin] as usize * hidden..][..hidden];
        let position = &embeddings.positions[(origin % input.tokens) * hidden..][..hidden];
        for (((out, w), t), p) in out.iter_mut().zip(word).zip(kind).zip(position) {
            *out = (w + t) + p;
        }
    }
    summed
}

fn layer_forward(
    sizes: Sizes,
    layer: &LayerTensors<&[f32]>,
    (input, packing): (&TrainingInput, &Packing),
    x: Vec<f32>,
    dropout: &mut Dropout,
) -> (Vec<f32>, LayerTape) {
    let hidden = sizes.hidden;
    let padded_values = input.padded_rows() * hidden;
    let origins = &packing.origins;
    let qkv = rows::dense_forward(&x, &[&layer.query, &layer.key, &layer.value]);
    let geometry = Geometry {
        tokens: input.tokens,
        heads: sizes.heads,
        head_size: sizes.head_size,
    };
    let mut context = vec![0f32; packing.rows() * hidden];
    let mut probabilities = vec![0f32; geometry.probabilities(&input.lengths)];
    let probability_dropout =
        dropout.attention_mask(input.batch * sizes.heads * input.tokens * input.tokens);
    attention::forward(
        geometry,
        (&packing.starts, &input.lengths),
        &qkv,
        &probability_dropout,
        &mut context,
        &mut probabilities,
    );
    let projected = rows::dense_forward(&context, &[&layer.attention_output]);
    let attention_dropout = dropout.hidden_mask(padded_values);
    let (attended, attention_norm) = rows::layer_norm_forward(
        projected,
        (&attention_dropout, &x),
        origins,
        &layer.attention_norm,
        sizes.eps,
    );
    let intermediate = rows::dense_forward(&attended, &[&layer.intermediate]);
    let activated = rows::activate(&intermediate, sizes.activation);
    let projected = rows::dense_forward(&activated, &[&layer.output]);
    let output_dropout = dropout.hidden_mask(padded_values);
    let (output, output_norm) = rows::layer_norm_forward(
        projected,
        (&output_dropout, &attended),
        origins,
        &layer.output_norm,
        sizes.eps,
    );
    let tape = LayerTape {
        input: x,
        qkv,
        probabilities,
        probability_dropout,
        context,
        attention_dropout,
        attention_norm,
        attended,
        intermediate,
        activated,
        output_dropout,
        output_norm,
    };
    (output, tape)
}

/// The backward pass of [`forward`]: `d_output`, the gradient of the last hidden state, is
/// taken back through every layer and the embeddings, and every parameter's gradient is
/// added to `gradients`.
pub fn backward(
    config: &BertConfig,
    params: &EncoderTensors<&[f32]>,
    tape: &Tape,
    d_output: Vec<f32>,
    gradients: &mut EncoderTensors<&mut [f32]>,
) -> Result<(), ModelError> {
    let sizes = Sizes::of(config);
    let rows = tape.input.padded_rows();
    if d_output.len() != rows * sizes.hidden
        || params.layers.len() != tape.layers.len()
        || gradients.layers.len() != tape.layers.len()
    {
        return Err(ModelError::Setting(format!(
            "training backward pass: a gradient of {} values for {rows} rows of {}, {} layers \
             taped",
            d_output.len(),
            sizes.hidden,
            tape.layers.len()
        )));
    }
    let (input, packing) = (&tape.input, &tape.packing);
    let mut d_output = packing.pack(&d_output, sizes.hidden);
    for ((layer, saved), grads) in params
        .layers
        .iter()
        .zip(&tape.layers)
        .zip(gradients.layers.iter_mut())
        .rev()
    {
        d_output = layer_backward(sizes, layer, saved, (input, packing), d_output, grads);
    }
    rows::apply_dropout(&mut d_output, &tape.embedding_dropout, &packing.origins);
    let embeddings = &mut gradients.embeddings;
    rows::layer_norm_backward(
        &mut d_output,
        &tape.embedding_norm,
        params.embeddings.norm.scale,
        &mut embeddings.norm,
    );
    let hidden = sizes.hidden;
    for (d, &origin) in d_output.chunks_exact(hidden).zip(&packing.origins) {
        let targets = [
            (&mut *embeddings.words, input.ids[origin] as usize),
            (
                &mut *embeddings.token_types,
                input.token_types[origin] as usize,
            ),
            (&mut *embeddings.positions, origin % input.tokens),
        ];
        for (table, index) in targets {
            for (g, d) in table[index * hidden..][..hidden].iter_mut().zip(d) {
                *g += d;
            }
        }
    }
    Ok(())
}

fn layer_backward(
    sizes: Sizes,
    layer: &LayerTensors<&[f32]>,
    saved: &LayerTape,
    (input, packing): (&TrainingInput, &Packing),
    mut d_output: Vec<f32>,
    grads: &mut LayerTensors<&mut [f32]>,
) -> Vec<f32> {
    let (hidden, inner) = (sizes.hidden, sizes.intermediate);
    let (rows, origins) = (packing.rows(), &packing.origins);
    // Output block: layer norm, residual, dropout, dense, activation, dense.
    rows::layer_norm_backward(
        &mut d_output,
        &saved.output_norm,
        layer.output_norm.scale,
        &mut grads.output_norm,
    );
    let mut d_attended = d_output.clone();
    rows::apply_dropout(&mut d_output, &saved.output_dropout, origins);
    rows::dense_parameter_gradients(&d_output, (hidden, 0), &saved.activated, &mut grads.output);
    let mut d_intermediate = vec![0f32; rows * inner];
    rows::dense_input_gradient(
        &d_output,
        (hidden, 0),
        layer.output.weight,
        &mut d_intermediate,
        false,
    );
    rows::activation_backward(&mut d_intermediate, &saved.intermediate, sizes.activation);
    rows::dense_parameter_gradients(
        &d_intermediate,
        (inner, 0),
        &saved.attended,
        &mut grads.intermediate,
    );
    rows::dense_input_gradient(
        &d_intermediate,
        (inner, 0),
        layer.intermediate.weight,
        &mut d_attended,
        true,
    );
    drop(d_intermediate);
    // Attention block: layer norm, residual, dropout, dense, attention, q/k/v.
    rows::layer_norm_backward(
        &mut d_attended,
        &saved.attention_norm,
        layer.attention_norm.scale,
        &mut grads.attention_norm,
    );
    let mut d_input = d_attended.clone();
    rows::apply_dropout(&mut d_attended, &saved.attention_dropout, origins);
    rows::dense_parameter_gradients(
        &d_attended,
        (hidden, 0),
        &saved.context,
        &mut grads.attention_output,
    );
    let mut d_context = vec![0f32; rows * hidden];
    rows::dense_input_gradient(
        &d_attended,
        (hidden, 0),
        layer.attention_output.weight,
        &mut d_context,
        false,
    );
    let mut d_qkv = vec![0f32; rows * 3 * hidden];
    attention::backward(
        Geometry {
            tokens: input.tokens,
            heads: sizes.heads,
            head_size: sizes.head_size,
        },
        (&packing.starts, &input.lengths),
        &saved.qkv,
        &saved.probability_dropout,
        &saved.probabilities,
        &d_context,
        &mut d_qkv,
    );
    let parts = [
        (&layer.query, &mut grads.query),
        (&layer.key, &mut grads.key),
        (&layer.value, &mut grads.value),
    ];
    for (part, (dense, grads)) in parts.into_iter().enumerate() {
        let columns = (3 * hidden, part * hidden);
        rows::dense_parameter_gradients(&d_qkv, columns, &saved.input, grads);
        rows::dense_input_gradient(&d_qkv, columns, dense.weight, &mut d_input, true);
    }
    d_input
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(lengths: &[usize], tokens: usize) -> TrainingInput {
        let batch = lengths.len();
        TrainingInput {
            batch,
            tokens,
            ids: vec![0; batch * tokens],
            token_types: vec![0; batch * tokens],
            lengths: lengths.to_vec(),
        }
    }

    #[test]
    fn packing_keeps_the_real_rows_in_order() {
        let packing = Packing::of(&input(&[4, 1, 2], 4));
        assert_eq!(packing.origins, vec![0, 1, 2, 3, 4, 8, 9]);
        assert_eq!(packing.starts, vec![0, 4, 5, 7]);
        assert_eq!(packing.rows(), 7);
    }

    #[test]
    fn unpacking_zeroes_padding_and_packing_takes_it_back() {
        let packing = Packing::of(&input(&[1, 3], 3));
        let packed: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let padded = packing.unpack(&packed, 2, 6);
        assert_eq!(
            padded,
            vec![1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
        );
        assert_eq!(packing.pack(&padded, 2), packed);
    }
}
