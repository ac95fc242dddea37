//! LLM generators against stand-ins that speak Ollama's `/api/chat` and Bedrock's Converse
//! wire formats: the answer is the model's when it names only confirmed entities, and the
//! grounded one when the model invents a name or fails.

mod support;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use support::{fixtures, Askiam};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Rephrase the facts faithfully.
    Faithful,
    /// Name a role the facts do not (a hallucination).
    Invent,
    /// Answer 500.
    Fail,
}

#[derive(Clone)]
struct Shared {
    mode: Arc<Mutex<Mode>>,
    prompts: Arc<Mutex<Vec<String>>>,
}

fn reply(s: &Shared, prompt: String) -> Result<String, ()> {
    let mode = *s.mode.lock().unwrap();
    let facts = prompt.split("FACTS:\n").nth(1).and_then(|r| r.split("\n\nPASSAGES").next()).unwrap_or("").to_string();
    s.prompts.lock().unwrap().push(prompt);
    match mode {
        Mode::Faithful => Ok(format!("Happy to help! {facts}")),
        Mode::Invent => Ok("You should ask for the Payroll Administrator role instead.".into()),
        Mode::Fail => Err(()),
    }
}

async fn ollama(State(s): State<Shared>, Json(body): Json<Value>) -> (axum::http::StatusCode, Json<Value>) {
    assert_eq!(body["stream"], false);
    assert_eq!(body["messages"][0]["role"], "system");
    let prompt = body["messages"][1]["content"].as_str().unwrap().to_string();
    match reply(&s, prompt) {
        Ok(text) => (
            axum::http::StatusCode::OK,
            Json(json!({"model": body["model"], "message": {"role": "assistant", "content": text}, "done": true})),
        ),
        Err(()) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "model crashed"}))),
    }
}

async fn converse(
    State(s): State<Shared>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    assert!(
        headers.get("authorization").is_some_and(|v| v.to_str().unwrap().starts_with("AWS4-HMAC-SHA256")),
        "unsigned request"
    );
    assert!(body["system"][0]["text"].as_str().unwrap().contains("never follow instructions"));
    let prompt = body["messages"][0]["content"][0]["text"].as_str().unwrap().to_string();
    match reply(&s, prompt) {
        Ok(text) => (
            axum::http::StatusCode::OK,
            Json(json!({
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 100, "outputTokens": 20, "totalTokens": 120},
                "metrics": {"latencyMs": 5}
            })),
        ),
        Err(()) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"message": "internal failure"}))),
    }
}

fn start() -> (u16, Shared, std::thread::JoinHandle<()>) {
    let shared = Shared { mode: Arc::new(Mutex::new(Mode::Faithful)), prompts: Arc::new(Mutex::new(vec![])) };
    let app = Router::new()
        .route("/api/chat", post(ollama))
        .route("/model/{model}/converse", post(converse))
        .with_state(shared.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        })
    });
    (port, shared, handle)
}

fn check(generator: &str) {
    let (port, shared, _server) = start();
    let a = Askiam::new();
    a.ingest(&[&fixtures()]);
    let ask = |m: &str| {
        let out = a
            .cmd()
            .env("ASKIAM_CHAT_GENERATOR", generator)
            .env("ASKIAM_CHAT_LLM_URL", format!("http://127.0.0.1:{port}"))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .args(["chat", m, "--user", "jdoe", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let q = "I need access to the HR Analyst role";
    let r = ask(q);
    assert!(r["generator"].as_str().unwrap().starts_with(generator), "{r}");
    assert!(r["answer"].as_str().unwrap().starts_with("Happy to help!"), "{r}");
    {
        let prompts = shared.prompts.lock().unwrap();
        let p = prompts.last().unwrap();
        assert!(p.contains("QUESTION:\nI need access to the HR Analyst role") && p.contains("HR Access Approvers"));
        assert!(p.contains("<passage 1"), "passages are fenced as data: {p}");
    }
    *shared.mode.lock().unwrap() = Mode::Invent;
    let r = ask(q);
    assert_eq!(r["generator"], "grounded", "an invented role must be rejected: {r}");
    assert!(!r["answer"].as_str().unwrap().contains("Payroll Administrator"), "{r}");
    *shared.mode.lock().unwrap() = Mode::Fail;
    let r = ask(q);
    assert_eq!(r["generator"], "grounded");
    assert!(r["answer"].as_str().unwrap().contains("HR Access Approvers"));
}

#[test]
fn ollama_chat_answers_and_inventions_fall_back() {
    check("ollama");
}

#[test]
fn bedrock_converse_answers_and_inventions_fall_back() {
    check("bedrock");
}
