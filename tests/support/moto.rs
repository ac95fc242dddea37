//! A local moto server (mock AWS APIs) for integration tests: `python3 -m moto.server`, or the
//! `moto_server` executable when the module form is missing, on a free port of 127.0.0.1.
//! Its output goes to a log file in a temp dir of its own (`Moto::log`), and start-up
//! failures include it. `Drop` kills it and waits; a `Watchdog` kills it if the test process
//! dies without unwinding.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Watchdog;

const START_ATTEMPTS: usize = 5;
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Moto {
    pub port: u16,
    proc: Proc,
    log: PathBuf,
    // Dropped after `proc` (declaration order), so the log stays until the server is gone.
    _dir: tempfile::TempDir,
}

/// The server process and its watchdog; killing and reaping it on drop.
struct Proc {
    child: Child,
    watchdog: Watchdog,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.watchdog.disarm();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Launcher {
    Module,
    Executable,
}

impl Moto {
    pub fn start() -> Moto {
        let dir = tempfile::Builder::new().prefix("askiam-moto-").tempdir().expect("temp dir");
        let log = dir.path().join("moto.log");
        let mut launcher = Launcher::Module;
        let mut failures = Vec::new();
        let mut attempts = 0;
        while attempts < START_ATTEMPTS {
            attempts += 1;
            let port = super::free_port();
            let out = File::create(&log).expect("moto log file");
            let mut cmd = match launcher {
                Launcher::Module => {
                    let mut c = Command::new("python3");
                    c.args(["-m", "moto.server"]);
                    c
                }
                Launcher::Executable => Command::new("moto_server"),
            };
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("clone log file"))
                .stderr(out);
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) if launcher == Launcher::Module && e.kind() == std::io::ErrorKind::NotFound => {
                    failures.push(format!("python3: {e}"));
                    launcher = Launcher::Executable;
                    attempts -= 1;
                    continue;
                }
                Err(e) => panic!(
                    "could not run moto_server (scripts/install-test-deps installs it): {e}\n{}",
                    failures.join("\n")
                ),
            };
            let watchdog = Watchdog::arm(
                "kill -9 \"$1\" 2>/dev/null; rm -rf \"$2\"",
                &[OsString::from(child.id().to_string()), dir.path().into()],
            );
            let mut proc = Proc { child, watchdog };
            match wait_ready(&mut proc.child, port) {
                Ok(()) => return Moto { port, proc, log, _dir: dir },
                Err(why) => {
                    drop(proc);
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    failures.push(format!("port {port}: {why}\n--- moto log ---\n{text}"));
                    if launcher == Launcher::Module && text.contains("No module named") {
                        launcher = Launcher::Executable;
                        attempts -= 1;
                    } else if !text.contains("already in use") {
                        break;
                    }
                }
            }
        }
        panic!("could not start moto server:\n{}", failures.join("\n"));
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's output so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }
}

/// Waits until the server answers `GET /moto-api/` with 200, or fails if it exits first.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("moto server exited: {status}"));
        }
        if let Ok(200) = http_status(port, "/moto-api/") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("moto server did not answer within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status code of `GET path` on 127.0.0.1:port (a minimal HTTP/1.0 client).
pub fn http_status(port: u16, path: &str) -> std::io::Result<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    // "HTTP/1.1 200 OK"
    line.split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/"))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {line:?}")))
}
