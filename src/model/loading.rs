//! Finding a checkpoint's files, checking its tensors against `config.json`, and building the
//! model and tokenizer.
//!
//! Two tensor naming schemes are accepted: a bare encoder (`embeddings.*`, `encoder.*`, as
//! sentence-transformers and `BertModel` save) and a prefixed one with a head
//! (`bert.embeddings.*`, `bert.pooler.*`, `classifier.*`, as
//! `BertForSequenceClassification` saves). Every tensor the model will use is checked for
//! presence and shape before anything is built, so a broken checkpoint fails with the file
//! and tensor name rather than deep inside a forward pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::bert::BertModel;
use super::config::BertConfig;
use super::layout::{CONFIG_FILE, PICKLE_FILE, SAFETENSORS_FILE};
use super::tokenize::TextTokenizer;
use super::ModelError;

/// Where the weights of a checkpoint are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    Safetensors,
    PytorchPickle,
}

/// The files of a model directory.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: PathBuf,
    pub weights_format: WeightsFormat,
}

impl ModelFiles {
    /// Finds `config.json` and `model.safetensors` (or `pytorch_model.bin`) in `dir`.
    pub fn locate(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                wanted: "such directory".to_string(),
            });
        }
        let config = dir.join(CONFIG_FILE);
        if !config.is_file() {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                wanted: CONFIG_FILE.to_string(),
            });
        }
        let safetensors = dir.join(SAFETENSORS_FILE);
        let pickle = dir.join(PICKLE_FILE);
        let (weights, weights_format) = if safetensors.is_file() {
            (safetensors, WeightsFormat::Safetensors)
        } else if pickle.is_file() {
            (pickle, WeightsFormat::PytorchPickle)
        } else {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                wanted: format!("{SAFETENSORS_FILE} or {PICKLE_FILE}"),
            });
        };
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            config,
            weights,
            weights_format,
        })
    }
}

/// How a checkpoint names its encoder tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorNaming {
    /// `embeddings.word_embeddings.weight`, ...
    Bare,
    /// `bert.embeddings.word_embeddings.weight`, ... (with `classifier.*` beside them).
    Prefixed(String),
}

impl TensorNaming {
    fn detect(names: &HashMap<String, Tensor>) -> Option<Self> {
        const PROBE: &str = "embeddings.word_embeddings.weight";
        if names.contains_key(PROBE) {
            return Some(TensorNaming::Bare);
        }
        names
            .keys()
            .find_map(|name| name.strip_suffix(PROBE))
            .map(|prefix| TensorNaming::Prefixed(prefix.to_string()))
    }

    fn prefix(&self) -> &str {
        match self {
            TensorNaming::Bare => "",
            TensorNaming::Prefixed(prefix) => prefix,
        }
    }
}

/// A model ready to run, with its tokenizer and where it came from.
pub struct LoadedModel {
    pub model: BertModel,
    pub tokenizer: TextTokenizer,
    pub files: ModelFiles,
    pub naming: TensorNaming,
}

/// Loads the model in `dir` with its first `depth` layers (all when `None`), its
/// classification head when the checkpoint has one, and a tokenizer truncating at `max_len`.
pub fn load_model(
    dir: &Path,
    max_len: usize,
    depth: Option<usize>,
    device: &Device,
) -> Result<LoadedModel, ModelError> {
    let files = ModelFiles::locate(dir)?;
    let config = BertConfig::from_file(&files.config)?;
    let depth = depth.unwrap_or(config.num_hidden_layers);
    if depth > config.num_hidden_layers {
        return Err(ModelError::Setting(format!(
            "depth {depth} requested but {} declares {} layers",
            files.config.display(),
            config.num_hidden_layers
        )));
    }
    if max_len > config.max_position_embeddings {
        return Err(ModelError::Setting(format!(
            "max_len {max_len} exceeds the model's {} position embeddings ({})",
            config.max_position_embeddings,
            files.config.display()
        )));
    }
    let Checkpoint {
        files,
        config,
        naming,
        tensors,
        has_head,
    } = read_checkpoint(files, config, depth)?;
    let mut encoder_tensors = HashMap::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        encoder_tensors.insert(name, tensor.to_device(device)?);
    }
    let vb = VarBuilder::from_tensors(encoder_tensors, DType::F32, device);
    let model = BertModel::load(vb, &config, depth, has_head)?;
    let tokenizer = TextTokenizer::from_dir(dir, max_len)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        files,
        naming,
    })
}

/// Checks what can be checked of the model in `dir` without loading its weights: the
/// configuration, the safetensors header (every tensor the full model needs, with the shape
/// `config.json` implies, and a file as long as the header says: truncated downloads fail
/// here) and the tokenizer. A `pytorch_model.bin` is only checked when it is loaded. Returns
/// the checked configuration.
pub fn check_checkpoint(dir: &Path) -> Result<BertConfig, ModelError> {
    let files = ModelFiles::locate(dir)?;
    let config = BertConfig::from_file(&files.config)?;
    if files.weights_format == WeightsFormat::Safetensors {
        check_safetensors_header(&files.weights, &config)?;
    }
    TextTokenizer::from_dir(dir, config.max_position_embeddings.max(2))?;
    Ok(config)
}

/// One entry of a safetensors header.
#[derive(serde::Deserialize)]
struct HeaderEntry {
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

fn check_safetensors_header(path: &Path, config: &BertConfig) -> Result<(), ModelError> {
    use std::io::Read;
    let broken = |message: String| ModelError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|err| broken(err.to_string()))?;
    let file_len = file
        .metadata()
        .map_err(|err| broken(err.to_string()))?
        .len();
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|_| broken("shorter than a safetensors header".to_string()))?;
    let header_len = u64::from_le_bytes(length);
    if header_len > file_len.saturating_sub(8) || header_len > 100 << 20 {
        return Err(broken(format!(
            "its header claims {header_len} bytes, the file has {file_len}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|err| broken(err.to_string()))?;
    let mut entries: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|err| broken(format!("unreadable safetensors header: {err}")))?;
    entries.remove("__metadata__");
    let mut tensors: HashMap<String, HeaderEntry> = HashMap::with_capacity(entries.len());
    for (name, value) in entries {
        let entry: HeaderEntry = serde_json::from_value(value)
            .map_err(|err| broken(format!("header entry `{name}`: {err}")))?;
        let name = name
            .replace("LayerNorm.gamma", "LayerNorm.weight")
            .replace("LayerNorm.beta", "LayerNorm.bias");
        tensors.insert(name, entry);
    }
    let data_end = tensors
        .values()
        .map(|entry| entry.data_offsets[1])
        .max()
        .unwrap_or(0);
    if 8 + header_len + data_end > file_len {
        return Err(broken(format!(
            "truncated: the header places tensor data up to byte {}, the file has {file_len}",
            8 + header_len + data_end
        )));
    }
    let word_embeddings = "embeddings.word_embeddings.weight";
    let prefix = tensors
        .keys()
        .find_map(|name| name.strip_suffix(word_embeddings))
        .ok_or_else(|| ModelError::MissingTensor {
            path: path.to_path_buf(),
            tensor: word_embeddings.to_string(),
            hint: String::new(),
        })?
        .to_string();
    let has_head = tensors.contains_key("classifier.weight");
    for (name, shape) in expected_tensors(config, config.num_hidden_layers, has_head) {
        let stored = if name.starts_with("classifier.") {
            name
        } else {
            format!("{prefix}{name}")
        };
        let Some(entry) = tensors.get(&stored) else {
            return Err(ModelError::MissingTensor {
                path: path.to_path_buf(),
                tensor: stored,
                hint: String::new(),
            });
        };
        if entry.shape != shape {
            return Err(ModelError::ShapeMismatch {
                path: path.to_path_buf(),
                tensor: stored,
                expected: shape,
                actual: entry.shape.clone(),
            });
        }
    }
    Ok(())
}

/// A checkpoint's tensors, checked against its `config.json`, under the bare naming
/// (`embeddings.*`, `encoder.*`, `pooler.*`, `classifier.*`), in f32 on the CPU.
pub(crate) struct Checkpoint {
    pub files: ModelFiles,
    pub config: BertConfig,
    pub naming: TensorNaming,
    pub tensors: HashMap<String, Tensor>,
    /// Whether the checkpoint has a classification head (`classifier.*` and `pooler.*`).
    pub has_head: bool,
}

/// Reads the weights of `files` and checks every tensor the first `depth` layers (and the
/// head, when there is one) need for presence and shape.
pub(crate) fn read_checkpoint(
    files: ModelFiles,
    config: BertConfig,
    depth: usize,
) -> Result<Checkpoint, ModelError> {
    let mut tensors = read_weights(&files)?;
    let naming = TensorNaming::detect(&tensors).ok_or_else(|| {
        missing_tensor(
            &files.weights,
            "embeddings.word_embeddings.weight",
            &tensors,
        )
    })?;
    let prefix = naming.prefix().to_string();
    rename_legacy_layer_norm(&mut tensors);
    let has_head = tensors.contains_key("classifier.weight");
    for (name, shape) in expected_tensors(&config, depth, has_head) {
        let stored = if name.starts_with("classifier.") {
            name.clone()
        } else {
            format!("{prefix}{name}")
        };
        let tensor = tensors
            .get(&stored)
            .ok_or_else(|| missing_tensor(&files.weights, &stored, &tensors))?;
        if tensor.dims() != shape.as_slice() {
            return Err(ModelError::ShapeMismatch {
                path: files.weights.clone(),
                tensor: stored,
                expected: shape,
                actual: tensor.dims().to_vec(),
            });
        }
    }
    let mut bare = HashMap::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let local = match name.strip_prefix(&prefix) {
            Some(stripped) if !name.starts_with("classifier.") => stripped.to_string(),
            _ => name,
        };
        bare.insert(local, tensor.to_dtype(DType::F32)?);
    }
    Ok(Checkpoint {
        files,
        config,
        naming,
        tensors: bare,
        has_head,
    })
}

fn read_weights(files: &ModelFiles) -> Result<HashMap<String, Tensor>, ModelError> {
    let weights_error = |err: candle_core::Error| ModelError::Weights {
        path: files.weights.clone(),
        message: err.to_string(),
    };
    match files.weights_format {
        WeightsFormat::Safetensors => {
            candle_core::safetensors::load(&files.weights, &Device::Cpu).map_err(weights_error)
        }
        WeightsFormat::PytorchPickle => Ok(candle_core::pickle::read_all(&files.weights)
            .map_err(weights_error)?
            .into_iter()
            .collect()),
    }
}

/// Old BERT checkpoints call layer-norm parameters `gamma`/`beta`.
fn rename_legacy_layer_norm(tensors: &mut HashMap<String, Tensor>) {
    let legacy: Vec<String> = tensors
        .keys()
        .filter(|name| name.ends_with("LayerNorm.gamma") || name.ends_with("LayerNorm.beta"))
        .cloned()
        .collect();
    for name in legacy {
        if let Some(tensor) = tensors.remove(&name) {
            let renamed = name
                .replace("LayerNorm.gamma", "LayerNorm.weight")
                .replace("LayerNorm.beta", "LayerNorm.bias");
            tensors.insert(renamed, tensor);
        }
    }
}

fn missing_tensor(path: &Path, tensor: &str, tensors: &HashMap<String, Tensor>) -> ModelError {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let sample: Vec<&str> = names.iter().take(4).map(|name| name.as_str()).collect();
    ModelError::MissingTensor {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        hint: if sample.is_empty() {
            " (the file holds no tensors)".to_string()
        } else {
            format!(" (the file holds e.g. {})", sample.join(", "))
        },
    }
}

/// Every tensor the model reads, with the shape `config.json` implies, in the bare naming
/// (`classifier.*` is never prefixed).
pub(crate) fn expected_tensors(
    config: &BertConfig,
    depth: usize,
    with_head: bool,
) -> Vec<(String, Vec<usize>)> {
    let hidden = config.hidden_size;
    let inner = config.intermediate_size;
    let mut expected = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![config.vocab_size, hidden],
        ),
        (
            "embeddings.position_embeddings.weight".to_string(),
            vec![config.max_position_embeddings, hidden],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_string(),
            vec![config.type_vocab_size, hidden],
        ),
        ("embeddings.LayerNorm.weight".to_string(), vec![hidden]),
        ("embeddings.LayerNorm.bias".to_string(), vec![hidden]),
    ];
    for index in 0..depth {
        let layer = format!("encoder.layer.{index}");
        let mut linear = |name: &str, rows: usize, cols: usize| {
            expected.push((format!("{layer}.{name}.weight"), vec![rows, cols]));
            expected.push((format!("{layer}.{name}.bias"), vec![rows]));
        };
        linear("attention.self.query", hidden, hidden);
        linear("attention.self.key", hidden, hidden);
        linear("attention.self.value", hidden, hidden);
        linear("attention.output.dense", hidden, hidden);
        linear("intermediate.dense", inner, hidden);
        linear("output.dense", hidden, inner);
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            expected.push((format!("{layer}.{norm}.weight"), vec![hidden]));
            expected.push((format!("{layer}.{norm}.bias"), vec![hidden]));
        }
    }
    if with_head {
        let labels = config.label_count();
        expected.push(("pooler.dense.weight".to_string(), vec![hidden, hidden]));
        expected.push(("pooler.dense.bias".to_string(), vec![hidden]));
        expected.push(("classifier.weight".to_string(), vec![labels, hidden]));
        expected.push(("classifier.bias".to_string(), vec![labels]));
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};

    fn tiny(dir: &Path) {
        let config = tiny_config(2, TINY_VOCAB.len());
        write_random_bert(dir, &config, TINY_VOCAB, 3, false).unwrap();
    }

    #[test]
    fn a_sound_checkpoint_passes_the_cheap_check() {
        let dir = tempfile::tempdir().unwrap();
        tiny(dir.path());
        assert_eq!(check_checkpoint(dir.path()).unwrap().num_hidden_layers, 2);
    }

    #[test]
    fn truncated_weights_and_a_missing_tokenizer_fail_the_cheap_check() {
        let dir = tempfile::tempdir().unwrap();
        tiny(dir.path());
        let weights = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&weights).unwrap();
        std::fs::write(&weights, &bytes[..bytes.len() - 10]).unwrap();
        let message = check_checkpoint(dir.path()).unwrap_err().to_string();
        assert!(message.contains("truncated"), "{message}");
        std::fs::write(&weights, &bytes[..4]).unwrap();
        let message = check_checkpoint(dir.path()).unwrap_err().to_string();
        assert!(message.contains("safetensors header"), "{message}");

        std::fs::write(&weights, &bytes).unwrap();
        std::fs::remove_file(dir.path().join("vocab.txt")).unwrap();
        assert!(check_checkpoint(dir.path()).is_err());
    }

    #[test]
    fn shapes_that_disagree_with_the_config_fail_the_cheap_check() {
        let dir = tempfile::tempdir().unwrap();
        tiny(dir.path());
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["intermediate_size"] = serde_json::json!(7);
        std::fs::write(&path, config.to_string()).unwrap();
        let message = check_checkpoint(dir.path()).unwrap_err().to_string();
        assert!(message.contains("intermediate"), "{message}");
    }
}
