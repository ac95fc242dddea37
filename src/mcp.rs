//! The MCP door: `askiam mcp` serves the chat orchestrator over stdio as Model Context
//! Protocol tools, so an agent host can ask askiam directly.
//!
//! Three tools, each a thin call into the same functions the HTTP door uses:
//! `search_iam` (hybrid retrieval), `validate_entity` (is this role / application / user
//! real, checked against the catalogue), `ask` (a whole chat turn). Results are JSON text.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData as McpError, ServerHandler, ServiceExt};
use serde::Deserialize;

use crate::query::chat::{Chat, ChatRequest};
use crate::query::retrieve::{self, Filters};

#[derive(Clone)]
pub struct AskiamMcp {
    chat: Arc<Chat>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchArgs {
    #[schemars(description = "what to look for, in plain words")]
    pub query: String,
    #[schemars(description = "how many documents (default 5, at most 50)")]
    pub k: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ValidateArgs {
    #[schemars(description = "a role, application, approver group or user name (typos tolerated) or id")]
    pub name: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AskArgs {
    #[schemars(description = "the question, as an employee would ask it")]
    pub message: String,
    #[schemars(description = "who is asking (login), for held roles, conflicts and own assignments")]
    pub user: Option<String>,
    #[schemars(description = "continue a conversation (follow-up questions)")]
    pub conversation_id: Option<String>,
}

fn json_result(v: &impl serde::Serialize) -> Result<CallToolResult, McpError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| McpError::internal_error(e.to_string(), None))?;
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn failed(e: impl std::fmt::Display) -> Result<CallToolResult, McpError> {
    Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]))
}

#[tool_router]
impl AskiamMcp {
    pub fn new(chat: Arc<Chat>) -> Self {
        AskiamMcp { chat, tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Search the IAM knowledge index (roles, applications, approver groups, SoD rules, policy documents): hybrid keyword + semantic retrieval."
    )]
    async fn search_iam(&self, Parameters(a): Parameters<SearchArgs>) -> Result<CallToolResult, McpError> {
        let k = a.k.unwrap_or(self.chat.settings.k).clamp(1, 50);
        match retrieve::search(self.chat.index.as_ref(), self.chat.embedder.as_ref(), &a.query, k, &Filters::default())
            .await
        {
            Ok(hits) => json_result(&hits),
            Err(e) => failed(e),
        }
    }

    #[tool(
        description = "Check whether a role, application, approver group or user exists in the IAM catalogue (the live database when configured); returns what the text names, with ids, or the closest real names."
    )]
    async fn validate_entity(&self, Parameters(a): Parameters<ValidateArgs>) -> Result<CallToolResult, McpError> {
        match self.chat.validate_names(&a.name).await {
            Ok(found) => json_result(&found),
            Err(e) => failed(e),
        }
    }

    #[tool(
        description = "Ask an access question (\"I need access to the HR Analyst role\", \"who approves Workday access?\"); returns a grounded answer with validated entities and citations."
    )]
    async fn ask(&self, Parameters(a): Parameters<AskArgs>) -> Result<CallToolResult, McpError> {
        let req = ChatRequest { message: a.message, user: a.user.clone(), conversation_id: a.conversation_id };
        match self.chat.answer(&req, a.user.as_deref()).await {
            Ok(resp) => json_result(&resp),
            Err(e) => failed(e),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AskiamMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("askiam", env!("CARGO_PKG_VERSION")))
            .with_instructions("IAM access questions: who approves what, what a role grants, which role fits a task, and a user's own roles. Facts are checked against the IAM catalogue.")
    }
}

/// Serves MCP on stdin/stdout until the client closes stdin.
pub async fn serve_stdio(chat: Arc<Chat>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let service = AskiamMcp::new(chat).serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}
