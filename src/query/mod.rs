//! Answering a question: understand → validate → retrieve → generate → log.
//!
//! Each stage is its own module with a plain function or trait, so tests drive them alone;
//! `chat` is the one orchestrator every door (CLI, local server, Lambda, MCP) calls.

pub mod chat;
pub mod english;
pub mod eval;
pub mod generate;
pub mod grants;
pub mod knowledge;
pub mod log;
pub mod notes;
pub mod products;
pub mod retrieve;
pub mod services;
pub mod understand;
pub mod validate;

/// The text of a gzipped catalogue shipped in the binary (`include_bytes!`; the scripts in
/// `scripts/` build them).
fn shipped_text(gz: &[u8]) -> String {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz).read_to_string(&mut text).expect("a shipped catalogue is valid gzip and UTF-8");
    text
}
