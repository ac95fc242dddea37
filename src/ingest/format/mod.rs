//! Bytes → rows or documents, one module per input format, all streaming.
//!
//! Every parser reads a `BufRead` line by line (or record by record) and yields either an
//! item or a [`Problem`] naming the line, so one bad line is quarantined while the rest of
//! the file still lands. Gzip is undone in [`open_reader`], below every format.

pub mod cdc;
pub mod parquet;
pub mod records;
pub mod table;
pub mod text;

use std::io::{BufRead, BufReader, Read};

use crate::ingest::quarantine::Problem;
use crate::ingest::route::TableFormat;
use crate::model::{RowData, SourceRow};
use crate::schema::Table;
use parquet::ParquetTableReader;
use table::{CsvTableReader, JsonlTableReader, RowVersion};

/// Wraps a raw object stream: gunzips `.gz` keys, buffers everything.
pub fn open_reader(key: &str, raw: Box<dyn Read + Send>) -> Box<dyn BufRead + Send> {
    if key.ends_with(".gz") {
        Box::new(BufReader::with_capacity(256 * 1024, flate2::read::MultiGzDecoder::new(raw)))
    } else {
        Box::new(BufReader::with_capacity(256 * 1024, raw))
    }
}

/// The rows of a table file, whatever its format.
pub type Rows = Box<dyn Iterator<Item = std::io::Result<Result<SourceRow, Problem>>> + Send>;

/// Opens a table file of `format`: `Ok(Err(problem))` when the whole file is unusable (no
/// header, not Parquet, a key column missing), `Err` when reading the object failed.
pub fn table_rows(
    key: &str,
    raw: Box<dyn Read + Send>,
    format: &TableFormat,
    table: &'static Table,
    policy: RowVersion,
) -> std::io::Result<Result<Rows, Problem>> {
    Ok(match format {
        TableFormat::Csv => match CsvTableReader::new(open_reader(key, raw), table, policy) {
            Ok(r) => Ok(Box::new(r)),
            Err(p) => Err(p),
        },
        TableFormat::Jsonl => Ok(Box::new(JsonlTableReader::new(open_reader(key, raw), table, policy))),
        TableFormat::Parquet => match ParquetTableReader::new(raw, table, policy) {
            Ok(r) => Ok(Box::new(r)),
            Err(Ok(p)) => Err(p),
            Err(Err(io)) => return Err(io),
        },
    })
}

/// A JSON value as row text: strings as they are, scalars in their JSON spelling, nested
/// values as compact JSON, null as NULL.
pub fn json_to_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

pub fn json_object_to_row(obj: &serde_json::Map<String, serde_json::Value>) -> RowData {
    obj.iter().map(|(k, v)| (k.clone(), json_to_text(v))).collect()
}

pub(crate) fn problem(line: u64, reason: impl Into<String>, content: &str) -> Problem {
    Problem { line: Some(line), reason: reason.into(), content: content.to_string() }
}

/// Reads lines, tolerating invalid UTF-8 as a problem of that line rather than of the file.
pub(crate) struct Lines<R> {
    inner: R,
    pub line_no: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    pub fn new(inner: R) -> Self {
        Lines { inner, line_no: 0, buf: Vec::new() }
    }

    /// The next line without its terminator: `Ok(None)` at the end, `Err` on an I/O error.
    pub fn next_line(&mut self) -> std::io::Result<Option<Result<String, Problem>>> {
        self.buf.clear();
        if self.inner.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        Ok(Some(match std::str::from_utf8(&self.buf) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(problem(self.line_no, format!("not UTF-8: {e}"), &String::from_utf8_lossy(&self.buf))),
        }))
    }

    /// Drives a JSON Lines reader: skips blank lines, passes I/O errors and undecodable
    /// lines through, and hands every other line with its number to `parse`.
    pub fn next_item<T>(
        &mut self,
        mut parse: impl FnMut(&str, u64) -> Result<T, Problem>,
    ) -> Option<std::io::Result<Result<T, Problem>>> {
        loop {
            let line = match self.next_line() {
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
                Ok(Some(Err(p))) => return Some(Ok(Err(p))),
                Ok(Some(Ok(l))) => l,
            };
            if !line.trim().is_empty() {
                return Some(Ok(parse(&line, self.line_no)));
            }
        }
    }
}
