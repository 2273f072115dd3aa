//! ECSpec's model runtime on candle.
//!
//! - [`Transformer`]: a GGUF Llama/Qwen2 decoder whose forward pass over a block returns the
//!   logits of every position ([`Logits`]), with the KV cache held apart ([`KvCache`]) so it
//!   can be truncated to any length; hidden states after any layer and layer ranges through
//!   [`Transformer::embed`], [`Transformer::run_layers`], [`Transformer::logits`].
//! - [`Session`]: weights plus one KV cache, what a draft or a cloud session runs.
//! - [`GgufTokenizer`] and [`ChatTemplate`]: text ↔ ids as llama.cpp does for the same file.
//! - [`LoadedModel`]: all of the above from one path, with the base hash used at the handshake.
//! - [`DraftSpec`]: the two kinds of edge draft (independent model, shared backbone).
//! - [`LoraAdapter`]: LoRA target versions in PEFT layout; [`Transformer::with_adapter`]
//!   applies one on top of a base, sharing its weights.
//!
//! ```no_run
//! use ecspec_model::{LoadedModel, LogitsFor, Session};
//! let m = LoadedModel::load("model.gguf".as_ref())?;
//! let ids = m.tokenizer.encode("Hello", false)?;
//! let mut s = Session::new(m.transformer.clone());
//! let logits = s.forward(&ids, LogitsFor::All)?; // ids.len() × V
//! s.truncate(1)?; // roll back to the first position
//! # Ok::<(), ecspec_model::ModelError>(())
//! ```

pub mod anchor;
pub mod chat;
pub mod config;
mod config_read;
pub mod draft;
pub mod error;
pub mod gguf;
mod init;
pub mod kernels;
pub mod loaded;
pub mod lora;
pub mod ops;
pub mod standalone;
pub mod tiny;
pub mod tokenizer;
pub mod transformer;

pub use chat::{encode_chat, ChatMessage, ChatPart, ChatTemplate, Role};
pub use config::{Architecture, ModelConfig};
pub use draft::{Draft, DraftKind, DraftSpec};
pub use error::{ModelError, Result};
pub use loaded::LoadedModel;
pub use lora::{LoraAdapter, LoraError, LoraPair, LoraTarget};
pub use tokenizer::{GgufTokenizer, TextStream};
pub use transformer::{BatchItem, DecoderLayer, KvCache, Logits, LogitsFor, Session, Transformer};
