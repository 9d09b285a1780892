//! Strategies for the property tests: JSON values shaped like request bodies, so that
//! most cases reach past the first type check.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Keys the wire types know, mixed with unknown ones.
const KEYS: &[&str] = &[
    "model",
    "name",
    "instructions",
    "description",
    "tools",
    "completion_args",
    "handoffs",
    "guardrails",
    "metadata",
    "version_message",
    "deployment_chat",
    "inputs",
    "stream",
    "store",
    "handoff_execution",
    "agent_id",
    "agent_version",
    "from_entry_id",
    "tool_confirmations",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "type",
    "role",
    "content",
    "function",
    "parameters",
    "unknown",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-z ]{0,8}".prop_map(Value::String),
        prop::sample::select(KEYS).prop_map(|k| Value::String(k.to_owned())),
    ]
}

/// Any JSON value, nested a few levels.
pub fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// A JSON object whose members are drawn from the known keys: a plausible body.
pub fn json_body() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..8)
        .prop_map(|pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>()))
}
