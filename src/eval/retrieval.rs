//! Exact dense retrieval: the top `k` documents of every query by dot product.
//!
//! Scores are computed block by block (a block of queries against a block of documents, one
//! matrix product each), and each query keeps only its best `k` in a bounded heap, so memory
//! is bounded by the block sizes and `k`, never by corpus × queries. Ties are ordered the way
//! trec_eval orders them (by document id, descending), so the run evaluated in memory and the
//! run written to disk and read back by trec_eval rank documents identically.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use candle_core::{Device, Tensor};

use crate::data::Run;
use crate::model::Embeddings;

/// How many queries and documents one score block covers. The default block of
/// 256 × 16,384 scores is 16 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    pub queries: usize,
    pub documents: usize,
}

impl Default for BlockSizes {
    fn default() -> Self {
        BlockSizes {
            queries: 256,
            documents: 16_384,
        }
    }
}

/// One retrieved document: its index in the corpus and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub doc: usize,
    pub score: f32,
}

/// Errors of retrieval: inputs that do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    #[error("query embeddings have {queries} dimensions but document embeddings have {documents}")]
    DimensionMismatch { queries: usize, documents: usize },
    #[error("{ids} document ids for {rows} document embeddings")]
    IdCount { ids: usize, rows: usize },
    #[error("k and block sizes must be at least 1")]
    ZeroSize,
    #[error("score computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// A hit ordered so that the *worse* hit is the greater: the heap's top is the hit to evict.
struct Ranked<'a> {
    hit: Hit,
    doc_id: &'a str,
}

impl Ranked<'_> {
    /// trec_eval order: higher score first; on equal scores the larger document id first.
    fn rank_order(&self, other: &Self) -> Ordering {
        other
            .hit
            .score
            .total_cmp(&self.hit.score)
            .then_with(|| other.doc_id.cmp(self.doc_id))
    }
}

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.rank_order(other) == Ordering::Equal
    }
}
impl Eq for Ranked<'_> {}
impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank_order(other)
    }
}

/// The best `k` documents for every query, best first, ties by document id descending.
pub fn search(
    queries: &Embeddings,
    documents: &Embeddings,
    doc_ids: &[String],
    k: usize,
    blocks: BlockSizes,
) -> Result<Vec<Vec<Hit>>, RetrievalError> {
    if queries.dim != documents.dim {
        return Err(RetrievalError::DimensionMismatch {
            queries: queries.dim,
            documents: documents.dim,
        });
    }
    if doc_ids.len() != documents.rows {
        return Err(RetrievalError::IdCount {
            ids: doc_ids.len(),
            rows: documents.rows,
        });
    }
    if k == 0 || blocks.queries == 0 || blocks.documents == 0 {
        return Err(RetrievalError::ZeroSize);
    }
    let device = Device::Cpu;
    let mut results = Vec::with_capacity(queries.rows);
    for query_start in (0..queries.rows).step_by(blocks.queries) {
        let query_count = blocks.queries.min(queries.rows - query_start);
        let query_block = matrix_rows(queries, query_start, query_count, &device)?;
        let mut heaps: Vec<BinaryHeap<Ranked>> = (0..query_count)
            .map(|_| BinaryHeap::with_capacity(k + 1))
            .collect();
        for doc_start in (0..documents.rows).step_by(blocks.documents) {
            let doc_count = blocks.documents.min(documents.rows - doc_start);
            let doc_block = matrix_rows(documents, doc_start, doc_count, &device)?;
            let scores = query_block.matmul(&doc_block.t()?)?.to_vec2::<f32>()?;
            for (heap, row) in heaps.iter_mut().zip(&scores) {
                for (offset, &score) in row.iter().enumerate() {
                    let doc = doc_start + offset;
                    let candidate = Ranked {
                        hit: Hit { doc, score },
                        doc_id: &doc_ids[doc],
                    };
                    if heap.len() < k {
                        heap.push(candidate);
                    } else if let Some(worst) = heap.peek() {
                        if candidate < *worst {
                            heap.pop();
                            heap.push(candidate);
                        }
                    }
                }
            }
        }
        for heap in heaps {
            results.push(heap.into_sorted_vec().into_iter().map(|r| r.hit).collect());
        }
    }
    Ok(results)
}

fn matrix_rows(
    embeddings: &Embeddings,
    start: usize,
    count: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let data = &embeddings.data[start * embeddings.dim..(start + count) * embeddings.dim];
    Tensor::from_slice(data, (count, embeddings.dim), device)
}

/// Turns hits into a run keyed by query and document ids.
pub fn hits_to_run(query_ids: &[String], doc_ids: &[String], hits: &[Vec<Hit>]) -> Run {
    query_ids
        .iter()
        .zip(hits)
        .map(|(query, hits)| {
            let docs: BTreeMap<String, f64> = hits
                .iter()
                .map(|hit| (doc_ids[hit.doc].clone(), f64::from(hit.score)))
                .collect();
            (query.clone(), docs)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embeddings(rows: &[&[f32]]) -> Embeddings {
        Embeddings {
            rows: rows.len(),
            dim: rows[0].len(),
            data: rows.iter().flat_map(|row| row.iter().copied()).collect(),
        }
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i}")).collect()
    }

    /// Brute force: every score, sorted in trec_eval order.
    fn brute_force(
        queries: &Embeddings,
        documents: &Embeddings,
        doc_ids: &[String],
        k: usize,
    ) -> Vec<Vec<Hit>> {
        (0..queries.rows)
            .map(|q| {
                let mut hits: Vec<Hit> = (0..documents.rows)
                    .map(|d| Hit {
                        doc: d,
                        score: queries
                            .row(q)
                            .iter()
                            .zip(documents.row(d))
                            .map(|(a, b)| a * b)
                            .sum(),
                    })
                    .collect();
                hits.sort_by(|a, b| {
                    b.score
                        .total_cmp(&a.score)
                        .then_with(|| doc_ids[b.doc].cmp(&doc_ids[a.doc]))
                });
                hits.truncate(k);
                hits
            })
            .collect()
    }

    #[test]
    fn blocked_search_equals_brute_force_for_every_block_size() {
        // Quantised values make many exact ties, including at the k boundary.
        let mut state = 17u32;
        let mut next = || {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((state >> 16) % 3) as f32 - 1.0
        };
        let queries = Embeddings {
            rows: 7,
            dim: 3,
            data: (0..21).map(|_| next()).collect(),
        };
        let documents = Embeddings {
            rows: 23,
            dim: 3,
            data: (0..69).map(|_| next()).collect(),
        };
        let doc_ids = ids(23);
        let expected = brute_force(&queries, &documents, &doc_ids, 5);
        for (q, d) in [(1, 1), (2, 5), (7, 23), (3, 100), (100, 4)] {
            let blocks = BlockSizes {
                queries: q,
                documents: d,
            };
            let hits = search(&queries, &documents, &doc_ids, 5, blocks).unwrap();
            assert_eq!(hits, expected, "blocks {q}×{d}");
        }
    }

    #[test]
    fn ties_rank_larger_document_ids_first() {
        let queries = embeddings(&[&[1.0, 0.0]]);
        let documents = embeddings(&[&[0.5, 0.0], &[0.5, 1.0], &[0.9, 0.0]]);
        let doc_ids = vec!["a".to_string(), "c".to_string(), "b".to_string()];
        let hits = search(&queries, &documents, &doc_ids, 3, BlockSizes::default()).unwrap();
        let order: Vec<&str> = hits[0]
            .iter()
            .map(|hit| doc_ids[hit.doc].as_str())
            .collect();
        assert_eq!(order, vec!["b", "c", "a"]);
    }

    #[test]
    fn k_beyond_corpus_returns_every_document() {
        let queries = embeddings(&[&[1.0]]);
        let documents = embeddings(&[&[1.0], &[2.0]]);
        let hits = search(&queries, &documents, &ids(2), 10, BlockSizes::default()).unwrap();
        assert_eq!(hits[0].len(), 2);
        assert_eq!(hits[0][0].doc, 1);
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let queries = embeddings(&[&[1.0, 0.0]]);
        let documents = embeddings(&[&[1.0]]);
        assert!(matches!(
            search(&queries, &documents, &ids(1), 1, BlockSizes::default()),
            Err(RetrievalError::DimensionMismatch { .. })
        ));
        assert!(matches!(
            search(&queries, &queries, &ids(2), 1, BlockSizes::default()),
            Err(RetrievalError::IdCount { .. })
        ));
    }

    #[test]
    fn run_keeps_scores_exactly() {
        let hits = vec![vec![Hit { doc: 1, score: 0.1 }]];
        let run = hits_to_run(&["q".to_string()], &ids(2), &hits);
        assert_eq!(run["q"]["d1"], f64::from(0.1f32));
    }
}
