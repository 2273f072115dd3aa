//! The edge as an OpenAI-compatible HTTP server (`ecspec edge serve`): an app on the device
//! points its OpenAI base URL here and gets the target's output, drafted locally and verified
//! by the cloud, with nothing else changed.
//!
//! Data flows one way: an HTTP request is checked and turned into a generation
//! ([`request`]), the generation runs as one edge session against the cloud ([`engine`]), and
//! its text goes back as one JSON body or as server-sent events ([`server`], shapes in
//! [`api`]). Errors take OpenAI's shape and status codes ([`error`]).
//!
//! - [`args`]: the command's flags.
//! - [`api`]: the JSON bodies (requests, responses, stream chunks, the `ecspec` extension).
//! - [`request`]: request validation: model, prompt, sampling, budget, stop strings.
//! - [`engine`]: the shared state (models, cloud, link) and one request's generation.
//! - [`error`]: [`error::ApiError`], the OpenAI error body with its HTTP status.
//! - [`server`]: the axum router, the handlers and the event stream.

pub mod api;
pub mod args;
pub mod engine;
pub mod error;
pub mod request;
pub mod server;

pub use args::EdgeServeArgs;
pub use engine::Engine;
pub use error::ApiError;
pub use server::{router, serve};
