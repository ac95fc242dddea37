//! `askiam serve` as a user runs it: the real binary watching a drop dir.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::oracle::Oracle;
use support::{copy_tree, fixtures, wait_for, Askiam};

/// A change file in askiam's CDC format, written atomically (temp name, then rename), as an
/// exporter or `aws s3 cp` would leave it.
fn drop_change(drop: &Path, name: &str, lines: &[serde_json::Value]) {
    let dir = drop.join("exports/changes");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn change(op: &str, table: &str, lsn: u32, row: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "op": op, "table": table, "lsn": format!("1/{lsn:08X}"),
        "commit_time": format!("2026-12-01T00:00:{:02}.{:06}Z", lsn / 1000, lsn % 1000), "row": row,
    })
}

fn find(a: &Askiam, q: &str, id: &str) -> Option<serde_json::Value> {
    a.search(q, &["--k", "10"]).into_iter().find(|h| h["id"] == id)
}

#[test]
fn serve_follows_the_drop_dir_changes_deletes_renames_and_full_exports() {
    let a = Askiam::new();
    let drop = a.dir.path().join("drop");
    copy_tree(&fixtures(), &drop);
    let oracle = Oracle::from_fixtures(&fixtures());
    let want_roles = oracle.live("roles").len() as u64;
    let _serve = a.serve(&drop);
    wait_for("the start-up scan to ingest the fixtures", Duration::from_secs(120), || {
        (a.stats()["documents"]["role"] == want_roles).then_some(())
    });
    let app_id = oracle.live("applications")[0].0.clone();

    // A new role, in a new change file.
    let started = Instant::now();
    drop_change(
        &drop,
        "2026-12-01-0001.jsonl",
        &[change(
            "insert",
            "roles",
            1,
            serde_json::json!({
        "id": "ROLE-Q001", "name": "Quantum Ledger Auditor", "application_id": app_id,
        "description": "Audits quantum ledger postings.", "risk_level": "medium", "requestable": true,
        "approver_group_id": null, "updated_at": "2026-12-01T00:00:00Z"}),
        )],
    );
    wait_for("the new role to be searchable", Duration::from_secs(15), || {
        find(&a, "Quantum Ledger Auditor", "role:ROLE-Q001")
    });
    eprintln!("new role searchable after {:?}", started.elapsed());

    // The application is renamed: the role's document follows.
    drop_change(
        &drop,
        "2026-12-01-0002.jsonl",
        &[change(
            "update",
            "applications",
            2,
            serde_json::json!({
        "id": app_id, "name": "Zephyr Finance Cloud", "description": "Renamed.", "owner_email": "owner@example.com",
        "criticality": "high", "updated_at": "2026-12-01T00:00:00Z"}),
        )],
    );
    let hit = wait_for("the rename to reach the role document", Duration::from_secs(15), || {
        find(&a, "Quantum Ledger Auditor", "role:ROLE-Q001")
            .filter(|h| h["text"].as_str().unwrap().contains("Zephyr Finance Cloud"))
    });
    assert_eq!(hit["metadata"]["application"], "Zephyr Finance Cloud");

    // A delete removes it.
    drop_change(
        &drop,
        "2026-12-01-0003.jsonl",
        &[change("delete", "roles", 3, serde_json::json!({"id": "ROLE-Q001"}))],
    );
    wait_for("the deleted role to leave the index", Duration::from_secs(15), || {
        find(&a, "Quantum Ledger Auditor", "role:ROLE-Q001").is_none().then_some(())
    });

    // Removing a document file removes its document.
    let faq = drop.join("docs/guides/faq.txt");
    assert_eq!(a.stats()["documents"]["document"], 6);
    std::fs::remove_file(&faq).unwrap();
    wait_for("the removed document to leave the index", Duration::from_secs(15), || {
        (a.stats()["documents"]["document"] == 5).then_some(())
    });

    // A newer full export rebuilds into a new generation; searches keep answering throughout.
    let generation = a.stats()["generation"].as_u64().unwrap();
    let run = std::fs::read_dir(fixtures().join("exports/full")).unwrap().next().unwrap().unwrap().path();
    let new_run = drop.join("exports/full/2026-12-02T00-00-00Z");
    std::fs::create_dir_all(&new_run).unwrap();
    for f in std::fs::read_dir(&run).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap() != "_MANIFEST.json" {
            std::fs::copy(&f, new_run.join(f.file_name().unwrap())).unwrap();
        }
    }
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("_MANIFEST.json")).unwrap()).unwrap();
    manifest["run"] = "2026-12-02T00-00-00Z".into();
    manifest["snapshot"]["commit_time"] = "2026-12-02T00:00:00Z".into();
    manifest["snapshot"]["lsn"] = "2/0".into();
    std::fs::write(new_run.join("_MANIFEST.json"), manifest.to_string()).unwrap();
    let mut searches = 0;
    wait_for("the rebuild to swap in a new generation", Duration::from_secs(120), || {
        let hits = a.search("payroll administrator", &["--k", "3"]);
        assert!(!hits.is_empty(), "a search during the rebuild came back empty");
        searches += 1;
        (a.stats()["generation"].as_u64().unwrap() > generation).then_some(())
    });
    eprintln!("{searches} searches answered while the rebuild ran");
    // The new snapshot is newer than every change so far: the state is the snapshot's.
    let snapshot = Oracle::from_fixtures_snapshot_only(&fixtures());
    let got: std::collections::BTreeMap<String, u64> = serde_json::from_value(a.stats()["documents"].clone()).unwrap();
    let mut want = snapshot.expected_kinds(&fixtures());
    // The full export covers tables only: the removed document stays removed.
    *want.get_mut("document").unwrap() -= 1;
    assert_eq!(got, want);
    // The rename is undone: the application is back under its snapshot name, and nothing
    // carries the renamed one. (Which application was renamed varies from run to run; one
    // whose own text says "finance" or "cloud" may well be among these hits.)
    let hits = a.search("Zephyr Finance Cloud", &["--k", "10"]);
    assert!(hits.iter().all(|h| !h["text"].as_str().unwrap().contains("Zephyr")), "{hits:#?}");
    // Its name is the snapshot's, which is not the live one when the change exports renamed
    // it (Concur became SAP Concur).
    let (_, row) = snapshot.live("applications").into_iter().find(|(k, _)| **k == app_id).expect("in the snapshot");
    let name = row.data["name"].as_str().unwrap();
    let app = find(&a, name, &format!("application:{app_id}")).expect("the application under its own name");
    assert_eq!(app["title"], name);
}

#[test]
fn killing_serve_mid_ingest_and_restarting_converges_to_the_same_index() {
    let a = Askiam::new();
    let drop = a.dir.path().join("drop");
    a.run(&["fixtures", "generate", "--scale", "20", "--out", drop.to_str().unwrap()]);
    // The reference: one uninterrupted ingest of the same files.
    let reference = Askiam::new();
    reference.ingest(&[&drop]);
    let want = reference.stats()["digest"].clone();

    for (i, delay_ms) in [300u64, 800, 1500].into_iter().enumerate() {
        let mut s = a.serve(&drop);
        std::thread::sleep(Duration::from_millis(delay_ms));
        s.kill9();
        if i == 0 {
            // The first kill must land mid-ingest, or this test proves nothing.
            assert_ne!(a.stats()["digest"], want, "the server finished before it was killed");
        }
    }
    let _s = a.serve(&drop);
    wait_for("the restarted server to converge", Duration::from_secs(240), || {
        (a.stats()["digest"] == want).then_some(())
    });
    assert_eq!(a.stats()["quarantined"], 0);
}

#[test]
fn a_document_removed_while_serve_was_stopped_is_removed_at_start_and_comes_back_when_restored() {
    let a = Askiam::new();
    let drop = a.dir.path().join("docs-drop");
    copy_tree(&fixtures().join("docs"), &drop.join("docs"));
    {
        let _s = a.serve(&drop);
        wait_for("the documents", Duration::from_secs(30), || (a.stats()["documents"]["document"] == 6).then_some(()));
    }
    // Stopped (the handle killed it): remove a file, start again.
    let faq = drop.join("docs/guides/faq.txt");
    let parked = a.dir.path().join("faq.txt");
    std::fs::rename(&faq, &parked).unwrap();
    let _s = a.serve(&drop);
    wait_for("the removed document to go", Duration::from_secs(30), || {
        (a.stats()["documents"]["document"] == 5).then_some(())
    });
    // The same file, same content and mtime, comes back.
    std::fs::rename(&parked, &faq).unwrap();
    wait_for("the restored document to return", Duration::from_secs(30), || {
        (a.stats()["documents"]["document"] == 6).then_some(())
    });
}

#[test]
fn a_drop_dir_inside_a_folder_named_docs_works() {
    let a = Askiam::new();
    let drop = a.dir.path().join("docs/drop");
    copy_tree(&fixtures().join("docs"), &drop.join("docs"));
    let _s = a.serve(&drop);
    wait_for("the documents", Duration::from_secs(30), || (a.stats()["documents"]["document"] == 6).then_some(()));
}
