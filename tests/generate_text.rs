//! What `ecspec generate` prints: stop strings cut the text exactly (and end the generation),
//! `finish_reason` says why it ended, a character split across tokens is never shown as
//! U+FFFD, `--raw --special` reads a hand-written chat template, the text goes to stdout and
//! the summary to stderr, and a cloud's smaller token grant is reported. Every expectation is
//! derived from another run on the same machine (or from the tokenizer alone), so no CPU's
//! rounding is assumed. Skips (and passes) when SmolLM2 is not in the cache.

use std::process::Command;

use ecspec_model::{ChatMessage, LoadedModel, Role};
use ecspec_run::output::TextOutput;
use serde_json::Value;

fn smollm2() -> Option<std::path::PathBuf> {
    let cache = ecspec_weights::Cache::from_env().expect("cache dir");
    let spec = ecspec_weights::find_model("smollm2-135m-instruct").expect("known model");
    let path = ecspec_weights::cached_path(spec, &cache);
    if path.is_none() {
        eprintln!(
            "skipped: smollm2-135m-instruct is not in the cache (run `ecspec models fetch smollm2`)"
        );
    }
    path
}

fn ecspec(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ecspec"))
        .args(args)
        .output()
        .expect("run ecspec")
}

/// `generate --json --temperature 0 --no-link` with `args`.
fn generate(args: &[&str]) -> Value {
    let out = ecspec(
        &[
            &["generate", "--json", "--temperature", "0", "--no-link"],
            args,
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "ecspec failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn tokens(v: &Value) -> Vec<u64> {
    v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

const PROMPT: &str = "Write a short poem about the sea.";

#[test]
fn smollm2_a_split_emoji_is_held_back_and_a_cut_one_is_dropped() {
    let Some(path) = smollm2() else { return };
    let m = LoadedModel::load(&path).unwrap();
    let text = "a 🐦 and 🐵!";
    let ids = m.tokenizer.encode(text, false).unwrap();
    let mut held = 0;
    let mut before = String::new();
    for cut in 0..=ids.len() {
        let mut out = TextOutput::new(Vec::new()).unwrap();
        let mut shown = String::new();
        for &id in &ids[..cut] {
            shown.push_str(&out.push(&m.tokenizer, id));
        }
        shown.push_str(&out.finish());
        assert!(
            !shown.contains('\u{FFFD}'),
            "cut after {cut} tokens: {shown:?}"
        );
        assert!(text.starts_with(&shown), "cut after {cut}: {shown:?}");
        assert_eq!(shown, out.text());
        if cut == ids.len() {
            assert_eq!(shown, text);
        }
        // A token that adds only part of a character shows nothing more.
        if cut > 0 && shown == before {
            held += 1;
        }
        before = shown;
    }
    // Byte-level BPE spells these emoji with more than one token each.
    assert!(held >= 2, "{ids:?}");
}

#[test]
fn smollm2_generation_cut_mid_character_shows_no_replacement_character() {
    if smollm2().is_none() {
        return;
    }
    // Each length's text is a prefix of the longest one's and never ends in U+FFFD, whatever
    // tokens this machine's target picks.
    let prompt = "Write three animal emoji.";
    let longest = generate(&["--prompt", prompt, "--max-tokens", "10"]);
    let full = longest["text"].as_str().unwrap();
    for n in 1..10 {
        let v = generate(&["--prompt", prompt, "--max-tokens", &n.to_string()]);
        let text = v["text"].as_str().unwrap();
        assert!(!text.contains('\u{FFFD}'), "{n} tokens: {text:?}");
        assert!(full.starts_with(text), "{n} tokens: {text:?} vs {full:?}");
        assert_eq!(tokens(&v)[..], tokens(&longest)[..n]);
    }
}

#[test]
fn smollm2_a_stop_string_cuts_the_text_exactly_and_ends_the_generation() {
    if smollm2().is_none() {
        return;
    }
    let reference = generate(&[
        "--prompt",
        PROMPT,
        "--max-tokens",
        "48",
        "--mode",
        "cloud-only",
    ]);
    let text = reference["text"].as_str().unwrap().to_string();
    let n = reference["generated_tokens"].as_u64().unwrap();
    // finish_reason: an end-of-sequence token is `stop`, the budget is `length`.
    assert_eq!(
        reference["finish_reason"],
        if n < 48 { "stop" } else { "length" },
        "{reference}"
    );
    // A stop string from the middle of the reference text: its first occurrence is the cut.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    assert!(chars.len() > 30, "{text:?}");
    let (from, to) = (chars[20].0, chars[24].0);
    let stop = &text[from..to];
    let at = text.find(stop).unwrap();
    for mode in ["speculative", "cloud-only"] {
        let cut = generate(&[
            "--prompt",
            PROMPT,
            "--max-tokens",
            "48",
            "--mode",
            mode,
            "--draft-len",
            "fixed:3",
            "--stop",
            stop,
            "--stop",
            "never appears in this answer",
        ]);
        assert_eq!(cut["text"], text[..at], "{mode}: {cut}");
        assert_eq!(cut["finish_reason"], "stop", "{mode}");
        // The generation ended within a round of the stop string: what was committed is a
        // prefix of the reference, shorter than it.
        let t = tokens(&cut);
        assert_eq!(t[..], tokens(&reference)[..t.len()], "{mode}");
        assert!((t.len() as u64) < n, "{mode}: {} tokens", t.len());
    }
}

#[test]
fn smollm2_raw_special_reads_a_hand_written_chat_template() {
    let Some(path) = smollm2() else { return };
    let m = LoadedModel::load(&path).unwrap();
    let written = m
        .chat_template
        .as_ref()
        .expect("SmolLM2 has a chat template")
        .render(
            &[ChatMessage {
                role: Role::User,
                content: PROMPT.into(),
            }],
            true,
        );
    assert!(written.contains("<|im_start|>"), "{written}");
    let chat = generate(&["--prompt", PROMPT, "--max-tokens", "12"]);
    let special = generate(&[
        "--raw",
        "--special",
        "--prompt",
        &written,
        "--max-tokens",
        "12",
    ]);
    assert_eq!(special["prompt_tokens"], chat["prompt_tokens"]);
    assert_eq!(special["tokens"], chat["tokens"]);
    // Without --special the markup is text: more prompt tokens.
    let plain = generate(&["--raw", "--prompt", &written, "--max-tokens", "1"]);
    assert!(
        plain["prompt_tokens"].as_u64() > chat["prompt_tokens"].as_u64(),
        "{plain}"
    );
}

#[test]
fn smollm2_text_goes_to_stdout_and_the_summary_to_stderr() {
    if smollm2().is_none() {
        return;
    }
    let json = generate(&["--prompt", PROMPT, "--max-tokens", "8"]);
    let out = ecspec(&[
        "generate",
        "--temperature",
        "0",
        "--no-link",
        "--prompt",
        PROMPT,
        "--max-tokens",
        "8",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, format!("{}\n", json["text"].as_str().unwrap()));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("generated tokens      8"), "{stderr}");
}

#[test]
fn smollm2_a_smaller_grant_of_a_remote_cloud_is_reported() {
    if smollm2().is_none() {
        return;
    }
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ecspec"))
        .args([
            "cloud",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-new-tokens",
            "5",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ecspec cloud serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("cloud serve ended").unwrap();
        if let Some(rest) = line.split(" on 127.0.0.1:").nth(1) {
            let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
            break format!("127.0.0.1:{port}");
        }
    };
    std::thread::spawn(move || lines.map_while(Result::ok).count());
    let run = ecspec(&[
        "generate",
        "--json",
        "--temperature",
        "0",
        "--no-link",
        "--prompt",
        PROMPT,
        "--max-tokens",
        "20",
        "--cloud",
        &addr,
    ]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["generated_tokens"], 5, "{v}");
    assert_eq!(v["max_tokens_granted"], 5);
    assert_eq!(v["finish_reason"], "length");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("the cloud granted 5 of the 20 tokens asked (its budget per request)"),
        "{stderr}"
    );
}

#[test]
fn generate_refuses_bad_stop_strings_and_budgets_up_front() {
    for (args, expected) in [
        (
            &[
                "--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e",
            ][..],
            "--stop: at most 4 stop strings are allowed, got 5",
        ),
        (
            &["--stop", ""][..],
            "--stop: a stop string must not be empty",
        ),
        (
            &["--max-tokens", "5000"][..],
            "--max-tokens 5000 is above the in-process cloud's budget of 4096 tokens per request",
        ),
    ] {
        let out = ecspec(&[&["generate", "--prompt", "hi"], args].concat());
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = ecspec(&["generate", "--prompt", "hi", "--special"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--raw"));
}
