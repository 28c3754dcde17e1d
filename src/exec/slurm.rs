//! The Slurm executor: ready tasks go to the cluster as job arrays, one task per element.
//!
//! Each submission is a directory `slurm/<run>-<n>/` in the results directory (which every
//! node must see): `tasks.tsv` names one task per line, `job.sh` runs
//! `repro worker --element tasks.tsv`, and element `i` runs the task on line `i`
//! ([`run_element`]). The element runs the ordinary `repro worker` as a child process and
//! then writes a result file beside the attempt's log (`tasks/<key>/attempt-N.result.json`:
//! status, exit code or signal, timing, host, the log's tail, the outcome with its metrics
//! and artifacts), atomically. The scheduler stays the only writer of the SQLite store: it
//! polls the result files and `squeue`, ingests what finished, and submits the tasks whose
//! upstream tasks are done. An element that leaves the queue without a result is asked
//! about (`scontrol show job`, then `sacct`) so that a time limit, a node failure or an
//! out-of-memory kill is recorded as such, not as the task's own error. Ctrl-C cancels the
//! submitted arrays (`scancel`) and records their attempts as cancelled.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::local::{parse_progress, Progress};
use super::schedule::{describe_failure, log_tail, Ending, Launch, Schedule};
use super::worker::WorkerSpec;
use super::{io_error, ExecError, ExecOptions, OUTCOME};
use crate::config::SlurmSettings;
use crate::store::{AttemptEnd, Store};
use crate::task::TaskOutcome;

/// Slurm refuses arrays larger than its `MaxArraySize` (1001 by default).
const MAX_ARRAY: usize = 1000;

/// Lines of a worker's log kept in its result file.
const LOG_TAIL_LINES: usize = 20;

/// Consecutive failed `squeue` calls tolerated (a busy controller) before giving up.
const QUEUE_FAILURES_TOLERATED: usize = 20;

/// What an array element leaves for the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElementResult {
    pub key: String,
    pub attempt: i64,
    /// `succeeded` or `failed`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub seconds: f64,
    pub host: String,
    /// `<array job>_<index>`.
    pub job_id: String,
    pub log: PathBuf,
    pub log_tail: String,
    /// The task's cache directory and what the worker left there (metrics, artifacts).
    pub output: PathBuf,
    pub outcome: Option<TaskOutcome>,
}

/// One line of a submission's `tasks.tsv`.
#[derive(Debug, Clone, PartialEq)]
struct ElementLine {
    key: String,
    attempt: i64,
    spec: PathBuf,
    result: PathBuf,
    log: PathBuf,
    progress: PathBuf,
}

impl ElementLine {
    fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            self.key,
            self.attempt,
            self.spec.display(),
            self.result.display(),
            self.log.display(),
            self.progress.display()
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        let [key, attempt, spec, result, log, progress] = fields.as_slice() else {
            return None;
        };
        Some(ElementLine {
            key: key.to_string(),
            attempt: attempt.parse().ok()?,
            spec: PathBuf::from(spec),
            result: PathBuf::from(result),
            log: PathBuf::from(log),
            progress: PathBuf::from(progress),
        })
    }
}

impl ElementLine {
    /// The line of an attempt: its spec and log, and beside the log its result and progress
    /// files, all as absolute paths (elements may start elsewhere).
    fn of(launch: &Launch, key: &str, workdir: &Path) -> Self {
        let number = launch.attempt.number;
        let task_dir = launch
            .log_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        ElementLine {
            key: key.to_string(),
            attempt: number,
            spec: absolute(workdir, &launch.spec_path),
            result: absolute(
                workdir,
                &task_dir.join(format!("attempt-{number}.result.json")),
            ),
            log: absolute(workdir, &launch.log_path),
            progress: absolute(
                workdir,
                &task_dir.join(format!("attempt-{number}.progress")),
            ),
        }
    }
}

/// Runs the task of this array element (`SLURM_ARRAY_TASK_ID`) from a submission's
/// `tasks.tsv` and writes its result file; returns the exit code the element should end with.
pub fn run_element(tasks_file: &Path) -> Result<i32, ExecError> {
    let line = element_line(tasks_file)?;
    let spec_bytes = std::fs::read(&line.spec).map_err(io_error(&line.spec))?;
    let spec: WorkerSpec = serde_json::from_slice(&spec_bytes)
        .map_err(|err| ExecError::Worker(format!("{}: {err}", line.spec.display())))?;
    let started = Instant::now();
    let status = run_worker_process(&line)?;
    let seconds = started.elapsed().as_secs_f64();
    use std::os::unix::process::ExitStatusExt;
    let outcome = status
        .success()
        .then(|| std::fs::read(spec.output.join(OUTCOME)).ok())
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<TaskOutcome>(&bytes).ok());
    let job_id = match (
        std::env::var("SLURM_ARRAY_JOB_ID"),
        std::env::var("SLURM_ARRAY_TASK_ID"),
    ) {
        (Ok(array), Ok(index)) => format!("{array}_{index}"),
        _ => String::new(),
    };
    let result = ElementResult {
        key: line.key.clone(),
        attempt: line.attempt,
        status: if status.success() {
            "succeeded"
        } else {
            "failed"
        }
        .to_string(),
        exit_code: status.code(),
        signal: status.signal(),
        seconds,
        host: hostname(),
        job_id,
        log: line.log.clone(),
        log_tail: log_tail(&line.log, LOG_TAIL_LINES),
        output: spec.output.clone(),
        outcome,
    };
    let json =
        serde_json::to_vec_pretty(&result).map_err(|err| ExecError::Worker(err.to_string()))?;
    crate::util::write_atomic(&line.result, &json).map_err(io_error(&line.result))?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The line of `tasks.tsv` this array element (`SLURM_ARRAY_TASK_ID`) runs.
fn element_line(tasks_file: &Path) -> Result<ElementLine, ExecError> {
    let element: usize = std::env::var("SLURM_ARRAY_TASK_ID")
        .ok()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| {
            ExecError::Worker(
                "`repro worker --element` runs inside a Slurm array element (SLURM_ARRAY_TASK_ID is not set)"
                    .to_string(),
            )
        })?;
    let text = std::fs::read_to_string(tasks_file).map_err(io_error(tasks_file))?;
    text.lines()
        .nth(element)
        .and_then(ElementLine::parse)
        .ok_or_else(|| {
            ExecError::Worker(format!(
                "{}: no task on line {} for array element {element}",
                tasks_file.display(),
                element + 1
            ))
        })
}

/// Runs `repro worker` on the line's spec, its progress and log going to the line's files,
/// on exactly the CPUs Slurm allocated (`cpus_per_task`, 1 unless asked).
fn run_worker_process(line: &ElementLine) -> Result<std::process::ExitStatus, ExecError> {
    let threads = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .filter(|value| value.parse::<usize>().is_ok_and(|n| n > 0))
        .unwrap_or_else(|| "1".to_string());
    let program = std::env::current_exe().map_err(|source| ExecError::Spawn {
        program: PathBuf::from("repro"),
        source,
    })?;
    let log = std::fs::File::create(&line.log).map_err(io_error(&line.log))?;
    let progress = std::fs::File::create(&line.progress).map_err(io_error(&line.progress))?;
    Command::new(&program)
        .arg("--quiet")
        .arg("worker")
        .arg(&line.spec)
        .env("RAYON_NUM_THREADS", &threads)
        .stdin(Stdio::null())
        .stdout(Stdio::from(progress))
        .stderr(Stdio::from(log))
        .status()
        .map_err(|source| ExecError::Spawn { program, source })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// Slurm's client commands, found on `PATH` (`SLURM_CONF` tells them the cluster).
struct Slurm;

impl Slurm {
    fn command(program: &str) -> Command {
        let mut command = Command::new(program);
        command.stdin(Stdio::null());
        command
    }

    /// Runs a client command; its stdout, or its stderr as the error.
    fn output(program: &str, args: &[String]) -> Result<String, String> {
        let output = Self::command(program)
            .args(args)
            .output()
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "`{program}` is not installed: the Slurm executor needs Slurm's client commands on PATH"
                ),
                _ => format!("`{program}`: {err}"),
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "`{program} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Submits `script` as an array of `elements`, at most `throttle` running at once;
    /// returns the array's job id.
    fn submit(
        script: &Path,
        elements: usize,
        throttle: Option<usize>,
        arguments: &[String],
    ) -> Result<String, String> {
        let throttle = throttle
            .map(|limit| format!("%{limit}"))
            .unwrap_or_default();
        let mut args = vec![
            "--parsable".to_string(),
            format!("--array=0-{}{throttle}", elements.saturating_sub(1)),
        ];
        args.extend(arguments.iter().cloned());
        args.push(script.display().to_string());
        parse_job_id(&Self::output("sbatch", &args)?)
    }

    /// The queue's elements of the arrays `arrays`: `<array>_<index>` → state.
    fn queue(arrays: &[String]) -> Result<BTreeMap<String, String>, String> {
        let args = vec![
            "--noheader".to_string(),
            "--array".to_string(),
            "--format=%i|%T".to_string(),
            format!("--jobs={}", arrays.join(",")),
        ];
        match Self::output("squeue", &args) {
            Ok(output) => Ok(parse_queue(&output)),
            // Every array has left the queue and been forgotten.
            Err(error) if error.contains("Invalid job id") => Ok(BTreeMap::new()),
            Err(error) => Err(error),
        }
    }

    /// What Slurm says about a finished element: its state and exit code, when it knows.
    fn final_state(job: &str) -> Option<JobState> {
        let shown = Self::output(
            "scontrol",
            &[
                "show".to_string(),
                "job".to_string(),
                "-o".to_string(),
                job.to_string(),
            ],
        )
        .ok()
        .and_then(|output| parse_scontrol(&output));
        shown.or_else(|| {
            let args = vec![
                "--noheader".to_string(),
                "--parsable2".to_string(),
                format!("--jobs={job}"),
                "--format=State,ExitCode".to_string(),
            ];
            Self::output("sacct", &args)
                .ok()
                .and_then(|output| parse_sacct(&output))
        })
    }

    fn cancel(jobs: &[String]) -> Result<(), String> {
        if jobs.is_empty() {
            return Ok(());
        }
        Self::output("scancel", jobs).map(|_| ())
    }
}

/// Cancels batch jobs left by a scheduler that died; errors are the caller's to report.
pub fn cancel_jobs(jobs: &[String]) -> Result<(), String> {
    Slurm::cancel(jobs)
}

/// An element as `scontrol` or `sacct` reports it.
#[derive(Debug, Clone, PartialEq)]
struct JobState {
    /// `COMPLETED`, `FAILED`, `TIMEOUT`, `NODE_FAIL`, `OUT_OF_MEMORY`, `CANCELLED`, ...
    state: String,
    /// `ExitCode=code:signal`.
    exit_code: Option<i32>,
    signal: Option<i32>,
    reason: Option<String>,
}

impl JobState {
    fn is_finished(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "COMPLETING"
                | "CONFIGURING"
                | "SUSPENDED"
                | "REQUEUED"
                | "RESIZING"
                | "STAGE_OUT"
                | "SIGNALING"
        )
    }

    /// The attempt's end when Slurm's state names a cause outside the task.
    fn outside_cause(&self) -> Option<AttemptEnd> {
        match self.state.as_str() {
            "TIMEOUT" | "DEADLINE" => Some(AttemptEnd::Timeout),
            "NODE_FAIL" | "BOOT_FAIL" => Some(AttemptEnd::NodeFailure),
            "OUT_OF_MEMORY" => Some(AttemptEnd::OutOfMemory),
            "CANCELLED" => Some(AttemptEnd::Cancelled),
            "PREEMPTED" | "REVOKED" => Some(AttemptEnd::Lost),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        let mut text = format!("Slurm state {}", self.state);
        if let Some(reason) = self.reason.as_deref().filter(|r| *r != "None") {
            text.push_str(&format!(" ({reason})"));
        }
        match (self.exit_code, self.signal) {
            (Some(code), Some(signal)) if signal != 0 => {
                text.push_str(&format!(", exit code {code}, signal {signal}"))
            }
            (Some(code), _) => text.push_str(&format!(", exit code {code}")),
            _ => {}
        }
        text
    }
}

/// `squeue --array --format=%i|%T` lines → element id → state.
fn parse_queue(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|line| {
            let (id, state) = line.trim().split_once('|')?;
            Some((id.trim().to_string(), state.trim().to_string()))
        })
        .collect()
}

/// `scontrol show job -o` output → the element's state.
fn parse_scontrol(output: &str) -> Option<JobState> {
    let field = |name: &str| {
        output
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    let state = field("JobState")?;
    let (exit_code, signal) = split_exit(field("ExitCode").as_deref());
    Some(JobState {
        state,
        exit_code,
        signal,
        reason: field("Reason"),
    })
}

/// `sacct --parsable2 --format=State,ExitCode` output → the element's state (first line: the
/// allocation, not its steps).
fn parse_sacct(output: &str) -> Option<JobState> {
    let line = output.lines().find(|line| !line.trim().is_empty())?;
    let (state, exit) = line.split_once('|')?;
    // "CANCELLED by 1000" → CANCELLED.
    let state = state.split_whitespace().next()?.to_string();
    let (exit_code, signal) = split_exit(Some(exit));
    Some(JobState {
        state,
        exit_code,
        signal,
        reason: None,
    })
}

fn split_exit(text: Option<&str>) -> (Option<i32>, Option<i32>) {
    let Some((code, signal)) = text.and_then(|t| t.trim().split_once(':')) else {
        return (None, None);
    };
    (code.parse().ok(), signal.parse().ok())
}

/// An attempt submitted and not yet concluded.
struct InFlight {
    launch: Launch,
    /// `<array>_<index>`.
    job: String,
    array: String,
    result: PathBuf,
    progress: PathBuf,
    progress_read: u64,
    /// Sbatch's output file of the element (errors before the worker started land there).
    element_output: PathBuf,
    submitted: Instant,
    gone_since: Option<Instant>,
    /// Slurm's final word on the element once it gave one (asked once, not every poll).
    final_state: Option<JobState>,
}

impl InFlight {
    /// Passes the worker's new progress lines to the observer.
    fn forward_progress(&mut self, schedule: &Schedule) {
        let Ok(mut file) = std::fs::File::open(&self.progress) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.progress_read)).is_err() {
            return;
        }
        let mut text = String::new();
        if file.read_to_string(&mut text).is_err() {
            return;
        }
        // Only whole lines: the worker may be in the middle of one.
        let complete = text.rfind('\n').map_or(0, |end| end + 1);
        for line in text[..complete].lines() {
            match parse_progress(line) {
                Some(Progress::Phase { name, total }) => {
                    schedule.observer.phase(self.launch.index, &name, total)
                }
                Some(Progress::Advance(done)) => schedule.observer.advance(self.launch.index, done),
                None => {}
            }
        }
        self.progress_read += complete as u64;
    }

    fn seconds(&self) -> f64 {
        self.submitted.elapsed().as_secs_f64()
    }

    /// The log's tail, or sbatch's output file when the worker never wrote a log.
    fn failure_text(&self, how: &str) -> String {
        let tail = log_tail(&self.launch.log_path, LOG_TAIL_LINES);
        if !tail.is_empty() {
            return describe_failure(how, &self.launch.log_path, &tail);
        }
        describe_failure(
            how,
            &self.element_output,
            &log_tail(&self.element_output, LOG_TAIL_LINES),
        )
    }

    /// How the attempt ended, from its result file.
    fn ending_from_result(&self, result: &ElementResult) -> Ending {
        if result.status == "succeeded" && result.exit_code == Some(0) {
            return Ending::Exited {
                seconds: result.seconds,
            };
        }
        let how = match (result.exit_code, result.signal) {
            (Some(code), _) => format!("exit code {code}, Slurm job {}", self.job),
            (None, Some(signal)) => format!("killed by signal {signal}, Slurm job {}", self.job),
            (None, None) => format!("unknown exit, Slurm job {}", self.job),
        };
        // A worker killed by a signal may have been killed by Slurm for a reason it names.
        let outside = result
            .signal
            .and_then(|_| Slurm::final_state(&self.job))
            .and_then(|state| state.outside_cause().map(|end| (end, state)));
        let (end, how) = match outside {
            Some((end, state)) => (end, format!("{how}; {}", state.describe())),
            None => (AttemptEnd::Failed, how),
        };
        Ending::Failed {
            end,
            seconds: result.seconds,
            exit_code: result.exit_code,
            error: describe_failure(&how, &result.log, &result.log_tail),
        }
    }

    /// How the attempt ended when it left the queue without a result file.
    fn ending_without_result(&self, state: Option<JobState>, grace: Duration) -> Ending {
        let seconds = self.seconds();
        match state {
            Some(state) => {
                let mut how = format!("Slurm job {}: {}", self.job, state.describe());
                let end = if state.state == "COMPLETED" {
                    // Exited 0 yet no result appeared: the filesystem or the element broke.
                    how.push_str(&format!(
                        ", but its result file {} did not appear within {:.0} s (is the results directory on a filesystem every node shares?)",
                        self.result.display(),
                        grace.as_secs_f64()
                    ));
                    AttemptEnd::Lost
                } else {
                    state.outside_cause().unwrap_or(AttemptEnd::Failed)
                };
                Ending::Failed {
                    end,
                    seconds,
                    exit_code: state.exit_code,
                    error: self.failure_text(&how),
                }
            }
            None => Ending::Failed {
                end: AttemptEnd::Lost,
                seconds,
                exit_code: None,
                error: self.failure_text(&format!(
                    "Slurm job {} left the queue without a result file, and Slurm no longer knows how it ended",
                    self.job
                )),
            },
        }
    }
}

/// The sbatch options of every submission, from the settings.
fn sbatch_arguments(
    settings: &SlurmSettings,
    job_name: &str,
    output: &Path,
    workdir: &Path,
) -> Vec<String> {
    let mut args = vec![
        format!("--job-name={job_name}"),
        format!("--output={}", output.display()),
        format!("--chdir={}", workdir.display()),
    ];
    if let Some(partition) = &settings.partition {
        args.push(format!("--partition={partition}"));
    }
    if let Some(time) = &settings.time {
        args.push(format!("--time={time}"));
    }
    if let Some(cpus) = settings.cpus_per_task {
        args.push(format!("--cpus-per-task={cpus}"));
    }
    if let Some(mem) = &settings.mem {
        args.push(format!("--mem={mem}"));
    }
    args.extend(settings.sbatch_args.iter().cloned());
    args
}

/// `'text'` for sh, whatever `text` holds.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs the schedule's tasks on Slurm until none is left to start or `stop` is set.
pub(super) fn run(
    schedule: &mut Schedule,
    store: &mut Store,
    options: &ExecOptions,
    settings: &SlurmSettings,
    stop: &AtomicBool,
) -> Result<(), ExecError> {
    let workdir = std::env::current_dir().map_err(io_error(Path::new(".")))?;
    let submissions = schedule.results.root().join("slurm");
    let poll = Duration::from_secs_f64(settings.poll_seconds);
    let grace = Duration::from_secs_f64(settings.result_grace_seconds);
    let mut in_flight: BTreeMap<usize, InFlight> = BTreeMap::new();
    let mut submitted_arrays = 0usize;
    let mut queue_failures = 0usize;
    loop {
        if stop.load(Ordering::SeqCst) {
            return cancel_all(schedule, store, in_flight);
        }
        if schedule.may_start() {
            let ready: Vec<usize> = schedule.ready().collect();
            for chunk in ready.chunks(MAX_ARRAY) {
                submitted_arrays += 1;
                let dir = submissions.join(format!("run{}-{submitted_arrays}", schedule.run_id()));
                let submitted = submit(schedule, store, options, settings, chunk, &dir, &workdir)?;
                for flight in submitted {
                    in_flight.insert(flight.launch.index, flight);
                }
            }
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        sleep_unless_stopped(poll, stop);
        if stop.load(Ordering::SeqCst) {
            continue;
        }
        let mut arrays: Vec<String> = in_flight.values().map(|f| f.array.clone()).collect();
        arrays.sort();
        arrays.dedup();
        let queue = match Slurm::queue(&arrays) {
            Ok(queue) => {
                queue_failures = 0;
                queue
            }
            Err(error) => {
                queue_failures += 1;
                if queue_failures > QUEUE_FAILURES_TOLERATED {
                    return Err(ExecError::Worker(format!(
                        "{error} ({queue_failures} times in a row)"
                    )));
                }
                continue;
            }
        };
        let indices: Vec<usize> = in_flight.keys().copied().collect();
        for index in indices {
            let Some(flight) = in_flight.get_mut(&index) else {
                continue;
            };
            if let Some(ending) = flight.check(schedule, &queue, grace) {
                schedule.conclude(store, &flight.launch, ending)?;
                in_flight.remove(&index);
            }
        }
    }
}

impl InFlight {
    /// How the element ended, once it has: its result file, or Slurm's word once it has left
    /// the queue (after `grace` for a result file that may show up late on a shared
    /// filesystem). `None` while it runs. Forwards its progress meanwhile.
    fn check(
        &mut self,
        schedule: &Schedule,
        queue: &BTreeMap<String, String>,
        grace: Duration,
    ) -> Option<Ending> {
        self.forward_progress(schedule);
        if let Some(result) = read_result(&self.result) {
            return Some(self.ending_from_result(&result));
        }
        if queue.contains_key(&self.job) {
            self.gone_since = None;
            return None;
        }
        let gone_since = *self.gone_since.get_or_insert_with(Instant::now);
        if self
            .final_state
            .as_ref()
            .is_none_or(|state| !state.is_finished())
        {
            self.final_state = Slurm::final_state(&self.job);
        }
        let state = self.final_state.clone();
        let waiting_for_file = state
            .as_ref()
            .is_none_or(|state| state.state == "COMPLETED" || !state.is_finished());
        if waiting_for_file && gone_since.elapsed() < grace {
            return None;
        }
        Some(self.ending_without_result(state, grace))
    }
}

/// Opens the attempts of `tasks`, writes the submission directory and submits the array.
fn submit(
    schedule: &mut Schedule,
    store: &mut Store,
    options: &ExecOptions,
    settings: &SlurmSettings,
    tasks: &[usize],
    dir: &Path,
    workdir: &Path,
) -> Result<Vec<InFlight>, ExecError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut launches = Vec::with_capacity(tasks.len());
    let mut lines = String::new();
    for &index in tasks {
        let launch = schedule.launch(store, index)?;
        let line = ElementLine::of(&launch, &schedule.plan.tasks[index].key, workdir);
        lines.push_str(&line.to_line());
        launches.push((launch, line));
    }
    let tasks_file = absolute(workdir, &dir.join("tasks.tsv"));
    crate::util::write_atomic(&tasks_file, lines.as_bytes()).map_err(io_error(&tasks_file))?;
    let script = absolute(workdir, &dir.join("job.sh"));
    let body = format!(
        "#!/bin/sh\n# Written by repro: array element N runs the task on line N+1 of tasks.tsv.\nexec {} --quiet worker --element {}\n",
        shell_quote(&options.program.display().to_string()),
        shell_quote(&tasks_file.display().to_string())
    );
    crate::util::write_atomic(&script, body.as_bytes()).map_err(io_error(&script))?;
    let output = absolute(workdir, &dir.join("element-%a.out"));
    let arguments = sbatch_arguments(
        settings,
        &format!("repro-{}", options.experiment),
        &output,
        workdir,
    );
    let submitted = Slurm::submit(&script, tasks.len(), settings.max_concurrent, &arguments);
    let array = match submitted {
        Ok(array) => array,
        Err(error) => {
            for (launch, _) in &launches {
                // Never ran: the task runs again next time, once the submission is fixed.
                let ending = Ending::Failed {
                    end: AttemptEnd::Lost,
                    seconds: 0.0,
                    exit_code: None,
                    error: format!("not submitted: {error}"),
                };
                schedule.conclude(store, launch, ending)?;
            }
            return Err(ExecError::Worker(error));
        }
    };
    let now = Instant::now();
    let mut flights = Vec::with_capacity(launches.len());
    for (element, (launch, line)) in launches.into_iter().enumerate() {
        let job = format!("{array}_{element}");
        store.set_attempt_job(launch.attempt, &job)?;
        schedule.observer.phase(launch.index, "queued", 0);
        flights.push(InFlight {
            launch,
            job,
            array: array.clone(),
            result: line.result,
            progress: line.progress,
            progress_read: 0,
            element_output: dir.join(format!("element-{element}.out")),
            submitted: now,
            gone_since: None,
            final_state: None,
        });
    }
    Ok(flights)
}

fn parse_job_id(output: &str) -> Result<String, String> {
    let id = output.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("sbatch printed `{}`, not a job id", output.trim()));
    }
    Ok(id)
}

fn absolute(workdir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        workdir.join(path)
    }
}

fn read_result(path: &Path) -> Option<ElementResult> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let until = Instant::now() + duration;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}

/// Ctrl-C: cancels every submitted array, waits (briefly) for the queue to let go of them,
/// and records their attempts as cancelled, except those whose result arrived meanwhile.
fn cancel_all(
    schedule: &mut Schedule,
    store: &mut Store,
    in_flight: BTreeMap<usize, InFlight>,
) -> Result<(), ExecError> {
    let mut arrays: Vec<String> = in_flight.values().map(|f| f.array.clone()).collect();
    arrays.sort();
    arrays.dedup();
    let cancelled = Slurm::cancel(&arrays);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cancelled.is_ok() && Instant::now() < deadline {
        match Slurm::queue(&arrays) {
            Ok(queue) if queue.is_empty() => break,
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    for flight in in_flight.into_values() {
        if let Some(result) = read_result(&flight.result) {
            let ending = flight.ending_from_result(&result);
            schedule.conclude(store, &flight.launch, ending)?;
            continue;
        }
        let error = match &cancelled {
            Ok(()) => format!("cancelled (Ctrl-C): scancel {}", flight.array),
            Err(error) => format!(
                "Ctrl-C, but cancelling Slurm job {} failed: {error}",
                flight.array
            ),
        };
        let ending = Ending::Failed {
            end: AttemptEnd::Cancelled,
            seconds: flight.seconds(),
            exit_code: None,
            error,
        };
        schedule.conclude(store, &flight.launch, ending)?;
    }
    cancelled.map_err(ExecError::Worker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_lines_round_trip() {
        let line = ElementLine {
            key: "abc".into(),
            attempt: 3,
            spec: "/r/tasks/abc/spec.json".into(),
            result: "/r/tasks/abc/attempt-3.result.json".into(),
            log: "/r/tasks/abc/attempt-3.log".into(),
            progress: "/r/tasks/abc/attempt-3.progress".into(),
        };
        assert_eq!(ElementLine::parse(&line.to_line()), Some(line));
        assert_eq!(ElementLine::parse("abc\tnot-a-number\ta\tb\tc\td"), None);
        assert_eq!(ElementLine::parse("too\tfew"), None);
    }

    #[test]
    fn the_queue_is_read_per_element() {
        let queue = parse_queue("12_0|RUNNING\n12_1|PENDING\n 12_2|COMPLETING \n\n");
        assert_eq!(queue.len(), 3);
        assert_eq!(queue["12_1"], "PENDING");
        assert_eq!(queue["12_2"], "COMPLETING");
    }

    #[test]
    fn scontrol_and_sacct_states_are_read() {
        let shown = "JobId=14 ArrayJobId=12 ArrayTaskId=2 JobName=repro-smoke UserId=root(0) \
            JobState=TIMEOUT Reason=TimeLimit Dependency=(null) Requeue=1 ExitCode=0:15 \
            RunTime=00:01:02";
        let state = parse_scontrol(shown).unwrap();
        assert_eq!(state.state, "TIMEOUT");
        assert_eq!((state.exit_code, state.signal), (Some(0), Some(15)));
        assert_eq!(state.outside_cause(), Some(AttemptEnd::Timeout));
        assert!(state.describe().contains("TimeLimit"));
        assert_eq!(
            parse_scontrol("slurm_load_jobs error: Invalid job id"),
            None
        );

        let accounted = parse_sacct("NODE_FAIL|0:0\nNODE_FAIL|0:0\n").unwrap();
        assert_eq!(accounted.outside_cause(), Some(AttemptEnd::NodeFailure));
        let cancelled = parse_sacct("CANCELLED by 1000|0:15\n").unwrap();
        assert_eq!(cancelled.state, "CANCELLED");
        let failed = parse_sacct("FAILED|3:0").unwrap();
        assert_eq!(failed.outside_cause(), None);
        assert_eq!(failed.exit_code, Some(3));
        assert!(failed.is_finished());
        assert!(!parse_sacct("RUNNING|0:0").unwrap().is_finished());
        assert_eq!(
            parse_sacct("OUT_OF_MEMORY|0:125").unwrap().outside_cause(),
            Some(AttemptEnd::OutOfMemory)
        );
    }

    #[test]
    fn sbatch_arguments_follow_the_settings() {
        let settings = SlurmSettings {
            partition: Some("gpu".into()),
            time: Some("02:00:00".into()),
            cpus_per_task: Some(8),
            mem: Some("16G".into()),
            sbatch_args: vec!["--account=ir".into()],
            ..SlurmSettings::default()
        };
        let args = sbatch_arguments(
            &settings,
            "repro-x",
            Path::new("/o/e-%a.out"),
            Path::new("/w"),
        );
        assert_eq!(
            args,
            [
                "--job-name=repro-x",
                "--output=/o/e-%a.out",
                "--chdir=/w",
                "--partition=gpu",
                "--time=02:00:00",
                "--cpus-per-task=8",
                "--mem=16G",
                "--account=ir"
            ]
        );
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(parse_job_id("4711\n"), Ok("4711".to_string()));
        assert_eq!(parse_job_id("4711;cluster\n"), Ok("4711".to_string()));
        assert!(parse_job_id("sbatch: error").is_err());
    }
}
