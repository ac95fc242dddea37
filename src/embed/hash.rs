//! A deterministic feature-hashing embedder: no model, no network, stable across runs.
//!
//! It exists so that every pipeline test runs offline and fast. It captures lexical overlap
//! only (words and character trigrams), not meaning — semantic quality comes from MiniLM.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{EmbedError, Embedder, InputKind};

pub struct HashEmbedder {
    dims: usize,
    id: String,
}

impl HashEmbedder {
    pub fn new(dims: usize) -> Self {
        HashEmbedder { dims, id: format!("hash-v1-{dims}") }
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        for w in &words {
            self.add(&mut v, w.as_bytes(), 1.0);
            let chars: Vec<char> = format!(" {w} ").chars().collect();
            for tri in chars.windows(3) {
                let s: String = tri.iter().collect();
                self.add(&mut v, s.as_bytes(), 0.35);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    fn add(&self, v: &mut [f32], feature: &[u8], weight: f32) {
        let h = Sha256::digest(feature);
        let idx = u64::from_le_bytes(h[0..8].try_into().expect("8 bytes")) as usize % self.dims;
        let sign = if h[8] & 1 == 0 { 1.0 } else { -1.0 };
        v[idx] += sign * weight;
    }
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn in_process(&self) -> bool {
        true
    }

    fn model_id(&self) -> &str {
        &self.id
    }
    fn dims(&self) -> usize {
        self.dims
    }
    fn max_tokens(&self) -> usize {
        // Same window as MiniLM, so chunking behaves alike in tests and in production.
        256
    }
    fn count_tokens(&self, text: &str) -> usize {
        estimate_tokens(text)
    }
    async fn embed(&self, texts: &[String], _kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

/// An upper estimate of WordPiece tokens: words split into pieces of about four characters,
/// punctuation counted alone. Errs high so chunks sized by it fit a real tokenizer's window.
pub fn estimate_tokens(text: &str) -> usize {
    let mut n = 0;
    for word in text.split_whitespace() {
        let mut alnum = 0usize;
        for c in word.chars() {
            if c.is_alphanumeric() {
                alnum += 1;
            } else {
                if alnum > 0 {
                    n += alnum.div_ceil(4).max(1);
                    alnum = 0;
                }
                n += 1;
            }
        }
        if alnum > 0 {
            n += alnum.div_ceil(4).max(1);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_texts_are_closer_than_unrelated_ones() {
        let e = HashEmbedder::new(384);
        let a = e.embed_one("Payroll Administrator role in Workday");
        let b = e.embed_one("payroll administrator");
        let c = e.embed_one("GitHub repository maintainer");
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        assert!(dot(&a, &b) > dot(&a, &c));
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(a, e.embed_one("Payroll Administrator role in Workday"));
    }

    #[test]
    fn token_estimate_counts_pieces_and_punctuation() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a b"), 2);
        assert_eq!(estimate_tokens("storage.objects.get"), 2 + 1 + 2 + 1 + 1);
    }
}
