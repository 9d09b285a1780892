//! A connector backed by an MCP server over Streamable HTTP (JSON-RPC in a POST, answered
//! with JSON or an SSE stream; spec revision 2025-06-18). palaver is only a client: it
//! initializes a session, lists the tools (cached for `TOOLS_TTL`) and calls them.

use super::{Connector, ServerTool, ToolCall, ToolOutput};
use crate::config::ConnectorConfig;
use crate::error::Error;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const PROTOCOL_VERSION: &str = "2025-06-18";

/// How long a tool list is reused before it is asked for again.
const TOOLS_TTL: Duration = Duration::from_secs(60);

/// Most pages of `tools/list` read (a server that never stops paging is a bug).
const MAX_TOOL_PAGES: usize = 20;

pub struct McpConnector {
    id: String,
    url: reqwest::Url,
    client: reqwest::Client,
    /// The configured key; a tool definition's own `authorization` replaces it.
    api_key: Option<String>,
    next_request_id: AtomicU64,
    /// One session per credential: MCP servers may scope tools to the caller.
    sessions: Mutex<HashMap<Option<String>, Session>>,
}

#[derive(Clone)]
struct Session {
    id: Option<String>,
    tools: Option<(Instant, Arc<Vec<ServerTool>>)>,
}

impl McpConnector {
    pub fn new(config: &ConnectorConfig) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| anyhow::anyhow!("connector `{}`: invalid url `{}`: {e}", config.id, config.url))?;
        let api_key =
            match &config.api_key_env {
                Some(name) => Some(std::env::var(name).map_err(|_| {
                    anyhow::anyhow!("connector `{}`: environment variable {name} is not set", config.id)
                })?),
                None => None,
            };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(config.timeout_secs.unwrap_or(60)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(McpConnector {
            id: config.id.clone(),
            url,
            client,
            api_key,
            next_request_id: AtomicU64::new(1),
            sessions: Mutex::default(),
        })
    }

    fn failure(&self, message: impl std::fmt::Display) -> Error {
        Error::upstream(502, format!("connector `{}`: {message}", self.id))
    }

    /// A session for `credential`, initializing one if there is none yet.
    async fn session(&self, credential: Option<&str>) -> Result<Session, Error> {
        let key = credential.map(str::to_owned);
        if let Some(session) = self.sessions.lock().await.get(&key) {
            return Ok(session.clone());
        }
        let (_, session_id) = self
            .post(
                credential,
                None,
                "initialize",
                Some(json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "palaver", "version": env!("CARGO_PKG_VERSION")},
                })),
            )
            .await?;
        self.post(credential, session_id.as_deref(), "notifications/initialized", None).await?;
        let session = Session { id: session_id, tools: None };
        self.sessions.lock().await.insert(key, session.clone());
        Ok(session)
    }

    /// One JSON-RPC request in a session, starting a new session once when the server
    /// has forgotten the old one (404, as the spec says).
    async fn request(&self, credential: Option<&str>, method: &str, params: Value) -> Result<Value, Error> {
        let session = self.session(credential).await?;
        match self.post(credential, session.id.as_deref(), method, Some(params.clone())).await {
            Err(SessionGone) => {
                self.sessions.lock().await.remove(&credential.map(str::to_owned));
                let session = self.session(credential).await?;
                Ok(self.post(credential, session.id.as_deref(), method, Some(params)).await?.0)
            }
            other => Ok(other?.0),
        }
    }

    /// POSTs one message. A request (`params` set and a method that is no notification)
    /// gets its result back, with the session id the server assigned, if any.
    async fn post(
        &self,
        credential: Option<&str>,
        session: Option<&str>,
        method: &str,
        params: Option<Value>,
    ) -> Result<(Value, Option<String>), PostError> {
        let notification = method.starts_with("notifications/");
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"jsonrpc": "2.0", "method": method});
        if let Some(params) = params {
            message["params"] = params;
        }
        if !notification {
            message["id"] = json!(id);
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        headers.insert("mcp-protocol-version", HeaderValue::from_static(PROTOCOL_VERSION));
        if let Some(session) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert("mcp-session-id", session);
        }
        if let Some(key) = credential.or(self.api_key.as_deref()) {
            let value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| self.failure("the credential is not a valid header value"))?;
            headers.insert(AUTHORIZATION, value);
        }
        let request = crate::telemetry::traces::propagate(self.client.post(self.url.clone()).headers(headers));
        let response = request.json(&message).send().await.map_err(|e| {
            if e.is_timeout() {
                PostError::Failed(Error::upstream(504, format!("connector `{}` did not answer in time", self.id)))
            } else {
                PostError::Failed(self.failure(format!("cannot reach {}: {e}", self.url)))
            }
        })?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND && session.is_some() {
            return Err(SessionGone);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(500).collect();
            return Err(PostError::Failed(self.failure(format!("HTTP {status}: {body}"))));
        }
        let session_id = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        if notification {
            return Ok((Value::Null, session_id));
        }
        let is_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let reply = if is_stream {
            let mut events = response.bytes_stream().eventsource();
            let mut found = None;
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| self.failure(format!("broken event stream: {e}")))?;
                let Ok(message) = serde_json::from_str::<Value>(&event.data) else { continue };
                if message.get("id") == Some(&json!(id)) {
                    found = Some(message);
                    break;
                }
            }
            found.ok_or_else(|| self.failure(format!("the stream ended without an answer to `{method}`")))?
        } else {
            response.json::<Value>().await.map_err(|e| self.failure(format!("invalid JSON answer: {e}")))?
        };
        if let Some(error) = reply.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("unknown error");
            return Err(PostError::Failed(self.failure(format!("`{method}` failed: {message}"))));
        }
        let result = reply.get("result").cloned().ok_or_else(|| self.failure(format!("no result for `{method}`")))?;
        Ok((result, session_id))
    }
}

enum PostError {
    /// The server no longer knows the session.
    SessionGone,
    Failed(Error),
}
use PostError::SessionGone;

impl From<Error> for PostError {
    fn from(error: Error) -> Self {
        PostError::Failed(error)
    }
}

impl From<PostError> for Error {
    fn from(error: PostError) -> Self {
        match error {
            PostError::Failed(error) => error,
            PostError::SessionGone => Error::upstream(502, "connector session expired"),
        }
    }
}

#[async_trait::async_trait]
impl Connector for McpConnector {
    async fn tools(&self, credential: Option<&str>) -> Result<Arc<Vec<ServerTool>>, Error> {
        let key = credential.map(str::to_owned);
        if let Some(Some((listed, tools))) = self.sessions.lock().await.get(&key).map(|s| s.tools.clone()) {
            if listed.elapsed() < TOOLS_TTL {
                return Ok(tools);
            }
        }
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let params = match &cursor {
                Some(cursor) => json!({"cursor": cursor}),
                None => json!({}),
            };
            let page = self.request(credential, "tools/list", params).await?;
            for tool in page.get("tools").and_then(Value::as_array).into_iter().flatten() {
                let Some(name) = tool.get("name").and_then(Value::as_str) else { continue };
                tools.push(ServerTool {
                    name: name.to_owned(),
                    description: tool.get("description").and_then(Value::as_str).map(str::to_owned),
                    parameters: tool
                        .get("inputSchema")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_else(|| Map::from_iter([("type".to_owned(), json!("object"))])),
                });
            }
            cursor = page.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        let tools = Arc::new(tools);
        if let Some(session) = self.sessions.lock().await.get_mut(&key) {
            session.tools = Some((Instant::now(), tools.clone()));
        }
        Ok(tools)
    }

    async fn call(&self, call: ToolCall<'_>) -> Result<ToolOutput, Error> {
        let (credential, name, arguments) = (call.credential, call.name, call.arguments);
        let result = self.request(credential, "tools/call", json!({"name": name, "arguments": arguments})).await?;
        let is_error = result.get("isError").and_then(Value::as_bool).unwrap_or(false);
        // Text blocks are what a chat model can read; structured output stands in when a
        // tool returns nothing else.
        let mut text: Vec<&str> = Vec::new();
        for block in result.get("content").and_then(Value::as_array).into_iter().flatten() {
            if let Some(t) = block.get("text").and_then(Value::as_str) {
                text.push(t);
            }
        }
        let text = if text.is_empty() {
            result.get("structuredContent").map(Value::to_string).unwrap_or_default()
        } else {
            text.join("\n")
        };
        Ok(ToolOutput { text, is_error, ..Default::default() })
    }
}
