//! Framing: round trips, exact frame sizes, incremental decoding, malformed input.

use bytes::BytesMut;
use ecspec_proto::{
    decode_eof, decode_frame, encode_frame, encode_frame_into, frame_len, Close, CompactDist,
    DraftBlock, ErrorCode, ErrorReply, FrameError, Hello, HelloAck, Message, MessageType,
    SetVersion, Verdict, VerifyMode, VersionAck, HEADER_LEN, MAX_FRAME_LEN, PROTOCOL_VERSION,
};

fn hello() -> Hello {
    Hello {
        protocol_version: u32::from(PROTOCOL_VERSION),
        model_family: "smollm2-135m".into(),
        base_hash: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
        draft_kind: "shared-backbone".into(),
        temperature: 0.7,
        top_p: 0.95,
        top_k: 50,
        seed: 0xDEAD_BEEF_CAFE_F00D,
        verify_mode: VerifyMode::Rejection as i32,
        max_new_tokens: 256,
        prompt: vec![1, 9707, 28, 49151, 0, 2],
        autoregressive: false,
        stream: 0,
        auth_token: String::new(),
        max_block_tokens: 0,
        resumed_tokens: 0,
    }
}

fn hello_ack() -> HelloAck {
    HelloAck {
        accepted: true,
        reason: String::new(),
        session_id: 7_000_000_001,
        target_version: "rust-lora-v2".into(),
        vocab_size: 49152,
        eos_token_ids: vec![0, 2],
        first_token: 504,
        finished: false,
        prefill_us: 0,
        queue_us: 0,
        max_block_tokens: 0,
        granted_new_tokens: 0,
        context_bound: false,
    }
}

fn rejection_block() -> DraftBlock {
    let dist = |levels: &[u32]| CompactDist::from_levels(vec![10, 11, 300, 49151], levels, 4);
    DraftBlock {
        round: 3,
        tokens: vec![10, 300],
        dists: vec![dist(&[15, 0, 7, 1]).unwrap(), dist(&[1, 2, 15, 3]).unwrap()],
        stream: 0,
    }
}

/// One of every message, with non-default fields, plus the all-default cases.
fn samples() -> Vec<Message> {
    vec![
        hello().into(),
        Hello {
            auth_token: "edge-7f3a9c1e5b2d4086".into(),
            max_block_tokens: 16,
            ..hello()
        }
        .into(),
        Hello::default().into(),
        hello_ack().into(),
        HelloAck {
            max_block_tokens: 16,
            ..hello_ack()
        }
        .into(),
        HelloAck {
            accepted: false,
            reason: "base_hash mismatch".into(),
            ..Default::default()
        }
        .into(),
        DraftBlock {
            round: 1,
            tokens: vec![5, 17, 100, 2],
            dists: vec![],
            stream: 0,
        }
        .into(),
        DraftBlock {
            round: 9,
            tokens: vec![],
            dists: vec![],
            stream: 0,
        }
        .into(),
        rejection_block().into(),
        Verdict {
            round: 1,
            accepted: 3,
            next_token: 1234,
            finished: false,
            compute_us: 0,
            row_cost_us: 0,
        }
        .into(),
        Verdict {
            round: 2,
            accepted: 0,
            next_token: 2,
            finished: true,
            compute_us: 0,
            row_cost_us: 0,
        }
        .into(),
        ErrorReply {
            code: ErrorCode::IncompatibleDraft as i32,
            message: "other base".into(),
            retry_after_ms: 0,
        }
        .into(),
        ErrorReply {
            code: ErrorCode::Busy as i32,
            message: "kv budget".into(),
            retry_after_ms: 1000,
        }
        .into(),
        Close {}.into(),
        SetVersion {
            version: "rust".into(),
        }
        .into(),
        SetVersion::default().into(),
        VersionAck {
            active: "rust".into(),
            previous: "v0".into(),
            versions: vec!["v0".into(), "rust".into()],
        }
        .into(),
    ]
}

#[test]
fn every_message_round_trips() {
    for (i, msg) in samples().into_iter().enumerate() {
        let request_id = 1000 + i as u32;
        let frame = encode_frame(&msg, request_id).unwrap();
        assert_eq!(frame.len(), frame_len(&msg), "{msg:?}");
        assert_eq!(frame[4], PROTOCOL_VERSION);
        assert_eq!(frame[5], msg.message_type().as_u8());
        let mut buf = BytesMut::from(&frame[..]);
        assert_eq!(decode_frame(&mut buf).unwrap(), Some((request_id, msg)));
        assert!(buf.is_empty());
    }
}

#[test]
fn accessors_read_enums_and_default_unknown_values_to_unspecified() {
    let mut h = hello();
    assert_eq!(h.verify_mode(), VerifyMode::Rejection);
    h.set_verify_mode(VerifyMode::Greedy);
    assert_eq!(h.verify_mode, 1);
    h.verify_mode = 99; // a value from a newer peer
    assert_eq!(h.verify_mode(), VerifyMode::Unspecified);
    assert_eq!(Hello::default().verify_mode(), VerifyMode::Unspecified);
    let e = ErrorReply {
        code: 5,
        message: String::new(),
        retry_after_ms: 0,
    };
    assert_eq!(e.code(), ErrorCode::Internal);
}

#[test]
fn message_type_bytes_are_stable() {
    let all = [
        (1, MessageType::Hello),
        (2, MessageType::HelloAck),
        (3, MessageType::DraftBlock),
        (4, MessageType::Verdict),
        (5, MessageType::ErrorReply),
        (6, MessageType::Close),
        (7, MessageType::SetVersion),
        (8, MessageType::VersionAck),
    ];
    for (byte, ty) in all {
        assert_eq!(ty.as_u8(), byte);
        assert_eq!(MessageType::from_u8(byte), Some(ty));
    }
    assert_eq!(MessageType::from_u8(0), None);
    assert_eq!(MessageType::from_u8(9), None);
}

// ---- exact sizes -------------------------------------------------------------------------
//
// Header: 4 (length) + 1 (version) + 1 (type) + 4 (request id) = 10 bytes.
// Protobuf: a field key is the varint (field_number << 3 | wire_type), 1 byte for fields 1..15.
// A varint holds 7 bits per byte: < 2^7 → 1 byte, < 2^14 → 2, < 2^21 → 3, < 2^28 → 4, else 5.
// A packed repeated u32 is key + varint(byte length) + the varints. Default values are omitted.

#[test]
fn four_token_block_with_small_ids_is_18_bytes() {
    // Payload: round=1      → key 0x08, varint 1                       = 2 bytes
    //          tokens ×4    → key 0x12, length 4, 4 one-byte varints   = 6 bytes
    //          dists empty  → omitted                                  = 0 bytes
    // 8-byte payload + 10-byte header = 18 bytes; the length prefix says 18 − 4 = 14.
    let msg: Message = DraftBlock {
        round: 1,
        tokens: vec![5, 17, 100, 2],
        dists: vec![],
        stream: 0,
    }
    .into();
    let frame = encode_frame(&msg, 42).unwrap();
    assert_eq!(frame_len(&msg), 18);
    assert_eq!(
        &frame[..],
        &[
            0,
            0,
            0,
            14,
            PROTOCOL_VERSION,
            3,
            0,
            0,
            0,
            42,
            0x08,
            1,
            0x12,
            4,
            5,
            17,
            100,
            2
        ]
    );
}

#[test]
fn four_token_block_with_vocabulary_sized_ids_is_23_bytes() {
    // tokens 300 (2-byte varint), 49151 (3: ≥ 2^14), 7 (1), 16384 (3: = 2^14) → 9 bytes,
    // packed: key + length + 9 = 11; round=12: 2. Payload 13, frame 23.
    let msg: Message = DraftBlock {
        round: 12,
        tokens: vec![300, 49151, 7, 16384],
        dists: vec![],
        stream: 0,
    }
    .into();
    let frame = encode_frame(&msg, 1).unwrap();
    assert_eq!(frame.len(), 23);
    assert_eq!(frame_len(&msg), 23);
    assert_eq!(&frame[10..14], &[0x08, 12, 0x12, 9]);
    assert_eq!(&frame[14..16], &[0xAC, 0x02]); // 300 = 0b10_0101100
}

#[test]
fn rejection_block_with_two_4_bit_top4_dists_is_51_bytes() {
    // Each CompactDist {ids [10, 11, 300, 49151], 4 levels × 4 bits, bits 4}:
    //   ids:   key + length 7 + (1 + 1 + 2 + 3)      = 9
    //   probs: key + length 2 + 2 bytes (4 × 4 bits) = 4
    //   bits:  key + varint 4                        = 2   → 15 bytes,
    //   nested in DraftBlock: key 0x1A + length 15 + 15 = 17, twice = 34.
    // round=3: 2; tokens [10, 300]: key + length 3 + 1 + 2 = 5. Payload 41, frame 51.
    let msg: Message = rejection_block().into();
    assert_eq!(msg.payload_len(), 41);
    assert_eq!(frame_len(&msg), 51);
    assert_eq!(encode_frame(&msg, 0).unwrap().len(), 51);
}

#[test]
fn cloud_only_block_verdict_and_close_sizes() {
    // K = 0 in round 0: every field is default, the payload is empty: the header alone.
    assert_eq!(frame_len(&DraftBlock::default().into()), HEADER_LEN);
    // K = 0 in round 5: key + varint = 2 → 12.
    assert_eq!(
        frame_len(
            &DraftBlock {
                round: 5,
                ..Default::default()
            }
            .into()
        ),
        12
    );
    // Verdict round 1, accepted 3, next_token 1234 (2-byte varint), not finished:
    // 2 + 2 + 3 = 7 → 17; finished adds key + 1 = 2 → 19.
    let v = Verdict {
        round: 1,
        accepted: 3,
        next_token: 1234,
        finished: false,
        compute_us: 0,
        row_cost_us: 0,
    };
    let frame = encode_frame(&v.clone().into(), 9).unwrap();
    assert_eq!(
        &frame[..],
        &[0, 0, 0, 13, 1, 4, 0, 0, 0, 9, 0x08, 1, 0x10, 3, 0x18, 0xD2, 0x09]
    );
    assert_eq!(
        frame_len(
            &Verdict {
                finished: true,
                compute_us: 0,
                row_cost_us: 0,
                ..v
            }
            .into()
        ),
        19
    );
    assert_eq!(encode_frame(&Close {}.into(), 0).unwrap().len(), 10);
}

// ---- incremental decoding ----------------------------------------------------------------

#[test]
fn frame_split_at_every_byte_is_incomplete_until_its_last_byte() {
    for msg in samples() {
        let frame = encode_frame(&msg, 77).unwrap();
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(
                decode_frame(&mut buf).unwrap(),
                None,
                "cut at {cut} of {msg:?}"
            );
            assert_eq!(buf.len(), cut, "an incomplete frame must stay buffered");
            buf.extend_from_slice(&frame[cut..]);
            assert_eq!(decode_frame(&mut buf).unwrap(), Some((77, msg.clone())));
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn byte_by_byte_stream_yields_each_frame_exactly_at_its_end() {
    let msgs = samples();
    let mut stream = BytesMut::new();
    let mut ends = Vec::new();
    for (i, msg) in msgs.iter().enumerate() {
        encode_frame_into(msg, i as u32, &mut stream).unwrap();
        ends.push(stream.len());
    }
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for (pos, &byte) in stream.iter().enumerate() {
        buf.extend_from_slice(&[byte]);
        match decode_frame(&mut buf).unwrap() {
            Some(frame) => {
                assert_eq!(pos + 1, ends[decoded.len()]);
                decoded.push(frame);
            }
            None => assert!(!ends.contains(&(pos + 1))),
        }
    }
    let expected: Vec<_> = msgs
        .into_iter()
        .enumerate()
        .map(|(i, m)| (i as u32, m))
        .collect();
    assert_eq!(decoded, expected);
    assert_eq!(decode_eof(&mut buf).unwrap(), None);
}

// ---- malformed input ---------------------------------------------------------------------

fn header(len_after_prefix: u32, version: u8, ty: u8, request_id: u32) -> Vec<u8> {
    let mut h = len_after_prefix.to_be_bytes().to_vec();
    h.extend([version, ty]);
    h.extend(request_id.to_be_bytes());
    h
}

#[test]
fn truncated_stream_is_incomplete_then_an_error_at_eof() {
    let frame = encode_frame(&hello().into(), 5).unwrap();
    let mut buf = BytesMut::from(&frame[..frame.len() - 1]);
    assert_eq!(decode_frame(&mut buf), Ok(None));
    assert_eq!(
        decode_eof(&mut buf),
        Err(FrameError::Truncated {
            buffered: frame.len() - 1,
            frame_len: Some(frame.len())
        })
    );
    let mut buf = BytesMut::from(&frame[..2]);
    assert_eq!(
        decode_eof(&mut buf),
        Err(FrameError::Truncated {
            buffered: 2,
            frame_len: None
        })
    );
    assert!(decode_eof(&mut BytesMut::from(&frame[..2]))
        .unwrap_err()
        .is_fatal());
}

#[test]
fn length_shorter_than_header_is_too_short() {
    // Prefix 5: a 9-byte frame, one byte short of the header.
    let mut buf = BytesMut::from(&header(5, PROTOCOL_VERSION, 4, 0)[..9]);
    assert_eq!(
        decode_frame(&mut buf),
        Err(FrameError::TooShort { len: 9, min: 10 })
    );
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
    let err = decode_frame(&mut buf).unwrap_err();
    assert_eq!(err, FrameError::TooShort { len: 4, min: 10 });
    assert!(err.is_fatal());
    assert_eq!(buf.len(), 4);
}

#[test]
fn oversized_length_is_refused_from_the_prefix_alone() {
    // Only the 4 prefix bytes are buffered: the error comes before anything else arrives.
    let over = (MAX_FRAME_LEN - 4 + 1) as u32;
    let mut buf = BytesMut::from(&over.to_be_bytes()[..]);
    assert_eq!(
        decode_frame(&mut buf),
        Err(FrameError::TooLarge {
            len: MAX_FRAME_LEN + 1,
            max: MAX_FRAME_LEN
        })
    );
    assert_eq!(
        buf.capacity(),
        4,
        "nothing may be allocated for an oversized frame"
    );
    let mut buf = BytesMut::from(&[0xFF, 0xFF, 0xFF, 0xFF][..]);
    let err = decode_frame(&mut buf).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLarge {
            len: u32::MAX as usize + 4,
            max: MAX_FRAME_LEN
        }
    );
    assert!(err.is_fatal());
    // Plain text from a peer that is not speaking this protocol: "GET " is 1.2 GB.
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    assert!(matches!(
        decode_frame(&mut buf),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn frame_of_exactly_max_len_passes_and_one_more_byte_fails() {
    // Hello with only model_family set: payload = key (1) + varint(n) (4 bytes for
    // 2^21 <= n < 2^28) + n. Frame = 10 + 1 + 4 + n = MAX_FRAME_LEN → n = MAX_FRAME_LEN − 15.
    let n = MAX_FRAME_LEN - 15;
    let fits: Message = Hello {
        model_family: "x".repeat(n),
        ..Default::default()
    }
    .into();
    assert_eq!(frame_len(&fits), MAX_FRAME_LEN);
    let frame = encode_frame(&fits, 3).unwrap();
    assert_eq!(frame.len(), MAX_FRAME_LEN);
    assert_eq!(
        decode_frame(&mut BytesMut::from(&frame[..])).unwrap(),
        Some((3, fits))
    );

    let too_big: Message = Hello {
        model_family: "x".repeat(n + 1),
        ..Default::default()
    }
    .into();
    let mut dst = BytesMut::from(&b"kept"[..]);
    assert_eq!(
        encode_frame_into(&too_big, 3, &mut dst),
        Err(FrameError::TooLarge {
            len: MAX_FRAME_LEN + 1,
            max: MAX_FRAME_LEN
        })
    );
    assert_eq!(&dst[..], b"kept");
}

#[test]
fn wrong_version_is_refused_as_soon_as_the_version_byte_arrives() {
    let frame = header(6, PROTOCOL_VERSION + 1, 6, 0);
    let mut buf = BytesMut::from(&frame[..5]);
    let err = decode_frame(&mut buf).unwrap_err();
    assert_eq!(
        err,
        FrameError::UnsupportedVersion {
            version: 2,
            supported: 1
        }
    );
    assert!(err.is_fatal());
    assert_eq!(buf.len(), 5);
    assert_eq!(
        err.to_string(),
        "unsupported protocol version 2; this peer speaks version 1"
    );
}

#[test]
fn unknown_message_type_is_reported_with_its_request_id_and_skipped() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&header(6 + 3, PROTOCOL_VERSION, 0x7F, 0xABCD));
    buf.extend_from_slice(&[1, 2, 3]);
    encode_frame_into(&Close {}.into(), 8, &mut buf).unwrap();
    let err = decode_frame(&mut buf).unwrap_err();
    assert_eq!(
        err,
        FrameError::UnknownMessageType {
            message_type: 0x7F,
            request_id: 0xABCD
        }
    );
    assert!(!err.is_fatal());
    // The bad frame is consumed; the stream stays in sync.
    assert_eq!(decode_frame(&mut buf).unwrap(), Some((8, Close {}.into())));

    let mut buf = BytesMut::from(&header(6, PROTOCOL_VERSION, 0, 1)[..]);
    assert!(matches!(
        decode_frame(&mut buf),
        Err(FrameError::UnknownMessageType {
            message_type: 0,
            request_id: 1
        })
    ));
}

#[test]
fn garbage_payload_is_a_payload_error_and_skipped() {
    let cases: [(MessageType, &[u8]); 4] = [
        (MessageType::Verdict, &[0xFF]),           // key varint never ends
        (MessageType::Hello, &[0x0A, 0x05, 0x01]), // field 1 is a varint, sent as bytes
        (MessageType::DraftBlock, &[0x12, 0x05, 0x01]), // packed tokens: 5 bytes announced, 1 sent
        (MessageType::Close, &[0x00]),             // field number 0 does not exist
    ];
    for (ty, payload) in cases {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&header(
            6 + payload.len() as u32,
            PROTOCOL_VERSION,
            ty.as_u8(),
            31,
        ));
        buf.extend_from_slice(payload);
        encode_frame_into(&Close {}.into(), 32, &mut buf).unwrap();
        match decode_frame(&mut buf) {
            Err(
                err @ FrameError::Payload {
                    message_type,
                    request_id: 31,
                    len,
                    ..
                },
            ) => {
                assert_eq!(message_type, ty);
                assert_eq!(len, payload.len());
                assert!(!err.is_fatal());
                assert!(std::error::Error::source(&err).is_some());
            }
            other => panic!("{ty:?} {payload:?}: expected a payload error, got {other:?}"),
        }
        assert_eq!(decode_frame(&mut buf).unwrap(), Some((32, Close {}.into())));
    }
}

// ---- no input makes the decoder panic ----------------------------------------------------

/// SplitMix64: a tiny deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Decodes everything decodable in `buf`, checking the buffer contract on every call, and
/// returns how many frames decoded.
fn drain(buf: &mut BytesMut) -> usize {
    let mut decoded = 0;
    loop {
        let before = buf.len();
        match decode_frame(buf) {
            Ok(Some((_, msg))) => {
                assert!(buf.len() < before);
                // Whatever decoded re-encodes to a frame that decodes to the same bytes again.
                let again = encode_frame(&msg, 0).unwrap();
                let (_, msg2) = decode_frame(&mut BytesMut::from(&again[..]))
                    .unwrap()
                    .unwrap();
                assert_eq!(encode_frame(&msg2, 0).unwrap(), again);
                decoded += 1;
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                return decoded;
            }
            Err(e) if !e.is_fatal() => assert!(buf.len() < before),
            Err(_) => {
                assert_eq!(buf.len(), before);
                return decoded;
            }
        }
    }
}

#[test]
fn decoder_never_panics_on_random_bytes() {
    let mut rng = Rng(0x5EED_0000_EC5B_EC00);
    let valid: Vec<_> = samples()
        .iter()
        .map(|m| encode_frame(m, 1).unwrap())
        .collect();
    let mut decoded = 0;
    for _ in 0..30_000 {
        let bytes = match rng.below(3) {
            // Pure noise: almost always a bad length.
            0 => {
                let n = rng.below(40) as usize;
                rng.bytes(n)
            }
            // A plausible header (right length and version, any type byte) over a random payload,
            // so the protobuf decoders see noise.
            1 => {
                let n = rng.below(48) as usize;
                let mut b = header(6 + n as u32, PROTOCOL_VERSION, rng.below(8) as u8, 7);
                b.extend(rng.bytes(n));
                b
            }
            // A valid frame with a few bytes flipped in its payload.
            _ => {
                let mut b = valid[rng.below(valid.len() as u64) as usize].to_vec();
                for _ in 0..1 + rng.below(3) {
                    let i = HEADER_LEN + rng.below((b.len() - HEADER_LEN).max(1) as u64) as usize;
                    if let Some(byte) = b.get_mut(i) {
                        *byte ^= 1 << rng.below(8);
                    }
                }
                b
            }
        };
        decoded += drain(&mut BytesMut::from(&bytes[..]));
        // And as if only part of it had arrived yet.
        let cut = rng.below(bytes.len() as u64 + 1) as usize;
        drain(&mut BytesMut::from(&bytes[..cut]));
        let _ = decode_eof(&mut BytesMut::from(&bytes[..cut]));
    }
    // The generator must reach the payload decoders, not only the length checks.
    assert!(decoded > 5_000, "only {decoded} frames decoded");
}
