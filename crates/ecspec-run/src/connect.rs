//! How the edge reaches the cloud, once and again after a loss: a TCP connection or an
//! in-memory pipe to an in-process cloud, then the emulated link (with its outages), then TLS.
//! Every connection of a generation comes out as the same boxed stream type, so the edge can
//! swap one for the next ([`ecspec_edge::Resilience`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecspec_edge::{Connect, LinkSet};
use ecspec_link::{emulate, LinkConfig, Outages};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::run::CloudEndpoint;

/// Any byte stream to the cloud.
pub trait CloudStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> CloudStream for T {}

/// A connection to the cloud, whatever it runs over.
pub type BoxStream = Box<dyn CloudStream>;

/// The in-process cloud's connection tasks (one per connection).
type CloudTasks = Arc<Mutex<Vec<JoinHandle<Result<(), ecspec_transport::TransportError>>>>>;

/// Opens connections to one cloud through one link schedule.
#[derive(Clone)]
pub struct Connector {
    endpoint: CloudEndpoint,
    /// Behind a mutex only to be `Sync` (link models are `Send`, not `Sync`).
    link: Option<Arc<Mutex<LinkConfig>>>,
    outages: Outages,
    /// Link time zero of the generation (its first connection).
    origin: Instant,
    /// Every connection's link counters: the generation's bytes are their sum.
    links: Arc<LinkSet>,
    cloud_tasks: CloudTasks,
    /// Connections opened so far.
    opened: Arc<AtomicUsize>,
}

impl Connector {
    /// Connections to `endpoint` through `link` (None: direct), cut by `outages` (link time
    /// from now).
    pub fn new(endpoint: CloudEndpoint, link: Option<LinkConfig>, outages: Outages) -> Self {
        Self {
            endpoint,
            link: link.map(|l| Arc::new(Mutex::new(l))),
            outages,
            origin: Instant::now(),
            links: Arc::default(),
            cloud_tasks: Arc::default(),
            opened: Arc::default(),
        }
    }

    /// The bytes of every connection made so far (None without a link: nothing counts them).
    pub fn counter(&self) -> Option<Arc<LinkSet>> {
        self.link.as_ref().map(|_| Arc::clone(&self.links))
    }

    /// One connection: refused while an outage has the link down; otherwise connected,
    /// through a fresh emulated link at the generation's link time (so traces continue where
    /// they were), cut at the next outage, then TLS.
    ///
    /// # Errors
    /// The link is down, the cloud does not answer, the TLS handshake failed.
    pub async fn connect(&self) -> std::io::Result<BoxStream> {
        let now = self.origin.elapsed();
        if let Some(until) = self.outages.down_until(now) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!(
                    "the link is down (outage until {:.3} s)",
                    until.as_secs_f64()
                ),
            ));
        }
        let raw: BoxStream = match &self.endpoint {
            CloudEndpoint::Tcp(remote) => {
                let tcp = TcpStream::connect(remote.addr).await?;
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
            CloudEndpoint::InMemory(server) => {
                let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
                let task = tokio::spawn(ecspec_cloud::serve_stream(cloud_end, server.clone()));
                lock(&self.cloud_tasks).push(task);
                Box::new(edge_end)
            }
        };
        let linked: BoxStream = match &self.link {
            Some(link) => {
                // The first connection starts the link at its own time zero.
                let at = match self.opened.fetch_add(1, Ordering::Relaxed) {
                    0 => Duration::ZERO,
                    _ => now,
                };
                let shifted = lock(link).shifted(at);
                let (s, counters) = emulate(raw, shifted).await;
                self.outages.cut(counters.clone(), self.origin);
                self.links.add(counters);
                Box::new(s)
            }
            None => raw,
        };
        // TLS runs over the emulated link: its records cross the link and are counted.
        match &self.endpoint {
            CloudEndpoint::Tcp(remote) => match &remote.tls {
                Some(tls) => Ok(Box::new(tls.connect(linked).await?)),
                None => Ok(linked),
            },
            CloudEndpoint::InMemory(_) => Ok(linked),
        }
    }

    /// The first connection: as [`Self::connect`], but while an outage has the link down it
    /// waits for the link (with the reconnections' backoff: 250 ms doubling to 1 s, 20
    /// attempts) instead of failing; other errors (no cloud at the address, a TLS failure)
    /// are returned at once.
    ///
    /// # Errors
    /// As [`Self::connect`].
    pub async fn connect_first(&self) -> std::io::Result<BoxStream> {
        let mut wait = Duration::from_millis(250);
        for _ in 0..20 {
            match self.connect().await {
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
        self.connect().await
    }

    /// The reconnection hook for [`ecspec_edge::Resilience`].
    pub fn reconnect(&self) -> Connect<BoxStream> {
        let me = self.clone();
        Box::new(move || {
            let me = me.clone();
            Box::pin(async move { me.connect().await })
                as Pin<Box<dyn std::future::Future<Output = std::io::Result<BoxStream>> + Send>>
        })
    }

    /// Ends the in-process cloud's connection tasks: at once after a failed generation (they
    /// would wait out their idle timeout), else waiting for them to finish.
    pub async fn finish(&self, failed: bool) {
        let tasks: Vec<_> = lock(&self.cloud_tasks).drain(..).collect();
        for t in tasks {
            if failed {
                t.abort();
            }
            let _ = t.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
