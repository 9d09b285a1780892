//! The model-facing side of a run: a chat request in the OpenAI-compatible shape, and the
//! deltas a backend streams back.

use crate::domain::completion::CompletionArgs;
use crate::domain::conversations::Usage;
use crate::domain::entries::Content;
use crate::error::Error;
use futures::stream::BoxStream;
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum ChatMessage {
    System {
        content: String,
    },
    User {
        content: Content,
    },
    Assistant {
        content: Option<Content>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        prefix: bool,
    },
    Tool {
        tool_call_id: String,
        name: String,
        content: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCallBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCallBody {
    pub name: String,
    pub arguments: String,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTool {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: ToolFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolFunction {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub parameters: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ChatTool>,
    pub args: CompletionArgs,
}

/// A fragment of a tool call; `index` tells parallel calls apart, `id` and `name` come with
/// the first fragment of a call, `arguments` fragments concatenate.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChatDelta {
    Text(String),
    ToolCall(ToolCallDelta),
    Usage(Usage),
}

pub type DeltaStream = BoxStream<'static, Result<ChatDelta, Error>>;

#[async_trait::async_trait]
pub trait ModelBackend: Send + Sync {
    /// Starts a streamed chat completion. Errors before the first delta (connection,
    /// status) come back here; errors mid-stream as an `Err` item of the stream, which
    /// then ends.
    async fn chat_stream(&self, request: ChatRequest) -> Result<DeltaStream, Error>;
}
