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

/// The smoke experiment (`experiments/smoke.toml`), whose model and dataset paths
/// [`Fixture::write_smoke`] points at the fixture's.
const SMOKE: &str = include_str!("../../experiments/smoke.toml");

/// The miniature distillation study (`tests/fixtures/distill_tiny.toml`) named `name`, with
/// `train_ce` and `rerank` lines added to those tables and `rest` (tables, sweeps) appended.
pub fn mini_distill(name: &str, train_ce: &str, rerank: &str, rest: &str) -> String {
    let template = include_str!("../fixtures/distill_tiny.toml");
    let text = template
        .replace("name = \"NAME\"", &format!("name = {name:?}"))
        .replace("# TRAIN_CE", train_ce)
        .replace("# RERANK", rerank);
    format!("{text}\n{rest}")
}

/// The committed tiny BEIR dataset.
pub fn smoke_dataset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smoke/beir")
}

/// One judgment of a test dataset: query, document, grade.
pub type Judgment<'a> = (&'a str, &'a str, i32);

/// Writes a small BEIR dataset into `dir`: documents `(id, text)`, queries `(id, text)`
/// and, per split, its judgments.
pub fn write_beir(
    dir: &Path,
    documents: &[(&str, &str)],
    queries: &[(&str, &str)],
    splits: &[(&str, &[Judgment])],
) {
    let lines = |items: &[(&str, &str)], title: bool| -> String {
        items
            .iter()
            .map(|(id, text)| {
                let mut line = serde_json::json!({"_id": id, "text": text});
                if title {
                    line["title"] = "".into();
                }
                format!("{line}\n")
            })
            .collect()
    };
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    std::fs::write(dir.join("corpus.jsonl"), lines(documents, true)).unwrap();
    std::fs::write(dir.join("queries.jsonl"), lines(queries, false)).unwrap();
    for (split, judgments) in splits {
        let mut text = "query-id\tcorpus-id\tscore\n".to_string();
        for (query, document, grade) in *judgments {
            text.push_str(&format!("{query}\t{document}\t{grade}\n"));
        }
        std::fs::write(dir.join(format!("qrels/{split}.tsv")), text).unwrap();
    }
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

    /// The fixture with the smoke experiment written ([`Fixture::write_smoke`], unedited).
    pub fn smoke() -> Self {
        let fixture = Self::new();
        fixture.write_smoke(|text| text.to_string());
        fixture
    }

    /// The tiny model's directory.
    pub fn model(&self) -> PathBuf {
        self.dir.path().join("tiny-bert")
    }

    /// Writes the experiment file from `text`, where the strings `"TINY"` and `"DATASET"`
    /// stand for the tiny model and the committed smoke dataset.
    pub fn write_experiment(&self, text: &str) {
        let text = text
            .replace("\"TINY\"", &format!("{:?}", self.model()))
            .replace("\"DATASET\"", &format!("{:?}", smoke_dataset()));
        std::fs::write(&self.experiment, text).unwrap();
    }

    /// Writes the smoke experiment after `edit`, which gets it with absolute paths to the
    /// fixture's model and the smoke dataset.
    pub fn write_smoke(&self, mut edit: impl FnMut(&str) -> String) {
        let text = SMOKE
            .replace("\"target/smoke/tiny-bert\"", &format!("{:?}", self.model()))
            .replace(
                "\"tests/fixtures/smoke/beir\"",
                &format!("{:?}", smoke_dataset()),
            );
        std::fs::write(&self.experiment, edit(&text)).unwrap();
    }

    /// Points the smoke experiment at a copy of the smoke dataset in the fixture's directory,
    /// for tests that damage or edit it; returns the copy.
    pub fn use_a_copy_of_the_dataset(&self) -> PathBuf {
        let source = smoke_dataset();
        let copy = self.dir.path().join("dataset");
        std::fs::create_dir_all(copy.join("qrels")).unwrap();
        for file in [
            "corpus.jsonl",
            "queries.jsonl",
            "qrels/test.tsv",
            "qrels/train.tsv",
        ] {
            std::fs::copy(source.join(file), copy.join(file)).unwrap();
        }
        self.write_smoke(|text| text.replace(&format!("{source:?}"), &format!("{copy:?}")));
        copy
    }

    /// The results store, opened for the tests' own queries.
    pub fn store(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.results().join("repro.sqlite")).unwrap()
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
        self.run_with(&[])
    }

    /// [`Fixture::run`] with more arguments.
    pub fn run_with(&self, extra: &[&str]) -> Value {
        self.run_from(self.dir.path(), extra)
    }

    /// [`Fixture::run_with`] from the working directory `dir` (the git checkout, for tests of
    /// the provenance a run records).
    pub fn run_from(&self, dir: &Path, extra: &[&str]) -> Value {
        let output = self
            .repro()
            .current_dir(dir)
            .arg("run")
            .arg(&self.experiment)
            .arg("--json")
            .args(extra)
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
