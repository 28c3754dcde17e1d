//! Encoder throughput: documents and tokens per second for a model truncated to each depth.
//!
//! Every measurement encodes the same texts (the first `documents` of a corpus, `title +
//! " " + text`) from tokenization to pooled, normalised embeddings, as a probe does.
//! Warm-up runs come first; then `runs` timed rounds (one run of every depth each),
//! summarised per depth by median, minimum, maximum.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use super::{Observer, StageError};
use crate::data::beir;
use crate::model::{
    encode_texts, load_model, BertConfig, EncodeOptions, InputFormat, Pooling, Precision,
};
use crate::task::{Artifact, BenchSpec, TaskOutcome, UpstreamDirs};

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSettings {
    pub documents: usize,
    pub max_len: usize,
    pub batch: usize,
    pub input: InputFormat,
    /// Depths to measure (0 = embeddings only: tokenization and the fixed cost).
    pub depths: Vec<usize>,
    pub runs: usize,
    pub warmup: usize,
    /// Precisions to measure, side by side (one model each).
    pub precisions: Vec<Precision>,
}

/// The timings of one depth at one precision.
#[derive(Debug, Clone, Serialize)]
pub struct DepthTiming {
    pub depth: usize,
    pub precision: Precision,
    /// Seconds of every timed run, in order.
    pub seconds: Vec<f64>,
    pub documents_per_second: Summary,
    pub tokens_per_second: Summary,
    /// Real tokens per run (padding excluded).
    pub tokens: usize,
}

/// Median and spread of a rate over the timed runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.is_empty() {
            0.0
        } else if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        };
        Summary {
            median,
            min: values.first().copied().unwrap_or(0.0),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

/// Measures `texts` through the model in `model_dir` truncated to each depth, at each
/// precision.
///
/// The (precision, depth) pairs take turns: every warm-up run of each first, then timed
/// round after timed round, each round one run of every pair. On a machine whose speed
/// drifts over minutes (shared cloud cores) that compares them side by side, where measuring
/// one after the other would fold the drift into the speedups. The model is loaded once per
/// precision with its deepest requested layer; a pass to depth `k` runs exactly the first
/// `k` layers, which is all a model truncated to `k` layers computes.
pub fn run_bench(
    model_dir: &std::path::Path,
    texts: &[String],
    settings: &BenchSettings,
    observer: &dyn Observer,
) -> Result<Vec<DepthTiming>, StageError> {
    if settings.runs == 0 {
        return Err(StageError::Setting("runs must be at least 1".to_string()));
    }
    let deepest = settings.depths.iter().copied().max().unwrap_or(0);
    let mut models = Vec::with_capacity(settings.precisions.len());
    for &precision in &settings.precisions {
        let mut loaded = load_model(model_dir, settings.max_len, Some(deepest), &Device::Cpu)?;
        loaded.model.set_precision(precision)?;
        models.push(loaded);
    }
    let variants: Vec<(usize, usize)> = (0..models.len())
        .flat_map(|model| settings.depths.iter().map(move |&depth| (model, depth)))
        .collect();
    let encode = |(model, depth): (usize, usize)| -> Result<(f64, usize), StageError> {
        let options = EncodeOptions {
            layers: vec![depth],
            poolings: vec![Pooling::Mean],
            input: settings.input,
            batch_size: settings.batch,
            normalize: true,
        };
        let loaded = &models[model];
        let started = Instant::now();
        let encoded = encode_texts(
            &loaded.model,
            &loaded.tokenizer,
            texts,
            &options,
            &mut |_| {},
        )?;
        Ok((started.elapsed().as_secs_f64(), encoded.tokens))
    };
    observer.phase("warm-up", settings.warmup * variants.len());
    for _ in 0..settings.warmup {
        for &variant in &variants {
            encode(variant)?;
            observer.advance(1);
        }
    }
    observer.phase("timed rounds", settings.runs * variants.len());
    let mut seconds = vec![Vec::with_capacity(settings.runs); variants.len()];
    let mut tokens = vec![0; variants.len()];
    for _ in 0..settings.runs {
        for (index, &variant) in variants.iter().enumerate() {
            let (elapsed, encoded_tokens) = encode(variant)?;
            seconds[index].push(elapsed);
            tokens[index] = encoded_tokens;
            observer.advance(1);
        }
    }
    Ok(variants
        .iter()
        .zip(seconds)
        .zip(tokens)
        .map(|((&(model, depth), seconds), tokens)| {
            let rate = |count: usize| seconds.iter().map(|s| count as f64 / s).collect::<Vec<_>>();
            DepthTiming {
                depth,
                precision: settings.precisions[model],
                documents_per_second: Summary::of(rate(texts.len())),
                tokens_per_second: Summary::of(rate(tokens)),
                seconds,
                tokens,
            }
        })
        .collect())
}

/// The median over the timed rounds of `baseline`'s seconds over `other`'s in the same round:
/// how many times faster `other` ran, paired round by round.
pub fn paired_speedup(baseline: &DepthTiming, other: &DepthTiming) -> f64 {
    let ratios: Vec<f64> = baseline
        .seconds
        .iter()
        .zip(&other.seconds)
        .map(|(base, other)| base / other)
        .collect();
    Summary::of(ratios).median
}

/// The file of a bench task's output holding every run's timings (JSON).
pub const BENCH_FILE: &str = "bench.json";

/// The metric names of one depth's measurement in a bench task's outcome
/// (`docs_per_second@3`, …): the report reads them back by these names.
pub fn depth_metric(name: &str, depth: usize) -> String {
    format!("{name}@{depth}")
}

/// The speedup depth `depth` would have over `layers` layers if the fixed cost (tokenization
/// and embeddings, measured as depth 0: `fixed_seconds` per document) were the same at every
/// depth and each layer cost the same: `t(L) / (t(0) + k · (t(L) − t(0)) / L)`.
pub fn ideal_speedup(full_seconds: f64, fixed_seconds: f64, layers: usize, depth: usize) -> f64 {
    let per_layer = (full_seconds - fixed_seconds) / layers as f64;
    full_seconds / (fixed_seconds + per_layer * depth as f64)
}

/// The texts a benchmark encodes: the first `count` documents of a BEIR dataset's corpus, as
/// `title + " " + text`.
pub fn first_documents(dataset_dir: &Path, count: usize) -> Result<Vec<String>, StageError> {
    let corpus = beir::read_corpus(&dataset_dir.join(beir::CORPUS_FILE))?;
    Ok(corpus
        .iter()
        .take(count)
        .map(|document| document.full_text())
        .collect())
}

/// A bench task of the DAG: [`run_bench`] on the first documents of the dataset's corpus,
/// the timings written to [`BENCH_FILE`] and summarised as metrics per depth.
pub(super) fn run_bench_task(
    spec: &BenchSpec,
    upstream: &UpstreamDirs,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let model_dir = spec.model.resolve(upstream).map_err(StageError::Setting)?;
    let config = BertConfig::from_file(&model_dir.join(crate::model::layout::CONFIG_FILE))?;
    let depths = spec
        .settings
        .depths_for(config.num_hidden_layers)
        .map_err(StageError::Setting)?;
    let texts = first_documents(&spec.dataset_dir, spec.settings.documents)?;
    let settings = BenchSettings {
        documents: texts.len(),
        max_len: spec.max_len,
        batch: spec.batch,
        input: spec.input,
        depths,
        runs: spec.settings.runs,
        warmup: spec.settings.warmup,
        precisions: vec![spec.precision],
    };
    let timings = run_bench(&model_dir, &texts, &settings, observer)?;
    let mut outcome = TaskOutcome::default();
    for timing in &timings {
        let depth = timing.depth;
        let rates = [
            ("docs_per_second", timing.documents_per_second.median),
            ("docs_per_second_min", timing.documents_per_second.min),
            ("docs_per_second_max", timing.documents_per_second.max),
            ("tokens_per_second", timing.tokens_per_second.median),
        ];
        for (name, value) in rates {
            outcome.metrics.insert(depth_metric(name, depth), value);
        }
    }
    outcome
        .metrics
        .insert("bench_documents".to_string(), texts.len() as f64);
    outcome.metrics.insert(
        "bench_threads".to_string(),
        candle_core::utils::get_num_threads() as f64,
    );
    let path = out.join(BENCH_FILE);
    let report = serde_json::json!({"settings": settings, "timings": timings});
    let bytes = serde_json::to_vec_pretty(&report)
        .map_err(|error| StageError::Setting(format!("serialising timings: {error}")))?;
    crate::util::write_atomic(&path, &bytes).map_err(|source| StageError::Io {
        path: path.clone(),
        source,
    })?;
    outcome.artifacts.push(Artifact {
        name: "timings".to_string(),
        path: BENCH_FILE.to_string(),
        bytes: bytes.len() as u64,
    });
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideal_speedup_spreads_the_variable_cost_evenly_over_the_layers() {
        // 1 s fixed + 6 × 1 s layers: depth 2 costs 3 s, 7/3 of the full depth's speed.
        assert!((ideal_speedup(7.0, 1.0, 6, 2) - 7.0 / 3.0).abs() < 1e-12);
        assert!((ideal_speedup(7.0, 1.0, 6, 6) - 1.0).abs() < 1e-12);
        assert!((ideal_speedup(7.0, 0.0, 6, 3) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn paired_speedup_is_the_median_ratio_of_each_round() {
        let timing = |seconds: Vec<f64>| DepthTiming {
            depth: 6,
            precision: Precision::F32,
            seconds,
            documents_per_second: Summary::of(vec![]),
            tokens_per_second: Summary::of(vec![]),
            tokens: 0,
        };
        let baseline = timing(vec![2.0, 4.0, 3.0]);
        let faster = timing(vec![1.0, 1.0, 3.0]);
        assert_eq!(paired_speedup(&baseline, &faster), 2.0);
    }

    #[test]
    fn summary_takes_the_median() {
        let summary = Summary::of(vec![3.0, 1.0, 2.0, 10.0, 4.0]);
        assert_eq!((summary.median, summary.min, summary.max), (3.0, 1.0, 10.0));
        assert_eq!(Summary::of(vec![1.0, 2.0]).median, 1.5);
    }
}
