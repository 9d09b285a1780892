//! The chat-completion shaped routes on the wire: `POST /v1/agents/completions` and the
//! built-in model's `POST /v1/chat/completions` (request bodies as the SDKs send them,
//! responses and stream chunks as the hosted API answers).

use super::chunks::{self, ChatContent, ContentChunk};
use super::completion::{Prediction, ResponseFormat, Stop};
use super::conversations::Usage;
use super::entries::Content;
use super::literal;
use super::tools::Function;
use crate::error::{decode_value, Error, FieldError, Loc, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Body of `POST /v1/agents/completions` (and of a chat completion the built-in model
/// answers). Fields the SDKs send that have no meaning here are accepted and ignored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[schema(as = AgentsCompletionRequest)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    // Required of an agents completion (a chat completion's is ignored): checked by the
    // engine, so that a missing one is a 422 like any other.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    // Decoded one by one (`Message::decode`), by their `role`.
    #[schema(value_type = Vec<Message>, inline, min_items = 1)]
    pub messages: Vec<Value>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub random_seed: Option<u64>,
    // The ranges `CompletionArgs::validate` checks.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<ToolIn>>)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    #[schema(minimum = -2.0, maximum = 2.0)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    #[schema(minimum = -2.0, maximum = 2.0)]
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

literal!(SystemRole = "system");
literal!(UserRole = "user");
literal!(AssistantRole = "assistant");
literal!(ToolRole = "tool");

/// One of `messages`, by its `role`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "role", mapping(
    ("system" = "#/components/schemas/SystemMessage"),
    ("user" = "#/components/schemas/UserMessage"),
    ("assistant" = "#/components/schemas/AssistantMessage"),
    ("tool" = "#/components/schemas/ToolMessage"),
)))]
pub enum Message {
    System(SystemMessage),
    User(UserMessage),
    Assistant(AssistantMessageIn),
    Tool(ToolMessage),
}

impl Message {
    /// Decodes the message `value` located at `at` (without `body`) as its `role` says,
    /// with its content's chunks checked. Not serde's untagged matching: that would lose
    /// the field at fault.
    pub fn decode(value: Value, at: &[Loc]) -> Result<Message> {
        let field = |name: &str| {
            let mut path = at.to_vec();
            path.push(name.into());
            path
        };
        let role = match value.get("role") {
            Some(Value::String(role)) => role.clone(),
            Some(_) => {
                return Err(Error::invalid(FieldError::body(&field("role"), "string_type", "Input should be a string")))
            }
            None if value.is_object() => {
                return Err(Error::invalid(FieldError::body(&field("role"), "missing", "Field required")))
            }
            None => return Err(Error::invalid(FieldError::body(at, "dict_type", "Input should be an object"))),
        };
        let prefix: Vec<Loc> = std::iter::once(Loc::from("body")).chain(at.iter().cloned()).collect();
        let message = match role.as_str() {
            "system" => Message::System(decode_value(&prefix, value)?),
            "user" => Message::User(decode_value(&prefix, value)?),
            "assistant" => Message::Assistant(decode_value(&prefix, value)?),
            "tool" => Message::Tool(decode_value(&prefix, value)?),
            other => {
                let msg = format!("Input should be `system`, `user`, `assistant` or `tool`, got `{other}`");
                return Err(Error::invalid(FieldError::body(&field("role"), "enum", msg)));
            }
        };
        let content = match &message {
            Message::System(m) => m.content.as_ref(),
            Message::User(m) => Some(&m.content),
            Message::Assistant(m) => m.content.as_ref(),
            Message::Tool(m) => m.content.as_ref(),
        };
        let mut errors = Vec::new();
        if let Some(Content::Chunks(list)) = content {
            chunks::check(list, &field("content"), ContentChunk::KINDS, &mut errors);
        }
        if errors.is_empty() {
            Ok(message)
        } else {
            Err(Error::Invalid(errors))
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemMessage {
    #[schema(inline)]
    pub role: SystemRole,
    /// Its text is what the model reads.
    #[serde(default)]
    #[schema(value_type = Option<ChatContent>, inline)]
    pub content: Option<Content>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserMessage {
    #[schema(inline)]
    pub role: UserRole,
    #[schema(value_type = ChatContent, inline)]
    pub content: Content,
}

/// An answer of the model: in a request, one to continue from (`prefix`) or whose tool
/// calls the next messages answer; in a response, the completion.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AssistantMessage)]
#[serde(deny_unknown_fields)]
pub struct AssistantMessageIn {
    #[schema(inline)]
    pub role: AssistantRole,
    #[serde(default)]
    #[schema(value_type = Option<ChatContent>, inline)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallIn>>,
    #[serde(default)]
    pub prefix: Option<bool>,
}

/// A function's answer to the tool call `tool_call_id`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolMessage {
    #[schema(inline)]
    pub role: ToolRole,
    /// Its text is what the model reads.
    #[serde(default)]
    #[schema(value_type = Option<ChatContent>, inline)]
    pub content: Option<Content>,
    pub tool_call_id: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ToolCall)]
pub struct ToolCallIn {
    #[serde(default)]
    pub id: Option<String>,
    /// `function`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: FunctionCallIn,
    /// The call's place in a streamed answer.
    #[serde(default)]
    pub index: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = FunctionCall)]
pub struct FunctionCallIn {
    pub name: String,
    #[schema(inline)]
    pub arguments: Arguments,
}

/// A function's arguments: JSON text, or the object itself.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged, expecting = "a JSON string or an object")]
pub enum Arguments {
    Text(String),
    Object(Map<String, Value>),
}

// The official `Tool`.
/// A tool the model may call: only `function` tools reach the model; tools of other types
/// are accepted and left out (they need a connector).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[schema(as = Tool)]
pub struct ToolIn {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub function: Option<Function>,
}

/// Documents the body of `POST /v1/chat/completions` (the official `ChatCompletionRequest`):
/// the members of [`CompletionRequest`] but `agent_id`, with `model` required. A model an
/// upstream serves gets the body unread, so the document does not refuse other members
/// (palaver's own models do).
pub struct ChatCompletionRequest;

impl utoipa::PartialSchema for ChatCompletionRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
        let mut schema = <CompletionRequest as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.properties.shift_remove("agent_id");
            object.properties.insert("model".to_owned(), ObjectBuilder::new().schema_type(Type::String).into());
            object.required = vec!["model".to_owned(), "messages".to_owned()];
            object.additional_properties = None;
            object.description = Some(
                "A chat completion: an upstream-served model gets it as it is; palaver's own models \
                 (`echo`, `mock`) read it and refuse members they do not know."
                    .to_owned(),
            );
        }
        schema
    }
}

impl utoipa::ToSchema for ChatCompletionRequest {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) {
        <CompletionRequest as utoipa::ToSchema>::schemas(schemas);
    }
}

/// A finished completion (`object: "chat.completion"`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ChatCompletionResponse)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub model: String,
    pub created: i64,
    pub usage: Usage,
    pub choices: Vec<CompletionChoice>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ChatCompletionChoice)]
pub struct CompletionChoice {
    pub index: u32,
    // Documented as the request's `AssistantMessage` (one schema for both, as upstream):
    // every answer is one.
    #[schema(value_type = AssistantMessageIn)]
    pub message: AssistantMessage,
    /// `stop`, or `tool_calls` when the model called functions.
    pub finish_reason: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
    /// `null` when the model called nothing.
    pub tool_calls: Option<Vec<CompletedToolCall>>,
    pub prefix: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletedToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: CalledFunction,
}

#[derive(Debug, Clone, Serialize)]
pub struct CalledFunction {
    pub name: String,
    pub arguments: String,
}

/// One chunk of a streamed completion (`object: "chat.completion.chunk"`).
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: [ChunkChoice; 1],
    /// Sent with the last chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: ChunkDelta,
    /// `null` until the last chunk: `stop`, `tool_calls`, or `error` when the model failed.
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChunkDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ChunkToolCall>>,
}

/// A fragment of a tool call: `id`, `type` and the function's `name` come with its first.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkToolCall {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: ChunkFunction,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkFunction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}
