//! Who is calling, and what they may read.
//!
//! HTTP callers present a bearer JWT; [`Authenticator::verify`] checks its signature
//! (HS256 secret, RSA/EC public key in PEM, or a JWKS file), `exp`/`nbf`, `iss` and `aud`, and
//! turns its claims into a [`Caller`]: a [`Principal`] for the audit log and an
//! [`Access`] the engine enforces. stdio has no tokens: its caller comes from `[auth.stdio]`.
//!
//! The key decides the algorithm, never the token: a token is only checked against keys
//! whose own algorithms include the token's `alg`, so an HS256 token "signed" with an RSA
//! public key as the secret finds no HMAC key to be checked against, and `alg: none` does not
//! parse at all.

use std::collections::HashSet;
use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{AuthConfig, AuthMode, Config};

/// HS256 secrets shorter than this are refused: RFC 7518 §3.2 asks for a key at least as
/// long as the hash output.
pub const MIN_SECRET_BYTES: usize = 32;

/// The identity recorded in the audit log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The token's `sub` (or `auth.stdio.sub`).
    pub sub: Option<String>,
    /// The token's `iss` (none on stdio).
    pub iss: Option<String>,
}

/// A verified caller: who it is and what it may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// For the audit log.
    pub principal: Principal,
    /// For the engine.
    pub access: Access,
}

impl Caller {
    /// The caller of an unauthenticated loopback server: anonymous, unrestricted.
    pub fn anonymous() -> Caller {
        Caller {
            principal: Principal::default(),
            access: Access::all(),
        }
    }

    /// The stdio caller described by `[auth.stdio]` (default: unrestricted).
    pub fn stdio(config: &AuthConfig) -> Caller {
        let stdio = &config.stdio;
        let collections = stdio.collections.as_ref().and_then(|names| {
            (!names.iter().any(|n| n == "*")).then(|| names.iter().cloned().collect())
        });
        let tenant = match &stdio.tenant {
            Some(t) => TenantScope::Only(t.clone()),
            None => TenantScope::All,
        };
        Caller {
            principal: Principal {
                sub: stdio.sub.clone(),
                iss: None,
            },
            access: Access {
                collections,
                tenant,
            },
        }
    }
}

/// What a caller may see. Collections outside `collections` do not exist for it; `tenant`
/// is a mandatory filter on each collection's tenant field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Readable collections (`None`: all).
    pub collections: Option<HashSet<String>>,
    /// Which tenants' documents the caller sees where a collection has a tenant field.
    pub tenant: TenantScope,
}

/// Which tenants' documents a caller sees in collections that have a `tenant_field`.
/// Collections without one are not affected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantScope {
    /// Every tenant (auth off, or a stdio principal configured without a tenant).
    All,
    /// Only documents whose tenant is this value.
    Only(String),
    /// None at all: an authenticated caller without a tenant claim must not see every
    /// tenant's documents, so it sees none of them (fail closed).
    NoTenant,
}

impl Access {
    /// Unrestricted access (auth off, or stdio without a configured principal).
    pub fn all() -> Access {
        Access {
            collections: None,
            tenant: TenantScope::All,
        }
    }

    /// No access at all: the fallback when a request arrives without a verified caller.
    pub fn none() -> Access {
        Access {
            collections: Some(HashSet::new()),
            tenant: TenantScope::NoTenant,
        }
    }

    /// True if this caller may read `collection`.
    pub fn may_read(&self, collection: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|set| set.contains(collection))
    }
}

/// A key material problem found at start-up; names the config key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct AuthSetupError {
    /// The config key, e.g. `auth.jwks_file`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn setup_error(key: &str, message: impl Into<String>) -> AuthSetupError {
    AuthSetupError {
        key: key.into(),
        message: message.into(),
    }
}

/// Why a request was not authenticated; decides the `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No credentials at all: the challenge carries no error code (RFC 6750 §3.1).
    #[error("no bearer token")]
    Missing,
    /// A token (or something in its place) was given but is not acceptable
    /// (`error="invalid_token"`).
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl Rejection {
    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Missing => "missing_token",
            Rejection::Invalid(_) => "invalid_token",
        }
    }
}

/// One key tokens may be checked against.
struct VerifyKey {
    /// Only tokens with this `kid` (or none) are checked against a key that has one.
    kid: Option<String>,
    /// The algorithms this key is for; the token's `alg` must be one of them.
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// Verifies bearer tokens against the configured keys and claims.
pub struct Authenticator {
    keys: Vec<VerifyKey>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    collections_claim: String,
    tenant_claim: String,
    resource: String,
    authorization_servers: Vec<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Authenticator")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the verifier from config, reading the secret from the process environment and
    /// key files from disk. `Ok(None)` when `auth.mode = "none"`.
    pub fn from_config(config: &Config) -> Result<Option<Authenticator>, AuthSetupError> {
        Self::from_config_with_env(config, |name| std::env::var(name).ok())
    }

    /// As [`Authenticator::from_config`], with the environment given as a function.
    pub fn from_config_with_env(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Authenticator>, AuthSetupError> {
        let auth = &config.auth;
        if auth.mode == AuthMode::None {
            return Ok(None);
        }
        let mut keys = Vec::new();
        if let Some(var) = &auth.hs256_secret_env {
            let secret = env(var).unwrap_or_default();
            if secret.is_empty() {
                return Err(setup_error(
                    "auth.hs256_secret_env",
                    format!("environment variable {var} is not set"),
                ));
            }
            if secret.len() < MIN_SECRET_BYTES {
                return Err(setup_error(
                    "auth.hs256_secret_env",
                    format!(
                        "the secret in {var} has {} bytes; HS256 needs at least {MIN_SECRET_BYTES}",
                        secret.len()
                    ),
                ));
            }
            keys.push(VerifyKey {
                kid: None,
                algorithms: vec![Algorithm::HS256],
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(pem) = &auth.public_key_pem {
            keys.push(pem_key(pem)?);
        }
        if let Some(path) = &auth.jwks_file {
            keys.extend(jwks_keys(path)?);
        }
        if keys.is_empty() {
            return Err(setup_error(
                "auth",
                "mode = \"jwt\" needs a key: hs256_secret_env, public_key_pem or jwks_file",
            ));
        }
        Ok(Some(Authenticator {
            keys,
            issuer: auth.issuer.clone().unwrap_or_default(),
            audience: config.audience(),
            leeway_secs: auth.leeway_secs,
            collections_claim: auth.collections_claim.clone(),
            tenant_claim: auth.tenant_claim.clone(),
            resource: config.resource_url(),
            authorization_servers: config.authorization_servers(),
        }))
    }

    /// Checks a bearer token and returns the caller it speaks for.
    pub fn verify(&self, token: &str) -> Result<Caller, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            Rejection::Invalid(match e.kind() {
                ErrorKind::InvalidAlgorithmName => "unsupported alg".into(),
                _ => "malformed token".into(),
            })
        })?;
        let candidates = self.keys.iter().filter(|k| {
            k.algorithms.contains(&header.alg)
                && match (&k.kid, &header.kid) {
                    (Some(mine), Some(theirs)) => mine == theirs,
                    _ => true,
                }
        });
        let mut last = Rejection::Invalid(format!("no key accepts alg {:?}", header.alg));
        for key in candidates {
            let mut validation = Validation::new(header.alg);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.validate_nbf = true;
            validation.leeway = self.leeway_secs;
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return self.caller(&data.claims),
                Err(e) => {
                    let (reason, signature_checked) = describe(e.kind());
                    last = Rejection::Invalid(reason);
                    // The signature held, so no other key will make these claims valid.
                    if signature_checked {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn caller(&self, claims: &Map<String, Value>) -> Result<Caller, Rejection> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(String::from);
        let collections = collections_claim(claims.get(&self.collections_claim))
            .map_err(|m| Rejection::Invalid(format!("claim {}: {m}", self.collections_claim)))?;
        let tenant = tenant_claim(claims.get(&self.tenant_claim))
            .map_err(|m| Rejection::Invalid(format!("claim {}: {m}", self.tenant_claim)))?;
        Ok(Caller {
            principal: Principal {
                sub: text("sub"),
                iss: text("iss"),
            },
            access: Access {
                collections,
                tenant,
            },
        })
    }

    /// The resource identifier (RFC 9728 `resource`).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Where the protected-resource metadata is served: the resource's origin, then
    /// `/.well-known/oauth-protected-resource`, then the resource's path (RFC 9728 §3.1).
    pub fn metadata_url(&self) -> String {
        metadata_url(&self.resource)
    }

    /// The RFC 9728 protected-resource metadata document.
    pub fn resource_metadata(&self) -> Value {
        serde_json::json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "freshet",
        })
    }

    /// The `WWW-Authenticate` value of a 401 for this rejection.
    pub fn challenge(&self, rejection: &Rejection) -> String {
        let base = format!("Bearer resource_metadata=\"{}\"", self.metadata_url());
        match rejection {
            Rejection::Missing => base,
            Rejection::Invalid(why) => format!(
                "{base}, error=\"invalid_token\", error_description=\"{}\"",
                quotable(why)
            ),
        }
    }
}

/// A short reason for a failed decode, and whether the signature had already been checked
/// (jsonwebtoken verifies the signature before any claim).
fn describe(kind: &ErrorKind) -> (String, bool) {
    match kind {
        ErrorKind::ExpiredSignature => ("token expired".into(), true),
        ErrorKind::ImmatureSignature => ("token not yet valid (nbf)".into(), true),
        ErrorKind::InvalidIssuer => ("wrong issuer".into(), true),
        ErrorKind::InvalidAudience => ("wrong audience".into(), true),
        ErrorKind::MissingRequiredClaim(c) => (format!("missing claim {c}"), true),
        ErrorKind::InvalidSubject => ("wrong subject".into(), true),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => ("malformed claims".into(), true),
        ErrorKind::InvalidSignature => ("signature does not verify".into(), false),
        ErrorKind::InvalidAlgorithm => ("algorithm does not match the key".into(), false),
        _ => ("token does not verify".into(), false),
    }
}

/// Keeps an error description inside a quoted-string: RFC 6750 allows printable ASCII
/// without `"` and `\`.
fn quotable(s: &str) -> String {
    s.chars()
        .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
        .collect()
}

/// RFC 9728 §3.1: `https://host/mcp` → `https://host/.well-known/oauth-protected-resource/mcp`.
pub fn metadata_url(resource: &str) -> String {
    let (scheme, rest) = resource.split_once("://").unwrap_or(("http", resource));
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = path.trim_end_matches('/');
    format!("{scheme}://{authority}/.well-known/oauth-protected-resource{path}")
}

/// The readable collections from the collections claim: a JSON array of names or one string
/// of names separated by spaces or commas; `"*"` among them means every collection. An absent
/// claim grants none.
fn collections_claim(value: Option<&Value>) -> Result<Option<HashSet<String>>, String> {
    let names: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| "must hold only strings".to_string())
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("must be an array of names or a string".into()),
    };
    if names.iter().any(|n| n == "*") {
        return Ok(None);
    }
    Ok(Some(names.into_iter().collect()))
}

/// The tenant from the tenant claim: a string or number (as documents' tenant fields are
/// read). Absent, null or empty means no tenant, which sees no tenant's documents.
fn tenant_claim(value: Option<&Value>) -> Result<TenantScope, String> {
    match value {
        None | Some(Value::Null) => Ok(TenantScope::NoTenant),
        Some(Value::String(s)) if s.is_empty() => Ok(TenantScope::NoTenant),
        Some(Value::String(s)) => Ok(TenantScope::Only(s.clone())),
        Some(Value::Number(n)) => Ok(TenantScope::Only(n.to_string())),
        Some(_) => Err("must be a string or number".into()),
    }
}

/// `public_key_pem`: inline PEM text, or a path to a PEM file.
fn pem_key(value: &str) -> Result<VerifyKey, AuthSetupError> {
    const KEY: &str = "auth.public_key_pem";
    let text = if value.trim_start().starts_with("-----BEGIN") {
        value.to_string()
    } else {
        std::fs::read_to_string(value)
            .map_err(|e| setup_error(KEY, format!("cannot read PEM file {value}: {e}")))?
    };
    if text.contains("PRIVATE KEY") {
        return Err(setup_error(
            KEY,
            "holds a private key; give the public key only",
        ));
    }
    // The key's type decides its algorithms; the token's header is never trusted for that.
    if let Ok(key) = DecodingKey::from_ec_pem(text.as_bytes()) {
        return Ok(VerifyKey {
            kid: None,
            algorithms: vec![Algorithm::ES256, Algorithm::ES384],
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(text.as_bytes()) {
        return Ok(VerifyKey {
            kid: None,
            algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
            key,
        });
    }
    Err(setup_error(
        KEY,
        "is not an RSA or EC public key in PEM (-----BEGIN PUBLIC KEY-----)",
    ))
}

/// The public keys of a JWKS file. Symmetric (`oct`) keys are refused: a JWKS file is
/// public, and a shared secret belongs in `hs256_secret_env`.
fn jwks_keys(path: &Path) -> Result<Vec<VerifyKey>, AuthSetupError> {
    const KEY: &str = "auth.jwks_file";
    let text = std::fs::read_to_string(path)
        .map_err(|e| setup_error(KEY, format!("cannot read {}: {e}", path.display())))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
        setup_error(
            KEY,
            format!("{} is not a JWKS document: {e}", path.display()),
        )
    })?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let at = |m: String| setup_error(&format!("{KEY} (keys[{i}])"), m);
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let by_type: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => {
                vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]
            }
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return Err(at("unsupported curve (use P-256 or P-384)".into())),
            },
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => {
                return Err(at(
                    "is a symmetric (oct) key; put shared secrets in hs256_secret_env".into(),
                ));
            }
            _ => return Err(at("unsupported key type".into())),
        };
        // A key that names its algorithm is held to it.
        let algorithms = match jwk.common.key_algorithm {
            None => by_type,
            Some(named) => {
                let alg = key_algorithm(named)
                    .filter(|a| by_type.contains(a))
                    .ok_or_else(|| at(format!("alg {named:?} does not fit the key's type")))?;
                vec![alg]
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| at(format!("unusable key: {e}")))?;
        keys.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    if keys.is_empty() {
        return Err(setup_error(
            KEY,
            format!("{} has no signing keys", path.display()),
        ));
    }
    Ok(keys)
}

fn key_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// What `freshet token` puts in a development token.
#[derive(Clone, Debug)]
pub struct DevToken {
    /// `sub`.
    pub sub: String,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// Lifetime in seconds from now.
    pub ttl_secs: u64,
    /// Value of the collections claim, if any.
    pub collections: Option<Vec<String>>,
    /// Value of the tenant claim, if any.
    pub tenant: Option<String>,
    /// Name of the collections claim.
    pub collections_claim: String,
    /// Name of the tenant claim.
    pub tenant_claim: String,
}

/// Signs a development token with an HS256 secret.
pub fn mint_hs256(secret: &[u8], token: &DevToken) -> Result<String, String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the secret has {} bytes; HS256 needs at least {MIN_SECRET_BYTES}",
            secret.len()
        ));
    }
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = Map::new();
    claims.insert("sub".into(), token.sub.clone().into());
    claims.insert("iss".into(), token.issuer.clone().into());
    claims.insert("aud".into(), token.audience.clone().into());
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(token.ttl_secs).into());
    if let Some(cols) = &token.collections {
        claims.insert(token.collections_claim.clone(), cols.clone().into());
    }
    if let Some(t) = &token.tenant {
        claims.insert(token.tenant_claim.clone(), t.clone().into());
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("cannot sign: {e}"))
}

/// Parses a lifetime like `90s`, `15m`, `1h`, `7d` or plain seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 15m, 1h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: unit must be s, m, h or d")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("the lifetime must be positive".into()),
        Some(secs) => Ok(secs),
        None => Err(format!("`{s}` is too long")),
    }
}

#[cfg(test)]
mod tests;
