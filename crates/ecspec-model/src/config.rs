//! Model hyper-parameters: plain data, importing nothing of the crate (`config_read` reads
//! them from GGUF metadata, so the error and GGUF modules can name these types without a
//! circle).

/// The decoder architectures this runtime implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama family (SmolLM2). RoPE on interleaved pairs, as llama.cpp's converter permutes Q/K.
    Llama,
    /// Qwen2 family (Qwen2.5-Coder). Q/K/V biases; RoPE on the two halves ("NeoX" style).
    Qwen2,
}

impl Architecture {
    /// The GGUF metadata prefix of this architecture.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// Hyper-parameters of a decoder-only transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Architecture (decides RoPE layout and biases).
    pub arch: Architecture,
    /// Vocabulary size V (rows of the embedding and of the LM head).
    pub vocab_size: usize,
    /// Hidden size d.
    pub hidden_size: usize,
    /// Number of decoder layers n.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when smaller than `num_heads`).
    pub num_kv_heads: usize,
    /// Per-head dimension (d / num_heads).
    pub head_dim: usize,
    /// Feed-forward inner size.
    pub ffn_size: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base frequency θ.
    pub rope_theta: f32,
    /// Maximum positions (context window).
    pub context_length: usize,
}
