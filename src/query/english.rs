//! The words of English, shipped in the binary (`english/words.txt.gz`, SCOWL's American
//! English at size 50 with its inflected forms, 73,604 words; notice in `english/COPYRIGHT`;
//! rebuilt by `scripts/english-words`). Retrieval respells a question's word only when it is
//! no word at all: an index of cloud roles lacks "truck" and "contractor", and one edit away it
//! holds "track" and "contracts".

use std::collections::HashSet;
use std::sync::LazyLock;

static GZ: &[u8] = include_bytes!("english/words.txt.gz");

/// Whether `word` (any case) is a word of English.
pub fn is_word(word: &str) -> bool {
    static WORDS: LazyLock<HashSet<String>> =
        LazyLock::new(|| super::shipped_text(GZ).lines().map(str::to_string).collect());
    WORDS.contains(&word.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_told_from_typos() {
        for w in ["truck", "Contractor", "bakes", "investigating", "bucket", "their"] {
            assert!(is_word(w), "{w}");
        }
        for w in ["databse", "thier", "recieve", "permision", "subscritpions"] {
            assert!(!is_word(w), "{w}");
        }
    }
}
