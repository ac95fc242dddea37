//! askiam keeps an IAM knowledge index fresh and answers access questions over it.
//!
//! The data's way through the crate: `ingest` (source → format → render → apply) turns
//! exports and documents into [`model::Document`]s, `embed` turns their text into vectors,
//! and `index` stores and searches them. Every door — the CLI, `askiam serve`, the Lambdas —
//! calls the same async functions of [`ingest::Pipeline`]; only the adapters behind the
//! traits (`Source`, `Embedder`, `Index`, `Catalog`) differ between a laptop and AWS.

pub mod app;
pub mod catalog;
pub mod config;
pub mod embed;
pub mod fixtures;
pub mod http;
pub mod index;
pub mod ingest;
pub mod lambda;
pub mod mcp;
pub mod model;
pub mod query;
pub mod schema;
pub mod store;
