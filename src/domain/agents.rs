//! Agents on the wire (the official SDKs' agents contract): request bodies, the stored configuration of
//! one version, and the `Agent` / alias objects returned to clients.

use super::completion::{CompletionArgs, CompletionArgsView};
use super::ids::AgentId;
use super::limits;
use super::patch::Patch;
use super::time::Timestamp;
use super::tools::{validate_tools, Tool};
use crate::error::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailAction {
    None,
    Block,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModerationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub custom_category_thresholds: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_other_categories: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<GuardrailAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    #[serde(default)]
    pub block_on_error: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation_llm_v1: Option<ModerationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation_llm_v2: Option<ModerationConfig>,
}

/// Body of `POST /v1/agents`. Unknown fields are rejected, as by the hosted API.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"model": "echo", "name": "Brief", "instructions": "Answer briefly."}))]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    pub model: String,
    pub name: String,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    // `null` is read as "no tools": liberal in what we accept, `[]` in what we send.
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub completion_args: Option<CompletionArgs>,
    #[serde(default)]
    pub handoffs: Option<Vec<String>>,
    #[serde(default)]
    pub guardrails: Option<Vec<GuardrailConfig>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub version_message: Option<String>,
}

/// Body of `PATCH /v1/agents/{id}`: absent = keep, `null` = clear, value = replace.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
// Every field may be absent: the struct's `Default` fills them.
#[schema(example = json!({"description": "Answers briefly.", "metadata": {"team": "docs"}}))]
#[serde(default, deny_unknown_fields)]
pub struct UpdateAgentRequest {
    #[schema(value_type = Option<String>)]
    pub model: Patch<String>,
    #[schema(value_type = Option<String>)]
    pub name: Patch<String>,
    #[schema(value_type = Option<String>)]
    pub instructions: Patch<String>,
    #[schema(value_type = Option<String>)]
    pub description: Patch<String>,
    #[schema(value_type = Option<Vec<Tool>>)]
    pub tools: Patch<Vec<Tool>>,
    #[schema(value_type = Option<CompletionArgs>)]
    pub completion_args: Patch<CompletionArgs>,
    #[schema(value_type = Option<Vec<String>>)]
    pub handoffs: Patch<Vec<String>>,
    #[schema(value_type = Option<Vec<GuardrailConfig>>)]
    pub guardrails: Patch<Vec<GuardrailConfig>>,
    #[schema(value_type = Option<bool>)]
    pub deployment_chat: Patch<bool>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Patch<Map<String, Value>>,
    #[schema(value_type = Option<String>)]
    pub version_message: Patch<String>,
}

/// What one immutable agent version holds. Stored as JSON, one row per version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    pub name: String,
    pub model: String,
    pub instructions: Option<String>,
    pub description: Option<String>,
    pub tools: Vec<Tool>,
    pub completion_args: CompletionArgs,
    pub handoffs: Option<Vec<String>>,
    pub guardrails: Option<Vec<GuardrailConfig>>,
    pub metadata: Option<Map<String, Value>>,
    pub version_message: Option<String>,
    #[serde(default)]
    pub deployment_chat: bool,
}

const VERSION_MESSAGE_MAX_CHARS: usize = 500;

fn require_non_blank(value: &str, name: &str, errors: &mut Vec<FieldError>) {
    if value.trim().is_empty() {
        errors.push(FieldError::body(&[name.into()], "string_too_short", "String should have at least 1 character"));
    }
}

/// `config` if it passes the checks every version must, else every problem found.
fn checked(config: AgentConfig) -> Result<AgentConfig, Vec<FieldError>> {
    let mut errors = Vec::new();
    validate_common(&config, &mut errors);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

fn validate_common(config: &AgentConfig, errors: &mut Vec<FieldError>) {
    require_non_blank(&config.model, "model", errors);
    require_non_blank(&config.name, "name", errors);
    limits::string(Some(&config.model), limits::MAX_NAME_CHARS, &[], "model", errors);
    limits::string(Some(&config.name), limits::MAX_NAME_CHARS, &[], "name", errors);
    limits::string(config.description.as_deref(), limits::MAX_DESCRIPTION_CHARS, &[], "description", errors);
    limits::string(config.instructions.as_deref(), limits::MAX_INSTRUCTIONS_CHARS, &[], "instructions", errors);
    limits::list(Some(&config.tools), limits::MAX_TOOLS, &[], "tools", errors);
    limits::list(config.handoffs.as_deref(), limits::MAX_HANDOFFS, &[], "handoffs", errors);
    limits::metadata(config.metadata.as_ref(), &[], errors);
    validate_tools(&config.tools, &["tools".into()], errors);
    config.completion_args.validate(&["completion_args".into()], errors);
    if let Some(handoffs) = &config.handoffs {
        if handoffs.is_empty() {
            errors.push(FieldError::body(
                &["handoffs".into()],
                "too_short",
                "List should have at least 1 item; send null for none",
            ));
        }
    }
    if let Some(message) = &config.version_message {
        if message.chars().count() > VERSION_MESSAGE_MAX_CHARS {
            let msg = format!("String should have at most {VERSION_MESSAGE_MAX_CHARS} characters");
            errors.push(FieldError::body(&["version_message".into()], "string_too_long", msg));
        }
    }
}

impl CreateAgentRequest {
    /// The configuration of version 0, or every problem found in the request.
    pub fn into_config(self) -> Result<AgentConfig, Vec<FieldError>> {
        let config = AgentConfig {
            name: self.name,
            model: self.model,
            instructions: self.instructions,
            description: self.description,
            tools: self.tools.unwrap_or_default(),
            completion_args: self.completion_args.unwrap_or_default(),
            handoffs: self.handoffs,
            guardrails: self.guardrails,
            metadata: self.metadata,
            version_message: self.version_message,
            deployment_chat: false,
        };
        checked(config)
    }
}

impl UpdateAgentRequest {
    /// The configuration of the next version: `base` (the active version) patched.
    /// `version_message` belongs to one version, so it is not inherited.
    pub fn apply_to(self, base: &AgentConfig) -> Result<AgentConfig, Vec<FieldError>> {
        let base = base.clone();
        let config = AgentConfig {
            // `model` and `name` cannot be cleared: `null` keeps them.
            name: match self.name {
                Patch::Value(v) => v,
                _ => base.name,
            },
            model: match self.model {
                Patch::Value(v) => v,
                _ => base.model,
            },
            instructions: self.instructions.apply(base.instructions),
            description: self.description.apply(base.description),
            tools: self.tools.apply(Some(base.tools)).unwrap_or_default(),
            completion_args: self.completion_args.apply(Some(base.completion_args)).unwrap_or_default(),
            handoffs: self.handoffs.apply(base.handoffs),
            guardrails: self.guardrails.apply(base.guardrails),
            metadata: self.metadata.apply(base.metadata),
            version_message: self.version_message.apply(None),
            deployment_chat: self.deployment_chat.apply(Some(base.deployment_chat)).unwrap_or(false),
        };
        checked(config)
    }
}

/// The `Agent` object every agent endpoint returns.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Agent {
    pub object: &'static str,
    #[schema(value_type = String)]
    pub id: AgentId,
    pub name: String,
    pub model: String,
    pub version: i64,
    pub versions: Vec<i64>,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
    pub deployment_chat: bool,
    pub source: &'static str,
    pub instructions: Option<String>,
    pub description: Option<String>,
    pub tools: Vec<Tool>,
    #[schema(value_type = CompletionArgs)]
    pub completion_args: CompletionArgsView,
    pub handoffs: Option<Vec<String>>,
    pub guardrails: Option<Vec<GuardrailConfig>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub owner_id: Option<String>,
    pub version_message: Option<String>,
}

/// `GET /v1/agents/pages`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentListPage {
    pub object: &'static str,
    pub data: Vec<Agent>,
    pub next_page_token: Option<String>,
}

/// One named pointer to an agent version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = AgentAliasResponse)]
pub struct AgentAlias {
    pub alias: String,
    pub version: i64,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
}

/// Which version of an agent a request means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    Active,
    Number(i64),
    Alias(String),
}

impl VersionSelector {
    /// Reads `agent_version` as the SDKs send it: a number, or an alias name. Alias names
    /// start with a letter, so the two can never be confused.
    pub fn parse(raw: &str) -> Option<Self> {
        if let Ok(n) = raw.parse::<i64>() {
            return (n >= 0).then_some(VersionSelector::Number(n));
        }
        is_valid_alias(raw).then(|| VersionSelector::Alias(raw.to_owned()))
    }

    pub fn describe(&self) -> String {
        match self {
            VersionSelector::Active => "active".to_owned(),
            VersionSelector::Number(n) => n.to_string(),
            VersionSelector::Alias(a) => a.clone(),
        }
    }
}

/// `^[a-z]([a-z0-9_-]*[a-z0-9])?$`, 1 to 64 characters (the official SDKs' agents contract).
pub fn is_valid_alias(alias: &str) -> bool {
    let bytes = alias.as_bytes();
    let inner_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-';
    let end_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match bytes {
        [] => false,
        _ if bytes.len() > 64 => false,
        [first] => first.is_ascii_lowercase(),
        [first, middle @ .., last] => first.is_ascii_lowercase() && middle.iter().all(inner_ok) && end_ok(last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> AgentConfig {
        CreateAgentRequest {
            model: "m".into(),
            name: "n".into(),
            instructions: Some("be nice".into()),
            description: Some("d".into()),
            tools: None,
            completion_args: None,
            handoffs: Some(vec!["ag_x".into()]),
            guardrails: None,
            metadata: None,
            version_message: Some("first".into()),
        }
        .into_config()
        .unwrap()
    }

    #[test]
    fn an_update_keeps_absent_fields_clears_null_ones_and_replaces_the_rest() {
        let patch: UpdateAgentRequest =
            serde_json::from_str(r#"{"instructions":"new","tools":[],"description":null,"handoffs":null}"#).unwrap();

        let next = patch.apply_to(&base()).unwrap();

        assert_eq!(next.instructions.as_deref(), Some("new"));
        assert_eq!(next.description, None);
        assert_eq!(next.handoffs, None);
        assert_eq!(next.name, "n");
        assert_eq!(next.version_message, None, "a version message belongs to one version");
    }

    #[test]
    fn alias_names_follow_the_documented_pattern() {
        for good in ["a", "prod", "prod-2", "a_b", "x9"] {
            assert!(is_valid_alias(good), "{good}");
        }
        for bad in ["", "Prod", "9a", "a-", "a_", "a b", &"a".repeat(65)] {
            assert!(!is_valid_alias(bad), "{bad}");
        }
    }

    #[test]
    fn agent_version_is_a_number_or_an_alias() {
        assert_eq!(VersionSelector::parse("3"), Some(VersionSelector::Number(3)));
        assert_eq!(VersionSelector::parse("prod"), Some(VersionSelector::Alias("prod".into())));
        assert_eq!(VersionSelector::parse("-1"), None);
        assert_eq!(VersionSelector::parse("Bad Alias"), None);
    }

    #[test]
    fn blank_names_and_empty_handoff_lists_are_rejected() {
        let mut request: CreateAgentRequest =
            serde_json::from_str(r#"{"model":"m","name":" ","handoffs":[]}"#).unwrap();
        request.version_message = Some("x".repeat(501));

        let errors = request.into_config().unwrap_err();

        let fields: Vec<String> = errors.iter().map(FieldError::field_name).collect();
        assert_eq!(fields, vec!["name", "handoffs", "version_message"]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A member of a PATCH body: absent, `null`, or a value.
        fn member() -> impl Strategy<Value = Option<Option<String>>> {
            prop_oneof![Just(None), Just(Some(None)), "[a-z]{1,8}".prop_map(|s| Some(Some(s)))]
        }

        fn body(members: &[(&str, &Option<Option<String>>)]) -> serde_json::Value {
            let mut body = serde_json::Map::new();
            for (name, member) in members {
                if let Some(value) = member {
                    body.insert((*name).to_owned(), serde_json::json!(value));
                }
            }
            serde_json::Value::Object(body)
        }

        proptest! {
            /// Nullable members follow the patch rule; `name` and `model` cannot be cleared;
            /// `version_message` is never inherited.
            #[test]
            fn an_update_applies_each_member_by_the_patch_rule(
                name in member(), instructions in member(), description in member(), message in member(),
            ) {
                let base = base();
                let request: UpdateAgentRequest = serde_json::from_value(body(&[
                    ("name", &name), ("instructions", &instructions), ("description", &description),
                    ("version_message", &message),
                ])).unwrap();

                let next = request.apply_to(&base).unwrap();

                let rule = |member: &Option<Option<String>>, current: &Option<String>| match member {
                    None => current.clone(),
                    Some(value) => value.clone(),
                };
                prop_assert_eq!(next.name, name.flatten().unwrap_or(base.name.clone()));
                prop_assert_eq!(next.instructions, rule(&instructions, &base.instructions));
                prop_assert_eq!(next.description, rule(&description, &base.description));
                prop_assert_eq!(next.version_message, message.flatten());
                prop_assert_eq!(next.model, base.model);
                prop_assert_eq!(next.handoffs, base.handoffs);
            }
        }
    }
}
