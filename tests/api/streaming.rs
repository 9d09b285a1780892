//! SSE streaming (the official SDKs' streaming contract): event sequences, ids, parity with the
//! non-streaming response and the stored history, faults and disconnects.

use crate::helpers::{json_of, names, parse_numbered_sse, TestApp};
use crate::upstream::Reply;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

/// Reads SSE events from a live response one at a time.
struct EventReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl EventReader {
    fn new(response: reqwest::Response) -> Self {
        EventReader { body: response.bytes_stream().boxed(), buffer: String::new() }
    }

    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.lines().all(|l| l.starts_with(':') || l.is_empty()) {
                    continue;
                }
                return parse_numbered_sse(&block).into_iter().next().map(|(_, name, data)| (name, data));
            }
            let chunk =
                tokio::time::timeout(Duration::from_secs(10), self.body.next()).await.expect("an event in time")?;
            self.buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }
}

fn concatenated(events: &[(String, Value)], field: &str) -> String {
    events.iter().filter_map(|(_, d)| d[field].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn a_plain_answer_streams_started_deltas_and_done_with_stored_ids_and_content() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("Hello there, general")]);

    let events = app.stream("/v1/conversations", &json!({"model": "m", "inputs": "hi", "stream": true})).await;

    let asked = upstream.last_request();
    assert_eq!((&asked["stream"], &asked["stream_options"]), (&json!(true), &json!({"include_usage": true})));
    assert_eq!(
        names(&events),
        [
            "conversation.response.started",
            "message.output.delta",
            "message.output.delta",
            "message.output.delta",
            "conversation.response.done"
        ]
    );
    let conversation_id = events[0].1["conversation_id"].as_str().unwrap();
    let deltas = &events[1..4];
    assert!(deltas
        .iter()
        .all(|(_, d)| d["id"] == deltas[0].1["id"] && d["output_index"] == 0 && d["content_index"] == 0));
    assert!(deltas.iter().all(|(_, d)| d["role"] == "assistant" && d["model"] == "m"));
    assert_eq!(events[4].1["usage"]["total_tokens"], 14);
    let history = app.history(conversation_id).await;
    assert_eq!(history[1]["id"], deltas[0].1["id"], "event ids equal the stored entry's");
    assert_eq!(history[1]["content"], concatenated(deltas, "content"));
    assert_eq!(history[1]["content"], "Hello there, general");
}

#[tokio::test]
async fn a_function_call_streams_function_call_deltas_then_done() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::ToolCalls("", vec![("call9", "get_weather", r#"{"city": "Paris"}"#)])]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);

    let events =
        app.stream("/v1/conversations", &json!({"model": "m", "tools": tools, "inputs": "hi", "stream": true})).await;

    assert_eq!(
        names(&events),
        ["conversation.response.started", "function.call.delta", "function.call.delta", "conversation.response.done"]
    );
    let calls = &events[1..3];
    assert!(calls
        .iter()
        .all(|(_, d)| d["id"] == calls[0].1["id"] && d["tool_call_id"] == "call9" && d["name"] == "get_weather"));
    assert_eq!(concatenated(calls, "arguments"), r#"{"city": "Paris"}"#);
    let history = app.history(events[0].1["conversation_id"].as_str().unwrap()).await;
    assert_eq!(history[1]["id"], calls[0].1["id"]);
    assert_eq!(history[1]["arguments"], r#"{"city": "Paris"}"#);
}

#[tokio::test]
async fn append_and_restart_stream_too_and_restart_announces_the_new_conversation() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("A1"), Reply::Text("A2"), Reply::Text("B2")]);
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "Q1"})).await;
    let id = start["conversation_id"].as_str().unwrap();

    let appended = app.stream(&format!("/v1/conversations/{id}"), &json!({"inputs": "Q2", "stream": true})).await;
    let restarted = app
        .stream(
            &format!("/v1/conversations/{id}/restart"),
            &json!({"from_entry_id": start["outputs"][0]["id"], "inputs": "Q2b", "stream": true}),
        )
        .await;

    assert_eq!(
        names(&appended),
        ["conversation.response.started", "message.output.delta", "conversation.response.done"]
    );
    assert_eq!(appended[0].1["conversation_id"], id);
    assert_eq!(
        names(&restarted),
        ["conversation.response.started", "message.output.delta", "conversation.response.done"]
    );
    let new_id = restarted[0].1["conversation_id"].as_str().unwrap();
    assert_ne!(new_id, id);
    assert_eq!(app.history(new_id).await[3]["content"], "B2");
    assert_eq!(app.history(id).await[3]["content"], "A2");
}

#[tokio::test]
async fn the_folded_stream_equals_the_response_and_the_stored_history() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([
        Reply::ToolCalls("Let me look.", vec![("c1", "f", r#"{"x": 1}"#)]),
        Reply::ToolCalls("Let me look.", vec![("c1", "f", r#"{"x": 1}"#)]),
    ]);
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);

    let response = app.ok("/v1/conversations", &json!({"model": "m", "tools": tools, "inputs": "go"})).await;
    let events =
        app.stream("/v1/conversations", &json!({"model": "m", "tools": tools, "inputs": "go", "stream": true})).await;

    // Rebuild the outputs from the events, as an SDK would.
    let mut outputs: Vec<Value> = Vec::new();
    for (name, data) in &events {
        let index = data["output_index"].as_u64().map(|i| i as usize);
        match name.as_str() {
            "message.output.delta" => {
                if outputs.len() == index.unwrap() {
                    outputs.push(json!({"type": "message.output", "id": data["id"], "content": ""}));
                }
                let text = format!(
                    "{}{}",
                    outputs[index.unwrap()]["content"].as_str().unwrap(),
                    data["content"].as_str().unwrap()
                );
                outputs[index.unwrap()]["content"] = json!(text);
            }
            "function.call.delta" => {
                if outputs.len() == index.unwrap() {
                    outputs
                        .push(json!({"type": "function.call", "id": data["id"], "tool_call_id": data["tool_call_id"],
                        "name": data["name"], "arguments": ""}));
                }
                let text = format!(
                    "{}{}",
                    outputs[index.unwrap()]["arguments"].as_str().unwrap(),
                    data["arguments"].as_str().unwrap()
                );
                outputs[index.unwrap()]["arguments"] = json!(text);
            }
            _ => {}
        }
    }
    let strip = |entries: &[Value]| -> Vec<Value> {
        entries
            .iter()
            .map(|e| {
                let mut e = e.clone();
                for key in ["id", "created_at", "completed_at", "object", "agent_id", "model", "role"] {
                    e.as_object_mut().unwrap().remove(key);
                }
                e
            })
            .collect()
    };
    let stored = app.history(events[0].1["conversation_id"].as_str().unwrap()).await;

    assert_eq!(strip(&outputs), strip(response["outputs"].as_array().unwrap()));
    assert_eq!(strip(&outputs), strip(&stored[1..]));
    assert_eq!(outputs[0]["id"], stored[1]["id"]);
    assert_eq!(outputs[1]["id"], stored[2]["id"]);
    assert_eq!(events.last().unwrap().1["usage"], response["usage"]);
}

#[tokio::test]
async fn an_upstream_cut_mid_answer_ends_with_an_error_event_and_stores_nothing() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("first"), Reply::Cut("half an answ"), Reply::Text("whole")]);
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "Q1"})).await;
    let id = start["conversation_id"].as_str().unwrap();
    let before = app.history(id).await;

    let events = app.stream(&format!("/v1/conversations/{id}"), &json!({"inputs": "Q2", "stream": true})).await;

    let sequence = names(&events);
    assert_eq!(sequence.first(), Some(&"conversation.response.started"));
    assert_eq!(sequence.last(), Some(&"conversation.response.error"));
    assert!(sequence[1..sequence.len() - 1].iter().all(|n| *n == "message.output.delta"));
    let error = &events.last().unwrap().1;
    assert_eq!(error["code"], 502);
    assert!(error["message"].as_str().unwrap().contains("upstream"), "{error}");
    assert_eq!(app.history(id).await, before);
    let next = app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "Q2"})).await;
    assert_eq!(next["outputs"][0]["content"], "whole");
}

#[tokio::test]
async fn an_upstream_error_status_after_the_stream_began_is_an_error_event() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Status(503, r#"{"message":"overloaded"}"#)]);

    let events = app.stream("/v1/conversations", &json!({"model": "m", "inputs": "hi", "stream": true})).await;

    assert_eq!(names(&events), ["conversation.response.started", "conversation.response.error"]);
    assert_eq!(events[1].1["code"], 503);
    let missing = app.get(&format!("/v1/conversations/{}", events[0].1["conversation_id"].as_str().unwrap())).await;
    assert_eq!(missing.status(), 404, "a failed start stores no conversation");
}

#[tokio::test]
async fn validation_errors_are_ordinary_http_errors_even_when_streaming() {
    let app = TestApp::spawn().await;

    let missing = app.post("/v1/conversations/conv_missing", &json!({"inputs": "x", "stream": true})).await;
    let invalid = app.post("/v1/conversations", &json!({"inputs": "x", "stream": true})).await;

    assert_eq!(json_of(missing, 404).await["code"], "not_found");
    assert_eq!(invalid.status(), 422);
}

#[tokio::test]
async fn the_first_delta_reaches_the_client_while_the_upstream_is_still_answering() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Gated("first then the rest")]);

    let response = app.post("/v1/conversations", &json!({"model": "m", "inputs": "hi", "stream": true})).await;
    let mut reader = EventReader::new(response);
    let started = reader.next().await.unwrap();
    let first = reader.next().await.unwrap();

    // The upstream is still holding back everything after its first word.
    assert_eq!(started.0, "conversation.response.started");
    assert_eq!(first.0, "message.output.delta");
    assert_eq!(first.1["content"], "first");
    upstream.release();
    let mut rest = Vec::new();
    while let Some(event) = reader.next().await {
        rest.push(event);
    }
    assert_eq!(rest.last().unwrap().0, "conversation.response.done");
    assert_eq!(format!("first{}", concatenated(&rest, "content")), "first then the rest");
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_still_gets_its_turn_stored() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("kept"), Reply::Gated("answer finished without anyone listening")]);
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "Q1"})).await;
    let id = start["conversation_id"].as_str().unwrap();

    let response = app.post(&format!("/v1/conversations/{id}"), &json!({"inputs": "Q2", "stream": true})).await;
    let mut reader = EventReader::new(response);
    reader.next().await.unwrap();
    reader.next().await.unwrap();
    drop(reader);
    upstream.release();

    let mut history = Vec::new();
    for _ in 0..100 {
        history = app.history(id).await;
        if history.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(history.len(), 4, "the turn was stored after the client left");
    assert_eq!(history[3]["content"], "answer finished without anyone listening");
}

#[tokio::test]
async fn the_echo_model_streams_word_by_word() {
    let app = TestApp::spawn().await;

    let events =
        app.stream("/v1/conversations", &json!({"model": "echo", "inputs": "one two three", "stream": true})).await;

    assert_eq!(names(&events).iter().filter(|n| **n == "message.output.delta").count(), 3);
    assert_eq!(concatenated(&events, "content"), "one two three");
}
