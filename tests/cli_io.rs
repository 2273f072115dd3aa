//! The binary's own input and output: a reader that closes stdout early ends the command
//! quietly, and `cloud serve` reports an address in use before it says it is serving.

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
