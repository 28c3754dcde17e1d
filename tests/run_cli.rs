//! `repro run`, `check` and `status` end to end: the smoke experiment (`experiments/smoke.toml`)
//! on a tiny random BERT built here and the committed tiny dataset.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Fixture;
use serde_json::Value;

fn count(connection: &rusqlite::Connection, sql: &str) -> i64 {
    connection.query_row(sql, [], |row| row.get(0)).unwrap()
}

fn summary(outcome: &Value, field: &str) -> u64 {
    outcome["summary"][field].as_u64().unwrap()
}

/// 3 layers + the embedding output, 2 poolings, 2 inputs: 16 cells, 2 encodes + 16 evals.
const CELLS: u64 = 16;
const TASKS: u64 = 18;

#[test]
fn second_run_executes_nothing() {
    let fixture = Fixture::smoke();
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    let first = fixture.run_from(checkout, &[]);
    assert_eq!(first["status"], "succeeded");
    assert_eq!(summary(&first, "total"), TASKS);
    assert_eq!(summary(&first, "executed"), TASKS);
    assert_eq!(first["encode_tasks"], 2, "one encode per input format");
    let cells = first["cells"].as_array().unwrap();
    assert_eq!(cells.len() as u64, CELLS);
    for cell in cells {
        let ndcg = cell["metrics"]["ndcg_cut_10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ndcg));
        assert_eq!(cell["metrics"]["recall_100"].as_f64().unwrap(), 1.0);
    }

    let started = Instant::now();
    let second = fixture.run_from(checkout, &[]);
    let elapsed = started.elapsed();
    assert_eq!(summary(&second, "executed"), 0);
    assert_eq!(summary(&second, "cached"), TASKS);
    assert_eq!(
        second["cells"], first["cells"],
        "same results from the store"
    );
    eprintln!("warm run: {elapsed:?}");

    let store = fixture.store();
    assert_eq!(count(&store, "SELECT count(*) FROM runs"), 2);
    assert_eq!(count(&store, "SELECT count(*) FROM attempts"), TASKS as i64);
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM runs WHERE cpu_model != '' AND hostname != '' AND threads > 0
                 AND rustc_version LIKE 'rustc %' AND ended_at IS NOT NULL"
        ),
        2
    );
    // The runs ran in this checkout (the tests' working directory).
    if Path::new(env!("CARGO_MANIFEST_DIR")).join(".git").exists() {
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM runs WHERE length(git_commit) = 40 AND git_dirty IS NOT NULL"
            ),
            2
        );
    }
}

#[test]
fn changing_one_axis_value_reruns_only_the_affected_tasks() {
    let fixture = Fixture::smoke();
    fixture.run();

    // A retrieval setting: every eval task re-runs, no encode.
    fixture.write_smoke(|text| text.replace("top_k = 100", "top_k = 50"));
    let explained = fixture
        .repro()
        .arg("run")
        .arg(&fixture.experiment)
        .arg("--explain")
        .output()
        .unwrap();
    let explanation = String::from_utf8(explained.stdout).unwrap();
    assert!(
        explanation.contains("changed params.top_k: 100 → 50"),
        "{explanation}"
    );
    assert!(
        explanation.contains("# 16 to run, 2 cached, 0 blocked"),
        "{explanation}"
    );
    let outcome = fixture.run();
    assert_eq!(summary(&outcome, "executed"), 16);
    assert_eq!(summary(&outcome, "cached"), 2);

    // One more pooling: only its new eval tasks; the encodes already hold every pooling.
    fixture.write_smoke(|text| {
        text.replace("top_k = 100", "top_k = 50").replace(
            "pooling = [\"mean\", \"cls\"]",
            "pooling = [\"mean\", \"cls\", \"max\"]",
        )
    });
    let outcome = fixture.run();
    assert_eq!(summary(&outcome, "executed"), 8);
    assert_eq!(summary(&outcome, "cached"), 18);

    // An encode setting: everything downstream of the encodes.
    fixture.write_smoke(|text| {
        text.replace("top_k = 100", "top_k = 50")
            .replace(
                "pooling = [\"mean\", \"cls\"]",
                "pooling = [\"mean\", \"cls\", \"max\"]",
            )
            .replace("batch = 4", "batch = 3")
    });
    let outcome = fixture.run();
    assert_eq!(summary(&outcome, "executed"), 26);

    // --force re-runs a stage even though it is cached.
    let outcome = fixture.run_with(&["--force", "eval"]);
    assert_eq!(summary(&outcome, "executed"), 24);
    assert_eq!(summary(&outcome, "cached"), 2);
}

#[test]
fn a_run_killed_mid_sweep_resumes_to_a_complete_consistent_store() {
    let fixture = Fixture::smoke();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("repro"))
        .arg("--quiet")
        .arg("run")
        .arg(&fixture.experiment)
        .args(["--jobs", "1"])
        .env("REPRO_RESULTS", fixture.results())
        .env("REPRO_DATA", fixture.dir.path().join("data"))
        .env_remove("REPRO_MIRROR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a few tasks are recorded, while others are still to come.
    let deadline = Instant::now() + Duration::from_secs(120);
    let store_path = fixture.results().join("repro.sqlite");
    loop {
        assert!(Instant::now() < deadline, "the run never got going");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed"
        );
        if store_path.exists() {
            let done = rusqlite::Connection::open(&store_path)
                .ok()
                .and_then(|store| {
                    store
                        .query_row(
                            "SELECT count(*) FROM tasks WHERE status = 'succeeded'",
                            [],
                            |row| row.get::<_, i64>(0),
                        )
                        .ok()
                })
                .unwrap_or(0);
            if done >= 4 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let interrupted_at = count(
        &fixture.store(),
        "SELECT count(*) FROM tasks WHERE status = 'succeeded'",
    );
    assert!((interrupted_at as u64) < TASKS, "killed too late");
    // Until the next run records it, the store says running; status knows better.
    let status = fixture.repro().args(["status", "smoke"]).output().unwrap();
    let text = String::from_utf8(status.stdout).unwrap();
    assert!(text.contains("abandoned (its scheduler is gone)"), "{text}");
    assert!(!text.contains(": running"), "{text}");

    let outcome = fixture.run();
    assert_eq!(outcome["status"], "succeeded");
    assert_eq!(
        summary(&outcome, "cached") as i64,
        interrupted_at,
        "finished tasks are not redone"
    );
    let store = fixture.store();
    assert_eq!(count(&store, "SELECT count(*) FROM tasks"), TASKS as i64);
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM tasks WHERE status = 'succeeded'"
        ),
        TASKS as i64
    );
    // Every cell has its four measures and its count of queries evaluated, once.
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM metrics m JOIN cell_tasks ct ON ct.task_key = m.task_key
             WHERE ct.stage = 'eval'"
        ),
        CELLS as i64 * 5
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM (SELECT task_key, measure FROM metrics GROUP BY 1, 2 HAVING count(*) > 1)"
        ),
        0
    );
    // The killed run is recorded as interrupted; every task has one succeeded attempt and
    // any attempt cut short is kept as lost, not overwritten.
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM runs WHERE status = 'interrupted'"
        ),
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM attempts WHERE status = 'succeeded'"
        ),
        TASKS as i64
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM attempts WHERE status NOT IN ('succeeded', 'lost')"
        ),
        0
    );
    let leftovers = std::fs::read_dir(fixture.results().join("cache"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .count();
    assert_eq!(leftovers, 0, "partial artifacts are discarded");
}

#[test]
fn a_failed_task_is_recorded_and_only_it_is_retried() {
    let fixture = Fixture::smoke();
    let output = fixture
        .repro()
        .env("REPRO_FAIL_STAGE", "encode")
        .arg("run")
        .arg(&fixture.experiment)
        .arg("--json")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "failed");
    assert_eq!(summary(&outcome, "failed"), 1, "fail-fast: one encode ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1 task(s) failed"), "{stderr}");

    let store = fixture.store();
    let (exit_code, error): (i64, String) = store
        .query_row(
            "SELECT exit_code, error FROM attempts WHERE status = 'failed'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(exit_code, 1);
    assert!(error.contains("injected failure"), "{error}");

    // Without --retry-failed the failed task stays failed and blocks its evals.
    let output = fixture
        .repro()
        .arg("run")
        .arg(&fixture.experiment)
        .arg("--explain")
        .output()
        .unwrap();
    let explanation = String::from_utf8(output.stdout).unwrap();
    assert!(
        explanation.contains("failed earlier (use --retry-failed"),
        "{explanation}"
    );

    let outcome = fixture.run_with(&["--retry-failed"]);
    assert_eq!(outcome["status"], "succeeded");
    assert_eq!(summary(&outcome, "executed"), TASKS);
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM attempts WHERE status = 'failed'"
        ),
        1,
        "the failed attempt is kept"
    );

    let status = fixture
        .repro()
        .args(["status", "smoke", "--tasks"])
        .output()
        .unwrap();
    let text = String::from_utf8(status.stdout).unwrap();
    assert!(text.contains("## smoke"), "{text}");
    assert!(text.contains("18 succeeded"), "{text}");
    assert!(
        text.lines().any(|line| line.starts_with("input")
            && line.contains("layer")
            && line.contains("ndcg_cut_10")),
        "the cells table shows the varying parameters and the measures: {text}"
    );
    assert_eq!(
        text.lines()
            .filter(|line| line.starts_with("single ") || line.starts_with("self_pair "))
            .count(),
        CELLS as usize,
        "{text}"
    );
}

/// A worker killed by a signal from outside (the OOM killer's SIGKILL) is recorded `killed`,
/// not failed: the next plain run runs it again, once; killed twice in a row, it is failed.
#[test]
fn a_killed_worker_runs_again_once() {
    let fixture = Fixture::smoke();
    let killed_run = || {
        let output = fixture
            .repro()
            .env("REPRO_KILL_STAGE", "encode")
            .arg("run")
            .arg(&fixture.experiment)
            .output()
            .unwrap();
        assert!(!output.status.success());
    };
    killed_run();
    let store = fixture.store();
    let error: String = store
        .query_row(
            "SELECT error FROM attempts WHERE status = 'killed'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(error.contains("killed by signal 9"), "{error}");
    let explain = |fixture: &Fixture| {
        let output = fixture
            .repro()
            .arg("run")
            .arg(&fixture.experiment)
            .arg("--explain")
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(
        !explain(&fixture).contains("failed earlier"),
        "a killed task is not failed"
    );

    killed_run();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM attempts WHERE status = 'killed'"
        ),
        2
    );
    assert!(explain(&fixture).contains("failed earlier (use --retry-failed"));
    let outcome = fixture.run_with(&["--retry-failed"]);
    assert_eq!(outcome["status"], "succeeded");
}

#[test]
fn a_sharded_encode_gives_the_unsharded_results() {
    let fixture = Fixture::smoke();
    let whole = fixture.run();
    fixture.write_smoke(|text| text.replace("batch = 4\n", "batch = 2\nshards = 3\n"));
    let sharded_results = fixture.dir.path().join("sharded");
    let output = fixture
        .repro()
        .env("REPRO_RESULTS", &sharded_results)
        .args(["run", "--json", "-j", "2"])
        .arg(&fixture.experiment)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sharded: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(sharded["encode_tasks"], 6, "2 encodes × 3 shards");
    assert_eq!(summary(&sharded, "executed"), TASKS + 4);
    // Same cells, same values; only the parameter naming the shards differs.
    let values = |outcome: &Value| -> Vec<Value> {
        outcome["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cell| cell["metrics"].clone())
            .collect()
    };
    assert_eq!(values(&sharded), values(&whole));
    let per_query = |results: &Path| -> Vec<(String, String, f64)> {
        let store = rusqlite::Connection::open(results.join("repro.sqlite")).unwrap();
        let mut statement = store
            .prepare(
                "SELECT c.position, q.query_id, q.measure, q.value FROM query_metrics q
                 JOIN cell_tasks ct ON ct.task_key = q.task_key AND ct.stage = 'eval'
                 JOIN cells c ON c.id = ct.cell_id ORDER BY 1, 2, 3",
            )
            .unwrap();
        let rows = statement
            .query_map([], |row| {
                Ok((
                    format!("{}:{}", row.get::<_, i64>(0)?, row.get::<_, String>(1)?),
                    row.get(2)?,
                    row.get(3)?,
                ))
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let expected = per_query(&fixture.results());
    assert!(!expected.is_empty());
    assert_eq!(
        per_query(&sharded_results),
        expected,
        "every per-query value"
    );
}

#[test]
fn malformed_experiment_files_name_file_line_and_column() {
    let fixture = Fixture::smoke();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            "[experiment]\nschema = 1\nname = \"x\"\nseed = [1]\n".into(),
            ":4:1: unknown field `seed`",
        ),
        ("TOML syntax", "[experiment\nschema = 1\n".into(), ":1:"),
        (
            "wrong type",
            "[experiment]\nschema = \"one\"\nname = \"x\"\n".into(),
            ":2:10: invalid type",
        ),
        (
            "schema version",
            "[experiment]\nschema = 9\nname = \"x\"\n".into(),
            ":2:10: experiment.schema",
        ),
        ("unknown pooling", String::new(), "unknown variant `avg`"),
        (
            "layer beyond depth",
            String::new(),
            "layer 4 is beyond the model's depth 3",
        ),
        ("unknown dataset", String::new(), "unknown dataset `nope`"),
        ("unknown model directory", String::new(), "models.tiny"),
        ("zip lengths", String::new(), "equal lengths"),
    ];
    for (kind, text, needle) in cases {
        let text = if text.is_empty() {
            let mut edited = String::new();
            fixture.write_smoke(|smoke| {
                edited = match kind {
                    "unknown pooling" => smoke.replace("\"cls\"]", "\"avg\"]"),
                    "layer beyond depth" => smoke.replace("layers = \"all\"", "layers = \"0-9\""),
                    "unknown dataset" => smoke.replace("[sweep]", "[sweep]\ndataset = [\"nope\"]"),
                    "unknown model directory" => smoke.replace("tiny-bert\"", "no-such-model\""),
                    "zip lengths" => {
                        format!("{smoke}\n[[sweep.zip]]\neval.top_k = [1, 2]\nencode.batch = [1]\n")
                    }
                    _ => unreachable!(),
                };
                edited.clone()
            });
            edited
        } else {
            text
        };
        std::fs::write(&fixture.experiment, &text).unwrap();
        let output = fixture
            .repro()
            .arg("check")
            .arg(&fixture.experiment)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{kind}: accepted");
        let stderr = String::from_utf8(output.stderr).unwrap();
        let location = format!("{}:", fixture.experiment.display());
        assert!(stderr.contains(&location), "{kind}: {stderr}");
        let after = &stderr[stderr.find(&location).unwrap() + location.len()..];
        let mut numbers = after.split(':');
        for part in ["line", "column"] {
            let number = numbers.next().unwrap_or("");
            assert!(
                number.parse::<usize>().is_ok(),
                "{kind}: no {part} number in {stderr}"
            );
        }
        assert!(stderr.contains(needle), "{kind}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{kind}: one message: {stderr}");
    }
}

#[test]
fn check_reports_the_plan_without_running() {
    let fixture = Fixture::smoke();
    fixture
        .repro()
        .arg("check")
        .arg(&fixture.experiment)
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "16 cells, 18 tasks (2 encode, 16 eval)",
        ));
    assert!(!fixture.results().exists(), "check writes no results");
}

/// `check` reads what it can cheaply: a dataset without documents or judgments, ids a run file
/// cannot hold, truncated weights and a missing tokenizer stop it, each named.
#[test]
fn check_reads_the_content_of_datasets_and_models() {
    let fixture = Fixture::smoke();
    let copy = fixture.use_a_copy_of_the_dataset();
    let check = || {
        fixture
            .repro()
            .arg("check")
            .arg(&fixture.experiment)
            .assert()
    };
    check().success();

    let corpus = std::fs::read_to_string(copy.join("corpus.jsonl")).unwrap();
    let qrels = std::fs::read_to_string(copy.join("qrels/test.tsv")).unwrap();
    let broken = [
        ("corpus.jsonl", String::new(), "holds no document"),
        (
            "corpus.jsonl",
            corpus.replacen("\"d1\"", "\"d 1\"", 1),
            "holds whitespace",
        ),
        (
            "qrels/test.tsv",
            "query-id\tcorpus-id\tscore\n".to_string(),
            "judges no query",
        ),
    ];
    for (file, content, needle) in broken {
        let original = std::fs::read_to_string(copy.join(file)).unwrap();
        std::fs::write(copy.join(file), content).unwrap();
        check().failure().stderr(predicates::str::contains(needle));
        std::fs::write(copy.join(file), original).unwrap();
    }
    assert_eq!(
        qrels,
        std::fs::read_to_string(copy.join("qrels/test.tsv")).unwrap()
    );

    let model = fixture.dir.path().join("tiny-bert");
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(
        model.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    check()
        .failure()
        .stderr(predicates::str::contains("truncated"));
    std::fs::write(model.join("model.safetensors"), &weights).unwrap();
    std::fs::remove_file(model.join("vocab.txt")).unwrap();
    check()
        .failure()
        .stderr(predicates::str::contains("models.tiny"));
}

/// A split without judgments stops `check`, named by the field that asked for it: the
/// evaluated split by its dataset, a training split by the model trained on it; an unusable
/// training split likewise.
#[test]
fn a_split_without_judgments_is_named_by_the_field_that_asks_for_it() {
    let fixture = Fixture::smoke();
    let check = || {
        fixture
            .repro()
            .arg("check")
            .arg(&fixture.experiment)
            .assert()
            .failure()
    };
    fixture.write_smoke(|text| text.replace("split = \"test\"", "split = \"dev\""));
    check().stderr(predicates::str::contains(
        "datasets.tiny: split `dev` has no judgments",
    ));

    let copy = fixture.use_a_copy_of_the_dataset();
    let distill = common::mini_distill("distill_splits", "", "", "")
        .replace("\"DATASET\"", &format!("{copy:?}"));
    fixture.write_experiment(&distill.replace(
        "train_dataset = \"tiny\"\nnegatives_from",
        "train_dataset = \"tiny\"\ntrain_split = \"dev\"\nnegatives_from",
    ));
    check().stderr(predicates::str::contains(
        "models.teacher: train_split `dev` of dataset `tiny` has no judgments",
    ));

    fixture.write_experiment(&distill);
    fixture
        .repro()
        .arg("check")
        .arg(&fixture.experiment)
        .assert()
        .success();
    std::fs::write(copy.join("qrels/train.tsv"), "query-id\tcorpus-id\tscore\n").unwrap();
    check()
        .stderr(predicates::str::contains("models.student: "))
        .stderr(predicates::str::contains("judges no query"));
}

/// The smoke dataset evaluated whole and on its unseen subset; `COPY` is the dataset's path.
const UNSEEN: &str = r#"
[experiment]
schema = 1
name = "unseen"

[models.tiny]
source = "TINY"
max_len = 32

[datasets.tiny]
path = COPY

[datasets.tiny_unseen]
path = COPY
queries = "unseen"

[sweep]
layers = [3]

[encode]
batch = 4
"#;

/// An unseen subset is evaluated beside its whole split from the same encode, on fewer
/// queries; it is refused before any compute when the dataset has no train split, and a
/// changed train split re-runs only its eval.
#[test]
fn an_unseen_subset_is_evaluated_beside_its_split_from_the_same_encode() {
    let fixture = Fixture::new();
    let copy = fixture.use_a_copy_of_the_dataset();
    // Training judges only `q5`, relevant to `d3`: test queries q2 and q4 (relevant to d3)
    // overlap, q1 and q3 are unseen.
    let train = copy.join("qrels/train.tsv");
    std::fs::write(&train, "query-id\tcorpus-id\tscore\nq5\td3\t1\n").unwrap();
    fixture.write_experiment(&UNSEEN.replace("COPY", &format!("{copy:?}")));
    let outcome = fixture.run();
    assert_eq!(outcome["status"], "succeeded");
    assert_eq!(outcome["encode_tasks"], 1, "the subset shares the encode");
    assert_eq!(summary(&outcome, "total"), 3);
    let cells = outcome["cells"].as_array().unwrap();
    let cell = |dataset: &str| -> &Value {
        cells
            .iter()
            .find(|cell| cell["params"]["dataset"] == dataset)
            .unwrap_or_else(|| panic!("no cell of {dataset}"))
    };
    let task = |cell: &Value, stage: &str| -> String {
        cell["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|task| task[0] == stage)
            .map(|task| task[1].as_str().unwrap().to_string())
            .unwrap()
    };
    let (whole, unseen) = (cell("tiny"), cell("tiny_unseen"));
    assert_eq!(whole["metrics"]["queries_evaluated"], 4.0);
    assert_eq!(unseen["metrics"]["queries_evaluated"], 2.0);
    assert_eq!(task(whole, "encode"), task(unseen, "encode"));
    assert_ne!(task(whole, "eval"), task(unseen, "eval"));
    let store = fixture.store();
    let scored: Vec<String> = store
        .prepare("SELECT DISTINCT query_id FROM query_metrics WHERE task_key = ?1 ORDER BY 1")
        .unwrap()
        .query_map([task(unseen, "eval")], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(scored, ["q1", "q3"]);

    // A changed training split: the subset's eval runs again, nothing else.
    std::fs::write(&train, "query-id\tcorpus-id\tscore\nq5\td5\t1\n").unwrap();
    let outcome = fixture.run();
    assert_eq!(summary(&outcome, "executed"), 1);
    let cells = outcome["cells"].as_array().unwrap();
    let unseen = cells
        .iter()
        .find(|cell| cell["params"]["dataset"] == "tiny_unseen")
        .unwrap();
    // q3 is relevant to d5 now; q2 and q4 no longer overlap.
    assert_eq!(unseen["metrics"]["queries_evaluated"], 3.0);

    // Without a train split the subset is refused at check time, at its table, by its field.
    std::fs::remove_file(&train).unwrap();
    fixture
        .repro()
        .arg("check")
        .arg(&fixture.experiment)
        .assert()
        .failure()
        .stderr(predicates::str::contains("experiment.toml:13:"))
        .stderr(predicates::str::contains(
            "datasets.tiny_unseen: queries = \"unseen\" needs the training split `train`, \
             which has no judgments",
        ))
        .stderr(predicates::str::contains("qrels/train.tsv is missing"));
}

/// A judgment edited in place, size and modification time put back, is still seen: the
/// change time is part of what a remembered hash is keyed by.
#[test]
fn an_in_place_edit_that_keeps_size_and_mtime_is_seen() {
    let fixture = Fixture::smoke();
    let copy = fixture.use_a_copy_of_the_dataset();
    assert_eq!(fixture.run()["status"], "succeeded");
    let qrels = copy.join("qrels/test.tsv");
    let before = std::fs::metadata(&qrels).unwrap();
    let text = std::fs::read_to_string(&qrels).unwrap();
    let edited = text.replacen("q1\td1\t2", "q1\td1\t1", 1);
    assert_ne!(edited, text);
    assert_eq!(edited.len(), text.len());
    std::fs::write(&qrels, edited).unwrap();
    let file = std::fs::File::options().write(true).open(&qrels).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    assert_eq!(
        std::fs::metadata(&qrels).unwrap().modified().unwrap(),
        before.modified().unwrap()
    );
    let outcome = fixture.run();
    assert!(
        summary(&outcome, "executed") > 0,
        "stale results were served: {outcome}"
    );
}

/// Every cached output carries a manifest: `verify` finds a flipped byte, a deleted file and
/// a changed measure in the store; a run re-runs a damaged task before anything reads it.
#[test]
fn verify_finds_damage_and_a_run_repairs_it() {
    let fixture = Fixture::smoke();
    assert_eq!(fixture.run()["status"], "succeeded");
    let verify = || fixture.repro().arg("verify").output().unwrap();
    let output = verify();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "{TASKS} cached outputs checked: {TASKS} whole, 0 damaged"
        )),
        "{text}"
    );

    let store = fixture.store();
    let encode: String = store
        .query_row(
            "SELECT key FROM tasks WHERE stage = 'encode' ORDER BY key LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let output_dir = fixture.results().join("cache").join(&encode);
    let largest = std::fs::read_dir(&output_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "f32"))
        .max_by_key(|path| std::fs::metadata(path).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&largest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&largest, &bytes).unwrap();
    let output = verify();
    assert!(!output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("does not match its recorded sha256"),
        "{text}"
    );
    // A plain run uses nothing of it (its evals are cached): nothing runs. Forcing the evals
    // makes them read it: it is found damaged first and runs again.
    assert_eq!(summary(&fixture.run(), "executed"), 0);
    let explained = fixture
        .repro()
        .args(["run", "--explain", "--force", "eval"])
        .arg(&fixture.experiment)
        .output()
        .unwrap();
    let explained = String::from_utf8(explained.stdout).unwrap();
    assert!(
        explained.contains("which a running task reads, is damaged"),
        "{explained}"
    );
    let outcome = fixture.run_with(&["--force", "eval"]);
    assert_eq!(outcome["status"], "succeeded");
    assert!(verify().status.success());

    std::fs::remove_file(&largest).unwrap();
    let outcome = fixture.run();
    assert!(
        summary(&outcome, "executed") >= 1,
        "a deleted file is seen: {outcome}"
    );
    assert!(verify().status.success());

    store
        .execute("UPDATE metrics SET value = value + 0.001 WHERE task_key = (SELECT task_key FROM metrics WHERE measure = 'ndcg_cut_10' LIMIT 1) AND measure = 'ndcg_cut_10'", [])
        .unwrap();
    let text = String::from_utf8(verify().stdout).unwrap();
    assert!(text.contains("the store's ndcg_cut_10 is"), "{text}");
}

#[test]
fn ctrl_c_stops_cleanly_and_records_the_interruption() {
    let fixture = Fixture::smoke();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("repro"))
        .arg("--quiet")
        .arg("run")
        .arg(&fixture.experiment)
        .env("REPRO_RESULTS", fixture.results())
        .env("REPRO_DATA", fixture.dir.path().join("data"))
        .env_remove("REPRO_MIRROR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let store_path = fixture.results().join("repro.sqlite");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "the run never got going");
        let started = rusqlite::Connection::open(&store_path)
            .ok()
            .and_then(|store| {
                store
                    .query_row("SELECT count(*) FROM attempts", [], |row| {
                        row.get::<_, i64>(0)
                    })
                    .ok()
            })
            .unwrap_or(0);
        if started >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGINT to the scheduler alone, as a terminal's Ctrl-C reaches it.
    // SAFETY: kill(2) on a child we own.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("interrupted; run the same command again"),
        "{stderr}"
    );
    let store = fixture.store();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM runs WHERE status = 'interrupted'"
        ),
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM attempts WHERE status IN ('running', 'lost')"
        ),
        0,
        "every attempt the scheduler started is closed"
    );
    let outcome = fixture.run();
    assert_eq!(outcome["status"], "succeeded");
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM tasks WHERE status = 'succeeded'"
        ),
        TASKS as i64
    );
}

#[test]
fn compare_and_export_read_the_store() {
    let fixture = Fixture::smoke();
    fixture.run();
    let output = fixture
        .repro()
        .args([
            "compare",
            "smoke",
            "--where",
            "input=single",
            "--sort",
            "ndcg_cut_10",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(&header[..3], ["layer", "pooling", "state"], "{table}");
    assert!(header.contains(&"ndcg_cut_10"), "{table}");
    assert_eq!(
        lines.len(),
        1 + 8 + 1,
        "8 single-input cells and a footer: {table}"
    );
    assert!(lines[9].contains("input=single"), "{table}");
    let column = header.iter().position(|h| *h == "ndcg_cut_10").unwrap();
    let values: Vec<f64> = lines[1..9]
        .iter()
        .map(|line| {
            line.split_whitespace()
                .nth(column)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] >= w[1]),
        "sorted best first: {values:?}"
    );

    let csv = fixture.dir.path().join("cells.csv");
    fixture
        .repro()
        .args(["export", "smoke", "--format", "csv", "-o"])
        .arg(&csv)
        .assert()
        .success();
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 1 + CELLS as usize);
    assert!(text
        .lines()
        .next()
        .unwrap()
        .starts_with("experiment,cell,state,"));

    let output = fixture
        .repro()
        .args(["export", "smoke", "--format", "parquet", "--per-query"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    assert_eq!(
        path,
        fixture.results().join("exports/smoke-per-query.parquet")
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4], b"PAR1");

    fixture
        .repro()
        .args(["export", "nope", "--format", "json"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("no experiment `nope`"));
}

#[test]
fn bench_measures_each_depth_and_records_it() {
    let fixture = Fixture::smoke();
    let dataset = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smoke/beir");
    let output = fixture
        .repro()
        .args([
            "bench",
            "--json",
            "--documents",
            "5",
            "--depth",
            "0,3",
            "--runs",
            "2",
            "--batch",
            "2",
            "--max-len",
            "32",
        ])
        .arg("--model")
        .arg(fixture.dir.path().join("tiny-bert"))
        .arg("--dataset")
        .arg(&dataset)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    let depths = outcome["depths"].as_array().unwrap();
    assert_eq!(depths.len(), 2);
    for row in depths {
        assert_eq!(row["seconds"].as_array().unwrap().len(), 2);
        assert!(row["documents_per_second"]["median"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        depths[1]["speedup"].as_f64().unwrap(),
        1.0,
        "depth 3 is the full model"
    );
    assert_eq!(
        count(
            &fixture.store(),
            "SELECT count(*) FROM benchmarks WHERE documents = 5 AND runs = 2 AND length(model_sha256) = 64"
        ),
        2
    );
}

/// The shared miniature distillation study with a dev split (fusion weight chosen on it),
/// the DE alone and re-ranked, and four DE-2 students.
fn distill_text() -> String {
    common::mini_distill(
        "distill_smoke",
        "dev_fraction = 0.2",
        "",
        r#"
[[sweep]]
model = ["tiny"]
layers = [3]
rerank.model = ["", "teacher"]

[[sweep]]
model = ["student"]
layers = [2]
train_de.init = ["ce:1", "random"]
train_de.loss = ["mse", "mnrl"]
"#,
    )
}

#[test]
fn a_distillation_study_trains_probes_and_reranks() {
    let fixture = Fixture::new();
    fixture.write_experiment(&distill_text());

    let first = fixture.run();
    assert_eq!(first["status"], "succeeded");
    // Cells: teacher 4 layers × 2 inputs, DE alone and re-ranked, 4 students.
    let cells = first["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 8 + 2 + 4);
    let store = fixture.store();
    let tasks = |stage: &str| {
        count(
            &store,
            &format!("SELECT count(*) FROM tasks WHERE stage = '{stage}' AND status = 'succeeded'"),
        )
    };
    assert_eq!(tasks("train_ce"), 1);
    assert_eq!(tasks("train_de"), 4);
    assert_eq!(tasks("rerank"), 1);
    // Teacher × 2 inputs, the DE (also the miner), 4 students.
    assert_eq!(tasks("encode"), 2 + 1 + 4);
    // Every step of every training task is in the store, with a finite loss.
    let steps = count(&store, "SELECT count(*) FROM training_steps");
    assert!(steps >= 5, "{steps} training steps recorded");
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM training_steps WHERE loss != loss OR learning_rate < 0"
        ),
        0
    );
    // The re-ranked cell reports both runs.
    let reranked: Vec<&Value> = cells
        .iter()
        .filter(|cell| cell["metrics"].get("reranked_ndcg_cut_10").is_some())
        .collect();
    assert_eq!(reranked.len(), 1);
    let metrics = &reranked[0]["metrics"];
    assert!(metrics["ndcg_cut_10"].as_f64().is_some());
    // Fused too, with a weight chosen on the teacher's one held-out train query.
    assert!(metrics["fused_ndcg_cut_10"].as_f64().is_some(), "{metrics}");
    let lambda = metrics["fusion_lambda"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&lambda), "{lambda}");
    assert_eq!(metrics["dev_queries"].as_f64(), Some(1.0));

    // Warm: nothing runs; the same results come back.
    let second = fixture.run();
    assert_eq!(summary(&second, "executed"), 0);
    assert_eq!(second["cells"], first["cells"]);

    // A student's learning rate changes the student tasks only.
    let text = std::fs::read_to_string(&fixture.experiment)
        .unwrap()
        .replace("[train_de]\n", "[train_de]\nlearning_rate = 0.001\n");
    std::fs::write(&fixture.experiment, text).unwrap();
    let third = fixture.run();
    // 4 students re-trained, re-encoded and re-evaluated.
    assert_eq!(summary(&third, "executed"), 4 * 3);

    // The training curves of the current tasks export one row per step.
    let output = fixture.dir.path().join("steps.csv");
    fixture
        .repro()
        .args([
            "export",
            "distill_smoke",
            "--steps",
            "--format",
            "csv",
            "-o",
        ])
        .arg(&output)
        .assert()
        .success();
    let csv = std::fs::read_to_string(&output).unwrap();
    assert!(csv.starts_with("experiment,task,stage,step,epoch,loss,learning_rate,grad_norm"));
    let current_steps = count(
        &fixture.store(),
        "SELECT count(*) FROM training_steps WHERE task_key IN (SELECT ct.task_key FROM
             cell_tasks ct JOIN cells c ON c.id = ct.cell_id WHERE c.active = 1)",
    );
    assert_eq!(csv.lines().count() as i64, current_steps + 1);
}

/// `[bench]` adds one bench task per (model, dataset, input) it covers; with `--jobs 3` the
/// bench still runs alone: no other attempt's time span overlaps its own.
#[test]
fn bench_tasks_run_alone_and_are_cached() {
    let fixture = Fixture::smoke();
    fixture.write_smoke(|text| {
        format!("{text}\n[bench]\ndocuments = 5\nruns = 2\nwarmup = 0\ninputs = [\"single\"]\n")
    });
    let first = fixture.run_with(&["--jobs", "3"]);
    assert_eq!(first["status"], "succeeded");
    assert_eq!(summary(&first, "total"), TASKS + 1);
    let store = fixture.store();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM metrics m JOIN tasks t ON t.key = m.task_key
             WHERE t.stage = 'bench' AND m.measure LIKE 'docs_per_second@%' AND m.value > 0"
        ),
        // Depths 0 to 3 of the tiny model.
        4
    );
    let overlapping = count(
        &store,
        "SELECT count(*) FROM attempts b JOIN tasks t ON t.key = b.task_key AND t.stage = 'bench'
         JOIN attempts o ON o.id != b.id
         WHERE o.started_at < b.ended_at AND o.ended_at > b.started_at",
    );
    assert_eq!(overlapping, 0, "another task ran beside the bench");
    let second = fixture.run_with(&["--jobs", "3"]);
    assert_eq!(summary(&second, "executed"), 0, "bench results are cached");
}
