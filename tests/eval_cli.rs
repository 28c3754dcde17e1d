//! `repro eval` end to end, on the trec_eval fixtures (`tests/fixtures/trec_eval/`, made by
//! `scripts/gen_trec_eval_fixtures.py`): trec_eval's text layout, `-q`, `-c`, `--json`, and
//! the error messages a user sees.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::str::contains;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/trec_eval")
        .join(name)
}

/// The case `name` of `expected.json`: pytrec_eval's (trec_eval's) values.
fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|case| case["name"] == name)
        .unwrap()
        .clone()
}

fn eval(args: &[&str]) -> String {
    let output = Command::cargo_bin("repro")
        .unwrap()
        .arg("eval")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "repro eval {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn path(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

/// Splits trec_eval lines into (measure, query, value text), checking the layout
/// `%-22s\t%s\t%s` on the way.
fn parse_lines(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "line {line:?}");
            assert!(fields[0].len() >= 22, "name not padded to 22: {line:?}");
            let name = fields[0].trim_end();
            (
                name.to_string(),
                fields[1].to_string(),
                fields[2].to_string(),
            )
        })
        .collect()
}

#[test]
fn default_output_is_trec_eval_official_summary() {
    let stdout = eval(&[&path("graded.qrels"), &path("graded.run")]);
    let lines = parse_lines(&stdout);
    let names: Vec<&str> = lines.iter().map(|(name, _, _)| name.as_str()).collect();
    let mut want = vec![
        "num_q",
        "num_ret",
        "num_rel",
        "num_rel_ret",
        "map",
        "gm_map",
        "Rprec",
        "bpref",
        "recip_rank",
    ];
    let p = [
        "P_5", "P_10", "P_15", "P_20", "P_30", "P_100", "P_200", "P_500", "P_1000",
    ];
    want.extend(p);
    assert_eq!(names, want);
    assert!(lines.iter().all(|(_, qid, _)| qid == "all"));
    assert!(
        stdout.starts_with("num_q                 \tall\t40\n"),
        "{stdout}"
    );

    let expected = expected("graded");
    for (name, _, value) in &lines {
        let want = expected["aggregate"][name].as_f64().unwrap();
        let shown = if name.starts_with("num_") {
            format!("{}", want as i64)
        } else {
            format!("{want:.4}")
        };
        assert_eq!(value, &shown, "{name}");
    }
}

#[test]
fn per_query_lines_come_first_in_query_order() {
    let stdout = eval(&[
        "-q",
        "-m",
        "P.5",
        "-m",
        "ndcg_cut.10",
        "-m",
        "num_q",
        &path("ties.qrels"),
        &path("ties.run"),
    ]);
    let lines = parse_lines(&stdout);
    let shape: Vec<(&str, &str)> = lines
        .iter()
        .map(|(name, qid, _)| (name.as_str(), qid.as_str()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("P_5", "t1"),
            ("ndcg_cut_10", "t1"),
            ("P_5", "t2"),
            ("ndcg_cut_10", "t2"),
            ("P_5", "t3"),
            ("ndcg_cut_10", "t3"),
            // num_q has no per-query value in trec_eval.
            ("num_q", "all"),
            ("P_5", "all"),
            ("ndcg_cut_10", "all"),
        ]
    );
    let expected = expected("ties");
    let t2 = expected["per_query"]["t2"]["ndcg_cut_10"].as_f64().unwrap();
    assert_eq!(lines[3].2, format!("{t2:.4}"));
}

#[test]
fn complete_averages_over_every_judged_query() {
    let qrels = path("graded.qrels");
    let run = path("graded.run");
    let expected = expected("graded");
    let default = eval(&["-m", "map", "-m", "num_q", &qrels, &run]);
    let complete = eval(&["-c", "-m", "map", "-m", "num_q", &qrels, &run]);
    let map = |case: &str| expected[case]["map"].as_f64().unwrap();
    assert_eq!(
        default,
        format!(
            "num_q                 \tall\t40\nmap                   \tall\t{:.4}\n",
            map("aggregate")
        )
    );
    assert_eq!(
        complete,
        format!(
            "num_q                 \tall\t42\nmap                   \tall\t{:.4}\n",
            map("aggregate_complete")
        )
    );
    // With -q -c, queries missing from the run are listed, with their judged relevant count.
    let listed = eval(&["-q", "-c", "-m", "num_rel", &qrels, &run]);
    let q44 = expected["missing_queries"]["q44"]["num_rel"]
        .as_f64()
        .unwrap();
    assert!(listed.contains(&format!("num_rel               \tq44\t{}\n", q44 as i64)));
}

#[test]
fn json_output_holds_exact_values() {
    let qrels = path("beir.tsv");
    let run = path("beir.run");
    let expected = expected("beir");
    let summary: Value = serde_json::from_str(&eval(&[
        "--json",
        "-m",
        "ndcg_cut.10",
        "-m",
        "num_rel",
        &qrels,
        &run,
    ]))
    .unwrap();
    assert!(summary.get("per_query").is_none());
    let ndcg = summary["aggregate"]["ndcg_cut_10"].as_f64().unwrap();
    let want = expected["aggregate"]["ndcg_cut_10"].as_f64().unwrap();
    assert!((ndcg - want).abs() < 1e-12, "{ndcg} vs {want}");
    // Counts are integers, as trec_eval prints them.
    assert_eq!(
        summary["aggregate"]["num_rel"],
        expected["aggregate"]["num_rel"].as_f64().unwrap() as i64
    );

    let full: Value =
        serde_json::from_str(&eval(&["--json", "-q", "-m", "recip_rank", &qrels, &run])).unwrap();
    let per_query = full["per_query"].as_object().unwrap();
    let want_queries = expected["per_query"].as_object().unwrap();
    assert_eq!(
        per_query.keys().collect::<Vec<_>>(),
        want_queries.keys().collect::<Vec<_>>()
    );
    for (qid, values) in per_query {
        let got = values["recip_rank"].as_f64().unwrap();
        let want = want_queries[qid]["recip_rank"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{qid}: {got} vs {want}");
    }
}

#[test]
fn malformed_run_line_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("bad.run");
    std::fs::write(&run, "t1 Q0 a 1 0.5 x\nt1 Q0 b 2 0.4 x\nt1 Q0 c 3 high x\n").unwrap();
    Command::cargo_bin("repro")
        .unwrap()
        .args(["eval", &path("ties.qrels")])
        .arg(&run)
        .assert()
        .failure()
        .stderr(contains("bad.run:3:"))
        .stderr(contains("`high`"));
}

#[test]
fn unknown_measure_and_missing_file_are_errors() {
    Command::cargo_bin("repro")
        .unwrap()
        .args([
            "eval",
            "-m",
            "ndgc_cut.10",
            &path("ties.qrels"),
            &path("ties.run"),
        ])
        .assert()
        .failure()
        .stderr(contains("unknown measure `ndgc_cut`"))
        .stderr(contains("ndcg_cut"));
    Command::cargo_bin("repro")
        .unwrap()
        .args(["eval", &path("ties.qrels"), "/nonexistent/run.trec"])
        .assert()
        .failure()
        .stderr(contains("/nonexistent/run.trec"));
}

#[test]
fn run_and_qrels_without_common_queries_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("other.run");
    std::fs::write(&run, "zz Q0 a 1 0.5 x\n").unwrap();
    Command::cargo_bin("repro")
        .unwrap()
        .args(["eval", &path("ties.qrels")])
        .arg(&run)
        .assert()
        .failure()
        .stderr(contains("no query has both judgments and a ranking"));
}
