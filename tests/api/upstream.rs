//! A scripted fake of an OpenAI-compatible model server, over real HTTP. Each chat request
//! takes the next scripted reply (text, tool calls, an error status, a cut or slow stream)
//! and is recorded, so tests assert exactly what palaver sent upstream.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub enum Reply {
    /// A streamed answer, one chunk per word.
    Text(&'static str),
    /// Text (possibly empty) then tool calls `(id, name, arguments)`, arguments split in two
    /// fragments.
    ToolCalls(&'static str, Vec<(&'static str, &'static str, &'static str)>),
    /// An HTTP error with this status and body.
    Status(u16, &'static str),
    /// Some words, then the connection drops without a finish.
    Cut(&'static str),
    /// Words spaced by a delay.
    Slow(&'static str, Duration),
    /// Sends the first word, then waits until `release()` before the rest.
    Gated(&'static str),
    /// Headers, then silence.
    Hang,
    /// Waits until `release()`, then answers with the inner reply (nothing is sent before).
    Held(Box<Reply>),
    /// One chunk per item, each the delta's `content` as given (a string, or a list of
    /// parts such as Mistral's `reference` chunks).
    Pieces(Vec<Value>),
}

#[derive(Clone, Default)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Value>>>,
    /// The `traceparent` header of each chat request.
    traceparents: Arc<Mutex<Vec<Option<String>>>>,
    gate: Arc<Notify>,
}

pub struct FakeUpstream {
    /// Base URL including `/v1`, as `PALAVER_UPSTREAM_URL` takes it.
    pub url: String,
    shared: Shared,
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let shared = Shared::default();
        let router = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(|| async { Json(json!({"object": "list", "data": [{"id": "fake-model"}]})) }))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        FakeUpstream { url: format!("http://{addr}/v1"), shared }
    }

    /// Queues replies for the next chat requests (after them: a default text answer).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    /// Every chat request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The `traceparent` header of each chat request so far (`None`: not sent).
    pub fn traceparents(&self) -> Vec<Option<String>> {
        self.shared.traceparents.lock().unwrap().clone()
    }

    pub fn last_request(&self) -> Value {
        self.requests().last().cloned().expect("the upstream received a request")
    }

    /// Lets a `Gated` reply finish.
    pub fn release(&self) {
        self.shared.gate.notify_waiters();
        self.shared.gate.notify_one();
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> Bytes {
    let body = json!({"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    Bytes::from(format!("data: {body}\n\n"))
}

fn usage_chunk(completion_tokens: usize) -> Bytes {
    let body = json!({"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "fake-model", "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": completion_tokens, "total_tokens": 11 + completion_tokens}});
    Bytes::from(format!("data: {body}\n\n"))
}

fn words(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    for (i, word) in text.split(' ').enumerate() {
        pieces.push(if i == 0 { word.to_owned() } else { format!(" {word}") });
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

fn sse(stream: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static) -> Response {
    Response::builder().header(header::CONTENT_TYPE, "text/event-stream").body(Body::from_stream(stream)).unwrap()
}

/// A streamed answer of one chunk per content piece.
fn pieces(contents: Vec<Value>) -> Response {
    let count = contents.len();
    let stream = async_stream::stream! {
        for content in contents {
            yield Ok(chunk(json!({"role": "assistant", "content": content}), None));
        }
        yield Ok(chunk(json!({}), Some("stop")));
        yield Ok(usage_chunk(count));
        yield Ok(Bytes::from("data: [DONE]\n\n"));
    };
    sse(stream)
}

async fn chat(State(shared): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let streamed = body["stream"] == true;
    shared.requests.lock().unwrap().push(body);
    let response = scripted(shared, headers).await;
    if streamed {
        response
    } else {
        whole(response)
    }
}

/// The scripted answer as one JSON body, for a request that did not ask for a stream: the
/// streamed answer's chunks, gathered as they come (delays and gates included), then sent
/// at once; a stream cut short is a JSON body cut short.
fn whole(response: Response) -> Response {
    let is_stream = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "text/event-stream");
    if !is_stream {
        return response;
    }
    let mut chunks = response.into_body().into_data_stream();
    let body = async_stream::stream! {
        use futures::StreamExt;
        let mut sse = Vec::new();
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => sse.extend_from_slice(&bytes),
                Err(error) => {
                    yield Ok(Bytes::from_static(b"{\"id\":\"cmpl-1\",\"choices\":[{\"message\":{\"content\":\""));
                    yield Err(std::io::Error::other(error));
                    return;
                }
            }
        }
        yield Ok::<Bytes, std::io::Error>(Bytes::from(gathered(&String::from_utf8_lossy(&sse)).to_string()));
    };
    Response::builder().header(header::CONTENT_TYPE, "application/json").body(Body::from_stream(body)).unwrap()
}

/// The chat completion a stream of chunks adds up to.
fn gathered(sse: &str) -> Value {
    let (mut parts, mut calls, mut finish, mut usage) =
        (Vec::<Value>::new(), Vec::<Value>::new(), Value::Null, Value::Null);
    for data in sse.lines().filter_map(|line| line.strip_prefix("data: ")).filter(|data| *data != "[DONE]") {
        let chunk: Value = serde_json::from_str(data).unwrap();
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else { continue };
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
        match &choice["delta"]["content"] {
            Value::Array(items) => parts.extend(items.iter().cloned()),
            Value::String(text) => parts.push(json!({"type": "text", "text": text})),
            _ => {}
        }
        for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if calls.len() <= index {
                calls.push(json!({"id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}));
            }
            let arguments = calls[index]["function"]["arguments"].as_str().unwrap().to_owned();
            calls[index]["function"]["arguments"] =
                Value::from(arguments + call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    // Plain text answers are a string, as OpenAI-style servers send them; Mistral's
    // reference chunks keep the list.
    let content = if parts.iter().all(|p| p["type"] == "text") {
        Value::from(parts.iter().map(|p| p["text"].as_str().unwrap()).collect::<String>())
    } else {
        Value::Array(parts)
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({"id": "cmpl-1", "object": "chat.completion", "created": 1, "model": "fake-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
}

/// The next scripted reply, as a stream (or an error status).
async fn scripted(shared: Shared, headers: HeaderMap) -> Response {
    let traceparent = headers.get("traceparent").map(|v| v.to_str().unwrap().to_owned());
    shared.traceparents.lock().unwrap().push(traceparent);
    let mut reply = shared.script.lock().unwrap().pop_front().unwrap_or(Reply::Text("default answer"));
    if let Reply::Held(inner) = reply {
        shared.gate.notified().await;
        reply = *inner;
    }
    match reply {
        Reply::Text(text) => pieces(words(text).into_iter().map(Value::from).collect()),
        Reply::ToolCalls(text, calls) => {
            let stream = async_stream::stream! {
                for piece in words(text) {
                    yield Ok(chunk(json!({"role": "assistant", "content": piece}), None));
                }
                for (index, (id, name, arguments)) in calls.iter().enumerate() {
                    let (head, tail) = arguments.split_at(arguments.len() / 2);
                    yield Ok(chunk(json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                        "function": {"name": name, "arguments": head}}]}), None));
                    yield Ok(chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": tail}}]}), None));
                }
                yield Ok(chunk(json!({}), Some("tool_calls")));
                yield Ok(usage_chunk(calls.len()));
                yield Ok(Bytes::from("data: [DONE]\n\n"));
            };
            sse(stream)
        }
        Reply::Status(status, body) => {
            (StatusCode::from_u16(status).unwrap(), [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Reply::Cut(text) => {
            let stream = async_stream::stream! {
                for piece in words(text) {
                    yield Ok(chunk(json!({"role": "assistant", "content": piece}), None));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                yield Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut"));
            };
            sse(stream)
        }
        Reply::Slow(text, delay) => {
            let pieces = words(text);
            let count = pieces.len();
            let stream = async_stream::stream! {
                for piece in pieces {
                    yield Ok(chunk(json!({"role": "assistant", "content": piece}), None));
                    tokio::time::sleep(delay).await;
                }
                yield Ok(chunk(json!({}), Some("stop")));
                yield Ok(usage_chunk(count));
                yield Ok(Bytes::from("data: [DONE]\n\n"));
            };
            sse(stream)
        }
        Reply::Gated(text) => {
            let pieces = words(text);
            let count = pieces.len();
            let gate = shared.gate.clone();
            let stream = async_stream::stream! {
                let mut pieces = pieces.into_iter();
                if let Some(first) = pieces.next() {
                    yield Ok(chunk(json!({"role": "assistant", "content": first}), None));
                }
                gate.notified().await;
                for piece in pieces {
                    yield Ok(chunk(json!({"content": piece}), None));
                }
                yield Ok(chunk(json!({}), Some("stop")));
                yield Ok(usage_chunk(count));
                yield Ok(Bytes::from("data: [DONE]\n\n"));
            };
            sse(stream)
        }
        Reply::Pieces(contents) => pieces(contents),
        Reply::Held(_) => unreachable!("a held reply was unwrapped above"),
        Reply::Hang => {
            let stream = async_stream::stream! {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                yield Ok::<Bytes, std::io::Error>(Bytes::new());
            };
            sse(stream)
        }
    }
}
