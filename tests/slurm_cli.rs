//! `repro run --executor slurm` against a real single-node Slurm cluster that each test starts
//! (`scripts/slurm_local.sh`) and stops: the same metrics as the local executor, a failed
//! element recorded with its exit code and retried alone, Ctrl-C cancelling submitted jobs,
//! a sharded encode spread over array elements.
//!
//! Needs Debian's `slurmctld slurmd slurm-client munge` and root (munged runs as its own
//! user). `make test` installs them and sets `REPRO_SLURM_TEST=1`, which makes a missing
//! Slurm an error; without it these tests say why they skip.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Fixture;
use serde_json::Value;

const SMOKE: &str = include_str!("../experiments/smoke.toml");

/// One cluster at a time: they share the daemons' ports.
static CLUSTER: Mutex<()> = Mutex::new(());

/// A single-node cluster under a temporary directory, stopped on drop.
struct LocalSlurm {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl LocalSlurm {
    /// Starts a cluster, or `None` when Slurm is not installed and the tests may skip.
    fn start() -> Option<Self> {
        let required = std::env::var("REPRO_SLURM_TEST").is_ok_and(|v| v == "1");
        let installed = ["slurmctld", "slurmd", "sbatch", "munged"]
            .iter()
            .all(|program| on_path(program));
        if !installed || !is_root() {
            assert!(
                !required,
                "REPRO_SLURM_TEST=1 but Slurm is not usable here (installed: {installed}, root: {}); `make slurm-env` installs it",
                is_root()
            );
            eprintln!("skipping: Slurm is not installed or not root (set REPRO_SLURM_TEST=1 to require it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "starting Slurm failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let conf = dir.path().join("slurm.conf");
        Some(LocalSlurm { dir, conf })
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// Element ids of the jobs in the queue.
    fn queued(&self) -> Vec<String> {
        let output = self
            .command("squeue")
            .args(["--noheader", "--array", "--format=%i"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.trim().to_string())
            .filter(|line| !line.is_empty())
            .collect()
    }
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        let _ = self.command("scancel").arg("--user=root").status();
        let _ = std::process::Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm_local.sh")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
            || Path::new("/usr/sbin").join(program).is_file()
    })
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The smoke experiment with fast polling (and `extra` appended) in the fixture.
fn smoke(fixture: &Fixture, extra: &str) {
    let text = SMOKE
        .replace("\"target/smoke/tiny-bert\"", "\"TINY\"")
        .replace("\"tests/fixtures/smoke/beir\"", "\"DATASET\"");
    fixture.write_experiment(&format!(
        "{text}\n[slurm]\npoll_seconds = 0.3\nresult_grace_seconds = 5\n{extra}"
    ));
}

fn run(fixture: &Fixture, slurm: &LocalSlurm, results: &Path, extra: &[&str]) -> (Value, bool) {
    let output = fixture
        .repro()
        .env("SLURM_CONF", &slurm.conf)
        .env("REPRO_RESULTS", results)
        .arg("run")
        .arg(&fixture.experiment)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    let summary = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON summary:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (summary, output.status.success())
}

/// Every aggregate and per-query value of every task, by task key.
fn metrics(results: &Path) -> BTreeMap<(String, String, String), f64> {
    let store = rusqlite::Connection::open(results.join("repro.sqlite")).unwrap();
    let mut found = BTreeMap::new();
    let mut aggregate = store
        .prepare("SELECT task_key, measure, value FROM metrics")
        .unwrap();
    let rows = aggregate
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get(2)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (key, measure, value) = row.unwrap();
        // Encode rates and timings are measurements of the machine, not results.
        if measure.contains("per_second") || measure.ends_with("_seconds") {
            continue;
        }
        found.insert((key, measure, String::new()), value);
    }
    let mut per_query = store
        .prepare("SELECT task_key, measure, query_id, value FROM query_metrics")
        .unwrap();
    let rows = per_query
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get(3)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (key, measure, query, value) = row.unwrap();
        found.insert((key, measure, query), value);
    }
    found
}

#[test]
fn the_smoke_experiment_on_slurm_gives_the_local_metrics() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(slurm) = LocalSlurm::start() else {
        return;
    };
    let fixture = Fixture::new();
    smoke(&fixture, "");
    let local_results = fixture.dir.path().join("local");
    let slurm_results = fixture.dir.path().join("slurm");

    let started = Instant::now();
    let (local, ok) = run(&fixture, &slurm, &local_results, &[]);
    assert!(ok, "{local}");
    let local_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (on_slurm, ok) = run(&fixture, &slurm, &slurm_results, &["--executor", "slurm"]);
    assert!(ok, "{on_slurm}");
    let slurm_seconds = started.elapsed().as_secs_f64();
    eprintln!("smoke: local {local_seconds:.1} s, slurm {slurm_seconds:.1} s");

    assert_eq!(
        on_slurm["summary"]["executed"],
        local["summary"]["executed"]
    );
    let (local_metrics, slurm_metrics) = (metrics(&local_results), metrics(&slurm_results));
    assert!(local_metrics.len() > 100, "{}", local_metrics.len());
    assert_eq!(local_metrics, slurm_metrics, "every value identical");

    let store = rusqlite::Connection::open(slurm_results.join("repro.sqlite")).unwrap();
    let (attempts, with_job): (i64, i64) = store
        .query_row("SELECT count(*), count(job_id) FROM attempts", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(attempts, with_job, "every attempt names its Slurm job");
    let executor: String = store
        .query_row("SELECT executor FROM runs", [], |row| row.get(0))
        .unwrap();
    assert_eq!(executor, "slurm");
    // Each element left its result file: status, exit code, metrics.
    let key: String = store
        .query_row(
            "SELECT key FROM tasks WHERE stage = 'eval' LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let result: Value = serde_json::from_slice(
        &std::fs::read(slurm_results.join(format!("tasks/{key}/attempt-1.result.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["exit_code"], 0);
    assert!(
        result["outcome"]["metrics"]["ndcg_cut_10"].is_number(),
        "{result}"
    );

    // Cached under Slurm as locally: nothing is submitted again.
    let (again, ok) = run(&fixture, &slurm, &slurm_results, &["--executor", "slurm"]);
    assert!(ok);
    assert_eq!(again["summary"]["executed"], 0);
    assert!(slurm.queued().is_empty());
}

#[test]
fn a_failed_element_is_recorded_with_its_exit_code_and_retried_alone() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(slurm) = LocalSlurm::start() else {
        return;
    };
    let fixture = Fixture::new();
    smoke(&fixture, "");
    let results = fixture.results();
    let plan = fixture
        .repro()
        .args(["check", "--json"])
        .arg(&fixture.experiment)
        .output()
        .unwrap();
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let doomed = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|task| task["stage"] == "eval")
        .map(|task| task["key"].as_str().unwrap().to_string())
        .unwrap();

    let output = fixture
        .repro()
        .env("SLURM_CONF", &slurm.conf)
        .env("REPRO_FAIL_TASK", &doomed)
        .args(["run", "--executor", "slurm", "--keep-going", "--json"])
        .arg(&fixture.experiment)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["summary"]["failed"], 1, "{outcome}");
    let executed = outcome["summary"]["executed"].as_u64().unwrap();

    let store = rusqlite::Connection::open(results.join("repro.sqlite")).unwrap();
    let (key, status, exit_code, error, job): (String, String, i64, String, String) = store
        .query_row(
            "SELECT task_key, status, exit_code, error, job_id FROM attempts WHERE status != 'succeeded'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
        )
        .unwrap();
    assert_eq!((key.as_str(), status.as_str()), (doomed.as_str(), "failed"));
    assert_eq!(exit_code, 1);
    assert!(
        error.contains("injected failure"),
        "the log's tail: {error}"
    );
    assert!(error.contains(&format!("Slurm job {job}")), "{error}");

    let (retried, ok) = run(
        &fixture,
        &slurm,
        &results,
        &["--executor", "slurm", "--retry-failed"],
    );
    assert!(ok, "{retried}");
    assert_eq!(
        retried["summary"]["executed"], 1,
        "only the failed task: {retried}"
    );
    assert_eq!(retried["summary"]["cached"].as_u64().unwrap(), executed - 1);
}

#[test]
fn ctrl_c_cancels_the_submitted_jobs_and_records_them_cancelled() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(slurm) = LocalSlurm::start() else {
        return;
    };
    let fixture = Fixture::new();
    // Held in the queue for an hour: cancelled while pending.
    smoke(&fixture, "sbatch_args = [\"--begin=now+3600\"]\n");
    let results = fixture.results();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["--quiet", "run", "--executor", "slurm"])
        .arg(&fixture.experiment)
        .env("SLURM_CONF", &slurm.conf)
        .env("REPRO_RESULTS", &results)
        .env("REPRO_DATA", fixture.dir.path().join("data"))
        .env_remove("REPRO_MIRROR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while slurm.queued().is_empty() {
        assert!(Instant::now() < deadline, "nothing was submitted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let submitted = slurm.queued();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        slurm.queued().is_empty(),
        "still queued after Ctrl-C: {:?}",
        slurm.queued()
    );
    let store = rusqlite::Connection::open(results.join("repro.sqlite")).unwrap();
    let mut statement = store
        .prepare("SELECT status, error, job_id FROM attempts")
        .unwrap();
    let attempts: Vec<(String, String, String)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        attempts.len(),
        submitted.len(),
        "{attempts:?} vs {submitted:?}"
    );
    for (status, error, job) in &attempts {
        assert_eq!(status, "cancelled", "{error}");
        assert!(error.contains("scancel"), "{error}");
        assert!(submitted.contains(job), "{job} not in {submitted:?}");
    }
    let run_status: String = store
        .query_row("SELECT status FROM runs", [], |row| row.get(0))
        .unwrap();
    assert_eq!(run_status, "interrupted");
}

#[test]
fn a_sharded_encode_runs_as_separate_elements_with_the_unsharded_metrics() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(slurm) = LocalSlurm::start() else {
        return;
    };
    let fixture = Fixture::new();
    smoke(&fixture, "");
    let whole = fixture.dir.path().join("whole");
    let (outcome, ok) = run(&fixture, &slurm, &whole, &[]);
    assert!(ok, "{outcome}");

    let sharded_text = std::fs::read_to_string(&fixture.experiment)
        .unwrap()
        .replace("[encode]\nbatch = 4\n", "[encode]\nbatch = 4\nshards = 3\n");
    std::fs::write(&fixture.experiment, sharded_text).unwrap();
    let sharded = fixture.dir.path().join("sharded");
    let (outcome, ok) = run(&fixture, &slurm, &sharded, &["--executor", "slurm"]);
    assert!(ok, "{outcome}");
    assert_eq!(outcome["encode_tasks"], 6, "2 encodes × 3 shards");

    let store = rusqlite::Connection::open(sharded.join("repro.sqlite")).unwrap();
    let shard_jobs: i64 = store
        .query_row(
            "SELECT count(DISTINCT a.job_id) FROM attempts a JOIN tasks t ON t.key = a.task_key
             WHERE t.stage = 'encode'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(shard_jobs, 6, "each shard is its own array element");

    // Keys differ (a sharded encode is other tasks); the values by cell do not.
    let by_cell = |results: &Path| {
        let out = fixture
            .repro()
            .env("REPRO_RESULTS", results)
            .args(["export", "smoke", "--format", "json", "--per-query"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let rows: Value = serde_json::from_slice(&std::fs::read(written).unwrap()).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let mut row = row.clone();
                let object = row.as_object_mut().unwrap();
                object.retain(|name, _| {
                    !name.contains("per_second")
                        && !name.ends_with("seconds")
                        && name != "encode.shards"
                });
                row
            })
            .collect::<Vec<_>>()
    };
    let (whole_rows, sharded_rows) = (by_cell(&whole), by_cell(&sharded));
    assert!(!whole_rows.is_empty());
    assert_eq!(whole_rows, sharded_rows);
}
