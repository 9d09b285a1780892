//! Stateless chat completions: `POST /v1/agents/completions` (an agent's instructions, tools
//! and arguments applied to the given messages) and the built-in model's answer to
//! `POST /v1/chat/completions`. Nothing is stored.

use super::agents as agent_rules;
use super::context;
use crate::backends::chat::{ChatDelta, ChatMessage, ChatRequest, ChatTool, FunctionCallBody, ToolCall, ToolFunction};
use crate::domain::agents::VersionSelector;
use crate::domain::completion::{CompletionArgs, Prediction, ResponseFormat, Stop, ToolChoice};
use crate::domain::conversations::Usage;
use crate::domain::entries::Content;
use crate::domain::ids::{AgentId, WorkspaceId};
use crate::domain::time::Timestamp;
use crate::error::{decode_value, Error, FieldError, Loc, Result};
use crate::AppState;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Body of `POST /v1/agents/completions` (and of a chat completion the built-in model
/// answers). Fields the SDKs send that have no meaning here are accepted and ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<Value>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub random_seed: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub prediction: Option<Prediction>,
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    #[serde(default)]
    pub n: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<Value>,
    #[serde(default)]
    pub prompt_mode: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub guardrails: Option<Value>,
    #[serde(default)]
    pub prompt_cache_key: Option<Value>,
    #[serde(default)]
    pub service_tier: Option<Value>,
    #[serde(default)]
    pub min_tokens: Option<Value>,
    #[serde(default)]
    pub repetition_penalty: Option<Value>,
    #[serde(default)]
    pub top_k: Option<Value>,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub top_logprobs: Option<Value>,
    #[serde(default)]
    pub prompt_logprobs: Option<Value>,
    #[serde(default)]
    pub top_prompt_logprobs: Option<Value>,
    #[serde(default)]
    pub safe_prompt: Option<Value>,
    #[serde(default)]
    pub stream_options: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageIn {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallIn>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    prefix: Option<bool>,
}

#[derive(Deserialize)]
struct ToolCallIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type", default)]
    _kind: Option<String>,
    function: FunctionIn,
    #[serde(default, rename = "index")]
    _index: Option<Value>,
}

#[derive(Deserialize)]
struct FunctionIn {
    name: String,
    arguments: Value,
}

#[derive(Deserialize)]
struct ToolIn {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: Option<FunctionToolIn>,
}

#[derive(Deserialize)]
struct FunctionToolIn {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    strict: Option<bool>,
}

fn chat_messages(values: Vec<Value>) -> Result<Vec<ChatMessage<'static>>> {
    let mut messages = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let prefix: Vec<Loc> = vec!["body".into(), "messages".into(), index.into()];
        let message: MessageIn = decode_value(&prefix, value)?;
        let at = |field: &str| {
            FieldError::body(&["messages".into(), index.into(), field.into()], "missing", "Field required")
        };
        let text = message.content.as_ref().map(Content::text).unwrap_or_default();
        messages.push(match message.role.as_str() {
            "system" => ChatMessage::System { content: text.into() },
            "user" => {
                ChatMessage::User { content: Cow::Owned(message.content.ok_or_else(|| Error::invalid(at("content")))?) }
            }
            "assistant" => ChatMessage::Assistant {
                content: message.content.map(Cow::Owned),
                tool_calls: message
                    .tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .map(|call| ToolCall {
                        id: call.id.unwrap_or_default().into(),
                        kind: "function",
                        function: FunctionCallBody {
                            name: call.function.name.into(),
                            arguments: match call.function.arguments {
                                Value::String(s) => s.into(),
                                other => other.to_string().into(),
                            },
                        },
                    })
                    .collect(),
                prefix: message.prefix.unwrap_or(false),
            },
            "tool" => ChatMessage::Tool {
                tool_call_id: message.tool_call_id.ok_or_else(|| Error::invalid(at("tool_call_id")))?.into(),
                name: message.name.unwrap_or_default().into(),
                content: text.into(),
            },
            other => {
                let loc = ["messages".into(), index.into(), "role".into()];
                let msg = format!("Input should be `system`, `user`, `assistant` or `tool`, got `{other}`");
                return Err(Error::invalid(FieldError::body(&loc, "enum", msg)));
            }
        });
    }
    if messages.is_empty() {
        return Err(Error::invalid(FieldError::body(
            &["messages".into()],
            "too_short",
            "List should have at least 1 item",
        )));
    }
    Ok(messages)
}

/// Function tools of the request; other tool types have no meaning without a connector.
fn request_tools(tools: Option<Vec<Value>>) -> Result<Vec<ChatTool<'static>>> {
    let mut out = Vec::new();
    for (index, value) in tools.unwrap_or_default().into_iter().enumerate() {
        let tool: ToolIn = decode_value(&["body".into(), "tools".into(), index.into()], value)?;
        if let (None | Some("function"), Some(function)) = (tool.kind.as_deref(), tool.function) {
            out.push(ChatTool {
                kind: "function",
                function: ToolFunction {
                    name: Cow::Owned(function.name),
                    description: function.description.map(Cow::Owned),
                    parameters: Cow::Owned(function.parameters.unwrap_or_default()),
                    strict: function.strict,
                },
            });
        }
    }
    Ok(out)
}

fn tool_choice(value: &Option<Value>) -> Option<ToolChoice> {
    match value.as_ref()?.as_str()? {
        "auto" => Some(ToolChoice::Auto),
        "none" => Some(ToolChoice::None),
        "any" => Some(ToolChoice::Any),
        "required" => Some(ToolChoice::Required),
        _ => None,
    }
}

/// Builds the model request: an agent's settings (when `agent_id` is given) with the
/// request's own arguments winning member by member.
pub async fn prepare(
    state: &AppState,
    ws: &WorkspaceId,
    request: CompletionRequest,
) -> Result<(ChatRequest<'static>, bool)> {
    let overrides = CompletionArgs {
        stop: request.stop.clone(),
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens: request.max_tokens,
        random_seed: request.random_seed,
        prediction: request.prediction.clone(),
        response_format: request.response_format.clone(),
        tool_choice: tool_choice(&request.tool_choice),
        reasoning_effort: request.reasoning_effort.clone(),
    };
    let mut errors = Vec::new();
    overrides.validate(&[], &mut errors);
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let mut messages = chat_messages(request.messages)?;
    let mut tools = request_tools(request.tools)?;
    let (model, args) = match &request.agent_id {
        Some(agent_id) => {
            let agent = agent_rules::load(state, ws, &AgentId(agent_id.clone()), &VersionSelector::Active).await?;
            if let Some(instructions) = agent.config.instructions.filter(|i| !i.trim().is_empty()) {
                messages.insert(0, ChatMessage::System { content: instructions.into() });
            }
            let mut agent_tools = context::chat_tools(&agent.config.tools);
            agent_tools.retain(|t| !tools.iter().any(|r| r.function.name == t.function.name));
            tools.extend(agent_tools.into_iter().map(ChatTool::into_owned));
            (agent.config.model, agent.config.completion_args.overridden_by(&overrides))
        }
        None => match request.model {
            Some(model) => (model, overrides),
            None => return Err(Error::invalid(FieldError::body(&["agent_id".into()], "missing", "Field required"))),
        },
    };
    Ok((ChatRequest { model, messages, stored: None, tools: tools.into(), args: Cow::Owned(args) }, request.stream))
}

/// One finished completion, shaped like the hosted chat completion response.
pub async fn complete(state: &AppState, request: ChatRequest<'static>) -> Result<Value> {
    let model = request.model.clone();
    let mut stream = state.models.backend(&model).chat_stream(request).await?;
    let mut text = String::new();
    let mut calls: BTreeMap<u32, (String, String, String)> = BTreeMap::new();
    let mut usage = Usage::default();
    while let Some(delta) = stream.next().await {
        match delta? {
            ChatDelta::Text(t) => text.push_str(&t),
            ChatDelta::ToolCall(fragment) => {
                let entry = calls.entry(fragment.index).or_default();
                if let Some(id) = fragment.id {
                    entry.0 = id;
                }
                if let Some(name) = fragment.name {
                    entry.1 = name;
                }
                entry.2.push_str(&fragment.arguments);
            }
            ChatDelta::Usage(u) => usage = u,
        }
    }
    let tool_calls: Vec<Value> = calls
        .into_values()
        .map(|(id, name, arguments)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
        .collect();
    let finish_reason = if tool_calls.is_empty() { "stop" } else { "tool_calls" };
    Ok(json!({
        "id": completion_id(),
        "object": "chat.completion",
        "model": model,
        "created": Timestamp::now().unix_seconds(),
        "usage": usage,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text,
                        "tool_calls": if tool_calls.is_empty() { Value::Null } else { json!(tool_calls) }, "prefix": false},
            "finish_reason": finish_reason
        }]
    }))
}

fn completion_id() -> String {
    format!("cmpl_{}", uuid::Uuid::now_v7().simple())
}

/// The completion as chat-completion chunks (the data-only framing of
/// the agents completions stream is framed differently); the
/// caller adds the closing `[DONE]`. A failure mid-answer ends with `finish_reason: "error"`.
pub async fn stream(state: &AppState, request: ChatRequest<'static>) -> Result<BoxStream<'static, Value>> {
    let model = request.model.clone();
    let mut deltas = state.models.backend(&model).chat_stream(request).await?;
    let id = completion_id();
    let created = Timestamp::now().unix_seconds();
    let chunk = move |delta: Value, finish: Option<&str>, usage: Option<Usage>| {
        let mut body = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some(usage) = usage {
            body["usage"] = json!(usage);
        }
        body
    };
    let chunks = async_stream::stream! {
        yield chunk(json!({"role": "assistant", "content": ""}), None, None);
        let mut usage = Usage::default();
        let mut called = false;
        while let Some(delta) = deltas.next().await {
            match delta {
                Ok(ChatDelta::Text(text)) => yield chunk(json!({"content": text}), None, None),
                Ok(ChatDelta::ToolCall(fragment)) => {
                    called = true;
                    let mut call = json!({"index": fragment.index, "function": {"arguments": fragment.arguments}});
                    if let Some(id) = fragment.id {
                        call["id"] = json!(id);
                        call["type"] = json!("function");
                    }
                    if let Some(name) = fragment.name {
                        call["function"]["name"] = json!(name);
                    }
                    yield chunk(json!({"tool_calls": [call]}), None, None);
                }
                Ok(ChatDelta::Usage(u)) => usage = u,
                Err(error) => {
                    tracing::warn!(%error, "completion stream failed");
                    yield chunk(json!({"content": ""}), Some("error"), Some(usage));
                    return;
                }
            }
        }
        let finish = if called { "tool_calls" } else { "stop" };
        yield chunk(json!({"content": ""}), Some(finish), Some(usage));
    };
    Ok(chunks.boxed())
}
