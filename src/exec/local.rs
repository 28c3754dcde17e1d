//! The local executor: worker processes on this machine, at most `--jobs` at a time.
//!
//! A worker prints one JSON object per line on stdout (`{"phase": "corpus", "total": 5183}`,
//! `{"advance": 32}`); its stderr goes to the attempt's log file. The reader thread turns the
//! lines into [`Event`]s and says [`Event::Closed`] when stdout ends, i.e. when the worker
//! exits.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::schedule::{describe_failure, log_tail, Ending, Launch, Schedule};
use super::{ExecError, ExecOptions};
use crate::store::{AttemptEnd, Store};

/// Runs the schedule's tasks as child processes until none is left to start or `stop` is set.
pub(super) fn run(
    schedule: &mut Schedule,
    store: &mut Store,
    options: &ExecOptions,
    stop: &AtomicBool,
) -> Result<(), ExecError> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let mut running: BTreeMap<usize, RunningTask> = BTreeMap::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return interrupt(std::mem::take(&mut running), schedule, store);
        }
        start_ready(schedule, store, options, &sender, &mut running)?;
        if running.is_empty() {
            return Ok(());
        }
        let event = match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => event,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        };
        match event {
            Event::Phase { index, name, total } => schedule.observer.phase(index, &name, total),
            Event::Advance { index, done } => schedule.observer.advance(index, done),
            Event::Closed { index } => {
                let Some(mut child) = running.remove(&index) else {
                    continue;
                };
                let exit = child.wait();
                let seconds = child.started.elapsed().as_secs_f64();
                let stopped = stop.load(Ordering::SeqCst);
                let ending = ending_of(exit, seconds, stopped, &child.launch.log_path);
                schedule.conclude(store, &child.launch, ending)?;
            }
        }
    }
}

/// Kills the running workers and records their attempts as interrupted.
fn interrupt(
    running: BTreeMap<usize, RunningTask>,
    schedule: &mut Schedule,
    store: &mut Store,
) -> Result<(), ExecError> {
    for (_, mut task) in running {
        task.kill();
        let ending = Ending::Failed {
            end: AttemptEnd::Interrupted,
            seconds: task.started.elapsed().as_secs_f64(),
            exit_code: None,
            error: "interrupted (Ctrl-C)".to_string(),
        };
        schedule.conclude(store, &task.launch, ending)?;
    }
    Ok(())
}

/// Starts ready tasks while fewer than `--jobs` run. A task that runs alone waits for the
/// running ones, and nothing starts beside it.
fn start_ready(
    schedule: &mut Schedule,
    store: &mut Store,
    options: &ExecOptions,
    sender: &Sender<Event>,
    running: &mut BTreeMap<usize, RunningTask>,
) -> Result<(), ExecError> {
    let plan = schedule.plan;
    while schedule.may_start() && running.len() < options.jobs.max(1) {
        let Some(index) = schedule.ready().next() else {
            break;
        };
        let alone_running = running
            .keys()
            .any(|&other| plan.tasks[other].stage.runs_alone());
        if alone_running || (plan.tasks[index].stage.runs_alone() && !running.is_empty()) {
            break;
        }
        let launch = schedule.launch(store, index)?;
        match spawn(
            launch.clone(),
            &options.program,
            options.threads_per_task,
            sender.clone(),
        ) {
            Ok(child) => {
                running.insert(index, child);
            }
            Err(err) => {
                let ending = Ending::Failed {
                    end: AttemptEnd::Failed,
                    seconds: 0.0,
                    exit_code: None,
                    error: err.to_string(),
                };
                schedule.conclude(store, &launch, ending)?;
                return Err(err);
            }
        }
    }
    Ok(())
}

/// How a worker's attempt ended, from its exit; `stopped` when Ctrl-C was pressed.
fn ending_of(
    exit: std::io::Result<ExitStatus>,
    seconds: f64,
    stopped: bool,
    log_path: &Path,
) -> Ending {
    match exit {
        Ok(status) if status.success() => Ending::Exited { seconds },
        Ok(status) if stopped => Ending::Failed {
            end: AttemptEnd::Interrupted,
            seconds,
            exit_code: status.code(),
            error: "interrupted (Ctrl-C)".to_string(),
        },
        Ok(status) => Ending::Failed {
            end: if status.signal().is_some() {
                AttemptEnd::Killed
            } else {
                AttemptEnd::Failed
            },
            seconds,
            exit_code: status.code(),
            error: describe_exit(status, log_path),
        },
        Err(err) => Ending::Failed {
            end: AttemptEnd::Failed,
            seconds,
            exit_code: None,
            error: format!("waiting for the worker: {err}"),
        },
    }
}

/// The exit status and the end of the worker's log: its error message.
fn describe_exit(status: ExitStatus, log_path: &Path) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown exit".to_string(),
    };
    describe_failure(&how, log_path, &log_tail(log_path, 20))
}

/// What a worker reports.
#[derive(Debug)]
enum Event {
    Phase {
        index: usize,
        name: String,
        total: usize,
    },
    Advance {
        index: usize,
        done: usize,
    },
    Closed {
        index: usize,
    },
}

/// A worker that was started.
struct RunningTask {
    child: Child,
    launch: Launch,
    started: Instant,
}

impl RunningTask {
    fn kill(&mut self) {
        // Already gone is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }
}

/// Starts `program worker SPEC` with `threads` compute threads.
fn spawn(
    launch: Launch,
    program: &Path,
    threads: usize,
    events: Sender<Event>,
) -> Result<RunningTask, ExecError> {
    let index = launch.index;
    let log_path = &launch.log_path;
    let log = std::fs::File::create(log_path).map_err(|source| ExecError::Io {
        path: log_path.to_path_buf(),
        source,
    })?;
    let mut command = Command::new(program);
    command
        .arg("--quiet")
        .arg("worker")
        .arg(&launch.spec_path)
        .env("RAYON_NUM_THREADS", threads.max(1).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    die_with_parent(&mut command);
    let mut child = command.spawn().map_err(|source| ExecError::Spawn {
        program: program.to_path_buf(),
        source,
    })?;
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = match parse_progress(&line) {
                    Some(Progress::Phase { name, total }) => Event::Phase { index, name, total },
                    Some(Progress::Advance(done)) => Event::Advance { index, done },
                    None => continue,
                };
                if events.send(event).is_err() {
                    return;
                }
            }
            let _ = events.send(Event::Closed { index });
        });
    }
    Ok(RunningTask {
        child,
        launch,
        started: Instant::now(),
    })
}

/// One line of a worker's progress.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Progress {
    Phase { name: String, total: usize },
    Advance(usize),
}

/// Reads a progress line a worker printed; `None` for anything else.
pub(super) fn parse_progress(line: &str) -> Option<Progress> {
    let message = serde_json::from_str::<serde_json::Value>(line).ok()?;
    if let Some(name) = message["phase"].as_str() {
        Some(Progress::Phase {
            name: name.to_string(),
            total: message["total"].as_u64().unwrap_or(0) as usize,
        })
    } else {
        message["advance"]
            .as_u64()
            .map(|done| Progress::Advance(done as usize))
    }
}

/// A worker must not outlive a scheduler killed with SIGKILL: it would go on writing into
/// the cache while the next scheduler reruns the same task.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}
