//! Smoke tests for the server harness in tests/support: a real PostgreSQL with the fixture
//! catalogue (support::pg) and a real moto server (support::moto).

mod support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::moto::{http_status, Moto};
use support::pg::PgServer;

/// The CSV that fixtures/db/load.sql loads into `table`, read from its `\copy` line.
fn copied_csv(table: &str) -> PathBuf {
    let db = support::fixtures().join("db");
    let script = std::fs::read_to_string(db.join("load.sql")).unwrap();
    let prefix = format!("\\copy {table} ");
    let line = script.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix}in load.sql"));
    let path = line.split(" from '").nth(1).and_then(|r| r.split('\'').next()).expect("quoted path after from");
    db.join(path)
}

fn csv_rows(path: &Path) -> usize {
    // Records, not lines, in case a quoted field ever spans lines.
    csv::Reader::from_path(path).unwrap().records().collect::<Result<Vec<_>, _>>().unwrap().len()
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

#[test]
fn pg_server_has_the_fixture_catalogue() {
    let t = Instant::now();
    let pg = PgServer::start();
    eprintln!("PgServer::start: {:?}", t.elapsed());

    let roles = copied_csv("roles");
    let expected = csv_rows(&roles);
    assert!(expected > 0, "{} has no rows", roles.display());
    assert_eq!(pg.psql("select count(*) from roles"), expected.to_string());
    assert_eq!(pg.psql("select name from roles where id='ROLE-0008'"), "HR Analyst");
    assert_eq!(pg.url(), format!("postgres://postgres@127.0.0.1:{}/askiam", pg.port));
}

#[test]
fn pg_servers_run_in_parallel_and_stop_on_drop() {
    let servers: Vec<PgServer> = (0..3)
        .map(|_| std::thread::spawn(PgServer::start))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let mut ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "servers share a port");
    for (i, s) in servers.iter().enumerate() {
        s.psql(&format!("create table mark (n int); insert into mark values ({i})"));
    }
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(s.psql("select n from mark"), i.to_string());
    }
    let dirs: Vec<PathBuf> = servers.iter().map(|s| s.data_dir()).collect();
    drop(servers);
    for (port, dir) in ports.iter().zip(&dirs) {
        assert!(!port_open(*port), "port {port} still open after drop");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn pg_server_stops_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let pg = PgServer::start();
        tx.send(pg.port).unwrap();
        panic!("deliberate panic with a server running");
    })
    .join();
    assert!(result.is_err());
    let port = rx.recv().unwrap();
    assert!(!port_open(port), "port {port} still open after the panicking test unwound");
}

#[test]
fn moto_server_answers() {
    let t = Instant::now();
    let moto = Moto::start();
    eprintln!("Moto::start: {:?}", t.elapsed());
    assert_eq!(moto.endpoint(), format!("http://127.0.0.1:{}", moto.port));
    let status = http_status(moto.port, "/moto-api/").unwrap_or_else(|e| panic!("{e}\n{}", moto.log()));
    assert_eq!(status, 200, "{}", moto.log());

    let (port, pid) = (moto.port, moto.pid());
    drop(moto);
    assert!(!port_open(port), "moto still listening after drop");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "moto process {pid} left behind");
}
