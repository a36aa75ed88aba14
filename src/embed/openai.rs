//! `provider = "openai"`: any server with an OpenAI-compatible `POST {url}/embeddings`
//! (OpenAI, Ollama, vLLM, Text Embeddings Inference, LiteLLM, ...).
//!
//! Texts go in batches of `batch_size`. A connection failure, a timeout, 429 or a 5xx is
//! retried with exponential backoff (honouring `Retry-After`); after the last attempt the
//! error is [`EmbedError::Unavailable`], which the pipeline treats as "try again later" (it
//! holds the batch, so Kafka backpressure pauses ingestion instead of dropping documents).
//! Any other status is [`EmbedError::Rejected`]: retrying the same input cannot help.

use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{EmbedError, Embedder, EmbedderIdentity, hex};
use crate::config::EmbeddingConfig;

/// Inputs per request unless `embedding.batch_size` says otherwise. Text Embeddings
/// Inference refuses more than 32 by default; OpenAI takes up to 2048.
pub const DEFAULT_BATCH_SIZE: usize = 32;
/// Per-request timeout unless `embedding.timeout_ms` says otherwise.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// How often and how long to retry a retryable failure.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Longest wait between attempts (also caps `Retry-After`).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// A client for one OpenAI-compatible embeddings endpoint and model.
pub struct OpenAiEmbedder {
    agent: ureq::Agent,
    endpoint: String,
    model: String,
    api_key: Option<String>,
    /// Asked of the server (OpenAI's text-embedding-3 models shorten their vectors to it)
    /// and checked on every vector.
    dimensions: Option<usize>,
    /// Without a configured dimension, the first vector's fixes it.
    seen_dimensions: OnceLock<usize>,
    batch_size: usize,
    retry: RetryPolicy,
    fingerprint: String,
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

impl OpenAiEmbedder {
    /// Builds the client from `collections[index].embedding`. Reads the API key from the
    /// environment variable named by `api_key_env` now, so a missing key fails at start-up.
    pub fn from_config(index: usize, config: &EmbeddingConfig) -> Result<Self, EmbedError> {
        let key = |k: &str| format!("collections[{index}].embedding.{k}");
        let url = config.url.as_deref().ok_or_else(|| EmbedError::Config {
            key: key("url"),
            message: "`openai` needs url (the server's base URL, e.g. http://127.0.0.1:11434/v1)"
                .into(),
        })?;
        let model = config.model.as_deref().ok_or_else(|| EmbedError::Config {
            key: key("model"),
            message: "`openai` needs model (the embedding model's name on the server)".into(),
        })?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(EmbedError::Config {
                key: key("url"),
                message: format!("`{url}` must start with http:// or https://"),
            });
        }
        let api_key = match &config.api_key_env {
            None => None,
            Some(var) => Some(std::env::var(var).map_err(|_| EmbedError::Config {
                key: key("api_key_env"),
                message: format!("environment variable {var} is not set"),
            })?),
        };
        let batch_size = config.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(EmbedError::Config {
                key: key("batch_size"),
                message: "must be positive".into(),
            });
        }
        let timeout = Duration::from_millis(config.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        Ok(Self::new(
            url,
            model,
            api_key,
            config.dimensions,
            batch_size,
            timeout,
            RetryPolicy::default(),
        ))
    }

    /// A client for `{url}/embeddings` with explicit settings.
    pub fn new(
        url: &str,
        model: &str,
        api_key: Option<String>,
        dimensions: Option<usize>,
        batch_size: usize,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Self {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        let endpoint = format!("{}/embeddings", url.trim_end_matches('/'));
        let mut hash = Sha256::new();
        hash.update(endpoint.as_bytes());
        hash.update([0]);
        hash.update(model.as_bytes());
        hash.update([0]);
        hash.update(dimensions.unwrap_or(0).to_le_bytes());
        OpenAiEmbedder {
            agent,
            endpoint,
            model: model.to_string(),
            api_key,
            dimensions,
            seen_dimensions: OnceLock::new(),
            batch_size: batch_size.max(1),
            retry,
            fingerprint: hex(&hash.finalize()[..8]),
        }
    }

    /// One request with retries; the waits between them end early when `cancel` fires.
    fn request(
        &self,
        input: &[&str],
        cancel: Option<&CancellationToken>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 1;
        loop {
            let (error, retry_after) = match self.request_once(input) {
                Ok(vectors) => return Ok(vectors),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retryable(message, retry_after)) => (message, retry_after),
            };
            if attempt >= self.retry.attempts {
                return Err(EmbedError::Unavailable(format!(
                    "{} after {attempt} attempts: {error}",
                    self.endpoint
                )));
            }
            let wait = retry_after.unwrap_or(backoff).min(self.retry.max_backoff);
            tracing::warn!(
                endpoint = self.endpoint,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "embedding request failed, retrying: {error}"
            );
            match cancel {
                Some(cancel) if super::cancelled_within(wait, cancel) => {
                    return Err(EmbedError::Unavailable(format!(
                        "{}: stopped retrying (shutting down): {error}",
                        self.endpoint
                    )));
                }
                Some(_) => {}
                None => std::thread::sleep(wait),
            }
            backoff = (backoff * 2).min(self.retry.max_backoff);
            attempt += 1;
        }
    }

    fn request_once(&self, input: &[&str]) -> Result<Vec<Vec<f32>>, Failure> {
        let body = Request {
            model: &self.model,
            input,
            dimensions: self.dimensions,
        };
        let mut request = self.agent.post(&self.endpoint);
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = match request.send_json(&body) {
            Ok(r) => r,
            // Connection refused, DNS, timeouts: the server may come back.
            Err(e) => return Err(Failure::Retryable(e.to_string(), None)),
        };
        let status = response.status().as_u16();
        if status != 200 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = response
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .unwrap_or_default();
            let excerpt: String = text.chars().take(300).collect();
            let message = format!("{} answered {status}: {excerpt}", self.endpoint);
            return Err(if status == 429 || status >= 500 {
                Failure::Retryable(message, retry_after)
            } else if status == 401 || status == 403 {
                Failure::Final(EmbedError::Rejected(format!(
                    "{message} (check embedding.api_key_env)"
                )))
            } else {
                Failure::Final(EmbedError::Rejected(message))
            });
        }
        let parsed: Response = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_json()
            .map_err(|e| {
                Failure::Final(EmbedError::Rejected(format!(
                    "{} answered with an unexpected body: {e}",
                    self.endpoint
                )))
            })?;
        self.check(parsed, input.len()).map_err(Failure::Final)
    }

    /// Puts the vectors in input order and checks their count and dimension.
    fn check(&self, response: Response, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        if response.data.len() != expected {
            return Err(EmbedError::Rejected(format!(
                "{} returned {} embeddings for {expected} inputs",
                self.endpoint,
                response.data.len()
            )));
        }
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (position, item) in response.data.into_iter().enumerate() {
            let i = item.index.unwrap_or(position);
            match slots.get_mut(i) {
                Some(slot @ None) => *slot = Some(item.embedding),
                _ => {
                    return Err(EmbedError::Rejected(format!(
                        "{} returned a bad or repeated index {i}",
                        self.endpoint
                    )));
                }
            }
        }
        let vectors: Vec<Vec<f32>> = slots.into_iter().flatten().collect();
        let expected_dim = match self.dimensions {
            Some(d) => d,
            None => *self
                .seen_dimensions
                .get_or_init(|| vectors.first().map_or(0, Vec::len)),
        };
        if let Some(v) = vectors.iter().find(|v| v.len() != expected_dim) {
            return Err(EmbedError::DimensionMismatch {
                expected: expected_dim,
                got: v.len(),
            });
        }
        Ok(vectors)
    }
}

enum Failure {
    Retryable(String, Option<Duration>),
    Final(EmbedError),
}

impl OpenAiEmbedder {
    fn embed_batches(
        &self,
        texts: &[&str],
        cancel: Option<&CancellationToken>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        // OpenAI refuses empty strings; a space embeds the same "nothing".
        let inputs: Vec<&str> = texts
            .iter()
            .map(|t| if t.is_empty() { " " } else { *t })
            .collect();
        let mut out = Vec::with_capacity(texts.len());
        for batch in inputs.chunks(self.batch_size) {
            out.extend(self.request(batch, cancel)?);
        }
        Ok(out)
    }
}

impl Embedder for OpenAiEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_batches(texts, None)
    }

    fn embed_cancellable(
        &self,
        texts: &[&str],
        cancel: &CancellationToken,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_batches(texts, Some(cancel))
    }

    fn identity(&self) -> EmbedderIdentity {
        EmbedderIdentity {
            provider: "openai",
            model: self.model.clone(),
            dimensions: self
                .dimensions
                .or_else(|| self.seen_dimensions.get().copied()),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
