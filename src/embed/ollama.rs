//! Ollama embeddings: a local or self-hosted model over Ollama's batch API, `POST /api/embed`.
//!
//! One call carries a whole batch (`{"model","input":[…]}` → `{"embeddings":[[…]]}`), so the
//! shared [`Limiter`] sees `batch_size` texts per request. The vector size is learnt when the
//! embedder is built, from one probe call: the index is created with `dims()` before any text
//! is embedded, and a guess from the model's name would silently mix sizes if it were wrong.
//! The probe also makes a missing model or a stopped server fail at start-up, not mid-ingest.
//!
//! nomic-embed-text was trained with task prefixes; without them its query and document
//! vectors drift apart, so they are added here whenever the model name says nomic.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::hash::estimate_tokens;
use super::limit::{Limiter, Limits, Verdict};
use super::{EmbedError, Embedder, InputKind};
use crate::config::EmbedConfig;

#[derive(Serialize)]
struct EmbedRequest<'a> {
    model: &'a str,
    input: Vec<String>,
}

#[derive(Deserialize)]
struct EmbedResponse {
    embeddings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

/// An Ollama model behind quota limits.
pub struct OllamaEmbedder {
    http: reqwest::Client,
    url: String,
    model: String,
    dims: usize,
    batch_size: usize,
    id: String,
    limiter: Arc<Limiter>,
}

impl OllamaEmbedder {
    /// Connects to `ollama_url` and learns the vector size of `ollama_model` with one probe.
    pub async fn connect(config: &EmbedConfig) -> Result<OllamaEmbedder, EmbedError> {
        OllamaEmbedder::connect_with_limits(config, Limits::from_config(config)).await
    }

    /// As [`OllamaEmbedder::connect`], with explicit limits (tests and benches tune backoff).
    pub async fn connect_with_limits(config: &EmbedConfig, limits: Limits) -> Result<OllamaEmbedder, EmbedError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A cold model loads before it answers; a batch on a CPU can take a while too.
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| EmbedError::Provider(format!("building the HTTP client: {e}")))?;
        let mut embedder = OllamaEmbedder {
            http,
            url: config.ollama_url.trim_end_matches('/').to_string(),
            model: config.ollama_model.clone(),
            dims: 0,
            batch_size: config.batch_size.max(1),
            id: String::new(),
            limiter: Arc::new(Limiter::new(limits)),
        };
        let probe = embedder.embed_batch(&["dimension probe".to_string()], InputKind::Query).await?;
        embedder.dims = probe.first().map(Vec::len).unwrap_or(0);
        if embedder.dims == 0 {
            return Err(EmbedError::Provider(format!("ollama model {} returned an empty vector", embedder.model)));
        }
        embedder.id = format!("ollama:{}/{}", embedder.model, embedder.dims);
        Ok(embedder)
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    fn prefix(&self, kind: InputKind) -> &'static str {
        if !self.model.contains("nomic") {
            return "";
        }
        match kind {
            InputKind::Document => "search_document: ",
            InputKind::Query => "search_query: ",
        }
    }

    async fn embed_batch(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        let prefix = self.prefix(kind);
        let input: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let tokens = input.iter().map(|t| estimate_tokens(t)).sum();
        let body = EmbedRequest { model: &self.model, input };
        let endpoint = format!("{}/api/embed", self.url);
        let (body, endpoint) = (&body, &endpoint);
        let response: EmbedResponse = self
            .limiter
            .run(tokens, || async move {
                let response = self.http.post(endpoint).json(body).send().await.map_err(|e| {
                    if e.is_timeout() {
                        Verdict::Retry(format!("ollama at {}: timed out", self.url))
                    } else {
                        Verdict::Fail(EmbedError::Provider(format!(
                            "ollama at {} did not answer ({e}); is `ollama serve` running?",
                            self.url
                        )))
                    }
                })?;
                let status = response.status().as_u16();
                let bytes =
                    response.bytes().await.map_err(|e| Verdict::Retry(format!("ollama: reading the answer: {e}")))?;
                classify(&self.model, status, &bytes)
            })
            .await?;
        if let Some(v) = response.embeddings.iter().find(|v| self.dims != 0 && v.len() != self.dims) {
            return Err(EmbedError::Provider(format!(
                "ollama model {} returned a vector of {} dimensions, expected {}",
                self.model,
                v.len(),
                self.dims
            )));
        }
        Ok(response.embeddings)
    }
}

/// Decodes a success; retries 429 and 5xx (Ollama answers 503 when its queue is full);
/// fails at once on the rest, a missing model among them.
fn classify(model: &str, status: u16, bytes: &[u8]) -> Result<EmbedResponse, Verdict> {
    let message = || {
        serde_json::from_slice::<ErrorResponse>(bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned())
    };
    match status {
        200..=299 => serde_json::from_slice(bytes).map_err(|e| {
            Verdict::Fail(EmbedError::Provider(format!("ollama model {model}: unexpected response: {e}")))
        }),
        429 | 500..=599 => Err(Verdict::Retry(format!("ollama model {model}: HTTP {status}: {}", message()))),
        404 => Err(Verdict::Fail(EmbedError::ModelMissing(format!(
            "ollama model {model}: {} (try `ollama pull {model}`)",
            message()
        )))),
        _ => Err(Verdict::Fail(EmbedError::Provider(format!("ollama model {model}: HTTP {status}: {}", message())))),
    }
}

#[async_trait]
impl Embedder for OllamaEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }
    fn dims(&self) -> usize {
        self.dims
    }
    fn max_tokens(&self) -> usize {
        // The context Ollama gives these models by default; the rest keep to BERT's 512.
        if self.model.contains("nomic") {
            2048
        } else if self.model.contains("minilm") {
            256
        } else {
            512
        }
    }
    fn count_tokens(&self, text: &str) -> usize {
        estimate_tokens(text)
    }
    fn retries(&self) -> u64 {
        self.limiter.stats().retries()
    }

    async fn embed(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.limiter.in_batches(texts, self.batch_size, |batch| self.embed_batch(batch, kind)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_status() {
        assert!(matches!(classify("m", 503, br#"{"error":"server busy"}"#), Err(Verdict::Retry(_))));
        assert!(matches!(classify("m", 429, b""), Err(Verdict::Retry(_))));
        match classify("m", 404, br#"{"error":"model \"m\" not found, try pulling it first"}"#) {
            Err(Verdict::Fail(EmbedError::ModelMissing(msg))) => assert!(msg.contains("not found"), "{msg}"),
            other => panic!("{:?}", other.map(|r| r.embeddings)),
        }
        assert!(matches!(classify("m", 400, br#"{"error":"bad"}"#), Err(Verdict::Fail(EmbedError::Provider(_)))));
        let ok = classify("m", 200, br#"{"model":"m","embeddings":[[0.5,1.0]]}"#).map_err(|_| ()).unwrap();
        assert_eq!(ok.embeddings, vec![vec![0.5, 1.0]]);
    }
}
