//! The `ecspec` binary end to end on the real model families, through the loopback cloud
//! server and the default emulated link: greedy speculative output equals the cloud-only
//! output token for token, with fewer target forward passes than tokens when drafts were
//! accepted. Skips (and passes) for a family whose models are not in the cache.

use std::process::Command;

use serde_json::Value;

fn cached(name: &str) -> bool {
    let cache = ecspec_weights::Cache::from_env().expect("cache dir");
    let spec = ecspec_weights::find_model(name).expect("known model");
    ecspec_weights::cached_path(spec, &cache).is_some()
}

fn generate(family: &str, mode: &str, prompt: &str, max_tokens: usize, extra: &[&str]) -> Value {
    let n = max_tokens.to_string();
    let args = [
        "--family",
        family,
        "--mode",
        mode,
        "--temperature",
        "0",
        "--max-tokens",
        &n,
        "--prompt",
        prompt,
    ];
    generate_raw(&[&args[..], extra].concat())
}

fn check_family(family: &str, prompt: &str, max_tokens: usize, extra: &[&str]) -> (Value, Value) {
    let spec = generate(family, "speculative", prompt, max_tokens, extra);
    let cloud = generate(family, "cloud-only", prompt, max_tokens, &[]);
    assert_eq!(
        spec["tokens"], cloud["tokens"],
        "{family}: speculative and cloud-only differ"
    );
    assert_eq!(spec["text"], cloud["text"]);
    let n = spec["generated_tokens"].as_u64().unwrap();
    assert!(n > 0 && n <= max_tokens as u64);
    assert_eq!(
        cloud["rounds"].as_u64().unwrap() + 1,
        n,
        "cloud-only: one target pass per token"
    );
    if spec["accepted_tokens"].as_u64().unwrap() > 0 {
        assert!(
            spec["target_forward_passes"].as_u64().unwrap() < n,
            "{family}: no saving in target passes"
        );
    }
    for v in [&spec, &cloud] {
        assert!(
            v["uplink_bytes"].as_u64().unwrap() > 0 && v["downlink_bytes"].as_u64().unwrap() > 0
        );
        assert_eq!(
            v["model_family"],
            if family == "smollm2" {
                "smollm2-135m"
            } else {
                "qwen2.5-coder"
            }
        );
    }
    (spec, cloud)
}

#[test]
fn smollm2_speculative_equals_cloud_only() {
    if !cached("smollm2-135m-instruct") {
        eprintln!("skipped: smollm2-135m-instruct is not in the cache (run `ecspec models fetch smollm2`)");
        return;
    }
    let prompt = "Write a Python function that reverses a string.";
    // The shipped static draft accepts a few tokens (the untrained one none); a 29-layer draft
    // accepts nearly everything: all must reproduce the target's greedy output.
    let (spec, _) = check_family("smollm2", prompt, 40, &[]);
    assert_eq!(spec["verify"], "greedy");
    let (untrained, _) = check_family("smollm2", prompt, 40, &["--anchor", "none"]);
    assert_eq!(untrained["accepted_tokens"], 0, "{untrained}");
    let (deep, _) = check_family(
        "smollm2",
        prompt,
        40,
        &[
            "--shared-layers",
            "29",
            "--draft-len",
            "fixed:4",
            "--anchor",
            "none",
        ],
    );
    assert!(deep["acceptance_rate"].as_f64().unwrap() > 0.9, "{deep}");
}

/// `generate --json` with exactly `args` (no defaults added).
fn generate_raw(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ecspec"))
        .args(["generate", "--json"])
        .args(args)
        .output()
        .expect("run ecspec");
    assert!(
        out.status.success(),
        "ecspec failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

#[test]
fn smollm2_seeded_sampling_reproduces_the_cloud_only_text() {
    if !cached("smollm2-135m-instruct") {
        eprintln!("skipped: smollm2-135m-instruct is not in the cache (run `ecspec models fetch smollm2`)");
        return;
    }
    // The command that gave three texts in six runs when `--verify auto` chose match or
    // rejection per round from measured timings: with --seed it verifies by match, whose
    // draws are keyed by (seed, position), so every run is the cloud-only text of seed 42.
    let args = [
        "--prompt",
        "Write a short poem about the sea.",
        "--max-tokens",
        "24",
        "--temperature",
        "1",
        "--seed",
        "42",
    ];
    let cloud = generate_raw(&[&args[..], &["--mode", "cloud-only"]].concat());
    assert_eq!(cloud["generated_tokens"], 24, "{cloud}");
    for policy in ["fixed:4", "fixed:4", "fixed:1", "ecspec"] {
        let spec =
            generate_raw(&[&args[..], &["--draft-len", policy, "--link-up-mbps", "0.1"]].concat());
        assert_eq!(spec["verify"], "match", "{spec}");
        assert_eq!(spec["tokens"], cloud["tokens"], "{policy}: {spec}");
    }
}

#[test]
fn smollm2_an_outage_costs_a_reconnect_not_a_token() {
    if !cached("smollm2-135m-instruct") {
        eprintln!("skipped: smollm2-135m-instruct is not in the cache (run `ecspec models fetch smollm2`)");
        return;
    }
    // fixed:2 over the default 60 ms RTT link: 64 tokens need at least 22 round trips
    // (1.3 s), so the outage at 1 s always falls inside the generation.
    let prompt = "Write a short poem about the sea.";
    let out = generate(
        "smollm2",
        "speculative",
        prompt,
        64,
        &["--draft-len", "fixed:2", "--outage", "1.0:2.0"],
    );
    let cloud = generate("smollm2", "cloud-only", prompt, 64, &[]);
    assert_eq!(out["tokens"], cloud["tokens"], "{out}");
    assert_eq!(out["reconnects"], 1, "{out}");
    // The link was down for the rest of the 2 s after the loss.
    assert!(out["reconnect_s"].as_f64().unwrap() >= 1.9, "{out}");
    // Down from the start: the first connection waits for the link.
    let late = generate("smollm2", "speculative", prompt, 16, &["--outage", "0:0.3"]);
    assert_eq!(
        late["tokens"].as_array().unwrap()[..],
        cloud["tokens"].as_array().unwrap()[..16]
    );
    assert!(late["ttft_s"].as_f64().unwrap() >= 0.3, "{late}");
}

/// A `cloud serve` child on an ephemeral loopback port, killed on drop.
struct ServeChild {
    child: std::process::Child,
    addr: String,
    /// What it printed on stderr after its "serving" line.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeChild {
    fn start(extra: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ecspec"))
            .args(["cloud", "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start ecspec cloud serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("cloud serve ended before serving")
                .unwrap();
            if let Some(rest) = line.split(" on 127.0.0.1:").nth(1) {
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break format!("127.0.0.1:{port}");
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Self {
            child,
            addr,
            stderr,
        }
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn smollm2_cloud_with_auth_and_tls_refuses_strangers_and_serves_its_edges() {
    if !cached("smollm2-135m-instruct") {
        eprintln!("skipped: smollm2-135m-instruct is not in the cache (run `ecspec models fetch smollm2`)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ecspec-e2e-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "# edges\nedge-token-5f1c0e7a93b2\n").unwrap();
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "edge-token-0000000000000\n").unwrap();
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cloud.crt"), dir.join("cloud.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ecspec"))
            .args([
                "generate",
                "--prompt",
                "Say hi.",
                "--max-tokens",
                "8",
                "--temperature",
                "0",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let t = tokens.to_str().unwrap();
    let plain = ServeChild::start(&["--auth-token-file", t]);
    let a = plain.addr.as_str();
    let none = run(&["--cloud", a, "--json"]);
    assert_eq!(none.status.code(), Some(1));
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        err.contains("unauthorized: this cloud requires an auth token and the Hello carries none"),
        "{err}"
    );
    let bad = run(&["--cloud", a, "--auth-token-file", wrong.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unauthorized: the Hello's auth token is not one this cloud accepts"),
        "{err}"
    );
    let ok = run(&["--cloud", a, "--auth-token-file", t, "--json"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let served: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(served["generated_tokens"], 8, "{served}");
    drop(plain);

    let tls = ServeChild::start(&[
        "--auth-token-file",
        t,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let a = tls.addr.as_str();
    let over_tls = run(&[
        "--cloud",
        a,
        "--auth-token-file",
        t,
        "--tls-ca",
        cert.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        over_tls.status.success(),
        "{}",
        String::from_utf8_lossy(&over_tls.stderr)
    );
    let over_tls: Value = serde_json::from_slice(&over_tls.stdout).unwrap();
    assert_eq!(over_tls["tokens"], served["tokens"]);
    let plaintext = run(&["--cloud", a, "--auth-token-file", t]);
    assert_eq!(plaintext.status.code(), Some(1));
    let err = String::from_utf8_lossy(&plaintext.stderr);
    assert!(
        err.contains("this cloud requires TLS: connect with --tls-ca (plaintext refused)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn smollm2_cloud_serve_drains_and_exits_on_sigterm() {
    if !cached("smollm2-135m-instruct") {
        eprintln!("skipped: smollm2-135m-instruct is not in the cache (run `ecspec models fetch smollm2`)");
        return;
    }
    let mut serve = ServeChild::start(&["--shutdown-grace-s", "1"]);
    let pid = serve.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    // Exits on its own (no session runs; the grace bounds it anyway): bounded by a generous
    // deadline, not timed.
    let mut status = None;
    for _ in 0..600 {
        if let Some(s) = serve.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = status.expect("cloud serve did not exit within a minute of SIGTERM");
    assert_eq!(status.code(), Some(0));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let printed = serve.stderr.lock().unwrap().join("\n");
    assert!(
        printed.contains("shutting down: no new sessions"),
        "{printed}"
    );
}

#[test]
fn qwen_pair_speculative_equals_cloud_only() {
    if !cached("qwen2.5-coder-0.5b-instruct") || !cached("qwen2.5-coder-1.5b-instruct") {
        eprintln!("skipped: the Qwen2.5-Coder models are not in the cache (run `ecspec models fetch qwen2.5-coder`)");
        return;
    }
    let (spec, _) = check_family(
        "qwen2.5-coder",
        "Write a Rust function that adds two numbers.",
        24,
        &[],
    );
    assert!(
        spec["mean_accepted_tokens"].as_f64().unwrap() > 1.0,
        "{spec}"
    );
}

#[test]
fn bad_arguments_are_clear_errors() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ecspec"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["generate", "--prompt", "hi", "--draft-len", "fixed:x"]).contains("fixed:x"));
    assert!(run(&["generate", "--prompt", "hi", "--temperature=-1"]).contains("temperature"));
    assert!(
        run(&["generate", "--prompt", "hi", "--model", "/nonexistent.gguf"])
            .contains("/nonexistent.gguf")
    );
    assert!(run(&[
        "generate",
        "--prompt",
        "hi",
        "--link-trace-up",
        "/nonexistent.up",
        "--link-trace-down",
        "/x"
    ])
    .contains("/nonexistent.up"));
    assert!(run(&["generate", "--prompt", "  "]).contains("empty"));
    if cached("smollm2-135m-instruct") {
        // SmolLM2's window is 8192 positions: 8127 is the longest prompt it can answer.
        assert!(run(&[
            "cloud",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-prompt-tokens",
            "9000"
        ])
        .contains("--max-prompt-tokens 9000 does not fit the target's context window of 8192 positions (at most 8127"));
    }
    assert!(run(&["generate", "--prompt", "hi", "--drafter", "ngram"])
        .contains("unknown drafter \"ngram\" (expected model, lookup or hybrid)"));
    assert!(run(&[
        "generate",
        "--prompt",
        "hi",
        "--lookup-min-ngram",
        "5",
        "--lookup-max-ngram",
        "3"
    ])
    .contains("--lookup-min-ngram 5 is above --lookup-max-ngram 3"));
    assert!(run(&["generate", "--prompt", "hi", "--lookup-len", "0"]).contains("--lookup-len"));
    // Link settings are checked before any model loads, in `demo` as in `generate`.
    assert!(run(&["demo", "--link-model-down", "garbage"])
        .contains("link model `garbage`: unknown model `garbage`"));
    assert!(run(&["demo", "--link-csv", "/nonexistent.csv"]).contains("/nonexistent.csv"));
    assert!(run(&[
        "generate",
        "--prompt",
        "hi",
        "--link-csv-format",
        "gophers-walking"
    ])
    .contains("--link-csv-format gophers-walking needs --link-csv FILE"));
    assert!(run(&[
        "generate",
        "--prompt",
        "hi",
        "--link-model-up",
        "ge:good_mbps=1,bad_mbps=0,p_gb=0.1,p_bg=0.5",
        "--link-up-mbps",
        "2"
    ])
    .contains("uplink: a rate (2 Mbit/s) and a model (gilbert-elliott:"));
    let prompt = std::env::temp_dir().join(format!("ecspec-e2e-prompt-{}", std::process::id()));
    std::fs::write(&prompt, "hi").unwrap();
    let p = prompt.to_str().unwrap();
    assert!(run(&["generate", "--prompt-file", p, "--trace-out", p]).contains("is the prompt file"));
    assert_eq!(
        std::fs::read_to_string(&prompt).unwrap(),
        "hi",
        "the prompt file is untouched"
    );
}
