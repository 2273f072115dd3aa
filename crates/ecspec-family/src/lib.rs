//! Shared-backbone model families (design.md §5): one frozen base, one static edge draft built
//! on it, and target versions that are LoRA adapters on the base.
//!
//! - [`FamilyManifest`]: the TOML file describing a family (format in
//!   `docs/family-manifest.md`): [`BaseSpec`], [`FrozenSpec`], [`DraftLayout`],
//!   [`VersionSpec`]. [`FamilyManifest::load`] parses and checks it without touching the base;
//!   [`FamilyManifest::save`] writes it back (what `ecspec family evolve` uses to add a version).
//! - [`Family`]: a manifest opened against its base GGUF — the base's SHA-256 and frozen-tensor
//!   hash checked, every adapter and the anchor validated against the base's shapes, one
//!   [`ecspec_model::Transformer`] per version sharing the base's weights.
//! - [`shipped`]: the families ECSpec ships ([`FamilyName`] → [`FamilyInfo`]: target, draft
//!   file, wire name) and their trained static drafts ([`shipped_draft`]).
//! - [`FamilyError`]: each variant names the file and key at fault and what was expected.
//!
//! ```no_run
//! use ecspec_family::{Family, FamilyManifest};
//! let manifest = FamilyManifest::load("families/smollm2/family.toml".as_ref())?;
//! let family = Family::open(manifest, None)?; // base.file from the manifest
//! for v in family.versions() {
//!     println!("{} ({})", v.spec.name, v.spec.description);
//! }
//! let draft = family.draft()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
pub mod family;
pub mod manifest;
pub mod shipped;
pub mod vocab_subset;

pub use error::{FamilyError, Result};
pub use family::{sha256_file, Family, LoadedVersion};
pub use manifest::{
    BaseSpec, DraftLayout, FamilyManifest, FrozenPart, FrozenSpec, VersionSpec, FORMAT_VERSION,
};
pub use shipped::{families_dir, info, shipped_draft, FamilyInfo, FamilyName, ShippedDraft};
