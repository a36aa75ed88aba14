//! Bounds on MCP sessions (2025-11-25 clients; 2026-07-28 requests are stateless): at most
//! `server.max_sessions` in all and `server.max_sessions_per_principal` per caller, each
//! closed after `server.session_idle_timeout_ms` without a request.
//!
//! rmcp creates a session when it answers an `initialize`; the gate sees the new
//! `Mcp-Session-Id` on the way out and [`Sessions::admit`]s it, closing it at once (and
//! answering 503) when a bound is hit. Every later request with that id
//! [`Sessions::touch`]es it; a sweeper closes idle ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{SessionId, SessionManager};

/// Whose sessions count together: the token's issuer and subject (all anonymous callers
/// share one key).
pub type PrincipalKey = String;

struct Open {
    owner: PrincipalKey,
    last_used: Instant,
}

/// The session registry and its bounds.
pub struct Sessions {
    open: Mutex<HashMap<String, Open>>,
    manager: Arc<LocalSessionManager>,
    max_total: usize,
    max_per_principal: usize,
    idle: Duration,
}

/// Why a new session was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionRefusal {
    /// `server.max_sessions` reached.
    Total(usize),
    /// `server.max_sessions_per_principal` reached.
    PerPrincipal(usize),
}

impl SessionRefusal {
    /// The config key of the bound.
    pub fn key(&self) -> &'static str {
        match self {
            SessionRefusal::Total(_) => "server.max_sessions",
            SessionRefusal::PerPrincipal(_) => "server.max_sessions_per_principal",
        }
    }

    /// What the 503 says.
    pub fn message(&self) -> String {
        match self {
            SessionRefusal::Total(n) => format!(
                "too many open MCP sessions: the server holds its limit of {n} (server.max_sessions); \
                 retry later, or use the stateless 2026-07-28 protocol\n"
            ),
            SessionRefusal::PerPrincipal(n) => format!(
                "too many open MCP sessions for this caller: {n} is the limit (server.max_sessions_per_principal); \
                 close one (DELETE /mcp) or wait until idle ones expire\n"
            ),
        }
    }
}

impl Sessions {
    /// A registry over rmcp's `manager` with the bounds of `[server]`.
    pub fn new(manager: Arc<LocalSessionManager>, server: &crate::config::ServerConfig) -> Self {
        Sessions {
            open: Mutex::new(HashMap::new()),
            manager,
            max_total: server.max_sessions,
            max_per_principal: server.max_sessions_per_principal,
            idle: Duration::from_millis(server.session_idle_timeout_ms),
        }
    }

    /// Registers a session rmcp just created for `owner`, or closes it and says why.
    pub async fn admit(&self, id: &str, owner: PrincipalKey) -> Result<(), SessionRefusal> {
        let refusal = {
            let mut open = self.open.lock();
            let mine = open.values().filter(|s| s.owner == owner).count();
            if open.len() >= self.max_total {
                Some(SessionRefusal::Total(self.max_total))
            } else if mine >= self.max_per_principal {
                Some(SessionRefusal::PerPrincipal(self.max_per_principal))
            } else {
                open.insert(
                    id.to_string(),
                    Open {
                        owner,
                        last_used: Instant::now(),
                    },
                );
                None
            }
        };
        match refusal {
            None => Ok(()),
            Some(why) => {
                self.close(id).await;
                Err(why)
            }
        }
    }

    /// Marks a session as used now.
    pub fn touch(&self, id: &str) {
        if let Some(s) = self.open.lock().get_mut(id) {
            s.last_used = Instant::now();
        }
    }

    /// Forgets a session the client ended.
    pub fn forget(&self, id: &str) {
        self.open.lock().remove(id);
    }

    async fn close(&self, id: &str) {
        let id: SessionId = Arc::from(id);
        if let Err(e) = self.manager.close_session(&id).await {
            tracing::debug!("closing MCP session {id}: {e}");
        }
    }

    /// Closes sessions idle past the timeout, and forgets those rmcp ended on its own.
    pub async fn sweep(&self) {
        let now = Instant::now();
        let idle: Vec<String> = {
            let open = self.open.lock();
            open.iter()
                .filter(|(_, s)| now.duration_since(s.last_used) >= self.idle)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in idle {
            self.forget(&id);
            self.close(&id).await;
        }
        let ids: Vec<String> = self.open.lock().keys().cloned().collect();
        for id in ids {
            let key: SessionId = Arc::from(id.as_str());
            if !self.manager.has_session(&key).await.unwrap_or(false) {
                self.forget(&id);
            }
        }
    }

    /// Sweeps every few seconds until `cancel`.
    pub fn spawn_sweeper(self: &Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let me = Arc::clone(self);
        let every = (me.idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => me.sweep().await,
                }
            }
        });
    }
}
