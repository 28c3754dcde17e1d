//! `repro compare` and `repro export`: the store's results as tables and files.

use std::path::PathBuf;

use anyhow::Context;
use polars::prelude::SerWriter;

use super::run::ResultsArgs;
use crate::report::{
    cells_frame, filter_equal, format_table, mean_over, per_query_frame, sort_by_measure,
    training_steps_frame, varying_parameters, write_frame, ExportFormat,
};
use crate::session::Recorded;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Experiments (names or files); their cells form one table.
    #[arg(required = true)]
    pub experiments: Vec<String>,
    #[command(flatten)]
    pub results: ResultsArgs,
    /// Sort by this measure (trec_eval name, e.g. ndcg_cut_10), best first.
    #[arg(long, value_name = "MEASURE")]
    pub sort: Option<String>,
    /// Keep only the cells whose parameter equals the value, e.g. `--where layer=3`; repeatable.
    #[arg(long = "where", value_name = "PARAM=VALUE")]
    pub filters: Vec<String>,
    /// Average the measures over this parameter (`--mean-over dataset`: the mean over
    /// datasets, one row per configuration, with `dataset_count`), after `--where`.
    #[arg(long, value_name = "PARAM")]
    pub mean_over: Option<String>,
    /// Print the rows as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Experiment name or file.
    pub experiment: String,
    #[command(flatten)]
    pub results: ResultsArgs,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// One row per (cell, query, measure) instead of one per cell.
    #[arg(long, conflicts_with = "steps")]
    pub per_query: bool,
    /// One row per optimisation step of the experiment's training tasks (loss, learning
    /// rate, gradient norm): the training curves.
    #[arg(long)]
    pub steps: bool,
    /// Output file (default: <results>/exports/<experiment>[-per-query|-steps].<format>).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

pub fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let recorded = Recorded::open(&args.results.results)?;
    let experiments = recorded.experiments(&args.experiments)?;
    let table = cells_frame(&recorded.store, &experiments)?;
    let mut frame = table.frame.clone();
    for filter in &args.filters {
        let (parameter, value) = filter
            .split_once('=')
            .with_context(|| format!("--where {filter}: expected PARAM=VALUE"))?;
        frame = filter_equal(&frame, parameter, value)?;
    }
    if let Some(over) = &args.mean_over {
        frame = mean_over(&frame, &table.measures, over)?;
    }
    if let Some(measure) = &args.sort {
        frame = sort_by_measure(&frame, measure)?;
    }
    let mut columns: Vec<String> = Vec::new();
    if experiments.len() > 1 {
        columns.push("experiment".to_string());
    }
    let count = args.mean_over.as_ref().map(|over| format!("{over}_count"));
    let counted: Vec<String> = table
        .measures
        .iter()
        .cloned()
        .chain(count.clone())
        .collect();
    columns.extend(varying_parameters(&frame, &counted)?);
    columns.push("state".to_string());
    columns.extend(count);
    columns.extend(table.measures.iter().cloned());
    if args.json {
        let mut selected = frame.select(columns.iter().map(String::as_str))?;
        let mut bytes = Vec::new();
        polars::prelude::JsonWriter::new(&mut bytes)
            .with_json_format(polars::prelude::JsonFormat::Json)
            .finish(&mut selected)?;
        println!("{}", String::from_utf8_lossy(&bytes));
        return Ok(());
    }
    print!("{}", format_table(&frame, &columns)?);
    let constant: Vec<String> = table
        .parameters
        .iter()
        .filter(|name| !columns.contains(name) && Some(name.as_str()) != args.mean_over.as_deref())
        .filter_map(|name| {
            let series = frame.column(name).ok()?.as_materialized_series();
            let value = crate::report::display_any(&series.get(0).ok()?);
            Some(format!("{name}={value}"))
        })
        .collect();
    if !constant.is_empty() && frame.height() > 0 {
        println!("# same in every row: {}", constant.join(" "));
    }
    Ok(())
}

pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let recorded = Recorded::open(&args.results.results)?;
    let experiment = recorded.experiment(&args.experiment)?;
    let store = &recorded.store;
    let mut frame = if args.steps {
        training_steps_frame(store, &experiment)?
    } else if args.per_query {
        per_query_frame(store, &experiment)?
    } else {
        cells_frame(store, std::slice::from_ref(&experiment))?.frame
    };
    let extension = match args.format {
        ExportFormat::Csv => "csv",
        ExportFormat::Parquet => "parquet",
        ExportFormat::Json => "json",
    };
    let path = match &args.output {
        Some(path) => path.clone(),
        None => {
            let suffix = if args.steps {
                "-steps"
            } else if args.per_query {
                "-per-query"
            } else {
                ""
            };
            recorded
                .results
                .root()
                .join("exports")
                .join(format!("{}{suffix}.{extension}", experiment.name))
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    write_frame(&mut frame, args.format, &path)?;
    println!("{}", path.display());
    Ok(())
}
