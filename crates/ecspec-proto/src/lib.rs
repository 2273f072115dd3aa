//! ECSpec's wire protocol: the messages edge and cloud exchange, and how they are framed.
//!
//! This crate is the only one that knows the wire format. It does no I/O and knows nothing
//! about models: it turns [`Message`]s into bytes and bytes back into messages.
//!
//! # Messages
//!
//! The schema is protobuf (proto3), written out in `proto/ecspec.proto` and derived here
//! with prost, so no `protoc` is needed. A session goes:
//!
//! 1. edge → cloud [`Hello`]: draft identity (model family, base-weights hash), sampling
//!    settings, [`VerifyMode`], and the prompt, sent once;
//! 2. cloud → edge [`HelloAck`]: accepted or refused, the target's vocabulary and EOS ids, and
//!    its first token;
//! 3. per round, edge → cloud [`DraftBlock`] (only the new drafted tokens, plus one
//!    [`CompactDist`] per token in rejection mode) and cloud → edge [`Verdict`] (how many were
//!    accepted and the target's next token);
//! 4. either side may send [`ErrorReply`] (with an [`ErrorCode`]) or [`Close`].
//!
//! A management connection (loopback only) opens with [`SetVersion`] instead of [`Hello`]:
//! the cloud switches the target version new sessions get and answers [`VersionAck`].
//!
//! # Domain values
//!
//! [`domain`] is **where protocol messages become domain values** (and back): the
//! verification rule, the sampling settings and the draft distributions of `ecspec-spec`, with a
//! typed [`ConversionError`] for a wire value that has none. The crate knows the
//! speculative-decoding types, never the models.
//!
//! # Framing
//!
//! [`encode_frame`] writes a 10-byte header ([`HEADER_LEN`]: big-endian `u32` length of the
//! rest, version byte [`PROTOCOL_VERSION`], [`MessageType`] byte, big-endian `u32` request id)
//! then the protobuf payload. [`decode_frame`] is pure and incremental: it returns `Ok(None)`
//! until a whole frame is buffered, checks the length prefix against [`MAX_FRAME_LEN`] before
//! anything is allocated for the frame, and reports malformed input as a typed [`FrameError`];
//! it never panics. [`frame_len`] gives a message's exact size on the wire, header included.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use ecspec_proto::{decode_frame, encode_frame, frame_len, DraftBlock, Message};
//!
//! let block = Message::DraftBlock(DraftBlock { round: 1, tokens: vec![5, 17, 100, 2], dists: vec![], stream: 0 });
//! let frame = encode_frame(&block, 42)?;
//! assert_eq!(frame.len(), frame_len(&block)); // 10-byte header + 8-byte payload
//! assert_eq!(frame.len(), 18);
//!
//! // Bytes arrive in pieces: nothing is decoded until the frame is whole.
//! let mut buf = BytesMut::from(&frame[..7]);
//! assert_eq!(decode_frame(&mut buf)?, None);
//! buf.extend_from_slice(&frame[7..]);
//! assert_eq!(decode_frame(&mut buf)?, Some((42, block)));
//! assert!(buf.is_empty());
//! # Ok::<(), ecspec_proto::FrameError>(())
//! ```
#![warn(missing_docs)]

pub mod domain;
mod error;
mod frame;
mod messages;

pub use domain::{wire_micros, ConversionError};
pub use error::{DistError, FrameError};
pub use frame::{
    decode_eof, decode_frame, encode_frame, encode_frame_into, frame_len, Message, MessageType,
    HEADER_LEN, LENGTH_PREFIX_LEN, MAX_FRAME_LEN, PROTOCOL_VERSION,
};
pub use messages::{
    Close, CompactDist, DraftBlock, ErrorCode, ErrorReply, Hello, HelloAck, SetVersion, Verdict,
    VerifyMode, VersionAck, MAX_DIST_BITS,
};
