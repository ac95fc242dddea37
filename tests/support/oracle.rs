//! An independent reference model of what the fixtures should ingest to: the snapshot, then
//! every change file, newest version per key wins, tombstones included. Written from the
//! format descriptions, not from askiam's code, so the counts it gives are a real check.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Utc};

type Version = (i64, u128);

#[derive(Clone, Debug)]
pub struct Row {
    pub version: Version,
    pub deleted: bool,
    pub data: serde_json::Map<String, serde_json::Value>,
}

#[derive(Default, Debug)]
pub struct Oracle {
    pub tables: BTreeMap<String, HashMap<String, Row>>,
}

fn ts(s: &str) -> i64 {
    let t: DateTime<Utc> = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").map(|n| n.and_utc()))
        .unwrap_or_else(|e| panic!("timestamp {s:?}: {e}"));
    t.timestamp_micros()
}

fn lsn(s: &str) -> u128 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u128::from_str_radix(hi, 16).unwrap() << 32) | u128::from_str_radix(lo, 16).unwrap()
}

fn key_cols(table: &str) -> &'static [&'static str] {
    if table == "user_roles" {
        &["user_id", "role_id"]
    } else {
        &["id"]
    }
}

fn key_of(table: &str, data: &serde_json::Map<String, serde_json::Value>) -> String {
    key_cols(table).iter().map(|c| data[*c].as_str().unwrap().to_string()).collect::<Vec<_>>().join("|")
}

fn open(path: &Path) -> Box<dyn Read> {
    let f = std::fs::File::open(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    }
}

impl Oracle {
    fn apply(
        &mut self,
        table: &str,
        deleted: bool,
        version: Version,
        data: serde_json::Map<String, serde_json::Value>,
    ) {
        let key = key_of(table, &data);
        let t = self.tables.entry(table.to_string()).or_default();
        if t.get(&key).is_some_and(|r| r.version >= version) {
            return;
        }
        t.insert(key, Row { version, deleted, data });
    }

    /// Applies a fixtures-layout folder: full runs with manifests, then all change files.
    pub fn from_fixtures(root: &Path) -> Oracle {
        let mut o = Oracle::from_fixtures_snapshot_only(root);
        o.apply_changes(root);
        o
    }

    /// The full export(s) alone.
    pub fn from_fixtures_snapshot_only(root: &Path) -> Oracle {
        let mut o = Oracle::default();
        let full = root.join("exports/full");
        for run in std::fs::read_dir(&full).unwrap() {
            let run = run.unwrap().path();
            let manifest: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(run.join("_MANIFEST.json")).unwrap()).unwrap();
            let snap = &manifest["snapshot"];
            let v = (ts(snap["commit_time"].as_str().unwrap()), lsn(snap["lsn"].as_str().unwrap()));
            for t in manifest["tables"].as_array().unwrap() {
                let table = t["table"].as_str().unwrap();
                let mut rdr = csv::Reader::from_reader(open(&run.join(t["file"].as_str().unwrap())));
                let headers = rdr.headers().unwrap().clone();
                let mut seen = std::collections::HashSet::new();
                for rec in rdr.records() {
                    let rec = rec.unwrap();
                    let data: serde_json::Map<_, _> = headers
                        .iter()
                        .zip(rec.iter())
                        .map(|(h, v)| (h.to_string(), serde_json::Value::String(v.into())))
                        .collect();
                    seen.insert(key_of(table, &data));
                    o.apply(table, false, v, data);
                }
                // Rows older than the snapshot and absent from it are gone.
                let t = o.tables.entry(table.to_string()).or_default();
                for (k, r) in t.iter_mut() {
                    if !seen.contains(k) && r.version < v {
                        r.deleted = true;
                        r.version = v;
                    }
                }
            }
        }
        o
    }

    fn apply_changes(&mut self, root: &Path) {
        let o = self;
        let mut files = Vec::new();
        collect(&root.join("exports/changes"), &mut files);
        for f in files {
            let name = f.to_string_lossy().to_string();
            if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
                for line in BufReader::new(open(&f)).lines() {
                    let line = line.unwrap();
                    if line.trim().is_empty() {
                        continue;
                    }
                    let c: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let v = (ts(c["commit_time"].as_str().unwrap()), lsn(c["lsn"].as_str().unwrap()));
                    o.apply(
                        c["table"].as_str().unwrap(),
                        c["op"] == "delete",
                        v,
                        c["row"].as_object().unwrap().clone(),
                    );
                }
            } else if name.ends_with(".csv") {
                let table = f.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
                let mut rdr = csv::Reader::from_reader(open(&f));
                let headers = rdr.headers().unwrap().clone();
                for rec in rdr.records() {
                    let rec = rec.unwrap();
                    let op = rec.get(0).unwrap().to_string();
                    let v = (ts(rec.get(1).unwrap()), 0);
                    let data: serde_json::Map<_, _> = headers
                        .iter()
                        .zip(rec.iter())
                        .skip(2)
                        .map(|(h, v)| (h.to_string(), serde_json::Value::String(v.into())))
                        .collect();
                    o.apply(&table, op == "D", v, data);
                }
            }
        }
    }

    pub fn live(&self, table: &str) -> Vec<(&String, &Row)> {
        self.tables.get(table).map(|t| t.iter().filter(|(_, r)| !r.deleted).collect()).unwrap_or_default()
    }

    pub fn is_live(&self, table: &str, key: &str) -> bool {
        self.tables.get(table).and_then(|t| t.get(key)).is_some_and(|r| !r.deleted)
    }

    /// Documents per kind the index should hold.
    pub fn expected_kinds(&self, root: &Path) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        m.insert("application".into(), self.live("applications").len() as u64);
        m.insert("approver_group".into(), self.live("approver_groups").len() as u64);
        m.insert("role".into(), self.live("roles").len() as u64);
        let rules = self
            .live("sod_rules")
            .iter()
            .filter(|(_, r)| {
                ["role_a_id", "role_b_id"].iter().all(|c| self.is_live("roles", r.data[*c].as_str().unwrap()))
            })
            .count();
        m.insert("sod_rule".into(), rules as u64);
        let mut docs = Vec::new();
        collect(&root.join("docs"), &mut docs);
        m.insert("document".into(), docs.len() as u64);
        m.retain(|_, n| *n > 0);
        m
    }
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
    out.sort();
}
