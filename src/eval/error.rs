/*!
The evaluation module's error type.

Only the variants; each is raised where the problem is found (measure parsing, scoring) and
must carry what the user needs to fix the input, never an internal detail.
*/

use std::fmt;

/// Errors from choosing measures or scoring a run. Each names what the user typed or which
/// inputs did not fit together, so that the fix is obvious without reading the code.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A `-m` name that is neither a measure nor a nickname (`official`, `all_trec`).
    #[error("unknown measure `{name}`; known measures: {known}")]
    UnknownMeasure { name: String, known: KnownMeasures },
    /// A known measure with parameters it cannot take (`map.5`, `P.0`, `P.x`).
    #[error("measure `{spec}`: {message}")]
    BadMeasure { spec: String, message: String },
    /// No query is both judged and ranked, so there is nothing to average. trec_eval stops
    /// here too ("No queries with both results and relevance info"); it almost always means
    /// that the run and the qrels use different query ids.
    #[error(
        "no query has both judgments and a ranking ({run_queries} queries in the run, \
         {qrels_queries} judged queries); do the run and the qrels use the same query ids?"
    )]
    NoQueries {
        run_queries: usize,
        qrels_queries: usize,
    },
}

/// The list of measure names shown with [`EvalError::UnknownMeasure`], kept as a value so the
/// error stays cheap to build and the list is rendered only when printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownMeasures(pub Vec<&'static str>);

impl fmt::Display for KnownMeasures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}
