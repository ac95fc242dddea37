//! Objects in an S3 bucket as a `Source`.
//!
//! Reads stream: the object body is pulled chunk by chunk from the SDK's `ByteStream` by a
//! task and handed to the (synchronous) parsers through a small bounded channel, so a large
//! export never sits in memory whole. Objects are read at the event's `versionId` when the
//! bucket is versioned, so the content matches the event even if the key changed since.
//! Endpoints come from the SDK's own configuration (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`),
//! so the same code talks to AWS or to a local moto server.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{ObjectRef, Source, SourceError};
use crate::model::Version;

pub struct S3Source {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// What precedes the routed key in the bucket (`tenant-a/` in `tenant-a/exports/…`).
    prefix: String,
    /// Object versions to read, by routed key (from the events being processed).
    pinned: Mutex<HashMap<String, String>>,
    max_bytes: u64,
}

fn s3_err(key: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Io { path: key.into(), source: std::io::Error::other(e.to_string()) }
}

/// Path-style addressing whenever an endpoint is overridden (moto, MinIO, VPC endpoints
/// without DNS): virtual-hosted names would not resolve there.
pub async fn client() -> aws_sdk_s3::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let overridden =
        std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(overridden).build();
    aws_sdk_s3::Client::from_conf(conf)
}

impl S3Source {
    pub fn new(client: aws_sdk_s3::Client, bucket: &str, prefix: &str, max_bytes: u64) -> Self {
        S3Source {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            pinned: Mutex::new(HashMap::new()),
            max_bytes,
        }
    }

    /// Reads `key` at this object version from now on (a versioned bucket's event).
    pub fn pin(&self, key: &str, version_id: &str) {
        self.pinned.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), version_id.to_string());
    }

    fn s3_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn pinned(&self, key: &str) -> Option<String> {
        self.pinned.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }
}

#[async_trait]
impl Source for S3Source {
    async fn stat(&self, key: &str) -> Result<Option<ObjectRef>, SourceError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.s3_key(key))
            .set_version_id(self.pinned(key))
            .send()
            .await;
        let head = match out {
            Ok(h) => h,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(None),
            Err(e) => return Err(s3_err(key, aws_sdk_s3::error::DisplayErrorContext(e))),
        };
        let version = head.version_id().or(head.e_tag()).unwrap_or_default().trim_matches('"').to_string();
        let modified = head
            .last_modified()
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
            .map(|t| Version::from_time(t, 0))
            .unwrap_or(Version::ZERO);
        Ok(Some(ObjectRef { key: key.to_string(), version, modified }))
    }

    async fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, SourceError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.s3_key(key))
            .set_version_id(self.pinned(key))
            .send()
            .await;
        let obj = match out {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(SourceError::Missing(self.locate(key)))
            }
            Err(e) => return Err(s3_err(key, aws_sdk_s3::error::DisplayErrorContext(e))),
        };
        let len = obj.content_length().unwrap_or(0).max(0) as u64;
        if len > self.max_bytes {
            return Err(s3_err(
                key,
                format!("object is {len} bytes; the limit is {} (worker.max_object_bytes)", self.max_bytes),
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
        let mut body = obj.body;
        let name = self.locate(key);
        tokio::spawn(async move {
            loop {
                match body.try_next().await {
                    Ok(Some(chunk)) => {
                        if tx.send(Ok(chunk)).await.is_err() {
                            return; // the reader was dropped
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(format!("reading {name}: {e}")))).await;
                        return;
                    }
                }
            }
        });
        Ok(Box::new(ChannelReader { rx, current: bytes::Bytes::new() }))
    }

    fn locate(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.s3_key(key))
    }
}

/// The synchronous end of a streamed body. Parsers read on the async worker thread, so a
/// wait for the next chunk steps out of the runtime (`block_in_place`) instead of stalling it.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            let next = match self.rx.try_recv() {
                Ok(v) => Some(v),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    tokio::task::block_in_place(|| self.rx.blocking_recv())
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
            };
            match next {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}
