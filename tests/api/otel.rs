//! OpenTelemetry traces: the real binary, configured by the standard `OTEL_*` variables,
//! exports to an OTLP/HTTP sink in the test; spans, their attributes and their parents are
//! read back from the protobuf it sent.

use crate::cli::{palaver, Server};
use crate::helpers::{fresh_database, Options, TestApp};
use crate::mcp::FakeMcp;
use crate::upstream::{FakeUpstream, Reply};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A span as received, with its resource's attributes.
#[derive(Clone, Debug)]
struct Received {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: serde_json::Map<String, Value>,
    resource: serde_json::Map<String, Value>,
}

impl Received {
    fn attr(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }
}

fn json_of(value: &Option<AnyValue>) -> Value {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(|v| json_of(&Some(v.clone()))).collect())
        }
        other => json!(format!("{other:?}")),
    }
}

fn attributes(attributes: &[KeyValue]) -> serde_json::Map<String, Value> {
    attributes.iter().map(|kv| (kv.key.clone(), json_of(&kv.value))).collect()
}

/// An OTLP/HTTP collector: `POST /v1/traces` with a protobuf body.
struct Sink {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    async fn start() -> Sink {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new().route("/v1/traces", post(export)).with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Sink { url: format!("http://{addr}"), spans }
    }

    /// The spans received once `done` holds of them (waiting up to 15 s).
    async fn spans_when(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..150 {
            let spans = self.spans.lock().unwrap().clone();
            if done(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let spans = self.spans.lock().unwrap().clone();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        panic!("the expected spans did not arrive; received: {names:?}");
    }
}

async fn export(State(spans): State<Arc<Mutex<Vec<Received>>>>, body: Bytes) -> impl axum::response::IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut received = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = attributes(&resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(Received {
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: hex::encode(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
                attributes: attributes(&span.attributes),
                resource: resource.clone(),
            });
        }
    }
    ([(header::CONTENT_TYPE, "application/x-protobuf")], ExportTraceServiceResponse::default().encode_to_vec())
}

/// `palaver serve` exporting to an OTLP sink of its own, answered by a fake upstream.
struct Traced {
    sink: Sink,
    upstream: FakeUpstream,
    server: Server,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _database: Option<Arc<tempfile::TempDir>>,
}

impl Traced {
    /// `config`: more of the TOML config file.
    async fn start(config: &str) -> Traced {
        let (sink, upstream) = (Sink::start().await, FakeUpstream::start().await);
        let dir = tempfile::tempdir().unwrap();
        let (database_url, database) = fresh_database().await;
        let config_file = dir.path().join("palaver.toml");
        std::fs::write(&config_file, format!("{config}\n[code_interpreter]\nsandbox = \"off\"\n")).unwrap();
        let mut command = palaver();
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--database-url", &database_url])
            .args(["--upstream-url", &upstream.url, "--config"])
            .arg(&config_file)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &sink.url);
        let mut server = Server::start(command);
        let base = format!("http://{}", server.addr());
        Traced { sink, upstream, server, base, client: reqwest::Client::new(), _dir: dir, _database: database }
    }
}

/// The JSON answer to a POST of `body` (set-up requests, whose tracing is not under test).
async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = client.post(url).json(body).send().await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.json().await.unwrap()
}

/// The span named `name` among `spans`.
fn named<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span `{name}` in {names:?}"))
}

/// The names of `span`'s ancestors, nearest first, as far as they are in `spans`.
fn ancestors<'a>(spans: &'a [Received], span: &Received) -> Vec<&'a str> {
    let mut names = Vec::new();
    let mut parent = span.parent_span_id.clone();
    while let Some(found) = spans.iter().find(|s| s.span_id == parent) {
        names.push(found.name.as_str());
        parent = found.parent_span_id.clone();
    }
    names
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

// Several threads: the sink and the fake upstream answer while the test waits on the
// server's process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_turn_is_one_trace_under_the_callers_from_the_request_to_the_model_round_and_the_store() {
    let Traced { sink, upstream, server, base, client, _dir, _database } = Traced::start("").await;
    upstream.script([Reply::Text("Hello there."), Reply::Text("Fine, thanks.")]);
    let started =
        post_json(&client, &format!("{base}/v1/conversations"), &json!({"model": "fake-model", "inputs": "Hi"})).await;
    let conversation_id = started["conversation_id"].as_str().unwrap().to_owned();

    let response = client
        .post(format!("{base}/v1/conversations/{conversation_id}"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .header("x-request-id", "req-traced")
        .json(&json!({"inputs": "How are you?", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("conversation.response.done"), "{body}");
    // Spans are sent in batches every few seconds: only the shutdown's flush sends these.
    assert!(server.terminate().success());

    let spans = sink.spans_when(|spans| spans.iter().any(|s| s.trace_id == TRACE_ID && s.name == "commit_turn")).await;
    let traced: Vec<Received> = spans.iter().filter(|s| s.trace_id == TRACE_ID).cloned().collect();
    let request = named(&traced, "POST /v1/conversations/{conversation_id}");
    assert_eq!(request.parent_span_id, CALLER_SPAN_ID, "the caller's span is the request's parent");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(request.attr("http.request.method"), "POST");
    assert_eq!(request.attr("http.route"), "/v1/conversations/{conversation_id}");
    assert_eq!(request.attr("url.path"), format!("/v1/conversations/{conversation_id}").as_str());
    assert_eq!(request.attr("http.response.status_code"), 200);
    assert_eq!(request.attr("request_id"), "req-traced");
    assert_eq!(request.resource["service.name"], "palaver");

    let turn = named(&traced, "turn");
    assert_eq!(turn.attr("gen_ai.conversation.id"), conversation_id.as_str());
    assert_eq!(turn.attr("palaver.turn.rounds"), 1);
    assert!(ancestors(&traced, turn).contains(&request.name.as_str()), "{:?}", ancestors(&traced, turn));

    let round = named(&traced, "chat fake-model");
    assert_eq!(round.kind, SpanKind::Client as i32);
    assert_eq!(round.attr("gen_ai.operation.name"), "chat");
    assert_eq!(round.attr("gen_ai.provider.name"), "openai");
    assert_eq!(round.attr("gen_ai.request.model"), "fake-model");
    assert_eq!(round.attr("gen_ai.response.model"), "fake-model");
    assert_eq!(round.attr("gen_ai.usage.input_tokens"), 11);
    assert_eq!(round.attr("gen_ai.usage.output_tokens"), 2);
    assert_eq!(round.attr("gen_ai.response.finish_reasons"), &json!(["stop"]));
    let chain = ancestors(&traced, round);
    assert_eq!(chain.first(), Some(&"turn"), "the round is the turn's: {chain:?}");
    assert_eq!(chain.last(), Some(&request.name.as_str()), "and the turn the request's: {chain:?}");

    let system = if fresh_database_is_postgres() { "postgresql" } else { "sqlite" };
    for operation in ["conversation_for_turn", "commit_turn"] {
        let store = named(&traced, operation);
        assert_eq!(store.attr("db.system.name"), system);
        assert_eq!(store.attr("db.operation.name"), operation);
        assert!(ancestors(&traced, store).contains(&request.name.as_str()), "{operation} is in the request");
    }
    assert_eq!(ancestors(&traced, named(&traced, "commit_turn")).first(), Some(&"turn"));

    // The upstream saw the round as the caller of its request, in the same trace.
    let traceparents = upstream.traceparents();
    assert_eq!(traceparents.len(), 2);
    assert_eq!(traceparents[1].as_deref(), Some(format!("00-{TRACE_ID}-{}-01", round.span_id).as_str()));
    // The first turn, with no caller's trace, is a trace of its own.
    let first = traceparents[0].as_deref().expect("the first turn's request carries a traceparent");
    assert!(!first.contains(TRACE_ID), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_tool_run_is_a_span_of_the_turn_between_its_model_rounds() {
    let mcp = FakeMcp::start().await;
    let Traced { sink, upstream, server, base, client, _dir, _database } = Traced::start(&mcp.config("orders")).await;
    upstream
        .script([Reply::ToolCalls("", vec![("call_1", "lookup_order", r#"{"id": 42}"#)]), Reply::Text("It shipped.")]);
    let body = json!({"model": "fake-model", "inputs": "Where is order 42?",
                      "tools": [{"type": "connector", "connector_id": "orders"}]});

    let response = client.post(format!("{base}/v1/conversations")).json(&body).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert!(server.terminate().success());
    let spans = sink.spans_when(|spans| spans.iter().any(|s| s.name == "commit_turn")).await;
    let tool = named(&spans, "execute_tool lookup_order");
    assert_eq!(tool.attr("gen_ai.operation.name"), "execute_tool");
    assert_eq!(tool.attr("gen_ai.tool.name"), "lookup_order");
    assert_eq!(tool.attr("gen_ai.tool.call.id"), "call_1");
    assert_eq!(tool.attr("palaver.tool.outcome"), "ok");
    assert_eq!(ancestors(&spans, tool).first(), Some(&"turn"), "the tool runs in the turn, not in a round");
    let rounds: Vec<&Received> = spans.iter().filter(|s| s.name == "chat fake-model").collect();
    assert_eq!(rounds.len(), 2);
    let reasons: Vec<&Value> = rounds.iter().map(|r| r.attr("gen_ai.response.finish_reasons")).collect();
    assert!(reasons.contains(&&json!(["tool_calls"])) && reasons.contains(&&json!(["stop"])), "{reasons:?}");
    assert!(rounds.iter().all(|r| r.trace_id == tool.trace_id));
    // The tool server was called as the tool's span.
    let call = mcp.traceparents().into_iter().find(|(method, _)| method == "tools/call").unwrap();
    assert_eq!(call.1, Some(format!("00-{}-{}-01", tool.trace_id, tool.span_id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_completion_is_one_model_round_of_its_request_like_a_turns() {
    let Traced { sink, upstream, server, base, client, _dir, _database } = Traced::start("").await;
    let agent = post_json(&client, &format!("{base}/v1/agents"), &json!({"model": "fake-model", "name": "a"})).await;
    upstream.script([Reply::Text("Hello there."), Reply::Text("Hello again.")]);
    let messages = json!([{"role": "user", "content": "Hi"}]);

    let response = client
        .post(format!("{base}/v1/agents/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .json(&json!({"agent_id": agent["id"], "messages": messages}))
        .send()
        .await
        .unwrap();
    let streamed = client
        .post(format!("{base}/v1/agents/completions"))
        .json(&json!({"agent_id": agent["id"], "messages": messages, "stream": true}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert!(streamed.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    assert!(server.terminate().success());
    let spans = sink.spans_when(|spans| spans.iter().filter(|s| s.name == "chat fake-model").count() == 2).await;
    let streamed_round = spans.iter().find(|s| s.name == "chat fake-model" && s.trace_id != TRACE_ID).unwrap();
    assert_eq!(streamed_round.attr("gen_ai.usage.output_tokens"), 2, "a streamed answer's round too");
    assert_eq!(streamed_round.attr("gen_ai.response.finish_reasons"), &json!(["stop"]));
    assert_eq!(ancestors(&spans, streamed_round).last(), Some(&"POST /v1/agents/completions"));
    let traced: Vec<Received> = spans.iter().filter(|s| s.trace_id == TRACE_ID).cloned().collect();
    let request = named(&traced, "POST /v1/agents/completions");
    assert_eq!(request.parent_span_id, CALLER_SPAN_ID);
    let round = named(&traced, "chat fake-model");
    assert_eq!(round.kind, SpanKind::Client as i32);
    assert_eq!(round.attr("gen_ai.operation.name"), "chat");
    assert_eq!(round.attr("gen_ai.provider.name"), "openai");
    assert_eq!(round.attr("gen_ai.system"), "openai");
    assert_eq!(round.attr("gen_ai.request.model"), "fake-model");
    assert_eq!(round.attr("gen_ai.response.model"), "fake-model");
    assert_eq!(round.attr("gen_ai.usage.input_tokens"), 11);
    assert_eq!(round.attr("gen_ai.usage.output_tokens"), 2);
    assert_eq!(round.attr("gen_ai.response.finish_reasons"), &json!(["stop"]));
    assert_eq!(round.attr("palaver.round"), 1);
    assert!(ancestors(&traced, round).contains(&request.name.as_str()), "{:?}", ancestors(&traced, round));
    assert!(traced.iter().all(|s| s.name != "turn"), "nothing is stored: no turn");
    let traceparents = upstream.traceparents();
    assert_eq!(traceparents[0].as_deref(), Some(format!("00-{TRACE_ID}-{}-01", round.span_id).as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_chat_completion_is_a_client_span_naming_the_model() {
    let Traced { sink, upstream, server, base, client, _dir, _database } = Traced::start("").await;
    upstream.script([Reply::Text("relayed")]);

    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .json(&json!({"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("relayed"));
    assert!(server.terminate().success());
    let spans =
        sink.spans_when(|spans| spans.iter().any(|s| s.trace_id == TRACE_ID && s.name == "chat fake-model")).await;
    let traced: Vec<Received> = spans.iter().filter(|s| s.trace_id == TRACE_ID).cloned().collect();
    let relay = named(&traced, "chat fake-model");
    assert_eq!(relay.kind, SpanKind::Client as i32);
    assert_eq!(relay.attr("gen_ai.request.model"), "fake-model");
    assert!(ancestors(&traced, relay).contains(&"POST /v1/chat/completions"), "{:?}", ancestors(&traced, relay));
    let traceparents = upstream.traceparents();
    assert_eq!(traceparents, [Some(format!("00-{TRACE_ID}-{}-01", relay.span_id))]);
}

#[tokio::test]
async fn without_otel_settings_no_traceparent_is_read_or_passed_on() {
    let (app, upstream) = TestApp::with_upstream_options(Options::default()).await;

    let response = app
        .request(reqwest::Method::POST, "/v1/conversations")
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .json(&json!({"model": "fake-model", "inputs": "Hi"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(upstream.traceparents(), [None]);
}

#[test]
fn an_otlp_protocol_other_than_http_protobuf_stops_the_start_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());

    let output = palaver()
        .args(["serve", "--addr", "127.0.0.1:0", "--database-url", &url])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        "error: OTEL_EXPORTER_OTLP_PROTOCOL is `grpc`: palaver exports traces over `http/protobuf` only"
    );
}

fn fresh_database_is_postgres() -> bool {
    std::env::var("TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty())
}
