/*!
`repro data`: fetching, importing, listing and inspecting datasets, and measuring a split's
overlap with a training split.

This module owns the subcommands' arguments and their output (aligned text, or JSON with
`--json`), and draws download progress. It must not parse formats or decide where datasets
live: it calls [`crate::data::fetch`], [`crate::data::smart`], [`crate::data::beir`] and
[`crate::data::overlap`] and prints what they return. Results go to stdout; progress to
stderr, silenced by `--quiet`.
*/

use std::cell::Cell;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::{GlobalArgs, Progress};
use crate::data::fetch::{self, Format, BEIR_BASE_URL};
use crate::data::{beir, overlap, sgml, smart};

/// `repro data ...` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Put a dataset into the data directory (copied from the mirror, imported from a raw
    /// SMART or TREC collection in the mirror, or downloaded from BEIR) and print its
    /// directory.
    Fetch(FetchArgs),
    /// Convert a raw SMART collection (Cranfield, CISI, MED, CACM, ADI) into a BEIR directory.
    ImportSmart(ImportArgs),
    /// Convert a raw TREC collection (SGML-style <DOC> documents and <top> topics, TREC
    /// qrels; e.g. NPL) into a BEIR directory.
    ImportTrec(ImportTrecArgs),
    /// List the known datasets and where each is available.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Count a dataset's documents, queries and judgments for one split.
    Info(InfoArgs),
    /// Which evaluated queries overlap with a training split: a relevant document that is a
    /// train positive, or a text that repeats a training query's; and the unseen rest.
    Overlap(OverlapArgs),
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Dataset name (`repro data list` shows the known ones).
    pub name: String,
    /// Where BEIR's zips are downloaded from (`<URL>/<name>.zip`), e.g. an internal copy of
    /// BEIR's server.
    #[arg(long, env = "REPRO_BEIR_URL", default_value = BEIR_BASE_URL, value_name = "URL")]
    pub beir_url: String,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Directory holding the collection's documents, queries and judgments files.
    pub src_dir: PathBuf,
    /// Output directory (BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The documents file, when recognition cannot tell (a name inside SRC_DIR, or a path).
    #[arg(long, value_name = "FILE")]
    pub documents: Option<PathBuf>,
    /// The queries file, when recognition cannot tell.
    #[arg(long, value_name = "FILE")]
    pub queries: Option<PathBuf>,
    /// The judgments file, when recognition cannot tell.
    #[arg(long, value_name = "FILE")]
    pub judgments: Option<PathBuf>,
    /// How judgments name queries: by the number after `.I` (label) or by the query's
    /// position in the file (position, Cranfield).
    #[arg(long, value_enum, default_value = "auto")]
    pub query_ids: QueryIdsArg,
    /// How the judgments' columns read.
    #[arg(long, value_enum, default_value = "auto")]
    pub judgments_format: JudgmentsFormatArg,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImportTrecArgs {
    /// Directory holding the collection's documents files, topics file and qrels, recognised
    /// by their content.
    pub src_dir: PathBuf,
    /// Output directory (BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum QueryIdsArg {
    /// Recognise from the files (position for Cranfield-style collections).
    Auto,
    Label,
    Position,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum JudgmentsFormatArg {
    /// Recognise from the content.
    Auto,
    /// `qid docid`, each relevant.
    Pairs,
    /// `qid docid grade`.
    Graded,
    /// Cranfield `qid docid code`: grade 5 - code, -1 not relevant.
    Cranfield,
    /// `qid docid 0 0` (CISI, CACM), each relevant.
    PairsZeros,
    /// TREC `qid iter docid grade` (MED).
    Trec,
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Dataset name (data directory, then mirror) or a directory (BEIR, raw SMART or TREC).
    pub name: String,
    /// Which judgments to count (`qrels/<split>.tsv`).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct OverlapArgs {
    /// Dataset name (data directory, then mirror) or a directory (BEIR, raw SMART or TREC).
    pub name: String,
    /// The evaluated split (`qrels/<split>.tsv`).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// The split a model is trained on.
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, command: &DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Fetch(args) => run_fetch(global, args),
        DataCommand::ImportSmart(args) => run_import(args),
        DataCommand::ImportTrec(args) => run_import_trec(args),
        DataCommand::List { json } => run_list(global, *json),
        DataCommand::Info(args) => run_info(global, args),
        DataCommand::Overlap(args) => run_overlap(global, args),
    }
}

fn run_fetch(global: &GlobalArgs, args: &FetchArgs) -> anyhow::Result<()> {
    let progress = Progress::new(global.quiet, 0, "download");
    // indicatif counts deltas; the library reports totals.
    let drawn = Cell::new(0u64);
    let sized = Cell::new(false);
    let report = |done: u64, total: Option<u64>| {
        if let Some(total) = total.filter(|_| !sized.get()) {
            progress.reset(total, format!("{} (bytes)", args.name));
            sized.set(true);
            drawn.set(0);
        }
        progress.advance(done.saturating_sub(drawn.get()));
        drawn.set(done);
    };
    let result = fetch::fetch_from(
        &args.name,
        &global.data_dir,
        global.mirror.as_deref(),
        &args.beir_url,
        &report,
    );
    progress.finish();
    let dir = result.with_context(|| format!("fetching dataset `{}`", args.name))?;
    println!("{}", dir.display());
    Ok(())
}

fn run_import(args: &ImportArgs) -> anyhow::Result<()> {
    let inside = |file: &Option<PathBuf>| {
        file.as_ref().map(|file| {
            if file.is_absolute() || file.exists() {
                file.clone()
            } else {
                args.src_dir.join(file)
            }
        })
    };
    let hints = smart::SourceHints {
        documents: inside(&args.documents),
        queries: inside(&args.queries),
        judgments: inside(&args.judgments),
    };
    let options = smart::ImportOptions {
        query_ids: match args.query_ids {
            QueryIdsArg::Auto => None,
            QueryIdsArg::Label => Some(smart::QueryIds::Label),
            QueryIdsArg::Position => Some(smart::QueryIds::Position),
        },
        qrels_format: match args.judgments_format {
            JudgmentsFormatArg::Auto => None,
            JudgmentsFormatArg::Pairs => Some(smart::QrelsFormat::Pairs),
            JudgmentsFormatArg::Graded => Some(smart::QrelsFormat::Graded),
            JudgmentsFormatArg::Cranfield => Some(smart::QrelsFormat::CranfieldCodes),
            JudgmentsFormatArg::PairsZeros => Some(smart::QrelsFormat::PairsWithZeros),
            JudgmentsFormatArg::Trec => Some(smart::QrelsFormat::Trec),
        },
    };
    let sources = smart::find_sources(&args.src_dir, &hints)?;
    let summary = smart::import_with(&sources, &args.out, &options)
        .with_context(|| format!("importing {}", args.src_dir.display()))?;
    let query_ids = match summary.conventions.query_ids {
        smart::QueryIds::Label => "label",
        smart::QueryIds::Position => "position",
    };
    if args.json {
        let value = json!({
            "out_dir": summary.out_dir,
            "documents_file": summary.sources.documents,
            "queries_file": summary.sources.queries,
            "judgments_file": summary.sources.judgments,
            "query_ids": query_ids,
            "judgments_format": summary.conventions.qrels_format.describe(),
            "documents": summary.documents,
            "queries": summary.queries,
            "judged_queries": summary.judged_queries,
            "judgment_lines": summary.judgment_lines,
            "judgments": summary.judgments,
            "relevant": summary.relevant,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "documents       {:>7}  {}",
        summary.documents,
        file_name(&summary.sources.documents)
    );
    println!(
        "queries         {:>7}  {} (query ids: {query_ids})",
        summary.queries,
        file_name(&summary.sources.queries)
    );
    println!("judged queries  {:>7}", summary.judged_queries);
    println!(
        "judgments       {:>7}  {} ({}; {} lines)",
        summary.judgments,
        file_name(&summary.sources.judgments),
        summary.conventions.qrels_format.describe(),
        summary.judgment_lines
    );
    println!("relevant        {:>7}  grade >= 1", summary.relevant);
    println!("written to {} (split `test`)", summary.out_dir.display());
    Ok(())
}

fn run_import_trec(args: &ImportTrecArgs) -> anyhow::Result<()> {
    let summary = sgml::import(&args.src_dir, &args.out)
        .with_context(|| format!("importing {}", args.src_dir.display()))?;
    if args.json {
        let value = json!({
            "out_dir": summary.out_dir,
            "documents_files": summary.sources.documents,
            "topics_file": summary.sources.topics,
            "judgments_file": summary.sources.judgments,
            "documents": summary.documents,
            "queries": summary.queries,
            "judged_queries": summary.judged_queries,
            "judgments": summary.judgments,
            "relevant": summary.relevant,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let documents: Vec<String> = summary
        .sources
        .documents
        .iter()
        .map(|p| file_name(p))
        .collect();
    println!(
        "documents       {:>7}  {}",
        summary.documents,
        documents.join(", ")
    );
    println!(
        "queries         {:>7}  {}",
        summary.queries,
        file_name(&summary.sources.topics)
    );
    println!("judged queries  {:>7}", summary.judged_queries);
    println!(
        "judgments       {:>7}  {}",
        summary.judgments,
        file_name(&summary.sources.judgments)
    );
    println!("relevant        {:>7}  grade >= 1", summary.relevant);
    println!("written to {} (split `test`)", summary.out_dir.display());
    Ok(())
}

fn run_list(global: &GlobalArgs, json: bool) -> anyhow::Result<()> {
    let mirror = global.mirror.as_deref();
    let list = fetch::availability(&global.data_dir, mirror);
    let format_name = |format: Format| match format {
        Format::Beir => "beir",
        Format::Smart => "smart",
        Format::Trec => "trec",
    };
    if json {
        let values: Vec<serde_json::Value> = list
            .iter()
            .map(|entry| {
                json!({
                    "name": entry.name,
                    "known": entry.known.is_some(),
                    "format": entry.known.map(|known| format_name(known.format)),
                    "description": entry.known.map(|known| known.description),
                    "downloadable": entry.known.is_some_and(|known| known.downloadable),
                    "url": entry.known.and_then(|known| known.url(BEIR_BASE_URL)),
                    "local": entry.local,
                    "mirror": entry.mirror.as_ref().map(|(path, format)| json!({
                        "path": path,
                        "format": format_name(*format),
                    })),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(());
    }
    println!(
        "{:<18} {:<6} {:<6} {:<7} {:<9} DESCRIPTION",
        "NAME", "FORMAT", "LOCAL", "MIRROR", "DOWNLOAD"
    );
    for entry in &list {
        let yes_no = |flag: bool| if flag { "yes" } else { "-" };
        println!(
            "{:<18} {:<6} {:<6} {:<7} {:<9} {}",
            entry.name,
            entry.known.map_or("?", |known| format_name(known.format)),
            yes_no(entry.local.is_some()),
            entry
                .mirror
                .as_ref()
                .map_or("-", |(_, format)| format_name(*format)),
            yes_no(entry.known.is_some_and(|known| known.downloadable)),
            entry.known.map_or("", |known| known.description),
        );
    }
    println!();
    println!("data directory: {}", global.data_dir.display());
    match mirror {
        Some(mirror) => println!("mirror:         {}", mirror.display()),
        None => println!("mirror:         none (set REPRO_MIRROR or --mirror)"),
    }
    Ok(())
}

fn run_info(global: &GlobalArgs, args: &InfoArgs) -> anyhow::Result<()> {
    let dir = fetch::resolve(&args.name, &global.data_dir, global.mirror.as_deref())?;
    let info = beir::inspect(&dir, &args.split)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("dataset          {}", info.name);
    println!("directory        {}", info.dir.display());
    println!(
        "split            {} (splits: {})",
        info.split,
        info.splits.join(", ")
    );
    println!("documents        {}", info.documents);
    println!("queries          {}", info.queries);
    println!("judged queries   {}", info.judged_queries);
    println!(
        "judgments        {} ({} relevant)",
        info.judgments, info.relevant
    );
    println!("mean doc length  {:.1} words", info.mean_document_words);
    Ok(())
}

fn run_overlap(global: &GlobalArgs, args: &OverlapArgs) -> anyhow::Result<()> {
    let dir = fetch::resolve(&args.name, &global.data_dir, global.mirror.as_deref())?;
    let found = overlap::overlap(&dir, &args.split, &args.train_split)
        .with_context(|| format!("measuring the overlap of {}", dir.display()))?;
    if args.json {
        let value = json!({
            "dataset": args.name,
            "dir": dir,
            "split": args.split,
            "train_split": args.train_split,
            "evaluated": found.evaluated.len(),
            "with_train_positive": found.train_positives.len(),
            "with_repeated_text": found.repeated_text.len(),
            "exact_repeats": found.exact_repeats(),
            "unseen": found.unseen.len(),
            "train_positives": found.train_positives,
            "repeated_text": found.repeated_text,
            "unseen_queries": found.unseen,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("dataset                        {}", args.name);
    println!("directory                      {}", dir.display());
    println!(
        "splits                         {} evaluated, {} trained on",
        args.split, args.train_split
    );
    println!("evaluated queries              {}", found.evaluated.len());
    println!(
        "with a relevant train positive {}",
        found.train_positives.len()
    );
    println!(
        "with repeated text             {} ({} exact)",
        found.repeated_text.len(),
        found.exact_repeats()
    );
    println!("unseen                         {}", found.unseen.len());
    print_list(
        "query: relevant documents that are train positives",
        found
            .train_positives
            .iter()
            .map(|positive| format!("{}: {}", positive.query, positive.documents.join(" "))),
    );
    print_list(
        "query: training queries with the same text",
        found.repeated_text.iter().map(|repeat| {
            let exact = if repeat.exact { " (exact)" } else { "" };
            format!(
                "{}: {}{exact}",
                repeat.query,
                repeat.train_queries.join(" ")
            )
        }),
    );
    print_list(
        "unseen queries",
        found
            .unseen
            .chunks(UNSEEN_PER_LINE)
            .map(|ids| ids.join(" ")),
    );
    Ok(())
}

/// Unseen query ids are listed this many to a line, to stay readable and greppable.
const UNSEEN_PER_LINE: usize = 12;

/// A blank line, a heading and its lines, indented; nothing for an empty list.
fn print_list(heading: &str, lines: impl Iterator<Item = String>) {
    let lines: Vec<String> = lines.filter(|line| !line.is_empty()).collect();
    if lines.is_empty() {
        return;
    }
    println!();
    println!("{heading}");
    for line in lines {
        println!("  {line}");
    }
}

/// The last component of `path`, for summaries.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}
