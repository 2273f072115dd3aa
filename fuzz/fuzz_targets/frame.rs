//! `decode_frame` / `decode_eof` on an arbitrary byte stream, whole and in pieces.
//!
//! The stream is decoded frame by frame until it runs out or the framing breaks, once with all
//! bytes buffered and once with them arriving in chunks of 1–8 bytes (the first byte picks the
//! size): both must give the same frames and errors, `Ok(None)` and fatal errors must leave
//! the buffer as it was, a non-fatal error must consume its frame, and every decoded message
//! goes through `ecspec_fuzz::check_message`.
#![no_main]

use bytes::BytesMut;
use ecspec_proto::{decode_eof, decode_frame};
use libfuzzer_sys::fuzz_target;

/// One decoder step's outcome, as text (messages may hold NaN, which is not equal to itself).
fn step(buf: &mut BytesMut) -> Option<(String, bool)> {
    let before = buf.len();
    match decode_frame(buf) {
        Ok(Some((id, msg))) => {
            assert!(buf.len() < before, "a decoded frame is consumed");
            ecspec_fuzz::check_message(id, &msg, id as usize);
            Some((format!("{id} {msg:?}"), true))
        }
        Ok(None) => {
            assert_eq!(buf.len(), before, "an incomplete frame stays buffered");
            None
        }
        Err(e) => {
            let (reply, _) = e.reply();
            assert_eq!(reply.message, e.to_string());
            if e.is_fatal() {
                assert_eq!(buf.len(), before, "a fatal error leaves the buffer");
            } else {
                assert!(buf.len() < before, "a non-fatal error consumes its frame");
            }
            Some((format!("{e:?}"), !e.is_fatal()))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut whole = BytesMut::from(data);
    let mut expected = Vec::new();
    while let Some((outcome, go_on)) = step(&mut whole) {
        expected.push(outcome);
        if !go_on {
            break;
        }
    }
    // At the end of the stream, what is left is a clean end or a fatal error.
    match decode_eof(&mut whole.clone()) {
        Ok(None) => assert!(whole.is_empty()),
        Ok(Some(_)) => panic!("decode_eof found a frame that decode_frame did not"),
        Err(e) => assert!(e.is_fatal() && !whole.is_empty(), "{e}"),
    }

    let chunk = data.first().map_or(1, |b| usize::from(b % 8) + 1);
    let mut pieces = BytesMut::new();
    let mut got = Vec::new();
    'stream: for piece in data.chunks(chunk) {
        pieces.extend_from_slice(piece);
        while let Some((outcome, go_on)) = step(&mut pieces) {
            got.push(outcome);
            if !go_on {
                break 'stream;
            }
        }
    }
    assert_eq!(
        expected, got,
        "incremental decoding agrees with whole-buffer decoding"
    );
});
