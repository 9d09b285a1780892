//! Prometheus metrics: the names, written once, and the process's recorder. Every layer
//! records through the functions here (the `metrics` facade: a lookup and an atomic add
//! per update, nothing when nobody scrapes); `GET /metrics` renders the text format.
//!
//! Durations are histograms with fixed buckets, not summaries: they aggregate across
//! replicas. Labels are bounded sets (route templates, never raw paths; model and upstream
//! names from the config or the agents).

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Seconds: from half a millisecond (a stored turn's own cost) to two minutes (a long model
/// answer).
const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Model rounds per turn: one per call of the model.
const ROUND_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (several servers in one process, as in
/// the tests, share it).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new().set_buckets(BUCKETS).and_then(|b| {
            b.set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(ROUNDS.into()), ROUND_BUCKETS)
        });
        // The bucket lists are constants and not empty: setting them cannot fail.
        let recorder = builder.unwrap_or_else(|_| PrometheusBuilder::new()).build_recorder();
        let handle = recorder.handle();
        // Another recorder (a test harness's) wins; ours then renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The metrics in the Prometheus text format.
pub fn render() -> String {
    handle().render()
}

const ROUNDS: &str = "palaver_model_rounds_per_turn";

pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let labels = [("method", method.to_owned()), ("route", route.to_owned()), ("status", status.to_string())];
    counter!("palaver_http_requests_total", &labels).increment(1);
    histogram!("palaver_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}

/// An SSE stream opened; the guard closes it when dropped.
pub fn stream_opened() -> OpenStream {
    gauge!("palaver_open_streams").increment(1.0);
    OpenStream
}

pub struct OpenStream;

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!("palaver_open_streams").decrement(1.0);
    }
}

/// A turn ended: `outcome` is `completed` or the failure's code (`upstream_error`, …).
pub fn turn(outcome: &'static str, rounds: u32, elapsed: Duration) {
    counter!("palaver_turns_total", "outcome" => outcome).increment(1);
    histogram!("palaver_turn_duration_seconds", "outcome" => outcome).record(elapsed.as_secs_f64());
    histogram!(ROUNDS).record(f64::from(rounds));
}

pub fn first_delta(elapsed: Duration) {
    histogram!("palaver_time_to_first_delta_seconds").record(elapsed.as_secs_f64());
}

/// An upstream answered (its headers) or failed to.
pub fn upstream_request(upstream: &str, status: Option<u16>, elapsed: Duration) {
    let upstream = upstream.to_owned();
    counter!("palaver_upstream_requests_total", "upstream" => upstream.clone()).increment(1);
    histogram!("palaver_upstream_request_duration_seconds", "upstream" => upstream.clone())
        .record(elapsed.as_secs_f64());
    if status.is_none_or(|s| s >= 400) {
        let status = status.map_or_else(|| "unreachable".to_owned(), |s| s.to_string());
        counter!("palaver_upstream_errors_total", "upstream" => upstream, "status" => status).increment(1);
    }
}

pub fn tokens(model: &str, input: u64, output: u64) {
    counter!("palaver_tokens_total", "model" => model.to_owned(), "kind" => "input").increment(input);
    counter!("palaver_tokens_total", "model" => model.to_owned(), "kind" => "output").increment(output);
}

pub fn tool_execution(tool: &str, outcome: &'static str, elapsed: Duration) {
    let tool = tool.to_owned();
    counter!("palaver_tool_executions_total", "tool" => tool.clone(), "outcome" => outcome).increment(1);
    histogram!("palaver_tool_execution_duration_seconds", "tool" => tool).record(elapsed.as_secs_f64());
}

pub fn store_operation(operation: &'static str, elapsed: Duration) {
    histogram!("palaver_store_operation_duration_seconds", "operation" => operation).record(elapsed.as_secs_f64());
}

pub fn history_cache(hit: bool) {
    counter!("palaver_history_cache_total", "result" => if hit { "hit" } else { "miss" }).increment(1);
}
