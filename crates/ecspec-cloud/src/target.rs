//! One session's target model: prefill, then one verification forward pass per round.
//! Synchronous compute; the server runs it on a blocking thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ecspec_model::{LogitsFor, ModelError, Session, Transformer};
use ecspec_spec::compact::CompactDist;
use ecspec_spec::sampling::{self, SamplingParams};
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
}

/// A target model session: its KV cache holds every committed token but the last, which is
/// fed at the start of the next round together with the new drafts.
pub struct TargetSession {
    session: Session,
    rule: VerifyRule,
    params: SamplingParams,
    rng: ChaCha20Rng,
    stop_tokens: Vec<u32>,
    max_new_tokens: usize,
    /// Committed tokens, prompt included.
    committed: Vec<u32>,
    prompt_len: usize,
    finished: bool,
}

impl TargetSession {
    /// Prefills `prompt` and picks the first generated token (the TTFT token).
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
        if prompt.is_empty() {
            return Err(RoundError::BadRound("empty prompt".into()));
        }
        if max_new_tokens == 0 {
            return Err(RoundError::BadRound(
                "max_new_tokens must be at least 1".into(),
            ));
        }
        let t0 = Instant::now();
        let mut session = Session::new(model);
        let logits = session.forward(prompt, LogitsFor::Last)?;
        let mut me = Self {
            session,
            rule,
            rng: sampling::rng_for(params.seed, sampling::CLOUD_STREAM),
            params,
            stop_tokens,
            max_new_tokens,
            committed: prompt.to_vec(),
            prompt_len: prompt.len(),
            finished: false,
        };
        let first = me.pick(logits.last())?;
        let finished = me.commit(&[], first);
        Ok((
            me,
            RoundOutcome {
                accepted: 0,
                next_token: first,
                finished,
                compute: t0.elapsed(),
            },
        ))
    }

    fn pick(&mut self, row: &[f32]) -> Result<u32, RoundError> {
        if self.rule == VerifyRule::Greedy || self.params.is_greedy() {
            return Ok(sampling::argmax(row));
        }
        let p = sampling::target_distribution(row, &self.params)
            .map_err(|e| RoundError::BadRound(e.to_string()))?;
        sampling::sample(&p, &mut self.rng).map_err(|e| RoundError::BadRound(e.to_string()))
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
        if self.finished {
            return Err(RoundError::BadRound(
                "the session has already finished".into(),
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
        let t0 = Instant::now();
        let kv = self.session.kv_len();
        let mut block = Vec::with_capacity(draft.len() + 1);
        block.push(*self.committed.last().expect("prompt is never empty"));
        block.extend_from_slice(draft);
        let logits = self.session.forward(&block, LogitsFor::All)?;
        let rows = logits.row_slices();
        let v = match self.rule {
            _ if self.params.is_greedy() => verify::verify_greedy(draft, &rows),
            VerifyRule::Greedy => verify::verify_greedy(draft, &rows),
            VerifyRule::Match => verify::verify_match(draft, &rows, &self.params, &mut self.rng),
            VerifyRule::Rejection if dists.is_empty() => {
                verify::verify_match(draft, &rows, &self.params, &mut self.rng)
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
            compute: t0.elapsed(),
        })
    }
}
