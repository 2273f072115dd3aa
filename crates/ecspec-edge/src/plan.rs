//! **Where K is chosen.** Each round of a speculative session the edge either sends tokens
//! copied from its context (lookup), drafts a block of K tokens with its model under a
//! verification rule, or drafts nothing and lets the cloud generate n tokens on its own (K = 0,
//! a cloud stream). [`RoundPlanner`] makes that choice from what the edge has measured and
//! returns it as a [`RoundPlan`]; it does no I/O and runs no model.
//!
//! The order of the choice (design.md §2–4):
//! 1. A context-lookup match costs no drafting, so it is weighed first ([`LookupRounds`]):
//!    taken when [`lookup_pays`] says it beats the model's best K and the policy's cloud
//!    stream, or as a probe after declined matches.
//! 2. Otherwise the draft-length policy picks K on the round state: under channel-aware
//!    verification at the state of the rule [`VerifySelector`] prefers (match: ids only;
//!    rejection: ids and distributions). K = 0 is a stream of the policy's length.
//! 3. A lookup-only edge without a paying match streams.
//!
//! After the verdict the session hands the round back ([`RoundPlanner::record`]) and the
//! planner learns from it: both acceptance rates, the rule's, the policy's feedback, the
//! energy budget's queue, the cloud's row price and the round's timings and bytes.

use std::time::Duration;

use ecspec_spec::acceptance::{
    AcceptanceError, AcceptanceEstimator, DEFAULT_DECAY, KNOWN_ALPHA_TOKENS,
};
use ecspec_spec::policy::{DraftLengthPolicy, PolicyMemory, RoundOutcome, RoundState, StopRule};
use ecspec_spec::verify::VerifyRule;
use ecspec_spec::verify_mode::{RoundRule, VerifySelector};

use crate::estimate::RoundEstimator;
use crate::lookup::{
    lookup_pays, DraftSource, Lookup, LOOKUP_PRIOR_ALPHA, LOOKUP_PRIOR_WEIGHT, LOOKUP_PROBE_EVERY,
};

/// The model's side of a lookup's weighing is its best K up to this: the default `ecspec`
/// policy's K_max (`ecspec:8`), whatever the session's policy.
pub const LOOKUP_MODEL_K_MAX: usize = 8;

/// Bound on the energy price Q/V a round is planned with, so a zero-V budget cannot make every
/// score −∞.
const MAX_ENERGY_PRICE: f64 = 1e9;

/// What the policy knows about energy: the device's powers and, optionally, a budget whose
/// virtual queue prices energy each round (design.md §3). Each round is charged
/// `P_c·drafting + P_r·(drafting + waiting)`, the model the policy plans with.
#[derive(Debug, Clone)]
pub struct EnergyControl {
    /// P_c, W above idle while drafting.
    pub draft_power_w: f64,
    /// P_r, W while a round runs (radio active or in its tail).
    pub radio_power_w: f64,
    /// The budget (J per committed token) and its queue.
    pub budget: Option<ecspec_energy::EnergyBudget>,
}

/// The estimates a round was planned with, as [`crate::RoundRecord`] reports them (NaN when
/// nothing was weighed: a cloud-only step, a streamed verdict, a lookup-only edge without a
/// match).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanEstimates {
    /// The acceptance rate α the round was weighed at (a lookup round: the lookups' own α).
    pub alpha: f64,
    /// Uplink rate estimate (bit/s).
    pub uplink_bps: f64,
    /// RTT estimate (s).
    pub rtt_s: f64,
}

impl PlanEstimates {
    /// Nothing weighed.
    pub const UNKNOWN: Self = Self {
        alpha: f64::NAN,
        uplink_bps: f64::NAN,
        rtt_s: f64::NAN,
    };

    fn of(st: &RoundState) -> Self {
        Self {
            alpha: st.alpha,
            uplink_bps: st.uplink_bps,
            rtt_s: st.rtt_s,
        }
    }
}

/// One round's choice.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundPlan {
    /// Send these tokens copied from the context: no drafting, ids only (verified by match in a
    /// sampled rejection session, which for a deterministic draft is the rejection rule itself).
    Lookup {
        /// The copied tokens (K = their count, ≥ 1).
        tokens: Vec<u32>,
        /// What the lookup was weighed at.
        seen: PlanEstimates,
    },
    /// Draft up to `k` ≥ 1 tokens with the draft model.
    Model {
        /// The cap K (a stop rule may end drafting below it).
        k: usize,
        /// The policy's per-token stop rule, if any.
        stop: Option<StopRule>,
        /// Channel-aware verification's rule for this round (None: the session's rule; a
        /// match round of a rejection session sends ids only).
        rule: Option<RoundRule>,
        /// What K was chosen at.
        seen: PlanEstimates,
    },
    /// Draft nothing: the cloud generates `n` ≥ 1 tokens on its own, one verdict each (n = 1:
    /// one plain target step).
    Stream {
        /// Tokens asked for.
        n: u32,
        /// What the policy chose K = 0 at ([`PlanEstimates::UNKNOWN`] when no model round was
        /// weighed: a lookup-only edge without a paying match).
        seen: PlanEstimates,
    },
}

impl RoundPlan {
    /// The estimates the round was planned with.
    pub fn seen(&self) -> PlanEstimates {
        match self {
            RoundPlan::Lookup { seen, .. }
            | RoundPlan::Model { seen, .. }
            | RoundPlan::Stream { seen, .. } => *seen,
        }
    }

    /// This plan with at most `k_max` ≥ 1 drafted tokens: the session's K_max agreed in the
    /// handshake, which the cloud enforces by refusing longer blocks.
    pub fn capped(self, k_max: usize) -> Self {
        let k_max = k_max.max(1);
        match self {
            RoundPlan::Lookup { mut tokens, seen } => {
                tokens.truncate(k_max);
                RoundPlan::Lookup { tokens, seen }
            }
            RoundPlan::Model {
                k,
                stop,
                rule,
                seen,
            } => RoundPlan::Model {
                k: k.min(k_max),
                stop,
                rule,
                seen,
            },
            stream => stream,
        }
    }
}

/// The lookup half of the choice: the lookups' own acceptance rate and the count of matches
/// declined in a row, so a declined lookup is probed every [`LOOKUP_PROBE_EVERY`]th match (its
/// α only moves on lookup rounds, so a losing prior would otherwise never be corrected).
#[derive(Debug, Clone)]
pub struct LookupRounds {
    alpha: AcceptanceEstimator,
    declined: u32,
    /// Take every match unweighed ([`RoundPlanner::taking_every_match`]).
    every_match: bool,
}

impl LookupRounds {
    /// Starts at [`LOOKUP_PRIOR_ALPHA`] worth [`LOOKUP_PRIOR_WEIGHT`] tokens, decaying per lookup
    /// round as the model's estimate does ([`DEFAULT_DECAY`]); nothing declined.
    ///
    /// # Errors
    /// None with the shipped constants ([`AcceptanceError`] if they were out of range).
    pub fn new() -> Result<Self, AcceptanceError> {
        Ok(Self {
            alpha: AcceptanceEstimator::new(
                LOOKUP_PRIOR_ALPHA,
                LOOKUP_PRIOR_WEIGHT,
                DEFAULT_DECAY,
            )?,
            declined: 0,
            every_match: false,
        })
    }

    /// The lookups' per-token acceptance estimate.
    pub fn alpha(&self) -> f64 {
        self.alpha.alpha()
    }

    /// Whether to take a match of `copied` tokens: `lookup` is the round state at
    /// [`Self::alpha`] with no drafting time, `model` the model's round state and the largest
    /// K it would draft (None: no model to weigh against), `stream` the cloud stream the
    /// round would otherwise be ([`lookup_pays`]). A declined match counts towards the next
    /// probe; a taken one resets the count. Always true when taking every match.
    pub fn take(
        &mut self,
        copied: usize,
        lookup: &RoundState,
        model: Option<(&RoundState, usize)>,
        stream: u32,
    ) -> bool {
        if self.every_match
            || lookup_pays(lookup, copied, model, stream)
            || self.declined + 1 >= LOOKUP_PROBE_EVERY
        {
            self.declined = 0;
            true
        } else {
            self.declined += 1;
            false
        }
    }

    /// Learns from a verified lookup round of `drafted` copied tokens, `accepted` of them kept.
    ///
    /// # Errors
    /// [`AcceptanceError`] if `accepted > drafted`.
    pub fn record(&mut self, drafted: usize, accepted: usize) -> Result<(), AcceptanceError> {
        self.alpha.record(drafted, accepted)
    }
}

/// The session settings the choice reads (moved out of [`crate::EdgeConfig`]).
pub struct PlannerSettings {
    /// Draft-length policy.
    pub policy: Box<dyn DraftLengthPolicy>,
    /// Where drafted tokens come from.
    pub source: DraftSource,
    /// Context-lookup settings.
    pub lookup: Lookup,
    /// The session's verification rule (rejection: model rounds carry distributions).
    pub rule: VerifyRule,
    /// Channel-aware verification (None: every round uses `rule`).
    pub verify_switch: Option<VerifySelector>,
    /// Energy-aware drafting.
    pub energy: Option<EnergyControl>,
    /// Price the rows asked of the cloud at its reported `row_cost_us`.
    pub load_aware: bool,
}

/// What a finished round tells the planner.
#[derive(Debug, Clone, Copy)]
pub struct RoundReport {
    /// The round's tokens were copied from the context ([`RoundPlan::Lookup`]).
    pub looked_up: bool,
    /// A verdict inside a cloud stream the edge had asked for earlier (nothing was planned).
    pub continuing: bool,
    /// Tokens sent (K).
    pub drafted: usize,
    /// Of them accepted.
    pub accepted: usize,
    /// Leading tokens taken from the previous round's confirmed pre-draft.
    pub reused: usize,
    /// Drafting time before the block was sent.
    pub draft: Duration,
    /// Time spent pre-drafting while the round was in flight (s).
    pub pre_draft_s: f64,
    /// Send-to-verdict time.
    pub wait: Duration,
    /// The cloud's reported compute time (s).
    pub cloud_compute_s: f64,
    /// The verdict's `row_cost_us`.
    pub row_cost_us: u32,
    /// Uplink and downlink bytes of the round.
    pub uplink_bytes: u64,
    /// See [`Self::uplink_bytes`].
    pub downlink_bytes: u64,
    /// The block carried compact distributions (a rejection round).
    pub sent_dists: bool,
}

/// Chooses every round of a speculative session ([`Self::plan`]) and learns from its outcome
/// ([`Self::record`]). Holds the policy, the model's and the lookups' acceptance estimates,
/// the rule selector, the energy budget, the cloud's row price and the edge's measured round
/// timings and bytes ([`RoundEstimator`]).
pub struct RoundPlanner {
    policy: Box<dyn DraftLengthPolicy>,
    source: DraftSource,
    lookup: Lookup,
    rule: VerifyRule,
    verify_switch: Option<VerifySelector>,
    energy: Option<EnergyControl>,
    load_aware: bool,
    model_alpha: AcceptanceEstimator,
    lookups: LookupRounds,
    timing: RoundEstimator,
    /// The cloud's row price (s/row), smoothed over verdicts; 0 unless load-aware.
    row_price_s: f64,
    /// The rule the current round was planned under (channel-aware verification).
    round_rule: Option<RoundRule>,
}

impl RoundPlanner {
    /// A planner starting from the model's acceptance estimate `model_alpha` and the round
    /// estimator `timing`.
    ///
    /// # Errors
    /// [`AcceptanceError`] from the lookups' estimator (none with the shipped constants).
    pub fn new(
        settings: PlannerSettings,
        model_alpha: AcceptanceEstimator,
        timing: RoundEstimator,
    ) -> Result<Self, AcceptanceError> {
        let PlannerSettings {
            policy,
            source,
            lookup,
            rule,
            verify_switch,
            energy,
            load_aware,
        } = settings;
        Ok(Self {
            policy,
            source,
            lookup,
            rule,
            verify_switch,
            energy,
            load_aware,
            model_alpha,
            lookups: LookupRounds::new()?,
            timing,
            row_price_s: 0.0,
            round_rule: None,
        })
    }

    /// A planner for a draft whose per-token acceptance α is known (a family's measured α, as
    /// [`crate::EdgeConfig::acceptance_prior`]): the model's estimate starts there
    /// ([`AcceptanceEstimator::from_known`]) and the policy skips its warm-up, the known α
    /// counting as [`KNOWN_ALPHA_TOKENS`] drafted tokens.
    ///
    /// # Errors
    /// [`AcceptanceError`] if `alpha` is not in [0, 1].
    pub fn with_known_alpha(
        mut settings: PlannerSettings,
        alpha: f64,
        timing: RoundEstimator,
    ) -> Result<Self, AcceptanceError> {
        let model_alpha = AcceptanceEstimator::from_known(alpha)?;
        settings.policy.recall(&PolicyMemory {
            drafted_tokens: KNOWN_ALPHA_TOKENS as u64,
            streaming: false,
            stream_len: 0,
        });
        Self::new(settings, model_alpha, timing)
    }

    /// This planner taking every context-lookup match it finds, unweighed: prompt lookup
    /// decoding as Saxena (2023) and Hugging Face transformers run it, the `lookup` drafter
    /// of `ecspec family speedup`. A round without a match is planned as before.
    pub fn taking_every_match(mut self) -> Self {
        self.lookups.every_match = true;
        self
    }

    /// The next round of a speculative session whose committed sequence is `context`.
    pub fn plan(&mut self, context: &[u32]) -> RoundPlan {
        self.round_rule = None;
        if let Some(plan) = self.lookup_round(context) {
            return plan;
        }
        if !self.source.uses_model() {
            return RoundPlan::Stream {
                n: self.policy.stream_len(),
                seen: PlanEstimates::UNKNOWN,
            };
        }
        let st = self.model_state();
        let seen = PlanEstimates::of(&st);
        let k = self.policy.choose(&st);
        if k == 0 {
            return RoundPlan::Stream {
                n: self.policy.stream_len(),
                seen,
            };
        }
        RoundPlan::Model {
            k,
            stop: self.policy.stop_rule(),
            rule: self.round_rule,
            seen,
        }
    }

    /// A lookup round, when the context matches and the match is taken.
    fn lookup_round(&mut self, context: &[u32]) -> Option<RoundPlan> {
        if !self.source.uses_lookup() {
            return None;
        }
        let tokens = self.lookup.propose(context, self.lookup.draft_len);
        if tokens.is_empty() {
            return None;
        }
        let mut l = self.priced(self.timing.state(self.lookups.alpha(), false));
        l.t_draft_s = 0.0;
        let m = self.priced(
            self.timing
                .state(self.model_alpha.alpha(), self.rejection()),
        );
        let model = self.source.uses_model().then_some((&m, LOOKUP_MODEL_K_MAX));
        let stream = self.policy.stream_len().max(1);
        self.lookups
            .take(tokens.len(), &l, model, stream)
            .then(|| RoundPlan::Lookup {
                tokens,
                seen: PlanEstimates::of(&l),
            })
    }

    /// The model round's state: under channel-aware verification, the state of the rule the
    /// selector picks (remembered for [`Self::record`]), else at the model's α.
    fn model_state(&mut self) -> RoundState {
        let (timing, energy, row) = (&self.timing, self.energy.as_ref(), self.row_price_s);
        let price = |st| priced(st, energy, row);
        match self.verify_switch.as_mut() {
            Some(sel) => {
                let m = price(timing.state(sel.alpha(RoundRule::Match), false));
                let r = price(timing.state(sel.alpha(RoundRule::Rejection), true));
                let pick = sel.choose(&m, &r);
                self.round_rule = Some(pick);
                if pick == RoundRule::Match {
                    m
                } else {
                    r
                }
            }
            None => {
                price(timing.state(self.model_alpha.alpha(), self.rule == VerifyRule::Rejection))
            }
        }
    }

    fn rejection(&self) -> bool {
        self.rule == VerifyRule::Rejection
    }

    /// The round state with the cloud's row price and the energy terms filled in.
    fn priced(&self, st: RoundState) -> RoundState {
        priced(st, self.energy.as_ref(), self.row_price_s)
    }

    /// Learns from a verified round (every round, planned or a streamed verdict).
    pub fn record(&mut self, r: &RoundReport) {
        let (k, a) = (r.drafted, r.accepted);
        if self.load_aware {
            self.row_price_s = 0.5 * self.row_price_s + 0.5 * f64::from(r.row_cost_us) * 1e-6;
        }
        // `a ≤ k` was checked against the verdict, so the estimators cannot refuse it.
        if r.looked_up {
            let _ = self.lookups.record(k, a);
        } else {
            let _ = self.model_alpha.record(k, a);
            if let (Some(sel), Some(rule)) = (self.verify_switch.as_mut(), self.round_rule) {
                let _ = sel.record(rule, k, a);
            }
        }
        if let Some(e) = self.energy.as_mut() {
            let d = r.draft.as_secs_f64() + r.pre_draft_s;
            let joules = e.draft_power_w * d + e.radio_power_w * (d + r.wait.as_secs_f64());
            if let Some(b) = e.budget.as_mut() {
                // Finite and ≥ 0 by construction.
                let _ = b.record(joules, a as u64 + 1);
            }
        }
        if !r.continuing && !r.looked_up {
            self.policy.observe(&RoundOutcome {
                drafted: k,
                accepted: a,
                committed: a + 1,
                round_s: (r.draft + r.wait).as_secs_f64(),
            });
        }
        // A streamed verdict after the first arrives one decode step after the previous: it
        // says nothing about the round-trip, so only the stream's first verdict is learnt from.
        if !r.continuing {
            // Drafting time per token is learnt from tokens drafted now, not pipelined or
            // looked-up ones.
            let draft_s = r.draft.as_secs_f64();
            let draft_s = if r.reused < k && !r.looked_up {
                draft_s * k as f64 / (k - r.reused) as f64
            } else {
                self.timing.t_draft() * k as f64
            };
            self.timing.observe(
                k,
                draft_s,
                r.uplink_bytes as f64,
                r.downlink_bytes as f64,
                r.wait.as_secs_f64(),
                r.cloud_compute_s,
                r.sent_dists,
            );
        }
        self.round_rule = None;
    }

    /// The draft-length policy.
    pub fn policy(&self) -> &dyn DraftLengthPolicy {
        self.policy.as_ref()
    }

    /// The model's acceptance estimate (its counters cover every round that was not a lookup).
    pub fn model_alpha(&self) -> &AcceptanceEstimator {
        &self.model_alpha
    }

    /// The lookup rounds' state.
    pub fn lookups(&self) -> &LookupRounds {
        &self.lookups
    }

    /// The energy control, with its budget's queue as the rounds left it.
    pub fn energy(&self) -> Option<&EnergyControl> {
        self.energy.as_ref()
    }

    /// Whether rounds choose their verification rule (channel-aware verification).
    pub fn switches_rule(&self) -> bool {
        self.verify_switch.is_some()
    }

    /// The cloud's smoothed row price (s/row; 0 unless load-aware).
    pub fn row_price_s(&self) -> f64 {
        self.row_price_s
    }
}

/// `st` with the cloud's row price (s/row) and, with energy control, the device's powers and the
/// budget's price Q/V (bounded) filled in.
fn priced(mut st: RoundState, energy: Option<&EnergyControl>, row_price_s: f64) -> RoundState {
    st.row_price_s = row_price_s;
    if let Some(e) = energy {
        st.draft_power_w = e.draft_power_w;
        st.radio_power_w = e.radio_power_w;
        st.energy_price = e
            .budget
            .as_ref()
            .map_or(0.0, |b| b.multiplier().min(MAX_ENERGY_PRICE));
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecspec_spec::parse_policy;
    use ecspec_spec::policy::PolicyMemory;

    /// A context whose last 2-gram `7 8` occurred before, followed by `9 7`.
    const MATCHING: [u32; 5] = [7, 8, 9, 7, 8];
    /// A context without any repeated 2-gram.
    const FRESH: [u32; 5] = [1, 2, 3, 4, 5];

    fn planner(policy: &str, source: DraftSource, rule: VerifyRule) -> RoundPlanner {
        planner_with(policy, source, rule, None, AcceptanceEstimator::default())
    }

    fn planner_with(
        policy: &str,
        source: DraftSource,
        rule: VerifyRule,
        verify_switch: Option<VerifySelector>,
        model_alpha: AcceptanceEstimator,
    ) -> RoundPlanner {
        let settings = PlannerSettings {
            policy: parse_policy(policy).unwrap(),
            source,
            lookup: Lookup::default(),
            rule,
            verify_switch,
            energy: None,
            load_aware: true,
        };
        RoundPlanner::new(settings, model_alpha, prior()).unwrap()
    }

    /// The estimator's priors: 60 ms RTT, 10 Mbit/s, 10 ms a drafted token, 20 ms a pass.
    fn prior() -> RoundEstimator {
        RoundEstimator::new(0.01, 0.02)
    }

    fn estimates(alpha: f64, dists: bool) -> PlanEstimates {
        PlanEstimates::of(&prior().state(alpha, dists))
    }

    /// A lookup round of 2 copied tokens, none accepted, on a link without delay (the wait is
    /// the cloud's compute time).
    fn failed_lookup() -> RoundReport {
        RoundReport {
            looked_up: true,
            continuing: false,
            drafted: 2,
            accepted: 0,
            reused: 0,
            draft: Duration::ZERO,
            pre_draft_s: 0.0,
            wait: Duration::from_millis(20),
            cloud_compute_s: 0.02,
            row_cost_us: 0,
            uplink_bytes: 18,
            downlink_bytes: 19,
            sent_dists: false,
        }
    }

    fn is_stream(plan: &RoundPlan, n: u32) -> bool {
        matches!(plan, RoundPlan::Stream { n: m, .. } if *m == n)
    }

    #[test]
    fn a_model_edge_drafts_the_policys_k_under_the_sessions_rule() {
        let mut p = planner("fixed:4", DraftSource::Model, VerifyRule::Greedy);
        // A matching context changes nothing without lookup.
        assert_eq!(
            p.plan(&MATCHING),
            RoundPlan::Model {
                k: 4,
                stop: None,
                rule: None,
                seen: estimates(0.5, false),
            }
        );
        // A rejection session weighs its rounds at the bytes of ids plus distributions.
        let mut p = planner(
            "fixed:3+p-min:0.3",
            DraftSource::Model,
            VerifyRule::Rejection,
        );
        assert_eq!(
            p.plan(&FRESH),
            RoundPlan::Model {
                k: 3,
                stop: Some(StopRule::PMin(0.3)),
                rule: None,
                seen: estimates(0.5, true),
            }
        );
        // K = 0 is a cloud stream of the policy's length (one plain step for `fixed`).
        let mut p = planner("fixed:0", DraftSource::Hybrid, VerifyRule::Greedy);
        assert_eq!(
            p.plan(&FRESH),
            RoundPlan::Stream {
                n: 1,
                seen: estimates(0.5, false),
            }
        );
    }

    #[test]
    fn a_lookup_edge_copies_a_match_and_streams_without_one() {
        let mut p = planner("fixed:3", DraftSource::Lookup, VerifyRule::Greedy);
        // Two copied tokens at the lookups' prior α = 0.5 commit 1.75 tokens a round trip, a
        // plain step 1.
        assert_eq!(
            p.plan(&MATCHING),
            RoundPlan::Lookup {
                tokens: vec![9, 7],
                seen: estimates(LOOKUP_PRIOR_ALPHA, false),
            }
        );
        // No match: nothing to draft, the cloud decodes; nothing was weighed.
        let plan = p.plan(&FRESH);
        assert!(is_stream(&plan, 1), "{plan:?}");
        assert!(plan.seen().alpha.is_nan() && plan.seen().rtt_s.is_nan());
    }

    #[test]
    fn a_losing_lookup_is_declined_three_times_then_probed() {
        for source in [DraftSource::Lookup, DraftSource::Hybrid] {
            let mut p = planner("fixed:2", source, VerifyRule::Greedy);
            // Copied tokens that are never accepted (α ≈ 0.12 against the prior's pull): a pass
            // of 3 rows for 1.13 tokens, worse than a plain step on a link without delay (and
            // than the model at α = 0.5).
            for _ in 0..20 {
                p.record(&failed_lookup());
            }
            assert!(p.lookups().alpha() < 0.15, "{}", p.lookups().alpha());
            for i in 0..8 {
                let plan = p.plan(&MATCHING);
                let what = format!("{source}, match {i}: {plan:?}");
                if i % 4 == 3 {
                    assert!(
                        matches!(&plan, RoundPlan::Lookup { tokens, .. } if tokens == &[9, 7]),
                        "{what}"
                    );
                } else if source == DraftSource::Lookup {
                    // Declined, and no model: the cloud decodes.
                    assert!(is_stream(&plan, 1) && plan.seen().alpha.is_nan(), "{what}");
                } else {
                    // Declined: the policy's round.
                    assert!(
                        matches!(
                            plan,
                            RoundPlan::Model {
                                k: 2,
                                rule: None,
                                ..
                            }
                        ),
                        "{what}"
                    );
                }
            }
        }
    }

    #[test]
    fn lookup_rounds_take_a_paying_match_and_probe_every_fourth_declined_one() {
        let mut l = LookupRounds::new().unwrap();
        assert_eq!(l.alpha(), LOOKUP_PRIOR_ALPHA);
        let state = |alpha| RoundState {
            alpha,
            t_draft_s: 0.0,
            t_verify_base_s: 0.0111,
            t_verify_per_token_s: 0.0021,
            uplink_bps: 10e6,
            downlink_bps: 10e6,
            rtt_s: 0.0,
            uplink_base_bytes: 14.0,
            uplink_bytes_per_token: 2.0,
            downlink_bytes: 19.0,
            draft_power_w: 0.0,
            radio_power_w: 0.0,
            energy_price: 0.0,
            row_price_s: 0.0,
        };
        // α = 0.2: two copied tokens commit 1.24 tokens in 15.3 ms, a plain step 1 in 11.1 ms.
        let losing = state(0.2);
        let taken: Vec<bool> = (0..8).map(|_| l.take(2, &losing, None, 1)).collect();
        assert_eq!(
            taken,
            [false, false, false, true, false, false, false, true]
        );
        // α = 0.65 pays every time, and a taken match restarts the count.
        let paying = state(0.65);
        assert!(!l.take(2, &losing, None, 1));
        assert!(l.take(2, &paying, None, 1));
        let taken: Vec<bool> = (0..4).map(|_| l.take(2, &losing, None, 1)).collect();
        assert_eq!(taken, [false, false, false, true]);
        l.record(2, 2).unwrap();
        assert!(l.alpha() > LOOKUP_PRIOR_ALPHA);
        assert!(l.record(2, 3).is_err());
    }

    #[test]
    fn a_planner_taking_every_match_takes_a_losing_lookup() {
        let mut p =
            planner("fixed:2", DraftSource::Lookup, VerifyRule::Greedy).taking_every_match();
        for _ in 0..20 {
            p.record(&failed_lookup());
        }
        // Weighed, three of four of these matches would be declined (see above).
        assert!(p.lookups().alpha() < 0.15, "{}", p.lookups().alpha());
        for _ in 0..8 {
            let plan = p.plan(&MATCHING);
            assert!(
                matches!(&plan, RoundPlan::Lookup { tokens, .. } if tokens == &[9, 7]),
                "{plan:?}"
            );
        }
        // No match: a plain step, as without it.
        assert!(is_stream(&p.plan(&FRESH), 1));
    }

    #[test]
    fn a_known_alpha_starts_the_estimate_there_and_skips_the_warm_up() {
        let settings = |policy: &str| PlannerSettings {
            policy: parse_policy(policy).unwrap(),
            source: DraftSource::Model,
            lookup: Lookup::default(),
            rule: VerifyRule::Greedy,
            verify_switch: None,
            energy: None,
            load_aware: false,
        };
        // α = 0 known: no K pays, and with the warm-up skipped the first round is a stream.
        let mut p = RoundPlanner::with_known_alpha(settings("ecspec:4:8"), 0.0, prior()).unwrap();
        assert_eq!(p.model_alpha().alpha(), 0.0);
        assert_eq!(
            p.plan(&FRESH),
            RoundPlan::Stream {
                n: 8,
                seen: estimates(0.0, false),
            }
        );
        // Without it the policy drafts its warm-up first.
        let mut cold = planner_with(
            "ecspec:4:8",
            DraftSource::Model,
            VerifyRule::Greedy,
            None,
            AcceptanceEstimator::from_known(0.0).unwrap(),
        );
        assert!(matches!(cold.plan(&FRESH), RoundPlan::Model { k: 1, .. }));
        assert!(RoundPlanner::with_known_alpha(settings("fixed:2"), 1.5, prior()).is_err());
    }

    #[test]
    fn channel_aware_rounds_try_rejection_then_match() {
        let mut p = planner_with(
            "fixed:4",
            DraftSource::Model,
            VerifyRule::Rejection,
            Some(VerifySelector::new(8, 16)),
            AcceptanceEstimator::default(),
        );
        // Both rules start stale: rejection is explored first, then match; each round is
        // weighed at its own rule's bytes.
        assert_eq!(
            p.plan(&FRESH),
            RoundPlan::Model {
                k: 4,
                stop: None,
                rule: Some(RoundRule::Rejection),
                seen: estimates(0.5, true),
            }
        );
        assert_eq!(
            p.plan(&FRESH),
            RoundPlan::Model {
                k: 4,
                stop: None,
                rule: Some(RoundRule::Match),
                seen: estimates(0.5, false),
            }
        );
        assert!(p.switches_rule());
    }

    #[test]
    fn a_draft_known_to_fail_streams_probes_and_backs_off() {
        // α = 0 known and the warm-up skipped, as a family's measured α does.
        let mut p = planner_with(
            "ecspec:4:8",
            DraftSource::Model,
            VerifyRule::Greedy,
            None,
            AcceptanceEstimator::from_known(0.0).unwrap(),
        );
        p.policy.recall(&PolicyMemory {
            drafted_tokens: 16,
            streaming: false,
            stream_len: 0,
        });
        let seen = estimates(0.0, false);
        assert_eq!(p.plan(&FRESH), RoundPlan::Stream { n: 8, seen });
        // After a stream, one probe round of the best K (1 at α = 0)…
        assert_eq!(
            p.plan(&FRESH),
            RoundPlan::Model {
                k: 1,
                stop: None,
                rule: None,
                seen,
            }
        );
        // …which lost, so the next stream is twice as long.
        assert_eq!(p.plan(&FRESH), RoundPlan::Stream { n: 16, seen });
    }

    #[test]
    fn a_load_aware_planner_smooths_the_clouds_row_price() {
        let mut p = planner("fixed:2", DraftSource::Model, VerifyRule::Greedy);
        let busy = RoundReport {
            looked_up: false,
            drafted: 0,
            row_cost_us: 2000,
            ..failed_lookup()
        };
        p.record(&busy);
        assert_eq!(p.row_price_s(), 0.001);
        p.record(&busy);
        assert_eq!(p.row_price_s(), 0.0015);
        // The policy's K is fixed; the price is in the state it was chosen at.
        assert!(matches!(p.plan(&FRESH), RoundPlan::Model { k: 2, .. }));
        let mut blind = RoundPlanner {
            load_aware: false,
            ..planner("fixed:2", DraftSource::Model, VerifyRule::Greedy)
        };
        blind.record(&busy);
        assert_eq!(blind.row_price_s(), 0.0);
    }
}
