//! Ingestion: source → format → render → apply, one pipeline for every door.
//!
//! [`Pipeline`] is what the CLI, `askiam serve` and (later) the Lambdas call. Correctness
//! under at-least-once delivery rests on three things, in this order: the entity store's
//! per-row version guard, the index's per-document guard, and the ledger, which records an
//! object as applied only after its documents are in the index. A crash anywhere re-applies
//! the object, and re-applying is harmless.

pub mod events;
pub mod format;
pub mod ledger;
pub mod pipeline;
pub mod quarantine;
pub mod render;
pub mod route;
pub mod source;
pub mod worker;

pub use pipeline::{IngestError, Pipeline, Summary};
