/*!
Models: BERT on candle with every layer exposed, tokenization, pooling and checkpoint loading.

This module owns turning text into hidden states and pooled sentence embeddings, and
cross-encoder scores of (query, document) pairs, and the encoder's training pass
([`backprop`]: forward with dropout, hand-written backward). It reads checkpoints in Hugging
Face layout (local directories or the Hub cache) but must not know about datasets, retrieval,
measures or optimisers.

The model code mirrors the Hugging Face module tree (`embeddings`, `encoder.layer.{i}`,
`pooler`, `classifier`) so that tensor names fall out of the struct layout, as in candle's own
model code; speed work belongs behind small named functions, not inside the layer code.
*/

pub mod backprop;
mod bert;
mod config;
mod dropout;
mod encode;
mod error;
pub mod hub;
mod kernels;
pub mod layout;

/// See [`kernels::openblas::core_upgrade`]: the OpenBLAS kernel family to force, if any.
#[cfg(feature = "openblas")]
pub fn openblas_core_upgrade() -> Option<&'static str> {
    kernels::openblas::core_upgrade()
}
mod loading;
mod pooling;
pub mod random;
mod tokenize;

pub use bert::{BertModel, ClassifierHead, HiddenStates};
pub use config::{Activation, BertConfig};
pub use dropout::Dropout;
pub use encode::{
    encode_mean, encode_shard, encode_texts, Embeddings, EncodeOptions, LayerPooling,
    PooledEmbeddings, Shard,
};
pub use error::ModelError;
pub use kernels::{bf16::KERNEL_VARIABLE as BF16_KERNEL_VARIABLE, Bf16Kernel, Precision};
pub(crate) use kernels::{dispatch, target_builds};
pub use loading::{check_checkpoint, load_model, LoadedModel, ModelFiles, TensorNaming};
pub(crate) use loading::{expected_tensors, read_checkpoint, Checkpoint};
pub use pooling::{l2_normalize_rows, pool, Pooling};
pub use tokenize::{Batch, InputFormat, TextTokenizer, TokenizedText};
