//! Builds the model's view of a conversation: instructions as the system message, then the
//! entries mapped to chat messages (`message.input` → user, or assistant with `prefix`;
//! `message.output` → assistant; `function.call` → assistant tool call; `function.result`
//! → tool message; `tool.execution` → the call and its answer).

use crate::backends::chat::{ChatMessage, ChatTool, FunctionCallBody, ToolCall, ToolFunction};
use crate::domain::entries::{Content, Entry};
use crate::domain::ids::tool_call_id_of;
use crate::domain::tools::{Tool, ToolType};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// The model's view of a turn.
pub struct Context<'a> {
    pub messages: Vec<ChatMessage<'a>>,
    /// Where the stored history's messages go in `messages` when they were left out (see
    /// `ChatRequest::stored`); `None` when they are in it, because an entry of the turn
    /// joined the last of them (a call made in the history's last assistant message).
    pub stored_at: Option<usize>,
}

/// The messages of a turn: the system message, the stored `history`, then `rest` (the
/// turn's inputs and outputs so far). They borrow the entries' text; only content that
/// must be reshaped (chunks flattened to text for assistant turns) is copied.
pub fn messages<'a, I>(instructions: Option<&'a str>, history: &'a [Arc<Entry>], rest: I) -> Context<'a>
where
    I: IntoIterator<Item = &'a Entry> + Clone,
{
    let mut messages = Vec::new();
    if let Some(instructions) = instructions.filter(|i| !i.trim().is_empty()) {
        messages.push(ChatMessage::System { content: Cow::Borrowed(instructions) });
    }
    let at = messages.len();
    if let Some(after) = messages_after(history, rest.clone()) {
        messages.extend(after);
        return Context { messages, stored_at: Some(at) };
    }
    let mut builder = Builder::new(&[]);
    builder.messages = messages;
    for entry in history.iter().map(|e| e.as_ref()).chain(rest) {
        builder.push(entry);
    }
    Context { messages: builder.messages, stored_at: None }
}

/// The messages of a stored history on its own.
pub fn history_messages(history: &[Arc<Entry>]) -> Vec<ChatMessage<'_>> {
    let mut builder = Builder::new(&[]);
    for entry in history {
        builder.push(entry);
    }
    builder.messages
}

/// The messages `turn` adds after `history`'s, or `None` when its first one joins the
/// history's last message.
pub fn messages_after<'a>(
    history: &'a [Arc<Entry>],
    turn: impl IntoIterator<Item = &'a Entry>,
) -> Option<Vec<ChatMessage<'a>>> {
    let mut builder = Builder::new(history);
    // The history's last message decides whether a call in the turn joins it.
    if let Some(last) = history.last() {
        builder.push(last);
    }
    let seeded = builder.messages.len();
    builder.sealed = seeded;
    for entry in turn {
        builder.push(entry);
    }
    (!builder.joined_sealed).then(|| builder.messages.split_off(seeded))
}

struct Builder<'a> {
    messages: Vec<ChatMessage<'a>>,
    /// Tool messages repeat the function's name, which only the call entry holds.
    call_names: HashMap<&'a str, &'a str>,
    /// Entries before the ones pushed, searched for calls `call_names` has not seen.
    earlier: &'a [Arc<Entry>],
    /// Messages before this index are stored; joining one is recorded.
    sealed: usize,
    joined_sealed: bool,
}

impl<'a> Builder<'a> {
    fn new(earlier: &'a [Arc<Entry>]) -> Self {
        Builder { messages: Vec::new(), call_names: HashMap::new(), earlier, sealed: 0, joined_sealed: false }
    }

    /// The name of the function call `tool_call_id`, if the conversation has one.
    fn call_name(&self, tool_call_id: &str) -> Option<&'a str> {
        if let Some(name) = self.call_names.get(tool_call_id) {
            return Some(name);
        }
        self.earlier.iter().rev().find_map(|entry| match entry.as_ref() {
            Entry::FunctionCall(call) if call.tool_call_id == tool_call_id => Some(call.name.as_str()),
            _ => None,
        })
    }

    fn push(&mut self, entry: &'a Entry) {
        match entry {
            Entry::MessageInput(input) if input.role == "assistant" => self.messages.push(ChatMessage::Assistant {
                content: Some(as_text(&input.content)),
                tool_calls: Vec::new(),
                prefix: input.prefix,
            }),
            Entry::MessageInput(input) => {
                self.messages.push(ChatMessage::User { content: Cow::Borrowed(&input.content) })
            }
            Entry::MessageOutput(output) => self.messages.push(ChatMessage::Assistant {
                // Assistant turns go back as plain text: citation and file chunks are for
                // the client, and not every upstream accepts them in assistant messages.
                content: Some(as_text(&output.content)),
                tool_calls: Vec::new(),
                prefix: false,
            }),
            Entry::FunctionCall(call) => {
                self.call_names.insert(&call.tool_call_id, &call.name);
                self.push_tool_call(
                    Cow::Borrowed(&call.tool_call_id),
                    Cow::Borrowed(&call.name),
                    Cow::Borrowed(&call.arguments),
                );
            }
            Entry::FunctionResult(result) => {
                let name = self.call_name(&result.tool_call_id).unwrap_or_default();
                self.messages.push(ChatMessage::Tool {
                    tool_call_id: Cow::Borrowed(&result.tool_call_id),
                    name: Cow::Borrowed(name),
                    content: Cow::Borrowed(&result.result),
                })
            }
            // A server-side run is the model's call and the tool's answer in one entry. A
            // run confirmed by the client answers a `function.call` already in the history.
            Entry::ToolExecution(execution) => {
                let tool_call_id = execution.tool_call_id().unwrap_or_default();
                let output = execution.output();
                let name = execution.function_name();
                if self.call_name(tool_call_id).is_none() {
                    self.push_tool_call(
                        Cow::Borrowed(tool_call_id),
                        Cow::Borrowed(name),
                        Cow::Borrowed(&execution.arguments),
                    );
                }
                self.messages.push(ChatMessage::Tool {
                    tool_call_id: Cow::Borrowed(tool_call_id),
                    name: Cow::Borrowed(name),
                    content: output,
                });
            }
            // The next agent sees the handoff as the call it was, answered by the transfer.
            Entry::AgentHandoff(handoff) => {
                let tool_call_id = tool_call_id_of(&handoff.id);
                let name = handoff_function(&handoff.next_agent_id);
                self.push_tool_call(Cow::Owned(tool_call_id.clone()), Cow::Owned(name.clone()), Cow::Borrowed("{}"));
                self.messages.push(ChatMessage::Tool {
                    tool_call_id: Cow::Owned(tool_call_id),
                    name: Cow::Owned(name),
                    content: Cow::Owned(handoff_answer(&handoff.next_agent_name, &handoff.next_agent_id)),
                });
            }
        }
    }

    /// Calls made in one answer (after its text, or in parallel) form one assistant
    /// message, as the model produced them.
    fn push_tool_call(&mut self, id: Cow<'a, str>, name: Cow<'a, str>, arguments: Cow<'a, str>) {
        let tool_call = ToolCall { id, kind: "function", function: FunctionCallBody { name, arguments } };
        let last = self.messages.len();
        match self.messages.last_mut() {
            Some(ChatMessage::Assistant { tool_calls, prefix: false, .. }) => {
                self.joined_sealed |= last <= self.sealed;
                tool_calls.push(tool_call)
            }
            _ => {
                self.messages.push(ChatMessage::Assistant { content: None, tool_calls: vec![tool_call], prefix: false })
            }
        }
    }
}

/// The function a handoff to `agent_id` is offered as.
pub fn handoff_function(agent_id: &str) -> String {
    format!("handoff_to_{agent_id}")
}

/// The tool answer the model reads for a handoff.
pub fn handoff_answer(agent_name: &str, agent_id: &str) -> String {
    format!("Transferred the conversation to agent `{agent_name}` ({agent_id}), which answers from here on.")
}

/// Content as plain text: borrowed when it already is text.
fn as_text(content: &Content) -> Cow<'_, Content> {
    match content {
        Content::Text(_) => Cow::Borrowed(content),
        Content::Chunks(_) => Cow::Owned(Content::Text(content.text())),
    }
}

/// The client functions offered to the model: the `function` tools (connector tools are
/// added by `tools::Toolbox`).
pub fn chat_tools(tools: &[Tool]) -> Vec<ChatTool<'_>> {
    tools
        .iter()
        .filter(|tool| tool.kind == ToolType::Function)
        .filter_map(|tool| tool.function.as_ref())
        .map(|function| ChatTool {
            kind: "function",
            function: ToolFunction {
                name: Cow::Borrowed(&function.name),
                description: function.description.as_deref().map(Cow::Borrowed),
                parameters: Cow::Borrowed(&function.parameters),
                strict: function.strict,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::entries::{EntryObject, FunctionCall, FunctionResult, MessageInput, MessageOutput};
    use crate::domain::ids::EntryId;
    use crate::domain::time::Timestamp;
    use serde_json::json;

    fn input(role: &str, text: &str) -> Entry {
        Entry::MessageInput(MessageInput {
            object: EntryObject,
            id: EntryId("msg_1".into()),
            created_at: Timestamp::now(),
            completed_at: None,
            role: role.into(),
            content: Content::Text(text.into()),
            prefix: false,
        })
    }

    #[test]
    fn a_function_round_trip_maps_to_assistant_tool_calls_and_a_tool_message() {
        let now = Timestamp::now();
        let entries = vec![
            input("user", "weather?"),
            Entry::MessageOutput(MessageOutput {
                object: EntryObject,
                id: EntryId("msg_2".into()),
                created_at: now,
                completed_at: Some(now),
                role: "assistant".into(),
                content: Content::Text("Let me check.".into()),
                agent_id: None,
                model: None,
            }),
            Entry::FunctionCall(FunctionCall {
                object: EntryObject,
                id: EntryId("fc_1".into()),
                created_at: now,
                completed_at: None,
                tool_call_id: "abc".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
                agent_id: None,
                model: None,
                confirmation_status: None,
            }),
            Entry::FunctionResult(FunctionResult {
                object: EntryObject,
                id: EntryId("fr_1".into()),
                created_at: now,
                completed_at: None,
                tool_call_id: "abc".into(),
                result: "21C".into(),
            }),
        ];

        let messages = serde_json::to_value(messages(Some("Be brief."), &[], &entries).messages).unwrap();

        assert_eq!(
            messages,
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "abc", "name": "get_weather", "content": "21C"}
            ])
        );
    }

    fn call(id: &str, tool_call_id: &str) -> Entry {
        Entry::FunctionCall(FunctionCall {
            object: EntryObject,
            id: EntryId(id.into()),
            created_at: Timestamp::now(),
            completed_at: None,
            tool_call_id: tool_call_id.into(),
            name: "get_weather".into(),
            arguments: "{}".into(),
            agent_id: None,
            model: None,
            confirmation_status: None,
        })
    }

    fn result(tool_call_id: &str) -> Entry {
        Entry::FunctionResult(FunctionResult {
            object: EntryObject,
            id: EntryId("fr".into()),
            created_at: Timestamp::now(),
            completed_at: None,
            tool_call_id: tool_call_id.into(),
            result: "21C".into(),
        })
    }

    fn stored(entries: Vec<Entry>) -> Vec<Arc<Entry>> {
        entries.into_iter().map(Arc::new).collect()
    }

    #[test]
    fn a_turn_adds_the_messages_it_would_have_after_the_whole_history() {
        let history = stored(vec![input("user", "weather?"), call("fc_1", "abc")]);
        let turn = vec![result("abc"), input("user", "thanks")];

        let context = messages(Some("Be brief."), &history, &turn);

        assert_eq!(context.stored_at, Some(1));
        let mut all = context.messages.clone();
        all.splice(1..1, history_messages(&history));
        let whole: Vec<Entry> = history.iter().map(|e| e.as_ref().clone()).chain(turn.clone()).collect();
        assert_eq!(all, messages(Some("Be brief."), &[], &whole).messages);
        // The tool message found its function's name in the history.
        assert!(matches!(&context.messages[1], ChatMessage::Tool { name, .. } if name == "get_weather"));
    }

    #[test]
    fn a_call_joining_the_last_stored_message_brings_the_history_in() {
        let history = stored(vec![input("user", "weather?"), call("fc_1", "abc")]);
        let turn = vec![call("fc_2", "def")];

        let joined = messages(None, &history, &turn);

        assert_eq!(joined.stored_at, None);
        assert!(matches!(&joined.messages[1], ChatMessage::Assistant { tool_calls, .. } if tool_calls.len() == 2));
        assert!(messages_after(&history, &turn).is_none());
        // A call after a tool message starts a message of its own.
        let answered = stored(vec![input("user", "weather?"), call("fc_1", "abc"), result("abc")]);
        assert_eq!(messages(None, &answered, &turn).stored_at, Some(0));
        assert_eq!(messages_after(&answered, &turn).map(|m| m.len()), Some(1));
    }

    fn handoff(id: &str) -> Entry {
        serde_json::from_value(json!({"type": "agent.handoff", "id": id, "created_at": "2026-01-01T00:00:00Z",
            "completed_at": null, "previous_agent_id": "ag_a", "previous_agent_name": "A",
            "next_agent_id": "ag_b", "next_agent_name": "B"}))
        .unwrap()
    }

    #[test]
    fn a_handoff_reads_as_the_call_it_was_and_the_transfer_as_its_answer_joining_the_words_before_it() {
        let said = Entry::MessageOutput(MessageOutput {
            object: EntryObject,
            id: EntryId("msg_2".into()),
            created_at: Timestamp::now(),
            completed_at: None,
            role: "assistant".into(),
            content: Content::Text("One moment.".into()),
            agent_id: Some("ag_a".into()),
            model: None,
        });
        let entries = [input("user", "invoice"), said, handoff("handoff_0123456789abcdef")];

        let context = messages(None, &[], entries.iter());

        let json = serde_json::to_value(&context.messages).unwrap();
        assert_eq!(json[1]["content"], "One moment.");
        assert_eq!(json[1]["tool_calls"][0]["id"], "789abcdef", "the entry id's last 9 characters, every time");
        assert_eq!(json[1]["tool_calls"][0]["function"]["name"], "handoff_to_ag_b");
        assert_eq!(json[2]["role"], "tool");
        assert_eq!(json[2]["tool_call_id"], "789abcdef");
        assert_eq!(json[2]["content"], handoff_answer("B", "ag_b"));
    }

    #[test]
    fn a_turn_after_a_stored_handoff_adds_only_its_own_messages() {
        let history = stored(vec![input("user", "invoice"), handoff("handoff_0123456789abcdef")]);
        let turn = [input("user", "thanks")];

        let added = messages_after(&history, turn.iter()).expect("a new message joins nothing");

        assert_eq!(serde_json::to_value(&added).unwrap(), json!([{"role": "user", "content": "thanks"}]));
    }
}
