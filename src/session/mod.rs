/*!
A run session: one `repro run` from an experiment file to a concluded run, as a library call.

[`Session::open`] takes the results directory's lock and clears what an abruptly stopped run
left behind (Slurm jobs still queued, attempts still marked running, partial outputs);
[`Session::plan`] reads, checks and plans the experiment ([`prepare`]) and decides what each
task does; [`Session::execute`] records the experiment, its plan and the run in the store,
runs the tasks and concludes the run with a typed [`RunStatus`]. A front end (the CLI, a
notebook binding, a test) supplies the progress observer and the stop flag, and prints.

This module owns the order of those steps and nothing else: what runs and how is `exec`'s,
how an experiment is read is `config`'s, the DAG is `plan`'s. It must not print.
*/

mod prepare;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::exec::{
    cancel_jobs, capture_environment, decide, execute, Action, DecideOptions, Decision, ExecError,
    ExecOptions, ExecSummary, Executor, ResultsDir, ResultsLock, RunObserver,
};
use crate::plan::Plan;
use crate::store::{CellRecord, CellRow, ExperimentRow, RunCounts, Store, StoreError, TaskRecord};
use crate::task::Stage;

pub use prepare::{hash_model_dir, prepare, PrepareError, Prepared};

/// Why a session could not run (a task failing is not an error: it is in the [`RunReport`]).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("no experiment `{name}` in {} (recorded: {known})", store.display())]
    UnknownExperiment {
        name: String,
        store: PathBuf,
        /// The recorded experiments' names, or `none`.
        known: String,
    },
}

/// Where a session's tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Worker processes on this machine.
    Local,
    /// Slurm job arrays, with the experiment's `[slurm]` settings.
    Slurm,
}

/// How a session plans and runs.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Where datasets are imported to, and the read-only mirror they are imported from.
    pub data_dir: PathBuf,
    pub mirror: Option<PathBuf>,
    pub executor: ExecutorKind,
    /// Tasks running at once (local executor).
    pub jobs: usize,
    /// Compute threads in all, split between the running tasks; `None`: every core.
    pub threads: Option<usize>,
    pub keep_going: bool,
    pub retry_failed: bool,
    /// Stages whose tasks (and what depends on them) run again.
    pub force: Vec<Stage>,
    /// The command line recorded with the run.
    pub command: String,
    /// The `repro` binary that runs `repro worker`.
    pub program: PathBuf,
}

/// What [`Session::open`] found of an earlier run that stopped abruptly, for the front end
/// to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Slurm jobs it left queued, now cancelled.
    CancelledJobs(Vec<String>),
    /// Slurm jobs it left queued that could not be cancelled.
    UncancelledJobs { jobs: Vec<String>, error: String },
    /// Attempts it left marked running, now recorded as lost (their tasks run again).
    LostAttempts(usize),
}

/// A planned experiment and what each of its tasks will do.
#[derive(Debug)]
pub struct Planned {
    pub prepared: Prepared,
    /// One per task of the plan, in plan order.
    pub decisions: Vec<Decision>,
}

impl Planned {
    pub fn plan(&self) -> &Plan {
        &self.prepared.plan
    }

    /// Tasks that will run (neither cached nor blocked).
    pub fn to_run(&self) -> usize {
        self.decisions
            .iter()
            .filter(|decision| decision.action == Action::Run)
            .count()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    /// A task failed, or was not run because one upstream of it failed.
    Failed,
    /// Stopped (Ctrl-C, or the stop flag); the same command resumes it.
    Interrupted,
}

impl RunStatus {
    /// The name the store records.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// How a run that executed `summary` ended; `stopped` when its stop flag was set.
    fn of(summary: &ExecSummary, stopped: bool) -> Self {
        if summary.interrupted > 0 || stopped {
            RunStatus::Interrupted
        } else if summary.failed > 0 || summary.skipped > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        }
    }
}

/// A concluded run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub experiment: String,
    pub run_id: i64,
    pub status: RunStatus,
    /// Wall time since the session was opened.
    pub seconds: f64,
    pub summary: ExecSummary,
    pub encode_tasks: usize,
    /// The experiment's cells with their measures, as the store now holds them.
    pub cells: Vec<CellRow>,
}

/// A results directory opened for reading (reports, comparisons, status), beside a running
/// scheduler if there is one.
pub struct Recorded {
    pub results: ResultsDir,
    pub store: Store,
}

impl Recorded {
    pub fn open(root: &Path) -> Result<Recorded, SessionError> {
        let results = ResultsDir::new(root);
        let store = Store::open_read_only(&results.store_path())?;
        Ok(Recorded { results, store })
    }

    /// The recorded experiment named `given`, or named inside the experiment file `given`.
    pub fn experiment(&self, given: &str) -> Result<ExperimentRow, SessionError> {
        let path = Path::new(given);
        let name = if path.is_file() {
            crate::config::Experiment::read(path)?.name
        } else {
            given.to_string()
        };
        if let Some(row) = self.store.experiment(&name)? {
            return Ok(row);
        }
        let known: Vec<String> = self
            .store
            .experiments()?
            .into_iter()
            .map(|row| row.name)
            .collect();
        Err(SessionError::UnknownExperiment {
            name,
            store: self.store.path().to_path_buf(),
            known: if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            },
        })
    }

    /// Every experiment named in `given`, in order; every recorded one when `given` is empty.
    pub fn experiments(&self, given: &[String]) -> Result<Vec<ExperimentRow>, SessionError> {
        if given.is_empty() {
            return Ok(self.store.experiments()?);
        }
        given.iter().map(|name| self.experiment(name)).collect()
    }
}

/// One scheduler's hold on a results directory, from opening to the run's conclusion.
pub struct Session {
    results: ResultsDir,
    _lock: ResultsLock,
    store: Store,
    recoveries: Vec<Recovery>,
    opened: Instant,
}

impl Session {
    /// Takes the lock of the results directory `root` (one scheduler per directory), opens
    /// its store and clears an abruptly stopped run's leftovers: its queued Slurm jobs would
    /// otherwise write into the cache while their tasks run again.
    pub fn open(root: &Path) -> Result<Session, SessionError> {
        let opened = Instant::now();
        let results = ResultsDir::new(root);
        let lock = results.lock()?;
        let mut store = Store::open(&results.store_path())?;
        let mut recoveries = Vec::new();
        let abandoned = store.abandoned_jobs()?;
        if !abandoned.is_empty() {
            recoveries.push(match cancel_jobs(&abandoned) {
                Ok(()) => Recovery::CancelledJobs(abandoned),
                Err(error) => Recovery::UncancelledJobs {
                    jobs: abandoned,
                    error,
                },
            });
        }
        let lost = store.recover_abandoned()?;
        results.discard_partial()?;
        if lost > 0 {
            recoveries.push(Recovery::LostAttempts(lost));
        }
        Ok(Session {
            results,
            _lock: lock,
            store,
            recoveries,
            opened,
        })
    }

    pub fn results(&self) -> &ResultsDir {
        &self.results
    }

    pub fn recoveries(&self) -> &[Recovery] {
        &self.recoveries
    }

    /// Reads, checks and plans the experiment at `path`, then decides every task (before
    /// the plan is recorded, so that "what changed" compares with the previous plan).
    pub fn plan(&mut self, path: &Path, options: &SessionOptions) -> Result<Planned, SessionError> {
        let prepared = prepare(
            path,
            &options.data_dir,
            options.mirror.as_deref(),
            Some(&mut self.store),
        )?;
        let known = self
            .store
            .experiment(&prepared.experiment.name)?
            .map(|row| row.id);
        let decisions = decide(
            &prepared.plan,
            &self.store,
            &self.results,
            known,
            &DecideOptions {
                force: options.force.clone(),
                retry_failed: options.retry_failed,
            },
        )?;
        Ok(Planned {
            prepared,
            decisions,
        })
    }

    /// Records the experiment, its plan and a new run, runs the tasks `planned` decided to
    /// run, and concludes the run. `stop` ends it early (Ctrl-C): the run is then
    /// [`RunStatus::Interrupted`] and the same call resumes it.
    pub fn execute(
        &mut self,
        planned: &Planned,
        options: &SessionOptions,
        observer: &dyn RunObserver,
        stop: &AtomicBool,
    ) -> Result<RunReport, SessionError> {
        let experiment = &planned.prepared.experiment;
        let plan = planned.plan();
        let experiment_id = self.record_plan(planned)?;
        let (exec_options, threads) = exec_options(options, experiment);
        let environment = capture_environment(Path::new("."), threads);
        let run_id = self.store.begin_run(
            experiment_id,
            &options.command,
            exec_options.executor.name(),
            exec_options.jobs,
            &environment,
        )?;
        let executed = execute(
            plan,
            &planned.decisions,
            &mut self.store,
            &self.results,
            run_id,
            &exec_options,
            observer,
            stop,
        );
        let summary = match executed {
            Ok(summary) => summary,
            Err(err) => {
                self.store
                    .end_run(run_id, RunStatus::Failed.name(), RunCounts::default())?;
                return Err(err.into());
            }
        };
        let status = RunStatus::of(&summary, stop.load(Ordering::SeqCst));
        self.store.end_run(
            run_id,
            status.name(),
            RunCounts {
                total: summary.total,
                run: summary.executed,
                cached: summary.cached,
                failed: summary.failed,
            },
        )?;
        let cells = self
            .store
            .cells(experiment_id, &crate::report::RESULT_STAGES)?;
        Ok(RunReport {
            experiment: experiment.name.clone(),
            run_id,
            status,
            seconds: self.opened.elapsed().as_secs_f64(),
            summary,
            encode_tasks: plan.count(Stage::Encode),
            cells,
        })
    }

    /// Records the experiment (file and text) and its plan: tasks by key with their inputs
    /// and upstream keys, cells with their tasks. Returns the experiment's id.
    fn record_plan(&mut self, planned: &Planned) -> Result<i64, StoreError> {
        let experiment = &planned.prepared.experiment;
        let plan = planned.plan();
        let experiment_id = self.store.upsert_experiment(
            &experiment.name,
            &experiment.path.display().to_string(),
            &experiment.description,
            &crate::util::sha256_bytes(experiment.text.as_bytes()),
        )?;
        self.store
            .set_experiment_text(experiment_id, &experiment.text)?;
        let key = |index: usize| plan.tasks[index].key.clone();
        let tasks: Vec<TaskRecord> = plan
            .tasks
            .iter()
            .map(|task| TaskRecord {
                key: task.key.clone(),
                stage: task.stage,
                inputs: task.inputs.to_string(),
                upstream: task.upstream.iter().map(|&up| key(up)).collect(),
            })
            .collect();
        let cells: Vec<CellRecord> = plan
            .cells
            .iter()
            .map(|cell| CellRecord {
                key: cell.key.clone(),
                params: serde_json::to_string(&cell.cell.params()).unwrap_or_default(),
                tasks: cell
                    .tasks
                    .iter()
                    .map(|&(stage, index)| (stage, key(index)))
                    .collect(),
            })
            .collect();
        self.store.record_plan(experiment_id, &tasks, &cells)?;
        Ok(experiment_id)
    }
}

/// How the run's tasks execute, and the compute threads in all (every core by default).
fn exec_options(
    options: &SessionOptions,
    experiment: &crate::config::Experiment,
) -> (ExecOptions, usize) {
    let threads = options.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let jobs = options.jobs.max(1);
    let executor = match options.executor {
        ExecutorKind::Local => Executor::Local,
        ExecutorKind::Slurm => Executor::Slurm(experiment.slurm.clone()),
    };
    let exec_options = ExecOptions {
        executor,
        jobs,
        threads_per_task: (threads / jobs).max(1),
        keep_going: options.keep_going,
        program: options.program.clone(),
        experiment: experiment.name.clone(),
    };
    (exec_options, threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_per_results_directory() {
        let root = tempfile::tempdir().unwrap();
        let first = Session::open(root.path()).unwrap();
        assert!(first.recoveries().is_empty());
        let second = Session::open(root.path()).err().expect("the lock is held");
        assert!(
            matches!(second, SessionError::Exec(ExecError::Locked(_))),
            "{second}"
        );
        drop(first);
        Session::open(root.path()).unwrap();
    }

    #[test]
    fn an_unknown_experiment_names_the_recorded_ones() {
        let root = tempfile::tempdir().unwrap();
        drop(Session::open(root.path()).unwrap());
        let recorded = Recorded::open(root.path()).unwrap();
        assert!(recorded.experiments(&[]).unwrap().is_empty());
        let message = recorded.experiment("nope").unwrap_err().to_string();
        assert!(
            message.contains("no experiment `nope`") && message.contains("recorded: none"),
            "{message}"
        );
    }
}
