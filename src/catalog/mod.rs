//! The source of truth for entities (roles, applications, users …).
//!
//! Ingestion keeps the latest row per key in a local entity store (`local`), which is what
//! documents are rendered from. `/chat` validates what a question names through the `Catalog`
//! seam (`facts`): live Postgres (`postgres`) when a database is configured, else the entity
//! store (`store`).

pub mod facts;
pub mod local;
pub mod postgres;
pub mod store;

pub use facts::{
    AppFacts, AppRole, ApproverGroup, Catalog, CatalogError, EntityKind, NamedEntity, Ref, RoleFacts, SodRule,
    UserFacts,
};
pub use local::{RowOutcome, StoredRow};
