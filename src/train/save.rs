//! Writing trained models as directories that Hugging Face `transformers`,
//! sentence-transformers and [`crate::model::load_model`] read, atomically: everything is
//! written into a staging directory beside the output, which is then renamed into place.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use super::TrainError;
use crate::model::layout::TOKENIZER_FILES;

/// Fills a staging directory beside `output` with `fill`, then renames it to `output`. A
/// previous `output` is replaced only once the new one is complete; on error nothing changes.
pub(crate) fn write_model_dir(
    output: &Path,
    fill: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let name = output
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| {
            TrainError::Setting(format!(
                "output {} does not end in a directory name",
                output.display()
            ))
        })?;
    let parent = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|err| TrainError::io(&parent, err))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(&parent)
        .map_err(|err| TrainError::io(&parent, err))?;
    fill(staging.path())?;
    make_readable(staging.path())?;
    if output.exists() {
        // Move the previous directory into a scratch directory that is deleted on drop.
        let previous = tempfile::Builder::new()
            .prefix(&format!(".{name}.previous-"))
            .tempdir_in(&parent)
            .map_err(|err| TrainError::io(&parent, err))?;
        let aside = previous.path().join(name);
        std::fs::rename(output, &aside).map_err(|err| TrainError::io(output, err))?;
        if let Err(err) = std::fs::rename(staging.path(), output) {
            // Put the previous directory back before reporting.
            let _ = std::fs::rename(&aside, output);
            return Err(TrainError::io(output, err));
        }
    } else {
        std::fs::rename(staging.path(), output).map_err(|err| TrainError::io(output, err))?;
    }
    // The staging directory is now `output`: nothing is left for its cleanup to delete.
    let _ = staging.keep();
    Ok(())
}

/// Temporary directories are created owner-only; a model directory should read like one
/// made with `mkdir`.
fn make_readable(dir: &Path) -> Result<(), TrainError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|err| TrainError::io(dir, err))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).map_err(|err| TrainError::Json {
        path: path.to_path_buf(),
        message: err.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(|err| TrainError::io(path, err))
}

pub(crate) fn write_weights(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), TrainError> {
    candle_core::safetensors::save(tensors, path).map_err(|err| TrainError::Save {
        path: path.to_path_buf(),
        message: err.to_string(),
    })
}

pub(crate) fn copy_tokenizer_files(source: &Path, dir: &Path) -> Result<(), TrainError> {
    let mut copied = 0;
    for file in TOKENIZER_FILES {
        let from = source.join(file);
        if from.is_file() {
            std::fs::copy(&from, dir.join(file)).map_err(|err| TrainError::io(&from, err))?;
            copied += 1;
        }
    }
    if copied == 0 {
        return Err(TrainError::Setting(format!(
            "{} has no tokenizer files ({})",
            source.display(),
            TOKENIZER_FILES.join(", ")
        )));
    }
    Ok(())
}

/// `modules.json` (Transformer, then Pooling), `sentence_bert_config.json` and the mean
/// pooling's `1_Pooling/config.json`.
pub(crate) fn write_sentence_transformers_files(
    dir: &Path,
    hidden_size: usize,
    max_seq_length: usize,
) -> Result<(), TrainError> {
    write_json(
        &dir.join("modules.json"),
        &serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
        ]),
    )?;
    write_json(
        &dir.join("sentence_bert_config.json"),
        &serde_json::json!({"max_seq_length": max_seq_length, "do_lower_case": false}),
    )?;
    let pooling = dir.join("1_Pooling");
    std::fs::create_dir(&pooling).map_err(|err| TrainError::io(&pooling, err))?;
    write_json(
        &pooling.join("config.json"),
        &serde_json::json!({
            "word_embedding_dimension": hidden_size,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_previous_directory_only_when_complete() {
        let root = tempfile::tempdir().unwrap();
        let output = root.path().join("model");
        write_model_dir(&output, |dir| {
            std::fs::write(dir.join("a"), "1").map_err(|err| TrainError::io(dir, err))
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(output.join("a")).unwrap(), "1");
        let failed = write_model_dir(&output, |dir| {
            std::fs::write(dir.join("a"), "2").map_err(|err| TrainError::io(dir, err))?;
            Err(TrainError::Setting("boom".to_string()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(output.join("a")).unwrap(), "1");
        write_model_dir(&output, |dir| {
            std::fs::write(dir.join("b"), "3").map_err(|err| TrainError::io(dir, err))
        })
        .unwrap();
        assert!(!output.join("a").exists());
        assert_eq!(std::fs::read_to_string(output.join("b")).unwrap(), "3");
        // No staging or previous directories are left beside the output.
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("model")]);
    }
}
