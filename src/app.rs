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
