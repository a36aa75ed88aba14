//! MCP logging, used for one thing: telling a client that opted in that an answer came from
//! a replica still catching up with the stream. Clients opt in with `logging/setLevel`
//! (2025-11-25 sessions) or per request with `_meta["io.modelcontextprotocol/logLevel"]`
//! (2026-07-28); without either, nothing is sent.
// MCP logging is deprecated by SEP-2577 but still what 2025-11-25 clients use.
#![allow(deprecated)]

use std::sync::Arc;

use parking_lot::Mutex;
use rmcp::RoleServer;
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::RequestContext;
use serde_json::json;

use crate::auth::Access;
use crate::engine::Search;

/// The level a session asked for with `logging/setLevel`; shared by the session's clones.
#[derive(Clone, Debug, Default)]
pub(super) struct SessionLevel(Arc<Mutex<Option<LoggingLevel>>>);

impl SessionLevel {
    pub(super) fn set(&self, level: LoggingLevel) {
        *self.0.lock() = Some(level);
    }

    /// The level in force for this request: its own `_meta` opt-in, else the session's.
    fn for_request(&self, ctx: &RequestContext<RoleServer>) -> Option<LoggingLevel> {
        ctx.meta.log_level().or(*self.0.lock())
    }
}

fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// Sends a `warning` notification with the catch-up progress of the collections `access`
/// may read when the replica is not ready and the client asked for warnings.
pub(super) async fn warn_if_catching_up(
    search: &Search,
    level: &SessionLevel,
    access: &Access,
    ctx: &RequestContext<RoleServer>,
) {
    if search.freshness().is_ready() {
        return;
    }
    let Some(wanted) = level.for_request(ctx) else {
        return;
    };
    if severity(wanted) > severity(LoggingLevel::Warning) {
        return;
    }
    let collections: Vec<_> = search
        .catalog()
        .collections()
        .iter()
        .filter(|c| access.may_read(c.name()))
        .filter_map(|c| {
            let info = search.catch_up_info(c)?;
            Some(json!({"collection": c.name(), "catch_up": info}))
        })
        .collect();
    let data = json!({
        "message": "freshet is still catching up with the stream: answers may miss recent changes",
        "collections": collections,
    });
    let note =
        LoggingMessageNotificationParam::new(LoggingLevel::Warning, data).with_logger("freshet");
    // A client that went away is not an error worth more than a debug line.
    if let Err(e) = ctx.peer.notify_logging_message(note).await {
        tracing::debug!("could not send a logging notification: {e}");
    }
}
