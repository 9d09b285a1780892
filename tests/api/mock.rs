//! The built-in scripted `mock` model: directives in the user message, auto mode, and the
//! usual turn around it (calls answered by the client, errors passed on).

use crate::helpers::{json_of, names, TestApp};
use serde_json::{json, Value};

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}})
}

#[tokio::test]
async fn call_directives_become_function_calls_and_the_results_are_summed_up() {
    let app = TestApp::spawn().await;
    let inputs = r#"Weather please [[call:get_weather {"city": "Paris"}]] [[call:get_time]]"#;

    let started = app.ok("/v1/conversations", &json!({"model": "mock", "inputs": inputs})).await;

    let outputs = started["outputs"].as_array().unwrap();
    let calls: Vec<(&Value, &Value)> = outputs.iter().map(|o| (&o["name"], &o["arguments"])).collect();
    assert_eq!(calls, [(&json!("get_weather"), &json!(r#"{"city":"Paris"}"#)), (&json!("get_time"), &json!("{}"))]);
    let id = started["conversation_id"].as_str().unwrap();
    let results: Vec<Value> = outputs
        .iter()
        .zip(["Sunny", "noon"])
        .map(
            |(call, result)| json!({"type": "function.result", "tool_call_id": call["tool_call_id"], "result": result}),
        )
        .collect();
    let answered = app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": results})).await;
    assert_eq!(answered["outputs"][0]["content"], "mock: the tools answered — get_weather: Sunny; get_time: noon");
}

#[tokio::test]
async fn an_error_directive_fails_like_an_upstream_with_that_status_and_stores_nothing() {
    let app = TestApp::spawn().await;

    let limited = app.post("/v1/conversations", &json!({"model": "mock", "inputs": "[[error:429]]"})).await;
    let broken = app.post("/v1/conversations", &json!({"model": "mock", "inputs": "x [[error:500]]"})).await;

    let limited = json_of(limited, 429).await;
    assert_eq!(limited["type"], "rate_limit_error");
    assert_eq!(json_of(broken, 502).await["code"], "upstream_error");
    assert_eq!(json_of(app.get("/v1/conversations").await, 200).await, json!([]));
}

#[tokio::test]
async fn without_a_directive_an_agent_s_functions_are_each_called_once_with_arguments_from_their_schemas() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "mock", "name": "Auto", "tools": [weather_tool()]})).await;

    let events =
        app.stream("/v1/conversations", &json!({"agent_id": agent["id"], "inputs": "go", "stream": true})).await;

    assert!(names(&events).contains(&"function.call.delta"));
    let call = events.iter().find(|(name, _)| name == "function.call.delta").unwrap();
    assert_eq!(call.1["name"], "get_weather");
    assert_eq!(call.1["arguments"], r#"{"city":"text","days":1}"#);
}

#[tokio::test]
async fn with_nothing_to_call_it_answers_the_message_without_its_directives_word_by_word() {
    let app = TestApp::spawn().await;

    let events = app
        .stream(
            "/v1/conversations",
            &json!({"model": "mock", "inputs": "hello there [[slow:5]] friend", "stream": true}),
        )
        .await;

    let deltas: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "message.output.delta")
        .map(|(_, data)| data["content"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["hello", " there", " friend"]);
}

#[tokio::test]
async fn other_models_ignore_directives_and_the_mock_is_listed() {
    let app = TestApp::spawn().await;

    let echoed = app.ok("/v1/conversations", &json!({"model": "echo", "inputs": "[[error:429]]"})).await;
    let models = json_of(app.get("/v1/models").await, 200).await;

    assert_eq!(echoed["outputs"][0]["content"], "[[error:429]]");
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"mock"), "{ids:?}");
}
