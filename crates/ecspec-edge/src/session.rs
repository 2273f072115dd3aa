//! One edge–cloud generation, as a short state machine: handshake (Hello, draft prefill,
//! HelloAck) → per round: plan ([`RoundPlanner`]) → draft → send → await the verdict →
//! commit → record, until the cloud says the sequence is finished; then Close and the
//! [`Summary`].
//!
//! **Where tokens are accepted:** `EdgeSession::commit` appends the verdict's accepted drafts
//! and the target's own token to the committed sequence, hands them to the caller and rolls the
//! draft back; nothing else writes the committed sequence, which only grows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ecspec_link::LinkCounters;
use ecspec_model::DraftKind;
use ecspec_proto::{Close, DraftBlock, ErrorCode, Hello, HelloAck, Message, Verdict};
use ecspec_spec::acceptance::AcceptanceEstimator;
use ecspec_spec::compute::EdgeCompute;
use ecspec_spec::policy::{DraftLengthPolicy, StopRule};
use ecspec_spec::sampling::SamplingParams;
use ecspec_spec::verify::VerifyRule;
use ecspec_spec::verify_mode::{RoundRule, VerifySelector};
use ecspec_transport::{Connection, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bytes::{totals, ByteCounter};
use crate::drafter::{DraftError, Drafter, Proposal};
use crate::estimate::RoundEstimator;
use crate::lookup::{DraftSource, Lookup};
use crate::plan::{PlanEstimates, PlannerSettings, RoundPlan, RoundPlanner, RoundReport};
use crate::summary::{RoundSource, RoundVerify, SummaryBuilder, SummaryLabels};

mod resume;

pub use resume::{Connect, Resilience};

pub use crate::mode::Mode;
pub use crate::plan::EnergyControl;
pub use crate::summary::{FinishReason, RoundRecord, SessionMemory, Summary};

/// Settings of one generation.
pub struct EdgeConfig {
    /// Model family the draft belongs to (checked by the cloud).
    pub family: String,
    /// Draft kind (the Hello carries its name, `shared-backbone` / `independent`).
    pub draft_kind: DraftKind,
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
    /// ([`Lookup`], no model compute), or both. The [`RoundPlanner`] takes a lookup match when
    /// [`crate::lookup::lookup_pays`] says it beats the model's best K (hybrid) and the
    /// policy's cloud stream on the current round state, or as a probe every
    /// [`crate::lookup::LOOKUP_PROBE_EVERY`]th declined match; otherwise the round is the
    /// policy's (hybrid) or the cloud decodes alone (lookup). Lookup rounds draft
    /// `lookup.draft_len` tokens, are verified by matching (ids only: for a deterministic draft
    /// that is the rejection rule itself), and are kept out of the model's acceptance estimate
    /// and the policy's feedback.
    pub drafter: DraftSource,
    /// Context-lookup settings (unused with [`DraftSource::Model`]).
    pub lookup: Lookup,
    /// Load-aware speculation: price every row asked of the cloud at the delay one more row
    /// adds to the cloud's other sessions (each verdict's `row_cost_us`, smoothed), so the
    /// edge drafts shorter or streams as a shared cloud fills. No effect on an idle cloud.
    pub load_aware: bool,
    /// Token for a cloud that requires one (sent in the Hello; use TLS, it is a secret).
    pub auth_token: Option<String>,
    /// K_max the edge asks for in the Hello (0: the cloud's cap); every block is cut to the
    /// K_max the cloud answers.
    pub max_block_tokens: u32,
    /// Set by the caller (typically from its commit callback, when a stop string appears) to
    /// end the generation after the tokens committed so far: the edge sends Close instead of
    /// another round, and the summary's finish reason is [`FinishReason::Stop`].
    pub stop: StopSignal,
}

/// A flag the caller raises to end a generation early ([`EdgeConfig::stop`]); clones share it.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// Ends the generation after the tokens committed so far.
    pub fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`Self::raise`] was called.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Errors of a generation. Tokens already delivered to the commit callback stay delivered.
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
    /// The cloud is full (its session or KV-cache budget): try again later.
    #[error("the cloud is busy: {message}")]
    Busy {
        /// The cloud's words.
        message: String,
        /// When a retry may succeed (the ErrorReply's `retry_after_ms`; None: not said).
        retry_after: Option<Duration>,
    },
    /// The cloud broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Drafting failed.
    #[error("draft model: {0}")]
    Draft(#[from] DraftError),
    /// The cloud closed the connection before the generation ended.
    #[error("the cloud closed the connection mid-generation")]
    Closed,
    /// The connection was lost and every reconnection attempt failed.
    #[error("lost the connection to the cloud; {attempts} reconnection attempts over {waited_s:.1} s failed, the last with: {last}")]
    Reconnect {
        /// Attempts made.
        attempts: u32,
        /// Seconds spent trying.
        waited_s: f64,
        /// The last attempt's error.
        last: Box<EdgeError>,
    },
}

/// Callback receiving committed tokens as soon as they are committed.
pub type OnCommit<'a> = &'a mut (dyn FnMut(&[u32]) + Send);

/// The draft's prior drafting time per token (s) until the first round measures it.
const PRIOR_DRAFT_S_PER_TOKEN: f64 = 0.01;

/// The prior verification pass, in prompt-token prefill times (the HelloAck's prefill time per
/// prompt token, times this), until rounds measure it.
const PRIOR_VERIFY_IN_PREFILL_TOKENS: f64 = 4.0;

/// How long the edge waits, after its Close, for the link to deliver and count everything.
const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// Tokens asked of the cloud per stream once the draft's window is full.
const STREAM_PAST_DRAFT_WINDOW: u32 = 64;

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
/// committed. [`generate_counted`] with the link emulator's counters.
///
/// # Errors
/// [`EdgeError`]; on error the tokens already delivered to `on_commit` stay delivered.
pub async fn generate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    link: Option<LinkCounters>,
    cfg: EdgeConfig,
    drafter: Option<Drafter>,
    prompt: Vec<u32>,
    on_commit: OnCommit<'_>,
) -> Result<Summary, EdgeError> {
    let counter = link.as_ref().map(|c| c as &dyn ByteCounter);
    generate_counted(stream, counter, cfg, drafter, prompt, on_commit).await
}

/// Generates from `prompt` over `stream`, reading the bytes on the wire from `counter` (None:
/// every byte figure is 0). Otherwise as [`generate`].
///
/// # Errors
/// [`EdgeError`]; on error the tokens already delivered to `on_commit` stay delivered.
pub async fn generate_counted<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    counter: Option<&dyn ByteCounter>,
    cfg: EdgeConfig,
    drafter: Option<Drafter>,
    prompt: Vec<u32>,
    on_commit: OnCommit<'_>,
) -> Result<Summary, EdgeError> {
    generate_inner(stream, counter, cfg, drafter, prompt, on_commit, None).await
}

/// [`generate_counted`] that survives a lost connection: when the link drops, the cloud
/// closes or restarts mid-generation, the edge reconnects through `resilience` (with backoff)
/// and re-opens the session with every committed token as the prompt; the cloud prefills them
/// and continues. Nothing committed is lost or repeated, and the text is the uninterrupted
/// run's (greedy, or seeded match/cloud-only: the target's draws are keyed by position). The
/// summary counts `reconnects` and the time they took.
///
/// # Errors
/// As [`generate`]; [`EdgeError::Reconnect`] when every attempt after a loss failed.
pub async fn generate_resilient<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    counter: Option<&dyn ByteCounter>,
    cfg: EdgeConfig,
    drafter: Option<Drafter>,
    prompt: Vec<u32>,
    on_commit: OnCommit<'_>,
    resilience: Resilience<S>,
) -> Result<Summary, EdgeError> {
    generate_inner(
        stream,
        counter,
        cfg,
        drafter,
        prompt,
        on_commit,
        Some(resilience),
    )
    .await
}

async fn generate_inner<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    counter: Option<&dyn ByteCounter>,
    mut cfg: EdgeConfig,
    mut drafter: Option<Drafter>,
    prompt: Vec<u32>,
    on_commit: OnCommit<'_>,
    resilience: Option<Resilience<S>>,
) -> Result<Summary, EdgeError> {
    let t_start = Instant::now();
    let mut conn = Connection::new(stream);
    let speculative = cfg.mode == Mode::Speculative;
    let start = Start::new(&mut cfg, speculative)?;
    let first_hello = hello(&cfg, &prompt, start.opening)?;
    // A Hello lost with its connection is sent again on the next one (see `ack` below).
    let sent = conn
        .write_message(&Message::Hello(first_hello.clone()))
        .await
        .map(|_| ())
        .map_err(EdgeError::from);
    // Prefill the draft while the cloud prefills the target (a lookup-only edge never runs it).
    if let (true, true, Some(d)) = (speculative, cfg.drafter.uses_model(), drafter.take()) {
        let p = prompt.clone();
        let (d, ()) = blocking(d, move |d| d.prefill(&p)).await?;
        if let Some(vc) = cfg.virtual_compute {
            tokio::time::sleep(vc.prefill(prompt.len())).await;
        }
        drafter = Some(d);
    }
    let mut resilience = resilience;
    let first = match sent {
        Ok(()) => await_ack(&mut conn, cfg.timeout, cfg.vocab_size).await,
        Err(e) => Err(e),
    };
    let (ack, lost) = match first {
        Ok(ack) => (ack, None),
        Err(e) => {
            let (c, ack, lost) = resume::reopen_handshake(
                resilience.as_mut(),
                e,
                &first_hello,
                (cfg.timeout, cfg.vocab_size),
            )
            .await?;
            conn = c;
            (ack, Some(lost))
        }
    };
    let ttft = t_start.elapsed();
    on_commit(&[ack.first_token]);
    let opened = Opened {
        ack,
        start,
        t_start,
        ttft,
    };
    let mut session = EdgeSession::new(conn, counter, cfg, drafter, prompt, on_commit, opened)?;
    session.hello = first_hello;
    session.resilience = resilience;
    if let Some(lost) = lost {
        session.summary.reconnected(lost);
    }
    while !session.finished {
        if let Err(e) = session.round().await {
            session.recover(e).await?;
        }
    }
    Ok(session.close().await)
}

/// Where a request's acceptance estimate and policy start, and the stream the Hello asks for.
struct Start {
    /// The estimate without (valid) memory: the draft's known α, else uninformed.
    fresh: AcceptanceEstimator,
    /// The estimate with the memory's evidence, if any.
    est: AcceptanceEstimator,
    /// Tokens the cloud streams right after the handshake.
    opening: u32,
}

impl Start {
    /// Reads the memory and the known α into the estimate and `cfg.policy`.
    fn new(cfg: &mut EdgeConfig, speculative: bool) -> Result<Self, EdgeError> {
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
        Ok(Self {
            fresh,
            est,
            opening,
        })
    }
}

/// What the handshake established.
struct Opened {
    ack: HelloAck,
    start: Start,
    /// When the request started, and when its first token (the HelloAck's) was committed.
    t_start: Instant,
    ttft: Duration,
}

/// The session's Hello: the rule, sampling settings, budget and prompt through the wire
/// boundary ([`Hello::for_session`]), then the draft's identity and the mode.
fn hello(cfg: &EdgeConfig, prompt: &[u32], opening: u32) -> Result<Hello, EdgeError> {
    let session = Hello::for_session(cfg.rule, &cfg.params, cfg.max_new_tokens, prompt.to_vec())
        .map_err(|e| EdgeError::Protocol(e.to_string()))?;
    Ok(Hello {
        model_family: cfg.family.clone(),
        base_hash: cfg.compat_hash.clone(),
        draft_kind: cfg.draft_kind.as_str().to_owned(),
        autoregressive: cfg.mode == Mode::CloudOnly,
        stream: opening,
        auth_token: cfg.auth_token.clone().unwrap_or_default(),
        max_block_tokens: cfg.max_block_tokens,
        ..session
    })
}

/// Reads the HelloAck: refused, or accepted with the edge's vocabulary size and a first token
/// inside it.
async fn await_ack<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    timeout: Duration,
    vocab: usize,
) -> Result<HelloAck, EdgeError> {
    let ack = match conn.read_message(Some(timeout)).await? {
        Some((_, Message::HelloAck(a))) => a,
        Some((_, Message::ErrorReply(e))) if e.code == ErrorCode::Busy as i32 => {
            return Err(EdgeError::Busy {
                message: e.message,
                retry_after: (e.retry_after_ms > 0)
                    .then(|| Duration::from_millis(e.retry_after_ms.into())),
            })
        }
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
    Ok(ack)
}

/// What the session keeps of its [`EdgeConfig`] once the planner has taken the rest.
struct Settings {
    mode: Mode,
    speculative: bool,
    /// Stream plans pass through the draft model (which drops a confirmed pre-draft).
    uses_model: bool,
    rule: VerifyRule,
    greedy: bool,
    timeout: Duration,
    vocab: usize,
    pipeline: bool,
    virtual_compute: Option<EdgeCompute>,
    family: String,
    /// The session's K_max agreed in the handshake (the HelloAck's; 0 from an older cloud:
    /// no cap beyond the policy's).
    k_max: usize,
    /// The caller's stop flag.
    stop: StopSignal,
    /// Tokens that end generation (the HelloAck's).
    eos: Vec<u32>,
    /// The cloud's budget when it granted fewer tokens than asked, and whether the target's
    /// context window was the cut (the last HelloAck's).
    grant: Option<(usize, bool)>,
}

/// One round's block, drafted and ready to send.
struct Block {
    proposal: Proposal,
    /// Copied from the context.
    looked_up: bool,
    /// Channel-aware verification's rule for a model round.
    rule: Option<RoundRule>,
    /// Tokens asked of the cloud on its own (K = 0; 0: none asked).
    stream: u32,
    seen: PlanEstimates,
}

impl Block {
    fn k(&self) -> usize {
        self.proposal.tokens.len()
    }
}

/// A pre-draft running while a round is in flight: its stop flag and its thread.
type PreDraft = (
    Arc<AtomicBool>,
    JoinHandle<(Drafter, Result<usize, DraftError>, Duration)>,
);

/// A generation past its handshake.
struct EdgeSession<'a, S> {
    conn: Connection<S>,
    counter: Option<&'a dyn ByteCounter>,
    on_commit: OnCommit<'a>,
    drafter: Option<Drafter>,
    planner: RoundPlanner,
    summary: SummaryBuilder,
    set: Settings,
    /// Prompt and every committed token; only grows.
    committed: Vec<u32>,
    finished: bool,
    round: u32,
    /// Rounds before the current connection's session: a re-opened cloud-only session numbers
    /// its verdicts from 1 again (a speculative one echoes the edge's block numbers).
    round_base: u32,
    /// Verdicts still to come from a stream the edge asked for (K = 0 with stream > 1, or the
    /// opening stream of the Hello).
    streaming: u32,
    /// The session's first Hello: a re-opened session sends it again with the committed
    /// tokens as its prompt.
    hello: Hello,
    /// The token budget of the whole generation.
    max_new: usize,
    /// How to reconnect after a lost connection (None: a loss ends the generation).
    resilience: Option<Resilience<S>>,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> EdgeSession<'a, S> {
    /// The session after the handshake `opened`, whose first token follows `prompt`.
    fn new(
        conn: Connection<S>,
        counter: Option<&'a dyn ByteCounter>,
        cfg: EdgeConfig,
        drafter: Option<Drafter>,
        prompt: Vec<u32>,
        on_commit: OnCommit<'a>,
        opened: Opened,
    ) -> Result<Self, EdgeError> {
        let Opened {
            ack,
            start,
            t_start,
            ttft,
        } = opened;
        let prompt_tokens = prompt.len();
        let mut committed = prompt;
        committed.push(ack.first_token);
        let est = if cfg
            .memory
            .as_ref()
            .is_some_and(|m| m.target_version != ack.target_version)
        {
            // Another target version: its acceptance must be measured afresh (from the draft's
            // known α, when there is one).
            start.fresh
        } else {
            start.est
        };
        let timing = RoundEstimator::new(
            PRIOR_DRAFT_S_PER_TOKEN,
            ack.prefill_us as f64 * 1e-6 / prompt_tokens.max(1) as f64
                * PRIOR_VERIFY_IN_PREFILL_TOKENS,
        );
        let speculative = cfg.mode == Mode::Speculative;
        let max_new = cfg.max_new_tokens;
        let set = Settings {
            mode: cfg.mode,
            speculative,
            uses_model: speculative && cfg.drafter.uses_model(),
            rule: cfg.rule,
            greedy: cfg.params.is_greedy(),
            timeout: cfg.timeout,
            vocab: cfg.vocab_size,
            pipeline: cfg.pipeline,
            virtual_compute: cfg.virtual_compute,
            family: cfg.family,
            k_max: match ack.max_block_tokens {
                0 => usize::MAX,
                k => k as usize,
            },
            stop: cfg.stop,
            eos: ack.eos_token_ids.clone(),
            grant: grant(&ack, 0),
        };
        let settings = PlannerSettings {
            policy: cfg.policy,
            source: cfg.drafter,
            lookup: cfg.lookup,
            rule: cfg.rule,
            verify_switch: cfg.verify_switch,
            energy: cfg.energy,
            load_aware: cfg.load_aware,
        };
        let planner = RoundPlanner::new(settings, est, timing)
            .map_err(|e| EdgeError::Protocol(e.to_string()))?;
        Ok(Self {
            conn,
            counter,
            on_commit,
            drafter,
            planner,
            summary: SummaryBuilder::new(
                t_start,
                ttft,
                prompt_tokens,
                ack.prefill_us,
                ack.target_version,
            ),
            finished: ack.finished || set.stop.is_raised(),
            set,
            committed,
            round: 0,
            round_base: 0,
            streaming: start.opening,
            hello: Hello::default(),
            max_new,
            resilience: None,
        })
    }

    /// One round: plan → draft → send → await the verdict → commit.
    async fn round(&mut self) -> Result<(), EdgeError> {
        self.round += 1;
        let before = totals(self.counter);
        let old_len = self.committed.len();
        let continuing = self.streaming > 0;
        let plan = (self.set.speculative && !continuing)
            .then(|| self.planner.plan(&self.committed).capped(self.set.k_max))
            .map(|p| self.past_draft_window(p));
        let block = self.draft(plan).await?;
        self.summary.drafted(block.proposal.elapsed);
        let t_send = Instant::now();
        if self.set.mode != Mode::CloudOnly && !continuing {
            if let Err(e) = self.send(&block).await {
                self.abandon(None, &block, old_len).await;
                return Err(e);
            }
        }
        self.streaming = if continuing {
            self.streaming - 1
        } else {
            block.stream.saturating_sub(1)
        };
        let pre = self.start_pre_draft(&block, continuing);
        let v = match self.await_verdict().await {
            Ok(v) => v,
            Err(e) => {
                self.abandon(pre, &block, old_len).await;
                return Err(e);
            }
        };
        let wait = t_send.elapsed();
        let pre_draft_s = self.finish_pre_draft(pre, wait).await?;
        self.check(&v, block.k())?;
        self.commit(&v, &block, old_len)?;
        let after = totals(self.counter);
        let report = RoundReport {
            looked_up: block.looked_up,
            continuing,
            drafted: block.k(),
            accepted: v.accepted as usize,
            reused: block.proposal.reused,
            draft: block.proposal.elapsed,
            pre_draft_s,
            wait,
            cloud_compute_s: v.compute_us as f64 * 1e-6,
            row_cost_us: v.row_cost_us,
            uplink_bytes: after.0 - before.0,
            downlink_bytes: after.1 - before.1,
            sent_dists: block.k() > 0
                && !block.proposal.dists.is_empty()
                && block.rule != Some(RoundRule::Match),
        };
        self.planner.record(&report);
        let rec = self.record(&report, &block, &v);
        self.summary.push(rec, block.looked_up);
        Ok(())
    }

    /// A model round once the committed text has filled the draft's context window becomes a
    /// cloud stream: the target's window bounds the generation, not the draft's.
    fn past_draft_window(&self, plan: RoundPlan) -> RoundPlan {
        match (&plan, self.drafter.as_ref()) {
            (RoundPlan::Model { seen, .. }, Some(d)) if d.is_full(self.committed.len()) => {
                RoundPlan::Stream {
                    n: STREAM_PAST_DRAFT_WINDOW,
                    seen: *seen,
                }
            }
            _ => plan,
        }
    }

    /// Drafts what `plan` says (None: a cloud-only step or a streamed verdict, nothing drafted).
    async fn draft(&mut self, plan: Option<RoundPlan>) -> Result<Block, EdgeError> {
        let mut block = Block {
            proposal: Proposal::default(),
            looked_up: false,
            rule: None,
            stream: 0,
            seen: plan
                .as_ref()
                .map_or(PlanEstimates::UNKNOWN, RoundPlan::seen),
        };
        match plan {
            Some(RoundPlan::Lookup { tokens, .. }) => {
                if let Some(d) = self.drafter.as_mut() {
                    d.skip_round()?;
                }
                block.proposal = Proposal::copied(tokens);
                block.looked_up = true;
            }
            Some(RoundPlan::Model { k, stop, rule, .. }) => {
                block.proposal = self.propose(k, stop).await?;
                block.rule = rule;
            }
            Some(RoundPlan::Stream { n, .. }) => {
                // The policy's K = 0 still passes through the draft: a confirmed pre-draft is
                // dropped, as after any round that drafted nothing.
                if self.set.uses_model {
                    block.proposal = self.propose(0, None).await?;
                }
                block.stream = n;
            }
            None => {}
        }
        Ok(block)
    }

    /// The draft model's proposal of up to `k` tokens after the committed sequence.
    async fn propose(&mut self, k: usize, stop: Option<StopRule>) -> Result<Proposal, EdgeError> {
        let d = self
            .drafter
            .take()
            .ok_or_else(|| EdgeError::Protocol("speculative mode needs a draft model".into()))?;
        let c = self.committed.clone();
        let (d, mut p) = blocking(d, move |d| d.propose_until(&c, k, stop)).await?;
        self.drafter = Some(d);
        if let Some(vc) = self.set.virtual_compute {
            // Pipelined tokens were paid for while the previous round was in flight.
            p.elapsed = vc.draft(p.tokens.len() - p.reused);
            tokio::time::sleep(p.elapsed).await;
        }
        Ok(p)
    }

    async fn send(&mut self, block: &Block) -> Result<(), EdgeError> {
        let p = &block.proposal;
        let msg = DraftBlock {
            round: self.round,
            tokens: p.tokens.clone(),
            // A match round of a rejection session sends ids only.
            dists: if block.rule == Some(RoundRule::Match) {
                Vec::new()
            } else {
                p.dists.iter().map(Into::into).collect()
            },
            stream: block.stream,
        };
        self.conn.write_message(&Message::DraftBlock(msg)).await?;
        Ok(())
    }

    /// Pipelining: drafts on while the block is in flight; stopped when the verdict is in.
    fn start_pre_draft(&mut self, block: &Block, continuing: bool) -> Option<PreDraft> {
        match (
            self.set.pipeline,
            self.drafter.take(),
            block.proposal.tokens.last(),
        ) {
            (true, Some(mut d), Some(&last)) if !continuing && !block.looked_up => {
                let stop = Arc::new(AtomicBool::new(false));
                let flag = Arc::clone(&stop);
                let n = block.k();
                let task = tokio::task::spawn_blocking(move || {
                    let t0 = std::time::Instant::now();
                    let r = d.pre_draft(last, n, &flag);
                    (d, r, t0.elapsed())
                });
                Some((stop, task))
            }
            (_, d, _) => {
                self.drafter = d;
                None
            }
        }
    }

    /// Stops a running pre-draft and takes the draft back; returns its drafting time (s).
    async fn finish_pre_draft(
        &mut self,
        pre: Option<PreDraft>,
        wait: Duration,
    ) -> Result<f64, EdgeError> {
        let Some((stop, task)) = pre else {
            return Ok(0.0);
        };
        stop.store(true, Ordering::Relaxed);
        let (d, r, t) = task
            .await
            .map_err(|e| EdgeError::Protocol(format!("draft thread failed: {e}")))?;
        let drafted = r?;
        let mut pre_draft_s = t.as_secs_f64();
        if let Some(vc) = self.set.virtual_compute {
            // The virtual clock stands still while the draft runs, so the pre-draft always
            // finishes; only what it would overrun the wait by delays the edge.
            let modelled = vc.draft(drafted);
            if let Some(extra) = modelled.checked_sub(wait) {
                tokio::time::sleep(extra).await;
            }
            pre_draft_s = modelled.as_secs_f64();
        }
        self.drafter = Some(d);
        Ok(pre_draft_s)
    }

    /// A round that got no verdict (its connection failed): the pre-draft, if any, is stopped
    /// and the draft taken back, and the draft's cache rolled back to the committed tokens, as
    /// for a round that accepted nothing. Errors here are the draft's, and secondary to the
    /// round's own: logged, not returned.
    async fn abandon(&mut self, pre: Option<PreDraft>, block: &Block, old_len: usize) {
        if let Some((stop, task)) = pre {
            stop.store(true, Ordering::Relaxed);
            match task.await {
                Ok((d, _, _)) => self.drafter = Some(d),
                Err(e) => tracing::warn!("draft thread failed: {e}"),
            }
        }
        if !block.looked_up && block.k() > 0 {
            if let Some(d) = self.drafter.as_mut() {
                if let Err(e) = d.rollback(old_len, block.k(), 0, 0) {
                    tracing::warn!("rolling the draft back: {e}");
                }
            }
        }
    }

    async fn await_verdict(&mut self) -> Result<Verdict, EdgeError> {
        match self.conn.read_message(Some(self.set.timeout)).await? {
            Some((_, Message::Verdict(v))) => Ok(v),
            Some((_, Message::ErrorReply(e))) => Err(EdgeError::Cloud(e.message)),
            Some((_, other)) => Err(EdgeError::Protocol(format!(
                "expected Verdict, got {:?}",
                other.message_type()
            ))),
            None => Err(EdgeError::Closed),
        }
    }

    /// The verdict answers this round, its token is in the vocabulary, and it accepts at most
    /// the `k` tokens sent.
    fn check(&self, v: &Verdict, k: usize) -> Result<(), EdgeError> {
        let round = self.round - self.round_base;
        if v.round != round {
            return Err(EdgeError::Protocol(format!(
                "verdict for round {}, expected round {round}",
                v.round
            )));
        }
        if v.next_token as usize >= self.set.vocab {
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
        Ok(())
    }

    /// **Where tokens are accepted:** the accepted drafts and the target's token join the
    /// committed sequence and go to the caller; the draft's cache follows (a lookup round's was
    /// left at the committed tokens already).
    fn commit(&mut self, v: &Verdict, block: &Block, old_len: usize) -> Result<(), EdgeError> {
        let a = v.accepted as usize;
        let mut new: Vec<u32> = block.proposal.tokens[..a].to_vec();
        new.push(v.next_token);
        self.committed.extend_from_slice(&new);
        (self.on_commit)(&new);
        self.finished = v.finished || self.set.stop.is_raised();
        if !block.looked_up {
            if let Some(d) = self.drafter.as_mut() {
                d.rollback(old_len, block.k(), a, v.next_token)?;
            }
        }
        Ok(())
    }

    /// The round's record.
    fn record(&self, r: &RoundReport, block: &Block, v: &Verdict) -> RoundRecord {
        let k = r.drafted;
        let rejection = self.set.rule == VerifyRule::Rejection;
        RoundRecord {
            round: self.round,
            t_s: self.summary.elapsed_s(),
            k,
            verify: match (k, block.rule) {
                (0, _) => RoundVerify::None,
                // Copied tokens go up as ids only: a sampled rejection session verifies them
                // by match.
                (_, _) if block.looked_up && rejection && !self.set.greedy => RoundVerify::Match,
                (_, Some(RoundRule::Match)) => RoundVerify::Match,
                (_, Some(RoundRule::Rejection)) => RoundVerify::Rejection,
                (_, None) if self.set.greedy => RoundVerify::Greedy,
                (_, None) => self.set.rule.into(),
            },
            accepted: r.accepted,
            source: match (k, block.looked_up) {
                (0, _) => RoundSource::None,
                (_, true) => RoundSource::Lookup,
                (_, false) => RoundSource::Model,
            },
            draft_s: r.draft.as_secs_f64(),
            reused: r.reused,
            pre_draft_s: r.pre_draft_s,
            wait_s: r.wait.as_secs_f64(),
            cloud_compute_s: f64::from(v.compute_us) * 1e-6,
            uplink_bytes: r.uplink_bytes,
            downlink_bytes: r.downlink_bytes,
            alpha_estimate: block.seen.alpha,
            uplink_bps_estimate: block.seen.uplink_bps,
            rtt_s_estimate: block.seen.rtt_s,
            energy_j: None,
        }
    }

    /// Why the generation ended: the caller's stop or an end-of-sequence token (`stop`), the
    /// edge's own budget (`length`), or the cloud's smaller grant (`context` when the target's
    /// window was the cut, else `length`).
    fn finish_reason(&self) -> FinishReason {
        let generated = self.committed.len() - self.summary.prompt_tokens();
        let last = self.committed.last();
        if self.set.stop.is_raised() || last.is_some_and(|t| self.set.eos.contains(t)) {
            FinishReason::Stop
        } else if generated >= self.max_new {
            FinishReason::Length
        } else if let Some((_, true)) = self.set.grant {
            FinishReason::Context
        } else {
            FinishReason::Length
        }
    }

    /// Sends Close, lets the link settle so the byte counts are final, and builds the summary.
    async fn close(mut self) -> Summary {
        let total = self.summary.elapsed();
        let _ = self.conn.write_message(&Message::Close(Close {})).await;
        let _ = self.conn.shutdown().await;
        if let Some(c) = self.counter {
            let _ = tokio::time::timeout(SETTLE_WAIT, c.settled()).await;
        }
        let finish_reason = self.finish_reason();
        let labels = SummaryLabels {
            speculative: self.set.speculative,
            mode: self.set.mode,
            rule: self.set.rule,
            model_family: self.set.family,
            finish_reason,
            token_cap: self.set.grant.map(|(n, _)| n),
        };
        self.summary.finish(
            &self.committed,
            total,
            totals(self.counter),
            &self.planner,
            labels,
        )
    }
}

/// The cloud's grant of a HelloAck when it is below what was asked: (the whole generation's
/// budget it implies, given `generated` tokens before this session; context-bound).
pub(crate) fn grant(ack: &HelloAck, generated: usize) -> Option<(usize, bool)> {
    (ack.granted_new_tokens > 0).then(|| {
        (
            generated + ack.granted_new_tokens as usize,
            ack.context_bound,
        )
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
    stop: &StopSignal,
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
        if stop_tokens.contains(&x) || stop.is_raised() {
            break;
        }
    }
    Ok((committed[prompt.len()..].to_vec(), ttft, t0.elapsed()))
}
