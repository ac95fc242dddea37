//! Bad input is quarantined with its reason and line; the rest lands; the run still succeeds.

mod support;

use support::{repo, Askiam};

#[test]
fn broken_line_is_quarantined_with_its_line_number_and_the_good_lines_land() {
    let a = Askiam::new();
    let broken = repo().join("tests/data/broken");
    let s = a.ingest(&[&broken]);
    // Line 3 is cut short, line 4 names an unknown table; the empty document is unreadable.
    assert_eq!(s["quarantined"], 3, "{s}");
    assert_eq!(s["objects"], 2, "{s}");

    let q = a.json_lines(&["quarantine", "list", "--json"]);
    let lines: Vec<(String, Option<u64>)> =
        q.iter().map(|e| (e["object"].as_str().unwrap().to_string(), e["line"].as_u64())).collect();
    assert!(lines.contains(&("exports/changes/2026-11-05T00-00-00Z-broken.jsonl".into(), Some(3))), "{q:?}");
    assert!(lines.contains(&("exports/changes/2026-11-05T00-00-00Z-broken.jsonl".into(), Some(4))), "{q:?}");
    assert!(lines.contains(&("docs/empty.md".into(), None)), "{q:?}");
    let unknown = q.iter().find(|e| e["line"] == 4).unwrap();
    assert!(unknown["reason"].as_str().unwrap().contains("unknown table"), "{unknown}");

    // Lines 1, 2 and 5 landed.
    let hits = a.search("Brokenline Ledger Approver", &["--k", "3"]);
    assert_eq!(hits[0]["id"], "role:ROLE-T003", "{hits:?}");
    let stats = a.stats();
    assert_eq!(stats["documents"]["role"], 2, "{stats}");
    assert_eq!(stats["quarantined"], 3, "{stats}");
}

#[test]
fn quarantine_retry_rereads_a_fixed_file() {
    let a = Askiam::new();
    let drop = a.dir.path().join("drop");
    support::copy_tree(&repo().join("tests/data/broken"), &drop);
    a.ingest(&[&drop]);
    // Fix the file: drop the two bad lines.
    let path = drop.join("exports/changes/2026-11-05T00-00-00Z-broken.jsonl");
    let fixed: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 2 && *i != 3)
        .map(|(_, l)| l.to_string())
        .collect();
    std::fs::write(&path, fixed.join("\n")).unwrap();
    std::fs::write(drop.join("docs/empty.md"), "# Now with text\n\nSome words.\n").unwrap();
    let s = a.json(&["quarantine", "retry", "--json"]);
    assert_eq!(s["quarantined"], 0, "{s}");
    assert_eq!(a.stats()["quarantined"], 0);
    assert!(a.json_lines(&["quarantine", "list", "--json"]).is_empty());
}

#[test]
fn a_second_writer_fails_at_once_with_a_clear_message() {
    let a = Askiam::new();
    let drop = a.dir.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let _serve = a.serve(&drop);
    let out = a.cmd().args(["ingest", "--json"]).arg(repo().join("tests/data/broken")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another askiam process is writing"), "{err}");
    // Readers are not blocked.
    a.stats();
}

#[test]
fn files_under_no_known_prefix_are_skipped_and_listed() {
    let a = Askiam::new();
    let s = a.ingest(&[&repo().join("tests/data/broken"), &repo().join("Cargo.toml")]);
    assert_eq!(s["skipped_files"], 1, "{s}");
    assert!(s["skipped"][0].as_str().unwrap().contains("Cargo.toml"), "{s}");
}

/// A new full-export run copied from the fixtures' one, with a later snapshot version.
fn later_run(drop: &std::path::Path, name: &str) -> std::path::PathBuf {
    let src = std::fs::read_dir(support::fixtures().join("exports/full")).unwrap().next().unwrap().unwrap().path();
    let run = drop.join("exports/full").join(name);
    std::fs::create_dir_all(&run).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, run.join(f.file_name().unwrap())).unwrap();
    }
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("_MANIFEST.json")).unwrap()).unwrap();
    m["snapshot"]["commit_time"] = "2026-12-20T00:00:00Z".into();
    m["snapshot"]["lsn"] = "9/0".into();
    std::fs::write(run.join("_MANIFEST.json"), m.to_string()).unwrap();
    run
}

#[test]
fn a_truncated_snapshot_table_deletes_nothing() {
    let a = Askiam::new();
    a.ingest(&[&support::fixtures()]);
    let roles = a.stats()["documents"]["role"].as_u64().unwrap();
    let drop = a.dir.path().join("drop");
    let run = later_run(&drop, "2026-12-20T00-00-00Z");
    // Cut roles.csv in half, as an interrupted upload would.
    let text = std::fs::read_to_string(run.join("roles.csv")).unwrap();
    let half: Vec<&str> = text.lines().take(text.lines().count() / 2).collect();
    std::fs::write(run.join("roles.csv"), half.join("\n") + "\n").unwrap();
    let s = a.ingest(&[&drop]);
    assert!(s["quarantined"].as_u64().unwrap() >= 1, "{s}");
    let q = a.json_lines(&["quarantine", "list", "--json"]);
    assert!(
        q.iter().any(|e| e["object"].as_str().unwrap().ends_with("roles.csv")
            && e["reason"].as_str().unwrap().contains("not deleted")),
        "{q:?}"
    );
    // The roles the half file lacks are still there (the snapshot is the fixture's own, so
    // the count is the snapshot's, minus nothing).
    let after = a.stats()["documents"]["role"].as_u64().unwrap();
    assert!(after >= roles - 2, "roles went from {roles} to {after}");
}

#[test]
fn a_manifest_for_missing_parts_waits_and_applies_when_they_arrive() {
    let a = Askiam::new();
    a.ingest(&[&support::fixtures()]);
    let generation = a.stats()["generation"].as_u64().unwrap();
    let drop = a.dir.path().join("drop");
    let run = later_run(&drop, "2026-12-21T00-00-00Z");
    let parked = a.dir.path().join("users.csv");
    std::fs::rename(run.join("users.csv"), &parked).unwrap();
    let s = a.ingest(&[&drop]);
    assert!(s["pending"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(a.stats()["generation"], generation);
    std::fs::rename(&parked, run.join("users.csv")).unwrap();
    let s = a.ingest(&[&run.join("users.csv")]);
    assert_eq!(s["pending"], 0, "{s}");
    assert_eq!(a.stats()["generation"].as_u64().unwrap(), generation + 1);
}

#[test]
fn a_corrupt_gzip_file_is_quarantined_and_the_files_after_it_land() {
    let a = Askiam::new();
    let drop = a.dir.path().join("drop/exports/changes");
    std::fs::create_dir_all(&drop).unwrap();
    // A valid gzip header followed by garbage, as a cut-off upload leaves it.
    let good = support::fixtures().join("exports/changes/2026-11-03T08-00-00Z-0003.jsonl.gz");
    let mut bytes = std::fs::read(&good).unwrap();
    let half = bytes.len() / 2;
    bytes.truncate(half);
    bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    std::fs::write(drop.join("0001-corrupt.jsonl.gz"), &bytes).unwrap();
    std::fs::copy(
        repo().join("tests/data/broken/exports/changes/2026-11-05T00-00-00Z-broken.jsonl"),
        drop.join("0002-after.jsonl"),
    )
    .unwrap();
    let s = a.ingest(&[&a.dir.path().join("drop")]);
    assert_eq!(s["objects"], 2, "{s}");
    let q = a.json_lines(&["quarantine", "list", "--json"]);
    assert!(
        q.iter().any(|e| e["object"] == "exports/changes/0001-corrupt.jsonl.gz"
            && e["reason"].as_str().unwrap().contains("unreadable file")),
        "{q:?}"
    );
    assert!(!a.search("Brokenline Ledger Approver", &[]).is_empty());
}
