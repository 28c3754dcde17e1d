//! README's study tables are the report's, not typed by hand: each is rendered from the
//! committed JSON document of its study (`docs/results/<experiment>.json`, a copy of what
//! `repro report --format json` wrote) and must appear in README between its markers,
//! character for character. Refreshing a study: run it, copy its `report.json` over the
//! committed one, paste `Summary::markdown`'s tables into README (this test prints them when
//! they differ).

use repro::report::document::Summary;

/// The text between `<!-- name -->` and `<!-- /name -->`.
fn block<'t>(text: &'t str, name: &str) -> &'t str {
    let open = format!("<!-- {name} -->");
    let close = format!("<!-- /{name} -->");
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("README has no `{open}` marker"))
        + open.len();
    let end = text[start..]
        .find(&close)
        .unwrap_or_else(|| panic!("README has no `{close}` marker"));
    &text[start..start + end]
}

fn summary_of(document: &str) -> (Summary, serde_json::Value) {
    let document: serde_json::Value = serde_json::from_str(document).unwrap();
    let summary = serde_json::from_value(document["summary"].clone()).unwrap();
    (summary, document)
}

#[test]
fn readme_distill_tables_are_the_committed_summary() {
    let (summary, _) = summary_of(include_str!("../docs/results/distill.json"));
    let expected = summary.markdown("mean");
    let readme = include_str!("../README.md");
    assert_eq!(
        block(readme, "distill:summary").trim(),
        expected.trim(),
        "README's distillation tables differ from docs/results/distill.json; they should \
         read:\n{expected}"
    );
}

#[test]
fn the_committed_summary_agrees_with_the_committed_comparisons() {
    let (summary, document) = summary_of(include_str!("../docs/results/distill.json"));
    let comparisons = document["comparisons"].as_array().unwrap();
    let mut checked = 0;
    for row in &summary.systems {
        for (column, value) in summary.columns.iter().zip(&row.values) {
            let Some(verdict) = value.and_then(|v| v.verdict) else {
                continue;
            };
            let finding = comparisons
                .iter()
                .find(|c| c["dataset"] == column.as_str() && c["a"]["label"] == row.system.as_str())
                .unwrap_or_else(|| panic!("no comparison for {} on {column}", row.system));
            assert_eq!(
                finding["verdict"],
                serde_json::to_value(verdict).unwrap(),
                "{} on {column}",
                row.system
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the summary holds no judged value");
    for finding in &summary.layer_findings {
        let judged = comparisons
            .iter()
            .find(|c| {
                c["family"] == finding.family.as_str()
                    && c["dataset"] == finding.dataset.as_str()
                    && c["a"]["label"] == finding.a.as_str()
                    && c["b"]["label"] == finding.b.as_str()
            })
            .unwrap_or_else(|| panic!("no comparison for {finding:?}"));
        assert_eq!(judged["delta"].as_f64(), finding.delta);
    }
}

#[test]
fn every_committed_family_is_holm_adjusted_and_confounded_pairs_carry_no_verdict() {
    use repro::eval::significance::Correction;
    let (_, document) = summary_of(include_str!("../docs/results/distill.json"));
    assert_eq!(document["settings"]["correction"], "holm");
    let comparisons = document["comparisons"].as_array().unwrap();
    for family in document["families"].as_array().unwrap() {
        let members: Vec<&serde_json::Value> = comparisons
            .iter()
            .filter(|c| c["family"] == family["name"] && !c["p"].is_null())
            .collect();
        assert_eq!(members.len() as u64, family["tests"].as_u64().unwrap());
        for test in ["t_test", "randomisation", "equivalence"] {
            let raw: Vec<f64> = members
                .iter()
                .map(|c| c["p"][test].as_f64().unwrap())
                .collect();
            let adjusted: Vec<f64> = members
                .iter()
                .map(|c| c["p_adjusted"][test].as_f64().unwrap())
                .collect();
            let holm = Correction::Holm.adjust(&raw);
            for (got, want) in adjusted.iter().zip(&holm) {
                assert!(
                    (got - want).abs() < 1e-12,
                    "{} {test}: {got} vs {want}",
                    family["name"]
                );
            }
        }
    }
    for comparison in comparisons {
        let confounded = !comparison["confounded_by"].as_array().unwrap().is_empty();
        assert_eq!(
            comparison["verdict"] == "confounded",
            confounded,
            "{comparison}"
        );
        if confounded {
            assert!(comparison["p"].is_null() && comparison["p_adjusted"].is_null());
        }
    }
}
