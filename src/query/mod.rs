//! Answering: extract → validate → retrieve → answer → log. This build has the retriever,
//! which `askiam search` (and later `/chat`) use, so that both rank exactly alike.

pub mod eval;
pub mod retrieve;
