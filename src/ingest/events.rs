//! S3 object events as they reach the worker: SQS message bodies carrying S3 event
//! notifications (direct, or wrapped by SNS), or S3 events delivered through EventBridge.
//!
//! Each becomes an `ObjectEvent`: which bucket and key (URL-decoded: S3 notifications encode
//! keys, `+` standing for a space), put or removed, and the version an event stands for —
//! its time, with S3's per-key `sequencer` breaking ties, so that a late older event never
//! undoes a newer one.

use chrono::{DateTime, Utc};

use crate::model::Version;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("unrecognised message: {0}")]
    Unknown(String),
    #[error("S3 event record {index}: {reason}")]
    BadRecord { index: usize, reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `ObjectCreated:*` (Put, Post, Copy, CompleteMultipartUpload) / "Object Created".
    Put,
    /// `ObjectRemoved:*` (Delete, DeleteMarkerCreated) / "Object Deleted".
    Remove,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObjectEvent {
    pub bucket: String,
    /// The object key, decoded.
    pub key: String,
    pub action: Action,
    pub version_id: Option<String>,
    pub etag: Option<String>,
    pub sequencer: Option<String>,
    pub size: Option<i64>,
    pub time: DateTime<Utc>,
}

impl ObjectEvent {
    /// The version documents read from (or removed by) this event carry.
    pub fn version(&self) -> Version {
        Version::from_time(self.time, self.sequencer.as_deref().map(sequencer_value).unwrap_or(0))
    }
}

/// S3 sequencers are hex strings of varying length, ordered as if right-padded with zeros:
/// read the first 32 digits that way.
pub fn sequencer_value(seq: &str) -> u128 {
    let digits: String = seq.chars().filter(|c| c.is_ascii_hexdigit()).take(32).collect();
    let padded = format!("{digits:0<32}");
    u128::from_str_radix(&padded, 16).unwrap_or(0)
}

/// What a message asked for.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Events(Vec<ObjectEvent>),
    /// Nothing to do (S3's `s3:TestEvent` when a notification is configured).
    Ignore(&'static str),
}

/// Keys in S3 notifications are URL-encoded the way forms are: `+` is a space.
pub fn decode_key(raw: &str) -> String {
    let plus = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

pub fn parse_message(body: &str) -> Result<Parsed, EventError> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    parse_value(&v, 0)
}

fn parse_value(v: &serde_json::Value, depth: u8) -> Result<Parsed, EventError> {
    if v.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Parsed::Ignore("s3:TestEvent"));
    }
    if v.get("Records").is_some() {
        return s3_notification(v);
    }
    // SNS → SQS: the notification is the string in `Message`.
    if v.get("Type").and_then(|t| t.as_str()) == Some("Notification") && depth == 0 {
        let inner = v.get("Message").and_then(|m| m.as_str()).unwrap_or("");
        let inner: serde_json::Value =
            serde_json::from_str(inner).map_err(|e| EventError::NotJson(format!("SNS Message: {e}")))?;
        return parse_value(&inner, depth + 1);
    }
    if v.get("source").and_then(|s| s.as_str()) == Some("aws.s3") && v.get("detail-type").is_some() {
        return eventbridge(v);
    }
    let shape: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).take(6).collect()).unwrap_or_default();
    Err(EventError::Unknown(format!(
        "neither an S3 event notification nor an EventBridge S3 event (fields: {shape:?})"
    )))
}

/// Read by hand rather than through a typed struct: producers (S3, MinIO, moto) differ in
/// optional fields, and only these few matter.
fn s3_notification(v: &serde_json::Value) -> Result<Parsed, EventError> {
    let records = v["Records"].as_array().ok_or_else(|| EventError::Unknown("Records is not a list".into()))?;
    let text = |x: &serde_json::Value| x.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let mut out = Vec::new();
    for (index, r) in records.iter().enumerate() {
        let bad = |reason: &str| EventError::BadRecord { index, reason: reason.to_string() };
        let name = r["eventName"].as_str().unwrap_or("");
        let action = if name.starts_with("ObjectCreated:") {
            Action::Put
        } else if name.starts_with("ObjectRemoved:") {
            Action::Remove
        } else {
            // Restore, replication, lifecycle transitions: nothing the index cares about.
            continue;
        };
        let object = &r["s3"]["object"];
        // S3 writes RFC 3339 with `Z`; some stand-ins leave the zone out (it is UTC).
        let time =
            r["eventTime"].as_str().and_then(crate::model::parse_timestamp).ok_or_else(|| bad("no eventTime"))?;
        out.push(ObjectEvent {
            bucket: text(&r["s3"]["bucket"]["name"]).ok_or_else(|| bad("no bucket name"))?,
            key: text(&object["key"]).map(|k| decode_key(&k)).ok_or_else(|| bad("no object key"))?,
            action,
            version_id: text(&object["versionId"]).filter(|v| v != "null"),
            etag: text(&object["eTag"]),
            sequencer: text(&object["sequencer"]),
            size: object["size"].as_i64(),
            time,
        });
    }
    Ok(Parsed::Events(out))
}

fn eventbridge(v: &serde_json::Value) -> Result<Parsed, EventError> {
    let bad = |reason: &str| EventError::BadRecord { index: 0, reason: reason.to_string() };
    let action = match v["detail-type"].as_str().unwrap_or("") {
        "Object Created" => Action::Put,
        "Object Deleted" => Action::Remove,
        _ => return Ok(Parsed::Events(vec![])),
    };
    let d = &v["detail"];
    let text = |x: &serde_json::Value| x.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let time = v["time"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
    Ok(Parsed::Events(vec![ObjectEvent {
        bucket: text(&d["bucket"]["name"]).ok_or_else(|| bad("no bucket name"))?,
        // EventBridge carries keys URL-encoded as notifications do.
        key: text(&d["object"]["key"]).map(|k| decode_key(&k)).ok_or_else(|| bad("no object key"))?,
        action,
        version_id: text(&d["object"]["version-id"]),
        etag: text(&d["object"]["etag"]),
        sequencer: text(&d["object"]["sequencer"]),
        size: d["object"]["size"].as_i64(),
        time: time.ok_or_else(|| bad("no event time"))?,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(name: &str, key: &str, seq: &str) -> String {
        serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-25T10:00:00.000Z", "eventName": name,
            "userIdentity": {"principalId": "A"}, "requestParameters": {"sourceIPAddress": "1.2.3.4"},
            "responseElements": {}, "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
                "bucket": {"name": "iam-exports", "ownerIdentity": {"principalId": "A"}, "arn": "arn:aws:s3:::iam-exports"},
                "object": {"key": key, "size": 10, "eTag": "abc", "versionId": "v1", "sequencer": seq}}
        }]})
        .to_string()
    }

    #[test]
    fn notifications_decode_keys_and_actions() {
        let Parsed::Events(e) = parse_message(&notification(
            "ObjectCreated:Put",
            "docs/HR+policy%C3%A9+%282026%29.md",
            "0055AED6DCD90281E5",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(e[0].key, "docs/HR policyé (2026).md");
        assert_eq!(e[0].action, Action::Put);
        assert_eq!(e[0].version_id.as_deref(), Some("v1"));
        let Parsed::Events(e) =
            parse_message(&notification("ObjectRemoved:DeleteMarkerCreated", "docs/a.md", "1")).unwrap()
        else {
            panic!()
        };
        assert_eq!(e[0].action, Action::Remove);
    }

    #[test]
    fn test_events_are_ignored_and_unknown_shapes_are_errors() {
        let t = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-25T10:00:00.000Z","Bucket":"b","RequestId":"r","HostId":"h"}"#;
        assert_eq!(parse_message(t).unwrap(), Parsed::Ignore("s3:TestEvent"));
        assert!(matches!(parse_message("{\"hello\": 1}"), Err(EventError::Unknown(_))));
        assert!(matches!(parse_message("not json"), Err(EventError::NotJson(_))));
    }

    #[test]
    fn sns_wrapped_and_eventbridge_events() {
        let sns = serde_json::json!({"Type": "Notification", "Message": notification("ObjectCreated:Put", "docs/a.md", "01")}).to_string();
        assert!(matches!(parse_message(&sns).unwrap(), Parsed::Events(e) if e[0].key == "docs/a.md"));
        let eb = serde_json::json!({"version": "0", "id": "x", "detail-type": "Object Deleted", "source": "aws.s3",
            "account": "1", "time": "2026-11-25T10:00:01Z", "region": "us-east-1", "resources": [],
            "detail": {"version": "0", "bucket": {"name": "b"}, "object": {"key": "docs/b+c.md", "sequencer": "02"}, "reason": "DeleteObject"}})
        .to_string();
        let Parsed::Events(e) = parse_message(&eb).unwrap() else { panic!() };
        assert_eq!((e[0].action, e[0].key.as_str(), e[0].bucket.as_str()), (Action::Remove, "docs/b c.md", "b"));
    }

    #[test]
    fn sequencers_order_events_at_the_same_time() {
        assert!(sequencer_value("0055AED6DCD90281E5") < sequencer_value("0055AED6DCD90281E6"));
        // Shorter values compare as if right-padded.
        assert!(sequencer_value("0055AED6DCD9028") < sequencer_value("0055AED6DCD90281E5"));
        let a = parse_message(&notification("ObjectCreated:Put", "k", "0A")).unwrap();
        let b = parse_message(&notification("ObjectRemoved:Delete", "k", "0B")).unwrap();
        let (Parsed::Events(a), Parsed::Events(b)) = (a, b) else { panic!() };
        assert!(a[0].version() < b[0].version());
    }
}
