//! Surviving a lost connection: the edge notices (an I/O error, a reset, a close or a frame
//! deadline on any await of the round), reconnects with exponential backoff and re-opens the
//! session with every committed token as the prompt. The cloud prefills them and answers a
//! HelloAck whose first token continues the text; the round that was in flight is drafted
//! again. A cloud that restarted, or dropped the session, is handled the same way.
//!
//! Nothing committed is lost or repeated: only a verdict commits, and a verdict that never
//! arrived committed nothing on either side. The text equals the uninterrupted run's (greedy,
//! and seeded match or cloud-only sampling, whose draws are keyed by position).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ecspec_proto::{FrameError, Hello, HelloAck, Message};
use ecspec_transport::{Connection, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::{await_ack, EdgeError, EdgeSession};

/// Opens a new connection to the cloud (through a fresh emulated link, TLS and all): what the
/// edge calls after a loss. An `Err` is a failed attempt (the link is still down, the cloud is
/// not listening yet); the edge backs off and calls again.
pub type Connect<S> =
    Box<dyn FnMut() -> Pin<Box<dyn Future<Output = std::io::Result<S>> + Send>> + Send>;

/// How the edge reconnects after losing the cloud mid-generation.
pub struct Resilience<S> {
    /// Opens a new connection.
    pub connect: Connect<S>,
    /// Most attempts per loss before the generation fails.
    pub attempts: u32,
    /// Wait before the first attempt; doubles after each failed one, up to `max_backoff`.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl<S> Resilience<S> {
    /// `connect` with the default schedule: 20 attempts, 250 ms before the first, doubling up
    /// to 1 s (about 19 s of attempts in all; a link back from an outage is found within 1 s).
    pub fn new(connect: Connect<S>) -> Self {
        Self {
            connect,
            attempts: 20,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// The waits between attempts: `first_backoff` doubling up to `max_backoff`, `attempts` of
/// them.
struct Backoff {
    left: u32,
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn of<S>(r: &Resilience<S>) -> Self {
        Self {
            left: r.attempts,
            next: r.first_backoff,
            max: r.max_backoff,
        }
    }

    /// Waits before the next attempt; false when none is left.
    async fn wait(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
        true
    }
}

/// The first handshake lost its connection (`cause`): reconnect with backoff and send the
/// same Hello again, until a HelloAck arrives (each waited for `timeout`, checked against a
/// vocabulary of `vocab`). Returns the new connection, the ack and the
/// time lost.
///
/// # Errors
/// `cause` when it is not a lost connection or there is no `resilience`; otherwise the
/// reconnection's [`EdgeError::Reconnect`], or the new session's refusal.
pub(super) async fn reopen_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    resilience: Option<&mut Resilience<S>>,
    cause: EdgeError,
    hello: &Hello,
    (timeout, vocab): (Duration, usize),
) -> Result<(Connection<S>, HelloAck, Duration), EdgeError> {
    let Some(r) = resilience.filter(|_| is_connection_loss(&cause)) else {
        return Err(cause);
    };
    let t0 = Instant::now();
    let mut backoff = Backoff::of(r);
    let mut last = cause;
    while backoff.wait().await {
        let stream = match (r.connect)().await {
            Ok(s) => s,
            Err(e) => {
                last = EdgeError::Transport(e.into());
                continue;
            }
        };
        let mut conn = Connection::new(stream);
        let opened = match conn.write_message(&Message::Hello(hello.clone())).await {
            Ok(_) => await_ack(&mut conn, timeout, vocab).await,
            Err(e) => Err(e.into()),
        };
        match opened {
            Ok(ack) => return Ok((conn, ack, t0.elapsed())),
            Err(e) if is_connection_loss(&e) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(EdgeError::Reconnect {
        attempts: r.attempts,
        waited_s: t0.elapsed().as_secs_f64(),
        last: Box::new(last),
    })
}

/// Whether `e` is the connection's loss (worth a reconnect), not a refusal or a bug.
pub(super) fn is_connection_loss(e: &EdgeError) -> bool {
    match e {
        EdgeError::Closed => true,
        EdgeError::Transport(TransportError::Io(_) | TransportError::Timeout(_)) => true,
        EdgeError::Transport(TransportError::Frame(FrameError::Truncated { .. })) => true,
        _ => false,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> EdgeSession<'_, S> {
    /// After a failed round: reconnect and re-open when `cause` is a lost connection and the
    /// session may reconnect; otherwise (or when every attempt fails) the error to end with.
    pub(super) async fn recover(&mut self, cause: EdgeError) -> Result<(), EdgeError> {
        if !is_connection_loss(&cause) || self.resilience.is_none() {
            return Err(cause);
        }
        tracing::info!("lost the cloud mid-generation ({cause}); reconnecting");
        let t0 = Instant::now();
        let mut last = cause;
        let (mut backoff, attempts) = match &self.resilience {
            Some(r) => (Backoff::of(r), r.attempts),
            None => return Err(last),
        };
        while backoff.wait().await {
            let connect = match self.resilience.as_mut() {
                Some(r) => (r.connect)(),
                None => return Err(last),
            };
            let stream = match connect.await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("reconnection failed: {e}");
                    last = EdgeError::Transport(e.into());
                    continue;
                }
            };
            match self.reopen(stream).await {
                Ok(()) => {
                    self.summary.reconnected(t0.elapsed());
                    return Ok(());
                }
                Err(e) if is_connection_loss(&e) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(EdgeError::Reconnect {
            attempts,
            waited_s: t0.elapsed().as_secs_f64(),
            last: Box::new(last),
        })
    }

    /// Opens the session again over `stream`: the first Hello with the committed tokens as
    /// its prompt and the budget left; the HelloAck's token is committed as the next one.
    async fn reopen(&mut self, stream: S) -> Result<(), EdgeError> {
        let mut conn = Connection::new(stream);
        let generated = self.committed.len() - self.summary.prompt_tokens();
        let hello = Hello {
            prompt: self.committed.clone(),
            max_new_tokens: self.max_new.saturating_sub(generated).max(1) as u32,
            stream: 0,
            resumed_tokens: generated as u32,
            ..self.hello.clone()
        };
        conn.write_message(&Message::Hello(hello)).await?;
        let ack = await_ack(&mut conn, self.set.timeout, self.set.vocab).await?;
        if ack.max_block_tokens > 0 {
            self.set.k_max = ack.max_block_tokens as usize;
        }
        self.set.grant = super::grant(&ack, generated);
        self.conn = conn;
        self.streaming = 0;
        if self.hello.autoregressive {
            // The new session streams its verdicts numbered from 1.
            self.round_base = self.round;
        }
        self.committed.push(ack.first_token);
        (self.on_commit)(&[ack.first_token]);
        self.finished = ack.finished || self.set.stop.is_raised();
        Ok(())
    }
}
