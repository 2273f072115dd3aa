//! The cloud side of ECSpec: a TCP verifier server.
//!
//! - [`CloudModel`]: the served target versions (one [`TargetVersion`] each, all sharing the
//!   base's weights), the active one new sessions get, and the identity drafts are checked
//!   against. A session keeps the version it started with (see [`model`]).
//! - [`AuthTokens`]: the bearer tokens a cloud started with `--auth-token-file` accepts,
//!   checked in constant time in the Hello before any compute.
//! - [`check_hello`]: the handshake check (protocol version, family, base or vocabulary hash,
//!   settings), pure.
//! - [`TargetSession`]: one session's target KV cache; prefill, then one forward pass over
//!   K + 1 positions per round and the verification rule of design.md §4.
//! - [`Scheduler`]: iteration-level batching — every session's prefill chunks, rounds and
//!   streaming steps in shared forward passes, up to `max_batch_tokens` rows each.
//! - [`Metrics`]: vLLM-named counters in the Prometheus text format ([`serve_metrics`]).
//! - [`serve`]: the accept loop; one task per connection — a handshake that yields a session,
//!   then a session loop over [`Command`]s — compute through the scheduler. A connection from
//!   loopback may open with `SetVersion` instead of `Hello` to switch the active version
//!   ([`set_version`] is the client side).
//! - [`wire`]: where the cloud's frames become an [`Opening`] or a [`Command`] in domain values
//!   (`Command::from_frame`), and its replies are built from cloud types (the `Verdict` of a
//!   [`RoundOutcome`], the `HelloAck`); the rule, sampling and distribution conversions are
//!   `ecspec_proto::domain`'s.
//!
//! **Invariant:** a round that fails commits nothing and leaves the KV cache as it was.

pub mod admin;
pub mod auth;
pub mod clients;
pub mod handshake;
pub mod metrics;
pub mod model;
pub mod scheduler;
pub mod server;
pub mod target;
pub mod wire;

pub use admin::{set_version, AdminError};
pub use auth::{AuthError, AuthTokens};
pub use handshake::{check_hello, BudgetCut, Refusal, SessionPlan};
pub use metrics::{serve_metrics, Metrics};
pub use model::{CloudModel, TargetVersion, UnknownVersion};
pub use scheduler::{Scheduler, SchedulerConfig, Work};
pub use server::{management_allowed, serve, serve_stream, CloudServer, ServerConfig, ServerStats};
pub use target::{RoundOutcome, TargetSession};
pub use wire::{Command, CommandError, Opening, MAX_BLOCK_TOKENS};
