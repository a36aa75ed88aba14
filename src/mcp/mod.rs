//! The MCP face of freshet: four read-only tools and one resource template, served over
//! stdio ([`serve_stdio`]) and streamable HTTP ([`serve_http`], behind bearer-token auth).
//! Every tool call is written to the audit log with its caller and the documents returned.
//!
//! This is the only module that turns engine errors into MCP errors: a bad argument or an
//! unknown collection becomes a tool result with `isError: true` and a message the agent can
//! act on; internal failures are logged and reported without details.

mod guard;
mod http;
mod listen;
mod notify;
mod sessions;
mod stdio;
mod subscribe;
mod tools;

use std::future::Future;
use std::sync::Arc;

use rmcp::ServiceExt;

use crate::audit::{AuditLog, Transport};
use crate::auth::Caller;
use crate::engine::Search;

pub use http::{router, serve_http};
pub use stdio::reserve_stdout;
pub use subscribe::{CHANGES_TEMPLATE, ResourceUri};
pub use tools::{
    Freshet, FreshnessArgs, GetDocumentArgs, ListArgs, SearchArgs, parse_document_uri,
};

/// Errors of the transports.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind. (The OS error is the `source`, shown after this message
    /// by whoever prints the chain; repeating it here would print it twice.)
    #[error("cannot listen on {addr} ({key})")]
    Bind {
        /// The address that was configured.
        addr: String,
        /// The config key it came from.
        key: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
    /// The MCP session over stdio failed.
    #[error("MCP over stdio: {0}")]
    Stdio(String),
}

/// Serves MCP on stdin/stdout until the client closes stdin or `shutdown` resolves. Every
/// call is made as `caller` (from `[auth.stdio]`) and recorded in `audit`. Call
/// [`reserve_stdout`] first, so that nothing but the protocol reaches stdout.
pub async fn serve_stdio(
    search: Arc<Search>,
    caller: Caller,
    audit: AuditLog,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let service = Freshet::new(search)
        .with_stdio_caller(caller)
        .with_audit(audit, Transport::Stdio)
        .serve((tokio::io::stdin(), stdio::protocol_out()))
        .await
        .map_err(|e| ServeError::Stdio(e.to_string()))?;
    let cancel = service.cancellation_token();
    tokio::select! {
        done = service.waiting() => {
            done.map_err(|e| ServeError::Stdio(e.to_string()))?;
        }
        _ = shutdown => cancel.cancel(),
    }
    Ok(())
}
