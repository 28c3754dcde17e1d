//! Which files make up a model or a dataset, and one hash over their contents.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::data::beir;

/// A model or dataset the plan needs but cannot place.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0} is used by a cell but was not resolved")]
    Unresolved(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The files repro reads from a model directory: its config, weights and tokenizer.
pub fn model_files(dir: &Path) -> Vec<PathBuf> {
    crate::model::layout::defining_files(dir)
}

/// The files of a BEIR dataset that one split reads.
pub fn dataset_files(dir: &Path, split: &str) -> Vec<PathBuf> {
    vec![
        dir.join(beir::CORPUS_FILE),
        dir.join(beir::QUERIES_FILE),
        beir::qrels_path(dir, split),
    ]
}

/// One hash over named file hashes: sha256 of `name<TAB>sha256\n` lines, sorted by name.
pub fn content_hash(files: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = files.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for (name, sha) in sorted {
        hasher.update(format!("{name}\t{sha}\n"));
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_ignores_order_but_not_content() {
        let a = vec![
            ("x".to_string(), "1".to_string()),
            ("y".to_string(), "2".to_string()),
        ];
        let b = vec![a[1].clone(), a[0].clone()];
        assert_eq!(content_hash(&a), content_hash(&b));
        let c = vec![a[0].clone(), ("y".to_string(), "3".to_string())];
        assert_ne!(content_hash(&a), content_hash(&c));
    }
}
