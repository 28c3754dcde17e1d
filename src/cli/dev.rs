//! `repro dev`: helpers for developing and testing repro itself (tiny test models, JSON
//! outputs for the cross-checks against Python in `scripts/`, short training runs).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::Device;

use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
use crate::model::{encode_mean, load_model, Batch};
use crate::train::{
    train_cross_encoder, train_dual_encoder, CrossEncoderExample, DistillData, DistillLoss,
    StudentInit, StudentSpec, TrainingLog, TrainingSettings,
};

#[derive(Debug, clap::Subcommand)]
pub enum DevCommand {
    /// Write a tiny random BERT (hidden 32, the test vocabulary) to DIR, for the smoke
    /// experiment.
    TinyModel {
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        layers: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Print the final-layer mean-pooled (unnormalised) embeddings of texts as JSON.
    Embed {
        #[arg(long)]
        model: PathBuf,
        #[arg(long = "text", required = true)]
        texts: Vec<String>,
        #[arg(long, default_value_t = 256)]
        max_len: usize,
    },
    /// Print cross-encoder scores of (query, document) pairs as JSON; the n-th --query goes
    /// with the n-th --document.
    Score {
        #[arg(long)]
        model: PathBuf,
        #[arg(long = "query", required = true)]
        queries: Vec<String>,
        #[arg(long = "document", required = true)]
        documents: Vec<String>,
        #[arg(long, default_value_t = 256)]
        max_len: usize,
    },
    /// Fine-tune a cross encoder on a TSV of `query<TAB>document<TAB>label` lines; prints
    /// the training summary as JSON.
    TrainCe {
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Distil a dual-encoder student on a TSV of texts (mse), `query<TAB>positive` (mnrl) or
    /// `query<TAB>positive<TAB>negative` (margin_mse, mnrl); prints the summary as JSON.
    TrainDe {
        #[arg(long)]
        teacher_de: PathBuf,
        #[arg(long)]
        teacher_ce: Option<PathBuf>,
        #[arg(long, default_value_t = 2)]
        layers: usize,
        /// random, ce:K or de:K.
        #[arg(long, default_value = "de:2")]
        init: StudentInit,
        /// mse, mnrl or margin_mse.
        #[arg(long, default_value = "mnrl")]
        loss: DistillLoss,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        settings: SettingsArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct SettingsArgs {
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 2e-5)]
    learning_rate: f64,
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Peak learning rate of a cross encoder's pooler and classifier (default: the
    /// learning rate).
    #[arg(long)]
    head_learning_rate: Option<f64>,
    /// Use only the first N lines of the data.
    #[arg(long)]
    limit: Option<usize>,
}

impl SettingsArgs {
    fn settings(&self) -> TrainingSettings {
        TrainingSettings {
            epochs: self.epochs,
            batch_size: self.batch,
            learning_rate: self.learning_rate,
            max_len: self.max_len,
            seed: self.seed,
            head_learning_rate: self.head_learning_rate,
            ..TrainingSettings::default()
        }
    }
}

pub fn run(command: &DevCommand) -> anyhow::Result<()> {
    match command {
        DevCommand::TinyModel { dir, layers, seed } => {
            write_random_bert(
                dir,
                &tiny_config(*layers, TINY_VOCAB.len()),
                TINY_VOCAB,
                *seed,
                false,
            )?;
            println!("{}", dir.display());
            Ok(())
        }
        DevCommand::Embed {
            model,
            texts,
            max_len,
        } => embed(model, texts, *max_len),
        DevCommand::Score {
            model,
            queries,
            documents,
            max_len,
        } => score(model, queries, documents, *max_len),
        DevCommand::TrainCe {
            base,
            data,
            out,
            settings,
        } => {
            let examples = read_tsv(data, settings.limit)?
                .into_iter()
                .enumerate()
                .map(|(line, fields)| match fields.as_slice() {
                    [query, document, label] => Ok(CrossEncoderExample {
                        query: query.clone(),
                        document: document.clone(),
                        label: label.parse().with_context(|| {
                            format!("{}:{}: label `{label}`", data.display(), line + 1)
                        })?,
                    }),
                    _ => bail!("{}:{}: expected 3 fields", data.display(), line + 1),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let logs = train_cross_encoder(
                base,
                None,
                &examples,
                &settings.settings(),
                out,
                &mut |_| {},
            )?;
            let log = logs.fine_tune;
            print_summary(&log, out)
        }
        DevCommand::TrainDe {
            teacher_de,
            teacher_ce,
            layers,
            init,
            loss,
            data,
            out,
            settings,
        } => {
            let rows = read_tsv(data, settings.limit)?;
            let data = distill_data(*loss, rows, data)?;
            let spec = StudentSpec {
                layers: *layers,
                init: *init,
                loss: *loss,
                teacher_de,
                teacher_ce: teacher_ce.as_deref(),
                known_targets: None,
            };
            let log = train_dual_encoder(&spec, &data, &settings.settings(), out, &mut |_| {})?;
            print_summary(&log, out)
        }
    }
}

fn embed(model: &Path, texts: &[String], max_len: usize) -> anyhow::Result<()> {
    let loaded = load_model(model, max_len, None, &Device::Cpu)?;
    let matrix = encode_mean(
        &loaded.model,
        &loaded.tokenizer,
        texts,
        loaded.model.depth(),
        32,
        false,
        &mut |_| {},
    )?;
    let rows: Vec<&[f32]> = (0..matrix.rows).map(|row| matrix.row(row)).collect();
    println!("{}", serde_json::json!({ "embeddings": rows }));
    Ok(())
}

fn score(
    model: &Path,
    queries: &[String],
    documents: &[String],
    max_len: usize,
) -> anyhow::Result<()> {
    if queries.len() != documents.len() {
        bail!(
            "{} queries but {} documents: give one --document per --query",
            queries.len(),
            documents.len()
        );
    }
    let loaded = load_model(model, max_len, None, &Device::Cpu)?;
    let pairs = queries
        .iter()
        .zip(documents)
        .map(|(query, document)| loaded.tokenizer.encode_pair(query, document))
        .collect::<Result<Vec<_>, _>>()?;
    let members: Vec<_> = pairs.iter().collect();
    let batch = Batch::new(&members, loaded.tokenizer.pad_id(), &Device::Cpu)?;
    let scores = loaded.model.score_pairs(&batch)?;
    println!("{}", serde_json::json!({ "scores": scores }));
    Ok(())
}

fn read_tsv(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Vec<String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .take(limit.unwrap_or(usize::MAX))
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect())
}

fn distill_data(
    loss: DistillLoss,
    rows: Vec<Vec<String>>,
    path: &Path,
) -> anyhow::Result<DistillData> {
    let fields = |row: &Vec<String>, line: usize, wanted: usize| {
        if row.len() < wanted {
            bail!("{}:{}: expected {wanted} fields", path.display(), line + 1)
        }
        Ok(())
    };
    let triples = rows.first().is_some_and(|row| row.len() >= 3);
    Ok(match loss {
        DistillLoss::Mse => DistillData::Texts(rows.into_iter().flatten().collect()),
        DistillLoss::Mnrl if !triples => {
            for (line, row) in rows.iter().enumerate() {
                fields(row, line, 2)?;
            }
            DistillData::Pairs(
                rows.into_iter()
                    .map(|row| (row[0].clone(), row[1].clone()))
                    .collect(),
            )
        }
        DistillLoss::Mnrl | DistillLoss::MarginMse => {
            for (line, row) in rows.iter().enumerate() {
                fields(row, line, 3)?;
            }
            DistillData::Triples(
                rows.into_iter()
                    .map(|row| (row[0].clone(), row[1].clone(), row[2].clone()))
                    .collect(),
            )
        }
    })
}

fn print_summary(log: &TrainingLog, out: &Path) -> anyhow::Result<()> {
    let losses = log.epoch_losses();
    let summary = serde_json::json!({
        "output": out,
        "steps": log.steps.len(),
        "examples_seen": log.examples_seen,
        "seconds": log.seconds,
        "examples_per_second": log.examples_per_second(),
        "peak_rss_bytes": log.peak_rss_bytes,
        "first_loss": log.steps.first().map(|step| step.loss),
        "last_loss": log.steps.last().map(|step| step.loss),
        "epoch_losses": losses,
    });
    println!("{summary}");
    Ok(())
}
