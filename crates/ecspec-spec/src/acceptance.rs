//! Online estimate of the per-token acceptance rate α (design.md §1) and running totals.
//!
//! Model (the i.i.d. approximation of Leviathan et al. 2023, arXiv 2211.17192, §3.1): each
//! drafted token is accepted with probability α given that all before it were, so a round that
//! drafts K tokens accepts A = min(G, K) with G geometric — a truncated geometric. A round with
//! a accepted contributes likelihood `α^a · (1 − α)^[a < K]`: a successes, plus one failure if
//! the round stopped early. Over rounds the MLE is therefore
//! `α̂ = Σ a / (Σ a + Σ [a < K])` — accepted tokens over (accepted tokens + rejections).
//!
//! [`AcceptanceEstimator`] applies exponential forgetting to those two sums (factor `decay` per
//! round with drafting) and adds a fixed Beta-style prior of `prior_weight` pseudo-tokens of
//! which a share `prior_alpha` were accepted:
//!
//! `α̂ = (S + w₀·α₀) / (S + F + w₀)`, `S ← λ·S + a`, `F ← λ·F + [a < K]`.
//!
//! The prior never decays, so α̂ stays strictly inside (0, 1) when 0 < α₀ < 1 and w₀ > 0
//! (an estimate of exactly 1 would make every policy draft its maximum forever).

use serde::{Deserialize, Serialize};

/// Errors of [`AcceptanceEstimator::new`] and [`AcceptanceEstimator::record`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AcceptanceError {
    /// `prior_alpha` was NaN or outside [0, 1].
    #[error("prior_alpha {value} must be in [0, 1]")]
    PriorAlpha {
        /// The rejected value.
        value: f64,
    },
    /// `prior_weight` was NaN, infinite or negative.
    #[error("prior_weight {value} must be finite and >= 0")]
    PriorWeight {
        /// The rejected value.
        value: f64,
    },
    /// `decay` was NaN or outside (0, 1].
    #[error("decay {value} must be in (0, 1]")]
    Decay {
        /// The rejected value.
        value: f64,
    },
    /// Carried-over evidence was NaN, infinite or negative.
    #[error("acceptance evidence ({successes}, {failures}) must be finite and >= 0")]
    Evidence {
        /// Decayed accepted tokens S.
        successes: f64,
        /// Decayed rejections F.
        failures: f64,
    },
    /// A round reported more accepted than drafted tokens.
    #[error("round accepted {accepted} of only {drafted} drafted tokens")]
    AcceptedExceedsDrafted {
        /// Drafted tokens (K).
        drafted: usize,
        /// Accepted tokens.
        accepted: usize,
    },
}

/// Exponentially weighted estimate of α plus running totals of a session. See the module docs
/// for the estimator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptanceEstimator {
    prior_alpha: f64,
    prior_weight: f64,
    decay: f64,
    /// Decayed accepted tokens S.
    successes: f64,
    /// Decayed rejections F.
    failures: f64,
    rounds: u64,
    drafted: u64,
    accepted: u64,
}

/// The estimator's default decay λ per drafting round: past rounds keep 95% of their weight
/// each round, a memory of about 1/(1 − λ) = 20 rounds (used by
/// [`AcceptanceEstimator::default`] and [`AcceptanceEstimator::from_known`]).
pub const DEFAULT_DECAY: f64 = 0.95;

/// The default prior's strength w₀ in pseudo-tokens (used by [`AcceptanceEstimator::default`]
/// and [`AcceptanceEstimator::from_known`]).
pub const DEFAULT_PRIOR_WEIGHT: f64 = 4.0;

/// Tokens of evidence a known α counts for in [`AcceptanceEstimator::from_known`]: twice the
/// `ecspec` policy's warm-up, so a known α is acted on at once.
pub const KNOWN_ALPHA_TOKENS: f64 = 16.0;

impl Default for AcceptanceEstimator {
    /// Prior α₀ = 0.5 worth w₀ = [`DEFAULT_PRIOR_WEIGHT`] tokens, decay λ = [`DEFAULT_DECAY`]
    /// per round (memory ≈ 20 rounds).
    fn default() -> Self {
        Self::unchecked(0.5, DEFAULT_PRIOR_WEIGHT, DEFAULT_DECAY)
    }
}

impl AcceptanceEstimator {
    /// A fresh estimator.
    ///
    /// - `prior_alpha` α₀ ∈ [0, 1]: the estimate before any data;
    /// - `prior_weight` w₀ ≥ 0: the prior's strength in tokens (0 = plain decayed MLE, which is
    ///   undefined before the first drafted round and then reports α₀);
    /// - `decay` λ ∈ (0, 1]: weight kept by past rounds per new drafting round (1 = no
    ///   forgetting; the memory is about 1/(1 − λ) rounds).
    ///
    /// # Errors
    /// [`AcceptanceError::PriorAlpha`], [`AcceptanceError::PriorWeight`],
    /// [`AcceptanceError::Decay`].
    pub fn new(prior_alpha: f64, prior_weight: f64, decay: f64) -> Result<Self, AcceptanceError> {
        if !(0.0..=1.0).contains(&prior_alpha) {
            return Err(AcceptanceError::PriorAlpha { value: prior_alpha });
        }
        if !(prior_weight.is_finite() && prior_weight >= 0.0) {
            return Err(AcceptanceError::PriorWeight {
                value: prior_weight,
            });
        }
        if !(decay > 0.0 && decay <= 1.0) {
            return Err(AcceptanceError::Decay { value: decay });
        }
        Ok(Self::unchecked(prior_alpha, prior_weight, decay))
    }

    /// An estimator that starts from a known α (a draft's measured acceptance, such as a
    /// family manifest's `draft.acceptance`): the default prior weight and decay, the prior
    /// centred on `alpha`, plus [`KNOWN_ALPHA_TOKENS`] tokens of decaying evidence at that rate
    /// (S = α·n, F = (1 − α)·n), so that live rounds overrule it as fast as they overrule a
    /// remembered estimate.
    ///
    /// # Errors
    /// [`AcceptanceError::PriorAlpha`] if `alpha` is not in [0, 1].
    pub fn from_known(alpha: f64) -> Result<Self, AcceptanceError> {
        let n = KNOWN_ALPHA_TOKENS;
        Self::new(alpha, DEFAULT_PRIOR_WEIGHT, DEFAULT_DECAY)?
            .with_evidence(alpha * n, (1.0 - alpha) * n)
    }

    fn unchecked(prior_alpha: f64, prior_weight: f64, decay: f64) -> Self {
        Self {
            prior_alpha,
            prior_weight,
            decay,
            successes: 0.0,
            failures: 0.0,
            rounds: 0,
            drafted: 0,
            accepted: 0,
        }
    }

    /// Records one verification round that drafted `drafted` = K tokens and accepted `accepted`
    /// of them (a [`crate::verify::Verdict`]'s `accepted`).
    ///
    /// A K = 0 round (cloud-only step) counts in the totals (1 committed token) but carries no
    /// information on α: the estimate and its decay are untouched.
    ///
    /// # Errors
    /// [`AcceptanceError::AcceptedExceedsDrafted`]; the estimator is unchanged.
    pub fn record(&mut self, drafted: usize, accepted: usize) -> Result<(), AcceptanceError> {
        if accepted > drafted {
            return Err(AcceptanceError::AcceptedExceedsDrafted { drafted, accepted });
        }
        self.rounds += 1;
        self.drafted += drafted as u64;
        self.accepted += accepted as u64;
        if drafted > 0 {
            self.successes = self.decay * self.successes + accepted as f64;
            self.failures = self.decay * self.failures + if accepted < drafted { 1.0 } else { 0.0 };
        }
        Ok(())
    }

    /// Current estimate α̂ ∈ [0, 1] (see the module docs). Equals α₀ before any drafted round.
    pub fn alpha(&self) -> f64 {
        let den = self.successes + self.failures + self.prior_weight;
        if den > 0.0 {
            (self.successes + self.prior_weight * self.prior_alpha) / den
        } else {
            self.prior_alpha
        }
    }

    /// The decayed evidence (S accepted tokens, F rejections) behind [`Self::alpha`].
    pub fn evidence(&self) -> (f64, f64) {
        (self.successes, self.failures)
    }

    /// This estimator with the decayed evidence (S, F) of an earlier session (see
    /// [`Self::evidence`]) in place of its own; the session totals are unchanged. Lets the
    /// edge start a request from what it learnt on the previous ones.
    ///
    /// # Errors
    /// [`AcceptanceError::Evidence`] if S or F is NaN, infinite or negative.
    pub fn with_evidence(mut self, successes: f64, failures: f64) -> Result<Self, AcceptanceError> {
        if !(successes.is_finite() && successes >= 0.0 && failures.is_finite() && failures >= 0.0) {
            return Err(AcceptanceError::Evidence {
                successes,
                failures,
            });
        }
        self.successes = successes;
        self.failures = failures;
        Ok(self)
    }

    /// Verification rounds recorded (K = 0 rounds included).
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Drafted tokens over all rounds.
    pub fn drafted(&self) -> u64 {
        self.drafted
    }

    /// Accepted drafted tokens over all rounds.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Committed tokens over all rounds: accepted + one target token per round.
    pub fn committed(&self) -> u64 {
        self.accepted + self.rounds
    }

    /// Mean accepted tokens in the sense of design.md §1 (vLLM, Spec-Bench): committed tokens
    /// per verification round, `(accepted + rounds) / rounds`, 1.0 for autoregressive decoding.
    /// 0.0 before the first round.
    pub fn mean_accepted_tokens(&self) -> f64 {
        if self.rounds == 0 {
            0.0
        } else {
            self.committed() as f64 / self.rounds as f64
        }
    }

    /// Accepted drafted tokens per round, `accepted / rounds` (mean accepted tokens minus the
    /// target's own token). 0.0 before the first round.
    pub fn mean_accepted_drafts(&self) -> f64 {
        if self.rounds == 0 {
            0.0
        } else {
            self.accepted as f64 / self.rounds as f64
        }
    }

    /// Share of drafted tokens accepted, `accepted / drafted` (not α: it is biased low by the
    /// truncation, since tokens after a rejection are never examined). 0.0 with nothing drafted.
    pub fn acceptance_ratio(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{rng_for, EDGE_STREAM};
    use rand::Rng;

    #[test]
    fn known_alpha_starts_there_and_moves_with_evidence() {
        let mut e = AcceptanceEstimator::from_known(0.06).unwrap();
        // (S + w0·α0)/(S + F + w0) with S = 0.96, F = 15.04, w0 = 4, α0 = 0.06.
        assert!((e.alpha() - 0.06).abs() < 1e-12);
        let (s0, f0) = e.evidence();
        assert!(
            (s0 - 0.96).abs() < 1e-12 && (f0 - 15.04).abs() < 1e-12,
            "{s0} {f0}"
        );
        // Four fully accepted K = 4 rounds: S = 0.95⁴·0.96 + Σ 0.95^i·4 (i = 0..3).
        for _ in 0..4 {
            e.record(4, 4).unwrap();
        }
        let s = 0.95f64.powi(4) * 0.96 + 4.0 * (1.0 + 0.95 + 0.95f64.powi(2) + 0.95f64.powi(3));
        let f = 0.95f64.powi(4) * 0.94 * 16.0;
        let want = (s + 4.0 * 0.06) / (s + f + 4.0);
        assert!((e.alpha() - want).abs() < 1e-12, "{} vs {want}", e.alpha());
        assert!(
            e.alpha() > 0.45,
            "four accepted rounds outweigh the known rate"
        );
        assert_eq!(
            AcceptanceEstimator::from_known(1.2).unwrap_err(),
            AcceptanceError::PriorAlpha { value: 1.2 }
        );
    }

    #[test]
    fn exact_values() {
        let mut e = AcceptanceEstimator::new(0.5, 2.0, 1.0).unwrap();
        assert_eq!(e.alpha(), 0.5);
        e.record(4, 4).unwrap(); // S = 4, F = 0
        e.record(4, 1).unwrap(); // S = 5, F = 1
        e.record(0, 0).unwrap(); // cloud-only: no change
        assert_eq!(e.alpha(), (5.0 + 1.0) / (5.0 + 1.0 + 2.0));
        assert_eq!(
            (e.rounds(), e.drafted(), e.accepted(), e.committed()),
            (3, 8, 5, 8)
        );
        assert_eq!(e.mean_accepted_tokens(), 8.0 / 3.0);
        assert_eq!(e.mean_accepted_drafts(), 5.0 / 3.0);
        assert_eq!(e.acceptance_ratio(), 5.0 / 8.0);
        assert_eq!(
            e.record(2, 3),
            Err(AcceptanceError::AcceptedExceedsDrafted {
                drafted: 2,
                accepted: 3
            })
        );
        assert_eq!(e.rounds(), 3);

        // Decay 0.5: S = 0.5·2 + 0 = 1, F = 0.5·0 + 1 = 1 → (1 + 0)/(2 + 0) with no prior.
        let mut e = AcceptanceEstimator::new(0.3, 0.0, 0.5).unwrap();
        assert_eq!(e.alpha(), 0.3);
        e.record(2, 2).unwrap();
        assert_eq!(e.alpha(), 1.0);
        e.record(3, 0).unwrap();
        assert_eq!(e.alpha(), 0.5);
        let fresh = AcceptanceEstimator::default();
        assert_eq!(
            (
                fresh.alpha(),
                fresh.mean_accepted_tokens(),
                fresh.acceptance_ratio()
            ),
            (0.5, 0.0, 0.0)
        );
    }

    #[test]
    fn parameter_errors() {
        assert!(matches!(
            AcceptanceEstimator::new(1.5, 1.0, 0.9),
            Err(AcceptanceError::PriorAlpha { .. })
        ));
        assert!(matches!(
            AcceptanceEstimator::new(f64::NAN, 1.0, 0.9),
            Err(AcceptanceError::PriorAlpha { .. })
        ));
        assert!(matches!(
            AcceptanceEstimator::new(0.5, -1.0, 0.9),
            Err(AcceptanceError::PriorWeight { .. })
        ));
        assert!(matches!(
            AcceptanceEstimator::new(0.5, 1.0, 0.0),
            Err(AcceptanceError::Decay { .. })
        ));
        assert!(matches!(
            AcceptanceEstimator::new(0.5, 1.0, 1.01),
            Err(AcceptanceError::Decay { .. })
        ));
    }

    #[test]
    fn recovers_alpha_from_truncated_geometric_rounds() {
        // Simulated rounds with true α = 0.7 and K = 4: the plain MLE (λ = 1, w₀ = 0) must be
        // close, while accepted/drafted is biased low.
        let mut rng = rng_for(11, EDGE_STREAM);
        let mut e = AcceptanceEstimator::new(0.5, 0.0, 1.0).unwrap();
        for _ in 0..20_000 {
            let mut a = 0;
            while a < 4 && rng.random::<f64>() < 0.7 {
                a += 1;
            }
            e.record(4, a).unwrap();
        }
        // sd of α̂ ≈ sqrt(α(1−α)/n_tokens) ≈ 0.003 with ~35k Bernoulli trials.
        assert!((e.alpha() - 0.7).abs() < 0.015, "{}", e.alpha());
        // E[A] = α + α² + α³ + α⁴ = 1.7731 at α = 0.7, K = 4; ratio = E[A]/4 = 0.4433.
        assert!(
            (e.acceptance_ratio() - 0.4433).abs() < 0.01,
            "{}",
            e.acceptance_ratio()
        );
        assert!(
            (e.mean_accepted_tokens() - 2.7731).abs() < 0.04,
            "{}",
            e.mean_accepted_tokens()
        );
    }
}
