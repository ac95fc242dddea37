//! What a policy's permissions do, read from IAM policy documents: a rerank signal, and
//! which policies join the candidates (`retrieve::add_granting`).
//!
//! A question says what the job does ("redrive the dead-letter queue", "run one shell
//! command on 200 instances"); a policy's description seldom does, but its document grants
//! actions (`sqs:StartMessageMoveTask`, `ssm:SendCommand`) that the AWS Service Authorization
//! Reference describes in words. So the question is embedded against those descriptions
//! (21,184 actions, shipped with the binary; `scripts/aws-actions-catalogue` rebuilds the file
//! from the corpus), and a candidate whose document grants the nearest actions gains — the
//! less, the more actions it grants in all: a policy that allows `*` is evidence of nothing.
//!
//! The catalogue's vectors are computed once per embedding model and kept in the data dir's
//! `knowledge/` (about 55 s with the local model on 2 cores, 32 MB): by the ingest that writes
//! policy documents ([`prepare`]), else by the first search that meets one. A remote provider
//! (Bedrock, Ollama) computes them only at ingest — a metered 21k-text job would stall a query
//! for minutes. Any failure here leaves the ranking as it was.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use super::knowledge::{self, Texts};
use crate::embed::{EmbedError, Embedder};
use crate::index::Hit;

/// How many of the catalogue's actions nearest the question count as what it asks for.
const NEAREST: usize = 10;

/// How many policies' expansions [`Catalogue::granted_cached`] keeps (2.6 KB each): every AWS
/// managed policy, with room to spare.
const GRANTS_REMEMBERED: usize = 4096;

static CATALOGUE_GZ: &[u8] = include_bytes!("grants/aws_actions.tsv.gz");

/// The AWS actions, lower-cased (`sqs:startmessagemovetask`), with their descriptions.
pub struct Catalogue {
    actions: Vec<String>,
    texts: Vec<String>,
    by_prefix: HashMap<String, Vec<u32>>,
    /// Changes whenever the shipped file does, so stored vectors of an older one are not reused.
    hash: String,
}

impl Catalogue {
    fn parse(tsv: &str) -> Catalogue {
        let mut c =
            Catalogue { actions: Vec::new(), texts: Vec::new(), by_prefix: HashMap::new(), hash: String::new() };
        for line in tsv.lines() {
            let mut cols = line.splitn(3, '\t');
            let (Some(action), Some(service), Some(description)) = (cols.next(), cols.next(), cols.next()) else {
                continue;
            };
            let action = action.to_ascii_lowercase();
            let prefix = action.split(':').next().unwrap_or_default().to_string();
            c.by_prefix.entry(prefix).or_default().push(c.actions.len() as u32);
            c.actions.push(action);
            c.texts.push(format!("{service}: {description}"));
        }
        c.hash = crate::model::text_hash(tsv)[..12].to_string();
        c
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    fn texts(&self) -> Texts<'_> {
        Texts { name: "aws-actions", hash: &self.hash, texts: &self.texts }
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// [`Catalogue::granted`], remembered by the pattern list: expanding a policy's wildcards
    /// against every action of its services costs about 0.1 ms, and a search that meets
    /// policies expands a hundred or more, mostly the same ones as the search before.
    fn granted_cached(&self, patterns: &[String]) -> Arc<Granted> {
        static SEEN: LazyLock<Mutex<HashMap<u64, Arc<Granted>>>> = LazyLock::new(Default::default);
        let key = {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(patterns, &mut h);
            std::hash::Hasher::finish(&h)
        };
        if let Some(g) = SEEN.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return g.clone();
        }
        let g = Arc::new(self.granted(patterns));
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= GRANTS_REMEMBERED {
            seen.clear();
        }
        seen.insert(key, g.clone());
        g
    }

    /// The catalogue's actions an `Allow` list grants (`s3:Get*`, `ec2:*`, `*`).
    fn granted(&self, patterns: &[String]) -> Granted {
        let mut out = Granted(vec![0; self.actions.len().div_ceil(64)]);
        for p in patterns {
            let p = p.to_ascii_lowercase();
            if p == "*" {
                (0..self.actions.len() as u32).for_each(|i| out.insert(i));
                return out;
            }
            let prefix = p.split(':').next().unwrap_or_default();
            let all: Vec<u32>;
            let pool: &[u32] = if prefix.contains(['*', '?']) {
                all = (0..self.actions.len() as u32).collect();
                &all
            } else {
                self.by_prefix.get(prefix).map(Vec::as_slice).unwrap_or_default()
            };
            pool.iter().copied().filter(|&i| glob(&p, &self.actions[i as usize])).for_each(|i| out.insert(i));
        }
        out
    }
}

/// A set of catalogue actions, one bit each (2.6 KB), so that every policy's can be kept: a
/// hash set of the 21k actions a `*` policy grants takes a hundred times as much.
struct Granted(Vec<u64>);

impl Granted {
    fn insert(&mut self, i: u32) {
        self.0[i as usize / 64] |= 1 << (i % 64);
    }

    fn contains(&self, i: u32) -> bool {
        self.0.get(i as usize / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    fn is_superset(&self, other: &Granted) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & b == *b)
    }
}

/// IAM's action wildcards: `*` any run of characters, `?` one; both sides lower-cased.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

pub fn catalogue() -> &'static Catalogue {
    static CATALOGUE: LazyLock<Catalogue> = LazyLock::new(|| Catalogue::parse(&super::shipped_text(CATALOGUE_GZ)));
    &CATALOGUE
}

/// An IAM policy document: an object with a `Statement`, or the same as a JSON string.
fn policy_document(value: &serde_json::Value) -> Option<std::borrow::Cow<'_, serde_json::Value>> {
    let doc = match value {
        serde_json::Value::String(s) if s.contains("Statement") => {
            std::borrow::Cow::Owned(serde_json::from_str(s).ok()?)
        }
        v => std::borrow::Cow::Borrowed(v),
    };
    doc.get("Statement").is_some().then_some(doc)
}

/// Whether a record's metadata holds an IAM policy document (ingest asks, once per record).
pub fn has_policy_document(metadata: &serde_json::Map<String, serde_json::Value>) -> bool {
    metadata.values().any(|v| policy_document(v).is_some())
}

/// Calls `each` with every `Allow` statement of the IAM policy documents in a record's
/// metadata; false when it has none. (A search reads the documents of a hundred policies:
/// they are visited in place, not copied.)
fn allow_statements(
    metadata: &serde_json::Map<String, serde_json::Value>,
    mut each: impl FnMut(&serde_json::Value),
) -> bool {
    let mut any = false;
    for doc in metadata.values().filter_map(policy_document) {
        any = true;
        let statements = match &doc["Statement"] {
            serde_json::Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        statements
            .into_iter()
            .filter(|s| s.get("Effect").and_then(|e| e.as_str()) == Some("Allow"))
            .for_each(&mut each);
    }
    any
}

/// The `Allow` action patterns of every IAM policy document in a record's metadata; `None`
/// when it has none.
pub fn policy_actions(metadata: &serde_json::Map<String, serde_json::Value>) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let any = allow_statements(metadata, |s| match s.get("Action") {
        Some(serde_json::Value::String(a)) => out.push(a.clone()),
        Some(serde_json::Value::Array(items)) => {
            out.extend(items.iter().filter_map(|a| a.as_str()).map(str::to_string))
        }
        _ => {}
    });
    any.then_some(out)
}

/// How many actions a record's policy documents allow, per service prefix (`s3`, `ec2`):
/// wildcards expanded against the action catalogue, so `organizations:List*` outweighs five
/// named `account:` actions; a pattern whose service the catalogue lacks counts once. Empty
/// without a policy document.
pub fn actions_by_service(metadata: &serde_json::Map<String, serde_json::Value>) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let Some(patterns) = policy_actions(metadata) else { return counts };
    let c = catalogue();
    let granted = c.granted(&patterns);
    for (prefix, actions) in &c.by_prefix {
        let n = actions.iter().filter(|&&i| granted.contains(i)).count();
        if n > 0 {
            counts.insert(prefix.clone(), n);
        }
    }
    for p in &patterns {
        let prefix = p.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if !prefix.contains(['*', '?']) && !c.by_prefix.contains_key(&prefix) {
            *counts.entry(prefix).or_default() += 1;
        }
    }
    counts
}

/// Whether a record's policy documents allow everything but a few actions (`NotAction`).
pub fn allows_everything_but(metadata: &serde_json::Map<String, serde_json::Value>) -> bool {
    let mut found = false;
    allow_statements(metadata, |s| found |= s.get("NotAction").is_some());
    found
}

/// Computes (or finds) the catalogue's vectors for this model, with any provider: called by
/// ingestion when it has written policy documents, where bulk embedding is expected, so that
/// searches need not (and remote providers can use the signal at all).
pub async fn prepare(embedder: &dyn Embedder) -> Result<(), EmbedError> {
    knowledge::vectors(&catalogue().texts(), embedder, true).await.map(|_| ())
}

/// What a question asks to be allowed to do: the catalogue actions nearest to it, or the
/// ones it names outright.
pub struct Asked {
    nearest: Vec<(f32, u32)>,
    named: bool,
}

/// The catalogue actions a question names as `prefix:Action` (an AccessDenied message pasted
/// into the chat: "not authorized to perform: sqs:StartMessageMoveTask on resource …"). ARNs,
/// with more than one colon, are not actions.
pub fn actions_named(question: &str) -> Vec<u32> {
    let c = catalogue();
    let mut out = Vec::new();
    for token in question.split(|ch: char| !(ch.is_alphanumeric() || ch == ':' || ch == '-')) {
        let Some((prefix, _)) = token.split_once(':') else { continue };
        if token.matches(':').count() != 1 {
            continue;
        }
        let token = token.to_ascii_lowercase();
        let found = c
            .by_prefix
            .get(&prefix.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .find(|&&i| c.actions[i as usize] == token);
        if let Some(&i) = found.filter(|i| !out.contains(*i)) {
            out.push(i);
        }
    }
    out
}

impl Asked {
    /// `None` when the catalogue's vectors cannot be had for this model (logged) or the
    /// question was embedded by another.
    pub async fn of(embedder: &dyn Embedder, query: &[f32]) -> Option<Asked> {
        let vectors = knowledge::for_search(&catalogue().texts(), embedder, query.len()).await?;
        let mut sims: Vec<(f32, u32)> =
            vectors.similarities(query).into_iter().enumerate().map(|(i, s)| (s, i as u32)).collect();
        let n = NEAREST.min(sims.len());
        if n == 0 {
            return None;
        }
        sims.select_nth_unstable_by(n - 1, |a, b| b.0.total_cmp(&a.0));
        sims.truncate(n);
        Some(Asked { nearest: sims, named: false })
    }

    /// The actions a question names (see [`actions_named`]) instead of the nearest ones: the
    /// user pasted what was denied, so that is what is asked, exactly.
    pub fn naming(self, question: &str) -> Asked {
        let named = actions_named(question);
        if named.is_empty() {
            return self;
        }
        Asked { nearest: named.into_iter().map(|i| (1.0, i)).collect(), named: true }
    }

    /// Whether the question named the actions it asks for.
    pub fn is_named(&self) -> bool {
        self.named
    }

    /// How strongly a record's policy documents grant the asked actions: their similarity to
    /// the question, summed over the ones granted, divided by the square root of all actions
    /// granted (allowing everything is evidence of nothing). `None` without a policy document.
    pub fn strength(&self, metadata: &serde_json::Map<String, serde_json::Value>) -> Option<f32> {
        let granted = catalogue().granted_cached(&policy_actions(metadata)?);
        let sum = self.nearest.iter().filter(|(_, i)| granted.contains(*i)).fold(0.0, |sum, (s, _)| sum + s.max(0.0));
        Some(sum / (granted.len().max(1) as f32).sqrt())
    }

    /// A keyword query naming the services of the asked actions by prefix and name
    /// ("sqs Amazon SQS"): it finds those services' own policies ("AmazonSQSFullAccess"),
    /// whose boilerplate descriptions share no word with a question about redriving a queue.
    pub fn services(&self) -> String {
        let catalogue = catalogue();
        let mut names: Vec<&str> = Vec::new();
        for &(_, i) in &self.nearest {
            let prefix = catalogue.actions[i as usize].split(':').next().unwrap_or_default();
            let service = catalogue.texts[i as usize].split(": ").next().unwrap_or_default();
            for name in [prefix, service] {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.join(" ")
    }
}

/// For each hit, [`Asked::strength`] as a share of the strongest among these hits (0 for
/// hits without a policy document). `None` when no hit has one, or none grants an asked action.
pub fn evidence(asked: &Asked, hits: &[Hit]) -> Option<Vec<f32>> {
    let scores: Vec<Option<f32>> = hits.iter().map(|h| asked.strength(&h.metadata)).collect();
    if scores.iter().all(Option::is_none) {
        return None;
    }
    let max = scores.iter().flatten().copied().fold(0.0f32, f32::max);
    (max > 0.0).then(|| scores.iter().map(|s| s.unwrap_or(0.0) / max).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::InputKind;

    #[test]
    fn actions_are_named_by_prefix_and_name_not_by_arn() {
        let c = catalogue();
        let named = |q: &str| actions_named(q).into_iter().map(|i| c.actions[i as usize].clone()).collect::<Vec<_>>();
        assert_eq!(
            named("User: arn:aws:iam::123456789012:user/bob is not authorized to perform: sqs:StartMessageMoveTask on resource: arn:aws:sqs:us-east-1:1:q"),
            ["sqs:startmessagemovetask"]
        );
        assert_eq!(
            named("ssm:sendcommand and SSM:SendCommand, then ecr:InitiateLayerUpload."),
            ["ssm:sendcommand", "ecr:initiatelayerupload"]
        );
        assert!(named("at 10:30 we hit s3:NoSuchAction and nosuchservice:Get").is_empty());
    }

    #[test]
    fn iam_wildcards_match_like_iam() {
        assert!(glob("s3:get*", "s3:getobject"));
        assert!(glob("s3:*object*", "s3:putobjectacl"));
        assert!(glob("ec2:describe?pcs", "ec2:describevpcs"));
        assert!(!glob("s3:get*", "s3:putobject"));
        assert!(!glob("s3:getobject", "s3:getobjectacl"));
        assert!(glob("*", "anything:atall"));
    }

    #[test]
    fn the_shipped_catalogue_expands_policy_patterns() {
        let c = catalogue();
        assert!(c.len() > 20_000, "{}", c.len());
        let sqs_all = c.granted(&["sqs:*".into()]);
        let one = c.granted(&["SQS:StartMessageMoveTask".into()]);
        assert_eq!(one.len(), 1);
        assert!(sqs_all.is_superset(&one) && sqs_all.len() > 10);
        assert_eq!(c.granted(&["*".into()]).len(), c.len());
        assert!(c.granted(&["nosuchservice:*".into()]).is_empty());
        let patterns = ["sqs:*".to_string(), "s3:Get*".to_string()];
        let kept = c.granted_cached(&patterns);
        assert_eq!(kept.len(), c.granted(&patterns).len());
        assert!(Arc::ptr_eq(&kept, &c.granted_cached(&patterns)), "expanded once");
    }

    fn policy(id: &str, actions: serde_json::Value) -> Hit {
        let mut metadata = serde_json::Map::new();
        let doc = serde_json::json!({"Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]});
        metadata.insert("document".into(), doc);
        Hit {
            id: id.into(),
            title: id.into(),
            kind: "record".into(),
            source: "policies.jsonl".into(),
            score: 0.1,
            version: "1".into(),
            indexed_at: chrono::Utc::now(),
            chunk_id: format!("{id}#0"),
            heading: None,
            text: "Provides access to Amazon SQS.".into(),
            metadata,
        }
    }

    #[tokio::test]
    async fn the_policy_that_grants_what_the_question_asks_for_gains_most() {
        let embedder = crate::embed::hash::HashEmbedder::new(256);
        // The hashing embedder matches words, so the question uses the catalogue's.
        let question = "Amazon SQS: start a message move task";
        let q = embedder.embed(&[question.into()], InputKind::Query).await.unwrap().pop().unwrap();
        let mut plain = policy("NoDocument", serde_json::json!([]));
        plain.metadata.clear();
        let hits = vec![
            policy("SendOnly", serde_json::json!(["sqs:SendMessage"])),
            policy("Redrive", serde_json::json!(["sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks"])),
            policy("AllOfSqs", serde_json::json!("sqs:*")),
            policy("Everything", serde_json::json!("*")),
            plain,
        ];
        let asked = Asked::of(&embedder, &q).await.expect("the catalogue embeds");
        let g = evidence(&asked, &hits).expect("policy documents found");
        assert_eq!(g[1], 1.0, "{g:?}");
        assert!(g[0] < 0.5, "{g:?}");
        assert!(g[2] > 0.0 && g[2] < g[1], "a broader grant counts for less: {g:?}");
        assert!(g[3] < g[2], "allowing everything is evidence of nothing: {g:?}");
        assert_eq!(g[4], 0.0);
        // Without any policy document there is nothing to say.
        assert!(evidence(&asked, &hits[4..]).is_none());
        assert!(asked.services().starts_with("sqs Amazon SQS"), "{}", asked.services());
    }

    /// A provider that is not in-process (as Bedrock or Ollama), over the hashing embedder.
    struct Remote(crate::embed::hash::HashEmbedder);

    #[async_trait::async_trait]
    impl Embedder for Remote {
        fn model_id(&self) -> &str {
            "remote-for-tests"
        }
        fn dims(&self) -> usize {
            self.0.dims()
        }
        fn max_tokens(&self) -> usize {
            self.0.max_tokens()
        }
        fn count_tokens(&self, text: &str) -> usize {
            self.0.count_tokens(text)
        }
        async fn embed(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0.embed(texts, kind).await
        }
    }

    #[tokio::test]
    async fn a_remote_provider_embeds_the_catalogue_only_when_ingest_prepares_it() {
        let remote = Remote(crate::embed::hash::HashEmbedder::new(64));
        let q = remote.embed(&["Amazon SQS: start a message move task".into()], InputKind::Query).await.unwrap();
        let hits = vec![policy("Redrive", serde_json::json!(["sqs:StartMessageMoveTask"]))];
        assert!(Asked::of(&remote, &q[0]).await.is_none(), "no search-time bulk job on a remote provider");
        prepare(&remote).await.unwrap();
        let asked = Asked::of(&remote, &q[0]).await.expect("prepared");
        assert_eq!(evidence(&asked, &hits), Some(vec![1.0]));
    }

    #[test]
    fn policy_documents_are_found_in_metadata_as_objects_or_strings() {
        let doc = serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["sqs:*", "kms:Decrypt"], "Resource": "*"},
            {"Effect": "Deny", "Action": "sqs:DeleteQueue", "Resource": "*"},
            {"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"}]});
        let mut meta = serde_json::Map::new();
        meta.insert("document".into(), doc.clone());
        assert_eq!(policy_actions(&meta).unwrap(), vec!["sqs:*", "kms:Decrypt", "logs:PutLogEvents"]);
        let mut as_text = serde_json::Map::new();
        as_text.insert("policy".into(), serde_json::Value::String(doc.to_string()));
        assert_eq!(policy_actions(&as_text).unwrap().len(), 3);
        let mut none = serde_json::Map::new();
        none.insert("stage".into(), "GA".into());
        assert_eq!(policy_actions(&none), None);
        assert!(has_policy_document(&meta) && has_policy_document(&as_text) && !has_policy_document(&none));
    }
}
