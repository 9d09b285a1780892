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
