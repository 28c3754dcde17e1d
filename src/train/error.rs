use std::path::PathBuf;

use crate::model::ModelError;

/// Errors from training a model. Each names the file, setting or step at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    #[error("invalid training setting: {0}")]
    Setting(String),
    #[error("{path}: cannot write weights: {message}")]
    Save { path: PathBuf, message: String },
    #[error("training diverged at step {step}: {what} is {value}")]
    Diverged {
        step: usize,
        what: &'static str,
        value: f64,
    },
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
