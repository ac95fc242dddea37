//! How much of a Bedrock quota the limiter uses, and how often it is throttled doing so.
//!
//! `cargo bench --bench quota [-- --secs 30] [--scenario titan|cohere]`
//!
//! Each scenario runs the Bedrock embedder against the local stand-in enforcing a quota, twice:
//! once configured with the quota's own limits (`requests_per_sec`, `tokens_per_min`), once
//! with the limits off (the baseline: the same concurrency and retries, leaning on 429s). The
//! work is sized to take `--secs` at the quota. The figure is the share of the quota used over
//! the run — accepted requests (or tokens) over what the stand-in's buckets allowed in that time
//! (their burst plus rate × elapsed) — with the throttled responses it took to get there.
//! A batch whose retries ran out is sent again, as a redelivered queue message would be.
//! `QUOTA_TRACE=1` prints every request the stand-in saw (seconds, status, tokens).

#[path = "../tests/standin/mod.rs"]
mod standin;

use std::time::{Duration, Instant};

use askiam::config::EmbedConfig;
use askiam::embed::bedrock::BedrockEmbedder;
use askiam::embed::hash::estimate_tokens;
use askiam::embed::{EmbedError, Embedder, InputKind};
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use standin::{vector_for, Quota, StandIn};

struct Scenario {
    name: &'static str,
    model: &'static str,
    dims: usize,
    /// Which budget binds: requests (Titan, one text a call) or tokens (Cohere, 96 a call).
    token_bound: bool,
    requests_per_sec: u32,
    tokens_per_min: u32,
    /// Texts per `embed` call the driver makes (one queue message's worth).
    chunk: usize,
}

const SCENARIOS: [Scenario; 2] = [
    Scenario {
        name: "titan",
        model: "amazon.titan-embed-text-v2:0",
        dims: 256,
        token_bound: false,
        requests_per_sec: 20,
        tokens_per_min: 60_000,
        chunk: 96,
    },
    Scenario {
        name: "cohere",
        model: "cohere.embed-english-v3",
        dims: 1024,
        token_bound: true,
        requests_per_sec: 20,
        tokens_per_min: 120_000,
        chunk: 384,
    },
];

struct Run {
    elapsed: Duration,
    accepted_requests: usize,
    accepted_tokens: usize,
    throttled: usize,
    redelivered: usize,
    lost: usize,
}

fn texts(n: usize, run: &str) -> Vec<String> {
    const WORDS: [&str; 12] = [
        "payroll",
        "approver",
        "entitlement",
        "Workday",
        "segregation",
        "duties",
        "administrator",
        "finance",
        "read-only",
        "group",
        "certify",
        "revoke",
    ];
    (0..n)
        .map(|i| {
            let len = 8 + (i * 7) % 14;
            let words: Vec<&str> = (0..len).map(|w| WORDS[(i * 31 + w * 17) % WORDS.len()]).collect();
            format!("{run} #{i}: {}", words.join(" "))
        })
        .collect()
}

fn config(s: &Scenario, url: &str, limited: bool) -> EmbedConfig {
    EmbedConfig {
        provider: "bedrock".into(),
        bedrock_model: s.model.into(),
        bedrock_endpoint: url.into(),
        region: "us-east-1".into(),
        dims: s.dims,
        requests_per_sec: if limited { s.requests_per_sec } else { 0 },
        tokens_per_min: if limited { s.tokens_per_min } else { 0 },
        max_concurrency: 4,
        max_retries: 8,
        ..EmbedConfig::default()
    }
}

/// The stand-in's quota: the same buckets the limiter keeps (see `Limits::from_config`).
fn quota(s: &Scenario) -> Quota {
    Quota {
        requests_per_sec: s.requests_per_sec as f64,
        request_burst: s.requests_per_sec as f64,
        tokens_per_min: s.tokens_per_min as f64,
        token_burst: s.tokens_per_min.div_ceil(6) as f64,
    }
}

async fn run(s: &Scenario, secs: f64, limited: bool) -> Run {
    let q = quota(s);
    let server = StandIn::start(Some(q)).await;
    let sdk = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .region(Region::new("us-east-1"))
        .build();
    let embedder = BedrockEmbedder::with_sdk_config(&config(s, &server.url, limited), sdk).expect("a Bedrock embedder");

    // Enough work to keep the binding budget busy for `secs`.
    let sample = texts(1000, "sample");
    let tokens_per_text = sample.iter().map(|t| estimate_tokens(t)).sum::<usize>() as f64 / sample.len() as f64;
    let n = if s.token_bound {
        ((q.token_burst + q.tokens_per_min / 60.0 * secs) / tokens_per_text) as usize
    } else {
        (q.request_burst + q.requests_per_sec * secs) as usize
    };
    let input = texts(n, if limited { "limited" } else { "baseline" });

    let start = Instant::now();
    let mut redelivered = 0;
    let mut lost = 0;
    for chunk in input.chunks(s.chunk) {
        let vectors = loop {
            match embedder.embed(chunk, InputKind::Document).await {
                Ok(v) => break v,
                Err(EmbedError::Throttled { .. }) => redelivered += 1,
                Err(e) => panic!("{}: {e}", s.name),
            }
        };
        lost += chunk.iter().zip(&vectors).filter(|(t, v)| **v != vector_for(t, s.dims)).count();
        lost += chunk.len().saturating_sub(vectors.len());
    }
    let elapsed = start.elapsed();
    if std::env::var("QUOTA_TRACE").is_ok() {
        for c in server.calls() {
            eprintln!("{:>8.3} {} {}", c.at.duration_since(start).as_secs_f64(), c.status, c.tokens);
        }
    }
    let accepted = server.accepted();
    Run {
        elapsed,
        accepted_requests: accepted.len(),
        accepted_tokens: accepted.iter().map(|c| c.tokens).sum(),
        throttled: server.throttled(),
        redelivered,
        lost,
    }
}

/// Accepted work over what the binding bucket allowed during the run.
fn share(s: &Scenario, r: &Run) -> f64 {
    let q = quota(s);
    let t = r.elapsed.as_secs_f64();
    if s.token_bound {
        r.accepted_tokens as f64 / (q.token_burst + q.tokens_per_min / 60.0 * t)
    } else {
        r.accepted_requests as f64 / (q.request_burst + q.requests_per_sec * t)
    }
}

fn print(s: &Scenario, client: &str, r: &Run) {
    let t = r.elapsed.as_secs_f64();
    println!(
        "{:<7} {:<9} {:>8.1} {:>9} {:>7.1} {:>9.0} {:>6.1}% {:>9} {:>11} {:>5}",
        s.name,
        client,
        t,
        r.accepted_requests,
        r.accepted_requests as f64 / t,
        r.accepted_tokens as f64 / t * 60.0,
        share(s, r) * 100.0,
        r.throttled,
        r.redelivered,
        r.lost,
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let secs: f64 = value("--secs").and_then(|v| v.parse().ok()).unwrap_or(30.0);
    let only = value("--scenario");

    println!("quota bench: each run sized to take {secs} s at the quota; stand-in on 127.0.0.1");
    for s in &SCENARIOS {
        let q = quota(s);
        println!(
            "  {:<7} {} dims {}: quota {} req/s (burst {}), {} tokens/min (burst {}); {}-bound",
            s.name,
            s.model,
            s.dims,
            q.requests_per_sec,
            q.request_burst,
            q.tokens_per_min,
            q.token_burst,
            if s.token_bound { "token" } else { "request" }
        );
    }
    println!();
    println!(
        "{:<7} {:<9} {:>8} {:>9} {:>7} {:>9} {:>7} {:>9} {:>11} {:>5}",
        "model", "client", "secs", "requests", "req/s", "tok/min", "share", "throttled", "redelivered", "lost"
    );
    let mut summary = Vec::new();
    for s in SCENARIOS.iter().filter(|s| only.as_deref().is_none_or(|o| o == s.name)) {
        let limited = run(s, secs, true).await;
        print(s, "limited", &limited);
        let baseline = run(s, secs, false).await;
        print(s, "no limits", &baseline);
        summary.push((s.name, limited, baseline));
    }
    println!();
    for (name, limited, baseline) in &summary {
        let s = SCENARIOS.iter().find(|s| s.name == *name).expect("a scenario");
        println!(
            "{name}: limiter used {:.1}% of the quota with {} throttled responses; without limits {:.1}% with {} \
             ({:.1} throttled per accepted request){}",
            share(s, limited) * 100.0,
            limited.throttled,
            share(s, baseline) * 100.0,
            baseline.throttled,
            baseline.throttled as f64 / baseline.accepted_requests.max(1) as f64,
            if limited.lost + baseline.lost > 0 { "; TEXTS LOST" } else { "; no text lost" },
        );
    }
}
