//! The `freshet` command line: parse flags, load config, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use freshet::audit::{AuditLog, Verdict};
use freshet::auth::{Authenticator, Caller, DevToken};
use freshet::config::Config;
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
    /// Serve MCP over streamable HTTP at /mcp (plus /healthz, /readyz and, with auth on,
    /// /.well-known/oauth-protected-resource).
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
    /// Validate a config file and its auth keys, and print the effective config (exit 2 on
    /// error).
    CheckConfig {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Also reach the schema registry and list the subjects the collections would read.
        #[arg(long)]
        online: bool,
    },
    /// Mint a development HS256 JWT for `auth.mode = "jwt"` and print it.
    Token {
        /// Environment variable holding the HS256 secret (as `auth.hs256_secret_env`).
        #[arg(long)]
        secret_env: String,
        /// The token's `sub`.
        #[arg(long)]
        sub: String,
        /// Readable collections, comma-separated (`*` for all); omitted: none.
        #[arg(long, value_delimiter = ',')]
        collections: Option<Vec<String>>,
        /// The caller's tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime: 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// `iss`; default: `auth.issuer` of --config.
        #[arg(long)]
        issuer: Option<String>,
        /// `aud`; default: the audience --config expects.
        #[arg(long)]
        audience: Option<String>,
        /// Config file to take the issuer, audience and claim names from.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain across FILEs in order (oldest first, e.g. `audit.jsonl.*
    /// audit.jsonl`; the lock file `audit.jsonl.lock` is skipped); exit 0 if intact, 1 at the
    /// first broken line.
    Verify {
        /// Audit files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Env var holding the chain's HMAC key (`audit.hmac_key_env`); needed for a keyed
        /// chain.
        #[arg(long)]
        key_env: Option<String>,
        /// The head checkpoint file (`audit.checkpoint_path`): detects a truncated tail, a
        /// dropped head and a re-hashed chain.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::CheckConfig { config, online } => check_config(&config, online),
        Command::Serve { config } => run(&config, Transport::Http),
        Command::Stdio { config } => run(&config, Transport::Stdio),
        Command::Token {
            secret_env,
            sub,
            collections,
            tenant,
            ttl,
            issuer,
            audience,
            config,
        } => token(TokenArgs {
            secret_env,
            sub,
            collections,
            tenant,
            ttl,
            issuer,
            audience,
            config,
        }),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    files,
                    key_env,
                    checkpoints,
                },
        } => audit_verify(&files, key_env.as_deref(), checkpoints),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("freshet: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What is logged when `FRESHET_LOG` is unset or empty: freshet's own lines (and librdkafka's,
/// which freshet words itself) at INFO, one per state change; libraries only from WARN (rmcp
/// logs every MCP request at INFO, tantivy its commits).
const DEFAULT_LOG: &str = "warn,freshet=info,librdkafka=info";

/// Logs go to stderr, always: on stdio, stdout belongs to the protocol.
fn init_tracing() {
    let filter = std::env::var("FRESHET_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn check_config(path: &std::path::Path, online: bool) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("freshet: invalid config: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // Key material too: a missing secret or unreadable JWKS file should fail here, not at
    // the first request.
    if let Err(e) = Authenticator::from_config(&config) {
        eprintln!("freshet: invalid config: {e}");
        return Ok(ExitCode::from(2));
    }
    // Registry credentials and certificates too; the registry itself only with --online.
    let registry = match freshet::registry::Registry::from_config(&config) {
        Ok(registry) => registry,
        Err(e) => {
            eprintln!("freshet: invalid config: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Err(e) = check_offline(&config) {
        eprintln!("freshet: invalid config: {e}");
        return Ok(ExitCode::from(2));
    }
    print!("{}", config.to_toml());
    if online && registry.is_none() {
        println!("# no [schema_registry] configured: nothing to reach");
    }
    if online && let Some(registry) = registry {
        match registry.report(&config) {
            Ok(report) => print!("{report}"),
            Err(e) => {
                eprintln!("freshet: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `serve` checks at start without reaching the network, so that a config that passes
/// `check-config` also starts: librdkafka's properties, each collection's embedder (a local
/// model is loaded), and the data directory.
fn check_offline(config: &Config) -> anyhow::Result<()> {
    freshet::source::client_config(&config.kafka, "check")
        .create_native_config()
        .map_err(|e| anyhow::anyhow!("kafka.properties: {e}"))?;
    let mut models = std::collections::HashMap::new();
    for (i, collection) in config.collections.iter().enumerate() {
        freshet::embed::for_collection(i, collection, &mut models).map_err(|e| match e {
            // The key too, not only the path: the path may come from a default or the env.
            freshet::embed::EmbedError::ModelDir { .. } => {
                anyhow::anyhow!("collections[{i}].embedding.model_dir: {e}")
            }
            other => anyhow::Error::new(other),
        })?;
    }
    // serve creates the data directory (and its parents); a file in the way stops it.
    let data_dir = &config.server.data_dir;
    if let Some(file) = data_dir.ancestors().find(|p| p.is_file()) {
        anyhow::bail!(
            "server.data_dir: {} cannot be created: {} is a file",
            data_dir.display(),
            file.display()
        );
    }
    Ok(())
}

struct TokenArgs {
    secret_env: String,
    sub: String,
    collections: Option<Vec<String>>,
    tenant: Option<String>,
    ttl: String,
    issuer: Option<String>,
    audience: Option<String>,
    config: Option<PathBuf>,
}

fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("freshet: invalid config: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    let issuer = args
        .issuer
        .or_else(|| config.as_ref().and_then(|c| c.auth.issuer.clone()))
        .context("no issuer: pass --issuer or --config with auth.issuer")?;
    let audience = args
        .audience
        .or_else(|| config.as_ref().map(Config::audience))
        .context("no audience: pass --audience or --config")?;
    let secret = std::env::var(&args.secret_env)
        .ok()
        .filter(|s| !s.is_empty())
        .with_context(|| format!("environment variable {} is not set", args.secret_env))?;
    let ttl_secs =
        freshet::auth::parse_ttl(&args.ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let defaults = freshet::config::AuthConfig::default();
    let auth = config.as_ref().map(|c| &c.auth).unwrap_or(&defaults);
    let dev = DevToken {
        sub: args.sub,
        issuer,
        audience,
        ttl_secs,
        collections: args.collections,
        tenant: args.tenant,
        collections_claim: auth.collections_claim.clone(),
        tenant_claim: auth.tenant_claim.clone(),
    };
    let token = freshet::auth::mint_hs256(secret.as_bytes(), &dev)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.secret_env))?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(
    files: &[PathBuf],
    key_env: Option<&str>,
    checkpoints: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let key = match key_env {
        Some(var) => Some(
            std::env::var(var)
                .map_err(|_| anyhow::anyhow!("--key-env: environment variable {var} is not set"))?
                .into_bytes(),
        ),
        None => None,
    };
    // `audit.jsonl.*` also matches the writer's lock file, which holds no lines.
    let (locks, files): (Vec<PathBuf>, Vec<PathBuf>) = files
        .iter()
        .cloned()
        .partition(|f| f.extension().is_some_and(|e| e == "lock"));
    for lock in &locks {
        eprintln!("skipped {} (the audit writer's lock file)", lock.display());
    }
    let files = files.as_slice();
    let options = freshet::audit::VerifyOptions { key, checkpoints };
    match freshet::audit::verify(files, &options).context("reading the audit files")? {
        Verdict::Intact(i) => {
            let range = match (i.first_seq, i.last_seq) {
                (Some(a), Some(b)) => format!("seq {a}..{b}"),
                _ => "no lines".into(),
            };
            let lost: u64 = i.lost.iter().map(|(a, b)| b - a + 1).sum();
            let verdict = if lost == 0 { "intact" } else { "incomplete" };
            println!(
                "{verdict}: {} lines in {} file(s), {range}",
                i.lines,
                files.len()
            );
            for (a, b) in &i.lost {
                println!("lost: seq {a}..{b} attempted but never written (audit write failures)");
            }
            if i.keyed_links > 0 {
                println!("{} links checked with the HMAC key", i.keyed_links);
            }
            if options.checkpoints.is_some() {
                println!("{} head checkpoints match the chain", i.checkpoints);
            }
            if let Some(first) = i.first_seq.filter(|s| *s > 1) {
                println!("note: the chain starts at seq {first}; earlier files were not given");
            }
            if let Some(hash) = i.last_hash {
                println!("last line hash: {hash} (keep it to detect a truncated tail later)");
            }
            Ok(if lost == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Verdict::Broken(b) => {
            println!("broken: {}:{}: {}", b.file.display(), b.line, b.what);
            Ok(ExitCode::from(1))
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Http,
    Stdio,
}

fn run(path: &std::path::Path, transport: Transport) -> anyhow::Result<ExitCode> {
    if transport == Transport::Stdio {
        // Before any thread starts: from here on only the MCP transport writes to stdout.
        freshet::mcp::reserve_stdout().context("reserving stdout for the protocol")?;
    }
    let config = match Config::load(path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("freshet: invalid config: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let auth = match Authenticator::from_config(&config) {
        Ok(a) => a.map(Arc::new),
        Err(e) => {
            eprintln!("freshet: invalid config: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if transport == Transport::Http {
        check_listeners(&config)?;
    }
    let audit = AuditLog::from_config(&config).context("opening the audit log")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(async {
        let runtime = Runtime::start(Arc::clone(&config)).context("starting the pipeline")?;
        let search = Arc::clone(&runtime.search);
        let drain = runtime.drain();
        let served = match transport {
            Transport::Http => {
                let stopping = async move {
                    shutdown_signal().await;
                    drain.run().await;
                };
                freshet::mcp::serve_http(search, auth, audit.clone(), stopping).await
            }
            Transport::Stdio => {
                let caller = Caller::stdio(&config.auth);
                freshet::mcp::serve_stdio(search, caller, audit.clone(), shutdown_signal()).await
            }
        };
        runtime.shutdown().await;
        served.context("serving MCP")
    });
    // Off the runtime: closing joins the writer thread and syncs the file.
    audit.close();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// A port another program holds is reported at once, before the pipeline starts (which can
/// wait seconds for the broker); the listeners themselves are bound later, by the server.
fn check_listeners(config: &Config) -> Result<(), freshet::mcp::ServeError> {
    let server = &config.server;
    let metrics = server
        .metrics_addr
        .iter()
        .map(|a| (a, "server.metrics_addr"));
    for (addr, key) in std::iter::once((&server.http_addr, "server.http_addr")).chain(metrics) {
        std::net::TcpListener::bind(addr.as_str()).map_err(|source| {
            freshet::mcp::ServeError::Bind {
                addr: addr.clone(),
                key,
                source,
            }
        })?;
    }
    Ok(())
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
