/*!
Plans: an experiment's cells expanded into a DAG of content-addressed stage tasks.

This module owns the DAG builder and the cache key of a task, which is the sha256 of the
canonical JSON of **all** its declared inputs: its specification's key parameters (the names
and the values, never filtered; each spec names them itself, see [`crate::task`]), the content
hashes of its model and dataset files, its upstream tasks' keys and the stage's code version.
Paths are not inputs: moving a model does not invalidate it, changing one byte of it does.

Tasks are shared wherever their inputs are equal: every (layer, pooling) of one (model,
dataset, input, max_len, batch) reads the pooled embeddings of ONE encode task, whose single
forward pass yields every layer and pooling. A task producing a model consumed by later tasks
(training, in later stages) fits the same shape: its key is an upstream key of its consumers.

This module must not run anything, read the store, or touch the network.
*/

mod resolve;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::config::{
    Cell, ModelKind, ModelOrigin, ModelShape, ModelSpec, QuerySet, RerankSettings,
};
use crate::model::{InputFormat, Precision, Shard};
use crate::task::{
    canonical_key, BenchSpec, EncodeSpec, EvalSpec, ModelLocation, RerankSpec, Stage, TaskSpec,
    TrainCeSpec, TrainDeSpec,
};
use crate::train::DistillLoss;

pub use resolve::{content_hash, dataset_files, model_files, ResolveError};

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
    /// The same hash for other splits that trained models learn from, or that the evaluated
    /// queries are measured against (`queries = "unseen"`), by split.
    pub splits: BTreeMap<String, String>,
    /// The evaluated split's queries that are scored.
    pub queries: QuerySet,
}

/// The DAG: tasks in dependency order and the cells they serve.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub tasks: Vec<Task>,
    pub cells: Vec<PlannedCell>,
}

/// Builds the declared inputs of a task: its spec's key parameters, the content hashes of
/// its files and its upstream tasks' keys; the key is their [`canonical_key`].
fn declared_inputs(
    spec: &TaskSpec,
    files: serde_json::Value,
    upstream: &[&Task],
) -> serde_json::Value {
    let stage = spec.stage();
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
        "params": spec.key_params(),
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
    precision: Precision,
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

    /// The dataset a trained model learns from and the hash of its training split.
    fn training_split(
        &self,
        spec: &ModelSpec,
    ) -> Result<(&'a ResolvedDataset, String), ResolveError> {
        let dataset = self.dataset(Self::reference("train_dataset", &spec.train_dataset)?)?;
        let hash = Self::split_hash(dataset, &spec.train_split)?;
        Ok((dataset, hash))
    }

    /// The content hashes an eval or rerank of `dataset` reads: the dataset's, and when only
    /// its unseen queries are scored, the training split they are measured against (so that
    /// a changed training split re-runs them).
    fn scored_files(dataset: &ResolvedDataset) -> Result<serde_json::Value, ResolveError> {
        let mut files = serde_json::json!({"dataset": dataset.sha256});
        if let Some(training) = dataset.queries.training_split() {
            files["unseen_against"] = Self::split_hash(dataset, training)?.into();
        }
        Ok(files)
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

/// The cells one encode serves: the same (model, dataset content and split, input, max_len,
/// batch, precision).
type EncodeGroup = (String, String, InputFormat, usize, usize, Precision);

fn encode_group(cell: &Cell, inputs: &PlanInputs) -> EncodeGroup {
    // By what the encode reads, not the dataset's key: two keys of one dataset and split
    // (all its queries, and its unseen ones) share one encode, as deep as either needs.
    let dataset = match inputs.datasets.get(&cell.dataset) {
        Some(dataset) => format!("{}\t{}", dataset.sha256, dataset.split),
        None => cell.dataset.clone(),
    };
    (
        model_identity(cell, inputs.specs),
        dataset,
        cell.input,
        cell.max_len(),
        cell.encode.batch,
        cell.encode.precision,
    )
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
        // An encode serves every cell of its group; it runs as deep as the deepest layer any
        // of them needs.
        let mut depths: BTreeMap<EncodeGroup, usize> = BTreeMap::new();
        for cell in &cells {
            let depth = depths.entry(encode_group(cell, inputs)).or_insert(0);
            *depth = (*depth).max(cell.layer);
        }
        let mut plan = Plan::default();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for cell in cells {
            let depth = depths[&encode_group(&cell, inputs)];
            let tasks = plan.add_cell(&mut by_key, inputs, &cell, depth)?;
            let params = serde_json::to_value(cell.params()).unwrap_or_default();
            plan.cells.push(PlannedCell {
                key: canonical_key(&params),
                cell,
                tasks,
            });
        }
        Ok(plan)
    }

    /// The tasks that produce one cell's results (adding those not planned yet), by stage:
    /// its model's training, the encode, a bench, the eval and a re-rank.
    fn add_cell(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        inputs: &PlanInputs,
        cell: &Cell,
        depth: usize,
    ) -> Result<Vec<(Stage, usize)>, ResolveError> {
        let dataset = inputs.dataset(&cell.dataset)?;
        let mut cell_tasks = Vec::new();
        let source = self.model_source(by_key, inputs, cell, &cell.model)?;
        if let Some(task) = source.task {
            cell_tasks.push((self.tasks[task].stage, task));
            for &up in &self.tasks[task].upstream {
                if matches!(self.tasks[up].stage, Stage::TrainCe) {
                    cell_tasks.push((Stage::TrainCe, up));
                }
            }
        }
        let encode = self.add_encode(
            by_key,
            EncodeRequest {
                model: &cell.model,
                source: &source,
                dataset,
                input: cell.input,
                max_len: cell.max_len(),
                batch: cell.encode.batch,
                precision: cell.encode.precision,
                depth,
                shards: cell.encode.shards,
            },
        );
        cell_tasks.extend(encode.iter().map(|&shard| (Stage::Encode, shard)));
        if let Some(bench) = cell
            .bench
            .as_ref()
            .filter(|bench| bench.covers(&cell.dataset, cell.input))
        {
            let task = self.add_bench(by_key, cell, &source, dataset, bench);
            cell_tasks.push((Stage::Bench, task));
        }
        let eval = self.add_eval(by_key, cell, dataset, encode)?;
        cell_tasks.push((Stage::Eval, eval));
        if let Some(rerank) = &cell.rerank {
            let cross_encoder = self.model_source(by_key, inputs, cell, &rerank.model)?;
            if let Some(ce_task) = cross_encoder.task {
                cell_tasks.push((Stage::TrainCe, ce_task));
            }
            let task = self.add_rerank(by_key, cell, dataset, eval, rerank, cross_encoder)?;
            cell_tasks.push((Stage::Rerank, task));
        }
        cell_tasks.sort();
        cell_tasks.dedup();
        Ok(cell_tasks)
    }

    fn add_eval(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        cell: &Cell,
        dataset: &ResolvedDataset,
        encode: Vec<usize>,
    ) -> Result<usize, ResolveError> {
        let spec = EvalSpec {
            dataset_dir: dataset.dir.clone(),
            split: dataset.split.clone(),
            layer: cell.layer,
            pooling: cell.pooling,
            normalize: cell.eval.normalize,
            top_k: cell.eval.top_k,
            measures: cell.eval.measures(),
            queries: dataset.queries,
        };
        Ok(self.add(
            by_key,
            TaskSpec::Eval(spec),
            PlanInputs::scored_files(dataset)?,
            encode,
            format!(
                "eval {} × {} ({}, layer {}, {})",
                cell.model, cell.dataset, cell.input, cell.layer, cell.pooling
            ),
        ))
    }

    /// Re-ranking of the `eval` task's run by `cross_encoder`.
    fn add_rerank(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        cell: &Cell,
        dataset: &ResolvedDataset,
        eval: usize,
        rerank: &RerankSettings,
        cross_encoder: ModelSource,
    ) -> Result<usize, ResolveError> {
        let mut upstream = vec![eval];
        upstream.extend(cross_encoder.task);
        let spec = RerankSpec {
            cross_encoder: cross_encoder.location,
            dataset_dir: dataset.dir.clone(),
            split: dataset.split.clone(),
            settings: rerank.clone(),
            measures: cell.eval.measures(),
            queries: dataset.queries,
        };
        let mut files = PlanInputs::scored_files(dataset)?;
        files["cross_encoder"] = cross_encoder.identity.into();
        Ok(self.add(
            by_key,
            TaskSpec::Rerank(spec),
            files,
            upstream,
            format!(
                "rerank {} × {} (layer {}, {}) with {} top {}",
                cell.model, cell.dataset, cell.layer, cell.pooling, rerank.model, rerank.top_k
            ),
        ))
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
                precision: request.precision,
                depth: request.depth,
                shard,
            };
            let part = shard
                .map(|shard| format!(", shard {}/{}", shard.index + 1, shard.count))
                .unwrap_or_default();
            let precision = match request.precision {
                Precision::F32 => String::new(),
                other => format!(", {other}"),
            };
            let label = format!(
                "encode {} × {} ({}, max_len {}, layers 0-{}{part}{precision})",
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
                TaskSpec::Encode(spec),
                serde_json::json!({
                    "model": request.source.identity,
                    "dataset": request.dataset.sha256,
                }),
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
            precision: cell.encode.precision,
            settings: settings.clone(),
        };
        let upstream: Vec<usize> = source.task.into_iter().collect();
        let files = serde_json::json!({
            "model": source.identity,
            // The first documents of the corpus: the dataset's content identifies them.
            "dataset": dataset.sha256,
        });
        let label = format!(
            "bench {} × {} ({}, max_len {}, {} documents)",
            cell.model, cell.dataset, spec.input, spec.max_len, spec.settings.documents
        );
        self.add(by_key, TaskSpec::Bench(spec), files, upstream, label)
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
            ModelOrigin::TrainedCe => self.train_ce_source(by_key, inputs, cell, name, spec),
            ModelOrigin::TrainedDe => self.train_de_source(by_key, inputs, cell, name, spec),
        }
    }

    /// A cross encoder the experiment trains: its train_ce task, upstream of which the
    /// retriever's encode of the training dataset (negatives are mined from it).
    fn train_ce_source(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        inputs: &PlanInputs,
        cell: &Cell,
        name: &str,
        spec: &ModelSpec,
    ) -> Result<ModelSource, ResolveError> {
        let settings = cell
            .train_ce
            .clone()
            .ok_or_else(|| ResolveError::Unresolved(format!("train_ce settings for `{name}`")))?;
        let base = inputs.model(PlanInputs::reference("base", &spec.base)?)?;
        let retriever_name = PlanInputs::reference("negatives_from", &spec.negatives_from)?;
        let (dataset, train_hash) = inputs.training_split(spec)?;
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
        let files = serde_json::json!({
            "base": base.sha256,
            "retriever": retriever.sha256,
            "dataset": train_hash,
        });
        let label = format!("train_ce {name} (seed {})", cell.seed);
        let task = self.add(by_key, TaskSpec::TrainCe(task_spec), files, encode, label);
        Ok(self.trained(Stage::TrainCe, task))
    }

    /// A dual-encoder student the experiment distils: its train_de task, upstream of which
    /// the CE teacher's training and, for the losses that read them, the teacher DE's encode.
    fn train_de_source(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        inputs: &PlanInputs,
        cell: &Cell,
        name: &str,
        spec: &ModelSpec,
    ) -> Result<ModelSource, ResolveError> {
        let settings = cell
            .train_de
            .clone()
            .ok_or_else(|| ResolveError::Unresolved(format!("train_de settings for `{name}`")))?;
        let teacher_name = PlanInputs::reference("teacher_de", &spec.teacher_de)?;
        let teacher = inputs.model(teacher_name)?;
        let (dataset, train_hash) = inputs.training_split(spec)?;
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
        if matches!(settings.loss, DistillLoss::MarginMse | DistillLoss::Mse) {
            let (encode, _) = self.retriever_encode(by_key, inputs, teacher_name, dataset, cell)?;
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
        let files = serde_json::json!({
            "teacher_de": teacher.sha256,
            "teacher_ce": teacher_ce.as_ref().map(|source| source.identity.clone()),
            "dataset": train_hash,
        });
        let label = format!(
            "train_de {name} ({} layers, {}, {}, seed {})",
            task_spec.settings.layers, task_spec.settings.init, task_spec.settings.loss, cell.seed
        );
        let task = self.add(by_key, TaskSpec::TrainDe(task_spec), files, upstream, label);
        Ok(self.trained(Stage::TrainDe, task))
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
                // Training data is mined in f32, as training runs (the queries' side too).
                precision: Precision::F32,
                depth: retriever.shape.depth,
                shards: cell.encode.shards,
            },
        );
        Ok((encode, retriever))
    }

    /// The task of `spec` (an equal one already planned is reused): `files` are the content
    /// hashes of what it reads, `upstream` the tasks whose outputs it reads.
    fn add(
        &mut self,
        by_key: &mut HashMap<String, usize>,
        spec: TaskSpec,
        files: serde_json::Value,
        upstream: Vec<usize>,
        label: String,
    ) -> usize {
        let inputs = declared_inputs(&spec, files, &self.tasks_at(&upstream));
        let key = canonical_key(&inputs);
        if let Some(&index) = by_key.get(&key) {
            return index;
        }
        self.tasks.push(Task {
            key: key.clone(),
            stage: spec.stage(),
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
            queries: QuerySet::All,
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
                    let expected = match spec.settings.loss {
                        DistillLoss::Mse => vec![Stage::TrainCe, Stage::Encode],
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
    fn bf16_is_an_encode_axis_of_its_own_and_f32_keys_do_not_name_it() {
        let base = plan("[sweep]\nlayers = [1, 2]\n");
        let f32 = plan("[sweep]\nlayers = [1, 2]\n[encode]\nprecision = \"f32\"\n");
        assert_eq!(base.tasks[0].key, f32.tasks[0].key);
        let both = plan("[sweep]\nlayers = [1, 2]\nencode.precision = [\"f32\", \"bf16\"]\n");
        assert_eq!(both.count(Stage::Encode), 2, "one encode per precision");
        assert_eq!(both.count(Stage::Eval), 4);
        let bf16 = both
            .tasks
            .iter()
            .find(|task| task.stage == Stage::Encode && task.key != base.tasks[0].key)
            .unwrap();
        assert!(bf16.label.ends_with(", bf16)"), "{}", bf16.label);
        let differences = input_differences(&base.tasks[0].inputs, &bf16.inputs);
        assert_eq!(differences, vec!["params.precision: (none) → \"bf16\""]);
    }

    /// A plan of the dataset `d` evaluated whole and, as `u`, on its unseen queries (the
    /// same files), `u` sweeping fewer layers; `train_sha` is the training split's hash.
    fn unseen_plan(train_sha: &str, rerank: bool) -> Plan {
        let mut text = DISTILL.replace(
            "[datasets.d]\npath = \"d\"",
            "[datasets.d]\npath = \"d\"\n[datasets.u]\npath = \"d\"\nqueries = \"unseen\"",
        );
        let cut = text.find("[[sweep]]").unwrap();
        text.truncate(cut);
        text.push_str("[[sweep]]\nmodel = [\"tiny\"]\ndataset = [\"d\"]\nlayers = [2, 3]\n");
        text.push_str("[[sweep]]\nmodel = [\"tiny\"]\ndataset = [\"u\"]\nlayers = [2]\n");
        if rerank {
            text.push_str("rerank.model = [\"teacher\"]\n");
        }
        let experiment = Experiment::parse(Path::new("e.toml"), &text).unwrap();
        let (models, mut datasets, shapes) = resolved();
        let mut unseen = datasets["d"].clone();
        unseen.splits.insert("train".into(), train_sha.into());
        unseen.queries = QuerySet::Unseen;
        datasets
            .get_mut("d")
            .unwrap()
            .splits
            .insert("train".into(), train_sha.into());
        datasets.insert("u".into(), unseen);
        let inputs = PlanInputs {
            specs: &experiment.models,
            models: &models,
            datasets: &datasets,
        };
        Plan::build(experiment.expand(&shapes).unwrap(), &inputs).unwrap()
    }

    fn eval_of<'p>(plan: &'p Plan, dataset: &str, layer: usize) -> &'p Task {
        let cell = plan
            .cells
            .iter()
            .find(|c| c.cell.dataset == dataset && c.cell.layer == layer)
            .unwrap();
        let (_, index) = cell.tasks.iter().find(|(s, _)| *s == Stage::Eval).unwrap();
        &plan.tasks[*index]
    }

    #[test]
    fn an_unseen_subset_shares_the_encode_and_keys_its_eval_on_the_training_split() {
        let plan = unseen_plan("d-train-sha", false);
        assert_eq!(
            plan.count(Stage::Encode),
            1,
            "one encode, as deep as `d` needs"
        );
        assert_eq!(plan.count(Stage::Eval), 3);
        let whole = eval_of(&plan, "d", 2);
        let unseen = eval_of(&plan, "u", 2);
        assert_eq!(whole.upstream, unseen.upstream);
        assert_ne!(whole.key, unseen.key);
        assert!(matches!(
            &unseen.spec,
            TaskSpec::Eval(EvalSpec {
                queries: QuerySet::Unseen,
                ..
            })
        ));
        assert_eq!(
            input_differences(&whole.inputs, &unseen.inputs),
            vec![
                "files.unseen_against: (none) → \"d-train-sha\"",
                "params.queries: (none) → \"unseen\"",
            ]
        );
        // The whole split's eval is what it was without the subset beside it.
        let alone = build(&format!(
            "{}[[sweep]]\nmodel = [\"tiny\"]\nlayers = [2, 3]\n",
            &DISTILL[..DISTILL.find("[[sweep]]").unwrap()]
        ));
        let alone_eval = alone
            .tasks
            .iter()
            .find(|t| t.stage == Stage::Eval && t.label.contains("layer 2"))
            .unwrap();
        assert_eq!(alone_eval.key, whole.key);
        // A changed training split re-runs the subset's eval, not the whole split's.
        let retrained = unseen_plan("d-train-sha-2", false);
        assert_eq!(eval_of(&retrained, "d", 2).key, whole.key);
        assert_ne!(eval_of(&retrained, "u", 2).key, unseen.key);
    }

    #[test]
    fn a_rerank_of_an_unseen_subset_names_its_query_set() {
        let plan = unseen_plan("d-train-sha", true);
        let rerank = plan
            .tasks
            .iter()
            .find(|task| task.stage == Stage::Rerank)
            .unwrap();
        assert_eq!(rerank.inputs["params"]["queries"], "unseen");
        assert_eq!(rerank.inputs["files"]["unseen_against"], "d-train-sha");
        assert!(rerank.inputs["files"]["cross_encoder"].is_string());
        let whole = build(DISTILL);
        let whole_rerank = whole
            .tasks
            .iter()
            .find(|task| task.stage == Stage::Rerank)
            .unwrap();
        assert!(whole_rerank.inputs["params"].get("queries").is_none());
        assert!(whole_rerank.inputs["files"].get("unseen_against").is_none());
    }

    #[test]
    fn downstream_follows_edges() {
        let plan = plan("[sweep]\nlayers = [1, 2]\n");
        assert_eq!(plan.downstream(0), vec![1, 2]);
        assert!(plan.downstream(1).is_empty());
    }

    /// The first key of every stage in the distillation plan (with a bench task), recorded
    /// when each spec began to name its own key parameters (`crate::task`). They equal the
    /// keys before that change (a distill store made before it re-ran 0 tasks after it); a
    /// results store stays cached only while they hold.
    #[test]
    fn keys_stay_as_recorded() {
        let plan = build(&DISTILL.replace(
            "[datasets.d]",
            "[bench]\ndocuments = 4\nruns = 1\n[datasets.d]",
        ));
        let mut first: BTreeMap<Stage, &str> = BTreeMap::new();
        for task in &plan.tasks {
            first.entry(task.stage).or_insert(&task.key);
        }
        let recorded: BTreeMap<Stage, &str> = [
            (
                Stage::Encode,
                "76be4b7d2257a4bf4432e224556e46be3f39ca55b3ecfc48fa61c80fa124d288",
            ),
            (
                Stage::Eval,
                "e94240323d822f154f71c5ad17713914e55aaf7f1d78ba0afb519c9614236871",
            ),
            (
                Stage::TrainCe,
                "a11aa8394642f169d19bf0dff1b0f270fe3d2cc7c7ea0875bda19234a1a57851",
            ),
            (
                Stage::TrainDe,
                "be2d99932fc672d5e7d1d62b629b48de42db5882a1de3f092a6a1188ac7dac1e",
            ),
            (
                Stage::Rerank,
                "a50f050827635949571bf52fed6e4dd1eb1f9d82b9144d089fa0f5e996dc9a38",
            ),
            (
                Stage::Bench,
                "4b11e25431e039b31f0f467739baa5740273a9f82ca79af9e670a817be3effcf",
            ),
        ]
        .into();
        assert_eq!(first, recorded);
    }
}
