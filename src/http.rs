//! The HTTP door: one `router(state)` served by `askiam serve` (and later by Lambda).
//!
//! Handlers are thin: they parse, call the same library functions as the CLI, and map errors
//! to status codes.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::embed::Embedder;
use crate::index::Index;
use crate::query::retrieve::{self, Filters};

#[derive(Clone)]
pub struct AppState {
    pub index: Arc<dyn Index>,
    pub embedder: Arc<dyn Embedder>,
    pub k: usize,
}

pub fn router(state: AppState) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/search", get(search)).with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.index.info().await {
        Ok(info) => {
            Json(serde_json::json!({"status": "ok", "generation": info.generation, "documents": info.documents}))
                .into_response()
        }
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
