//! Vectors of the texts askiam ships with the binary (the AWS action catalogue, the product
//! glossary), computed once per embedding model and kept in the data dir's `knowledge/`.
//!
//! A search compares the question with every text of such a list; embedding them takes
//! seconds to a minute with the local model, so it happens once, by the ingest that needs them
//! ([`prepare`]) or else by the first search that does, and the result is kept on disk keyed
//! by model, dimension and the list's content hash. A remote provider (Bedrock, Ollama)
//! computes them only at ingest: a metered job of thousands of texts would stall a query.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, OnceLock};

use crate::embed::{EmbedError, Embedder, InputKind};

/// Texts per embedding call while a list is embedded.
const BATCH: usize = 256;

/// A shipped list of texts: what it is called on disk and in logs, and its content hash, so
/// that stored vectors of an older list are not reused.
pub struct Texts<'a> {
    pub name: &'static str,
    pub hash: &'a str,
    pub texts: &'a [String],
}

/// A list embedded by one model: row `i` is text `i`'s vector.
pub struct Vectors {
    pub dims: usize,
    pub matrix: Vec<f32>,
}

impl Vectors {
    /// Each row's similarity to `query` (rows are normalised by the embedder).
    pub fn similarities(&self, query: &[f32]) -> Vec<f32> {
        self.matrix.chunks_exact(self.dims).map(|row| crate::embed::dot(row, query)).collect()
    }
}

/// Okapi BM25 over a shipped list's texts, in memory (hundreds to a few thousand short texts),
/// with the terms of the shipped API-document weights ([`super::services::terms`]).
#[derive(Default)]
pub struct Bm25 {
    /// term → (text, occurrences in it)
    postings: HashMap<String, Vec<(u32, u32)>>,
    lengths: Vec<u32>,
    average: f32,
}

impl Bm25 {
    const K1: f32 = 1.2;
    const B: f32 = 0.75;

    pub fn new(texts: &[String]) -> Bm25 {
        let mut b = Bm25::default();
        for (i, text) in texts.iter().enumerate() {
            let mut counts: HashMap<String, u32> = HashMap::new();
            let mut length = 0;
            for t in super::services::term_list(text) {
                *counts.entry(t).or_default() += 1;
                length += 1;
            }
            for (t, n) in counts {
                b.postings.entry(t).or_default().push((i as u32, n));
            }
            b.lengths.push(length);
        }
        b.average = b.lengths.iter().sum::<u32>() as f32 / b.lengths.len().max(1) as f32;
        b
    }

    /// Each text's score for the question's terms.
    pub fn scores(&self, question: &str) -> Vec<f32> {
        let mut out = vec![0f32; self.lengths.len()];
        let texts = self.lengths.len() as f32;
        for t in super::services::terms(question) {
            let Some(posting) = self.postings.get(&t) else { continue };
            let n = posting.len() as f32;
            let idf = (1.0 + (texts - n + 0.5) / (n + 0.5)).ln();
            for &(i, tf) in posting {
                let (tf, len) = (tf as f32, self.lengths[i as usize] as f32);
                out[i as usize] +=
                    idf * tf * (Self::K1 + 1.0) / (tf + Self::K1 * (1.0 - Self::B + Self::B * len / self.average));
            }
        }
        out
    }
}

/// Each text's score for a question, best first: its vector's similarity to the question's
/// (`query`) plus `keyword_weight` times its keyword score relative to the best text's, so
/// that the weight does not depend on the question's length.
pub fn nearest(
    vectors: &Vectors,
    query: &[f32],
    words: &Bm25,
    question: &str,
    keyword_weight: f32,
) -> Vec<(f32, usize)> {
    let words = words.scores(question);
    let best = words.iter().copied().fold(0f32, f32::max);
    let weight = if best > 0.0 { keyword_weight / best } else { 0.0 };
    let mut sims: Vec<(f32, usize)> =
        vectors.similarities(query).into_iter().zip(words).enumerate().map(|(i, (s, w))| (s + weight * w, i)).collect();
    sims.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    sims
}

static STORE: OnceLock<PathBuf> = OnceLock::new();
/// Vectors already read or computed in this process, by list name and model.
type Loaded = HashMap<(&'static str, String), Arc<Vectors>>;
static LOADED: LazyLock<tokio::sync::Mutex<Loaded>> = LazyLock::new(Default::default);

/// Where the vectors are kept between runs (the data dir's `knowledge/`); set once by the
/// app. Without it they are computed per process.
pub fn keep_vectors_in(dir: PathBuf) {
    let _ = STORE.set(dir);
}

fn stored_path(dir: &Path, list: &Texts, model: &str, dims: usize) -> PathBuf {
    dir.join(format!("{}{}.f32", stored_stem(list, model, dims), list.hash))
}

/// The file name of a list's vectors for this model, but for the list's hash.
fn stored_stem(list: &Texts, model: &str, dims: usize) -> String {
    let model: String = model.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{}-{model}-{dims}-", list.name)
}

/// Beside `kept`, removes the vectors of older versions of the same list for the same model
/// (`stem`, another content hash): each version of the binary that changed a list would
/// otherwise leave its vectors behind, 32 MB for the action catalogue. Other models' and other
/// lists' files stay.
fn forget_older(kept: &Path, stem: &str) {
    let (Some(dir), Some(current)) = (kept.parent(), kept.file_name()) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == current {
            continue;
        }
        let Some(name) = name.to_str() else { continue };
        let older = name
            .strip_prefix(stem)
            .and_then(|rest| rest.strip_suffix(".f32"))
            .is_some_and(|hash| !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        if older {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = name, "removed the vectors of an older shipped list"),
                Err(e) => tracing::warn!(file = name, error = %e, "could not remove an older shipped list's vectors"),
            }
        }
    }
}

fn read_stored(path: &Path, expected: usize) -> Option<Vec<f32>> {
    let bytes = std::fs::read(path).ok()?;
    (bytes.len() == expected * 4)
        .then(|| bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn write_stored(path: &Path, matrix: &[f32]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let bytes: Vec<u8> = matrix.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The list's vectors for this embedder's model: remembered, else read from the store, else
/// computed (and stored). With `any_provider` false a remote provider gets
/// [`EmbedError::ModelMissing`] instead of a bulk job.
pub async fn vectors(
    list: &Texts<'_>,
    embedder: &dyn Embedder,
    any_provider: bool,
) -> Result<Arc<Vectors>, EmbedError> {
    let model = embedder.model_id().to_string();
    let key = (list.name, model.clone());
    let mut loaded = LOADED.lock().await;
    if let Some(v) = loaded.get(&key) {
        return Ok(v.clone());
    }
    let dims = embedder.dims();
    let path = STORE.get().map(|dir| stored_path(dir, list, &model, dims));
    let matrix = match path.as_deref().and_then(|p| read_stored(p, list.texts.len() * dims)) {
        Some(m) => m,
        None if !embedder.in_process() && !any_provider => {
            return Err(EmbedError::ModelMissing(format!(
                "no stored {} vectors for {model}; with a remote provider ingest computes them",
                list.name
            )));
        }
        None => {
            let started = std::time::Instant::now();
            tracing::info!(list = list.name, model = %model, texts = list.texts.len(), "embedding a shipped list (once per model)");
            let mut matrix = Vec::with_capacity(list.texts.len() * dims);
            for batch in list.texts.chunks(BATCH) {
                for v in embedder.embed(batch, InputKind::Document).await? {
                    if v.len() != dims {
                        return Err(EmbedError::Provider(format!("expected {dims} dims, got {}", v.len())));
                    }
                    matrix.extend(v);
                }
            }
            if let Some(p) = &path {
                match write_stored(p, &matrix) {
                    Ok(()) => forget_older(p, &stored_stem(list, &model, dims)),
                    Err(e) => {
                        tracing::warn!(path = %p.display(), error = %e, "could not keep a shipped list's vectors")
                    }
                }
            }
            tracing::info!(list = list.name, seconds = started.elapsed().as_secs_f64(), "shipped list embedded");
            matrix
        }
    };
    let v = Arc::new(Vectors { dims, matrix });
    loaded.insert(key, v.clone());
    Ok(v)
}

/// [`vectors`] for a search, which ranks without the list rather than fail: `None` when they
/// cannot be had for this model (logged; a remote provider's are computed at ingest) or the
/// question was embedded with other dimensions.
pub async fn for_search(list: &Texts<'_>, embedder: &dyn Embedder, query_dims: usize) -> Option<Arc<Vectors>> {
    match vectors(list, embedder, false).await {
        Ok(v) if v.dims == query_dims => Some(v),
        Ok(_) => None,
        Err(e @ EmbedError::ModelMissing(_)) => {
            tracing::debug!(list = list.name, error = %e, "ranking without a shipped list");
            None
        }
        Err(e) => {
            tracing::warn!(list = list.name, error = %e, "shipped list unavailable; ranking without it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_vectors_are_read_back_only_at_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let texts = ["a".to_string(), "b".to_string()];
        let list = Texts { name: "aws-actions", hash: "0123abcd", texts: &texts };
        let path = stored_path(dir.path(), &list, "all-MiniLM-L6-v2", 2);
        assert_eq!(path.file_name().unwrap(), "aws-actions-all-MiniLM-L6-v2-2-0123abcd.f32");
        write_stored(&path, &[1.0, -2.5, 3.25, 0.0]).unwrap();
        assert_eq!(read_stored(&path, 4), Some(vec![1.0, -2.5, 3.25, 0.0]));
        assert_eq!(read_stored(&path, 6), None, "a file of another list's size is not used");
    }

    #[test]
    fn keeping_a_lists_vectors_removes_only_that_models_older_versions() {
        let dir = tempfile::tempdir().unwrap();
        let texts = ["a".to_string()];
        let list = |hash| Texts { name: "products", hash, texts: &texts };
        let old = stored_path(dir.path(), &list("0123456789ab"), "all-MiniLM-L6-v2", 1);
        let other_model = stored_path(dir.path(), &list("0123456789ab"), "amazon.titan-embed-text-v2:0", 1);
        let other_dims = stored_path(dir.path(), &list("0123456789ab"), "all-MiniLM-L6-v2", 2);
        let other_list =
            stored_path(dir.path(), &Texts { name: "aws-actions", ..list("0123456789ab") }, "all-MiniLM-L6-v2", 1);
        let unrelated = dir.path().join("products-all-MiniLM-L6-v2-1-notes.txt");
        let new = stored_path(dir.path(), &list("ba9876543210"), "all-MiniLM-L6-v2", 1);
        for p in [&old, &other_model, &other_dims, &other_list, &unrelated, &new] {
            std::fs::write(p, [0u8; 4]).unwrap();
        }
        forget_older(&new, &stored_stem(&list("ba9876543210"), "all-MiniLM-L6-v2", 1));
        assert!(!old.exists(), "the older version of this list for this model is gone");
        for p in [&other_model, &other_dims, &other_list, &unrelated, &new] {
            assert!(p.exists(), "{} stays", p.display());
        }
    }
}
