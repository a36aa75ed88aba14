//! The checks every HTTP route gets before anything else: the `Host` header must be one of
//! `server.allowed_hosts` and a browser's `Origin` one of `server.allowed_origins` (DNS
//! rebinding and cross-origin protection, which rmcp applies to `/mcp` only), the request
//! head must fit `server.max_header_bytes` and a declared body `server.max_request_bytes`.
//! Each refusal says which setting refused it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::audit::{self, AuditLog, Entry, HttpRequest, Outcome, Transport};
use crate::engine::Search;
use crate::time::{now_ms, rfc3339_ms};

/// What the guard checks against, parsed once from `[server]`.
#[derive(Clone)]
pub struct Guard {
    hosts: Vec<Authority>,
    origins: Vec<AllowedOrigin>,
    max_header_bytes: usize,
    max_request_bytes: usize,
    search: Option<Arc<Search>>,
    /// Refused `/mcp` requests are audited like the gate's own refusals.
    audit: Option<AuditLog>,
}

/// A host with an optional port, lowercase, IPv6 without brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PortRule {
    /// `:*`, or no port in the entry.
    Any,
    Exact(u16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct AllowedOrigin {
    scheme: String,
    host: String,
    port: PortRule,
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

fn parse_authority(text: &str) -> Option<Authority> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match http::uri::Authority::try_from(text) {
        Ok(a) => Some(Authority {
            host: normalize_host(a.host()),
            port: a.port_u16(),
        }),
        // A bare IPv6 address (`::1`) is not an authority.
        Err(_) => Some(Authority {
            host: normalize_host(text),
            port: None,
        }),
    }
}

fn parse_origin(text: &str) -> Option<(String, Authority)> {
    let uri = Uri::try_from(text.trim()).ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    Some((
        scheme,
        Authority {
            host: normalize_host(authority.host()),
            port: authority.port_u16(),
        },
    ))
}

fn parse_allowed_origin(text: &str) -> Option<AllowedOrigin> {
    let (base, any_port) = match text.trim().strip_suffix(":*") {
        Some(base) => (base, true),
        None => (text.trim(), false),
    };
    let (scheme, authority) = parse_origin(base)?;
    Some(AllowedOrigin {
        scheme,
        host: authority.host,
        port: match authority.port {
            Some(p) if !any_port => PortRule::Exact(p),
            _ => PortRule::Any,
        },
    })
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Why a request was refused, and the answer that says so.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 403: Host not allowed (or missing).
    Host(String),
    /// 403: Origin not allowed.
    Origin(String),
    /// 431: request head too large.
    Headers(usize, usize),
    /// 413: declared body too large.
    Body(usize, usize),
}

impl Refusal {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Host(_) | Refusal::Origin(_) => StatusCode::FORBIDDEN,
            Refusal::Headers(..) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::Body(..) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The config key whose bound was hit.
    pub fn key(&self) -> &'static str {
        match self {
            Refusal::Host(_) => "server.allowed_hosts",
            Refusal::Origin(_) => "server.allowed_origins",
            Refusal::Headers(..) => "server.max_header_bytes",
            Refusal::Body(..) => "server.max_request_bytes",
        }
    }

    /// The message of the answer.
    pub fn message(&self) -> String {
        match self {
            Refusal::Host(host) => {
                format!("Host `{host}` is not allowed (server.allowed_hosts)\n")
            }
            Refusal::Origin(origin) => {
                format!("Origin `{origin}` is not allowed (server.allowed_origins)\n")
            }
            Refusal::Headers(size, max) => format!(
                "request headers are {size} bytes, more than the limit of {max} (server.max_header_bytes)\n"
            ),
            Refusal::Body(size, max) => format!(
                "request body is {size} bytes, more than the limit of {max} (server.max_request_bytes)\n"
            ),
        }
    }
}

impl Guard {
    /// The guard for `[server]`; `search` (when given) counts refusals in its metrics.
    pub fn new(server: &crate::config::ServerConfig, search: Option<Arc<Search>>) -> Guard {
        Guard {
            hosts: server
                .allowed_hosts
                .iter()
                .filter_map(|h| parse_authority(h))
                .collect(),
            origins: server
                .allowed_origins
                .iter()
                .filter_map(|o| parse_allowed_origin(o))
                .collect(),
            max_header_bytes: server.max_header_bytes,
            max_request_bytes: server.max_request_bytes,
            search,
            audit: None,
        }
    }

    /// Also records refused `/mcp` requests in `audit`.
    pub fn with_audit(mut self, audit: AuditLog) -> Guard {
        self.audit = Some(audit);
        self
    }

    /// Checks one request's head; `Ok` when it may go on.
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        let head_bytes: usize = uri.to_string().len()
            + headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if head_bytes > self.max_header_bytes {
            return Err(Refusal::Headers(head_bytes, self.max_header_bytes));
        }
        let host_text = match headers.get(header::HOST) {
            Some(v) => v.to_str().unwrap_or("(not ASCII)").to_string(),
            // HTTP/2 carries it in `:authority`.
            None => uri.authority().map(|a| a.to_string()).unwrap_or_default(),
        };
        let host_ok = parse_authority(&host_text).is_some_and(|host| {
            self.hosts.is_empty()
                || self.hosts.iter().any(|allowed| {
                    allowed.host == host.host && allowed.port.is_none_or(|p| host.port == Some(p))
                })
        });
        if !host_ok {
            return Err(Refusal::Host(host_text));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let text = origin.to_str().unwrap_or("(not ASCII)");
            let ok = parse_origin(text).is_some_and(|(scheme, o)| {
                self.origins.iter().any(|a| {
                    a.scheme == scheme
                        && a.host == o.host
                        && match a.port {
                            PortRule::Any => true,
                            PortRule::Exact(p) => {
                                o.port.or_else(|| default_port(&scheme)) == Some(p)
                            }
                        }
                })
            });
            if !ok {
                return Err(Refusal::Origin(text.to_string()));
            }
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        if let Some(len) = declared
            && len > self.max_request_bytes
        {
            return Err(Refusal::Body(len, self.max_request_bytes));
        }
        Ok(())
    }
}

/// Middleware in front of every route: refuses what [`Guard::check`] refuses, and caps a
/// body sent without a length at `server.max_request_bytes` while it is read.
pub async fn guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if let Err(refusal) = guard.check(req.uri(), req.headers()) {
        tracing::debug!(
            "refused {} {}: {}",
            req.method(),
            req.uri().path(),
            refusal.message().trim_end()
        );
        if let Some(search) = &guard.search {
            search.metrics().count_limit_hit(refusal.key());
        }
        if let Some(log) = &guard.audit
            && req.uri().path().starts_with("/mcp")
        {
            log.record(Entry {
                time: rfc3339_ms(now_ms()),
                request_id: audit::new_request_id(),
                transport: Transport::Http,
                principal: None,
                client: req
                    .headers()
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from),
                http: Some(HttpRequest {
                    method: req.method().to_string(),
                    path: req.uri().path().to_string(),
                }),
                tool: None,
                arguments: None,
                results: Vec::new(),
                latency_ms: 0.0,
                outcome: Outcome::Rejected,
                error: Some(refusal.message().trim_end().to_string()),
                status: Some(refusal.status().as_u16()),
            });
        }
        return refused(&refusal);
    }
    let (parts, body) = req.into_parts();
    let body = Body::new(http_body_util::Limited::new(body, guard.max_request_bytes));
    next.run(Request::from_parts(parts, body)).await
}

/// The plain-text answer to a refusal.
pub fn refused(refusal: &Refusal) -> Response {
    (
        refusal.status(),
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        refusal.message(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn guard() -> Guard {
        Guard::new(&crate::config::ServerConfig::default(), None)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn check(pairs: &[(&str, &str)]) -> Result<(), Refusal> {
        guard().check(&Uri::from_static("/metrics"), &headers(pairs))
    }

    #[test]
    fn hosts_must_be_allowed() {
        assert_eq!(check(&[("host", "127.0.0.1:8080")]), Ok(()));
        assert_eq!(check(&[("host", "localhost")]), Ok(()));
        assert_eq!(check(&[("host", "[::1]:9")]), Ok(()));
        assert_eq!(check(&[("host", "LOCALHOST:1")]), Ok(()));
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "",
        ] {
            let err = check(&[("host", bad)]).unwrap_err();
            assert_eq!(err.status(), StatusCode::FORBIDDEN, "{bad}");
            assert!(err.message().contains("server.allowed_hosts"), "{bad}");
        }
        assert!(
            matches!(check(&[]), Err(Refusal::Host(_))),
            "no Host at all"
        );
    }

    #[test]
    fn origins_must_be_allowed_when_sent() {
        let host = ("host", "127.0.0.1:8080");
        assert_eq!(check(&[host, ("origin", "http://localhost:3000")]), Ok(()));
        assert_eq!(check(&[host, ("origin", "http://[::1]:5")]), Ok(()));
        for bad in [
            "https://evil.example",
            "http://localhost.evil:3000",
            "null",
            "garbage",
        ] {
            let err = check(&[host, ("origin", bad)]).unwrap_err();
            assert_eq!(err.key(), "server.allowed_origins", "{bad}");
        }
    }

    #[test]
    fn exact_ports_match_only_that_port() {
        let server = crate::config::ServerConfig {
            allowed_hosts: vec!["svc.example:443".into()],
            allowed_origins: vec!["https://app.example".into(), "http://a.example:81".into()],
            ..Default::default()
        };
        let g = Guard::new(&server, None);
        let uri = Uri::from_static("/");
        assert!(
            g.check(&uri, &headers(&[("host", "svc.example:443")]))
                .is_ok()
        );
        assert!(
            g.check(&uri, &headers(&[("host", "svc.example:80")]))
                .is_err()
        );
        let h = ("host", "svc.example:443");
        assert!(
            g.check(&uri, &headers(&[h, ("origin", "https://app.example:8443")]))
                .is_ok()
        );
        assert!(
            g.check(&uri, &headers(&[h, ("origin", "http://a.example:81")]))
                .is_ok()
        );
        assert!(
            g.check(&uri, &headers(&[h, ("origin", "http://a.example")]))
                .is_err()
        );
    }

    #[test]
    fn oversized_heads_and_bodies_name_their_limit() {
        let host = ("host", "localhost");
        let big = "x".repeat(20_000);
        let err = check(&[host, ("x-junk", &big)]).unwrap_err();
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(err.message().contains("server.max_header_bytes"));
        let err = check(&[host, ("content-length", "5000000")]).unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.message().contains("server.max_request_bytes"));
        assert_eq!(check(&[host, ("content-length", "1000")]), Ok(()));
    }
}
