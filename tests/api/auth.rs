//! API keys: 401 without a valid key, and each key is a workspace of its own.

use crate::helpers::{json_of, Options, TestApp};
use reqwest::Method;
use serde_json::json;

async fn two_key_app() -> TestApp {
    TestApp::spawn_with(Options { api_keys: vec!["key-alpha".into(), "key-beta".into()], ..Default::default() }).await
}

#[tokio::test]
async fn requests_without_a_valid_key_get_a_401_in_the_error_envelope() {
    let app = two_key_app().await;

    let missing = app.with_key(None).get("/v1/agents").await;
    let wrong = app.with_key(Some("key-gamma")).get("/v1/agents").await;
    let basic = app
        .with_key(None)
        .request(Method::GET, "/v1/agents")
        .header("authorization", "Basic a2V5LWFscGhh")
        .send()
        .await
        .unwrap();

    let body = json_of(missing, 401).await;
    assert_eq!(body["object"], "error");
    assert_eq!(body["code"], "unauthorized");
    assert_eq!(json_of(wrong, 401).await["code"], "unauthorized");
    assert_eq!(json_of(basic, 401).await["code"], "unauthorized");
}

#[tokio::test]
async fn health_needs_no_key() {
    let app = two_key_app().await;

    let response = app.with_key(None).get("/health").await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn another_keys_agents_are_invisible_and_untouchable() {
    let app = two_key_app().await;
    let beta = app.with_key(Some("key-beta"));
    let agent = app.create_agent(json!({"model": "m", "name": "alpha's"})).await;
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());

    let get = beta.get(&path).await;
    let list = beta.get("/v1/agents").await;
    let pages = beta.get("/v1/agents/pages").await;
    let update = beta.patch(&path, &json!({"name": "stolen"})).await;
    let switch = beta.request(Method::PATCH, &format!("{path}/version?version=0")).send().await.unwrap();
    let alias = beta.request(Method::PUT, &format!("{path}/aliases?alias=x&version=0")).send().await.unwrap();
    let delete = beta.delete(&path).await;
    let handoff = beta.post("/v1/agents", &json!({"model": "m", "name": "b", "handoffs": [agent["id"]]})).await;

    assert_eq!(json_of(get, 404).await["code"], "not_found");
    assert_eq!(json_of(list, 200).await, json!([]));
    assert_eq!(json_of(pages, 200).await["data"], json!([]));
    assert_eq!(json_of(update, 404).await["code"], "not_found");
    assert_eq!(json_of(switch, 404).await["code"], "not_found");
    assert_eq!(json_of(alias, 404).await["code"], "not_found");
    assert_eq!(json_of(delete, 404).await["code"], "not_found");
    assert_eq!(handoff.status(), 422);
    assert_eq!(json_of(app.get(&path).await, 200).await, agent, "alpha's agent is untouched");
}
