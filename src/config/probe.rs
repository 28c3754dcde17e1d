//! The probe settings file: the same settings as `repro probe`'s flags, in TOML.
//!
//! ```toml
//! [probe]
//! model = "models/all-MiniLM-L6-v2"
//! dataset = "scifact"
//! split = "test"
//! layers = "0-6"
//! pooling = ["mean", "cls"]
//! input = "single"
//! max_len = 256
//! batch = 32
//! ```
//!
//! Every key is optional; flags given on the command line win over the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{read_toml, ConfigError, LayerSelection};
use crate::model::{InputFormat, Pooling};

/// A probe file as written: only what the user set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFile {
    pub probe: ProbeSection,
    #[serde(skip)]
    source: Option<(PathBuf, String)>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    pub model: Option<String>,
    pub dataset: Option<String>,
    pub split: Option<String>,
    pub layers: Option<Spanned<LayerSelection>>,
    pub pooling: Option<Vec<Pooling>>,
    pub input: Option<InputFormat>,
    pub max_len: Option<usize>,
    pub batch: Option<usize>,
    pub top_k: Option<usize>,
    pub measures: Option<Vec<String>>,
    pub normalize: Option<bool>,
}

impl ProbeFile {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let (mut file, text): (ProbeFile, String) = read_toml(path)?;
        file.source = Some((path.to_path_buf(), text));
        Ok(file)
    }

    /// An error about the `layers` key, pointing at its line (used once the model's depth is
    /// known).
    pub fn layers_error(&self, message: &str) -> Option<ConfigError> {
        let (path, text) = self.source.as_ref()?;
        let layers = self.probe.layers.as_ref()?;
        Some(ConfigError::at(
            path,
            text,
            layers.span().start,
            format!("layers: {message}"),
        ))
    }
}

/// Resolved probe settings: what will run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeSettings {
    pub model: String,
    pub dataset: String,
    pub split: String,
    #[serde(serialize_with = "display")]
    pub layers: LayerSelection,
    pub pooling: Vec<Pooling>,
    pub input: InputFormat,
    pub max_len: usize,
    pub batch: usize,
    pub top_k: usize,
    pub measures: Vec<String>,
    pub normalize: bool,
}

fn display<S: serde::Serializer>(value: &LayerSelection, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl ProbeSettings {
    /// The measures a probe reports unless told otherwise: nDCG@10, Recall@100, MRR@10, Hits@10.
    pub fn default_measures() -> Vec<String> {
        ["ndcg_cut.10", "recall.100", "mrr_cut.10", "success.10"]
            .map(String::from)
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_every_key() {
        let (_dir, path) = write(
            "[probe]\nmodel = \"m\"\ndataset = \"scifact\"\nlayers = \"0-2\"\npooling = [\"mean\", \"cls\"]\ninput = \"self_pair\"\nmax_len = 128\n",
        );
        let file = ProbeFile::read(&path).unwrap();
        assert_eq!(file.probe.model.as_deref(), Some("m"));
        assert_eq!(file.probe.pooling, Some(vec![Pooling::Mean, Pooling::Cls]));
        assert_eq!(file.probe.input, Some(InputFormat::SelfPair));
        assert_eq!(
            file.probe.layers.as_ref().unwrap().get_ref(),
            &LayerSelection::Only(vec![0, 1, 2])
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let (_dir, path) = write("[probe]\nmodel = \"m\"\nmax_length = 12\n");
        let message = ProbeFile::read(&path).unwrap_err().to_string();
        assert!(message.contains("probe.toml:3:1"), "{message}");
        assert!(message.contains("max_length"), "{message}");
    }

    #[test]
    fn unknown_pooling_and_wrong_type_point_at_the_value() {
        let (_dir, path) = write("[probe]\npooling = [\"mean\", \"avg\"]\n");
        let message = ProbeFile::read(&path).unwrap_err().to_string();
        assert!(message.contains("probe.toml:2:"), "{message}");
        assert!(message.contains("avg"), "{message}");
        let (_dir, path) = write("[probe]\nmax_len = \"long\"\n");
        let message = ProbeFile::read(&path).unwrap_err().to_string();
        assert!(message.contains("probe.toml:2:11"), "{message}");
    }

    #[test]
    fn layers_beyond_depth_point_at_the_layers_line() {
        let (_dir, path) = write("[probe]\nmodel = \"m\"\nlayers = \"0-9\"\n");
        let file = ProbeFile::read(&path).unwrap();
        let depth_error = file
            .probe
            .layers
            .as_ref()
            .unwrap()
            .get_ref()
            .resolve(6)
            .unwrap_err();
        let message = file.layers_error(&depth_error).unwrap().to_string();
        assert!(
            message.contains("probe.toml:3:10: layers: layer 7"),
            "{message}"
        );
    }
}
