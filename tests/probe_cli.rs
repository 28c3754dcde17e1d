//! `repro probe` end to end on a tiny random BERT and a tiny BEIR dataset built here.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::Fixture;
use predicates::str::contains;

fn write_dataset(dir: &Path) {
    let corpus = [
        ("d1", "Cats", "the cat sat on the mat"),
        ("d2", "Dogs", "the dog sat on the mat"),
        ("d3", "Wings", "shock wave in the wing boundary layer"),
        ("d4", "Heat", "high heat flow and pressure"),
        ("d5", "", "cancer risk study of gene and protein"),
    ];
    let lines: Vec<String> = corpus
        .iter()
        .map(|(id, title, text)| {
            serde_json::json!({"_id": id, "title": title, "text": text}).to_string()
        })
        .collect();
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    std::fs::write(dir.join("corpus.jsonl"), lines.join("\n") + "\n").unwrap();
    let queries = [
        ("q1", "what cat sat"),
        ("q2", "wing shock wave"),
        ("q3", "gene risk"),
        ("q4", "unjudged"),
    ];
    let lines: Vec<String> = queries
        .iter()
        .map(|(id, text)| serde_json::json!({"_id": id, "text": text}).to_string())
        .collect();
    std::fs::write(dir.join("queries.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t1\nq3\td5\t1\n",
    )
    .unwrap();
}

/// The shared fixture's tiny model, and [`write_dataset`]'s dataset in its directory.
fn fixture() -> (Fixture, PathBuf) {
    let fixture = Fixture::new();
    let dataset = fixture.dir.path().join("tiny-beir");
    write_dataset(&dataset);
    (fixture, dataset)
}

fn repro() -> Command {
    let mut command = Command::cargo_bin("repro").unwrap();
    command.arg("--quiet");
    command
}

#[test]
fn probe_reports_every_layer_and_pooling_as_json() {
    let (fixture, dataset) = fixture();
    let output = repro()
        .args([
            "probe",
            "--json",
            "--layers",
            "0-3",
            "--pooling",
            "mean,cls,max",
            "--max-len",
            "32",
        ])
        .arg("--model")
        .arg(fixture.model())
        .arg("--dataset")
        .arg(&dataset)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["queries"], 3, "only judged queries are evaluated");
    assert_eq!(outcome["documents"], 5);
    let cells = outcome["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4 * 3);
    for cell in cells {
        for measure in ["ndcg_cut_10", "recall_100", "mrr_cut_10", "success_10"] {
            let value = cell["metrics"][measure].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&value), "{measure} = {value}");
        }
        // Every judged document is retrieved with k = 100 > corpus size.
        assert_eq!(cell["metrics"]["recall_100"].as_f64().unwrap(), 1.0);
    }
    assert!(
        outcome["corpus_encode"]["texts_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn probe_table_and_saved_runs_agree_with_repro_eval() {
    let (fixture, dataset) = fixture();
    let runs = tempfile::tempdir().unwrap();
    let output = repro()
        .args([
            "probe",
            "--layers",
            "2",
            "--pooling",
            "mean",
            "--input",
            "self_pair",
            "--max-len",
            "32",
        ])
        .arg("--model")
        .arg(fixture.model())
        .arg("--dataset")
        .arg(&dataset)
        .arg("--save-runs")
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("nDCG@10"), "{table}");
    let header = table
        .lines()
        .find(|line| line.starts_with("layer"))
        .unwrap();
    let column = header
        .split_whitespace()
        .position(|name| name == "nDCG@10")
        .unwrap();
    let row = table.lines().find(|line| line.starts_with("2 ")).unwrap();
    let ndcg: f64 = row.split_whitespace().nth(column).unwrap().parse().unwrap();

    let run = runs.path().join("layer2_mean.trec");
    let evaluated = repro()
        .args(["eval", "-m", "ndcg_cut.10"])
        .arg(dataset.join("qrels/test.tsv"))
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        evaluated.status.success(),
        "{}",
        String::from_utf8_lossy(&evaluated.stderr)
    );
    let line = String::from_utf8(evaluated.stdout).unwrap();
    let value: f64 = line.split('\t').nth(2).unwrap().trim().parse().unwrap();
    assert!((value - ndcg).abs() < 1e-4, "probe {ndcg} vs eval {value}");
}

#[test]
fn missing_model_file_is_one_clear_error() {
    let (fixture, dataset) = fixture();
    std::fs::remove_file(fixture.model().join("model.safetensors")).unwrap();
    repro()
        .args(["probe", "--dataset"])
        .arg(&dataset)
        .arg("--model")
        .arg(fixture.model())
        .assert()
        .failure()
        .stderr(contains("model.safetensors or pytorch_model.bin"));
}

#[test]
fn unknown_dataset_name_is_one_clear_error() {
    let (fixture, _) = fixture();
    let empty = tempfile::tempdir().unwrap();
    repro()
        .env_remove("REPRO_MIRROR")
        .arg("--data-dir")
        .arg(empty.path())
        .args(["probe", "--dataset", "no-such-dataset", "--model"])
        .arg(fixture.model())
        .assert()
        .failure()
        .stderr(contains("no-such-dataset"));
}

#[test]
fn bad_probe_file_names_file_line_and_key() {
    let (fixture, dataset) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probe.toml");
    std::fs::write(
        &config,
        "[probe]\nlayers = \"0-2\"\npoolling = [\"mean\"]\n",
    )
    .unwrap();
    repro()
        .args(["probe", "--config"])
        .arg(&config)
        .arg("--model")
        .arg(fixture.model())
        .arg("--dataset")
        .arg(&dataset)
        .assert()
        .failure()
        .stderr(contains("probe.toml:3:1"))
        .stderr(contains("poolling"));
}

#[test]
fn layer_beyond_depth_in_probe_file_points_at_its_line() {
    let (fixture, dataset) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probe.toml");
    std::fs::write(&config, "[probe]\n\nlayers = \"0-5\"\n").unwrap();
    repro()
        .args(["probe", "--config"])
        .arg(&config)
        .arg("--model")
        .arg(fixture.model())
        .arg("--dataset")
        .arg(&dataset)
        .assert()
        .failure()
        .stderr(contains(
            "probe.toml:3:10: layers: layer 4 is beyond the model's depth 3",
        ));
}
