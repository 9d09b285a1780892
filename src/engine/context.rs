//! Builds the model's view of a conversation: instructions as the system message, then the
//! entries mapped to chat messages (`message.input` → user, or assistant with `prefix`;
//! `message.output` → assistant; `function.call` → assistant tool call; `function.result`
//! → tool message; `tool.execution` → the call and its answer).

use crate::backends::chat::{ChatMessage, ChatTool, FunctionCallBody, ToolCall, ToolFunction};
use crate::domain::entries::{Content, Entry};
use crate::domain::tools::{Tool, ToolType};
use std::borrow::Cow;
use std::collections::HashMap;

/// The messages borrow the entries' text; only content that must be reshaped (chunks
/// flattened to text for assistant turns) is copied.
pub fn messages<'a>(
    instructions: Option<&'a str>,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Vec<ChatMessage<'a>> {
    let mut messages = Vec::new();
    if let Some(instructions) = instructions.filter(|i| !i.trim().is_empty()) {
        messages.push(ChatMessage::System { content: Cow::Borrowed(instructions) });
    }
    // Tool messages repeat the function's name, which only the call entry holds.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for entry in entries {
        match entry {
            Entry::MessageInput(input) if input.role == "assistant" => messages.push(ChatMessage::Assistant {
                content: Some(as_text(&input.content)),
                tool_calls: Vec::new(),
                prefix: input.prefix,
            }),
            Entry::MessageInput(input) => messages.push(ChatMessage::User { content: Cow::Borrowed(&input.content) }),
            Entry::MessageOutput(output) => messages.push(ChatMessage::Assistant {
                // Assistant turns go back as plain text: citation and file chunks are for
                // the client, and not every upstream accepts them in assistant messages.
                content: Some(as_text(&output.content)),
                tool_calls: Vec::new(),
                prefix: false,
            }),
            Entry::FunctionCall(call) => {
                call_names.insert(&call.tool_call_id, &call.name);
                push_tool_call(&mut messages, &call.tool_call_id, &call.name, &call.arguments);
            }
            Entry::FunctionResult(result) => messages.push(ChatMessage::Tool {
                tool_call_id: Cow::Borrowed(&result.tool_call_id),
                name: Cow::Borrowed(call_names.get(result.tool_call_id.as_str()).copied().unwrap_or_default()),
                content: Cow::Borrowed(&result.result),
            }),
            // A server-side run is the model's call and the tool's answer in one entry. A
            // run confirmed by the client answers a `function.call` already in the history.
            Entry::ToolExecution(execution) => {
                let tool_call_id = execution.tool_call_id().unwrap_or_default();
                let output = execution.output();
                if !call_names.contains_key(tool_call_id) {
                    push_tool_call(&mut messages, tool_call_id, &execution.name, &execution.arguments);
                }
                messages.push(ChatMessage::Tool {
                    tool_call_id: Cow::Borrowed(tool_call_id),
                    name: Cow::Borrowed(&execution.name),
                    content: output,
                });
            }
            // Handoffs reach the model through the messages around them.
            Entry::AgentHandoff(_) => {}
        }
    }
    messages
}

/// Content as plain text: borrowed when it already is text.
fn as_text(content: &Content) -> Cow<'_, Content> {
    match content {
        Content::Text(_) => Cow::Borrowed(content),
        Content::Chunks(_) => Cow::Owned(Content::Text(content.text())),
    }
}

/// Calls made in one answer (after its text, or in parallel) form one assistant message,
/// as the model produced them.
fn push_tool_call<'a>(messages: &mut Vec<ChatMessage<'a>>, id: &'a str, name: &'a str, arguments: &'a str) {
    let tool_call = ToolCall {
        id: Cow::Borrowed(id),
        kind: "function",
        function: FunctionCallBody { name: Cow::Borrowed(name), arguments: Cow::Borrowed(arguments) },
    };
    match messages.last_mut() {
        Some(ChatMessage::Assistant { tool_calls, prefix: false, .. }) => tool_calls.push(tool_call),
        _ => messages.push(ChatMessage::Assistant { content: None, tool_calls: vec![tool_call], prefix: false }),
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

        let messages = serde_json::to_value(messages(Some("Be brief."), &entries)).unwrap();

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
}
