//! The fixtures, ingested as a user would: counts, search, idempotency, ordering.

mod support;

use std::path::{Path, PathBuf};

use support::oracle::Oracle;
use support::{copy_file, fixtures, walk, Askiam};

fn kinds(stats: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    serde_json::from_value(stats["documents"].clone()).unwrap()
}

#[test]
fn fixtures_ingest_and_payroll_administrator_is_in_the_top_three() {
    let a = Askiam::new();
    let s = a.ingest(&[&fixtures()]);
    assert_eq!(s["quarantined"], 0, "{s}");
    for field in [
        "documents",
        "upserted",
        "deleted",
        "unchanged",
        "quarantined",
        "skipped_files",
        "embedded_texts",
        "embedding_calls",
        "seconds",
    ] {
        assert!(s.get(field).is_some(), "summary lacks {field}: {s}");
    }
    let hits = a.search("payroll administrator", &["--k", "3"]);
    assert!(hits.iter().any(|h| h["title"] == "Payroll Administrator" && h["kind"] == "role"), "{hits:#?}");

    let stats = a.stats();
    let oracle = Oracle::from_fixtures(&fixtures());
    assert_eq!(kinds(&stats), oracle.expected_kinds(&fixtures()), "{stats}");
    assert_eq!(stats["entities"]["users"], oracle.live("users").len() as u64);
    assert_eq!(stats["entities"]["user_roles"], oracle.live("user_roles").len() as u64);
    assert_eq!(stats["quarantined"], 0);
    // People are never indexed as text.
    assert!(a.search("jdoe", &["--k", "20"]).iter().all(|h| h["kind"] != "user"));
}

#[test]
fn unchanged_reingest_and_reindex_change_nothing() {
    let a = Askiam::new();
    a.ingest(&[&fixtures()]);
    let before = a.stats();
    let again = a.ingest(&[&fixtures()]);
    assert_eq!(again["objects"], 0, "{again}");
    assert_eq!(again["embedded_texts"], 0, "{again}");
    assert_eq!(again["embedding_calls"], 0, "{again}");
    assert!(again["already_applied"].as_u64().unwrap() > 5, "{again}");
    let r = a.json(&["reindex", "--json"]);
    assert_eq!(r["embedded_texts"], 0, "{r}");
    let after = a.stats();
    assert_eq!(after["digest"], before["digest"]);
    assert_eq!(after["generation"].as_u64().unwrap(), before["generation"].as_u64().unwrap() + 1);
    assert_eq!(kinds(&after), kinds(&before));
}

#[test]
fn switching_the_model_takes_a_reindex_that_rebuilds_every_vector() {
    let a = Askiam::new();
    a.ingest(&[&fixtures()]);
    let before = a.stats();
    assert_eq!(before["model"], "hash-v1-384");
    let other = |args: &[&str]| a.cmd().env("ASKIAM_EMBED_DIMS", "128").args(args).output().unwrap();

    // Another model may neither search nor write the index built by the first.
    for args in [&["search", "payroll administrator"][..], &["ingest", fixtures().to_str().unwrap()]] {
        let out = other(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} worked with another model");
        assert!(err.contains("hash-v1-384") && err.contains("askiam reindex"), "{args:?}: {err}");
    }

    // reindex with the new model re-embeds everything into a new generation.
    let out = other(&["reindex", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["embedded_texts"], before["chunks"], "every chunk embedded again: {r}");
    let stats: serde_json::Value = serde_json::from_slice(&other(&["stats", "--json"]).stdout).unwrap();
    assert_eq!((stats["model"].as_str(), stats["dims"].as_u64()), (Some("hash-v1-128"), Some(128)), "{stats}");
    assert_eq!(kinds(&stats), kinds(&before));
    let out = other(&["search", "payroll administrator", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Payroll Administrator"));
    // Once more with the same model: nothing to embed (the content-hash cache).
    let r: serde_json::Value = serde_json::from_slice(&other(&["reindex", "--json"]).stdout).unwrap();
    assert_eq!(r["embedded_texts"], 0, "{r}");
    // The first model is now the stranger.
    assert!(!a.cmd().args(["search", "payroll administrator"]).output().unwrap().status.success());
}

/// Every change file of the fixtures.
fn change_files() -> Vec<PathBuf> {
    walk(&fixtures().join("exports/changes"))
}

fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

#[test]
fn shuffled_and_duplicated_change_files_give_the_identical_index() {
    let reference = Askiam::new();
    reference.ingest(&[&fixtures()]);
    let want = reference.stats()["digest"].clone();

    for (seed, snapshot_last) in [(1u64, false), (7, true), (42, true)] {
        let a = Askiam::new();
        let drop = a.dir.path().join("drop");
        // Documents and the full export are laid down as they are; each change file is
        // delivered twice, once under another name, in a shuffled order.
        support::copy_tree(&fixtures().join("docs"), &drop.join("docs"));
        let mut deliveries: Vec<(PathBuf, PathBuf)> = Vec::new();
        for f in change_files() {
            let rel = f.strip_prefix(fixtures()).unwrap().to_path_buf();
            deliveries.push((f.clone(), drop.join(&rel)));
            let name = format!("again-{}", rel.file_name().unwrap().to_string_lossy());
            deliveries.push((f.clone(), drop.join(rel.with_file_name(name))));
        }
        shuffle(&mut deliveries, seed);
        let full: Vec<PathBuf> = walk(&fixtures().join("exports/full"));
        let copy_full = |drop: &Path| {
            for f in &full {
                copy_file(f, &drop.join(f.strip_prefix(fixtures()).unwrap()));
            }
        };
        if !snapshot_last {
            copy_full(&drop);
            a.ingest(&[&drop]);
        }
        for (from, to) in &deliveries {
            copy_file(from, to);
            a.ingest(&[to]);
        }
        if snapshot_last {
            copy_full(&drop);
        }
        a.ingest(&[&drop]);
        let got = a.stats();
        assert_eq!(got["digest"], want, "seed {seed}, snapshot last {snapshot_last}: {got}");
    }
}

#[test]
fn application_rename_shows_in_its_roles_documents() {
    // Find the rename among the change files rather than hard-coding it.
    let oracle = Oracle::from_fixtures(&fixtures());
    let snapshot = Oracle::from_fixtures_snapshot_only(&fixtures());
    let (app_id, new_name, old_name) = oracle
        .live("applications")
        .into_iter()
        .find_map(|(k, r)| {
            let old = snapshot.tables["applications"].get(k)?;
            let (n, o) = (r.data["name"].as_str()?, old.data["name"].as_str()?);
            (n != o).then(|| (k.clone(), n.to_string(), o.to_string()))
        })
        .expect("the fixtures rename an application");
    let a = Askiam::new();
    a.ingest(&[&fixtures()]);
    let roles: Vec<String> = oracle
        .live("roles")
        .into_iter()
        .filter(|(_, r)| r.data["application_id"] == app_id.as_str())
        .map(|(k, _)| format!("role:{k}"))
        .collect();
    assert!(!roles.is_empty());
    let hits = a.search(&new_name, &["--kind", "role", "--k", "50"]);
    for id in &roles {
        let hit =
            hits.iter().find(|h| h["id"] == id.as_str()).unwrap_or_else(|| panic!("{id} not found for {new_name:?}"));
        let text = hit["text"].as_str().unwrap();
        assert!(text.contains(&format!("is a role in {new_name}.")), "{text}");
        assert!(!text.contains(&format!("is a role in {old_name}.")), "{text}");
        assert_eq!(hit["metadata"]["application"], new_name.as_str());
    }
}
