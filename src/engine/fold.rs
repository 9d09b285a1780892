//! Folds a run's events into the entries and usage they describe. The run loop folds its
//! own events to know what to store, and the non-streaming endpoints fold the same events
//! into their response: stored history, JSON response and SSE stream agree by construction.

use crate::domain::conversations::{ConversationResponse, Usage};
use crate::domain::entries::{AgentHandoff, Content, Entry, EntryObject, FunctionCall, MessageOutput, ToolExecution};
use crate::domain::events::RunEvent;
use crate::domain::ids::ConversationId;
use crate::error::{Code, Error};

#[derive(Debug, Default)]
pub struct Fold {
    pub conversation_id: Option<ConversationId>,
    pub outputs: Vec<Entry>,
    pub usage: Usage,
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
                    if let Content::Text(text) = &mut message.content {
                        text.push_str(content);
                    }
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
                self.usage = Usage {
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                    total_tokens: usage.total_tokens,
                };
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
                usage: self.usage.into(),
            }),
            _ => Err(Error::Internal(anyhow::anyhow!("the run ended without a result"))),
        }
    }
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
