//! The store's schema, as an ordered list of migrations.
//!
//! A migration is applied once, in a transaction, and recorded in `schema_migrations`. Never
//! edit a migration that has shipped: add the next one.

/// Migrations in order; index + 1 is the version.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE experiments (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    path         TEXT NOT NULL,
    description  TEXT NOT NULL,
    file_sha256  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- One `repro run` invocation and the environment it ran in.
CREATE TABLE runs (
    id             INTEGER PRIMARY KEY,
    experiment_id  INTEGER NOT NULL REFERENCES experiments(id),
    command        TEXT NOT NULL,
    status         TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    ended_at       TEXT,
    git_commit     TEXT,
    git_dirty      INTEGER,
    repro_version  TEXT NOT NULL,
    rustc_version  TEXT NOT NULL,
    cpu_model      TEXT NOT NULL,
    threads        INTEGER NOT NULL,
    hostname       TEXT NOT NULL,
    executor       TEXT NOT NULL,
    jobs           INTEGER NOT NULL,
    tasks_total    INTEGER,
    tasks_run      INTEGER,
    tasks_cached   INTEGER,
    tasks_failed   INTEGER
);

-- Content-addressed tasks, shared by every experiment and cell that needs them.
CREATE TABLE tasks (
    key         TEXT PRIMARY KEY,
    stage       TEXT NOT NULL,
    inputs      TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE task_upstream (
    task_key      TEXT NOT NULL REFERENCES tasks(key),
    upstream_key  TEXT NOT NULL REFERENCES tasks(key),
    PRIMARY KEY (task_key, upstream_key)
) WITHOUT ROWID;

CREATE TABLE cells (
    id             INTEGER PRIMARY KEY,
    experiment_id  INTEGER NOT NULL REFERENCES experiments(id),
    key            TEXT NOT NULL,
    position       INTEGER NOT NULL,
    params         TEXT NOT NULL,
    active         INTEGER NOT NULL,
    UNIQUE (experiment_id, key)
);

CREATE TABLE cell_tasks (
    cell_id   INTEGER NOT NULL REFERENCES cells(id),
    stage     TEXT NOT NULL,
    task_key  TEXT NOT NULL REFERENCES tasks(key),
    PRIMARY KEY (cell_id, stage)
) WITHOUT ROWID;

-- Every execution of a task; a retry is a new row, rows are never overwritten.
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    task_key    TEXT NOT NULL REFERENCES tasks(key),
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    number      INTEGER NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    seconds     REAL,
    exit_code   INTEGER,
    error       TEXT,
    log_path    TEXT,
    UNIQUE (task_key, number)
);

-- A task's measurements, from its successful attempt.
CREATE TABLE metrics (
    task_key    TEXT NOT NULL REFERENCES tasks(key),
    attempt_id  INTEGER NOT NULL REFERENCES attempts(id),
    measure     TEXT NOT NULL,
    value       REAL NOT NULL,
    PRIMARY KEY (task_key, measure)
) WITHOUT ROWID;

CREATE TABLE query_metrics (
    task_key  TEXT NOT NULL REFERENCES tasks(key),
    measure   TEXT NOT NULL,
    query_id  TEXT NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (task_key, measure, query_id)
) WITHOUT ROWID;

CREATE TABLE artifacts (
    task_key  TEXT NOT NULL REFERENCES tasks(key),
    name      TEXT NOT NULL,
    path      TEXT NOT NULL,
    bytes     INTEGER NOT NULL,
    PRIMARY KEY (task_key, name)
) WITHOUT ROWID;

-- sha256 of input files, reused while size and modification time are unchanged.
CREATE TABLE file_hashes (
    path      TEXT PRIMARY KEY,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    sha256    TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX attempts_by_run ON attempts(run_id);
CREATE INDEX cells_by_experiment ON cells(experiment_id, active, position);
"#,
    r#"
-- `repro bench`: encoder throughput of a model truncated to one depth, with its environment.
CREATE TABLE benchmarks (
    id                 INTEGER PRIMARY KEY,
    recorded_at        TEXT NOT NULL,
    model              TEXT NOT NULL,
    model_sha256       TEXT NOT NULL,
    texts              TEXT NOT NULL,
    documents          INTEGER NOT NULL,
    tokens             INTEGER NOT NULL,
    max_len            INTEGER NOT NULL,
    batch              INTEGER NOT NULL,
    input              TEXT NOT NULL,
    depth              INTEGER NOT NULL,
    runs               INTEGER NOT NULL,
    seconds            TEXT NOT NULL,
    docs_per_second    REAL NOT NULL,
    docs_per_second_min REAL NOT NULL,
    docs_per_second_max REAL NOT NULL,
    tokens_per_second  REAL NOT NULL,
    features           TEXT NOT NULL,
    threads            INTEGER NOT NULL,
    cpu_model          TEXT NOT NULL,
    hostname           TEXT NOT NULL,
    repro_version      TEXT NOT NULL,
    git_commit         TEXT,
    git_dirty          INTEGER
);
"#,
    r#"
-- Training tasks: one row per optimiser step of the successful attempt (loss curves).
CREATE TABLE training_steps (
    task_key       TEXT NOT NULL REFERENCES tasks(key),
    step           INTEGER NOT NULL,
    epoch          INTEGER NOT NULL,
    loss           REAL NOT NULL,
    learning_rate  REAL NOT NULL,
    grad_norm      REAL NOT NULL,
    PRIMARY KEY (task_key, step)
) WITHOUT ROWID;
"#,
    r#"
-- The experiment file as last run: provenance for reports, and the model tables they read
-- (which model is a cross encoder, which a student of which teachers).
ALTER TABLE experiments ADD COLUMN text TEXT NOT NULL DEFAULT '';
"#,
    r#"
-- A cell's encode may be several tasks (the shards of a sharded encode).
CREATE TABLE cell_tasks_by_key (
    cell_id   INTEGER NOT NULL REFERENCES cells(id),
    stage     TEXT NOT NULL,
    task_key  TEXT NOT NULL REFERENCES tasks(key),
    PRIMARY KEY (cell_id, stage, task_key)
) WITHOUT ROWID;
INSERT INTO cell_tasks_by_key SELECT cell_id, stage, task_key FROM cell_tasks;
DROP TABLE cell_tasks;
ALTER TABLE cell_tasks_by_key RENAME TO cell_tasks;
-- The batch system's id of an attempt (Slurm: `<array job>_<index>`); NULL when local.
ALTER TABLE attempts ADD COLUMN job_id TEXT;
"#,
    r#"
-- A file's hash is reused only while its change time and inode match too: an edit that
-- restores size and modification time still changes the change time.
ALTER TABLE file_hashes ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT -1;
ALTER TABLE file_hashes ADD COLUMN inode INTEGER NOT NULL DEFAULT -1;
"#,
];
