//! The `palaver` binary: `palaver serve` (the default), `palaver migrate`, `palaver health`,
//! and the hidden `palaver sandbox-exec` the code_interpreter sandbox re-executes.

use clap::{Parser, Subcommand};
use palaver::config::{Config, LogFormat};
use palaver::telemetry::traces::Traces;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

// mimalloc instead of glibc's malloc: ~20% less CPU per turn in `cargo bench --bench turns`
// (a turn allocates and frees many small buffers across two worker threads). Its C build
// flags are in .cargo/config.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "palaver", version, about = "A self-hostable server for the Agents & Conversations API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Exit 0 when the server at `--addr` answers `GET /health` (for container healthchecks).
    Health,
    /// Internal: confines itself and runs a code_interpreter program (started by palaver).
    #[command(hide = true)]
    SandboxExec(palaver::connectors::sandbox::HelperArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The sandbox helper starts no runtime and no logger: it confines its one thread and
    // becomes the interpreter.
    if let Some(Command::SandboxExec(args)) = cli.command {
        return palaver::connectors::sandbox::helper::main(args);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Traces only for the server: `health` and `migrate` have nothing to trace.
    let traces = match cli.command {
        None | Some(Command::Serve) => Traces::from_env(runtime.handle().clone()),
        _ => Ok(None),
    };
    let ran = traces.and_then(|traces| {
        init_logging(cli.config.log_format, traces.as_ref());
        let ran = runtime.block_on(run(cli));
        // While the runtime still runs the exports: a short run delivers its spans too.
        if let Some(traces) = traces {
            traces.shut_down();
        }
        ran
    });
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // An operator's mistake (a wrong URL, a missing database, a bad config file) is one
        // line with its causes, not a backtrace.
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, traces: Option<&Traces>) {
    // `RUST_LOG` as `target=level` pairs (`info,sqlx=warn`); tracing-subscriber's EnvFilter
    // would add span-field filters, and a regex engine to the build, that palaver needs not.
    let default_filter = || Targets::new().with_default(LevelFilter::INFO).with_target("sqlx", LevelFilter::WARN);
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => value.parse::<Targets>().unwrap_or_else(|error| {
            eprintln!("warning: ignoring RUST_LOG ({error}); logging at `info`");
            default_filter()
        }),
        _ => default_filter(),
    };
    // Colours only on a terminal: piped into docker or journald logs, escape codes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none();
    match traces {
        // `RUST_LOG` filters everything: a span below its level costs a cached check.
        None => {
            let registry = tracing_subscriber::registry().with(filter);
            match format {
                LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_ansi(ansi)).init(),
                LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json()).init(),
            }
        }
        // Each layer its own filter: the exporter sees palaver's DEBUG spans, the log does not.
        Some(traces) => {
            let registry = tracing_subscriber::registry().with(traces.layer(filter.clone()));
            match format {
                LogFormat::Text => {
                    registry.with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_filter(filter)).init()
                }
                LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json().with_filter(filter)).init(),
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            tracing::debug!(config = ?cli.config, "starting");
            let app = palaver::App::build(cli.config).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Health => check_health(cli.config.addr).await,
        Command::SandboxExec(_) => unreachable!("handled before the runtime starts"),
        Command::Migrate => {
            let options = palaver::store::ConnectOptions {
                sqlite_synchronous: cli.config.sqlite_synchronous,
                ..Default::default()
            };
            palaver::store::connect(&cli.config.database_url, options).await?;
            tracing::info!(database = %palaver::config::redact_url(&cli.config.database_url), "migrations applied");
            Ok(())
        }
    }
}

async fn check_health(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    // A server bound to all interfaces is reached on loopback.
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let url = format!("http://{host}:{}/health", addr.port());
    let response = reqwest::Client::new().get(&url).timeout(std::time::Duration::from_secs(3)).send().await?;
    anyhow::ensure!(response.status().is_success(), "{url} answered {}", response.status());
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (`docker stop`).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
