//! Generic record collections: JSONL, one object a line, chosen fields become the text.
//!
//! `--id-field`, `--title-field` and repeated `--text-field` say which fields matter; every
//! other field is kept as metadata (filterable, and available to ranking). A hit carries the
//! record's own id (`roles/storage.objectViewer`), not one of ours, because that is what a user
//! of the collection knows it by.

use std::io::BufRead;

use super::text::split_to_budget;
use super::{problem, Lines};
use crate::ingest::quarantine::Problem;
use crate::model::{kind, text_hash, Chunk, Document, Version};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSpec {
    pub id_field: String,
    pub title_field: Option<String>,
    pub text_fields: Vec<String>,
}

pub struct RecordReader<'a, R> {
    lines: Lines<R>,
    spec: &'a RecordSpec,
    source: String,
    version: Version,
    max_tokens: usize,
    overlap: usize,
    count: &'a (dyn Fn(&str) -> usize + Sync),
}

impl<'a, R: BufRead> RecordReader<'a, R> {
    pub fn new(
        reader: R,
        spec: &'a RecordSpec,
        source: &str,
        version: Version,
        max_tokens: usize,
        overlap: usize,
        count: &'a (dyn Fn(&str) -> usize + Sync),
    ) -> Self {
        RecordReader { lines: Lines::new(reader), spec, source: source.into(), version, max_tokens, overlap, count }
    }

    fn document(&self, line: &str, n: u64) -> Result<Document, Problem> {
        let bad = |reason: String| problem(n, reason, line);
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let id = obj
            .get(&self.spec.id_field)
            .and_then(scalar_text)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| bad(format!("record has no {:?} value to use as its id", self.spec.id_field)))?;
        let title = self
            .spec
            .title_field
            .as_ref()
            .and_then(|f| obj.get(f))
            .and_then(scalar_text)
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| id.clone());
        let mut body = Vec::new();
        for (i, field) in self.spec.text_fields.iter().enumerate() {
            let Some(text) = obj.get(field).and_then(field_text).filter(|t| !t.trim().is_empty()) else { continue };
            // The first text field reads as prose; later ones are labelled so the text stays readable.
            body.push(if i == 0 { text } else { format!("{field}: {text}") });
        }
        let body = if body.is_empty() { title.clone() } else { body.join("\n\n") };
        let count = self.count;
        let budget = self.max_tokens.saturating_sub(count(&title) + 4).max(16);
        let chunks = split_to_budget(&body, budget, self.overlap.min(budget / 2), count)
            .into_iter()
            .enumerate()
            .map(|(i, text)| Chunk { id: format!("{id}#{i}-{}", &text_hash(&text)[..8]), ordinal: i as u32, heading: None, text })
            .collect();
        let metadata = obj
            .into_iter()
            .filter(|(k, _)| *k != self.spec.id_field && !self.spec.text_fields.contains(k))
            .collect();
        Ok(Document {
            id,
            kind: kind::RECORD.into(),
            title,
            source: self.source.clone(),
            version: self.version,
            metadata,
            chunks,
        })
    }
}

fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A field as text: lists are joined with ", ", nested objects written as JSON.
fn field_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::Array(items) => {
            Some(items.iter().filter_map(|i| scalar_text(i).or_else(|| field_text(i))).collect::<Vec<_>>().join(", "))
        }
        serde_json::Value::Object(_) => Some(v.to_string()),
        other => scalar_text(other),
    }
}

impl<R: BufRead> Iterator for RecordReader<'_, R> {
    type Item = std::io::Result<Result<Document, Problem>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next_line() {
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
                Ok(Some(Err(p))) => return Some(Ok(Err(p))),
                Ok(Some(Ok(l))) => l,
            };
            if line.trim().is_empty() {
                continue;
            }
            return Some(Ok(self.document(&line, self.lines.line_no)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::hash::estimate_tokens;

    #[test]
    fn records_keep_their_ids_text_fields_and_metadata() {
        let spec = RecordSpec {
            id_field: "id".into(),
            title_field: Some("title".into()),
            text_fields: vec!["description".into(), "permissions".into()],
        };
        let text = r#"{"id":"roles/storage.objectViewer","title":"Storage Object Viewer","description":"Read objects.","stage":"GA","permissions":["storage.objects.get","storage.objects.list"]}
{"title":"no id"}
"#;
        let out: Vec<_> = RecordReader::new(text.as_bytes(), &spec, "gcp_roles.jsonl", Version::new(1, 0), 256, 16, &estimate_tokens)
            .map(|r| r.unwrap())
            .collect();
        let d = out[0].as_ref().unwrap();
        assert_eq!(d.id, "roles/storage.objectViewer");
        assert_eq!(d.title, "Storage Object Viewer");
        assert!(d.chunks[0].text.contains("permissions: storage.objects.get, storage.objects.list"));
        assert_eq!(d.metadata["stage"], "GA");
        assert!(!d.metadata.contains_key("permissions"));
        assert_eq!(out[1].as_ref().unwrap_err().line, Some(2));
    }
}
