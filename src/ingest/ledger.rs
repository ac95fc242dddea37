//! The ledger: which object versions have been applied, with what result.
//!
//! An object is identified by its key and its version (content hash locally, S3 version id or
//! etag on AWS). It is marked applied only after its documents are in the index, so a crash
//! before that re-applies it — which the version guards make harmless — and a redelivery
//! after it is a no-op.

use rusqlite::{params, OptionalExtension};

use crate::store::{StateDb, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub object: String,
    pub object_version: String,
    pub status: String,
    pub finished_at: String,
    pub counts: serde_json::Value,
    pub error: Option<String>,
}

pub const APPLIED: &str = "applied";
/// A full-export part or manifest waiting for the rest of its run.
pub const PENDING: &str = "pending";

impl StateDb {
    pub fn ledger_status(&self, object: &str, version: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT status FROM ledger WHERE object = ?1 AND object_version = ?2",
                params![object, version],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql_err(e))
    }

    pub fn ledger_record(
        &self,
        object: &str,
        version: &str,
        status: &str,
        counts: &serde_json::Value,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = chrono::Utc::now().to_rfc3339();
        self.conn()
            .execute(
                "INSERT INTO ledger (object, object_version, status, finished_at, counts, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(object, object_version) DO UPDATE SET status = excluded.status,
                   finished_at = excluded.finished_at, counts = excluded.counts, error = excluded.error",
                params![object, version, status, now, counts.to_string(), error],
            )
            .map_err(|e| self.sql_err(e))?;
        if status == APPLIED {
            self.meta_set("last_object", object)?;
        }
        Ok(())
    }

    /// Records where an object was read from, so a drop dir can tell which of the objects
    /// it applied have since been removed.
    pub fn ledger_set_path(&self, object: &str, version: &str, path: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE ledger SET path = ?3 WHERE object = ?1 AND object_version = ?2",
                params![object, version, path],
            )
            .map(|_| ())
            .map_err(|e| self.sql_err(e))
    }

    /// Forgets every version of an object, so that the same content arriving again is
    /// applied again (a removed file that comes back).
    pub fn ledger_forget(&self, object: &str) -> Result<(), StoreError> {
        self.conn().execute("DELETE FROM ledger WHERE object = ?1", [object]).map(|_| ()).map_err(|e| self.sql_err(e))
    }

    /// (object, path) of applied objects read from a path under `dir`.
    pub fn ledger_applied_under(&self, dir: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT DISTINCT object, path FROM ledger WHERE status = 'applied' AND path IS NOT NULL
                 AND substr(path, 1, length(?1)) = ?1 ORDER BY object",
            )
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([dir], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql_err(e))?;
        Ok(rows)
    }

    /// Objects recorded with `status` whose key starts with `prefix`.
    pub fn ledger_with_status(&self, prefix: &str, status: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT object, object_version, status, finished_at, counts, error FROM ledger
                 WHERE status = ?1 AND substr(object, 1, length(?2)) = ?2 ORDER BY object",
            )
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map(params![status, prefix], |r| {
                Ok(LedgerEntry {
                    object: r.get(0)?,
                    object_version: r.get(1)?,
                    status: r.get(2)?,
                    finished_at: r.get(3)?,
                    counts: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                    error: r.get(5)?,
                })
            })
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql_err(e))?;
        Ok(rows)
    }
}

impl StateDb {
    /// The (doc id, kind) pairs last produced by `object`.
    pub fn object_docs(&self, object: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT doc_id, kind FROM object_docs WHERE object = ?1 ORDER BY doc_id")
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([object], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql_err(e))?;
        Ok(rows)
    }

    pub fn set_object_docs(&self, object: &str, docs: &[(String, String)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql_err(e))?;
        tx.execute("DELETE FROM object_docs WHERE object = ?1", [object]).map_err(|e| self.sql_err(e))?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO object_docs (object, doc_id, kind) VALUES (?1, ?2, ?3)")
                .map_err(|e| self.sql_err(e))?;
            for (id, kind) in docs {
                stmt.execute(params![object, id, kind]).map_err(|e| self.sql_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.sql_err(e))
    }
}
