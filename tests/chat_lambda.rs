//! The chat Lambda's handler, called the way lambda_http calls it: an API Gateway event (HTTP
//! API v2 with a JWT authorizer, REST API v1 with a Cognito authorizer) turned into a request
//! and sent through the same router `askiam-chat-lambda` runs.

mod support;

use std::sync::Arc;

use askiam::http::{AppState, Identity};
use serde_json::{json, Value};
use support::{fixtures, Askiam};
use tower::ServiceExt;

async fn state(a: &Askiam) -> AppState {
    let mut config = askiam::config::Config { data_dir: a.data_dir(), ..Default::default() };
    config.embed.provider = "hash".into();
    let index = askiam::app::index(&config).unwrap();
    let embedder = askiam::app::embedder(&config).await.unwrap();
    let chat = askiam::app::chat(&config, index.clone(), embedder.clone()).await.unwrap();
    AppState { index, embedder, k: 5, chat: Arc::new(chat), identity: Identity::Verified }
}

fn http_api_event(body: &Value, claims: Option<Value>) -> String {
    let mut ctx = json!({
        "accountId": "123456789012", "apiId": "api", "domainName": "x.execute-api.eu-west-1.amazonaws.com",
        "domainPrefix": "x", "requestId": "r1", "routeKey": "POST /chat", "stage": "$default",
        "time": "25/Nov/2026:16:00:00 +0000", "timeEpoch": 1795795200000u64,
        "http": {"method": "POST", "path": "/chat", "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1", "userAgent": "test"}
    });
    if let Some(c) = claims {
        ctx["authorizer"] = json!({"jwt": {"claims": c, "scopes": null}});
    }
    json!({
        "version": "2.0", "routeKey": "POST /chat", "rawPath": "/chat", "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "x.execute-api.eu-west-1.amazonaws.com"},
        "requestContext": ctx, "body": body.to_string(), "isBase64Encoded": false
    })
    .to_string()
}

fn rest_api_event(body: &Value, claims: Value) -> String {
    json!({
        "resource": "/chat", "path": "/chat", "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", "Host": "x.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {"Content-Type": ["application/json"], "Host": ["x.execute-api.eu-west-1.amazonaws.com"]},
        "queryStringParameters": null, "multiValueQueryStringParameters": null, "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012", "resourceId": "abc", "stage": "prod", "requestId": "r2",
            "identity": {"sourceIp": "10.0.0.1"}, "resourcePath": "/chat", "httpMethod": "POST", "apiId": "api",
            "path": "/prod/chat", "authorizer": {"claims": claims}
        },
        "body": body.to_string(), "isBase64Encoded": false
    })
    .to_string()
}

async fn call(state: &AppState, event: String) -> (u16, Value) {
    let req = lambda_http::request::from_str(&event).expect("a valid API Gateway event");
    let resp = askiam::lambda::chat_router(state.clone(), "username".into()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).to_string();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("status {status}: not JSON ({e}): {text:?}")))
}

#[tokio::test]
async fn the_authorizer_names_the_asker_never_the_body() {
    let a = Askiam::new();
    a.ingest(&[&fixtures()]);
    let state = state(&a).await;
    let body = json!({"message": "what roles does jdoe have?", "user": "jdoe"});

    let (status, v) = call(&state, http_api_event(&body, None)).await;
    assert_eq!(status, 401, "{v}");

    // pchen's token, the body claiming jdoe: refused.
    let (status, v) = call(&state, http_api_event(&body, Some(json!({"username": "pchen", "sub": "x"})))).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["answer"].as_str().unwrap().contains("can't share"), "{v}");

    let (status, v) = call(&state, http_api_event(&body, Some(json!({"cognito:username": "jdoe"})))).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["answer"].as_str().unwrap().starts_with("You hold"), "{v}");

    let ask = json!({"message": "I need access to the HR Analyst role"});
    let (status, v) = call(&state, rest_api_event(&ask, json!({"cognito:username": "pchen"}))).await;
    assert_eq!(status, 200, "{v}");
    let e = v["entities"].as_array().unwrap().iter().find(|e| e["id"] == "ROLE-0008").unwrap();
    assert_eq!(e["status"], "conflict");

    let (status, v) = call(&state, http_api_event(&json!({"message": ""}), Some(json!({"username": "jdoe"})))).await;
    assert_eq!(status, 400, "{v}");
}
