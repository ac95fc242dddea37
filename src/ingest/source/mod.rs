//! Where objects come from: the `Source` seam.
//!
//! A source names objects by key (see `route`) and opens them as byte streams; the pipeline
//! never knows whether a key is a file in a drop dir or an object in S3.

pub mod drop_dir;
pub mod s3;

use std::io::Read;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::model::Version;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} does not exist")]
    Missing(String),
}

/// An object as a source sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// The object key, from its first `exports/` or `docs/` segment (see `route::object_key`).
    pub key: String,
    /// Identifies this content of the key: a content hash locally, a version id / etag on S3.
    pub version: String,
    /// Modification time (or S3 sequencer): the version of documents read from the object.
    pub modified: Version,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// Describes the object, or `None` when it does not exist (yet).
    async fn stat(&self, key: &str) -> Result<Option<ObjectRef>, SourceError>;
    async fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, SourceError>;
    /// Where a human (or `quarantine retry`) finds the object.
    fn locate(&self, key: &str) -> String;
}

/// Objects in a local folder: key `k` is the file `root/k`.
#[derive(Clone, Debug)]
pub struct LocalSource {
    pub root: PathBuf,
}

impl LocalSource {
    /// The source and key of a file, if its path has an `exports/` or `docs/` segment.
    pub fn for_path(path: &Path) -> Option<(LocalSource, String)> {
        let text = path.to_string_lossy();
        let key = crate::ingest::route::object_key(&text)?;
        let mut root = path.to_path_buf();
        for _ in 0..key.split('/').count() {
            root.pop();
        }
        Some((LocalSource { root }, key))
    }

    /// Like `for_path`, but the key is looked for in the path relative to `dir` first, so a
    /// drop dir or an ingested folder that itself lies under a folder named `docs` or
    /// `exports` still works.
    pub fn under(dir: &Path, path: &Path) -> Option<(LocalSource, String)> {
        let Ok(rel) = path.strip_prefix(dir) else { return LocalSource::for_path(path) };
        let Some(key) = crate::ingest::route::object_key(&rel.to_string_lossy()) else {
            return LocalSource::for_path(path);
        };
        let mut prefix = rel.to_path_buf();
        for _ in 0..key.split('/').count() {
            prefix.pop();
        }
        Some((LocalSource { root: dir.join(prefix) }, key))
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

/// sha256 of a file's bytes, and its modification time as a version.
pub fn file_identity(path: &Path) -> Result<(String, Version), SourceError> {
    let io = |source| SourceError::Io { path: path.into(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).map_err(io)?;
    let modified = file.metadata().and_then(|m| m.modified()).map_err(io)?;
    let t: chrono::DateTime<chrono::Utc> = modified.into();
    Ok((hex::encode(h.finalize()), Version::from_time(t, 0)))
}

#[async_trait]
impl Source for LocalSource {
    async fn stat(&self, key: &str) -> Result<Option<ObjectRef>, SourceError> {
        let path = self.path(key);
        if !path.is_file() {
            return Ok(None);
        }
        let (version, modified) = file_identity(&path)?;
        Ok(Some(ObjectRef { key: key.to_string(), version, modified }))
    }

    async fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, SourceError> {
        let path = self.path(key);
        match std::fs::File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SourceError::Missing(path.display().to_string())),
            Err(source) => Err(SourceError::Io { path, source }),
        }
    }

    fn locate(&self, key: &str) -> String {
        // Absolute, so that what the ledger and the quarantine record still names the file
        // when a later command runs from another directory.
        let path = self.path(key);
        std::path::absolute(&path).unwrap_or(path).display().to_string()
    }
}
