//! Where a task finds its upstream tasks' outputs, and how a file error becomes a
//! [`StageError`] naming the file. Shared by every stage; knows no stage's files.

use std::path::{Path, PathBuf};

use super::StageError;
use crate::task::{Stage, UpstreamDirs};

/// The output directory of the upstream task of stage `needed`, which a `stage` task reads.
pub(super) fn upstream_dir(
    upstream: &UpstreamDirs,
    stage: Stage,
    needed: Stage,
) -> Result<&Path, StageError> {
    upstream_dirs(upstream, stage, needed).map(|dirs| dirs[0].as_path())
}

/// Every output directory of the upstream tasks of stage `needed` (the shards of an encode).
pub(super) fn upstream_dirs(
    upstream: &UpstreamDirs,
    stage: Stage,
    needed: Stage,
) -> Result<&[PathBuf], StageError> {
    let dirs = upstream.all(needed);
    if dirs.is_empty() {
        return Err(StageError::Setting(format!(
            "a {stage} task needs its upstream {needed} task's output, and has none"
        )));
    }
    Ok(dirs)
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_path_buf(),
        source,
    }
}
