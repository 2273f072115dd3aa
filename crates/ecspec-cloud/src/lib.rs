//! The cloud side of ECSpec: a TCP verifier server.
//!
//! - [`CloudModel`]: the served target and the identity drafts are checked against.
//! - [`check_hello`]: the handshake check (protocol version, family, base or vocabulary hash,
//!   settings), pure.
//! - [`TargetSession`]: one session's target KV cache; prefill, then one forward pass over
//!   K + 1 positions per round and the verification rule of DESIGN.md §4.
//! - [`serve`]: the accept loop; one task per connection, compute on blocking threads.
//!
//! **Invariant:** a round that fails commits nothing and leaves the KV cache as it was.

pub mod handshake;
pub mod model;
pub mod server;
pub mod target;

pub use handshake::{check_hello, Refusal, SessionPlan};
pub use model::CloudModel;
pub use server::{serve, CloudServer, ServerConfig};
pub use target::{RoundOutcome, TargetSession};
