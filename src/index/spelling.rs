//! The words an index holds, and the nearest of them to a word it does not: how a misspelt
//! question ("databse", "permision", "contaner") still finds what its words name.
//!
//! Keyword search matches whole (stemmed) words, so one typo in the word that names the
//! product loses the document that names it, and the embedder reads the typo as other word
//! pieces. People type questions in a hurry: the hand-written labelled sets hold a few typos,
//! and one typo in each question costs about 6 points of recall@5 (`evals/typos.py`).

use std::collections::{HashMap, HashSet};

/// Words of at least this many letters are looked up; shorter ones are too often another
/// word one letter away ("role", "rule").
pub const MIN_LETTERS: usize = 4;

/// From this length on, two edits apart still counts ("permision" → "permission" is one,
/// "darabase" → "database" one, "ciedentials" → "credentials" two).
const TWO_EDITS_FROM: usize = 8;

/// Words and how many chunks hold each.
#[derive(Debug, Default)]
pub struct Vocabulary {
    counts: HashMap<String, u32>,
}

impl Vocabulary {
    /// Counts the lower-cased letter runs of one more text, each once. A GCP role's permission
    /// chunk holds thousands of distinct words, so "seen" is a set: with a list scan, a question
    /// with a typo cost 0.25–0.4 s more than one without on the GCP corpus, now about 0.1 s.
    pub fn add(&mut self, text: &str) {
        let lower = text.to_lowercase();
        let mut seen = HashSet::new();
        for w in letter_runs(&lower) {
            if seen.insert(w) {
                match self.counts.get_mut(w) {
                    Some(n) => *n += 1,
                    None => {
                        self.counts.insert(w.to_string(), 1);
                    }
                }
            }
        }
    }

    /// Whether the word, or its singular or plural, is held ("buckets" knows "bucket").
    pub fn knows(&self, word: &str) -> bool {
        let has = |w: &str| self.counts.contains_key(w);
        has(word)
            || has(&format!("{word}s"))
            || has(&format!("{word}es"))
            || word.strip_suffix('s').is_some_and(has)
            || word.strip_suffix("es").is_some_and(has)
    }

    /// The held word nearest to `word` ([`nearest`]), the most common one among equals;
    /// `None` when the word is held or nothing is near enough.
    pub fn nearest(&self, word: &str) -> Option<&str> {
        let word = word.to_lowercase();
        if self.knows(&word) {
            return None;
        }
        nearest(&word, self.counts.iter().map(|(w, &n)| (w.as_str(), n)))
    }
}

/// The word of `held` fewest edits (insert, delete, substitute, swap two neighbours) from
/// `word`, the one held most (then the first in order) among equals: one edit apart, two from
/// eight letters on. `None` for a word shorter than [`MIN_LETTERS`], one with a digit (a
/// version, an id), or one nothing is near.
pub fn nearest<'a>(word: &str, held: impl IntoIterator<Item = (&'a str, u32)>) -> Option<&'a str> {
    let letters = word.chars().count();
    if letters < MIN_LETTERS || word.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    let most = if letters >= TWO_EDITS_FROM { 2 } else { 1 };
    held.into_iter()
        .filter(|(w, _)| w.chars().count().abs_diff(letters) <= most)
        .filter_map(|(w, n)| {
            let d = strsim::damerau_levenshtein(word, w);
            (d <= most).then_some((d, n, w))
        })
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then_with(|| a.2.cmp(b.2)))
        .map(|(_, _, w)| w)
}

/// Runs of letters of at least [`MIN_LETTERS`] − 1, so that a held "pod" knows "pods".
fn letter_runs(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphabetic()).filter(|w| w.chars().count() >= MIN_LETTERS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary() -> Vocabulary {
        let mut v = Vocabulary::default();
        [
            "Cloud SQL Admin: full control of Cloud SQL database instances",
            "Database Viewer: read database metadata",
            "Storage Object Viewer: read objects in buckets",
            "Container Registry: push container images; manage permissions and credentials",
            "Data Catalog policy tags; database",
        ]
        .into_iter()
        .for_each(|t| v.add(t));
        v
    }

    #[test]
    fn a_typo_is_spelt_as_the_nearest_held_word() {
        let v = vocabulary();
        assert_eq!(v.nearest("databse"), Some("database"), "one letter dropped");
        assert_eq!(v.nearest("contaner"), Some("container"));
        assert_eq!(v.nearest("bukcets"), Some("buckets"), "two letters swapped");
        assert_eq!(v.nearest("permision"), Some("permissions"), "two edits, a long word");
        assert_eq!(v.nearest("Ciedentials"), Some("credentials"));
    }

    #[test]
    fn held_short_and_distant_words_are_left_alone() {
        let v = vocabulary();
        assert_eq!(v.nearest("database"), None);
        assert_eq!(v.nearest("bucket"), None, "the singular of a held plural");
        assert_eq!(v.nearest("tag"), None, "too short to tell from another word");
        assert_eq!(v.nearest("hospital"), None, "nothing near");
        assert_eq!(v.nearest("sql2"), None, "not a word");
        assert_eq!(v.counts["database"], 3, "counted once per text");
    }
}
