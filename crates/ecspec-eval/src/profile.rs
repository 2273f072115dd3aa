//! `ecspec profile`: this machine's speed for the family's models — prefill and decode
//! tokens/s, and the time to verify a block of K tokens in one pass against K single passes.

use std::time::Instant;

use anyhow::{Context, Result};
use ecspec_model::{LogitsFor, Session, Transformer};
use serde::Serialize;

use clap::Args;
use ecspec_family::{info, FamilyName};
use ecspec_run::model_path;

/// `ecspec profile`
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// Model family.
    #[arg(long, value_enum, default_value = "smollm2")]
    pub family: FamilyName,
    /// Repeats (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the device-profile entries `ecspec bench --clock virtual` reads (the family's
    /// static and conventional drafts, and its target) as TOML, for a profile file.
    #[arg(long, conflicts_with = "json")]
    pub toml: bool,
    /// Batched verification: for each session count S, S sessions (each its own 128-token
    /// context) verify a block of `--batch-k` drafted tokens in one batched pass, against one
    /// pass per session; e.g. `--batch 1,4,16,64`. Reported as rows per second.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: Vec<u32>,
    /// Draft length K of each session's block in `--batch`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub batch_k: u32,
    /// The rows curve: time of one forward pass over N rows (positions) after 160 of
    /// context, for each N, e.g. `--rows 1,2,5,9,17,33,65`.
    #[arg(long, value_delimiter = ',', value_parser = parse_rows)]
    pub rows: Vec<usize>,
}

/// A row count for `profile --rows`: 1 to 512.
fn parse_rows(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=512).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a row count from 1 to 512")),
    }
}

/// One model's measured speeds.
#[derive(Debug, Serialize)]
pub struct ModelProfile {
    /// Model name.
    pub model: String,
    /// Compute threads.
    pub threads: usize,
    /// Prefill throughput over a 128-token prompt (tokens/s), median of the repeats.
    pub prefill_tok_s: f64,
    /// Decode throughput, single-token steps at ~130 positions (tokens/s), median.
    pub decode_tok_s: f64,
    /// Verification cost per draft length, medians.
    pub verify: Vec<VerifyCost>,
    /// The kernel path picked at run time (`avx2+fma`, `neon`, `scalar`).
    pub kernels: String,
    /// Weight matrices per storage type, e.g. `Q4_1 ×210`.
    pub weights: Vec<String>,
    /// Time of one forward pass over N rows (`--rows`), medians.
    pub rows: Vec<RowsCost>,
}

/// One forward pass over N rows (a block of N positions) after 160 positions of context.
#[derive(Debug, Serialize)]
pub struct RowsCost {
    /// Rows N.
    pub rows: usize,
    /// The pass (ms), median.
    pub pass_ms: f64,
}

/// What verifying K drafted tokens costs the target: one forward pass over K + 1 positions
/// (the last committed token and the K drafts), against K + 1 one-token passes.
#[derive(Debug, Serialize)]
pub struct VerifyCost {
    /// Draft length K.
    pub k: usize,
    /// One pass over K + 1 positions (ms).
    pub block_ms: f64,
    /// K + 1 one-token passes (ms).
    pub stepwise_ms: f64,
}

/// Batched verification of S sessions against serving them one at a time.
#[derive(Debug, Serialize)]
pub struct BatchCost {
    /// Sessions S.
    pub sessions: usize,
    /// Rows of the batched pass: S · (K + 1).
    pub rows: usize,
    /// One batched pass over every session's block (ms), median.
    pub batched_ms: f64,
    /// One pass per session, one after another (ms), median.
    pub one_at_a_time_ms: f64,
}

impl BatchCost {
    /// Rows verified per second, batched.
    pub fn batched_rows_per_s(&self) -> f64 {
        self.rows as f64 / (self.batched_ms / 1e3)
    }
    /// Rows verified per second, one session at a time.
    pub fn alone_rows_per_s(&self) -> f64 {
        self.rows as f64 / (self.one_at_a_time_ms / 1e3)
    }
}

/// Times `Transformer::forward_batch` over S sessions' blocks of K + 1 rows (each session at
/// its own 128-token context) against S separate passes, for each S in `sessions`.
fn batch_profile(
    t: &std::sync::Arc<Transformer>,
    sessions: &[u32],
    k: usize,
    repeats: usize,
) -> Result<Vec<BatchCost>> {
    let mut out = Vec::new();
    for &n in sessions {
        let n = n as usize;
        let mut caches: Vec<_> = (0..n)
            .map(|i| {
                let prompt: Vec<u32> = (0..128u32)
                    .map(|j| 200 + ((j + 7 * i as u32) * 37) % 5000)
                    .collect();
                let mut c = t.new_cache();
                t.forward(&mut c, &prompt, LogitsFor::Last).map(|_| c)
            })
            .collect::<Result<_, _>>()?;
        let blocks: Vec<Vec<u32>> = (0..n)
            .map(|i| (0..=k as u32).map(|j| 400 + j + i as u32).collect())
            .collect();
        let (mut batched, mut alone) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            let t0 = Instant::now();
            let mut items: Vec<ecspec_model::BatchItem<'_>> = caches
                .iter_mut()
                .zip(&blocks)
                .map(|(cache, b)| ecspec_model::BatchItem {
                    model: t,
                    cache,
                    tokens: b,
                    want: Some(LogitsFor::All),
                })
                .collect();
            for r in Transformer::forward_batch(&mut items)? {
                r?;
            }
            drop(items);
            batched.push(t0.elapsed().as_secs_f64() * 1e3);
            for c in caches.iter_mut() {
                c.truncate(128)?;
            }
            let t0 = Instant::now();
            for (c, b) in caches.iter_mut().zip(&blocks) {
                t.forward(c, b, LogitsFor::All)?;
            }
            alone.push(t0.elapsed().as_secs_f64() * 1e3);
            for c in caches.iter_mut() {
                c.truncate(128)?;
            }
        }
        out.push(BatchCost {
            sessions: n,
            rows: n * (k + 1),
            batched_ms: median(batched),
            one_at_a_time_ms: median(alone),
        });
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn profile(
    name: &str,
    t: &std::sync::Arc<Transformer>,
    repeats: usize,
    row_counts: &[usize],
) -> Result<ModelProfile> {
    let prompt: Vec<u32> = (0..128u32).map(|i| 200 + (i * 37) % 5000).collect();
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    let ks = [1usize, 4, 8, 16];
    let mut block: Vec<Vec<f64>> = vec![Vec::new(); ks.len()];
    let mut passes: Vec<Vec<f64>> = vec![Vec::new(); row_counts.len()];
    let mut single: Vec<Vec<f64>> = vec![Vec::new(); ks.len()];
    for _ in 0..repeats {
        let mut s = Session::new(t.clone());
        let t0 = Instant::now();
        s.forward(&prompt, LogitsFor::Last)?;
        prefill.push(prompt.len() as f64 / t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        for i in 0..32u32 {
            s.forward(&[300 + i], LogitsFor::Last)?;
        }
        decode.push(32.0 / t0.elapsed().as_secs_f64());
        let base = s.kv_len();
        for (j, &k) in ks.iter().enumerate() {
            let toks: Vec<u32> = (0..=k as u32).map(|i| 400 + i).collect();
            let t0 = Instant::now();
            s.forward(&toks, LogitsFor::All)?;
            block[j].push(t0.elapsed().as_secs_f64() * 1e3);
            s.truncate(base)?;
            let t0 = Instant::now();
            for &x in &toks {
                s.forward(&[x], LogitsFor::All)?;
            }
            single[j].push(t0.elapsed().as_secs_f64() * 1e3);
            s.truncate(base)?;
        }
        for (j, &n) in row_counts.iter().enumerate() {
            let toks: Vec<u32> = (0..n as u32).map(|i| 500 + i).collect();
            let t0 = Instant::now();
            s.forward(&toks, LogitsFor::All)?;
            passes[j].push(t0.elapsed().as_secs_f64() * 1e3);
            s.truncate(base)?;
        }
    }
    Ok(ModelProfile {
        model: name.to_string(),
        threads: std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        prefill_tok_s: median(prefill),
        decode_tok_s: median(decode),
        verify: ks
            .iter()
            .enumerate()
            .map(|(j, &k)| VerifyCost {
                k,
                block_ms: median(block[j].clone()),
                stepwise_ms: median(single[j].clone()),
            })
            .collect(),
        kernels: ecspec_model::kernels::selected().name().to_string(),
        weights: t
            .weight_types()
            .iter()
            .map(|(w, n)| format!("{} ×{n}", w.name()))
            .collect(),
        rows: row_counts
            .iter()
            .zip(passes)
            .map(|(&rows, v)| RowsCost {
                rows,
                pass_ms: median(v),
            })
            .collect(),
    })
}

/// Runs the profile.
pub fn run(args: ProfileArgs) -> Result<()> {
    if args.toml {
        print!(
            "{}",
            crate::bench::profile_toml(args.family, args.repeats.max(1))?
        );
        return Ok(());
    }
    let fam = info(args.family);
    if !args.batch.is_empty() {
        let path = model_path(None, fam.target)?;
        let m = ecspec_model::LoadedModel::load(&path)
            .with_context(|| format!("loading {}", path.display()))?;
        let k = args.batch_k as usize;
        let costs = batch_profile(&m.transformer, &args.batch, k, args.repeats.max(1))?;
        if args.json {
            println!("{}", serde_json::to_string(&costs)?);
            return Ok(());
        }
        println!(
            "{}: batched verification, K = {k} ({} rows a session) at 128 positions of context",
            fam.target,
            k + 1
        );
        println!("| sessions | rows | one batched pass | one pass per session | rows/s batched | rows/s one at a time | ratio |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for c in &costs {
            println!(
                "| {} | {} | {:.1} ms | {:.1} ms | {:.0} | {:.0} | {:.2}x |",
                c.sessions,
                c.rows,
                c.batched_ms,
                c.one_at_a_time_ms,
                c.batched_rows_per_s(),
                c.alone_rows_per_s(),
                c.one_at_a_time_ms / c.batched_ms
            );
        }
        return Ok(());
    }
    let mut names = vec![fam.target];
    if fam.draft_file != fam.target {
        names.push(fam.draft_file);
    }
    let mut out = Vec::new();
    if !args.json {
        println!(
            "kernels: {} on {}",
            ecspec_model::kernels::selected().name(),
            ecspec_model::kernels::cpu_summary()
        );
    }
    for name in names {
        let path = model_path(None, name)?;
        let m = ecspec_model::LoadedModel::load(&path)
            .with_context(|| format!("loading {}", path.display()))?;
        let p = profile(name, &m.transformer, args.repeats.max(1), &args.rows)?;
        if !args.json {
            println!(
                "{:<30} threads {}  prefill {:>7.1} tok/s  decode {:>6.1} tok/s  weights {}",
                p.model,
                p.threads,
                p.prefill_tok_s,
                p.decode_tok_s,
                p.weights.join(", ")
            );
            for v in &p.verify {
                println!(
                    "    verify K={:<2}: one pass over {:>2} positions {:>8.1} ms   vs {:>2} one-token passes {:>8.1} ms",
                    v.k,
                    v.k + 1,
                    v.block_ms,
                    v.k + 1,
                    v.stepwise_ms
                );
            }
            let one = p.rows.iter().find(|r| r.rows == 1).map(|r| r.pass_ms);
            for r in &p.rows {
                let ratio = one.map(|o| format!("  ({:.2}x one row)", r.pass_ms / o));
                println!(
                    "    pass over {:>3} rows: {:>8.1} ms{}",
                    r.rows,
                    r.pass_ms,
                    ratio.unwrap_or_default()
                );
            }
        }
        out.push(p);
    }
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(())
}
