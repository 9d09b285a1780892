//! `TestApp::spawn()` and request helpers.

use palaver::config::{Config, LogFormat};
use reqwest::{Method, Response};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct TestApp {
    pub base: String,
    /// `http://…` of `PALAVER_METRICS_ADDR`, when the options set one.
    pub metrics_base: Option<String>,
    pub client: reqwest::Client,
    /// The key sent as `Authorization: Bearer` by the helpers, if any.
    pub key: Option<String>,
    /// The database this server uses (another server can share it).
    pub database_url: String,
    shutdown: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    stopped: std::sync::Mutex<Option<tokio::task::JoinHandle<anyhow::Result<()>>>>,
    _dir: Option<std::sync::Arc<tempfile::TempDir>>,
    _config_dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

#[derive(Default)]
pub struct Options {
    pub api_keys: Vec<String>,
    pub upstream_url: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub upstream_read_timeout_ms: Option<u64>,
    pub history_cache_entries: Option<usize>,
    /// Share another server's database instead of a fresh one.
    pub database_url: Option<String>,
    /// Contents of a `PALAVER_CONFIG` file.
    pub config_toml: Option<String>,
    pub max_rounds: Option<u32>,
    pub sqlite_synchronous: palaver::config::SqliteSynchronous,
    pub db_acquire_timeout_ms: Option<u64>,
    pub metrics_addr: Option<SocketAddr>,
    pub mock_script: Option<std::path::PathBuf>,
    pub max_handoffs: Option<u32>,
    pub stream_retention_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub client_header_timeout_ms: Option<u64>,
    pub client_body_timeout_ms: Option<u64>,
}

static DATABASE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh Postgres database on the server of `TEST_DATABASE_URL`. Names start with
/// `palaver_t_`; the test script drops them after the run.
async fn fresh_postgres(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!(
        "palaver_t_{}_{}_{}",
        std::process::id(),
        DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed),
        uuid_suffix()
    );
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("TEST_DATABASE_URL is set but Postgres is not reachable: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
    let (base, _) = admin_url.rsplit_once('/').expect("TEST_DATABASE_URL ends with /DBNAME");
    format!("{base}/{name}")
}

fn uuid_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{nanos:x}")
}

/// A fresh database for one server: a new Postgres database when `TEST_DATABASE_URL` is
/// set, else a SQLite file in a temporary directory (kept as long as the returned guard).
pub async fn fresh_database() -> (String, Option<std::sync::Arc<tempfile::TempDir>>) {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => (fresh_postgres(&url).await, None),
        _ => {
            let dir = tempfile::tempdir().unwrap();
            (format!("sqlite://{}", dir.path().join("palaver.db").display()), Some(std::sync::Arc::new(dir)))
        }
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        let (database_url, dir) = match options.database_url.clone() {
            Some(shared) => (shared, None),
            None => fresh_database().await,
        };
        // The sandbox is probed only where a test asks for code_interpreter: elsewhere it
        // would cost every server a probe (and here the helper is not this test binary).
        let mut toml = options.config_toml.clone().unwrap_or_default();
        if !toml.contains("[code_interpreter]") {
            toml.push_str("\n[code_interpreter]\nsandbox = \"off\"\n");
        }
        let config_dir = {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("palaver.toml"), toml).unwrap();
            Some(std::sync::Arc::new(dir))
        };
        let config = Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.clone(),
            upstream_url: options.upstream_url,
            upstream_api_key: None,
            api_keys: options.api_keys.clone(),
            config_file: config_dir.as_ref().map(|d| d.path().join("palaver.toml")),
            max_body_bytes: options.max_body_bytes.unwrap_or(10 * 1024 * 1024),
            db_max_connections: 8,
            upstream_connect_timeout_ms: 2_000,
            upstream_read_timeout_ms: options.upstream_read_timeout_ms.unwrap_or(10_000),
            max_rounds: options.max_rounds.unwrap_or(8),
            max_handoffs: options.max_handoffs.unwrap_or(5),
            history_cache_entries: options.history_cache_entries.unwrap_or(200_000),
            log_format: LogFormat::Text,
            sqlite_synchronous: options.sqlite_synchronous,
            db_acquire_timeout_ms: options.db_acquire_timeout_ms.unwrap_or(5_000),
            idempotency_ttl_secs: 86_400,
            stream_retention_secs: options.stream_retention_secs.unwrap_or(600),
            max_connections: options.max_connections,
            client_header_timeout_ms: options.client_header_timeout_ms.unwrap_or(10_000),
            client_body_timeout_ms: options.client_body_timeout_ms.unwrap_or(30_000),
            metrics_addr: options.metrics_addr,
            mock_script: options.mock_script.clone(),
        };
        let app = palaver::App::build(config).await.expect("palaver starts");
        let addr = app.local_addr().unwrap();
        let metrics_base = app.metrics_addr().map(|a| format!("http://{a}"));
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let stopped = tokio::spawn(app.run_until(async move {
            let _ = signal.await;
        }));
        TestApp {
            base: format!("http://{addr}"),
            metrics_base,
            client: reqwest::Client::new(),
            key: options.api_keys.first().cloned(),
            database_url,
            shutdown: std::sync::Mutex::new(Some(shutdown)),
            stopped: std::sync::Mutex::new(Some(stopped)),
            _dir: dir,
            _config_dir: config_dir,
        }
    }

    /// Sends the shutdown signal (as SIGTERM would) and waits until the server has stopped.
    pub async fn shut_down(&self) {
        if let Some(trigger) = self.shutdown.lock().unwrap().take() {
            let _ = trigger.send(());
        }
        let stopped = self.stopped.lock().unwrap().take();
        if let Some(stopped) = stopped {
            tokio::time::timeout(std::time::Duration::from_secs(20), stopped)
                .await
                .expect("the server stopped in time")
                .unwrap()
                .unwrap();
        }
    }

    /// The same server, seen with another key (or none).
    pub fn with_key(&self, key: Option<&str>) -> TestApp {
        TestApp {
            base: self.base.clone(),
            metrics_base: self.metrics_base.clone(),
            client: self.client.clone(),
            key: key.map(str::to_owned),
            database_url: self.database_url.clone(),
            shutdown: std::sync::Mutex::new(None),
            stopped: std::sync::Mutex::new(None),
            _dir: self._dir.clone(),
            _config_dir: self._config_dir.clone(),
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{}", self.base, path));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path).send().await.unwrap()
    }

    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> Response {
        self.request(method, path).json(body).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.send_json(Method::POST, path, body).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.send_json(Method::PATCH, path, body).await
    }

    /// Sends raw bytes as a JSON body.
    pub async fn post_raw(&self, path: &str, body: &'static str) -> Response {
        self.request(Method::POST, path).header("content-type", "application/json").body(body).send().await.unwrap()
    }

    /// Creates an agent and returns its JSON (panics unless 200).
    pub async fn create_agent(&self, body: Value) -> Value {
        let response = self.post("/v1/agents", &body).await;
        assert_eq!(response.status(), 200, "creating an agent");
        response.json().await.unwrap()
    }
}

impl TestApp {
    /// A server whose every model name is answered by a fresh scripted upstream.
    pub async fn with_upstream() -> (TestApp, crate::upstream::FakeUpstream) {
        Self::with_upstream_options(Options::default()).await
    }

    pub async fn with_upstream_options(options: Options) -> (TestApp, crate::upstream::FakeUpstream) {
        let upstream = crate::upstream::FakeUpstream::start().await;
        let app = TestApp::spawn_with(Options { upstream_url: Some(upstream.url.clone()), ..options }).await;
        (app, upstream)
    }

    /// `POST` that must answer 200; returns the JSON body.
    pub async fn ok(&self, path: &str, body: &Value) -> Value {
        json_of(self.post(path, body).await, 200).await
    }

    /// The history's entries of a conversation.
    pub async fn history(&self, conversation_id: &str) -> Vec<Value> {
        let body = json_of(self.get(&format!("/v1/conversations/{conversation_id}/history")).await, 200).await;
        body["entries"].as_array().unwrap().clone()
    }

    /// Sends a streaming request and reads the whole SSE body as `(event, data)` pairs.
    pub async fn stream(&self, path: &str, body: &Value) -> Vec<(String, Value)> {
        let response = self.post(path, body).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        parse_sse(&response.text().await.unwrap())
    }
}

/// Parses an SSE body into `(event, data)` pairs, checking the framing the SDKs need:
/// every block has an `event:` line and a one-line JSON `data:` whose `type` is the name,
/// and its `id:` (the event's number in the run) in the same block.
pub fn parse_sse(body: &str) -> Vec<(String, Value)> {
    let numbered = parse_numbered_sse(body);
    let ids: Vec<u64> = numbered.iter().map(|(id, ..)| *id).collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "a run's events are numbered from 0");
    numbered.into_iter().map(|(_, name, data)| (name, data)).collect()
}

/// `parse_sse` with each event's `id:`.
pub fn parse_numbered_sse(body: &str) -> Vec<(u64, String, Value)> {
    assert!(body.ends_with("\n\n"), "the last event ends with a blank line");
    let mut events = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = None;
        let mut data = None;
        let mut id = None;
        for line in block.lines() {
            if let Some(rest) = line.strip_prefix("event:") {
                name = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("data:") {
                assert!(data.is_none(), "one data line per event: {block}");
                data = Some(serde_json::from_str::<Value>(rest.trim()).expect("data is JSON"));
            } else if let Some(rest) = line.strip_prefix("id:") {
                id = Some(rest.trim().parse::<u64>().expect("an event's id is its number"));
            } else {
                assert!(line.starts_with(':'), "only comments besides event, data and id: {line}");
            }
        }
        let (Some(name), Some(data)) = (name, data) else {
            if block.lines().all(|l| l.starts_with(':')) {
                continue;
            }
            panic!("an event without `event:` or `data:`: {block}");
        };
        assert_eq!(data["type"], name.as_str());
        let id = id.unwrap_or_else(|| panic!("an event without `id:`: {block}"));
        events.push((id, name, data));
    }
    events
}

pub fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// Asserts the status and returns the JSON body.
pub async fn json_of(response: Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    assert_eq!(content_type.as_deref(), Some("application/json"), "content type of a JSON answer");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// Asserts a 422 whose first `detail` item is located at `loc` with `kind`.
pub async fn assert_invalid(response: Response, loc: Value, kind: &str) -> Value {
    let body = json_of(response, 422).await;
    assert_eq!(body["object"], "error");
    assert_eq!(body["type"], "invalid_request_error");
    assert_eq!(body["detail"][0]["loc"], loc, "location of the error in {body}");
    assert_eq!(body["detail"][0]["type"], kind, "kind of the error in {body}");
    assert!(body["detail"][0]["msg"].as_str().is_some_and(|m| !m.is_empty()));
    body
}
