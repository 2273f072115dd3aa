//! The target versions a cloud server verifies with, the one new sessions get, and the
//! identity drafts are checked against.
//!
//! **Invariant:** a session is verified by one version from its `Hello` to its end. Switching
//! the active version ([`CloudModel::set_active`]) changes only which version *new* sessions
//! get; running sessions keep theirs. Why not move a session at a round boundary: its KV cache
//! holds the keys and values that session's version computed for the whole context, so the
//! next round would mix two versions' states and the output would be the greedy output of
//! neither; moving correctly means re-prefilling the whole context under the new version, a
//! cost paid mid-session for no gain in exactness. Keeping the version makes every session
//! lossless with respect to one named version, reported in its `HelloAck.target_version`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ecspec_model::{LoadedModel, Transformer};

/// One target version the server can verify with.
#[derive(Clone)]
pub struct TargetVersion {
    /// Its name (`v0`, `rust`, …), reported in `HelloAck.target_version`.
    pub name: String,
    /// Its weights (every version shares the base's; a LoRA version adds its adapter).
    pub transformer: Arc<Transformer>,
}

/// A `SetVersion` naming no loaded version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown target version `{requested}` (this cloud serves {available:?})")]
pub struct UnknownVersion {
    /// The name asked for.
    pub requested: String,
    /// The loaded versions.
    pub available: Vec<String>,
}

/// The served family: its versions, the active one, and what drafts are checked against.
pub struct CloudModel {
    /// Model family name drafts must name (e.g. `smollm2-135m`).
    pub family: String,
    /// Every loaded version (never empty; names unique).
    versions: Vec<TargetVersion>,
    /// Index into `versions` of the version new sessions get.
    active: AtomicUsize,
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
    /// Serves `model` alone as version `version` of `family`.
    pub fn new(family: &str, version: &str, model: &LoadedModel) -> Self {
        let v = TargetVersion {
            name: version.to_string(),
            transformer: model.transformer.clone(),
        };
        Self::build(family, model, vec![v], 0)
    }

    /// Serves several versions of `family`, all built on `base` (its tokenizer, hashes and
    /// context), with `active` the version new sessions get first.
    ///
    /// # Errors
    /// [`UnknownVersion`] when `active` is not among `versions`, when `versions` is empty or
    /// names a version twice (`requested` then names the duplicate).
    pub fn with_versions(
        family: &str,
        base: &LoadedModel,
        versions: Vec<TargetVersion>,
        active: &str,
    ) -> Result<Self, UnknownVersion> {
        let names: Vec<String> = versions.iter().map(|v| v.name.clone()).collect();
        if let Some((_, dup)) = names
            .iter()
            .enumerate()
            .find(|(i, n)| names[..*i].contains(n))
        {
            return Err(UnknownVersion {
                requested: format!("{dup} (listed twice)"),
                available: names.clone(),
            });
        }
        let Some(idx) = names.iter().position(|n| n == active) else {
            return Err(UnknownVersion {
                requested: active.to_string(),
                available: names,
            });
        };
        Ok(Self::build(family, base, versions, idx))
    }

    fn build(
        family: &str,
        base: &LoadedModel,
        versions: Vec<TargetVersion>,
        active: usize,
    ) -> Self {
        Self {
            family: family.to_string(),
            versions,
            active: AtomicUsize::new(active),
            base_hash: base.base_hash.clone(),
            vocab_hash: base.tokenizer.vocab_hash().to_string(),
            vocab_size: base.transformer.config().vocab_size,
            stop_tokens: base.tokenizer.stop_tokens().to_vec(),
            context_length: base.transformer.config().context_length,
        }
    }

    /// The version new sessions get now (a snapshot: a session keeps it to its end).
    pub fn active(&self) -> TargetVersion {
        self.versions[self.active.load(Ordering::Acquire)].clone()
    }

    /// The name of the active version.
    pub fn active_name(&self) -> &str {
        &self.versions[self.active.load(Ordering::Acquire)].name
    }

    /// Every loaded version's name, in order.
    pub fn version_names(&self) -> Vec<String> {
        self.versions.iter().map(|v| v.name.clone()).collect()
    }

    /// The version called `name`.
    pub fn version(&self, name: &str) -> Option<&TargetVersion> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// Makes `name` the version new sessions get; returns the previously active one.
    /// Running sessions are not touched (see the module docs).
    ///
    /// # Errors
    /// [`UnknownVersion`]; the active version is then unchanged.
    pub fn set_active(&self, name: &str) -> Result<String, UnknownVersion> {
        let idx = self
            .versions
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| UnknownVersion {
                requested: name.to_string(),
                available: self.version_names(),
            })?;
        let prev = self.active.swap(idx, Ordering::AcqRel);
        Ok(self.versions[prev].name.clone())
    }
}
