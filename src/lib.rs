/*!
repro: reproducible information-retrieval embedding research.

The crate reads BERT checkpoints (dual and cross encoders), exposes every layer's hidden
states, pools them into sentence embeddings, retrieves over BEIR-style datasets and scores
runs with measures that match `trec_eval` exactly. It serves the study *Can Cross Encoders
Produce Useful Sentence Embeddings?* (Ananthakrishnan et al., arXiv 2502.03552).

Modules map the architecture:

* [`config`]: settings files (TOML), typed and validated before any compute.
* [`model`]: BERT on candle, tokenization, pooling, model loading.
* [`data`]: BEIR layout, SMART collections, TREC run/qrels files, dataset fetch and mirror.
* [`eval`]: dense retrieval and trec_eval-exact measures.
* [`train`]: fine-tuning cross encoders and distilling dual-encoder students (losses, AdamW
  with warm-up and clipping, seeded loop, Hugging Face / sentence-transformers saving).
* [`task`]: the task vocabulary (stages, specifications, outcomes) and each specification's
  cache-key parameters.
* [`plan`]: sweeps expanded into a DAG of content-addressed stage tasks.
* [`exec`]: which tasks run and why, the scheduler and its workers.
* [`session`]: one run from experiment file to concluded run (lock, recovery, plan, record,
  execute), the library call behind `repro run`.
* [`store`]: the SQLite results store.
* [`report`]: polars tables over the store, comparisons and exports.
* [`rng`]: the one seeded random number generator every random choice draws from.
* [`stages`]: glue that runs a study step (layer probe, encode, eval) from the pieces above.
* [`cli`]: the `repro` command line; the only place that uses `anyhow`.
*/

pub mod cli;
pub mod config;
pub mod data;
pub mod eval;
pub mod exec;
pub mod model;
pub mod plan;
pub mod report;
pub mod rng;
pub mod session;
pub mod stages;
pub mod store;
pub mod task;
pub mod train;
pub mod util;
