//! Local stand-ins for the embedding services, speaking their real wire formats on 127.0.0.1.
//!
//! One axum server answers both Bedrock Runtime's InvokeModel (`POST /model/{modelId}/invoke`,
//! SigV4-signed, JSON body; errors as the status plus an `x-amzn-ErrorType` header and a
//! `{"message"}` body, the restJson1 shape the SDK parses) and Ollama's `POST /api/embed`.
//! A vector is a deterministic function of the exact text the service received, so a test can
//! check that every text got its own vector. An optional quota (token buckets for requests/s
//! and tokens/min, tokens counted as askiam estimates them) answers 429 ThrottlingException
//! beyond it, like Bedrock does.
//!
//! Shared by `tests/providers.rs` and `benches/quota.rs` (included there by path).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use askiam::embed::hash::estimate_tokens;

const CORAL: &str = "http://internal.amazon.com/coral/com.amazon.bedrock/";

/// A service quota: requests per second and tokens per minute, each a token bucket that starts
/// full. A request needing more tokens than the bucket holds is let through only when it is
/// full (and leaves it in debt), so an oversized batch is slow but not refused forever.
#[derive(Clone, Copy, Debug)]
pub struct Quota {
    pub requests_per_sec: f64,
    pub request_burst: f64,
    pub tokens_per_min: f64,
    pub token_burst: f64,
}

/// What the stand-in does with the next requests.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer within the quota (if any), throttle beyond it.
    Serve,
    /// Throttle everything.
    Throttle,
    /// Reject everything with 400 ValidationException.
    Reject,
    /// Answer `status` with error `code` to the next `n` requests, then serve.
    FailNext { n: usize, status: u16, code: &'static str },
}

/// One request as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    /// The path exactly as sent, percent-encoding included.
    pub raw_path: String,
    pub model: String,
    pub status: u16,
    pub texts: Vec<String>,
    pub tokens: usize,
    pub input_type: Option<String>,
    pub dimensions: Option<u64>,
    /// Whether the request carried a SigV4 `Authorization` header.
    pub signed: bool,
}

struct Bucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn new(capacity: f64, per_sec: f64) -> Bucket {
        Bucket { capacity, per_sec, level: capacity, last: Instant::now() }
    }
    fn refill(&mut self, now: Instant) {
        self.level = (self.level + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.capacity);
        self.last = now;
    }
    fn has(&self, n: f64) -> bool {
        self.level >= n.min(self.capacity)
    }
}

struct Buckets {
    requests: Bucket,
    tokens: Bucket,
}

pub struct Shared {
    behaviour: Mutex<Behaviour>,
    quota: Mutex<Option<Buckets>>,
    calls: Mutex<Vec<Call>>,
}

/// A running stand-in; it stops when the test's runtime does.
#[derive(Clone)]
pub struct StandIn {
    pub addr: SocketAddr,
    pub url: String,
    shared: Arc<Shared>,
}

impl StandIn {
    pub async fn start(quota: Option<Quota>) -> StandIn {
        let buckets = quota.map(|q| Buckets {
            requests: Bucket::new(q.request_burst, q.requests_per_sec),
            tokens: Bucket::new(q.token_burst, q.tokens_per_min / 60.0),
        });
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour::Serve),
            quota: Mutex::new(buckets),
            calls: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/model/{model_id}/invoke", post(invoke_model))
            .route("/api/embed", post(ollama_embed))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a local port for the stand-in");
        let addr = listener.local_addr().expect("the stand-in's address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the stand-in serves") });
        StandIn { addr, url: format!("http://{addr}"), shared }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.status == 200).collect()
    }

    pub fn throttled(&self) -> usize {
        self.calls().iter().filter(|c| c.status == 429).count()
    }
}

/// The stand-in's vector for `text`: every component a multiple of 1/1024, so it survives the
/// JSON round trip exactly.
pub fn vector_for(text: &str, dims: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(dims);
    let mut block = 0u32;
    while out.len() < dims {
        let digest = Sha256::new().chain_update(block.to_le_bytes()).chain_update(text.as_bytes()).finalize();
        for pair in digest.chunks_exact(2) {
            if out.len() == dims {
                break;
            }
            let n = u16::from_le_bytes([pair[0], pair[1]]) % 2049;
            out.push((n as f32 - 1024.0) / 1024.0);
        }
        block += 1;
    }
    out
}

fn bedrock_error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).expect("a valid status");
    let header = format!("{code}:{CORAL}");
    (
        status,
        [("x-amzn-ErrorType", header.as_str()), ("content-type", "application/json")],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

fn ollama_error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).expect("a valid status");
    (status, [("content-type", "application/json")], json!({ "error": message }).to_string()).into_response()
}

fn ok_json(body: Value) -> Response {
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

/// Decides the fate of a well-formed request: serve, or an error per the behaviour and quota.
fn admit(shared: &Shared, tokens: usize) -> Result<(), (u16, &'static str, &'static str)> {
    {
        let mut behaviour = shared.behaviour.lock().unwrap();
        match &mut *behaviour {
            Behaviour::Serve => {}
            Behaviour::Throttle => {
                return Err((429, "ThrottlingException", "Too many requests, please wait before trying again."))
            }
            Behaviour::Reject => return Err((400, "ValidationException", "Malformed input request, please reformat.")),
            Behaviour::FailNext { n, status, code } => {
                let failure = (*status, *code, "The service is not ready; try again.");
                *n -= 1;
                if *n == 0 {
                    *behaviour = Behaviour::Serve;
                }
                return Err(failure);
            }
        }
    }
    let mut quota = shared.quota.lock().unwrap();
    if let Some(b) = quota.as_mut() {
        let now = Instant::now();
        b.requests.refill(now);
        b.tokens.refill(now);
        if !(b.requests.has(1.0) && b.tokens.has(tokens as f64)) {
            return Err((429, "ThrottlingException", "Too many requests, please wait before trying again."));
        }
        b.requests.level -= 1.0;
        b.tokens.level -= tokens as f64;
    }
    Ok(())
}

async fn invoke_model(
    State(shared): State<Arc<Shared>>,
    Path(model): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signed = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential="));
    let mut call = Call {
        at: Instant::now(),
        raw_path: uri.path().to_string(),
        model: model.clone(),
        status: 0,
        texts: Vec::new(),
        tokens: 0,
        input_type: None,
        dimensions: None,
        signed,
    };
    let response = answer_invoke(&shared, &model, signed, &body, &mut call);
    call.status = response.status().as_u16();
    shared.calls.lock().unwrap().push(call);
    response
}

fn answer_invoke(shared: &Shared, model: &str, signed: bool, body: &[u8], call: &mut Call) -> Response {
    if !signed {
        return bedrock_error(403, "AccessDeniedException", "Missing Authentication Token");
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return bedrock_error(
            400,
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        );
    };
    if model.starts_with("amazon.titan-embed-text-v2") {
        let Some(text) = request["inputText"].as_str() else {
            return bedrock_error(
                400,
                "ValidationException",
                "Malformed input request: required key [inputText] not found",
            );
        };
        let dims = request["dimensions"].as_u64().unwrap_or(1024);
        call.dimensions = Some(dims);
        call.texts = vec![text.to_string()];
        call.tokens = estimate_tokens(text);
        if ![256, 512, 1024].contains(&dims) {
            return bedrock_error(
                400,
                "ValidationException",
                "Malformed input request: dimensions must be 256, 512 or 1024",
            );
        }
        if let Err((status, code, message)) = admit(shared, call.tokens) {
            return bedrock_error(status, code, message);
        }
        ok_json(json!({ "embedding": vector_for(text, dims as usize), "inputTextTokenCount": call.tokens }))
    } else if model.starts_with("cohere.embed") {
        let texts: Vec<String> = request["texts"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        call.input_type = request["input_type"].as_str().map(str::to_string);
        call.tokens = texts.iter().map(|t| estimate_tokens(t)).sum();
        call.texts = texts.clone();
        if texts.is_empty() || texts.len() > 96 {
            return bedrock_error(400, "ValidationException", "Malformed input request: texts must hold 1 to 96 items");
        }
        if !matches!(
            call.input_type.as_deref(),
            Some("search_document" | "search_query" | "classification" | "clustering")
        ) {
            return bedrock_error(400, "ValidationException", "Malformed input request: input_type is required");
        }
        if let Err((status, code, message)) = admit(shared, call.tokens) {
            return bedrock_error(status, code, message);
        }
        let embeddings: Vec<Vec<f32>> = texts.iter().map(|t| vector_for(t, 1024)).collect();
        ok_json(json!({
            "embeddings": embeddings,
            "id": "c2f3e5a0-0000-4000-8000-000000000000",
            "response_type": "embeddings_floats",
            "texts": texts,
        }))
    } else {
        bedrock_error(
            404,
            "ResourceNotFoundException",
            "Could not resolve the foundation model from the provided model identifier.",
        )
    }
}

async fn ollama_embed(State(shared): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or_default().to_string();
    let texts: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    let tokens = texts.iter().map(|t| estimate_tokens(t)).sum();
    let dims = match model.as_str() {
        "nomic-embed-text" | "nomic-embed-text:latest" => Some(768),
        "all-minilm" => Some(384),
        _ => None,
    };
    let response = match dims {
        None => ollama_error(404, &format!("model \"{model}\" not found, try pulling it first")),
        Some(_) if texts.is_empty() => ollama_error(400, "invalid input"),
        Some(dims) => match admit(&shared, tokens) {
            Ok(()) => {
                let embeddings: Vec<Vec<f32>> = texts.iter().map(|t| vector_for(t, dims)).collect();
                ok_json(json!({ "model": model, "embeddings": embeddings, "prompt_eval_count": tokens }))
            }
            Err((status, _, message)) => ollama_error(status, message),
        },
    };
    shared.calls.lock().unwrap().push(Call {
        at: Instant::now(),
        raw_path: uri.path().to_string(),
        model,
        status: response.status().as_u16(),
        texts,
        tokens,
        input_type: None,
        dimensions: dims.map(|d| d as u64),
        signed: false,
    });
    response
}
