//! Conversations on the wire (the official SDKs' conversations contract): start/append/restart bodies,
//! the response of a run, conversation objects, history and messages.

use super::agents::GuardrailConfig;
use super::completion::{CompletionArgs, CompletionArgsView};
use super::entries::{Entry, Inputs};
use super::ids::ConversationId;
use super::shared_fields;
use super::time::Timestamp;
use super::tools::Tool;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HandoffExecution {
    Server,
    Client,
}

/// `agent_version`: a version number or an alias name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged, expecting = "a version number or an alias name")]
pub enum AgentVersionRef {
    Number(i64),
    Alias(String),
}

/// Body of `POST /v1/conversations`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationRequest)]
// Every field may be absent: the struct's `Default` fills them.
#[schema(example = json!({"model": "echo", "inputs": "Who is Albert Einstein?"}))]
#[serde(default, deny_unknown_fields)]
pub struct StartConversationRequest {
    pub inputs: Option<Inputs>,
    pub stream: bool,
    pub store: Option<bool>,
    pub handoff_execution: Option<HandoffExecution>,
    pub agent_id: Option<String>,
    pub agent_version: Option<AgentVersionRef>,
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub tools: Option<Vec<Tool>>,
    pub completion_args: Option<CompletionArgs>,
    pub guardrails: Option<Vec<GuardrailConfig>>,
    pub name: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Confirmation {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ToolCallConfirmation)]
#[serde(deny_unknown_fields)]
pub struct ToolConfirmation {
    pub tool_call_id: String,
    pub confirmation: Confirmation,
}

/// Body of `POST /v1/conversations/{id}`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationAppendRequest)]
// Every field may be absent: the struct's `Default` fills them.
#[schema(example = json!({"inputs": "And in German?", "stream": true}))]
#[serde(default, deny_unknown_fields)]
pub struct AppendConversationRequest {
    pub inputs: Option<Inputs>,
    pub stream: bool,
    pub store: Option<bool>,
    pub handoff_execution: Option<HandoffExecution>,
    pub completion_args: Option<CompletionArgs>,
    pub tool_confirmations: Option<Vec<ToolConfirmation>>,
}

/// Body of `POST /v1/conversations/{id}/restart`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationRestartRequest)]
#[serde(deny_unknown_fields)]
pub struct RestartConversationRequest {
    pub from_entry_id: String,
    #[serde(default)]
    pub inputs: Option<Inputs>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub handoff_execution: Option<HandoffExecution>,
    #[serde(default)]
    pub completion_args: Option<CompletionArgs>,
    #[serde(default)]
    pub guardrails: Option<Vec<GuardrailConfig>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub agent_version: Option<AgentVersionRef>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = UsageInfo)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// `usage` as the hosted API writes it (connector members `null` until tools run).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(as = ConversationUsageInfo)]
pub struct UsageInfo {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub connector_tokens: Option<u64>,
    #[schema(value_type = Option<Object>)]
    pub connectors: Option<Map<String, Value>>,
}

impl From<Usage> for UsageInfo {
    fn from(usage: Usage) -> Self {
        UsageInfo {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
            connector_tokens: None,
            connectors: None,
        }
    }
}

/// What start, append and restart return.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationResponse {
    pub object: &'static str,
    #[schema(value_type = String)]
    pub conversation_id: ConversationId,
    pub outputs: Vec<Entry>,
    pub usage: UsageInfo,
}

/// A conversation as `get` and `list` return it: the agent shape or the model shape,
/// never both (the SDKs tell them apart by which key is present).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Conversation {
    Agent(AgentConversation),
    Model(Box<ModelConversation>),
}

shared_fields! {
    // Both shapes open with the object's identity and times, and close with its labels.
    head {
        pub object: &'static str,
        #[schema(value_type = String)]
        pub id: ConversationId,
        #[schema(value_type = String)]
        pub created_at: Timestamp,
        #[schema(value_type = String)]
        pub updated_at: Timestamp,
    }
    tail {
        pub name: Option<String>,
        pub description: Option<String>,
        #[schema(value_type = Option<Object>)]
        pub metadata: Option<Map<String, Value>>,
    }

    #[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
    pub struct AgentConversation {
        pub agent_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub agent_version: Option<AgentVersionRef>,
    }

    #[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
    pub struct ModelConversation {
        pub model: String,
        pub instructions: Option<String>,
        pub tools: Vec<Tool>,
        #[schema(value_type = CompletionArgs)]
        pub completion_args: CompletionArgsView,
        pub guardrails: Option<Vec<GuardrailConfig>>,
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationHistory {
    pub object: &'static str,
    #[schema(value_type = String)]
    pub conversation_id: ConversationId,
    #[schema(value_type = Vec<Entry>)]
    pub entries: Vec<std::sync::Arc<Entry>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationMessages {
    pub object: &'static str,
    #[schema(value_type = String)]
    pub conversation_id: ConversationId,
    #[schema(value_type = Vec<Entry>)]
    pub messages: Vec<std::sync::Arc<Entry>>,
}
