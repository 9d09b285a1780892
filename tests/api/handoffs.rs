//! Handoffs between agents (DESIGN decision 10): the offer, server and client execution,
//! the agent in force on a branch, bounds, streaming, against a scripted upstream whose
//! requests are asserted exactly.

use crate::helpers::{json_of, names, Options, TestApp};
use crate::upstream::{FakeUpstream, Reply};
use serde_json::{json, Value};

/// A `&'static str` for a scripted reply (the fake upstream scripts take static names).
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

fn handoff_call(id: &'static str, target: &str) -> (&'static str, &'static str, &'static str) {
    (id, leak(format!("handoff_to_{target}")), "{}")
}

async fn agent(app: &TestApp, body: Value) -> String {
    app.create_agent(body).await["id"].as_str().unwrap().to_owned()
}

/// Two agents on two models: `Triage` hands off to `Billing`. Returns their ids.
async fn triage_and_billing(app: &TestApp) -> (String, String) {
    let billing = agent(app, json!({"model": "model-b", "name": "Billing"})).await;
    let triage = agent(app, json!({"model": "model-a", "name": "Triage", "handoffs": [billing]})).await;
    (triage, billing)
}

/// The function names offered in an upstream request.
fn offered(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| tools.iter().map(|t| t["function"]["name"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn tool_description<'a>(request: &'a Value, name: &str) -> &'a str {
    let tools = request["tools"].as_array().unwrap();
    tools.iter().find(|t| t["function"]["name"] == name).unwrap()["function"]["description"].as_str().unwrap()
}

fn types(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_server_handoff_runs_the_next_round_as_the_target_with_its_model_instructions_and_tools() {
    let (app, upstream) = TestApp::with_upstream().await;
    let refund = json!({"type": "function", "function": {"name": "refund", "parameters": {"type": "object"}}});
    let billing = agent(
        &app,
        json!({"model": "model-b", "name": "Billing", "description": "Answers questions about invoices.",
               "instructions": "You are the billing desk.", "tools": [refund]}),
    )
    .await;
    let triage = agent(
        &app,
        json!({"model": "model-a", "name": "Triage", "instructions": "Route the user.", "handoffs": [billing]}),
    )
    .await;
    upstream
        .script([Reply::ToolCalls("", vec![handoff_call("call_h1", &billing)]), Reply::Text("Your invoice is paid.")]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": triage, "inputs": "my invoice?"})).await;

    let outputs = response["outputs"].as_array().unwrap();
    assert_eq!(types(outputs), ["agent.handoff", "message.output"]);
    let handoff = &outputs[0];
    assert!(handoff["id"].as_str().unwrap().starts_with("handoff_"));
    assert_eq!((&handoff["previous_agent_id"], &handoff["previous_agent_name"]), (&json!(triage), &json!("Triage")));
    assert_eq!((&handoff["next_agent_id"], &handoff["next_agent_name"]), (&json!(billing), &json!("Billing")));
    assert_eq!(outputs[1]["agent_id"], billing.as_str(), "outputs after the handoff are the target's");
    assert_eq!(outputs[1]["model"], "model-b");
    assert_eq!(outputs[1]["content"], "Your invoice is paid.");
    // One tool call round (11 + 1) and one answer of four words (11 + 4).
    assert_eq!(response["usage"]["prompt_tokens"], 22);
    assert_eq!(response["usage"]["completion_tokens"], 5);

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2, "one model round per agent");
    let (first, second) = (&requests[0], &requests[1]);
    assert_eq!(first["model"], "model-a");
    assert_eq!(first["messages"][0], json!({"role": "system", "content": "Route the user."}));
    assert_eq!(offered(first), [format!("handoff_to_{billing}")]);
    let offer = tool_description(first, &format!("handoff_to_{billing}"));
    assert!(offer.contains("`Billing`") && offer.contains("Answers questions about invoices."), "{offer}");
    assert_eq!(second["model"], "model-b");
    assert_eq!(second["messages"][0], json!({"role": "system", "content": "You are the billing desk."}));
    assert_eq!(offered(second), ["refund"], "the target's tools, and no handoff it does not list");
    let messages = second["messages"].as_array().unwrap();
    assert_eq!(messages[1], json!({"role": "user", "content": "my invoice?"}));
    assert_eq!(messages[2]["role"], "assistant");
    let call = &messages[2]["tool_calls"][0];
    assert_eq!(call["function"]["name"], format!("handoff_to_{billing}"));
    assert_eq!(call["id"].as_str().unwrap().len(), 9, "a tool call id Mistral accepts");
    assert_eq!(messages[3]["role"], "tool");
    assert_eq!(messages[3]["tool_call_id"], call["id"]);
    assert!(messages[3]["content"].as_str().unwrap().starts_with("Transferred the conversation to agent `Billing`"));

    let history = app.history(response["conversation_id"].as_str().unwrap()).await;
    assert_eq!(history[1..], outputs[..], "what was answered is what is stored");
    let conversation =
        json_of(app.get(&format!("/v1/conversations/{}", response["conversation_id"].as_str().unwrap())).await, 200)
            .await;
    assert_eq!(conversation["agent_id"], triage.as_str(), "the conversation keeps its own agent");
}

#[tokio::test]
async fn an_agent_is_never_offered_itself_nor_a_target_that_no_longer_exists() {
    let (app, upstream) = TestApp::with_upstream().await;
    let kept = agent(&app, json!({"model": "m", "name": "Kept"})).await;
    let gone = agent(&app, json!({"model": "m", "name": "Gone"})).await;
    let triage = agent(&app, json!({"model": "m", "name": "Triage", "handoffs": [kept, gone]})).await;
    let patched = app.patch(&format!("/v1/agents/{triage}"), &json!({"handoffs": [kept, gone, triage]})).await;
    assert_eq!(patched.status(), 200);
    assert_eq!(app.delete(&format!("/v1/agents/{gone}")).await.status(), 204);

    app.ok("/v1/conversations", &json!({"agent_id": triage, "inputs": "hi"})).await;

    assert_eq!(offered(&upstream.last_request()), [format!("handoff_to_{kept}")]);
}

#[tokio::test]
async fn a_handoff_reaches_a_target_whose_model_another_upstream_serves() {
    let second = FakeUpstream::start().await;
    let config = format!(
        "[[upstream]]\nname = \"second\"\nurl = \"{}\"\n\n[[route]]\nmodel = \"model-b\"\nupstream = \"second\"\n",
        second.url
    );
    let (app, first) =
        TestApp::with_upstream_options(Options { config_toml: Some(config), ..Default::default() }).await;
    let (triage, billing) = triage_and_billing(&app).await;
    first.script([Reply::ToolCalls("", vec![handoff_call("call_h1", &billing)])]);
    second.script([Reply::Text("Billing here.")]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": triage, "inputs": "invoice"})).await;

    assert_eq!(response["outputs"][1]["content"], "Billing here.");
    assert_eq!(first.requests().len(), 1);
    assert_eq!(second.requests().len(), 1);
    assert_eq!(second.last_request()["model"], "model-b");
}

#[tokio::test]
async fn handoffs_chain_from_agent_to_agent_within_one_turn() {
    let (app, upstream) = TestApp::with_upstream().await;
    let c = agent(&app, json!({"model": "model-c", "name": "C"})).await;
    let b = agent(&app, json!({"model": "model-b", "name": "B", "handoffs": [c]})).await;
    let a = agent(&app, json!({"model": "model-a", "name": "A", "handoffs": [b]})).await;
    upstream.script([
        Reply::ToolCalls("", vec![handoff_call("call_1", &b)]),
        Reply::ToolCalls("", vec![handoff_call("call_2", &c)]),
        Reply::Text("C answers."),
    ]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": a, "inputs": "go"})).await;

    let outputs = response["outputs"].as_array().unwrap();
    assert_eq!(types(outputs), ["agent.handoff", "agent.handoff", "message.output"]);
    assert_eq!((&outputs[0]["next_agent_id"], &outputs[1]["previous_agent_id"]), (&json!(b), &json!(b)));
    assert_eq!(outputs[1]["next_agent_id"], c.as_str());
    assert_eq!(outputs[2]["agent_id"], c.as_str());
    let models: Vec<Value> = upstream.requests().iter().map(|r| r["model"].clone()).collect();
    assert_eq!(models, [json!("model-a"), json!("model-b"), json!("model-c")]);
    assert_eq!(offered(&upstream.requests()[1]), [format!("handoff_to_{c}")], "B offers its own targets");
}

#[tokio::test]
async fn a_handoff_cycle_is_stopped_by_the_bound_with_a_clear_error_and_nothing_stored() {
    let (app, upstream) = TestApp::with_upstream_options(Options { max_handoffs: Some(2), ..Default::default() }).await;
    let a = agent(&app, json!({"model": "model-a", "name": "A"})).await;
    let b = agent(&app, json!({"model": "model-b", "name": "B", "handoffs": [a]})).await;
    assert_eq!(app.patch(&format!("/v1/agents/{a}"), &json!({"handoffs": [b]})).await.status(), 200);
    upstream.script([
        Reply::ToolCalls("", vec![handoff_call("call_1", &b)]),
        Reply::ToolCalls("", vec![handoff_call("call_2", &a)]),
        Reply::ToolCalls("", vec![handoff_call("call_3", &b)]),
    ]);

    let response = app.post("/v1/conversations", &json!({"agent_id": a, "inputs": "loop"})).await;

    let body = json_of(response, 500).await;
    assert_eq!(body["message"], "The turn handed off more than 2 times (PALAVER_MAX_HANDOFFS).");
    assert_eq!(body["type"], "server_error");
    assert_eq!(upstream.requests().len(), 3, "A, B and A again ran before the third handoff");
    let listed = json_of(app.get("/v1/conversations").await, 200).await;
    assert_eq!(listed, json!([]), "a failed turn stores nothing");
}

#[tokio::test]
async fn client_execution_stops_at_the_handoff_and_the_next_append_is_answered_by_the_target() {
    let (app, upstream) = TestApp::with_upstream().await;
    let billing = agent(&app, json!({"model": "model-b", "name": "Billing", "instructions": "Billing."})).await;
    let triage = agent(&app, json!({"model": "model-a", "name": "Triage", "handoffs": [billing]})).await;
    upstream.script([
        Reply::ToolCalls("One moment.", vec![handoff_call("call_h1", &billing)]),
        Reply::Text("Billing speaking."),
    ]);

    let started = app
        .ok("/v1/conversations", &json!({"agent_id": triage, "inputs": "invoice", "handoff_execution": "client"}))
        .await;

    assert_eq!(types(started["outputs"].as_array().unwrap()), ["message.output", "agent.handoff"]);
    assert_eq!(upstream.requests().len(), 1, "the target has not been called");
    let id = started["conversation_id"].as_str().unwrap();
    assert_eq!(types(&app.history(id).await), ["message.input", "message.output", "agent.handoff"]);

    let appended = app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "hello?"})).await;

    assert_eq!(appended["outputs"][0]["agent_id"], billing.as_str());
    assert_eq!(appended["outputs"][0]["content"], "Billing speaking.");
    let request = upstream.last_request();
    assert_eq!(request["model"], "model-b");
    assert_eq!(request["messages"][0], json!({"role": "system", "content": "Billing."}));
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages[2]["content"], "One moment.", "the previous agent's words, as an assistant message");
    assert_eq!(messages[2]["tool_calls"][0]["function"]["name"], format!("handoff_to_{billing}"));
    assert_eq!(messages[4], json!({"role": "user", "content": "hello?"}));
}

#[tokio::test]
async fn client_execution_works_on_append_and_restart_too() {
    let (app, upstream) = TestApp::with_upstream().await;
    let (triage, billing) = triage_and_billing(&app).await;
    upstream.script([
        Reply::Text("Hello."),
        Reply::ToolCalls("", vec![handoff_call("call_h1", &billing)]),
        Reply::ToolCalls("", vec![handoff_call("call_h2", &billing)]),
    ]);
    let started = app.ok("/v1/conversations", &json!({"agent_id": triage, "inputs": "hi"})).await;
    let id = started["conversation_id"].as_str().unwrap();
    let client = json!("client");

    let appended =
        app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "bill", "handoff_execution": client})).await;
    let restarted = app
        .ok(
            &format!("/v1/conversations/{id}/restart"),
            &json!({"from_entry_id": started["outputs"][0]["id"], "inputs": "bill", "handoff_execution": client}),
        )
        .await;

    assert_eq!(types(appended["outputs"].as_array().unwrap()), ["agent.handoff"]);
    assert_eq!(types(restarted["outputs"].as_array().unwrap()), ["agent.handoff"]);
    assert_eq!(upstream.requests().len(), 3, "no target was called");
    let branch = restarted["conversation_id"].as_str().unwrap();
    assert_eq!(
        types(&app.history(branch).await),
        ["message.input", "message.output", "message.input", "agent.handoff"]
    );
}

#[tokio::test]
async fn a_restart_from_before_the_handoff_is_answered_by_the_original_agent() {
    let (app, upstream) = TestApp::with_upstream().await;
    let (triage, billing) = triage_and_billing(&app).await;
    upstream.script([
        Reply::Text("Hello."),
        Reply::ToolCalls("", vec![handoff_call("call_h1", &billing)]),
        Reply::Text("Billing."),
    ]);
    let started = app.ok("/v1/conversations", &json!({"agent_id": triage, "inputs": "hi"})).await;
    let id = started["conversation_id"].as_str().unwrap();
    app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "billing please"})).await;
    let first_answer = started["outputs"][0]["id"].as_str().unwrap();

    let restarted = app
        .ok(&format!("/v1/conversations/{id}/restart"), &json!({"from_entry_id": first_answer, "inputs": "again"}))
        .await;
    let appended = app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "more"})).await;

    assert_eq!(restarted["outputs"][0]["agent_id"], triage.as_str());
    assert_eq!(appended["outputs"][0]["agent_id"], billing.as_str(), "the original branch stays with the target");
    let models: Vec<Value> = upstream.requests().iter().map(|r| r["model"].clone()).collect();
    assert_eq!(models[3..], [json!("model-a"), json!("model-b")]);
}

#[tokio::test]
async fn other_calls_beside_a_handoff_are_superseded_by_it_and_left_open_nowhere() {
    let (app, upstream) = TestApp::with_upstream().await;
    let lookup = json!({"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}});
    let billing = agent(&app, json!({"model": "model-b", "name": "Billing"})).await;
    let triage =
        agent(&app, json!({"model": "model-a", "name": "Triage", "tools": [lookup], "handoffs": [billing]})).await;
    upstream.script([
        Reply::ToolCalls("", vec![("call_f", "lookup", "{\"q\": 1}"), handoff_call("call_h", &billing)]),
        Reply::Text("Billing answers."),
    ]);

    let events = app.stream("/v1/conversations", &json!({"agent_id": triage, "inputs": "x", "stream": true})).await;

    assert!(!names(&events).contains(&"function.call.delta"), "the superseded call is never announced");
    let id = events[0].1["conversation_id"].as_str().unwrap();
    assert_eq!(types(&app.history(id).await), ["message.input", "agent.handoff", "message.output"]);
    let second = &upstream.requests()[1];
    let calls: Vec<&Value> =
        second["messages"].as_array().unwrap().iter().filter_map(|m| m.get("tool_calls")).collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].as_array().unwrap().len(), 1, "only the handoff reaches the target: {calls:?}");
    // Without a handoff in the answer, the same client call streams and waits for its result.
    upstream.script([Reply::ToolCalls("", vec![("call_f2", "lookup", "{}")])]);
    let events = app.stream("/v1/conversations", &json!({"agent_id": triage, "inputs": "y", "stream": true})).await;
    assert!(names(&events).contains(&"function.call.delta"));
}

#[tokio::test]
async fn a_streamed_handoff_announces_itself_and_folds_into_what_is_stored() {
    let (app, upstream) = TestApp::with_upstream().await;
    let (triage, billing) = triage_and_billing(&app).await;
    upstream.script([Reply::ToolCalls("", vec![handoff_call("call_h1", &billing)]), Reply::Text("Paid.")]);

    let events =
        app.stream("/v1/conversations", &json!({"agent_id": triage, "inputs": "invoice", "stream": true})).await;

    assert_eq!(
        names(&events),
        [
            "conversation.response.started",
            "agent.handoff.started",
            "agent.handoff.done",
            "message.output.delta",
            "conversation.response.done"
        ]
    );
    let (started, done) = (&events[1].1, &events[2].1);
    assert_eq!(started["id"], done["id"]);
    assert_eq!((&started["previous_agent_id"], &started["previous_agent_name"]), (&json!(triage), &json!("Triage")));
    assert_eq!((&done["next_agent_id"], &done["next_agent_name"]), (&json!(billing), &json!("Billing")));
    assert_eq!(events[3].1["agent_id"], billing.as_str());
    assert_eq!(events[3].1["output_index"], 1);
    let id = events[0].1["conversation_id"].as_str().unwrap();
    let history = app.history(id).await;
    assert_eq!(history[1]["id"], started["id"]);
    assert_eq!(history[1]["next_agent_id"], billing.as_str());
    assert_eq!(history[2]["id"], events[3].1["id"]);
    assert_eq!(history[2]["content"], "Paid.");
}

#[tokio::test]
async fn two_handoff_turns_racing_on_one_conversation_store_one_and_refuse_the_other() {
    let (app, upstream) = TestApp::with_upstream().await;
    let (triage, billing) = triage_and_billing(&app).await;
    let started = app.ok("/v1/conversations", &json!({"agent_id": triage, "inputs": "hi"})).await;
    let id = started["conversation_id"].as_str().unwrap().to_owned();
    // Both turns' first rounds (the handoffs) are held until both have reached the model,
    // so both run on the same head.
    let held = |id| Reply::Held(Box::new(Reply::ToolCalls("", vec![handoff_call(id, &billing)])));
    upstream.script([held("call_1"), held("call_2"), Reply::Text("one"), Reply::Text("two")]);

    let path = format!("/v1/conversations/{id}");
    let (a, b) = (json!({"inputs": "a"}), json!({"inputs": "b"}));
    let release = async {
        while upstream.requests().len() < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Released until both answers are out: a release before a turn waits is not kept.
        loop {
            upstream.release();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let (first, second) = tokio::select! {
        pair = async { tokio::join!(app.post(&path, &a), app.post(&path, &b)) } => pair,
        _ = release => unreachable!(),
    };

    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    let history = app.history(&id).await;
    assert_eq!(
        types(&history),
        ["message.input", "message.output", "message.input", "agent.handoff", "message.output"],
        "the first turn and one whole racing turn"
    );
}
