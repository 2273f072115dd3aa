//! Typed errors of the codec: [`FrameError`] for framing, [`DistError`] for the bit packing
//! of [`crate::CompactDist`].

use crate::{ErrorCode, ErrorReply, MessageType};

/// Why a frame could not be encoded or decoded.
///
/// After a fatal error ([`FrameError::is_fatal`]) the byte stream cannot be resynchronised:
/// reply with an [`crate::ErrorReply`] if possible and close the connection. After a non-fatal
/// one the bad frame has been consumed from the buffer and the next frame can be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame (length prefix included) would be longer than the maximum. Decoding reports
    /// this from the length prefix alone, before buffering or allocating anything.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Whole frame length in bytes, length prefix included (saturated at `usize::MAX`).
        len: usize,
        /// The limit, [`crate::MAX_FRAME_LEN`].
        max: usize,
    },
    /// The length prefix declares a frame shorter than the fixed header.
    #[error("length prefix declares a frame of {len} bytes, shorter than the {min}-byte header")]
    TooShort {
        /// Whole frame length in bytes that the prefix declares, prefix included.
        len: usize,
        /// The header length, [`crate::HEADER_LEN`].
        min: usize,
    },
    /// The stream ended inside a frame (only [`crate::decode_eof`] reports this).
    #[error("stream ended inside a frame: {buffered} bytes buffered of a frame of {}",
        match .frame_len { Some(n) => format!("{n} bytes"), None => "unknown length".to_owned() })]
    Truncated {
        /// Bytes left in the buffer.
        buffered: usize,
        /// Whole frame length from the length prefix, if all 4 prefix bytes arrived.
        frame_len: Option<usize>,
    },
    /// The header's version byte is not [`crate::PROTOCOL_VERSION`].
    #[error("unsupported protocol version {version}; this peer speaks version {supported}")]
    UnsupportedVersion {
        /// Version byte found in the header.
        version: u8,
        /// The version this build speaks, [`crate::PROTOCOL_VERSION`].
        supported: u8,
    },
    /// The header's message-type byte names no [`MessageType`]. The frame was consumed.
    #[error("unknown message type {message_type} in frame with request id {request_id}")]
    UnknownMessageType {
        /// Message-type byte found in the header.
        message_type: u8,
        /// Request id from the header, for the error reply.
        request_id: u32,
    },
    /// The payload is not a valid protobuf encoding of the header's message type. The frame
    /// was consumed.
    #[error("{message_type:?} payload of {len} bytes in frame with request id {request_id} does not decode")]
    Payload {
        /// Message type from the header.
        message_type: MessageType,
        /// Request id from the header, for the error reply.
        request_id: u32,
        /// Payload length in bytes.
        len: usize,
        /// What prost reported (best effort).
        #[source]
        source: prost::DecodeError,
    },
}

impl FrameError {
    /// Whether the connection must be closed: `true` when the framing itself is broken (bad
    /// length, unknown version, stream ended mid-frame), `false` when only one well-delimited
    /// frame was bad and has been skipped.
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::TooLarge { .. }
            | Self::TooShort { .. }
            | Self::Truncated { .. }
            | Self::UnsupportedVersion { .. } => true,
            Self::UnknownMessageType { .. } | Self::Payload { .. } => false,
        }
    }

    /// The reply to a frame that could not be read, and the request id to send it with:
    /// [`ErrorCode::UnsupportedVersion`] for another header version, [`ErrorCode::BadFrame`]
    /// otherwise; the id is the frame's when its header was read, else 0 (the
    /// [`ErrorReply`] contract).
    pub fn reply(&self) -> (ErrorReply, u32) {
        let (code, request_id) = match self {
            Self::UnsupportedVersion { .. } => (ErrorCode::UnsupportedVersion, 0),
            Self::UnknownMessageType { request_id, .. } | Self::Payload { request_id, .. } => {
                (ErrorCode::BadFrame, *request_id)
            }
            _ => (ErrorCode::BadFrame, 0),
        };
        (ErrorReply::new(code, self.to_string()), request_id)
    }
}

/// Why quantization levels could not be packed into, or unpacked from, a
/// [`crate::CompactDist`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DistError {
    /// The level width is outside 1 ..= [`crate::MAX_DIST_BITS`].
    #[error("{bits}-bit levels are not supported (1 ..= {max} bits)")]
    BitsOutOfRange {
        /// Requested width in bits.
        bits: u32,
        /// Widest supported, [`crate::MAX_DIST_BITS`].
        max: u32,
    },
    /// Packing was given a different number of levels than ids.
    #[error("{levels} levels given for {ids} token ids")]
    LengthMismatch {
        /// Number of token ids.
        ids: usize,
        /// Number of levels.
        levels: usize,
    },
    /// A level does not fit in the chosen width.
    #[error("level {level} at index {index} does not fit in {bits} bits")]
    LevelTooLarge {
        /// Position of the level.
        index: usize,
        /// The level.
        level: u32,
        /// Width in bits.
        bits: u32,
    },
    /// `probs` does not hold exactly one `bits`-bit level per id.
    #[error("{ids} ids at {bits} bits need {expected} bytes of packed levels, got {actual}")]
    ProbsLength {
        /// Number of token ids.
        ids: usize,
        /// Width in bits.
        bits: u32,
        /// Bytes required, `⌈ids·bits / 8⌉`.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_error_is_answered_with_its_code_and_request_id() {
        let version = FrameError::UnsupportedVersion {
            version: 9,
            supported: crate::PROTOCOL_VERSION,
        };
        let (reply, id) = version.reply();
        assert_eq!((reply.code(), id), (ErrorCode::UnsupportedVersion, 0));
        assert_eq!(reply.message, version.to_string());
        let unknown = FrameError::UnknownMessageType {
            message_type: 99,
            request_id: 7,
        };
        let (reply, id) = unknown.reply();
        assert_eq!(
            (reply.code(), id, reply.retry_after_ms),
            (ErrorCode::BadFrame, 7, 0)
        );
        let short = FrameError::TooShort { len: 3, min: 10 };
        assert_eq!(short.reply().0.code(), ErrorCode::BadFrame);
        assert_eq!(short.reply().1, 0);
    }

    #[test]
    fn busy_replies_carry_their_retry_hint() {
        let r = ErrorReply::busy("full", 1000);
        assert_eq!((r.code(), r.retry_after_ms), (ErrorCode::Busy, 1000));
        assert_eq!(r.message, "full");
        let r = ErrorReply::new(ErrorCode::BadRequest, "no");
        assert_eq!((r.code(), r.retry_after_ms), (ErrorCode::BadRequest, 0));
    }
}
