//! Streamable HTTP: MCP at `/mcp` (2026-07-28 stateless requests and 2025-11-25 sessions),
//! with Origin and Host validation, plus `/healthz` (liveness), `/readyz` (caught up) and `/metrics` (Prometheus).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio_util::sync::CancellationToken;

use super::{Freshet, ServeError};
use crate::engine::Engine;

/// The HTTP routes, ready to serve; `cancel` ends open MCP sessions.
pub fn router(engine: Arc<Engine>, cancel: CancellationToken) -> Router {
    let server = &engine.config().server;
    let mcp_config = StreamableHttpServerConfig::default()
        // Sessions for 2025-11-25 clients; 2026-07-28 requests are served statelessly anyway.
        .with_legacy_session_mode(true)
        .with_allowed_origins(server.allowed_origins.clone())
        .enforce_origin_validation()
        .with_allowed_hosts(server.allowed_hosts.clone())
        .with_cancellation_token(cancel);
    let for_sessions = Arc::clone(&engine);
    let mcp: StreamableHttpService<Freshet, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(Freshet::new(Arc::clone(&for_sessions))),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest_service("/mcp", mcp)
        .with_state(engine)
}

async fn readyz(State(engine): State<Arc<Engine>>) -> impl IntoResponse {
    if engine.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "catching up with the stream\n",
        )
    }
}

async fn metrics(State(engine): State<Arc<Engine>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        engine.render_metrics(),
    )
}

/// Serves HTTP on `server.http_addr` until `shutdown` resolves.
pub async fn serve_http(
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = engine.config().server.http_addr.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!("MCP over streamable HTTP at http://{local}/mcp");
    let cancel = CancellationToken::new();
    let app = router(engine, cancel.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await
        .map_err(ServeError::Http)
}
