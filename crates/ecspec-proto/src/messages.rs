//! The protobuf messages exchanged by edge and cloud.
//!
//! Each struct here mirrors one message of `proto/ecspec.proto` field for field (same names,
//! numbers and types); `tests/schema.rs` checks that the two agree. Token ids are always
//! `u32` indices into the model family's vocabulary. Proto3 semantics apply: a field left at
//! its default (0, `false`, empty) is not sent, and a missing field decodes as its default.

use crate::DistError;

/// How the cloud verifies drafted tokens (design.md §4). All three modes are exact: the
/// committed text is distributed as the target's own output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum VerifyMode {
    /// Not set, or a value this build does not know; the cloud refuses it.
    Unspecified = 0,
    /// Temperature 0: accept drafts while each equals the target's argmax. Uplink: ids only.
    Greedy = 1,
    /// Any temperature: the target samples its own token at each position; drafts are accepted
    /// while they equal the target's sample. Uplink: ids only.
    Match = 2,
    /// Rejection sampling (Leviathan et al. 2023; Chen et al. 2023): accept with probability
    /// `min(1, p/q)`. Needs the draft's distribution, so each drafted token carries a
    /// [`CompactDist`].
    Rejection = 3,
}

/// Why a peer refused a frame or a request ([`ErrorReply::code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    /// Not set, or a value this build does not know.
    Unspecified = 0,
    /// A frame could not be parsed: bad length, unknown message type or undecodable payload.
    BadFrame = 1,
    /// The frame header or [`Hello::protocol_version`] names a version this peer does not speak.
    UnsupportedVersion = 2,
    /// The draft was built on other base weights or another model family than the cloud serves.
    IncompatibleDraft = 3,
    /// A well-formed message with invalid content (e.g. wrong number of `dists`, a message out
    /// of turn, `max_new_tokens` of 0).
    BadRequest = 4,
    /// The peer failed internally; the request itself may have been fine.
    Internal = 5,
    /// A management request ([`SetVersion`]) from a peer not allowed to manage the server
    /// (only loopback peers are).
    Forbidden = 6,
    /// The server cannot take the request now (KV-cache budget, waiting queue or session
    /// slots full); [`ErrorReply::retry_after_ms`] says when to try again (0: never).
    Busy = 7,
    /// The [`Hello`] carried no auth token, or one the cloud does not accept; the cloud closes
    /// the connection after this reply.
    Unauthorized = 8,
}

/// Edge → cloud, the first frame of a session: who the draft is, how to sample, and the prompt.
///
/// The prompt is sent exactly once, here; later frames carry only new tokens.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// Protocol version the edge speaks; equals the frame header's version byte
    /// ([`crate::PROTOCOL_VERSION`]).
    #[prost(uint32, tag = "1")]
    pub protocol_version: u32,
    /// Model family the draft belongs to, e.g. `"smollm2-135m"`.
    #[prost(string, tag = "2")]
    pub model_family: String,
    /// Lower-case hex SHA-256 (64 characters) naming the frozen base weights the draft was built
    /// on (embedding, head and the frozen layers it uses). The cloud refuses a draft whose base
    /// differs from its family's with [`ErrorCode::IncompatibleDraft`].
    #[prost(string, tag = "3")]
    pub base_hash: String,
    /// How the draft was built, e.g. `"shared-backbone"` or `"independent"`; reported in
    /// results, not interpreted by the protocol.
    #[prost(string, tag = "4")]
    pub draft_kind: String,
    /// Sampling temperature (dimensionless, ≥ 0). 0 means argmax and goes with
    /// [`VerifyMode::Greedy`].
    #[prost(float, tag = "5")]
    pub temperature: f32,
    /// Nucleus (top-p) threshold in (0, 1]. 0 (the default, i.e. unset) and 1 both mean off.
    #[prost(float, tag = "6")]
    pub top_p: f32,
    /// Top-k cut-off in tokens; 0 means off.
    #[prost(uint32, tag = "7")]
    pub top_k: u32,
    /// Seed of the cloud's sampler for this session, so that runs are reproducible.
    #[prost(uint64, tag = "8")]
    pub seed: u64,
    /// Verification rule, a [`VerifyMode`] as `i32`; read it with [`Hello::verify_mode`].
    #[prost(enumeration = "VerifyMode", tag = "9")]
    pub verify_mode: i32,
    /// Most tokens to generate after the prompt, [`HelloAck::first_token`] included. Must be
    /// ≥ 1; the cloud may cap it further.
    #[prost(uint32, tag = "10")]
    pub max_new_tokens: u32,
    /// Prompt token ids (chat template and BOS already applied), exactly as the target should
    /// prefill them.
    #[prost(uint32, repeated, packed = "true", tag = "11")]
    pub prompt: Vec<u32>,
    /// Cloud-only baseline: the cloud decodes autoregressively on its own and streams one
    /// [`Verdict`] (with `accepted = 0`) per token, without waiting for drafts.
    #[prost(bool, tag = "12")]
    pub autoregressive: bool,
    /// With `autoregressive` false: right after the [`HelloAck`] the cloud generates up to this
    /// many tokens on its own (0 and 1: none), one [`Verdict`] each, numbered 1, 2, …, as if
    /// answering `DraftBlock { round: 1, tokens: [], stream: n }`; the edge's first block takes
    /// the number after the last verdict. Lets an edge that already knows streaming pays (from
    /// earlier requests) start streaming without a round trip.
    #[prost(uint32, tag = "13")]
    pub stream: u32,
    /// Bearer token for a cloud that requires one (`cloud serve --auth-token-file`), compared
    /// in constant time before any compute; empty: none. Send it over TLS only: it is a secret.
    #[prost(string, tag = "14")]
    pub auth_token: String,
    /// Most drafted tokens the edge will send in one [`DraftBlock`] (its K_max); 0: the cloud's
    /// cap. The cloud answers the agreed value in [`HelloAck::max_block_tokens`].
    #[prost(uint32, tag = "15")]
    pub max_block_tokens: u32,
    /// A re-opened session (after a lost connection): how many of the prompt's last tokens
    /// were generated by the earlier sessions of this request. The cloud's prompt limit applies
    /// to the rest and its token budget to these plus the new ones; 0 for a new request.
    #[prost(uint32, tag = "16")]
    pub resumed_tokens: u32,
}

/// Cloud → edge, the answer to [`Hello`]: accepted or refused, and on acceptance the target's
/// first token, so the edge has its first token after one round trip.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloAck {
    /// Whether the cloud opened the session. If `false`, only `reason` is meaningful and the
    /// cloud closes the connection.
    #[prost(bool, tag = "1")]
    pub accepted: bool,
    /// Why the session was refused, for people (empty when accepted).
    #[prost(string, tag = "2")]
    pub reason: String,
    /// Cloud-chosen identifier of this session, for logs.
    #[prost(uint64, tag = "3")]
    pub session_id: u64,
    /// Name of the target version serving this session, e.g. `"v0"` or `"rust-lora-v2"`.
    #[prost(string, tag = "4")]
    pub target_version: String,
    /// Number of tokens in the target's vocabulary; the edge checks its draft against it.
    #[prost(uint32, tag = "5")]
    pub vocab_size: u32,
    /// Token ids that end generation (end of sequence / end of turn).
    #[prost(uint32, repeated, packed = "true", tag = "6")]
    pub eos_token_ids: Vec<u32>,
    /// The target's first generated token after prefilling the prompt (argmax in greedy mode,
    /// sampled otherwise). It is committed: the first token of the output.
    #[prost(uint32, tag = "7")]
    pub first_token: u32,
    /// `true` when the session already ended with `first_token` (it is an EOS token, or
    /// `max_new_tokens` is 1); the edge then sends [`Close`] instead of drafting.
    #[prost(bool, tag = "8")]
    pub finished: bool,
    /// Cloud compute time of the prefill, in microseconds (lets the edge separate network
    /// time from compute time). Fixed width, so a message's size does not depend on timing.
    #[prost(fixed32, tag = "9")]
    pub prefill_us: u32,
    /// Time the Hello waited for KV-cache budget before it was admitted, in microseconds (0,
    /// not sent, when it did not wait).
    #[prost(fixed32, tag = "10")]
    pub queue_us: u32,
    /// The session's K_max: the most drafted tokens one [`DraftBlock`] may carry (the Hello's
    /// `max_block_tokens` capped by the cloud's limit, or the cloud's limit when the Hello
    /// asked for 0). A longer block is refused with [`ErrorCode::BadRequest`].
    #[prost(uint32, tag = "11")]
    pub max_block_tokens: u32,
    /// The session's token budget when the cloud granted fewer than the Hello's
    /// `max_new_tokens` (its per-request budget or the target's context window cut it); 0, not
    /// sent, when the whole ask was granted, so an uncut session's HelloAck keeps its size.
    #[prost(uint32, tag = "12")]
    pub granted_new_tokens: u32,
    /// `true` when that cut is the target's context window (prompt + answer + one block of
    /// drafts fill it), `false` when it is the cloud's per-request budget.
    #[prost(bool, tag = "13")]
    pub context_bound: bool,
}

/// One drafted token's truncated, quantized draft distribution `q`, sent in
/// [`VerifyMode::Rejection`] so the cloud can accept with probability `min(1, p/q)`.
///
/// Wire meaning: `q(ids[i]) = level[i] / Σ level`, where `level[i]` is the i-th `bits`-bit
/// value packed in `probs`; every other token has `q = 0`. Rejection stays exact only if the
/// edge sampled its drafted token from exactly this `q` (design.md §4). Build and read the
/// packing with [`CompactDist::from_levels`] and [`CompactDist::levels`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct CompactDist {
    /// Token ids kept after truncation (top-k), in any order; the drafted token is among them.
    #[prost(uint32, repeated, packed = "true", tag = "1")]
    pub ids: Vec<u32>,
    /// One quantization level per entry of `ids`, same order, each `bits` bits wide, packed
    /// least-significant bit first: level `i` occupies bits `i·bits .. (i+1)·bits` of the byte
    /// string, bit `j` being bit `j % 8` of byte `j / 8`. Length: `⌈len(ids)·bits / 8⌉` bytes,
    /// unused high bits of the last byte zero.
    #[prost(bytes = "vec", tag = "2")]
    pub probs: Vec<u8>,
    /// Width of one level in bits, 1 ..= [`crate::MAX_DIST_BITS`].
    #[prost(uint32, tag = "3")]
    pub bits: u32,
}

/// Edge → cloud, once per round: the newly drafted tokens to verify.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DraftBlock {
    /// Round number: 1 for the first block after [`HelloAck`], then one more each round.
    /// [`Verdict::round`] echoes it.
    #[prost(uint32, tag = "1")]
    pub round: u32,
    /// Only the new drafted tokens (K of them), continuing the committed sequence (prompt,
    /// `first_token`, and every verdict's accepted tokens and `next_token`). K = 0 is legal:
    /// a cloud-only step in which the cloud just produces its next token.
    #[prost(uint32, repeated, packed = "true", tag = "2")]
    pub tokens: Vec<u32>,
    /// In [`VerifyMode::Rejection`], one distribution per entry of `tokens`, same order, or
    /// none: a rejection session's block without distributions is verified by
    /// [`VerifyMode::Match`] (the edge's per-round choice on a slow uplink). Empty in the
    /// other modes.
    #[prost(message, repeated, tag = "3")]
    pub dists: Vec<CompactDist>,
    /// With K = 0 only: the cloud generates up to this many tokens on its own (0 and 1 mean
    /// one), one [`Verdict`] each, numbered `round`, `round + 1`, …, stopping early when the
    /// session ends; the edge's next block takes the number after the last verdict. Lets the
    /// edge fall back to streaming cloud-only decoding while drafting does not pay.
    #[prost(uint32, tag = "4")]
    pub stream: u32,
}

/// Cloud → edge, the answer to a [`DraftBlock`].
///
/// Every verdict commits exactly `accepted + 1` tokens: `tokens[..accepted]` of the block,
/// then `next_token`. When the session ends inside the block (an accepted EOS, or
/// `max_new_tokens` reached), the cloud lowers `accepted` so that `next_token` is the last
/// committed token, and sets `finished`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Verdict {
    /// The [`DraftBlock::round`] this verdict answers.
    #[prost(uint32, tag = "1")]
    pub round: u32,
    /// Number of leading drafted tokens accepted, 0 ..= K.
    #[prost(uint32, tag = "2")]
    pub accepted: u32,
    /// The target's token after the accepted prefix: its correction when `accepted < K`, its
    /// bonus token when all K were accepted (including K = 0).
    #[prost(uint32, tag = "3")]
    pub next_token: u32,
    /// `true` when the cloud ended the session with this verdict (EOS committed or
    /// `max_new_tokens` reached); the edge then sends [`Close`].
    #[prost(bool, tag = "4")]
    pub finished: bool,
    /// Cloud compute time of this round's forward pass and verification, in microseconds
    /// (t_v of design.md §2 as measured by the cloud). Fixed width, so a verdict's size does
    /// not depend on timing (byte counts are the same on every clock).
    #[prost(fixed32, tag = "5")]
    pub compute_us: u32,
    /// Load: the delay, in microseconds, that one more row in this round's pass added to the
    /// other sessions sharing the pass (the cloud's marginal time per row × those sessions);
    /// what a load-aware edge prices each row it asks for. 0 (not sent) when the round ran
    /// alone or the cloud has no estimate yet.
    #[prost(fixed32, tag = "6")]
    pub row_cost_us: u32,
}

/// Either direction: a frame or request was refused. The frame's request id is the id of the
/// frame being answered, or 0 when it could not be read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorReply {
    /// What kind of failure, an [`ErrorCode`] as `i32`; read it with [`ErrorReply::code`].
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub code: i32,
    /// What was wrong, for people (logs); not meant to be parsed.
    #[prost(string, tag = "2")]
    pub message: String,
    /// [`ErrorCode::Busy`]: milliseconds after which a retry may succeed (0: never).
    #[prost(uint32, tag = "3")]
    pub retry_after_ms: u32,
}

impl ErrorReply {
    /// A refusal with `code` and a message for people; no retry hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
            retry_after_ms: 0,
        }
    }

    /// An [`ErrorCode::Busy`] refusal with its retry hint in milliseconds (0: never).
    pub fn busy(message: impl Into<String>, retry_after_ms: u32) -> Self {
        Self {
            code: ErrorCode::Busy as i32,
            message: message.into(),
            retry_after_ms,
        }
    }
}

/// Either direction: a clean end of the session. The receiver closes the connection after it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Close {}

/// Operator → cloud, management: make `version` the target version of every session opened
/// from now on. Sessions already running keep the version they started with (so each is
/// verified by one version from start to end). An empty `version` changes nothing and only
/// asks which version is active. Accepted only from a loopback peer; others get
/// [`ErrorCode::Forbidden`], an unknown version [`ErrorCode::BadRequest`]. It opens a
/// management connection in place of [`Hello`]; several may follow, then [`Close`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetVersion {
    /// Name of a version the cloud has loaded (e.g. `"rust"`); empty: query only.
    #[prost(string, tag = "1")]
    pub version: String,
}

/// Cloud → operator, the answer to [`SetVersion`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionAck {
    /// The version new sessions now get.
    #[prost(string, tag = "1")]
    pub active: String,
    /// The version that was active before this request (equal to `active` for a query).
    #[prost(string, tag = "2")]
    pub previous: String,
    /// Every version the cloud has loaded, in its order.
    #[prost(string, repeated, tag = "3")]
    pub versions: Vec<String>,
}

/// Widest quantization level a [`CompactDist`] may carry, in bits.
pub const MAX_DIST_BITS: u32 = 16;

impl CompactDist {
    /// Packs one quantization level per id into a [`CompactDist`] (layout: see
    /// [`CompactDist::probs`]).
    ///
    /// Fails if `bits` is outside 1 ..= [`MAX_DIST_BITS`], if `levels` and `ids` differ in
    /// length, or if a level does not fit in `bits` bits.
    pub fn from_levels(ids: Vec<u32>, levels: &[u32], bits: u32) -> Result<Self, DistError> {
        check_bits(bits)?;
        if levels.len() != ids.len() {
            return Err(DistError::LengthMismatch {
                ids: ids.len(),
                levels: levels.len(),
            });
        }
        let max_level = (1u32 << bits) - 1;
        let mut probs = Vec::with_capacity(packed_len(ids.len(), bits));
        // Invariant: `pending < 8` between levels, so `pending + bits <= 23` fits in `acc`.
        let (mut acc, mut pending) = (0u32, 0u32);
        for (index, &level) in levels.iter().enumerate() {
            if level > max_level {
                return Err(DistError::LevelTooLarge { index, level, bits });
            }
            acc |= level << pending;
            pending += bits;
            while pending >= 8 {
                probs.push(acc as u8); // keeps the low byte, by design
                acc >>= 8;
                pending -= 8;
            }
        }
        if pending > 0 {
            probs.push(acc as u8);
        }
        Ok(Self { ids, probs, bits })
    }

    /// Unpacks the quantization levels, one per entry of [`CompactDist::ids`], same order.
    ///
    /// Fails if `bits` is outside 1 ..= [`MAX_DIST_BITS`] or `probs` does not have exactly
    /// `⌈len(ids)·bits / 8⌉` bytes. Unused bits of the last byte are ignored.
    pub fn levels(&self) -> Result<Vec<u32>, DistError> {
        check_bits(self.bits)?;
        let expected = packed_len(self.ids.len(), self.bits);
        if self.probs.len() != expected {
            return Err(DistError::ProbsLength {
                ids: self.ids.len(),
                bits: self.bits,
                expected,
                actual: self.probs.len(),
            });
        }
        let mask = (1u32 << self.bits) - 1;
        let mut bytes = self.probs.iter();
        let mut levels = Vec::with_capacity(self.ids.len());
        // Invariant: `pending < bits <= 16` before a byte is added, so `acc` stays below 2^24.
        let (mut acc, mut pending) = (0u32, 0u32);
        for _ in 0..self.ids.len() {
            while pending < self.bits {
                let Some(&byte) = bytes.next() else {
                    // Unreachable after the length check above; reported rather than panicking.
                    return Err(DistError::ProbsLength {
                        ids: self.ids.len(),
                        bits: self.bits,
                        expected,
                        actual: self.probs.len(),
                    });
                };
                acc |= u32::from(byte) << pending;
                pending += 8;
            }
            levels.push(acc & mask);
            acc >>= self.bits;
            pending -= self.bits;
        }
        Ok(levels)
    }
}

fn check_bits(bits: u32) -> Result<(), DistError> {
    if (1..=MAX_DIST_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(DistError::BitsOutOfRange {
            bits,
            max: MAX_DIST_BITS,
        })
    }
}

/// Bytes needed for `n` levels of `bits` bits each.
fn packed_len(n: usize, bits: u32) -> usize {
    n.saturating_mul(bits as usize).div_ceil(8)
}
