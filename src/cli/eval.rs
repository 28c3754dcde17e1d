/*!
`repro eval`: trec_eval's command line over [`crate::eval::measures`].

This module owns the arguments and the two output formats: trec_eval's text lines and a JSON
object. It must not compute measures; it reads the files with [`crate::data::trec`], calls
[`crate::eval::evaluate`] and prints what comes back.
*/

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::GlobalArgs;
use crate::data::trec::{read_qrels, read_run};
use crate::eval::{evaluate, parse_measures, Evaluation, Measure};

/// Arguments of `repro eval`: trec_eval's command-line convention.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Relevance judgments (TREC qrels: `qid iter docno rel`, or BEIR's TSV with a header).
    pub qrels: PathBuf,
    /// Run file (TREC: `qid Q0 docno rank score tag`).
    pub run: PathBuf,
    /// Measure to compute, in trec_eval syntax; repeatable. Examples: `map`, `P.10`,
    /// `ndcg_cut.5,10,100`, `recip_rank`, `mrr_cut.10` (MRR@10; not trec_eval), nicknames
    /// `official` (the default) and `all_trec`.
    #[arg(
        short = 'm',
        long = "measure",
        value_name = "MEASURE",
        default_value = "official"
    )]
    pub measures: Vec<String>,
    /// Also print each query's values (trec_eval -q).
    #[arg(short = 'q', long = "per-query")]
    pub per_query: bool,
    /// Average over every judged query, a query missing from the run counting 0
    /// (trec_eval -c).
    #[arg(short = 'c', long = "complete")]
    pub complete: bool,
    /// Print one JSON object `{"aggregate": {...}, "per_query": {...}}` instead of text;
    /// `per_query` only with -q.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_global: &GlobalArgs, args: &EvalArgs) -> anyhow::Result<()> {
    let measures = parse_measures(&args.measures)?;
    let qrels = read_qrels(&args.qrels)?;
    let run = read_run(&args.run)?;
    let evaluation = evaluate(&qrels, &run, &measures, args.complete)?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let json = to_json(&evaluation, args.per_query);
        serde_json::to_writer_pretty(&mut out, &json).context("writing JSON to stdout")?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &evaluation, args.per_query)?;
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

/// trec_eval's layout: with `per_query`, every query's lines (query-id order, measures in
/// trec_eval order), then the summary lines, tagged `all`.
fn write_text(
    out: &mut impl Write,
    evaluation: &Evaluation,
    per_query: bool,
) -> anyhow::Result<()> {
    if per_query {
        for (qid, values) in &evaluation.per_query {
            for measure in evaluation
                .measures
                .iter()
                .filter(|m| m.has_per_query_value())
            {
                let name = measure.name();
                if let Some(&value) = values.get(&name) {
                    writeln!(out, "{}", line(measure, &name, qid, value))?;
                }
            }
        }
    }
    for measure in &evaluation.measures {
        let name = measure.name();
        if let Some(&value) = evaluation.aggregate.get(&name) {
            writeln!(out, "{}", line(measure, &name, "all", value))?;
        }
    }
    Ok(())
}

/// One trec_eval line: `%-22s\t%s\t%6.4f`, counts as integers (`%ld`). Rust's `{:.4}` rounds
/// the exact binary value half-to-even, as C's printf does, so the digits agree.
fn line(measure: &Measure, name: &str, qid: &str, value: f64) -> String {
    if measure.is_count() {
        format!("{name:<22}\t{qid}\t{}", value as i64)
    } else {
        format!("{name:<22}\t{qid}\t{value:.4}")
    }
}

fn to_json(evaluation: &Evaluation, per_query: bool) -> serde_json::Value {
    let counts: std::collections::HashSet<String> = evaluation
        .measures
        .iter()
        .filter(|m| m.is_count())
        .map(Measure::name)
        .collect();
    let object = |values: &std::collections::BTreeMap<String, f64>| -> serde_json::Value {
        values
            .iter()
            .map(|(name, &value)| {
                let value = if counts.contains(name) {
                    serde_json::Value::from(value as i64)
                } else {
                    serde_json::Value::from(value)
                };
                (name.clone(), value)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut json = serde_json::Map::new();
    json.insert("aggregate".into(), object(&evaluation.aggregate));
    if per_query {
        let queries: serde_json::Map<_, _> = evaluation
            .per_query
            .iter()
            .map(|(qid, values)| (qid.clone(), object(values)))
            .collect();
        json.insert("per_query".into(), queries.into());
    }
    json.into()
}
