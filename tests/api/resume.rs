//! Resumable streams: every event carries its number as `id:`; a client whose stream dropped
//! reads the rest from `GET /v1/conversations/{id}/stream` after the last number it got.

use crate::helpers::{json_of, parse_numbered_sse, parse_sse, Options, TestApp};
use crate::upstream::Reply;
use futures::StreamExt;
use serde_json::{json, Value};

/// Reads a streaming response until `count` events arrived, then drops the connection.
async fn first_events(response: reqwest::Response, count: usize) -> String {
    let mut body = String::new();
    let mut chunks = response.bytes_stream();
    while body.matches("\n\n").count() < count {
        let chunk = chunks.next().await.expect("the stream goes on").unwrap();
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    body
}

fn message_text(events: &[(u64, String, Value)]) -> String {
    events
        .iter()
        .filter(|(_, name, _)| name == "message.output.delta")
        .map(|(_, _, d)| d["content"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_stream_dropped_after_its_third_event_is_completed_from_last_event_id() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Gated("One two three four five.")]);

    let response =
        app.post("/v1/conversations", &json!({"model": "fake-model", "inputs": "count", "stream": true})).await;
    upstream.release();
    let head = parse_numbered_sse(&first_events(response, 3).await)[..3].to_vec();
    let conversation_id = head[0].2["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(head.iter().map(|(n, ..)| *n).collect::<Vec<_>>(), [0, 1, 2]);

    let rest = app
        .request(reqwest::Method::GET, &format!("/v1/conversations/{conversation_id}/stream"))
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    assert_eq!(rest.headers()["content-type"], "text/event-stream");
    let rest = parse_numbered_sse(&rest.text().await.unwrap());

    assert_eq!(rest[0].0, 3, "the resume starts after the last event received");
    assert_eq!(rest.last().unwrap().1, "conversation.response.done");
    let whole: Vec<(u64, String, Value)> = head.into_iter().chain(rest).collect();
    assert_eq!(whole.iter().map(|(n, ..)| *n).collect::<Vec<_>>(), (0..whole.len() as u64).collect::<Vec<_>>());
    let history = app.history(&conversation_id).await;
    assert_eq!(message_text(&whole), history[1]["content"].as_str().unwrap());
    assert_eq!(history[1]["content"], "One two three four five.");
}

#[tokio::test]
async fn a_resume_without_a_position_replays_from_the_start_and_starting_after_works_too() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("Short answer.")]);
    let live = app.stream("/v1/conversations", &json!({"model": "fake-model", "inputs": "hi", "stream": true})).await;
    let conversation_id = live[0].1["conversation_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/conversations/{conversation_id}/stream");

    let replayed = parse_sse(&app.get(&path).await.text().await.unwrap());
    assert_eq!(replayed, live, "the same events, in the same order");

    let tail = parse_numbered_sse(&app.get(&format!("{path}?starting_after=1")).await.text().await.unwrap());
    assert_eq!(tail.iter().map(|(n, ..)| *n).collect::<Vec<_>>(), (2..live.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_resume_while_the_run_goes_on_follows_it_to_the_end() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Gated("Still going strong.")]);
    let response = app.post("/v1/conversations", &json!({"model": "fake-model", "inputs": "hi", "stream": true})).await;
    let head = parse_numbered_sse(&first_events(response, 2).await);
    let conversation_id = head[0].2["conversation_id"].as_str().unwrap().to_owned();

    let follower = tokio::spawn(app.get(&format!("/v1/conversations/{conversation_id}/stream")).await.text());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    upstream.release();

    let followed = parse_numbered_sse(&follower.await.unwrap().unwrap());
    assert_eq!(followed[0].0, 0);
    assert_eq!(message_text(&followed), "Still going strong.");
    assert_eq!(followed.last().unwrap().1, "conversation.response.done");
}

#[tokio::test]
async fn without_a_kept_run_a_resume_is_a_clear_404() {
    let app = TestApp::spawn_with(Options { stream_retention_secs: Some(0), ..Options::default() }).await;

    let unknown = json_of(app.get("/v1/conversations/conv_nothing/stream").await, 404).await;
    assert!(unknown["message"].as_str().unwrap().contains("no streamed run to resume"), "{unknown}");

    // Retention 0: a finished run is gone as soon as its end is recorded (on Postgres, in
    // the next batch written to the database).
    let live = app.stream("/v1/conversations", &json!({"model": "echo", "inputs": "hi", "stream": true})).await;
    let conversation_id = live[0].1["conversation_id"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    json_of(app.get(&format!("/v1/conversations/{conversation_id}/stream")).await, 404).await;

    let bad = app
        .request(reqwest::Method::GET, &format!("/v1/conversations/{conversation_id}/stream"))
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn on_postgres_a_stream_run_by_one_replica_is_resumed_from_another() {
    let upstream = crate::upstream::FakeUpstream::start().await;
    let a = TestApp::spawn_with(Options { upstream_url: Some(upstream.url.clone()), ..Options::default() }).await;
    let b = TestApp::spawn_with(Options {
        upstream_url: Some(upstream.url.clone()),
        database_url: Some(a.database_url.clone()),
        ..Options::default()
    })
    .await;
    upstream.script([Reply::Gated("One two three four.")]);
    let response =
        a.post("/v1/conversations", &json!({"model": "fake-model", "inputs": "count", "stream": true})).await;
    let head = parse_numbered_sse(&first_events(response, 2).await)[..2].to_vec();
    let conversation_id = head[0].2["conversation_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let resumed = b
        .request(reqwest::Method::GET, &format!("/v1/conversations/{conversation_id}/stream"))
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    if a.database_url.starts_with("sqlite") {
        // SQLite replicas keep streamed runs in their own memory only (README).
        upstream.release();
        assert_eq!(resumed.status(), 404);
        return;
    }
    assert_eq!(resumed.status(), 200);
    let rest = tokio::spawn(resumed.text());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    upstream.release();

    let rest = parse_numbered_sse(&rest.await.unwrap().unwrap());
    assert_eq!(rest[0].0, 2);
    assert_eq!(rest.last().unwrap().1, "conversation.response.done");
    let whole: Vec<(u64, String, Value)> = head.into_iter().chain(rest).collect();
    assert_eq!(whole.iter().map(|(n, ..)| *n).collect::<Vec<_>>(), (0..whole.len() as u64).collect::<Vec<_>>());
    assert_eq!(message_text(&whole), "One two three four.");
    assert_eq!(b.history(&conversation_id).await[1]["content"], "One two three four.");
}
