/*!
Plans: an experiment's cells expanded into a DAG of content-addressed stage tasks.

This module owns the vocabulary shared by the scheduler, the workers and the store: stages,
task specifications, task outcomes, and the cache key of a task, which is the sha256 of the
canonical JSON of **all** its declared inputs: every parameter (the names and the values,
never filtered), the content hashes of its model and dataset files, its upstream tasks' keys
and the stage's code version. Paths are not inputs: moving a model does not invalidate it,
changing one byte of it does.

Tasks are shared wherever their inputs are equal: every (layer, pooling) of one (model,
dataset, input, max_len, batch) reads the pooled embeddings of ONE encode task, whose single
forward pass yields every layer and pooling. A task producing a model consumed by later tasks
(training, in later stages) fits the same shape: its key is an upstream key of its consumers.

This module must not run anything, read the store, or touch the network.
*/

mod resolve;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{
    Cell, ModelKind, ModelOrigin, ModelShape, ModelSpec, RerankSettings, TrainCeSettings,
    TrainDeSettings,
};
use crate::model::{InputFormat, Pooling, Shard};

pub use resolve::{content_hash, dataset_files, model_files, ResolveError};

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
    pub settings: crate::config::BenchConfig,
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

/// One node of the DAG.
#[derive(Debug, Clone)]
pub struct Task {
    pub key: String,
    pub stage: Stage,
    pub spec: TaskSpec,
    /// The canonical declared inputs the key hashes.
    pub inputs: serde_json::Value,
    /// Indices of upstream tasks in [`Plan::tasks`] (always lower than this task's).
    pub upstream: Vec<usize>,
    /// A short human description for progress and explanations.
    pub label: String,
}

/// A cell and the tasks that produce its results, by stage.
#[derive(Debug, Clone)]
pub struct PlannedCell {
    pub cell: Cell,
    pub key: String,
    pub tasks: Vec<(Stage, usize)>,
}

/// A model as the plan sees it: where it is and what it is, by content.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub dir: PathBuf,
    pub kind: ModelKind,
    pub shape: ModelShape,
    /// Hash of the files the model is read from.
    pub sha256: String,
}

/// A dataset as the plan sees it.
#[derive(Debug, Clone)]
pub struct ResolvedDataset {
    pub dir: PathBuf,
    /// The split evaluated on.
    pub split: String,
    /// Hash of the corpus, queries and the split's judgments.
    pub sha256: String,
    /// The same hash for other splits that trained models learn from, by split.
    pub splits: BTreeMap<String, String>,
}

/// The DAG: tasks in dependency order and the cells they serve.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub tasks: Vec<Task>,
    pub cells: Vec<PlannedCell>,
}

/// sha256 (hex) of the canonical JSON of `value` (object keys sorted, no whitespace).
pub fn canonical_key(value: &serde_json::Value) -> String {
    // serde_json's map is ordered by key (no `preserve_order` feature), so serialising is
    // canonical.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// Builds the declared inputs of a task; the key is their [`canonical_key`].
fn declared_inputs(
    stage: Stage,
    params: serde_json::Value,
    files: serde_json::Value,
    upstream: &[&Task],
) -> serde_json::Value {
    // One key per upstream stage; the shards of a sharded encode as a list, in shard order.
    let mut by_stage: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for task in upstream {
        by_stage
            .entry(task.stage.name())
            .or_default()
            .push(task.key.clone().into());
    }
    let upstream: serde_json::Map<String, serde_json::Value> = by_stage
        .into_iter()
        .map(|(stage, mut keys)| {
            let value = if keys.len() == 1 {
                keys.remove(0)
            } else {
                serde_json::Value::Array(keys)
            };
            (stage.to_string(), value)
        })
        .collect();
    serde_json::json!({
        "stage": stage.name(),
        "code_version": stage.code_version(),
        "params": params,
        "files": files,
        "upstream": upstream,
    })
}

/// What [`Plan::build`] reads besides the cells: the experiment's model tables (how trained
/// models are made) and the resolved checkpoints and datasets.
pub struct PlanInputs<'a> {
    pub specs: &'a BTreeMap<String, ModelSpec>,
    pub models: &'a BTreeMap<String, ResolvedModel>,
    pub datasets: &'a BTreeMap<String, ResolvedDataset>,
}

/// Where a cell's model comes from: its location for workers, its identity for keys (a
/// content hash, or the key of the task that trains it) and that task.
struct ModelSource {
    location: ModelLocation,
    identity: String,
    task: Option<usize>,
}

/// An encode of a dataset by a model, before it becomes a task.
struct EncodeRequest<'a> {
    model: &'a str,
    source: &'a ModelSource,
    dataset: &'a ResolvedDataset,
    input: InputFormat,
    max_len: usize,
    batch: usize,
    depth: usize,
    shards: usize,
}

impl<'a> PlanInputs<'a> {
    fn model(&self, name: &str) -> Result<&'a ResolvedModel, ResolveError> {
        self.models
            .get(name)
            .ok_or_else(|| ResolveError::Unresolved(format!("model `{name}`")))
    }

    fn dataset(&self, name: &str) -> Result<&'a ResolvedDataset, ResolveError> {
        self.datasets
            .get(name)
            .ok_or_else(|| ResolveError::Unresolved(format!("dataset `{name}`")))
    }

    fn spec(&self, name: &str) -> Result<&'a ModelSpec, ResolveError> {
        self.specs
            .get(name)
            .ok_or_else(|| ResolveError::Unresolved(format!("model table `{name}`")))
    }

    /// A name referenced by a model table (validated when the file was read).
    fn reference<'s>(field: &str, value: &'s Option<String>) -> Result<&'s str, ResolveError> {
        value
            .as_deref()
            .ok_or_else(|| ResolveError::Unresolved(format!("the model's `{field}`")))
    }

    /// The judgments hash of a dataset's training split.
    fn split_hash(dataset: &ResolvedDataset, split: &str) -> Result<String, ResolveError> {
        if split == dataset.split {
            return Ok(dataset.sha256.clone());
        }
        dataset.splits.get(split).cloned().ok_or_else(|| {
            ResolveError::Unresolved(format!("split `{split}` of {}", dataset.dir.display()))
        })
    }
}

/// The identity of the cell's model for grouping encodes: its name, plus the training
/// settings and seed that make it when the experiment trains it.
fn model_identity(cell: &Cell, specs: &BTreeMap<String, ModelSpec>) -> String {
    let trained = specs
        .get(&cell.model)
        .is_some_and(|spec| spec.source.is_none());
    if !trained {
        return cell.model.clone();
    }
    serde_json::json!([cell.model, cell.seed, cell.train_ce, cell.train_de]).to_string()
}

impl Plan {
    /// Expands cells into tasks. Every model and dataset a cell names must be resolved;
    /// models the experiment trains get their training tasks upstream of their encodes.
    pub fn build(cells: Vec<Cell>, inputs: &PlanInputs) -> Result<Plan, ResolveError> {
        // An encode serves every cell with the same (model, dataset, input, max_len, batch);
        // it runs as deep as the deepest layer any of them needs.
        let encode_group = |cell: &Cell| {
            (
                model_identity(cell, inputs.specs),
                cell.dataset.clone(),
                cell.input,
                cell.max_len(),
                cell.encode.batch,
            )
        };
        let mut depths: BTreeMap<_, usize> = BTreeMap::new();
        for cell in &cells {
            let depth = depths.entry(encode_group(cell)).or_insert(0);
            *depth = (*depth).max(cell.layer);
        }

        let mut plan = Plan::default();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for cell in cells {
            let dataset = inputs.dataset(&cell.dataset)?;
            let mut cell_tasks = Vec::new();
            let source = plan.model_source(&mut by_key, inputs, &cell, &cell.model)?;
            if let Some(task) = source.task {
                cell_tasks.push((plan.tasks[task].stage, task));
                for &up in &plan.tasks[task].upstream {
                    if matches!(plan.tasks[up].stage, Stage::TrainCe) {
                        cell_tasks.push((Stage::TrainCe, up));
                    }
                }
            }
            let encode = plan.add_encode(
                &mut by_key,
                EncodeRequest {
                    model: &cell.model,
                    source: &source,
                    dataset,
                    input: cell.input,
                    max_len: cell.max_len(),
                    batch: cell.encode.batch,
                    depth: depths[&encode_group(&cell)],
                    shards: cell.encode.shards,
                },
            );
            cell_tasks.extend(encode.iter().map(|&shard| (Stage::Encode, shard)));
            if let Some(bench) = cell
                .bench
                .as_ref()
                .filter(|bench| bench.covers(&cell.dataset, cell.input))
            {
                let task = plan.add_bench(&mut by_key, &cell, &source, dataset, bench);
                cell_tasks.push((Stage::Bench, task));
            }

            let eval_spec = EvalSpec {
                dataset_dir: dataset.dir.clone(),
                split: dataset.split.clone(),
                layer: cell.layer,
                pooling: cell.pooling,
                normalize: cell.eval.normalize,
                top_k: cell.eval.top_k,
                measures: cell.eval.measures(),
            };
            let eval_inputs = declared_inputs(
                Stage::Eval,
                serde_json::json!({
                    "split": eval_spec.split,
                    "layer": eval_spec.layer,
                    "pooling": eval_spec.pooling,
                    "normalize": eval_spec.normalize,
                    "top_k": eval_spec.top_k,
                    "measures": eval_spec.measures,
                }),
                serde_json::json!({"dataset": dataset.sha256}),
                &plan.tasks_at(&encode),
            );
            let eval = plan.add(
                &mut by_key,
                Stage::Eval,
                TaskSpec::Eval(eval_spec),
                eval_inputs,
                encode,
                format!(
                    "eval {} × {} ({}, layer {}, {})",
                    cell.model, cell.dataset, cell.input, cell.layer, cell.pooling
                ),
            );
            cell_tasks.push((Stage::Eval, eval));

            if let Some(rerank) = &cell.rerank {
                let cross_encoder = plan.model_source(&mut by_key, inputs, &cell, &rerank.model)?;
                let mut upstream = vec![eval];
                upstream.extend(cross_encoder.task);
                let upstream_tasks: Vec<&Task> =
                    upstream.iter().map(|&index| &plan.tasks[index]).collect();
                let spec = RerankSpec {
                    cross_encoder: cross_encoder.location.clone(),
                    dataset_dir: dataset.dir.clone(),
                    split: dataset.split.clone(),
                    settings: rerank.clone(),
                    measures: cell.eval.measures(),
                };
                let rerank_inputs = declared_inputs(
                    Stage::Rerank,
                    serde_json::json!({
                        "split": spec.split,
                        "settings": spec.settings,
                        "measures": spec.measures,
                    }),
                    serde_json::json!({
                        "dataset": dataset.sha256,
                        "cross_encoder": cross_encoder.identity,
                    }),
                    &upstream_tasks,
                );
                let task = plan.add(
                    &mut by_key,
                    Stage::Rerank,
                    TaskSpec::Rerank(spec),
                    rerank_inputs,
                    upstream,
                    format!(
                        "rerank {} × {} (layer {}, {}) with {} top {}",
                        cell.model,
                        cell.dataset,
                        cell.layer,
                        cell.pooling,
                        rerank.model,
                        rerank.top_k
                    ),
                );
                if let Some(ce_task) = cross_encoder.task {
                    if !cell_tasks.iter().any(|&(_, index)| index == ce_task) {
                        cell_tasks.push((Stage::TrainCe, ce_task));
                    }
                }
                cell_tasks.push((Stage::Rerank, task));
            }

            let params = serde_json::to_value(cell.params()).unwrap_or_default();
            cell_tasks.sort();
            cell_tasks.dedup();
            plan.cells.push(PlannedCell {
                key: canonical_key(&params),
                cell,
                tasks: cell_tasks,
            });
        }
        Ok(plan)
    }

    /// The encode tasks of a request (shared with every equal request): one, or one per
    /// shard in shard order.
    fn add_encode(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        request: EncodeRequest,
    ) -> Vec<usize> {
        let shards = request.shards.max(1);
        let upstream: Vec<usize> = request.source.task.into_iter().collect();
        let mut tasks = Vec::with_capacity(shards);
        for index in 0..shards {
            let shard = (shards > 1).then_some(Shard {
                index,
                count: shards,
            });
            let spec = EncodeSpec {
                model: request.source.location.clone(),
                dataset_dir: request.dataset.dir.clone(),
                split: request.dataset.split.clone(),
                input: request.input,
                max_len: request.max_len,
                batch: request.batch,
                depth: request.depth,
                shard,
            };
            let mut params = serde_json::json!({
                "split": spec.split,
                "input": spec.input,
                "max_len": spec.max_len,
                "batch": spec.batch,
                "depth": spec.depth,
            });
            // Only a sharded encode names its shard, so unsharded keys stay as they were.
            if let Some(shard) = shard {
                params["shard"] = serde_json::json!([shard.index, shard.count]);
            }
            let inputs = declared_inputs(
                Stage::Encode,
                params,
                serde_json::json!({
                    "model": request.source.identity,
                    "dataset": request.dataset.sha256,
                }),
                &self.tasks_at(&upstream),
            );
            let part = shard
                .map(|shard| format!(", shard {}/{}", shard.index + 1, shard.count))
                .unwrap_or_default();
            let label = format!(
                "encode {} × {} ({}, max_len {}, layers 0-{}{part})",
                request.model,
                request
                    .dataset
                    .dir
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                spec.input,
                spec.max_len,
                spec.depth
            );
            tasks.push(self.add(
                by_key,
                Stage::Encode,
                TaskSpec::Encode(spec),
                inputs,
                upstream.clone(),
                label,
            ));
        }
        tasks
    }

    fn tasks_at(&self, indices: &[usize]) -> Vec<&Task> {
        indices.iter().map(|&index| &self.tasks[index]).collect()
    }

    /// The bench task of the cell's model on its dataset (shared by every cell with the same
    /// model, dataset, input, max_len and batch).
    fn add_bench(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        cell: &Cell,
        source: &ModelSource,
        dataset: &ResolvedDataset,
        settings: &crate::config::BenchConfig,
    ) -> usize {
        let spec = BenchSpec {
            model: source.location.clone(),
            dataset_dir: dataset.dir.clone(),
            input: cell.input,
            max_len: cell.max_len(),
            batch: cell.encode.batch,
            settings: settings.clone(),
        };
        let upstream: Vec<usize> = source.task.into_iter().collect();
        let upstream_tasks: Vec<&Task> = upstream.iter().map(|&i| &self.tasks[i]).collect();
        let inputs = declared_inputs(
            Stage::Bench,
            serde_json::json!({
                "input": spec.input,
                "max_len": spec.max_len,
                "batch": spec.batch,
                "settings": spec.settings,
            }),
            serde_json::json!({
                "model": source.identity,
                // The first documents of the corpus: the dataset's content identifies them.
                "dataset": dataset.sha256,
            }),
            &upstream_tasks,
        );
        let label = format!(
            "bench {} × {} ({}, max_len {}, {} documents)",
            cell.model, cell.dataset, spec.input, spec.max_len, spec.settings.documents
        );
        self.add(
            by_key,
            Stage::Bench,
            TaskSpec::Bench(spec),
            inputs,
            upstream,
            label,
        )
    }

    /// Where the model `name` comes from in this cell, adding the tasks that train it.
    fn model_source(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        inputs: &PlanInputs,
        cell: &Cell,
        name: &str,
    ) -> Result<ModelSource, ResolveError> {
        let spec = inputs.spec(name)?;
        match spec.origin() {
            ModelOrigin::Checkpoint(_) => {
                let model = inputs.model(name)?;
                Ok(ModelSource {
                    location: ModelLocation::Dir {
                        path: model.dir.clone(),
                    },
                    identity: model.sha256.clone(),
                    task: None,
                })
            }
            ModelOrigin::TrainedCe => {
                let settings = cell.train_ce.clone().ok_or_else(|| {
                    ResolveError::Unresolved(format!("train_ce settings for `{name}`"))
                })?;
                let base = inputs.model(PlanInputs::reference("base", &spec.base)?)?;
                let retriever_name = PlanInputs::reference("negatives_from", &spec.negatives_from)?;
                let dataset =
                    inputs.dataset(PlanInputs::reference("train_dataset", &spec.train_dataset)?)?;
                let train_hash = PlanInputs::split_hash(dataset, &spec.train_split)?;
                let (encode, retriever) =
                    self.retriever_encode(by_key, inputs, retriever_name, dataset, cell)?;
                let task_spec = TrainCeSpec {
                    base_dir: base.dir.clone(),
                    retriever_dir: retriever.dir.clone(),
                    retriever_layer: retriever.shape.depth,
                    retriever_max_len: inputs.spec(retriever_name)?.max_len,
                    dataset_dir: dataset.dir.clone(),
                    split: spec.train_split.clone(),
                    seed: cell.seed,
                    settings,
                };
                let task_inputs = declared_inputs(
                    Stage::TrainCe,
                    serde_json::json!({
                        "split": task_spec.split,
                        "seed": task_spec.seed,
                        "settings": task_spec.settings,
                        "retriever_layer": task_spec.retriever_layer,
                        "retriever_max_len": task_spec.retriever_max_len,
                    }),
                    serde_json::json!({
                        "base": base.sha256,
                        "retriever": retriever.sha256,
                        "dataset": train_hash,
                    }),
                    &self.tasks_at(&encode),
                );
                let label = format!("train_ce {name} (seed {})", cell.seed);
                let task = self.add(
                    by_key,
                    Stage::TrainCe,
                    TaskSpec::TrainCe(task_spec),
                    task_inputs,
                    encode,
                    label,
                );
                Ok(self.trained(Stage::TrainCe, task))
            }
            ModelOrigin::TrainedDe => {
                let settings = cell.train_de.clone().ok_or_else(|| {
                    ResolveError::Unresolved(format!("train_de settings for `{name}`"))
                })?;
                let teacher_name = PlanInputs::reference("teacher_de", &spec.teacher_de)?;
                let teacher = inputs.model(teacher_name)?;
                let dataset =
                    inputs.dataset(PlanInputs::reference("train_dataset", &spec.train_dataset)?)?;
                let train_hash = PlanInputs::split_hash(dataset, &spec.train_split)?;
                let mut upstream = Vec::new();
                let teacher_ce = match &spec.teacher_ce {
                    Some(ce) => {
                        let source = self.model_source(by_key, inputs, cell, ce)?;
                        upstream.extend(source.task);
                        Some(source)
                    }
                    None => None,
                };
                // margin_mse mines with the teacher DE's corpus embeddings; mse reads its
                // corpus targets from them.
                if matches!(settings.loss.as_str(), "margin_mse" | "mse") {
                    let (encode, _) =
                        self.retriever_encode(by_key, inputs, teacher_name, dataset, cell)?;
                    upstream.extend(encode);
                }
                let task_spec = TrainDeSpec {
                    teacher_de_dir: teacher.dir.clone(),
                    teacher_de_layer: teacher.shape.depth,
                    teacher_de_max_len: inputs.spec(teacher_name)?.max_len,
                    teacher_ce: teacher_ce.as_ref().map(|source| source.location.clone()),
                    dataset_dir: dataset.dir.clone(),
                    split: spec.train_split.clone(),
                    seed: cell.seed,
                    settings,
                };
                let upstream_tasks: Vec<&Task> = upstream.iter().map(|&i| &self.tasks[i]).collect();
                let task_inputs = declared_inputs(
                    Stage::TrainDe,
                    serde_json::json!({
                        "split": task_spec.split,
                        "seed": task_spec.seed,
                        "settings": task_spec.settings,
                        "teacher_de_layer": task_spec.teacher_de_layer,
                        "teacher_de_max_len": task_spec.teacher_de_max_len,
                    }),
                    serde_json::json!({
                        "teacher_de": teacher.sha256,
                        "teacher_ce": teacher_ce.as_ref().map(|source| source.identity.clone()),
                        "dataset": train_hash,
                    }),
                    &upstream_tasks,
                );
                let label = format!(
                    "train_de {name} ({} layers, {}, {}, seed {})",
                    task_spec.settings.layers,
                    task_spec.settings.init,
                    task_spec.settings.loss,
                    cell.seed
                );
                let task = self.add(
                    by_key,
                    Stage::TrainDe,
                    TaskSpec::TrainDe(task_spec),
                    task_inputs,
                    upstream,
                    label,
                );
                Ok(self.trained(Stage::TrainDe, task))
            }
        }
    }

    fn trained(&self, stage: Stage, task: usize) -> ModelSource {
        ModelSource {
            location: ModelLocation::Trained { stage },
            identity: self.tasks[task].key.clone(),
            task: Some(task),
        }
    }

    /// The full-depth encode of `dataset` by the checkpoint `retriever` (its corpus
    /// embeddings are what negatives are mined from), shared with the eval encode when the
    /// settings agree.
    fn retriever_encode<'m>(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        inputs: &PlanInputs<'m>,
        retriever_name: &str,
        dataset: &ResolvedDataset,
        cell: &Cell,
    ) -> Result<(Vec<usize>, &'m ResolvedModel), ResolveError> {
        let retriever = inputs.model(retriever_name)?;
        let source = ModelSource {
            location: ModelLocation::Dir {
                path: retriever.dir.clone(),
            },
            identity: retriever.sha256.clone(),
            task: None,
        };
        let encode = self.add_encode(
            by_key,
            EncodeRequest {
                model: retriever_name,
                source: &source,
                dataset,
                input: InputFormat::Single,
                max_len: inputs.spec(retriever_name)?.max_len,
                batch: cell.encode.batch,
                depth: retriever.shape.depth,
                shards: cell.encode.shards,
            },
        );
        Ok((encode, retriever))
    }

    fn add(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        stage: Stage,
        spec: TaskSpec,
        inputs: serde_json::Value,
        upstream: Vec<usize>,
        label: String,
    ) -> usize {
        let key = canonical_key(&inputs);
        if let Some(&index) = by_key.get(&key) {
            return index;
        }
        self.tasks.push(Task {
            key: key.clone(),
            stage,
            spec,
            inputs,
            upstream,
            label,
        });
        by_key.insert(key, self.tasks.len() - 1);
        self.tasks.len() - 1
    }

    /// Tasks that depend on `index`, directly or not.
    pub fn downstream(&self, index: usize) -> Vec<usize> {
        let mut reached = vec![false; self.tasks.len()];
        reached[index] = true;
        let mut found = Vec::new();
        for (later, task) in self.tasks.iter().enumerate().skip(index + 1) {
            if task.upstream.iter().any(|&up| reached[up]) {
                reached[later] = true;
                found.push(later);
            }
        }
        found
    }

    /// How many tasks of `stage` the plan holds.
    pub fn count(&self, stage: Stage) -> usize {
        self.tasks.iter().filter(|task| task.stage == stage).count()
    }
}

/// The differences between two declared-input documents, as `path: old → new` lines.
pub fn input_differences(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let mut differences = Vec::new();
    diff("", old, new, &mut differences);
    differences
}

fn diff(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(&inner, x, y, out),
                    (None, Some(y)) => out.push(format!("{inner}: (none) → {}", short(y))),
                    (Some(x), None) => out.push(format!("{inner}: {} → (none)", short(x))),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {} → {}", short(a), short(b))),
        _ => {}
    }
}

fn short(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) if text.len() == 64 => format!("{}…", &text[..12]),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Experiment;
    use std::path::Path;

    fn resolved() -> (
        BTreeMap<String, ResolvedModel>,
        BTreeMap<String, ResolvedDataset>,
        BTreeMap<String, ModelShape>,
    ) {
        let shape = ModelShape {
            depth: 3,
            max_positions: 64,
        };
        let model = ResolvedModel {
            dir: "m".into(),
            kind: ModelKind::De,
            shape,
            sha256: "m-sha".into(),
        };
        let dataset = ResolvedDataset {
            dir: "d".into(),
            split: "test".into(),
            sha256: "d-sha".into(),
            splits: [("train".to_string(), "d-train-sha".to_string())].into(),
        };
        (
            [("tiny".to_string(), model)].into(),
            [("d".to_string(), dataset)].into(),
            [("tiny".to_string(), shape)].into(),
        )
    }

    fn plan(sweep: &str) -> Plan {
        let text = format!(
            "[experiment]\nschema = 1\nname = \"t\"\n[models.tiny]\nsource = \"m\"\nmax_len = 32\n[datasets.d]\npath = \"d\"\n{sweep}"
        );
        build(&text)
    }

    fn build(text: &str) -> Plan {
        let experiment = Experiment::parse(Path::new("e.toml"), text).unwrap();
        let (models, datasets, shapes) = resolved();
        let inputs = PlanInputs {
            specs: &experiment.models,
            models: &models,
            datasets: &datasets,
        };
        Plan::build(experiment.expand(&shapes).unwrap(), &inputs).unwrap()
    }

    /// A distillation study on the tiny model: a CE teacher trained from it, students, and
    /// re-ranking of the teacher DE and of one student.
    const DISTILL: &str = r#"
[experiment]
schema = 1
name = "distill"
[models.tiny]
source = "m"
max_len = 32
[models.teacher]
kind = "ce"
base = "tiny"
train_dataset = "d"
negatives_from = "tiny"
max_len = 32
[models.student]
teacher_de = "tiny"
teacher_ce = "teacher"
train_dataset = "d"
max_len = 32
[datasets.d]
path = "d"
[[sweep]]
model = ["teacher"]
layers = "all"
input = ["single", "self_pair"]
[[sweep]]
model = ["tiny"]
layers = [3]
rerank.model = ["", "teacher"]
[[sweep]]
model = ["student"]
layers = [2]
train_de.init = ["ce:1", "de:1", "random"]
train_de.loss = ["mse", "mnrl"]
[[sweep]]
model = ["student"]
layers = [2]
train_de.init = ["ce:1"]
train_de.loss = ["mse"]
rerank.model = ["teacher"]
"#;

    #[test]
    fn training_tasks_feed_encodes_and_reranks() {
        let plan = build(DISTILL);
        // 4 teacher layers × 2 inputs, DE with and without re-ranking, 6 students + 1
        // re-ranked student.
        assert_eq!(plan.cells.len(), 8 + 2 + 6 + 1);
        assert_eq!(plan.count(Stage::TrainCe), 1);
        assert_eq!(plan.count(Stage::TrainDe), 6);
        assert_eq!(plan.count(Stage::Rerank), 2);
        // Encodes: the teacher × 2 inputs, the DE once (its eval encode is also the mining
        // retriever's), 6 students.
        assert_eq!(plan.count(Stage::Encode), 2 + 1 + 6);
        let train_ce = plan
            .tasks
            .iter()
            .position(|task| task.stage == Stage::TrainCe)
            .unwrap();
        let mining = plan.tasks[train_ce].upstream.clone();
        assert_eq!(mining.len(), 1);
        assert!(matches!(
            &plan.tasks[mining[0]].spec,
            TaskSpec::Encode(EncodeSpec {
                model: ModelLocation::Dir { .. },
                depth: 3,
                ..
            })
        ));
        for (index, task) in plan.tasks.iter().enumerate() {
            assert!(task.upstream.iter().all(|&up| up < index), "{}", task.label);
            match &task.spec {
                TaskSpec::TrainDe(spec) => {
                    let upstream: Vec<Stage> = task
                        .upstream
                        .iter()
                        .map(|&up| plan.tasks[up].stage)
                        .collect();
                    // mse reads its corpus targets from the DE's encode (the same task
                    // as its eval's and the mining retriever's: no extra encode above).
                    let expected = match spec.settings.loss.as_str() {
                        "mse" => vec![Stage::TrainCe, Stage::Encode],
                        _ => vec![Stage::TrainCe],
                    };
                    assert_eq!(upstream, expected, "{}", task.label);
                    assert_eq!(
                        spec.teacher_ce,
                        Some(ModelLocation::Trained {
                            stage: Stage::TrainCe
                        })
                    );
                }
                TaskSpec::Rerank(spec) => {
                    let upstream: Vec<Stage> = task
                        .upstream
                        .iter()
                        .map(|&up| plan.tasks[up].stage)
                        .collect();
                    assert_eq!(upstream, vec![Stage::Eval, Stage::TrainCe]);
                    assert_eq!(
                        spec.cross_encoder,
                        ModelLocation::Trained {
                            stage: Stage::TrainCe
                        }
                    );
                }
                TaskSpec::Encode(EncodeSpec {
                    model: ModelLocation::Trained { stage },
                    ..
                }) => {
                    assert_eq!(task.upstream.len(), 1);
                    assert_eq!(plan.tasks[task.upstream[0]].stage, *stage);
                }
                _ => {}
            }
        }
        // Every student cell lists its training tasks; the plain DE cell lists none.
        for planned in &plan.cells {
            let stages: Vec<Stage> = planned.tasks.iter().map(|(stage, _)| *stage).collect();
            match planned.cell.model.as_str() {
                "student" => assert!(stages.starts_with(&[
                    Stage::Encode,
                    Stage::Eval,
                    Stage::TrainCe,
                    Stage::TrainDe
                ])),
                "teacher" => assert_eq!(stages, vec![Stage::Encode, Stage::Eval, Stage::TrainCe]),
                _ if planned.cell.rerank.is_some() => {
                    assert_eq!(
                        stages,
                        vec![Stage::Encode, Stage::Eval, Stage::TrainCe, Stage::Rerank]
                    )
                }
                _ => assert_eq!(stages, vec![Stage::Encode, Stage::Eval]),
            }
        }
    }

    #[test]
    fn a_student_setting_changes_only_student_tasks() {
        let base = build(DISTILL);
        let changed = build(&DISTILL.replace(
            "[datasets.d]",
            "[train_de]\nlearning_rate = 0.001\n[datasets.d]",
        ));
        let keys = |plan: &Plan, stages: &[Stage]| -> std::collections::BTreeSet<String> {
            plan.tasks
                .iter()
                .filter(|task| stages.contains(&task.stage))
                .map(|task| task.key.clone())
                .collect()
        };
        let fixed = [Stage::TrainCe, Stage::Rerank];
        assert_eq!(
            keys(&base, &[Stage::TrainCe]),
            keys(&changed, &[Stage::TrainCe])
        );
        assert!(keys(&base, &[Stage::TrainDe]).is_disjoint(&keys(&changed, &[Stage::TrainDe])));
        // The DE's own re-rank is unchanged; the student's is new.
        assert_eq!(
            keys(&base, &fixed)
                .intersection(&keys(&changed, &fixed))
                .count(),
            2
        );
    }

    #[test]
    fn one_encode_serves_every_layer_and_pooling() {
        let plan = plan("[sweep]\nlayers = \"all\"\npooling = [\"mean\", \"cls\", \"max\", \"mean_nospecial\"]\ninput = [\"single\", \"self_pair\"]\n");
        assert_eq!(plan.cells.len(), 4 * 4 * 2);
        assert_eq!(plan.count(Stage::Encode), 2, "one encode per input format");
        assert_eq!(plan.count(Stage::Eval), 32);
        for (index, task) in plan.tasks.iter().enumerate() {
            assert!(task.upstream.iter().all(|&up| up < index));
        }
    }

    #[test]
    fn keys_change_with_any_input_and_only_then() {
        let base = plan("[sweep]\nlayers = [1, 2]\n");
        let again = plan("[sweep]\nlayers = [1, 2]\n");
        let keys = |p: &Plan| p.tasks.iter().map(|t| t.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&base), keys(&again));
        // A different top_k changes the eval tasks only.
        let top_k = plan("[sweep]\nlayers = [1, 2]\n[eval]\ntop_k = 50\n");
        assert_eq!(base.tasks[0].key, top_k.tasks[0].key);
        assert_ne!(base.tasks[1].key, top_k.tasks[1].key);
        // A different batch changes the encode and, through its key, every eval.
        let batch = plan("[sweep]\nlayers = [1, 2]\n[encode]\nbatch = 8\n");
        assert!(keys(&base).iter().all(|key| !keys(&batch).contains(key)));
        let differences = input_differences(&base.tasks[0].inputs, &batch.tasks[0].inputs);
        assert_eq!(differences, vec!["params.batch: 32 → 8"]);
    }

    #[test]
    fn downstream_follows_edges() {
        let plan = plan("[sweep]\nlayers = [1, 2]\n");
        assert_eq!(plan.downstream(0), vec![1, 2]);
        assert!(plan.downstream(1).is_empty());
    }

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
}
