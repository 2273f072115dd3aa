//! Channel-aware choice of the verification rule, round by round (design.md §4).
//!
//! At temperature > 0 two exact rules are available. `match` sends token ids only (2–3 bytes
//! per drafted token) but accepts a drafted token only when the target's own sample equals it,
//! so its acceptance is `Σ_x p(x)·q(x)`. `rejection` accepts with probability `min(1, p/q)`,
//! acceptance `Σ_x min(p(x), q(x)) ≥ Σ_x p(x)·q(x)`, but each drafted token carries its compact
//! distribution (k ids and k b-bit levels, ≈ 30–40 bytes at k = 8, b = 8). On a fast uplink
//! rejection wins; on a slow one its bytes cost more time than its extra acceptance saves.
//!
//! [`VerifySelector`] keeps one acceptance estimate per rule and, each round, picks the rule
//! whose best draft length promises the higher score `max_K G(K) − λ·e(K)` (design.md §2–§3)
//! under that rule's α and uplink bytes per token. A rule unused for `explore_every` rounds is
//! tried once so its estimate does not go stale. Mixing rules round by round stays exact: each
//! round, whichever rule verifies it, commits tokens distributed as the target's own.

use serde::Serialize;

use crate::acceptance::AcceptanceEstimator;
use crate::policies::Ecspec;
use crate::policy::RoundState;

/// The rule a round is verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoundRule {
    /// Token ids only; accepted while equal to the target's samples.
    Match,
    /// Ids plus compact draft distributions; accept with probability min(1, p/q).
    Rejection,
}

/// Per-round choice between [`RoundRule::Match`] and [`RoundRule::Rejection`].
#[derive(Debug, Clone)]
pub struct VerifySelector {
    matching: AcceptanceEstimator,
    rejection: AcceptanceEstimator,
    /// Rounds since each rule was last used (match, rejection).
    since: [u32; 2],
    explore_every: u32,
    k_max: usize,
}

impl Default for VerifySelector {
    /// Draft lengths up to 16 compared; an unused rule is retried after 16 rounds.
    fn default() -> Self {
        Self::new(16, 16)
    }
}

impl VerifySelector {
    /// A selector comparing draft lengths 1..=`k_max` and retrying a rule left unused for
    /// `explore_every` rounds (0 = never retry). Both rules start from the default
    /// [`AcceptanceEstimator`] prior (α₀ = 0.5); with `explore_every` > 0, the first round
    /// uses rejection and the second match.
    pub fn new(k_max: usize, explore_every: u32) -> Self {
        Self {
            matching: AcceptanceEstimator::default(),
            rejection: AcceptanceEstimator::default(),
            // Both start stale: rejection is tried first, then match, so each rule has data
            // and the round sizes spread enough to tell the uplink rate from the RTT.
            since: [u32::MAX, u32::MAX],
            explore_every,
            k_max: k_max.max(1),
        }
    }

    /// The current α estimate of `rule`.
    pub fn alpha(&self, rule: RoundRule) -> f64 {
        match rule {
            RoundRule::Match => self.matching.alpha(),
            RoundRule::Rejection => self.rejection.alpha(),
        }
    }

    /// Best score `max_{K ∈ 1..=k_max} G(K) − λ·e(K)` of a round state (tokens/s).
    pub fn best_score(&self, state: &RoundState) -> f64 {
        let k = Ecspec::best_scored_k(state, self.k_max);
        Ecspec::score(state, k)
    }

    /// Chooses the next round's rule. `matching` and `rejection` are the round states under
    /// each rule: their `alpha` should be [`Self::alpha`] of that rule and their
    /// `uplink_bytes_per_token` that rule's bytes (ids only vs ids plus a distribution).
    /// Ties go to match (fewer bytes).
    pub fn choose(&mut self, matching: &RoundState, rejection: &RoundState) -> RoundRule {
        let stale = |n: u32| self.explore_every > 0 && n >= self.explore_every;
        let pick = if stale(self.since[1]) {
            RoundRule::Rejection
        } else if stale(self.since[0]) {
            RoundRule::Match
        } else if self.best_score(rejection) > self.best_score(matching) {
            RoundRule::Rejection
        } else {
            RoundRule::Match
        };
        let (used, other) = match pick {
            RoundRule::Match => (0, 1),
            RoundRule::Rejection => (1, 0),
        };
        self.since[used] = 0;
        self.since[other] = self.since[other].saturating_add(1);
        pick
    }

    /// Records a round verified by `rule` that drafted `drafted` tokens and had `accepted`
    /// accepted.
    ///
    /// # Errors
    /// `accepted > drafted` ([`crate::acceptance::AcceptanceError`]); nothing is recorded.
    pub fn record(
        &mut self,
        rule: RoundRule,
        drafted: usize,
        accepted: usize,
    ) -> Result<(), crate::acceptance::AcceptanceError> {
        match rule {
            RoundRule::Match => self.matching.record(drafted, accepted).map(|_| ()),
            RoundRule::Rejection => self.rejection.record(drafted, accepted).map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(alpha: f64, uplink_bps: f64, bytes_per_token: f64) -> RoundState {
        RoundState {
            alpha,
            t_draft_s: 0.005,
            t_verify_base_s: 0.03,
            t_verify_per_token_s: 0.003,
            uplink_bps,
            downlink_bps: 1e9,
            rtt_s: 0.05,
            uplink_base_bytes: 14.0,
            uplink_bytes_per_token: bytes_per_token,
            downlink_bytes: 19.0,
            draft_power_w: 0.0,
            radio_power_w: 0.0,
            energy_price: 0.0,
            row_price_s: 0.0,
        }
    }

    /// Drives a selector with fixed per-rule acceptance and returns how many of `rounds`
    /// rounds used rejection.
    fn rejection_rounds(uplink_bps: f64, rounds: u32) -> u32 {
        let mut s = VerifySelector::new(16, 0);
        // What each rule accepts: rejection 0.7, match 0.5 (Σ min(p, q) ≥ Σ p·q).
        for _ in 0..200 {
            s.record(RoundRule::Rejection, 10, 7).unwrap();
            s.record(RoundRule::Match, 10, 5).unwrap();
        }
        let mut n = 0;
        for _ in 0..rounds {
            let m = state(s.alpha(RoundRule::Match), uplink_bps, 2.0);
            let r = state(s.alpha(RoundRule::Rejection), uplink_bps, 36.0);
            if s.choose(&m, &r) == RoundRule::Rejection {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn fast_uplink_picks_rejection_slow_uplink_picks_match() {
        // 100 Mbit/s: 34 extra bytes per token cost 2.7 µs — rejection's higher α wins.
        assert_eq!(rejection_rounds(100e6, 20), 20);
        // 64 kbit/s: the same bytes cost 4.25 ms per token, more than the extra α gains.
        assert_eq!(rejection_rounds(64e3, 20), 0);
    }

    #[test]
    fn equal_acceptance_picks_match() {
        let mut s = VerifySelector::new(8, 0);
        let m = state(0.6, 10e6, 2.0);
        let r = state(0.6, 10e6, 36.0);
        assert_eq!(s.choose(&m, &r), RoundRule::Match);
    }

    #[test]
    fn an_unused_rule_is_retried() {
        let mut s = VerifySelector::new(8, 4);
        let m = state(0.6, 10e3, 2.0);
        let r = state(0.6, 10e3, 36.0);
        // Rejection once, match once, then match (fewer bytes) until rejection is stale.
        let picks: Vec<_> = (0..10).map(|_| s.choose(&m, &r)).collect();
        use RoundRule::{Match as M, Rejection as R};
        assert_eq!(picks, vec![R, M, M, M, M, R, M, M, M, M]);
    }

    #[test]
    fn records_go_to_their_rule() {
        let mut s = VerifySelector::default();
        for _ in 0..50 {
            s.record(RoundRule::Rejection, 4, 4).unwrap();
            s.record(RoundRule::Match, 4, 0).unwrap();
        }
        assert!(s.alpha(RoundRule::Rejection) > 0.9);
        assert!(s.alpha(RoundRule::Match) < 0.1);
        assert!(s.record(RoundRule::Match, 2, 3).is_err());
    }
}
