//! `GET /v1/models`: what palaver can serve.

use crate::helpers::{json_of, Options, TestApp};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

#[tokio::test]
async fn without_an_upstream_the_echo_model_is_listed_with_explicit_capabilities() {
    let app = TestApp::spawn().await;

    let list = json_of(app.get("/v1/models").await, 200).await;
    let card = json_of(app.get("/v1/models/echo").await, 200).await;
    let missing = app.get("/v1/models/gpt-9").await;

    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0], card);
    assert_eq!(card["id"], "echo");
    assert_eq!(card["type"], "base");
    assert_eq!(card["capabilities"]["completion_chat"], true);
    assert_eq!(card["capabilities"]["vision"], false);
    assert_eq!(card["aliases"], json!([]));
    assert_eq!(json_of(missing, 404).await["code"], "not_found");
}

async fn spawn_upstream(models: Value) -> String {
    let router = Router::new().route("/v1/models", get(move || async move { Json(models) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn with_an_upstream_its_models_are_listed() {
    let upstream = spawn_upstream(
        json!({"object": "list", "data": [{"id": "llama3", "object": "model", "created": 1, "owned_by": "me"}]}),
    )
    .await;
    let app = TestApp::spawn_with(Options { upstream_url: Some(upstream), ..Default::default() }).await;

    let list = json_of(app.get("/v1/models").await, 200).await;

    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["llama3", "mock"], "the upstream's models, then the built-in scripted model");
    assert_eq!(list["data"][0]["type"], "base");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_in_the_error_envelope() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let app = TestApp::spawn_with(Options { upstream_url: Some(dead), ..Default::default() }).await;

    let body = json_of(app.get("/v1/models").await, 502).await;

    assert_eq!(body["object"], "error");
    assert_eq!(body["code"], "upstream_error");
}
