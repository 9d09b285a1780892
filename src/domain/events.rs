//! The run's event stream (DESIGN decision 1). The streaming endpoints write these as SSE
//! (the official SDKs' streaming contract); the non-streaming endpoints fold the same events into a
//! `conversation.response`, so the two cannot disagree.

use super::conversations::UsageInfo;
use super::ids::{ConversationId, EntryId};
use super::time::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum RunEvent {
    #[serde(rename = "conversation.response.started")]
    Started { conversation_id: ConversationId, created_at: Timestamp },
    #[serde(rename = "message.output.delta")]
    MessageDelta {
        id: EntryId,
        output_index: u32,
        content_index: u32,
        created_at: Timestamp,
        model: Option<String>,
        agent_id: Option<String>,
        role: &'static str,
        content: DeltaContent,
    },
    #[serde(rename = "function.call.delta")]
    FunctionCallDelta {
        id: EntryId,
        output_index: u32,
        created_at: Timestamp,
        name: String,
        tool_call_id: String,
        arguments: String,
        model: Option<String>,
        agent_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        confirmation_status: Option<String>,
    },
    #[serde(rename = "tool.execution.started")]
    ToolStarted {
        id: EntryId,
        output_index: u32,
        created_at: Timestamp,
        name: String,
        arguments: String,
        model: Option<String>,
        agent_id: Option<String>,
    },
    #[serde(rename = "tool.execution.done")]
    ToolDone { id: EntryId, output_index: u32, created_at: Timestamp, name: String, info: Map<String, Value> },
    #[serde(rename = "agent.handoff.started")]
    HandoffStarted {
        id: EntryId,
        output_index: u32,
        created_at: Timestamp,
        previous_agent_id: String,
        previous_agent_name: String,
    },
    #[serde(rename = "agent.handoff.done")]
    HandoffDone {
        id: EntryId,
        output_index: u32,
        created_at: Timestamp,
        next_agent_id: String,
        next_agent_name: String,
    },
    /// Not on the wire: marks an output entry as complete (its `completed_at`), so the
    /// fold writes the same entry the store keeps.
    #[serde(skip)]
    EntryDone { output_index: u32, completed_at: Timestamp },
    #[serde(rename = "conversation.response.done")]
    Done { usage: UsageInfo, created_at: Timestamp },
    #[serde(rename = "conversation.response.error")]
    Failed {
        message: String,
        /// The HTTP status the failure stands for (`error.status()`).
        code: u16,
        created_at: Timestamp,
        /// The failure as a code of the error table, so a folded run reports the very same
        /// error (`type`, `code`) a request failing before the run would.
        #[serde(skip)]
        error: crate::error::Code,
    },
}

/// What one `message.output.delta` adds: text, or one whole chunk (a citation, a file).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DeltaContent {
    Text(String),
    Chunk(Value),
}

impl From<&str> for DeltaContent {
    fn from(text: &str) -> Self {
        DeltaContent::Text(text.to_owned())
    }
}

impl From<String> for DeltaContent {
    fn from(text: String) -> Self {
        DeltaContent::Text(text)
    }
}

impl RunEvent {
    /// The SSE event name: the same string as the JSON `type`.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            RunEvent::Started { .. } => "conversation.response.started",
            RunEvent::MessageDelta { .. } => "message.output.delta",
            RunEvent::FunctionCallDelta { .. } => "function.call.delta",
            RunEvent::ToolStarted { .. } => "tool.execution.started",
            RunEvent::ToolDone { .. } => "tool.execution.done",
            RunEvent::HandoffStarted { .. } => "agent.handoff.started",
            RunEvent::HandoffDone { .. } => "agent.handoff.done",
            RunEvent::EntryDone { .. } => return None,
            RunEvent::Done { .. } => "conversation.response.done",
            RunEvent::Failed { .. } => "conversation.response.error",
        })
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, RunEvent::Done { .. } | RunEvent::Failed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversations::Usage;

    #[test]
    fn the_event_name_equals_the_json_type() {
        let now = Timestamp::now();
        let events = [
            RunEvent::Started { conversation_id: ConversationId("conv_1".into()), created_at: now },
            RunEvent::MessageDelta {
                id: EntryId("msg_1".into()),
                output_index: 0,
                content_index: 0,
                created_at: now,
                model: None,
                agent_id: None,
                role: "assistant",
                content: "x".into(),
            },
            RunEvent::Done { usage: Usage::default().into(), created_at: now },
            RunEvent::Failed { message: "m".into(), code: 500, created_at: now, error: crate::error::Code::Internal },
        ];

        for event in events {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["type"], event.name().unwrap());
        }
    }
}
