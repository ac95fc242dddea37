//! The shared vocabulary of askiam: versions, source rows, documents and chunks.
//!
//! Every stage speaks these types. Two decisions a reader would otherwise question:
//! a [`Version`] is one total order across every input format (commit time first, then a
//! sequence such as the Postgres LSN or an S3 sequencer), so "older never overwrites newer"
//! is a plain comparison; and row values are kept as text, so that the same row read from
//! CSV, JSON or DMS renders to byte-identical documents.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The source version of a row or a document: commit time in microseconds since the Unix
/// epoch, then a sequence number that orders changes committed in the same microsecond (the
/// LSN for Postgres changes, the sequencer for S3 objects, 0 when the source has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub time_us: i64,
    pub seq: u128,
}

impl Version {
    pub const ZERO: Version = Version { time_us: 0, seq: 0 };

    pub fn new(time_us: i64, seq: u128) -> Self {
        Version { time_us, seq }
    }

    pub fn from_time(t: DateTime<Utc>, seq: u128) -> Self {
        Version { time_us: t.timestamp_micros(), seq }
    }

    /// A fixed-width text form whose byte order is the version order, so SQL can compare it.
    pub fn to_key(&self) -> String {
        // Shift the signed time into unsigned space so that negative times still sort first.
        let t = (self.time_us as i128 - i64::MIN as i128) as u64;
        format!("{t:016x}.{:032x}", self.seq)
    }

    pub fn from_key(key: &str) -> Option<Version> {
        let (t, s) = key.split_once('.')?;
        let t = u64::from_str_radix(t, 16).ok()?;
        let seq = u128::from_str_radix(s, 16).ok()?;
        let time_us = (t as i128 + i64::MIN as i128) as i64;
        Some(Version { time_us, seq })
    }

    pub fn time(&self) -> Option<DateTime<Utc>> {
        Utc.timestamp_micros(self.time_us).single()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.time() {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"))?,
            None => write!(f, "@{}", self.time_us)?,
        }
        if self.seq != 0 {
            write!(f, "#{:x}", self.seq)?;
        }
        Ok(())
    }
}

/// Parses a Postgres LSN (`16/B374D848`) or a plain integer into a sequence number.
pub fn parse_lsn(text: &str) -> Option<u128> {
    let text = text.trim();
    if let Some((hi, lo)) = text.split_once('/') {
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        if lo > u32::MAX as u64 {
            return None;
        }
        Some(((hi as u128) << 32) | lo as u128)
    } else {
        text.parse::<u128>().ok()
    }
}

/// Parses the timestamps the exporters write: RFC 3339 (`2026-11-02T10:15:30.123456Z`), or
/// the naive UTC form Postgres and AWS DMS write (`2026-11-02 10:15:30.123456`).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

/// What a change does to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

/// A row's values as text; `None` is SQL NULL. A sorted map, so serialisation is canonical.
pub type RowData = BTreeMap<String, Option<String>>;

/// One change to one row of a catalogue table, from any change format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceRow {
    pub table: String,
    /// The primary key rendered as text (composite keys joined with `|`).
    pub key: String,
    pub op: Op,
    pub version: Version,
    pub data: RowData,
}

/// What a document is about; decides how it renders and how it can be filtered.
pub mod kind {
    pub const APPLICATION: &str = "application";
    pub const ROLE: &str = "role";
    pub const APPROVER_GROUP: &str = "approver_group";
    pub const SOD_RULE: &str = "sod_rule";
    /// A chunked source document (policy, guide) from `docs/`.
    pub const DOCUMENT: &str = "document";
    /// A record of a generic JSONL collection (`--format records`).
    pub const RECORD: &str = "record";
}

/// A searchable document before embedding: one or more chunks that share an id and a version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Stable across versions: `role:ROLE-0042`, `doc:docs/policies/sod.md`, or a record's own id.
    pub id: String,
    pub kind: String,
    pub title: String,
    /// Where the document came from: a table (`table:roles`) or an object key / path.
    pub source: String,
    pub version: Version,
    /// Filterable facts (application, risk, …) and, for records, every unchosen field.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub chunks: Vec<Chunk>,
}

/// The unit that is embedded and retrieved. A row document has exactly one chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Stable: derived from the document id and the chunk's position and content.
    pub id: String,
    pub ordinal: u32,
    pub heading: Option<String>,
    pub text: String,
    /// Found by keywords only, never embedded: identifiers (permission lists) that carry no
    /// meaning an embedder could use and would crowd a 256-token window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keywords_only: bool,
}

impl Document {
    /// Hash over everything that makes the document what it is — equal hashes mean the index
    /// already holds this exact document, so nothing needs embedding or writing.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [self.kind.as_str(), self.title.as_str(), self.source.as_str()] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(serde_json::Value::Object(self.metadata.clone()).to_string().as_bytes());
        for c in &self.chunks {
            h.update([1]);
            h.update(c.id.as_bytes());
            h.update([0]);
            h.update(c.heading.as_deref().unwrap_or("").as_bytes());
            h.update([0]);
            h.update(c.text.as_bytes());
            if c.keywords_only {
                h.update([2]);
            }
        }
        hex::encode(h.finalize())
    }

    /// The document's full text, chunks joined; what the digest and a reader see.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.chunks {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&c.text);
        }
        out
    }
}

/// Hash of a text, used as the embedding cache key and in chunk ids.
pub fn text_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_key_orders_like_version() {
        let vs = [
            Version::new(-5, 0),
            Version::new(0, 0),
            Version::new(0, 7),
            Version::new(1_700_000_000_000_000, 1),
            Version::new(1_700_000_000_000_000, u128::MAX),
            Version::new(1_700_000_000_000_001, 0),
        ];
        for w in vs.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_key() < w[1].to_key());
        }
        for v in vs {
            assert_eq!(Version::from_key(&v.to_key()), Some(v));
        }
    }

    #[test]
    fn lsn_and_timestamps_parse() {
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16u128 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("42"), Some(42));
        assert_eq!(parse_lsn("x/1"), None);
        let a = parse_timestamp("2026-11-02T10:15:30.123456Z").unwrap();
        let b = parse_timestamp("2026-11-02 10:15:30.123456").unwrap();
        let c = parse_timestamp("2026-11-02 10:15:30.123456+00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
    }
}
