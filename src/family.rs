//! The model families ECSpec ships with: which target the cloud serves and which draft the
//! edge runs for it, and loading them (fetching weights into the cache when needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ecspec_model::{Draft, DraftSpec, LoadedModel};

use crate::cli::{FamilyName, ModelArgs};
use crate::progress::BarReporter;

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
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("families"))
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
/// The manifest exists but is invalid, or the anchor's SHA-256 is not the manifest's.
pub fn shipped_draft(info: &FamilyInfo, shared_layers: usize) -> Result<Option<ShippedDraft>> {
    let path = families_dir().join(info.wire_name).join("family.toml");
    if !info.shared_backbone || !path.is_file() {
        return Ok(None);
    }
    let m = ecspec_family::FamilyManifest::load(&path)?;
    let Some(anchor) = m.draft.anchor.as_ref() else {
        return Ok(None);
    };
    if m.draft.shared_layers != shared_layers {
        return Ok(None);
    }
    let file = m.resolve(anchor);
    if let Some(expected) = &m.draft.anchor_sha256 {
        let found = ecspec_family::sha256_file(&file)?;
        if &found != expected {
            bail!(
                "{}: sha256 {found}, {} (draft.anchor_sha256) expects {expected}",
                file.display(),
                path.display()
            );
        }
    }
    let vocab_subset = match &m.draft.vocab_subset {
        Some(rel) => Some(ecspec_family::vocab_subset::read(&m.resolve(rel))?),
        None => None,
    };
    let lower_adapter = match &m.draft.lower_adapter {
        Some(rel) => {
            let dir = m.resolve(rel);
            if let Some(expected) = &m.draft.lower_adapter_sha256 {
                let f = dir.join("adapter_model.safetensors");
                let found = ecspec_family::sha256_file(&f)?;
                if &found != expected {
                    bail!(
                        "{}: sha256 {found}, {} (draft.lower_adapter_sha256) expects {expected}",
                        f.display(),
                        path.display()
                    );
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

/// A local path, or the registry model fetched (with progress) into the cache.
pub fn model_path(explicit: Option<&Path>, registry_name: &str) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.exists() {
            anyhow::bail!("model file {} does not exist", p.display());
        }
        if !p.is_file() {
            anyhow::bail!(
                "model path {} is not a file (give the path of a .gguf file)",
                p.display()
            );
        }
        return Ok(p.to_path_buf());
    }
    let cache = ecspec_weights::Cache::from_env().context("finding the model cache directory")?;
    let spec = ecspec_weights::find_model(registry_name).with_context(|| {
        let known: Vec<&str> = ecspec_weights::MODELS.iter().map(|m| m.name).collect();
        format!(
            "`{registry_name}` is not a known model (known: {}; families: smollm2, qwen2.5-coder)",
            known.join(", ")
        )
    })?;
    let mut reporter = BarReporter::new();
    let path = ecspec_weights::fetch(spec, &cache, &mut reporter)
        .with_context(|| format!("fetching model {registry_name}"))?;
    reporter.finish();
    Ok(path)
}

fn load(path: &Path) -> Result<Arc<LoadedModel>> {
    Ok(Arc::new(LoadedModel::load(path).with_context(|| {
        format!("loading model {}", path.display())
    })?))
}

/// The models one process needs: the edge's draft (and its tokenizer), and the target when
/// the cloud runs in this process.
pub struct Loaded {
    /// The family.
    pub info: FamilyInfo,
    /// The model file the edge reads its tokenizer and draft from.
    pub edge_model: Arc<LoadedModel>,
    /// The draft.
    pub draft: Draft,
    /// What the draft is, for people: kind, layers, and which anchor or file.
    pub draft_desc: String,
    /// The target, when loaded.
    pub target: Option<Arc<LoadedModel>>,
    /// The draft's known acceptance rate (the shipped draft's `draft.acceptance`): where the
    /// edge's estimate starts. None: an uninformed start.
    pub acceptance_prior: Option<f64>,
}

/// Loads the family's draft, and its target when `with_target`.
pub fn load_family(args: &ModelArgs, with_target: bool) -> Result<Loaded> {
    let info = info(args.family);
    let target_path = if with_target {
        Some(model_path(args.model.as_deref(), info.target)?)
    } else {
        None
    };
    let draft_path = match (&args.draft_model, info.shared_backbone, &target_path) {
        (Some(p), _, _) => model_path(Some(p), info.draft_file)?,
        // A shared-backbone draft is built from the target family's own base file.
        (None, true, Some(t)) => t.clone(),
        (None, _, _) => model_path(None, info.draft_file)?,
    };
    let edge_model = load(&draft_path)?;
    let target = match target_path {
        Some(p) if p == draft_path => Some(edge_model.clone()),
        Some(p) => Some(load(&p)?),
        None => None,
    };
    let mut acceptance_prior = None;
    let mut vocab_subset = None;
    let mut lower_dir = None;
    let (draft, draft_desc) = match (info.shared_backbone, &args.anchor, &args.draft_file) {
        (_, _, Some(p)) => (
            Draft::standalone(&edge_model, p)
                .with_context(|| format!("loading the conventional draft {}", p.display()))?,
            format!("conventional {}", p.display()),
        ),
        (true, anchor, None) => {
            // Default: the family's shipped trained anchor; `--anchor none`: the untrained copy.
            let path = match anchor {
                Some(p) if p.as_os_str() == "none" => None,
                Some(p) => Some(p.clone()),
                None => shipped_draft(&info, args.shared_layers)?.map(|d| {
                    acceptance_prior = d.acceptance;
                    vocab_subset = d.vocab_subset;
                    lower_dir = d.lower_adapter;
                    d.anchor
                }),
            };
            let anchor = match &path {
                Some(p) => Some(
                    ecspec_model::anchor::load_anchor(p, edge_model.transformer.config())
                        .with_context(|| format!("loading the anchor layer {}", p.display()))?,
                ),
                None => None,
            };
            let lower = match &lower_dir {
                Some(dir) => Some(
                    ecspec_model::LoraAdapter::load_peft(dir, edge_model.transformer.config())
                        .with_context(|| {
                            format!("loading the draft's lower-layer adapter {}", dir.display())
                        })?,
                ),
                None => None,
            };
            let mut d = Draft::shared_backbone_with_lower(
                &edge_model,
                args.shared_layers,
                anchor,
                lower.as_ref(),
            )
            .context("building the draft")?;
            if let Some(ids) = &vocab_subset {
                d = d
                    .with_vocab_subset(ids)
                    .context("the draft's vocabulary subset (draft.vocab_subset)")?;
            }
            let desc = format!(
                "shared-backbone: {} base layers{} + {}{}",
                args.shared_layers,
                lower_dir.as_ref().map_or(String::new(), |d| format!(
                    " (with the draft's own LoRA {})",
                    d.display()
                )),
                path.map_or(
                    "untrained anchor (copy of the last layer)".to_string(),
                    |p| { format!("anchor {}", p.display()) }
                ),
                vocab_subset.as_ref().map_or(String::new(), |v| format!(
                    ", head over {} tokens (FR-Spec)",
                    v.len()
                ))
            );
            (d, desc)
        }
        (false, Some(_), None) => bail!(
            "--anchor applies to a shared-backbone draft; the {} family's draft is independent",
            info.wire_name
        ),
        (false, None, None) => (
            Draft::build(&DraftSpec::Independent, &edge_model).context("building the draft")?,
            format!("independent {}", draft_path.display()),
        ),
    };
    Ok(Loaded {
        info,
        edge_model,
        draft,
        draft_desc,
        target,
        acceptance_prior,
    })
}
