//! Amazon Bedrock embeddings: Titan Text Embeddings V2 and Cohere Embed v3, over InvokeModel.
//!
//! The two families differ in what one call carries: Titan embeds one text per call
//! (`{"inputText","dimensions","normalize"}` → `{"embedding","inputTextTokenCount"}`), Cohere
//! up to 96 (`{"texts","input_type","truncate"}` → `{"embeddings":[[…]],…}`), and only Cohere
//! distinguishes documents from queries (`search_document` / `search_query`). Everything else
//! — quota, concurrency, retries — is the shared [`Limiter`]; this module only encodes requests,
//! decodes responses and classifies errors.
//!
//! The SDK's own retries are turned off: the limiter counts attempts against `max_retries` and
//! backs off with jitter, and two retry loops stacked would multiply the attempts. The endpoint
//! is the SDK's own resolution (including `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` and
//! `AWS_ENDPOINT_URL`) unless `bedrock_endpoint` is set, which wins.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::config::http::HttpResponse;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Region};
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::Client;
use serde::{Deserialize, Serialize};

use super::hash::estimate_tokens;
use super::limit::{Limiter, Limits, Verdict};
use super::{EmbedError, Embedder, InputKind};
use crate::config::EmbedConfig;

/// Texts per Cohere call (the service's limit).
pub const COHERE_MAX_TEXTS: usize = 96;
/// Characters per Cohere text (the service's limit); longer texts are cut at the end, as
/// `"truncate":"END"` would cut tokens.
pub const COHERE_MAX_CHARS: usize = 2048;
/// The Cohere model `bedrock-cohere` uses when `bedrock_model` still names the Titan default.
pub const COHERE_DEFAULT_MODEL: &str = "cohere.embed-english-v3";
const TITAN_DEFAULT_MODEL: &str = "amazon.titan-embed-text-v2:0";

/// Which request and response shapes a model id speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    TitanV2,
    Cohere,
}

impl Family {
    /// The family of `model`; inference-profile ids (`us.cohere.embed-…`) and ARNs included.
    pub fn of(model: &str) -> Option<Family> {
        if model.contains("amazon.titan-embed-text-v2") {
            Some(Family::TitanV2)
        } else if model.contains("cohere.embed-english-v3") || model.contains("cohere.embed-multilingual-v3") {
            Some(Family::Cohere)
        } else {
            None
        }
    }
}

/// Works out the model to call from the provider name (`bedrock`, `bedrock-titan`,
/// `bedrock-cohere`) and `bedrock_model`.
pub fn resolve_model(provider: &str, model: &str) -> Result<(String, Family), EmbedError> {
    let unsupported = |why: &str| {
        EmbedError::ModelMissing(format!(
            "{provider}: {why} (supported: amazon.titan-embed-text-v2:0, cohere.embed-english-v3, \
             cohere.embed-multilingual-v3)"
        ))
    };
    let family = Family::of(model);
    match (provider, family) {
        ("bedrock", Some(f))
        | ("bedrock-titan", Some(f @ Family::TitanV2))
        | ("bedrock-cohere", Some(f @ Family::Cohere)) => Ok((model.to_string(), f)),
        // `bedrock_model` defaults to Titan; asking for Cohere by provider name alone means
        // the default Cohere model.
        ("bedrock-cohere", _) if model == TITAN_DEFAULT_MODEL => Ok((COHERE_DEFAULT_MODEL.to_string(), Family::Cohere)),
        (_, Some(_)) => Err(unsupported(&format!("model {model:?} is not of this provider's family"))),
        (_, None) => Err(unsupported(&format!("unknown embedding model {model:?}"))),
    }
}

#[derive(Serialize)]
struct TitanRequest<'a> {
    #[serde(rename = "inputText")]
    input_text: &'a str,
    dimensions: usize,
    normalize: bool,
}

#[derive(Deserialize)]
struct TitanResponse {
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct CohereRequest<'a> {
    texts: Vec<&'a str>,
    input_type: &'static str,
    truncate: &'static str,
}

#[derive(Deserialize)]
struct CohereResponse {
    embeddings: Vec<Vec<f32>>,
}

/// Bedrock embeddings behind quota limits. Cheap to share: one client, one limiter.
pub struct BedrockEmbedder {
    client: Client,
    model: String,
    family: Family,
    dims: usize,
    id: String,
    limiter: Arc<Limiter>,
}

impl BedrockEmbedder {
    /// Builds the client from the SDK's default chain (credentials, region, endpoint env
    /// variables), with `region` and `bedrock_endpoint` from `config` taking precedence.
    /// Nothing is sent: credentials are resolved on the first call.
    pub async fn from_config(config: &EmbedConfig) -> Result<BedrockEmbedder, EmbedError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if !config.region.is_empty() {
            loader = loader.region(Region::new(config.region.clone()));
        }
        let sdk = loader.load().await;
        BedrockEmbedder::with_sdk_config(config, aws_sdk_bedrockruntime::config::Builder::from(&sdk).build())
    }

    /// Builds on a prebuilt client config (tests pass static credentials and a region here);
    /// `bedrock_endpoint` from `config` still wins, and retries are always the limiter's.
    pub fn with_sdk_config(
        config: &EmbedConfig,
        sdk: aws_sdk_bedrockruntime::Config,
    ) -> Result<BedrockEmbedder, EmbedError> {
        let (model, family) = resolve_model(&config.provider, &config.bedrock_model)?;
        let dims = match family {
            Family::TitanV2 if [256, 512, 1024].contains(&config.dims) => config.dims,
            Family::TitanV2 => {
                return Err(EmbedError::ModelMissing(format!(
                    "{model} makes vectors of 256, 512 or 1024 dimensions, not {}; set embed.dims \
                     (ASKIAM_EMBED_DIMS) to one of them",
                    config.dims
                )))
            }
            Family::Cohere => 1024,
        };
        let mut builder = sdk.to_builder().retry_config(RetryConfig::disabled());
        if !config.bedrock_endpoint.is_empty() {
            builder = builder.endpoint_url(config.bedrock_endpoint.clone());
        }
        let client = Client::from_conf(builder.build());
        let limiter = Arc::new(Limiter::new(Limits::from_config(config)));
        let id = format!("bedrock:{model}/{dims}");
        Ok(BedrockEmbedder { client, model, family, dims, id, limiter })
    }

    /// Replaces the limits (tests and benches tune the backoff).
    pub fn with_limits(mut self, limits: Limits) -> BedrockEmbedder {
        self.limiter = Arc::new(Limiter::new(limits));
        self
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// Texts per InvokeModel call.
    pub fn batch_limit(&self) -> usize {
        match self.family {
            Family::TitanV2 => 1,
            Family::Cohere => COHERE_MAX_TEXTS,
        }
    }

    async fn embed_batch(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (body, tokens) = match self.family {
            Family::TitanV2 => {
                let text = texts.first().map(String::as_str).unwrap_or_default();
                let request = TitanRequest { input_text: text, dimensions: self.dims, normalize: true };
                (encode(&request)?, estimate_tokens(text))
            }
            Family::Cohere => {
                let texts: Vec<&str> = texts.iter().map(|t| cut_chars(t, COHERE_MAX_CHARS)).collect();
                let tokens = texts.iter().map(|t| estimate_tokens(t)).sum();
                let input_type = match kind {
                    InputKind::Document => "search_document",
                    InputKind::Query => "search_query",
                };
                (encode(&CohereRequest { texts, input_type, truncate: "END" })?, tokens)
            }
        };
        let body = &body;
        let bytes = self
            .limiter
            .run(tokens, || async move {
                let output = self
                    .client
                    .invoke_model()
                    .model_id(&self.model)
                    .content_type("application/json")
                    .accept("application/json")
                    .body(Blob::new(body.clone()))
                    .send()
                    .await
                    .map_err(|e| classify(&self.model, e))?;
                Ok(output.body.into_inner())
            })
            .await?;
        let vectors = match self.family {
            Family::TitanV2 => vec![decode::<TitanResponse>(&self.model, &bytes)?.embedding],
            Family::Cohere => decode::<CohereResponse>(&self.model, &bytes)?.embeddings,
        };
        if let Some(v) = vectors.iter().find(|v| v.len() != self.dims) {
            return Err(EmbedError::Provider(format!(
                "{} returned a vector of {} dimensions, expected {}",
                self.model,
                v.len(),
                self.dims
            )));
        }
        Ok(vectors)
    }
}

#[async_trait]
impl Embedder for BedrockEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }
    fn dims(&self) -> usize {
        self.dims
    }
    fn max_tokens(&self) -> usize {
        match self.family {
            Family::TitanV2 => 8192,
            Family::Cohere => 512,
        }
    }
    fn count_tokens(&self, text: &str) -> usize {
        estimate_tokens(text)
    }
    fn retries(&self) -> u64 {
        self.limiter.stats().retries()
    }

    async fn embed(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.limiter.in_batches(texts, self.batch_limit(), |batch| self.embed_batch(batch, kind)).await
    }
}

/// Retry what is transient (throttling, a model still loading, an overloaded or failing
/// service, a timeout); fail at once on what the request itself caused.
fn classify(model: &str, error: SdkError<InvokeModelError, HttpResponse>) -> Verdict {
    match &error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("").to_string();
            let message = service.err().message().unwrap_or("").to_string();
            let transient = matches!(
                code.as_str(),
                "ThrottlingException"
                    | "ModelNotReadyException"
                    | "ServiceUnavailableException"
                    | "ServiceQuotaExceededException"
                    | "InternalServerException"
                    | "ModelTimeoutException"
            ) || status == 429
                || status >= 500;
            if transient {
                Verdict::Retry(format!("{model}: HTTP {status} {code}: {message}"))
            } else {
                let code = if code.is_empty() { "error".to_string() } else { code };
                Verdict::Fail(EmbedError::Provider(format!("{model}: HTTP {status} {code}: {message}")))
            }
        }
        SdkError::TimeoutError(_) => Verdict::Retry(format!("{model}: timed out")),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => Verdict::Retry(format!("{model}: timed out")),
        _ => Verdict::Fail(EmbedError::Provider(format!("{model}: {}", error_chain(&error)))),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn encode<T: Serialize>(request: &T) -> Result<Vec<u8>, EmbedError> {
    serde_json::to_vec(request).map_err(|e| EmbedError::Provider(format!("encoding the request: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(model: &str, bytes: &[u8]) -> Result<T, EmbedError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        EmbedError::Provider(format!("{model}: unexpected response ({e}): {head}"))
    })
}

/// `text` cut to at most `max` characters, on a character boundary.
fn cut_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_and_model_resolve_to_a_family() {
        assert_eq!(
            resolve_model("bedrock", "amazon.titan-embed-text-v2:0").unwrap(),
            ("amazon.titan-embed-text-v2:0".to_string(), Family::TitanV2)
        );
        assert_eq!(resolve_model("bedrock", "us.cohere.embed-multilingual-v3").unwrap().1, Family::Cohere);
        assert_eq!(
            resolve_model("bedrock-cohere", "amazon.titan-embed-text-v2:0").unwrap(),
            (COHERE_DEFAULT_MODEL.to_string(), Family::Cohere)
        );
        assert!(resolve_model("bedrock-titan", "cohere.embed-english-v3").is_err());
        assert!(resolve_model("bedrock", "amazon.titan-embed-text-v1").is_err());
    }

    #[test]
    fn request_bodies_match_the_documented_shapes() {
        let titan = encode(&TitanRequest { input_text: "hi", dimensions: 256, normalize: true }).unwrap();
        assert_eq!(String::from_utf8(titan).unwrap(), r#"{"inputText":"hi","dimensions":256,"normalize":true}"#);
        let cohere =
            encode(&CohereRequest { texts: vec!["a", "b"], input_type: "search_query", truncate: "END" }).unwrap();
        assert_eq!(
            String::from_utf8(cohere).unwrap(),
            r#"{"texts":["a","b"],"input_type":"search_query","truncate":"END"}"#
        );
    }

    #[test]
    fn long_cohere_texts_are_cut_on_a_character_boundary() {
        let text = "é".repeat(3000);
        assert_eq!(cut_chars(&text, COHERE_MAX_CHARS).chars().count(), COHERE_MAX_CHARS);
        assert_eq!(cut_chars("short", COHERE_MAX_CHARS), "short");
    }
}
