//! `repro report` and `repro figures`: an experiment's page, the paper's figures.

use std::path::PathBuf;

use super::run::ResultsArgs;
use crate::report::{report_dir, write_figures, write_report, ReportFormat};
use crate::session::Recorded;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Experiment name or file.
    pub experiment: String,
    #[command(flatten)]
    pub results: ResultsArgs,
    /// `html`: one self-contained page with charts; `md`: the same tables in Markdown;
    /// `json`: every comparison with its settings, interval, p-values and verdict.
    #[arg(long, value_enum, default_value = "html")]
    pub format: ReportFormat,
    /// Measures charted layer by layer besides nDCG@10 (trec_eval names, e.g. recall_100);
    /// repeatable.
    #[arg(long = "metric", value_name = "MEASURE", default_values_t = ["recall_100".to_string()])]
    pub metrics: Vec<String>,
    /// Directory of reports; the page goes to <reports>/<experiment>/.
    #[arg(long, default_value = "reports")]
    pub reports: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct FiguresArgs {
    /// Experiments (names or files) whose results are drawn together.
    #[arg(required = true)]
    pub experiments: Vec<String>,
    #[command(flatten)]
    pub results: ResultsArgs,
    /// Output directory.
    #[arg(long, default_value = "reports/figures")]
    pub out: PathBuf,
}

pub fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let recorded = Recorded::open(&args.results.results)?;
    let experiment = recorded.experiment(&args.experiment)?;
    let out_dir = report_dir(&args.reports, &experiment.name)?;
    let path = write_report(
        &recorded.store,
        &experiment,
        &out_dir,
        &args.metrics,
        args.format,
    )?;
    println!("{}", path.display());
    Ok(())
}

pub fn figures(args: &FiguresArgs) -> anyhow::Result<()> {
    let recorded = Recorded::open(&args.results.results)?;
    let experiments = recorded.experiments(&args.experiments)?;
    let written = write_figures(&recorded.store, &experiments, &args.out)?;
    if written.is_empty() {
        anyhow::bail!(
            "nothing to draw: the experiments have no finished layer probes, bench tasks or students"
        );
    }
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
