//! LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on the
//! projections of a base model's decoder layers, read and written in Hugging Face PEFT's layout.
//!
//! # API summary
//!
//! - [`LoraTarget`]: the seven adaptable projections (`AttnQ`, `AttnK`, `AttnV`, `AttnOutput`,
//!   `FfnGate`, `FfnUp`, `FfnDown`), their PEFT module names (`q_proj` …) and
//!   [`LoraTarget::shape`] `(out, in)` for a [`crate::ModelConfig`].
//! - [`LoraPair`]: one projection's A (`rank × in`) and B (`out × rank`), row-major `f32`.
//!   [`LoraPair::new`] checks the lengths; [`LoraPair::a`], [`LoraPair::b`] (and `_mut`) expose
//!   the data.
//! - [`LoraAdapter`]: rank r, alpha, `scale() = alpha / r`, and a pair per
//!   `(layer index, LoraTarget)`. [`LoraAdapter::new`], [`LoraAdapter::init`] (PEFT's
//!   initialisation: A uniform in ±1/√in, B = 0, seeded), [`LoraAdapter::insert`],
//!   [`LoraAdapter::pair`], [`LoraAdapter::pair_mut`], [`LoraAdapter::iter`],
//!   [`LoraAdapter::validate`] (shapes and layer indices against a base).
//! - PEFT I/O: [`LoraAdapter::load_peft`] / [`LoraAdapter::save_peft`] read and write a
//!   directory holding `adapter_config.json` and `adapter_model.safetensors`;
//!   [`LoraAdapter::from_peft_bytes`] reads the same two files' contents from memory.
//! - Applying one: `Transformer::with_adapter(&base, &adapter)` (in `transformer.rs`) returns a
//!   model sharing the base's quantized weights and adding `scale · B (A x)` to each targeted
//!   projection.
//! - Errors: [`LoraError`], each variant naming the file, tensor or key and what was expected.
//!
//! # Modules
//!
//! Private, behind the `pub use` list below, and each importing only modules before it here:
//! `target` (what can be adapted, and its names in PEFT and GGUF), `error`, `permute` (the
//! q/k row order), `adapter` (the adapter in memory and applying it), `peft` (the PEFT
//! directory: reading, writing, checking tensor names and config keys).
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

mod adapter;
mod error;
mod peft;
mod permute;
mod target;

pub use adapter::{LoraAdapter, LoraPair};
pub use error::LoraError;
pub(crate) use peft::tensor_f32;
pub use permute::{gguf_to_hf_rows, hf_to_gguf_rows};
pub use target::{LoraTarget, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};
