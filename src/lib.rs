//! palaver: a self-hostable server for the Agents & Conversations API. `App::build`
//! connects the store, builds the model router and binds the listener; tests use it too.

pub mod api;
pub mod backends;
pub mod config;
pub mod connectors;
pub mod domain;
pub mod engine;
pub mod error;
pub mod store;
pub mod telemetry;

use crate::api::auth::KeyRing;
use crate::backends::ModelRouter;
use crate::config::Config;
use crate::engine::Engine;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for runs in flight to commit.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything a handler may touch: the engine, and what only HTTP needs. No generics in
/// handler signatures, and one reference count to clone: axum clones the state into
/// every extractor and middleware of every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub engine: Arc<Engine>,
    pub keys: Arc<KeyRing>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Cancelled when the server shuts down, so long-lived responses can end.
    pub shutdown: CancellationToken,
    /// Answers to `Idempotency-Key` requests being written in this process.
    pub flights: Arc<api::idempotency::Flights>,
    /// Longest a client may take to send a JSON body.
    pub body_timeout: std::time::Duration,
}

pub struct App {
    listener: TcpListener,
    limits: api::server::ConnectionLimits,
    /// `PALAVER_METRICS_ADDR`, when set.
    metrics_listener: Option<TcpListener>,
    state: AppState,
}

impl App {
    /// Connects and migrates the store, builds the backends and binds the address (port 0
    /// picks a free one; `local_addr` tells which).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let file = config.file_config()?;
        let store = store::connect(
            &config.database_url,
            store::ConnectOptions {
                max_connections: config.db_max_connections,
                migrate: true,
                sqlite_synchronous: config.sqlite_synchronous,
                acquire_timeout: std::time::Duration::from_millis(config.db_acquire_timeout_ms),
            },
        )
        .await?;
        let models = ModelRouter::from_config(&config, &file)?;
        let (blobs, blobs_described) = store::open_blobs(&file.files, &config.database_url, &store)?;
        let files = Arc::new(engine::files::Files::open(store.clone(), blobs, &file.files).await?);
        // Tools that produce files (`image_generation`) store them through the Files API.
        let connectors = connectors::Connectors::from_config(&file, Some(files.clone()))?;
        let keys = KeyRing::new(&config.api_keys);
        tracing::info!("data: {}", store::describe(&config.database_url));
        tracing::info!("files: {blobs_described}; {}", files.describe_signing());
        tracing::info!("models: {}", models.describe());
        tracing::info!("tools: {}", connectors.describe());
        match keys.key_count() {
            0 if !config.addr.ip().is_loopback() => tracing::warn!(
                addr = %config.addr,
                "auth: off (PALAVER_API_KEYS is unset): anyone who can reach this address has full access"
            ),
            0 => tracing::info!("auth: off (PALAVER_API_KEYS is unset): every request is accepted, in one workspace"),
            n => tracing::info!("auth: on, {n} API key(s), each its own workspace"),
        }
        let streams = engine::streams::RunLogs::new(
            std::time::Duration::from_secs(config.stream_retention_secs),
            store.shared_by_replicas().then(|| store.clone()),
        );
        let engine = Engine {
            store,
            models,
            connectors,
            histories: engine::history::HistoryCache::new(config.history_cache_entries),
            limits: engine::Limits { max_rounds: config.max_rounds.max(1), max_handoffs: config.max_handoffs },
            runs: TaskTracker::new(),
            agent_locks: Default::default(),
            idempotency_ttl: std::time::Duration::from_secs(config.idempotency_ttl_secs),
            streams,
            files,
        };
        let state = AppState(Arc::new(Shared {
            engine: Arc::new(engine),
            keys: Arc::new(keys),
            max_body_bytes: config.max_body_bytes,
            shutdown: CancellationToken::new(),
            flights: Default::default(),
            body_timeout: std::time::Duration::from_millis(config.client_body_timeout_ms),
        }));
        let listener = TcpListener::bind(config.addr).await?;
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        telemetry::handle();
        let limits = api::server::ConnectionLimits {
            max_connections: config.max_connections.unwrap_or_else(api::server::default_max_connections),
            header_timeout: std::time::Duration::from_millis(config.client_header_timeout_ms),
        };
        Ok(App { listener, limits, metrics_listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `PALAVER_METRICS_ADDR` listens, when set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `signal` resolves, then stops accepting, lets open requests finish
    /// and ends long-lived responses through `AppState::shutdown`.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let token = self.state.shutdown.clone();
        let engine = self.state.engine.clone();
        let router = api::router(self.state);
        if let Some(listener) = self.metrics_listener {
            tracing::info!(addr = %listener.local_addr()?, "metrics on their own address, without auth");
            let token = token.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, api::metrics::standalone().into_make_service())
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "the metrics listener failed");
                }
            });
        }
        // Histograms keep their buckets; upkeep drops what no longer changes. Expired
        // idempotency keys and files go every few minutes.
        let upkeep = token.clone();
        let keys = engine.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            let mut ticks: u64 = 0;
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        telemetry::handle().run_upkeep();
                        ticks += 1;
                        if ticks % 60 == 1 {
                            match keys.purge_keys().await {
                                Ok(0) => {}
                                Ok(purged) => tracing::info!(purged, "expired idempotency keys deleted"),
                                Err(error) => tracing::warn!(%error, "expired idempotency keys not deleted"),
                            }
                            if let Err(error) = keys.streams.purge_shared().await {
                                tracing::warn!(%error, "the events of old runs were not deleted");
                            }
                            match keys.files.purge_expired(domain::time::Timestamp::now()).await {
                                Ok(0) => {}
                                Ok(purged) => tracing::info!(purged, "expired files deleted"),
                                Err(error) => tracing::warn!(%error, "expired files not deleted"),
                            }
                        }
                    }
                    _ = upkeep.cancelled() => break,
                }
            }
        });
        // Bytes no file names (left by a crash): a sweep reads every blob's name, so it runs
        // at start-up and then seldom, on a task of its own.
        tokio::spawn({
            let (files, stop) = (engine.files.clone(), token.clone());
            async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(6 * 3600));
                loop {
                    tokio::select! {
                        _ = every.tick() => {
                            let before = domain::time::Timestamp::now().minus(engine::files::UNNAMED_BYTES_AGE);
                            match files.sweep_unnamed(before).await {
                                Ok(0) => {}
                                Ok(swept) => tracing::info!(swept, "bytes no file named deleted"),
                                Err(error) => tracing::warn!(%error, "bytes no file names not swept"),
                            }
                        }
                        _ = stop.cancelled() => break,
                    }
                }
            }
        });
        // Streamed runs' events, for resumes on other replicas (nothing to do without them).
        tokio::spawn({
            let engine = engine.clone();
            async move { engine.streams.share().await }
        });
        tracing::info!(addr = %self.listener.local_addr()?, "palaver listening");
        let shutdown = async move {
            signal.await;
            tracing::info!("shutting down");
            token.cancel();
        };
        let threads = api::server::ConnectionThreads::start(api::server::ConnectionThreads::default_count())?;
        api::server::serve(self.listener, &threads, router, self.limits, shutdown).await?;
        // Turns whose clients already left still finish and commit, within a bound (on the
        // connection threads, which stop only after this).
        engine.shut_down(SHUTDOWN_GRACE).await;
        engine.streams.flush().await;
        drop(threads);
        Ok(())
    }
}
