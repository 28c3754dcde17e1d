/*!
Evaluation: exact dense retrieval, measures that match trec_eval, and paired significance
tests between systems.

This module owns turning embeddings into ranked runs and runs into numbers, and telling
whether two systems' numbers differ. It must not read files or encode text: callers hand it
embeddings, runs, qrels and scores in memory.
*/

mod error;
pub mod measures;
pub mod retrieval;
pub mod significance;

pub use error::{EvalError, KnownMeasures};
pub use measures::{evaluate, parse_measures, Evaluation, Measure};
