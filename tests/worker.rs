//! The AWS event path against a real moto server: objects put into a bucket whose
//! notifications go to an SQS queue (with a dead-letter queue), drained by `askiam worker`
//! and by the Lambda handler with the messages moto delivered.

mod support;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use support::moto::Moto;
use support::{fixtures, walk, Askiam};

struct Aws {
    moto: Moto,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    queue: String,
    dlq: String,
    /// The shared ledger's DynamoDB table, when the workers are given one.
    ledger: Option<String>,
}

const BUCKET: &str = "iam-exports";

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    let attrs =
        sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await.unwrap();
    attrs.attributes.unwrap()[&QueueAttributeName::QueueArn].clone()
}

async fn aws() -> Aws {
    let moto = Moto::start();
    let creds = aws_sdk_s3::config::Credentials::new("test", "test", None, None, "test");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds.clone())
            .endpoint_url(moto.endpoint())
            .force_path_style(true)
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(moto.endpoint())
            .build(),
    );
    let dlq = sqs.create_queue().queue_name("askiam-dlq").send().await.unwrap().queue_url.unwrap();
    let dlq_arn = queue_arn(&sqs, &dlq).await;
    let queue = sqs
        .create_queue()
        .queue_name("askiam-events")
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = queue_arn(&sqs, &queue).await;
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    s3.put_bucket_notification_configuration()
        .bucket(BUCKET)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .events(Event::from("s3:ObjectRemoved:*"))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    Aws { moto, s3, sqs, queue, dlq, ledger: None }
}

impl Aws {
    async fn put(&self, key: &str, body: Vec<u8>) {
        self.s3.put_object().bucket(BUCKET).key(key).body(ByteStream::from(body)).send().await.unwrap();
    }

    async fn depth(&self, url: &str) -> u64 {
        let a = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        a.values().map(|v| v.parse::<u64>().unwrap()).sum()
    }

    /// `askiam` pointed at moto through the SDK's own settings.
    fn cmd(&self, a: &Askiam) -> std::process::Command {
        let mut c = a.cmd();
        c.env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1");
        if let Some(t) = &self.ledger {
            c.env("ASKIAM_WORKER_LEDGER_TABLE", t);
        }
        c
    }

    fn worker(&self, a: &Askiam) -> Value {
        let out = self.cmd(a).args(["worker", "--queue-url", &self.queue, "--once"]).output().unwrap();
        assert!(out.status.success(), "askiam worker: {}", String::from_utf8_lossy(&out.stderr));
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        // One EMF line per batch; sum what the batches did.
        let mut total = serde_json::json!({"Messages": 0.0, "MessagesFailed": 0.0, "DocumentsUpserted": 0.0, "DocumentsDeleted": 0.0});
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not an EMF line ({e}): {line}"));
            assert!(v["_aws"]["CloudWatchMetrics"].is_array());
            for k in ["Messages", "MessagesFailed", "DocumentsUpserted", "DocumentsDeleted"] {
                total[k] = serde_json::json!(total[k].as_f64().unwrap() + v[k].as_f64().unwrap());
            }
        }
        total
    }
}

fn found(a: &Askiam, q: &str, id: &str) -> bool {
    a.search(q, &["--k", "10"]).iter().any(|h| h["id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_is_followed_through_its_queue() {
    let aws = aws().await;
    let a = Askiam::new();

    // The fixture export (manifest last, as an exporter writes it) and a policy document
    // whose key has spaces and non-ASCII characters.
    let full = fixtures().join("exports/full");
    let mut files: Vec<_> = walk(&full);
    files.sort_by_key(|p| p.ends_with("_MANIFEST.json"));
    for f in &files {
        let key = format!("tenant-a/{}", f.strip_prefix(fixtures()).unwrap().display());
        aws.put(&key, std::fs::read(f).unwrap()).await;
    }
    let doc = std::fs::read(fixtures().join("docs/policies/access-request-policy.md")).unwrap();
    let odd_key = "docs/policies/Zugriffs Richtlinie für Übergänge (v2).md";
    aws.put(odd_key, doc).await;

    let r = aws.worker(&a);
    assert_eq!(r["MessagesFailed"], 0.0, "{r}");
    assert!(found(&a, "payroll administrator", "role:ROLE-0017"));
    let odd_id = format!("doc:{odd_key}");
    assert!(found(&a, "access request policy", &odd_id), "the odd key's document is searchable");
    assert_eq!(aws.depth(&aws.queue).await, 0);
    let before = a.stats();

    // The same notification twice changes nothing: replay the doc's event by hand.
    aws.put(odd_key, std::fs::read(fixtures().join("docs/policies/access-request-policy.md")).unwrap()).await;
    let peek = aws.sqs.receive_message().queue_url(&aws.queue).visibility_timeout(0).send().await.unwrap();
    let body = peek.messages()[0].body().unwrap().to_string();
    aws.sqs.send_message().queue_url(&aws.queue).message_body(&body).send().await.unwrap();
    let r = aws.worker(&a);
    assert_eq!(r["MessagesFailed"], 0.0, "{r}");
    assert_eq!(r["DocumentsUpserted"], 0.0, "a replay upserts nothing: {r}");
    assert_eq!(a.stats()["index"]["digest"], before["index"]["digest"]);

    // A delete removes the object's documents.
    aws.s3.delete_object().bucket(BUCKET).key(odd_key).send().await.unwrap();
    let r = aws.worker(&a);
    assert_eq!(r["DocumentsDeleted"], 1.0, "{r}");
    assert!(!found(&a, "access request policy", &odd_id));

    // A malformed change file fails its message only; after maxReceiveCount it is in the DLQ.
    aws.put("exports/changes/2026-11-25-broken.jsonl", b"{not json\n".to_vec()).await;
    aws.put("docs/guides/ok.md", b"# Badge access\n\nBadges are issued by facilities.\n".to_vec()).await;
    let r = aws.worker(&a);
    assert!(r["MessagesFailed"].as_f64().unwrap() >= 1.0, "{r}");
    assert!(found(&a, "badge access facilities", "doc:docs/guides/ok.md"), "the good object of the batch landed");
    assert_eq!(aws.depth(&aws.queue).await, 0);
    assert_eq!(aws.depth(&aws.dlq).await, 1, "the malformed object's message is dead-lettered");
    let dead = aws.sqs.receive_message().queue_url(&aws.dlq).send().await.unwrap();
    assert!(dead.messages()[0].body().unwrap().contains("2026-11-25-broken.jsonl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_handler_reports_only_failed_messages() {
    let aws = aws().await;
    let a = Askiam::new();
    aws.put("docs/guides/ok.md", b"# Badge access\n\nBadges are issued by facilities.\n".to_vec()).await;
    aws.put("exports/changes/broken.jsonl", b"{not json\n".to_vec()).await;
    // The event Lambda would get: the messages moto delivered, as SQS records.
    let got = aws.sqs.receive_message().queue_url(&aws.queue).max_number_of_messages(10).send().await.unwrap();
    let records: Vec<Value> = got
        .messages()
        .iter()
        .map(|m| {
            serde_json::json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
            "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:askiam-events", "awsRegion": "us-east-1"})
        })
        .collect();
    // Moto, like S3, sends an s3:TestEvent when the notification is configured.
    assert!(records.len() >= 2, "{records:?}");
    let mut event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_value(serde_json::json!({"Records": records})).unwrap();
    event.records.push(serde_json::from_value(serde_json::json!({"messageId": "garbage-1", "body": "hello"})).unwrap());

    let (w, worker) = aws.in_process(&a, None).await;
    let resp = askiam::ingest::worker::handle_sqs_event(&worker, event).await;
    let mut failed: Vec<String> = resp.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    failed.sort();
    let broken_id = got
        .messages()
        .iter()
        .find(|m| m.body().unwrap().contains("broken.jsonl"))
        .unwrap()
        .message_id()
        .unwrap()
        .to_string();
    let mut want = vec![broken_id, "garbage-1".to_string()];
    want.sort();
    assert_eq!(failed, want);
    drop(w);
    assert!(found(&a, "badge access facilities", "doc:docs/guides/ok.md"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finds_an_object_whose_notification_never_came() {
    let aws = aws().await;
    let a = Askiam::new();
    aws.put("docs/guides/ok.md", b"# Badge access\n\nBadges are issued by facilities.\n".to_vec()).await;
    aws.worker(&a);
    // Lost notification: the object lands while the notification is switched off.
    aws.s3
        .put_bucket_notification_configuration()
        .bucket(BUCKET)
        .notification_configuration(aws_sdk_s3::types::NotificationConfiguration::builder().build())
        .send()
        .await
        .unwrap();
    aws.put("docs/guides/vpn.md", b"# VPN access\n\nThe network team grants VPN tokens.\n".to_vec()).await;
    assert_eq!(aws.depth(&aws.queue).await, 0);
    assert!(!found(&a, "vpn tokens network team", "doc:docs/guides/vpn.md"));
    let out = aws.cmd(&a).args(["reconcile", "--bucket", BUCKET, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["objects"], 1, "only the unseen object is applied: {s}");
    assert_eq!(s["already_applied"], 1, "{s}");
    assert!(found(&a, "vpn tokens network team", "doc:docs/guides/vpn.md"));
}

impl Aws {
    /// The worker core in this process over `a`'s data dir (hash embedder), as the Lambda
    /// runs it; the writer holds the data dir's lock until dropped.
    async fn in_process(
        &self,
        a: &Askiam,
        ledger: Option<askiam::ingest::ledger::DynamoLedger>,
    ) -> (askiam::app::Writer, askiam::ingest::worker::Worker) {
        let mut config = askiam::config::Config { data_dir: a.data_dir(), ..Default::default() };
        config.embed.provider = "hash".into();
        let w = askiam::app::writer(&config).await.unwrap();
        let worker = askiam::ingest::worker::Worker {
            pipeline: w.pipeline.clone(),
            s3: self.s3.clone(),
            max_object_bytes: 1 << 20,
            ledger,
            lease: std::time::Duration::from_secs(60),
        };
        (w, worker)
    }

    fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test"))
                .endpoint_url(self.moto.endpoint())
                .build(),
        )
    }

    /// The ledger table as infra/ creates it.
    async fn create_ledger(&mut self, table: &str) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        let ddb = self.dynamodb();
        let attr = |n: &str| {
            AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build().unwrap()
        };
        let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().unwrap();
        ddb.create_table()
            .table_name(table)
            .attribute_definitions(attr("object"))
            .attribute_definitions(attr("version"))
            .key_schema(key("object", KeyType::Hash))
            .key_schema(key("version", KeyType::Range))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .unwrap();
        self.ledger = Some(table.to_string());
        ddb
    }

    /// Bodies of the messages waiting now, left on the queue.
    async fn peek(&self) -> Vec<String> {
        let got = self
            .sqs
            .receive_message()
            .queue_url(&self.queue)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        got.messages().iter().map(|m| m.body().unwrap().to_string()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_ledger_in_dynamodb_makes_a_redelivery_a_no_op_for_every_worker() {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let mut aws = aws().await;
    let ddb = aws.create_ledger("askiam-ledger").await;
    // Two workers with separate data dirs (two Lambdas) and one ledger.
    let (a, b) = (Askiam::new(), Askiam::new());
    let key = "tenant-a/docs/guides/vpn guide.md";
    aws.put(key, b"# VPN access\n\nThe network team grants VPN tokens.\n".to_vec()).await;
    let body = aws.peek().await.into_iter().find(|b| b.contains("vpn")).expect("the object's notification");

    let r = aws.worker(&a);
    assert_eq!((r["MessagesFailed"].as_f64(), r["DocumentsUpserted"].as_f64()), (Some(0.0), Some(1.0)), "{r}");
    let items = ddb.scan().table_name("askiam-ledger").send().await.unwrap().items.unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    let item = &items[0];
    assert_eq!(item["object"], V::S(format!("s3://{BUCKET}/{key}")));
    assert_eq!(item["status"], V::S("applied".into()));
    assert_eq!(item["key"], V::S(key.into()));
    assert!(item.contains_key("finished_at"), "{item:?}");
    assert!(!item.contains_key("lease_until"), "the claim is released: {item:?}");
    let counts: Value = serde_json::from_str(item["counts"].as_s().unwrap()).unwrap();
    assert_eq!(counts["upserted"], 1);

    // The same notification again, to the other worker: the ledger, not its own (empty)
    // data dir, makes it a no-op — it does not even read the object.
    aws.sqs.send_message().queue_url(&aws.queue).message_body(&body).send().await.unwrap();
    let r = aws.worker(&b);
    assert_eq!((r["MessagesFailed"].as_f64(), r["DocumentsUpserted"].as_f64()), (Some(0.0), Some(0.0)), "{r}");
    assert!(!found(&b, "vpn tokens network team", "doc:docs/guides/vpn guide.md"));
    // reconcile from that worker agrees: the object is known to the ledger.
    let out = aws.cmd(&b).args(["reconcile", "--bucket", BUCKET, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((s["objects"].as_u64(), s["already_applied"].as_u64()), (Some(0), Some(1)), "{s}");

    // A removed object's versions are no longer "applied": the same bytes uploaded again are
    // applied again.
    aws.s3.delete_object().bucket(BUCKET).key(key).send().await.unwrap();
    let r = aws.worker(&a);
    assert_eq!(r["DocumentsDeleted"].as_f64(), Some(1.0), "{r}");
    let item = ddb.scan().table_name("askiam-ledger").send().await.unwrap().items.unwrap().remove(0);
    assert_eq!(item["status"], V::S("removed".into()));
    aws.put(key, b"# VPN access\n\nThe network team grants VPN tokens.\n".to_vec()).await;
    let r = aws.worker(&a);
    assert_eq!(r["DocumentsUpserted"].as_f64(), Some(1.0), "{r}");
    assert!(found(&a, "vpn tokens network team", "doc:docs/guides/vpn guide.md"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_claims_are_conditional_writes_with_a_lease() {
    use askiam::ingest::ledger::{Claim, DynamoLedger, S3Object};
    use std::time::Duration;
    let mut aws = aws().await;
    let ledger = DynamoLedger::with_client(aws.create_ledger("claims").await, "claims");
    let o = S3Object { bucket: BUCKET, key: "docs/a.md", etag: "e1", sequencer: Some("0055") };
    assert_eq!(ledger.claim(&o, Duration::from_secs(60)).await.unwrap(), Claim::Mine);
    let items = aws.dynamodb().scan().table_name("claims").send().await.unwrap().items.unwrap();
    assert_eq!(items[0]["sequencer"].as_s().unwrap(), "0055");
    assert_eq!(items[0]["status"].as_s().unwrap(), "in_progress");
    // A second worker given the same message meanwhile is turned away.
    assert!(matches!(ledger.claim(&o, Duration::from_secs(60)).await.unwrap(), Claim::Busy(_)));
    // A failure releases the claim at once.
    ledger.failed(&o, "boom").await.unwrap();
    assert_eq!(ledger.claim(&o, Duration::from_secs(60)).await.unwrap(), Claim::Mine);
    ledger.applied(&o, &serde_json::json!({"upserted": 1})).await.unwrap();
    assert_eq!(ledger.claim(&o, Duration::from_secs(60)).await.unwrap(), Claim::Applied);
    // Another version of the key is its own item.
    let o2 = S3Object { etag: "e2", ..o.clone() };
    assert_eq!(ledger.claim(&o2, Duration::from_millis(1)).await.unwrap(), Claim::Mine);
    // A claim whose holder died (lease over) is taken over.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(ledger.claim(&o2, Duration::from_secs(60)).await.unwrap(), Claim::Mine);
    // An object deleted before it was read is released, not applied.
    ledger.gone(&o2).await.unwrap();
    assert_eq!(ledger.claim(&o2, Duration::from_secs(60)).await.unwrap(), Claim::Mine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_put_event_for_a_deleted_object_does_not_block_its_reupload() {
    use askiam::ingest::ledger::DynamoLedger;
    use askiam::ingest::worker::Message;
    let mut aws = aws().await;
    let ledger = DynamoLedger::with_client(aws.create_ledger("late").await, "late");
    let a = Askiam::new();
    let key = "docs/guides/vpn.md";
    let body = b"# VPN access\n\nThe network team grants VPN tokens.\n".to_vec();
    aws.put(key, body.clone()).await;
    aws.s3.delete_object().bucket(BUCKET).key(key).send().await.unwrap();
    let msgs: Vec<Message> = aws
        .peek()
        .await
        .into_iter()
        .filter(|b| b.contains("vpn.md"))
        .enumerate()
        .map(|(i, body)| Message { id: format!("m{i}"), body })
        .collect();
    let (put, delete): (Vec<_>, Vec<_>) = msgs.into_iter().partition(|m| m.body.contains("ObjectCreated"));
    assert_eq!((put.len(), delete.len()), (1, 1));

    let (w, worker) = aws.in_process(&a, Some(ledger)).await;
    // The delete arrives first, the put's notification late: the object is gone by then.
    worker.process(&delete).await;
    let (out, _) = worker.process(&put).await;
    assert_eq!(out, vec![askiam::ingest::worker::Outcome::Done]);
    // The same bytes uploaded again are read and indexed, not taken for already applied.
    aws.put(key, body).await;
    let again: Vec<Message> = aws
        .peek()
        .await
        .into_iter()
        .filter(|b| b.contains("vpn.md") && b.contains("ObjectCreated"))
        .map(|body| Message { id: "m9".into(), body })
        .collect();
    let (_, report) = worker.process(&again).await;
    assert_eq!(report.summary.upserted, 1, "{report:?}");
    drop(w);
    assert!(found(&a, "vpn tokens network team", "doc:docs/guides/vpn.md"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_parquet_change_files_in_the_bucket_are_applied() {
    use askiam::ingest::format::parquet::{write_dms_parquet, Kind};
    let aws = aws().await;
    let a = Askiam::new();
    a.ingest(&[&fixtures().join("exports/full")]);
    assert!(found(&a, "hr analyst", "role:ROLE-0008"));

    // What DMS writes for the roles table with DataFormat=parquet, snappy pages: a rename,
    // a new role and a delete.
    let columns = [
        ("Op", Kind::Text),
        ("commit_ts", Kind::Timestamp),
        ("id", Kind::Text),
        ("name", Kind::Text),
        ("application_id", Kind::Text),
        ("description", Kind::Text),
        ("risk_level", Kind::Text),
        ("requestable", Kind::Bool),
        ("approver_group_id", Kind::Text),
        ("updated_at", Kind::Timestamp),
    ];
    let t = "2026-11-25T10:15:00.000123Z";
    let row = |op, id, name, desc| {
        vec![
            Some(op),
            Some(t),
            Some(id),
            name,
            Some("APP-0001"),
            desc,
            Some("low"),
            Some("true"),
            Some("AG-001"),
            Some(t),
        ]
    };
    let rows = vec![
        row("U", "ROLE-0008", Some("People Insights Analyst"), Some("Read access to workforce dashboards.")),
        row("I", "ROLE-9001", Some("Badge Printer Operator"), Some("Prints visitor badges at reception desks.")),
        row("D", "ROLE-0001", None, None),
    ];
    let bytes = write_dms_parquet(&columns, &rows, parquet::basic::Compression::SNAPPY).unwrap();
    aws.put("exports/changes/dms/iam/roles/20261125-101500123.parquet", bytes).await;
    let r = aws.worker(&a);
    assert_eq!(r["MessagesFailed"], 0.0, "{r}");
    assert!(found(&a, "badge printer operator visitor badges", "role:ROLE-9001"));
    let hits = a.search("people insights analyst", &["--k", "10"]);
    let renamed = hits.iter().find(|h| h["id"] == "role:ROLE-0008").expect("the renamed role is found by its new name");
    assert_eq!(renamed["title"], "People Insights Analyst", "{renamed}");
    assert!(!found(&a, "workday viewer", "role:ROLE-0001"), "the deleted role is gone");

    // A Parquet object that is not Parquet fails its message with the reason — in JSON logs
    // (what CloudWatch gets) whose every line about an object names its key.
    let bad_key = "exports/changes/dms/iam/roles/20261125-999.parquet";
    aws.put(bad_key, b"Op,id\nI,R1\n".to_vec()).await;
    let out = aws
        .cmd(&a)
        .env("ASKIAM_LOG_FORMAT", "json")
        .env("ASKIAM_LOG", "askiam=debug")
        .args(["worker", "--queue-url", &aws.queue, "--once"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    let lines: Vec<Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let about_object: Vec<&Value> = lines.iter().filter(|l| l["spans"].is_array()).collect();
    assert!(about_object.len() >= 2, "{log}");
    for l in &about_object {
        assert_eq!(l["span"]["key"], bad_key, "{l}");
    }
    assert!(
        about_object
            .iter()
            .any(|l| l["fields"]["reason"].as_str().unwrap_or("").contains("not a readable Parquet file")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_follows_the_queue_and_stops_cleanly_on_sigterm() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let aws = aws().await;
    let a = Askiam::new();
    let mut child = aws
        .cmd(&a)
        .env("ASKIAM_LOG", "askiam=info")
        .args(["worker", "--queue-url", &aws.queue])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    aws.put("docs/guides/ok.md", b"# Badge access\n\nBadges are issued by facilities.\n".to_vec()).await;
    support::wait_for("the poller to index the object", Duration::from_secs(60), || {
        found(&a, "badge access facilities", "doc:docs/guides/ok.md").then_some(())
    });
    // Now idle in a 20-second long poll: SIGTERM must end it without waiting that out.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = support::wait_for("the poller to exit", Duration::from_secs(15), || child.try_wait().unwrap());
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(log.contains("shutting down between batches"), "{log}");
    assert_eq!(aws.depth(&aws.queue).await, 0, "the applied message was deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versioned_bucket_is_read_at_the_events_version() {
    use askiam::ingest::worker::Message;
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let aws = aws().await;
    let a = Askiam::new();
    aws.s3
        .put_bucket_versioning()
        .bucket(BUCKET)
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .send()
        .await
        .unwrap();
    let key = "docs/guides/badges.md";
    aws.put(key, b"# Badge access\n\nBadges are issued by the facilities team.\n".to_vec()).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    aws.put(key, b"# Badge access\n\nBadges are now issued by the security desk.\n".to_vec()).await;
    // Real S3 puts the object's versionId into the notification of a versioned bucket; moto
    // leaves it out, so add it as S3 would (matched by ETag).
    let versions = aws.s3.list_object_versions().bucket(BUCKET).prefix(key).send().await.unwrap();
    let mut bodies: Vec<String> = aws
        .peek()
        .await
        .into_iter()
        .filter(|b| b.contains("badges.md"))
        .map(|b| {
            let mut v: Value = serde_json::from_str(&b).unwrap();
            let object = &mut v["Records"][0]["s3"]["object"];
            let etag = object["eTag"].as_str().unwrap().to_string();
            let version = versions.versions().iter().find(|x| x.e_tag().unwrap().trim_matches('"') == etag).unwrap();
            object["versionId"] = version.version_id().unwrap().into();
            v.to_string()
        })
        .collect();
    assert_eq!(bodies.len(), 2);
    bodies.sort_by_key(|b| serde_json::from_str::<Value>(b).unwrap()["Records"][0]["eventTime"].to_string());
    let (first, second) =
        (Message { id: "m1".into(), body: bodies[0].clone() }, Message { id: "m2".into(), body: bodies[1].clone() });

    let (_w, worker) = aws.in_process(&a, None).await;
    let text = |a: &Askiam| {
        let hits = a.search("badge access", &["--k", "5"]);
        hits.iter().find(|h| h["id"] == format!("doc:{key}")).map(|h| h["text"].as_str().unwrap().to_string())
    };
    // The first event, handled after the second upload: the bytes of its own version.
    let (out, _) = worker.process(std::slice::from_ref(&first)).await;
    assert_eq!(out, vec![askiam::ingest::worker::Outcome::Done]);
    assert!(text(&a).unwrap().contains("facilities team"), "{:?}", text(&a));
    worker.process(std::slice::from_ref(&second)).await;
    assert!(text(&a).unwrap().contains("security desk"), "{:?}", text(&a));
    // The first event again, late: the newer version stays.
    let (_, report) = worker.process(std::slice::from_ref(&first)).await;
    assert_eq!(report.summary.upserted, 0, "{report:?}");
    assert!(text(&a).unwrap().contains("security desk"), "{:?}", text(&a));
}
