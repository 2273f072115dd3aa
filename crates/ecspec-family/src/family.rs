//! A family opened against its base: every check that needs the base's weights, and one
//! [`Transformer`] per version sharing them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ecspec_model::{anchor, DecoderLayer, Draft, LoadedModel, LoraAdapter, Transformer};
use sha2::{Digest, Sha256};

use crate::error::{FamilyError, Result};
use crate::manifest::{FamilyManifest, VersionSpec};

/// One target version, ready to serve.
pub struct LoadedVersion {
    /// Its manifest entry.
    pub spec: VersionSpec,
    /// Its adapter (`None` for the base itself).
    pub adapter: Option<LoraAdapter>,
    /// The base with the adapter applied (the base's own `Arc` when there is none).
    pub transformer: Arc<Transformer>,
}

/// A family with its base loaded and every version and the anchor validated against it.
pub struct Family {
    /// The manifest.
    pub manifest: FamilyManifest,
    /// The base model (tokenizer, chat template, hashes).
    pub base: Arc<LoadedModel>,
    /// The trained anchor layer, when the manifest names one.
    pub anchor: Option<Arc<DecoderLayer>>,
    /// The draft's own LoRA update of its lower layers, when the manifest names one.
    pub lower_adapter: Option<LoraAdapter>,
    versions: Vec<LoadedVersion>,
}

/// SHA-256 of a file's bytes, lowercase hex.
///
/// # Errors
/// [`FamilyError::Io`].
pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |e: std::io::Error| FamilyError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

impl Family {
    /// Opens `manifest` with its base GGUF at `base_file` (or the manifest's `base.file`):
    /// checks the file's SHA-256 and the frozen-tensor hash, loads the base, checks the draft
    /// layout and loads the anchor, loads and validates every version's adapter and builds its
    /// transformer on the base's shared weights.
    ///
    /// # Errors
    /// [`FamilyError::MissingFile`] (no base path at all, or a file gone since the manifest was
    /// read), [`FamilyError::BaseSha256`], [`FamilyError::Base`], [`FamilyError::BaseHash`],
    /// [`FamilyError::Draft`], [`FamilyError::AnchorSha256`], [`FamilyError::Anchor`],
    /// [`FamilyError::Adapter`].
    pub fn open(manifest: FamilyManifest, base_file: Option<&Path>) -> Result<Self> {
        let mpath = manifest.path.clone();
        let file: PathBuf = match base_file
            .map(Path::to_path_buf)
            .or_else(|| manifest.base_file())
        {
            Some(f) => f,
            None => {
                return Err(FamilyError::Invalid {
                    path: mpath,
                    key: "base.file".into(),
                    reason: format!(
                        "not set, and no base GGUF path was given for `{}`",
                        manifest.base.name
                    ),
                })
            }
        };
        if !file.is_file() {
            return Err(FamilyError::MissingFile {
                path: mpath,
                key: "base.file".into(),
                file,
            });
        }
        let found = sha256_file(&file)?;
        if found != manifest.base.sha256 {
            return Err(FamilyError::BaseSha256 {
                file,
                expected: manifest.base.sha256.clone(),
                found,
            });
        }
        let base = LoadedModel::load(&file).map_err(|source| FamilyError::Base {
            file: file.clone(),
            source,
        })?;
        if let Some(expected) = &manifest.frozen.base_hash {
            if expected != &base.base_hash {
                return Err(FamilyError::BaseHash {
                    file,
                    expected: expected.clone(),
                    found: base.base_hash.clone(),
                });
            }
        }
        let config = base.transformer.config().clone();
        let k = manifest.draft.shared_layers;
        if k >= config.num_layers {
            return Err(FamilyError::Draft {
                path: mpath,
                key: "draft.shared_layers".into(),
                reason: format!(
                    "{k} shared layers leave no room for the anchor: the base has {} layers (k < {})",
                    config.num_layers, config.num_layers
                ),
            });
        }
        let anchor = match &manifest.draft.anchor {
            None => None,
            Some(rel) => {
                let f = manifest.resolve(rel);
                if let Some(expected) = &manifest.draft.anchor_sha256 {
                    let found = sha256_file(&f)?;
                    if &found != expected {
                        return Err(FamilyError::AnchorSha256 {
                            file: f,
                            expected: expected.clone(),
                            found,
                        });
                    }
                }
                Some(
                    anchor::load_anchor(&f, &config)
                        .map_err(|source| FamilyError::Anchor { file: f, source })?,
                )
            }
        };
        let lower_adapter = match &manifest.draft.lower_adapter {
            None => None,
            Some(rel) => {
                let dir = manifest.resolve(rel);
                let bad = |reason: String| FamilyError::Draft {
                    path: mpath.clone(),
                    key: "draft.lower_adapter".into(),
                    reason: format!("{}: {reason}", dir.display()),
                };
                if let Some(expected) = &manifest.draft.lower_adapter_sha256 {
                    let f = dir.join("adapter_model.safetensors");
                    let found = sha256_file(&f)?;
                    if &found != expected {
                        return Err(bad(format!(
                            "adapter_model.safetensors has sha256 {found}, draft.lower_adapter_sha256 expects {expected}"
                        )));
                    }
                }
                let a = LoraAdapter::load_peft(&dir, &config).map_err(|e| bad(e.to_string()))?;
                if let Some(((l, _), _)) = a.iter().find(|((l, _), _)| *l >= k) {
                    return Err(bad(format!(
                        "adapts layer {l}, outside the draft's shared layers 0..{k}"
                    )));
                }
                Some(a)
            }
        };
        let base = Arc::new(base);
        let mut versions = Vec::with_capacity(manifest.versions.len());
        for spec in &manifest.versions {
            let (adapter, transformer) = match &spec.adapter {
                None => (None, base.transformer.clone()),
                Some(rel) => {
                    let dir = manifest.resolve(rel);
                    let err = |source| FamilyError::Adapter {
                        version: spec.name.clone(),
                        dir: dir.clone(),
                        source: Box::new(source),
                    };
                    let a = LoraAdapter::load_peft(&dir, &config).map_err(err)?;
                    let t =
                        Transformer::with_adapter(&base.transformer, &a).map_err(|e| match e {
                            ecspec_model::ModelError::Lora(l) => err(*l),
                            other => FamilyError::Base {
                                file: file.clone(),
                                source: other,
                            },
                        })?;
                    (Some(a), Arc::new(t))
                }
            };
            versions.push(LoadedVersion {
                spec: spec.clone(),
                adapter,
                transformer,
            });
        }
        Ok(Self {
            manifest,
            base,
            anchor,
            lower_adapter,
            versions,
        })
    }

    /// Every version, in manifest order.
    pub fn versions(&self) -> &[LoadedVersion] {
        &self.versions
    }

    /// The version called `name`.
    pub fn version(&self, name: &str) -> Option<&LoadedVersion> {
        self.versions.iter().find(|v| v.spec.name == name)
    }

    /// The static edge draft of this family (trained anchor when the manifest names one, else
    /// the untrained copy of the base's last layer), scoring only the manifest's
    /// `draft.vocab_subset` when it names one (FR-Spec).
    ///
    /// # Errors
    /// [`FamilyError::Draft`]; for the subset file, [`FamilyError::Io`] or
    /// [`FamilyError::Parse`] (with its line).
    pub fn draft(&self) -> Result<Draft> {
        let d = Draft::shared_backbone_with_lower(
            &self.base,
            self.manifest.draft.shared_layers,
            self.anchor.clone(),
            self.lower_adapter.as_ref(),
        )
        .map_err(|e| FamilyError::Draft {
            path: self.manifest.path.clone(),
            key: "draft.shared_layers".into(),
            reason: e.to_string(),
        })?;
        match &self.manifest.draft.vocab_subset {
            None => Ok(d),
            Some(rel) => {
                let ids = crate::vocab_subset::read(&self.manifest.resolve(rel))?;
                d.with_vocab_subset(&ids).map_err(|e| FamilyError::Draft {
                    path: self.manifest.path.clone(),
                    key: "draft.vocab_subset".into(),
                    reason: e.to_string(),
                })
            }
        }
    }
}
