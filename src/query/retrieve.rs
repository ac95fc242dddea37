//! Hybrid retrieval: the question embedded as a query, keyword + vector search fused by the
//! index, then one index-independent rerank step: documents whose title the question names.
//!
//! People ask about things by name ("payroll administrator", "I need the HR Analyst role");
//! a document *about* that thing should outrank documents that merely mention it (an SoD rule
//! naming the role, a policy listing it). Fusion scores alone can't tell the two apart, so a
//! document whose whole title appears in the question gets a bonus worth one first place in
//! the fused list, scaled by how much of the question its title covers. This lives here, not
//! in the index, so that every index implementation ranks alike.

use std::collections::HashSet;

use crate::embed::{EmbedError, Embedder, InputKind};
use crate::index::{Hit, Index, IndexError, SearchRequest};

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub kinds: Vec<String>,
    pub application: Option<String>,
}

/// The bonus for a title fully named by the question: one first place in reciprocal-rank
/// fusion (k = 60).
const TITLE_BONUS: f32 = 1.0 / 61.0;

/// How many candidates the rerank sees per requested hit.
const CANDIDATES_PER_HIT: usize = 4;

const STOP: &[&str] = &[
    "a", "an", "the", "to", "of", "for", "i", "me", "my", "we", "our", "need", "needs", "want", "get", "give", "access",
    "role", "roles", "who", "what", "which", "how", "do", "does", "is", "are", "can", "in", "on", "and", "or", "with",
    "please", "request", "requesting", "approves", "approve",
];

/// Content words, lower-cased, a plural `s` dropped ("administrators" names "Administrator").
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP.contains(w))
        .map(|w| w.strip_suffix('s').filter(|s| s.len() > 2 && !s.ends_with('s')).unwrap_or(w).to_string())
        .collect()
}

/// 0 unless every content word of `title` is in the question; then the share of the
/// question's content words the title accounts for.
pub fn title_coverage(question: &[String], title: &str) -> f32 {
    let q: HashSet<&str> = question.iter().map(String::as_str).collect();
    let t: HashSet<String> = words(title).into_iter().collect();
    if t.is_empty() || q.is_empty() || !t.iter().all(|w| q.contains(w.as_str())) {
        return 0.0;
    }
    (t.len() as f32 / q.len() as f32).min(1.0)
}

#[tracing::instrument(skip(index, embedder, filters), fields(k))]
pub async fn search(
    index: &dyn Index,
    embedder: &dyn Embedder,
    text: &str,
    k: usize,
    filters: &Filters,
) -> Result<Vec<Hit>, RetrieveError> {
    let vector = embedder.embed(&[text.to_string()], InputKind::Query).await?.pop();
    let req = SearchRequest {
        text: text.to_string(),
        vector,
        k: (k * CANDIDATES_PER_HIT).max(20),
        kinds: filters.kinds.clone(),
        application: filters.application.clone(),
    };
    let mut hits = index.search(&req).await?;
    let question = words(text);
    for h in &mut hits {
        h.score += TITLE_BONUS * title_coverage(&question, &h.title);
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    hits.truncate(k);
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_named_by_the_question_is_covered() {
        let q = words("I need access to the HR Analyst role");
        assert_eq!(title_coverage(&q, "HR Analyst"), 1.0);
        assert_eq!(title_coverage(&q, "HR Analyst Lead"), 0.0);
        assert_eq!(title_coverage(&q, "Segregation of duties: HR Analyst and Payroll Administrator"), 0.0);
        let q = words("payroll administrators");
        assert_eq!(title_coverage(&q, "Payroll Administrator"), 1.0);
        assert_eq!(title_coverage(&q, "Payroll"), 0.5);
    }
}
