//! The local stand-in for S3 + SQS: a watched drop directory.
//!
//! Events from the OS watcher only say "look again"; each look is a scan that compares every
//! file's size and modification time with what was seen before, and a file is read only once
//! it has stopped changing for `settle_ms` (so a file still being copied is not ingested
//! half-written). Rescanning rather than trusting individual events means a missed or
//! coalesced event costs a little latency, never a file; the periodic rescan and the start-up
//! scan catch whatever arrived while no one was watching. The ledger makes every re-read of
//! an already applied file a no-op.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::{LocalSource, Source};
use crate::index::Guard;
use crate::ingest::route::{self, Route};
use crate::ingest::{Pipeline, Summary};
use crate::model::Version;

/// Every regular file under `root`, recursively, skipping hidden files and folders.
pub fn list_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Order of application within one scan: full exports (a manifest first: it reads its parts,
/// which are then already applied), then changes in name order, then documents. Correctness
/// doesn't depend on it — versions decide — but snapshot-then-changes does the least work.
pub fn apply_order(key: &str) -> (u8, String) {
    let rank = match route::classify(key) {
        Route::Manifest { .. } => 0,
        Route::FullPart { .. } => 1,
        Route::Cdc | Route::TableChanges { .. } => 2,
        Route::Doc(_) => 3,
        Route::Skip(_) => 4,
    };
    (rank, key.to_string())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Seen {
    len: u64,
    modified: SystemTime,
}

pub struct DropDir {
    root: PathBuf,
    pipeline: Arc<Pipeline>,
    settle: Duration,
    rescan: Duration,
    seen: HashMap<PathBuf, Seen>,
    /// Files with no known prefix, reported once each.
    reported_skips: std::collections::HashSet<PathBuf>,
    /// Whether the start-up reconciliation with the ledger has run.
    reconciled: bool,
}

impl DropDir {
    pub fn new(root: PathBuf, pipeline: Arc<Pipeline>) -> Self {
        let settle = Duration::from_millis(pipeline.config.settle_ms);
        let rescan = Duration::from_secs(pipeline.config.rescan_secs.max(1));
        DropDir {
            root,
            pipeline,
            settle,
            rescan,
            seen: HashMap::new(),
            reported_skips: Default::default(),
            reconciled: false,
        }
    }

    /// The source and key of a file in the drop dir (see `LocalSource::under`).
    fn locate(&self, path: &Path) -> Option<(LocalSource, String)> {
        let rel = path.strip_prefix(&self.root).ok()?;
        route::object_key(&rel.to_string_lossy())?;
        LocalSource::under(&self.root, path)
    }

    /// Documents applied from this drop dir whose files were removed while no one watched.
    async fn reconcile_removed(&mut self, total: &mut Summary) -> bool {
        let root = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        let mut prefix = root.display().to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let applied = match self.pipeline.state.ledger_applied_under(&prefix) {
            Ok(a) => a,
            Err(e) => {
                error!(error = %e, "reading the ledger");
                return false;
            }
        };
        for (key, path) in applied {
            if !key.starts_with("docs/") || Path::new(&path).exists() {
                continue;
            }
            match self.pipeline.remove_object(&key, Version::ZERO, Guard::Projection).await {
                Ok(s) => total.absorb(&s),
                Err(e) => {
                    error!(key, error = %e, "removing documents of a file removed while stopped failed");
                    return false;
                }
            }
        }
        true
    }

    /// One pass: ingest new and changed files that have settled, delete documents of files
    /// that are gone. Returns the summary and whether some file is still settling.
    pub async fn scan(&mut self) -> (Summary, bool) {
        let mut total = Summary::default();
        let mut unsettled = false;
        if !self.reconciled {
            self.reconciled = self.reconcile_removed(&mut total).await;
        }
        let files = match list_files(&self.root) {
            Ok(f) => f,
            Err(e) => {
                error!(root = %self.root.display(), error = %e, "cannot list the drop dir");
                return (total, true);
            }
        };
        let now = SystemTime::now();
        let mut todo = Vec::new();
        // Folders holding a file that is still being written: a manifest there waits, in
        // case it was copied before the parts it lists (as `cp -r` may do).
        let mut busy_dirs = std::collections::HashSet::new();
        let present: std::collections::HashSet<&PathBuf> = files.iter().collect();
        let gone: Vec<PathBuf> = self.seen.keys().filter(|p| !present.contains(p)).cloned().collect();
        for path in &files {
            let Ok(meta) = std::fs::metadata(path) else { continue };
            let Ok(modified) = meta.modified() else { continue };
            let cur = Seen { len: meta.len(), modified };
            if self.seen.get(path) == Some(&cur) {
                continue;
            }
            if now.duration_since(modified).unwrap_or_default() < self.settle {
                unsettled = true;
                busy_dirs.extend(path.parent().map(Path::to_path_buf));
                continue;
            }
            let rel = path.strip_prefix(&self.root).unwrap_or(path);
            match self.locate(path) {
                Some((_, key)) => todo.push((key, path.clone(), cur)),
                None => {
                    if self.reported_skips.insert(path.clone()) {
                        info!(file = %path.display(), "skipped: not under exports/ or docs/");
                        total.skipped_files += 1;
                        total.skipped.push(format!("{}: not under exports/ or docs/", rel.display()));
                    }
                    self.seen.insert(path.clone(), cur);
                }
            }
        }
        todo.retain(|(key, path, _)| {
            let wait = matches!(route::classify(key), Route::Manifest { .. })
                && path.parent().is_some_and(|d| busy_dirs.contains(d));
            unsettled |= wait;
            !wait
        });
        todo.sort_by_key(|(k, _, _)| apply_order(k));
        for (key, path, cur) in todo {
            let Some((source, _)) = self.locate(&path) else { continue };
            let result = async {
                match source.stat(&key).await? {
                    Some(obj) => self.pipeline.ingest_object(&source, &obj).await.map(Some),
                    // Gone between listing and reading (renamed, removed): look again later.
                    None => Ok(None),
                }
            }
            .await;
            match result {
                Ok(Some(s)) => {
                    total.absorb(&s);
                    self.seen.insert(path, cur);
                }
                Ok(None) => unsettled = true,
                // Not marked seen: the next scan tries again.
                Err(e) => error!(key, error = %e, "ingest failed; will retry"),
            }
        }
        for path in gone {
            let Some(key) =
                path.strip_prefix(&self.root).ok().and_then(|rel| route::object_key(&rel.to_string_lossy()))
            else {
                self.seen.remove(&path);
                continue;
            };
            match self.pipeline.remove_object(&key, Version::ZERO, Guard::Projection).await {
                Ok(s) => {
                    total.absorb(&s);
                    self.seen.remove(&path);
                }
                // Still in `seen`: the next scan sees it gone again and retries.
                Err(e) => error!(key, error = %e, "removing documents failed; will retry"),
            }
        }
        (total, unsettled)
    }

    /// Scans at start, then on every change the OS reports and every `rescan` interval,
    /// until `shutdown` resolves.
    pub async fn watch(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), notify::Error> {
        std::fs::create_dir_all(&self.root).map_err(notify::Error::io)?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(e) = event {
                if !matches!(
                    e.kind,
                    notify::EventKind::Access(notify::event::AccessKind::Open(_))
                        | notify::EventKind::Access(notify::event::AccessKind::Read)
                ) {
                    let _ = tx.send(());
                }
            }
        })?;
        watcher.watch(&self.root, RecursiveMode::Recursive)?;
        info!(root = %self.root.display(), "watching drop dir");
        tokio::pin!(shutdown);
        let mut next_scan = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = rx.recv() => {
                    // Let a burst of events (a copy in progress) settle before looking.
                    next_scan = next_scan.min(tokio::time::Instant::now() + Duration::from_millis(20));
                }
                _ = tokio::time::sleep_until(next_scan) => {
                    while rx.try_recv().is_ok() {}
                    let (s, unsettled) = self.scan().await;
                    if s.objects > 0 || s.deleted > 0 {
                        info!(objects = s.objects, upserted = s.upserted, deleted = s.deleted, quarantined = s.quarantined, "drop dir scan applied");
                    } else {
                        debug!("drop dir scan: nothing new");
                    }
                    if s.quarantined > 0 {
                        warn!(quarantined = s.quarantined, "some input was quarantined; see `askiam quarantine list`");
                    }
                    let wait = if unsettled { self.settle } else { self.rescan };
                    next_scan = tokio::time::Instant::now() + wait;
                }
            }
        }
        info!("drop dir watcher stopped");
        Ok(())
    }
}
