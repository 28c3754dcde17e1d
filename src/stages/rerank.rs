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
//!
//! With `fusion = "interpolate"` the head is also ordered by `(1 − λ)·first + λ·CE`, each
//! score min-max normalised over the query's head, and that run is scored under `fused_`
//! names. λ is the setting's, or the one of a grid that maximises nDCG@10 on the dev split
//! the cross encoder's `train_ce` task left ([`super::dev`]): never a test judgment. The
//! fusion formula and that choice are this module's.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use candle_core::Device;

use super::dev::DevSplit;
use super::eval::{scored_qrels, RUN_FILE};
use super::inputs::upstream_dir;
use super::{Observer, StageError};
use crate::config::Fusion;
use crate::data::trec::rank_documents;
use crate::data::{beir, trec, Run};
use crate::eval::measures::{evaluate, parse_measures};
use crate::eval::Evaluation;
use crate::model::{load_model, Batch, BertModel, LoadedModel, ModelError, TokenizedText};
use crate::task::{Artifact, RerankSpec, Stage, TaskOutcome, UpstreamDirs};

/// The prefix of every measure of the run re-ranked by cross-encoder score alone.
pub const RERANKED_PREFIX: &str = "reranked_";
/// The prefix of every measure of the run re-ranked by the fused score.
pub const FUSED_PREFIX: &str = "fused_";
/// File name of the fused run.
const FUSED_RUN_FILE: &str = "fused_run.trec";
/// λ is chosen among 0, 1/STEPS, …, 1.
const LAMBDA_GRID_STEPS: usize = 20;

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
    let loaded = load_cross_encoder(&ce_dir, settings.max_len)?;
    let rankings = split_rankings(&first, settings.top_k);
    let pairs = candidate_pairs(spec, &first_stage, &rankings, &loaded)?;

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
    let scores: Vec<f64> = scores.into_iter().map(f64::from).collect();
    // Restricted like the upstream eval's, so that no query outside its run is scored.
    let qrels = scored_qrels(&spec.dataset_dir, &spec.split, spec.queries)?;

    observer.phase("eval", 1);
    let mut outcome = TaskOutcome {
        seconds: 0.0,
        metrics: BTreeMap::new(),
        per_query: BTreeMap::new(),
        artifacts: Vec::new(),
        steps: Vec::new(),
    };
    let reranked = reranked_run(&rankings, &scores);
    let evaluation = evaluate(&qrels, &reranked, &measures, false)?;
    record(&mut outcome, RERANKED_PREFIX, evaluation);
    outcome
        .artifacts
        .push(write_run(out, RUN_FILE, &reranked, "repro-rerank")?);
    if settings.fusion == Fusion::Interpolate {
        let lambda = match settings.lambda {
            Some(lambda) => lambda,
            None => {
                let ce_task = upstream_dir(upstream, Stage::Rerank, Stage::TrainCe)?;
                let choice = choose_lambda(&DevSplit::read(ce_task)?, settings.top_k)?;
                outcome.metrics.extend(choice.metrics);
                choice.lambda
            }
        };
        let fused = reranked_run(&rankings, &fuse(&rankings, &scores, lambda));
        let evaluation = evaluate(&qrels, &fused, &measures, false)?;
        record(&mut outcome, FUSED_PREFIX, evaluation);
        outcome.metrics.insert("fusion_lambda".to_string(), lambda);
        outcome
            .artifacts
            .push(write_run(out, FUSED_RUN_FILE, &fused, "repro-fused")?);
    }
    observer.advance(1);

    outcome
        .metrics
        .insert("rerank_pairs".to_string(), pairs.len() as f64);
    outcome
        .metrics
        .insert("rerank_seconds".to_string(), seconds);
    let rate = if seconds > 0.0 {
        pairs.len() as f64 / seconds
    } else {
        0.0
    };
    outcome.metrics.insert("pairs_per_second".to_string(), rate);
    Ok(outcome)
}

/// The cross encoder in `dir`, which must have a classification head.
fn load_cross_encoder(dir: &Path, max_len: usize) -> Result<LoadedModel, StageError> {
    let loaded = load_model(dir, max_len, None, &Device::Cpu)?;
    if !loaded.model.has_classifier() {
        return Err(StageError::Setting(format!(
            "{} has no classification head, so it cannot re-rank (a cross encoder is needed)",
            dir.display()
        )));
    }
    Ok(loaded)
}

/// Every (query, candidate) pair of `rankings`' heads, tokenized for the cross encoder, in
/// ranking order; queries and documents are looked up in the spec's split and corpus, and a
/// missing one is an error naming the first-stage run.
fn candidate_pairs(
    spec: &RerankSpec,
    first_stage: &Path,
    rankings: &[Ranking],
    loaded: &LoadedModel,
) -> Result<Vec<TokenizedText>, StageError> {
    let dataset = beir::load(&spec.dataset_dir, &spec.split)?;
    let queries: HashMap<&str, &str> = dataset
        .queries
        .iter()
        .map(|q| (q.id.as_str(), q.text.as_str()))
        .collect();
    let documents: HashMap<&str, &crate::data::Document> =
        dataset.corpus.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut pairs = Vec::new();
    for ranking in rankings {
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
    Ok(pairs)
}

/// Adds an evaluation's aggregate and per-query values to `outcome` under `prefix`.
fn record(outcome: &mut TaskOutcome, prefix: &str, evaluation: Evaluation) {
    let prefixed = |values: BTreeMap<String, f64>| {
        values
            .into_iter()
            .map(move |(measure, value)| (format!("{prefix}{measure}"), value))
    };
    outcome.metrics.extend(prefixed(evaluation.aggregate));
    for (query, values) in evaluation.per_query {
        outcome
            .per_query
            .entry(query)
            .or_default()
            .extend(prefixed(values));
    }
}

fn write_run(out: &Path, name: &str, run: &Run, tag: &str) -> Result<Artifact, StageError> {
    let path = out.join(name);
    trec::write_run(&path, run, tag)?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(Artifact {
        name: name.trim_end_matches(".trec").to_string(),
        path: name.to_string(),
        bytes,
    })
}

/// The head scores of `(1 − λ)·first + λ·CE`, both min-max normalised over each query's
/// head (a head whose scores are all equal normalises to 0), in `rankings` order.
fn fuse(rankings: &[Ranking<'_>], ce_scores: &[f64], lambda: f64) -> Vec<f64> {
    let mut fused = Vec::with_capacity(ce_scores.len());
    let mut next = 0;
    for ranking in rankings {
        let ce = min_max(&ce_scores[next..next + ranking.head.len()]);
        next += ranking.head.len();
        let first = min_max(&ranking.head_scores);
        fused.extend(
            first
                .iter()
                .zip(&ce)
                .map(|(first, ce)| (1.0 - lambda) * first + lambda * ce),
        );
    }
    fused
}

fn min_max(scores: &[f64]) -> Vec<f64> {
    let low = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let high = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = high - low;
    scores
        .iter()
        .map(|score| {
            if range > 0.0 {
                (score - low) / range
            } else {
                0.0
            }
        })
        .collect()
}

/// λ chosen on a dev split, with the dev measures that chose it.
#[derive(Debug, Clone, PartialEq)]
struct LambdaChoice {
    lambda: f64,
    /// `dev_<measure>` of the first stage (λ = 0), `dev_reranked_…` of the cross encoder
    /// alone and `dev_fused_…` at the chosen λ, over the same `top_k` heads.
    metrics: BTreeMap<String, f64>,
}

/// The λ of the grid whose fused re-ranking of each dev query's first-stage top `top_k`
/// scores the best mean nDCG@10; the smallest such λ when several tie.
fn choose_lambda(dev: &DevSplit, top_k: usize) -> Result<LambdaChoice, StageError> {
    let rankings = split_rankings(&dev.first_stage, top_k);
    let mut ce_scores = Vec::new();
    for ranking in &rankings {
        let scored = dev.cross_encoder.get(ranking.query);
        for doc in &ranking.head {
            let score = scored.and_then(|docs| docs.get(*doc)).ok_or_else(|| {
                StageError::Setting(format!(
                    "the dev split has no cross-encoder score for query `{}` document `{doc}`",
                    ranking.query
                ))
            })?;
            ce_scores.push(*score);
        }
    }
    let mean = |scores: &[f64]| dev.mean(&reranked_run(&rankings, scores));
    let mut best = (0.0, f64::NEG_INFINITY);
    for step in 0..=LAMBDA_GRID_STEPS {
        let lambda = step as f64 / LAMBDA_GRID_STEPS as f64;
        let value = mean(&fuse(&rankings, &ce_scores, lambda))?;
        if value > best.1 {
            best = (lambda, value);
        }
    }
    let name = DevSplit::measure_name()?;
    let metrics = [
        (
            format!("dev_{name}"),
            mean(&fuse(&rankings, &ce_scores, 0.0))?,
        ),
        (format!("dev_{RERANKED_PREFIX}{name}"), mean(&ce_scores)?),
        (format!("dev_{FUSED_PREFIX}{name}"), best.1),
        ("dev_queries".to_string(), rankings.len() as f64),
    ]
    .into_iter()
    .collect();
    Ok(LambdaChoice {
        lambda: best.0,
        metrics,
    })
}

/// One query of the first-stage run in its ranking order, cut at `top_k`.
#[derive(Debug, Clone, PartialEq)]
struct Ranking<'a> {
    query: &'a str,
    /// The documents re-scored, first-stage order.
    head: Vec<&'a str>,
    /// Their first-stage scores.
    head_scores: Vec<f64>,
    /// The documents below, first-stage order.
    tail: Vec<&'a str>,
}

/// Every query of `run` in id order, its documents in trec_eval's ranking order (the order
/// the run file was written in and measures see), split after `top_k`.
fn split_rankings(run: &Run, top_k: usize) -> Vec<Ranking<'_>> {
    run.iter()
        .map(|(query, docs)| {
            let ranked = rank_documents(docs);
            let cut = top_k.min(ranked.len());
            Ranking {
                query,
                head: ranked[..cut].iter().map(|&(doc, _)| doc).collect(),
                head_scores: ranked[..cut].iter().map(|&(_, score)| score).collect(),
                tail: ranked[cut..].iter().map(|&(doc, _)| doc).collect(),
            }
        })
        .collect()
}

/// The re-ranked run: each head document at its new score (`scores` holds the heads' scores
/// in `rankings` order), each tail document at
/// `lowest head score − 1 − its tail position`, which places the tail after every re-ranked
/// document in first-stage order without ties.
fn reranked_run(rankings: &[Ranking<'_>], scores: &[f64]) -> Run {
    let mut run = Run::new();
    let mut next = 0;
    for ranking in rankings {
        let head_scores = &scores[next..next + ranking.head.len()];
        next += ranking.head.len();
        let lowest = head_scores.iter().copied().fold(f64::INFINITY, f64::min);
        let floor = if lowest.is_finite() { lowest } else { 0.0 };
        let mut docs: BTreeMap<String, f64> = ranking
            .head
            .iter()
            .zip(head_scores)
            .map(|(doc, &score)| (doc.to_string(), score))
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
pub(super) fn score_pairs(
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
    use crate::data::Qrels;
    use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
    use crate::stages::training::tests::tiny_dataset;
    use crate::stages::{run_task, Silent};
    use crate::task::{ModelLocation, TaskSpec, TRAINED_MODEL_DIR};

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
        assert_eq!(rankings[0].head_scores, vec![0.9, 0.8]);
        let reranked = reranked_run(&rankings, &[-3.0, 2.5]);
        let order: Vec<&str> = rank_documents(&reranked["q"])
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(order, vec!["c", "a", "b", "d", "e"]);
    }

    fn one_query_run(scores: &[(&str, f64)]) -> Run {
        let docs = scores.iter().map(|&(d, s)| (d.to_string(), s)).collect();
        [("q".to_string(), docs)].into_iter().collect()
    }

    #[test]
    fn fusion_interpolates_min_max_normalised_scores() {
        let first = one_query_run(&[("a", 0.9), ("b", 0.7), ("c", 0.5), ("d", 0.1)]);
        let rankings = split_rankings(&first, 3);
        // CE scores of a, b, c: min-max 0.5, 1, 0; first stage: 1, 0.5, 0.
        let ce = [0.0, 4.0, -4.0];
        let close = |got: Vec<f64>, want: [f64; 3]| {
            let near = got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12);
            assert!(near, "{got:?} vs {want:?}");
        };
        close(
            fuse(&rankings, &ce, 0.25),
            [0.75 + 0.125, 0.375 + 0.25, 0.0],
        );
        close(fuse(&rankings, &ce, 0.0), [1.0, 0.5, 0.0]);
        close(fuse(&rankings, &ce, 1.0), [0.5, 1.0, 0.0]);
        // A head whose scores are all equal contributes nothing rather than dividing by 0.
        close(fuse(&rankings, &[2.0, 2.0, 2.0], 0.5), [0.5, 0.25, 0.0]);
    }

    #[test]
    fn lambda_is_chosen_on_the_dev_split_and_its_measures_reported() {
        // Two dev queries, one positive `p` each, min-max normalised scores (n1, p, n2):
        // q1's first stage ranks p 2nd and its CE 1st: p leads from λ > 1/3 (0.5 + 0.5λ
        // against 1 − λ); q2's first stage ranks p 1st and its CE 2nd: p leads for λ < 1/2
        // (1 − 0.5λ against 0.5 + 0.5λ). Only a blend gets both right.
        let mut dev = DevSplit {
            qrels: Qrels::new(),
            first_stage: Run::new(),
            cross_encoder: Run::new(),
        };
        let scores = |values: [f64; 3]| {
            ["n1", "p", "n2"]
                .iter()
                .map(|d| d.to_string())
                .zip(values)
                .collect::<BTreeMap<_, _>>()
        };
        for (query, first, ce) in [
            ("q1", [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]),
            ("q2", [0.5, 1.0, 0.0], [1.0, 0.5, 0.0]),
        ] {
            dev.qrels
                .insert(query.into(), [("p".to_string(), 1)].into_iter().collect());
            dev.first_stage.insert(query.into(), scores(first));
            dev.cross_encoder.insert(query.into(), scores(ce));
        }
        let choice = choose_lambda(&dev, 3).unwrap();
        // The smallest grid λ above 1/3.
        assert!((choice.lambda - 0.35).abs() < 1e-12, "{choice:?}");
        assert_eq!(choice.metrics["dev_queries"], 2.0);
        let fused = choice.metrics["dev_fused_ndcg_cut_10"];
        assert!(fused > choice.metrics["dev_ndcg_cut_10"], "{choice:?}");
        assert!(
            fused > choice.metrics["dev_reranked_ndcg_cut_10"],
            "{choice:?}"
        );
        assert!((fused - 1.0).abs() < 1e-12, "{choice:?}");

        dev.cross_encoder.get_mut("q2").unwrap().remove("p");
        let missing = choose_lambda(&dev, 3).unwrap_err().to_string();
        assert!(missing.contains("`q2` document `p`"), "{missing}");
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
                ..RerankSettings::default()
            },
            measures: vec!["ndcg_cut.10".into(), "recall.100".into()],
            queries: crate::config::QuerySet::All,
        };
        let out = root.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let outcome = run_task(&TaskSpec::Rerank(spec.clone()), &upstream, &out, &Silent).unwrap();
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

        // Fused at a given weight: both runs, both sets of measures.
        let mut fused_spec = spec.clone();
        fused_spec.settings.fusion = Fusion::Interpolate;
        fused_spec.settings.lambda = Some(0.5);
        let fused_out = root.join("fused");
        std::fs::create_dir_all(&fused_out).unwrap();
        let task = TaskSpec::Rerank(fused_spec.clone());
        let fused = run_task(&task, &upstream, &fused_out, &Silent).unwrap();
        assert_eq!(fused.metrics["fusion_lambda"], 0.5);
        assert_eq!(
            fused.metrics["reranked_ndcg_cut_10"],
            outcome.metrics["reranked_ndcg_cut_10"]
        );
        assert!(fused.metrics.contains_key("fused_ndcg_cut_10"));
        assert!(fused.per_query["q5"].contains_key("fused_ndcg_cut_10"));
        assert!(fused_out.join(FUSED_RUN_FILE).is_file());
        // Without a weight, it is chosen on the CE task's dev split, which this one lacks.
        fused_spec.settings.lambda = None;
        let error = run_task(
            &TaskSpec::Rerank(fused_spec),
            &upstream,
            &fused_out,
            &Silent,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("no dev split"), "{error}");
    }
}
