//! The decoder-only transformer (Llama / Qwen2 layout) over GGUF weights.
//!
//! Unlike candle's stock quantized models this one returns the logits of every position of a
//! block (what verification needs), keeps its KV cache outside the weights (so one copy of
//! the weights serves many sessions), truncates the cache to any length (rollback after a
//! rejected draft), exposes hidden states after any layer and runs any range of layers.

use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::kernels::{self, QWeight};
use crate::lora::{LoraAdapter, LoraPair, LoraTarget};
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
        debug_assert!(vocab > 0 && data.len().is_multiple_of(vocab));
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
    wq: QWeight,
    wk: QWeight,
    wv: QWeight,
    wo: QWeight,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    w_gate: QWeight,
    w_up: QWeight,
    w_down: QWeight,
}

impl DecoderLayer {
    /// A layer from f32 tensors named by their GGUF suffix (`attn_q.weight`, …, see
    /// [`crate::anchor::layer_tensors`]), rows in the runtime's order. `get(suffix, shape)`
    /// returns the row-major values of a tensor of that shape. Matrices are quantized to Q8_0
    /// (what the runtime multiplies the base's Q4/Q5 layers by, and row-wise deterministic)
    /// when their rows split into 32-value blocks, else kept as F32.
    ///
    /// # Errors
    /// Whatever `get` reports (a missing tensor or a wrong shape); tensor backend errors.
    pub fn from_f32(
        c: &ModelConfig,
        mut get: impl FnMut(&str, &[usize]) -> Result<Vec<f32>>,
    ) -> Result<Self> {
        let (d, kv, ffn) = (c.hidden_size, c.num_kv_heads * c.head_dim, c.ffn_size);
        let mut mat = |s: &str, rows: usize, cols: usize| -> Result<QWeight> {
            let v = get(s, &[rows, cols])?;
            if !cols.is_multiple_of(32) {
                return Ok(QWeight::from_f32(rows, cols, v));
            }
            let t = Tensor::from_vec(v, (rows, cols), &Device::Cpu)?;
            let q = QTensor::quantize(&t, candle_core::quantized::GgmlDType::Q8_0)?;
            crate::gguf::to_weight(&q, rows, cols)
        };
        let wq = mat("attn_q.weight", d, d)?;
        let wk = mat("attn_k.weight", kv, d)?;
        let wv = mat("attn_v.weight", kv, d)?;
        let wo = mat("attn_output.weight", d, d)?;
        let w_gate = mat("ffn_gate.weight", ffn, d)?;
        let w_up = mat("ffn_up.weight", ffn, d)?;
        let w_down = mat("ffn_down.weight", d, ffn)?;
        let qwen = c.arch == Architecture::Qwen2;
        Ok(Self {
            attn_norm: get("attn_norm.weight", &[d])?,
            wq,
            wk,
            wv,
            wo,
            bq: if qwen {
                Some(get("attn_q.bias", &[d])?)
            } else {
                None
            },
            bk: if qwen {
                Some(get("attn_k.bias", &[kv])?)
            } else {
                None
            },
            bv: if qwen {
                Some(get("attn_v.bias", &[kv])?)
            } else {
                None
            },
            ffn_norm: get("ffn_norm.weight", &[d])?,
            w_gate,
            w_up,
            w_down,
        })
    }

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
            wq: f.weight(&n("attn_q.weight"), [d, d])?,
            wk: f.weight(&n("attn_k.weight"), [kv, d])?,
            wv: f.weight(&n("attn_v.weight"), [kv, d])?,
            wo: f.weight(&n("attn_output.weight"), [d, d])?,
            bq: bias(f, "attn_q.bias", d)?,
            bk: bias(f, "attn_k.bias", kv)?,
            bv: bias(f, "attn_v.bias", kv)?,
            ffn_norm: f.vector(&n("ffn_norm.weight"), d)?,
            w_gate: f.weight(&n("ffn_gate.weight"), [ffn, d])?,
            w_up: f.weight(&n("ffn_up.weight"), [ffn, d])?,
            w_down: f.weight(&n("ffn_down.weight"), [d, ffn])?,
        })
    }
}

/// The LoRA updates of one decoder layer (indexed like [`LoraTarget::ALL`]) and their scale.
struct LayerLora {
    scale: f32,
    pairs: [Option<LoraPair>; 7],
}

impl LayerLora {
    /// `y += scale · B (A x)` when `target` is adapted in this layer.
    fn apply(this: &Option<Arc<LayerLora>>, target: LoraTarget, x: &[f32], y: &mut [f32]) {
        if let Some(l) = this {
            if let Some(p) = &l.pairs[target as usize] {
                p.apply(x, y, l.scale);
            }
        }
    }
}

/// A loaded model: shared, immutable weights. Pair it with a [`KvCache`] (or use
/// [`Session`]) to run it.
pub struct Transformer {
    config: ModelConfig,
    /// Token embedding (`V × d`): rows dequantized on lookup.
    embedding: QWeight,
    layers: Vec<Arc<DecoderLayer>>,
    /// LoRA updates per layer (a target version); `None` for a base layer.
    lora: Vec<Option<Arc<LayerLora>>>,
    final_norm: Vec<f32>,
    head: QWeight,
    /// FR-Spec draft head: only these rows of `head` are scored.
    subset: Option<HeadSubset>,
}

/// The LM head restricted to a subset of the vocabulary (FR-Spec, Zhao et al. 2025,
/// arXiv 2502.14856): the same frozen rows, gathered, so a draft scores N tokens instead of V.
#[derive(Clone)]
struct HeadSubset {
    /// Token ids scored, in the order of `head`'s rows.
    ids: Arc<Vec<u32>>,
    /// `N × d`: the full head's rows, their bytes unchanged.
    head: QWeight,
}

/// One session's part of a batched forward pass ([`Transformer::forward_batch`]).
pub struct BatchItem<'a> {
    /// The session's model (its target version): must share item 0's base weights.
    pub model: &'a Transformer,
    /// The session's KV cache; `tokens` are appended at its length.
    pub cache: &'a mut KvCache,
    /// The block: a prompt chunk, or the last committed token and the drafts.
    pub tokens: &'a [u32],
    /// Which logits to return; `None` for a prefill chunk that is not the prompt's last.
    pub want: Option<LogitsFor>,
}

/// What [`Transformer::check_block`] looks at.
struct Block<'a> {
    cache: &'a KvCache,
    pos: usize,
    rows: usize,
}

/// A block of rows of a batched pass: whose cache and LoRA, at which position.
struct Segment<'a> {
    lora: &'a [Option<Arc<LayerLora>>],
    cache: &'a mut KvCache,
    pos: usize,
    rows: usize,
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
        let embedding = f.weight("token_embd.weight", [v, d])?;
        let head = if f.has_tensor("output.weight") {
            f.weight("output.weight", [v, d])?
        } else {
            embedding.clone()
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            layers.push(Arc::new(DecoderLayer::load(f, &config, i)?));
        }
        let final_norm = f.vector("output_norm.weight", d)?;
        let lora = vec![None; layers.len()];
        Ok(Self {
            config,
            embedding,
            layers,
            lora,
            final_norm,
            head,
            subset: None,
        })
    }

    /// A target version: `base` with `adapter`'s low-rank updates added to the projections it
    /// targets (`W x + (alpha/r) · B (A x)`, after the base projection's bias, before RoPE).
    /// Shares the base's quantized weights; only the adapter's A and B are new memory. The
    /// updates are computed row by row ([`LoraPair::apply`]), so a block forward stays
    /// bit-identical to token-by-token. Adapting an already adapted model stacks nothing: the
    /// result is `base`'s layers with `adapter` only.
    ///
    /// # Errors
    /// [`ModelError::Lora`] when the adapter does not fit the base (layer out of range, shapes,
    /// ranks).
    pub fn with_adapter(base: &Transformer, adapter: &LoraAdapter) -> Result<Self> {
        adapter.validate(&base.config)?;
        let mut per_layer: Vec<Option<LayerLora>> = (0..base.layers.len()).map(|_| None).collect();
        for (&(layer, target), pair) in adapter.iter() {
            let l = per_layer[layer].get_or_insert_with(|| LayerLora {
                scale: adapter.scale(),
                pairs: Default::default(),
            });
            l.pairs[target as usize] = Some(pair.clone());
        }
        Ok(Self {
            config: base.config.clone(),
            embedding: base.embedding.clone(),
            layers: base.layers.clone(),
            lora: per_layer.into_iter().map(|l| l.map(Arc::new)).collect(),
            final_norm: base.final_norm.clone(),
            head: base.head.clone(),
            subset: base.subset.clone(),
        })
    }

    /// A model built from f32 parts: `embedding` (`V × d`, row-major, also the LM head: tied),
    /// `layers` in order, `final_norm` (`d`). `config` is the base's with `num_layers` set to
    /// `layers.len()`. The embedding is stored as Q8_0 when `d` splits into 32-value blocks
    /// (like [`DecoderLayer::from_f32`]'s matrices), else kept dense; the head multiplies by the
    /// same Q8_0 rows.
    ///
    /// # Errors
    /// [`ModelError::Incompatible`] when the parts' sizes disagree with `config`; tensor
    /// backend errors.
    pub fn from_f32_parts(
        config: ModelConfig,
        embedding: Vec<f32>,
        layers: Vec<DecoderLayer>,
        final_norm: Vec<f32>,
    ) -> Result<Self> {
        let (v, d) = (config.vocab_size, config.hidden_size);
        if embedding.len() != v * d || final_norm.len() != d || layers.len() != config.num_layers {
            return Err(ModelError::Incompatible(format!(
                "model parts: embedding {} values (V·d = {}), final norm {} (d = {}), {} layers ({} configured)",
                embedding.len(),
                v * d,
                final_norm.len(),
                d,
                layers.len(),
                config.num_layers
            )));
        }
        let embedding = if d.is_multiple_of(32) {
            let t = Tensor::from_vec(embedding, (v, d), &Device::Cpu)?;
            let q = QTensor::quantize(&t, candle_core::quantized::GgmlDType::Q8_0)?;
            crate::gguf::to_weight(&q, v, d)?
        } else {
            QWeight::from_f32(v, d, embedding)
        };
        let head = embedding.clone();
        let lora = vec![None; layers.len()];
        Ok(Self {
            config,
            embedding,
            layers: layers.into_iter().map(Arc::new).collect(),
            lora,
            final_norm,
            head,
            subset: None,
        })
    }

    /// Whether any layer carries a LoRA update.
    pub fn is_adapted(&self) -> bool {
        self.lora.iter().any(Option::is_some)
    }

    /// The shared-backbone draft of design.md §5: the base's frozen embedding, its first
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
        let mut lora: Vec<_> = base.lora[..shared_layers].to_vec();
        match anchor {
            Some(a) => {
                layers.push(a);
                lora.push(None);
            }
            None => {
                layers.push(base.layers[n - 1].clone());
                lora.push(base.lora[n - 1].clone());
            }
        }
        let mut config = base.config.clone();
        config.num_layers = layers.len();
        let embedding = base.embedding.clone();
        Ok(Self {
            config,
            embedding,
            layers,
            lora,
            final_norm: base.final_norm.clone(),
            head: base.head.clone(),
            subset: base.subset.clone(),
        })
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
        let d = self.config.hidden_size;
        let mut out = vec![0f32; tokens.len() * d];
        for (&t, o) in tokens.iter().zip(out.chunks_exact_mut(d)) {
            self.embedding.dequantize_row_into(t as usize, o);
        }
        Ok(out)
    }

    /// Runs decoder layers `layers` over `hidden` (`rows × d`, positions `pos..pos+rows`),
    /// appending their keys/values to `cache`.
    ///
    /// # Errors
    /// [`ModelError::Tensor`] if a cache layer does not hold exactly `pos` positions (the
    /// explicit KV length is checked against the position), context overflow.
    pub fn run_layers(
        &self,
        cache: &mut KvCache,
        hidden: &mut [f32],
        pos: usize,
        layers: Range<usize>,
    ) -> Result<()> {
        let rows = hidden.len() / self.config.hidden_size;
        self.check_block(cache, pos, rows, &layers)?;
        let mut seg = [Segment {
            lora: &self.lora,
            cache,
            pos,
            rows,
        }];
        self.run_segments(&mut seg, hidden, layers)
    }

    /// Checks that a block of `rows` at `pos` fits the context and that `cache` holds exactly
    /// `pos` positions in every layer of `layers`.
    fn check_block(
        &self,
        cache: &KvCache,
        pos: usize,
        rows: usize,
        layers: &Range<usize>,
    ) -> Result<()> {
        let c = &self.config;
        let s = Block { cache, pos, rows };
        if s.rows == 0 {
            return Err(ModelError::EmptyBlock);
        }
        if s.pos + s.rows > c.context_length {
            return Err(ModelError::ContextOverflow {
                needed: s.pos + s.rows,
                max: c.context_length,
            });
        }
        if layers.end > self.layers.len() || s.cache.k.len() != self.layers.len() {
            return Err(ModelError::Tensor {
                name: "kv_cache".into(),
                reason: format!(
                    "cache has {} layers, model {}, asked for {layers:?}",
                    s.cache.k.len(),
                    self.layers.len()
                ),
            });
        }
        let kv_dim = c.num_kv_heads * c.head_dim;
        for li in layers.clone() {
            if s.cache.k[li].len() != s.pos * kv_dim {
                return Err(ModelError::Tensor {
                    name: format!("kv_cache[{li}]"),
                    reason: format!(
                        "holds {} positions, forward starts at {}",
                        s.cache.k[li].len() / kv_dim,
                        s.pos
                    ),
                });
            }
        }
        Ok(())
    }

    /// The layers over `hidden`, the rows of every segment one after another: the weight
    /// matmuls run once over all rows (this model's base weights), each segment's LoRA
    /// update, RoPE, KV cache and attention are its own. Every kernel is row-wise, so a row's
    /// numbers do not depend on the other rows. Segments were checked by
    /// [`Self::check_block`].
    fn run_segments(
        &self,
        segs: &mut [Segment<'_>],
        hidden: &mut [f32],
        layers: Range<usize>,
    ) -> Result<()> {
        let c = &self.config;
        let d = c.hidden_size;
        let rows = hidden.len() / d;
        let (qd, kvd) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let style = match c.arch {
            Architecture::Llama => RopeStyle::Interleaved,
            Architecture::Qwen2 => RopeStyle::Halves,
        };
        let ropes: Vec<RopeTables> = segs
            .iter()
            .map(|s| RopeTables::new(s.pos, s.rows, c.head_dim, c.rope_theta))
            .collect();
        // Applies `f(segment, lora, its rows of a, its rows of b)` per segment.
        fn per_segment<'s>(
            segs: &mut [Segment<'s>],
            a: (&[f32], usize),
            b: (&mut [f32], usize),
            mut f: impl FnMut(usize, &mut Segment<'s>, &[f32], &mut [f32]),
        ) {
            let (mut ra, mut rb) = (0, 0);
            for (i, s) in segs.iter_mut().enumerate() {
                let (na, nb) = (s.rows * a.1, s.rows * b.1);
                f(i, s, &a.0[ra..ra + na], &mut b.0[rb..rb + nb]);
                (ra, rb) = (ra + na, rb + nb);
            }
        }
        for li in layers {
            let layer = &self.layers[li];
            let lora = |s: &Segment<'_>| s.lora[li].clone();
            let h = ops::rms_norm(hidden, &layer.attn_norm, c.rms_eps);
            let [mut q, mut k, mut v]: [Vec<f32>; 3] =
                kernels::matmul_many(&[&layer.wq, &layer.wk, &layer.wv], &h, rows)
                    .try_into()
                    .expect("three products");
            add_bias(&mut q, &layer.bq);
            add_bias(&mut k, &layer.bk);
            add_bias(&mut v, &layer.bv);
            for (t, y, n) in [
                (LoraTarget::AttnQ, &mut q, qd),
                (LoraTarget::AttnK, &mut k, kvd),
                (LoraTarget::AttnV, &mut v, kvd),
            ] {
                per_segment(segs, (&h, d), (y, n), |_, s, x, y| {
                    LayerLora::apply(&lora(s), t, x, y)
                });
            }
            let mut att = vec![0f32; rows * qd];
            let mut r = 0;
            for (s, rope) in segs.iter_mut().zip(&ropes) {
                let (qs, ks, vs) = (
                    &mut q[r * qd..(r + s.rows) * qd],
                    &mut k[r * kvd..(r + s.rows) * kvd],
                    &v[r * kvd..(r + s.rows) * kvd],
                );
                rope.apply(qs, c.num_heads, style);
                rope.apply(ks, c.num_kv_heads, style);
                s.cache.k[li].extend_from_slice(ks);
                s.cache.v[li].extend_from_slice(vs);
                let a = ops::causal_attention(
                    qs,
                    &s.cache.k[li],
                    &s.cache.v[li],
                    s.pos,
                    c.num_heads,
                    c.num_kv_heads,
                    c.head_dim,
                );
                att[r * qd..(r + s.rows) * qd].copy_from_slice(&a);
                r += s.rows;
            }
            let mut o = kernels::matmul(&layer.wo, &att, rows);
            per_segment(segs, (&att, qd), (&mut o, d), |_, s, x, y| {
                LayerLora::apply(&lora(s), LoraTarget::AttnOutput, x, y)
            });
            ops::add_assign(hidden, &o);
            let h = ops::rms_norm(hidden, &layer.ffn_norm, c.rms_eps);
            let [mut g, mut u]: [Vec<f32>; 2] =
                kernels::matmul_many(&[&layer.w_gate, &layer.w_up], &h, rows)
                    .try_into()
                    .expect("two products");
            let f = c.ffn_size;
            per_segment(segs, (&h, d), (&mut g, f), |_, s, x, y| {
                LayerLora::apply(&lora(s), LoraTarget::FfnGate, x, y)
            });
            per_segment(segs, (&h, d), (&mut u, f), |_, s, x, y| {
                LayerLora::apply(&lora(s), LoraTarget::FfnUp, x, y)
            });
            ops::silu_mul(&mut g, &u);
            let mut down = kernels::matmul(&layer.w_down, &g, rows);
            per_segment(segs, (&g, f), (&mut down, d), |_, s, x, y| {
                LayerLora::apply(&lora(s), LoraTarget::FfnDown, x, y)
            });
            ops::add_assign(hidden, &down);
        }
        Ok(())
    }

    /// Whether `other` runs on this model's base weights (embedding, decoder layers, final
    /// norm and LM head the same memory or values): then the two may share a batched forward
    /// pass ([`Self::forward_batch`]), each with its own LoRA update.
    pub fn shares_base_with(&self, other: &Transformer) -> bool {
        let same_emb = self.embedding.same_memory(&other.embedding);
        let same_head = self.head.same_memory(&other.head);
        let same_subset = match (&self.subset, &other.subset) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a.ids, &b.ids),
            _ => false,
        };
        same_emb
            && same_head
            && same_subset
            && self.final_norm == other.final_norm
            && self.layers.len() == other.layers.len()
            && self
                .layers
                .iter()
                .zip(&other.layers)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// One forward pass over the blocks of several sessions at once (iteration-level
    /// batching, as in Orca / vLLM): item i's `tokens` are appended at its cache's length and
    /// run through every layer together with the other items' rows — the weight matmuls
    /// once over all `Σ tokens.len()` rows, attention per item over its own cache, each
    /// item's LoRA update (its target version) on its own rows.
    ///
    /// **Invariant:** each row is computed with exactly the operations of
    /// [`Self::forward`] on that item alone, so an item's logits do not depend on what else
    /// shares the batch.
    ///
    /// Returns, per item in order, its logits (`want`: every row, the last, or none for a
    /// prefill chunk that is not the last) or its own error (empty block, out-of-vocabulary
    /// id, context overflow, a cache that does not fit, a model on other base weights than
    /// item 0's, see [`Self::shares_base_with`]); a failed item's cache is untouched and the
    /// others still run.
    ///
    /// # Errors
    /// A tensor backend failure of the pass itself; every cache is then rolled back.
    pub fn forward_batch(items: &mut [BatchItem<'_>]) -> Result<Vec<Result<Option<Logits>>>> {
        let Some(base) = items.first().map(|i| i.model) else {
            return Ok(Vec::new());
        };
        let d = base.config.hidden_size;
        let all = 0..base.layers.len();
        let mut out: Vec<Result<Option<Logits>>> = Vec::with_capacity(items.len());
        let mut hidden = Vec::new();
        let mut live = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let checked = if !it.model.shares_base_with(base) {
                Err(ModelError::Incompatible(format!(
                    "batch item {i} runs on other base weights than item 0"
                )))
            } else {
                base.check_block(it.cache, it.cache.len(), it.tokens.len(), &all)
                    .and_then(|()| it.model.embed(it.tokens))
            };
            match checked {
                Ok(h) => {
                    hidden.extend_from_slice(&h);
                    live.push(i);
                    out.push(Ok(None));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if live.is_empty() {
            return Ok(out);
        }
        let starts: Vec<usize> = live.iter().map(|&i| items[i].cache.len()).collect();
        let mut segs: Vec<Segment<'_>> = Vec::with_capacity(live.len());
        let mut wants = Vec::with_capacity(live.len());
        let mut li = 0;
        for (i, it) in items.iter_mut().enumerate() {
            if live.get(li) == Some(&i) {
                segs.push(Segment {
                    lora: &it.model.lora,
                    pos: starts[li],
                    rows: it.tokens.len(),
                    cache: &mut *it.cache,
                });
                wants.push(it.want);
                li += 1;
            }
        }
        if let Err(e) = base.run_segments(&mut segs, &mut hidden, all) {
            for (s, &p) in segs.iter_mut().zip(&starts) {
                s.cache.truncate(p)?;
            }
            return Err(e);
        }
        // The LM head once over every row that wants logits.
        let mut picked = Vec::new();
        let mut counts = Vec::with_capacity(segs.len());
        let mut r = 0;
        for (s, want) in segs.iter().zip(&wants) {
            let n = match want {
                Some(LogitsFor::All) => s.rows,
                Some(LogitsFor::Last) => 1,
                None => 0,
            };
            let end = (r + s.rows) * d;
            picked.extend_from_slice(&hidden[end - n * d..end]);
            counts.push(n);
            r += s.rows;
        }
        drop(segs);
        let logits = if picked.is_empty() {
            None
        } else {
            match base.logits(&picked) {
                Ok(l) => Some(l),
                Err(e) => {
                    for (&i, &p) in live.iter().zip(&starts) {
                        items[i].cache.truncate(p)?;
                    }
                    return Err(e);
                }
            }
        };
        let v = base.config.vocab_size;
        let mut row = 0;
        for (&i, &n) in live.iter().zip(&counts) {
            if let (Some(l), true) = (&logits, n > 0) {
                let data = l.data[row * v..(row + n) * v].to_vec();
                out[i] = Ok(Some(Logits::new(v, data)));
                row += n;
            }
        }
        Ok(out)
    }

    /// Final norm and LM head over `hidden` (`rows × d`) → logits `rows × V`. With a
    /// vocabulary subset ([`Self::with_vocab_subset`]) only the subset is scored and every
    /// other logit is −∞ (probability 0 after softmax).
    pub fn logits(&self, hidden: &[f32]) -> Result<Logits> {
        let d = self.config.hidden_size;
        let rows = hidden.len() / d;
        let h = ops::rms_norm(hidden, &self.final_norm, self.config.rms_eps);
        let v = self.config.vocab_size;
        let Some(sub) = &self.subset else {
            return Ok(Logits::new(v, kernels::matmul(&self.head, &h, rows)));
        };
        let small = kernels::matmul(&sub.head, &h, rows);
        let n = sub.ids.len();
        let mut out = vec![f32::NEG_INFINITY; rows * v];
        for (row, src) in out.chunks_exact_mut(v).zip(small.chunks_exact(n)) {
            for (&id, &x) in sub.ids.iter().zip(src) {
                row[id as usize] = x;
            }
        }
        Ok(Logits::new(v, out))
    }

    /// This model with its LM head restricted to `ids` (FR-Spec, arXiv 2502.14856): the same
    /// head rows, gathered, so a forward pass multiplies by an `N × d` head instead of `V × d`;
    /// logits outside `ids` are −∞. For a draft: the target keeps its full head, so
    /// verification stays exact (a pruned draft's q is 0 outside the subset, which rejection
    /// sampling handles like any other q). The gathered rows keep their bytes, so the subset's
    /// logits equal the full head's bit for bit.
    ///
    /// # Errors
    /// [`ModelError::Incompatible`] if `ids` is empty, repeats an id or names one outside the
    /// vocabulary.
    pub fn with_vocab_subset(&self, ids: &[u32]) -> Result<Self> {
        let v = self.config.vocab_size;
        if ids.is_empty() {
            return Err(ModelError::Incompatible(
                "a vocabulary subset needs at least one token".into(),
            ));
        }
        let mut seen = vec![false; v];
        for &id in ids {
            let i = id as usize;
            if i >= v {
                return Err(ModelError::Incompatible(format!(
                    "vocabulary subset: token {id} is outside the vocabulary of {v}"
                )));
            }
            if std::mem::replace(&mut seen[i], true) {
                return Err(ModelError::Incompatible(format!(
                    "vocabulary subset: token {id} is listed twice"
                )));
            }
        }
        let head = self.head.gather(ids);
        Ok(Self {
            config: self.config.clone(),
            embedding: self.embedding.clone(),
            layers: self.layers.clone(),
            lora: self.lora.clone(),
            final_norm: self.final_norm.clone(),
            head: self.head.clone(),
            subset: Some(HeadSubset {
                ids: Arc::new(ids.to_vec()),
                head,
            }),
        })
    }

    /// How many weight matrices of each storage type the model multiplies (decoder layers,
    /// LM head; the embedding is only looked up), in [`kernels::WeightType::ALL`]'s order:
    /// what `ecspec profile` lists next to the kernels picked.
    pub fn weight_types(&self) -> Vec<(kernels::WeightType, usize)> {
        let mut n = [0usize; 6];
        let mut count = |w: &QWeight| {
            let i = kernels::WeightType::ALL
                .iter()
                .position(|&t| t == w.kind())
                .unwrap_or(0);
            n[i] += 1;
        };
        for l in &self.layers {
            for w in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                count(w);
            }
        }
        count(&self.head);
        kernels::WeightType::ALL
            .iter()
            .zip(n)
            .filter(|(_, c)| *c > 0)
            .map(|(&t, c)| (t, c))
            .collect()
    }

    /// The vocabulary subset this model scores (None: the whole vocabulary).
    pub fn vocab_subset(&self) -> Option<&[u32]> {
        self.subset.as_ref().map(|s| s.ids.as_slice())
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

    /// Bytes of KV cache one position takes (f32 keys and values of every layer).
    pub fn kv_bytes_per_position(&self) -> u64 {
        let c = &self.config;
        (2 * self.layers.len() * c.num_kv_heads * c.head_dim * std::mem::size_of::<f32>()) as u64
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
                return Err(ModelError::BadTruncate {
                    len: have,
                    requested: len,
                });
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
    /// The model and the cache, apart: what a [`BatchItem`] borrows.
    pub fn parts_mut(&mut self) -> (&Transformer, &mut KvCache) {
        (&self.model, &mut self.cache)
    }
}
