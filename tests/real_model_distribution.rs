//! On the real SmolLM2-135M family: the first token a speculative round commits is
//! distributed exactly as the target's own next token — for `match` and for `rejection` with
//! compact (top-8, 8-bit) draft distributions. The draft is a shared-backbone draft that skips
//! one of the base's layers: close to the target but not equal (acceptance ≈ 0.17 for match,
//! ≈ 0.68 for rejection), so both the accept and the residual paths are exercised.
//!
//! Bound: chi-square over the target's top-20 tokens (top-k 20 sampling, so df = 19) below
//! its 1 − 10⁻⁴ quantile, 51.179 (scipy.stats.chi2.ppf(1 - 1e-4, 19)), and total variation
//! under 0.03, with 10 000 rounds per rule.
//!
//! Skips (and passes) when the model is not in the cache.

use ecspec_model::{ChatMessage, Draft, DraftSpec, LoadedModel, LogitsFor, Role, Session};
use ecspec_spec::compact::CompactDist;
use ecspec_spec::sampling::{rng_for, target_distribution, SamplingParams};
use ecspec_spec::verify::{verify_match, verify_rejection};

const TRIALS: usize = 10_000;
const CHI2_CRIT_DF19: f64 = 51.179;

#[test]
fn speculative_rounds_commit_the_targets_distribution() {
    let cache = ecspec_weights::Cache::from_env().expect("cache dir");
    let spec = ecspec_weights::find_model("smollm2-135m-instruct").unwrap();
    let Some(path) = ecspec_weights::cached_path(spec, &cache) else {
        eprintln!("skipped: smollm2-135m-instruct is not in the cache (run `ecspec models fetch smollm2`)");
        return;
    };
    let m = LoadedModel::load(&path).unwrap();
    let text = m.chat_template.as_ref().unwrap().render(
        &[ChatMessage {
            role: Role::User,
            content: "Name one colour of the rainbow.".into(),
        }],
        true,
    );
    let prompt = m.tokenizer.encode(&text, true).unwrap();
    let draft = Draft::build(&DraftSpec::SharedBackbone { shared_layers: 28 }, &m).unwrap();
    let p_row = Session::new(m.transformer.clone())
        .forward(&prompt, LogitsFor::Last)
        .unwrap()
        .last()
        .to_vec();
    let q_row = Session::new(draft.transformer.clone())
        .forward(&prompt, LogitsFor::Last)
        .unwrap()
        .last()
        .to_vec();
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        top_k: 20,
        seed: 7,
    };
    let p = target_distribution(&p_row, &params).unwrap();
    let q = target_distribution(&q_row, &params).unwrap();
    let compact = CompactDist::quantize(&q, 8, 8).unwrap();
    let support: Vec<usize> = (0..p.len()).filter(|&i| p[i] > 0.0).collect();
    assert_eq!(support.len(), 20);
    // Rows for K = 1: the second row only feeds the bonus token, never the first committed one.
    let rows = [p_row.clone(), p_row.clone()];
    for rule in ["match", "rejection"] {
        let mut edge = rng_for(2, 0);
        let mut cloud = rng_for(2, 1);
        let mut counts = vec![0usize; p.len()];
        let mut accepted = 0;
        for _ in 0..TRIALS {
            let (x, v) = if rule == "match" {
                let x = ecspec_spec::sampling::sample(&q, &mut edge).unwrap();
                (x, verify_match(&[x], &rows, &params, &mut cloud).unwrap())
            } else {
                let x = compact.sample(&mut edge);
                (
                    x,
                    verify_rejection(
                        &[x],
                        std::slice::from_ref(&compact),
                        &rows,
                        &params,
                        &mut cloud,
                    )
                    .unwrap(),
                )
            };
            let first = if v.accepted >= 1 { x } else { v.next_token };
            counts[first as usize] += 1;
            accepted += v.accepted;
        }
        let outside: usize = (0..p.len())
            .filter(|i| p[*i] == 0.0)
            .map(|i| counts[i])
            .sum();
        assert_eq!(
            outside, 0,
            "{rule}: committed a token the target cannot produce"
        );
        let n = TRIALS as f64;
        let chi2: f64 = support
            .iter()
            .map(|&i| (counts[i] as f64 - n * p[i] as f64).powi(2) / (n * p[i] as f64))
            .sum();
        let tv: f64 = support
            .iter()
            .map(|&i| (counts[i] as f64 / n - p[i] as f64).abs())
            .sum::<f64>()
            / 2.0;
        eprintln!(
            "{rule}: chi2 = {chi2:.2} (df 19), TV = {tv:.4}, acceptance = {:.3}",
            accepted as f64 / n
        );
        assert!(
            chi2 < CHI2_CRIT_DF19,
            "{rule}: chi-square {chi2:.2} ≥ {CHI2_CRIT_DF19}"
        );
        assert!(tv < 0.03, "{rule}: total variation {tv:.4}");
    }
}
