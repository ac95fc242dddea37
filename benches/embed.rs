//! MiniLM throughput and latency: `cargo bench --bench embed` (needs `askiam model fetch`).
//!
//! Texts: the fixtures' role documents (name, application and description from
//! fixtures/exports/full/*/roles.csv) and the GCP roles corpus (../shared/corpora/gcp_roles.jsonl:
//! title, description and permissions, cut at the model's 256-token window). Prints:
//!
//! - texts/s and tokens/s of the batched path (one `embed` call per corpus);
//! - the same for a naive loop, one text per call, over the first GCP texts, and the batched
//!   path over those same texts, measured in the same run, with the ratio;
//! - the p50/p90 latency of embedding one short question (50 runs);
//! - the FLOPs done and this machine's fp32 FMA peak (measured here, 1 and 2 threads), and the
//!   fraction of it achieved; where the time went per stage;
//! - with `ASKIAM_BENCH_PYTHON=/path/to/venv/bin/python` (sentence-transformers installed, see
//!   scripts/python-reference/), the Python stack on the same GCP texts, and the ratio.
//!
//! `ASKIAM_BENCH_NAIVE=N` sets the naive subset (default 256 texts). Nothing is asserted: these
//! are figures with their baselines.

use std::path::PathBuf;
use std::time::Instant;

use askiam::config::Config;
use askiam::embed::minilm::{MiniLm, Profile};
use askiam::embed::model;

const MATMUL_PARAMS_PER_LAYER: f64 = (3 * 384 * 384 + 384 * 384 + 2 * 384 * 1536) as f64;
const LAYERS: f64 = 6.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn role_texts() -> Vec<String> {
    let full = repo().join("fixtures/exports/full");
    let run = std::fs::read_dir(&full)
        .unwrap_or_else(|e| panic!("{}: {e}", full.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("roles.csv").is_file())
        .unwrap_or_else(|| panic!("no roles.csv under {}", full.display()));
    let mut apps = std::collections::HashMap::new();
    let mut reader = csv::Reader::from_path(run.join("applications.csv")).expect("applications.csv");
    for r in reader.deserialize::<std::collections::HashMap<String, String>>() {
        let r = r.expect("application row");
        apps.insert(r["id"].clone(), r["name"].clone());
    }
    let mut reader = csv::Reader::from_path(run.join("roles.csv")).expect("roles.csv");
    reader
        .deserialize::<std::collections::HashMap<String, String>>()
        .map(|r| {
            let r = r.expect("role row");
            let app = apps.get(&r["application_id"]).map(String::as_str).unwrap_or("no application");
            format!("{} is a role in {app}. {}", r["name"], r["description"])
        })
        .collect()
}

fn gcp_path() -> PathBuf {
    repo().join("../shared/corpora/gcp_roles.jsonl")
}

/// The same texts scripts/python-reference/bench_st.py builds.
fn gcp_texts() -> Vec<String> {
    let path = gcp_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the corpora sit beside the clone)", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).expect("corpus line");
            let perms: Vec<&str> =
                r["permissions"].as_array().map(|a| a.iter().filter_map(|p| p.as_str()).collect()).unwrap_or_default();
            format!(
                "{}\n{}\n{}",
                r["title"].as_str().unwrap_or(""),
                r["description"].as_str().unwrap_or(""),
                perms.join(" ")
            )
        })
        .collect()
}

struct Corpus {
    texts: Vec<String>,
    lens: Vec<usize>,
}

impl Corpus {
    fn new(m: &MiniLm, texts: Vec<String>) -> Corpus {
        let lens = texts.iter().map(|t| m.token_ids(t).expect("tokenize").len()).collect();
        Corpus { texts, lens }
    }
    fn tokens(&self) -> usize {
        self.lens.iter().sum()
    }
    /// FLOPs of the encoder: 2 per weight per token in the matmuls, plus attention's
    /// Q·Kᵀ and P·V (2·L²·32 each, per head and layer).
    fn flops(&self) -> f64 {
        self.lens
            .iter()
            .map(|&l| l as f64 * 2.0 * MATMUL_PARAMS_PER_LAYER * LAYERS + LAYERS * 12.0 * 4.0 * 32.0 * (l * l) as f64)
            .sum()
    }
    fn prefix(&self, n: usize) -> Corpus {
        let n = n.min(self.texts.len());
        Corpus { texts: self.texts[..n].to_vec(), lens: self.lens[..n].to_vec() }
    }
}

struct Run {
    secs: f64,
    profile: Profile,
}

fn batched(m: &MiniLm, c: &Corpus) -> Run {
    m.take_profile();
    let start = Instant::now();
    let v = m.embed_blocking(&c.texts).expect("embed");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(v.len(), c.texts.len());
    Run { secs, profile: m.take_profile() }
}

fn naive(m: &MiniLm, c: &Corpus) -> Run {
    m.take_profile();
    let start = Instant::now();
    for t in &c.texts {
        m.embed_blocking(&[t.as_str()]).expect("embed");
    }
    Run { secs: start.elapsed().as_secs_f64(), profile: m.take_profile() }
}

fn line(name: &str, c: &Corpus, r: &Run) {
    println!(
        "  {name:<34} {:>5} texts {:>7} tokens {:>7.2} s {:>8.1} texts/s {:>8.0} tokens/s {:>6.1} GFLOP/s",
        c.texts.len(),
        c.tokens(),
        r.secs,
        c.texts.len() as f64 / r.secs,
        c.tokens() as f64 / r.secs,
        c.flops() / r.secs / 1e9
    );
}

/// fp32 FLOP/s of fused multiply-adds on `threads` threads: 12 independent accumulator chains
/// per thread, in the widest vectors the CPU has. Returns (GFLOP/s, what was measured).
fn fma_peak(threads: usize) -> (f64, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        const ITERS: usize = 20_000_000;
        #[target_feature(enable = "avx512f")]
        unsafe fn zmm() -> f32 {
            let b = _mm512_set1_ps(0.999_999);
            let c = _mm512_set1_ps(1e-7);
            let mut a = [_mm512_setzero_ps(); 12];
            for (i, v) in a.iter_mut().enumerate() {
                *v = _mm512_set1_ps(1.0 + i as f32 * 0.01);
            }
            for _ in 0..ITERS {
                for v in a.iter_mut() {
                    *v = _mm512_fmadd_ps(*v, b, c);
                }
            }
            a.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn ymm() -> f32 {
            let b = _mm256_set1_ps(0.999_999);
            let c = _mm256_set1_ps(1e-7);
            let mut a = [_mm256_setzero_ps(); 12];
            for (i, v) in a.iter_mut().enumerate() {
                *v = _mm256_set1_ps(1.0 + i as f32 * 0.01);
            }
            for _ in 0..ITERS {
                for v in a.iter_mut() {
                    *v = _mm256_fmadd_ps(*v, b, c);
                }
            }
            let mut out = [0f32; 8];
            for v in a {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                for (o, l) in out.iter_mut().zip(lanes) {
                    *o += l;
                }
            }
            out.iter().sum()
        }
        let (lanes, kind, f): (usize, &str, unsafe fn() -> f32) = if is_x86_feature_detected!("avx512f") {
            (16, "AVX-512 FMA", zmm)
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            (8, "AVX2 FMA", ymm)
        } else {
            return (0.0, "no FMA");
        };
        let start = Instant::now();
        let sink: f32 = std::thread::scope(|s| {
            // SAFETY: the feature f was compiled for was detected above.
            let hs: Vec<_> = (0..threads).map(|_| s.spawn(move || unsafe { f() })).collect();
            hs.into_iter().map(|h| h.join().expect("fma thread")).sum()
        });
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        ((threads * ITERS * 12 * lanes * 2) as f64 / secs / 1e9, kind)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        (0.0, "not measured on this architecture")
    }
}

fn cpu_summary() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines().find(|l| l.starts_with(name)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let has: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"]
        .into_iter()
        .filter(|f| flags.split(' ').any(|x| x == *f))
        .collect();
    format!(
        "{} ({} MHz reported), flags: {}",
        field("model name").unwrap_or_else(|| "unknown CPU".into()),
        field("cpu MHz").unwrap_or_else(|| "?".into()),
        has.join(" ")
    )
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn python_baseline(texts: usize) -> Option<serde_json::Value> {
    let python = std::env::var("ASKIAM_BENCH_PYTHON").ok().filter(|p| !p.is_empty())?;
    let script = repo().join("scripts/python-reference/bench_st.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(["--corpus", &gcp_path().display().to_string(), "--limit", &texts.to_string(), "--threads", "2"])
        .output()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    if !out.status.success() {
        panic!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| l.trim_start().starts_with('{'))?;
    serde_json::from_str(last).ok()
}

fn main() {
    let config = Config::load(None, std::env::vars()).expect("configuration");
    let dir = model::files_dir(&model::model_dir(&config));
    let m = MiniLm::load(&dir, config.embed.threads)
        .unwrap_or_else(|e| panic!("{e}\nThe bench needs the model: run `askiam model fetch`."));
    let naive_n: usize = std::env::var("ASKIAM_BENCH_NAIVE").ok().and_then(|v| v.parse().ok()).unwrap_or(256);

    println!("askiam MiniLM bench: {} worker threads; {}", m.threads(), cpu_summary());
    println!("load average at start: {}", load_avg());
    let roles = Corpus::new(&m, role_texts());
    let gcp = Corpus::new(&m, gcp_texts());
    let subset = gcp.prefix(naive_n);
    m.embed_blocking(&roles.texts[..roles.texts.len().min(64)]).expect("warm-up");

    println!("\nbatched (one embed call per corpus):");
    let r_roles = batched(&m, &roles);
    line("fixtures role documents", &roles, &r_roles);
    let r_gcp = batched(&m, &gcp);
    line("GCP roles (≤256 tokens)", &gcp, &r_gcp);

    println!("\nnaive loop vs batched, first {} GCP texts, same run:", subset.texts.len());
    let r_naive = naive(&m, &subset);
    line("naive: one text per call", &subset, &r_naive);
    let r_sub = batched(&m, &subset);
    line("batched", &subset, &r_sub);
    println!("  batched / naive: {:.2}×", r_naive.secs / r_sub.secs);

    let question = "who can approve payroll access";
    for _ in 0..5 {
        m.embed_blocking(&[question]).expect("warm-up");
    }
    m.take_profile();
    let mut lat: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            m.embed_blocking(&[question]).expect("embed");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let q_profile = m.take_profile();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "\nshort question {question:?} ({} tokens): p50 {:.2} ms, p90 {:.2} ms, min {:.2} ms (target ≤ 3 ms)",
        m.token_ids(question).expect("tokenize").len(),
        lat[25],
        lat[45],
        lat[0]
    );

    let python = python_baseline(gcp.texts.len());

    let (peak1, kind) = fma_peak(1);
    let (peak2, _) = fma_peak(2);
    let flops_per_token = 2.0 * MATMUL_PARAMS_PER_LAYER * LAYERS;
    let achieved = gcp.flops() / r_gcp.secs / 1e9;
    println!("\nFLOP bound (fp32):");
    println!(
        "  per token: 2 × {:.2}M matmul weights = {:.1} MFLOP, plus attention 6 layers × 4·L·384 = {:.2} MFLOP at L = 256",
        MATMUL_PARAMS_PER_LAYER * LAYERS / 1e6,
        flops_per_token / 1e6,
        6.0 * 4.0 * 256.0 * 384.0 / 1e6
    );
    println!(
        "  GCP corpus: {:.1} GFLOP for {} tokens ({:.2} MFLOP/token on average)",
        gcp.flops() / 1e9,
        gcp.tokens(),
        gcp.flops() / gcp.tokens() as f64 / 1e6
    );
    // The other core may be busy with something else while this runs; the bound is what two
    // idle cores would do: twice one core's measured peak.
    let bound = 2.0 * peak1;
    println!(
        "  measured {kind} peak: {peak1:.1} GFLOP/s on 1 thread, {peak2:.1} GFLOP/s on 2 threads now; \
         bound for 2 idle cores: {bound:.1} GFLOP/s"
    );
    println!(
        "  batched GCP: {achieved:.1} GFLOP/s = {:.0}% of that bound ({:.0} tokens/s at 100%)",
        100.0 * achieved / bound,
        bound * 1e9 / (gcp.flops() / gcp.tokens() as f64)
    );

    println!("\nwhere the time went (GCP batched; seconds summed over worker threads):");
    let total: f64 = r_gcp.profile.stages().iter().map(|(_, s)| s).sum();
    for (stage, secs) in r_gcp.profile.stages() {
        println!("  {stage:<16} {secs:>7.3} s {:>5.1}%", 100.0 * secs / total);
    }
    println!("  (wall {:.2} s on {} threads)", r_gcp.profile.wall_secs, m.threads());
    println!("short question, per run (ms):");
    for (stage, secs) in q_profile.stages() {
        println!("  {stage:<16} {:>7.3}", secs * 1e3 / 50.0);
    }

    println!("\nPython stack (sentence-transformers + torch, 2 threads) on the same GCP texts:");
    match python {
        Some(p) => {
            let py = p["tokens_per_sec"].as_f64().unwrap_or(f64::NAN);
            println!("  {p}");
            println!(
                "  askiam batched {:.0} tokens/s vs Python {py:.0} tokens/s: {:.2}× (target ≥ 1.5×)",
                gcp.tokens() as f64 / r_gcp.secs,
                gcp.tokens() as f64 / r_gcp.secs / py
            );
        }
        None => println!(
            "  not run: set ASKIAM_BENCH_PYTHON to a python with sentence-transformers (scripts/python-reference/)"
        ),
    }
    println!("\nload average at end: {}", load_avg());
}
