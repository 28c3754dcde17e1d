/*!
The `repro` command line: argument parsing, progress display and output formatting.

This is the only module that uses `anyhow`; it turns typed library errors into one clear
message and a non-zero exit status. It must not compute results itself: each subcommand
resolves its arguments and calls into `stages`, `eval` or `data`.
*/

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod data;
mod dev;
mod eval;
mod probe;
mod progress;
mod report;
mod results;
mod run;

pub use progress::Progress;

/// Reproducible IR embedding research: per-layer probes of dual and cross encoders.
#[derive(Debug, Parser)]
#[command(name = "repro", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand understands.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Directory where datasets live, one sub-directory per dataset (BEIR layout).
    #[arg(long, global = true, env = "REPRO_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// Local mirror of raw datasets, consulted before the network.
    #[arg(long, global = true, env = "REPRO_MIRROR")]
    pub mirror: Option<PathBuf>,
    /// Print no progress bars or informational messages on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encode a dataset once and score every layer × pooling of a model.
    Probe(probe::ProbeArgs),
    /// Evaluate a TREC run against qrels, following trec_eval's conventions.
    Eval(eval::EvalArgs),
    /// Fetch, import and inspect datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Run an experiment file: expand its sweep, run what is not cached, record results.
    Run(run::RunArgs),
    /// Validate an experiment file (and the models and datasets it names) without running it.
    Check(run::CheckArgs),
    /// Show an experiment's cells, tasks and runs from the results store.
    Status(run::StatusArgs),
    /// Check every cached output against the sha256 recorded when it was written, and the
    /// store's measures against them; say what is damaged.
    Verify(run::VerifyArgs),
    /// Cells of one or more experiments side by side: the parameters that differ, the measures.
    Compare(results::CompareArgs),
    /// Write an experiment's results as CSV, Parquet or JSON.
    Export(results::ExportArgs),
    /// Write an experiment's report: one self-contained HTML page (or Markdown tables).
    Report(report::ReportArgs),
    /// Regenerate the paper's figures (SVG, PNG, Markdown and LaTeX tables) from the store.
    Figures(report::FiguresArgs),
    /// Encoder throughput (documents/s, tokens/s) of a model truncated to each depth.
    Bench(bench::BenchArgs),
    /// Helpers for developing repro (tiny test models).
    #[command(subcommand, hide = true)]
    Dev(dev::DevCommand),
    /// Run one task of a plan (started by `repro run`; not for direct use).
    #[command(hide = true)]
    Worker(run::WorkerArgs),
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`repro status | head -1`) is an error
/// that `println!` turns into a panic. Commands that only print take the default action back
/// and end as Unix tools do: killed by SIGPIPE, silently (exit 141 in a shell). `run` and its
/// workers keep ignoring it: they must survive a reader going away and clean up.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Entry point of the binary: parses arguments, runs the command, reports errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_) | Command::Worker(_)) {
        end_quietly_on_a_closed_pipe();
    }
    let result = match &cli.command {
        Command::Probe(args) => probe::run(&cli.global, args),
        Command::Eval(args) => eval::run(&cli.global, args),
        Command::Data(command) => data::run(&cli.global, command),
        Command::Run(args) => run::run(&cli.global, args),
        Command::Check(args) => run::check(&cli.global, args),
        Command::Status(args) => run::status(args),
        Command::Verify(args) => run::verify(args),
        Command::Worker(args) => run::worker(args),
        Command::Compare(args) => results::compare(args),
        Command::Dev(command) => dev::run(command),
        Command::Bench(args) => bench::run(&cli.global, args),
        Command::Export(args) => results::export(args),
        Command::Report(args) => report::report(args),
        Command::Figures(args) => report::figures(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = err.to_string();
            eprintln!("error: {message}");
            // Library errors often repeat their source in their own message; print a cause
            // only when it adds something.
            for cause in err.chain().skip(1) {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                }
            }
            ExitCode::FAILURE
        }
    }
}
