//! The encode stage: a dataset's queries and corpus (or one shard of it) through a model
//! once, every layer up to a depth pooled every way, written in the embeddings format.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;

use super::embeddings::{
    matrix_name, write_manifest, write_matrix, EmbeddingsManifest, ShardManifest,
};
use super::{EncodeStats, Observer, StageError};
use crate::data::beir;
use crate::model::{encode_shard, load_model, Embeddings, EncodeOptions, Pooling};
use crate::task::{Artifact, EncodeSpec, TaskOutcome, UpstreamDirs};

/// Encodes with a model given as a directory or as a training task's output: a student is
/// evaluated the same way as a checkpoint, only the model's location differs.
pub(super) fn run_encode(
    spec: &EncodeSpec,
    upstream: &UpstreamDirs,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let model_dir = spec.model.resolve(upstream).map_err(StageError::Setting)?;
    let mut loaded = load_model(&model_dir, spec.max_len, Some(spec.depth), &Device::Cpu)?;
    loaded.model.set_precision(spec.precision)?;
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
        for (name, value) in stats.named(side) {
            outcome.metrics.insert(name, value);
        }
        for (cell, embeddings) in &pooled.cells {
            dim = embeddings.dim;
            let name = matrix_name(side, cell.layer, cell.pooling);
            outcome.artifacts.push(write_cell(out, name, embeddings)?);
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
            positions: doc_positions,
        }),
    };
    outcome.artifacts.push(write_manifest(out, &manifest)?);
    Ok(outcome)
}

/// Writes one (layer, pooling) matrix into `out` as the artifact `name`.
fn write_cell(out: &Path, name: String, embeddings: &Embeddings) -> Result<Artifact, StageError> {
    write_matrix(&out.join(&name), embeddings)?;
    Ok(Artifact {
        bytes: (embeddings.data.len() * 4) as u64,
        path: name.clone(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::Precision;
    use crate::stages::embeddings::{read_manifest, Encoded};
    use crate::stages::{run_task, Silent};
    use crate::task::TaskSpec;

    /// Encodes the smoke dataset with a tiny random BERT, whole or in `shards`; returns the
    /// output directories.
    fn encode_smoke(root: &Path, shards: usize) -> Vec<PathBuf> {
        use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
        use crate::model::{InputFormat, Shard};
        use crate::task::ModelLocation;
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
                    precision: Precision::F32,
                    shard: (shards > 1).then_some(Shard {
                        index,
                        count: shards,
                    }),
                });
                run_task(&spec, &UpstreamDirs::default(), &out, &Silent).unwrap();
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
}
