//! The one error type of palaver: every layer returns it, `api/error.rs` turns it into the
//! documented HTTP shape (the official SDKs' errors contract), so handlers just use `?`.

use serde::Serialize;
use serde_json::Value;

/// One step of a field's location, as FastAPI/pydantic write it in `detail[].loc`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Loc {
    Key(String),
    Index(usize),
}

impl From<&str> for Loc {
    fn from(key: &str) -> Self {
        Loc::Key(key.to_owned())
    }
}

impl From<usize> for Loc {
    fn from(index: usize) -> Self {
        Loc::Index(index)
    }
}

/// One item of a 422 `detail` list: where (`loc`), what (`type`) and a sentence (`msg`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = ValidationError)]
pub struct FieldError {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub loc: Vec<Loc>,
    pub msg: String,
}

impl FieldError {
    pub fn new(loc: Vec<Loc>, kind: &'static str, msg: impl Into<String>) -> Self {
        Self { kind, loc, msg: msg.into() }
    }

    /// An error on a field of the JSON body: `loc` starts with `"body"`.
    pub fn body(path: &[Loc], kind: &'static str, msg: impl Into<String>) -> Self {
        let mut loc = Vec::with_capacity(path.len() + 1);
        loc.push(Loc::from("body"));
        loc.extend_from_slice(path);
        Self::new(loc, kind, msg)
    }

    /// An error on a query-string parameter.
    pub fn query(name: &str, kind: &'static str, msg: impl Into<String>) -> Self {
        Self::new(vec!["query".into(), name.into()], kind, msg)
    }

    /// The field's dotted name (`tools.0.function.name`), without the `body`/`query` prefix.
    pub fn field_name(&self) -> String {
        self.loc
            .iter()
            .skip(1)
            .map(|l| match l {
                Loc::Key(k) => k.clone(),
                Loc::Index(i) => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Writes the error table: each code with its HTTP status, its `type` and the `code` string
/// of the envelope. Modelled on meilisearch's `make_error_codes!`: a status number is
/// chosen here and nowhere else.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident => $status:literal, $kind:expr, $wire:expr;)*) => {
        /// What went wrong, as the client is told: see the table in `error.rs`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[$doc])* $name,)*
        }

        impl Code {
            /// The HTTP status (also the `code` of a `conversation.response.error` event).
            pub fn status(self) -> u16 {
                match self { $(Code::$name => $status,)* }
            }

            /// The envelope's `type`.
            pub fn kind(self) -> &'static str {
                match self { $(Code::$name => $kind,)* }
            }

            /// The envelope's `code`.
            pub fn wire(self) -> Option<&'static str> {
                match self { $(Code::$name => $wire,)* }
            }

            /// The code's own name (`UpstreamTimeout`), for metrics labels.
            pub fn name(self) -> &'static str {
                match self { $(Code::$name => stringify!($name),)* }
            }
        }
    };
}

const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

error_codes! {
    /// A request that failed validation (a 422 with a `detail` list).
    InvalidRequest => 422, INVALID, None;
    /// A request the server cannot carry out as configured (e.g. an unknown connector).
    BadRequest => 400, INVALID, None;
    NotFound => 404, INVALID, Some("not_found");
    /// A compare-and-set lost: the object moved on while the request ran.
    Conflict => 409, INVALID, Some("conflict");
    Unauthorized => 401, "authentication_error", Some("unauthorized");
    /// A signed file link that is not this server's, was altered, or has expired.
    Forbidden => 403, INVALID, Some("forbidden");
    PayloadTooLarge => 413, INVALID, Some("payload_too_large");
    /// The client took too long to send its request.
    RequestTimeout => 408, INVALID, Some("request_timeout");
    MethodNotAllowed => 405, INVALID, Some("method_not_allowed");
    /// The model upstream asked us to back off; so do we.
    UpstreamRateLimited => 429, "rate_limit_error", Some("upstream_error");
    /// The model upstream failed or answered something unreadable.
    UpstreamFailed => 502, SERVER, Some("upstream_error");
    UpstreamUnavailable => 503, SERVER, Some("upstream_error");
    /// The model upstream did not answer, or fell silent mid-answer, within its timeout.
    UpstreamTimeout => 504, SERVER, Some("upstream_error");
    /// A turn hit one of its bounds (model rounds).
    TurnLimit => 500, SERVER, None;
    StoreUnavailable => 503, SERVER, Some("store_unavailable");
    Internal => 500, SERVER, None;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request that failed validation; always at least one item.
    #[error("{}", describe_invalid(.0))]
    Invalid(Vec<FieldError>),
    #[error("{what} `{id}` not found.")]
    NotFound { what: &'static str, id: String },
    #[error("Version `{version}` of agent `{agent_id}` not found.")]
    AgentVersionNotFound { agent_id: String, version: String },
    #[error("Alias `{alias}` of agent `{agent_id}` not found.")]
    AliasNotFound { agent_id: String, alias: String },
    #[error("{0}")]
    Conflict(String),
    #[error("Missing or invalid API key: send `Authorization: Bearer <key>`.")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("The request body is larger than the limit of {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("The file is larger than the upload limit of {limit_mb} MiB.")]
    FileTooLarge { limit_mb: u64 },
    #[error("The request body did not arrive within {} ms.", .after.as_millis())]
    RequestTimeout { after: std::time::Duration },
    #[error("No route for `{method} {path}`.")]
    RouteNotFound { method: String, path: String },
    #[error("Method `{method}` is not allowed on `{path}`.")]
    MethodNotAllowed { method: String, path: String },
    /// The model upstream (or a connector's server) failed; `code` is one of the
    /// `Upstream*` codes.
    #[error("Upstream model error: {message}")]
    Upstream { code: Code, message: String },
    /// A run that failed after it started: reported as it was (the stream's error event,
    /// or the same failure as an HTTP error for a non-streaming run).
    #[error("{message}")]
    RunFailed { code: Code, message: String },
    /// The database is down or cannot serve now: a 503 with `Retry-After`.
    #[error("The database is unavailable ({0}); retry shortly.")]
    StoreUnavailable(String),
    #[error("Internal server error.")]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(error: FieldError) -> Self {
        Error::Invalid(vec![error])
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound { what, id: id.into() }
    }

    /// The upstream failure an HTTP status stands for: 429 stays 429 (the client should
    /// back off), 503 and 504 pass through, anything else is a 502.
    pub fn upstream(status: u16, message: impl Into<String>) -> Self {
        let code = match status {
            429 => Code::UpstreamRateLimited,
            503 => Code::UpstreamUnavailable,
            504 => Code::UpstreamTimeout,
            _ => Code::UpstreamFailed,
        };
        Error::Upstream { code, message: message.into() }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::Invalid(_) => Code::InvalidRequest,
            Error::NotFound { .. }
            | Error::AgentVersionNotFound { .. }
            | Error::AliasNotFound { .. }
            | Error::RouteNotFound { .. } => Code::NotFound,
            Error::Conflict(_) => Code::Conflict,
            Error::Unauthorized => Code::Unauthorized,
            Error::Forbidden(_) => Code::Forbidden,
            Error::PayloadTooLarge { .. } | Error::FileTooLarge { .. } => Code::PayloadTooLarge,
            Error::RequestTimeout { .. } => Code::RequestTimeout,
            Error::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            Error::Upstream { code, .. } | Error::RunFailed { code, .. } => *code,
            Error::StoreUnavailable(_) => Code::StoreUnavailable,
            Error::Internal(_) => Code::Internal,
        }
    }
}

fn describe_invalid(errors: &[FieldError]) -> String {
    match errors.first() {
        Some(first) if first.field_name().is_empty() => format!("Invalid request: {}", first.msg),
        Some(first) => format!("Invalid field `{}`: {}", first.field_name(), first.msg),
        None => "Invalid request.".to_owned(),
    }
}

/// Turns a serde error met while decoding a typed value into a 422 item with the field's
/// location. `prefix` is where the decoded value sits (`["body"]`, `["query", "metadata"]`).
pub fn from_serde(prefix: &[Loc], error: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    use serde_path_to_error::Segment;
    let mut loc: Vec<Loc> = prefix.to_vec();
    for segment in error.path().iter() {
        match segment {
            Segment::Seq { index } => loc.push(Loc::Index(*index)),
            Segment::Map { key } => loc.push(Loc::Key(key.clone())),
            Segment::Enum { variant } => loc.push(Loc::Key(variant.clone())),
            Segment::Unknown => {}
        }
    }
    let inner = error.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        let msg = format!("Invalid JSON: {}.", strip_position(&inner.to_string()));
        return FieldError::new(vec![prefix.first().cloned().unwrap_or_else(|| "body".into())], "json_invalid", msg);
    }
    let text = strip_position(&inner.to_string());
    classify_serde_message(loc, &text)
}

/// serde_json appends ` at line 1 column 5`: useful in a log, noise in a field error.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn backticked(text: &str) -> Option<&str> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(&text[start..start + len])
}

fn classify_serde_message(mut loc: Vec<Loc>, text: &str) -> FieldError {
    if let Some(rest) = text.strip_prefix("missing field ") {
        if let Some(name) = backticked(rest) {
            loc.push(Loc::Key(name.to_owned()));
        }
        return FieldError::new(loc, "missing", "Field required");
    }
    if let Some(rest) = text.strip_prefix("unknown field ") {
        if let Some(name) = backticked(rest) {
            if loc.last() != Some(&Loc::Key(name.to_owned())) {
                loc.push(Loc::Key(name.to_owned()));
            }
        }
        return FieldError::new(loc, "extra_forbidden", "Extra inputs are not permitted");
    }
    if let Some(rest) = text.strip_prefix("unknown variant ") {
        let got = backticked(rest).unwrap_or_default().to_owned();
        let expected = rest.split_once("expected ").map(|(_, e)| e).unwrap_or("");
        let expected = expected.replace("one of ", "");
        return FieldError::new(loc, "enum", format!("Input should be one of {expected}, got `{got}`"));
    }
    if let Some(rest) = text.strip_prefix("invalid type: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, "another type"));
        let kind = match expected {
            e if e.contains("string") && !e.contains("or") => "string_type",
            e if e.contains("integer") || e.starts_with("u") || e.starts_with("i") => "int_type",
            e if e.contains("boolean") => "bool_type",
            e if e.contains("sequence") => "list_type",
            e if e.contains("map") || e.starts_with("struct") => "dict_type",
            e if e.contains("f64") || e.contains("number") => "float_type",
            _ => "type_error",
        };
        let expected = humanize_expected(expected);
        return FieldError::new(loc, kind, format!("Input should be {expected}, got {got}"));
    }
    if text.starts_with("invalid length") && text.contains("expected struct") {
        let msg = "Input should be a valid dictionary or object to extract fields from";
        return FieldError::new(loc, "dict_type", msg);
    }
    if let Some(rest) = text.strip_prefix("invalid value: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, "another value"));
        let expected = humanize_expected(expected);
        return FieldError::new(loc, "value_error", format!("Input should be {expected}, got {got}"));
    }
    FieldError::new(loc, "value_error", text.to_owned())
}

fn humanize_expected(expected: &str) -> String {
    match expected {
        "a sequence" => "a list".to_owned(),
        "a map" => "an object".to_owned(),
        "a boolean" => "a boolean".to_owned(),
        "f64" => "a number".to_owned(),
        "u64" | "u32" | "i64" | "u16" | "usize" => "a non-negative integer".to_owned(),
        e if e.starts_with("struct ") => "an object".to_owned(),
        e if e.starts_with("enum ") => "one of the documented values".to_owned(),
        e => e.to_owned(),
    }
}

/// Decodes a JSON value into `T`, reporting every problem as a 422 item located under
/// `prefix`.
pub fn decode_json<T: serde::de::DeserializeOwned>(prefix: &[Loc], bytes: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| Error::invalid(from_serde(prefix, e)))?;
    de.end().map_err(|e| {
        Error::invalid(FieldError::new(
            vec![prefix.first().cloned().unwrap_or_else(|| "body".into())],
            "json_invalid",
            format!("Invalid JSON: {}.", strip_position(&e.to_string())),
        ))
    })?;
    Ok(value)
}

/// Same as [`decode_json`] for an already parsed value.
pub fn decode_value<T: serde::de::DeserializeOwned>(prefix: &[Loc], value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| Error::invalid(from_serde(prefix, e)))
}

/// Same as [`decode_value`] for a value that stays where it is: checking a part of a body
/// kept as JSON (a content chunk may hold megabytes of base64).
pub fn decode_ref<'de, T: serde::Deserialize<'de>>(prefix: &[Loc], value: &'de Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| Error::invalid(from_serde(prefix, e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
        flag: Option<bool>,
    }

    fn first_error(json: &str) -> FieldError {
        match decode_json::<Outer>(&["body".into()], json.as_bytes()) {
            Err(Error::Invalid(mut errors)) => errors.remove(0),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_nested_field_is_located_by_its_full_path() {
        let error = first_error(r#"{"items":[{"name":"a"},{}]}"#);

        assert_eq!(error.kind, "missing");
        assert_eq!(error.loc, vec![Loc::from("body"), "items".into(), 1.into(), "name".into()]);
    }

    #[test]
    fn an_unknown_field_is_extra_forbidden_at_its_own_name() {
        let error = first_error(r#"{"items":[],"colour":1}"#);

        assert_eq!(error.kind, "extra_forbidden");
        assert_eq!(error.loc, vec![Loc::from("body"), "colour".into()]);
    }

    #[test]
    fn a_wrong_type_names_the_field_and_the_expected_type() {
        let error = first_error(r#"{"items":[],"flag":"yes"}"#);

        assert_eq!(error.kind, "bool_type");
        assert_eq!(error.loc, vec![Loc::from("body"), "flag".into()]);
    }

    #[test]
    fn malformed_json_is_json_invalid_on_the_body() {
        let error = first_error(r#"{"items": ["#);

        assert_eq!(error.kind, "json_invalid");
        assert_eq!(error.loc, vec![Loc::from("body")]);
    }

    #[test]
    fn trailing_garbage_is_json_invalid() {
        let error = first_error(r#"{"items": []} x"#);

        assert_eq!(error.kind, "json_invalid");
    }
}

#[cfg(test)]
mod code_tests {
    use super::*;

    #[test]
    fn upstream_statuses_map_to_their_codes_and_back() {
        for (status, code) in [
            (429, Code::UpstreamRateLimited),
            (503, Code::UpstreamUnavailable),
            (504, Code::UpstreamTimeout),
            (500, Code::UpstreamFailed),
            (404, Code::UpstreamFailed),
        ] {
            let error = Error::upstream(status, "x");

            assert_eq!(error.code(), code, "upstream {status}");
            assert_eq!(error.code().status(), if code == Code::UpstreamFailed { 502 } else { status });
        }
    }

    #[test]
    fn rate_limits_and_conflicts_keep_the_types_clients_branch_on() {
        assert_eq!(Code::UpstreamRateLimited.kind(), "rate_limit_error");
        assert_eq!(Code::Conflict.wire(), Some("conflict"));
        assert_eq!(Code::Unauthorized.kind(), "authentication_error");
        assert_eq!(Code::InvalidRequest.wire(), None);
    }
}

/// Whatever a client sends, a request decoder answers the value or a 422 whose every item
/// is located in the body: never a panic, never another error.
#[cfg(test)]
mod decoder_properties {
    use super::*;
    use crate::domain::agents::{CreateAgentRequest, UpdateAgentRequest};
    use crate::domain::arbitrary::{json_body, json_value};
    use crate::domain::chat_completions::CompletionRequest;
    use crate::domain::conversations::{
        AppendConversationRequest, RestartConversationRequest, StartConversationRequest,
    };
    use proptest::prelude::*;

    fn located_in_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        match decode_json::<T>(&["body".into()], bytes) {
            Ok(_) => Ok(()),
            Err(Error::Invalid(errors)) => {
                prop_assert!(!errors.is_empty());
                for error in errors {
                    prop_assert_eq!(error.loc.first(), Some(&Loc::from("body")));
                    prop_assert!(!error.msg.is_empty());
                }
                Ok(())
            }
            Err(other) => Err(TestCaseError::fail(format!("not a validation error: {other:?}"))),
        }
    }

    fn every_decoder(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        located_in_body::<CreateAgentRequest>(bytes)?;
        located_in_body::<UpdateAgentRequest>(bytes)?;
        located_in_body::<StartConversationRequest>(bytes)?;
        located_in_body::<AppendConversationRequest>(bytes)?;
        located_in_body::<RestartConversationRequest>(bytes)?;
        located_in_body::<CompletionRequest>(bytes)
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_are_located_in_the_body(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            every_decoder(&bytes)?;
        }

        #[test]
        fn any_json_decodes_or_is_located_in_the_body(value in json_value()) {
            every_decoder(value.to_string().as_bytes())?;
        }

        #[test]
        fn any_plausible_body_decodes_or_is_located_in_the_body(value in json_body()) {
            every_decoder(value.to_string().as_bytes())?;
        }

        #[test]
        fn a_decoded_agent_is_valid_or_its_problems_are_in_the_body(value in json_body()) {
            if let Ok(request) = decode_json::<CreateAgentRequest>(&["body".into()], value.to_string().as_bytes()) {
                if let Err(errors) = request.into_config() {
                    prop_assert!(!errors.is_empty());
                    prop_assert!(errors.iter().all(|e| e.loc.first() == Some(&Loc::from("body"))));
                }
            }
        }
    }
}
