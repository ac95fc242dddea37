//! Which files mean what, decided by key prefix — the same in the drop dir, S3 and `fixtures/`.
//!
//! The meaningful part of a key starts at its first `exports/` or `docs/` segment; whatever
//! comes before it (`fixtures/`, a drop dir, a bucket prefix) is ignored, so the same file has
//! the same object key — and its documents the same ids — wherever it is ingested from.
//!
//! - `exports/full/<run>/<table>.{csv,jsonl}[.gz]` — part of a full export, applied when the
//!   run's `_MANIFEST.json` (its completion marker) is there;
//! - `exports/changes/…` — incremental changes: own CDC JSONL, DMS CSV (`…/<table>/<file>.csv`
//!   or `<table>.csv`), DMS Parquet (the same, `.parquet`), plain table CSV/JSONL named after the
//!   table;
//! - `docs/…` — Markdown, text or HTML documents;
//! - anything else is skipped and listed, never an error.

use crate::schema;

pub const MANIFEST: &str = "_MANIFEST.json";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    Jsonl,
    /// AWS DMS `DataFormat=parquet`.
    Parquet,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DocFormat {
    Markdown,
    Text,
    Html,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A table file of full export `run`; `run_key` is the key of the run's folder.
    FullPart {
        run: String,
        run_key: String,
        table: String,
        format: TableFormat,
    },
    Manifest {
        run: String,
        run_key: String,
    },
    /// Own CDC JSON Lines.
    Cdc,
    /// A table file of changes or rows: DMS CSV (with `Op`) or a plain export.
    TableChanges {
        table: String,
        format: TableFormat,
    },
    Doc(DocFormat),
    Skip(String),
}

/// The object key of a path: from its first `exports/` or `docs/` segment on, `/`-separated.
/// `None` when the path has neither.
pub fn object_key(path: &str) -> Option<String> {
    let norm = path.replace('\\', "/");
    let segments: Vec<&str> = norm.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    let start = segments.iter().position(|s| *s == "exports" || *s == "docs")?;
    Some(segments[start..].join("/"))
}

/// Strips `.gz` and returns (stem, extension) of the file name.
fn name_parts(name: &str) -> (&str, &str) {
    let name = name.strip_suffix(".gz").unwrap_or(name);
    match name.rsplit_once('.') {
        Some((stem, ext)) => (stem, ext),
        None => (name, ""),
    }
}

fn table_format(ext: &str) -> Option<TableFormat> {
    match ext.to_ascii_lowercase().as_str() {
        "csv" => Some(TableFormat::Csv),
        "jsonl" | "ndjson" | "json" => Some(TableFormat::Jsonl),
        "parquet" => Some(TableFormat::Parquet),
        _ => None,
    }
}

/// A table named by the file stem (`roles.csv`) or, for DMS layouts, by the parent folder
/// (`…/iam/roles/20261103-101500123.csv`).
fn table_for(segments: &[&str], stem: &str) -> Option<String> {
    schema::table(stem)
        .or_else(|| segments.len().checked_sub(2).and_then(|i| schema::table(segments[i])))
        .map(|t| t.name.to_string())
}

pub fn classify(key: &str) -> Route {
    let segments: Vec<&str> = key.split('/').collect();
    let Some(name) = segments.last().copied().filter(|n| !n.is_empty()) else {
        return Route::Skip("not a file".into());
    };
    if name.starts_with('.') {
        return Route::Skip("hidden file".into());
    }
    let (stem, ext) = name_parts(name);
    match segments.as_slice() {
        ["exports", "full", run, rest @ ..] if !rest.is_empty() => {
            let run_key = format!("exports/full/{run}");
            if rest == [MANIFEST] {
                return Route::Manifest { run: run.to_string(), run_key };
            }
            match (table_format(ext), table_for(&segments, stem)) {
                (Some(format), Some(table)) => Route::FullPart { run: run.to_string(), run_key, table, format },
                (None, _) => Route::Skip(format!("full export file of unknown type .{ext}")),
                (_, None) => Route::Skip(format!("full export file for no known table ({stem})")),
            }
        }
        ["exports", "changes", ..] => match table_format(ext) {
            Some(format) => match table_for(&segments, stem) {
                Some(table) => Route::TableChanges { table, format },
                None if format == TableFormat::Jsonl => Route::Cdc,
                None => Route::Skip(format!(
                    "CSV change file for no known table ({stem}); put it under a folder named after its table"
                )),
            },
            None => Route::Skip(format!("change file of unknown type .{ext}")),
        },
        ["docs", ..] => match ext.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Route::Doc(DocFormat::Markdown),
            "txt" | "text" => Route::Doc(DocFormat::Text),
            "html" | "htm" => Route::Doc(DocFormat::Html),
            other => Route::Skip(format!("unsupported document type .{other}")),
        },
        _ => Route::Skip("not under exports/full/<run>/, exports/changes/ or docs/".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_start_at_the_first_known_segment() {
        assert_eq!(object_key("fixtures/docs/a.md").as_deref(), Some("docs/a.md"));
        assert_eq!(object_key("./drop/exports/changes/x.jsonl").as_deref(), Some("exports/changes/x.jsonl"));
        assert_eq!(object_key("fixtures/db/schema.sql"), None);
    }

    #[test]
    fn routes_by_prefix_and_name() {
        assert_eq!(classify("exports/changes/2026-11-02-0001.jsonl.gz"), Route::Cdc);
        assert_eq!(
            classify("exports/changes/dms/iam/roles/20261103-101500123.csv"),
            Route::TableChanges { table: "roles".into(), format: TableFormat::Csv }
        );
        assert_eq!(
            classify("exports/full/r1/user_roles.csv.gz"),
            Route::FullPart {
                run: "r1".into(),
                run_key: "exports/full/r1".into(),
                table: "user_roles".into(),
                format: TableFormat::Csv
            }
        );
        assert_eq!(
            classify("exports/full/r1/_MANIFEST.json"),
            Route::Manifest { run: "r1".into(), run_key: "exports/full/r1".into() }
        );
        assert_eq!(
            classify("exports/changes/dms/iam/user_roles/LOAD00000001.parquet"),
            Route::TableChanges { table: "user_roles".into(), format: TableFormat::Parquet }
        );
        assert_eq!(classify("docs/guides/x.html"), Route::Doc(DocFormat::Html));
        assert!(matches!(classify("docs/x.pdf"), Route::Skip(_)));
        assert!(matches!(classify("exports/changes/unknown.csv"), Route::Skip(_)));
        assert!(matches!(classify("db/schema.sql"), Route::Skip(_)));
    }
}
