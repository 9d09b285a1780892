//! `GET /metrics`: the Prometheus text format with the families operators scrape, behind the
//! keys on the main address and without them on `PALAVER_METRICS_ADDR`.

use crate::helpers::{Options, TestApp};
use crate::upstream::Reply;
use serde_json::json;

/// The value of the first sample line that starts with `prefix` (a name and some labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

#[tokio::test]
async fn after_a_few_turns_the_metrics_show_requests_turns_rounds_upstreams_tokens_and_the_store() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("one two"), Reply::Text("three"), Reply::Status(500, "{}")]);
    let started = app.ok("/v1/conversations", &json!({"model": "metered-model", "inputs": "a"})).await;
    let id = started["conversation_id"].as_str().unwrap();
    app.stream(&format!("/v1/conversations/{id}"), &json!({"inputs": "b", "stream": true})).await;
    let failed = app.post(&format!("/v1/conversations/{id}"), &json!({"inputs": "c"})).await;
    assert_eq!(failed.status(), 502);

    let response = app.get("/metrics").await;

    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let counted = |prefix: &str| sample(&text, prefix).unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"));
    assert!(
        counted(
            r#"palaver_http_requests_total{method="POST",route="/v1/conversations/{conversation_id}",status="200"}"#
        ) >= 1.0
    );
    assert!(
        counted(
            r#"palaver_http_request_duration_seconds_bucket{method="POST",route="/v1/conversations",status="200",le="+Inf"}"#
        ) >= 1.0
    );
    assert!(counted(r#"palaver_turns_total{outcome="completed"}"#) >= 2.0);
    assert!(counted(r#"palaver_turns_total{outcome="UpstreamFailed"}"#) >= 1.0);
    assert!(counted("palaver_model_rounds_per_turn_bucket{le=\"1\"}") >= 2.0);
    assert!(counted("palaver_time_to_first_delta_seconds_count") >= 2.0);
    assert!(counted(r#"palaver_upstream_requests_total{upstream="default"}"#) >= 3.0);
    assert!(counted(r#"palaver_upstream_errors_total{upstream="default",status="500"}"#) >= 1.0);
    assert!(counted(r#"palaver_tokens_total{model="metered-model",kind="output"}"#) >= 3.0);
    assert!(counted(r#"palaver_store_operation_duration_seconds_count{operation="commit_turn"}"#) >= 2.0);
    assert!(counted(r#"palaver_history_cache_total{result="hit"}"#) >= 1.0);
    assert!(text.contains("palaver_open_streams"), "the open streams gauge:\n{text}");
    assert!(!text.contains(id), "no label holds a conversation id");
}

#[tokio::test]
async fn an_agent_completion_counts_its_tokens_like_a_turn() {
    let (app, upstream) = TestApp::with_upstream().await;
    upstream.script([Reply::Text("four words of answer")]);
    let agent = app.create_agent(json!({"model": "completion-metered", "name": "m"})).await;

    app.ok(
        "/v1/agents/completions",
        &json!({"agent_id": agent["id"], "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;

    let text = app.get("/metrics").await.text().await.unwrap();
    let output = sample(&text, r#"palaver_tokens_total{model="completion-metered",kind="output"}"#);
    assert_eq!(output, Some(4.0), "{text}");
}

#[tokio::test]
async fn with_keys_the_main_address_wants_one_and_the_metrics_address_does_not() {
    let options = Options {
        api_keys: vec!["k1".into()],
        metrics_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Default::default()
    };
    let app = TestApp::spawn_with(options).await;

    let anonymous = app.with_key(None).get("/metrics").await;
    let keyed = app.get("/metrics").await;
    let scraped = reqwest::get(format!("{}/metrics", app.metrics_base.as_deref().unwrap())).await.unwrap();

    assert_eq!(anonymous.status(), 401);
    assert_eq!(keyed.status(), 200);
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("# TYPE"), "the text format");
}

#[tokio::test]
async fn methods_a_client_invents_are_counted_as_other_not_as_new_series() {
    let app = TestApp::spawn().await;
    let method = reqwest::Method::from_bytes(b"INVENTED42").unwrap();

    let response = app.client.request(method, format!("{}/nowhere", app.base)).send().await.unwrap();

    assert_eq!(response.status(), 404);
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(!text.contains("INVENTED42"), "no series per invented method");
    assert!(text.contains(r#"palaver_http_requests_total{method="other",route="unmatched",status="404"}"#), "{text}");
}
