/*!
Executors: deciding which tasks of a plan run, and running them.

This module owns the results directory's layout (the store, `cache/<key>/` artifacts,
`tasks/<key>/` specs and logs, the lock that makes one scheduler per directory), the
decision of what runs and why ([`decide`], behind `repro run --explain`), and the scheduler
([`execute`]), which starts each task as a `repro worker` process (a child process, or a
Slurm array element on a cluster node), reads its progress, and records its outcome. The
scheduler is the store's only writer; workers write nothing but their own output directory,
built in a temporary sibling and renamed into place, so a killed worker leaves no
half-written artifacts under `cache/<key>/`, and under Slurm a result file beside their log.

It must not know what a stage computes (that is `stages`) or how an experiment is written
(that is `config`).
*/

mod environment;
mod local;
pub mod manifest;
mod schedule;
mod slurm;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::config::SlurmSettings;
use crate::plan::{input_differences, Plan, Task};
use crate::store::{Store, StoreError, TaskStatus};
use crate::task::Stage;
use schedule::Schedule;

pub use environment::capture_environment;
pub use slurm::{cancel_jobs, run_element};
pub use worker::{run_worker, WorkerSpec};

/// Why running a plan failed (as opposed to a task failing, which is recorded).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is in use by another `repro run` (one scheduler per results directory); wait for it or pass another --results")]
    Locked(PathBuf),
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Worker(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
    move |source| ExecError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The results directory: `repro.sqlite`, `cache/<key>/`, `tasks/<key>/`.
#[derive(Debug, Clone)]
pub struct ResultsDir {
    root: PathBuf,
}

/// Held while a scheduler works in a results directory; released on drop.
#[derive(Debug)]
pub struct ResultsLock {
    _file: std::fs::File,
}

impl ResultsDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ResultsDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn store_path(&self) -> PathBuf {
        self.root.join("repro.sqlite")
    }

    /// Where a task's artifacts live once it succeeded.
    pub fn cache_dir(&self, key: &str) -> PathBuf {
        self.root.join("cache").join(key)
    }

    /// Where a task's spec and attempt logs live.
    pub fn task_dir(&self, key: &str) -> PathBuf {
        self.root.join("tasks").join(key)
    }

    /// Removes what workers that never finished left behind (`cache/.tmp-*`). Call while
    /// holding the lock.
    pub fn discard_partial(&self) -> Result<usize, ExecError> {
        let cache = self.root.join("cache");
        let Ok(entries) = std::fs::read_dir(&cache) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Whether a scheduler holds the directory's lock now. Runs and attempts the store still
    /// calls running are abandoned when none does (its scheduler was killed); the next
    /// `repro run` records them so. Probes with a shared lock, released at once.
    pub fn scheduler_running(&self) -> bool {
        let Ok(file) = std::fs::File::open(self.root.join(".lock")) else {
            return false;
        };
        matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        )
    }

    /// Takes the directory's lock without waiting.
    pub fn lock(&self) -> Result<ResultsLock, ExecError> {
        std::fs::create_dir_all(&self.root).map_err(io_error(&self.root))?;
        let path = self.root.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(ResultsLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(ExecError::Locked(self.root.clone())),
            Err(std::fs::TryLockError::Error(source)) => Err(ExecError::Io { path, source }),
        }
    }
}

/// What happens to a task in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Run,
    Cached,
    /// Will not run: a failed task without `--retry-failed`, or downstream of one.
    Blocked,
}

/// An action and the reason for it, for `--explain` and the store.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
}

/// Knobs of [`decide`].
#[derive(Debug, Clone, Default)]
pub struct DecideOptions {
    /// Re-run every task of these stages, and what depends on them.
    pub force: Vec<Stage>,
    pub retry_failed: bool,
}

/// Decides, for every task of `plan` in order, whether it runs, is cached, or is blocked,
/// and why. Call before the plan is recorded so that "what changed" compares with the
/// experiment's previous tasks.
pub fn decide(
    plan: &Plan,
    store: &Store,
    results: &ResultsDir,
    experiment_id: Option<i64>,
    options: &DecideOptions,
) -> Result<Vec<Decision>, ExecError> {
    let mut decisions: Vec<Decision> = Vec::with_capacity(plan.tasks.len());
    let mut previous = PreviousInputs::new(store, experiment_id);
    for task in &plan.tasks {
        let decision = match decided_upstream(plan, task, &decisions, options) {
            Some(decision) => decision,
            None => match store.task_status(&task.key)? {
                Some(TaskStatus::Succeeded) => reuse_or_rerun(results, &task.key),
                Some(TaskStatus::Failed) if !options.retry_failed => {
                    let error = store.last_error(&task.key)?.unwrap_or_default();
                    Decision {
                        action: Action::Blocked,
                        reason: format!(
                            "failed earlier (use --retry-failed to run it again): {}",
                            error.lines().last().unwrap_or("")
                        ),
                    }
                }
                Some(TaskStatus::Failed) => Decision {
                    action: Action::Run,
                    reason: "failed earlier; retrying (--retry-failed)".to_string(),
                },
                Some(TaskStatus::Interrupted) => Decision {
                    action: Action::Run,
                    reason: "interrupted earlier".to_string(),
                },
                Some(TaskStatus::Running) | Some(TaskStatus::Pending) => Decision {
                    action: Action::Run,
                    reason: "never finished".to_string(),
                },
                None => Decision {
                    action: Action::Run,
                    reason: explain_new(task, previous.of(task.stage)?),
                },
            },
        };
        decisions.push(decision);
    }
    verify_what_runs_reads(plan, results, &mut decisions);
    Ok(decisions)
}

/// The decision its upstream tasks or `--force` impose on `task`, if any: blocked behind a
/// blocked task, or run because its stage or an upstream task is forced.
fn decided_upstream(
    plan: &Plan,
    task: &Task,
    decisions: &[Decision],
    options: &DecideOptions,
) -> Option<Decision> {
    let upstream_blocked = task
        .upstream
        .iter()
        .find(|&&up| decisions[up].action == Action::Blocked);
    if let Some(&up) = upstream_blocked {
        return Some(Decision {
            action: Action::Blocked,
            reason: format!("upstream {} is blocked", plan.tasks[up].stage),
        });
    }
    if options.force.contains(&task.stage) {
        return Some(Decision {
            action: Action::Run,
            reason: format!("forced (--force {})", task.stage),
        });
    }
    let forced_upstream = task.upstream.iter().find(|&&up| {
        decisions[up].action == Action::Run && decisions[up].reason.starts_with("forced")
    });
    forced_upstream.map(|&up| Decision {
        action: Action::Run,
        reason: format!("upstream {} is forced", plan.tasks[up].stage),
    })
}

/// A task recorded as succeeded is cached while its output is there and undamaged.
fn reuse_or_rerun(results: &ResultsDir, key: &str) -> Decision {
    let output = results.cache_dir(key);
    if !output.join(OUTCOME).is_file() {
        return Decision {
            action: Action::Run,
            reason: format!("recorded as succeeded but {} is gone", output.display()),
        };
    }
    match manifest::damage(&output, manifest::Depth::Sizes) {
        Some(damage) => Decision {
            action: Action::Run,
            reason: format!("its cached output is damaged: {damage}"),
        },
        None => Decision {
            action: Action::Cached,
            reason: "succeeded earlier".to_string(),
        },
    }
}

/// The inputs of the experiment's earlier tasks, per stage, read from the store once each:
/// what a new task is compared with to say what changed.
struct PreviousInputs<'s> {
    store: &'s Store,
    experiment_id: Option<i64>,
    by_stage: BTreeMap<Stage, Vec<(String, serde_json::Value)>>,
}

impl<'s> PreviousInputs<'s> {
    fn new(store: &'s Store, experiment_id: Option<i64>) -> Self {
        Self {
            store,
            experiment_id,
            by_stage: BTreeMap::new(),
        }
    }

    fn of(&mut self, stage: Stage) -> Result<&[(String, serde_json::Value)], ExecError> {
        let Some(id) = self.experiment_id else {
            return Ok(&[]);
        };
        if !self.by_stage.contains_key(&stage) {
            let loaded = self
                .store
                .previous_inputs(id, stage)?
                .into_iter()
                .filter_map(|(key, inputs)| serde_json::from_str(&inputs).ok().map(|v| (key, v)))
                .collect();
            self.by_stage.insert(stage, loaded);
        }
        Ok(&self.by_stage[&stage])
    }
}

/// What `repro verify` found in a results directory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// Succeeded tasks whose cached output was checked.
    pub checked: usize,
    /// Outputs written before repro kept manifests: present, but not verifiable.
    pub without_manifest: usize,
    pub damaged: Vec<DamagedTask>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DamagedTask {
    pub key: String,
    pub stage: String,
    pub problem: String,
}

/// Checks every succeeded task's cached output (of `experiment`, or of every experiment) in
/// full against its manifest, and the measures the store holds against the output's
/// `outcome.json`. Reads only; a damaged task runs again at the next `repro run` that needs
/// it.
pub fn verify(
    store: &Store,
    results: &ResultsDir,
    experiment: Option<i64>,
) -> Result<Verification, ExecError> {
    let experiments = match experiment {
        Some(id) => vec![id],
        None => store.experiments()?.into_iter().map(|e| e.id).collect(),
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut verification = Verification::default();
    for id in experiments {
        for task in store.tasks(id)? {
            if task.status != TaskStatus::Succeeded || !seen.insert(task.key.clone()) {
                continue;
            }
            verification.checked += 1;
            let output = results.cache_dir(&task.key);
            let problem = match manifest::read(&output) {
                Ok(None) if output.join(OUTCOME).is_file() => {
                    verification.without_manifest += 1;
                    None
                }
                Ok(None) => Some(format!("{} is gone", output.display())),
                Err(damage) => Some(damage.to_string()),
                Ok(Some(_)) => match manifest::damage(&output, manifest::Depth::Contents) {
                    Some(damage) => Some(damage.to_string()),
                    None => recorded_metrics_differ(store, &task.key, &output)?,
                },
            };
            if let Some(problem) = problem {
                verification.damaged.push(DamagedTask {
                    key: task.key,
                    stage: task.stage,
                    problem,
                });
            }
        }
    }
    Ok(verification)
}

/// Where the store's measures of a task disagree with its (verified) `outcome.json`.
fn recorded_metrics_differ(
    store: &Store,
    key: &str,
    output: &Path,
) -> Result<Option<String>, ExecError> {
    let path = output.join(OUTCOME);
    let outcome: crate::task::TaskOutcome = match std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    {
        Some(outcome) => outcome,
        None => return Ok(Some(format!("{} is unreadable", path.display()))),
    };
    let recorded = store.task_metrics(key)?;
    let differing = outcome.metrics.iter().find(|(measure, value)| {
        recorded.get(*measure).map(|r| r.to_bits()) != Some(value.to_bits())
    });
    Ok(differing.map(|(measure, value)| {
        format!(
            "the store's {measure} is {}, its outcome.json says {value}",
            recorded
                .get(measure)
                .map_or("missing".to_string(), f64::to_string)
        )
    }))
}

/// Before a running task reads a cached output, the output's contents are checked against
/// its manifest; a damaged one runs again (and so, in turn, do the cached outputs it reads).
fn verify_what_runs_reads(plan: &Plan, results: &ResultsDir, decisions: &mut [Decision]) {
    let mut checked = vec![false; plan.tasks.len()];
    loop {
        let mut changed = false;
        for index in 0..plan.tasks.len() {
            if decisions[index].action != Action::Run {
                continue;
            }
            for &up in &plan.tasks[index].upstream {
                if decisions[up].action != Action::Cached || checked[up] {
                    continue;
                }
                checked[up] = true;
                let output = results.cache_dir(&plan.tasks[up].key);
                if let Some(damage) = manifest::damage(&output, manifest::Depth::Contents) {
                    decisions[up] = Decision {
                        action: Action::Run,
                        reason: format!(
                            "its cached output, which a running task reads, is damaged: {damage}"
                        ),
                    };
                    changed = true;
                }
            }
        }
        if !changed {
            return;
        }
    }
}

/// "new" plus the smallest difference from any earlier task of the same stage.
fn explain_new(task: &Task, earlier: &[(String, serde_json::Value)]) -> String {
    let closest = earlier
        .iter()
        .filter(|(key, _)| *key != task.key)
        .map(|(_, inputs)| input_differences(inputs, &task.inputs))
        .filter(|differences| !differences.is_empty())
        .min_by_key(Vec::len);
    match closest {
        None => "new: no earlier run of this experiment had this task".to_string(),
        Some(differences) => {
            let shown: Vec<&str> = differences.iter().take(3).map(String::as_str).collect();
            let more = differences.len().saturating_sub(3);
            let suffix = if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            format!("new: changed {}{suffix}", shown.join("; "))
        }
    }
}

/// How a task ended in this run.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskResult {
    Succeeded {
        seconds: f64,
    },
    Failed {
        error: String,
    },
    Interrupted,
    /// Not started: upstream failed, fail-fast stopped the run, or it was blocked.
    Skipped {
        reason: String,
    },
}

/// Receives what the scheduler does, for progress displays.
pub trait RunObserver: Sync {
    fn started(&self, index: usize, task: &Task);
    fn phase(&self, index: usize, name: &str, total: usize);
    fn advance(&self, index: usize, done: usize);
    fn finished(&self, index: usize, task: &Task, result: &TaskResult);
}

/// An observer that ignores everything.
pub struct SilentRun;

impl RunObserver for SilentRun {
    fn started(&self, _index: usize, _task: &Task) {}
    fn phase(&self, _index: usize, _name: &str, _total: usize) {}
    fn advance(&self, _index: usize, _done: usize) {}
    fn finished(&self, _index: usize, _task: &Task, _result: &TaskResult) {}
}

/// Where tasks run.
#[derive(Debug, Clone, Default)]
pub enum Executor {
    /// Worker processes on this machine, `jobs` at a time.
    #[default]
    Local,
    /// Slurm job arrays on a cluster that shares the results directory.
    Slurm(SlurmSettings),
}

impl Executor {
    /// The name recorded with a run.
    pub fn name(&self) -> &'static str {
        match self {
            Executor::Local => "local",
            Executor::Slurm(_) => "slurm",
        }
    }
}

/// Knobs of [`execute`].
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub executor: Executor,
    /// Tasks running at once (local executor).
    pub jobs: usize,
    /// Compute threads each task may use (`RAYON_NUM_THREADS` of a local worker).
    pub threads_per_task: usize,
    /// Go on with independent tasks after a failure.
    pub keep_going: bool,
    /// The `repro` binary that runs `repro worker` (on a cluster: a path every node sees).
    pub program: PathBuf,
    /// The experiment's name, for job names.
    pub experiment: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExecSummary {
    pub total: usize,
    pub cached: usize,
    pub executed: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub skipped: usize,
}

pub(crate) const OUTCOME: &str = "outcome.json";

/// Runs the tasks `decisions` marks [`Action::Run`] in dependency order with the executor of
/// `options`, recording every attempt in `store` under `run_id`. Stops starting tasks after
/// the first failure unless `keep_going`; stops everything when `stop` is set (Ctrl-C),
/// recording running attempts as interrupted (local) or cancelled (Slurm).
#[allow(clippy::too_many_arguments)]
pub fn execute(
    plan: &Plan,
    decisions: &[Decision],
    store: &mut Store,
    results: &ResultsDir,
    run_id: i64,
    options: &ExecOptions,
    observer: &dyn RunObserver,
    stop: &AtomicBool,
) -> Result<ExecSummary, ExecError> {
    let mut schedule = Schedule::new(
        plan,
        decisions,
        results,
        run_id,
        observer,
        options.keep_going,
    );
    match &options.executor {
        Executor::Local => local::run(&mut schedule, store, options, stop)?,
        Executor::Slurm(settings) => slurm::run(&mut schedule, store, options, settings, stop)?,
    }
    Ok(schedule.finish(stop.load(Ordering::SeqCst)))
}
