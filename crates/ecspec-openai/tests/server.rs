//! `ecspec edge serve` over real HTTP on SmolLM2: concurrent streamed requests give their solo
//! texts, a stop string split across chunks stops streamed and whole answers alike, a client
//! that leaves mid-stream frees its cloud session, and the limits answer 429, 503 and 413 in
//! OpenAI's error shape. Every expected text comes from another request to the same server.
//! Skips (and passes) when SmolLM2 is not in the cache.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ecspec_cloud::ServerConfig;
use ecspec_openai::{EdgeServeArgs, Engine};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: EdgeServeArgs,
}

fn cached() -> bool {
    let cache = ecspec_weights::Cache::from_env().expect("cache dir");
    let spec = ecspec_weights::find_model("smollm2-135m-instruct").expect("known model");
    let ok = ecspec_weights::cached_path(spec, &cache).is_some();
    if !ok {
        eprintln!("skipped: smollm2-135m-instruct is not in the cache (run `ecspec models fetch smollm2`)");
    }
    ok
}

/// A server on 127.0.0.1:0 with `flags`.
async fn server(flags: &[&str]) -> SocketAddr {
    let cli = Cli::try_parse_from([&["x", "--temperature", "0", "--no-link"], flags].concat())
        .expect("flags");
    let engine = Arc::new(Engine::start(&cli.args).await.expect("engine"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ecspec_openai::serve(
        listener,
        engine,
        std::future::pending(),
    ));
    addr
}

/// A response: status, headers (lower-case names), body (de-chunked).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `data:` payloads of an event stream.
    fn events(&self) -> Vec<String> {
        assert!(self.body.ends_with("\n\n"), "{:?}", self.body);
        self.body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                    .to_string()
            })
            .collect()
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let mut s = send(addr, method, path, body).await;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8(raw.to_vec()).expect("UTF-8 response");
    let (head, rest) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// A streamed request whose first event has arrived (the connection kept open).
async fn open_stream(addr: SocketAddr, body: &str) -> TcpStream {
    let mut s = send(addr, "POST", "/v1/chat/completions", body).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: ") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream ended before its first event");
        got.extend_from_slice(&buf[..n]);
    }
    s
}

fn chat(prompt: &str, extra: Value) -> String {
    let mut v = json!({
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 24,
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

/// A streamed answer's text and its finish reason.
fn streamed_text(r: &Reply) -> (String, String) {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    let mut finish = String::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish)
}

const PROMPTS: [&str; 8] = [
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "Give three tips for sleeping well.",
    "Explain TCP slow start in one sentence.",
    "Name a prime number larger than 100.",
    "Describe a cat to someone who has never seen one.",
    "What does a compiler do?",
    "Write one sentence about autumn.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_streamed_requests_give_their_solo_texts() {
    if !cached() {
        return;
    }
    let addr = server(&["--max-concurrent", "8"]).await;
    let mut solo = Vec::new();
    for p in PROMPTS {
        let r = request(addr, "POST", "/v1/chat/completions", &chat(p, json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
        solo.push(
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let tasks: Vec<_> = PROMPTS
        .iter()
        .map(|p| {
            let body = chat(p, json!({"stream": true}));
            tokio::spawn(async move { request(addr, "POST", "/v1/chat/completions", &body).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (text, finish) = streamed_text(&t.await.unwrap());
        assert_eq!(text, solo[i], "prompt {i}");
        assert!(finish == "stop" || finish == "length", "{finish}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_string_split_across_chunks_stops_streamed_and_whole_answers_alike() {
    if !cached() {
        return;
    }
    let addr = server(&[]).await;
    let body = chat(PROMPTS[5], json!({"stream": true, "max_tokens": 48}));
    let r = request(addr, "POST", "/v1/chat/completions", &body).await;
    let deltas: Vec<String> = r.events()[..r.events().len() - 1]
        .iter()
        .filter_map(|e| {
            let v: Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let full: String = deltas.concat();
    // A stop string made of the end of one chunk and the start of the next.
    let j = (4..deltas.len() - 1)
        .find(|&j| deltas[j].chars().count() >= 2 && deltas[j + 1].chars().count() >= 2)
        .expect("two chunks of two characters");
    let tail: String = deltas[j]
        .chars()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let head: String = deltas[j + 1].chars().take(2).collect();
    let stop = format!("{tail}{head}");
    let at = full.find(&stop).unwrap();
    let whole = request(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat(
            PROMPTS[5],
            json!({"stop": [stop.clone()], "max_tokens": 48}),
        ),
    )
    .await
    .json();
    assert_eq!(whole["choices"][0]["message"]["content"], full[..at]);
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    let streamed = request(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat(
            PROMPTS[5],
            json!({"stop": stop, "max_tokens": 48, "stream": true}),
        ),
    )
    .await;
    assert_eq!(
        streamed_text(&streamed),
        (full[..at].to_string(), "stop".to_string())
    );
    // The completions endpoint cuts the same way.
    let c = request(
        addr,
        "POST",
        "/v1/completions",
        &json!({"model": "smollm2-135m", "prompt": "The sea is", "max_tokens": 16}).to_string(),
    )
    .await
    .json();
    assert_eq!(c["object"], "text_completion");
    assert!(!c["choices"][0]["text"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_frees_its_cloud_session_and_the_limits_answer_in_shape() {
    if !cached() {
        return;
    }
    // A cloud of one session slot, and an edge that may run two requests at once.
    let models = ecspec_run::load_family(&Cli::parse_from(["x"]).args.models, true).unwrap();
    let config = ServerConfig {
        max_sessions: 1,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    };
    let cloud = ecspec_run::LocalCloud::start_with(&models, config)
        .await
        .unwrap();
    let cloud_addr = cloud.addr.to_string();
    let addr = server(&["--cloud", &cloud_addr, "--max-concurrent", "2"]).await;
    let long = chat(PROMPTS[2], json!({"stream": true, "max_tokens": 4000}));
    // The first streamed request holds the cloud's one session; read its first event.
    let first = open_stream(addr, &long).await;
    // A second request meets a busy cloud: 503 with Retry-After, in OpenAI's shape.
    let busy = request(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat(PROMPTS[0], json!({})),
    )
    .await;
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(busy.header("retry-after"), Some("1"));
    let e = busy.json();
    assert_eq!(e["error"]["code"], "cloud_busy");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("busy"),
        "{e}"
    );
    // The client leaves: its generation ends and the cloud session with it, long before the
    // 4000 tokens it asked for (minutes on this CPU).
    drop(first);
    let mut served = None;
    for _ in 0..300 {
        let r = request(
            addr,
            "POST",
            "/v1/chat/completions",
            &chat(PROMPTS[0], json!({})),
        )
        .await;
        if r.status == 200 {
            served = Some(r);
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = served.expect("the cloud session of the client that left was never freed");
    assert!(
        served.json()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_cap_429_and_over_the_window_413() {
    if !cached() {
        return;
    }
    let addr = server(&["--max-concurrent", "1"]).await;
    let long = chat(PROMPTS[2], json!({"stream": true, "max_tokens": 400}));
    let first = open_stream(addr, &long).await;
    let r = request(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat(PROMPTS[0], json!({})),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    // A prompt over the target's 8192-position window (checked before any slot is used).
    let huge = "sea ".repeat(9000);
    let r = request(
        addr,
        "POST",
        "/v1/chat/completions",
        &chat(&huge, json!({})),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    let e = r.json();
    assert_eq!(e["error"]["code"], "context_length_exceeded");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("context window is 8192"),
        "{e}"
    );
    // Bodies: over 1 MiB is 413; a broken chunked body is 400, not 413.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1 << 21));
    let r = request(addr, "POST", "/v1/chat/completions", &big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nZZ\r\nxx\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let r = parse(&raw);
    assert_eq!(r.status, 400, "{}", r.body);
    // Bad JSON, a bad method, an unknown path: errors in shape, never a dropped connection.
    let r = request(addr, "POST", "/v1/chat/completions", "{\"model\":").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = request(addr, "GET", "/v1/chat/completions", "").await;
    assert_eq!(r.status, 405);
    let r = request(addr, "GET", "/v1/engines", "").await;
    assert_eq!(r.status, 404);
    let m = request(addr, "GET", "/v1/models", "").await.json();
    assert_eq!(m["data"][0]["id"], "smollm2-135m");
    assert_eq!(m["data"][0]["ecspec"]["target_versions"], json!(["v0"]));
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unseeded_sampled_request_gets_a_fresh_seed_and_a_seeded_one_keeps_it() {
    if !cached() {
        return;
    }
    let cli = Cli::try_parse_from(["x", "--no-link"]).unwrap();
    let engine = Engine::start(&cli.args).await.unwrap();
    let job =
        |extra: Value| ecspec_openai::request::chat(chat(PROMPTS[0], extra).as_bytes()).unwrap();
    let sampled = job(json!({"temperature": 1.0}));
    let (_, _, a) = engine.prepare(&sampled).unwrap();
    let (_, _, b) = engine.prepare(&sampled).unwrap();
    // Two draws of a u64 coincide with probability 2^-64.
    assert!(
        a.seed.is_some() && a.seed != b.seed,
        "{:?} {:?}",
        a.seed,
        b.seed
    );
    assert_eq!(a.verify, ecspec_run::VerifyArg::Switch);
    let (_, _, s) = engine
        .prepare(&job(json!({"temperature": 1.0, "seed": 7})))
        .unwrap();
    assert_eq!((s.seed, s.verify), (Some(7), ecspec_run::VerifyArg::Auto));
    // Greedy needs no seed.
    let (_, _, g) = engine.prepare(&job(json!({"temperature": 0}))).unwrap();
    assert_eq!(g.seed, None);
    // The budget's error names the field the client used.
    let e = engine
        .prepare(&job(json!({"max_completion_tokens": 5000})))
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("max_completion_tokens"));
    assert_eq!(
        e.message,
        "max_completion_tokens 5000 is above the cloud's budget of 4096 tokens per request"
    );
    engine.stop().await;
}
