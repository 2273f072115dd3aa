//! `ecspec family speedup`: in-process greedy speculative decoding with a family's static
//! draft against the target's own greedy decoding — same binary, same prompts, one process,
//! no link — reporting the decode speedup with its spread over prompts.
//!
//! Per prompt, in this order: the target alone (prefill, then N greedy tokens one forward
//! each), then speculative decoding (both prefill; then rounds: the draft proposes K tokens
//! greedily, the target scores the pending token and the K drafts in one block forward, the
//! longest agreeing prefix is kept plus the target's own next token; Leviathan et al. 2023,
//! arXiv 2211.17192, Algorithm 1 at temperature 0). Decode time excludes prefill (reported
//! apart as TTFT). The two outputs must be equal token for token; a difference is reported
//! and fails the command (block and single-token kernels can round a near-tie differently,
//! DESIGN §7).
//!
//! Each round is chosen by the edge's own [`RoundPlanner`] and its outcome fed back
//! ([`RoundPlanner::record`]), on this run's timings with no link
//! ([`RoundEstimator::in_process`]): `--drafter model` drafts `--draft-len` tokens every round
//! (the `fixed` policy); `lookup` drafts by context lookup where the context's last n-gram
//! occurred before ([`Lookup`]), at no model cost, taking every match
//! ([`RoundPlanner::taking_every_match`]), and is a plain target step without one; `hybrid`
//! weighs each round as the edge does — a lookup, the model's best K ≤ `--draft-len`, or a
//! cloud stream (the `ecspec` policy), here n plain target steps with no planning between
//! them — by expected goodput on the lookups' and the model's α (the model's known from the
//! manifest's `draft.acceptance`). `--min-confidence` is the policy's `p-min` stop rule. The
//! table reports lookup rounds apart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ecspec_edge::plan::{PlannerSettings, RoundReport};
use ecspec_edge::{DraftSource, Lookup, RoundEstimator, RoundPlan, RoundPlanner};
use ecspec_model::{LogitsFor, Session, Transformer};
use ecspec_spec::policies::{Capped, Ecspec, DEFAULT_STREAM};
use ecspec_spec::policy::{DraftLengthPolicy, Fixed, StopRule};
use ecspec_spec::sampling::argmax;
use ecspec_spec::verify::VerifyRule;

use ecspec_family::FamilyName;

/// `ecspec family speedup`
#[derive(Debug, Clone, Args)]
pub struct SpeedupArgs {
    /// Family manifest (TOML).
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// Built-in family the manifest belongs to.
    #[arg(long, value_enum, default_value = "smollm2")]
    pub base: FamilyName,
    /// Base GGUF (default: the manifest's `base.file`, else the cache).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Target versions measured (default: all).
    #[arg(long, value_delimiter = ',')]
    pub versions: Vec<String>,
    #[command(flatten)]
    pub workload: crate::prompts::WorkloadArgs,
    /// Draft length K of a round the draft model drafts (a lookup round drafts --lookup-len).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub draft_len: u32,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_tokens: u32,
    /// Stop drafting a round at the first token whose draft probability is below this (0: always
    /// draft K); a round whose first token is below it is a plain target step. Draft-confidence
    /// early exit as in BiLD (Kim et al. 2023, arXiv 2302.07863) and SpecDec++ (Huang et al.
    /// 2024, arXiv 2405.19715).
    #[arg(long, default_value_t = 0.0)]
    pub min_confidence: f32,
    #[command(flatten)]
    pub lookup: ecspec_run::LookupArgs,
    /// Write the per-prompt results here (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
}

/// One decode, timed.
#[derive(Default)]
struct Decode {
    tokens: Vec<u32>,
    ttft: Duration,
    decode: Duration,
    /// Rounds, drafted and accepted tokens, rejections (speculative only).
    rounds: u64,
    drafted: u64,
    accepted: u64,
    rejections: u64,
    /// Draft forwards, catch-up blocks included (speculative only).
    draft_forwards: u64,
    /// Time in draft forwards of one token (a draft step, not a catch-up block), and their
    /// count: the draft's cost per token.
    draft_step_time: Duration,
    draft_steps: u64,
    /// Rounds whose drafts came from context lookup, and their drafted and accepted tokens.
    lookup_rounds: u64,
    lookup_drafted: u64,
    lookup_accepted: u64,
}

fn stopped(t: u32, stop: &[u32]) -> bool {
    stop.contains(&t)
}

/// The target's own greedy decoding.
fn target_alone(
    target: &Arc<Transformer>,
    prompt: &[u32],
    n: usize,
    stop: &[u32],
) -> Result<Decode> {
    let t0 = Instant::now();
    let mut s = Session::new(target.clone());
    let mut l = s.forward(prompt, LogitsFor::Last)?;
    let mut tokens = vec![argmax(l.last())];
    let ttft = t0.elapsed();
    let t1 = Instant::now();
    while tokens.len() < n && !stopped(tokens[tokens.len() - 1], stop) {
        l = s.forward(&tokens[tokens.len() - 1..], LogitsFor::Last)?;
        tokens.push(argmax(l.last()));
    }
    Ok(Decode {
        tokens,
        ttft,
        decode: t1.elapsed(),
        ..Decode::default()
    })
}

/// How rounds draft: the model's draft length K and confidence floor, the drafter, and the
/// draft model's known per-token α.
#[derive(Debug, Clone, Copy)]
struct Drafting {
    k: usize,
    min_confidence: f32,
    source: DraftSource,
    lookup: Lookup,
    model_alpha: f64,
}

/// A target step's time before one was measured (s): this family's, BENCHMARKS.md. A draft
/// forward is assumed to cost 0.2 of it, the measured ratio.
const PRIOR_STEP_S: f64 = 0.013;

impl Drafting {
    /// The draft model only, K per round, no confidence floor.
    #[cfg(test)]
    fn model(k: usize) -> Self {
        Self {
            k,
            min_confidence: 0.0,
            source: DraftSource::Model,
            lookup: Lookup::default(),
            model_alpha: 0.0,
        }
    }

    /// The edge's round planner for these settings, in this process: `fixed:K` (`model`,
    /// `lookup`) or `ecspec:K` (`hybrid`), capped by the `p-min` stop rule of
    /// `--min-confidence`; greedy verification; no link; the model's α known.
    fn planner(&self) -> Result<RoundPlanner> {
        let cap: Box<dyn DraftLengthPolicy> = if self.source == DraftSource::Hybrid {
            Box::new(Ecspec::new(self.k, DEFAULT_STREAM))
        } else {
            Box::new(Fixed(self.k))
        };
        let policy: Box<dyn DraftLengthPolicy> = if self.min_confidence > 0.0 {
            Box::new(Capped {
                cap,
                stop: StopRule::PMin(self.min_confidence),
            })
        } else {
            cap
        };
        let settings = PlannerSettings {
            policy,
            source: self.source,
            lookup: self.lookup,
            rule: VerifyRule::Greedy,
            verify_switch: None,
            energy: None,
            load_aware: false,
        };
        let timing = RoundEstimator::in_process(0.2 * PRIOR_STEP_S, PRIOR_STEP_S);
        let alpha = self.model_alpha.clamp(0.0, 1.0);
        let planner = RoundPlanner::with_known_alpha(settings, alpha, timing)?;
        Ok(if self.source == DraftSource::Lookup {
            planner.taking_every_match()
        } else {
            planner
        })
    }
}

/// Greedy speculative decoding, draft and target in this process.
fn speculative(
    draft: &Arc<Transformer>,
    target: &Arc<Transformer>,
    prompt: &[u32],
    n: usize,
    how: Drafting,
    stop: &[u32],
) -> Result<Decode> {
    let planner = how.planner()?;
    let t0 = Instant::now();
    let mut ts = Session::new(target.clone());
    let mut ds = Session::new(draft.clone());
    let l = ts.forward(prompt, LogitsFor::Last)?;
    let out = vec![argmax(l.last())];
    ds.forward(prompt, LogitsFor::Last)?;
    let ttft = t0.elapsed();
    let t1 = Instant::now();
    let mut context = prompt.to_vec();
    context.push(out[0]);
    let mut s = Speculation {
        prompt,
        n,
        stop,
        ts,
        ds,
        out,
        context,
        planner,
        d: Decode {
            ttft,
            ..Decode::default()
        },
    };
    while !s.done() {
        s.round()?;
    }
    let Speculation { mut out, mut d, .. } = s;
    out.truncate(n);
    d.decode = t1.elapsed();
    d.tokens = out;
    Ok(d)
}

/// One prompt's speculative decoding after the prefill.
struct Speculation<'a> {
    prompt: &'a [u32],
    /// Tokens to generate.
    n: usize,
    stop: &'a [u32],
    /// Target and draft sessions.
    ts: Session,
    ds: Session,
    /// The generated tokens: the target's cache covers prompt + out[..len-1], the last one is
    /// pending.
    out: Vec<u32>,
    /// Prompt and output so far, for context lookup.
    context: Vec<u32>,
    planner: RoundPlanner,
    d: Decode,
}

impl Speculation<'_> {
    fn done(&self) -> bool {
        self.out.len() >= self.n || stopped(self.out[self.out.len() - 1], self.stop)
    }

    /// One planned round: a lookup, a model block, or a cloud stream of plain target steps.
    fn round(&mut self) -> Result<()> {
        // Room for the drafts and the target's own token; the last step may draft nothing.
        let room = self.n - self.out.len() - 1;
        match self.planner.plan(&self.context) {
            RoundPlan::Lookup { mut tokens, .. } => {
                tokens.truncate(room);
                let looked_up = !tokens.is_empty();
                self.verify(tokens, looked_up, Duration::ZERO, false)
            }
            RoundPlan::Model { k, stop, .. } => {
                let t = Instant::now();
                let drafts = self.draft(k.min(room), stop)?;
                self.verify(drafts, false, t.elapsed(), false)
            }
            RoundPlan::Stream { n, .. } => {
                // The cloud's own n tokens, not planned in between (as on the edge).
                for i in 0..n {
                    if i > 0 && self.done() {
                        break;
                    }
                    self.verify(Vec::new(), false, Duration::ZERO, i > 0)?;
                }
                Ok(())
            }
        }
    }

    /// Up to `k` greedy draft tokens after the committed ones: the draft's cache caught up
    /// first (one block), then a step per token; `stop` ends the block before a token it
    /// rejects.
    fn draft(&mut self, k: usize, stop: Option<StopRule>) -> Result<Vec<u32>> {
        let mut drafts = Vec::with_capacity(k);
        if k == 0 {
            return Ok(drafts);
        }
        let behind = self.out[self.ds.kv_len() - self.prompt.len()..].to_vec();
        let mut l = self.draft_forward(&behind)?;
        for i in 0..k {
            let row = l.last();
            let t = argmax(row);
            if stop.is_some_and(|s| stops_before(s, row)) {
                break;
            }
            drafts.push(t);
            if i + 1 < k {
                l = self.draft_forward(&[t])?;
            }
        }
        Ok(drafts)
    }

    /// One draft forward, counted; a one-token forward is a draft step and timed as one
    /// (catch-up blocks of several tokens are not a draft step's cost).
    fn draft_forward(&mut self, tokens: &[u32]) -> Result<ecspec_model::Logits> {
        let t = Instant::now();
        let l = self.ds.forward(tokens, LogitsFor::Last)?;
        self.d.draft_forwards += 1;
        if tokens.len() == 1 {
            self.d.draft_step_time += t.elapsed();
            self.d.draft_steps += 1;
        }
        Ok(l)
    }

    /// Verifies `drafts` (none: a plain target step) with the pending token in one block
    /// forward, commits the longest agreeing prefix and the target's own next token, and
    /// reports the round to the planner (`continuing`: a stream's later step).
    fn verify(
        &mut self,
        drafts: Vec<u32>,
        looked_up: bool,
        draft: Duration,
        continuing: bool,
    ) -> Result<()> {
        let k = drafts.len();
        let committed = self.prompt.len() + self.out.len();
        let mut block = vec![self.out[self.out.len() - 1]];
        block.extend(&drafts);
        let tv = Instant::now();
        let rows = self.ts.forward(&block, LogitsFor::All)?;
        let wait = tv.elapsed();
        let mut n_acc = 0;
        while n_acc < k && argmax(rows.row(n_acc)) == drafts[n_acc] {
            n_acc += 1;
        }
        let bonus = argmax(rows.row(n_acc));
        let d = &mut self.d;
        d.rounds += 1;
        d.drafted += k as u64;
        d.accepted += n_acc as u64;
        d.rejections += u64::from(n_acc < k);
        if looked_up {
            d.lookup_rounds += 1;
            d.lookup_drafted += k as u64;
            d.lookup_accepted += n_acc as u64;
        }
        self.planner.record(&RoundReport {
            looked_up,
            continuing,
            drafted: k,
            accepted: n_acc,
            reused: 0,
            draft,
            pre_draft_s: 0.0,
            wait,
            cloud_compute_s: wait.as_secs_f64(),
            row_cost_us: 0,
            uplink_bytes: 0,
            downlink_bytes: 0,
            sent_dists: false,
        });
        // Keep pending + accepted drafts in the target's cache; the bonus is the new pending.
        self.ts.truncate(committed + n_acc)?;
        self.ds.truncate(self.ds.kv_len().min(committed + n_acc))?;
        for t in drafts[..n_acc].iter().copied().chain([bonus]) {
            self.out.push(t);
            self.context.push(t);
        }
        if let Some(p) = self.out.iter().position(|t| stopped(*t, self.stop)) {
            self.out.truncate(p + 1);
        }
        Ok(())
    }
}

/// Whether `rule` ends drafting before the token of logits `row`: this command drops a token
/// below the `p-min` floor (`--min-confidence`) rather than sending it.
fn stops_before(rule: StopRule, row: &[f32]) -> bool {
    match rule {
        StopRule::PMin(t) => top_probability(row) < t,
        StopRule::MaxEntropy(h) => entropy(row) > h,
    }
}

/// The entropy (nats) of the softmax of a logits row.
fn entropy(row: &[f32]) -> f32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f32 = row.iter().map(|x| (x - m).exp()).sum();
    row.iter()
        .map(|x| (x - m).exp() / z)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum()
}

/// The largest softmax probability of a logits row (−∞ entries have probability 0).
fn top_probability(row: &[f32]) -> f32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f32 = row.iter().map(|x| (x - m).exp()).sum();
    1.0 / z
}

fn stats(v: &[f64]) -> (f64, f64, f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, sd, min, max)
}

/// Runs the comparison and prints a Markdown table (one row per version).
///
/// # Errors
/// Manifest, model and prompt errors; output that differs from the target's (named by
/// version and prompt).
pub fn run(a: SpeedupArgs) -> Result<()> {
    let (_, questions) = a.workload.questions()?;
    let fam = ecspec_run::open_family(&a.manifest, a.model.as_deref(), a.base)?;
    let draft = fam.draft()?;
    let stop = fam.base.tokenizer.stop_tokens().to_vec();
    let (n, k) = (a.max_tokens as usize, a.draft_len as usize);
    let lookup = a.lookup.lookup()?;
    // What the edge knows of its draft before measuring: the family's α (else nothing).
    let model_alpha = fam.manifest.draft.acceptance.unwrap_or(0.0);
    let versions: Vec<_> = fam
        .versions()
        .iter()
        .filter(|v| a.versions.is_empty() || a.versions.contains(&v.spec.name))
        .collect();
    if versions.is_empty() {
        bail!(
            "--versions {:?}: none of them is in {}",
            a.versions,
            a.manifest.display()
        );
    }
    let mut prompts = Vec::new();
    for q in &questions {
        let ids = ecspec_run::run::chat_ids(&fam.base, &q.turns[0], false)?;
        if ids.len() + n + k.max(lookup.draft_len) + 1
            < fam.base.transformer.config().context_length
        {
            prompts.push((q.category.clone(), ids));
        }
    }
    let mut jsonl = match &a.jsonl {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    println!(
        "| version | prompts | tokens | target decode (tok/s) | speculative decode (tok/s) | speedup: total (per-prompt mean ± sd, min–max) | α (per-token) | acceptance rate (accepted/drafted) | mean accepted tokens/round | draft cost per token / target's | lookup rounds (share, acceptance rate) | greedy = target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for v in versions {
        let (mut tt, mut st, mut toks) = (Duration::ZERO, Duration::ZERO, 0usize);
        let (mut rounds, mut drafted, mut accepted, mut rejections) = (0u64, 0u64, 0u64, 0u64);
        let (mut draft_time, mut draft_steps) = (Duration::ZERO, 0u64);
        let (mut lk_rounds, mut lk_drafted, mut lk_accepted) = (0u64, 0u64, 0u64);
        let mut ratios = Vec::new();
        for (cat, ids) in &prompts {
            let base = target_alone(&v.transformer, ids, n, &stop)?;
            let spec = speculative(
                &draft.transformer,
                &v.transformer,
                ids,
                n,
                Drafting {
                    k,
                    min_confidence: a.min_confidence,
                    source: a.lookup.drafter,
                    lookup,
                    model_alpha,
                },
                &stop,
            )?;
            if spec.tokens != base.tokens {
                let at = spec
                    .tokens
                    .iter()
                    .zip(&base.tokens)
                    .position(|(a, b)| a != b);
                bail!(
                    "version {} prompt ({cat}): speculative output differs from the target's greedy output at token {at:?}",
                    v.spec.name
                );
            }
            let m = base.tokens.len().saturating_sub(1).max(1);
            let (tb, ts) = (base.decode.as_secs_f64(), spec.decode.as_secs_f64());
            ratios.push(tb / ts);
            tt += base.decode;
            st += spec.decode;
            toks += m;
            rounds += spec.rounds;
            drafted += spec.drafted;
            accepted += spec.accepted;
            rejections += spec.rejections;
            draft_time += spec.draft_step_time;
            draft_steps += spec.draft_steps;
            lk_rounds += spec.lookup_rounds;
            lk_drafted += spec.lookup_drafted;
            lk_accepted += spec.lookup_accepted;
            if let Some(w) = jsonl.as_mut() {
                use std::io::Write;
                writeln!(
                    w,
                    "{}",
                    serde_json::json!({
                        "version": v.spec.name, "category": cat, "prompt_tokens": ids.len(),
                        "tokens": base.tokens.len(), "target_ttft_s": base.ttft.as_secs_f64(),
                        "target_decode_s": tb, "speculative_ttft_s": spec.ttft.as_secs_f64(),
                        "speculative_decode_s": ts, "speedup": tb / ts, "rounds": spec.rounds,
                        "drafted": spec.drafted, "accepted": spec.accepted,
                        "rejections": spec.rejections, "lookup_rounds": spec.lookup_rounds,
                        "lookup_drafted": spec.lookup_drafted,
                        "lookup_accepted": spec.lookup_accepted, "same_as_target": true,
                    })
                )?;
            }
        }
        let (mean, sd, min, max) = stats(&ratios);
        let target_tok_s = toks as f64 / tt.as_secs_f64();
        let spec_tok_s = toks as f64 / st.as_secs_f64();
        // Per draft step (one-token forward); none measured: no model step ran.
        let draft_cost = if draft_steps > 0 {
            format!(
                "{:.2}",
                draft_time.as_secs_f64() / draft_steps as f64 * target_tok_s
            )
        } else {
            "–".into()
        };
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2}× ({:.2} ± {:.2}, {:.2}–{:.2}) | {:.3} | {:.3} | {:.2} | {} | {} ({:.2}, {:.3}) | yes |",
            v.spec.name,
            prompts.len(),
            toks,
            target_tok_s,
            spec_tok_s,
            tt.as_secs_f64() / st.as_secs_f64(),
            mean,
            sd,
            min,
            max,
            accepted as f64 / (accepted + rejections).max(1) as f64,
            accepted as f64 / drafted.max(1) as f64,
            (accepted + rounds) as f64 / rounds.max(1) as f64,
            draft_cost,
            lk_rounds,
            lk_rounds as f64 / rounds.max(1) as f64,
            lk_accepted as f64 / lk_drafted.max(1) as f64,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecspec_model::tiny::{write_tiny_model, TinySpec};
    use ecspec_model::LoadedModel;

    #[test]
    fn speculative_output_is_the_targets_and_a_perfect_draft_is_always_accepted() {
        let dir = std::env::temp_dir().join(format!("ecspec-speedup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        write_tiny_model(&path, TinySpec::default()).unwrap();
        let m = LoadedModel::load(&path).unwrap();
        let target = m.transformer.clone();
        let weak = Arc::new(Transformer::shared_backbone_draft(&target, 1, None).unwrap());
        let prompt: Vec<u32> = (0..9).map(|i| (i * 13 % 90) as u32 + 3).collect();
        let alone = target_alone(&target, &prompt, 40, &[]).unwrap();
        assert_eq!(alone.tokens.len(), 40);
        for k in [1, 3, 4, 7] {
            let s = speculative(&weak, &target, &prompt, 40, Drafting::model(k), &[]).unwrap();
            assert_eq!(s.tokens, alone.tokens, "K = {k}");
            // Every round commits its accepted drafts plus one target token.
            assert_eq!(s.accepted + s.rounds, 39, "K = {k}");
            let p = speculative(&target, &target, &prompt, 40, Drafting::model(k), &[]).unwrap();
            assert_eq!(p.tokens, alone.tokens, "K = {k}, perfect draft");
            assert_eq!(p.rejections, 0, "K = {k}");
            assert_eq!(p.rounds, 39u64.div_ceil(k as u64 + 1), "K = {k}");
        }
        // A confidence floor drafts fewer tokens and changes nothing in the output; a floor
        // above 1 drafts nothing (every round a plain target step).
        let c = speculative(
            &weak,
            &target,
            &prompt,
            40,
            Drafting {
                min_confidence: 0.5,
                ..Drafting::model(4)
            },
            &[],
        )
        .unwrap();
        let all = speculative(&weak, &target, &prompt, 40, Drafting::model(4), &[]).unwrap();
        assert_eq!(c.tokens, alone.tokens);
        assert!(c.drafted < all.drafted, "{} vs {}", c.drafted, all.drafted);
        let none = speculative(
            &weak,
            &target,
            &prompt,
            40,
            Drafting {
                min_confidence: 1.5,
                ..Drafting::model(4)
            },
            &[],
        )
        .unwrap();
        assert_eq!(
            (none.tokens.clone(), none.drafted, none.rounds),
            (alone.tokens.clone(), 0, 39)
        );
        // Context lookup, alone or weighed against the model: the same output; the tiny
        // target's greedy output loops, so lookups happen. Alone the model never runs; beside a
        // draft known to be useless (α = 0) only as a probe; beside a perfect draft known as
        // such, it drafts and every drafted token is accepted. (Whether the perfect draft's
        // rounds beat plain steps depends on this machine's timings: the tiny draft costs as
        // much per token as its target, so the count of rounds is not pinned.)
        for (source, draft, alpha) in [
            (DraftSource::Lookup, &weak, 0.0),
            (DraftSource::Hybrid, &weak, 0.0),
            (DraftSource::Hybrid, &target, 0.95),
        ] {
            let how = Drafting {
                source,
                model_alpha: alpha,
                ..Drafting::model(3)
            };
            let s = speculative(draft, &target, &prompt, 40, how, &[]).unwrap();
            let what = format!("{source}, α = {alpha}");
            assert_eq!(s.tokens, alone.tokens, "{what}");
            assert_eq!(s.accepted + s.rounds, 39, "{what}");
            assert!(
                s.lookup_drafted <= 2 * s.lookup_rounds,
                "{what}: 2 tokens per lookup"
            );
            if source == DraftSource::Lookup {
                assert!(s.lookup_rounds >= 3 && s.lookup_accepted >= 3, "{what}");
                assert_eq!(
                    (s.draft_forwards, s.drafted),
                    (0, s.lookup_drafted),
                    "{what}"
                );
            } else if alpha == 0.0 {
                // The useless draft runs only as the policy's probe after a stream, K = 1.
                assert!(s.lookup_rounds >= 3 && s.lookup_accepted >= 3, "{what}");
                let probes = s.drafted - s.lookup_drafted;
                assert_eq!(s.draft_forwards, probes, "{what}");
                assert!(probes <= s.rounds / 16 + 1, "{what}: {probes} model rounds");
            } else {
                assert!(
                    s.drafted > s.lookup_drafted && s.draft_forwards > 0,
                    "{what}"
                );
                assert_eq!(
                    s.drafted - s.lookup_drafted,
                    s.accepted - s.lookup_accepted,
                    "{what}"
                );
            }
        }
        // A stop token ends both at the same place.
        let stop = [alone.tokens[10]];
        let first = alone.tokens.iter().position(|t| *t == stop[0]).unwrap();
        let a = target_alone(&target, &prompt, 40, &stop).unwrap();
        let s = speculative(&weak, &target, &prompt, 40, Drafting::model(4), &stop).unwrap();
        assert_eq!(a.tokens, alone.tokens[..=first]);
        assert_eq!(s.tokens, a.tokens);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
