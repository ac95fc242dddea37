//! The entity store as a `Catalog`: what ingestion last applied, for running without a
//! database (the local demo, tests, a Lambda that only has the index's data dir).
//!
//! Reads are a handful of indexed SQLite lookups on the store's own connection; they are
//! short enough to run inline on the async worker rather than hop to a blocking thread.

use std::sync::Arc;

use async_trait::async_trait;

use super::facts::*;
use super::StoredRow;
use crate::ingest::render::{entitlement_text, name_of};
use crate::model::parse_timestamp;
use crate::schema::truthy;
use crate::store::StateDb;

pub struct StoreCatalog {
    db: Arc<StateDb>,
}

impl StoreCatalog {
    pub fn new(db: Arc<StateDb>) -> Self {
        StoreCatalog { db }
    }

    fn live(&self, table: &str, key: Option<&str>) -> Result<Option<StoredRow>, CatalogError> {
        let Some(key) = key.filter(|k| !k.is_empty()) else { return Ok(None) };
        Ok(self.db.row(table, key)?.filter(|r| !r.deleted))
    }

    fn live_where(&self, table: &str, column: &str, value: &str) -> Result<Vec<StoredRow>, CatalogError> {
        Ok(self.db.rows_where(table, column, value)?.into_iter().filter(|r| !r.deleted).collect())
    }

    fn group(&self, id: Option<&str>) -> Result<Option<ApproverGroup>, CatalogError> {
        Ok(self.live("approver_groups", id)?.map(|g| ApproverGroup {
            name: name_of(&g),
            email: text(&g, "email"),
            id: g.key,
        }))
    }
}

fn text(row: &StoredRow, col: &str) -> Option<String> {
    row.get(col).filter(|s| !s.trim().is_empty()).map(str::to_string)
}

#[async_trait]
impl Catalog for StoreCatalog {
    fn source(&self) -> &'static str {
        "entity store"
    }

    async fn names(&self) -> Result<Vec<NamedEntity>, CatalogError> {
        let mut out = Vec::new();
        for (table, kind) in [
            ("roles", EntityKind::Role),
            ("applications", EntityKind::Application),
            ("approver_groups", EntityKind::ApproverGroup),
        ] {
            for r in self.db.live_rows(table)? {
                out.push(NamedEntity { kind, name: name_of(&r), id: r.key, aliases: vec![] });
            }
        }
        for u in self.db.live_rows("users")? {
            let name = u.get("display_name").or(u.get("username")).unwrap_or(&u.key).to_string();
            let aliases = u.get("username").map(|s| vec![s.to_string()]).unwrap_or_default();
            out.push(NamedEntity { kind: EntityKind::User, id: u.key, name, aliases });
        }
        Ok(out)
    }

    async fn role(&self, id: &str) -> Result<Option<RoleFacts>, CatalogError> {
        let Some(role) = self.live("roles", Some(id))? else { return Ok(None) };
        let application =
            self.live("applications", role.get("application_id"))?.map(|a| Ref { name: name_of(&a), id: a.key });
        let entitlements = self.live_where("entitlements", "role_id", id)?.iter().map(entitlement_text).collect();
        Ok(Some(RoleFacts {
            name: name_of(&role),
            description: text(&role, "description"),
            application,
            risk_level: text(&role, "risk_level"),
            requestable: truthy(role.get("requestable")),
            approver_group: self.group(role.get("approver_group_id"))?,
            entitlements,
            updated_at: role.get("updated_at").and_then(parse_timestamp),
            id: role.key,
        }))
    }

    async fn application(&self, id: &str) -> Result<Option<AppFacts>, CatalogError> {
        let Some(app) = self.live("applications", Some(id))? else { return Ok(None) };
        let mut roles = Vec::new();
        for r in self.live_where("roles", "application_id", id)? {
            roles.push(AppRole {
                name: name_of(&r),
                requestable: truthy(r.get("requestable")),
                approver_group: self.group(r.get("approver_group_id"))?,
                id: r.key,
            });
        }
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(AppFacts {
            name: name_of(&app),
            description: text(&app, "description"),
            criticality: text(&app, "criticality"),
            owner_email: text(&app, "owner_email"),
            roles,
            updated_at: app.get("updated_at").and_then(parse_timestamp),
            id: app.key,
        }))
    }

    async fn approver_group(&self, id: &str) -> Result<Option<(ApproverGroup, Vec<Ref>)>, CatalogError> {
        let Some(group) = self.group(Some(id))? else { return Ok(None) };
        let mut roles: Vec<Ref> = self
            .live_where("roles", "approver_group_id", id)?
            .into_iter()
            .map(|r| Ref { name: name_of(&r), id: r.key })
            .collect();
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some((group, roles)))
    }

    async fn user(&self, id: &str) -> Result<Option<UserFacts>, CatalogError> {
        let Some(u) = self.live("users", Some(id))? else { return Ok(None) };
        Ok(Some(UserFacts {
            username: u.get("username").unwrap_or(&u.key).to_string(),
            display_name: u.get("display_name").or(u.get("username")).unwrap_or(&u.key).to_string(),
            title: text(&u, "title"),
            department: text(&u, "department"),
            manager_id: text(&u, "manager_id"),
            status: text(&u, "status"),
            id: u.key,
        }))
    }

    async fn user_roles(&self, user_id: &str) -> Result<Vec<Ref>, CatalogError> {
        let mut out = Vec::new();
        for ur in self.live_where("user_roles", "user_id", user_id)? {
            if let Some(r) = self.live("roles", ur.get("role_id"))? {
                out.push(Ref { name: name_of(&r), id: r.key });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn sod_rules(&self, role_id: &str) -> Result<Vec<SodRule>, CatalogError> {
        let mut out = Vec::new();
        for (mine, other) in [("role_a_id", "role_b_id"), ("role_b_id", "role_a_id")] {
            for rule in self.live_where("sod_rules", mine, role_id)? {
                if let Some(o) = self.live("roles", rule.get(other))? {
                    out.push(SodRule {
                        other: Ref { name: name_of(&o), id: o.key },
                        severity: text(&rule, "severity"),
                        description: text(&rule, "description"),
                        id: rule.key,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
