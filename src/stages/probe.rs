//! The layer probe: encode a dataset's queries and corpus once, then retrieve and evaluate with
//! every requested (layer, pooling).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::eval::retrieve_and_score;
use super::{Observer, StageError};
use crate::config::ProbeSettings;
use crate::data::{trec, Dataset};
use crate::eval::measures::parse_measures;
use crate::model::{encode_texts, EncodeOptions, LoadedModel, PooledEmbeddings, Pooling};

/// What one encode cost.
#[derive(Debug, Clone, Serialize)]
pub struct EncodeStats {
    pub texts: usize,
    /// Real tokens (padding excluded).
    pub tokens: usize,
    pub padded_tokens: usize,
    pub seconds: f64,
    pub texts_per_second: f64,
    pub tokens_per_second: f64,
}

impl EncodeStats {
    pub(crate) fn new(texts: usize, embeddings: &PooledEmbeddings, seconds: f64) -> Self {
        let rate = |count: usize| {
            if seconds > 0.0 {
                count as f64 / seconds
            } else {
                0.0
            }
        };
        EncodeStats {
            texts,
            tokens: embeddings.tokens,
            padded_tokens: embeddings.padded_tokens,
            seconds,
            texts_per_second: rate(texts),
            tokens_per_second: rate(embeddings.tokens),
        }
    }

    /// The encode stage's metrics for one side (`queries` or `corpus`), named
    /// `{side}_texts_per_second`, `{side}_tokens_per_second`, `{side}_seconds`, `{side}_tokens`.
    pub(crate) fn named(&self, side: &str) -> [(String, f64); 4] {
        [
            (format!("{side}_texts_per_second"), self.texts_per_second),
            (format!("{side}_tokens_per_second"), self.tokens_per_second),
            (format!("{side}_seconds"), self.seconds),
            (format!("{side}_tokens"), self.tokens as f64),
        ]
    }
}

/// The scores of one (layer, pooling).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeCell {
    pub layer: usize,
    pub pooling: Pooling,
    /// Aggregate measures keyed by trec_eval names (`ndcg_cut_10`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Per-query values of the same measures.
    #[serde(skip)]
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Everything a probe measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeOutcome {
    pub settings: ProbeSettings,
    pub model_dir: String,
    pub dataset_dir: String,
    pub queries: usize,
    pub documents: usize,
    pub layers: Vec<usize>,
    /// Measure names in report order.
    pub measures: Vec<String>,
    pub cells: Vec<ProbeCell>,
    pub query_encode: EncodeStats,
    pub corpus_encode: EncodeStats,
    pub retrieval_seconds: f64,
}

/// One side's texts encoded, with how fast, reported to `observer` as phase `side`.
fn encode_side<S: AsRef<str>>(
    model: &LoadedModel,
    side: &str,
    texts: &[S],
    options: &EncodeOptions,
    observer: &dyn Observer,
) -> Result<(PooledEmbeddings, EncodeStats), StageError> {
    observer.phase(side, texts.len());
    let started = Instant::now();
    let embeddings = encode_texts(
        &model.model,
        &model.tokenizer,
        texts,
        options,
        &mut |done| observer.advance(done),
    )?;
    let stats = EncodeStats::new(texts.len(), &embeddings, started.elapsed().as_secs_f64());
    Ok((embeddings, stats))
}

/// Runs the probe. `layers` are the resolved hidden-state indices; when `runs_dir` is given,
/// each cell's run is written there as `layer<L>_<pooling>.trec`.
pub fn run_probe(
    settings: &ProbeSettings,
    layers: &[usize],
    model: &LoadedModel,
    dataset: &Dataset,
    runs_dir: Option<&Path>,
    observer: &dyn Observer,
) -> Result<ProbeOutcome, StageError> {
    let measures = parse_measures(&settings.measures)?;
    if dataset.queries.is_empty() || dataset.corpus.is_empty() {
        return Err(StageError::Setting(format!(
            "dataset {} has {} judged queries and {} documents in split `{}`; nothing to probe",
            dataset.dir.display(),
            dataset.queries.len(),
            dataset.corpus.len(),
            dataset.split
        )));
    }
    let options = EncodeOptions {
        layers: layers.to_vec(),
        poolings: settings.pooling.clone(),
        input: settings.input,
        batch_size: settings.batch,
        normalize: settings.normalize,
    };

    let query_texts: Vec<&str> = dataset.queries.iter().map(|q| q.text.as_str()).collect();
    let (query_embeddings, query_encode) =
        encode_side(model, "queries", &query_texts, &options, observer)?;
    let corpus_texts: Vec<String> = dataset.corpus.iter().map(|doc| doc.full_text()).collect();
    let (corpus_embeddings, corpus_encode) =
        encode_side(model, "corpus", &corpus_texts, &options, observer)?;

    let query_ids: Vec<String> = dataset.queries.iter().map(|q| q.id.clone()).collect();
    let doc_ids: Vec<String> = dataset.corpus.iter().map(|d| d.id.clone()).collect();
    observer.phase("retrieval", corpus_embeddings.cells.len());
    let started = Instant::now();
    let mut cells = Vec::with_capacity(corpus_embeddings.cells.len());
    let mut measure_names = Vec::new();
    for (cell, documents) in &corpus_embeddings.cells {
        let queries = &query_embeddings.cells[cell];
        let (run, evaluation) = retrieve_and_score(
            queries,
            documents,
            &query_ids,
            &doc_ids,
            settings.top_k,
            &dataset.qrels,
            &measures,
        )?;
        if let Some(dir) = runs_dir {
            let path = dir.join(format!("layer{}_{}.trec", cell.layer, cell.pooling));
            let tag = format!("repro-layer{}-{}", cell.layer, cell.pooling);
            trec::write_run(&path, &run, &tag)?;
        }
        if measure_names.is_empty() {
            measure_names = evaluation.names();
        }
        cells.push(ProbeCell {
            layer: cell.layer,
            pooling: cell.pooling,
            metrics: evaluation.aggregate,
            per_query: evaluation.per_query,
        });
        observer.advance(1);
    }
    Ok(ProbeOutcome {
        settings: settings.clone(),
        model_dir: model.files.dir.display().to_string(),
        dataset_dir: dataset.dir.display().to_string(),
        queries: dataset.queries.len(),
        documents: dataset.corpus.len(),
        layers: layers.to_vec(),
        measures: measure_names,
        cells,
        query_encode,
        corpus_encode,
        retrieval_seconds: started.elapsed().as_secs_f64(),
    })
}
