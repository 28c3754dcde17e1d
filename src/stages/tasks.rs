//! The DAG's stage tasks: each reads its spec and its upstream tasks' directories, writes its
//! artifacts into an output directory and returns its [`TaskOutcome`]. Encode and eval live
//! here; [`run_task`] dispatches training and re-ranking to their own files.
//!
//! Pooled embeddings are stored per (layer, pooling) as raw little-endian `f32` rows
//! (`corpus.L3.mean.f32`, `queries.L3.mean.f32`) beside `embeddings.json`, which records the
//! row ids, the dimension and what was pooled, so that an eval task reads only the two
//! matrices it needs. A sharded encode is several such directories, each holding the rows
//! of its documents and their corpus positions; [`Encoded`] merges them back in corpus order
//! when they are read, so that no stage downstream knows whether the encode was sharded.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::{EncodeStats, Observer, StageError};
use crate::data::{beir, trec};
use crate::eval::measures::{evaluate, parse_measures};
use crate::eval::retrieval::{hits_to_run, search, BlockSizes};
use crate::model::{encode_shard, load_model, Embeddings, EncodeOptions, Pooling};
use crate::plan::{Artifact, EncodeSpec, EvalSpec, Stage, TaskOutcome, TaskSpec, UpstreamDirs};

use super::{rerank, training};

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

/// The run file an eval task writes (and a rerank task reads and writes).
pub(super) const RUN_FILE: &str = "run.trec";

pub(super) fn matrix_name(side: &str, layer: usize, pooling: Pooling) -> String {
    format!("{side}.L{layer}.{pooling}.f32")
}

/// Runs `spec` with upstream outputs in `upstream` (by stage), writing into `out`.
pub fn run_task(
    spec: &TaskSpec,
    upstream: &UpstreamDirs,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let started = Instant::now();
    let mut outcome = match spec {
        TaskSpec::Encode(spec) => run_encode(spec, upstream, out, observer)?,
        TaskSpec::Eval(spec) => {
            let encoded = Encoded::open(upstream_dirs(upstream, Stage::Eval, Stage::Encode)?)?;
            run_eval(spec, &encoded, out, observer)?
        }
        TaskSpec::TrainCe(spec) => training::run_train_ce(spec, upstream, out, observer)?,
        TaskSpec::TrainDe(spec) => training::run_train_de(spec, upstream, out, observer)?,
        TaskSpec::Rerank(spec) => rerank::run_rerank(spec, upstream, out, observer)?,
        TaskSpec::Bench(spec) => super::bench::run_bench_task(spec, upstream, out, observer)?,
    };
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// The output directory of the upstream task of stage `needed`, which a `stage` task reads.
pub(super) fn upstream_dir(
    upstream: &UpstreamDirs,
    stage: Stage,
    needed: Stage,
) -> Result<&Path, StageError> {
    upstream_dirs(upstream, stage, needed).map(|dirs| dirs[0].as_path())
}

/// Every output directory of the upstream tasks of stage `needed` (the shards of an encode).
pub(super) fn upstream_dirs(
    upstream: &UpstreamDirs,
    stage: Stage,
    needed: Stage,
) -> Result<&[PathBuf], StageError> {
    let dirs = upstream.all(needed);
    if dirs.is_empty() {
        return Err(StageError::Setting(format!(
            "a {stage} task needs its upstream {needed} task's output, and has none"
        )));
    }
    Ok(dirs)
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encodes with a model given as a directory or as a training task's output: a student is
/// evaluated the same way as a checkpoint, only the model's location differs.
fn run_encode(
    spec: &EncodeSpec,
    upstream: &UpstreamDirs,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let model_dir = spec.model.resolve(upstream).map_err(StageError::Setting)?;
    let loaded = load_model(&model_dir, spec.max_len, Some(spec.depth), &Device::Cpu)?;
    let dataset = beir::load(&spec.dataset_dir, &spec.split)?;
    let options = EncodeOptions {
        layers: (0..=spec.depth).collect(),
        poolings: Pooling::ALL.to_vec(),
        input: spec.input,
        batch_size: spec.batch,
        normalize: false,
    };
    let mut outcome = TaskOutcome::default();
    let mut dim = 0;
    // The queries are few: shard 0 encodes them whole.
    let queries: Vec<String> = match spec.shard {
        Some(shard) if shard.index > 0 => Vec::new(),
        _ => dataset.queries.iter().map(|q| q.text.clone()).collect(),
    };
    let corpus: Vec<String> = dataset.corpus.iter().map(|d| d.full_text()).collect();
    let mut doc_positions = Vec::new();
    for (side, texts, shard) in [("queries", &queries, None), ("corpus", &corpus, spec.shard)] {
        if texts.is_empty() {
            continue;
        }
        let total = shard.map_or(texts.len(), |shard| shard.texts(texts.len(), spec.batch));
        observer.phase(side, total);
        let started = Instant::now();
        let pooled = encode_shard(
            &loaded.model,
            &loaded.tokenizer,
            texts,
            &options,
            shard,
            &mut |done| observer.advance(done),
        )?;
        if side == "corpus" {
            doc_positions = pooled.positions.clone();
        }
        let texts = pooled.positions.len();
        let stats = EncodeStats::new(texts, &pooled, started.elapsed().as_secs_f64());
        outcome
            .metrics
            .insert(format!("{side}_texts_per_second"), stats.texts_per_second);
        outcome
            .metrics
            .insert(format!("{side}_tokens_per_second"), stats.tokens_per_second);
        outcome
            .metrics
            .insert(format!("{side}_seconds"), stats.seconds);
        outcome
            .metrics
            .insert(format!("{side}_tokens"), stats.tokens as f64);
        for (cell, embeddings) in &pooled.cells {
            dim = embeddings.dim;
            let name = matrix_name(side, cell.layer, cell.pooling);
            let path = out.join(&name);
            write_matrix(&path, embeddings)?;
            outcome.artifacts.push(Artifact {
                name: name.clone(),
                path: name,
                bytes: (embeddings.data.len() * 4) as u64,
            });
        }
    }
    let manifest = EmbeddingsManifest {
        dim,
        layers: options.layers.clone(),
        poolings: options.poolings.clone(),
        query_ids: match queries.is_empty() {
            true => Vec::new(),
            false => dataset.queries.iter().map(|q| q.id.clone()).collect(),
        },
        doc_ids: doc_positions
            .iter()
            .map(|&position| dataset.corpus[position].id.clone())
            .collect(),
        shard: spec.shard.map(|shard| ShardManifest {
            index: shard.index,
            count: shard.count,
            corpus_size: dataset.corpus.len(),
            positions: doc_positions.clone(),
        }),
    };
    let path = out.join(MANIFEST);
    let json = serde_json::to_vec(&manifest).map_err(|err| StageError::Setting(err.to_string()))?;
    crate::util::write_atomic(&path, &json).map_err(io_error(&path))?;
    outcome.artifacts.push(Artifact {
        name: MANIFEST.to_string(),
        path: MANIFEST.to_string(),
        bytes: json.len() as u64,
    });
    Ok(outcome)
}

/// The output of one encode, sharded or not, read as one: ids and rows in corpus order.
pub(super) struct Encoded {
    parts: Vec<(PathBuf, EmbeddingsManifest)>,
    /// The merged manifest: every query id, every document id in corpus order.
    pub manifest: EmbeddingsManifest,
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
            let shard = manifest
                .shard
                .as_ref()
                .ok_or_else(|| mismatch("it is not sharded".to_string()))?;
            if (shard.index, shard.count, shard.corpus_size) != (index, parts.len(), corpus_size) {
                return Err(mismatch(format!(
                    "it is shard {} of {} of a {}-document corpus",
                    shard.index + 1,
                    shard.count,
                    shard.corpus_size
                )));
            }
            if (manifest.dim, &manifest.layers, &manifest.poolings)
                != (first.dim, &first.layers, &first.poolings)
            {
                return Err(mismatch(
                    "its dimension, layers or poolings differ".to_string(),
                ));
            }
            if shard.positions.len() != manifest.doc_ids.len() {
                return Err(mismatch("its positions and ids disagree".to_string()));
            }
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

fn run_eval(
    spec: &EvalSpec,
    encoded: &Encoded,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let measures = parse_measures(&spec.measures)?;
    encoded.check_holds(spec.layer, spec.pooling)?;
    let manifest = &encoded.manifest;
    let mut queries = encoded.queries(spec.layer, spec.pooling)?;
    let mut documents = encoded.corpus(spec.layer, spec.pooling)?;
    if spec.normalize {
        normalize_rows(&mut queries);
        normalize_rows(&mut documents);
    }
    observer.phase("retrieval", 1);
    let hits = search(
        &queries,
        &documents,
        &manifest.doc_ids,
        spec.top_k,
        BlockSizes::default(),
    )?;
    let run = hits_to_run(&manifest.query_ids, &manifest.doc_ids, &hits);
    let run_path = out.join(RUN_FILE);
    let tag = format!("repro-L{}-{}", spec.layer, spec.pooling);
    trec::write_run(&run_path, &run, &tag)?;
    let qrels = read_split_qrels(&spec.dataset_dir, &spec.split)?;
    let evaluation = evaluate(&qrels, &run, &measures, false)?;
    observer.advance(1);
    let bytes = std::fs::metadata(&run_path).map(|m| m.len()).unwrap_or(0);
    Ok(TaskOutcome {
        seconds: 0.0,
        metrics: evaluation.aggregate,
        per_query: evaluation.per_query,
        artifacts: vec![Artifact {
            name: "run".to_string(),
            path: RUN_FILE.to_string(),
            bytes,
        }],
        steps: Vec::new(),
    })
}

/// The manifest of the encode task (or shard) whose output is `encoded`.
fn read_manifest(encoded: &Path) -> Result<EmbeddingsManifest, StageError> {
    let path = encoded.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    serde_json::from_slice(&bytes)
        .map_err(|err| StageError::Setting(format!("{}: {err}", path.display())))
}

/// The judgments of `split` in a BEIR directory.
pub(super) fn read_split_qrels(
    dataset_dir: &Path,
    split: &str,
) -> Result<crate::data::Qrels, StageError> {
    let path = dataset_dir.join("qrels").join(format!("{split}.tsv"));
    Ok(trec::read_qrels(&path)?)
}

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

fn write_matrix(path: &Path, embeddings: &Embeddings) -> Result<(), StageError> {
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

    /// Encodes the smoke dataset with a tiny random BERT, whole or in `shards`; returns the
    /// output directories.
    fn encode_smoke(root: &Path, shards: usize) -> Vec<PathBuf> {
        use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
        use crate::model::{InputFormat, Shard};
        use crate::plan::ModelLocation;
        let model = root.join("model");
        if !model.exists() {
            write_random_bert(
                &model,
                &tiny_config(2, TINY_VOCAB.len()),
                TINY_VOCAB,
                3,
                false,
            )
            .unwrap();
        }
        let dataset = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smoke/beir");
        (0..shards)
            .map(|index| {
                let out = root.join(format!("encode-{shards}-{index}"));
                std::fs::create_dir_all(&out).unwrap();
                let spec = TaskSpec::Encode(EncodeSpec {
                    model: ModelLocation::Dir {
                        path: model.clone(),
                    },
                    dataset_dir: dataset.clone(),
                    split: "test".into(),
                    input: InputFormat::Single,
                    max_len: 32,
                    // 8 documents in 4 batches: 3 shards get 2, 1 and 1 of them.
                    batch: 2,
                    depth: 2,
                    shard: (shards > 1).then_some(Shard {
                        index,
                        count: shards,
                    }),
                });
                run_task(&spec, &UpstreamDirs::default(), &out, &super::super::Silent).unwrap();
                out
            })
            .collect()
    }

    #[test]
    fn a_sharded_encode_merges_to_the_unsharded_embeddings_bit_for_bit() {
        let root = tempfile::tempdir().unwrap();
        let whole = Encoded::open(&encode_smoke(root.path(), 1)).unwrap();
        let shard_dirs = encode_smoke(root.path(), 3);
        let sharded = Encoded::open(&shard_dirs).unwrap();
        assert_eq!(sharded.manifest.doc_ids, whole.manifest.doc_ids);
        assert_eq!(sharded.manifest.query_ids, whole.manifest.query_ids);
        let part_rows: Vec<usize> = shard_dirs
            .iter()
            .map(|dir| read_manifest(dir).unwrap().doc_ids.len())
            .collect();
        assert_eq!(part_rows, vec![4, 2, 2]);
        for layer in 0..=2 {
            for pooling in Pooling::ALL {
                let bits = |e: Embeddings| e.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(sharded.corpus(layer, pooling).unwrap()),
                    bits(whole.corpus(layer, pooling).unwrap()),
                    "layer {layer} {pooling}"
                );
                assert_eq!(
                    bits(sharded.queries(layer, pooling).unwrap()),
                    bits(whole.queries(layer, pooling).unwrap())
                );
            }
        }
        // Shards out of order, or missing, are refused rather than merged wrongly.
        let swapped = [
            shard_dirs[1].clone(),
            shard_dirs[0].clone(),
            shard_dirs[2].clone(),
        ];
        assert!(Encoded::open(&swapped).is_err());
        assert!(Encoded::open(&shard_dirs[..2]).is_err());
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
