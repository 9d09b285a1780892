//! Conversations (the official SDKs' conversations contract) against a scripted upstream that records
//! exactly what palaver sent it.

use crate::helpers::{assert_invalid, json_of, Options, TestApp};
use crate::upstream::Reply;
use palaver::domain::ids::{ConversationId, WorkspaceId};
use serde_json::{json, Value};
use std::time::Duration;

fn texts(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["content"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn pair(kind: &str, text: &str) -> (String, String) {
    (kind.to_owned(), text.to_owned())
}

#[tokio::test]
async fn a_first_turn_sends_instructions_input_tools_and_arguments_upstream() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("Albert Einstein was a physicist.")]);
    let tool = json!({"type": "function", "function": {"name": "get_weather", "description": "Weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let agent = app
        .create_agent(json!({"model": "mistral-medium-latest", "name": "a", "instructions": "Be brief.",
            "tools": [tool, {"type": "web_search"}], "completion_args": {"temperature": 0.3, "top_p": 0.95, "random_seed": 7}}))
        .await;

    let response =
        app.ok("/v1/conversations", &json!({"agent_id": agent["id"], "inputs": "Who is Albert Einstein?"})).await;

    assert_eq!(
        upstream.last_request(),
        json!({
            "model": "mistral-medium-latest",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Who is Albert Einstein?"}
            ],
            // Nobody watches a JSON turn: the upstream answers in one JSON body.
            "stream": false,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": false}}],
            "temperature": 0.3,
            "top_p": 0.95,
            "seed": 7
        })
    );
    assert_eq!(response["object"], "conversation.response");
    assert!(response["conversation_id"].as_str().unwrap().starts_with("conv_"));
    let output = &response["outputs"][0];
    assert_eq!(output["type"], "message.output");
    assert_eq!(output["object"], "entry");
    assert_eq!(output["content"], "Albert Einstein was a physicist.");
    assert_eq!(output["agent_id"], agent["id"]);
    assert_eq!(output["model"], "mistral-medium-latest");
    assert_eq!(output["role"], "assistant");
    assert!(output["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        response["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16,
        "connector_tokens": null, "connectors": null})
    );
}

#[tokio::test]
async fn every_completion_argument_is_forwarded_and_per_turn_arguments_win() {
    let (app, upstream) = TestApp::with_upstream().await;
    let schema = json!({"name": "answer", "schema": {"type": "object"}, "strict": true});
    let start = app
        .ok(
            "/v1/conversations",
            &json!({"model": "m", "inputs": "hi", "completion_args": {"temperature": 0.2, "top_p": 0.5,
                "max_tokens": 64, "stop": ["\n\n"], "random_seed": 3, "presence_penalty": 0.1, "frequency_penalty": 0.2,
                "response_format": {"type": "json_schema", "json_schema": schema}, "tool_choice": "none",
                "prediction": {"type": "content", "content": "x"}}}),
        )
        .await;
    let first = upstream.last_request();

    app.ok(
        &format!("/v1/conversations/{}", start["conversation_id"].as_str().unwrap()),
        &json!({"inputs": "again", "completion_args": {"temperature": 0.9, "tool_choice": "any"}}),
    )
    .await;
    let second = upstream.last_request();

    for (key, value) in [
        ("temperature", json!(0.2)),
        ("top_p", json!(0.5)),
        ("max_tokens", json!(64)),
        ("stop", json!(["\n\n"])),
        ("seed", json!(3)),
        ("presence_penalty", json!(0.1)),
        ("frequency_penalty", json!(0.2)),
        ("response_format", json!({"type": "json_schema", "json_schema": schema})),
        ("tool_choice", json!("none")),
        ("prediction", json!({"type": "content", "content": "x"})),
    ] {
        assert_eq!(first[key], value, "{key} on the first turn");
    }
    assert_eq!(second["temperature"], 0.9);
    assert_eq!(second["tool_choice"], "required", "`any` in the OpenAI dialect");
    assert_eq!(second["max_tokens"], 64, "stored arguments still apply");
}

#[tokio::test]
async fn an_append_sends_the_whole_branch_and_stores_inputs_then_outputs() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("First answer."), Reply::Text("Deuxième réponse.")]);
    let start =
        app.ok("/v1/conversations", &json!({"model": "m", "instructions": "Sys.", "inputs": "Question one"})).await;
    let id = start["conversation_id"].as_str().unwrap();

    let append = app
        .ok(
            &format!("/v1/conversations/{id}"),
            &json!({"inputs": "Translate to French.", "stream": false, "store": true, "handoff_execution": "server"}),
        )
        .await;

    assert_eq!(append["conversation_id"], id);
    assert_eq!(
        upstream.last_request()["messages"],
        json!([
            {"role": "system", "content": "Sys."},
            {"role": "user", "content": "Question one"},
            {"role": "assistant", "content": "First answer."},
            {"role": "user", "content": "Translate to French."}
        ])
    );
    let history = app.history(id).await;
    assert_eq!(
        texts(&history),
        vec![
            pair("message.input", "Question one"),
            pair("message.output", "First answer."),
            pair("message.input", "Translate to French."),
            pair("message.output", "Deuxième réponse."),
        ]
    );
    assert_eq!(history[1], start["outputs"][0], "stored entries equal the returned ones");
    assert_eq!(history[3], append["outputs"][0]);
}

#[tokio::test]
async fn a_restart_from_the_middle_branches_without_touching_the_original() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("A1"), Reply::Text("A2"), Reply::Text("Resposta em português")]);
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "Q1", "metadata": {"k": "v"}})).await;
    let id = start["conversation_id"].as_str().unwrap();
    app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "Q2"})).await;
    let original = app.history(id).await;
    let from = start["outputs"][0]["id"].as_str().unwrap();

    let restarted = app
        .ok(
            &format!("/v1/conversations/{id}/restart"),
            &json!({"from_entry_id": from, "inputs": "Translate to Portuguese."}),
        )
        .await;

    let new_id = restarted["conversation_id"].as_str().unwrap();
    assert_ne!(new_id, id, "restart returns a new conversation");
    assert_eq!(
        upstream.last_request()["messages"],
        json!([
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Translate to Portuguese."}
        ])
    );
    let branch = app.history(new_id).await;
    assert_eq!(&branch[..2], &original[..2], "the prefix is shared, ids included");
    assert_eq!(
        texts(&branch[2..]),
        vec![pair("message.input", "Translate to Portuguese."), pair("message.output", "Resposta em português")]
    );
    assert_eq!(app.history(id).await, original, "the original is untouched");
    let new_conversation = json_of(app.get(&format!("/v1/conversations/{new_id}")).await, 200).await;
    assert_eq!(new_conversation["model"], "m");
    assert_eq!(new_conversation["metadata"], json!({"k": "v"}));
}

#[tokio::test]
async fn a_pinned_agent_version_or_alias_keeps_its_configuration() {
    let (app, upstream) = TestApp::with_upstream().await;
    let agent = app.create_agent(json!({"model": "model-a", "name": "a", "instructions": "Version zero."})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());
    json_of(app.patch(&path, &json!({"instructions": "Version one.", "model": "model-b"})).await, 200).await;
    app.request(reqwest::Method::PUT, &format!("{path}/aliases?alias=stable&version=0")).send().await.unwrap();

    app.ok("/v1/conversations", &json!({"agent_id": agent["id"], "agent_version": 0, "inputs": "hi"})).await;
    let pinned = upstream.last_request();
    app.ok("/v1/conversations", &json!({"agent_id": agent["id"], "inputs": "hi"})).await;
    let active = upstream.last_request();
    let by_alias =
        app.ok("/v1/conversations", &json!({"agent_id": agent["id"], "agent_version": "stable", "inputs": "hi"})).await;
    let aliased = upstream.last_request();
    let conversation =
        json_of(app.get(&format!("/v1/conversations/{}", by_alias["conversation_id"].as_str().unwrap())).await, 200)
            .await;

    assert_eq!(pinned["model"], "model-a");
    assert_eq!(pinned["messages"][0]["content"], "Version zero.");
    assert_eq!(active["model"], "model-b");
    assert_eq!(active["messages"][0]["content"], "Version one.");
    assert_eq!(aliased["messages"][0]["content"], "Version zero.");
    assert_eq!(conversation["agent_id"], agent["id"]);
    assert_eq!(conversation["agent_version"], "stable");
    assert!(conversation.get("model").is_none(), "an agent conversation has no `model` key");
}

#[tokio::test]
async fn appends_and_restarts_run_with_the_agent_version_the_conversation_follows_as_it_moves() {
    let (app, upstream) = TestApp::with_upstream().await;
    let (app, upstream) = (&app, &upstream);
    let agent = app.create_agent(json!({"model": "model-a", "name": "a", "instructions": "Version zero."})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());
    let alias = |version: u32| {
        app.request(reqwest::Method::PUT, &format!("{path}/aliases?alias=stable&version={version}")).send()
    };
    alias(0).await.unwrap();
    let agent = &agent;
    let start = |version: Value| {
        let body = match version {
            Value::Null => json!({"agent_id": agent["id"], "inputs": "hi"}),
            version => json!({"agent_id": agent["id"], "agent_version": version, "inputs": "hi"}),
        };
        async move { app.ok("/v1/conversations", &body).await["conversation_id"].as_str().unwrap().to_owned() }
    };
    let (pinned, active, aliased) = (start(json!(0)).await, start(Value::Null).await, start(json!("stable")).await);
    // The agent moves on: version 1 becomes active and the alias follows it.
    json_of(app.patch(&path, &json!({"instructions": "Version one.", "model": "model-b"})).await, 200).await;
    alias(1).await.unwrap();

    let mut seen = Vec::new();
    for id in [&pinned, &active, &aliased] {
        app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "again"})).await;
        let request = upstream.last_request();
        seen.push((request["model"].clone(), request["messages"][0]["content"].clone()));
    }
    let first_entry = &app.history(&active).await[0]["id"].clone();
    let active = &active;
    let restart = |agent_version: Option<u32>| {
        let mut body = json!({"from_entry_id": first_entry, "inputs": "again"});
        if let Some(version) = agent_version {
            body["agent_version"] = json!(version);
        }
        let path = format!("/v1/conversations/{active}/restart");
        async move {
            app.ok(&path, &body).await;
            upstream.last_request()["messages"][0]["content"].clone()
        }
    };
    let (restarted, restarted_at_zero) = (restart(None).await, restart(Some(0)).await);

    assert_eq!(
        seen,
        vec![
            (json!("model-a"), json!("Version zero.")),
            (json!("model-b"), json!("Version one.")),
            (json!("model-b"), json!("Version one.")),
        ]
    );
    assert_eq!(restarted, "Version one.");
    assert_eq!(restarted_at_zero, "Version zero.");
    // Each of them came with its agent version in the conversation's own read.
    let store = palaver::store::connect(
        &app.database_url,
        palaver::store::ConnectOptions { migrate: false, ..Default::default() },
    )
    .await
    .unwrap();
    let read = |id: &str| {
        let (store, id) = (&store, ConversationId(id.to_owned()));
        async move { store.conversation_for_turn(&WorkspaceId::default_workspace(), &id).await.unwrap().1 }
    };
    for (id, version) in [(&pinned, 0), (active, 1), (&aliased, 1)] {
        assert_eq!(read(id).await.map(|agent| agent.version), Some(version), "{id}");
    }

    // Once the agent is gone, an append says so and stores nothing.
    let before = app.history(active).await;
    assert_eq!(app.delete(&path).await.status(), 204);
    assert!(read(active).await.is_none());
    let orphaned = app.post(&format!("/v1/conversations/{active}"), &json!({"inputs": "still there?"})).await;
    assert!(json_of(orphaned, 404).await["message"].as_str().unwrap().starts_with("Agent `"));
    assert_eq!(app.history(active).await, before);
}

#[tokio::test]
async fn a_function_call_round_trip_goes_back_to_the_model_as_tool_messages() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([
        Reply::ToolCalls(
            "",
            vec![("call1", "get_weather", r#"{"city": "Paris"}"#), ("call2", "get_time", r#"{"tz": "CET"}"#)],
        ),
        Reply::Text("It is 21C at noon."),
    ]);
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    ]);
    let start =
        app.ok("/v1/conversations", &json!({"model": "m", "tools": tools, "inputs": "Weather and time?"})).await;
    let id = start["conversation_id"].as_str().unwrap();
    let calls = start["outputs"].as_array().unwrap();

    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["type"], "function.call");
    assert_eq!(calls[0]["tool_call_id"], "call1");
    assert_eq!(calls[0]["name"], "get_weather");
    assert_eq!(calls[0]["arguments"], r#"{"city": "Paris"}"#);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(calls[1]["tool_call_id"], "call2");

    let results = json!([
        {"type": "function.result", "object": "entry", "tool_call_id": "call1", "result": "21C"},
        {"type": "function.result", "object": "entry", "tool_call_id": "call2", "result": "noon"}
    ]);
    let answer = app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": results})).await;

    assert_eq!(answer["outputs"][0]["content"], "It is 21C at noon.");
    assert_eq!(
        upstream.last_request()["messages"],
        json!([
            {"role": "user", "content": "Weather and time?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "call2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\": \"CET\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call1", "name": "get_weather", "content": "21C"},
            {"role": "tool", "tool_call_id": "call2", "name": "get_time", "content": "noon"}
        ])
    );
    let kinds: Vec<String> = app.history(id).await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        kinds,
        ["message.input", "function.call", "function.call", "function.result", "function.result", "message.output"]
    );
}

/// A cached history carries the JSON of its chat messages from one turn to the next; the
/// model must see exactly what it sees when every turn reads the history from the store.
#[tokio::test]
async fn the_model_sees_the_same_history_whether_it_was_cached_or_read() {
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let mut seen = Vec::new();
    for cache_entries in [200_000, 0] {
        let options = Options { history_cache_entries: Some(cache_entries), ..Options::default() };
        let (app, upstream) = TestApp::with_upstream_options(options).await;
        upstream.script([
            Reply::Text("Hello there."),
            Reply::ToolCalls("Let me check.", vec![("call1", "get_weather", r#"{"city": "Paris"}"#)]),
            Reply::Text("It is 21C."),
            Reply::ToolCalls("", vec![("call2", "get_weather", "{}"), ("call3", "get_weather", "{}")]),
            Reply::Text("Still 21C."),
        ]);
        let start = app
            .ok(
                "/v1/conversations",
                &json!({"model": "m", "instructions": "Be brief.", "tools": tools, "inputs": "Hi"}),
            )
            .await;
        let path = format!("/v1/conversations/{}", start["conversation_id"].as_str().unwrap());
        let result = |id: &str| json!({"type": "function.result", "tool_call_id": id, "result": "21C"});
        app.ok(&path, &json!({"inputs": "Weather?"})).await;
        app.ok(&path, &json!({"inputs": [result("call1")]})).await;
        app.ok(&path, &json!({"inputs": "Again?"})).await;
        app.ok(&path, &json!({"inputs": [result("call2"), result("call3")]})).await;
        seen.push(upstream.requests().iter().map(|r| r["messages"].clone()).collect::<Vec<Value>>());
    }

    assert_eq!(seen[0], seen[1]);
    let call = |id: &str, arguments: &str| json!({"id": id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}});
    let tool = |id: &str| json!({"role": "tool", "tool_call_id": id, "name": "get_weather", "content": "21C"});
    assert_eq!(
        seen[0].last().unwrap(),
        &json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [call("call1", r#"{"city": "Paris"}"#)]},
            tool("call1"),
            {"role": "assistant", "content": "It is 21C."},
            {"role": "user", "content": "Again?"},
            {"role": "assistant", "content": null, "tool_calls": [call("call2", "{}"), call("call3", "{}")]},
            tool("call2"),
            tool("call3")
        ])
    );
}

#[tokio::test]
async fn function_results_must_answer_an_open_call_exactly_once() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::ToolCalls("", vec![("call1", "f", "{}")]), Reply::Text("done")]);
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let start = app.ok("/v1/conversations", &json!({"model": "m", "tools": tools, "inputs": "go"})).await;
    let path = format!("/v1/conversations/{}", start["conversation_id"].as_str().unwrap());
    let result = |id: &str| json!({"inputs": [{"type": "function.result", "tool_call_id": id, "result": "r"}]});

    let unknown = app.post(&path, &result("nope")).await;
    let unanswered = app.post(&path, &json!({"inputs": "moving on"})).await;
    let before = app.history(start["conversation_id"].as_str().unwrap()).await;
    app.ok(&path, &result("call1")).await;
    let twice = app.post(&path, &result("call1")).await;

    assert_invalid(unknown, json!(["body", "inputs", 0, "tool_call_id"]), "value_error").await;
    assert_invalid(unanswered, json!(["body", "inputs"]), "value_error").await;
    assert_eq!(before.len(), 2, "rejected appends stored nothing");
    let body = assert_invalid(twice, json!(["body", "inputs", 0, "tool_call_id"]), "value_error").await;
    assert!(body["message"].as_str().unwrap().contains("already has a result"), "{body}");
}

#[tokio::test]
async fn store_false_runs_the_turn_but_keeps_nothing() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("one"), Reply::Text("unsaved"), Reply::Text("ephemeral"), Reply::Text("three")]);
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "Q1"})).await;
    let id = start["conversation_id"].as_str().unwrap();

    let unsaved = app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "Q2", "store": false})).await;
    let ephemeral = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "Q", "store": false})).await;
    app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "Q3"})).await;

    assert_eq!(unsaved["outputs"][0]["content"], "unsaved");
    assert_eq!(upstream.requests()[1]["messages"].as_array().unwrap().len(), 3, "the unsaved turn saw the history");
    assert_eq!(
        texts(&app.history(id).await),
        vec![
            pair("message.input", "Q1"),
            pair("message.output", "one"),
            pair("message.input", "Q3"),
            pair("message.output", "three")
        ]
    );
    let missing = app.get(&format!("/v1/conversations/{}", ephemeral["conversation_id"].as_str().unwrap())).await;
    assert_eq!(json_of(missing, 404).await["code"], "not_found");
}

async fn assert_fault_leaves_history_and_next_append_works(reply: Reply, status: u16, options: Options) {
    let (app, upstream) = TestApp::with_upstream_options(options).await;
    upstream.script([Reply::Text("first"), reply, Reply::Text("recovered")]);
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "Q1"})).await;
    let id = start["conversation_id"].as_str().unwrap();
    let before = app.history(id).await;
    let conversation_before = json_of(app.get(&format!("/v1/conversations/{id}")).await, 200).await;

    let failed = app.post(&format!("/v1/conversations/{id}"), &json!({"inputs": "Q2"})).await;

    let body = json_of(failed, status).await;
    assert_eq!(body["object"], "error");
    assert_eq!(app.history(id).await, before, "a failed turn stores nothing");
    assert_eq!(json_of(app.get(&format!("/v1/conversations/{id}")).await, 200).await, conversation_before);
    let next = app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "Q2 again"})).await;
    assert_eq!(next["outputs"][0]["content"], "recovered");
    assert_eq!(
        texts(&app.history(id).await),
        vec![
            pair("message.input", "Q1"),
            pair("message.output", "first"),
            pair("message.input", "Q2 again"),
            pair("message.output", "recovered")
        ]
    );
}

#[tokio::test]
async fn an_upstream_500_is_a_502_and_stores_nothing() {
    assert_fault_leaves_history_and_next_append_works(
        Reply::Status(500, r#"{"error":{"message":"boom"}}"#),
        502,
        Options::default(),
    )
    .await;
}

#[tokio::test]
async fn an_upstream_429_is_passed_on_as_429() {
    assert_fault_leaves_history_and_next_append_works(
        Reply::Status(429, r#"{"message":"slow down"}"#),
        429,
        Options::default(),
    )
    .await;
}

#[tokio::test]
async fn an_upstream_that_stops_answering_times_out_with_504() {
    let options = Options { upstream_read_timeout_ms: Some(300), ..Default::default() };
    assert_fault_leaves_history_and_next_append_works(Reply::Hang, 504, options).await;
}

#[tokio::test]
async fn a_cut_upstream_stream_is_a_502_and_stores_nothing() {
    assert_fault_leaves_history_and_next_append_works(Reply::Cut("partial words here"), 502, Options::default()).await;
}

#[tokio::test]
async fn the_upstream_message_reaches_the_client() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Status(400, r#"{"object":"error","message":"Model `nope` does not exist"}"#)]);

    let body = json_of(app.post("/v1/conversations", &json!({"model": "nope", "inputs": "hi"})).await, 502).await;

    assert!(body["message"].as_str().unwrap().contains("Model `nope` does not exist"), "{body}");
    assert_eq!(json_of(app.get("/v1/conversations").await, 200).await, json!([]));
}

#[tokio::test]
async fn concurrent_appends_to_one_conversation_lose_or_duplicate_nothing() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("start")]);
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "Q0"})).await;
    let id = start["conversation_id"].as_str().unwrap().to_owned();

    let appends = (0..20).map(|n| {
        let app = &app;
        let id = &id;
        async move { (n, app.post(&format!("/v1/conversations/{id}"), &json!({"inputs": format!("writer {n}")})).await) }
    });
    let responses = futures::future::join_all(appends).await;

    let mut winners = Vec::new();
    for (n, response) in responses {
        match response.status().as_u16() {
            200 => winners.push(format!("writer {n}")),
            409 => assert_eq!(json_of(response, 409).await["code"], "conflict"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(!winners.is_empty());
    let history = app.history(&id).await;
    assert_eq!(history.len(), 2 + 2 * winners.len(), "each winning turn stored once, whole");
    let mut stored_inputs: Vec<String> = history[2..]
        .iter()
        .filter(|e| e["type"] == "message.input")
        .map(|e| e["content"].as_str().unwrap().to_owned())
        .collect();
    for pair in history[2..].chunks(2) {
        assert_eq!(pair[0]["type"], "message.input");
        assert_eq!(pair[1]["type"], "message.output", "every input is followed by its own answer");
    }
    stored_inputs.sort();
    winners.sort();
    assert_eq!(stored_inputs, winners);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_store_nothing() {
    let (app, _upstream) = TestApp::with_upstream().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "hi"})).await;
    let id = start["conversation_id"].as_str().unwrap();
    let before = app.history(id).await;

    let both = app.post("/v1/conversations", &json!({"model": "m", "agent_id": agent["id"], "inputs": "x"})).await;
    let neither = app.post("/v1/conversations", &json!({"inputs": "x"})).await;
    let no_inputs = app.post("/v1/conversations", &json!({"model": "m"})).await;
    let empty_inputs = app.post("/v1/conversations", &json!({"model": "m", "inputs": []})).await;
    let empty_text = app.post("/v1/conversations", &json!({"model": "m", "inputs": ""})).await;
    let server_entry = app
        .post(
            "/v1/conversations",
            &json!({"model": "m", "inputs": [{"type": "agent.handoff", "previous_agent_id": "a"}]}),
        )
        .await;
    let unknown_agent = app.post("/v1/conversations", &json!({"agent_id": "ag_missing", "inputs": "x"})).await;
    let unknown_version =
        app.post("/v1/conversations", &json!({"agent_id": agent["id"], "agent_version": 5, "inputs": "x"})).await;
    let unknown_alias =
        app.post("/v1/conversations", &json!({"agent_id": agent["id"], "agent_version": "gone", "inputs": "x"})).await;
    let agent_tools =
        app.post("/v1/conversations", &json!({"agent_id": agent["id"], "tools": [], "inputs": "x"})).await;
    let unknown_field = app.post("/v1/conversations", &json!({"model": "m", "inputs": "x", "colour": 1})).await;
    let unknown_conversation = app.post("/v1/conversations/conv_missing", &json!({"inputs": "x"})).await;
    let off_branch = app
        .post(&format!("/v1/conversations/{id}/restart"), &json!({"from_entry_id": "msg_nope", "inputs": "x"}))
        .await;
    let bad_args =
        app.post(&format!("/v1/conversations/{id}"), &json!({"inputs": "x", "completion_args": {"top_p": 9}})).await;

    assert_invalid(both, json!(["body", "model"]), "value_error").await;
    assert_invalid(neither, json!(["body", "agent_id"]), "missing").await;
    assert_invalid(no_inputs, json!(["body", "inputs"]), "missing").await;
    assert_invalid(empty_inputs, json!(["body", "inputs"]), "too_short").await;
    assert_invalid(empty_text, json!(["body", "inputs"]), "too_short").await;
    assert_invalid(server_entry, json!(["body", "inputs", 0, "type"]), "enum").await;
    assert_eq!(json_of(unknown_agent, 404).await["message"], "Agent `ag_missing` not found.");
    assert!(json_of(unknown_version, 404).await["message"].as_str().unwrap().contains("Version `5`"));
    assert!(json_of(unknown_alias, 404).await["message"].as_str().unwrap().contains("Alias `gone`"));
    assert_invalid(agent_tools, json!(["body", "tools"]), "extra_forbidden").await;
    assert_invalid(unknown_field, json!(["body", "colour"]), "extra_forbidden").await;
    assert_eq!(json_of(unknown_conversation, 404).await["message"], "Conversation `conv_missing` not found.");
    assert_eq!(json_of(off_branch, 404).await["code"], "not_found");
    assert_invalid(bad_args, json!(["body", "completion_args", "top_p"]), "value_error").await;
    assert_eq!(app.history(id).await, before);
    assert_eq!(json_of(app.get("/v1/conversations").await, 200).await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_restart_cannot_branch_from_an_entry_of_another_branch() {
    let (app, _upstream) = TestApp::with_upstream().await;
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "Q1"})).await;
    let id = start["conversation_id"].as_str().unwrap();
    let branch = app
        .ok(
            &format!("/v1/conversations/{id}/restart"),
            &json!({"from_entry_id": start["outputs"][0]["id"], "inputs": "B"}),
        )
        .await;
    let branch_only = branch["outputs"][0]["id"].clone();

    let response = app
        .post(&format!("/v1/conversations/{id}/restart"), &json!({"from_entry_id": branch_only, "inputs": "x"}))
        .await;

    assert_eq!(json_of(response, 404).await["code"], "not_found");
}

#[tokio::test]
async fn conversations_are_listed_newest_first_got_in_their_shape_and_deleted() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;
    let model_conv = app
        .ok(
            "/v1/conversations",
            &json!({"model": "echo", "inputs": "hi", "name": "n", "description": "d", "metadata": {"user": "u1"}}),
        )
        .await;
    let agent_conv = app.ok("/v1/conversations", &json!({"agent_id": agent["id"], "inputs": "hi"})).await;
    let model_id = model_conv["conversation_id"].as_str().unwrap();
    let agent_id = agent_conv["conversation_id"].as_str().unwrap();

    let listed = json_of(
        app.get("/v1/conversations?page=0&page_size=100&metadata=%22~%3F~unset~%3F~sentinel~%3F~%22").await,
        200,
    )
    .await;
    let filtered = json_of(app.get("/v1/conversations?metadata=%7B%22user%22%3A%22u1%22%7D").await, 200).await;
    let second_page = json_of(app.get("/v1/conversations?page=1&page_size=1").await, 200).await;
    let model = json_of(app.get(&format!("/v1/conversations/{model_id}")).await, 200).await;
    let by_agent = json_of(app.get(&format!("/v1/conversations/{agent_id}")).await, 200).await;
    let messages = json_of(app.get(&format!("/v1/conversations/{model_id}/messages")).await, 200).await;
    let deleted = app.delete(&format!("/v1/conversations/{model_id}")).await;

    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![agent_id, model_id]);
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(second_page[0]["id"], model_id);
    assert_eq!(model["object"], "conversation");
    assert_eq!(model["model"], "echo");
    assert_eq!(model["tools"], json!([]));
    assert_eq!(model["completion_args"]["tool_choice"], "auto");
    assert_eq!((model["name"].as_str(), model["description"].as_str()), (Some("n"), Some("d")));
    assert!(model.get("agent_id").is_none());
    assert_eq!(by_agent["agent_id"], agent["id"]);
    assert!(by_agent.get("model").is_none());
    assert_eq!(messages["object"], "conversation.messages");
    assert_eq!(messages["messages"].as_array().unwrap().len(), 2);
    assert_eq!(deleted.status(), 204);
    assert_eq!(json_of(app.get(&format!("/v1/conversations/{model_id}")).await, 404).await["code"], "not_found");
}

#[tokio::test]
async fn the_echo_model_answers_with_the_last_user_message() {
    let app = TestApp::spawn().await;

    let response =
        app.ok("/v1/conversations", &json!({"model": "anything", "inputs": "Who is Albert Einstein?"})).await;

    assert_eq!(response["outputs"][0]["content"], "Who is Albert Einstein?");
    assert_eq!(response["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn a_slow_upstream_does_not_block_other_conversations() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Slow("slow words arrive slowly", Duration::from_millis(150)), Reply::Text("fast")]);
    let slow_body = json!({"model": "m", "inputs": "slow"});
    let slow = app.post("/v1/conversations", &slow_body);
    let fast = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let response = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "fast"})).await;
        (std::time::Instant::now(), response)
    };

    let (slow, (fast_done, fast)) = tokio::join!(slow, fast);
    let slow_done = std::time::Instant::now();

    assert_eq!(fast["outputs"][0]["content"], "fast");
    assert!(fast_done <= slow_done);
    assert_eq!(json_of(slow, 200).await["outputs"][0]["content"], "slow words arrive slowly");
}
