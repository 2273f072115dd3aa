//! The edge side of ECSpec: drafts tokens with a small model, sends them over the (emulated)
//! wireless link, commits what the cloud verified, and measures every round.
//!
//! - [`Drafter`]: the draft model and its KV cache; proposes K tokens, rolls back.
//! - [`Lookup`]: drafts by copying from the context (no model), alone or before the draft.
//! - [`RoundEstimator`]: t_d, t_v(K), RTT and uplink rate learned from the edge's own rounds,
//!   turned into the [`ecspec_spec::policy::RoundState`] the draft-length policy reads.
//! - [`generate`]: one generation over a connection; [`Summary`] is its result.
//!
//! **Invariant:** the committed sequence only grows; a token reaches the caller's callback
//! only once the cloud has committed it (speculative and cloud-only modes).

pub mod drafter;
pub mod estimate;
pub mod lookup;
pub mod replay;
pub mod session;

pub use drafter::{DraftError, DraftSampling, Drafter, Proposal};
pub use estimate::RoundEstimator;
pub use lookup::{DraftSource, Lookup};
pub use session::{
    generate, generate_edge_only, EdgeConfig, EdgeError, EnergyControl, Mode, RoundRecord,
    SessionMemory, Summary,
};
