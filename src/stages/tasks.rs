//! The DAG's stage tasks: each reads its spec and its upstream tasks' directories, writes its
//! artifacts into an output directory and returns its [`TaskOutcome`]. Encode and eval live
//! here; [`run_task`] dispatches training and re-ranking to their own files.
//!
//! Pooled embeddings are stored per (layer, pooling) as raw little-endian `f32` rows
//! (`corpus.L3.mean.f32`, `queries.L3.mean.f32`) beside `embeddings.json`, which records the
//! row ids, the dimension and what was pooled, so that an eval task reads only the two
//! matrices it needs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::{EncodeStats, Observer, StageError};
use crate::data::{beir, trec};
use crate::eval::measures::{evaluate, parse_measures};
use crate::eval::retrieval::{hits_to_run, search, BlockSizes};
use crate::model::{encode_texts, load_model, Embeddings, EncodeOptions, Pooling};
use crate::plan::{Artifact, EncodeSpec, EvalSpec, Stage, TaskOutcome, TaskSpec};

use super::{rerank, training};

/// The manifest of an encode task's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingsManifest {
    pub dim: usize,
    pub layers: Vec<usize>,
    pub poolings: Vec<Pooling>,
    pub query_ids: Vec<String>,
    pub doc_ids: Vec<String>,
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
    upstream: &BTreeMap<Stage, PathBuf>,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let started = Instant::now();
    let mut outcome = match spec {
        TaskSpec::Encode(spec) => run_encode(spec, upstream, out, observer)?,
        TaskSpec::Eval(spec) => {
            let encoded = upstream_dir(upstream, Stage::Eval, Stage::Encode)?;
            run_eval(spec, encoded, out, observer)?
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
    upstream: &BTreeMap<Stage, PathBuf>,
    stage: Stage,
    needed: Stage,
) -> Result<&Path, StageError> {
    upstream.get(&needed).map(PathBuf::as_path).ok_or_else(|| {
        StageError::Setting(format!(
            "a {stage} task needs its upstream {needed} task's output, and has none"
        ))
    })
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
    upstream: &BTreeMap<Stage, PathBuf>,
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
    let sides: [(&str, Vec<String>); 2] = [
        (
            "queries",
            dataset.queries.iter().map(|q| q.text.clone()).collect(),
        ),
        (
            "corpus",
            dataset.corpus.iter().map(|d| d.full_text()).collect(),
        ),
    ];
    for (side, texts) in &sides {
        observer.phase(side, texts.len());
        let started = Instant::now();
        let pooled = encode_texts(
            &loaded.model,
            &loaded.tokenizer,
            texts,
            &options,
            &mut |done| observer.advance(done),
        )?;
        let stats = EncodeStats::new(texts.len(), &pooled, started.elapsed().as_secs_f64());
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
        query_ids: dataset.queries.iter().map(|q| q.id.clone()).collect(),
        doc_ids: dataset.corpus.iter().map(|d| d.id.clone()).collect(),
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

fn run_eval(
    spec: &EvalSpec,
    encoded: &Path,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let measures = parse_measures(&spec.measures)?;
    let manifest = read_manifest(encoded)?;
    if !manifest.layers.contains(&spec.layer) || !manifest.poolings.contains(&spec.pooling) {
        return Err(StageError::Setting(format!(
            "{} holds layers {:?} and poolings {:?}, not layer {} with {}",
            encoded.display(),
            manifest.layers,
            manifest.poolings,
            spec.layer,
            spec.pooling
        )));
    }
    let read = |side: &str, rows: usize| {
        read_matrix(
            &encoded.join(matrix_name(side, spec.layer, spec.pooling)),
            rows,
            manifest.dim,
        )
    };
    let mut queries = read("queries", manifest.query_ids.len())?;
    let mut documents = read("corpus", manifest.doc_ids.len())?;
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

/// The manifest of the encode task whose output is `encoded`.
pub(super) fn read_manifest(encoded: &Path) -> Result<EmbeddingsManifest, StageError> {
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

pub(super) fn read_matrix(path: &Path, rows: usize, dim: usize) -> Result<Embeddings, StageError> {
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
