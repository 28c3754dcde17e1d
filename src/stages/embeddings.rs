//! The embeddings format: what an encode task writes and every later task reads.
//!
//! Pooled embeddings are stored per (layer, pooling) as raw little-endian `f32` rows
//! (`corpus.L3.mean.f32`, `queries.L3.mean.f32`) beside `embeddings.json`, which records the
//! row ids, the dimension and what was pooled, so that a reader loads only the two matrices it
//! needs. A sharded encode is several such directories, each holding the rows of its
//! documents and their corpus positions; [`Encoded`] merges them back in corpus order when
//! they are read, so that no stage downstream knows whether the encode was sharded.
//!
//! This file owns the layout and nothing else: it encodes nothing and retrieves nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inputs::io_error;
use super::StageError;
use crate::model::{Embeddings, Pooling};
use crate::task::Artifact;

/// The manifest of an encode task's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingsManifest {
    pub dim: usize,
    pub layers: Vec<usize>,
    pub poolings: Vec<Pooling>,
    pub query_ids: Vec<String>,
    pub doc_ids: Vec<String>,
    /// Set by a sharded encode: which shard this is and where its rows belong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardManifest>,
}

/// The part of a corpus one shard of an encode holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    pub index: usize,
    pub count: usize,
    /// Documents in the whole corpus.
    pub corpus_size: usize,
    /// The corpus position of each of this shard's rows (ascending).
    pub positions: Vec<usize>,
}

const MANIFEST: &str = "embeddings.json";

/// The file of one side's (`queries` or `corpus`) embeddings of one (layer, pooling).
pub(super) fn matrix_name(side: &str, layer: usize, pooling: Pooling) -> String {
    format!("{side}.L{layer}.{pooling}.f32")
}

/// Writes `manifest` into an encode's output directory `out`.
pub(super) fn write_manifest(
    out: &Path,
    manifest: &EmbeddingsManifest,
) -> Result<Artifact, StageError> {
    let path = out.join(MANIFEST);
    let json = serde_json::to_vec(manifest).map_err(|err| StageError::Setting(err.to_string()))?;
    crate::util::write_atomic(&path, &json).map_err(io_error(&path))?;
    Ok(Artifact {
        name: MANIFEST.to_string(),
        path: MANIFEST.to_string(),
        bytes: json.len() as u64,
    })
}

/// The output of one encode, sharded or not, read as one: ids and rows in corpus order.
pub(super) struct Encoded {
    parts: Vec<(PathBuf, EmbeddingsManifest)>,
    /// The merged manifest: every query id, every document id in corpus order.
    pub manifest: EmbeddingsManifest,
}

/// The manifest is shard `index` of `count` of a `corpus_size`-document corpus, encoded as
/// the first shard was; returns its shard part.
fn check_shard<'m>(
    manifest: &'m EmbeddingsManifest,
    first: &EmbeddingsManifest,
    (index, count, corpus_size): (usize, usize, usize),
) -> Result<&'m ShardManifest, String> {
    let shard = manifest
        .shard
        .as_ref()
        .ok_or_else(|| "it is not sharded".to_string())?;
    if (shard.index, shard.count, shard.corpus_size) != (index, count, corpus_size) {
        return Err(format!(
            "it is shard {} of {} of a {}-document corpus",
            shard.index + 1,
            shard.count,
            shard.corpus_size
        ));
    }
    if (manifest.dim, &manifest.layers, &manifest.poolings)
        != (first.dim, &first.layers, &first.poolings)
    {
        return Err("its dimension, layers or poolings differ".to_string());
    }
    if shard.positions.len() != manifest.doc_ids.len() {
        return Err("its positions and ids disagree".to_string());
    }
    Ok(shard)
}

impl Encoded {
    /// Reads the manifests of an encode's output directories (one per shard, in order) and
    /// checks that they are the shards of one encode.
    pub fn open(dirs: &[PathBuf]) -> Result<Self, StageError> {
        let parts = dirs
            .iter()
            .map(|dir| read_manifest(dir).map(|manifest| (dir.clone(), manifest)))
            .collect::<Result<Vec<_>, _>>()?;
        let Some((first_dir, first)) = parts.first() else {
            return Err(StageError::Setting("no encode output to read".to_string()));
        };
        if parts.len() == 1 && first.shard.is_none() {
            let manifest = first.clone();
            return Ok(Encoded { parts, manifest });
        }
        let corpus_size = first.shard.as_ref().map_or(0, |shard| shard.corpus_size);
        let mut doc_ids: Vec<Option<String>> = vec![None; corpus_size];
        let mut query_ids = Vec::new();
        for (index, (dir, manifest)) in parts.iter().enumerate() {
            let mismatch = |what: String| {
                StageError::Setting(format!(
                    "{} is not shard {} of {} of the encode in {}: {what}",
                    dir.display(),
                    index + 1,
                    parts.len(),
                    first_dir.display()
                ))
            };
            let shard = check_shard(manifest, first, (index, parts.len(), corpus_size))
                .map_err(mismatch)?;
            for (&position, id) in shard.positions.iter().zip(&manifest.doc_ids) {
                match doc_ids.get_mut(position) {
                    Some(slot @ None) => *slot = Some(id.clone()),
                    _ => {
                        return Err(mismatch(format!(
                            "corpus position {position} is outside the corpus or taken twice"
                        )))
                    }
                }
            }
            if !manifest.query_ids.is_empty() {
                query_ids = manifest.query_ids.clone();
            }
        }
        let doc_ids = doc_ids
            .into_iter()
            .enumerate()
            .map(|(position, id)| {
                id.ok_or_else(|| {
                    StageError::Setting(format!(
                        "no shard of the encode in {} holds corpus position {position}",
                        first_dir.display()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = EmbeddingsManifest {
            dim: first.dim,
            layers: first.layers.clone(),
            poolings: first.poolings.clone(),
            query_ids,
            doc_ids,
            shard: None,
        };
        Ok(Encoded { parts, manifest })
    }

    /// Where the encode lies, for messages.
    pub fn describe(&self) -> String {
        match self.parts.as_slice() {
            [(dir, _)] => dir.display().to_string(),
            parts => format!(
                "{} (and {} more shards)",
                parts[0].0.display(),
                parts.len() - 1
            ),
        }
    }

    /// Fails unless the encode pooled `layer` with `pooling`.
    pub fn check_holds(&self, layer: usize, pooling: Pooling) -> Result<(), StageError> {
        let manifest = &self.manifest;
        if manifest.layers.contains(&layer) && manifest.poolings.contains(&pooling) {
            return Ok(());
        }
        Err(StageError::Setting(format!(
            "{} holds layers {:?} and poolings {:?}, not layer {layer} with {pooling}",
            self.describe(),
            manifest.layers,
            manifest.poolings,
        )))
    }

    /// The query embeddings of one (layer, pooling), in query order.
    pub fn queries(&self, layer: usize, pooling: Pooling) -> Result<Embeddings, StageError> {
        let (dir, manifest) = self
            .parts
            .iter()
            .find(|(_, manifest)| !manifest.query_ids.is_empty())
            .unwrap_or(&self.parts[0]);
        read_matrix(
            &dir.join(matrix_name("queries", layer, pooling)),
            manifest.query_ids.len(),
            manifest.dim,
        )
    }

    /// The corpus embeddings of one (layer, pooling), in corpus order.
    pub fn corpus(&self, layer: usize, pooling: Pooling) -> Result<Embeddings, StageError> {
        let name = matrix_name("corpus", layer, pooling);
        if let [(dir, manifest)] = self.parts.as_slice() {
            if manifest.shard.is_none() {
                return read_matrix(&dir.join(&name), manifest.doc_ids.len(), manifest.dim);
            }
        }
        let dim = self.manifest.dim;
        let mut merged = Embeddings::zeros(self.manifest.doc_ids.len(), dim);
        for (dir, manifest) in &self.parts {
            let rows = read_matrix(&dir.join(&name), manifest.doc_ids.len(), dim)?;
            let positions = manifest.shard.as_ref().map_or(&[][..], |s| &s.positions);
            for (row, &position) in positions.iter().enumerate() {
                merged.data[position * dim..(position + 1) * dim].copy_from_slice(rows.row(row));
            }
        }
        Ok(merged)
    }
}

/// The manifest of the encode task (or shard) whose output is `encoded`.
pub(super) fn read_manifest(encoded: &Path) -> Result<EmbeddingsManifest, StageError> {
    let path = encoded.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    serde_json::from_slice(&bytes)
        .map_err(|err| StageError::Setting(format!("{}: {err}", path.display())))
}

/// Scales each row to unit L2 norm (norms below 1e-12 count as 1e-12).
pub(super) fn normalize_rows(embeddings: &mut Embeddings) {
    let dim = embeddings.dim;
    if dim == 0 {
        return;
    }
    for row in embeddings.data.chunks_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= norm);
    }
}

pub(super) fn write_matrix(path: &Path, embeddings: &Embeddings) -> Result<(), StageError> {
    crate::util::write_atomic_with(path, |file| {
        for value in &embeddings.data {
            file.write_all(&value.to_le_bytes())?;
        }
        Ok(())
    })
    .map_err(io_error(path))
}

fn read_matrix(path: &Path, rows: usize, dim: usize) -> Result<Embeddings, StageError> {
    let mut bytes = Vec::with_capacity(rows * dim * 4);
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io_error(path))?;
    if bytes.len() != rows * dim * 4 {
        return Err(StageError::Setting(format!(
            "{}: {} bytes, expected {rows} rows × {dim} f32 = {}",
            path.display(),
            bytes.len(),
            rows * dim * 4
        )));
    }
    let data = bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    Ok(Embeddings { rows, dim, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_round_trip_and_sizes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.f32");
        let embeddings = Embeddings {
            rows: 2,
            dim: 3,
            data: vec![1.0, -2.0, 0.5, 3.0, 0.0, -0.25],
        };
        write_matrix(&path, &embeddings).unwrap();
        assert_eq!(read_matrix(&path, 2, 3).unwrap(), embeddings);
        assert!(read_matrix(&path, 3, 3).is_err());
    }

    #[test]
    fn rows_are_normalised() {
        let mut embeddings = Embeddings {
            rows: 2,
            dim: 2,
            data: vec![3.0, 4.0, 0.0, 0.0],
        };
        normalize_rows(&mut embeddings);
        assert_eq!(embeddings.data, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
