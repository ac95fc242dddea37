//! A throwaway PostgreSQL 15 server with the fixture catalogue loaded (fixtures/db/load.sql),
//! for integration tests that need a real database.
//!
//! Each `PgServer` has its own temp dir (data dir, socket dir, log) and its own TCP port on
//! 127.0.0.1, so tests can start servers in parallel. Postgres refuses to run as root, so when
//! the tests run as root the server-side binaries (initdb, pg_ctl) run as `postgres` through
//! `runuser` and the temp dir is chowned to it; psql always runs as the current user over TCP
//! (`\copy` reads the fixture CSVs on the client side). `Drop` stops the server with
//! `pg_ctl stop -m immediate`; a `Watchdog` does the same if the test process dies without
//! unwinding.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::Watchdog;

const FALLBACK_BINDIR: &str = "/usr/lib/postgresql/15/bin";
const START_ATTEMPTS: usize = 5;

pub struct PgServer {
    pub port: u16,
    bindir: PathBuf,
    as_postgres: bool,
    stopped: bool,
    watchdog: Watchdog,
    // Dropped last (fields drop in declaration order, after `Drop::drop` has stopped the server).
    dir: tempfile::TempDir,
}

impl PgServer {
    /// Starts a fresh server on a free port, creates database `askiam` and loads the fixtures.
    pub fn start() -> PgServer {
        let started = Instant::now();
        let bindir = bindir();
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new().prefix("askiam-pg-").tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("sock")).expect("socket dir");
        if as_postgres {
            run_ok(Command::new("chown").arg("-R").arg("postgres").arg(dir.path()), "chown -R postgres");
        }
        let data = dir.path().join("data");

        // Armed before anything can start, so that a server is stopped (and its dir removed)
        // even if the test process is killed half-way.
        let mut stop = server_cmd_argv(&bindir, as_postgres, "pg_ctl");
        stop.extend(["stop", "-D"].map(OsString::from));
        stop.push(data.clone().into());
        stop.extend(["-m", "immediate", "-w"].map(OsString::from));
        let mut args: Vec<OsString> = vec![dir.path().into()];
        args.extend(stop);
        let watchdog = Watchdog::arm("d=$1; shift; \"$@\" >/dev/null 2>&1; rm -rf \"$d\"", &args);

        let mut pg = PgServer { port: 0, bindir, as_postgres, stopped: true, watchdog, dir };

        let out = pg
            .server_cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("run initdb");
        check(&out, "initdb");

        let log = pg.log_path();
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = super::free_port();
            let _ = std::fs::remove_file(&log);
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off",
                pg.dir.path().join("sock").display()
            );
            pg.stopped = false; // From here on `Drop` must try to stop it, whatever happens.
            let out = pg
                .server_cmd("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                pg.port = port;
                break;
            }
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            let collision = server_log.contains("could not bind") || server_log.contains("already in use");
            failures.push(format!(
                "port {port}: pg_ctl start failed: {}\n{}{}\n--- server log ---\n{server_log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
            if !collision {
                break;
            }
        }
        assert!(pg.port != 0, "could not start PostgreSQL:\n{}", failures.join("\n"));

        pg.psql_in("postgres", "create database askiam", None);
        let db_dir = super::fixtures().join("db");
        let out = pg
            .psql_cmd("askiam", Some(&db_dir))
            .env("PGOPTIONS", "-c client_min_messages=warning")
            .args(["-q", "-f", "load.sql"])
            .output()
            .expect("run psql -f load.sql");
        check(&out, "psql -f fixtures/db/load.sql");
        // Captured by the test harness; shown for failing tests or with --nocapture.
        eprintln!("PgServer::start on port {} took {:?}", pg.port, started.elapsed());
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/askiam`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/askiam", self.port)
    }

    /// Runs SQL in database `askiam` (psql -At, stopping on the first error); panics with
    /// psql's stderr on failure, returns stdout trimmed.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("askiam", sql, None)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server (idempotent; `Drop` calls it).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = self
            .server_cmd("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "30"])
            .output();
        // If pg_ctl could not do it, kill the postmaster; with -m immediate and no postmaster
        // the backends exit on their own.
        if let Some(pid) = self.postmaster_pid() {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        (pid > 0 && unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
    }

    fn psql_in(&self, db: &str, sql: &str, cwd: Option<&Path>) -> String {
        let out = self.psql_cmd(db, cwd).arg("-c").arg(sql).output().expect("run psql");
        check(&out, &format!("psql -c {sql:?}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// psql as the current user, over TCP.
    fn psql_cmd(&self, db: &str, cwd: Option<&Path>) -> Command {
        let mut c = Command::new(self.bindir.join("psql"));
        c.args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", db])
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null());
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        c
    }

    /// initdb / pg_ctl, as `postgres` when running as root.
    fn server_cmd(&self, tool: &str) -> Command {
        let argv = server_cmd_argv(&self.bindir, self.as_postgres, tool);
        let mut c = Command::new(&argv[0]);
        // The temp dir belongs to postgres; a cwd it cannot enter makes initdb complain.
        c.args(&argv[1..]).current_dir(self.dir.path()).stdin(Stdio::null());
        c
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        self.watchdog.disarm();
    }
}

fn server_cmd_argv(bindir: &Path, as_postgres: bool, tool: &str) -> Vec<OsString> {
    let mut argv: Vec<OsString> = Vec::new();
    if as_postgres {
        argv.extend(["runuser", "-u", "postgres", "--"].map(OsString::from));
    }
    argv.push(bindir.join(tool).into());
    argv
}

/// `pg_config --bindir` if it has initdb, else the Debian PostgreSQL 15 location.
fn bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    for dir in from_pg_config.into_iter().chain([PathBuf::from(FALLBACK_BINDIR)]) {
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return dir;
        }
    }
    panic!(
        "PostgreSQL server binaries not found (pg_config --bindir, {FALLBACK_BINDIR}); \
         run scripts/install-test-deps or apt-get install postgresql-15"
    );
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    check(&out, what);
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
