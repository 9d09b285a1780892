//! `Idempotency-Key`: a retry gets the first successful answer and runs nothing; another
//! body under the same key is a 422; failures are not kept; a retry during the first waits
//! for it or follows its stream.

use crate::helpers::{assert_invalid, json_of, parse_sse, Options, TestApp};
use crate::upstream::Reply;
use reqwest::Method;
use serde_json::{json, Value};

impl TestApp {
    fn with_idempotency(&self, method: Method, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.request(method, path).header("idempotency-key", key).json(body)
    }
}

#[tokio::test]
async fn a_retried_turn_replays_the_first_answer_and_runs_nothing() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("Once.")]);
    let body = json!({"model": "fake-model", "inputs": "hi"});

    let first = app.with_idempotency(Method::POST, "/v1/conversations", "k-1", &body).send().await.unwrap();
    let first_body = json_of(first, 200).await;
    let retry = app.with_idempotency(Method::POST, "/v1/conversations", "k-1", &body).send().await.unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry_body = json_of(retry, 200).await;

    assert_eq!(retry_body, first_body);
    assert_eq!(upstream.requests().len(), 1, "the model was asked once");
    let conversations = json_of(app.get("/v1/conversations").await, 200).await;
    assert_eq!(conversations.as_array().unwrap().len(), 1);

    // An append is keyed the same way, per path.
    let path = format!("/v1/conversations/{}", first_body["conversation_id"].as_str().unwrap());
    let append = json!({"inputs": "again"});
    let appended = json_of(app.with_idempotency(Method::POST, &path, "k-2", &append).send().await.unwrap(), 200).await;
    let replayed = json_of(app.with_idempotency(Method::POST, &path, "k-2", &append).send().await.unwrap(), 200).await;
    assert_eq!(appended, replayed);
    assert_eq!(app.history(first_body["conversation_id"].as_str().unwrap()).await.len(), 4);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_422_naming_the_header_and_runs_nothing() {
    let (app, upstream) = TestApp::with_upstream().await;
    let first = json!({"model": "fake-model", "inputs": "hi"});
    json_of(app.with_idempotency(Method::POST, "/v1/conversations", "k", &first).send().await.unwrap(), 200).await;

    let other = json!({"model": "fake-model", "inputs": "something else"});
    let response = app.with_idempotency(Method::POST, "/v1/conversations", "k", &other).send().await.unwrap();

    assert_invalid(response, json!(["header", "idempotency-key"]), "value_error").await;
    assert_eq!(upstream.requests().len(), 1);
    let bad = app.with_idempotency(Method::POST, "/v1/conversations", &"x".repeat(300), &first).send().await.unwrap();
    assert_invalid(bad, json!(["header", "idempotency-key"]), "value_error").await;
}

#[tokio::test]
async fn a_failed_request_is_not_kept_so_its_retry_runs() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Status(500, r#"{"message": "down"}"#), Reply::Text("Recovered.")]);
    let body = json!({"model": "fake-model", "inputs": "hi"});

    let failed = app.with_idempotency(Method::POST, "/v1/conversations", "k", &body).send().await.unwrap();
    assert_eq!(failed.status(), 502);
    let retried = app.with_idempotency(Method::POST, "/v1/conversations", "k", &body).send().await.unwrap();

    let retried = json_of(retried, 200).await;
    assert_eq!(retried["outputs"][0]["content"], "Recovered.");
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn a_retried_stream_replays_every_event_and_a_stream_that_failed_runs_again() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Cut("Half an"), Reply::Text("Whole answer.")]);
    let body = json!({"model": "fake-model", "inputs": "hi", "stream": true});
    let send = || async {
        let response = app.with_idempotency(Method::POST, "/v1/conversations", "s", &body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };

    let failed = send().await;
    assert!(failed.contains("conversation.response.error"));
    let first = send().await;
    let replayed = send().await;

    assert_eq!(replayed, first, "the same events, byte for byte");
    let events = parse_sse(&replayed);
    assert_eq!(events.last().unwrap().0, "conversation.response.done");
    assert_eq!(upstream.requests().len(), 2, "the failed stream ran, then the retry once");
}

#[tokio::test]
async fn a_retry_while_the_first_runs_waits_for_its_answer() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Held(Box::new(Reply::Text("Slow answer.")))]);
    let body = json!({"model": "fake-model", "inputs": "hi"});
    let first = app.with_idempotency(Method::POST, "/v1/conversations", "w", &body).send();
    let first = tokio::spawn(first);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = tokio::spawn(app.with_idempotency(Method::POST, "/v1/conversations", "w", &body).send());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    upstream.release();

    let first = json_of(first.await.unwrap().unwrap(), 200).await;
    let second = json_of(second.await.unwrap().unwrap(), 200).await;
    assert_eq!(first, second);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_retry_of_a_running_stream_follows_it_from_the_start() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Gated("One two three.")]);
    let body = json!({"model": "fake-model", "inputs": "hi", "stream": true});
    let first = app.with_idempotency(Method::POST, "/v1/conversations", "f", &body).send().await.unwrap();
    let first = tokio::spawn(first.text());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = app.with_idempotency(Method::POST, "/v1/conversations", "f", &body).send().await.unwrap();
    assert_eq!(second.headers()["content-type"], "text/event-stream");
    let second = tokio::spawn(second.text());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    upstream.release();

    let (first, second) = (first.await.unwrap().unwrap(), second.await.unwrap().unwrap());
    assert_eq!(first, second);
    assert_eq!(parse_sse(&second).last().unwrap().0, "conversation.response.done");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn creating_and_updating_an_agent_happen_once_per_key_in_each_workspace() {
    let app = TestApp::spawn_with(Options { api_keys: vec!["k1".into(), "k2".into()], ..Options::default() }).await;
    let other = app.with_key(Some("k2"));
    let body = json!({"model": "m", "name": "Once"});

    let created =
        json_of(app.with_idempotency(Method::POST, "/v1/agents", "a", &body).send().await.unwrap(), 200).await;
    let again = json_of(app.with_idempotency(Method::POST, "/v1/agents", "a", &body).send().await.unwrap(), 200).await;
    let theirs =
        json_of(other.with_idempotency(Method::POST, "/v1/agents", "a", &body).send().await.unwrap(), 200).await;

    assert_eq!(created, again);
    assert_ne!(created["id"], theirs["id"], "a key is the workspace's own");
    assert_eq!(json_of(app.get("/v1/agents").await, 200).await.as_array().unwrap().len(), 1);

    let path = format!("/v1/agents/{}", created["id"].as_str().unwrap());
    let patch = json!({"instructions": "v1"});
    let updated = json_of(app.with_idempotency(Method::PATCH, &path, "u", &patch).send().await.unwrap(), 200).await;
    let replayed = json_of(app.with_idempotency(Method::PATCH, &path, "u", &patch).send().await.unwrap(), 200).await;
    assert_eq!(updated, replayed);
    assert_eq!(updated["version"], 1, "one new version, not two");
    let versions = json_of(app.get(&format!("{path}/versions")).await, 200).await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_client_that_gives_up_still_leaves_the_answer_for_its_retry() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Held(Box::new(Reply::Text("Worth the wait.")))]);
    let body = json!({"model": "fake-model", "inputs": "hi"});

    let impatient = app
        .with_idempotency(Method::POST, "/v1/conversations", "g", &body)
        .timeout(std::time::Duration::from_millis(200))
        .send()
        .await;
    assert!(impatient.is_err(), "the client gave up before the answer");
    upstream.release();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let retry = app.with_idempotency(Method::POST, "/v1/conversations", "g", &body).send().await.unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry = json_of(retry, 200).await;
    assert_eq!(retry["outputs"][0]["content"], "Worth the wait.");
    assert_eq!(upstream.requests().len(), 1);
}
