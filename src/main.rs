//! The `freshet` command line: parse flags, load config, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use freshet::config::{AuthMode, Config};
use freshet::runtime::Runtime;

#[derive(Parser)]
#[command(
    name = "freshet",
    version,
    about = "MCP context server kept fresh from live Kafka streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP over streamable HTTP at /mcp (plus /healthz and /readyz).
    Serve {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Serve MCP over stdin/stdout; logs go to stderr only.
    Stdio {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and print the effective config (exit 2 on error).
    CheckConfig {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => run(&config, Transport::Http),
        Command::Stdio { config } => run(&config, Transport::Stdio),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("freshet: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr, always: on stdio, stdout belongs to the protocol.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FRESHET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn check_config(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(config) => {
            print!("{}", config.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("freshet: invalid config: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Http,
    Stdio,
}

fn run(path: &std::path::Path, transport: Transport) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("freshet: invalid config: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if transport == Transport::Http && config.auth.mode == AuthMode::Jwt {
        anyhow::bail!(
            "auth.mode = \"jwt\" is not available in this build yet; use \"none\" on loopback"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let runtime = Runtime::start(Arc::clone(&config)).context("starting the pipeline")?;
        let engine = Arc::clone(&runtime.engine);
        let served = match transport {
            Transport::Http => freshet::mcp::serve_http(engine, shutdown_signal()).await,
            Transport::Stdio => freshet::mcp::serve_stdio(engine, shutdown_signal()).await,
        };
        runtime.shutdown().await;
        served.context("serving MCP")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
