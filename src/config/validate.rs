//! The checks that turn a parsed file into a config the rest of freshet can trust.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{AuthMode, Config, ConfigError, Provider, SchemaRegistryConfig};

/// Longest `server.shutdown_drain_ms` accepted.
const MAX_SHUTDOWN_DRAIN_MS: u64 = 300_000;

impl Config {
    /// Checks what types alone cannot: names, cross-references and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addr: SocketAddr = self.server.http_addr.parse().map_err(|_| {
            ConfigError::key(
                "server.http_addr",
                format!("`{}` is not an IP:port address", self.server.http_addr),
            )
        })?;
        for (i, origin) in self.server.allowed_origins.iter().enumerate() {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::key(
                    format!("server.allowed_origins[{i}]"),
                    format!("`{origin}` must start with http:// or https://"),
                ));
            }
        }
        if self.auth.mode == AuthMode::None && !addr.ip().is_loopback() {
            return Err(ConfigError::key(
                "auth.mode",
                format!(
                    "`none` is only allowed when server.http_addr is a loopback address, not {addr}; \
                     set auth.mode = \"jwt\" to serve other hosts"
                ),
            ));
        }
        self.validate_auth(addr)?;
        self.validate_server_limits()?;
        if let Some(registry) = &self.schema_registry {
            registry.validate()?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if self.audit.max_bytes < 1024 {
            return Err(ConfigError::key("audit.max_bytes", "must be at least 1024"));
        }
        if let Some(var) = &self.audit.hmac_key_env {
            match std::env::var(var) {
                Ok(key) if key.len() >= 16 => {}
                Ok(_) => {
                    return Err(ConfigError::key(
                        "audit.hmac_key_env",
                        format!("the key in ${var} must be at least 16 bytes"),
                    ));
                }
                Err(_) => {
                    return Err(ConfigError::key(
                        "audit.hmac_key_env",
                        format!("environment variable {var} is not set"),
                    ));
                }
            }
        }
        if self.audit.checkpoint_interval_ms < 100 {
            return Err(ConfigError::key(
                "audit.checkpoint_interval_ms",
                "must be at least 100",
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(ConfigError::key("kafka.brokers", "must not be empty"));
        }
        if self.collections.is_empty() {
            return Err(ConfigError::key(
                "collections",
                "at least one [[collections]] entry is needed",
            ));
        }
        let mut names = HashSet::new();
        let mut topics = HashSet::new();
        for (i, c) in self.collections.iter().enumerate() {
            let at = |key: &str| format!("collections[{i}].{key}");
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(ConfigError::key(
                    at("name"),
                    format!(
                        "`{}` must be non-empty ASCII letters, digits, `_` or `-`",
                        c.name
                    ),
                ));
            }
            if !names.insert(c.name.as_str()) {
                return Err(ConfigError::key(
                    at("name"),
                    format!("collection `{}` is defined twice", c.name),
                ));
            }
            if c.topics.is_empty() {
                return Err(ConfigError::key(at("topics"), "needs at least one topic"));
            }
            for (j, t) in c.topics.iter().enumerate() {
                if t.is_empty() {
                    return Err(ConfigError::key(
                        format!("collections[{i}].topics[{j}]"),
                        "topic name must not be empty",
                    ));
                }
                if !topics.insert(t.as_str()) {
                    return Err(ConfigError::key(
                        format!("collections[{i}].topics[{j}]"),
                        format!("topic `{t}` already feeds another collection"),
                    ));
                }
            }
            if self.schema_registry.is_none() {
                if let Some(kind) = c.format.schema_kind() {
                    return Err(ConfigError::key(
                        at("format"),
                        format!("`{}` needs [schema_registry] url", kind.label()),
                    ));
                }
                if let Some(kind) = c.key_format.schema_kind() {
                    return Err(ConfigError::key(
                        at("key_format"),
                        format!("`{}` needs [schema_registry] url", kind.label()),
                    ));
                }
            }
            if c.title_boost.is_some_and(|b| !(b.is_finite() && b >= 0.0)) {
                return Err(ConfigError::key(at("title_boost"), "must be a number ≥ 0"));
            }
            if !(0.0..=1.0).contains(&c.fusion_bm25_weight) {
                return Err(ConfigError::key(
                    at("fusion_bm25_weight"),
                    "must be a number from 0 to 1",
                ));
            }
            if c.chunk_tokens < 16 {
                return Err(ConfigError::key(at("chunk_tokens"), "must be at least 16"));
            }
            if c.chunk_overlap >= c.chunk_tokens {
                return Err(ConfigError::key(
                    at("chunk_overlap"),
                    format!("must be smaller than chunk_tokens ({})", c.chunk_tokens),
                ));
            }
            if let Err(e) = c.mapping().check() {
                let setting = match &e {
                    crate::decode::MappingError::BadPath { setting, .. } => *setting,
                    _ => "max_record_bytes",
                };
                return Err(ConfigError::key(at(setting), e.to_string()));
            }
            if c.max_record_bytes == 0 {
                return Err(ConfigError::key(at("max_record_bytes"), "must be positive"));
            }
            if !(c.hnsw.rebuild_dead_fraction > 0.0 && c.hnsw.rebuild_dead_fraction <= 1.0) {
                return Err(ConfigError::key(
                    at("hnsw.rebuild_dead_fraction"),
                    "must be in (0, 1]",
                ));
            }
            if !(0.0..=1.0).contains(&c.hnsw.min_recall) {
                return Err(ConfigError::key(
                    at("hnsw.min_recall"),
                    "must be in [0, 1] (0 keeps the graph whatever recall it measures)",
                ));
            }
            if c.hnsw.m < 2 || c.hnsw.ef_construction == 0 || c.hnsw.ef_search == 0 {
                return Err(ConfigError::key(
                    at("hnsw"),
                    "m must be ≥ 2 and ef_construction, ef_search ≥ 1",
                ));
            }
            for field in c.field_types.keys() {
                if !c.metadata_fields.contains(field) {
                    return Err(ConfigError::key(
                        at(&format!("field_types.{field}")),
                        format!(
                            "`{field}` is not one of metadata_fields [{}]: only metadata fields have types",
                            c.metadata_fields.join(", ")
                        ),
                    ));
                }
            }
            if c.changes.max_entries == 0 {
                return Err(ConfigError::key(
                    at("changes.max_entries"),
                    "must be at least 1",
                ));
            }
            if c.changes.max_age_ms == 0 {
                return Err(ConfigError::key(
                    at("changes.max_age_ms"),
                    "must be positive",
                ));
            }
            if c.embedding.dimensions == Some(0) {
                return Err(ConfigError::key(
                    at("embedding.dimensions"),
                    "must be positive",
                ));
            }
            if c.embedding.batch_size == Some(0) {
                return Err(ConfigError::key(
                    at("embedding.batch_size"),
                    "must be positive",
                ));
            }
            match c.provider() {
                Provider::Precomputed if c.vector_field.is_none() => {
                    return Err(ConfigError::key(
                        at("embedding.provider"),
                        "`precomputed` needs vector_field (the record field holding the vector)",
                    ));
                }
                Provider::Local if c.embedding.model_dir.is_none() => {
                    return Err(ConfigError::key(
                        at("embedding.model_dir"),
                        "`local` needs model_dir (a sentence-transformers directory)",
                    ));
                }
                Provider::Openai if c.embedding.url.is_none() || c.embedding.model.is_none() => {
                    return Err(ConfigError::key(
                        at("embedding"),
                        "`openai` needs url and model",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The `[server]` bounds: each must leave room for ordinary use.
    fn validate_server_limits(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let at_least = |key: &str, value: u64, min: u64| {
            if value < min {
                Err(ConfigError::key(
                    format!("server.{key}"),
                    format!("must be at least {min}, got {value}"),
                ))
            } else {
                Ok(())
            }
        };
        at_least("max_query_bytes", s.max_query_bytes as u64, 64)?;
        at_least("max_query_terms", s.max_query_terms as u64, 1)?;
        at_least("tool_timeout_ms", s.tool_timeout_ms, 100)?;
        at_least("max_request_bytes", s.max_request_bytes as u64, 4096)?;
        at_least("max_header_bytes", s.max_header_bytes as u64, 1024)?;
        at_least("header_read_timeout_ms", s.header_read_timeout_ms, 100)?;
        at_least("max_connections", s.max_connections as u64, 1)?;
        at_least("max_sessions", s.max_sessions as u64, 1)?;
        at_least(
            "max_sessions_per_principal",
            s.max_sessions_per_principal as u64,
            1,
        )?;
        at_least("session_idle_timeout_ms", s.session_idle_timeout_ms, 1000)?;
        // A drain longer than any orchestrator's grace period would be cut by SIGKILL.
        if s.shutdown_drain_ms > MAX_SHUTDOWN_DRAIN_MS {
            return Err(ConfigError::key(
                "server.shutdown_drain_ms",
                format!(
                    "must be at most {MAX_SHUTDOWN_DRAIN_MS}, got {}",
                    s.shutdown_drain_ms
                ),
            ));
        }
        if let Some(addr) = &s.metrics_addr
            && addr.parse::<SocketAddr>().is_err()
        {
            return Err(ConfigError::key(
                "server.metrics_addr",
                format!("`{addr}` is not an IP:port address"),
            ));
        }
        Ok(())
    }

    fn validate_auth(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if let Some(cols) = &auth.stdio.collections {
            for (i, name) in cols.iter().enumerate() {
                if name != "*" && !self.collections.iter().any(|c| &c.name == name) {
                    return Err(ConfigError::key(
                        format!("auth.stdio.collections[{i}]"),
                        format!("no collection is named `{name}`"),
                    ));
                }
            }
        }
        if auth.collections_claim.is_empty() {
            return Err(ConfigError::key(
                "auth.collections_claim",
                "must not be empty",
            ));
        }
        if auth.tenant_claim.is_empty() {
            return Err(ConfigError::key("auth.tenant_claim", "must not be empty"));
        }
        if auth.leeway_secs > 300 {
            return Err(ConfigError::key(
                "auth.leeway_secs",
                "must be at most 300 (a larger skew means a clock to fix)",
            ));
        }
        if let Some(resource) = &auth.resource {
            check_http_url("auth.resource", resource)?;
        }
        for (i, s) in auth.authorization_servers.iter().enumerate() {
            check_http_url(&format!("auth.authorization_servers[{i}]"), s)?;
        }
        if auth.mode != AuthMode::Jwt {
            return Ok(());
        }
        match &auth.issuer {
            None => {
                return Err(ConfigError::key(
                    "auth.issuer",
                    "is required with mode = \"jwt\" (the `iss` every token must carry)",
                ));
            }
            Some(i) if i.is_empty() => {
                return Err(ConfigError::key("auth.issuer", "must not be empty"));
            }
            Some(_) => {}
        }
        if auth.audience.as_deref() == Some("") {
            return Err(ConfigError::key("auth.audience", "must not be empty"));
        }
        if auth.hs256_secret_env.is_none()
            && auth.public_key_pem.is_none()
            && auth.jwks_file.is_none()
        {
            return Err(ConfigError::key(
                "auth",
                "mode = \"jwt\" needs a key: hs256_secret_env, public_key_pem or jwks_file",
            ));
        }
        if auth.resource.is_none() && addr.ip().is_unspecified() {
            return Err(ConfigError::key(
                "auth.resource",
                format!(
                    "is required when server.http_addr is a wildcard address ({addr}): \
                     set the URL clients use, e.g. \"https://freshet.example.com/mcp\""
                ),
            ));
        }
        Ok(())
    }
}

impl SchemaRegistryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_http_url("schema_registry.url", &self.url)?;
        let envs = [
            ("schema_registry.username_env", &self.username_env),
            ("schema_registry.password_env", &self.password_env),
            ("schema_registry.token_env", &self.token_env),
        ];
        for (key, name) in envs {
            if name.as_ref().is_some_and(|n| n.trim().is_empty()) {
                return Err(ConfigError::key(key, "must name an environment variable"));
            }
        }
        if self.username_env.is_some() != self.password_env.is_some() {
            let key = if self.username_env.is_some() {
                "schema_registry.password_env"
            } else {
                "schema_registry.username_env"
            };
            return Err(ConfigError::key(
                key,
                "basic auth needs both username_env and password_env",
            ));
        }
        if self.token_env.is_some() && self.username_env.is_some() {
            return Err(ConfigError::key(
                "schema_registry.token_env",
                "use either a bearer token or basic auth (username_env), not both",
            ));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(ConfigError::key(
                "schema_registry.client_cert_file",
                "client_cert_file and client_key_file go together",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(ConfigError::key(
                "schema_registry.timeout_ms",
                "must be positive",
            ));
        }
        if self.cache_capacity == 0 {
            return Err(ConfigError::key(
                "schema_registry.cache_capacity",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Checks that `url` (the value of `key`) is an http(s) URL without query or fragment.
pub(crate) fn check_http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !url.contains(['?', '#']) => {
            Ok(())
        }
        _ => Err(ConfigError::key(
            key,
            format!("`{url}` must be an http:// or https:// URL without query or fragment"),
        )),
    }
}
