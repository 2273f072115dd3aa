//! The edge side of ECSpec: drafts tokens with a small model, sends them over the (emulated)
//! wireless link, commits what the cloud verified, and measures every round.
//!
//! - [`Drafter`]: the draft model and its KV cache; proposes K tokens, rolls back.
//! - [`Lookup`]: drafts by copying from the context (no model), alone or before the draft.
//! - [`RoundEstimator`]: t_d, t_v(K), RTT and uplink rate learned from the edge's own rounds,
//!   turned into the [`ecspec_spec::policy::RoundState`] the draft-length policy reads.
//! - [`RoundPlanner`]: **where K is chosen** — each round a lookup, a model block of K under a
//!   verification rule, or a cloud stream ([`RoundPlan`]).
//! - [`generate`]: one generation over a connection (the state machine in [`session`]); bytes
//!   are read through a [`ByteCounter`]; [`Summary`] is its result ([`SummaryBuilder`]).
//!
//! **Invariant:** the committed sequence only grows; a token reaches the caller's callback
//! only once the cloud has committed it (speculative and cloud-only modes).

pub mod bytes;
pub mod drafter;
pub mod estimate;
pub mod lookup;
pub mod mode;
pub mod plan;
pub mod replay;
pub mod session;
pub mod summary;

pub use bytes::{ByteCounter, LinkSet};
pub use drafter::{DraftError, DraftSampling, Drafter, Proposal};
pub use estimate::RoundEstimator;
pub use lookup::{DraftSource, Lookup};
pub use mode::Mode;
pub use plan::{EnergyControl, LookupRounds, PlanEstimates, RoundPlan, RoundPlanner};
pub use session::{
    generate, generate_counted, generate_edge_only, generate_resilient, Connect, EdgeConfig,
    EdgeError, OnCommit, Resilience, StopSignal,
};
pub use summary::{
    FinishReason, RoundRecord, RoundSource, RoundVerify, SessionMemory, Summary, SummaryBuilder,
    Verification,
};
