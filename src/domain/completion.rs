//! Completion arguments (the official `CompletionArgs`): the sampling settings an
//! agent or conversation stores and every model call forwards.

use crate::error::{FieldError, Loc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    None,
    Any,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Content,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Prediction {
    #[serde(rename = "type", default = "default_prediction_type")]
    pub kind: PredictionType,
    #[serde(default)]
    pub content: String,
}

fn default_prediction_type() -> PredictionType {
    PredictionType::Content
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatType {
    Text,
    JsonObject,
    JsonSchema,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: ResponseFormatType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub json_schema: Option<JsonSchema>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchema {
    pub name: String,
    pub schema: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Every member optional; unset members are stored as absent, so what a user set is
/// exactly what reaches the model. Clients see [`CompletionArgsView`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
}

/// Completion arguments as clients receive them, the way the hosted API writes them: all
/// members present, `null` when unset, and `tool_choice` defaulting to `"auto"`
/// (TypeScript rejects `null` there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompletionArgsView(pub CompletionArgs);

impl Serialize for CompletionArgsView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let args = &self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("stop", &args.stop)?;
        map.serialize_entry("presence_penalty", &args.presence_penalty)?;
        map.serialize_entry("frequency_penalty", &args.frequency_penalty)?;
        map.serialize_entry("temperature", &args.temperature)?;
        map.serialize_entry("top_p", &args.top_p)?;
        map.serialize_entry("max_tokens", &args.max_tokens)?;
        map.serialize_entry("random_seed", &args.random_seed)?;
        map.serialize_entry("prediction", &args.prediction)?;
        map.serialize_entry("response_format", &args.response_format)?;
        map.serialize_entry("tool_choice", &args.tool_choice.unwrap_or(ToolChoice::Auto))?;
        // Newer field: written only when set, so older readers see the classic shape.
        if let Some(effort) = &args.reasoning_effort {
            map.serialize_entry("reasoning_effort", effort)?;
        }
        map.end()
    }
}

impl CompletionArgs {
    /// Range checks from the public OpenAPI spec. `temperature` allows up to 2 (not the
    /// spec's 1) because OpenAI-compatible backends accept that range and users of
    /// self-hosted models rely on it.
    pub fn validate(&self, at: &[Loc], errors: &mut Vec<FieldError>) {
        let mut check = |name: &str, value: Option<f64>, min: f64, max: f64| {
            if let Some(v) = value {
                if !(min..=max).contains(&v) {
                    let mut path = at.to_vec();
                    path.push(name.into());
                    let msg = format!("Input should be between {min} and {max}, got {v}");
                    errors.push(FieldError::body(&path, "value_error", msg));
                }
            }
        };
        check("temperature", self.temperature, 0.0, 2.0);
        check("top_p", self.top_p, 0.0, 1.0);
        check("presence_penalty", self.presence_penalty, -2.0, 2.0);
        check("frequency_penalty", self.frequency_penalty, -2.0, 2.0);
        if let Some(format) = &self.response_format {
            if format.kind == ResponseFormatType::JsonSchema && format.json_schema.is_none() {
                let mut path = at.to_vec();
                path.extend(["response_format".into(), "json_schema".into()]);
                let msg = "Field required when `type` is `json_schema`";
                errors.push(FieldError::body(&path, "missing", msg));
            }
        }
    }

    /// `self` with every member that `overrides` sets replaced: per-call arguments win over
    /// the stored ones, member by member.
    pub fn overridden_by(&self, overrides: &CompletionArgs) -> CompletionArgs {
        CompletionArgs {
            stop: overrides.stop.clone().or_else(|| self.stop.clone()),
            presence_penalty: overrides.presence_penalty.or(self.presence_penalty),
            frequency_penalty: overrides.frequency_penalty.or(self.frequency_penalty),
            temperature: overrides.temperature.or(self.temperature),
            top_p: overrides.top_p.or(self.top_p),
            max_tokens: overrides.max_tokens.or(self.max_tokens),
            random_seed: overrides.random_seed.or(self.random_seed),
            prediction: overrides.prediction.clone().or_else(|| self.prediction.clone()),
            response_format: overrides.response_format.clone().or_else(|| self.response_format.clone()),
            tool_choice: overrides.tool_choice.or(self.tool_choice),
            reasoning_effort: overrides.reasoning_effort.clone().or_else(|| self.reasoning_effort.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_members_are_written_as_null_and_tool_choice_as_auto() {
        let args = CompletionArgs { temperature: Some(0.3), ..Default::default() };

        let json = serde_json::to_value(CompletionArgsView(args)).unwrap();

        assert_eq!(
            json,
            serde_json::json!({"stop": null, "presence_penalty": null, "frequency_penalty": null,
                "temperature": 0.3, "top_p": null, "max_tokens": null, "random_seed": null,
                "prediction": null, "response_format": null, "tool_choice": "auto"})
        );
    }

    #[test]
    fn stored_arguments_keep_unset_members_absent() {
        let args = CompletionArgs { temperature: Some(0.3), ..Default::default() };

        assert_eq!(serde_json::to_value(&args).unwrap(), serde_json::json!({"temperature": 0.3}));
    }

    #[test]
    fn written_arguments_read_back_equal() {
        let json = r#"{"stop":["a"],"temperature":0.2,"max_tokens":5,"random_seed":1,
            "response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object"},"strict":true}},
            "prediction":{"type":"content","content":"x"},"tool_choice":"any","reasoning_effort":"high"}"#;
        let args: CompletionArgs = serde_json::from_str(json).unwrap();

        let again: CompletionArgs = serde_json::from_value(serde_json::to_value(&args).unwrap()).unwrap();

        assert_eq!(again, args);
    }

    #[test]
    fn out_of_range_values_are_located() {
        let args = CompletionArgs { top_p: Some(1.5), ..Default::default() };
        let mut errors = Vec::new();

        args.validate(&["completion_args".into()], &mut errors);

        assert_eq!(errors[0].field_name(), "completion_args.top_p");
    }

    #[test]
    fn per_call_arguments_override_member_by_member() {
        let stored = CompletionArgs { temperature: Some(0.1), max_tokens: Some(10), ..Default::default() };
        let call = CompletionArgs { temperature: Some(0.9), ..Default::default() };

        let merged = stored.overridden_by(&call);

        assert_eq!(merged.temperature, Some(0.9));
        assert_eq!(merged.max_tokens, Some(10));
    }
}
