//! `ecspec bench` on both clocks: the live clock (real time, the emulated link) and the virtual
//! clock (compute times from a device profile, link times from the link model) on the same
//! short scenario. The virtual run's profile is this machine's, taken from the live run's own
//! records (the cloud's reported prefill and verification times, the edge's drafting time).
//! Tokens must be equal; bytes equal where the draft length does not depend on time
//! (cloud-only, fixed K); every speculative output equals cloud-only's. How close the two
//! clocks' goodput comes is printed, not asserted: it is a wall-clock figure that a loaded
//! machine moves. Skips (and passes) when SmolLM2 is not in the model cache.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn cached(name: &str) -> bool {
    let cache = ecspec_weights::Cache::from_env().expect("cache dir");
    let spec = ecspec_weights::find_model(name).expect("known model");
    ecspec_weights::cached_path(spec, &cache).is_some()
}

fn bench(clock: &str, prompts: &Path, out: &Path, profile: Option<&Path>) -> Vec<Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecspec"));
    cmd.args(["bench", "--family", "smollm2", "--clock", clock]);
    if let Some(p) = profile {
        cmd.arg("--edge-profile")
            .arg(p)
            .arg("--cloud-profile")
            .arg(p);
    }
    let o = cmd
        .args(["--scenarios", "const-10mbit-60ms", "--versions", "v0"])
        .args(["--systems", "cloud-only,static:fixed:4,ecspec"])
        .args(["--max-tokens", "32"])
        .arg("--prompts")
        .arg(prompts)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run ecspec bench");
    assert!(
        o.status.success(),
        "ecspec bench --clock {clock} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(out.join("requests.jsonl")).expect("requests.jsonl");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A device profile for both sides from a live run's records: the draft's seconds per drafted
/// token, the target's prefill per prompt token, and `t_v(K) = a + b·K` fitted by least squares
/// to every round's reported compute time.
fn profile_from(live: &[Value]) -> String {
    let (mut draft_s, mut drafted, mut prefill_s, mut prompt) = (0.0, 0.0, 0.0, 0.0);
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for r in live {
        let s = &r["summary"];
        prefill_s += s["cloud_prefill_s"].as_f64().unwrap();
        prompt += s["prompt_tokens"].as_f64().unwrap();
        for rec in s["round_records"].as_array().unwrap() {
            let k = rec["k"].as_f64().unwrap();
            draft_s += rec["draft_s"].as_f64().unwrap();
            drafted += k;
            pts.push((k, rec["cloud_compute_s"].as_f64().unwrap()));
        }
    }
    let n = pts.len() as f64;
    let (mx, my) = pts
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let b = (sxy / sxx).max(0.0);
    let a = (my - b * mx).max(0.0);
    format!(
        "name = \"from-live-run\"\nradio = \"none\"\ncompute_power_w = 0.0\nidle_power_w = 0.0\nestimate = false\nsource = \"the live run's records\"\n\n[draft.\"smollm2-135m/static\"]\nseconds_per_token = {}\n\n[target.\"smollm2-135m\"]\nprefill_seconds_per_token = {}\nverify_base_s = {a}\nverify_per_token_s = {b}\n",
        draft_s / drafted,
        prefill_s / prompt
    )
}

#[test]
fn virtual_and_live_clocks_agree() {
    if !cached("smollm2-135m-instruct") {
        eprintln!("skipped: smollm2-135m-instruct is not in the model cache (ecspec models fetch smollm2)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ecspec-bench-clocks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(
        &prompts,
        concat!(
            r#"{"question_id": 1, "category": "writing", "turns": ["Write a short note thanking a colleague for their help."]}"#,
            "\n",
            r#"{"question_id": 2, "category": "coding", "turns": ["Write a Python function that reverses a list."]}"#,
            "\n",
            r#"{"question_id": 3, "category": "qa", "turns": ["What is the capital of France?"]}"#,
            "\n"
        ),
    )
    .unwrap();
    let live = bench("live", &prompts, &dir.join("live"), None);
    let profile = dir.join("profile.toml");
    std::fs::write(&profile, profile_from(&live)).unwrap();
    let virt = bench("virtual", &prompts, &dir.join("virtual"), Some(&profile));
    assert_eq!(virt.len(), 9, "3 systems × 3 prompts");
    assert_eq!(live.len(), virt.len());
    let mut time: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    for (v, l) in virt.iter().zip(&live) {
        let system = v["system"].as_str().unwrap().to_string();
        assert_eq!(
            (&v["system"], &v["question_id"]),
            (&l["system"], &l["question_id"])
        );
        let (vs, ls) = (&v["summary"], &l["summary"]);
        assert_eq!(
            vs["tokens"], ls["tokens"],
            "{system}: tokens differ between clocks"
        );
        if system != "ecspec" {
            // The ecspec policy chooses K from measured times, so its rounds (and bytes) may
            // differ between clocks; the others' may not.
            for k in ["uplink_bytes", "downlink_bytes", "rounds"] {
                assert_eq!(vs[k], ls[k], "{system} question {}: {k}", v["question_id"]);
            }
        }
        if system != "cloud-only" {
            assert_eq!(
                v["same_as_cloud_only"],
                Value::Bool(true),
                "{system}: lossless"
            );
        }
        let e = time.entry(system).or_default();
        e.0 += vs["generated_tokens"].as_f64().unwrap();
        e.1 += vs["total_s"].as_f64().unwrap();
        e.2 += ls["total_s"].as_f64().unwrap();
    }
    // How close the two clocks' goodput comes is a wall-clock measurement, which a loaded
    // machine moves (a test may not depend on it): printed for the record
    // (`cargo test --release --test bench_clocks -- --nocapture`).
    for (system, (tokens, v_s, l_s)) in &time {
        let (gv, gl) = (tokens / v_s, tokens / l_s);
        eprintln!("{system}: virtual {gv:.1} tok/s, live {gl:.1} tok/s");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
