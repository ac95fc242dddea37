//! What each predefined role is for, in people's words: role notes, and the requests people
//! make for it.
//!
//! A product's levels are named in its catalogue's own terms ("Storage Object Creator",
//! `AmazonSNSRole`, "IAP-secured Web App User") and described in boilerplate ("Access to
//! create objects in GCS"), while people ask for the job ("our nightly export drops files in a
//! bucket", "SNS asks for a role to log delivery status", "getting 'You don't have access' on
//! the dashboard behind IAP"). The product glossary ([`super::products`]) says which product
//! does the job; these notes say which of its roles does. `notes/notes.tsv` ships one note
//! per Google Cloud predefined role, AWS managed policy and Azure built-in role a person or a
//! workload is given (GCP service agents and AWS service-linked role policies have none):
//! 15–40 words on the jobs it allows, who gets it, and what sets it apart from its siblings.
//!
//! A note describes; a person asks. `notes/requests.tsv` ships three requests per noted role
//! as people put them (a plain request naming the product, a concrete task, a situation or an
//! error that leads to it), so that a question is also compared with questions: the sentence
//! model's training pairs are largely duplicate questions and questions with their answers,
//! and two phrasings of one request lie closer than a request and a description. A role
//! stands by the mean of its two best texts, so one stray phrase does not carry it.
//!
//! Both files were written for askiam from the roles' permissions and knowledge of the
//! products, never from the questions askiam is measured on (docs/retrieval.md). Records whose
//! ids have no note (an organisation's own roles) are ranked as before.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use super::knowledge::{self, Bm25, Texts};
use crate::embed::{EmbedError, Embedder};

/// Plain text, written and amended by hand like the glossary: `cloud \t id \t note`.
static NOTES: &str = include_str!("notes/notes.tsv");

/// The same, three lines per noted role: `cloud \t id \t request`.
static REQUESTS: &str = include_str!("notes/requests.tsv");

/// The notes and requests: per text, the record id it is about and the text that is embedded
/// (the notes first, then the requests).
pub struct Notes {
    ids: Vec<String>,
    texts: Vec<String>,
    known: HashSet<String>,
    hash: String,
    words: Bm25,
}

impl Notes {
    fn parse(notes: &str, requests: &str) -> Notes {
        let mut n = Notes {
            ids: Vec::new(),
            texts: Vec::new(),
            known: HashSet::new(),
            hash: crate::model::text_hash(&format!("{notes}{requests}"))[..12].to_string(),
            words: Bm25::default(),
        };
        for (i, tsv) in [notes, requests].into_iter().enumerate() {
            for line in tsv.lines() {
                let mut cols = line.splitn(3, '\t');
                let (Some(_cloud), Some(id), Some(text)) = (cols.next(), cols.next(), cols.next()) else { continue };
                // A request counts only for a role that has a note.
                if i == 0 {
                    n.known.insert(id.to_string());
                } else if !n.known.contains(id) {
                    continue;
                }
                n.ids.push(id.to_string());
                n.texts.push(text.to_string());
            }
        }
        n.words = Bm25::new(&n.texts);
        n
    }

    /// How many roles have a note.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Whether a record of this id has a note (ingest asks, to embed the notes only for
    /// collections they are about).
    pub fn has(&self, id: &str) -> bool {
        self.known.contains(id)
    }

    fn texts(&self) -> Texts<'_> {
        Texts { name: "notes", hash: &self.hash, texts: &self.texts }
    }
}

pub fn notes() -> &'static Notes {
    static NOTES_PARSED: LazyLock<Notes> = LazyLock::new(|| Notes::parse(NOTES, REQUESTS));
    &NOTES_PARSED
}

/// Computes (or finds) the vectors of the notes and requests for this model, with any provider
/// (ingest).
pub async fn prepare(embedder: &dyn Embedder) -> Result<(), EmbedError> {
    knowledge::vectors(&notes().texts(), embedder, true).await.map(|_| ())
}

/// What the best keyword score among the notes adds to a note's similarity, as for the
/// glossary's cards ([`super::products`]). With the requests, 0.3 and 1.0 were tried too:
/// within one question of 0.6 on the tuning sets.
const KEYWORD_WEIGHT: f32 = 0.6;

/// The ids of the `n` records whose notes and requests are nearest the question, nearest
/// first, with their score: the mean of the role's two best texts' scores
/// ([`knowledge::nearest`]). Empty when the vectors cannot be had for this model or the
/// question was embedded by another.
///
/// The mean of two, chosen on the tuning sets (questions in the top 5, GCP of 245 / AWS of
/// 247): the best text alone 239 / 237, the mean of the best two 239 / 241, the best plus 0.3
/// or 0.6 of the second 239 / 240, the mean of all four 237 / 238.
pub async fn likely(embedder: &dyn Embedder, question: &str, query: &[f32], n: usize) -> Vec<(&'static str, f32)> {
    let notes = notes();
    let Some(vectors) = knowledge::for_search(&notes.texts(), embedder, query.len()).await else { return Vec::new() };
    let scored = knowledge::nearest(&vectors, query, &notes.words, question, KEYWORD_WEIGHT);
    let mut roles = by_role(scored.into_iter().map(|(s, i)| (notes.ids[i].as_str(), s)));
    roles.truncate(n);
    roles
}

/// Each role's score from its texts' scores (best first): the mean of its best two.
fn by_role<'a>(scored: impl Iterator<Item = (&'a str, f32)>) -> Vec<(&'a str, f32)> {
    let mut best: HashMap<&str, Vec<f32>> = HashMap::new();
    for (id, s) in scored {
        let scores = best.entry(id).or_default();
        if scores.len() < 2 {
            scores.push(s);
        }
    }
    let mut roles: Vec<(&str, f32)> =
        best.into_iter().map(|(id, s)| (id, s.iter().sum::<f32>() / s.len() as f32)).collect();
    roles.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    roles
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::InputKind;

    #[test]
    fn every_noted_role_has_one_note_in_its_clouds_form() {
        let mut seen = std::collections::HashSet::new();
        for line in NOTES.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 3, "{line}");
            let id_form = match cols[0] {
                "gcp" => cols[1].starts_with("roles/"),
                "aws" => cols[1].chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
                "azure" => cols[1].len() == 36 && cols[1].bytes().filter(|&b| b == b'-').count() == 4,
                _ => false,
            };
            assert!(id_form, "{line}");
            assert!(cols[2].split_whitespace().count() >= 10, "{line}");
            assert!(seen.insert(cols[1]), "two notes for {}", cols[1]);
        }
        let n = notes();
        assert_eq!(n.len(), seen.len());
        assert!(n.len() > 4000, "{}", n.len());
        for id in ["roles/storage.objectCreator", "AmazonSNSRole", "acdd72a7-3385-48ef-bd42-f606fba81ae7"] {
            assert!(n.has(id), "no note for {id}");
        }
        assert!(!n.has("roles/storage.objectcreator"), "ids are exact");
    }

    #[test]
    fn every_noted_role_has_three_requests_and_every_request_a_note() {
        let notes = notes();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for line in REQUESTS.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 3, "{line}");
            assert!(notes.has(cols[1]), "a request for a role without a note: {line}");
            let words = cols[2].split_whitespace().count();
            assert!((6..=30).contains(&words), "{line}");
            *count.entry(cols[1]).or_default() += 1;
        }
        assert_eq!(count.len(), notes.len(), "every noted role has requests");
        assert!(count.values().all(|&c| c == 3), "three requests a role");
        assert_eq!(notes.texts.len(), notes.len() * 4, "a note and three requests a role");
    }

    #[test]
    fn a_role_stands_by_its_two_best_texts() {
        // One stray text (0.9) does not outrank a role two of whose texts fit (0.8, 0.7); a role
        // with one text stands by it.
        let scored = [("stray", 0.9), ("fits", 0.8), ("fits", 0.7), ("stray", 0.2), ("fits", 0.6), ("one", 0.74)];
        let roles = by_role(scored.into_iter());
        let ids: Vec<&str> = roles.iter().map(|r| r.0).collect();
        assert_eq!(ids, ["fits", "one", "stray"], "{roles:?}");
        assert!((roles[0].1 - 0.75).abs() < 1e-6 && (roles[2].1 - 0.55).abs() < 1e-6, "{roles:?}");
    }

    #[tokio::test]
    async fn the_words_of_a_job_find_the_role_whose_note_describes_it() {
        // A lexical embedder, so the test reads the notes' words, not a model's knowledge.
        let embedder = crate::embed::hash::HashEmbedder::new(1024);
        let question = "the backup job must only drop new files into the GCS bucket, never read or delete them";
        let q = embedder.embed(&[question.into()], InputKind::Query).await.unwrap().remove(0);
        let near = likely(&embedder, question, &q, 3).await;
        assert_eq!(near.len(), 3);
        assert!(near.iter().any(|n| n.0 == "roles/storage.objectCreator"), "{near:?}");
        assert!(near.windows(2).all(|w| w[0].1 >= w[1].1), "nearest first: {near:?}");
        assert!(likely(&embedder, question, &[1.0; 3], 3).await.is_empty(), "a question of another model's dims");
    }
}
