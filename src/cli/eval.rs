use std::path::PathBuf;

use super::GlobalArgs;

/// Arguments of `repro eval`: trec_eval's command-line convention.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Relevance judgments (TREC qrels: `qid iter docno rel`, or BEIR's TSV with a header).
    pub qrels: PathBuf,
    /// Run file (TREC: `qid Q0 docno rank score tag`).
    pub run: PathBuf,
}

pub fn run(_global: &GlobalArgs, _args: &EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("repro eval is being written")
}
