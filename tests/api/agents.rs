//! The agents API of the official SDKs' agents contract, end to end.

use crate::helpers::{assert_invalid, json_of, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

fn all_tool_types() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.", "strict": true,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "web_search"},
        {"type": "web_search_premium", "tool_configuration": {"requires_confirmation": ["web_search"]}},
        {"type": "code_interpreter"},
        {"type": "image_generation"},
        {"type": "document_library", "library_ids": ["0197f425-5e85-7353-b8e7-e8b974b9c613"]},
        {"type": "connector", "connector_id": "gmail", "authorization": {"type": "oauth2-token", "value": "t"},
            "tool_configuration": {"include": ["gmail_search"]}}
    ])
}

#[tokio::test]
async fn creating_an_agent_returns_version_0_with_every_field_the_sdks_require() {
    let app = TestApp::spawn().await;

    let agent = app
        .create_agent(
            json!({"model": "mistral-medium-latest", "name": "Simple Agent", "description": "A simple Agent."}),
        )
        .await;

    let id = agent["id"].as_str().unwrap();
    assert!(id.starts_with("ag_") && id.len() == 35, "{id}");
    assert_eq!(agent["object"], "agent");
    assert_eq!(agent["version"], 0);
    assert_eq!(agent["versions"], json!([0]));
    assert_eq!(agent["source"], "api");
    assert_eq!(agent["deployment_chat"], false);
    assert_eq!(agent["tools"], json!([]));
    assert_eq!(agent["completion_args"]["tool_choice"], "auto");
    assert_eq!(agent["instructions"], Value::Null);
    assert_eq!(agent["created_at"], agent["updated_at"]);
    assert!(agent["created_at"].as_str().unwrap().ends_with('Z'));
    let fetched = json_of(app.get(&format!("/v1/agents/{id}")).await, 200).await;
    assert_eq!(fetched, agent);
}

#[tokio::test]
async fn every_tool_type_is_stored_and_returned_as_sent() {
    let app = TestApp::spawn().await;

    let agent = app.create_agent(json!({"model": "m", "name": "tools", "tools": all_tool_types()})).await;

    assert_eq!(agent["tools"], all_tool_types());
    let fetched = json_of(app.get(&format!("/v1/agents/{}", agent["id"].as_str().unwrap())).await, 200).await;
    assert_eq!(fetched["tools"], all_tool_types());
}

#[tokio::test]
async fn python_1_x_clients_do_not_receive_connector_tools_they_cannot_parse() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "tools", "tools": all_tool_types()})).await;

    let response = app
        .request(Method::GET, &format!("/v1/agents/{}", agent["id"].as_str().unwrap()))
        .header("user-agent", "mistral-client-python/1.9.11")
        .send()
        .await
        .unwrap();

    let tools = json_of(response, 200).await["tools"].clone();
    assert_eq!(tools.as_array().unwrap().len(), 6);
    assert!(tools.as_array().unwrap().iter().all(|t| t["type"] != "connector"));
}

#[tokio::test]
async fn an_update_keeps_absent_fields_clears_nulls_and_makes_a_new_active_version() {
    let app = TestApp::spawn().await;
    let target = app.create_agent(json!({"model": "m", "name": "target"})).await;
    let agent = app
        .create_agent(json!({"model": "m", "name": "a", "instructions": "be nice", "description": "d",
            "completion_args": {"temperature": 0.3}, "handoffs": [target["id"]], "metadata": {"team": "x"}}))
        .await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());

    let updated = json_of(
        app.patch(&path, &json!({"instructions": "new", "tools": [], "description": null, "handoffs": null})).await,
        200,
    )
    .await;

    assert_eq!(updated["version"], 1);
    assert_eq!(updated["versions"], json!([0, 1]));
    assert_eq!(updated["instructions"], "new");
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(updated["handoffs"], Value::Null);
    assert_eq!(updated["name"], "a");
    assert_eq!(updated["completion_args"]["temperature"], 0.3);
    assert_eq!(updated["metadata"], json!({"team": "x"}));
    assert_eq!(updated["created_at"], agent["created_at"]);
    assert_ne!(updated["updated_at"], agent["updated_at"]);
    let active = json_of(app.get(&path).await, 200).await;
    assert_eq!(active, updated);
    let first = json_of(app.get(&format!("{path}?agent_version=0")).await, 200).await;
    assert_eq!(first["instructions"], "be nice");
    assert_eq!(first["description"], "d");
}

#[tokio::test]
async fn an_update_that_only_sends_tools_still_creates_a_version() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a", "tools": [{"type": "web_search"}]})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());

    let updated = json_of(app.patch(&path, &json!({"tools": [{"type": "web_search"}]})).await, 200).await;

    assert_eq!(updated["version"], 1);
}

#[tokio::test]
async fn switching_versions_changes_the_active_configuration_and_the_next_update_builds_on_it() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a", "description": "v0"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());
    json_of(app.patch(&path, &json!({"description": "v1", "instructions": "i1"})).await, 200).await;

    let switched =
        json_of(app.request(Method::PATCH, &format!("{path}/version?version=0")).send().await.unwrap(), 200).await;
    let next = json_of(app.patch(&path, &json!({"name": "renamed"})).await, 200).await;

    assert_eq!(switched["version"], 0);
    assert_eq!(switched["description"], "v0");
    assert_eq!(switched["versions"], json!([0, 1]));
    assert_eq!(json_of(app.get(&path).await, 200).await["version"], 2);
    assert_eq!(next["version"], 2);
    assert_eq!(next["description"], "v0", "version 2 is built on the active version 0");
    assert_eq!(next["instructions"], Value::Null);
}

#[tokio::test]
async fn the_version_can_also_come_in_a_json_body_as_in_the_old_curl_example() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());
    json_of(app.patch(&path, &json!({"description": "v1"})).await, 200).await;

    let switched = json_of(app.patch(&format!("{path}/version"), &json!({"version": 0})).await, 200).await;

    assert_eq!(switched["version"], 0);
}

#[tokio::test]
async fn switching_to_a_version_that_does_not_exist_is_a_404_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());

    let response = app.request(Method::PATCH, &format!("{path}/version?version=7")).send().await.unwrap();

    let body = json_of(response, 404).await;
    assert_eq!(body["code"], "not_found");
    assert!(body["message"].as_str().unwrap().contains("Version `7`"), "{body}");
    assert_eq!(json_of(app.get(&path).await, 200).await, agent);
}

#[tokio::test]
async fn versions_are_listed_oldest_first_and_paged() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());
    for n in 1..=4 {
        json_of(app.patch(&path, &json!({"description": format!("v{n}")})).await, 200).await;
    }

    let all = json_of(app.get(&format!("{path}/versions")).await, 200).await;
    let second_page = json_of(app.get(&format!("{path}/versions?page=1&page_size=2")).await, 200).await;
    let third = json_of(app.get(&format!("{path}/versions/3")).await, 200).await;

    let numbers: Vec<i64> = all.as_array().unwrap().iter().map(|a| a["version"].as_i64().unwrap()).collect();
    assert_eq!(numbers, vec![0, 1, 2, 3, 4]);
    let numbers: Vec<i64> = second_page.as_array().unwrap().iter().map(|a| a["version"].as_i64().unwrap()).collect();
    assert_eq!(numbers, vec![2, 3]);
    assert_eq!(third["version"], 3);
    assert_eq!(third["description"], "v3");
    assert_eq!(third["versions"], json!([0, 1, 2, 3, 4]));
}

#[tokio::test]
async fn aliases_name_versions_and_can_be_re_pointed_listed_and_deleted() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a", "description": "v0"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());
    json_of(app.patch(&path, &json!({"description": "v1"})).await, 200).await;

    let created =
        json_of(app.request(Method::PUT, &format!("{path}/aliases?alias=prod&version=0")).send().await.unwrap(), 200)
            .await;
    let by_alias = json_of(app.get(&format!("{path}?agent_version=prod")).await, 200).await;
    let moved =
        json_of(app.request(Method::PUT, &format!("{path}/aliases?alias=prod&version=1")).send().await.unwrap(), 200)
            .await;
    let by_alias_after = json_of(app.get(&format!("{path}?agent_version=prod")).await, 200).await;
    json_of(app.request(Method::PUT, &format!("{path}/aliases?alias=canary&version=1")).send().await.unwrap(), 200)
        .await;
    let listed = json_of(app.get(&format!("{path}/aliases")).await, 200).await;
    let deleted = app.delete(&format!("{path}/aliases?alias=prod")).await;
    let after_delete = app.get(&format!("{path}?agent_version=prod")).await;

    assert_eq!(created["alias"], "prod");
    assert_eq!(created["version"], 0);
    assert_eq!(by_alias["description"], "v0");
    assert_eq!(moved["version"], 1);
    assert_eq!(moved["created_at"], created["created_at"]);
    assert_eq!(by_alias_after["description"], "v1");
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|a| a["alias"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["prod", "canary"]);
    assert_eq!(deleted.status(), 204);
    assert!(deleted.text().await.unwrap().is_empty());
    let body = json_of(after_delete, 404).await;
    assert!(body["message"].as_str().unwrap().contains("Alias `prod`"), "{body}");
}

#[tokio::test]
async fn an_alias_must_point_at_an_existing_version_and_follow_the_naming_pattern() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());

    let missing_version =
        app.request(Method::PUT, &format!("{path}/aliases?alias=prod&version=3")).send().await.unwrap();
    let bad_name = app.request(Method::PUT, &format!("{path}/aliases?alias=Prod%20X&version=0")).send().await.unwrap();
    let no_version = app.request(Method::PUT, &format!("{path}/aliases?alias=prod")).send().await.unwrap();
    let unknown_delete = app.delete(&format!("{path}/aliases?alias=ghost")).await;

    assert_eq!(json_of(missing_version, 404).await["code"], "not_found");
    assert_invalid(bad_name, json!(["query", "alias"]), "string_pattern_mismatch").await;
    assert_invalid(no_version, json!(["query", "version"]), "missing").await;
    assert_eq!(json_of(unknown_delete, 404).await["code"], "not_found");
    assert_eq!(json_of(app.get(&format!("{path}/aliases")).await, 200).await, json!([]));
}

#[tokio::test]
async fn deleting_an_agent_answers_204_and_removes_it_with_its_versions() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());
    json_of(app.patch(&path, &json!({"description": "v1"})).await, 200).await;
    json_of(app.request(Method::PUT, &format!("{path}/aliases?alias=prod&version=1")).send().await.unwrap(), 200).await;

    let deleted = app.delete(&path).await;

    assert_eq!(deleted.status(), 204);
    assert!(deleted.text().await.unwrap().is_empty());
    assert_eq!(json_of(app.get(&path).await, 404).await["code"], "not_found");
    assert_eq!(json_of(app.get(&format!("{path}/versions/1")).await, 404).await["code"], "not_found");
    assert_eq!(json_of(app.delete(&path).await, 404).await["code"], "not_found");
    assert_eq!(json_of(app.get("/v1/agents").await, 200).await, json!([]));
}

#[tokio::test]
async fn agents_are_listed_newest_first_and_paged() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.create_agent(json!({"model": "m", "name": format!("agent {n}")})).await["id"].clone());
    }
    ids.reverse();

    let all = json_of(app.get("/v1/agents").await, 200).await;
    let page = json_of(app.get("/v1/agents?page=1&page_size=2").await, 200).await;

    let listed: Vec<Value> = all.as_array().unwrap().iter().map(|a| a["id"].clone()).collect();
    assert_eq!(listed, ids);
    let listed: Vec<Value> = page.as_array().unwrap().iter().map(|a| a["id"].clone()).collect();
    assert_eq!(listed, ids[2..4].to_vec());
}

#[tokio::test]
async fn list_filters_apply_to_the_active_version() {
    let app = TestApp::spawn().await;
    let alpha =
        app.create_agent(json!({"model": "m", "name": "Alpha Bot", "metadata": {"team": "red", "tier": 1}})).await;
    let beta = app.create_agent(json!({"model": "m", "name": "beta", "metadata": {"team": "blue"}})).await;
    let beta_path = format!("/v1/agents/{}", beta["id"].as_str().unwrap());
    json_of(app.patch(&beta_path, &json!({"deployment_chat": true})).await, 200).await;
    let names = |body: Value| -> Vec<String> {
        body.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_owned()).collect()
    };

    let by_name = names(json_of(app.get("/v1/agents?name=beta").await, 200).await);
    let by_search = names(json_of(app.get("/v1/agents?search=ALPHA").await, 200).await);
    let by_id = names(json_of(app.get(&format!("/v1/agents?id={}", alpha["id"].as_str().unwrap())).await, 200).await);
    let by_flag = names(json_of(app.get("/v1/agents?deployment_chat=true").await, 200).await);
    let by_metadata =
        names(json_of(app.get("/v1/agents?metadata=%7B%22team%22%3A%22red%22%2C%22tier%22%3A1%7D").await, 200).await);
    let by_wrong_metadata = names(json_of(app.get("/v1/agents?metadata=%7B%22tier%22%3A%221%22%7D").await, 200).await);
    let sentinel = names(
        json_of(app.get("/v1/agents?page=0&page_size=20&metadata=%22~%3F~unset~%3F~sentinel~%3F~%22").await, 200).await,
    );
    let api_source = names(json_of(app.get("/v1/agents?sources=api&sources=playground").await, 200).await);
    let other_source = names(json_of(app.get("/v1/agents?sources=playground").await, 200).await);

    assert_eq!(by_name, vec!["beta"]);
    assert_eq!(by_search, vec!["Alpha Bot"]);
    assert_eq!(by_id, vec!["Alpha Bot"]);
    assert_eq!(by_flag, vec!["beta"]);
    assert_eq!(by_metadata, vec!["Alpha Bot"]);
    assert!(by_wrong_metadata.is_empty(), "the string \"1\" is not the number 1");
    assert_eq!(sentinel, vec!["beta", "Alpha Bot"]);
    assert_eq!(api_source, vec!["beta", "Alpha Bot"]);
    assert!(other_source.is_empty());
}

#[tokio::test]
async fn list_pages_walks_every_agent_once_with_next_page_token() {
    let app = TestApp::spawn().await;
    for n in 0..5 {
        app.create_agent(json!({"model": "m", "name": format!("agent {n}")})).await;
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;

    for _ in 0..10 {
        let path = match &token {
            Some(t) => format!("/v1/agents/pages?page_size=2&page_token={t}"),
            None => "/v1/agents/pages?page_size=2".to_owned(),
        };
        let page = json_of(app.get(&path).await, 200).await;
        assert_eq!(page["object"], "list");
        seen.extend(page["data"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_owned()));
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }

    assert_eq!(seen, vec!["agent 4", "agent 3", "agent 2", "agent 1", "agent 0"]);
}

#[tokio::test]
async fn concurrent_updates_each_get_their_own_version_and_none_is_lost() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());

    let updates = (0..10).map(|n| {
        let app = &app;
        let path = &path;
        async move { app.patch(path, &json!({"description": format!("writer {n}")})).await }
    });
    let responses = futures::future::join_all(updates).await;

    let mut versions = Vec::new();
    for response in responses {
        versions.push(json_of(response, 200).await["version"].as_i64().unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
    let listed = json_of(app.get(&format!("{path}/versions?page_size=100")).await, 200).await;
    let mut descriptions: Vec<String> =
        listed.as_array().unwrap()[1..].iter().map(|a| a["description"].as_str().unwrap().to_owned()).collect();
    descriptions.sort();
    let mut expected: Vec<String> = (0..10).map(|n| format!("writer {n}")).collect();
    expected.sort();
    assert_eq!(descriptions, expected);
}

#[tokio::test]
async fn handoffs_must_name_agents_of_the_workspace() {
    let app = TestApp::spawn().await;
    let target = app.create_agent(json!({"model": "m", "name": "target"})).await;

    let good = app.post("/v1/agents", &json!({"model": "m", "name": "a", "handoffs": [target["id"]]})).await;
    let bad =
        app.post("/v1/agents", &json!({"model": "m", "name": "b", "handoffs": [target["id"], "ag_missing"]})).await;

    assert_eq!(json_of(good, 200).await["handoffs"], json!([target["id"]]));
    assert_invalid(bad, json!(["body", "handoffs", 1]), "value_error").await;
    assert_eq!(json_of(app.get("/v1/agents").await, 200).await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn getting_an_unknown_version_or_alias_names_what_is_missing() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());

    let version = json_of(app.get(&format!("{path}?agent_version=9")).await, 404).await;
    let alias = json_of(app.get(&format!("{path}?agent_version=nope")).await, 404).await;
    let agent_missing = json_of(app.get("/v1/agents/ag_missing?agent_version=1").await, 404).await;
    let invalid = app.get(&format!("{path}?agent_version=Not%20An%20Alias")).await;
    let invalid_path = app.get(&format!("{path}/versions/-1")).await;

    let id = agent["id"].as_str().unwrap();
    assert_eq!(version["message"], format!("Version `9` of agent `{id}` not found."));
    assert_eq!(alias["message"], format!("Alias `nope` of agent `{id}` not found."));
    assert_eq!(
        agent_missing,
        json!({"object": "error", "message": "Agent `ag_missing` not found.", "type": "invalid_request_error",
               "param": null, "code": "not_found"})
    );
    assert_invalid(invalid, json!(["query", "agent_version"]), "value_error").await;
    assert_invalid(invalid_path, json!(["path", "version"]), "value_error").await;
}

#[tokio::test]
async fn a_rejected_update_changes_nothing() {
    let app = TestApp::spawn().await;
    let agent = app.create_agent(json!({"model": "m", "name": "a"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());

    let response = app.patch(&path, &json!({"description": "x", "tools": [{"type": "function"}]})).await;

    assert_invalid(response, json!(["body", "tools", 0, "function"]), "missing").await;
    assert_eq!(json_of(app.get(&path).await, 200).await, agent);
    assert_eq!(json_of(app.get(&format!("{path}/versions")).await, 200).await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn guardrails_metadata_and_version_messages_round_trip() {
    let app = TestApp::spawn().await;
    let guardrails = json!([{"block_on_error": true, "moderation_llm_v2": {"action": "block",
        "custom_category_thresholds": {"pii": 0.2}}}]);

    let agent = app
        .create_agent(json!({"model": "m", "name": "a", "guardrails": guardrails, "metadata": {"k": [1, 2]},
            "version_message": "first cut", "completion_args": {"stop": ["\n"], "max_tokens": 10, "random_seed": 3,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": true}},
            "prediction": {"type": "content", "content": "x"}, "tool_choice": "any", "presence_penalty": 0.5,
            "frequency_penalty": -0.5, "top_p": 0.9, "temperature": 0.1}}))
        .await;

    assert_eq!(agent["guardrails"], guardrails);
    assert_eq!(agent["metadata"], json!({"k": [1, 2]}));
    assert_eq!(agent["version_message"], "first cut");
    assert_eq!(agent["completion_args"]["stop"], json!(["\n"]));
    assert_eq!(agent["completion_args"]["tool_choice"], "any");
    assert_eq!(agent["completion_args"]["response_format"]["json_schema"]["schema"], json!({"type": "object"}));
}
