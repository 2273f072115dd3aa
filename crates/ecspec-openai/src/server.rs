//! The HTTP side: axum routes, the handlers, and the event stream of a streamed answer.
//!
//! A request is read whole (at most [`MAX_BODY_BYTES`]), checked ([`crate::request`]), its
//! prompt prepared, and given a generation slot (429 beyond `--max-concurrent`), all before
//! any answer byte: those errors get their status. A streamed answer waits for its first text
//! before sending its 200, so a busy or refusing cloud is still a 503/502; after that an error
//! arrives as an `error` event. A client that leaves mid-stream ends its generation at once:
//! the edge session is dropped, which closes its connection, and the cloud frees the session.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::api::{self, Endpoint, Head};
use crate::args::EdgeServeArgs;
use crate::engine::{Engine, Failure};
use crate::error::ApiError;
use crate::request::{self, Job};

/// Largest request body read (1 MiB: far beyond any prompt a context window holds); larger is
/// answered 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A connection must send a request's headers within this (slow or stalled clients cannot hold
/// connections open forever).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A request's body must arrive within this; later is answered 408.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After Ctrl-C or SIGTERM, answers in progress get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`,
/// `GET /health`; anything else is a 404 (405 for a known path with another method) in
/// OpenAI's error shape.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/health", get(|| async { "ok\n" }))
        .method_not_allowed_fallback(wrong_method)
        .fallback(no_route)
        .with_state(engine)
}

/// Serves `router(engine)` on `listener` (HTTP/1.1; headers within [`HEADER_READ_TIMEOUT`],
/// a half-closed client still answered) until `shutdown` resolves; answers in progress then
/// get [`SHUTDOWN_GRACE`] to finish.
///
/// # Errors
/// None so far: a failed accept is logged and retried.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(engine);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .half_close(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "ecspec: answers still in progress after {} s; exiting",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// `ecspec edge serve`: loads the models, starts the in-process cloud unless `--cloud` is
/// given, binds `--listen`, prints where it serves, and serves until Ctrl-C or SIGTERM.
///
/// # Errors
/// Invalid flags, models that cannot be loaded, an address that cannot be bound.
pub async fn run(a: EdgeServeArgs) -> Result<()> {
    crate::engine::listen_addr(&a.listen)?;
    let engine = Engine::start(&a).await?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("binding --listen {}", a.listen))?;
    let addr = listener.local_addr()?;
    let cloud = match (&a.cloud.cloud, engine.local_cloud()) {
        (Some(c), _) => format!("the cloud at {c}"),
        (None, Some(l)) => format!("the in-process cloud on {l}"),
        (None, None) => "no cloud (edge-only)".into(),
    };
    eprintln!(
        "ecspec: serving the OpenAI API for model `{}` on http://{addr}/v1 ({cloud}; draft {})",
        engine.model_name(),
        engine.loaded().draft_desc
    );
    let engine = Arc::new(engine);
    serve(listener, Arc::clone(&engine), shutdown_signal()).await?;
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.stop().await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let which = wait_for_signal().await;
    eprintln!("ecspec: {which}: finishing the answers in progress, then exiting");
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted",
                _ = term.recv() => "SIGTERM",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "interrupted"
}

async fn models(State(engine): State<Arc<Engine>>) -> Json<Value> {
    Json(engine.models())
}

async fn chat(State(engine): State<Arc<Engine>>, body: Body) -> Response {
    handle(engine, body, Endpoint::Chat).await
}

async fn completions(State(engine): State<Arc<Engine>>, body: Body) -> Response {
    handle(engine, body, Endpoint::Completion).await
}

async fn no_route(uri: Uri) -> Response {
    ApiError::no_route(uri.path()).into_response()
}

async fn wrong_method(uri: Uri) -> Response {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::bad_request(format!(
            "{} does not take this method (GET /v1/models; POST /v1/chat/completions, /v1/completions)",
            uri.path()
        ))
    }
    .into_response()
}

async fn handle(engine: Arc<Engine>, body: Body, endpoint: Endpoint) -> Response {
    match answer(engine, body, endpoint).await {
        Ok(r) => r,
        Err(f) => failure_response(f),
    }
}

async fn answer(engine: Arc<Engine>, body: Body, endpoint: Endpoint) -> Result<Response, Failure> {
    let bytes = match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) if too_long(&e) => {
            return Err(ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..ApiError::bad_request(format!(
                    "the request body is over {} MiB",
                    MAX_BODY_BYTES >> 20
                ))
            }
            .into())
        }
        Ok(Err(e)) => {
            return Err(
                ApiError::bad_request(format!("the request body could not be read: {e}")).into(),
            )
        }
        Err(_) => {
            return Err(ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                ..ApiError::bad_request(format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ))
            }
            .into())
        }
    };
    let job = match endpoint {
        Endpoint::Chat => request::chat(&bytes),
        Endpoint::Completion => request::completion(&bytes),
    }?;
    engine.check_model(&job)?;
    // The request's own faults first (400, 413), then capacity (429).
    let prepared = engine.prepare(&job)?;
    let slot = engine.slot()?;
    let head = Head {
        id: format!(
            "{}-{}",
            match endpoint {
                Endpoint::Chat => "chatcmpl",
                Endpoint::Completion => "cmpl",
            },
            engine.next_id()
        ),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: job.model.clone(),
        endpoint,
    };
    if !job.stream {
        let summary = engine.generate(&job, prepared, &mut |_| {}).await?;
        drop(slot);
        return Ok(Json(api::response(&head, &summary.text, &summary)).into_response());
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(stream_task(engine, job, prepared, head, slot, tx));
    // The 200 goes out with the first text: a cloud that refuses or is busy is still a status.
    let first = match rx.recv().await {
        Some(Ok(frame)) => frame,
        Some(Err(f)) => return Err(f),
        None => return Err(ApiError::internal("the generation ended without an answer").into()),
    };
    let events = tokio_stream::once(Ok(first))
        .chain(UnboundedReceiverStream::new(rx))
        .map(|item| -> Result<Event, Infallible> {
            Ok(match item {
                Ok(Frame::Json(v)) => Event::default().data(v.to_string()),
                Ok(Frame::Done) => Event::default().data("[DONE]"),
                Err(f) => Event::default().data(failure_body(&f).to_string()),
            })
        });
    Ok(Sse::new(events).into_response())
}

/// Whether reading a body failed on the size limit (not on a broken or truncated body).
fn too_long(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// One server-sent event of a streamed answer.
enum Frame {
    /// A chunk.
    Json(Value),
    /// `data: [DONE]`.
    Done,
}

/// Runs a streamed generation, sending its chunks; ends it as soon as the client is gone.
async fn stream_task(
    engine: Arc<Engine>,
    job: Job,
    prepared: (Vec<u32>, usize, ecspec_run::SamplingArgs),
    head: Head,
    slot: tokio::sync::OwnedSemaphorePermit,
    tx: mpsc::UnboundedSender<Result<Frame, Failure>>,
) {
    let usage = job.include_usage;
    let mut first = true;
    let sender = tx.clone();
    let mut echo = |s: &str| {
        let _ = sender.send(Ok(Frame::Json(api::chunk(&head, s, first, None, usage))));
        first = false;
    };
    let result = tokio::select! {
        r = engine.generate(&job, prepared, &mut echo) => Some(r),
        // Dropping the generation closes its connection: the cloud ends the session.
        () = tx.closed() => None,
    };
    match result {
        None => tracing::info!(id = %head.id, "the client left mid-stream; generation ended"),
        Some(Ok(s)) => {
            if first {
                let _ = tx.send(Ok(Frame::Json(api::chunk(&head, "", true, None, usage))));
            }
            let finish = api::finish_reason(s.finish_reason);
            let last = api::chunk(&head, "", false, Some(finish), usage);
            let _ = tx.send(Ok(Frame::Json(last)));
            if usage {
                let _ = tx.send(Ok(Frame::Json(api::usage_chunk(&head, &s))));
            }
            let _ = tx.send(Ok(Frame::Done));
        }
        Some(Err(f)) => {
            let _ = tx.send(Err(f));
            let _ = tx.send(Ok(Frame::Done));
        }
    }
    drop(slot);
}

/// The error body, with the text committed before the failure when there was some.
fn failure_body(f: &Failure) -> Value {
    let mut body = f.error.body();
    if !f.partial_text.is_empty() {
        body["ecspec"] = json!({ "partial_text": f.partial_text });
    }
    body
}

fn failure_response(f: Failure) -> Response {
    let body = failure_body(&f);
    let mut r = f.error.into_response();
    *r.body_mut() = Body::from(body.to_string());
    r
}
