/*!
Train/test overlap: which evaluated queries a model trained on a dataset's training split has,
in effect, already seen.

This module owns the overlap rule. An evaluated query (one judged in the evaluated split)
overlaps with the training split when

* one of its relevant documents (grade > 0) is a **train positive** (a document judged with
  grade > 0 for some query of the training split), or
* its text **repeats** the text of a training query (one judged in the training split), after
  Unicode-aware lower-casing and collapsing white space; exact repeats (byte for byte) are
  told apart.

The evaluated queries with neither kind of overlap are the **unseen** subset. The rule is
[`measure`] over in-memory judgments and queries; [`overlap`] reads them from a BEIR
directory. This module must not decide which split is trained on (its callers pass it), nor
encode, retrieve or score.
*/

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{beir, DataError, Qrels, Query};

/// The overlap of one evaluated split with one training split of a dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Overlap {
    /// The evaluated queries (judged in the evaluated split), in `queries.jsonl` order.
    pub evaluated: Vec<String>,
    /// The evaluated queries with a relevant document that is a train positive, with those
    /// documents; in `evaluated` order.
    pub train_positives: Vec<PositiveOverlap>,
    /// The evaluated queries whose text repeats a training query's; in `evaluated` order.
    pub repeated_text: Vec<RepeatedText>,
    /// The evaluated queries with neither kind of overlap, in `evaluated` order.
    pub unseen: Vec<String>,
}

/// An evaluated query whose relevant documents include train positives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PositiveOverlap {
    pub query: String,
    /// Its relevant documents that are train positives, sorted.
    pub documents: Vec<String>,
}

/// An evaluated query whose text repeats a training query's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepeatedText {
    pub query: String,
    /// The training queries with the same text (lower-cased, white space collapsed), in
    /// `queries.jsonl` order.
    pub train_queries: Vec<String>,
    /// Whether one of them is the same text byte for byte.
    pub exact: bool,
}

impl Overlap {
    /// How many of the repeated texts are repeated byte for byte.
    pub fn exact_repeats(&self) -> usize {
        self.repeated_text
            .iter()
            .filter(|repeat| repeat.exact)
            .count()
    }

    /// The unseen queries as a set, for filtering judgments.
    pub fn unseen_set(&self) -> BTreeSet<&str> {
        self.unseen.iter().map(String::as_str).collect()
    }
}

/// Which side of the comparison a split is on, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitRole {
    Evaluated,
    Training,
}

impl std::fmt::Display for SplitRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitRole::Evaluated => "evaluated",
            SplitRole::Training => "training",
        })
    }
}

/// Why the overlap of two splits could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum OverlapError {
    #[error(
        "the {role} split `{split}` has no judgments: {} is missing (splits: {available})",
        path.display()
    )]
    MissingJudgments {
        role: SplitRole,
        split: String,
        path: PathBuf,
        /// The splits the dataset has judgments for, comma-separated (`none` when none).
        available: String,
    },
    /// Every query of a split trivially repeats itself: comparing a split with itself is a
    /// mistake, not a measurement.
    #[error("the evaluated split and the training split are both `{split}`")]
    SameSplit { split: String },
    #[error("{}: query `{query}` is judged but not in {}", path.display(), beir::QUERIES_FILE)]
    UnknownQuery { path: PathBuf, query: String },
    #[error(transparent)]
    Data(#[from] DataError),
}

/// The overlap of split `split` of the BEIR directory `dir` with its split `train_split`
/// (see the module documentation for the rule).
pub fn overlap(dir: &Path, split: &str, train_split: &str) -> Result<Overlap, OverlapError> {
    if split == train_split {
        return Err(OverlapError::SameSplit {
            split: split.to_string(),
        });
    }
    let evaluated = read_judgments(dir, split, SplitRole::Evaluated)?;
    let training = read_judgments(dir, train_split, SplitRole::Training)?;
    let queries = beir::read_queries(&dir.join(beir::QUERIES_FILE))?;
    let known: BTreeSet<&str> = queries.iter().map(|query| query.id.as_str()).collect();
    for (name, qrels) in [(split, &evaluated), (train_split, &training)] {
        if let Some(query) = qrels.keys().find(|id| !known.contains(id.as_str())) {
            return Err(OverlapError::UnknownQuery {
                path: beir::qrels_path(dir, name),
                query: query.clone(),
            });
        }
    }
    Ok(measure(&queries, &evaluated, &training))
}

/// A split's judgments, or an error naming the missing file and the splits there are.
fn read_judgments(dir: &Path, split: &str, role: SplitRole) -> Result<Qrels, OverlapError> {
    let path = beir::qrels_path(dir, split);
    if !path.is_file() {
        let available = beir::splits(dir).unwrap_or_default();
        return Err(OverlapError::MissingJudgments {
            role,
            split: split.to_string(),
            path,
            available: match available.is_empty() {
                true => "none".to_string(),
                false => available.join(", "),
            },
        });
    }
    Ok(beir::read_qrels(&path)?)
}

/// The overlap rule over judgments already read: `queries` gives every query's text (a
/// judged query missing from it has no text, so it cannot repeat one).
pub fn measure(queries: &[Query], evaluated: &Qrels, training: &Qrels) -> Overlap {
    let positives: BTreeSet<&str> = training.values().flat_map(relevant).collect();
    let mut train_texts: HashMap<String, Vec<&Query>> = HashMap::new();
    for query in queries.iter().filter(|q| training.contains_key(&q.id)) {
        train_texts
            .entry(normalized(&query.text))
            .or_default()
            .push(query);
    }
    let mut overlap = Overlap::default();
    for query in queries.iter() {
        let Some(judged) = evaluated.get(&query.id) else {
            continue;
        };
        overlap.evaluated.push(query.id.clone());
        let documents: Vec<String> = relevant(judged)
            .filter(|doc| positives.contains(doc))
            .map(str::to_string)
            .collect();
        let seen_documents = !documents.is_empty();
        if seen_documents {
            overlap.train_positives.push(PositiveOverlap {
                query: query.id.clone(),
                documents,
            });
        }
        let repeat = train_texts
            .get(&normalized(&query.text))
            .map(|same| RepeatedText {
                query: query.id.clone(),
                train_queries: same.iter().map(|train| train.id.clone()).collect(),
                exact: same.iter().any(|train| train.text == query.text),
            });
        let seen_text = repeat.is_some();
        overlap.repeated_text.extend(repeat);
        if !seen_documents && !seen_text {
            overlap.unseen.push(query.id.clone());
        }
    }
    overlap
}

/// The documents judged relevant (grade > 0), in id order.
fn relevant(docs: &BTreeMap<String, i32>) -> impl Iterator<Item = &str> {
    docs.iter()
        .filter(|(_, &grade)| grade > 0)
        .map(|(doc, _)| doc.as_str())
}

/// A query's text as compared for repeats: lower-cased (Unicode-aware), white space runs
/// collapsed to one space, no white space at either end.
fn normalized(text: &str) -> String {
    text.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queries(texts: &[(&str, &str)]) -> Vec<Query> {
        texts
            .iter()
            .map(|(id, text)| Query {
                id: id.to_string(),
                text: text.to_string(),
            })
            .collect()
    }

    fn qrels(judgments: &[(&str, &str, i32)]) -> Qrels {
        let mut qrels = Qrels::new();
        for (query, doc, grade) in judgments {
            qrels
                .entry(query.to_string())
                .or_default()
                .insert(doc.to_string(), *grade);
        }
        qrels
    }

    /// Test queries: `a` shares a relevant document with training, `b` repeats a training
    /// query's text in other case and spacing, `c` has neither, `d` is judged relevant to a
    /// document training judged not relevant (0), `e` is relevant-judged 0 to a train
    /// positive. Training: `t1`, `t2`.
    fn example() -> Overlap {
        let queries = queries(&[
            ("t1", "Aspirin lowers stroke risk"),
            ("a", "statins and the liver"),
            ("b", "  ASPIRIN  lowers\tstroke RISK "),
            ("c", "vitamin D and bones"),
            ("d", "coffee and sleep"),
            ("e", "tea and sleep"),
            ("t2", "Émile's claim about sleep"),
        ]);
        let evaluated = qrels(&[
            ("a", "doc1", 1),
            ("a", "doc9", 2),
            ("b", "doc5", 1),
            ("c", "doc6", 1),
            ("d", "doc7", 1),
            ("e", "doc1", 0),
            ("e", "doc8", 1),
        ]);
        let training = qrels(&[("t1", "doc1", 1), ("t2", "doc7", 0), ("t2", "doc9", 3)]);
        measure(&queries, &evaluated, &training)
    }

    #[test]
    fn a_relevant_train_positive_is_overlap_with_its_documents() {
        let overlap = example();
        assert_eq!(overlap.evaluated, ["a", "b", "c", "d", "e"]);
        assert_eq!(
            overlap.train_positives,
            [PositiveOverlap {
                query: "a".into(),
                documents: vec!["doc1".into(), "doc9".into()],
            }]
        );
    }

    #[test]
    fn a_text_repeated_in_other_case_and_spacing_is_overlap_but_not_exact() {
        let overlap = example();
        assert_eq!(
            overlap.repeated_text,
            [RepeatedText {
                query: "b".into(),
                train_queries: vec!["t1".into()],
                exact: false,
            }]
        );
        assert_eq!(overlap.exact_repeats(), 0);
    }

    #[test]
    fn grade_zero_on_either_side_is_not_overlap() {
        // `d`'s document was judged 0 in training; `e` judged a train positive 0.
        assert_eq!(example().unseen, ["c", "d", "e"]);
    }

    #[test]
    fn exact_repeats_and_unicode_case_are_recognised() {
        let queries = queries(&[
            ("t1", "Émile's claim"),
            ("t2", "émile's   CLAIM"),
            ("x", "ÉMILE'S claim"),
            ("y", "Émile's claim"),
        ]);
        let training = qrels(&[("t1", "d", 0), ("t2", "d", 0)]);
        let evaluated = qrels(&[("x", "d", 1), ("y", "d", 1)]);
        let overlap = measure(&queries, &evaluated, &training);
        let found: Vec<(&str, Vec<String>, bool)> = overlap
            .repeated_text
            .iter()
            .map(|r| (r.query.as_str(), r.train_queries.clone(), r.exact))
            .collect();
        let both = vec!["t1".to_string(), "t2".to_string()];
        assert_eq!(
            found,
            [("x", both.clone(), false), ("y", both, true)],
            "Unicode lower-casing folds É to é"
        );
        assert_eq!(overlap.exact_repeats(), 1);
        assert!(overlap.unseen.is_empty());
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn a_missing_training_split_is_named_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("queries.jsonl", "{\"_id\": \"q\", \"text\": \"x\"}\n"),
                ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq\td\t1\n"),
            ],
        );
        let err = overlap(dir.path(), "test", "train").unwrap_err();
        assert!(matches!(
            err,
            OverlapError::MissingJudgments {
                role: SplitRole::Training,
                ..
            }
        ));
        let message = err.to_string();
        assert!(
            message.contains("training split `train` has no judgments"),
            "{message}"
        );
        assert!(message.contains("qrels/train.tsv is missing"), "{message}");
        assert!(message.contains("(splits: test)"), "{message}");
        assert!(matches!(
            overlap(dir.path(), "test", "test"),
            Err(OverlapError::SameSplit { .. })
        ));
    }

    #[test]
    fn overlap_reads_a_beir_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                (
                    "queries.jsonl",
                    "{\"_id\": \"t\", \"text\": \"x\"}\n{\"_id\": 1, \"text\": \"y\"}\n\
                     {\"_id\": 2, \"text\": \"X\"}\n",
                ),
                (
                    "qrels/test.tsv",
                    "query-id\tcorpus-id\tscore\n1\td\t1\n2\te\t1\n",
                ),
                ("qrels/train.tsv", "query-id\tcorpus-id\tscore\nt\td\t1\n"),
            ],
        );
        let found = overlap(dir.path(), "test", "train").unwrap();
        assert_eq!(found.evaluated, ["1", "2"]);
        assert_eq!(found.train_positives.len(), 1);
        assert_eq!(found.repeated_text[0].train_queries, ["t"]);
        assert!(found.unseen.is_empty());
        write(
            dir.path(),
            &[(
                "qrels/train.tsv",
                "query-id\tcorpus-id\tscore\nghost\td\t1\n",
            )],
        );
        let err = overlap(dir.path(), "test", "train").unwrap_err();
        assert!(err.to_string().contains("query `ghost` is judged"), "{err}");
    }
}
