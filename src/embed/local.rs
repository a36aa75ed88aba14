//! `provider = "local"`: a sentence-transformers model directory run in-process.
//!
//! What is read from the directory, and why:
//! - `config.json`: the BERT architecture.
//! - `model.safetensors`: the weights.
//! - `tokenizer.json`: the WordPiece tokenizer. Its own truncation and padding settings are
//!   replaced: sentence-transformers truncates at `max_seq_length` and pads to the longest
//!   text in a batch, whereas all-MiniLM-L6-v2's file says "128, fixed", which would cut
//!   every text at 128 tokens and silently lose quality.
//! - `sentence_bert_config.json`: `max_seq_length` (256 for all-MiniLM-L6-v2) and
//!   `do_lower_case`.
//! - `1_Pooling/config.json`: mean (the default) or CLS pooling.
//!
//! Vectors are L2-normalised, as sentence-transformers' `Normalize` module does.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::bert::{Bert, BertConfig, Pooling};
use super::{EmbedError, Embedder, EmbedderIdentity, hex};

/// Upper bound on tokens in one forward pass: large enough that the matrix products run at
/// full speed (1024 to 16384 measured the same within noise on 2 cores), small enough that
/// the largest activation (tokens × 1536 floats) stays near 12 MB and a query waiting for
/// the pool does not wait long.
const MAX_BATCH_TOKENS: usize = 2048;
/// Threads for query embeddings, apart from the pool ingestion uses (see `embed_query`).
const QUERY_THREADS: usize = 1;

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default = "yes")]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn yes() -> bool {
    true
}

/// A sentence-transformers BERT model loaded from a directory.
pub struct LocalEmbedder {
    dir: PathBuf,
    model_id: String,
    fingerprint: String,
    /// Truncates at `max_seq_length`, never pads (batches are packed).
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, for measuring and chunking whole texts.
    chunk_tokenizer: Tokenizer,
    bert: Bert,
    max_seq_length: usize,
    lowercase: bool,
    pooling: Pooling,
    /// Runs query embeddings on their own thread: in rayon's global pool (which ingestion
    /// keeps busy) a query would queue behind a whole batch of documents.
    query_pool: Option<rayon::ThreadPool>,
}

impl LocalEmbedder {
    /// Loads the model in `dir`. Every error names the directory (and the file) and what to
    /// do about it.
    pub fn load(dir: &Path) -> Result<LocalEmbedder, EmbedError> {
        let fail = |message: String| EmbedError::ModelDir {
            path: dir.to_path_buf(),
            message,
        };
        if !dir.is_dir() {
            return Err(fail(
                "does not exist or is not a directory; run scripts/setup.sh to install \
                 all-MiniLM-L6-v2 into models/, or point embedding.model_dir at a \
                 sentence-transformers model directory"
                    .into(),
            ));
        }
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            if !dir.join(file).is_file() {
                return Err(fail(format!(
                    "{file} is missing (a sentence-transformers directory needs config.json, \
                     tokenizer.json and model.safetensors)"
                )));
            }
        }
        let read = |name: &str| -> Result<Vec<u8>, EmbedError> {
            std::fs::read(dir.join(name)).map_err(|e| fail(format!("cannot read {name}: {e}")))
        };
        let config_bytes = read("config.json")?;
        let config: BertConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| fail(format!("config.json is not a BERT config: {e}")))?;
        if let Some(kind) = &config.model_type
            && !matches!(kind.as_str(), "bert")
        {
            return Err(fail(format!(
                "config.json has model_type `{kind}`; only `bert` models are supported"
            )));
        }
        let st_bytes = optional(dir, "sentence_bert_config.json").map_err(&fail)?;
        let st: SentenceBertConfig = match &st_bytes {
            Some(b) => serde_json::from_slice(b)
                .map_err(|e| fail(format!("sentence_bert_config.json: {e}")))?,
            None => SentenceBertConfig::default(),
        };
        let pooling_bytes = optional(dir, "1_Pooling/config.json").map_err(&fail)?;
        let pooling = match &pooling_bytes {
            None => Pooling::Mean,
            Some(b) => {
                let p: PoolingConfig = serde_json::from_slice(b)
                    .map_err(|e| fail(format!("1_Pooling/config.json: {e}")))?;
                match (
                    p.pooling_mode_mean_tokens,
                    p.pooling_mode_cls_token,
                    p.pooling_mode_max_tokens || p.pooling_mode_mean_sqrt_len_tokens,
                ) {
                    (true, false, false) => Pooling::Mean,
                    (false, true, false) => Pooling::Cls,
                    _ => {
                        return Err(fail(
                            "1_Pooling/config.json asks for a pooling mode other than mean or \
                             CLS alone, which is not supported"
                                .into(),
                        ));
                    }
                }
            }
        };
        let max_seq_length = st
            .max_seq_length
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);

        let tokenizer_bytes = read("tokenizer.json")?;
        let mut chunk_tokenizer = Tokenizer::from_bytes(&tokenizer_bytes)
            .map_err(|e| fail(format!("tokenizer.json cannot be loaded: {e}")))?;
        chunk_tokenizer.with_padding(None);
        chunk_tokenizer
            .with_truncation(None)
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        let mut tokenizer = chunk_tokenizer.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;

        let weights = dir.join("model.safetensors");
        let bert = Bert::load(&weights, &config)
            .map_err(|e| fail(format!("model.safetensors cannot be loaded: {e}")))?;

        let mut hash = Sha256::new();
        for part in [
            Some(&config_bytes),
            Some(&tokenizer_bytes),
            st_bytes.as_ref(),
            pooling_bytes.as_ref(),
        ] {
            let bytes: &[u8] = part.map(|b| b.as_slice()).unwrap_or_default();
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        hash_file(&mut hash, &weights).map_err(|e| fail(format!("model.safetensors: {e}")))?;
        hash.update((max_seq_length as u64).to_le_bytes());
        let fingerprint = hex(&hash.finalize()[..8]);

        let model_id = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        tracing::info!(
            dir = %dir.display(),
            model = model_id,
            dimensions = bert.hidden_size(),
            max_seq_length,
            fingerprint,
            "loaded embedding model"
        );
        Ok(LocalEmbedder {
            dir: dir.to_path_buf(),
            model_id,
            fingerprint,
            tokenizer,
            chunk_tokenizer,
            bert,
            max_seq_length,
            lowercase: st.do_lower_case,
            pooling,
            query_pool: rayon::ThreadPoolBuilder::new()
                .num_threads(QUERY_THREADS)
                .thread_name(|_| "freshet-query-embed".into())
                .build()
                .ok(),
        })
    }

    /// Dimension of the vectors.
    pub fn dimensions(&self) -> usize {
        self.bert.hidden_size()
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Longest input in tokens, special tokens included; longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Tokens the model reads for these texts (special tokens included, after truncation).
    pub fn count_tokens(&self, texts: &[&str]) -> usize {
        self.tokenize(texts)
            .map(|ids| ids.iter().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Token ids of each text as the model reads them (special tokens added, truncated).
    fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, EmbedError> {
        texts
            .iter()
            .map(|t| {
                let lowered;
                let text = if self.lowercase {
                    lowered = t.to_lowercase();
                    lowered.as_str()
                } else {
                    t
                };
                self.tokenizer
                    .encode_fast(text, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| EmbedError::Model(format!("tokenizer: {e}")))
            })
            .collect()
    }
}

impl Embedder for LocalEmbedder {
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let embed = || {
            self.embed(&[text])?
                .pop()
                .ok_or_else(|| EmbedError::Model("no vector for the query".into()))
        };
        match &self.query_pool {
            Some(pool) => pool.install(embed),
            None => embed(),
        }
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids = self.tokenize(texts)?;
        // Longest first, so each forward pass holds texts of similar length and the pass
        // sizes are predictable; results are put back in input order at the end.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); ids.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < order.len()
                && (end == start || tokens + ids[order[end]].len() <= MAX_BATCH_TOKENS)
            {
                tokens += ids[order[end]].len();
                end += 1;
            }
            let group = &order[start..end];
            let mut packed = Vec::with_capacity(tokens);
            let mut lens = Vec::with_capacity(group.len());
            for &i in group {
                packed.extend_from_slice(&ids[i]);
                lens.push(ids[i].len());
            }
            let vectors = self
                .bert
                .embed_packed(&packed, &lens, self.pooling)
                .map_err(|e| EmbedError::Model(e.to_string()))?;
            for (&i, v) in group.iter().zip(vectors) {
                out[i] = v;
            }
            start = end;
        }
        Ok(out)
    }

    fn identity(&self) -> EmbedderIdentity {
        EmbedderIdentity {
            provider: "local",
            model: self.model_id.clone(),
            dimensions: Some(self.dimensions()),
            fingerprint: self.fingerprint.clone(),
        }
    }

    fn tokenizer(&self) -> Option<(&Tokenizer, usize)> {
        // [CLS] and [SEP] take two of the model's positions.
        Some((
            &self.chunk_tokenizer,
            self.max_seq_length.saturating_sub(2).max(1),
        ))
    }
}

fn optional(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(dir.join(name)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {name}: {e}")),
    }
}

fn hash_file(hash: &mut Sha256, path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hash.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::Value;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// The model installed by scripts/setup.sh, or `None` (with a message) when absent.
    pub(crate) fn model() -> Option<LocalEmbedder> {
        let dir = root().join("models/all-MiniLM-L6-v2");
        if !dir.join("model.safetensors").is_file() {
            eprintln!(
                "SKIPPED: {} is absent; run scripts/setup.sh to install the model",
                dir.display()
            );
            return None;
        }
        Some(LocalEmbedder::load(&dir).unwrap())
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn matches_sentence_transformers() {
        let Some(model) = model() else { return };
        let fixture: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("tests/fixtures/minilm_reference.json")).unwrap(),
        )
        .unwrap();
        let cases = fixture["texts"].as_array().unwrap();
        assert!(cases.len() >= 30);
        let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
        // All at once (mixed lengths in one packed batch) and one by one must both match.
        let together = model.embed(&texts).unwrap();
        let mut worst = (1.0f32, "");
        for (i, case) in cases.iter().enumerate() {
            let expected: Vec<f32> = case["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let alone = model.embed(&[texts[i]]).unwrap().remove(0);
            assert_eq!(alone.len(), 384);
            let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
            for got in [&together[i], &alone] {
                let c = cosine(got, &expected);
                if c < worst.0 {
                    worst = (c, texts[i]);
                }
                assert!(
                    c >= 0.999,
                    "text {i} ({} tokens) {:?}: cosine {c}",
                    case["tokens"],
                    texts[i].chars().take(60).collect::<String>()
                );
            }
            // Same truncation: the model reads min(tokens, max_seq_length) tokens.
            let tokens = case["tokens"].as_u64().unwrap() as usize;
            assert_eq!(
                model.tokenize(&[texts[i]]).unwrap()[0].len(),
                tokens.min(model.max_seq_length()),
                "token count of text {i}"
            );
        }
        eprintln!("worst cosine {} for {:?}", worst.0, worst.1);
    }

    #[test]
    fn shipped_tokenizer_limits_are_overridden() {
        let Some(model) = model() else { return };
        // tokenizer.json says truncate at 128 and pad to 128; sentence-transformers reads 256
        // tokens and pads only to the batch's longest text.
        assert_eq!(model.max_seq_length(), 256);
        let long = "word ".repeat(300);
        let ids = model.tokenize(&[&long, "short"]).unwrap();
        assert_eq!(ids[0].len(), 256);
        assert_eq!(ids[1].len(), 3);
        let (tokenizer, window) = model.tokenizer().unwrap();
        assert_eq!(window, 254);
        assert_eq!(tokenizer.encode(long.as_str(), false).unwrap().len(), 300);
    }

    #[test]
    fn identity_names_model_dimension_and_fingerprint() {
        let Some(model) = model() else { return };
        let id = model.identity();
        assert_eq!(
            (id.provider, id.model.as_str(), id.dimensions),
            ("local", "all-MiniLM-L6-v2", Some(384))
        );
        assert_eq!(id.fingerprint.len(), 16);
    }

    #[test]
    fn missing_or_broken_model_dir_names_the_path() {
        let missing = root().join("models/no-such-model");
        let err = LocalEmbedder::load(&missing).err().unwrap().to_string();
        assert!(
            err.contains("models/no-such-model") && err.contains("scripts/setup.sh"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = LocalEmbedder::load(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains(&dir.path().display().to_string())
                && err.contains("tokenizer.json is missing"),
            "{err}"
        );
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        std::fs::write(dir.path().join("model.safetensors"), "junk").unwrap();
        let err = LocalEmbedder::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("config.json is not a BERT config"), "{err}");
    }
}
