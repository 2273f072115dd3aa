//! The edge's byte counting: every byte it writes and reads is counted once, per round and per
//! session, and equals the frames on the wire.
//! End to end against the real server on tiny random-weight models (fixtures in `common`).

mod common;

use bytes::BytesMut;
use common::*;
use ecspec_proto::{decode_frame, frame_len, Close, DraftBlock, HelloAck, Message, Verdict};
use ecspec_spec::verify::VerifyRule;

/// The HelloAck of an accepted session of this server, first token `first`.
fn expected_ack(session_id: u64, first: u32, finished: bool, prefill_us: u32) -> HelloAck {
    HelloAck {
        accepted: true,
        reason: String::new(),
        session_id,
        target_version: VERSION.into(),
        vocab_size: VOCAB as u32,
        eos_token_ids: STOPS.to_vec(),
        first_token: first,
        finished,
        prefill_us,
        queue_us: 0,
        // The cloud's cap: the edge asked for none of its own.
        max_block_tokens: 64,
        granted_new_tokens: 0,
        context_bound: false,
    }
}

/// The prefill time the cloud reported, read from the one field of the HelloAck the test
/// cannot know (it is a measurement).
fn prefill_us(received: &[u8]) -> u32 {
    match decode_all(received).first() {
        Some((_, Message::HelloAck(a))) => a.prefill_us,
        other => panic!("expected a HelloAck first, got {other:?}"),
    }
}

fn decode_all(bytes: &[u8]) -> Vec<(u32, Message)> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = decode_frame(&mut buf).expect("valid frames") {
        out.push(f);
    }
    assert!(
        buf.is_empty(),
        "{} bytes after the last whole frame",
        buf.len()
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_byte_counts_equal_the_frames_on_the_wire() {
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let max_new = 23;
    let reference = reference(&prompt, max_new);
    let expected = expected_output(&reference, max_new);
    let mut session_id = 0;

    // Greedy speculative: every frame is predictable from the replay.
    for (draft, policy) in [
        (DraftChoice::Partial, "fixed:3"),
        (DraftChoice::Same, "fixed:5"),
        (DraftChoice::Independent, "adaptive"),
    ] {
        session_id += 1;
        let run = Run {
            link: FAST_LINK,
            ..Run::greedy(&prompt, draft, policy, max_new)
        };
        let o = run_edge(cloud.addr, &run).await;
        let s = o.summary();
        assert_eq!(s.tokens, expected);
        let ks: Vec<usize> = s.round_records.iter().map(|r| r.k).collect();
        let replay = replay_greedy(
            &draft.draft().transformer,
            &prompt,
            &reference,
            &ks,
            max_new,
        );

        let hello = Message::Hello(run.hello());
        let blocks: Vec<Message> = replay
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Message::DraftBlock(DraftBlock {
                    round: i as u32 + 1,
                    tokens: r.drafted.clone(),
                    dists: vec![],
                    stream: 0,
                })
            })
            .collect();
        let close = Message::Close(Close {});
        let up =
            frame_len(&hello) + blocks.iter().map(frame_len).sum::<usize>() + frame_len(&close);
        assert_eq!(
            s.uplink_bytes, up as u64,
            "{draft:?} {policy}: uplink = Hello + DraftBlocks + Close"
        );

        let ack = Message::HelloAck(expected_ack(
            session_id,
            expected[0],
            false,
            prefill_us(&o.received),
        ));
        let verdicts: Vec<Message> = replay
            .iter()
            .zip(&s.round_records)
            .map(|(r, rec)| {
                Message::Verdict(Verdict {
                    round: rec.round,
                    accepted: r.accepted as u32,
                    next_token: r.next_token,
                    finished: r.finished,
                    compute_us: compute_us(rec.cloud_compute_s),
                    row_cost_us: 0,
                })
            })
            .collect();
        let down = frame_len(&ack) + verdicts.iter().map(frame_len).sum::<usize>();
        assert_eq!(
            s.downlink_bytes, down as u64,
            "{draft:?} {policy}: downlink = HelloAck + Verdicts"
        );

        // Per round: exactly that round's DraftBlock up and Verdict down.
        for ((rec, b), v) in s.round_records.iter().zip(&blocks).zip(&verdicts) {
            assert_eq!(
                (rec.uplink_bytes, rec.downlink_bytes),
                (frame_len(b) as u64, frame_len(v) as u64),
                "round {}",
                rec.round
            );
        }
        // And the frames themselves are those messages, byte for byte.
        let sent: Vec<Message> = decode_all(&o.sent).into_iter().map(|(_, m)| m).collect();
        let want: Vec<Message> = std::iter::once(hello)
            .chain(blocks)
            .chain([close])
            .collect();
        assert_eq!(sent, want);
        let got: Vec<Message> = decode_all(&o.received)
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            got,
            std::iter::once(ack).chain(verdicts).collect::<Vec<_>>()
        );
        assert_eq!(
            (o.sent.len() as u64, o.received.len() as u64),
            (s.uplink_bytes, s.downlink_bytes)
        );
    }

    // Cloud-only: Hello and Close up; HelloAck and one Verdict per further token down.
    session_id += 1;
    let run = Run {
        link: FAST_LINK,
        ..Run::cloud_only(&prompt, max_new)
    };
    let o = run_edge(cloud.addr, &run).await;
    let s = o.summary();
    assert_eq!(s.tokens, expected);
    let up = frame_len(&Message::Hello(run.hello())) + frame_len(&Message::Close(Close {}));
    assert_eq!(s.uplink_bytes, up as u64);
    let ack = Message::HelloAck(expected_ack(
        session_id,
        expected[0],
        false,
        prefill_us(&o.received),
    ));
    let n = s.round_records.len();
    let verdicts: usize = s
        .round_records
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            frame_len(&Message::Verdict(Verdict {
                round: rec.round,
                accepted: 0,
                next_token: expected[i + 1],
                finished: i + 1 == n,
                compute_us: compute_us(rec.cloud_compute_s),
                row_cost_us: 0,
            }))
        })
        .sum();
    assert_eq!(s.downlink_bytes, (frame_len(&ack) + verdicts) as u64);

    // Rejection sampling: each block carries one compact distribution per drafted token.
    session_id += 1;
    let run = Run {
        link: FAST_LINK,
        dist: (16, 8),
        ..Run::sampled(
            &prompt,
            DraftChoice::Same,
            VerifyRule::Rejection,
            3,
            max_new,
        )
    };
    let o = run_edge(cloud.addr, &run).await;
    let s = o.summary();
    let sent = decode_all(&o.sent);
    assert_eq!(sent.len(), s.round_records.len() + 2);
    assert_eq!(sent[0].1, Message::Hello(run.hello()));
    assert_eq!(sent.last().unwrap().1, Message::Close(Close {}));
    let mut pos = 1; // the first token came with the HelloAck
    for ((_, m), rec) in sent[1..sent.len() - 1].iter().zip(&s.round_records) {
        let Message::DraftBlock(b) = m else {
            panic!("expected a DraftBlock, got {m:?}")
        };
        assert_eq!(
            (b.round, b.tokens.len(), b.dists.len()),
            (rec.round, rec.k, rec.k)
        );
        for (t, d) in b.tokens.iter().zip(&b.dists) {
            assert!(
                d.ids.contains(t) && d.ids.len() <= 16 && d.bits == 8,
                "{d:?}"
            );
        }
        assert_eq!(
            b.tokens[..rec.accepted],
            s.tokens[pos..pos + rec.accepted],
            "accepted drafts are committed"
        );
        assert_eq!(rec.uplink_bytes, frame_len(m) as u64);
        pos += rec.accepted + 1;
    }
    assert_eq!(pos, s.tokens.len());
    let up: usize = sent.iter().map(|(_, m)| frame_len(m)).sum();
    assert_eq!(s.uplink_bytes, up as u64);
    let received = decode_all(&o.received);
    let ack = Message::HelloAck(expected_ack(
        session_id,
        s.tokens[0],
        false,
        prefill_us(&o.received),
    ));
    assert_eq!(received[0].1, ack);
    let down: usize = received.iter().map(|(_, m)| frame_len(m)).sum();
    assert_eq!(s.downlink_bytes, down as u64);
    assert_eq!(
        (o.sent.len() as u64, o.received.len() as u64),
        (s.uplink_bytes, s.downlink_bytes)
    );
    cloud.stop().await;
}
