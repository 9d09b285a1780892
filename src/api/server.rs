//! The HTTP server loop: hyper's HTTP/1 and HTTP/2 on each accepted connection, with the
//! bounds an abusive or broken client must not get around. A connection past
//! `PALAVER_MAX_CONNECTIONS` is answered 503 and closed at once (a flood costs no more
//! than its accepts, never the file descriptors of the clients being served); a client
//! that does not finish sending its request headers within the header timeout is cut.
//! (Bodies have their own deadline where they are read: `extract::RawBody`.)

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How many connections are served at once, and how long a client may take to send its
/// request headers.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// The open-file limit less what the rest of the process needs (database, upstreams,
/// files): a flood then meets the 503 before the process runs out of descriptors.
pub fn default_max_connections() -> usize {
    let soft =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft.saturating_sub(256)).unwrap_or(usize::MAX).max(64)
}

/// What a connection past the limit reads before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
connection: close\r\ncontent-length: 142\r\n\r\n\
{\"object\":\"error\",\"message\":\"The server has too many open connections; retry shortly.\",\"type\":\"server_error\",\"param\":null,\"code\":\"overloaded\"}";

/// Threads that serve the accepted connections, each running a runtime of its own: all the
/// work of a connection's requests — the handler, the store calls, the upstream call and
/// its connection, the tasks a turn spawns — stays on one thread. On the shared runtime its
/// two workers took turns on every turn: 4.9 voluntary context switches per turn at c=1,
/// against the 2 a turn needs (a wait for the request, one for the upstream).
///
/// A connection goes to the thread serving the fewest. The threads stop once this is
/// dropped (after the server's shut-down has let the turns in flight finish).
pub struct ConnectionThreads {
    threads: Vec<ConnectionThread>,
}

struct ConnectionThread {
    jobs: tokio::sync::mpsc::UnboundedSender<Box<dyn FnOnce() + Send>>,
    /// Connections it serves now.
    open: Arc<AtomicUsize>,
}

impl ConnectionThreads {
    /// `count` threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let threads = (0..count.max(1))
            .map(|i| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Box<dyn FnOnce() + Send>>();
                std::thread::Builder::new().name(format!("palaver-http-{i}")).spawn(move || {
                    runtime.block_on(async {
                        while let Some(job) = queue.recv().await {
                            job();
                        }
                    });
                })?;
                Ok(ConnectionThread { jobs, open: Arc::default() })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(ConnectionThreads { threads })
    }

    /// As many as the runtime has workers: `TOKIO_WORKER_THREADS`, else one per core.
    pub fn default_count() -> usize {
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|n| n.parse().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1)
    }

    /// Runs the task `serve` makes on the thread serving the fewest connections.
    fn spawn<F, Fut>(&self, serve: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self.threads.iter().min_by_key(|t| t.open.load(Ordering::Relaxed)) else { return };
        let served = Served::on(thread);
        let job = Box::new(move || {
            tokio::spawn(async move {
                let _served = served;
                serve().await;
            });
        });
        // Only fails once the thread is gone, after a panic in its runtime: the connection
        // is dropped, as a task that panicked would drop it.
        let _ = thread.jobs.send(job);
    }
}

/// Counts a connection on its thread for as long as it lives, even when its task panics.
struct Served(Arc<AtomicUsize>);

impl Served {
    fn on(thread: &ConnectionThread) -> Self {
        thread.open.fetch_add(1, Ordering::Relaxed);
        Served(thread.open.clone())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener`, its connections on `threads`, until `signal`, then stops
/// accepting and waits for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    threads: &ConnectionThreads,
    router: Router,
    limits: ConnectionLimits,
    signal: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut signal = std::pin::pin!(signal);
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before accept: wait a
                    // moment rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            crate::telemetry::connection_refused();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        // Without TCP_NODELAY, small SSE frames wait for the client's delayed ACK (~40 ms).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
        // Registered with the runtime of the thread that serves it from now on.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot hand a connection over to its thread");
                continue;
            }
        };
        let (builder, router, watcher) = (builder.clone(), router.clone(), graceful.watcher());
        threads.spawn(move || async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot serve a connection");
                    return;
                }
            };
            let service = TowerToHyperService::new(router);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each connection is served on one of the threads, the one serving the fewest.
    #[tokio::test]
    async fn connections_go_to_the_thread_serving_the_fewest() {
        let threads = ConnectionThreads::start(2).unwrap();
        let (served_on, mut names) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let (served_on, mut released) = (served_on.clone(), released.clone());
            threads.spawn(move || async move {
                served_on.send(std::thread::current().name().unwrap_or_default().to_owned()).unwrap();
                let _ = released.wait_for(|released| *released).await;
            });
        }

        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(names.recv().await.unwrap());
        }

        seen.sort();
        assert_eq!(seen, ["palaver-http-0", "palaver-http-0", "palaver-http-1", "palaver-http-1"]);
        release.send(true).unwrap();
    }

    /// A connection whose task panicked no longer counts against its thread.
    #[tokio::test]
    async fn a_connection_that_panicked_no_longer_counts() {
        let threads = ConnectionThreads::start(1).unwrap();
        threads.spawn(|| async { panic!("a connection's task panicked") });

        let open = &threads.threads[0].open;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while open.load(Ordering::Relaxed) != 0 {
            assert!(std::time::Instant::now() < deadline, "the panicked connection still counts");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn the_busy_answer_is_a_well_formed_response_with_the_error_envelope() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().trim().parse().unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["object"], "error");
        assert_eq!(json["code"], "overloaded");
    }
}
