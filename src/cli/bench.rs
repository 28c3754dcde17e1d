//! `repro bench`: encoder throughput per depth, printed and recorded in the store.

use std::path::Path;

use super::run::ResultsArgs;
use super::{GlobalArgs, Progress};
use crate::exec::{capture_environment, ResultsDir};
use crate::model::hub::{resolve_model, HubSettings};
use crate::model::{BertConfig, Bf16Kernel, InputFormat, Precision};
use crate::session::hash_model_dir;
use crate::stages::{
    ideal_speedup, paired_speedup, run_bench, BenchSettings, DepthTiming, Observer,
};
use crate::store::{BenchmarkRecord, Store};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Model directory or Hugging Face id.
    #[arg(long)]
    pub model: String,
    /// Dataset whose corpus is encoded (name or path).
    #[arg(long, default_value = "scifact")]
    pub dataset: String,
    /// Encode the first N documents of the corpus.
    #[arg(long, default_value_t = 256)]
    pub documents: usize,
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "single")]
    pub input: InputArg,
    /// Depths to measure: `all` (0..=L), `6`, `1-6`, `0,3,6`.
    #[arg(long, default_value = "all")]
    pub depth: crate::config::LayerSelection,
    /// Timed runs per depth (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Precisions of the dense products, measured side by side: `f32`, `bf16`, `f32,bf16`.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    pub precision: Vec<Precision>,
    #[command(flatten)]
    pub results: ResultsArgs,
    /// Do not record the measurement in the store.
    #[arg(long)]
    pub no_record: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum InputArg {
    Single,
    SelfPair,
}

struct BarObserver(Progress);

impl Observer for BarObserver {
    fn phase(&self, name: &str, total: usize) {
        self.0.reset(total as u64, name.to_string());
    }

    fn advance(&self, done: usize) {
        self.0.advance(done as u64);
    }
}

/// The human-readable table: each depth's rate, its speedup over the full model, the ideal
/// speedup with a fixed cost and the naive one (L/k).
fn print_table(
    header: &str,
    timings: &[DepthTiming],
    layers: usize,
    ideal: &dyn Fn(usize) -> Option<f64>,
) {
    let full = timings.iter().find(|t| t.depth == layers);
    println!("{header}");
    println!(
        "{:>5}  {:>12}  {:>17}  {:>10}  {:>8}  {:>8}  {:>8}",
        "depth", "docs/s", "(min–max)", "tokens/s", "speedup", "ideal", "L/k"
    );
    for timing in timings {
        let speedup =
            full.map(|f| timing.documents_per_second.median / f.documents_per_second.median);
        let show = |value: Option<f64>| {
            value
                .map(|v| format!("{v:.2}×"))
                .unwrap_or_else(|| "-".into())
        };
        let naive = (timing.depth > 0).then(|| layers as f64 / timing.depth as f64);
        println!(
            "{:>5}  {:>12.2}  {:>17}  {:>10.0}  {:>8}  {:>8}  {:>8}",
            timing.depth,
            timing.documents_per_second.median,
            format!(
                "({:.2}–{:.2})",
                timing.documents_per_second.min, timing.documents_per_second.max
            ),
            timing.tokens_per_second.median,
            show(speedup),
            show(ideal(timing.depth)),
            show(naive)
        );
    }
}

/// Records every depth's timing in the store of `--results`.
fn record(
    args: &BenchArgs,
    model_dir: &Path,
    texts: &str,
    settings: &BenchSettings,
    timings: &[DepthTiming],
    threads: usize,
) -> anyhow::Result<()> {
    let results = ResultsDir::new(&args.results.results);
    let mut store = Store::open(&results.store_path())?;
    let environment = capture_environment(Path::new("."), threads);
    let model_sha256 = hash_model_dir(model_dir, Some(&mut store)).map_err(anyhow::Error::msg)?;
    for timing in timings {
        store.record_benchmark(&BenchmarkRecord {
            model: model_dir.display().to_string(),
            model_sha256: model_sha256.clone(),
            texts: texts.to_string(),
            documents: settings.documents,
            tokens: timing.tokens,
            max_len: settings.max_len,
            batch: settings.batch,
            input: settings.input.to_string(),
            depth: timing.depth,
            runs: settings.runs,
            seconds: serde_json::to_string(&timing.seconds)?,
            docs_per_second: timing.documents_per_second.median,
            docs_per_second_min: timing.documents_per_second.min,
            docs_per_second_max: timing.documents_per_second.max,
            tokens_per_second: timing.tokens_per_second.median,
            features: features(timing.precision),
            environment: environment.clone(),
        })?;
    }
    Ok(())
}

/// The choices that change the encoder's speed: the f32 products' library (a compile-time
/// feature) and, in bf16, the kernel.
fn features(precision: Precision) -> String {
    let library = if cfg!(feature = "openblas") {
        "openblas"
    } else {
        "gemm"
    };
    match (precision, Bf16Kernel::detect()) {
        (Precision::Bf16, Ok(kernel)) => format!("{library}+bf16-{}", kernel.name()),
        _ => library.to_string(),
    }
}

pub fn run(global: &GlobalArgs, args: &BenchArgs) -> anyhow::Result<()> {
    let model_dir = resolve_model(&args.model, &HubSettings::from_env())?;
    let config = BertConfig::from_file(&model_dir.join("config.json"))?;
    let depths = args
        .depth
        .resolve(config.num_hidden_layers)
        .map_err(|message| anyhow::anyhow!("--depth: {message}"))?;
    let dataset_dir =
        crate::data::fetch::resolve(&args.dataset, &global.data_dir, global.mirror.as_deref())?;
    let texts = crate::stages::first_documents(&dataset_dir, args.documents)?;
    let settings = BenchSettings {
        documents: texts.len(),
        max_len: args.max_len,
        batch: args.batch,
        input: match args.input {
            InputArg::Single => InputFormat::Single,
            InputArg::SelfPair => InputFormat::SelfPair,
        },
        depths,
        runs: args.runs,
        warmup: args.warmup,
        precisions: args.precision.clone(),
    };
    let progress = BarObserver(Progress::new(global.quiet || args.json, 0, "bench"));
    let timings = run_bench(&model_dir, &texts, &settings, &progress)?;
    progress.0.finish();

    let threads = candle_core::utils::get_num_threads();
    if !args.no_record {
        let texts = format!(
            "{} (first {} documents)",
            dataset_dir.display(),
            texts.len()
        );
        record(args, &model_dir, &texts, &settings, &timings, threads)?;
    }
    let layers = config.num_hidden_layers;
    if args.json {
        let rows: Vec<serde_json::Value> = timings
            .iter()
            .map(|t| json_row(t, &timings, layers))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": model_dir.display().to_string(), "settings": settings,
                "features": features(Precision::F32), "threads": threads, "depths": rows,
            }))?
        );
        return Ok(());
    }
    for &precision in &args.precision {
        let header = format!(
            "# {} · {} documents of {} · max_len {} · batch {} · {} · {} runs · {} threads · {}",
            model_dir.display(),
            texts.len(),
            dataset_dir.display(),
            args.max_len,
            args.batch,
            settings.input,
            args.runs,
            threads,
            features(precision)
        );
        let of_precision: Vec<DepthTiming> = timings
            .iter()
            .filter(|t| t.precision == precision)
            .cloned()
            .collect();
        let ideal = |depth| ideal_of(&of_precision, layers, depth);
        print_table(&header, &of_precision, layers, &ideal);
    }
    print_precision_speedups(&timings, layers);
    Ok(())
}

/// The speedup `depth` would have under [`ideal_speedup`], from `timings` of one precision.
fn ideal_of(timings: &[DepthTiming], layers: usize, depth: usize) -> Option<f64> {
    let full = timings.iter().find(|t| t.depth == layers)?;
    let fixed = timings.iter().find(|t| t.depth == 0)?;
    Some(ideal_speedup(
        1.0 / full.documents_per_second.median,
        1.0 / fixed.documents_per_second.median,
        layers,
        depth,
    ))
}

/// The same depth at the first precision measured, the baseline of precision speedups.
fn baseline_of<'a>(timing: &DepthTiming, timings: &'a [DepthTiming]) -> Option<&'a DepthTiming> {
    let first = timings.first()?.precision;
    (timing.precision != first).then(|| {
        timings
            .iter()
            .find(|t| t.precision == first && t.depth == timing.depth)
    })?
}

fn json_row(timing: &DepthTiming, timings: &[DepthTiming], layers: usize) -> serde_json::Value {
    let same_precision: Vec<DepthTiming> = timings
        .iter()
        .filter(|t| t.precision == timing.precision)
        .cloned()
        .collect();
    let full = same_precision.iter().find(|t| t.depth == layers);
    let baseline = baseline_of(timing, timings);
    serde_json::json!({
        "depth": timing.depth,
        "precision": timing.precision,
        "features": features(timing.precision),
        "documents_per_second": timing.documents_per_second,
        "tokens_per_second": timing.tokens_per_second,
        "seconds": timing.seconds,
        "tokens": timing.tokens,
        "speedup": full.map(|f| timing.documents_per_second.median / f.documents_per_second.median),
        "ideal_speedup": ideal_of(&same_precision, layers, timing.depth),
        "precision_speedup": baseline.map(|b| timing.documents_per_second.median / b.documents_per_second.median),
        "precision_speedup_paired": baseline.map(|b| paired_speedup(b, timing)),
    })
}

/// Each depth's speed at every later precision over the first's: the ratio of medians and
/// the median of the rounds' ratios.
fn print_precision_speedups(timings: &[DepthTiming], layers: usize) {
    let compared: Vec<(&DepthTiming, &DepthTiming)> = timings
        .iter()
        .filter_map(|t| baseline_of(t, timings).map(|b| (b, t)))
        .collect();
    if compared.is_empty() {
        return;
    }
    println!(
        "\n{:>5}  {:>9}  {:>14}  {:>15}",
        "depth", "precision", "vs precision", "paired rounds"
    );
    for (baseline, timing) in compared {
        let marker = if timing.depth == layers {
            " (full)"
        } else {
            ""
        };
        println!(
            "{:>5}  {:>9}  {:>14}  {:>15}{marker}",
            timing.depth,
            timing.precision.name(),
            format!(
                "{:.2}× {}",
                timing.documents_per_second.median / baseline.documents_per_second.median,
                baseline.precision.name()
            ),
            format!("{:.2}×", paired_speedup(baseline, timing)),
        );
    }
}
