/*!
Datasets: everything that reads or writes collections, judgments and runs on disk.

This module owns the on-disk formats (BEIR layout, raw SMART collections, raw TREC
collections in SGML-style files, TREC run and qrels files), locating datasets by name in a data directory, and fetching them from BEIR's servers
or a local mirror with checksum verification. It must not encode, retrieve or score: it hands
plain in-memory collections to the rest of the crate.
*/

use std::collections::BTreeMap;

pub mod beir;
mod error;
pub mod fetch;
pub mod sgml;
pub mod smart;
pub mod trec;

pub use error::DataError;

/// Relevance judgments: query id → (document id → relevance grade).
///
/// Grades are kept as written; measures decide what counts as relevant (grade ≥ 1, as
/// trec_eval's default relevance level).
pub type Qrels = BTreeMap<String, BTreeMap<String, i32>>;

/// A ranked run: query id → (document id → score). Ranks are derived from the scores
/// (trec_eval ignores the rank column), so a run holds no rank.
pub type Run = BTreeMap<String, BTreeMap<String, f64>>;

/// One corpus document, BEIR style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub id: String,
    pub title: String,
    pub text: String,
}

impl Document {
    /// The text an encoder sees: `title + " " + text`, trimmed, exactly as BEIR's
    /// sentence-transformers wrapper (and MTEB) build it.
    pub fn full_text(&self) -> String {
        format!("{} {}", self.title, self.text).trim().to_string()
    }
}

/// One query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: String,
    pub text: String,
}

/// A dataset loaded for one split: the corpus, the queries judged in that split, and the
/// split's judgments.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Short name (directory name for datasets found by name).
    pub name: String,
    /// Directory the dataset was read from (BEIR layout).
    pub dir: std::path::PathBuf,
    /// The split whose qrels were read (`test`, `train`, `dev`).
    pub split: String,
    pub corpus: Vec<Document>,
    /// Only the queries that have at least one judgment in `qrels`, in file order.
    pub queries: Vec<Query>,
    pub qrels: Qrels,
}
