//! The scripted `mock` model's rules on the wire: the body of `POST /palaver/mock/rules`
//! and the contents of the `PALAVER_MOCK_SCRIPT` file (`{"rules": [...]}`).

use crate::error::{FieldError, Loc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MockScript {
    pub rules: Vec<MockRule>,
}

/// When a rule applies, what it answers, and how many requests it answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MockRule {
    #[serde(default)]
    pub when: MockWhen,
    /// Answers to the successive requests the rule matches, in order (from the first again
    /// while uses remain).
    pub replies: Vec<MockReply>,
    /// How many requests the rule answers: a number, or `"forever"`. Absent: one per reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<Times>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = MockTimes)]
#[serde(untagged)]
pub enum Times {
    Count(u64),
    Forever(Forever),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = MockForever)]
#[serde(rename_all = "lowercase")]
pub enum Forever {
    Forever,
}

/// Every condition given must hold; none given matches every request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MockWhen {
    /// The model name asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The agent answering: its id or its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A substring of the last user message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_contains: Option<String>,
    /// A regular expression the last user message matches (`regex-lite` syntax).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_matches: Option<String>,
    /// What the request ends with: `user` (a new message) or `tool` (the answers to calls:
    /// function results or tools the server ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Last>,
    /// The model round of the turn, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = MockLast)]
#[serde(rename_all = "lowercase")]
pub enum Last {
    User,
    Tool,
}

/// One answer: exactly one of `text`, `calls`, `handoff`, `error`, with optional pacing and
/// usage.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MockReply {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Calls of named functions (client functions, built-in tools or connector tools alike).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<MockCall>>,
    /// An agent id: the model calls `handoff_to_<id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
    /// Fail as an upstream answering this HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<MockError>,
    /// Wait this long before each delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 60_000)]
    pub delay_ms: Option<u64>,
    /// Or stream at this rate (a delta is a word or a call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Report this usage instead of word counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<MockUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MockCall {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MockError {
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MockUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The longest pause before a delta: runs go on after their client leaves, so a pause has
/// to end.
pub const MAX_DELAY_MS: u64 = 60_000;
/// The slowest rate, one delta a minute.
pub const MIN_RATE: f64 = 1.0 / 60.0;
/// Rules one workspace may hold.
pub const MAX_RULES: usize = 1_000;

impl MockScript {
    /// Every problem of the script, each located by rule and field (`rules.2.replies.0`).
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        for (index, rule) in self.rules.iter().enumerate() {
            let at = |field: &[Loc]| {
                let mut loc: Vec<Loc> = vec!["rules".into(), index.into()];
                loc.extend_from_slice(field);
                loc
            };
            if rule.replies.is_empty() {
                errors.push(FieldError::body(&at(&["replies".into()]), "too_short", "A rule needs at least one reply"));
            }
            if rule.times == Some(Times::Count(0)) {
                errors.push(FieldError::body(&at(&["times".into()]), "value_error", "`times` must be at least 1"));
            }
            if let Some(pattern) = &rule.when.message_matches {
                if let Err(error) = regex_lite::Regex::new(pattern) {
                    let loc = at(&["when".into(), "message_matches".into()]);
                    errors.push(FieldError::body(
                        &loc,
                        "value_error",
                        format!("Not a valid regular expression: {error}"),
                    ));
                }
            }
            for (n, reply) in rule.replies.iter().enumerate() {
                let loc = at(&["replies".into(), n.into()]);
                let kinds =
                    [reply.text.is_some(), reply.calls.is_some(), reply.handoff.is_some(), reply.error.is_some()];
                if kinds.iter().filter(|k| **k).count() != 1 {
                    let msg = "A reply is exactly one of `text`, `calls`, `handoff` or `error`";
                    errors.push(FieldError::body(&loc, "value_error", msg));
                }
                if let Some(error) = &reply.error {
                    if !(400..=599).contains(&error.status) {
                        let mut loc = loc.clone();
                        loc.extend(["error".into(), "status".into()]);
                        errors.push(FieldError::body(&loc, "value_error", "An error status is from 400 to 599"));
                    }
                }
                if reply.tokens_per_second.is_some_and(|rate| !(MIN_RATE..=f64::MAX).contains(&rate)) {
                    let mut loc = loc.clone();
                    loc.push("tokens_per_second".into());
                    let msg = format!("`tokens_per_second` is at least {MIN_RATE}");
                    errors.push(FieldError::body(&loc, "value_error", msg));
                }
                if reply.delay_ms.is_some_and(|delay| delay > MAX_DELAY_MS) {
                    let mut loc = loc.clone();
                    loc.push("delay_ms".into());
                    let msg = format!("`delay_ms` is at most {MAX_DELAY_MS}");
                    errors.push(FieldError::body(&loc, "value_error", msg));
                }
                if reply.calls.as_ref().is_some_and(|calls| calls.is_empty()) {
                    let mut loc = loc.clone();
                    loc.push("calls".into());
                    errors.push(FieldError::body(&loc, "too_short", "`calls` needs at least one call"));
                }
            }
        }
    }
}
