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

/// The shared ledger in DynamoDB, for workers that do not share a data dir (Lambdas, several
/// pollers). One item per object version: partition key `object` (S, `s3://bucket/key`),
/// sort key `version` (S, the ETag — what an event and a bucket listing both carry, so
/// `reconcile` and the notifications agree on what was seen).
///
/// A worker claims an object version with a conditional write before reading it, so two
/// workers given the same notification (SQS delivers at least once) do not both apply it;
/// the claim is a lease, so a worker that dies mid-object does not block it for good. Once
/// the documents are in the index the item turns `applied` and every later delivery of the
/// same version is a no-op. A removed object's items turn `removed`, and an event read after
/// its object was deleted or overwritten (a late notification) is released as `gone`, never
/// `applied` — either way the same content uploaded again is applied again.
#[derive(Clone, Debug)]
pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// An object version as the shared ledger names it.
#[derive(Clone, Debug)]
pub struct S3Object<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub etag: &'a str,
    pub sequencer: Option<&'a str>,
}

impl S3Object<'_> {
    fn id(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This worker applies it.
    Mine,
    /// Already applied: nothing to do.
    Applied,
    /// Another worker holds a live claim until the given time (RFC 3339).
    Busy(String),
}

#[derive(Debug, thiserror::Error)]
#[error("ledger table {table}: {message}")]
pub struct LedgerError {
    pub table: String,
    pub message: String,
}

pub const IN_PROGRESS: &str = "in_progress";
pub const FAILED: &str = "failed";
pub const REMOVED: &str = "removed";
pub const GONE: &str = "gone";

impl DynamoLedger {
    /// A client configured the SDK's own way (region, credentials, `AWS_ENDPOINT_URL`).
    pub async fn connect(table: &str) -> Self {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        DynamoLedger::with_client(aws_sdk_dynamodb::Client::new(&sdk), table)
    }

    pub fn with_client(client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        DynamoLedger { client, table: table.to_string() }
    }

    fn err(&self, e: impl std::fmt::Display) -> LedgerError {
        LedgerError { table: self.table.clone(), message: e.to_string() }
    }

    /// Claims `o` for `lease`: succeeds when no item exists, or the item is neither applied
    /// nor held by a live claim (failed, removed, or a claim whose holder died).
    pub async fn claim(&self, o: &S3Object<'_>, lease: std::time::Duration) -> Result<Claim, LedgerError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let now = chrono::Utc::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5));
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("object", V::S(o.id()))
            .item("version", V::S(o.etag.to_string()))
            .item("bucket", V::S(o.bucket.to_string()))
            .item("key", V::S(o.key.to_string()))
            .item("status", V::S(IN_PROGRESS.into()))
            .item("lease_until", V::N(until.timestamp_millis().to_string()))
            .item("claimed_at", V::S(now.to_rfc3339()))
            .condition_expression(
                "attribute_not_exists(#o) OR (#s <> :applied AND (#s <> :busy OR lease_until < :now))",
            )
            .expression_attribute_names("#o", "object")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":applied", V::S(APPLIED.into()))
            .expression_attribute_values(":busy", V::S(IN_PROGRESS.into()))
            .expression_attribute_values(":now", V::N(now.timestamp_millis().to_string()));
        if let Some(s) = o.sequencer {
            put = put.item("sequencer", V::S(s.to_string()));
        }
        match put.send().await {
            Ok(_) => Ok(Claim::Mine),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                // Someone else's item: read it to say whose and why.
                let item = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("object", V::S(o.id()))
                    .key("version", V::S(o.etag.to_string()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| self.err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?
                    .item
                    .unwrap_or_default();
                let status = item.get("status").and_then(|v| v.as_s().ok()).map(String::as_str);
                if status == Some(APPLIED) {
                    return Ok(Claim::Applied);
                }
                let until = item
                    .get("lease_until")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse::<i64>().ok())
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                Ok(Claim::Busy(until))
            }
            Err(e) => Err(self.err(aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
    }

    /// Marks `o` applied with what it did; from now on its deliveries are no-ops.
    pub async fn applied(&self, o: &S3Object<'_>, counts: &serde_json::Value) -> Result<(), LedgerError> {
        self.finish(o, APPLIED, counts, None).await
    }

    /// The object was deleted (or superseded) before this event was handled: released, not
    /// applied, so the same bytes uploaded again are read then.
    pub async fn gone(&self, o: &S3Object<'_>) -> Result<(), LedgerError> {
        self.finish(o, GONE, &serde_json::json!({}), None).await
    }

    /// Releases the claim with the reason, so the next delivery tries again at once.
    pub async fn failed(&self, o: &S3Object<'_>, error: &str) -> Result<(), LedgerError> {
        self.finish(o, FAILED, &serde_json::json!({}), Some(error)).await
    }

    async fn finish(
        &self,
        o: &S3Object<'_>,
        status: &str,
        counts: &serde_json::Value,
        error: Option<&str>,
    ) -> Result<(), LedgerError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        // An error is set when there is one and cleared otherwise (a retry that worked).
        let expr = if error.is_some() {
            "SET #s = :s, finished_at = :t, counts = :c, #b = :b, #k = :k, #e = :e REMOVE lease_until"
        } else {
            "SET #s = :s, finished_at = :t, counts = :c, #b = :b, #k = :k REMOVE lease_until, #e"
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("object", V::S(o.id()))
            .key("version", V::S(o.etag.to_string()))
            .update_expression(expr)
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#b", "bucket")
            .expression_attribute_names("#k", "key")
            .expression_attribute_names("#e", "error")
            .expression_attribute_values(":s", V::S(status.into()))
            .expression_attribute_values(":t", V::S(chrono::Utc::now().to_rfc3339()))
            .expression_attribute_values(":c", V::S(counts.to_string()))
            .expression_attribute_values(":b", V::S(o.bucket.into()))
            .expression_attribute_values(":k", V::S(o.key.into()));
        if let Some(e) = error {
            update = update.expression_attribute_values(":e", V::S(e.into()));
        }
        update.send().await.map_err(|e| self.err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// The object was deleted: every applied version of it turns `removed`, so the same
    /// content uploaded again is applied again.
    pub async fn removed(&self, bucket: &str, key: &str) -> Result<(), LedgerError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let id = S3Object { bucket, key, etag: "", sequencer: None }.id();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#o = :o")
            .expression_attribute_names("#o", "object")
            .expression_attribute_values(":o", V::S(id.clone()))
            .into_paginator()
            .items()
            .send();
        let mut versions = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| self.err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
            if let Some(v) = item.get("version").and_then(|v| v.as_s().ok()) {
                versions.push(v.clone());
            }
        }
        for v in versions {
            self.client
                .update_item()
                .table_name(&self.table)
                .key("object", V::S(id.clone()))
                .key("version", V::S(v))
                .update_expression("SET #s = :s, finished_at = :t")
                .condition_expression("#s = :applied")
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":s", V::S(REMOVED.into()))
                .expression_attribute_values(":applied", V::S(APPLIED.into()))
                .expression_attribute_values(":t", V::S(chrono::Utc::now().to_rfc3339()))
                .send()
                .await
                .map(|_| ())
                .or_else(|e| match e.as_service_error() {
                    // Not applied (failed, claimed): nothing to undo.
                    Some(s) if s.is_conditional_check_failed_exception() => Ok(()),
                    _ => Err(self.err(aws_sdk_dynamodb::error::DisplayErrorContext(e))),
                })?;
        }
        Ok(())
    }
}
