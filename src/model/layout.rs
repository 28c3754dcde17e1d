//! What a Hugging Face model directory holds, by name: the one place that spells the file
//! names repro reads, fetches, hashes and writes.
//!
//! A directory needs a configuration, weights (safetensors, or PyTorch's pickle) and a
//! tokenizer (`tokenizer.json`, or a WordPiece `vocab.txt` with its optional
//! `tokenizer_config.json`). This module knows names only: it opens no file.

use std::path::{Path, PathBuf};

/// The model's configuration.
pub const CONFIG_FILE: &str = "config.json";
/// Weights in safetensors format (preferred when both are present).
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// Weights as a PyTorch pickle.
pub const PICKLE_FILE: &str = "pytorch_model.bin";
/// A fast-tokenizer definition (preferred when both are present).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// A WordPiece vocabulary.
pub const VOCAB_FILE: &str = "vocab.txt";
/// Tokenizer options (`do_lower_case`).
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Special tokens, kept with a tokenizer for other readers.
pub const SPECIAL_TOKENS_FILE: &str = "special_tokens_map.json";

/// The files a model directory needs: the first present of each group.
pub const REQUIRED: &[&[&str]] = &[
    &[CONFIG_FILE],
    &[SAFETENSORS_FILE, PICKLE_FILE],
    &[TOKENIZER_FILE, VOCAB_FILE],
];

/// The tokenizer's files, those a saved model copies from its source.
pub const TOKENIZER_FILES: &[&str] = &[
    TOKENIZER_FILE,
    VOCAB_FILE,
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_FILE,
];

/// The files that define what a model computes, and so its identity: the configuration,
/// the weights and tokenizer the loader reads (the first present of each group) and the
/// tokenizer options. Missing files are left out (the loader reports them).
pub fn defining_files(dir: &Path) -> Vec<PathBuf> {
    let first = |names: &[&str]| {
        names
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
    };
    let mut files = vec![dir.join(CONFIG_FILE)];
    files.extend(first(&[SAFETENSORS_FILE, PICKLE_FILE]));
    files.extend(first(&[TOKENIZER_FILE, VOCAB_FILE]));
    files.extend(first(&[TOKENIZER_CONFIG_FILE]));
    files
}
