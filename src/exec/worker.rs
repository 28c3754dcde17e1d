//! The worker side: `repro worker SPEC` runs one task and leaves its outcome in the cache.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{io_error, ExecError, OUTCOME};
use crate::stages::{run_task, Observer};
use crate::task::{TaskSpec, UpstreamDirs};

/// What the scheduler hands a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub key: String,
    pub task: TaskSpec,
    /// Output directories of the upstream tasks, by stage.
    pub upstream: UpstreamDirs,
    /// Where the outcome must end up (`cache/<key>`).
    pub output: PathBuf,
}

/// Prints progress as JSON lines on stdout, for the scheduler.
struct LineObserver;

impl Observer for LineObserver {
    fn phase(&self, name: &str, total: usize) {
        let line = serde_json::json!({"phase": name, "total": total});
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn advance(&self, done: usize) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::json!({"advance": done}));
        let _ = out.flush();
    }
}

/// Runs the task in `spec_path`: builds its output in a temporary sibling of the output
/// directory, writes `outcome.json` last, then renames the directory into place. An output
/// directory left by an earlier attempt that was never recorded is replaced.
pub fn run_worker(spec_path: &Path) -> Result<(), ExecError> {
    let bytes = std::fs::read(spec_path).map_err(io_error(spec_path))?;
    let spec: WorkerSpec = serde_json::from_slice(&bytes)
        .map_err(|err| ExecError::Worker(format!("{}: {err}", spec_path.display())))?;
    let parent = spec
        .output
        .parent()
        .ok_or_else(|| ExecError::Worker(format!("{} has no parent", spec.output.display())))?;
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let scratch = parent.join(format!(".tmp-{}-{}", spec.key, std::process::id()));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(io_error(&scratch))?;
    }
    std::fs::create_dir_all(&scratch).map_err(io_error(&scratch))?;
    let result = run_into(&spec, &scratch);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}

/// Fault injection for tests of failure handling: a worker whose stage is named in
/// `REPRO_FAIL_STAGE`, or whose task key starts with `REPRO_FAIL_TASK`, fails before doing
/// anything; one whose stage is named in `REPRO_KILL_STAGE` is killed by SIGKILL, as the
/// kernel's out-of-memory killer would.
const FAIL_STAGE: &str = "REPRO_FAIL_STAGE";
const FAIL_TASK: &str = "REPRO_FAIL_TASK";
const KILL_STAGE: &str = "REPRO_KILL_STAGE";

fn run_into(spec: &WorkerSpec, scratch: &Path) -> Result<(), ExecError> {
    let stage = spec.task.stage();
    if std::env::var(KILL_STAGE).is_ok_and(|value| value == stage.name()) {
        // SAFETY: sends a signal to this process; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    if std::env::var(FAIL_STAGE).is_ok_and(|value| value == stage.name()) {
        return Err(ExecError::Worker(format!(
            "injected failure ({FAIL_STAGE}={stage})"
        )));
    }
    if let Ok(prefix) = std::env::var(FAIL_TASK) {
        if !prefix.is_empty() && spec.key.starts_with(&prefix) {
            return Err(ExecError::Worker(format!(
                "injected failure ({FAIL_TASK}={prefix})"
            )));
        }
    }
    let outcome = run_task(&spec.task, &spec.upstream, scratch, &LineObserver)
        .map_err(|err| ExecError::Worker(err.to_string()))?;
    let path = scratch.join(OUTCOME);
    let json =
        serde_json::to_vec_pretty(&outcome).map_err(|err| ExecError::Worker(err.to_string()))?;
    crate::util::write_atomic(&path, &json).map_err(io_error(&path))?;
    super::manifest::write(scratch).map_err(io_error(scratch))?;
    if spec.output.exists() {
        std::fs::remove_dir_all(&spec.output).map_err(io_error(&spec.output))?;
    }
    std::fs::rename(scratch, &spec.output).map_err(io_error(&spec.output))
}
