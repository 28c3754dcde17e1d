//! From an experiment file to a plan: resolve models and datasets, check the sweep against
//! the models' shapes, hash the inputs' contents, build the DAG.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, DatasetSpec, Experiment, ModelOrigin, ModelShape};
use crate::data::beir;
use crate::model::check_checkpoint;
use crate::model::hub::{resolve_model, HubSettings};
use crate::plan::{
    content_hash, dataset_files, model_files, Plan, PlanInputs, ResolveError, ResolvedDataset,
    ResolvedModel,
};
use crate::store::{FileStamp, Store, StoreError};

/// Why an experiment could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// An experiment ready to run.
#[derive(Debug)]
pub struct Prepared {
    pub experiment: Experiment,
    pub models: BTreeMap<String, ResolvedModel>,
    pub datasets: BTreeMap<String, ResolvedDataset>,
    pub plan: Plan,
}

/// Reads, checks and plans the experiment at `path`. File hashes are remembered in `store`
/// (by path, size, modification and change times and inode) so that a warm run does not
/// re-read model weights.
pub fn prepare(
    path: &Path,
    data_dir: &Path,
    mirror: Option<&Path>,
    mut store: Option<&mut Store>,
) -> Result<Prepared, PrepareError> {
    let experiment = Experiment::read(path)?;
    let models = resolve_models(&experiment, store.as_deref_mut())?;
    let shapes = models
        .iter()
        .map(|(name, model)| (name.clone(), model.shape))
        .collect();
    let mut datasets = BTreeMap::new();
    for (name, spec) in &experiment.datasets {
        let dataset = resolve_dataset(&experiment, name, spec, data_dir, mirror, &mut store)?;
        datasets.insert(name.clone(), dataset);
    }
    let cells = experiment.expand(&shapes)?;
    let plan = Plan::build(
        cells,
        &PlanInputs {
            specs: &experiment.models,
            models: &models,
            datasets: &datasets,
        },
    )?;
    Ok(Prepared {
        experiment,
        models,
        datasets,
        plan,
    })
}

/// Every checkpoint the experiment names, found (locally or in the Hub cache), checked and
/// hashed; models the experiment trains exist only once their training task has run.
fn resolve_models(
    experiment: &Experiment,
    mut store: Option<&mut Store>,
) -> Result<BTreeMap<String, ResolvedModel>, PrepareError> {
    let hub = HubSettings::from_env();
    let mut models = BTreeMap::new();
    for (name, spec) in &experiment.models {
        let ModelOrigin::Checkpoint(source) = spec.origin() else {
            continue;
        };
        let dir = resolve_model(source, &hub).map_err(|err| experiment.model_error(name, err))?;
        let config = check_checkpoint(&dir).map_err(|err| experiment.model_error(name, err))?;
        let shape = ModelShape {
            depth: config.num_hidden_layers,
            max_positions: config.max_position_embeddings,
        };
        let sha256 = hash_model_dir(&dir, store.as_deref_mut())
            .map_err(|err| experiment.model_error(name, err))?;
        models.insert(
            name.clone(),
            ResolvedModel {
                dir,
                kind: spec.kind,
                shape,
                sha256,
            },
        );
    }
    Ok(models)
}

/// One dataset of the experiment found (data directory or mirror), its evaluated split
/// checked and hashed, and so are the splits that trained models learn from.
fn resolve_dataset(
    experiment: &Experiment,
    name: &str,
    spec: &DatasetSpec,
    data_dir: &Path,
    mirror: Option<&Path>,
    store: &mut Option<&mut Store>,
) -> Result<ResolvedDataset, PrepareError> {
    let wanted = spec
        .path
        .as_deref()
        .or(spec.name.as_deref())
        .unwrap_or(name);
    let dir = crate::data::fetch::resolve(wanted, data_dir, mirror)
        .map_err(|err| experiment.dataset_error(name, err))?;
    let sha256 = split_hash(&dir, &spec.split, store.as_deref_mut()).map_err(|problem| {
        experiment.dataset_error(
            name,
            match problem {
                SplitProblem::NoJudgments(qrels) => format!(
                    "split `{}` has no judgments ({} is missing)",
                    spec.split,
                    qrels.display()
                ),
                SplitProblem::Content(message) | SplitProblem::Hash(message) => message,
            },
        )
    })?;
    let mut splits = BTreeMap::new();
    for (model, model_spec) in &experiment.models {
        if model_spec.train_dataset.as_deref() != Some(name) || model_spec.train_split == spec.split
        {
            continue;
        }
        let split = &model_spec.train_split;
        let hash =
            split_hash(&dir, split, store.as_deref_mut()).map_err(|problem| match problem {
                SplitProblem::NoJudgments(qrels) => experiment.model_error(
                    model,
                    format!(
                    "train_split `{split}` of dataset `{name}` has no judgments ({} is missing)",
                    qrels.display()
                ),
                ),
                SplitProblem::Content(message) => experiment.model_error(model, message),
                SplitProblem::Hash(message) => experiment.dataset_error(name, message),
            })?;
        splits.insert(split.clone(), hash);
    }
    if let Some(training) = spec.queries.training_split() {
        let hash = unseen_against(&dir, &spec.split, training, store.as_deref_mut())
            .map_err(|message| experiment.dataset_error(name, message))?;
        splits.insert(training.to_string(), hash);
    }
    Ok(ResolvedDataset {
        dir,
        split: spec.split.clone(),
        sha256,
        splits,
        queries: spec.queries,
    })
}

/// `queries = "unseen"`: the training split is checked and hashed like any split, and the
/// subset it leaves is measured now, so that a subset that cannot be taken, or is empty,
/// stops the run before any compute. Messages continue `datasets.<name>: `.
fn unseen_against(
    dir: &Path,
    split: &str,
    training: &str,
    store: Option<&mut Store>,
) -> Result<String, String> {
    let field = "queries = \"unseen\"";
    let hash = split_hash(dir, training, store).map_err(|problem| match problem {
        SplitProblem::NoJudgments(qrels) => format!(
            "{field} needs the training split `{training}`, which has no judgments ({} is \
             missing)",
            qrels.display()
        ),
        SplitProblem::Content(message) => {
            format!("{field}: training split `{training}`: {message}")
        }
        SplitProblem::Hash(message) => message,
    })?;
    let overlap =
        crate::data::overlap(dir, split, training).map_err(|err| format!("{field}: {err}"))?;
    if overlap.unseen.is_empty() {
        return Err(format!(
            "{field}: every one of the {} queries of split `{split}` overlaps with split \
             `{training}`, so there is nothing to evaluate",
            overlap.evaluated.len()
        ));
    }
    Ok(hash)
}

/// Why a split of a dataset cannot be used.
enum SplitProblem {
    /// Its judgments file is missing (the path).
    NoJudgments(PathBuf),
    /// Its documents, queries or judgments are unusable.
    Content(String),
    /// Its files could not be hashed.
    Hash(String),
}

/// The content hash of one split's files, once the split is checked: judgments present,
/// content usable.
fn split_hash(dir: &Path, split: &str, store: Option<&mut Store>) -> Result<String, SplitProblem> {
    let qrels = crate::data::beir::qrels_path(dir, split);
    if !qrels.is_file() {
        return Err(SplitProblem::NoJudgments(qrels));
    }
    check_dataset_content(dir, split).map_err(SplitProblem::Content)?;
    hash_files(&dataset_files(dir, split), dir, store).map_err(SplitProblem::Hash)
}

/// A model directory's identity: one content hash over the files that define the model
/// ([`model_files`]), the same for `repro run` and `repro bench`.
pub fn hash_model_dir(dir: &Path, store: Option<&mut Store>) -> Result<String, String> {
    hash_files(&model_files(dir), dir, store)
}

/// One content hash over `files` (named relative to `root`), each file's sha256 taken from
/// the store's memory when its size, modification and change times and inode are unchanged.
fn hash_files(
    files: &[PathBuf],
    root: &Path,
    mut store: Option<&mut Store>,
) -> Result<String, String> {
    let mut named = Vec::with_capacity(files.len());
    for file in files {
        let metadata =
            std::fs::metadata(file).map_err(|err| format!("{}: {err}", file.display()))?;
        let stamp = FileStamp::of(&metadata);
        let absolute = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        let key = absolute.display().to_string();
        let cached = match store.as_deref() {
            Some(store) => store
                .cached_file_hash(&key, &stamp)
                .map_err(|err| err.to_string())?,
            None => None,
        };
        let sha = match cached {
            Some(sha) => sha,
            None => {
                let sha = crate::util::sha256_file(file)
                    .map_err(|err| format!("{}: {err}", file.display()))?;
                if let Some(store) = store.as_deref_mut() {
                    store
                        .remember_file_hash(&key, &stamp, &sha)
                        .map_err(|err| err.to_string())?;
                }
                sha
            }
        };
        let name = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        named.push((name, sha));
    }
    Ok(content_hash(&named))
}

/// Reads a dataset's split as the stages will (every check of [`beir::inspect`]: lines parse,
/// ids unique and usable, judgments name known queries and documents) and refuses one that
/// has nothing to evaluate, so that `check` and `run` stop here rather than at an eval.
fn check_dataset_content(dir: &Path, split: &str) -> Result<(), String> {
    let info = beir::inspect(dir, split).map_err(|err| err.to_string())?;
    if info.documents == 0 {
        return Err(format!(
            "{} holds no document",
            dir.join(beir::CORPUS_FILE).display()
        ));
    }
    if info.judged_queries == 0 {
        return Err(format!(
            "split `{split}` judges no query of {}",
            dir.display()
        ));
    }
    Ok(())
}
