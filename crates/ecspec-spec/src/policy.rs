//! Draft-length policies: how many tokens K the edge drafts in the next round.
//!
//! The latency model of design.md §2:
//! - `T_round(K) = K·t_d + S_u(K)·8/R_u + RTT + t_v(K) + S_d·8/R_d` (s), with
//!   `S_u(K) = base + per_token·K` (bytes) and `t_v(K) = a + b·K` (s);
//! - `E[N(K)] = (1 − α^(K+1)) / (1 − α)` (K + 1 when α = 1), Leviathan et al. 2023,
//!   arXiv 2211.17192, eq. 1;
//! - goodput `G(K) = E[N(K)] / T_round(K)` (tokens/s).
//!
//! [`GoodputAdaptive`] maximises G over K ∈ [1, k_max]; [`Fixed`] always drafts the same K;
//! [`crate::policies`] has the reference policies (FlexSpec's linear rule, confidence and
//! entropy stops, a UCB bandit, and a cap combined with a stop rule).

use std::fmt;

use serde::{Deserialize, Serialize};

/// `k_max` of `"adaptive"` without a number.
pub const DEFAULT_K_MAX: usize = 8;
/// Largest K any policy parsed by [`crate::parse_policy`] may draft.
pub const MAX_K: usize = 64;

/// What a policy knows when choosing the next round's K (design.md §1 symbols, SI units).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundState {
    /// Per-token acceptance rate α ∈ [0, 1] (e.g. [`crate::AcceptanceEstimator::alpha`]).
    pub alpha: f64,
    /// Edge time to draft one token t_d (s/token).
    pub t_draft_s: f64,
    /// Fixed part `a` of the verification time t_v(K) = a + b·K (s).
    pub t_verify_base_s: f64,
    /// Per-drafted-token part `b` of t_v(K) (s/token).
    pub t_verify_per_token_s: f64,
    /// Uplink rate R_u (bit/s), > 0.
    pub uplink_bps: f64,
    /// Downlink rate R_d (bit/s), > 0.
    pub downlink_bps: f64,
    /// Round-trip time RTT (s).
    pub rtt_s: f64,
    /// Fixed uplink bytes per round (framing, headers): S_u(K) = base + per_token·K.
    pub uplink_base_bytes: f64,
    /// Uplink bytes per drafted token (an id, or a [`crate::CompactDist`] in rejection mode).
    pub uplink_bytes_per_token: f64,
    /// Downlink bytes per round S_d (the verdict, framing included).
    pub downlink_bytes: f64,
    /// Edge power while drafting, above idle, P_c (W); 0 = energy not modelled.
    #[serde(default)]
    pub draft_power_w: f64,
    /// Mean radio power while a round runs, P_r (W): the radio stays in its high-power states
    /// (transfer, then tail) across back-to-back rounds.
    #[serde(default)]
    pub radio_power_w: f64,
    /// λ ≥ 0: goodput (tokens/s) worth giving up per J/token of edge energy saved; the energy
    /// budget's multiplier Q/V (0 = no budget binding).
    #[serde(default)]
    pub energy_price: f64,
    /// Price of each row a round asks of a shared cloud (s/row): the delay one more row adds
    /// to the other sessions in the cloud's pass, as the cloud reports it
    /// (`Verdict::row_cost_us`); 0 for an idle or unshared cloud. Goodput is weighed over
    /// `T_round(K) + (K + 1)·price` ([`expected_goodput`]): load-aware speculation.
    #[serde(default)]
    pub row_price_s: f64,
}

/// Expected edge energy per committed token of a round that drafts `k` tokens (J/token),
/// design.md §3 simplified for the policy: `(K·t_d·P_c + P_r·T_round(K)) / E[N(K)]`.
pub fn expected_energy_per_token(state: &RoundState, k: usize) -> f64 {
    (k as f64 * state.t_draft_s * state.draft_power_w + state.radio_power_w * round_time(state, k))
        / expected_tokens(state.alpha, k)
}

/// An invalid [`RoundState`] field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid round state: {field} = {value} ({reason})")]
pub struct InvalidRoundState {
    /// The field's name.
    pub field: &'static str,
    /// Its value.
    pub value: f64,
    /// What it must be.
    pub reason: &'static str,
}

impl RoundState {
    /// Checks that α ∈ [0, 1], rates are finite and > 0, and times and byte counts are finite
    /// and ≥ 0. The pure functions below accept any state; this is for callers that build one
    /// from measurements.
    ///
    /// # Errors
    /// [`InvalidRoundState`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidRoundState> {
        let bad = |field, value, reason| {
            Err(InvalidRoundState {
                field,
                value,
                reason,
            })
        };
        if !(0.0..=1.0).contains(&self.alpha) {
            return bad("alpha", self.alpha, "must be in [0, 1]");
        }
        for (field, value) in [
            ("uplink_bps", self.uplink_bps),
            ("downlink_bps", self.downlink_bps),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return bad(field, value, "must be finite and > 0");
            }
        }
        for (field, value) in [
            ("t_draft_s", self.t_draft_s),
            ("t_verify_base_s", self.t_verify_base_s),
            ("t_verify_per_token_s", self.t_verify_per_token_s),
            ("rtt_s", self.rtt_s),
            ("uplink_base_bytes", self.uplink_base_bytes),
            ("uplink_bytes_per_token", self.uplink_bytes_per_token),
            ("downlink_bytes", self.downlink_bytes),
            ("draft_power_w", self.draft_power_w),
            ("radio_power_w", self.radio_power_w),
            ("energy_price", self.energy_price),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return bad(field, value, "must be finite and >= 0");
            }
        }
        Ok(())
    }
}

/// Expected tokens committed by a round that drafts `k` tokens, E[N(K)] (tokens).
///
/// `(1 − α^(K+1)) / (1 − α)` for α < 1, `K + 1` for α = 1 (Leviathan et al. 2023,
/// arXiv 2211.17192, eq. 1; design.md §2), evaluated as the geometric sum `Σ_{i=0..K} α^i`
/// (Horner) for K ≤ 4096, which is stable as α → 1. α is clamped to [0, 1]; NaN counts as 0.
/// E[N(0)] = 1 (a cloud-only step commits one token).
pub fn expected_tokens(alpha: f64, k: usize) -> f64 {
    let a = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0)
    };
    if a == 1.0 {
        return k as f64 + 1.0;
    }
    if k <= 4096 {
        (0..k).fold(1.0, |n, _| 1.0 + a * n)
    } else {
        (1.0 - a.powf(k as f64 + 1.0)) / (1.0 - a)
    }
}

/// Wall-clock time of one round that drafts `k` tokens, T_round(K) (s), design.md §2:
/// `K·t_d + (base + per_token·K)·8/R_u + RTT + (a + b·K) + S_d·8/R_d`.
pub fn round_time(state: &RoundState, k: usize) -> f64 {
    let k = k as f64;
    let s_u = state.uplink_base_bytes + state.uplink_bytes_per_token * k;
    k * state.t_draft_s
        + s_u * 8.0 / state.uplink_bps
        + state.rtt_s
        + state.t_verify_base_s
        + state.t_verify_per_token_s * k
        + state.downlink_bytes * 8.0 / state.downlink_bps
}

/// Expected goodput of drafting `k` tokens per round, `E[N(K)] / T_round(K)` (tokens/s),
/// design.md §2. On a loaded shared cloud each of the round's K + 1 rows is priced at
/// [`RoundState::row_price_s`]: `E[N(K)] / (T_round(K) + (K + 1)·price)`, so the edge drafts
/// shorter, or streams (one row per token), as the cloud fills.
pub fn expected_goodput(state: &RoundState, k: usize) -> f64 {
    expected_tokens(state.alpha, k) / (round_time(state, k) + (k as f64 + 1.0) * row_price(state))
}

/// The row price in force: [`RoundState::row_price_s`], or 0 when it is not a non-negative
/// finite number.
pub fn row_price(state: &RoundState) -> f64 {
    let p = state.row_price_s;
    if p.is_finite() && p > 0.0 {
        p
    } else {
        0.0
    }
}

/// The K ∈ [1, max(k_max, 1)] with the highest [`expected_goodput`]. Ties go to the smaller K
/// (less edge work for the same goodput); a NaN goodput never wins over a number, and if every
/// K gives NaN the result is 1.
pub fn best_k(state: &RoundState, k_max: usize) -> usize {
    let mut best = 1;
    let mut best_g = expected_goodput(state, 1);
    for k in 2..=k_max {
        let g = expected_goodput(state, k);
        if g > best_g || (best_g.is_nan() && !g.is_nan()) {
            best = k;
            best_g = g;
        }
    }
    best
}

/// A per-token stop: the edge keeps drafting while the draft's last token passes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopRule {
    /// Stop after a token whose draft probability is below this (llama.cpp `--draft-p-min`).
    PMin(f32),
    /// Stop after a token drawn from a distribution whose entropy (nats) is above this.
    MaxEntropy(f32),
}

impl StopRule {
    /// Whether to draft another token after one with draft probability `p` drawn from a
    /// distribution of entropy `entropy_nats`.
    pub fn keep_drafting(&self, p: f32, entropy_nats: f32) -> bool {
        match *self {
            StopRule::PMin(t) => p >= t,
            StopRule::MaxEntropy(h) => entropy_nats <= h,
        }
    }
}

impl fmt::Display for StopRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopRule::PMin(t) => write!(f, "p-min:{t}"),
            StopRule::MaxEntropy(h) => write!(f, "entropy:{h}"),
        }
    }
}

/// What the edge learned from a finished round (for policies that learn from outcomes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundOutcome {
    /// Tokens actually drafted (a stop rule may end below the chosen K).
    pub drafted: usize,
    /// Drafted tokens the cloud accepted.
    pub accepted: usize,
    /// Tokens committed by the round (accepted + the target's own token).
    pub committed: usize,
    /// Wall-clock time of the round, drafting to verdict (s).
    pub round_s: f64,
}

/// Chooses the draft length K of each round.
pub trait DraftLengthPolicy: Send {
    /// K for the next round (0 = no drafting, a cloud-only step); with a [`Self::stop_rule`],
    /// the most tokens the round may draft.
    fn choose(&mut self, state: &RoundState) -> usize;
    /// A per-token stop applied while drafting (default: none, draft all K).
    fn stop_rule(&self) -> Option<StopRule> {
        None
    }
    /// Learns from a finished round (default: nothing).
    fn observe(&mut self, _outcome: &RoundOutcome) {}
    /// When [`Self::choose`] returned 0: how many tokens the cloud should generate on its own
    /// before the edge decides again (streaming cloud-only decoding; default 1, one step).
    fn stream_len(&self) -> u32 {
        1
    }
    /// The policy's name in the form [`crate::parse_policy`] accepts, e.g. `fixed:4`, `adaptive:8`.
    fn name(&self) -> String;
    /// What to carry to the next request on the same draft and target (default: nothing).
    fn remember(&self) -> Option<PolicyMemory> {
        None
    }
    /// Starts from what an earlier request left ([`Self::remember`]; default: ignored).
    fn recall(&mut self, _memory: &PolicyMemory) {}
    /// Tokens the cloud should stream right after the handshake, before any round (0: none,
    /// the default). Only a policy that already knows streaming pays asks for this.
    fn opening_stream(&self) -> u32 {
        0
    }
}

/// What a draft-length policy carries from one request to the next on the same draft and
/// target version: the edge's memory across requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyMemory {
    /// Tokens drafted over all requests so far.
    pub drafted_tokens: u64,
    /// Whether the policy's last decision was to stream (drafting did not pay).
    pub streaming: bool,
    /// The stream length (tokens) the policy had reached.
    pub stream_len: u32,
}

/// Always drafts the same K (`Fixed(0)`: cloud-only decoding, the autoregressive baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fixed(pub usize);

impl DraftLengthPolicy for Fixed {
    fn choose(&mut self, _state: &RoundState) -> usize {
        self.0
    }

    fn name(&self) -> String {
        format!("fixed:{}", self.0)
    }
}

/// Drafts the K ∈ [1, k_max] that maximises expected goodput under the current state
/// ([`best_k`], design.md §2). A `k_max` of 0 behaves as 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodputAdaptive {
    /// Largest K considered.
    pub k_max: usize,
}

impl DraftLengthPolicy for GoodputAdaptive {
    fn choose(&mut self, state: &RoundState) -> usize {
        best_k(state, self.k_max)
    }

    fn name(&self) -> String {
        format!("adaptive:{}", self.k_max)
    }
}

impl fmt::Debug for dyn DraftLengthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DraftLengthPolicy({})", self.name())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy_parse::{parse_policy, PolicyParseError};

    /// α = 0.8, t_d = 20 ms, t_v = 100 ms + 10 ms/token, 1 Mbit/s both ways, RTT 50 ms,
    /// S_u = 40 + 35·K bytes, S_d = 40 bytes.
    pub(crate) fn state() -> RoundState {
        RoundState {
            alpha: 0.8,
            t_draft_s: 0.02,
            t_verify_base_s: 0.1,
            t_verify_per_token_s: 0.01,
            uplink_bps: 1e6,
            downlink_bps: 1e6,
            rtt_s: 0.05,
            uplink_base_bytes: 40.0,
            uplink_bytes_per_token: 35.0,
            downlink_bytes: 40.0,
            draft_power_w: 0.0,
            radio_power_w: 0.0,
            energy_price: 0.0,
            row_price_s: 0.0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn expected_tokens_values() {
        assert_eq!(expected_tokens(0.5, 3), 1.875);
        assert_eq!(expected_tokens(0.5, 0), 1.0);
        assert_eq!(expected_tokens(0.0, 5), 1.0);
        assert_eq!(expected_tokens(1.0, 4), 5.0);
        assert!(close(expected_tokens(0.8, 4), 3.3616));
        // Matches the closed form, including the large-K branch and near α = 1.
        for &a in &[0.1, 0.5, 0.9, 0.999_999] {
            for k in [1usize, 7, 100, 5000] {
                let closed = (1.0 - f64::powf(a, k as f64 + 1.0)) / (1.0 - a);
                assert!(
                    (expected_tokens(a, k) - closed).abs() < 1e-6 * closed,
                    "α={a} K={k}"
                );
            }
        }
        assert_eq!(expected_tokens(1.7, 2), 3.0);
        assert_eq!(expected_tokens(-0.3, 2), 1.0);
        assert_eq!(expected_tokens(f64::NAN, 2), 1.0);
    }

    #[test]
    fn round_time_and_goodput_values() {
        let s = state();
        // 4·0.02 + (40 + 140)·8/1e6 + 0.05 + (0.1 + 0.04) + 40·8/1e6 = 0.27176 s.
        assert!(close(round_time(&s, 4), 0.27176));
        // K = 0: 40·8/1e6 + 0.05 + 0.1 + 40·8/1e6 = 0.15064 s.
        assert!(close(round_time(&s, 0), 0.15064));
        assert!(close(expected_goodput(&s, 4), 3.3616 / 0.27176));
        assert_eq!(s.validate(), Ok(()));
        let bad = RoundState {
            uplink_bps: 0.0,
            ..s
        };
        assert_eq!(bad.validate().unwrap_err().field, "uplink_bps");
        let bad = RoundState {
            rtt_s: f64::NAN,
            ..s
        };
        assert_eq!(bad.validate().unwrap_err().field, "rtt_s");
    }

    #[test]
    fn adaptive_choices() {
        // Optima computed by brute force over K = 1..16 (see round_time_and_goodput_values for
        // the model): RTT 10 ms → 3, 50 ms → 4, 300 ms → 7, 1 s → 10.
        let mut p = GoodputAdaptive { k_max: 16 };
        for (rtt, k) in [(0.01, 3), (0.05, 4), (0.3, 7), (1.0, 10)] {
            assert_eq!(
                p.choose(&RoundState {
                    rtt_s: rtt,
                    ..state()
                }),
                k,
                "rtt {rtt}"
            );
        }
        // α ≈ 0: drafting only costs time.
        assert_eq!(
            p.choose(&RoundState {
                alpha: 1e-9,
                ..state()
            }),
            1
        );
        assert_eq!(
            p.choose(&RoundState {
                alpha: 0.0,
                rtt_s: 1.0,
                ..state()
            }),
            1
        );
        // α = 1: every drafted token pays off.
        assert_eq!(
            p.choose(&RoundState {
                alpha: 1.0,
                ..state()
            }),
            16
        );
        // k_max bounds the choice; 0 behaves as 1.
        assert_eq!(
            GoodputAdaptive { k_max: 5 }.choose(&RoundState {
                rtt_s: 1.0,
                ..state()
            }),
            5
        );
        assert_eq!(GoodputAdaptive { k_max: 0 }.choose(&state()), 1);
        // Degenerate state: infinite round time → goodput 0 for every K → smallest K.
        assert_eq!(
            p.choose(&RoundState {
                uplink_bps: 0.0,
                ..state()
            }),
            1
        );
        assert_eq!(
            p.choose(&RoundState {
                rtt_s: f64::NAN,
                ..state()
            }),
            1
        );
        assert_eq!(Fixed(6).choose(&state()), 6);
    }

    #[test]
    fn parse_and_names() {
        for (s, name) in [
            ("adaptive", "adaptive:8"),
            (" adaptive:12 ", "adaptive:12"),
            ("fixed:4", "fixed:4"),
            ("fixed:0", "fixed:0"),
        ] {
            let p = parse_policy(s).unwrap();
            assert_eq!(p.name(), name);
            assert_eq!(parse_policy(&p.name()).unwrap().name(), name);
        }
        assert_eq!(parse_policy("fixed:3").unwrap().choose(&state()), 3);
        assert_eq!(
            parse_policy("adaptive:16").unwrap().choose(&RoundState {
                rtt_s: 0.3,
                ..state()
            }),
            7
        );
        assert!(matches!(
            parse_policy("fixed"),
            Err(PolicyParseError::Unknown { .. })
        ));
        assert!(matches!(
            parse_policy("greedy"),
            Err(PolicyParseError::Unknown { .. })
        ));
        assert!(matches!(
            parse_policy("Adaptive"),
            Err(PolicyParseError::Unknown { .. })
        ));
        assert_eq!(
            parse_policy("fixed:x").unwrap_err(),
            PolicyParseError::BadNumber {
                input: "fixed:x".into(),
                value: "x".into()
            }
        );
        assert!(matches!(
            parse_policy("fixed:-1"),
            Err(PolicyParseError::BadNumber { .. })
        ));
        assert_eq!(
            parse_policy("adaptive:0").unwrap_err(),
            PolicyParseError::OutOfRange {
                input: "adaptive:0".into(),
                value: 0,
                min: 1,
                max: MAX_K
            }
        );
        assert!(matches!(
            parse_policy("fixed:65"),
            Err(PolicyParseError::OutOfRange { value: 65, .. })
        ));
        let msg = parse_policy("nope").unwrap_err().to_string();
        assert!(
            msg.contains("adaptive[:KMAX]") && msg.contains("fixed:K") && msg.contains("ucb"),
            "{msg}"
        );
    }
}
