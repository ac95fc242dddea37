//! Embedding cache: a text embedded once by a model is never embedded again by it.
//!
//! Keyed by (model id, sha256 of the text) in the state database, so a re-ingest of an
//! unchanged export, or a `reindex` with the same model, makes no embedding calls at all.
//! `CachedEmbedder` wraps any `Embedder` and counts the calls and texts that did reach it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::params;

use super::{EmbedError, Embedder, InputKind};
use crate::model::text_hash;
use crate::store::{StateDb, StoreError};

impl StateDb {
    pub fn cache_get(&self, model: &str, hashes: &[String]) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT vector FROM embed_cache WHERE model = ?1 AND hash = ?2")
            .map_err(|e| self.sql_err(e))?;
        let mut out = HashMap::new();
        for h in hashes {
            let blob: Option<Vec<u8>> =
                rusqlite::OptionalExtension::optional(stmt.query_row(params![model, h], |r| r.get(0)))
                    .map_err(|e| self.sql_err(e))?;
            if let Some(b) = blob {
                out.insert(h.clone(), from_blob(&b));
            }
        }
        Ok(out)
    }

    pub fn cache_put(&self, model: &str, items: &[(String, Vec<f32>)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql_err(e))?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR REPLACE INTO embed_cache (model, hash, vector) VALUES (?1, ?2, ?3)")
                .map_err(|e| self.sql_err(e))?;
            for (h, v) in items {
                stmt.execute(params![model, h, to_blob(v)]).map_err(|e| self.sql_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.sql_err(e))
    }
}

pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Counters an operator asks about: how many calls and texts reached the provider.
#[derive(Debug, Default)]
pub struct EmbedCounters {
    pub calls: AtomicU64,
    pub texts: AtomicU64,
}

/// Any embedder, behind the content-hash cache and in batches of `batch_size`.
pub struct CachedEmbedder {
    inner: Arc<dyn Embedder>,
    state: Arc<StateDb>,
    batch_size: usize,
    pub counters: EmbedCounters,
}

impl CachedEmbedder {
    pub fn new(inner: Arc<dyn Embedder>, state: Arc<StateDb>, batch_size: usize) -> Self {
        CachedEmbedder { inner, state, batch_size: batch_size.max(1), counters: EmbedCounters::default() }
    }

    pub fn model(&self) -> &dyn Embedder {
        self.inner.as_ref()
    }

    /// The provider itself, for query-time embedding in the same process (a local model is
    /// loaded once).
    pub fn inner(&self) -> Arc<dyn Embedder> {
        self.inner.clone()
    }

    /// Vectors for document texts, from the cache where possible; new ones are stored.
    pub async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model = self.inner.model_id().to_string();
        let hashes: Vec<String> = texts.iter().map(|t| text_hash(t)).collect();
        let mut known = self.state.cache_get(&model, &hashes).map_err(|e| EmbedError::Cache(e.to_string()))?;
        // Embed each distinct missing text once, even if it occurs several times.
        let mut missing: Vec<(String, String)> = Vec::new();
        let mut queued = std::collections::HashSet::new();
        for (h, t) in hashes.iter().zip(texts) {
            if !known.contains_key(h) && queued.insert(h.clone()) {
                missing.push((h.clone(), t.clone()));
            }
        }
        for batch in missing.chunks(self.batch_size) {
            let batch_texts: Vec<String> = batch.iter().map(|(_, t)| t.clone()).collect();
            let vectors = self.inner.embed(&batch_texts, InputKind::Document).await?;
            if vectors.len() != batch.len() {
                return Err(EmbedError::Provider(format!("asked for {} vectors, got {}", batch.len(), vectors.len())));
            }
            self.counters.calls.fetch_add(1, Ordering::Relaxed);
            self.counters.texts.fetch_add(batch.len() as u64, Ordering::Relaxed);
            let items: Vec<(String, Vec<f32>)> = batch.iter().map(|(h, _)| h.clone()).zip(vectors).collect();
            self.state.cache_put(&model, &items).map_err(|e| EmbedError::Cache(e.to_string()))?;
            known.extend(items);
        }
        hashes
            .iter()
            .map(|h| known.get(h).cloned().ok_or_else(|| EmbedError::Cache(format!("vector for {h} vanished"))))
            .collect()
    }

    /// A query vector; queries are not cached (they rarely repeat and are cheap).
    pub async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut v = self.inner.embed(&[text.to_string()], InputKind::Query).await?;
        v.pop().ok_or_else(|| EmbedError::Provider("no vector returned for the query".into()))
    }
}

/// Recent query vectors in memory, so a question asked again (help desks hear the same few
/// hundred questions all day) costs no model call. Documents pass straight through: they
/// have the persistent cache above.
pub struct QueryCache {
    inner: Arc<dyn Embedder>,
    recent: std::sync::Mutex<lru::LruCache<String, Vec<f32>>>,
}

impl QueryCache {
    pub fn new(inner: Arc<dyn Embedder>, capacity: usize) -> Self {
        let cap = std::num::NonZeroUsize::new(capacity.max(1)).expect("capacity is at least 1");
        QueryCache { inner, recent: std::sync::Mutex::new(lru::LruCache::new(cap)) }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Vec<f32>>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Embedder for QueryCache {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn dims(&self) -> usize {
        self.inner.dims()
    }

    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.inner.count_tokens(text)
    }

    fn retries(&self) -> u64 {
        self.inner.retries()
    }

    fn in_process(&self) -> bool {
        self.inner.in_process()
    }

    async fn embed(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        if kind != InputKind::Query {
            return self.inner.embed(texts, kind).await;
        }
        let mut out: Vec<Option<Vec<f32>>> = {
            let mut recent = self.recent();
            texts.iter().map(|t| recent.get(t).cloned()).collect()
        };
        let missing: Vec<String> =
            texts.iter().zip(&out).filter(|(_, v)| v.is_none()).map(|(t, _)| t.clone()).collect();
        if !missing.is_empty() {
            let fresh = self.inner.embed(&missing, kind).await?;
            let mut recent = self.recent();
            let mut fresh = missing.into_iter().zip(fresh);
            for slot in out.iter_mut().filter(|v| v.is_none()) {
                let (text, v) = fresh.next().expect("one vector per missing text");
                recent.put(text, v.clone());
                *slot = Some(v);
            }
        }
        Ok(out.into_iter().map(|v| v.expect("filled")).collect())
    }
}

#[cfg(test)]
mod query_cache_tests {
    use super::*;

    struct Counting(AtomicU64);

    #[async_trait::async_trait]
    impl Embedder for Counting {
        fn model_id(&self) -> &str {
            "counting"
        }
        fn dims(&self) -> usize {
            1
        }
        fn max_tokens(&self) -> usize {
            16
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.len()
        }
        async fn embed(&self, texts: &[String], _: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0.fetch_add(texts.len() as u64, Ordering::SeqCst);
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    #[tokio::test]
    async fn a_repeated_question_is_embedded_once() {
        let inner = Arc::new(Counting(AtomicU64::new(0)));
        let c = QueryCache::new(inner.clone(), 2);
        let q = |s: &str| vec![s.to_string()];
        assert_eq!(c.embed(&q("abc"), InputKind::Query).await.unwrap(), vec![vec![3.0]]);
        assert_eq!(c.embed(&q("abc"), InputKind::Query).await.unwrap(), vec![vec![3.0]]);
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        let mixed = vec!["abc".to_string(), "hello".to_string()];
        assert_eq!(c.embed(&mixed, InputKind::Query).await.unwrap(), vec![vec![3.0], vec![5.0]]);
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
        // Documents are never served from it.
        c.embed(&q("abc"), InputKind::Document).await.unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
    }
}
