//! `repro probe`: per-layer, per-pooling retrieval quality of one model on one dataset.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;

use super::{GlobalArgs, Progress};
use crate::config::{LayerSelection, ProbeFile, ProbeSettings};
use crate::model::hub::{resolve_model, HubSettings};
use crate::model::{load_model, InputFormat, Pooling};
use crate::stages::{run_probe, Observer, ProbeOutcome};

/// Arguments of `repro probe`. Flags override the settings file given with `--config`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// A TOML file with a `[probe]` table holding any of the settings below.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model directory or Hugging Face id (`org/name[@revision]`).
    #[arg(long)]
    pub model: Option<String>,
    /// Dataset name (looked up in the data directory and mirror) or a BEIR-layout directory.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Which qrels split to evaluate [default: test].
    #[arg(long)]
    pub split: Option<String>,
    /// Hidden states to probe: `all`, `0-6`, `1,3,5` (0 is the embedding output) [default: all].
    #[arg(long)]
    pub layers: Option<LayerSelection>,
    /// Pooling strategies, comma separated: mean, mean_nospecial, cls, max [default: mean].
    #[arg(long, value_delimiter = ',')]
    pub pooling: Option<Vec<Pooling>>,
    /// Input format: `single` ([CLS] s [SEP]) or `self_pair` ([CLS] s [SEP] s [SEP]) [default: single].
    #[arg(long)]
    pub input: Option<InputFormat>,
    /// Truncate inputs to this many tokens [default: 256].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Texts per forward pass [default: 32].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Documents retrieved per query [default: 100].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Measures in trec_eval syntax, repeatable [default: ndcg_cut.10 recall.100 mrr_cut.10 success.10].
    #[arg(short = 'm', long = "measure")]
    pub measures: Vec<String>,
    /// Do not L2-normalise embeddings (score by raw dot product).
    #[arg(long)]
    pub no_normalize: bool,
    /// Write each cell's run as a TREC file into this directory.
    #[arg(long)]
    pub save_runs: Option<PathBuf>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, args: &ProbeArgs) -> anyhow::Result<()> {
    let file = args.config.as_deref().map(ProbeFile::read).transpose()?;
    let settings = resolve_settings(args, file.as_ref())?;

    let model_dir = resolve_model(&settings.model, &HubSettings::from_env())?;
    let loaded = load_model(&model_dir, settings.max_len, None, &Device::Cpu)
        .with_context(|| format!("loading model {}", model_dir.display()))?;
    let layers = match settings.layers.resolve(loaded.model.depth()) {
        Ok(layers) => layers,
        Err(message) => match file.as_ref().and_then(|file| file.layers_error(&message)) {
            Some(located) if args.layers.is_none() => return Err(located.into()),
            _ => anyhow::bail!("--layers: {message}"),
        },
    };
    let dataset_dir = crate::data::fetch::resolve(
        &settings.dataset,
        &global.data_dir,
        global.mirror.as_deref(),
    )?;
    let dataset = crate::data::beir::load(&dataset_dir, &settings.split)?;

    let progress = ProgressObserver(Progress::new(global.quiet, 0, "probe"));
    let outcome = run_probe(
        &settings,
        &layers,
        &loaded,
        &dataset,
        args.save_runs.as_deref(),
        &progress,
    )?;
    progress.0.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print_table(&outcome, &dataset.name);
    }
    Ok(())
}

/// Defaults ← settings file ← flags.
fn resolve_settings(args: &ProbeArgs, file: Option<&ProbeFile>) -> anyhow::Result<ProbeSettings> {
    let section = file.map(|file| &file.probe);
    let model = args
        .model
        .clone()
        .or_else(|| section.and_then(|s| s.model.clone()))
        .context("no model given: pass --model DIR_OR_HF_ID (or `model` in the --config file)")?;
    let dataset = args
        .dataset
        .clone()
        .or_else(|| section.and_then(|s| s.dataset.clone()))
        .context(
            "no dataset given: pass --dataset NAME_OR_DIR (or `dataset` in the --config file)",
        )?;
    let measures = if !args.measures.is_empty() {
        args.measures.clone()
    } else {
        section
            .and_then(|s| s.measures.clone())
            .unwrap_or_else(ProbeSettings::default_measures)
    };
    Ok(ProbeSettings {
        model,
        dataset,
        split: args
            .split
            .clone()
            .or_else(|| section.and_then(|s| s.split.clone()))
            .unwrap_or_else(|| "test".to_string()),
        layers: args
            .layers
            .clone()
            .or_else(|| section.and_then(|s| s.layers.as_ref().map(|l| l.get_ref().clone())))
            .unwrap_or(LayerSelection::All),
        pooling: args
            .pooling
            .clone()
            .or_else(|| section.and_then(|s| s.pooling.clone()))
            .unwrap_or_else(|| vec![Pooling::Mean]),
        input: args
            .input
            .or_else(|| section.and_then(|s| s.input))
            .unwrap_or(InputFormat::Single),
        max_len: args
            .max_len
            .or_else(|| section.and_then(|s| s.max_len))
            .unwrap_or(256),
        batch: args
            .batch
            .or_else(|| section.and_then(|s| s.batch))
            .unwrap_or(32),
        top_k: args
            .top_k
            .or_else(|| section.and_then(|s| s.top_k))
            .unwrap_or(100),
        measures,
        normalize: !args.no_normalize && section.and_then(|s| s.normalize).unwrap_or(true),
    })
}

struct ProgressObserver(Progress);

impl Observer for ProgressObserver {
    fn phase(&self, name: &str, total: usize) {
        self.0.reset(total as u64, name.to_string());
    }

    fn advance(&self, done: usize) {
        self.0.advance(done as u64);
    }
}

/// `ndcg_cut_10` → `nDCG@10` and friends; other names are shown as trec_eval writes them.
fn display_name(measure: &str) -> String {
    let labels = [
        ("ndcg_cut_", "nDCG@"),
        ("recall_", "Recall@"),
        ("mrr_cut_", "MRR@"),
        ("success_", "Hits@"),
        ("P_", "P@"),
        ("map_cut_", "MAP@"),
    ];
    labels
        .iter()
        .find_map(|(prefix, label)| measure.strip_prefix(prefix).map(|k| format!("{label}{k}")))
        .unwrap_or_else(|| measure.to_string())
}

fn print_table(outcome: &ProbeOutcome, dataset_name: &str) {
    let settings = &outcome.settings;
    println!(
        "# model {} · dataset {} ({}): {} queries, {} documents · input {} · max_len {}",
        outcome.model_dir,
        dataset_name,
        settings.split,
        outcome.queries,
        outcome.documents,
        settings.input,
        settings.max_len
    );
    let headers: Vec<String> = outcome.measures.iter().map(|m| display_name(m)).collect();
    let mut line = format!("{:<6} {:<15}", "layer", "pooling");
    for header in &headers {
        line.push_str(&format!(" {header:>10}"));
    }
    println!("{line}");
    for cell in &outcome.cells {
        let mut line = format!("{:<6} {:<15}", cell.layer, cell.pooling.name());
        for measure in &outcome.measures {
            line.push_str(&format!(
                " {:>10.4}",
                cell.metrics.get(measure).copied().unwrap_or(f64::NAN)
            ));
        }
        println!("{line}");
    }
    let corpus = &outcome.corpus_encode;
    let padding = if corpus.padded_tokens > 0 {
        100.0 * (corpus.padded_tokens - corpus.tokens) as f64 / corpus.padded_tokens as f64
    } else {
        0.0
    };
    println!(
        "# corpus encode: {} documents in {:.1} s = {:.1} documents/s, {:.0} tokens/s ({:.1}% padding); queries: {:.1} s; retrieval + evaluation: {:.1} s",
        corpus.texts,
        corpus.seconds,
        corpus.texts_per_second,
        corpus.tokens_per_second,
        padding,
        outcome.query_encode.seconds,
        outcome.retrieval_seconds
    );
}
