//! What each predefined role is for, in people's words: role notes.
//!
//! A product's levels are named in its catalogue's own terms ("Storage Object Creator",
//! `AmazonSNSRole`, "IAP-secured Web App User") and described in boilerplate ("Access to
//! create objects in GCS"), while people ask for the job ("our nightly export drops files in a
//! bucket", "SNS asks for a role to log delivery status", "getting 'You don't have access' on
//! the dashboard behind IAP"). The product glossary ([`super::products`]) says which product
//! does the job; these notes say which of its roles does. `notes/notes.tsv` ships one note
//! per Google Cloud predefined role, AWS managed policy and Azure built-in role a person or a
//! workload is given (GCP service agents and AWS service-linked role policies have none):
//! 15–40 words on the jobs it
//! allows, who gets it, and what sets it apart from its siblings. They were written for askiam
//! from the roles' permissions and knowledge of the products, never from the questions askiam
//! is measured on (docs/retrieval.md). Records whose ids have no note (an organisation's own
//! roles) are ranked as before.

use std::collections::HashSet;
use std::sync::LazyLock;

use super::knowledge::{self, Bm25, Texts};
use crate::embed::{EmbedError, Embedder};

/// Plain text, written and amended by hand like the glossary.
static NOTES: &str = include_str!("notes/notes.tsv");

/// The notes: per line, the record id it is about and the text that is embedded.
pub struct Notes {
    ids: Vec<String>,
    texts: Vec<String>,
    known: HashSet<String>,
    hash: String,
    words: Bm25,
}

impl Notes {
    fn parse(tsv: &str) -> Notes {
        let mut n = Notes {
            ids: Vec::new(),
            texts: Vec::new(),
            known: HashSet::new(),
            hash: crate::model::text_hash(tsv)[..12].to_string(),
            words: Bm25::default(),
        };
        for line in tsv.lines() {
            let mut cols = line.splitn(3, '\t');
            let (Some(_cloud), Some(id), Some(note)) = (cols.next(), cols.next(), cols.next()) else { continue };
            n.known.insert(id.to_string());
            n.ids.push(id.to_string());
            n.texts.push(note.to_string());
        }
        n.words = Bm25::new(&n.texts);
        n
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
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
    static NOTES_PARSED: LazyLock<Notes> = LazyLock::new(|| Notes::parse(NOTES));
    &NOTES_PARSED
}

/// Computes (or finds) the notes' vectors for this model, with any provider (ingest).
pub async fn prepare(embedder: &dyn Embedder) -> Result<(), EmbedError> {
    knowledge::vectors(&notes().texts(), embedder, true).await.map(|_| ())
}

/// What the best keyword score among the notes adds to a note's similarity, as for the
/// glossary's cards ([`super::products`]).
const KEYWORD_WEIGHT: f32 = 0.6;

/// The ids of the `n` records whose notes are nearest the question, nearest first, with their
/// score ([`knowledge::nearest`]). Empty when the notes' vectors cannot be had for this model
/// or the question was embedded by another.
pub async fn likely(embedder: &dyn Embedder, question: &str, query: &[f32], n: usize) -> Vec<(&'static str, f32)> {
    let notes = notes();
    let Some(vectors) = knowledge::for_search(&notes.texts(), embedder, query.len()).await else { return Vec::new() };
    knowledge::nearest(&vectors, query, &notes.words, question, KEYWORD_WEIGHT)
        .into_iter()
        .take(n)
        .map(|(s, i)| (notes.ids[i].as_str(), s))
        .collect()
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
