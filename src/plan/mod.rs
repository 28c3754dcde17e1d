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

use crate::config::{Cell, ModelKind, ModelShape};
use crate::model::{InputFormat, Pooling};

pub use resolve::{content_hash, dataset_files, model_files, ResolveError};

/// The kinds of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Encode a dataset's queries and corpus once; pool every layer up to a depth with every
    /// pooling.
    Encode,
    /// Retrieve with one (layer, pooling) of an encode and score the run.
    Eval,
}

impl Stage {
    pub const ALL: [Stage; 2] = [Stage::Encode, Stage::Eval];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Encode => "encode",
            Stage::Eval => "eval",
        }
    }

    /// Bumped whenever a stage's code changes what it produces, so that cached results of
    /// the old code are not reused.
    pub fn code_version(self) -> u32 {
        match self {
            // 2: repro's own attention, GELU and dense kernels (last-bit differences).
            Stage::Encode => 2,
            Stage::Eval => 1,
        }
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
}

/// Encode a dataset with a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodeSpec {
    pub model_dir: PathBuf,
    pub dataset_dir: PathBuf,
    pub split: String,
    pub input: InputFormat,
    pub max_len: usize,
    pub batch: usize,
    /// Layers run; hidden states 0..=depth are pooled.
    pub depth: usize,
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
#[serde(tag = "stage", rename_all = "lowercase")]
pub enum TaskSpec {
    Encode(EncodeSpec),
    Eval(EvalSpec),
}

impl TaskSpec {
    pub fn stage(&self) -> Stage {
        match self {
            TaskSpec::Encode(_) => Stage::Encode,
            TaskSpec::Eval(_) => Stage::Eval,
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
    pub split: String,
    /// Hash of the corpus, queries and the split's judgments.
    pub sha256: String,
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
    let upstream: serde_json::Map<String, serde_json::Value> = upstream
        .iter()
        .map(|task| (task.stage.name().to_string(), task.key.clone().into()))
        .collect();
    serde_json::json!({
        "stage": stage.name(),
        "code_version": stage.code_version(),
        "params": params,
        "files": files,
        "upstream": upstream,
    })
}

impl Plan {
    /// Expands cells into tasks. Every model and dataset a cell names must be resolved.
    pub fn build(
        cells: Vec<Cell>,
        models: &BTreeMap<String, ResolvedModel>,
        datasets: &BTreeMap<String, ResolvedDataset>,
    ) -> Result<Plan, ResolveError> {
        let lookup_model = |name: &str| {
            models
                .get(name)
                .ok_or_else(|| ResolveError::Unresolved(format!("model `{name}`")))
        };
        let lookup_dataset = |name: &str| {
            datasets
                .get(name)
                .ok_or_else(|| ResolveError::Unresolved(format!("dataset `{name}`")))
        };
        // An encode serves every cell with the same (model, dataset, input, max_len, batch);
        // it runs as deep as the deepest layer any of them needs.
        let encode_group = |cell: &Cell| {
            (
                cell.model.clone(),
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
            let model = lookup_model(&cell.model)?;
            let dataset = lookup_dataset(&cell.dataset)?;
            let depth = depths[&encode_group(&cell)];
            let encode_spec = EncodeSpec {
                model_dir: model.dir.clone(),
                dataset_dir: dataset.dir.clone(),
                split: dataset.split.clone(),
                input: cell.input,
                max_len: cell.max_len(),
                batch: cell.encode.batch,
                depth,
            };
            let encode_inputs = declared_inputs(
                Stage::Encode,
                serde_json::json!({
                    "split": encode_spec.split,
                    "input": encode_spec.input,
                    "max_len": encode_spec.max_len,
                    "batch": encode_spec.batch,
                    "depth": encode_spec.depth,
                }),
                serde_json::json!({"model": model.sha256, "dataset": dataset.sha256}),
                &[],
            );
            let encode = plan.add(
                &mut by_key,
                Stage::Encode,
                TaskSpec::Encode(encode_spec),
                encode_inputs,
                vec![],
                format!(
                    "encode {} × {} ({}, max_len {}, layers 0-{depth})",
                    cell.model,
                    cell.dataset,
                    cell.input,
                    cell.max_len()
                ),
            );

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
                &[&plan.tasks[encode]],
            );
            let eval = plan.add(
                &mut by_key,
                Stage::Eval,
                TaskSpec::Eval(eval_spec),
                eval_inputs,
                vec![encode],
                format!(
                    "eval {} × {} ({}, layer {}, {})",
                    cell.model, cell.dataset, cell.input, cell.layer, cell.pooling
                ),
            );
            let params = serde_json::to_value(cell.params()).unwrap_or_default();
            plan.cells.push(PlannedCell {
                key: canonical_key(&params),
                cell,
                tasks: vec![(Stage::Encode, encode), (Stage::Eval, eval)],
            });
        }
        Ok(plan)
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
        let experiment = Experiment::parse(Path::new("e.toml"), &text).unwrap();
        let (models, datasets, shapes) = resolved();
        Plan::build(experiment.expand(&shapes).unwrap(), &models, &datasets).unwrap()
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
