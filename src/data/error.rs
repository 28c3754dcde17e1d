use std::path::PathBuf;

/// Everything that can go wrong reading, writing or fetching data. Each variant names the
/// file (and line, where there is one) so that a user can go straight to the problem.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: checksum mismatch: expected {algorithm} {expected}, found {actual}")]
    Checksum {
        path: PathBuf,
        /// `sha256`, or `md5` for the digests BEIR publishes for its zips.
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error("unknown dataset `{name}`: not found in {searched}{hint}")]
    UnknownDataset {
        name: String,
        searched: String,
        hint: String,
    },
    #[error("download of {url} failed: {message}")]
    Download { url: String, message: String },
    /// A known dataset that cannot be obtained from where repro looked (no download source).
    #[error("dataset `{name}` is not available: {message}")]
    Unavailable { name: String, message: String },
}

impl DataError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn malformed(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        DataError::Malformed {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}
