//! The binary's own input and output: a reader that closes stdout early ends the command
//! quietly, and `cloud serve` reports an address in use before it says it is serving; the
//! configuration file and the environment under the command line (`config print`), and
//! `doctor`.

use std::process::{Command, Stdio};

/// Runs `ecspec ARGS` with stdout a pipe whose reading end is already closed, so the first
/// write meets a broken pipe (`ecspec … | true` where `true` exits first).
fn with_closed_stdout(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_ecspec"))
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("running ecspec")
}

#[test]
fn a_closed_stdout_is_a_normal_end_not_a_panic() {
    // `models list` writes a line per registry model and needs no model in the cache.
    let out = with_closed_stdout(&["models", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {stderr}",
        out.status.code()
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn serve_reports_an_address_in_use_before_announcing_anything() {
    let cache = ecspec_weights::Cache::from_env().expect("cache dir");
    let spec = ecspec_weights::find_model("smollm2-135m-instruct").expect("known model");
    if ecspec_weights::cached_path(spec, &cache).is_none() {
        eprintln!("skipped: smollm2-135m-instruct is not cached (ecspec models fetch smollm2)");
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ecspec"))
        .args(["cloud", "serve", "--family", "smollm2", "--listen", &addr])
        .output()
        .expect("running ecspec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("listening on {addr}")), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");
}

#[test]
fn an_rtt_out_of_range_is_refused_up_front_and_a_negative_one_is_read_as_a_value() {
    let run = |rtt: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ecspec"))
            .args(["generate", "--prompt", "hi", "--rtt-ms", rtt])
            .output()
            .expect("running ecspec");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Checked with the other link settings, before any model loads: no cache needed.
    let e = run("1e12");
    assert!(
        e.contains("RTT must be a number of ms from 0 to 60000 (a minute), got 1000000000000"),
        "{e}"
    );
    // Within the link's range but beyond what the in-process cloud waits for a first frame.
    let e = run("30000");
    assert!(
        e.contains("a link RTT of 30000 ms: the Hello would reach the in-process cloud after its first-frame deadline of 10 s"),
        "{e}"
    );
    let e = run("-5");
    assert!(
        e.contains("RTT must be a number of ms from 0 to 60000 (a minute), got -5"),
        "{e}"
    );
}

#[test]
fn soak_and_outage_arguments_are_checked_before_any_model_loads() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ecspec"))
            .args(args)
            .output()
            .expect("running ecspec");
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["soak", "--edges", "0"]);
    assert!(e.contains("--edges must be from 1 to 1000, got 0"), "{e}");
    let e = run(&["soak", "--duration-s", "-1"]);
    assert!(e.contains("--duration-s must be above 0 and at most 86400, got -1"), "{e}");
    let e = run(&["soak", "--outage-prob", "1.5"]);
    assert!(e.contains("--outage-prob must be from 0 to 1, got 1.5"), "{e}");
    let e = run(&["generate", "--prompt", "hi", "--outage", "1:0"]);
    assert!(e.contains("--outage `1:0`: FOR must be above 0 to 3600 s, got 0"), "{e}");
    let e = run(&["generate", "--prompt", "hi", "--mode", "edge-only", "--outage", "1:1"]);
    assert!(e.contains("--outage cuts the link to the cloud; --mode edge-only has none"), "{e}");
    let e = run(&["generate", "--prompt", "hi", "--outage", "1:2", "--outage", "2:1"]);
    assert!(e.contains("--outage `2:1`: starts before the outage at 1 s ends (3 s)"), "{e}");
}

/// A fresh temporary directory for one test.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ecspec-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// `ecspec ARGS` with `vars` set and no configuration file from the environment.
fn ecspec_with(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecspec"));
    cmd.args(args).env_remove("ECSPEC_CONFIG");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("running ecspec")
}

#[test]
fn config_print_shows_each_setting_with_its_source_flags_over_env_over_file() {
    let dir = temp_dir("config-print");
    let file = dir.join("ecspec.toml");
    std::fs::write(
        &file,
        "[generate]\nmax_tokens = 7\ncloud = \"file.example:7878\"\nrtt-ms = 30\noutage = [\"1:1\", \"3:1\"]\n\n[cloud.serve]\nkv-budget = \"2GiB\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = ecspec_with(
        &[
            "--config", f, "config", "print", "generate", "--rtt-ms", "80",
        ],
        &[
            ("ECSPEC_CLOUD", "env.example:7878"),
            ("ECSPEC_NO_LINK", "1"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} ")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .to_string()
    };
    assert!(
        line("rtt-ms").starts_with("rtt-ms = 80 ") && line("rtt-ms").ends_with("# flag"),
        "{text}"
    );
    assert!(
        line("cloud").contains("\"env.example:7878\"")
            && line("cloud").ends_with("# env ECSPEC_CLOUD"),
        "{text}"
    );
    assert!(
        line("no-link").starts_with("no-link = true")
            && line("no-link").ends_with("# env ECSPEC_NO_LINK"),
        "{text}"
    );
    assert!(
        line("max-tokens").starts_with("max-tokens = 7")
            && line("max-tokens").ends_with(&format!("# config {f} [generate]")),
        "{text}"
    );
    assert!(
        line("outage").starts_with("outage = [\"1:1\", \"3:1\"]"),
        "{text}"
    );
    assert!(
        line("mode").starts_with("mode = \"speculative\"") && line("mode").ends_with("# default"),
        "{text}"
    );
    assert!(line("seed").ends_with("# not set"), "{text}");
    // Without a command: every configurable command, each with its own section.
    let out = ecspec_with(&["config", "print"], &[("ECSPEC_CONFIG", f)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("[generate]") && text.contains("[cloud.serve]"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("kv-budget = \"2GiB\"")),
        "{text}"
    );
    // A command that takes no configuration.
    let out = ecspec_with(&["config", "print", "models", "list"], &[]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("`models list` takes no settings"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generate_takes_its_settings_from_the_environment_and_the_file_under_its_flags() {
    // The RTT is checked before any model loads, and its message quotes the value that won.
    let dir = temp_dir("config-generate");
    let file = dir.join("ecspec.toml");
    std::fs::write(&file, "[generate]\nrtt-ms = 30000\n").unwrap();
    let f = file.to_str().unwrap();
    let err = |args: &[&str], vars: &[(&str, &str)]| {
        let out = ecspec_with(args, vars);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The file alone.
    let e = err(&["generate", "--prompt", "hi", "--config", f], &[]);
    assert!(e.contains("a link RTT of 30000 ms"), "{e}");
    // The environment over the file.
    let e = err(
        &["generate", "--prompt", "hi"],
        &[("ECSPEC_CONFIG", f), ("ECSPEC_RTT_MS", "1e12")],
    );
    assert!(e.contains("got 1000000000000"), "{e}");
    // The flag over both.
    let e = err(
        &["generate", "--prompt", "hi", "--rtt-ms", "-5"],
        &[("ECSPEC_CONFIG", f), ("ECSPEC_RTT_MS", "1e12")],
    );
    assert!(e.contains("got -5"), "{e}");
    // Errors name the file, the section and the key, or the variable.
    std::fs::write(&file, "[generate]\nmax-tokns = 3\n").unwrap();
    let e = err(&["generate", "--prompt", "hi", "--config", f], &[]);
    assert!(e.contains(&format!("the configuration file {f}: [generate] `max-tokns` is not a flag of `generate`; did you mean `max-tokens`?")), "{e}");
    std::fs::write(&file, "[generate]\nkv-budget = \"2GiB\"\n").unwrap();
    let e = err(&["generate", "--prompt", "hi", "--config", f], &[]);
    assert!(
        e.contains("`kv-budget` is not a flag of `generate` (it is a flag of `cloud serve`)"),
        "{e}"
    );
    std::fs::write(&file, "[generate]\njson = \"yes\"\n").unwrap();
    let e = err(&["generate", "--prompt", "hi", "--config", f], &[]);
    assert!(
        e.contains("[generate] `json`: `--json` is a switch: write true or false, not a string"),
        "{e}"
    );
    let e = err(
        &["generate", "--prompt", "hi"],
        &[("ECSPEC_MAX_TOKENS", "0")],
    );
    assert!(
        e.contains("ECSPEC_MAX_TOKENS=\"0\": invalid value '0' for '--max-tokens"),
        "{e}"
    );
    // A setting that needs another flag says where it came from.
    std::fs::write(&file, "[generate]\nauth-token-file = \"t.txt\"\n").unwrap();
    let e = err(&["generate", "--prompt", "hi", "--config", f], &[]);
    assert!(
        e.contains("--cloud") && e.contains(&format!("--auth-token-file (config {f} [generate])")),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The line of `doctor`'s report whose check starts with `what` (after the status column).
fn doctor_line(text: &str, what: &str) -> String {
    text.lines()
        .find(|l| l.get(9..).is_some_and(|r| r.starts_with(what)))
        .unwrap_or_else(|| panic!("no {what} in\n{text}"))
        .to_string()
}

#[test]
fn doctor_reports_each_check_and_fails_only_for_what_was_asked() {
    // A loopback cloud serving a tiny random-weight model.
    let dir = temp_dir("doctor");
    let gguf = dir.join("tiny.gguf");
    ecspec_model::tiny::write_tiny_model(&gguf, ecspec_model::tiny::TinySpec::default()).unwrap();
    let model = ecspec_model::LoadedModel::load(&gguf).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cloud = rt
        .block_on(ecspec_run::LocalCloud::start_model(
            ecspec_cloud::CloudModel::new("tiny", "v0", &model),
        ))
        .unwrap();
    let addr = cloud.addr.to_string();
    // An empty model cache (nothing to hash) and a small shared data directory.
    let cache = dir.join("cache");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("prompts")).unwrap();
    std::fs::create_dir_all(data.join("channel/mahimahi/set")).unwrap();
    std::fs::write(data.join("prompts/spec_bench_question.jsonl"), "{}\n{}\n").unwrap();
    std::fs::write(data.join("channel/mahimahi/set/a.up"), "1\n").unwrap();
    let vars = [
        ("ECSPEC_CACHE_DIR", cache.to_str().unwrap()),
        ("ECSPEC_DATA_DIR", data.to_str().unwrap()),
    ];
    let out = ecspec_with(&["doctor", "--cloud", &addr], &vars);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |what: &str| doctor_line(&text, what);
    assert!(line("kernels:").starts_with("ok "), "{text}");
    assert!(
        line("model smollm2-135m-instruct:").starts_with("missing "),
        "{text}"
    );
    assert!(line("shared data:").starts_with("ok "), "{text}");
    assert!(
        text.contains("prompts: spec_bench_question.jsonl (2)"),
        "{text}"
    );
    assert!(text.contains("traces: mahimahi/set (1)"), "{text}");
    let c = line(&format!("cloud {addr} (--cloud):"));
    assert!(
        c.starts_with("ok ")
            && c.contains("an ECSpec cloud answers")
            && c.contains("active version v0")
            && c.contains(" ms"),
        "{c}"
    );
    rt.block_on(cloud.stop());
    // Nothing listens there now: an explicit --cloud fails the command.
    let out = ecspec_with(&["doctor", "--cloud", &addr, "--timeout-s", "2"], &vars);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    let line = |what: &str| doctor_line(&text, what);
    assert!(
        line(&format!("cloud {addr} (--cloud):")).starts_with("failed "),
        "{text}"
    );
    assert!(text.contains("connection refused"), "{text}");
    // The same cloud from the configuration file is reported, not fatal.
    let file = dir.join("ecspec.toml");
    std::fs::write(&file, format!("[generate]\ncloud = \"{addr}\"\n")).unwrap();
    let out = ecspec_with(
        &[
            "doctor",
            "--config",
            file.to_str().unwrap(),
            "--timeout-s",
            "2",
        ],
        &vars,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let line = |what: &str| doctor_line(&text, what);
    assert!(
        line("config:").starts_with("ok ") && line("config:").contains("[generate]"),
        "{text}"
    );
    let c = line(&format!("cloud {addr} (config "));
    assert!(
        c.starts_with("failed ") && c.contains("connection refused"),
        "{c}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
