//! The model families ECSpec ships with: which target the cloud serves and which draft the
//! edge runs for it (the registry), and the trained static draft a shared-backbone family ships
//! in `families/<wire name>/`.

use std::path::{Path, PathBuf};

use crate::FamilyError;

/// A model family: a target and the draft the edge runs for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum FamilyName {
    /// SmolLM2-135M-Instruct target; shared-backbone draft built from its frozen base.
    #[cfg_attr(feature = "clap", value(name = "smollm2"))]
    Smollm2,
    /// Qwen2.5-Coder-1.5B-Instruct target; independent Qwen2.5-Coder-0.5B-Instruct draft.
    #[cfg_attr(feature = "clap", value(name = "qwen2.5-coder"))]
    Qwen25Coder,
}

impl FamilyName {
    /// The name on the command line (`smollm2`, `qwen2.5-coder`).
    pub fn cli_name(self) -> &'static str {
        match self {
            FamilyName::Smollm2 => "smollm2",
            FamilyName::Qwen25Coder => "qwen2.5-coder",
        }
    }
}

/// A family's static description.
pub struct FamilyInfo {
    /// Family name on the wire (the cloud checks it).
    pub wire_name: &'static str,
    /// Registry name of the target model.
    pub target: &'static str,
    /// Registry name of the draft's model file (the base itself for a shared-backbone draft).
    pub draft_file: &'static str,
    /// Whether the draft is built from the base (shared backbone) or is its own model.
    pub shared_backbone: bool,
    /// Hugging Face id of the target, written into PEFT adapters trained on it.
    pub hf_name: &'static str,
}

/// Looks a family up.
pub fn info(f: FamilyName) -> FamilyInfo {
    match f {
        FamilyName::Smollm2 => FamilyInfo {
            wire_name: "smollm2-135m",
            target: "smollm2-135m-instruct",
            draft_file: "smollm2-135m-instruct",
            shared_backbone: true,
            hf_name: "HuggingFaceTB/SmolLM2-135M-Instruct",
        },
        FamilyName::Qwen25Coder => FamilyInfo {
            wire_name: "qwen2.5-coder",
            target: "qwen2.5-coder-1.5b-instruct",
            draft_file: "qwen2.5-coder-0.5b-instruct",
            shared_backbone: false,
            hf_name: "Qwen/Qwen2.5-Coder-1.5B-Instruct",
        },
    }
}

/// Where shipped families live: `$ECSPEC_FAMILIES_DIR`, else `families/` of the source tree
/// this binary was built from.
pub fn families_dir() -> PathBuf {
    std::env::var_os("ECSPEC_FAMILIES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../families"))
}

/// The trained static draft shipped with a shared-backbone family.
#[derive(Debug, Clone, PartialEq)]
pub struct ShippedDraft {
    /// The anchor layer file (its SHA-256 checked against the manifest).
    pub anchor: PathBuf,
    /// The draft's measured acceptance rate across the family's versions (`draft.acceptance`),
    /// the edge's starting estimate.
    pub acceptance: Option<f64>,
    /// The FR-Spec vocabulary subset its head scores (`draft.vocab_subset`).
    pub vocab_subset: Option<Vec<u32>>,
    /// The draft's own LoRA update of its lower layers (`draft.lower_adapter`, PEFT directory,
    /// its SHA-256 checked against the manifest).
    pub lower_adapter: Option<PathBuf>,
}

/// The trained draft shipped with a shared-backbone family, when present and trained for
/// `shared_layers` base layers (the manifest's `draft.anchor` and `draft.shared_layers` in
/// `families/<wire name>/family.toml`).
///
/// # Errors
/// The manifest exists but is invalid, or the anchor's or lower adapter's SHA-256 is not
/// the manifest's ([`FamilyError::Invalid`] naming the key).
pub fn shipped_draft(
    info: &FamilyInfo,
    shared_layers: usize,
) -> Result<Option<ShippedDraft>, FamilyError> {
    let path = families_dir().join(info.wire_name).join("family.toml");
    if !info.shared_backbone || !path.is_file() {
        return Ok(None);
    }
    let m = crate::FamilyManifest::load(&path)?;
    let Some(anchor) = m.draft.anchor.as_ref() else {
        return Ok(None);
    };
    if m.draft.shared_layers != shared_layers {
        return Ok(None);
    }
    let file = m.resolve(anchor);
    if let Some(expected) = &m.draft.anchor_sha256 {
        let found = crate::sha256_file(&file)?;
        if &found != expected {
            return Err(FamilyError::Invalid {
                path,
                key: "draft.anchor_sha256".into(),
                reason: format!("{} has sha256 {found}, expected {expected}", file.display()),
            });
        }
    }
    let vocab_subset = match &m.draft.vocab_subset {
        Some(rel) => Some(crate::vocab_subset::read(&m.resolve(rel))?),
        None => None,
    };
    let lower_adapter = match &m.draft.lower_adapter {
        Some(rel) => {
            let dir = m.resolve(rel);
            if let Some(expected) = &m.draft.lower_adapter_sha256 {
                let f = dir.join("adapter_model.safetensors");
                let found = crate::sha256_file(&f)?;
                if &found != expected {
                    return Err(FamilyError::Invalid {
                        path,
                        key: "draft.lower_adapter_sha256".into(),
                        reason: format!("{} has sha256 {found}, expected {expected}", f.display()),
                    });
                }
            }
            Some(dir)
        }
        None => None,
    };
    Ok(Some(ShippedDraft {
        anchor: file,
        acceptance: m.draft.acceptance,
        vocab_subset,
        lower_adapter,
    }))
}
