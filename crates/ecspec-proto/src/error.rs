//! Typed errors of the codec: [`FrameError`] for framing, [`DistError`] for the bit packing
//! of [`crate::CompactDist`].

use crate::MessageType;

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
