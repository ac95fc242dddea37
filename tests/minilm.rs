//! The local all-MiniLM-L6-v2 embedder: its vectors against sentence-transformers' own
//! (tests/data/minilm_reference.jsonl, written by scripts/python-reference/make_reference.py),
//! and the model doing its job in the real binary.
//!
//! These tests need the model files: `askiam model fetch` (scripts/install-test-deps runs it).
//! Without them they fail, saying so, rather than skip.

mod support;

use std::sync::OnceLock;

use askiam::config::Config;
use askiam::embed::minilm::{MiniLm, DIMS, MAX_TOKENS, MODEL_ID};
use askiam::embed::{model, Embedder, InputKind};
use support::{fixtures, Askiam};

struct Reference {
    text: String,
    tokens: Vec<u32>,
    vector: Vec<f32>,
}

fn reference() -> Vec<Reference> {
    let path = support::repo().join("tests/data/minilm_reference.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("reference line is JSON");
            let floats = |key: &str| -> Vec<f32> {
                v[key].as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
            };
            Reference {
                text: v["text"].as_str().expect("text").to_string(),
                tokens: floats("tokens").into_iter().map(|t| t as u32).collect(),
                vector: floats("vector"),
            }
        })
        .collect()
}

/// The model, loaded once per test binary from where `askiam model fetch` puts it.
fn minilm() -> &'static MiniLm {
    static MODEL: OnceLock<MiniLm> = OnceLock::new();
    MODEL.get_or_init(|| {
        let config = Config::load(None, std::env::vars()).expect("configuration");
        let dir = model::files_dir(&model::model_dir(&config));
        MiniLm::load(&dir, 0).unwrap_or_else(|e| {
            panic!("{e}\n\nThe MiniLM tests need the model: run `askiam model fetch` (scripts/install-test-deps does).")
        })
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn vectors_match_sentence_transformers_one_at_a_time_and_batched() {
    let m = minilm();
    let refs = reference();
    assert!(refs.len() >= 20, "reference has {} pairs", refs.len());
    // Alone: short texts take the few-rows (half-precision weights) path, long ones gemm.
    for r in &refs {
        let got = &m.embed_blocking(&[r.text.as_str()]).expect("embed")[0];
        assert_eq!(got.len(), DIMS);
        let cos = cosine(got, &r.vector);
        assert!(cos >= 0.999, "cosine {cos} for {:?}", r.text);
    }
    // Together: packed chunks on the worker threads, in the caller's order.
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let got = m.embed_blocking(&texts).expect("embed");
    for (g, r) in got.iter().zip(&refs) {
        let cos = cosine(g, &r.vector);
        assert!(cos >= 0.999, "cosine {cos} for {:?} in a batch", r.text);
        let norm = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
}

#[test]
fn tokenizer_matches_and_truncates_at_the_window() {
    let m = minilm();
    let refs = reference();
    assert!(refs.iter().any(|r| r.tokens.len() == MAX_TOKENS), "the reference needs a text past the window");
    for r in &refs {
        assert_eq!(m.token_ids(&r.text).expect("tokenize"), r.tokens, "tokens of {:?}", r.text);
        if r.tokens.len() < MAX_TOKENS {
            // count_tokens leaves out [CLS] and [SEP], and does not truncate.
            assert_eq!(m.count_tokens(&r.text), r.tokens.len() - 2, "count of {:?}", r.text);
        } else {
            assert!(m.count_tokens(&r.text) > MAX_TOKENS - 2);
        }
    }
}

#[test]
fn trait_embeds_queries_and_documents_alike() {
    let m = minilm();
    assert_eq!((m.model_id(), m.dims(), m.max_tokens()), (MODEL_ID, 384, 256));
    let texts = vec!["who can approve payroll access".to_string(), "Payroll Administrator".to_string()];
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let q = rt.block_on(m.embed(&texts, InputKind::Query)).expect("query");
    let d = rt.block_on(m.embed(&texts, InputKind::Document)).expect("document");
    assert_eq!(q, d);
    assert!(rt.block_on(m.embed(&[], InputKind::Document)).expect("empty").is_empty());
}

#[test]
fn missing_model_names_the_fetch_command() {
    let empty = tempfile::tempdir().expect("tempdir");
    let err = MiniLm::load(empty.path(), 1).err().expect("no model there");
    assert!(err.to_string().contains("askiam model fetch"), "{err}");

    let a = Askiam::new();
    let out = a
        .cmd()
        .env("ASKIAM_EMBED_PROVIDER", "minilm")
        .env("ASKIAM_MODEL_DIR", empty.path())
        .env_remove("ASKIAM_EMBED_MODEL_DIR")
        .args(["embed", "hello"])
        .output()
        .expect("run askiam");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run \"askiam model fetch\""), "{stderr}");
}

#[test]
fn embed_command_prints_the_reference_vector() {
    minilm(); // fail with the fetch hint, not a CLI error, when the model is missing
    let refs = reference();
    let r = refs.iter().find(|r| r.text == "who can approve payroll access").expect("reference query");
    let a = Askiam::new();
    let out = a
        .cmd()
        .env("ASKIAM_EMBED_PROVIDER", "minilm")
        .args(["embed", "--query", "--json", &r.text])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(line["text"], r.text.as_str());
    assert_eq!(line["model"], MODEL_ID);
    assert_eq!(line["dims"], 384);
    let v: Vec<f32> =
        line["vector"].as_array().expect("vector").iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect();
    assert!(cosine(&v, &r.vector) >= 0.999);
}

#[test]
fn payroll_question_finds_payroll_approvers_by_meaning() {
    minilm();
    let a = Askiam::new();
    let minilm_cmd = || {
        let mut c = a.cmd();
        c.env("ASKIAM_EMBED_PROVIDER", "minilm");
        c
    };
    let out = minilm_cmd().args(["ingest", "--json"]).arg(fixtures()).output().expect("ingest");
    assert!(out.status.success(), "ingest failed: {}", String::from_utf8_lossy(&out.stderr));
    // Vector ranking alone (keyword weight 0), so the model, not BM25, has to find it.
    for bm25 in ["0", "1"] {
        let out = minilm_cmd()
            .env("ASKIAM_SEARCH_BM25_WEIGHT", bm25)
            .args(["search", "who can approve payroll access", "--k", "3", "--json"])
            .output()
            .expect("search");
        assert!(out.status.success(), "search failed: {}", String::from_utf8_lossy(&out.stderr));
        let hits: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("hit")).collect();
        let titles: Vec<&str> = hits.iter().filter_map(|h| h["title"].as_str()).collect();
        assert!(titles.iter().any(|t| t.contains("Payroll")), "bm25 weight {bm25}: top 3 {titles:?}");
    }
}

#[test]
fn the_product_glossary_knows_what_products_are_for() {
    let m = minilm();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Jobs described without the product's name; the glossary's cards say what each is for.
    // Both clouds' products are in it: a browser IDE is Cloud Workstations or AWS Cloud9, fault
    // injection AWS FIS or Google Cloud's Fault Testing.
    for (question, products) in [
        ("our VFX studio needs somewhere to run its nightly rendering jobs", &["deadline"][..]),
        ("rehearse an availability zone outage by injecting faults into our instances", &["fis", "faulttesting"]),
        ("give the developers cloud-hosted IDEs they open in a browser", &["workstations", "cloud9"]),
        ("object storage buckets that hand out presigned download links", &["s3", "storage"]),
    ] {
        let q = rt.block_on(m.embed(&[question.to_string()], InputKind::Query)).expect("embed").remove(0);
        let near = rt.block_on(askiam::query::products::likely(m, question, &q, 2));
        assert!(near.iter().any(|p| products.contains(&p.0)), "{question}: {near:?}");
    }
}

#[test]
fn role_notes_know_which_level_does_the_job() {
    let m = minilm();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Jobs in words no role title or description uses; each role's note says what it is for.
    for (question, role) in [
        (
            "our nightly backup job only drops files into a bucket and must never read them back",
            "roles/storage.objectCreator",
        ),
        ("SNS wants a role so it can log whether each text message was delivered", "AmazonSNSRole"),
    ] {
        let q = rt.block_on(m.embed(&[question.to_string()], InputKind::Query)).expect("embed").remove(0);
        let near = rt.block_on(askiam::query::notes::likely(m, question, &q, 3));
        assert!(near.iter().any(|n| n.0 == role), "{question}: {near:?}");
    }
}
