//! The default index: one SQLite file on disk, searched by keywords (FTS5) and by vectors.
//!
//! One writer process (`askiam serve`, an ingest run) and any number of readers (`askiam
//! search`, `askiam stats`) may open the same file; WAL mode and a busy timeout let them
//! coexist. Decisions a reader would otherwise question:
//!
//! - **Generations are separate tables** (`docs_g7`, `chunks_g7`, `fts_g7`) whose live number
//!   is kept in `meta`. A swap is one transaction that flips the number and drops the older
//!   tables, and every read looks up the number and queries inside one read transaction, so
//!   WAL's snapshot shows it either the old index or the new one, whole.
//! - **Vectors are searched by brute force** over an in-memory copy of the live generation's
//!   matrix: exact, no extra dependency, and fast enough for an IAM catalogue (a few hundred
//!   thousand chunks). The copy is keyed by (generation, revision), and every write that
//!   changes chunks bumps the generation's revision inside its own transaction. That one
//!   number catches writes by this process and by any other process sharing the file, and —
//!   unlike `PRAGMA data_version` — is not disturbed by a rebuild of another generation.
//! - **Keyword and vector results are fused by rank** (reciprocal rank fusion), so BM25 scores
//!   and cosine similarities never need calibrating against each other.
//! - **User text never reaches `MATCH` as syntax**: it is split into words, each quoted.
//! - **Under the version guard, a delete of an unknown id still leaves a tombstone**, so an
//!   older insert arriving late stays deleted. A tombstone whose kind the caller did not know
//!   (`""`) goes along with every `dump`: replaying it is harmless, losing it is not.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, DatabaseName, OpenFlags, OptionalExtension};
use rusqlite::{Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

use super::spelling::Vocabulary;
use super::{ApplyReport, DocState, Guard, Hit, Index, IndexError, IndexInfo, SearchRequest, Upsert, Write};
use crate::model::{Chunk, Document, Version};

/// The usual reciprocal-rank-fusion constant: damps the difference between ranks 1 and 2.
const RRF_K: f64 = 60.0;
/// bm25() column weights for (title, heading, text): a role named "Payments Admin" should
/// beat a policy that mentions payments in passing.
const BM25_WEIGHTS: &str = "4.0, 2.0, 1.0";
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const SCHEMA_VERSION: i64 = 1;
/// Bounds the cost of a pasted essay; the first words of a question carry it.
const MAX_QUERY_TERMS: usize = 32;
/// Words that appear in nearly every access question and would drown the keyword ranking.
const STOP_WORDS: &[&str] = &[
    "a", "about", "access", "am", "an", "and", "any", "are", "as", "at", "be", "by", "can", "do", "does", "for",
    "from", "get", "give", "how", "i", "in", "is", "it", "me", "my", "need", "of", "on", "or", "our", "please",
    "should", "that", "the", "this", "to", "we", "what", "which", "who", "with", "you", "your",
];

/// The SQLite-backed [`Index`]. Cheap to share: `Send + Sync`, one connection behind a mutex.
pub struct EmbeddedIndex {
    shared: Arc<Shared>,
    /// Weight of the keyword (BM25) ranking in the fusion.
    pub keyword_weight: f64,
    /// Weight of the vector ranking in the fusion.
    pub vector_weight: f64,
}

struct Shared {
    path: String,
    state: Mutex<State>,
}

struct State {
    conn: Connection,
    cache: Caches,
}

/// What reads keep in memory between calls, each valid for one (generation, revision).
#[derive(Default)]
struct Caches {
    vectors: Option<VectorCache>,
    results: Option<ResultCache>,
    words: Option<WordCache>,
}

/// The live generation's words, for respelling questions (`Index::spellings`).
struct WordCache {
    generation: u64,
    revision: i64,
    vocabulary: Vocabulary,
}

/// Recent search results of the live generation at one revision: a question asked again
/// against an unchanged index gets the same hits without re-running both searches. Any
/// write bumps the revision, which empties it.
struct ResultCache {
    generation: u64,
    revision: i64,
    hits: lru::LruCache<u64, Vec<Hit>>,
}

const RESULT_CACHE_ENTRIES: usize = 2048;

fn request_key(req: &SearchRequest, weights: (f64, f64)) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&req.text, req.k, &req.kinds, &req.application, weights.0.to_bits(), weights.1.to_bits()).hash(&mut h);
    match &req.vector {
        Some(v) => v.iter().for_each(|x| x.to_bits().hash(&mut h)),
        None => u8::MAX.hash(&mut h),
    }
    h.finish()
}

/// The live generation's vectors, one contiguous row-major matrix.
struct VectorCache {
    generation: u64,
    revision: i64,
    dims: usize,
    /// Chunk row id of each matrix row.
    rids: Vec<i64>,
    /// Index into `docs` of each matrix row's document.
    owners: Vec<usize>,
    docs: Vec<CachedDoc>,
    matrix: Vec<f32>,
}

struct CachedDoc {
    id: String,
    kind: String,
    application: Option<String>,
}

/// Internal error, so `?` works on rusqlite calls; the file path is attached at the boundary.
enum Fail {
    Sql(rusqlite::Error),
    Index(IndexError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<IndexError> for Fail {
    fn from(e: IndexError) -> Self {
        Fail::Index(e)
    }
}

impl Fail {
    fn into_index(self, path: &str) -> IndexError {
        match self {
            Fail::Sql(source) => IndexError::Sqlite { path: path.to_owned(), source },
            Fail::Index(e) => e,
        }
    }

    fn is_missing_table(&self) -> bool {
        matches!(self, Fail::Sql(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table"))
    }
}

type R<T> = Result<T, Fail>;

fn other(msg: String) -> Fail {
    Fail::Index(IndexError::Other(msg))
}

/// The table names of one generation; the number comes from our own `meta`, never from input.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Gen(u64);

impl Gen {
    fn docs(self) -> String {
        format!("docs_g{}", self.0)
    }
    fn chunks(self) -> String {
        format!("chunks_g{}", self.0)
    }
    fn fts(self) -> String {
        format!("fts_g{}", self.0)
    }
}

struct GenRow {
    gen: Gen,
    model: Option<String>,
    dims: Option<usize>,
    revision: i64,
}

impl EmbeddedIndex {
    /// Opens the index file, creating it (and its directory) with an empty live generation if
    /// missing.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| IndexError::Other(format!("creating {}: {e}", dir.display())))?;
        }
        let init = || -> R<Connection> {
            let mut conn = Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // The mode is stored in the file; switching needs a moment alone, which the busy
            // timeout waits for.
            let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(other(format!("{shown}: could not switch to WAL (journal mode {mode})")));
            }
            initialise(&mut conn)?;
            // Index files from before families were recorded lack the lookup's index.
            create_family_index(&conn, live(&conn)?.gen)?;
            Ok(conn)
        };
        let conn = init().map_err(|e| e.into_index(&shown))?;
        Ok(Self::from_connection(shown, conn))
    }

    /// Opens an existing index for searching only; any write fails.
    pub fn open_read_only(path: &Path) -> Result<Self, IndexError> {
        let shown = path.display().to_string();
        let init = || -> R<Connection> {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(path, flags)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            if !is_initialised(&conn)? {
                return Err(other(format!("{shown} holds no askiam index yet")));
            }
            Ok(conn)
        };
        let conn = init().map_err(|e| e.into_index(&shown))?;
        Ok(Self::from_connection(shown, conn))
    }

    /// Sets how much the keyword and the vector rankings count in the fusion (default 1, 1).
    pub fn with_weights(mut self, keyword: f64, vector: f64) -> Self {
        self.keyword_weight = keyword;
        self.vector_weight = vector;
        self
    }

    fn from_connection(path: String, conn: Connection) -> Self {
        EmbeddedIndex {
            shared: Arc::new(Shared { path, state: Mutex::new(State { conn, cache: Caches::default() }) }),
            keyword_weight: 1.0,
            vector_weight: 1.0,
        }
    }

    /// Runs blocking SQLite work off the async workers (a vector scan can take milliseconds).
    async fn run<T, F>(&self, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&mut State) -> R<T> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolled that transaction back on unwind, so the
            // connection is still sound; only the cache might be half-built.
            let mut state = shared.state.lock().unwrap_or_else(|p: PoisonError<_>| {
                let mut s = p.into_inner();
                s.cache = Caches::default();
                s
            });
            f(&mut state).map_err(|e| e.into_index(&shared.path))
        })
        .await
        .map_err(|e| IndexError::Other(format!("index task failed: {e}")))?
    }
}

fn is_initialised(conn: &Connection) -> R<bool> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(false);
    }
    let schema: Option<i64> =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0)).optional()?;
    match schema {
        None => Ok(false),
        Some(SCHEMA_VERSION) => Ok(true),
        Some(v) => Err(other(format!("index schema {v} is not supported (expected {SCHEMA_VERSION})"))),
    }
}

fn initialise(conn: &mut Connection) -> R<()> {
    // Checked outside a write transaction first, so a reader opening a busy file never waits
    // for the writer's lock.
    if is_initialised(conn)? {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if is_initialised(&tx)? {
        return Ok(());
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
         CREATE TABLE IF NOT EXISTS generations (
             gen INTEGER PRIMARY KEY, model TEXT, dims INTEGER, revision INTEGER NOT NULL
         );",
    )?;
    create_tables(&tx, Gen(1))?;
    tx.execute("INSERT INTO generations (gen, model, dims, revision) VALUES (1, NULL, NULL, 0)", [])?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('live', 1), ('last_generation', 1), ('schema', ?1)",
        [SCHEMA_VERSION],
    )?;
    tx.commit()?;
    Ok(())
}

fn create_tables(conn: &Connection, g: Gen) -> R<()> {
    let (docs, chunks, fts) = (g.docs(), g.chunks(), g.fts());
    // `rid` is declared so that VACUUM cannot renumber the rows the FTS index points at.
    // The FTS table is contentless: text lives once, in the chunks table.
    conn.execute_batch(&format!(
        "CREATE TABLE {docs} (
             id TEXT PRIMARY KEY,
             kind TEXT NOT NULL,
             title TEXT NOT NULL,
             source TEXT NOT NULL,
             version TEXT NOT NULL,
             content_hash TEXT,
             metadata TEXT NOT NULL,
             application TEXT,
             indexed_at TEXT NOT NULL,
             deleted INTEGER NOT NULL
         );
         CREATE TABLE {chunks} (
             rid INTEGER PRIMARY KEY,
             chunk_id TEXT NOT NULL,
             doc_id TEXT NOT NULL,
             ordinal INTEGER NOT NULL,
             heading TEXT,
             text TEXT NOT NULL,
             vector BLOB NOT NULL
         );
         CREATE INDEX {chunks}_doc ON {chunks} (doc_id, ordinal);
         CREATE VIRTUAL TABLE {fts} USING fts5(
             title, heading, text,
             content = '', contentless_delete = 1,
             tokenize = 'porter unicode61 remove_diacritics 2'
         );"
    ))?;
    create_family_index(conn, g)
}

/// The index [`Index::family`] looks members up by, on a generation's docs table.
fn create_family_index(conn: &Connection, g: Gen) -> R<()> {
    let docs = g.docs();
    conn.execute_batch(&format!("CREATE INDEX IF NOT EXISTS {docs}_family ON {docs} ({});", family_expr()))?;
    Ok(())
}

fn drop_tables(conn: &Connection, g: Gen) -> R<()> {
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
        g.fts(),
        g.chunks(),
        g.docs()
    ))?;
    Ok(())
}

fn meta_number(conn: &Connection, key: &str) -> R<u64> {
    let v: i64 = conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?;
    u64::try_from(v).map_err(|_| other(format!("meta {key} is negative: {v}")))
}

fn generation_row(conn: &Connection, g: u64) -> R<Option<GenRow>> {
    let row = conn
        .query_row("SELECT model, dims, revision FROM generations WHERE gen = ?1", [g as i64], |r| {
            Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?, r.get::<_, i64>(2)?))
        })
        .optional()?;
    Ok(row.map(|(model, dims, revision)| GenRow {
        gen: Gen(g),
        model,
        dims: dims.and_then(|d| usize::try_from(d).ok()),
        revision,
    }))
}

fn live(conn: &Connection) -> R<GenRow> {
    let g = meta_number(conn, "live")?;
    generation_row(conn, g)?.ok_or_else(|| other(format!("live generation {g} has no record")))
}

/// Reads inside one transaction, so the live number and the tables it names agree. Retries
/// once if another process dropped a table between our snapshot and a statement's prepare.
fn read<T>(state: &mut State, f: impl Fn(&Transaction, &mut Caches) -> R<T>) -> R<T> {
    let attempt = |state: &mut State| -> R<T> {
        let State { conn, cache } = state;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx, cache)?;
        tx.commit()?;
        Ok(out)
    };
    match attempt(state) {
        Err(e) if e.is_missing_table() => attempt(state),
        result => result,
    }
}

/// Writes take the lock up front: upgrading a read to a write fails at once on a busy WAL
/// file instead of waiting for the busy timeout.
fn write<T>(state: &mut State, f: impl FnOnce(&Transaction) -> R<T>) -> R<T> {
    let tx = state.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

#[async_trait]
impl Index for EmbeddedIndex {
    async fn info(&self) -> Result<IndexInfo, IndexError> {
        self.run(|s| read(s, |tx, _| info_in(tx))).await
    }

    async fn generation(&self) -> Result<u64, IndexError> {
        self.run(|s| read(s, |tx, _| Ok(live(tx)?.gen.0))).await
    }

    async fn ensure_model(&self, model: &str, dims: usize) -> Result<(), IndexError> {
        let model = model.to_owned();
        self.run(move |s| {
            if !read(s, |tx, _| check_model(tx, &model, dims))? {
                return Ok(());
            }
            // A read-only handle cannot record the model; the writer will.
            if s.conn.is_readonly(DatabaseName::Main)? {
                return Ok(());
            }
            write(s, |tx| {
                if check_model(tx, &model, dims)? {
                    let g = meta_number(tx, "live")?;
                    tx.execute(
                        "UPDATE generations SET model = ?1, dims = ?2 WHERE gen = ?3",
                        params![model, dims as i64, g as i64],
                    )?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn states(&self, ids: &[String]) -> Result<HashMap<String, DocState>, IndexError> {
        let ids = ids.to_vec();
        self.run(move |s| read(s, |tx, _| states_in(tx, &ids))).await
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<ApplyReport, IndexError> {
        self.apply_target(None, writes).await
    }

    async fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>, IndexError> {
        let req = req.clone();
        let weights = (self.keyword_weight, self.vector_weight);
        self.run(move |s| read(s, |tx, cache| search_in(tx, cache, &req, weights))).await
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Hit>, IndexError> {
        let ids = ids.to_vec();
        self.run(move |s| {
            read(s, |tx, _| {
                let g = live(tx)?.gen;
                let mut out = Vec::new();
                for id in &ids {
                    out.extend(first_chunk(tx, g, id)?);
                }
                Ok(out)
            })
        })
        .await
    }

    async fn family(&self, family: &str, limit: usize) -> Result<Vec<Hit>, IndexError> {
        let family = family.to_string();
        self.run(move |s| read(s, |tx, _| family_in(tx, &family, limit))).await
    }

    async fn spellings(&self, words: &[String]) -> Result<HashMap<String, String>, IndexError> {
        let words = words.to_vec();
        self.run(move |s| read(s, |tx, caches| spellings_in(tx, caches, &words))).await
    }

    async fn dump(&self, kinds: &[String]) -> Result<Vec<Write>, IndexError> {
        let kinds = kinds.to_vec();
        self.run(move |s| read(s, |tx, _| dump_in(tx, &kinds))).await
    }

    async fn begin_generation(&self, model: &str, dims: usize) -> Result<u64, IndexError> {
        let model = model.to_owned();
        self.run(move |s| {
            write(s, |tx| {
                // Numbers are never reused, so a cache keyed by generation cannot be fooled by
                // an abandoned build's successor.
                let max: i64 = tx.query_row("SELECT COALESCE(MAX(gen), 0) FROM generations", [], |r| r.get(0))?;
                let g = meta_number(tx, "last_generation")?.max(max.max(0) as u64) + 1;
                create_tables(tx, Gen(g))?;
                tx.execute(
                    "INSERT INTO generations (gen, model, dims, revision) VALUES (?1, ?2, ?3, 0)",
                    params![g as i64, model, dims as i64],
                )?;
                tx.execute("UPDATE meta SET value = ?1 WHERE key = 'last_generation'", [g as i64])?;
                Ok(g)
            })
        })
        .await
    }

    async fn apply_to_generation(&self, generation: u64, writes: Vec<Write>) -> Result<ApplyReport, IndexError> {
        self.apply_target(Some(generation), writes).await
    }

    async fn swap_generation(&self, generation: u64) -> Result<(), IndexError> {
        self.run(move |s| {
            write(s, |tx| {
                let current = meta_number(tx, "live")?;
                if current == generation {
                    return Ok(()); // a retried swap that already happened
                }
                if generation < current || generation_row(tx, generation)?.is_none() {
                    return Err(IndexError::NoSuchGeneration(generation).into());
                }
                tx.execute("UPDATE meta SET value = ?1 WHERE key = 'live'", [generation as i64])?;
                let older: Vec<i64> = tx
                    .prepare("SELECT gen FROM generations WHERE gen < ?1")?
                    .query_map([generation as i64], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for g in older {
                    drop_tables(tx, Gen(g as u64))?;
                    tx.execute("DELETE FROM generations WHERE gen = ?1", [g])?;
                }
                Ok(())
            })?;
            s.cache = Caches::default(); // frees the old generation's matrix now rather than at next search
            Ok(())
        })
        .await
    }

    async fn abandon_generation(&self, generation: u64) -> Result<(), IndexError> {
        self.run(move |s| {
            write(s, |tx| {
                if meta_number(tx, "live")? == generation || generation_row(tx, generation)?.is_none() {
                    return Err(IndexError::NoSuchGeneration(generation).into());
                }
                drop_tables(tx, Gen(generation))?;
                tx.execute("DELETE FROM generations WHERE gen = ?1", [generation as i64])?;
                Ok(())
            })
        })
        .await
    }
}

impl EmbeddedIndex {
    async fn apply_target(&self, target: Option<u64>, writes: Vec<Write>) -> Result<ApplyReport, IndexError> {
        for w in &writes {
            if let Write::Upsert(u) = w {
                if u.doc.chunks.len() != u.vectors.len() {
                    return Err(IndexError::VectorCount {
                        id: u.doc.id.clone(),
                        chunks: u.doc.chunks.len(),
                        vectors: u.vectors.len(),
                    });
                }
            }
        }
        if writes.is_empty() && target.is_none() {
            return Ok(ApplyReport::default());
        }
        self.run(move |s| write(s, |tx| apply_in(tx, target, &writes))).await
    }
}

/// `true` when the model should be recorded; an error when a different one built the docs.
fn check_model(tx: &Transaction, model: &str, dims: usize) -> R<bool> {
    let live = live(tx)?;
    if live.model.as_deref() == Some(model) && live.dims == Some(dims) {
        return Ok(false);
    }
    let has_docs: bool =
        tx.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {} WHERE deleted = 0)", live.gen.docs()), [], |r| {
            r.get(0)
        })?;
    match (live.model, has_docs) {
        (Some(built), true) => Err(IndexError::ModelMismatch {
            built,
            built_dims: live.dims.unwrap_or(0),
            requested: model.to_owned(),
            requested_dims: dims,
        }
        .into()),
        _ => Ok(true),
    }
}

/// What is stored for one id, as the version guard needs it.
struct Stored {
    version: String,
    content_hash: Option<String>,
    deleted: bool,
}

enum Outcome {
    Upserted,
    Deleted,
    Unchanged,
    Stale,
}

fn apply_in(tx: &Transaction, target: Option<u64>, writes: &[Write]) -> R<ApplyReport> {
    let live_no = meta_number(tx, "live")?;
    let g = match target {
        None => live_no,
        Some(g) if g != live_no => g,
        Some(g) => return Err(IndexError::NoSuchGeneration(g).into()),
    };
    let row = generation_row(tx, g)?.ok_or(IndexError::NoSuchGeneration(g))?;
    if let Some(dims) = row.dims {
        for u in writes.iter().filter_map(|w| match w {
            Write::Upsert(u) => Some(u),
            Write::Delete { .. } => None,
        }) {
            // An empty vector marks a keywords-only chunk.
            if let Some(v) = u.vectors.iter().find(|v| !v.is_empty() && v.len() != dims) {
                return Err(other(format!("document {}: vector has {} dims, index expects {dims}", u.doc.id, v.len())));
            }
        }
    }
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut report = ApplyReport::default();
    for w in writes {
        let outcome = match w {
            Write::Upsert(u) => upsert_one(tx, row.gen, u, &now)?,
            Write::Delete { id, kind, version, guard } => delete_one(tx, row.gen, id, kind, *version, *guard, &now)?,
        };
        match outcome {
            Outcome::Upserted => report.upserted += 1,
            Outcome::Deleted => report.deleted += 1,
            Outcome::Unchanged => report.unchanged += 1,
            Outcome::Stale => report.stale += 1,
        }
    }
    if report.upserted + report.deleted > 0 {
        tx.execute("UPDATE generations SET revision = revision + 1 WHERE gen = ?1", [g as i64])?;
    }
    Ok(report)
}

fn stored(tx: &Transaction, g: Gen, id: &str) -> R<Option<Stored>> {
    let sql = format!("SELECT version, content_hash, deleted FROM {} WHERE id = ?1", g.docs());
    let row = tx
        .prepare_cached(&sql)?
        .query_row([id], |r| Ok(Stored { version: r.get(0)?, content_hash: r.get(1)?, deleted: r.get(2)? }))
        .optional()?;
    Ok(row)
}

fn remove_chunks(tx: &Transaction, g: Gen, id: &str) -> R<()> {
    let (chunks, fts) = (g.chunks(), g.fts());
    tx.prepare_cached(&format!("DELETE FROM {fts} WHERE rowid IN (SELECT rid FROM {chunks} WHERE doc_id = ?1)"))?
        .execute([id])?;
    tx.prepare_cached(&format!("DELETE FROM {chunks} WHERE doc_id = ?1"))?.execute([id])?;
    Ok(())
}

fn upsert_one(tx: &Transaction, g: Gen, u: &Upsert, now: &str) -> R<Outcome> {
    let doc = &u.doc;
    // Version keys are fixed-width hex whose byte order is the version order.
    let key = doc.version.to_key();
    if let Some(s) = stored(tx, g, &doc.id)? {
        let same_content = !s.deleted && s.content_hash.as_deref() == Some(u.content_hash.as_str());
        match u.guard {
            Guard::Version if s.version > key || (s.version == key && s.deleted) => return Ok(Outcome::Stale),
            Guard::Version if s.version == key && same_content => return Ok(Outcome::Unchanged),
            Guard::Projection if same_content => {
                // The text is what it was; only the version moves, so the digest follows it.
                if s.version != key {
                    tx.prepare_cached(&format!("UPDATE {} SET version = ?2 WHERE id = ?1", g.docs()))?
                        .execute(params![doc.id, key])?;
                }
                return Ok(Outcome::Unchanged);
            }
            _ => {}
        }
    }
    remove_chunks(tx, g, &doc.id)?;
    let metadata = serde_json::Value::Object(doc.metadata.clone()).to_string();
    let application = doc.metadata.get("application").and_then(|v| v.as_str()).map(str::to_lowercase);
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {} (id, kind, title, source, version, content_hash, metadata, application,
             indexed_at, deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)",
        g.docs()
    ))?
    .execute(params![
        doc.id,
        doc.kind,
        doc.title,
        doc.source,
        key,
        u.content_hash,
        metadata,
        application,
        now
    ])?;
    let mut chunk_stmt = tx.prepare_cached(&format!(
        "INSERT INTO {} (chunk_id, doc_id, ordinal, heading, text, vector) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        g.chunks()
    ))?;
    let mut fts_stmt =
        tx.prepare_cached(&format!("INSERT INTO {} (rowid, title, heading, text) VALUES (?1, ?2, ?3, ?4)", g.fts()))?;
    for (chunk, vector) in doc.chunks.iter().zip(&u.vectors) {
        chunk_stmt.execute(params![chunk.id, doc.id, chunk.ordinal, chunk.heading, chunk.text, encode(vector)])?;
        let rid = tx.last_insert_rowid();
        fts_stmt.execute(params![rid, doc.title, chunk.heading, chunk.text])?;
    }
    Ok(Outcome::Upserted)
}

fn delete_one(tx: &Transaction, g: Gen, id: &str, kind: &str, version: Version, guard: Guard, now: &str) -> R<Outcome> {
    let key = version.to_key();
    let docs = g.docs();
    let tombstone = |tx: &Transaction| -> R<()> {
        tx.prepare_cached(&format!(
            "UPDATE {docs} SET version = ?2, kind = CASE WHEN ?3 = '' THEN kind ELSE ?3 END, content_hash = NULL,
                 metadata = '{{}}', application = NULL, indexed_at = ?4, deleted = 1 WHERE id = ?1"
        ))?
        .execute(params![id, key, kind, now])?;
        Ok(())
    };
    match (guard, stored(tx, g, id)?) {
        (Guard::Version, Some(s)) if s.version > key => Ok(Outcome::Stale),
        (Guard::Version, Some(s)) if s.deleted => {
            if s.version < key {
                tombstone(tx)?; // nothing was live, but a newer tombstone guards more
            }
            Ok(Outcome::Unchanged)
        }
        (Guard::Projection, Some(s)) if s.deleted => Ok(Outcome::Unchanged),
        (_, Some(_)) => {
            remove_chunks(tx, g, id)?;
            tombstone(tx)?;
            Ok(Outcome::Deleted)
        }
        // A projection's store is authoritative and keeps its own tombstones; the guard needs
        // one here so that an older insert arriving late stays deleted.
        (Guard::Projection, None) => Ok(Outcome::Unchanged),
        (Guard::Version, None) => {
            tx.prepare_cached(&format!(
                "INSERT INTO {docs} (id, kind, title, source, version, content_hash, metadata, application,
                     indexed_at, deleted) VALUES (?1, ?2, '', '', ?3, NULL, '{{}}', NULL, ?4, 1)"
            ))?
            .execute(params![id, kind, key, now])?;
            Ok(Outcome::Unchanged)
        }
    }
}

fn info_in(tx: &Transaction) -> R<IndexInfo> {
    let live = live(tx)?;
    let (docs, chunks) = (live.gen.docs(), live.gen.chunks());
    let mut documents = BTreeMap::new();
    let mut stmt = tx.prepare(&format!("SELECT kind, COUNT(*) FROM {docs} WHERE deleted = 0 GROUP BY kind"))?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (kind, n) = row?;
        documents.insert(kind, n as u64);
    }
    let chunk_count: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM {chunks}"), [], |r| r.get(0))?;
    let tombstones: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM {docs} WHERE deleted = 1"), [], |r| r.get(0))?;

    // Streamed in id order (SQLite's binary collation is byte order, like Rust's), so the
    // digest does not depend on insertion order, generation number or memory.
    let mut h = Sha256::new();
    let mut stmt = tx.prepare(&format!(
        "SELECT d.id, d.version, c.text FROM {docs} d LEFT JOIN {chunks} c ON c.doc_id = d.id
         WHERE d.deleted = 0 ORDER BY d.id, c.ordinal, c.chunk_id"
    ))?;
    let mut rows = stmt.query([])?;
    let mut current: Option<String> = None;
    let mut first_chunk = true;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        if current.as_deref() != Some(id.as_str()) {
            if current.is_some() {
                h.update([1]);
            }
            let version: String = row.get(1)?;
            h.update(id.as_bytes());
            h.update([0]);
            h.update(version.as_bytes());
            h.update([0]);
            current = Some(id);
            first_chunk = true;
        }
        if let Some(text) = row.get::<_, Option<String>>(2)? {
            if !first_chunk {
                h.update(b"\n");
            }
            h.update(text.as_bytes());
            first_chunk = false;
        }
    }
    if current.is_some() {
        h.update([1]);
    }
    Ok(IndexInfo {
        generation: live.gen.0,
        model: live.model,
        dims: live.dims,
        documents,
        chunks: chunk_count as u64,
        tombstones: tombstones as u64,
        digest: hex::encode(h.finalize()),
    })
}

fn parse_version(id: &str, key: &str) -> R<Version> {
    Version::from_key(key).ok_or_else(|| other(format!("document {id}: stored version {key:?} is malformed")))
}

fn states_in(tx: &Transaction, ids: &[String]) -> R<HashMap<String, DocState>> {
    let live = live(tx)?;
    let mut stmt = tx.prepare(&format!("SELECT version, content_hash FROM {} WHERE id = ?1", live.gen.docs()))?;
    let mut out = HashMap::new();
    for id in ids {
        let row = stmt.query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))).optional()?;
        if let Some((key, content_hash)) = row {
            out.insert(id.clone(), DocState { version: parse_version(id, &key)?, content_hash });
        }
    }
    Ok(out)
}

fn dump_in(tx: &Transaction, kinds: &[String]) -> R<Vec<Write>> {
    let live = live(tx)?;
    let (docs, chunks) = (live.gen.docs(), live.gen.chunks());
    // Empty means every kind, as in a search filter. Tombstones of unknown kind go along with
    // any dump: replaying one is harmless, dropping one could resurrect a deleted document.
    let filter = if kinds.is_empty() {
        String::new()
    } else {
        let marks = vec!["?"; kinds.len()].join(", ");
        format!("WHERE kind IN ({marks}) OR (deleted = 1 AND kind = '')")
    };
    let mut stmt = tx.prepare(&format!(
        "SELECT id, kind, title, source, version, content_hash, metadata, deleted FROM {docs} {filter} ORDER BY id"
    ))?;
    let mut chunk_stmt = tx.prepare(&format!(
        "SELECT chunk_id, ordinal, heading, text, vector FROM {chunks} WHERE doc_id = ?1 ORDER BY ordinal, chunk_id"
    ))?;
    let mut rows = stmt.query(params_from_iter(kinds))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let version = parse_version(&id, &row.get::<_, String>(4)?)?;
        if row.get::<_, bool>(7)? {
            out.push(Write::Delete { id, kind: row.get(1)?, version, guard: Guard::Version });
            continue;
        }
        let mut doc_chunks = Vec::new();
        let mut vectors = Vec::new();
        let mut crows = chunk_stmt.query([&id])?;
        while let Some(c) = crows.next()? {
            let vector = decode(&id, &c.get::<_, Vec<u8>>(4)?)?;
            // A chunk stored without a vector is a keywords-only chunk.
            let keywords_only = vector.is_empty();
            doc_chunks.push(Chunk {
                id: c.get(0)?,
                ordinal: c.get(1)?,
                heading: c.get(2)?,
                text: c.get(3)?,
                keywords_only,
            });
            vectors.push(vector);
        }
        let doc = Document {
            metadata: parse_metadata(&id, &row.get::<_, String>(6)?)?,
            id,
            kind: row.get(1)?,
            title: row.get(2)?,
            source: row.get(3)?,
            version,
            chunks: doc_chunks,
        };
        let content_hash = row.get::<_, Option<String>>(5)?.unwrap_or_else(|| doc.content_hash());
        // Replayed under the version guard: whatever else writes the new generation, what
        // we carry over never overwrites something newer.
        out.push(Write::Upsert(Upsert { doc, content_hash, vectors, guard: Guard::Version }));
    }
    Ok(out)
}

/// The filters of a search, applied before ranking so they never starve the result list.
struct Filter<'a> {
    kinds: &'a [String],
    /// Lowercased.
    application: Option<String>,
}

impl Filter<'_> {
    fn accepts(&self, kind: &str, application: Option<&str>) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && self.application.as_deref().is_none_or(|a| application == Some(a))
    }
}

fn search_in(tx: &Transaction, caches: &mut Caches, req: &SearchRequest, weights: (f64, f64)) -> R<Vec<Hit>> {
    if req.k == 0 {
        return Ok(Vec::new());
    }
    let live = live(tx)?;
    if let Some(v) = &req.vector {
        let other_model = matches!((&req.model, &live.model), (Some(asked), Some(built)) if asked != built);
        if other_model || live.dims.is_some_and(|d| d != v.len()) {
            return Err(IndexError::ModelMismatch {
                built: live.model.clone().unwrap_or_default(),
                built_dims: live.dims.unwrap_or(0),
                requested: req.model.clone().unwrap_or_default(),
                requested_dims: v.len(),
            }
            .into());
        }
    }
    let key = request_key(req, weights);
    let results = match &mut caches.results {
        Some(r) if r.generation == live.gen.0 && r.revision == live.revision => r,
        slot => slot.insert(ResultCache {
            generation: live.gen.0,
            revision: live.revision,
            hits: lru::LruCache::new(std::num::NonZeroUsize::new(RESULT_CACHE_ENTRIES).expect("non-zero")),
        }),
    };
    if let Some(hits) = results.hits.get(&key) {
        return Ok(hits.clone());
    }
    let hits = search_uncached(tx, &mut caches.vectors, &live, req, weights)?;
    if let Some(r) = caches.results.as_mut() {
        r.hits.put(key, hits.clone());
    }
    Ok(hits)
}

fn spellings_in(tx: &Transaction, caches: &mut Caches, words: &[String]) -> R<HashMap<String, String>> {
    let live = live(tx)?;
    let cache = match &mut caches.words {
        Some(c) if c.generation == live.gen.0 && c.revision == live.revision => c,
        slot => {
            let (docs, chunks) = (live.gen.docs(), live.gen.chunks());
            let mut stmt = tx.prepare(&format!(
                "SELECT COALESCE(d.title, '') FROM {docs} d WHERE d.deleted = 0
                 UNION ALL SELECT c.text FROM {chunks} c JOIN {docs} d ON d.id = c.doc_id WHERE d.deleted = 0"
            ))?;
            let mut vocabulary = Vocabulary::default();
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                vocabulary.add(row.get_ref(0)?.as_str().map_err(|e| other(format!("stored text: {e}")))?);
            }
            slot.insert(WordCache { generation: live.gen.0, revision: live.revision, vocabulary })
        }
    };
    Ok(words.iter().filter_map(|w| cache.vocabulary.nearest(w).map(|near| (w.clone(), near.to_string()))).collect())
}

fn search_uncached(
    tx: &Transaction,
    cache: &mut Option<VectorCache>,
    live: &GenRow,
    req: &SearchRequest,
    (keyword_weight, vector_weight): (f64, f64),
) -> R<Vec<Hit>> {
    let depth = req.k.saturating_mul(5).clamp(50, 1000);
    let filter = Filter { kinds: &req.kinds, application: req.application.as_deref().map(str::to_lowercase) };
    let keyword = match fts_query(&req.text) {
        Some(q) => keyword_ranks(tx, live.gen, &q, &filter, depth)?,
        None => Vec::new(),
    };
    let vector = match &req.vector {
        Some(v) => vector_ranks(tx, cache, live, v, &filter, depth)?,
        None => Vec::new(),
    };

    let best = fuse_documents(&[(&keyword, keyword_weight), (&vector, vector_weight)]);
    let mut ranked: Vec<(String, f64, i64)> = best.into_iter().map(|(id, (s, rid))| (id, s, rid)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(req.k);
    let mut hits = Vec::with_capacity(ranked.len());
    for (_, score, rid) in ranked {
        hits.extend(load_hit(tx, live.gen, rid, score)?);
    }
    Ok(hits)
}

/// Reciprocal rank fusion over documents: in each list a document ranks where its best chunk
/// does, so the keyword evidence of one chunk (a permission list) and the vector evidence of
/// another (the description) add up. The chunk shown is the one that earned the most.
fn fuse_documents(lists: &[(&Vec<(i64, String)>, f64)]) -> HashMap<String, (f64, i64)> {
    // doc → (score, best single contribution, its chunk)
    let mut docs: HashMap<String, (f64, f64, i64)> = HashMap::new();
    for (list, weight) in lists {
        let mut seen: HashSet<&str> = HashSet::new();
        for (rid, doc) in list.iter() {
            if !seen.insert(doc.as_str()) {
                continue;
            }
            let part = weight / (RRF_K + seen.len() as f64);
            let slot = docs.entry(doc.clone()).or_insert((0.0, f64::NEG_INFINITY, i64::MAX));
            slot.0 += part;
            if part > slot.1 || (part == slot.1 && *rid < slot.2) {
                (slot.1, slot.2) = (part, *rid);
            }
        }
    }
    docs.into_iter().map(|(d, (score, _, rid))| (d, (score, rid))).collect()
}

/// Turns free text into a safe FTS5 expression: words, stop words dropped (unless nothing
/// else is left), each quoted as a string, joined with OR. `None` when there are no words.
fn fts_query(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let tokens: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let compounds = compound_forms(&tokens);
    let mut seen = HashSet::new();
    let words: Vec<&str> =
        tokens.iter().copied().chain(compounds.iter().map(String::as_str)).filter(|w| seen.insert(*w)).collect();
    let content: Vec<&str> = words.iter().copied().filter(|w| !STOP_WORDS.contains(w)).collect();
    let chosen = if content.is_empty() { words } else { content };
    if chosen.is_empty() {
        return None;
    }
    // Only alphanumerics remain, but doubling quotes keeps this safe if the split ever changes.
    let terms: Vec<String> =
        chosen.iter().take(MAX_QUERY_TERMS).map(|w| format!("\"{}\"", w.replace('"', "\"\""))).collect();
    Some(terms.join(" OR "))
}

/// Product names are written both ways ("Route 53", "route53"; "Windows 10"): a word of
/// three or more letters followed by digits also matches as the phrase of its two parts,
/// and a word followed by a number also as the two run together.
fn compound_forms(tokens: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for w in tokens {
        let letters = w.len() - w.trim_start_matches(|c: char| c.is_ascii_alphabetic()).len();
        if letters >= 3 && letters < w.len() && w[letters..].bytes().all(|b| b.is_ascii_digit()) {
            out.push(format!("{} {}", &w[..letters], &w[letters..]));
        }
    }
    for pair in tokens.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.len() >= 3 && a.bytes().all(|c| c.is_ascii_alphabetic()) && b.bytes().all(|c| c.is_ascii_digit()) {
            out.push(format!("{a}{b}"));
        }
    }
    out
}

fn keyword_ranks(tx: &Transaction, g: Gen, query: &str, filter: &Filter, depth: usize) -> R<Vec<(i64, String)>> {
    let (fts, chunks, docs) = (g.fts(), g.chunks(), g.docs());
    let mut values = vec![SqlValue::Text(query.to_owned())];
    let mut sql = format!(
        "SELECT {fts}.rowid, c.doc_id FROM {fts} JOIN {chunks} c ON c.rid = {fts}.rowid
         JOIN {docs} d ON d.id = c.doc_id WHERE {fts} MATCH ?1 AND d.deleted = 0"
    );
    if let Some(app) = &filter.application {
        values.push(SqlValue::Text(app.clone()));
        sql.push_str(&format!(" AND d.application = ?{}", values.len()));
    }
    if !filter.kinds.is_empty() {
        let first = values.len() + 1;
        values.extend(filter.kinds.iter().map(|k| SqlValue::Text(k.clone())));
        let marks: Vec<String> = (first..=values.len()).map(|i| format!("?{i}")).collect();
        sql.push_str(&format!(" AND d.kind IN ({})", marks.join(", ")));
    }
    values.push(SqlValue::Integer(depth as i64));
    sql.push_str(&format!(" ORDER BY bm25({fts}, {BM25_WEIGHTS}), {fts}.rowid LIMIT ?{}", values.len()));
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn vector_ranks(
    tx: &Transaction,
    cache: &mut Option<VectorCache>,
    live: &GenRow,
    query: &[f32],
    filter: &Filter,
    depth: usize,
) -> R<Vec<(i64, String)>> {
    let dims = live.dims.unwrap_or(query.len());
    if dims == 0 || query.len() != dims {
        tracing::warn!(
            query_dims = query.len(),
            index_dims = dims,
            "query vector does not fit the index; keywords only"
        );
        return Ok(Vec::new());
    }
    let fresh =
        cache.as_ref().is_some_and(|c| c.generation == live.gen.0 && c.revision == live.revision && c.dims == dims);
    if !fresh {
        *cache = None; // drop the old matrix before building the new one
        *cache = Some(VectorCache::load(tx, live, dims)?);
    }
    let Some(c) = cache.as_ref() else { return Ok(Vec::new()) };
    let allowed: Vec<bool> = c.docs.iter().map(|d| filter.accepts(&d.kind, d.application.as_deref())).collect();
    let mut scored: Vec<(f32, usize)> = c
        .matrix
        .chunks_exact(dims)
        .enumerate()
        .filter(|(i, _)| allowed[c.owners[*i]])
        .map(|(i, row)| (crate::embed::dot(row, query), i))
        .collect();
    // Vectors are L2-normalised, so the dot product is the cosine.
    let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if scored.len() > depth {
        scored.select_nth_unstable_by(depth, order);
        scored.truncate(depth);
    }
    scored.sort_by(order);
    Ok(scored.into_iter().map(|(_, i)| (c.rids[i], c.docs[c.owners[i]].id.clone())).collect())
}

impl VectorCache {
    fn load(tx: &Transaction, live: &GenRow, dims: usize) -> R<Self> {
        let mut stmt = tx.prepare(&format!(
            "SELECT c.rid, c.doc_id, c.vector, d.kind, d.application FROM {} c JOIN {} d ON d.id = c.doc_id
             WHERE d.deleted = 0 ORDER BY c.rid",
            live.gen.chunks(),
            live.gen.docs()
        ))?;
        let mut out = VectorCache {
            generation: live.gen.0,
            revision: live.revision,
            dims,
            rids: Vec::new(),
            owners: Vec::new(),
            docs: Vec::new(),
            matrix: Vec::new(),
        };
        let mut doc_index: HashMap<String, usize> = HashMap::new();
        let mut skipped = 0usize;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let blob = row.get_ref(2)?.as_blob().map_err(|e| other(format!("stored vector: {e}")))?;
            if blob.is_empty() {
                // Keywords-only chunk: nothing to compare a query vector with.
                continue;
            }
            if blob.len() != dims * 4 {
                skipped += 1;
                continue;
            }
            let doc_id: String = row.get(1)?;
            let owner = match doc_index.get(&doc_id) {
                Some(&i) => i,
                None => {
                    out.docs.push(CachedDoc { id: doc_id.clone(), kind: row.get(3)?, application: row.get(4)? });
                    doc_index.insert(doc_id, out.docs.len() - 1);
                    out.docs.len() - 1
                }
            };
            out.rids.push(row.get(0)?);
            out.owners.push(owner);
            out.matrix.extend(blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        }
        if skipped > 0 {
            tracing::warn!(skipped, dims, "chunks whose vector has the wrong size are left out of vector search");
        }
        Ok(out)
    }
}

/// The expression the docs table's family index is built on; a query must repeat it exactly
/// for SQLite to use the index.
fn family_expr() -> String {
    format!("json_extract(metadata, '$.{}')", crate::ingest::format::records::FAMILY_KEY)
}

fn family_in(tx: &Transaction, family: &str, limit: usize) -> R<Vec<Hit>> {
    let g = live(tx)?.gen;
    let sql = format!("SELECT id FROM {} WHERE {} = ?1 AND deleted = 0 ORDER BY id LIMIT ?2", g.docs(), family_expr());
    let ids: Vec<String> = tx
        .prepare_cached(&sql)?
        .query_map(rusqlite::params![family, limit as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        out.extend(first_chunk(tx, g, id)?);
    }
    Ok(out)
}

/// A document's first chunk, score 0: how a document fetched by id rather than found by a
/// search is shown.
fn first_chunk(tx: &Transaction, g: Gen, id: &str) -> R<Option<Hit>> {
    let sql = format!("SELECT rid FROM {} WHERE doc_id = ?1 ORDER BY ordinal LIMIT 1", g.chunks());
    let rid: Option<i64> = tx.prepare_cached(&sql)?.query_row([id], |r| r.get(0)).optional()?;
    Ok(rid.map(|rid| load_hit(tx, g, rid, 0.0)).transpose()?.flatten())
}

fn load_hit(tx: &Transaction, g: Gen, rid: i64, score: f64) -> R<Option<Hit>> {
    let sql = format!(
        "SELECT d.id, d.kind, d.title, d.source, d.version, d.indexed_at, d.metadata, c.chunk_id, c.heading, c.text
         FROM {} c JOIN {} d ON d.id = c.doc_id WHERE c.rid = ?1",
        g.chunks(),
        g.docs()
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut rows = stmt.query([rid])?;
    let Some(row) = rows.next()? else { return Ok(None) };
    let id: String = row.get(0)?;
    let key: String = row.get(4)?;
    let version = Version::from_key(&key).map(|v| v.to_string()).unwrap_or(key);
    let indexed: String = row.get(5)?;
    let indexed_at = DateTime::parse_from_rfc3339(&indexed)
        .map_err(|e| other(format!("document {id}: stored indexed_at {indexed:?}: {e}")))?
        .with_timezone(&Utc);
    Ok(Some(Hit {
        metadata: parse_metadata(&id, &row.get::<_, String>(6)?)?,
        kind: row.get(1)?,
        title: row.get(2)?,
        source: row.get(3)?,
        score: score as f32,
        version,
        indexed_at,
        chunk_id: row.get(7)?,
        heading: row.get(8)?,
        text: row.get(9)?,
        id,
    }))
}

fn parse_metadata(id: &str, text: &str) -> R<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(other(format!("document {id}: stored metadata is not an object"))),
        Err(e) => Err(other(format!("document {id}: stored metadata: {e}"))),
    }
}

fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode(id: &str, blob: &[u8]) -> R<Vec<f32>> {
    if !blob.len().is_multiple_of(4) {
        return Err(other(format!("document {id}: stored vector of {} bytes", blob.len())));
    }
    Ok(blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMS: usize = 4;

    fn axis(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; DIMS];
        v[i % DIMS] = 1.0;
        v
    }

    fn doc(id: &str, kind: &str, t: i64, title: &str, texts: &[&str]) -> Document {
        Document {
            id: id.into(),
            kind: kind.into(),
            title: title.into(),
            source: "test".into(),
            version: Version::new(t, 0),
            metadata: serde_json::Map::new(),
            chunks: texts
                .iter()
                .enumerate()
                .map(|(i, text)| Chunk {
                    id: format!("{id}#{i}"),
                    ordinal: i as u32,
                    heading: None,
                    text: (*text).into(),
                    keywords_only: false,
                })
                .collect(),
        }
    }

    /// Every chunk of the document points along `dir`.
    fn up(doc: Document, dir: usize) -> Write {
        let vectors = doc.chunks.iter().map(|_| axis(dir)).collect();
        Write::Upsert(Upsert { content_hash: doc.content_hash(), doc, vectors, guard: Guard::Version })
    }

    fn del(id: &str, t: i64) -> Write {
        Write::Delete { id: id.into(), kind: "role".into(), version: Version::new(t, 0), guard: Guard::Version }
    }

    fn query(text: &str, vector: Option<Vec<f32>>, k: usize) -> SearchRequest {
        SearchRequest { text: text.into(), vector, k, ..Default::default() }
    }

    async fn fresh() -> (tempfile::TempDir, EmbeddedIndex) {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = EmbeddedIndex::open(&dir.path().join("index.sqlite")).expect("open");
        idx.ensure_model("test-model", DIMS).await.expect("model");
        (dir, idx)
    }

    fn ids(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.id.as_str()).collect()
    }

    #[test]
    fn embedded_index_is_send_and_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<EmbeddedIndex>();
    }

    #[tokio::test]
    async fn cached_results_never_outlive_a_write_or_another_writer() {
        let (dir, idx) = fresh().await;
        idx.apply(vec![up(doc("r:1", "role", 10, "Payments Admin", &["payments"]), 0)]).await.unwrap();
        let q = query("payments", Some(axis(0)), 5);
        assert_eq!(ids(&idx.search(&q).await.unwrap()), ["r:1"]);
        assert_eq!(ids(&idx.search(&q).await.unwrap()), ["r:1"]);
        idx.apply(vec![up(doc("r:2", "role", 10, "Payments Viewer", &["payments"]), 0)]).await.unwrap();
        assert_eq!(idx.search(&q).await.unwrap().len(), 2);
        // A second handle on the same file (another process) writes: this one sees it.
        let other = EmbeddedIndex::open(&dir.path().join("index.sqlite")).unwrap();
        other.apply(vec![del("r:1", 20)]).await.unwrap();
        assert_eq!(ids(&idx.search(&q).await.unwrap()), ["r:2"]);
    }

    #[tokio::test]
    async fn spellings_come_from_the_live_documents_and_follow_writes() {
        let (_dir, idx) = fresh().await;
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        idx.apply(vec![up(doc("r:1", "role", 10, "Database Admin", &["manage database instances"]), 0)]).await.unwrap();
        let spelt = idx.spellings(&words(&["databse", "instance", "intsances", "kubernetes"])).await.unwrap();
        assert_eq!(spelt.len(), 2, "a held word (singular of a held plural) and a distant one: {spelt:?}");
        assert_eq!(spelt["databse"], "database");
        assert_eq!(spelt["intsances"], "instances");
        // A write changes what is held; a deleted document's words are gone.
        idx.apply(vec![up(doc("r:2", "role", 10, "Kubernetes Viewer", &["read clusters"]), 1)]).await.unwrap();
        assert!(idx.spellings(&words(&["kubernetes"])).await.unwrap().is_empty());
        assert_eq!(idx.spellings(&words(&["kubernets"])).await.unwrap()["kubernets"], "kubernetes");
        idx.apply(vec![del("r:2", 20)]).await.unwrap();
        assert!(idx.spellings(&words(&["kubernets"])).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_family_is_its_live_members_first_chunks_in_id_order() {
        let (_d, idx) = fresh().await;
        let member = |id: &str, family: &str| {
            let mut d = doc(id, "role", 1, id, &["first", "second"]);
            d.metadata.insert(crate::ingest::format::records::FAMILY_KEY.into(), family.into());
            up(d, 0)
        };
        idx.apply(vec![member("c", "zoo"), member("a", "zoo"), member("b", "zoo"), member("x", "farm")]).await.unwrap();
        idx.apply(vec![del("b", 2)]).await.unwrap();
        let zoo = idx.family("zoo", 10).await.unwrap();
        assert_eq!(ids(&zoo), ["a", "c"], "the deleted member is gone");
        assert!(zoo.iter().all(|h| h.text == "first" && h.score == 0.0));
        assert_eq!(ids(&idx.family("zoo", 1).await.unwrap()), ["a"]);
        assert!(idx.family("none", 10).await.unwrap().is_empty());
        // The lookup's expression is the indexed one, so it is an index search, not a scan.
        let plan: String = idx
            .run(|s| {
                let g = live(&s.conn)?.gen;
                let sql = format!("EXPLAIN QUERY PLAN SELECT id FROM {} WHERE {} = 'zoo'", g.docs(), family_expr());
                Ok(s.conn.query_row(&sql, [], |r| r.get::<_, String>(3))?)
            })
            .await
            .unwrap();
        assert!(plan.contains("_family"), "{plan}");
    }

    #[tokio::test]
    async fn stale_upsert_is_ignored() {
        let (_d, idx) = fresh().await;
        idx.apply(vec![up(doc("r:1", "role", 20, "Payments Admin", &["new text"]), 0)]).await.unwrap();
        let r = idx.apply(vec![up(doc("r:1", "role", 10, "Payments Admin", &["old text"]), 0)]).await.unwrap();
        assert_eq!(r, ApplyReport { stale: 1, ..Default::default() });
        let s = idx.states(&["r:1".into()]).await.unwrap();
        assert_eq!(s["r:1"].version, Version::new(20, 0));
        let hits = idx.search(&query("old", None, 5)).await.unwrap();
        assert!(hits.is_empty());
    }

    #[tokio::test]
    async fn delete_before_insert_keeps_late_insert_deleted() {
        let (_d, idx) = fresh().await;
        let r = idx.apply(vec![del("r:1", 20)]).await.unwrap();
        assert_eq!(r, ApplyReport { unchanged: 1, ..Default::default() });
        let r = idx.apply(vec![up(doc("r:1", "role", 10, "Payments Admin", &["text"]), 0)]).await.unwrap();
        assert_eq!(r.stale, 1);
        // Same version as the tombstone: stays deleted too.
        let r = idx.apply(vec![up(doc("r:1", "role", 20, "Payments Admin", &["text"]), 0)]).await.unwrap();
        assert_eq!(r.stale, 1);
        let s = idx.states(&["r:1".into(), "r:2".into()]).await.unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s["r:1"], DocState { version: Version::new(20, 0), content_hash: None });
        let info = idx.info().await.unwrap();
        assert_eq!((info.tombstones, info.chunks), (1, 0));
        // A newer insert brings it back.
        let r = idx.apply(vec![up(doc("r:1", "role", 30, "Payments Admin", &["text"]), 0)]).await.unwrap();
        assert_eq!(r.upserted, 1);
    }

    #[tokio::test]
    async fn replay_is_unchanged_and_update_replaces_all_chunks() {
        let (_d, idx) = fresh().await;
        let batch = vec![up(doc("d:1", "document", 10, "SoD policy", &["alpha", "beta", "gamma"]), 0), del("d:1", 5)];
        let r = idx.apply(batch.clone()).await.unwrap();
        assert_eq!(r, ApplyReport { upserted: 1, stale: 1, ..Default::default() });
        let r = idx.apply(batch).await.unwrap();
        assert_eq!(r, ApplyReport { unchanged: 1, stale: 1, ..Default::default() });

        let r = idx.apply(vec![up(doc("d:1", "document", 11, "SoD policy", &["delta"]), 0)]).await.unwrap();
        assert_eq!(r.upserted, 1);
        assert_eq!(idx.info().await.unwrap().chunks, 1);
        assert!(idx.search(&query("gamma", None, 5)).await.unwrap().is_empty());
        assert_eq!(ids(&idx.search(&query("delta", None, 5)).await.unwrap()), ["d:1"]);

        let r = idx.apply(vec![del("d:1", 11), del("d:1", 11)]).await.unwrap();
        assert_eq!(r, ApplyReport { deleted: 1, unchanged: 1, ..Default::default() });
        assert!(idx.search(&query("delta", Some(axis(0)), 5)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn projection_replaces_whatever_is_stored() {
        let (_d, idx) = fresh().await;
        let project = |w: Write| match w {
            Write::Upsert(u) => Write::Upsert(Upsert { guard: Guard::Projection, ..u }),
            Write::Delete { id, kind, version, .. } => Write::Delete { id, kind, version, guard: Guard::Projection },
        };
        idx.apply(vec![up(doc("r:1", "role", 20, "Admin", &["grants everything"]), 0)]).await.unwrap();
        let older = project(up(doc("r:1", "role", 10, "Admin", &["grants less"]), 0));
        assert_eq!(idx.apply(vec![older.clone()]).await.unwrap().upserted, 1);
        assert_eq!(idx.apply(vec![older]).await.unwrap().unchanged, 1);
        let r = idx.apply(vec![project(del("r:1", 5)), project(del("r:1", 5)), project(del("r:9", 5))]).await.unwrap();
        assert_eq!(r, ApplyReport { deleted: 1, unchanged: 2, ..Default::default() });
        let info = idx.info().await.unwrap();
        assert_eq!((info.tombstones, info.chunks), (1, 0));
        let dump = idx.dump(&["role".into()]).await.unwrap();
        assert!(matches!(&dump[..], [Write::Delete { id, kind, .. }] if id == "r:1" && kind == "role"));
    }

    #[tokio::test]
    async fn vector_count_is_checked() {
        let (_d, idx) = fresh().await;
        let d = doc("d:1", "document", 1, "t", &["a", "b"]);
        let w = Write::Upsert(Upsert {
            content_hash: d.content_hash(),
            doc: d,
            vectors: vec![axis(0)],
            guard: Guard::Version,
        });
        assert!(matches!(idx.apply(vec![w]).await, Err(IndexError::VectorCount { chunks: 2, vectors: 1, .. })));
    }

    #[tokio::test]
    async fn digest_is_independent_of_order_and_generation() {
        let (_a, a) = fresh().await;
        let (_b, b) = fresh().await;
        let writes = [
            up(doc("r:1", "role", 1, "One", &["first", "second"]), 0),
            up(doc("r:2", "role", 1, "Two", &["third"]), 1),
            up(doc("r:3", "role", 1, "Three", &["gone"]), 2),
            del("r:3", 2),
        ];
        a.apply(writes.to_vec()).await.unwrap();
        let g = b.begin_generation("test-model", DIMS).await.unwrap();
        for w in [&writes[3], &writes[1], &writes[0]] {
            b.apply_to_generation(g, vec![w.clone()]).await.unwrap();
        }
        b.swap_generation(g).await.unwrap();
        let (ia, ib) = (a.info().await.unwrap(), b.info().await.unwrap());
        assert_ne!(ia.generation, ib.generation);
        assert_eq!(ia.digest, ib.digest);
        assert_eq!(ia.documents, BTreeMap::from([("role".to_string(), 2)]));
        assert_eq!(ia.chunks, 3);

        // Carrying everything over through dump leaves the digest as it was.
        let g = a.begin_generation("test-model", DIMS).await.unwrap();
        let dump = a.dump(&["role".into()]).await.unwrap();
        assert_eq!(dump.len(), 3);
        a.apply_to_generation(g, dump).await.unwrap();
        a.swap_generation(g).await.unwrap();
        let again = a.info().await.unwrap();
        assert_eq!((again.digest, again.tombstones), (ia.digest, 1));
    }

    #[tokio::test]
    async fn generation_swap_keeps_searches_answering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let idx = EmbeddedIndex::open(&path).unwrap();
        idx.ensure_model("test-model", DIMS).await.unwrap();
        idx.apply(vec![up(doc("r:old", "role", 1, "Payments Admin", &["approves payments"]), 0)]).await.unwrap();

        let g = idx.begin_generation("test-model", DIMS).await.unwrap();
        idx.apply_to_generation(g, vec![up(doc("r:new", "role", 1, "Payments Viewer", &["sees payments"]), 0)])
            .await
            .unwrap();
        let live = idx.info().await.unwrap().generation;
        assert!(matches!(idx.apply_to_generation(live, vec![]).await, Err(IndexError::NoSuchGeneration(_))));
        let before = idx.search(&query("payments", Some(axis(0)), 5)).await.unwrap();
        assert_eq!(ids(&before), ["r:old"]);

        idx.swap_generation(g).await.unwrap();
        let after = idx.search(&query("payments", Some(axis(0)), 5)).await.unwrap();
        assert_eq!(ids(&after), ["r:new"]);
        assert_eq!(idx.info().await.unwrap().generation, g);

        let conn = Connection::open(&path).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%\\_g%' ESCAPE '\\'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            tables.iter().all(|t| t.ends_with(&format!("_g{g}")) || t.starts_with(&format!("fts_g{g}_"))),
            "{tables:?}"
        );

        let spare = idx.begin_generation("test-model", DIMS).await.unwrap();
        idx.abandon_generation(spare).await.unwrap();
        assert!(matches!(idx.abandon_generation(g).await, Err(IndexError::NoSuchGeneration(_))));
        assert!(matches!(
            idx.apply_to_generation(spare, vec![del("x", 1)]).await,
            Err(IndexError::NoSuchGeneration(_))
        ));
    }

    #[tokio::test]
    async fn hostile_query_text_does_not_error() {
        let (_d, idx) = fresh().await;
        idx.apply(vec![up(doc("r:1", "role", 1, "Foo Admin", &["bar baz"]), 0)]).await.unwrap();
        for text in [r#""foo" OR -bar:* ("#, "NEAR(foo bar)", "'", "\"", "*", "", "   ", "AND OR NOT", "title:foo ^bar"]
        {
            let hits = idx.search(&query(text, None, 5)).await;
            assert!(hits.is_ok(), "{text:?}: {hits:?}");
        }
        assert_eq!(ids(&idx.search(&query(r#""foo" OR -bar:* ("#, None, 5)).await.unwrap()), ["r:1"]);
        assert_eq!(fts_query("Who can approve the payments?").as_deref(), Some(r#""approve" OR "payments""#));
        assert_eq!(fts_query("who is it").as_deref(), Some(r#""who" OR "is" OR "it""#));
        // Product names written both ways match both ways.
        assert_eq!(fts_query("route53 zones").as_deref(), Some(r#""route53" OR "zones" OR "route 53""#));
        assert_eq!(fts_query("Route 53").as_deref(), Some(r#""route" OR "53" OR "route53""#));
        assert_eq!(fts_query("s3 ec2").as_deref(), Some(r#""s3" OR "ec2""#));
    }

    #[tokio::test]
    async fn chunks_collapse_into_one_hit_per_document() {
        let (_d, idx) = fresh().await;
        idx.apply(vec![
            up(doc("d:1", "document", 1, "Guide", &["payments one", "payments two", "payments three"]), 0),
            up(doc("d:2", "document", 1, "Other", &["payments elsewhere"]), 1),
        ])
        .await
        .unwrap();
        let hits = idx.search(&query("payments", Some(axis(0)), 10)).await.unwrap();
        assert_eq!(ids(&hits), ["d:1", "d:2"]);
        assert!(hits[0].score >= hits[1].score);
        assert!(hits[0].text.starts_with("payments"));
        let one = idx.search(&query("payments", Some(axis(0)), 1)).await.unwrap();
        assert_eq!(ids(&one), ["d:1"]);
    }

    #[tokio::test]
    async fn filters_by_kind_and_application() {
        let (_d, idx) = fresh().await;
        let mut role = doc("r:1", "role", 1, "Ledger Admin", &["ledger access"]);
        role.metadata.insert("application".into(), "SAP-Finance".into());
        let mut other_role = doc("r:2", "role", 1, "Ledger Viewer", &["ledger read"]);
        other_role.metadata.insert("application".into(), "Workday".into());
        let policy = doc("d:1", "document", 1, "Ledger policy", &["ledger rules"]);
        idx.apply(vec![up(role, 0), up(other_role, 0), up(policy, 0)]).await.unwrap();

        let mut req = query("ledger", Some(axis(0)), 10);
        assert_eq!(idx.search(&req).await.unwrap().len(), 3);
        req.kinds = vec!["role".into()];
        let mut got = ids(&idx.search(&req).await.unwrap()).iter().map(|s| s.to_string()).collect::<Vec<_>>();
        got.sort();
        assert_eq!(got, ["r:1", "r:2"]);
        req.application = Some("sap-finance".into());
        assert_eq!(ids(&idx.search(&req).await.unwrap()), ["r:1"]);
        req.kinds = vec!["document".into()];
        assert!(idx.search(&req).await.unwrap().is_empty());
    }

    #[test]
    fn documents_are_fused_by_their_best_chunk_in_each_list() {
        let l = |v: &[(i64, &str)]| v.iter().map(|(r, d)| (*r, d.to_string())).collect::<Vec<_>>();
        // y: keywords found its permission chunk (21) first, vectors its description (22)
        // second; z has one chunk, first by vector and fifth by keywords.
        let keyword = l(&[(21, "y"), (40, "q"), (41, "r"), (42, "s"), (30, "z")]);
        let vector = l(&[(30, "z"), (22, "y"), (23, "y"), (31, "w")]);
        let fused = fuse_documents(&[(&keyword, 1.0), (&vector, 3.0)]);
        assert!(fused["y"].0 > fused["z"].0, "two chunks' evidence adds up: {fused:?}");
        assert_eq!(fused["y"].1, 22, "the chunk that earned the most is shown");
        assert_eq!(fused["w"].0, 3.0 / (RRF_K + 3.0), "y's second chunk does not push w down");
    }

    #[tokio::test]
    async fn model_mismatch_is_refused() {
        let (_d, idx) = fresh().await;
        idx.ensure_model("test-model", DIMS).await.unwrap();
        // Empty index: a different model is simply recorded.
        idx.ensure_model("other", 8).await.unwrap();
        idx.ensure_model("test-model", DIMS).await.unwrap();
        idx.apply(vec![up(doc("r:1", "role", 1, "t", &["x"]), 0)]).await.unwrap();
        let err = idx.ensure_model("other", 8).await.unwrap_err();
        assert!(matches!(err, IndexError::ModelMismatch { built_dims: 4, requested_dims: 8, .. }), "{err}");
        let info = idx.info().await.unwrap();
        assert_eq!((info.model.as_deref(), info.dims), (Some("test-model"), Some(DIMS)));
        // Queries too: a vector from another model (or of another length) is refused.
        let mut q = query("t", Some(vec![0.5; DIMS]), 3);
        q.model = Some("test-model".into());
        assert_eq!(idx.search(&q).await.unwrap().len(), 1);
        q.model = Some("other".into());
        assert!(matches!(idx.search(&q).await, Err(IndexError::ModelMismatch { .. })));
        let wrong_length = query("t", Some(vec![0.5; 8]), 3);
        assert!(matches!(idx.search(&wrong_length).await, Err(IndexError::ModelMismatch { requested_dims: 8, .. })));
        assert_eq!(idx.search(&query("t", None, 3)).await.unwrap().len(), 1, "keywords alone need no model");
    }

    #[tokio::test]
    async fn second_handle_sees_first_handles_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let writer = EmbeddedIndex::open(&path).unwrap();
        writer.ensure_model("test-model", DIMS).await.unwrap();
        writer.apply(vec![up(doc("r:1", "role", 1, "One", &["one"]), 0)]).await.unwrap();

        let reader = EmbeddedIndex::open_read_only(&path).unwrap().with_weights(0.0, 1.0);
        let hits = reader.search(&query("", Some(axis(1)), 5)).await.unwrap();
        assert_eq!(ids(&hits), ["r:1"]); // the vector cache is now built

        writer.apply(vec![up(doc("r:2", "role", 1, "Two", &["two"]), 1)]).await.unwrap();
        let hits = reader.search(&query("", Some(axis(1)), 5)).await.unwrap();
        assert_eq!(ids(&hits), ["r:2", "r:1"]);

        writer.apply(vec![del("r:2", 2)]).await.unwrap();
        let hits = reader.search(&query("", Some(axis(1)), 5)).await.unwrap();
        assert_eq!(ids(&hits), ["r:1"]);
        assert_eq!(reader.info().await.unwrap().digest, writer.info().await.unwrap().digest);
        assert!(reader.apply(vec![del("r:1", 3)]).await.is_err());
    }
}
