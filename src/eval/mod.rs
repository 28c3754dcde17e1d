/*!
Evaluation: exact dense retrieval and measures that match trec_eval.

This module owns turning embeddings into ranked runs and runs into numbers. It must not read
files or encode text: callers hand it embeddings, runs and qrels in memory.
*/

mod error;
pub mod measures;
pub mod retrieval;

pub use error::{EvalError, KnownMeasures};
pub use measures::{evaluate, parse_measures, rank_documents, Evaluation, Measure};
