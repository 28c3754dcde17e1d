//! `repro dev`: helpers for developing and testing repro itself.

use std::path::PathBuf;

use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};

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
    }
}
