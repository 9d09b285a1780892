//! The model-facing side of a run: a chat request in the OpenAI-compatible shape, and the
//! deltas a backend streams back.

use crate::domain::completion::CompletionArgs;
use crate::domain::conversations::Usage;
use crate::domain::entries::Content;
use crate::error::Error;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::OnceLock;

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
    /// The messages, without the stored ones when `stored` is set.
    pub messages: Vec<ChatMessage<'a>>,
    /// A conversation's stored history, the same from one turn to the next: a backend that
    /// writes JSON keeps theirs instead of building and writing them every turn.
    pub stored: Option<StoredMessages<'a>>,
    pub tools: Cow<'a, [ChatTool<'a>]>,
    pub args: Cow<'a, CompletionArgs>,
    /// Whether the answer is passed on as it comes (a streamed turn or completion). When it
    /// is not, an upstream is asked for one JSON answer: cheaper for it and for palaver than
    /// a stream nobody watches. The deltas come out the same either way.
    pub stream: bool,
    /// Who asks: upstreams never see it; the scripted `mock` model matches rules on it and
    /// keeps its journal per workspace.
    pub caller: Caller<'a>,
}

/// The workspace, agent and round a model request is made for.
#[derive(Debug, Clone, Default)]
pub struct Caller<'a> {
    pub workspace: Option<Cow<'a, str>>,
    pub agent_id: Option<Cow<'a, str>>,
    pub agent_name: Option<Cow<'a, str>>,
    /// The model round of the turn, from 1.
    pub round: u32,
}

#[derive(Clone, Copy)]
pub struct StoredMessages<'a> {
    /// Where they go in `ChatRequest::messages` (after the system message).
    pub at: usize,
    /// Builds them: for a backend that reads messages, or has no JSON for them yet.
    pub build: &'a (dyn Fn() -> Vec<ChatMessage<'a>> + Sync),
    /// Their JSON as `write_message` writes it, once written.
    pub json: &'a OnceLock<Bytes>,
}

impl std::fmt::Debug for StoredMessages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredMessages").field("at", &self.at).field("json", &self.json).finish_non_exhaustive()
    }
}

impl<'a> ChatRequest<'a> {
    /// Every message, the stored ones built in their place.
    pub fn all_messages(&self) -> Cow<'_, [ChatMessage<'a>]> {
        let Some(stored) = &self.stored else {
            return Cow::Borrowed(&self.messages);
        };
        let (before, after) = self.messages.split_at(stored.at.min(self.messages.len()));
        let mut all = before.to_vec();
        all.extend((stored.build)());
        all.extend_from_slice(after);
        Cow::Owned(all)
    }
}

/// Starts the next item of a JSON list being written: a comma, unless the item opens the
/// list (`out` empty or ending in `[`).
pub fn separate(out: &mut Vec<u8>) {
    if !matches!(out.last(), None | Some(b'[')) {
        out.push(b',');
    }
}

/// Room to reserve for the JSON of `messages`.
pub fn json_capacity(messages: &[ChatMessage<'_>]) -> usize {
    messages.iter().map(|m| m.text_len() + 64).sum()
}

/// Appends `message` as JSON to a list being written (see `separate`). Written by hand: serde would run every key and
/// fixed value (`"role"`, `"user"`, `"content"`, …) through its string escaper, which was
/// most of the time spent serializing a long history. Values that may need escaping still
/// go through serde_json. Same JSON as the derived `Serialize` (a test compares them).
pub fn write_message(out: &mut Vec<u8>, message: &ChatMessage<'_>) {
    fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
        // Writing into a Vec cannot fail, and our values serialize without errors.
        let _ = serde_json::to_writer(&mut *out, value);
    }
    separate(out);
    match message {
        ChatMessage::System { content } => {
            out.extend_from_slice(br#"{"role":"system","content":"#);
            json(out, content.as_ref());
        }
        ChatMessage::User { content } => {
            out.extend_from_slice(br#"{"role":"user","content":"#);
            json(out, content.as_ref());
        }
        ChatMessage::Assistant { content, tool_calls, prefix } => {
            out.extend_from_slice(br#"{"role":"assistant","content":"#);
            match content {
                Some(content) => json(out, content.as_ref()),
                None => out.extend_from_slice(b"null"),
            }
            if !tool_calls.is_empty() {
                out.extend_from_slice(br#","tool_calls":["#);
                for (j, call) in tool_calls.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(br#"{"id":"#);
                    json(out, call.id.as_ref());
                    out.extend_from_slice(br#","type":"#);
                    json(out, call.kind);
                    out.extend_from_slice(br#","function":{"name":"#);
                    json(out, call.function.name.as_ref());
                    out.extend_from_slice(br#","arguments":"#);
                    json(out, call.function.arguments.as_ref());
                    out.extend_from_slice(b"}}");
                }
                out.push(b']');
            }
            if *prefix {
                out.extend_from_slice(br#","prefix":true"#);
            }
        }
        ChatMessage::Tool { tool_call_id, name, content } => {
            out.extend_from_slice(br#"{"role":"tool","tool_call_id":"#);
            json(out, tool_call_id.as_ref());
            out.extend_from_slice(br#","name":"#);
            json(out, name.as_ref());
            out.extend_from_slice(br#","content":"#);
            json(out, content.as_ref());
        }
    }
    out.push(b'}');
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
    /// The model cites the sources numbered so (Mistral's `reference` chunks).
    Reference(Vec<u64>),
    ToolCall(ToolCallDelta),
    Usage(Usage),
    /// The answer is complete: why (`stop`, `tool_calls`, `length`, …), and which model the
    /// upstream says answered. Only traces read it.
    Finish {
        reason: String,
        model: Option<String>,
    },
}

/// How a model cites the sources a tool gave it (DESIGN decision 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CitationStyle {
    /// It answers with `reference` chunks naming source numbers (Mistral's chat API).
    References,
    /// It writes `[n]` markers in its text, when the tool's answer asks it to.
    Markers,
}

pub type DeltaStream = BoxStream<'static, Result<ChatDelta, Error>>;

#[async_trait::async_trait]
pub trait ModelBackend: Send + Sync {
    /// Starts a streamed chat completion. Errors before the first delta (connection,
    /// status) come back here; errors mid-stream as an `Err` item of the stream, which
    /// then ends.
    async fn chat_stream(&self, request: ChatRequest<'_>) -> Result<DeltaStream, Error>;

    fn citation_style(&self) -> CitationStyle {
        CitationStyle::Markers
    }

    /// Who serves the model, as OpenTelemetry's GenAI conventions name providers
    /// (`gen_ai.provider.name`): the built-in models are palaver's own.
    fn provider(&self) -> &'static str {
        "palaver"
    }
}
