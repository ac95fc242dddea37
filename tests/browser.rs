//! The chat page in a real headless Chromium, driven over the DevTools protocol: type a
//! question, press Enter, see the answer and the entity chip, save a screenshot.
//!
//! Only a WebSocket client is needed to speak CDP, so the test shows exactly what a user's
//! browser does: load `/`, run the page's own script, `fetch("/chat")`, render.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{fixtures, http, Askiam};
use tungstenite::{stream::MaybeTlsStream, Message, WebSocket};

struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into()));
        cmd.args([
            "--headless=new",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-dev-shm-usage",
            "--remote-debugging-port=0",
            "--window-size=1100,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // Chromium's sandbox needs user namespaces it does not get as root in a container.
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--no-sandbox");
        }
        let mut child = cmd.spawn().expect("start chromium (scripts/install-test-deps installs it)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let browser_ws = rx.recv_timeout(Duration::from_secs(30)).expect("chromium did not open a DevTools port");
        let port: u16 = browser_ws.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
        // The page target created for about:blank.
        let (_, list) = http(port, "GET", "/json/list", &[], b"");
        let targets: Vec<Value> = serde_json::from_str(&list).unwrap();
        let page = targets.iter().find(|t| t["type"] == "page").expect("a page target");
        let (ws, _) =
            tungstenite::connect(page["webSocketDebuggerUrl"].as_str().unwrap()).expect("connect to the page");
        Browser { child, _profile: profile, ws, next_id: 0 }
    }

    /// Sends a CDP command and waits for its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(Message::text(json!({"id": id, "method": method, "params": params}).to_string())).unwrap();
        loop {
            let msg = self.ws.read().expect("read from chromium");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true, "awaitPromise": true}));
        r["result"]["value"].clone()
    }

    fn wait_for(&mut self, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.eval(expr);
            if !v.is_null() && v != json!(false) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_text(&mut self, selector: &str, text: &str) {
        self.eval(&format!("document.querySelector({selector:?}).focus()"));
        self.call("Input.insertText", json!({ "text": text }));
    }

    fn press_enter(&mut self) {
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}),
            );
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_chat_page_answers_a_typed_question_in_chromium() {
    let a = Askiam::new();
    a.ingest(&[&fixtures()]);
    let drop = tempfile::tempdir().unwrap();
    let served = a.serve(drop.path());
    let mut b = Browser::launch();
    b.call("Page.enable", json!({}));
    b.call("Page.navigate", json!({"url": format!("http://127.0.0.1:{}/", served.port)}));
    b.wait_for("the page", "document.readyState === 'complete' && !!document.getElementById('message')");
    // Without auth the page says whose word it takes.
    let notice = b.wait_for(
        "the no-auth notice",
        "!document.getElementById('notice').hidden && document.getElementById('notice').textContent",
    );
    assert!(notice.as_str().unwrap().contains("trusted"), "{notice}");

    b.type_text("#user", "pchen");
    b.type_text("#message", "I need access to the HR Analyst role");
    b.press_enter();
    let answer = b.wait_for("the answer", "document.querySelector('.turn .answer')?.textContent");
    let answer = answer.as_str().unwrap();
    assert!(answer.contains("HR Analyst") && answer.contains("Segregation of duties"), "{answer}");
    let chip = b.eval("document.querySelector('.chip')?.dataset.status");
    assert_eq!(chip, "conflict");
    let cites = b.eval("document.querySelectorAll('.cites li').length");
    assert!(cites.as_u64().unwrap() >= 1);

    // A follow-up in the same conversation.
    b.type_text("#message", "who approves it?");
    b.press_enter();
    let second = b.wait_for("the second answer", "document.querySelectorAll('.turn .answer')[1]?.textContent");
    assert!(second.as_str().unwrap().contains("HR Analyst"), "{second}");

    let shot = b.call("Page.captureScreenshot", json!({"format": "png"}));
    let png =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, shot["data"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chat-page.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}
