//! Catalogue rows (and the rows they refer to) → readable documents.
//!
//! A role's document names its application, risk, approver group, entitlements and SoD
//! conflicts, because that is what an employee asks about and what retrieval must match.
//! Documents are rendered from the entity store, never from the change alone, so a change to
//! one row re-renders every document that mentions it ([`dependents`]) and a full reindex is
//! just "render everything again". People (`users`, `user_roles`) render to nothing: they
//! are validated against the entity store but never indexed as searchable text.

use std::collections::BTreeSet;

use crate::catalog::StoredRow;
use crate::model::{kind, text_hash, Chunk, Document, RowData, Version};
use crate::schema::truthy;
use crate::store::{StateDb, StoreError};

/// A document rendered from rows: its kind and the key of its primary row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    pub kind: &'static str,
    pub key: String,
}

impl DocKey {
    pub fn id(&self) -> String {
        format!("{}:{}", self.kind, self.key)
    }

    fn new(kind: &'static str, key: &str) -> Self {
        DocKey { kind, key: key.to_string() }
    }
}

/// The tables whose rows render to documents, and the kind each renders to.
pub const DOC_TABLES: &[(&str, &str)] = &[
    ("applications", kind::APPLICATION),
    ("approver_groups", kind::APPROVER_GROUP),
    ("roles", kind::ROLE),
    ("sod_rules", kind::SOD_RULE),
];

/// The kinds rendered from rows (as opposed to documents and records read from files).
pub const ROW_KINDS: &[&str] = &[kind::APPLICATION, kind::APPROVER_GROUP, kind::ROLE, kind::SOD_RULE];

/// Lists in application and approver-group documents are capped: a document is read by a
/// person and embedded in a 256-token window, and "and 300 more" says enough.
const LIST_CAP: usize = 40;

fn get<'a>(data: &'a RowData, col: &str) -> Option<&'a str> {
    data.get(col).and_then(|v| v.as_deref()).filter(|s| !s.trim().is_empty())
}

/// Documents whose text depends on a row with these values (before or after a change).
pub fn dependents(
    db: &StateDb,
    table: &str,
    key: &str,
    data: &RowData,
    out: &mut BTreeSet<DocKey>,
) -> Result<(), StoreError> {
    match table {
        "applications" => {
            out.insert(DocKey::new(kind::APPLICATION, key));
            for r in db.rows_where("roles", "application_id", key)? {
                out.insert(DocKey::new(kind::ROLE, &r.key));
            }
        }
        "approver_groups" => {
            out.insert(DocKey::new(kind::APPROVER_GROUP, key));
            for r in db.rows_where("roles", "approver_group_id", key)? {
                out.insert(DocKey::new(kind::ROLE, &r.key));
            }
        }
        "roles" => {
            out.insert(DocKey::new(kind::ROLE, key));
            if let Some(app) = get(data, "application_id") {
                out.insert(DocKey::new(kind::APPLICATION, app));
            }
            if let Some(g) = get(data, "approver_group_id") {
                out.insert(DocKey::new(kind::APPROVER_GROUP, g));
            }
            for col in ["role_a_id", "role_b_id"] {
                for rule in db.rows_where("sod_rules", col, key)? {
                    out.insert(DocKey::new(kind::SOD_RULE, &rule.key));
                    for other in ["role_a_id", "role_b_id"] {
                        if let Some(o) = rule.get(other) {
                            out.insert(DocKey::new(kind::ROLE, o));
                        }
                    }
                }
            }
        }
        "entitlements" => {
            if let Some(r) = get(data, "role_id") {
                out.insert(DocKey::new(kind::ROLE, r));
            }
        }
        "sod_rules" => {
            out.insert(DocKey::new(kind::SOD_RULE, key));
            for col in ["role_a_id", "role_b_id"] {
                if let Some(r) = get(data, col) {
                    out.insert(DocKey::new(kind::ROLE, r));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Gathers the rows a document is made of and the newest version among them.
struct Sources<'a> {
    db: &'a StateDb,
    version: Version,
}

impl<'a> Sources<'a> {
    fn live(&mut self, table: &str, key: Option<&str>) -> Result<Option<StoredRow>, StoreError> {
        let Some(key) = key else { return Ok(None) };
        let row = self.db.row(table, key)?.filter(|r| !r.deleted);
        if let Some(r) = &row {
            self.version = self.version.max(r.version);
        }
        Ok(row)
    }

    fn live_where(&mut self, table: &str, col: &str, value: &str) -> Result<Vec<StoredRow>, StoreError> {
        let rows: Vec<StoredRow> = self.db.rows_where(table, col, value)?.into_iter().filter(|r| !r.deleted).collect();
        for r in &rows {
            self.version = self.version.max(r.version);
        }
        Ok(rows)
    }
}

pub(crate) fn name_of(row: &StoredRow) -> String {
    row.get("name").unwrap_or(&row.key).to_string()
}

/// Text ending in a full stop (unless it already ends a sentence).
pub(crate) fn sentence(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() || s.ends_with(['.', '!', '?']) {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

/// An entitlement as role documents and chat answers show it: `permission (description)`.
pub(crate) fn entitlement_text(e: &StoredRow) -> String {
    match (e.get("permission"), e.get("description")) {
        (Some(p), Some(d)) => format!("{p} ({d})"),
        (Some(p), None) => p.to_string(),
        (None, _) => e.key.clone(),
    }
}

fn list_capped(mut names: Vec<String>) -> String {
    names.sort();
    let extra = names.len().saturating_sub(LIST_CAP);
    names.truncate(LIST_CAP);
    let mut s = names.join(", ");
    if extra > 0 {
        s.push_str(&format!(" and {extra} more"));
    }
    s
}

fn normalized_time(v: Option<&str>) -> Option<String> {
    v.and_then(crate::model::parse_timestamp).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Renders one document from the entity store; `None` when its primary row is gone.
pub fn render(db: &StateDb, key: &DocKey) -> Result<Option<Document>, StoreError> {
    let mut src = Sources { db, version: Version::ZERO };
    let mut meta = serde_json::Map::new();
    let (title, table, text) = match key.kind {
        kind::ROLE => {
            let Some(role) = src.live("roles", Some(&key.key))? else { return Ok(None) };
            let name = name_of(&role);
            let app = src.live("applications", role.get("application_id"))?;
            let group = src.live("approver_groups", role.get("approver_group_id"))?;
            let mut text = match &app {
                Some(a) => format!("{name} is a role in {}.", name_of(a)),
                None => format!("{name} is a role."),
            };
            if let Some(d) = role.get("description") {
                text.push(' ');
                text.push_str(&sentence(d));
            }
            let risk = role.get("risk_level").unwrap_or("unspecified");
            text.push_str(&format!("\nRisk level: {risk}."));
            let requestable = truthy(role.get("requestable"));
            text.push_str(if requestable {
                " Requestable: yes, through an access request."
            } else {
                " Requestable: no; it is assigned by administrators only."
            });
            if let Some(g) = &group {
                text.push_str(&format!(" Approved by: {}", name_of(g)));
                if let Some(email) = g.get("email") {
                    text.push_str(&format!(" ({email})"));
                }
                text.push('.');
            }
            let ents = src.live_where("entitlements", "role_id", &key.key)?;
            if !ents.is_empty() {
                let items: Vec<String> = ents.iter().map(entitlement_text).collect();
                text.push_str(&format!("\nGrants: {}.", items.join("; ")));
            }
            let mut conflicts = Vec::new();
            for (mine, other) in [("role_a_id", "role_b_id"), ("role_b_id", "role_a_id")] {
                for rule in src.live_where("sod_rules", mine, &key.key)? {
                    if let Some(o) = src.live("roles", rule.get(other))? {
                        let mut c =
                            format!("{} ({} severity)", name_of(&o), rule.get("severity").unwrap_or("unspecified"));
                        if let Some(d) = rule.get("description") {
                            c.push_str(&format!(": {}", d.trim_end_matches('.')));
                        }
                        conflicts.push(c);
                    }
                }
            }
            if !conflicts.is_empty() {
                conflicts.sort();
                text.push_str(&format!(
                    "\nSegregation of duties: must not be held together with {}.",
                    conflicts.join("; ")
                ));
            }
            meta.insert("role_id".into(), role.key.clone().into());
            if let Some(a) = &app {
                meta.insert("application".into(), name_of(a).into());
                meta.insert("application_id".into(), a.key.clone().into());
            }
            meta.insert("risk_level".into(), risk.into());
            meta.insert("requestable".into(), requestable.into());
            if let Some(g) = &group {
                meta.insert("approver_group".into(), name_of(g).into());
                meta.insert("approver_group_id".into(), g.key.clone().into());
            }
            if let Some(t) = normalized_time(role.get("updated_at")) {
                meta.insert("updated_at".into(), t.into());
            }
            (name, "roles", text)
        }
        kind::APPLICATION => {
            let Some(app) = src.live("applications", Some(&key.key))? else { return Ok(None) };
            let name = name_of(&app);
            let mut text = format!("{name} is an application.");
            if let Some(d) = app.get("description") {
                text.push(' ');
                text.push_str(&sentence(d));
            }
            if let Some(c) = app.get("criticality") {
                text.push_str(&format!("\nCriticality: {c}."));
                meta.insert("criticality".into(), c.into());
            }
            if let Some(o) = app.get("owner_email") {
                text.push_str(&format!(" Owner: {o}."));
            }
            let roles: Vec<String> = src.live_where("roles", "application_id", &key.key)?.iter().map(name_of).collect();
            if !roles.is_empty() {
                text.push_str(&format!("\nRoles: {}.", list_capped(roles)));
            }
            meta.insert("application".into(), name.clone().into());
            meta.insert("application_id".into(), app.key.clone().into());
            if let Some(t) = normalized_time(app.get("updated_at")) {
                meta.insert("updated_at".into(), t.into());
            }
            (name, "applications", text)
        }
        kind::APPROVER_GROUP => {
            let Some(g) = src.live("approver_groups", Some(&key.key))? else { return Ok(None) };
            let name = name_of(&g);
            let mut text = format!("{name} is an approver group");
            if let Some(e) = g.get("email") {
                text.push_str(&format!(" ({e})"));
            }
            text.push_str(" that approves access requests.");
            if let Some(d) = g.get("description") {
                text.push(' ');
                text.push_str(&sentence(d));
            }
            let roles: Vec<String> =
                src.live_where("roles", "approver_group_id", &key.key)?.iter().map(name_of).collect();
            if !roles.is_empty() {
                text.push_str(&format!("\nApproves requests for: {}.", list_capped(roles)));
            }
            meta.insert("approver_group_id".into(), g.key.clone().into());
            if let Some(t) = normalized_time(g.get("updated_at")) {
                meta.insert("updated_at".into(), t.into());
            }
            (name, "approver_groups", text)
        }
        kind::SOD_RULE => {
            let Some(rule) = src.live("sod_rules", Some(&key.key))? else { return Ok(None) };
            let a = src.live("roles", rule.get("role_a_id"))?;
            let b = src.live("roles", rule.get("role_b_id"))?;
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (name_of(&a), name_of(&b)),
                // A rule about a role that no longer exists says nothing anyone can act on.
                _ => return Ok(None),
            };
            let title = format!("Segregation of duties: {a} and {b}");
            let mut text = format!(
                "{a} and {b} must not be held by the same person (segregation of duties rule {}, {} severity).",
                rule.key,
                rule.get("severity").unwrap_or("unspecified")
            );
            if let Some(d) = rule.get("description") {
                text.push(' ');
                text.push_str(&sentence(d));
            }
            meta.insert("role_a".into(), a.into());
            meta.insert("role_b".into(), b.into());
            if let Some(t) = normalized_time(rule.get("updated_at")) {
                meta.insert("updated_at".into(), t.into());
            }
            (title, "sod_rules", text)
        }
        other => return Err(StoreError::Corrupt(format!("no renderer for kind {other}"))),
    };
    let id = key.id();
    let chunk = Chunk {
        id: format!("{id}#0-{}", &text_hash(&text)[..8]),
        ordinal: 0,
        heading: None,
        text,
        keywords_only: false,
    };
    Ok(Some(Document {
        id,
        kind: key.kind.to_string(),
        title,
        source: format!("table:{table}"),
        version: src.version,
        metadata: meta,
        chunks: vec![chunk],
    }))
}

impl StateDb {
    pub fn dirty_add(&self, keys: &BTreeSet<DocKey>) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql_err(e))?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO dirty_docs (kind, key) VALUES (?1, ?2)")
                .map_err(|e| self.sql_err(e))?;
            for k in keys {
                stmt.execute(rusqlite::params![k.kind, k.key]).map_err(|e| self.sql_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.sql_err(e))
    }

    pub fn dirty_remove(&self, keys: &[DocKey]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql_err(e))?;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM dirty_docs WHERE kind = ?1 AND key = ?2")
                .map_err(|e| self.sql_err(e))?;
            for k in keys {
                stmt.execute(rusqlite::params![k.kind, k.key]).map_err(|e| self.sql_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.sql_err(e))
    }

    pub fn dirty_all(&self) -> Result<Vec<DocKey>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT kind, key FROM dirty_docs ORDER BY kind, key").map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql_err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(kind, key)| ROW_KINDS.iter().find(|k| **k == kind).map(|kind| DocKey { kind, key }))
            .collect())
    }
}

/// Every document key the entity store can render, in a stable order.
pub fn all_keys(db: &StateDb) -> Result<Vec<DocKey>, StoreError> {
    let mut keys = Vec::new();
    for (table, kind) in DOC_TABLES {
        for k in db.keys(table)? {
            keys.push(DocKey { kind, key: k });
        }
    }
    Ok(keys)
}
