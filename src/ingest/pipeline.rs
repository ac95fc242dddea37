//! The pipeline: applies objects (change files, full exports, documents, record collections)
//! to the entity store and the index, and rebuilds the index into a new generation.
//!
//! Two paths. Incremental objects re-render only the documents their rows touch and write
//! them to the live index. A full export (its manifest arriving) reconciles the entity store
//! with the snapshot and then builds a complete new generation beside the live one, swapped in
//! atomically — searches keep answering from the old generation all the while. `reindex` is
//! the second half of that alone.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn, Instrument};

use super::format::{
    self,
    cdc::CdcReader,
    records::{RecordReader, RecordSpec},
    table::RowVersion,
    text,
};
use super::ledger::{APPLIED, PENDING};
use super::quarantine::Problem;
use super::render::{self, DocKey};
use super::route::{self, DocFormat, Route, TableFormat};
use super::source::{ObjectRef, Source, SourceError};
use crate::config::IngestConfig;
use crate::embed::cache::CachedEmbedder;
use crate::embed::EmbedError;
use crate::index::{ApplyReport, Guard, Index, IndexError, Upsert, Write};
use crate::model::{kind, parse_lsn, parse_timestamp, Document, Op, SourceRow, Version};
use crate::schema;
use crate::store::{StateDb, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("reading {key}: {source}")]
    Read { key: String, source: std::io::Error },
}

/// What a run did; `ingest --json` prints it as one object.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Documents written or checked (each rendered or read document counts once).
    pub documents: usize,
    pub upserted: usize,
    pub deleted: usize,
    /// Already in the index with the same version and content.
    pub unchanged: usize,
    /// Older than what the index holds; ignored.
    pub stale: usize,
    /// Lines or files quarantined.
    pub quarantined: usize,
    /// Files under no known prefix (listed in `skipped`).
    pub skipped_files: usize,
    pub embedded_texts: u64,
    pub embedding_calls: u64,
    /// Embedding calls retried after the provider throttled them.
    #[serde(default)]
    pub embedding_retries: u64,
    pub seconds: f64,
    /// Objects applied in this run.
    pub objects: usize,
    /// Objects whose exact version the ledger had already applied.
    pub already_applied: usize,
    /// Full-export files waiting for the rest of their run.
    pub pending: usize,
    /// Row changes applied to the entity store.
    pub rows: usize,
    pub skipped: Vec<String>,
    /// Index generation after the run.
    pub generation: u64,
}

impl Summary {
    pub fn absorb(&mut self, o: &Summary) {
        self.documents += o.documents;
        self.upserted += o.upserted;
        self.deleted += o.deleted;
        self.unchanged += o.unchanged;
        self.stale += o.stale;
        self.quarantined += o.quarantined;
        self.skipped_files += o.skipped_files;
        self.objects += o.objects;
        self.already_applied += o.already_applied;
        self.pending += o.pending;
        self.rows += o.rows;
        self.embedded_texts += o.embedded_texts;
        self.embedding_calls += o.embedding_calls;
        self.embedding_retries += o.embedding_retries;
        self.skipped.extend(o.skipped.iter().cloned());
        self.generation = self.generation.max(o.generation);
    }

    fn add_report(&mut self, r: &ApplyReport) {
        self.upserted += r.upserted;
        self.deleted += r.deleted;
        self.unchanged += r.unchanged;
        self.stale += r.stale;
    }
}

/// A document change on its way to the index.
enum DocChange {
    Put(Document, Guard),
    Remove { id: String, kind: String, version: Version, guard: Guard },
}

/// Where writes go: the live generation, or one being built.
#[derive(Clone, Copy)]
enum Target {
    Live,
    Generation(u64),
}

/// `_MANIFEST.json` of a full export: the completion marker of a run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    run: Option<String>,
    snapshot: Snapshot,
    tables: Vec<ManifestTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    #[serde(default)]
    lsn: Option<String>,
    commit_time: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestTable {
    table: String,
    file: String,
    #[serde(default)]
    rows: Option<u64>,
}

/// One table file of a full export, as its manifest describes it.
#[derive(Clone, Copy)]
struct SnapshotPart<'a> {
    table: &'static schema::Table,
    object: &'a ObjectRef,
    version: Version,
    expected_rows: Option<u64>,
}

/// The most problems kept per object; beyond that one summary entry says how many more.
const MAX_PROBLEMS: usize = 1000;
/// Problems logged one by one per object before the log only counts them.
const MAX_PROBLEM_LOGS: usize = 20;
/// Documents rendered, embedded and written per round of a rebuild.
const REBUILD_BATCH: usize = 256;

pub struct Pipeline {
    pub state: Arc<StateDb>,
    pub index: Arc<dyn Index>,
    pub embedder: Arc<CachedEmbedder>,
    pub config: IngestConfig,
    /// Show progress bars on stderr for bulk work.
    pub progress: bool,
}

fn read_err(key: &str) -> impl Fn(std::io::Error) -> IngestError + '_ {
    move |source| IngestError::Read { key: key.to_string(), source }
}

impl Pipeline {
    pub fn new(
        state: Arc<StateDb>,
        index: Arc<dyn Index>,
        embedder: Arc<CachedEmbedder>,
        config: IngestConfig,
    ) -> Self {
        Pipeline { state, index, embedder, config, progress: false }
    }

    fn counters(&self) -> (u64, u64, u64) {
        let c = &self.embedder.counters;
        (c.texts.load(Ordering::Relaxed), c.calls.load(Ordering::Relaxed), self.embedder.model().retries())
    }

    /// Runs `f` and fills in the timing and embedding counters of its summary.
    async fn measured<F>(&self, f: F) -> Result<Summary, IngestError>
    where
        F: std::future::Future<Output = Result<Summary, IngestError>>,
    {
        let start = Instant::now();
        let (t0, c0, r0) = self.counters();
        let mut s = f.await?;
        let (t1, c1, r1) = self.counters();
        s.embedded_texts = t1 - t0;
        s.embedding_calls = c1 - c0;
        s.embedding_retries = r1 - r0;
        s.seconds = start.elapsed().as_secs_f64();
        s.generation = self.index.generation().await?;
        Ok(s)
    }

    /// Applies one object unless the ledger has already applied this version of it.
    pub async fn ingest_object(&self, source: &dyn Source, obj: &ObjectRef) -> Result<Summary, IngestError> {
        let span = info_span!("ingest_object", key = %obj.key, version = %&obj.version[..obj.version.len().min(12)]);
        self.measured(self.ingest_object_inner(source, obj).instrument(span)).await
    }

    /// Refuses to write one model's vectors into an index built by another (the error says
    /// to run `askiam reindex`, which rebuilds with the configured model).
    async fn check_model(&self) -> Result<(), IngestError> {
        let model = self.embedder.model();
        Ok(self.index.ensure_model(model.model_id(), model.dims()).await?)
    }

    async fn ingest_object_inner(&self, source: &dyn Source, obj: &ObjectRef) -> Result<Summary, IngestError> {
        let mut summary = Summary::default();
        self.check_model().await?;
        self.render_dirty(&mut summary).await?;
        let route = route::classify(&obj.key);
        if let Route::Skip(reason) = &route {
            info!(reason = %reason, "skipped");
            summary.skipped_files = 1;
            summary.skipped.push(format!("{}: {reason}", obj.key));
            return Ok(summary);
        }
        if self.state.ledger_status(&obj.key, &obj.version)?.as_deref() == Some(APPLIED) {
            summary.already_applied = 1;
            return Ok(summary);
        }
        let mut problems = Vec::new();
        match route {
            Route::Skip(_) => unreachable!("handled above"),
            Route::Manifest { run, run_key } => {
                return self.apply_manifest(source, obj, &run, &run_key).await;
            }
            Route::FullPart { run_key, .. } => {
                // A part is applied with its run; if the run's manifest is already waiting
                // for it, try the run now.
                self.state.ledger_record(
                    &obj.key,
                    &obj.version,
                    PENDING,
                    &serde_json::json!({}),
                    Some("waiting for the run's manifest"),
                )?;
                let manifest_key = format!("{run_key}/{}", route::MANIFEST);
                let waiting = self.state.ledger_with_status(&manifest_key, PENDING)?;
                if waiting.iter().any(|e| e.object == manifest_key) {
                    if let Some(mobj) = source.stat(&manifest_key).await? {
                        let run = run_key.rsplit('/').next().unwrap_or_default().to_string();
                        return self.apply_manifest(source, &mobj, &run, &run_key).await;
                    }
                }
                summary.pending = 1;
                return Ok(summary);
            }
            Route::Cdc => {
                let reader = format::open_reader(&obj.key, source.open(&obj.key).await?);
                let applied = self.apply_rows(&obj.key, CdcReader::new(reader), &mut problems, &mut summary).await;
                undecodable_is_a_problem(applied, &mut problems)?;
            }
            Route::TableChanges { table, format: tf } => {
                let t = schema::table(&table).expect("route only names known tables");
                let policy = RowVersion::Column(self.config.dms_timestamp_column.clone());
                let raw = source.open(&obj.key).await?;
                let applied = match format::table_rows(&obj.key, raw, &tf, t, policy).map_err(read_err(&obj.key))? {
                    Ok(rows) => self.apply_rows(&obj.key, rows, &mut problems, &mut summary).await,
                    Err(p) => {
                        problems.push(p);
                        Ok(())
                    }
                };
                undecodable_is_a_problem(applied, &mut problems)?;
            }
            Route::Doc(df) => {
                let raw = source.open(&obj.key).await?;
                match self.read_document(&obj.key, obj.modified, df, raw) {
                    Ok(doc) => {
                        summary.documents += 1;
                        let r = self.write_docs(Target::Live, vec![DocChange::Put(doc, Guard::Version)]).await?;
                        summary.add_report(&r);
                    }
                    Err(e) => problems.push(Problem {
                        line: None,
                        reason: format!("unreadable document: {e}"),
                        content: String::new(),
                    }),
                }
            }
        }
        self.finish_object(source, obj, problems, &mut summary)?;
        Ok(summary)
    }

    /// Records problems and marks the object applied.
    fn finish_object(
        &self,
        source: &dyn Source,
        obj: &ObjectRef,
        mut problems: Vec<Problem>,
        summary: &mut Summary,
    ) -> Result<(), IngestError> {
        summary.quarantined += problems.len();
        if problems.len() > MAX_PROBLEMS {
            let more = problems.len() - MAX_PROBLEMS;
            problems.truncate(MAX_PROBLEMS);
            problems.push(Problem {
                line: None,
                reason: format!("and {more} more problems not kept"),
                content: String::new(),
            });
        }
        for p in problems.iter().take(MAX_PROBLEM_LOGS) {
            warn!(key = %obj.key, line = ?p.line, reason = %p.reason, "quarantined");
        }
        if problems.len() > MAX_PROBLEM_LOGS {
            warn!(key = %obj.key, count = problems.len(), "more quarantined lines; see `askiam quarantine list`");
        }
        self.state.quarantine_replace(&obj.key, &source.locate(&obj.key), &problems)?;
        summary.objects += 1;
        let counts = serde_json::json!({
            "documents": summary.documents, "upserted": summary.upserted, "deleted": summary.deleted,
            "unchanged": summary.unchanged, "quarantined": summary.quarantined, "rows": summary.rows,
        });
        self.state.ledger_record(&obj.key, &obj.version, APPLIED, &counts, None)?;
        self.state.ledger_set_path(&obj.key, &obj.version, &source.locate(&obj.key))?;
        info!(
            documents = summary.documents,
            upserted = summary.upserted,
            deleted = summary.deleted,
            quarantined = summary.quarantined,
            "applied"
        );
        Ok(())
    }

    /// Reads a document file into one document of heading-aware chunks.
    fn read_document(
        &self,
        key: &str,
        version: Version,
        df: DocFormat,
        raw: Box<dyn Read + Send>,
    ) -> std::io::Result<Document> {
        let id = format!("doc:{key}");
        let model = self.embedder.model();
        let count = |t: &str| model.count_tokens(t);
        let opts = text::ChunkOptions {
            max_tokens: model.max_tokens(),
            overlap_tokens: self.config.chunk_overlap_tokens,
            count_tokens: &count,
        };
        let mut chunker = text::Chunker::new(&id, opts);
        let reader = format::open_reader(key, raw);
        match df {
            DocFormat::Html => text::chunk_html(reader, &mut chunker)?,
            DocFormat::Markdown | DocFormat::Text => text::chunk_text(reader, &mut chunker)?,
        }
        let (title, chunks) = chunker.finish();
        if chunks.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the document has no text"));
        }
        let file_name = key.rsplit('/').next().unwrap_or(key);
        let title = title.unwrap_or_else(|| {
            file_name.rsplit_once('.').map(|(s, _)| s).unwrap_or(file_name).replace(['-', '_'], " ")
        });
        let mut metadata = serde_json::Map::new();
        metadata.insert("path".into(), key.into());
        Ok(Document { id, kind: kind::DOCUMENT.into(), title, source: key.into(), version, metadata, chunks })
    }

    /// Streams row changes into the entity store in batches, re-rendering what they touch.
    async fn apply_rows<I>(
        &self,
        key: &str,
        rows: I,
        problems: &mut Vec<Problem>,
        summary: &mut Summary,
    ) -> Result<(), IngestError>
    where
        I: Iterator<Item = std::io::Result<Result<SourceRow, Problem>>>,
    {
        let mut batch = Vec::with_capacity(self.config.batch_rows);
        for item in rows {
            match item.map_err(read_err(key))? {
                Ok(row) => batch.push(row),
                Err(p) => problems.push(p),
            }
            if batch.len() >= self.config.batch_rows {
                self.apply_row_batch(key, std::mem::take(&mut batch), summary).await?;
            }
        }
        if !batch.is_empty() {
            self.apply_row_batch(key, batch, summary).await?;
        }
        Ok(())
    }

    async fn apply_row_batch(
        &self,
        key: &str,
        batch: Vec<SourceRow>,
        summary: &mut Summary,
    ) -> Result<(), IngestError> {
        // Documents that mentioned a row before the change must be re-rendered too (a role
        // moved to another application changes both applications' documents).
        let mut affected = BTreeSet::new();
        for row in &batch {
            if let Some(old) = self.state.row(&row.table, &row.key)? {
                render::dependents(&self.state, &row.table, &row.key, &old.data, &mut affected)?;
            }
        }
        // Once the rows are committed the old values are gone; remember what they touched
        // until the index has the new renderings.
        self.state.dirty_add(&affected)?;
        let outcomes = self.state.apply_rows(&batch, key)?;
        for (row, outcome) in batch.iter().zip(outcomes) {
            // A replayed row (Unchanged) still re-renders: a crash may have come between the
            // entity store commit and the index write, and rendering is idempotent.
            if outcome == crate::catalog::RowOutcome::Stale {
                continue;
            }
            summary.rows += (outcome == crate::catalog::RowOutcome::Applied) as usize;
            if let Some(now) = self.state.row(&row.table, &row.key)? {
                render::dependents(&self.state, &row.table, &row.key, &now.data, &mut affected)?;
            }
        }
        let keys: Vec<DocKey> = affected.into_iter().collect();
        self.render_to_live(&keys, summary).await
    }

    async fn render_to_live(&self, keys: &[DocKey], summary: &mut Summary) -> Result<(), IngestError> {
        for chunk in keys.chunks(REBUILD_BATCH) {
            let changes = self.render_keys(chunk, Target::Live).await?;
            summary.documents += changes.len();
            let r = self.write_docs(Target::Live, changes).await?;
            summary.add_report(&r);
            self.state.dirty_remove(chunk)?;
        }
        Ok(())
    }

    /// Renders documents a crashed run left marked dirty.
    async fn render_dirty(&self, summary: &mut Summary) -> Result<(), IngestError> {
        let dirty = self.state.dirty_all()?;
        if !dirty.is_empty() {
            info!(documents = dirty.len(), "re-rendering documents a previous run left unfinished");
            self.render_to_live(&dirty, summary).await?;
        }
        Ok(())
    }

    /// Renders documents; a key whose row is gone becomes a delete of its document.
    async fn render_keys(&self, keys: &[DocKey], target: Target) -> Result<Vec<DocChange>, IngestError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match render::render(&self.state, k)? {
                Some(doc) => out.push(DocChange::Put(doc, Guard::Projection)),
                // In a fresh generation an absent document needs no tombstone; the entity
                // store's tombstone is what keeps a late insert out.
                None if matches!(target, Target::Generation(_)) => {}
                None => out.push(DocChange::Remove {
                    id: k.id(),
                    kind: k.kind.to_string(),
                    version: Version::ZERO,
                    guard: Guard::Projection,
                }),
            }
        }
        Ok(out)
    }

    /// Embeds what is new and writes it; documents the index already holds unchanged are
    /// neither embedded nor written.
    async fn write_docs(&self, target: Target, changes: Vec<DocChange>) -> Result<ApplyReport, IngestError> {
        let mut report = ApplyReport::default();
        if changes.is_empty() {
            return Ok(report);
        }
        let stored = match target {
            Target::Live => {
                let ids: Vec<String> = changes
                    .iter()
                    .map(|c| match c {
                        DocChange::Put(d, _) => d.id.clone(),
                        DocChange::Remove { id, .. } => id.clone(),
                    })
                    .collect();
                self.index.states(&ids).await?
            }
            Target::Generation(_) => Default::default(),
        };
        let mut writes = Vec::with_capacity(changes.len());
        let mut pending: Vec<(Document, String, Guard)> = Vec::new();
        for c in changes {
            match c {
                DocChange::Put(doc, guard) => {
                    let hash = doc.content_hash();
                    match stored.get(&doc.id) {
                        // Same content at the same version: nothing to embed or write. (Same
                        // content at a new version is still written, so that the stored version
                        // is what a fresh render gives; its vectors come from the cache.)
                        Some(s) if s.content_hash.as_deref() == Some(hash.as_str()) && s.version == doc.version => {
                            report.unchanged += 1
                        }
                        Some(s) if guard == Guard::Version && s.version > doc.version => report.stale += 1,
                        _ => pending.push((doc, hash, guard)),
                    }
                }
                DocChange::Remove { id, kind, version, guard } => match stored.get(&id) {
                    // Nothing live to remove: skip the write (a projection keeps no tombstone).
                    Some(s) if s.content_hash.is_none() && guard == Guard::Projection => report.unchanged += 1,
                    None if guard == Guard::Projection => report.unchanged += 1,
                    _ => writes.push(Write::Delete { id, kind, version, guard }),
                },
            }
        }
        let texts: Vec<String> = pending
            .iter()
            .flat_map(|(d, _, _)| d.chunks.iter().filter(|c| !c.keywords_only).map(move |c| embedding_text(d, c)))
            .collect();
        let mut vectors = self.embedder.embed_documents(&texts).await?.into_iter();
        for (doc, content_hash, guard) in pending {
            // Keywords-only chunks are stored with an empty vector.
            let vs: Vec<Vec<f32>> = doc
                .chunks
                .iter()
                .map(|c| if c.keywords_only { Vec::new() } else { vectors.next().unwrap_or_default() })
                .collect();
            writes.push(Write::Upsert(Upsert { doc, content_hash, vectors: vs, guard }));
        }
        let r = match target {
            Target::Live => self.index.apply(writes).await?,
            Target::Generation(g) => self.index.apply_to_generation(g, writes).await?,
        };
        report.add(&r);
        Ok(report)
    }

    /// A full export's manifest: reconcile the tables it covers, then rebuild and swap.
    async fn apply_manifest(
        &self,
        source: &dyn Source,
        obj: &ObjectRef,
        run: &str,
        run_key: &str,
    ) -> Result<Summary, IngestError> {
        let mut summary = Summary::default();
        let text = {
            let mut s = String::new();
            source.open(&obj.key).await?.read_to_string(&mut s).map_err(read_err(&obj.key))?;
            s
        };
        let manifest: Manifest = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                let p = Problem {
                    line: Some(e.line() as u64),
                    reason: format!("invalid manifest: {e}"),
                    content: text.chars().take(4096).collect(),
                };
                self.finish_object(source, obj, vec![p], &mut summary)?;
                return Ok(summary);
            }
        };
        let snapshot =
            match (parse_timestamp(&manifest.snapshot.commit_time), manifest.snapshot.lsn.as_deref().map(parse_lsn)) {
                (Some(t), None) => Version::from_time(t, 0),
                (Some(t), Some(Some(lsn))) => Version::from_time(t, lsn),
                _ => {
                    let p = Problem {
                        line: None,
                        reason: "manifest snapshot has an invalid commit_time or lsn".into(),
                        content: text.chars().take(4096).collect(),
                    };
                    self.finish_object(source, obj, vec![p], &mut summary)?;
                    return Ok(summary);
                }
            };
        // Every listed part must be there; S3 may deliver the manifest's event first.
        let mut parts = Vec::new();
        let mut problems = Vec::new();
        for t in &manifest.tables {
            let key = format!("{run_key}/{}", t.file);
            match (schema::table(&t.table), source.stat(&key).await?) {
                (None, _) => problems.push(Problem {
                    line: None,
                    reason: format!("manifest lists unknown table {:?}", t.table),
                    content: t.file.clone(),
                }),
                (Some(_), None) => {
                    info!(run, missing = %key, "full export incomplete; waiting");
                    self.state.ledger_record(
                        &obj.key,
                        &obj.version,
                        PENDING,
                        &serde_json::json!({}),
                        Some(&format!("waiting for {key}")),
                    )?;
                    summary.pending = 1;
                    return Ok(summary);
                }
                (Some(table), Some(part)) => parts.push((table, part, t.rows)),
            }
        }
        let span = info_span!("full_export", run = %manifest.run.as_deref().unwrap_or(run), snapshot = %snapshot);
        async {
            info!(tables = parts.len(), "applying full export");
            for (table, part, expected) in &parts {
                let mut part_problems = Vec::new();
                let snap = SnapshotPart { table, object: part, version: snapshot, expected_rows: *expected };
                self.load_snapshot_table(source, &snap, &mut part_problems, &mut summary).await?;
                summary.quarantined += part_problems.len();
                self.state.quarantine_replace(&part.key, &source.locate(&part.key), &part_problems)?;
            }
            let rebuilt = self.rebuild().await?;
            summary.absorb(&rebuilt);
            for (_, part, _) in &parts {
                self.state.ledger_record(&part.key, &part.version, APPLIED, &serde_json::json!({"run": run}), None)?;
            }
            self.finish_object(source, obj, problems, &mut summary)?;
            Ok::<_, IngestError>(())
        }
        .instrument(span)
        .await?;
        Ok(summary)
    }

    /// Loads one table of a snapshot taken at `snapshot`: rows in it are applied (newer
    /// stored changes win), stored rows older than the snapshot and absent from it are
    /// deleted. Returns how many rows the file had.
    async fn load_snapshot_table(
        &self,
        source: &dyn Source,
        snap: &SnapshotPart<'_>,
        problems: &mut Vec<Problem>,
        summary: &mut Summary,
    ) -> Result<(), IngestError> {
        let SnapshotPart { table, object: part, version: snapshot, expected_rows } = *snap;
        let policy = RowVersion::Fixed(snapshot);
        let format = match route::classify(&part.key) {
            Route::FullPart { format, .. } => format,
            _ => TableFormat::Csv,
        };
        let raw = source.open(&part.key).await?;
        let rows = match format::table_rows(&part.key, raw, &format, table, policy).map_err(read_err(&part.key))? {
            Ok(rows) => rows,
            Err(p) => {
                problems.push(p);
                return Ok(());
            }
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut batch = Vec::with_capacity(self.config.batch_rows);
        for item in rows {
            match item.map_err(read_err(&part.key))? {
                Ok(row) => {
                    seen.insert(row.key.clone());
                    batch.push(row);
                }
                Err(p) => problems.push(p),
            }
            if batch.len() >= self.config.batch_rows {
                let out = self.state.apply_rows(&std::mem::take(&mut batch), &part.key)?;
                summary.rows += out.iter().filter(|o| **o == crate::catalog::RowOutcome::Applied).count();
            }
        }
        if !batch.is_empty() {
            let out = self.state.apply_rows(&batch, &part.key)?;
            summary.rows += out.iter().filter(|o| **o == crate::catalog::RowOutcome::Applied).count();
        }
        // Deleting "rows absent from the snapshot" is only safe when the file is whole: a row
        // on a quarantined line, or cut off by a truncated file, is absent but not gone.
        let read = (seen.len() + problems.len()) as u64;
        let incomplete = match expected_rows {
            Some(n) if n != read => Some(format!("the manifest lists {n} rows but the file has {read}")),
            _ if !problems.is_empty() => Some(format!("{} lines were quarantined", problems.len())),
            _ => None,
        };
        if let Some(why) = incomplete {
            warn!(table = table.name, why = %why, "snapshot table incomplete: rows absent from it were kept");
            problems.push(Problem {
                line: None,
                reason: format!("{why}; rows absent from this snapshot table were not deleted"),
                content: String::new(),
            });
            return Ok(());
        }
        let gone: Vec<SourceRow> = self
            .state
            .versions(table.name)?
            .into_iter()
            .filter(|(k, v, deleted)| !deleted && *v < snapshot && !seen.contains(k))
            .map(|(key, _, _)| SourceRow {
                table: table.name.into(),
                key,
                op: Op::Delete,
                version: snapshot,
                data: Default::default(),
            })
            .collect();
        if !gone.is_empty() {
            info!(table = table.name, rows = gone.len(), "deleting rows absent from the snapshot");
            for b in gone.chunks(self.config.batch_rows.max(1)) {
                self.state.apply_rows(b, &part.key)?;
            }
        }
        Ok(())
    }

    /// Re-renders every row document into a new generation, carries documents and records
    /// over, and swaps it in.
    pub async fn reindex(&self) -> Result<Summary, IngestError> {
        self.measured(self.rebuild().instrument(info_span!("reindex"))).await
    }

    async fn rebuild(&self) -> Result<Summary, IngestError> {
        let mut summary = Summary::default();
        let model = self.embedder.model();
        let live = self.index.info().await?;
        let generation = self.index.begin_generation(model.model_id(), model.dims()).await?;
        info!(generation, "building a new index generation");
        let result = async {
            let keys = render::all_keys(&self.state)?;
            let carried = self.index.dump(&[kind::DOCUMENT.to_string(), kind::RECORD.to_string()]).await?;
            let bar = self.progress_bar((keys.len() + carried.len()) as u64, "rebuilding index");
            // Documents and records are not rendered from rows: carry them over, re-embedding
            // only if the model changed.
            let same_model = live.model.as_deref() == Some(model.model_id());
            for batch in carried.chunks(REBUILD_BATCH) {
                let changes: Vec<DocChange> = batch
                    .iter()
                    .map(|w| match w {
                        Write::Upsert(u) => DocChange::Put(u.doc.clone(), u.guard),
                        Write::Delete { id, kind, version, guard } => {
                            DocChange::Remove { id: id.clone(), kind: kind.clone(), version: *version, guard: *guard }
                        }
                    })
                    .collect();
                let r = if same_model {
                    self.index.apply_to_generation(generation, batch.to_vec()).await?
                } else {
                    self.write_docs(Target::Generation(generation), changes).await?
                };
                summary.documents += batch.len();
                summary.add_report(&r);
                bar.inc(batch.len() as u64);
            }
            for chunk in keys.chunks(REBUILD_BATCH) {
                let changes = self.render_keys(chunk, Target::Generation(generation)).await?;
                summary.documents += changes.len();
                let r = self.write_docs(Target::Generation(generation), changes).await?;
                summary.add_report(&r);
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            Ok::<_, IngestError>(())
        }
        .await;
        if let Err(e) = result {
            // Leave the live generation untouched; the half-built one is dropped.
            let _ = self.index.abandon_generation(generation).await;
            return Err(e);
        }
        self.index.swap_generation(generation).await?;
        info!(generation, documents = summary.documents, "swapped in the new generation");
        Ok(summary)
    }

    /// Applies a generic record collection (`--format records`); records the newer version
    /// of the file no longer contains are deleted.
    pub async fn ingest_records(
        &self,
        source: &dyn Source,
        obj: &ObjectRef,
        spec: &RecordSpec,
    ) -> Result<Summary, IngestError> {
        let span = info_span!("ingest_records", key = %obj.key);
        self.measured(
            async {
                let mut summary = Summary::default();
                if self.state.ledger_status(&obj.key, &obj.version)?.as_deref() == Some(APPLIED) {
                    summary.already_applied = 1;
                    return Ok(summary);
                }
                self.check_model().await?;
                let model = self.embedder.model();
                let count = |t: &str| model.count_tokens(t);
                let reader = format::open_reader(&obj.key, source.open(&obj.key).await?);
                let name = obj.key.rsplit('/').next().unwrap_or(&obj.key).to_string();
                let records = RecordReader::new(
                    reader,
                    spec,
                    &name,
                    obj.modified,
                    model.max_tokens(),
                    self.config.chunk_overlap_tokens,
                    &count,
                );
                let mut problems = Vec::new();
                let mut produced: Vec<(String, String)> = Vec::new();
                let mut batch = Vec::new();
                let mut bar_total = 0u64;
                let mut policies = false;
                let mut families = false;
                let mut noted = false;
                let bar = self.progress_bar(0, "records");
                for item in records {
                    match item.map_err(read_err(&obj.key))? {
                        Ok(doc) => {
                            policies = policies || crate::query::grants::has_policy_document(&doc.metadata);
                            families = families || crate::ingest::format::records::family_of(&doc.metadata).is_some();
                            noted = noted || crate::query::notes::notes().has(&doc.id);
                            produced.push((doc.id.clone(), doc.kind.clone()));
                            batch.push(DocChange::Put(doc, Guard::Version));
                        }
                        Err(p) => problems.push(p),
                    }
                    if batch.len() >= REBUILD_BATCH {
                        summary.documents += batch.len();
                        bar_total += batch.len() as u64;
                        let r = self.write_docs(Target::Live, std::mem::take(&mut batch)).await?;
                        summary.add_report(&r);
                        bar.set_position(bar_total);
                    }
                }
                summary.documents += batch.len();
                let r = self.write_docs(Target::Live, batch).await?;
                summary.add_report(&r);
                bar.finish_and_clear();
                if policies {
                    // Searches rank policies by what their actions do; the vectors that takes
                    // are bulk work, done here rather than in a user's first search.
                    if let Err(e) = crate::query::grants::prepare(self.embedder.model()).await {
                        warn!(error = %e, "action catalogue not embedded; searches rank policies without it");
                    }
                }
                if families {
                    // Likewise the product glossary, for records that belong to a product.
                    if let Err(e) = crate::query::products::prepare(self.embedder.model()).await {
                        warn!(error = %e, "product glossary not embedded; searches rank records without it");
                    }
                }
                if noted {
                    // And the notes on what predefined roles are for, for records that have them.
                    if let Err(e) = crate::query::notes::prepare(self.embedder.model()).await {
                        warn!(error = %e, "role notes not embedded; searches rank records without them");
                    }
                }
                // Only the newest version of a collection says which records it has: a late,
                // older copy must not delete what a newer one added.
                let docs_version_key = format!("object_docs_version:{}", obj.key);
                let newest = self.state.meta_get(&docs_version_key)?.and_then(|v| Version::from_key(&v));
                if newest.is_some_and(|v| v > obj.modified) {
                    self.finish_object(source, obj, problems, &mut summary)?;
                    return Ok(summary);
                }
                let keep: HashSet<&str> = produced.iter().map(|(id, _)| id.as_str()).collect();
                let gone: Vec<DocChange> = self
                    .state
                    .object_docs(&obj.key)?
                    .into_iter()
                    .filter(|(id, _)| !keep.contains(id.as_str()))
                    .map(|(id, kind)| DocChange::Remove { id, kind, version: obj.modified, guard: Guard::Version })
                    .collect();
                let r = self.write_docs(Target::Live, gone).await?;
                summary.add_report(&r);
                self.state.set_object_docs(&obj.key, &produced)?;
                self.state.meta_set(&docs_version_key, &obj.modified.to_key())?;
                self.finish_object(source, obj, problems, &mut summary)?;
                Ok(summary)
            }
            .instrument(span),
        )
        .await
    }

    /// An object was removed at the source: documents read from it are deleted, and the
    /// ledger forgets it, so the same content coming back is applied again. Change files and
    /// export parts are events, not state: removing them undoes nothing.
    ///
    /// `guard` is `Version` where removals carry an ordered version (S3 sequencers) and may
    /// arrive out of order; a drop dir sees the file gone *now* and removes unconditionally.
    pub async fn remove_object(&self, key: &str, version: Version, guard: Guard) -> Result<Summary, IngestError> {
        self.measured(async {
            let mut summary = Summary::default();
            let mut changes = Vec::new();
            if let Route::Doc(_) = route::classify(key) {
                changes.push(DocChange::Remove {
                    id: format!("doc:{key}"),
                    kind: kind::DOCUMENT.into(),
                    version,
                    guard,
                });
            }
            for (id, kind) in self.state.object_docs(key)? {
                changes.push(DocChange::Remove { id, kind, version, guard });
            }
            self.state.ledger_forget(key)?;
            summary.documents = changes.len();
            let r = self.write_docs(Target::Live, changes).await?;
            summary.add_report(&r);
            self.state.set_object_docs(key, &[])?;
            info!(key, deleted = summary.deleted, "object removed");
            Ok(summary)
        })
        .await
    }

    fn progress_bar(&self, len: u64, what: &'static str) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} ({per_sec}, {eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(what);
        bar
    }
}

/// A file that cannot be decoded (corrupt or truncated gzip, bytes that are not text) is bad
/// input like a bad line: quarantined whole, so that retrying it forever does not block the
/// files behind it. Rows read before the damage stay applied. Other I/O errors are real
/// failures and propagate.
fn undecodable_is_a_problem(result: Result<(), IngestError>, problems: &mut Vec<Problem>) -> Result<(), IngestError> {
    match result {
        Err(IngestError::Read { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            problems.push(Problem { line: None, reason: format!("unreadable file: {source}"), content: String::new() });
            Ok(())
        }
        other => other,
    }
}

/// The text a chunk is embedded as: the document title and heading give a chunk the context
/// its body often lacks ("Approvals" alone says little about which policy).
pub fn embedding_text(doc: &Document, chunk: &crate::model::Chunk) -> String {
    let mut s = String::new();
    if !chunk.text.starts_with(&doc.title) {
        s.push_str(&doc.title);
        s.push('\n');
    }
    if let Some(h) = &chunk.heading {
        s.push_str(h);
        s.push('\n');
    }
    s.push_str(&chunk.text);
    s
}
