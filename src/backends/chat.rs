//! The model-facing side of a run: a chat request in the OpenAI-compatible shape, and the
//! deltas a backend streams back.

use crate::domain::completion::CompletionArgs;
use crate::domain::conversations::Usage;
use crate::domain::entries::Content;
use crate::error::Error;
use futures::stream::BoxStream;
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// A chat message. Built from stored entries it borrows their text (`Cow::Borrowed`): a
/// turn's request would otherwise copy the whole history's text once more.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum ChatMessage<'a> {
    System {
        content: Cow<'a, str>,
    },
    User {
        content: Cow<'a, Content>,
    },
    Assistant {
        content: Option<Cow<'a, Content>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        prefix: bool,
    },
    Tool {
        tool_call_id: Cow<'a, str>,
        name: Cow<'a, str>,
        content: Cow<'a, str>,
    },
}

impl ChatMessage<'_> {
    /// Bytes of text the message carries (for sizing buffers).
    pub fn text_len(&self) -> usize {
        let content = |c: &Content| match c {
            Content::Text(text) => text.len(),
            Content::Chunks(chunks) => chunks.len() * 256,
        };
        match self {
            ChatMessage::System { content } => content.len(),
            ChatMessage::User { content: c } => content(c),
            ChatMessage::Assistant { content: c, tool_calls, .. } => {
                c.as_deref().map_or(0, content)
                    + tool_calls.iter().map(|t| t.function.arguments.len() + t.function.name.len() + 64).sum::<usize>()
            }
            ChatMessage::Tool { content, .. } => content.len() + 32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall<'a> {
    pub id: Cow<'a, str>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCallBody<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCallBody<'a> {
    pub name: Cow<'a, str>,
    pub arguments: Cow<'a, str>,
}

/// A function the model may call. Built from an agent's tools it borrows their JSON
/// schemas instead of copying them every turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTool<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: ToolFunction<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolFunction<'a> {
    pub name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
    pub parameters: Cow<'a, Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl ChatTool<'_> {
    pub fn into_owned(self) -> ChatTool<'static> {
        let f = self.function;
        ChatTool {
            kind: self.kind,
            function: ToolFunction {
                name: Cow::Owned(f.name.into_owned()),
                description: f.description.map(|d| Cow::Owned(d.into_owned())),
                parameters: Cow::Owned(f.parameters.into_owned()),
                strict: f.strict,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChatRequest<'a> {
    pub model: String,
    pub messages: Vec<ChatMessage<'a>>,
    pub tools: Cow<'a, [ChatTool<'a>]>,
    pub args: Cow<'a, CompletionArgs>,
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
    async fn chat_stream(&self, request: ChatRequest<'_>) -> Result<DeltaStream, Error>;
}
