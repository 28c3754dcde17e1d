//! Encoder throughput under criterion: documents/s and tokens/s of a model truncated to each
//! depth, from tokenization to pooled, normalised embeddings (what `repro bench` times).
//!
//! Settings come from the environment so the same bench serves any model and corpus:
//!
//! * `REPRO_BENCH_MODEL`: model directory (default `models/all-MiniLM-L6-v2`);
//! * `REPRO_BENCH_CORPUS`: a BEIR `corpus.jsonl` (default `$REPRO_MIRROR/scifact/corpus.jsonl`,
//!   then `data/scifact/corpus.jsonl`);
//! * `REPRO_BENCH_DOCUMENTS` (32), `REPRO_BENCH_MAX_LEN` (256), `REPRO_BENCH_BATCH` (32),
//!   `REPRO_BENCH_DEPTHS` (`1,2,6`: comma-separated).
//!
//! Without the model or the corpus it measures a tiny random BERT on generated sentences, so
//! `cargo bench` always runs; the numbers that matter come from the real model.

use std::path::{Path, PathBuf};

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use repro::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
use repro::model::{encode_texts, load_model, EncodeOptions, InputFormat, Pooling};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn corpus_path() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("REPRO_BENCH_CORPUS").map(PathBuf::from),
        std::env::var_os("REPRO_MIRROR")
            .map(|mirror| PathBuf::from(mirror).join("scifact/corpus.jsonl")),
        Some(PathBuf::from("data/scifact/corpus.jsonl")),
    ];
    candidates.into_iter().flatten().find(|path| path.is_file())
}

/// The model directory and texts to measure, and a temporary directory to keep alive when
/// the tiny fallback model lives in it.
fn workload(documents: usize) -> (PathBuf, Vec<String>, Option<tempfile::TempDir>) {
    let model = std::env::var_os("REPRO_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/all-MiniLM-L6-v2"));
    if let (true, Some(corpus)) = (model.join("config.json").is_file(), corpus_path()) {
        let corpus = repro::data::beir::read_corpus(&corpus).expect("corpus.jsonl is readable");
        let texts = corpus
            .iter()
            .take(documents)
            .map(|document| document.full_text())
            .collect();
        return (model, texts, None);
    }
    eprintln!(
        "encoder bench: {} or the SciFact corpus is missing; measuring a tiny random BERT",
        model.display()
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_random_bert(
        dir.path(),
        &tiny_config(6, TINY_VOCAB.len()),
        TINY_VOCAB,
        7,
        false,
    )
    .expect("the tiny model is written");
    let words = &TINY_VOCAB[5..];
    let texts = (0..documents)
        .map(|i| {
            (0..40 + i % 200)
                .map(|j| words[(i * 7 + j * 13) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    (dir.path().to_path_buf(), texts, Some(dir))
}

fn encoder(criterion: &mut Criterion) {
    let documents = setting("REPRO_BENCH_DOCUMENTS", 32);
    let max_len = setting("REPRO_BENCH_MAX_LEN", 256);
    let batch_size = setting("REPRO_BENCH_BATCH", 32);
    let depths: Vec<usize> = std::env::var("REPRO_BENCH_DEPTHS")
        .unwrap_or_else(|_| "1,2,6".to_string())
        .split(',')
        .filter_map(|depth| depth.trim().parse().ok())
        .collect();
    let (model_dir, texts, _keep) = workload(documents);
    for depth in depths {
        let loaded = load_model(Path::new(&model_dir), max_len, Some(depth), &Device::Cpu)
            .expect("the model loads");
        let options = EncodeOptions {
            layers: vec![depth],
            poolings: vec![Pooling::Mean],
            input: InputFormat::Single,
            batch_size,
            normalize: true,
        };
        let encode = || {
            encode_texts(
                &loaded.model,
                &loaded.tokenizer,
                &texts,
                &options,
                &mut |_| {},
            )
            .expect("encoding succeeds")
        };
        let tokens = encode().tokens as u64;
        // Criterion reports one throughput unit per group: the same work, counted twice.
        for (unit, count) in [("documents", texts.len() as u64), ("tokens", tokens)] {
            let mut group = criterion.benchmark_group(format!("encode_{unit}"));
            group
                .sample_size(10)
                .throughput(Throughput::Elements(count));
            group.bench_function(BenchmarkId::new("depth", depth), |bencher| {
                bencher.iter(encode)
            });
            group.finish();
        }
    }
}

criterion_group!(benches, encoder);
criterion_main!(benches);
