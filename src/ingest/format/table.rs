//! Table files: plain CSV/JSONL exports of one table, and AWS DMS CSV files.
//!
//! A CSV whose first header column is `Op` is a DMS change file (`I`/`U`/`D`); without it,
//! every line is an upsert (a full-table export or a DMS full load). The row version comes
//! from the caller for a snapshot (the manifest's snapshot version), else from the commit
//! timestamp column DMS adds (`TimestampColumnName`), else from the row's `updated_at`.
//! DMS files must be written with a header line (`AddColumnName=true`).

use std::io::BufRead;

use super::{json_object_to_row, problem, Lines};
use crate::ingest::quarantine::Problem;
use crate::model::{parse_timestamp, Op, RowData, SourceRow, Version};
use crate::schema::Table;

/// Where a table file's rows get their version.
#[derive(Clone, Debug)]
pub enum RowVersion {
    /// Every row has this version (a snapshot taken at it).
    Fixed(Version),
    /// From this timestamp column (DMS's commit timestamp), falling back to `updated_at`.
    Column(String),
}

type Item = std::io::Result<Result<SourceRow, Problem>>;

/// `line` orders rows that share a commit timestamp (DMS writes a transaction's changes in
/// commit order, all with the transaction's timestamp): an insert then an update of one row
/// in one transaction must end as the update, whatever else arrives.
fn version_of(data: &RowData, policy: &RowVersion, line: u64) -> Result<Version, String> {
    match policy {
        RowVersion::Fixed(v) => Ok(*v),
        RowVersion::Column(col) => {
            let (name, raw) = [col.as_str(), "updated_at"]
                .iter()
                .find_map(|c| data.get(*c).and_then(|v| v.as_deref()).map(|v| (*c, v)))
                .ok_or_else(|| format!("row has neither a {col:?} nor an \"updated_at\" value to version it by"))?;
            parse_timestamp(raw)
                .map(|t| Version::from_time(t, line as u128))
                .ok_or_else(|| format!("{name} {raw:?} is not a timestamp"))
        }
    }
}

/// The columns of a table file and which of them describe the change rather than the row:
/// DMS's `Op` (when it is the first column) and its commit timestamp. Shared by the CSV and
/// the Parquet reader, so both read a DMS file the same way.
pub(crate) struct Columns {
    names: Vec<String>,
    op_col: Option<usize>,
    meta_cols: Vec<usize>,
    table: &'static Table,
    policy: RowVersion,
}

impl Columns {
    /// Fails when a key column of the table is missing.
    pub(crate) fn new(names: Vec<String>, table: &'static Table, policy: RowVersion) -> Result<Self, String> {
        let op_col = names.iter().position(|h| h.eq_ignore_ascii_case("op")).filter(|&i| i == 0);
        let mut meta_cols: Vec<usize> = op_col.into_iter().collect();
        if let RowVersion::Column(c) = &policy {
            meta_cols.extend(names.iter().position(|h| h == c));
        }
        if let Some(key) = table.key.iter().find(|k| !names.iter().any(|h| h == *k)) {
            return Err(format!("no key column {key:?} for table {}", table.name));
        }
        Ok(Columns { names, op_col, meta_cols, table, policy })
    }

    /// One row from its values in column order (`None` is NULL); `line` orders rows that
    /// share a commit timestamp.
    pub(crate) fn row(
        &self,
        values: impl IntoIterator<Item = Result<Option<String>, String>>,
        line: u64,
    ) -> Result<SourceRow, String> {
        let mut data = RowData::new();
        let mut op = Op::Upsert;
        let mut version_data = RowData::new();
        for (i, value) in values.into_iter().enumerate() {
            let value = value?;
            let name = self.names.get(i).ok_or_else(|| format!("more values than the {} columns", self.names.len()))?;
            if Some(i) == self.op_col {
                op = match value.as_deref().map(str::trim) {
                    Some("I" | "U") => Op::Upsert,
                    Some("D") => Op::Delete,
                    other => return Err(format!("unknown DMS Op {:?} (expected I, U or D)", other.unwrap_or(""))),
                };
                continue;
            }
            if self.meta_cols.contains(&i) {
                version_data.insert(name.clone(), value);
            } else {
                if name == "updated_at" {
                    version_data.insert(name.clone(), value.clone());
                }
                data.insert(name.clone(), value);
            }
        }
        let version = version_of(&version_data, &self.policy, line)?;
        let key = self.table.key_of(&data).map_err(|col| format!("row has no value for key column {col:?}"))?;
        Ok(SourceRow { table: self.table.name.to_string(), key, op, version, data })
    }
}

/// Streams the rows of a CSV table file.
pub struct CsvTableReader<R: std::io::Read> {
    csv: csv::Reader<R>,
    columns: Columns,
    record: csv::ByteRecord,
}

impl<R: std::io::Read> CsvTableReader<R> {
    /// Reads the header; an unreadable header fails the whole file.
    pub fn new(reader: R, table: &'static Table, policy: RowVersion) -> Result<Self, Problem> {
        let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(reader);
        let headers: Vec<String> = csv
            .headers()
            .map_err(|e| Problem {
                line: Some(1),
                reason: format!("unreadable CSV header: {e}"),
                content: String::new(),
            })?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let content = headers.join(",");
        let columns = Columns::new(headers, table, policy).map_err(|reason| Problem {
            line: Some(1),
            reason: format!("CSV header has {reason}"),
            content,
        })?;
        Ok(CsvTableReader { csv, columns, record: csv::ByteRecord::new() })
    }

    fn row(&self, line: u64) -> Result<SourceRow, Problem> {
        let values = self.record.iter().enumerate().map(|(i, field)| {
            let text = std::str::from_utf8(field).map_err(|e| format!("column {} is not UTF-8: {e}", i + 1))?;
            // Postgres and DMS write NULL as an empty unquoted field.
            Ok((!text.is_empty()).then(|| text.to_string()))
        });
        self.columns.row(values, line).map_err(|reason| {
            let content =
                self.record.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect::<Vec<_>>().join(",");
            problem(line, reason, &content)
        })
    }
}

impl<R: std::io::Read> Iterator for CsvTableReader<R> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        match self.csv.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map(|p| p.line()).unwrap_or(0);
                Some(Ok(self.row(line)))
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                match e.kind() {
                    csv::ErrorKind::Io(io) => Some(Err(std::io::Error::new(io.kind(), e.to_string()))),
                    _ => Some(Ok(Err(problem(line, format!("malformed CSV line: {e}"), "")))),
                }
            }
        }
    }
}

/// Streams the rows of a JSONL table file (one row object a line).
pub struct JsonlTableReader<R> {
    lines: Lines<R>,
    table: &'static Table,
    policy: RowVersion,
}

impl<R: BufRead> JsonlTableReader<R> {
    pub fn new(reader: R, table: &'static Table, policy: RowVersion) -> Self {
        JsonlTableReader { lines: Lines::new(reader), table, policy }
    }
}

impl<R: BufRead> Iterator for JsonlTableReader<R> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let (table, policy) = (self.table, &self.policy);
        self.lines.next_item(|line, n| {
            let bad = |reason: String| problem(n, reason, line);
            let obj = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line)
                .map_err(|e| bad(format!("not a JSON object: {e}")))?;
            let data = json_object_to_row(&obj);
            let version = version_of(&data, policy, n).map_err(bad)?;
            let key = table.key_of(&data).map_err(|c| bad(format!("row has no value for key column {c:?}")))?;
            Ok(SourceRow { table: table.name.to_string(), key, op: Op::Upsert, version, data })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;

    #[test]
    fn dms_cdc_csv_reads_op_and_commit_timestamp() {
        let text = "Op,commit_ts,id,name,requestable,updated_at\n\
                    I,2026-11-03 10:15:00.000001,R9,New Role,t,2026-11-03 10:14:59+00\n\
                    U,2026-11-03 10:15:01.5,R9,Renamed,f,\n\
                    X,2026-11-03 10:15:02,R9,Bad,f,\n\
                    D,2026-11-03 10:15:03,R9,,,\n\
                    I,2026-11-03 10:15:04,R10\n";
        let t = schema::table("roles").unwrap();
        let rows: Vec<_> = CsvTableReader::new(text.as_bytes(), t, RowVersion::Column("commit_ts".into()))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows.len(), 5);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.op, Op::Upsert);
        assert!(!first.data.contains_key("commit_ts"));
        assert!(!first.data.contains_key("Op"));
        assert_eq!(first.data["requestable"].as_deref(), Some("t"));
        assert!(rows[1].as_ref().unwrap().version > first.version);
        assert_eq!(rows[1].as_ref().unwrap().data["updated_at"], None);
        assert_eq!(rows[2].as_ref().unwrap_err().line, Some(4));
        assert_eq!(rows[3].as_ref().unwrap().op, Op::Delete);
        assert_eq!(rows[4].as_ref().unwrap_err().line, Some(6));
    }

    #[test]
    fn snapshot_rows_take_the_fixed_version() {
        let t = schema::table("user_roles").unwrap();
        let v = Version::new(42, 7);
        let rows: Vec<_> = CsvTableReader::new("user_id,role_id\nU1,R1\n".as_bytes(), t, RowVersion::Fixed(v))
            .unwrap()
            .map(|r| r.unwrap().unwrap())
            .collect();
        assert_eq!(rows[0].key, "U1|R1");
        assert_eq!(rows[0].version, v);
        assert!(CsvTableReader::new("user_id,x\n".as_bytes(), t, RowVersion::Fixed(v)).is_err());
    }
}
