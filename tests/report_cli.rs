//! `repro report` and `repro figures` end to end, from a store built by a miniature study on
//! a tiny random BERT: a CE teacher probed layer by layer, the DE probed layer by layer and
//! re-ranked, two DE-2 students, bench tasks. The page is also opened in headless Chromium.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use common::Fixture;

/// The shared miniature study with a fixed fusion weight, bench tasks, the DE probed with
/// two poolings and re-ranked, and two DE-2 students; layers are chosen on `tiny_dev` (the
/// same collection under another name, so that the test datasets have a selection split).
fn study_text() -> String {
    common::mini_distill(
        "report_smoke",
        "",
        "lambda = 0.5",
        r#"
[datasets.tiny_dev]
path = "DATASET"
collection = "tiny"

[report]
selection = "tiny_dev"
margin = 0.05

[bench]
documents = 6
runs = 2
warmup = 0
inputs = ["single"]

[[sweep]]
model = ["tiny"]
pooling = ["mean", "cls"]
input = ["single", "self_pair"]

[[sweep]]
model = ["tiny"]
dataset = ["tiny"]
layers = [3]
rerank.model = ["teacher"]

[[sweep]]
model = ["student"]
dataset = ["tiny"]
layers = [2]
train_de.init = ["ce:1", "random"]
"#,
    )
}

fn study() -> Fixture {
    let fixture = Fixture::new();
    fixture.write_experiment(&study_text());
    let summary = fixture.run();
    assert_eq!(summary["status"], "succeeded", "{summary}");
    fixture
}

/// Runs `repro` with `args`, which must succeed; returns its stdout's lines.
fn repro_lines(fixture: &Fixture, args: &[&str]) -> Vec<PathBuf> {
    let output = fixture.repro().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "repro {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| fixture.dir.path().join(line))
        .collect()
}

#[test]
fn report_figures_and_browser_check() {
    let fixture = study();

    // The HTML page: self-contained, every section present, charts inline.
    let pages = repro_lines(&fixture, &["report", "report_smoke"]);
    assert_eq!(pages.len(), 1);
    assert!(
        pages[0].ends_with("reports/report_smoke/index.html"),
        "{pages:?}"
    );
    let html = std::fs::read_to_string(&pages[0]).unwrap();
    for section in [
        "What was run",
        "nDCG@10 by layer",
        "Recall@100 by layer",
        "Chosen layer per configuration",
        "Paired comparisons",
        "Distillation",
        "Encoder speed by depth",
        "Training curves",
        "Cells",
        // Provenance: the file as run, the machine, the toolchain.
        "[models.teacher]",
        "rustc",
    ] {
        assert!(html.contains(section), "the page lacks `{section}`");
    }
    // nDCG@10 and Recall@100 on two datasets and two poolings (small multiples: the CE is
    // probed with mean pooling only), speedup and throughput, CE and DE losses.
    let charts = html.matches("<figure class=\"chart\"").count();
    assert_eq!(charts, 2 * 2 * 2 + 2 + 2, "charts on the page");
    assert_eq!(html.matches("<svg").count(), charts);
    // Cross encoder and dual encoder curves are both drawn, told apart by their labels.
    assert!(html.contains("CE teacher · mean · self_pair"));
    assert!(html.contains("DE tiny · cls · single"));
    // Paired comparisons, one family per kind, on the test dataset only.
    for family in [
        "self_pair vs single at the last layer",
        "CE at its chosen layer vs DE at its last layer",
        "CE vs DE at the CE&#x27;s chosen layer",
        "CE-infused student vs the same student from another init",
        "vs the teacher DE",
    ] {
        assert!(html.contains(family), "no family `{family}`");
    }
    assert!(html.contains("selection split: layers are chosen here"));
    assert!(html.contains("best here (post hoc, untested)"));
    // The re-ranked DE has two distillation rows: the CE's order, and fused at λ 0.5.
    assert!(html.contains("teacher fused, λ 0.50"), "no fused row");
    // Nothing to fetch, nothing to run.
    for forbidden in ["<script", " src=", "href=\"http", "<link"] {
        assert!(!html.contains(forbidden), "the page contains `{forbidden}`");
    }

    // The same tables in Markdown.
    let markdown = repro_lines(&fixture, &["report", "report_smoke", "--format", "md"]);
    let markdown = std::fs::read_to_string(&markdown[0]).unwrap();
    assert!(
        markdown.contains("| dataset | configuration | layer chosen on tiny\\_dev |"),
        "{markdown}"
    );
    assert!(markdown.contains("## Distillation"));
    let distill_rows = markdown
        .lines()
        .filter(|line| line.starts_with("| tiny | student |"))
        .count();
    assert_eq!(distill_rows, 2, "{markdown}");

    // Figures: fixed names, byte-identical when regenerated from the same store.
    let out = fixture.dir.path().join("figures");
    let out_arg = out.to_str().unwrap();
    let first = repro_lines(&fixture, &["figures", "report_smoke", "--out", out_arg]);
    let names: Vec<String> = first
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "layer_ndcg_tiny_mean.svg",
            "layer_ndcg_tiny_mean.png",
            "layer_ndcg_tiny_cls.svg",
            "layer_ndcg_tiny_cls.png",
            "layer_ndcg_tiny_dev_mean.svg",
            "layer_ndcg_tiny_dev_mean.png",
            "layer_ndcg_tiny_dev_cls.svg",
            "layer_ndcg_tiny_dev_cls.png",
            "speedup.svg",
            "speedup.png",
            "distill_table.md",
            "distill_table.tex",
        ]
    );
    let bytes: Vec<Vec<u8>> = first.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let again = repro_lines(&fixture, &["figures", "report_smoke", "--out", out_arg]);
    assert_eq!(first, again);
    for (path, before) in again.iter().zip(&bytes) {
        assert_eq!(
            &std::fs::read(path).unwrap(),
            before,
            "{} changed",
            path.display()
        );
    }
    let table = std::fs::read_to_string(out.join("distill_table.tex")).unwrap();
    assert!(table.starts_with("\\begin{tabular}"));

    check_document(&fixture);
    browser_check(&pages[0], charts);
}

/// `repro report --format json`: every family adjusted by Holm, the selection split never
/// tested, like-for-like pairs tested and judged.
fn check_document(fixture: &Fixture) {
    let path = repro_lines(fixture, &["report", "report_smoke", "--format", "json"]);
    assert!(
        path[0].ends_with("reports/report_smoke/report.json"),
        "{path:?}"
    );
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path[0]).unwrap()).unwrap();
    assert_eq!(document["settings"]["selection"], "tiny_dev");
    assert_eq!(
        document["in_domain"]["teacher"],
        serde_json::json!(["tiny", "tiny_dev"])
    );
    let comparisons = document["comparisons"].as_array().unwrap();
    assert!(
        comparisons.iter().all(|c| c["dataset"] == "tiny"),
        "tested on the test split only"
    );
    for family in document["families"].as_array().unwrap() {
        let raw: Vec<f64> = comparisons
            .iter()
            .filter(|c| c["family"] == family["name"] && !c["p"].is_null())
            .map(|c| c["p"]["t_test"].as_f64().unwrap())
            .collect();
        let adjusted: Vec<f64> = comparisons
            .iter()
            .filter(|c| c["family"] == family["name"] && !c["p"].is_null())
            .map(|c| c["p_adjusted"]["t_test"].as_f64().unwrap())
            .collect();
        // JSON keeps 17 significant digits; serde_json reads them back to within an ulp.
        let holm = repro::eval::significance::Correction::Holm.adjust(&raw);
        assert_eq!(adjusted.len(), holm.len());
        for (got, want) in adjusted.iter().zip(&holm) {
            assert!(
                (got - want).abs() < 1e-12,
                "{}: {got} vs {want}",
                family["name"]
            );
        }
    }
    let ce_vs_de: Vec<&serde_json::Value> = comparisons
        .iter()
        .filter(|c| c["family"] == "CE vs DE at the CE's chosen layer")
        .collect();
    assert!(!ce_vs_de.is_empty());
    for comparison in &ce_vs_de {
        assert_eq!(comparison["a"]["settings"]["encode.max_len"], 32);
        assert!(
            comparison["confounded_by"].as_array().unwrap().is_empty(),
            "{comparison}"
        );
        let verdict = comparison["verdict"].as_str().unwrap();
        assert!(["better", "worse", "equivalent", "inconclusive"].contains(&verdict));
        let outcomes = &comparison["outcomes"];
        let queries = outcomes["wins"].as_u64().unwrap()
            + outcomes["ties"].as_u64().unwrap()
            + outcomes["losses"].as_u64().unwrap();
        assert_eq!(queries, comparison["queries"].as_u64().unwrap());
    }
}

/// A cross encoder probed at another `max_len` than the dual encoder: the CE-vs-DE pairs are
/// confounded, named by it, and carry no test.
#[test]
fn a_ce_read_at_another_max_len_is_confounded_not_compared() {
    let fixture = Fixture::new();
    let text = study_text().replace(
        "negatives_from = \"tiny\"\nmax_len = 32",
        "negatives_from = \"tiny\"\nmax_len = 24",
    );
    assert!(text.contains("max_len = 24"));
    fixture.write_experiment(&text);
    assert_eq!(fixture.run()["status"], "succeeded");
    let path = repro_lines(&fixture, &["report", "report_smoke", "--format", "json"]);
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path[0]).unwrap()).unwrap();
    let ce_vs_de: Vec<&serde_json::Value> = document["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["family"] == "CE vs DE at the CE's chosen layer")
        .collect();
    assert!(!ce_vs_de.is_empty());
    for comparison in ce_vs_de {
        assert_eq!(comparison["verdict"], "confounded", "{comparison}");
        assert_eq!(comparison["confounded_by"][0]["setting"], "encode.max_len");
        assert!(comparison["p"].is_null() && comparison["p_adjusted"].is_null());
    }
    let html =
        std::fs::read_to_string(repro_lines(&fixture, &["report", "report_smoke"])[0].clone())
            .unwrap();
    assert!(
        html.contains("confounded by max_len (24 vs 32)"),
        "the page names the confounder"
    );
}

/// Two datasets (the smoke collection under two names, so every mean equals its parts): the
/// mean over datasets in `repro compare --mean-over`, the report and the figures.
#[test]
fn means_over_datasets_in_compare_report_and_figures() {
    let fixture = Fixture::new();
    fixture.write_experiment(
        r#"
[experiment]
schema = 1
name = "two_datasets"
seeds = [0]

[models.tiny]
source = "TINY"
max_len = 32

[datasets.one]
path = "DATASET"

[datasets.two]
path = "DATASET"

[encode]
batch = 4

[sweep]
layers = "all"
pooling = ["mean", "cls"]
"#,
    );
    assert_eq!(fixture.run()["status"], "succeeded");
    let rows = |args: &[&str]| -> Vec<serde_json::Value> {
        let output = fixture.repro().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let cells = rows(&["compare", "two_datasets", "--json"]);
    let means = rows(&[
        "compare",
        "two_datasets",
        "--json",
        "--mean-over",
        "dataset",
    ]);
    assert_eq!(cells.len(), 2 * 4 * 2, "2 datasets × 4 layers × 2 poolings");
    assert_eq!(means.len(), 4 * 2);
    for mean in &means {
        assert_eq!(mean["dataset_count"], 2, "{mean}");
        assert!(mean.get("dataset").is_none(), "{mean}");
        let cell = cells
            .iter()
            .find(|c| c["layer"] == mean["layer"] && c["pooling"] == mean["pooling"])
            .unwrap();
        let (a, b) = (&cell["ndcg_cut_10"], &mean["ndcg_cut_10"]);
        assert!(
            (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-12,
            "{a} {b}"
        );
    }

    let page = repro_lines(&fixture, &["report", "two_datasets", "--format", "md"]);
    let markdown = std::fs::read_to_string(&page[0]).unwrap();
    let best_rows = markdown
        .lines()
        .filter(|line| line.starts_with("| zero-shot mean of 2 | DE tiny"))
        .count();
    assert_eq!(best_rows, 2, "a mean row per pooling: {markdown}");

    let out = fixture.dir.path().join("figures");
    let figures = repro_lines(
        &fixture,
        &["figures", "two_datasets", "--out", out.to_str().unwrap()],
    );
    assert!(
        figures
            .iter()
            .any(|p| p.ends_with("layer_ndcg_zero-shot_mean_of_2_mean.svg")),
        "{figures:?}"
    );
}

/// Opens the page in headless Chromium (tests/browser/check_report.mjs): no console errors,
/// no requests, every chart rendered; keeps a screenshot in target/report-screenshot.png.
/// Required when REPRO_BROWSER_TEST=1 (as `make test` sets); otherwise skipped, saying why,
/// when Node, Chromium or playwright-core is missing.
fn browser_check(page: &Path, charts: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser/check_report.mjs");
    let required = std::env::var("REPRO_BROWSER_TEST").is_ok_and(|v| v == "1");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = [
        (!root
            .join("tests/browser/node_modules/playwright-core")
            .is_dir())
        .then_some("playwright-core (npm ci --prefix tests/browser)"),
        (!Path::new(&chromium).exists()).then_some("chromium"),
        Process::new("node")
            .arg("--version")
            .output()
            .is_err()
            .then_some("node"),
    ];
    let missing: Vec<&str> = missing.into_iter().flatten().collect();
    if !missing.is_empty() {
        assert!(
            !required,
            "browser check required, but missing: {missing:?}"
        );
        eprintln!("browser check skipped: missing {missing:?}");
        return;
    }
    let screenshot = root.join("target/report-screenshot.png");
    let output = Process::new("node")
        .arg(&script)
        .arg(page)
        .arg(&screenshot)
        .arg(charts.to_string())
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "browser check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
}
