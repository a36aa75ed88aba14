//! The HTTP accept loop, with the bounds axum's own `serve` lacks: a cap on open
//! connections (`server.max_connections`; past it a connection is answered 503 and
//! closed), and a deadline for each request head (`server.header_read_timeout_ms`), which
//! for HTTP/1.1 also closes a keep-alive connection left idle that long. HTTP/2
//! connections are pinged and closed when the peer stops answering.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;

/// How long open connections get to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The bounds of the accept loop, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `server.max_connections`.
    pub max_connections: usize,
    /// `server.header_read_timeout_ms`.
    pub header_read_timeout: Duration,
    /// `server.max_header_bytes`: hyper's own read buffer is sized well above it, so the
    /// guard (which says which limit was hit) sees oversized heads first.
    pub max_header_bytes: usize,
}

impl Limits {
    /// The limits configured in `[server]`.
    pub fn from_config(server: &ServerConfig) -> Limits {
        Limits {
            max_connections: server.max_connections,
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            max_header_bytes: server.max_header_bytes,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// for a while. `on_refused` is called for every connection turned away at the cap.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    on_refused: impl Fn() + Send + Sync + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let closing = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written in several small pieces (headers, SSE event, end of
        // stream): with Nagle's algorithm on, each piece after the first waits for the
        // client's delayed ACK (~40 ms on Linux).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on an accepted connection");
        }
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            on_refused();
            tracker.spawn(turn_away(stream, limits.max_connections));
            continue;
        };
        let app = app.clone();
        let closing = closing.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size((limits.max_header_bytes * 4).max(64 * 1024));
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(limits.header_read_timeout))
                .keep_alive_timeout(limits.header_read_timeout)
                .max_header_list_size(
                    u32::try_from(limits.max_header_bytes * 4).unwrap_or(u32::MAX),
                );
            let service = TowerToHyperService::new(app);
            let mut conn =
                pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(error) = done {
                        tracing::debug!(%error, "HTTP connection ended with an error");
                    }
                    return;
                }
                () = closing.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            if let Err(error) = conn.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} HTTP connections still open {} s after shutdown began; closing them",
            tracker.len(),
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// Answers a connection over the cap with a 503 that names the limit, then closes it.
async fn turn_away(mut stream: tokio::net::TcpStream, max: usize) {
    let body = format!(
        "too many open connections: the server holds its limit of {max} (server.max_connections); retry later\n"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    // A peer that does not read gets no more than a second of our time.
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
