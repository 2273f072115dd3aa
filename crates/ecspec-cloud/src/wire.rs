//! The cloud's side of the wire boundary: the frames a connection reads become an [`Opening`]
//! (the first frame) or a [`Command`] (every frame of a running session), in the shape of
//! mini-redis's `Command::from_frame`; and the replies built from the cloud's own types (a
//! [`Verdict`] from a [`RoundOutcome`], the [`HelloAck`]).
//!
//! The conversions between wire values and the speculative-decoding types (verification rule,
//! sampling settings, draft distributions, microsecond fields) are `ecspec_proto::domain`'s;
//! only what needs a cloud type is here, since `ecspec-proto` cannot name cloud types without a
//! dependency cycle (this crate depends on it).

use std::time::Duration;

use ecspec_proto::{
    wire_micros, ConversionError, ErrorCode, ErrorReply, Hello, HelloAck, Message, MessageType,
    SetVersion, Verdict,
};
use ecspec_spec::compact::CompactDist;

use crate::handshake::{BudgetCut, SessionPlan};
use crate::model::CloudModel;
use crate::target::RoundOutcome;

/// Most drafted tokens one block may carry; a session's KV reservation includes one such block.
pub const MAX_BLOCK_TOKENS: usize = 64;

/// What the first frame of a connection asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Opening {
    /// An edge session.
    Hello(Hello),
    /// A management connection (loopback only).
    SetVersion(SetVersion),
}

impl Opening {
    /// The opening a first frame's message asks for.
    ///
    /// # Errors
    /// [`CommandError::NotAnOpening`] for any other message.
    pub fn from_frame(message: Message) -> Result<Self, CommandError> {
        match message {
            Message::Hello(h) => Ok(Self::Hello(h)),
            Message::SetVersion(v) => Ok(Self::SetVersion(v)),
            other => Err(CommandError::NotAnOpening {
                message_type: other.message_type(),
            }),
        }
    }
}

/// What a frame of a running session asks the cloud to do, in domain values.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Verify `tokens` (K ≥ 0) drafted after the committed sequence; `dists` holds their draft
    /// distributions (rejection mode) or nothing (the other modes, or a match round).
    Round {
        /// The block's round number, echoed by the verdict.
        round: u32,
        /// Drafted token ids, at most [`MAX_BLOCK_TOKENS`].
        tokens: Vec<u32>,
        /// Draft distributions, checked against the vocabulary.
        dists: Vec<CompactDist>,
    },
    /// Generate up to `n` (≥ 2) tokens on the target's own, one verdict each, numbered from
    /// `round` (a block with no tokens and `stream = n`).
    Stream {
        /// The first verdict's round number.
        round: u32,
        /// Tokens asked for (the server caps it at its token budget).
        n: u32,
    },
    /// The edge ends the session.
    Close,
    /// The edge reports an error; the session ends.
    PeerError {
        /// What the edge said.
        message: String,
    },
}

impl Command {
    /// The command a session frame's message carries; draft distributions are converted and
    /// checked against a vocabulary of `vocab` tokens (before the block's other checks, so a
    /// streaming block with bad distributions is refused too).
    ///
    /// # Errors
    /// [`CommandError::BadDist`] and [`CommandError::TooManyTokens`] (the block is refused and
    /// the session goes on); [`CommandError::Unexpected`] for a message that has no place in a
    /// running session (the session ends).
    pub fn from_frame(message: Message, vocab: usize) -> Result<Self, CommandError> {
        match message {
            Message::DraftBlock(block) => {
                let dists = block.domain_dists(vocab).map_err(CommandError::BadDist)?;
                if block.tokens.is_empty() && block.stream > 1 {
                    return Ok(Self::Stream {
                        round: block.round,
                        n: block.stream,
                    });
                }
                if block.tokens.len() > MAX_BLOCK_TOKENS {
                    return Err(CommandError::TooManyTokens {
                        n: block.tokens.len(),
                    });
                }
                Ok(Self::Round {
                    round: block.round,
                    tokens: block.tokens,
                    dists,
                })
            }
            Message::Close(_) => Ok(Self::Close),
            Message::ErrorReply(e) => Ok(Self::PeerError { message: e.message }),
            other => Err(CommandError::Unexpected {
                message_type: other.message_type(),
            }),
        }
    }
}

/// Why a frame's message is not a command the cloud can carry out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// The first frame of a connection is neither a Hello nor a SetVersion.
    #[error("expected Hello to open the session, got {message_type:?}")]
    NotAnOpening {
        /// What it was.
        message_type: MessageType,
    },
    /// A draft distribution of the block has no domain value.
    #[error("draft distribution: {0}")]
    BadDist(ConversionError),
    /// The block drafts more tokens than one block may carry.
    #[error("{n} drafted tokens in one block; at most {MAX_BLOCK_TOKENS}")]
    TooManyTokens {
        /// Tokens in the block.
        n: usize,
    },
    /// A message that has no place in a running session (a second Hello, say).
    #[error("unexpected {message_type:?} in a running session")]
    Unexpected {
        /// What it was.
        message_type: MessageType,
    },
}

impl CommandError {
    /// Whether the connection ends after the reply: a protocol violation does; a refused block
    /// leaves the session usable (it committed nothing).
    pub fn ends_session(&self) -> bool {
        matches!(self, Self::NotAnOpening { .. } | Self::Unexpected { .. })
    }

    /// The `BadRequest` reply saying what was wrong.
    pub fn reply(&self) -> Message {
        ErrorReply::new(ErrorCode::BadRequest, self.to_string()).into()
    }
}

/// The verdict answering round `round`: what its outcome committed.
pub fn verdict(round: u32, out: &RoundOutcome) -> Message {
    Message::Verdict(Verdict {
        round,
        accepted: out.accepted as u32,
        next_token: out.next_token,
        finished: out.finished,
        compute_us: wire_micros(out.compute),
        row_cost_us: wire_micros(out.row_cost),
    })
}

/// The HelloAck opening session `session_id` on `version`: the prefill's outcome `first` (the
/// first token), how long the Hello waited for admission (`queued`; zero is not sent), and the
/// session's plan (its agreed K_max and, when cut, its token budget and why).
pub fn accepted_ack(
    session_id: u64,
    version: &str,
    model: &CloudModel,
    first: &RoundOutcome,
    queued: Duration,
    plan: &SessionPlan,
) -> Message {
    Message::HelloAck(HelloAck {
        accepted: true,
        reason: String::new(),
        session_id,
        target_version: version.to_string(),
        vocab_size: model.vocab_size as u32,
        eos_token_ids: model.stop_tokens.clone(),
        first_token: first.next_token,
        finished: first.finished,
        prefill_us: wire_micros(first.compute),
        queue_us: wire_micros(queued),
        max_block_tokens: plan.max_block_tokens as u32,
        granted_new_tokens: match plan.cut {
            Some(_) => plan.max_new_tokens as u32,
            None => 0,
        },
        context_bound: plan.cut == Some(BudgetCut::Context),
    })
}

/// The HelloAck refusing session `session_id`, saying why.
pub fn refused_ack(session_id: u64, version: &str, model: &CloudModel, reason: String) -> Message {
    Message::HelloAck(HelloAck {
        accepted: false,
        reason,
        session_id,
        target_version: version.to_string(),
        vocab_size: model.vocab_size as u32,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecspec_proto::{Close, DraftBlock};

    fn wire_dist(id: u32) -> ecspec_proto::CompactDist {
        ecspec_proto::CompactDist {
            ids: vec![id],
            probs: vec![255],
            bits: 8,
        }
    }

    fn block(tokens: Vec<u32>, dists: Vec<ecspec_proto::CompactDist>, stream: u32) -> Message {
        Message::DraftBlock(DraftBlock {
            round: 3,
            tokens,
            dists,
            stream,
        })
    }

    #[test]
    fn the_first_frame_opens_a_session_or_a_management_connection() {
        let hello = Hello::default();
        assert_eq!(
            Opening::from_frame(Message::Hello(hello.clone())),
            Ok(Opening::Hello(hello))
        );
        let set = SetVersion {
            version: "v1".into(),
        };
        assert_eq!(
            Opening::from_frame(Message::SetVersion(set.clone())),
            Ok(Opening::SetVersion(set))
        );
        let e = Opening::from_frame(block(vec![1], vec![], 0)).unwrap_err();
        assert!(e.ends_session());
        assert_eq!(
            e.to_string(),
            "expected Hello to open the session, got DraftBlock"
        );
    }

    #[test]
    fn a_block_becomes_a_round_with_domain_distributions() {
        let cmd = Command::from_frame(block(vec![5], vec![wire_dist(5)], 0), 10).unwrap();
        let Command::Round {
            round,
            tokens,
            dists,
        } = cmd
        else {
            panic!("expected a round, got {cmd:?}");
        };
        assert_eq!((round, tokens), (3, vec![5]));
        assert_eq!(dists.len(), 1);
        assert_eq!(dists[0].ids(), &[5]);
        assert_eq!(dists[0].prob_of(5), 1.0);
        // K = 0 without a stream is one cloud step, a round too.
        assert_eq!(
            Command::from_frame(block(vec![], vec![], 1), 10),
            Ok(Command::Round {
                round: 3,
                tokens: vec![],
                dists: vec![]
            })
        );
    }

    #[test]
    fn an_empty_block_with_a_stream_asks_for_a_stream() {
        assert_eq!(
            Command::from_frame(block(vec![], vec![], 8), 10),
            Ok(Command::Stream { round: 3, n: 8 })
        );
        // A stream is asked for only without tokens.
        assert!(matches!(
            Command::from_frame(block(vec![1], vec![], 8), 10),
            Ok(Command::Round { .. })
        ));
    }

    #[test]
    fn bad_blocks_are_refused_and_the_session_goes_on() {
        let e = Command::from_frame(block(vec![5], vec![wire_dist(12)], 0), 10).unwrap_err();
        assert!(matches!(e, CommandError::BadDist(ConversionError::Dist(_))));
        assert!(!e.ends_session());
        assert!(e.to_string().starts_with("draft distribution: "), "{e}");
        // Distributions are checked before the stream is.
        let e = Command::from_frame(block(vec![], vec![wire_dist(12)], 8), 10).unwrap_err();
        assert!(matches!(e, CommandError::BadDist(_)));
        let n = MAX_BLOCK_TOKENS + 1;
        let e = Command::from_frame(block(vec![1; n], vec![], 0), 10).unwrap_err();
        assert_eq!(e, CommandError::TooManyTokens { n });
        assert!(!e.ends_session());
        match e.reply() {
            Message::ErrorReply(r) => {
                assert_eq!(r.code(), ErrorCode::BadRequest);
                assert_eq!(
                    r.message,
                    format!("{n} drafted tokens in one block; at most 64")
                );
            }
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    #[test]
    fn close_and_peer_errors_end_the_session_and_other_messages_are_unexpected() {
        assert_eq!(
            Command::from_frame(Message::Close(Close {}), 10),
            Ok(Command::Close)
        );
        let said = ErrorReply::new(ErrorCode::Internal, "draft failed");
        assert_eq!(
            Command::from_frame(Message::ErrorReply(said), 10),
            Ok(Command::PeerError {
                message: "draft failed".into()
            })
        );
        let e = Command::from_frame(Message::Hello(Hello::default()), 10).unwrap_err();
        assert!(e.ends_session());
        assert_eq!(e.to_string(), "unexpected Hello in a running session");
    }

    #[test]
    fn a_verdict_carries_the_outcome_in_microseconds() {
        let out = RoundOutcome {
            accepted: 2,
            next_token: 9,
            finished: true,
            compute: Duration::from_micros(1500),
            row_cost: Duration::from_secs(1 << 40),
        };
        assert_eq!(
            verdict(4, &out),
            Message::Verdict(Verdict {
                round: 4,
                accepted: 2,
                next_token: 9,
                finished: true,
                compute_us: 1500,
                row_cost_us: u32::MAX,
            })
        );
    }
}
