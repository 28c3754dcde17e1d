//! `repro report`: one experiment's study rendered from templates (minijinja) as a single
//! self-contained HTML page (charts inline as SVG, no scripts or downloads), as Markdown with
//! the same tables, or as the JSON document of its findings ([`super::document`]).

use std::path::{Path, PathBuf};

use minijinja::Environment;
use serde::Serialize;

use super::charts::{Chart, Series, Stroke, PALETTE_SIZE};
use super::document::Judged;
use super::findings::{finding_of, Family, Finding, Verdict};
use super::means::{ComparisonTally, MeanDistillRow, Tally};
use super::study::{
    DistillRow, LayerCurve, LossCurve, SpeedCurve, Study, HEADLINE_MEASURES, PERMUTATIONS,
};
use super::{measure_label, p_value, ReportError};
use crate::store::{ExperimentRow, Store};

const HTML_TEMPLATE: &str = include_str!("templates/report.html");
const MARKDOWN_TEMPLATE: &str = include_str!("templates/report.md");

/// Formats of `repro report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    Md,
    /// Every comparison the report makes, machine-readable (`report.json`).
    Json,
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
    /// Where layers are chosen (a dataset), if anywhere.
    selection: Option<String>,
    comparisons: Table,
    families: Table,
    /// The comparisons made on every zero-shot dataset, counted over them.
    comparison_tallies: Table,
    alpha: f64,
    margin: f64,
    correction: String,
    permutations: usize,
    /// `model: dataset, dataset` for each trained model; and the zero-shot datasets.
    in_domain: Vec<String>,
    zero_shot: Vec<String>,
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
    let judged = Judged::of(store, &study)?;
    if format == ReportFormat::Json {
        return super::document::write_document(&study, &judged, out_dir);
    }
    let html = format == ReportFormat::Html;
    let context = page_context(store, &study, &judged, metrics, html)?;
    let mut environment = Environment::new();
    environment.add_filter("md", markdown_text);
    environment.add_filter("code", markdown_code);
    let (name, source, file) = match format {
        ReportFormat::Md => ("report.md", MARKDOWN_TEMPLATE, "report.md"),
        _ => ("report.html", HTML_TEMPLATE, "index.html"),
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
    judged: &Judged,
    metrics: &[String],
    draw: bool,
) -> Result<PageContext, ReportError> {
    let charted = charted_metrics(metrics);
    let (drawable, missing_metrics): (Vec<String>, Vec<String>) = charted
        .into_iter()
        .partition(|metric| study.table.measures.contains(metric));
    let layer_sections = drawable
        .iter()
        .map(|metric| layer_section(store, study, judged, metric, draw))
        .collect::<Result<Vec<_>, _>>()?;
    let speed = study.speed_curves();
    let speed_charts = match speed.is_empty() {
        true => Vec::new(),
        false => drawn([speedup_chart(&speed), throughput_chart(&speed)], draw)?,
    };
    let loss_charts = drawn(loss_charts_of(&study.loss_curves()), draw)?;
    let (headers, rows) = study.parameter_table()?;
    let settings = study.settings();
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
        best_layers: best_layers_table(study, &judged.curves, &judged.mean_curves),
        selection: settings.selection.clone(),
        comparisons: comparisons_table(&judged.findings),
        families: families_table(&judged.families),
        comparison_tallies: tallies_table(&judged.tallies),
        alpha: settings.alpha,
        margin: settings.margin,
        correction: settings.correction.name().to_string(),
        permutations: PERMUTATIONS,
        in_domain: study
            .in_domain()
            .into_iter()
            .map(|(model, datasets)| format!("{model}: {}", datasets.join(", ")))
            .collect(),
        zero_shot: judged.zero_shot.clone(),
        parameters: Table { headers, rows },
        constant: study.constant.clone(),
        distillation: (!judged.distillation.is_empty())
            .then(|| distillation_table(&judged.distillation, &judged.mean_rows, &judged.findings)),
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

/// One measure's layer charts: small multiples, one per dataset and pooling, then the same
/// for the zero-shot mean; each point with its 95% interval over queries.
fn layer_section(
    store: &Store,
    study: &Study,
    judged: &Judged,
    metric: &str,
    draw: bool,
) -> Result<MetricSection, ReportError> {
    let mut curves = study.layer_curves_with_intervals(store, metric)?;
    let means = super::means::mean_curves(&curves, &judged.zero_shot);
    let mut datasets = study.datasets();
    for mean in &means {
        if !datasets.contains(&mean.dataset) {
            datasets.push(mean.dataset.clone());
        }
    }
    curves.extend(means);
    let selection = study.selection();
    let charts = datasets
        .iter()
        .flat_map(|dataset| {
            let role = match Some(dataset) == selection.as_ref() {
                true => " (selection split: layers are chosen here)",
                false => "",
            };
            layer_charts(dataset, &curves, metric)
                .into_iter()
                .map(move |mut chart| {
                    chart.title.push_str(role);
                    chart
                })
        })
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

/// The layer-wise charts of one dataset: one per pooling (and further settings that tell
/// curves apart), each holding at most [`PALETTE_SIZE`] curves in hues of their own; cross
/// encoders dashed. Charts in which no curve has two points are left out: there is no line
/// to read.
pub fn layer_charts(dataset: &str, curves: &[LayerCurve], metric: &str) -> Vec<Chart> {
    let on_dataset: Vec<&LayerCurve> = curves.iter().filter(|c| c.dataset == dataset).collect();
    let mut poolings: Vec<&str> = Vec::new();
    for curve in &on_dataset {
        if !poolings.contains(&curve.pooling.as_str()) {
            poolings.push(&curve.pooling);
        }
    }
    let mut charts = Vec::new();
    for pooling in poolings {
        let group: Vec<&LayerCurve> = on_dataset
            .iter()
            .copied()
            .filter(|c| c.pooling == pooling)
            .collect();
        let parts = group.len().div_ceil(PALETTE_SIZE);
        for (part, chunk) in group.chunks(PALETTE_SIZE).enumerate() {
            let suffix = match parts {
                1 => String::new(),
                _ => format!(" ({}/{parts})", part + 1),
            };
            let chart = Chart {
                title: format!(
                    "{} by layer: {dataset} · {pooling}{suffix}",
                    measure_label(metric)
                ),
                x_label: "layer (0 = embeddings)".to_string(),
                y_label: measure_label(metric),
                series: chunk
                    .iter()
                    .enumerate()
                    .map(|(index, curve)| layer_series(curve, index))
                    .collect(),
                integer_x: true,
            };
            if chart.has_lines() {
                charts.push(chart);
            }
        }
    }
    charts
}

fn layer_series(curve: &LayerCurve, color: usize) -> Series {
    Series {
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
        color,
        band: curve
            .points
            .iter()
            .filter_map(|point| {
                let (low, high) = point.interval?;
                Some((point.layer as f64, low, high))
            })
            .collect(),
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
            band: Vec::new(),
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
            band: Vec::new(),
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
            color: 5,
            band: Vec::new(),
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
                band: Vec::new(),
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
                    band: Vec::new(),
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

/// Each curve's layer chosen on the selection dataset and its value here, beside the best
/// layer of this very split (post hoc: shown, never tested) and the last layer.
fn best_layers_table(study: &Study, curves: &[LayerCurve], means: &[LayerCurve]) -> Table {
    let chosen_on = study
        .selection()
        .map_or("chosen layer (no selection split)".to_string(), |s| {
            format!("layer chosen on {s}")
        });
    let rows = curves
        .iter()
        .chain(means)
        .filter_map(|curve| {
            let (best, last) = (curve.best()?, curve.last()?);
            let chosen = study
                .chosen_layer(curve, curves)
                .and_then(|layer| curve.at(layer));
            Some(vec![
                curve.dataset.clone(),
                curve.label(),
                chosen.map_or("-".into(), |p| p.layer.to_string()),
                chosen.map_or("-".into(), |p| format!("{:.4}", p.value)),
                format!("L{} {:.4}", best.layer, best.value),
                last.layer.to_string(),
                format!("{:.4}", last.value),
            ])
        })
        .collect();
    Table {
        headers: [
            "dataset",
            "configuration",
            chosen_on.as_str(),
            "nDCG@10 at chosen",
            "best here (post hoc, untested)",
            "last layer",
            "nDCG@10 at last",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }
}

/// `0.1234†` when the finding is better or worse after correction, `0.1234 ≈` when
/// equivalent within the margin.
fn marked(value: f64, finding: Option<&Finding>) -> String {
    let mark = match finding.map(|f| f.verdict) {
        Some(verdict) if verdict.significant() => "†",
        Some(Verdict::Equivalent) => " ≈",
        _ => "",
    };
    format!("{value:.4}{mark}")
}

fn comparisons_table(findings: &[Finding]) -> Table {
    let optional =
        |value: Option<f64>, show: fn(f64) -> String| value.map_or("-".to_string(), show);
    Table {
        headers: [
            "family",
            "dataset",
            "A",
            "B",
            "measure",
            "queries",
            "mean A",
            "mean B",
            "Δ",
            "95% CI",
            "wins/ties/losses",
            "p (t-test)",
            "p (randomisation)",
            "p (equivalence)",
            "adjusted p (t · rand. · equiv.)",
            "verdict",
        ]
        .map(String::from)
        .to_vec(),
        rows: findings
            .iter()
            .map(|f| {
                let verdict = match f.verdict.significant() {
                    true => format!("{} †", f.verdict_text()),
                    false => f.verdict_text(),
                };
                vec![
                    f.family.clone(),
                    f.dataset.clone(),
                    f.a.label.clone(),
                    f.b.label.clone(),
                    measure_label(&f.a.measure),
                    f.queries.to_string(),
                    optional(f.a.mean, |v| format!("{v:.4}")),
                    optional(f.b.mean, |v| format!("{v:.4}")),
                    optional(f.delta, |v| format!("{v:+.4}")),
                    f.interval
                        .map_or("-".into(), |i| format!("[{:+.4}, {:+.4}]", i.low, i.high)),
                    f.outcomes.map_or("-".into(), |o| {
                        format!("{}/{}/{}", o.wins, o.ties, o.losses)
                    }),
                    optional(f.p.map(|p| p.t_test), p_value),
                    optional(f.p.map(|p| p.randomisation), p_value),
                    optional(f.p.map(|p| p.equivalence), p_value),
                    f.p_adjusted.map_or("-".into(), |p| {
                        format!(
                            "{} · {} · {}",
                            p_value(p.t_test),
                            p_value(p.randomisation),
                            p_value(p.equivalence)
                        )
                    }),
                    verdict,
                ]
            })
            .collect(),
    }
}

fn families_table(families: &[Family]) -> Table {
    Table {
        headers: [
            "family",
            "factor",
            "tests",
            "confounded (not tested)",
            "correction",
        ]
        .map(String::from)
        .to_vec(),
        rows: families
            .iter()
            .map(|f| {
                vec![
                    f.name.clone(),
                    f.factor.name().to_string(),
                    f.tests.to_string(),
                    f.confounded.to_string(),
                    f.correction.clone(),
                ]
            })
            .collect(),
    }
}

/// Judged comparisons counted over the zero-shot datasets they were made on.
fn tallies_table(tallies: &[ComparisonTally]) -> Table {
    Table {
        headers: [
            "family",
            "A",
            "B",
            "measure",
            "verdicts over datasets",
            "mean Δ",
        ]
        .map(String::from)
        .to_vec(),
        rows: tallies
            .iter()
            .map(|t| {
                vec![
                    t.family.clone(),
                    t.a.clone(),
                    t.b.clone(),
                    measure_label(&t.measure),
                    t.tally.describe(),
                    format!("{:+.4}", t.tally.mean_difference),
                ]
            })
            .collect(),
    }
}

/// The distillation table: one row per student (and the reference DE), per dataset, then
/// each one's mean over the zero-shot datasets.
pub fn distillation_table(
    rows: &[DistillRow],
    means: &[MeanDistillRow],
    findings: &[Finding],
) -> Table {
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
            "Δ nDCG@10 vs reference [95% CI]",
            "adjusted p (t · rand.)",
            "verdict",
        ]
        .map(String::from),
    );
    let mut table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let finding = row
                .comparison
                .as_ref()
                .and_then(|candidate| finding_of(findings, candidate));
            distill_cells(row, finding, None)
        })
        .collect();
    table_rows.extend(
        means
            .iter()
            .map(|mean| distill_cells(&mean.row, None, mean.tally.as_ref())),
    );
    Table {
        headers,
        rows: table_rows,
    }
}

/// One distillation row as shown; a mean row shows its tally where a row shows its verdict.
fn distill_cells(
    row: &DistillRow,
    finding: Option<&Finding>,
    tally: Option<&Tally>,
) -> Vec<String> {
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
            Some(v) if index == 0 => marked(*v, finding),
            Some(v) => format!("{v:.4}"),
            None => "-".to_string(),
        });
    }
    cells.push(
        row.docs_per_second
            .map_or("-".into(), |v| format!("{v:.1}")),
    );
    cells.push(row.speedup.map_or("-".into(), |v| format!("{v:.2}×")));
    let difference = match (finding, tally) {
        (Some(f), _) => f.delta.map(|d| match f.interval {
            Some(i) => format!("{d:+.4} [{:+.4}, {:+.4}]", i.low, i.high),
            None => format!("{d:+.4}"),
        }),
        (None, Some(t)) => Some(format!("{:+.4}", t.mean_difference)),
        _ => None,
    };
    cells.push(difference.unwrap_or_else(|| "-".into()));
    cells.push(finding.and_then(|f| f.p_adjusted).map_or("-".into(), |p| {
        format!("{} · {}", p_value(p.t_test), p_value(p.randomisation))
    }));
    cells.push(match (finding, tally) {
        (Some(f), _) => f.verdict_text(),
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
