//! The request processor: what a question asks (its intent) and which entities it names.
//!
//! Names are matched against the catalogue's own names, never guessed from the text: a
//! mention is either a known entity or, when the question plainly names a role that does not
//! exist ("the Quantum Admin role"), an unknown one the answer must say is not there. Matching
//! tolerates case, plurals and one typo per word ("HR analist"): a question word that is not a
//! word of any name is corrected to the nearest name word first, then names are matched as
//! whole word sequences, longest first, so "Workday Viewer" wins over "Workday".

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::catalog::{EntityKind, NamedEntity};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// "I need access to the HR Analyst role"
    RequestAccess,
    /// "who approves Workday access?"
    WhoApproves,
    /// "what roles does jdoe have?"
    UserRoles,
    /// "what does Payroll Administrator grant?"
    RoleInfo,
    /// "which role lets me view payroll reports?"
    FindRole,
    /// Anything else: answered from retrieved passages.
    Search,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::RequestAccess => "request_access",
            Intent::WhoApproves => "who_approves",
            Intent::UserRoles => "user_roles",
            Intent::RoleInfo => "role_info",
            Intent::FindRole => "find_role",
            Intent::Search => "search",
        }
    }
}

/// One thing the question names.
#[derive(Clone, Debug, PartialEq)]
pub struct Mention {
    pub kind: EntityKind,
    /// The words as the question wrote them.
    pub text: String,
    /// The catalogue entity, or `None` for a name that matches nothing.
    pub entity: Option<NamedEntity>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Understanding {
    pub intent: Intent,
    pub mentions: Vec<Mention>,
    /// The asker talks about themselves ("my roles", "do I have").
    pub about_self: bool,
    /// No entity named, but a pronoun or an elliptic question ("who approves it?"): the
    /// previous turn's entities are meant.
    pub refers_back: bool,
}

/// Words that never start a fuzzy correction: too common to be a misspelt name.
const COMMON: &[&str] = &[
    "access", "about", "allow", "allows", "already", "also", "approve", "approver", "approves", "does", "doing",
    "have", "having", "help", "just", "like", "need", "needs", "please", "request", "right", "rights", "role", "roles",
    "should", "some", "tell", "that", "their", "them", "then", "there", "these", "they", "this", "those", "want",
    "what", "when", "where", "which", "while", "with", "would", "your", "could", "give", "grant", "grants", "hold",
    "holds", "lets", "make", "view", "who", "whom", "whose", "from", "into", "team", "work", "able", "can't",
];

/// Words that end an unknown role name read backwards from "role".
const BOUNDARY: &[&str] = &[
    "to",
    "the",
    "a",
    "an",
    "for",
    "need",
    "access",
    "request",
    "requesting",
    "want",
    "get",
    "me",
    "i",
    "my",
    "have",
    "has",
    "does",
    "do",
    "what",
    "which",
    "is",
    "of",
    "about",
    "this",
    "that",
    "it",
    "in",
    "on",
    "and",
    "or",
    "with",
    "who",
    "approves",
    "approve",
    "grant",
    "give",
    "please",
    "new",
    "any",
    "can",
    "there",
];

const PRONOUNS: &[&str] = &["it", "that", "this", "them", "those", "these", "its", "same", "one"];

#[derive(Clone, Debug)]
struct Token {
    /// Lower-cased, plural `s` dropped.
    norm: String,
    /// Byte span in the question.
    start: usize,
    end: usize,
}

/// Lower-case, drop a possessive and a plural `s`, so "Analysts" and "analyst's" are "analyst".
fn normalize(word: &str) -> String {
    let w = word.to_lowercase();
    let w = w.strip_suffix("'s").unwrap_or(&w);
    match w.strip_suffix('s') {
        Some(stem) if stem.len() > 2 && !stem.ends_with('s') && !w.contains(['-', '_']) => stem.to_string(),
        _ => w.to_string(),
    }
}

/// Words: letters and digits, joined by inner `-`, `_`, `.` or `'` (ids like ROLE-0008).
fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut start = None;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (i, &(pos, c)) in chars.iter().enumerate() {
        let inner = matches!(c, '-' | '_' | '.' | '\'')
            && i > 0
            && chars[i - 1].1.is_alphanumeric()
            && chars.get(i + 1).is_some_and(|n| n.1.is_alphanumeric());
        if c.is_alphanumeric() || (inner && start.is_some()) {
            start.get_or_insert(pos);
        } else if let Some(s) = start.take() {
            out.push(Token { norm: normalize(&text[s..pos]), start: s, end: pos });
        }
    }
    if let Some(s) = start {
        out.push(Token { norm: normalize(&text[s..]), start: s, end: text.len() });
    }
    out
}

struct Entry {
    entity: usize,
    words: Vec<String>,
}

/// The catalogue's names, ready to be found in questions. Built once per name refresh.
pub struct Matcher {
    entities: Vec<NamedEntity>,
    entries: Vec<Entry>,
    /// Entries by their first word.
    by_first: HashMap<String, Vec<usize>>,
    /// Every word of a display name (not logins or ids), for typo correction, by length.
    vocabulary: HashSet<String>,
}

impl Matcher {
    pub fn new(entities: Vec<NamedEntity>) -> Self {
        let mut entries = Vec::new();
        let mut vocabulary = HashSet::new();
        for (i, e) in entities.iter().enumerate() {
            let words: Vec<String> = tokens(&e.name).into_iter().map(|t| t.norm).collect();
            if !words.is_empty() {
                vocabulary.extend(words.iter().filter(|w| w.chars().count() >= 4).cloned());
                entries.push(Entry { entity: i, words });
            }
            // Logins and ids match exactly only: "smith" must not become "asmith".
            for alias in e.aliases.iter().chain(std::iter::once(&e.id)) {
                let words: Vec<String> = tokens(alias).into_iter().map(|t| t.norm).collect();
                if !words.is_empty() {
                    entries.push(Entry { entity: i, words });
                }
            }
        }
        let mut by_first: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_first.entry(e.words[0].clone()).or_default().push(i);
        }
        Matcher { entities, entries, by_first, vocabulary }
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The entity with this id, login or exact name (case-insensitive) of the given kind.
    pub fn lookup(&self, kind: EntityKind, key: &str) -> Option<&NamedEntity> {
        let k = key.trim();
        self.entities.iter().find(|e| {
            e.kind == kind
                && (e.id.eq_ignore_ascii_case(k)
                    || e.name.eq_ignore_ascii_case(k)
                    || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(k)))
        })
    }

    /// The nearest vocabulary word within the typo allowance, if the word is not one itself.
    fn correct(&self, word: &str) -> Option<String> {
        if self.vocabulary.contains(word) || COMMON.contains(&word) {
            return None;
        }
        crate::index::spelling::nearest(word, self.vocabulary.iter().map(|v| (v.as_str(), 0))).map(str::to_string)
    }

    /// Known entities named in `text`, longest names first, never overlapping: byte spans
    /// and entity indexes, in text order.
    fn find(&self, toks: &[Token]) -> Vec<(usize, usize, usize)> {
        let words: Vec<String> = toks.iter().map(|t| self.correct(&t.norm).unwrap_or_else(|| t.norm.clone())).collect();
        let mut found: Vec<(usize, usize, usize)> = Vec::new(); // (first token, token count, entity)
        for i in 0..words.len() {
            for &e in self.by_first.get(&words[i]).into_iter().flatten() {
                let entry = &self.entries[e];
                let n = entry.words.len();
                if i + n <= words.len() && words[i..i + n] == entry.words[..] {
                    found.push((i, n, entry.entity));
                }
            }
        }
        // Longest first; among equals, roles before applications before groups before users.
        found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| self.entities[a.2].kind.cmp(&self.entities[b.2].kind)));
        let mut taken = vec![false; words.len()];
        let mut out = Vec::new();
        for (i, n, e) in found {
            if taken[i..i + n].iter().any(|t| *t) {
                continue;
            }
            taken[i..i + n].iter_mut().for_each(|t| *t = true);
            out.push((i, n, e));
        }
        out.sort();
        out
    }

    /// The `n` known entities of `kind` whose names are closest to `text`.
    pub fn closest(&self, kind: EntityKind, text: &str, n: usize) -> Vec<&NamedEntity> {
        let t = text.to_lowercase();
        let mut scored: Vec<(f64, &NamedEntity)> = self
            .entities
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| (strsim::sorensen_dice(&t, &e.name.to_lowercase()), e))
            .filter(|(s, _)| *s > 0.3)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
        scored.into_iter().take(n).map(|(_, e)| e).collect()
    }
}

fn has_any(text: &str, cues: &[&str]) -> bool {
    cues.iter().any(|c| text.contains(c))
}

/// Reads a question.
pub fn understand(matcher: &Matcher, question: &str) -> Understanding {
    let toks = tokens(question);
    let mut mentions: Vec<Mention> = matcher
        .find(&toks)
        .into_iter()
        .map(|(i, n, e)| {
            let entity = matcher.entities[e].clone();
            Mention {
                kind: entity.kind,
                text: question[toks[i].start..toks[i + n - 1].end].to_string(),
                entity: Some(entity),
            }
        })
        .collect();
    let covered = |ti: usize, mentions: &[Mention]| {
        mentions.iter().any(|m| {
            let span = (toks[ti].start, toks[ti].end);
            question.get(span.0..span.1).is_some_and(|w| m.text.contains(w))
        })
    };
    // "... the Quantum Admin role": the words before "role" name one, known or not.
    for (j, t) in toks.iter().enumerate() {
        let singular = question[t.start..t.end].eq_ignore_ascii_case("role");
        if !singular || j == 0 || covered(j - 1, &mentions) {
            continue;
        }
        let mut i = j;
        while i > 0 && j - i < 4 && !BOUNDARY.contains(&toks[i - 1].norm.as_str()) {
            i -= 1;
        }
        if i < j {
            mentions.push(Mention {
                kind: EntityKind::Role,
                text: question[toks[i].start..toks[j - 1].end].to_string(),
                entity: None,
            });
        }
    }
    let lower = format!(" {} ", question.to_lowercase());
    let words: Vec<&str> = toks.iter().map(|t| t.norm.as_str()).collect();
    let about_self = words.iter().any(|w| matches!(*w, "i" | "my" | "me" | "mine" | "myself"));
    let names_user = mentions.iter().any(|m| m.kind == EntityKind::User);
    let names_thing = mentions.iter().any(|m| m.kind != EntityKind::User);
    let intent = if has_any(
        &lower,
        &[
            "who approve",
            "who can approve",
            "approver",
            "who sign",
            "sign off",
            "sign-off",
            "who authori",
            "approval",
            "who grants",
            "who needs to ok",
        ],
    ) {
        Intent::WhoApproves
    } else if (names_user || about_self)
        && has_any(
            &lower,
            &[
                "what roles",
                "which roles",
                "what access",
                "which access",
                "roles does",
                "roles do ",
                "my roles",
                "roles has",
                "roles have",
                "roles of",
                "roles held",
                "do i have",
                "does he have",
                "does she have",
                "assigned to",
                "hold?",
            ],
        )
    {
        Intent::UserRoles
    } else if !names_thing
        && has_any(
            &lower,
            &[
                "which role",
                "what role",
                "which roles",
                "what roles",
                "role that",
                "role lets",
                "role for",
                "role do i need",
                "role should",
            ],
        )
    {
        Intent::FindRole
    } else if names_thing
        && has_any(
            &lower,
            &[
                "what does",
                "what do ",
                "tell me about",
                "what is",
                "what's",
                "describe",
                "explain",
                "conflict",
                "segregation",
                " sod",
                "risk",
                "grant?",
                "include",
                "permissions",
            ],
        )
    {
        Intent::RoleInfo
    } else if has_any(
        &lower,
        &[
            "need",
            "request",
            "access to",
            "get access",
            "give me",
            "grant me",
            "add me",
            "want",
            "apply for",
            "can i get",
            "can i have",
            "how do i get",
            "how can i get",
        ],
    ) {
        if names_thing {
            Intent::RequestAccess
        } else {
            Intent::FindRole
        }
    } else if names_thing {
        Intent::RoleInfo
    } else {
        Intent::Search
    };
    let refers_back = !names_thing
        && !names_user
        && (words.iter().any(|w| PRONOUNS.contains(w)) || (toks.len() <= 4 && intent != Intent::Search));
    mentions.sort_by_key(|m| question.find(&m.text).unwrap_or(0));
    Understanding { intent, mentions, about_self, refers_back }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: EntityKind, id: &str, name: &str, aliases: &[&str]) -> NamedEntity {
        NamedEntity { kind, id: id.into(), name: name.into(), aliases: aliases.iter().map(|s| s.to_string()).collect() }
    }

    fn matcher() -> Matcher {
        Matcher::new(vec![
            e(EntityKind::Role, "ROLE-0008", "HR Analyst", &[]),
            e(EntityKind::Role, "ROLE-0017", "Payroll Administrator", &[]),
            e(EntityKind::Role, "ROLE-0001", "Workday Viewer", &[]),
            e(EntityKind::Application, "APP-0001", "Workday", &[]),
            e(EntityKind::Application, "APP-0013", "SAP Concur", &[]),
            e(EntityKind::ApproverGroup, "AG-002", "Payroll Approvers", &[]),
            e(EntityKind::User, "U-000225", "John Doe", &["jdoe"]),
            e(EntityKind::User, "U-000224", "Alice Smith", &["asmith"]),
        ])
    }

    fn ids(u: &Understanding) -> Vec<Option<String>> {
        u.mentions.iter().map(|m| m.entity.as_ref().map(|e| e.id.clone())).collect()
    }

    #[test]
    fn names_are_found_despite_case_plurals_and_typos() {
        let m = matcher();
        let u = understand(&m, "I need access to the HR analist role");
        assert_eq!(u.intent, Intent::RequestAccess);
        assert_eq!(ids(&u), vec![Some("ROLE-0008".to_string())]);
        let u = understand(&m, "hr analysts");
        assert_eq!(ids(&u), vec![Some("ROLE-0008".to_string())]);
        let u = understand(&m, "what does payroll administrater grant?");
        assert_eq!(u.intent, Intent::RoleInfo);
        assert_eq!(ids(&u), vec![Some("ROLE-0017".to_string())]);
        assert_eq!(ids(&understand(&m, "tell me about ROLE-0001")), vec![Some("ROLE-0001".to_string())]);
    }

    #[test]
    fn the_longest_name_wins() {
        let m = matcher();
        let u = understand(&m, "I need Workday Viewer");
        assert_eq!(ids(&u), vec![Some("ROLE-0001".to_string())]);
        let u = understand(&m, "who approves Workday access?");
        assert_eq!(u.intent, Intent::WhoApproves);
        assert_eq!(ids(&u), vec![Some("APP-0001".to_string())]);
    }

    #[test]
    fn users_by_login_only_exactly() {
        let m = matcher();
        let u = understand(&m, "what roles does jdoe have?");
        assert_eq!(u.intent, Intent::UserRoles);
        assert_eq!(ids(&u), vec![Some("U-000225".to_string())]);
        assert!(understand(&m, "what roles does smith have?").mentions.is_empty());
        let u = understand(&m, "what roles do I have?");
        assert!(u.about_self);
        assert_eq!(u.intent, Intent::UserRoles);
    }

    #[test]
    fn an_unknown_role_is_a_mention_without_entity() {
        let m = matcher();
        let u = understand(&m, "I need access to the Quantum Ledger Admin role");
        assert_eq!(u.intent, Intent::RequestAccess);
        assert_eq!(u.mentions.len(), 1);
        assert_eq!(u.mentions[0].text, "Quantum Ledger Admin");
        assert!(u.mentions[0].entity.is_none());
        // A known role followed by "role" is not also an unknown one.
        assert_eq!(understand(&m, "the HR Analyst role").mentions.len(), 1);
    }

    #[test]
    fn follow_ups_and_searches() {
        let m = matcher();
        let u = understand(&m, "who approves it?");
        assert!(u.refers_back);
        assert_eq!(u.intent, Intent::WhoApproves);
        let u = understand(&m, "which role lets me view payroll reports?");
        assert_eq!(u.intent, Intent::FindRole);
        assert!(!u.refers_back);
        // SQL-looking text is just text.
        let u = understand(&m, "'; DROP TABLE roles; --");
        assert!(u.mentions.is_empty());
    }
}
