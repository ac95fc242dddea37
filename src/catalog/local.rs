//! The entity store: the latest version of every catalogue row, tombstones included.
//!
//! This is where "an older version never overwrites a newer one" is decided for rows: a
//! change is applied only when its version is newer than the stored one, and a delete keeps a
//! tombstone (with the last known values, so dependants can still be found) so that a late
//! insert stays deleted. Because the store keeps the maximum per key, applying the same set
//! of changes in any order, any number of times, yields the same state.

use rusqlite::{params, OptionalExtension};

use crate::model::{Op, RowData, SourceRow, Version};
use crate::store::{StateDb, StoreError};

/// A row as the store holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRow {
    pub table: String,
    pub key: String,
    pub version: Version,
    pub deleted: bool,
    pub data: RowData,
}

impl StoredRow {
    pub fn get(&self, col: &str) -> Option<&str> {
        self.data.get(col).and_then(|v| v.as_deref())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOutcome {
    /// The change was newer and is now stored.
    Applied,
    /// The same version is already stored: a replay.
    Unchanged,
    /// A newer version (or tombstone) is stored; the change was ignored.
    Stale,
}

fn row_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, bool, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? != 0, r.get(4)?))
}

fn decode(raw: (String, String, String, bool, String)) -> Result<StoredRow, StoreError> {
    let (table, key, version, deleted, data) = raw;
    let version = Version::from_key(&version)
        .ok_or_else(|| StoreError::Corrupt(format!("version {version:?} of {table}/{key}")))?;
    let data: RowData =
        serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("data of {table}/{key}: {e}")))?;
    Ok(StoredRow { table, key, version, deleted, data })
}

const SELECT: &str = "SELECT table_name, key, version, deleted, data FROM rows";

impl StateDb {
    /// Applies a batch of row changes in one transaction, returning each change's outcome.
    pub fn apply_rows(&self, rows: &[SourceRow], object: &str) -> Result<Vec<RowOutcome>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql_err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        {
            let mut get = tx
                .prepare_cached("SELECT version, data FROM rows WHERE table_name = ?1 AND key = ?2")
                .map_err(|e| self.sql_err(e))?;
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO rows (table_name, key, version, deleted, data, object) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(table_name, key) DO UPDATE SET version = excluded.version,
                       deleted = excluded.deleted, data = excluded.data, object = excluded.object",
                )
                .map_err(|e| self.sql_err(e))?;
            for row in rows {
                let stored: Option<(String, String)> = get
                    .query_row(params![row.table, row.key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(|e| self.sql_err(e))?;
                let new_key = row.version.to_key();
                let outcome = match &stored {
                    Some((v, _)) if *v > new_key => RowOutcome::Stale,
                    Some((v, _)) if *v == new_key => RowOutcome::Unchanged,
                    _ => RowOutcome::Applied,
                };
                if outcome == RowOutcome::Applied {
                    let data = match (row.op, &stored) {
                        // A delete may carry only the key; keep the last known values with
                        // the tombstone so that documents which referred to it can be found.
                        (Op::Delete, Some((_, old))) => {
                            let mut merged: RowData = serde_json::from_str(old).unwrap_or_default();
                            // An empty field in a delete (DMS writes them) says nothing; it must
                            // not erase the link a dependent document is found by.
                            merged.extend(
                                row.data.iter().filter(|(_, v)| v.is_some()).map(|(k, v)| (k.clone(), v.clone())),
                            );
                            merged
                        }
                        _ => row.data.clone(),
                    };
                    let data = serde_json::to_string(&data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    put.execute(params![row.table, row.key, new_key, row.op == Op::Delete, data, object])
                        .map_err(|e| self.sql_err(e))?;
                }
                out.push(outcome);
            }
        }
        tx.commit().map_err(|e| self.sql_err(e))?;
        Ok(out)
    }

    /// The stored row (live or tombstone) for a key.
    pub fn row(&self, table: &str, key: &str) -> Result<Option<StoredRow>, StoreError> {
        let conn = self.conn();
        let raw = conn
            .query_row(&format!("{SELECT} WHERE table_name = ?1 AND key = ?2"), params![table, key], row_from_sql)
            .optional()
            .map_err(|e| self.sql_err(e))?;
        raw.map(decode).transpose()
    }

    /// Rows of `table` (live and tombstones) whose `column` equals `value`, in key order.
    ///
    /// Table and column are written into the SQL (they are identifiers from our own code,
    /// checked here) so that SQLite can use the partial expression indexes of the schema;
    /// with bound parameters it could not prove they apply and would scan every row.
    pub fn rows_where(&self, table: &str, column: &str, value: &str) -> Result<Vec<StoredRow>, StoreError> {
        let ident = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !ident(table) || !ident(column) {
            return Err(StoreError::Corrupt(format!("not an identifier: {table}.{column}")));
        }
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "{SELECT} WHERE table_name = '{table}' AND json_extract(data, '$.{column}') = ?1 ORDER BY key"
            ))
            .map_err(|e| self.sql_err(e))?;
        let raws = stmt
            .query_map(params![value], row_from_sql)
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql_err(e))?;
        raws.into_iter().map(decode).collect()
    }

    /// Every live row of `table`, in key order.
    pub fn live_rows(&self, table: &str) -> Result<Vec<StoredRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!("{SELECT} WHERE table_name = ?1 AND deleted = 0 ORDER BY key"))
            .map_err(|e| self.sql_err(e))?;
        let raws = stmt
            .query_map([table], row_from_sql)
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql_err(e))?;
        raws.into_iter().map(decode).collect()
    }

    /// Every key of `table` (live and tombstones), in key order.
    pub fn keys(&self, table: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key FROM rows WHERE table_name = ?1 ORDER BY key")
            .map_err(|e| self.sql_err(e))?;
        let keys = stmt
            .query_map([table], |r| r.get(0))
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| self.sql_err(e))?;
        Ok(keys)
    }

    /// (key, version, deleted) of every row of `table`, for snapshot reconciliation.
    pub fn versions(&self, table: &str) -> Result<Vec<(String, Version, bool)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key, version, deleted FROM rows WHERE table_name = ?1 ORDER BY key")
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([table], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)? != 0)))
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql_err(e))?;
        rows.into_iter()
            .map(|(k, v, d)| {
                let v = Version::from_key(&v).ok_or_else(|| StoreError::Corrupt(format!("version {v:?}")))?;
                Ok((k, v, d))
            })
            .collect()
    }

    /// Live rows per table.
    pub fn entity_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT table_name, count(*) FROM rows WHERE deleted = 0 GROUP BY table_name")
            .map_err(|e| self.sql_err(e))?;
        let counts = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql_err(e))?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(op: Op, key: &str, v: i64, name: &str) -> SourceRow {
        let mut data = RowData::new();
        data.insert("id".into(), Some(key.into()));
        if !name.is_empty() {
            data.insert("name".into(), Some(name.into()));
        }
        SourceRow { table: "roles".into(), key: key.into(), op, version: Version::new(v, 0), data }
    }

    #[test]
    fn stale_update_is_ignored_and_replay_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.sqlite")).unwrap();
        let out = db.apply_rows(&[row(Op::Upsert, "R1", 2, "new"), row(Op::Upsert, "R1", 1, "old")], "o").unwrap();
        assert_eq!(out, vec![RowOutcome::Applied, RowOutcome::Stale]);
        assert_eq!(db.row("roles", "R1").unwrap().unwrap().get("name"), Some("new"));
        assert_eq!(db.apply_rows(&[row(Op::Upsert, "R1", 2, "new")], "o").unwrap(), vec![RowOutcome::Unchanged]);
    }

    #[test]
    fn delete_before_insert_leaves_a_tombstone_that_keeps_the_late_insert_out() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.sqlite")).unwrap();
        db.apply_rows(&[row(Op::Delete, "R1", 5, "")], "o").unwrap();
        let out = db.apply_rows(&[row(Op::Upsert, "R1", 3, "late")], "o").unwrap();
        assert_eq!(out, vec![RowOutcome::Stale]);
        let r = db.row("roles", "R1").unwrap().unwrap();
        assert!(r.deleted);
        assert_eq!(db.entity_counts().unwrap().get("roles"), None);
    }

    #[test]
    fn tombstone_keeps_last_known_values() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.sqlite")).unwrap();
        db.apply_rows(&[row(Op::Upsert, "R1", 1, "kept")], "o").unwrap();
        db.apply_rows(&[row(Op::Delete, "R1", 2, "")], "o").unwrap();
        let r = db.row("roles", "R1").unwrap().unwrap();
        assert!(r.deleted);
        assert_eq!(r.get("name"), Some("kept"));
        assert_eq!(db.rows_where("roles", "name", "kept").unwrap().len(), 1);
    }
}
