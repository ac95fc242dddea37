//! The event worker's core: a batch of queue messages in, one outcome per message out.
//!
//! Both runtimes call `Worker::process` — the SQS Lambda (which returns the failed ids as
//! `batchItemFailures`) and the `askiam worker` poller (which deletes only the messages that
//! succeeded). Events of a batch are applied in (key, version) order, so a create and a
//! delete of one key in the same batch land in the order S3 saw them; across batches the
//! index's and entity store's version guards keep a late older event from undoing a newer
//! one, and the ledger turns a redelivered message into a no-op.

use std::sync::Arc;

use tracing::Instrument;

use super::events::{parse_message, Action, ObjectEvent, Parsed};
use super::source::s3::S3Source;
use super::source::{ObjectRef, SourceError};
use super::{route, IngestError, Pipeline, Summary};
use crate::index::Guard;

/// A queue message: its id (SQS message id) and body.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub body: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Everything the message asked for is in the index.
    Done,
    /// Nothing to do (a test event, a key under no known prefix).
    Ignored(String),
    /// Retry it (or let it go to the dead-letter queue): the reason says why.
    Failed(String),
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BatchReport {
    pub messages: usize,
    pub failed: usize,
    pub summary: Summary,
    /// Seconds from the newest applied object's creation (its event time) to now.
    pub max_lag_seconds: f64,
}

impl BatchReport {
    /// One CloudWatch Embedded Metric Format line: CloudWatch Logs turns it into metrics
    /// with no agent and no API call (the Lambda's stdout, or the poller's on ECS).
    pub fn emf(&self, door: &str) -> String {
        let s = &self.summary;
        let metrics = [
            ("Messages", self.messages as f64, "Count"),
            ("MessagesFailed", self.failed as f64, "Count"),
            ("DocumentsUpserted", s.upserted as f64, "Count"),
            ("DocumentsDeleted", s.deleted as f64, "Count"),
            ("Quarantined", s.quarantined as f64, "Count"),
            ("EmbeddingCalls", s.embedding_calls as f64, "Count"),
            ("EmbeddedTexts", s.embedded_texts as f64, "Count"),
            ("SecondsToIndexed", self.max_lag_seconds, "Seconds"),
        ];
        let mut v = serde_json::json!({
            "_aws": {
                "Timestamp": chrono::Utc::now().timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": "askiam",
                    "Dimensions": [["Door"]],
                    "Metrics": metrics.iter().map(|(n, _, u)| serde_json::json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
                }],
            },
            "Door": door,
        });
        for (n, x, _) in metrics {
            v[n] = serde_json::json!(x);
        }
        v.to_string()
    }
}

pub struct Worker {
    pub pipeline: Arc<Pipeline>,
    pub s3: aws_sdk_s3::Client,
    pub max_object_bytes: u64,
}

impl Worker {
    /// Applies a batch; one outcome per message, in the messages' order.
    pub async fn process(&self, messages: &[Message]) -> (Vec<Outcome>, BatchReport) {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; messages.len()];
        let mut events: Vec<(usize, ObjectEvent)> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match parse_message(&m.body) {
                Ok(Parsed::Ignore(why)) => outcomes[i] = Some(Outcome::Ignored(why.to_string())),
                Ok(Parsed::Events(evs)) if evs.is_empty() => {
                    outcomes[i] = Some(Outcome::Ignored("no object events".into()))
                }
                Ok(Parsed::Events(evs)) => events.extend(evs.into_iter().map(|e| (i, e))),
                Err(e) => {
                    tracing::warn!(message_id = %m.id, error = %e, "unusable message");
                    outcomes[i] = Some(Outcome::Failed(e.to_string()));
                }
            }
        }
        events.sort_by(|a, b| (&a.1.bucket, &a.1.key, a.1.version()).cmp(&(&b.1.bucket, &b.1.key, b.1.version())));
        let mut report = BatchReport { messages: messages.len(), ..Default::default() };
        for (i, ev) in events {
            if matches!(outcomes[i], Some(Outcome::Failed(_))) {
                continue; // one failed event fails its message; the rest is redone on retry
            }
            let span =
                tracing::info_span!("object_event", key = %ev.key, bucket = %ev.bucket, message_id = %messages[i].id);
            match self.apply(&ev).instrument(span).await {
                Ok(Some(s)) => {
                    report.summary.absorb(&s);
                    let lag = (chrono::Utc::now() - ev.time).num_milliseconds() as f64 / 1000.0;
                    report.max_lag_seconds = report.max_lag_seconds.max(lag);
                    outcomes[i].get_or_insert(Outcome::Done);
                }
                Ok(None) => {
                    outcomes[i].get_or_insert(Outcome::Ignored(format!("{}: not under exports/ or docs/", ev.key)));
                }
                Err(reason) => {
                    tracing::warn!(key = %ev.key, %reason, "object failed");
                    outcomes[i] = Some(Outcome::Failed(format!("{}: {reason}", ev.key)));
                }
            }
        }
        let outcomes: Vec<Outcome> = outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Done)).collect();
        report.failed = outcomes.iter().filter(|o| matches!(o, Outcome::Failed(_))).count();
        (outcomes, report)
    }

    /// One event; `None` when its key means nothing to askiam.
    async fn apply(&self, ev: &ObjectEvent) -> Result<Option<Summary>, String> {
        let Some(key) = route::object_key(&ev.key) else { return Ok(None) };
        match ev.action {
            Action::Remove => self
                .pipeline
                .remove_object(&key, ev.version(), Guard::Version)
                .await
                .map(Some)
                .map_err(|e| e.to_string()),
            Action::Put => {
                let prefix = &ev.key[..ev.key.len() - key.len()];
                let source = S3Source::new(self.s3.clone(), &ev.bucket, prefix, self.max_object_bytes);
                if let Some(v) = &ev.version_id {
                    source.pin(&key, v);
                }
                let version = ev
                    .version_id
                    .clone()
                    .or_else(|| ev.etag.clone())
                    .or_else(|| ev.sequencer.clone())
                    .unwrap_or_else(|| ev.time.to_rfc3339());
                let obj = ObjectRef {
                    key: key.clone(),
                    version: version.trim_matches('"').to_string(),
                    modified: ev.version(),
                };
                match self.pipeline.ingest_object(&source, &obj).await {
                    Ok(summary) => {
                        // Quarantined content fails the message every time it comes back, so
                        // it ends in the dead-letter queue instead of being acknowledged.
                        let open: Vec<String> = self
                            .pipeline
                            .state
                            .quarantine_open()
                            .map_err(|e| e.to_string())?
                            .into_iter()
                            .filter(|q| q.object == key)
                            .map(|q| match q.line {
                                Some(l) => format!("line {l}: {}", q.reason),
                                None => q.reason,
                            })
                            .collect();
                        if open.is_empty() {
                            Ok(Some(summary))
                        } else {
                            Err(format!("quarantined: {}", open.join("; ")))
                        }
                    }
                    // Deleted before we got to it: its delete event removes what it left.
                    Err(IngestError::Source(SourceError::Missing(what))) => {
                        tracing::info!(%what, "object gone before it was read");
                        Ok(Some(Summary::default()))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }
}

/// The SQS Lambda's handler: the batch's failed message ids as `batchItemFailures`, so
/// only they are retried (enable `ReportBatchItemFailures` on the event source mapping).
pub async fn handle_sqs_event(
    worker: &Worker,
    event: aws_lambda_events::event::sqs::SqsEvent,
) -> aws_lambda_events::event::sqs::SqsBatchResponse {
    use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
    let batch: Vec<Message> = event
        .records
        .iter()
        .map(|r| Message { id: r.message_id.clone().unwrap_or_default(), body: r.body.clone().unwrap_or_default() })
        .collect();
    let (outcomes, report) = worker.process(&batch).await;
    println!("{}", report.emf("lambda"));
    let mut response = SqsBatchResponse::default();
    for (m, o) in batch.iter().zip(outcomes) {
        if let Outcome::Failed(reason) = o {
            tracing::warn!(message_id = %m.id, %reason, "failed; reported for retry");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = m.id.clone();
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// Lists the bucket (under `prefix`) and ingests every object the ledger has not applied:
/// notifications can be late or lost. Objects already applied at the same version are
/// no-ops; full-export manifests go last, as in a drop dir.
pub async fn reconcile(
    pipeline: &Pipeline,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    max_object_bytes: u64,
) -> Result<Summary, String> {
    let mut listed = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| format!("listing s3://{bucket}/{prefix}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
        for o in page.contents() {
            let (Some(key), Some(etag)) = (o.key(), o.e_tag()) else { continue };
            let time = o
                .last_modified()
                .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                .unwrap_or_default();
            listed.push((key.to_string(), etag.trim_matches('"').to_string(), time));
        }
    }
    listed.sort_by_key(|(k, _, _)| (k.ends_with("_MANIFEST.json"), k.clone()));
    let mut total = Summary::default();
    for (s3_key, etag, time) in listed {
        let Some(key) = route::object_key(&s3_key) else {
            total.skipped_files += 1;
            total.skipped.push(format!("s3://{bucket}/{s3_key}: not under exports/ or docs/"));
            continue;
        };
        let source = S3Source::new(s3.clone(), bucket, &s3_key[..s3_key.len() - key.len()], max_object_bytes);
        let obj = ObjectRef { key: key.clone(), version: etag, modified: crate::model::Version::from_time(time, 0) };
        let span = tracing::info_span!("reconcile", key = %key);
        let s = pipeline.ingest_object(&source, &obj).instrument(span).await.map_err(|e| format!("{key}: {e}"))?;
        total.absorb(&s);
    }
    Ok(total)
}
