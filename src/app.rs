//! Building the running pieces from a `Config`, once, at start-up.
//!
//! This is the only place that chooses adapters (which embedder, which index); everything
//! after it sees traits. Tests build the same way with a temporary data dir.

use std::sync::Arc;

use crate::config::Config;
use crate::embed::cache::CachedEmbedder;
use crate::embed::hash::HashEmbedder;
use crate::embed::Embedder;
use crate::index::embedded::EmbeddedIndex;
use crate::index::{Index, IndexError};
use crate::ingest::Pipeline;
use crate::store::{StateDb, StoreError, WriterLock};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("unknown embedding provider {0:?} (this build has: hash, minilm, bedrock, bedrock-titan, bedrock-cohere, ollama)")]
    UnknownEmbedder(String),
    #[error("embedding provider: {0}")]
    Embedder(#[from] crate::embed::EmbedError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    ChatLog(#[from] crate::query::log::LogError),
    #[error("unknown chat generator {0:?} (this build has: grounded, ollama, bedrock)")]
    UnknownGenerator(String),
}

/// The configured embedding provider. Async because cloud providers resolve credentials
/// and endpoints when they are built.
pub async fn embedder(config: &Config) -> Result<Arc<dyn Embedder>, BuildError> {
    match config.embed.provider.as_str() {
        "hash" => Ok(Arc::new(HashEmbedder::new(config.embed.dims))),
        "bedrock" | "bedrock-titan" | "bedrock-cohere" => {
            Ok(Arc::new(crate::embed::bedrock::BedrockEmbedder::from_config(&config.embed).await?))
        }
        "ollama" => Ok(Arc::new(crate::embed::ollama::OllamaEmbedder::connect(&config.embed).await?)),
        "minilm" => Ok(Arc::new(crate::embed::minilm::MiniLm::from_config(config)?)),
        other => Err(BuildError::UnknownEmbedder(other.to_string())),
    }
}

pub fn index(config: &Config) -> Result<Arc<dyn Index>, BuildError> {
    // Whoever searches this index keeps the shipped lists' vectors (the action catalogue,
    // the product glossary) beside it.
    crate::query::knowledge::keep_vectors_in(config.data_dir.join("knowledge"));
    let idx = EmbeddedIndex::open(&config.index_db())?
        .with_weights(config.search.bm25_weight as f64, config.search.vector_weight as f64);
    Ok(Arc::new(idx))
}

/// Everything a writing command needs, holding the data dir's writer lock.
pub struct Writer {
    pub pipeline: Arc<Pipeline>,
    pub lock: WriterLock,
}

pub async fn writer(config: &Config) -> Result<Writer, BuildError> {
    let lock = WriterLock::acquire(&config.data_dir)?;
    let state = Arc::new(StateDb::open(&config.state_db())?);
    let index = index(config)?;
    let embedder = embedder(config).await?;
    let cached = Arc::new(CachedEmbedder::new(embedder, state.clone(), config.embed.batch_size));
    let pipeline = Pipeline::new(state, index, cached, config.ingest.clone());
    Ok(Writer { pipeline: Arc::new(pipeline), lock })
}

/// The event worker over a writer's pipeline: S3 through the SDK's own configuration, the
/// shared ledger when `worker.ledger_table` is set.
pub async fn worker(config: &Config, pipeline: Arc<Pipeline>) -> crate::ingest::worker::Worker {
    let w = &config.worker;
    let ledger = match w.ledger_table.trim() {
        "" => None,
        table => Some(crate::ingest::ledger::DynamoLedger::connect(table).await),
    };
    crate::ingest::worker::Worker {
        pipeline,
        s3: crate::ingest::source::s3::client().await,
        max_object_bytes: w.max_object_bytes,
        ledger,
        lease: std::time::Duration::from_secs(w.lease_secs.max(1)),
    }
}

/// The chat orchestrator over the given index and embedder (shared with the writer when the
/// server also ingests): the catalogue is live Postgres when `chat.database_url` is set, else
/// the entity store.
pub async fn chat(
    config: &Config,
    index: Arc<dyn Index>,
    embedder: Arc<dyn Embedder>,
) -> Result<crate::query::chat::Chat, BuildError> {
    use crate::catalog::Catalog;
    use crate::query::chat::{Chat, ChatSettings};
    let c = &config.chat;
    let catalog: Arc<dyn Catalog> = if c.database_url.trim().is_empty() {
        Arc::new(crate::catalog::store::StoreCatalog::new(Arc::new(StateDb::open(&config.state_db())?)))
    } else {
        let pg = crate::catalog::postgres::PgCatalog::connect(&c.database_url, c.pool_size)?;
        pg.check().await?;
        Arc::new(pg)
    };
    let generator: Arc<dyn crate::query::generate::Generator> = match c.generator.as_str() {
        "grounded" | "" => Arc::new(crate::query::generate::Grounded),
        "ollama" => {
            let url = if c.llm_url.is_empty() { &config.embed.ollama_url } else { &c.llm_url };
            Arc::new(crate::query::generate::OllamaChat::new(url, &c.ollama_model))
        }
        "bedrock" => Arc::new(
            crate::query::generate::BedrockConverse::connect(&c.bedrock_model, &config.embed.region, &c.llm_url).await,
        ),
        other => return Err(BuildError::UnknownGenerator(other.to_string())),
    };
    let log: Arc<dyn crate::query::log::ChatLog> = if c.log_table.trim().is_empty() {
        Arc::new(crate::query::log::LocalChatLog::open(&config.data_dir)?)
    } else {
        Arc::new(crate::query::log::DynamoChatLog::connect(c.log_table.trim()).await)
    };
    let settings = ChatSettings {
        max_message_bytes: c.max_message_bytes,
        admins: c.admins.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
        k: config.search.k,
        names_ttl: std::time::Duration::from_secs(c.names_ttl_secs),
    };
    let embedder = Arc::new(crate::embed::cache::QueryCache::new(embedder, 4096));
    Ok(Chat::new(catalog, index, embedder, generator, log, settings))
}
