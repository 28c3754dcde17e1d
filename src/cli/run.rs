//! `repro run`, `repro check`, `repro status` and the hidden `repro worker`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::GlobalArgs;
use crate::exec::{run_element, run_worker, Action, ResultsDir, RunObserver, TaskResult};
use crate::plan::Task;
use crate::session::{
    prepare, ExecutorKind, Recorded, Recovery, RunReport, RunStatus, Session, SessionOptions,
};
use crate::store::{CellRow, RunRow, TaskRow};
use crate::task::Stage;

/// Where results live: `--results` or `REPRO_RESULTS`, default `results/`.
#[derive(Debug, Clone, clap::Args)]
pub struct ResultsArgs {
    /// Results directory: the SQLite store and the task cache.
    #[arg(long = "results", env = "REPRO_RESULTS", default_value = "results")]
    pub results: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The experiment file (TOML).
    pub experiment: PathBuf,
    #[command(flatten)]
    pub results: ResultsArgs,
    /// Where tasks run: worker processes here, or Slurm job arrays (settings in the
    /// experiment's `[slurm]` table).
    #[arg(long, value_enum, default_value_t = ExecutorName::Local)]
    pub executor: ExecutorName,
    /// Tasks running at once (local executor; under Slurm see `slurm.max_concurrent`).
    #[arg(long, short = 'j', default_value_t = 1)]
    pub jobs: usize,
    /// Compute threads in all (split between the running tasks). Default: every core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Go on with independent tasks after a task fails (default: stop starting new ones).
    #[arg(long)]
    pub keep_going: bool,
    /// Run again the tasks whose last attempt failed.
    #[arg(long)]
    pub retry_failed: bool,
    /// Re-run every task of this stage (and what depends on it); repeatable.
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<Stage>,
    /// Say for each task whether it would run and why, then stop.
    #[arg(long)]
    pub explain: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorName {
    Local,
    Slurm,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The experiment file (TOML).
    pub experiment: PathBuf,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Experiment name (as in its `[experiment] name`) or file; all experiments when absent.
    pub experiment: Option<String>,
    #[command(flatten)]
    pub results: ResultsArgs,
    /// List every task, not only the cells.
    #[arg(long)]
    pub tasks: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Experiment name or file; every experiment of the store when absent.
    pub experiment: Option<String>,
    #[command(flatten)]
    pub results: ResultsArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The task spec written by the scheduler (with --element: a submission's tasks.tsv).
    pub spec: PathBuf,
    /// Run as a Slurm array element: the task on line SLURM_ARRAY_TASK_ID of SPEC, with a
    /// result file for the scheduler.
    #[arg(long)]
    pub element: bool,
}

pub fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    if args.element {
        let code = run_element(&args.spec)?;
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    run_worker(&args.spec)?;
    Ok(())
}

pub fn check(global: &GlobalArgs, args: &CheckArgs) -> anyhow::Result<()> {
    let prepared = prepare(
        &args.experiment,
        &global.data_dir,
        global.mirror.as_deref(),
        None,
    )?;
    let plan = &prepared.plan;
    if args.json {
        let tasks: Vec<serde_json::Value> = plan
            .tasks
            .iter()
            .map(|task| {
                serde_json::json!({
                    "key": task.key, "stage": task.stage, "label": task.label,
                    "inputs": task.inputs,
                })
            })
            .collect();
        let cells: Vec<serde_json::Value> = plan
            .cells
            .iter()
            .map(|cell| serde_json::json!({"key": cell.key, "params": cell.cell.params()}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "experiment": prepared.experiment.name, "cells": cells, "tasks": tasks,
            }))?
        );
    } else {
        println!(
            "{}: ok — experiment `{}`: {} cells, {} tasks ({} encode, {} eval)",
            args.experiment.display(),
            prepared.experiment.name,
            plan.cells.len(),
            plan.tasks.len(),
            plan.count(Stage::Encode),
            plan.count(Stage::Eval)
        );
    }
    Ok(())
}

pub fn run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<()> {
    let mut session = Session::open(&args.results.results)?;
    print_recoveries(session.recoveries(), global.quiet);
    let options = SessionOptions {
        data_dir: global.data_dir.clone(),
        mirror: global.mirror.clone(),
        executor: match args.executor {
            ExecutorName::Local => ExecutorKind::Local,
            ExecutorName::Slurm => ExecutorKind::Slurm,
        },
        jobs: args.jobs,
        threads: args.threads,
        keep_going: args.keep_going,
        retry_failed: args.retry_failed,
        force: args.force.clone(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        program: std::env::current_exe().context("locating the repro binary")?,
    };
    let planned = session.plan(&args.experiment, &options)?;
    if args.explain {
        return print_explanation(planned.plan(), &planned.decisions, args.json);
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // A second handler cannot be installed in one process; tests call `run` once.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let observer = BarsObserver::new(global.quiet || args.json, planned.to_run());
    let report = session.execute(&planned, &options, &observer, &stop);
    observer.finish();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_cells(&report.experiment, &report.cells)?;
        print_summary(&report, session.results());
    }
    match report.status {
        RunStatus::Succeeded => Ok(()),
        RunStatus::Interrupted => {
            anyhow::bail!("interrupted; run the same command again to resume")
        }
        RunStatus::Failed => anyhow::bail!(
            "{} task(s) failed, {} not run; see `repro status {} --tasks`",
            report.summary.failed,
            report.summary.skipped,
            report.experiment
        ),
    }
}

/// What opening the results directory did to an earlier run's leftovers; warnings even when
/// `quiet`.
fn print_recoveries(recoveries: &[Recovery], quiet: bool) {
    for recovery in recoveries {
        match recovery {
            Recovery::CancelledJobs(_) | Recovery::LostAttempts(_) if quiet => {}
            Recovery::CancelledJobs(jobs) => eprintln!(
                "note: cancelled {} Slurm job(s) of an earlier run that stopped abruptly: {}",
                jobs.len(),
                jobs.join(", ")
            ),
            Recovery::UncancelledJobs { jobs, error } => eprintln!(
                "warning: could not cancel {} Slurm job(s) of an earlier run ({}): {error}",
                jobs.len(),
                jobs.join(", ")
            ),
            Recovery::LostAttempts(count) => eprintln!(
                "note: {count} attempt(s) of an earlier run that stopped abruptly are recorded as lost; their tasks run again"
            ),
        }
    }
}

fn print_explanation(
    plan: &crate::plan::Plan,
    decisions: &[crate::exec::Decision],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let rows: Vec<serde_json::Value> = plan
            .tasks
            .iter()
            .zip(decisions)
            .map(|(task, decision)| {
                serde_json::json!({
                    "key": task.key, "stage": task.stage, "label": task.label,
                    "action": decision.action, "reason": decision.reason,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for (task, decision) in plan.tasks.iter().zip(decisions) {
        let action = match decision.action {
            Action::Run => "run",
            Action::Cached => "cached",
            Action::Blocked => "blocked",
        };
        println!(
            "{action:<8} {} {}: {}",
            &task.key[..12],
            task.label,
            decision.reason
        );
    }
    let count = |action| decisions.iter().filter(|d| d.action == action).count();
    println!(
        "# {} to run, {} cached, {} blocked",
        count(Action::Run),
        count(Action::Cached),
        count(Action::Blocked)
    );
    Ok(())
}

fn print_summary(report: &RunReport, results: &ResultsDir) {
    let summary = &report.summary;
    println!(
        "# {}: {} tasks: {} ran ({} succeeded, {} failed, {} interrupted), {} cached, {} not run · {:.1} s · results in {}",
        report.status.name(),
        summary.total,
        summary.executed,
        summary.succeeded,
        summary.failed,
        summary.interrupted,
        summary.cached,
        summary.skipped,
        report.seconds,
        results.root().display()
    );
}

/// A table of cells: the parameters that vary, the state, the measures.
pub(super) fn print_cells(experiment: &str, cells: &[CellRow]) -> anyhow::Result<()> {
    if cells.is_empty() {
        println!("(no cells)");
        return Ok(());
    }
    let rows: Vec<(String, CellRow)> = cells
        .iter()
        .map(|cell| (experiment.to_string(), cell.clone()))
        .collect();
    let table = crate::report::cells_table(&rows)?;
    let mut columns = crate::report::varying_parameters(&table.frame, &table.measures)?;
    columns.push("state".to_string());
    columns.extend(table.measures.iter().cloned());
    print!("{}", crate::report::format_table(&table.frame, &columns)?);
    Ok(())
}

pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let recorded = Recorded::open(&args.results.results)?;
    let experiments = recorded.experiments(args.experiment.as_slice())?;
    let (results, store) = (&recorded.results, &recorded.store);
    // What the store calls running is abandoned when no scheduler holds the lock.
    let live = results.scheduler_running();
    let shown = |status: &'static str| match status {
        "running" if !live => "abandoned",
        other => other,
    };
    let mut json = Vec::new();
    for experiment in &experiments {
        let cells = store.cells(experiment.id, &crate::report::RESULT_STAGES)?;
        let tasks = store.tasks(experiment.id)?;
        let runs = store.runs(experiment.id)?;
        if args.json {
            json.push(serde_json::json!({
                "experiment": experiment, "cells": cells, "tasks": tasks, "runs": runs,
                "scheduler_running": live,
            }));
            continue;
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for task in &tasks {
            *counts.entry(shown(task.status.name())).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "## {} ({}): {} cells, {} tasks: {}",
            experiment.name,
            experiment.path,
            cells.len(),
            tasks.len(),
            counts.join(", ")
        );
        if let Some(run) = runs.first() {
            print_last_run(run, live);
        }
        print_cells(&experiment.name, &cells)?;
        if args.tasks {
            print_tasks(&tasks, &shown);
        }
        println!();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}

fn print_last_run(run: &RunRow, live: bool) {
    println!(
        "# last run #{}: {} · started {} · ended {} · git {}{} · {} on {}",
        run.id,
        if run.status == "running" && !live {
            "abandoned (its scheduler is gone)"
        } else {
            run.status.as_str()
        },
        run.started_at,
        run.ended_at.as_deref().unwrap_or("-"),
        run.git_commit
            .as_deref()
            .map(|c| &c[..c.len().min(12)])
            .unwrap_or("-"),
        if run.git_dirty == Some(true) {
            " (dirty)"
        } else {
            ""
        },
        run.cpu_model,
        run.hostname
    );
}

/// One line per task; `shown` names a status as the reader should see it.
fn print_tasks(tasks: &[TaskRow], shown: &dyn Fn(&'static str) -> &'static str) {
    println!();
    println!(
        "{:<12}  {:<6}  {:<11}  {:>8}  {:>9}  {:>5}  error",
        "task", "stage", "status", "attempts", "seconds", "cells"
    );
    for task in tasks {
        println!(
            "{:<12}  {:<6}  {:<11}  {:>8}  {:>9}  {:>5}  {}",
            &task.key[..12],
            task.stage,
            shown(task.status.name()),
            task.attempts,
            task.seconds
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "-".into()),
            task.cells,
            task.error
                .as_deref()
                .and_then(|e| e.lines().last())
                .unwrap_or("")
        );
    }
}

/// An overall bar (tasks, with ETA) and one bar per running task.
struct BarsObserver {
    multi: MultiProgress,
    overall: ProgressBar,
    tasks: Mutex<BTreeMap<usize, ProgressBar>>,
    quiet: bool,
}

impl BarsObserver {
    fn new(quiet: bool, total: usize) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} tasks (ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        overall.set_prefix("run");
        BarsObserver {
            multi,
            overall,
            tasks: Mutex::new(BTreeMap::new()),
            quiet,
        }
    }

    fn finish(&self) {
        self.overall.finish_and_clear();
    }
}

impl RunObserver for BarsObserver {
    fn started(&self, index: usize, task: &Task) {
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} {msg} {bar:30} {pos}/{len} ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(task.stage.name());
        bar.set_message(task.label.clone());
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.insert(index, bar);
        }
    }

    fn phase(&self, index: usize, name: &str, total: usize) {
        if let Some(bar) = self.tasks.lock().ok().and_then(|t| t.get(&index).cloned()) {
            bar.reset();
            bar.set_length(total as u64);
            bar.set_prefix(name.to_string());
        }
    }

    fn advance(&self, index: usize, done: usize) {
        if let Some(bar) = self.tasks.lock().ok().and_then(|t| t.get(&index).cloned()) {
            bar.inc(done as u64);
        }
    }

    fn finished(&self, index: usize, task: &Task, result: &TaskResult) {
        if let Some(bar) = self.tasks.lock().ok().and_then(|mut t| t.remove(&index)) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        match result {
            TaskResult::Succeeded { .. } => self.overall.inc(1),
            TaskResult::Failed { error } => {
                self.overall.inc(1);
                if !self.quiet {
                    let _ = self
                        .multi
                        .println(format!("failed: {}: {error}", task.label));
                }
            }
            TaskResult::Interrupted | TaskResult::Skipped { .. } => {}
        }
    }
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let recorded = Recorded::open(&args.results.results)?;
    let experiment = match &args.experiment {
        Some(given) => Some(recorded.experiment(given)?.id),
        None => None,
    };
    let verification = crate::exec::verify(&recorded.store, &recorded.results, experiment)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verification)?);
    } else {
        println!(
            "{} cached outputs checked: {} whole, {} damaged, {} written before manifests (not verifiable)",
            verification.checked,
            verification.checked - verification.damaged.len() - verification.without_manifest,
            verification.damaged.len(),
            verification.without_manifest
        );
        for damaged in &verification.damaged {
            println!(
                "{}  {:<8}  {}",
                &damaged.key[..12.min(damaged.key.len())],
                damaged.stage,
                damaged.problem
            );
        }
    }
    if !verification.damaged.is_empty() {
        anyhow::bail!(
            "{} damaged output(s): the next `repro run` that needs them runs their tasks again",
            verification.damaged.len()
        );
    }
    Ok(())
}
