//! AWS DMS Parquet files (`DataFormat=parquet` on the S3 target): the same columns as its CSV
//! — `Op` first in change files, the commit-timestamp column when `TimestampColumnName` is
//! set — typed instead of text.
//!
//! Parquet keeps its schema and row-group index in a footer at the end, so a file cannot be
//! read front to back: the object is spooled to a temporary file (never held in memory) and
//! read from there, one row at a time. Values become the text a CSV export would hold, so a
//! row reads the same whichever format DMS wrote.

use std::io::Read;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::{Field, Row};

use super::problem;
use super::table::{Columns, RowVersion};
use crate::ingest::quarantine::Problem;
use crate::model::SourceRow;
use crate::schema::Table;

/// Streams the rows of a DMS Parquet file.
pub struct ParquetTableReader {
    rows: RowIter<'static>,
    columns: Columns,
    row_no: u64,
    /// Set after a read error: the rest of the file cannot be decoded.
    broken: bool,
}

impl ParquetTableReader {
    /// Spools `raw` and reads the footer. `Err(Ok(problem))`: not a readable Parquet file or
    /// not one of this table (the whole file is quarantined); `Err(Err(io))`: reading the
    /// object failed (retry).
    pub fn new(
        mut raw: Box<dyn Read + Send>,
        table: &'static Table,
        policy: RowVersion,
    ) -> Result<Self, Result<Problem, std::io::Error>> {
        let mut spool = tempfile::tempfile().map_err(Err)?;
        std::io::copy(&mut raw, &mut spool).map_err(Err)?;
        let whole = |reason: String| Ok(Problem { line: None, reason, content: String::new() });
        let reader =
            SerializedFileReader::new(spool).map_err(|e| whole(format!("not a readable Parquet file: {e}")))?;
        let names: Vec<String> = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        let columns = Columns::new(names, table, policy).map_err(|r| whole(format!("Parquet schema has {r}")))?;
        Ok(ParquetTableReader { rows: reader.into_iter(), columns, row_no: 0, broken: false })
    }

    fn row(&self, row: &Row) -> Result<SourceRow, Problem> {
        // A row's columns come in the schema's order, the order `columns` was built from.
        let values = row.get_column_iter().map(|(n, f)| field_text(n, f));
        self.columns.row(values, self.row_no).map_err(|reason| problem(self.row_no, reason, &row.to_string()))
    }
}

impl Iterator for ParquetTableReader {
    type Item = std::io::Result<Result<SourceRow, Problem>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.broken {
            return None;
        }
        let row = self.rows.next()?;
        self.row_no += 1;
        Some(Ok(match row {
            Ok(row) => self.row(&row),
            Err(e) => {
                // A corrupt page: what follows cannot be trusted, so stop here and say where.
                self.broken = true;
                Err(problem(self.row_no, format!("unreadable Parquet data from row {} on: {e}", self.row_no), ""))
            }
        }))
    }
}

/// A Parquet value as the text a CSV export of the row would hold.
fn field_text(column: &str, f: &Field) -> Result<Option<String>, String> {
    let micros = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            .ok_or_else(|| format!("column {column:?}: timestamp {us} µs is out of range"))
    };
    Ok(Some(match f {
        Field::Null => return Ok(None),
        Field::Bool(b) => b.to_string(),
        Field::Str(s) => s.clone(),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => s.to_string(),
            Err(_) => format!("\\x{}", hex::encode(b.data())),
        },
        Field::Date(days) => chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|d| d.checked_add_signed(chrono::Duration::days(i64::from(*days))))
            .map(|d| d.format("%Y-%m-%d").to_string())
            .ok_or_else(|| format!("column {column:?}: date {days} is out of range"))?,
        Field::TimestampMillis(ms) => micros(ms.saturating_mul(1000))?,
        Field::TimestampMicros(us) => micros(*us)?,
        // Numbers, decimals, times and nested values in the crate's own spelling.
        other => other.to_string(),
    }))
}

/// A column of [`write_dms_parquet`].
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// UTF8 text.
    Text,
    /// TIMESTAMP_MICROS, given as RFC 3339 text.
    Timestamp,
    /// BOOLEAN, given as `true`/`false`.
    Bool,
}

/// Writes a Parquet file shaped like DMS's (one row group, every column optional) — for
/// tests and benchmarks, so they need no Python or DMS to make one.
pub fn write_dms_parquet(
    columns: &[(&str, Kind)],
    rows: &[Vec<Option<&str>>],
    codec: parquet::basic::Compression,
) -> Result<Vec<u8>, String> {
    use parquet::basic::{ConvertedType, Repetition, Type as Physical};
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::Type;
    use std::sync::Arc;

    let e = |e: parquet::errors::ParquetError| e.to_string();
    let fields = columns
        .iter()
        .map(|(name, kind)| {
            let (physical, converted) = match kind {
                Kind::Text => (Physical::BYTE_ARRAY, ConvertedType::UTF8),
                Kind::Timestamp => (Physical::INT64, ConvertedType::TIMESTAMP_MICROS),
                Kind::Bool => (Physical::BOOLEAN, ConvertedType::NONE),
            };
            Type::primitive_type_builder(name, physical)
                .with_repetition(Repetition::OPTIONAL)
                .with_converted_type(converted)
                .build()
                .map(Arc::new)
                .map_err(e)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let schema = Arc::new(Type::group_type_builder("schema").with_fields(fields).build().map_err(e)?);
    let props = Arc::new(WriterProperties::builder().set_compression(codec).build());
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, schema, props).map_err(e)?;
    let mut rg = w.next_row_group().map_err(e)?;
    for (c, (name, kind)) in columns.iter().enumerate() {
        let values: Vec<Option<&str>> = rows.iter().map(|r| r.get(c).copied().flatten()).collect();
        let def: Vec<i16> = values.iter().map(|v| v.is_some() as i16).collect();
        let present = values.iter().flatten();
        let mut col = rg.next_column().map_err(e)?.ok_or("more columns than the schema")?;
        match kind {
            Kind::Text => {
                let data: Vec<ByteArray> = present.map(|s| ByteArray::from(*s)).collect();
                col.typed::<ByteArrayType>().write_batch(&data, Some(&def), None).map_err(e)?;
            }
            Kind::Timestamp => {
                let data = present
                    .map(|s| {
                        crate::model::parse_timestamp(s)
                            .map(|t| t.timestamp_micros())
                            .ok_or_else(|| format!("{name}: {s:?} is not a timestamp"))
                    })
                    .collect::<Result<Vec<i64>, String>>()?;
                col.typed::<Int64Type>().write_batch(&data, Some(&def), None).map_err(e)?;
            }
            Kind::Bool => {
                let data: Vec<bool> = present.map(|s| *s == "true").collect();
                col.typed::<BoolType>().write_batch(&data, Some(&def), None).map_err(e)?;
            }
        }
        col.close().map_err(e)?;
    }
    rg.close().map_err(e)?;
    w.close().map_err(e)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use parquet::basic::Compression;

    use super::*;
    use crate::model::Op;
    use crate::schema;

    /// Op, commit timestamp, id, name, requestable.
    type RoleChange<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

    /// A DMS-shaped change file for `roles`.
    fn dms_roles(rows: &[RoleChange<'_>], codec: Compression) -> Vec<u8> {
        let columns = [
            ("Op", Kind::Text),
            ("commit_ts", Kind::Timestamp),
            ("id", Kind::Text),
            ("name", Kind::Text),
            ("requestable", Kind::Bool),
        ];
        let rows: Vec<Vec<Option<&str>>> =
            rows.iter().map(|r| vec![Some(r.0), Some(r.1), Some(r.2), r.3, r.4]).collect();
        write_dms_parquet(&columns, &rows, codec).unwrap()
    }

    fn read(bytes: Vec<u8>) -> Vec<Result<SourceRow, Problem>> {
        let t = schema::table("roles").unwrap();
        ParquetTableReader::new(Box::new(std::io::Cursor::new(bytes)), t, RowVersion::Column("commit_ts".into()))
            .map_err(|e| format!("{e:?}"))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn dms_parquet_changes_read_like_dms_csv() {
        let rows = [
            ("I", "2026-11-03T10:15:00.000001Z", "R9", Some("New Role"), Some("true")),
            ("U", "2026-11-03T10:15:01.5Z", "R9", Some("Renamed"), None),
            ("X", "2026-11-03T10:15:02Z", "R9", Some("Bad"), Some("false")),
            ("D", "2026-11-03T10:15:03Z", "R9", None, None),
        ];
        let t0 = crate::model::parse_timestamp(rows[0].1).unwrap().timestamp_micros();
        for codec in [Compression::UNCOMPRESSED, Compression::SNAPPY, Compression::GZIP(Default::default())] {
            let out = read(dms_roles(&rows, codec));
            assert_eq!(out.len(), 4, "{codec:?}");
            let first = out[0].as_ref().unwrap();
            assert_eq!((first.key.as_str(), first.op), ("R9", Op::Upsert));
            assert_eq!(first.version, crate::model::Version::new(t0, 1), "the commit timestamp, to the µs");
            assert_eq!(first.data["name"].as_deref(), Some("New Role"));
            assert_eq!(first.data["requestable"].as_deref(), Some("true"));
            assert!(!first.data.contains_key("Op") && !first.data.contains_key("commit_ts"));
            let second = out[1].as_ref().unwrap();
            assert!(second.version > first.version, "versioned by the commit timestamp");
            assert_eq!(second.data["requestable"], None, "NULL stays NULL");
            let bad = out[2].as_ref().unwrap_err();
            assert_eq!(bad.line, Some(3));
            assert!(bad.reason.contains("unknown DMS Op"), "{}", bad.reason);
            assert_eq!(out[3].as_ref().unwrap().op, Op::Delete);
        }
    }

    #[test]
    fn a_file_that_is_not_parquet_or_lacks_the_key_is_one_problem() {
        let t = schema::table("roles").unwrap();
        let policy = RowVersion::Column("commit_ts".into());
        let not = ParquetTableReader::new(Box::new(&b"Op,id\nI,R1\n"[..]), t, policy.clone());
        assert!(matches!(not, Err(Ok(p)) if p.reason.contains("not a readable Parquet file")));
        let user_roles = schema::table("user_roles").unwrap();
        let wrong = ParquetTableReader::new(
            Box::new(std::io::Cursor::new(dms_roles(
                &[("I", "2026-11-03T10:15:00Z", "R1", None, None)],
                Compression::SNAPPY,
            ))),
            user_roles,
            policy,
        );
        assert!(matches!(wrong, Err(Ok(p)) if p.reason.contains("no key column \"user_id\"")));
    }
}
