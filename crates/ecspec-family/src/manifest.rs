//! The family manifest: a TOML file describing a base, its frozen parts, the edge draft's
//! layout and the target versions (format and example in `docs/family-manifest.md`).
//!
//! [`FamilyManifest::load`] checks everything that can be checked without the base model:
//! syntax, types, unknown keys (a typo is an error, not a silently ignored key), value ranges,
//! unique version names, parents that exist and come earlier, RFC 3339 times, hex digests, and
//! that every file and directory named exists. [`crate::Family::open`] checks the rest against
//! the base.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{FamilyError, Result};

/// The manifest format this code reads and writes (`format = 1`).
pub const FORMAT_VERSION: u32 = 1;

/// A family manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyManifest {
    /// Manifest format, [`FORMAT_VERSION`].
    pub format: u32,
    /// Family name drafts name at the handshake (e.g. `smollm2-135m`).
    pub name: String,
    /// The version a server activates at start; the last listed version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// The frozen base model.
    pub base: BaseSpec,
    /// What no version and no draft may change.
    pub frozen: FrozenSpec,
    /// The static edge draft.
    pub draft: DraftLayout,
    /// Target versions, in creation order (`[[version]]` tables).
    #[serde(rename = "version", default)]
    pub versions: Vec<VersionSpec>,
    /// Where the manifest lives: errors name it and relative paths resolve against its
    /// directory. Not part of the file.
    #[serde(skip)]
    pub path: PathBuf,
}

/// The base model every version and the draft are built on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseSpec {
    /// The base's name: the `ecspec models` registry name when it comes from there
    /// (`smollm2-135m-instruct`), else any descriptive name.
    pub name: String,
    /// Path of the GGUF file, relative to the manifest's directory or absolute. Optional: the
    /// binary resolves a registry `name` to the weight cache instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// SHA-256 of the GGUF file, 64 hex digits.
    pub sha256: String,
    /// The Hugging Face model id adapters name as `base_model_name_or_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_name: Option<String>,
}

/// A part of the base that stays frozen across the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrozenPart {
    /// Token embedding E.
    Embedding,
    /// Final RMSNorm.
    FinalNorm,
    /// LM head H (tied to E in SmolLM2 and Qwen2.5).
    LmHead,
    /// The base's decoder layers (versions add LoRA updates on top; the weights stay).
    BaseLayers,
}

impl FrozenPart {
    /// All parts; the shared-backbone contract of design.md §5 needs every one frozen.
    pub const ALL: [FrozenPart; 4] = [
        Self::Embedding,
        Self::FinalNorm,
        Self::LmHead,
        Self::BaseLayers,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Embedding => "embedding",
            Self::FinalNorm => "final_norm",
            Self::LmHead => "lm_head",
            Self::BaseLayers => "base_layers",
        }
    }
}

/// The frozen parts and their identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrozenSpec {
    /// Must list all of [`FrozenPart::ALL`].
    pub parts: Vec<FrozenPart>,
    /// SHA-256 over the frozen base tensors (embedding, final norm, head), the hash a
    /// shared-backbone draft names at the handshake; checked against the base when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_hash: Option<String>,
}

/// The static edge draft: base embedding → base layers `0..shared_layers` → anchor → base
/// final norm → base LM head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftLayout {
    /// k ≥ 1: how many of the base's first layers the draft reuses (fewer than the base has).
    pub shared_layers: usize,
    /// The trained anchor layer (safetensors; format in `ecspec_model::anchor`), relative to
    /// the manifest's directory. Absent: the untrained draft, a copy of the base's last layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    /// SHA-256 of the anchor file; checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_sha256: Option<String>,
    /// The draft's own LoRA update of its k lower layers (PEFT directory, relative to the
    /// manifest's directory), trained with the anchor; edge-only. Absent: the base's layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_adapter: Option<String>,
    /// SHA-256 of the lower adapter's `adapter_model.safetensors`; checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_adapter_sha256: Option<String>,
    /// FR-Spec draft head (Zhao et al. 2025, arXiv 2502.14856): a file of token ids, most
    /// frequent first ([`crate::vocab_subset`]), relative to the manifest's directory; the
    /// draft scores only these (the target still scores the whole vocabulary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_subset: Option<String>,
    /// The static draft's measured greedy per-token acceptance probability α ∈ [0, 1] on the
    /// family's versions: accepted / (accepted + rejections), the MLE of Leviathan et al.'s
    /// α (arXiv 2211.17192, §3.1) and the quantity the edge's estimator tracks. The draft never changes across versions, so its α
    /// is a property of the family: the edge starts its acceptance estimate from it instead of
    /// an uninformed prior (design.md §2). Absent: the edge starts uninformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<f64>,
}

/// One target version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    /// Unique name (`v0`, `rust`, …): letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// PEFT adapter directory, relative to the manifest's directory. Absent: the base itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// The version this one was trained from; must be listed earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Creation time, RFC 3339 (`2026-05-01T12:00:00Z`).
    pub created: String,
    /// What it was trained on, by which command.
    pub description: String,
}

fn invalid(path: &Path, key: impl Into<String>, reason: impl Into<String>) -> FamilyError {
    FamilyError::Invalid {
        path: path.to_path_buf(),
        key: key.into(),
        reason: reason.into(),
    }
}

impl FamilyManifest {
    /// Reads and checks the manifest at `path` (see the module docs for what is checked).
    ///
    /// # Errors
    /// [`FamilyError::Io`], [`FamilyError::Parse`], [`FamilyError::Invalid`],
    /// [`FamilyError::MissingFile`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| FamilyError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let m = Self::parse(&text, path)?;
        m.check_files()?;
        Ok(m)
    }

    /// Parses and checks manifest text as if read from `path` (named in errors; relative
    /// paths resolve against its directory). Does not look at the files it names.
    ///
    /// # Errors
    /// [`FamilyError::Parse`], [`FamilyError::Invalid`].
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut m: Self = toml::from_str(text).map_err(|e| FamilyError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        m.path = path.to_path_buf();
        m.check()?;
        Ok(m)
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> String {
        // Serializing plain strings, integers and tables cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks, then writes the manifest to `path` (through a temporary file and a rename).
    /// Relative paths in it are written as they are: save next to where it was loaded from.
    ///
    /// # Errors
    /// As [`Self::parse`]; [`FamilyError::Io`].
    pub fn save(&self, path: &Path) -> Result<()> {
        self.check()?;
        let io = |e: std::io::Error| FamilyError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let text = format!(
            "# ECSpec model family manifest (docs/family-manifest.md).\n{}",
            self.to_toml()
        );
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Appends a version (checked with the rest: unique name, parent listed, valid time).
    ///
    /// # Errors
    /// [`FamilyError::Invalid`]; the manifest is unchanged then.
    pub fn add_version(&mut self, v: VersionSpec) -> Result<()> {
        self.versions.push(v);
        if let Err(e) = self.check() {
            self.versions.pop();
            return Err(e);
        }
        Ok(())
    }

    /// `rel` resolved against the manifest's directory (absolute paths stay as they are).
    pub fn resolve(&self, rel: &str) -> PathBuf {
        self.path.parent().unwrap_or(Path::new("")).join(rel)
    }

    /// The base GGUF's path, when the manifest names one.
    pub fn base_file(&self) -> Option<PathBuf> {
        self.base.file.as_deref().map(|f| self.resolve(f))
    }

    /// The name of the version a server starts with.
    pub fn active_version(&self) -> &str {
        match &self.active {
            Some(a) => a,
            None => self.versions.last().map_or("", |v| v.name.as_str()),
        }
    }

    /// The version called `name`.
    pub fn version(&self, name: &str) -> Option<&VersionSpec> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// Checks values (everything but the files).
    fn check(&self) -> Result<()> {
        let path = self.path.as_path();
        if self.format != FORMAT_VERSION {
            return Err(invalid(
                path,
                "format",
                format!(
                    "format {} is not supported (this build reads {FORMAT_VERSION})",
                    self.format
                ),
            ));
        }
        check_name(path, "name", &self.name)?;
        if self.base.name.trim().is_empty() {
            return Err(invalid(path, "base.name", "must not be empty"));
        }
        check_sha256(path, "base.sha256", &self.base.sha256)?;
        if let Some(f) = &self.base.file {
            check_rel(path, "base.file", f)?;
        }
        for part in FrozenPart::ALL {
            if !self.frozen.parts.contains(&part) {
                return Err(invalid(
                    path,
                    "frozen.parts",
                    format!(
                        "`{}` is missing: a shared-backbone family keeps the embedding, final norm, LM head and base layers frozen (parts = [\"embedding\", \"final_norm\", \"lm_head\", \"base_layers\"])",
                        part.as_str()
                    ),
                ));
            }
        }
        if let Some(h) = &self.frozen.base_hash {
            check_sha256(path, "frozen.base_hash", h)?;
        }
        if self.draft.shared_layers == 0 {
            return Err(invalid(
                path,
                "draft.shared_layers",
                "must be at least 1 (the draft reuses the base's first k layers)",
            ));
        }
        if let Some(a) = &self.draft.anchor {
            check_rel(path, "draft.anchor", a)?;
        }
        match (&self.draft.anchor, &self.draft.anchor_sha256) {
            (None, Some(_)) => {
                return Err(invalid(
                    path,
                    "draft.anchor_sha256",
                    "given without draft.anchor",
                ))
            }
            (_, Some(h)) => check_sha256(path, "draft.anchor_sha256", h)?,
            _ => {}
        }
        if let Some(v) = &self.draft.vocab_subset {
            check_rel(path, "draft.vocab_subset", v)?;
        }
        if let Some(v) = &self.draft.lower_adapter {
            check_rel(path, "draft.lower_adapter", v)?;
        }
        match (&self.draft.lower_adapter, &self.draft.lower_adapter_sha256) {
            (None, Some(_)) => {
                return Err(invalid(
                    path,
                    "draft.lower_adapter_sha256",
                    "given without draft.lower_adapter",
                ))
            }
            (_, Some(h)) => check_sha256(path, "draft.lower_adapter_sha256", h)?,
            _ => {}
        }
        if let Some(a) = self.draft.acceptance {
            if !(0.0..=1.0).contains(&a) {
                return Err(invalid(
                    path,
                    "draft.acceptance",
                    format!("{a} is not an acceptance rate in [0, 1]"),
                ));
            }
        }
        if self.versions.is_empty() {
            return Err(invalid(
                path,
                "version",
                "a family lists at least one [[version]]",
            ));
        }
        for (i, v) in self.versions.iter().enumerate() {
            let key = |k: &str| format!("version[{i}].{k}");
            check_name(path, &key("name"), &v.name)?;
            if let Some(j) = self.versions[..i].iter().position(|u| u.name == v.name) {
                return Err(invalid(
                    path,
                    key("name"),
                    format!("`{}` is already the name of version[{j}]", v.name),
                ));
            }
            if let Some(p) = &v.parent {
                if p == &v.name {
                    return Err(invalid(
                        path,
                        key("parent"),
                        format!("version `{}` cannot be its own parent", v.name),
                    ));
                }
                if !self.versions[..i].iter().any(|u| &u.name == p) {
                    let earlier: Vec<&str> =
                        self.versions[..i].iter().map(|u| u.name.as_str()).collect();
                    return Err(invalid(
                        path,
                        key("parent"),
                        format!("`{p}` is not a version listed before `{}` (earlier versions: {earlier:?})", v.name),
                    ));
                }
            }
            if let Some(a) = &v.adapter {
                check_rel(path, &key("adapter"), a)?;
            }
            check_rfc3339(&v.created).map_err(|r| {
                invalid(
                    path,
                    key("created"),
                    format!("`{}` is not an RFC 3339 time: {r}", v.created),
                )
            })?;
        }
        if let Some(a) = &self.active {
            if self.version(a).is_none() {
                let names: Vec<&str> = self.versions.iter().map(|v| v.name.as_str()).collect();
                return Err(invalid(
                    path,
                    "active",
                    format!("`{a}` is not a listed version ({names:?})"),
                ));
            }
        }
        Ok(())
    }

    /// Checks that every named file exists.
    fn check_files(&self) -> Result<()> {
        let missing = |key: String, file: PathBuf| FamilyError::MissingFile {
            path: self.path.clone(),
            key,
            file,
        };
        if let Some(f) = self.base_file() {
            if !f.is_file() {
                return Err(missing("base.file".into(), f));
            }
        }
        for (key, rel) in [
            ("draft.anchor", &self.draft.anchor),
            ("draft.vocab_subset", &self.draft.vocab_subset),
        ] {
            if let Some(rel) = rel {
                let f = self.resolve(rel);
                if !f.is_file() {
                    return Err(missing(key.into(), f));
                }
            }
        }
        if let Some(rel) = &self.draft.lower_adapter {
            let d = self.resolve(rel);
            if !d.is_dir() {
                return Err(missing("draft.lower_adapter".into(), d));
            }
        }
        for (i, v) in self.versions.iter().enumerate() {
            if let Some(a) = &v.adapter {
                let d = self.resolve(a);
                if !d.is_dir() {
                    return Err(missing(format!("version[{i}].adapter"), d));
                }
                for f in [
                    ecspec_model::lora::PEFT_CONFIG_FILE,
                    ecspec_model::lora::PEFT_WEIGHTS_FILE,
                ] {
                    if !d.join(f).is_file() {
                        return Err(missing(format!("version[{i}].adapter"), d.join(f)));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_name(path: &Path, key: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            key,
            format!("`{name}`: use letters, digits, `.`, `_` and `-` (at least one)"),
        ))
    }
}

fn check_sha256(path: &Path, key: &str, h: &str) -> Result<()> {
    if h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(invalid(
            path,
            key,
            format!("`{h}` is not a SHA-256 digest (64 lowercase hex digits)"),
        ))
    }
}

fn check_rel(path: &Path, key: &str, p: &str) -> Result<()> {
    if p.trim().is_empty() {
        Err(invalid(path, key, "must not be empty"))
    } else {
        Ok(())
    }
}

/// Checks an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (`t`/`z` and a space
/// for `T` accepted, as RFC 3339 §5.6 allows), with calendar ranges.
pub(crate) fn check_rfc3339(s: &str) -> std::result::Result<(), String> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> std::result::Result<u32, String> {
        let part = s.get(r.clone()).ok_or("too short")?;
        if part.len() != r.len() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("expected {} digits at offset {}", r.len(), r.start));
        }
        part.parse().map_err(|_| "bad number".to_string())
    };
    let sep = |i: usize, c: &[u8]| -> std::result::Result<(), String> {
        if b.get(i).is_some_and(|x| c.contains(x)) {
            Ok(())
        } else {
            Err(format!(
                "expected {:?} at offset {i}",
                c.iter().map(|&x| x as char).collect::<String>()
            ))
        }
    };
    let (y, mo, d) = (
        num(0..4)?,
        {
            sep(4, b"-")?;
            num(5..7)?
        },
        {
            sep(7, b"-")?;
            num(8..10)?
        },
    );
    sep(10, b"Tt ")?;
    let (h, mi) = (num(11..13)?, {
        sep(13, b":")?;
        num(14..16)?
    });
    sep(16, b":")?;
    let sec = num(17..19)?;
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) {
        return Err(format!("month {mo}"));
    }
    if d == 0 || d > days[mo as usize - 1] {
        return Err(format!("day {d} of month {mo}"));
    }
    if h > 23 || mi > 59 || sec > 60 {
        return Err(format!("time {h:02}:{mi:02}:{sec:02}"));
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err("a fraction needs digits after `.`".into());
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => Ok(()),
        Some(b'+' | b'-') if b.len() == i + 6 => {
            let (oh, om) = (num(i + 1..i + 3)?, {
                sep(i + 3, b":")?;
                num(i + 4..i + 6)?
            });
            if oh > 23 || om > 59 {
                return Err(format!("offset {oh:02}:{om:02}"));
            }
            Ok(())
        }
        _ => Err("expected a time zone, `Z` or `±HH:MM`, at the end".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_rfc3339;

    #[test]
    fn rfc3339_accepts_valid_and_names_the_fault() {
        for ok in [
            "2026-05-01T12:00:00Z",
            "2024-02-29T23:59:60.123+05:30",
            "1999-12-31t00:00:00-00:00",
            "2026-05-01 12:00:00z",
        ] {
            assert_eq!(check_rfc3339(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("2026-05-01", "offset 10"),
            ("2026-13-01T00:00:00Z", "month 13"),
            ("2025-02-29T00:00:00Z", "day 29 of month 2"),
            ("2026-05-01T24:00:00Z", "time 24:00:00"),
            ("2026-05-01T12:00:00", "time zone"),
            ("2026-05-01T12:00:00.Z", "fraction"),
            ("2026/05/01T12:00:00Z", "offset 4"),
        ] {
            let e = check_rfc3339(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
