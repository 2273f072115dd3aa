//! The two kinds of edge draft behind one interface (a [`Transformer`] run in a
//! [`crate::Session`]): an independent small model, or a shared-backbone draft built from the
//! target family's frozen base (design.md §5).

use std::sync::Arc;

use crate::error::{ModelError, Result};
use crate::loaded::LoadedModel;
use crate::transformer::{DecoderLayer, Transformer};

/// What kind of draft the edge runs; sent in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftKind {
    /// A separate model with its own embedding and head (the conventional, tightly coupled
    /// pair). Compatible with a target when the vocabularies are identical.
    Independent,
    /// Built on the family's frozen base: compatible with every target version of that base.
    SharedBackbone,
}

impl DraftKind {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            DraftKind::Independent => "independent",
            DraftKind::SharedBackbone => "shared-backbone",
        }
    }
    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "independent" => Some(Self::Independent),
            "shared-backbone" => Some(Self::SharedBackbone),
            _ => None,
        }
    }
}

/// How to build the edge draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftSpec {
    /// Use a separate model file as it is.
    Independent,
    /// Base embedding → first `shared_layers` base layers → anchor (a copy of the base's last
    /// layer until trained) → base final norm → base LM head.
    SharedBackbone {
        /// k, the number of base layers reused.
        shared_layers: usize,
    },
}

/// An edge draft ready to run. Cloning is cheap: the clone shares the weights (an [`Arc`]).
#[derive(Clone)]
pub struct Draft {
    /// Which kind.
    pub kind: DraftKind,
    /// Its weights.
    pub transformer: Arc<Transformer>,
    /// The identity the handshake checks: the base hash for a shared-backbone draft, the
    /// vocabulary hash for an independent one.
    pub compat_hash: String,
}

impl Draft {
    /// Builds a draft from `model` (the independent draft's own file, or the family's base).
    ///
    /// # Errors
    /// [`ModelError::Incompatible`] for a shared-backbone layout the base cannot provide.
    pub fn build(spec: &DraftSpec, model: &LoadedModel) -> Result<Self> {
        match spec {
            DraftSpec::Independent => Ok(Self {
                kind: DraftKind::Independent,
                transformer: model.transformer.clone(),
                compat_hash: model.tokenizer.vocab_hash().to_string(),
            }),
            DraftSpec::SharedBackbone { shared_layers } => {
                Self::shared_backbone(model, *shared_layers, None)
            }
        }
    }

    /// A conventional draft read from a standalone file ([`crate::standalone`]) in `base`'s
    /// vocabulary: its own embedding, head and layers, so it is independent of the base's
    /// weights (the handshake checks the vocabulary, as for any independent draft).
    ///
    /// # Errors
    /// As [`crate::standalone::load`].
    pub fn standalone(base: &LoadedModel, path: &std::path::Path) -> Result<Self> {
        let t = crate::standalone::load(path, base.transformer.config())?;
        Ok(Self {
            kind: DraftKind::Independent,
            transformer: Arc::new(t),
            compat_hash: base.tokenizer.vocab_hash().to_string(),
        })
    }

    /// This draft scoring only `ids` (FR-Spec, arXiv 2502.14856; see
    /// [`Transformer::with_vocab_subset`]). Kind and compatibility hash are unchanged: the
    /// cloud verifies over the full vocabulary as before.
    ///
    /// # Errors
    /// As [`Transformer::with_vocab_subset`].
    pub fn with_vocab_subset(&self, ids: &[u32]) -> Result<Self> {
        Ok(Self {
            kind: self.kind,
            transformer: Arc::new(self.transformer.with_vocab_subset(ids)?),
            compat_hash: self.compat_hash.clone(),
        })
    }

    /// The shared-backbone draft on `base` with `shared_layers` base layers and `anchor` (a
    /// trained anchor layer, e.g. from [`crate::anchor::load_anchor`]; `None`: a copy of the
    /// base's last layer).
    ///
    /// # Errors
    /// [`ModelError::Incompatible`] for k = 0 or k ≥ the base's layer count.
    pub fn shared_backbone(
        base: &LoadedModel,
        shared_layers: usize,
        anchor: Option<Arc<DecoderLayer>>,
    ) -> Result<Self> {
        Self::shared_backbone_with_lower(base, shared_layers, anchor, None)
    }

    /// [`Self::shared_backbone`] whose k lower layers carry the draft's own LoRA update
    /// `lower` (edge-only: trained with the anchor, never sent to the cloud; the embedding,
    /// final norm and head stay the base's, so the compatibility hash is unchanged).
    ///
    /// # Errors
    /// As [`Self::shared_backbone`]; [`ModelError::Incompatible`] when `lower` adapts a layer
    /// at or above k (it would not be part of the draft); LoRA shape errors.
    pub fn shared_backbone_with_lower(
        base: &LoadedModel,
        shared_layers: usize,
        anchor: Option<Arc<DecoderLayer>>,
        lower: Option<&crate::LoraAdapter>,
    ) -> Result<Self> {
        if shared_layers == 0 {
            return Err(ModelError::Incompatible(
                "a shared-backbone draft needs k ≥ 1 base layers".into(),
            ));
        }
        let t = match lower {
            None => Transformer::shared_backbone_draft(&base.transformer, shared_layers, anchor)?,
            Some(a) => {
                if let Some(((layer, _), _)) = a.iter().find(|((l, _), _)| *l >= shared_layers) {
                    return Err(ModelError::Incompatible(format!(
                        "the draft's lower-layer adapter changes layer {layer}, but the draft has only the base's layers 0..{shared_layers}"
                    )));
                }
                let adapted = Transformer::with_adapter(&base.transformer, a)?;
                Transformer::shared_backbone_draft(&adapted, shared_layers, anchor)?
            }
        };
        Ok(Self {
            kind: DraftKind::SharedBackbone,
            transformer: Arc::new(t),
            compat_hash: base.base_hash.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny::{write_tiny_model, TinySpec};

    #[test]
    fn a_clone_shares_the_weights() {
        let dir = std::env::temp_dir().join(format!("ecspec-draft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        write_tiny_model(&path, TinySpec::default()).unwrap();
        let base = LoadedModel::load(&path).unwrap();
        let spec = DraftSpec::SharedBackbone { shared_layers: 2 };
        let d = Draft::build(&spec, &base).unwrap();
        let c = d.clone();
        assert!(Arc::ptr_eq(&d.transformer, &c.transformer));
        assert_eq!((c.kind, &c.compat_hash), (d.kind, &d.compat_hash));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
