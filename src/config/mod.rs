/*!
Settings files and setting values: typed TOML schemas, parsed and validated before any compute.

This module owns the shape of what a user writes (probe files, experiment files and their sweeps)
and the parsing of setting values shared with the command line (layer selections). Errors
name the file, line, column and field. It must not load models or data: checks that need a
model (a layer beyond its depth) are done by the caller with [`LayerSelection::resolve`] and
reported through [`ConfigError::at`].
*/

mod experiment;
mod layers;
mod probe;
mod slurm;
mod training;

use std::path::{Path, PathBuf};

pub use experiment::{
    Cell, DatasetSpec, EncodeSettings, EvalSettings, Experiment, ModelKind, ModelOrigin,
    ModelShape, ModelSpec, SCHEMA_VERSION,
};
pub use layers::LayerSelection;
pub use probe::{ProbeFile, ProbeSettings};
pub use slurm::SlurmSettings;
pub use training::{BenchConfig, Fusion, RerankSettings, TrainCeSettings, TrainDeSettings};

/// A settings file that could not be read or does not fit its schema.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ConfigError {
    /// An error at byte offset `offset` of `text`, read from `path`.
    pub fn at(path: &Path, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_column(text, offset);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// Parses TOML `text` from `path` into `T`, turning serde's message and span into a
/// [`ConfigError`] that points at the offending line and column.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|err| {
        let offset = err.span().map(|span| span.start).unwrap_or(0);
        ConfigError::at(path, text, offset, err.message().trim().replace('\n', "; "))
    })
}

/// Reads `path` and parses it with [`parse_toml`]; returns the text too, for later errors.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value = parse_toml(path, &text)?;
    Ok((value, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 8), (2, 3));
    }
}
