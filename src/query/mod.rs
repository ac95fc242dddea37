//! Answering a question: understand → validate → retrieve → generate → log.
//!
//! Each stage is its own module with a plain function or trait, so tests drive them alone;
//! `chat` is the one orchestrator every door (CLI, local server, Lambda, MCP) calls.

pub mod chat;
pub mod eval;
pub mod generate;
pub mod grants;
pub mod log;
pub mod retrieve;
pub mod services;
pub mod understand;
pub mod validate;
