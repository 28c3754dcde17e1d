/*!
Stages: the steps of a study, wired from models, data and evaluation.

A stage takes resolved inputs (a loaded model, a loaded dataset, settings), runs, and returns
a typed outcome with its measurements. Stages report progress through [`Observer`] and never
print; they must not parse command lines or settings files.

The DAG's tasks are dispatched by [`run_task`] (`dispatch.rs`), one file per stage:
`encode.rs`, `eval.rs`, `training.rs` (train_ce and train_de, with hard-negative mining in
`mining.rs` and the teacher's dev split in `dev.rs`), `rerank.rs` (with its fusion) and
`bench.rs`; `embeddings.rs` owns the format encodes write and later tasks read, `inputs.rs`
where a task finds its upstream outputs. `probe.rs` is the one-command layer probe.
*/

mod bench;
mod dev;
mod dispatch;
mod embeddings;
mod encode;
mod eval;
mod inputs;
mod mining;
mod probe;
mod rerank;
mod training;

pub use bench::{
    depth_metric, first_documents, ideal_speedup, paired_speedup, run_bench, BenchSettings,
    DepthTiming, Summary, BENCH_FILE,
};
pub use dispatch::run_task;
pub use embeddings::EmbeddingsManifest;
pub use eval::QUERIES_EVALUATED;
pub use probe::{run_probe, EncodeStats, ProbeCell, ProbeOutcome};
pub use rerank::{run_rerank, FUSED_PREFIX, RERANKED_PREFIX};
pub use training::{run_train_ce, run_train_de};

use crate::data::DataError;
use crate::eval::retrieval::RetrievalError;
use crate::model::ModelError;

/// Receives progress from a running stage. Calls arrive in order: `phase` starts a phase of
/// `total` units, `advance` reports units done, and the next `phase` (or the stage's return)
/// ends it.
pub trait Observer {
    fn phase(&self, name: &str, total: usize);
    fn advance(&self, done: usize);
}

/// An observer that ignores everything (tests, `--quiet`).
pub struct Silent;

impl Observer for Silent {
    fn phase(&self, _name: &str, _total: usize) {}
    fn advance(&self, _done: usize) {}
}

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Overlap(#[from] crate::data::OverlapError),
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    #[error(transparent)]
    Retrieval(#[from] RetrievalError),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setting(String),
}
