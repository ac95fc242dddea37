//! Turning text into vectors: the `Embedder` seam and what sits in front of every provider.
//!
//! The pipeline only ever sees `dyn Embedder`; the provider is chosen once from config. The
//! hashing embedder is deterministic and model-free so that the whole pipeline is testable
//! offline; real models (MiniLM, Bedrock, Ollama) implement the same trait.

pub mod bedrock;
pub mod cache;
pub mod hash;
pub mod limit;
pub mod minilm;
pub mod model;
pub mod ollama;

use async_trait::async_trait;

/// Whether a text is stored (a document) or asked (a query); some models embed them differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Document,
    Query,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding model is not available: {0}")]
    ModelMissing(String),
    #[error("embedding provider failed: {0}")]
    Provider(String),
    #[error("embedding provider throttled us and retries ran out after {attempts} attempts")]
    Throttled { attempts: u32 },
    #[error("embedding cache: {0}")]
    Cache(String),
}

#[async_trait]
pub trait Embedder: Send + Sync {
    /// Names the model and its settings; an index built by one model id never mixes with another.
    fn model_id(&self) -> &str;
    fn dims(&self) -> usize;
    /// How many tokens the model reads; chunkers keep each chunk within it.
    fn max_tokens(&self) -> usize;
    /// Token count of `text` under this model's tokenizer (an upper estimate is fine).
    fn count_tokens(&self, text: &str) -> usize;
    /// Embeds a batch; the result has one vector of `dims()` per input, in order.
    async fn embed(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// Calls retried after throttling since this embedder was made (remote providers; the
    /// worker reports it as a metric).
    fn retries(&self) -> u64 {
        0
    }
    /// Runs in this process, with no quota or per-call cost: worth using for bulk side work
    /// (the action catalogue in `query::grants`) at query time.
    fn in_process(&self) -> bool {
        false
    }
}

/// A dot product in eight independent lanes: the compiler may not reorder a plain f32 sum,
/// so a single accumulator runs at one add per cycle; eight vectorise.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
