//! LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on the
//! projections of a base model's decoder layers, read and written in Hugging Face PEFT's layout.
//!
//! # API summary
//!
//! - [`LoraTarget`]: the seven adaptable projections (`AttnQ`, `AttnK`, `AttnV`, `AttnOutput`,
//!   `FfnGate`, `FfnUp`, `FfnDown`), their PEFT module names (`q_proj` …) and
//!   [`LoraTarget::shape`] `(out, in)` for a [`ModelConfig`].
//! - [`LoraPair`]: one projection's A (`rank × in`) and B (`out × rank`), row-major `f32`.
//!   [`LoraPair::new`] checks the lengths; [`LoraPair::a`], [`LoraPair::b`] (and `_mut`) expose
//!   the data.
//! - [`LoraAdapter`]: rank r, alpha, `scale() = alpha / r`, and a pair per
//!   `(layer index, LoraTarget)`. [`LoraAdapter::new`], [`LoraAdapter::init`] (PEFT's
//!   initialisation: A uniform in ±1/√in, B = 0, seeded), [`LoraAdapter::insert`],
//!   [`LoraAdapter::pair`], [`LoraAdapter::pair_mut`], [`LoraAdapter::iter`],
//!   [`LoraAdapter::validate`] (shapes and layer indices against a base).
//! - PEFT I/O: [`LoraAdapter::load_peft`] / [`LoraAdapter::save_peft`] read and write a
//!   directory holding `adapter_config.json` and `adapter_model.safetensors`.
//! - Applying one: `Transformer::with_adapter(&base, &adapter)` (in `transformer.rs`) returns a
//!   model sharing the base's quantized weights and adding `scale · B (A x)` to each targeted
//!   projection.
//! - Errors: [`LoraError`], each variant naming the file, tensor or key and what was expected.
//!
//! # Row order of Q and K (llama architecture)
//!
//! **Invariant:** a [`LoraAdapter`] in memory holds B in the *runtime's* row order, the order
//! of the GGUF weights it is added to. For the llama architecture llama.cpp's converter permutes
//! the rows of `q_proj` and `k_proj` so that RoPE rotates interleaved pairs (2i, 2i+1) instead
//! of the halves (i, i + head_dim/2) Hugging Face uses. PEFT adapters are in Hugging Face's row
//! order, so [`LoraAdapter::load_peft`] permutes the rows of B of q/k the same way
//! ([`hf_to_gguf_rows`]) and [`LoraAdapter::save_peft`] undoes it ([`gguf_to_hf_rows`]). A is
//! not touched: the permutation acts on output rows only. Qwen2 GGUFs are not permuted.
//!
//! ```no_run
//! use ecspec_model::lora::{LoraAdapter, LoraTarget};
//! use ecspec_model::{LoadedModel, Transformer};
//! let base = LoadedModel::load("base.gguf".as_ref())?;
//! let cfg = base.transformer.config();
//! let adapter = LoraAdapter::load_peft("versions/rust".as_ref(), cfg)?;
//! let target = Transformer::with_adapter(&base.transformer, &adapter)?;
//! # Ok::<(), ecspec_model::ModelError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::config::{Architecture, ModelConfig};
use crate::init::uniform;

/// File holding an adapter's configuration in a PEFT directory.
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
/// File holding an adapter's tensors in a PEFT directory.
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Prefix of every PEFT tensor name of a causal LM (`PeftModel` → `LlamaForCausalLM` →
/// `LlamaModel`).
const PEFT_PREFIX: &str = "base_model.model.model.layers.";

/// A projection of a decoder layer that a LoRA adapter can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraTarget {
    /// Query projection (`self_attn.q_proj`, GGUF `attn_q`).
    AttnQ,
    /// Key projection (`self_attn.k_proj`, GGUF `attn_k`).
    AttnK,
    /// Value projection (`self_attn.v_proj`, GGUF `attn_v`).
    AttnV,
    /// Attention output projection (`self_attn.o_proj`, GGUF `attn_output`).
    AttnOutput,
    /// SwiGLU gate projection (`mlp.gate_proj`, GGUF `ffn_gate`).
    FfnGate,
    /// SwiGLU up projection (`mlp.up_proj`, GGUF `ffn_up`).
    FfnUp,
    /// Down projection (`mlp.down_proj`, GGUF `ffn_down`).
    FfnDown,
}

impl LoraTarget {
    /// Every target, in layer order.
    pub const ALL: [LoraTarget; 7] = [
        Self::AttnQ,
        Self::AttnK,
        Self::AttnV,
        Self::AttnOutput,
        Self::FfnGate,
        Self::FfnUp,
        Self::FfnDown,
    ];

    /// PEFT's module name (`target_modules` entry): `q_proj`, `k_proj`, … .
    pub fn peft_module(self) -> &'static str {
        match self {
            Self::AttnQ => "q_proj",
            Self::AttnK => "k_proj",
            Self::AttnV => "v_proj",
            Self::AttnOutput => "o_proj",
            Self::FfnGate => "gate_proj",
            Self::FfnUp => "up_proj",
            Self::FfnDown => "down_proj",
        }
    }

    /// The module's path inside a Hugging Face decoder layer: `self_attn.q_proj`, `mlp.up_proj`, … .
    pub fn peft_path(self) -> &'static str {
        match self {
            Self::AttnQ => "self_attn.q_proj",
            Self::AttnK => "self_attn.k_proj",
            Self::AttnV => "self_attn.v_proj",
            Self::AttnOutput => "self_attn.o_proj",
            Self::FfnGate => "mlp.gate_proj",
            Self::FfnUp => "mlp.up_proj",
            Self::FfnDown => "mlp.down_proj",
        }
    }

    /// The GGUF tensor stem (`blk.{i}.<stem>.weight`): `attn_q`, `ffn_up`, … .
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::AttnQ => "attn_q",
            Self::AttnK => "attn_k",
            Self::AttnV => "attn_v",
            Self::AttnOutput => "attn_output",
            Self::FfnGate => "ffn_gate",
            Self::FfnUp => "ffn_up",
            Self::FfnDown => "ffn_down",
        }
    }

    /// Parses a PEFT module name (`q_proj`, …).
    pub fn from_peft_module(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.peft_module() == name)
    }

    /// Parses a module path inside a decoder layer (`self_attn.q_proj`, …).
    pub fn from_peft_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.peft_path() == path)
    }

    /// `(out, in)` features of this projection in a model with `config`.
    pub fn shape(self, config: &ModelConfig) -> (usize, usize) {
        let d = config.hidden_size;
        let q = config.num_heads * config.head_dim;
        let kv = config.num_kv_heads * config.head_dim;
        match self {
            Self::AttnQ => (q, d),
            Self::AttnK | Self::AttnV => (kv, d),
            Self::AttnOutput => (d, q),
            Self::FfnGate | Self::FfnUp => (config.ffn_size, d),
            Self::FfnDown => (d, config.ffn_size),
        }
    }

    /// Heads whose rows llama.cpp permutes for this projection in `config`'s architecture
    /// (`Some(n_head)` for Q, `Some(n_kv_head)` for K of a llama model), `None` if unpermuted.
    pub fn permuted_heads(self, config: &ModelConfig) -> Option<usize> {
        match (config.arch, self) {
            (Architecture::Llama, Self::AttnQ) => Some(config.num_heads),
            (Architecture::Llama, Self::AttnK) => Some(config.num_kv_heads),
            _ => None,
        }
    }
}

impl fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.peft_module())
    }
}

/// Everything that can be wrong with a LoRA adapter.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A file of the PEFT directory does not exist.
    #[error("LoRA adapter file {path} is missing (a PEFT adapter directory holds {PEFT_CONFIG_FILE} and {PEFT_WEIGHTS_FILE})")]
    MissingFile { path: PathBuf },
    /// Reading or writing a file failed.
    #[error("LoRA adapter file {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    /// `adapter_config.json` is not valid JSON of the expected form, or a key has a bad value.
    #[error("{path}: key `{key}`: {reason}")]
    Config {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// A PEFT feature this runtime does not implement.
    #[error("{path}: key `{key}` = {value}: not supported ({reason})")]
    Unsupported {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
    /// `adapter_model.safetensors` cannot be parsed.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    /// A tensor name that is not `base_model.model.model.layers.{i}.<module>.lora_{A,B}.weight`.
    #[error("tensor `{tensor}`: not a PEFT LoRA tensor name (expected `{PEFT_PREFIX}{{i}}.<module>.lora_A.weight` or `.lora_B.weight`)")]
    UnexpectedTensor { tensor: String },
    /// A module this runtime cannot adapt.
    #[error(
        "tensor `{tensor}`: unknown module `{module}` (known: self_attn.{{q,k,v,o}}_proj, mlp.{{gate,up,down}}_proj)"
    )]
    UnknownModule { tensor: String, module: String },
    /// A `target_modules` entry that names no known projection.
    #[error("{path}: target_modules entry `{module}` is unknown (known: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")]
    UnknownTargetModule { path: PathBuf, module: String },
    /// Tensors for a module that `target_modules` does not list.
    #[error("tensor `{tensor}`: module `{module}` is not in target_modules {declared:?}")]
    UndeclaredModule {
        tensor: String,
        module: String,
        declared: Vec<String>,
    },
    /// A layer index at or beyond the base's layer count.
    #[error("LoRA on layer {layer} ({target}): the base has {layers} layers (0..{layers})")]
    LayerOutOfRange {
        layer: usize,
        target: LoraTarget,
        layers: usize,
    },
    /// Only one of A and B is present.
    #[error("layer {layer} {target}: lora_{missing} is missing (lora_A and lora_B come in pairs)")]
    MissingHalf {
        layer: usize,
        target: LoraTarget,
        missing: char,
    },
    /// A or B disagrees with the adapter's rank.
    #[error("layer {layer} {target}: rank mismatch: {which} has rank {found}, the adapter has r = {expected}")]
    RankMismatch {
        layer: usize,
        target: LoraTarget,
        which: char,
        expected: usize,
        found: usize,
    },
    /// A or B has the wrong shape for the base.
    #[error(
        "layer {layer} {target}: lora_{which} has shape {found:?}, the base needs {expected:?}"
    )]
    Shape {
        layer: usize,
        target: LoraTarget,
        which: char,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor of an element type other than F32, F16 or BF16.
    #[error("tensor `{tensor}`: dtype {dtype} is not supported (F32, F16, BF16)")]
    Dtype { tensor: String, dtype: String },
    /// Data of the wrong length handed to [`LoraPair::new`].
    #[error("LoRA pair data: {which} holds {found} values, {rows} × {cols} = {} needed", rows * cols)]
    DataLength {
        which: char,
        rows: usize,
        cols: usize,
        found: usize,
    },
    /// Rank 0 or a non-finite alpha.
    #[error("invalid LoRA hyper-parameters: {0}")]
    Invalid(String),
}

/// One projection's low-rank update ΔW = B·A: A is `rank × in`, B is `out × rank`, both
/// row-major `f32`; B in the runtime's row order (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    rank: usize,
    in_features: usize,
    out_features: usize,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl LoraPair {
    /// A pair from row-major data.
    ///
    /// # Errors
    /// [`LoraError::DataLength`] when `a` is not `rank × in` or `b` not `out × rank` values.
    pub fn new(
        rank: usize,
        in_features: usize,
        out_features: usize,
        a: Vec<f32>,
        b: Vec<f32>,
    ) -> Result<Self, LoraError> {
        if a.len() != rank * in_features {
            return Err(LoraError::DataLength {
                which: 'A',
                rows: rank,
                cols: in_features,
                found: a.len(),
            });
        }
        if b.len() != out_features * rank {
            return Err(LoraError::DataLength {
                which: 'B',
                rows: out_features,
                cols: rank,
                found: b.len(),
            });
        }
        Ok(Self {
            rank,
            in_features,
            out_features,
            a,
            b,
        })
    }
    /// Rank r.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// Input features (columns of A).
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    /// Output features (rows of B).
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    /// A, `rank × in`, row-major.
    pub fn a(&self) -> &[f32] {
        &self.a
    }
    /// B, `out × rank`, row-major, runtime row order.
    pub fn b(&self) -> &[f32] {
        &self.b
    }
    /// A, mutable (training).
    pub fn a_mut(&mut self) -> &mut [f32] {
        &mut self.a
    }
    /// B, mutable (training).
    pub fn b_mut(&mut self) -> &mut [f32] {
        &mut self.b
    }

    /// `y += scale · B (A x)` for every row of `x` (`rows × in`) into `y` (`rows × out`).
    ///
    /// Each row is computed on its own with [`crate::ops::dot`]'s fixed accumulation order:
    /// t = A x; t ← scale · t; y_o += B_o · t. A block therefore gets exactly the numbers
    /// of its rows run one at a time (the runtime's block == token-by-token invariant).
    pub fn apply(&self, x: &[f32], y: &mut [f32], scale: f32) {
        let mut t = vec![0f32; self.rank];
        for (xr, yr) in x
            .chunks_exact(self.in_features)
            .zip(y.chunks_exact_mut(self.out_features))
        {
            for (ti, ar) in t.iter_mut().zip(self.a.chunks_exact(self.in_features)) {
                *ti = crate::ops::dot(ar, xr) * scale;
            }
            for (yo, br) in yr.iter_mut().zip(self.b.chunks_exact(self.rank)) {
                *yo += crate::ops::dot(br, &t);
            }
        }
    }
}

/// A LoRA adapter: rank r, alpha, and a [`LoraPair`] per `(layer, target)`.
/// The update of a targeted projection is `W x + (alpha / r) · B (A x)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapter {
    rank: usize,
    alpha: f32,
    /// `base_model_name_or_path` of the PEFT config (informational; the family manifest checks
    /// the base by hash).
    pub base_model: String,
    pairs: BTreeMap<(usize, LoraTarget), LoraPair>,
}

impl LoraAdapter {
    /// An empty adapter.
    ///
    /// # Errors
    /// [`LoraError::Invalid`] for rank 0 or a non-finite alpha.
    pub fn new(rank: usize, alpha: f32, base_model: &str) -> Result<Self, LoraError> {
        if rank == 0 {
            return Err(LoraError::Invalid("rank r must be at least 1".into()));
        }
        if !alpha.is_finite() {
            return Err(LoraError::Invalid(format!(
                "lora_alpha must be finite, found {alpha}"
            )));
        }
        Ok(Self {
            rank,
            alpha,
            base_model: base_model.to_string(),
            pairs: BTreeMap::new(),
        })
    }

    /// A fresh adapter as PEFT initialises one (`init_lora_weights = True`): A uniform in
    /// ±1/√in (Kaiming-uniform with a = √5), B = 0 — so it starts as the identity update —
    /// on `targets` of every layer in `layers`, from a fixed `seed`.
    ///
    /// # Errors
    /// As [`Self::new`]; [`LoraError::LayerOutOfRange`] for a layer the base lacks.
    pub fn init(
        config: &ModelConfig,
        rank: usize,
        alpha: f32,
        layers: std::ops::Range<usize>,
        targets: &[LoraTarget],
        seed: u64,
        base_model: &str,
    ) -> Result<Self, LoraError> {
        let mut adapter = Self::new(rank, alpha, base_model)?;
        for layer in layers {
            for &target in targets {
                if layer >= config.num_layers {
                    return Err(LoraError::LayerOutOfRange {
                        layer,
                        target,
                        layers: config.num_layers,
                    });
                }
                let (out, inp) = target.shape(config);
                let salt = seed
                    ^ ((layer as u64) << 8 | target as u64).wrapping_mul(0xA24B_AED4_963E_E407);
                let a = uniform(salt, rank * inp, 1.0 / (inp as f32).sqrt());
                adapter.pairs.insert(
                    (layer, target),
                    LoraPair::new(rank, inp, out, a, vec![0.0; out * rank])?,
                );
            }
        }
        Ok(adapter)
    }

    /// Rank r.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// `lora_alpha`.
    pub fn alpha(&self) -> f32 {
        self.alpha
    }
    /// The update's scale, alpha / r.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
    /// Adds or replaces the pair of `(layer, target)`.
    ///
    /// # Errors
    /// [`LoraError::RankMismatch`] when the pair's rank is not the adapter's.
    pub fn insert(
        &mut self,
        layer: usize,
        target: LoraTarget,
        pair: LoraPair,
    ) -> Result<(), LoraError> {
        if pair.rank != self.rank {
            return Err(LoraError::RankMismatch {
                layer,
                target,
                which: 'A',
                expected: self.rank,
                found: pair.rank,
            });
        }
        self.pairs.insert((layer, target), pair);
        Ok(())
    }
    /// The pair of `(layer, target)`, if adapted.
    pub fn pair(&self, layer: usize, target: LoraTarget) -> Option<&LoraPair> {
        self.pairs.get(&(layer, target))
    }
    /// The pair of `(layer, target)`, mutable (training).
    pub fn pair_mut(&mut self, layer: usize, target: LoraTarget) -> Option<&mut LoraPair> {
        self.pairs.get_mut(&(layer, target))
    }
    /// Every `((layer, target), pair)`, ordered by layer then target.
    pub fn iter(&self) -> impl Iterator<Item = (&(usize, LoraTarget), &LoraPair)> {
        self.pairs.iter()
    }
    /// Number of adapted projections.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }
    /// Whether no projection is adapted.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
    /// The targets adapted in at least one layer, in [`LoraTarget::ALL`] order.
    pub fn targets(&self) -> Vec<LoraTarget> {
        LoraTarget::ALL
            .into_iter()
            .filter(|t| self.pairs.keys().any(|(_, u)| u == t))
            .collect()
    }
    /// Trainable parameters: Σ r · (in + out).
    pub fn num_parameters(&self) -> usize {
        self.pairs.values().map(|p| p.a.len() + p.b.len()).sum()
    }

    /// Checks every pair against a base with `config`: layer in range, A `r × in`, B `out × r`.
    ///
    /// # Errors
    /// [`LoraError::LayerOutOfRange`], [`LoraError::RankMismatch`], [`LoraError::Shape`].
    pub fn validate(&self, config: &ModelConfig) -> Result<(), LoraError> {
        for (&(layer, target), p) in &self.pairs {
            if layer >= config.num_layers {
                return Err(LoraError::LayerOutOfRange {
                    layer,
                    target,
                    layers: config.num_layers,
                });
            }
            if p.rank != self.rank {
                return Err(LoraError::RankMismatch {
                    layer,
                    target,
                    which: 'A',
                    expected: self.rank,
                    found: p.rank,
                });
            }
            let (out, inp) = target.shape(config);
            if p.in_features != inp {
                let (expected, found) = (vec![self.rank, inp], vec![p.rank, p.in_features]);
                return Err(LoraError::Shape {
                    layer,
                    target,
                    which: 'A',
                    expected,
                    found,
                });
            }
            if p.out_features != out {
                let (expected, found) = (vec![out, self.rank], vec![p.out_features, p.rank]);
                return Err(LoraError::Shape {
                    layer,
                    target,
                    which: 'B',
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }

    /// Reads a PEFT adapter directory for a base with `config`, validating it against that base
    /// and permuting B of q/k into the runtime's row order for a llama base.
    ///
    /// # Errors
    /// Every [`LoraError`] variant that concerns files, names and shapes.
    pub fn load_peft(dir: &Path, config: &ModelConfig) -> Result<Self, LoraError> {
        let cfg_path = dir.join(PEFT_CONFIG_FILE);
        let st_path = dir.join(PEFT_WEIGHTS_FILE);
        for p in [&cfg_path, &st_path] {
            if !p.is_file() {
                return Err(LoraError::MissingFile { path: p.clone() });
            }
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| io(&cfg_path, e))?;
        let pc = PeftConfig::parse(&cfg_path, &text)?;
        let bytes = std::fs::read(&st_path).map_err(|e| io(&st_path, e))?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| LoraError::Safetensors {
                path: st_path.clone(),
                reason: e.to_string(),
            })?;

        let mut halves: BTreeMap<(usize, LoraTarget), [Option<NamedView<'_>>; 2]> = BTreeMap::new();
        let mut names: Vec<&str> = st.names().into_iter().collect();
        names.sort_unstable();
        for name in names {
            let (layer, target, half) = parse_tensor_name(name)?;
            if let Some(declared) = &pc.target_modules {
                if !declared.iter().any(|m| m == target.peft_module()) {
                    return Err(LoraError::UndeclaredModule {
                        tensor: name.to_string(),
                        module: target.peft_module().to_string(),
                        declared: declared.clone(),
                    });
                }
            }
            if layer >= config.num_layers {
                return Err(LoraError::LayerOutOfRange {
                    layer,
                    target,
                    layers: config.num_layers,
                });
            }
            let view = st.tensor(name).map_err(|e| LoraError::Safetensors {
                path: st_path.clone(),
                reason: e.to_string(),
            })?;
            halves.entry((layer, target)).or_default()[half] = Some((name.to_string(), view));
        }

        let mut adapter =
            Self::new(pc.r, pc.lora_alpha, &pc.base_model_name_or_path).map_err(|e| {
                LoraError::Config {
                    path: cfg_path.clone(),
                    key: "r".into(),
                    reason: e.to_string(),
                }
            })?;
        for ((layer, target), [a, b]) in halves {
            let (out, inp) = target.shape(config);
            let ((a_name, a), (b_name, b)) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                (None, _) => {
                    return Err(LoraError::MissingHalf {
                        layer,
                        target,
                        missing: 'A',
                    })
                }
                (_, None) => {
                    return Err(LoraError::MissingHalf {
                        layer,
                        target,
                        missing: 'B',
                    })
                }
            };
            check_matrix(layer, target, 'A', a.shape(), [pc.r, inp])?;
            check_matrix(layer, target, 'B', b.shape(), [out, pc.r])?;
            let a_data = to_f32(&a_name, &a)?;
            let mut b_data = to_f32(&b_name, &b)?;
            if let Some(heads) = target.permuted_heads(config) {
                b_data = hf_to_gguf_rows(&b_data, pc.r, heads);
            }
            adapter.pairs.insert(
                (layer, target),
                LoraPair::new(pc.r, inp, out, a_data, b_data)?,
            );
        }
        Ok(adapter)
    }

    /// Writes this adapter as a PEFT directory (`adapter_config.json`,
    /// `adapter_model.safetensors` in F32) for a base with `config`, un-permuting B of q/k for
    /// a llama base so that PEFT / transformers load it as trained. Creates `dir` if needed.
    ///
    /// # Errors
    /// Validation errors as [`Self::validate`]; [`LoraError::Io`].
    pub fn save_peft(&self, dir: &Path, config: &ModelConfig) -> Result<(), LoraError> {
        self.validate(config)?;
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let targets: Vec<String> = self
            .targets()
            .iter()
            .map(|t| t.peft_module().to_string())
            .collect();
        let pc = PeftConfigOut {
            peft_type: "LORA",
            task_type: "CAUSAL_LM",
            r: self.rank,
            lora_alpha: self.alpha,
            target_modules: targets,
            base_model_name_or_path: &self.base_model,
            bias: "none",
            fan_in_fan_out: false,
            lora_dropout: 0.0,
            inference_mode: true,
            init_lora_weights: true,
            use_rslora: false,
            use_dora: false,
            modules_to_save: None,
            layers_to_transform: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
        };
        let cfg_path = dir.join(PEFT_CONFIG_FILE);
        let json = serde_json::to_string_pretty(&pc).map_err(|e| LoraError::Io {
            path: cfg_path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&cfg_path, json.as_bytes())?;

        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> =
            Vec::with_capacity(2 * self.pairs.len());
        for (&(layer, target), p) in &self.pairs {
            let stem = format!("{PEFT_PREFIX}{layer}.{}", target.peft_path());
            let b = match target.permuted_heads(config) {
                Some(heads) => gguf_to_hf_rows(&p.b, p.rank, heads),
                None => p.b.clone(),
            };
            tensors.push((
                format!("{stem}.lora_A.weight"),
                f32_bytes(&p.a),
                vec![p.rank, p.in_features],
            ));
            tensors.push((
                format!("{stem}.lora_B.weight"),
                f32_bytes(&b),
                vec![p.out_features, p.rank],
            ));
        }
        let st_path = dir.join(PEFT_WEIGHTS_FILE);
        let mut views = Vec::with_capacity(tensors.len());
        for (name, data, shape) in &tensors {
            let v = TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| {
                LoraError::Safetensors {
                    path: st_path.clone(),
                    reason: e.to_string(),
                }
            })?;
            views.push((name.as_str(), v));
        }
        let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| LoraError::Safetensors {
                path: st_path.clone(),
                reason: e.to_string(),
            })?;
        write_atomic(&st_path, &bytes)
    }
}

/// HF → GGUF row permutation of llama.cpp's converter (`LlamaModel.permute`), applied to a
/// row-major matrix of `cols` columns whose rows are `heads` groups of `head_dim` rows:
/// `w.reshape(heads, 2, head_dim/2, cols).swapaxes(1, 2).reshape(rows, cols)`, i.e.
/// GGUF row `h·hd + 2j + s` = HF row `h·hd + s·hd/2 + j` (s ∈ {0, 1}, j < hd/2).
///
/// # Panics
/// If the rows do not split into `heads` groups of an even size (a caller bug: shapes are
/// validated before this is called).
pub fn hf_to_gguf_rows(w: &[f32], cols: usize, heads: usize) -> Vec<f32> {
    permute_rows(w, cols, heads, true)
}

/// The inverse of [`hf_to_gguf_rows`]: GGUF (interleaved-RoPE) row order back to HF's.
///
/// # Panics
/// As [`hf_to_gguf_rows`].
pub fn gguf_to_hf_rows(w: &[f32], cols: usize, heads: usize) -> Vec<f32> {
    permute_rows(w, cols, heads, false)
}

fn permute_rows(w: &[f32], cols: usize, heads: usize, forward: bool) -> Vec<f32> {
    let rows = w.len() / cols;
    assert!(
        rows.is_multiple_of(2 * heads) && w.len() == rows * cols,
        "rows {rows} do not split into {heads} heads of even size"
    );
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let hf = h * hd + s * half + j;
                let gg = h * hd + 2 * j + s;
                let (src, dst) = if forward { (hf, gg) } else { (gg, hf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// A tensor of the safetensors file with its name.
type NamedView<'a> = (String, TensorView<'a>);

/// Splits `base_model.model.model.layers.{i}.<module path>.lora_{A|B}.weight`.
fn parse_tensor_name(name: &str) -> Result<(usize, LoraTarget, usize), LoraError> {
    let unexpected = || LoraError::UnexpectedTensor {
        tensor: name.to_string(),
    };
    let rest = name.strip_prefix(PEFT_PREFIX).ok_or_else(unexpected)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unexpected)?;
    let layer: usize = layer.parse().map_err(|_| unexpected())?;
    let (module, half) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        (m, 0)
    } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
        (m, 1)
    } else {
        return Err(unexpected());
    };
    let target = LoraTarget::from_peft_path(module).ok_or_else(|| LoraError::UnknownModule {
        tensor: name.to_string(),
        module: module.to_string(),
    })?;
    Ok((layer, target, half))
}

fn check_matrix(
    layer: usize,
    target: LoraTarget,
    which: char,
    found: &[usize],
    expected: [usize; 2],
) -> Result<(), LoraError> {
    if found == expected {
        return Ok(());
    }
    // The rank axis is A's rows and B's columns: a disagreement there is a rank mismatch.
    let (rank_axis, rank) = if which == 'A' {
        (0, expected[0])
    } else {
        (1, expected[1])
    };
    if found.len() == 2
        && found[rank_axis] != rank
        && found[1 - rank_axis] == expected[1 - rank_axis]
    {
        return Err(LoraError::RankMismatch {
            layer,
            target,
            which,
            expected: rank,
            found: found[rank_axis],
        });
    }
    Err(LoraError::Shape {
        layer,
        target,
        which,
        expected: expected.to_vec(),
        found: found.to_vec(),
    })
}

/// A safetensors tensor's values as f32 (F32, F16 or BF16 storage); `None` for other dtypes.
/// Shared by the adapter and anchor readers.
pub(crate) fn tensor_f32(v: &TensorView<'_>) -> Option<Vec<f32>> {
    let d = v.data();
    let le2 = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]);
    Some(match v.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_bits(le2(c)).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_bits(le2(c)).to_f32())
            .collect(),
        _ => return None,
    })
}

fn to_f32(name: &str, v: &TensorView<'_>) -> Result<Vec<f32>, LoraError> {
    tensor_f32(v).ok_or_else(|| LoraError::Dtype {
        tensor: name.to_string(),
        dtype: format!("{:?}", v.dtype()),
    })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn io(path: &Path, e: std::io::Error) -> LoraError {
    LoraError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LoraError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// The part of PEFT's `LoraConfig` this runtime reads.
struct PeftConfig {
    r: usize,
    lora_alpha: f32,
    /// `None` when `target_modules` is a regular expression string (then tensors decide).
    target_modules: Option<Vec<String>>,
    base_model_name_or_path: String,
}

impl PeftConfig {
    fn parse(path: &Path, text: &str) -> Result<Self, LoraError> {
        let bad = |key: &str, reason: String| LoraError::Config {
            path: path.to_path_buf(),
            key: key.into(),
            reason,
        };
        let unsupported =
            |key: &str, value: &serde_json::Value, reason: &str| LoraError::Unsupported {
                path: path.to_path_buf(),
                key: key.into(),
                value: value.to_string(),
                reason: reason.into(),
            };
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| bad("(file)", format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("(file)", "not a JSON object".into()))?;
        let get = |k: &str| obj.get(k).filter(|x| !x.is_null());

        match get("peft_type").and_then(|x| x.as_str()) {
            Some("LORA") => {}
            Some(other) => {
                return Err(unsupported(
                    "peft_type",
                    &other.into(),
                    "only LORA adapters",
                ))
            }
            None => return Err(bad("peft_type", "missing (expected \"LORA\")".into())),
        }
        let r = get("r").ok_or_else(|| bad("r", "missing".into()))?;
        let r = r
            .as_u64()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad("r", format!("expected a positive integer, found {r}")))?
            as usize;
        let lora_alpha = match get("lora_alpha") {
            None => 8.0, // PEFT's default
            Some(a) => a
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad("lora_alpha", format!("expected a number, found {a}")))?
                as f32,
        };
        if let Some(b) = get("bias") {
            if b.as_str() != Some("none") {
                return Err(unsupported(
                    "bias",
                    b,
                    "LoRA bias terms are not implemented; only \"none\"",
                ));
            }
        }
        if let Some(f) = get("fan_in_fan_out") {
            if f.as_bool() != Some(false) {
                return Err(unsupported(
                    "fan_in_fan_out",
                    f,
                    "only nn.Linear layouts (false)",
                ));
            }
        }
        for key in ["use_dora", "use_rslora"] {
            if let Some(f) = get(key) {
                if f.as_bool() != Some(false) {
                    return Err(unsupported(key, f, "scale is alpha / r with plain LoRA"));
                }
            }
        }
        if let Some(m) = get("modules_to_save") {
            if m.as_array().is_none_or(|a| !a.is_empty()) {
                return Err(unsupported(
                    "modules_to_save",
                    m,
                    "the embedding, norms and head stay frozen across a family",
                ));
            }
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if let Some(m) = get(key) {
                if m.as_object().is_none_or(|o| !o.is_empty()) {
                    return Err(unsupported(key, m, "one rank and one alpha per adapter"));
                }
            }
        }
        if let Some(t) = get("task_type") {
            if t.as_str() != Some("CAUSAL_LM") {
                return Err(unsupported("task_type", t, "only CAUSAL_LM"));
            }
        }
        let target_modules = match get("target_modules") {
            None => return Err(bad("target_modules", "missing".into())),
            Some(serde_json::Value::String(_)) => None,
            Some(serde_json::Value::Array(a)) => {
                let mut mods = Vec::with_capacity(a.len());
                for m in a {
                    let m = m.as_str().ok_or_else(|| {
                        bad(
                            "target_modules",
                            format!("expected module names, found {m}"),
                        )
                    })?;
                    // PEFT matches by suffix: "self_attn.q_proj" also names q_proj.
                    let short = m.rsplit('.').next().unwrap_or(m);
                    if LoraTarget::from_peft_module(short).is_none() {
                        return Err(LoraError::UnknownTargetModule {
                            path: path.to_path_buf(),
                            module: m.to_string(),
                        });
                    }
                    mods.push(short.to_string());
                }
                Some(mods)
            }
            Some(other) => {
                return Err(bad(
                    "target_modules",
                    format!("expected a list or a string, found {other}"),
                ))
            }
        };
        let base_model_name_or_path = get("base_model_name_or_path")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string();
        Ok(Self {
            r,
            lora_alpha,
            target_modules,
            base_model_name_or_path,
        })
    }
}

/// `adapter_config.json` as written (the keys PEFT's `LoraConfig` reads; absent ones default).
#[derive(Serialize, Deserialize)]
struct PeftConfigOut<'a> {
    peft_type: &'a str,
    task_type: &'a str,
    r: usize,
    lora_alpha: f32,
    target_modules: Vec<String>,
    base_model_name_or_path: &'a str,
    bias: &'a str,
    fan_in_fan_out: bool,
    lora_dropout: f32,
    inference_mode: bool,
    init_lora_weights: bool,
    use_rslora: bool,
    use_dora: bool,
    modules_to_save: Option<Vec<String>>,
    layers_to_transform: Option<Vec<usize>>,
    rank_pattern: BTreeMap<String, usize>,
    alpha_pattern: BTreeMap<String, f32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{RopeStyle, RopeTables};

    #[test]
    fn permutation_matches_llamacpp_reshape_swapaxes() {
        // Two heads of head_dim 4, one column: reshape(2, 2, 2, 1).swapaxes(1, 2) takes each
        // head's HF rows [r0 r1 | r2 r3] (halves) to [r0 r2 r1 r3] (interleaved pairs).
        let hf: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            hf_to_gguf_rows(&hf, 1, 2),
            vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
        );
        assert_eq!(
            gguf_to_hf_rows(&[0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0], 1, 2),
            hf
        );
        // Printed by numpy running llama.cpp's `LlamaModel.permute` expression,
        // `w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)`:
        // 3 heads of head_dim 8, one column; and 2 heads of head_dim 4, two columns.
        let w: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let numpy = [
            0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15, 16, 20, 17, 21, 18, 22, 19, 23,
        ];
        assert_eq!(hf_to_gguf_rows(&w, 1, 3), numpy.map(|i| i as f32).to_vec());
        let w: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let numpy = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15];
        assert_eq!(hf_to_gguf_rows(&w, 2, 2), numpy.map(|i| i as f32).to_vec());
        // Whole rows move together (3 columns).
        let w: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let g = hf_to_gguf_rows(&w, 3, 2);
        assert_eq!(&g[3..6], &w[6..9], "GGUF row 1 is HF row 2");
    }

    #[test]
    fn permutation_round_trips_exactly_for_q_and_k_shapes() {
        // SmolLM2-135M: 9 query heads, 3 KV heads, head_dim 64, rank 8 columns.
        for (heads, hd) in [(9usize, 64usize), (3, 64), (4, 16), (2, 16)] {
            let w = uniform(heads as u64 * 31 + hd as u64, heads * hd * 8, 1.0);
            let g = hf_to_gguf_rows(&w, 8, heads);
            assert_ne!(g, w);
            assert_eq!(gguf_to_hf_rows(&g, 8, heads), w, "{heads} heads × {hd}");
            assert_eq!(hf_to_gguf_rows(&gguf_to_hf_rows(&w, 8, heads), 8, heads), w);
        }
    }

    #[test]
    fn permuted_rows_turn_halves_rope_into_interleaved_rope() {
        // Why the permutation exists: rotating HF-ordered q by pairs (i, i + hd/2) and then
        // permuting equals permuting first and rotating pairs (2i, 2i + 1) — exactly.
        let (heads, hd, rows) = (3, 16, 5);
        let q_hf = uniform(7, rows * heads * hd, 2.0);
        let tables = RopeTables::new(11, rows, hd, 10_000.0);
        let mut r_hf = q_hf.clone();
        tables.apply(&mut r_hf, heads, RopeStyle::Halves);
        // Each position's vector is a column of `heads · hd` rows.
        let permute = |v: &[f32]| -> Vec<f32> {
            v.chunks_exact(heads * hd)
                .flat_map(|c| hf_to_gguf_rows(c, 1, heads))
                .collect()
        };
        let mut r_gg = permute(&q_hf);
        tables.apply(&mut r_gg, heads, RopeStyle::Interleaved);
        assert_eq!(r_gg, permute(&r_hf));
    }

    #[test]
    fn tensor_names_parse_and_reject_precisely() {
        let n = "base_model.model.model.layers.12.mlp.down_proj.lora_B.weight";
        assert_eq!(parse_tensor_name(n).unwrap(), (12, LoraTarget::FfnDown, 1));
        let n = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        assert_eq!(parse_tensor_name(n).unwrap(), (0, LoraTarget::AttnQ, 0));
        let bad = "base_model.model.model.layers.0.self_attn.rotary.lora_A.weight";
        assert!(
            matches!(parse_tensor_name(bad), Err(LoraError::UnknownModule { module, .. }) if module == "self_attn.rotary")
        );
        for bad in [
            "model.layers.0.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.x.mlp.up_proj.lora_A.weight",
        ] {
            assert!(
                matches!(
                    parse_tensor_name(bad),
                    Err(LoraError::UnexpectedTensor { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn apply_is_row_wise() {
        let p = LoraPair::new(
            2,
            3,
            2,
            vec![1.0, 0.0, 2.0, 0.0, 1.0, 0.0],
            vec![1.0, 1.0, 0.5, -1.0],
        )
        .unwrap();
        // x = [1, 2, 3]: A x = [7, 2]; scale 2 → [14, 4]; B t = [18, 3].
        let x = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0];
        let mut y = vec![1.0, 1.0, 0.0, 0.0];
        p.apply(&x, &mut y, 2.0);
        assert_eq!(y, vec![19.0, 4.0, 18.0, 3.0]);
        assert!(matches!(
            LoraPair::new(2, 3, 2, vec![0.0; 5], vec![0.0; 4]),
            Err(LoraError::DataLength { which: 'A', .. })
        ));
    }
}
