//! A fake MCP server (Streamable HTTP) for the connector tests: five tools (one answers 500,
//! one has a dotted name), session ids
//! (which a test can expire), `tools/list` answered as JSON and `tools/call` as an SSE
//! stream (both forms the spec allows), every call recorded.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// A JSON-RPC method and the `traceparent` its request carried.
type MethodTrace = (String, Option<String>);

#[derive(Clone, Default)]
struct Shared {
    /// The session id the server currently knows (`initialize` issues a new one).
    session: Arc<Mutex<String>>,
    initializations: Arc<Mutex<usize>>,
    calls: Arc<Mutex<Vec<Value>>>,
    /// `Authorization` headers received, in order.
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    /// Each request's method and `traceparent` header, in order.
    traceparents: Arc<Mutex<Vec<MethodTrace>>>,
}

pub struct FakeMcp {
    pub url: String,
    shared: Shared,
}

impl FakeMcp {
    pub async fn start() -> FakeMcp {
        let shared = Shared::default();
        let router = Router::new().route("/mcp", post(rpc)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        FakeMcp { url: format!("http://{addr}/mcp"), shared }
    }

    /// The `tools/call` params received so far.
    pub fn calls(&self) -> Vec<Value> {
        self.shared.calls.lock().unwrap().clone()
    }

    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.shared.authorizations.lock().unwrap().clone()
    }

    /// Each request's JSON-RPC method and `traceparent` header (`None`: not sent).
    pub fn traceparents(&self) -> Vec<MethodTrace> {
        self.shared.traceparents.lock().unwrap().clone()
    }

    /// Forgets the session, as a restarted server would: the next request with it gets 404.
    pub fn expire_session(&self) {
        self.shared.session.lock().unwrap().clear();
    }

    pub fn initializations(&self) -> usize {
        *self.shared.initializations.lock().unwrap()
    }

    /// A `[[connector]]` table for palaver's config file.
    pub fn config(&self, id: &str) -> String {
        format!("[[connector]]\nid = \"{id}\"\nurl = \"{}\"\n", self.url)
    }
}

async fn rpc(State(shared): State<Shared>, headers: HeaderMap, Json(message): Json<Value>) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    shared.authorizations.lock().unwrap().push(auth);
    let method = message["method"].as_str().unwrap_or_default();
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
    shared.traceparents.lock().unwrap().push((method.to_owned(), traceparent));
    let id = message["id"].clone();
    if method != "initialize" {
        let known = shared.session.lock().unwrap().clone();
        match headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) {
            None => return (StatusCode::BAD_REQUEST, "missing session").into_response(),
            Some(id) if id != known => return (StatusCode::NOT_FOUND, "unknown session").into_response(),
            Some(_) => {}
        }
    }
    match method {
        "initialize" => (
            [("mcp-session-id", {
                let mut count = shared.initializations.lock().unwrap();
                *count += 1;
                let id = format!("session-{count}");
                *shared.session.lock().unwrap() = id.clone();
                id
            })],
            Json(json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake-orders", "version": "1"}}})),
        )
            .into_response(),
        "notifications/initialized" => StatusCode::ACCEPTED.into_response(),
        "tools/list" => Json(json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
            {"name": "lookup_order", "description": "Finds an order.",
             "inputSchema": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
            {"name": "delete_order", "description": "Deletes an order.",
             "inputSchema": {"type": "object", "properties": {"id": {"type": "integer"}}}},
            {"name": "refund_order", "description": "Refunds an order.",
             "inputSchema": {"type": "object", "properties": {"id": {"type": "integer"}}}},
            {"name": "crash_order", "description": "Breaks the server.",
             "inputSchema": {"type": "object"}},
            {"name": "orders.cancel", "description": "A name chat APIs refuse as a function name.",
             "inputSchema": {"type": "object"}},
        ]}}))
        .into_response(),
        "tools/call" if message["params"]["name"] == "crash_order" => {
            (StatusCode::INTERNAL_SERVER_ERROR, "the tool server crashed").into_response()
        }
        "tools/call" => {
            let params = message["params"].clone();
            shared.calls.lock().unwrap().push(params.clone());
            let (text, is_error) = match params["name"].as_str() {
                Some("lookup_order") => (format!("Order {} has shipped.", params["arguments"]["id"]), false),
                Some("refund_order") => ("Refunds are closed today.".to_owned(), true),
                Some("orders.cancel") => ("Cancelled.".to_owned(), false),
                _ => (format!("Order {} deleted.", params["arguments"]["id"]), false),
            };
            let answer = json!({"jsonrpc": "2.0", "id": id,
                                "result": {"content": [{"type": "text", "text": text}], "isError": is_error}});
            // A notification first: the client must pick the answer by its id.
            let body = format!(
                "event: message\ndata: {}\n\nevent: message\ndata: {answer}\n\n",
                json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}})
            );
            Response::builder().header(header::CONTENT_TYPE, "text/event-stream").body(Body::from(body)).unwrap()
        }
        _ => Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no such method"}}))
            .into_response(),
    }
}
