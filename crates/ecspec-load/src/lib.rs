//! The ECSpec load generator: many simulated edges against one cloud verifier.
//!
//! Each edge runs the real edge ([`ecspec_edge::generate`]) over its own emulated link
//! ([`ecspec_link::emulate`], its own phase of the link's traces) against one cloud server,
//! in a closed loop (N edges, each sending its next request when its last one ends) or an
//! open loop (Poisson arrivals at a rate), for each compared [`System`] and load level until a
//! request count or a duration is reached. It measures what a serving benchmark does, with
//! vLLM's names: TTFT and TPOT percentiles, per-user goodput, cloud throughput, the cloud's
//! cost per committed token (target passes, rows), and each system's capacity: the highest
//! load whose p95 TPOT stays within an SLO.
//!
//! - [`run_level`], [`run_sweep`]: the driver; [`Load`], [`Bounds`], [`LevelSettings`] what
//!   it runs; [`EdgeFactory`] builds each request's edge; [`Cloud`] where the server is
//!   ([`LocalCloud`] starts one in this process on loopback).
//! - [`RequestRecord`], [`LevelRun`]: what it measured.
//! - [`level_reports`], [`capacities`], [`markdown`], [`csv`], [`json`]: aggregation and
//!   output; [`write_tpot_plot`] the TPOT-against-load plot.
//! - [`percentile`] (nearest rank), [`poisson_arrivals`]: the pure parts.
//!
//! Times come from tokio's clock, so the driver runs unchanged on a paused (virtual) clock
//! with [`Cloud::InMemory`]; requests on a live clock share this machine's cores with the
//! cloud, as edges and cloud do on one host.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use ecspec_load::{run_sweep, Bounds, EdgeFactory, LevelSettings, Load, LocalCloud, System};
//!
//! # async fn example(server: Arc<ecspec_cloud::CloudServer>, edge: Arc<dyn EdgeFactory>,
//! #                  prompts: Vec<Vec<u32>>) -> Result<(), ecspec_load::LoadError> {
//! let local = LocalCloud::start(server).await?;
//! let settings = LevelSettings {
//!     bounds: Bounds::new(Some(8), None)?,
//!     prompts: Arc::new(prompts),
//!     link: Some(ecspec_link::LinkConfig::constant(10.0, 20.0, 60.0).unwrap()),
//!     phase_s: 30.0,
//!     seed: 0,
//! };
//! let systems = [System { name: "ecspec".into(), edge }];
//! let loads = [Load::Closed { edges: 1 }, Load::Closed { edges: 4 }];
//! let runs = run_sweep(&local.cloud(), &systems, &loads, &settings, &mut |_| {}).await?;
//! let reports = ecspec_load::level_reports(&runs, 100.0, true);
//! let caps = ecspec_load::capacities(&reports, 100.0);
//! println!("{}", ecspec_load::markdown(&reports, &caps, 100.0));
//! local.stop().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod arrivals;
mod driver;
mod error;
mod percentile;
mod plot;
mod report;

pub use arrivals::poisson_arrivals;
pub use driver::{
    run_level, run_sweep, Bounds, Cloud, EdgeFactory, LevelRun, LevelSettings, Load, LocalCloud,
    RequestRecord, ServerDelta, System,
};
pub use error::LoadError;
pub use percentile::{percentile, Percentiles};
pub use plot::{fonts, tpot_series, write_tpot_plot, COLORS};
pub use report::{
    capacities, capacity, csv, json, level_reports, markdown, Capacity, LevelReport, CSV_HEADER,
};
