//! Stateless chat completions: `POST /v1/agents/completions` (an agent's instructions, tools
//! and arguments applied to the given messages) and the built-in model's answer to
//! `POST /v1/chat/completions`. Nothing is stored.

use super::agents as agent_rules;
use super::calls::CallAssembler;
use super::context;
use super::round::ModelRound;
use super::Engine;
use crate::backends::chat::{
    Caller, ChatDelta, ChatMessage, ChatRequest, ChatTool, FunctionCallBody, ToolCall, ToolFunction,
};
use crate::backends::openai_compat::Passthrough;
use crate::domain::agents::VersionSelector;
use crate::domain::chat_completions::{
    Arguments, AssistantMessage, CalledFunction, ChatCompletion, ChatCompletionChunk, ChunkChoice, ChunkDelta,
    ChunkFunction, ChunkToolCall, CompletedToolCall, CompletionChoice, CompletionRequest, Message, ToolIn,
};
use crate::domain::completion::{CompletionArgs, ToolChoice};
use crate::domain::conversations::Usage;
use crate::domain::entries::Content;
use crate::domain::ids::{AgentId, WorkspaceId};
use crate::domain::time::Timestamp;
use crate::error::{decode_json, decode_value, Error, FieldError, Result};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use std::borrow::Cow;
use tracing::Instrument;

fn chat_messages(values: Vec<Value>) -> Result<Vec<ChatMessage<'static>>> {
    let mut messages = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let text = |content: Option<Content>| content.as_ref().map(Content::text).unwrap_or_default();
        messages.push(match Message::decode(value, &["messages".into(), index.into()])? {
            Message::System(message) => ChatMessage::System { content: text(message.content).into() },
            Message::User(message) => ChatMessage::User { content: Cow::Owned(message.content) },
            Message::Assistant(message) => ChatMessage::Assistant {
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
                                Arguments::Text(text) => text.into(),
                                Arguments::Object(object) => Value::Object(object).to_string().into(),
                            },
                        },
                    })
                    .collect(),
                prefix: message.prefix.unwrap_or(false),
            },
            Message::Tool(message) => ChatMessage::Tool {
                tool_call_id: message.tool_call_id.into(),
                name: message.name.unwrap_or_default().into(),
                content: text(message.content).into(),
            },
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
            let mut errors = Vec::new();
            function.check_name(&["tools".into(), index.into(), "function".into()], &mut errors);
            if !errors.is_empty() {
                return Err(Error::Invalid(errors));
            }
            out.push(ChatTool {
                kind: "function",
                function: ToolFunction {
                    name: Cow::Owned(function.name),
                    description: function.description.map(Cow::Owned),
                    parameters: Cow::Owned(function.parameters),
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
async fn prepare(
    engine: &Engine,
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
    let (model, args, agent_name) = match &request.agent_id {
        Some(agent_id) => {
            let agent = agent_rules::load(engine, ws, &AgentId(agent_id.clone()), &VersionSelector::Active).await?;
            if let Some(instructions) = agent.config.instructions.filter(|i| !i.trim().is_empty()) {
                messages.insert(0, ChatMessage::System { content: instructions.into() });
            }
            let mut agent_tools = context::chat_tools(&agent.config.tools);
            agent_tools.retain(|t| !tools.iter().any(|r| r.function.name == t.function.name));
            tools.extend(agent_tools.into_iter().map(ChatTool::into_owned));
            let name = Some(Cow::Owned(agent.config.name));
            (agent.config.model, agent.config.completion_args.overridden_by(&overrides), name)
        }
        None => match request.model {
            Some(model) => (model, overrides, None),
            None => return Err(Error::invalid(FieldError::body(&["agent_id".into()], "missing", "Field required"))),
        },
    };
    let caller = Caller {
        workspace: Some(Cow::Owned(ws.as_str().to_owned())),
        agent_id: request.agent_id.map(Cow::Owned),
        agent_name,
        round: 1,
    };
    let (tools, args) = (tools.into(), Cow::Owned(args));
    let stream = request.stream;
    Ok((ChatRequest { model, messages, stored: None, tools, args, stream, caller }, stream))
}

/// What a completion route answers.
pub enum CompletionAnswer {
    Complete(ChatCompletion),
    /// Chunks as the model streams them; the transport adds the closing `[DONE]`.
    Stream(BoxStream<'static, ChatCompletionChunk>),
    /// `POST /v1/chat/completions` for a model an upstream serves: the upstream's own
    /// status, content type and body, unchanged.
    Relayed(Passthrough),
}

/// `POST /v1/agents/completions`: the agent's instructions, tools and arguments applied to
/// the given messages. Nothing is stored.
pub async fn agent_completion(
    engine: &Engine,
    ws: &WorkspaceId,
    request: CompletionRequest,
) -> Result<CompletionAnswer> {
    if request.agent_id.is_none() {
        return Err(Error::invalid(FieldError::body(&["agent_id".into()], "missing", "Field required")));
    }
    let (request, stream) = prepare(engine, ws, request).await?;
    answer(engine, request, stream).await
}

/// `POST /v1/chat/completions`: relayed unchanged to the upstream the model routes to
/// (clients whose base URL is palaver keep their other calls); the built-in model answers
/// itself.
pub async fn chat_completion(engine: &Engine, ws: &WorkspaceId, body: bytes::Bytes) -> Result<CompletionAnswer> {
    let value: Value = decode_json(&["body".into()], &body)?;
    let model = match value.get("model") {
        Some(Value::String(model)) => model.clone(),
        Some(_) => {
            return Err(Error::invalid(FieldError::body(&["model".into()], "string_type", "Input should be a string")))
        }
        None => return Err(Error::invalid(FieldError::body(&["model".into()], "missing", "Field required"))),
    };
    if let Some(upstream) = engine.models.upstream(&model) {
        // The round's span covers the call until the upstream's headers: the body is
        // relayed unread, so the answer's usage and finish reasons stay unknown.
        let round = ModelRound::start(&model, &*upstream, 1);
        let relayed = upstream.passthrough(body).instrument(round.span().clone()).await;
        round.end(relayed.as_ref().err());
        return Ok(CompletionAnswer::Relayed(relayed?));
    }
    let mut request: CompletionRequest = decode_value(&["body".into()], value)?;
    request.agent_id = None;
    let (request, stream) = prepare(engine, ws, request).await?;
    answer(engine, request, stream).await
}

async fn answer(engine: &Engine, request: ChatRequest<'static>, stream: bool) -> Result<CompletionAnswer> {
    Ok(if stream {
        CompletionAnswer::Stream(chunks(engine, request).await?)
    } else {
        CompletionAnswer::Complete(complete(engine, request).await?)
    })
}

/// One finished completion, shaped like the hosted chat completion response.
async fn complete(engine: &Engine, request: ChatRequest<'static>) -> Result<ChatCompletion> {
    let model = request.model.clone();
    let backend = engine.models.backend(&model);
    let (mut round, mut stream) = ModelRound::start(&model, &*backend, 1).call(&*backend, request).await?;
    let mut text = String::new();
    let mut calls = CallAssembler::<()>::default();
    let span = round.span().clone();
    let answered = async {
        while let Some(delta) = stream.next().await {
            match delta? {
                ChatDelta::Text(t) => text.push_str(&t),
                ChatDelta::ToolCall(fragment) => {
                    calls.push(fragment, || ());
                }
                delta @ (ChatDelta::Usage(_) | ChatDelta::Finish { .. }) => round.note(delta),
                // Only a run has sources to cite.
                ChatDelta::Reference(_) => {}
            }
        }
        Ok(())
    };
    let answered: Result<()> = answered.instrument(span).await;
    let usage = round.end(answered.as_ref().err()).unwrap_or_default();
    answered?;
    let finish_reason = if calls.is_empty() { "stop" } else { "tool_calls" };
    let tool_calls: Vec<CompletedToolCall> = calls
        .into_calls()
        .map(|call| CompletedToolCall {
            id: call.id.unwrap_or_default(),
            kind: "function",
            function: CalledFunction { name: call.name.unwrap_or_default(), arguments: call.arguments },
        })
        .collect();
    Ok(ChatCompletion {
        id: completion_id(),
        object: "chat.completion",
        model,
        created: Timestamp::now().unix_seconds(),
        usage,
        choices: vec![CompletionChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: text,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                prefix: false,
            },
            finish_reason,
        }],
    })
}

fn completion_id() -> String {
    format!("cmpl_{}", uuid::Uuid::now_v7().simple())
}

/// The completion as chat-completion chunks (data-only, unlike the conversation events).
/// A failure mid-answer ends with `finish_reason: "error"`.
async fn chunks(engine: &Engine, request: ChatRequest<'static>) -> Result<BoxStream<'static, ChatCompletionChunk>> {
    let model = request.model.clone();
    let backend = engine.models.backend(&model);
    let (mut round, mut deltas) = ModelRound::start(&model, &*backend, 1).call(&*backend, request).await?;
    let id = completion_id();
    let created = Timestamp::now().unix_seconds();
    let chunk =
        move |delta: ChunkDelta, finish_reason: Option<&'static str>, usage: Option<Usage>| ChatCompletionChunk {
            id: id.clone(),
            object: "chat.completion.chunk",
            created,
            model: model.clone(),
            choices: [ChunkChoice { index: 0, delta, finish_reason }],
            usage,
        };
    let text = |text: String| ChunkDelta { content: Some(text), ..Default::default() };
    let chunks = async_stream::stream! {
        yield chunk(ChunkDelta { role: Some("assistant"), content: Some(String::new()), ..Default::default() }, None, None);
        let mut called = false;
        // The client reads the answer as it comes: the round's span covers each read.
        while let Some(delta) = deltas.next().instrument(round.span().clone()).await {
            match delta {
                Ok(ChatDelta::Text(t)) => yield chunk(text(t), None, None),
                Ok(ChatDelta::ToolCall(fragment)) => {
                    called = true;
                    let call = ChunkToolCall {
                        index: fragment.index,
                        kind: fragment.id.is_some().then_some("function"),
                        id: fragment.id,
                        function: ChunkFunction { name: fragment.name, arguments: fragment.arguments },
                    };
                    yield chunk(ChunkDelta { tool_calls: Some(vec![call]), ..Default::default() }, None, None);
                }
                Ok(delta @ (ChatDelta::Usage(_) | ChatDelta::Finish { .. })) => round.note(delta),
                Ok(ChatDelta::Reference(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, "completion stream failed");
                    let usage = round.end(Some(&error)).unwrap_or_default();
                    yield chunk(text(String::new()), Some("error"), Some(usage));
                    return;
                }
            }
        }
        let usage = round.end(None).unwrap_or_default();
        let finish = if called { "tool_calls" } else { "stop" };
        yield chunk(text(String::new()), Some(finish), Some(usage));
    };
    Ok(chunks.boxed())
}
