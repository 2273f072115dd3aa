//! Edge energy model for ECSpec (DESIGN.md §3).
//!
//! - [`DeviceProfile`]: a device's draft compute power P_c, idle power, draft
//!   time per token per model and radio, loaded from TOML files in
//!   `profiles/` ([`DeviceProfile::load`]).
//! - [`RadioProfile`]: LTE after Huang et al. (MobiSys 2012) with tail and
//!   promotion, and the whole-phone LTE/5G fits of DESIGN.md §3.
//! - [`EnergyModel`]: joules of one [`Round`], split into compute, radio
//!   active, radio tail and idle ([`RoundEnergy`]); [`Session`] accumulates
//!   rounds and gives J per committed token.
//! - [`EnergyBudget`]: a J/token or J/session budget with a virtual queue
//!   (Neely's drift-plus-penalty) telling a controller what the next round
//!   may spend.
//!
//! **Invariant:** no I/O except reading profile files; no clocks — all times
//! are inputs. Units: W, J, s, bytes, bit/s.
//!
//! ```
//! use ecspec_energy::{DeviceProfile, EnergyModel, Round, Session};
//! let p = DeviceProfile::load(DeviceProfile::shipped_dir().join("phone-s25ultra.toml")).unwrap();
//! let model = EnergyModel::from_profile(&p, "qwen2-0.5b-q4_k_m").unwrap();
//! let mut s = Session::new(model.clone());
//! let r = Round { drafting_s: model.draft_time_s(4), uplink_bytes: 64, uplink_rate_bps: 1e6,
//!     waiting_s: 0.05, downlink_bytes: 32, downlink_rate_bps: 1e7, since_prev_transfer_s: None };
//! s.record(&r, 3).unwrap();
//! assert!(s.joules_per_token().unwrap() > 0.0);
//! ```

mod budget;
mod model;
mod profile;
pub mod radio;

pub use budget::{BudgetKind, EnergyBudget};
pub use model::{EnergyModel, Round, RoundEnergy, Session};
pub use profile::{DeviceProfile, DraftTiming, ProfileError, TargetTiming};
pub use radio::RadioProfile;

/// Invalid inputs to the energy model or budget.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnergyError {
    /// A numeric input is out of range.
    #[error("{field} = {value}: {reason}")]
    InvalidInput {
        /// Input name.
        field: &'static str,
        /// The value given.
        value: f64,
        /// What it must be.
        reason: &'static str,
    },
    /// The profile has no timing for this draft model.
    #[error("profile {profile} has no draft model {model:?}")]
    UnknownDraftModel {
        /// Profile name.
        profile: String,
        /// Requested model.
        model: String,
    },
}

#[cfg(test)]
mod tests;
