//! `POST /v1/agents/completions` and `POST /v1/chat/completions`.

use crate::helpers::{json_of, TestApp};
use crate::upstream::Reply;
use serde_json::{json, Value};

#[tokio::test]
async fn an_agent_completion_applies_the_agents_instructions_tools_and_arguments() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("Bonjour !")]);
    let agent = app
        .create_agent(json!({"model": "mistral-small", "name": "a", "instructions": "Answer in French.",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "completion_args": {"temperature": 0.1, "max_tokens": 50}}))
        .await;

    let response = app
        .ok(
            "/v1/agents/completions",
            &json!({"agent_id": agent["id"], "messages": [{"role": "user", "content": "hi"}],
            "stream": false, "max_tokens": 10}),
        )
        .await;

    let sent = upstream.last_request();
    assert_eq!(sent["model"], "mistral-small");
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(sent["tools"][0]["function"]["name"], "f");
    assert_eq!(sent["temperature"], 0.1);
    assert_eq!(sent["max_tokens"], 10, "the request's argument wins");
    assert_eq!(response["object"], "chat.completion");
    assert_eq!(response["choices"][0]["message"]["content"], "Bonjour !");
    assert_eq!(response["choices"][0]["finish_reason"], "stop");
    assert_eq!(response["usage"]["prompt_tokens"], 11);
    assert!(response["created"].is_i64());
}

#[tokio::test]
async fn a_streamed_agent_completion_is_data_only_chunks_ending_with_done() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("one two")]);
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;

    let response = app
        .post(
            "/v1/agents/completions",
            &json!({"agent_id": agent["id"], "messages": [{"role": "user", "content": "hi"}], "stream": true}),
        )
        .await;

    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    let data: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert!(!body.contains("event:"), "no event lines in chat-completion streams");
    assert_eq!(*data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "one two");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["completion_tokens"], 2);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
}

#[tokio::test]
async fn an_agent_completion_for_an_unknown_agent_is_a_404() {
    let app = TestApp::spawn().await;

    let response = app
        .post("/v1/agents/completions", &json!({"agent_id": "ag_nope", "messages": [{"role": "user", "content": "x"}]}))
        .await;

    assert_eq!(json_of(response, 404).await["code"], "not_found");
}

#[tokio::test]
async fn chat_completions_pass_through_to_the_upstream_unchanged() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("relayed")]);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true, "n": 1, "logit_bias": {}});

    let response = app.post("/v1/chat/completions", &body).await;

    assert_eq!(upstream.last_request(), body, "the body arrives untouched, unknown fields included");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    assert!(text.contains("relayed") && text.contains("[DONE]"));
}

#[tokio::test]
async fn chat_completions_for_the_echo_model_are_answered_by_palaver() {
    let app = TestApp::spawn().await;

    let response = app
        .ok("/v1/chat/completions", &json!({"model": "echo", "messages": [{"role": "user", "content": "ping pong"}]}))
        .await;

    assert_eq!(response["choices"][0]["message"]["content"], "ping pong");
    assert_eq!(response["model"], "echo");
}

/// The `loc` of each 422 item, dotted after `body`.
async fn error_fields(response: reqwest::Response) -> Vec<String> {
    let body = json_of(response, 422).await;
    body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let loc: Vec<String> = item["loc"].as_array().unwrap()[1..]
                .iter()
                .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                .collect();
            loc.join(".")
        })
        .collect()
}

#[tokio::test]
async fn each_message_is_checked_in_the_shape_of_its_role_with_its_chunks() {
    let app = TestApp::spawn().await;
    let with = |message: Value| json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}, message]});

    let cases = [
        (json!({"role": "system", "content": "x", "tool_calls": []}), "messages.1.tool_calls"),
        (json!({"role": "tool", "content": "x"}), "messages.1.tool_call_id"),
        (json!({"role": "critic", "content": "x"}), "messages.1.role"),
        (json!({"role": "user", "content": [{"type": "image_url"}]}), "messages.1.content.0.image_url"),
        (
            json!({"role": "user", "content": [{"type": "tool_reference", "tool": "t", "title": "t"}]}),
            "messages.1.content.0.type",
        ),
        (
            json!({"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 3}}]}),
            "messages.1.tool_calls.0.function.arguments",
        ),
    ];

    for (message, field) in cases {
        let response = app.post("/v1/chat/completions", &with(message.clone())).await;
        assert_eq!(error_fields(response).await, [field], "{message}");
    }
}

#[tokio::test]
async fn chunks_of_every_chat_type_and_tool_calls_as_objects_are_accepted() {
    let app = TestApp::spawn().await;
    let content = json!([
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/i.png", "detail": "low"}},
        {"type": "document_url", "document_url": "https://example.com/d.pdf"},
        {"type": "file", "file_id": "f"},
        {"type": "input_audio", "input_audio": "AAAA"},
        {"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]}
    ]);
    let messages = json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": content},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "index": 0,
            "function": {"name": "f", "arguments": {"a": 1}}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "f", "content": "42"},
        {"role": "user", "content": "and?"}
    ]);

    let response = app.ok("/v1/chat/completions", &json!({"model": "echo", "messages": messages})).await;

    assert_eq!(response["choices"][0]["message"]["content"], "and?");
}

#[tokio::test]
async fn a_request_tool_is_a_function_tool_as_an_agent_declares_one() {
    let app = TestApp::spawn().await;
    let with = |tool: Value| json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]});

    let no_parameters =
        app.post("/v1/chat/completions", &with(json!({"type": "function", "function": {"name": "f"}}))).await;
    let bad_name =
        app.post("/v1/chat/completions", &with(json!({"function": {"name": "a.b", "parameters": {}}}))).await;
    let other_type = app.post("/v1/chat/completions", &with(json!({"type": "web_search"}))).await;

    assert_eq!(error_fields(no_parameters).await, ["tools.0.function.parameters"]);
    assert_eq!(error_fields(bad_name).await, ["tools.0.function.name"]);
    assert_eq!(other_type.status(), 200, "tools of other types are left out, as before");
}
