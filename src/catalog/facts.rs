//! The query side's view of the source of truth: the `Catalog` seam.
//!
//! `/chat` never trusts the index for facts it states: the index may lag the database by a
//! batch, and a retrieved passage is text, not a fact. Every entity a question names is checked
//! here — against live Postgres when a database is configured (`postgres`), else against the
//! entity store that ingestion keeps (`store`). Both answer the same small set of questions,
//! each a few indexed lookups, so a chat turn stays in the low milliseconds.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalogue database: {0}")]
    Database(String),
    #[error("entity store: {0}")]
    Store(#[from] crate::store::StoreError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Role,
    Application,
    ApproverGroup,
    User,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Role => "role",
            EntityKind::Application => "application",
            EntityKind::ApproverGroup => "approver_group",
            EntityKind::User => "user",
        }
    }
}

/// An entity as questions name it: its display name and other names (a user's login).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedEntity {
    pub kind: EntityKind,
    pub id: String,
    pub name: String,
    pub aliases: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ref {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApproverGroup {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoleFacts {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub application: Option<Ref>,
    pub risk_level: Option<String>,
    pub requestable: bool,
    pub approver_group: Option<ApproverGroup>,
    /// `permission (description)` per entitlement, in id order.
    pub entitlements: Vec<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A role of an application, with who approves it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppRole {
    pub id: String,
    pub name: String,
    pub requestable: bool,
    pub approver_group: Option<ApproverGroup>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppFacts {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub criticality: Option<String>,
    pub owner_email: Option<String>,
    pub roles: Vec<AppRole>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UserFacts {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub title: Option<String>,
    pub department: Option<String>,
    pub manager_id: Option<String>,
    pub status: Option<String>,
}

/// A segregation-of-duties rule seen from one role: the role it must not be combined with.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SodRule {
    pub id: String,
    pub other: Ref,
    pub severity: Option<String>,
    pub description: Option<String>,
}

#[async_trait]
pub trait Catalog: Send + Sync {
    /// Where the facts come from, for logs and answers ("postgres", "entity store").
    fn source(&self) -> &'static str;

    /// Every live role, application, approver group and user, for matching names in
    /// questions. Callers cache it (see `NameCache`); it is the one broad read.
    async fn names(&self) -> Result<Vec<NamedEntity>, CatalogError>;

    async fn role(&self, id: &str) -> Result<Option<RoleFacts>, CatalogError>;

    async fn application(&self, id: &str) -> Result<Option<AppFacts>, CatalogError>;

    async fn approver_group(&self, id: &str) -> Result<Option<(ApproverGroup, Vec<Ref>)>, CatalogError>;

    async fn user(&self, id: &str) -> Result<Option<UserFacts>, CatalogError>;

    /// The live roles a user holds, by name.
    async fn user_roles(&self, user_id: &str) -> Result<Vec<Ref>, CatalogError>;

    /// The SoD rules naming this role, each with the other role.
    async fn sod_rules(&self, role_id: &str) -> Result<Vec<SodRule>, CatalogError>;
}
