//! The decoder-only transformer (Llama / Qwen2 layout) over GGUF weights.
//!
//! Unlike candle's stock quantized models this one returns the logits of every position of a
//! block (what verification needs), keeps its KV cache outside the weights (so one copy of
//! the weights serves many sessions), truncates the cache to any length (rollback after a
//! rejected draft), exposes hidden states after any layer and runs any range of layers.

use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::ops::{self, RopeStyle, RopeTables};

/// Logits of a block: `rows × vocab`, row-major; row i scores the token after position i.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    vocab: usize,
    data: Vec<f32>,
}

impl Logits {
    /// Builds from raw row-major data (`data.len()` must be a multiple of `vocab`).
    pub fn new(vocab: usize, data: Vec<f32>) -> Self {
        debug_assert!(vocab > 0 && data.len() % vocab == 0);
        Self { vocab, data }
    }
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.len() / self.vocab
    }
    /// Vocabulary size (columns).
    pub fn vocab(&self) -> usize {
        self.vocab
    }
    /// Row i (panics if out of range: rows come from this crate, never from the wire).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }
    /// The last row.
    pub fn last(&self) -> &[f32] {
        self.row(self.rows() - 1)
    }
    /// All rows as slices.
    pub fn row_slices(&self) -> Vec<&[f32]> {
        self.data.chunks_exact(self.vocab).collect()
    }
}

/// Which rows of logits a forward pass computes (the LM head is the most expensive matmul of a
/// small model, so prefill asks only for the last row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Every position of the block (verification).
    All,
    /// The last position only (prefill, drafting).
    Last,
}

/// One decoder layer's weights.
pub struct DecoderLayer {
    attn_norm: Vec<f32>,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
}

fn qmatmul(t: Arc<QTensor>) -> Result<QMatMul> {
    Ok(QMatMul::from_arc(t)?)
}

impl DecoderLayer {
    fn load(f: &mut GgufFile, c: &ModelConfig, i: usize) -> Result<Self> {
        let (d, kv, ffn) = (c.hidden_size, c.num_kv_heads * c.head_dim, c.ffn_size);
        let n = |s: &str| format!("blk.{i}.{s}");
        let bias = |f: &mut GgufFile, s: &str, len| -> Result<Option<Vec<f32>>> {
            if c.arch == Architecture::Qwen2 || f.has_tensor(&n(s)) {
                f.vector(&n(s), len).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            attn_norm: f.vector(&n("attn_norm.weight"), d)?,
            wq: qmatmul(f.qtensor(&n("attn_q.weight"), &[d, d])?)?,
            wk: qmatmul(f.qtensor(&n("attn_k.weight"), &[kv, d])?)?,
            wv: qmatmul(f.qtensor(&n("attn_v.weight"), &[kv, d])?)?,
            wo: qmatmul(f.qtensor(&n("attn_output.weight"), &[d, d])?)?,
            bq: bias(f, "attn_q.bias", d)?,
            bk: bias(f, "attn_k.bias", kv)?,
            bv: bias(f, "attn_v.bias", kv)?,
            ffn_norm: f.vector(&n("ffn_norm.weight"), d)?,
            w_gate: qmatmul(f.qtensor(&n("ffn_gate.weight"), &[ffn, d])?)?,
            w_up: qmatmul(f.qtensor(&n("ffn_up.weight"), &[ffn, d])?)?,
            w_down: qmatmul(f.qtensor(&n("ffn_down.weight"), &[d, ffn])?)?,
        })
    }
}

/// Token embedding: quantized rows looked up directly when the row length fits the block
/// size, else a dequantized copy.
enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Vec<f32>),
}

/// A loaded model: shared, immutable weights. Pair it with a [`KvCache`] (or use
/// [`Session`]) to run it.
pub struct Transformer {
    config: ModelConfig,
    embedding: Embedding,
    layers: Vec<Arc<DecoderLayer>>,
    final_norm: Vec<f32>,
    head: QMatMul,
}

fn matmul(w: &QMatMul, x: &[f32], rows: usize, k: usize) -> Result<Vec<f32>> {
    let t = Tensor::from_slice(x, (rows, k), &Device::Cpu)?;
    Ok(w.forward(&t)?.flatten_all()?.to_vec1::<f32>()?)
}

fn add_bias(x: &mut [f32], b: &Option<Vec<f32>>) {
    if let Some(b) = b {
        for row in x.chunks_exact_mut(b.len()) {
            ops::add_assign(row, b);
        }
    }
}

impl Transformer {
    /// Loads a Llama or Qwen2 GGUF model. Tied embeddings are used as the LM head when the file
    /// has no `output.weight`.
    ///
    /// # Errors
    /// Unsupported architecture, missing metadata or tensors, wrong shapes — each naming the key.
    pub fn load(f: &mut GgufFile) -> Result<Self> {
        let config = ModelConfig::from_metadata(&f.metadata)?;
        let (v, d) = (config.vocab_size, config.hidden_size);
        let emb = f.qtensor("token_embd.weight", &[v, d])?;
        let embedding = if d % emb.dtype().block_size() == 0 {
            Embedding::Quantized(emb.clone())
        } else {
            Embedding::Dense(emb.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let head = if f.has_tensor("output.weight") {
            qmatmul(f.qtensor("output.weight", &[v, d])?)?
        } else {
            qmatmul(emb)?
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            layers.push(Arc::new(DecoderLayer::load(f, &config, i)?));
        }
        let final_norm = f.vector("output_norm.weight", d)?;
        Ok(Self { config, embedding, layers, final_norm, head })
    }

    /// The shared-backbone draft of DESIGN.md §5: the base's frozen embedding, its first
    /// `shared_layers` decoder layers, one anchor layer (here the base's last layer, or the
    /// given trained one), the base's final norm and LM head. Shares the base's weight memory.
    ///
    /// # Errors
    /// [`ModelError::Incompatible`] if `shared_layers` is not below the base's layer count.
    pub fn shared_backbone_draft(
        base: &Transformer,
        shared_layers: usize,
        anchor: Option<Arc<DecoderLayer>>,
    ) -> Result<Self> {
        let n = base.layers.len();
        if shared_layers >= n {
            return Err(ModelError::Incompatible(format!(
                "a shared-backbone draft reuses fewer layers than the base has ({shared_layers} ≥ {n})"
            )));
        }
        let mut layers: Vec<_> = base.layers[..shared_layers].to_vec();
        layers.push(anchor.unwrap_or_else(|| base.layers[n - 1].clone()));
        let mut config = base.config.clone();
        config.num_layers = layers.len();
        let embedding = match &base.embedding {
            Embedding::Quantized(q) => Embedding::Quantized(q.clone()),
            Embedding::Dense(v) => Embedding::Dense(v.clone()),
        };
        Ok(Self { config, embedding, layers, final_norm: base.final_norm.clone(), head: base.head.clone() })
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Embeds `tokens` → `len × d`.
    ///
    /// # Errors
    /// [`ModelError::TokenOutOfRange`] for an id ≥ V.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let v = self.config.vocab_size;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(ModelError::TokenOutOfRange { id, vocab_size: v });
        }
        match &self.embedding {
            Embedding::Quantized(q) => {
                let ids = Tensor::from_slice(tokens, tokens.len(), &Device::Cpu)?;
                Ok(q.embedding(&ids)?.flatten_all()?.to_vec1::<f32>()?)
            }
            Embedding::Dense(w) => {
                let d = self.config.hidden_size;
                Ok(tokens.iter().flat_map(|&t| w[t as usize * d..(t as usize + 1) * d].iter().copied()).collect())
            }
        }
    }

    /// Runs decoder layers `layers` over `hidden` (`rows × d`, positions `pos..pos+rows`),
    /// appending their keys/values to `cache`.
    ///
    /// # Errors
    /// [`ModelError::Tensor`] if a cache layer does not hold exactly `pos` positions (the
    /// explicit KV length is checked against the position), context overflow.
    pub fn run_layers(&self, cache: &mut KvCache, hidden: &mut [f32], pos: usize, layers: Range<usize>) -> Result<()> {
        let c = &self.config;
        let d = c.hidden_size;
        let rows = hidden.len() / d;
        if rows == 0 {
            return Err(ModelError::EmptyBlock);
        }
        if pos + rows > c.context_length {
            return Err(ModelError::ContextOverflow { needed: pos + rows, max: c.context_length });
        }
        if layers.end > self.layers.len() || cache.k.len() != self.layers.len() {
            return Err(ModelError::Tensor {
                name: "kv_cache".into(),
                reason: format!("cache has {} layers, model {}, asked for {layers:?}", cache.k.len(), self.layers.len()),
            });
        }
        let kv_dim = c.num_kv_heads * c.head_dim;
        let style = match c.arch {
            Architecture::Llama => RopeStyle::Interleaved,
            Architecture::Qwen2 => RopeStyle::Halves,
        };
        let rope = RopeTables::new(pos, rows, c.head_dim, c.rope_theta);
        for li in layers {
            let layer = &self.layers[li];
            if cache.k[li].len() != pos * kv_dim {
                return Err(ModelError::Tensor {
                    name: format!("kv_cache[{li}]"),
                    reason: format!("holds {} positions, forward starts at {pos}", cache.k[li].len() / kv_dim),
                });
            }
            let h = ops::rms_norm(hidden, &layer.attn_norm, c.rms_eps);
            let mut q = matmul(&layer.wq, &h, rows, d)?;
            let mut k = matmul(&layer.wk, &h, rows, d)?;
            let mut v = matmul(&layer.wv, &h, rows, d)?;
            add_bias(&mut q, &layer.bq);
            add_bias(&mut k, &layer.bk);
            add_bias(&mut v, &layer.bv);
            rope.apply(&mut q, c.num_heads, style);
            rope.apply(&mut k, c.num_kv_heads, style);
            cache.k[li].extend_from_slice(&k);
            cache.v[li].extend_from_slice(&v);
            let att = ops::causal_attention(&q, &cache.k[li], &cache.v[li], pos, c.num_heads, c.num_kv_heads, c.head_dim);
            let o = matmul(&layer.wo, &att, rows, d)?;
            ops::add_assign(hidden, &o);
            let h = ops::rms_norm(hidden, &layer.ffn_norm, c.rms_eps);
            let mut g = matmul(&layer.w_gate, &h, rows, d)?;
            let u = matmul(&layer.w_up, &h, rows, d)?;
            ops::silu_mul(&mut g, &u);
            let down = matmul(&layer.w_down, &g, rows, c.ffn_size)?;
            ops::add_assign(hidden, &down);
        }
        Ok(())
    }

    /// Final norm and LM head over `hidden` (`rows × d`) → logits `rows × V`.
    pub fn logits(&self, hidden: &[f32]) -> Result<Logits> {
        let d = self.config.hidden_size;
        let h = ops::rms_norm(hidden, &self.final_norm, self.config.rms_eps);
        let out = matmul(&self.head, &h, hidden.len() / d, d)?;
        Ok(Logits::new(self.config.vocab_size, out))
    }

    /// A full forward pass over a block of `tokens` at the cache's current length.
    /// Returns the logits of every position ([`LogitsFor::All`]) or of the last one.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32], want: LogitsFor) -> Result<Logits> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyBlock);
        }
        let pos = cache.len();
        let mut hidden = self.embed(tokens)?;
        if let Err(e) = self.run_layers(cache, &mut hidden, pos, 0..self.layers.len()) {
            // Leave the cache as it was: a failed block commits nothing.
            cache.truncate(pos)?;
            return Err(e);
        }
        match want {
            LogitsFor::All => self.logits(&hidden),
            LogitsFor::Last => {
                let d = self.config.hidden_size;
                self.logits(&hidden[hidden.len() - d..])
            }
        }
    }

    /// A KV cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            k: vec![Vec::new(); self.layers.len()],
            v: vec![Vec::new(); self.layers.len()],
            kv_dim: self.config.num_kv_heads * self.config.head_dim,
        }
    }
}

/// Per-session keys and values of every layer: `positions × kv_heads × head_dim` each.
#[derive(Clone)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    kv_dim: usize,
}

impl KvCache {
    /// Positions held (of the first layer; layers agree after every full forward).
    pub fn len(&self) -> usize {
        self.k.first().map_or(0, |k| k.len() / self.kv_dim)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every position at or after `len` in every layer (rollback after a rejection).
    ///
    /// # Errors
    /// [`ModelError::BadTruncate`] when `len` is beyond what a layer holds.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        for (k, v) in self.k.iter_mut().zip(self.v.iter_mut()) {
            let have = k.len() / self.kv_dim;
            if len > have {
                return Err(ModelError::BadTruncate { len: have, requested: len });
            }
            k.truncate(len * self.kv_dim);
            v.truncate(len * self.kv_dim);
        }
        Ok(())
    }
}

/// A model with its own KV cache: what a draft on the edge or one cloud session runs.
pub struct Session {
    model: Arc<Transformer>,
    cache: KvCache,
}

impl Session {
    /// A fresh session (empty cache) over shared weights.
    pub fn new(model: Arc<Transformer>) -> Self {
        let cache = model.new_cache();
        Self { model, cache }
    }
    /// The model.
    pub fn model(&self) -> &Arc<Transformer> {
        &self.model
    }
    /// Positions in the KV cache.
    pub fn kv_len(&self) -> usize {
        self.cache.len()
    }
    /// Forward over `tokens` appended at [`Self::kv_len`].
    pub fn forward(&mut self, tokens: &[u32], want: LogitsFor) -> Result<Logits> {
        self.model.forward(&mut self.cache, tokens, want)
    }
    /// Rolls the KV cache back to `len` positions.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        self.cache.truncate(len)
    }
}
