//! Embedders: turn text into vectors for the HNSW index and for query text.
//!
//! - [`local`]: a sentence-transformers BERT model run in-process with candle
//!   (`provider = "local"`).
//! - [`openai`]: any OpenAI-compatible `/embeddings` endpoint (`provider = "openai"`).
//!
//! Embedders are synchronous and CPU- or network-bound: the pipeline calls them on its
//! prepare thread (off the Kafka poll path and off the writer), and queries call them through
//! `spawn_blocking`. Each embedder has an [`EmbedderIdentity`] that says which vector space
//! its vectors live in; vectors from two identities must never share an index.

pub mod bert;
mod kernels;
pub mod local;
pub mod openai;
#[cfg(test)]
pub(crate) mod test_server;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{CollectionConfig, Provider};

pub use local::LocalEmbedder;
pub use openai::OpenAiEmbedder;

/// Why text could not be embedded (or an embedder not built).
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory is missing, incomplete or unreadable: a start-up error.
    #[error("embedding model directory {}: {message}", path.display())]
    ModelDir {
        /// The directory from `embedding.model_dir`.
        path: PathBuf,
        /// What is wrong with it and how to fix it.
        message: String,
    },
    /// A config key is missing or wrong for this provider.
    #[error("{key}: {message}")]
    Config {
        /// The dotted key, e.g. `collections[0].embedding.api_key_env`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The model failed while computing (not caused by the input text).
    #[error("embedding model failed: {0}")]
    Model(String),
    /// The embedding server could not be reached or answered with a retryable status
    /// (429, 5xx) after every retry: worth trying again later.
    #[error("embedding server unavailable: {0}")]
    Unavailable(String),
    /// The embedding server refused the request or answered something unusable; retrying
    /// the same input will not help.
    #[error("embedding server error: {0}")]
    Rejected(String),
    /// The vectors do not have the configured dimension.
    #[error(
        "embedding has {got} dimensions but embedding.dimensions is {expected}; \
         fix embedding.dimensions or the model"
    )]
    DimensionMismatch {
        /// Configured (or first seen) dimension.
        expected: usize,
        /// What came back.
        got: usize,
    },
}

impl EmbedError {
    /// True when the same call may succeed later (server down, rate limited).
    pub fn is_transient(&self) -> bool {
        matches!(self, EmbedError::Unavailable(_))
    }
}

/// Which vector space an embedder's vectors live in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbedderIdentity {
    /// `local` or `openai`.
    pub provider: &'static str,
    /// Model id: the model directory's name, or the server's model name.
    pub model: String,
    /// Vector dimension, when known before the first vector.
    pub dimensions: Option<usize>,
    /// A hash of what determines the vectors besides the name: the model files and the
    /// tokenizer settings (local), or the URL, model and requested dimension (openai).
    pub fingerprint: String,
}

/// Something that turns texts into vectors. `Send + Sync`: the prepare thread and query
/// tasks call it concurrently.
pub trait Embedder: Send + Sync {
    /// One vector per text, in order. Vectors are L2-normalised where the model defines it.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// [`embed`](Self::embed) for the ingest pipeline: an embedder that waits between
    /// retries stops waiting when `cancel` fires (the pipeline's cancellation token) and
    /// returns [`EmbedError::Unavailable`].
    fn embed_cancellable(
        &self,
        texts: &[&str],
        cancel: &CancellationToken,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let _ = cancel;
        self.embed(texts)
    }

    /// The vector of one query text. Same vector space as [`embed`](Self::embed); an
    /// embedder may run it apart from bulk work so queries stay fast during ingestion.
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut vectors = self.embed(&[text])?;
        match vectors.pop() {
            Some(v) if vectors.is_empty() => Ok(v),
            _ => Err(EmbedError::Model("expected one vector for one text".into())),
        }
    }

    /// Which vector space the vectors are in.
    fn identity(&self) -> EmbedderIdentity;

    /// The tokenizer texts are measured with, for chunking by model tokens, and the longest
    /// chunk (in tokens, special tokens excluded) the model reads whole.
    fn tokenizer(&self) -> Option<(&tokenizers::Tokenizer, usize)> {
        None
    }
}

/// Sleeps `wait` on this (non-async) thread unless `cancel` fires first; returns whether it
/// did.
pub fn cancelled_within(wait: Duration, cancel: &CancellationToken) -> bool {
    /// How soon a cancellation is noticed.
    const TICK: Duration = Duration::from_millis(50);
    let until = Instant::now() + wait;
    loop {
        if cancel.is_cancelled() {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep((until - now).min(TICK));
    }
}

/// Builds the embedder a collection's config asks for (`None` for `precomputed` and `none`).
/// Local models are loaded once per directory and shared through `loaded`.
pub fn for_collection(
    index: usize,
    config: &CollectionConfig,
    loaded: &mut HashMap<PathBuf, Arc<LocalEmbedder>>,
) -> Result<Option<Arc<dyn Embedder>>, EmbedError> {
    let key = |k: &str| format!("collections[{index}].embedding.{k}");
    match config.provider() {
        Provider::None | Provider::Precomputed => Ok(None),
        Provider::Local => {
            let dir = config
                .embedding
                .model_dir
                .clone()
                .ok_or_else(|| EmbedError::Config {
                    key: key("model_dir"),
                    message: "`local` needs model_dir (a sentence-transformers directory)".into(),
                })?;
            let canonical = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            if let Some(model) = loaded.get(&canonical) {
                return Ok(Some(Arc::clone(model) as Arc<dyn Embedder>));
            }
            let model = Arc::new(LocalEmbedder::load(&dir)?);
            if let Some(dim) = config.embedding.dimensions
                && dim != model.dimensions()
            {
                return Err(EmbedError::Config {
                    key: key("dimensions"),
                    message: format!(
                        "is {dim} but the model in {} makes {}-dimensional vectors",
                        dir.display(),
                        model.dimensions()
                    ),
                });
            }
            loaded.insert(canonical, Arc::clone(&model));
            Ok(Some(model as Arc<dyn Embedder>))
        }
        Provider::Openai => Ok(Some(Arc::new(OpenAiEmbedder::from_config(
            index,
            &config.embedding,
        )?))),
    }
}

/// Hex digest helper shared by the fingerprints.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
