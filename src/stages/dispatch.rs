//! The dispatcher: runs one task of the DAG with the stage its spec names, and times it.

use std::path::Path;
use std::time::Instant;

use super::embeddings::Encoded;
use super::inputs::upstream_dirs;
use super::{bench, encode, eval, rerank, training, Observer, StageError};
use crate::task::{Stage, TaskOutcome, TaskSpec, UpstreamDirs};

/// Runs `spec` with upstream outputs in `upstream` (by stage), writing into `out`.
pub fn run_task(
    spec: &TaskSpec,
    upstream: &UpstreamDirs,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let started = Instant::now();
    let mut outcome = match spec {
        TaskSpec::Encode(spec) => encode::run_encode(spec, upstream, out, observer)?,
        TaskSpec::Eval(spec) => {
            let encoded = Encoded::open(upstream_dirs(upstream, Stage::Eval, Stage::Encode)?)?;
            eval::run_eval(spec, &encoded, out, observer)?
        }
        TaskSpec::TrainCe(spec) => training::run_train_ce(spec, upstream, out, observer)?,
        TaskSpec::TrainDe(spec) => training::run_train_de(spec, upstream, out, observer)?,
        TaskSpec::Rerank(spec) => rerank::run_rerank(spec, upstream, out, observer)?,
        TaskSpec::Bench(spec) => bench::run_bench_task(spec, upstream, out, observer)?,
    };
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}
