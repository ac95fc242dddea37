//! One `Config` for every door: defaults that work locally, then a TOML file, then `ASKIAM_*`.
//!
//! Environment overrides are derived from the structure itself — `ASKIAM_<SECTION>_<FIELD>`
//! (e.g. `ASKIAM_SEARCH_K`, `ASKIAM_EMBED_PROVIDER`) and `ASKIAM_<FIELD>` for top-level fields
//! — so a new setting is overridable the moment it is added, with no list to keep in sync.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("environment variable {var}={value:?}: {reason}")]
    Env { var: String, value: String, reason: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the entity store, ledger, quarantine and the embedded index live.
    pub data_dir: PathBuf,
    /// The directory `askiam serve` watches for new exports and documents.
    pub drop_dir: PathBuf,
    pub ingest: IngestConfig,
    pub embed: EmbedConfig,
    pub search: SearchConfig,
    pub serve: ServeConfig,
    pub chat: ChatConfig,
    pub worker: WorkerConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Objects larger than this fail their message with a clear error (bytes).
    pub max_object_bytes: u64,
    /// Visibility timeout asked for when receiving (seconds; 0: the queue's own). The poller
    /// extends it while a batch is still being worked on.
    pub visibility_secs: i32,
    /// Long-poll wait per receive (seconds, at most 20).
    pub wait_secs: i32,
    /// DynamoDB table of the shared ledger (partition key `object` S, sort key `version` S);
    /// empty: the ledger in the data dir. Needed when several workers (Lambdas) share one
    /// index but not one data dir.
    pub ledger_table: String,
    /// How long a worker's claim on an object version holds in the shared ledger before
    /// another worker may take it over (seconds): at least the Lambda's timeout.
    pub lease_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            max_object_bytes: 1 << 30,
            visibility_secs: 0,
            wait_secs: 20,
            ledger_table: String::new(),
            lease_secs: 900,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Name of the commit-timestamp column AWS DMS adds (its `TimestampColumnName` setting).
    pub dms_timestamp_column: String,
    /// Rows applied per entity-store transaction and embedding round.
    pub batch_rows: usize,
    /// Tokens shared between neighbouring chunks of a document, so a sentence cut at a chunk
    /// boundary is still whole in one of them.
    pub chunk_overlap_tokens: usize,
    /// How long a file in the drop dir must stay unchanged before it is read (milliseconds),
    /// so a file still being copied is not ingested half-written.
    pub settle_ms: u64,
    /// Full rescan of the drop dir every this many seconds, catching events the watcher missed.
    pub rescan_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    /// `minilm` (local all-MiniLM-L6-v2, the default; `askiam model fetch` gets it), `hash`
    /// (offline, deterministic, lexical only: tests),
    /// `bedrock-titan`, `bedrock-cohere` or `ollama`.
    pub provider: String,
    /// Vector size: fixed by the model for `minilm` (384); chosen for `hash` and Titan V2.
    pub dims: usize,
    /// Texts per embedding call.
    pub batch_size: usize,
    /// Where `askiam model fetch` puts local models; empty: `$ASKIAM_MODEL_DIR`, else
    /// `$XDG_CACHE_HOME/askiam/models`, else `~/.cache/askiam/models`.
    pub model_dir: String,
    /// Worker threads for local inference (0: all cores).
    pub threads: usize,
    /// Bedrock model id (Titan Text Embeddings V2 or Cohere Embed).
    pub bedrock_model: String,
    /// Bedrock endpoint override (tests, VPC endpoints); empty: the SDK's own resolution.
    pub bedrock_endpoint: String,
    /// AWS region for Bedrock; empty: the SDK's default chain.
    pub region: String,
    /// Ollama base URL and embedding model.
    pub ollama_url: String,
    pub ollama_model: String,
    /// Rate limits for remote providers: requests per second, tokens per minute (0: none),
    /// concurrent requests, and retries on throttling before a batch fails to the caller.
    pub requests_per_sec: u32,
    pub tokens_per_min: u32,
    pub max_concurrency: usize,
    pub max_retries: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    pub k: usize,
    /// Weight of the keyword (BM25) list in reciprocal-rank fusion.
    pub bm25_weight: f32,
    /// Weight of the vector list in reciprocal-rank fusion.
    pub vector_weight: f32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub addr: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Live Postgres the answers' facts are checked against (`postgres://user@host/db`);
    /// empty: the entity store ingestion keeps in the data dir.
    pub database_url: String,
    /// Connections in the Postgres pool.
    pub pool_size: usize,
    /// Longest accepted message, in bytes.
    pub max_message_bytes: usize,
    /// Comma-separated logins or user ids who may see anyone's role assignments.
    pub admins: String,
    /// A TOML file of `"<token>" = "<login>"` lines; when set, `/chat` requires
    /// `Authorization: Bearer <token>` and the asker is the token's user, never the body's.
    pub tokens_file: String,
    /// DynamoDB table for the chat log (key: `conversation_id` S, `turn` N); empty: the
    /// data dir's `chat.sqlite`.
    pub log_table: String,
    /// On Lambda: the authorizer claim that holds the asker's login.
    pub identity_claim: String,
    /// `grounded` (offline, the default), `ollama` or `bedrock` (Converse).
    pub generator: String,
    pub ollama_model: String,
    pub bedrock_model: String,
    /// The generator's endpoint: Ollama's base URL (empty: `embed.ollama_url`) or a Bedrock
    /// endpoint override (empty: the SDK's resolution; the region is `embed.region`).
    pub llm_url: String,
    /// Seconds the catalogue's entity names are reused before being read again.
    pub names_ttl_secs: u64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            database_url: String::new(),
            pool_size: 8,
            max_message_bytes: 4096,
            admins: String::new(),
            tokens_file: String::new(),
            log_table: String::new(),
            identity_claim: "username".into(),
            generator: "grounded".into(),
            ollama_model: "llama3.2".into(),
            bedrock_model: "anthropic.claude-3-haiku-20240307-v1:0".into(),
            llm_url: String::new(),
            names_ttl_secs: 30,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(".askiam"),
            drop_dir: PathBuf::from("drop"),
            ingest: IngestConfig::default(),
            embed: EmbedConfig::default(),
            search: SearchConfig::default(),
            serve: ServeConfig::default(),
            chat: ChatConfig::default(),
            worker: WorkerConfig::default(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            dms_timestamp_column: "commit_ts".into(),
            batch_rows: 2000,
            chunk_overlap_tokens: 32,
            settle_ms: 150,
            rescan_secs: 5,
        }
    }
}

impl Default for EmbedConfig {
    fn default() -> Self {
        EmbedConfig {
            provider: "minilm".into(),
            dims: 384,
            batch_size: 64,
            model_dir: String::new(),
            threads: 0,
            bedrock_model: "amazon.titan-embed-text-v2:0".into(),
            bedrock_endpoint: String::new(),
            region: String::new(),
            ollama_url: "http://127.0.0.1:11434".into(),
            ollama_model: "nomic-embed-text".into(),
            requests_per_sec: 10,
            tokens_per_min: 0,
            max_concurrency: 4,
            max_retries: 8,
        }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        // Chosen on the dev halves of evals/ (GCP roles, AWS policies) with MiniLM: 1:3 gave
        // the best recall@5 there (docs/retrieval.md has the figures).
        SearchConfig { k: 5, bm25_weight: 1.0, vector_weight: 3.0 }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig { addr: "127.0.0.1:8080".into() }
    }
}

impl Config {
    /// Defaults, then `file` (if given), then `ASKIAM_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut value = toml::Value::try_from(Config::default()).expect("defaults serialise");
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
            // Parse once strictly, so unknown keys in the file are reported with their place.
            let _: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })?;
            let file_value: toml::Value =
                toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })?;
            merge(&mut value, file_value);
        }
        let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("ASKIAM_")).collect();
        apply_env(&mut value, &env)?;
        value.try_into().map_err(|e: toml::de::Error| ConfigError::Env {
            var: "ASKIAM_*".into(),
            value: String::new(),
            reason: e.to_string(),
        })
    }

    /// The effective configuration as TOML, with anything secret-looking redacted.
    pub fn redacted(&self) -> String {
        let mut value = toml::Value::try_from(self).expect("config serialises");
        redact(&mut value);
        toml::to_string_pretty(&value).unwrap_or_default()
    }

    pub fn state_db(&self) -> PathBuf {
        self.data_dir.join("state.sqlite")
    }

    pub fn index_db(&self) -> PathBuf {
        self.data_dir.join("index.sqlite")
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Walks the config tree and overrides each leaf whose derived variable name is set.
fn apply_env(value: &mut toml::Value, env: &[(String, String)]) -> Result<(), ConfigError> {
    fn walk(prefix: &str, v: &mut toml::Value, env: &[(String, String)]) -> Result<(), ConfigError> {
        let toml::Value::Table(t) = v else { return Ok(()) };
        for (k, slot) in t.iter_mut() {
            let name = format!("{prefix}_{}", k.to_ascii_uppercase());
            if slot.is_table() {
                walk(&name, slot, env)?;
                continue;
            }
            let Some((_, raw)) = env.iter().find(|(var, _)| *var == name) else { continue };
            let bad = |reason: &str| ConfigError::Env { var: name.clone(), value: raw.clone(), reason: reason.into() };
            *slot = match slot {
                toml::Value::Integer(_) => {
                    toml::Value::Integer(raw.trim().parse().map_err(|_| bad("expected an integer"))?)
                }
                toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().map_err(|_| bad("expected a number"))?),
                toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" => false,
                    _ => return Err(bad("expected true or false")),
                }),
                _ => toml::Value::String(raw.clone()),
            };
        }
        Ok(())
    }
    walk("ASKIAM", value, env)
}

fn redact(v: &mut toml::Value) {
    if let toml::Value::Table(t) = v {
        for (k, slot) in t.iter_mut() {
            let k = k.to_ascii_lowercase();
            let secret = ["password", "secret", "token", "key", "database_url"].iter().any(|s| k.contains(s));
            if secret && slot.is_str() && !slot.as_str().unwrap_or("").is_empty() {
                *slot = toml::Value::String("<redacted>".into());
            } else {
                redact(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "data_dir = \"/x\"\n[search]\nk = 9\n").unwrap();
        let env = vec![
            ("ASKIAM_SEARCH_K".to_string(), "3".to_string()),
            ("ASKIAM_EMBED_DIMS".to_string(), "64".to_string()),
            ("OTHER".to_string(), "1".to_string()),
        ];
        let c = Config::load(Some(&f), env).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.search.k, 3);
        assert_eq!(c.embed.dims, 64);
        assert_eq!(c.ingest.dms_timestamp_column, "commit_ts");
    }

    #[test]
    fn bad_values_and_unknown_keys_are_reported() {
        let env = vec![("ASKIAM_SEARCH_K".to_string(), "many".to_string())];
        let e = Config::load(None, env).unwrap_err().to_string();
        assert!(e.contains("ASKIAM_SEARCH_K"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[search]\nkk = 9\n").unwrap();
        let e = Config::load(Some(&f), Vec::new()).unwrap_err().to_string();
        assert!(e.contains("kk"), "{e}");
    }
}
