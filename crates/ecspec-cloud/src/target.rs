//! One session's target model: prefill, then one verification forward pass per round.
//! Synchronous compute. Each step is split in three — the block to run
//! ([`TargetSession::prefill_chunk`], [`TargetSession::round_block`]), the forward pass, and
//! what the logits commit ([`TargetSession::finish_prefill_chunk`],
//! [`TargetSession::finish_round`]) — so the server's scheduler can run the blocks of many
//! sessions in one batched pass; [`TargetSession::start`] and [`TargetSession::round`] do all
//! three for one session alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ecspec_model::{BatchItem, Logits, LogitsFor, ModelError, Session, Transformer};
use ecspec_spec::compact::CompactDist;
use ecspec_spec::sampling::{self, PositionDraws, SamplingParams};
use ecspec_spec::verify::{self, VerifyRule};
use rand_chacha::ChaCha20Rng;

/// Errors of a round.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The model failed (bad ids, context overflow…).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The round's inputs do not fit the verification rule.
    #[error("{0}")]
    BadRound(String),
}

/// What one round committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundOutcome {
    /// Drafted tokens accepted (after cutting at a stop token or the token budget).
    pub accepted: usize,
    /// The target's own token committed after them.
    pub next_token: u32,
    /// Generation ended (stop token committed or budget reached).
    pub finished: bool,
    /// Time the forward pass and verification took.
    pub compute: Duration,
    /// The delay one more row of this round added to the other sessions of its pass (the
    /// scheduler's marginal time per row × those sessions); zero alone or without an estimate.
    pub row_cost: Duration,
}

/// A target model session: its KV cache holds every committed token but the last, which is
/// fed at the start of the next round together with the new drafts.
pub struct TargetSession {
    session: Session,
    rule: VerifyRule,
    params: SamplingParams,
    /// Rejection rounds' draws (they depend on the drafts, so they are sequential).
    rng: ChaCha20Rng,
    /// Every other draw of the target: keyed by (seed, position), so cloud-only steps and
    /// match rounds pick the same token at a position whatever the rounds were.
    draws: PositionDraws,
    stop_tokens: Vec<u32>,
    max_new_tokens: usize,
    /// Committed tokens, prompt included.
    committed: Vec<u32>,
    prompt_len: usize,
    finished: bool,
}

impl TargetSession {
    /// A session whose prompt is still to be prefilled (by [`Self::prefill_chunk`] /
    /// [`Self::finish_prefill_chunk`], or all at once by [`Self::start`]).
    ///
    /// # Errors
    /// An empty prompt, a token budget of 0, an id outside the vocabulary, a prompt that
    /// leaves no room in the context.
    pub fn new(
        model: Arc<Transformer>,
        prompt: &[u32],
        rule: VerifyRule,
        params: SamplingParams,
        stop_tokens: Vec<u32>,
        max_new_tokens: usize,
    ) -> Result<Self, RoundError> {
        if prompt.is_empty() {
            return Err(RoundError::BadRound("empty prompt".into()));
        }
        if max_new_tokens == 0 {
            return Err(RoundError::BadRound(
                "max_new_tokens must be at least 1".into(),
            ));
        }
        let c = model.config();
        if let Some(&id) = prompt.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(ModelError::TokenOutOfRange {
                id,
                vocab_size: c.vocab_size,
            }
            .into());
        }
        if prompt.len() > c.context_length {
            return Err(ModelError::ContextOverflow {
                needed: prompt.len(),
                max: c.context_length,
            }
            .into());
        }
        Ok(Self {
            session: Session::new(model),
            rule,
            rng: sampling::rng_for(params.seed, sampling::CLOUD_STREAM),
            draws: PositionDraws::new(params.seed),
            params,
            stop_tokens,
            max_new_tokens,
            committed: prompt.to_vec(),
            prompt_len: prompt.len(),
            finished: false,
        })
    }

    /// Prefills `prompt` and picks the first generated token (the TTFT token): [`Self::new`]
    /// and the whole prompt as one chunk.
    ///
    /// # Errors
    /// Model errors (out-of-vocabulary ids, context overflow) and an empty prompt.
    pub fn start(
        model: Arc<Transformer>,
        prompt: &[u32],
        rule: VerifyRule,
        params: SamplingParams,
        stop_tokens: Vec<u32>,
        max_new_tokens: usize,
    ) -> Result<(Self, RoundOutcome), RoundError> {
        let t0 = Instant::now();
        let mut me = Self::new(model, prompt, rule, params, stop_tokens, max_new_tokens)?;
        let (tokens, want) = me.prefill_chunk(usize::MAX);
        let tokens = tokens.to_vec();
        let logits = me
            .session
            .forward(&tokens, want.unwrap_or(LogitsFor::Last))?;
        let mut first = me
            .finish_prefill_chunk(Some(logits))?
            .expect("the whole prompt was one chunk");
        first.compute = t0.elapsed();
        Ok((me, first))
    }

    /// Prompt tokens not yet in the KV cache (0 once the first token is committed).
    pub fn prefill_left(&self) -> usize {
        if self.committed.len() > self.prompt_len {
            0
        } else {
            self.prompt_len - self.session.kv_len()
        }
    }

    /// The next prefill chunk: up to `max_rows` prompt tokens after what the cache holds
    /// (at least one), and the logits it needs (the last row when it ends the prompt).
    pub fn prefill_chunk(&self, max_rows: usize) -> (&[u32], Option<LogitsFor>) {
        let kv = self.session.kv_len();
        let end = kv.saturating_add(max_rows.max(1)).min(self.prompt_len);
        let want = (end == self.prompt_len).then_some(LogitsFor::Last);
        (&self.committed[kv..end], want)
    }

    /// Takes the logits of a prefill chunk's pass (the chunk's rows are in the cache): after
    /// the prompt's last chunk picks and commits the first token and returns it (`compute`
    /// left zero for the caller to fill in); before it, `None`.
    ///
    /// # Errors
    /// A last chunk without logits, or a sampling failure.
    pub fn finish_prefill_chunk(
        &mut self,
        logits: Option<Logits>,
    ) -> Result<Option<RoundOutcome>, RoundError> {
        if self.session.kv_len() < self.prompt_len {
            return Ok(None);
        }
        let logits = logits.ok_or_else(|| {
            RoundError::BadRound("the prompt's last chunk ran without logits".into())
        })?;
        let first = self.pick(logits.last())?;
        let finished = self.commit(&[], first);
        Ok(Some(RoundOutcome {
            accepted: 0,
            next_token: first,
            finished,
            compute: Duration::ZERO,
            row_cost: Duration::ZERO,
        }))
    }

    /// The model and cache a batched pass runs this session's block on.
    pub fn batch_item<'a>(
        &'a mut self,
        tokens: &'a [u32],
        want: Option<LogitsFor>,
    ) -> BatchItem<'a> {
        let (model, cache) = self.session.parts_mut();
        BatchItem {
            model,
            cache,
            tokens,
            want,
        }
    }

    /// Rolls the KV cache back to `len` positions (a batched pass that failed).
    ///
    /// # Errors
    /// `len` beyond what the cache holds.
    pub fn rollback_kv(&mut self, len: usize) -> Result<(), RoundError> {
        Ok(self.session.truncate(len)?)
    }

    /// Positions in the KV cache.
    pub fn kv_len(&self) -> usize {
        self.session.kv_len()
    }

    /// The model (target version) of this session.
    pub fn model(&self) -> &Arc<Transformer> {
        self.session.model()
    }

    fn pick(&mut self, row: &[f32]) -> Result<u32, RoundError> {
        if self.rule == VerifyRule::Greedy || self.params.is_greedy() {
            return Ok(sampling::argmax(row));
        }
        self.draws
            .sample_row(row, &self.params, self.committed.len())
            .map_err(|e| RoundError::BadRound(e.to_string()))
    }

    /// Appends accepted drafts and the target's token, cut at the first stop token or at the
    /// token budget; returns whether generation is finished.
    fn commit(&mut self, accepted: &[u32], next: u32) -> bool {
        for &t in accepted.iter().chain(std::iter::once(&next)) {
            self.committed.push(t);
            if self.stop_tokens.contains(&t) || self.generated() >= self.max_new_tokens {
                self.finished = true;
                break;
            }
        }
        self.finished
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.committed.len() - self.prompt_len
    }

    /// Whether the session has ended.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// All committed tokens (prompt first).
    pub fn committed(&self) -> &[u32] {
        &self.committed
    }

    /// One round: a single forward pass over the last committed token and the `draft`
    /// (K + 1 positions, K = `draft.len()`, which may be 0 for a cloud-only step), then the
    /// session's verification rule. `dists` holds one compact draft distribution per drafted
    /// token in rejection mode and must be empty otherwise; a rejection session's round that
    /// carries no distributions is verified by match (both exact).
    ///
    /// # Errors
    /// A round after the end, wrong number of distributions, model errors. On error nothing is
    /// committed and the KV cache is as before.
    pub fn round(
        &mut self,
        draft: &[u32],
        dists: &[CompactDist],
    ) -> Result<RoundOutcome, RoundError> {
        let t0 = Instant::now();
        let block = self.round_block(draft, dists)?;
        let kv = self.session.kv_len();
        let logits = self.session.forward(&block, LogitsFor::All)?;
        let mut out = self.finish_round(draft, dists, kv, &logits)?;
        out.compute = t0.elapsed();
        Ok(out)
    }

    /// Checks a round's inputs and returns its block: the last committed token, then the
    /// drafts (run with [`LogitsFor::All`]).
    ///
    /// # Errors
    /// A round after the end or before the prefill finished, a wrong number of
    /// distributions.
    pub fn round_block(
        &self,
        draft: &[u32],
        dists: &[CompactDist],
    ) -> Result<Vec<u32>, RoundError> {
        if self.finished {
            return Err(RoundError::BadRound(
                "the session has already finished".into(),
            ));
        }
        if self.prefill_left() > 0 || self.committed.len() == self.prompt_len {
            return Err(RoundError::BadRound(
                "a round before the prompt was prefilled".into(),
            ));
        }
        // A rejection session may verify a round by match instead: the edge sends no
        // distributions when its uplink makes them cost more than they gain (design.md §4).
        let dists_ok = match self.rule {
            VerifyRule::Rejection => dists.is_empty() || dists.len() == draft.len(),
            _ => dists.is_empty(),
        };
        if !dists_ok {
            return Err(RoundError::BadRound(format!(
                "{} draft distributions for {} drafted tokens in {:?} mode",
                dists.len(),
                draft.len(),
                self.rule
            )));
        }
        let mut block = Vec::with_capacity(draft.len() + 1);
        block.push(*self.committed.last().expect("prompt is never empty"));
        block.extend_from_slice(draft);
        Ok(block)
    }

    /// Verifies a round from its block's `logits` (the block is in the cache after `kv`
    /// positions) and commits: the cache keeps the fed last token and the accepted drafts.
    /// `compute` is left zero for the caller to fill in.
    ///
    /// # Errors
    /// A verification failure (a bad distribution, say): nothing is committed and the cache is
    /// rolled back to `kv`.
    pub fn finish_round(
        &mut self,
        draft: &[u32],
        dists: &[CompactDist],
        kv: usize,
        logits: &Logits,
    ) -> Result<RoundOutcome, RoundError> {
        let rows = logits.row_slices();
        // Row 0 predicts the position right after the committed sequence.
        let at = self.committed.len();
        let v = match self.rule {
            _ if self.params.is_greedy() => verify::verify_greedy(draft, &rows),
            VerifyRule::Greedy => verify::verify_greedy(draft, &rows),
            VerifyRule::Match => {
                verify::verify_match_at(draft, &rows, &self.params, &self.draws, at)
            }
            VerifyRule::Rejection if dists.is_empty() => {
                verify::verify_match_at(draft, &rows, &self.params, &self.draws, at)
            }
            VerifyRule::Rejection => {
                verify::verify_rejection(draft, dists, &rows, &self.params, &mut self.rng)
            }
        };
        let v = match v {
            Ok(v) => v,
            Err(e) => {
                self.session.truncate(kv)?;
                return Err(RoundError::BadRound(e.to_string()));
            }
        };
        let before = self.committed.len();
        let finished = self.commit(&draft[..v.accepted], v.next_token);
        let added = self.committed.len() - before;
        // The KV cache keeps the fed last token and the accepted drafts that stay committed;
        // the newest committed token is fed next round.
        self.session.truncate(kv + added)?;
        let (accepted, next_token) = (added - 1, *self.committed.last().expect("just pushed"));
        Ok(RoundOutcome {
            accepted,
            next_token,
            finished,
            compute: Duration::ZERO,
            row_cost: Duration::ZERO,
        })
    }
}
