//! Tool definitions (the official tool definitions). A tool is decoded as one flat
//! struct and then checked per `type`, instead of as an internally tagged enum: serde loses
//! the field path inside tagged enums, and a 422 must name the exact field.

use crate::error::{FieldError, Loc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolType {
    Function,
    WebSearch,
    WebSearchPremium,
    CodeInterpreter,
    ImageGeneration,
    DocumentLibrary,
    Connector,
}

impl ToolType {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolType::Function => "function",
            ToolType::WebSearch => "web_search",
            ToolType::WebSearchPremium => "web_search_premium",
            ToolType::CodeInterpreter => "code_interpreter",
            ToolType::ImageGeneration => "image_generation",
            ToolType::DocumentLibrary => "document_library",
            ToolType::Connector => "connector",
        }
    }
}

/// A tool of an agent or conversation, of any `type` (documented as `AgentTool`: `Tool`
/// is the official name of a completion request's tool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AgentTool)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: ToolType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<Function>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_configuration: Option<ToolConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Function {
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    pub name: String,
    // The SDKs reject `null` here in responses (TS turns the tool into "unknown"), so a
    // missing description is omitted and a missing `strict` is written as `false`.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub strict: Option<bool>,
    /// A JSON Schema object.
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_confirmation: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum AuthorizationType {
    #[serde(rename = "api-key")]
    ApiKey,
    #[serde(rename = "oauth2-token")]
    OAuth2Token,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(rename = "type")]
    pub kind: AuthorizationType,
    pub value: String,
}

impl Serialize for Function {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        if let Some(description) = &self.description {
            map.serialize_entry("description", description)?;
        }
        map.serialize_entry("strict", &self.strict.unwrap_or(false))?;
        map.serialize_entry("parameters", &self.parameters)?;
        map.end()
    }
}

/// Function names as the OpenAI-compatible chat APIs accept them: 1 to 64 of these.
pub const MAX_FUNCTION_NAME: usize = 64;

pub fn is_function_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_valid_function_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_FUNCTION_NAME && name.bytes().all(is_function_name_byte)
}

/// `name` made acceptable as a function name (other characters become `_`, cut to 64):
/// MCP servers may name tools `github.create_issue`, which chat APIs refuse.
pub fn function_name(name: &str) -> String {
    let mut out: String =
        name.bytes().take(MAX_FUNCTION_NAME).map(|b| if is_function_name_byte(b) { b as char } else { '_' }).collect();
    if out.is_empty() {
        out.push_str("tool");
    }
    out
}

impl Function {
    /// Checks that the name is one chat APIs accept; `at` is the function's location.
    pub fn check_name(&self, at: &[Loc], errors: &mut Vec<FieldError>) {
        if !is_valid_function_name(&self.name) {
            let mut path = at.to_vec();
            path.push("name".into());
            errors.push(FieldError::body(
                &path,
                "string_pattern_mismatch",
                "Function names are 1 to 64 characters among a-z, A-Z, 0-9, `_` and `-`",
            ));
        }
    }
}

impl Tool {
    /// Checks the fields that depend on `type`; `at` is the tool's location in the body.
    pub fn validate(&self, at: &[Loc], errors: &mut Vec<FieldError>) {
        let field = |name: &str| {
            let mut path = at.to_vec();
            path.push(name.into());
            path
        };
        let required = |present: bool, name: &str, errors: &mut Vec<FieldError>| {
            if !present {
                errors.push(FieldError::body(&field(name), "missing", "Field required"));
            }
        };
        let forbidden = |present: bool, name: &str, errors: &mut Vec<FieldError>| {
            if present {
                let msg = format!("Extra inputs are not permitted for a `{}` tool", self.kind.as_str());
                errors.push(FieldError::body(&field(name), "extra_forbidden", msg));
            }
        };
        let is_function = self.kind == ToolType::Function;
        let is_library = self.kind == ToolType::DocumentLibrary;
        let is_connector = self.kind == ToolType::Connector;
        required(!is_function || self.function.is_some(), "function", errors);
        forbidden(!is_function && self.function.is_some(), "function", errors);
        forbidden(is_function && self.tool_configuration.is_some(), "tool_configuration", errors);
        required(!is_library || self.library_ids.is_some(), "library_ids", errors);
        forbidden(!is_library && self.library_ids.is_some(), "library_ids", errors);
        required(!is_connector || self.connector_id.is_some(), "connector_id", errors);
        forbidden(!is_connector && self.connector_id.is_some(), "connector_id", errors);
        forbidden(!is_connector && self.authorization.is_some(), "authorization", errors);
        if let Some(function) = &self.function {
            function.check_name(&field("function"), errors);
        }
        if let Some(connector_id) = &self.connector_id {
            if connector_id.trim().is_empty() {
                errors.push(FieldError::body(&field("connector_id"), "string_too_short", "String should not be empty"));
            }
        }
    }
}

/// Validates a whole tool list located at `at` (e.g. `["tools"]`): each tool, and that no
/// two functions share a name (the model could not tell them apart).
pub fn validate_tools(tools: &[Tool], at: &[Loc], errors: &mut Vec<FieldError>) {
    let mut seen: Vec<&str> = Vec::new();
    for (index, tool) in tools.iter().enumerate() {
        let mut path = at.to_vec();
        path.push(index.into());
        tool.validate(&path, errors);
        if let Some(function) = &tool.function {
            if seen.contains(&function.name.as_str()) {
                path.extend(["function".into(), "name".into()]);
                let msg = format!("Another function tool is already named `{}`", function.name);
                errors.push(FieldError::body(&path, "value_error", msg));
            }
            seen.push(&function.name);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_chat_apis_refuse_become_valid_function_names() {
        assert_eq!(super::function_name("github.create_issue"), "github_create_issue");
        assert_eq!(super::function_name("ok-name_1"), "ok-name_1");
        assert_eq!(super::function_name(""), "tool");
        assert_eq!(super::function_name(&"x".repeat(80)).len(), 64);
    }

    use super::*;

    fn errors_of(json: &str) -> Vec<FieldError> {
        let tools: Vec<Tool> = serde_json::from_str(json).unwrap();
        let mut errors = Vec::new();
        validate_tools(&tools, &["tools".into()], &mut errors);
        errors
    }

    #[test]
    fn every_documented_tool_type_is_accepted_and_round_trips() {
        let json = serde_json::json!([
            {"type": "function", "function": {"name": "f", "description": "d", "strict": true, "parameters": {"type": "object"}}},
            {"type": "web_search"},
            {"type": "web_search_premium", "tool_configuration": {"requires_confirmation": ["web_search"]}},
            {"type": "code_interpreter"},
            {"type": "image_generation"},
            {"type": "document_library", "library_ids": ["lib"]},
            {"type": "connector", "connector_id": "c1", "authorization": {"type": "api-key", "value": "k"}}
        ]);

        let tools: Vec<Tool> = serde_json::from_value(json.clone()).unwrap();
        let mut errors = Vec::new();
        validate_tools(&tools, &["tools".into()], &mut errors);

        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(serde_json::to_value(&tools).unwrap(), json);
    }

    #[test]
    fn a_function_tool_without_its_function_is_missing_that_field() {
        let errors = errors_of(r#"[{"type":"web_search"},{"type":"function"}]"#);

        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].kind, "missing");
        assert_eq!(errors[0].loc, vec![Loc::from("body"), "tools".into(), 1.into(), "function".into()]);
    }

    #[test]
    fn fields_of_another_tool_type_are_forbidden() {
        let errors = errors_of(r#"[{"type":"web_search","library_ids":["x"]}]"#);

        assert_eq!(errors[0].kind, "extra_forbidden");
        assert_eq!(errors[0].field_name(), "tools.0.library_ids");
    }

    #[test]
    fn two_functions_with_one_name_are_rejected() {
        let f = r#"{"type":"function","function":{"name":"f","parameters":{}}}"#;
        let errors = errors_of(&format!("[{f},{f}]"));

        assert_eq!(errors[0].field_name(), "tools.1.function.name");
    }

    #[test]
    fn a_function_without_strict_is_written_with_strict_false() {
        let tool: Tool =
            serde_json::from_str(r#"{"type":"function","function":{"name":"f","parameters":{}}}"#).unwrap();

        let json = serde_json::to_value(&tool).unwrap();

        assert_eq!(json, serde_json::json!({"type":"function","function":{"name":"f","strict":false,"parameters":{}}}));
    }
}
