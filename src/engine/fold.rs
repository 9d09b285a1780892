//! Folds a run's events into the entries and usage they describe. The run loop folds its
//! own events to know what to store, and the non-streaming endpoints fold the same events
//! into their response: stored history, JSON response and SSE stream agree by construction.

use crate::domain::conversations::{ConversationResponse, UsageInfo};
use crate::domain::entries::{AgentHandoff, Content, Entry, EntryObject, FunctionCall, MessageOutput, ToolExecution};
use crate::domain::events::{DeltaContent, RunEvent};
use crate::domain::ids::ConversationId;
use crate::error::{Code, Error};
use serde_json::Value;

#[derive(Debug, Default)]
pub struct Fold {
    pub conversation_id: Option<ConversationId>,
    pub outputs: Vec<Entry>,
    pub usage: UsageInfo,
    /// `conversation.response.error`: message and code.
    pub failure: Option<(String, Code)>,
    pub done: bool,
}

impl Fold {
    pub fn apply(&mut self, event: &RunEvent) {
        match event {
            RunEvent::Started { conversation_id, .. } => self.conversation_id = Some(conversation_id.clone()),
            RunEvent::MessageDelta { id, output_index, created_at, model, agent_id, content, .. } => {
                if *output_index as usize == self.outputs.len() {
                    self.outputs.push(Entry::MessageOutput(MessageOutput {
                        object: EntryObject,
                        id: id.clone(),
                        created_at: *created_at,
                        completed_at: None,
                        role: "assistant".to_owned(),
                        content: Content::Text(String::new()),
                        agent_id: agent_id.clone(),
                        model: model.clone(),
                    }));
                }
                if let Some(Entry::MessageOutput(message)) = self.outputs.get_mut(*output_index as usize) {
                    append_content(&mut message.content, content);
                }
            }
            RunEvent::FunctionCallDelta {
                id,
                output_index,
                created_at,
                name,
                tool_call_id,
                arguments,
                model,
                agent_id,
                confirmation_status,
            } => {
                if *output_index as usize == self.outputs.len() {
                    self.outputs.push(Entry::FunctionCall(FunctionCall {
                        object: EntryObject,
                        id: id.clone(),
                        created_at: *created_at,
                        completed_at: None,
                        tool_call_id: tool_call_id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                        agent_id: agent_id.clone(),
                        model: model.clone(),
                        confirmation_status: confirmation_status.clone(),
                    }));
                }
                if let Some(Entry::FunctionCall(call)) = self.outputs.get_mut(*output_index as usize) {
                    call.arguments.push_str(arguments);
                }
            }
            RunEvent::ToolStarted { id, output_index, created_at, name, arguments, model, agent_id } => {
                if *output_index as usize == self.outputs.len() {
                    self.outputs.push(Entry::ToolExecution(ToolExecution {
                        object: EntryObject,
                        id: id.clone(),
                        created_at: *created_at,
                        completed_at: None,
                        name: name.clone(),
                        arguments: arguments.clone(),
                        info: Default::default(),
                        agent_id: agent_id.clone(),
                        model: model.clone(),
                    }));
                }
            }
            RunEvent::ToolDone { output_index, info, .. } => {
                if let Some(Entry::ToolExecution(execution)) = self.outputs.get_mut(*output_index as usize) {
                    execution.info = info.clone();
                }
            }
            RunEvent::HandoffStarted { id, output_index, created_at, previous_agent_id, previous_agent_name } => {
                if *output_index as usize == self.outputs.len() {
                    self.outputs.push(Entry::AgentHandoff(AgentHandoff {
                        object: EntryObject,
                        id: id.clone(),
                        created_at: *created_at,
                        completed_at: None,
                        previous_agent_id: previous_agent_id.clone(),
                        previous_agent_name: previous_agent_name.clone(),
                        next_agent_id: String::new(),
                        next_agent_name: String::new(),
                    }));
                }
            }
            RunEvent::HandoffDone { output_index, next_agent_id, next_agent_name, .. } => {
                if let Some(Entry::AgentHandoff(handoff)) = self.outputs.get_mut(*output_index as usize) {
                    handoff.next_agent_id = next_agent_id.clone();
                    handoff.next_agent_name = next_agent_name.clone();
                }
            }
            RunEvent::EntryDone { output_index, completed_at } => {
                if let Some(entry) = self.outputs.get_mut(*output_index as usize) {
                    set_completed_at(entry, *completed_at);
                }
            }
            RunEvent::Done { usage, .. } => {
                self.usage = usage.clone();
                self.done = true;
            }
            RunEvent::Failed { message, error, .. } => self.failure = Some((message.clone(), *error)),
        }
    }

    /// The non-streaming answer: the response, or the failure as an HTTP error.
    pub fn into_response(self) -> Result<ConversationResponse, Error> {
        if let Some((message, code)) = self.failure {
            return Err(Error::RunFailed { code, message });
        }
        match (self.conversation_id, self.done) {
            (Some(conversation_id), true) => Ok(ConversationResponse {
                object: "conversation.response",
                conversation_id,
                outputs: self.outputs,
                usage: self.usage,
            }),
            _ => Err(Error::Internal(anyhow::anyhow!("the run ended without a result"))),
        }
    }
}

/// Adds a delta to a message's content as the hosted API folds it: all-text deltas make
/// one string; once a chunk arrives the content is a chunk list, adjacent text merged.
fn append_content(content: &mut Content, delta: &DeltaContent) {
    match (&mut *content, delta) {
        (Content::Text(text), DeltaContent::Text(more)) => text.push_str(more),
        (Content::Text(text), DeltaContent::Chunk(chunk)) => {
            let mut chunks = Vec::with_capacity(2);
            if !text.is_empty() {
                chunks.push(text_chunk(std::mem::take(text)));
            }
            chunks.push(chunk.clone());
            *content = Content::Chunks(chunks);
        }
        (Content::Chunks(chunks), DeltaContent::Text(more)) => match chunks.last_mut() {
            Some(Value::Object(last)) if last.get("type").and_then(Value::as_str) == Some("text") => {
                if let Some(Value::String(text)) = last.get_mut("text") {
                    text.push_str(more);
                }
            }
            _ => chunks.push(text_chunk(more.clone())),
        },
        (Content::Chunks(chunks), DeltaContent::Chunk(chunk)) => chunks.push(chunk.clone()),
    }
}

fn text_chunk(text: String) -> Value {
    serde_json::json!({"type": "text", "text": text})
}

fn set_completed_at(entry: &mut Entry, at: crate::domain::time::Timestamp) {
    match entry {
        Entry::MessageOutput(e) => e.completed_at = Some(at),
        Entry::ToolExecution(e) => e.completed_at = Some(at),
        Entry::AgentHandoff(e) => e.completed_at = Some(at),
        // The hosted API leaves `completed_at` null on inputs and function calls.
        Entry::MessageInput(_) | Entry::FunctionCall(_) | Entry::FunctionResult(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversations::Usage;
    use crate::domain::ids::EntryId;
    use crate::domain::time::Timestamp;
    use serde_json::json;

    fn delta(output_index: u32, id: &str, text: &str) -> RunEvent {
        RunEvent::MessageDelta {
            id: EntryId(id.into()),
            output_index,
            content_index: 0,
            created_at: Timestamp::from_micros(1),
            model: Some("m".into()),
            agent_id: None,
            role: "assistant",
            content: text.into(),
        }
    }

    fn call_delta(output_index: u32, arguments: &str) -> RunEvent {
        RunEvent::FunctionCallDelta {
            id: EntryId("fc_1".into()),
            output_index,
            created_at: Timestamp::from_micros(2),
            name: "f".into(),
            tool_call_id: "call_1".into(),
            arguments: arguments.into(),
            model: Some("m".into()),
            agent_id: None,
            confirmation_status: None,
        }
    }

    fn folded(events: &[RunEvent]) -> Fold {
        let mut fold = Fold::default();
        for event in events {
            fold.apply(event);
        }
        fold
    }

    #[test]
    fn deltas_fold_into_one_entry_per_output_index_in_order() {
        let now = Timestamp::from_micros(9);
        let fold = folded(&[
            RunEvent::Started { conversation_id: ConversationId("conv_1".into()), created_at: now },
            delta(0, "msg_1", "Hel"),
            delta(0, "msg_1", "lo"),
            RunEvent::EntryDone { output_index: 0, completed_at: now },
            call_delta(1, "{\"a\""),
            call_delta(1, ":1}"),
            RunEvent::Done {
                usage: Usage { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 }.into(),
                created_at: now,
            },
        ]);

        let response = fold.into_response().unwrap();
        let outputs = serde_json::to_value(&response.outputs).unwrap();
        assert_eq!(outputs[0]["content"], "Hello");
        assert_eq!(outputs[0]["completed_at"], json!(now));
        assert_eq!(outputs[1]["type"], "function.call");
        assert_eq!(outputs[1]["arguments"], "{\"a\":1}");
        assert_eq!(outputs[1]["completed_at"], Value::Null, "the hosted API leaves function calls open");
        assert_eq!(response.usage.total_tokens, 3);
    }

    #[test]
    fn a_tool_execution_folds_its_info_and_a_handoff_its_target() {
        let now = Timestamp::from_micros(5);
        let info = serde_json::Map::from_iter([("output".to_owned(), json!("42"))]);
        let fold = folded(&[
            RunEvent::ToolStarted {
                id: EntryId("tool_exec_1".into()),
                output_index: 0,
                created_at: now,
                name: "code_interpreter".into(),
                arguments: "{}".into(),
                model: None,
                agent_id: None,
            },
            RunEvent::ToolDone {
                id: EntryId("tool_exec_1".into()),
                output_index: 0,
                created_at: now,
                name: "code_interpreter".into(),
                info,
            },
            RunEvent::HandoffStarted {
                id: EntryId("handoff_1".into()),
                output_index: 1,
                created_at: now,
                previous_agent_id: "ag_a".into(),
                previous_agent_name: "A".into(),
            },
            RunEvent::HandoffDone {
                id: EntryId("handoff_1".into()),
                output_index: 1,
                created_at: now,
                next_agent_id: "ag_b".into(),
                next_agent_name: "B".into(),
            },
        ]);

        let outputs = serde_json::to_value(&fold.outputs).unwrap();
        assert_eq!(outputs[0]["info"]["output"], "42");
        assert_eq!(
            (outputs[1]["previous_agent_id"].clone(), outputs[1]["next_agent_name"].clone()),
            (json!("ag_a"), json!("B"))
        );
    }

    #[test]
    fn a_failure_folds_into_the_same_error_a_request_would_get() {
        let fold = folded(&[
            delta(0, "msg_1", "partial"),
            RunEvent::Failed {
                message: "slow".into(),
                code: 504,
                created_at: Timestamp::from_micros(1),
                error: Code::UpstreamTimeout,
            },
        ]);

        match fold.into_response() {
            Err(error) => {
                assert_eq!(error.code(), Code::UpstreamTimeout);
                assert_eq!(error.to_string(), "slow");
            }
            Ok(response) => panic!("a failed run answered {response:?}"),
        }
    }

    #[test]
    fn a_chunk_turns_the_content_into_a_chunk_list_with_adjacent_text_merged() {
        let reference = json!({"type": "tool_reference", "tool": "web_search", "title": "T"});
        let mut chunk_delta = delta(0, "msg_1", "");
        if let RunEvent::MessageDelta { content, .. } = &mut chunk_delta {
            *content = DeltaContent::Chunk(reference.clone());
        }
        let fold = folded(&[
            delta(0, "msg_1", "Spain"),
            delta(0, "msg_1", " won"),
            chunk_delta,
            delta(0, "msg_1", "."),
            delta(0, "msg_1", "!"),
        ]);

        let outputs = serde_json::to_value(&fold.outputs).unwrap();
        assert_eq!(
            outputs[0]["content"],
            json!([{"type": "text", "text": "Spain won"}, reference, {"type": "text", "text": ".!"}])
        );
    }

    #[test]
    fn a_run_that_never_finished_is_not_a_response() {
        let fold = folded(&[delta(0, "msg_1", "x")]);

        assert!(matches!(fold.into_response(), Err(Error::Internal(_))));
    }
}
