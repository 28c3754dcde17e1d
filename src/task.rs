/*!
The task vocabulary shared by the planner, the scheduler, the workers, the stages and the
store: stages, task specifications, task outcomes and artifacts, where a task finds its
models and upstream outputs, and which of a specification's fields are cache-key
parameters.

Each specification decides its key parameters from its own fields in one place
([`TaskSpec::key_params`]): the function destructures the whole struct, so adding a field does
not compile until the field is either named in the key or explicitly left out (paths are left
out: a task's files enter its key by content hash, see [`crate::plan`]). The planner composes
these parameters with file hashes and upstream keys into the full cache key.

This module knows no experiment, DAG, store or file system.
*/

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{BenchConfig, QuerySet, RerankSettings, TrainCeSettings, TrainDeSettings};
use crate::model::{InputFormat, Pooling, Precision, Shard};

/// The kinds of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Encode a dataset's queries and corpus once; pool every layer up to a depth with every
    /// pooling.
    Encode,
    /// Retrieve with one (layer, pooling) of an encode and score the run.
    Eval,
    /// Train a cross-encoder teacher on a dataset's train judgments and mined negatives.
    TrainCe,
    /// Distil a dual-encoder student from teachers.
    TrainDe,
    /// Re-score the top of an eval task's run with a cross encoder and score that run.
    Rerank,
    /// Time the encoder at each depth on a dataset's first documents (runs alone).
    Bench,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Encode,
        Stage::Eval,
        Stage::TrainCe,
        Stage::TrainDe,
        Stage::Rerank,
        Stage::Bench,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Encode => "encode",
            Stage::Eval => "eval",
            Stage::TrainCe => "train_ce",
            Stage::TrainDe => "train_de",
            Stage::Rerank => "rerank",
            Stage::Bench => "bench",
        }
    }

    /// Bumped whenever a stage's code changes what it produces, so that cached results of
    /// the old code are not reused.
    pub fn code_version(self) -> u32 {
        match self {
            // 2: repro's own attention, GELU and dense kernels (last-bit differences).
            Stage::Encode => 2,
            Stage::Eval => 1,
            Stage::TrainCe => 1,
            Stage::TrainDe => 1,
            Stage::Rerank => 1,
            Stage::Bench => 1,
        }
    }

    /// Whether a task of this stage must run with no other task beside it: timings taken
    /// while another task shares the cores would measure the machine's load, not the code.
    pub fn runs_alone(self) -> bool {
        matches!(self, Stage::Bench)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Stage {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
                format!("unknown stage `{text}` (stages: {})", names.join(", "))
            })
    }
}

/// A file a task produced, relative to its cache directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub path: String,
    pub bytes: u64,
}

/// What a finished task reports: written by the worker, ingested by the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub seconds: f64,
    /// Aggregate measurements (trec_eval names for evaluation, rates for encoding).
    pub metrics: BTreeMap<String, f64>,
    /// Query id → measure → value.
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
    pub artifacts: Vec<Artifact>,
    /// Training tasks: one record per optimisation step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<TrainingStep>,
}

/// One optimisation step of a training task, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingStep {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
}

/// The directory inside a training task's output that holds the trained model.
pub const TRAINED_MODEL_DIR: &str = "model";

/// Where a task finds a model: a directory, or the [`TRAINED_MODEL_DIR`] of the upstream task
/// of a training stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum ModelLocation {
    Dir { path: PathBuf },
    Trained { stage: Stage },
}

impl ModelLocation {
    /// The model's directory, given the task's upstream output directories by stage.
    pub fn resolve(&self, upstream: &UpstreamDirs) -> Result<PathBuf, String> {
        match self {
            ModelLocation::Dir { path } => Ok(path.clone()),
            ModelLocation::Trained { stage } => upstream
                .first(*stage)
                .map(|dir| dir.join(TRAINED_MODEL_DIR))
                .ok_or_else(|| format!("the model comes from a {stage} task that is not upstream")),
        }
    }
}

/// The output directories of a task's upstream tasks, by stage. A stage has one directory,
/// except a sharded encode: one per shard, in shard order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UpstreamDirs(BTreeMap<Stage, Vec<PathBuf>>);

impl UpstreamDirs {
    /// Adds `dir` after the directories of `stage` already there.
    pub fn insert(&mut self, stage: Stage, dir: PathBuf) {
        self.0.entry(stage).or_default().push(dir);
    }

    /// The (first) directory of `stage`.
    pub fn first(&self, stage: Stage) -> Option<&std::path::Path> {
        self.0
            .get(&stage)
            .and_then(|dirs| dirs.first())
            .map(PathBuf::as_path)
    }

    /// Every directory of `stage`, in order; empty when there is none.
    pub fn all(&self, stage: Stage) -> &[PathBuf] {
        self.0.get(&stage).map(Vec::as_slice).unwrap_or(&[])
    }
}

impl FromIterator<(Stage, PathBuf)> for UpstreamDirs {
    fn from_iter<I: IntoIterator<Item = (Stage, PathBuf)>>(iter: I) -> Self {
        let mut dirs = UpstreamDirs::default();
        for (stage, dir) in iter {
            dirs.insert(stage, dir);
        }
        dirs
    }
}

/// Train a cross-encoder teacher. Upstream: the retriever's encode of the dataset (its corpus
/// embeddings are reused for mining).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainCeSpec {
    /// The checkpoint the teacher starts from (a classification head is added when missing).
    pub base_dir: PathBuf,
    /// The first-stage retriever that mines hard negatives: it encodes the train queries;
    /// its corpus embeddings (final layer, mean pooling) come from the upstream encode.
    pub retriever_dir: PathBuf,
    pub retriever_layer: usize,
    pub retriever_max_len: usize,
    pub dataset_dir: PathBuf,
    /// The judgments trained on (`train`).
    pub split: String,
    pub seed: u64,
    pub settings: TrainCeSettings,
}

/// Train a dual-encoder student. Upstream: the CE teacher's train_ce task when it is trained
/// by the experiment, and for `mse` and `margin_mse` the teacher DE's encode (targets,
/// mining).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainDeSpec {
    pub teacher_de_dir: PathBuf,
    /// The teacher DE's embedding layer (its last) and length limit: `mse` targets, and for
    /// `margin_mse` the mining retriever whose corpus embeddings come from the upstream encode.
    pub teacher_de_layer: usize,
    pub teacher_de_max_len: usize,
    pub teacher_ce: Option<ModelLocation>,
    pub dataset_dir: PathBuf,
    pub split: String,
    pub seed: u64,
    pub settings: TrainDeSettings,
}

/// Re-rank an eval task's run. Upstream: that eval task, and the CE's train_ce task when
/// the CE is trained by the experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankSpec {
    pub cross_encoder: ModelLocation,
    pub dataset_dir: PathBuf,
    pub split: String,
    pub settings: RerankSettings,
    pub measures: Vec<String>,
    /// The queries scored: the upstream eval's.
    #[serde(default, skip_serializing_if = "QuerySet::is_all")]
    pub queries: QuerySet,
}

/// Encode a dataset with a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodeSpec {
    pub model: ModelLocation,
    pub dataset_dir: PathBuf,
    pub split: String,
    pub input: InputFormat,
    pub max_len: usize,
    pub batch: usize,
    /// Layers run; hidden states 0..=depth are pooled.
    pub depth: usize,
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// The part of the corpus this task encodes when the encode is sharded (`[encode]
    /// shards`); the queries are encoded by shard 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

/// Time a model's encoder at several depths on the first documents of a dataset's corpus.
/// Upstream: the model's training task when the experiment trains it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSpec {
    pub model: ModelLocation,
    pub dataset_dir: PathBuf,
    pub input: InputFormat,
    pub max_len: usize,
    pub batch: usize,
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    pub settings: BenchConfig,
}

/// Retrieve with one (layer, pooling) of the upstream encode and evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSpec {
    pub dataset_dir: PathBuf,
    pub split: String,
    pub layer: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    pub top_k: usize,
    pub measures: Vec<String>,
    /// The split's queries retrieved and scored: all, or those unseen in training (the
    /// encode holds every judged query; the subset is taken here).
    #[serde(default, skip_serializing_if = "QuerySet::is_all")]
    pub queries: QuerySet,
}

/// Everything a worker needs to run one task (paths included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum TaskSpec {
    Encode(EncodeSpec),
    Eval(EvalSpec),
    TrainCe(TrainCeSpec),
    TrainDe(TrainDeSpec),
    Rerank(RerankSpec),
    Bench(BenchSpec),
}

impl TaskSpec {
    pub fn stage(&self) -> Stage {
        match self {
            TaskSpec::Encode(_) => Stage::Encode,
            TaskSpec::Eval(_) => Stage::Eval,
            TaskSpec::TrainCe(_) => Stage::TrainCe,
            TaskSpec::TrainDe(_) => Stage::TrainDe,
            TaskSpec::Rerank(_) => Stage::Rerank,
            TaskSpec::Bench(_) => Stage::Bench,
        }
    }
}

impl TaskSpec {
    /// The parameters of this task's cache key: every setting that changes its output, by
    /// name. Paths are not parameters (the files they hold are hashed as file inputs).
    pub fn key_params(&self) -> Value {
        match self {
            TaskSpec::Encode(spec) => spec.key_params(),
            TaskSpec::Eval(spec) => spec.key_params(),
            TaskSpec::TrainCe(spec) => spec.key_params(),
            TaskSpec::TrainDe(spec) => spec.key_params(),
            TaskSpec::Rerank(spec) => spec.key_params(),
            TaskSpec::Bench(spec) => spec.key_params(),
        }
    }
}

impl EncodeSpec {
    fn key_params(&self) -> Value {
        let EncodeSpec {
            model: _,
            dataset_dir: _,
            split,
            input,
            max_len,
            batch,
            depth,
            precision,
            shard,
        } = self;
        let mut params = json!({
            "split": split,
            "input": input,
            "max_len": max_len,
            "batch": batch,
            "depth": depth,
        });
        // f32 is left out, so keys made before precision existed stay as they were.
        if !precision.is_f32() {
            params["precision"] = json!(precision);
        }
        // Only a sharded encode names its shard, so unsharded keys stay as they were.
        if let Some(shard) = shard {
            params["shard"] = json!([shard.index, shard.count]);
        }
        params
    }
}

impl EvalSpec {
    fn key_params(&self) -> Value {
        let EvalSpec {
            dataset_dir: _,
            split,
            layer,
            pooling,
            normalize,
            top_k,
            measures,
            queries,
        } = self;
        let mut params = json!({
            "split": split,
            "layer": layer,
            "pooling": pooling,
            "normalize": normalize,
            "top_k": top_k,
            "measures": measures,
        });
        // `all` is left out, so keys made before query sets existed stay as they were.
        if !queries.is_all() {
            params["queries"] = json!(queries);
        }
        params
    }
}

impl TrainCeSpec {
    fn key_params(&self) -> Value {
        let TrainCeSpec {
            base_dir: _,
            retriever_dir: _,
            retriever_layer,
            retriever_max_len,
            dataset_dir: _,
            split,
            seed,
            settings,
        } = self;
        json!({
            "split": split,
            "seed": seed,
            "settings": settings,
            "retriever_layer": retriever_layer,
            "retriever_max_len": retriever_max_len,
        })
    }
}

impl TrainDeSpec {
    fn key_params(&self) -> Value {
        // The CE teacher's location is a path or a stage; its identity is a file input.
        let TrainDeSpec {
            teacher_de_dir: _,
            teacher_de_layer,
            teacher_de_max_len,
            teacher_ce: _,
            dataset_dir: _,
            split,
            seed,
            settings,
        } = self;
        json!({
            "split": split,
            "seed": seed,
            "settings": settings,
            "teacher_de_layer": teacher_de_layer,
            "teacher_de_max_len": teacher_de_max_len,
        })
    }
}

impl RerankSpec {
    fn key_params(&self) -> Value {
        let RerankSpec {
            cross_encoder: _,
            dataset_dir: _,
            split,
            settings,
            measures,
            queries,
        } = self;
        let mut params = json!({
            "split": split,
            "settings": settings,
            "measures": measures,
        });
        if !queries.is_all() {
            params["queries"] = json!(queries);
        }
        params
    }
}

impl BenchSpec {
    fn key_params(&self) -> Value {
        let BenchSpec {
            model: _,
            dataset_dir: _,
            input,
            max_len,
            batch,
            precision,
            settings,
        } = self;
        let mut params = json!({
            "input": input,
            "max_len": max_len,
            "batch": batch,
            "settings": settings,
        });
        if !precision.is_f32() {
            params["precision"] = json!(precision);
        }
        params
    }
}

/// sha256 (hex) of the canonical JSON of `value` (object keys sorted, no whitespace).
pub fn canonical_key(value: &Value) -> String {
    // serde_json's map is ordered by key (no `preserve_order` feature), so serialising is
    // canonical.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(stage.name().parse::<Stage>(), Ok(stage));
        }
        assert!("train"
            .parse::<Stage>()
            .unwrap_err()
            .contains("encode, eval"));
    }

    fn encode(dataset_dir: &str, shard: Option<Shard>) -> TaskSpec {
        TaskSpec::Encode(EncodeSpec {
            model: ModelLocation::Dir {
                path: "model".into(),
            },
            dataset_dir: dataset_dir.into(),
            split: "test".into(),
            input: InputFormat::Single,
            max_len: 32,
            batch: 8,
            depth: 2,
            precision: Precision::F32,
            shard,
        })
    }

    #[test]
    fn paths_are_not_key_parameters_and_settings_are() {
        assert_eq!(
            encode("here", None).key_params(),
            encode("there", None).key_params()
        );
        assert_eq!(
            encode("here", None).key_params(),
            json!({"split": "test", "input": "single", "max_len": 32, "batch": 8, "depth": 2})
        );
        let sharded = encode("here", Some(Shard { index: 1, count: 3 })).key_params();
        assert_eq!(sharded["shard"], json!([1, 3]));
    }

    #[test]
    fn only_an_unseen_query_set_is_a_key_parameter() {
        let eval = |queries| EvalSpec {
            dataset_dir: "d".into(),
            split: "test".into(),
            layer: 2,
            pooling: Pooling::Mean,
            normalize: true,
            top_k: 10,
            measures: vec!["ndcg_cut.10".into()],
            queries,
        };
        let before = json!({"split": "test", "layer": 2, "pooling": "mean", "normalize": true,
            "top_k": 10, "measures": ["ndcg_cut.10"]});
        assert_eq!(eval(QuerySet::All).key_params(), before);
        let mut unseen = before;
        unseen["queries"] = json!("unseen");
        assert_eq!(eval(QuerySet::Unseen).key_params(), unseen);
        // A spec written before the field existed reads as `all`.
        let old = serde_json::to_value(eval(QuerySet::All)).unwrap();
        assert!(old.get("queries").is_none());
        let read: EvalSpec = serde_json::from_value(old).unwrap();
        assert_eq!(read.queries, QuerySet::All);
    }
}
