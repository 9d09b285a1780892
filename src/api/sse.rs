//! SSE framing, one framer for every streaming route: the conversation routes (`event:` +
//! one-line JSON `data:`, no `[DONE]`, as the official SDKs' streaming contract has it) and
//! the chat-completion routes (data-only chunks closed by `[DONE]`). Keep-alive comments on
//! idle streams; streams end on server shutdown so graceful shutdown never waits on them
//! (a conversation's run goes on and is stored).

use crate::domain::events::RunEvent;
use crate::engine::streams::Frame;
use crate::AppState;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use serde::Serialize;
use std::convert::Infallible;

/// Writes `frames` as the response body.
fn respond(state: &AppState, frames: impl Stream<Item = Event> + Send + 'static) -> Response {
    // Counted as open while the body is: the guard goes with the stream.
    let open = crate::telemetry::stream_opened();
    let frames = frames
        .map(move |event| {
            let _open = &open;
            Ok::<Event, Infallible>(event)
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    let headers = [("x-accel-buffering", "no"), ("cache-control", "no-cache")];
    (headers, Sse::new(frames).keep_alive(KeepAlive::default())).into_response()
}

/// One-line JSON; `None` (logged) for a value that cannot be serialized.
fn json<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).map_err(|error| tracing::error!(%error, "an event could not be serialized")).ok()
}

/// A run's events, named and numbered from 0 (the `id:` a resume starts after), until
/// its terminal event.
pub fn events(state: &AppState, events: mpsc::Receiver<RunEvent>) -> Response {
    // Internal markers (entry completion) have no wire name and no number.
    let wire = events.filter(|event| std::future::ready(event.name().is_some()));
    numbered_events(state, wire.enumerate().map(|(n, event)| (n as u64, event)))
}

/// Events with their numbers in the run, until the terminal event.
pub fn numbered_events(state: &AppState, events: impl Stream<Item = (u64, RunEvent)> + Send + 'static) -> Response {
    let frames = async_stream::stream! {
        futures::pin_mut!(events);
        while let Some((n, event)) = events.next().await {
            let Some(name) = event.name() else { continue };
            if let Some(data) = json(&event) {
                yield numbered(name, n, data);
            }
            if event.is_terminal() {
                break;
            }
        }
    };
    respond(state, frames)
}

/// A resumed run's events, already serialized, until the terminal one.
pub fn frames(state: &AppState, frames: impl Stream<Item = Frame> + Send + 'static) -> Response {
    let frames = async_stream::stream! {
        futures::pin_mut!(frames);
        while let Some(frame) = frames.next().await {
            let terminal = frame.is_terminal();
            yield numbered(&frame.name, frame.number, frame.data);
            if terminal {
                break;
            }
        }
    };
    respond(state, frames)
}

/// An event in its own block with its number: a block without `data:` breaks SDK parsers.
fn numbered(name: &str, number: u64, data: String) -> Event {
    Event::default().event(name).id(number.to_string()).data(data)
}

/// Chat-completion chunks, data-only, closed by `[DONE]`.
pub fn chunks<T: Serialize>(state: &AppState, chunks: impl Stream<Item = T> + Send + 'static) -> Response {
    let frames = chunks
        .filter_map(|chunk| std::future::ready(json(&chunk).map(|data| Event::default().data(data))))
        .chain(futures::stream::once(async { Event::default().data("[DONE]") }));
    respond(state, frames)
}

/// One frame of a conversation stream as [`numbered_events`] writes it; its schema is what
/// `/openapi.json` documents for `text/event-stream`.
#[derive(utoipa::ToSchema)]
#[schema(as = ConversationEventFrame)]
pub struct EventFrame {
    /// The event's name, the same string as its JSON `type`.
    #[schema(
        pattern = r"^(conversation\.response\.(started|done|error)|message\.output\.delta|function\.call\.delta|tool\.execution\.(started|done)|agent\.handoff\.(started|done))$"
    )]
    pub event: String,
    /// Its number in the run, from 0: what `Last-Event-ID` names to resume after it.
    #[schema(pattern = "^[0-9]+$")]
    pub id: String,
    /// The event as one line of JSON.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// One frame of a chat-completion stream as [`chunks`] writes it.
#[derive(utoipa::ToSchema)]
#[schema(as = CompletionChunkFrame)]
pub struct ChunkFrame {
    /// A `chat.completion.chunk` as one line of JSON; the last frame is `[DONE]`.
    pub data: String,
}
