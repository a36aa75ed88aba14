//! A BERT encoder (the architecture of all-MiniLM-L6-v2 and most sentence-transformers
//! models) on candle, with sentence-transformers' mean pooling and L2 normalisation.
//!
//! Sequences are packed, not padded: the tokens of every text in a batch are laid end to end
//! in one `[tokens, hidden]` matrix, so the dense layers (nearly all of the work) never compute
//! a padding row, and only attention is done per text. The result equals the padded,
//! masked computation sentence-transformers does, up to float summation order.
//!
//! Two folds done once at load time save work on every batch: the query, key and value
//! projections are one `[3·hidden, hidden]` matrix (one matrix product instead of three), and
//! the attention scale `1/√head_dim` is multiplied into the query weights. The dense layers,
//! attention and GELU run in the kernels of [`super::kernels`]; candle holds the weights and
//! does the embeddings lookup and the layer norms.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::kernels::{self, Epilogue};
use serde::Deserialize;

/// The fields of a Hugging Face `config.json` this encoder reads.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    /// Size of the token vocabulary.
    pub vocab_size: usize,
    /// Width of every hidden state (384 for MiniLM-L6).
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward layer; only the exact (erf) GELU is supported.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Longest sequence the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// Epsilon of every layer norm.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// `bert` (others with the same layout may work but are not checked).
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}

/// How the token states of one text become its vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the text's tokens (sentence-transformers' `pooling_mode_mean_tokens`).
    Mean,
    /// The state of the first (`[CLS]`) token.
    Cls,
}

/// Why a model could not be loaded or run. Carries candle's message.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    /// The config asks for something this encoder does not implement.
    #[error("unsupported model config: {0}")]
    Unsupported(String),
    /// A weight is missing or has the wrong shape.
    #[error("weights: {0}")]
    Weights(String),
    /// candle failed while loading or computing.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A dense layer as [`kernels::linear`] wants it: the weight transposed to `[in, out]`.
struct Dense {
    weight_t: Tensor,
    bias: Tensor,
}

impl Dense {
    fn new(linear: &Linear) -> Result<Dense, BertError> {
        Ok(Dense {
            weight_t: linear.weight().t()?.contiguous()?,
            bias: linear
                .bias()
                .cloned()
                .ok_or_else(|| BertError::Weights("dense layer without bias".into()))?,
        })
    }

    fn forward(&self, x: &Tensor, epilogue: Epilogue<'_>) -> Result<Tensor, BertError> {
        Ok(kernels::linear(x, &self.weight_t, &self.bias, epilogue)?)
    }
}

struct Layer {
    /// Query, key and value projections fused; the query part is pre-scaled.
    qkv: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    ffn_in: Dense,
    ffn_out: Dense,
    ffn_norm: LayerNorm,
}

/// A loaded BERT encoder that turns token ids into pooled, normalised sentence vectors.
/// `Send + Sync`: any number of threads may call [`Bert::embed_packed`] at once.
pub struct Bert {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    /// Row 0 of the token-type table: every token is in segment 0 for single texts.
    token_type_row: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    max_positions: usize,
    device: Device,
}

/// Weight lookup that names the missing tensor.
struct Weights {
    tensors: HashMap<String, Tensor>,
    /// `bert.` when the checkpoint was saved from a model with a head.
    prefix: String,
}

impl Weights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, BertError> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .tensors
            .get(&full)
            .ok_or_else(|| BertError::Weights(format!("tensor `{full}` is missing")))?;
        if t.dims() != shape {
            return Err(BertError::Weights(format!(
                "tensor `{full}` has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?)
    }

    fn linear(&self, name: &str, out: usize, inp: usize) -> Result<Linear, BertError> {
        Ok(Linear::new(
            self.get(&format!("{name}.weight"), &[out, inp])?,
            Some(self.get(&format!("{name}.bias"), &[out])?),
        ))
    }

    fn layer_norm(&self, name: &str, size: usize, eps: f64) -> Result<LayerNorm, BertError> {
        Ok(LayerNorm::new(
            self.get(&format!("{name}.weight"), &[size])?,
            self.get(&format!("{name}.bias"), &[size])?,
            eps,
        ))
    }
}

impl Bert {
    /// Loads `model.safetensors` with the architecture described by `config`.
    pub fn load(weights: &Path, config: &BertConfig) -> Result<Bert, BertError> {
        // Hugging Face's `gelu` is the exact (erf) form; `gelu_new` is the tanh approximation.
        if !matches!(config.hidden_act.as_str(), "gelu" | "gelu_python") {
            return Err(BertError::Unsupported(format!(
                "hidden_act `{}` (only `gelu` is implemented)",
                config.hidden_act
            )));
        }
        if config
            .position_embedding_type
            .as_deref()
            .is_some_and(|t| t != "absolute")
        {
            return Err(BertError::Unsupported(
                "position_embedding_type other than `absolute`".into(),
            ));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(BertError::Unsupported(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(weights, &device)?;
        let prefix = if tensors.contains_key("embeddings.word_embeddings.weight") {
            String::new()
        } else {
            "bert.".to_string()
        };
        let w = Weights { tensors, prefix };
        let h = config.hidden_size;
        let heads = config.num_attention_heads;
        let head_dim = h / heads;
        let eps = config.layer_norm_eps;
        let scale = 1.0 / (head_dim as f64).sqrt();

        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = w.linear(&format!("{p}.attention.self.query"), h, h)?;
            let k = w.linear(&format!("{p}.attention.self.key"), h, h)?;
            let v = w.linear(&format!("{p}.attention.self.value"), h, h)?;
            let bias = |l: &Linear| {
                l.bias()
                    .cloned()
                    .ok_or_else(|| BertError::Weights("attention bias missing".into()))
            };
            let qkv_weight = Tensor::cat(
                &[
                    (q.weight() * scale)?,
                    k.weight().clone(),
                    v.weight().clone(),
                ],
                0,
            )?;
            let qkv_bias = Tensor::cat(&[(bias(&q)? * scale)?, bias(&k)?, bias(&v)?], 0)?;
            let dense = |name: &str, out: usize, inp: usize| -> Result<Dense, BertError> {
                Dense::new(&w.linear(&format!("{p}.{name}"), out, inp)?)
            };
            layers.push(Layer {
                qkv: Dense::new(&Linear::new(qkv_weight, Some(qkv_bias)))?,
                attn_out: dense("attention.output.dense", h, h)?,
                attn_norm: w.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                ffn_in: dense("intermediate.dense", config.intermediate_size, h)?,
                ffn_out: dense("output.dense", h, config.intermediate_size)?,
                ffn_norm: w.layer_norm(&format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Bert {
            word_embeddings: w.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position_embeddings: w.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type_row: w
                .get(
                    "embeddings.token_type_embeddings.weight",
                    &[config.type_vocab_size, h],
                )?
                .i(0..1)?,
            embed_norm: w.layer_norm("embeddings.LayerNorm", h, eps)?,
            layers,
            heads,
            head_dim,
            hidden: h,
            max_positions: config.max_position_embeddings,
            device,
        })
    }

    /// Width of the output vectors.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Longest sequence (special tokens included) the model can take.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Encodes texts given as token ids laid end to end (`ids`), `lens[i]` tokens each, and
    /// returns one pooled, L2-normalised vector per text. Every length must be between 1
    /// and [`max_positions`](Self::max_positions).
    pub fn embed_packed(
        &self,
        ids: &[u32],
        lens: &[usize],
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, BertError> {
        let total: usize = lens.iter().sum();
        if total != ids.len() || lens.iter().any(|&l| l == 0 || l > self.max_positions) {
            return Err(BertError::Unsupported(format!(
                "bad packed batch: {} ids, lengths {lens:?} (each 1..={})",
                ids.len(),
                self.max_positions
            )));
        }
        if lens.is_empty() {
            return Ok(Vec::new());
        }
        let positions: Vec<u32> = lens.iter().flat_map(|&l| 0..l as u32).collect();
        let ids = Tensor::from_slice(ids, total, &self.device)?;
        let positions = Tensor::from_slice(&positions, total, &self.device)?;
        let x = self
            .word_embeddings
            .index_select(&ids, 0)?
            .add(&self.position_embeddings.index_select(&positions, 0)?)?
            .broadcast_add(&self.token_type_row)?;
        let mut x = self.embed_norm.forward(&x)?;
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, lens)?;
        }
        pool(&x, lens, pooling)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        lens: &[usize],
    ) -> Result<Tensor, BertError> {
        let qkv = layer.qkv.forward(x, Epilogue::None)?;
        let context = kernels::packed_attention(&qkv, lens, self.heads, self.head_dim)?;
        let attended = layer.attn_out.forward(&context, Epilogue::Residual(x))?;
        let attended = layer.attn_norm.forward(&attended)?;
        let inner = layer.ffn_in.forward(&attended, Epilogue::Gelu)?;
        let out = layer
            .ffn_out
            .forward(&inner, Epilogue::Residual(&attended))?;
        Ok(layer.ffn_norm.forward(&out)?)
    }
}

/// Pools each text's token states, then L2-normalises (sentence-transformers' Pooling
/// followed by Normalize).
fn pool(x: &Tensor, lens: &[usize], pooling: Pooling) -> Result<Vec<Vec<f32>>, BertError> {
    let mut out = Vec::with_capacity(lens.len());
    let mut start = 0;
    for &len in lens {
        let pooled = match pooling {
            Pooling::Mean => (x.narrow(0, start, len)?.sum(0)? / len as f64)?,
            Pooling::Cls => x.get(start)?,
        };
        let v: Vec<f32> = pooled.to_vec1()?;
        // sentence-transformers' Normalize divides by max(norm, 1e-12).
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        out.push(v.into_iter().map(|x| x / norm).collect());
        start += len;
    }
    Ok(out)
}
