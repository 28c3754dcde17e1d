//! Experiment files: what a study runs, as data.
//!
//! ```toml
//! [experiment]
//! schema = 1
//! name = "layer_sweep"
//! seeds = [0]
//!
//! [models.minilm]
//! source = "models/all-MiniLM-L6-v2"   # a directory or a Hugging Face id
//! kind = "de"                           # "de" (dual encoder) or "ce" (cross encoder)
//! max_len = 256
//!
//! [datasets.scifact]
//! name = "scifact"                      # or path = "..."
//! split = "test"
//!
//! [sweep]                               # grid: every combination
//! layers = "all"
//! pooling = ["mean", "cls"]
//! input = ["single", "self_pair"]
//! encode.batch = [16, 32]               # any stage setting is an axis
//!
//! [[sweep.zip]]                         # axes that vary together
//! pooling = ["mean", "cls"]
//! eval.top_k = [100, 1000]
//!
//! [encode]
//! batch = 32
//!
//! [eval]
//! metrics = ["ndcg_cut", "recall", "mrr_cut", "success"]
//! k = [10, 100]
//! top_k = 100
//! ```
//!
//! Parsing checks the shape (unknown keys, types); [`Experiment::expand`] checks everything
//! that needs the models' shapes and turns the sweep into [`Cell`]s. Both report
//! `file:line:column`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{read_toml, ConfigError, LayerSelection};
use crate::model::{InputFormat, Pooling};

/// The experiment-file schema this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Dual encoder or cross encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    De,
    Ce,
}

/// `[models.<name>]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A local directory or a Hugging Face id (`org/name[@revision]`).
    pub source: String,
    #[serde(default = "default_kind")]
    pub kind: ModelKind,
    /// Tokens per input; longer inputs are truncated.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

fn default_kind() -> ModelKind {
    ModelKind::De
}

fn default_max_len() -> usize {
    256
}

/// `[datasets.<name>]`: a dataset by name (data directory, mirror) or by path.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub name: Option<String>,
    pub path: Option<String>,
    #[serde(default = "default_split")]
    pub split: String,
}

fn default_split() -> String {
    "test".to_string()
}

/// `[encode]`: how texts become embeddings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeSettings {
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Overrides the model's `max_len` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
}

fn default_batch() -> usize {
    32
}

impl Default for EncodeSettings {
    fn default() -> Self {
        EncodeSettings {
            batch: default_batch(),
            max_len: None,
        }
    }
}

/// `[eval]`: retrieval depth and measures.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSettings {
    /// trec_eval measure names, with cutoffs (`ndcg_cut.10`) or without (`ndcg_cut`, then
    /// combined with `k`).
    #[serde(default = "default_metrics")]
    pub metrics: Vec<String>,
    /// Cutoffs for the metrics given without one.
    #[serde(default)]
    pub k: Vec<usize>,
    /// Documents retrieved per query.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// L2-normalise embeddings before scoring (scores are cosines).
    #[serde(default = "default_true")]
    pub normalize: bool,
}

fn default_metrics() -> Vec<String> {
    ["ndcg_cut.10", "recall.100", "mrr_cut.10", "success.10"]
        .map(String::from)
        .to_vec()
}

fn default_top_k() -> usize {
    100
}

fn default_true() -> bool {
    true
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            metrics: default_metrics(),
            k: Vec::new(),
            top_k: default_top_k(),
            normalize: true,
        }
    }
}

impl EvalSettings {
    /// The measures in trec_eval `-m` syntax: metrics with a cutoff as written, the others
    /// once per `k` (or with trec_eval's default cutoffs when `k` is empty).
    pub fn measures(&self) -> Vec<String> {
        let mut measures = Vec::new();
        for metric in &self.metrics {
            if metric.contains('.') || self.k.is_empty() {
                measures.push(metric.clone());
            } else {
                let cutoffs: Vec<String> = self.k.iter().map(usize::to_string).collect();
                measures.push(format!("{metric}.{}", cutoffs.join(",")));
            }
        }
        measures
    }

    fn check(&self) -> Result<(), String> {
        if self.top_k == 0 {
            return Err("top_k must be at least 1".to_string());
        }
        if self.metrics.is_empty() {
            return Err("metrics is empty".to_string());
        }
        if let Some(k) = self.k.iter().find(|&&k| k == 0) {
            return Err(format!("k = {k}: cutoffs start at 1"));
        }
        crate::eval::parse_measures(&self.measures())
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentSection {
    schema: Spanned<u32>,
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default = "default_seeds")]
    seeds: Spanned<Vec<u64>>,
}

fn default_seeds() -> Spanned<Vec<u64>> {
    Spanned::new(0..0, vec![0])
}

/// The axes of `[sweep]` or of one `[[sweep.zip]]` group, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AxesTable {
    model: Option<Spanned<Vec<String>>>,
    dataset: Option<Spanned<Vec<String>>>,
    layers: Option<Spanned<LayerSelection>>,
    pooling: Option<Spanned<Vec<Pooling>>>,
    input: Option<Spanned<Vec<InputFormat>>>,
    #[serde(default)]
    encode: BTreeMap<String, Spanned<Vec<toml::Value>>>,
    #[serde(default)]
    eval: BTreeMap<String, Spanned<Vec<toml::Value>>>,
    #[serde(default)]
    zip: Vec<Spanned<AxesTable>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentFile {
    experiment: ExperimentSection,
    #[serde(default)]
    models: BTreeMap<String, Spanned<ModelSpec>>,
    #[serde(default)]
    datasets: BTreeMap<String, Spanned<DatasetSpec>>,
    #[serde(default)]
    sweep: AxesTable,
    encode: Option<Spanned<EncodeSettings>>,
    eval: Option<Spanned<EvalSettings>>,
}

/// One axis value.
#[derive(Debug, Clone)]
enum AxisValue {
    Model(String),
    Dataset(String),
    Layer(usize),
    Pooling(Pooling),
    Input(InputFormat),
    Setting {
        stage: &'static str,
        field: String,
        value: toml::Value,
    },
}

/// One axis: its name, where it was written, and its values.
#[derive(Debug, Clone)]
struct Axis {
    name: String,
    span: Range<usize>,
    values: AxisValues,
}

#[derive(Debug, Clone)]
enum AxisValues {
    /// Resolved against each model's depth at expansion.
    Layers(LayerSelection),
    List(Vec<AxisValue>),
}

/// A grid dimension: one axis, or a zip group whose axes advance together.
#[derive(Debug, Clone)]
enum Dimension {
    Axis(Axis),
    Zip { axes: Vec<Axis> },
}

/// What expansion needs to know about a model, read from its `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    /// Encoder layers.
    pub depth: usize,
    /// Position embeddings: the longest input the model accepts.
    pub max_positions: usize,
}

/// One point of the sweep: every setting a stage needs, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub model: String,
    pub dataset: String,
    pub layer: usize,
    pub pooling: Pooling,
    pub input: InputFormat,
    pub seed: u64,
    /// With `max_len` always set (the model's unless overridden).
    pub encode: EncodeSettings,
    pub eval: EvalSettings,
}

impl Cell {
    /// Every parameter, flattened to `name` / `stage.field` keys.
    pub fn params(&self) -> BTreeMap<String, serde_json::Value> {
        let mut params = BTreeMap::new();
        let value = serde_json::to_value(self).unwrap_or_default();
        flatten("", &value, &mut params);
        params
    }

    /// The resolved `max_len`.
    pub fn max_len(&self) -> usize {
        self.encode.max_len.unwrap_or_else(default_max_len)
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, inner, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// A parsed experiment file. Expand it with [`Experiment::expand`].
#[derive(Debug)]
pub struct Experiment {
    pub path: PathBuf,
    pub text: String,
    pub name: String,
    pub description: String,
    pub seeds: Vec<u64>,
    pub models: BTreeMap<String, ModelSpec>,
    pub datasets: BTreeMap<String, DatasetSpec>,
    pub encode: EncodeSettings,
    pub eval: EvalSettings,
    model_spans: BTreeMap<String, Range<usize>>,
    dataset_spans: BTreeMap<String, Range<usize>>,
    encode_span: Option<Range<usize>>,
    dimensions: Vec<Dimension>,
}

impl Experiment {
    /// Reads and checks an experiment file: shape, schema version, names, references
    /// between tables, settings values. Checks that need the models are in [`expand`].
    ///
    /// [`expand`]: Experiment::expand
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let (file, text): (ExperimentFile, String) = read_toml(path)?;
        Self::from_file(path, text, file)
    }

    /// Parses `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: ExperimentFile = super::parse_toml(path, text)?;
        Self::from_file(path, text.to_string(), file)
    }

    fn from_file(path: &Path, text: String, file: ExperimentFile) -> Result<Self, ConfigError> {
        let error =
            |span: Range<usize>, message: String| ConfigError::at(path, &text, span.start, message);
        let section = &file.experiment;
        if *section.schema.get_ref() != SCHEMA_VERSION {
            return Err(error(
                section.schema.span(),
                format!(
                    "experiment.schema: this repro reads schema {SCHEMA_VERSION}, the file says {}",
                    section.schema.get_ref()
                ),
            ));
        }
        let name = section.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(error(
                section.name.span(),
                format!("experiment.name: `{name}` must be non-empty and use only letters, digits, `_`, `-` and `.`"),
            ));
        }
        if section.seeds.get_ref().is_empty() {
            return Err(error(
                section.seeds.span(),
                "experiment.seeds is empty".to_string(),
            ));
        }
        if file.models.is_empty() {
            return Err(error(
                0..0,
                "no [models.<name>] table: an experiment needs at least one model".to_string(),
            ));
        }
        if file.datasets.is_empty() {
            return Err(error(
                0..0,
                "no [datasets.<name>] table: an experiment needs at least one dataset".to_string(),
            ));
        }
        for (model, spec) in &file.models {
            if spec.get_ref().max_len < 2 {
                return Err(error(
                    spec.span(),
                    format!("models.{model}.max_len must be at least 2 (room for [CLS] and [SEP])"),
                ));
            }
        }
        for (dataset, spec) in &file.datasets {
            if spec.get_ref().name.is_some() && spec.get_ref().path.is_some() {
                return Err(error(
                    spec.span(),
                    format!("datasets.{dataset}: give `name` or `path`, not both"),
                ));
            }
        }
        let encode = file
            .encode
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_default();
        if encode.batch == 0 {
            let span = file.encode.as_ref().map(Spanned::span).unwrap_or(0..0);
            return Err(error(span, "encode.batch must be at least 1".to_string()));
        }
        let eval = file
            .eval
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_default();
        if let Err(message) = eval.check() {
            let span = file.eval.as_ref().map(Spanned::span).unwrap_or(0..0);
            return Err(error(span, format!("eval: {message}")));
        }

        let mut dimensions = Vec::new();
        let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for axis in axes_of(&file.sweep, &file, &error)? {
            seen.insert(axis.name.clone(), axis.span.clone());
            dimensions.push(Dimension::Axis(axis));
        }
        for group in &file.sweep.zip {
            if !group.get_ref().zip.is_empty() {
                return Err(error(
                    group.span(),
                    "sweep.zip: a zip group cannot hold another zip".to_string(),
                ));
            }
            let axes = axes_of(group.get_ref(), &file, &error)?;
            if axes.is_empty() {
                return Err(error(group.span(), "sweep.zip: empty group".to_string()));
            }
            let mut length = None;
            for axis in &axes {
                if seen.contains_key(&axis.name) {
                    return Err(error(axis.span.clone(), format!("sweep.zip: axis `{}` is swept twice (in the grid or in another zip group)", axis.name)));
                }
                seen.insert(axis.name.clone(), axis.span.clone());
                let count = match &axis.values {
                    AxisValues::List(values) => values.len(),
                    AxisValues::Layers(LayerSelection::Only(layers)) => layers.len(),
                    AxisValues::Layers(LayerSelection::All) => {
                        return Err(error(
                            axis.span.clone(),
                            "sweep.zip: layers must be an explicit list inside a zip group"
                                .to_string(),
                        ));
                    }
                };
                match length {
                    None => length = Some((count, axis.name.clone())),
                    Some((expected, ref first)) if expected != count => {
                        return Err(error(axis.span.clone(), format!("sweep.zip: `{}` has {count} values but `{first}` has {expected}; zipped axes need equal lengths", axis.name)));
                    }
                    Some(_) => {}
                }
            }
            dimensions.push(Dimension::Zip { axes });
        }

        Ok(Experiment {
            path: path.to_path_buf(),
            name: name.clone(),
            description: section.description.clone(),
            seeds: section.seeds.get_ref().clone(),
            models: file
                .models
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect(),
            datasets: file
                .datasets
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect(),
            model_spans: file
                .models
                .iter()
                .map(|(k, v)| (k.clone(), v.span()))
                .collect(),
            dataset_spans: file
                .datasets
                .iter()
                .map(|(k, v)| (k.clone(), v.span()))
                .collect(),
            encode_span: file.encode.as_ref().map(Spanned::span),
            encode,
            eval,
            dimensions,
            text,
        })
    }

    /// An error pointing at `[models.<name>]`.
    pub fn model_error(&self, model: &str, message: impl std::fmt::Display) -> ConfigError {
        let start = self.model_spans.get(model).map(|s| s.start).unwrap_or(0);
        ConfigError::at(
            &self.path,
            &self.text,
            start,
            format!("models.{model}: {message}"),
        )
    }

    /// An error pointing at `[datasets.<name>]`.
    pub fn dataset_error(&self, dataset: &str, message: impl std::fmt::Display) -> ConfigError {
        let start = self
            .dataset_spans
            .get(dataset)
            .map(|s| s.start)
            .unwrap_or(0);
        ConfigError::at(
            &self.path,
            &self.text,
            start,
            format!("datasets.{dataset}: {message}"),
        )
    }

    fn error(&self, span: &Range<usize>, message: String) -> ConfigError {
        ConfigError::at(&self.path, &self.text, span.start, message)
    }

    /// The sweep's cells, in grid order (model, dataset, then the axes as written, seeds
    /// last). `shapes` gives each model's depth and length limit; a layer or `max_len` beyond
    /// them is an error naming the line that asked for it.
    pub fn expand(&self, shapes: &BTreeMap<String, ModelShape>) -> Result<Vec<Cell>, ConfigError> {
        let mut partials: Vec<Vec<(AxisValue, Range<usize>)>> = vec![Vec::new()];
        let mut layer_selection: Option<(LayerSelection, Range<usize>)> = None;
        let mut has_model = false;
        let mut has_dataset = false;
        for dimension in &self.dimensions {
            let choices: Vec<Vec<(AxisValue, Range<usize>)>> = match dimension {
                Dimension::Axis(axis) => match &axis.values {
                    AxisValues::Layers(selection) => {
                        layer_selection = Some((selection.clone(), axis.span.clone()));
                        continue;
                    }
                    AxisValues::List(values) => values
                        .iter()
                        .map(|v| vec![(v.clone(), axis.span.clone())])
                        .collect(),
                },
                Dimension::Zip { axes, .. } => {
                    let count = match &axes[0].values {
                        AxisValues::List(values) => values.len(),
                        AxisValues::Layers(LayerSelection::Only(layers)) => layers.len(),
                        AxisValues::Layers(LayerSelection::All) => 0,
                    };
                    (0..count)
                        .map(|index| {
                            axes.iter()
                                .map(|axis| {
                                    let value = match &axis.values {
                                        AxisValues::List(values) => values[index].clone(),
                                        AxisValues::Layers(LayerSelection::Only(layers)) => {
                                            AxisValue::Layer(layers[index])
                                        }
                                        AxisValues::Layers(LayerSelection::All) => {
                                            unreachable!("rejected when read")
                                        }
                                    };
                                    (value, axis.span.clone())
                                })
                                .collect()
                        })
                        .collect()
                }
            };
            for choice in &choices {
                for (value, _) in choice {
                    has_model |= matches!(value, AxisValue::Model(_));
                    has_dataset |= matches!(value, AxisValue::Dataset(_));
                }
            }
            partials = partials
                .into_iter()
                .flat_map(|partial| {
                    choices.iter().map(move |choice| {
                        let mut next = partial.clone();
                        next.extend(choice.iter().cloned());
                        next
                    })
                })
                .collect();
        }
        // Model and dataset default to every one declared, outermost.
        if !has_model {
            partials = self.prepend(
                partials,
                self.models.keys().map(|m| AxisValue::Model(m.clone())),
            );
        }
        if !has_dataset {
            partials = self.prepend_second(
                partials,
                self.datasets.keys().map(|d| AxisValue::Dataset(d.clone())),
            );
        }

        let mut cells = Vec::new();
        for partial in partials {
            let has_layer = partial
                .iter()
                .any(|(v, _)| matches!(v, AxisValue::Layer(_)));
            for seed in &self.seeds {
                let base = self.cell_from(&partial, *seed, shapes)?;
                if has_layer {
                    cells.push(base);
                    continue;
                }
                let shape = shapes[&base.model];
                let (selection, span) = layer_selection
                    .clone()
                    .unwrap_or((LayerSelection::All, 0..0));
                let layers = selection.resolve(shape.depth).map_err(|message| {
                    self.error(
                        &span,
                        format!("sweep.layers: model `{}`: {message}", base.model),
                    )
                })?;
                for layer in layers {
                    cells.push(Cell {
                        layer,
                        ..base.clone()
                    });
                }
            }
        }
        // Cells are sorted by model, dataset, then the rest in grid order.
        cells.sort_by(|a, b| (&a.model, &a.dataset).cmp(&(&b.model, &b.dataset)));
        Ok(cells)
    }

    fn prepend(
        &self,
        partials: Vec<Vec<(AxisValue, Range<usize>)>>,
        values: impl Iterator<Item = AxisValue> + Clone,
    ) -> Vec<Vec<(AxisValue, Range<usize>)>> {
        values
            .flat_map(|value| {
                partials.iter().map(move |partial| {
                    let mut next = vec![(value.clone(), 0..0)];
                    next.extend(partial.iter().cloned());
                    next
                })
            })
            .collect()
    }

    fn prepend_second(
        &self,
        partials: Vec<Vec<(AxisValue, Range<usize>)>>,
        values: impl Iterator<Item = AxisValue> + Clone,
    ) -> Vec<Vec<(AxisValue, Range<usize>)>> {
        partials
            .into_iter()
            .flat_map(|partial| {
                values.clone().map(move |value| {
                    let mut next = partial.clone();
                    next.push((value, 0..0));
                    next
                })
            })
            .collect()
    }

    fn cell_from(
        &self,
        partial: &[(AxisValue, Range<usize>)],
        seed: u64,
        shapes: &BTreeMap<String, ModelShape>,
    ) -> Result<Cell, ConfigError> {
        let mut model = None;
        let mut dataset = None;
        let mut layer = 0;
        let mut pooling = Pooling::Mean;
        let mut input = InputFormat::Single;
        let mut encode_overrides = Vec::new();
        let mut eval_overrides = Vec::new();
        for (value, span) in partial {
            match value {
                AxisValue::Model(name) => model = Some(name.clone()),
                AxisValue::Dataset(name) => dataset = Some(name.clone()),
                AxisValue::Layer(index) => layer = *index,
                AxisValue::Pooling(p) => pooling = *p,
                AxisValue::Input(i) => input = *i,
                AxisValue::Setting {
                    stage,
                    field,
                    value,
                } => {
                    let target = if *stage == "encode" {
                        &mut encode_overrides
                    } else {
                        &mut eval_overrides
                    };
                    target.push((field.clone(), value.clone(), span.clone()));
                }
            }
        }
        let (Some(model), Some(dataset)) = (model, dataset) else {
            return Err(self.error(
                &(0..0),
                "internal: a cell without model or dataset".to_string(),
            ));
        };
        let Some(shape) = shapes.get(&model).copied() else {
            return Err(self.model_error(&model, "its shape (depth, positions) is unknown"));
        };
        let mut encode: EncodeSettings =
            self.with_overrides("encode", &self.encode, &encode_overrides)?;
        let eval: EvalSettings = self.with_overrides("eval", &self.eval, &eval_overrides)?;
        if let Some((_, _, span)) = eval_overrides.last() {
            eval.check()
                .map_err(|message| self.error(span, format!("eval: {message}")))?;
        }
        if encode.batch == 0 {
            let span = encode_overrides
                .last()
                .map(|o| o.2.clone())
                .or(self.encode_span.clone())
                .unwrap_or(0..0);
            return Err(self.error(&span, "encode.batch must be at least 1".to_string()));
        }
        let max_len = encode.max_len.unwrap_or(self.models[&model].max_len);
        if max_len > shape.max_positions || max_len < 2 {
            let span = encode_overrides
                .iter()
                .rev()
                .find(|o| o.0 == "max_len")
                .map(|o| o.2.clone())
                .or_else(|| encode.max_len.and(self.encode_span.clone()))
                .or_else(|| self.model_spans.get(&model).cloned())
                .unwrap_or(0..0);
            return Err(self.error(
                &span,
                format!("max_len {max_len} is outside 2..={} for model `{model}` (its position embeddings)", shape.max_positions),
            ));
        }
        encode.max_len = Some(max_len);
        if layer > shape.depth {
            let span = partial
                .iter()
                .find(|(v, _)| matches!(v, AxisValue::Layer(_)))
                .map(|(_, s)| s.clone())
                .unwrap_or(0..0);
            return Err(self.error(
                &span,
                format!(
                    "layer {layer} is beyond model `{model}`'s depth {} (layers are 0..={})",
                    shape.depth, shape.depth
                ),
            ));
        }
        Ok(Cell {
            model,
            dataset,
            layer,
            pooling,
            input,
            seed,
            encode,
            eval,
        })
    }

    /// `base` with some fields replaced, re-checked by serde (types, unknown fields).
    fn with_overrides<T: Serialize + serde::de::DeserializeOwned + Clone>(
        &self,
        stage: &str,
        base: &T,
        overrides: &[(String, toml::Value, Range<usize>)],
    ) -> Result<T, ConfigError> {
        if overrides.is_empty() {
            return Ok(base.clone());
        }
        let mut table = toml::Table::try_from(base)
            .map_err(|err| self.error(&(0..0), format!("{stage}: {err}")))?;
        for (field, value, _) in overrides {
            table.insert(field.clone(), value.clone());
        }
        let span = overrides.last().map(|o| o.2.clone()).unwrap_or(0..0);
        T::deserialize(toml::Value::Table(table))
            .map_err(|err| self.error(&span, format!("sweep.{stage}: {}", err.message().trim())))
    }
}

/// The axes of one table, in a fixed order; references to models and datasets are checked.
fn axes_of(
    table: &AxesTable,
    file: &ExperimentFile,
    error: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<Vec<Axis>, ConfigError> {
    let mut axes = Vec::new();
    let nonempty = |name: &str, span: Range<usize>, len: usize| {
        if len == 0 {
            Err(error(span, format!("sweep.{name} is empty")))
        } else {
            Ok(())
        }
    };
    if let Some(models) = &table.model {
        nonempty("model", models.span(), models.get_ref().len())?;
        for model in models.get_ref() {
            if !file.models.contains_key(model) {
                let known: Vec<&str> = file.models.keys().map(String::as_str).collect();
                return Err(error(
                    models.span(),
                    format!(
                        "sweep.model: unknown model `{model}` (declared: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        axes.push(Axis {
            name: "model".into(),
            span: models.span(),
            values: AxisValues::List(
                models
                    .get_ref()
                    .iter()
                    .cloned()
                    .map(AxisValue::Model)
                    .collect(),
            ),
        });
    }
    if let Some(datasets) = &table.dataset {
        nonempty("dataset", datasets.span(), datasets.get_ref().len())?;
        for dataset in datasets.get_ref() {
            if !file.datasets.contains_key(dataset) {
                let known: Vec<&str> = file.datasets.keys().map(String::as_str).collect();
                return Err(error(
                    datasets.span(),
                    format!(
                        "sweep.dataset: unknown dataset `{dataset}` (declared: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        axes.push(Axis {
            name: "dataset".into(),
            span: datasets.span(),
            values: AxisValues::List(
                datasets
                    .get_ref()
                    .iter()
                    .cloned()
                    .map(AxisValue::Dataset)
                    .collect(),
            ),
        });
    }
    if let Some(inputs) = &table.input {
        nonempty("input", inputs.span(), inputs.get_ref().len())?;
        axes.push(Axis {
            name: "input".into(),
            span: inputs.span(),
            values: AxisValues::List(
                inputs
                    .get_ref()
                    .iter()
                    .copied()
                    .map(AxisValue::Input)
                    .collect(),
            ),
        });
    }
    if let Some(layers) = &table.layers {
        axes.push(Axis {
            name: "layers".into(),
            span: layers.span(),
            values: AxisValues::Layers(layers.get_ref().clone()),
        });
    }
    if let Some(poolings) = &table.pooling {
        nonempty("pooling", poolings.span(), poolings.get_ref().len())?;
        axes.push(Axis {
            name: "pooling".into(),
            span: poolings.span(),
            values: AxisValues::List(
                poolings
                    .get_ref()
                    .iter()
                    .copied()
                    .map(AxisValue::Pooling)
                    .collect(),
            ),
        });
    }
    for (stage, settings) in [("encode", &table.encode), ("eval", &table.eval)] {
        for (field, values) in settings {
            let name = format!("{stage}.{field}");
            nonempty(&name, values.span(), values.get_ref().len())?;
            axes.push(Axis {
                name,
                span: values.span(),
                values: AxisValues::List(
                    values
                        .get_ref()
                        .iter()
                        .map(|value| AxisValue::Setting {
                            stage,
                            field: field.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                ),
            });
        }
    }
    Ok(axes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes() -> BTreeMap<String, ModelShape> {
        let shape = ModelShape {
            depth: 3,
            max_positions: 64,
        };
        [("tiny".to_string(), shape), ("other".to_string(), shape)].into()
    }

    const BASE: &str = r#"
[experiment]
schema = 1
name = "t"

[models.tiny]
source = "m"
max_len = 32

[datasets.d]
path = "x"
"#;

    fn parse(extra: &str) -> Result<Experiment, ConfigError> {
        Experiment::parse(Path::new("exp.toml"), &format!("{BASE}{extra}"))
    }

    fn expand(extra: &str) -> Result<Vec<Cell>, ConfigError> {
        parse(extra)?.expand(&shapes())
    }

    #[test]
    fn grid_defaults_to_every_layer_one_pooling_one_input() {
        let cells = expand("").unwrap();
        assert_eq!(cells.len(), 4);
        assert_eq!(
            cells.iter().map(|c| c.layer).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(cells
            .iter()
            .all(|c| c.encode.max_len == Some(32) && c.pooling == Pooling::Mean));
    }

    #[test]
    fn grid_is_the_product_of_every_axis_and_seed() {
        let cells = expand(
            "[sweep]\nlayers = \"1-2\"\npooling = [\"mean\", \"cls\"]\ninput = [\"single\", \"self_pair\"]\nencode.batch = [4, 8]\n",
        )
        .unwrap();
        assert_eq!(cells.len(), 2 * 2 * 2 * 2);
        let batches: std::collections::BTreeSet<usize> =
            cells.iter().map(|c| c.encode.batch).collect();
        assert_eq!(batches, [4, 8].into());
        let text = format!("{BASE}[sweep]\nlayers = 1\n")
            .replace("name = \"t\"", "name = \"t\"\nseeds = [1, 2]");
        let cells = Experiment::parse(Path::new("e.toml"), &text)
            .unwrap()
            .expand(&shapes())
            .unwrap();
        assert_eq!(cells.iter().map(|c| c.seed).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn zip_groups_advance_together() {
        let cells = expand("[sweep]\nlayers = [1]\n[[sweep.zip]]\npooling = [\"mean\", \"cls\"]\neval.top_k = [10, 20]\n").unwrap();
        let pairs: Vec<(Pooling, usize)> =
            cells.iter().map(|c| (c.pooling, c.eval.top_k)).collect();
        assert_eq!(pairs, vec![(Pooling::Mean, 10), (Pooling::Cls, 20)]);
    }

    #[test]
    fn params_flatten_stage_settings() {
        let cells = expand("[sweep]\nlayers = 0\n").unwrap();
        let params = cells[0].params();
        assert_eq!(params["encode.batch"], serde_json::json!(32));
        assert_eq!(params["eval.top_k"], serde_json::json!(100));
        assert_eq!(params["pooling"], serde_json::json!("mean"));
        assert_eq!(params["layer"], serde_json::json!(0));
    }

    #[test]
    fn measures_combine_metrics_with_k() {
        let eval = EvalSettings {
            metrics: vec!["ndcg_cut".into(), "P.5".into()],
            k: vec![10, 100],
            ..EvalSettings::default()
        };
        assert_eq!(eval.measures(), vec!["ndcg_cut.10,100", "P.5"]);
    }

    fn error_of(extra: &str) -> String {
        match expand(extra) {
            Ok(_) => panic!("expected an error for {extra:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn errors_name_file_line_and_column() {
        // Line numbers count from BASE's leading newline: BASE has 11 lines.
        let cases = [
            ("[sweep]\nlayer = 1\n", "exp.toml:13:1", "layer"),
            ("[sweep]\npooling = [\"avg\"]\n", "exp.toml:13:", "avg"),
            ("[sweep]\nlayers = \"0-9\"\n", "exp.toml:13:10", "layer 4"),
            (
                "[sweep]\nmodel = [\"nope\"]\n",
                "exp.toml:13:9",
                "unknown model `nope`",
            ),
            (
                "[sweep]\ndataset = [\"nope\"]\n",
                "exp.toml:13:11",
                "unknown dataset `nope`",
            ),
            (
                "[encode]\nbatch = \"big\"\n",
                "exp.toml:13:9",
                "invalid type",
            ),
            (
                "[sweep]\nencode.batchsize = [1]\n",
                "exp.toml:13:",
                "batchsize",
            ),
            (
                "[sweep]\nencode.max_len = [512]\n",
                "exp.toml:13:",
                "max_len 512",
            ),
            (
                "[[sweep.zip]]\npooling = [\"mean\"]\neval.top_k = [1, 2]\n",
                "exp.toml:14:",
                "equal lengths",
            ),
            (
                "[eval]\nmetrics = [\"ndcg_cutt.10\"]\n",
                "exp.toml:12:1",
                "ndcg_cutt",
            ),
            (
                "[sweep]\ninput = \"single\"\n",
                "exp.toml:13:9",
                "invalid type",
            ),
        ];
        for (extra, location, needle) in cases {
            let message = error_of(extra);
            assert!(message.contains(location), "{extra:?}: {message}");
            assert!(message.contains(needle), "{extra:?}: {message}");
        }
    }

    #[test]
    fn schema_version_is_checked() {
        let text = BASE.replace("schema = 1", "schema = 2");
        let message = Experiment::parse(Path::new("e.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("e.toml:3:10") && message.contains("schema 1"),
            "{message}"
        );
    }
}
