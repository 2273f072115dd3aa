//! Who gets in and what they may ask: auth tokens checked in the Hello before any compute,
//! TLS end to end (and plaintext refused when TLS is required), the K_max agreed in the
//! handshake, and the per-client limits. On tiny random-weight models (fixtures in `common`);
//! expected tokens are the target's own greedy tokens computed without the server.

#[path = "../../ecspec-edge/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use ecspec_cloud::{AuthTokens, ServerConfig};
use ecspec_edge::EdgeError;
use ecspec_proto::{decode_frame, encode_frame, DraftBlock, ErrorCode, Hello, Message};
use ecspec_transport::tls::{TlsClient, TlsServer};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const TOKEN: &str = "edge-token-5f1c0e7a93b2";

fn frame(msg: &Message, request_id: u32) -> Vec<u8> {
    encode_frame(msg, request_id).unwrap().to_vec()
}

/// Reads the next frame, or None at a close; a hang fails the test.
async fn next_frame(tcp: &mut TcpStream, buf: &mut BytesMut) -> Option<(u32, Message)> {
    timeout(PATIENCE, async {
        loop {
            if let Some(f) = decode_frame(buf).expect("the server sends valid frames") {
                return Some(f);
            }
            if tcp.read_buf(buf).await.expect("read") == 0 {
                assert!(buf.is_empty(), "the server closed inside a frame");
                return None;
            }
        }
    })
    .await
    .expect("the server neither answered nor closed")
}

fn greedy_run() -> Run {
    Run::greedy(&prompts()[0], DraftChoice::Partial, "fixed:4", 24)
}

fn expected() -> Vec<u32> {
    expected_output(&reference(&prompts()[0], 24), 24)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_token_is_required_before_any_compute_and_the_right_one_is_served() {
    let cloud = Cloud::start(ServerConfig {
        auth: Some(AuthTokens::new([TOKEN, "another-edge-token-0042"])),
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let run = greedy_run();
    let cloud_error = |o: &Outcome| match &o.result {
        Err(EdgeError::Cloud(m)) => m.clone(),
        other => panic!("expected the cloud's error, got {other:?}"),
    };
    let none = run_edge(cloud.addr, &run).await;
    assert_eq!(
        cloud_error(&none),
        "unauthorized: this cloud requires an auth token and the Hello carries none \
         (start the edge with --auth-token-file)"
    );
    assert!(none.committed.is_empty());
    let wrong = run_edge_with(cloud.addr, &run, |c| {
        c.auth_token = Some("edge-token-5f1c0e7a93b3".into())
    })
    .await;
    assert_eq!(
        cloud_error(&wrong),
        "unauthorized: the Hello's auth token is not one this cloud accepts"
    );
    // On the wire: one Unauthorized reply to the Hello, then the close.
    let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
    tcp.write_all(&frame(&Message::Hello(run.hello()), 5))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    match next_frame(&mut tcp, &mut buf).await {
        Some((5, Message::ErrorReply(e))) => assert_eq!(e.code(), ErrorCode::Unauthorized),
        other => panic!("expected an Unauthorized reply, got {other:?}"),
    }
    assert!(
        next_frame(&mut tcp, &mut buf).await.is_none(),
        "then a close"
    );
    // Either accepted token opens a session with the target's own tokens.
    for token in [TOKEN, "another-edge-token-0042"] {
        let ok = run_edge_with(cloud.addr, &run, |c| c.auth_token = Some(token.into())).await;
        assert_eq!(ok.summary().tokens, expected());
    }
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_max_is_agreed_in_the_handshake_and_longer_blocks_are_refused() {
    let cloud = Cloud::start(ServerConfig {
        max_block_tokens: 8,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let run = greedy_run();
    // The edge asks for 4: agreed 4; a block of 5 is refused, the session goes on.
    let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
    let hello = Hello {
        max_block_tokens: 4,
        ..run.hello()
    };
    tcp.write_all(&frame(&Message::Hello(hello), 1))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let ack = match next_frame(&mut tcp, &mut buf).await {
        Some((1, Message::HelloAck(a))) if a.accepted => a,
        other => panic!("expected an accepting HelloAck, got {other:?}"),
    };
    assert_eq!(ack.max_block_tokens, 4);
    let block = |round: u32, k: usize| DraftBlock {
        round,
        tokens: vec![ack.first_token; k],
        ..Default::default()
    };
    tcp.write_all(&frame(&Message::DraftBlock(block(1, 5)), 2))
        .await
        .unwrap();
    match next_frame(&mut tcp, &mut buf).await {
        Some((2, Message::ErrorReply(e))) => {
            assert_eq!(e.code(), ErrorCode::BadRequest);
            assert_eq!(
                e.message,
                "a block of 5 drafted tokens is over this session's K_max of 4 (agreed in the handshake)"
            );
        }
        other => panic!("expected the block refused, got {other:?}"),
    }
    tcp.write_all(&frame(&Message::DraftBlock(block(1, 4)), 3))
        .await
        .unwrap();
    match next_frame(&mut tcp, &mut buf).await {
        Some((3, Message::Verdict(v))) => assert_eq!(v.round, 1),
        other => panic!("expected a verdict, got {other:?}"),
    }
    drop(tcp);
    // Asking for nothing, or for more than the cap, gets the cap.
    for asked in [0, 100] {
        let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
        let hello = Hello {
            max_block_tokens: asked,
            ..run.hello()
        };
        tcp.write_all(&frame(&Message::Hello(hello), 1))
            .await
            .unwrap();
        match next_frame(&mut tcp, &mut BytesMut::new()).await {
            Some((1, Message::HelloAck(a))) => assert_eq!(a.max_block_tokens, 8, "asked {asked}"),
            other => panic!("expected a HelloAck, got {other:?}"),
        }
    }
    // The edge cuts its blocks to the agreed K_max: fixed:16 drafts 8 at most, same tokens.
    let wide = Run {
        policy: "fixed:16",
        ..greedy_run()
    };
    let out = run_edge(cloud.addr, &wide).await;
    let s = out.summary();
    assert_eq!(s.tokens, expected());
    assert!(s.round_records.iter().all(|r| r.k <= 8));
    assert!(
        s.round_records.iter().any(|r| r.k == 8),
        "{:?}",
        s.round_records
    );
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_limits_refuse_long_prompts_and_extra_sessions() {
    let cloud = Cloud::start(ServerConfig {
        max_prompt_tokens: 8,
        max_sessions_per_client: 1,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let long = Run::greedy(&[5; 9], DraftChoice::Partial, "fixed:4", 8);
    match &run_edge(cloud.addr, &long).await.result {
        Err(EdgeError::Refused(m)) => assert_eq!(
            m,
            "the prompt has 9 tokens; this cloud accepts at most 8 (--max-prompt-tokens)"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // One session open (its Hello answered, the connection kept): a second from the same peer
    // is refused busy; once the first ends, it is served.
    let short = Run::greedy(&[5; 8], DraftChoice::Partial, "fixed:4", 8);
    let mut first = TcpStream::connect(cloud.addr).await.unwrap();
    first
        .write_all(&frame(&Message::Hello(short.hello()), 1))
        .await
        .unwrap();
    match next_frame(&mut first, &mut BytesMut::new()).await {
        Some((1, Message::HelloAck(a))) => assert!(a.accepted, "{}", a.reason),
        other => panic!("expected a HelloAck, got {other:?}"),
    }
    match &run_edge(cloud.addr, &short).await.result {
        Err(EdgeError::Busy {
            message,
            retry_after,
        }) => {
            assert_eq!(
                message,
                "peer 127.0.0.1 already has 1 session open, this cloud's limit per client \
                 (--max-sessions-per-client)"
            );
            assert_eq!(*retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("expected busy, got {other:?}"),
    }
    drop(first);
    // The server notices the close on its next read; retry until the slot is back.
    let mut served = None;
    for _ in 0..50 {
        let o = run_edge(cloud.addr, &short).await;
        if let Ok(s) = o.result {
            served = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = served.expect("served once the first session ended");
    assert_eq!(s.tokens, expected_output(&reference(&[5; 8], 8), 8));
    cloud.stop().await;
}

fn self_signed(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_pair.serialize_der()));
    (c.cert.der().clone(), key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_end_to_end_gives_the_same_tokens_and_plaintext_is_refused() {
    let (cert, key) = self_signed("localhost");
    let self_signed_cert = cert.clone();
    let cloud = Cloud::start(ServerConfig {
        tls: Some(TlsServer::new(vec![cert.clone()], key).unwrap()),
        auth: Some(AuthTokens::new([TOKEN])),
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let run = greedy_run();
    let client = TlsClient::new(vec![cert], "localhost").unwrap();
    let tcp = TcpStream::connect(cloud.addr).await.unwrap();
    let tls = client.connect(tcp).await.expect("TLS handshake");
    let out = run_edge_over(tls, &run, |c| c.auth_token = Some(TOKEN.into())).await;
    assert_eq!(out.summary().tokens, expected());
    // A plaintext edge gets one plaintext error saying TLS is required.
    match &run_edge_with(cloud.addr, &run, |c| c.auth_token = Some(TOKEN.into()))
        .await
        .result
    {
        Err(EdgeError::Cloud(m)) => assert_eq!(
            m,
            "this cloud requires TLS: connect with --tls-ca (plaintext refused)"
        ),
        other => panic!("expected plaintext refused, got {other:?}"),
    }
    // A certificate from another CA, or for another name, fails the handshake.
    let (other, _) = self_signed("localhost");
    let stranger = TlsClient::new(vec![other], "localhost").unwrap();
    let tcp = TcpStream::connect(cloud.addr).await.unwrap();
    let e = stranger.connect(tcp).await.unwrap_err().to_string();
    // (Same subject name, other key: the chain is found but its signature does not verify.)
    assert!(e.starts_with("invalid peer certificate: "), "{e}");
    let misnamed = TlsClient::new(vec![self_signed_cert], "cloud.example").unwrap();
    let tcp = TcpStream::connect(cloud.addr).await.unwrap();
    let e = misnamed.connect(tcp).await.unwrap_err().to_string();
    assert!(e.contains("not valid for name \"cloud.example\""), "{e}");
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_sessions_generated_tokens_count_against_the_budget_not_the_prompt_limit() {
    let cloud = Cloud::start(ServerConfig {
        max_prompt_tokens: 8,
        max_new_tokens: 30,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let prompt = vec![5u32; 8];
    let whole = expected_output(&reference(&prompt, 30), 30);
    assert_eq!(whole.len(), 30, "no stop token in the first 30");
    // Re-opened after 12 generated tokens: a 20-token prompt of which 12 are resumed.
    let mut reopened = prompt.clone();
    reopened.extend_from_slice(&whole[..12]);
    let hello = |resumed: u32, max_new: u32| Hello {
        resumed_tokens: resumed,
        max_new_tokens: max_new,
        ..Run::greedy(&reopened, DraftChoice::Partial, "fixed:4", 18).hello()
    };
    let ack = |h: Hello| async {
        let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
        tcp.write_all(&frame(&Message::Hello(h), 1)).await.unwrap();
        match next_frame(&mut tcp, &mut BytesMut::new()).await {
            Some((1, Message::HelloAck(a))) => a,
            other => panic!("expected a HelloAck, got {other:?}"),
        }
    };
    let a = ack(hello(12, 100)).await;
    assert!(a.accepted, "{}", a.reason);
    // The budget left (30 − 12) is below the ask: the HelloAck says so.
    assert_eq!((a.granted_new_tokens, a.context_bound), (18, false));
    assert_eq!(
        a.first_token, whole[12],
        "the next token of the uninterrupted text"
    );
    // Without saying it resumed, the same prompt is over the limit.
    let a = ack(hello(0, 18)).await;
    assert_eq!(
        a.reason,
        "the prompt has 20 tokens; this cloud accepts at most 8 (--max-prompt-tokens)"
    );
    // Claiming the whole prompt was generated is refused; so is a spent budget.
    let a = ack(hello(20, 18)).await;
    assert_eq!(
        a.reason,
        "resumed_tokens 20 leaves none of the 20-token prompt as the request's own"
    );
    let mut long = prompt.clone();
    long.extend_from_slice(&whole);
    let spent = Hello {
        resumed_tokens: 30,
        prompt: long,
        ..hello(0, 5)
    };
    let a = ack(spent).await;
    assert_eq!(
        a.reason,
        "the request has generated 30 tokens, this cloud's budget per request (30)"
    );
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hello_ack_tells_a_grant_cut_by_the_context_window() {
    let cloud = Cloud::start(ServerConfig {
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let prompt = vec![5u32; 8];
    let ack = |max_new: u32| {
        let prompt = prompt.clone();
        async move {
            let h = Hello {
                max_new_tokens: max_new,
                ..Run::greedy(&prompt, DraftChoice::Partial, "fixed:4", max_new as usize).hello()
            };
            let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
            tcp.write_all(&frame(&Message::Hello(h), 1)).await.unwrap();
            match next_frame(&mut tcp, &mut BytesMut::new()).await {
                Some((1, Message::HelloAck(a))) => a,
                other => panic!("expected a HelloAck, got {other:?}"),
            }
        }
    };
    // The tiny target's window is 512 positions: 8 of prompt and 64 of drafts leave 440.
    let a = ack(1000).await;
    assert!(a.accepted, "{}", a.reason);
    assert_eq!((a.granted_new_tokens, a.context_bound), (440, true));
    // A whole grant is not sent (0): the HelloAck keeps its size.
    let a = ack(10).await;
    assert_eq!((a.granted_new_tokens, a.context_bound), (0, false));
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tls_cloud_closes_extra_connections_instead_of_answering_in_plaintext() {
    let (cert, key) = self_signed("localhost");
    let cloud = Cloud::start(ServerConfig {
        tls: Some(TlsServer::new(vec![cert.clone()], key).unwrap()),
        max_pending: 1,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // An idle connection holds the one pending slot.
    let idle = TcpStream::connect(cloud.addr).await.unwrap();
    let client = TlsClient::new(vec![cert], "localhost").unwrap();
    let tcp = TcpStream::connect(cloud.addr).await.unwrap();
    let e = client.connect(tcp).await.unwrap_err().to_string();
    // A close (which the edge retries), not a plaintext reply misread as a corrupt record.
    assert!(
        !e.contains("corrupt") && !e.contains("InvalidContentType"),
        "{e}"
    );
    // Once the idle connection is gone, the slot is free again.
    drop(idle);
    let mut served = None;
    for _ in 0..50 {
        let tcp = TcpStream::connect(cloud.addr).await.unwrap();
        if let Ok(tls) = client.connect(tcp).await {
            served = Some(run_edge_over(tls, &greedy_run(), |_| {}).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        served
            .expect("a TLS session after the slot freed")
            .summary()
            .tokens,
        expected()
    );
    cloud.stop().await;
}
