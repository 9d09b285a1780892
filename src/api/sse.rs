//! SSE framing of a run's events (the official SDKs' streaming contract): `event:` + one-line JSON
//! `data:` + blank line, keep-alive comments on idle streams, no `[DONE]`. Streams end on
//! server shutdown so graceful shutdown never waits on them; the run itself goes on.

use crate::domain::events::RunEvent;
use crate::AppState;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::channel::mpsc;
use futures::StreamExt;
use std::convert::Infallible;

pub fn respond(state: &AppState, mut events: mpsc::Receiver<RunEvent>) -> Response {
    let frames = async_stream::stream! {
        while let Some(event) = events.next().await {
            // Internal markers (entry completion) have no wire name.
            let Some(name) = event.name() else { continue };
            match serde_json::to_string(&event) {
                Ok(data) => yield Ok::<Event, Infallible>(Event::default().event(name).data(data)),
                Err(error) => tracing::error!(%error, "an event could not be serialized"),
            }
            if event.is_terminal() {
                break;
            }
        }
    };
    let frames = frames.take_until(state.shutdown.clone().cancelled_owned());
    let headers = [("x-accel-buffering", "no"), ("cache-control", "no-cache")];
    (headers, Sse::new(frames).keep_alive(KeepAlive::default())).into_response()
}
