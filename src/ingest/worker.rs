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
use super::ledger::{Claim, DynamoLedger, S3Object};
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
            ("EmbeddingRetries", s.embedding_retries as f64, "Count"),
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
    /// The shared ledger; `None`: the data dir's own ledger (inside the pipeline) is enough.
    pub ledger: Option<DynamoLedger>,
    /// How long a claim in the shared ledger holds.
    pub lease: std::time::Duration,
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
            match self.apply(&ev).instrument(span_of(&ev, &messages[i])).await {
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
                    let _in = span_of(&ev, &messages[i]).entered();
                    tracing::warn!(%reason, "object failed; its message is left for retry");
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
            Action::Remove => {
                let summary =
                    self.pipeline.remove_object(&key, ev.version(), Guard::Version).await.map_err(|e| e.to_string())?;
                if let Some(ledger) = &self.ledger {
                    ledger.removed(&ev.bucket, &ev.key).await.map_err(|e| e.to_string())?;
                }
                Ok(Some(summary))
            }
            Action::Put => {
                // The ETag first: a bucket listing (`reconcile`) knows it too, and the same
                // content uploaded again is the same version.
                let version = ev
                    .etag
                    .clone()
                    .or_else(|| ev.version_id.clone())
                    .or_else(|| ev.sequencer.clone())
                    .unwrap_or_else(|| ev.time.to_rfc3339());
                let version = version.trim_matches('"');
                let shared =
                    S3Object { bucket: &ev.bucket, key: &ev.key, etag: version, sequencer: ev.sequencer.as_deref() };
                if let Some(ledger) = &self.ledger {
                    match ledger.claim(&shared, self.lease).await.map_err(|e| e.to_string())? {
                        Claim::Mine => {}
                        Claim::Applied => {
                            tracing::info!(version, "already applied (shared ledger)");
                            return Ok(Some(Summary { already_applied: 1, ..Default::default() }));
                        }
                        Claim::Busy(until) => {
                            return Err(format!("another worker is applying this version (claim held until {until})"))
                        }
                    }
                }
                let result = self.ingest(ev, &key, version).await;
                if let Some(ledger) = &self.ledger {
                    let recorded = match &result {
                        Ok(Some(s)) => ledger.applied(&shared, &serde_json::to_value(s).unwrap_or_default()).await,
                        // Not "applied": the same bytes uploaded again must be read then.
                        Ok(None) => ledger.gone(&shared).await,
                        Err(reason) => ledger.failed(&shared, reason).await,
                    };
                    recorded.map_err(|e| e.to_string())?;
                }
                result.map(|s| Some(s.unwrap_or_default()))
            }
        }
    }

    /// Reads one object version into the pipeline; quarantined content is an error, so the
    /// message fails every time it comes back and ends in the dead-letter queue instead of
    /// being acknowledged. `None`: the object was deleted, or everything read was older than
    /// the index (a late event), so nothing is recorded as applied.
    async fn ingest(&self, ev: &ObjectEvent, key: &str, version: &str) -> Result<Option<Summary>, String> {
        let prefix = &ev.key[..ev.key.len() - key.len()];
        let source = S3Source::new(self.s3.clone(), &ev.bucket, prefix, self.max_object_bytes);
        if let Some(v) = &ev.version_id {
            source.pin(key, v);
        }
        let obj = ObjectRef { key: key.to_string(), version: version.to_string(), modified: ev.version() };
        match self.pipeline.ingest_object(&source, &obj).await {
            Ok(summary) => {
                let open: Vec<String> = self
                    .pipeline
                    .state
                    .quarantine_open_for(key)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|q| match q.line {
                        Some(l) => format!("line {l}: {}", q.reason),
                        None => q.reason,
                    })
                    .collect();
                if !open.is_empty() {
                    Err(format!("quarantined: {}", open.join("; ")))
                } else if summary.documents > 0 && summary.stale == summary.documents {
                    // Everything it holds is older than the index: a delete or a newer upload
                    // came first (this event is late). Not recorded as applied — the same
                    // bytes uploaded again are a new version and must be read then.
                    tracing::info!("superseded: a newer event for this key was applied first");
                    self.pipeline.state.ledger_forget(key).map_err(|e| e.to_string())?;
                    Ok(None)
                } else {
                    Ok(Some(summary))
                }
            }
            // Deleted before we got to it: its delete event removes what it left.
            Err(IngestError::Source(SourceError::Missing(what))) => {
                tracing::info!(%what, "object gone before it was read");
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Lists the bucket (under `prefix`) and applies every object the ledger has not:
    /// notifications can be late or lost. Each object goes the way its notification would
    /// (shared ledger included), so objects already applied are no-ops; full-export
    /// manifests go last, as in a drop dir. An object that fails is reported and the rest
    /// still land.
    pub async fn reconcile(&self, bucket: &str, prefix: &str) -> Result<Reconciled, String> {
        let mut listed = Vec::new();
        let mut pages = self.s3.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                format!("listing s3://{bucket}/{prefix}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
            })?;
            for o in page.contents() {
                let (Some(key), Some(etag)) = (o.key(), o.e_tag()) else { continue };
                let time = o
                    .last_modified()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_default();
                listed.push(ObjectEvent {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    action: Action::Put,
                    version_id: None,
                    etag: Some(etag.trim_matches('"').to_string()),
                    sequencer: None,
                    size: o.size(),
                    time,
                });
            }
        }
        listed.sort_by_key(|e| (e.key.ends_with(route::MANIFEST), e.key.clone()));
        let mut out = Reconciled::default();
        for ev in listed {
            let span = tracing::info_span!("reconcile", key = %ev.key, bucket = %ev.bucket);
            match self.apply(&ev).instrument(span).await {
                Ok(Some(s)) => out.summary.absorb(&s),
                Ok(None) => {
                    out.summary.skipped_files += 1;
                    out.summary.skipped.push(format!("s3://{bucket}/{}: not under exports/ or docs/", ev.key));
                }
                Err(reason) => {
                    tracing::warn!(key = %ev.key, %reason, "object failed");
                    out.failed.push(format!("s3://{bucket}/{}: {reason}", ev.key));
                }
            }
        }
        Ok(out)
    }
}

/// What `reconcile` did; objects that failed are listed and the command exits non-zero.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Reconciled {
    #[serde(flatten)]
    pub summary: Summary,
    pub failed: Vec<String>,
}

/// Every log line about an object carries its key (JSON logs: in `span`).
fn span_of(ev: &ObjectEvent, m: &Message) -> tracing::Span {
    tracing::info_span!("object_event", key = %ev.key, bucket = %ev.bucket, message_id = %m.id)
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
        // `Worker::process` logged why, with the object's key.
        if let Outcome::Failed(_) = o {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = m.id.clone();
            response.batch_item_failures.push(failure);
        }
    }
    response
}
