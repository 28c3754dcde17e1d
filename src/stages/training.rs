//! The training stages: `train_ce` fine-tunes a cross-encoder teacher on a dataset's train
//! judgments with mined hard negatives (holding out a dev split when asked, [`super::dev`]),
//! `train_de` distils a dual-encoder student from its teachers. Both write the trained model
//! into `<output>/model/` ([`TRAINED_MODEL_DIR`]), where downstream tasks find it through
//! [`crate::task::ModelLocation`].
//!
//! This file turns a dataset and its judgments into the training library's examples and its
//! log into a [`TaskOutcome`]; the optimisation itself is [`crate::train`]'s. Every random
//! choice made here (negatives, the order and cap of `mse` texts) draws from a generator
//! seeded with the task's seed, so a task's key determines its model.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Device;

use super::dev::{self, DevSplit};
use super::embeddings::Encoded;
use super::inputs::{io_error, upstream_dirs};
use super::mining::{self, Candidates, MinedNegative, Retriever};
use super::rerank::{self, RERANKED_PREFIX};
use super::{Observer, StageError};
use crate::config::{TrainCeSettings, TrainDeSettings};
use crate::data::{beir, Dataset, Qrels, Run};
use crate::model::{load_model, Pooling};
use crate::rng::SplitMix64;
use crate::task::{
    Artifact, Stage, TaskOutcome, TrainCeSpec, TrainDeSpec, TrainingStep, UpstreamDirs,
    TRAINED_MODEL_DIR,
};
use crate::train::{
    train_cross_encoder, train_dual_encoder, CrossEncoderExample, CrossEncoderLogs, DistillData,
    DistillLoss, KnownTargets, LogitTarget, StepRecord, StudentSpec, TrainingLog, TrainingSettings,
    WarmStart,
};

/// Mixed into the task's seed for the shuffle of `mse` texts (mining has its own stream).
const TEXTS_STREAM: u64 = 0x7465_7874_7300_0002;
/// Mixed into the task's seed for the sample of title pairs and their negatives.
const TITLES_STREAM: u64 = 0x7469_746c_6573_0003;

/// The label-free half of a teacher's data (`train_ce.title_pairs`): `count` corpus
/// documents with a title and a text, a seeded sample, each a query (`title:<id>`, its title)
/// judged relevant to itself only. The corpus is the dataset's, every document without its
/// title, so that neither the positive nor a negative repeats the query verbatim.
fn title_pair_dataset(dataset: &Dataset, count: usize, seed: u64) -> Dataset {
    let mut titled: Vec<&crate::data::Document> = dataset
        .corpus
        .iter()
        .filter(|doc| !doc.title.trim().is_empty() && !doc.text.trim().is_empty())
        .collect();
    SplitMix64::new(seed ^ TITLES_STREAM).sample_prefix(&mut titled, count);
    titled.truncate(count);
    let mut queries = Vec::with_capacity(titled.len());
    let mut qrels = Qrels::new();
    for doc in titled {
        let id = format!("title:{}", doc.id);
        qrels.insert(id.clone(), [(doc.id.clone(), 1)].into_iter().collect());
        queries.push(crate::data::Query {
            id,
            text: doc.title.trim().to_string(),
        });
    }
    let corpus = dataset
        .corpus
        .iter()
        .map(|doc| crate::data::Document {
            title: String::new(),
            ..doc.clone()
        })
        .collect();
    Dataset {
        name: dataset.name.clone(),
        dir: dataset.dir.clone(),
        split: dataset.split.clone(),
        corpus,
        queries,
        qrels,
    }
}

/// Trains a cross-encoder teacher: every positive judgment of `spec.split` becomes a
/// (query, positive, 1) example, and `negatives` documents the retriever ranks high for the
/// query but that are not positives become (query, negative, 0) examples each.
///
/// Upstream: the retriever's `encode` of the dataset (layer `retriever_layer`, mean pooling
/// among its outputs).
pub fn run_train_ce(
    spec: &TrainCeSpec,
    upstream: &UpstreamDirs,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let settings = &spec.settings;
    settings.check().map_err(StageError::Setting)?;
    let encoded = upstream_dirs(upstream, Stage::TrainCe, Stage::Encode)?;
    let dataset = load_split(&spec.dataset_dir, &spec.split)?;
    let retriever = Retriever {
        model_dir: &spec.retriever_dir,
        layer: spec.retriever_layer,
        max_len: spec.retriever_max_len,
        encoded,
    };
    let candidates = mining::retrieve(retriever, &dataset, settings.mine_top_k, observer)?;
    let held_out = dev::hold_out(&dataset, settings.dev_fraction, spec.seed);
    let (dev_candidates, candidates): (Vec<Candidates>, Vec<Candidates>) = candidates
        .into_iter()
        .partition(|candidates| held_out.contains(&candidates.query));
    let mined =
        mining::sample_negatives(&candidates, &dataset.qrels, settings.negatives, spec.seed);
    let negatives_artifact = mining::write_negatives(out, &mined)?;
    let mut data = TeacherData::default();
    data.add(&dataset, &candidates, &mined, settings)?;
    if settings.title_pairs > 0 {
        let titles = title_pair_dataset(&dataset, settings.title_pairs, spec.seed);
        let candidates = mining::retrieve(retriever, &titles, settings.mine_top_k, observer)?;
        let seed = spec.seed ^ TITLES_STREAM;
        let mined = mining::sample_negatives(&candidates, &titles.qrels, settings.negatives, seed);
        data.title_examples = data.add(&titles, &candidates, &mined, settings)?;
    }

    let model_dir = out.join(TRAINED_MODEL_DIR);
    let logs = train_teacher(spec, &data, &model_dir, observer)?;
    let mut outcome = training_outcome(&logs.fine_tune, data.examples.len(), out)?;
    outcome
        .metrics
        .extend(data.metrics(settings, &logs, mined.len()));
    outcome.artifacts.push(negatives_artifact);
    if !dev_candidates.is_empty() {
        let split = score_dev_split(&model_dir, settings, &dataset, &dev_candidates, observer)?;
        outcome.metrics.extend(dev_metrics(&split)?);
        outcome.artifacts.extend(split.write(out)?);
    }
    Ok(outcome)
}

/// A teacher's training data: labelled examples from judgments (and title pairs) and, for
/// the DE warm start, the retriever's scored candidates of the same queries.
#[derive(Default)]
struct TeacherData {
    examples: Vec<CrossEncoderExample>,
    /// How many of `examples` are title pairs.
    title_examples: usize,
    /// The warm start's pairs, each `logit` the retriever's cosine until
    /// [`TeacherData::warm_start_targets`] centres and scales it.
    warm_start: Vec<LogitTarget>,
}

impl TeacherData {
    /// Adds the examples of `dataset`'s queries in `candidates` (see
    /// [`cross_encoder_examples`]) and, with a warm start, each query's top
    /// `warm_start_top_k` candidates and their cosines; returns the number of examples added.
    fn add(
        &mut self,
        dataset: &Dataset,
        candidates: &[Candidates],
        mined: &[MinedNegative],
        settings: &TrainCeSettings,
    ) -> Result<usize, StageError> {
        let examples = cross_encoder_examples(dataset, candidates, mined)?;
        let added = examples.len();
        self.examples.extend(examples);
        if settings.warm_start_epochs > 0 {
            let texts = Texts::of(dataset);
            for Candidates {
                query,
                ranked,
                scores,
            } in candidates
            {
                let top = ranked.iter().zip(scores).take(settings.warm_start_top_k());
                for (doc, &cosine) in top {
                    self.warm_start.push(LogitTarget {
                        query: texts.query(query)?.to_string(),
                        document: texts.document(doc)?.to_string(),
                        logit: cosine,
                    });
                }
            }
        }
        Ok(added)
    }

    /// The warm start's targets: each cosine, less the mean cosine of all pairs, times
    /// `scale`, so the targets centre on a logit of 0.
    fn warm_start_targets(&self, scale: f64) -> Vec<LogitTarget> {
        let count = self.warm_start.len().max(1) as f64;
        let mean = self
            .warm_start
            .iter()
            .map(|pair| f64::from(pair.logit))
            .sum::<f64>()
            / count;
        self.warm_start
            .iter()
            .map(|pair| LogitTarget {
                logit: ((f64::from(pair.logit) - mean) * scale) as f32,
                ..pair.clone()
            })
            .collect()
    }

    /// The teacher's own measurements beside [`training_outcome`]'s: mined negatives, title
    /// pairs, the two ends of the loss curves (first and last 10% of the steps).
    fn metrics(
        &self,
        settings: &TrainCeSettings,
        logs: &CrossEncoderLogs,
        mined: usize,
    ) -> BTreeMap<String, f64> {
        let mut metrics = BTreeMap::new();
        metrics.insert("mined_negatives".to_string(), mined as f64);
        if settings.title_pairs > 0 {
            metrics.insert(
                "title_pair_examples".to_string(),
                self.title_examples as f64,
            );
        }
        let mut ends = |prefix: &str, log: &TrainingLog| {
            if let Some((first, last)) = log.loss_at_ends(LOSS_CURVE_END) {
                metrics.insert(format!("{prefix}loss_first_tenth"), first);
                metrics.insert(format!("{prefix}loss_last_tenth"), last);
            }
        };
        ends("", &logs.fine_tune);
        if let Some(log) = &logs.warm_start {
            ends("warm_start_", log);
            metrics.insert("warm_start_pairs".to_string(), self.warm_start.len() as f64);
            metrics.insert("warm_start_steps".to_string(), log.steps.len() as f64);
            metrics.insert("warm_start_seconds".to_string(), log.seconds);
        }
        metrics
    }
}

/// The fraction of a loss curve's steps averaged at each of its ends.
const LOSS_CURVE_END: f64 = 0.1;

/// Trains the teacher from `spec.base_dir`: the DE warm start when it has one, then the
/// judgments.
fn train_teacher(
    spec: &TrainCeSpec,
    data: &TeacherData,
    model_dir: &Path,
    observer: &dyn Observer,
) -> Result<CrossEncoderLogs, StageError> {
    let settings = &spec.settings;
    let training = settings.training(spec.seed);
    let targets = data.warm_start_targets(settings.warm_start_scale());
    let warm_start = (settings.warm_start_epochs > 0).then_some(WarmStart {
        targets: &targets,
        epochs: settings.warm_start_epochs,
    });
    let warm_steps = TrainingSettings {
        epochs: settings.warm_start_epochs,
        ..training.clone()
    };
    observer.phase(
        "train",
        total_steps(targets.len(), &warm_steps) + total_steps(data.examples.len(), &training),
    );
    Ok(train_cross_encoder(
        &spec.base_dir,
        warm_start,
        &data.examples,
        &training,
        model_dir,
        &mut |_| observer.advance(1),
    )?)
}

/// The held-out queries' candidates scored by the trained cross encoder, beside the
/// retriever's scores and the queries' judgments.
fn score_dev_split(
    model_dir: &Path,
    settings: &TrainCeSettings,
    dataset: &Dataset,
    candidates: &[Candidates],
    observer: &dyn Observer,
) -> Result<DevSplit, StageError> {
    let texts = Texts::of(dataset);
    let loaded = load_model(model_dir, settings.max_len, None, &Device::Cpu)?;
    let mut pairs = Vec::new();
    for Candidates { query, ranked, .. } in candidates {
        let query = texts.query(query)?;
        for doc in ranked {
            pairs.push(loaded.tokenizer.encode_pair(query, texts.document(doc)?)?);
        }
    }
    observer.phase("dev", pairs.len());
    let scores = rerank::score_pairs(
        &loaded.model,
        loaded.tokenizer.pad_id(),
        &pairs,
        settings.batch,
        &mut |done| observer.advance(done),
    )?;
    let mut split = DevSplit {
        qrels: Qrels::new(),
        first_stage: Run::new(),
        cross_encoder: Run::new(),
    };
    let mut next_score = scores.iter();
    for Candidates {
        query,
        ranked,
        scores: first,
    } in candidates
    {
        if let Some(judged) = dataset.qrels.get(query) {
            split.qrels.insert(query.clone(), judged.clone());
        }
        let first_stage = split.first_stage.entry(query.clone()).or_default();
        let cross_encoder = split.cross_encoder.entry(query.clone()).or_default();
        for ((doc, &first), &score) in ranked.iter().zip(first).zip(&mut next_score) {
            first_stage.insert(doc.clone(), f64::from(first));
            cross_encoder.insert(doc.clone(), f64::from(score));
        }
    }
    Ok(split)
}

/// The dev measure (nDCG@10) of the dev queries ranked by the retriever (`dev_ndcg_cut_10`)
/// and by the trained cross encoder over the same candidates (`dev_reranked_ndcg_cut_10`),
/// and their number.
fn dev_metrics(split: &DevSplit) -> Result<BTreeMap<String, f64>, StageError> {
    let name = DevSplit::measure_name()?;
    Ok([
        (format!("dev_{name}"), split.mean(&split.first_stage)?),
        (
            format!("dev_{RERANKED_PREFIX}{name}"),
            split.mean(&split.cross_encoder)?,
        ),
        ("dev_queries".to_string(), split.qrels.len() as f64),
    ]
    .into_iter()
    .collect())
}

/// Distils a dual-encoder student. The data follows the loss: `mse` trains on corpus
/// documents and train queries, `mnrl` on (query, positive) pairs, `margin_mse` on
/// (query, positive, negative) triples whose negatives the teacher DE mines as `train_ce`
/// mines its own.
///
/// Upstream: the CE teacher's `train_ce` task when `teacher_ce` names one, and for `mse`
/// and `margin_mse` the teacher DE's `encode` of the dataset (layer `teacher_de_layer`).
pub fn run_train_de(
    spec: &TrainDeSpec,
    upstream: &UpstreamDirs,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let settings = &spec.settings;
    settings.check().map_err(StageError::Setting)?;
    let (init, loss) = (settings.init, settings.loss);
    let teacher_ce = spec
        .teacher_ce
        .as_ref()
        .map(|location| location.resolve(upstream))
        .transpose()
        .map_err(StageError::Setting)?;
    let dataset = load_split(&spec.dataset_dir, &spec.split)?;

    let mut mined = None;
    let mut known_targets = None;
    let data = match loss {
        DistillLoss::Mse => {
            known_targets = encoded_corpus_targets(spec, upstream, &dataset)?;
            DistillData::Texts(distillation_texts(&dataset, settings, spec.seed))
        }
        DistillLoss::Mnrl => DistillData::Pairs(positive_pairs(&dataset)?),
        DistillLoss::MarginMse => {
            let retriever = Retriever {
                model_dir: &spec.teacher_de_dir,
                layer: spec.teacher_de_layer,
                max_len: spec.teacher_de_max_len,
                encoded: upstream_dirs(upstream, Stage::TrainDe, Stage::Encode)?,
            };
            let candidates = mining::retrieve(retriever, &dataset, settings.mine_top_k, observer)?;
            let negatives = mining::sample_negatives(
                &candidates,
                &dataset.qrels,
                settings.negatives,
                spec.seed,
            );
            let triples = triples(&dataset, &negatives)?;
            mined = Some(negatives);
            DistillData::Triples(triples)
        }
    };
    if data.is_empty() {
        return Err(StageError::Setting(format!(
            "{} split `{}` yields no {loss} training data",
            spec.dataset_dir.display(),
            spec.split
        )));
    }
    let student = StudentSpec {
        layers: settings.layers,
        init,
        loss,
        teacher_de: &spec.teacher_de_dir,
        teacher_ce: teacher_ce.as_deref(),
        known_targets: known_targets.as_ref(),
    };
    let training = settings.training(spec.seed);
    observer.phase("train", total_steps(data.len(), &training));
    let log = train_dual_encoder(
        &student,
        &data,
        &training,
        &out.join(TRAINED_MODEL_DIR),
        &mut |_| observer.advance(1),
    )?;
    let mut outcome = training_outcome(&log, data.len(), out)?;
    if let Some(mined) = mined {
        outcome
            .metrics
            .insert("mined_negatives".to_string(), mined.len() as f64);
        outcome
            .artifacts
            .push(mining::write_negatives(out, &mined)?);
    }
    Ok(outcome)
}

/// `mse`'s targets for the corpus documents, read from the teacher DE's upstream encode of
/// the dataset instead of being computed again by every student: its final layer, mean
/// pooling, unnormalised. Only when the encode read documents at the student's `max_len`
/// (otherwise the student computes every target itself at its own length).
fn encoded_corpus_targets(
    spec: &TrainDeSpec,
    upstream: &UpstreamDirs,
    dataset: &Dataset,
) -> Result<Option<KnownTargets>, StageError> {
    if spec.teacher_de_max_len != spec.settings.max_len {
        return Ok(None);
    }
    let encoded = Encoded::open(upstream_dirs(upstream, Stage::TrainDe, Stage::Encode)?)?;
    encoded.check_holds(spec.teacher_de_layer, Pooling::Mean)?;
    let corpus = encoded.corpus(spec.teacher_de_layer, Pooling::Mean)?;
    let texts: HashMap<&str, String> = dataset
        .corpus
        .iter()
        .map(|d| (d.id.as_str(), d.full_text()))
        .collect();
    let mut known = KnownTargets::new();
    for (row, id) in encoded.manifest.doc_ids.iter().enumerate() {
        let text = texts.get(id.as_str()).ok_or_else(|| {
            StageError::Setting(format!(
                "{} encodes document `{id}`, which is not in {}",
                encoded.describe(),
                dataset.dir.display()
            ))
        })?;
        let values = &corpus.data[row * corpus.dim..(row + 1) * corpus.dim];
        known.insert(text.clone(), values.to_vec());
    }
    Ok(Some(known))
}

/// Loads a split for training and refuses one without any positive judgment, which would
/// otherwise fail later with a less useful message.
fn load_split(dir: &Path, split: &str) -> Result<Dataset, StageError> {
    let dataset = beir::load(dir, split)?;
    let has_positive = dataset
        .qrels
        .values()
        .any(|judged| judged.values().any(|&grade| grade > 0));
    if !has_positive {
        return Err(StageError::Setting(format!(
            "{}: split `{split}` has no positive judgment to train on",
            crate::data::beir::qrels_path(dir, split).display()
        )));
    }
    Ok(dataset)
}

/// Texts by id: a query's text and a document's `title + " " + text`.
struct Texts<'a> {
    queries: HashMap<&'a str, &'a str>,
    documents: HashMap<&'a str, String>,
}

impl<'a> Texts<'a> {
    fn of(dataset: &'a Dataset) -> Self {
        Texts {
            queries: dataset
                .queries
                .iter()
                .map(|q| (q.id.as_str(), q.text.as_str()))
                .collect(),
            documents: dataset
                .corpus
                .iter()
                .map(|d| (d.id.as_str(), d.full_text()))
                .collect(),
        }
    }

    fn query(&self, id: &str) -> Result<&str, StageError> {
        self.queries
            .get(id)
            .copied()
            .ok_or_else(|| StageError::Setting(format!("query `{id}` is not in the dataset")))
    }

    fn document(&self, id: &str) -> Result<&str, StageError> {
        self.documents
            .get(id)
            .map(String::as_str)
            .ok_or_else(|| StageError::Setting(format!("document `{id}` is not in the corpus")))
    }
}

/// The cross encoder's examples: per query (in `candidates` order) and positive, the
/// positive with label 1 followed by its mined negatives with label 0.
fn cross_encoder_examples(
    dataset: &Dataset,
    candidates: &[Candidates],
    mined: &[MinedNegative],
) -> Result<Vec<CrossEncoderExample>, StageError> {
    let texts = Texts::of(dataset);
    let mut by_pair: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for negative in mined {
        by_pair
            .entry((negative.query.as_str(), negative.positive.as_str()))
            .or_default()
            .push(negative.negative.as_str());
    }
    let example = |query: &str, document: &str, label: f32| CrossEncoderExample {
        query: query.to_string(),
        document: document.to_string(),
        label,
    };
    let mut examples = Vec::new();
    for Candidates { query, .. } in candidates {
        let query_text = texts.query(query)?;
        for positive in mining::positives(&dataset.qrels, query) {
            examples.push(example(query_text, texts.document(positive)?, 1.0));
            for negative in by_pair
                .get(&(query.as_str(), positive))
                .into_iter()
                .flatten()
            {
                examples.push(example(query_text, texts.document(negative)?, 0.0));
            }
        }
    }
    Ok(examples)
}

/// `mse`'s texts: every corpus document and every judged query of the split (with
/// `sentences`, every document's title and sentences too), in a seeded random order, the
/// first `max_texts` of them when `max_texts > 0` (a seeded sample).
fn distillation_texts(dataset: &Dataset, settings: &TrainDeSettings, seed: u64) -> Vec<String> {
    let passages = dataset
        .corpus
        .iter()
        .filter(|_| settings.sentences)
        .flat_map(|d| d.passages())
        .map(str::to_string);
    let mut texts: Vec<String> = dataset
        .corpus
        .iter()
        .map(|d| d.full_text())
        .chain(dataset.queries.iter().map(|q| q.text.clone()))
        .chain(passages)
        .collect();
    SplitMix64::new(seed ^ TEXTS_STREAM).shuffle(&mut texts);
    if settings.max_texts > 0 {
        texts.truncate(settings.max_texts);
    }
    texts
}

/// `mnrl`'s pairs: (query text, positive document text) for every positive judgment, in
/// query then document id order.
fn positive_pairs(dataset: &Dataset) -> Result<Vec<(String, String)>, StageError> {
    let texts = Texts::of(dataset);
    let mut pairs = Vec::new();
    for query in &dataset.queries {
        for positive in mining::positives(&dataset.qrels, &query.id) {
            pairs.push((query.text.clone(), texts.document(positive)?.to_string()));
        }
    }
    Ok(pairs)
}

/// `margin_mse`'s triples, one per mined negative.
fn triples(
    dataset: &Dataset,
    mined: &[MinedNegative],
) -> Result<Vec<(String, String, String)>, StageError> {
    let texts = Texts::of(dataset);
    mined
        .iter()
        .map(|negative| {
            Ok((
                texts.query(&negative.query)?.to_string(),
                texts.document(&negative.positive)?.to_string(),
                texts.document(&negative.negative)?.to_string(),
            ))
        })
        .collect()
}

/// Optimiser steps of a run over `examples` examples (the last batch of an epoch may be
/// short, never dropped), for the progress bar.
fn total_steps(examples: usize, settings: &TrainingSettings) -> usize {
    examples.div_ceil(settings.batch_size.max(1)) * settings.epochs
}

/// The outcome every training task reports: its measurements, its step log and the files
/// of the trained model.
fn training_outcome(
    log: &TrainingLog,
    examples: usize,
    out: &Path,
) -> Result<TaskOutcome, StageError> {
    let mut metrics = BTreeMap::new();
    metrics.insert("train_examples".to_string(), examples as f64);
    metrics.insert("train_steps".to_string(), log.steps.len() as f64);
    metrics.insert("train_seconds".to_string(), log.seconds);
    metrics.insert("examples_per_second".to_string(), log.examples_per_second());
    if let Some(bytes) = log.peak_rss_bytes {
        metrics.insert("peak_rss_mib".to_string(), bytes as f64 / (1 << 20) as f64);
    }
    if let Some(&loss) = log.epoch_losses().last() {
        metrics.insert("final_loss".to_string(), loss);
    }
    let mut artifacts = Vec::new();
    list_files(out, Path::new(TRAINED_MODEL_DIR), &mut artifacts)?;
    Ok(TaskOutcome {
        seconds: 0.0,
        metrics,
        per_query: BTreeMap::new(),
        artifacts,
        steps: log.steps.iter().map(training_step).collect(),
    })
}

fn training_step(record: &StepRecord) -> TrainingStep {
    TrainingStep {
        step: record.step,
        epoch: record.epoch,
        loss: record.loss,
        learning_rate: record.learning_rate,
        grad_norm: record.grad_norm,
    }
}

/// Every file under `root/relative`, as artifacts named by their path relative to `root`
/// (`model/config.json`, `model/1_Pooling/config.json`), sorted.
fn list_files(root: &Path, relative: &Path, found: &mut Vec<Artifact>) -> Result<(), StageError> {
    let dir = root.join(relative);
    let mut entries = std::fs::read_dir(&dir)
        .map_err(io_error(&dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error(&dir))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let metadata = entry.metadata().map_err(io_error(&path))?;
        let name = relative.join(entry.file_name());
        if metadata.is_dir() {
            list_files(root, &name, found)?;
        } else {
            let name = name.to_string_lossy().replace('\\', "/");
            found.push(Artifact {
                name: name.clone(),
                path: name,
                bytes: metadata.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::{TrainCeSettings, TrainDeSettings};
    use crate::data::{Document, Qrels, Query};
    use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
    use crate::model::InputFormat;
    use crate::stages::eval::read_split_qrels;
    use crate::stages::{run_task, Silent};
    use crate::task::{EncodeSpec, ModelLocation, TaskSpec};

    /// A tiny BEIR dataset with `train` and `test` judgments.
    pub(crate) fn tiny_dataset(dir: &Path) {
        let doc = |id: &str, title: &str, text: &str| Document {
            id: id.into(),
            title: title.into(),
            text: text.into(),
        };
        let corpus = vec![
            doc("d1", "cat", "the cat sat on the mat"),
            doc("d2", "dog", "a dog sat on a mat"),
            doc("d3", "wing", "air flow on the wing"),
            doc("d4", "shock", "a shock wave and pressure"),
            doc("d5", "cells", "protein and gene in cells"),
            doc("d6", "cancer", "high cancer risk"),
            doc("d7", "heat", "heat and low speed"),
            doc("d8", "layer", "the boundary layer model"),
        ];
        let query = |id: &str, text: &str| Query {
            id: id.into(),
            text: text.into(),
        };
        let queries = vec![
            query("q1", "what cat sat"),
            query("q2", "air flow wing"),
            query("q3", "cancer risk study"),
            query("q4", "boundary layer heat"),
            query("q5", "dog"),
        ];
        let qrels = |pairs: &[(&str, &str, i32)]| {
            let mut qrels = Qrels::new();
            for (q, d, grade) in pairs {
                qrels
                    .entry(q.to_string())
                    .or_default()
                    .insert(d.to_string(), *grade);
            }
            qrels
        };
        let splits = [
            (
                "train".to_string(),
                qrels(&[
                    ("q1", "d1", 1),
                    ("q1", "d2", 0),
                    ("q2", "d3", 2),
                    ("q3", "d6", 1),
                    ("q3", "d5", 1),
                    ("q4", "d8", 1),
                ]),
            ),
            (
                "test".to_string(),
                qrels(&[("q5", "d2", 1), ("q1", "d1", 1)]),
            ),
        ]
        .into();
        beir::write(dir, &corpus, &queries, &splits).unwrap();
    }

    fn tiny_model(dir: &Path, seed: u64, cross_encoder: bool) {
        write_random_bert(
            dir,
            &tiny_config(2, TINY_VOCAB.len()),
            TINY_VOCAB,
            seed,
            cross_encoder,
        )
        .unwrap();
    }

    /// The retriever's encode of the dataset, as the plan's upstream encode task produces it.
    fn encode(model: &Path, dataset: &Path, out: &Path) -> UpstreamDirs {
        std::fs::create_dir_all(out).unwrap();
        let spec = TaskSpec::Encode(EncodeSpec {
            model: ModelLocation::Dir {
                path: model.to_path_buf(),
            },
            dataset_dir: dataset.to_path_buf(),
            split: "test".into(),
            input: InputFormat::Single,
            max_len: 32,
            batch: 4,
            depth: 2,
            precision: crate::model::Precision::F32,
            shard: None,
        });
        run_task(&spec, &UpstreamDirs::default(), out, &Silent).unwrap();
        [(Stage::Encode, out.to_path_buf())].into_iter().collect()
    }

    fn ce_spec(root: &Path, seed: u64) -> TrainCeSpec {
        TrainCeSpec {
            base_dir: root.join("ce_base"),
            retriever_dir: root.join("de"),
            retriever_layer: 2,
            retriever_max_len: 32,
            dataset_dir: root.join("data"),
            split: "train".into(),
            seed,
            settings: TrainCeSettings {
                batch: 4,
                max_len: 32,
                mine_top_k: 5,
                negatives: 2,
                learning_rate: 1e-3,
                ..TrainCeSettings::default()
            },
        }
    }

    /// The dataset, the retriever and the CE's base under `root`, and the retriever's encode
    /// that a train_ce task takes upstream.
    fn train_ce_inputs(root: &Path) -> UpstreamDirs {
        tiny_dataset(&root.join("data"));
        tiny_model(&root.join("de"), 1, false);
        tiny_model(&root.join("ce_base"), 2, true);
        encode(&root.join("de"), &root.join("data"), &root.join("enc"))
    }

    #[test]
    fn train_ce_mines_trains_and_reports() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let upstream = train_ce_inputs(root);
        let spec = ce_spec(root, 5);
        let out = root.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let outcome = run_task(&TaskSpec::TrainCe(spec.clone()), &upstream, &out, &Silent).unwrap();
        // 5 positives in train, each with 2 negatives from a top 5 (q1's judged-irrelevant
        // d2 may be one of them).
        assert_eq!(outcome.metrics["mined_negatives"], 10.0);
        assert_eq!(outcome.metrics["train_examples"], 15.0);
        assert_eq!(outcome.metrics["train_steps"], 4.0);
        assert_eq!(outcome.steps.len(), 4);
        assert!(outcome.metrics["final_loss"].is_finite());
        assert!(outcome.seconds > 0.0);
        let names: Vec<&str> = outcome.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert!(names.contains(&"model/config.json"), "{names:?}");
        assert!(names.contains(&"model/model.safetensors"), "{names:?}");
        assert!(names.contains(&"negatives.tsv"), "{names:?}");
        for artifact in &outcome.artifacts {
            let bytes = std::fs::metadata(out.join(&artifact.path)).unwrap().len();
            assert_eq!(bytes, artifact.bytes, "{}", artifact.path);
        }
        let negatives = std::fs::read_to_string(out.join("negatives.tsv")).unwrap();
        let qrels = read_split_qrels(&root.join("data"), "train").unwrap();
        for line in negatives.lines().skip(1) {
            let fields: Vec<&str> = line.split('\t').collect();
            let grade = qrels[fields[0]].get(fields[1]).copied().unwrap_or(0);
            assert!(grade <= 0, "positive mined as a negative: {line}");
            let rank: usize = fields[2].parse().unwrap();
            assert!((1..=5).contains(&rank));
        }
        let loaded = crate::model::load_model(
            &out.join(TRAINED_MODEL_DIR),
            32,
            None,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert!(loaded.model.has_classifier());

        // The same seed mines the same negatives.
        let again = root.join("again");
        std::fs::create_dir_all(&again).unwrap();
        run_task(&TaskSpec::TrainCe(spec.clone()), &upstream, &again, &Silent).unwrap();
        assert_eq!(
            negatives,
            std::fs::read_to_string(again.join("negatives.tsv")).unwrap()
        );

        // Title pairs add (title, own text) positives with 2 mined negatives each.
        let mut titled = spec;
        titled.settings.title_pairs = 3;
        let with_titles = root.join("titles");
        std::fs::create_dir_all(&with_titles).unwrap();
        let outcome = run_task(
            &TaskSpec::TrainCe(titled.clone()),
            &upstream,
            &with_titles,
            &Silent,
        )
        .unwrap();
        assert_eq!(outcome.metrics["title_pair_examples"], 3.0 * 3.0);
        assert_eq!(outcome.metrics["train_examples"], 15.0 + 9.0);
        assert!(!outcome.metrics.contains_key("warm_start_steps"));

        // The DE warm start: the top 3 candidates of the 4 train queries and 3 title pairs,
        // one epoch, before the same fine-tuning; the step log is the fine-tuning's.
        titled.settings.warm_start_epochs = 1;
        titled.settings.warm_start_top_k = Some(3);
        let warm = root.join("warm");
        std::fs::create_dir_all(&warm).unwrap();
        let outcome = run_task(&TaskSpec::TrainCe(titled), &upstream, &warm, &Silent).unwrap();
        assert_eq!(outcome.metrics["warm_start_pairs"], 21.0);
        assert_eq!(outcome.metrics["warm_start_steps"], 6.0);
        assert_eq!(outcome.metrics["train_steps"], 6.0);
        assert_eq!(outcome.steps.len(), 6);
        assert!(outcome.metrics["warm_start_loss_last_tenth"].is_finite());
        assert!(outcome.metrics["loss_first_tenth"].is_finite());
    }

    #[test]
    fn warm_start_targets_are_centred_scaled_cosines() {
        let pair = |cosine| LogitTarget {
            query: "q".into(),
            document: "d".into(),
            logit: cosine,
        };
        let data = TeacherData {
            warm_start: vec![pair(0.5), pair(0.25), pair(0.75)],
            ..TeacherData::default()
        };
        let logits: Vec<f32> = data
            .warm_start_targets(20.0)
            .iter()
            .map(|target| target.logit)
            .collect();
        assert_eq!(logits, vec![0.0, -5.0, 5.0]);
    }

    #[test]
    fn title_pairs_are_a_seeded_sample_of_titled_documents_shown_without_titles() {
        let dir = tempfile::tempdir().unwrap();
        tiny_dataset(dir.path());
        let dataset = load_split(dir.path(), "train").unwrap();
        let titles = title_pair_dataset(&dataset, 3, 7);
        assert_eq!(titles.queries.len(), 3);
        for query in &titles.queries {
            let id = query.id.strip_prefix("title:").unwrap();
            let source = dataset.corpus.iter().find(|doc| doc.id == id).unwrap();
            assert_eq!(query.text, source.title);
            assert_eq!(titles.qrels[&query.id], [(id.to_string(), 1)].into());
        }
        let ids: Vec<&str> = titles.corpus.iter().map(|doc| doc.id.as_str()).collect();
        let original: Vec<&str> = dataset.corpus.iter().map(|doc| doc.id.as_str()).collect();
        assert_eq!(ids, original, "the corpus keeps its documents and order");
        assert!(titles.corpus.iter().all(|doc| doc.title.is_empty()));
        let query_ids = |seed| -> Vec<String> {
            title_pair_dataset(&dataset, 3, seed)
                .queries
                .into_iter()
                .map(|query| query.id)
                .collect()
        };
        assert_eq!(query_ids(7), query_ids(7));
        assert_ne!(query_ids(7), query_ids(8));
        // Asking for more than there are gives every titled document once.
        assert_eq!(title_pair_dataset(&dataset, 100, 7).queries.len(), 8);
    }

    #[test]
    fn train_ce_holds_out_a_dev_split_and_scores_it() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let upstream = train_ce_inputs(root);
        let mut spec = ce_spec(root, 5);
        spec.settings.dev_fraction = 0.3;
        let out = root.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let outcome = run_task(&TaskSpec::TrainCe(spec), &upstream, &out, &Silent).unwrap();
        assert_eq!(outcome.metrics["dev_queries"], 1.0);
        for name in ["dev_ndcg_cut_10", "dev_reranked_ndcg_cut_10"] {
            assert!((0.0..=1.0).contains(&outcome.metrics[name]), "{name}");
        }
        let split = DevSplit::read(&out).unwrap();
        let (dev_query, judged) = split.qrels.iter().next().unwrap();
        assert_eq!(split.first_stage[dev_query].len(), 5, "the top mine_top_k");
        assert_eq!(
            split.first_stage[dev_query].keys().collect::<Vec<_>>(),
            split.cross_encoder[dev_query].keys().collect::<Vec<_>>()
        );
        // The held-out query's positives are not trained on, nor mined for.
        let positives = judged.values().filter(|&&grade| grade > 0).count() as f64;
        assert_eq!(outcome.metrics["train_examples"], (5.0 - positives) * 3.0);
        let negatives = std::fs::read_to_string(out.join("negatives.tsv")).unwrap();
        assert!(negatives
            .lines()
            .all(|line| line.split('\t').next() != Some(dev_query.as_str())));
        assert!(outcome.artifacts.iter().any(|a| a.name == "dev/qrels.txt"));
        // The trained model scores as the dev file says.
        let loaded = load_model(&out.join(TRAINED_MODEL_DIR), 32, None, &Device::Cpu).unwrap();
        let dataset = beir::load(&root.join("data"), "train").unwrap();
        let texts = Texts::of(&dataset);
        let (doc, &score) = split.cross_encoder[dev_query].iter().next().unwrap();
        let pair = loaded
            .tokenizer
            .encode_pair(
                texts.query(dev_query).unwrap(),
                texts.document(doc).unwrap(),
            )
            .unwrap();
        let batch =
            crate::model::Batch::new(&[&pair], loaded.tokenizer.pad_id(), &Device::Cpu).unwrap();
        let direct = f64::from(loaded.model.score_pairs(&batch).unwrap()[0]);
        assert!((direct - score).abs() < 1e-4, "{direct} vs {score}");
    }

    #[test]
    fn train_de_builds_the_data_each_loss_needs() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        tiny_dataset(&root.join("data"));
        tiny_model(&root.join("de"), 1, false);
        tiny_model(&root.join("ce"), 2, true);
        let mut upstream = encode(&root.join("de"), &root.join("data"), &root.join("enc"));
        // A CE teacher "trained" upstream: its model sits in the task's model directory.
        tiny_model(&root.join("ce_task").join(TRAINED_MODEL_DIR), 3, true);
        upstream.insert(Stage::TrainCe, root.join("ce_task"));
        let spec = |loss: &str, init: &str| TrainDeSpec {
            teacher_de_dir: root.join("de"),
            teacher_de_layer: 2,
            teacher_de_max_len: 32,
            teacher_ce: Some(ModelLocation::Trained {
                stage: Stage::TrainCe,
            }),
            dataset_dir: root.join("data"),
            split: "train".into(),
            seed: 0,
            settings: TrainDeSettings {
                loss: loss.parse().unwrap(),
                init: init.parse().unwrap(),
                batch: 4,
                max_len: 32,
                max_texts: 6,
                negatives: 1,
                mine_top_k: 5,
                learning_rate: 1e-3,
                ..TrainDeSettings::default()
            },
        };
        for (loss, init, examples, mined) in [
            ("mse", "de:1", 6.0, None),
            ("mnrl", "ce:1", 5.0, None),
            ("margin_mse", "ce:2", 5.0, Some(5.0)),
        ] {
            let out = root.join(loss);
            std::fs::create_dir_all(&out).unwrap();
            let outcome = run_task(
                &TaskSpec::TrainDe(spec(loss, init)),
                &upstream,
                &out,
                &Silent,
            )
            .unwrap_or_else(|err| panic!("{loss}: {err}"));
            assert_eq!(outcome.metrics["train_examples"], examples, "{loss}");
            assert_eq!(
                outcome.metrics.get("mined_negatives").copied(),
                mined,
                "{loss}"
            );
            assert_eq!(outcome.steps.len(), 2, "{loss}");
            assert!(out.join(TRAINED_MODEL_DIR).join("modules.json").is_file());
            assert!(outcome
                .artifacts
                .iter()
                .any(|a| a.name == "model/1_Pooling/config.json"));
        }
    }

    #[test]
    fn mse_corpus_targets_come_from_the_teacher_encode_at_the_student_length() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        tiny_dataset(&root.join("data"));
        tiny_model(&root.join("de"), 1, false);
        let upstream = encode(&root.join("de"), &root.join("data"), &root.join("enc"));
        let dataset = beir::load(&root.join("data"), "train").unwrap();
        let spec = |max_len| TrainDeSpec {
            teacher_de_dir: root.join("de"),
            teacher_de_layer: 2,
            teacher_de_max_len: 32,
            teacher_ce: None,
            dataset_dir: root.join("data"),
            split: "train".into(),
            seed: 0,
            settings: TrainDeSettings {
                max_len,
                ..TrainDeSettings::default()
            },
        };
        let known = encoded_corpus_targets(&spec(32), &upstream, &dataset)
            .unwrap()
            .unwrap();
        let texts: Vec<String> = dataset.corpus.iter().map(|d| d.full_text()).collect();
        assert_eq!(known.len(), texts.len());
        let loaded = load_model(&root.join("de"), 32, None, &Device::Cpu).unwrap();
        let direct = crate::model::encode_mean(
            &loaded.model,
            &loaded.tokenizer,
            &texts,
            2,
            3,
            false,
            &mut |_| {},
        )
        .unwrap();
        for (text, row) in texts.iter().zip(direct.data.chunks_exact(direct.dim)) {
            for (a, b) in known[text].iter().zip(row) {
                assert!((a - b).abs() < 1e-5, "{text}: {a} vs {b}");
            }
        }
        // At another length the encode's embeddings are not the student's targets.
        assert!(encoded_corpus_targets(&spec(16), &upstream, &dataset)
            .unwrap()
            .is_none());
    }

    #[test]
    fn mse_texts_are_a_seeded_sample() {
        let root = tempfile::tempdir().unwrap();
        tiny_dataset(root.path());
        let dataset = beir::load(root.path(), "train").unwrap();
        let capped = |max_texts, sentences| TrainDeSettings {
            max_texts,
            sentences,
            ..TrainDeSettings::default()
        };
        let all = distillation_texts(&dataset, &capped(0, false), 1);
        assert_eq!(all.len(), 8 + 4);
        assert_eq!(all, distillation_texts(&dataset, &capped(0, false), 1));
        assert_ne!(all, distillation_texts(&dataset, &capped(0, false), 2));
        assert_eq!(
            distillation_texts(&dataset, &capped(5, false), 1),
            all[..5].to_vec()
        );
        // Titles are passages; the tiny texts have one sentence each of at least 4 words
        // but "high cancer risk" and "heat and low speed" (4 words: kept).
        let with_passages = distillation_texts(&dataset, &capped(0, true), 1);
        assert_eq!(with_passages.len(), 8 + 4 + 8 + 7);
        assert!(with_passages.contains(&"wing".to_string()));
        assert!(with_passages.contains(&"the boundary layer model".to_string()));
    }

    #[test]
    fn a_missing_upstream_is_named() {
        let root = tempfile::tempdir().unwrap();
        let spec = ce_spec(root.path(), 0);
        let error = run_task(
            &TaskSpec::TrainCe(spec),
            &UpstreamDirs::default(),
            root.path(),
            &Silent,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("a train_ce task needs its upstream encode task's output"),
            "{error}"
        );
    }
}
