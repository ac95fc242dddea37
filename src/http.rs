//! The HTTP door: one `router(state)` served by `askiam serve` and by the chat Lambda.
//!
//! Handlers are thin: they parse, call the same library functions as the CLI, and map errors
//! to status codes. Every client error is a 4xx with a JSON body `{"error": "..."}`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::embed::Embedder;
use crate::index::Index;
use crate::query::chat::{Chat, ChatError, ChatRequest};
use crate::query::retrieve::{self, Filters};

#[derive(Clone)]
pub struct AppState {
    pub index: Arc<dyn Index>,
    pub embedder: Arc<dyn Embedder>,
    pub k: usize,
    pub chat: Arc<Chat>,
    pub identity: Identity,
}

/// Where "who is asking" comes from.
#[derive(Clone)]
pub enum Identity {
    /// No auth: the body's `user` is trusted (the local demo; the page says so).
    Body,
    /// Bearer tokens mapped to logins (`chat.tokens_file`).
    Tokens(Arc<Tokens>),
    /// The door in front established it (API Gateway authorizer claims, put in the
    /// request's extensions as `Asker` by the Lambda adapter).
    Verified,
}

/// Who is asking, as verified by whatever stands in front of the router.
#[derive(Clone, Debug)]
pub struct Asker(pub String);

/// Bearer tokens and the users they stand for.
#[derive(Debug, Default)]
pub struct Tokens(HashMap<String, String>);

impl Tokens {
    /// A TOML file of `"<token>" = "<login>"` lines.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("tokens file {}: {e}", path.display()))?;
        let map: HashMap<String, String> =
            toml::from_str(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))?;
        Ok(Tokens(map))
    }

    pub fn user(&self, token: &str) -> Option<&str> {
        self.0.get(token).map(String::as_str)
    }
}

const PAGE: &str = include_str!("../assets/chat.html");

pub fn router(state: AppState) -> Router {
    // The transport limit sits well above the message limit, so an over-long message gets
    // the message-limit error (with the limit in it) rather than a bare 413.
    let body_limit = state.chat.settings.max_message_bytes * 2 + 16 * 1024;
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(healthz))
        .route("/search", get(search))
        .route("/chat", post(chat))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn chat(
    State(state): State<AppState>,
    verified: Option<axum::Extension<Asker>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content type must be application/json");
    }
    let asker = match &state.identity {
        Identity::Verified => match verified {
            Some(axum::Extension(Asker(user))) => Some(user),
            None => return error(StatusCode::UNAUTHORIZED, "the request carries no verified identity"),
        },
        Identity::Tokens(tokens) => {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim);
            match bearer.and_then(|t| tokens.user(t)) {
                Some(user) => Some(user.to_string()),
                None => return error(StatusCode::UNAUTHORIZED, "a valid bearer token is required"),
            }
        }
        Identity::Body => None,
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    // With auth, who asks comes from the token or the authorizer, never from the body.
    let asker = if matches!(state.identity, Identity::Body) { req.user.clone() } else { asker };
    match state.chat.answer(&req, asker.as_deref()).await {
        Ok(resp) => Json(resp).into_response(),
        Err(e) => chat_error(e),
    }
}

pub fn chat_error(e: ChatError) -> Response {
    match e {
        ChatError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
        e @ ChatError::TooLong { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        e => {
            tracing::error!(error = %e, "chat failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.index.info().await {
        Ok(info) => Json(serde_json::json!({
            "status": "ok",
            "generation": info.generation,
            "documents": info.documents,
            "auth": !matches!(state.identity, Identity::Body),
            "catalog": state.chat.catalog.source(),
        }))
        .into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": "error", "error": e.to_string()})))
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct SearchParams {
    q: String,
    k: Option<usize>,
    kind: Option<String>,
    application: Option<String>,
}

async fn search(State(state): State<AppState>, Query(p): Query<SearchParams>) -> Response {
    if p.q.trim().is_empty() {
        return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": "q must not be empty"}))).into_response();
    }
    let filters = Filters { kinds: p.kind.into_iter().collect(), application: p.application };
    let k = p.k.unwrap_or(state.k).clamp(1, 100);
    match retrieve::search(state.index.as_ref(), state.embedder.as_ref(), &p.q, k, &filters).await {
        Ok(hits) => Json(serde_json::json!({ "hits": hits })).into_response(),
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": e.to_string()}))).into_response()
        }
    }
}
