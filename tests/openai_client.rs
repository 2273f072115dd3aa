//! `ecspec edge serve` with real clients: the official `openai` Python package
//! (tests/openai_client.py: plain, streamed, stop strings, seeds, bad requests, completions,
//! usage and the `ecspec` extension) and `curl` for the server-sent events' framing. At
//! temperature 0 (and at temperature 1 with a seed) the server's text equals
//! `ecspec generate`'s for the same prompt and budget, on the same default link.
//!
//! Skips (and passes) when smollm2-135m-instruct is not in the cache, or when no Python with
//! `openai` importable is found: `$ECSPEC_PYTHON`, else
//! `${XDG_CACHE_HOME:-~/.cache}/ecspec/py/bin/python` (the virtualenv `.ci/run` makes), else
//! `python3`. The curl check skips without curl.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

const PROMPT: &str = "Write a short poem about the sea.";
const COMPLETION_PROMPT: &str = "The three primary colors are";
const MAX_TOKENS: usize = 48;

fn cached(name: &str) -> bool {
    let cache = ecspec_weights::Cache::from_env().expect("cache dir");
    let spec = ecspec_weights::find_model(name).expect("known model");
    ecspec_weights::cached_path(spec, &cache).is_some()
}

/// The first Python that imports `openai`, with its version.
fn python_with_openai() -> Option<(PathBuf, String)> {
    let set = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = set("ECSPEC_PYTHON") {
        candidates.push(p.into());
    }
    let home = set("HOME").map(PathBuf::from);
    let xdg = set("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.as_ref().map(|h| h.join(".cache")));
    for cache in [xdg, home.map(|h| h.join(".cache"))].into_iter().flatten() {
        candidates.push(cache.join("ecspec/py/bin/python"));
    }
    candidates.push("python3".into());
    candidates.dedup();
    candidates.into_iter().find_map(|python| {
        let out = Command::new(&python)
            .args(["-c", "import openai; print(openai.__version__)"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then(|| {
            (
                python,
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )
        })
    })
}

/// `ecspec edge serve` on a free port; killed when dropped (also when the test panics).
struct Server {
    child: Child,
    base_url: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ecspec"))
            .args(["edge", "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ecspec edge serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr piped");
        let log = Arc::clone(&stderr);
        // Reads stderr to its end (so the server never blocks on a full pipe), sending the
        // base URL once the server says it serves.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = serving_url(&line) {
                    let _ = tx.send(url);
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut server = Self {
            child,
            base_url: String::new(),
            stderr,
        };
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(url) => server.base_url = url,
            Err(_) => panic!(
                "ecspec edge serve did not say it serves within 180 s: {}",
                server.report()
            ),
        }
        server
    }

    /// Whether the server still runs (else how it ended), and its stderr.
    fn report(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(None) => "the server is still running".to_string(),
            Ok(Some(status)) => format!("the server ended: {status}"),
            Err(e) => format!("the server's state is unknown: {e}"),
        };
        let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        format!("{state}; its stderr:\n{stderr}")
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http://127.0.0.1:PORT/v1` from the line "… serving the OpenAI API for model `…` on
/// http://127.0.0.1:PORT/v1 (…".
fn serving_url(line: &str) -> Option<String> {
    if !line.contains("serving the OpenAI API") {
        return None;
    }
    let start = line.find("http://")?;
    let url = line[start..].split_whitespace().next()?;
    Some(url.to_string())
}

fn generate(args: &[&str]) -> Value {
    let n = MAX_TOKENS.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ecspec"))
        .args(["generate", "--json", "--max-tokens", &n])
        .args(args)
        .output()
        .expect("running ecspec generate");
    assert!(
        out.status.success(),
        "ecspec generate {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("generate --json prints JSON")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_official_openai_client_gets_the_text_of_generate() {
    if !cached("smollm2-135m-instruct") {
        eprintln!("skipped: smollm2-135m-instruct is not in the cache (run `ecspec models fetch smollm2`)");
        return;
    }
    let Some((python, version)) = python_with_openai() else {
        eprintln!("skipped: no Python with the `openai` package ($ECSPEC_PYTHON, ~/.cache/ecspec/py, python3; `.ci/run` installs it)");
        return;
    };
    eprintln!("openai {version} from {}", python.display());
    let mut server = Server::start(&["--temperature", "0"]);
    let n = MAX_TOKENS.to_string();
    let out = Command::new(&python)
        .arg(script())
        .arg(&server.base_url)
        .args([
            "--prompt",
            PROMPT,
            "--completion-prompt",
            COMPLETION_PROMPT,
            "--max-tokens",
            &n,
        ])
        .output()
        .expect("running tests/openai_client.py");
    if !out.status.success() {
        let url = server.base_url.clone();
        panic!(
            "tests/openai_client.py failed against {url}:\n{}\n--- {}",
            show(&out),
            server.report()
        );
    }
    let got: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    assert!(server.alive(), "{}", server.report());

    // (a) temperature 0: the text, the finish and the token counts of `generate`.
    let want = generate(&["--temperature", "0", "--prompt", PROMPT]);
    let plain = &got["plain"];
    assert_eq!(
        plain["text"], want["text"],
        "chat at temperature 0 vs generate"
    );
    assert_eq!(plain["finish_reason"], want["finish_reason"]);
    assert_eq!(plain["usage"]["prompt_tokens"], want["prompt_tokens"]);
    assert_eq!(
        plain["usage"]["completion_tokens"],
        want["generated_tokens"]
    );
    assert_eq!(got["streamed"]["text"], want["text"]);

    // (c) the stop string the script picked, through `generate --stop`.
    let stop = got["stop"]["stop"].as_str().expect("the stop string");
    let want_stop = generate(&[
        "--temperature",
        "0",
        &format!("--stop={stop}"),
        "--prompt",
        PROMPT,
    ]);
    assert_eq!(
        got["stop"]["text"], want_stop["text"],
        "stop {stop:?} vs generate --stop"
    );
    assert_eq!(want_stop["finish_reason"], "stop");
    assert_eq!(
        got["stop"]["usage"]["completion_tokens"],
        want_stop["generated_tokens"]
    );

    // (d) a seeded sampled answer is generate's with the same seed.
    let want_seeded = generate(&["--temperature", "1", "--seed", "7", "--prompt", PROMPT]);
    assert_eq!(
        got["seeded"]["text"], want_seeded["text"],
        "temperature 1 seed 7 vs generate"
    );

    // (f) /v1/completions is the raw prompt (special-token markup parsed).
    let want_raw = generate(&[
        "--temperature",
        "0",
        "--raw",
        "--special",
        "--prompt",
        COMPLETION_PROMPT,
    ]);
    assert_eq!(
        got["completion"]["text"], want_raw["text"],
        "completion vs generate --raw"
    );
    assert_eq!(
        got["completion"]["usage"]["prompt_tokens"],
        want_raw["prompt_tokens"]
    );

    curl_sse(&mut server, want["text"].as_str().expect("text"));
    assert!(server.alive(), "{}", server.report());
}

/// `curl -sN` a streamed chat completion: a 200 with content-type text/event-stream, every
/// event exactly `data: {json}\n\n`, the last exactly `data: [DONE]\n\n`, the deltas
/// `want`; and a bad request: a 400 with OpenAI's error body.
fn curl_sse(server: &mut Server, want: &str) {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: the curl check (curl is not installed)");
        return;
    }
    let url = format!("{}/chat/completions", server.base_url);
    let body = |temperature: u32| {
        format!(
            r#"{{"model": "smollm2-135m", "messages": [{{"role": "user", "content": {}}}], "max_tokens": {MAX_TOKENS}, "temperature": {temperature}, "stream": true}}"#,
            Value::from(PROMPT)
        )
    };
    let curl = |body: String| {
        let out = Command::new("curl")
            .args([
                "-sN",
                "-i",
                "--max-time",
                "300",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["--data-binary", &body, &url])
            .output()
            .expect("running curl");
        if !out.status.success() {
            return Err(format!("curl failed: {}", show(&out)));
        }
        let all = String::from_utf8(out.stdout).expect("UTF-8 from the server");
        let (head, body) = all
            .split_once("\r\n\r\n")
            .expect("headers, a blank line, the body");
        Ok((head.to_string(), body.to_string()))
    };
    let header = |head: &str, name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} header in:\n{head}"))
    };

    let (head, events) = curl(body(0)).unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert!(head.starts_with("HTTP/1.1 200"), "status line: {head}");
    let ct = header(&head, "content-type");
    assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
    assert!(
        events.ends_with("data: [DONE]\n\n"),
        "the stream does not end with exactly `data: [DONE]\\n\\n`: {:?}",
        &events[events.len().saturating_sub(200)..]
    );
    let frames: Vec<&str> = events.strip_suffix("\n\n").unwrap().split("\n\n").collect();
    assert_eq!(frames.last(), Some(&"data: [DONE]"));
    assert_eq!(
        frames.iter().filter(|f| **f == "data: [DONE]").count(),
        1,
        "one [DONE]"
    );
    let mut text = String::new();
    let mut finishes = Vec::new();
    for frame in &frames[..frames.len() - 1] {
        let data = frame
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("an event that is not one `data: ` line: {frame:?}"));
        assert!(!data.contains('\n'), "an event of several lines: {frame:?}");
        let chunk: Value = serde_json::from_str(data)
            .unwrap_or_else(|e| panic!("an event whose data is not JSON ({e}): {frame:?}"));
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        let choice = &chunk["choices"][0];
        if let Some(s) = choice["delta"]["content"].as_str() {
            text.push_str(s);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finishes.push(f.to_string());
        }
    }
    assert_eq!(text, want, "curl's streamed deltas vs generate");
    assert_eq!(finishes.len(), 1, "one finish_reason: {finishes:?}");

    let (head, error) = curl(body(5)).unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert!(head.starts_with("HTTP/1.1 400"), "status line: {head}");
    assert!(
        header(&head, "content-type").starts_with("application/json"),
        "{head}"
    );
    let e: Value = serde_json::from_str(&error).expect("a JSON error body");
    assert_eq!(e["error"]["param"], "temperature", "{e}");
    assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
    for field in ["message", "type", "param", "code"] {
        assert!(e["error"].get(field).is_some(), "no error.{field}: {e}");
    }
}
