//! The database going away: every route answers 503 in the error envelope with
//! `Retry-After`, nothing is half-written, and service resumes by itself.

use crate::helpers::{json_of, names, Options, TestApp};
use serde_json::{json, Value};

async fn assert_unavailable(response: reqwest::Response, why: &str) {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "server_error");
    assert_eq!(body["code"], "store_unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("The database is unavailable (") && message.contains(why), "{message}");
}

/// Postgres refusing connections (as while it restarts): `ALLOW_CONNECTIONS false`, and the
/// server drops the connections palaver holds.
#[tokio::test]
async fn while_postgres_refuses_connections_every_route_is_a_503_and_service_resumes_after() {
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        return; // The SQLite run of the suite; the script runs it again on Postgres.
    };
    use sqlx::Connection;
    let app = TestApp::spawn_with(Options { db_acquire_timeout_ms: Some(1_000), ..Default::default() }).await;
    let started = app.ok("/v1/conversations", &json!({"model": "echo", "inputs": "before"})).await;
    let id = started["conversation_id"].as_str().unwrap().to_owned();
    let name = app.database_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let refuse = |allow: bool| format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {allow}");
    sqlx::query(&refuse(false)).execute(&mut admin).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();

    let append = app.post(&format!("/v1/conversations/{id}"), &json!({"inputs": "during"})).await;
    let health = app.get("/health").await;
    let read = app.get(&format!("/v1/conversations/{id}/history")).await;
    let agents = app.get("/v1/agents").await;

    assert_unavailable(append, "").await;
    assert_unavailable(health, "").await;
    assert_unavailable(read, "accepting connections").await;
    assert_unavailable(agents, "accepting connections").await;

    sqlx::query(&refuse(true)).execute(&mut admin).await.unwrap();
    let health = app.get("/health").await;
    assert_eq!(health.status(), 200, "service resumes as soon as the database is back");
    let appended = app.ok(&format!("/v1/conversations/{id}"), &json!({"inputs": "after"})).await;
    assert_eq!(appended["outputs"][0]["content"], "after");
    let history = app.history(&id).await;
    let inputs: Vec<&Value> = history.iter().filter(|e| e["type"] == "message.input").map(|e| &e["content"]).collect();
    assert_eq!(inputs, [&json!("before"), &json!("after")], "the turn during the outage left nothing");
}

/// A SQLite file another process holds the write lock on: the commit gives up after
/// `PALAVER_DB_ACQUIRE_TIMEOUT_MS`, the turn is a 503 (an error event once streaming), and
/// nothing is stored.
#[tokio::test]
async fn a_sqlite_file_locked_by_another_process_is_a_503_and_nothing_is_torn() {
    if std::env::var("TEST_DATABASE_URL").is_ok() {
        return; // Postgres has no file to lock.
    }
    let app = TestApp::spawn_with(Options { db_acquire_timeout_ms: Some(300), ..Default::default() }).await;
    let started = app.ok("/v1/conversations", &json!({"model": "echo", "inputs": "before"})).await;
    let id = started["conversation_id"].as_str().unwrap().to_owned();
    let path = app.database_url.trim_start_matches("sqlite://").to_owned();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE; INSERT INTO agents (workspace, id, active_version, latest_version, revision, created_at, updated_at) VALUES ('x', 'x', 0, 0, 0, 0, 0);").unwrap();

    let append = app.post(&format!("/v1/conversations/{id}"), &json!({"inputs": "during"})).await;
    let events = app.stream(&format!("/v1/conversations/{id}"), &json!({"inputs": "streamed", "stream": true})).await;

    assert_unavailable(append, "locked by another process").await;
    assert_eq!(names(&events).last(), Some(&"conversation.response.error"));
    assert_eq!(events.last().unwrap().1["code"], 503);
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    let history = app.history(&id).await;
    assert_eq!(history.len(), 2, "only the first turn: {history:?}");
    let after = json_of(app.post(&format!("/v1/conversations/{id}"), &json!({"inputs": "after"})).await, 200).await;
    assert_eq!(after["outputs"][0]["content"], "after");
}
