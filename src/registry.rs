//! A client for a schema registry speaking the Confluent Schema Registry REST API: schemas
//! by ID (with their references), and the subject list for `check-config --online`.
//!
//! The decoder calls it through [`SchemaSource`] from the prepare stage, a plain thread, so
//! requests block there and never on the async runtime. Each ID is fetched once and parsed
//! once; parsed schemas are kept in a bounded cache (oldest out first). A failing registry is
//! retried with doubling waits; after the last retry the record is poison, and for a short
//! cool-down further uncached lookups fail at once, so an outage costs a bounded delay per
//! batch instead of a stall. An ID the registry does not know is remembered for a while too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::config::{Config, SchemaRegistryConfig};
use crate::decode::{LookupError, Schema, SchemaKind, SchemaSource, SchemaText};

/// How long an ID the registry does not know is answered from memory.
const UNKNOWN_ID_TTL: Duration = Duration::from_secs(10);
/// The longest cool-down after the registry failed every retry.
const MAX_COOL_DOWN: Duration = Duration::from_secs(30);
/// Deepest chain of schema references followed.
const MAX_REFERENCE_DEPTH: usize = 32;

/// Why the registry client could not be built or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A setting cannot be used (missing environment variable, unreadable certificate).
    #[error("{key}: {message}")]
    Setting {
        /// The config key, e.g. `schema_registry.password_env`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A request failed (after retries for transient failures).
    #[error("schema registry {url}: {message}")]
    Request {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// The registry client. Cheap to share; all methods take `&self`.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
    retries: u32,
    first_backoff: Duration,
    cache: Mutex<Cache>,
    unknown: Mutex<HashMap<u32, Instant>>,
    /// Until when uncached lookups fail at once, and why.
    cool_down: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("base", &self.base)
            .finish()
    }
}

/// Parsed schemas by ID, bounded, oldest evicted first.
struct Cache {
    schemas: HashMap<u32, Arc<Schema>>,
    order: VecDeque<u32>,
    capacity: usize,
}

impl Cache {
    fn get(&self, id: u32) -> Option<Arc<Schema>> {
        self.schemas.get(&id).cloned()
    }

    fn insert(&mut self, id: u32, schema: Arc<Schema>) {
        if self.schemas.insert(id, schema).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.schemas.remove(&oldest);
            }
        }
    }
}

/// One failed request: worth retrying or not.
enum Failure {
    /// 404: the thing asked for does not exist.
    NotFound,
    /// Connection errors, timeouts, 5xx, 429.
    Transient(String),
    /// Other answers (401, 403, 400, a body that is not what the API promises).
    Final(String),
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Clone, Deserialize)]
struct Reference {
    name: String,
    subject: String,
    version: i64,
}

impl Registry {
    /// The client for `config.schema_registry`, if there is one. Credentials are read from
    /// the environment now, so a missing variable fails at start (and in `check-config`).
    pub fn from_config(config: &Config) -> Result<Option<Registry>, RegistryError> {
        let Some(settings) = &config.schema_registry else {
            return Ok(None);
        };
        // Avro byte and array lengths come from the payload: no legitimate one exceeds the
        // largest record accepted, so larger ones are refused before allocating.
        let largest = config
            .collections
            .iter()
            .map(|c| c.max_record_bytes)
            .max()
            .unwrap_or(1 << 20);
        apache_avro::util::max_allocation_bytes(largest);
        Registry::new(settings).map(Some)
    }

    /// A client with these settings.
    pub fn new(settings: &SchemaRegistryConfig) -> Result<Registry, RegistryError> {
        let authorization = match (
            &settings.username_env,
            &settings.password_env,
            &settings.token_env,
        ) {
            (Some(user), Some(password), _) => {
                let user = env("schema_registry.username_env", user)?;
                let password = env("schema_registry.password_env", password)?;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {encoded}"))
            }
            (_, _, Some(token)) => Some(format!(
                "Bearer {}",
                env("schema_registry.token_env", token)?
            )),
            _ => None,
        };
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::NativeTls);
        tls = match &settings.ca_file {
            Some(path) => {
                let pem = read("schema_registry.ca_file", path)?;
                let certs = certificates("schema_registry.ca_file", &pem)?;
                tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            }
            None => tls.root_certs(ureq::tls::RootCerts::PlatformVerifier),
        };
        if let (Some(cert), Some(key)) = (&settings.client_cert_file, &settings.client_key_file) {
            let chain = certificates(
                "schema_registry.client_cert_file",
                &read("schema_registry.client_cert_file", cert)?,
            )?;
            let key =
                ureq::tls::PrivateKey::from_pem(&read("schema_registry.client_key_file", key)?)
                    .map_err(|e| RegistryError::Setting {
                        key: "schema_registry.client_key_file",
                        message: format!("not a PEM private key: {e}"),
                    })?;
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(settings.timeout_ms)))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Registry {
            agent,
            base: settings.url.trim_end_matches('/').to_owned(),
            authorization,
            retries: settings.retries,
            first_backoff: Duration::from_millis(settings.retry_backoff_ms),
            cache: Mutex::new(Cache {
                schemas: HashMap::new(),
                order: VecDeque::new(),
                capacity: settings.cache_capacity.max(1),
            }),
            unknown: Mutex::new(HashMap::new()),
            cool_down: Mutex::new(None),
        })
    }

    /// The registry's subjects (`GET /subjects`).
    pub fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let url = format!("{}/subjects", self.base);
        match self.get_with_retries(&url) {
            Ok(body) => serde_json::from_str(&body).map_err(|e| RegistryError::Request {
                url,
                message: format!("expected a JSON array of subject names: {e}"),
            }),
            Err(Failure::NotFound) => Err(RegistryError::Request {
                url,
                message: "404 Not Found: is this a Confluent-compatible API base URL?".to_owned(),
            }),
            Err(Failure::Transient(message) | Failure::Final(message)) => {
                Err(RegistryError::Request { url, message })
            }
        }
    }

    /// The version numbers registered under `subject`.
    pub fn versions(&self, subject: &str) -> Result<Vec<i64>, RegistryError> {
        let url = format!(
            "{}/subjects/{}/versions",
            self.base,
            encode_segment(subject)
        );
        match self.get_with_retries(&url) {
            Ok(body) => serde_json::from_str(&body).map_err(|e| RegistryError::Request {
                url,
                message: format!("expected a JSON array of versions: {e}"),
            }),
            Err(Failure::NotFound) => Ok(Vec::new()),
            Err(Failure::Transient(message) | Failure::Final(message)) => {
                Err(RegistryError::Request { url, message })
            }
        }
    }

    /// What `check-config --online` reports: that the registry answers, and for each topic a
    /// collection reads, the subjects its values and keys are registered under (the default
    /// topic-name strategy, `<topic>-value` and `<topic>-key`). Lines start with `#` so the
    /// printed config stays valid TOML.
    pub fn report(&self, config: &Config) -> Result<String, RegistryError> {
        let subjects: HashSet<String> = self.subjects()?.into_iter().collect();
        let mut out = format!(
            "# schema registry {}: reachable, {} subjects\n",
            self.base,
            subjects.len()
        );
        for collection in &config.collections {
            let value_kind = collection.format.schema_kind();
            let key_kind = collection.key_format.schema_kind();
            for topic in &collection.topics {
                let mut parts = Vec::new();
                for (suffix, kind) in [("value", value_kind), ("key", key_kind)] {
                    let subject = format!("{topic}-{suffix}");
                    if subjects.contains(&subject) {
                        let versions = self.versions(&subject)?;
                        let listed: Vec<String> = versions.iter().map(i64::to_string).collect();
                        parts.push(format!("{subject} (versions {})", listed.join(", ")));
                    } else if let Some(kind) = kind {
                        parts.push(format!("{subject} not registered yet ({})", kind.label()));
                    }
                }
                if !parts.is_empty() {
                    out.push_str(&format!(
                        "# collection `{}`, topic `{topic}`: {}\n",
                        collection.name,
                        parts.join("; ")
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Fetches and parses schema `id` with everything it references.
    fn fetch(&self, id: u32) -> Result<Schema, LookupError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let response: SchemaResponse = match self.get_with_retries(&url) {
            Ok(body) => serde_json::from_str(&body)
                .map_err(|e| LookupError::Invalid(format!("unexpected answer from {url}: {e}")))?,
            Err(Failure::NotFound) => return Err(LookupError::Unknown),
            Err(Failure::Transient(message)) => return Err(LookupError::Unavailable(message)),
            Err(Failure::Final(message)) => return Err(LookupError::Unavailable(message)),
        };
        let kind = schema_kind(response.schema_type.as_deref())?;
        let mut references = Vec::new();
        let mut seen = HashSet::new();
        self.collect_references(&response.references, &mut seen, &mut references, 0)?;
        Schema::parse(kind, &response.schema, &references).map_err(LookupError::Invalid)
    }

    /// Appends the referenced schemas, each after its own references.
    fn collect_references(
        &self,
        references: &[Reference],
        seen: &mut HashSet<(String, i64)>,
        out: &mut Vec<SchemaText>,
        depth: usize,
    ) -> Result<(), LookupError> {
        if depth > MAX_REFERENCE_DEPTH {
            return Err(LookupError::Invalid(format!(
                "schema references nest deeper than {MAX_REFERENCE_DEPTH}"
            )));
        }
        for reference in references {
            if !seen.insert((reference.subject.clone(), reference.version)) {
                continue;
            }
            let url = format!(
                "{}/subjects/{}/versions/{}",
                self.base,
                encode_segment(&reference.subject),
                reference.version
            );
            let response: SchemaResponse = match self.get_with_retries(&url) {
                Ok(body) => serde_json::from_str(&body).map_err(|e| {
                    LookupError::Invalid(format!("unexpected answer from {url}: {e}"))
                })?,
                Err(Failure::NotFound) => {
                    return Err(LookupError::Invalid(format!(
                        "referenced schema `{}` version {} not found",
                        reference.subject, reference.version
                    )));
                }
                Err(Failure::Transient(message) | Failure::Final(message)) => {
                    return Err(LookupError::Unavailable(message));
                }
            };
            self.collect_references(&response.references, seen, out, depth + 1)?;
            out.push(SchemaText {
                name: reference.name.clone(),
                text: response.schema,
            });
        }
        Ok(())
    }

    /// GET with retries for transient failures; the waits double from the first back-off.
    fn get_with_retries(&self, url: &str) -> Result<String, Failure> {
        let mut wait = self.first_backoff;
        let mut attempt = 0;
        loop {
            match self.get_once(url) {
                Err(Failure::Transient(message)) if attempt < self.retries => {
                    tracing::warn!(
                        url,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "schema registry request failed, retrying: {message}"
                    );
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_COOL_DOWN);
                    attempt += 1;
                }
                Err(Failure::Transient(message)) => {
                    return Err(Failure::Transient(format!(
                        "{url}: {message} (after {} attempts)",
                        attempt + 1
                    )));
                }
                other => return other,
            }
        }
    }

    fn get_once(&self, url: &str) -> Result<String, Failure> {
        let mut request = self.agent.get(url).header(
            "Accept",
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request
            .call()
            .map_err(|e| Failure::Transient(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| Failure::Transient(format!("reading the answer: {e}")))?;
        match status {
            200 => Ok(body),
            404 => Err(Failure::NotFound),
            429 | 500..=599 => Err(Failure::Transient(format!(
                "HTTP {status}: {}",
                short(&body)
            ))),
            _ => Err(Failure::Final(format!("HTTP {status}: {}", short(&body)))),
        }
    }
}

impl SchemaSource for Registry {
    fn schema(&self, id: u32) -> Result<Arc<Schema>, LookupError> {
        if let Some(schema) = self.cache.lock().get(id) {
            return Ok(schema);
        }
        let now = Instant::now();
        if self
            .unknown
            .lock()
            .get(&id)
            .is_some_and(|until| *until > now)
        {
            return Err(LookupError::Unknown);
        }
        if let Some((until, reason)) = self.cool_down.lock().as_ref()
            && *until > now
        {
            return Err(LookupError::Unavailable(format!(
                "{reason} (not retried for {} ms more)",
                until.saturating_duration_since(now).as_millis()
            )));
        }
        match self.fetch(id) {
            Ok(schema) => {
                let schema = Arc::new(schema);
                self.cache.lock().insert(id, Arc::clone(&schema));
                *self.cool_down.lock() = None;
                Ok(schema)
            }
            Err(LookupError::Unknown) => {
                let mut unknown = self.unknown.lock();
                unknown.retain(|_, until| *until > now);
                unknown.insert(id, now + UNKNOWN_ID_TTL);
                Err(LookupError::Unknown)
            }
            Err(LookupError::Unavailable(reason)) => {
                let pause = (self.first_backoff * 2u32.saturating_pow(self.retries))
                    .clamp(Duration::from_secs(1), MAX_COOL_DOWN);
                *self.cool_down.lock() = Some((Instant::now() + pause, reason.clone()));
                Err(LookupError::Unavailable(reason))
            }
            Err(invalid) => Err(invalid),
        }
    }
}

fn schema_kind(schema_type: Option<&str>) -> Result<SchemaKind, LookupError> {
    SchemaKind::from_registry(schema_type).ok_or_else(|| {
        LookupError::Invalid(format!(
            "schemaType `{}` is not AVRO, PROTOBUF or JSON",
            schema_type.unwrap_or_default()
        ))
    })
}

fn env(key: &'static str, name: &str) -> Result<String, RegistryError> {
    std::env::var(name).map_err(|_| RegistryError::Setting {
        key,
        message: format!("environment variable `{name}` is not set"),
    })
}

fn read(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path).map_err(|e| RegistryError::Setting {
        key,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

fn certificates(
    key: &'static str,
    pem: &[u8],
) -> Result<Vec<ureq::tls::Certificate<'static>>, RegistryError> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => {
                return Err(RegistryError::Setting {
                    key,
                    message: format!("not a PEM file: {e}"),
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(RegistryError::Setting {
            key,
            message: "holds no certificate".to_owned(),
        });
    }
    Ok(certs)
}

/// Percent-encodes a subject for a URL path (subjects may hold `/`, e.g. import paths).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn short(body: &str) -> String {
    let head: String = body.chars().take(200).collect();
    head.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> SchemaRegistryConfig {
        SchemaRegistryConfig {
            url: url.to_owned(),
            username_env: None,
            password_env: None,
            token_env: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            timeout_ms: 500,
            retries: 2,
            retry_backoff_ms: 10,
            cache_capacity: 2,
        }
    }

    #[test]
    fn cache_is_bounded_oldest_first() {
        let mut cache = Cache {
            schemas: HashMap::new(),
            order: VecDeque::new(),
            capacity: 2,
        };
        for id in [1, 2, 2, 3] {
            cache.insert(id, Arc::new(Schema::Json));
        }
        assert!(cache.get(1).is_none());
        assert!(cache.get(2).is_some() && cache.get(3).is_some());
        assert_eq!(cache.order.len(), 2);
    }

    #[test]
    fn unreachable_registry_is_retried_then_cools_down() {
        // Port 1 on loopback refuses connections at once.
        let registry = Registry::new(&settings("http://127.0.0.1:1")).expect("client");
        let started = Instant::now();
        match registry.schema(5) {
            Err(LookupError::Unavailable(reason)) => {
                assert!(reason.contains("after 3 attempts"), "{reason}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // Two waits: 10 ms then 20 ms.
        assert!(started.elapsed() >= Duration::from_millis(30));
        let again = Instant::now();
        match registry.schema(6) {
            Err(LookupError::Unavailable(reason)) => {
                assert!(reason.contains("not retried"), "{reason}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(again.elapsed() < Duration::from_millis(30));
        assert!(registry.subjects().is_err());
    }

    #[test]
    fn credentials_come_from_the_environment() {
        let mut s = settings("http://127.0.0.1:1");
        s.token_env = Some("FRESHET_TEST_REGISTRY_TOKEN_UNSET".into());
        match Registry::new(&s) {
            Err(RegistryError::Setting { key, message }) => {
                assert_eq!(key, "schema_registry.token_env");
                assert!(message.contains("FRESHET_TEST_REGISTRY_TOKEN_UNSET"));
            }
            other => panic!("expected a setting error, got {other:?}"),
        }
        let mut s = settings("https://127.0.0.1:1");
        s.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            Registry::new(&s),
            Err(RegistryError::Setting {
                key: "schema_registry.ca_file",
                ..
            })
        ));
    }

    #[test]
    fn subjects_are_percent_encoded() {
        assert_eq!(
            encode_segment("google/protobuf/timestamp.proto"),
            "google%2Fprotobuf%2Ftimestamp.proto"
        );
        assert_eq!(encode_segment("orders-value"), "orders-value");
    }
}
