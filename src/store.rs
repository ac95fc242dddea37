//! The data dir's state database and its single-writer lock.
//!
//! One SQLite file (`state.sqlite`) holds what ingestion must remember between runs: the
//! entity store (latest row per key, tombstones included — `catalog::local`), the ledger of
//! applied objects (`ingest::ledger`), the quarantine (`ingest::quarantine`) and the embedding
//! cache (`embed::cache`). Each of those modules adds its own `impl StateDb` block, so the
//! storage of a stage sits next to the stage. SQLite in WAL mode survives `kill -9` at any
//! point; the lock file makes a second writer fail at once instead of interleaving.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("creating data dir {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another askiam process is writing to {0} (its lock is held); stop it or use another --data-dir")]
    Locked(PathBuf),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// Held for as long as a process may write to a data dir. Dropping it releases the lock;
/// so does the process dying, because it is an OS file lock, not a marker file.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    pub path: PathBuf,
}

impl WriterLock {
    pub fn acquire(data_dir: &Path) -> Result<WriterLock, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io { path: data_dir.into(), source })?;
        let path = data_dir.join("writer.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => Ok(WriterLock { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(data_dir.into())),
            Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io { path, source }),
        }
    }
}

pub struct StateDb {
    conn: Mutex<Connection>,
    pub path: PathBuf,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS rows (
    table_name TEXT NOT NULL,
    key        TEXT NOT NULL,
    version    TEXT NOT NULL,           -- Version::to_key(), byte order = version order
    deleted    INTEGER NOT NULL,        -- 1: tombstone; data keeps the last known values
    data       TEXT NOT NULL,           -- JSON object of column -> text or null
    object     TEXT NOT NULL,           -- the object the winning change came from
    PRIMARY KEY (table_name, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rows_role_app ON rows (json_extract(data, '$.application_id')) WHERE table_name = 'roles';
CREATE INDEX IF NOT EXISTS rows_role_group ON rows (json_extract(data, '$.approver_group_id')) WHERE table_name = 'roles';
CREATE INDEX IF NOT EXISTS rows_ent_role ON rows (json_extract(data, '$.role_id')) WHERE table_name = 'entitlements';
CREATE INDEX IF NOT EXISTS rows_sod_a ON rows (json_extract(data, '$.role_a_id')) WHERE table_name = 'sod_rules';
CREATE INDEX IF NOT EXISTS rows_sod_b ON rows (json_extract(data, '$.role_b_id')) WHERE table_name = 'sod_rules';
CREATE INDEX IF NOT EXISTS rows_user_roles ON rows (json_extract(data, '$.user_id')) WHERE table_name = 'user_roles';

CREATE TABLE IF NOT EXISTS ledger (
    object      TEXT NOT NULL,          -- path relative to the drop root, or s3://bucket/key
    object_version TEXT NOT NULL,       -- content hash, S3 version id or etag
    status      TEXT NOT NULL,          -- applied | pending | failed
    finished_at TEXT NOT NULL,
    counts      TEXT NOT NULL,          -- JSON summary of what applying it did
    error       TEXT,
    path        TEXT,                   -- where it was read from (a local path), if local
    PRIMARY KEY (object, object_version)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS quarantine (
    id       INTEGER PRIMARY KEY,
    object   TEXT NOT NULL,
    path     TEXT NOT NULL,             -- where to read it again for `quarantine retry`
    line     INTEGER,                   -- 1-based; NULL when the whole file failed
    reason   TEXT NOT NULL,
    content  TEXT NOT NULL,             -- the offending line, cut to a few KB
    at       TEXT NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS quarantine_open ON quarantine (resolved, object);

-- Which documents came from which object (record collections), so a newer version of the
-- object can delete the documents it no longer contains, and a removed object all of them.
CREATE TABLE IF NOT EXISTS object_docs (
    object TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    kind   TEXT NOT NULL,
    PRIMARY KEY (object, doc_id)
) WITHOUT ROWID;

-- Documents whose rendering may be out of date: recorded before a batch of row changes is
-- committed, cleared after the documents are in the index. A crash in between leaves them
-- here, and the next run renders them (the "before" side of a change is otherwise lost).
CREATE TABLE IF NOT EXISTS dirty_docs (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS embed_cache (
    model  TEXT NOT NULL,
    hash   TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, hash)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"#;

impl StateDb {
    pub fn open(path: &Path) -> Result<StateDb, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.into(), source })?;
        }
        let err = |source| StoreError::Sqlite { path: path.into(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        // NORMAL in WAL mode can lose the last commits on power loss but never corrupts;
        // the ledger is written in the same transactions, so a lost commit is re-applied.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(StateDb { conn: Mutex::new(conn), path: path.into() })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back),
        // so a poisoned mutex is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn sql_err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql_err(e))
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
            .map_err(|e| self.sql_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::acquire(dir.path()).unwrap();
        let err = WriterLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        drop(first);
        WriterLock::acquire(dir.path()).unwrap();
    }
}
