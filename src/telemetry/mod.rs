//! Prometheus metrics: the names, written once, and the process's recorder. Every layer
//! records through the functions here (the `metrics` facade: a lookup and an atomic add
//! per update, nothing when nobody scrapes); `GET /metrics` renders the text format.
//! OpenTelemetry traces, when configured, are in `traces`.
//!
//! Durations are histograms with fixed buckets, not summaries: they aggregate across
//! replicas. Labels are bounded sets: route templates (never raw paths), known methods,
//! and at most `MAX_LABEL_VALUES` model or upstream names (the rest count as `other`).

pub mod traces;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::RwLock;
use std::time::{Duration, Instant};

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

/// Handles of the metrics every turn updates, registered once: the `metrics!` macros build
/// and look up a key (its labels included) on every call, which cost a turn ~10% more CPU in
/// the benchmark when every update went through them.
struct Handles {
    open_streams: Gauge,
    first_delta: Histogram,
    rounds: Histogram,
    turns_completed: Counter,
    turn_completed_duration: Histogram,
    cache_hit: Counter,
    cache_miss: Counter,
    store: [(&'static str, Histogram); 3],
    /// By method, status and route template: requests and their durations.
    http: RwLock<HashMap<String, (Counter, Histogram)>>,
    /// By upstream name: requests and the time to their headers.
    upstreams: RwLock<HashMap<String, (Counter, Histogram)>>,
    /// By model: input and output tokens.
    models: RwLock<HashMap<String, (Counter, Counter)>>,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

fn handles() -> &'static Handles {
    HANDLES.get_or_init(|| {
        handle();
        let store = |operation: &'static str| {
            (operation, histogram!("palaver_store_operation_duration_seconds", "operation" => operation))
        };
        Handles {
            open_streams: gauge!("palaver_open_streams"),
            first_delta: histogram!("palaver_time_to_first_delta_seconds"),
            rounds: histogram!(ROUNDS),
            turns_completed: counter!("palaver_turns_total", "outcome" => "completed"),
            turn_completed_duration: histogram!("palaver_turn_duration_seconds", "outcome" => "completed"),
            cache_hit: counter!("palaver_history_cache_total", "result" => "hit"),
            cache_miss: counter!("palaver_history_cache_total", "result" => "miss"),
            store: [store("conversation_for_turn"), store("history"), store("commit_turn")],
            http: RwLock::default(),
            upstreams: RwLock::default(),
            models: RwLock::default(),
        }
    })
}

/// The handles under `name` in `map`, registered by `register` (given the label value to
/// use) the first time; past `MAX_LABEL_VALUES` names, those of `other`.
fn cached<T: Clone>(map: &RwLock<HashMap<String, T>>, name: &str, register: impl FnOnce(&str) -> T) -> T {
    if let Some(found) = map.read().unwrap_or_else(|p| p.into_inner()).get(name) {
        return found.clone();
    }
    let mut map = map.write().unwrap_or_else(|p| p.into_inner());
    let name = if map.len() >= MAX_LABEL_VALUES && !map.contains_key(name) { "other" } else { name };
    map.entry(name.to_owned()).or_insert_with(|| register(name)).clone()
}

/// The metrics in the Prometheus text format.
pub fn render() -> String {
    handle().render()
}

const ROUNDS: &str = "palaver_model_rounds_per_turn";

/// Distinct label values kept per family before the rest are counted as `other`: model
/// names are the client's to choose, and every new value would be a series forever.
const MAX_LABEL_VALUES: usize = 100;

/// The request methods palaver serves; any other token a client sends counts as `other`.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "PUT" => "PUT",
        "HEAD" => "HEAD",
        _ => "other",
    }
}

pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let method = method_label(method);
    let key = format!("{method} {status} {route}");
    let (requests, duration) = cached(&handles().http, &key, |_| {
        let labels = [("method", method.to_owned()), ("route", route.to_owned()), ("status", status.to_string())];
        (counter!("palaver_http_requests_total", &labels), histogram!("palaver_http_request_duration_seconds", &labels))
    });
    requests.increment(1);
    duration.record(elapsed.as_secs_f64());
}

/// An SSE stream opened; the guard closes it when dropped.
pub fn stream_opened() -> OpenStream {
    handles().open_streams.increment(1.0);
    OpenStream
}

pub struct OpenStream;

impl Drop for OpenStream {
    fn drop(&mut self) {
        handles().open_streams.decrement(1.0);
    }
}

/// A turn ended: `outcome` is `completed` or the failure's code (`UpstreamTimeout`, …).
pub fn turn(outcome: &'static str, rounds: u32, elapsed: Duration) {
    let handles = handles();
    if outcome == "completed" {
        handles.turns_completed.increment(1);
        handles.turn_completed_duration.record(elapsed.as_secs_f64());
    } else {
        counter!("palaver_turns_total", "outcome" => outcome).increment(1);
        histogram!("palaver_turn_duration_seconds", "outcome" => outcome).record(elapsed.as_secs_f64());
    }
    handles.rounds.record(f64::from(rounds));
}

pub fn first_delta(elapsed: Duration) {
    handles().first_delta.record(elapsed.as_secs_f64());
}

/// An upstream answered (its headers) or failed to.
pub fn upstream_request(upstream: &str, status: Option<u16>, elapsed: Duration) {
    let (requests, duration) = cached(&handles().upstreams, upstream, |name| {
        let name = name.to_owned();
        (
            counter!("palaver_upstream_requests_total", "upstream" => name.clone()),
            histogram!("palaver_upstream_request_duration_seconds", "upstream" => name),
        )
    });
    requests.increment(1);
    duration.record(elapsed.as_secs_f64());
    if status.is_none_or(|s| s >= 400) {
        let status = status.map_or_else(|| "unreachable".to_owned(), |s| s.to_string());
        counter!("palaver_upstream_errors_total", "upstream" => upstream.to_owned(), "status" => status).increment(1);
    }
}

pub fn tokens(model: &str, input: u64, output: u64) {
    let (inputs, outputs) = cached(&handles().models, model, |name| {
        let name = name.to_owned();
        (
            counter!("palaver_tokens_total", "model" => name.clone(), "kind" => "input"),
            counter!("palaver_tokens_total", "model" => name, "kind" => "output"),
        )
    });
    inputs.increment(input);
    outputs.increment(output);
}

pub fn tool_execution(tool: &str, outcome: &'static str, elapsed: Duration) {
    let tool = tool.to_owned();
    counter!("palaver_tool_executions_total", "tool" => tool.clone(), "outcome" => outcome).increment(1);
    histogram!("palaver_tool_execution_duration_seconds", "tool" => tool).record(elapsed.as_secs_f64());
}

/// Runs one of a turn's store operations (`conversation_for_turn`, `history` or
/// `commit_turn`) in its span, and times it.
pub async fn store_operation<T>(
    operation: &'static str,
    system: &'static str,
    call: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    let done = tracing::Instrument::instrument(call, traces::store_span(operation, system)).await;
    store_duration(operation, started.elapsed());
    done
}

fn store_duration(operation: &'static str, elapsed: Duration) {
    match handles().store.iter().find(|(name, _)| *name == operation) {
        Some((_, histogram)) => histogram.record(elapsed.as_secs_f64()),
        None => histogram!("palaver_store_operation_duration_seconds", "operation" => operation)
            .record(elapsed.as_secs_f64()),
    }
}

/// A connection turned away past `PALAVER_MAX_CONNECTIONS`.
pub fn connection_refused() {
    counter!("palaver_connections_refused_total").increment(1);
}

/// An answer replayed for an `Idempotency-Key` retry.
pub fn idempotent_replay() {
    counter!("palaver_idempotent_replays_total").increment(1);
}

pub fn history_cache(hit: bool) {
    let handles = handles();
    if hit { &handles.cache_hit } else { &handles.cache_miss }.increment(1);
}
