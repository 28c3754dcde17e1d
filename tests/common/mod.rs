//! What the integration tests share: a temporary directory holding a tiny random BERT
//! (built here, never downloaded), an experiment file and a results directory, and a
//! `repro` command pointed at them; where the real model is.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use repro::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
use serde_json::Value;

/// all-MiniLM-L6-v2 for the real-model tests: `REPRO_MINILM`, or `models/all-MiniLM-L6-v2`
/// as `make models` provisions it (CI does before `make test`).
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("REPRO_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is not provisioned: run `make models` first",
        dir.display()
    );
    dir
}

/// The data mirror: `REPRO_MIRROR`, else `../shared/data` beside the crate.
pub fn mirror() -> PathBuf {
    let mirror = std::env::var_os("REPRO_MIRROR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    assert!(
        mirror.join("scifact").is_dir() && mirror.join("cranfield").is_dir(),
        "these tests read the data mirror at {} (set REPRO_MIRROR)",
        mirror.display()
    );
    mirror
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub experiment: PathBuf,
}

impl Fixture {
    /// A tiny random BERT (3 layers) in a fresh temporary directory; no experiment yet.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_random_bert(
            &dir.path().join("tiny-bert"),
            &tiny_config(3, TINY_VOCAB.len()),
            TINY_VOCAB,
            7,
            false,
        )
        .unwrap();
        Fixture {
            experiment: dir.path().join("experiment.toml"),
            dir,
        }
    }

    /// Writes the experiment file from `text`, where the strings `"TINY"` and `"DATASET"`
    /// stand for the tiny model and the committed smoke dataset.
    pub fn write_experiment(&self, text: &str) {
        let dataset = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smoke/beir");
        let text = text
            .replace(
                "\"TINY\"",
                &format!("{:?}", self.dir.path().join("tiny-bert")),
            )
            .replace("\"DATASET\"", &format!("{dataset:?}"));
        std::fs::write(&self.experiment, text).unwrap();
    }

    pub fn results(&self) -> PathBuf {
        self.dir.path().join("results")
    }

    pub fn repro(&self) -> Command {
        let mut command = Command::cargo_bin("repro").unwrap();
        command
            .arg("--quiet")
            .current_dir(self.dir.path())
            .env("REPRO_RESULTS", self.results())
            .env("REPRO_DATA", self.dir.path().join("data"))
            .env_remove("REPRO_MIRROR")
            .env_remove("REPRO_FAIL_STAGE");
        command
    }

    /// `repro run --json` that must succeed; returns its summary.
    pub fn run(&self) -> Value {
        let output = self
            .repro()
            .arg("run")
            .arg(&self.experiment)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
}
