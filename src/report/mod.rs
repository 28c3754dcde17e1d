/*!
Reports: tables of results built with polars from the store, their exports, the HTML and
Markdown report of an experiment and the paper's figures.

This module owns turning recorded cells, parameters and measures into data frames (one row
per cell, one column per parameter and per measure; or one row per cell × query × measure),
the comparisons over them (only the parameters that differ; paired significance tests judged
like for like, family by family: `findings`), the machine-readable study (`document`),
charts (plotters), report pages (minijinja templates) and figure files. It reads the store and
never writes it; it must not run tasks.
*/

pub mod charts;
pub mod document;
pub mod figures;
pub mod findings;
pub mod means;
pub mod page;
pub mod study;

pub use figures::write_figures;
pub use page::{report_dir, write_report, ReportFormat};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::store::{CellRow, ExperimentRow, Store, StoreError};
use crate::task::Stage;

/// Why a table could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building the table: {0}")]
    Polars(#[from] PolarsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// File formats of `repro export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Parquet,
    Json,
}

/// The stages whose metrics are a cell's results: the first-stage evaluation and, where the
/// cell re-ranks, the re-ranked evaluation (its measures are named `reranked_…`, so the two
/// never collide).
pub const RESULT_STAGES: [Stage; 2] = [Stage::Eval, Stage::Rerank];

/// Columns every cell table starts with.
pub const LEADING: [&str; 3] = ["experiment", "cell", "state"];

/// A cells table and which of its columns are parameters and which are measures.
#[derive(Debug, Clone)]
pub struct CellsTable {
    pub frame: DataFrame,
    pub parameters: Vec<String>,
    pub measures: Vec<String>,
}

/// One row per active cell of each experiment: `experiment`, `cell` (position), `state`, one
/// column per parameter (typed: integer, float, boolean or string) and one per measure.
pub fn cells_frame(
    store: &Store,
    experiments: &[ExperimentRow],
) -> Result<CellsTable, ReportError> {
    let mut rows: Vec<(String, CellRow)> = Vec::new();
    for experiment in experiments {
        for cell in store.cells(experiment.id, &RESULT_STAGES)? {
            rows.push((experiment.name.clone(), cell));
        }
    }
    cells_table(&rows)
}

/// The table of [`cells_frame`] from cells already read: (experiment name, cell) pairs.
pub fn cells_table(rows: &[(String, CellRow)]) -> Result<CellsTable, ReportError> {
    let params: BTreeSet<String> = rows
        .iter()
        .flat_map(|(_, cell)| cell.params.keys().cloned())
        .collect();
    let measures: BTreeSet<String> = rows
        .iter()
        .flat_map(|(_, cell)| cell.metrics.keys().cloned())
        .collect();
    let mut columns: Vec<Column> = vec![
        Column::new(
            "experiment".into(),
            rows.iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "cell".into(),
            rows.iter()
                .map(|(_, cell)| cell.position)
                .collect::<Vec<i64>>(),
        ),
        Column::new(
            "state".into(),
            rows.iter()
                .map(|(_, cell)| cell_state(cell))
                .collect::<Vec<_>>(),
        ),
    ];
    for name in &params {
        let values: Vec<Option<&serde_json::Value>> =
            rows.iter().map(|(_, cell)| cell.params.get(name)).collect();
        columns.push(json_column(name, &values));
    }
    for measure in &measures {
        let values: Vec<Option<f64>> = rows
            .iter()
            .map(|(_, cell)| cell.metrics.get(measure).copied())
            .collect();
        columns.push(Column::new(measure.as_str().into(), values));
    }
    Ok(CellsTable {
        frame: DataFrame::new_infer_height(columns)?,
        parameters: params.into_iter().collect(),
        measures: measures.into_iter().collect(),
    })
}

/// The training curves of an experiment: one row per optimisation step of each of its
/// training tasks (task key, stage, step, epoch, loss, learning rate, gradient norm).
pub fn training_steps_frame(
    store: &Store,
    experiment: &ExperimentRow,
) -> Result<DataFrame, ReportError> {
    let (mut tasks, mut stages) = (Vec::new(), Vec::new());
    let (mut steps, mut epochs) = (Vec::new(), Vec::new());
    let (mut losses, mut rates, mut norms) = (Vec::new(), Vec::new(), Vec::new());
    for task in store.tasks(experiment.id)? {
        if !matches!(task.stage.as_str(), "train_ce" | "train_de") {
            continue;
        }
        for step in store.training_steps(&task.key)? {
            tasks.push(task.key.clone());
            stages.push(task.stage.clone());
            steps.push(step.step as i64);
            epochs.push(step.epoch as i64);
            losses.push(step.loss);
            rates.push(step.learning_rate);
            norms.push(step.grad_norm);
        }
    }
    Ok(DataFrame::new_infer_height(vec![
        Column::new(
            "experiment".into(),
            vec![experiment.name.as_str(); tasks.len()],
        ),
        Column::new("task".into(), tasks),
        Column::new("stage".into(), stages),
        Column::new("step".into(), steps),
        Column::new("epoch".into(), epochs),
        Column::new("loss".into(), losses),
        Column::new("learning_rate".into(), rates),
        Column::new("grad_norm".into(), norms),
    ])?)
}

/// One row per (cell, query, measure) of one experiment: the cells' parameters, `query_id`,
/// `measure` and `value` — the input of paired significance tests.
pub fn per_query_frame(
    store: &Store,
    experiment: &ExperimentRow,
) -> Result<DataFrame, ReportError> {
    let cells = store.cells(experiment.id, &RESULT_STAGES)?;
    let params: BTreeSet<String> = cells
        .iter()
        .flat_map(|c| c.params.keys().cloned())
        .collect();
    let mut cell_index: Vec<usize> = Vec::new();
    let mut queries: Vec<String> = Vec::new();
    let mut measures: Vec<String> = Vec::new();
    let mut values: Vec<f64> = Vec::new();
    for (index, cell) in cells.iter().enumerate() {
        let result_tasks = cell.tasks.iter().filter(|(stage, _, _)| {
            RESULT_STAGES
                .iter()
                .any(|result| result.name() == stage.as_str())
        });
        for (_, key, _) in result_tasks {
            for (measure, query, value) in store.all_query_metrics(key)? {
                cell_index.push(index);
                queries.push(query);
                measures.push(measure);
                values.push(value);
            }
        }
    }
    let mut columns: Vec<Column> = vec![
        Column::new(
            "experiment".into(),
            vec![experiment.name.as_str(); cell_index.len()],
        ),
        Column::new(
            "cell".into(),
            cell_index
                .iter()
                .map(|&i| cells[i].position)
                .collect::<Vec<i64>>(),
        ),
    ];
    for name in &params {
        let column: Vec<Option<&serde_json::Value>> = cell_index
            .iter()
            .map(|&i| cells[i].params.get(name))
            .collect();
        columns.push(json_column(name, &column));
    }
    columns.push(Column::new("query_id".into(), queries));
    columns.push(Column::new("measure".into(), measures));
    columns.push(Column::new("value".into(), values));
    Ok(DataFrame::new_infer_height(columns)?)
}

/// A column from JSON values: integers, floats and booleans keep their type; anything else
/// (strings, lists) becomes text.
fn json_column(name: &str, values: &[Option<&serde_json::Value>]) -> Column {
    let present = || values.iter().flatten();
    if present().all(|v| v.is_i64()) {
        let data: Vec<Option<i64>> = values.iter().map(|v| v.and_then(|v| v.as_i64())).collect();
        Column::new(name.into(), data)
    } else if present().all(|v| v.is_number()) {
        let data: Vec<Option<f64>> = values.iter().map(|v| v.and_then(|v| v.as_f64())).collect();
        Column::new(name.into(), data)
    } else if present().all(|v| v.is_boolean()) {
        let data: Vec<Option<bool>> = values.iter().map(|v| v.and_then(|v| v.as_bool())).collect();
        Column::new(name.into(), data)
    } else {
        let data: Vec<Option<String>> = values
            .iter()
            .map(|v| {
                v.map(|v| match v {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
            })
            .collect();
        Column::new(name.into(), data)
    }
}

/// The worst state among a cell's tasks.
pub fn cell_state(cell: &CellRow) -> &'static str {
    use crate::store::TaskStatus::*;
    [Failed, Interrupted, Running, Pending, Succeeded]
        .into_iter()
        .find(|status| cell.tasks.iter().any(|(_, _, s)| s == status))
        .unwrap_or(Pending)
        .name()
}

/// Names of the parameter columns (everything but the leading columns and `measures`) whose
/// values are not all equal.
pub fn varying_parameters(
    frame: &DataFrame,
    measures: &[String],
) -> Result<Vec<String>, ReportError> {
    let mut varying = Vec::new();
    for column in frame.columns() {
        let name = column.name().as_str();
        if LEADING.contains(&name) || measures.iter().any(|m| m == name) {
            continue;
        }
        if column.as_materialized_series().n_unique()? > 1 {
            varying.push(name.to_string());
        }
    }
    Ok(varying)
}

/// Keeps the rows where `parameter` displays as `value` (`layer=3`, `pooling=cls`).
pub fn filter_equal(
    frame: &DataFrame,
    parameter: &str,
    value: &str,
) -> Result<DataFrame, ReportError> {
    let column = frame.column(parameter).map_err(|_| {
        let names: Vec<&str> = frame
            .get_column_names()
            .iter()
            .map(|n| n.as_str())
            .collect();
        ReportError::Invalid(format!(
            "no parameter `{parameter}` (columns: {})",
            names.join(", ")
        ))
    })?;
    let series = column.as_materialized_series();
    let mask: BooleanChunked = (0..series.len())
        .map(|row| Some(display_any(&series.get(row).unwrap_or(AnyValue::Null)) == value))
        .collect();
    Ok(frame.filter(&mask)?)
}

/// One row per group of rows that agree on every parameter but `over` (e.g. `dataset`): the
/// paper's and BEIR's "mean over datasets". Measures are averaged where every row of the group
/// has them (null otherwise: a mean over some of the datasets would not compare); the column
/// `<over>_count` says how many rows each mean is over; `cell` is dropped and `state` is
/// `succeeded` only when every row's is. Groups keep the order of their first rows.
pub fn mean_over(
    frame: &DataFrame,
    measures: &[String],
    over: &str,
) -> Result<DataFrame, ReportError> {
    if frame.column(over).is_err() {
        return Err(ReportError::Invalid(format!(
            "no parameter `{over}` to average over"
        )));
    }
    let keys: Vec<&Series> = frame
        .columns()
        .iter()
        .filter(|column| {
            let name = column.name().as_str();
            name != over && name != "cell" && name != "state" && !measures.iter().any(|m| m == name)
        })
        .map(|column| column.as_materialized_series())
        .collect();
    let mut groups: Vec<(Vec<String>, Vec<usize>)> = Vec::new();
    for row in 0..frame.height() {
        let key: Vec<String> = keys
            .iter()
            .map(|series| display_any(&series.get(row).unwrap_or(AnyValue::Null)))
            .collect();
        match groups.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, rows)) => rows.push(row),
            None => groups.push((key, vec![row])),
        }
    }
    let firsts: Vec<IdxSize> = groups.iter().map(|(_, rows)| rows[0] as IdxSize).collect();
    let firsts = IdxCa::from_vec("rows".into(), firsts);
    let mut out = frame.take(&firsts)?;
    out = out.drop(over)?;
    if out.column("cell").is_ok() {
        out = out.drop("cell")?;
    }
    if let Ok(state) = frame.column("state") {
        let state = state.as_materialized_series();
        let states: Vec<&str> = groups
            .iter()
            .map(|(_, rows)| {
                let all_succeeded = rows.iter().all(|&row| {
                    display_any(&state.get(row).unwrap_or(AnyValue::Null)) == "succeeded"
                });
                if all_succeeded {
                    "succeeded"
                } else {
                    "incomplete"
                }
            })
            .collect();
        out.with_column(Column::new("state".into(), states))?;
    }
    for measure in measures {
        let Ok(column) = frame.column(measure) else {
            continue;
        };
        let values = column.as_materialized_series().cast(&DataType::Float64)?;
        let values = values.f64()?;
        let means: Vec<Option<f64>> = groups
            .iter()
            .map(|(_, rows)| {
                let present: Option<Vec<f64>> = rows.iter().map(|&row| values.get(row)).collect();
                present.map(|present| present.iter().sum::<f64>() / present.len() as f64)
            })
            .collect();
        out.with_column(Column::new(measure.as_str().into(), means))?;
    }
    let counts: Vec<i64> = groups.iter().map(|(_, rows)| rows.len() as i64).collect();
    out.with_column(Column::new(format!("{over}_count").into(), counts))?;
    Ok(out)
}

/// Sorts by `measure`, best (largest) first; rows without a value last.
pub fn sort_by_measure(frame: &DataFrame, measure: &str) -> Result<DataFrame, ReportError> {
    if frame.column(measure).is_err() {
        return Err(ReportError::Invalid(format!(
            "no measure `{measure}` in these cells"
        )));
    }
    Ok(frame.sort(
        [measure],
        SortMultipleOptions::new()
            .with_order_descending(true)
            .with_nulls_last(true),
    )?)
}

/// How a trec_eval measure is called in the paper's tables.
pub fn measure_label(measure: &str) -> String {
    let (prefix, base) = if let Some(base) = measure.strip_prefix(crate::stages::RERANKED_PREFIX) {
        ("re-ranked ", base)
    } else if let Some(base) = measure.strip_prefix(crate::stages::FUSED_PREFIX) {
        ("fused ", base)
    } else {
        ("", measure)
    };
    let label = if let Some(k) = base.strip_prefix("ndcg_cut_") {
        format!("nDCG@{k}")
    } else if let Some(k) = base.strip_prefix("mrr_cut_") {
        format!("MRR@{k}")
    } else if let Some(k) = base.strip_prefix("success_") {
        format!("Hits@{k}")
    } else if let Some(k) = base.strip_prefix("recall_") {
        format!("Recall@{k}")
    } else if let Some(k) = base.strip_prefix("P_") {
        format!("P@{k}")
    } else {
        base.to_string()
    };
    format!("{prefix}{label}")
}

/// A p-value as tables print it: 4 decimals, `<0.0001` below, `-` when there is none.
pub fn p_value(p: f64) -> String {
    if p.is_nan() {
        "-".to_string()
    } else if p < 1e-4 {
        "<0.0001".to_string()
    } else {
        format!("{p:.4}")
    }
}

/// How a table cell is printed: floats with 4 decimals (small ones, such as learning
/// rates, in scientific notation so they do not round to 0.0001), nulls as `-`.
pub fn display_any(value: &AnyValue<'_>) -> String {
    match value {
        AnyValue::Null => "-".to_string(),
        AnyValue::Float64(v) => display_float(*v),
        AnyValue::Float32(v) => display_float(f64::from(*v)),
        AnyValue::String(text) => text.to_string(),
        AnyValue::StringOwned(text) => text.to_string(),
        other => other.to_string(),
    }
}

fn display_float(value: f64) -> String {
    if value != 0.0 && value.abs() < 1e-3 {
        format!("{value:.1e}")
    } else {
        format!("{value:.4}")
    }
}

/// The frame as aligned text columns (only `columns`, in that order).
pub fn format_table(frame: &DataFrame, columns: &[String]) -> Result<String, ReportError> {
    let mut cells: Vec<Vec<String>> = vec![columns.to_vec()];
    let series: Vec<&Series> = columns
        .iter()
        .map(|name| frame.column(name).map(|c| c.as_materialized_series()))
        .collect::<PolarsResult<_>>()?;
    for row in 0..frame.height() {
        cells.push(
            series
                .iter()
                .map(|s| display_any(&s.get(row).unwrap_or(AnyValue::Null)))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// Writes `frame` to `path` in `format`, atomically.
pub fn write_frame(
    frame: &mut DataFrame,
    format: ExportFormat,
    path: &Path,
) -> Result<(), ReportError> {
    let mut result: PolarsResult<()> = Ok(());
    crate::util::write_atomic_with(path, |file| {
        result = match format {
            ExportFormat::Csv => CsvWriter::new(&mut *file).finish(frame),
            ExportFormat::Parquet => ParquetWriter::new(&mut *file).finish(frame).map(|_| ()),
            ExportFormat::Json => JsonWriter::new(&mut *file)
                .with_json_format(JsonFormat::Json)
                .finish(frame),
        };
        Ok(())
    })
    .map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_floats_keep_their_digits() {
        assert_eq!(display_any(&AnyValue::Float64(0.64512)), "0.6451");
        assert_eq!(display_any(&AnyValue::Float64(5e-5)), "5.0e-5");
        assert_eq!(display_any(&AnyValue::Float64(0.0)), "0.0000");
        assert_eq!(display_any(&AnyValue::Null), "-");
    }

    fn frame() -> DataFrame {
        DataFrame::new_infer_height(vec![
            Column::new("experiment".into(), ["e", "e", "e"]),
            Column::new("cell".into(), [0i64, 1, 2]),
            Column::new("state".into(), ["succeeded"; 3]),
            Column::new("layer".into(), [0i64, 1, 2]),
            Column::new("pooling".into(), ["mean", "mean", "cls"]),
            Column::new("model".into(), ["m", "m", "m"]),
            Column::new("ndcg_cut_10".into(), [Some(0.5), None, Some(0.7)]),
        ])
        .unwrap()
    }

    #[test]
    fn varying_parameters_skip_constants_and_measures() {
        let varying = varying_parameters(&frame(), &["ndcg_cut_10".to_string()]).unwrap();
        assert_eq!(varying, vec!["layer", "pooling"]);
    }

    #[test]
    fn filter_and_sort() {
        let filtered = filter_equal(&frame(), "pooling", "mean").unwrap();
        assert_eq!(filtered.height(), 2);
        let sorted = sort_by_measure(&frame(), "ndcg_cut_10").unwrap();
        let layers: Vec<String> = (0..sorted.height())
            .map(|row| display_any(&sorted.column("layer").unwrap().get(row).unwrap()))
            .collect();
        assert_eq!(layers, vec!["2", "0", "1"]);
        assert!(filter_equal(&frame(), "nope", "1").is_err());
    }

    #[test]
    fn means_over_a_parameter_need_every_row_of_the_group() {
        let frame = DataFrame::new_infer_height(vec![
            Column::new("experiment".into(), ["e"; 4]),
            Column::new("cell".into(), [0i64, 1, 2, 3]),
            Column::new("state".into(), ["succeeded"; 4]),
            Column::new("dataset".into(), ["a", "b", "a", "b"]),
            Column::new("layer".into(), [0i64, 0, 1, 1]),
            Column::new(
                "ndcg_cut_10".into(),
                [Some(0.2), Some(0.4), Some(0.5), None],
            ),
        ])
        .unwrap();
        let measures = ["ndcg_cut_10".to_string()];
        let means = mean_over(&frame, &measures, "dataset").unwrap();
        assert_eq!(means.height(), 2);
        assert!(means.column("dataset").is_err() && means.column("cell").is_err());
        let ndcg = means.column("ndcg_cut_10").unwrap().f64().unwrap().clone();
        assert!((ndcg.get(0).unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(ndcg.get(1), None, "layer 1 lacks dataset b: no mean");
        let counts = means
            .column("dataset_count")
            .unwrap()
            .i64()
            .unwrap()
            .clone();
        assert_eq!(counts.get(0), Some(2));
        assert!(mean_over(&frame, &measures, "nope").is_err());
    }

    #[test]
    fn exports_round_trip_through_csv() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cells.csv");
        write_frame(&mut frame(), ExportFormat::Csv, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("experiment,cell,state,layer,pooling,model,ndcg_cut_10\n"),
            "{text}"
        );
        assert!(text.contains("e,2,succeeded,2,cls,m,0.7"), "{text}");
        for format in [ExportFormat::Parquet, ExportFormat::Json] {
            let path = dir.path().join("cells.out");
            write_frame(&mut frame(), format, &path).unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() > 0);
        }
    }
}
