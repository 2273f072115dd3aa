//! The verifier server end to end on tiny random-weight models: the real [`serve`] on
//! 127.0.0.1:0, the real edge ([`generate`], directly over TCP or through the emulated link),
//! and raw-byte clients for protocol violations. The edge's own behaviour (lookup, pipelining,
//! energy, memory, byte counting, channel-aware verification) is tested in
//! `crates/ecspec-edge/tests/`, on the same fixtures.
//!
//! Expected values are computed without the code under test: the target's greedy tokens with
//! a plain [`Session`] fed one token at a time, speculative rounds replayed with a fresh draft
//! session per round, frame sizes with [`frame_len`] of messages built here.

#[path = "../../ecspec-edge/tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use ecspec_cloud::{serve, serve_stream, CloudModel, CloudServer, ServerConfig};
use ecspec_edge::{EdgeError, Mode, Summary};
use ecspec_model::{Draft, DraftKind, DraftSpec};
use ecspec_proto::{
    decode_frame, encode_frame, Close, CompactDist as WireDist, DraftBlock, ErrorCode, Hello,
    HelloAck, Message, Verdict, MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use ecspec_spec::verify::VerifyRule;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------------
// 1. Lossless greedy decoding.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_speculative_equals_cloud_only_equals_the_targets_own_greedy_tokens() {
    let cloud = Cloud::default().await;
    let max_new = 40;
    // (drafted, accepted) over all runs of each draft.
    let (mut same, mut partial, mut indep) = ((0, 0), (0, 0), (0, 0));
    // Rounds that accepted some drafts but not all: the draft rolls back to the middle.
    let mut partial_rounds = 0;
    for prompt in prompts() {
        let reference = reference(&prompt, max_new);
        let expected = expected_output(&reference, max_new);

        let c = run_edge(cloud.addr, &Run::cloud_only(&prompt, max_new)).await;
        let s = c.summary();
        assert_eq!(
            s.tokens, expected,
            "cloud-only output is the target's greedy output"
        );
        check_counters(s);
        assert_eq!(
            s.rounds as usize,
            expected.len() - 1,
            "one target pass per token"
        );
        assert_eq!(
            (s.drafted_tokens, s.mode.as_str(), s.target_version.as_str()),
            (0, "cloud-only", VERSION)
        );

        for draft in [
            DraftChoice::Same,
            DraftChoice::Partial,
            DraftChoice::Independent,
        ] {
            for policy in [
                "fixed:1",
                "fixed:4",
                "adaptive",
                "adaptive:6+p-min:0.5",
                "ucb:4",
                "ecspec:4:8",
            ] {
                let run = Run::greedy(&prompt, draft, policy, max_new);
                let o = run_edge(cloud.addr, &run).await;
                let s = o.summary();
                let what = format!("{draft:?} {policy} prompt {prompt:?}");
                assert_eq!(s.tokens, expected, "{what}: speculative output differs");
                check_counters(s);
                let ks: Vec<usize> = s.round_records.iter().map(|r| r.k).collect();
                match policy {
                    "fixed:1" => assert!(ks.iter().all(|&k| k == 1), "{what}: {ks:?}"),
                    "fixed:4" => assert!(ks.iter().all(|&k| k == 4), "{what}: {ks:?}"),
                    "adaptive:6+p-min:0.5" => {
                        assert!(ks.iter().all(|&k| (1..=6).contains(&k)), "{what}: {ks:?}")
                    }
                    "ecspec:4:8" => {
                        assert!(ks.iter().all(|&k| k <= 4), "{what}: {ks:?}")
                    }
                    "ucb:4" => {
                        // The bandit tries every arm first (the budget may cut the last).
                        assert_eq!(&ks[..3], &[1, 2, 3], "{what}");
                        assert!(ks.iter().all(|&k| (1..=4).contains(&k)), "{what}: {ks:?}")
                    }
                    _ => assert!(ks.iter().all(|&k| (1..=8).contains(&k)), "{what}: {ks:?}"),
                }
                // Every round's acceptance is what an independent replay predicts.
                let replay = replay_greedy(
                    &draft.draft().transformer,
                    &prompt,
                    &reference,
                    &ks,
                    max_new,
                );
                let got: Vec<usize> = s.round_records.iter().map(|r| r.accepted).collect();
                let want: Vec<usize> = replay.iter().map(|r| r.accepted).collect();
                assert_eq!(got, want, "{what}: accepted per round");
                if draft == DraftChoice::Same {
                    // The draft is the target: everything accepted but what the budget cut.
                    let (last, full) = s.round_records.split_last().unwrap();
                    assert!(full.iter().all(|r| r.accepted == r.k), "{what}");
                    let remaining =
                        expected.len() - 1 - full.iter().map(|r| r.k + 1).sum::<usize>();
                    assert_eq!(
                        last.accepted,
                        remaining - 1,
                        "{what}: last round cut to the budget"
                    );
                    same = (same.0 + s.drafted_tokens, same.1 + s.accepted_tokens);
                } else if draft == DraftChoice::Partial {
                    partial = (partial.0 + s.drafted_tokens, partial.1 + s.accepted_tokens);
                    partial_rounds += s
                        .round_records
                        .iter()
                        .filter(|r| 0 < r.accepted && r.accepted < r.k)
                        .count();
                } else {
                    indep = (indep.0 + s.drafted_tokens, indep.1 + s.accepted_tokens);
                }
            }
        }
        // Greedy-equivalent rules: match and rejection at temperature 0 are greedy too.
        for rule in [VerifyRule::Match, VerifyRule::Rejection] {
            let run = Run {
                rule,
                ..Run::greedy(&prompt, DraftChoice::Partial, "fixed:3", max_new)
            };
            assert_eq!(
                run_edge(cloud.addr, &run).await.summary().tokens,
                expected,
                "{rule:?} at T = 0"
            );
        }
    }
    let same_rate = same.1 as f64 / same.0 as f64;
    let indep_rate = indep.1 as f64 / indep.0 as f64;
    let partial_rate = partial.1 as f64 / partial.0 as f64;
    assert!(
        same_rate > 0.85,
        "the target as its own draft loses only the cut drafts: {same_rate}"
    );
    assert!(
        indep_rate < 0.05,
        "an unrelated random draft is rarely right: {indep_rate}"
    );
    assert!(
        indep_rate < partial_rate && partial_rate < same_rate,
        "{indep_rate} {partial_rate} {same_rate}"
    );
    assert!(partial_rounds > 0, "some rounds accept part of the block");
    cloud.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Sampling.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_generation_completes_in_vocabulary_and_is_deterministic_per_seed() {
    let cloud = Cloud::default().await;
    let max_new = 32;
    let prompt = prompts()[0].clone();
    let mut outputs = Vec::new();
    for rule in [VerifyRule::Match, VerifyRule::Rejection] {
        for draft in [DraftChoice::Same, DraftChoice::Independent] {
            let mut run = Run::sampled(&prompt, draft, rule, 42, max_new);
            if (rule, draft) == (VerifyRule::Rejection, DraftChoice::Same) {
                // The whole distribution at 16 bits: q is p up to rounding.
                run.dist = (VOCAB, 16);
            }
            let a = run_edge(cloud.addr, &run).await;
            let b = run_edge(cloud.addr, &run).await;
            let (sa, sb) = (a.summary(), b.summary());
            let what = format!("{rule:?} {draft:?}");
            check_counters(sa);
            assert!(
                sa.tokens.iter().all(|&t| (t as usize) < VOCAB),
                "{what}: {:?}",
                sa.tokens
            );
            let stopped = sa.tokens.last().is_some_and(|t| STOPS.contains(t));
            assert!(
                sa.generated_tokens == max_new || stopped,
                "{what}: ended early without a stop token"
            );
            assert!(
                sa.tokens[..sa.tokens.len() - 1]
                    .iter()
                    .all(|t| !STOPS.contains(t)),
                "{what}: ran past a stop token"
            );
            assert_eq!(sa.tokens, sb.tokens, "{what}: same seed, same tokens");
            let rounds = |s: &Summary| {
                s.round_records
                    .iter()
                    .map(|r| (r.k, r.accepted))
                    .collect::<Vec<_>>()
            };
            assert_eq!(rounds(sa), rounds(sb), "{what}: same seed, same rounds");
            if (rule, draft) == (VerifyRule::Rejection, DraftChoice::Same) {
                // Rejection sampling accepts x with probability min(1, p(x)/q(x)), and q is p
                // up to 16-bit rounding: every draft is accepted but those the budget cut.
                let (_, full) = sa.round_records.split_last().unwrap();
                assert!(
                    full.iter().all(|r| r.accepted == r.k),
                    "{what}: {:?}",
                    rounds(sa)
                );
                assert!(sa.acceptance_rate > 0.8, "{what}: {}", sa.acceptance_rate);
            } else {
                // Match acceptance is Σ p·q: small for this near-flat random model at T = 0.8.
                assert!(sa.acceptance_rate < 0.2, "{what}: {}", sa.acceptance_rate);
            }
            outputs.push((what, sa.tokens.clone()));
        }
    }
    // Match verification draws one target sample per committed token, in order, whatever was
    // drafted: the same seed gives the cloud-only output exactly.
    let cloud_only = Run {
        params: sampled_params(42),
        rule: VerifyRule::Match,
        ..Run::cloud_only(&prompt, max_new)
    };
    let c = run_edge(cloud.addr, &cloud_only).await;
    assert_eq!(
        c.summary().tokens,
        outputs[0].1,
        "match mode follows the target's own sample path"
    );
    assert_eq!(c.summary().tokens, outputs[1].1);
    // The seed matters.
    let other = run_edge(
        cloud.addr,
        &Run::sampled(&prompt, DraftChoice::Same, VerifyRule::Match, 43, max_new),
    )
    .await;
    assert_ne!(
        other.summary().tokens,
        outputs[0].1,
        "another seed, another sample"
    );
    // Sampling differs from greedy decoding.
    assert_ne!(
        outputs[0].1,
        expected_output(&reference(&prompt, max_new), max_new)
    );
    cloud.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Handshake refusals.
// ---------------------------------------------------------------------------------------------

fn refusal(o: &Outcome) -> &str {
    match &o.result {
        Err(EdgeError::Refused(reason)) => reason,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(s) => panic!("expected a refusal, got {} tokens", s.generated_tokens),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_drafts_are_refused_with_the_reason_and_the_server_keeps_serving() {
    let cloud = Cloud::default().await;
    let m = models();
    let prompt = prompts()[0].clone();
    let run = Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 12);
    let short = |h: &str| h[..12].to_string();

    let o = run_edge_with(cloud.addr, &run, |c| c.family = "qwen-9000".into()).await;
    let r = refusal(&o);
    assert!(
        r.contains("`qwen-9000`") && r.contains(&format!("`{FAMILY}`")),
        "{r}"
    );
    assert!(o.committed.is_empty(), "nothing committed on a refusal");

    // A shared-backbone draft built on another base.
    let foreign = Draft::build(&DraftSpec::SharedBackbone { shared_layers: 2 }, &m.other).unwrap();
    let o = run_edge_with(cloud.addr, &run, |c| {
        c.compat_hash = foreign.compat_hash.clone()
    })
    .await;
    let r = refusal(&o);
    assert!(
        r.contains("shared-backbone") && r.contains("base weights"),
        "{r}"
    );
    assert!(
        r.contains(&short(&m.other.base_hash)) && r.contains(&short(&m.target.base_hash)),
        "{r}"
    );

    // An independent draft with another vocabulary.
    let o = run_edge_with(cloud.addr, &run, |c| {
        c.draft_kind = DraftKind::Independent;
        c.compat_hash = "0123456789abcdef".repeat(4);
    })
    .await;
    let r = refusal(&o);
    assert!(
        r.contains("vocabulary") && r.contains("0123456789ab"),
        "{r}"
    );

    // A draft kind the edge's config cannot name (raw bytes).
    let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
    let hello = Hello {
        draft_kind: "medusa-heads".into(),
        ..run.hello()
    };
    tcp.write_all(&frame(&Message::Hello(hello), 3))
        .await
        .unwrap();
    let r = match &read_until_close(&mut tcp).await[..] {
        [(3, Message::HelloAck(a))] if !a.accepted => a.reason.clone(),
        other => panic!("expected one refusing HelloAck then a close, got {other:?}"),
    };
    assert!(r.contains("unknown draft kind `medusa-heads`"), "{r}");

    // Another protocol version in the Hello (the edge always speaks this one: raw bytes).
    let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
    let hello = Hello {
        protocol_version: 9,
        ..run.hello()
    };
    tcp.write_all(&frame(&Message::Hello(hello), 3))
        .await
        .unwrap();
    let frames = read_until_close(&mut tcp).await;
    match &frames[..] {
        [(3, Message::HelloAck(a))] => {
            assert!(!a.accepted);
            assert!(
                a.reason.contains("protocol version 9")
                    && a.reason.contains(&PROTOCOL_VERSION.to_string()),
                "{}",
                a.reason
            );
        }
        other => panic!("expected one refusing HelloAck then a close, got {other:?}"),
    }

    // Bad session settings are refused too.
    for (hello, why) in [
        (
            Hello {
                prompt: vec![],
                ..run.hello()
            },
            "the prompt is empty",
        ),
        (
            Hello {
                prompt: vec![1, 999],
                ..run.hello()
            },
            "prompt token id 999",
        ),
        (
            Hello {
                max_new_tokens: 0,
                ..run.hello()
            },
            "max_new_tokens",
        ),
        (
            Hello {
                verify_mode: 17,
                ..run.hello()
            },
            "unknown verification mode 17",
        ),
        (
            Hello {
                temperature: -1.0,
                ..run.hello()
            },
            "sampling settings",
        ),
        (
            Hello {
                prompt: vec![65; 500],
                ..run.hello()
            },
            "context window is 512",
        ),
    ] {
        let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
        tcp.write_all(&frame(&Message::Hello(hello), 1))
            .await
            .unwrap();
        match &read_until_close(&mut tcp).await[..] {
            [(1, Message::HelloAck(a))] => {
                assert!(!a.accepted && a.reason.contains(why), "{why}: {}", a.reason)
            }
            other => panic!("{why}: got {other:?}"),
        }
    }

    // The server still serves.
    let o = run_edge(cloud.addr, &run).await;
    assert_eq!(
        o.summary().tokens,
        expected_output(&reference(&prompt, 12), 12)
    );
    cloud.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Bad frames, bad requests, concurrency, limits.
// ---------------------------------------------------------------------------------------------

fn frame(msg: &Message, request_id: u32) -> Vec<u8> {
    encode_frame(msg, request_id).unwrap().to_vec()
}

/// Reads frames until the server closes the connection; a hang fails the test.
async fn read_until_close(tcp: &mut TcpStream) -> Vec<(u32, Message)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    timeout(PATIENCE, async {
        loop {
            while let Some(f) = decode_frame(&mut buf).expect("the server sends valid frames") {
                out.push(f);
            }
            if tcp.read_buf(&mut buf).await.expect("read") == 0 {
                assert!(buf.is_empty(), "the server closed inside a frame");
                return;
            }
        }
    })
    .await
    .expect("the server neither answered nor closed");
    out
}

/// Reads the next frame; a hang fails the test.
async fn read_frame(tcp: &mut TcpStream, buf: &mut BytesMut) -> (u32, Message) {
    timeout(PATIENCE, async {
        loop {
            if let Some(f) = decode_frame(buf).expect("the server sends valid frames") {
                return f;
            }
            assert_ne!(
                tcp.read_buf(buf).await.expect("read"),
                0,
                "closed while a frame was expected"
            );
        }
    })
    .await
    .expect("no frame from the server")
}

/// Sends `bytes` (then half-closes if `close`), and expects one ErrorReply with `code`, then
/// the server's close. Returns the reply's request id and message.
async fn expect_error_then_close(
    addr: SocketAddr,
    bytes: &[u8],
    close: bool,
    code: ErrorCode,
) -> (u32, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    if close {
        tcp.shutdown().await.unwrap();
    }
    match &read_until_close(&mut tcp).await[..] {
        [(req, Message::ErrorReply(e))] => {
            assert_eq!(e.code(), code, "{}", e.message);
            (*req, e.message.clone())
        }
        other => panic!("expected one ErrorReply then a close, got {other:?}"),
    }
}

fn header(len_after_prefix: u32, version: u8, message_type: u8, request_id: u32) -> Vec<u8> {
    let mut h = len_after_prefix.to_be_bytes().to_vec();
    h.extend([version, message_type]);
    h.extend(request_id.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_frame_and_a_close_while_other_sessions_go_on() {
    let cloud = Cloud::default().await;
    let addr = cloud.addr;
    let prompt = prompts()[1].clone();
    let expected = expected_output(&reference(&prompt, 24), 24);
    // A slow session (1 token a round over a 20 ms link) that spans every bad connection.
    let slow = Run {
        link: Some((10.0, 10.0, 20.0)),
        ..Run::greedy(&prompt, DraftChoice::Independent, "fixed:1", 24)
    };
    let before = tokio::spawn(async move { run_edge(addr, &slow).await.summary().tokens.clone() });

    // (a) Garbage: an HTTP request reads as a length prefix far over the maximum.
    let (req, msg) = expect_error_then_close(
        addr,
        b"GET / HTTP/1.1\r\nHost: cloud\r\n\r\n",
        false,
        ErrorCode::BadFrame,
    )
    .await;
    assert!(msg.contains("exceeds the maximum"), "{msg}");
    assert_eq!(req, 0, "an unreadable frame is answered with request id 0");
    // Garbage whose length prefix is shorter than a header.
    let (_, msg) =
        expect_error_then_close(addr, &[0, 0, 0, 2, 0xde, 0xad], false, ErrorCode::BadFrame).await;
    assert!(msg.contains("shorter than"), "{msg}");
    // (b) A length prefix over MAX_FRAME_LEN, and nothing else: answered without waiting.
    let too_long = (MAX_FRAME_LEN as u32 - 4 + 1).to_be_bytes();
    let (_, msg) = expect_error_then_close(addr, &too_long, false, ErrorCode::BadFrame).await;
    assert!(
        msg.contains(&format!(
            "{} bytes exceeds the maximum of {MAX_FRAME_LEN}",
            MAX_FRAME_LEN + 1
        )),
        "{msg}"
    );
    // Another version in the frame header.
    let (_, msg) = expect_error_then_close(
        addr,
        &header(6, 9, 1, 4),
        false,
        ErrorCode::UnsupportedVersion,
    )
    .await;
    assert!(msg.contains("unsupported protocol version 9"), "{msg}");
    // (c) An unknown message type: the reply echoes the frame's request id.
    let (req, msg) = expect_error_then_close(
        addr,
        &header(6, PROTOCOL_VERSION, 99, 77),
        false,
        ErrorCode::BadFrame,
    )
    .await;
    assert!(msg.contains("unknown message type 99"), "{msg}");
    assert_eq!(req, 77);
    // A payload that does not decode as a Hello.
    let mut bad = header(6 + 3, PROTOCOL_VERSION, 1, 78);
    bad.extend([0xff, 0xff, 0xff]);
    let (req, _) = expect_error_then_close(addr, &bad, false, ErrorCode::BadFrame).await;
    assert_eq!(req, 78);
    // (d) Half a frame, then the client closes.
    let hello = frame(
        &Message::Hello(Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 8).hello()),
        1,
    );
    let (_, msg) =
        expect_error_then_close(addr, &hello[..hello.len() / 2], true, ErrorCode::BadFrame).await;
    assert!(msg.contains("stream ended inside a frame"), "{msg}");
    // A close before any byte is a clean end: no reply.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.shutdown().await.unwrap();
    assert!(read_until_close(&mut tcp).await.is_empty());
    // (e) A DraftBlock before the Hello.
    let block = frame(
        &Message::DraftBlock(DraftBlock {
            round: 1,
            tokens: vec![1, 2],
            dists: vec![],
            stream: 0,
        }),
        5,
    );
    let (req, msg) = expect_error_then_close(addr, &block, false, ErrorCode::BadRequest).await;
    assert!(msg.contains("expected Hello"), "{msg}");
    assert_eq!(req, 5);

    // A session started after all that.
    let after = run_edge(
        addr,
        &Run::greedy(&prompt, DraftChoice::Same, "adaptive", 24),
    )
    .await;
    assert_eq!(after.summary().tokens, expected);
    let before = timeout(PATIENCE * 3, before)
        .await
        .expect("the concurrent session finishes")
        .unwrap();
    assert_eq!(
        before, expected,
        "the session that ran through it all is unaffected"
    );
    cloud.stop().await;
}

/// Opens a session with `hello`; returns the connection, its buffer and the HelloAck.
async fn open_session(addr: SocketAddr, hello: Hello) -> (TcpStream, BytesMut, HelloAck) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&frame(&Message::Hello(hello), 1))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    match read_frame(&mut tcp, &mut buf).await {
        (1, Message::HelloAck(a)) if a.accepted => (tcp, buf, a),
        other => panic!("expected an accepting HelloAck, got {other:?}"),
    }
}

async fn send(tcp: &mut TcpStream, msg: Message, request_id: u32) {
    tcp.write_all(&frame(&msg, request_id)).await.unwrap();
}

fn block(round: u32, tokens: Vec<u32>, dists: Vec<WireDist>) -> Message {
    Message::DraftBlock(DraftBlock {
        round,
        tokens,
        dists,
        stream: 0,
    })
}

/// A point mass on `id`: 8-bit level 255 of 255.
fn point_mass(id: u32) -> WireDist {
    WireDist {
        ids: vec![id],
        probs: vec![255],
        bits: 8,
    }
}

fn expect_error(f: (u32, Message), request_id: u32, needle: &str) {
    match f {
        (req, Message::ErrorReply(e)) => {
            assert_eq!(
                (req, e.code()),
                (request_id, ErrorCode::BadRequest),
                "{}",
                e.message
            );
            assert!(
                e.message.contains(needle),
                "expected {needle:?} in {:?}",
                e.message
            );
        }
        other => panic!("expected an ErrorReply about {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_draft_blocks_get_an_error_and_commit_nothing() {
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let r = reference(&prompt, 30);
    assert!(r[..6].iter().all(|t| !STOPS.contains(t)));

    // (g) Greedy: out-of-vocabulary draft ids, then a good block continues where it was.
    let hello = Run::greedy(&prompt, DraftChoice::Same, "fixed:2", 30).hello();
    let (mut tcp, mut buf, ack) = open_session(cloud.addr, hello).await;
    assert_eq!(ack.first_token, r[0]);
    send(&mut tcp, block(1, vec![r[1], 300], vec![]), 10).await;
    expect_error(read_frame(&mut tcp, &mut buf).await, 10, "300");
    send(&mut tcp, block(1, vec![u32::MAX], vec![]), 11).await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        11,
        &u32::MAX.to_string(),
    );
    // Distributions are not allowed in greedy mode.
    send(&mut tcp, block(1, vec![r[1]], vec![point_mass(r[1])]), 12).await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        12,
        "1 draft distributions for 1 drafted tokens",
    );
    send(&mut tcp, block(1, vec![r[1], r[2]], vec![]), 13).await;
    let want = Verdict {
        round: 1,
        accepted: 2,
        next_token: r[3],
        finished: false,
        compute_us: 0,
        row_cost_us: 0,
    };
    match read_frame(&mut tcp, &mut buf).await {
        (13, Message::Verdict(v)) => assert_eq!(Verdict { compute_us: 0, ..v }, want),
        other => panic!("expected the verdict, got {other:?}"),
    }
    // A wrong guess is corrected by the target.
    send(&mut tcp, block(2, vec![(r[4] + 1) % 256, r[5]], vec![]), 14).await;
    match read_frame(&mut tcp, &mut buf).await {
        (14, Message::Verdict(v)) => assert_eq!(
            (v.round, v.accepted, v.next_token, v.finished),
            (2, 0, r[4], false)
        ),
        other => panic!("expected the verdict, got {other:?}"),
    }
    // A second Hello mid-session ends it.
    send(
        &mut tcp,
        Message::Hello(Run::greedy(&prompt, DraftChoice::Same, "fixed:2", 30).hello()),
        15,
    )
    .await;
    let rest = read_until_close(&mut tcp).await;
    assert!(
        matches!(&rest[..], [(15, Message::ErrorReply(e))] if e.code() == ErrorCode::BadRequest),
        "{rest:?}"
    );

    // (f) Rejection sampling: wrong distribution counts and bad distributions are refused,
    // consume no randomness, and the session goes on exactly as one that never saw them.
    let hello = Run::sampled(&prompt, DraftChoice::Same, VerifyRule::Rejection, 5, 30).hello();
    let (mut tcp, mut buf, _) = open_session(cloud.addr, hello.clone()).await;
    let x = [r[1], r[2]];
    send(&mut tcp, block(1, x.to_vec(), vec![point_mass(x[0])]), 20).await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        20,
        "1 draft distributions for 2 drafted tokens",
    );
    send(
        &mut tcp,
        block(1, x.to_vec(), vec![point_mass(x[0]), point_mass(300)]),
        22,
    )
    .await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        22,
        "draft distribution",
    );
    let unpacked = WireDist {
        ids: vec![x[0]],
        probs: vec![255],
        bits: 0,
    };
    send(&mut tcp, block(1, vec![x[0]], vec![unpacked]), 23).await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        23,
        "draft distribution",
    );
    let half = WireDist {
        ids: vec![x[0], 7],
        probs: vec![100, 100],
        bits: 8,
    };
    send(&mut tcp, block(1, vec![x[0]], vec![half]), 24).await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        24,
        "draft distribution",
    );
    // A drafted token its own distribution gives no mass.
    // After the forward pass: the KV cache must be rolled back.
    send(
        &mut tcp,
        block(1, vec![x[0]], vec![point_mass((x[0] + 1) % 256)]),
        25,
    )
    .await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        25,
        "has probability 0 in its draft distribution",
    );
    let good = || block(1, x.to_vec(), vec![point_mass(x[0]), point_mass(x[1])]);
    send(&mut tcp, good(), 26).await;
    let after_errors = match read_frame(&mut tcp, &mut buf).await {
        (26, Message::Verdict(v)) => v,
        other => panic!("expected the verdict, got {other:?}"),
    };
    let (mut fresh, mut fbuf, _) = open_session(cloud.addr, hello).await;
    send(&mut fresh, good(), 1).await;
    let clean = match read_frame(&mut fresh, &mut fbuf).await {
        (1, Message::Verdict(v)) => v,
        other => panic!("expected the verdict, got {other:?}"),
    };
    assert!(after_errors.accepted <= 2 && (after_errors.next_token as usize) < VOCAB);
    assert_eq!(
        (after_errors.accepted, after_errors.next_token),
        (clean.accepted, clean.next_token)
    );
    for mut t in [tcp, fresh] {
        send(&mut t, Message::Close(Close {}), 99).await;
        assert!(
            read_until_close(&mut t).await.is_empty(),
            "Close ends the session without a reply"
        );
    }
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_session_rounds_without_distributions_are_verified_by_match() {
    // The edge's channel-aware choice: a rejection session's block that carries no
    // distributions is verified by match. Same seed, same blocks: the verdicts equal a match
    // session's, round for round, and a later block with distributions is still verified by
    // rejection (a point mass on a token the target never samples is refused only there).
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let r = reference(&prompt, 30);
    let rejection = Run::sampled(&prompt, DraftChoice::Same, VerifyRule::Rejection, 9, 30).hello();
    let matching = Run::sampled(&prompt, DraftChoice::Same, VerifyRule::Match, 9, 30).hello();
    let (mut a, mut abuf, ack_a) = open_session(cloud.addr, rejection).await;
    let (mut b, mut bbuf, ack_b) = open_session(cloud.addr, matching).await;
    assert_eq!(ack_a.first_token, ack_b.first_token);
    for round in 1..=4u32 {
        let tokens = r[round as usize..round as usize + 3].to_vec();
        send(&mut a, block(round, tokens.clone(), vec![]), round).await;
        send(&mut b, block(round, tokens, vec![]), round).await;
        let (va, vb) = match (
            read_frame(&mut a, &mut abuf).await,
            read_frame(&mut b, &mut bbuf).await,
        ) {
            ((_, Message::Verdict(x)), (_, Message::Verdict(y))) => (x, y),
            other => panic!("expected two verdicts, got {other:?}"),
        };
        assert_eq!(
            (va.accepted, va.next_token, va.finished),
            (vb.accepted, vb.next_token, vb.finished),
            "round {round}"
        );
    }
    // Distributions are still read in the rejection session (and refused in the match one).
    send(&mut a, block(5, vec![1], vec![point_mass(2)]), 5).await;
    expect_error(
        read_frame(&mut a, &mut abuf).await,
        5,
        "has probability 0 in its draft distribution",
    );
    send(&mut b, block(5, vec![1], vec![point_mass(1)]), 5).await;
    expect_error(read_frame(&mut b, &mut bbuf).await, 5, "distributions");
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_each_get_their_own_output() {
    let cloud = Cloud::default().await;
    let addr = cloud.addr;
    let p = prompts();
    let runs = vec![
        Run::greedy(&p[0], DraftChoice::Same, "fixed:4", 30),
        Run::greedy(&p[1], DraftChoice::Independent, "adaptive", 30),
        Run {
            link: FAST_LINK,
            ..Run::greedy(&p[2], DraftChoice::Independent, "fixed:2", 30)
        },
        Run::cloud_only(&p[1], 25),
        Run {
            link: FAST_LINK,
            ..Run::greedy(&p[0], DraftChoice::Same, "fixed:1", 17)
        },
    ];
    let expected: Vec<Vec<u32>> = runs
        .iter()
        .map(|r| expected_output(&reference(&r.prompt, r.max_new), r.max_new))
        .collect();
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|run| tokio::spawn(async move { run_edge(addr, &run).await.summary().tokens.clone() }))
        .collect();
    for (task, want) in tasks.into_iter().zip(expected) {
        assert_eq!(
            timeout(PATIENCE * 3, task)
                .await
                .expect("finishes")
                .unwrap(),
            want
        );
    }
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_refuses_with_an_error_frame_until_a_slot_frees() {
    let cloud = Cloud::start(ServerConfig {
        max_sessions: 1,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let prompt = prompts()[0].clone();
    let hello = Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 10).hello();
    let (mut first, _, _) = open_session(cloud.addr, hello.clone()).await;
    // A slot is taken only by an accepted Hello, so the refusal answers the second Hello.
    let (req, msg) = expect_error_then_close(
        cloud.addr,
        &frame(&Message::Hello(hello.clone()), 9),
        false,
        ErrorCode::Busy,
    )
    .await;
    assert!(
        msg.contains("busy") && msg.contains("all 1 session slots"),
        "{msg}"
    );
    assert_eq!(req, 9, "the busy reply answers the Hello");
    send(&mut first, Message::Close(Close {}), 2).await;
    assert!(read_until_close(&mut first).await.is_empty());
    // The slot is released when the first session's task ends, just after its socket closes.
    let mut served = false;
    for _ in 0..100 {
        let o = run_edge(
            cloud.addr,
            &Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 10),
        )
        .await;
        if let Ok(s) = &o.result {
            assert_eq!(s.tokens, expected_output(&reference(&prompt, 10), 10));
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served, "the freed slot serves a new session");
    cloud.stop().await;
}

/// Idle sessions are closed after `idle_timeout`, measured on a paused clock (no real waiting).
#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (idle, handshake) = (Duration::from_secs(30), Duration::from_secs(5));
    let cloud = Cloud::start(ServerConfig {
        idle_timeout: idle,
        handshake_timeout: handshake,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // Before the Hello: the handshake deadline, not the idle timeout, applies.
    let t0 = tokio::time::Instant::now();
    let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
    let frames = timeout(
        Duration::from_secs(600),
        read_until_close_unbounded(&mut tcp),
    )
    .await
    .expect("closed");
    assert!(frames.is_empty());
    let waited = t0.elapsed();
    assert!(waited >= handshake && waited < handshake * 2, "{waited:?}");
    // Mid-session.
    let hello = Run::greedy(&prompts()[0], DraftChoice::Same, "fixed:4", 10).hello();
    let (mut tcp, _, _) = open_session(cloud.addr, hello).await;
    let t0 = tokio::time::Instant::now();
    let frames = timeout(
        Duration::from_secs(600),
        read_until_close_unbounded(&mut tcp),
    )
    .await
    .expect("closed");
    assert!(frames.is_empty());
    let waited = t0.elapsed();
    assert!(waited >= idle && waited < idle * 2, "{waited:?}");
    cloud.stop().await;
}

/// [`read_until_close`] without its own timer (under a paused clock the caller's timer rules).
async fn read_until_close_unbounded(tcp: &mut TcpStream) -> Vec<(u32, Message)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    loop {
        while let Some(f) = decode_frame(&mut buf).expect("valid frames") {
            out.push(f);
        }
        if tcp.read_buf(&mut buf).await.expect("read") == 0 {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. The token budget.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_cuts_the_last_round_exactly() {
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let r = reference(&prompt, 40);
    assert!(
        r[..40].iter().all(|t| !STOPS.contains(t)),
        "this prompt's first 40 greedy tokens have no stop token"
    );
    for max_new in [1, 2, 5, 6, 7, 10, 13, 40] {
        let s = run_edge(
            cloud.addr,
            &Run::greedy(&prompt, DraftChoice::Same, "fixed:4", max_new),
        )
        .await;
        let s = s.summary();
        let c = run_edge(cloud.addr, &Run::cloud_only(&prompt, max_new)).await;
        assert_eq!(s.generated_tokens, max_new);
        assert_eq!(s.tokens, r[..max_new]);
        assert_eq!(
            c.summary().tokens,
            r[..max_new],
            "cloud-only truncated to the budget"
        );
        check_counters(s);
        // Each full round commits 4 drafts + 1; the last commits what is left of the budget.
        let rounds = (max_new - 1).div_ceil(5);
        assert_eq!(s.rounds as usize, rounds, "budget {max_new}");
        if let Some((last, full)) = s.round_records.split_last() {
            assert!(full.iter().all(|r| (r.k, r.accepted) == (4, 4)));
            let left = max_new - 1 - 5 * full.len();
            assert_eq!(
                (last.k, last.accepted),
                (4, left - 1),
                "budget {max_new}: accepted lowered to the cut"
            );
        }
    }
    // The server's own cap cuts the same way.
    let capped = Cloud::start(ServerConfig {
        max_new_tokens: 8,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let s = run_edge(
        capped.addr,
        &Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 30),
    )
    .await;
    let s = s.summary();
    assert_eq!(s.tokens, r[..8]);
    assert_eq!(
        s.round_records
            .iter()
            .map(|r| r.accepted)
            .collect::<Vec<_>>(),
        [4, 1]
    );
    capped.stop().await;
    cloud.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. The shared cloud: batched iterations, chunked prefill, admission, metrics.
// ---------------------------------------------------------------------------------------------

/// Runs `run` against `server` over an in-memory pipe, its edge on the virtual clock too.
async fn over_pipe(server: Arc<CloudServer>, run: Run) -> Outcome {
    let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
    let cloud = tokio::spawn(serve_stream(cloud_end, server));
    let o = run_edge_over(edge_end, &run, |c| {
        c.virtual_compute = Some(ecspec_spec::compute::EdgeCompute {
            draft_s_per_token: 0.002,
            prefill_s_per_token: 0.000_2,
        })
    })
    .await;
    cloud.await.unwrap().unwrap();
    o
}

/// Sessions of every kind — greedy with three drafts and two policies, cloud-only, sampled
/// match and rejection with fixed draft lengths (so their rounds, and with them their draws,
/// do not depend on timing) — served all at once share forward passes, and each commits
/// exactly the tokens it commits served alone.
#[tokio::test(start_paused = true)]
async fn many_concurrent_sessions_share_passes_and_commit_what_each_commits_alone() {
    let server = virtual_server(ServerConfig {
        max_batch_tokens: 24,
        ..Default::default()
    });
    let max_new = 24;
    let mut runs = Vec::new();
    for (i, prompt) in prompts().iter().enumerate() {
        let seed = 100 + i as u64;
        runs.extend([
            Run::greedy(prompt, DraftChoice::Same, "fixed:4", max_new),
            Run::greedy(prompt, DraftChoice::Partial, "fixed:3", max_new),
            Run::greedy(prompt, DraftChoice::Independent, "ecspec", max_new),
            Run::cloud_only(prompt, max_new),
            Run::sampled(
                prompt,
                DraftChoice::Partial,
                VerifyRule::Match,
                seed,
                max_new,
            ),
            Run {
                policy: "fixed:2",
                ..Run::sampled(
                    prompt,
                    DraftChoice::Same,
                    VerifyRule::Rejection,
                    seed,
                    max_new,
                )
            },
            Run {
                mode: Mode::CloudOnly,
                policy: "fixed:0",
                ..Run::sampled(prompt, DraftChoice::Same, VerifyRule::Match, seed, max_new)
            },
        ]);
    }
    let s0 = server.stats();
    let mut alone = Vec::new();
    for run in &runs {
        alone.push(
            over_pipe(server.clone(), run.clone())
                .await
                .summary()
                .tokens
                .clone(),
        );
    }
    let s1 = server.stats();
    let tasks: Vec<_> = runs
        .iter()
        .map(|run| tokio::spawn(over_pipe(server.clone(), run.clone())))
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let o = t.await.unwrap();
        let s = o.summary();
        check_counters(s);
        assert_eq!(
            s.tokens, alone[i],
            "run {i} ({:?}): batched output differs",
            runs[i]
        );
    }
    let s2 = server.stats();
    let (alone_passes, batched_passes) =
        (s1.iterations - s0.iterations, s2.iterations - s1.iterations);
    assert_eq!(
        s2.rows - s1.rows,
        s1.rows - s0.rows,
        "the same rows, batched or not"
    );
    assert!(
        batched_passes * 4 < alone_passes,
        "{batched_passes} batched passes for the work of {alone_passes} alone"
    );
    assert_eq!(s2.kv_bytes_used, 0, "every reservation was returned");
    assert_eq!(s2.sessions_running, 0);
}

/// A long prompt is prefilled in chunks beside other sessions' rounds: a session that was
/// already running finishes its whole generation before the long prompt's first token.
#[tokio::test(start_paused = true)]
async fn a_long_prefill_is_chunked_and_does_not_stall_other_sessions() {
    let server = virtual_server(ServerConfig {
        max_batch_tokens: 16,
        ..Default::default()
    });
    let short = prompts()[0].clone();
    let long: Vec<u32> = ids(&"All work and no play makes a dull model. ".repeat(9));
    assert!(long.len() > 300);
    let running = tokio::spawn(over_pipe(
        server.clone(),
        Run::greedy(&short, DraftChoice::Same, "fixed:4", 40),
    ));
    // The long prompt arrives while the first session runs.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t_long = tokio::time::Instant::now();
    let late = tokio::spawn(over_pipe(
        server.clone(),
        Run::greedy(&long, DraftChoice::Same, "fixed:4", 8),
    ));
    let a = running.await.unwrap();
    let a_done = tokio::time::Instant::now();
    let b = late.await.unwrap();
    let (a, b) = (a.summary(), b.summary());
    assert_eq!(a.tokens, expected_output(&reference(&short, 40), 40));
    assert_eq!(b.tokens, expected_output(&reference(&long, 8), 8));
    assert!(
        a_done - t_long < Duration::from_secs_f64(b.ttft_s),
        "the running session ended {:?} after the long prompt came, its first token took {} s",
        a_done - t_long,
        b.ttft_s
    );
    let s = server.stats();
    assert_eq!(s.prefill_rows as usize, short.len() + long.len());
    // Each pass holds at most the budget (a round of 5 rows plus a prompt chunk).
    let chunks = long.len().div_ceil(16);
    assert!(s.iterations as usize >= chunks, "{} passes", s.iterations);
}

/// An edge that goes away while its long prompt is prefilled stops the prefill at the next
/// chunk boundary: the cloud does not go on computing for nobody.
#[tokio::test(start_paused = true)]
async fn a_prefill_stops_at_the_next_chunk_when_its_edge_leaves() {
    let server = virtual_server(ServerConfig {
        max_batch_tokens: 4,
        ..Default::default()
    });
    let long: Vec<u32> = ids(&"x".repeat(400));
    let hello = Run::greedy(&long, DraftChoice::Same, "fixed:4", 8).hello();
    let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
    let cloud = tokio::spawn(serve_stream(cloud_end, server.clone()));
    let mut conn = ecspec_transport::Connection::new(edge_end);
    conn.write_message(&Message::Hello(hello)).await.unwrap();
    // Each 4-row chunk takes 4 ms + 2 ms on this profile: about 16 chunks in 100 ms.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = server.stats().prefill_rows;
    assert!(
        before > 0 && before < 400,
        "{before} prompt rows after 100 ms"
    );
    drop(conn);
    cloud.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = server.stats();
    assert!(
        after.prefill_rows <= before + 4,
        "{} prompt rows computed after the edge left at {before}",
        after.prefill_rows
    );
    assert_eq!((after.kv_bytes_used, after.sessions_running), (0, 0));
    // The server serves the next request as usual.
    let prompt = prompts()[0].clone();
    let o = over_pipe(
        server,
        Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 10),
    )
    .await;
    assert_eq!(
        o.summary().tokens,
        expected_output(&reference(&prompt, 10), 10)
    );
}

/// Sends a Hello over a new pipe to `server`; returns the edge's end.
async fn hello_over_pipe(
    server: &Arc<CloudServer>,
    hello: Hello,
) -> ecspec_transport::Connection<tokio::io::DuplexStream> {
    let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
    tokio::spawn(serve_stream(cloud_end, server.clone()));
    let mut conn = ecspec_transport::Connection::new(edge_end);
    conn.write_message(&Message::Hello(hello)).await.unwrap();
    conn
}

async fn reply(conn: &mut ecspec_transport::Connection<tokio::io::DuplexStream>) -> Message {
    conn.read_message(None).await.unwrap().expect("a reply").1
}

/// The KV budget: a Hello that does not fit waits for a session to end (its HelloAck says how
/// long it waited), at most `max_waiting` wait, a wait ends `Busy` after `admission_wait`, and a
/// request that could never fit is refused at once with no retry hint.
#[tokio::test(start_paused = true)]
async fn hellos_beyond_the_kv_budget_wait_then_are_refused_busy() {
    let prompt = prompts()[0].clone();
    let hello = Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 10).hello();
    // The tiny target: 4 layers × 2 KV heads × 16 dims × (K and V) × 4 bytes = 1 KiB a position.
    let per = models().target.transformer.kv_bytes_per_position();
    assert_eq!(per, 1024);
    let one = (prompt.len() + 10 + ecspec_cloud::MAX_BLOCK_TOKENS) as u64 * per;
    let server = virtual_server(ServerConfig {
        kv_budget_bytes: one + one / 2,
        max_waiting: 1,
        admission_wait: Duration::from_secs(5),
        ..Default::default()
    });
    assert_eq!(server.kv_reservation(prompt.len(), 10), one);
    let mut a = hello_over_pipe(&server, hello.clone()).await;
    assert!(matches!(reply(&mut a).await, Message::HelloAck(h) if h.accepted && h.queue_us == 0));
    assert_eq!(server.stats().kv_bytes_used, one);
    // B waits; C finds the waiting queue full.
    let mut b = hello_over_pipe(&server, hello.clone()).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(server.stats().sessions_waiting, 1);
    let mut c = hello_over_pipe(&server, hello.clone()).await;
    match reply(&mut c).await {
        Message::ErrorReply(e) => {
            assert_eq!((e.code(), e.retry_after_ms), (ErrorCode::Busy, 1000));
            assert!(
                e.message.contains("1 requests are already waiting"),
                "{}",
                e.message
            );
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // B's wait runs out.
    match reply(&mut b).await {
        Message::ErrorReply(e) => {
            assert_eq!(e.code(), ErrorCode::Busy);
            assert!(e.message.contains("within 5s"), "{}", e.message);
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // D waits until A ends, then is served, and says how long it waited.
    let mut d = hello_over_pipe(&server, hello.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.write_message(&Message::Close(Close {})).await.unwrap();
    match reply(&mut d).await {
        Message::HelloAck(h) => {
            assert!(h.accepted);
            assert!(h.queue_us >= 2_000_000, "waited {} us", h.queue_us);
        }
        other => panic!("expected a HelloAck, got {other:?}"),
    }
    // A request larger than the whole budget can never be served.
    let mut big = hello.clone();
    big.max_new_tokens = 1000;
    let mut e = hello_over_pipe(&server, big).await;
    match reply(&mut e).await {
        Message::ErrorReply(e) => {
            assert_eq!((e.code(), e.retry_after_ms), (ErrorCode::Busy, 0));
            assert!(
                e.message.contains("more than this server's whole budget"),
                "{}",
                e.message
            );
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(server.stats().refused_hellos, 3);
}

/// `GET /metrics` over HTTP, parsed by a Prometheus text parser: the speculative-decoding
/// counters equal what the edges counted, and the pass histogram agrees with the pass count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_the_prometheus_text_format_and_count_the_rounds() {
    let server = CloudServer::new(
        CloudModel::new(FAMILY, VERSION, &models().target),
        ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, server.clone(), async {
        let _ = rx.await;
    }));
    let mlistener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = mlistener.local_addr().unwrap();
    tokio::spawn(ecspec_cloud::serve_metrics(
        mlistener,
        server.metrics().clone(),
        std::future::pending(),
    ));
    let (mut drafts, mut drafted, mut accepted) = (0u64, 0u64, 0u64);
    let mut first_pos = 0u64;
    for prompt in prompts() {
        for (draft, policy) in [
            (DraftChoice::Partial, "fixed:4"),
            (DraftChoice::Same, "fixed:3"),
        ] {
            let o = run_edge(addr, &Run::greedy(&prompt, draft, policy, 20)).await;
            let s = o.summary();
            drafts += s.round_records.iter().filter(|r| r.k > 0).count() as u64;
            drafted += s.drafted_tokens;
            accepted += s.accepted_tokens;
            first_pos += s.round_records.iter().filter(|r| r.accepted > 0).count() as u64;
        }
    }
    let mut tcp = TcpStream::connect(maddr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    timeout(PATIENCE, tcp.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The body is OpenMetrics text (the format Prometheus scrapes), ending with `# EOF`.
    let scrape = openmetrics_parser::openmetrics::parse_openmetrics(body)
        .unwrap_or_else(|e| panic!("{e:?} parsing:\n{body}"));
    use openmetrics_parser::{MetricNumber, OpenMetricsValue as V};
    let sample = |family: &str, labels: &[&str]| -> V {
        let f = scrape
            .families
            .get(family)
            .unwrap_or_else(|| panic!("{family} missing from:\n{body}"));
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        f.get_sample_by_label_values(&labels)
            .unwrap_or_else(|| panic!("{family} {labels:?} missing from:\n{body}"))
            .value
            .clone()
    };
    let value = |family: &str, labels: &[&str]| -> f64 {
        match sample(family, labels) {
            V::Counter(c) => c.value.as_f64(),
            V::Gauge(g) | V::Unknown(g) => g.as_f64(),
            other => panic!("{family}: {other:?}"),
        }
    };
    assert_eq!(value("ecspec:spec_decode_num_drafts", &[]), drafts as f64);
    assert_eq!(
        value("ecspec:spec_decode_num_draft_tokens", &[]),
        drafted as f64
    );
    assert_eq!(
        value("ecspec:spec_decode_num_accepted_tokens", &[]),
        accepted as f64
    );
    assert_eq!(
        value("ecspec:spec_decode_num_accepted_tokens_per_pos", &["0"]),
        first_pos as f64
    );
    let passes = value("ecspec:iterations", &[]);
    assert_eq!(passes, server.stats().iterations as f64);
    match sample("ecspec:iteration_rows", &[]) {
        V::Histogram(h) => {
            assert_eq!(
                h.count,
                Some(passes as u64),
                "every pass is in the histogram"
            );
            let rows = h.sum.as_ref().map(MetricNumber::as_f64);
            assert_eq!(rows, Some(server.stats().rows as f64));
        }
        other => panic!("ecspec:iteration_rows is {other:?}"),
    }
    assert_eq!(
        value("ecspec:kv_cache_budget_bytes", &[]),
        (4u64 << 30) as f64
    );
    let _ = stop.send(());
    serving.await.unwrap();
}

/// Streaming sessions keep their place in every pass: eight cloud-only sessions stream while a
/// long prompt arriving later is prefilled beside them (so the scheduler never runs out of
/// work between passes); each gets a token from (nearly) every pass, so its TPOT stays near one
/// pass (16 rows: 4 ms + 15 × 0.5 ms on this profile), not two (a session answered by one pass
/// must be back in time for the next).
#[tokio::test(start_paused = true)]
async fn concurrent_streaming_sessions_share_every_pass() {
    let server = virtual_server(ServerConfig {
        max_batch_tokens: 16,
        ..Default::default()
    });
    let max_new = 24;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            // The prompt whose first 40 greedy tokens hold no stop token (see the budget test).
            let run = Run::cloud_only(&prompts()[0], max_new);
            tokio::spawn(over_pipe(server.clone(), run))
        })
        .collect();
    // The eight prompts take 7 passes; then a long one arrives and is prefilled 8 rows a pass.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let long: Vec<u32> = ids(&"All work and no play makes a dull model. ".repeat(9));
    let prefilling = tokio::spawn(over_pipe(server.clone(), Run::cloud_only(&long, 4)));
    for t in tasks {
        let o = t.await.unwrap();
        let s = o.summary();
        assert_eq!(s.generated_tokens, max_new);
        // One pass a token is 11.5 ms at most; a session that misses every other pass would
        // take 23 ms (21.7 measured without the scheduler's wait for resubmissions).
        assert!(
            s.tpot_s <= 0.0144,
            "TPOT {} s: tokens every other pass",
            s.tpot_s
        );
    }
    assert!(
        server.stats().prefill_rows < (long.len() + 8 * prompts()[0].len()) as u64,
        "the long prompt was still being prefilled: {:?}",
        server.stats()
    );
    prefilling.await.unwrap().summary();
}

/// A scheduler whose loop was cancelled with its runtime (mid-pass, a long prompt half
/// prefilled) serves the next runtime's requests: nothing is left marked running.
#[test]
fn a_scheduler_serves_on_after_its_runtime_was_shut_down_mid_pass() {
    let server = virtual_server(ServerConfig {
        max_batch_tokens: 8,
        ..Default::default()
    });
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let long: Vec<u32> = ids(&"x".repeat(300));
    let rt = paused();
    rt.block_on(async {
        let run = Run::greedy(&long, DraftChoice::Same, "fixed:4", 8);
        tokio::spawn(over_pipe(server.clone(), run));
        tokio::time::sleep(Duration::from_millis(30)).await;
    });
    assert!(server.stats().prefill_rows > 0);
    drop(rt);
    let prompt = prompts()[0].clone();
    let o = paused().block_on(over_pipe(
        server.clone(),
        Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 10),
    ));
    assert_eq!(
        o.summary().tokens,
        expected_output(&reference(&prompt, 10), 10)
    );
}
