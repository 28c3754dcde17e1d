//! The eval stage: retrieval with one (layer, pooling) of an encode, its run written in TREC
//! format and scored against the split's judgments. [`retrieve_and_score`] is the step the
//! layer probe shares; [`scored_qrels`] the judgments an eval or rerank scores (the split's,
//! or those of its queries unseen in training).

use std::path::Path;

use super::embeddings::{normalize_rows, Encoded};
use super::{Observer, StageError};
use crate::config::QuerySet;
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
    let qrels = scored_qrels(&spec.dataset_dir, &spec.split, spec.queries)?;
    let (query_ids, mut queries) = match spec.queries {
        QuerySet::All => (
            manifest.query_ids.clone(),
            encoded.queries(spec.layer, spec.pooling)?,
        ),
        // The encode holds every judged query of the split (it is shared with the whole
        // split's evals); only the subset's rows are searched.
        QuerySet::Unseen => select_rows(
            &manifest.query_ids,
            encoded.queries(spec.layer, spec.pooling)?,
            &qrels,
        ),
    };
    let mut documents = encoded.corpus(spec.layer, spec.pooling)?;
    if spec.normalize {
        normalize_rows(&mut queries);
        normalize_rows(&mut documents);
    }
    observer.phase("retrieval", 1);
    let (run, evaluation) = retrieve_and_score(
        &queries,
        &documents,
        &query_ids,
        &manifest.doc_ids,
        spec.top_k,
        &qrels,
        &measures,
    )?;
    let mut metrics = evaluation.aggregate;
    metrics.insert(QUERIES_EVALUATED.to_string(), query_ids.len() as f64);
    let run_path = out.join(RUN_FILE);
    let tag = format!("repro-L{}-{}", spec.layer, spec.pooling);
    trec::write_run(&run_path, &run, &tag)?;
    observer.advance(1);
    let bytes = std::fs::metadata(&run_path).map(|m| m.len()).unwrap_or(0);
    Ok(TaskOutcome {
        seconds: 0.0,
        metrics,
        per_query: evaluation.per_query,
        artifacts: vec![Artifact {
            name: "run".to_string(),
            path: RUN_FILE.to_string(),
            bytes,
        }],
        steps: Vec::new(),
    })
}

/// The metric an eval records beside its measures: how many queries it retrieved for and
/// scored (the split's judged queries, or its unseen subset).
pub const QUERIES_EVALUATED: &str = "queries_evaluated";

/// The judgments an eval or rerank of `split` scores: all of the split's, or for
/// [`QuerySet::Unseen`] those of its queries with no overlap with the training split (the
/// rule of [`crate::data::overlap`]).
pub(super) fn scored_qrels(
    dataset_dir: &Path,
    split: &str,
    queries: QuerySet,
) -> Result<Qrels, StageError> {
    let qrels = read_split_qrels(dataset_dir, split)?;
    let Some(training) = queries.training_split() else {
        return Ok(qrels);
    };
    let overlap = crate::data::overlap(dataset_dir, split, training)?;
    let unseen = overlap.unseen_set();
    Ok(qrels
        .into_iter()
        .filter(|(query, _)| unseen.contains(query.as_str()))
        .collect())
}

/// The ids and embedding rows of the queries `qrels` judges, in the encode's order.
fn select_rows(ids: &[String], all: Embeddings, qrels: &Qrels) -> (Vec<String>, Embeddings) {
    let mut selected = Embeddings::zeros(0, all.dim);
    let mut kept = Vec::new();
    for (row, id) in ids.iter().enumerate() {
        if qrels.contains_key(id) {
            selected.data.extend_from_slice(all.row(row));
            selected.rows += 1;
            kept.push(id.clone());
        }
    }
    (kept, selected)
}

/// The judgments of `split` in a BEIR directory.
pub(super) fn read_split_qrels(
    dataset_dir: &Path,
    split: &str,
) -> Result<crate::data::Qrels, StageError> {
    let path = crate::data::beir::qrels_path(dataset_dir, split);
    Ok(trec::read_qrels(&path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn the_unseen_subset_keeps_only_queries_without_overlap() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                (
                    "queries.jsonl",
                    "{\"_id\": \"a\", \"text\": \"one\"}\n{\"_id\": \"b\", \"text\": \"two\"}\n\
                     {\"_id\": \"c\", \"text\": \"Two\"}\n{\"_id\": \"t\", \"text\": \"two\"}\n",
                ),
                (
                    "qrels/test.tsv",
                    "query-id\tcorpus-id\tscore\na\td1\t1\nb\td2\t1\nc\td3\t1\n",
                ),
                ("qrels/train.tsv", "query-id\tcorpus-id\tscore\nt\td2\t1\n"),
            ],
        );
        let all = scored_qrels(dir.path(), "test", QuerySet::All).unwrap();
        assert_eq!(all.len(), 3);
        let unseen = scored_qrels(dir.path(), "test", QuerySet::Unseen).unwrap();
        assert_eq!(unseen.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(unseen["a"], all["a"]);

        let embeddings = Embeddings {
            rows: 3,
            dim: 2,
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        let ids: Vec<String> = ["c", "a", "b"].map(String::from).to_vec();
        let (kept, rows) = select_rows(&ids, embeddings, &unseen);
        assert_eq!(kept, ["a"]);
        assert_eq!((rows.rows, rows.data), (1, vec![3.0, 4.0]));

        std::fs::remove_file(dir.path().join("qrels/train.tsv")).unwrap();
        let err = scored_qrels(dir.path(), "test", QuerySet::Unseen).unwrap_err();
        assert!(err.to_string().contains("train.tsv is missing"), "{err}");
    }
}
