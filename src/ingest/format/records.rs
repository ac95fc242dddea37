//! Generic record collections: JSONL, one object a line, chosen fields become the text.
//!
//! `--id-field`, `--title-field` and repeated `--text-field` say which fields matter; every
//! other field is kept as metadata (filterable, and available to ranking). A hit carries the
//! record's own id (`roles/storage.objectViewer`), not one of ours, because that is what a user
//! of the collection knows it by.

use std::collections::HashMap;
use std::io::BufRead;

use super::text::split_to_budget;
use super::{problem, Lines};
use crate::ingest::quarantine::Problem;
use crate::model::{kind, text_hash, Chunk, Document, Version};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSpec {
    pub id_field: String,
    pub title_field: Option<String>,
    pub text_fields: Vec<String>,
}

pub struct RecordReader<'a, R> {
    lines: Lines<R>,
    settings: Settings<'a>,
}

/// Everything but the line source, so a line can be parsed while the source is borrowed.
struct Settings<'a> {
    spec: &'a RecordSpec,
    source: String,
    version: Version,
    max_tokens: usize,
    overlap: usize,
    count: &'a (dyn Fn(&str) -> usize + Sync),
}

impl<'a, R: BufRead> RecordReader<'a, R> {
    pub fn new(
        reader: R,
        spec: &'a RecordSpec,
        source: &str,
        version: Version,
        max_tokens: usize,
        overlap: usize,
        count: &'a (dyn Fn(&str) -> usize + Sync),
    ) -> Self {
        let settings = Settings { spec, source: source.into(), version, max_tokens, overlap, count };
        RecordReader { lines: Lines::new(reader), settings }
    }
}

impl Settings<'_> {
    fn document(&self, line: &str, n: u64) -> Result<Document, Problem> {
        let bad = |reason: String| problem(n, reason, line);
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let id = obj
            .get(&self.spec.id_field)
            .and_then(scalar_text)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| bad(format!("record has no {:?} value to use as its id", self.spec.id_field)))?;
        let title = self
            .spec
            .title_field
            .as_ref()
            .and_then(|f| obj.get(f))
            .and_then(scalar_text)
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| id.clone());
        // Field-aware: the first text field is prose and is embedded, together with a compact
        // summary of the others; the other fields in full (permission lists, often thousands
        // of identifiers) are found by keywords only, so they never drown the meaning.
        let mut fields = self.spec.text_fields.iter().filter_map(|f| obj.get(f).map(|v| (f, v)));
        let prose = fields.next().and_then(|(_, v)| field_text(v)).filter(|t| !t.trim().is_empty());
        let rest: Vec<(&String, &serde_json::Value)> = fields.collect();
        let count = self.count;
        // An identifier-like title (`AmazonS3ReadOnlyAccess`) is one opaque token to keyword
        // search and noise to an embedder; its words go along as the chunks' heading.
        let heading = humanize_identifier(&title);
        let overhead = count(&title) + heading.as_deref().map(count).unwrap_or(0) + 4;
        let budget = self.max_tokens.saturating_sub(overhead).max(16);
        let mut body = prose.unwrap_or_else(|| title.clone());
        for (name, value) in &rest {
            let room = budget.saturating_sub(count(&body) + 2);
            if let Some(summary) = summarize_identifiers(value, room, count) {
                body.push_str(&format!("\n\n{name}: {summary}"));
            }
        }
        let mut texts = split_to_budget(&body, budget, self.overlap.min(budget / 2), count)
            .into_iter()
            .map(|t| (t, false))
            .collect::<Vec<_>>();
        for (name, value) in &rest {
            if let Some(mut t) = field_text(value).filter(|t| !t.trim().is_empty()) {
                if let Some(words) = identifier_words(value) {
                    t.push_str(&format!("\n{words}"));
                }
                texts.push((format!("{name}: {t}"), true));
            }
        }
        // A record that reaches (nearly) every service is asked for in words no list holds
        // ("everything in the project", "all resources"); say so, for keyword search.
        let listed = listed_services(&rest);
        let reach = broad_reach(&rest, &listed, &obj);
        let family = if reach.is_some() { None } else { main_family(&listed, &obj) };
        let services = if reach.is_some() { Vec::new() } else { main_services(listed) };
        if let Some(reach) = reach {
            texts.push((broad_words(reach), true));
        }
        let chunks = texts
            .into_iter()
            .enumerate()
            .map(|(i, (text, keywords_only))| Chunk {
                id: format!("{id}#{i}-{}", &text_hash(&text)[..8]),
                ordinal: i as u32,
                heading: heading.clone(),
                text,
                keywords_only,
            })
            .collect();
        let mut metadata: serde_json::Map<String, serde_json::Value> =
            obj.into_iter().filter(|(k, _)| *k != self.spec.id_field && !self.spec.text_fields.contains(k)).collect();
        if reach.is_some() {
            metadata.entry(BROAD_KEY).or_insert(serde_json::Value::Bool(true));
        }
        if !services.is_empty() {
            metadata.entry(SERVICES_KEY).or_insert(services.into());
        }
        if let Some(family) = family {
            metadata.entry(FAMILY_KEY).or_insert(family.into());
        }
        Ok(Document {
            id,
            kind: kind::RECORD.into(),
            title,
            source: self.source.clone(),
            version: self.version,
            metadata,
            chunks,
        })
    }
}

/// The words of a CamelCase or dash/underscore identifier ("AmazonS3ReadOnlyAccess" →
/// "Amazon S3 Read Only Access"); `None` for text that already has spaces.
pub fn humanize_identifier(s: &str) -> Option<String> {
    if s.chars().any(char::is_whitespace) || s.len() < 4 {
        return None;
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if matches!(c, '-' | '_' | '.' | '/' | ':') {
            out.push(' ');
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let boundary = match prev {
            // aB, a1 → split; ABc → split before B when a lower-case letter follows (S3Read).
            Some(p) if p.is_lowercase() && (c.is_uppercase() || c.is_ascii_digit()) => true,
            Some(p) if (p.is_uppercase() || p.is_ascii_digit()) && c.is_uppercase() => {
                next.is_some_and(char::is_lowercase)
            }
            _ => false,
        };
        if boundary {
            out.push(' ');
        }
        out.push(c);
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    (words.len() > 1).then(|| words.join(" "))
}

/// What separates the parts of a permission identifier (GCP, AWS, Azure).
const IDENTIFIER_SEPARATORS: [char; 3] = ['.', ':', '/'];

/// The items of a non-empty list of permission identifiers; `None` for any other value.
fn identifier_list(v: &serde_json::Value) -> Option<Vec<&str>> {
    let items: Vec<&str> = v.as_array()?.iter().filter_map(|i| i.as_str()).collect();
    let identifiers = !items.is_empty() && items.iter().all(|i| !i.contains(' ') && i.contains(IDENTIFIER_SEPARATORS));
    identifiers.then_some(items)
}

/// A list of dotted, colon- or slash-separated identifiers (`storage.objects.get`,
/// `s3:GetObject`, `Microsoft.Storage/storageAccounts/read`) summarised by what they act on,
/// in words: "storage objects: get, list; storage buckets: get", largest groups first, within
/// `room` tokens. `None` for anything else.
pub fn summarize_identifiers(v: &serde_json::Value, room: usize, count: &dyn Fn(&str) -> usize) -> Option<String> {
    let items = identifier_list(v)?;
    if room < 8 {
        return None;
    }
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for item in items {
        let (subject, verb) = item.rsplit_once(IDENTIFIER_SEPARATORS).unwrap_or((item, ""));
        let subject = subject.split(IDENTIFIER_SEPARATORS).map(camel_words).collect::<Vec<_>>().join(" ");
        let verb = camel_words(verb);
        match groups.iter_mut().find(|(s, _)| *s == subject) {
            Some((_, verbs)) => verbs.push(verb),
            None => groups.push((subject, vec![verb])),
        }
    }
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    let mut out = String::new();
    for (subject, verbs) in groups {
        let part = format!("{subject}: {}", verbs.join(", "));
        let candidate = if out.is_empty() { part } else { format!("{out}; {part}") };
        if count(&candidate) > room {
            break;
        }
        out = candidate;
    }
    (!out.is_empty()).then_some(out)
}

/// From how many services on a record counts as broad: the catch-all roles (GCP's Viewer,
/// Editor and Owner reach 300+, AWS's ReadOnlyAccess 315, `*` all) stand far apart from the
/// rest (the next GCP role reaches 64).
const BROAD_SERVICES: usize = 100;

/// The services a broad record reaches (`usize::MAX` for all), `None` below [`BROAD_SERVICES`]:
/// the distinct services of its identifier lists (`storage` of `storage.objects.get`,
/// `Microsoft.Storage` of `Microsoft.Storage/storageAccounts/read`) and of its IAM policy
/// documents' actions, where `*` or an `Allow` of `NotAction` reaches everything, as does an
/// identifier whose service is `*`.
fn broad_reach(
    rest: &[(&String, &serde_json::Value)],
    listed: &HashMap<String, usize>,
    record: &serde_json::Map<String, serde_json::Value>,
) -> Option<usize> {
    // Azure grants every service as `*` (Owner, Contributor) or `*/read` (Reader).
    let any_service = |v: &serde_json::Value| {
        v.as_array().into_iter().flatten().filter_map(|i| i.as_str()).any(|i| service_of(i) == "*")
    };
    if rest.iter().any(|(_, v)| any_service(v)) {
        return Some(usize::MAX);
    }
    let mut services: std::collections::HashSet<String> = listed.keys().cloned().collect();
    if crate::query::grants::allows_everything_but(record) {
        return Some(usize::MAX);
    }
    for action in crate::query::grants::policy_actions(record).unwrap_or_default() {
        if action == "*" {
            return Some(usize::MAX);
        }
        services.insert(service_of(&action));
    }
    (services.len() >= BROAD_SERVICES).then_some(services.len())
}

/// The service part of a permission identifier, lower-cased.
fn service_of(identifier: &str) -> String {
    let cut = if identifier.contains('/') {
        '/'
    } else if identifier.contains(':') {
        ':'
    } else {
        '.'
    };
    identifier.split(cut).next().unwrap_or(identifier).to_ascii_lowercase()
}

/// The metadata key of the services a record's permission lists are mostly about.
pub const SERVICES_KEY: &str = "askiam_services";

/// How many services [`main_services`] names at most, and the share of the largest one's
/// permissions a service needs to be named beside it.
const MAIN_SERVICES: usize = 3;
const MAIN_SHARE: usize = 4;

/// How many identifiers of a record's identifier lists each service has, lower-cased as
/// [`service_of`] gives it: what [`broad_reach`] and [`main_services`] read.
fn listed_services(rest: &[(&String, &serde_json::Value)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for items in rest.iter().filter_map(|(_, v)| identifier_list(v)) {
        for i in items {
            *counts.entry(service_of(i)).or_default() += 1;
        }
    }
    counts
}

/// The services a record's identifier lists are mostly about (`healthcare` for a role with 40
/// `healthcare.*` permissions and one `resourcemanager.projects.get`), largest first: those
/// with at least a quarter as many identifiers as the largest, at most three. (Ingest asks
/// only for records that are not broad: a broad one is about everything.) Lower-cased, as
/// `query::services` keys them.
fn main_services(counts: HashMap<String, usize>) -> Vec<String> {
    let largest = counts.values().copied().max().unwrap_or(0);
    let mut main: Vec<(String, usize)> = counts.into_iter().filter(|(_, n)| n * MAIN_SHARE >= largest).collect();
    main.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    main.into_iter().take(MAIN_SERVICES).map(|(s, _)| s).collect()
}

/// The metadata key of the one service a record grants most of its permissions in: its
/// product family (`storage` for Storage Object Viewer, `organizations` for
/// `AWSOrganizationsReadOnlyAccess`). Retrieval lets a likely product's other levels join the
/// candidates by it ([`crate::index::Index::family`]).
pub const FAMILY_KEY: &str = "askiam_family";

/// The service most of a record's permissions belong to, counting its identifier lists and
/// the actions its IAM policy documents allow; ties go to the name first in order.
fn main_family(listed: &HashMap<String, usize>, record: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let mut counts = crate::query::grants::actions_by_service(record);
    for (service, n) in listed {
        *counts.entry(service.clone()).or_default() += n;
    }
    counts
        .into_iter()
        .filter(|(s, _)| s != "*")
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(s, _)| s)
}

/// The family ingest recorded for a record ([`FAMILY_KEY`]).
pub fn family_of(metadata: &serde_json::Map<String, serde_json::Value>) -> Option<&str> {
    metadata.get(FAMILY_KEY).and_then(|v| v.as_str())
}

/// The services ingest recorded for a record ([`SERVICES_KEY`]).
pub fn services_of(metadata: &serde_json::Map<String, serde_json::Value>) -> impl Iterator<Item = &str> {
    metadata.get(SERVICES_KEY).and_then(|v| v.as_array()).into_iter().flatten().filter_map(|v| v.as_str())
}

/// The metadata flag of a broad record (a record's own field of that name is kept as it is).
pub const BROAD_KEY: &str = "askiam_broad";

/// What a broad record's keyword-only chunk says, and what the query side searches for when a
/// question asks for everything (`retrieve::add_broad`).
pub const BROAD_WORDS: &str =
    "Broad access across all services and resources: everything in the project, account or organization.";

fn broad_words(reach: usize) -> String {
    let n = if reach == usize::MAX { "all".to_string() } else { reach.to_string() };
    format!("reach: {n} services. {BROAD_WORDS}")
}

/// Whether ingest marked a record broad.
pub fn is_broad(metadata: &serde_json::Map<String, serde_json::Value>) -> bool {
    metadata.get(BROAD_KEY).and_then(|v| v.as_bool()) == Some(true)
}

/// One identifier segment in lower-case words: `hmacKeys` → "hmac keys",
/// `ChangeResourceRecordSets` → "change resource record sets". A question says "HMAC keys",
/// never `hmacKeys`, and neither keyword search nor the embedder's word pieces split it.
fn camel_words(segment: &str) -> String {
    humanize_identifier(segment).unwrap_or_else(|| segment.to_string()).to_lowercase()
}

/// The words hidden in a list of identifiers' camel-case segments, each once
/// (`storage.hmacKeys.create`, `s3:GetObject` → "hmac keys get object"), so keyword search
/// finds what the identifiers name. `None` when the list has no such segments.
fn identifier_words(v: &serde_json::Value) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for item in v.as_array()?.iter().filter_map(|i| i.as_str()) {
        for segment in item.split(IDENTIFIER_SEPARATORS) {
            let words = camel_words(segment);
            if words.contains(' ') && seen.insert(segment) {
                out.push(words);
            }
        }
    }
    (!out.is_empty()).then(|| out.join(", "))
}

fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A field as text: lists are joined with ", ", nested objects written as JSON.
fn field_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::Array(items) => {
            Some(items.iter().filter_map(|i| scalar_text(i).or_else(|| field_text(i))).collect::<Vec<_>>().join(", "))
        }
        serde_json::Value::Object(_) => Some(v.to_string()),
        other => scalar_text(other),
    }
}

impl<R: BufRead> Iterator for RecordReader<'_, R> {
    type Item = std::io::Result<Result<Document, Problem>>;

    fn next(&mut self) -> Option<Self::Item> {
        let settings = &self.settings;
        self.lines.next_item(|line, n| settings.document(line, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::hash::estimate_tokens;

    #[test]
    fn identifiers_are_split_into_words() {
        assert_eq!(humanize_identifier("AmazonS3ReadOnlyAccess").as_deref(), Some("Amazon S3 Read Only Access"));
        assert_eq!(
            humanize_identifier("AWSLambdaBasicExecutionRole").as_deref(),
            Some("AWS Lambda Basic Execution Role")
        );
        assert_eq!(humanize_identifier("AdministratorAccess-Amplify").as_deref(), Some("Administrator Access Amplify"));
        assert_eq!(humanize_identifier("IAMFullAccess").as_deref(), Some("IAM Full Access"));
        assert_eq!(humanize_identifier("Storage Object Viewer"), None);
        assert_eq!(humanize_identifier("Jira"), None);
    }

    #[test]
    fn camel_case_identifiers_are_found_by_their_words() {
        let perms = serde_json::json!(["storage.hmacKeys.create", "storage.hmacKeys.list", "iam.roles.getIamPolicy"]);
        assert_eq!(identifier_words(&perms).as_deref(), Some("hmac keys, get iam policy"));
        let summary = summarize_identifiers(&perms, 100, &estimate_tokens).unwrap();
        assert_eq!(summary, "storage hmac keys: create, list; iam roles: get iam policy");
        assert_eq!(identifier_words(&serde_json::json!(["storage.objects.get"])), None);
        // Azure's provider operations are slash-separated.
        let azure =
            serde_json::json!(["Microsoft.Storage/storageAccounts/read", "Microsoft.Storage/storageAccounts/write"]);
        assert_eq!(
            summarize_identifiers(&azure, 100, &estimate_tokens).unwrap(),
            "microsoft storage storage accounts: read, write"
        );
    }

    #[test]
    fn records_keep_their_ids_text_fields_and_metadata() {
        let spec = RecordSpec {
            id_field: "id".into(),
            title_field: Some("title".into()),
            text_fields: vec!["description".into(), "permissions".into()],
        };
        let text = r#"{"id":"roles/storage.objectViewer","title":"Storage Object Viewer","description":"Read objects.","stage":"GA","permissions":["storage.objects.get","storage.objects.list"]}
{"title":"no id"}
"#;
        let out: Vec<_> =
            RecordReader::new(text.as_bytes(), &spec, "gcp_roles.jsonl", Version::new(1, 0), 256, 16, &estimate_tokens)
                .map(|r| r.unwrap())
                .collect();
        let d = out[0].as_ref().unwrap();
        assert_eq!(d.id, "roles/storage.objectViewer");
        assert_eq!(d.title, "Storage Object Viewer");
        assert!(d.chunks[0].text.starts_with("Read objects."));
        assert!(d.chunks[0].text.contains("permissions: storage objects: get, list"), "{:?}", d.chunks[0].text);
        assert!(!d.chunks[0].keywords_only);
        let last = d.chunks.last().unwrap();
        assert!(last.keywords_only);
        assert_eq!(last.text, "permissions: storage.objects.get, storage.objects.list");
        assert_eq!(d.metadata["stage"], "GA");
        assert!(!d.metadata.contains_key("permissions"));
        assert_eq!(out[1].as_ref().unwrap_err().line, Some(2));
    }

    #[test]
    fn a_record_is_about_the_services_most_of_its_permissions_name() {
        let list = |items: &[&str]| serde_json::json!(items);
        let name = "permissions".to_string();
        let run = ["run.services.get", "run.services.list", "run.jobs.run", "run.jobs.get", "run.jobs.list"];
        let perms = list(&[&run[..], &["storage.objects.get"]].concat());
        assert_eq!(main_services(listed_services(&[(&name, &perms)])), ["run"], "one is less than a quarter of five");
        let perms = list(&[&run[..4], &["storage.objects.get"]].concat());
        assert_eq!(main_services(listed_services(&[(&name, &perms)])), ["run", "storage"], "one is a quarter of four");
        let perms = list(&["storage.objects.get", "storage.objects.list", "Microsoft.Storage/storageAccounts/read"]);
        assert_eq!(main_services(listed_services(&[(&name, &perms)])), ["storage", "microsoft.storage"]);
        assert!(main_services(listed_services(&[(&name, &serde_json::json!("not a list"))])).is_empty());
    }

    #[test]
    fn a_record_belongs_to_the_family_of_the_service_it_grants_most_in() {
        let read = |spec: &RecordSpec, lines: &[serde_json::Value]| -> Vec<Document> {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            RecordReader::new(text.as_bytes(), spec, "x.jsonl", Version::new(1, 0), 256, 16, &estimate_tokens)
                .map(|r| r.unwrap().unwrap())
                .collect()
        };
        let gcp = RecordSpec {
            id_field: "id".into(),
            title_field: Some("title".into()),
            text_fields: vec!["description".into(), "permissions".into()],
        };
        let docs = read(
            &gcp,
            &[serde_json::json!({"id": "roles/storage.objectViewer", "description": "Read objects.",
                "permissions": ["resourcemanager.projects.get", "storage.objects.get", "storage.objects.list"]})],
        );
        assert_eq!(family_of(&docs[0].metadata), Some("storage"));
        // AWS: actions a wildcard allows count one by one, so two `organizations:` patterns
        // outweigh five named `account:` actions; a broad policy belongs to no family.
        let aws = RecordSpec { id_field: "name".into(), title_field: None, text_fields: vec!["description".into()] };
        let policy = |name: &str, actions: serde_json::Value| {
            serde_json::json!({"name": name, "description": "A policy.",
                "document": {"Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}})
        };
        let docs = read(
            &aws,
            &[
                policy(
                    "AWSOrganizationsReadOnlyAccess",
                    serde_json::json!([
                        "organizations:Describe*",
                        "organizations:List*",
                        "account:GetAlternateContact",
                        "account:GetContactInformation",
                        "account:ListRegions",
                        "account:GetRegionOptStatus",
                        "account:GetPrimaryEmail"
                    ]),
                ),
                policy("Unknown", serde_json::json!(["madeup:DoThing", "madeup:DoOther", "s3:GetObject"])),
                policy("AdministratorAccess", serde_json::json!("*")),
            ],
        );
        assert_eq!(family_of(&docs[0].metadata), Some("organizations"));
        assert_eq!(family_of(&docs[1].metadata), Some("madeup"), "services the catalogue lacks count by pattern");
        assert_eq!(family_of(&docs[2].metadata), None);
    }

    #[test]
    fn records_that_reach_every_service_say_so() {
        let gcp = RecordSpec {
            id_field: "id".into(),
            title_field: Some("title".into()),
            text_fields: vec!["description".into(), "permissions".into()],
        };
        let wide: Vec<String> = (0..120).map(|i| format!("service{i}.things.get")).collect();
        let narrow: Vec<String> = (0..99).map(|i| format!("service{i}.things.get")).collect();
        let text = format!(
            "{}\n{}\n",
            serde_json::json!({"id": "roles/viewer", "title": "Viewer", "description": "View most resources.", "permissions": wide}),
            serde_json::json!({"id": "roles/wide", "title": "Wide", "description": "Almost.", "permissions": narrow}),
        );
        let docs: Vec<Document> =
            RecordReader::new(text.as_bytes(), &gcp, "gcp.jsonl", Version::new(1, 0), 256, 16, &estimate_tokens)
                .map(|r| r.unwrap().unwrap())
                .collect();
        let last = docs[0].chunks.last().unwrap();
        assert!(last.keywords_only && last.text == format!("reach: 120 services. {BROAD_WORDS}"), "{:?}", last.text);
        assert!(is_broad(&docs[0].metadata));
        assert!(!is_broad(&docs[1].metadata) && !docs[1].chunks.iter().any(|c| c.text.contains(BROAD_WORDS)));

        // AWS: the services of a policy document's actions; `*` and `NotAction` reach all.
        let aws = RecordSpec { id_field: "name".into(), title_field: None, text_fields: vec!["description".into()] };
        let policy = |name: &str, statement: serde_json::Value| serde_json::json!({"name": name, "description": "A policy.", "document": {"Statement": [statement]}});
        let text = format!(
            "{}\n{}\n{}\n",
            policy("AdministratorAccess", serde_json::json!({"Effect": "Allow", "Action": "*", "Resource": "*"})),
            policy(
                "PowerUserAccess",
                serde_json::json!({"Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*"})
            ),
            policy("AmazonS3FullAccess", serde_json::json!({"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"})),
        );
        let docs: Vec<Document> =
            RecordReader::new(text.as_bytes(), &aws, "aws.jsonl", Version::new(1, 0), 256, 16, &estimate_tokens)
                .map(|r| r.unwrap().unwrap())
                .collect();
        assert!(is_broad(&docs[0].metadata) && is_broad(&docs[1].metadata) && !is_broad(&docs[2].metadata));
        assert!(docs[0].chunks.last().unwrap().text.starts_with("reach: all services."));

        // Azure: a wildcard service in an allow list reaches all.
        let azure = RecordSpec {
            id_field: "id".into(),
            title_field: Some("name".into()),
            text_fields: vec!["description".into(), "actions".into()],
        };
        let role = |name: &str, actions: serde_json::Value| serde_json::json!({"id": name, "name": name, "description": "A role.", "actions": actions});
        let text = format!(
            "{}\n{}\n{}\n",
            role("Owner", serde_json::json!(["*"])),
            role("Reader", serde_json::json!(["*/read"])),
            role("Storage Account Contributor", serde_json::json!(["Microsoft.Storage/storageAccounts/*"])),
        );
        let docs: Vec<Document> =
            RecordReader::new(text.as_bytes(), &azure, "azure.jsonl", Version::new(1, 0), 256, 16, &estimate_tokens)
                .map(|r| r.unwrap().unwrap())
                .collect();
        assert!(is_broad(&docs[0].metadata) && is_broad(&docs[1].metadata) && !is_broad(&docs[2].metadata));
    }
}
