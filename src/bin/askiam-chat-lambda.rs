//! `/chat` as a Lambda behind API Gateway (HTTP or REST API) or a Function URL.
//!
//! Configuration is the same `Config` as the CLI, from `ASKIAM_*` environment variables
//! (`ASKIAM_DATA_DIR` for the index, `ASKIAM_CHAT_DATABASE_URL` for live Postgres). The asker
//! comes from the authorizer's claims (`ASKIAM_CHAT_IDENTITY_CLAIM`, default `username`), or
//! from a bearer token when `ASKIAM_CHAT_TOKENS_FILE` is set.

use std::sync::Arc;

use askiam::config::Config;
use askiam::http::{AppState, Identity, Tokens};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    askiam::lambda::init_tracing();
    let config = Config::load(None, std::env::vars())?;
    let index = askiam::app::index(&config)?;
    let embedder = askiam::app::embedder(&config).await?;
    let chat = askiam::app::chat(&config, index.clone(), embedder.clone()).await?;
    let identity = if config.chat.tokens_file.trim().is_empty() {
        Identity::Verified
    } else {
        Identity::Tokens(Arc::new(Tokens::load(std::path::Path::new(&config.chat.tokens_file))?))
    };
    let state = AppState { index, embedder, k: config.search.k, chat: Arc::new(chat), identity };
    lambda_http::run(askiam::lambda::chat_router(state, config.chat.identity_claim.clone())).await
}
