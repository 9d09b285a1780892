//! OpenTelemetry traces over OTLP/HTTP (protobuf), on when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. The SDK reads
//! the other standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`).
//!
//! The spans are `tracing` spans, written once here: the request (INFO, as the log always
//! had it), and at DEBUG the turn, each model round (GenAI semantic conventions), each tool
//! run and the turn's store operations. Off, no layer is installed: a DEBUG span is then a
//! cached callsite check, and attributes are recorded only on an enabled span. On, the
//! exporter's layer sees palaver's spans down to DEBUG whatever `RUST_LOG` says, while the
//! log keeps to `RUST_LOG`.
//!
//! The W3C `traceparent` is read from requests and written on calls to model upstreams and
//! tool servers only while traces are on.

use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::WithHttpConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::field::Empty;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{DynFilterFn, Targets};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

static ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: the work only traces need (reading and writing
/// `traceparent`, naming spans after their route) is skipped otherwise.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Longest an export request may take; the SDK retries within its own deadline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read from the collector (an OTLP answer is a few bytes).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter, while traces are on.
pub struct Traces {
    provider: SdkTracerProvider,
}

fn set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

impl Traces {
    /// The exporter the standard variables describe, or `None` when neither endpoint is set.
    /// Exports run on `runtime`, which must outlive `shut_down`.
    pub fn from_env(runtime: tokio::runtime::Handle) -> anyhow::Result<Option<Traces>> {
        let Some(endpoint) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        for variable in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            // Left to the crate, another protocol would be sent as http/protobuf anyway.
            if let Some(protocol) = set(variable).filter(|p| p != "http/protobuf") {
                anyhow::bail!("{variable} is `{protocol}`: palaver exports traces over `http/protobuf` only");
            }
        }
        let http = reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ExportClient { http, runtime })
            .build()
            .map_err(|error| anyhow::anyhow!("traces to `{endpoint}`: {error}"))?;
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build();
        ON.store(true, Ordering::Relaxed);
        Ok(Some(Traces { provider }))
    }

    /// The layer turning spans into OpenTelemetry spans, with its filter: palaver's spans
    /// down to DEBUG, and the events `logs` lets through (they become span events).
    pub fn layer<S>(&self, logs: Targets) -> impl Layer<S> + Send + Sync
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let keeps = move |metadata: &Metadata<'_>| {
            if metadata.is_span() {
                metadata.target().starts_with("palaver") && *metadata.level() <= Level::DEBUG
            } else {
                logs.would_enable(metadata.target(), metadata.level())
            }
        };
        let at_callsite = keeps.clone();
        // Never `Interest::always`: a per-layer filter hands its decision from `enabled` to
        // `on_new_span` through a thread-local, and the macros skip `enabled` on a callsite
        // every filter always enables, so such a span reads whatever the thread's last
        // `enabled` left there. sqlx's `tracing::enabled!` check after each query leaves
        // "disabled": the next span on that thread (a request's, on Postgres) vanished from
        // both the log and the traces (tokio-rs/tracing#2519). `sometimes` for the
        // callsites kept here makes every span and event ask, and `enabled` is cheap.
        let filter = DynFilterFn::new(move |metadata: &Metadata<'_>, _: &Context<'_, S>| keeps(metadata))
            .with_callsite_filter(
                move |metadata| {
                    if at_callsite(metadata) {
                        Interest::sometimes()
                    } else {
                        Interest::never()
                    }
                },
            );
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("palaver"))
            // Most spans are made here, so their source location and target would name this
            // file; thread names cost an allocation per span and say little of async tasks;
            // busy/idle times are no semantic convention and cost two clock reads a poll.
            .with_location(false)
            .with_target(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter)
    }

    /// Sends the spans still queued; called at shutdown, while the runtime still runs.
    pub fn shut_down(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(%error, "the last spans may not have reached the collector");
        }
    }
}

/// `service.name` is `palaver` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// names it.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let builder = Resource::builder().with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        builder.build()
    } else {
        builder.with_service_name("palaver").build()
    }
}

/// Sends the exporter's requests with reqwest on the server's runtime. The SDK's batch
/// processor exports from a thread of its own, outside any Tokio runtime, where reqwest's
/// async client cannot run (opentelemetry-otlp's `reqwest-client` panics there), and its
/// blocking client would bring in a second reqwest and runtime.
#[derive(Debug)]
struct ExportClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let request = reqwest::Request::try_from(request)?;
        let exported = self.runtime.spawn(async move {
            let mut response = http.execute(request).await?;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(HttpError::from("the collector's answer is over 1 MiB"));
                }
                body.extend_from_slice(&chunk);
            }
            let mut answer = http::Response::new(Bytes::from(body));
            *answer.status_mut() = response.status();
            *answer.headers_mut() = std::mem::take(response.headers_mut());
            Ok(answer)
        });
        exported.await?
    }
}

/// The request's span: method, path and request id for the log; route and status are
/// recorded when known (`http_route`, `http_status`). An incoming `traceparent` becomes its
/// parent.
pub fn request_span(method: &http::Method, path: &str, request_id: &str, headers: &http::HeaderMap) -> Span {
    let span = tracing::info_span!(
        "request",
        "http.request.method" = %method,
        "url.path" = %path,
        request_id = %request_id,
        "http.route" = Empty,
        "http.response.status_code" = Empty,
        "otel.kind" = Empty,
        "otel.name" = Empty,
        "otel.status_code" = Empty,
    );
    if enabled() && !span.is_disabled() {
        // Before the span is first entered: that is when it starts, under its parent.
        span.record("otel.kind", "server");
        span.record("otel.name", method.as_str());
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// The route template the current request matched: the span is named `{method} {route}`.
pub fn http_route(method: &http::Method, route: &str) {
    if !enabled() {
        return;
    }
    let span = Span::current();
    span.record("http.route", route);
    span.context().span().update_name(format!("{method} {route}"));
}

pub fn http_status(span: &Span, status: http::StatusCode) {
    if enabled() {
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
    }
}

/// Adds the current span's `traceparent` to a request to a model upstream or tool server.
pub fn propagate(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if !enabled() {
        return request;
    }
    let mut headers = http::HeaderMap::new();
    inject(&mut headers);
    request.headers(headers)
}

/// Adds the current span's `traceparent` to the headers of a request being built.
pub fn inject(headers: &mut http::HeaderMap) {
    if enabled() {
        TraceContextPropagator::new().inject_context(&Span::current().context(), &mut HeaderInjector(headers));
    }
}

/// A turn: it outlives its request when streamed, and stays in its trace.
pub fn turn_span(conversation_id: &str, agent_id: Option<&str>) -> Span {
    tracing::debug_span!(
        "turn",
        "gen_ai.conversation.id" = conversation_id,
        "gen_ai.agent.id" = agent_id,
        "palaver.turn.rounds" = Empty,
        "error.type" = Empty,
        "otel.status_code" = Empty,
    )
}

/// `outcome` is `completed` or the failure's code.
pub fn turn_ended(span: &Span, outcome: &'static str, rounds: u32) {
    if span.is_disabled() {
        return;
    }
    span.record("palaver.turn.rounds", i64::from(rounds));
    if outcome != "completed" {
        span.record("error.type", outcome);
        span.record("otel.status_code", "error");
    }
}

/// One call of the model, named `chat {model}` as the GenAI conventions name it.
pub fn model_round_span(model: &str, provider: &'static str, round: u32) -> Span {
    tracing::debug_span!(
        "chat",
        "otel.name" = %format_args!("chat {model}"),
        "otel.kind" = "client",
        "gen_ai.operation.name" = "chat",
        "gen_ai.provider.name" = provider,
        "gen_ai.system" = provider,
        "gen_ai.request.model" = model,
        "gen_ai.response.model" = Empty,
        "gen_ai.usage.input_tokens" = Empty,
        "gen_ai.usage.output_tokens" = Empty,
        "palaver.round" = i64::from(round),
        "error.type" = Empty,
        "otel.status_code" = Empty,
    )
}

/// What the model answered, as far as the upstream said.
pub struct RoundEnd<'a> {
    /// Input and output tokens, when the upstream reported them.
    pub tokens: Option<(u64, u64)>,
    pub response_model: Option<&'a str>,
    pub finish_reasons: &'a [String],
    /// The failure's code, when the round failed.
    pub error: Option<&'static str>,
}

pub fn model_round_ended(span: &Span, end: RoundEnd<'_>) {
    if span.is_disabled() {
        return;
    }
    if let Some((input, output)) = end.tokens {
        span.record("gen_ai.usage.input_tokens", signed(input));
        span.record("gen_ai.usage.output_tokens", signed(output));
    }
    if let Some(model) = end.response_model {
        span.record("gen_ai.response.model", model);
    }
    if !end.finish_reasons.is_empty() {
        // A string array, which a `tracing` field cannot hold.
        let reasons: Vec<StringValue> = end.finish_reasons.iter().map(|r| StringValue::from(r.clone())).collect();
        span.set_attribute("gen_ai.response.finish_reasons", Value::Array(Array::String(reasons)));
    }
    if let Some(code) = end.error {
        span.record("error.type", code);
        span.record("otel.status_code", "error");
    }
}

/// OpenTelemetry integers are signed: an unsigned `tracing` value would arrive as a string.
fn signed(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A server-side tool's run.
pub fn tool_span(name: &str, tool_call_id: &str) -> Span {
    tracing::debug_span!(
        "execute_tool",
        "otel.name" = %format_args!("execute_tool {name}"),
        "gen_ai.operation.name" = "execute_tool",
        "gen_ai.tool.name" = name,
        "gen_ai.tool.call.id" = tool_call_id,
        "palaver.tool.outcome" = Empty,
        "otel.status_code" = Empty,
    )
}

/// `outcome`: `ok`, `error` (the tool answered with an error the model reads) or `failed`
/// (the turn fails).
pub fn tool_ended(span: &Span, outcome: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.record("palaver.tool.outcome", outcome);
    if outcome != "ok" {
        span.record("otel.status_code", "error");
    }
}

/// A store operation of a turn; `system` is `sqlite` or `postgresql`.
pub fn store_span(operation: &'static str, system: &'static str) -> Span {
    tracing::debug_span!(
        "store",
        "otel.name" = operation,
        "otel.kind" = "client",
        "db.system.name" = system,
        "db.system" = system,
        "db.operation.name" = operation,
    )
}
