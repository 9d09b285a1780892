//! Every setting in one place: a clap struct whose flags are also environment variables
//! (the names are the operator contract: keep them stable), plus the optional TOML file.

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Args)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(global = true, long, env = "PALAVER_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,

    /// `sqlite://FILE` (created if missing), `sqlite::memory:` or `postgres://…`.
    #[arg(global = true, long, env = "DATABASE_URL", default_value = "sqlite://palaver.db")]
    pub database_url: String,

    /// Base URL of an OpenAI-compatible API (e.g. `https://api.mistral.ai/v1`,
    /// `http://localhost:11434/v1`). Unset: the built-in `echo` model answers every model name.
    #[arg(global = true, long, env = "PALAVER_UPSTREAM_URL")]
    pub upstream_url: Option<String>,

    /// Bearer key sent to the upstream.
    #[arg(global = true, long, env = "PALAVER_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,

    /// Comma-separated keys clients must present as `Authorization: Bearer …`; each key is
    /// its own workspace. Unset: no auth, one workspace (only sensible on loopback).
    #[arg(global = true, long, env = "PALAVER_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,

    /// A second address serving only `GET /metrics`, without auth (for a scraper on a
    /// private network). Unset: `/metrics` is served on the main address only, behind the
    /// API keys when keys are configured.
    #[arg(global = true, long, env = "PALAVER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// A JSON or YAML (`.yaml`, `.yml`) file of rules for the scripted `mock` model
    /// (`{"rules": [...]}`), for every workspace; checked at start.
    #[arg(global = true, long, env = "PALAVER_MOCK_SCRIPT")]
    pub mock_script: Option<PathBuf>,

    /// Optional TOML file: several upstreams and model → upstream routes.
    #[arg(global = true, long = "config", env = "PALAVER_CONFIG")]
    pub config_file: Option<PathBuf>,

    /// Largest accepted request body, in bytes; larger bodies get a 413.
    #[arg(global = true, long, env = "PALAVER_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Longest wait for a connection to an upstream, in milliseconds.
    #[arg(global = true, long, env = "PALAVER_UPSTREAM_CONNECT_TIMEOUT_MS", default_value_t = 10_000)]
    pub upstream_connect_timeout_ms: u64,

    /// Longest silence of an upstream while it answers, in milliseconds; then the turn
    /// fails with a 504 and stores nothing. A turn answered as one JSON body asks the
    /// upstream for one JSON answer, silent until whole: this bounds all of it.
    #[arg(global = true, long, env = "PALAVER_UPSTREAM_READ_TIMEOUT_MS", default_value_t = 120_000)]
    pub upstream_read_timeout_ms: u64,

    /// Most model calls one turn may make (tool and handoff rounds); past it the turn fails.
    #[arg(global = true, long, env = "PALAVER_MAX_ROUNDS", default_value_t = 8)]
    pub max_rounds: u32,

    /// Most handoffs between agents in one turn (within `--max-rounds`); past it the turn fails.
    #[arg(global = true, long, env = "PALAVER_MAX_HANDOFFS", default_value_t = 5)]
    pub max_handoffs: u32,

    /// Entries the in-memory history cache may hold (0 turns it off). Histories are
    /// immutable per head, so the cache is safe with several processes on one database.
    #[arg(global = true, long, env = "PALAVER_HISTORY_CACHE_ENTRIES", default_value_t = 200_000)]
    pub history_cache_entries: usize,

    /// How long the answer to a request with an `Idempotency-Key` is replayed to its retries.
    #[arg(global = true, long, env = "PALAVER_IDEMPOTENCY_TTL_SECS", default_value_t = 86_400)]
    pub idempotency_ttl_secs: u64,

    /// How long the events of a finished streamed run stay resumable
    /// (`GET /v1/conversations/{id}/stream`).
    #[arg(global = true, long, env = "PALAVER_STREAM_RETENTION_SECS", default_value_t = 600)]
    pub stream_retention_secs: u64,

    /// Most client connections served at once; past it a connection is answered 503 and
    /// closed. Default: the process's open-file limit (`ulimit -n`) less 256 for the
    /// database, upstreams and files.
    #[arg(global = true, long, env = "PALAVER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Longest a client may take to send its request headers, in milliseconds; then the
    /// connection is closed.
    #[arg(global = true, long, env = "PALAVER_CLIENT_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub client_header_timeout_ms: u64,

    /// Longest a client may take to send a JSON request body, in milliseconds; then the
    /// request is answered 408.
    #[arg(global = true, long, env = "PALAVER_CLIENT_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub client_body_timeout_ms: u64,

    /// Longest wait, in milliseconds, for a database connection (Postgres) or for another
    /// process's lock on the file (SQLite); then the request fails with a 503.
    #[arg(global = true, long, env = "PALAVER_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_acquire_timeout_ms: u64,

    /// Most Postgres connections held at once (SQLite always uses one, on its own thread).
    #[arg(global = true, long, env = "PALAVER_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How SQLite syncs commits to disk: `normal` (a crash of the process loses nothing; a
    /// power loss may lose the last commits, never the file's consistency) or `full` (a
    /// power loss loses no acknowledged commit, at the cost of an fsync per commit).
    #[arg(global = true, long, env = "PALAVER_SQLITE_SYNCHRONOUS", value_enum, default_value_t = SqliteSynchronous::Normal)]
    pub sqlite_synchronous: SqliteSynchronous,

    /// Log format.
    #[arg(global = true, long, env = "PALAVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum SqliteSynchronous {
    #[default]
    Normal,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Hand-written so that keys never reach a log line.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("database_url", &redact_url(&self.database_url))
            .field("upstream_url", &self.upstream_url)
            .field("upstream_api_key", &self.upstream_api_key.as_ref().map(|_| "<redacted>"))
            .field("api_keys", &format_args!("<{} keys>", self.api_keys.len()))
            .field("config_file", &self.config_file)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("db_max_connections", &self.db_max_connections)
            .field("db_acquire_timeout_ms", &self.db_acquire_timeout_ms)
            .field("idempotency_ttl_secs", &self.idempotency_ttl_secs)
            .field("stream_retention_secs", &self.stream_retention_secs)
            .field("max_connections", &self.max_connections)
            .field("client_header_timeout_ms", &self.client_header_timeout_ms)
            .field("client_body_timeout_ms", &self.client_body_timeout_ms)
            .field("upstream_read_timeout_ms", &self.upstream_read_timeout_ms)
            .field("max_rounds", &self.max_rounds)
            .field("max_handoffs", &self.max_handoffs)
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .finish()
    }
}

/// A database URL without its password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The optional TOML file named by `PALAVER_CONFIG`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Named OpenAI-compatible upstreams.
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Model name → upstream, checked in order; the first match wins.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// MCP servers that run tools for the model (see `connectors`).
    #[serde(default, rename = "connector")]
    pub connectors: Vec<ConnectorConfig>,
    /// `web_search`: the search provider palaver asks.
    #[serde(default)]
    pub web_search: Option<WebSearchConfig>,
    /// `web_search_premium` (web and news search); unset keys fall back to `[web_search]`.
    #[serde(default)]
    pub web_search_premium: Option<WebSearchConfig>,
    /// `image_generation`: an OpenAI-compatible images API.
    #[serde(default)]
    pub image_generation: Option<ImageGenerationConfig>,
    /// The native `code_interpreter` tool's sandbox (see `connectors::sandbox`); absent,
    /// the defaults apply (`sandbox = "auto"`).
    #[serde(default)]
    pub code_interpreter: CodeInterpreterConfig,
    /// Where file bytes are kept, and how large an upload may be.
    #[serde(default)]
    pub files: FilesConfig,
}

/// `[files]`: the blob store of the Files API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    #[serde(default)]
    pub storage: FilesStorage,
    /// The directory of `fs` storage (default: `<sqlite file>.files/` beside the database).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Largest upload, in MiB; larger ones get a 413 and nothing is stored.
    #[serde(default = "default_max_upload_mb")]
    pub max_upload_mb: u64,
    /// Name of the environment variable holding the key that signs file links. Unset: a
    /// key generated once and kept in the database, so every replica signs alike.
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    /// The scheme and host signed links start with (e.g. `https://palaver.example.com`).
    /// Unset: taken from the request's `Host` (and `X-Forwarded-Proto`).
    #[serde(default)]
    pub public_url: Option<String>,
    /// `s3`: the bucket (required).
    #[serde(default)]
    pub bucket: Option<String>,
    /// `s3`: the service's URL, for anything but AWS (MinIO, Ceph, Garage, …).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// `s3`: names of the environment variables holding the credentials (default: the
    /// standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// `s3`: address buckets as `<endpoint>/<bucket>` rather than `<bucket>.<endpoint>`
    /// (most self-hosted services want this).
    #[serde(default)]
    pub path_style: bool,
    /// `s3`: a prefix for every object name, e.g. `palaver/`.
    #[serde(default)]
    pub prefix: Option<String>,
}

fn default_max_upload_mb() -> u64 {
    512
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            storage: FilesStorage::Auto,
            dir: None,
            max_upload_mb: default_max_upload_mb(),
            signing_secret_env: None,
            public_url: None,
            bucket: None,
            endpoint: None,
            region: None,
            access_key_id_env: None,
            secret_access_key_env: None,
            path_style: false,
            prefix: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesStorage {
    /// A directory beside a SQLite file; the database itself for Postgres and in-memory SQLite.
    #[default]
    Auto,
    Fs,
    Database,
    S3,
}

/// `[image_generation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageGenerationConfig {
    /// Base URL of an OpenAI-compatible API (`POST {url}/images/generations`).
    pub url: String,
    /// Name of the environment variable holding its bearer key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The model asked (sent as given; default `gpt-image-1`).
    #[serde(default)]
    pub model: Option<String>,
    /// e.g. `1024x1024` (the default).
    #[serde(default)]
    pub size: Option<String>,
    /// Longest an image may take, including fetching it from a returned URL (default 120 s).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Largest image accepted, in MiB (default 20).
    #[serde(default)]
    pub max_image_mb: Option<u64>,
}

/// `[web_search]` and `[web_search_premium]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSearchConfig {
    /// `searxng`, `brave` or `tavily`.
    #[serde(default)]
    pub provider: Option<SearchProvider>,
    /// The provider's base URL (required for SearXNG; Brave's and Tavily's public APIs
    /// otherwise).
    #[serde(default)]
    pub url: Option<String>,
    /// Name of the environment variable holding the provider's key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Hits per search (default 5).
    #[serde(default)]
    pub max_results: Option<usize>,
    /// Longest a search (and each page fetch) may take (default 10 s).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Fetch the pages of the top N hits and give the model their text (default 0).
    #[serde(default)]
    pub fetch_top: Option<usize>,
    /// Let page fetches reach private, loopback and link-local addresses (default false).
    #[serde(default)]
    pub allow_private: Option<bool>,
    /// Host names whose pages may be fetched even though they resolve to private addresses.
    #[serde(default)]
    pub allow_hosts: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchProvider {
    Searxng,
    Brave,
    Tavily,
}

impl WebSearchConfig {
    /// This section with its unset keys taken from `fallback`.
    pub fn or(&self, fallback: &WebSearchConfig) -> WebSearchConfig {
        // Another provider's address and key are no use to this one.
        let same_provider = self.provider.is_none() || self.provider == fallback.provider;
        let inherit = |mine: &Option<String>, theirs: &Option<String>| {
            mine.clone().or_else(|| if same_provider { theirs.clone() } else { None })
        };
        WebSearchConfig {
            provider: self.provider.or(fallback.provider),
            url: inherit(&self.url, &fallback.url),
            api_key_env: inherit(&self.api_key_env, &fallback.api_key_env),
            max_results: self.max_results.or(fallback.max_results),
            timeout_secs: self.timeout_secs.or(fallback.timeout_secs),
            fetch_top: self.fetch_top.or(fallback.fetch_top),
            allow_private: self.allow_private.or(fallback.allow_private),
            allow_hosts: self.allow_hosts.clone().or_else(|| fallback.allow_hosts.clone()),
        }
    }
}

/// How model-written Python is confined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Landlock and seccomp when the kernel has Landlock, else bubblewrap when it runs here,
    /// else the tool is not offered.
    #[default]
    Auto,
    /// Landlock (filesystem, network, signals) plus a seccomp filter, applied by palaver's own
    /// `sandbox-exec` helper.
    Landlock,
    /// bubblewrap (`bwrap`) namespaces.
    Bwrap,
    /// The operator's own program (`command`), which reads the code on stdin.
    Command,
    /// The tool is not offered.
    Off,
}

/// `[code_interpreter]`: the sandbox model-written Python runs in, and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeInterpreterConfig {
    pub sandbox: SandboxMode,
    /// The interpreter (a name looked up on `PATH`, or a path); resolved once at start.
    pub python: String,
    /// The argv run for `sandbox = "command"`, in the call's work directory: it reads the code
    /// on stdin and prints one JSON object, `{"output": "…", "exit_code": 0, "limit": null}`.
    pub command: Vec<String>,
    /// Wall-clock limit of one run, in seconds.
    pub timeout_secs: u64,
    /// CPU-time limit of each process of a run, in seconds (default: the wall-clock limit).
    pub cpu_secs: Option<u64>,
    /// Address-space limit of each process, in MiB.
    pub memory_mb: u64,
    /// Processes (and threads) a run may add.
    pub max_processes: u64,
    /// Output (stdout and stderr together) kept per run; the rest is dropped and reported.
    pub max_output_bytes: usize,
    /// Largest file a run may write, and the largest file handed back, in MiB.
    pub max_file_mb: u64,
    /// Open file descriptors per process.
    pub max_open_files: u64,
    /// Runs at once; further calls wait their turn.
    pub concurrency: usize,
    /// A work directory unused for this long is removed.
    pub workdir_ttl_secs: u64,
    /// Where work directories live (default: `palaver-sandbox` in the system temp directory).
    pub workdir_root: Option<PathBuf>,
    /// The palaver executable the sandbox re-executes as its helper (`palaver sandbox-exec`);
    /// default: the running executable. For programs that embed palaver as a library.
    pub helper: Option<PathBuf>,
}

impl Default for CodeInterpreterConfig {
    fn default() -> Self {
        CodeInterpreterConfig {
            sandbox: SandboxMode::Auto,
            python: "python3".to_owned(),
            command: Vec::new(),
            timeout_secs: 30,
            cpu_secs: None,
            memory_mb: 1024,
            max_processes: 32,
            max_output_bytes: 64 * 1024,
            max_file_mb: 32,
            max_open_files: 256,
            concurrency: 2,
            workdir_ttl_secs: 3600,
            workdir_root: None,
            helper: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The `connector_id` of the `connector` tools it serves, or the built-in tool type
    /// (`web_search`, `code_interpreter`, …) it implements.
    pub id: String,
    /// The MCP server's Streamable HTTP endpoint, e.g. `http://localhost:9000/mcp`.
    pub url: String,
    /// Name of the environment variable holding a bearer key for the server.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Longest a tool call may take (default 60 s).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub url: String,
    /// Name of the environment variable holding the key (keeps secrets out of the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Model names listed by `GET /v1/models` for this upstream.
    #[serde(default)]
    pub models: Vec<String>,
    /// `mistral` or `openai`; guessed from the URL when absent.
    #[serde(default)]
    pub dialect: Option<crate::backends::openai_compat::Dialect>,
    /// Speak HTTP/2 without negotiation (h2c) to this upstream: every run shares a few
    /// multiplexed connections instead of holding one socket each.
    #[serde(default)]
    pub http2: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// An exact model name, or a prefix ending in `*`.
    pub model: String,
    /// An upstream's `name`, `echo` for the built-in model, or `mock` for the scripted one.
    pub upstream: String,
}

/// Reads and checks a `PALAVER_MOCK_SCRIPT` file; an error names the rule and the field.
pub fn mock_script(path: &std::path::Path) -> anyhow::Result<crate::domain::mock::MockScript> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let decoded = if yaml {
        // YAML is read as a JSON value first, so its errors are located like JSON's.
        let value: serde_json::Value = serde_yaml_ng::from_slice(&text)
            .map_err(|e| anyhow::anyhow!("{} (PALAVER_MOCK_SCRIPT): not YAML: {e}", path.display()))?;
        crate::error::decode_value(&[], value)
    } else {
        crate::error::decode_json(&[], &text)
    };
    let script: crate::domain::mock::MockScript = decoded.map_err(|error| {
        anyhow::anyhow!("{} (PALAVER_MOCK_SCRIPT): {}", path.display(), describe_field_errors(&error))
    })?;
    let mut errors = Vec::new();
    script.validate(&mut errors);
    if let Some(first) = errors.first() {
        anyhow::bail!("{} (PALAVER_MOCK_SCRIPT): `{}`: {}", path.display(), first.field_name(), first.msg);
    }
    Ok(script)
}

fn describe_field_errors(error: &crate::error::Error) -> String {
    match error {
        crate::error::Error::Invalid(errors) => errors
            .iter()
            .map(|e| {
                let field = e.loc.iter().map(|l| match l {
                    crate::error::Loc::Key(k) => k.clone(),
                    crate::error::Loc::Index(i) => i.to_string(),
                });
                format!("`{}`: {}", field.collect::<Vec<_>>().join("."), e.msg)
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

impl Config {
    /// Reads the TOML file if one is configured.
    pub fn file_config(&self) -> anyhow::Result<FileConfig> {
        let Some(path) = &self.config_file else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // One line, for the one-line start-up error: the message and where, without toml's
        // multi-line source snippet.
        let parsed: FileConfig = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|span| text[..span.start].matches('\n').count() + 1);
            let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            anyhow::anyhow!("parsing {}: {}{at}", path.display(), e.message().trim_end())
        })?;
        for route in &parsed.routes {
            let builtin = route.upstream == "echo" || route.upstream == "mock";
            let known = builtin || parsed.upstreams.iter().any(|u| u.name == route.upstream);
            anyhow::ensure!(known, "route for `{}` names unknown upstream `{}`", route.model, route.upstream);
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_is_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("sqlite://palaver.db"), "sqlite://palaver.db");
    }

    #[test]
    fn the_config_file_declares_upstreams_and_routes() {
        let parsed: FileConfig = toml::from_str(
            r#"
            [[upstream]]
            name = "local"
            url = "http://localhost:11434/v1"
            models = ["llama3"]

            [[route]]
            model = "llama*"
            upstream = "local"
            "#,
        )
        .unwrap();

        assert_eq!(parsed.upstreams[0].models, vec!["llama3"]);
        assert_eq!(parsed.routes[0].upstream, "local");
    }

    #[test]
    fn the_code_interpreter_section_overrides_only_the_limits_it_names() {
        let parsed: FileConfig = toml::from_str(
            r#"
            [code_interpreter]
            sandbox = "bwrap"
            timeout_secs = 5
            memory_mb = 512
            "#,
        )
        .unwrap();

        let expected = CodeInterpreterConfig {
            sandbox: SandboxMode::Bwrap,
            timeout_secs: 5,
            memory_mb: 512,
            ..CodeInterpreterConfig::default()
        };
        assert_eq!(parsed.code_interpreter, expected);
        assert_eq!(FileConfig::default().code_interpreter.sandbox, SandboxMode::Auto);
        assert!(toml::from_str::<FileConfig>("[code_interpreter]\nsandbox = \"docker\"").is_err());
    }
}
