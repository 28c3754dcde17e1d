//! The dev split of a cross-encoder teacher: a seeded sample of its training queries that the
//! `train_ce` task holds out of training, scores with the retriever and the trained teacher,
//! and leaves in its output (`dev/`) for later choices, such as re-ranking's fusion weight.
//!
//! This module owns which queries are held out, the layout of `dev/` and the measure choices
//! on it are made and reported on. It makes no choice itself, and it only ever sees a
//! training split: test queries and judgments never reach it.

use std::collections::BTreeSet;
use std::path::Path;

use super::inputs::io_error;
use super::StageError;
use crate::data::{trec, Dataset, Qrels, Run};
use crate::eval::measures::{evaluate, parse_measures, Measure};
use crate::rng::SplitMix64;
use crate::task::Artifact;

/// Directory of the dev split inside a `train_ce` task's output.
pub(super) const DEV_DIR: &str = "dev";
const QRELS_FILE: &str = "qrels.txt";
const FIRST_STAGE_FILE: &str = "first_stage.trec";
const CROSS_ENCODER_FILE: &str = "cross_encoder.trec";

/// The measure of the dev split: what choices on it maximise and what it reports.
const DEV_MEASURE: &str = "ndcg_cut.10";

/// Mixed into the task's seed so that the hold-out draws from its own stream.
const DEV_STREAM: u64 = 0x6465_7673_706c_0003;

/// The held-out queries of `dataset`: `fraction` of those with a positive judgment (rounded,
/// at least one when `fraction > 0` and two or more exist, so that some remain to train on),
/// a seeded sample.
pub(super) fn hold_out(dataset: &Dataset, fraction: f64, seed: u64) -> BTreeSet<String> {
    let mut judged: Vec<&String> = dataset
        .qrels
        .iter()
        .filter(|(_, docs)| docs.values().any(|&grade| grade > 0))
        .map(|(query, _)| query)
        .collect();
    if fraction <= 0.0 || judged.len() < 2 {
        return BTreeSet::new();
    }
    let count = ((judged.len() as f64 * fraction).round() as usize).clamp(1, judged.len() - 1);
    SplitMix64::new(seed ^ DEV_STREAM).sample_prefix(&mut judged, count);
    judged[..count]
        .iter()
        .map(|query| query.to_string())
        .collect()
}

/// The held-out queries' judgments and both stages' scores of their candidates (the
/// retriever's top documents, each scored by the retriever and by the trained cross encoder).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DevSplit {
    pub qrels: Qrels,
    pub first_stage: Run,
    pub cross_encoder: Run,
}

impl DevSplit {
    fn measure() -> Result<Vec<Measure>, StageError> {
        Ok(parse_measures(&[DEV_MEASURE.to_string()])?)
    }

    /// The dev measure's name in metrics (`ndcg_cut_10`).
    pub(super) fn measure_name() -> Result<String, StageError> {
        Ok(Self::measure()?[0].name())
    }

    /// The dev measure of `run`, averaged over the dev queries.
    pub(super) fn mean(&self, run: &Run) -> Result<f64, StageError> {
        let evaluation = evaluate(&self.qrels, run, &Self::measure()?, false)?;
        Ok(evaluation.aggregate.values().next().copied().unwrap_or(0.0))
    }

    /// Writes the split into `<out>/dev/`, returning its files as artifacts.
    pub(super) fn write(&self, out: &Path) -> Result<Vec<Artifact>, StageError> {
        let dir = out.join(DEV_DIR);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        trec::write_qrels(&dir.join(QRELS_FILE), &self.qrels)?;
        trec::write_run(
            &dir.join(FIRST_STAGE_FILE),
            &self.first_stage,
            "first-stage",
        )?;
        trec::write_run(
            &dir.join(CROSS_ENCODER_FILE),
            &self.cross_encoder,
            "cross-encoder",
        )?;
        [QRELS_FILE, FIRST_STAGE_FILE, CROSS_ENCODER_FILE]
            .into_iter()
            .map(|name| {
                let path = dir.join(name);
                let bytes = std::fs::metadata(&path).map_err(io_error(&path))?.len();
                let name = format!("{DEV_DIR}/{name}");
                Ok(Artifact {
                    name: name.clone(),
                    path: name,
                    bytes,
                })
            })
            .collect()
    }

    /// Reads the split a `train_ce` task left in `task_dir`; a clear error when it has none.
    pub(super) fn read(task_dir: &Path) -> Result<Self, StageError> {
        let dir = task_dir.join(DEV_DIR);
        if !dir.join(QRELS_FILE).is_file() {
            return Err(StageError::Setting(format!(
                "{} holds no dev split: the cross encoder was trained without one \
                 (train_ce.dev_fraction = 0)",
                task_dir.display()
            )));
        }
        Ok(DevSplit {
            qrels: trec::read_qrels(&dir.join(QRELS_FILE))?,
            first_stage: trec::read_run(&dir.join(FIRST_STAGE_FILE))?,
            cross_encoder: trec::read_run(&dir.join(CROSS_ENCODER_FILE))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::beir;
    use crate::stages::training::tests::tiny_dataset;

    #[test]
    fn held_out_queries_are_a_seeded_sample_of_judged_ones() {
        let root = tempfile::tempdir().unwrap();
        tiny_dataset(root.path());
        let dataset = beir::load(root.path(), "train").unwrap();
        // q1..q4 have a positive in train: 4 × 0.3 rounds to 1, 4 × 0.5 to 2.
        assert!(hold_out(&dataset, 0.0, 1).is_empty());
        assert_eq!(hold_out(&dataset, 0.3, 1).len(), 1);
        let two = hold_out(&dataset, 0.5, 1);
        assert_eq!(two.len(), 2);
        assert_eq!(two, hold_out(&dataset, 0.5, 1));
        assert!(two
            .iter()
            .all(|q| ["q1", "q2", "q3", "q4"].contains(&q.as_str())));
        let seeds: BTreeSet<BTreeSet<String>> =
            (0..20).map(|seed| hold_out(&dataset, 0.5, seed)).collect();
        assert!(seeds.len() > 1, "the seed chooses the queries");
        // Never every query: some remain to train on.
        assert_eq!(hold_out(&dataset, 0.99, 1).len(), 3);
    }

    #[test]
    fn a_split_round_trips_and_a_missing_one_is_named() {
        let root = tempfile::tempdir().unwrap();
        let mut split = DevSplit {
            qrels: Qrels::new(),
            first_stage: Run::new(),
            cross_encoder: Run::new(),
        };
        split
            .qrels
            .entry("q1".into())
            .or_default()
            .insert("d1".into(), 1);
        for (run, scores) in [
            (&mut split.first_stage, [0.9, 0.4]),
            (&mut split.cross_encoder, [-2.0, 3.5]),
        ] {
            let docs = run.entry("q1".into()).or_default();
            docs.insert("d1".into(), scores[0]);
            docs.insert("d2".into(), scores[1]);
        }
        let artifacts = split.write(root.path()).unwrap();
        assert_eq!(artifacts.len(), 3);
        assert_eq!(DevSplit::read(root.path()).unwrap(), split);
        let missing = DevSplit::read(&root.path().join("nothing"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("dev_fraction"), "{missing}");
    }
}
