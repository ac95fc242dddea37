//! askiam's own change format: one JSON object a line.
//!
//! `{"op":"insert|update|delete","table":"roles","lsn":"0/16B3748","commit_time":"…","row":{…}}`
//! — what the Postgres exporter (logical decoding) writes. The version is (commit time, LSN),
//! the same order AWS DMS files get from their commit timestamp, so both can be mixed.

use std::io::BufRead;

use serde::Deserialize;

use super::{json_object_to_row, problem, Lines};
use crate::ingest::quarantine::Problem;
use crate::model::{parse_lsn, parse_timestamp, Op, SourceRow, Version};
use crate::schema;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    op: String,
    table: String,
    #[serde(default)]
    lsn: Option<serde_json::Value>,
    commit_time: String,
    row: serde_json::Map<String, serde_json::Value>,
}

/// Streams the changes of one CDC JSONL file.
pub struct CdcReader<R> {
    lines: Lines<R>,
}

impl<R: BufRead> CdcReader<R> {
    pub fn new(reader: R) -> Self {
        CdcReader { lines: Lines::new(reader) }
    }
}

impl<R: BufRead> Iterator for CdcReader<R> {
    type Item = std::io::Result<Result<SourceRow, Problem>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.lines.next_item(parse_line)
    }
}

fn parse_line(text: &str, line_no: u64) -> Result<SourceRow, Problem> {
    let bad = |reason: String| problem(line_no, reason, text);
    let l: Line = serde_json::from_str(text).map_err(|e| bad(format!("not a CDC change: {e}")))?;
    let op = match l.op.to_ascii_lowercase().as_str() {
        "insert" | "update" | "upsert" | "i" | "u" => Op::Upsert,
        "delete" | "d" => Op::Delete,
        other => return Err(bad(format!("unknown op {other:?} (expected insert, update or delete)"))),
    };
    let table = schema::table(&l.table).ok_or_else(|| bad(format!("unknown table {:?}", l.table)))?;
    let time = parse_timestamp(&l.commit_time)
        .ok_or_else(|| bad(format!("commit_time {:?} is not a timestamp", l.commit_time)))?;
    let seq = match &l.lsn {
        None | Some(serde_json::Value::Null) => 0,
        Some(serde_json::Value::String(s)) => parse_lsn(s).ok_or_else(|| bad(format!("lsn {s:?} is not an LSN")))?,
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(u128::from).ok_or_else(|| bad(format!("lsn {n} is not an LSN")))?
        }
        Some(other) => return Err(bad(format!("lsn {other} is not an LSN"))),
    };
    let data = json_object_to_row(&l.row);
    let key = table.key_of(&data).map_err(|col| bad(format!("row has no value for key column {col:?}")))?;
    Ok(SourceRow { table: table.name.to_string(), key, op, version: Version::from_time(time, seq), data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Result<SourceRow, Problem>> {
        CdcReader::new(text.as_bytes()).map(|r| r.unwrap()).collect()
    }

    #[test]
    fn parses_changes_and_flags_bad_lines_by_number() {
        let text = concat!(
            r#"{"op":"insert","table":"roles","lsn":"0/10","commit_time":"2026-11-02T09:00:00Z","row":{"id":"R1","name":"HR Analyst","requestable":true}}"#,
            "\n\n",
            r#"{"op":"delete","table":"public.roles","lsn":"0/11","commit_time":"2026-11-02T09:00:01Z","row":{"id":"R1"}}"#,
            "\n{not json\n",
            r#"{"op":"insert","table":"nope","lsn":"0/12","commit_time":"2026-11-02T09:00:02Z","row":{"id":"X"}}"#,
            "\n",
            r#"{"op":"insert","table":"roles","lsn":"0/13","commit_time":"2026-11-02T09:00:02Z","row":{"name":"no id"}}"#,
        );
        let out = read(text);
        assert_eq!(out.len(), 5);
        let first = out[0].as_ref().unwrap();
        assert_eq!(first.key, "R1");
        assert_eq!(first.data["requestable"].as_deref(), Some("true"));
        assert_eq!(first.version.seq, 0x10);
        assert_eq!(out[1].as_ref().unwrap().op, Op::Delete);
        assert_eq!(out[2].as_ref().unwrap_err().line, Some(4));
        assert!(out[3].as_ref().unwrap_err().reason.contains("unknown table"));
        assert!(out[4].as_ref().unwrap_err().reason.contains("key column"));
    }
}
