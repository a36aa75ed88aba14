//! Streamable HTTP: MCP at `/mcp` (2026-07-28 stateless requests and 2025-11-25 sessions),
//! plus `/healthz` (liveness), `/readyz` (caught up, audit writable), `/metrics`
//! (Prometheus) and `/.well-known/oauth-protected-resource[/mcp]` (RFC 9728 metadata, when
//! auth is on).
//!
//! Every route sits behind [`guard::guard`] (Host and Origin allow-lists, head and body size
//! bounds); the accept loop ([`listen::serve`]) bounds connections and header-read time.
//! `/metrics` is served on `server.metrics_addr` when that is set (no auth: keep it on
//! loopback or a private network), else on `http_addr` behind the bearer token when auth is
//! on, for tokens that may read every collection (its series name them all).
//!
//! rmcp has no server-side auth, so [`gate`] stands in front of `/mcp`: it verifies the
//! token, answers 401 with the MCP challenge when there is none or it is bad, and otherwise
//! puts the caller's [`Access`] and [`Principal`] into the request's extensions, where the
//! tools find them (rmcp passes the request's `http::request::Parts` on to every handler).
//! It also keeps the session bounds ([`Sessions`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio_util::sync::CancellationToken;

use super::guard::{self, Guard};
use super::listen::{self, Limits};
use super::sessions::Sessions;
use super::{Freshet, ServeError};
use crate::audit::{self, AuditLog, Entry, HttpRequest, Outcome, RequestId, Transport};
use crate::auth::Access;
use crate::auth::{Authenticator, Caller, Principal, Rejection};
use crate::engine::Search;
use crate::time::{now_ms, rfc3339_ms};

/// What the `/mcp` gate needs.
#[derive(Clone)]
struct Gate {
    /// `None` when `auth.mode = "none"` (loopback only): every caller is anonymous.
    auth: Option<Arc<Authenticator>>,
    audit: AuditLog,
    /// For the auth-rejection counter.
    search: Arc<Search>,
    sessions: Arc<Sessions>,
}

/// Header of the MCP session id (rmcp's spelling; HTTP header names are case-insensitive).
const SESSION_HEADER: &str = "mcp-session-id";

/// What `/metrics` and `/readyz` on the main listener need.
#[derive(Clone)]
struct Status {
    search: Arc<Search>,
    audit: AuditLog,
    /// Set when `/metrics` needs a bearer token (auth on, no `metrics_addr`).
    auth: Option<Arc<Authenticator>>,
}

/// The HTTP routes, ready to serve; `cancel` ends open MCP sessions and stops the session
/// sweeper.
pub fn router(
    search: Arc<Search>,
    auth: Option<Arc<Authenticator>>,
    audit: AuditLog,
    cancel: CancellationToken,
) -> Router {
    let server = &search.config().server;
    let mcp_config = StreamableHttpServerConfig::default()
        // Sessions for 2025-11-25 clients; 2026-07-28 requests are served statelessly anyway.
        .with_legacy_session_mode(true)
        .with_allowed_origins(server.allowed_origins.clone())
        .enforce_origin_validation()
        .with_allowed_hosts(server.allowed_hosts.clone())
        .with_cancellation_token(cancel.clone());
    let for_sessions = Arc::clone(&search);
    let session_audit = audit.clone();
    let mut manager = LocalSessionManager::default();
    // rmcp's own idle expiry as a second net under the sweeper's.
    manager.session_config.keep_alive = Some(Duration::from_millis(
        server.session_idle_timeout_ms.saturating_mul(2),
    ));
    let manager = Arc::new(manager);
    let sessions = Arc::new(Sessions::new(Arc::clone(&manager), server));
    sessions.spawn_sweeper(cancel);
    let mcp: StreamableHttpService<Freshet, LocalSessionManager> = StreamableHttpService::new(
        move || {
            Ok(Freshet::new(Arc::clone(&for_sessions))
                .with_audit(session_audit.clone(), Transport::Http)
                // Only the gate grants access on HTTP; a request it did not see reads nothing.
                .with_stdio_caller(Caller {
                    principal: Principal::default(),
                    access: Access::none(),
                }))
        },
        manager,
        mcp_config,
    );
    let gate_state = Gate {
        auth: auth.clone(),
        audit: audit.clone(),
        search: Arc::clone(&search),
        sessions,
    };
    let mcp_routes = Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(gate_state, gate));
    let guard_audit = audit.clone();
    let shard_audit = audit.clone();
    let status = Status {
        search: Arc::clone(&search),
        audit,
        auth: auth.clone(),
    };
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if server.metrics_addr.is_none() {
        app = app.route("/metrics", get(metrics));
    }
    let mut app = app.with_state(status).merge(mcp_routes);
    if let Some(auth) = auth {
        let metadata = auth.resource_metadata();
        let serve = move || {
            let body = metadata.clone();
            async move { axum::Json(body) }
        };
        app = app
            .route("/.well-known/oauth-protected-resource", get(serve.clone()))
            .route("/.well-known/oauth-protected-resource/mcp", get(serve));
    }
    let app = app.layer(middleware::from_fn_with_state(
        Guard::new(server, Some(Arc::clone(&search))).with_audit(guard_audit),
        guard::guard,
    ));
    match search.cluster() {
        // Node-to-node calls authenticate with the cluster key, not a caller's token.
        Some(cluster) => app.merge(crate::cluster::http::routes(
            Arc::clone(&search),
            Arc::clone(cluster),
            shard_audit,
        )),
        None => app,
    }
}

/// `/metrics` alone, for `server.metrics_addr` (no auth; Host still checked).
fn metrics_router(search: Arc<Search>, audit: AuditLog) -> Router {
    let server = &search.config().server;
    let guard = Guard::new(server, Some(Arc::clone(&search)));
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Status {
            search,
            audit,
            auth: None,
        })
        .layer(middleware::from_fn_with_state(guard, guard::guard))
}

async fn metrics(State(status): State<Status>, req: Request) -> Response {
    if let Some(auth) = &status.auth {
        // The series name every collection and topic: only a caller who may read them all
        // gets them.
        match bearer(req.headers()).and_then(|token| auth.verify(token)) {
            Ok(caller) if caller.access.collections.is_none() => {}
            Ok(_) => {
                return (
                    StatusCode::FORBIDDEN,
                    "/metrics needs a token that may read every collection\n",
                )
                    .into_response();
            }
            Err(rejection) => {
                status
                    .search
                    .metrics()
                    .count_auth_rejection(rejection.kind());
                return unauthorized(auth, &rejection, &audit::new_request_id());
            }
        }
    }
    let mut body = status.search.render_metrics();
    status.audit.render_metrics(&mut body);
    if let Some(dead_letters) = status.search.dead_letters() {
        dead_letters.render_metrics(&mut body);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn readyz(State(status): State<Status>) -> impl IntoResponse {
    let search = &status.search;
    let (code, mut body) = if search.freshness().is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            String::from("shutting down: still answering until server.shutdown_drain_ms ends\n"),
        )
    } else if let Some(why) = status.audit.unhealthy() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
    } else if search.freshness().is_ready() {
        (StatusCode::OK, String::from("ready\n"))
    } else if let Some(why) = crate::source::broker_health().describe() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            String::from("catching up with the stream\n"),
        )
    };
    // Answers are unaffected, so readiness is too; but the operator reading this must know.
    if code == StatusCode::OK
        && let Some(why) = crate::source::broker_health().describe()
    {
        body.push_str(&format!("warning: {why} (answers say caught_up: false)\n"));
    }
    if let Some(f) = search.metrics().storage.failure() {
        let what = if f.disk_full { "disk full" } else { "error" };
        body.push_str(&format!(
            "warning: checkpoints failing ({what}, {} attempts): {}\n",
            f.attempts, f.error
        ));
    }
    (code, body)
}

/// The bearer token of the `Authorization` header. Only the header counts: a token in the
/// query string would end up in proxy and access logs, so it is never looked at.
fn bearer(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match headers.contains_key(header::AUTHORIZATION) {
            true => Err(Rejection::Invalid(
                "more than one Authorization header".into(),
            )),
            false => Err(Rejection::Missing),
        };
    };
    let value = value
        .to_str()
        .map_err(|_| Rejection::Invalid("Authorization header is not ASCII".into()))?;
    match value.trim().split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Rejection::Invalid(
            "Authorization must be `Bearer <token>`".into(),
        )),
    }
}

/// Authenticates every `/mcp` request and audits the ones refused (here or by rmcp).
async fn gate(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let time = rfc3339_ms(now_ms());
    let request_id = audit::new_request_id();
    let http = HttpRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    };
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let rejected = |principal: Option<Principal>, status: StatusCode, why: String| Entry {
        time: time.clone(),
        request_id: request_id.clone(),
        transport: Transport::Http,
        principal,
        client: user_agent.clone(),
        http: Some(http.clone()),
        tool: None,
        arguments: None,
        results: Vec::new(),
        latency_ms: audit::millis(started.elapsed()),
        outcome: Outcome::Rejected,
        error: Some(why),
        status: Some(status.as_u16()),
    };
    let caller = match &gate.auth {
        None => Caller::anonymous(),
        Some(auth) => match bearer(req.headers()).and_then(|token| auth.verify(token)) {
            Ok(caller) => caller,
            Err(rejection) => {
                let why = rejection.to_string();
                gate.search.metrics().count_auth_rejection(rejection.kind());
                gate.audit
                    .record(rejected(None, StatusCode::UNAUTHORIZED, why));
                return unauthorized(auth, &rejection, &request_id);
            }
        },
    };
    let principal = (caller.principal != Principal::default()).then(|| caller.principal.clone());
    let owner = format!(
        "{}\u{0}{}",
        caller.principal.iss.as_deref().unwrap_or_default(),
        caller.principal.sub.as_deref().unwrap_or_default()
    );
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    if let Some(id) = &session {
        gate.sessions.touch(id);
    }
    let ending_session = req.method() == axum::http::Method::DELETE;
    req.extensions_mut().insert(caller.access);
    req.extensions_mut().insert(caller.principal);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let mut response = next.run(req).await;
    match (&session, response.headers().get(SESSION_HEADER)) {
        (None, Some(created)) => {
            let created = created.to_str().unwrap_or_default().to_string();
            if let Err(refusal) = gate.sessions.admit(&created, owner).await {
                gate.search.metrics().count_limit_hit(refusal.key());
                let why = refusal.message();
                gate.audit.record(rejected(
                    principal,
                    StatusCode::SERVICE_UNAVAILABLE,
                    why.trim_end().to_string(),
                ));
                let mut refused = (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    refused.headers_mut().insert("x-request-id", v);
                }
                return refused;
            }
        }
        (Some(id), _) if ending_session && response.status().is_success() => {
            gate.sessions.forget(id);
        }
        _ => {}
    }
    let status = response.status();
    if status.is_client_error() {
        // rmcp's refusals: foreign Origin or Host (403), unknown session (404), bad headers.
        let why = match status {
            StatusCode::FORBIDDEN => "Origin or Host not allowed",
            StatusCode::NOT_FOUND => "unknown MCP session",
            other => other.canonical_reason().unwrap_or("refused"),
        };
        gate.audit
            .record(rejected(principal, status, why.to_string()));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// 401 with the MCP authorization challenge (RFC 6750 + RFC 9728 `resource_metadata`).
fn unauthorized(auth: &Authenticator, rejection: &Rejection, request_id: &str) -> Response {
    let (error, description) = match rejection {
        Rejection::Missing => ("unauthorized", "a bearer token is required".to_string()),
        Rejection::Invalid(why) => ("invalid_token", why.clone()),
    };
    let body = axum::Json(serde_json::json!({
        "error": error,
        "error_description": description,
    }));
    let mut response = (StatusCode::UNAUTHORIZED, body).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&auth.challenge(rejection)) {
        headers.insert(header::WWW_AUTHENTICATE, v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    response
}

/// Serves HTTP on `server.http_addr` (and `/metrics` on `server.metrics_addr`, when set)
/// until `shutdown` resolves.
pub async fn serve_http(
    search: Arc<Search>,
    auth: Option<Arc<Authenticator>>,
    audit: AuditLog,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let server = search.config().server.clone();
    let listener = bind(&server.http_addr, "server.http_addr").await?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    match &auth {
        Some(a) => tracing::info!(
            "MCP over streamable HTTP at http://{local}/mcp (bearer JWT; resource {})",
            a.resource()
        ),
        None => tracing::info!("MCP over streamable HTTP at http://{local}/mcp (no auth)"),
    }
    let cancel = CancellationToken::new();
    let limits = Limits::from_config(&server);
    if let Some(addr) = &server.metrics_addr {
        let metrics_listener = bind(addr, "server.metrics_addr").await?;
        tracing::info!(
            "Prometheus metrics at http://{}/metrics",
            metrics_listener.local_addr().map_err(ServeError::Http)?
        );
        let app = metrics_router(Arc::clone(&search), audit.clone());
        let stop = cancel.clone();
        tokio::spawn(async move {
            let done = listen::serve(
                metrics_listener,
                app,
                limits,
                async move { stop.cancelled().await },
                || {},
            )
            .await;
            if let Err(error) = done {
                tracing::error!(%error, "the metrics listener failed");
            }
        });
    }
    let app = router(Arc::clone(&search), auth, audit, cancel.clone());
    let counted = Arc::clone(&search);
    listen::serve(
        listener,
        app,
        limits,
        async move {
            shutdown.await;
            cancel.cancel();
        },
        move || counted.metrics().count_limit_hit("server.max_connections"),
    )
    .await
    .map_err(ServeError::Http)
}

async fn bind(addr: &str, key: &'static str) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_string(),
            key,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens_come_only_from_one_authorization_header() {
        assert_eq!(bearer(&headers(&[])), Err(Rejection::Missing));
        assert_eq!(bearer(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer(&headers(&["bearer  abc "])), Ok("abc"));
        for bad in [
            &["Basic dXNlcjpwdw=="][..],
            &["Bearer"],
            &["Bearer "],
            &["Bearer a", "Bearer b"],
        ] {
            assert!(
                matches!(bearer(&headers(bad)), Err(Rejection::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
