//! The server's metrics, in the Prometheus text format (`--metrics-listen ADDR`, `GET
//! /metrics`). Names follow vLLM's under the `ecspec:` prefix: the speculative-decoding
//! counters (`ecspec:spec_decode_num_drafts_total`, `…num_draft_tokens_total`,
//! `…num_accepted_tokens_total`, `…num_accepted_tokens_per_pos_total{position}`), sessions
//! running and waiting, rows per batched forward pass and its time, KV-cache bytes, refused
//! Hellos. Kept with `prometheus-client`; served by a small hyper server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The `position` label of the per-position acceptance counter (0-based drafted position).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Position {
    /// Drafted position in its block, from 0.
    pub position: u32,
}

/// Every metric of one server (each a cheap handle; the registry holds the same ones).
pub struct Metrics {
    registry: Registry,
    /// Rounds that carried at least one drafted token.
    pub num_drafts: Counter,
    /// Drafted tokens verified.
    pub num_draft_tokens: Counter,
    /// Drafted tokens accepted.
    pub num_accepted_tokens: Counter,
    /// Accepted drafted tokens by position in their block.
    pub accepted_per_pos: Family<Position, Counter>,
    /// Sessions admitted and not yet ended.
    pub sessions_running: Gauge,
    /// Hellos waiting for KV budget.
    pub sessions_waiting: Gauge,
    /// Hellos refused `busy` (KV budget, waiting queue or session slots full).
    pub refused_hellos: Counter,
    /// Rows (token positions) per batched forward pass.
    pub iteration_rows: Histogram,
    /// Seconds per batched forward pass.
    pub iteration_seconds: Histogram,
    /// Batched forward passes.
    pub iterations: Counter,
    /// Rows over all passes.
    pub rows: Counter,
    /// Prompt rows (prefill chunks) over all passes.
    pub prefill_rows: Counter,
    /// Seconds spent in passes.
    pub busy_seconds: Counter<f64, AtomicU64>,
    /// KV-cache bytes reserved by running sessions.
    pub kv_bytes_used: Gauge,
    /// The KV budget in bytes.
    pub kv_budget_bytes: Gauge,
}

impl Metrics {
    /// Fresh metrics, registered under their `ecspec:` names.
    pub fn new(kv_budget_bytes: u64) -> Arc<Self> {
        let mut registry = Registry::default();
        let m = Self {
            num_drafts: Counter::default(),
            num_draft_tokens: Counter::default(),
            num_accepted_tokens: Counter::default(),
            accepted_per_pos: Family::default(),
            sessions_running: Gauge::default(),
            sessions_waiting: Gauge::default(),
            refused_hellos: Counter::default(),
            iteration_rows: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            iteration_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            iterations: Counter::default(),
            rows: Counter::default(),
            prefill_rows: Counter::default(),
            busy_seconds: Counter::default(),
            kv_bytes_used: Gauge::default(),
            kv_budget_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        m.kv_budget_bytes
            .set(i64::try_from(kv_budget_bytes).unwrap_or(i64::MAX));
        let r = &mut registry;
        r.register(
            "ecspec:spec_decode_num_drafts",
            "Rounds that carried drafted tokens",
            m.num_drafts.clone(),
        );
        r.register(
            "ecspec:spec_decode_num_draft_tokens",
            "Drafted tokens verified",
            m.num_draft_tokens.clone(),
        );
        r.register(
            "ecspec:spec_decode_num_accepted_tokens",
            "Drafted tokens accepted",
            m.num_accepted_tokens.clone(),
        );
        r.register(
            "ecspec:spec_decode_num_accepted_tokens_per_pos",
            "Accepted drafted tokens by position in the block",
            m.accepted_per_pos.clone(),
        );
        r.register(
            "ecspec:num_requests_running",
            "Sessions admitted and not yet ended",
            m.sessions_running.clone(),
        );
        r.register(
            "ecspec:num_requests_waiting",
            "Hellos waiting for KV-cache budget",
            m.sessions_waiting.clone(),
        );
        r.register(
            "ecspec:num_requests_refused",
            "Hellos refused busy",
            m.refused_hellos.clone(),
        );
        r.register(
            "ecspec:iteration_rows",
            "Rows (token positions of all sessions) per batched forward pass",
            m.iteration_rows.clone(),
        );
        r.register(
            "ecspec:iteration_seconds",
            "Time of one batched forward pass",
            m.iteration_seconds.clone(),
        );
        r.register(
            "ecspec:iterations",
            "Batched forward passes",
            m.iterations.clone(),
        );
        r.register("ecspec:rows", "Rows over all passes", m.rows.clone());
        r.register(
            "ecspec:prefill_rows",
            "Prompt rows over all passes",
            m.prefill_rows.clone(),
        );
        r.register(
            "ecspec:busy_seconds",
            "Seconds spent in forward passes",
            m.busy_seconds.clone(),
        );
        r.register(
            "ecspec:kv_cache_used_bytes",
            "KV-cache bytes reserved by running sessions",
            m.kv_bytes_used.clone(),
        );
        r.register(
            "ecspec:kv_cache_budget_bytes",
            "KV-cache budget",
            m.kv_budget_bytes.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    /// Records one batched pass of `rows` rows (`prefill` of them prompt rows) taking `took`.
    pub fn record_iteration(&self, rows: usize, prefill: usize, took: Duration) {
        self.iterations.inc();
        self.rows.inc_by(rows as u64);
        self.prefill_rows.inc_by(prefill as u64);
        self.busy_seconds.inc_by(took.as_secs_f64());
        self.iteration_rows.observe(rows as f64);
        self.iteration_seconds.observe(took.as_secs_f64());
    }

    /// Records a verified round: `k` drafted tokens, `accepted` of them accepted.
    pub fn record_round(&self, k: usize, accepted: usize) {
        if k == 0 {
            return;
        }
        self.num_drafts.inc();
        self.num_draft_tokens.inc_by(k as u64);
        self.num_accepted_tokens.inc_by(accepted as u64);
        for position in 0..accepted as u32 {
            self.accepted_per_pos
                .get_or_create(&Position { position })
                .inc();
        }
    }

    /// The metrics in the Prometheus / OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves; other paths get 404.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let m = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let m = Arc::clone(&m);
                async move { Ok::<_, Infallible>(respond(&req, &m)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "metrics connection: {e}");
            }
        });
    }
}

fn respond(req: &Request<Incoming>, m: &Metrics) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            m.encode(),
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the metrics are at GET /metrics\n".to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
