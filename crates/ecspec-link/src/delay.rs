//! Varying propagation delay: any [`LinkModel`]'s serialization, with each chunk's one-way delay
//! drawn from a [`DelayProcess`] instead of the model's constant — Gaussian jitter (seeded) or
//! an RTT trace (e.g. the ping RTT column of the Irish 5G traces, one-way = RTT / 2). Delivery
//! stays FIFO: a chunk is never delivered before the one handed over before it (a shorter delay
//! after a long one queues behind it, as packets of one TCP stream do).

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::model::{LinkModel, TraceEnded};

/// How each chunk's one-way delay is drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum DelayProcess {
    /// `base + sd · ε`, ε standard normal (clamped at 0), seeded.
    Jitter {
        /// Standard deviation of the one-way delay.
        sd: Duration,
        /// Seed of the random stream.
        seed: u64,
    },
    /// Half the RTT of the trace slot in which the chunk leaves the serializer; slots without a
    /// value keep the last one (the base delay before the first). The trace loops.
    RttTrace {
        /// RTT per slot, ms (`None` = not measured).
        rtt_ms: Arc<[Option<f64>]>,
        /// Slot length.
        slot: Duration,
    },
}

/// A link direction with a varying one-way delay on top of `inner`'s serialization.
#[derive(Debug, Clone)]
pub struct VariableDelay {
    inner: Box<dyn LinkModel>,
    process: DelayProcess,
    rng: ChaCha8Rng,
    last_delivery: Duration,
}

impl VariableDelay {
    /// Wraps `inner`; its constant one-way delay becomes the base (mean for jitter; the value
    /// before the first measured slot for a trace).
    pub fn new(inner: Box<dyn LinkModel>, process: DelayProcess) -> Self {
        let seed = match &process {
            DelayProcess::Jitter { seed, .. } => *seed,
            DelayProcess::RttTrace { .. } => 0,
        };
        Self {
            inner,
            process,
            rng: ChaCha8Rng::seed_from_u64(seed),
            last_delivery: Duration::ZERO,
        }
    }

    fn delay_at(&mut self, departure: Duration) -> Duration {
        let base = self.inner.one_way_delay();
        match &self.process {
            DelayProcess::Jitter { sd, .. } => {
                let e: f64 = StandardNormal.sample(&mut self.rng);
                Duration::from_secs_f64((base.as_secs_f64() + sd.as_secs_f64() * e).max(0.0))
            }
            DelayProcess::RttTrace { rtt_ms, slot } => {
                let n = rtt_ms.len() as u128;
                if n == 0 {
                    return base;
                }
                let i = (departure.as_nanos() / slot.as_nanos().max(1) % n) as usize;
                // The last measured value at or before slot i (wrapping), else the base.
                (0..rtt_ms.len())
                    .map(|back| rtt_ms[(i + rtt_ms.len() - back) % rtt_ms.len()])
                    .find_map(|v| v)
                    .map_or(base, |ms| Duration::from_secs_f64(ms.max(0.0) / 2000.0))
            }
        }
    }
}

impl LinkModel for VariableDelay {
    fn transmit(&mut self, t: Duration, bytes: usize) -> Result<Duration, TraceEnded> {
        let delivered_const = self.inner.transmit(t, bytes)?;
        let departure = delivered_const.saturating_sub(self.inner.one_way_delay());
        let delivered = departure.saturating_add(self.delay_at(departure));
        self.last_delivery = self.last_delivery.max(delivered);
        Ok(self.last_delivery)
    }

    fn mean_rate_bps(&self) -> f64 {
        self.inner.mean_rate_bps()
    }

    /// The base delay (the mean for jitter).
    fn one_way_delay(&self) -> Duration {
        self.inner.one_way_delay()
    }

    fn clone_box(&self) -> Box<dyn LinkModel> {
        Box::new(self.clone())
    }
}

/// Any model started `offset` into its own time line: a chunk handed over at link time t is
/// served as the inner model would serve it at t + offset. Starts a trace at another phase (a
/// trace's first seconds are otherwise what every run sees first).
#[derive(Debug, Clone)]
pub struct TimeShift {
    inner: Box<dyn LinkModel>,
    offset: Duration,
}

impl TimeShift {
    /// `inner` as seen from `offset` into its time line.
    pub fn new(inner: Box<dyn LinkModel>, offset: Duration) -> Self {
        Self { inner, offset }
    }
}

impl LinkModel for TimeShift {
    fn transmit(&mut self, t: Duration, bytes: usize) -> Result<Duration, TraceEnded> {
        let d = self.inner.transmit(t.saturating_add(self.offset), bytes)?;
        Ok(d.saturating_sub(self.offset))
    }

    fn mean_rate_bps(&self) -> f64 {
        self.inner.mean_rate_bps()
    }

    fn one_way_delay(&self) -> Duration {
        self.inner.one_way_delay()
    }

    fn clone_box(&self) -> Box<dyn LinkModel> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;
    use crate::model::ConstantRate;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn link(delay_ms: u64) -> Box<dyn LinkModel> {
        // 8 Mbit/s: 1000 bytes = 1 ms.
        Box::new(ConstantRate::new(
            NonZeroU64::new(8_000_000).unwrap(),
            ms(delay_ms),
        ))
    }

    #[test]
    fn jitter_has_its_mean_and_spread_and_keeps_fifo() {
        let mut l = VariableDelay::new(link(30), DelayProcess::Jitter { sd: ms(5), seed: 3 });
        let (mut last, mut extra) = (Duration::ZERO, Vec::new());
        for i in 0..20_000u64 {
            // One 1000-byte chunk every 100 ms on an idle link: leaves at t + 1 ms; no chunk
            // can overtake the one before (that would take a 100 ms = 20 sd drop).
            let t = ms(100 * i);
            let d = l.transmit(t, 1000).unwrap();
            assert!(d >= last, "FIFO");
            last = d;
            extra.push((d - t - ms(1)).as_secs_f64() * 1e3);
        }
        let mean = extra.iter().sum::<f64>() / extra.len() as f64;
        let sd =
            (extra.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / extra.len() as f64).sqrt();
        // 20k samples: sd of the mean 0.035 ms, of the sd ≈ 0.025 ms.
        assert!((mean - 30.0).abs() < 0.15, "mean one-way {mean} ms");
        assert!((sd - 5.0).abs() < 0.15, "sd {sd} ms");
        // Same seed, same delays.
        let mut again = VariableDelay::new(link(30), DelayProcess::Jitter { sd: ms(5), seed: 3 });
        assert_eq!(again.transmit(Duration::ZERO, 1000).unwrap(), {
            let mut l = VariableDelay::new(link(30), DelayProcess::Jitter { sd: ms(5), seed: 3 });
            l.transmit(Duration::ZERO, 1000).unwrap()
        });
    }

    #[test]
    fn a_time_shift_starts_the_trace_later() {
        // Second 0 is an outage, second 1 carries 8 kbit/s (1000 B/s).
        let trace =
            crate::ThroughputTrace::from_rates("t", vec![0, 8_000], ms(10), crate::TraceEnd::Loop)
                .unwrap();
        let mut plain = trace.clone();
        // From t = 0: waits out the outage, 500 B take 0.5 s of second 1.
        assert_eq!(plain.transmit(Duration::ZERO, 500).unwrap(), ms(1510));
        let mut shifted = TimeShift::new(Box::new(trace), Duration::from_secs(1));
        // Started 1 s in: no outage first.
        assert_eq!(shifted.transmit(Duration::ZERO, 500).unwrap(), ms(510));
        assert_eq!(shifted.one_way_delay(), ms(10));
    }

    #[test]
    fn rtt_trace_gives_half_the_slots_rtt_and_fills_gaps() {
        let rtt: Arc<[Option<f64>]> = vec![None, Some(80.0), None, Some(20.0)].into();
        let mut l = VariableDelay::new(
            link(30),
            DelayProcess::RttTrace {
                rtt_ms: rtt,
                slot: Duration::from_secs(1),
            },
        );
        // Slot 0 has no value and none before it... but the trace wraps: slot 3's 20 ms.
        assert_eq!(l.transmit(Duration::ZERO, 1000).unwrap(), ms(1 + 10));
        // Slot 1: 80 ms RTT → 40 ms one way.
        assert_eq!(l.transmit(ms(1000), 1000).unwrap(), ms(1001 + 40));
        // Slot 2: no value, keeps slot 1's.
        assert_eq!(l.transmit(ms(2000), 1000).unwrap(), ms(2001 + 40));
        // Slot 3: 10 ms one way; handed over right after the slot-2 chunk it would overtake.
        assert_eq!(l.transmit(ms(3000), 1000).unwrap(), ms(3001 + 10));
        let mut fifo = VariableDelay::new(
            link(30),
            DelayProcess::RttTrace {
                rtt_ms: vec![Some(200.0), Some(2.0)].into(),
                slot: ms(10),
            },
        );
        let a = fifo.transmit(ms(5), 1000).unwrap(); // leaves at 6 ms (slot 0): +100 ms
        let b = fifo.transmit(ms(12), 1000).unwrap(); // leaves at 13 ms (slot 1): +1 ms
        assert_eq!(
            (a, b),
            (ms(106), ms(106)),
            "the later chunk waits behind the earlier"
        );
    }
}
