//! Length-prefixed binary framing of [`Message`]s.
//!
//! A frame is, in order (integers big-endian):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 4 | length | `u32`: bytes that follow this prefix (header rest + payload) |
//! | 1 | version | `u8`: [`PROTOCOL_VERSION`] |
//! | 1 | message type | `u8`: a [`MessageType`] |
//! | 4 | request id | `u32`: chosen by the requester; a reply echoes the id it answers |
//! | n | payload | the message's protobuf encoding (may be empty) |
//!
//! So a frame is [`HEADER_LEN`] (10) bytes plus the payload, and at most [`MAX_FRAME_LEN`].
//! Decoding is pure and incremental, in the style of mini-redis: [`decode_frame`] takes the
//! bytes received so far and answers `Ok(None)` until a whole frame is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;

use crate::{
    Close, DraftBlock, ErrorReply, FrameError, Hello, HelloAck, SetVersion, Verdict, VersionAck,
};

/// Version of this protocol, sent in every frame header (and in [`Hello::protocol_version`]).
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes of the length prefix that opens every frame.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Bytes of the fixed header: length prefix (4), version (1), message type (1), request id (4).
pub const HEADER_LEN: usize = LENGTH_PREFIX_LEN + 1 + 1 + 4;

/// Longest frame accepted or produced, in bytes, length prefix included (16 MiB). A peer's
/// length prefix is checked against it before anything is buffered for the frame.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

// The length prefix is a u32, so every legal frame length must fit in one.
const _: () = assert!(MAX_FRAME_LEN - LENGTH_PREFIX_LEN <= u32::MAX as usize);

/// The message-type byte of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// [`Hello`], edge → cloud.
    Hello = 1,
    /// [`HelloAck`], cloud → edge.
    HelloAck = 2,
    /// [`DraftBlock`], edge → cloud.
    DraftBlock = 3,
    /// [`Verdict`], cloud → edge.
    Verdict = 4,
    /// [`ErrorReply`], either way.
    ErrorReply = 5,
    /// [`Close`], either way.
    Close = 6,
    /// [`SetVersion`], operator → cloud (management).
    SetVersion = 7,
    /// [`VersionAck`], cloud → operator (management).
    VersionAck = 8,
}

impl MessageType {
    /// The type with this header byte, or `None` for an unknown byte (0 is never used).
    pub fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Hello,
            2 => Self::HelloAck,
            3 => Self::DraftBlock,
            4 => Self::Verdict,
            5 => Self::ErrorReply,
            6 => Self::Close,
            7 => Self::SetVersion,
            8 => Self::VersionAck,
            _ => return None,
        })
    }

    /// The header byte of this type.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Any message of the protocol: one variant per [`MessageType`].
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Edge → cloud, first frame of a session.
    Hello(Hello),
    /// Cloud → edge, answer to [`Hello`].
    HelloAck(HelloAck),
    /// Edge → cloud, the drafted tokens of one round.
    DraftBlock(DraftBlock),
    /// Cloud → edge, the verification result of one round.
    Verdict(Verdict),
    /// Either way, a refused frame or request.
    ErrorReply(ErrorReply),
    /// Either way, clean end of the session.
    Close(Close),
    /// Operator → cloud: switch (or query) the target version new sessions get.
    SetVersion(SetVersion),
    /// Cloud → operator: the answer to [`SetVersion`].
    VersionAck(VersionAck),
}

impl Message {
    /// The header byte that identifies this message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Hello(_) => MessageType::Hello,
            Self::HelloAck(_) => MessageType::HelloAck,
            Self::DraftBlock(_) => MessageType::DraftBlock,
            Self::Verdict(_) => MessageType::Verdict,
            Self::ErrorReply(_) => MessageType::ErrorReply,
            Self::Close(_) => MessageType::Close,
            Self::SetVersion(_) => MessageType::SetVersion,
            Self::VersionAck(_) => MessageType::VersionAck,
        }
    }

    /// Length of the protobuf payload in bytes (the frame without its header).
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Hello(m) => m.encoded_len(),
            Self::HelloAck(m) => m.encoded_len(),
            Self::DraftBlock(m) => m.encoded_len(),
            Self::Verdict(m) => m.encoded_len(),
            Self::ErrorReply(m) => m.encoded_len(),
            Self::Close(m) => m.encoded_len(),
            Self::SetVersion(m) => m.encoded_len(),
            Self::VersionAck(m) => m.encoded_len(),
        }
    }

    fn encode_payload(&self, dst: &mut BytesMut) -> Result<(), prost::EncodeError> {
        match self {
            Self::Hello(m) => m.encode(dst),
            Self::HelloAck(m) => m.encode(dst),
            Self::DraftBlock(m) => m.encode(dst),
            Self::Verdict(m) => m.encode(dst),
            Self::ErrorReply(m) => m.encode(dst),
            Self::Close(m) => m.encode(dst),
            Self::SetVersion(m) => m.encode(dst),
            Self::VersionAck(m) => m.encode(dst),
        }
    }

    fn decode_payload(
        message_type: MessageType,
        payload: Bytes,
    ) -> Result<Self, prost::DecodeError> {
        Ok(match message_type {
            MessageType::Hello => Self::Hello(Hello::decode(payload)?),
            MessageType::HelloAck => Self::HelloAck(HelloAck::decode(payload)?),
            MessageType::DraftBlock => Self::DraftBlock(DraftBlock::decode(payload)?),
            MessageType::Verdict => Self::Verdict(Verdict::decode(payload)?),
            MessageType::ErrorReply => Self::ErrorReply(ErrorReply::decode(payload)?),
            MessageType::Close => Self::Close(Close::decode(payload)?),
            MessageType::SetVersion => Self::SetVersion(SetVersion::decode(payload)?),
            MessageType::VersionAck => Self::VersionAck(VersionAck::decode(payload)?),
        })
    }
}

macro_rules! impl_from_for_message {
    ($($ty:ident),*) => {$(
        impl From<$ty> for Message {
            fn from(m: $ty) -> Self {
                Self::$ty(m)
            }
        }
    )*};
}
impl_from_for_message!(
    Hello, HelloAck, DraftBlock, Verdict, ErrorReply, Close, SetVersion, VersionAck
);

/// Exact length in bytes of `msg`'s frame: [`HEADER_LEN`] plus the payload. This is what
/// [`encode_frame`] produces and what goes on the wire.
pub fn frame_len(msg: &Message) -> usize {
    HEADER_LEN + msg.payload_len()
}

/// Encodes `msg` as one frame tagged with `request_id`.
///
/// Fails with [`FrameError::TooLarge`] if the frame would exceed [`MAX_FRAME_LEN`] (a prompt of
/// millions of tokens, say), which the peer would refuse anyway.
pub fn encode_frame(msg: &Message, request_id: u32) -> Result<Bytes, FrameError> {
    let mut dst = BytesMut::new();
    encode_frame_into(msg, request_id, &mut dst)?;
    Ok(dst.freeze())
}

/// Appends `msg`'s frame, tagged with `request_id`, to `dst`. On error `dst` is unchanged.
pub fn encode_frame_into(
    msg: &Message,
    request_id: u32,
    dst: &mut BytesMut,
) -> Result<(), FrameError> {
    let len = frame_len(msg);
    let too_large = FrameError::TooLarge {
        len,
        max: MAX_FRAME_LEN,
    };
    if len > MAX_FRAME_LEN {
        return Err(too_large);
    }
    let start = dst.len();
    dst.reserve(len);
    // Fits in u32: `len <= MAX_FRAME_LEN`, checked at compile time against u32::MAX.
    dst.put_u32((len - LENGTH_PREFIX_LEN) as u32);
    dst.put_u8(PROTOCOL_VERSION);
    dst.put_u8(msg.message_type().as_u8());
    dst.put_u32(request_id);
    // prost only fails when the buffer cannot grow by the payload's length.
    if msg.encode_payload(dst).is_err() {
        dst.truncate(start);
        return Err(too_large);
    }
    Ok(())
}

/// Decodes the first frame in `buf`, if it is complete, and removes it from `buf`.
///
/// Returns `Ok(Some((request_id, message)))` for a whole frame, `Ok(None)` when more bytes are
/// needed (`buf` is then unchanged), and an error when the bytes cannot be a valid frame:
/// the length prefix is checked against [`MAX_FRAME_LEN`] and the version byte against
/// [`PROTOCOL_VERSION`] as soon as they arrive, so such errors come before the rest of the
/// frame is buffered; they are fatal and leave `buf` unchanged. An unknown message type or
/// undecodable payload is reported once the whole frame is buffered, and that frame is
/// consumed (see [`FrameError::is_fatal`]). Never panics, whatever the bytes.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<(u32, Message)>, FrameError> {
    let Some(len) = declared_frame_len(buf)? else {
        return Ok(None);
    };
    if let Some(&version) = buf.get(LENGTH_PREFIX_LEN) {
        if version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion {
                version,
                supported: PROTOCOL_VERSION,
            });
        }
    }
    if buf.len() < len {
        return Ok(None);
    }

    // A whole frame of `len >= HEADER_LEN` bytes is buffered: the reads below cannot run short.
    let mut frame = buf.split_to(len).freeze();
    frame.advance(LENGTH_PREFIX_LEN + 1);
    let type_byte = frame.get_u8();
    let request_id = frame.get_u32();
    let Some(message_type) = MessageType::from_u8(type_byte) else {
        return Err(FrameError::UnknownMessageType {
            message_type: type_byte,
            request_id,
        });
    };
    let payload_len = frame.len();
    match Message::decode_payload(message_type, frame) {
        Ok(message) => Ok(Some((request_id, message))),
        Err(source) => Err(FrameError::Payload {
            message_type,
            request_id,
            len: payload_len,
            source,
        }),
    }
}

/// Like [`decode_frame`], for when the stream has ended: bytes left over that do not make a
/// whole frame are an error ([`FrameError::Truncated`]) instead of `Ok(None)`. `Ok(None)` means
/// the buffer is empty: a clean end.
pub fn decode_eof(buf: &mut BytesMut) -> Result<Option<(u32, Message)>, FrameError> {
    match decode_frame(buf)? {
        Some(frame) => Ok(Some(frame)),
        None if buf.is_empty() => Ok(None),
        None => Err(FrameError::Truncated {
            buffered: buf.len(),
            frame_len: declared_frame_len(buf).ok().flatten(),
        }),
    }
}

/// Whole frame length from the length prefix, checked against the bounds; `None` until the
/// 4 prefix bytes have arrived.
fn declared_frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(&[a, b, c, d]) = buf.first_chunk::<LENGTH_PREFIX_LEN>() else {
        return Ok(None);
    };
    let rest = u32::from_be_bytes([a, b, c, d]) as usize;
    let len = rest.saturating_add(LENGTH_PREFIX_LEN);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    if len < HEADER_LEN {
        return Err(FrameError::TooShort {
            len,
            min: HEADER_LEN,
        });
    }
    Ok(Some(len))
}
