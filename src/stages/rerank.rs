//! The `rerank` stage: a cross encoder re-scores the top of an eval task's run, and the
//! re-ranked run is scored with the same measures, reported under `reranked_` names so that a
//! cell shows first-stage and re-ranked quality side by side.
//!
//! Only each query's top `top_k` (in the first stage's ranking order) are re-scored; the
//! documents below keep their first-stage order after them, so that measures deeper than
//! `top_k` (recall@100 after re-ranking the top 10) stay defined and comparable. Because a run
//! holds scores, not ranks, that tail is written with placeholder scores below every
//! re-ranked score, decreasing with the first-stage rank: the file's order is the ranking,
//! the tail's scores are not the first stage's.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use candle_core::Device;

use super::tasks::{read_split_qrels, upstream_dir, RUN_FILE};
use super::{Observer, StageError};
use crate::data::{beir, trec, Run};
use crate::eval::measures::{evaluate, parse_measures, rank_documents};
use crate::model::{load_model, Batch, BertModel, ModelError, TokenizedText};
use crate::plan::{Artifact, RerankSpec, Stage, TaskOutcome, UpstreamDirs};

/// The prefix of every measure a rerank task reports.
pub const RERANKED_PREFIX: &str = "reranked_";

/// Re-ranks the run of the upstream eval task with the cross encoder of `spec`.
///
/// Upstream: the `eval` task whose `run.trec` is re-ranked, and the CE's `train_ce` task when
/// `spec.cross_encoder` is a trained model.
pub fn run_rerank(
    spec: &RerankSpec,
    upstream: &UpstreamDirs,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let settings = &spec.settings;
    settings.check().map_err(StageError::Setting)?;
    let measures = parse_measures(&spec.measures)?;
    let first_stage = upstream_dir(upstream, Stage::Rerank, Stage::Eval)?.join(RUN_FILE);
    let first = trec::read_run(&first_stage)?;
    let ce_dir = spec
        .cross_encoder
        .resolve(upstream)
        .map_err(StageError::Setting)?;
    let loaded = load_model(&ce_dir, settings.max_len, None, &Device::Cpu)?;
    if !loaded.model.has_classifier() {
        return Err(StageError::Setting(format!(
            "{} has no classification head, so it cannot re-rank (a cross encoder is needed)",
            ce_dir.display()
        )));
    }
    let dataset = beir::load(&spec.dataset_dir, &spec.split)?;
    let queries: HashMap<&str, &str> = dataset
        .queries
        .iter()
        .map(|q| (q.id.as_str(), q.text.as_str()))
        .collect();
    let documents: HashMap<&str, &crate::data::Document> =
        dataset.corpus.iter().map(|d| (d.id.as_str(), d)).collect();

    let rankings = split_rankings(&first, settings.top_k);
    let mut pairs = Vec::new();
    for ranking in &rankings {
        let query = queries.get(ranking.query).ok_or_else(|| {
            StageError::Setting(format!(
                "{}: query `{}` is not a judged query of split `{}` of {}",
                first_stage.display(),
                ranking.query,
                spec.split,
                spec.dataset_dir.display()
            ))
        })?;
        for doc in &ranking.head {
            let document = documents.get(doc).ok_or_else(|| {
                StageError::Setting(format!(
                    "{}: document `{doc}` is not in the corpus of {}",
                    first_stage.display(),
                    spec.dataset_dir.display()
                ))
            })?;
            pairs.push(loaded.tokenizer.encode_pair(query, &document.full_text())?);
        }
    }

    observer.phase("rerank", pairs.len());
    let started = Instant::now();
    let scores = score_pairs(
        &loaded.model,
        loaded.tokenizer.pad_id(),
        &pairs,
        settings.batch,
        &mut |done| observer.advance(done),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let run = reranked_run(&rankings, &scores);

    observer.phase("eval", 1);
    let run_path = out.join(RUN_FILE);
    trec::write_run(&run_path, &run, "repro-rerank")?;
    let qrels = read_split_qrels(&spec.dataset_dir, &spec.split)?;
    let evaluation = evaluate(&qrels, &run, &measures, false)?;
    observer.advance(1);

    let prefixed = |values: BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        values
            .into_iter()
            .map(|(measure, value)| (format!("{RERANKED_PREFIX}{measure}"), value))
            .collect()
    };
    let mut metrics = prefixed(evaluation.aggregate);
    metrics.insert("rerank_pairs".to_string(), pairs.len() as f64);
    metrics.insert("rerank_seconds".to_string(), seconds);
    let rate = if seconds > 0.0 {
        pairs.len() as f64 / seconds
    } else {
        0.0
    };
    metrics.insert("pairs_per_second".to_string(), rate);
    let per_query = evaluation
        .per_query
        .into_iter()
        .map(|(query, values)| (query, prefixed(values)))
        .collect();
    let bytes = std::fs::metadata(&run_path).map(|m| m.len()).unwrap_or(0);
    Ok(TaskOutcome {
        seconds: 0.0,
        metrics,
        per_query,
        artifacts: vec![Artifact {
            name: "run".to_string(),
            path: RUN_FILE.to_string(),
            bytes,
        }],
        steps: Vec::new(),
    })
}

/// One query of the first-stage run in its ranking order, cut at `top_k`.
#[derive(Debug, Clone, PartialEq)]
struct Ranking<'a> {
    query: &'a str,
    /// The documents re-scored, first-stage order.
    head: Vec<&'a str>,
    /// The documents below, first-stage order.
    tail: Vec<&'a str>,
}

/// Every query of `run` in id order, its documents in trec_eval's ranking order (the order
/// the run file was written in and measures see), split after `top_k`.
fn split_rankings(run: &Run, top_k: usize) -> Vec<Ranking<'_>> {
    run.iter()
        .map(|(query, docs)| {
            let ranked: Vec<&str> = rank_documents(docs).into_iter().map(|(d, _)| d).collect();
            let cut = top_k.min(ranked.len());
            Ranking {
                query,
                head: ranked[..cut].to_vec(),
                tail: ranked[cut..].to_vec(),
            }
        })
        .collect()
}

/// The re-ranked run: each head document scored by the cross encoder (`scores` holds the
/// heads' scores in `rankings` order), each tail document at
/// `lowest head score − 1 − its tail position`, which places the tail after every re-ranked
/// document in first-stage order without ties.
fn reranked_run(rankings: &[Ranking<'_>], scores: &[f32]) -> Run {
    let mut run = Run::new();
    let mut next = 0;
    for ranking in rankings {
        let head_scores = &scores[next..next + ranking.head.len()];
        next += ranking.head.len();
        let lowest = head_scores
            .iter()
            .map(|&score| f64::from(score))
            .fold(f64::INFINITY, f64::min);
        let floor = if lowest.is_finite() { lowest } else { 0.0 };
        let mut docs: BTreeMap<String, f64> = ranking
            .head
            .iter()
            .zip(head_scores)
            .map(|(doc, &score)| (doc.to_string(), f64::from(score)))
            .collect();
        for (position, doc) in ranking.tail.iter().enumerate() {
            docs.insert(doc.to_string(), floor - 1.0 - position as f64);
        }
        run.insert(ranking.query.to_string(), docs);
    }
    debug_assert_eq!(next, scores.len());
    run
}

/// Cross-encoder scores of tokenized pairs, in input order. Pairs are batched longest first
/// (ties by position), as the encoder batches texts, so that each batch pads little and the
/// batches are the same on every run.
fn score_pairs(
    model: &BertModel,
    pad_id: u32,
    pairs: &[TokenizedText],
    batch_size: usize,
    on_progress: &mut dyn FnMut(usize),
) -> Result<Vec<f32>, ModelError> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by(|&a, &b| pairs[b].len().cmp(&pairs[a].len()).then(a.cmp(&b)));
    let mut scores = vec![0.0f32; pairs.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let members: Vec<&TokenizedText> = chunk.iter().map(|&i| &pairs[i]).collect();
        let batch = Batch::new(&members, pad_id, &Device::Cpu)?;
        let batch_scores = model.score_pairs(&batch)?;
        for (&index, score) in chunk.iter().zip(batch_scores) {
            scores[index] = score;
        }
        on_progress(chunk.len());
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RerankSettings;
    use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
    use crate::plan::{ModelLocation, TaskSpec, TRAINED_MODEL_DIR};
    use crate::stages::training::tests::tiny_dataset;
    use crate::stages::{run_task, Silent};

    #[test]
    fn tails_keep_first_stage_order_below_every_head() {
        let mut run = Run::new();
        run.insert(
            "q".into(),
            [("a", 0.9), ("b", 0.8), ("c", 0.8), ("d", 0.1), ("e", 0.05)]
                .into_iter()
                .map(|(d, s)| (d.to_string(), s))
                .collect(),
        );
        let rankings = split_rankings(&run, 2);
        // Ties go to the larger id, as trec_eval ranks them.
        assert_eq!(rankings[0].head, vec!["a", "c"]);
        assert_eq!(rankings[0].tail, vec!["b", "d", "e"]);
        let reranked = reranked_run(&rankings, &[-3.0, 2.5]);
        let order: Vec<&str> = rank_documents(&reranked["q"])
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(order, vec!["c", "a", "b", "d", "e"]);
    }

    #[test]
    fn rerank_sorts_the_top_by_cross_encoder_score() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let data = root.join("data");
        tiny_dataset(&data);
        // A cross encoder trained upstream: its model is in the train_ce task's model dir.
        let ce_task = root.join("ce_task");
        let ce_dir = ce_task.join(TRAINED_MODEL_DIR);
        write_random_bert(
            &ce_dir,
            &tiny_config(2, TINY_VOCAB.len()),
            TINY_VOCAB,
            9,
            true,
        )
        .unwrap();
        // A first-stage run over the whole corpus for both test queries.
        let eval = root.join("eval");
        std::fs::create_dir_all(&eval).unwrap();
        let mut first = Run::new();
        for (query, reversed) in [("q1", false), ("q5", true)] {
            let docs = (1..=8)
                .map(|i| {
                    let score = if reversed { i as f64 } else { 10.0 - i as f64 };
                    (format!("d{i}"), score / 10.0)
                })
                .collect();
            first.insert(query.to_string(), docs);
        }
        trec::write_run(&eval.join(RUN_FILE), &first, "first").unwrap();
        let upstream: UpstreamDirs = [(Stage::Eval, eval.clone()), (Stage::TrainCe, ce_task)]
            .into_iter()
            .collect();
        let top_k = 5;
        let spec = RerankSpec {
            cross_encoder: ModelLocation::Trained {
                stage: Stage::TrainCe,
            },
            dataset_dir: data.clone(),
            split: "test".into(),
            settings: RerankSettings {
                model: "ce".into(),
                top_k,
                batch: 3,
                max_len: 32,
            },
            measures: vec!["ndcg_cut.10".into(), "recall.100".into()],
        };
        let out = root.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let outcome = run_task(&TaskSpec::Rerank(spec), &upstream, &out, &Silent).unwrap();
        assert_eq!(outcome.metrics["rerank_pairs"], 10.0);
        assert!(outcome.metrics.contains_key("reranked_ndcg_cut_10"));
        assert!(outcome.metrics.contains_key("reranked_recall_100"));
        assert!(outcome.metrics.contains_key("pairs_per_second"));
        assert!(outcome.per_query["q1"].contains_key("reranked_ndcg_cut_10"));
        assert!(outcome.metrics.keys().all(|name| !name.starts_with("ndcg")));

        // Each pair scored on its own (no padding) by the same model.
        let loaded = load_model(&ce_dir, 32, None, &Device::Cpu).unwrap();
        let dataset = beir::load(&data, "test").unwrap();
        let score = |query: &str, doc: &str| {
            let query = &dataset.queries.iter().find(|q| q.id == query).unwrap().text;
            let doc = dataset.corpus.iter().find(|d| d.id == doc).unwrap();
            let pair = loaded
                .tokenizer
                .encode_pair(query, &doc.full_text())
                .unwrap();
            let batch = Batch::new(&[&pair], loaded.tokenizer.pad_id(), &Device::Cpu).unwrap();
            loaded.model.score_pairs(&batch).unwrap()[0]
        };
        let reranked = trec::read_run(&out.join(RUN_FILE)).unwrap();
        for (query, docs) in &reranked {
            let order: Vec<&str> = rank_documents(docs).into_iter().map(|(d, _)| d).collect();
            let first_order: Vec<&str> = rank_documents(&first[query])
                .into_iter()
                .map(|(d, _)| d)
                .collect();
            let mut head = order[..top_k].to_vec();
            head.sort_unstable();
            let mut first_head = first_order[..top_k].to_vec();
            first_head.sort_unstable();
            assert_eq!(
                head, first_head,
                "{query}: the same documents are re-scored"
            );
            let ce: Vec<f32> = order[..top_k].iter().map(|d| score(query, d)).collect();
            for (doc, expected) in order[..top_k].iter().zip(&ce) {
                assert!((docs[*doc] as f32 - expected).abs() < 1e-4, "{query} {doc}");
            }
            assert!(
                ce.windows(2).all(|w| w[0] >= w[1] - 1e-4),
                "{query}: {ce:?} is not sorted"
            );
            assert_eq!(order[top_k..], first_order[top_k..], "{query}: tail order");
        }
    }
}
