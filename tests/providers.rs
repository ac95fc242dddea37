//! The remote embedding providers against local stand-ins that speak the real wire formats:
//! round trips, batching and order, quota limits, throttling and validation failures.

mod standin;

use std::time::{Duration, Instant};

use askiam::config::EmbedConfig;
use askiam::embed::bedrock::BedrockEmbedder;
use askiam::embed::limit::Limits;
use askiam::embed::ollama::OllamaEmbedder;
use askiam::embed::{EmbedError, Embedder, InputKind};
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use standin::{vector_for, Behaviour, Quota, StandIn};

const TITAN: &str = "amazon.titan-embed-text-v2:0";
const COHERE: &str = "cohere.embed-english-v3";

fn embed_config(provider: &str, model: &str, dims: usize, url: &str) -> EmbedConfig {
    EmbedConfig {
        provider: provider.into(),
        bedrock_model: model.into(),
        bedrock_endpoint: url.into(),
        region: "us-east-1".into(),
        ollama_url: url.into(),
        dims,
        requests_per_sec: 0,
        tokens_per_min: 0,
        max_concurrency: 4,
        max_retries: 4,
        ..EmbedConfig::default()
    }
}

/// Static test credentials and a region, as the brief for tests asks: no environment involved.
fn sdk_config() -> aws_sdk_bedrockruntime::Config {
    aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .region(Region::new("us-east-1"))
        .build()
}

/// Millisecond backoff so retry tests take no time.
fn quick_limits(max_concurrency: usize, max_retries: u32) -> Limits {
    Limits {
        backoff_base: Duration::from_millis(2),
        backoff_cap: Duration::from_millis(20),
        ..Limits::unlimited(max_concurrency, max_retries)
    }
}

fn bedrock(config: &EmbedConfig) -> BedrockEmbedder {
    BedrockEmbedder::with_sdk_config(config, sdk_config()).expect("a Bedrock embedder")
}

fn texts(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag} role {i}: approves payroll changes for region {}", i % 7)).collect()
}

#[tokio::test]
async fn titan_embeds_each_text_in_its_own_signed_call_with_the_configured_dims() {
    let server = StandIn::start(None).await;
    let embedder = bedrock(&embed_config("bedrock-titan", TITAN, 256, &server.url));
    assert_eq!(embedder.model_id(), "bedrock:amazon.titan-embed-text-v2:0/256");
    assert_eq!(embedder.dims(), 256);
    assert_eq!(embedder.max_tokens(), 8192);

    let input = texts(20, "titan");
    let vectors = embedder.embed(&input, InputKind::Document).await.unwrap();

    assert_eq!(vectors.len(), 20);
    for (text, vector) in input.iter().zip(&vectors) {
        assert_eq!(vector, &vector_for(text, 256), "wrong vector for {text:?}");
    }
    let calls = server.calls();
    assert_eq!(calls.len(), 20, "Titan takes one text per call");
    for call in &calls {
        assert!(call.signed, "request was not SigV4-signed");
        assert_eq!(call.raw_path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert_eq!(call.dimensions, Some(256));
        assert_eq!(call.texts.len(), 1);
    }
}

#[tokio::test]
async fn cohere_splits_200_texts_into_batches_of_96_and_keeps_their_order() {
    let server = StandIn::start(None).await;
    let embedder = bedrock(&embed_config("bedrock-cohere", COHERE, 384, &server.url));
    assert_eq!(embedder.model_id(), "bedrock:cohere.embed-english-v3/1024");
    assert_eq!(embedder.dims(), 1024, "Cohere v3 is 1024 whatever embed.dims says");
    assert_eq!(embedder.max_tokens(), 512);

    let input = texts(200, "cohere");
    let vectors = embedder.embed(&input, InputKind::Document).await.unwrap();
    assert_eq!(vectors.len(), 200);
    for (text, vector) in input.iter().zip(&vectors) {
        assert_eq!(vector, &vector_for(text, 1024), "wrong vector for {text:?}");
    }
    let calls = server.calls();
    let mut sizes: Vec<usize> = calls.iter().map(|c| c.texts.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![8, 96, 96]);
    assert!(calls.iter().all(|c| c.input_type.as_deref() == Some("search_document") && c.signed));
    assert!(calls.iter().all(|c| c.raw_path == "/model/cohere.embed-english-v3/invoke"));

    let query = embedder.embed(&["who approves payroll?".to_string()], InputKind::Query).await.unwrap();
    assert_eq!(query, vec![vector_for("who approves payroll?", 1024)]);
    assert_eq!(server.calls().last().unwrap().input_type.as_deref(), Some("search_query"));
}

#[tokio::test]
async fn ollama_learns_its_dims_and_prefixes_nomic_texts() {
    let server = StandIn::start(None).await;
    let config = EmbedConfig { batch_size: 16, ..embed_config("ollama", "", 384, &server.url) };
    let embedder = OllamaEmbedder::connect(&config).await.unwrap();
    assert_eq!(embedder.dims(), 768, "learnt from the probe, not embed.dims");
    assert_eq!(embedder.model_id(), "ollama:nomic-embed-text/768");
    let probes = server.calls().len();

    let input = texts(40, "ollama");
    let vectors = embedder.embed(&input, InputKind::Document).await.unwrap();
    assert_eq!(vectors.len(), 40);
    for (text, vector) in input.iter().zip(&vectors) {
        assert_eq!(vector, &vector_for(&format!("search_document: {text}"), 768));
    }
    let calls = &server.calls()[probes..];
    let mut sizes: Vec<usize> = calls.iter().map(|c| c.texts.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![8, 16, 16]);
    assert!(calls.iter().all(|c| c.raw_path == "/api/embed" && c.model == "nomic-embed-text"));

    let query = embedder.embed(&["payroll".to_string()], InputKind::Query).await.unwrap();
    assert_eq!(query, vec![vector_for("search_query: payroll", 768)]);
}

#[tokio::test]
async fn ollama_without_the_model_fails_at_start_up_and_says_to_pull_it() {
    let server = StandIn::start(None).await;
    let config =
        EmbedConfig { ollama_model: "mxbai-embed-large".into(), ..embed_config("ollama", "", 384, &server.url) };
    match OllamaEmbedder::connect(&config).await {
        Err(EmbedError::ModelMissing(msg)) => assert!(msg.contains("ollama pull mxbai-embed-large"), "{msg}"),
        Err(other) => panic!("expected ModelMissing, got {other}"),
        Ok(_) => panic!("expected ModelMissing, got an embedder"),
    }
}

/// 60 texts of about 12 tokens against 30 requests/s (burst 5) and 12 000 tokens/min (burst
/// 200): the quota allows the work in about 2.6 s.
const QUOTA: Quota = Quota { requests_per_sec: 30.0, request_burst: 5.0, tokens_per_min: 12_000.0, token_burst: 200.0 };

fn limits_for(quota: Quota, max_retries: u32) -> Limits {
    Limits {
        requests_per_sec: quota.requests_per_sec as u32,
        request_burst: quota.request_burst as u32,
        tokens_per_min: quota.tokens_per_min as u32,
        token_burst: quota.token_burst as u32,
        headroom: 0.98,
        ..quick_limits(4, max_retries)
    }
}

#[tokio::test]
async fn a_client_within_the_quota_finishes_all_work_with_few_throttles() {
    let server = StandIn::start(Some(QUOTA)).await;
    let embedder = bedrock(&embed_config("bedrock-titan", TITAN, 256, &server.url)).with_limits(limits_for(QUOTA, 10));
    let input = texts(60, "quota");
    let tokens: usize = input.iter().map(|t| embedder.count_tokens(t)).sum();

    let start = Instant::now();
    let vectors = embedder.embed(&input, InputKind::Document).await.unwrap();
    let took = start.elapsed();

    for (text, vector) in input.iter().zip(&vectors) {
        assert_eq!(vector, &vector_for(text, 256), "wrong vector for {text:?}");
    }
    let accepted = server.accepted();
    assert_eq!(accepted.len(), 60, "each text accepted exactly once");
    // The limiter waited for the budget rather than leaning on 429s.
    let floor = (tokens as f64 - QUOTA.token_burst) / (QUOTA.tokens_per_min / 60.0);
    assert!(took.as_secs_f64() >= floor * 0.9, "took {took:?}, the quota needs {floor:.2} s");
    assert!(server.throttled() <= 3, "{} throttled responses", server.throttled());
}

#[tokio::test]
async fn a_client_without_limits_is_throttled_but_loses_nothing() {
    let server = StandIn::start(Some(QUOTA)).await;
    let embedder = bedrock(&embed_config("bedrock-titan", TITAN, 256, &server.url)).with_limits(quick_limits(4, 1000));
    let input = texts(60, "greedy");

    let vectors = embedder.embed(&input, InputKind::Document).await.unwrap();

    for (text, vector) in input.iter().zip(&vectors) {
        assert_eq!(vector, &vector_for(text, 256), "wrong vector for {text:?}");
    }
    assert_eq!(server.accepted().len(), 60, "each text accepted exactly once");
    assert!(server.throttled() > 0, "the stand-in never throttled: the test proves nothing");
    assert_eq!(embedder.limiter().stats().throttled() as usize, server.throttled());
    assert_eq!(
        embedder.retries() as usize,
        server.throttled(),
        "every throttled call was retried (the worker's metric)"
    );
}

#[tokio::test]
async fn always_throttled_calls_fail_with_throttled_after_max_retries() {
    let server = StandIn::start(None).await;
    server.set(Behaviour::Throttle);
    let embedder = bedrock(&embed_config("bedrock-titan", TITAN, 1024, &server.url)).with_limits(quick_limits(4, 3));

    let result = embedder.embed(&["anything".to_string()], InputKind::Document).await;

    assert!(matches!(result, Err(EmbedError::Throttled { attempts: 4 })), "{result:?}");
    assert_eq!(server.calls().len(), 4, "one attempt and max_retries = 3 retries");
    assert_eq!(embedder.limiter().stats().exhausted(), 1);
}

#[tokio::test]
async fn a_model_not_ready_is_retried_until_it_answers() {
    let server = StandIn::start(None).await;
    server.set(Behaviour::FailNext { n: 2, status: 429, code: "ModelNotReadyException" });
    let embedder = bedrock(&embed_config("bedrock-cohere", COHERE, 1024, &server.url)).with_limits(quick_limits(1, 3));

    let vectors = embedder.embed(&texts(3, "ready"), InputKind::Query).await.unwrap();

    assert_eq!(vectors.len(), 3);
    assert_eq!(server.calls().len(), 3);
    server.set(Behaviour::FailNext { n: 1, status: 503, code: "ServiceUnavailableException" });
    embedder.embed(&texts(1, "again"), InputKind::Query).await.unwrap();
}

#[tokio::test]
async fn a_validation_exception_fails_at_once_without_retries() {
    let server = StandIn::start(None).await;
    server.set(Behaviour::Reject);
    let embedder = bedrock(&embed_config("bedrock-titan", TITAN, 512, &server.url)).with_limits(quick_limits(4, 5));

    let result = embedder.embed(&["x".to_string()], InputKind::Document).await;

    match result {
        Err(EmbedError::Provider(msg)) => {
            assert!(msg.contains("ValidationException") && msg.contains("Malformed input request"), "{msg}");
            assert!(msg.contains("400"), "{msg}");
        }
        other => panic!("expected a Provider error, got {other:?}"),
    }
    assert_eq!(server.calls().len(), 1, "a rejected request is not retried");
}

#[tokio::test]
async fn titan_refuses_dims_it_cannot_make() {
    let config = embed_config("bedrock-titan", TITAN, 384, "http://127.0.0.1:9");
    match BedrockEmbedder::with_sdk_config(&config, sdk_config()) {
        Err(EmbedError::ModelMissing(msg)) => assert!(msg.contains("256, 512 or 1024"), "{msg}"),
        Err(other) => panic!("expected ModelMissing, got {other}"),
        Ok(_) => panic!("384 dims accepted for Titan V2"),
    }
}

/// Runs this test binary again with only `env` (plus `PATH`) as its environment, executing the
/// ignored child test that builds the embedder the way the CLI does.
async fn run_child(server: &StandIn, env: &[(&str, String)]) -> std::process::Output {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["--ignored", "--exact", "child_builds_bedrock_from_the_environment", "--nocapture"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ASKIAM_CHILD_STANDIN", &server.url)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/askiam-test-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/askiam-test-credentials");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run the child test")
}

#[tokio::test]
async fn the_sdk_endpoint_env_conventions_keep_working() {
    for var in ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"] {
        let server = StandIn::start(None).await;
        let out = run_child(&server, &[(var, server.url.clone())]).await;
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "child failed with {var}:\n{log}");
        assert!(log.contains("1 passed"), "child test did not run:\n{log}");
        assert_eq!(server.accepted().len(), 2, "{var} was not followed:\n{log}");
    }
}

/// Not a test on its own: `the_sdk_endpoint_env_conventions_keep_working` runs it in a child
/// process whose environment points the AWS SDK at a stand-in.
#[tokio::test]
#[ignore = "run in a child process by the_sdk_endpoint_env_conventions_keep_working"]
async fn child_builds_bedrock_from_the_environment() {
    if std::env::var("ASKIAM_CHILD_STANDIN").is_err() {
        return;
    }
    let config = askiam::config::Config {
        embed: EmbedConfig {
            provider: "bedrock".into(),
            bedrock_model: TITAN.into(),
            dims: 512,
            ..EmbedConfig::default()
        },
        ..askiam::config::Config::default()
    };
    let embedder = askiam::app::embedder(&config).await.expect("the app builds the Bedrock embedder");
    assert_eq!(embedder.model_id(), "bedrock:amazon.titan-embed-text-v2:0/512");
    let vectors = embedder.embed(&texts(2, "env"), InputKind::Document).await.expect("embedded via the env endpoint");
    assert_eq!(vectors[0], vector_for(&texts(2, "env")[0], 512));
}
