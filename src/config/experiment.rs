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

use super::{
    read_toml, BenchConfig, ConfigError, Fusion, LayerSelection, RerankSettings, TrainCeSettings,
    TrainDeSettings,
};
use crate::model::{InputFormat, Pooling, Precision};

/// The experiment-file schema this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Dual encoder or cross encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    De,
    Ce,
}

/// `[models.<name>]`: a checkpoint (`source`), or a model the experiment trains: a cross
/// encoder (`kind = "ce"`, `base`, `train_dataset`, `negatives_from`) or a dual-encoder
/// student (`kind = "de"`, `teacher_de`, `teacher_ce`, `train_dataset`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A local directory or a Hugging Face id (`org/name[@revision]`). Absent for a model
    /// the experiment trains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default = "default_kind")]
    pub kind: ModelKind,
    /// Tokens per input; longer inputs are truncated.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Trained CE: the checkpoint it starts from (a model of this file with a `source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Trained models: the dataset whose `train_split` judgments they learn from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_dataset: Option<String>,
    #[serde(default = "default_train_split")]
    pub train_split: String,
    /// Trained CE: the first-stage DE whose top hits are mined for hard negatives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negatives_from: Option<String>,
    /// Student: the DE teacher (`mse` targets, `de:K` initialisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_de: Option<String>,
    /// Student: the CE teacher (`ce:K` initialisation, `margin_mse` targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_ce: Option<String>,
}

fn default_train_split() -> String {
    "train".to_string()
}

/// How a model of an experiment comes to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelOrigin<'a> {
    /// Read from `source`.
    Checkpoint(&'a str),
    /// Trained by the experiment's train_ce stage.
    TrainedCe,
    /// Trained by the experiment's train_de stage.
    TrainedDe,
}

impl ModelSpec {
    pub fn origin(&self) -> ModelOrigin<'_> {
        match (&self.source, self.kind) {
            (Some(source), _) => ModelOrigin::Checkpoint(source),
            (None, ModelKind::Ce) => ModelOrigin::TrainedCe,
            (None, ModelKind::De) => ModelOrigin::TrainedDe,
        }
    }

    /// The models this one is made from, with the field that names each.
    fn references(&self) -> Vec<(&'static str, &str)> {
        [
            ("base", &self.base),
            ("negatives_from", &self.negatives_from),
            ("teacher_de", &self.teacher_de),
            ("teacher_ce", &self.teacher_ce),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.as_deref().map(|name| (field, name)))
        .collect()
    }
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
    /// Which of the split's queries are evaluated.
    #[serde(default, skip_serializing_if = "QuerySet::is_all")]
    pub queries: QuerySet,
    /// The collection whose documents the dataset searches (see
    /// [`Experiment::collection_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
}

/// `queries` of a dataset: every judged query of its split, or only those a model trained on
/// the dataset's `train` split has not in effect seen (the rule of [`crate::data::overlap`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum QuerySet {
    #[default]
    All,
    Unseen,
}

impl QuerySet {
    /// The split `unseen` is measured against: the one trained models learn from by default.
    pub const TRAINING_SPLIT: &'static str = "train";

    pub fn is_all(&self) -> bool {
        *self == QuerySet::All
    }

    /// The training split whose overlap removes queries, when any does.
    pub fn training_split(self) -> Option<&'static str> {
        match self {
            QuerySet::All => None,
            QuerySet::Unseen => Some(Self::TRAINING_SPLIT),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuerySet::All => "all",
            QuerySet::Unseen => "unseen",
        }
    }
}

impl std::fmt::Display for QuerySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// serde's own message for an unknown variant does not name the field; this one does.
impl TryFrom<String> for QuerySet {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        [QuerySet::All, QuerySet::Unseen]
            .into_iter()
            .find(|set| set.name() == value)
            .ok_or_else(|| format!("queries = {value:?}: expected \"all\" or \"unseen\""))
    }
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
    /// Encode the corpus as this many tasks (each on its own worker or node), merged for
    /// retrieval; the embeddings are identical to an unsharded encode.
    #[serde(default = "one_shard", skip_serializing_if = "is_one_shard")]
    pub shards: usize,
    /// The encoder's dense products in `f32` (default) or `bf16` (bf16 inputs, f32 sums; a
    /// CPU with AMX-BF16 or AVX512-BF16). Training and its mining stay f32.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

fn default_batch() -> usize {
    32
}

fn one_shard() -> usize {
    1
}

fn is_one_shard(shards: &usize) -> bool {
    *shards == 1
}

impl Default for EncodeSettings {
    fn default() -> Self {
        EncodeSettings {
            batch: default_batch(),
            max_len: None,
            shards: one_shard(),
            precision: Precision::F32,
        }
    }
}

impl EncodeSettings {
    /// The field that is 0 where it must be at least 1, if any.
    fn zero_field(&self) -> Option<&'static str> {
        match (self.batch, self.shards) {
            (0, _) => Some("batch"),
            (_, 0) => Some("shards"),
            _ => None,
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
    /// The most cells the sweep may expand to, checked before expanding it.
    #[serde(default = "default_max_cells")]
    max_cells: Spanned<u64>,
}

fn default_seeds() -> Spanned<Vec<u64>> {
    Spanned::new(0..0, vec![0])
}

/// A bound far above any study so far (the MS MARCO-sized sweep on paper has 2,880 cells),
/// low enough that planning stays within a few hundred megabytes.
pub const DEFAULT_MAX_CELLS: u64 = 100_000;

fn default_max_cells() -> Spanned<u64> {
    Spanned::new(0..0, DEFAULT_MAX_CELLS)
}

/// `<stage>.<field> = [values]` axes of one stage, as written.
type SettingAxes = BTreeMap<String, Spanned<Vec<toml::Value>>>;

/// Axis values for one stage's settings in one cell: (field, value, where it was written).
type SettingOverrides = Vec<(String, toml::Value, Range<usize>)>;

/// A point of the sweep's grid so far: the values of the axes expanded, each with the span
/// of the axis it came from.
type Partial = Vec<(AxisValue, Range<usize>)>;

/// The values of one sweep dimension: a list axis's values, or a zip's aligned tuples. A
/// layer axis is not expanded here (`expand_grid` resolves it per model).
fn choices_of(dimension: &Dimension) -> Vec<Partial> {
    match dimension {
        Dimension::Axis(axis) => match &axis.values {
            AxisValues::List(values) => values
                .iter()
                .map(|v| vec![(v.clone(), axis.span.clone())])
                .collect(),
            AxisValues::Layers(_) => Vec::new(),
        },
        Dimension::Zip { axes, .. } => {
            let at = |axis: &Axis, index: usize| match &axis.values {
                AxisValues::List(values) => values[index].clone(),
                AxisValues::Layers(LayerSelection::Only(layers)) => AxisValue::Layer(layers[index]),
                AxisValues::Layers(LayerSelection::All) => unreachable!("rejected when read"),
            };
            let count = match &axes[0].values {
                AxisValues::List(values) => values.len(),
                AxisValues::Layers(LayerSelection::Only(layers)) => layers.len(),
                AxisValues::Layers(LayerSelection::All) => 0,
            };
            (0..count)
                .map(|index| {
                    axes.iter()
                        .map(|axis| (at(axis, index), axis.span.clone()))
                        .collect()
                })
                .collect()
        }
    }
}

/// The fixed parameters one grid point sets, and its settings overrides by stage.
struct CellAxes {
    model: String,
    dataset: String,
    layer: usize,
    pooling: Pooling,
    input: InputFormat,
    overrides: BTreeMap<&'static str, SettingOverrides>,
}

impl CellAxes {
    /// `None` when the point lacks a model or a dataset (never, once the defaults are added).
    fn of(partial: &[(AxisValue, Range<usize>)]) -> Option<Self> {
        let mut model = None;
        let mut dataset = None;
        let mut layer = 0;
        let mut pooling = Pooling::Mean;
        let mut input = InputFormat::Single;
        let mut overrides: BTreeMap<&'static str, SettingOverrides> = BTreeMap::new();
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
                } => overrides.entry(stage).or_default().push((
                    field.clone(),
                    value.clone(),
                    span.clone(),
                )),
            }
        }
        Some(CellAxes {
            model: model?,
            dataset: dataset?,
            layer,
            pooling,
            input,
            overrides,
        })
    }
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
    train_ce: BTreeMap<String, Spanned<Vec<toml::Value>>>,
    #[serde(default)]
    train_de: BTreeMap<String, Spanned<Vec<toml::Value>>>,
    #[serde(default)]
    rerank: BTreeMap<String, Spanned<Vec<toml::Value>>>,
    #[serde(default)]
    zip: Vec<Spanned<AxesTable>>,
}

impl AxesTable {
    /// The settings axes of every stage, by stage name.
    fn stage_settings(&self) -> [(&'static str, &SettingAxes); 5] {
        [
            ("encode", &self.encode),
            ("eval", &self.eval),
            ("train_ce", &self.train_ce),
            ("train_de", &self.train_de),
            ("rerank", &self.rerank),
        ]
    }
}

/// `[sweep]` (one grid) or `[[sweep]]` (several grids whose cells are united).
#[derive(Debug, Default)]
struct Sweeps(Vec<Spanned<AxesTable>>);

impl<'de> Deserialize<'de> for Sweeps {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Sweeps;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a [sweep] table or [[sweep]] tables")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Sweeps, A::Error> {
                let table =
                    AxesTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Sweeps(vec![Spanned::new(0..0, table)]))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Sweeps, A::Error> {
                Vec::<Spanned<AxesTable>>::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(seq),
                )
                .map(Sweeps)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
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
    sweep: Sweeps,
    encode: Option<Spanned<EncodeSettings>>,
    eval: Option<Spanned<EvalSettings>>,
    train_ce: Option<Spanned<TrainCeSettings>>,
    train_de: Option<Spanned<TrainDeSettings>>,
    rerank: Option<Spanned<RerankSettings>>,
    bench: Option<Spanned<BenchConfig>>,
    slurm: Option<Spanned<super::SlurmSettings>>,
    report: Option<Spanned<super::ReportSettings>>,
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
    /// Set when a CE trained by the experiment is involved: the cell's model, its CE
    /// teacher, or its re-ranker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_ce: Option<TrainCeSettings>,
    /// Set when the cell's model is a student trained by the experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_de: Option<TrainDeSettings>,
    /// Set when a cross encoder re-ranks this (dual-encoder) cell's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<RerankSettings>,
    /// Set when the experiment measures encoder throughput (`[bench]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<BenchConfig>,
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
    pub train_ce: TrainCeSettings,
    pub train_de: TrainDeSettings,
    pub rerank: RerankSettings,
    pub bench: Option<BenchConfig>,
    /// `[slurm]`: sbatch settings for `--executor slurm` (never part of a cache key).
    pub slurm: super::SlurmSettings,
    /// `[report]`: how the report draws conclusions (never part of a cache key).
    pub report: super::ReportSettings,
    bench_span: Option<Range<usize>>,
    model_spans: BTreeMap<String, Range<usize>>,
    dataset_spans: BTreeMap<String, Range<usize>>,
    encode_span: Option<Range<usize>>,
    /// One grid per `[[sweep]]` table; the experiment's cells are their union.
    grids: Vec<Vec<Dimension>>,
    max_cells: Spanned<u64>,
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
        check_section(section, &error)?;
        check_models_and_datasets(&file, &error)?;
        let name = section.name.get_ref();
        let encode = encode_table(&file, &error)?;
        let eval = settings_table(&file.eval, "eval", EvalSettings::check, &error)?;
        let train_ce = settings_table(&file.train_ce, "train_ce", TrainCeSettings::check, &error)?;
        let train_de = settings_table(&file.train_de, "train_de", TrainDeSettings::check, &error)?;
        let rerank = settings_table(&file.rerank, "rerank", RerankSettings::check, &error)?;
        if rerank.enabled() {
            let span = file.rerank.as_ref().map(Spanned::span).unwrap_or(0..0);
            check_reranker(&rerank.model, &file).map_err(|message| error(span, message))?;
        }
        let bench = file
            .bench
            .as_ref()
            .map(|_| settings_table(&file.bench, "bench", BenchConfig::check, &error))
            .transpose()?;
        let slurm = settings_table(&file.slurm, "slurm", super::SlurmSettings::check, &error)?;
        check_bench_datasets(bench.as_ref(), &file, &error)?;
        let report = settings_table(&file.report, "report", super::ReportSettings::check, &error)?;
        check_selection_dataset(&report, &file, &error)?;
        // No `[sweep]` is one grid of no axes: every model × dataset × layer.
        let grids = match file.sweep.0.is_empty() {
            true => vec![Vec::new()],
            false => file
                .sweep
                .0
                .iter()
                .map(|sweep| grid_of(sweep.get_ref(), &file, &error))
                .collect::<Result<_, _>>()?,
        };
        Ok(Experiment {
            path: path.to_path_buf(),
            name: name.clone(),
            description: section.description.clone(),
            seeds: section.seeds.get_ref().clone(),
            models: unspanned(&file.models),
            datasets: unspanned(&file.datasets),
            model_spans: spans_of(&file.models),
            dataset_spans: spans_of(&file.datasets),
            encode_span: file.encode.as_ref().map(Spanned::span),
            max_cells: section.max_cells.clone(),
            encode,
            eval,
            train_ce,
            train_de,
            rerank,
            bench,
            bench_span: file.bench.as_ref().map(Spanned::span),
            slurm,
            report,
            grids,
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

    /// The collection whose documents the dataset `dataset_key` searches, for the in-domain
    /// rule (a model trained on one dataset of a collection is in-domain on all of them):
    /// its `collection`, else its `name`, else its key. `None` for an undeclared dataset.
    pub fn collection_of(&self, dataset_key: &str) -> Option<String> {
        let spec = self.datasets.get(dataset_key)?;
        Some(
            spec.collection
                .clone()
                .or_else(|| spec.name.clone())
                .unwrap_or_else(|| dataset_key.to_string()),
        )
    }

    fn error(&self, span: &Range<usize>, message: String) -> ConfigError {
        ConfigError::at(&self.path, &self.text, span.start, message)
    }

    /// The sweep's cells, in grid order (model, dataset, then the axes as written, seeds
    /// last). `shapes` gives each model's depth and length limit; a layer or `max_len` beyond
    /// them is an error naming the line that asked for it.
    pub fn expand(&self, shapes: &BTreeMap<String, ModelShape>) -> Result<Vec<Cell>, ConfigError> {
        let bound = self.cell_bound(shapes);
        let limit = *self.max_cells.get_ref();
        if bound > u128::from(limit) {
            return Err(self.error(
                &self.max_cells.span(),
                format!(
                    "the sweep expands to up to {bound} cells, more than experiment.max_cells = \
                     {limit}; set experiment.max_cells to run it"
                ),
            ));
        }
        let mut cells = Vec::new();
        for dimensions in &self.grids {
            cells.extend(self.expand_grid(dimensions, shapes)?);
        }
        // Cells are sorted by model, dataset, then the rest in grid order. Grids may overlap,
        // and settings that do not apply to a model are dropped, so equal cells are merged.
        cells.sort_by(|a, b| (&a.model, &a.dataset).cmp(&(&b.model, &b.dataset)));
        let mut seen = std::collections::HashSet::new();
        cells.retain(|cell| seen.insert(serde_json::to_string(cell).unwrap_or_default()));
        Ok(cells)
    }

    /// The most cells the sweep can expand to, counted without expanding it: each grid's
    /// axes multiplied out, times the models and datasets it defaults to, the seeds, and the
    /// layers of the deepest model (or student) for `layers = "all"`. Saturating, so that a
    /// sweep too big to count is too big to run.
    fn cell_bound(&self, shapes: &BTreeMap<String, ModelShape>) -> u128 {
        let deepest = shapes
            .values()
            .map(|shape| shape.depth)
            .chain([self.train_de.layers])
            .max()
            .unwrap_or(0);
        self.grids
            .iter()
            .map(|dimensions| self.grid_bound(dimensions, deepest))
            .fold(0, u128::saturating_add)
    }

    fn grid_bound(&self, dimensions: &[Dimension], deepest: usize) -> u128 {
        let mut count = self.seeds.len() as u128;
        let (mut has_model, mut has_dataset, mut has_layers) = (false, false, false);
        let mut depth = deepest;
        for dimension in dimensions {
            let axes: Vec<&Axis> = match dimension {
                Dimension::Axis(axis) => vec![axis],
                Dimension::Zip { axes } => axes.iter().collect(),
            };
            let mut length = 1;
            for axis in &axes {
                match &axis.values {
                    AxisValues::Layers(LayerSelection::All) => has_layers = false,
                    AxisValues::Layers(LayerSelection::Only(layers)) => {
                        has_layers = true;
                        length = layers.len();
                    }
                    AxisValues::List(values) => {
                        length = values.len();
                        for value in values {
                            match value {
                                AxisValue::Model(_) => has_model = true,
                                AxisValue::Dataset(_) => has_dataset = true,
                                AxisValue::Layer(_) => has_layers = true,
                                AxisValue::Setting { field, value, .. } if field == "layers" => {
                                    let layers = value.as_integer().unwrap_or(0).max(0);
                                    depth =
                                        depth.max(usize::try_from(layers).unwrap_or(usize::MAX));
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            count = count.saturating_mul(length as u128);
        }
        if !has_model {
            count = count.saturating_mul(self.models.len() as u128);
        }
        if !has_dataset {
            count = count.saturating_mul(self.datasets.len() as u128);
        }
        if !has_layers {
            count = count.saturating_mul(depth as u128 + 1);
        }
        count
    }

    fn expand_grid(
        &self,
        dimensions: &[Dimension],
        shapes: &BTreeMap<String, ModelShape>,
    ) -> Result<Vec<Cell>, ConfigError> {
        let mut partials: Vec<Partial> = vec![Vec::new()];
        let mut layer_selection: Option<(LayerSelection, Range<usize>)> = None;
        let mut has_model = false;
        let mut has_dataset = false;
        for dimension in dimensions {
            let choices = match dimension {
                Dimension::Axis(Axis {
                    values: AxisValues::Layers(selection),
                    span,
                    ..
                }) => {
                    layer_selection = Some((selection.clone(), span.clone()));
                    continue;
                }
                _ => choices_of(dimension),
            };
            for (value, _) in choices.iter().flatten() {
                has_model |= matches!(value, AxisValue::Model(_));
                has_dataset |= matches!(value, AxisValue::Dataset(_));
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
        let layer_selection = layer_selection.unwrap_or((LayerSelection::All, 0..0));
        let mut cells = Vec::new();
        for partial in partials {
            for seed in &self.seeds {
                cells.extend(self.cells_of(&partial, *seed, &layer_selection, shapes)?);
            }
        }
        Ok(cells)
    }

    /// The cells of one point of the grid and seed: itself when it names a layer, else one
    /// per layer of the sweep's selection (all of the model's by default).
    fn cells_of(
        &self,
        partial: &[(AxisValue, Range<usize>)],
        seed: u64,
        (selection, span): &(LayerSelection, Range<usize>),
        shapes: &BTreeMap<String, ModelShape>,
    ) -> Result<Vec<Cell>, ConfigError> {
        let base = self.cell_from(partial, seed, shapes)?;
        if partial
            .iter()
            .any(|(v, _)| matches!(v, AxisValue::Layer(_)))
        {
            return Ok(vec![base]);
        }
        let shape = self.shape_of(&base, shapes)?;
        let layers = selection.resolve(shape.depth).map_err(|message| {
            self.error(
                span,
                format!("sweep.layers: model `{}`: {message}", base.model),
            )
        })?;
        Ok(layers
            .into_iter()
            .map(|layer| Cell {
                layer,
                ..base.clone()
            })
            .collect())
    }

    fn prepend(
        &self,
        partials: Vec<Partial>,
        values: impl Iterator<Item = AxisValue> + Clone,
    ) -> Vec<Partial> {
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
        partials: Vec<Partial>,
        values: impl Iterator<Item = AxisValue> + Clone,
    ) -> Vec<Partial> {
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
        let CellAxes {
            model,
            dataset,
            layer,
            pooling,
            input,
            mut overrides,
        } = CellAxes::of(partial).ok_or_else(|| {
            self.error(
                &(0..0),
                "internal: a cell without model or dataset".to_string(),
            )
        })?;
        let encode_overrides = overrides.remove("encode").unwrap_or_default();
        let eval_overrides = overrides.remove("eval").unwrap_or_default();
        let encode = self.encode_settings(&model, &encode_overrides)?;
        let eval: EvalSettings = self.with_overrides("eval", &self.eval, &eval_overrides)?;
        if let Some((_, _, span)) = eval_overrides.last() {
            eval.check()
                .map_err(|message| self.error(span, format!("eval: {message}")))?;
        }
        let mut cell = Cell {
            model,
            dataset,
            layer,
            pooling,
            input,
            seed,
            encode,
            eval,
            train_ce: None,
            train_de: None,
            rerank: None,
            bench: self.bench.clone(),
        };
        self.apply_training(&mut cell, &mut overrides)?;
        let shape = self.shape_of(&cell, shapes)?;
        self.check_max_len(&cell, &shape, &encode_overrides)?;
        if let Some(bench) = &cell.bench {
            if let Err(message) = bench.depths_for(shape.depth) {
                let span = self.bench_span.clone().unwrap_or(0..0);
                return Err(self.error(&span, format!("{message} (model `{}`)", cell.model)));
            }
        }
        if layer > shape.depth {
            let span = partial
                .iter()
                .find(|(v, _)| matches!(v, AxisValue::Layer(_)))
                .map(|(_, s)| s.clone())
                .unwrap_or(0..0);
            return Err(self.error(
                &span,
                format!(
                    "layer {layer} is beyond model `{}`'s depth {} (layers are 0..={})",
                    cell.model, shape.depth, shape.depth
                ),
            ));
        }
        Ok(cell)
    }

    /// The `[encode]` table with a cell's overrides, `max_len` defaulting to the model's.
    fn encode_settings(
        &self,
        model: &str,
        overrides: &SettingOverrides,
    ) -> Result<EncodeSettings, ConfigError> {
        let mut encode: EncodeSettings = self.with_overrides("encode", &self.encode, overrides)?;
        if let Some(field) = encode.zero_field() {
            let span = overrides
                .last()
                .map(|o| o.2.clone())
                .or(self.encode_span.clone())
                .unwrap_or(0..0);
            return Err(self.error(&span, format!("encode.{field} must be at least 1")));
        }
        encode.max_len = Some(encode.max_len.unwrap_or(self.models[model].max_len));
        Ok(encode)
    }

    /// A cell's `max_len` must fit the model's position embeddings; the error points at
    /// where it was set: a sweep override, the `[encode]` table or the model.
    fn check_max_len(
        &self,
        cell: &Cell,
        shape: &ModelShape,
        encode_overrides: &SettingOverrides,
    ) -> Result<(), ConfigError> {
        let max_len = cell.max_len();
        if max_len <= shape.max_positions && max_len >= 2 {
            return Ok(());
        }
        let explicit_max_len = self.encode.max_len.is_some();
        let span = encode_overrides
            .iter()
            .rev()
            .find(|o| o.0 == "max_len")
            .map(|o| o.2.clone())
            .or_else(|| explicit_max_len.then(|| self.encode_span.clone()).flatten())
            .or_else(|| self.model_spans.get(&cell.model).cloned())
            .unwrap_or(0..0);
        Err(self.error(
            &span,
            format!(
                "max_len {max_len} is outside 2..={} for model `{}` (its position embeddings)",
                shape.max_positions, cell.model
            ),
        ))
    }

    /// Sets the cell's training and re-ranking settings where they apply: `train_de` for a
    /// student, `train_ce` wherever a CE trained by the experiment is involved, `rerank` for
    /// a dual encoder when a re-ranker is named. Settings that do not apply are dropped.
    fn apply_training(
        &self,
        cell: &mut Cell,
        overrides: &mut BTreeMap<&str, SettingOverrides>,
    ) -> Result<(), ConfigError> {
        let mut settings = |stage: &str| overrides.remove(stage).unwrap_or_default();
        let (train_ce_overrides, train_de_overrides, rerank_overrides) = (
            settings("train_ce"),
            settings("train_de"),
            settings("rerank"),
        );
        let checked = |stage: &str,
                       result: Result<(), String>,
                       overrides: &[(String, toml::Value, Range<usize>)]| {
            result.map_err(|message| {
                let span = overrides.last().map(|o| o.2.clone()).unwrap_or(0..0);
                self.error(&span, format!("{stage}: {message}"))
            })
        };
        let spec = &self.models[&cell.model];
        let mut uses_trained_ce = matches!(spec.origin(), ModelOrigin::TrainedCe);
        if matches!(spec.origin(), ModelOrigin::TrainedDe) {
            let student: TrainDeSettings =
                self.with_overrides("train_de", &self.train_de, &train_de_overrides)?;
            checked("train_de", student.check(), &train_de_overrides)?;
            uses_trained_ce |= spec
                .teacher_ce
                .as_ref()
                .is_some_and(|teacher| self.models[teacher].source.is_none());
            cell.train_de = Some(student);
        }
        if spec.kind == ModelKind::De {
            let rerank: RerankSettings =
                self.with_overrides("rerank", &self.rerank, &rerank_overrides)?;
            if rerank.enabled() {
                checked("rerank", rerank.check(), &rerank_overrides)?;
                let span = rerank_overrides.last().map(|o| o.2.clone()).unwrap_or(0..0);
                match self.models.get(&rerank.model) {
                    Some(ce) if ce.kind == ModelKind::Ce => {
                        uses_trained_ce |= ce.source.is_none();
                    }
                    _ => {
                        return Err(self.error(
                            &span,
                            format!(
                                "rerank.model: `{}` is not a declared cross encoder",
                                rerank.model
                            ),
                        ))
                    }
                }
                cell.rerank = Some(rerank);
            }
        }
        if uses_trained_ce {
            let teacher: TrainCeSettings =
                self.with_overrides("train_ce", &self.train_ce, &train_ce_overrides)?;
            checked("train_ce", teacher.check(), &train_ce_overrides)?;
            cell.train_ce = Some(teacher);
        }
        if let Some(rerank) = &cell.rerank {
            let trained_ce = self.models[&rerank.model].source.is_none();
            let teacher = cell.train_ce.as_ref().filter(|_| trained_ce);
            checked(
                "rerank",
                fusion_weight_source(rerank, teacher),
                &rerank_overrides,
            )?;
        }
        Ok(())
    }

    /// Depth and length limit of the cell's model: a checkpoint's from `shapes`, a trained
    /// CE's from its base, a student's depth from its settings.
    fn shape_of(
        &self,
        cell: &Cell,
        shapes: &BTreeMap<String, ModelShape>,
    ) -> Result<ModelShape, ConfigError> {
        let spec = &self.models[&cell.model];
        let source_model = match spec.origin() {
            ModelOrigin::Checkpoint(_) => &cell.model,
            ModelOrigin::TrainedCe => spec.base.as_ref().unwrap_or(&cell.model),
            ModelOrigin::TrainedDe => spec.teacher_de.as_ref().unwrap_or(&cell.model),
        };
        let Some(mut shape) = shapes.get(source_model).copied() else {
            return Err(self.model_error(source_model, "its shape (depth, positions) is unknown"));
        };
        if let Some(student) = &cell.train_de {
            shape.depth = student.layers;
        }
        Ok(shape)
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

/// The `[experiment]` table's own checks: schema, name, seeds.
/// The `[encode]` table (defaults where absent), its batch and shard count at least 1.
fn encode_table(
    file: &ExperimentFile,
    error: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<EncodeSettings, ConfigError> {
    let encode = file
        .encode
        .as_ref()
        .map(|s| s.get_ref().clone())
        .unwrap_or_default();
    if let Some(field) = encode.zero_field() {
        let span = file.encode.as_ref().map(Spanned::span).unwrap_or(0..0);
        return Err(error(span, format!("encode.{field} must be at least 1")));
    }
    Ok(encode)
}

fn unspanned<T: Clone>(tables: &BTreeMap<String, Spanned<T>>) -> BTreeMap<String, T> {
    tables
        .iter()
        .map(|(name, table)| (name.clone(), table.get_ref().clone()))
        .collect()
}

fn spans_of<T>(tables: &BTreeMap<String, Spanned<T>>) -> BTreeMap<String, Range<usize>> {
    tables
        .iter()
        .map(|(name, table)| (name.clone(), table.span()))
        .collect()
}

fn check_section(
    section: &ExperimentSection,
    error: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<(), ConfigError> {
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
    // The name becomes a directory of reports and a file of exports.
    if !crate::util::is_plain_name(name) {
        return Err(error(
            section.name.span(),
            format!(
                "experiment.name: `{name}` must be non-empty, use only letters, digits, `_`, \
                 `-` and `.`, and not start with `.`"
            ),
        ));
    }
    if section.seeds.get_ref().is_empty() {
        return Err(error(
            section.seeds.span(),
            "experiment.seeds is empty".to_string(),
        ));
    }
    Ok(())
}

/// At least one model and one dataset, each table consistent in itself.
fn check_models_and_datasets(
    file: &ExperimentFile,
    error: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<(), ConfigError> {
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
    for (model, spec) in &file.models {
        check_model(model, spec.get_ref(), file)
            .map_err(|message| error(spec.span(), format!("models.{model}: {message}")))?;
    }
    for (dataset, spec) in &file.datasets {
        check_dataset(spec.get_ref())
            .map_err(|message| error(spec.span(), format!("datasets.{dataset}{message}")))?;
    }
    Ok(())
}

/// A dataset table consistent in itself; the message continues `datasets.<name>`.
fn check_dataset(spec: &DatasetSpec) -> Result<(), String> {
    if spec.name.is_some() && spec.path.is_some() {
        return Err(": give `name` or `path`, not both".to_string());
    }
    if spec.queries == QuerySet::Unseen && spec.split == QuerySet::TRAINING_SPLIT {
        return Err(format!(
            ".queries = \"unseen\" leaves out the queries that overlap with split `{}`, so it \
             cannot evaluate that split itself",
            QuerySet::TRAINING_SPLIT
        ));
    }
    if spec
        .collection
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        return Err(".collection must not be empty".to_string());
    }
    Ok(())
}

/// `[bench] datasets` name declared datasets.
fn check_bench_datasets(
    bench: Option<&BenchConfig>,
    file: &ExperimentFile,
    error: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if let (Some(bench), Some(table)) = (bench, &file.bench) {
        if let Some(unknown) = bench
            .datasets
            .iter()
            .find(|name| !file.datasets.contains_key(name.as_str()))
        {
            return Err(error(
                table.span(),
                format!("bench.datasets: `{unknown}` is not a declared dataset"),
            ));
        }
    }
    Ok(())
}

/// `report.selection` names a declared dataset.
fn check_selection_dataset(
    report: &super::ReportSettings,
    file: &ExperimentFile,
    error: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<(), ConfigError> {
    match (&report.selection, &file.report) {
        (Some(name), Some(table)) if !file.datasets.contains_key(name.as_str()) => Err(error(
            table.span(),
            format!("report.selection: `{name}` is not a declared dataset"),
        )),
        _ => Ok(()),
    }
}

/// The dimensions of one sweep grid: its axes, then its zip groups.
fn grid_of(
    sweep: &AxesTable,
    file: &ExperimentFile,
    error: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<Vec<Dimension>, ConfigError> {
    let mut dimensions = Vec::new();
    let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
    for axis in axes_of(sweep, file, error)? {
        seen.insert(axis.name.clone(), axis.span.clone());
        dimensions.push(Dimension::Axis(axis));
    }
    for group in &sweep.zip {
        if !group.get_ref().zip.is_empty() {
            return Err(error(
                group.span(),
                "sweep.zip: a zip group cannot hold another zip".to_string(),
            ));
        }
        let axes = axes_of(group.get_ref(), file, error)?;
        if axes.is_empty() {
            return Err(error(group.span(), "sweep.zip: empty group".to_string()));
        }
        let mut length = None;
        for axis in &axes {
            if seen.contains_key(&axis.name) {
                return Err(error(
                    axis.span.clone(),
                    format!(
                        "sweep.zip: axis `{}` is swept twice (in the grid or in another zip group)",
                        axis.name
                    ),
                ));
            }
            seen.insert(axis.name.clone(), axis.span.clone());
            let count = match &axis.values {
                AxisValues::List(values) => values.len(),
                AxisValues::Layers(LayerSelection::Only(layers)) => layers.len(),
                AxisValues::Layers(LayerSelection::All) => {
                    return Err(error(
                        axis.span.clone(),
                        "sweep.zip: layers must be an explicit list inside a zip group".to_string(),
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
    Ok(dimensions)
}

/// A `[train_ce]`-like table: its value (or the defaults) after its own checks.
fn settings_table<T: Clone + Default>(
    table: &Option<Spanned<T>>,
    name: &str,
    check: fn(&T) -> Result<(), String>,
    error: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<T, ConfigError> {
    let value = table
        .as_ref()
        .map(|t| t.get_ref().clone())
        .unwrap_or_default();
    check(&value).map_err(|message| {
        let span = table.as_ref().map(Spanned::span).unwrap_or(0..0);
        error(span, format!("{name}: {message}"))
    })?;
    Ok(value)
}

/// Where an `interpolate` re-ranking gets its weight: set in `rerank.lambda`, or chosen on
/// the dev split of the cross encoder's `train_ce` task (`teacher`, when the experiment
/// trains it), which must hold at least the `top_k` candidates re-ranking fuses.
fn fusion_weight_source(
    rerank: &RerankSettings,
    teacher: Option<&TrainCeSettings>,
) -> Result<(), String> {
    if rerank.fusion != Fusion::Interpolate || rerank.lambda.is_some() {
        return Ok(());
    }
    match teacher {
        None => Err(format!(
            "fusion = \"interpolate\" without lambda chooses it on the dev split of a cross \
             encoder trained by the experiment; `{}` is not one, so set rerank.lambda",
            rerank.model
        )),
        Some(teacher) if teacher.dev_fraction == 0.0 => Err(
            "fusion = \"interpolate\" without lambda needs a dev split to choose it on: set \
             train_ce.dev_fraction (e.g. 0.1) or rerank.lambda"
                .to_string(),
        ),
        Some(teacher) if teacher.mine_top_k < rerank.top_k => Err(format!(
            "top_k {} is deeper than the dev split's candidates (train_ce.mine_top_k {}), on \
             which the fusion weight is chosen",
            rerank.top_k, teacher.mine_top_k
        )),
        Some(_) => Ok(()),
    }
}

/// A re-ranker must be a declared cross encoder.
fn check_reranker(model: &str, file: &ExperimentFile) -> Result<(), String> {
    match file.models.get(model) {
        None => Err(format!("rerank.model: `{model}` is not a declared model")),
        Some(spec) if spec.get_ref().kind != ModelKind::Ce => Err(format!(
            "rerank.model: `{model}` is a dual encoder; re-ranking needs a cross encoder (kind = \"ce\")"
        )),
        Some(_) => Ok(()),
    }
}

/// The fields of a `[models.<name>]` table fit its origin, and its references resolve.
fn check_model(name: &str, spec: &ModelSpec, file: &ExperimentFile) -> Result<(), String> {
    check_references(name, spec, file)?;
    check_fields_for_origin(spec)
}

/// The models and dataset a model names exist and are of the kind the field needs.
fn check_references(name: &str, spec: &ModelSpec, file: &ExperimentFile) -> Result<(), String> {
    for (field, target) in spec.references() {
        let Some(other) = file.models.get(target) else {
            return Err(format!("{field} = `{target}` is not a declared model"));
        };
        let other = other.get_ref();
        if target == name {
            return Err(format!("{field} names the model itself"));
        }
        let wanted = match field {
            "teacher_ce" => Some(ModelKind::Ce),
            "negatives_from" | "teacher_de" => Some(ModelKind::De),
            _ => None,
        };
        if let Some(kind) = wanted.filter(|kind| *kind != other.kind) {
            return Err(format!(
                "{field} = `{target}` must be a {} model",
                if kind == ModelKind::Ce { "ce" } else { "de" }
            ));
        }
        if field != "teacher_ce" && other.source.is_none() {
            return Err(format!(
                "{field} = `{target}` must be a checkpoint (a model with `source`)"
            ));
        }
    }
    if let Some(dataset) = &spec.train_dataset {
        if !file.datasets.contains_key(dataset) {
            return Err(format!(
                "train_dataset = `{dataset}` is not a declared dataset"
            ));
        }
    }
    Ok(())
}

/// A checkpoint, a trained CE and a trained student each need some fields and take no others.
fn check_fields_for_origin(spec: &ModelSpec) -> Result<(), String> {
    let given = |fields: &[(&str, bool)]| -> Vec<String> {
        fields
            .iter()
            .filter(|(_, set)| *set)
            .map(|(field, _)| field.to_string())
            .collect()
    };
    type Fields<'a> = Vec<(&'a str, bool)>;
    let (required, forbidden): (Fields, Fields) = match spec.origin() {
        ModelOrigin::Checkpoint(_) => (
            Vec::new(),
            vec![
                ("base", spec.base.is_some()),
                ("train_dataset", spec.train_dataset.is_some()),
                ("negatives_from", spec.negatives_from.is_some()),
                ("teacher_de", spec.teacher_de.is_some()),
                ("teacher_ce", spec.teacher_ce.is_some()),
            ],
        ),
        ModelOrigin::TrainedCe => (
            vec![
                ("base", spec.base.is_some()),
                ("train_dataset", spec.train_dataset.is_some()),
                ("negatives_from", spec.negatives_from.is_some()),
            ],
            vec![
                ("teacher_de", spec.teacher_de.is_some()),
                ("teacher_ce", spec.teacher_ce.is_some()),
            ],
        ),
        ModelOrigin::TrainedDe => (
            vec![
                ("teacher_de", spec.teacher_de.is_some()),
                ("train_dataset", spec.train_dataset.is_some()),
            ],
            vec![
                ("base", spec.base.is_some()),
                ("negatives_from", spec.negatives_from.is_some()),
            ],
        ),
    };
    let missing: Vec<&str> = required
        .iter()
        .filter(|(_, set)| !set)
        .map(|(field, _)| *field)
        .collect();
    let what = match spec.origin() {
        ModelOrigin::Checkpoint(_) => "a checkpoint (`source`)",
        ModelOrigin::TrainedCe => "a cross encoder trained by the experiment (no `source`)",
        ModelOrigin::TrainedDe => "a student trained by the experiment (no `source`)",
    };
    if !missing.is_empty() {
        return Err(format!("{what} needs {}", missing.join(", ")));
    }
    let extra = given(&forbidden);
    if !extra.is_empty() {
        return Err(format!("{what} takes no {}", extra.join(", ")));
    }
    Ok(())
}

/// The axes of one table, in a fixed order; references to models and datasets are checked.
fn axes_of(
    table: &AxesTable,
    file: &ExperimentFile,
    error: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<Vec<Axis>, ConfigError> {
    let list = |name: &str, span: Range<usize>, values: Vec<AxisValue>| {
        if values.is_empty() {
            return Err(error(span, format!("sweep.{name} is empty")));
        }
        Ok(Axis {
            name: name.into(),
            span,
            values: AxisValues::List(values),
        })
    };
    let mut axes = Vec::new();
    if let Some(models) = &table.model {
        check_declared("model", models, &file.models, error)?;
        let values = models.get_ref().iter().cloned().map(AxisValue::Model);
        axes.push(list("model", models.span(), values.collect())?);
    }
    if let Some(datasets) = &table.dataset {
        check_declared("dataset", datasets, &file.datasets, error)?;
        let values = datasets.get_ref().iter().cloned().map(AxisValue::Dataset);
        axes.push(list("dataset", datasets.span(), values.collect())?);
    }
    if let Some(inputs) = &table.input {
        let values = inputs.get_ref().iter().copied().map(AxisValue::Input);
        axes.push(list("input", inputs.span(), values.collect())?);
    }
    if let Some(layers) = &table.layers {
        axes.push(Axis {
            name: "layers".into(),
            span: layers.span(),
            values: AxisValues::Layers(layers.get_ref().clone()),
        });
    }
    if let Some(poolings) = &table.pooling {
        let values = poolings.get_ref().iter().copied().map(AxisValue::Pooling);
        axes.push(list("pooling", poolings.span(), values.collect())?);
    }
    for (stage, settings) in table.stage_settings() {
        for (field, values) in settings {
            let settings = values.get_ref().iter().map(|value| AxisValue::Setting {
                stage,
                field: field.clone(),
                value: value.clone(),
            });
            axes.push(list(
                &format!("{stage}.{field}"),
                values.span(),
                settings.collect(),
            )?);
        }
    }
    Ok(axes)
}

/// Fails, naming the declared ones, unless every name the sweep's `axis` lists is a key of
/// `declared` (the file's models or datasets).
fn check_declared<T>(
    axis: &str,
    names: &Spanned<Vec<String>>,
    declared: &BTreeMap<String, T>,
    error: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<(), ConfigError> {
    match names
        .get_ref()
        .iter()
        .find(|name| !declared.contains_key(*name))
    {
        None => Ok(()),
        Some(unknown) => {
            let known: Vec<&str> = declared.keys().map(String::as_str).collect();
            Err(error(
                names.span(),
                format!(
                    "sweep.{axis}: unknown {axis} `{unknown}` (declared: {})",
                    known.join(", ")
                ),
            ))
        }
    }
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
    fn sweeps_beyond_max_cells_are_refused_before_expanding() {
        // 1,000 × 1,000 × 4 layers: counted, never built.
        let values: Vec<String> = (1..=1000).map(|v| v.to_string()).collect();
        let list = values.join(", ");
        let extra = format!("[sweep]\nencode.batch = [{list}]\neval.top_k = [{list}]\n");
        let message = error_of(&extra);
        assert!(message.contains("up to 4000000 cells"), "{message}");
        assert!(
            message.contains("experiment.max_cells = 100000"),
            "{message}"
        );
        // The bound follows the sweep: 2 poolings × 4 layers (0..=3) = 8 cells.
        let sweep = "[sweep]\npooling = [\"mean\", \"cls\"]\n";
        for (limit, fits) in [(7, false), (8, true)] {
            let text = format!("{BASE}{sweep}").replace(
                "name = \"t\"",
                &format!("name = \"t\"\nmax_cells = {limit}"),
            );
            let expanded = Experiment::parse(Path::new("exp.toml"), &text)
                .unwrap()
                .expand(&shapes());
            assert_eq!(expanded.is_ok(), fits, "max_cells {limit}");
        }
    }

    #[test]
    fn names_that_could_leave_a_directory_are_refused() {
        for name in ["..", ".", ".hidden", "a/b", ""] {
            let text = BASE.replace("name = \"t\"", &format!("name = {name:?}"));
            let err = Experiment::parse(Path::new("exp.toml"), &text).unwrap_err();
            assert!(
                err.to_string().contains("experiment.name"),
                "{name:?}: {err}"
            );
        }
        let text = BASE.replace("name = \"t\"", "name = \"v1.2_run-3\"");
        assert!(Experiment::parse(Path::new("exp.toml"), &text).is_ok());
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
    fn sweep_tables_unite_and_equal_cells_merge() {
        let cells = expand("[[sweep]]\nlayers = [1]\n[[sweep]]\nlayers = [1, 2]\npooling = [\"cls\"]\n[[sweep]]\nlayers = [2]\n").unwrap();
        let points: Vec<(usize, Pooling)> = cells.iter().map(|c| (c.layer, c.pooling)).collect();
        assert_eq!(
            points,
            vec![
                (1, Pooling::Mean),
                (1, Pooling::Cls),
                (2, Pooling::Cls),
                (2, Pooling::Mean)
            ]
        );
    }

    const TRAINED: &str = r#"
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
"#;

    #[test]
    fn training_settings_apply_only_where_they_matter() {
        let cells = expand(&format!(
            "{TRAINED}[sweep]\nlayers = [1]\ntrain_de.init = [\"ce:1\", \"random\"]\ntrain_ce.epochs = [1, 2]\nrerank.model = [\"\", \"teacher\"]\n"
        ))
        .unwrap();
        let count = |model: &str| cells.iter().filter(|c| c.model == model).count();
        // The teacher: 2 epochs (its own training); neither init nor re-ranking applies.
        assert_eq!(count("teacher"), 2);
        // The student: 2 inits × 2 teacher epochs × (no re-rank, re-rank).
        assert_eq!(count("student"), 8);
        // The checkpoint DE: re-ranked by a trained CE (2 epochs) or not at all.
        assert_eq!(count("tiny"), 3);
        for cell in &cells {
            assert_eq!(cell.train_de.is_some(), cell.model == "student");
            assert_eq!(
                cell.train_ce.is_some(),
                cell.model != "tiny" || cell.rerank.is_some()
            );
            assert!(cell.model != "teacher" || cell.rerank.is_none());
        }
        let params = cells
            .iter()
            .find(|c| c.model == "student")
            .unwrap()
            .params();
        assert_eq!(params["train_de.layers"], serde_json::json!(2));
        assert!(cells
            .iter()
            .find(|c| c.model == "tiny" && c.rerank.is_none())
            .unwrap()
            .params()
            .keys()
            .all(|key| !key.starts_with("train_")));
    }

    #[test]
    fn an_interpolated_rerank_needs_a_weight_or_a_dev_split_to_choose_it_on() {
        let sweep = "[sweep]\nlayers = [1]\nmodel = [\"tiny\"]\nrerank.model = [\"teacher\"]\n";
        let rerank = "[rerank]\nfusion = \"interpolate\"\ntop_k = 20\n";
        let message = error_of(&format!("{TRAINED}{sweep}{rerank}"));
        assert!(message.contains("train_ce.dev_fraction"), "{message}");
        let deep = error_of(&format!(
            "{TRAINED}{sweep}{rerank}[train_ce]\ndev_fraction = 0.1\nmine_top_k = 10\n"
        ));
        assert!(deep.contains("deeper than the dev split"), "{deep}");
        let cells = expand(&format!(
            "{TRAINED}{sweep}{rerank}[train_ce]\ndev_fraction = 0.1\n"
        ))
        .unwrap();
        let fused = cells.iter().find(|c| c.rerank.is_some()).unwrap();
        assert_eq!(
            fused.params()["rerank.fusion"],
            serde_json::json!("interpolate")
        );
        assert_eq!(
            fused.params()["train_ce.dev_fraction"],
            serde_json::json!(0.1)
        );
        expand(&format!("{TRAINED}{sweep}{rerank}lambda = 0.4\n")).unwrap();
    }

    #[test]
    fn a_student_is_as_deep_as_its_settings() {
        let cells = expand(&format!(
            "{TRAINED}[sweep]\nmodel = [\"student\"]\n[train_de]\nlayers = 1\ninit = \"de:1\"\n"
        ))
        .unwrap();
        assert_eq!(
            cells.iter().map(|c| c.layer).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let message = error_of(&format!("{TRAINED}[sweep]\nmodel = [\"student\"]\nlayers = [2]\n[train_de]\nlayers = 1\ninit = \"random\"\n"));
        assert!(
            message.contains("model `student`") && message.contains("depth 1"),
            "{message}"
        );
    }

    #[test]
    fn model_tables_are_checked() {
        let cases = [
            (
                "[models.ce]\nkind = \"ce\"\nbase = \"tiny\"\ntrain_dataset = \"d\"\n",
                "needs negatives_from",
            ),
            (
                "[models.s]\nteacher_de = \"tiny\"\nteacher_ce = \"tiny\"\ntrain_dataset = \"d\"\n",
                "teacher_ce = `tiny` must be a ce model",
            ),
            (
                "[models.s]\nteacher_de = \"nope\"\ntrain_dataset = \"d\"\n",
                "`nope` is not a declared model",
            ),
            (
                "[models.c]\nsource = \"m\"\nteacher_de = \"tiny\"\n",
                "takes no teacher_de",
            ),
            (
                "[models.s]\nteacher_de = \"tiny\"\ntrain_dataset = \"e\"\n",
                "train_dataset = `e`",
            ),
            ("[rerank]\nmodel = \"tiny\"\n", "needs a cross encoder"),
            ("[train_de]\ninit = \"ce:5\"\n", "copies 5 layers"),
            ("[train_ce]\nnegatives = 0\n", "negatives"),
            ("[bench]\nruns = 0\n", "bench: documents and runs"),
            ("[bench]\ndatasets = [\"e\"]\n", "bench.datasets: `e`"),
            (
                "[bench]\ndepths = [2, 4]\n",
                "4 is beyond the model's depth 3",
            ),
            ("[bench]\nrepeat = 2\n", "unknown field `repeat`"),
            (
                "[report]\nselection = \"dev\"\n",
                "report.selection: `dev` is not a declared dataset",
            ),
            ("[report]\nmargin = -1.0\n", "report: margin"),
            (
                "[report]\ncorrection = \"sidak\"\n",
                "unknown variant `sidak`",
            ),
        ];
        for (extra, needle) in cases {
            let message = error_of(extra);
            assert!(message.contains("exp.toml:"), "{extra:?}: {message}");
            assert!(message.contains(needle), "{extra:?}: {message}");
        }
    }

    #[test]
    fn bench_settings_reach_every_cell() {
        let cells = expand("[bench]\ndocuments = 10\ninputs = [\"single\"]\n").unwrap();
        assert!(cells.iter().all(|cell| cell
            .bench
            .as_ref()
            .is_some_and(|bench| bench.documents == 10 && bench.runs == 5)));
        let bench = cells[0].bench.as_ref().unwrap();
        assert_eq!(bench.depths_for(3).unwrap(), vec![0, 1, 2, 3]);
        assert!(bench.covers("d", InputFormat::Single));
        assert!(!bench.covers("d", InputFormat::SelfPair));
        assert!(expand("").unwrap().iter().all(|cell| cell.bench.is_none()));
    }

    #[test]
    fn a_dataset_evaluates_all_its_queries_unless_told_otherwise() {
        let experiment = parse("").unwrap();
        assert_eq!(experiment.datasets["d"].queries, QuerySet::All);
        let text = BASE.replace("path = \"x\"", "path = \"x\"\nqueries = \"unseen\"");
        let experiment = Experiment::parse(Path::new("exp.toml"), &text).unwrap();
        assert_eq!(experiment.datasets["d"].queries, QuerySet::Unseen);
        assert_eq!(QuerySet::Unseen.training_split(), Some("train"));
        assert_eq!(QuerySet::All.training_split(), None);
        // `all` is not written out, so a spec serialises as it did before the field existed.
        let written = serde_json::to_value(&parse("").unwrap().datasets["d"]).unwrap();
        assert_eq!(
            written,
            serde_json::json!({"name": null, "path": "x", "split": "test"})
        );
    }

    #[test]
    fn an_unknown_query_set_is_refused_naming_the_field_and_line() {
        let text = BASE.replace("path = \"x\"", "path = \"x\"\nqueries = \"seen\"");
        let message = Experiment::parse(Path::new("exp.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(message.contains("exp.toml:12:"), "{message}");
        assert!(message.contains("queries = \"seen\""), "{message}");
        assert!(message.contains("\"all\" or \"unseen\""), "{message}");
        let text = BASE.replace(
            "path = \"x\"",
            "path = \"x\"\nsplit = \"train\"\nqueries = \"unseen\"",
        );
        let message = Experiment::parse(Path::new("exp.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(message.contains("exp.toml:10:"), "{message}");
        assert!(message.contains("datasets.d.queries"), "{message}");
    }

    #[test]
    fn a_dataset_collection_defaults_to_its_name_then_its_key() {
        let text = format!(
            "{BASE}[datasets.named]\nname = \"scifact\"\nqueries = \"unseen\"\n\
             [datasets.dev]\npath = \"target/scifact-dev\"\nsplit = \"dev\"\ncollection = \"scifact\"\n"
        );
        let experiment = Experiment::parse(Path::new("exp.toml"), &text).unwrap();
        assert_eq!(experiment.collection_of("d").as_deref(), Some("d"));
        assert_eq!(
            experiment.collection_of("named").as_deref(),
            Some("scifact")
        );
        assert_eq!(experiment.collection_of("dev").as_deref(), Some("scifact"));
        assert_eq!(experiment.collection_of("undeclared"), None);
        let empty = BASE.replace("path = \"x\"", "path = \"x\"\ncollection = \" \"");
        let message = Experiment::parse(Path::new("exp.toml"), &empty)
            .unwrap_err()
            .to_string();
        assert!(message.contains("datasets.d.collection"), "{message}");
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
