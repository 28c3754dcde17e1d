//! What every executor shares: which tasks may start, writing a task's spec and opening its
//! attempt, and recording how the attempt ended. An executor decides only how workers are
//! started and how their ends are learned (a child process here, a Slurm array element
//! there); everything the store sees goes through [`Schedule`].

use std::path::{Path, PathBuf};

use super::worker::WorkerSpec;
use super::{
    io_error, Action, Decision, ExecError, ExecSummary, ResultsDir, RunObserver, TaskResult,
    OUTCOME,
};
use crate::plan::Plan;
use crate::store::{AttemptEnd, AttemptId, Store};
use crate::task::{TaskOutcome, UpstreamDirs};

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
    Skipped,
}

/// A task about to start: its attempt and where its worker reads and writes.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    pub index: usize,
    pub attempt: AttemptId,
    pub spec_path: PathBuf,
    /// The worker's stderr.
    pub log_path: PathBuf,
}

/// How an attempt ended, as its executor learned it.
#[derive(Debug, Clone)]
pub(super) enum Ending {
    /// The worker exited 0; its outcome is in the task's cache directory.
    Exited { seconds: f64 },
    /// Anything else: an error, a signal, a limit, Ctrl-C.
    Failed {
        end: AttemptEnd,
        seconds: f64,
        exit_code: Option<i32>,
        error: String,
    },
}

/// The states of a plan's tasks during one run, and the run's summary.
pub(super) struct Schedule<'a> {
    pub plan: &'a Plan,
    decisions: &'a [Decision],
    pub results: &'a ResultsDir,
    run_id: i64,
    pub observer: &'a dyn RunObserver,
    keep_going: bool,
    states: Vec<State>,
    summary: ExecSummary,
    failure_seen: bool,
}

impl<'a> Schedule<'a> {
    /// Tasks to run wait, cached ones are done, blocked ones are reported as skipped.
    pub fn new(
        plan: &'a Plan,
        decisions: &'a [Decision],
        results: &'a ResultsDir,
        run_id: i64,
        observer: &'a dyn RunObserver,
        keep_going: bool,
    ) -> Self {
        let mut summary = ExecSummary {
            total: plan.tasks.len(),
            ..ExecSummary::default()
        };
        let mut states = Vec::with_capacity(decisions.len());
        for (index, decision) in decisions.iter().enumerate() {
            states.push(match decision.action {
                Action::Run => State::Waiting,
                Action::Cached => {
                    summary.cached += 1;
                    State::Done
                }
                Action::Blocked => {
                    summary.skipped += 1;
                    let result = TaskResult::Skipped {
                        reason: decision.reason.clone(),
                    };
                    observer.finished(index, &plan.tasks[index], &result);
                    State::Skipped
                }
            });
        }
        Schedule {
            plan,
            decisions,
            results,
            run_id,
            observer,
            keep_going,
            states,
            summary,
            failure_seen: false,
        }
    }

    /// The store's id of this run.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// Whether new tasks may start: not after a failure, unless `--keep-going`.
    pub fn may_start(&self) -> bool {
        !self.failure_seen || self.keep_going
    }

    /// Waiting tasks whose upstream tasks are all done, in plan order.
    pub fn ready(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.plan.tasks.len()).filter(|&index| {
            self.states[index] == State::Waiting
                && self.plan.tasks[index]
                    .upstream
                    .iter()
                    .all(|&up| self.states[up] == State::Done)
        })
    }

    /// Writes the task's spec, opens its attempt in the store and reports it started.
    pub fn launch(&mut self, store: &mut Store, index: usize) -> Result<Launch, ExecError> {
        let plan = self.plan;
        let task = &plan.tasks[index];
        let upstream: UpstreamDirs = task
            .upstream
            .iter()
            .map(|&up| {
                let upstream_task = &plan.tasks[up];
                (
                    upstream_task.stage,
                    self.results.cache_dir(&upstream_task.key),
                )
            })
            .collect();
        let spec = WorkerSpec {
            key: task.key.clone(),
            task: task.spec.clone(),
            upstream,
            output: self.results.cache_dir(&task.key),
        };
        let task_dir = self.results.task_dir(&task.key);
        std::fs::create_dir_all(&task_dir).map_err(io_error(&task_dir))?;
        let spec_path = task_dir.join("spec.json");
        let json =
            serde_json::to_vec_pretty(&spec).map_err(|err| ExecError::Worker(err.to_string()))?;
        crate::util::write_atomic(&spec_path, &json).map_err(io_error(&spec_path))?;
        let attempt =
            store.start_attempt(&task.key, self.run_id, &task_dir.display().to_string())?;
        let log_path = task_dir.join(format!("attempt-{}.log", attempt.number));
        self.states[index] = State::Running;
        self.summary.executed += 1;
        self.observer.started(index, task);
        Ok(Launch {
            index,
            attempt,
            spec_path,
            log_path,
        })
    }

    /// Records how the attempt of `launch` ended and moves its task on.
    pub fn conclude(
        &mut self,
        store: &mut Store,
        launch: &Launch,
        ending: Ending,
    ) -> Result<(), ExecError> {
        let index = launch.index;
        let task = &self.plan.tasks[index];
        let (end, seconds, exit_code, error) = match ending {
            Ending::Exited { seconds } => match read_outcome(&self.results.cache_dir(&task.key)) {
                Ok(outcome) => {
                    store.record_success(&task.key, launch.attempt, &outcome)?;
                    self.states[index] = State::Done;
                    self.summary.succeeded += 1;
                    let result = TaskResult::Succeeded {
                        seconds: outcome.seconds,
                    };
                    self.observer.finished(index, task, &result);
                    return Ok(());
                }
                Err(error) => (AttemptEnd::Failed, seconds, Some(0), error),
            },
            Ending::Failed {
                end,
                seconds,
                exit_code,
                error,
            } => (end, seconds, exit_code, error),
        };
        store.record_failure(&task.key, launch.attempt, end, seconds, exit_code, &error)?;
        let result = match end {
            AttemptEnd::Interrupted | AttemptEnd::Cancelled => {
                self.states[index] = State::Skipped;
                self.summary.interrupted += 1;
                TaskResult::Interrupted
            }
            _ => {
                self.states[index] = State::Failed;
                self.summary.failed += 1;
                self.failure_seen = true;
                TaskResult::Failed { error }
            }
        };
        self.observer.finished(index, task, &result);
        Ok(())
    }

    /// Ends the run: tasks that never started are reported as skipped, with the reason.
    pub fn finish(mut self, stopped: bool) -> ExecSummary {
        for index in 0..self.states.len() {
            if self.states[index] != State::Waiting {
                continue;
            }
            self.states[index] = State::Skipped;
            self.summary.skipped += 1;
            let reason = if stopped {
                "not started: interrupted".to_string()
            } else if self.plan.tasks[index]
                .upstream
                .iter()
                .any(|&up| matches!(self.decisions[up].action, Action::Run))
            {
                "not started: an upstream task failed or fail-fast stopped the run".to_string()
            } else {
                "not started: fail-fast stopped the run (use --keep-going)".to_string()
            };
            let result = TaskResult::Skipped { reason };
            self.observer
                .finished(index, &self.plan.tasks[index], &result);
        }
        self.summary
    }
}

fn read_outcome(dir: &Path) -> Result<TaskOutcome, String> {
    let path = dir.join(OUTCOME);
    let bytes = std::fs::read(&path).map_err(|err| {
        format!(
            "the worker exited 0 but {} is unreadable: {err}",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|err| format!("{}: {err}", path.display()))
}

/// The last `lines` lines of a log file (empty when it cannot be read).
pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// "worker failed (how); log PATH:" and the end of the log: the error a user reads.
pub(super) fn describe_failure(how: &str, log_path: &Path, tail: &str) -> String {
    if tail.is_empty() {
        format!("worker failed ({how}); log {}", log_path.display())
    } else {
        format!("worker failed ({how}); log {}:\n{tail}", log_path.display())
    }
}
