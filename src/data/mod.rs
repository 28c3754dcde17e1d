/*!
Datasets: everything that reads or writes collections, judgments and runs on disk.

This module owns the on-disk formats (BEIR layout, raw SMART collections, raw TREC
collections in SGML-style files, TREC run and qrels files), locating datasets by name in a data directory, and fetching them from BEIR's servers
or a local mirror with checksum verification, and the train/test overlap rule (`overlap.rs`:
which evaluated queries a training split has in effect already shown a model). It must not encode, retrieve or score: it hands
plain in-memory collections to the rest of the crate.
*/

use std::collections::BTreeMap;

pub mod beir;
mod error;
pub mod fetch;
pub mod overlap;
pub mod sgml;
pub mod smart;
pub mod trec;

pub use error::DataError;
pub use overlap::{overlap, Overlap, OverlapError};

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

    /// The document's title and each sentence of its text, the short texts a student
    /// distils on besides whole documents. A sentence ends at `.`, `!` or `?` (and any
    /// closing brackets or quotes) followed by white space and an upper-case letter, a digit
    /// or an opening bracket (so "e.g. the" and "3.5 mg" do not end one); pieces of fewer
    /// than [`MIN_SENTENCE_WORDS`] words are left out, as headings and fragments.
    pub fn passages(&self) -> Vec<&str> {
        let title = self.title.trim();
        let mut passages: Vec<&str> = Vec::new();
        if !title.is_empty() {
            passages.push(title);
        }
        passages.extend(
            sentences(&self.text).filter(|s| s.split_whitespace().count() >= MIN_SENTENCE_WORDS),
        );
        passages
    }
}

/// Shorter pieces of a text are not sentences of their own for [`Document::passages`].
pub const MIN_SENTENCE_WORDS: usize = 4;

/// The sentences of `text`, trimmed, in order (see [`Document::passages`] for the rule).
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    let mut starts = vec![0];
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        while chars
            .peek()
            .is_some_and(|(_, c)| matches!(c, ')' | ']' | '"' | '\''))
        {
            chars.next();
        }
        if !chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            continue;
        }
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if let Some(&(at, next)) = chars.peek() {
            if next.is_uppercase() || next.is_ascii_digit() || matches!(next, '(' | '[') {
                starts.push(at);
            }
        }
    }
    starts.push(text.len());
    let bounds: Vec<(usize, usize)> = starts.windows(2).map(|w| (w[0], w[1])).collect();
    bounds
        .into_iter()
        .map(move |(start, end)| text[start..end].trim())
        .filter(|piece| !piece.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn document(title: &str, text: &str) -> Document {
        Document {
            id: "d".to_string(),
            title: title.to_string(),
            text: text.to_string(),
        }
    }

    #[test]
    fn passages_are_the_title_and_each_sentence() {
        let doc = document(
            " Aspirin and the heart ",
            "Aspirin lowers the risk of stroke.  It does so at 3.5 mg, e.g. in trials! \
             (Results vary by age.) Why does it work? 12 trials agree on that",
        );
        assert_eq!(
            doc.passages(),
            [
                "Aspirin and the heart",
                "Aspirin lowers the risk of stroke.",
                "It does so at 3.5 mg, e.g. in trials!",
                "(Results vary by age.)",
                "Why does it work?",
                "12 trials agree on that",
            ]
        );
    }

    #[test]
    fn short_pieces_and_empty_titles_are_left_out() {
        let doc = document("", "Background. Methods: we looked at it. Conclusion.");
        assert_eq!(doc.passages(), ["Methods: we looked at it."]);
        assert!(document("", "").passages().is_empty());
    }
}
