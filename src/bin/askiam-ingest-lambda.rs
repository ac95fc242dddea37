//! The indexing worker as a Lambda on an SQS event source (S3 event notifications).
//!
//! Returns `batchItemFailures` (enable `ReportBatchItemFailures` on the event source
//! mapping) so only the failed messages are retried and, after the queue's
//! `maxReceiveCount`, land in its dead-letter queue. Configuration is `ASKIAM_*` from the
//! environment; the data dir (`ASKIAM_DATA_DIR`) must be durable (EFS) for the embedded index.

use std::sync::Arc;

use askiam::config::Config;
use askiam::ingest::worker::handle_sqs_event;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    askiam::lambda::init_tracing();
    let config = Config::load(None, std::env::vars())?;
    let w = askiam::app::writer(&config).await?;
    let worker = Arc::new(askiam::app::worker(&config, w.pipeline.clone()).await);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        async move { Ok::<_, Error>(handle_sqs_event(&worker, event.payload).await) }
    }))
    .await
}
