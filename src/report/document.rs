/*!
The machine-readable study: every comparison a report makes, judged, as one JSON document
(`repro report --format json`), and the summary tables README quotes, rendered from it.

This module owns the document's shape and the summary's Markdown. It gathers what the page
also shows ([`Judged`]: curves, findings, distillation rows, means) so that the page, the JSON
and README can never disagree; it draws nothing and reads the store only through
[`super::study::Study`].
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::findings::{judge, Factor, Family, Finding, Verdict};
use super::means::{
    mean_curves, mean_distill_rows, mean_label, tally_findings, ComparisonTally, MeanDistillRow,
};
use super::study::{DistillRow, LayerCurve, Study, HEADLINE_MEASURES, PERMUTATIONS};
use super::ReportError;
use crate::config::ReportSettings;
use crate::store::Store;

/// A study's comparisons judged, with everything derived from them.
#[derive(Debug)]
pub struct Judged {
    /// Layer curves of the headline measure.
    pub curves: Vec<LayerCurve>,
    /// Their means over the zero-shot datasets.
    pub mean_curves: Vec<LayerCurve>,
    pub findings: Vec<Finding>,
    pub families: Vec<Family>,
    pub distillation: Vec<DistillRow>,
    pub mean_rows: Vec<MeanDistillRow>,
    pub tallies: Vec<ComparisonTally>,
    pub zero_shot: Vec<String>,
}

impl Judged {
    /// Proposes every comparison of `study` and judges them together.
    pub fn of(store: &Store, study: &Study) -> Result<Self, ReportError> {
        let headline = HEADLINE_MEASURES[0];
        let curves = study.layer_curves(headline);
        let zero_shot = study.zero_shot_datasets();
        let mut candidates = study.layer_candidates(store, &curves, headline)?;
        candidates.extend(study.student_candidates(store)?);
        let distillation = study.distillation(store)?;
        candidates.extend(distillation.iter().filter_map(|row| row.comparison.clone()));
        let (findings, families) = judge(candidates, &study.settings());
        Ok(Judged {
            mean_curves: mean_curves(&curves, &zero_shot),
            mean_rows: mean_distill_rows(&distillation, &zero_shot, &findings),
            tallies: tally_findings(&findings, &zero_shot),
            curves,
            findings,
            families,
            distillation,
            zero_shot,
        })
    }
}

/// The JSON document of one experiment's report.
#[derive(Debug, Serialize)]
struct Document<'a> {
    experiment: &'a str,
    description: &'a str,
    repro_version: &'static str,
    settings: ReportSettings,
    measure: &'static str,
    permutations: usize,
    /// For each model the experiment trains, the datasets in-domain for it.
    in_domain: BTreeMap<String, Vec<String>>,
    /// The datasets means are taken over.
    zero_shot: &'a [String],
    families: &'a [Family],
    comparisons: &'a [Finding],
    summary: Summary,
}

/// Writes `<out_dir>/report.json`; returns its path.
pub fn write_document(
    study: &Study,
    judged: &Judged,
    out_dir: &Path,
) -> Result<PathBuf, ReportError> {
    let document = Document {
        experiment: &study.experiment.name,
        description: &study.experiment.description,
        repro_version: env!("CARGO_PKG_VERSION"),
        settings: study.settings(),
        measure: HEADLINE_MEASURES[0],
        permutations: PERMUTATIONS,
        in_domain: study.in_domain(),
        zero_shot: &judged.zero_shot,
        families: &judged.families,
        comparisons: &judged.findings,
        summary: Summary::of(study, judged),
    };
    let mut text = serde_json::to_string_pretty(&document)
        .map_err(|error| ReportError::Invalid(format!("writing the JSON report: {error}")))?;
    text.push('\n');
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let path = out_dir.join("report.json");
    crate::util::write_atomic(&path, text.as_bytes()).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The tables README quotes: the headline measure of every system on every test dataset,
/// and the layer findings. Kept in the JSON document so that README can be checked against
/// the committed copy ([`Summary::markdown`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub measure: String,
    /// The table's columns: the test datasets, then the zero-shot mean.
    pub columns: Vec<String>,
    pub systems: Vec<SystemRow>,
    pub layer_findings: Vec<FindingRow>,
}

/// One system's value on each column, with its verdict against the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemRow {
    pub system: String,
    pub values: Vec<Option<SummaryValue>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SummaryValue {
    pub value: f64,
    /// Against the reference on this dataset (none for the reference and for means).
    pub verdict: Option<Verdict>,
}

/// One judged layer comparison, as README lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRow {
    pub family: String,
    pub dataset: String,
    pub a: String,
    pub b: String,
    pub pooling: String,
    pub delta: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// The larger of the two adjusted p-values (t-test, randomisation): what † is read from.
    pub p_adjusted: Option<f64>,
    pub verdict: Verdict,
    /// `max_len (128 vs 256)`, … when confounded.
    pub confounded_by: Vec<String>,
}

impl Summary {
    fn of(study: &Study, judged: &Judged) -> Self {
        let mut columns = study.test_datasets();
        let zero_shot_column =
            (judged.zero_shot.len() >= 2).then(|| mean_label(judged.zero_shot.len()));
        columns.extend(zero_shot_column.clone());
        let mut systems: Vec<SystemRow> = Vec::new();
        for row in judged.distillation.iter() {
            let label = row.label();
            let index = match systems.iter().position(|s| s.system == label) {
                Some(index) => index,
                None => {
                    systems.push(SystemRow {
                        system: label,
                        values: vec![None; columns.len()],
                    });
                    systems.len() - 1
                }
            };
            let (Some(column), Some(value)) = (
                columns.iter().position(|c| *c == row.dataset),
                row.values.first().copied().flatten(),
            ) else {
                continue;
            };
            let verdict = row
                .comparison
                .as_ref()
                .and_then(|c| super::findings::finding_of(&judged.findings, c))
                .map(|f| f.verdict);
            systems[index].values[column] = Some(SummaryValue { value, verdict });
        }
        if let Some(column) = zero_shot_column.and_then(|c| columns.iter().position(|x| *x == c)) {
            for mean in &judged.mean_rows {
                let label = mean.row.label();
                if let (Some(system), Some(value)) = (
                    systems.iter_mut().find(|s| s.system == label),
                    mean.row.values.first().copied().flatten(),
                ) {
                    system.values[column] = Some(SummaryValue {
                        value,
                        verdict: None,
                    });
                }
            }
        }
        Summary {
            measure: HEADLINE_MEASURES[0].to_string(),
            columns,
            systems,
            layer_findings: judged
                .findings
                .iter()
                .filter(|f| {
                    matches!(
                        f.factor,
                        Factor::Layer | Factor::Model | Factor::ModelAndLayer
                    )
                })
                .map(FindingRow::of)
                .collect(),
        }
    }

    /// The two tables as Markdown, exactly as README shows them: the systems (`†`: better or
    /// worse than the reference after correction, `≈`: equivalent within the margin), then the
    /// layer findings read with `pooling`.
    pub fn markdown(&self, pooling: &str) -> String {
        let mut out = String::new();
        out.push_str(&format!("| {} |", self.measure_label()));
        for column in &self.columns {
            out.push_str(&format!(" {column} |"));
        }
        out.push_str(&format!("\n|---|{}\n", "---|".repeat(self.columns.len())));
        for system in &self.systems {
            out.push_str(&format!("| {} |", system.system));
            for value in &system.values {
                let cell = value.map_or("".to_string(), |v| {
                    let mark = match v.verdict {
                        Some(verdict) if verdict.significant() => "†",
                        Some(Verdict::Equivalent) => " ≈",
                        _ => "",
                    };
                    format!("{:.4}{mark}", v.value)
                });
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
        out.push_str("\n| comparison | dataset | A | B | Δ (95% CI) | adjusted p | verdict |\n");
        out.push_str("|---|---|---|---|---|---|---|\n");
        for row in self.layer_findings.iter().filter(|r| r.pooling == pooling) {
            out.push_str(&row.markdown());
        }
        out
    }

    fn measure_label(&self) -> String {
        super::measure_label(&self.measure)
    }
}

impl FindingRow {
    fn of(finding: &Finding) -> Self {
        FindingRow {
            family: finding.family.clone(),
            dataset: finding.dataset.clone(),
            a: finding.a.label.clone(),
            b: finding.b.label.clone(),
            pooling: finding
                .a
                .settings
                .get("pooling")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            delta: finding.delta,
            low: finding.interval.map(|i| i.low),
            high: finding.interval.map(|i| i.high),
            p_adjusted: finding.p_adjusted.map(|p| p.t_test.max(p.randomisation)),
            verdict: finding.verdict,
            confounded_by: finding.confounded_by.iter().map(|d| d.describe()).collect(),
        }
    }

    fn markdown(&self) -> String {
        let delta = match (self.delta, self.low, self.high) {
            (Some(d), Some(low), Some(high)) => format!("{d:+.4} [{low:+.4}, {high:+.4}]"),
            (Some(d), _, _) => format!("{d:+.4}"),
            _ => "-".to_string(),
        };
        let p = self.p_adjusted.map_or("-".to_string(), super::p_value);
        let verdict = super::findings::verdict_text(self.verdict, &self.confounded_by);
        format!(
            "| {} | {} | {} | {} | {delta} | {p} | {verdict} |\n",
            self.family, self.dataset, self.a, self.b
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(value: f64, verdict: Option<Verdict>) -> Option<SummaryValue> {
        Some(SummaryValue { value, verdict })
    }

    fn summary() -> Summary {
        let finding = |pooling: &str, verdict: Verdict, confounded_by: Vec<String>| FindingRow {
            family: "CE vs DE at the CE's chosen layer".into(),
            dataset: "scifact".into(),
            a: "CE teacher · mean · single L0".into(),
            b: "DE minilm · mean · single L0".into(),
            pooling: pooling.into(),
            delta: Some(0.0049),
            low: (verdict != Verdict::Confounded).then_some(-0.01),
            high: (verdict != Verdict::Confounded).then_some(0.02),
            p_adjusted: (verdict != Verdict::Confounded).then_some(0.4),
            verdict,
            confounded_by,
        };
        Summary {
            measure: "ndcg_cut_10".into(),
            columns: vec![
                "cranfield".into(),
                "scifact".into(),
                "zero-shot mean of 1".into(),
            ],
            systems: vec![
                SystemRow {
                    system: "minilm DE-6".into(),
                    values: vec![value(0.38, None), value(0.6451, None), value(0.38, None)],
                },
                SystemRow {
                    system: "student DE-2 ce:1 mse".into(),
                    values: vec![
                        value(0.2204, Some(Verdict::Worse)),
                        value(0.64, Some(Verdict::Equivalent)),
                        None,
                    ],
                },
            ],
            layer_findings: vec![
                finding("mean", Verdict::Inconclusive, vec![]),
                finding(
                    "mean",
                    Verdict::Confounded,
                    vec!["max_len (128 vs 256)".into()],
                ),
                finding("cls", Verdict::Better, vec![]),
            ],
        }
    }

    #[test]
    fn the_summary_renders_marks_intervals_and_confounders() {
        let markdown = summary().markdown("mean");
        assert!(
            markdown.starts_with(
                "| nDCG@10 | cranfield | scifact | zero-shot mean of 1 |\n|---|---|---|---|\n"
            ),
            "{markdown}"
        );
        assert!(markdown.contains("| student DE-2 ce:1 mse | 0.2204† | 0.6400 ≈ |  |\n"));
        assert!(markdown.contains("| +0.0049 [-0.0100, +0.0200] | 0.4000 | inconclusive |"));
        assert!(markdown.contains("| +0.0049 | - | confounded by max_len (128 vs 256) |"));
        assert!(
            !markdown.contains("better"),
            "another pooling's finding is left out"
        );
    }

    #[test]
    fn the_summary_survives_its_json_round_trip() {
        let text = serde_json::to_string(&summary()).unwrap();
        let back: Summary = serde_json::from_str(&text).unwrap();
        assert_eq!(back, summary());
        assert_eq!(back.markdown("mean"), summary().markdown("mean"));
    }
}
