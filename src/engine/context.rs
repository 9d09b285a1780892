//! Builds the model's view of a conversation: instructions as the system message, then the
//! entries mapped to chat messages (`message.input` → user, or assistant with `prefix`;
//! `message.output` → assistant; `function.call` → assistant tool call; `function.result`
//! → tool message).

use crate::backends::chat::{ChatMessage, ChatTool, FunctionCallBody, ToolCall, ToolFunction};
use crate::domain::entries::{Content, Entry};
use crate::domain::tools::{Tool, ToolType};
use std::collections::HashMap;

pub fn messages<'a>(instructions: Option<&str>, entries: impl IntoIterator<Item = &'a Entry>) -> Vec<ChatMessage> {
    let mut messages = Vec::new();
    if let Some(instructions) = instructions.filter(|i| !i.trim().is_empty()) {
        messages.push(ChatMessage::System { content: instructions.to_owned() });
    }
    // Tool messages repeat the function's name, which only the call entry holds.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for entry in entries {
        match entry {
            Entry::MessageInput(input) if input.role == "assistant" => messages.push(ChatMessage::Assistant {
                content: Some(Content::Text(input.content.text())),
                tool_calls: Vec::new(),
                prefix: input.prefix,
            }),
            Entry::MessageInput(input) => messages.push(ChatMessage::User { content: input.content.clone() }),
            Entry::MessageOutput(output) => messages.push(ChatMessage::Assistant {
                // Assistant turns go back as plain text: citation and file chunks are for
                // the client, and not every upstream accepts them in assistant messages.
                content: Some(Content::Text(output.content.text())),
                tool_calls: Vec::new(),
                prefix: false,
            }),
            Entry::FunctionCall(call) => {
                call_names.insert(&call.tool_call_id, &call.name);
                let tool_call = ToolCall {
                    id: call.tool_call_id.clone(),
                    kind: "function",
                    function: FunctionCallBody { name: call.name.clone(), arguments: call.arguments.clone() },
                };
                // Calls made in one answer (after its text, or in parallel) form one
                // assistant message, as the model produced them.
                match messages.last_mut() {
                    Some(ChatMessage::Assistant { tool_calls, prefix: false, .. }) => tool_calls.push(tool_call),
                    _ => messages.push(ChatMessage::Assistant {
                        content: None,
                        tool_calls: vec![tool_call],
                        prefix: false,
                    }),
                }
            }
            Entry::FunctionResult(result) => messages.push(ChatMessage::Tool {
                tool_call_id: result.tool_call_id.clone(),
                name: call_names.get(result.tool_call_id.as_str()).copied().unwrap_or_default().to_owned(),
                content: result.result.clone(),
            }),
            // Server-side tool runs and handoffs reach the model through the messages
            // around them; the connectors issue adds their own mapping.
            Entry::ToolExecution(_) | Entry::AgentHandoff(_) => {}
        }
    }
    messages
}

/// The functions offered to the model: the `function` tools. Built-in tools are offered
/// once a connector can run them.
pub fn chat_tools(tools: &[Tool]) -> Vec<ChatTool> {
    tools
        .iter()
        .filter(|tool| tool.kind == ToolType::Function)
        .filter_map(|tool| tool.function.as_ref())
        .map(|function| ChatTool {
            kind: "function",
            function: ToolFunction {
                name: function.name.clone(),
                description: function.description.clone(),
                parameters: function.parameters.clone(),
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
