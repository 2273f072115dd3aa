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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ecspec_model::{LogitsFor, Session, Transformer};
use ecspec_spec::sampling::argmax;

use crate::cli::FamilyName;

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
    /// Draft length K per round.
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
    /// Time in draft forwards, and their count (speculative only).
    draft_time: Duration,
    draft_forwards: u64,
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

/// Greedy speculative decoding, draft and target in this process.
fn speculative(
    draft: &Arc<Transformer>,
    target: &Arc<Transformer>,
    prompt: &[u32],
    n: usize,
    k: usize,
    min_confidence: f32,
    stop: &[u32],
) -> Result<Decode> {
    let t0 = Instant::now();
    let mut ts = Session::new(target.clone());
    let mut ds = Session::new(draft.clone());
    let l = ts.forward(prompt, LogitsFor::Last)?;
    // Everything before the last committed token is in both caches' prefixes as needed:
    // `out` holds the generated tokens; the target's cache covers prompt + out[..len-1].
    let mut out = vec![argmax(l.last())];
    ds.forward(prompt, LogitsFor::Last)?;
    let ttft = t0.elapsed();
    let t1 = Instant::now();
    let mut d = Decode {
        ttft,
        ..Decode::default()
    };
    while out.len() < n && !stopped(out[out.len() - 1], stop) {
        // Room for the drafts and the target's own token; the last step may draft nothing.
        let k = k.min(n - out.len() - 1);
        let committed = prompt.len() + out.len();
        let mut drafts = Vec::with_capacity(k);
        if k > 0 {
            // Draft: catch the draft's cache up with the committed tokens, then K greedy steps.
            let td = Instant::now();
            let behind = &out[ds.kv_len() - prompt.len()..];
            let mut l = ds.forward(behind, LogitsFor::Last)?;
            d.draft_forwards += 1;
            for i in 0..k {
                let row = l.last();
                let t = argmax(row);
                if min_confidence > 0.0 && top_probability(row) < min_confidence {
                    break;
                }
                drafts.push(t);
                if i + 1 < k {
                    l = ds.forward(&[t], LogitsFor::Last)?;
                    d.draft_forwards += 1;
                }
            }
            d.draft_time += td.elapsed();
        }
        let k = drafts.len();
        // Verify: pending token + drafts in one block.
        let mut block = vec![out[out.len() - 1]];
        block.extend(&drafts);
        let rows = ts.forward(&block, LogitsFor::All)?;
        let mut n_acc = 0;
        while n_acc < k && argmax(rows.row(n_acc)) == drafts[n_acc] {
            n_acc += 1;
        }
        let bonus = argmax(rows.row(n_acc));
        d.rounds += 1;
        d.drafted += k as u64;
        d.accepted += n_acc as u64;
        d.rejections += u64::from(n_acc < k);
        // Keep pending + accepted drafts in the target's cache; the bonus is the new pending.
        ts.truncate(committed + n_acc)?;
        ds.truncate(ds.kv_len().min(committed + n_acc))?;
        out.extend(&drafts[..n_acc]);
        out.push(bonus);
        if let Some(p) = out.iter().position(|t| stopped(*t, stop)) {
            out.truncate(p + 1);
        }
    }
    out.truncate(n);
    d.decode = t1.elapsed();
    d.tokens = out;
    Ok(d)
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
    let fam = crate::family_cmd::open_family(&a.manifest, a.model.as_deref(), a.base)?;
    let draft = fam.draft()?;
    let stop = fam.base.tokenizer.stop_tokens().to_vec();
    let (n, k) = (a.max_tokens as usize, a.draft_len as usize);
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
        let ids = crate::run::chat_ids(&fam.base, &q.turns[0], false)?;
        if ids.len() + n + k + 1 < fam.base.transformer.config().context_length {
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
        "| version | prompts | tokens | target decode (tok/s) | speculative decode (tok/s) | speedup: total (per-prompt mean ± sd, min–max) | α (per-token) | acceptance rate (accepted/drafted) | mean accepted tokens/round | draft cost per token / target's | greedy = target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for v in versions {
        let (mut tt, mut st, mut toks) = (Duration::ZERO, Duration::ZERO, 0usize);
        let (mut rounds, mut drafted, mut accepted, mut rejections) = (0u64, 0u64, 0u64, 0u64);
        let (mut draft_time, mut draft_fw) = (Duration::ZERO, 0u64);
        let mut ratios = Vec::new();
        for (cat, ids) in &prompts {
            let base = target_alone(&v.transformer, ids, n, &stop)?;
            let spec = speculative(
                &draft.transformer,
                &v.transformer,
                ids,
                n,
                k,
                a.min_confidence,
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
            draft_time += spec.draft_time;
            draft_fw += spec.draft_forwards;
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
                        "rejections": spec.rejections, "same_as_target": true,
                    })
                )?;
            }
        }
        let (mean, sd, min, max) = stats(&ratios);
        let target_tok_s = toks as f64 / tt.as_secs_f64();
        let spec_tok_s = toks as f64 / st.as_secs_f64();
        let draft_per_token = draft_time.as_secs_f64() / draft_fw.max(1) as f64;
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2}× ({:.2} ± {:.2}, {:.2}–{:.2}) | {:.3} | {:.3} | {:.2} | {:.2} | yes |",
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
            draft_per_token * target_tok_s,
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
            let s = speculative(&weak, &target, &prompt, 40, k, 0.0, &[]).unwrap();
            assert_eq!(s.tokens, alone.tokens, "K = {k}");
            // Every round commits its accepted drafts plus one target token.
            assert_eq!(s.accepted + s.rounds, 39, "K = {k}");
            let p = speculative(&target, &target, &prompt, 40, k, 0.0, &[]).unwrap();
            assert_eq!(p.tokens, alone.tokens, "K = {k}, perfect draft");
            assert_eq!(p.rejections, 0, "K = {k}");
            assert_eq!(p.rounds, 39u64.div_ceil(k as u64 + 1), "K = {k}");
        }
        // A confidence floor drafts fewer tokens and changes nothing in the output; a floor
        // above 1 drafts nothing (every round a plain target step).
        let c = speculative(&weak, &target, &prompt, 40, 4, 0.5, &[]).unwrap();
        let all = speculative(&weak, &target, &prompt, 40, 4, 0.0, &[]).unwrap();
        assert_eq!(c.tokens, alone.tokens);
        assert!(c.drafted < all.drafted, "{} vs {}", c.drafted, all.drafted);
        let none = speculative(&weak, &target, &prompt, 40, 4, 1.5, &[]).unwrap();
        assert_eq!(
            (none.tokens.clone(), none.drafted, none.rounds),
            (alone.tokens.clone(), 0, 39)
        );
        // A stop token ends both at the same place.
        let stop = [alone.tokens[10]];
        let first = alone.tokens.iter().position(|t| *t == stop[0]).unwrap();
        let a = target_alone(&target, &prompt, 40, &stop).unwrap();
        let s = speculative(&weak, &target, &prompt, 40, 4, 0.0, &stop).unwrap();
        assert_eq!(a.tokens, alone.tokens[..=first]);
        assert_eq!(s.tokens, a.tokens);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
