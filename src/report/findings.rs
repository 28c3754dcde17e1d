/*!
Findings: what a report may conclude from its paired comparisons.

A comparison names the one factor it isolates ([`Factor`]: layer, model, input, init, …). This
module owns the rules that turn a candidate comparison into a verdict a reviewer would sign:

* **Like for like.** The two sides must agree on every setting that changes what is measured
  except those the factor owns; a pair that differs in anything else is *confounded*, gets no
  test and no verdict but "confounded", and says by what.
* **Families and correction.** Comparisons of one kind form a family; within it the raw
  p-values of each test (t-test, randomisation test, equivalence test) are adjusted by the
  report's correction (`[report] correction`, Holm by default) before they meet α.
* **Verdicts.** `better` / `worse`: both adjusted tests below α; otherwise `equivalent` when
  the adjusted equivalence test (TOST, `[report] margin`) is below α; otherwise
  `inconclusive`. A non-significant difference is never "equal".

It computes no scores (the store holds them, [`crate::eval::significance`] tests them) and
draws nothing; the page, the figures and the JSON document read its [`Finding`]s.
*/

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::ReportSettings;
use crate::eval::significance::PairedComparison;

/// What a comparison varies on purpose; every other measurement setting must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// The hidden layer read (same model, same everything else).
    Layer,
    /// The encoder: a cross encoder against a dual encoder at the same layer.
    Model,
    /// The encoder and the layer read: a CE's chosen layer against a DE's last.
    ModelAndLayer,
    /// The input format (`single` or `self_pair`).
    Input,
    /// A student's initialisation (`ce:K`, `de:K`, `random`).
    Init,
    /// A whole retrieval system: the model, its depth and how it was trained, and the
    /// re-ranker (and fusion) on top of it.
    System,
}

impl Factor {
    pub fn name(self) -> &'static str {
        match self {
            Factor::Layer => "layer",
            Factor::Model => "model",
            Factor::ModelAndLayer => "model and layer",
            Factor::Input => "input",
            Factor::Init => "init",
            Factor::System => "system (model, depth, training, re-ranker)",
        }
    }

    /// Whether `parameter` is part of what this factor varies.
    fn owns(self, parameter: &str) -> bool {
        let model = parameter == "model"
            || parameter.starts_with("train_ce.")
            || parameter.starts_with("train_de.");
        match self {
            Factor::Layer => parameter == "layer",
            Factor::Model => model,
            Factor::ModelAndLayer => model || parameter == "layer",
            Factor::Input => parameter == "input",
            Factor::Init => parameter == "train_de.init",
            Factor::System => model || parameter == "layer" || parameter.starts_with("rerank."),
        }
    }
}

/// Parameters that never change a measured value: how work is batched or split into tasks,
/// and the settings of the throughput bench (which measures speed, not retrieval).
fn is_measurement_neutral(parameter: &str) -> bool {
    matches!(
        parameter,
        "encode.batch" | "encode.shards" | "rerank.batch" | "eval.metrics" | "eval.k"
    ) || parameter.starts_with("bench.")
}

/// One setting on which the two sides differ (`None`: the side has no such setting).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub setting: String,
    pub a: Option<serde_json::Value>,
    pub b: Option<serde_json::Value>,
}

impl Difference {
    /// `max_len (128 vs 256)`.
    pub fn describe(&self) -> String {
        let show = |value: &Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(text)) if text.is_empty() => "none".to_string(),
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => "unset".to_string(),
        };
        let name = self
            .setting
            .strip_prefix("encode.")
            .unwrap_or(&self.setting);
        format!("{name} ({} vs {})", show(&self.a), show(&self.b))
    }
}

/// The settings that differ between two cells' parameters, measurement-neutral ones left out.
pub fn differences(
    a: &BTreeMap<String, serde_json::Value>,
    b: &BTreeMap<String, serde_json::Value>,
) -> Vec<Difference> {
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter(|name| !is_measurement_neutral(name))
        .filter(|name| a.get(*name) != b.get(*name))
        .map(|name| Difference {
            setting: name.clone(),
            a: a.get(name).cloned(),
            b: b.get(name).cloned(),
        })
        .collect()
}

/// One side of a comparison: a cell, the measure read from it, and its settings.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub label: String,
    /// The cell's position in the experiment.
    pub cell: i64,
    pub measure: String,
    /// The mean of the measure over the paired queries.
    pub mean: Option<f64>,
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// A comparison as a study proposes it, before it is judged.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub family: &'static str,
    pub dataset: String,
    pub factor: Factor,
    pub a: Side,
    pub b: Side,
    /// The paired tests on the two sides' per-query scores; `None` when they share fewer
    /// than two queries.
    pub test: Option<PairedComparison>,
}

/// What may be concluded from a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Better,
    Worse,
    Equivalent,
    Inconclusive,
    Confounded,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Equivalent => "equivalent",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Confounded => "confounded",
        }
    }

    /// Whether the difference is significant after correction (the report's †).
    pub fn significant(self) -> bool {
        matches!(self, Verdict::Better | Verdict::Worse)
    }
}

/// The raw or adjusted p-values of one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PValues {
    pub t_test: f64,
    pub randomisation: f64,
    /// Two one-sided tests of |Δ| < margin.
    pub equivalence: f64,
}

/// A judged comparison: everything the report and its JSON document say about it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub family: String,
    pub dataset: String,
    pub factor: Factor,
    pub a: Side,
    pub b: Side,
    /// Every measurement setting in which the sides differ.
    pub differing: Vec<Difference>,
    /// Those the factor does not own: non-empty means confounded.
    pub confounded_by: Vec<Difference>,
    pub queries: usize,
    /// mean(A) − mean(B).
    pub delta: Option<f64>,
    /// 95% paired t interval of `delta`; absent for confounded comparisons.
    pub interval: Option<crate::eval::significance::Interval>,
    pub p: Option<PValues>,
    pub p_adjusted: Option<PValues>,
    pub outcomes: Option<crate::eval::significance::Outcomes>,
    pub verdict: Verdict,
}

/// How a verdict reads in a table: its name, or `confounded by max_len (128 vs 256), …`.
pub fn verdict_text(verdict: Verdict, confounded_by: &[String]) -> String {
    match verdict {
        Verdict::Confounded => format!("confounded by {}", confounded_by.join(", ")),
        other => other.name().to_string(),
    }
}

impl Finding {
    /// The verdict as tables show it ([`verdict_text`]).
    pub fn verdict_text(&self) -> String {
        let confounders: Vec<String> = self.confounded_by.iter().map(|d| d.describe()).collect();
        verdict_text(self.verdict, &confounders)
    }

    /// Whether this finding compares `a` with `b` on `dataset` in `family`.
    pub fn is(&self, family: &str, dataset: &str, a: &str, b: &str) -> bool {
        (self.family.as_str(), self.dataset.as_str()) == (family, dataset)
            && (self.a.label.as_str(), self.b.label.as_str()) == (a, b)
    }
}

/// The finding judged from `candidate`.
pub fn finding_of<'f>(findings: &'f [Finding], candidate: &Candidate) -> Option<&'f Finding> {
    findings.iter().find(|f| {
        f.is(
            candidate.family,
            &candidate.dataset,
            &candidate.a.label,
            &candidate.b.label,
        )
    })
}

/// A family of tests and how its p-values were adjusted.
#[derive(Debug, Clone, Serialize)]
pub struct Family {
    pub name: String,
    pub factor: Factor,
    pub correction: String,
    /// Comparisons tested (confounded ones are not).
    pub tests: usize,
    pub confounded: usize,
}

/// Judges `candidates`: confounders, family-wise adjusted p-values, verdicts. Families are
/// formed by each candidate's `family`, in order of first appearance.
pub fn judge(candidates: Vec<Candidate>, settings: &ReportSettings) -> (Vec<Finding>, Vec<Family>) {
    let mut findings: Vec<Finding> = candidates
        .into_iter()
        .map(|candidate| unjudged(candidate, settings.margin))
        .collect();
    let mut names: Vec<String> = Vec::new();
    for finding in &findings {
        if !names.contains(&finding.family) {
            names.push(finding.family.clone());
        }
    }
    let families = names
        .into_iter()
        .map(|name| {
            let members: Vec<usize> = (0..findings.len())
                .filter(|&i| findings[i].family == name)
                .collect();
            let tested: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| findings[i].p.is_some())
                .collect();
            adjust_family(&mut findings, &tested, settings);
            Family {
                factor: findings[members[0]].factor,
                correction: settings.correction.name().to_string(),
                tests: tested.len(),
                confounded: members
                    .iter()
                    .filter(|&&i| !findings[i].confounded_by.is_empty())
                    .count(),
                name,
            }
        })
        .collect();
    for finding in &mut findings {
        finding.verdict = verdict(finding, settings.alpha);
    }
    (findings, families)
}

/// A candidate's finding before its family is adjusted: confounded pairs keep their means
/// and Δ but get no p-value and no interval.
fn unjudged(candidate: Candidate, margin: f64) -> Finding {
    let Candidate {
        family,
        dataset,
        factor,
        mut a,
        mut b,
        test,
    } = candidate;
    let differing = differences(&a.settings, &b.settings);
    let confounded_by: Vec<Difference> = differing
        .iter()
        .filter(|d| !factor.owns(&d.setting))
        .cloned()
        .collect();
    a.mean = test.as_ref().map(|t| t.mean_a);
    b.mean = test.as_ref().map(|t| t.mean_b);
    let tested = test.as_ref().filter(|_| confounded_by.is_empty());
    Finding {
        family: family.to_string(),
        dataset,
        factor,
        queries: test.as_ref().map_or(0, |t| t.queries),
        delta: test.as_ref().map(|t| t.mean_difference),
        interval: tested.map(|t| t.interval),
        p: tested.map(|t| PValues {
            t_test: t.t_test_p,
            randomisation: t.randomisation_p,
            equivalence: t.equivalence_p(margin),
        }),
        p_adjusted: None,
        outcomes: test.as_ref().map(|t| t.outcomes),
        verdict: Verdict::Inconclusive,
        a,
        b,
        differing,
        confounded_by,
    }
}

/// Adjusts each test's p-values over the family's tested members.
fn adjust_family(findings: &mut [Finding], tested: &[usize], settings: &ReportSettings) {
    let column = |pick: fn(&PValues) -> f64, findings: &[Finding]| -> Vec<f64> {
        tested
            .iter()
            .map(|&i| findings[i].p.as_ref().map_or(1.0, pick))
            .collect()
    };
    let correction = settings.correction;
    let t = correction.adjust(&column(|p| p.t_test, findings));
    let randomisation = correction.adjust(&column(|p| p.randomisation, findings));
    let equivalence = correction.adjust(&column(|p| p.equivalence, findings));
    for (position, &i) in tested.iter().enumerate() {
        findings[i].p_adjusted = Some(PValues {
            t_test: t[position],
            randomisation: randomisation[position],
            equivalence: equivalence[position],
        });
    }
}

fn verdict(finding: &Finding, alpha: f64) -> Verdict {
    if !finding.confounded_by.is_empty() {
        return Verdict::Confounded;
    }
    let (Some(adjusted), Some(delta)) = (finding.p_adjusted, finding.delta) else {
        return Verdict::Inconclusive;
    };
    if adjusted.t_test < alpha && adjusted.randomisation < alpha {
        if delta > 0.0 {
            Verdict::Better
        } else {
            Verdict::Worse
        }
    } else if adjusted.equivalence < alpha {
        Verdict::Equivalent
    } else {
        Verdict::Inconclusive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::significance::{compare_paired, Correction};
    use serde_json::json;

    fn settings(pairs: &[(&str, serde_json::Value)]) -> BTreeMap<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    fn side(label: &str, settings: BTreeMap<String, serde_json::Value>) -> Side {
        Side {
            label: label.to_string(),
            cell: 0,
            measure: "ndcg_cut_10".to_string(),
            mean: None,
            settings,
        }
    }

    /// Scores of 40 queries: B's plus `shift`, with noise that keeps the t-test honest.
    fn scores(shift: f64) -> (Vec<f64>, Vec<f64>) {
        let b: Vec<f64> = (0..40).map(|i| 0.3 + 0.01 * (i % 7) as f64).collect();
        let a = b
            .iter()
            .enumerate()
            .map(|(i, v)| v + shift + 0.02 * ((i % 5) as f64 - 2.0))
            .collect();
        (a, b)
    }

    fn candidate(
        family: &'static str,
        factor: Factor,
        a: BTreeMap<String, serde_json::Value>,
        b: BTreeMap<String, serde_json::Value>,
        shift: f64,
    ) -> Candidate {
        let (scores_a, scores_b) = scores(shift);
        Candidate {
            family,
            dataset: "d".to_string(),
            factor,
            a: side(&format!("a{shift}"), a),
            b: side("b", b),
            test: compare_paired(&scores_a, &scores_b, 2000, 7).ok(),
        }
    }

    fn ce_and_de(
        ce_max_len: i64,
    ) -> (
        BTreeMap<String, serde_json::Value>,
        BTreeMap<String, serde_json::Value>,
    ) {
        (
            settings(&[
                ("model", json!("teacher")),
                ("layer", json!(0)),
                ("encode.max_len", json!(ce_max_len)),
                ("encode.batch", json!(16)),
                ("train_ce.epochs", json!(4)),
            ]),
            settings(&[
                ("model", json!("minilm")),
                ("layer", json!(0)),
                ("encode.max_len", json!(256)),
                ("encode.batch", json!(32)),
            ]),
        )
    }

    #[test]
    fn a_setting_the_factor_does_not_own_confounds_and_is_never_tested() {
        let (ce, de) = ce_and_de(128);
        let (findings, families) = judge(
            vec![candidate("ce vs de", Factor::Model, ce, de, 0.2)],
            &ReportSettings::default(),
        );
        let finding = &findings[0];
        assert_eq!(finding.verdict, Verdict::Confounded);
        assert_eq!(
            finding.confounded_by.len(),
            1,
            "{:?}",
            finding.confounded_by
        );
        assert_eq!(finding.confounded_by[0].describe(), "max_len (128 vs 256)");
        assert!(finding.p.is_none() && finding.p_adjusted.is_none());
        assert!(finding.delta.is_some(), "Δ is still shown");
        assert_eq!((families[0].tests, families[0].confounded), (0, 1));
    }

    #[test]
    fn what_the_factor_owns_and_how_work_is_batched_do_not_confound() {
        let (ce, de) = ce_and_de(256);
        let (findings, _) = judge(
            vec![candidate(
                "ce vs de",
                Factor::Model,
                ce.clone(),
                de.clone(),
                0.2,
            )],
            &ReportSettings::default(),
        );
        assert!(findings[0].confounded_by.is_empty());
        assert_eq!(findings[0].verdict, Verdict::Better);
        // The same pair under the layer factor is confounded by the model.
        let (findings, _) = judge(
            vec![candidate("layers", Factor::Layer, ce, de, 0.2)],
            &ReportSettings::default(),
        );
        assert_eq!(findings[0].verdict, Verdict::Confounded);
        assert!(findings[0]
            .confounded_by
            .iter()
            .any(|d| d.setting == "model"));
    }

    #[test]
    fn p_values_are_adjusted_within_each_family_only() {
        let same = || settings(&[("model", json!("m")), ("layer", json!(1))]);
        let shifts = [0.0, 0.004, 0.01, 0.03];
        let mut candidates: Vec<Candidate> = shifts
            .iter()
            .map(|&shift| candidate("family one", Factor::Layer, same(), same(), shift))
            .collect();
        candidates.push(candidate(
            "family two",
            Factor::Layer,
            same(),
            same(),
            0.004,
        ));
        let settings = ReportSettings::default();
        let (findings, families) = judge(candidates, &settings);
        let raw: Vec<f64> = findings[..4].iter().map(|f| f.p.unwrap().t_test).collect();
        let adjusted: Vec<f64> = findings[..4]
            .iter()
            .map(|f| f.p_adjusted.unwrap().t_test)
            .collect();
        assert_eq!(adjusted, Correction::Holm.adjust(&raw));
        assert!(adjusted.iter().zip(&raw).any(|(adj, raw)| adj > raw));
        // Alone in its family, the last comparison keeps its raw p-value.
        let alone = &findings[4];
        assert_eq!(alone.p_adjusted.unwrap().t_test, alone.p.unwrap().t_test);
        assert_eq!(families.len(), 2);
        assert_eq!((families[0].tests, families[1].tests), (4, 1));
    }

    #[test]
    fn verdicts_read_the_adjusted_tests_and_the_margin() {
        let same = || settings(&[("model", json!("m"))]);
        let verdict_of = |shift: f64, margin: f64| {
            let settings = ReportSettings {
                margin,
                ..ReportSettings::default()
            };
            judge(
                vec![candidate("f", Factor::Layer, same(), same(), shift)],
                &settings,
            )
            .0[0]
                .verdict
        };
        assert_eq!(verdict_of(0.05, 0.01), Verdict::Better);
        assert_eq!(verdict_of(-0.05, 0.01), Verdict::Worse);
        // No difference at all: equivalent within a margin the interval fits in, inconclusive
        // within one it does not.
        assert_eq!(verdict_of(0.0, 0.05), Verdict::Equivalent);
        assert_eq!(verdict_of(0.0, 0.001), Verdict::Inconclusive);
    }
}
