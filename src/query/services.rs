//! Which cloud services a question is about, from what the services' own API documents say:
//! a rerank signal (`retrieve::search` raises the candidates of the two likeliest).
//!
//! A question often describes the job in the words of the product's documentation rather
//! than its name ("create the bot-protection site keys", "push x-ray and MRI studies into the
//! imaging store", "browser-based dev environments"), and Google Cloud's roles describe
//! themselves by the product's name ("reCAPTCHA Enterprise Admin", "Healthcare DICOM Editor",
//! "VM Migration Administrator"): the searches rank them low, and no alias list keeps up. Google's
//! API discovery documents do say what each API is for, in thousands of words per service, so
//! a keyword weight per (service, term) from them ships with the binary
//! (`services/gcp_services.tsv.gz`, rebuilt by `scripts/gcp-services-catalogue`), keyed by the
//! permission prefix IAM uses for the service. Ingest records which services a record's
//! permission lists belong to (`records::SERVICES_KEY`), so the signal reaches any record
//! collection whose permissions are named that way, in any index.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

static GCP_GZ: &[u8] = include_bytes!("services/gcp_services.tsv.gz");

/// Words that say nothing about a service; the same list built the shipped weights.
const STOP: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "by", "is", "are", "be", "can", "i", "we",
    "our", "my", "me", "you", "your", "it", "this", "that", "from", "as", "at", "not", "no", "do", "does", "need",
    "want", "get", "what", "who", "which", "how", "all", "any", "some", "so", "only", "just", "into", "its", "their",
    "they", "them", "use", "using", "up", "out", "about", "via", "per", "than", "then", "also", "will", "would",
    "should", "could", "has", "have", "had", "there", "here", "was", "were", "been", "more", "most", "other", "such",
    "if", "may", "must", "when", "where", "whether",
];

/// The terms of a text as the weights were built from it: camel case split, lower-cased
/// alphanumeric runs, stop words and one-letter words dropped, a plural `s` dropped.
pub fn terms(text: &str) -> HashSet<String> {
    term_list(text).into_iter().collect()
}

/// [`terms`] in the order of the text, repeats kept (for term frequencies).
pub fn term_list(text: &str) -> Vec<String> {
    let mut split = String::with_capacity(text.len() + 8);
    let mut previous: Option<char> = None;
    for c in text.chars() {
        if c.is_ascii_uppercase() && previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit()) {
            split.push(' ');
        }
        split.push(c);
        previous = Some(c);
    }
    split
        .to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() >= 2 && !STOP.contains(w))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if w.len() > 3 && !stem.ends_with('s') => stem.to_string(),
            _ => w.to_string(),
        })
        .collect()
}

/// Keyword weights of services, by term.
pub struct Services {
    names: Vec<String>,
    postings: HashMap<String, Vec<(u32, f32)>>,
}

impl Services {
    fn parse(tsv: &str) -> Services {
        let mut s = Services { names: Vec::new(), postings: HashMap::new() };
        for line in tsv.lines() {
            let Some((name, weights)) = line.split_once('\t') else { continue };
            let n = s.names.len() as u32;
            s.names.push(name.to_string());
            for (term, weight) in weights.split(' ').filter_map(|p| p.rsplit_once(':')) {
                if let Ok(w) = weight.parse::<f32>() {
                    s.postings.entry(term.to_string()).or_default().push((n, w));
                }
            }
        }
        s
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether the documents use this word (or it is a stop word): a word of the language
    /// the documents are written in, not a typo.
    pub fn knows(&self, word: &str) -> bool {
        let lower = word.to_lowercase();
        STOP.contains(&lower.as_str()) || terms(&lower).iter().any(|t| self.postings.contains_key(t))
    }

    /// The `n` services whose documents a question's words weigh most in, best first; none
    /// when no word of it is in any.
    pub fn likely(&self, question: &str, n: usize) -> Vec<&str> {
        let mut score = vec![0f32; self.names.len()];
        for t in terms(question) {
            for &(s, w) in self.postings.get(&t).into_iter().flatten() {
                score[s as usize] += w;
            }
        }
        let mut ranked: Vec<(usize, f32)> = score.into_iter().enumerate().filter(|(_, w)| *w > 0.0).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| self.names[a.0].cmp(&self.names[b.0])));
        ranked.into_iter().take(n).map(|(s, _)| self.names[s].as_str()).collect()
    }
}

/// Google Cloud's services, from the discovery documents.
pub fn gcp() -> &'static Services {
    static GCP: LazyLock<Services> = LazyLock::new(|| Services::parse(&super::shipped_text(GCP_GZ)));
    &GCP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_split_camel_case_and_drop_plurals_and_stop_words() {
        let t = terms("Creates the DicomStores of a dataset, and lists them");
        let mut t: Vec<&str> = t.iter().map(String::as_str).collect();
        t.sort();
        assert_eq!(t, ["create", "dataset", "dicom", "list", "store"]);
        assert!(terms("access").contains("access"), "a double s is not a plural");
    }

    #[test]
    fn products_described_in_other_words_are_found_by_their_documents() {
        let services = gcp();
        assert!(services.len() > 300, "{}", services.len());
        let top = |q: &str| services.likely(q, 2).into_iter().map(str::to_string).collect::<Vec<_>>();
        assert!(top("move our vSphere VMs onto compute engine").contains(&"vmmigration".to_string()));
        assert!(top("our hospital has to push x-ray and MRI studies (DICOM) into the cloud")
            .contains(&"healthcare".to_string()));
        assert_eq!(top("Cloud SQL instances")[0], "cloudsql", "keyed by the permission prefix, not the API's name");
        assert!(services.likely("zzqx", 3).is_empty());
    }
}
