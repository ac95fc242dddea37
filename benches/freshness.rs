//! Freshness: how long from a change file landing in the drop dir of a running `askiam serve`
//! until the change is searchable. Run with `cargo bench --bench freshness` (`-- N` for the
//! number of probes, default 40).
//!
//! Baseline, measured in the same run: a one-shot `askiam ingest` of an equal change file into
//! an equal data dir (process start, ingest, exit), i.e. the cost of the work itself without
//! watching. The ratio says what the watcher (event, settle time, scan) adds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use askiam::index::embedded::EmbeddedIndex;
use askiam::index::{Index, SearchRequest};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_askiam")
}

fn probe_line(i: usize) -> String {
    serde_json::json!({
        "op": "insert", "table": "roles", "lsn": format!("3/{i:08X}"),
        "commit_time": format!("2026-12-10T00:{:02}:{:02}Z", i / 60, i % 60),
        "row": {"id": format!("ROLE-FP{i:04}"), "name": format!("Freshness Probe fprobe{i}x"),
                "description": "A role added to measure freshness.", "risk_level": "low",
                "requestable": true, "application_id": null, "approver_group_id": null,
                "updated_at": "2026-12-10T00:00:00Z"}
    })
    .to_string()
}

fn write_atomically(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(40);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let tmp = tempfile::tempdir().unwrap();

    // Baseline: one-shot ingests of single change files.
    let base_data = tmp.path().join("base-data");
    let run = |args: &[&str], data: &Path| {
        let st = Command::new(bin())
            .env("ASKIAM_DATA_DIR", data)
            .env("ASKIAM_LOG", "warn")
            .env("ASKIAM_EMBED_PROVIDER", "hash")
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "askiam {args:?} failed");
    };
    run(&["ingest", fixtures.to_str().unwrap()], &base_data);
    let base_dir = tmp.path().join("base-drop/exports/changes");
    let mut baseline = Vec::new();
    for i in 0..n {
        let name = format!("probe-{i:04}.jsonl");
        write_atomically(&base_dir, &name, &(probe_line(i) + "\n"));
        let t = Instant::now();
        run(&["ingest", base_dir.join(&name).to_str().unwrap()], &base_data);
        baseline.push(t.elapsed());
    }

    // Served: the same files dropped into a watched dir.
    let data = tmp.path().join("data");
    let drop = tmp.path().join("drop");
    run(&["ingest", fixtures.to_str().unwrap()], &data);
    std::fs::create_dir_all(&drop).unwrap();
    let mut serve = Command::new(bin())
        .env("ASKIAM_DATA_DIR", &data)
        .env("ASKIAM_LOG", "warn")
        .env("ASKIAM_EMBED_PROVIDER", "hash")
        .args(["serve", "--addr", "127.0.0.1:0", "--drop-dir"])
        .arg(&drop)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let index = EmbeddedIndex::open_read_only(&data.join("index.sqlite")).unwrap();
    let mut fresh = Vec::new();
    for i in 0..n {
        let req = SearchRequest { text: format!("fprobe{i}x"), vector: None, k: 1, ..Default::default() };
        let t = Instant::now();
        write_atomically(&drop.join("exports/changes"), &format!("probe-{i:04}.jsonl"), &(probe_line(i) + "\n"));
        loop {
            let hits = index.search(&req).await.unwrap();
            if hits.first().is_some_and(|h| h.id == format!("role:ROLE-FP{i:04}")) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "probe {i} never became searchable");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fresh.push(t.elapsed());
    }
    let _ = serve.kill();
    let _ = serve.wait();

    baseline.sort();
    fresh.sort();
    let (b50, f50) = (percentile(&baseline, 0.5), percentile(&fresh, 0.5));
    println!("freshness over {n} change files (drop → searchable), askiam serve:");
    println!(
        "  p50 {:.0} ms   p90 {:.0} ms   p99 {:.0} ms   max {:.0} ms   (goal p99 < 2000 ms)",
        ms(f50),
        ms(percentile(&fresh, 0.9)),
        ms(percentile(&fresh, 0.99)),
        ms(*fresh.last().unwrap())
    );
    println!("baseline, one-shot `askiam ingest` of the same file (process start to exit):");
    println!("  p50 {:.0} ms   p99 {:.0} ms", ms(b50), ms(percentile(&baseline, 0.99)));
    println!("ratio served/one-shot at p50: {:.2}x", ms(f50) / ms(b50));
}
