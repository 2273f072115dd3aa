//! Reading [`ModelConfig`] and [`Architecture`] from GGUF metadata.

use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, Result};
use crate::gguf::Metadata;

impl Architecture {
    /// Parses `general.architecture`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            other => Err(ModelError::UnsupportedArchitecture(other.to_string())),
        }
    }
}

impl ModelConfig {
    /// Reads the configuration from GGUF metadata (`general.architecture` and `<arch>.*` keys).
    /// A missing required key names itself in the error; `rope.freq_base` defaults to 10 000 and
    /// `context_length` to 4096 as in llama.cpp.
    pub fn from_metadata(md: &Metadata) -> Result<Self> {
        let arch = Architecture::parse(&md.string("general.architecture")?)?;
        let p = arch.key_prefix();
        let hidden_size = md.uint(&format!("{p}.embedding_length"))?;
        let num_heads = md.uint(&format!("{p}.attention.head_count"))?;
        let num_kv_heads = md
            .uint_opt(&format!("{p}.attention.head_count_kv"))?
            .unwrap_or(num_heads);
        let num_layers = md.uint(&format!("{p}.block_count"))?;
        let ffn_size = md.uint(&format!("{p}.feed_forward_length"))?;
        let rms_eps = md.float(&format!("{p}.attention.layer_norm_rms_epsilon"))?;
        let rope_theta = md
            .float_opt(&format!("{p}.rope.freq_base"))?
            .unwrap_or(10_000.0);
        let context_length = md.uint_opt(&format!("{p}.context_length"))?.unwrap_or(4096);
        let vocab_size = md.array_len("tokenizer.ggml.tokens")?;
        if num_heads == 0
            || num_kv_heads == 0
            || hidden_size % num_heads != 0
            || num_heads % num_kv_heads != 0
        {
            return Err(ModelError::Metadata {
                key: format!("{p}.attention.head_count"),
                reason: format!(
                    "{num_heads} heads / {num_kv_heads} KV heads do not divide hidden size {hidden_size}"
                ),
            });
        }
        Ok(Self {
            arch,
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim: hidden_size / num_heads,
            ffn_size,
            rms_eps,
            rope_theta,
            context_length,
        })
    }
}
