//! Iteration-level (continuous) batching of every session's target work, as in Orca (Yu et al.
//! 2022) and vLLM: each iteration takes, from every session that has work, that work — a
//! drafted block to verify (K + 1 rows), a streaming step (1 row) or a chunk of a prefill — up
//! to a row budget, and runs **one** forward pass over all those rows
//! ([`Transformer::forward_batch`]); then each session's own verification rule decides its
//! verdict.
//!
//! Sessions submit work with [`Scheduler::submit`] and await the result; the session (with its
//! KV cache) moves into the scheduler and back, so no lock is held across an await. The
//! iteration loop is a task spawned on the submitting runtime when work arrives and no loop is
//! running, and it ends when the queue is empty: the scheduler needs no runtime of its own (the
//! virtual clock runs each request on a fresh paused runtime). Its passes run on the runtime
//! that started the loop, so one server must not be shared by runtimes running at the same
//! time (`ecspec bench` gives each of its parallel scenarios a server of its own).
//!
//! **Batch policy (fairness).** Work is served in arrival order. Rounds and streaming steps
//! first, oldest first, while their rows fit `max_batch_tokens` (the oldest always runs, even
//! if it is larger than the budget); then prefill chunks, oldest first, in the rows left —
//! but the oldest waiting prefill always gets at least `min_prefill_chunk` rows, so a stream
//! of rounds cannot starve a prompt, and no prompt can stall the rounds by more than one
//! chunk. Work left out of an iteration keeps its place and goes first in the next. A prefill
//! whose edge is gone (its result receiver dropped) is dropped at the next chunk boundary.
//!
//! **Invariant:** a session's tokens and logits do not depend on what else shares its batch
//! (the forward pass computes every row on its own; `crates/ecspec-model/tests/batch.rs`,
//! section 7 of `crates/ecspec-cloud/tests/server.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecspec_model::{Logits, LogitsFor, Transformer};
use ecspec_spec::compact::CompactDist;
use ecspec_spec::compute::CloudCompute;
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::target::{RoundError, RoundOutcome, TargetSession};

/// What a session asks of one step.
#[derive(Debug, Clone)]
pub enum Work {
    /// Prefill the prompt (in chunks) and pick the first token.
    Prefill,
    /// Verify `draft` (empty: one streaming step) with `dists` in rejection mode.
    Round {
        /// Drafted token ids.
        draft: Vec<u32>,
        /// Compact draft distributions (rejection mode) or empty.
        dists: Vec<CompactDist>,
    },
}

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Rows per forward pass (`--max-batch-tokens`).
    pub max_batch_tokens: usize,
    /// Rows the oldest waiting prefill gets in every iteration, whatever else runs.
    pub min_prefill_chunk: usize,
    /// Virtual clock: an iteration takes [`CloudCompute::iteration`] of its rows (slept on
    /// tokio's clock, which the caller pauses). None: the live clock.
    pub virtual_compute: Option<CloudCompute>,
}

/// The result of a submitted step: the session back, and what the step committed (for a
/// prefill, the first token; `compute` is the time of the passes it took part in).
pub type Finished = (TargetSession, Result<RoundOutcome, RoundError>);

/// The scheduler has stopped (its task was cancelled with the runtime).
#[derive(Debug, thiserror::Error)]
#[error("the cloud's batch scheduler stopped")]
pub struct SchedulerStopped;

struct Job {
    /// Arrival order: what fairness is decided on.
    seq: u64,
    session: TargetSession,
    work: Work,
    reply: oneshot::Sender<Finished>,
    /// Compute time of the passes this job took part in so far.
    compute: Duration,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    next_seq: u64,
    running: bool,
    /// The marginal time per row, fitted over passes.
    row_time: RowTimeFit,
}

/// Exponentially weighted least squares of a pass's time against its rows, t ≈ a + b·rows,
/// over passes without prompt rows (which cost another slope): b is the marginal time per
/// row that load-aware edges are charged (`Verdict::row_cost_us`).
#[derive(Debug, Default, Clone, Copy)]
struct RowTimeFit {
    w: f64,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
}

impl RowTimeFit {
    /// Weight of the past per pass: about the last 50 passes count.
    const DECAY: f64 = 0.98;

    fn observe(&mut self, rows: usize, seconds: f64) {
        let d = Self::DECAY;
        let x = rows as f64;
        self.w = self.w * d + 1.0;
        self.x = self.x * d + x;
        self.y = self.y * d + seconds;
        self.xx = self.xx * d + x * x;
        self.xy = self.xy * d + x * seconds;
    }

    /// b (s/row), once the passes seen spread over enough row counts to tell it; never < 0.
    fn per_row(&self) -> Option<f64> {
        let var = self.xx / self.w.max(1e-12) - (self.x / self.w.max(1e-12)).powi(2);
        if self.w < 2.0 || var < 0.25 {
            return None;
        }
        let cov = self.xy / self.w - (self.x / self.w) * (self.y / self.w);
        Some((cov / var).max(0.0))
    }
}

/// The batch scheduler of one server (see the module docs).
pub struct Scheduler {
    config: SchedulerConfig,
    queue: Mutex<Queue>,
    metrics: Arc<Metrics>,
}

/// One job's share of an iteration.
struct Planned {
    job: Job,
    tokens: Vec<u32>,
    want: Option<LogitsFor>,
    kv_before: usize,
    /// The block could not be formed (reported without running it).
    error: Option<RoundError>,
}

impl Scheduler {
    /// A scheduler recording into `metrics`.
    pub fn new(config: SchedulerConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            config,
            queue: Mutex::new(Queue::default()),
            metrics,
        })
    }

    /// Queues `work` for `session` and waits for its result.
    ///
    /// # Errors
    /// [`SchedulerStopped`] when the iteration loop was cancelled (its runtime shut down).
    pub async fn submit(
        self: &Arc<Self>,
        session: TargetSession,
        work: Work,
    ) -> Result<Finished, SchedulerStopped> {
        let (reply, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().expect("scheduler queue poisoned");
            let seq = q.next_seq;
            q.next_seq += 1;
            q.jobs.push(Job {
                seq,
                session,
                work,
                reply,
                compute: Duration::ZERO,
            });
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).drive());
        }
        rx.await.map_err(|_| SchedulerStopped)
    }

    /// The iteration loop: runs while there is work.
    async fn drive(self: Arc<Self>) {
        // If this task is cancelled (its runtime shut down), clears `running` and drops the
        // queued jobs, so their sessions get `SchedulerStopped` instead of waiting forever and
        // the next submit starts a new loop. Disarmed on a normal exit, which clears `running`
        // itself under the same lock that saw the queue empty.
        struct Running<'a> {
            queue: &'a Mutex<Queue>,
            armed: bool,
        }
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                if !self.armed {
                    return;
                }
                if let Ok(mut q) = self.queue.lock() {
                    q.running = false;
                    q.jobs.clear();
                }
            }
        }
        let mut guard = Running {
            queue: &self.queue,
            armed: true,
        };
        loop {
            let planned = {
                let mut q = self.queue.lock().expect("scheduler queue poisoned");
                let planned = self.plan(&mut q.jobs);
                if planned.is_empty() {
                    q.running = false;
                    guard.armed = false;
                    return;
                }
                planned
            };
            let vc = self.config.virtual_compute;
            let ran = tokio::task::spawn_blocking(move || run_iteration(planned)).await;
            let (planned, result, rows, elapsed) = match ran {
                Ok(r) => r,
                Err(e) => {
                    // The pass panicked: its sessions are lost; their edges get an error (the
                    // reply senders were dropped with them).
                    tracing::error!("a batched forward pass failed: {e}");
                    continue;
                }
            };
            let took = match vc {
                Some(vc) => {
                    let t = vc.iteration(rows.decode, rows.prefill);
                    tokio::time::sleep(t).await;
                    t
                }
                None => elapsed,
            };
            self.metrics
                .record_iteration(rows.decode + rows.prefill, rows.prefill, took);
            let per_row = {
                let mut q = self.queue.lock().expect("scheduler queue poisoned");
                if rows.prefill == 0 && rows.decode > 0 {
                    q.row_time.observe(rows.decode, took.as_secs_f64());
                }
                match vc {
                    // The profile's own slope: exact, and the same on every machine.
                    Some(vc) => Some(vc.verify_per_token_s),
                    None => q.row_time.per_row(),
                }
            };
            // Sessions whose block ran in this pass, less one.
            let sharing = planned.iter().filter(|p| !p.tokens.is_empty()).count();
            let cost = per_row.unwrap_or(0.0) * sharing.saturating_sub(1) as f64;
            let row_cost = Duration::try_from_secs_f64(cost).unwrap_or(Duration::ZERO);
            self.settle(planned, result, took, row_cost);
            // Let the sessions just answered come back with their next step (a streaming
            // session resubmits at once) before the next batch is formed: otherwise they miss
            // it, sessions alternate between passes and each waits two passes a token.
            let mut queued = usize::MAX;
            for _ in 0..8 {
                tokio::task::yield_now().await;
                let n = self
                    .queue
                    .lock()
                    .expect("scheduler queue poisoned")
                    .jobs
                    .len();
                if n == queued {
                    break;
                }
                queued = n;
            }
        }
    }

    /// Takes this iteration's work out of `jobs` (see the module docs for the policy).
    fn plan(&self, jobs: &mut Vec<Job>) -> Vec<Planned> {
        // Edges that went away: their work is dropped (a prefill stops at this chunk
        // boundary).
        jobs.retain(|j| !j.reply.is_closed());
        jobs.sort_by_key(|j| j.seq);
        let budget = self.config.max_batch_tokens.max(1);
        let mut rows = 0;
        let mut take = vec![None; jobs.len()];
        for (i, j) in jobs.iter().enumerate() {
            if let Work::Round { draft, .. } = &j.work {
                let n = draft.len() + 1;
                if rows == 0 || rows + n <= budget {
                    take[i] = Some(n);
                    rows += n;
                }
            }
        }
        let mut first_prefill = true;
        for (i, j) in jobs.iter().enumerate() {
            if matches!(j.work, Work::Prefill) {
                let left = j.session.prefill_left();
                if left == 0 {
                    // Nothing to prefill: planned so that it is answered (with an error).
                    take[i] = Some(0);
                    continue;
                }
                let floor = if first_prefill {
                    self.config.min_prefill_chunk.max(1)
                } else {
                    0
                };
                let n = left.min(budget.saturating_sub(rows).max(floor));
                first_prefill = false;
                if n > 0 {
                    take[i] = Some(n);
                    rows += n;
                }
            }
        }
        let mut planned = Vec::new();
        let mut kept = Vec::with_capacity(jobs.len());
        for (j, t) in std::mem::take(jobs).into_iter().zip(take) {
            match t {
                Some(n) => planned.push(plan_job(j, n)),
                None => kept.push(j),
            }
        }
        *jobs = kept;
        planned
    }

    /// Hands each finished job its result; unfinished prefills go back to the queue with their
    /// place.
    fn settle(
        &self,
        planned: Vec<Planned>,
        result: Result<Vec<StepResult>, String>,
        took: Duration,
        row_cost: Duration,
    ) {
        let mut back = Vec::new();
        match result {
            Ok(steps) => {
                for (mut p, step) in planned.into_iter().zip(steps) {
                    p.job.compute += took;
                    match step {
                        StepResult::Pending => back.push(p.job),
                        StepResult::Done(mut r) => {
                            if let Ok(out) = r.as_mut() {
                                out.compute = match p.job.work {
                                    Work::Prefill => p.job.compute,
                                    Work::Round { .. } => took,
                                };
                                out.row_cost = row_cost;
                            }
                            let _ = p.job.reply.send((p.job.session, r));
                        }
                    }
                }
            }
            Err(e) => {
                for p in planned {
                    let err = RoundError::BadRound(format!("the batched forward pass failed: {e}"));
                    let _ = p.job.reply.send((p.job.session, Err(err)));
                }
            }
        }
        if !back.is_empty() {
            self.queue
                .lock()
                .expect("scheduler queue poisoned")
                .jobs
                .extend(back);
        }
    }
}

/// A job's block for this iteration: `n` rows (a round's whole block, or a prefill chunk).
fn plan_job(job: Job, n: usize) -> Planned {
    let kv_before = job.session.kv_len();
    let (tokens, want, error) = match &job.work {
        Work::Prefill if job.session.prefill_left() == 0 => (
            Vec::new(),
            None,
            Some(RoundError::BadRound(
                "the prompt was already prefilled".into(),
            )),
        ),
        Work::Prefill => {
            let (t, w) = job.session.prefill_chunk(n);
            (t.to_vec(), w, None)
        }
        Work::Round { draft, dists } => match job.session.round_block(draft, dists) {
            Ok(b) => (b, Some(LogitsFor::All), None),
            Err(e) => (Vec::new(), None, Some(e)),
        },
    };
    Planned {
        job,
        tokens,
        want,
        kv_before,
        error,
    }
}

/// What an iteration did for one job.
enum StepResult {
    /// A prefill chunk that was not the prompt's last.
    Pending,
    /// The step's result.
    Done(Result<RoundOutcome, RoundError>),
}

/// Rows of an iteration: drafted blocks and streaming steps, prompt chunks.
#[derive(Debug, Clone, Copy, Default)]
struct Rows {
    decode: usize,
    prefill: usize,
}

/// One forward pass over every planned block (grouped by base weights: all target versions of
/// one family share theirs), then each job's verdict. Runs on a blocking thread.
#[allow(clippy::type_complexity)]
fn run_iteration(
    mut planned: Vec<Planned>,
) -> (
    Vec<Planned>,
    Result<Vec<StepResult>, String>,
    Rows,
    Duration,
) {
    let t0 = Instant::now();
    let mut rows = Rows::default();
    for p in &planned {
        match p.job.work {
            Work::Prefill => rows.prefill += p.tokens.len(),
            Work::Round { .. } => rows.decode += p.tokens.len(),
        }
    }
    // Jobs whose block could not be formed skip the pass; the rest are grouped by base.
    let mut bases: Vec<Arc<Transformer>> = Vec::new();
    let mut group = vec![None; planned.len()];
    for (i, p) in planned.iter().enumerate() {
        if p.error.is_some() {
            continue;
        }
        let m = p.job.session.model();
        group[i] = Some(match bases.iter().position(|b| b.shares_base_with(m)) {
            Some(g) => g,
            None => {
                bases.push(Arc::clone(m));
                bases.len() - 1
            }
        });
    }
    let mut logits: Vec<Option<ecspec_model::Result<Option<Logits>>>> =
        (0..planned.len()).map(|_| None).collect();
    for g in 0..bases.len() {
        let mut items: Vec<_> = planned
            .iter_mut()
            .zip(&group)
            .filter(|(_, gi)| **gi == Some(g))
            .map(|(p, _)| {
                let Planned {
                    job, tokens, want, ..
                } = p;
                job.session.batch_item(tokens, *want)
            })
            .collect();
        let out = match Transformer::forward_batch(&mut items) {
            Ok(o) => o,
            Err(e) => {
                drop(items);
                // Groups before this one already appended their blocks: roll every cache
                // back, so the failed pass commits nothing anywhere.
                for p in planned.iter_mut() {
                    let _ = p.job.session.rollback_kv(p.kv_before);
                }
                return (planned, Err(e.to_string()), rows, t0.elapsed());
            }
        };
        drop(items);
        let ids = group.iter().enumerate().filter(|(_, gi)| **gi == Some(g));
        for ((i, _), r) in ids.zip(out) {
            logits[i] = Some(r);
        }
    }
    let mut steps = Vec::with_capacity(planned.len());
    for (p, l) in planned.iter_mut().zip(logits) {
        let s = &mut p.job.session;
        let step = match (&p.job.work, l, p.error.take()) {
            (_, _, Some(e)) => StepResult::Done(Err(e)),
            (Work::Prefill, Some(Ok(l)), None) => match s.finish_prefill_chunk(l) {
                Ok(None) => StepResult::Pending,
                Ok(Some(out)) => StepResult::Done(Ok(out)),
                Err(e) => StepResult::Done(Err(e)),
            },
            (Work::Round { draft, dists }, Some(Ok(Some(l))), None) => {
                StepResult::Done(s.finish_round(draft, dists, p.kv_before, &l))
            }
            (_, Some(Err(e)), None) => StepResult::Done(Err(e.into())),
            (_, _, None) => StepResult::Done(Err(RoundError::BadRound(
                "a batched pass returned no logits for a round".into(),
            ))),
        };
        steps.push(step);
    }
    (planned, Ok(steps), rows, t0.elapsed())
}
