//! Device profiles: data files (TOML) under `crates/ecspec-energy/profiles/`.
//!
//! ```toml
//! name = "phone-s25ultra"
//! radio = "lte-huang2012"        # a name from radio::BUILTIN_RADIOS
//! compute_power_w = 8.35         # P_c while drafting, W, above idle
//! idle_power_w = 0.4388          # W, charged over every second of a round
//! estimate = false               # true when the numbers are not measured
//! source = "..."                 # where the numbers come from
//!
//! [draft."qwen2-0.5b-q4_k_m"]
//! seconds_per_token = 0.019822   # t_d, s/token
//! compute_power_w = 8.35         # optional per-model override of P_c
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::radio::{RadioProfile, BUILTIN_RADIOS};

/// Why a profile file was rejected. Every variant names the file; value
/// errors also name the key and the bad value.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The profile file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, a missing key or a wrong type; the
    /// message (from `toml`) names the key.
    #[error("{file}: {message}")]
    Parse {
        /// The profile file.
        file: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A key parsed but its value is out of range.
    #[error("{file}: key `{key}` = {value}: {reason}")]
    InvalidValue {
        /// The profile file.
        file: PathBuf,
        /// Dotted key path, e.g. `draft.smollm2-135m.seconds_per_token`.
        key: String,
        /// The offending value as written.
        value: String,
        /// What it must be.
        reason: &'static str,
    },
}

/// Timing (and optionally power) of one draft model on a device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftTiming {
    /// t_d: seconds to draft one token, s/token.
    pub seconds_per_token: f64,
    /// P_c for this model if it differs from the profile's, W above idle.
    #[serde(default)]
    pub compute_power_w: Option<f64>,
    /// Seconds per prompt token of the draft's prefill (virtual clock; default
    /// `seconds_per_token / 8`).
    #[serde(default)]
    pub prefill_seconds_per_token: Option<f64>,
}

/// Timing of one target model on a (cloud) device, for the virtual clock: prefill, and
/// verification of K drafted tokens in one pass, `t_v(K) = a + b·K` (design.md §2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTiming {
    /// Seconds per prompt token of the prefill, s/token.
    pub prefill_seconds_per_token: f64,
    /// a: one pass over the last committed token alone (a decode step), s.
    pub verify_base_s: f64,
    /// b: extra seconds per drafted token verified in the same pass, s/token.
    pub verify_per_token_s: f64,
}

/// An edge device: compute power, idle power, draft speed per model and the
/// radio it uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// Profile name.
    pub name: String,
    /// Radio profile name, one of [`BUILTIN_RADIOS`].
    pub radio: String,
    /// P_c: power while drafting, W, *on top of* `idle_power_w`.
    pub compute_power_w: f64,
    /// Baseline power, W, charged over the whole span of every round.
    pub idle_power_w: f64,
    /// True when the figures are estimates rather than measurements.
    pub estimate: bool,
    /// Where the figures come from (free text, required).
    pub source: String,
    /// Draft models by name.
    #[serde(default)]
    pub draft: BTreeMap<String, DraftTiming>,
    /// Target models by name (a cloud profile).
    #[serde(default)]
    pub target: BTreeMap<String, TargetTiming>,
}

impl DeviceProfile {
    /// Read and validate a profile file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ProfileError> {
        let file = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&file).map_err(|source| ProfileError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parse and validate profile text; `file` is used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ProfileError> {
        let profile: DeviceProfile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        profile.validate(file)?;
        Ok(profile)
    }

    fn validate(&self, file: &Path) -> Result<(), ProfileError> {
        let bad = |key: String, value: String, reason| ProfileError::InvalidValue {
            file: file.to_path_buf(),
            key,
            value,
            reason,
        };
        let non_neg = |key: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(bad(
                    key.to_string(),
                    v.to_string(),
                    "must be a finite number ≥ 0",
                ))
            }
        };
        non_neg("compute_power_w", self.compute_power_w)?;
        non_neg("idle_power_w", self.idle_power_w)?;
        if RadioProfile::builtin(&self.radio).is_none() {
            return Err(bad(
                "radio".into(),
                format!("{:?}", self.radio),
                "unknown radio profile (see radio::BUILTIN_RADIOS)",
            ));
        }
        if self.draft.is_empty() && self.target.is_empty() {
            return Err(bad(
                "draft".into(),
                "{}".into(),
                "at least one draft or target model is required",
            ));
        }
        for (model, t) in &self.target {
            for (name, v) in [
                ("prefill_seconds_per_token", t.prefill_seconds_per_token),
                ("verify_base_s", t.verify_base_s),
                ("verify_per_token_s", t.verify_per_token_s),
            ] {
                non_neg(&format!("target.{model}.{name}"), v)?;
            }
        }
        for (model, t) in &self.draft {
            let key = format!("draft.{model}.seconds_per_token");
            if !(t.seconds_per_token.is_finite() && t.seconds_per_token > 0.0) {
                return Err(bad(
                    key,
                    t.seconds_per_token.to_string(),
                    "must be a finite number > 0",
                ));
            }
            if let Some(p) = t.compute_power_w {
                non_neg(&format!("draft.{model}.compute_power_w"), p)?;
            }
            if let Some(p) = t.prefill_seconds_per_token {
                non_neg(&format!("draft.{model}.prefill_seconds_per_token"), p)?;
            }
        }
        debug_assert!(BUILTIN_RADIOS.contains(&self.radio.as_str()));
        Ok(())
    }

    /// The radio model this profile names.
    pub fn radio_profile(&self) -> RadioProfile {
        // Validated at load; `none` as a fallback keeps this infallible for
        // hand-built profiles.
        RadioProfile::builtin(&self.radio).unwrap_or_else(RadioProfile::none)
    }

    /// P_c for `model`, W (the model's override, else the profile's).
    pub fn compute_power_w(&self, model: &str) -> Option<f64> {
        self.draft
            .get(model)
            .map(|t| t.compute_power_w.unwrap_or(self.compute_power_w))
    }

    /// Directory holding the profiles shipped with this crate.
    pub fn shipped_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
    }
}
