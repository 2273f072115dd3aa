//! Errors of the model runtime.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The GGUF file could not be opened or parsed.
    #[error("cannot read GGUF file {path}: {reason}")]
    Gguf { path: PathBuf, reason: String },
    /// A file other than the GGUF (an anchor layer, …) is missing or unreadable.
    #[error("cannot read {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A required metadata key is missing or has the wrong type.
    #[error("GGUF metadata key `{key}` is missing or invalid: {reason}")]
    Metadata { key: String, reason: String },
    /// A tensor is missing or has an unexpected shape.
    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: String },
    /// The architecture is not one this runtime implements.
    #[error("unsupported architecture `{0}` (supported: llama, qwen2)")]
    UnsupportedArchitecture(String),
    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfRange { id: u32, vocab_size: usize },
    /// The sequence would exceed the model's context window.
    #[error("context overflow: {needed} positions needed, the model holds {max}")]
    ContextOverflow { needed: usize, max: usize },
    /// A KV-cache operation asked for an impossible length.
    #[error("KV cache holds {len} positions, cannot truncate to {requested}")]
    BadTruncate { len: usize, requested: usize },
    /// Forward called with no tokens.
    #[error("forward pass over an empty block of tokens")]
    EmptyBlock,
    /// Draft and target are not compatible.
    #[error("incompatible models: {0}")]
    Incompatible(String),
    /// Tokenizer construction or use failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A LoRA adapter is missing, malformed or does not fit the base (boxed: it is large and
    /// rare, and this error type rides on every forward pass's `Result`).
    #[error(transparent)]
    Lora(Box<crate::lora::LoraError>),
    /// A candle kernel failed.
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
}

impl From<crate::lora::LoraError> for ModelError {
    fn from(e: crate::lora::LoraError) -> Self {
        Self::Lora(Box::new(e))
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
