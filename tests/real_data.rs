//! Real model on real data: all-MiniLM-L6-v2 probed on SciFact and Cranfield from the data
//! mirror, through the `repro` binary as a user runs it.
//!
//! Needs `make models` and the mirror (`REPRO_MIRROR`, default `../shared/data`). These are the
//! slowest tests of the suite (minutes): they encode whole corpora.

mod common;

use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

fn mirror() -> PathBuf {
    let dir = std::env::var_os("REPRO_MIRROR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    assert!(
        dir.join("scifact").is_dir(),
        "data mirror {} has no scifact/",
        dir.display()
    );
    dir
}

/// Runs `repro probe --json` with `args` and returns its outcome.
fn probe(data_dir: &std::path::Path, args: &[&str]) -> Value {
    let output = Command::cargo_bin("repro")
        .unwrap()
        .env("REPRO_MIRROR", mirror())
        .arg("--quiet")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["probe", "--json", "--model"])
        .arg(common::minilm_dir())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn metric(outcome: &Value, layer: u64, pooling: &str, measure: &str) -> f64 {
    outcome["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|cell| cell["layer"] == layer && cell["pooling"] == pooling)
        .unwrap_or_else(|| panic!("no cell for layer {layer} {pooling}"))["metrics"][measure]
        .as_f64()
        .unwrap()
}

/// The published figure: MTEB reports nDCG@10 = 0.6451 for all-MiniLM-L6-v2 on SciFact test
/// (max_seq_length 256, mean pooling, title + " " + text).
#[test]
fn scifact_last_layer_mean_matches_the_published_ndcg() {
    let data_dir = tempfile::tempdir().unwrap();
    let outcome = probe(
        data_dir.path(),
        &[
            "--dataset",
            "scifact",
            "--layers",
            "6",
            "--pooling",
            "mean",
            "--max-len",
            "256",
        ],
    );
    assert_eq!(outcome["queries"], 300);
    assert_eq!(outcome["documents"], 5183);
    let ndcg = metric(&outcome, 6, "mean", "ndcg_cut_10");
    assert!((ndcg - 0.645).abs() <= 0.002, "nDCG@10 = {ndcg}");
}

/// Cranfield, imported from the raw SMART files in the mirror: the last layer with mean
/// pooling (value measured with this encoder; the test guards against regressions in the
/// SMART import, the query-id and relevance-code conventions, and the encoder).
#[test]
fn cranfield_from_raw_smart_files_probes_to_the_measured_ndcg() {
    let data_dir = tempfile::tempdir().unwrap();
    let outcome = probe(
        data_dir.path(),
        &[
            "--dataset",
            "cranfield",
            "--layers",
            "0,6",
            "--pooling",
            "mean,cls",
            "--max-len",
            "256",
        ],
    );
    assert_eq!(outcome["queries"], 225);
    assert_eq!(outcome["documents"], 1400);
    let ndcg = metric(&outcome, 6, "mean", "ndcg_cut_10");
    assert!((ndcg - 0.3817).abs() <= 0.002, "nDCG@10 = {ndcg}");
    let embedding_layer = metric(&outcome, 0, "mean", "ndcg_cut_10");
    assert!(
        (embedding_layer - 0.1154).abs() <= 0.002,
        "layer 0 nDCG@10 = {embedding_layer}"
    );
}

/// SciFact's BEIR splits overlap: 196 of the 300 test claims have a relevant abstract that is
/// also a train positive, and two repeat a train claim word for word (test 870 is train 871,
/// test 1292 is train 1291), both among the 196; 104 claims are unseen.
#[test]
fn scifact_test_overlaps_with_its_train_split_as_measured() {
    let overlap = repro::data::overlap(&mirror().join("scifact"), "test", "train").unwrap();
    assert_eq!(overlap.evaluated.len(), 300);
    assert_eq!(overlap.train_positives.len(), 196);
    let repeats: Vec<(&str, Vec<&str>, bool)> = overlap
        .repeated_text
        .iter()
        .map(|r| {
            let train: Vec<&str> = r.train_queries.iter().map(String::as_str).collect();
            (r.query.as_str(), train, r.exact)
        })
        .collect();
    assert_eq!(
        repeats,
        [("870", vec!["871"], true), ("1292", vec!["1291"], true)]
    );
    assert_eq!(overlap.unseen.len(), 104);
}
