//! One edge–cloud generation: handshake, then draft → send → verdict → commit rounds until
//! the cloud says the sequence is finished. The committed sequence only grows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ecspec_spec::compute::EdgeCompute;
use tokio::time::Instant;

use ecspec_link::LinkCounters;
use ecspec_proto::{Close, DraftBlock, Hello, Message};
use ecspec_spec::acceptance::AcceptanceEstimator;
use ecspec_spec::policy::{DraftLengthPolicy, RoundOutcome};
use ecspec_spec::sampling::SamplingParams;
use ecspec_spec::verify::VerifyRule;
use ecspec_spec::verify_mode::{RoundRule, VerifySelector};
use ecspec_transport::{Connection, TransportError};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::drafter::{DraftError, Drafter, Proposal};
use crate::estimate::RoundEstimator;
use crate::lookup::{
    lookup_pays, DraftSource, Lookup, LOOKUP_PRIOR_ALPHA, LOOKUP_PRIOR_WEIGHT, LOOKUP_PROBE_EVERY,
};

/// How the edge generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Edge drafts, cloud verifies (speculative decoding).
    Speculative,
    /// The cloud decodes alone and streams every token (the autoregressive baseline).
    CloudOnly,
    /// The draft decodes alone on the edge; nothing is verified.
    EdgeOnly,
}

impl Mode {
    /// The name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Speculative => "speculative",
            Mode::CloudOnly => "cloud-only",
            Mode::EdgeOnly => "edge-only",
        }
    }
}

/// Settings of one generation.
pub struct EdgeConfig {
    /// Model family the draft belongs to (checked by the cloud).
    pub family: String,
    /// Draft kind name (`shared-backbone` / `independent`).
    pub draft_kind: String,
    /// Base hash (shared-backbone) or vocabulary hash (independent) of the draft.
    pub compat_hash: String,
    /// Verification rule.
    pub rule: VerifyRule,
    /// Sampling settings.
    pub params: SamplingParams,
    /// Token budget.
    pub max_new_tokens: usize,
    /// Mode.
    pub mode: Mode,
    /// Draft-length policy.
    pub policy: Box<dyn DraftLengthPolicy>,
    /// How long to wait for any cloud frame.
    pub timeout: Duration,
    /// The edge's vocabulary size; the cloud's must match and every token it sends must fit.
    pub vocab_size: usize,
    /// Energy-aware drafting (None: the policy sees no energy).
    pub energy: Option<EnergyControl>,
    /// Channel-aware verification (rejection sessions at temperature > 0): each round is
    /// verified by match or rejection, whichever promises more goodput at the current uplink
    /// rate (design.md §4). None: every round uses `rule`.
    pub verify_switch: Option<VerifySelector>,
    /// Pipelined drafting: while a round is in flight, draft the continuation that assumes it
    /// is accepted in full, and use it when it is ([`Drafter::pre_draft`]).
    pub pipeline: bool,
    /// What earlier requests on this draft learnt (None: start cold). Speculative mode only.
    pub memory: Option<SessionMemory>,
    /// The draft's known acceptance rate α (a shared-backbone family's measured
    /// `draft.acceptance`, valid for every target version since the draft is static): a cold
    /// start, or a request answered by another version than the memory's, starts its estimate
    /// there ([`AcceptanceEstimator::from_known`]) and the policy skips its warm-up. None: an
    /// uninformed start.
    pub acceptance_prior: Option<f64>,
    /// Virtual clock: drafting takes these modelled times (slept on tokio's clock, which the
    /// caller pauses) instead of the measured ones. None: the live clock.
    pub virtual_compute: Option<EdgeCompute>,
    /// Where speculative rounds' drafted tokens come from: the draft model, context lookup
    /// ([`Lookup`], no model compute), or both. A lookup match is taken when
    /// [`crate::lookup::lookup_pays`] says it beats the model's best K (hybrid) and the
    /// policy's cloud stream on the current round state, or as a probe every
    /// [`LOOKUP_PROBE_EVERY`]th declined match; otherwise the round is the policy's (hybrid)
    /// or the cloud decodes alone (lookup). Lookup rounds draft `lookup.draft_len` tokens,
    /// are verified by matching (ids only: for a deterministic draft that is the rejection
    /// rule itself), and are kept out of the model's acceptance estimate and the policy's
    /// feedback.
    pub drafter: DraftSource,
    /// Context-lookup settings (unused with [`DraftSource::Model`]).
    pub lookup: Lookup,
    /// Load-aware speculation: price every row asked of the cloud at the delay one more row
    /// adds to the cloud's other sessions (each verdict's `row_cost_us`, smoothed), so the
    /// edge drafts shorter or streams as a shared cloud fills. No effect on an idle cloud.
    pub load_aware: bool,
}

/// What the edge carries from one request to the next on the same draft: the acceptance
/// evidence and the draft-length policy's state, tagged with the target version they were
/// measured against. [`Summary::memory`] returns the updated memory.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SessionMemory {
    /// Target version the evidence was measured against; a request answered by another version
    /// drops the acceptance evidence (the policy's state is kept).
    pub target_version: String,
    /// Decayed accepted tokens S and rejections F ([`AcceptanceEstimator::evidence`]).
    pub alpha_evidence: (f64, f64),
    /// The policy's memory.
    pub policy: Option<ecspec_spec::policy::PolicyMemory>,
}

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

/// One round as the edge saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRecord {
    /// Round number (1-based).
    pub round: u32,
    /// When the round's verdict arrived, seconds since the request started.
    pub t_s: f64,
    /// Draft length K chosen.
    pub k: usize,
    /// The round's verification rule: `greedy`, `match`, `rejection`, or `none` for a round
    /// that drafted nothing (a cloud-only or streamed step).
    pub verify: &'static str,
    /// Drafted tokens accepted.
    pub accepted: usize,
    /// Where the drafted tokens came from: `model`, `lookup`, or `none` (nothing drafted).
    pub source: &'static str,
    /// Drafting time (s) before the block was sent.
    pub draft_s: f64,
    /// Leading drafted tokens taken from the previous round's pipelined pre-draft.
    pub reused: usize,
    /// Time spent pre-drafting while this round was in flight (s; 0 without pipelining).
    pub pre_draft_s: f64,
    /// Send-to-verdict time (s).
    pub wait_s: f64,
    /// Cloud compute time reported by the cloud (s).
    pub cloud_compute_s: f64,
    /// Uplink / downlink bytes of the round (framing included).
    pub uplink_bytes: u64,
    /// Downlink bytes of the round.
    pub downlink_bytes: u64,
    /// The acceptance rate α the policy was given when it chose K (a lookup round: the
    /// lookups' own α it was weighed at).
    pub alpha_estimate: f64,
    /// The edge's uplink rate estimate when it chose K (bit/s; 10¹² until measured).
    pub uplink_bps_estimate: f64,
    /// The edge's RTT estimate when it chose K (s).
    pub rtt_s_estimate: f64,
    /// Edge energy of the round under a device profile (J), when one was applied.
    pub energy_j: Option<f64>,
}

/// The end-of-run summary (`--json` prints it; fields documented in the README).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Generated text.
    pub text: String,
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// Tokens generated (after the prompt).
    pub generated_tokens: usize,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Verification rounds (one target forward pass each; the prefill is not counted).
    pub rounds: u64,
    /// Target forward passes: prefill + rounds (cloud cost).
    pub target_forward_passes: u64,
    /// Tokens drafted in all rounds.
    pub drafted_tokens: u64,
    /// Drafted tokens accepted.
    pub accepted_tokens: u64,
    /// Tokens committed per verification round (accepted + the target's own token).
    pub mean_accepted_tokens: f64,
    /// accepted_tokens / drafted_tokens (0 when nothing was drafted).
    pub acceptance_rate: f64,
    /// Rounds whose drafts came from context lookup (counted in `rounds` too).
    pub lookup_rounds: u64,
    /// Tokens drafted by context lookup (counted in `drafted_tokens` too).
    pub lookup_drafted_tokens: u64,
    /// Lookup-drafted tokens accepted (counted in `accepted_tokens` too).
    pub lookup_accepted_tokens: u64,
    /// generated_tokens / total_s (tokens/s).
    pub goodput_tok_s: f64,
    /// Time to first token (s), from the request to the first committed token.
    pub ttft_s: f64,
    /// The cloud's compute time of the prefill (s), as its HelloAck reported it.
    pub cloud_prefill_s: f64,
    /// Time per output token after the first (s).
    pub tpot_s: f64,
    /// Wall-clock time of the whole generation (s).
    pub total_s: f64,
    /// Time spent drafting (s).
    pub draft_s: f64,
    /// Bytes the edge sent (application frames, framing included).
    pub uplink_bytes: u64,
    /// Bytes the edge received.
    pub downlink_bytes: u64,
    /// uplink_bytes / generated_tokens.
    pub uplink_bytes_per_token: f64,
    /// downlink_bytes / generated_tokens.
    pub downlink_bytes_per_token: f64,
    /// Mode name.
    pub mode: String,
    /// Verification rule name (`none` when nothing is verified: cloud-only, edge-only).
    pub verify: String,
    /// Draft-length policy name.
    pub draft_len: String,
    /// Model family.
    pub model_family: String,
    /// Target version that verified (from the handshake).
    pub target_version: String,
    /// Per-round records.
    pub round_records: Vec<RoundRecord>,
    /// Edge energy of the whole generation (J) under [`Self::energy_profile`], when applied.
    pub edge_energy_j: Option<f64>,
    /// `edge_energy_j` per generated token (J/token).
    pub energy_per_token_j: Option<f64>,
    /// The device profile the energy was computed with.
    pub energy_profile: Option<String>,
    /// With an energy budget: the budget (J/token) and what the policy's own energy model
    /// charged per committed token (J/token), the quantity the budget constrains.
    pub energy_budget_j_per_token: Option<f64>,
    /// See [`Self::energy_budget_j_per_token`].
    pub budget_spent_j_per_token: Option<f64>,
    /// What this request leaves for the next one (speculative mode).
    #[serde(skip)]
    pub memory: Option<SessionMemory>,
}

/// Errors of a generation. Tokens committed before the error are kept in `partial`.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The connection failed.
    #[error("connection: {0}")]
    Transport(#[from] TransportError),
    /// The cloud refused the session.
    #[error("the cloud refused the session: {0}")]
    Refused(String),
    /// The cloud reported an error.
    #[error("the cloud reported an error: {0}")]
    Cloud(String),
    /// The cloud broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Drafting failed.
    #[error("draft model: {0}")]
    Draft(#[from] DraftError),
}

/// Callback receiving committed tokens as soon as they are committed.
pub type OnCommit<'a> = &'a mut (dyn FnMut(&[u32]) + Send);

fn bytes(link: &Option<LinkCounters>) -> (u64, u64) {
    link.as_ref()
        .map_or((0, 0), |c| (c.uplink_bytes(), c.downlink_bytes()))
}

/// Runs the draft on a blocking thread and hands it back (the model never crosses an await
/// while borrowed).
async fn blocking<T: Send + 'static>(
    mut drafter: Drafter,
    f: impl FnOnce(&mut Drafter) -> Result<T, DraftError> + Send + 'static,
) -> Result<(Drafter, T), EdgeError> {
    let (d, r) = tokio::task::spawn_blocking(move || {
        let r = f(&mut drafter);
        (drafter, r)
    })
    .await
    .map_err(|e| EdgeError::Protocol(format!("draft thread failed: {e}")))?;
    Ok((d, r?))
}

/// Generates from `prompt` over `stream` (TCP or the emulated link; `link` counts its bytes).
/// `drafter` is required in speculative mode. Committed tokens go to `on_commit` as they are
/// committed.
///
/// # Errors
/// [`EdgeError`]; on error the tokens already delivered to `on_commit` stay delivered.
pub async fn generate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    link: Option<LinkCounters>,
    mut cfg: EdgeConfig,
    mut drafter: Option<Drafter>,
    prompt: Vec<u32>,
    on_commit: OnCommit<'_>,
) -> Result<Summary, EdgeError> {
    let t_start = Instant::now();
    let mut conn = Connection::new(stream);
    let speculative = cfg.mode == Mode::Speculative;
    // Where the acceptance estimate starts without (valid) memory.
    let fresh = match cfg.acceptance_prior {
        Some(a) => AcceptanceEstimator::from_known(a)
            .map_err(|e| EdgeError::Protocol(format!("the draft's known acceptance: {e}")))?,
        None => AcceptanceEstimator::default(),
    };
    let mut est = fresh.clone();
    let mut opening = 0u32;
    match (speculative, cfg.memory.as_ref(), cfg.acceptance_prior) {
        (true, Some(m), _) => {
            est = est
                .with_evidence(m.alpha_evidence.0, m.alpha_evidence.1)
                .map_err(|e| EdgeError::Protocol(format!("edge memory: {e}")))?;
            if let Some(p) = &m.policy {
                cfg.policy.recall(p);
            }
            opening = cfg.policy.opening_stream();
        }
        (true, None, Some(_)) => {
            // A known α is evidence already: no warm-up to measure it.
            cfg.policy.recall(&ecspec_spec::policy::PolicyMemory {
                drafted_tokens: ecspec_spec::acceptance::KNOWN_ALPHA_TOKENS as u64,
                streaming: false,
                stream_len: 0,
            });
        }
        _ => {}
    }
    // The rule, sampling settings, budget and prompt through the wire boundary
    // (`ecspec_proto::domain`), then the draft's identity and the mode.
    let session = Hello::for_session(cfg.rule, &cfg.params, cfg.max_new_tokens, prompt.clone())
        .map_err(|e| EdgeError::Protocol(e.to_string()))?;
    let hello = Hello {
        model_family: cfg.family.clone(),
        base_hash: cfg.compat_hash.clone(),
        draft_kind: cfg.draft_kind.clone(),
        autoregressive: cfg.mode == Mode::CloudOnly,
        stream: opening,
        ..session
    };
    conn.write_message(&Message::Hello(hello)).await?;
    // Prefill the draft while the cloud prefills the target (a lookup-only edge never runs it).
    if let (true, true, Some(d)) = (speculative, cfg.drafter.uses_model(), drafter.take()) {
        let p = prompt.clone();
        let (d, ()) = blocking(d, move |d| d.prefill(&p)).await?;
        if let Some(vc) = cfg.virtual_compute {
            tokio::time::sleep(vc.prefill(prompt.len())).await;
        }
        drafter = Some(d);
    }
    let ack = match conn.read_message(Some(cfg.timeout)).await? {
        Some((_, Message::HelloAck(a))) => a,
        Some((_, Message::ErrorReply(e))) => return Err(EdgeError::Cloud(e.message)),
        Some((_, other)) => {
            return Err(EdgeError::Protocol(format!(
                "expected HelloAck, got {:?}",
                other.message_type()
            )))
        }
        None => {
            return Err(EdgeError::Protocol(
                "the cloud closed the connection during the handshake".into(),
            ))
        }
    };
    if !ack.accepted {
        let reason = if ack.reason.is_empty() {
            "(no reason given)".to_string()
        } else {
            ack.reason
        };
        return Err(EdgeError::Refused(reason));
    }
    let vocab = cfg.vocab_size;
    if ack.vocab_size as usize != vocab {
        return Err(EdgeError::Protocol(format!(
            "the cloud's vocabulary has {} tokens, the edge's {vocab}",
            ack.vocab_size
        )));
    }
    if ack.first_token as usize >= vocab {
        return Err(EdgeError::Protocol(format!(
            "first token {} is outside the vocabulary",
            ack.first_token
        )));
    }
    let ttft = t_start.elapsed();
    let mut committed = prompt.clone();
    committed.push(ack.first_token);
    on_commit(&[ack.first_token]);
    let mut finished = ack.finished;
    if cfg
        .memory
        .as_ref()
        .is_some_and(|m| m.target_version != ack.target_version)
    {
        // Another target version: its acceptance must be measured afresh (from the draft's
        // known α, when there is one).
        est = fresh;
    }
    let mut timing = RoundEstimator::new(
        0.01,
        ack.prefill_us as f64 * 1e-6 / prompt.len().max(1) as f64 * 4.0,
    );
    let mut records = Vec::new();
    // Lookup rounds, drafted and accepted tokens, and their α (apart from the model's).
    let mut lookups = (0u64, 0u64, 0u64);
    let mut lookup_est = AcceptanceEstimator::new(LOOKUP_PRIOR_ALPHA, LOOKUP_PRIOR_WEIGHT, 0.95)
        .map_err(|e| EdgeError::Protocol(e.to_string()))?;
    // Matches declined in a row since the last lookup round (a probe is due at the limit).
    let mut declined = 0u32;
    // The cloud's row price (s/row), smoothed over verdicts; 0 unless load-aware.
    let mut row_price = 0.0f64;
    let mut draft_total = Duration::ZERO;
    let mut round = 0u32;
    // Verdicts still to come from a stream the edge asked for (K = 0 with stream > 1, or the
    // opening stream of the Hello).
    let mut streaming = opening;
    while !finished {
        round += 1;
        let (up0, down0) = bytes(&link);
        let old_len = committed.len();
        let mut seen = (f64::NAN, f64::NAN, f64::NAN);
        let continuing = streaming > 0;
        let mut stream = 0u32;
        // With channel-aware verification: the rule chosen for this round.
        let mut round_rule = None;
        let energy = |mut st: ecspec_spec::policy::RoundState| {
            st.row_price_s = row_price;
            if let Some(e) = &cfg.energy {
                st.draft_power_w = e.draft_power_w;
                st.radio_power_w = e.radio_power_w;
                // Q/V; bounded so a zero-V budget cannot make every score -inf.
                st.energy_price = e.budget.as_ref().map_or(0.0, |b| b.multiplier().min(1e9));
            }
            st
        };
        let rejection = cfg.rule == VerifyRule::Rejection;
        // Context lookup first: free to draft; taken when it promises more than the model or
        // a cloud stream would (channel-aware, like the draft length).
        let mut copied = Vec::new();
        if speculative && !continuing && cfg.drafter.uses_lookup() {
            copied = cfg.lookup.propose(&committed, cfg.lookup.draft_len);
            if !copied.is_empty() {
                let mut l = energy(timing.state(lookup_est.alpha(), false));
                l.t_draft_s = 0.0;
                let m = energy(timing.state(est.alpha(), rejection));
                // The model's side at the default policy's K_max (`ecspec:8`).
                let model = cfg.drafter.uses_model().then_some((&m, 8));
                if lookup_pays(&l, copied.len(), model, cfg.policy.stream_len().max(1))
                    || declined + 1 >= LOOKUP_PROBE_EVERY
                {
                    declined = 0;
                    seen = (l.alpha, l.uplink_bps, l.rtt_s);
                } else {
                    declined += 1;
                    copied.clear();
                }
            }
        }
        let looked_up = !copied.is_empty();
        let (k, proposal) = if looked_up {
            if let Some(d) = drafter.as_mut() {
                d.skip_round()?;
            }
            (copied.len(), Proposal::copied(copied))
        } else if speculative && !continuing && cfg.drafter.uses_model() {
            let d = drafter.take().ok_or_else(|| {
                EdgeError::Protocol("speculative mode needs a draft model".into())
            })?;
            let st = match cfg.verify_switch.as_mut() {
                Some(sel) => {
                    let m = energy(timing.state(sel.alpha(RoundRule::Match), false));
                    let r = energy(timing.state(sel.alpha(RoundRule::Rejection), true));
                    let pick = sel.choose(&m, &r);
                    round_rule = Some(pick);
                    if pick == RoundRule::Match {
                        m
                    } else {
                        r
                    }
                }
                None => energy(timing.state(est.alpha(), rejection)),
            };
            seen = (st.alpha, st.uplink_bps, st.rtt_s);
            let cap = cfg.policy.choose(&st);
            let stop = cfg.policy.stop_rule();
            let c = committed.clone();
            let (d, mut p) = blocking(d, move |d| d.propose_until(&c, cap, stop)).await?;
            drafter = Some(d);
            if let Some(vc) = cfg.virtual_compute {
                // Pipelined tokens were paid for while the previous round was in flight.
                p.elapsed = vc.draft(p.tokens.len() - p.reused);
                tokio::time::sleep(p.elapsed).await;
            }
            if cap == 0 {
                stream = cfg.policy.stream_len();
            }
            // A stop rule may end the round's drafting below the cap.
            (p.tokens.len(), p)
        } else {
            // Cloud-only, a streamed verdict, or a lookup-only round without a lookup: the
            // cloud decodes alone, streaming as the policy would.
            if speculative && !continuing {
                stream = cfg.policy.stream_len();
            }
            (0, Default::default())
        };
        draft_total += proposal.elapsed;
        let t_send = Instant::now();
        if cfg.mode != Mode::CloudOnly && !continuing {
            let block = DraftBlock {
                round,
                tokens: proposal.tokens.clone(),
                // A match round of a rejection session sends ids only.
                dists: if round_rule == Some(RoundRule::Match) {
                    Vec::new()
                } else {
                    proposal.dists.iter().map(Into::into).collect()
                },
                stream,
            };
            conn.write_message(&Message::DraftBlock(block)).await?;
        }
        streaming = if continuing {
            streaming - 1
        } else {
            stream.saturating_sub(1)
        };
        // Pipelining: draft on while the block is in flight; stopped when the verdict is in.
        let pre = match (cfg.pipeline, drafter.take(), proposal.tokens.last()) {
            (true, Some(mut d), Some(&last)) if !continuing && !looked_up => {
                let stop = Arc::new(AtomicBool::new(false));
                let flag = Arc::clone(&stop);
                let n = k;
                let task = tokio::task::spawn_blocking(move || {
                    let t0 = std::time::Instant::now();
                    let r = d.pre_draft(last, n, &flag);
                    (d, r, t0.elapsed())
                });
                Some((stop, task))
            }
            (_, d, _) => {
                drafter = d;
                None
            }
        };
        let v = match conn.read_message(Some(cfg.timeout)).await? {
            Some((_, Message::Verdict(v))) => v,
            Some((_, Message::ErrorReply(e))) => return Err(EdgeError::Cloud(e.message)),
            Some((_, other)) => {
                return Err(EdgeError::Protocol(format!(
                    "expected Verdict, got {:?}",
                    other.message_type()
                )))
            }
            None => {
                return Err(EdgeError::Protocol(
                    "the cloud closed the connection mid-generation".into(),
                ))
            }
        };
        let wait = t_send.elapsed();
        let mut pre_draft_s = 0.0;
        if let Some((stop, task)) = pre {
            stop.store(true, Ordering::Relaxed);
            let (d, r, t) = task
                .await
                .map_err(|e| EdgeError::Protocol(format!("draft thread failed: {e}")))?;
            let drafted = r?;
            pre_draft_s = t.as_secs_f64();
            if let Some(vc) = cfg.virtual_compute {
                // The virtual clock stands still while the draft runs, so the pre-draft always
                // finishes; only what it would overrun the wait by delays the edge.
                let modelled = vc.draft(drafted);
                if let Some(extra) = modelled.checked_sub(wait) {
                    tokio::time::sleep(extra).await;
                }
                pre_draft_s = modelled.as_secs_f64();
            }
            drafter = Some(d);
        }
        if v.round != round {
            return Err(EdgeError::Protocol(format!(
                "verdict for round {}, expected round {round}",
                v.round
            )));
        }
        if v.next_token as usize >= vocab {
            return Err(EdgeError::Protocol(format!(
                "next token {} is outside the vocabulary",
                v.next_token
            )));
        }
        let a = v.accepted as usize;
        if a > k {
            return Err(EdgeError::Protocol(format!(
                "verdict accepts {a} of {k} drafted tokens"
            )));
        }
        let mut new: Vec<u32> = proposal.tokens[..a].to_vec();
        new.push(v.next_token);
        committed.extend_from_slice(&new);
        on_commit(&new);
        finished = v.finished;
        if cfg.load_aware {
            row_price = 0.5 * row_price + 0.5 * f64::from(v.row_cost_us) * 1e-6;
        }
        if looked_up {
            lookups.0 += 1;
            lookups.1 += k as u64;
            lookups.2 += a as u64;
            let _ = lookup_est.record(k, a);
        } else {
            if let Some(d) = drafter.as_mut() {
                d.rollback(old_len, k, a, v.next_token)?;
            }
            let _ = est.record(k, a);
            if let (Some(sel), Some(r)) = (cfg.verify_switch.as_mut(), round_rule) {
                let _ = sel.record(r, k, a);
            }
        }
        let sent_dists =
            k > 0 && !proposal.dists.is_empty() && round_rule != Some(RoundRule::Match);
        if let Some(e) = cfg.energy.as_mut() {
            let d = proposal.elapsed.as_secs_f64() + pre_draft_s;
            let joules = e.draft_power_w * d + e.radio_power_w * (d + wait.as_secs_f64());
            if let Some(b) = e.budget.as_mut() {
                // Finite and ≥ 0 by construction.
                let _ = b.record(joules, a as u64 + 1);
            }
        }
        if !continuing && !looked_up {
            cfg.policy.observe(&RoundOutcome {
                drafted: k,
                accepted: a,
                committed: a + 1,
                round_s: (proposal.elapsed + wait).as_secs_f64(),
            });
        }
        let (up1, down1) = bytes(&link);
        let rec = RoundRecord {
            round,
            t_s: t_start.elapsed().as_secs_f64(),
            k,
            verify: match (k, round_rule) {
                (0, _) => "none",
                // Copied tokens go up as ids only: a sampled rejection session verifies them
                // by match.
                (_, _) if looked_up && rejection && !cfg.params.is_greedy() => "match",
                (_, Some(RoundRule::Match)) => "match",
                (_, Some(RoundRule::Rejection)) => "rejection",
                (_, None) if cfg.params.is_greedy() => "greedy",
                (_, None) => cfg.rule.name(),
            },
            accepted: a,
            source: match (k, looked_up) {
                (0, _) => "none",
                (_, true) => "lookup",
                (_, false) => "model",
            },
            draft_s: proposal.elapsed.as_secs_f64(),
            reused: proposal.reused,
            pre_draft_s,
            wait_s: wait.as_secs_f64(),
            cloud_compute_s: v.compute_us as f64 * 1e-6,
            uplink_bytes: up1 - up0,
            downlink_bytes: down1 - down0,
            alpha_estimate: seen.0,
            uplink_bps_estimate: seen.1,
            rtt_s_estimate: seen.2,
            energy_j: None,
        };
        // A streamed verdict after the first arrives one decode step after the previous: it
        // says nothing about the round-trip, so only the stream's first verdict is learnt from.
        if !continuing {
            // Drafting time per token is learnt from tokens drafted now, not pipelined or
            // looked-up ones.
            let draft_s = if rec.reused < k && !looked_up {
                rec.draft_s * k as f64 / (k - rec.reused) as f64
            } else {
                timing.t_draft() * k as f64
            };
            timing.observe(
                k,
                draft_s,
                rec.uplink_bytes as f64,
                rec.downlink_bytes as f64,
                rec.wait_s,
                rec.cloud_compute_s,
                sent_dists,
            );
        }
        records.push(rec);
    }
    let total = t_start.elapsed();
    let _ = conn.write_message(&Message::Close(Close {})).await;
    let _ = conn.shutdown().await;
    if let Some(c) = &link {
        // Let the emulated link deliver the Close so the byte counts are final.
        let _ = tokio::time::timeout(Duration::from_secs(2), c.closed()).await;
    }
    let generated = committed.len() - prompt.len();
    let tokens = committed[prompt.len()..].to_vec();
    let (up, down) = bytes(&link);
    let rounds = est.rounds() + lookups.0;
    let (drafted, accepted) = (est.drafted() + lookups.1, est.accepted() + lookups.2);
    let memory = speculative.then(|| SessionMemory {
        target_version: ack.target_version.clone(),
        alpha_evidence: est.evidence(),
        policy: cfg.policy.remember(),
    });
    Ok(Summary {
        memory,
        text: String::new(),
        tokens,
        generated_tokens: generated,
        prompt_tokens: prompt.len(),
        rounds,
        target_forward_passes: rounds + 1,
        drafted_tokens: drafted,
        accepted_tokens: accepted,
        mean_accepted_tokens: if rounds > 0 {
            (generated as f64 - 1.0) / rounds as f64
        } else {
            0.0
        },
        acceptance_rate: if drafted > 0 {
            accepted as f64 / drafted as f64
        } else {
            0.0
        },
        lookup_rounds: lookups.0,
        lookup_drafted_tokens: lookups.1,
        lookup_accepted_tokens: lookups.2,
        goodput_tok_s: generated as f64 / total.as_secs_f64(),
        ttft_s: ttft.as_secs_f64(),
        cloud_prefill_s: f64::from(ack.prefill_us) * 1e-6,
        tpot_s: if generated > 1 {
            (total - ttft).as_secs_f64() / (generated - 1) as f64
        } else {
            0.0
        },
        total_s: total.as_secs_f64(),
        draft_s: draft_total.as_secs_f64(),
        uplink_bytes: up,
        downlink_bytes: down,
        uplink_bytes_per_token: up as f64 / generated.max(1) as f64,
        downlink_bytes_per_token: down as f64 / generated.max(1) as f64,
        mode: cfg.mode.as_str().into(),
        verify: if speculative && cfg.verify_switch.is_some() {
            "auto".into()
        } else if speculative {
            cfg.rule.name().into()
        } else {
            "none".into()
        },
        draft_len: if speculative {
            cfg.policy.name()
        } else {
            "none".into()
        },
        model_family: std::mem::take(&mut cfg.family),
        target_version: ack.target_version,
        round_records: records,
        edge_energy_j: None,
        energy_per_token_j: None,
        energy_profile: None,
        energy_budget_j_per_token: cfg
            .energy
            .as_ref()
            .and_then(|e| e.budget.as_ref())
            .map(|b| b.joules_per_token()),
        budget_spent_j_per_token: cfg
            .energy
            .as_ref()
            .and_then(|e| e.budget.as_ref())
            .filter(|b| b.committed_tokens() > 0)
            .map(|b| b.spent_j() / b.committed_tokens() as f64),
    })
}

/// Edge-only decoding: the draft alone, no cloud, nothing verified.
///
/// # Errors
/// Draft model errors.
pub fn generate_edge_only(
    drafter: &mut Drafter,
    prompt: &[u32],
    max_new_tokens: usize,
    stop_tokens: &[u32],
    on_commit: OnCommit<'_>,
) -> Result<(Vec<u32>, Duration, Duration), DraftError> {
    let t0 = std::time::Instant::now();
    let mut committed = prompt.to_vec();
    let mut ttft = Duration::ZERO;
    for i in 0..max_new_tokens {
        let x = drafter.next_token(&committed)?;
        if i == 0 {
            ttft = t0.elapsed();
        }
        committed.push(x);
        on_commit(&[x]);
        if stop_tokens.contains(&x) {
            break;
        }
    }
    Ok((committed[prompt.len()..].to_vec(), ttft, t0.elapsed()))
}
