//! Extractors whose rejections are palaver errors, so even a JSON syntax error or an
//! oversize body answers in the documented shape.

use crate::error::{decode_json, Error, FieldError, Loc, Result};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A JSON body decoded into `T`; problems become 422 items located under `body`.
pub struct ApiJson<T>(pub T);

/// The raw body, size-limited; for endpoints whose body is optional.
pub struct RawBody(pub Bytes);

fn body_error(rejection: BytesRejection, limit: usize) -> Error {
    match rejection {
        BytesRejection::FailedToBufferBody(inner) => {
            let text = inner.body_text();
            if text.contains("length limit") {
                Error::PayloadTooLarge { limit }
            } else {
                Error::invalid(FieldError::new(
                    vec!["body".into()],
                    "body_error",
                    format!("The body could not be read: {text}"),
                ))
            }
        }
        other => Error::invalid(FieldError::new(vec!["body".into()], "body_error", other.body_text())),
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        Ok(ApiJson(decode_json(&[Loc::from("body")], &bytes)?))
    }
}

impl FromRequest<AppState> for RawBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let limit = state.max_body_bytes;
        // A deadline for the whole body: a client trickling it holds no handler for long.
        match tokio::time::timeout(state.body_timeout, Bytes::from_request(req, state)).await {
            Ok(read) => Ok(RawBody(read.map_err(|r| body_error(r, limit))?)),
            Err(_) => Err(Error::RequestTimeout { after: state.body_timeout }),
        }
    }
}

/// The query string as ordered pairs. Typed getters validate one parameter each and
/// report a 422 located at `["query", name]`; unknown parameters are ignored.
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        let query = parts.uri.query().unwrap_or("");
        Ok(QueryParams(form_urlencoded::parse(query.as_bytes()).into_owned().collect()))
    }
}

fn query_error(name: &str, kind: &'static str, msg: impl Into<String>) -> Error {
    Error::invalid(FieldError::query(name, kind, msg))
}

impl QueryParams {
    /// The last value given for `name` (a repeated scalar keeps the last, like FastAPI).
    pub fn string(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter (`sources=api&sources=playground`).
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    /// An integer within `min..=max`, or `default` when absent.
    pub fn int(&self, name: &str, default: Option<i64>, min: i64, max: i64) -> Result<Option<i64>> {
        let Some(raw) = self.string(name) else {
            return Ok(default);
        };
        let value: i64 = raw
            .trim()
            .parse()
            .map_err(|_| query_error(name, "int_parsing", format!("Input should be a valid integer, got `{raw}`")))?;
        if value < min || value > max {
            return Err(query_error(
                name,
                "value_error",
                format!("Input should be between {min} and {max}, got {value}"),
            ));
        }
        Ok(Some(value))
    }

    /// A required integer within `min..=max`.
    pub fn required_int(&self, name: &str, min: i64, max: i64) -> Result<i64> {
        self.int(name, None, min, max)?.ok_or_else(|| query_error(name, "missing", "Field required"))
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>> {
        match self.string(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(None),
            Some("true" | "1" | "yes" | "on") => Ok(Some(true)),
            Some("false" | "0" | "no" | "off") => Ok(Some(false)),
            Some(other) => {
                Err(query_error(name, "bool_parsing", format!("Input should be a valid boolean, got `{other}`")))
            }
        }
    }

    /// A JSON-object filter. The Python SDKs send the JSON string `"~?~unset~?~sentinel~?~"`
    /// when the caller gave no filter, so anything that is valid JSON but not an object
    /// means "no filter"; text that is not JSON at all is an error.
    pub fn json_object(&self, name: &str) -> Result<Option<Map<String, Value>>> {
        let Some(raw) = self.string(name) else {
            return Ok(None);
        };
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(_) => Ok(None),
            Err(_) => Err(query_error(name, "json_invalid", "Input should be a JSON object")),
        }
    }
}

/// One path parameter as a string (every id is a plain string on the wire).
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParam(value)),
            Err(rejection) => {
                Err(Error::invalid(FieldError::new(vec!["path".into()], "value_error", rejection.body_text())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> QueryParams {
        QueryParams(form_urlencoded::parse(query.as_bytes()).into_owned().collect())
    }

    #[test]
    fn the_python_sdk_metadata_sentinel_means_no_filter() {
        let q = params("metadata=%22~%3F~unset~%3F~sentinel~%3F~%22");

        assert_eq!(q.json_object("metadata").unwrap(), None);
    }

    #[test]
    fn a_metadata_object_is_a_filter() {
        let q = params("metadata=%7B%22a%22%3A1%7D");

        assert_eq!(q.json_object("metadata").unwrap().unwrap()["a"], 1);
    }

    #[test]
    fn repeated_keys_are_all_kept() {
        let q = params("sources=api&sources=playground");

        assert_eq!(q.strings("sources"), vec!["api", "playground"]);
    }

    #[test]
    fn an_out_of_range_integer_is_located_in_the_query() {
        let q = params("page_size=0");

        match q.int("page_size", Some(20), 1, 1000) {
            Err(Error::Invalid(errors)) => assert_eq!(errors[0].loc, vec![Loc::from("query"), "page_size".into()]),
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// An integer parameter is its value within bounds, or a 422 at `["query", name]`.
        #[test]
        fn an_integer_parameter_is_in_range_or_a_located_error(raw in ".*", min in -5i64..5, span in 0i64..100) {
            let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("n", &raw).finish();
            let q = QueryParams(form_urlencoded::parse(query.as_bytes()).into_owned().collect());
            match q.int("n", None, min, min + span) {
                Ok(Some(n)) => {
                    prop_assert!((min..=min + span).contains(&n));
                    prop_assert_eq!(raw.trim().parse::<i64>().ok(), Some(n));
                }
                Ok(None) => prop_assert!(false, "a given parameter read as absent"),
                Err(Error::Invalid(errors)) => prop_assert_eq!(&errors[0].loc, &vec![Loc::from("query"), "n".into()]),
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }

        /// A boolean parameter is true, false or a 422; never read as absent.
        #[test]
        fn a_boolean_parameter_is_a_boolean_or_a_located_error(raw in ".*") {
            let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("b", &raw).finish();
            let q = QueryParams(form_urlencoded::parse(query.as_bytes()).into_owned().collect());
            match q.bool("b") {
                Ok(value) => prop_assert!(value.is_some()),
                Err(Error::Invalid(errors)) => prop_assert_eq!(&errors[0].loc, &vec![Loc::from("query"), "b".into()]),
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
