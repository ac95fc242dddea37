//! Retrieval quality, measured: recall@k and MRR@10 over a labelled question set, through
//! exactly the ranking `askiam search` and `/chat` use (`retrieve::search`).
//!
//! A set is JSON Lines, `{"q": "...", "expect": ["<doc id>", ...]}` a line, where `expect`
//! lists every answer an IAM admin would accept. So recall@k of one question is 1 when any
//! expected id is in the top k (a user needs one right answer, not all of them), and MRR
//! uses the rank of the first expected id within the top 10.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::retrieve::{self, Filters, RetrieveError};
use crate::embed::Embedder;
use crate::index::Index;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("reading the question set: {0}")]
    Io(#[from] std::io::Error),
    #[error("question set line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("the question set is empty")]
    Empty,
    #[error(transparent)]
    Retrieve(#[from] RetrieveError),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Question {
    pub q: String,
    pub expect: Vec<String>,
    /// Optional tag (e.g. `dev` / `test`) to report splits separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub q: String,
    pub expect: Vec<String>,
    /// Rank (1-based) of the first expected id among all hits fetched (`max(k, 10)`);
    /// MRR@10 counts it only within the top 10.
    pub rank: Option<usize>,
    pub recall: f64,
    pub top: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub questions: usize,
    pub k: usize,
    pub recall_at_k: f64,
    pub mrr_at_10: f64,
    /// The same figures per split, when questions carry one.
    pub splits: Vec<SplitReport>,
    pub outcomes: Vec<Outcome>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SplitReport {
    pub split: String,
    pub questions: usize,
    pub recall_at_k: f64,
    pub mrr_at_10: f64,
}

pub fn read_questions(reader: impl BufRead) -> Result<Vec<Question>, EvalError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() || line.trim_start().starts_with("//") {
            continue;
        }
        let q: Question =
            serde_json::from_str(&line).map_err(|e| EvalError::Line { line: i + 1, reason: e.to_string() })?;
        if q.expect.is_empty() {
            return Err(EvalError::Line { line: i + 1, reason: "\"expect\" lists no ids".into() });
        }
        out.push(q);
    }
    if out.is_empty() {
        return Err(EvalError::Empty);
    }
    Ok(out)
}

fn summarize<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> (usize, f64, f64) {
    let (mut n, mut recall, mut rr) = (0usize, 0.0, 0.0);
    for o in outcomes {
        n += 1;
        recall += o.recall;
        rr += o.rank.filter(|r| *r <= 10).map(|r| 1.0 / r as f64).unwrap_or(0.0);
    }
    if n == 0 {
        return (0, 0.0, 0.0);
    }
    (n, recall / n as f64, rr / n as f64)
}

pub async fn evaluate(
    index: &dyn Index,
    embedder: &dyn Embedder,
    questions: &[Question],
    k: usize,
    filters: &Filters,
) -> Result<Report, EvalError> {
    let mut outcomes = Vec::with_capacity(questions.len());
    for q in questions {
        let hits = retrieve::search(index, embedder, &q.q, k.max(10), filters).await?;
        let ids: Vec<String> = hits.into_iter().map(|h| h.id).collect();
        // The rank within everything fetched (at least 10), so a miss shows how far off it is.
        let rank = ids.iter().position(|id| q.expect.contains(id)).map(|p| p + 1);
        let recall = if ids.iter().take(k).any(|id| q.expect.contains(id)) { 1.0 } else { 0.0 };
        outcomes.push(Outcome {
            q: q.q.clone(),
            expect: q.expect.clone(),
            rank,
            recall,
            top: ids.into_iter().take(k).collect(),
            split: q.split.clone(),
        });
    }
    let (questions_n, recall_at_k, mrr_at_10) = summarize(outcomes.iter());
    let mut names: Vec<String> = outcomes.iter().filter_map(|o| o.split.clone()).collect();
    names.sort();
    names.dedup();
    let splits = names
        .into_iter()
        .map(|s| {
            let (n, r, m) = summarize(outcomes.iter().filter(|o| o.split.as_deref() == Some(s.as_str())));
            SplitReport { split: s, questions: n, recall_at_k: r, mrr_at_10: m }
        })
        .collect();
    Ok(Report { questions: questions_n, k, recall_at_k, mrr_at_10, splits, outcomes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_sets_are_validated() {
        let qs = read_questions("{\"q\":\"a\",\"expect\":[\"x\"],\"split\":\"dev\"}\n\n".as_bytes()).unwrap();
        assert_eq!(qs[0].split.as_deref(), Some("dev"));
        let e = read_questions("{\"q\":\"a\",\"expect\":[]}".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(matches!(read_questions("".as_bytes()), Err(EvalError::Empty)));
    }
}
