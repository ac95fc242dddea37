//! Shared harness for the integration tests: run the real `askiam` binary against a fresh
//! data dir, read its JSON output, and manage `askiam serve` child processes.
#![allow(dead_code)]

pub mod moto;
pub mod oracle;
pub mod pg;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
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
        self.serve_with(drop_dir, &[])
    }

    /// `serve` with extra environment (e.g. `ASKIAM_CHAT_DATABASE_URL`).
    pub fn serve_with(&self, drop_dir: &Path, env: &[(&str, &str)]) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = self.cmd();
        cmd.envs(env.iter().map(|(k, v)| (*k, *v)));
        let mut child = cmd
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

/// A free TCP port on 127.0.0.1 (bound and released; the caller retries if it is taken again
/// before its server binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Last-resort cleanup for a server the tests start: a `sh` that blocks reading a pipe from
/// this process and runs a cleanup script when the pipe closes without being disarmed, i.e.
/// when the test process dies without running `Drop` (SIGKILL, a timeout, Ctrl-C, an abort).
/// It ignores INT/TERM/HUP so that Ctrl-C on `cargo test` does not take it down with the
/// tests. `disarm` (called from the server's `Drop` once it has cleaned up) lets it exit.
pub struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// `cleanup` is a shell snippet; `args` are its positional parameters ($1, $2, ...).
    pub fn arm(cleanup: &str, args: &[OsString]) -> Watchdog {
        let script = format!("trap '' INT TERM HUP\nif read -r x && [ \"$x\" = disarm ]; then exit 0; fi\n{cleanup}\n");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("watchdog")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watchdog sh");
        let stdin = child.stdin.take();
        Watchdog { child, stdin }
    }

    pub fn disarm(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"disarm\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm();
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

/// One HTTP/1.1 request over a fresh connection: (status, body). No client crate needed, and
/// the test sees exactly what went over the wire.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // Read to the end of the body: by Content-Length when given (some servers, Chromium's
    // DevTools among them, keep the connection open), else to EOF.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf).expect("read response");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| raw.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
