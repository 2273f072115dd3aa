//! The projections of a decoder layer that a LoRA adapter can target ([`LoraTarget`]), and
//! what Hugging Face PEFT and GGUF call them: module names and paths, the tensor-name prefix
//! and the two files of a PEFT adapter directory.

use std::fmt;

use crate::config::{Architecture, ModelConfig};

/// File holding an adapter's configuration in a PEFT directory.
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
/// File holding an adapter's tensors in a PEFT directory.
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Prefix of every PEFT tensor name of a causal LM (`PeftModel` → `LlamaForCausalLM` →
/// `LlamaModel`).
pub(crate) const PEFT_PREFIX: &str = "base_model.model.model.layers.";

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
