//! Tokenization into model inputs, and padding of tokenized texts into batches.
//!
//! Whatever padding or truncation a `tokenizer.json` carries is replaced: inputs are never
//! padded by the tokenizer (batches are padded to their own longest member) and are truncated
//! at the `max_len` the caller chose, so results do not depend on a checkpoint's packaging.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::layout::{TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, VOCAB_FILE};
use super::ModelError;

/// How one sentence is presented to the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// `[CLS] s [SEP]`, the dual-encoder way.
    Single,
    /// `[CLS] s [SEP] s [SEP]`: the sentence paired with itself, the way the paper feeds one
    /// sentence to a cross encoder. Pooling covers the first segment only.
    SelfPair,
}

impl InputFormat {
    pub const ALL: [InputFormat; 2] = [InputFormat::Single, InputFormat::SelfPair];

    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Single => "single",
            InputFormat::SelfPair => "self_pair",
        }
    }
}

impl std::fmt::Display for InputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InputFormat::ALL
            .into_iter()
            .find(|format| format.name() == s)
            .ok_or_else(|| format!("unknown input format `{s}` (expected single or self_pair)"))
    }
}

/// One tokenized input with what pooling needs to know about each token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// `true` for `[CLS]`, `[SEP]` and other added special tokens.
    pub special: Vec<bool>,
    /// `true` for the tokens sentence pooling covers: everything for `single`, the first
    /// segment (`[CLS] s [SEP]`) for `self_pair`.
    pub pooled: Vec<bool>,
}

impl TokenizedText {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A padded batch on a device: ids, token types and masks, each `(batch, tokens)`.
#[derive(Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    /// 1 for real tokens, 0 for padding (u32).
    pub attention_mask: Tensor,
    /// 1.0 for tokens that `mean`, `max` pool over (f32).
    pub pooled_mask: Tensor,
    /// 1.0 for pooled tokens that are not special tokens, for `mean_nospecial` (f32).
    pub content_mask: Tensor,
}

impl Batch {
    /// Pads `texts` to the longest of them with `pad_id`.
    pub fn new(texts: &[&TokenizedText], pad_id: u32, device: &Device) -> Result<Self, ModelError> {
        let rows = texts.len();
        let width = texts.iter().map(|text| text.len()).max().unwrap_or(0);
        let mut ids = vec![pad_id; rows * width];
        let mut types = vec![0u32; rows * width];
        let mut attention = vec![0u32; rows * width];
        let mut pooled = vec![0f32; rows * width];
        let mut content = vec![0f32; rows * width];
        for (row, text) in texts.iter().enumerate() {
            let start = row * width;
            for position in 0..text.len() {
                let at = start + position;
                ids[at] = text.ids[position];
                types[at] = text.type_ids[position];
                attention[at] = 1;
                if text.pooled[position] {
                    pooled[at] = 1.0;
                    if !text.special[position] {
                        content[at] = 1.0;
                    }
                }
            }
        }
        let shape = (rows, width);
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, shape, device)?,
            token_type_ids: Tensor::from_vec(types, shape, device)?,
            attention_mask: Tensor::from_vec(attention, shape, device)?,
            pooled_mask: Tensor::from_vec(pooled, shape, device)?,
            content_mask: Tensor::from_vec(content, shape, device)?,
        })
    }
}

/// A Hugging Face tokenizer with padding disabled and truncation set to `max_len`.
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    pad_id: u32,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from `dir`, or builds a BERT WordPiece tokenizer from
    /// `vocab.txt` (lower-casing unless `tokenizer_config.json` says `do_lower_case: false`).
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<Self, ModelError> {
        let json = dir.join(TOKENIZER_FILE);
        let vocab = dir.join(VOCAB_FILE);
        let (inner, source) = if json.is_file() {
            let tokenizer = Tokenizer::from_file(&json).map_err(|err| ModelError::Tokenizer {
                path: json.clone(),
                message: err.to_string(),
            })?;
            (tokenizer, json)
        } else if vocab.is_file() {
            (wordpiece_from_vocab(dir, &vocab)?, vocab)
        } else {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                wanted: "tokenizer.json or vocab.txt".to_string(),
            });
        };
        Self::new(inner, max_len, &source)
    }

    fn new(mut inner: Tokenizer, max_len: usize, source: &Path) -> Result<Self, ModelError> {
        if max_len < 4 {
            return Err(ModelError::Setting(format!(
                "max_len {max_len} is too small: a self pair needs at least 4 tokens"
            )));
        }
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|err| ModelError::Tokenizer {
                path: source.to_path_buf(),
                message: err.to_string(),
            })?;
        let pad_id = ["[PAD]", "<pad>"]
            .iter()
            .find_map(|token| inner.token_to_id(token))
            .unwrap_or(0);
        Ok(TextTokenizer {
            inner,
            max_len,
            pad_id,
        })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokenizes one sentence in the given input format.
    pub fn encode(&self, text: &str, format: InputFormat) -> Result<TokenizedText, ModelError> {
        let encoding = match format {
            InputFormat::Single => self.inner.encode(text, true),
            InputFormat::SelfPair => self.inner.encode((text, text), true),
        }
        .map_err(|err| ModelError::Tokenize(err.to_string()))?;
        let special: Vec<bool> = encoding
            .get_special_tokens_mask()
            .iter()
            .map(|&flag| flag == 1)
            .collect();
        let pooled = match format {
            InputFormat::Single => vec![true; encoding.len()],
            InputFormat::SelfPair => encoding.get_type_ids().iter().map(|&t| t == 0).collect(),
        };
        Ok(TokenizedText {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
            special,
            pooled,
        })
    }

    /// Tokenizes a (query, document) pair for a cross encoder: `[CLS] q [SEP] d [SEP]`.
    pub fn encode_pair(&self, query: &str, document: &str) -> Result<TokenizedText, ModelError> {
        let encoding = self
            .inner
            .encode((query, document), true)
            .map_err(|err| ModelError::Tokenize(err.to_string()))?;
        Ok(TokenizedText {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
            special: encoding
                .get_special_tokens_mask()
                .iter()
                .map(|&flag| flag == 1)
                .collect(),
            pooled: vec![true; encoding.len()],
        })
    }
}

fn wordpiece_from_vocab(dir: &Path, vocab: &Path) -> Result<Tokenizer, ModelError> {
    let tokenizer_error = |message: String| ModelError::Tokenizer {
        path: vocab.to_path_buf(),
        message,
    };
    let vocab_str = vocab
        .to_str()
        .ok_or_else(|| tokenizer_error("path is not valid UTF-8".to_string()))?;
    let model = WordPiece::from_file(vocab_str)
        .unk_token("[UNK]".to_string())
        .build()
        .map_err(|err| tokenizer_error(err.to_string()))?;
    let lowercase = read_do_lower_case(&dir.join(TOKENIZER_CONFIG_FILE))?;
    let mut tokenizer = Tokenizer::new(model);
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| tokenizer_error(format!("vocabulary has no {token} token")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(|err| tokenizer_error(err.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".to_string(), sep),
        ("[CLS]".to_string(), cls),
    )));
    Ok(tokenizer)
}

/// `do_lower_case` from `tokenizer_config.json`, defaulting to BERT's `true`.
fn read_do_lower_case(path: &Path) -> Result<bool, ModelError> {
    if !path.is_file() {
        return Ok(true);
    }
    let text = std::fs::read_to_string(path).map_err(|err| ModelError::io(path, err))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
    Ok(value
        .get("do_lower_case")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\nsat\non\nmat\n##s\n.\n";
        std::fs::write(dir.path().join("vocab.txt"), vocab).unwrap();
        dir
    }

    #[test]
    fn single_input_is_cls_text_sep() {
        let dir = vocab_dir();
        let tokenizer = TextTokenizer::from_dir(dir.path(), 16).unwrap();
        let text = tokenizer
            .encode("The cats sat", InputFormat::Single)
            .unwrap();
        assert_eq!(text.ids, vec![2, 5, 6, 10, 7, 3]);
        assert_eq!(text.type_ids, vec![0; 6]);
        assert_eq!(text.special, vec![true, false, false, false, false, true]);
        assert!(text.pooled.iter().all(|&pooled| pooled));
    }

    #[test]
    fn self_pair_pools_the_first_segment_only() {
        let dir = vocab_dir();
        let tokenizer = TextTokenizer::from_dir(dir.path(), 16).unwrap();
        let text = tokenizer.encode("cat sat", InputFormat::SelfPair).unwrap();
        assert_eq!(text.ids, vec![2, 6, 7, 3, 6, 7, 3]);
        assert_eq!(text.type_ids, vec![0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(
            text.pooled,
            vec![true, true, true, true, false, false, false]
        );
    }

    #[test]
    fn truncation_follows_max_len_for_both_formats() {
        let dir = vocab_dir();
        let tokenizer = TextTokenizer::from_dir(dir.path(), 6).unwrap();
        let long = "the cat sat on the mat . the cat sat";
        let single = tokenizer.encode(long, InputFormat::Single).unwrap();
        assert_eq!(single.ids, vec![2, 5, 6, 7, 8, 3]);
        let pair = tokenizer.encode(long, InputFormat::SelfPair).unwrap();
        assert_eq!(pair.len(), 6);
        // Longest-first truncation of equal halves shortens the first segment first, as
        // Hugging Face tokenizers do (the reference fixture checks the same on real text).
        assert_eq!(pair.ids, vec![2, 5, 3, 5, 6, 3]);
    }

    #[test]
    fn batch_pads_to_longest_and_masks_padding() {
        let dir = vocab_dir();
        let tokenizer = TextTokenizer::from_dir(dir.path(), 16).unwrap();
        let short = tokenizer.encode("cat", InputFormat::Single).unwrap();
        let long = tokenizer
            .encode("the cat sat", InputFormat::Single)
            .unwrap();
        let batch = Batch::new(&[&short, &long], tokenizer.pad_id(), &Device::Cpu).unwrap();
        let ids = batch.input_ids.to_vec2::<u32>().unwrap();
        assert_eq!(ids[0], vec![2, 6, 3, 0, 0]);
        let mask = batch.attention_mask.to_vec2::<u32>().unwrap();
        assert_eq!(mask[0], vec![1, 1, 1, 0, 0]);
        let content = batch.content_mask.to_vec2::<f32>().unwrap();
        assert_eq!(content[1], vec![0.0, 1.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn missing_tokenizer_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let message = TextTokenizer::from_dir(dir.path(), 16)
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("tokenizer.json or vocab.txt"), "{message}");
    }
}
