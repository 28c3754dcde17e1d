//! The eval stage: retrieval with one (layer, pooling) of an encode, its run written in TREC
//! format and scored against the split's judgments. [`retrieve_and_score`] is the step the
//! layer probe shares.

use std::path::Path;

use super::embeddings::{normalize_rows, Encoded};
use super::{Observer, StageError};
use crate::data::{trec, Qrels, Run};
use crate::eval::measures::{evaluate, parse_measures, Evaluation, Measure};
use crate::eval::retrieval::{hits_to_run, search, BlockSizes};
use crate::model::Embeddings;
use crate::task::{Artifact, EvalSpec, TaskOutcome};

/// The run file an eval task writes (and a rerank task reads and writes).
pub(super) const RUN_FILE: &str = "run.trec";

/// Retrieves each query's `top_k` nearest documents by dot product and scores the run.
pub(super) fn retrieve_and_score(
    queries: &Embeddings,
    documents: &Embeddings,
    query_ids: &[String],
    doc_ids: &[String],
    top_k: usize,
    qrels: &Qrels,
    measures: &[Measure],
) -> Result<(Run, Evaluation), StageError> {
    let hits = search(queries, documents, doc_ids, top_k, BlockSizes::default())?;
    let run = hits_to_run(query_ids, doc_ids, &hits);
    let evaluation = evaluate(qrels, &run, measures, false)?;
    Ok((run, evaluation))
}

pub(super) fn run_eval(
    spec: &EvalSpec,
    encoded: &Encoded,
    out: &Path,
    observer: &dyn Observer,
) -> Result<TaskOutcome, StageError> {
    let measures = parse_measures(&spec.measures)?;
    encoded.check_holds(spec.layer, spec.pooling)?;
    let manifest = &encoded.manifest;
    let mut queries = encoded.queries(spec.layer, spec.pooling)?;
    let mut documents = encoded.corpus(spec.layer, spec.pooling)?;
    if spec.normalize {
        normalize_rows(&mut queries);
        normalize_rows(&mut documents);
    }
    let qrels = read_split_qrels(&spec.dataset_dir, &spec.split)?;
    observer.phase("retrieval", 1);
    let (run, evaluation) = retrieve_and_score(
        &queries,
        &documents,
        &manifest.query_ids,
        &manifest.doc_ids,
        spec.top_k,
        &qrels,
        &measures,
    )?;
    let run_path = out.join(RUN_FILE);
    let tag = format!("repro-L{}-{}", spec.layer, spec.pooling);
    trec::write_run(&run_path, &run, &tag)?;
    observer.advance(1);
    let bytes = std::fs::metadata(&run_path).map(|m| m.len()).unwrap_or(0);
    Ok(TaskOutcome {
        seconds: 0.0,
        metrics: evaluation.aggregate,
        per_query: evaluation.per_query,
        artifacts: vec![Artifact {
            name: "run".to_string(),
            path: RUN_FILE.to_string(),
            bytes,
        }],
        steps: Vec::new(),
    })
}

/// The judgments of `split` in a BEIR directory.
pub(super) fn read_split_qrels(
    dataset_dir: &Path,
    split: &str,
) -> Result<crate::data::Qrels, StageError> {
    let path = crate::data::beir::qrels_path(dataset_dir, split);
    Ok(trec::read_qrels(&path)?)
}
