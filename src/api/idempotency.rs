//! `Idempotency-Key` on the routes that create or change something (starting, appending to
//! and restarting conversations; creating and updating agents). The first request with a
//! key runs; its successful answer — status, body, and for a stream every event — is kept
//! (`engine::idempotency`) and replayed to every retry with the same key and body, which
//! runs nothing. A retry while the first still runs waits for its answer, or for a stream
//! in the same process follows it as it is written. An error answer is not kept, so the
//! client can retry after a failure; the same key with another body is a 422.
//!
//! The first request's response is read to its end by a task of its own: a client that
//! goes away does not cut the answer its retry will get.

use super::auth::Workspace;
use crate::domain::ids::WorkspaceId;
use crate::error::{Error, FieldError, Loc};
use crate::store::{KeyClaim, KeyUse, StoredAnswer};
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

pub const HEADER: &str = "idempotency-key";
/// Marks a replayed answer.
const REPLAYED: &str = "idempotent-replayed";
const LONGEST_KEY: usize = 255;
/// How often a retry looks whether the request it waits for has answered.
const POLL: Duration = Duration::from_millis(50);

/// The routes that honour the header, as matched.
fn honoured(method: &Method, route: &str) -> bool {
    matches!(
        (method.as_str(), route),
        ("POST", "/v1/conversations")
            | ("POST", "/v1/conversations/{conversation_id}")
            | ("POST", "/v1/conversations/{conversation_id}/restart")
            | ("POST", "/v1/agents")
            | ("PATCH" | "POST", "/v1/agents/{agent_id}")
            | ("PATCH" | "POST", "/v1/agents/{agent_id}/version")
    )
}

/// Answers being written in this process, by workspace and key: a retry of a stream
/// follows one instead of waiting for its end.
#[derive(Default)]
pub struct Flights(Mutex<HashMap<(WorkspaceId, String), Arc<Flight>>>);

/// An answer being written: its head, the body so far, and how far it got.
struct Flight {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Mutex<Vec<u8>>,
    /// (bytes written, finished).
    progress: watch::Sender<(usize, bool)>,
}

impl Flights {
    fn get(&self, ws: &WorkspaceId, key: &str) -> Option<Arc<Flight>> {
        self.lock().get(&(ws.clone(), key.to_owned())).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(WorkspaceId, String), Arc<Flight>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The request a key was used with: method, path and body.
fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut digest = Sha256::new();
    digest.update(method.as_str());
    digest.update(b" ");
    digest.update(path);
    digest.update(b"\n");
    digest.update(body);
    hex::encode(digest.finalize())
}

fn header_error(message: &str) -> Error {
    Error::invalid(FieldError::new(vec![Loc::Key("header".into()), Loc::Key(HEADER.into())], "value_error", message))
}

/// The middleware (a route layer: the matched route tells whether the header counts).
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(HEADER) else { return next.run(request).await };
    let route = request.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
    if !honoured(request.method(), route) {
        return next.run(request).await;
    }
    let key = match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= LONGEST_KEY && key.bytes().all(|b| b.is_ascii_graphic()) => {
            key.to_owned()
        }
        _ => {
            return header_error("An Idempotency-Key is 1 to 255 visible ASCII characters.").into_response();
        }
    };
    let (mut parts, body) = request.into_parts();
    let ws = match Workspace::from_request_parts(&mut parts, &state).await {
        Ok(Workspace(ws)) => ws,
        Err(error) => return error.into_response(),
    };
    let body = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => return Error::PayloadTooLarge { limit: state.max_body_bytes }.into_response(),
    };
    let fingerprint = fingerprint(&parts.method, parts.uri.path(), &body);
    loop {
        match state.engine.claim_key(KeyUse { ws: &ws, key: &key, fingerprint: &fingerprint }).await {
            Err(error) => return error.into_response(),
            Ok(KeyClaim::Claimed) => {
                let request = Request::from_parts(parts, Body::from(body));
                // A task of its own: the key is settled even if this client goes away.
                let first = run_first(state, ws, key, fingerprint, request, next);
                let first = tokio::spawn(first.instrument(tracing::Span::current()));
                return first
                    .await
                    .unwrap_or_else(|_| Error::Internal(anyhow::anyhow!("the request's task failed")).into_response());
            }
            Ok(KeyClaim::Answered(answer)) => return replay(answer),
            Ok(KeyClaim::Mismatch) => {
                return header_error("This Idempotency-Key was used with another request; use a new key.")
                    .into_response();
            }
            Ok(KeyClaim::Running) => {
                if let Some(flight) = state.flights.get(&ws, &key) {
                    return follow(flight);
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Runs the request that claimed the key and keeps its answer if it succeeds.
async fn run_first(
    state: AppState,
    ws: WorkspaceId,
    key: String,
    fingerprint: String,
    request: Request,
    next: Next,
) -> Response {
    // While it runs, the claim is kept alive: a retry waits for it, and takes it over only
    // if this process dies.
    let heartbeat = {
        let (engine, ws, key, fingerprint) = (state.engine.clone(), ws.clone(), key.clone(), fingerprint.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::engine::idempotency::HEARTBEAT);
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(error) = engine.touch_key(KeyUse { ws: &ws, key: &key, fingerprint: &fingerprint }).await {
                    tracing::warn!(%error, "an idempotency claim could not be kept alive");
                }
            }
        })
    };
    let heartbeat = heartbeat.abort_handle();
    // A task of its own, so that a panic in the handler still settles the key.
    let response = match tokio::spawn(next.run(request).instrument(tracing::Span::current())).await {
        Ok(response) => response,
        Err(_) => Error::Internal(anyhow::anyhow!("the request's task failed")).into_response(),
    };
    let (parts, body) = response.into_parts();
    let engine = state.engine.clone();
    if !parts.status.is_success() {
        heartbeat.abort();
        if let Err(error) = engine.release_key(KeyUse { ws: &ws, key: &key, fingerprint: &fingerprint }).await {
            tracing::warn!(%error, "an idempotency key could not be released");
        }
        return Response::from_parts(parts, body);
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let flight = Arc::new(Flight {
        status: parts.status,
        content_type: content_type.clone(),
        body: Mutex::new(Vec::new()),
        progress: watch::channel((0, false)).0,
    });
    state.flights.lock().insert((ws.clone(), key.clone()), flight.clone());
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, axum::Error>>();
    let flights = state.flights.clone();
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        let mut complete = true;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => {
                    let written = {
                        let mut kept = flight.body.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        kept.extend_from_slice(&bytes);
                        kept.len()
                    };
                    flight.progress.send_replace((written, false));
                    // A client that left no longer reads; the answer is still kept whole.
                    let _ = tx.unbounded_send(Ok(bytes));
                }
                Err(error) => {
                    complete = false;
                    let _ = tx.unbounded_send(Err(error));
                    break;
                }
            }
        }
        // Copied, not taken: followers may still be reading it.
        let body = flight.body.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let content_type = content_type.and_then(|v| v.to_str().ok().map(str::to_owned)).unwrap_or_default();
        let stream = content_type.starts_with("text/event-stream");
        // A stream that ended in an error (or was cut) is an error answer: not kept.
        let succeeded = complete && (!stream || last_event(&body) == Some("conversation.response.done"));
        heartbeat.abort();
        let used = KeyUse { ws: &ws, key: &key, fingerprint: &fingerprint };
        let settled = if succeeded {
            let answer = StoredAnswer { status: flight.status.as_u16(), content_type, body };
            engine.finish_key(used, &answer).await
        } else {
            engine.release_key(used).await
        };
        if let Err(error) = settled {
            tracing::warn!(%error, "an idempotency key could not be settled");
        }
        flights.lock().remove(&(ws, key));
        flight.progress.send_replace((usize::MAX, true));
    });
    Response::from_parts(parts, Body::from_stream(rx))
}

/// The name of the last event of an SSE body.
fn last_event(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    text.rsplit("\n\n").find_map(|block| block.lines().find_map(|line| line.strip_prefix("event:")).map(str::trim))
}

/// The kept answer, again.
fn replay(answer: StoredAnswer) -> Response {
    crate::telemetry::idempotent_replay();
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    if let Ok(content_type) = HeaderValue::from_str(&answer.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// The answer of a request still being written in this process, from its start, as it
/// is written.
fn follow(flight: Arc<Flight>) -> Response {
    crate::telemetry::idempotent_replay();
    let mut progress = flight.progress.subscribe();
    let (status, content_type) = (flight.status, flight.content_type.clone());
    let body = async_stream::stream! {
        let mut sent = 0;
        loop {
            let (_, finished) = *progress.borrow_and_update();
            let next: Vec<u8> = {
                let kept = flight.body.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                kept.get(sent..).map(<[u8]>::to_vec).unwrap_or_default()
            };
            if !next.is_empty() {
                sent += next.len();
                yield Ok::<Bytes, std::io::Error>(Bytes::from(next));
            }
            if finished || progress.changed().await.is_err() {
                break;
            }
        }
    };
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_event_of_a_stream_names_how_it_ended() {
        let body = b"event: conversation.response.started\ndata: {}\n\nevent: conversation.response.done\ndata: {}\n\n";
        assert_eq!(last_event(body), Some("conversation.response.done"));
        assert_eq!(last_event(b": keep-alive\n\n"), None);
    }

    #[test]
    fn a_fingerprint_tells_requests_apart_by_method_path_and_body() {
        let a = fingerprint(&Method::POST, "/v1/agents", b"{}");
        assert_eq!(a, fingerprint(&Method::POST, "/v1/agents", b"{}"));
        assert_ne!(a, fingerprint(&Method::POST, "/v1/agents", b"{ }"));
        assert_ne!(a, fingerprint(&Method::PATCH, "/v1/agents", b"{}"));
        assert_ne!(a, fingerprint(&Method::POST, "/v1/conversations", b"{}"));
    }
}
