/*!
The results store: one SQLite database per results directory.

This module owns the database file (`<results>/repro.sqlite`), its schema and migrations, and
every read and write of it: experiments, cells and their parameters, content-addressed tasks,
attempts (a retry is a new row; history is never overwritten), metrics (aggregate and per
query), artifacts, training tasks' per-step log, and the environment of each run. Whether a task is done is decided here,
by its recorded outcome, never by a file existing.

The database runs in WAL mode with a busy timeout; only the scheduler writes (one writer),
readers (`repro status`, reports) may run beside it. This module must not run tasks or decide
what to run; it records and answers.
*/

mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use crate::task::{Stage, TaskOutcome, TrainingStep};

/// Why the store could not answer or record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("results store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("results store {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no results store at {0} (run `repro run` first, or pass --results)")]
    Missing(PathBuf),
}

/// A task's recorded state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Known but never finished.
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Stopped by Ctrl-C, or its scheduler died (`kill -9`).
    Interrupted,
}

impl TaskStatus {
    pub fn name(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Interrupted => "interrupted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => TaskStatus::Pending,
            "running" => TaskStatus::Running,
            "succeeded" => TaskStatus::Succeeded,
            "failed" => TaskStatus::Failed,
            "interrupted" => TaskStatus::Interrupted,
            _ => return None,
        })
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How an attempt ended, when it did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The task's own error (an exit code, a signal, a bad outcome).
    Failed,
    /// Stopped by Ctrl-C.
    Interrupted,
    /// Cancelled in the batch system (Ctrl-C under Slurm: `scancel`).
    Cancelled,
    /// The batch system's time limit ended it.
    Timeout,
    /// The node it ran on failed.
    NodeFailure,
    /// The batch system's memory limit ended it.
    OutOfMemory,
    /// It left the batch system's queue without a result or a known reason.
    Lost,
    /// A signal from outside repro ended the worker (the out-of-memory killer, `kill`).
    Killed,
}

impl AttemptEnd {
    /// The attempt's status in the store.
    pub fn name(self) -> &'static str {
        match self {
            AttemptEnd::Failed => "failed",
            AttemptEnd::Interrupted => "interrupted",
            AttemptEnd::Cancelled => "cancelled",
            AttemptEnd::Timeout => "timeout",
            AttemptEnd::NodeFailure => "node_failure",
            AttemptEnd::OutOfMemory => "out_of_memory",
            AttemptEnd::Lost => "lost",
            AttemptEnd::Killed => "killed",
        }
    }

    /// The task's status after such an attempt: stopped from outside, it runs again next
    /// time; failed (its own error or a limit it hit), only with `--retry-failed`. A killed
    /// task runs again once: [`Store::record_failure`] makes a second kill in a row a failure,
    /// so that a task the kernel kills every time does not run forever.
    pub fn task_status(self) -> TaskStatus {
        match self {
            AttemptEnd::Interrupted
            | AttemptEnd::Cancelled
            | AttemptEnd::Lost
            | AttemptEnd::Killed => TaskStatus::Interrupted,
            AttemptEnd::Failed
            | AttemptEnd::Timeout
            | AttemptEnd::NodeFailure
            | AttemptEnd::OutOfMemory => TaskStatus::Failed,
        }
    }
}

/// Where and with what a run executed.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub repro_version: String,
    pub rustc_version: String,
    pub cpu_model: String,
    pub threads: usize,
    pub hostname: String,
}

/// One depth of a `repro bench` measurement.
#[derive(Debug, Clone)]
pub struct BenchmarkRecord {
    pub model: String,
    pub model_sha256: String,
    /// What was encoded (dataset and how many documents).
    pub texts: String,
    pub documents: usize,
    pub tokens: usize,
    pub max_len: usize,
    pub batch: usize,
    pub input: String,
    pub depth: usize,
    pub runs: usize,
    /// JSON list of each timed run's seconds.
    pub seconds: String,
    pub docs_per_second: f64,
    pub docs_per_second_min: f64,
    pub docs_per_second_max: f64,
    pub tokens_per_second: f64,
    /// Compile-time features of the encoder (`openblas`, …).
    pub features: String,
    pub environment: Environment,
}

/// A task as the plan declares it.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub key: String,
    pub stage: Stage,
    /// Canonical JSON of every declared input (what the key hashes).
    pub inputs: String,
    pub upstream: Vec<String>,
}

/// A cell as the plan declares it.
#[derive(Debug, Clone)]
pub struct CellRecord {
    pub key: String,
    pub params: String,
    pub tasks: Vec<(Stage, String)>,
}

/// A started attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptId {
    pub id: i64,
    pub number: i64,
}

/// An experiment as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentRow {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub description: String,
    pub updated_at: String,
    /// The experiment file's text as last run (empty for stores written before it was kept).
    pub text: String,
}

/// One active cell of an experiment with its tasks' states and its final metrics.
#[derive(Debug, Clone, Serialize)]
pub struct CellRow {
    pub position: i64,
    pub key: String,
    pub params: BTreeMap<String, serde_json::Value>,
    /// Stage, task key, task status.
    pub tasks: Vec<(String, String, TaskStatus)>,
    /// Metrics of the cell's result stages (those passed to [`Store::cells`]), merged.
    pub metrics: BTreeMap<String, f64>,
}

/// One task of an experiment with its attempts summarised.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub key: String,
    pub stage: String,
    pub status: TaskStatus,
    pub attempts: i64,
    /// Seconds of the latest finished attempt.
    pub seconds: Option<f64>,
    pub error: Option<String>,
    pub cells: i64,
}

/// One run of an experiment.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub command: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub repro_version: String,
    pub hostname: String,
    pub cpu_model: String,
    pub tasks_total: Option<i64>,
    pub tasks_run: Option<i64>,
    pub tasks_cached: Option<i64>,
    pub tasks_failed: Option<i64>,
    pub rustc_version: String,
    pub threads: i64,
    pub executor: String,
    pub jobs: i64,
}

/// Counts a run reports when it ends.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RunCounts {
    pub total: usize,
    pub run: usize,
    pub cached: usize,
    pub failed: usize,
}

/// What identifies a file's content without reading it: a remembered hash is reused only
/// while all of it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i64,
    /// Changes on every write or metadata change, and cannot be set back by a user.
    pub ctime_ns: i64,
    pub inode: u64,
}

impl FileStamp {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let nanos = |seconds: i64, nanos: i64| seconds.saturating_mul(1_000_000_000) + nanos;
        FileStamp {
            size: metadata.len(),
            mtime_ns: nanos(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: nanos(metadata.ctime(), metadata.ctime_nsec()),
            inode: metadata.ino(),
        }
    }
}

/// An open results store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::Invalid {
                path: path.to_path_buf(),
                message: format!("cannot create {}: {err}", parent.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing store for reading only, as every command that only reads does: a
    /// store on a read-only file system or in a directory this user cannot write (a shared,
    /// archived study) opens `immutable` (SQLite reads it without locks or a journal, which is
    /// right only because nobody can be writing it); any other opens `mode=ro`, beside a
    /// running scheduler. Nothing is migrated: a store of an older schema is refused, saying so.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let directory = path.parent().filter(|p| !p.as_os_str().is_empty());
        let writable = can_write(path) && directory.is_none_or(can_write);
        Self::open_read_only_as(path, !writable)
    }

    fn open_read_only_as(path: &Path, immutable: bool) -> Result<Self, StoreError> {
        let mode = if immutable { "immutable=1" } else { "mode=ro" };
        let uri = format!("file:{}?{mode}", uri_path(path));
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(uri, flags).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(sqlite)?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        let version = store.schema_version()?;
        if version != schema::MIGRATIONS.len() {
            return Err(StoreError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "schema version {version}, this repro reads {}: open it once with a \
                     writing command (`repro run`) to migrate it, or use the repro that wrote it",
                    schema::MIGRATIONS.len()
                ),
            });
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql<T>(&self, result: rusqlite::Result<T>) -> Result<T, StoreError> {
        result.map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        let result = self
            .conn
            .busy_timeout(Duration::from_secs(30))
            .and_then(|_| {
                self.conn
                    .pragma_update_and_check(None, "journal_mode", "WAL", |row| {
                        row.get::<_, String>(0)
                    })
            })
            .and_then(|_| self.conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|_| self.conn.pragma_update(None, "foreign_keys", "ON"));
        self.sql(result)
    }

    /// The schema version in the file.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        let version: Option<i64> = self.sql(self.conn.query_row(
            "SELECT max(version) FROM schema_migrations",
            [],
            |row| row.get(0),
        ))?;
        Ok(version.unwrap_or(0) as usize)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let result = self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        );
        self.sql(result)?;
        let current = self.schema_version()?;
        if current > schema::MIGRATIONS.len() {
            return Err(StoreError::Invalid {
                path: self.path.clone(),
                message: format!(
                    "schema version {current} is newer than this repro understands ({}); use a newer repro",
                    schema::MIGRATIONS.len()
                ),
            });
        }
        for (index, migration) in schema::MIGRATIONS.iter().enumerate().skip(current) {
            let version = index + 1;
            let sql_error = sqlite_error(self.path.clone());
            let tx = self.conn.transaction().map_err(&sql_error)?;
            tx.execute_batch(migration).map_err(&sql_error)?;
            tx.execute(
                &format!("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, {NOW})"),
                params![version as i64],
            )
            .map_err(&sql_error)?;
            tx.commit().map_err(&sql_error)?;
        }
        Ok(())
    }

    fn transaction(&mut self) -> Result<Transaction<'_>, StoreError> {
        let path = self.path.clone();
        self.conn
            .transaction()
            .map_err(|source| StoreError::Sqlite { path, source })
    }

    /// Records (or updates) an experiment by name; returns its id.
    pub fn upsert_experiment(
        &mut self,
        name: &str,
        path: &str,
        description: &str,
        file_sha256: &str,
    ) -> Result<i64, StoreError> {
        let result = self.conn.query_row(
            &format!(
                "INSERT INTO experiments (name, path, description, file_sha256, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, {NOW}, {NOW})
                 ON CONFLICT(name) DO UPDATE SET path = excluded.path,
                     description = excluded.description, file_sha256 = excluded.file_sha256,
                     updated_at = excluded.updated_at
                 RETURNING id"
            ),
            params![name, path, description, file_sha256],
            |row| row.get(0),
        );
        self.sql(result)
    }

    /// Keeps the text of the experiment file that is being run.
    pub fn set_experiment_text(
        &mut self,
        experiment_id: i64,
        text: &str,
    ) -> Result<(), StoreError> {
        let result = self.conn.execute(
            "UPDATE experiments SET text = ?2 WHERE id = ?1",
            params![experiment_id, text],
        );
        self.sql(result).map(|_| ())
    }

    /// The experiment called `name`, if recorded.
    pub fn experiment(&self, name: &str) -> Result<Option<ExperimentRow>, StoreError> {
        let result = self
            .conn
            .query_row(
                "SELECT id, name, path, description, updated_at, text FROM experiments WHERE name = ?1",
                params![name],
                experiment_row,
            )
            .optional();
        self.sql(result)
    }

    /// Every recorded experiment, by name.
    pub fn experiments(&self) -> Result<Vec<ExperimentRow>, StoreError> {
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT id, name, path, description, updated_at, text FROM experiments ORDER BY name",
            )?;
            let rows = statement.query_map([], experiment_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sql(result)
    }

    /// Starts a run of `experiment_id`; returns the run id.
    pub fn begin_run(
        &mut self,
        experiment_id: i64,
        command: &str,
        executor: &str,
        jobs: usize,
        environment: &Environment,
    ) -> Result<i64, StoreError> {
        let result = self.conn.query_row(
            &format!(
                "INSERT INTO runs (experiment_id, command, status, started_at, git_commit, git_dirty,
                     repro_version, rustc_version, cpu_model, threads, hostname, executor, jobs)
                 VALUES (?1, ?2, 'running', {NOW}, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 RETURNING id"
            ),
            params![
                experiment_id,
                command,
                environment.git_commit,
                environment.git_dirty,
                environment.repro_version,
                environment.rustc_version,
                environment.cpu_model,
                environment.threads as i64,
                environment.hostname,
                executor,
                jobs as i64
            ],
            |row| row.get(0),
        );
        self.sql(result)
    }

    /// Ends a run with `status` (`succeeded`, `failed`, `interrupted`) and its counts.
    pub fn end_run(
        &mut self,
        run_id: i64,
        status: &str,
        counts: RunCounts,
    ) -> Result<(), StoreError> {
        let result = self.conn.execute(
            &format!(
                "UPDATE runs SET status = ?2, ended_at = {NOW}, tasks_total = ?3, tasks_run = ?4,
                     tasks_cached = ?5, tasks_failed = ?6 WHERE id = ?1"
            ),
            params![
                run_id,
                status,
                counts.total as i64,
                counts.run as i64,
                counts.cached as i64,
                counts.failed as i64
            ],
        );
        self.sql(result).map(|_| ())
    }

    /// Records a plan in one transaction: tasks (new ones as `pending`; known ones keep their
    /// state), their upstream edges, and the experiment's cells, which become its active set.
    pub fn record_plan(
        &mut self,
        experiment_id: i64,
        tasks: &[TaskRecord],
        cells: &[CellRecord],
    ) -> Result<(), StoreError> {
        let sql_error = sqlite_error(self.path.clone());
        let tx = self.transaction()?;
        {
            let mut insert_task = tx
                .prepare(&format!(
                    "INSERT INTO tasks (key, stage, inputs, status, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'pending', {NOW}, {NOW}) ON CONFLICT(key) DO NOTHING"
                ))
                .map_err(&sql_error)?;
            let mut insert_edge = tx
                .prepare(
                    "INSERT OR IGNORE INTO task_upstream (task_key, upstream_key) VALUES (?1, ?2)",
                )
                .map_err(&sql_error)?;
            for task in tasks {
                insert_task
                    .execute(params![task.key, task.stage.name(), task.inputs])
                    .map_err(&sql_error)?;
            }
            for task in tasks {
                for upstream in &task.upstream {
                    insert_edge
                        .execute(params![task.key, upstream])
                        .map_err(&sql_error)?;
                }
            }
            tx.execute(
                "UPDATE cells SET active = 0 WHERE experiment_id = ?1",
                params![experiment_id],
            )
            .map_err(&sql_error)?;
            let mut upsert_cell = tx
                .prepare(
                    "INSERT INTO cells (experiment_id, key, position, params, active)
                     VALUES (?1, ?2, ?3, ?4, 1)
                     ON CONFLICT(experiment_id, key) DO UPDATE SET position = excluded.position,
                         params = excluded.params, active = 1
                     RETURNING id",
                )
                .map_err(&sql_error)?;
            let mut unlink = tx
                .prepare("DELETE FROM cell_tasks WHERE cell_id = ?1")
                .map_err(&sql_error)?;
            let mut link = tx
                .prepare(
                    "INSERT OR IGNORE INTO cell_tasks (cell_id, stage, task_key) VALUES (?1, ?2, ?3)",
                )
                .map_err(&sql_error)?;
            for (position, cell) in cells.iter().enumerate() {
                let cell_id: i64 = upsert_cell
                    .query_row(
                        params![experiment_id, cell.key, position as i64, cell.params],
                        |row| row.get(0),
                    )
                    .map_err(&sql_error)?;
                unlink.execute(params![cell_id]).map_err(&sql_error)?;
                for (stage, task_key) in &cell.tasks {
                    link.execute(params![cell_id, stage.name(), task_key])
                        .map_err(&sql_error)?;
                }
            }
        }
        tx.commit().map_err(&sql_error)
    }

    /// A task's recorded status, if the task is known.
    pub fn task_status(&self, key: &str) -> Result<Option<TaskStatus>, StoreError> {
        let result = self
            .conn
            .query_row(
                "SELECT status FROM tasks WHERE key = ?1",
                params![key],
                |row| row.get::<_, String>(0),
            )
            .optional();
        let status = self.sql(result)?;
        Ok(status.and_then(|s| TaskStatus::parse(&s)))
    }

    /// The canonical inputs of tasks of `stage` that cells of this experiment used before,
    /// most recent first (to explain what changed).
    pub fn previous_inputs(
        &self,
        experiment_id: i64,
        stage: Stage,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT DISTINCT t.key, t.inputs FROM tasks t
                 JOIN cell_tasks ct ON ct.task_key = t.key
                 JOIN cells c ON c.id = ct.cell_id
                 WHERE c.experiment_id = ?1 AND t.stage = ?2
                 ORDER BY t.updated_at DESC",
            )?;
            let rows = statement.query_map(params![experiment_id, stage.name()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sql(result)
    }

    /// The status and last error of the latest attempt of `key`.
    pub fn last_error(&self, key: &str) -> Result<Option<String>, StoreError> {
        let result = self
            .conn
            .query_row(
                "SELECT error FROM attempts WHERE task_key = ?1 ORDER BY number DESC LIMIT 1",
                params![key],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional();
        Ok(self.sql(result)?.flatten())
    }

    /// Starts a new attempt of `task_key` in `run_id` and marks the task running. Its log is
    /// `<log_dir>/attempt-<number>.log`.
    pub fn start_attempt(
        &mut self,
        task_key: &str,
        run_id: i64,
        log_dir: &str,
    ) -> Result<AttemptId, StoreError> {
        let sql_error = sqlite_error(self.path.clone());
        let tx = self.transaction()?;
        let number: i64 = tx
            .query_row(
                "SELECT coalesce(max(number), 0) + 1 FROM attempts WHERE task_key = ?1",
                params![task_key],
                |row| row.get(0),
            )
            .map_err(&sql_error)?;
        let id: i64 = tx
            .query_row(
                &format!(
                    "INSERT INTO attempts (task_key, run_id, number, status, started_at, log_path)
                     VALUES (?1, ?2, ?3, 'running', {NOW}, ?4) RETURNING id"
                ),
                params![
                    task_key,
                    run_id,
                    number,
                    format!("{log_dir}/attempt-{number}.log")
                ],
                |row| row.get(0),
            )
            .map_err(&sql_error)?;
        tx.execute(
            &format!("UPDATE tasks SET status = 'running', updated_at = {NOW} WHERE key = ?1"),
            params![task_key],
        )
        .map_err(&sql_error)?;
        tx.commit().map_err(&sql_error)?;
        Ok(AttemptId { id, number })
    }

    /// Records a successful attempt and its outcome in one transaction: the task's metrics,
    /// artifacts and training steps are replaced by this attempt's, and the task becomes
    /// `succeeded`.
    pub fn record_success(
        &mut self,
        task_key: &str,
        attempt: AttemptId,
        outcome: &TaskOutcome,
    ) -> Result<(), StoreError> {
        let sql_error = sqlite_error(self.path.clone());
        let tx = self.transaction()?;
        tx.execute(
            &format!(
                "UPDATE attempts SET status = 'succeeded', ended_at = {NOW}, seconds = ?2,
                     exit_code = 0 WHERE id = ?1"
            ),
            params![attempt.id, outcome.seconds],
        )
        .map_err(&sql_error)?;
        for table in ["metrics", "query_metrics", "artifacts", "training_steps"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE task_key = ?1"),
                params![task_key],
            )
            .map_err(&sql_error)?;
        }
        insert_outcome(&tx, task_key, attempt, outcome).map_err(&sql_error)?;
        tx.execute(
            &format!("UPDATE tasks SET status = 'succeeded', updated_at = {NOW} WHERE key = ?1"),
            params![task_key],
        )
        .map_err(&sql_error)?;
        tx.commit().map_err(&sql_error)
    }

    /// Records a failed or interrupted attempt; the task takes the same status.
    pub fn record_failure(
        &mut self,
        task_key: &str,
        attempt: AttemptId,
        end: AttemptEnd,
        seconds: f64,
        exit_code: Option<i32>,
        error: &str,
    ) -> Result<(), StoreError> {
        let sql_error = sqlite_error(self.path.clone());
        let tx = self.transaction()?;
        tx.execute(
            &format!(
                "UPDATE attempts SET status = ?2, ended_at = {NOW}, seconds = ?3, exit_code = ?4,
                     error = ?5 WHERE id = ?1"
            ),
            params![attempt.id, end.name(), seconds, exit_code, error],
        )
        .map_err(&sql_error)?;
        let killed_before: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM attempts WHERE task_key = ?1 AND id != ?2
                     AND status = 'killed' AND id = (SELECT max(id) FROM attempts
                         WHERE task_key = ?1 AND id != ?2))",
                params![task_key, attempt.id],
                |row| row.get(0),
            )
            .map_err(&sql_error)?;
        let status = if end == AttemptEnd::Killed && killed_before {
            TaskStatus::Failed
        } else {
            end.task_status()
        };
        tx.execute(
            &format!("UPDATE tasks SET status = ?2, updated_at = {NOW} WHERE key = ?1"),
            params![task_key, status.name()],
        )
        .map_err(&sql_error)?;
        tx.commit().map_err(&sql_error)
    }

    /// Records the batch system's id of a submitted attempt.
    pub fn set_attempt_job(&mut self, attempt: AttemptId, job_id: &str) -> Result<(), StoreError> {
        let result = self.conn.execute(
            "UPDATE attempts SET job_id = ?2 WHERE id = ?1",
            params![attempt.id, job_id],
        );
        self.sql(result).map(|_| ())
    }

    /// The batch-system ids of attempts still marked running: jobs a scheduler that died
    /// left in the queue, to be cancelled before their tasks run again.
    pub fn abandoned_jobs(&self) -> Result<Vec<String>, StoreError> {
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT job_id FROM attempts WHERE status = 'running' AND job_id IS NOT NULL
                 ORDER BY id",
            )?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sql(result)
    }

    /// After a scheduler died (`kill -9`, power loss): attempts and runs still marked
    /// running become `lost` / `interrupted`, their tasks `interrupted`. Call only while
    /// holding the results directory's lock, when no other scheduler can be running.
    pub fn recover_abandoned(&mut self) -> Result<usize, StoreError> {
        let sql_error = sqlite_error(self.path.clone());
        let tx = self.transaction()?;
        let lost = tx
            .execute(
                &format!(
                    "UPDATE attempts SET status = 'lost', ended_at = {NOW},
                         error = 'the scheduler stopped before this attempt finished'
                     WHERE status = 'running'"
                ),
                [],
            )
            .map_err(&sql_error)?;
        tx.execute(
            &format!(
                "UPDATE tasks SET status = 'interrupted', updated_at = {NOW} WHERE status = 'running'"
            ),
            [],
        )
        .map_err(&sql_error)?;
        tx.execute(
            &format!(
                "UPDATE runs SET status = 'interrupted', ended_at = {NOW} WHERE status = 'running'"
            ),
            [],
        )
        .map_err(&sql_error)?;
        tx.commit().map_err(&sql_error)?;
        Ok(lost)
    }

    /// The sha256 remembered for `path` if its stamp (size, modification and change times,
    /// inode) still matches.
    pub fn cached_file_hash(
        &self,
        path: &str,
        stamp: &FileStamp,
    ) -> Result<Option<String>, StoreError> {
        let result = self
            .conn
            .query_row(
                "SELECT sha256 FROM file_hashes WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3
                     AND ctime_ns = ?4 AND inode = ?5",
                params![
                    path,
                    stamp.size as i64,
                    stamp.mtime_ns,
                    stamp.ctime_ns,
                    stamp.inode as i64
                ],
                |row| row.get(0),
            )
            .optional();
        self.sql(result)
    }

    pub fn remember_file_hash(
        &mut self,
        path: &str,
        stamp: &FileStamp,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let result = self.conn.execute(
            "INSERT INTO file_hashes (path, size, mtime_ns, ctime_ns, inode, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                 ctime_ns = excluded.ctime_ns, inode = excluded.inode, sha256 = excluded.sha256",
            params![
                path,
                stamp.size as i64,
                stamp.mtime_ns,
                stamp.ctime_ns,
                stamp.inode as i64,
                sha256
            ],
        );
        self.sql(result).map(|_| ())
    }

    /// The experiment's active cells in plan order, with task states and the metrics of
    /// their succeeded tasks of `stages` (eval and rerank, say). Metrics are merged in the
    /// order of `stages`: a later stage's value wins a name both report.
    pub fn cells(&self, experiment_id: i64, stages: &[Stage]) -> Result<Vec<CellRow>, StoreError> {
        let result = (|| {
            let mut cells_statement = self.conn.prepare(
                "SELECT id, position, key, params FROM cells
                 WHERE experiment_id = ?1 AND active = 1 ORDER BY position",
            )?;
            let mut tasks_statement = self.conn.prepare(
                "SELECT ct.stage, t.key, t.status FROM cell_tasks ct JOIN tasks t ON t.key = ct.task_key
                 WHERE ct.cell_id = ?1 ORDER BY ct.stage",
            )?;
            let mut metrics_statement = self.conn.prepare(
                "SELECT m.measure, m.value FROM metrics m
                 JOIN cell_tasks ct ON ct.task_key = m.task_key
                 JOIN tasks t ON t.key = m.task_key
                 WHERE ct.cell_id = ?1 AND ct.stage = ?2 AND t.status = 'succeeded'",
            )?;
            let raw: Vec<(i64, i64, String, String)> = cells_statement
                .query_map(params![experiment_id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut cells = Vec::with_capacity(raw.len());
            for (id, position, key, params_json) in raw {
                let tasks = tasks_statement
                    .query_map(params![id], |row| {
                        let status: String = row.get(2)?;
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            TaskStatus::parse(&status).unwrap_or(TaskStatus::Pending),
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut metrics = BTreeMap::new();
                for stage in stages {
                    let rows = metrics_statement
                        .query_map(params![id, stage.name()], |row| {
                            Ok((row.get::<_, String>(0)?, row.get::<_, f64>(1)?))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    metrics.extend(rows);
                }
                cells.push(CellRow {
                    position,
                    key,
                    params: serde_json::from_str(&params_json).unwrap_or_default(),
                    tasks,
                    metrics,
                });
            }
            Ok(cells)
        })();
        self.sql(result)
    }

    /// The tasks of the experiment's active cells, in stage order.
    pub fn tasks(&self, experiment_id: i64) -> Result<Vec<TaskRow>, StoreError> {
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT t.key, t.stage, t.status,
                     (SELECT count(*) FROM attempts a WHERE a.task_key = t.key),
                     (SELECT a.seconds FROM attempts a WHERE a.task_key = t.key
                          AND a.ended_at IS NOT NULL ORDER BY a.number DESC LIMIT 1),
                     (SELECT a.error FROM attempts a WHERE a.task_key = t.key
                          ORDER BY a.number DESC LIMIT 1),
                     count(DISTINCT c.id)
                 FROM tasks t
                 JOIN cell_tasks ct ON ct.task_key = t.key
                 JOIN cells c ON c.id = ct.cell_id AND c.experiment_id = ?1 AND c.active = 1
                 GROUP BY t.key
                 ORDER BY min(c.position), t.stage",
            )?;
            let rows = statement.query_map(params![experiment_id], |row| {
                let status: String = row.get(2)?;
                Ok(TaskRow {
                    key: row.get(0)?,
                    stage: row.get(1)?,
                    status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Pending),
                    attempts: row.get(3)?,
                    seconds: row.get(4)?,
                    error: row.get(5)?,
                    cells: row.get(6)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sql(result)
    }

    /// The experiment's runs, newest first.
    pub fn runs(&self, experiment_id: i64) -> Result<Vec<RunRow>, StoreError> {
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT id, status, started_at, ended_at, command, git_commit, git_dirty,
                     repro_version, hostname, cpu_model, tasks_total, tasks_run, tasks_cached,
                     tasks_failed, rustc_version, threads, executor, jobs
                 FROM runs WHERE experiment_id = ?1 ORDER BY id DESC",
            )?;
            let rows = statement.query_map(params![experiment_id], |row| {
                Ok(RunRow {
                    id: row.get(0)?,
                    status: row.get(1)?,
                    started_at: row.get(2)?,
                    ended_at: row.get(3)?,
                    command: row.get(4)?,
                    git_commit: row.get(5)?,
                    git_dirty: row.get(6)?,
                    repro_version: row.get(7)?,
                    hostname: row.get(8)?,
                    cpu_model: row.get(9)?,
                    tasks_total: row.get(10)?,
                    tasks_run: row.get(11)?,
                    tasks_cached: row.get(12)?,
                    tasks_failed: row.get(13)?,
                    rustc_version: row.get(14)?,
                    threads: row.get(15)?,
                    executor: row.get(16)?,
                    jobs: row.get(17)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sql(result)
    }

    /// Per-query values of `measure` for a task.
    pub fn query_metrics(
        &self,
        task_key: &str,
        measure: &str,
    ) -> Result<BTreeMap<String, f64>, StoreError> {
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT query_id, value FROM query_metrics WHERE task_key = ?1 AND measure = ?2",
            )?;
            let rows = statement.query_map(params![task_key, measure], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect::<rusqlite::Result<BTreeMap<_, _>>>()
        })();
        self.sql(result)
    }

    /// A task's aggregate measures as recorded (measure → value).
    pub fn task_metrics(&self, task_key: &str) -> Result<BTreeMap<String, f64>, StoreError> {
        let result = (|| {
            let mut statement = self
                .conn
                .prepare("SELECT measure, value FROM metrics WHERE task_key = ?1")?;
            let rows =
                statement.query_map(params![task_key], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<rusqlite::Result<BTreeMap<_, _>>>()
        })();
        self.sql(result)
    }

    /// Records one depth's benchmark; returns its id.
    pub fn record_benchmark(&mut self, record: &BenchmarkRecord) -> Result<i64, StoreError> {
        let env = &record.environment;
        let result = self.conn.query_row(
            &format!(
                "INSERT INTO benchmarks (recorded_at, model, model_sha256, texts, documents, tokens,
                     max_len, batch, input, depth, runs, seconds, docs_per_second,
                     docs_per_second_min, docs_per_second_max, tokens_per_second, features,
                     threads, cpu_model, hostname, repro_version, git_commit, git_dirty)
                 VALUES ({NOW}, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18, ?19, ?20, ?21, ?22)
                 RETURNING id"
            ),
            params![
                record.model,
                record.model_sha256,
                record.texts,
                record.documents as i64,
                record.tokens as i64,
                record.max_len as i64,
                record.batch as i64,
                record.input,
                record.depth as i64,
                record.runs as i64,
                record.seconds,
                record.docs_per_second,
                record.docs_per_second_min,
                record.docs_per_second_max,
                record.tokens_per_second,
                record.features,
                env.threads as i64,
                env.cpu_model,
                env.hostname,
                env.repro_version,
                env.git_commit,
                env.git_dirty
            ],
            |row| row.get(0),
        );
        self.sql(result)
    }

    /// The optimiser steps a training task recorded, in step order (empty for other tasks
    /// and for tasks not yet succeeded).
    pub fn training_steps(&self, task_key: &str) -> Result<Vec<TrainingStep>, StoreError> {
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT step, epoch, loss, learning_rate, grad_norm FROM training_steps
                 WHERE task_key = ?1 ORDER BY step",
            )?;
            let rows = statement.query_map(params![task_key], |row| {
                Ok(TrainingStep {
                    step: row.get::<_, i64>(0)? as usize,
                    epoch: row.get::<_, i64>(1)? as usize,
                    loss: row.get(2)?,
                    learning_rate: row.get(3)?,
                    grad_norm: row.get(4)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sql(result)
    }

    /// Every per-query value of a task: (measure, query id, value), sorted.
    pub fn all_query_metrics(
        &self,
        task_key: &str,
    ) -> Result<Vec<(String, String, f64)>, StoreError> {
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT measure, query_id, value FROM query_metrics WHERE task_key = ?1
                 ORDER BY measure, query_id",
            )?;
            let rows = statement.query_map(params![task_key], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sql(result)
    }

    /// Counts of rows per table, for consistency checks and `repro status`.
    pub fn count(&self, table: &str) -> Result<i64, StoreError> {
        const TABLES: &[&str] = &[
            "experiments",
            "runs",
            "tasks",
            "cells",
            "attempts",
            "metrics",
            "query_metrics",
            "artifacts",
            "benchmarks",
            "training_steps",
        ];
        if !TABLES.contains(&table) {
            return Err(StoreError::Invalid {
                path: self.path.clone(),
                message: format!("no table `{table}`"),
            });
        }
        let result = self
            .conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            });
        self.sql(result)
    }
}

/// Maps SQLite errors to [`StoreError::Sqlite`] naming the store's file; owns the path so it
/// can be used while a transaction borrows the store.
fn sqlite_error(path: PathBuf) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    }
}

fn experiment_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ExperimentRow> {
    Ok(ExperimentRow {
        id: row.get(0)?,
        name: row.get(1)?,
        path: row.get(2)?,
        description: row.get(3)?,
        updated_at: row.get(4)?,
        text: row.get(5)?,
    })
}

/// Whether this process may write `path` (the kernel's answer: permissions, read-only
/// mounts, and root's exemption from the former).
fn can_write(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; access(2) reads it and nothing else.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

/// `path` as the path of an SQLite URI: the characters a URI gives a meaning to escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            other => out.push(other),
        }
    }
    out
}

/// Inserts what a succeeded attempt produced: its metrics, per-query values, artifacts and
/// training steps.
fn insert_outcome(
    tx: &rusqlite::Transaction,
    task_key: &str,
    attempt: AttemptId,
    outcome: &TaskOutcome,
) -> rusqlite::Result<()> {
    let mut metric = tx.prepare(
        "INSERT INTO metrics (task_key, attempt_id, measure, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (measure, value) in &outcome.metrics {
        metric.execute(params![task_key, attempt.id, measure, value])?;
    }
    let mut query_metric = tx.prepare(
        "INSERT INTO query_metrics (task_key, measure, query_id, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (query, values) in &outcome.per_query {
        for (measure, value) in values {
            query_metric.execute(params![task_key, measure, query, value])?;
        }
    }
    let mut artifact =
        tx.prepare("INSERT INTO artifacts (task_key, name, path, bytes) VALUES (?1, ?2, ?3, ?4)")?;
    for item in &outcome.artifacts {
        artifact.execute(params![task_key, item.name, item.path, item.bytes as i64])?;
    }
    let mut step = tx.prepare(
        "INSERT INTO training_steps (task_key, step, epoch, loss, learning_rate, grad_norm)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for record in &outcome.steps {
        step.execute(params![
            task_key,
            record.step as i64,
            record.epoch as i64,
            record.loss,
            record.learning_rate,
            record.grad_norm
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Artifact;

    fn environment() -> Environment {
        Environment {
            git_commit: Some("abc".into()),
            git_dirty: Some(false),
            repro_version: "0".into(),
            rustc_version: "rustc".into(),
            cpu_model: "cpu".into(),
            threads: 2,
            hostname: "host".into(),
        }
    }

    fn plan(store: &mut Store, experiment: i64) {
        let tasks = vec![
            TaskRecord {
                key: "enc".into(),
                stage: Stage::Encode,
                inputs: "{}".into(),
                upstream: vec![],
            },
            TaskRecord {
                key: "ev".into(),
                stage: Stage::Eval,
                inputs: "{\"a\":1}".into(),
                upstream: vec!["enc".into()],
            },
        ];
        let cells = vec![CellRecord {
            key: "c1".into(),
            params: "{\"layer\":1}".into(),
            tasks: vec![(Stage::Encode, "enc".into()), (Stage::Eval, "ev".into())],
        }];
        store.record_plan(experiment, &tasks, &cells).unwrap();
    }

    #[test]
    fn read_only_opens_read_and_never_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd ?#% dir/repro.sqlite");
        let mut store = Store::open(&path).unwrap();
        store.upsert_experiment("e", "e.toml", "", "00").unwrap();
        drop(store);
        for immutable in [false, true] {
            let mut store = Store::open_read_only_as(&path, immutable).unwrap();
            let names: Vec<String> = store
                .experiments()
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(names, ["e"], "immutable {immutable}");
            assert!(
                store.upsert_experiment("f", "f.toml", "", "00").is_err(),
                "a read-only store took a write (immutable {immutable})"
            );
        }
        assert_eq!(
            Store::open_read_only(&path)
                .unwrap()
                .experiments()
                .unwrap()
                .len(),
            1
        );
        let missing = dir.path().join("none.sqlite");
        assert!(matches!(
            Store::open_read_only(&missing),
            Err(StoreError::Missing(_))
        ));
    }

    #[test]
    fn a_store_of_another_schema_is_not_read_without_migrating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repro.sqlite");
        let store = Store::open(&path).unwrap();
        store
            .conn
            .execute("DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)", [])
            .unwrap();
        drop(store);
        let err = Store::open_read_only(&path).err().unwrap().to_string();
        assert!(err.contains("to migrate"), "{err}");
    }

    #[test]
    fn migrations_apply_once_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r/repro.sqlite");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::MIGRATIONS.len());
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::MIGRATIONS.len());
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn attempts_accumulate_and_success_replaces_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("repro.sqlite")).unwrap();
        let experiment = store.upsert_experiment("e", "e.toml", "", "sha").unwrap();
        assert_eq!(
            store.upsert_experiment("e", "e.toml", "d", "sha2").unwrap(),
            experiment
        );
        plan(&mut store, experiment);
        plan(&mut store, experiment);
        assert_eq!(store.task_status("ev").unwrap(), Some(TaskStatus::Pending));
        let run = store
            .begin_run(experiment, "repro run", "local", 1, &environment())
            .unwrap();
        let first = store.start_attempt("ev", run, "log").unwrap();
        store
            .record_failure("ev", first, AttemptEnd::Failed, 0.5, Some(1), "boom")
            .unwrap();
        assert_eq!(store.task_status("ev").unwrap(), Some(TaskStatus::Failed));
        assert_eq!(store.last_error("ev").unwrap().as_deref(), Some("boom"));
        let mut outcome = TaskOutcome {
            seconds: 1.0,
            ..TaskOutcome::default()
        };
        outcome.metrics.insert("ndcg_cut_10".into(), 0.5);
        outcome
            .per_query
            .insert("q1".into(), [("ndcg_cut_10".to_string(), 0.5)].into());
        outcome.artifacts.push(Artifact {
            name: "run".into(),
            path: "run.trec".into(),
            bytes: 10,
        });
        for _ in 0..2 {
            let attempt = store.start_attempt("ev", run, "log").unwrap();
            store.record_success("ev", attempt, &outcome).unwrap();
        }
        assert_eq!(store.count("attempts").unwrap(), 3);
        assert_eq!(store.count("metrics").unwrap(), 1);
        assert_eq!(store.count("query_metrics").unwrap(), 1);
        let cells = store.cells(experiment, &[Stage::Eval]).unwrap();
        assert_eq!(cells.len(), 1);
        assert_eq!(cells[0].metrics["ndcg_cut_10"], 0.5);
        assert!(store.cells(experiment, &[Stage::Encode]).unwrap()[0]
            .metrics
            .is_empty());
        let tasks = store.tasks(experiment).unwrap();
        assert_eq!(tasks.len(), 2);
        let eval = tasks.iter().find(|t| t.key == "ev").unwrap();
        assert_eq!((eval.attempts, eval.status), (3, TaskStatus::Succeeded));
    }

    #[test]
    fn abandoned_attempts_are_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("repro.sqlite")).unwrap();
        let experiment = store.upsert_experiment("e", "e.toml", "", "sha").unwrap();
        plan(&mut store, experiment);
        let run = store
            .begin_run(experiment, "repro run", "local", 1, &environment())
            .unwrap();
        store.start_attempt("enc", run, "log").unwrap();
        assert_eq!(store.recover_abandoned().unwrap(), 1);
        assert_eq!(
            store.task_status("enc").unwrap(),
            Some(TaskStatus::Interrupted)
        );
        assert_eq!(store.runs(experiment).unwrap()[0].status, "interrupted");
        let next = store.start_attempt("enc", run, "log").unwrap();
        assert_eq!(next.number, 2);
    }

    fn step(step: usize, loss: f64) -> TrainingStep {
        TrainingStep {
            step,
            epoch: step / 2,
            loss,
            learning_rate: 1e-5 * step as f64,
            grad_norm: 0.5,
        }
    }

    #[test]
    fn training_steps_are_replaced_by_the_latest_success() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("repro.sqlite")).unwrap();
        let experiment = store.upsert_experiment("e", "e.toml", "", "sha").unwrap();
        plan(&mut store, experiment);
        let run = store
            .begin_run(experiment, "repro run", "local", 1, &environment())
            .unwrap();
        let first = TaskOutcome {
            steps: (0..4).map(|i| step(i, 1.0 / (i + 1) as f64)).collect(),
            ..TaskOutcome::default()
        };
        let attempt = store.start_attempt("enc", run, "log").unwrap();
        store.record_success("enc", attempt, &first).unwrap();
        assert_eq!(store.training_steps("enc").unwrap(), first.steps);
        let second = TaskOutcome {
            steps: vec![step(0, 0.25), step(1, 0.125)],
            ..TaskOutcome::default()
        };
        let attempt = store.start_attempt("enc", run, "log").unwrap();
        store.record_success("enc", attempt, &second).unwrap();
        assert_eq!(store.training_steps("enc").unwrap(), second.steps);
        assert_eq!(store.count("training_steps").unwrap(), 2);
        assert!(store.training_steps("ev").unwrap().is_empty());
    }

    #[test]
    fn cells_merge_the_metrics_of_every_result_stage() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("repro.sqlite")).unwrap();
        let experiment = store.upsert_experiment("e", "e.toml", "", "sha").unwrap();
        let task = |key: &str, stage| TaskRecord {
            key: key.into(),
            stage,
            inputs: "{}".into(),
            upstream: vec![],
        };
        let tasks = vec![task("ev", Stage::Eval), task("rr", Stage::Rerank)];
        let cells = vec![CellRecord {
            key: "c1".into(),
            params: "{}".into(),
            tasks: vec![(Stage::Eval, "ev".into()), (Stage::Rerank, "rr".into())],
        }];
        store.record_plan(experiment, &tasks, &cells).unwrap();
        let run = store
            .begin_run(experiment, "repro run", "local", 1, &environment())
            .unwrap();
        for (key, metrics) in [
            ("ev", vec![("ndcg_cut_10", 0.5)]),
            (
                "rr",
                vec![("reranked_ndcg_cut_10", 0.75), ("rerank_pairs", 10.0)],
            ),
        ] {
            let outcome = TaskOutcome {
                metrics: metrics
                    .into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect(),
                ..TaskOutcome::default()
            };
            let attempt = store.start_attempt(key, run, "log").unwrap();
            store.record_success(key, attempt, &outcome).unwrap();
        }
        let cells = store
            .cells(experiment, &[Stage::Eval, Stage::Rerank])
            .unwrap();
        let names: Vec<&str> = cells[0].metrics.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec!["ndcg_cut_10", "rerank_pairs", "reranked_ndcg_cut_10"]
        );
        let eval_only = store.cells(experiment, &[Stage::Eval]).unwrap();
        assert_eq!(eval_only[0].metrics.len(), 1);
    }

    #[test]
    fn a_store_of_the_previous_schema_upgrades_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repro.sqlite");
        // The store as the previous repro (schema 2) left it, with a recorded task.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .unwrap();
            for (index, migration) in schema::MIGRATIONS[..2].iter().enumerate() {
                conn.execute_batch(migration).unwrap();
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 'then')",
                    params![index as i64 + 1],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO tasks (key, stage, inputs, status, created_at, updated_at)
                 VALUES ('old', 'eval', '{}', 'succeeded', 'then', 'then')",
                [],
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::MIGRATIONS.len());
        assert_eq!(store.count("tasks").unwrap(), 1);
        assert_eq!(store.count("training_steps").unwrap(), 0);
        assert_eq!(
            store.task_status("old").unwrap(),
            Some(TaskStatus::Succeeded)
        );
        // The upgraded store records steps like a new one.
        let experiment = store.upsert_experiment("e", "e.toml", "", "sha").unwrap();
        plan(&mut store, experiment);
        let run = store
            .begin_run(experiment, "repro run", "local", 1, &environment())
            .unwrap();
        let attempt = store.start_attempt("enc", run, "log").unwrap();
        let outcome = TaskOutcome {
            steps: vec![step(0, 0.5)],
            ..TaskOutcome::default()
        };
        store.record_success("enc", attempt, &outcome).unwrap();
        assert_eq!(store.training_steps("enc").unwrap(), outcome.steps);
    }

    #[test]
    fn file_hashes_are_keyed_by_size_times_and_inode() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("repro.sqlite")).unwrap();
        let stamp = FileStamp {
            size: 3,
            mtime_ns: 7,
            ctime_ns: 9,
            inode: 11,
        };
        store.remember_file_hash("/a", &stamp, "h").unwrap();
        assert_eq!(
            store.cached_file_hash("/a", &stamp).unwrap().as_deref(),
            Some("h")
        );
        let changed = [
            FileStamp {
                size: 4,
                ..stamp.clone()
            },
            FileStamp {
                mtime_ns: 8,
                ..stamp.clone()
            },
            FileStamp {
                ctime_ns: 10,
                ..stamp.clone()
            },
            FileStamp {
                inode: 12,
                ..stamp.clone()
            },
        ];
        for other in changed {
            assert_eq!(
                store.cached_file_hash("/a", &other).unwrap(),
                None,
                "{other:?}"
            );
        }
    }
}
