//! The one chat orchestrator: understand → validate → retrieve → generate → log.
//!
//! `askiam chat`, the local server's `POST /chat`, the chat Lambda and the MCP `ask` tool all
//! call `Chat::answer`; the doors only decide who is asking.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use super::generate::{grounded_answer, Generator, Grounding};
use super::log::{ChatLog, EntityOut, LogError, Turn};
use super::retrieve::{self, Filters, RetrieveError};
use super::understand::{understand, Intent, Matcher, Mention};
use super::validate::{validate, Checked, Policy};
use crate::catalog::{Catalog, CatalogError, EntityKind, NamedEntity};
use crate::embed::Embedder;
use crate::index::{Hit, Index};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The request itself is wrong: a 4xx.
    #[error("{0}")]
    BadRequest(String),
    #[error("message is {len} bytes; the limit is {limit}")]
    TooLong { len: usize, limit: usize },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Retrieve(#[from] RetrieveError),
    #[error(transparent)]
    Log(#[from] LogError),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub message: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    pub id: String,
    pub title: String,
    pub source: String,
    pub version: String,
    pub indexed_at: String,
    /// The live row is newer than what the indexed document was rendered from: the answer
    /// states the live facts, this passage is behind.
    pub stale: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub answer: String,
    pub intent: String,
    pub entities: Vec<EntityOut>,
    pub citations: Vec<Citation>,
    pub conversation_id: String,
    /// Which generator wrote the answer (`grounded` when an LLM's answer was rejected).
    pub generator: String,
}

/// The result of checking a bare name.
#[derive(Clone, Debug, Serialize)]
pub struct NameCheck {
    pub entities: Vec<EntityOut>,
    /// Real entities with similar names, when the text names none.
    pub closest: Vec<EntityOut>,
    /// Where the facts came from (`postgres`, `entity store`).
    pub source: String,
}

#[derive(Clone, Debug)]
pub struct ChatSettings {
    pub max_message_bytes: usize,
    /// Logins or ids that may see anyone's assignments.
    pub admins: Vec<String>,
    /// Passages retrieved per question.
    pub k: usize,
    /// How long the catalogue's names are reused before being read again.
    pub names_ttl: Duration,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings { max_message_bytes: 4096, admins: vec![], k: 5, names_ttl: Duration::from_secs(30) }
    }
}

/// The catalogue's names for matching, read at most once per TTL.
struct NameCache {
    current: RwLock<Option<(Instant, Arc<Matcher>)>>,
    ttl: Duration,
}

impl NameCache {
    async fn get(&self, catalog: &dyn Catalog) -> Result<Arc<Matcher>, CatalogError> {
        if let Some((at, m)) = self.current.read().await.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(m.clone());
            }
        }
        let mut slot = self.current.write().await;
        if let Some((at, m)) = slot.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(m.clone());
            }
        }
        let m = Arc::new(Matcher::new(catalog.names().await?));
        *slot = Some((Instant::now(), m.clone()));
        Ok(m)
    }
}

pub struct Chat {
    pub catalog: Arc<dyn Catalog>,
    pub index: Arc<dyn Index>,
    pub embedder: Arc<dyn Embedder>,
    pub generator: Arc<dyn Generator>,
    pub log: Arc<dyn ChatLog>,
    pub settings: ChatSettings,
    names: NameCache,
}

/// Conversation ids are opaque to us but end up in logs and keys: keep them plain.
fn valid_conversation_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn new_conversation_id() -> String {
    format!("c-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

impl Chat {
    pub fn new(
        catalog: Arc<dyn Catalog>,
        index: Arc<dyn Index>,
        embedder: Arc<dyn Embedder>,
        generator: Arc<dyn Generator>,
        log: Arc<dyn ChatLog>,
        settings: ChatSettings,
    ) -> Self {
        let names = NameCache { current: RwLock::new(None), ttl: settings.names_ttl };
        Chat { catalog, index, embedder, generator, log, settings, names }
    }

    /// Answers one message. `asker` is who is asking as the door established it (a token's
    /// user, an authorizer claim, or — without auth — the request's `user`).
    #[tracing::instrument(skip_all, fields(conversation_id, intent))]
    pub async fn answer(&self, req: &ChatRequest, asker: Option<&str>) -> Result<ChatResponse, ChatError> {
        let started = Instant::now();
        let message = req.message.trim();
        if message.is_empty() {
            return Err(ChatError::BadRequest("message is empty".into()));
        }
        if req.message.len() > self.settings.max_message_bytes {
            return Err(ChatError::TooLong { len: req.message.len(), limit: self.settings.max_message_bytes });
        }
        let conversation_id = match &req.conversation_id {
            Some(id) if valid_conversation_id(id) => id.clone(),
            Some(_) => {
                return Err(ChatError::BadRequest("conversation_id must be 1-128 letters, digits, '-' or '_'".into()))
            }
            None => new_conversation_id(),
        };
        tracing::Span::current().record("conversation_id", conversation_id.as_str());
        let asker = asker.map(str::trim).filter(|a| !a.is_empty());

        let matcher = self.names.get(self.catalog.as_ref()).await?;
        let understanding = understand(&matcher, message);
        tracing::Span::current().record("intent", understanding.intent.as_str());

        // A follow-up without names means the previous turn's entities, if that turn was
        // the same asker's.
        let previous = match &req.conversation_id {
            Some(id) => self.log.last_turn(id).await?,
            None => None,
        };
        let mut mentions = understanding.mentions.clone();
        if understanding.refers_back {
            if let Some(prev) = previous.as_ref().filter(|p| p.user.as_deref() == asker) {
                mentions.extend(carried_mentions(&matcher, &prev.entities));
            }
        }
        let mut understanding = understanding;
        if understanding.intent == Intent::Search && mentions.iter().any(|m| m.kind != EntityKind::User) {
            understanding.intent = Intent::RoleInfo;
        }

        let policy = Policy { asker, admins: &self.settings.admins };
        let checked = validate(self.catalog.as_ref(), &matcher, &understanding, &mentions, &policy).await?;

        // A follow-up's words ("who approves it?") say little; search for what it refers to.
        let query = if understanding.refers_back && mentions.len() > understanding.mentions.len() {
            let names: Vec<&str> = mentions.iter().map(|m| m.text.as_str()).collect();
            format!("{message} {}", names.join(" "))
        } else {
            message.to_string()
        };
        let passages = self.retrieve(&query, understanding.intent, &checked).await?;
        let mut checked = checked;
        // A name that does not exist: offer real roles, by name first, then by meaning.
        for u in &mut checked.unknown {
            if u.kind == EntityKind::Role && u.closest.len() < 3 {
                for h in passages.iter().filter(|h| h.kind == "role") {
                    let id = h.metadata.get("role_id").and_then(|v| v.as_str()).unwrap_or(&h.id).to_string();
                    // The index may lag the catalogue: offer only roles the catalogue has.
                    let real = matcher.lookup(EntityKind::Role, &id).is_some();
                    if real && u.closest.len() < 3 && !u.closest.iter().any(|r| r.id == id) {
                        u.closest.push(crate::catalog::Ref { id, name: h.title.clone() });
                    }
                }
            }
        }

        let mut grounding = Grounding {
            question: message,
            draft: "",
            intent: understanding.intent,
            checked: &checked,
            passages: &passages,
            asker_known: checked.asker.is_some(),
        };
        let grounded = grounded_answer(&grounding);
        grounding.draft = &grounded;
        let (answer, generator) = if self.generator.name() == "grounded" {
            (grounded.clone(), "grounded".to_string())
        } else {
            match self.generator.generate(&grounding).await {
                Ok(text) if check_names(&matcher, &text, &grounded, &checked).is_ok() => {
                    (text, self.generator.name().to_string())
                }
                Ok(text) => {
                    let bad = check_names(&matcher, &text, &grounded, &checked).unwrap_err();
                    tracing::warn!(generator = self.generator.name(), names = ?bad, "answer named entities the validator did not confirm; using the grounded answer");
                    (grounded.clone(), "grounded".to_string())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "generator failed; using the grounded answer");
                    (grounded.clone(), "grounded".to_string())
                }
            }
        };

        let entities = entities_out(&mentions, &checked);
        let citations = citations(&passages, &checked);
        let turn = Turn {
            conversation_id: conversation_id.clone(),
            turn: previous.as_ref().map(|p| p.turn + 1).unwrap_or(1),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            user: asker.map(str::to_string),
            question: message.to_string(),
            intent: understanding.intent.as_str().to_string(),
            entities: entities.clone(),
            citations: citations.iter().map(|c| c.id.clone()).collect(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            generator: generator.clone(),
        };
        self.log.record(&turn).await?;
        tracing::info!(
            latency_ms = turn.latency_ms,
            entities = entities.len(),
            citations = citations.len(),
            "chat turn"
        );
        Ok(ChatResponse {
            answer,
            intent: understanding.intent.as_str().to_string(),
            entities,
            citations,
            conversation_id,
            generator,
        })
    }

    /// What a bare name stands for in the catalogue (the MCP `validate_entity` tool): the
    /// entities it names, each checked against the source, or the closest real names.
    pub async fn validate_names(&self, text: &str) -> Result<NameCheck, ChatError> {
        let matcher = self.names.get(self.catalog.as_ref()).await?;
        let u = understand(&matcher, text);
        let mut mentions: Vec<Mention> = u.mentions.into_iter().filter(|m| m.entity.is_some()).collect();
        if mentions.is_empty() {
            mentions.push(Mention { kind: EntityKind::Role, text: text.trim().to_string(), entity: None });
        }
        let u = super::understand::Understanding {
            intent: Intent::RoleInfo,
            mentions: vec![],
            about_self: false,
            refers_back: false,
        };
        let policy = Policy { asker: None, admins: &[] };
        let checked = validate(self.catalog.as_ref(), &matcher, &u, &mentions, &policy).await?;
        let mut closest = Vec::new();
        if checked.unknown.iter().any(|x| x.text == text.trim()) {
            for kind in [EntityKind::Role, EntityKind::Application, EntityKind::ApproverGroup] {
                closest.extend(matcher.closest(kind, text, 3).into_iter().map(|e| EntityOut {
                    kind: kind.as_str().into(),
                    name: e.name.clone(),
                    id: Some(e.id.clone()),
                    valid: true,
                    status: "valid".into(),
                }));
            }
        }
        Ok(NameCheck {
            entities: entities_out(&mentions, &checked),
            closest,
            source: self.catalog.source().to_string(),
        })
    }

    /// Passages for the question, with the documents of the named entities first: an answer
    /// about HR Analyst cites HR Analyst's document even when search ranks it lower.
    async fn retrieve(&self, query: &str, intent: Intent, checked: &Checked) -> Result<Vec<Hit>, ChatError> {
        let k = self.settings.k.max(1);
        let mut wanted: Vec<String> = checked.roles.iter().map(|r| format!("role:{}", r.facts.id)).collect();
        // A list of someone's roles is backed by those roles' documents, not by a search.
        let listed: Vec<String> =
            checked.users.iter().filter_map(|u| u.roles.as_ref()).flatten().map(|r| format!("role:{}", r.id)).collect();
        let hits = if intent == Intent::UserRoles && checked.unknown.is_empty() {
            wanted.extend(listed);
            vec![]
        } else {
            retrieve::search(self.index.as_ref(), self.embedder.as_ref(), query, k, &Filters::default()).await?
        };
        wanted.extend(checked.applications.iter().map(|a| format!("application:{}", a.id)));
        wanted.extend(checked.groups.iter().map(|g| format!("approver_group:{}", g.0.id)));
        let missing: Vec<String> = wanted.iter().filter(|id| !hits.iter().any(|h| &h.id == *id)).cloned().collect();
        let mut out =
            if missing.is_empty() { vec![] } else { self.index.get(&missing).await.map_err(RetrieveError::from)? };
        // Named entities' own documents lead, in the order named.
        out.sort_by_key(|h| wanted.iter().position(|w| *w == h.id).unwrap_or(usize::MAX));
        let mut rest = hits;
        rest.sort_by_key(|h| wanted.iter().position(|w| *w == h.id).unwrap_or(usize::MAX));
        out.extend(rest);
        out.truncate(k.max(wanted.len()));
        Ok(out)
    }
}

/// Mentions that stand for the previous turn's valid entities.
fn carried_mentions(matcher: &Matcher, prev: &[EntityOut]) -> Vec<Mention> {
    prev.iter()
        .filter(|e| e.valid && e.kind != "user")
        .filter_map(|e| {
            let kind = match e.kind.as_str() {
                "role" => EntityKind::Role,
                "application" => EntityKind::Application,
                "approver_group" => EntityKind::ApproverGroup,
                _ => return None,
            };
            let entity = matcher.lookup(kind, e.id.as_deref()?)?.clone();
            Some(Mention { kind, text: entity.name.clone(), entity: Some(entity) })
        })
        .collect()
}

fn entities_out(mentions: &[Mention], checked: &Checked) -> Vec<EntityOut> {
    let mut out: Vec<EntityOut> = Vec::new();
    let mut seen = HashSet::new();
    for r in &checked.roles {
        let status = if !r.conflicts.is_empty() {
            "conflict"
        } else if r.held == Some(true) {
            "held"
        } else {
            "valid"
        };
        seen.insert(r.facts.id.clone());
        out.push(EntityOut {
            kind: "role".into(),
            name: r.facts.name.clone(),
            id: Some(r.facts.id.clone()),
            valid: true,
            status: status.into(),
        });
    }
    for a in &checked.applications {
        seen.insert(a.id.clone());
        out.push(EntityOut {
            kind: "application".into(),
            name: a.name.clone(),
            id: Some(a.id.clone()),
            valid: true,
            status: "valid".into(),
        });
    }
    for (g, _) in &checked.groups {
        seen.insert(g.id.clone());
        out.push(EntityOut {
            kind: "approver_group".into(),
            name: g.name.clone(),
            id: Some(g.id.clone()),
            valid: true,
            status: "valid".into(),
        });
    }
    for u in &checked.users {
        seen.insert(u.facts.id.clone());
        out.push(EntityOut {
            kind: "user".into(),
            name: u.facts.username.clone(),
            id: Some(u.facts.id.clone()),
            valid: true,
            status: if u.refused { "restricted" } else { "valid" }.into(),
        });
    }
    for u in &checked.unknown {
        out.push(EntityOut {
            kind: u.kind.as_str().into(),
            name: u.text.clone(),
            id: None,
            valid: false,
            status: "not_found".into(),
        });
    }
    // Keep the question's order.
    out.sort_by_key(|e| {
        mentions
            .iter()
            .position(|m| m.entity.as_ref().map(|x| Some(&x.id) == e.id.as_ref()).unwrap_or(m.text == e.name))
            .unwrap_or(usize::MAX)
    });
    out
}

fn citations(passages: &[Hit], checked: &Checked) -> Vec<Citation> {
    passages
        .iter()
        .map(|h| {
            let indexed: Option<chrono::DateTime<chrono::Utc>> =
                h.metadata.get("updated_at").and_then(|v| v.as_str()).and_then(crate::model::parse_timestamp);
            let live = match h.kind.as_str() {
                "role" => checked
                    .roles
                    .iter()
                    .find(|r| h.id == format!("role:{}", r.facts.id))
                    .and_then(|r| r.facts.updated_at),
                "application" => checked
                    .applications
                    .iter()
                    .find(|a| h.id == format!("application:{}", a.id))
                    .and_then(|a| a.updated_at),
                _ => None,
            };
            let stale = matches!((live, indexed), (Some(l), Some(i)) if l > i);
            Citation {
                id: h.id.clone(),
                title: h.title.clone(),
                source: h.source.clone(),
                version: h.version.clone(),
                indexed_at: h.indexed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                stale,
            }
        })
        .collect()
}

/// An LLM answer may name only entities the grounded answer (or the validator) names; the
/// names it invented, if any.
pub fn check_names(matcher: &Matcher, answer: &str, grounded: &str, checked: &Checked) -> Result<(), Vec<String>> {
    let allowed: HashSet<String> = understand(matcher, grounded)
        .mentions
        .iter()
        .filter_map(|m| m.entity.as_ref().map(|e| e.id.clone()))
        .chain(checked.roles.iter().map(|r| r.facts.id.clone()))
        .chain(checked.applications.iter().map(|a| a.id.clone()))
        .chain(checked.asker.iter().map(|a| a.id.clone()))
        .collect();
    let bad: Vec<String> = understand(matcher, answer)
        .mentions
        .iter()
        .filter_map(|m| m.entity.as_ref())
        .filter(|e: &&NamedEntity| !allowed.contains(&e.id))
        .map(|e| e.name.clone())
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad)
    }
}
