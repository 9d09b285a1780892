//! Clients that hold connections or trickle their requests: a flood past
//! `PALAVER_MAX_CONNECTIONS` gets 503s, slow headers are cut, a slow body is a 408.

use crate::helpers::{json_of, Options, TestApp};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads what the server sends until it closes the connection (or `limit` passes).
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server closed the connection within {limit:?}");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn connections_past_the_limit_get_a_503_and_service_goes_on_once_one_closes() {
    let app = TestApp::spawn_with(Options { max_connections: Some(2), ..Options::default() }).await;
    let held = [TcpStream::connect(addr(&app)).await.unwrap(), TcpStream::connect(addr(&app)).await.unwrap()];
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut third = TcpStream::connect(addr(&app)).await.unwrap();
    third.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut third, Duration::from_secs(5)).await;

    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1") && answer.contains("\"code\":\"overloaded\""), "{answer}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut() {
    let app = TestApp::spawn_with(Options { client_header_timeout_ms: Some(300), ..Options::default() }).await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").await.unwrap();

    let answer = read_to_close(&mut slow, Duration::from_secs(5)).await;

    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_a_408_and_stores_nothing() {
    let app = TestApp::spawn_with(Options { client_body_timeout_ms: Some(300), ..Options::default() }).await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    let head = "POST /v1/agents HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(b"{\"model\": \"m\", ").await.unwrap();

    let mut received = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut received)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&received[..n]).into_owned();

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert_eq!(json_of(app.get("/v1/agents").await, 200).await, serde_json::json!([]));
}
