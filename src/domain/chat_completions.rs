//! The chat-completion shaped routes on the wire: `POST /v1/agents/completions` and the
//! built-in model's `POST /v1/chat/completions` (request bodies as the SDKs send them,
//! responses and stream chunks as the hosted API answers).

use super::completion::{Prediction, ResponseFormat, Stop};
use super::conversations::Usage;
use super::entries::Content;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Body of `POST /v1/agents/completions` (and of a chat completion the built-in model
/// answers). Fields the SDKs send that have no meaning here are accepted and ignored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[schema(as = AgentsCompletionRequest)]
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
pub struct MessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallIn>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub prefix: Option<bool>,
}

#[derive(Deserialize)]
pub struct ToolCallIn {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type", default)]
    pub _kind: Option<String>,
    pub function: FunctionIn,
    #[serde(default, rename = "index")]
    pub _index: Option<Value>,
}

#[derive(Deserialize)]
pub struct FunctionIn {
    pub name: String,
    pub arguments: Value,
}

#[derive(Deserialize)]
pub struct ToolIn {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: Option<FunctionToolIn>,
}

#[derive(Deserialize)]
pub struct FunctionToolIn {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub strict: Option<bool>,
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
    pub message: AssistantMessage,
    /// `stop`, or `tool_calls` when the model called functions.
    pub finish_reason: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
    /// `null` when the model called nothing.
    pub tool_calls: Option<Vec<CompletedToolCall>>,
    pub prefix: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ToolCall)]
pub struct CompletedToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: CalledFunction,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = FunctionCall)]
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
