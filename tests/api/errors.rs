//! Bad input gets the documented error shape and changes nothing (the official SDKs' errors contract).

use crate::helpers::{assert_invalid, json_of, Options, TestApp};
use serde_json::{json, Value};

#[tokio::test]
async fn malformed_json_is_a_422_on_the_body() {
    let app = TestApp::spawn().await;

    let response = app.post_raw("/v1/agents", r#"{"model": "m", "name": "#).await;

    let body = assert_invalid(response, json!(["body"]), "json_invalid").await;
    assert_eq!(body["param"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_body_that_is_not_an_object_is_a_422() {
    let app = TestApp::spawn().await;

    let response = app.post_raw("/v1/agents", r#"["model"]"#).await;

    assert_invalid(response, json!(["body"]), "dict_type").await;
}

#[tokio::test]
async fn wrong_types_missing_and_unknown_fields_are_named() {
    let app = TestApp::spawn().await;

    let wrong_type = app.post("/v1/agents", &json!({"model": 5, "name": "a"})).await;
    let missing = app.post("/v1/agents", &json!({"model": "m"})).await;
    let unknown = app.post("/v1/agents", &json!({"model": "m", "name": "a", "colour": "red"})).await;
    let nested =
        app.post("/v1/agents", &json!({"model": "m", "name": "a", "completion_args": {"temprature": 1}})).await;
    let out_of_range =
        app.post("/v1/agents", &json!({"model": "m", "name": "a", "completion_args": {"top_p": 3}})).await;

    let body = assert_invalid(wrong_type, json!(["body", "model"]), "string_type").await;
    assert_eq!(body["param"], "model");
    assert_invalid(missing, json!(["body", "name"]), "missing").await;
    assert_invalid(unknown, json!(["body", "colour"]), "extra_forbidden").await;
    assert_invalid(nested, json!(["body", "completion_args", "temprature"]), "extra_forbidden").await;
    assert_invalid(out_of_range, json!(["body", "completion_args", "top_p"]), "value_error").await;
    assert_eq!(json_of(app.get("/v1/agents").await, 200).await, json!([]), "nothing was stored");
}

#[tokio::test]
async fn unknown_tool_types_and_incomplete_tools_are_rejected_with_their_location() {
    let app = TestApp::spawn().await;

    let unknown = app
        .post(
            "/v1/agents",
            &json!({"model": "m", "name": "a", "tools": [{"type": "web_search"}, {"type": "teleport"}]}),
        )
        .await;
    let no_library =
        app.post("/v1/agents", &json!({"model": "m", "name": "a", "tools": [{"type": "document_library"}]})).await;
    let no_connector =
        app.post("/v1/agents", &json!({"model": "m", "name": "a", "tools": [{"type": "connector"}]})).await;
    let bad_function = app
        .post("/v1/agents", &json!({"model": "m", "name": "a", "tools": [{"type": "function", "function": {"name": "has space", "parameters": {}}}]}))
        .await;

    assert_invalid(unknown, json!(["body", "tools", 1, "type"]), "enum").await;
    assert_invalid(no_library, json!(["body", "tools", 0, "library_ids"]), "missing").await;
    assert_invalid(no_connector, json!(["body", "tools", 0, "connector_id"]), "missing").await;
    assert_invalid(bad_function, json!(["body", "tools", 0, "function", "name"]), "string_pattern_mismatch").await;
    assert_eq!(json_of(app.get("/v1/agents").await, 200).await, json!([]));
}

#[tokio::test]
async fn an_oversize_body_is_a_413_in_the_error_envelope() {
    let app = TestApp::spawn_with(Options { max_body_bytes: Some(1024), ..Default::default() }).await;
    let big = "x".repeat(4096);

    let response = app.post("/v1/agents", &json!({"model": "m", "name": big})).await;

    let body = json_of(response, 413).await;
    assert_eq!(body["object"], "error");
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_envelope() {
    let app = TestApp::spawn().await;

    let route = app.get("/v1/nothing-here").await;
    let method = app.request(reqwest::Method::PUT, "/v1/agents").send().await.unwrap();

    assert_eq!(
        json_of(route, 404).await,
        json!({"object": "error", "message": "No route for `GET /v1/nothing-here`.", "type": "invalid_request_error",
               "param": null, "code": "not_found"})
    );
    assert_eq!(json_of(method, 405).await["code"], "method_not_allowed");
}

#[tokio::test]
async fn bad_query_parameters_are_named() {
    let app = TestApp::spawn().await;

    let page_size = app.get("/v1/agents?page_size=5000").await;
    let page = app.get("/v1/agents?page=minus").await;
    let flag = app.get("/v1/agents?deployment_chat=maybe").await;
    let source = app.get("/v1/agents?sources=elsewhere").await;
    let metadata = app.get("/v1/agents?metadata=%7Bnot-json").await;

    assert_invalid(page_size, json!(["query", "page_size"]), "value_error").await;
    assert_invalid(page, json!(["query", "page"]), "int_parsing").await;
    assert_invalid(flag, json!(["query", "deployment_chat"]), "bool_parsing").await;
    assert_invalid(source, json!(["query", "sources", 0]), "enum").await;
    assert_invalid(metadata, json!(["query", "metadata"]), "json_invalid").await;
}

#[tokio::test]
async fn arbitrary_bytes_never_crash_the_server() {
    let app = TestApp::spawn().await;
    let bodies: [&'static str; 6] = ["", "null", "\u{0}\u{1}", "{\"model\": \"\\ud800\"}", "{\"tools\": {}}", "1e400"];

    for body in bodies {
        let response = app.post_raw("/v1/agents", body).await;
        assert_eq!(response.status(), 422, "body {body:?}");
    }
    assert_eq!(json_of(app.get("/health").await, 200).await["status"], "ok");
}

#[tokio::test]
async fn lists_and_strings_past_their_bounds_are_422s_naming_the_field_and_store_nothing() {
    let app = TestApp::spawn().await;
    let tool = |i: usize| json!({"type": "function", "function": {"name": format!("f{i}"), "parameters": {}}});
    let tools: Vec<Value> = (0..129).map(tool).collect();
    let metadata: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
    let inputs: Vec<Value> = (0..1001).map(|_| json!({"role": "user", "content": "x"})).collect();

    let cases = [
        ("/v1/agents", json!({"model": "m", "name": "n", "tools": tools}), json!(["body", "tools"]), "too_long"),
        ("/v1/agents", json!({"model": "m", "name": "x".repeat(257)}), json!(["body", "name"]), "string_too_long"),
        (
            "/v1/agents",
            json!({"model": "m", "name": "n", "metadata": metadata}),
            json!(["body", "metadata"]),
            "too_long",
        ),
        ("/v1/conversations", json!({"model": "m", "inputs": inputs}), json!(["body", "inputs"]), "too_long"),
        (
            "/v1/conversations",
            json!({"model": "m", "inputs": "hi", "instructions": "x".repeat(200_001)}),
            json!(["body", "instructions"]),
            "string_too_long",
        ),
    ];
    for (path, body, loc, kind) in cases {
        let body = assert_invalid(app.post(path, &body).await, loc.clone(), kind).await;
        assert!(body["message"].as_str().unwrap().contains("at most"), "{loc}: {body}");
    }

    assert_eq!(json_of(app.get("/v1/agents").await, 200).await, json!([]));
    assert_eq!(json_of(app.get("/v1/conversations").await, 200).await, json!([]));
}
