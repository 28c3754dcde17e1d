//! `repro run`, `repro check`, `repro status` and the hidden `repro worker`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::GlobalArgs;
use crate::exec::{
    cancel_jobs, capture_environment, decide, execute, prepare, run_element, run_worker, Action,
    DecideOptions, ExecOptions, ExecSummary, Executor, ResultsDir, RunObserver, TaskResult,
};
use crate::plan::{Stage, Task};
use crate::store::{CellRow, RunCounts, Store};

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
    let started = Instant::now();
    let results = ResultsDir::new(&args.results.results);
    let _lock = results.lock()?;
    let mut store = Store::open(&results.store_path())?;
    // Jobs a scheduler that died left in a batch queue would write into the cache while
    // their tasks run again.
    let abandoned = store.abandoned_jobs()?;
    if !abandoned.is_empty() {
        if let Err(error) = cancel_jobs(&abandoned) {
            eprintln!(
                "warning: could not cancel {} Slurm job(s) of an earlier run ({}): {error}",
                abandoned.len(),
                abandoned.join(", ")
            );
        } else if !global.quiet {
            eprintln!(
                "note: cancelled {} Slurm job(s) of an earlier run that stopped abruptly: {}",
                abandoned.len(),
                abandoned.join(", ")
            );
        }
    }
    let recovered = store.recover_abandoned()?;
    results.discard_partial()?;
    if recovered > 0 && !global.quiet {
        eprintln!("note: {recovered} attempt(s) of an earlier run that stopped abruptly are recorded as lost; their tasks run again");
    }
    let prepared = prepare(
        &args.experiment,
        &global.data_dir,
        global.mirror.as_deref(),
        Some(&mut store),
    )?;
    let experiment = &prepared.experiment;
    let plan = &prepared.plan;
    let executor = match args.executor {
        ExecutorName::Local => Executor::Local,
        ExecutorName::Slurm => Executor::Slurm(experiment.slurm.clone()),
    };
    let known = store.experiment(&experiment.name)?.map(|row| row.id);
    let decisions = decide(
        plan,
        &store,
        &results,
        known,
        &DecideOptions {
            force: args.force.clone(),
            retry_failed: args.retry_failed,
        },
    )?;
    if args.explain {
        print_explanation(plan, &decisions, args.json)?;
        return Ok(());
    }

    let experiment_id = store.upsert_experiment(
        &experiment.name,
        &experiment.path.display().to_string(),
        &experiment.description,
        &crate::util::sha256_bytes(experiment.text.as_bytes()),
    )?;
    store.set_experiment_text(experiment_id, &experiment.text)?;
    let tasks: Vec<crate::store::TaskRecord> = plan
        .tasks
        .iter()
        .map(|task| crate::store::TaskRecord {
            key: task.key.clone(),
            stage: task.stage,
            inputs: task.inputs.to_string(),
            upstream: task
                .upstream
                .iter()
                .map(|&up| plan.tasks[up].key.clone())
                .collect(),
        })
        .collect();
    let cells: Vec<crate::store::CellRecord> = plan
        .cells
        .iter()
        .map(|cell| crate::store::CellRecord {
            key: cell.key.clone(),
            params: serde_json::to_string(&cell.cell.params()).unwrap_or_default(),
            tasks: cell
                .tasks
                .iter()
                .map(|(stage, index)| (*stage, plan.tasks[*index].key.clone()))
                .collect(),
        })
        .collect();
    store.record_plan(experiment_id, &tasks, &cells)?;

    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let jobs = args.jobs.max(1);
    let environment = capture_environment(Path::new("."), threads);
    let command: Vec<String> = std::env::args().collect();
    let run_id = store.begin_run(
        experiment_id,
        &command.join(" "),
        executor.name(),
        jobs,
        &environment,
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // A second handler cannot be installed in one process; tests call `run` once.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let to_run = decisions.iter().filter(|d| d.action == Action::Run).count();
    let observer = BarsObserver::new(global.quiet || args.json, to_run);
    let options = ExecOptions {
        executor,
        jobs,
        threads_per_task: (threads / jobs).max(1),
        keep_going: args.keep_going,
        program: std::env::current_exe().context("locating the repro binary")?,
        experiment: experiment.name.clone(),
    };
    let summary = execute(
        plan, &decisions, &mut store, &results, run_id, &options, &observer, &stop,
    );
    observer.finish();
    let summary = match summary {
        Ok(summary) => summary,
        Err(err) => {
            store.end_run(run_id, "failed", RunCounts::default())?;
            return Err(err.into());
        }
    };
    let status = if summary.interrupted > 0 || stop.load(Ordering::SeqCst) {
        "interrupted"
    } else if summary.failed > 0 || summary.skipped > 0 {
        "failed"
    } else {
        "succeeded"
    };
    store.end_run(
        run_id,
        status,
        RunCounts {
            total: summary.total,
            run: summary.executed,
            cached: summary.cached,
            failed: summary.failed,
        },
    )?;
    let cell_rows = store.cells(experiment_id, &crate::report::RESULT_STAGES)?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let output = serde_json::json!({
            "experiment": experiment.name,
            "run_id": run_id,
            "status": status,
            "seconds": seconds,
            "summary": summary,
            "encode_tasks": plan.count(Stage::Encode),
            "cells": cell_rows,
        });
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        print_cells(&experiment.name, &cell_rows)?;
        print_summary(&summary, status, seconds, &results);
    }
    match status {
        "succeeded" => Ok(()),
        "interrupted" => anyhow::bail!("interrupted; run the same command again to resume"),
        _ => anyhow::bail!(
            "{} task(s) failed, {} not run; see `repro status {} --tasks`",
            summary.failed,
            summary.skipped,
            experiment.name
        ),
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

fn print_summary(summary: &ExecSummary, status: &str, seconds: f64, results: &ResultsDir) {
    println!(
        "# {status}: {} tasks: {} ran ({} succeeded, {} failed, {} interrupted), {} cached, {} not run · {:.1} s · results in {}",
        summary.total,
        summary.executed,
        summary.succeeded,
        summary.failed,
        summary.interrupted,
        summary.cached,
        summary.skipped,
        seconds,
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
    let results = ResultsDir::new(&args.results.results);
    let store = Store::open_read_only(&results.store_path())?;
    let experiments = match &args.experiment {
        Some(given) => vec![find_experiment(&store, given)?],
        None => store.experiments()?,
    };
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
        print_cells(&experiment.name, &cells)?;
        if args.tasks {
            println!();
            println!(
                "{:<12}  {:<6}  {:<11}  {:>8}  {:>9}  {:>5}  error",
                "task", "stage", "status", "attempts", "seconds", "cells"
            );
            for task in &tasks {
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
        println!();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}

/// The recorded experiment named `given`, or named inside the experiment file `given`.
pub(super) fn find_experiment(
    store: &Store,
    given: &str,
) -> anyhow::Result<crate::store::ExperimentRow> {
    let path = Path::new(given);
    let name = if path.is_file() {
        crate::config::Experiment::read(path)?.name
    } else {
        given.to_string()
    };
    store.experiment(&name)?.with_context(|| {
        let known: Vec<String> = store
            .experiments()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect();
        format!(
            "no experiment `{name}` in {} (recorded: {})",
            store.path().display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    })
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
    let results = ResultsDir::new(&args.results.results);
    let store = Store::open_read_only(&results.store_path())?;
    let experiment = match &args.experiment {
        Some(given) => Some(find_experiment(&store, given)?.id),
        None => None,
    };
    let verification = crate::exec::verify(&store, &results, experiment)?;
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
