//! What a report shows, gathered from the store for one experiment: the layer curves and
//! their best layers, paired comparisons with significance tests, the distillation table,
//! encoder throughput by depth, training curves and the provenance of the runs.
//!
//! Which model is a cross encoder, and which a student of which teachers, is read from the
//! experiment file kept in the store with its runs (not from the file on disk, which may have
//! changed since).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use super::findings::{Candidate, Factor, Side};
use super::{cells_frame, CellsTable, ReportError, RESULT_STAGES};
use crate::config::{Experiment, ModelKind, ModelOrigin, ReportSettings};
use crate::eval::significance::{compare_by_query, paired_t_interval};
use crate::stages::{depth_metric, ideal_speedup, FUSED_PREFIX, RERANKED_PREFIX};
use crate::store::{CellRow, ExperimentRow, RunRow, Store};
use crate::task::Stage;
use crate::task::TrainingStep;

/// Sign-flip permutations of the randomisation test, and its seed (fixed, so that a report
/// regenerated from the same store is identical).
pub const PERMUTATIONS: usize = 10_000;
const PERMUTATION_SEED: u64 = 0x5EED;

/// The first-stage measures of the paper, in the order tables show them.
pub const HEADLINE_MEASURES: [&str; 3] = ["ndcg_cut_10", "mrr_cut_10", "success_10"];

/// Parameters that identify a layer curve themselves, or that never separate two curves.
const CURVE_AXES: [&str; 6] = ["model", "dataset", "layer", "pooling", "input", "seed"];

/// Everything a report of one experiment shows.
#[derive(Debug)]
pub struct Study {
    pub experiment: ExperimentRow,
    /// The experiment file as run, parsed; `None` for stores that did not keep it.
    pub spec: Option<Experiment>,
    pub runs: Vec<RunRow>,
    pub table: CellsTable,
    /// Parameters whose values differ between cells, and the others with their one value.
    pub varying: Vec<String>,
    pub constant: Vec<(String, String)>,
    cells: Vec<CellRow>,
    /// Documents/s of the corpus encode serving each cell (by cell position).
    encode_rates: BTreeMap<i64, f64>,
    bench_cells: Vec<CellRow>,
    /// (stage, tasks, seconds of their last attempts).
    pub stage_seconds: Vec<(String, usize, f64)>,
    training: Vec<(String, String, Vec<TrainingStep>)>,
}

/// One line of a layer-vs-measure chart.
#[derive(Debug, Clone, Serialize)]
pub struct LayerCurve {
    pub dataset: String,
    pub model: String,
    /// `CE` or `DE`.
    pub kind: &'static str,
    pub pooling: String,
    pub input: String,
    /// Other parameters that tell this curve from its neighbours (`seed=1`).
    pub extra: String,
    pub points: Vec<CurvePoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub layer: i64,
    pub value: f64,
    /// The eval task whose per-query scores back the value.
    #[serde(skip)]
    eval_task: Option<String>,
    /// The cell (position) the value was read from.
    #[serde(skip)]
    cell: Option<i64>,
    /// 95% t interval of the mean over the queries (where the point is backed).
    pub interval: Option<(f64, f64)>,
}

impl CurvePoint {
    /// A point no eval task backs (a mean over datasets): it takes part in no paired test.
    pub fn unbacked(layer: i64, value: f64) -> Self {
        CurvePoint {
            layer,
            value,
            eval_task: None,
            cell: None,
            interval: None,
        }
    }
}

impl LayerCurve {
    pub fn label(&self) -> String {
        format!(
            "{} {} · {} · {}{}",
            self.kind, self.model, self.pooling, self.input, self.extra
        )
    }

    pub fn best(&self) -> Option<&CurvePoint> {
        self.points
            .iter()
            .max_by(|a, b| a.value.total_cmp(&b.value).then(b.layer.cmp(&a.layer)))
    }

    pub fn last(&self) -> Option<&CurvePoint> {
        self.points.iter().max_by_key(|point| point.layer)
    }

    pub fn at(&self, layer: i64) -> Option<&CurvePoint> {
        self.points.iter().find(|point| point.layer == layer)
    }

    /// Whether `other` is the same configuration (model, pooling, input, other settings),
    /// on any dataset.
    pub fn same_configuration(&self, other: &LayerCurve) -> bool {
        (&self.model, &self.pooling, &self.input, &self.extra)
            == (&other.model, &other.pooling, &other.input, &other.extra)
    }
}

/// The families of comparisons a report makes, as their tables and the JSON document name
/// them.
pub const CHOSEN_VS_LAST: &str = "chosen layer vs last layer";
pub const CE_VS_DE_SAME_LAYER: &str = "CE vs DE at the CE's chosen layer";
pub const CE_CHOSEN_VS_DE_LAST: &str = "CE at its chosen layer vs DE at its last layer";
pub const SELF_PAIR_VS_SINGLE: &str = "self_pair vs single at the last layer";
pub const INFUSED_VS_OTHER_INIT: &str = "CE-infused student vs the same student from another init";
pub const VS_TEACHER_DE: &str = "vs the teacher DE";

/// One row of the distillation table.
#[derive(Debug, Clone)]
pub struct DistillRow {
    pub dataset: String,
    pub model: String,
    /// `student`, or `reference` for the teacher DE the students are measured against.
    pub role: &'static str,
    pub layers: i64,
    pub init: String,
    pub loss: String,
    pub reranked_by: String,
    /// nDCG@10, MRR@10, Hits@10 (of the re-ranked run where re-ranked).
    pub values: Vec<Option<f64>>,
    pub docs_per_second: Option<f64>,
    pub speedup: Option<f64>,
    /// Against the reference on nDCG@10 (none for the reference itself).
    pub comparison: Option<Candidate>,
}

impl DistillRow {
    /// How tables and comparisons name the row's system: `student DE-2 ce:1 mse`, and its
    /// re-ranker where it has one.
    pub fn label(&self) -> String {
        let trained = match (self.init.as_str(), self.loss.as_str()) {
            ("-", "-") => String::new(),
            (init, loss) => format!(" {init} {loss}"),
        };
        let reranked = match self.reranked_by.is_empty() {
            true => String::new(),
            false => format!(", re-ranked by {}", self.reranked_by),
        };
        format!("{} DE-{}{trained}{reranked}", self.model, self.layers)
    }
}

/// Encoder throughput of one model at each measured depth.
#[derive(Debug, Clone, Serialize)]
pub struct SpeedCurve {
    pub model: String,
    pub dataset: String,
    pub input: String,
    pub max_len: i64,
    pub documents: i64,
    pub depths: Vec<SpeedPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpeedPoint {
    pub depth: usize,
    pub docs_per_second: f64,
    pub min: f64,
    pub max: f64,
    pub tokens_per_second: f64,
    /// Against the deepest measured depth.
    pub speedup: f64,
    /// `L/k`: every layer costs the same and nothing else costs anything.
    pub ideal: Option<f64>,
    /// `L/k` corrected by the measured cost of depth 0 (tokenization, embeddings, pooling).
    pub ideal_with_fixed_cost: Option<f64>,
}

/// The loss curve of one training task.
#[derive(Debug, Clone, Serialize)]
pub struct LossCurve {
    pub stage: String,
    pub label: String,
    /// What separates the curves of one chart (`train_ce`, `train_de mse`, …).
    pub group: String,
    pub points: Vec<(f64, f64)>,
}

impl Study {
    /// Reads what a report of `experiment` needs.
    pub fn load(store: &Store, experiment: &ExperimentRow) -> Result<Self, ReportError> {
        let spec = (!experiment.text.is_empty())
            .then(|| Experiment::parse(Path::new(&experiment.path), &experiment.text).ok())
            .flatten();
        let table = cells_frame(store, std::slice::from_ref(experiment))?;
        let varying = super::varying_parameters(&table.frame, &table.measures)?;
        let constant = constant_parameters(&table, &varying)?;
        let cells = store.cells(experiment.id, &RESULT_STAGES)?;
        let encode_rates = store
            .cells(experiment.id, &[Stage::Encode])?
            .into_iter()
            .filter_map(|cell| {
                let rate = cell.metrics.get("corpus_texts_per_second").copied()?;
                Some((cell.position, rate))
            })
            .collect();
        let bench_cells = store.cells(experiment.id, &[Stage::Bench])?;
        let mut stage_seconds: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        let tasks = store.tasks(experiment.id)?;
        for task in &tasks {
            let entry = stage_seconds.entry(task.stage.clone()).or_default();
            entry.0 += 1;
            entry.1 += task.seconds.unwrap_or(0.0);
        }
        let mut training = Vec::new();
        for task in &tasks {
            if matches!(task.stage.as_str(), "train_ce" | "train_de") {
                let steps = store.training_steps(&task.key)?;
                if !steps.is_empty() {
                    training.push((task.stage.clone(), task.key.clone(), steps));
                }
            }
        }
        Ok(Study {
            experiment: experiment.clone(),
            spec,
            runs: store.runs(experiment.id)?,
            table,
            varying,
            constant,
            cells,
            encode_rates,
            bench_cells,
            stage_seconds: stage_seconds
                .into_iter()
                .map(|(stage, (count, seconds))| (stage, count, seconds))
                .collect(),
            training,
        })
    }

    /// The seeds of the experiment file.
    pub fn seeds(&self) -> Vec<u64> {
        self.spec
            .as_ref()
            .map(|spec| spec.seeds.clone())
            .unwrap_or_default()
    }

    /// The datasets of the cells, in name order.
    pub fn datasets(&self) -> Vec<String> {
        let names: BTreeSet<String> = self
            .cells
            .iter()
            .filter_map(|cell| text(cell, "dataset"))
            .collect();
        names.into_iter().collect()
    }

    fn kind(&self, model: &str) -> &'static str {
        match self.spec.as_ref().and_then(|spec| spec.models.get(model)) {
            Some(spec) if spec.kind == ModelKind::Ce => "CE",
            _ => "DE",
        }
    }

    fn is_student(&self, model: &str) -> bool {
        self.spec
            .as_ref()
            .and_then(|spec| spec.models.get(model))
            .is_some_and(|spec| matches!(spec.origin(), ModelOrigin::TrainedDe))
    }

    /// One curve per (dataset, model, pooling, input, other varying parameters) of the
    /// models probed layer by layer (students are in the distillation table instead), for
    /// `measure` of the first stage.
    pub fn layer_curves(&self, measure: &str) -> Vec<LayerCurve> {
        let mut curves: Vec<LayerCurve> = Vec::new();
        for cell in &self.cells {
            let (Some(model), Some(dataset), Some(layer)) = (
                text(cell, "model"),
                text(cell, "dataset"),
                cell.params.get("layer").and_then(|v| v.as_i64()),
            ) else {
                continue;
            };
            let Some(&value) = cell.metrics.get(measure) else {
                continue;
            };
            if self.is_student(&model) {
                continue;
            }
            let separating = self.separating_parameters(&model);
            let extra: String = separating
                .iter()
                .filter_map(|name| {
                    let value = cell.params.get(name.as_str())?;
                    Some(format!(" · {name}={}", display_json(value)))
                })
                .collect();
            let curve = LayerCurve {
                kind: self.kind(&model),
                pooling: text(cell, "pooling").unwrap_or_default(),
                input: text(cell, "input").unwrap_or_default(),
                dataset,
                model,
                extra,
                points: Vec::new(),
            };
            let index = match curves.iter().position(|c| {
                (&c.dataset, &c.model, &c.pooling, &c.input, &c.extra)
                    == (
                        &curve.dataset,
                        &curve.model,
                        &curve.pooling,
                        &curve.input,
                        &curve.extra,
                    )
            }) {
                Some(index) => index,
                None => {
                    curves.push(curve);
                    curves.len() - 1
                }
            };
            let points = &mut curves[index].points;
            let point = CurvePoint {
                layer,
                value,
                eval_task: task_of(cell, Stage::Eval),
                cell: Some(cell.position),
                interval: None,
            };
            // Cells that differ only in what follows the first stage (re-ranking) share it;
            // the point speaks for the cell without a re-ranker, whose settings are the
            // first stage's alone.
            match points.iter_mut().find(|p| p.layer == layer) {
                None => points.push(point),
                Some(existing) if reranker(cell).is_none() => *existing = point,
                Some(_) => {}
            }
        }
        for curve in &mut curves {
            curve.points.sort_by_key(|point| point.layer);
        }
        curves
    }

    /// [`Self::layer_curves`] with each backed point's 95% interval of the mean over queries
    /// (Student's t on the per-query values), for the charts' bands.
    pub fn layer_curves_with_intervals(
        &self,
        store: &Store,
        measure: &str,
    ) -> Result<Vec<LayerCurve>, ReportError> {
        let mut curves = self.layer_curves(measure);
        for point in curves.iter_mut().flat_map(|curve| curve.points.iter_mut()) {
            let Some(task) = &point.eval_task else {
                continue;
            };
            let scores: Vec<f64> = store.query_metrics(task, measure)?.into_values().collect();
            let zeros = vec![0.0; scores.len()];
            point.interval = paired_t_interval(&scores, &zeros, 0.95)
                .ok()
                .map(|interval| (interval.low, interval.high));
        }
        Ok(curves)
    }

    /// The parameters that tell apart two curves of `model`: those (besides the curve's own
    /// axes) whose values differ between the model's cells. Settings of stages that do not
    /// make the model (a re-ranker's training, the bench) never separate its curves.
    fn separating_parameters(&self, model: &str) -> Vec<String> {
        let trained_ce = self
            .spec
            .as_ref()
            .and_then(|spec| spec.models.get(model))
            .is_some_and(|spec| matches!(spec.origin(), ModelOrigin::TrainedCe));
        let relevant = |name: &str| {
            !CURVE_AXES.contains(&name)
                && !["rerank.", "bench.", "train_de."]
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
                && (trained_ce || !name.starts_with("train_ce."))
        };
        let cells: Vec<&CellRow> = self
            .cells
            .iter()
            .filter(|cell| text(cell, "model").as_deref() == Some(model))
            .collect();
        self.varying
            .iter()
            .filter(|name| relevant(name))
            .filter(|name| {
                let values: BTreeSet<String> = cells
                    .iter()
                    .map(|cell| {
                        cell.params
                            .get(name.as_str())
                            .map(display_json)
                            .unwrap_or_default()
                    })
                    .collect();
                values.len() > 1
            })
            .cloned()
            .collect()
    }

    /// How the report concludes: the experiment's `[report]` settings.
    pub fn settings(&self) -> ReportSettings {
        self.spec
            .as_ref()
            .map(|spec| spec.report.clone())
            .unwrap_or_default()
    }

    /// The dataset on which layers are chosen, when the experiment declares one.
    pub fn selection(&self) -> Option<String> {
        self.settings().selection
    }

    /// The datasets on which findings are tested: all but the selection dataset.
    pub fn test_datasets(&self) -> Vec<String> {
        let selection = self.selection();
        self.datasets()
            .into_iter()
            .filter(|dataset| Some(dataset) != selection.as_ref())
            .collect()
    }

    /// The collections (see [`Experiment::collection_of`]) `model` was trained on, itself or
    /// through the models it was made from (its base, its teachers).
    pub fn trained_on(&self, model: &str) -> BTreeSet<String> {
        let mut collections = BTreeSet::new();
        let Some(spec) = &self.spec else {
            return collections;
        };
        let mut pending = vec![model.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(name) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(model) = spec.models.get(&name) else {
                continue;
            };
            if let Some(collection) = model
                .train_dataset
                .as_deref()
                .and_then(|dataset| spec.collection_of(dataset))
            {
                collections.insert(collection);
            }
            pending.extend(
                [&model.base, &model.teacher_ce, &model.teacher_de]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        collections
    }

    /// For each model trained by the experiment, the datasets that are in-domain for it (whose
    /// collection it, or a model it was made from, was trained on).
    pub fn in_domain(&self) -> BTreeMap<String, Vec<String>> {
        let Some(spec) = &self.spec else {
            return BTreeMap::new();
        };
        spec.models
            .keys()
            .filter_map(|model| {
                let trained_on = self.trained_on(model);
                let datasets: Vec<String> = self
                    .datasets()
                    .into_iter()
                    .filter(|d| {
                        spec.collection_of(d)
                            .is_some_and(|c| trained_on.contains(&c))
                    })
                    .collect();
                (!datasets.is_empty()).then(|| (model.clone(), datasets))
            })
            .collect()
    }

    /// The test datasets no model of the experiment was trained on: what a zero-shot mean is
    /// taken over, the same for every row so that means compare.
    pub fn zero_shot_datasets(&self) -> Vec<String> {
        let in_domain: BTreeSet<String> = self.in_domain().into_values().flatten().collect();
        self.test_datasets()
            .into_iter()
            .filter(|dataset| !in_domain.contains(dataset))
            .collect()
    }

    /// The layer of `curve`'s configuration that the selection dataset chose (its best
    /// layer there), when the experiment declares a selection dataset that has the curve.
    pub fn chosen_layer(&self, curve: &LayerCurve, curves: &[LayerCurve]) -> Option<i64> {
        let selection = self.selection()?;
        curves
            .iter()
            .find(|c| c.dataset == selection && c.same_configuration(curve))?
            .best()
            .map(|point| point.layer)
    }

    /// Paired comparisons on `measure` of the layer curves, on the test datasets: with a
    /// selection dataset, each curve's chosen layer against its last, a CE against the DE at
    /// the CE's chosen layer, and a CE's chosen layer against the DE's last; always,
    /// `self_pair` against `single` input at the last layer. Best layers on a test split are
    /// post hoc and never tested.
    pub fn layer_candidates(
        &self,
        store: &Store,
        curves: &[LayerCurve],
        measure: &str,
    ) -> Result<Vec<Candidate>, ReportError> {
        let selection = self.selection();
        let tested: Vec<&LayerCurve> = curves
            .iter()
            .filter(|c| Some(&c.dataset) != selection.as_ref())
            .collect();
        let mut pairings = Vec::new();
        for curve in &tested {
            if let Some(chosen) = self.chosen_layer(curve, curves) {
                pairings.extend(self.chosen_layer_pairings(curve, chosen, &tested));
            }
        }
        pairings.extend(self_pair_vs_single(&tested));
        pairings
            .into_iter()
            .map(|pairing| self.candidate(store, pairing, (measure, measure)))
            .collect()
    }

    /// The comparisons a curve's chosen layer takes part in.
    fn chosen_layer_pairings<'c>(
        &self,
        curve: &'c LayerCurve,
        chosen: i64,
        curves: &[&'c LayerCurve],
    ) -> Vec<Pairing<'c>> {
        let mut pairings = Vec::new();
        let (Some(point), Some(last)) = (curve.at(chosen), curve.last()) else {
            return pairings;
        };
        if point.layer != last.layer {
            pairings.push(Pairing::new(
                CHOSEN_VS_LAST,
                Factor::Layer,
                curve,
                point,
                curve,
                last,
            ));
        }
        if curve.kind != "CE" {
            return pairings;
        }
        let same_reading = |de: &&&LayerCurve| {
            de.kind == "DE"
                && !self.is_student(&de.model)
                && (&de.dataset, &de.pooling, &de.input)
                    == (&curve.dataset, &curve.pooling, &curve.input)
        };
        for de in curves.iter().filter(same_reading) {
            if let Some(de_point) = de.at(chosen) {
                pairings.push(Pairing::new(
                    CE_VS_DE_SAME_LAYER,
                    Factor::Model,
                    curve,
                    point,
                    de,
                    de_point,
                ));
            }
            if let Some(de_last) = de.last() {
                pairings.push(Pairing::new(
                    CE_CHOSEN_VS_DE_LAST,
                    Factor::ModelAndLayer,
                    curve,
                    point,
                    de,
                    de_last,
                ));
            }
        }
        pairings
    }

    /// A pairing of two curve points as a candidate comparison, tested on their per-query
    /// scores of `measures` (A's, B's).
    fn candidate(
        &self,
        store: &Store,
        pairing: Pairing<'_>,
        measures: (&str, &str),
    ) -> Result<Candidate, ReportError> {
        let Pairing {
            family,
            factor,
            a,
            b,
        } = pairing;
        let test = match (&a.point.eval_task, &b.point.eval_task) {
            (Some(task_a), Some(task_b)) => {
                self.compare_tasks(store, (task_a, measures.0), (task_b, measures.1))?
            }
            _ => None,
        };
        Ok(Candidate {
            family,
            dataset: a.dataset.to_string(),
            factor,
            a: self.side(a.name(), a.point.cell, measures.0),
            b: self.side(b.name(), b.point.cell, measures.1),
            test,
        })
    }

    /// One side of a comparison: its label, cell and the cell's settings.
    fn side(&self, label: String, cell: Option<i64>, measure: &str) -> Side {
        let settings = cell
            .and_then(|position| self.cells.iter().find(|c| c.position == position))
            .map(|cell| cell.params.clone())
            .unwrap_or_default();
        Side {
            label,
            cell: cell.unwrap_or(-1),
            measure: measure.to_string(),
            mean: None,
            settings,
        }
    }

    fn compare_tasks(
        &self,
        store: &Store,
        (task_a, measure_a): (&str, &str),
        (task_b, measure_b): (&str, &str),
    ) -> Result<Option<crate::eval::significance::PairedComparison>, ReportError> {
        let scores_a = store.query_metrics(task_a, measure_a)?;
        let scores_b = store.query_metrics(task_b, measure_b)?;
        Ok(compare_by_query(&scores_a, &scores_b, PERMUTATIONS, PERMUTATION_SEED).ok())
    }

    /// Paired comparisons on nDCG@10 of each student infused from the CE (`ce:K`) against
    /// the students whose cells differ only in their init, from the DE's layers (`de:K`) or
    /// at random, first stage only.
    pub fn student_candidates(&self, store: &Store) -> Result<Vec<Candidate>, ReportError> {
        let measure = HEADLINE_MEASURES[0];
        let students: Vec<&CellRow> = self
            .cells
            .iter()
            .filter(|cell| text(cell, "model").is_some_and(|m| self.is_student(&m)))
            .filter(|cell| reranker(cell).is_none())
            .collect();
        let mut candidates = Vec::new();
        for infused in &students {
            let Some(depth) = text(infused, "train_de.init")
                .and_then(|init| init.strip_prefix("ce:").map(str::to_string))
            else {
                continue;
            };
            let rivals = [format!("de:{depth}"), "random".to_string()];
            // Every parameter but the init: a student trained longer is not a rival.
            for rival in students.iter().filter(|cell| {
                all_but_init(infused).eq(all_but_init(cell))
                    && text(cell, "train_de.init").is_some_and(|i| rivals.contains(&i))
            }) {
                candidates.push(self.cell_candidate(
                    store,
                    (INFUSED_VS_OTHER_INIT, Factor::Init),
                    (infused, Stage::Eval, measure),
                    (rival, Stage::Eval, measure),
                )?);
            }
        }
        Ok(candidates)
    }

    /// A candidate comparing two cells directly (not curve points): each side the measure of
    /// one of its stages' tasks.
    fn cell_candidate(
        &self,
        store: &Store,
        (family, factor): (&'static str, Factor),
        (a, stage_a, measure_a): (&CellRow, Stage, &str),
        (b, stage_b, measure_b): (&CellRow, Stage, &str),
    ) -> Result<Candidate, ReportError> {
        let test = match (task_of(a, stage_a), task_of(b, stage_b)) {
            (Some(task_a), Some(task_b)) => {
                self.compare_tasks(store, (&task_a, measure_a), (&task_b, measure_b))?
            }
            _ => None,
        };
        Ok(Candidate {
            family,
            dataset: text(a, "dataset").unwrap_or_default(),
            factor,
            a: self.side(student_label(a), Some(a.position), measure_a),
            b: self.side(student_label(b), Some(b.position), measure_b),
            test,
        })
    }

    /// The students of the experiment and the teacher DE they are measured against, per
    /// dataset; empty when the experiment trains no student.
    pub fn distillation(&self, store: &Store) -> Result<Vec<DistillRow>, ReportError> {
        let Some(spec) = &self.spec else {
            return Ok(Vec::new());
        };
        let mut rows = Vec::new();
        for dataset in self.test_datasets() {
            let of_dataset: Vec<&CellRow> = self
                .cells
                .iter()
                .filter(|cell| text(cell, "dataset").as_deref() == Some(dataset.as_str()))
                .collect();
            let students: Vec<&CellRow> = of_dataset
                .iter()
                .copied()
                .filter(|cell| text(cell, "model").is_some_and(|m| self.is_student(&m)))
                .collect();
            let teachers: BTreeSet<String> = students
                .iter()
                .filter_map(|cell| spec.models.get(&text(cell, "model")?)?.teacher_de.clone())
                .collect();
            for teacher in &teachers {
                // The reference: the teacher at its deepest probed layer, first stage only,
                // mean pooling and the sentence alone where it was probed that way.
                let reference = of_dataset
                    .iter()
                    .copied()
                    .filter(|cell| text(cell, "model").as_deref() == Some(teacher.as_str()))
                    .filter(|cell| reranker(cell).is_none())
                    .max_by_key(|cell| {
                        (
                            cell.params.get("layer").and_then(|v| v.as_i64()),
                            text(cell, "pooling").as_deref() == Some("mean"),
                            text(cell, "input").as_deref() == Some("single"),
                        )
                    });
                let reference_rate =
                    reference.and_then(|cell| self.encode_rates.get(&cell.position).copied());
                let mut group: Vec<&CellRow> = of_dataset
                    .iter()
                    .copied()
                    .filter(|cell| {
                        text(cell, "model").as_deref() == Some(teacher.as_str())
                            && reference.is_some_and(|r| {
                                r.params.get("layer") == cell.params.get("layer")
                                    && r.params.get("pooling") == cell.params.get("pooling")
                                    && r.params.get("input") == cell.params.get("input")
                            })
                    })
                    .collect();
                group.extend(students.iter().copied().filter(|cell| {
                    text(cell, "model")
                        .and_then(|m| spec.models.get(&m)?.teacher_de.clone())
                        .as_deref()
                        == Some(teacher.as_str())
                }));
                for cell in group {
                    for prefix in row_prefixes(cell) {
                        rows.push(self.distill_row(
                            store,
                            cell,
                            prefix,
                            reference,
                            reference_rate,
                        )?);
                    }
                }
            }
        }
        Ok(rows)
    }

    /// The row of `cell`'s measures named with `prefix`: its first stage (``), its re-ranking
    /// by the cross encoder alone or fused with the first stage.
    fn distill_row(
        &self,
        store: &Store,
        cell: &CellRow,
        prefix: &str,
        reference: Option<&CellRow>,
        reference_rate: Option<f64>,
    ) -> Result<DistillRow, ReportError> {
        let model = text(cell, "model").unwrap_or_default();
        let mut reranked_by = reranker(cell).unwrap_or_default();
        if prefix == FUSED_PREFIX {
            let lambda = cell
                .metrics
                .get("fusion_lambda")
                .copied()
                .unwrap_or(f64::NAN);
            reranked_by = format!("{reranked_by} fused, λ {lambda:.2}");
        }
        let values = HEADLINE_MEASURES
            .iter()
            .map(|measure| cell.metrics.get(&format!("{prefix}{measure}")).copied())
            .collect();
        let docs_per_second = self.encode_rates.get(&cell.position).copied();
        let is_reference = reference.is_some_and(|r| r.position == cell.position);
        let role = if is_reference || !self.is_student(&model) {
            "reference"
        } else {
            "student"
        };
        let layers = cell
            .params
            .get("train_de.layers")
            .or_else(|| cell.params.get("layer"))
            .and_then(|v| v.as_i64())
            .unwrap_or_default();
        let mut row = DistillRow {
            dataset: text(cell, "dataset").unwrap_or_default(),
            role,
            layers,
            init: text(cell, "train_de.init").unwrap_or_else(|| "-".to_string()),
            loss: text(cell, "train_de.loss").unwrap_or_else(|| "-".to_string()),
            reranked_by,
            values,
            docs_per_second,
            speedup: docs_per_second.zip(reference_rate).map(|(own, r)| own / r),
            comparison: None,
            model,
        };
        if let Some(reference) = reference.filter(|_| !is_reference) {
            let measure = HEADLINE_MEASURES[0];
            let own_stage = match prefix.is_empty() {
                true => Stage::Eval,
                false => Stage::Rerank,
            };
            let mut candidate = self.cell_candidate(
                store,
                (VS_TEACHER_DE, Factor::System),
                (cell, own_stage, &format!("{prefix}{measure}")),
                (reference, Stage::Eval, measure),
            )?;
            candidate.a.label = row.label();
            candidate.b.label = format!(
                "{} DE-{}",
                text(reference, "model").unwrap_or_default(),
                reference
                    .params
                    .get("layer")
                    .and_then(|v| v.as_i64())
                    .unwrap_or_default()
            );
            row.comparison = Some(candidate);
        }
        Ok(row)
    }
    /// Encoder throughput by depth, from the experiment's bench tasks.
    pub fn speed_curves(&self) -> Vec<SpeedCurve> {
        let mut seen = BTreeSet::new();
        let mut curves = Vec::new();
        for cell in &self.bench_cells {
            let Some(task) = task_of(cell, Stage::Bench) else {
                continue;
            };
            if !seen.insert(task) {
                continue;
            }
            let mut depths: Vec<usize> = cell
                .metrics
                .keys()
                .filter_map(|name| name.strip_prefix("docs_per_second@")?.parse().ok())
                .collect();
            depths.sort_unstable();
            let metric = |name: &str, depth: usize| {
                cell.metrics
                    .get(&depth_metric(name, depth))
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            let Some(&deepest) = depths.last() else {
                continue;
            };
            let full_rate = metric("docs_per_second", deepest);
            let fixed_seconds = depths
                .first()
                .filter(|&&depth| depth == 0)
                .map(|&depth| 1.0 / metric("docs_per_second", depth));
            let points = depths
                .iter()
                .map(|&depth| {
                    let rate = metric("docs_per_second", depth);
                    let full_seconds = 1.0 / full_rate;
                    let ideal = (depth > 0).then(|| deepest as f64 / depth as f64);
                    let ideal_with_fixed_cost = fixed_seconds
                        .map(|fixed| ideal_speedup(full_seconds, fixed, deepest, depth));
                    SpeedPoint {
                        depth,
                        docs_per_second: rate,
                        min: metric("docs_per_second_min", depth),
                        max: metric("docs_per_second_max", depth),
                        tokens_per_second: metric("tokens_per_second", depth),
                        speedup: rate / full_rate,
                        ideal,
                        ideal_with_fixed_cost,
                    }
                })
                .collect();
            curves.push(SpeedCurve {
                model: text(cell, "model").unwrap_or_default(),
                dataset: text(cell, "dataset").unwrap_or_default(),
                input: text(cell, "input").unwrap_or_default(),
                max_len: cell
                    .params
                    .get("encode.max_len")
                    .and_then(|v| v.as_i64())
                    .unwrap_or_default(),
                documents: cell
                    .metrics
                    .get("bench_documents")
                    .map(|&n| n as i64)
                    .unwrap_or_default(),
                depths: points,
            });
        }
        curves
    }

    /// The loss curve of every training task, labelled by what the task trains.
    pub fn loss_curves(&self) -> Vec<LossCurve> {
        self.training
            .iter()
            .map(|(stage, key, steps)| {
                let cell = self.cells.iter().find(|cell| {
                    let trains_this_model = text(cell, "model").is_some_and(|model| {
                        (stage == "train_de") == self.is_student(&model)
                            || (stage == "train_ce" && self.kind(&model) == "CE")
                    });
                    trains_this_model && cell.tasks.iter().any(|(_, task, _)| task == key)
                });
                let model = cell.and_then(|c| text(c, "model")).unwrap_or_default();
                let (label, group) = if stage == "train_de" {
                    let setting = |name: &str| {
                        cell.and_then(|c| text(c, name))
                            .unwrap_or_else(|| "?".to_string())
                    };
                    let loss = setting("train_de.loss");
                    (
                        format!("{model} init={} loss={loss}", setting("train_de.init")),
                        format!("train_de {loss}"),
                    )
                } else {
                    (format!("{model} (cross encoder)"), stage.clone())
                };
                LossCurve {
                    stage: stage.clone(),
                    label,
                    group,
                    points: steps
                        .iter()
                        .map(|step| (step.step as f64, step.loss))
                        .collect(),
                }
            })
            .collect()
    }

    /// The cells table restricted to the parameters that differ and the measures: header
    /// and rows as displayed.
    pub fn parameter_table(&self) -> Result<(Vec<String>, Vec<Vec<String>>), ReportError> {
        let mut columns: Vec<String> = self.varying.clone();
        columns.extend(self.table.measures.iter().cloned());
        let series: Vec<_> = columns
            .iter()
            .map(|name| {
                self.table
                    .frame
                    .column(name)
                    .map(|c| c.as_materialized_series().clone())
            })
            .collect::<Result<_, _>>()?;
        let rows = (0..self.table.frame.height())
            .map(|row| {
                series
                    .iter()
                    .map(|s| {
                        super::display_any(&s.get(row).unwrap_or(polars::prelude::AnyValue::Null))
                    })
                    .collect()
            })
            .collect();
        Ok((columns, rows))
    }
}

/// Parameters with one value over every cell, as `(name, value)`.
fn constant_parameters(
    table: &CellsTable,
    varying: &[String],
) -> Result<Vec<(String, String)>, ReportError> {
    let mut constant = Vec::new();
    for name in &table.parameters {
        if varying.contains(name) || table.frame.height() == 0 {
            continue;
        }
        let series = table.frame.column(name)?.as_materialized_series();
        let value = series.get(0).unwrap_or(polars::prelude::AnyValue::Null);
        constant.push((name.clone(), super::display_any(&value)));
    }
    Ok(constant)
}

/// A cell's parameters, its student init left out.
fn all_but_init(cell: &CellRow) -> impl Iterator<Item = (&String, &serde_json::Value)> {
    cell.params
        .iter()
        .filter(|(name, _)| name.as_str() != "train_de.init")
}

fn text(cell: &CellRow, name: &str) -> Option<String> {
    cell.params.get(name).map(display_json)
}

fn display_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The measure prefixes of a cell's distillation rows: its first stage, or its re-rankings
/// (by the cross encoder alone, and fused when the task fused).
fn row_prefixes(cell: &CellRow) -> Vec<&'static str> {
    if reranker(cell).is_none() {
        return vec![""];
    }
    let fused = format!("{FUSED_PREFIX}{}", HEADLINE_MEASURES[0]);
    if cell.metrics.contains_key(&fused) {
        vec![RERANKED_PREFIX, FUSED_PREFIX]
    } else {
        vec![RERANKED_PREFIX]
    }
}

/// The cross encoder re-ranking the cell's run, if any.
fn reranker(cell: &CellRow) -> Option<String> {
    text(cell, "rerank.model").filter(|model| !model.is_empty())
}

fn task_of(cell: &CellRow, stage: Stage) -> Option<String> {
    cell.tasks
        .iter()
        .find(|(name, _, _)| name == stage.name())
        .map(|(_, key, _)| key.clone())
}

/// How a student cell is named in comparisons: `student ce:1 mse`.
fn student_label(cell: &CellRow) -> String {
    format!(
        "{} {} {}",
        text(cell, "model").unwrap_or_default(),
        text(cell, "train_de.init").unwrap_or_default(),
        text(cell, "train_de.loss").unwrap_or_default()
    )
}

/// Two points of layer curves to compare, the family the comparison belongs to and the
/// factor it isolates.
struct Pairing<'c> {
    family: &'static str,
    factor: Factor,
    a: CurveSide<'c>,
    b: CurveSide<'c>,
}

impl<'c> Pairing<'c> {
    fn new(
        family: &'static str,
        factor: Factor,
        curve_a: &'c LayerCurve,
        a: &'c CurvePoint,
        curve_b: &'c LayerCurve,
        b: &'c CurvePoint,
    ) -> Self {
        Pairing {
            family,
            factor,
            a: CurveSide::of(curve_a, a),
            b: CurveSide::of(curve_b, b),
        }
    }
}

/// A point of a layer curve, with the curve's dataset and label.
struct CurveSide<'c> {
    dataset: &'c str,
    label: String,
    point: &'c CurvePoint,
}

impl<'c> CurveSide<'c> {
    fn of(curve: &'c LayerCurve, point: &'c CurvePoint) -> Self {
        CurveSide {
            dataset: &curve.dataset,
            label: curve.label(),
            point,
        }
    }

    /// `label L<layer>`, as the comparisons table names it.
    fn name(&self) -> String {
        format!("{} L{}", self.label, self.point.layer)
    }
}

/// The input format the paper varies: a sentence paired with itself against the sentence
/// alone, both read at the last layer (a layer chosen per input would vary two things).
fn self_pair_vs_single<'c>(curves: &[&'c LayerCurve]) -> Vec<Pairing<'c>> {
    curves
        .iter()
        .filter(|c| c.input == "self_pair")
        .filter_map(|pair| {
            let single = curves.iter().find(|c| {
                c.input == "single"
                    && (&c.dataset, &c.model, &c.pooling, &c.extra)
                        == (&pair.dataset, &pair.model, &pair.pooling, &pair.extra)
            })?;
            let (pair_last, single_last) = (pair.last()?, single.at(pair.last()?.layer)?);
            Some(Pairing::new(
                SELF_PAIR_VS_SINGLE,
                Factor::Input,
                pair,
                pair_last,
                single,
                single_last,
            ))
        })
        .collect()
}
