/*!
The manifest of a task's cached output: the size and sha256 of every file in it, written by
the worker once the output is complete (after `outcome.json`, which it covers), checked
cheaply (sizes) whenever the output is found cached, in full (contents) before a running task
reads it, and by `repro verify`.

This module owns the manifest's file name and format and what counts as damage. It must not
decide what runs ([`super::decide`] does) nor read the store.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest's file name inside a task's output directory.
pub const MANIFEST: &str = "manifest.json";

/// Relative path (`/`-separated) → what the file held when the task finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub size: u64,
    pub sha256: String,
}

/// What is wrong with a cached output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The manifest itself cannot be read.
    Unreadable(String),
    Missing(String),
    Size {
        file: String,
        recorded: u64,
        found: u64,
    },
    Content(String),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Unreadable(why) => write!(f, "its manifest is unreadable: {why}"),
            Damage::Missing(file) => write!(f, "{file} is missing"),
            Damage::Size {
                file,
                recorded,
                found,
            } => write!(f, "{file} has {found} bytes, {recorded} when written"),
            Damage::Content(file) => write!(f, "{file} does not match its recorded sha256"),
        }
    }
}

/// Every regular file under `dir` but the manifest, as `/`-separated relative paths, sorted.
fn files_under(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            let name: Vec<String> = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            let name = name.join("/");
            if name != MANIFEST {
                found.push(name);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Hashes every file under `dir` and writes the manifest there, atomically.
pub fn write(dir: &Path) -> std::io::Result<Manifest> {
    let mut files = BTreeMap::new();
    for name in files_under(dir)? {
        let path = dir.join(&name);
        let size = std::fs::metadata(&path)?.len();
        let sha256 = crate::util::sha256_file(&path)?;
        files.insert(name, FileEntry { size, sha256 });
    }
    let manifest = Manifest { files };
    let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    crate::util::write_atomic(&dir.join(MANIFEST), &json)?;
    Ok(manifest)
}

/// The manifest of `dir`; `Ok(None)` for outputs written before repro kept manifests.
pub fn read(dir: &Path) -> Result<Option<Manifest>, Damage> {
    let path = dir.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| Damage::Unreadable(err.to_string())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Damage::Unreadable(err.to_string())),
    }
}

/// How closely a cached output is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every file present with its recorded size: a directory listing's cost.
    Sizes,
    /// Every file's sha256 as well: reads everything.
    Contents,
}

/// The first damage found in the output at `dir`, checked to `depth`; `None` when it is
/// whole, or when it has no manifest (outputs older than manifests are trusted as before).
pub fn damage(dir: &Path, depth: Depth) -> Option<Damage> {
    let manifest = match read(dir) {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return None,
        Err(damage) => return Some(damage),
    };
    for (name, entry) in &manifest.files {
        let path = dir.join(name);
        let Ok(metadata) = std::fs::metadata(&path) else {
            return Some(Damage::Missing(name.clone()));
        };
        if metadata.len() != entry.size {
            return Some(Damage::Size {
                file: name.clone(),
                recorded: entry.size,
                found: metadata.len(),
            });
        }
        if depth == Depth::Contents
            && crate::util::sha256_file(&path).ok().as_deref() != Some(entry.sha256.as_str())
        {
            return Some(Damage::Content(name.clone()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("outcome.json"), b"{\"seconds\": 1}").unwrap();
        std::fs::create_dir(dir.path().join("model")).unwrap();
        std::fs::write(dir.path().join("model/weights"), vec![7u8; 100]).unwrap();
        write(dir.path()).unwrap();
        dir
    }

    #[test]
    fn a_whole_output_has_no_damage_at_any_depth() {
        let dir = output();
        let manifest = read(dir.path()).unwrap().unwrap();
        let names: Vec<&str> = manifest.files.keys().map(String::as_str).collect();
        assert_eq!(names, ["model/weights", "outcome.json"]);
        assert_eq!(damage(dir.path(), Depth::Contents), None);
    }

    #[test]
    fn a_flipped_byte_is_found_by_contents_and_a_deleted_file_by_sizes() {
        let dir = output();
        let weights = dir.path().join("model/weights");
        let mut bytes = std::fs::read(&weights).unwrap();
        bytes[50] ^= 1;
        std::fs::write(&weights, &bytes).unwrap();
        assert_eq!(damage(dir.path(), Depth::Sizes), None, "same size");
        assert_eq!(
            damage(dir.path(), Depth::Contents),
            Some(Damage::Content("model/weights".into()))
        );
        std::fs::remove_file(&weights).unwrap();
        assert_eq!(
            damage(dir.path(), Depth::Sizes),
            Some(Damage::Missing("model/weights".into()))
        );
    }

    #[test]
    fn outputs_without_a_manifest_are_trusted_and_a_broken_one_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(damage(dir.path(), Depth::Contents), None);
        std::fs::write(dir.path().join(MANIFEST), b"{").unwrap();
        assert!(matches!(
            damage(dir.path(), Depth::Sizes),
            Some(Damage::Unreadable(_))
        ));
    }
}
