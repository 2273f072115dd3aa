//! Reference draft-length policies from the literature, beside ECSpec's own
//! ([`crate::policy::GoodputAdaptive`]):
//!
//! - [`FlexSpecLinear`]: the FlexSpec paper's controller objective as reported,
//!   `J(K) = (1 + αK) / (T_f + K·T_m)` (arXiv 2601.00644), with T_f the round's fixed time and
//!   T_m its marginal time per drafted token from the same latency model (design.md §2). J is a
//!   ratio of linear functions, so its maximum is at an end of [1, K_max]: kept as a baseline.
//! - [`ConfidenceStop`]: draft up to K_max and stop at the first token whose draft probability
//!   is below a threshold (llama.cpp's `--draft-p-min`) or whose distribution's entropy is above
//!   one (AdaEDL, Agrawal et al. 2024, arXiv 2410.18351; SVIP, Zhang et al. 2024,
//!   arXiv 2411.18462): the per-token [`StopRule`].
//! - [`Ucb`]: a multi-armed bandit over K ∈ [1, K_max] maximising the observed goodput of a
//!   round, UCB1 (Auer et al. 2002) as in BanditSpec (Hou et al. 2025, arXiv 2505.15141) and
//!   UCB-SpecStop.
//! - [`Capped`]: any policy's K as a cap, plus a per-token stop rule (e.g. the channel-aware
//!   `adaptive:8` with `p-min:0.3`).
//! - [`Ecspec`]: ECSpec's own policy, [`crate::policy::GoodputAdaptive`] extended to K = 0 as
//!   streaming cloud-only decoding when no K ≥ 1 pays.

use crate::policy::{
    best_k, expected_energy_per_token, expected_goodput, round_time, row_price, DraftLengthPolicy,
    PolicyMemory, RoundOutcome, RoundState, StopRule,
};

/// ECSpec's draft-length policy: the K ∈ [0, k_max] with the highest expected goodput
/// (design.md §2). K ≥ 1 rounds are scored `E[N(K)] / T_round(K)`; K = 0 asks the cloud to
/// stream n tokens on its own, scored `n / (T_round(0) + (n − 1)·t_v(0))` (the first token
/// after a round trip, the rest one cloud decode step apart). After a stream it drafts one
/// round with the best K ≥ 1 — a probe — so the acceptance estimate follows the text and
/// speculation resumes when it pays again. While probes keep losing, n doubles (up to
/// 16 × the base), so a draft that never pays costs ever fewer probes; a probe that wins
/// resets n. It streams only once [`ECSPEC_WARMUP_TOKENS`] tokens have been drafted (so the
/// acceptance estimate rests on data, not on its prior) and only when streaming beats the best
/// K by [`ECSPEC_STREAM_MARGIN`] (close calls keep drafting, which keeps measuring α).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecspec {
    /// Largest K (≥ 1).
    pub k_max: usize,
    /// Tokens of the first stream (≥ 2).
    pub stream: u32,
    current: u32,
    probe_due: bool,
    streamed_last: bool,
    drafted: usize,
    /// Recalled mid-stream: the request opens with a stream.
    opening: bool,
}

/// Tokens the `ecspec` policy drafts before it may choose to stream.
pub const ECSPEC_WARMUP_TOKENS: usize = 8;
/// Relative goodput margin streaming needs over the best K ≥ 1.
pub const ECSPEC_STREAM_MARGIN: f64 = 0.1;

impl Ecspec {
    /// A policy drafting at most `k_max` and streaming from `stream` tokens when drafting
    /// loses.
    pub fn new(k_max: usize, stream: u32) -> Self {
        let stream = stream.max(2);
        Self {
            k_max: k_max.max(1),
            stream,
            current: stream,
            probe_due: false,
            streamed_last: false,
            drafted: 0,
            opening: false,
        }
    }

    /// Expected goodput of streaming `n` tokens (tokens/s).
    pub fn stream_goodput(state: &RoundState, n: u32) -> f64 {
        let n = f64::from(n.max(1));
        // One row per streamed token, priced like a drafted round's rows.
        n / (round_time(state, 0) + (n - 1.0) * state.t_verify_base_s + n * row_price(state))
    }

    /// Expected edge energy per token of streaming `n` tokens (J/token): the radio stays on.
    pub fn stream_energy_per_token(state: &RoundState, n: u32) -> f64 {
        state.radio_power_w / Self::stream_goodput(state, n)
    }

    /// Score of drafting `k`: goodput minus the energy price times energy per token
    /// (drift-plus-penalty with λ = Q/V, design.md §3).
    pub fn score(state: &RoundState, k: usize) -> f64 {
        expected_goodput(state, k) - state.energy_price * expected_energy_per_token(state, k)
    }

    /// The K ∈ [1, k_max] with the best [`Self::score`] (ties to the smaller K).
    pub fn best_scored_k(state: &RoundState, k_max: usize) -> usize {
        if state.energy_price == 0.0 {
            return best_k(state, k_max);
        }
        let mut best = (1, Self::score(state, 1));
        for k in 2..=k_max.max(1) {
            let g = Self::score(state, k);
            if g > best.1 {
                best = (k, g);
            }
        }
        best.0
    }
}

impl DraftLengthPolicy for Ecspec {
    fn choose(&mut self, state: &RoundState) -> usize {
        let k = Self::best_scored_k(state, self.k_max);
        if std::mem::take(&mut self.probe_due) {
            return k;
        }
        let stream_score = Self::stream_goodput(state, self.stream)
            - state.energy_price * Self::stream_energy_per_token(state, self.stream);
        let draft_score = Self::score(state, k);
        let stream_wins = stream_score > draft_score + ECSPEC_STREAM_MARGIN * draft_score.abs();
        if self.drafted >= ECSPEC_WARMUP_TOKENS && stream_wins {
            // Drafting lost again right after a probe: back off, as TCP does.
            if self.streamed_last {
                self.current = (self.current * 2).min(self.stream.saturating_mul(16));
            }
            self.streamed_last = true;
            self.probe_due = true;
            0
        } else {
            self.streamed_last = false;
            self.current = self.stream;
            k
        }
    }

    fn stream_len(&self) -> u32 {
        self.current
    }

    fn observe(&mut self, outcome: &RoundOutcome) {
        self.drafted += outcome.drafted;
    }

    fn remember(&self) -> Option<PolicyMemory> {
        Some(PolicyMemory {
            drafted_tokens: self.drafted as u64,
            streaming: self.streamed_last,
            stream_len: self.current,
        })
    }

    /// Skips the warm-up once enough tokens were drafted in earlier requests; if the last
    /// request ended streaming (its last probe lost), opens this one with the next stream of
    /// the back-off — twice the length reached, within [stream, 16 × stream] — and probes
    /// after it.
    fn recall(&mut self, m: &PolicyMemory) {
        self.drafted = usize::try_from(m.drafted_tokens).unwrap_or(usize::MAX);
        if m.streaming {
            self.current = m
                .stream_len
                .saturating_mul(2)
                .clamp(self.stream, self.stream.saturating_mul(16));
            self.streamed_last = true;
            self.probe_due = true;
            self.opening = true;
        }
    }

    fn opening_stream(&self) -> u32 {
        if self.opening {
            self.current
        } else {
            0
        }
    }

    fn name(&self) -> String {
        if self.stream == DEFAULT_STREAM {
            format!("ecspec:{}", self.k_max)
        } else {
            format!("ecspec:{}:{}", self.k_max, self.stream)
        }
    }
}

/// Tokens per cloud stream of `ecspec` without a number.
pub const DEFAULT_STREAM: u32 = 16;

/// `J(K) = (1 + αK) / (T_f + K·T_m)` over K ∈ [1, k_max] (FlexSpec, as reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlexSpecLinear {
    /// Largest K considered (≥ 1).
    pub k_max: usize,
}

impl FlexSpecLinear {
    /// J(K) under `state`: T_f = T_round(0), T_m = T_round(1) − T_round(0).
    pub fn objective(state: &RoundState, k: usize) -> f64 {
        let t_f = round_time(state, 0);
        let t_m = round_time(state, 1) - t_f;
        let a = if state.alpha.is_nan() {
            0.0
        } else {
            state.alpha.clamp(0.0, 1.0)
        };
        (1.0 + a * k as f64) / (t_f + k as f64 * t_m)
    }
}

impl DraftLengthPolicy for FlexSpecLinear {
    fn choose(&mut self, state: &RoundState) -> usize {
        let mut best = 1;
        let mut best_j = Self::objective(state, 1);
        for k in 2..=self.k_max.max(1) {
            let j = Self::objective(state, k);
            if j > best_j || (best_j.is_nan() && !j.is_nan()) {
                best = k;
                best_j = j;
            }
        }
        best
    }

    fn name(&self) -> String {
        format!("flexspec-linear:{}", self.k_max)
    }
}

/// Drafts up to `k_max` and stops by a per-token [`StopRule`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfidenceStop {
    /// The stop rule.
    pub rule: StopRule,
    /// Most tokens per round.
    pub k_max: usize,
}

impl DraftLengthPolicy for ConfidenceStop {
    fn choose(&mut self, _state: &RoundState) -> usize {
        self.k_max
    }

    fn stop_rule(&self) -> Option<StopRule> {
        Some(self.rule)
    }

    fn name(&self) -> String {
        format!("{}:{}", self.rule, self.k_max)
    }
}

/// UCB1 over K ∈ [1, k_max]. The reward of a round is its goodput, committed tokens per
/// second of the round, divided by the largest goodput seen so far (so rewards lie in [0, 1]
/// as UCB1 assumes); the index is `mean + c·√(2 ln t / n_K)`. Every arm is tried once first,
/// in order 1..k_max.
#[derive(Debug, Clone, PartialEq)]
pub struct Ucb {
    /// Largest K (≥ 1).
    pub k_max: usize,
    /// Exploration weight c (1 = UCB1).
    pub c: f64,
    pulls: Vec<u64>,
    /// Sum of raw goodputs per arm (tokens/s).
    sums: Vec<f64>,
    best_seen: f64,
    last: Option<usize>,
}

impl Ucb {
    /// A fresh bandit.
    pub fn new(k_max: usize, c: f64) -> Self {
        let n = k_max.max(1);
        Self {
            k_max: n,
            c,
            pulls: vec![0; n],
            sums: vec![0.0; n],
            best_seen: 0.0,
            last: None,
        }
    }

    /// Rounds each K was played.
    pub fn pulls(&self) -> &[u64] {
        &self.pulls
    }
}

impl DraftLengthPolicy for Ucb {
    fn choose(&mut self, _state: &RoundState) -> usize {
        let arm = if let Some(i) = self.pulls.iter().position(|&n| n == 0) {
            i
        } else {
            let t: u64 = self.pulls.iter().sum();
            let scale = if self.best_seen > 0.0 {
                self.best_seen
            } else {
                1.0
            };
            let mut best = 0;
            let mut best_idx = f64::NEG_INFINITY;
            for (i, (&n, &s)) in self.pulls.iter().zip(&self.sums).enumerate() {
                let idx = s / n as f64 / scale + self.c * (2.0 * (t as f64).ln() / n as f64).sqrt();
                if idx > best_idx {
                    best = i;
                    best_idx = idx;
                }
            }
            best
        };
        self.last = Some(arm);
        arm + 1
    }

    fn observe(&mut self, outcome: &RoundOutcome) {
        // Credit the arm that was chosen (a stop rule or the budget may have drafted fewer).
        let Some(arm) = self.last.take() else {
            return;
        };
        let g = if outcome.round_s > 0.0 {
            outcome.committed as f64 / outcome.round_s
        } else {
            0.0
        };
        if g.is_finite() {
            self.pulls[arm] += 1;
            self.sums[arm] += g;
            self.best_seen = self.best_seen.max(g);
        }
    }

    fn name(&self) -> String {
        if self.c == 1.0 {
            format!("ucb:{}", self.k_max)
        } else {
            format!("ucb:{}:{}", self.k_max, self.c)
        }
    }
}

/// One policy's K as a cap, another's per-token stop rule.
#[derive(Debug)]
pub struct Capped {
    /// Chooses the cap (e.g. the channel-aware `adaptive:8`).
    pub cap: Box<dyn DraftLengthPolicy>,
    /// The stop rule applied below the cap.
    pub stop: StopRule,
}

impl DraftLengthPolicy for Capped {
    fn choose(&mut self, state: &RoundState) -> usize {
        self.cap.choose(state)
    }

    fn stop_rule(&self) -> Option<StopRule> {
        Some(self.stop)
    }

    fn observe(&mut self, outcome: &RoundOutcome) {
        self.cap.observe(outcome);
    }

    fn stream_len(&self) -> u32 {
        self.cap.stream_len()
    }

    fn remember(&self) -> Option<PolicyMemory> {
        self.cap.remember()
    }

    fn recall(&mut self, memory: &PolicyMemory) {
        self.cap.recall(memory);
    }

    fn opening_stream(&self) -> u32 {
        self.cap.opening_stream()
    }

    fn name(&self) -> String {
        format!("{}+{}", self.cap.name(), self.stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_parse::parse_policy;

    #[test]
    fn ecspec_recalls_an_earlier_request() {
        // A request that ended streaming: the next opens with a stream of the length reached,
        // probes once, and skips the warm-up.
        let m = PolicyMemory {
            drafted_tokens: 40,
            streaming: true,
            stream_len: 64,
        };
        let mut p = Ecspec::new(8, 16);
        assert_eq!(p.opening_stream(), 0);
        p.recall(&m);
        assert_eq!(p.opening_stream(), 128, "the back-off's next step");
        let low = state(0.05);
        assert!(
            p.choose(&low) >= 1,
            "the round after the opening stream is a probe"
        );
        assert_eq!(p.choose(&low), 0, "no warm-up: it streams again at once");
        assert_eq!(p.stream_len(), 256, "and backs off from there");
        assert_eq!(
            p.remember(),
            Some(PolicyMemory {
                drafted_tokens: 40,
                streaming: true,
                stream_len: 256
            })
        );
        // Out-of-range lengths are clamped to [stream, 16 × stream].
        let mut q = Ecspec::new(8, 16);
        q.recall(&PolicyMemory {
            stream_len: u32::MAX,
            ..m
        });
        assert_eq!(q.opening_stream(), 256);
        // A request that ended drafting opens with a round, not a stream.
        let mut r = Ecspec::new(8, 16);
        r.recall(&PolicyMemory {
            streaming: false,
            ..m
        });
        assert_eq!(r.opening_stream(), 0);
        // Capped forwards the memory.
        let mut c = parse_policy("ecspec:8+p-min:0.2").unwrap();
        c.recall(&m);
        assert_eq!(c.opening_stream(), 128);
    }

    /// The policy tests' round (α = 0.8, t_d = 20 ms, t_v = 100 ms + 10 ms/token, 1 Mbit/s,
    /// RTT 50 ms) with another α.
    fn state(alpha: f64) -> RoundState {
        RoundState {
            alpha,
            ..crate::policy::tests::state()
        }
    }

    #[test]
    fn a_row_price_drafts_shorter_and_then_streams() {
        // Load-aware speculation: the more each row costs the cloud's other sessions, the
        // fewer rows per committed token the edge asks for.
        let s = state(0.8);
        let at = |p: f64| RoundState {
            row_price_s: p,
            ..s
        };
        let ks: Vec<usize> = [0.0, 0.01, 0.05, 0.2, 1.0]
            .iter()
            .map(|&p| best_k(&at(p), 16))
            .collect();
        assert!(ks.windows(2).all(|w| w[1] <= w[0]), "{ks:?}");
        assert!(ks[0] > ks[4], "{ks:?}");
        // A price of 0 (or a bad one) changes nothing.
        for p in [0.0, -1.0, f64::NAN] {
            assert_eq!(expected_goodput(&at(p), 4), expected_goodput(&s, 4));
        }
        // At a high price a stream (one row per token) beats drafting any K.
        let hi = at(10.0);
        let stream = Ecspec::stream_goodput(&hi, 4);
        assert!((1..=16).all(|k| stream > Ecspec::score(&hi, k)));
        let free = Ecspec::stream_goodput(&s, 4);
        assert!(free > stream, "a priced stream is slower too");
    }

    #[test]
    fn flexspec_linear_picks_an_end_of_the_range() {
        // T_f = 0.15064 s, T_m = 0.02 + 280e-6 + 0.01 = 0.03028 s: J rises with K when
        // α > T_m / T_f = 0.201, falls when α is below it.
        let mut p = FlexSpecLinear { k_max: 8 };
        assert_eq!(p.choose(&state(0.5)), 8);
        assert_eq!(p.choose(&state(0.1)), 1);
        let j = FlexSpecLinear::objective(&state(0.5), 4);
        assert!((j - 3.0 / (0.15064 + 4.0 * 0.03028)).abs() < 1e-9, "{j}");
    }

    #[test]
    fn ecspec_streams_when_drafting_loses_and_probes_after_each_stream() {
        let mut p = Ecspec::new(8, 16);
        // Before 8 drafted tokens it drafts whatever the estimate says.
        assert!(p.choose(&state(0.05)) >= 1);
        let drafted = |k| RoundOutcome {
            drafted: k,
            accepted: 0,
            committed: 1,
            round_s: 0.2,
        };
        p.observe(&drafted(8));
        // α = 0.8: drafting pays (G(4) = 3.3616 / 0.27176 ≈ 12.4 tok/s vs streaming
        // 16 / (0.15064 + 15·0.1) ≈ 9.7 tok/s).
        let good = state(0.8);
        assert!(p.choose(&good) >= 1);
        // α = 0.05: E[N] ≈ 1.05 per ≈ 0.18 s round; streaming wins.
        let bad = state(0.05);
        assert_eq!(p.choose(&bad), 0);
        assert_eq!(p.stream_len(), 16);
        let g = Ecspec::stream_goodput(&bad, 16);
        assert!((g - 16.0 / (0.15064 + 15.0 * 0.1)).abs() < 1e-9, "{g}");
        // The next round probes with K ≥ 1, then it streams again, twice as long, up to 16×.
        assert_eq!(p.choose(&bad), best_k(&bad, 8));
        assert_eq!(p.choose(&bad), 0);
        assert_eq!(p.stream_len(), 32);
        for _ in 0..10 {
            assert!(p.choose(&bad) >= 1);
            assert_eq!(p.choose(&bad), 0);
        }
        assert_eq!(p.stream_len(), 256);
        // A probe that wins resets the stream length.
        assert!(p.choose(&good) >= 1);
        assert!(p.choose(&good) >= 1);
        assert_eq!(p.choose(&bad), 0);
        assert_eq!(p.stream_len(), 16);
        assert_eq!(p.name(), "ecspec:8");
        assert_eq!(Ecspec::new(4, 32).name(), "ecspec:4:32");
    }

    #[test]
    fn an_energy_price_moves_ecspec_to_cheaper_choices() {
        // Drafting is costly on this device (P_c = 8 W over 20 ms/token), the radio cheap.
        let mut s = state(0.8);
        s.draft_power_w = 8.0;
        s.radio_power_w = 1.0;
        let e = |s: &RoundState, k| expected_energy_per_token(s, k);
        // (4·0.02·8 + 1·0.27176) / 3.3616 J/token.
        assert!((e(&s, 4) - (0.64 + 0.27176) / 3.3616).abs() < 1e-9);
        let free = Ecspec::best_scored_k(&s, 8);
        assert_eq!(free, best_k(&s, 8), "no price: the goodput optimum");
        s.energy_price = 20.0;
        let priced = Ecspec::best_scored_k(&s, 8);
        assert!(priced < free, "price 20: K {priced} vs {free}");
        assert!(e(&s, priced) < e(&s, free));
        // A high enough price prefers streaming (no drafting energy) once warmed up.
        let mut p = Ecspec::new(8, 16);
        p.observe(&RoundOutcome {
            drafted: 8,
            accepted: 6,
            committed: 7,
            round_s: 0.3,
        });
        s.energy_price = 0.0;
        assert!(p.choose(&s) >= 1);
        s.energy_price = 100.0;
        assert_eq!(p.choose(&s), 0);
    }

    #[test]
    fn ucb_tries_every_arm_then_settles_on_the_best() {
        let mut p = Ucb::new(4, 1.0);
        let s = state(0.5);
        // Goodput of arm K: K=3 is best (deterministic rewards).
        let goodput = |k: usize| [10.0, 14.0, 20.0, 12.0][k - 1];
        let mut chosen = Vec::new();
        for _ in 0..400 {
            let k = p.choose(&s);
            chosen.push(k);
            p.observe(&RoundOutcome {
                drafted: k,
                accepted: 0,
                committed: goodput(k) as usize,
                round_s: 1.0,
            });
        }
        assert_eq!(&chosen[..4], &[1, 2, 3, 4]);
        let best = p.pulls()[2];
        assert!(
            best > 250,
            "K = 3 played {best} of 400 times: {:?}",
            p.pulls()
        );
        assert_eq!(p.name(), "ucb:4");
    }

    #[test]
    fn stop_rules_and_combinations_parse_and_name_themselves() {
        for s in [
            "p-min:0.3:8",
            "entropy:1.5:6",
            "flexspec-linear:8",
            "ucb:8",
            "ucb:8:0.5",
            "adaptive:8+p-min:0.3",
            "fixed:4+entropy:2",
            "ecspec:8",
            "ecspec:6:32",
            "ecspec:8+p-min:0.2",
        ] {
            let p = parse_policy(s).unwrap();
            assert_eq!(p.name(), s, "round trip of {s}");
        }
        let p = parse_policy("adaptive:8+p-min:0.3").unwrap();
        assert_eq!(p.stop_rule(), Some(StopRule::PMin(0.3)));
        assert!(!StopRule::PMin(0.3).keep_drafting(0.29, 0.1));
        assert!(StopRule::PMin(0.3).keep_drafting(0.3, 5.0));
        assert!(!StopRule::MaxEntropy(1.5).keep_drafting(0.9, 1.6));
        assert!(StopRule::MaxEntropy(1.5).keep_drafting(0.1, 1.5));
        let p = parse_policy("p-min:0.3").unwrap();
        assert_eq!(p.name(), "p-min:0.3:8", "K_max defaults to 8");
        for bad in [
            "p-min:1.5",
            "p-min:x",
            "entropy:-1",
            "ucb:0",
            "adaptive:8+fixed:2",
            "+p-min:0.2",
            "ucb:8:-1",
        ] {
            assert!(parse_policy(bad).is_err(), "{bad} accepted");
        }
    }
}
