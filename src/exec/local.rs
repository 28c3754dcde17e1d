//! Worker processes on this machine: spawn, read progress, kill.
//!
//! A worker prints one JSON object per line on stdout (`{"phase": "corpus", "total": 5183}`,
//! `{"advance": 32}`); its stderr goes to the attempt's log file. The reader thread turns the
//! lines into [`Event`]s and says [`Event::Closed`] when stdout ends, i.e. when the worker
//! exits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::time::Instant;

use super::ExecError;
use crate::store::AttemptId;

/// What a worker reports.
#[derive(Debug)]
pub(super) enum Event {
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
pub(super) struct RunningTask {
    child: Child,
    pub attempt: AttemptId,
    pub started: Instant,
    pub log_path: PathBuf,
}

impl RunningTask {
    pub fn kill(&mut self) {
        // Already gone is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }
}

/// Starts `program worker SPEC` with `threads` compute threads.
pub(super) fn spawn(
    index: usize,
    program: &Path,
    spec: &Path,
    log_path: &Path,
    threads: usize,
    attempt: AttemptId,
    events: Sender<Event>,
) -> Result<RunningTask, ExecError> {
    let log = std::fs::File::create(log_path).map_err(|source| ExecError::Io {
        path: log_path.to_path_buf(),
        source,
    })?;
    let mut command = Command::new(program);
    command
        .arg("--quiet")
        .arg("worker")
        .arg(spec)
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
                let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let event = if let Some(name) = message["phase"].as_str() {
                    Event::Phase {
                        index,
                        name: name.to_string(),
                        total: message["total"].as_u64().unwrap_or(0) as usize,
                    }
                } else if let Some(done) = message["advance"].as_u64() {
                    Event::Advance {
                        index,
                        done: done as usize,
                    }
                } else {
                    continue;
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
        attempt,
        started: Instant::now(),
        log_path: log_path.to_path_buf(),
    })
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
