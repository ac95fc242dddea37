//! all-MiniLM-L6-v2 in process: the model's WordPiece tokenizer, its 6-layer BERT encoder, mean
//! pooling over the real tokens and L2 normalisation — the vectors sentence-transformers gives
//! (`tests/minilm.rs` checks them against vectors the Python library wrote). The model files
//! come from `askiam model fetch` (see `model.rs`); nothing is downloaded here.
//!
//! Decisions a reader would otherwise question:
//!
//! - **The encoder is written out here over flat `f32` buffers, not with candle.** The matmuls
//!   (95% of the FLOPs) go to `gemm`, the kernel crate candle's CPU backend calls. What is
//!   fused by hand is what a tensor library does op by op: bias and residual are written into a
//!   matmul's output before it accumulates; GELU, softmax and LayerNorm are single passes
//!   compiled for AVX-512 or AVX2 when the CPU has them; buffers are reused across layers and
//!   batches. Measured on the GCP roles corpus on 2 cores: candle-transformers' BERT ran at
//!   ~1,250 tokens/s and the same graph on candle ops at ~2,300 (attention and GELU dominated,
//!   plus an allocation per op) — this file runs at the figures `cargo bench --bench embed`
//!   prints. It also keeps candle's ~5 minutes of compile time out of CI.
//! - **Batches are packed, not padded.** Every linear layer runs on the batch's real tokens
//!   concatenated, so no FLOP is spent on padding and no mask is needed; attention runs per
//!   sequence and head. Texts go longest first into chunks of a token budget, dealt to one
//!   worker per core; each worker runs single-threaded kernels on its own buffers, which
//!   scales better than splitting every op across cores.
//! - **A query reads half-precision weights.** With a handful of tokens a matmul is bound by
//!   reading its weights, and 42 MB of f32 weights do not fit the 32 MB L3, so every query
//!   streamed them from DRAM. Inputs of at most 16 tokens use an f16 copy (21 MB, converted
//!   back to f32 in registers; accumulation stays f32): the vectors still agree with the
//!   reference to a cosine of 0.999999.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use gemm::Parallelism;
use tokenizers::{Tokenizer, TruncationParams};

use super::{model, EmbedError, Embedder, InputKind};
use crate::config::Config;

/// The model id an index built with these vectors is stamped with.
pub const MODEL_ID: &str = model::MODEL_NAME;
/// Vector size.
pub const DIMS: usize = 384;
/// sentence-transformers' `max_seq_length` for this model: tokens read, [CLS] and [SEP] included.
pub const MAX_TOKENS: usize = 256;

const HIDDEN: usize = DIMS;
const HEADS: usize = 12;
const HEAD_DIM: usize = HIDDEN / HEADS;
const QKV: usize = 3 * HIDDEN;
const FFN: usize = 1536;
const LAYERS: usize = 6;
const VOCAB: usize = 30522;
const MAX_POSITIONS: usize = 512;
const LN_EPS: f32 = 1e-12;

/// Tokens per chunk a worker runs at once: large enough that the matmuls run near gemm's peak
/// and a batch still splits evenly across the workers.
const CHUNK_TOKENS: usize = 2048;

/// Compiles `$body` once per instruction set and picks the best one the CPU has at run time.
/// The bodies are plain loops over lanes that the compiler vectorises; with AVX-512 enabled
/// they run 16 floats per instruction.
macro_rules! simd {
    ($(#[$attr:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the features the function is compiled for were just detected.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// The local all-MiniLM-L6-v2 embedder. Cheap to clone; loading reads ~90 MB of weights once.
#[derive(Clone)]
pub struct MiniLm {
    inner: Arc<Inner>,
}

struct Inner {
    /// Truncates at [`MAX_TOKENS`], adds [CLS]/[SEP]; no padding (batches are packed).
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, for counting.
    counter: Tokenizer,
    weights: Weights,
    threads: usize,
    /// Buffers of finished runs, reused so that a run does not fault fresh pages in.
    spare: Mutex<Vec<Workspace>>,
    profile: Mutex<Profile>,
}

impl MiniLm {
    /// Loads the model from a directory holding [`model::FILES`] (what `askiam model fetch`
    /// puts in `<model dir>/all-MiniLM-L6-v2`). `threads` 0 means one worker per core.
    pub fn load(dir: &Path, threads: usize) -> Result<MiniLm, EmbedError> {
        for file in model::FILES {
            let path = dir.join(file.name);
            if !path.is_file() {
                return Err(EmbedError::ModelMissing(format!(
                    "{MODEL_ID}: {} does not exist; run \"askiam model fetch\" to install the model",
                    path.display()
                )));
            }
        }
        check_config(&dir.join("config.json"))?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut counter = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| EmbedError::Provider(format!("{}: {e}", tokenizer_path.display())))?;
        // The file carries a fixed 128-token padding and truncation meant for other uses;
        // sentence-transformers overrides both, so do we.
        counter.with_padding(None);
        counter
            .with_truncation(None)
            .map_err(|e| EmbedError::Provider(format!("{}: {e}", tokenizer_path.display())))?;
        if counter.get_vocab_size(true) > VOCAB {
            return Err(EmbedError::Provider(format!(
                "{}: vocabulary of {} tokens, the model has {VOCAB} embeddings",
                tokenizer_path.display(),
                counter.get_vocab_size(true)
            )));
        }
        let mut tokenizer = counter.clone();
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| EmbedError::Provider(format!("{}: {e}", tokenizer_path.display())))?;
        let weights = Weights::load(&dir.join("model.safetensors"))?;
        let threads =
            if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
        Ok(MiniLm {
            inner: Arc::new(Inner {
                tokenizer,
                counter,
                weights,
                threads,
                spare: Mutex::new(Vec::new()),
                profile: Mutex::new(Profile::default()),
            }),
        })
    }

    /// Loads the model from the configured model dir (see [`model::model_dir`]) with
    /// `embed.threads` workers.
    pub fn from_config(config: &Config) -> Result<MiniLm, EmbedError> {
        MiniLm::load(&model::files_dir(&model::model_dir(config)), config.embed.threads)
    }

    /// Token ids the model reads for `text`: [CLS] … [SEP], truncated at [`MAX_TOKENS`].
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        self.inner.ids(text)
    }

    /// Embeds `texts` on the calling thread (and one worker thread per further core).
    pub fn embed_blocking<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.inner.embed(texts)
    }

    /// Worker threads (one per core unless configured).
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Where the time of all runs so far went, per stage (for `cargo bench --bench embed`).
    pub fn take_profile(&self) -> Profile {
        std::mem::take(&mut *self.inner.profile.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl Embedder for MiniLm {
    fn in_process(&self) -> bool {
        true
    }

    fn model_id(&self) -> &str {
        MODEL_ID
    }
    fn dims(&self) -> usize {
        DIMS
    }
    fn max_tokens(&self) -> usize {
        MAX_TOKENS
    }
    /// WordPiece tokens of `text`, without [CLS]/[SEP] and without truncation.
    fn count_tokens(&self, text: &str) -> usize {
        self.inner
            .counter
            .encode_fast(text, false)
            .map(|e| e.len())
            .unwrap_or_else(|_| super::hash::estimate_tokens(text))
    }
    /// Documents and queries are embedded alike: this model has no instruction prefixes.
    async fn embed(&self, texts: &[String], _kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Inference is CPU-bound for milliseconds to seconds; keep it off the async workers.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let inner = self.inner.clone();
                let texts = texts.to_vec();
                handle
                    .spawn_blocking(move || inner.embed(&texts))
                    .await
                    .map_err(|e| EmbedError::Provider(format!("{MODEL_ID} worker failed: {e}")))?
            }
            Err(_) => self.inner.embed(texts),
        }
    }
}

impl Inner {
    fn ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| EmbedError::Provider(format!("{MODEL_ID} tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn embed<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let ids = self.tokenize(texts)?;
        let tokenize = started.elapsed();
        let total: usize = ids.iter().map(Vec::len).sum();
        let mut profile =
            Profile { tokenize_secs: tokenize.as_secs_f64(), tokens: total, texts: ids.len(), ..Profile::default() };
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); ids.len()];

        // Chunks of whole texts of at most CHUNK_TOKENS, at least two per worker and a multiple
        // of the workers, so that they finish together.
        let budget = if self.threads == 1 {
            CHUNK_TOKENS
        } else {
            let n = total.div_ceil(CHUNK_TOKENS).max(2 * self.threads).next_multiple_of(self.threads);
            total.div_ceil(n).max(MAX_TOKENS)
        };
        let chunks = chunks(&ids, budget);
        if self.threads == 1 || chunks.len() == 1 {
            // A query, or a few texts: one pass, each matmul split across the cores.
            let cores = if self.threads > 1 { Cores::Split(self.threads) } else { Cores::One };
            let mut ws = self.workspace();
            for chunk in &chunks {
                let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                for (&i, v) in chunk.iter().zip(ws.forward(&self.weights, &seqs, cores)) {
                    out[i] = v;
                }
            }
            profile.absorb(&ws.profile);
            self.give_back(vec![ws]);
        } else {
            // A batch: one worker per core pulls chunks and runs them alone, single-threaded.
            let workers = self.threads.min(chunks.len());
            let next = AtomicUsize::new(0);
            let results: Vec<WorkerDone> = std::thread::scope(|s| {
                let run = || {
                    let mut ws = self.workspace();
                    let mut done = Vec::new();
                    while let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                        done.extend(chunk.iter().copied().zip(ws.forward(&self.weights, &seqs, Cores::One)));
                    }
                    (ws, done)
                };
                let handles: Vec<_> = (1..workers).map(|_| s.spawn(run)).collect();
                let mut all = vec![run()];
                all.extend(handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))));
                all
            });
            let mut spare = Vec::new();
            for (ws, done) in results {
                profile.absorb(&ws.profile);
                for (i, v) in done {
                    out[i] = v;
                }
                spare.push(ws);
            }
            self.give_back(spare);
        }
        profile.wall_secs = started.elapsed().as_secs_f64();
        self.profile.lock().unwrap_or_else(|e| e.into_inner()).add(&profile);
        Ok(out)
    }

    /// Token ids of every text; many texts are tokenized on all cores.
    fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>, EmbedError> {
        if self.threads == 1 || texts.len() < 32 {
            return texts.iter().map(|t| self.ids(t.as_ref())).collect();
        }
        let part = texts.len().div_ceil(self.threads);
        let parts: Vec<Result<Vec<Vec<u32>>, EmbedError>> = std::thread::scope(|s| {
            let handles: Vec<_> = texts
                .chunks(part)
                .map(|p| s.spawn(move || p.iter().map(|t| self.ids(t.as_ref())).collect::<Result<Vec<_>, _>>()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        let mut ids = Vec::with_capacity(texts.len());
        for p in parts {
            ids.extend(p?);
        }
        Ok(ids)
    }

    fn workspace(&self) -> Workspace {
        let mut ws = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        ws.profile = Profile::default();
        ws
    }

    fn give_back(&self, mut used: Vec<Workspace>) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        spare.append(&mut used);
        spare.truncate(self.threads);
    }
}

/// A worker's buffers, and the vector of each text (by index) it embedded.
type WorkerDone = (Workspace, Vec<(usize, Vec<f32>)>);

/// Texts (by index) longest first, cut into chunks of at most `budget` tokens (a longer text
/// is a chunk of its own): chunks come out of similar size, and the last ones dealt are small.
fn chunks(ids: &[Vec<u32>], budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut used = usize::MAX;
    for i in order {
        let len = ids[i].len();
        match chunks.last_mut() {
            Some(chunk) if used + len <= budget => chunk.push(i),
            _ => {
                chunks.push(vec![i]);
                used = 0;
            }
        }
        used += len;
    }
    chunks
}

/// Seconds per stage, summed over workers (so with 2 workers they add up to ~2× the wall time).
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub texts: usize,
    pub tokens: usize,
    pub wall_secs: f64,
    pub tokenize_secs: f64,
    pub embeddings_secs: f64,
    pub qkv_secs: f64,
    pub attention_secs: f64,
    pub out_proj_secs: f64,
    pub ffn_up_secs: f64,
    pub gelu_secs: f64,
    pub ffn_down_secs: f64,
    pub layer_norm_secs: f64,
    pub pool_secs: f64,
}

impl Profile {
    fn absorb(&mut self, o: &Profile) {
        self.embeddings_secs += o.embeddings_secs;
        self.qkv_secs += o.qkv_secs;
        self.attention_secs += o.attention_secs;
        self.out_proj_secs += o.out_proj_secs;
        self.ffn_up_secs += o.ffn_up_secs;
        self.gelu_secs += o.gelu_secs;
        self.ffn_down_secs += o.ffn_down_secs;
        self.layer_norm_secs += o.layer_norm_secs;
        self.pool_secs += o.pool_secs;
    }

    fn add(&mut self, o: &Profile) {
        self.absorb(o);
        self.texts += o.texts;
        self.tokens += o.tokens;
        self.wall_secs += o.wall_secs;
        self.tokenize_secs += o.tokenize_secs;
    }

    /// (stage, seconds) in pipeline order.
    pub fn stages(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("tokenize", self.tokenize_secs),
            ("embeddings", self.embeddings_secs),
            ("qkv matmul", self.qkv_secs),
            ("attention", self.attention_secs),
            ("out-proj matmul", self.out_proj_secs),
            ("ffn-up matmul", self.ffn_up_secs),
            ("gelu", self.gelu_secs),
            ("ffn-down matmul", self.ffn_down_secs),
            ("layer norm", self.layer_norm_secs),
            ("pool+normalise", self.pool_secs),
        ]
    }
}

fn check_config(path: &Path) -> Result<(), EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|e| EmbedError::Provider(format!("{}: {e}", path.display())))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EmbedError::Provider(format!("{}: {e}", path.display())))?;
    let expect = [
        ("hidden_size", HIDDEN),
        ("num_hidden_layers", LAYERS),
        ("num_attention_heads", HEADS),
        ("intermediate_size", FFN),
        ("vocab_size", VOCAB),
        ("max_position_embeddings", MAX_POSITIONS),
    ];
    for (key, want) in expect {
        let got = v.get(key).and_then(serde_json::Value::as_u64);
        if got != Some(want as u64) {
            return Err(EmbedError::Provider(format!(
                "{}: {key} is {got:?}, this build runs MiniLM-L6-H384 ({key} = {want})",
                path.display()
            )));
        }
    }
    if v.get("hidden_act").and_then(serde_json::Value::as_str) != Some("gelu") {
        return Err(EmbedError::Provider(format!("{}: hidden_act is not \"gelu\"", path.display())));
    }
    Ok(())
}

/// A dense layer `y = x · wᵀ + b`, with `w` (n × k) row-major as PyTorch stores it: gemm reads
/// either layout, and the few-rows kernel wants each output's weights contiguous.
struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    n: usize,
    k: usize,
    /// `w` rounded to IEEE half precision, for the few-rows kernel only (empty where that kernel
    /// does not run): a query's matmuls are bound by reading the weights, and in halves all
    /// six layers (21 MB) fit in the 32 MB L3 instead of streaming 42 MB from DRAM each time.
    w16: Vec<u16>,
}

struct LayerWeights {
    /// Query, key and value projections stacked: (3·HIDDEN × HIDDEN).
    qkv: Linear,
    out: Linear,
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    up: Linear,
    down: Linear,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
}

struct Weights {
    word: Vec<f32>,
    position: Vec<f32>,
    /// Every input is a single segment, so only token type 0 is ever added.
    token_type0: Vec<f32>,
    ln_g: Vec<f32>,
    ln_b: Vec<f32>,
    layers: Vec<LayerWeights>,
}

impl Weights {
    fn load(path: &Path) -> Result<Weights, EmbedError> {
        let bytes = std::fs::read(path).map_err(|e| EmbedError::Provider(format!("{}: {e}", path.display())))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| EmbedError::Provider(format!("{}: {e}", path.display())))?;
        let get = |name: &str, shape: &[usize]| tensor(&st, path, name, shape);
        let linear = |names: &[&str], k: usize, n_each: usize| -> Result<Linear, EmbedError> {
            let (mut w, mut b) = (Vec::new(), Vec::new());
            for name in names {
                w.extend(get(&format!("{name}.weight"), &[n_each, k])?);
                b.extend(get(&format!("{name}.bias"), &[n_each])?);
            }
            let w16 = half_weights(&w);
            Ok(Linear { n: b.len(), k, w, b, w16 })
        };
        let mut layers = Vec::with_capacity(LAYERS);
        for l in 0..LAYERS {
            let p = format!("encoder.layer.{l}.");
            let qkv = [
                format!("{p}attention.self.query"),
                format!("{p}attention.self.key"),
                format!("{p}attention.self.value"),
            ];
            layers.push(LayerWeights {
                qkv: linear(&qkv.iter().map(String::as_str).collect::<Vec<_>>(), HIDDEN, HIDDEN)?,
                out: linear(&[&format!("{p}attention.output.dense")], HIDDEN, HIDDEN)?,
                ln1_g: get(&format!("{p}attention.output.LayerNorm.weight"), &[HIDDEN])?,
                ln1_b: get(&format!("{p}attention.output.LayerNorm.bias"), &[HIDDEN])?,
                up: linear(&[&format!("{p}intermediate.dense")], HIDDEN, FFN)?,
                down: linear(&[&format!("{p}output.dense")], FFN, HIDDEN)?,
                ln2_g: get(&format!("{p}output.LayerNorm.weight"), &[HIDDEN])?,
                ln2_b: get(&format!("{p}output.LayerNorm.bias"), &[HIDDEN])?,
            });
        }
        let token_types = get("embeddings.token_type_embeddings.weight", &[2, HIDDEN])?;
        Ok(Weights {
            word: get("embeddings.word_embeddings.weight", &[VOCAB, HIDDEN])?,
            position: get("embeddings.position_embeddings.weight", &[MAX_POSITIONS, HIDDEN])?,
            token_type0: token_types[..HIDDEN].to_vec(),
            ln_g: get("embeddings.LayerNorm.weight", &[HIDDEN])?,
            ln_b: get("embeddings.LayerNorm.bias", &[HIDDEN])?,
            layers,
        })
    }
}

fn tensor(st: &safetensors::SafeTensors<'_>, file: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
    let err = |msg: String| EmbedError::Provider(format!("{}: tensor {name}: {msg}", file.display()));
    let view = st.tensor(name).map_err(|e| err(e.to_string()))?;
    if view.dtype() != safetensors::Dtype::F32 {
        return Err(err(format!("dtype {:?}, expected F32", view.dtype())));
    }
    if view.shape() != shape {
        return Err(err(format!("shape {:?}, expected {shape:?}", view.shape())));
    }
    Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// One worker's activations, grown to the largest chunk seen and then reused.
#[derive(Default)]
struct Workspace {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    h: Vec<f32>,
    ff: Vec<f32>,
    scores: Vec<f32>,
    profile: Profile,
}

fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

impl Workspace {
    /// The pooled, normalised vector of each sequence (token ids incl. [CLS]/[SEP]).
    fn forward(&mut self, w: &Weights, seqs: &[&[u32]], cores: Cores) -> Vec<Vec<f32>> {
        let t: usize = seqs.iter().map(|s| s.len()).sum();
        let max_len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        grow(&mut self.x, t * HIDDEN);
        grow(&mut self.qkv, t * QKV);
        grow(&mut self.ctx, t * HIDDEN);
        grow(&mut self.h, t * HIDDEN);
        grow(&mut self.ff, t * FFN);
        grow(&mut self.scores, max_len * max_len);
        let Workspace { x, qkv, ctx, h, ff, scores, profile } = self;
        let (x, qkv, ctx, h, ff) = (
            &mut x[..t * HIDDEN],
            &mut qkv[..t * QKV],
            &mut ctx[..t * HIDDEN],
            &mut h[..t * HIDDEN],
            &mut ff[..t * FFN],
        );
        let mut clock = Instant::now();
        let mut lap = |slot: &mut f64| {
            let now = Instant::now();
            *slot += (now - clock).as_secs_f64();
            clock = now;
        };

        let mut row = 0;
        for s in seqs {
            for (pos, &id) in s.iter().enumerate() {
                // The tokenizer's vocabulary was checked against the embedding table at load.
                let id = (id as usize).min(VOCAB - 1);
                let pos = pos.min(MAX_POSITIONS - 1);
                add3(
                    &mut x[row * HIDDEN..(row + 1) * HIDDEN],
                    &w.word[id * HIDDEN..(id + 1) * HIDDEN],
                    &w.position[pos * HIDDEN..(pos + 1) * HIDDEN],
                    &w.token_type0,
                );
                row += 1;
            }
        }
        layer_norm_rows(x, &w.ln_g, &w.ln_b);
        lap(&mut profile.embeddings_secs);

        for l in &w.layers {
            linear(&l.qkv, x, None, qkv, cores);
            lap(&mut profile.qkv_secs);
            attention(qkv, seqs, ctx, scores);
            lap(&mut profile.attention_secs);
            linear(&l.out, ctx, Some(x), h, cores);
            lap(&mut profile.out_proj_secs);
            layer_norm_rows(h, &l.ln1_g, &l.ln1_b);
            lap(&mut profile.layer_norm_secs);
            linear(&l.up, h, None, ff, cores);
            lap(&mut profile.ffn_up_secs);
            gelu(ff);
            lap(&mut profile.gelu_secs);
            linear(&l.down, ff, Some(h), x, cores);
            lap(&mut profile.ffn_down_secs);
            layer_norm_rows(x, &l.ln2_g, &l.ln2_b);
            lap(&mut profile.layer_norm_secs);
        }

        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for s in seqs {
            out.push(mean_pool_normalised(&x[start * HIDDEN..(start + s.len()) * HIDDEN]));
            start += s.len();
        }
        lap(&mut profile.pool_secs);
        out
    }
}

/// How one forward pass uses the cores: a worker runs everything on its own thread; a lone
/// small input splits each matmul across `n` threads instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cores {
    One,
    Split(usize),
}

/// At most this many rows, a matmul streams the weights once instead of packing them (gemm's
/// packing costs as much as the product itself when there are only a few rows).
const SMALL_ROWS: usize = 16;

/// `out = input · wᵀ + b (+ residual)` for `input` (t × k); `out` and `residual` are (t × n).
fn linear(l: &Linear, input: &[f32], residual: Option<&[f32]>, out: &mut [f32], cores: Cores) {
    let (n, k) = (l.n, l.k);
    let t = input.len() / k;
    debug_assert_eq!(out.len(), t * n);
    match residual {
        Some(res) => {
            for (o, r) in out.chunks_exact_mut(n).zip(res.chunks_exact(n)) {
                add2(o, &l.b, r);
            }
        }
        None => {
            for o in out.chunks_exact_mut(n) {
                o.copy_from_slice(&l.b);
            }
        }
    }
    let threads = match cores {
        Cores::One => 1,
        Cores::Split(threads) => threads.max(1),
    };
    if t <= SMALL_ROWS && !l.w16.is_empty() && n.is_multiple_of(SMALL_COLS) && k.is_multiple_of(16) {
        // On one thread: splitting these few-microsecond products across cores cost more in
        // hand-offs than it saved (a query took 2.77 ms on 2 threads, 2.66 ms on one).
        small_matmul_acc(input, k, &l.w16, out, n);
    } else if threads > 1 {
        // Rows in `threads` bands, each a single-threaded product (gemm's own splitting of one
        // product gained little at these sizes).
        use rayon::prelude::*;
        let band = t.div_ceil(threads);
        out.par_chunks_mut(band * n).zip(input.par_chunks(band * k)).for_each(|(o, i)| gemm_acc(i, k, &l.w, o, n));
    } else {
        gemm_acc(input, k, &l.w, out, n);
    }
}

/// `out += input · wᵀ` on this thread.
fn gemm_acc(input: &[f32], k: usize, w: &[f32], out: &mut [f32], n: usize) {
    let t = input.len() / k;
    assert!(out.len() >= t * n && w.len() >= n * k, "matmul shapes");
    // SAFETY: the three matrices lie inside the slices given (asserted), row-major, strides in
    // elements; dst does not alias lhs or rhs (distinct borrows).
    unsafe {
        gemm::gemm(
            t,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            input.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

const SMALL_COLS: usize = 2;
const SMALL_BAND: usize = 8;
const PREFETCH_ROWS: usize = 4;

/// Whether the CPU has AVX-512F, which [`small_matmul_acc`] and [`exp_rows_avx512`] are written
/// for; elsewhere gemm and the portable loops serve.
fn avx512f_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out += input · wᵀ` for an input of a few rows, `w` (n × k) in half precision: every
/// weight row is streamed once, in order, against up to 8 input rows held in cache (dot
/// products 16 lanes wide). Callers check [`avx512f_available`] first.
fn small_matmul_acc(input: &[f32], k: usize, w: &[u16], out: &mut [f32], n: usize) {
    let m = input.len() / k;
    assert!(k.is_multiple_of(16) && n.is_multiple_of(SMALL_COLS) && w.len() >= k * n && out.len() >= m * n);
    let mut band = vec![0f32; SMALL_BAND * k];
    let mut acc = [0f32; SMALL_BAND * SMALL_COLS];
    for r0 in (0..m).step_by(SMALL_BAND) {
        let rows = (m - r0).min(SMALL_BAND);
        // Up to 8 input rows, zero-padded to 8.
        band[..rows * k].copy_from_slice(&input[r0 * k..(r0 + rows) * k]);
        band[rows * k..].iter_mut().for_each(|v| *v = 0.0);
        for j in (0..n).step_by(SMALL_COLS) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F was detected by the caller (avx512f_available); the kernel
            // reads rows j and j+1 of w (k halves each, inside w by the assert) and 8 rows of
            // band, and prefetches (never faults) a few rows further on.
            unsafe {
                dot_block_avx512(&band, k, w[j * k..].as_ptr(), &mut acc);
            }
            for r in 0..rows {
                let o = &mut out[(r0 + r) * n + j..(r0 + r) * n + j + SMALL_COLS];
                for (a, b) in o.iter_mut().zip(&acc[r * SMALL_COLS..(r + 1) * SMALL_COLS]) {
                    *a += b;
                }
            }
        }
    }
}

/// out[r·2 + c] = band[r] · w[c] for 8 band rows and 2 half-precision weight rows of length k.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_block_avx512(band: &[f32], k: usize, w: *const u16, out: &mut [f32; SMALL_BAND * SMALL_COLS]) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); SMALL_BAND * SMALL_COLS];
    let x = band.as_ptr();
    for kk in (0..k).step_by(16) {
        // The weights come from DRAM once per query: fetch the rows of the block after next
        // while this one computes (the hardware prefetcher alone reached ~6 GB/s here).
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(PREFETCH_ROWS * k + kk) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((PREFETCH_ROWS + 1) * k + kk) as *const i8);
        let w0 = _mm512_cvtph_ps(_mm256_loadu_si256(w.add(kk) as *const __m256i));
        let w1 = _mm512_cvtph_ps(_mm256_loadu_si256(w.add(k + kk) as *const __m256i));
        for r in 0..SMALL_BAND {
            let xv = _mm512_loadu_ps(x.add(r * k + kk));
            acc[2 * r] = _mm512_fmadd_ps(xv, w0, acc[2 * r]);
            acc[2 * r + 1] = _mm512_fmadd_ps(xv, w1, acc[2 * r + 1]);
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = _mm512_reduce_add_ps(a);
    }
}

/// `w` rounded to IEEE half precision (nearest even) for [`small_matmul_acc`], or nothing
/// where that kernel cannot run.
fn half_weights(w: &[f32]) -> Vec<u16> {
    if !avx512f_available() || !w.len().is_multiple_of(16) {
        return Vec::new();
    }
    let mut out = vec![0u16; w.len()];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F was detected just above; 16 floats are read and 16 halves written per
    // step, inside both buffers (chunks_exact of equal lengths).
    unsafe {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        unsafe fn convert(w: &[f32], out: &mut [u16]) {
            for (src, dst) in w.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
                let h =
                    _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_loadu_ps(src.as_ptr()));
                _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, h);
            }
        }
        convert(w, &mut out);
    }
    out
}

/// Multi-head self-attention of each sequence over itself; `qkv` is (t × 3·HIDDEN), `ctx` (t × HIDDEN).
fn attention(qkv: &[f32], seqs: &[&[u32]], ctx: &mut [f32], scores: &mut [f32]) {
    let total: usize = seqs.iter().map(|s| s.len()).sum();
    let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    assert!(qkv.len() >= total * QKV && ctx.len() >= total * HIDDEN && scores.len() >= longest * longest);
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    let mut sums = vec![0f32; longest];
    let mut start = 0;
    for s in seqs {
        let len = s.len();
        let scores = &mut scores[..len * len];
        for head in 0..HEADS {
            let q = &qkv[start * QKV + head * HEAD_DIM..];
            let k = &qkv[start * QKV + HIDDEN + head * HEAD_DIM..];
            let v = &qkv[start * QKV + 2 * HIDDEN + head * HEAD_DIM..];
            let c = &mut ctx[start * HIDDEN + head * HEAD_DIM..];
            // SAFETY: q, k, v address rows start..start+len of qkv (row stride QKV, HEAD_DIM
            // columns each) and c the same rows of ctx (stride HIDDEN); the slices start at
            // those offsets and run to the ends of buffers holding all `total` rows (asserted
            // above). scores is len × len.
            unsafe {
                // scores = scale · Q Kᵀ   (len × HEAD_DIM) · (HEAD_DIM × len)
                gemm::gemm(
                    len,
                    len,
                    HEAD_DIM,
                    scores.as_mut_ptr(),
                    1,
                    len as isize,
                    false,
                    q.as_ptr(),
                    1,
                    QKV as isize,
                    k.as_ptr(),
                    QKV as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            softmax_numerators(scores, len, &mut sums[..len]);
            // SAFETY: as above.
            unsafe {
                // ctx = P V   (len × len) · (len × HEAD_DIM)
                gemm::gemm(
                    len,
                    HEAD_DIM,
                    len,
                    c.as_mut_ptr(),
                    1,
                    HIDDEN as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    len as isize,
                    v.as_ptr(),
                    1,
                    QKV as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            // The softmax division, on the context rows.
            for (r, sum) in sums[..len].iter().enumerate() {
                let inv = 1.0 / sum;
                c[r * HIDDEN..r * HIDDEN + HEAD_DIM].iter_mut().for_each(|v| *v *= inv);
            }
        }
        start += len;
    }
}

/// [`exp_rows`] of a square score matrix, in explicit AVX-512 where the CPU has it: the
/// portable loop (which does each row's last `len % 16` entries one at a time) took 37% of
/// attention's time, 17.6 of 48 µs per head of a 150-token text, where the two products are
/// already near the FMA peak; this takes ~9.6 µs (`cargo bench --bench embed`: attention 11.1
/// → 9.8 s of the GCP corpus's 88 s summed over workers).
fn softmax_numerators(scores: &mut [f32], len: usize, sums: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512f_available() {
        // SAFETY: AVX-512F was just detected; the sizes are asserted inside.
        unsafe { exp_rows_avx512(scores, len, sums) };
        return;
    }
    exp_rows(scores, len, sums);
}

/// [`exp_rows`] for a `len` × `len` matrix on 16 lanes, row tails masked.
///
/// # Safety
/// AVX-512F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_rows_avx512(scores: &mut [f32], len: usize, sums: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(scores.len() >= len * len && sums.len() >= len);
    let s = scores.as_mut_ptr();
    let tail = len % 16;
    let tail_mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
    for (i, sum) in sums[..len].iter_mut().enumerate() {
        let row = s.add(i * len);
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for b in 0..len / 16 {
            m = _mm512_max_ps(m, _mm512_loadu_ps(row.add(16 * b)));
        }
        if tail > 0 {
            m = _mm512_max_ps(m, _mm512_mask_loadu_ps(m, tail_mask, row.add(len - tail)));
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
        let mut acc = _mm512_setzero_ps();
        for b in 0..len / 16 {
            let e = exp_neg16(_mm512_sub_ps(_mm512_loadu_ps(row.add(16 * b)), max));
            _mm512_storeu_ps(row.add(16 * b), e);
            acc = _mm512_add_ps(acc, e);
        }
        if tail > 0 {
            let x = _mm512_maskz_loadu_ps(tail_mask, row.add(len - tail));
            let e = _mm512_maskz_mov_ps(tail_mask, exp_neg16(_mm512_sub_ps(x, max)));
            _mm512_mask_storeu_ps(row.add(len - tail), tail_mask, e);
            acc = _mm512_add_ps(acc, e);
        }
        *sum = _mm512_reduce_add_ps(acc);
    }
}

const LANES: usize = 16;

#[inline(always)]
fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    chunks.remainder().iter().sum::<f32>() + acc.iter().sum::<f32>()
}

#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    chunks.remainder().iter().chain(acc.iter()).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// [`exp_neg`]'s constants, shared with its 16-lane form: ln 2 in two parts, 1.5 · 2^23
/// (adding and subtracting it rounds to an integer), the input floor, and the polynomial
/// for e^r, highest degree first.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const ROUND: f32 = 12_582_912.0;
const EXP_MIN: f32 = -87.0;
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// e^x for x ≤ 0 within ~2 ulp (Cephes' expf: x = n·ln2 + r, a degree-6 polynomial for e^r).
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    let x = x.max(EXP_MIN);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    // The integer n is also in the low mantissa bits of `shifted`; reading it there keeps the
    // loop vectorised (a float-to-int cast saturates, which compiles to one lane at a time).
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = EXP_POLY[1..].iter().fold(EXP_POLY[0], |p, c| p * r + c);
    let er = p * r * r + r + 1.0;
    er * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// [`exp_neg`] on 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn exp_neg16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let x = _mm512_max_ps(x, _mm512_set1_ps(EXP_MIN));
    let shifted = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)), _mm512_set1_ps(ROUND));
    let n = _mm512_sub_ps(shifted, _mm512_set1_ps(ROUND));
    let n_int = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(ROUND.to_bits() as i32));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let er = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0));
    let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n_int, _mm512_set1_epi32(127))));
    _mm512_mul_ps(er, scale)
}

/// erf(x) within 1e-6 (Abramowitz & Stegun 7.1.26: 1.5e-7, plus f32 rounding near 0); in
/// GELU that error is scaled by x/2, far below what the reference test can see.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_neg(-a * a);
    y.copysign(x)
}

simd! {
    /// BERT's GELU, the exact (erf) form, in place.
    fn gelu(xs: &mut [f32]) {
        for v in xs.iter_mut() {
            let x = *v;
            *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

simd! {
    /// e^(x − row max) for each row of a (rows × cols) matrix, in place, and each row's sum:
    /// softmax without its division, which is applied to the 32-wide rows of P·V instead.
    fn exp_rows(m: &mut [f32], cols: usize, sums: &mut [f32]) {
        for (row, sum) in m.chunks_exact_mut(cols).zip(sums.iter_mut()) {
            let max = lane_max(row);
            let mut acc = [0f32; LANES];
            let mut lanes = row.chunks_exact_mut(LANES);
            for c in &mut lanes {
                for i in 0..LANES {
                    c[i] = exp_neg(c[i] - max);
                    acc[i] += c[i];
                }
            }
            let mut total = acc.iter().sum::<f32>();
            for v in lanes.into_remainder() {
                *v = exp_neg(*v - max);
                total += *v;
            }
            *sum = total;
        }
    }
}

simd! {
    /// LayerNorm of each HIDDEN-wide row, in place.
    fn layer_norm_rows(m: &mut [f32], g: &[f32], b: &[f32]) {
        let (g, b) = (&g[..HIDDEN], &b[..HIDDEN]);
        for row in m.chunks_exact_mut(HIDDEN) {
            let mean = lane_sum(row) / HIDDEN as f32;
            let mut sq = [0f32; LANES];
            for c in row.chunks_exact(LANES) {
                for i in 0..LANES {
                    let d = c[i] - mean;
                    sq[i] += d * d;
                }
            }
            let var = sq.iter().sum::<f32>() / HIDDEN as f32;
            let inv = 1.0 / (var + LN_EPS).sqrt();
            for i in 0..HIDDEN {
                row[i] = (row[i] - mean) * inv * g[i] + b[i];
            }
        }
    }
}

simd! {
    fn add2(out: &mut [f32], a: &[f32], b: &[f32]) {
        let n = out.len();
        let (a, b) = (&a[..n], &b[..n]);
        for i in 0..n {
            out[i] = a[i] + b[i];
        }
    }
}

simd! {
    fn add3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
        let n = out.len();
        let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
        for i in 0..n {
            out[i] = a[i] + b[i] + c[i];
        }
    }
}

/// Mean over a sequence's token rows (every one is a real token: batches are packed), then
/// L2-normalised — sentence-transformers' Pooling(mean) + Normalize.
fn mean_pool_normalised(rows: &[f32]) -> Vec<f32> {
    let n = rows.len() / HIDDEN;
    let mut v = vec![0f32; HIDDEN];
    for r in rows.chunks_exact(HIDDEN) {
        for (a, b) in v.iter_mut().zip(r) {
            *a += b;
        }
    }
    let inv_n = 1.0 / n.max(1) as f32;
    v.iter_mut().for_each(|a| *a *= inv_n);
    // sentence-transformers clamps the norm at 1e-12 before dividing.
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_the_standard_library() {
        for i in 0..20_000 {
            let x = -80.0 + i as f32 * 0.004;
            let (got, want) = (exp_neg(x), x.exp());
            assert!((got - want).abs() <= want * 3e-7, "exp({x}) = {got}, want {want}");
        }
        for i in 0..20_000 {
            let x = -6.0 + i as f32 * 0.0006;
            let want = libm_erf(x as f64);
            assert!((erf(x) as f64 - want).abs() < 1e-6, "erf({x}) = {}, want {want}", erf(x));
        }
    }

    /// erf in f64 by its Taylor series (|x| ≤ 3) or continued fraction, as an independent check.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        r.copysign(x)
    }

    #[test]
    fn softmax_numerators_agree_with_the_portable_loop() {
        for len in [1, 2, 15, 16, 17, 33, 64, 65, 150, 256] {
            let x: Vec<f32> = (0..len * len).map(|i| ((i * 7919 % 1000) as f32 / 100.0 - 5.0).sin() * 9.0).collect();
            let (mut want, mut got) = (x.clone(), x);
            let (mut want_sums, mut got_sums) = (vec![0f32; len], vec![0f32; len]);
            exp_rows(&mut want, len, &mut want_sums);
            softmax_numerators(&mut got, len, &mut got_sums);
            for (g, w) in got.iter().zip(&want).chain(got_sums.iter().zip(&want_sums)) {
                assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "len {len}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn softmax_exponentials_and_layer_norm() {
        let x: Vec<f32> = (0..3 * 37).map(|i| (i as f32 * 0.37).sin() * 9.0).collect();
        let mut m = x.clone();
        let mut sums = [0f32; 3];
        exp_rows(&mut m, 37, &mut sums);
        for ((row, orig), sum) in m.chunks(37).zip(x.chunks(37)).zip(sums) {
            let max = orig.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            for (e, o) in row.iter().zip(orig) {
                assert!((e - (o - max).exp()).abs() < 1e-6);
            }
            assert!((row.iter().sum::<f32>() - sum).abs() < 1e-5);
        }
        let mut x: Vec<f32> = (0..2 * HIDDEN).map(|i| (i as f32 * 0.11).cos() * 3.0 + 1.0).collect();
        layer_norm_rows(&mut x, &[1.0; HIDDEN], &[0.0; HIDDEN]);
        for row in x.chunks(HIDDEN) {
            let mean = row.iter().sum::<f32>() / HIDDEN as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / HIDDEN as f32;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "mean {mean} var {var}");
        }
    }
}
