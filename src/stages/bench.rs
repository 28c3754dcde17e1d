//! Encoder throughput: documents and tokens per second for a model truncated to each depth.
//!
//! Every measurement encodes the same texts (the first `documents` of a corpus, `title +
//! " " + text`) from tokenization to pooled, normalised embeddings, as a probe does. A
//! warm-up run comes first; then `runs` timed runs, summarised by median, minimum, maximum.

use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use super::{Observer, StageError};
use crate::model::{encode_texts, load_model, EncodeOptions, InputFormat, Pooling};

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
}

/// The timings of one depth.
#[derive(Debug, Clone, Serialize)]
pub struct DepthTiming {
    pub depth: usize,
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

/// Measures `texts` through the model in `model_dir` truncated to each depth.
pub fn run_bench(
    model_dir: &std::path::Path,
    texts: &[String],
    settings: &BenchSettings,
    observer: &dyn Observer,
) -> Result<Vec<DepthTiming>, StageError> {
    if settings.runs == 0 {
        return Err(StageError::Setting("runs must be at least 1".to_string()));
    }
    let mut timings = Vec::with_capacity(settings.depths.len());
    for &depth in &settings.depths {
        let loaded = load_model(model_dir, settings.max_len, Some(depth), &Device::Cpu)?;
        let options = EncodeOptions {
            layers: vec![depth],
            poolings: vec![Pooling::Mean],
            input: settings.input,
            batch_size: settings.batch,
            normalize: true,
        };
        observer.phase(&format!("depth {depth}"), settings.warmup + settings.runs);
        let mut seconds = Vec::with_capacity(settings.runs);
        let mut tokens = 0;
        for run in 0..settings.warmup + settings.runs {
            let started = Instant::now();
            let encoded = encode_texts(
                &loaded.model,
                &loaded.tokenizer,
                texts,
                &options,
                &mut |_| {},
            )?;
            let elapsed = started.elapsed().as_secs_f64();
            if run >= settings.warmup {
                seconds.push(elapsed);
                tokens = encoded.tokens;
            }
            observer.advance(1);
        }
        let rate = |count: usize| seconds.iter().map(|s| count as f64 / s).collect::<Vec<_>>();
        timings.push(DepthTiming {
            depth,
            documents_per_second: Summary::of(rate(texts.len())),
            tokens_per_second: Summary::of(rate(tokens)),
            seconds,
            tokens,
        });
    }
    Ok(timings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_median() {
        let summary = Summary::of(vec![3.0, 1.0, 2.0, 10.0, 4.0]);
        assert_eq!((summary.median, summary.min, summary.max), (3.0, 1.0, 10.0));
        assert_eq!(Summary::of(vec![1.0, 2.0]).median, 1.5);
    }
}
