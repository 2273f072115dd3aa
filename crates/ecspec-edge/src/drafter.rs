//! The draft model on the edge: proposes K tokens after the committed sequence and rolls its
//! KV cache back to what the cloud accepted. Synchronous compute.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ecspec_model::{LogitsFor, ModelError, Session};
use ecspec_spec::compact::CompactDist;
use ecspec_spec::policy::StopRule;
use ecspec_spec::sampling::{self, SamplingParams};
use ecspec_spec::verify::VerifyRule;
use rand_chacha::ChaCha20Rng;

/// How drafted tokens are chosen and what travels with them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DraftSampling {
    /// The session's verification rule.
    pub rule: VerifyRule,
    /// The session's sampling settings (the draft samples with the same ones).
    pub params: SamplingParams,
    /// Rejection mode: tokens kept in each compact distribution.
    pub dist_top_k: usize,
    /// Rejection mode: bits per quantized probability (4, 8 or 16).
    pub dist_bits: u8,
}

/// One round's proposal.
#[derive(Debug, Clone, Default)]
pub struct Proposal {
    /// Drafted tokens x_1..x_K.
    pub tokens: Vec<u32>,
    /// Rejection mode: the exact (quantized) distribution each token was sampled from.
    pub dists: Vec<CompactDist>,
    /// Probability the draft gave each drafted token (its confidence).
    pub confidence: Vec<f32>,
    /// Entropy (nats) of the distribution each drafted token was drawn from.
    pub entropy: Vec<f32>,
    /// Wall-clock drafting time, catch-up prefill included (pipelined tokens cost none here:
    /// they were drafted while the previous round was in flight).
    pub elapsed: Duration,
    /// Leading tokens taken from the pipelined pre-draft ([`Drafter::pre_draft`]).
    pub reused: usize,
}

impl Proposal {
    /// A proposal of tokens copied from the context ([`crate::Lookup`]): no model ran, so no
    /// distributions (the round is verified by matching), confidence 1 and entropy 0 each.
    pub fn copied(tokens: Vec<u32>) -> Self {
        let n = tokens.len();
        Self {
            tokens,
            confidence: vec![1.0; n],
            entropy: vec![0.0; n],
            ..Self::default()
        }
    }
}

/// A continuation drafted while a round was in flight, assuming the round is accepted in full:
/// `guess` is the draft's guess of the target's bonus token, `carry` the tokens after it.
#[derive(Debug, Clone)]
struct PreDraft {
    guess: u32,
    carry: Proposal,
}

/// Errors while drafting.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Sampling settings or distributions were invalid.
    #[error("draft sampling: {0}")]
    Sampling(String),
}

/// A draft model with its KV cache and the count of committed tokens it has seen.
pub struct Drafter {
    session: Session,
    /// Committed tokens already in the KV cache (a prefix of the committed sequence).
    fed: usize,
    /// The pre-draft of the round in flight, until its verdict.
    pending: Option<PreDraft>,
    /// A pre-draft the verdict confirmed: the next proposal starts with it. The KV cache then
    /// holds every committed token and `ready.tokens[..len − 1]`.
    ready: Option<Proposal>,
    rng: ChaCha20Rng,
    sampling: DraftSampling,
}

impl Drafter {
    /// A drafter over `session` (fresh KV cache).
    pub fn new(session: Session, sampling: DraftSampling) -> Self {
        let rng = sampling::rng_for(sampling.params.seed, sampling::EDGE_STREAM);
        Self {
            session,
            fed: 0,
            pending: None,
            ready: None,
            rng,
            sampling,
        }
    }

    /// Feeds committed tokens not yet in the KV cache except the last one (which the next
    /// proposal feeds), e.g. the prompt while waiting for the cloud's first token.
    /// A sequence that no longer fits the draft's window is not fed ([`Self::is_full`]).
    pub fn prefill(&mut self, committed: &[u32]) -> Result<(), DraftError> {
        self.drop_pre_draft()?;
        if self.is_full(committed.len()) {
            return Ok(());
        }
        if committed.len() > self.fed + 1 {
            self.session
                .forward(&committed[self.fed..committed.len() - 1], LogitsFor::Last)?;
            self.fed = committed.len() - 1;
        }
        Ok(())
    }

    /// Whether a committed sequence of `committed_len` tokens leaves the draft no room to
    /// propose even one token (its window holds the committed tokens but the last, plus the
    /// drafts but the last). The edge then streams from the cloud: the target's window, not
    /// the draft's, bounds the generation.
    pub fn is_full(&self, committed_len: usize) -> bool {
        committed_len > self.session.model().config().context_length
    }

    /// The next drafted token, the compact distribution it was drawn from (rejection mode),
    /// the draft's probability of it and the entropy (nats) of the distribution drawn from.
    fn pick(&mut self, row: &[f32]) -> Result<(u32, Option<CompactDist>, f32, f32), DraftError> {
        let err = |e: &dyn std::fmt::Display| DraftError::Sampling(e.to_string());
        if self.sampling.params.is_greedy() || self.sampling.rule == VerifyRule::Greedy {
            let x = sampling::argmax(row);
            // Confidence = softmax probability of the argmax, 1 / Σ exp(l_i − l_max), and
            // entropy = ln z − Σ s_i e^{s_i} / z with s_i = l_i − l_max: one pass, no
            // distribution allocated on the drafting path.
            let max = row[x as usize];
            let (mut z, mut w) = (0f64, 0f64);
            for &l in row {
                let s = (l - max) as f64;
                let e = s.exp();
                z += e;
                w += s * e;
            }
            let ok = z.is_finite() && z > 0.0;
            return Ok((
                x,
                None,
                if ok { (1.0 / z) as f32 } else { 0.0 },
                if ok {
                    (z.ln() - w / z) as f32
                } else {
                    f32::INFINITY
                },
            ));
        }
        let q = sampling::target_distribution(row, &self.sampling.params).map_err(|e| err(&e))?;
        if self.sampling.rule == VerifyRule::Rejection {
            // Quantize first, then sample from exactly what is sent (Zhang et al. 2025,
            // arXiv 2507.00605): verification stays exact w.r.t. the q the cloud sees.
            let cd = CompactDist::quantize(&q, self.sampling.dist_top_k, self.sampling.dist_bits)
                .map_err(|e| err(&e))?;
            let x = cd.sample(&mut self.rng);
            let conf = cd.prob_of(x) as f32;
            let h = entropy(&q);
            Ok((x, Some(cd), conf, h))
        } else {
            let x = sampling::sample(&q, &mut self.rng).map_err(|e| err(&e))?;
            Ok((x, None, q[x as usize], entropy(&q)))
        }
    }

    /// Drafts `k` tokens after `committed` (k = 0 returns an empty proposal without compute).
    /// The KV cache afterwards holds `committed` and x_1..x_{K−1}.
    pub fn propose(&mut self, committed: &[u32], k: usize) -> Result<Proposal, DraftError> {
        self.propose_until(committed, k, None)
    }

    /// Drafts up to `k` tokens after `committed`, stopping after the first token `stop`
    /// rejects (that token is still proposed: it is drafted already, and the verifier may
    /// accept it). The KV cache afterwards holds `committed` and x_1..x_{n−1} for the n tokens
    /// proposed. When the previous round's pre-draft was confirmed, its tokens come first
    /// ([`Proposal::reused`]) and only the rest is drafted now. Near the end of the draft's
    /// context window fewer than `k` are proposed (as many as the window holds).
    pub fn propose_until(
        &mut self,
        committed: &[u32],
        mut k: usize,
        stop: Option<StopRule>,
    ) -> Result<Proposal, DraftError> {
        let t0 = Instant::now();
        let mut out = Proposal::default();
        // k tokens leave committed + x_1..x_{k−1} in the cache: near the end of the draft's
        // context window, propose fewer rather than overflow it; once it is full, none.
        let window = self.session.model().config().context_length;
        k = k.min((window + 1).saturating_sub(committed.len()));
        let ready = self.ready.take();
        if k == 0 {
            if ready.is_some() {
                self.session.truncate(self.fed)?;
            }
            return Ok(out);
        }
        let mut row = match ready {
            Some(c) => {
                let mut stopped = false;
                for i in 0..c.tokens.len().min(k) {
                    out.tokens.push(c.tokens[i]);
                    out.confidence.push(c.confidence[i]);
                    out.entropy.push(c.entropy[i]);
                    if let Some(d) = c.dists.get(i) {
                        out.dists.push(d.clone());
                    }
                    if stop.is_some_and(|s| !s.keep_drafting(c.confidence[i], c.entropy[i])) {
                        stopped = true;
                        break;
                    }
                }
                let n = out.tokens.len();
                out.reused = n;
                if stopped || n == k {
                    // Keep committed + x_1..x_{n−1} in the cache, as after drafting n tokens.
                    self.session.truncate(self.fed + n - 1)?;
                    out.elapsed = t0.elapsed();
                    return Ok(out);
                }
                // The cache holds committed + every carried token but the last: feed it.
                self.session
                    .forward(&out.tokens[n - 1..], LogitsFor::Last)?
                    .last()
                    .to_vec()
            }
            None => {
                let logits = self
                    .session
                    .forward(&committed[self.fed..], LogitsFor::Last)?;
                self.fed = committed.len();
                logits.last().to_vec()
            }
        };
        for i in out.tokens.len()..k {
            let (x, dist, conf, h) = self.pick(&row)?;
            out.tokens.push(x);
            out.confidence.push(conf);
            out.entropy.push(h);
            if let Some(d) = dist {
                out.dists.push(d);
            }
            if stop.is_some_and(|s| !s.keep_drafting(conf, h)) {
                break;
            }
            if i + 1 < k {
                row = self.session.forward(&[x], LogitsFor::Last)?.last().to_vec();
            }
        }
        out.elapsed = t0.elapsed();
        Ok(out)
    }

    /// Pipelined drafting (SpecEdge, arXiv 2505.17052; PEARL): while the round whose proposal
    /// ended with `last` is in flight, drafts the continuation that assumes it is accepted in
    /// full — the draft's own guess of the target's bonus token, then up to `n` tokens after
    /// it — checking `stop` before each token so the verdict is not kept waiting. The
    /// continuation is used by the next proposal only if [`Self::rollback`] finds the round
    /// fully accepted and the bonus token equal to the guess; otherwise it is dropped.
    ///
    /// Call right after the proposal ending with `last`, before its rollback.
    ///
    /// Returns the tokens drafted (the guess included): fewer than `n + 1` near the end of the
    /// draft's context window, 0 when it is full.
    ///
    /// # Errors
    /// Model or sampling errors; the pre-draft is then dropped and the next rollback restores
    /// the cache as usual.
    pub fn pre_draft(
        &mut self,
        last: u32,
        n: usize,
        stop: &AtomicBool,
    ) -> Result<usize, DraftError> {
        self.pending = None;
        // Room left in the draft's context window: `last` takes one position and each token
        // carried but the last one more. Near the window's end the pre-draft is shortened, or
        // skipped, never run into a context overflow (the round itself still fits: it was
        // drafted already).
        let room = self
            .session
            .model()
            .config()
            .context_length
            .saturating_sub(self.session.kv_len());
        if stop.load(Ordering::Relaxed) || room == 0 {
            return Ok(0);
        }
        let n = n.min(room - 1);
        let row = self
            .session
            .forward(&[last], LogitsFor::Last)?
            .last()
            .to_vec();
        let guess = self.pick(&row)?.0;
        let mut carry = Proposal::default();
        let t0 = Instant::now();
        let mut prev = guess;
        for _ in 0..n {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let row = self
                .session
                .forward(&[prev], LogitsFor::Last)?
                .last()
                .to_vec();
            let (x, dist, conf, h) = self.pick(&row)?;
            carry.tokens.push(x);
            carry.confidence.push(conf);
            carry.entropy.push(h);
            if let Some(d) = dist {
                carry.dists.push(d);
            }
            prev = x;
        }
        carry.elapsed = t0.elapsed();
        let drafted = 1 + carry.tokens.len();
        self.pending = Some(PreDraft { guess, carry });
        Ok(drafted)
    }

    /// After a verdict: `old_len` committed tokens before the round, `drafted` tokens
    /// proposed, `accepted` of them kept and `next` the target's token after them. Rolls the
    /// KV cache back to the committed prefix it still agrees with, or keeps a pre-draft the
    /// verdict confirmed (all accepted and `next` equal to its guess).
    pub fn rollback(
        &mut self,
        old_len: usize,
        drafted: usize,
        accepted: usize,
        next: u32,
    ) -> Result<(), DraftError> {
        if let Some(p) = self.pending.take() {
            if drafted > 0 && accepted == drafted && next == p.guess && !p.carry.tokens.is_empty() {
                // The cache holds old + x_1..x_K + guess + carry[..len − 1].
                self.fed = old_len + drafted + 1;
                self.ready = Some(p.carry);
                return Ok(());
            }
        }
        self.ready = None;
        if drafted == 0 {
            return Ok(());
        }
        // The cache holds old committed + x_1..x_{K−1} (and any pre-draft after x_K); keep
        // x_1..x_min(a, K−1).
        let keep = old_len + accepted.min(drafted - 1);
        self.session.truncate(keep)?;
        self.fed = keep;
        Ok(())
    }

    /// A round drafted elsewhere (context lookup): forgets any pre-draft and leaves the cache
    /// at the committed tokens fed so far; the next proposal catches up from there.
    ///
    /// # Errors
    /// Model errors while truncating the cache.
    pub fn skip_round(&mut self) -> Result<(), DraftError> {
        self.drop_pre_draft()
    }

    /// Forgets any pre-draft and restores the cache to the committed tokens fed so far.
    fn drop_pre_draft(&mut self) -> Result<(), DraftError> {
        if self.pending.take().is_some() || self.ready.take().is_some() {
            self.session.truncate(self.fed)?;
        }
        Ok(())
    }

    /// Edge-only decoding: the draft's own next token after `committed` (no verification).
    pub fn next_token(&mut self, committed: &[u32]) -> Result<u32, DraftError> {
        self.drop_pre_draft()?;
        let logits = self
            .session
            .forward(&committed[self.fed..], LogitsFor::Last)?;
        self.fed = committed.len();
        Ok(self.pick(logits.last())?.0)
    }
}

/// Entropy −Σ q ln q (nats) of a distribution.
fn entropy(q: &[f32]) -> f32 {
    q.iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| -(p as f64) * (p as f64).ln())
        .sum::<f64>() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecspec_model::tiny::{write_tiny_model, TinySpec};
    use std::sync::Arc;

    /// FR-Spec: a draft whose head scores a subset never proposes a token outside it, and the
    /// distributions it sends for rejection put no mass outside it either (so the verifier's
    /// q is exactly the pruned draft's).
    #[test]
    fn a_pruned_head_never_proposes_outside_its_subset() {
        let dir = std::env::temp_dir().join(format!("ecspec-fr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        write_tiny_model(&path, TinySpec::default()).unwrap();
        let m = ecspec_model::LoadedModel::load(&path).unwrap();
        // 40 of the 260 tokens, none of them the model's own greedy favourites necessarily.
        let subset: Vec<u32> = (0..260u32).filter(|t| t % 13 == 5 || t % 13 == 9).collect();
        let pruned = Arc::new(m.transformer.with_vocab_subset(&subset).unwrap());
        let prompt: Vec<u32> = b"the quick brown fox"
            .iter()
            .map(|&b| u32::from(b))
            .collect();
        let mut proposed = 0usize;
        for (rule, params) in [
            (VerifyRule::Greedy, SamplingParams::greedy(1)),
            (VerifyRule::Rejection, SamplingParams::default()),
            (VerifyRule::Match, SamplingParams::default()),
        ] {
            for seed in 0..20u64 {
                let sampling = DraftSampling {
                    rule,
                    params: SamplingParams { seed, ..params },
                    dist_top_k: 16,
                    dist_bits: 8,
                };
                let mut d = Drafter::new(Session::new(pruned.clone()), sampling);
                d.prefill(&prompt).unwrap();
                let p = d.propose(&prompt, 8).unwrap();
                assert_eq!(p.tokens.len(), 8);
                for t in &p.tokens {
                    assert!(subset.contains(t), "{rule:?} seed {seed}: proposed {t}");
                }
                for q in &p.dists {
                    assert!(q.ids().iter().all(|t| subset.contains(t)), "{:?}", q.ids());
                }
                proposed += p.tokens.len();
            }
        }
        assert_eq!(proposed, 3 * 20 * 8);
    }

    /// Pipelined drafting near the end of the draft's context window (512 positions for the
    /// tiny model) shortens the pre-draft to the room left instead of failing with a context
    /// overflow, and a confirmed short pre-draft is reused.
    #[test]
    fn a_pre_draft_stops_at_the_end_of_the_drafts_window() {
        let dir = std::env::temp_dir().join(format!("ecspec-predraft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        write_tiny_model(&path, TinySpec::default()).unwrap();
        let m = ecspec_model::LoadedModel::load(&path).unwrap();
        assert_eq!(m.transformer.config().context_length, 512);
        let prompt: Vec<u32> = (0..500u32).map(|i| 32 + i % 90).collect();
        let mut d = Drafter::new(
            Session::new(m.transformer.clone()),
            DraftSampling {
                rule: VerifyRule::Greedy,
                params: SamplingParams::greedy(1),
                dist_top_k: 8,
                dist_bits: 8,
            },
        );
        d.prefill(&prompt).unwrap();
        let p = d.propose(&prompt, 8).unwrap();
        // The cache holds 500 + 7 positions: room for `last` and 4 more.
        let stop = AtomicBool::new(false);
        assert_eq!(d.pre_draft(*p.tokens.last().unwrap(), 64, &stop).unwrap(), 5);
        let guess = d.pending.as_ref().unwrap().guess;
        d.rollback(500, 8, 8, guess).unwrap();
        let mut committed = prompt.clone();
        committed.extend(&p.tokens);
        committed.push(guess);
        let next = d.propose(&committed, 8).unwrap();
        assert_eq!(next.reused, 4);
        assert_eq!(next.tokens.len(), 4, "the window is full: nothing more to draft");
        // A full window: no pre-draft at all.
        assert_eq!(d.pre_draft(*next.tokens.last().unwrap(), 64, &stop).unwrap(), 0);
    }
}
