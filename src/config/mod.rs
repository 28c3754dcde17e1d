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
mod report;
mod slurm;
mod training;

use std::path::{Path, PathBuf};

pub use experiment::{
    Cell, DatasetSpec, EncodeSettings, EvalSettings, Experiment, ModelKind, ModelOrigin,
    ModelShape, ModelSpec, QuerySet, SCHEMA_VERSION,
};
pub use layers::LayerSelection;
pub use probe::{ProbeFile, ProbeSettings};
pub use report::ReportSettings;
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
        let span = err.span().unwrap_or(0..0);
        let mut message = err.message().trim().replace('\n', "; ");
        // toml names the construct, not the character that broke it: an invisible one is
        // worth naming.
        let control = text
            .get(span.start..span.end.max(span.start + 1).min(text.len()))
            .and_then(|broken| {
                broken
                    .chars()
                    .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
            });
        if let Some(control) = control {
            message.push_str(&format!(" (control character U+{:04X})", control as u32));
        }
        ConfigError::at(path, text, span.start, message)
    })
}

/// Reads `path` and parses it with [`parse_toml`]; returns the text too, for later errors.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, String), ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = utf8_text(path, bytes)?;
    let value = parse_toml(path, &text)?;
    Ok((value, text))
}

/// `bytes` as text, or an error at the line and column of the first byte that is not UTF-8.
fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|err| {
        let valid = err.utf8_error().valid_up_to();
        let bytes = err.as_bytes();
        let prefix = String::from_utf8_lossy(&bytes[..valid]);
        let message = format!(
            "byte 0x{:02X} is not UTF-8 (TOML files are UTF-8)",
            bytes[valid]
        );
        ConfigError::at(path, &prefix, valid, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_and_control_characters_are_located() {
        let path = Path::new("e.toml");
        let err = utf8_text(path, b"a = 1\nb = \"x\xffy\"\n".to_vec()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("e.toml:2:7: byte 0xFF is not UTF-8"),
            "{message}"
        );
        let err = parse_toml::<toml::Value>(path, "a = 1\nb = \"x\u{1}y\"\n").unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("e.toml:2:"), "{message}");
        assert!(message.contains("control character U+0001"), "{message}");
    }

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 8), (2, 3));
    }
}
