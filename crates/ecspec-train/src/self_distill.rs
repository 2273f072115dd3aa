//! Self-distillation data: the base model's own answers to chat prompts, greedy and sampled.
//!
//! Speculative acceptance is measured on the target's outputs, not on human text, so a draft
//! trained on what the base itself says in answer to chat prompts learns the distribution it
//! is tested on (self-distillation, as in Medusa-2, Cai et al. 2024, arXiv 2401.10774, §3.3,
//! and the regenerated training data of EAGLE, Li et al. 2024, arXiv 2401.15077, §4). The
//! prompts come from [`crate::chat_prompts`].
//!
//! Output: one JSON object per line,
//! `{"index", "temperature", "prompt", "prompt_tokens", "ids", "text"}`, where `ids` is the
//! chat-templated prompt followed by the answer (ending in the stop token when the model
//! stopped), exactly the ids the runtime saw. [`crate::corpus`] reads such `.jsonl` files as
//! token units. A run that is interrupted keeps every finished line; run again with the same
//! file and it generates only the prompts still missing (a torn last line is dropped).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ecspec_model::{
    encode_chat, ChatMessage, ChatTemplate, GgufTokenizer, LogitsFor, Role, Session, Transformer,
};
use ecspec_spec::sampling::{argmax, rng_for, sample, target_distribution, SamplingParams};

use crate::error::{Result, TrainError};
use crate::trainer::TrainReporter;

/// Settings of a generation run.
#[derive(Debug, Clone)]
pub struct SelfDistillConfig {
    /// Answer tokens at most per prompt.
    pub max_new_tokens: usize,
    /// Temperatures, used in turn: prompt i gets `temperatures[i % len]` (0 = greedy).
    pub temperatures: Vec<f32>,
    /// Seed of the sampled answers (prompt i uses stream i).
    pub seed: u64,
    /// Prompts generated at once, each on its own thread.
    pub jobs: usize,
}

/// One generated sample (a line of the output file).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Index of its prompt.
    pub index: usize,
    /// Temperature it was generated at (0 = greedy).
    pub temperature: f32,
    /// The prompt text.
    pub prompt: String,
    /// Length of the chat-templated prompt at the start of `ids`.
    pub prompt_tokens: usize,
    /// Prompt then answer ids.
    pub ids: Vec<u32>,
    /// The answer, decoded.
    pub text: String,
}

/// The samples already in `path` (none when it does not exist). A last line that does not
/// parse (a run killed mid-write) is skipped; a bad line elsewhere is an error. The file is
/// only read ([`generate`] cuts a torn last line off before appending).
///
/// # Errors
/// I/O errors; [`TrainError::Corpus`] naming the line that is not a sample.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>> {
    Ok(parse_samples(path)?.0)
}

/// The samples of `path` and the length in bytes of its whole lines.
fn parse_samples(path: &Path) -> Result<(Vec<Sample>, u64)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let mut out = Vec::new();
    let mut good_bytes = 0;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Sample>(line) {
            Ok(s) if line.ends_with('\n') => {
                out.push(s);
                good_bytes += line.len() as u64;
            }
            _ if i + 1 == lines.len() => {
                tracing::warn!("{}: ignoring a torn last line", path.display())
            }
            Ok(_) | Err(_) => {
                return Err(TrainError::Corpus(format!(
                    "{} line {}: not a self-distillation sample",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok((out, good_bytes))
}

/// Generates one answer of `base` to `prompt_ids`.
fn answer(
    base: &Arc<Transformer>,
    stop: &[u32],
    prompt_ids: &[u32],
    params: &SamplingParams,
    stream: u64,
    max_new: usize,
) -> Result<Vec<u32>> {
    let mut session = Session::new(base.clone());
    let mut rng = rng_for(params.seed, stream);
    let mut logits = session.forward(prompt_ids, LogitsFor::Last)?;
    let mut out = Vec::new();
    for _ in 0..max_new {
        let row = logits.last();
        let next = if params.is_greedy() {
            argmax(row)
        } else {
            let p =
                target_distribution(row, params).map_err(|e| TrainError::Config(e.to_string()))?;
            sample(&p, &mut rng).map_err(|e| TrainError::Config(e.to_string()))?
        };
        out.push(next);
        if stop.contains(&next) {
            break;
        }
        logits = session.forward(&[next], LogitsFor::Last)?;
    }
    Ok(out)
}

/// Generates the base's answers to `prompts` into `out` (appending; prompts whose index is
/// already there are skipped). Returns every sample in the file afterwards, by index.
///
/// # Errors
/// Model errors; I/O errors; [`TrainError::Config`] for no temperatures, a negative or NaN
/// temperature, or `jobs == 0`.
pub fn generate(
    base: &Arc<Transformer>,
    tokenizer: &GgufTokenizer,
    template: Option<&ChatTemplate>,
    prompts: &[String],
    cfg: &SelfDistillConfig,
    out: &Path,
    reporter: &mut (dyn TrainReporter + Send),
) -> Result<Vec<Sample>> {
    if cfg.temperatures.is_empty()
        || cfg
            .temperatures
            .iter()
            .any(|t| !(t.is_finite() && *t >= 0.0))
    {
        return Err(TrainError::Config(format!(
            "temperatures {:?}: give at least one, each finite and >= 0",
            cfg.temperatures
        )));
    }
    if cfg.jobs == 0 {
        return Err(TrainError::Config("jobs must be at least 1".into()));
    }
    let (existing, good_bytes) = parse_samples(out)?;
    let done: BTreeSet<usize> = existing.iter().map(|s| s.index).collect();
    let todo: Vec<usize> = (0..prompts.len()).filter(|i| !done.contains(i)).collect();
    let context = base.config().context_length;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| TrainError::io(out, e))?;
    // Cut a torn last line (a run killed mid-write) before appending after it.
    file.set_len(good_bytes)
        .map_err(|e| TrainError::io(out, e))?;
    reporter.stage(
        &format!(
            "generating {} answers ({} already in {})",
            todo.len(),
            done.len(),
            out.display()
        ),
        todo.len() as u64,
    );
    let queue = Mutex::new(todo.into_iter());
    let shared = Mutex::new((file, reporter, 0u64));
    let first_error: Mutex<Option<TrainError>> = Mutex::new(None);
    let work = || -> Result<()> {
        loop {
            let Some(i) = queue.lock().unwrap_or_else(|e| e.into_inner()).next() else {
                return Ok(());
            };
            let temperature = cfg.temperatures[i % cfg.temperatures.len()];
            let msgs = [ChatMessage {
                role: Role::User,
                content: prompts[i].clone(),
            }];
            let prompt_ids = match template {
                Some(t) => encode_chat(tokenizer, &t.render_parts(&msgs, true))?,
                None => tokenizer.encode(&prompts[i], false)?,
            };
            if prompt_ids.len() + cfg.max_new_tokens > context {
                tracing::warn!("prompt {i} is {} tokens; skipped", prompt_ids.len());
                continue;
            }
            let params = SamplingParams {
                temperature,
                ..SamplingParams::greedy(cfg.seed)
            };
            let ans = answer(
                base,
                tokenizer.stop_tokens(),
                &prompt_ids,
                &params,
                i as u64,
                cfg.max_new_tokens,
            )?;
            let shown: Vec<u32> = ans
                .iter()
                .copied()
                .filter(|t| !tokenizer.stop_tokens().contains(t))
                .collect();
            let s = Sample {
                index: i,
                temperature,
                prompt: prompts[i].clone(),
                prompt_tokens: prompt_ids.len(),
                text: tokenizer.decode(&shown),
                ids: [prompt_ids, ans].concat(),
            };
            let mut line =
                serde_json::to_string(&s).map_err(|e| TrainError::Config(e.to_string()))?;
            line.push('\n');
            let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
            let (file, reporter, n) = &mut *g;
            file.write_all(line.as_bytes())
                .map_err(|e| TrainError::io(out, e))?;
            *n += 1;
            reporter.advance(*n);
        }
    };
    std::thread::scope(|sc| {
        for _ in 0..cfg.jobs {
            sc.spawn(|| {
                if let Err(e) = work() {
                    // Stop the others at their next prompt; keep the first error.
                    queue
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .by_ref()
                        .for_each(drop);
                    first_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let mut all = read_samples(out)?;
    all.sort_by_key(|s| s.index);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::NoReport;

    fn tiny(dir: &Path) -> (Arc<Transformer>, Arc<GgufTokenizer>) {
        let path = dir.join("tiny.gguf");
        ecspec_model::tiny::write_tiny_model(&path, ecspec_model::tiny::TinySpec::default())
            .unwrap();
        let m = ecspec_model::LoadedModel::load(&path).unwrap();
        (m.transformer, m.tokenizer)
    }

    #[test]
    fn greedy_answers_equal_the_base_and_an_interrupted_run_resumes() {
        let dir = std::env::temp_dir().join(format!("ecspec-selfdistill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("samples.jsonl");
        let _ = std::fs::remove_file(&out);
        let (base, tok) = tiny(&dir);
        let prompts: Vec<String> = (0..6).map(|i| format!("prompt number {i}")).collect();
        let cfg = SelfDistillConfig {
            max_new_tokens: 5,
            temperatures: vec![0.0, 1.0],
            seed: 3,
            jobs: 2,
        };
        let all = generate(&base, &tok, None, &prompts, &cfg, &out, &mut NoReport).unwrap();
        assert_eq!(
            all.iter().map(|s| s.index).collect::<Vec<_>>(),
            (0..6).collect::<Vec<_>>()
        );
        // Greedy samples are the base's own greedy continuation, token for token.
        for s in all.iter().filter(|s| s.temperature == 0.0) {
            let mut sess = Session::new(base.clone());
            let mut ids = s.ids[..s.prompt_tokens].to_vec();
            let mut l = sess.forward(&ids, LogitsFor::Last).unwrap();
            while ids.len() < s.ids.len() {
                let t = argmax(l.last());
                ids.push(t);
                l = sess.forward(&[t], LogitsFor::Last).unwrap();
            }
            assert_eq!(ids, s.ids, "prompt {}", s.index);
        }
        // Interrupt: keep 3 whole lines and half of the 4th; the rerun restores the rest,
        // equal to the first run (sampled ones too: stream = prompt index).
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let torn = format!("{}{}", lines[..3].concat(), &lines[3][..lines[3].len() / 2]);
        std::fs::write(&out, torn).unwrap();
        assert_eq!(read_samples(&out).unwrap().len(), 3);
        let again = generate(&base, &tok, None, &prompts, &cfg, &out, &mut NoReport).unwrap();
        assert_eq!(again, all);
        // A bad line in the middle is an error naming it.
        let text = std::fs::read_to_string(&out).unwrap();
        std::fs::write(&out, format!("{{}}\n{text}")).unwrap();
        let e = read_samples(&out).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
