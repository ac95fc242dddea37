//! The chat log: every turn recorded (question, intent, entities, citations, latency — never a
//! token or an answer's disclosed assignments), locally in `chat.sqlite` under the data dir,
//! on AWS in DynamoDB.
//!
//! The log is also the conversation memory: a follow-up ("who approves it?") reads the
//! previous turn of its conversation back from here, so the doors keep no state of their own
//! and a Lambda answers a follow-up as well as the long-running server does.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("chat log {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("chat log: {0}")]
    Other(String),
}

/// An entity as the response and the log show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityOut {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub id: Option<String>,
    pub valid: bool,
    /// `valid`, `not_found`, `conflict` (an SoD conflict with the asker's roles) or `held`.
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub conversation_id: String,
    pub turn: u32,
    /// RFC 3339.
    pub at: String,
    pub user: Option<String>,
    pub question: String,
    pub intent: String,
    pub entities: Vec<EntityOut>,
    /// Ids of the cited documents.
    pub citations: Vec<String>,
    pub latency_ms: f64,
    pub generator: String,
}

#[async_trait]
pub trait ChatLog: Send + Sync {
    async fn record(&self, turn: &Turn) -> Result<(), LogError>;

    /// The latest turn of a conversation.
    async fn last_turn(&self, conversation_id: &str) -> Result<Option<Turn>, LogError>;
}

/// `chat.sqlite` in the data dir: its own file, so chat traffic never waits on ingestion's
/// writer lock.
pub struct LocalChatLog {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl LocalChatLog {
    pub fn open(data_dir: &Path) -> Result<Self, LogError> {
        let path = data_dir.join("chat.sqlite");
        let err = |source| LogError::Sqlite { path: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(|e| LogError::Other(format!("{}: {e}", data_dir.display())))?;
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS turns (
                conversation_id TEXT NOT NULL,
                turn            INTEGER NOT NULL,
                at              TEXT NOT NULL,
                body            TEXT NOT NULL,      -- the Turn as JSON
                PRIMARY KEY (conversation_id, turn)
             ) WITHOUT ROWID;",
        )
        .map_err(err)?;
        Ok(LocalChatLog { conn: Mutex::new(conn), path })
    }

    fn err(&self, source: rusqlite::Error) -> LogError {
        LogError::Sqlite { path: self.path.clone(), source }
    }

    /// Every turn, oldest first (for `askiam chat-log` and tests).
    pub fn all(&self) -> Result<Vec<Turn>, LogError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt =
            conn.prepare("SELECT body FROM turns ORDER BY at, conversation_id, turn").map_err(|e| self.err(e))?;
        let bodies = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        bodies.iter().map(|b| serde_json::from_str(b).map_err(|e| LogError::Other(e.to_string()))).collect()
    }
}

#[async_trait]
impl ChatLog for LocalChatLog {
    async fn record(&self, turn: &Turn) -> Result<(), LogError> {
        let body = serde_json::to_string(turn).map_err(|e| LogError::Other(e.to_string()))?;
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "INSERT OR REPLACE INTO turns (conversation_id, turn, at, body) VALUES (?1, ?2, ?3, ?4)",
            params![turn.conversation_id, turn.turn, turn.at, body],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn last_turn(&self, conversation_id: &str) -> Result<Option<Turn>, LogError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM turns WHERE conversation_id = ?1 ORDER BY turn DESC LIMIT 1",
                [conversation_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| LogError::Other(e.to_string()))).transpose()
    }
}

/// The chat log in DynamoDB: one item per turn, partition key `conversation_id` (S), sort
/// key `turn` (N), so "the previous turn" is one `Query` read backwards with `Limit 1`.
/// The client follows the SDK's own configuration (region, credentials, `AWS_ENDPOINT_URL`).
pub struct DynamoChatLog {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn dynamo_err(e: impl std::fmt::Display) -> LogError {
    LogError::Other(format!("DynamoDB: {e}"))
}

impl DynamoChatLog {
    pub async fn connect(table: &str) -> Self {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        DynamoChatLog { client: aws_sdk_dynamodb::Client::new(&sdk), table: table.to_string() }
    }

    pub fn with_client(client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        DynamoChatLog { client, table: table.to_string() }
    }
}

#[async_trait]
impl ChatLog for DynamoChatLog {
    async fn record(&self, turn: &Turn) -> Result<(), LogError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let body = serde_json::to_string(turn).map_err(|e| LogError::Other(e.to_string()))?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("conversation_id", V::S(turn.conversation_id.clone()))
            .item("turn", V::N(turn.turn.to_string()))
            .item("at", V::S(turn.at.clone()))
            .item("intent", V::S(turn.intent.clone()))
            .item("latency_ms", V::N(format!("{:.3}", turn.latency_ms)))
            .item("body", V::S(body));
        if let Some(u) = &turn.user {
            put = put.item("user", V::S(u.clone()));
        }
        put.send().await.map_err(|e| dynamo_err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn last_turn(&self, conversation_id: &str) -> Result<Option<Turn>, LogError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("conversation_id = :c")
            .expression_attribute_values(":c", V::S(conversation_id.to_string()))
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(|e| dynamo_err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        let Some(item) = out.items().first() else { return Ok(None) };
        let body = item.get("body").and_then(|v| v.as_s().ok()).ok_or_else(|| dynamo_err("turn item without body"))?;
        serde_json::from_str(body).map(Some).map_err(|e| LogError::Other(e.to_string()))
    }
}
