use std::path::PathBuf;

/// Errors from loading or running a model. Each names the file, tensor or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model directory {dir} has no {wanted}")]
    MissingFile { dir: PathBuf, wanted: String },
    #[error("{path}: invalid model config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: missing tensor `{tensor}`{hint}")]
    MissingTensor {
        path: PathBuf,
        tensor: String,
        hint: String,
    },
    #[error(
        "{path}: tensor `{tensor}` has shape {actual:?}, expected {expected:?} from config.json"
    )]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("{path}: cannot read weights: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("tokenizing failed: {0}")]
    Tokenize(String),
    #[error("model `{model}`: {message}")]
    Hub { model: String, message: String },
    #[error("invalid setting: {0}")]
    Setting(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
