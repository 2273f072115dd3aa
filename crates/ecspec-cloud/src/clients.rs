//! Per-client limits: how many sessions one client may hold at once, and how fast one session
//! may send rounds.
//!
//! A client is the auth token it presented (`cloud serve --auth-token-file`), or without
//! authentication its peer address; an in-memory stream (no peer) is one local client. These
//! limits keep one edge from taking every session slot or a core of the target.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Who a session belongs to, for [`ClientSessions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// The n-th token of the auth token file.
    Token(usize),
    /// An unauthenticated peer, by address.
    Peer(IpAddr),
    /// A stream without a peer address (in-process).
    Local,
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientId::Token(i) => write!(f, "auth token #{}", i + 1),
            ClientId::Peer(ip) => write!(f, "peer {ip}"),
            ClientId::Local => write!(f, "the local client"),
        }
    }
}

/// Counts each client's open sessions against a cap.
#[derive(Debug)]
pub struct ClientSessions {
    cap: usize,
    open: Arc<Mutex<HashMap<ClientId, usize>>>,
}

/// One open session of a client; the count goes down when it is dropped.
#[derive(Debug)]
pub struct ClientSlot {
    client: ClientId,
    open: Arc<Mutex<HashMap<ClientId, usize>>>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

impl ClientSessions {
    /// At most `cap` sessions per client at once (0 is read as 1).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            open: Arc::default(),
        }
    }

    /// Takes one of `client`'s session slots.
    ///
    /// # Errors
    /// The client already holds `cap` sessions: a message saying so.
    pub fn take(&self, client: ClientId) -> Result<ClientSlot, String> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(client).or_insert(0);
        if *n >= self.cap {
            let sessions = if self.cap == 1 { "session" } else { "sessions" };
            return Err(format!(
                "{client} already has {} {sessions} open, this cloud's limit per client \
                 (--max-sessions-per-client)",
                self.cap
            ));
        }
        *n += 1;
        Ok(ClientSlot {
            client,
            open: Arc::clone(&self.open),
        })
    }

    /// Sessions `client` holds now.
    pub fn open(&self, client: ClientId) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&client).copied().unwrap_or(0)
    }
}

/// Paces one session's rounds to at most `rate` per second: a round that comes sooner than
/// `1 / rate` after the previous one waits for the rest (on tokio's clock), so an edge that
/// floods rounds slows itself down instead of taking the target's passes from the others.
#[derive(Debug)]
pub struct RoundPacer {
    interval: Option<Duration>,
    last: Option<Instant>,
}

impl RoundPacer {
    /// `rounds_per_s`: None or a non-positive value disables pacing.
    pub fn new(rounds_per_s: Option<f64>) -> Self {
        let interval = rounds_per_s
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        Self {
            interval,
            last: None,
        }
    }

    /// Waits until the next round may run, and records it.
    pub async fn wait(&mut self) {
        if let (Some(every), Some(last)) = (self.interval, self.last) {
            tokio::time::sleep_until(last + every).await;
        }
        self.last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_cap_sessions_and_gets_them_back() {
        let c = ClientSessions::new(2);
        let a = ClientId::Token(0);
        let (s1, s2) = (c.take(a).unwrap(), c.take(a).unwrap());
        let e = c.take(a).unwrap_err();
        assert!(
            e.starts_with("auth token #1 already has 2 sessions open"),
            "{e}"
        );
        // Another client is not affected.
        let _other = c.take(ClientId::Token(1)).unwrap();
        drop(s1);
        assert_eq!(c.open(a), 1);
        let _s3 = c.take(a).unwrap();
        drop(s2);
        assert_eq!(c.open(a), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_are_paced_to_the_rate() {
        let mut p = RoundPacer::new(Some(10.0));
        let t0 = Instant::now();
        for _ in 0..5 {
            p.wait().await;
        }
        // The first round runs at once, each of the other four 100 ms after the one before.
        assert_eq!(t0.elapsed(), Duration::from_millis(400));
        let mut off = RoundPacer::new(None);
        let t1 = Instant::now();
        for _ in 0..5 {
            off.wait().await;
        }
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }
}
