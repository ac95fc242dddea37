//! Shared harness for the integration tests: run the real `askiam` binary against a fresh
//! data dir, read its JSON output, and manage `askiam serve` child processes.
#![allow(dead_code)]

pub mod oracle;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_askiam")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo().join("fixtures")
}

/// A data dir of its own and helpers to run commands against it.
pub struct Askiam {
    pub dir: tempfile::TempDir,
}

impl Askiam {
    pub fn new() -> Self {
        Askiam { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        // Most tests run on the deterministic hashing embedder; model tests opt in.
        c.env("ASKIAM_DATA_DIR", self.data_dir()).env("ASKIAM_LOG", "askiam=warn").env("ASKIAM_EMBED_PROVIDER", "hash");
        c.env_remove("ASKIAM_CONFIG");
        c
    }

    /// Runs a command and requires it to succeed.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("run askiam");
        assert!(
            out.status.success(),
            "askiam {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs a command with `--json` output and parses every stdout line.
    pub fn json_lines(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let out = self.run(args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut v = self.json_lines(args);
        assert_eq!(v.len(), 1, "expected one JSON line from {args:?}, got {v:?}");
        v.pop().unwrap()
    }

    pub fn ingest(&self, paths: &[&Path]) -> serde_json::Value {
        let mut args = vec!["ingest".to_string(), "--json".to_string()];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.json(&refs)
    }

    pub fn stats(&self) -> serde_json::Value {
        self.json(&["stats", "--json"])
    }

    pub fn search(&self, q: &str, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["search", q, "--json"];
        args.extend_from_slice(extra);
        self.json_lines(&args)
    }

    /// Starts `askiam serve` on a drop dir and waits until it listens (it takes the data
    /// dir's writer lock before binding); killed when the handle drops.
    pub fn serve(&self, drop_dir: &Path) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = self
            .cmd()
            .args(["serve", "--drop-dir"])
            .arg(drop_dir)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn askiam serve");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("askiam serve exited early: {status}");
            }
            assert!(Instant::now() < deadline, "askiam serve did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Served { child, port }
    }
}

pub struct Served {
    pub child: Child,
    pub port: u16,
}

impl Served {
    pub fn kill9(&mut self) {
        // SIGKILL: no chance to clean up, like a crash or an OOM kill.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Copies a directory tree (files only), keeping modification times so that document
/// versions (mtime-based) are the same in the copy.
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        copy_file(&entry, &dest);
    }
}

pub fn copy_file(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
    let mtime = std::fs::metadata(from).unwrap().modified().unwrap();
    let f = std::fs::File::options().write(true).open(to).unwrap();
    f.set_modified(mtime).unwrap();
}

pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
