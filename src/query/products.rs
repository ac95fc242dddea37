//! Which products a question is about, from a glossary of what each product is for.
//!
//! People name a product by the job it does ("a render farm for our artists", "chaos
//! experiments on our instances", "browser-based dev environments"), and the catalogues name
//! it by its name (`AWSDeadlineCloud-UserAccessQueues`, "Cloud Workstations Admin") in
//! boilerplate that never says what the product is for. Neither the sentence model nor keyword
//! search bridges that: it is knowledge of the products. `products/products.tsv` ships one
//! card per product (cloud, the IAM prefix its roles and policies are keyed by, its names and
//! nicknames, and 25–60 words on what people use it for in their own words: 295 Google Cloud
//! permission prefixes, 434 AWS action prefixes), written by hand for askiam from knowledge of
//! the products, never from the questions askiam is measured on (docs/retrieval.md). The cards
//! are embedded once per model ([`super::knowledge`]); a search compares the question with
//! them, by vector and by keywords, and the products nearest it bring their roles to the
//! candidates.

use std::sync::LazyLock;

use super::knowledge::{self, Texts};
use crate::embed::{EmbedError, Embedder};

/// Plain text, not gzip like the generated catalogues: it is written by hand, and reviewed
/// and amended line by line.
static PRODUCTS: &str = include_str!("products/products.tsv");

/// The glossary: per card, the family key of the product's records (the IAM prefix ingest
/// records as `askiam_family`) and the text that is embedded ("names: uses").
pub struct Glossary {
    families: Vec<String>,
    texts: Vec<String>,
    hash: String,
    words: knowledge::Bm25,
}

impl Glossary {
    fn parse(tsv: &str) -> Glossary {
        let mut g = Glossary {
            families: Vec::new(),
            texts: Vec::new(),
            hash: String::new(),
            words: knowledge::Bm25::default(),
        };
        for line in tsv.lines() {
            let mut cols = line.splitn(4, '\t');
            let (Some(_cloud), Some(prefix), Some(names), Some(uses)) =
                (cols.next(), cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            g.families.push(prefix.to_ascii_lowercase());
            g.texts.push(format!("{names}: {uses}"));
        }
        g.hash = crate::model::text_hash(tsv)[..12].to_string();
        g.words = knowledge::Bm25::new(&g.texts);
        g
    }

    pub fn len(&self) -> usize {
        self.families.len()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    fn texts(&self) -> Texts<'_> {
        Texts { name: "products", hash: &self.hash, texts: &self.texts }
    }
}

pub fn glossary() -> &'static Glossary {
    static GLOSSARY: LazyLock<Glossary> = LazyLock::new(|| Glossary::parse(PRODUCTS));
    &GLOSSARY
}

/// Computes (or finds) the glossary's vectors for this model, with any provider (ingest).
pub async fn prepare(embedder: &dyn Embedder) -> Result<(), EmbedError> {
    let g = glossary();
    knowledge::vectors(&g.texts(), embedder, true).await.map(|_| ())
}

/// What the best keyword score among the cards adds to a card's similarity (a cosine): the
/// rarest words of a question often name the product outright or its jargon ("LoRaWAN",
/// "anycast", "PO numbers"), and a sentence model of 384 dimensions blurs them into the
/// sentence. On the tuning questions the expected product is the first guess for 0.57 of GCP
/// and 0.59 of AWS questions by vectors alone, 0.62 and 0.69 by keywords alone, and 0.68 for
/// both with this weight (0.1–0.7 tried, 0.3–0.7 alike; raw keyword scores instead of scores
/// relative to the best did as well but depend on the question's length).
const KEYWORD_WEIGHT: f32 = 0.6;

/// The families of the `n` products whose cards are nearest the question, nearest first,
/// with their score: the similarity of the card's vector to the question's (`query`), plus
/// [`KEYWORD_WEIGHT`] times the card's keyword score for `question` relative to the best
/// card's. Empty when the cards' vectors cannot be had for this model (logged) or the question
/// was embedded by another.
pub async fn likely(embedder: &dyn Embedder, question: &str, query: &[f32], n: usize) -> Vec<(&'static str, f32)> {
    let g = glossary();
    let Some(vectors) = knowledge::for_search(&g.texts(), embedder, query.len()).await else { return Vec::new() };
    let sims = knowledge::nearest(&vectors, query, &g.words, question, KEYWORD_WEIGHT);
    let mut out: Vec<(&'static str, f32)> = Vec::new();
    for (s, i) in sims {
        if out.len() == n {
            break;
        }
        let family = g.families[i].as_str();
        if !out.iter().any(|(f, _)| *f == family) {
            out.push((family, s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_product_of_both_clouds_has_one_card() {
        let mut seen = std::collections::HashSet::new();
        for line in PRODUCTS.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 4, "{line}");
            assert!(matches!(cols[0], "gcp" | "aws"), "{line}");
            assert!(cols[2].split_whitespace().count() >= 1 && cols[3].split_whitespace().count() >= 10, "{line}");
            assert!(seen.insert((cols[0], cols[1])), "two cards for {} {}", cols[0], cols[1]);
        }
        let g = glossary();
        assert_eq!(g.len(), seen.len());
        assert!(g.len() > 700, "{}", g.len());
        for family in ["storage", "workstations", "s3", "deadline", "fis", "iotwireless"] {
            assert!(g.families.iter().any(|f| f == family), "no card for {family}");
        }
    }

    #[tokio::test]
    async fn a_job_described_in_its_own_words_finds_the_product_that_does_it() {
        // A lexical embedder, so the test reads the glossary's words, not a model's knowledge.
        let embedder = crate::embed::hash::HashEmbedder::new(1024);
        let q = embedder.embed(&["render farm for our animation frames".into()], crate::embed::InputKind::Query).await;
        let near = likely(&embedder, "", &q.unwrap()[0], 2).await;
        assert_eq!(near.first().map(|p| p.0), Some("deadline"), "{near:?}");
        assert_eq!(near.len(), 2);
        assert!(near[0].1 >= near[1].1);
        assert!(likely(&embedder, "render farm", &[1.0; 3], 2).await.is_empty(), "a question of another model's dims");
    }

    #[tokio::test]
    async fn a_rare_word_of_a_card_names_its_product_when_the_vector_does_not() {
        let embedder = crate::embed::hash::HashEmbedder::new(1024);
        // A vector like no card's: every similarity is 0, so the words alone decide.
        let nowhere = vec![0.0; 1024];
        let question = "the vineyard wants LoRaWAN moisture probes reporting in";
        let near = likely(&embedder, question, &nowhere, 2).await;
        assert_eq!(near.first().map(|p| p.0), Some("iotwireless"), "{near:?}");
        assert!((near[0].1 - KEYWORD_WEIGHT).abs() < 1e-6, "the best card's words add the whole weight: {near:?}");
        let none = likely(&embedder, "zzqx", &nowhere, 2).await;
        assert!(none.iter().all(|p| p.1 == 0.0), "words no card has add nothing: {none:?}");
    }
}
