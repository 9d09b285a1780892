//! Several palaver processes on one database (DESIGN decision 8), and graceful shutdown.

use crate::helpers::{json_of, Options, TestApp};
use crate::upstream::{FakeUpstream, Reply};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn two_servers_sharing_a_database_see_each_others_turns() {
    let upstream = FakeUpstream::start().await;
    let a = TestApp::spawn_with(Options { upstream_url: Some(upstream.url.clone()), ..Default::default() }).await;
    let b = TestApp::spawn_with(Options {
        upstream_url: Some(upstream.url.clone()),
        database_url: Some(a.database_url.clone()),
        ..Default::default()
    })
    .await;
    upstream.script([Reply::Text("from a"), Reply::Text("from b"), Reply::Text("a again")]);

    let start = a.ok("/v1/conversations", &json!({"model": "m", "inputs": "one"})).await;
    let id = start["conversation_id"].as_str().unwrap();
    b.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "two"})).await;
    a.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "three"})).await;

    // Server a cached the history of its first turn; it must still build on b's turn.
    let sent = upstream.last_request()["messages"].clone();
    assert_eq!(sent.as_array().unwrap().len(), 5, "a saw b's turn: {sent}");
    assert_eq!(sent[3]["content"], "from b");
    assert_eq!(a.history(id).await, b.history(id).await);
    assert_eq!(a.history(id).await.len(), 6);
}

#[tokio::test]
async fn graceful_shutdown_ends_open_streams_and_the_run_still_commits() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::spawn_with(Options { upstream_url: Some(upstream.url.clone()), ..Default::default() }).await;
    upstream.script([Reply::Text("first"), Reply::Gated("held while the server stops")]);
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "Q1"})).await;
    let id = start["conversation_id"].as_str().unwrap().to_owned();
    let response = app.post(&format!("/v1/conversations/{id}"), &json!({"inputs": "Q2", "stream": true})).await;
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("conversation.response.started"));

    let stopping = app.shut_down();
    let drained = async {
        // The open stream ends cleanly instead of holding shutdown up.
        while let Some(chunk) =
            tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("the stream ended")
        {
            chunk.expect("a clean end, not a reset");
        }
        upstream.release();
    };
    tokio::join!(stopping, drained);

    // The run finished after its client was gone and before the process stopped.
    let again =
        TestApp::spawn_with(Options { database_url: Some(app.database_url.clone()), ..Default::default() }).await;
    let history = again.history(&id).await;
    assert_eq!(history.len(), 4);
    assert_eq!(history[3]["content"], "held while the server stops");
    let refused = app.client.get(format!("{}/health", app.base)).send().await;
    assert!(refused.is_err(), "the stopped server accepts no more requests");
    assert_eq!(json_of(again.get("/health").await, 200).await["status"], "ok");
}

/// Postgres only (SQLite has no server to lose): when the database drops palaver's
/// connections (a restart, a failover, an idle-connection reaper), requests recover once
/// the broken connections are found, and nothing stored is lost.
#[tokio::test]
async fn requests_recover_after_the_database_drops_its_connections() {
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        // The SQLite run of this suite: the Postgres run (scripts/test) exercises this.
        return;
    };
    use sqlx::Connection;
    let upstream = FakeUpstream::start().await;
    let app = TestApp::spawn_with(Options { upstream_url: Some(upstream.url.clone()), ..Default::default() }).await;
    let start = app.ok("/v1/conversations", &json!({"model": "m", "inputs": "before"})).await;
    let id = start["conversation_id"].as_str().unwrap().to_owned();
    let database = app.database_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&database)
    .execute(&mut admin)
    .await
    .unwrap();

    // The first request on a dropped connection fails as "unavailable, retry" (not as an
    // internal error), and the store lets go of every idle connection at once: the next
    // request connects afresh.
    let mut failures = 0;
    loop {
        let response = app.get(&format!("/v1/conversations/{id}/history")).await;
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 503, "a lost connection is a 503 the client may retry");
        failures += 1;
        assert!(failures <= 1, "requests did not recover after {failures} failures");
    }
    assert_eq!(app.history(&id).await.len(), 2);
    app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "after"})).await;
    assert_eq!(app.history(&id).await.len(), 4);
}
