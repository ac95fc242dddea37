//! Where documents are stored and searched: the `Index` seam.
//!
//! The embedded index (SQLite, on disk under the data dir) is the default; OpenSearch
//! implements the same trait later. The index owns the version guard — an upsert or delete
//! older than what it holds is refused, and a delete leaves a tombstone — so that every door
//! (CLI, server, Lambda) gets exactly-once effect from at-least-once input without
//! coordinating. Generations let a full rebuild happen beside the live index and be swapped
//! in with one atomic step, so searches never see a half-built index.

pub mod embedded;
pub mod spelling;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{Document, Version};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index storage at {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("index was built with model {built} ({built_dims} dims) but {requested} ({requested_dims} dims) is configured; run `askiam reindex` to rebuild it")]
    ModelMismatch { built: String, built_dims: usize, requested: String, requested_dims: usize },
    #[error("document {id}: {chunks} chunks but {vectors} vectors")]
    VectorCount { id: String, chunks: usize, vectors: usize },
    #[error("generation {0} is not being built")]
    NoSuchGeneration(u64),
    #[error("index: {0}")]
    Other(String),
}

/// How a write meets what is stored.
///
/// Documents read straight from a source object (policy files, record collections) carry
/// that object's version, and the index is where "older never overwrites newer" is decided.
/// Documents rendered from catalogue rows are a projection of the entity store, which has
/// already applied the version guard row by row; a rendered document's state is not monotone
/// in any single version (a deleted entitlement changes its role's text), so the projection
/// replaces what is stored unconditionally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Ignore the write when the stored version is newer (or a tombstone at the same version).
    Version,
    /// Replace whatever is stored: the caller derived this from an authoritative store.
    Projection,
}

/// A document with one vector per chunk, ready to store.
#[derive(Clone, Debug)]
pub struct Upsert {
    pub doc: Document,
    /// `Document::content_hash()`, computed once by the caller.
    pub content_hash: String,
    pub vectors: Vec<Vec<f32>>,
    pub guard: Guard,
}

#[derive(Clone, Debug)]
pub enum Write {
    Upsert(Upsert),
    /// Removes the document (all its chunks) and leaves a tombstone at `version`. The
    /// tombstone remembers `kind` so that a generation rebuild can carry it over.
    Delete {
        id: String,
        kind: String,
        version: Version,
        guard: Guard,
    },
}

impl Write {
    pub fn id(&self) -> &str {
        match self {
            Write::Upsert(u) => &u.doc.id,
            Write::Delete { id, .. } => id,
        }
    }
}

/// What the index holds for a document id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocState {
    pub version: Version,
    /// `None` for a tombstone.
    pub content_hash: Option<String>,
}

/// Counts of what `apply` did, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub upserted: usize,
    pub deleted: usize,
    /// Same version and content already stored (a replay).
    pub unchanged: usize,
    /// Older than what is stored; ignored.
    pub stale: usize,
}

impl ApplyReport {
    pub fn add(&mut self, o: &ApplyReport) {
        self.upserted += o.upserted;
        self.deleted += o.deleted;
        self.unchanged += o.unchanged;
        self.stale += o.stale;
    }
}

#[derive(Clone, Debug, Default)]
pub struct SearchRequest {
    pub text: String,
    /// The query embedded with `InputKind::Query`; `None` searches by keywords only.
    pub vector: Option<Vec<f32>>,
    /// The model that embedded `vector`: an index built by another model refuses it, since
    /// similarities between two models' vectors mean nothing.
    pub model: Option<String>,
    pub k: usize,
    /// Only these kinds (empty: all).
    pub kinds: Vec<String>,
    /// Only documents whose `application` metadata equals this (case-insensitive).
    pub application: Option<String>,
}

/// One document in a result list: the best-scoring chunk stands for its document.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub source: String,
    pub score: f32,
    pub version: String,
    pub indexed_at: DateTime<Utc>,
    pub chunk_id: String,
    pub heading: Option<String>,
    pub text: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct IndexInfo {
    pub generation: u64,
    pub model: Option<String>,
    pub dims: Option<usize>,
    /// Live documents per kind.
    pub documents: BTreeMap<String, u64>,
    pub chunks: u64,
    pub tombstones: u64,
    /// sha256 over every live document's id, version and text, in id order.
    pub digest: String,
}

#[async_trait]
pub trait Index: Send + Sync {
    async fn info(&self) -> Result<IndexInfo, IndexError>;

    /// The live generation number alone; `info` computes a digest over every document, this
    /// must stay cheap enough to call per ingested object.
    async fn generation(&self) -> Result<u64, IndexError> {
        Ok(self.info().await?.generation)
    }

    /// Records the model on an empty index; refuses a different model on a non-empty one.
    async fn ensure_model(&self, model: &str, dims: usize) -> Result<(), IndexError>;

    /// What is stored for these ids in the live generation (absent ids are omitted).
    async fn states(&self, ids: &[String]) -> Result<HashMap<String, DocState>, IndexError>;

    /// Applies writes to the live generation atomically, each under its `Guard`. With
    /// `Guard::Projection`, identical content is still `unchanged` and a delete of an absent
    /// or already deleted document is `unchanged`; nothing is ever `stale`.
    async fn apply(&self, writes: Vec<Write>) -> Result<ApplyReport, IndexError>;

    async fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>, IndexError>;

    /// These documents (their first chunk, score 0) from the live generation; absent ids are
    /// omitted. Chat cites the documents of the entities a question names this way.
    async fn get(&self, ids: &[String]) -> Result<Vec<Hit>, IndexError>;

    /// Up to `limit` documents (their first chunk, score 0) of the live generation whose
    /// ingest-recorded family ([`crate::ingest::format::records::FAMILY_KEY`]) is `family`,
    /// in id order. Retrieval asks for the other levels of the products its best candidates
    /// belong to. The default knows no families, so an index without this lookup ranks as
    /// before; an OpenSearch index would answer it with a term query on the metadata field.
    async fn family(&self, family: &str, limit: usize) -> Result<Vec<Hit>, IndexError> {
        let _ = (family, limit);
        Ok(Vec::new())
    }

    /// For each of `words` the index does not hold, the nearest word it does
    /// ([`spelling::Vocabulary::nearest`]); held words and those nothing is near are left out.
    /// Retrieval respells a question with it before searching. The default respells nothing;
    /// OpenSearch's term suggester (`suggest_mode: missing`) answers the same question.
    async fn spellings(&self, words: &[String]) -> Result<HashMap<String, String>, IndexError> {
        let _ = words;
        Ok(HashMap::new())
    }

    /// Every document and tombstone of the given kinds in the live generation, as writes
    /// that recreate them (used to carry documents over into a new generation).
    async fn dump(&self, kinds: &[String]) -> Result<Vec<Write>, IndexError>;

    /// Starts an empty generation beside the live one; searches keep using the live one.
    async fn begin_generation(&self, model: &str, dims: usize) -> Result<u64, IndexError>;

    async fn apply_to_generation(&self, generation: u64, writes: Vec<Write>) -> Result<ApplyReport, IndexError>;

    /// Makes `generation` live in one atomic step and removes the older ones.
    async fn swap_generation(&self, generation: u64) -> Result<(), IndexError>;

    /// Drops a generation that was begun but will not be swapped in.
    async fn abandon_generation(&self, generation: u64) -> Result<(), IndexError>;
}
