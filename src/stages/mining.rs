//! Hard-negative mining for the training stages: a first-stage dual encoder retrieves the top
//! documents of every training query, the query's positives are removed, and negatives are
//! sampled from what is left with a seeded generator.
//!
//! The corpus side is not encoded here: an upstream encode task already holds the retriever's
//! corpus embeddings (`corpus.L{layer}.mean.f32`), so a cross-encoder teacher and the eval of
//! the same retriever share one corpus pass. Only the training queries, which no eval encodes,
//! are encoded here, with the same layer and (mean) pooling. Both sides are L2-normalised, so
//! mining ranks by cosine, as the eval stage does.
//!
//! This module decides which (query, positive, negative) triples exist; it does not build
//! training examples from them (that is [`super::training`]) and does not train.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;

use super::embeddings::{normalize_rows, Encoded};
use super::inputs::io_error;
use super::{Observer, StageError};
use crate::data::{Dataset, Qrels};
use crate::eval::retrieval::{search, BlockSizes};
use crate::model::{encode_mean, load_model, Pooling};
use crate::rng::SplitMix64;
use crate::task::Artifact;

/// Batch size of the query encode: queries are short, and the batch does not change the
/// embeddings (padding is masked), only the speed.
const QUERY_BATCH: usize = 32;

/// Mixed into the task's seed so that mining draws from its own stream, never the same
/// numbers as the training run seeded with the same value.
const MINING_STREAM: u64 = 0x6D69_6E69_6E67_0001;

/// File name of the mined negatives inside a training task's output.
pub(super) const NEGATIVES_FILE: &str = "negatives.tsv";

/// The dual encoder that mines: its checkpoint (for the queries) and the upstream encode
/// task's output (for the corpus).
#[derive(Debug, Clone, Copy)]
pub(super) struct Retriever<'a> {
    pub model_dir: &'a Path,
    /// Hidden state whose mean pooling embeds both sides.
    pub layer: usize,
    pub max_len: usize,
    /// The upstream encode task's output directories (one per shard).
    pub encoded: &'a [PathBuf],
}

/// One sampled negative of one (query, positive) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MinedNegative {
    pub query: String,
    pub positive: String,
    pub negative: String,
    /// 1-based rank of the negative in the retriever's results for the query.
    pub rank: usize,
}

/// A query's retrieved documents, best first.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Candidates {
    pub query: String,
    pub ranked: Vec<String>,
    /// The retriever's cosine of each ranked document.
    pub scores: Vec<f32>,
}

/// Retrieves the top `top_k` documents of every query of `dataset` with `retriever`.
///
/// Fails when the encode task's corpus is not `dataset`'s corpus (same ids in the same
/// order), since mined ids would then name other documents.
pub(super) fn retrieve(
    retriever: Retriever<'_>,
    dataset: &Dataset,
    top_k: usize,
    observer: &dyn Observer,
) -> Result<Vec<Candidates>, StageError> {
    let encoded = Encoded::open(retriever.encoded)?;
    if encoded.check_holds(retriever.layer, Pooling::Mean).is_err() {
        return Err(StageError::Setting(format!(
            "{} holds layers {:?} and poolings {:?}; mining needs layer {} with mean pooling",
            encoded.describe(),
            encoded.manifest.layers,
            encoded.manifest.poolings,
            retriever.layer
        )));
    }
    let manifest = &encoded.manifest;
    let same_corpus = manifest.doc_ids.len() == dataset.corpus.len()
        && manifest
            .doc_ids
            .iter()
            .zip(&dataset.corpus)
            .all(|(id, document)| *id == document.id);
    if !same_corpus {
        return Err(StageError::Setting(format!(
            "{} encodes a corpus of {} documents that is not the corpus of {} ({} documents)",
            encoded.describe(),
            manifest.doc_ids.len(),
            dataset.dir.display(),
            dataset.corpus.len()
        )));
    }
    let mut corpus = encoded.corpus(retriever.layer, Pooling::Mean)?;
    normalize_rows(&mut corpus);

    let loaded = load_model(
        retriever.model_dir,
        retriever.max_len,
        Some(retriever.layer),
        &Device::Cpu,
    )?;
    let texts: Vec<&str> = dataset.queries.iter().map(|q| q.text.as_str()).collect();
    observer.phase("mine", texts.len());
    let queries = encode_mean(
        &loaded.model,
        &loaded.tokenizer,
        &texts,
        retriever.layer,
        QUERY_BATCH,
        true,
        &mut |done| observer.advance(done),
    )?;
    let hits = search(
        &queries,
        &corpus,
        &manifest.doc_ids,
        top_k,
        BlockSizes::default(),
    )?;
    Ok(dataset
        .queries
        .iter()
        .zip(hits)
        .map(|(query, hits)| Candidates {
            query: query.id.clone(),
            ranked: hits
                .iter()
                .map(|hit| manifest.doc_ids[hit.doc].clone())
                .collect(),
            scores: hits.iter().map(|hit| hit.score).collect(),
        })
        .collect())
}

/// The positives of a query: documents judged with a grade above 0, in id order.
pub(super) fn positives<'a>(qrels: &'a Qrels, query: &str) -> Vec<&'a str> {
    qrels
        .get(query)
        .map(|judged| {
            judged
                .iter()
                .filter(|(_, &grade)| grade > 0)
                .map(|(doc, _)| doc.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// Samples `per_positive` negatives for every (query, positive) pair from the query's
/// candidates that are not positives (fewer when fewer remain), without replacement within a
/// pair. Pairs are visited in `candidates` order, then positive id order, all from one
/// generator seeded with `seed`: the same inputs give the same negatives everywhere. Each
/// pair's negatives are listed by rank.
pub(super) fn sample_negatives(
    candidates: &[Candidates],
    qrels: &Qrels,
    per_positive: usize,
    seed: u64,
) -> Vec<MinedNegative> {
    let mut rng = SplitMix64::new(seed ^ MINING_STREAM);
    let mut mined = Vec::new();
    for Candidates { query, ranked, .. } in candidates {
        let positives = positives(qrels, query);
        // (rank, doc id) of every candidate that is not a positive.
        let pool: Vec<(usize, &str)> = ranked
            .iter()
            .enumerate()
            .filter(|(_, doc)| !positives.contains(&doc.as_str()))
            .map(|(index, doc)| (index + 1, doc.as_str()))
            .collect();
        let take = per_positive.min(pool.len());
        for positive in &positives {
            let mut order: Vec<usize> = (0..pool.len()).collect();
            rng.sample_prefix(&mut order, take);
            let mut chosen: Vec<(usize, &str)> = order[..take].iter().map(|&i| pool[i]).collect();
            chosen.sort_unstable();
            mined.extend(chosen.into_iter().map(|(rank, doc)| MinedNegative {
                query: query.clone(),
                positive: positive.to_string(),
                negative: doc.to_string(),
                rank,
            }));
        }
    }
    mined
}

/// Writes `mined` as `negatives.tsv` in `out` (header, then one line per sampled negative:
/// query id, negative doc id, its retriever rank, the positive it was sampled for), so that
/// what a model was trained on can be inspected and reproduced.
pub(super) fn write_negatives(out: &Path, mined: &[MinedNegative]) -> Result<Artifact, StageError> {
    let path = out.join(NEGATIVES_FILE);
    crate::util::write_atomic_with(&path, |file| {
        writeln!(file, "query-id\tdoc-id\trank\tpositive-id")?;
        for negative in mined {
            writeln!(
                file,
                "{}\t{}\t{}\t{}",
                negative.query, negative.negative, negative.rank, negative.positive
            )?;
        }
        Ok(())
    })
    .map_err(io_error(&path))?;
    let bytes = std::fs::metadata(&path).map_err(io_error(&path))?.len();
    Ok(Artifact {
        name: NEGATIVES_FILE.to_string(),
        path: NEGATIVES_FILE.to_string(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates() -> (Vec<Candidates>, Qrels) {
        let candidate = |query: &str, ids: &[&str]| Candidates {
            query: query.into(),
            ranked: ids.iter().map(|id| id.to_string()).collect(),
            scores: (0..ids.len())
                .map(|rank| 1.0 - rank as f32 / 10.0)
                .collect(),
        };
        let candidates = vec![
            candidate("q1", &["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"]),
            candidate("q2", &["d5", "d9", "d3"]),
            // Judged, but nothing relevant: no pair, no negative.
            candidate("q3", &["d1", "d2"]),
        ];
        let mut qrels = Qrels::new();
        qrels.insert(
            "q1".into(),
            [("d2".into(), 1), ("d6".into(), 2), ("d4".into(), 0)].into(),
        );
        qrels.insert("q2".into(), [("d9".into(), 1)].into());
        qrels.insert("q3".into(), [("d1".into(), 0)].into());
        (candidates, qrels)
    }

    #[test]
    fn positives_never_become_negatives_and_counts_follow_the_pool() {
        let (candidates, qrels) = candidates();
        let mined = sample_negatives(&candidates, &qrels, 3, 7);
        for negative in &mined {
            assert!(
                !positives(&qrels, &negative.query).contains(&negative.negative.as_str()),
                "{negative:?}"
            );
        }
        // q1: 2 positives × 3 negatives (6 candidates left; the judged-irrelevant d4 may be
        // one); q2: 1 positive, only 2 candidates left; q3: no positive.
        let count = |query: &str, positive: &str| {
            mined
                .iter()
                .filter(|n| n.query == query && n.positive == positive)
                .count()
        };
        assert_eq!((count("q1", "d2"), count("q1", "d6")), (3, 3));
        assert_eq!(count("q2", "d9"), 2);
        assert_eq!(mined.len(), 8);
        assert!(mined.iter().all(|n| n.query != "q3"));
        // Ranks are the retriever's, and no pair repeats a negative.
        for negative in &mined {
            let ranked = &candidates
                .iter()
                .find(|c| c.query == negative.query)
                .unwrap()
                .ranked;
            assert_eq!(ranked[negative.rank - 1], negative.negative);
        }
        let mut pairs: Vec<_> = mined
            .iter()
            .map(|n| (&n.query, &n.positive, &n.negative))
            .collect();
        pairs.sort();
        pairs.dedup();
        assert_eq!(pairs.len(), mined.len());
    }

    #[test]
    fn sampling_is_seeded() {
        let (candidates, qrels) = candidates();
        let a = sample_negatives(&candidates, &qrels, 2, 1);
        assert_eq!(a, sample_negatives(&candidates, &qrels, 2, 1));
        let differs = (2..20).any(|seed| sample_negatives(&candidates, &qrels, 2, seed) != a);
        assert!(differs, "no other seed changed the sample");
    }

    #[test]
    fn the_negatives_file_lists_every_sample() {
        let (candidates, qrels) = candidates();
        let mined = sample_negatives(&candidates, &qrels, 1, 3);
        let dir = tempfile::tempdir().unwrap();
        let artifact = write_negatives(dir.path(), &mined).unwrap();
        let text = std::fs::read_to_string(dir.path().join(NEGATIVES_FILE)).unwrap();
        assert_eq!(artifact.bytes as usize, text.len());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "query-id\tdoc-id\trank\tpositive-id");
        assert_eq!(lines.len(), mined.len() + 1);
        let first = &mined[0];
        assert_eq!(
            lines[1],
            format!(
                "{}\t{}\t{}\t{}",
                first.query, first.negative, first.rank, first.positive
            )
        );
    }
}
