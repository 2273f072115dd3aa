//! Where the edge reads how many bytes crossed the link: a small trait, so the session does not
//! depend on who counts (the link emulator's [`LinkCounters`], a test's tap, a real NIC).
//!
//! **Invariant:** the session never counts bytes itself; every per-round and per-request byte
//! figure is a difference of two readings of one [`ByteCounter`].

use std::future::Future;
use std::pin::Pin;

use ecspec_link::LinkCounters;

/// A future a [`ByteCounter`] hands out; boxed so the trait stays usable as `dyn`.
pub type Settled<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Running totals of the bytes on the edge's connection, per direction (framing included).
///
/// Readings only grow. The session reads both before a round's block is sent and after its
/// verdict arrived; the difference is the round's bytes.
pub trait ByteCounter: Send + Sync {
    /// Bytes delivered edge → cloud so far.
    fn uplink_bytes(&self) -> u64;
    /// Bytes delivered cloud → edge so far.
    fn downlink_bytes(&self) -> u64;
    /// Resolves once everything the edge wrote has been delivered and counted (the session
    /// waits for it, bounded, after its `Close`, so the final totals include it). The default
    /// resolves at once: right for counters that count as bytes are written.
    fn settled(&self) -> Settled<'_> {
        Box::pin(std::future::ready(()))
    }
}

/// The link emulator counts a byte when it delivers it; it has settled when both directions
/// have closed ([`LinkCounters::closed`]).
impl ByteCounter for LinkCounters {
    fn uplink_bytes(&self) -> u64 {
        LinkCounters::uplink_bytes(self)
    }

    fn downlink_bytes(&self) -> u64 {
        LinkCounters::downlink_bytes(self)
    }

    fn settled(&self) -> Settled<'_> {
        Box::pin(self.closed())
    }
}

/// The links of a generation that reconnected: each connection had its own emulated link;
/// the generation's bytes are their sum. The connector adds each new link with [`Self::add`].
#[derive(Debug, Default)]
pub struct LinkSet {
    links: std::sync::Mutex<Vec<LinkCounters>>,
}

impl LinkSet {
    /// Adds a connection's link.
    pub fn add(&self, link: LinkCounters) {
        self.lock().push(link);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LinkCounters>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sums over the links; settled once the newest one is (the older ones failed or closed).
impl ByteCounter for LinkSet {
    fn uplink_bytes(&self) -> u64 {
        self.lock().iter().map(LinkCounters::uplink_bytes).sum()
    }

    fn downlink_bytes(&self) -> u64 {
        self.lock().iter().map(LinkCounters::downlink_bytes).sum()
    }

    fn settled(&self) -> Settled<'_> {
        let last = self.lock().last().cloned();
        Box::pin(async move {
            if let Some(l) = last {
                l.closed().await;
            }
        })
    }
}

/// (uplink, downlink) totals of `counter`, (0, 0) without one (a plain socket, uncounted).
pub(crate) fn totals(counter: Option<&dyn ByteCounter>) -> (u64, u64) {
    counter.map_or((0, 0), |c| (c.uplink_bytes(), c.downlink_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Fixed(AtomicU64, AtomicU64);

    impl ByteCounter for Fixed {
        fn uplink_bytes(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
        fn downlink_bytes(&self) -> u64 {
            self.1.load(Ordering::Relaxed)
        }
    }

    #[tokio::test]
    async fn totals_read_the_counter_and_default_settling_is_immediate() {
        assert_eq!(totals(None), (0, 0));
        let c = Fixed(AtomicU64::new(14), AtomicU64::new(19));
        assert_eq!(totals(Some(&c)), (14, 19));
        c.0.store(30, Ordering::Relaxed);
        assert_eq!(totals(Some(&c)), (30, 19));
        c.settled().await;
    }
}
