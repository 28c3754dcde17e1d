//! `repro figures`: the paper's figures regenerated from the store, under fixed names.
//!
//! - `layer_ndcg_<dataset>_<pooling>.svg` / `.png`: nDCG@10 by layer with 95% bands, CE
//!   (dashed) against DE (solid), one chart per dataset and pooling (and
//!   `layer_ndcg_zero-shot_mean_of_<N>_<pooling>` for the mean over the N zero-shot datasets
//!   every experiment has);
//! - `speedup.svg` / `.png`: speedup of the truncated encoder against its full depth,
//!   measured and ideal (from the experiments' bench tasks);
//! - `distill_table.md` / `.tex`: the students against their teacher DE.
//!
//! Several experiments can feed one set of figures (the layer sweep's DE curves beside the
//! distillation study's CE probe): their curves are drawn together, the first experiment's
//! curve winning when two have the same label on a dataset. Nothing here reads a clock or a
//! random source, so regenerating from the same store gives byte-identical files.

use std::path::{Path, PathBuf};

use super::document::Judged;
use super::findings::Finding;
use super::means::{mean_curves, MeanDistillRow};
use super::page::{distillation_table, layer_charts, speedup_chart, Table};
use super::study::{DistillRow, LayerCurve, SpeedCurve, Study, HEADLINE_MEASURES};
use super::ReportError;
use crate::store::{ExperimentRow, Store};

/// Writes the figures of `experiments` into `out`; returns the files written, in order.
pub fn write_figures(
    store: &Store,
    experiments: &[ExperimentRow],
    out: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let measure = HEADLINE_MEASURES[0];
    let mut curves: Vec<LayerCurve> = Vec::new();
    let mut speed: Vec<SpeedCurve> = Vec::new();
    let mut distillation: Vec<DistillRow> = Vec::new();
    let mut mean_rows: Vec<MeanDistillRow> = Vec::new();
    let mut findings: Vec<Finding> = Vec::new();
    let mut datasets: Vec<String> = Vec::new();
    let mut zero_shot: Option<Vec<String>> = None;
    for experiment in experiments {
        let study = Study::load(store, experiment)?;
        let judged = Judged::of(store, &study)?;
        for dataset in study.datasets() {
            if !datasets.contains(&dataset) {
                datasets.push(dataset);
            }
        }
        zero_shot = Some(match zero_shot {
            None => judged.zero_shot.clone(),
            Some(common) => common
                .into_iter()
                .filter(|d| judged.zero_shot.contains(d))
                .collect(),
        });
        for curve in study.layer_curves_with_intervals(store, measure)? {
            let taken = curves
                .iter()
                .any(|c| c.dataset == curve.dataset && c.label() == curve.label());
            if !taken {
                curves.push(curve);
            }
        }
        for curve in study.speed_curves() {
            let taken = speed.iter().any(|c| {
                (&c.model, &c.dataset, &c.input) == (&curve.model, &curve.dataset, &curve.input)
            });
            if !taken {
                speed.push(curve);
            }
        }
        distillation.extend(judged.distillation);
        mean_rows.extend(judged.mean_rows);
        findings.extend(judged.findings);
    }
    datasets.sort();
    // The mean over the zero-shot datasets, charted after the datasets themselves.
    let means = mean_curves(&curves, &zero_shot.unwrap_or_default());
    for mean in &means {
        if !datasets.contains(&mean.dataset) {
            datasets.push(mean.dataset.clone());
        }
    }
    curves.extend(means);

    std::fs::create_dir_all(out).map_err(|source| ReportError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for dataset in &datasets {
        for chart in layer_charts(dataset, &curves, measure) {
            let pooling = chart.title.rsplit(" · ").next().unwrap_or_default();
            let stem = format!("layer_ndcg_{}_{}", file_safe(dataset), file_safe(pooling));
            written.push(write_text(out, &format!("{stem}.svg"), &chart.to_svg()?)?);
            let png = out.join(format!("{stem}.png"));
            chart.write_png(&png)?;
            written.push(png);
        }
    }
    if !speed.is_empty() {
        let chart = speedup_chart(&speed);
        written.push(write_text(out, "speedup.svg", &chart.to_svg()?)?);
        let png = out.join("speedup.png");
        chart.write_png(&png)?;
        written.push(png);
    }
    if !distillation.is_empty() {
        let table = distillation_table(&distillation, &mean_rows, &findings);
        written.push(write_text(out, "distill_table.md", &markdown(&table))?);
        written.push(write_text(out, "distill_table.tex", &latex(&table))?);
    }
    Ok(written)
}

fn write_text(dir: &Path, name: &str, text: &str) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    crate::util::write_atomic(&path, text.as_bytes()).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// A dataset name as a file-name part: anything but letters, digits, `-` and `_` becomes `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A GitHub-flavoured Markdown table.
pub fn markdown(table: &Table) -> String {
    let escape = |text: &str| text.replace('|', "\\|");
    let mut out = format!(
        "| {} |\n|{}\n",
        table
            .headers
            .iter()
            .map(|h| escape(h))
            .collect::<Vec<_>>()
            .join(" | "),
        " --- |".repeat(table.headers.len())
    );
    for row in &table.rows {
        let cells: Vec<String> = row.iter().map(|cell| escape(cell)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// A LaTeX `tabular` (booktabs rules), ready for `\input{}`.
pub fn latex(table: &Table) -> String {
    let escape = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                    out.push('\\');
                    out.push(c);
                }
                '†' => out.push_str("$^\\dagger$"),
                '×' => out.push_str("$\\times$"),
                'Δ' => out.push_str("$\\Delta$"),
                '~' => out.push_str("\\textasciitilde{}"),
                '^' => out.push_str("\\textasciicircum{}"),
                '\\' => out.push_str("\\textbackslash{}"),
                other => out.push(other),
            }
        }
        out
    };
    let line = |cells: &[String]| {
        cells
            .iter()
            .map(|cell| escape(cell))
            .collect::<Vec<_>>()
            .join(" & ")
            + " \\\\\n"
    };
    let mut out = format!(
        "\\begin{{tabular}}{{{}}}\n\\toprule\n",
        "l".repeat(table.headers.len())
    );
    out.push_str(&line(&table.headers));
    out.push_str("\\midrule\n");
    for row in &table.rows {
        out.push_str(&line(row));
    }
    out.push_str("\\bottomrule\n\\end{tabular}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            headers: vec!["model".into(), "nDCG@10".into(), "speedup".into()],
            rows: vec![vec!["de_2|x".into(), "0.3100†".into(), "2.90×".into()]],
        }
    }

    #[test]
    fn markdown_escapes_pipes() {
        assert_eq!(
            markdown(&table()),
            "| model | nDCG@10 | speedup |\n| --- | --- | --- |\n| de_2\\|x | 0.3100† | 2.90× |\n"
        );
    }

    #[test]
    fn latex_escapes_specials() {
        let tex = latex(&table());
        assert!(
            tex.starts_with("\\begin{tabular}{lll}\n\\toprule\n"),
            "{tex}"
        );
        assert!(
            tex.contains("de\\_2|x & 0.3100$^\\dagger$ & 2.90$\\times$ \\\\\n"),
            "{tex}"
        );
        assert!(tex.ends_with("\\bottomrule\n\\end{tabular}\n"));
    }

    #[test]
    fn dataset_names_become_file_names() {
        assert_eq!(file_safe("cqadupstack/android"), "cqadupstack_android");
    }
}
