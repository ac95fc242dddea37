//! Quarantine: bad input kept with its reason, so nothing is lost and it can be retried.
//!
//! A malformed line is recorded with its object, line number and content and the rest of the
//! file still lands; an unreadable file is recorded whole (line `None`). `askiam quarantine
//! retry` re-reads the files of open entries after the input or the code was fixed.

use rusqlite::params;
use serde::Serialize;

use crate::store::{StateDb, StoreError};

/// The longest excerpt of an offending line kept, so one huge bad line can't bloat the store.
const MAX_CONTENT: usize = 4096;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Quarantined {
    pub id: i64,
    pub object: String,
    /// Where the object can be read again (a local path).
    pub path: String,
    pub line: Option<u64>,
    pub reason: String,
    pub content: String,
    pub at: String,
}

/// A problem found while reading one object, before it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<u64>,
    pub reason: String,
    pub content: String,
}

impl StateDb {
    /// Replaces the open quarantine entries of `object` with `problems` (a re-read of the
    /// object supersedes what an earlier read of it found).
    pub fn quarantine_replace(&self, object: &str, path: &str, problems: &[Problem]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql_err(e))?;
        tx.execute("UPDATE quarantine SET resolved = 1 WHERE object = ?1 AND resolved = 0", [object])
            .map_err(|e| self.sql_err(e))?;
        let now = chrono::Utc::now().to_rfc3339();
        for p in problems {
            let mut content = p.content.clone();
            if content.len() > MAX_CONTENT {
                let mut cut = MAX_CONTENT;
                while !content.is_char_boundary(cut) {
                    cut -= 1;
                }
                content.truncate(cut);
            }
            tx.execute(
                "INSERT INTO quarantine (object, path, line, reason, content, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![object, path, p.line.map(|l| l as i64), p.reason, content, now],
            )
            .map_err(|e| self.sql_err(e))?;
        }
        tx.commit().map_err(|e| self.sql_err(e))
    }

    pub fn quarantine_open(&self) -> Result<Vec<Quarantined>, StoreError> {
        self.quarantined(None)
    }

    /// The open entries of one object (the worker asks after every object it applies).
    pub fn quarantine_open_for(&self, object: &str) -> Result<Vec<Quarantined>, StoreError> {
        self.quarantined(Some(object))
    }

    fn quarantined(&self, object: Option<&str>) -> Result<Vec<Quarantined>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, object, path, line, reason, content, at FROM quarantine
                 WHERE resolved = 0 AND (?1 IS NULL OR object = ?1) ORDER BY object, line, id",
            )
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([object], |r| {
                Ok(Quarantined {
                    id: r.get(0)?,
                    object: r.get(1)?,
                    path: r.get(2)?,
                    line: r.get::<_, Option<i64>>(3)?.map(|l| l as u64),
                    reason: r.get(4)?,
                    content: r.get(5)?,
                    at: r.get(6)?,
                })
            })
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql_err(e))?;
        Ok(rows)
    }

    pub fn quarantine_count(&self) -> Result<u64, StoreError> {
        self.conn()
            .query_row("SELECT count(*) FROM quarantine WHERE resolved = 0", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.sql_err(e))
    }
}
