//! **Where protocol messages become domain values, and domain values messages.** The one
//! boundary between this crate's wire types and the speculative-decoding types of
//! `ecspec-spec`; the edge and the cloud convert only through it and otherwise speak domain
//! types.
//!
//! - [`VerifyMode`] ↔ [`VerifyRule`]: `From<VerifyRule>`, `TryFrom<VerifyMode>`,
//!   [`Hello::verify_rule`].
//! - [`Hello`]'s temperature, top-p, top-k and seed ↔ [`SamplingParams`]:
//!   [`Hello::for_session`] (with the rule, budget and prompt), [`Hello::sampling_params`].
//! - [`CompactDist`] (ids, packed levels) ↔ [`Dist`] (the checked draft distribution):
//!   `From<&Dist>`, [`CompactDist::to_domain`], [`DraftBlock::domain_dists`].
//! - `fixed32` microsecond fields ← [`Duration`]: [`wire_micros`].
//!
//! Going onto the wire cannot fail except for a budget wider than 32 bits; coming off it, every
//! value is checked and a bad one is a typed [`ConversionError`] naming what was wrong (the
//! cloud's error reply carries its text). The messages the cloud builds from its own types
//! (a `Verdict` from a round's outcome, the `HelloAck`) live in the cloud's `wire` module:
//! this crate cannot name cloud types without a dependency cycle.
//!
//! ```
//! use ecspec_proto::{Hello, VerifyMode};
//! use ecspec_spec::{SamplingParams, VerifyRule};
//!
//! let params = SamplingParams { temperature: 0.7, top_p: 0.9, top_k: 40, seed: 3 };
//! let hello = Hello::for_session(VerifyRule::Rejection, &params, 128, vec![1, 2, 3])?;
//! assert_eq!(hello.verify_mode(), VerifyMode::Rejection);
//! assert_eq!(hello.verify_rule()?, VerifyRule::Rejection);
//! assert_eq!(hello.sampling_params()?, params);
//! # Ok::<(), ecspec_proto::ConversionError>(())
//! ```

use std::time::Duration;

use ecspec_spec::compact::{CompactDist as Dist, CompactError};
use ecspec_spec::sampling::{SamplingError, SamplingParams};
use ecspec_spec::verify::VerifyRule;

use crate::{CompactDist, DraftBlock, Hello, VerifyMode, PROTOCOL_VERSION};

/// Why a wire value has no domain value (or a domain value no wire value).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversionError {
    /// A [`VerifyMode`] that names no verification rule: unset, or a number this build does
    /// not know.
    #[error("unknown verification mode {mode}")]
    UnknownVerifyMode {
        /// The mode as sent (`i32` on the wire).
        mode: i32,
    },
    /// The sampling settings are invalid (a negative temperature, top-p outside (0, 1], …).
    #[error("sampling settings: {0}")]
    Sampling(SamplingError),
    /// A draft distribution's level width does not fit the domain type's `u8`.
    #[error("{bits} bits per probability")]
    DistBits {
        /// The width as sent.
        bits: u32,
    },
    /// A draft distribution breaks an invariant of [`Dist`]: an id outside the vocabulary,
    /// wrong packed length, levels that do not sum to `2^bits − 1`, …
    #[error(transparent)]
    Dist(#[from] CompactError),
    /// A token budget that does not fit the protocol's 32 bits.
    #[error("max_new_tokens {n} does not fit the protocol's 32 bits")]
    TokenBudget {
        /// The budget asked for.
        n: usize,
    },
}

impl From<VerifyRule> for VerifyMode {
    fn from(rule: VerifyRule) -> Self {
        match rule {
            VerifyRule::Greedy => VerifyMode::Greedy,
            VerifyRule::Match => VerifyMode::Match,
            VerifyRule::Rejection => VerifyMode::Rejection,
        }
    }
}

impl TryFrom<VerifyMode> for VerifyRule {
    type Error = ConversionError;

    /// # Errors
    /// [`ConversionError::UnknownVerifyMode`] for [`VerifyMode::Unspecified`].
    fn try_from(mode: VerifyMode) -> Result<Self, ConversionError> {
        match mode {
            VerifyMode::Greedy => Ok(VerifyRule::Greedy),
            VerifyMode::Match => Ok(VerifyRule::Match),
            VerifyMode::Rejection => Ok(VerifyRule::Rejection),
            VerifyMode::Unspecified => {
                Err(ConversionError::UnknownVerifyMode { mode: mode as i32 })
            }
        }
    }
}

impl From<&Dist> for CompactDist {
    /// The wire form of a draft distribution: its ids, its levels packed as
    /// [`Dist::packed_levels`] packs them (the layout of [`CompactDist::probs`]), its width.
    fn from(d: &Dist) -> Self {
        CompactDist {
            ids: d.ids().to_vec(),
            probs: d.packed_levels(),
            bits: u32::from(d.bits()),
        }
    }
}

impl CompactDist {
    /// The draft distribution this wire form carries, checked against a vocabulary of `vocab`
    /// tokens (everything [`Dist::from_packed`] checks).
    ///
    /// # Errors
    /// [`ConversionError::DistBits`] for a width beyond `u8`; [`ConversionError::Dist`] for an
    /// id outside the vocabulary, a packed length that does not match, a zero level, levels
    /// that do not sum to `2^bits − 1`, a repeated id, an unsupported width.
    pub fn to_domain(&self, vocab: usize) -> Result<Dist, ConversionError> {
        let bits =
            u8::try_from(self.bits).map_err(|_| ConversionError::DistBits { bits: self.bits })?;
        Ok(Dist::from_packed(
            self.ids.clone(),
            &self.probs,
            bits,
            vocab,
        )?)
    }
}

impl DraftBlock {
    /// The block's draft distributions ([`CompactDist::to_domain`] each, in order).
    ///
    /// # Errors
    /// The first distribution's [`ConversionError`].
    pub fn domain_dists(&self, vocab: usize) -> Result<Vec<Dist>, ConversionError> {
        self.dists.iter().map(|d| d.to_domain(vocab)).collect()
    }
}

impl Hello {
    /// A Hello of this protocol version for a session verified by `rule`, sampling with
    /// `params`, generating at most `max_new_tokens` after `prompt`. The draft's identity
    /// (`model_family`, `base_hash`, `draft_kind`) and the cloud-only / opening-stream fields
    /// are left at their defaults for the caller to fill in (`Hello { .., ..Hello::for_session(…)? }`).
    /// A top-k beyond `u32` is sent as `u32::MAX` (off either way).
    ///
    /// # Errors
    /// [`ConversionError::TokenBudget`] when `max_new_tokens` does not fit in 32 bits.
    pub fn for_session(
        rule: VerifyRule,
        params: &SamplingParams,
        max_new_tokens: usize,
        prompt: Vec<u32>,
    ) -> Result<Self, ConversionError> {
        let max_new_tokens = u32::try_from(max_new_tokens)
            .map_err(|_| ConversionError::TokenBudget { n: max_new_tokens })?;
        Ok(Hello {
            protocol_version: u32::from(PROTOCOL_VERSION),
            temperature: params.temperature,
            top_p: params.top_p,
            top_k: u32::try_from(params.top_k).unwrap_or(u32::MAX),
            seed: params.seed,
            verify_mode: VerifyMode::from(rule) as i32,
            max_new_tokens,
            prompt,
            ..Hello::default()
        })
    }

    /// The verification rule the Hello asks for.
    ///
    /// # Errors
    /// [`ConversionError::UnknownVerifyMode`] for an unset mode or a number this build does not
    /// know.
    pub fn verify_rule(&self) -> Result<VerifyRule, ConversionError> {
        let mode = VerifyMode::try_from(self.verify_mode).map_err(|_| {
            ConversionError::UnknownVerifyMode {
                mode: self.verify_mode,
            }
        })?;
        VerifyRule::try_from(mode).map_err(|_| ConversionError::UnknownVerifyMode {
            mode: self.verify_mode,
        })
    }

    /// The session's sampling settings, validated. An unset top-p (proto3 leaves it at 0)
    /// means off, i.e. 1.
    ///
    /// # Errors
    /// [`ConversionError::Sampling`] naming the bad setting.
    pub fn sampling_params(&self) -> Result<SamplingParams, ConversionError> {
        let top_p = if self.top_p == 0.0 { 1.0 } else { self.top_p };
        let params = SamplingParams {
            temperature: self.temperature,
            top_p,
            top_k: self.top_k as usize,
            seed: self.seed,
        };
        params.validate().map_err(ConversionError::Sampling)?;
        Ok(params)
    }
}

/// A duration as a `fixed32` microsecond field (saturating at `u32::MAX`, about 71 minutes).
pub fn wire_micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist() -> Dist {
        Dist::quantize(&[0.5, 0.1, 0.3, 0.1], 2, 8).unwrap()
    }

    #[test]
    fn verify_rules_round_trip_through_the_wire() {
        for rule in [VerifyRule::Greedy, VerifyRule::Match, VerifyRule::Rejection] {
            let mode = VerifyMode::from(rule);
            assert_eq!(VerifyRule::try_from(mode), Ok(rule));
            let hello = Hello {
                verify_mode: mode as i32,
                ..Hello::default()
            };
            assert_eq!(hello.verify_rule(), Ok(rule));
        }
    }

    #[test]
    fn an_unset_or_unknown_verify_mode_is_named() {
        assert_eq!(
            VerifyRule::try_from(VerifyMode::Unspecified),
            Err(ConversionError::UnknownVerifyMode { mode: 0 })
        );
        let hello = Hello {
            verify_mode: 17,
            ..Hello::default()
        };
        let e = hello.verify_rule().unwrap_err();
        assert_eq!(e, ConversionError::UnknownVerifyMode { mode: 17 });
        assert_eq!(e.to_string(), "unknown verification mode 17");
    }

    #[test]
    fn sampling_params_round_trip_through_a_hello() {
        let params = SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            seed: u64::MAX,
        };
        let hello = Hello::for_session(VerifyRule::Match, &params, 30, vec![4, 5]).unwrap();
        assert_eq!(hello.protocol_version, u32::from(PROTOCOL_VERSION));
        assert_eq!(
            (hello.max_new_tokens, hello.prompt.clone()),
            (30, vec![4, 5])
        );
        assert_eq!(hello.verify_mode(), VerifyMode::Match);
        assert_eq!(hello.sampling_params(), Ok(params));
    }

    #[test]
    fn an_unset_top_p_means_off() {
        let hello = Hello {
            temperature: 1.0,
            ..Hello::default()
        };
        assert_eq!(hello.sampling_params().unwrap().top_p, 1.0);
    }

    #[test]
    fn bad_sampling_settings_are_named() {
        let hello = Hello {
            temperature: -1.0,
            ..Hello::default()
        };
        let e = hello.sampling_params().unwrap_err();
        assert_eq!(
            e,
            ConversionError::Sampling(SamplingError::InvalidTemperature { value: -1.0 })
        );
        assert!(e
            .to_string()
            .starts_with("sampling settings: invalid temperature"));
    }

    #[test]
    fn a_budget_beyond_32_bits_is_refused() {
        let n = u32::MAX as usize + 1;
        assert_eq!(
            Hello::for_session(VerifyRule::Greedy, &SamplingParams::default(), n, vec![1]),
            Err(ConversionError::TokenBudget { n })
        );
    }

    #[test]
    fn draft_distributions_round_trip_through_the_wire() {
        let d = dist();
        let wire = CompactDist::from(&d);
        assert_eq!(wire.bits, 8);
        assert_eq!(wire.ids, d.ids());
        // The proto crate's own unpacking reads the same levels back.
        let levels: Vec<u32> = d.levels().iter().map(|&l| u32::from(l)).collect();
        assert_eq!(wire.levels(), Ok(levels));
        assert_eq!(wire.to_domain(4), Ok(d.clone()));
        let block = DraftBlock {
            round: 1,
            tokens: vec![0, 2],
            dists: vec![wire.clone(), wire],
            stream: 0,
        };
        assert_eq!(block.domain_dists(4), Ok(vec![d.clone(), d]));
    }

    #[test]
    fn an_id_outside_the_vocabulary_is_named() {
        let wire = CompactDist::from(&dist());
        // Ids 0 and 2 are kept; a vocabulary of 2 tokens has no id 2.
        let e = wire.to_domain(2).unwrap_err();
        assert_eq!(
            e,
            ConversionError::Dist(CompactError::IdOutOfRange { id: 2, vocab: 2 })
        );
        assert!(e.to_string().contains("token id 2"), "{e}");
    }

    #[test]
    fn a_wrong_packed_length_or_width_is_named() {
        let mut wire = CompactDist::from(&dist());
        wire.probs.push(0);
        assert!(matches!(
            wire.to_domain(4),
            Err(ConversionError::Dist(CompactError::Truncated { .. }))
        ));
        let wide = CompactDist {
            bits: 300,
            ..CompactDist::from(&dist())
        };
        let e = wide.to_domain(4).unwrap_err();
        assert_eq!(e, ConversionError::DistBits { bits: 300 });
        assert_eq!(e.to_string(), "300 bits per probability");
        let zero = CompactDist {
            bits: 0,
            ..CompactDist::from(&dist())
        };
        assert!(matches!(
            zero.to_domain(4),
            Err(ConversionError::Dist(CompactError::UnsupportedBits {
                bits: 0
            }))
        ));
        let block = DraftBlock {
            dists: vec![CompactDist::from(&dist()), wide],
            ..DraftBlock::default()
        };
        assert_eq!(
            block.domain_dists(4),
            Err(ConversionError::DistBits { bits: 300 })
        );
    }

    #[test]
    fn durations_saturate_at_the_fixed32_field() {
        assert_eq!(wire_micros(Duration::from_micros(1234)), 1234);
        assert_eq!(wire_micros(Duration::from_nanos(999)), 0);
        assert_eq!(wire_micros(Duration::from_secs(1 << 40)), u32::MAX);
    }
}
