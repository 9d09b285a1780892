//! Conversation entries and content chunks (the official SDKs' entries and chunks contract): the six entry
//! types as stored and returned, and the validation of entries clients send as `inputs`.

use super::chunks::{self, MessageInputContent, MessageInputContentChunks, MessageOutputContent};
use super::ids::{generate_tool_call_id, EntryId};
use super::shared_fields;
use super::time::Timestamp;
use crate::error::{decode_value, Error, FieldError, Loc, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `content` of a message: a plain string, or a list of chunks. Chunks are kept as JSON
/// (checked on the way in, see [`chunks`]) because palaver passes them through rather than
/// interpreting them; fields document them with the union of the chunks their place takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Chunks(Vec<Value>),
}

impl Content {
    /// The text of the message: the string, or its `text` chunks joined.
    pub fn text(&self) -> String {
        match self {
            Content::Text(text) => text.clone(),
            Content::Chunks(chunks) => chunks
                .iter()
                .filter(|c| c["type"] == "text")
                .filter_map(|c| c["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// The `object: "entry"` every entry carries (required by the strictest SDK readers). A
/// field of its own, so entries serialize directly instead of through a JSON map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryObject;

impl Serialize for EntryObject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str("entry")
    }
}

impl<'de> Deserialize<'de> for EntryObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(EntryObject)
    }
}

shared_fields! {
    // What every entry opens with, in wire order.
    head {
        #[serde(default)]
        #[schema(value_type = String, pattern = "^entry$", required = true)]
        pub object: EntryObject,
        #[schema(value_type = String)]
        pub id: EntryId,
        #[schema(value_type = String)]
        pub created_at: Timestamp,
        #[schema(value_type = Option<String>)]
        pub completed_at: Option<Timestamp>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    #[schema(as = MessageInputEntry)]
    pub struct MessageInput {
        pub role: String,
        #[schema(value_type = MessageInputContent, inline)]
        pub content: Content,
        #[serde(default)]
        pub prefix: bool,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    #[schema(as = MessageOutputEntry)]
    pub struct MessageOutput {
        #[serde(default = "assistant")]
        pub role: String,
        #[schema(value_type = MessageOutputContent, inline)]
        pub content: Content,
        pub agent_id: Option<String>,
        pub model: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    #[schema(as = FunctionCallEntry)]
    pub struct FunctionCall {
        pub tool_call_id: String,
        pub name: String,
        /// Always a JSON-encoded string, as the hosted API sends it.
        pub arguments: String,
        pub agent_id: Option<String>,
        pub model: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub confirmation_status: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    #[schema(as = FunctionResultEntry)]
    pub struct FunctionResult {
        pub tool_call_id: String,
        pub result: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    #[schema(as = ToolExecutionEntry)]
    pub struct ToolExecution {
        pub name: String,
        pub arguments: String,
        #[serde(default)]
        #[schema(value_type = Object)]
        pub info: Map<String, Value>,
        pub agent_id: Option<String>,
        pub model: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
    #[schema(as = AgentHandoffEntry)]
    pub struct AgentHandoff {
        pub previous_agent_id: String,
        pub previous_agent_name: String,
        pub next_agent_id: String,
        pub next_agent_name: String,
    }
}

fn assistant() -> String {
    "assistant".to_owned()
}

/// palaver's `tool.execution.info` for a run of a server-side tool: the model's
/// `tool_call_id`, the tool's `output`, and `is_error` when the tool reported a failure.
/// Written here and read back by the methods below, nowhere else.
pub fn execution_info(tool_call_id: &str, output: &str, is_error: bool) -> Map<String, Value> {
    let mut info = Map::new();
    info.insert("tool_call_id".into(), Value::from(tool_call_id));
    info.insert("output".into(), Value::from(output));
    if is_error {
        info.insert("is_error".into(), Value::Bool(true));
    }
    info
}

impl ToolExecution {
    /// The model's id for the call this run answers.
    pub fn tool_call_id(&self) -> Option<&str> {
        self.info.get("tool_call_id").and_then(Value::as_str)
    }

    /// The function the model called: `info.function` when it differs from the entry's
    /// `name` (a built-in tool's entry is named by its type, e.g. `web_search_premium`
    /// for a `news_search` call).
    pub fn function_name(&self) -> &str {
        self.info.get("function").and_then(Value::as_str).unwrap_or(&self.name)
    }

    /// What the tool returned, as the model reads it.
    pub fn output(&self) -> std::borrow::Cow<'_, str> {
        match self.info.get("output") {
            Some(Value::String(text)) => std::borrow::Cow::Borrowed(text),
            Some(other) => std::borrow::Cow::Owned(other.to_string()),
            None => std::borrow::Cow::Borrowed(""),
        }
    }
}

/// One entry of a conversation, as stored and as every endpoint returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type")]
pub enum Entry {
    #[serde(rename = "message.input")]
    MessageInput(MessageInput),
    #[serde(rename = "message.output")]
    MessageOutput(MessageOutput),
    #[serde(rename = "function.call")]
    FunctionCall(FunctionCall),
    #[serde(rename = "function.result")]
    FunctionResult(FunctionResult),
    #[serde(rename = "tool.execution")]
    ToolExecution(ToolExecution),
    #[serde(rename = "agent.handoff")]
    AgentHandoff(AgentHandoff),
}

impl Entry {
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::MessageInput(_) => "message.input",
            Entry::MessageOutput(_) => "message.output",
            Entry::FunctionCall(_) => "function.call",
            Entry::FunctionResult(_) => "function.result",
            Entry::ToolExecution(_) => "tool.execution",
            Entry::AgentHandoff(_) => "agent.handoff",
        }
    }

    pub fn id(&self) -> &EntryId {
        match self {
            Entry::MessageInput(e) => &e.id,
            Entry::MessageOutput(e) => &e.id,
            Entry::FunctionCall(e) => &e.id,
            Entry::FunctionResult(e) => &e.id,
            Entry::ToolExecution(e) => &e.id,
            Entry::AgentHandoff(e) => &e.id,
        }
    }

    pub fn created_at(&self) -> Timestamp {
        match self {
            Entry::MessageInput(e) => e.created_at,
            Entry::MessageOutput(e) => e.created_at,
            Entry::FunctionCall(e) => e.created_at,
            Entry::FunctionResult(e) => e.created_at,
            Entry::ToolExecution(e) => e.created_at,
            Entry::AgentHandoff(e) => e.created_at,
        }
    }

    /// Entries that `/messages` lists.
    pub fn is_message(&self) -> bool {
        matches!(self, Entry::MessageInput(_) | Entry::MessageOutput(_))
    }
}

// ---------------------------------------------------------------------------------------
// Inputs: what clients send in `inputs`.

/// `inputs` of a start/append/restart body: a string (one user message) or entries.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged, expecting = "a string or a list of entries")]
pub enum Inputs {
    Text(String),
    Entries(Vec<Value>),
}

/// The fields any accepted input entry may carry. Decoded flat (not as a tagged enum) so a
/// 422 names the exact field; server-assigned fields (`id`, `created_at`, …) are accepted
/// and ignored, because clients replay entries they received.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputEntryWire {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default, rename = "id")]
    _id: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "completed_at")]
    _completed_at: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    prefix: Option<bool>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    confirmation_status: Option<String>,
}

const INPUT_TYPES: [&str; 4] = ["message.input", "message.output", "function.call", "function.result"];

fn at(base: &[Loc], field: &str) -> Vec<Loc> {
    let mut path = base.to_vec();
    path.push(field.into());
    path
}

fn missing(base: &[Loc], field: &str) -> FieldError {
    FieldError::body(&at(base, field), "missing", "Field required")
}

/// A required string field of an input entry: its value, or a `missing` error recorded.
fn required(value: &Option<String>, base: &[Loc], field: &str, errors: &mut Vec<FieldError>) -> String {
    value.clone().unwrap_or_else(|| {
        errors.push(missing(base, field));
        String::new()
    })
}

impl Inputs {
    /// The input entries, stamped with fresh ids, or every problem found. `base` is the
    /// location of `inputs` in the body.
    pub fn into_entries(self, now: Timestamp) -> Result<Vec<Entry>> {
        let base: Vec<Loc> = vec!["inputs".into()];
        match self {
            Inputs::Text(text) => Ok(vec![Entry::MessageInput(MessageInput {
                object: EntryObject,
                id: EntryId::generate("msg_"),
                created_at: now,
                completed_at: None,
                role: "user".to_owned(),
                content: Content::Text(text),
                prefix: false,
            })]),
            Inputs::Entries(values) => {
                let mut entries = Vec::with_capacity(values.len());
                let mut errors = Vec::new();
                for (index, value) in values.into_iter().enumerate() {
                    let mut path = base.clone();
                    path.push(index.into());
                    match input_entry(value, &path, now) {
                        Ok(entry) => entries.push(entry),
                        Err(Error::Invalid(mut found)) => errors.append(&mut found),
                        Err(other) => return Err(other),
                    }
                }
                if errors.is_empty() {
                    Ok(entries)
                } else {
                    Err(Error::Invalid(errors))
                }
            }
        }
    }
}

fn input_entry(value: Value, path: &[Loc], now: Timestamp) -> Result<Entry> {
    // Reject server-produced entry types by name before field checks, for a clear message.
    if let Some(kind) = value.get("type").and_then(Value::as_str) {
        if !INPUT_TYPES.contains(&kind) {
            let msg = format!(
                "Entries of type `{kind}` are produced by the server and cannot be sent as inputs; \
                 send `message.input`, `message.output`, `function.call` or `function.result`"
            );
            return Err(Error::invalid(FieldError::body(&at(path, "type"), "enum", msg)));
        }
    }
    let mut prefix = vec![Loc::from("body")];
    prefix.extend_from_slice(path);
    let wire: InputEntryWire = decode_value(&prefix, value)?;
    if let Some(object) = &wire.object {
        if object != "entry" {
            let msg = format!("Input should be `entry`, got `{object}`");
            return Err(Error::invalid(FieldError::body(&at(path, "object"), "literal_error", msg)));
        }
    }
    // Untyped entries are matched structurally, as the SDKs do.
    let kind = wire.kind.clone().unwrap_or_else(|| {
        if wire.tool_call_id.is_some() && wire.result.is_some() {
            "function.result".to_owned()
        } else if wire.tool_call_id.is_some() {
            "function.call".to_owned()
        } else {
            "message.input".to_owned()
        }
    });
    let mut errors = Vec::new();
    let entry = match kind.as_str() {
        "message.input" => {
            let role = wire.role.clone().unwrap_or_default();
            if wire.role.is_none() {
                errors.push(missing(path, "role"));
            } else if role != "user" && role != "assistant" {
                let msg = format!("Input should be `user` or `assistant`, got `{role}`");
                errors.push(FieldError::body(&at(path, "role"), "literal_error", msg));
            }
            let content = check_content(&wire.content, path, &mut errors);
            let is_prefix = wire.prefix.unwrap_or(false);
            if is_prefix && role != "assistant" {
                let msg = "Only an `assistant` message can be a `prefix`";
                errors.push(FieldError::body(&at(path, "prefix"), "value_error", msg));
            }
            Entry::MessageInput(MessageInput {
                object: EntryObject,
                id: EntryId::generate("msg_"),
                created_at: now,
                completed_at: None,
                role,
                content,
                prefix: is_prefix,
            })
        }
        "message.output" => {
            if let Some(role) = wire.role.as_deref().filter(|r| *r != "assistant") {
                let msg = format!("Input should be `assistant`, got `{role}`");
                errors.push(FieldError::body(&at(path, "role"), "literal_error", msg));
            }
            let content = check_content(&wire.content, path, &mut errors);
            Entry::MessageOutput(MessageOutput {
                object: EntryObject,
                id: EntryId::generate("msg_"),
                created_at: now,
                completed_at: Some(now),
                role: "assistant".to_owned(),
                content,
                agent_id: wire.agent_id.clone(),
                model: wire.model.clone(),
            })
        }
        "function.call" => {
            let name = required(&wire.name, path, "name", &mut errors);
            let arguments = match &wire.arguments {
                Some(Value::String(text)) => text.clone(),
                Some(other @ Value::Object(_)) => other.to_string(),
                Some(_) => {
                    let msg = "Input should be a JSON string or an object";
                    errors.push(FieldError::body(&at(path, "arguments"), "type_error", msg));
                    String::new()
                }
                None => {
                    errors.push(missing(path, "arguments"));
                    String::new()
                }
            };
            Entry::FunctionCall(FunctionCall {
                object: EntryObject,
                id: EntryId::generate("fc_"),
                created_at: now,
                completed_at: None,
                tool_call_id: wire.tool_call_id.clone().unwrap_or_else(generate_tool_call_id),
                name,
                arguments,
                agent_id: wire.agent_id.clone(),
                model: wire.model.clone(),
                confirmation_status: wire.confirmation_status.clone(),
            })
        }
        "function.result" => {
            let tool_call_id = required(&wire.tool_call_id, path, "tool_call_id", &mut errors);
            let result = required(&wire.result, path, "result", &mut errors);
            Entry::FunctionResult(FunctionResult {
                object: EntryObject,
                id: EntryId::generate("fr_"),
                created_at: now,
                completed_at: None,
                tool_call_id,
                result,
            })
        }
        other => {
            let msg =
                format!("Input should be one of {}, got `{other}`", INPUT_TYPES.map(|t| format!("`{t}`")).join(", "));
            errors.push(FieldError::body(&at(path, "type"), "enum", msg));
            return Err(Error::Invalid(errors));
        }
    };
    if errors.is_empty() {
        Ok(entry)
    } else {
        Err(Error::Invalid(errors))
    }
}

fn check_content(content: &Option<Content>, path: &[Loc], errors: &mut Vec<FieldError>) -> Content {
    match content {
        None => {
            errors.push(missing(path, "content"));
            Content::Text(String::new())
        }
        Some(Content::Chunks(chunks)) => {
            // A `message.output` sent back keeps to the input chunks: citations
            // (`tool_reference`) are the server's to make.
            chunks::check(chunks, &at(path, "content"), MessageInputContentChunks::KINDS, errors);
            Content::Chunks(chunks.clone())
        }
        Some(text) => text.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(inputs: Value) -> Result<Vec<Entry>> {
        let inputs: Inputs = serde_json::from_value(inputs).unwrap();
        inputs.into_entries(Timestamp::now())
    }

    fn first_error(inputs: Value) -> FieldError {
        match parse(inputs) {
            Err(Error::Invalid(mut errors)) => errors.remove(0),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_string_is_one_user_message() {
        let entries = parse(json!("Who is Albert Einstein?")).unwrap();

        let Entry::MessageInput(message) = &entries[0] else { panic!("{entries:?}") };
        assert_eq!(message.role, "user");
        assert_eq!(message.content, Content::Text("Who is Albert Einstein?".into()));
        assert!(message.id.as_str().starts_with("msg_"));
    }

    #[test]
    fn untyped_entries_are_matched_by_their_fields() {
        let entries = parse(json!([
            {"role": "user", "content": "hi"},
            {"tool_call_id": "abc", "result": "42"}
        ]))
        .unwrap();

        assert_eq!(entries[0].kind(), "message.input");
        assert_eq!(entries[1].kind(), "function.result");
    }

    #[test]
    fn server_only_entry_types_are_rejected_as_inputs() {
        let error = first_error(json!([{"type": "tool.execution", "name": "web_search", "arguments": "{}"}]));

        assert_eq!(error.field_name(), "inputs.0.type");
    }

    #[test]
    fn a_function_result_needs_its_tool_call_id() {
        let error = first_error(json!([{"type": "function.result", "result": "42"}]));

        assert_eq!(error.kind, "missing");
        assert_eq!(error.field_name(), "inputs.0.tool_call_id");
    }

    #[test]
    fn unknown_fields_and_chunk_types_are_located() {
        let unknown = first_error(json!([{"role": "user", "content": "x", "colour": 1}]));
        let chunk = first_error(json!([{"role": "user", "content": [{"type": "video", "url": "x"}]}]));

        assert_eq!(unknown.field_name(), "inputs.0.colour");
        assert_eq!(chunk.field_name(), "inputs.0.content.0.type");
    }

    #[test]
    fn a_chunk_is_checked_in_the_shape_of_its_type() {
        let error = first_error(json!([{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]));

        assert_eq!(error.field_name(), "inputs.0.content.0.image_url");
    }

    #[test]
    fn entries_serialize_with_object_and_type() {
        let entries = parse(json!("hi")).unwrap();

        let json = serde_json::to_value(&entries[0]).unwrap();

        assert_eq!(json["object"], "entry");
        assert_eq!(json["type"], "message.input");
        assert_eq!(json["completed_at"], Value::Null);
        let back: Entry = serde_json::from_value(json).unwrap();
        assert_eq!(back, entries[0]);
    }
}
