//! The target model a cloud server verifies with, and the identity it checks drafts against.

use std::sync::Arc;

use ecspec_model::{LoadedModel, Transformer};

/// A served target model.
pub struct CloudModel {
    /// Model family name drafts must name (e.g. `smollm2-135m`).
    pub family: String,
    /// Target version served (e.g. `v0`).
    pub version: String,
    /// Shared weights (one copy for every session).
    pub transformer: Arc<Transformer>,
    /// Hash of the frozen base tensors; a shared-backbone draft must name it.
    pub base_hash: String,
    /// Hash of the vocabulary; an independent draft must name it.
    pub vocab_hash: String,
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Ids that end generation.
    pub stop_tokens: Vec<u32>,
    /// Context window (positions).
    pub context_length: usize,
}

impl CloudModel {
    /// Serves `model` as version `version` of `family`.
    pub fn new(family: &str, version: &str, model: &LoadedModel) -> Self {
        Self {
            family: family.to_string(),
            version: version.to_string(),
            transformer: model.transformer.clone(),
            base_hash: model.base_hash.clone(),
            vocab_hash: model.tokenizer.vocab_hash().to_string(),
            vocab_size: model.transformer.config().vocab_size,
            stop_tokens: model.tokenizer.stop_tokens().to_vec(),
            context_length: model.transformer.config().context_length,
        }
    }
}
