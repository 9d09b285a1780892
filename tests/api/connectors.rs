//! Server-side tools through a connector (a fake MCP server): offered to the model, run by
//! the server as `tool.execution` entries, and the human-in-the-loop confirmation flow.

use crate::helpers::{assert_invalid, json_of, names, Options, TestApp};
use crate::mcp::FakeMcp;
use crate::upstream::{FakeUpstream, Reply};
use serde_json::{json, Value};

async fn setup() -> (TestApp, FakeUpstream, FakeMcp) {
    let mcp = FakeMcp::start().await;
    let (app, upstream) =
        TestApp::with_upstream_options(Options { config_toml: Some(mcp.config("orders")), ..Options::default() }).await;
    (app, upstream, mcp)
}

fn orders_tool(requires_confirmation: &[&str]) -> Value {
    json!({"type": "connector", "connector_id": "orders",
           "tool_configuration": {"requires_confirmation": requires_confirmation}})
}

async fn agent(app: &TestApp, requires_confirmation: &[&str]) -> String {
    let agent = app
        .create_agent(json!({"model": "fake-model", "name": "Clerk", "instructions": "Help with orders.",
                             "tools": [orders_tool(requires_confirmation)]}))
        .await;
    agent["id"].as_str().unwrap().to_owned()
}

fn kinds(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_connector_tool_runs_on_the_server_and_the_model_reads_its_answer() {
    let (app, upstream, mcp) = setup().await;
    let agent_id = agent(&app, &[]).await;
    upstream
        .script([Reply::ToolCalls("", vec![("call_1", "lookup_order", r#"{"id": 42}"#)]), Reply::Text("It shipped.")]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Where is order 42?"})).await;

    let outputs = response["outputs"].as_array().unwrap();
    assert_eq!(kinds(outputs), ["tool.execution", "message.output"]);
    let execution = &outputs[0];
    assert_eq!(execution["name"], "lookup_order");
    assert_eq!(execution["arguments"], r#"{"id": 42}"#);
    assert_eq!(execution["info"]["output"], "Order 42 has shipped.");
    assert!(execution["id"].as_str().unwrap().starts_with("tool_exec_"));
    assert_eq!(outputs[1]["content"], "It shipped.");
    assert_eq!(mcp.calls(), [json!({"name": "lookup_order", "arguments": {"id": 42}})]);

    // The model was offered the connector's tools, then saw its call and the answer.
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    let offered: Vec<&str> =
        requests[0]["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(offered, ["lookup_order", "delete_order", "refund_order", "crash_order", "orders_cancel"]);
    assert_eq!(
        requests[1]["messages"],
        json!([
            {"role": "system", "content": "Help with orders."},
            {"role": "user", "content": "Where is order 42?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup_order", "arguments": r#"{"id": 42}"#}}]},
            {"role": "tool", "tool_call_id": "call_1", "name": "lookup_order", "content": "Order 42 has shipped."}
        ])
    );
    let history = app.history(response["conversation_id"].as_str().unwrap()).await;
    assert_eq!(kinds(&history), ["message.input", "tool.execution", "message.output"]);
    assert_eq!(&history[1], execution);

    // The next turn rebuilds the same view from the stored entries.
    app.ok(
        &format!("/v1/conversations/{}", response["conversation_id"].as_str().unwrap()),
        &json!({"inputs": "Thanks"}),
    )
    .await;
    let replay = upstream.last_request()["messages"].as_array().unwrap()[..4].to_vec();
    assert_eq!(Value::Array(replay), requests[1]["messages"]);
}

#[tokio::test]
async fn include_and_exclude_choose_the_offered_tools_and_the_tool_credentials_are_sent() {
    let (app, upstream, mcp) = setup().await;
    let tool = json!({"type": "connector", "connector_id": "orders", "tool_configuration": {"exclude": ["delete_order"]},
                      "authorization": {"type": "api-key", "value": "k1"}});
    app.ok("/v1/conversations", &json!({"model": "fake-model", "tools": [tool], "inputs": "hi"})).await;

    let request = upstream.last_request();
    let offered: Vec<&str> =
        request["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(offered, ["lookup_order", "refund_order", "crash_order", "orders_cancel"]);
    let authorizations = mcp.authorizations();
    assert!(!authorizations.is_empty());
    assert!(authorizations.iter().all(|a| a.as_deref() == Some("Bearer k1")), "{authorizations:?}");
}

#[tokio::test]
async fn a_call_that_requires_confirmation_waits_and_runs_when_allowed() {
    let (app, upstream, mcp) = setup().await;
    let agent_id = agent(&app, &["delete_order"]).await;
    upstream.script([Reply::ToolCalls("", vec![("call_9", "delete_order", r#"{"id": 7}"#)]), Reply::Text("Deleted.")]);

    let first = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Delete order 7"})).await;
    let conversation_id = first["conversation_id"].as_str().unwrap().to_owned();
    let outputs = first["outputs"].as_array().unwrap();
    assert_eq!(kinds(outputs), ["function.call"]);
    assert_eq!(outputs[0]["confirmation_status"], "pending");
    assert_eq!(outputs[0]["name"], "delete_order");
    assert_eq!(outputs[0]["tool_call_id"], "call_9");
    assert_eq!(outputs[0]["arguments"], r#"{"id": 7}"#);
    assert!(mcp.calls().is_empty(), "nothing runs before the confirmation");

    // A new message cannot skip the open call; nothing is stored.
    let skipped = app.post(&format!("/v1/conversations/{conversation_id}"), &json!({"inputs": "never mind"})).await;
    assert_invalid(skipped, json!(["body", "inputs"]), "value_error").await;
    assert_eq!(app.history(&conversation_id).await.len(), 2);

    // As the Python run helper sends it: no inputs, one confirmation.
    let body = json!({"inputs": [], "stream": false, "store": true, "handoff_execution": "server",
                      "tool_confirmations": [{"tool_call_id": "call_9", "confirmation": "allow"}]});
    let second = app.ok(&format!("/v1/conversations/{conversation_id}"), &body).await;

    let outputs = second["outputs"].as_array().unwrap();
    assert_eq!(kinds(outputs), ["tool.execution", "message.output"]);
    assert_eq!(outputs[0]["info"]["tool_call_id"], "call_9");
    assert_eq!(outputs[0]["info"]["output"], "Order 7 deleted.");
    assert_eq!(mcp.calls(), [json!({"name": "delete_order", "arguments": {"id": 7}})]);
    let messages = upstream.last_request()["messages"].clone();
    assert_eq!(
        messages.as_array().unwrap()[2..],
        [
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "delete_order", "arguments": r#"{"id": 7}"#}}]}),
            json!({"role": "tool", "tool_call_id": "call_9", "name": "delete_order", "content": "Order 7 deleted."})
        ]
    );

    // Answered once: a second confirmation is refused.
    let again = app.post(&format!("/v1/conversations/{conversation_id}"), &body).await;
    let error = assert_invalid(again, json!(["body", "tool_confirmations", 0, "tool_call_id"]), "value_error").await;
    assert!(error.to_string().contains("already has a result"), "{error}");
}

#[tokio::test]
async fn a_denied_call_does_not_run_and_the_model_is_told() {
    let (app, upstream, mcp) = setup().await;
    let agent_id = agent(&app, &["delete_order"]).await;
    upstream.script([Reply::ToolCalls("", vec![("call_5", "delete_order", r#"{"id": 5}"#)]), Reply::Text("Kept it.")]);
    let first = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Delete order 5"})).await;
    let conversation_id = first["conversation_id"].as_str().unwrap();

    let body = json!({"tool_confirmations": [{"tool_call_id": "call_5", "confirmation": "deny"}]});
    let second = app.ok(&format!("/v1/conversations/{conversation_id}"), &body).await;

    assert_eq!(kinds(second["outputs"].as_array().unwrap()), ["message.output"]);
    assert!(mcp.calls().is_empty());
    let last = upstream.last_request()["messages"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["role"], "tool");
    assert_eq!(last["tool_call_id"], "call_5");
    assert_eq!(last["content"], "The user denied this tool call.");
    let history = app.history(conversation_id).await;
    assert_eq!(kinds(&history), ["message.input", "function.call", "function.result", "message.output"]);
    assert_eq!(history[2]["tool_call_id"], "call_5");
}

#[tokio::test]
async fn confirmations_for_unknown_or_client_calls_are_refused_and_store_nothing() {
    let (app, upstream, _mcp) = setup().await;
    let agent_id = agent(&app, &["delete_order"]).await;
    let function = json!({"type": "function", "function": {"name": "local", "parameters": {"type": "object"}}});
    upstream.script([Reply::ToolCalls("", vec![("call_c", "local", "{}")])]);
    let first = app
        .ok("/v1/conversations", &json!({"model": "fake-model", "tools": [function, orders_tool(&[])], "inputs": "go"}))
        .await;
    let conversation_id = first["conversation_id"].as_str().unwrap();
    let path = format!("/v1/conversations/{conversation_id}");

    let unknown =
        app.post(&path, &json!({"tool_confirmations": [{"tool_call_id": "nope", "confirmation": "allow"}]})).await;
    assert_invalid(unknown, json!(["body", "tool_confirmations", 0, "tool_call_id"]), "value_error").await;
    let client =
        app.post(&path, &json!({"tool_confirmations": [{"tool_call_id": "call_c", "confirmation": "allow"}]})).await;
    let error = assert_invalid(client, json!(["body", "tool_confirmations", 0, "tool_call_id"]), "value_error").await;
    assert!(error.to_string().contains("function.result"), "{error}");
    assert_eq!(kinds(&app.history(conversation_id).await), ["message.input", "function.call"]);
    let _ = agent_id;
}

#[tokio::test]
async fn a_connector_that_is_not_configured_fails_the_turn_clearly() {
    let (app, _upstream) = TestApp::with_upstream().await;
    let tool = json!({"type": "connector", "connector_id": "missing"});
    let response =
        app.post("/v1/conversations", &json!({"model": "fake-model", "tools": [tool], "inputs": "hi"})).await;
    let body = json_of(response, 400).await;
    assert!(body.to_string().contains("Connector `missing` is not configured"), "{body}");
    let list = json_of(app.get("/v1/conversations").await, 200).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn a_streamed_tool_run_sends_execution_events_that_fold_to_the_stored_entry() {
    let (app, upstream, _mcp) = setup().await;
    let agent_id = agent(&app, &[]).await;
    upstream.script([Reply::ToolCalls("", vec![("call_s", "lookup_order", r#"{"id": 1}"#)]), Reply::Text("Done.")]);

    let events =
        app.stream("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "order 1?", "stream": true})).await;

    assert_eq!(
        names(&events),
        [
            "conversation.response.started",
            "tool.execution.started",
            "tool.execution.done",
            "message.output.delta",
            "conversation.response.done"
        ]
    );
    let started = &events[1].1;
    let done = &events[2].1;
    assert_eq!(started["name"], "lookup_order");
    assert_eq!(started["arguments"], r#"{"id": 1}"#);
    assert_eq!(started["output_index"], 0);
    assert_eq!(done["id"], started["id"]);
    assert_eq!(done["info"]["output"], "Order 1 has shipped.");
    assert_eq!(events[3].1["output_index"], 1);
    let conversation_id = events[0].1["conversation_id"].as_str().unwrap();
    let history = app.history(conversation_id).await;
    assert_eq!(history[1]["id"], started["id"]);
    assert_eq!(history[1]["info"], done["info"]);
}

#[tokio::test]
async fn a_failure_the_tool_reports_is_an_answer_for_the_model() {
    let (app, upstream, _mcp) = setup().await;
    let agent_id = agent(&app, &[]).await;
    upstream.script([Reply::ToolCalls("", vec![("call_r", "refund_order", r#"{"id": 3}"#)]), Reply::Text("Sorry.")]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Refund order 3"})).await;

    let outputs = response["outputs"].as_array().unwrap();
    assert_eq!(kinds(outputs), ["tool.execution", "message.output"]);
    assert_eq!(outputs[0]["info"]["is_error"], true);
    assert_eq!(outputs[0]["info"]["output"], "Refunds are closed today.");
    let last = upstream.last_request()["messages"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["content"], "Refunds are closed today.");
}

#[tokio::test]
async fn an_expired_connector_session_is_renewed_once() {
    let (app, upstream, mcp) = setup().await;
    let agent_id = agent(&app, &[]).await;
    app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "hi"})).await;
    assert_eq!(mcp.initializations(), 1);
    mcp.expire_session();
    upstream.script([Reply::ToolCalls("", vec![("call_e", "lookup_order", r#"{"id": 8}"#)]), Reply::Text("ok")]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "order 8?"})).await;

    assert_eq!(mcp.initializations(), 2);
    assert_eq!(response["outputs"][0]["info"]["output"], "Order 8 has shipped.");
}

#[tokio::test]
async fn a_connector_that_cannot_be_reached_fails_the_turn_and_stores_nothing() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let config = format!("[[connector]]\nid = \"orders\"\nurl = \"http://{closed}/mcp\"\n");
    let (app, upstream) =
        TestApp::with_upstream_options(Options { config_toml: Some(config), ..Options::default() }).await;
    let start = app.ok("/v1/conversations", &json!({"model": "fake-model", "inputs": "hi"})).await;
    let conversation_id = start["conversation_id"].as_str().unwrap();
    let before = app.history(conversation_id).await;
    let requests_before = upstream.requests().len();

    let failed = app
        .post("/v1/conversations", &json!({"model": "fake-model", "tools": [orders_tool(&[])], "inputs": "order 1?"}))
        .await;
    let body = json_of(failed, 502).await;
    assert!(body.to_string().contains("connector `orders`"), "{body}");

    let list = json_of(app.get("/v1/conversations").await, 200).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "the failed start stored nothing");
    assert_eq!(app.history(conversation_id).await, before);
    assert_eq!(upstream.requests().len(), requests_before, "the model was not called for the failed turn");
}

#[tokio::test]
async fn a_tool_server_failure_mid_turn_leaves_the_conversation_as_it_was() {
    let (app, upstream, _mcp) = setup().await;
    let agent_id = agent(&app, &[]).await;
    let start = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "hi"})).await;
    let conversation_id = start["conversation_id"].as_str().unwrap();
    let path = format!("/v1/conversations/{conversation_id}");
    let before = app.history(conversation_id).await;
    upstream.script([Reply::ToolCalls("Let me try.", vec![("call_x", "crash_order", "{}")])]);

    let failed = app.post(&path, &json!({"inputs": "break it"})).await;

    let body = json_of(failed, 502).await;
    assert!(body.to_string().contains("HTTP 500"), "{body}");
    assert_eq!(app.history(conversation_id).await, before);
    upstream.script([Reply::Text("Fine again.")]);
    let next = app.ok(&path, &json!({"inputs": "again"})).await;
    assert_eq!(next["outputs"][0]["content"], "Fine again.");
    assert_eq!(app.history(conversation_id).await.len(), before.len() + 2);
}

#[tokio::test]
async fn a_tool_name_chat_apis_refuse_is_offered_as_a_valid_function_name() {
    let (app, upstream, mcp) = setup().await;
    let agent_id = agent(&app, &[]).await;
    upstream.script([Reply::ToolCalls("", vec![("call_d", "orders_cancel", "{}")]), Reply::Text("Done.")]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "cancel"})).await;

    assert_eq!(mcp.calls(), [json!({"name": "orders.cancel", "arguments": {}})]);
    assert_eq!(response["outputs"][0]["name"], "orders_cancel");
    assert_eq!(response["outputs"][0]["info"]["output"], "Cancelled.");
}
