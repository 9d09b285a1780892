//! Client for OpenAI-compatible chat APIs: Mistral's own API, vLLM, Ollama, llama.cpp,
//! TGI, LiteLLM. Dialect differences (`random_seed` vs `seed`, `tool_choice: "any"` vs
//! `"required"`, asking for usage in streams) stay in this file.

use super::chat::{
    json_capacity, separate, write_message, ChatDelta, ChatRequest, ChatTool, CitationStyle, DeltaStream, ModelBackend,
    ToolCallDelta,
};
use crate::domain::completion::{Prediction, ResponseFormat, Stop, ToolChoice};
use crate::domain::conversations::Usage;
use crate::domain::models::{Capabilities, ModelCard};
use crate::error::{Code, Error, Result};
use crate::telemetry::{self, traces};
use anyhow::Context;
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use http::header::{self, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// Which flavour of the chat completions API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Mistral's chat API: `random_seed`, `tool_choice: "any"`, rejects unknown fields.
    Mistral,
    /// OpenAI and the servers that copy it: `seed`, `"required"`, usage only on request.
    Openai,
}

impl Dialect {
    /// Mistral's hosted API is recognised by its host; everything else speaks OpenAI's.
    pub fn guess(base_url: &str) -> Dialect {
        if base_url.contains("mistral.ai") {
            Dialect::Mistral
        } else {
            Dialect::Openai
        }
    }
}

pub struct OpenAiCompat {
    name: String,
    base_url: String,
    /// `Bearer <key>`, made once.
    authorization: Option<HeaderValue>,
    declared_models: Vec<String>,
    dialect: Dialect,
    /// `{base_url}/chat/completions`, parsed once.
    chat_uri: http::Uri,
    /// Longest silence between two bytes of an answer (and before its head).
    read_timeout: Duration,
    http: Transport,
}

/// How requests reach an upstream: hyper's client, or reqwest when the environment routes
/// this upstream through a proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus
/// `NO_PROXY`), which reqwest implements and palaver's own path does not.
enum Transport {
    Direct(ThreadClients),
    Proxied(reqwest::Client),
}

/// An upstream's answer: its head, and its body as it comes.
struct Answer {
    status: http::StatusCode,
    content_type: Option<String>,
    body: futures::stream::BoxStream<'static, std::result::Result<Bytes, BodyError>>,
}

/// hyper's pooled client over plain TCP or rustls.
type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTP client per thread, each with its own connection pool. A pooled connection is
/// driven by a task on the thread that opened it; with one pool for all, a request served
/// on one connection thread often used a connection another thread drives, and each of its
/// reads and writes woke that thread.
struct ThreadClients {
    /// Tells this upstream's clients apart in each thread's table.
    id: usize,
    build: Box<dyn Fn() -> HttpClient + Send + Sync>,
}

thread_local! {
    static THREAD_CLIENTS: std::cell::RefCell<std::collections::HashMap<usize, HttpClient>> =
        Default::default();
}

impl ThreadClients {
    fn new(build: impl Fn() -> HttpClient + Send + Sync + 'static) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ThreadClients { id, build: Box::new(build) }
    }

    /// This thread's client (cheap: reference counts).
    fn here(&self) -> HttpClient {
        THREAD_CLIENTS.with_borrow_mut(|clients| clients.entry(self.id).or_insert_with(&self.build).clone())
    }
}

/// The roots upstream certificates are checked against: Mozilla's (webpki-roots) and the
/// system's (an internal CA of a self-hosted model server), read once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::LazyLock<Arc<rustls::ClientConfig>> = std::sync::LazyLock::new(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    });
    CONFIG.clone()
}

fn http_client(timeouts: Timeouts, http2_prior_knowledge: bool) -> HttpClient {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(timeouts.connect));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls_config()).clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let mut builder = Client::builder(TokioExecutor::new());
    // Keep-alive connections are reused by every run: no per-request handshake.
    builder.pool_idle_timeout(Duration::from_secs(90)).timer(TokioTimer::new());
    if http2_prior_knowledge {
        // All of a thread's runs share one connection. h2 caps the small DATA frames
        // buffered per connection at half its window; SSE answers are many small frames,
        // and when thousands of streams speak at once the default window closes the
        // connection (`too_many_data_frames`). The window bounds buffering, it is not
        // allocated.
        builder.http2_only(true).http2_initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
    }
    builder.build(connector)
}

/// Why an upstream's answer stopped coming.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("no byte for {0:?}")]
    Silent(Duration),
    #[error(transparent)]
    Transport(#[from] hyper::Error),
    #[error(transparent)]
    Proxied(reqwest::Error),
}

/// An answer's bytes as they come, each within `read` of the one before.
fn body_bytes(body: Incoming, read: Duration) -> impl Stream<Item = std::result::Result<Bytes, BodyError>> {
    futures::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        loop {
            match tokio::time::timeout(read, body.frame()).await {
                Err(_) => return Some((Err(BodyError::Silent(read)), None)),
                Ok(None) => return None,
                Ok(Some(Err(error))) => return Some((Err(BodyError::Transport(error)), None)),
                Ok(Some(Ok(frame))) => {
                    // Trailers carry nothing palaver reads.
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), Some(body)));
                    }
                }
            }
        }
    })
}

impl Answer {
    /// The whole body, each piece within the read timeout of the one before.
    async fn whole_body(self) -> std::result::Result<Bytes, BodyError> {
        let mut pieces = self.body;
        let mut whole = bytes::BytesMut::new();
        while let Some(piece) = pieces.next().await {
            whole.extend_from_slice(&piece?);
        }
        Ok(whole.freeze())
    }
}

/// Flow-control window of a shared HTTP/2 upstream connection (64 MiB).
const HTTP2_CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// An upstream response relayed as it is.
pub struct Passthrough {
    pub status: u16,
    pub content_type: String,
    pub body: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>,
}

/// Connection settings shared by every upstream.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest silence between two bytes of an answer.
    pub read: Duration,
}

/// How to reach one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    pub dialect: Option<Dialect>,
    pub timeouts: Timeouts,
    pub http2_prior_knowledge: bool,
}

#[derive(Deserialize)]
struct UpstreamModelList {
    data: Vec<UpstreamModel>,
}

#[derive(Deserialize)]
struct UpstreamModel {
    id: String,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    owned_by: Option<String>,
    #[serde(default)]
    max_context_length: Option<u64>,
    #[serde(default)]
    description: Option<String>,
}

impl OpenAiCompat {
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<String>,
        declared_models: Vec<String>,
        options: UpstreamOptions,
    ) -> anyhow::Result<Self> {
        let UpstreamOptions { dialect, timeouts, http2_prior_knowledge } = options;
        let base_url = base_url.trim_end_matches('/').to_owned();
        let chat_uri = format!("{base_url}/chat/completions")
            .parse::<http::Uri>()
            .ok()
            .filter(|uri| uri.scheme().is_some() && uri.host().is_some())
            .with_context(|| format!("upstream `{name}` has an invalid URL `{base_url}`"))?;
        let proxied = hyper_util::client::proxy::matcher::Matcher::from_env().intercept(&chat_uri).is_some();
        let http = if proxied {
            tracing::info!(upstream = name, "model calls go through the proxy the environment names");
            let mut http = reqwest::Client::builder()
                .connect_timeout(timeouts.connect)
                .read_timeout(timeouts.read)
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_nodelay(true)
                // An upstream that redirects is misconfigured; following would hide it.
                .redirect(reqwest::redirect::Policy::none());
            if http2_prior_knowledge {
                http = http.http2_prior_knowledge().http2_initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
            }
            Transport::Proxied(http.build().with_context(|| format!("upstream `{name}`: the HTTP client"))?)
        } else {
            Transport::Direct(ThreadClients::new(move || http_client(timeouts, http2_prior_knowledge)))
        };
        let authorization = match &api_key {
            Some(key) => {
                let mut value = HeaderValue::try_from(format!("Bearer {key}"))
                    .with_context(|| format!("upstream `{name}`: the API key is not a valid header value"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(OpenAiCompat {
            name: name.to_owned(),
            chat_uri,
            authorization,
            declared_models,
            dialect: dialect.unwrap_or_else(|| Dialect::guess(&base_url)),
            base_url,
            read_timeout: timeouts.read,
            http,
        })
    }

    /// Sends a request to the upstream: its head must come within the read timeout.
    async fn send(
        &self,
        method: http::Method,
        uri: http::Uri,
        accept: &'static str,
        body: Option<Bytes>,
    ) -> Result<Answer> {
        let mut headers = http::HeaderMap::with_capacity(4);
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(authorization) = &self.authorization {
            headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        traces::inject(&mut headers);
        let read = self.read_timeout;
        let body = body.unwrap_or_default();
        let clients = match &self.http {
            Transport::Direct(clients) => clients,
            Transport::Proxied(client) => {
                let request = client.request(method, uri.to_string()).headers(headers).body(body);
                let response = request.send().await.map_err(|e| upstream_unreachable(&self.name, &e))?;
                let (status, content_type) = (response.status(), content_type(response.headers()));
                let body = response.bytes_stream().map(move |piece| {
                    piece.map_err(|e| if e.is_timeout() { BodyError::Silent(read) } else { BodyError::Proxied(e) })
                });
                return Ok(Answer { status, content_type, body: body.boxed() });
            }
        };
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        match tokio::time::timeout(read, clients.here().request(request)).await {
            Ok(Ok(response)) => {
                let content_type = content_type(response.headers());
                let (status, body) = (response.status(), body_bytes(response.into_body(), read).boxed());
                Ok(Answer { status, content_type, body })
            }
            Ok(Err(error)) => Err(upstream_unreachable(&self.name, &error)),
            Err(_) => Err(Error::Upstream {
                code: Code::UpstreamTimeout,
                message: format!("upstream `{}` did not answer within {read:?}", self.name),
            }),
        }
    }

    /// `{base_url}{path}`.
    fn uri(&self, path: &str) -> Result<http::Uri> {
        format!("{}{path}", self.base_url)
            .parse()
            .map_err(|e| Error::Internal(anyhow::anyhow!("upstream `{}`: bad URL: {e}", self.name)))
    }

    /// `POST /chat/completions` passed through unchanged (for clients whose base URL is
    /// palaver): the upstream's own status, content type and body, streamed.
    pub async fn passthrough(&self, body: bytes::Bytes) -> Result<Passthrough> {
        let uri = self.uri("/chat/completions")?;
        let answer = self.send(http::Method::POST, uri, "*/*", Some(body)).await?;
        Ok(Passthrough {
            status: answer.status.as_u16(),
            content_type: answer.content_type.unwrap_or_else(|| "application/json".to_owned()),
            body: answer.body.map(|chunk| chunk.map_err(std::io::Error::other)).boxed(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The models this upstream serves: those declared in the config file, or else the
    /// upstream's own `GET /models`.
    pub async fn cards(&self) -> Result<Vec<ModelCard>> {
        if !self.declared_models.is_empty() {
            return Ok(self.declared_models.iter().map(|id| self.card(id.clone(), None, None, None, None)).collect());
        }
        let listed = async {
            let answer = self.send(http::Method::GET, self.uri("/models")?, "application/json", None).await?;
            let status = answer.status;
            let body = answer.whole_body().await.map_err(|e| upstream_failed(&self.name, "model list", &e))?;
            if !status.is_success() {
                return Err(upstream_status(status.as_u16(), &String::from_utf8_lossy(&body)));
            }
            serde_json::from_slice::<UpstreamModelList>(&body).map_err(|e| {
                Error::upstream(502, format!("upstream `{}` sent an unreadable model list: {e}", self.name))
            })
        };
        let list = tokio::time::timeout(Duration::from_secs(15), listed).await.map_err(|_| Error::Upstream {
            code: Code::UpstreamTimeout,
            message: format!("upstream `{}` did not list its models within 15 s", self.name),
        })??;
        Ok(list
            .data
            .into_iter()
            .map(|m| self.card(m.id, m.created, m.owned_by, m.max_context_length, m.description))
            .collect())
    }

    fn card(
        &self,
        id: String,
        created: Option<i64>,
        owned_by: Option<String>,
        max_context_length: Option<u64>,
        description: Option<String>,
    ) -> ModelCard {
        ModelCard {
            name: id.clone(),
            id,
            object: "model",
            created: created.unwrap_or(0),
            owned_by: owned_by.unwrap_or_else(|| self.name.clone()),
            kind: "base",
            capabilities: Capabilities::chat(),
            description: description.unwrap_or_else(|| format!("Served by upstream `{}`.", self.name)),
            max_context_length: max_context_length.unwrap_or(32_768),
            aliases: Vec::new(),
            deprecation: None,
            default_model_temperature: None,
        }
    }
}

/// An upstream's HTTP failure as palaver reports it (`Error::upstream` picks the code).
pub fn upstream_status(status: u16, body: &str) -> Error {
    let detail: String = body.chars().take(2000).collect();
    Error::upstream(status, format!("upstream answered {status}: {detail}"))
}

fn upstream_unreachable(name: &str, error: &(dyn std::error::Error + 'static)) -> Error {
    let code = if timed_out(error) { Code::UpstreamTimeout } else { Code::UpstreamFailed };
    Error::Upstream { code, message: format!("upstream `{name}` could not be reached: {}", error_chain(error)) }
}

/// An answer that stopped coming: silence past the read timeout is a timeout.
fn upstream_failed(name: &str, what: &str, error: &BodyError) -> Error {
    let code = if matches!(error, BodyError::Silent(_)) { Code::UpstreamTimeout } else { Code::UpstreamFailed };
    Error::Upstream { code, message: format!("upstream `{name}` {what} failed: {}", error_chain(error)) }
}

/// Whether a cause of `error` is a timed-out I/O operation (a connect timeout).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
            || error.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_timeout)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

fn content_type(headers: &http::HeaderMap) -> Option<String> {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// An error with its causes (`a: b: c`): transport errors say little without them.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The JSON body of a streamed chat completion: borrowed from the request and written
/// once, straight to bytes (no intermediate JSON tree).
#[derive(Serialize)]
pub struct ChatBody<'a> {
    model: &'a str,
    stream: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tools: &'a [ChatTool<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prediction: Option<&'a Prediction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    /// Mistral's name for the seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    random_seed: Option<u64>,
    /// OpenAI's name for the seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The JSON body of a streamed chat completion in `dialect`: the messages, then the rest.
/// The stored history's messages are written once and kept with the history.
pub fn encode_request(dialect: Dialect, request: &ChatRequest<'_>) -> Vec<u8> {
    // Serializing our own types cannot fail (string keys, no custom errors).
    let rest = serde_json::to_vec(&request_body(dialect, request)).unwrap_or_else(|_| b"{}".to_vec());
    let messages = &request.messages;
    let (before, after) = match &request.stored {
        Some(stored) => messages.split_at(stored.at.min(messages.len())),
        None => (&messages[..], &[][..]),
    };
    let stored = request.stored.as_ref().map(|stored| {
        stored.json.get_or_init(|| {
            let mut out = Vec::new();
            for message in &(stored.build)() {
                write_message(&mut out, message);
            }
            Bytes::from(out)
        })
    });
    let mut body = Vec::with_capacity(json_capacity(messages) + stored.map_or(0, |json| json.len()) + rest.len() + 16);
    body.extend_from_slice(br#"{"messages":["#);
    for message in before {
        write_message(&mut body, message);
    }
    if let Some(json) = stored.filter(|json| !json.is_empty()) {
        separate(&mut body);
        body.extend_from_slice(json);
    }
    for message in after {
        write_message(&mut body, message);
    }
    body.push(b']');
    if rest.len() > 2 {
        body.push(b',');
    }
    body.extend_from_slice(rest.get(1..).unwrap_or(b"}"));
    body
}

/// The body of a streamed chat completion in `dialect`, without the messages.
pub fn request_body<'a>(dialect: Dialect, request: &'a ChatRequest<'_>) -> ChatBody<'a> {
    let args = &request.args;
    let mistral = dialect == Dialect::Mistral;
    let tool_choice = args.tool_choice.map(|choice| match (choice, mistral) {
        (ToolChoice::Any, true) => "any",
        (ToolChoice::Any | ToolChoice::Required, false) => "required",
        (ToolChoice::Required, true) => "required",
        (ToolChoice::Auto, _) => "auto",
        (ToolChoice::None, _) => "none",
    });
    ChatBody {
        model: &request.model,
        stream: request.stream,
        tools: &request.tools,
        temperature: args.temperature,
        top_p: args.top_p,
        max_tokens: args.max_tokens,
        stop: args.stop.as_ref(),
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        response_format: args.response_format.as_ref(),
        prediction: args.prediction.as_ref(),
        reasoning_effort: args.reasoning_effort.as_deref(),
        random_seed: if mistral { args.random_seed } else { None },
        seed: if mistral { None } else { args.random_seed },
        tool_choice,
        // OpenAI-style servers send usage in streams only when asked; Mistral always does
        // and rejects the field.
        stream_options: (request.stream && !mistral).then_some(StreamOptions { include_usage: true }),
    }
}

#[derive(Deserialize)]
struct StreamChunk<'a> {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    /// Borrowed: every chunk repeats it, and only the last one's is kept.
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<StreamUsage>,
    #[serde(default)]
    error: Option<Value>,
}

/// A streamed chunk's choice, or a whole answer's: its `message` reads as one delta that
/// holds everything.
#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default, alias = "message")]
    delta: Option<StreamDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct StreamDelta {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<StreamToolCall>>,
}

#[derive(Deserialize)]
struct StreamToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<StreamFunction>,
}

#[derive(Deserialize)]
struct StreamFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct StreamUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

/// The human part of an upstream error body: `error.message`, `message` or `detail`.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let found = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .or_else(|| v.get("error"))
            .map(|m| match m {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    });
    found.unwrap_or_else(|| body.chars().take(2000).collect())
}

/// The deltas of a streamed `content`: a string, or a list of parts (Mistral's chat API
/// sends `text` and, citing a tool's sources, `reference` chunks), in order.
fn content_deltas(content: Value, deltas: &mut Vec<ChatDelta>) {
    match content {
        Value::String(text) if !text.is_empty() => deltas.push(ChatDelta::Text(text)),
        Value::Array(parts) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    deltas.push(ChatDelta::Text(text.to_owned()));
                } else if let Some(ids) = part.get("reference_ids").and_then(Value::as_array) {
                    let ids: Vec<u64> = ids.iter().filter_map(reference_id).collect();
                    if !ids.is_empty() {
                        deltas.push(ChatDelta::Reference(ids));
                    }
                }
            }
        }
        _ => {}
    }
}

/// A reference id: a number, or a number written as a string.
fn reference_id(id: &Value) -> Option<u64> {
    id.as_u64().or_else(|| id.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Turns one SSE data payload into deltas; `finished` is set once the answer is complete.
fn parse_chunk(data: &str, finished: &mut bool) -> Result<Vec<ChatDelta>> {
    let chunk: StreamChunk = serde_json::from_str(data)
        .map_err(|e| Error::upstream(502, format!("upstream sent an unreadable chunk: {e}")))?;
    if let Some(error) = chunk.error {
        return Err(Error::upstream(502, error_message(&error.to_string())));
    }
    let mut deltas = Vec::new();
    let model = chunk.model;
    for choice in chunk.choices {
        if let Some(delta) = choice.delta {
            if let Some(content) = delta.content {
                content_deltas(content, &mut deltas);
            }
            for (position, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let function = call.function.unwrap_or(StreamFunction { name: None, arguments: None });
                let arguments = match function.arguments {
                    Some(Value::String(s)) => s,
                    Some(Value::Null) | None => String::new(),
                    // Some servers send whole argument objects instead of a string.
                    Some(other) => other.to_string(),
                };
                deltas.push(ChatDelta::ToolCall(ToolCallDelta {
                    index: call.index.unwrap_or(position as u32),
                    id: call.id.filter(|id| !id.is_empty()),
                    name: function.name.filter(|n| !n.is_empty()),
                    arguments,
                }));
            }
        }
        if let Some(reason) = choice.finish_reason {
            *finished = true;
            deltas.push(ChatDelta::Finish { reason, model: model.as_deref().map(str::to_owned) });
        }
    }
    if let Some(usage) = chunk.usage {
        let total =
            if usage.total_tokens > 0 { usage.total_tokens } else { usage.prompt_tokens + usage.completion_tokens };
        deltas.push(ChatDelta::Usage(Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: total,
        }));
    }
    Ok(deltas)
}

/// The deltas of an answer asked for as one JSON body.
async fn whole_answer(name: &str, answer: Answer) -> Result<DeltaStream> {
    // A JSON answer is silent until it is whole: the read timeout bounds each piece of it.
    let body = answer.whole_body().await.map_err(|error| upstream_failed(name, "answer", &error))?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| Error::upstream(502, format!("upstream `{name}` sent an answer that is not UTF-8")))?;
    let mut finished = false;
    let deltas = parse_chunk(text, &mut finished)?;
    if !finished {
        return Err(Error::upstream(502, format!("upstream `{name}` sent an answer without a finish reason")));
    }
    Ok(futures::stream::iter(deltas.into_iter().map(Ok)).boxed())
}

#[async_trait::async_trait]
impl ModelBackend for OpenAiCompat {
    fn citation_style(&self) -> CitationStyle {
        match self.dialect {
            Dialect::Mistral => CitationStyle::References,
            Dialect::Openai => CitationStyle::Markers,
        }
    }

    fn provider(&self) -> &'static str {
        match self.dialect {
            Dialect::Mistral => "mistral_ai",
            Dialect::Openai => "openai",
        }
    }

    async fn chat_stream(&self, request: ChatRequest<'_>) -> Result<DeltaStream> {
        let body = Bytes::from(encode_request(self.dialect, &request));
        let accept = if request.stream { "text/event-stream" } else { "application/json" };
        let started = std::time::Instant::now();
        let sent = self.send(http::Method::POST, self.chat_uri.clone(), accept, Some(body)).await;
        let status = sent.as_ref().ok().map(|answer| answer.status.as_u16());
        telemetry::upstream_request(&self.name, status, started.elapsed());
        let answer = sent?;
        let (status, name) = (answer.status, self.name.clone());
        if !status.is_success() {
            let text = answer.whole_body().await.unwrap_or_default();
            return Err(upstream_status(status.as_u16(), &error_message(&String::from_utf8_lossy(&text))));
        }
        if !request.stream {
            return whole_answer(&name, answer).await;
        }
        let mut events = answer.body.eventsource();
        let stream = async_stream::stream! {
            let mut finished = false;
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        let cause = match &error {
                            eventsource_stream::EventStreamError::Transport(transport) => error_chain(transport),
                            other => error_chain(other),
                        };
                        let message = format!("upstream `{name}` stream failed: {cause}");
                        // The upstream fell silent past the read timeout.
                        let timed_out =
                            matches!(&error, eventsource_stream::EventStreamError::Transport(BodyError::Silent(_)));
                        let code = if timed_out { Code::UpstreamTimeout } else { Code::UpstreamFailed };
                        yield Err(Error::Upstream { code, message });
                        return;
                    }
                };
                let data = event.data.trim();
                if data.is_empty() {
                    continue;
                }
                if data == "[DONE]" {
                    finished = true;
                    break;
                }
                if event.event == "error" {
                    yield Err(Error::upstream(502, error_message(data)));
                    return;
                }
                match parse_chunk(data, &mut finished) {
                    Ok(deltas) => {
                        for delta in deltas {
                            yield Ok(delta);
                        }
                    }
                    Err(error) => {
                        yield Err(error);
                        return;
                    }
                }
            }
            if !finished {
                yield Err(Error::upstream(502, format!("upstream `{name}` closed the stream before the answer was complete")));
            }
        };
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::chat::{ChatMessage, StoredMessages};
    use crate::domain::completion::CompletionArgs;
    use crate::domain::entries::Content;

    /// Each thread builds its own client once and keeps using it; another thread gets
    /// another.
    #[test]
    fn each_thread_builds_its_client_once() {
        let built = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = built.clone();
        let clients = ThreadClients::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            http_client(Timeouts { connect: Duration::from_secs(1), read: Duration::from_secs(1) }, false)
        });
        let count = || built.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(count(), 0, "none before a thread asks");

        clients.here();
        clients.here();
        assert_eq!(count(), 1);
        std::thread::scope(|scope| {
            scope.spawn(|| clients.here());
        });

        assert_eq!(count(), 2);
    }

    fn request(args: CompletionArgs) -> ChatRequest<'static> {
        ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::User { content: std::borrow::Cow::Owned(Content::Text("hi".into())) }],
            stored: None,
            tools: vec![].into(),
            args: std::borrow::Cow::Owned(args),
            stream: true,
            caller: Default::default(),
        }
    }

    /// A turn nobody watches asks for one JSON answer; its deltas are those of the same
    /// answer streamed.
    #[test]
    fn a_whole_answer_gives_the_deltas_of_the_same_answer_streamed() {
        let mut unwatched = request(CompletionArgs::default());
        unwatched.stream = false;
        let body = serde_json::to_value(request_body(Dialect::Openai, &unwatched)).unwrap();
        assert_eq!(body["stream"], false);
        assert!(body.get("stream_options").is_none(), "only streams are asked for usage");
        let whole = r#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,
            "message":{"role":"assistant","content":"Hi there","tool_calls":[{"id":"c1","type":"function",
            "function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let streamed = [
            r#"{"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi there"}}]}"#,
            r#"{"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        ];

        let mut finished = false;
        let from_whole = parse_chunk(whole, &mut finished).unwrap();
        assert!(finished);
        let mut from_stream = Vec::new();
        let mut stream_finished = false;
        for chunk in streamed {
            from_stream.extend(parse_chunk(chunk, &mut stream_finished).unwrap());
        }

        assert_eq!(from_whole, from_stream);
    }

    #[test]
    fn the_seed_and_tool_choice_follow_the_dialect() {
        let args = CompletionArgs { random_seed: Some(7), tool_choice: Some(ToolChoice::Any), ..Default::default() };

        let (mistral_request, openai_request) = (request(args.clone()), request(args));
        let mistral = serde_json::to_value(request_body(Dialect::Mistral, &mistral_request)).unwrap();
        let openai = serde_json::to_value(request_body(Dialect::Openai, &openai_request)).unwrap();

        assert_eq!(mistral["random_seed"], 7);
        assert_eq!(mistral["tool_choice"], "any");
        assert!(mistral.get("seed").is_none() && mistral.get("stream_options").is_none());
        assert_eq!(openai["seed"], 7);
        assert_eq!(openai["tool_choice"], "required");
        assert_eq!(openai["stream_options"]["include_usage"], true);
    }

    #[test]
    fn unset_arguments_are_not_sent() {
        let chat = request(CompletionArgs::default());
        let body: Value = serde_json::from_slice(&encode_request(Dialect::Mistral, &chat)).unwrap();

        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["messages", "model", "stream"]);
    }

    #[test]
    fn hand_written_messages_are_the_derived_json() {
        use std::borrow::Cow;
        let call = |id: &'static str| crate::backends::chat::ToolCall {
            id: Cow::Borrowed(id),
            kind: "function",
            function: crate::backends::chat::FunctionCallBody {
                name: Cow::Borrowed("get \"weather\""),
                arguments: Cow::Borrowed("{\"city\": \"Paris\n\"}"),
            },
        };
        let messages = vec![
            ChatMessage::System { content: Cow::Borrowed("Be \"brief\".") },
            ChatMessage::User { content: Cow::Owned(Content::Text("héllo\u{1}".into())) },
            ChatMessage::User {
                content: Cow::Owned(Content::Chunks(vec![serde_json::json!({"type": "text", "text": "a"})])),
            },
            ChatMessage::Assistant {
                content: Some(Cow::Owned(Content::Text("x".into()))),
                tool_calls: vec![],
                prefix: true,
            },
            ChatMessage::Assistant { content: None, tool_calls: vec![call("c1"), call("c2")], prefix: false },
            ChatMessage::Tool {
                tool_call_id: Cow::Borrowed("c1"),
                name: Cow::Borrowed("n"),
                content: Cow::Borrowed("21\tC"),
            },
        ];
        let chat = ChatRequest {
            model: "m".into(),
            messages: messages.clone(),
            stored: None,
            tools: vec![].into(),
            args: Cow::Owned(CompletionArgs { temperature: Some(0.5), ..Default::default() }),
            stream: true,
            caller: Default::default(),
        };

        let body: Value = serde_json::from_slice(&encode_request(Dialect::Mistral, &chat)).unwrap();

        assert_eq!(body["messages"], serde_json::to_value(&messages).unwrap());
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["model"], "m");
    }

    #[test]
    fn stored_messages_are_written_once_and_reused() {
        use std::borrow::Cow;
        let text = |t: &'static str| Cow::Owned(Content::Text(t.into()));
        let system = ChatMessage::System { content: Cow::Borrowed("Be brief.") };
        let history = vec![
            ChatMessage::User { content: text("one") },
            ChatMessage::Assistant { content: Some(text("two")), tool_calls: vec![], prefix: false },
        ];
        let last = ChatMessage::User { content: text("three") };
        let build = || history.clone();
        fn chat<'a>(messages: Vec<ChatMessage<'a>>, stored: Option<StoredMessages<'a>>) -> ChatRequest<'a> {
            ChatRequest {
                model: "m".into(),
                messages,
                stored,
                tools: vec![].into(),
                args: Cow::Owned(CompletionArgs::default()),
                stream: true,
                caller: Default::default(),
            }
        }
        let kept_in = |json| Some(StoredMessages { at: 1, build: &build, json });
        let all = vec![system.clone(), history[0].clone(), history[1].clone(), last.clone()];
        let plain = encode_request(Dialect::Openai, &chat(all.clone(), None));
        let cell = std::sync::OnceLock::new();

        let first = encode_request(Dialect::Openai, &chat(vec![system.clone(), last.clone()], kept_in(&cell)));

        assert_eq!(first, plain);
        assert_eq!(
            cell.get().unwrap().as_ref(),
            br#"{"role":"user","content":"one"},{"role":"assistant","content":"two"}"#
        );
        assert_eq!(chat(vec![system.clone(), last.clone()], kept_in(&cell)).all_messages().as_ref(), &all[..]);
        // Later turns take the kept JSON as it is.
        let kept = std::sync::OnceLock::from(Bytes::from_static(br#"{"role":"user","content":"kept"}"#));
        let body: Value = serde_json::from_slice(&encode_request(
            Dialect::Openai,
            &chat(vec![system.clone(), last.clone()], kept_in(&kept)),
        ))
        .unwrap();
        let contents: Vec<&str> =
            body["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
        assert_eq!(contents, vec!["Be brief.", "kept", "three"]);
        // An empty history writes no stray comma.
        let empty = std::sync::OnceLock::from(Bytes::new());
        let body = encode_request(Dialect::Openai, &chat(vec![system, last], kept_in(&empty)));
        let plain = encode_request(Dialect::Openai, &chat(vec![all[0].clone(), all[3].clone()], None));
        assert_eq!(body, plain);
    }

    #[test]
    fn chunks_become_text_tool_call_finish_and_usage_deltas() {
        let mut finished = false;
        let data = r#"{"model":"mistral-small-2506","choices":[{"index":0,"delta":{"content":"Hi","tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

        let deltas = parse_chunk(data, &mut finished).unwrap();

        assert!(finished);
        assert_eq!(deltas[0], ChatDelta::Text("Hi".into()));
        assert_eq!(
            deltas[1],
            ChatDelta::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("c1".into()),
                name: Some("f".into()),
                arguments: "{\"a\"".into()
            })
        );
        let model = Some("mistral-small-2506".to_owned());
        assert_eq!(deltas[2], ChatDelta::Finish { reason: "tool_calls".into(), model });
        assert_eq!(deltas[3], ChatDelta::Usage(Usage { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 }));
    }

    #[test]
    fn reference_chunks_are_kept_in_order_between_text() {
        let mut finished = false;
        let data = r#"{"choices":[{"index":0,"delta":{"content":[{"type":"text","text":"Spain"},{"type":"reference","reference_ids":[0,"2"]},{"type":"text","text":"."}]}}]}"#;

        let deltas = parse_chunk(data, &mut finished).unwrap();

        assert_eq!(
            deltas,
            [ChatDelta::Text("Spain".into()), ChatDelta::Reference(vec![0, 2]), ChatDelta::Text(".".into())]
        );
    }

    #[test]
    fn upstream_error_bodies_are_reduced_to_their_message() {
        assert_eq!(error_message(r#"{"error":{"message":"bad model"}}"#), "bad model");
        assert_eq!(error_message(r#"{"object":"error","message":"nope"}"#), "nope");
        assert_eq!(error_message("plain text"), "plain text");
    }
}

/// The upstream stream as palaver reads it (SSE framing, then each chunk), against
/// arbitrary input and arbitrary packet boundaries.
#[cfg(test)]
mod stream_properties {
    use super::*;
    use eventsource_stream::Eventsource;
    use proptest::prelude::*;

    /// The deltas of an SSE body delivered in pieces cut at `cuts`, up to `[DONE]`.
    fn read(body: &[u8], cuts: &[usize]) -> (Vec<ChatDelta>, bool) {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts {
            pieces.push(Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(&body[start..cut.max(start)])));
            start = cut.max(start);
        }
        pieces.push(Ok(bytes::Bytes::copy_from_slice(&body[start..])));
        let events: Vec<_> = futures::executor::block_on(futures::stream::iter(pieces).eventsource().collect());
        let (mut deltas, mut finished) = (Vec::new(), false);
        for event in events {
            let data = event.expect("a well-formed body").data;
            if data.trim() == "[DONE]" {
                break;
            }
            deltas.extend(parse_chunk(data.trim(), &mut finished).expect("a well-formed chunk"));
        }
        (deltas, finished)
    }

    fn text_of(deltas: &[ChatDelta]) -> String {
        deltas.iter().filter_map(|d| if let ChatDelta::Text(t) = d { Some(t.as_str()) } else { None }).collect()
    }

    proptest! {
        #[test]
        fn any_chunk_text_is_deltas_or_an_upstream_error(data in ".*") {
            let mut finished = false;
            match parse_chunk(&data, &mut finished) {
                Ok(_) => {}
                Err(error) => prop_assert_eq!(error.code(), Code::UpstreamFailed),
            }
        }

        #[test]
        fn any_json_chunk_is_deltas_or_an_upstream_error(value in crate::domain::arbitrary::json_value()) {
            let mut finished = false;
            if let Err(error) = parse_chunk(&value.to_string(), &mut finished) {
                prop_assert_eq!(error.code(), Code::UpstreamFailed);
            }
        }

        #[test]
        fn streamed_text_arrives_whole_wherever_the_packets_are_cut(
            words in proptest::collection::vec("[^\r\n]{0,12}", 1..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            crlf in any::<bool>(),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut body = String::new();
            for word in &words {
                let chunk = serde_json::json!({"choices": [{"index": 0, "delta": {"content": word}}]});
                body.push_str(&format!("data: {chunk}{eol}{eol}"));
            }
            let last = serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            body.push_str(&format!("data: {last}{eol}{eol}data: [DONE]{eol}{eol}"));

            let (deltas, finished) = read(body.as_bytes(), &cuts);

            prop_assert!(finished);
            prop_assert_eq!(text_of(&deltas), words.concat());
        }
    }
}
