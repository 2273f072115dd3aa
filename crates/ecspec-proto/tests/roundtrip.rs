//! Property tests: every message the protocol can carry, with arbitrary field values, comes
//! back from `encode_frame` → `decode_frame` equal, under any request id, whole or fed in
//! arbitrary pieces (the incremental decoder sees a frame split anywhere).

use bytes::BytesMut;
use ecspec_proto::{
    decode_frame, encode_frame, Close, CompactDist, DraftBlock, ErrorReply, Hello, HelloAck,
    Message, SetVersion, Verdict, VersionAck,
};
use proptest::prelude::*;

fn hello() -> impl Strategy<Value = Hello> {
    (
        (any::<u32>(), ".{0,24}", "[0-9a-f]{0,64}", ".{0,16}"),
        (
            any::<f32>(),
            any::<f32>(),
            any::<u32>(),
            any::<u64>(),
            any::<i32>(),
        ),
        (
            any::<u32>(),
            prop::collection::vec(any::<u32>(), 0..64),
            any::<bool>(),
            any::<u32>(),
        ),
        (".{0,40}", any::<u32>(), any::<u32>()),
    )
        .prop_map(|(a, b, c, d)| Hello {
            protocol_version: a.0,
            model_family: a.1,
            base_hash: a.2,
            draft_kind: a.3,
            temperature: b.0,
            top_p: b.1,
            top_k: b.2,
            seed: b.3,
            verify_mode: b.4,
            max_new_tokens: c.0,
            prompt: c.1,
            autoregressive: c.2,
            stream: c.3,
            auth_token: d.0,
            max_block_tokens: d.1,
            resumed_tokens: d.2,
        })
}

fn hello_ack() -> impl Strategy<Value = HelloAck> {
    (
        (
            any::<bool>(),
            ".{0,40}",
            any::<u64>(),
            ".{0,16}",
            any::<u32>(),
        ),
        (
            prop::collection::vec(any::<u32>(), 0..4),
            any::<u32>(),
            any::<bool>(),
        ),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>()),
    )
        .prop_map(|(a, b, c)| HelloAck {
            accepted: a.0,
            reason: a.1,
            session_id: a.2,
            target_version: a.3,
            vocab_size: a.4,
            eos_token_ids: b.0,
            first_token: b.1,
            finished: b.2,
            prefill_us: c.0,
            queue_us: c.1,
            max_block_tokens: c.2,
            granted_new_tokens: c.3,
            context_bound: c.4,
        })
}

fn draft_block() -> impl Strategy<Value = DraftBlock> {
    let dist = (
        prop::collection::vec(any::<u32>(), 0..8),
        prop::collection::vec(any::<u8>(), 0..16),
        any::<u32>(),
    )
        .prop_map(|(ids, probs, bits)| CompactDist { ids, probs, bits });
    (
        any::<u32>(),
        prop::collection::vec(any::<u32>(), 0..64),
        prop::collection::vec(dist, 0..4),
        any::<u32>(),
    )
        .prop_map(|(round, tokens, dists, stream)| DraftBlock {
            round,
            tokens,
            dists,
            stream,
        })
}

fn verdict() -> impl Strategy<Value = Verdict> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(round, accepted, next_token, finished, compute_us, row_cost_us)| Verdict {
                round,
                accepted,
                next_token,
                finished,
                compute_us,
                row_cost_us,
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello().prop_map(Message::from),
        hello_ack().prop_map(Message::from),
        draft_block().prop_map(Message::from),
        verdict().prop_map(Message::from),
        Just(Message::from(Close {})),
        (any::<i32>(), ".{0,40}", any::<u32>()).prop_map(|(code, message, retry_after_ms)| {
            Message::from(ErrorReply {
                code,
                message,
                retry_after_ms,
            })
        }),
        ".{0,24}".prop_map(|version| Message::from(SetVersion { version })),
        (".{0,16}", ".{0,16}", prop::collection::vec(".{0,8}", 0..4)).prop_map(
            |(active, previous, versions)| Message::from(VersionAck {
                active,
                previous,
                versions,
            })
        ),
    ]
}

/// Floats compare by bits (a NaN temperature must come back as the same NaN), except that −0
/// comes back as 0: proto3 does not send a field equal to its default, and −0.0 == 0.0.
fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
}

fn same(a: &Message, b: &Message) -> bool {
    match (a, b) {
        (Message::Hello(x), Message::Hello(y)) => {
            same_f32(x.temperature, y.temperature)
                && same_f32(x.top_p, y.top_p)
                && Hello {
                    temperature: 0.0,
                    top_p: 0.0,
                    ..x.clone()
                } == Hello {
                    temperature: 0.0,
                    top_p: 0.0,
                    ..y.clone()
                }
        }
        _ => a == b,
    }
}

proptest! {
    // 512 fresh random cases per run; a failure prints its shrunk case instead of writing a
    // regression file into the tree.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_message_round_trips_whole_and_in_pieces(
        msg in message(),
        id in any::<u32>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let frame = encode_frame(&msg, id).unwrap();
        let mut buf = BytesMut::from(&frame[..]);
        let (rid, back) = decode_frame(&mut buf).unwrap().expect("a whole frame");
        prop_assert_eq!(rid, id);
        prop_assert!(same(&msg, &back), "{:?} != {:?}", msg, back);
        prop_assert!(buf.is_empty());
        // Split at an arbitrary point: nothing before the whole frame, then the same message.
        let at = cut.index(frame.len());
        let mut buf = BytesMut::from(&frame[..at]);
        prop_assert!(decode_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&frame[at..]);
        let (rid, back) = decode_frame(&mut buf).unwrap().expect("a whole frame");
        prop_assert_eq!(rid, id);
        prop_assert!(same(&msg, &back));
    }
}
