//! `repro report`: one experiment's study rendered from templates (minijinja) as a single
//! self-contained HTML page (charts inline as SVG, no scripts or downloads) or as Markdown
//! with the same tables.

use std::path::{Path, PathBuf};

use minijinja::Environment;
use serde::Serialize;

use super::charts::{Chart, Series, Stroke};
use super::means::{
    mean_curves, mean_distill_rows, tally_comparisons, ComparisonTally, MeanDistillRow, Tally,
};
use super::study::{
    Comparison, DistillRow, LayerCurve, LossCurve, SpeedCurve, Study, ALPHA, HEADLINE_MEASURES,
    PERMUTATIONS,
};
use super::ReportError;
use crate::store::{ExperimentRow, Store};

const HTML_TEMPLATE: &str = include_str!("templates/report.html");
const MARKDOWN_TEMPLATE: &str = include_str!("templates/report.md");

/// Formats of `repro report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    Md,
}

/// A table as shown: header and display strings.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
struct ChartBlock {
    title: String,
    svg: String,
}

#[derive(Debug, Clone, Serialize)]
struct MetricSection {
    metric: String,
    label: String,
    charts: Vec<ChartBlock>,
}

/// What the templates receive.
#[derive(Debug, Serialize)]
struct PageContext {
    experiment: ExperimentRow,
    seeds: String,
    runs: Table,
    stage_times: Table,
    layer_sections: Vec<MetricSection>,
    best_layers: Table,
    comparisons: Table,
    /// The comparisons made on several datasets, counted over them.
    comparison_tallies: Table,
    alpha: f64,
    permutations: usize,
    parameters: Table,
    constant: Vec<(String, String)>,
    distillation: Option<Table>,
    speed_charts: Vec<ChartBlock>,
    speed: Option<Table>,
    loss_charts: Vec<ChartBlock>,
    missing_metrics: Vec<String>,
}

/// Where the report of `experiment` goes under `reports`: `<reports>/<experiment>/`. A name
/// that could leave `reports` (`..`, made before names were checked) is refused.
pub fn report_dir(reports: &Path, experiment: &str) -> Result<PathBuf, ReportError> {
    if !crate::util::is_plain_name(experiment) {
        return Err(ReportError::Invalid(format!(
            "experiment name `{experiment}` cannot name a report directory"
        )));
    }
    Ok(reports.join(experiment))
}

/// Writes `<out_dir>/index.html` (or `report.md`) for `experiment`; returns its path.
/// `metrics` are the measures charted layer by layer (nDCG@10 first, always).
pub fn write_report(
    store: &Store,
    experiment: &ExperimentRow,
    out_dir: &Path,
    metrics: &[String],
    format: ReportFormat,
) -> Result<PathBuf, ReportError> {
    let study = Study::load(store, experiment)?;
    let html = format == ReportFormat::Html;
    let context = page_context(store, &study, metrics, html)?;
    let mut environment = Environment::new();
    environment.add_filter("md", markdown_text);
    environment.add_filter("code", markdown_code);
    let (name, source, file) = match format {
        ReportFormat::Html => ("report.html", HTML_TEMPLATE, "index.html"),
        ReportFormat::Md => ("report.md", MARKDOWN_TEMPLATE, "report.md"),
    };
    environment
        .add_template(name, source)
        .map_err(template_error)?;
    let rendered = environment
        .get_template(name)
        .and_then(|template| template.render(minijinja::value::Serde(&context)))
        .map_err(template_error)?;
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let path = out_dir.join(file);
    crate::util::write_atomic(&path, rendered.as_bytes()).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// User text as Markdown shows it literally: every character Markdown (or the HTML it may
/// carry) gives a meaning escaped, line breaks folded, so that a name or description can
/// neither format the page, break a table, nor inject markup — as the HTML page escapes it.
fn markdown_text(text: String) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            other => out.push(other),
        }
    }
    out
}

/// User text as a Markdown code span: fenced with more backticks than it holds.
fn markdown_code(text: String) -> String {
    let text = text.replace(['\n', '\r'], " ");
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    format!("{fence} {text} {fence}")
}

fn template_error(error: minijinja::Error) -> ReportError {
    ReportError::Invalid(format!("rendering the report template: {error:#}"))
}

fn page_context(
    store: &Store,
    study: &Study,
    metrics: &[String],
    draw: bool,
) -> Result<PageContext, ReportError> {
    let charted = charted_metrics(metrics);
    let (drawable, missing_metrics): (Vec<String>, Vec<String>) = charted
        .into_iter()
        .partition(|metric| study.table.measures.contains(metric));
    let layer_sections = drawable
        .iter()
        .map(|metric| layer_section(study, metric, draw))
        .collect::<Result<Vec<_>, _>>()?;
    let headline = HEADLINE_MEASURES[0];
    let curves = study.layer_curves(headline);
    let mut comparisons = study.layer_comparisons(store, &curves, headline)?;
    comparisons.extend(study.student_comparisons(store)?);
    let distillation = study.distillation(store)?;
    let mut distill_comparisons: Vec<Comparison> = distillation
        .iter()
        .filter_map(labelled_comparison)
        .collect();
    distill_comparisons.extend(comparisons.iter().cloned());
    let tallies = tally_comparisons(&distill_comparisons);
    let mean_rows = mean_distill_rows(&distillation);
    let mut best_curves = curves.clone();
    best_curves.extend(mean_curves(&curves));
    let speed = study.speed_curves();
    let speed_charts = match speed.is_empty() {
        true => Vec::new(),
        false => drawn([speedup_chart(&speed), throughput_chart(&speed)], draw)?,
    };
    let loss_charts = drawn(loss_charts_of(&study.loss_curves()), draw)?;
    let (headers, rows) = study.parameter_table()?;
    Ok(PageContext {
        experiment: study.experiment.clone(),
        seeds: study
            .seeds()
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        runs: runs_table(study),
        stage_times: stage_times_table(study),
        layer_sections,
        best_layers: best_layers_table(&best_curves),
        comparisons: comparisons_table(&comparisons),
        comparison_tallies: tallies_table(&tallies),
        alpha: ALPHA,
        permutations: PERMUTATIONS,
        parameters: Table { headers, rows },
        constant: study.constant.clone(),
        distillation: (!distillation.is_empty())
            .then(|| distillation_table(&distillation, &mean_rows)),
        speed: (!speed.is_empty()).then(|| speed_table(&speed)),
        speed_charts,
        loss_charts,
        missing_metrics,
    })
}

/// The headline measure first, then the requested ones, each once.
fn charted_metrics(metrics: &[String]) -> Vec<String> {
    let mut charted: Vec<String> = vec![HEADLINE_MEASURES[0].to_string()];
    for metric in metrics {
        if !charted.contains(metric) {
            charted.push(metric.clone());
        }
    }
    charted
}

/// One measure's layer charts: one per dataset, then one per mean over datasets.
fn layer_section(study: &Study, metric: &str, draw: bool) -> Result<MetricSection, ReportError> {
    let mut curves = study.layer_curves(metric);
    let means = mean_curves(&curves);
    let mut datasets = study.datasets();
    for mean in &means {
        if !datasets.contains(&mean.dataset) {
            datasets.push(mean.dataset.clone());
        }
    }
    curves.extend(means);
    let charts = datasets
        .iter()
        .map(|dataset| layer_chart(dataset, &curves, metric))
        .filter(|chart| !chart.series.is_empty())
        .map(|chart| {
            Ok(ChartBlock {
                svg: if draw { chart.to_svg()? } else { String::new() },
                title: chart.title,
            })
        })
        .collect::<Result<Vec<_>, ReportError>>()?;
    Ok(MetricSection {
        metric: metric.to_string(),
        label: measure_label(metric),
        charts,
    })
}

/// `charts` drawn as SVG, or none when the page is not drawn.
fn drawn(
    charts: impl IntoIterator<Item = Chart>,
    draw: bool,
) -> Result<Vec<ChartBlock>, ReportError> {
    if !draw {
        return Ok(Vec::new());
    }
    charts
        .into_iter()
        .map(|chart| {
            Ok(ChartBlock {
                svg: chart.to_svg()?,
                title: chart.title,
            })
        })
        .collect()
}

fn stage_times_table(study: &Study) -> Table {
    Table {
        headers: vec!["stage".into(), "tasks".into(), "seconds".into()],
        rows: study
            .stage_seconds
            .iter()
            .map(|(stage, count, seconds)| {
                vec![stage.clone(), count.to_string(), format!("{seconds:.1}")]
            })
            .collect(),
    }
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

/// The layer-wise chart of one dataset: one line per curve; cross encoders dashed.
pub fn layer_chart(dataset: &str, curves: &[LayerCurve], metric: &str) -> Chart {
    let series = curves
        .iter()
        .filter(|curve| curve.dataset == dataset)
        .enumerate()
        .map(|(index, curve)| Series {
            label: curve.label(),
            points: curve
                .points
                .iter()
                .map(|point| (point.layer as f64, point.value))
                .collect(),
            stroke: if curve.kind == "CE" {
                Stroke::Dashed
            } else {
                Stroke::Solid
            },
            color: index,
        })
        .collect();
    Chart {
        title: format!("{} by layer: {dataset}", measure_label(metric)),
        x_label: "layer (0 = embeddings)".to_string(),
        y_label: measure_label(metric),
        series,
        integer_x: true,
    }
}

/// Speedup against the full depth, measured (solid) and ideal (dotted), per model/dataset.
pub fn speedup_chart(curves: &[SpeedCurve]) -> Chart {
    let mut series = Vec::new();
    for (index, curve) in curves.iter().enumerate() {
        let measured = |point: &super::study::SpeedPoint| point.depth > 0;
        series.push(Series {
            label: format!("{} × {}: measured", curve.model, curve.dataset),
            points: curve
                .depths
                .iter()
                .filter(|p| measured(p))
                .map(|p| (p.depth as f64, p.speedup))
                .collect(),
            stroke: Stroke::Solid,
            color: index,
        });
        series.push(Series {
            label: format!("{} × {}: ideal with fixed cost", curve.model, curve.dataset),
            points: curve
                .depths
                .iter()
                .filter_map(|p| Some((p.depth as f64, p.ideal_with_fixed_cost?)))
                .filter(|p| p.0 > 0.0)
                .collect(),
            stroke: Stroke::Dashed,
            color: index,
        });
    }
    if let Some(curve) = curves.first() {
        series.push(Series {
            label: "ideal L/k".to_string(),
            points: curve
                .depths
                .iter()
                .filter_map(|p| Some((p.depth as f64, p.ideal?)))
                .collect(),
            stroke: Stroke::Dotted,
            color: 6,
        });
    }
    Chart {
        title: "Speedup of a truncated encoder".to_string(),
        x_label: "encoder layers kept (k)".to_string(),
        y_label: "speedup vs full depth".to_string(),
        series,
        integer_x: true,
    }
}

/// Documents per second by depth.
fn throughput_chart(curves: &[SpeedCurve]) -> Chart {
    Chart {
        title: "Encoder throughput".to_string(),
        x_label: "encoder layers kept (k)".to_string(),
        y_label: "documents/s".to_string(),
        series: curves
            .iter()
            .enumerate()
            .map(|(index, curve)| Series {
                label: format!("{} × {}", curve.model, curve.dataset),
                points: curve
                    .depths
                    .iter()
                    .map(|p| (p.depth as f64, p.docs_per_second))
                    .collect(),
                stroke: Stroke::Solid,
                color: index,
            })
            .collect(),
        integer_x: true,
    }
}

/// One chart per kind of training loss (their scales differ).
fn loss_charts_of(curves: &[LossCurve]) -> Vec<Chart> {
    let mut groups: Vec<&str> = curves.iter().map(|c| c.group.as_str()).collect();
    groups.dedup();
    groups.sort_unstable();
    groups.dedup();
    groups
        .into_iter()
        .map(|group| Chart {
            title: format!("Training loss: {group}"),
            x_label: "optimisation step".to_string(),
            y_label: "loss".to_string(),
            series: curves
                .iter()
                .filter(|c| c.group == group)
                .enumerate()
                .map(|(index, curve)| Series {
                    label: curve.label.clone(),
                    points: curve.points.clone(),
                    stroke: Stroke::Solid,
                    color: index,
                })
                .collect(),
            integer_x: true,
        })
        .collect()
}

fn runs_table(study: &Study) -> Table {
    Table {
        headers: [
            "run",
            "status",
            "started",
            "ended",
            "git commit",
            "repro",
            "rustc",
            "CPU",
            "threads",
            "host",
            "executor",
            "tasks run",
            "cached",
            "failed",
        ]
        .map(String::from)
        .to_vec(),
        rows: study
            .runs
            .iter()
            .take(10)
            .map(|run| {
                let commit = match (&run.git_commit, run.git_dirty) {
                    (Some(commit), Some(true)) => format!("{} (dirty)", short(commit)),
                    (Some(commit), _) => short(commit).to_string(),
                    (None, _) => "-".to_string(),
                };
                let count = |value: Option<i64>| value.map_or("-".to_string(), |v| v.to_string());
                vec![
                    run.id.to_string(),
                    run.status.clone(),
                    run.started_at.clone(),
                    run.ended_at.clone().unwrap_or_else(|| "-".to_string()),
                    commit,
                    run.repro_version.clone(),
                    run.rustc_version.clone(),
                    run.cpu_model.clone(),
                    run.threads.to_string(),
                    run.hostname.clone(),
                    format!("{} × {}", run.executor, run.jobs),
                    count(run.tasks_run),
                    count(run.tasks_cached),
                    count(run.tasks_failed),
                ]
            })
            .collect(),
    }
}

fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

fn best_layers_table(curves: &[LayerCurve]) -> Table {
    Table {
        headers: [
            "dataset",
            "configuration",
            "best layer",
            "nDCG@10",
            "last layer",
            "nDCG@10 at last",
        ]
        .map(String::from)
        .to_vec(),
        rows: curves
            .iter()
            .filter_map(|curve| {
                let (best, last) = (curve.best()?, curve.last()?);
                Some(vec![
                    curve.dataset.clone(),
                    curve.label(),
                    best.layer.to_string(),
                    format!("{:.4}", best.value),
                    last.layer.to_string(),
                    format!("{:.4}", last.value),
                ])
            })
            .collect(),
    }
}

/// `0.1234†` when the difference is significant at [`ALPHA`] by both tests.
fn marked(value: f64, comparison: Option<&Comparison>) -> String {
    let mark = if comparison.is_some_and(|c| c.significant) {
        "†"
    } else {
        ""
    };
    format!("{value:.4}{mark}")
}

fn p_value(p: f64) -> String {
    if p < 1e-4 {
        "<0.0001".to_string()
    } else {
        format!("{p:.4}")
    }
}

fn comparisons_table(comparisons: &[Comparison]) -> Table {
    Table {
        headers: [
            "dataset",
            "comparison",
            "A",
            "B",
            "measure",
            "queries",
            "mean A",
            "mean B",
            "Δ",
            "p (t-test)",
            "p (randomisation)",
            "significant",
        ]
        .map(String::from)
        .to_vec(),
        rows: comparisons
            .iter()
            .map(|c| {
                vec![
                    c.dataset.clone(),
                    c.what.clone(),
                    c.a.clone(),
                    c.b.clone(),
                    measure_label(&c.measure),
                    c.result.queries.to_string(),
                    format!("{:.4}", c.result.mean_a),
                    format!("{:.4}", c.result.mean_b),
                    format!("{:+.4}", c.result.mean_difference),
                    p_value(c.result.t_test_p),
                    p_value(c.result.randomisation_p),
                    if c.significant { "yes †" } else { "no" }.to_string(),
                ]
            })
            .collect(),
    }
}

/// A distillation row's comparison with the reference, its A named by the row's settings
/// (the comparison itself names the model only), so that tallies over datasets keep the
/// students apart.
fn labelled_comparison(row: &DistillRow) -> Option<Comparison> {
    let mut comparison = row.comparison.clone()?;
    let reranked = if row.reranked_by.is_empty() {
        String::new()
    } else {
        format!(", re-ranked by {}", row.reranked_by)
    };
    comparison.a = format!(
        "{} DE-{} {} {}{reranked}",
        row.model, row.layers, row.init, row.loss
    );
    Some(comparison)
}

/// Paired comparisons counted over the datasets they were made on.
fn tallies_table(tallies: &[ComparisonTally]) -> Table {
    Table {
        headers: [
            "comparison",
            "A",
            "B",
            "measure",
            "datasets",
            "A better †",
            "B better †",
            "mean Δ",
        ]
        .map(String::from)
        .to_vec(),
        rows: tallies
            .iter()
            .map(|t| {
                vec![
                    t.what.clone(),
                    t.a.clone(),
                    t.b.clone(),
                    measure_label(&t.measure),
                    t.tally.datasets.to_string(),
                    t.tally.a_better.to_string(),
                    t.tally.b_better.to_string(),
                    format!("{:+.4}", t.tally.mean_difference),
                ]
            })
            .collect(),
    }
}

/// The distillation table: one row per student (and the reference DE), per dataset, then
/// each one's mean over datasets.
pub fn distillation_table(rows: &[DistillRow], means: &[MeanDistillRow]) -> Table {
    let mut headers: Vec<String> = [
        "dataset",
        "model",
        "role",
        "layers",
        "init",
        "loss",
        "re-ranked by",
    ]
    .map(String::from)
    .to_vec();
    headers.extend(HEADLINE_MEASURES.iter().map(|m| measure_label(m)));
    headers.extend(
        [
            "docs/s",
            "speedup",
            "Δ nDCG@10 vs reference",
            "p (randomisation)",
        ]
        .map(String::from),
    );
    let mut table_rows: Vec<Vec<String>> =
        rows.iter().map(|row| distill_cells(row, None)).collect();
    table_rows.extend(
        means
            .iter()
            .map(|mean| distill_cells(&mean.row, mean.tally.as_ref())),
    );
    Table {
        headers,
        rows: table_rows,
    }
}

/// One distillation row as shown; a mean row shows its tally where a row shows its p-value.
fn distill_cells(row: &DistillRow, tally: Option<&Tally>) -> Vec<String> {
    let mut cells = vec![
        row.dataset.clone(),
        row.model.clone(),
        row.role.to_string(),
        row.layers.to_string(),
        row.init.clone(),
        row.loss.clone(),
        if row.reranked_by.is_empty() {
            "-".to_string()
        } else {
            row.reranked_by.clone()
        },
    ];
    for (index, value) in row.values.iter().enumerate() {
        cells.push(match value {
            Some(v) if index == 0 => marked(*v, row.comparison.as_ref()),
            Some(v) => format!("{v:.4}"),
            None => "-".to_string(),
        });
    }
    cells.push(
        row.docs_per_second
            .map_or("-".into(), |v| format!("{v:.1}")),
    );
    cells.push(row.speedup.map_or("-".into(), |v| format!("{v:.2}×")));
    let difference = row
        .comparison
        .as_ref()
        .map(|c| c.result.mean_difference)
        .or(tally.map(|t| t.mean_difference));
    cells.push(difference.map_or("-".into(), |d| format!("{d:+.4}")));
    cells.push(match (&row.comparison, tally) {
        (Some(c), _) => p_value(c.result.randomisation_p),
        (None, Some(tally)) => tally.describe(),
        (None, None) => "-".into(),
    });
    cells
}

fn speed_table(curves: &[SpeedCurve]) -> Table {
    Table {
        headers: [
            "model",
            "dataset",
            "input",
            "max_len",
            "documents",
            "depth",
            "docs/s",
            "min–max",
            "tokens/s",
            "speedup",
            "ideal L/k",
            "ideal with fixed cost",
        ]
        .map(String::from)
        .to_vec(),
        rows: curves
            .iter()
            .flat_map(|curve| {
                curve.depths.iter().map(move |p| {
                    let ratio = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}×"));
                    vec![
                        curve.model.clone(),
                        curve.dataset.clone(),
                        curve.input.clone(),
                        curve.max_len.to_string(),
                        curve.documents.to_string(),
                        p.depth.to_string(),
                        format!("{:.2}", p.docs_per_second),
                        format!("{:.2}–{:.2}", p.min, p.max),
                        format!("{:.0}", p.tokens_per_second),
                        format!("{:.2}×", p.speedup),
                        ratio(p.ideal),
                        ratio(p.ideal_with_fixed_cost),
                    ]
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_are_labelled_as_in_the_paper() {
        assert_eq!(measure_label("ndcg_cut_10"), "nDCG@10");
        assert_eq!(measure_label("success_10"), "Hits@10");
        assert_eq!(measure_label("fused_ndcg_cut_10"), "fused nDCG@10");
        assert_eq!(measure_label("reranked_mrr_cut_10"), "re-ranked MRR@10");
        assert_eq!(measure_label("map"), "map");
    }

    #[test]
    fn a_report_directory_stays_inside_the_reports_directory() {
        let reports = Path::new("reports");
        assert_eq!(report_dir(reports, "sweep").unwrap(), reports.join("sweep"));
        for name in ["..", ".", "a/b", ""] {
            assert!(report_dir(reports, name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn students_that_differ_only_in_init_are_told_apart_in_tallies() {
        let comparison = Comparison {
            dataset: "d".into(),
            what: "vs the teacher DE".into(),
            a: "student".into(),
            b: "minilm".into(),
            measure: "ndcg_cut_10".into(),
            result: crate::eval::significance::PairedComparison {
                queries: 1,
                queries_dropped: 0,
                mean_a: 0.1,
                mean_b: 0.2,
                mean_difference: -0.1,
                t_statistic: 0.0,
                t_test_p: 1.0,
                randomisation_p: 1.0,
                permutations: 1,
            },
            significant: false,
        };
        let row = |init: &str| DistillRow {
            dataset: "d".into(),
            model: "student".into(),
            role: "student",
            layers: 2,
            init: init.into(),
            loss: "mse".into(),
            reranked_by: String::new(),
            values: vec![],
            docs_per_second: None,
            speedup: None,
            comparison: Some(comparison.clone()),
        };
        let a = labelled_comparison(&row("ce:1")).unwrap().a;
        let b = labelled_comparison(&row("random")).unwrap().a;
        assert_eq!(a, "student DE-2 ce:1 mse");
        assert_ne!(a, b);
    }

    #[test]
    fn user_text_cannot_format_a_markdown_report() {
        assert_eq!(
            markdown_text("a|b <script> *x* [l](u) _y_\nz".into()),
            "a\\|b &lt;script&gt; \\*x\\* \\[l\\](u) \\_y\\_ z"
        );
        assert_eq!(markdown_code("e.toml".into()), "` e.toml `");
        assert_eq!(markdown_code("a`b".into()), "`` a`b ``");
    }

    #[test]
    fn templates_parse() {
        let mut environment = Environment::new();
        environment
            .add_template("report.html", HTML_TEMPLATE)
            .unwrap();
        environment
            .add_template("report.md", MARKDOWN_TEMPLATE)
            .unwrap();
    }
}
