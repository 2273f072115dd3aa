//! Loading a family's models for one process: the edge's draft (and its tokenizer), and the
//! target when the cloud runs in this process; registry models are fetched into the cache
//! with a progress bar.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ecspec_cloud::{CloudModel, TargetVersion, UnknownVersion};
use ecspec_family::{info, shipped_draft, Family, FamilyInfo, FamilyName};
use ecspec_model::{Draft, DraftSpec, LoadedModel};

use crate::options::ModelArgs;
use crate::progress::BarReporter;

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

/// Opens a family manifest, with its base from `model` (`--model`), the manifest's own base
/// file, or the cache's copy of `base`'s target.
///
/// # Errors
/// A manifest that does not parse or check, a base that is not cached, a version that does
/// not load.
pub fn open_family(manifest: &Path, model: Option<&Path>, base: FamilyName) -> Result<Family> {
    let m = ecspec_family::FamilyManifest::load(manifest)?;
    let base_file = match (model, m.base_file()) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Some(_)) => None,
        (None, None) => Some(model_path(None, info(base).target)?),
    };
    Ok(Family::open(m, base_file.as_deref())?)
}

/// Every version of `fam` as the cloud serves it: its name and its weights (the base's, plus
/// the version's adapter).
pub fn target_versions(fam: &Family) -> Vec<TargetVersion> {
    fam.versions()
        .iter()
        .map(|v| TargetVersion {
            name: v.spec.name.clone(),
            transformer: v.transformer.clone(),
        })
        .collect()
}

/// A cloud model serving every version of `fam`, `active` the one new sessions get.
///
/// # Errors
/// [`UnknownVersion`] when `active` is not a version of `fam`.
pub fn family_cloud_model(fam: &Family, active: &str) -> Result<CloudModel, UnknownVersion> {
    CloudModel::with_versions(&fam.manifest.name, &fam.base, target_versions(fam), active)
}
