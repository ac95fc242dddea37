//! The source of truth for entities (roles, applications, users …).
//!
//! Ingestion keeps the latest row per key in a local entity store (`local`), which is what
//! documents are rendered from; `/chat` will validate against it, or against live Postgres
//! when a database is configured.

pub mod local;

pub use local::{RowOutcome, StoredRow};
