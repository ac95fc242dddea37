//! Documents — Markdown, plain text, HTML — into heading-aware, window-sized chunks.
//!
//! A chunk never spans two sections, carries its heading path ("Policy › Approvals"), and
//! fits the embedder's window together with the title and heading that are embedded with it
//! (MiniLM reads 256 tokens and silently ignores the rest, so an oversized chunk would be
//! searchable by keywords but invisible to meaning). Neighbouring chunks of one section share
//! `overlap` tokens so a sentence cut at a boundary is whole in one of them. The chunker is
//! fed line by line; the HTML reader turns tags into the same lines as it streams.

use std::io::{BufRead, Read};

use crate::model::{text_hash, Chunk};

pub struct ChunkOptions<'a> {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
    pub count_tokens: &'a (dyn Fn(&str) -> usize + Sync),
}

/// Builds chunks from lines of Markdown-like text.
pub struct Chunker<'a> {
    doc_id: String,
    opts: ChunkOptions<'a>,
    title: Option<String>,
    headings: Vec<(usize, String)>,
    section: Vec<String>,
    in_fence: bool,
    chunks: Vec<Chunk>,
}

impl<'a> Chunker<'a> {
    pub fn new(doc_id: &str, opts: ChunkOptions<'a>) -> Self {
        Chunker {
            doc_id: doc_id.to_string(),
            opts,
            title: None,
            headings: Vec::new(),
            section: Vec::new(),
            in_fence: false,
            chunks: Vec::new(),
        }
    }

    pub fn push_line(&mut self, line: &str) {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            self.in_fence = !self.in_fence;
        }
        if !self.in_fence {
            if let Some((level, text)) = heading(trimmed) {
                self.flush();
                if level == 1 && self.title.is_none() {
                    self.title = Some(text.clone());
                }
                self.headings.retain(|(l, _)| *l < level);
                self.headings.push((level, text));
                return;
            }
        }
        self.section.push(line.trim_end().to_string());
    }

    /// The title (first level-1 heading, if any) and the chunks.
    pub fn finish(mut self) -> (Option<String>, Vec<Chunk>) {
        self.flush();
        (self.title, self.chunks)
    }

    fn heading_path(&self) -> Option<String> {
        // The title is embedded with every chunk anyway; repeating it in the path wastes window.
        let parts: Vec<&str> = self
            .headings
            .iter()
            .filter(|(l, t)| !(*l == 1 && Some(t) == self.title.as_ref()))
            .map(|(_, t)| t.as_str())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" › "))
    }

    fn flush(&mut self) {
        let body = std::mem::take(&mut self.section).join("\n");
        let body = body.trim();
        if body.is_empty() {
            return;
        }
        let heading = self.heading_path();
        let count = self.opts.count_tokens;
        // Room left for the body once the title and heading embedded with it are counted.
        let overhead = count(self.title.as_deref().unwrap_or("")) + heading.as_deref().map(count).unwrap_or(0) + 4;
        let budget = self.opts.max_tokens.saturating_sub(overhead).max(16);
        for piece in split_to_budget(body, budget, self.opts.overlap_tokens.min(budget / 2), count) {
            let ordinal = self.chunks.len() as u32;
            let id = format!("{}#{}-{}", self.doc_id, ordinal, &text_hash(&piece)[..8]);
            self.chunks.push(Chunk { id, ordinal, heading: heading.clone(), text: piece, keywords_only: false });
        }
    }
}

fn heading(line: &str) -> Option<(usize, String)> {
    let level = line.bytes().take_while(|b| *b == b'#').count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = &line[level..];
    if !rest.is_empty() && !rest.starts_with(' ') && !rest.starts_with('\t') {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim();
    (!text.is_empty()).then(|| (level, text.to_string()))
}

/// A sentence (or a run of words of an over-long sentence) and whether it opens a paragraph.
struct Unit {
    text: String,
    tokens: usize,
    para_start: bool,
}

fn units(body: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<Unit> {
    let mut out = Vec::new();
    for para in body.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let mut first = true;
        for sentence in sentences(para) {
            let tokens = count(&sentence);
            if tokens <= budget {
                out.push(Unit { text: sentence, tokens, para_start: first });
            } else {
                // A "sentence" longer than the window (a table, a list without stops): cut by words.
                let mut cur = String::new();
                for w in sentence.split_whitespace() {
                    let candidate = if cur.is_empty() { w.to_string() } else { format!("{cur} {w}") };
                    if !cur.is_empty() && count(&candidate) > budget {
                        let t = count(&cur);
                        out.push(Unit { text: std::mem::take(&mut cur), tokens: t, para_start: first });
                        first = false;
                        cur = w.to_string();
                    } else {
                        cur = candidate;
                    }
                }
                if !cur.is_empty() {
                    let t = count(&cur);
                    out.push(Unit { text: cur, tokens: t, para_start: first });
                }
            }
            first = false;
        }
    }
    out
}

/// Splits at sentence ends and at line breaks of lists and tables, keeping the text intact.
fn sentences(para: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in para.lines() {
        let mut start = 0;
        let bytes = line.as_bytes();
        for i in 0..bytes.len() {
            if matches!(bytes[i], b'.' | b'!' | b'?') && bytes.get(i + 1) == Some(&b' ') {
                let s = line[start..=i].trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
                start = i + 1;
            }
        }
        let s = line[start..].trim();
        if !s.is_empty() {
            out.push(s.to_string());
        }
    }
    out
}

fn join(units: &[Unit]) -> String {
    let mut s = String::new();
    for u in units {
        if !s.is_empty() {
            s.push_str(if u.para_start { "\n\n" } else { " " });
        }
        s.push_str(&u.text);
    }
    s
}

/// Packs sentences into pieces of at most `budget` tokens; each piece after the first starts
/// with the trailing sentences of the previous one, up to `overlap` tokens.
pub fn split_to_budget(body: &str, budget: usize, overlap: usize, count: &dyn Fn(&str) -> usize) -> Vec<String> {
    let units = units(body, budget, count);
    let mut pieces = Vec::new();
    let mut start = 0;
    // The tail of the previous piece that opens the next one.
    let mut carry: Vec<Unit> = Vec::new();
    while start < units.len() {
        let mut used: usize = carry.iter().map(|u| u.tokens + 1).sum();
        if used + units[start].tokens + 1 > budget {
            // The window can't hold the overlap and the next sentence: drop the overlap.
            carry.clear();
            used = 0;
        }
        let mut end = start;
        while end < units.len() && (end == start || used + units[end].tokens < budget) {
            used += units[end].tokens + 1;
            end += 1;
        }
        let mut piece = std::mem::take(&mut carry);
        piece.extend(units[start..end].iter().map(|u| Unit {
            text: u.text.clone(),
            tokens: u.tokens,
            para_start: u.para_start,
        }));
        pieces.push(join(&piece));
        if end >= units.len() {
            break;
        }
        // Carry whole sentences that fit in the overlap; if even the last one doesn't, carry
        // its last words.
        let mut carried = 0;
        let mut i = end;
        while i > start && carried + units[i - 1].tokens <= overlap {
            carried += units[i - 1].tokens;
            i -= 1;
        }
        if i == end && overlap > 0 {
            let words: Vec<&str> = units[end - 1].text.split_whitespace().collect();
            let mut from = words.len();
            while from > 1 && count(&words[from - 1..].join(" ")) <= overlap {
                from -= 1;
            }
            if from < words.len() && count(&words[from..].join(" ")) <= overlap {
                let text = words[from..].join(" ");
                carry.push(Unit { tokens: count(&text), text, para_start: false });
            }
        } else {
            carry.extend(units[i..end].iter().map(|u| Unit {
                text: u.text.clone(),
                tokens: u.tokens,
                para_start: u.para_start,
            }));
        }
        if let Some(first) = carry.first_mut() {
            first.para_start = false;
        }
        start = end;
    }
    pieces
}

/// Feeds a Markdown or plain-text stream to the chunker.
pub fn chunk_text<R: BufRead>(mut reader: R, chunker: &mut Chunker<'_>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        chunker.push_line(&String::from_utf8_lossy(&buf));
    }
}

/// Streams HTML through a small tag reader: headings become Markdown headings, block tags
/// become line breaks, `script`/`style` are dropped, common entities are decoded. Not a full
/// HTML parser — policy pages are simple documents — but it never buffers the whole file.
pub fn chunk_html<R: Read>(reader: R, chunker: &mut Chunker<'_>) -> std::io::Result<()> {
    let mut text = String::new();
    let mut tag = String::new();
    let mut in_tag = false;
    let mut skip_until: Option<&'static str> = None;
    let mut pending = Vec::new();
    let emit = |text: &mut String, chunker: &mut Chunker<'_>, prefix: &str| {
        let decoded = decode_entities(text);
        let line = decoded.split_whitespace().collect::<Vec<_>>().join(" ");
        if !line.is_empty() {
            chunker.push_line(&format!("{prefix}{line}"));
        }
        text.clear();
    };
    let mut prefix = String::new();
    for byte in std::io::BufReader::new(reader).bytes() {
        let b = byte?;
        // Collect UTF-8 sequences whole before turning them into chars.
        pending.push(b);
        let s = match std::str::from_utf8(&pending) {
            Ok(s) => s.to_string(),
            Err(e) if e.error_len().is_none() => continue,
            Err(_) => String::from_utf8_lossy(&pending).into_owned(),
        };
        pending.clear();
        for c in s.chars() {
            if in_tag {
                if c == '>' {
                    in_tag = false;
                    let t = tag.trim().to_ascii_lowercase();
                    let name: String =
                        t.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                    let closing = t.starts_with('/');
                    if let Some(end) = skip_until {
                        if closing && name == end {
                            skip_until = None;
                        }
                    } else if !closing && matches!(name.as_str(), "script" | "style" | "head") {
                        // The <head> (title, styles) is not part of the readable text.
                        skip_until = Some(match name.as_str() {
                            "script" => "script",
                            "style" => "style",
                            _ => "head",
                        });
                    } else if let Some(level) =
                        name.strip_prefix('h').and_then(|l| l.parse::<usize>().ok()).filter(|l| (1..=6).contains(l))
                    {
                        emit(&mut text, chunker, &prefix);
                        prefix = if closing { String::new() } else { format!("{} ", "#".repeat(level)) };
                        if closing {
                            chunker.push_line("");
                        }
                    } else if matches!(
                        name.as_str(),
                        "p" | "div" | "br" | "li" | "tr" | "section" | "article" | "ul" | "ol" | "table" | "title"
                    ) {
                        emit(&mut text, chunker, &prefix);
                        if closing && matches!(name.as_str(), "p" | "ul" | "ol" | "table" | "div" | "section") {
                            chunker.push_line("");
                        }
                        if !closing && name == "li" {
                            text.push_str("- ");
                        }
                    } else if !matches!(
                        name.as_str(),
                        "b" | "i" | "em" | "strong" | "a" | "span" | "code" | "u" | "small" | "sub" | "sup" | "mark"
                    ) {
                        // Other tags (cells, images …) separate words; inline formatting doesn't.
                        text.push(' ');
                    }
                    tag.clear();
                } else {
                    tag.push(c);
                }
            } else if c == '<' {
                in_tag = true;
            } else if skip_until.is_none() {
                text.push(c);
            }
        }
    }
    emit(&mut text, chunker, &prefix);
    Ok(())
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let ent = &rest[1..e];
            let c = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                "mdash" => Some('—'),
                "ndash" => Some('–'),
                _ => ent
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::hash::estimate_tokens;

    fn opts(max: usize) -> ChunkOptions<'static> {
        ChunkOptions { max_tokens: max, overlap_tokens: 8, count_tokens: &estimate_tokens }
    }

    #[test]
    fn markdown_chunks_follow_headings_and_fit_the_window() {
        let long: String = (0..200).map(|i| format!("Sentence number {i} talks about approvals. ")).collect();
        let md = format!("# Access Policy\n\nIntro text.\n\n## Approvals\n\n{long}\n\n```\n# not a heading\n```\n## Leavers\nRemove access within 24 hours.\n");
        let mut c = Chunker::new("doc:docs/p.md", opts(64));
        chunk_text(md.as_bytes(), &mut c).unwrap();
        let (title, chunks) = c.finish();
        assert_eq!(title.as_deref(), Some("Access Policy"));
        assert!(chunks.len() > 5);
        assert_eq!(chunks[0].heading, None);
        assert_eq!(chunks[1].heading.as_deref(), Some("Approvals"));
        let last = chunks.last().unwrap();
        assert_eq!(last.heading.as_deref(), Some("Leavers"));
        let code = chunks.iter().find(|c| c.text.contains("# not a heading")).unwrap();
        assert_eq!(code.heading.as_deref(), Some("Approvals"));
        for c in &chunks {
            let total = estimate_tokens("Access Policy")
                + estimate_tokens(c.heading.as_deref().unwrap_or(""))
                + estimate_tokens(&c.text);
            assert!(total <= 64, "{total} tokens: {}", c.text);
        }
        // Overlap: consecutive chunks of one section share their boundary sentence.
        let (a, b) = (&chunks[1].text, &chunks[2].text);
        let first_words_of_b: String = b.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        assert!(a.contains(&first_words_of_b), "no overlap between {a:?} and {b:?}");
        // Ids are stable for the same input.
        let mut c2 = Chunker::new("doc:docs/p.md", opts(64));
        chunk_text(md.as_bytes(), &mut c2).unwrap();
        assert_eq!(c2.finish().1, chunks);
    }

    #[test]
    fn html_becomes_headed_text() {
        let html = "<html><head><title>T</title><style>p{}</style><script>var x='<h1>';</script></head>\
                    <body><h1>Privileged Access</h1><p>Admins &amp; operators need <b>approval</b>.</p>\
                    <h2>Break glass</h2><ul><li>Call the on-call&nbsp;lead</li><li>Log it</li></ul></body></html>";
        let mut c = Chunker::new("doc:x.html", opts(256));
        chunk_html(html.as_bytes(), &mut c).unwrap();
        let (title, chunks) = c.finish();
        assert_eq!(title.as_deref(), Some("Privileged Access"));
        assert!(chunks[0].text.contains("Admins & operators need approval."), "{:?}", chunks[0].text);
        assert_eq!(chunks[1].heading.as_deref(), Some("Break glass"));
        assert!(chunks[1].text.contains("- Call the on-call lead"));
        assert!(!chunks.iter().any(|c| c.text.contains("var x")));
    }
}
