//! The environment a run records: code version, machine, toolchain.

use std::path::Path;
use std::process::Command;

use crate::store::Environment;

/// Reads the environment of this process; `repo` is where git is asked for the commit.
pub fn capture_environment(repo: &Path, threads: usize) -> Environment {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let git_commit = git(&["rev-parse", "HEAD"]);
    let git_dirty = git_commit
        .as_ref()
        .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
        .map(|status| !status.is_empty());
    Environment {
        git_commit,
        git_dirty,
        repro_version: env!("CARGO_PKG_VERSION").to_string(),
        rustc_version: env!("REPRO_RUSTC_VERSION").to_string(),
        cpu_model: cpu_model(),
        threads,
        hostname: hostname(),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}
