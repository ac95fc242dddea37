//! Hybrid retrieval: the question embedded as a query, keyword + vector search fused by the
//! index, the policies that grant what the question asks added to the candidates (and the
//! catch-all roles, when it asks for everything), then one index-independent rerank of them:
//! priors (roles no person requests, breadth), what a policy document's actions do
//! (`grants`), and above all documents whose title the question names.
//!
//! People ask about things by name ("payroll administrator", "I need the HR Analyst role");
//! a document *about* that thing should outrank documents that merely mention it (an SoD rule
//! naming the role, a policy listing it). Fusion scores alone can't tell the two apart, so a
//! document whose whole title appears in the question gets a bonus worth one first place in
//! the fused list, scaled by how much of the question its title covers. This lives here, not
//! in the index, so that every index implementation ranks alike.

use std::collections::{HashMap, HashSet};

use super::{english, grants, notes, products, services};
use crate::embed::{EmbedError, Embedder, InputKind};
use crate::index::{spelling, Hit, Index, IndexError, SearchRequest};
use crate::ingest::format::records;

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub kinds: Vec<String>,
    pub application: Option<String>,
}

/// The bonus for a title fully named by the question: a first place in both ranked lists of
/// reciprocal-rank fusion (k = 60) at the default weights (keyword 1 + vector 3).
const TITLE_BONUS: f32 = 4.0 / 61.0;

/// How many fused candidates the rerank sees, however many hits are asked for (more when
/// more are asked). A fixed pool keeps rankings prefix-stable: the first five hits of a
/// 20-hit search are those of a 5-hit search, and `eval`, which fetches 10, measures what
/// `search` and `/chat` show. Chosen on the tuning sets (20, 40, 60 tried: 20 loses 3 GCP
/// dev2 questions and 1 AWS dev, 60 a catch-all question).
const CANDIDATES: usize = 40;

const STOP: &[&str] = &[
    "a",
    "an",
    "the",
    "to",
    "of",
    "for",
    "i",
    "me",
    "my",
    "we",
    "our",
    "need",
    "needs",
    "want",
    "get",
    "give",
    "access",
    "role",
    "roles",
    "who",
    "what",
    "which",
    "how",
    "do",
    "does",
    "is",
    "are",
    "can",
    "in",
    "on",
    "and",
    "or",
    "with",
    "please",
    "request",
    "requesting",
    "approves",
    "approve",
];

/// Content words, lower-cased, a plural `s` dropped ("administrators" names "Administrator").
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP.contains(w))
        .map(|w| w.strip_suffix('s').filter(|s| s.len() > 2 && !s.ends_with('s')).unwrap_or(w).to_string())
        .collect()
}

/// 0 unless every content word of `title` is in the question; then the share of the
/// question's content words the title accounts for.
pub fn title_coverage(question: &[String], title: &str) -> f32 {
    let q: HashSet<&str> = question.iter().map(String::as_str).collect();
    let t: HashSet<String> = words(title).into_iter().collect();
    if t.is_empty() || q.is_empty() || !t.iter().all(|w| q.contains(w.as_str())) {
        return 0.0;
    }
    (t.len() as f32 / q.len() as f32).min(1.0)
}

/// Weight of [`title_words_named`]: a document whose every title word the question names
/// scores up to twice as high. Chosen on the dev halves (0.3, 0.6, 1, 1.5, 2.5 tried).
const TITLE_WORDS: f32 = 1.0;

/// The share of a title's words (identifier titles split into words) that the question
/// names, counting the catalogue words its everyday words expand to: "files in a GCS
/// bucket, read only" names all of "Storage Object Viewer" and one word of "File Viewer".
/// Unlike [`title_coverage`] a partial match counts, so the product a question is about
/// keeps its roles ahead of other products' roles that share only the verb ("read-only").
pub fn title_words_named(expanded_question: &HashSet<String>, title: &str) -> f32 {
    let human = crate::ingest::format::records::humanize_identifier(title);
    let t = words(human.as_deref().unwrap_or(title));
    if t.is_empty() {
        return 0.0;
    }
    t.iter().filter(|w| expanded_question.contains(w.as_str())).count() as f32 / t.len() as f32
}

/// The words a question names titles with: its content words and each adjacent pair written
/// as one, the way product titles spell them ("API gateway" names "ApiGateway Admin", "crypto
/// key" names "CryptoKey Encrypter").
fn title_vocabulary(text: &str) -> HashSet<String> {
    let mut out: HashSet<String> = HashSet::new();
    let mut previous: Option<String> = None;
    for w in text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        if let Some(p) = &previous {
            out.extend(words(&format!("{p}{w}")));
        }
        out.extend(words(w));
        previous = Some(w.to_string());
    }
    out
}

/// Weight of [`grants::evidence`]: the candidate whose policy document best grants what the
/// question asks for scores up to 1.5 times as high. Chosen on dev + dev2 (0.2, 0.3, 0.5,
/// 0.8 tried; 0.5 found most).
const GRANTS: f32 = 0.5;

/// The score factor of a policy that does not grant the action a question names outright
/// ("not authorized to perform: ssm:SendCommand" is not answered by AmazonSSMReadOnlyAccess).
const NOT_GRANTING_NAMED: f32 = 0.5;

/// How likely a person is to ask for this document's role or policy, as a score factor.
///
/// Catalogues are full of roles no one requests: cloud service agents, policies of
/// service-linked roles and of workloads, deprecated entries. They share vocabulary with what
/// people do ask for ("Lambda", "storage") and would crowd it out; they are kept, one step down.
/// Roles in beta or preview, and those kept for old setups, are a smaller step down.
pub fn person_prior(hit: &Hit) -> f32 {
    let meta = &hit.metadata;
    let text = |k: &str| meta.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let arn = text("arn");
    let id_title = format!("{} {}", hit.id, hit.title).to_ascii_lowercase();
    let mut f = 1.0;
    if arn.contains(":policy/aws-service-role/")
        || id_title.contains("servicerolepolicy")
        || id_title.contains("serviceagent")
        || id_title.contains("service agent")
    {
        f *= 0.4;
    } else if arn.contains(":policy/service-role/") {
        f *= 0.8;
    } else if workload_name(&hit.title) {
        // Chosen on dev + dev2 (0.6, 0.7, 0.8, 0.9 tried): people do ask for these, rarely.
        f *= 0.8;
    }
    if meta.get("deprecated").and_then(|v| v.as_bool()) == Some(true)
        || text("stage").eq_ignore_ascii_case("deprecated")
    {
        f *= 0.6;
    }
    if meta.get("requestable").and_then(|v| v.as_bool()) == Some(false) {
        f *= 0.9;
    }
    if text("stage").eq_ignore_ascii_case("beta") || titled(&hit.title, &["preview"]) {
        f *= BETA;
    }
    if superseded(&hit.title) {
        f *= SUPERSEDED;
    }
    f
}

/// The factor of a role still in beta (GCP's `stage`) or preview (Azure's title says so): a
/// quarter of GCP's roles are, and people mostly ask for the products they run in production.
/// Of the 245 GCP tuning questions, 238 accept only generally available roles. Chosen on the
/// tuning sets (0.9 found one more question, 0.8 and 0.7 two, 0.6 one, 0.5 one but lost a GCP
/// dev question; MRR rose on dev2, dev3 and plain, and fell on GCP dev by 0.009 at 0.8).
const BETA: f32 = 0.8;

/// The factor of a role its vendor keeps only for old setups (GCP's "Storage Legacy Bucket
/// Writer", Azure's "Classic Virtual Machine Contributor"): the current role for the same job
/// is what a person should be given. Chosen on the tuning sets (0.8 moved no question; 0.6
/// found one more GCP plain question and lost none; 0.5 and 0.4 the same as 0.6).
const SUPERSEDED: f32 = 0.6;

/// Whether a title marks its role as kept for old setups.
fn superseded(title: &str) -> bool {
    titled(title, &["legacy", "classic"])
}

/// Whether one of the title's words, lower-cased, is one of `words` ("(Preview)" is).
fn titled(title: &str, words: &[&str]) -> bool {
    lower_words(title).split(|c: char| !c.is_alphanumeric()).any(|w| words.contains(&w))
}

/// AWS names what people are given by the access it grants (`AmazonS3ReadOnlyAccess`,
/// `PowerUserAccess`) and what workloads are given by what they are (`AmazonEBSCSIDriverPolicy`,
/// `AWSLambdaBasicExecutionRole`, `…PolicyV2`): identifier titles ending in Policy or Role.
fn workload_name(title: &str) -> bool {
    if title.contains(char::is_whitespace) {
        return false;
    }
    let t = title.trim_end_matches(|c: char| c.is_ascii_digit());
    let t = t.strip_suffix('V').unwrap_or(t);
    t.ends_with("Policy") || t.ends_with("Role")
}

/// Score lost per title word beyond two; chosen on the dev halves (0.03–0.10 all help MRR,
/// 0.15 starts to bury specific roles people name).
const BREADTH: f32 = 0.06;

/// Narrow entries have long names ("AWSQuickSetupStartStopInstancesExecutionPolicy"), the
/// broad ones people ask for short ones ("AmazonEC2FullAccess", "Viewer"): in both labelled
/// sets the expected entries' names are about one word shorter than the catalogue's average.
pub fn breadth_prior(title: &str) -> f32 {
    let words = crate::ingest::format::records::humanize_identifier(title)
        .map(|h| h.split_whitespace().count())
        .unwrap_or_else(|| title.split_whitespace().count())
        .max(1);
    1.0 / (1.0 + BREADTH * words.saturating_sub(2) as f32)
}

/// Everyday words for cloud and IAM things, and the product and API vocabulary the
/// catalogues use for them. A question says "VM", "bucket" or "k8s"; role documents say
/// "compute instances", "storage objects", "container clusters". The expansion only feeds
/// keyword search (the embedder reads the question as asked), so an alias that does not
/// occur in a catalogue costs nothing there.
const ALIASES: &[(&str, &str)] = &[
    ("vm", "compute instance instances ec2 virtual machines virtualmachines"),
    ("vms", "compute instance instances ec2 virtual machines virtualmachines"),
    ("virtual machine", "compute instance instances ec2 virtualmachines"),
    ("server", "compute instance ec2"),
    ("bucket", "storage bucket buckets objects s3"),
    ("buckets", "storage bucket buckets objects s3"),
    ("gcs", "storage objects buckets"),
    ("files", "objects storage"),
    ("file", "objects storage"),
    ("blob", "objects storage"),
    ("k8s", "kubernetes container clusters gke eks aks"),
    ("kubectl", "kubernetes container clusters gke eks aks"),
    ("cluster", "clusters kubernetes container"),
    ("data warehouse", "bigquery redshift"),
    ("warehouse", "bigquery redshift"),
    ("bq", "bigquery"),
    ("sql", "cloudsql rds database"),
    ("database", "databases cloudsql rds spanner dynamodb sql"),
    ("db", "databases cloudsql rds sql"),
    ("postgres", "cloudsql rds sql database"),
    ("mysql", "cloudsql rds sql database"),
    ("serverless", "functions lambda cloudfunctions run"),
    ("function", "functions lambda cloudfunctions"),
    ("functions", "functions lambda cloudfunctions"),
    ("logs", "logging logs cloudwatch"),
    ("log", "logging logs cloudwatch"),
    ("metrics", "monitoring metrics cloudwatch"),
    ("alerts", "monitoring alert alertpolicies cloudwatch alarms"),
    ("alert", "monitoring alert alertpolicies cloudwatch alarms"),
    ("dashboards", "monitoring dashboards cloudwatch"),
    ("secret", "secretmanager secrets secretsmanager"),
    ("secrets", "secretmanager secrets secretsmanager"),
    ("password", "secretmanager secrets secretsmanager"),
    ("passwords", "secretmanager secrets secretsmanager"),
    ("encryption", "kms cloudkms keys"),
    ("key", "keys kms cloudkms"),
    ("keys", "keys kms cloudkms"),
    ("dns", "dns route53 zones records"),
    ("domain", "dns route53 domains"),
    ("billing", "billing costs budgets"),
    ("cost", "billing costs"),
    ("budget", "billing costs budgets"),
    ("budgets", "billing costs budgets"),
    ("nosql", "cosmos documentdb dynamodb firestore datastore bigtable"),
    ("costs", "billing costs"),
    ("invoice", "billing invoices"),
    ("invoices", "billing invoices"),
    ("images", "artifactregistry repositories containerregistry ecr"),
    ("image", "artifactregistry repositories containerregistry ecr"),
    ("docker", "artifactregistry repositories containerregistry ecr"),
    ("registry", "artifactregistry repositories containerregistry ecr"),
    ("queue", "pubsub sqs"),
    ("topic", "pubsub sns topics"),
    ("messages", "pubsub sqs sns"),
    ("pubsub", "pubsub topics subscriptions"),
    ("firewall", "firewall firewalls securitygroups"),
    ("network", "networks compute vpc"),
    ("vpc", "networks vpc subnetworks"),
    ("ml", "aiplatform ml sagemaker"),
    ("ai", "aiplatform sagemaker bedrock"),
    ("vertex", "aiplatform"),
    ("gemini", "aiplatform"),
    ("llm", "aiplatform bedrock"),
    ("pipeline", "cloudbuild codepipeline builds"),
    ("ci", "cloudbuild codebuild builds"),
    ("build", "cloudbuild codebuild builds"),
    ("builds", "cloudbuild codebuild builds"),
    ("deploy", "deploy developer"),
    ("read only", "viewer readonly reader read"),
    ("readonly", "viewer readonly reader read"),
    ("read-only", "viewer readonly reader read"),
    ("view", "viewer readonly read"),
    ("see", "viewer readonly read"),
    ("look", "viewer readonly read"),
    // What a verb asks of a product, in the words catalogues name a role's level with.
    ("download", "viewer reader read"),
    ("downloads", "viewer reader read"),
    ("upload", "creator writer create write"),
    ("uploads", "creator writer create write"),
    ("browse", "viewer browser read"),
    ("edit", "editor contributor writer"),
    ("modify", "editor contributor writer"),
    ("update", "editor contributor writer"),
    ("write", "writer editor contributor"),
    ("push", "writer poweruser"),
    ("approve", "approver"),
    ("invoke", "invoker executor"),
    ("trigger", "invoker executor"),
    ("execute", "invoker executor"),
    ("kick off", "invoker executor"),
    ("publish", "publisher"),
    ("subscribe", "subscriber"),
    ("encrypt", "encrypter"),
    ("decrypt", "decrypter"),
    ("sign", "signer"),
    ("verify", "verifier"),
    ("import", "importer"),
    ("export", "exporter"),
    ("move", "mover"),
    ("ssh", "login oslogin"),
    ("sudo", "adminlogin osadminlogin"),
    ("admin", "admin administrator fullaccess"),
    ("manage", "admin administrator fullaccess editor"),
    ("full", "admin fullaccess"),
    ("org", "organization organizations resourcemanager"),
    ("folders", "folder folders resourcemanager"),
    ("folder", "folder folders resourcemanager"),
    ("support", "support cases cloudsupport"),
    ("iam", "iam roles policies"),
    ("permissions", "iam roles policies"),
    ("service account", "serviceaccounts serviceaccount iam"),
    // IT shorthand for the words catalogues spell out.
    ("repo", "repository repositories"),
    ("repos", "repository repositories"),
    ("config", "configuration configurations"),
    ("configs", "configuration configurations"),
    ("cert", "certificate certificates"),
    ("certs", "certificate certificates"),
    ("creds", "credentials credential"),
    ("perms", "permissions"),
    ("mgr", "manager"),
    ("env", "environment environments"),
    ("envs", "environment environments"),
    ("infra", "infrastructure"),
    ("prod", "production"),
    ("svc", "service services"),
    ("msg", "message messages"),
    ("msgs", "message messages"),
    ("acct", "account accounts"),
    ("accts", "account accounts"),
    ("dir", "directory"),
    ("params", "parameters parameter"),
    ("notifs", "notifications notification"),
    ("stats", "statistics"),
    ("auth", "authentication authorization"),
    // Products whose catalogue name is another (renamed, or named by the API behind it).
    ("firestore", "datastore firestore"),
    ("memorystore", "redis memcache"),
    ("cloud armor", "securitypolicies security policies"),
    ("binauthz", "binaryauthorization binary authorization"),
    ("gke", "container kubernetes clusters"),
    ("gce", "compute instances"),
    ("stackdriver", "logging monitoring"),
    ("just-in-time", "privilegedaccessmanager privileged access grants"),
    ("jit", "privilegedaccessmanager privileged access grants"),
    ("cloud functions", "cloudfunctions functions"),
    ("cloud run", "run services"),
    // Azure's short names for what its catalogue spells out.
    ("nsg", "network security groups networksecuritygroups"),
    ("nsgs", "network security groups networksecuritygroups"),
    ("vnet", "virtual networks virtualnetworks"),
    ("vnets", "virtual networks virtualnetworks"),
    ("acr", "container registry containerregistry registries"),
    ("aks", "kubernetes container clusters managedclusters"),
    ("asr", "site recovery"),
    ("web app", "web sites website"),
    ("function app", "web sites website functions"),
];

/// The question plus the catalogue vocabulary its everyday words stand for. A word a negation
/// rules out just before it ("no write access", "without changing anything") stands for
/// nothing: it would name the very level the question declines.
pub fn expand_query(text: &str) -> String {
    let lower = text.to_lowercase().replace(|c: char| !c.is_alphanumeric() && c != '-', " ");
    let w: Vec<&str> = lower.split_whitespace().collect();
    let mut extra: Vec<&str> = Vec::new();
    for (alias, expansion) in ALIASES {
        let a: Vec<&str> = alias.split(' ').collect();
        let said = w.windows(a.len()).enumerate().any(|(i, win)| win == a.as_slice() && !negated(&w, i));
        if said && !extra.contains(expansion) {
            extra.push(expansion);
        }
    }
    if extra.is_empty() {
        text.to_string()
    } else {
        format!("{text} {}", extra.join(" "))
    }
}

/// How many policies that grant what the question asks join the candidates even when its
/// words missed them. Chosen on dev + dev2 (3, 5, 10 tried).
const GRANTING: usize = 3;

/// How many policies of the asked services they are chosen from (20, 50, 100, 200 tried).
const SERVICE_POLICIES: usize = 100;

/// The fused candidate whose score a joining policy starts with: a joiner ranks by the
/// rerank's evidence, not by where the searches put it (1, 1.2, 1.4 times this score tried).
const JOIN_AT: usize = 20;

/// People ask to *do* things ("redrive the dead-letter queue back to the main queue"), and a
/// service's own policies describe themselves in boilerplate ("Provides full access to
/// Amazon SQS"), so neither keyword nor vector search finds `AmazonSQSFullAccess`. The
/// catalogue actions nearest the question name the service: a keyword search for it finds its
/// policies, and the few that grant the asked actions most join the candidates.
#[tracing::instrument(skip_all)]
async fn add_granting(
    index: &dyn Index,
    req: &SearchRequest,
    asked: &grants::Asked,
    hits: &mut Vec<Hit>,
) -> Result<(), IndexError> {
    let mut found: Vec<(f32, Hit)> = index
        .search(&keywords_only(req, asked.services(), SERVICE_POLICIES))
        .await?
        .into_iter()
        .filter_map(|h| {
            let strength = asked.strength(&h.metadata)? * person_prior(&h) * breadth_prior(&h.title);
            (strength > 0.0).then_some((strength, h))
        })
        .collect();
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    join(hits, found.into_iter().take(GRANTING).map(|(_, h)| h));
    Ok(())
}

/// How many of the keyword search's own leaders join the candidates. Chosen on the tuning
/// sets (3, 5, 10, 15 tried: 5 found three more questions and lost none; 10 found three
/// others but lowered MRR on GCP dev2 and dev3; 15 lost a GCP dev3 question).
const KEYWORD_LEADERS: usize = 5;

/// Fusion weighs the vector list three times the keyword list, so a document the keywords
/// rank near the top but the embedder does not ("look at GKE clusters and the workloads on
/// them, view only": Kubernetes Engine Viewer is 2nd by keywords, 119th by vector) never
/// reaches the candidates, however well the rerank would place it (that one now ranks 8th).
/// The keyword search's first few join them, at the [`JOIN_AT`]th candidate's score.
#[tracing::instrument(skip_all)]
async fn add_keyword_leaders(index: &dyn Index, req: &SearchRequest, hits: &mut Vec<Hit>) -> Result<(), IndexError> {
    let found = index.search(&keywords_only(req, req.text.clone(), KEYWORD_LEADERS)).await?;
    join(hits, found);
    Ok(())
}

/// How many of the fused list's leaders bring their product's other roles, and the largest
/// product that does: a family of hundreds (EC2, Compute Engine) says nothing about the
/// level asked for. Chosen on the tuning sets (leaders 1, 3, 5; sizes 15, 30, 50: 3 and 30
/// found two more questions and lost none; 50 found one more and lost two).
const FAMILY_LEADERS: usize = 3;
const FAMILY_SIZE: usize = 30;

/// The searches find a product and often not the level of it asked for: a role or policy
/// whose description is boilerplate ("Provides read-only access to …") shares no word with
/// the question and can rank outside the candidates while its product's admin role leads.
/// The other roles of the leaders' products join the candidates, at the [`JOIN_AT`]th
/// candidate's score, and the rerank's level signals choose among them.
#[tracing::instrument(skip_all)]
async fn add_families(index: &dyn Index, filters: &Filters, hits: &mut Vec<Hit>) -> Result<(), IndexError> {
    let mut families: Vec<String> = Vec::new();
    for h in hits.iter().take(FAMILY_LEADERS) {
        if let Some(f) = records::family_of(&h.metadata).filter(|f| !families.iter().any(|x| x == f)) {
            families.push(f.to_string());
        }
    }
    let families: Vec<&str> = families.iter().map(String::as_str).collect();
    join_families(index, filters, &families, hits).await
}

/// Each family's records join the candidates, unless it has more than [`FAMILY_SIZE`].
async fn join_families(
    index: &dyn Index,
    filters: &Filters,
    families: &[&str],
    hits: &mut Vec<Hit>,
) -> Result<(), IndexError> {
    for f in families {
        let members = index.family(f, FAMILY_SIZE + 1).await?;
        if members.len() <= FAMILY_SIZE {
            join(hits, members.into_iter().filter(|h| passes(h, filters)));
        }
    }
    Ok(())
}

/// The score factors of the candidates of the products nearest the question by the glossary
/// ([`products::likely`]), nearest first: 1 + these. Chosen on the tuning sets: with cards
/// chosen by their vectors alone, 0.25 and 0.15 (1, 2, 3 products; 0.2–0.5 for the first, the
/// same or half for the second, tried); since their words count too, the guess is right more
/// often and bears more (0.35–1.0 for the first tried: 0.5–0.7 alike, 1.0 loses GCP questions).
const PRODUCT_BONUSES: [f32; 2] = [0.6, 0.3];

/// How many of those products bring their records to the candidates (1, 2 tried, twice).
const PRODUCT_JOINING: usize = 1;

/// "Our artists submit render jobs to the studio's render farm" names no product, and the
/// Deadline Cloud policies say nothing about render farms: neither search finds them. The
/// glossary knows what Deadline Cloud is for; the nearest product's records join the
/// candidates (unless it has dozens: [`FAMILY_SIZE`]), at the [`JOIN_AT`]th candidate's score.
#[tracing::instrument(skip_all)]
async fn add_products(
    index: &dyn Index,
    filters: &Filters,
    products: &[(&str, f32)],
    hits: &mut Vec<Hit>,
) -> Result<(), IndexError> {
    let families: Vec<&str> = products.iter().take(PRODUCT_JOINING).map(|p| p.0).collect();
    join_families(index, filters, &families, hits).await
}

/// How many records whose notes and requests are nearest the question ([`notes::likely`])
/// count: the candidate whose role is `i`th nearest (from 0) scores × (1 + [`NOTE_BONUS`] /
/// (i + 1)). Chosen on the tuning sets (questions in the top 5, GCP of 245 / AWS of 247, against
/// 224 / 218 without notes): with the notes alone, 5 notes 237 / 235, 10 notes 238 / 237 (the
/// default), 20 (with a bonus relative to the scores' spread) 235 / 236; with the requests too,
/// 5 → 238 / 241, 10 → 239 / 241, 20 → 239 / 241.
const NOTED: usize = 10;

/// Bonus of the nearest role's record, halved for the second, a third for the third… With the
/// notes alone: 0.5, 1, 1.5 → 237 / 237, 238 / 237, 238 / 239 (1.5 with lower MRR on both
/// clouds), and a bonus relative to the notes' scores instead of their ranks, 0.3–1: 235–236 /
/// 232–237. With the requests too, the guess is right more often and bears more: 0.7, 1, 1.5,
/// 2, 3 → 239 / 239, 239 / 241, 239 / 242, 239 / 242, 239 / 241 (MRR highest at 1.5–2).
const NOTE_BONUS: f32 = 1.5;

/// How many of the nearest roles' records join the candidates if the searches missed them
/// (1, 3, 5 tried: 233 / 235, 235 / 237, 235 / 235 with the notes alone and the relative
/// bonus; 238 / 240, 239 / 241, 239 / 239 with the requests too).
const NOTES_JOINING: usize = 3;

/// "Upload files to a bucket, nothing else" is Storage Object Creator's job, but its
/// description ("Access to create objects in GCS") and the service agents that also create
/// objects keep it out of both searches. Its note says what it is for; the records whose
/// notes are nearest join the candidates, at the [`JOIN_AT`]th candidate's score, and the
/// note bonus places them.
#[tracing::instrument(skip_all)]
async fn add_noted(
    index: &dyn Index,
    filters: &Filters,
    noted: &[(&str, f32)],
    hits: &mut Vec<Hit>,
) -> Result<(), IndexError> {
    let missing: Vec<String> = noted
        .iter()
        .take(NOTES_JOINING)
        .filter(|(id, _)| !hits.iter().any(|h| h.id == *id))
        .map(|(id, _)| id.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let found = index.get(&missing).await?;
    join(hits, found.into_iter().filter(|h| passes(h, filters)));
    Ok(())
}

/// The same search as `req` by keywords alone, for other words.
fn keywords_only(req: &SearchRequest, text: String, k: usize) -> SearchRequest {
    SearchRequest { text, vector: None, model: None, k, kinds: req.kinds.clone(), application: req.application.clone() }
}

/// Adds documents the searches missed to the candidates, at the score of the [`JOIN_AT`]th,
/// so that the rerank's evidence, not the search's, places them.
fn join(hits: &mut Vec<Hit>, newcomers: impl IntoIterator<Item = Hit>) {
    let floor = hits.get(JOIN_AT - 1).or(hits.last()).map_or(0.0, |h| h.score);
    for mut h in newcomers {
        if !hits.iter().any(|x| x.id == h.id) {
            h.score = floor;
            hits.push(h);
        }
    }
}

/// How many of the services a question is most about ([`services::gcp`]) count, and the
/// score factor of a candidate whose permissions are about one of them: 1 + this. Chosen on
/// dev + dev2 + dev3 (1, 2, 3 services; 0.2, 0.3, 0.4, 0.5, 0.7 tried: 2 and 0.3–0.5 best).
const LIKELY_SERVICES: usize = 2;
const SERVICE_BONUS: f32 = 0.4;

/// Whether ingest recorded one of `services` as what a hit's permissions are about.
fn of_services(hit: &Hit, services: &[&str]) -> bool {
    records::services_of(&hit.metadata).any(|s| services.contains(&s))
}

/// How many broad records (`records::BROAD_WORDS`) join the candidates of a question that
/// asks for everything; chosen on dev + dev2 and a set of such questions (3, 8 tried).
const BROAD_JOINING: usize = 3;

/// The score factor of a broad record when the question asks for everything: 1 + this
/// (0.5, 1, 2 tried; 0 leaves the catch-all roles below the narrow ones that share a word).
const BROAD_BONUS: f32 = 1.0;

/// "Read access to everything in the project" shares no word with the roles that grant it
/// (GCP's Viewer: "View most Google Cloud resources"), and its words name dozens of narrow
/// viewer roles; the catch-all roles are not among the candidates at all. Ingest marks the
/// records that reach 100+ services; a keyword search for that mark brings them in.
#[tracing::instrument(skip_all)]
async fn add_broad(index: &dyn Index, req: &SearchRequest, hits: &mut Vec<Hit>) -> Result<(), IndexError> {
    let found = index.search(&keywords_only(req, records::BROAD_WORDS.into(), BROAD_JOINING)).await?;
    join(hits, found.into_iter().filter(|h| records::is_broad(&h.metadata)));
    Ok(())
}

/// The score factor of a role that changes things (an admin, editor, owner, writer, creator or
/// developer role; a full-access policy) when the question only asks to read: least privilege
/// is what an access request should get. "I need to read files in a storage bucket" ranked
/// Storage Admin first, its short title naming the product; now Storage Object Viewer is.
/// Chosen on the tuning sets: 0.9 moved no question out of the top 5 and raised MRR on GCP
/// dev3 and the catch-all questions; 0.8 and 0.7 lost a GCP dev3 question.
const CHANGES_WHEN_READING: f32 = 0.9;

/// The score factor of a role that only reads (a viewer, reader, read-only policy) when the
/// question asks to change something: "create and edit firewall rules" is not answered by a
/// firewall viewer. Chosen on the tuning sets (0.7, 0.8, 0.85, 0.9 tried: 0.85 found two
/// more GCP dev3 questions and lost none; 0.8 and 0.7 lost an Azure one).
const READS_WHEN_CHANGING: f32 = 0.85;

/// Whether a question asks only to read: "read only" said outright, or a reading verb and no
/// verb that changes anything, unless a negation rules the change out just before it ("I
/// need to read files in a bucket", "look at our EC2 instances without being able to change
/// anything"; not "read and write objects", "look at and restart the VMs"). The negation
/// raised MRR on the tuning sets (AWS dev2 0.641 → 0.646, dev3 0.553 → 0.559, GCP plain
/// 0.661 → 0.672) and moved no question in or out of the top 5.
pub fn asks_only_to_read(text: &str) -> bool {
    let (said, reads, changes) = reading_and_changing(text);
    said || (reads && !changes)
}

/// Whether a question asks to change something (a changing verb no negation rules out) and
/// does not say "read only".
pub fn asks_to_change(text: &str) -> bool {
    let (said, _, changes) = reading_and_changing(text);
    changes && !said
}

/// Whether a question says "read only"; whether it uses a reading verb; whether it uses a
/// changing verb that no negation rules out.
fn reading_and_changing(text: &str) -> (bool, bool, bool) {
    let w = plain_words(text);
    let said = w.windows(2).any(|p| matches!(p[0].as_str(), "read" | "view" | "look") && p[1] == "only")
        || w.iter().any(|x| x == "readonly");
    let is = |verbs: &str, x: &str| verbs.split_whitespace().any(|v| v == x);
    let reads = w.iter().any(|x| is(READING, x));
    // "without being able to change anything", "no edits or deletes": a change ruled out.
    let changes = w.iter().enumerate().any(|(i, x)| is(CHANGING, x) && !negated(&w, i));
    (said, reads, changes)
}

/// Whether a negation comes within [`NEGATION_REACH`] words before the `i`th.
fn negated(words: &[impl AsRef<str>], i: usize) -> bool {
    words[i.saturating_sub(NEGATION_REACH)..i].iter().any(|p| NEGATIONS.split(' ').any(|n| n == p.as_ref()))
}

/// Words that rule out a change said within this many words after them.
const NEGATION_REACH: usize = 4;

/// Words that rule a change out ("can't" splits into "can" and "t").
const NEGATIONS: &str = "not no without never nothing cannot cant t nor";

/// A question's words as written, lower-cased, stop words and plurals kept (unlike [`words`]):
/// cues read exact words ("all resources", "read only").
fn plain_words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// Verbs of a question that asks to read.
const READING: &str = "read reads reading view viewing see look looking list listing download browse inspect check \
    monitor audit review";

/// Verbs (and "full", "admin") of a question that asks to change something.
const CHANGING: &str = "write writes writing create creating delete deleting remove modify change changes changing \
    update updating edit editing edits manage managing deploy deploying upload uploading add set configure grant run \
    running start stop restart push publish administer admin own control rotate enable disable restore provision \
    build install attach move copy send invoke trigger approve launch scale resize rename register import export \
    migrate execute submit train turn switch reset fix make put drop insert assign share terminate reboot purge \
    cancel apply patch schedule subscribe encrypt decrypt sign full";

/// A title in lower-case words, identifier titles split into words: the form level names
/// are read from.
fn lower_words(title: &str) -> String {
    records::humanize_identifier(title).unwrap_or_else(|| title.to_string()).to_lowercase()
}

/// Whether a title names a level that only reads.
fn grants_only_reading(title: &str) -> bool {
    let t = lower_words(title);
    t.split_whitespace().any(|x| matches!(x, "viewer" | "reader" | "readonly")) || t.contains("read only")
}

/// Whether a title names a level that changes things. "Manager" is left out: it is as often
/// part of a product's name ("Certificate Manager Viewer") as a level.
fn grants_change(title: &str) -> bool {
    let t = lower_words(title);
    t.split_whitespace()
        .any(|x| matches!(x, "admin" | "administrator" | "owner" | "editor" | "writer" | "creator" | "developer"))
        || t.contains("full access")
}

/// Whether a question asks for access across the board ("everything in the project", "any
/// resource", "all services", "the whole account") rather than to one product.
pub fn asks_for_everything(text: &str) -> bool {
    let w = plain_words(text);
    let scope = |x: &str| matches!(x, "resource" | "resources" | "service" | "services");
    let whole = |x: &str| {
        matches!(
            x,
            "project" | "projects" | "account" | "accounts" | "org" | "organization" | "organisation" | "subscription"
        )
    };
    // Between "all" and "services": an article or the cloud's name, not a product ("every
    // prod resource", "all the accounts" ask for something narrower).
    let filler = |x: &str| matches!(x, "the" | "our" | "its" | "aws" | "gcp" | "azure" | "google" | "cloud");
    for (i, x) in w.iter().enumerate() {
        let next = |k: usize| w.get(i + k).map(String::as_str).unwrap_or("");
        match x.as_str() {
            "everything" => return true,
            "all" | "any" | "every" if scope(next(1)) || (filler(next(1)) && scope(next(2))) => return true,
            "whole" | "entire" if whole(next(1)) => return true,
            _ => {}
        }
    }
    false
}

/// The question with each word that is no word of English, of Google's API documents or of
/// the index, spelt as the nearest word the index holds ("databse" → "database",
/// "permision" → "permission"). A word the index lacks but the language has ("truck",
/// "contractor") stays as written, and so does a name written with capitals ("PLCs").
#[tracing::instrument(skip_all)]
pub async fn respell(index: &dyn Index, text: &str) -> Result<String, IndexError> {
    // Runs of letters with their byte offsets, outside identifiers ("storage.objectAdmin").
    let words: Vec<(usize, &str)> = text
        .split_whitespace()
        .filter(|token| !identifier_like(token))
        .flat_map(|token| token.split(|c: char| !c.is_alphabetic()))
        .filter(|w| !w.is_empty())
        .map(|w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
        .collect();
    let unknown: Vec<String> = words
        .iter()
        .filter(|(_, w)| {
            w.chars().count() >= spelling::MIN_LETTERS && w.chars().filter(|c| c.is_uppercase()).count() < 2
        })
        .map(|(_, w)| w.to_lowercase())
        .filter(|w| !english::is_word(w) && !services::gcp().knows(w))
        .collect();
    let spelt = if unknown.is_empty() { HashMap::new() } else { index.spellings(&unknown).await? };
    if spelt.is_empty() {
        return Ok(text.to_string());
    }
    tracing::debug!(?spelt, "respelt");
    let mut out = String::with_capacity(text.len() + 8);
    let mut at = 0;
    for (start, w) in words {
        if let Some(s) = spelt.get(&w.to_lowercase()) {
            out.push_str(&text[at..start]);
            out.push_str(s);
            at = start + w.len();
        }
    }
    out.push_str(&text[at..]);
    Ok(out)
}

/// The ids a question may name a document by, best guess first: identifier-like words as
/// pasted ("roles/storage.objectViewer", "AmazonS3ReadOnlyAccess", a GUID), the name at the end of
/// an ARN or path ("arn:aws:iam::aws:policy/AWSLambdaBasicExecutionRole"), and a dotted GCP
/// role name without its "roles/" prefix ("storage.objectAdmin"). Plain words are not ids:
/// "viewer" asks for a kind of role, not `roles/viewer`.
pub fn named_ids(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        if id.len() >= 3 && !out.iter().any(|o| o == id) {
            out.push(id.to_string());
        }
    };
    for token in text.split_whitespace().filter(|t| identifier_like(t)) {
        let t = token.trim_matches(|c: char| !c.is_alphanumeric());
        push(t);
        if let Some((_, last)) = t.rsplit_once(['/', ':']) {
            push(last);
        }
        if t.contains('.') && !t.contains(['/', ':']) {
            push(&format!("roles/{t}"));
        }
    }
    out
}

/// A word written as an identifier: camel case ("SecurityAudit", "objectViewer"), joined by
/// dots, slashes, colons or underscores inside it (a trailing full stop is punctuation), or
/// hyphenated with digits (Azure's role GUIDs).
fn identifier_like(token: &str) -> bool {
    let t = token.trim_matches(|c: char| !c.is_alphanumeric());
    t.chars().zip(t.chars().skip(1)).any(|(a, b)| a.is_lowercase() && b.is_uppercase())
        || t.contains(['.', '/', ':', '_'])
        || (t.contains('-') && t.chars().any(|c| c.is_ascii_digit()))
}

/// Whether a hit passes the search's filters (`Index::get` does not apply them).
fn passes(hit: &Hit, filters: &Filters) -> bool {
    let application = hit.metadata.get("application").and_then(|v| v.as_str());
    (filters.kinds.is_empty() || filters.kinds.contains(&hit.kind))
        && filters.application.as_deref().is_none_or(|a| application.is_some_and(|x| x.eq_ignore_ascii_case(a)))
}

#[tracing::instrument(skip(index, embedder, filters), fields(k))]
pub async fn search(
    index: &dyn Index,
    embedder: &dyn Embedder,
    text: &str,
    k: usize,
    filters: &Filters,
) -> Result<Vec<Hit>, RetrieveError> {
    // Both searches and every rerank signal read the question as meant: a typo matches no
    // keyword, names no title, and reads to the embedder as other word pieces.
    let respelt = respell(index, text).await?;
    let text = respelt.as_str();
    let vector = embedder.embed(&[text.to_string()], InputKind::Query).await?.pop();
    let req = SearchRequest {
        text: expand_query(text),
        vector,
        model: Some(embedder.model_id().to_string()),
        k: CANDIDATES.max(k),
        kinds: filters.kinds.clone(),
        application: filters.application.clone(),
    };
    let mut hits = index.search(&req).await?;
    // The products a glossary says the question is about (records of a product only).
    let products = match req.vector.as_deref() {
        Some(v) if hits.iter().any(|h| records::family_of(&h.metadata).is_some()) => {
            products::likely(embedder, text, v, PRODUCT_BONUSES.len()).await
        }
        _ => Vec::new(),
    };
    add_products(index, filters, &products, &mut hits).await?;
    // The records whose notes on what they are for are nearest the question (an index of
    // predefined roles: not one of an organisation's own, which the notes know nothing of).
    let noted = match req.vector.as_deref() {
        Some(v) if hits.iter().any(|h| notes::notes().has(&h.id)) => notes::likely(embedder, text, v, NOTED).await,
        _ => Vec::new(),
    };
    add_noted(index, filters, &noted, &mut hits).await?;
    add_families(index, filters, &mut hits).await?;
    add_keyword_leaders(index, &req, &mut hits).await?;
    let question = words(text);
    let expanded = title_vocabulary(&req.text);
    let asked = match req.vector.as_deref() {
        Some(v) if hits.iter().any(|h| grants::has_policy_document(&h.metadata)) => {
            grants::Asked::of(embedder, v).await.map(|a| a.naming(text))
        }
        _ => None,
    };
    if let Some(asked) = &asked {
        add_granting(index, &req, asked, &mut hits).await?;
    }
    let everything = asks_for_everything(text);
    if everything {
        add_broad(index, &req, &mut hits).await?;
    }
    // Which services their API documents say the question is about: a role's title names the
    // product, the question often only what it does.
    let likely: Vec<&str> = if hits.iter().any(|h| records::services_of(&h.metadata).next().is_some()) {
        services::gcp().likely(text, LIKELY_SERVICES)
    } else {
        Vec::new()
    };
    let read_only = asks_only_to_read(text);
    let changing = asks_to_change(text);
    let grants = asked.as_ref().and_then(|a| grants::evidence(a, &hits));
    let names_actions = asked.as_ref().is_some_and(grants::Asked::is_named);
    for (i, h) in hits.iter_mut().enumerate() {
        // Priors scale what retrieval found; naming a title outright is not discounted.
        let named = 1.0 + TITLE_WORDS * title_words_named(&expanded, &h.title);
        let granted = match grants.as_ref() {
            // A policy that does not grant the action the question names does not answer it.
            Some(g) if names_actions && g[i] == 0.0 && grants::has_policy_document(&h.metadata) => NOT_GRANTING_NAMED,
            Some(g) => 1.0 + GRANTS * g[i],
            None => 1.0,
        };
        let broad = if everything && records::is_broad(&h.metadata) { 1.0 + BROAD_BONUS } else { 1.0 };
        let service = if of_services(h, &likely) { 1.0 + SERVICE_BONUS } else { 1.0 };
        let product = records::family_of(&h.metadata)
            .and_then(|f| products.iter().position(|p| p.0 == f))
            .map_or(1.0, |i| 1.0 + PRODUCT_BONUSES[i]);
        let level = if read_only && grants_change(&h.title) {
            CHANGES_WHEN_READING
        } else if changing && grants_only_reading(&h.title) {
            READS_WHEN_CHANGING
        } else {
            1.0
        };
        // What a note says a record is for does not outweigh what the question rules out: a
        // level it declines (an admin role's note says it reads files too) or, for an
        // AccessDenied message, a policy that does not grant the action it names.
        let note = match noted.iter().position(|(id, _)| *id == h.id) {
            Some(i) if level == 1.0 && granted != NOT_GRANTING_NAMED => 1.0 + NOTE_BONUS / (i as f32 + 1.0),
            _ => 1.0,
        };
        h.score = h.score
            * person_prior(h)
            * breadth_prior(&h.title)
            * named
            * granted
            * broad
            * service
            * level
            * product
            * note
            + TITLE_BONUS * title_coverage(&question, &h.title);
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    // A document the question names by its exact id is what it asks for, whatever the words
    // around the id say: it leads, in the order named.
    let ids = named_ids(text);
    if !ids.is_empty() {
        let missing: Vec<String> = ids.iter().filter(|i| !hits.iter().any(|h| h.id == **i)).cloned().collect();
        let fetched = if missing.is_empty() { Vec::new() } else { index.get(&missing).await? };
        let top = hits.first().map_or(0.0, |h| h.score);
        let mut named: Vec<Hit> = Vec::new();
        for id in &ids {
            // The searches' own hit (its best chunk) when they found it, else the document.
            let hit = match hits.iter().position(|h| h.id == *id) {
                Some(i) => Some(hits.remove(i)),
                None => fetched.iter().find(|h| h.id == *id).filter(|h| passes(h, filters)).cloned(),
            };
            named.extend(hit.map(|h| Hit { score: h.score.max(top), ..h }));
        }
        hits.splice(0..0, named);
    }
    hits.truncate(k);
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_named_by_the_question_is_covered() {
        let q = words("I need access to the HR Analyst role");
        assert_eq!(title_coverage(&q, "HR Analyst"), 1.0);
        assert_eq!(title_coverage(&q, "HR Analyst Lead"), 0.0);
        assert_eq!(title_coverage(&q, "Segregation of duties: HR Analyst and Payroll Administrator"), 0.0);
        let q = words("payroll administrators");
        assert_eq!(title_coverage(&q, "Payroll Administrator"), 1.0);
        assert_eq!(title_coverage(&q, "Payroll"), 0.5);
    }

    #[test]
    fn title_words_count_when_the_expanded_question_names_them() {
        let q: HashSet<String> =
            words(&expand_query("need to download files from our GCS buckets, read only")).into_iter().collect();
        assert_eq!(title_words_named(&q, "Storage Object Viewer"), 1.0);
        assert_eq!(title_words_named(&q, "Filestore Viewer"), 0.5);
        assert_eq!(title_words_named(&q, "AmazonS3ReadOnlyAccess"), 0.75, "Amazon S3 Read Only Access, less 'access'");
        assert_eq!(title_words_named(&q, "Kubernetes Engine Admin"), 0.0);
    }

    #[test]
    fn short_names_expand_as_whole_words_only() {
        let q: HashSet<String> = words(&expand_query("edit the NSG rules on our vnet")).into_iter().collect();
        assert_eq!(title_words_named(&q, "Network Security Group Editor"), 1.0, "\"edit\" names the Editor");
        assert!(q.contains("virtualnetwork"), "{q:?}");
        assert!(!expand_query("copy images across regions from contosoacr").contains("registries"));
        assert!(expand_query("pull from our ACR").contains("registries"));
    }

    #[test]
    fn shorthand_names_the_words_catalogues_spell_out() {
        let q: HashSet<String> =
            words(&expand_query("push to the prod config repo in source mgr")).into_iter().collect();
        for w in ["production", "configuration", "repository", "manager"] {
            assert!(q.contains(w), "{w}: {q:?}");
        }
        assert_eq!(title_words_named(&q, "Source Manager Repository Admin"), 0.75);
        assert!(!expand_query("the director's approval").contains("directory"), "whole words only");
    }

    #[test]
    fn a_product_named_in_two_words_names_its_one_word_title() {
        let v = title_vocabulary("put our backend behind a managed API gateway");
        assert_eq!(title_words_named(&v, "ApiGateway Admin"), 0.5);
        assert!(v.contains("backend") && !v.contains("a"));
    }

    #[test]
    fn roles_in_beta_or_kept_for_old_setups_are_a_step_down() {
        let hit = |id: &str, title: &str| Hit {
            id: id.into(),
            title: title.into(),
            kind: "record".into(),
            source: String::new(),
            score: 1.0,
            version: String::new(),
            indexed_at: chrono::Utc::now(),
            chunk_id: String::new(),
            heading: None,
            text: String::new(),
            metadata: Default::default(),
        };
        let mut beta = hit("roles/example.user", "Example User");
        beta.metadata.insert("stage".into(), "BETA".into());
        assert!(person_prior(&beta) < 1.0, "a role in beta is a step down");
        let preview = person_prior(&hit("a1b2", "Cognitive Services Data Contributor (Preview)"));
        assert_eq!(preview, person_prior(&beta), "so is one in preview");
        let legacy = person_prior(&hit("roles/storage.legacyBucketWriter", "Storage Legacy Bucket Writer"));
        let current = person_prior(&hit("roles/storage.objectUser", "Storage Object User"));
        assert_eq!(current, 1.0);
        assert!(legacy < current, "{legacy}");
        assert!(superseded("Classic Virtual Machine Contributor"));
        assert!(superseded("AWSElasticLoadBalancingClassicServiceRolePolicy"), "identifier titles in words");
        assert!(!superseded("Classical Music Reader") && !superseded("Storage Object Viewer"));
    }

    #[test]
    fn workload_policies_are_told_by_their_names() {
        assert!(workload_name("AmazonEBSCSIDriverPolicy"));
        assert!(workload_name("AmazonEBSCSIDriverPolicyV2"));
        assert!(workload_name("AWSLambdaBasicExecutionRole"));
        assert!(!workload_name("AmazonS3ReadOnlyAccess"));
        assert!(!workload_name("Agent Platform Sessions User Role"), "a GCP title in words");
    }

    #[test]
    fn questions_for_everything_are_told_from_questions_about_one_thing() {
        for q in [
            "read-only access to everything in our GCP project",
            "let me create and modify any resource in the dev project",
            "look at all AWS services' configuration",
            "full control of the whole project",
            "admin over the entire account",
        ] {
            assert!(asks_for_everything(q), "{q}");
        }
        for q in [
            "our nightly job deletes anything older than 30 days in the bucket",
            "list all the accounts in our org",
            "reports showing every prod resource is backed up",
            "read the objects in one bucket",
            "I can't be allowed to change anything",
        ] {
            assert!(!asks_for_everything(q), "{q}");
        }
    }

    /// A record of one chunk whose vector is `vector`, as a write.
    fn record(n: usize, title: &str, text: &str, vector: Vec<f32>) -> crate::index::Write {
        use crate::index::{Guard, Upsert, Write};
        use crate::model::{Chunk, Document, Version};
        let id = format!("r:{n}");
        let chunk = Chunk { id: format!("{id}#0"), ordinal: 0, heading: None, text: text.into(), keywords_only: false };
        let doc = Document {
            id,
            kind: "record".into(),
            title: title.into(),
            source: "test".into(),
            version: Version::new(1, 0),
            metadata: Default::default(),
            chunks: vec![chunk],
        };
        Write::Upsert(Upsert { content_hash: doc.content_hash(), doc, vectors: vec![vector], guard: Guard::Version })
    }

    #[tokio::test]
    async fn typos_are_respelt_as_the_index_spells_them_and_words_are_left_alone() {
        use crate::index::embedded::EmbeddedIndex;
        let dir = tempfile::tempdir().unwrap();
        let index = EmbeddedIndex::open(&dir.path().join("index.sqlite")).unwrap();
        index.ensure_model("test", 1).await.unwrap();
        let text = "Track database contracts and PCs across instances";
        index.apply(vec![record(1, "Tracker", text, vec![1.0])]).await.unwrap();
        assert_eq!(
            respell(&index, "Our databse instnaces, permision aside").await.unwrap(),
            "Our database instances, permision aside",
            "what the index holds is respelt, case and punctuation kept; what it lacks is not"
        );
        assert_eq!(
            respell(&index, "the contractor's truck reads PLCs").await.unwrap(),
            "the contractor's truck reads PLCs",
            "English words and names are not typos of the index's words"
        );
    }

    /// An empty embedded index for the 16-dimension hashing embedder, and that embedder.
    async fn hashed_index(
    ) -> (tempfile::TempDir, crate::index::embedded::EmbeddedIndex, crate::embed::hash::HashEmbedder) {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::embedded::EmbeddedIndex::open(&dir.path().join("index.sqlite")).unwrap();
        let embedder = crate::embed::hash::HashEmbedder::new(16);
        index.ensure_model(embedder.model_id(), 16).await.unwrap();
        (dir, index, embedder)
    }

    #[tokio::test]
    async fn what_keywords_rank_first_is_a_candidate_whatever_the_vectors_say() {
        let (_dir, index, embedder) = hashed_index().await;
        // Fused as configured by default: the vector list weighs three times the keywords.
        let weights = crate::config::Config::default().search;
        let index = index.with_weights(weights.bm25_weight.into(), weights.vector_weight.into());
        let question = "who can groom the zebras";
        let near = embedder.embed(&[question.to_string()], InputKind::Query).await.unwrap().pop().unwrap();
        let far: Vec<f32> = near.iter().map(|x| -x).collect();
        // More documents nearer the question's vector than the vector search looks at, none
        // sharing a word with it; the one that does is the farthest.
        let mut writes: Vec<_> =
            (0..300).map(|i| record(i, &format!("Filler {i}"), &format!("Filler {i}"), near.clone())).collect();
        writes.push(record(300, "Zebra Groomer", "Zebra Groomer", far));
        index.apply(writes).await.unwrap();
        let hits = search(&index, &embedder, question, 5, &Filters::default()).await.unwrap();
        assert_eq!(hits.first().map(|h| h.id.as_str()), Some("r:300"), "{hits:?}");
    }

    /// `record`, in a product family as ingest records it.
    fn in_family(family: &str, mut write: crate::index::Write) -> crate::index::Write {
        if let crate::index::Write::Upsert(u) = &mut write {
            u.doc.metadata.insert(records::FAMILY_KEY.into(), family.into());
            u.content_hash = u.doc.content_hash();
        }
        write
    }

    #[tokio::test]
    async fn a_leading_candidates_product_brings_its_other_roles_unless_it_has_dozens() {
        let (_dir, index, embedder) = hashed_index().await;
        let question = "who can groom the zebras or milk the cows";
        let near = embedder.embed(&[question.to_string()], InputKind::Query).await.unwrap().pop().unwrap();
        let far: Vec<f32> = near.iter().map(|x| -x).collect();
        let nearly: Vec<f32> = near.iter().map(|x| 0.9 * x).collect();
        // More fillers near the question than the searches look at, sharing no word with it.
        let mut writes: Vec<_> =
            (0..300).map(|i| record(i, &format!("Filler {i}"), &format!("Filler {i}"), nearly.clone())).collect();
        // Two leaders the question names, first in both searches; each product's other roles
        // share no word with it and are the farthest from it.
        writes.push(in_family("zoo", record(300, "Zebra Groomer", "Zebra Groomer", near.clone())));
        writes.push(in_family("zoo", record(301, "Keeper Of Lions", "Keeper Of Lions", far.clone())));
        writes.push(in_family("farm", record(400, "Cow Milker", "Cow Milker", near.clone())));
        for i in 401..=401 + FAMILY_SIZE {
            writes.push(in_family("farm", record(i, &format!("Tractor {i}"), &format!("Tractor {i}"), far.clone())));
        }
        index.apply(writes).await.unwrap();
        let hits = search(&index, &embedder, question, 60, &Filters::default()).await.unwrap();
        let found = |id: &str| hits.iter().any(|h| h.id == id);
        assert!(found("r:300") && found("r:400"), "{hits:?}");
        assert!(found("r:301"), "the Zebra Groomer's product brings its Keeper Of Lions");
        assert!(!found("r:401"), "a product of more than FAMILY_SIZE roles brings none");
        assert_eq!(index.family("farm", 100).await.unwrap().len(), FAMILY_SIZE + 2);
        assert_eq!(index.family("zoo", 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_product_a_glossary_names_for_the_job_brings_its_records() {
        // Enough dimensions that the hashed glossary cards keep their words apart.
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::embedded::EmbeddedIndex::open(&dir.path().join("index.sqlite")).unwrap();
        let embedder = crate::embed::hash::HashEmbedder::new(1024);
        index.ensure_model(embedder.model_id(), 1024).await.unwrap();
        let question = "our animators need to submit frames to the render farm";
        let near = embedder.embed(&[question.to_string()], InputKind::Query).await.unwrap().pop().unwrap();
        let far: Vec<f32> = near.iter().map(|x| -x).collect();
        let mut writes: Vec<_> = (0..300)
            .map(|i| in_family("zoo", record(i, &format!("Filler {i}"), &format!("Filler {i}"), near.clone())))
            .collect();
        // Deadline Cloud's policy as the catalogue writes it: no word of the question, and
        // the farthest from it.
        writes.push(in_family("deadline", record(300, "AWSDeadlineCloud-UserAccessQueues", "Queue access", far)));
        index.apply(writes).await.unwrap();
        let hits = search(&index, &embedder, question, 60, &Filters::default()).await.unwrap();
        assert!(hits.iter().any(|h| h.id == "r:300"), "{hits:?}");
    }

    #[tokio::test]
    async fn the_role_whose_note_describes_the_job_joins_and_leads() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::embedded::EmbeddedIndex::open(&dir.path().join("index.sqlite")).unwrap();
        let embedder = crate::embed::hash::HashEmbedder::new(1024);
        index.ensure_model(embedder.model_id(), 1024).await.unwrap();
        // No word that names the record's title or text, or expands to one (files → objects).
        let question = "backup jobs and shippers that may only drop new things in, never read, list or overwrite";
        let near = embedder.embed(&[question.to_string()], InputKind::Query).await.unwrap().pop().unwrap();
        let far: Vec<f32> = near.iter().map(|x| -x).collect();
        let with_id = |id: &str, mut write: crate::index::Write| {
            if let crate::index::Write::Upsert(u) = &mut write {
                u.doc.id = id.into();
                u.doc.chunks[0].id = format!("{id}#0");
                u.content_hash = u.doc.content_hash();
            }
            write
        };
        // Predefined roles the searches find (an index the notes are about), among fillers …
        let mut writes: Vec<_> = ["roles/viewer", "roles/browser"]
            .into_iter()
            .enumerate()
            .map(|(i, id)| with_id(id, record(400 + i, &format!("Filler {id}"), "Filler", near.clone())))
            .collect();
        writes.extend((0..300).map(|i| record(i, &format!("Filler {i}"), &format!("Filler {i}"), near.clone())));
        // … and Storage Object Creator (of another kind, for the filter below) in words the
        // question does not use, the farthest from it: neither search finds it, its note does.
        let mut creator = with_id(
            "roles/storage.objectCreator",
            record(300, "Storage Object Creator", "Access to create objects.", far),
        );
        if let crate::index::Write::Upsert(u) = &mut creator {
            u.doc.kind = "role".into();
            u.content_hash = u.doc.content_hash();
        }
        writes.push(creator);
        index.apply(writes).await.unwrap();
        let hits = search(&index, &embedder, question, 10, &Filters::default()).await.unwrap();
        assert_eq!(hits[0].id, "roles/storage.objectCreator", "{hits:?}");
        // A filter the fillers pass and it does not: it joins only through the filters.
        let records_only = Filters { kinds: vec!["record".into()], ..Filters::default() };
        let hits = search(&index, &embedder, question, 10, &records_only).await.unwrap();
        assert!(!hits.is_empty() && hits.iter().all(|h| h.kind == "record"), "{hits:?}");
    }

    #[tokio::test]
    async fn the_level_asked_for_ranks_first_among_a_products_roles() {
        let (_dir, index, embedder) = hashed_index().await;
        // Alike but for the level their titles name; the viewer is first in every list.
        let v = vec![0.25; 16];
        let writes = vec![record(1, "Widget Viewer", "Widgets", v.clone()), record(2, "Widget Admin", "Widgets", v)];
        index.apply(writes).await.unwrap();
        let first = |q: &'static str| {
            let (index, embedder) = (&index, &embedder);
            async move { search(index, embedder, q, 2, &Filters::default()).await.unwrap()[0].id.clone() }
        };
        assert_eq!(first("delete the old widgets").await, "r:2");
        assert_eq!(first("look at the widgets").await, "r:1");
    }

    #[test]
    fn ids_are_read_from_identifiers_not_from_words() {
        assert_eq!(
            named_ids("attach arn:aws:iam::aws:policy/AWSLambdaBasicExecutionRole, or SecurityAudit?"),
            ["arn:aws:iam::aws:policy/AWSLambdaBasicExecutionRole", "AWSLambdaBasicExecutionRole", "SecurityAudit"]
        );
        assert_eq!(
            named_ids("need roles/storage.objectViewer."),
            ["roles/storage.objectViewer", "storage.objectViewer"]
        );
        assert_eq!(named_ids("grant storage.objectAdmin"), ["storage.objectAdmin", "roles/storage.objectAdmin"]);
        assert_eq!(named_ids("assign acdd72a7-3385-48ef-bd42-f606fba81ae7"), ["acdd72a7-3385-48ef-bd42-f606fba81ae7"]);
        assert!(named_ids("a viewer role for our bucket. Then more, read-only").is_empty());
    }

    #[test]
    fn questions_that_only_read_are_told_from_ones_that_change() {
        for q in [
            "I need to read files in a storage bucket",
            "need to look at logs in logs explorer",
            "read only on rds",
            "kubectl read-only on the prod cluster, no edits or deletes",
            "look at our EC2 instances without being able to change anything",
            "check the queue depth, but I must not modify or purge it",
        ] {
            assert!(asks_only_to_read(q), "{q}");
        }
        for q in [
            "app needs to read, write and delete objects in a bucket",
            "look at and restart the VMs",
            "who can approve payroll access",
            "deploy new revisions to Cloud Run",
            "read the objects and delete the old ones, not the bucket",
            "it can't see the logs, so let it write them",
        ] {
            assert!(!asks_only_to_read(q), "{q}");
        }
        assert!(
            grants_change("Storage Admin") && grants_change("AmazonS3FullAccess") && grants_change("Pub/Sub Editor")
        );
        assert!(!grants_change("Storage Object Viewer") && !grants_change("AmazonS3ReadOnlyAccess"));
        assert!(!grants_change("Certificate Manager Viewer"));

        for q in ["app needs to read, write and delete objects in a bucket", "deploy new revisions to Cloud Run"] {
            assert!(asks_to_change(q), "{q}");
        }
        for q in [
            "I need to read files in a storage bucket",
            "kubectl read-only on the prod cluster, no edits or deletes",
            "read only, but I run the reports myself",
        ] {
            assert!(!asks_to_change(q), "{q}");
        }
        assert!(grants_only_reading("Storage Object Viewer") && grants_only_reading("AmazonS3ReadOnlyAccess"));
        assert!(grants_only_reading("Storage Legacy Bucket Reader"));
        assert!(!grants_only_reading("Storage Admin") && !grants_only_reading("Pub/Sub Editor"));
    }

    #[test]
    fn verbs_name_levels_unless_a_negation_rules_them_out() {
        let named = |q: &str, title: &str| {
            let q: HashSet<String> = words(&expand_query(q)).into_iter().collect();
            title_words_named(&q, title)
        };
        assert_eq!(named("upload files to a bucket", "Storage Object Creator"), 1.0);
        assert_eq!(named("kick off executions of a cloud workflow", "Workflows Invoker"), 1.0);
        assert_eq!(named("write objects to the bucket", "Storage Object Writer"), 1.0);
        assert!(named("read objects in the bucket, no write access", "Storage Object Writer") < 1.0);
        assert!(
            named("look at the objects in a bucket without being able to update them", "Storage Object Editor") < 1.0
        );
    }

    #[test]
    fn long_names_rank_a_little_lower() {
        assert_eq!(breadth_prior("Viewer"), 1.0);
        assert_eq!(breadth_prior("AmazonEC2FullAccess"), breadth_prior("Compute Network Admin Role"));
        assert!(breadth_prior("AWSQuickSetupStartStopInstancesExecutionPolicy") < breadth_prior("AmazonEC2FullAccess"));
    }
}
