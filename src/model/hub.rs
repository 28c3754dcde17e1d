//! Resolving a model name to a local directory: a path on disk, or a Hugging Face Hub id
//! fetched into (or found in) the Hugging Face cache.
//!
//! The cache layout and environment variables are the ones `huggingface_hub` uses, so a cache
//! filled by Python (`HF_HOME`, `HF_HUB_CACHE`) serves repro too, and `HF_HUB_OFFLINE=1` never
//! touches the network.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, CacheRepo, Repo, RepoType};

use super::layout::{REQUIRED, SPECIAL_TOKENS_FILE, TOKENIZER_CONFIG_FILE};
use super::ModelError;

/// Files fetched when the repository has them; none is needed to run the model.
const OPTIONAL: &[&str] = &[
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_FILE,
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// Where Hub files are cached and whether the network may be used.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub cache_dir: PathBuf,
    pub offline: bool,
    /// Overrides `https://huggingface.co` (`HF_ENDPOINT`).
    pub endpoint: Option<String>,
}

impl HubSettings {
    /// Reads `HF_HUB_CACHE`, `HF_HOME`, `HF_HUB_OFFLINE` and `HF_ENDPOINT` like `huggingface_hub`.
    pub fn from_env() -> Self {
        let cache_dir = match std::env::var_os("HF_HUB_CACHE") {
            Some(dir) => PathBuf::from(dir),
            None => Cache::from_env().path().clone(),
        };
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|value| is_truthy(&value))
            .unwrap_or(false);
        HubSettings {
            cache_dir,
            offline,
            endpoint: std::env::var("HF_ENDPOINT").ok(),
        }
    }
}

fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "on" | "yes" | "true"
    )
}

/// Turns `spec` into a model directory: an existing directory is used as it is; otherwise
/// `spec` is read as a Hub id, `org/name` or `org/name@revision`, and its files are taken
/// from the cache or, unless offline, downloaded into it.
pub fn resolve_model(spec: &str, settings: &HubSettings) -> Result<PathBuf, ModelError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let (repo_id, revision) = match spec.split_once('@') {
        Some((id, revision)) => (id, revision),
        None => (spec, "main"),
    };
    if !looks_like_hub_id(repo_id) {
        return Err(ModelError::Hub {
            model: spec.to_string(),
            message: "no such directory, and not a Hugging Face id (`org/name`)".to_string(),
        });
    }
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let hub_error = |message: String| ModelError::Hub {
        model: spec.to_string(),
        message,
    };
    let files = HubFiles::open(repo, settings).map_err(hub_error)?;
    let mut snapshot: Option<PathBuf> = None;
    for group in REQUIRED {
        let mut found = None;
        for file in group.iter() {
            if let Some(path) = files.get(file).map_err(hub_error)? {
                found = Some(path);
                break;
            }
        }
        let Some(found) = found else {
            let place = if settings.offline {
                format!(
                    "not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set",
                    settings.cache_dir.display()
                )
            } else {
                "not found on the Hub".to_string()
            };
            return Err(hub_error(format!(
                "no local directory `{spec}`, and {} is {place}",
                group.join(" or ")
            )));
        };
        if snapshot.is_none() {
            snapshot = found.parent().map(Path::to_path_buf);
        }
    }
    for file in OPTIONAL {
        // Optional files only add information; a failure to get one is not an error.
        let _ = files.get(file);
    }
    snapshot.ok_or_else(|| hub_error("the cache returned no file".to_string()))
}

/// A Hub repository's files: from the cache, else (unless offline) downloaded into it.
struct HubFiles {
    cache: CacheRepo,
    api: Option<ApiRepo>,
}

impl HubFiles {
    fn open(repo: Repo, settings: &HubSettings) -> Result<Self, String> {
        let cache = Cache::new(settings.cache_dir.clone()).repo(repo.clone());
        if settings.offline {
            return Ok(Self { cache, api: None });
        }
        let mut builder =
            ApiBuilder::from_cache(Cache::new(settings.cache_dir.clone())).with_progress(false);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let api = builder.build().map_err(|err| err.to_string())?.repo(repo);
        Ok(Self {
            cache,
            api: Some(api),
        })
    }

    /// The file's local path; `None` when the repository has no such file (or, offline,
    /// the cache does not hold it).
    fn get(&self, file: &str) -> Result<Option<PathBuf>, String> {
        if let Some(cached) = self.cache.get(file) {
            return Ok(Some(cached));
        }
        match &self.api {
            None => Ok(None),
            Some(api) => match api.get(file) {
                Ok(path) => Ok(Some(path)),
                Err(hf_hub::api::sync::ApiError::RequestError(err))
                    if matches!(*err, ureq::Error::Status(404, _)) =>
                {
                    Ok(None)
                }
                Err(err) => Err(err.to_string()),
            },
        }
    }
}

fn looks_like_hub_id(id: &str) -> bool {
    let mut parts = id.split('/');
    let valid = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, None) => valid(name),
        (Some(org), Some(name), None) => valid(org) && valid(name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lays out a cache entry the way `huggingface_hub` does: `refs/<revision>` holds the
    /// commit, `snapshots/<commit>/` the files.
    fn fill_cache(cache: &Path, repo_id: &str, files: &[&str]) -> PathBuf {
        let folder = cache.join(format!("models--{}", repo_id.replace('/', "--")));
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::write(folder.join("refs").join("main"), commit).unwrap();
        let snapshot = folder.join("snapshots").join(commit);
        for file in files {
            let path = snapshot.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"{}").unwrap();
        }
        snapshot
    }

    fn offline(cache: &Path) -> HubSettings {
        HubSettings {
            cache_dir: cache.to_path_buf(),
            offline: true,
            endpoint: None,
        }
    }

    #[test]
    fn offline_resolves_from_a_filled_cache() {
        let cache = tempfile::tempdir().unwrap();
        let snapshot = fill_cache(
            cache.path(),
            "cross-encoder/ms-marco-MiniLM-L-6-v2",
            &["config.json", "model.safetensors", "vocab.txt"],
        );
        let dir = resolve_model(
            "cross-encoder/ms-marco-MiniLM-L-6-v2",
            &offline(cache.path()),
        )
        .unwrap();
        assert_eq!(dir, snapshot);
    }

    #[test]
    fn offline_missing_weights_is_a_clear_error() {
        let cache = tempfile::tempdir().unwrap();
        fill_cache(
            cache.path(),
            "org/model",
            &["config.json", "tokenizer.json"],
        );
        let message = resolve_model("org/model", &offline(cache.path()))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("model.safetensors or pytorch_model.bin"),
            "{message}"
        );
        assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
    }

    #[test]
    fn offline_unknown_model_names_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        let message = resolve_model("models/never-provisioned", &offline(cache.path()))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("no local directory `models/never-provisioned`"),
            "{message}"
        );
        assert!(
            message.contains(&cache.path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn revision_selects_the_ref() {
        let cache = tempfile::tempdir().unwrap();
        fill_cache(cache.path(), "org/model", &["config.json"]);
        let message = resolve_model("org/model@v2", &offline(cache.path()))
            .unwrap_err()
            .to_string();
        assert!(message.contains("config.json"), "{message}");
    }

    #[test]
    fn truthy_values_follow_huggingface_hub() {
        for value in ["1", "ON", "yes", "True"] {
            assert!(is_truthy(value), "{value}");
        }
        for value in ["0", "", "off", "false"] {
            assert!(!is_truthy(value), "{value}");
        }
    }

    #[test]
    fn hub_ids_are_recognised() {
        assert!(looks_like_hub_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(looks_like_hub_id("bert-base-uncased"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("../x"));
    }
}
