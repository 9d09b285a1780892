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

#[tokio::test]
async fn rules_answer_per_workspace_and_the_journal_keeps_what_the_model_received() {
    let app =
        TestApp::spawn_with(crate::helpers::Options { api_keys: vec!["k1".into(), "k2".into()], ..Default::default() })
            .await;
    let other = app.with_key(Some("k2"));
    let rules = json!({"rules": [
        {"when": {"message_contains": "weather", "last": "user"},
         "replies": [{"calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]}], "times": "forever"},
        {"when": {"last": "tool"}, "replies": [{"text": "Sunny in Rome."}], "times": "forever"}
    ]});
    let added = app.ok("/palaver/mock/rules", &rules).await;
    assert_eq!(added["rules"].as_array().unwrap().len(), 2);

    let started = app
        .ok("/v1/conversations", &json!({"model": "mock", "inputs": "weather?", "tools": [weather_tool()], "completion_args": {"temperature": 0.2}}))
        .await;
    let call = &started["outputs"][0];
    let id = started["conversation_id"].as_str().unwrap();
    let result = json!({"type": "function.result", "tool_call_id": call["tool_call_id"], "result": "22C"});
    let answered = app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": [result]})).await;
    let theirs = other.ok("/v1/conversations", &json!({"model": "mock", "inputs": "weather?"})).await;

    assert_eq!((&call["name"], &call["arguments"]), (&json!("get_weather"), &json!(r#"{"city":"Rome"}"#)));
    assert_eq!(answered["outputs"][0]["content"], "Sunny in Rome.");
    assert_eq!(theirs["outputs"][0]["content"], "weather?", "another key's rules are not this one's");
    let journal = json_of(app.get("/palaver/mock/journal").await, 200).await;
    let requests = journal["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["messages"], json!([{"role": "user", "content": "weather?"}]));
    assert_eq!(requests[0]["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(requests[0]["completion_args"]["temperature"], 0.2);
    assert_eq!(requests[1]["messages"][2]["role"], "tool");
    assert_eq!(requests[1]["round"], 1);
    let listed = json_of(app.get("/palaver/mock/rules").await, 200).await;
    assert_eq!(listed["rules"][0]["used"], 1);
    assert_eq!(json_of(other.get("/palaver/mock/journal").await, 200).await["requests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_rule_answers_its_replies_in_turn_as_many_times_as_it_may_then_lets_go() {
    let app = TestApp::spawn().await;
    let rule =
        json!({"rules": [{"when": {"model": "mock"}, "replies": [{"text": "one"}, {"text": "two"}], "times": 3}]});
    app.ok("/palaver/mock/rules", &rule).await;

    let mut answers = Vec::new();
    for n in 0..4 {
        let body = app.ok("/v1/conversations", &json!({"model": "mock", "inputs": format!("m{n}")})).await;
        answers.push(body["outputs"][0]["content"].as_str().unwrap().to_owned());
    }

    assert_eq!(answers, ["one", "two", "one", "m3"]);
    let deleted = app.delete("/palaver/mock/rules").await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        json_of(app.get("/palaver/mock/journal").await, 200).await["requests"],
        json!([]),
        "reset forgets the journal too"
    );
}

#[tokio::test]
async fn error_usage_and_handoff_replies() {
    let app = TestApp::spawn().await;
    let billing = app.create_agent(json!({"model": "mock", "name": "Billing"})).await;
    let triage = app.create_agent(json!({"model": "mock", "name": "Triage", "handoffs": [billing["id"]]})).await;
    let rules = json!({"rules": [
        {"when": {"message_contains": "busy"}, "replies": [{"error": {"status": 503, "message": "overloaded"}}]},
        {"when": {"agent": "Triage", "last": "user"}, "replies": [{"handoff": billing["id"]}]},
        {"when": {"agent": billing["id"]}, "replies": [{"text": "Billing here.", "usage": {"prompt_tokens": 7, "completion_tokens": 2}}]}
    ]});
    app.ok("/palaver/mock/rules", &rules).await;

    let busy = app.post("/v1/conversations", &json!({"model": "mock", "inputs": "are you busy"})).await;
    let handed = app.ok("/v1/conversations", &json!({"agent_id": triage["id"], "inputs": "invoice"})).await;

    let busy = json_of(busy, 503).await;
    assert_eq!(busy["message"], "Upstream model error: overloaded");
    let types: Vec<&str> = handed["outputs"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["agent.handoff", "message.output"]);
    assert_eq!(handed["outputs"][1]["content"], "Billing here.");
    assert_eq!(
        handed["usage"]["prompt_tokens"].as_u64().unwrap() % 100,
        7 + 1,
        "the scripted usage, plus the handoff round's"
    );
}

#[tokio::test]
async fn a_malformed_rule_is_a_422_naming_the_rule_and_field_and_adds_nothing() {
    let app = TestApp::spawn().await;
    let rules = json!({"rules": [
        {"replies": [{"text": "fine"}]},
        {"replies": [{"text": "a", "error": {"status": 500}}]}
    ]});

    let response = app.post("/palaver/mock/rules", &rules).await;
    let unknown = app.post("/palaver/mock/rules", &json!({"rules": [{"replies": [{"txt": "typo"}]}]})).await;

    crate::helpers::assert_invalid(response, json!(["body", "rules", 1, "replies", 0]), "value_error").await;
    crate::helpers::assert_invalid(unknown, json!(["body", "rules", 0, "replies", 0, "txt"]), "extra_forbidden").await;
    assert_eq!(json_of(app.get("/palaver/mock/rules").await, 200).await["rules"], json!([]));
}

#[tokio::test]
async fn a_script_file_answers_for_every_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.json");
    std::fs::write(
        &path,
        r#"{"rules": [{"when": {"message_matches": "^ping\\b"}, "replies": [{"text": "pong"}], "times": "forever"}]}"#,
    )
    .unwrap();
    let app = TestApp::spawn_with(crate::helpers::Options { mock_script: Some(path), ..Default::default() }).await;

    let pong = app.ok("/v1/conversations", &json!({"model": "mock", "inputs": "ping me"})).await;
    let other = app.ok("/v1/conversations", &json!({"model": "mock", "inputs": "pingpong"})).await;

    assert_eq!(pong["outputs"][0]["content"], "pong");
    assert_eq!(other["outputs"][0]["content"], "pingpong", "the pattern decides");
}

#[tokio::test]
async fn a_yaml_script_reads_like_a_json_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.yaml");
    std::fs::write(&path, "rules:\n  - when: {message_contains: hello}\n    replies:\n      - text: Hi from YAML.\n")
        .unwrap();
    let app = TestApp::spawn_with(crate::helpers::Options { mock_script: Some(path), ..Default::default() }).await;

    let answered = app.ok("/v1/conversations", &json!({"model": "mock", "inputs": "hello"})).await;

    assert_eq!(answered["outputs"][0]["content"], "Hi from YAML.");
}

#[tokio::test]
async fn a_script_that_loops_is_stopped_by_the_turn_bounds_with_the_usual_error() {
    let app = TestApp::spawn().await;
    let a = app.create_agent(json!({"model": "mock", "name": "A"})).await;
    let b = app.create_agent(json!({"model": "mock", "name": "B", "handoffs": [a["id"]]})).await;
    assert_eq!(
        app.patch(&format!("/v1/agents/{}", a["id"].as_str().unwrap()), &json!({"handoffs": [b["id"]]})).await.status(),
        200
    );
    let rules = json!({"rules": [
        {"when": {"agent": "A"}, "replies": [{"handoff": b["id"]}], "times": "forever"},
        {"when": {"agent": "B"}, "replies": [{"handoff": a["id"]}], "times": "forever"}
    ]});
    app.ok("/palaver/mock/rules", &rules).await;

    let looped = app.post("/v1/conversations", &json!({"agent_id": a["id"], "inputs": "go"})).await;

    let body = json_of(looped, 500).await;
    assert_eq!(body["message"], "The turn handed off more than 5 times (PALAVER_MAX_HANDOFFS).");
    assert_eq!(json_of(app.get("/v1/conversations").await, 200).await, json!([]));
}

#[tokio::test]
async fn pacing_and_rule_counts_are_bounded_and_a_file_rule_counts_its_uses_per_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.json");
    std::fs::write(&path, r#"{"rules": [{"replies": [{"text": "once per workspace"}]}]}"#).unwrap();
    let options = crate::helpers::Options {
        api_keys: vec!["k1".into(), "k2".into()],
        mock_script: Some(path),
        ..Default::default()
    };
    let app = TestApp::spawn_with(options).await;
    let other = app.with_key(Some("k2"));

    let slow = app
        .post("/palaver/mock/rules", &json!({"rules": [{"replies": [{"text": "x", "tokens_per_second": 1e-20}]}]}))
        .await;
    let late =
        app.post("/palaver/mock/rules", &json!({"rules": [{"replies": [{"text": "x", "delay_ms": 3_600_000}]}]})).await;
    let many: Vec<Value> = (0..1001).map(|_| json!({"replies": [{"text": "x"}]})).collect();
    let too_many = app.post("/palaver/mock/rules", &json!({"rules": many})).await;
    let mine = [
        app.ok("/v1/conversations", &json!({"model": "mock", "inputs": "a"})).await,
        app.ok("/v1/conversations", &json!({"model": "mock", "inputs": "b"})).await,
    ];
    let theirs = other.ok("/v1/conversations", &json!({"model": "mock", "inputs": "c"})).await;

    crate::helpers::assert_invalid(slow, json!(["body", "rules", 0, "replies", 0, "tokens_per_second"]), "value_error")
        .await;
    crate::helpers::assert_invalid(late, json!(["body", "rules", 0, "replies", 0, "delay_ms"]), "value_error").await;
    crate::helpers::assert_invalid(too_many, json!(["body", "rules"]), "too_long").await;
    assert_eq!(mine[0]["outputs"][0]["content"], "once per workspace");
    assert_eq!(mine[1]["outputs"][0]["content"], "b", "used up in this workspace");
    assert_eq!(theirs["outputs"][0]["content"], "once per workspace", "not used up by another");
}
