//! The Lambda doors' glue: who is asking, from API Gateway's authorizer.
//!
//! `askiam-chat-lambda` serves the same axum router as `askiam serve` through lambda_http
//! (API Gateway HTTP API, REST API or a Function URL). Identity never comes from the body
//! there: a JWT authorizer's claims (HTTP API), a Cognito authorizer's claims (REST API) or
//! a Lambda authorizer's context name the asker, and a middleware hands it to the chat
//! handler as `Asker`.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;

use crate::http::{router, AppState, Asker};

/// The claim names tried, in order, after the configured one.
const FALLBACK_CLAIMS: &[&str] = &["username", "cognito:username", "preferred_username"];

/// The asker named by the request's authorizer, if any.
pub fn asker_from(ctx: Option<&RequestContext>, claim: &str) -> Option<String> {
    let names = std::iter::once(claim).chain(FALLBACK_CLAIMS.iter().copied());
    let from_map = |get: &dyn Fn(&str) -> Option<String>| names.clone().find_map(get);
    let value = match ctx? {
        RequestContext::ApiGatewayV2(c) => {
            let auth = c.authorizer.as_ref()?;
            let jwt = auth.jwt.as_ref().and_then(|j| from_map(&|k| j.claims.get(k).cloned()));
            jwt.or_else(|| from_map(&|k| auth.fields.get(k).and_then(|v| v.as_str()).map(str::to_string)))
        }
        RequestContext::ApiGatewayV1(c) => {
            let fields = &c.authorizer.fields;
            let claims = fields.get("claims");
            from_map(&|k| claims.and_then(|c| c.get(k)).and_then(|v| v.as_str()).map(str::to_string))
                .or_else(|| from_map(&|k| fields.get(k).and_then(|v| v.as_str()).map(str::to_string)))
        }
        // ALB, WebSocket and others carry no authorizer: nobody is verified.
        _ => None,
    };
    value.filter(|v| !v.trim().is_empty())
}

/// REST API (v1) events carry the stage in the path (`/prod/chat`); routes are stage-free,
/// the same as for an HTTP API's `$default` stage and a Function URL.
fn strip_stage(req: &mut Request) {
    let Some(RequestContext::ApiGatewayV1(c)) = req.request_context_ref() else { return };
    let Some(stage) = c.stage.as_deref().filter(|s| !s.is_empty()) else { return };
    let prefix = format!("/{stage}/");
    let Some(rest) = req.uri().path().strip_prefix(&prefix) else { return };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    if let Ok(uri) = path_and_query.parse() {
        *req.uri_mut() = uri;
    }
}

/// The HTTP router with the authorizer's asker attached to each request.
pub fn chat_router(state: AppState, claim: String) -> Router {
    // Layered on an outer router so the stage is stripped before the inner one routes.
    Router::new().fallback_service(router(state)).layer(axum::middleware::from_fn(
        move |mut req: Request, next: Next| {
            let claim = claim.clone();
            async move {
                if let Some(a) = asker_from(req.request_context_ref(), &claim) {
                    req.extensions_mut().insert(Asker(a));
                }
                strip_stage(&mut req);
                let resp: Response = next.run(req).await;
                resp
            }
        },
    ))
}

/// JSON logs for CloudWatch (no timestamps: Lambda adds its own), `ASKIAM_LOG` filter.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ASKIAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("askiam=info,warn")),
        )
        .without_time()
        .init();
}
