//! Link outages (`--outage AT:FOR`): from link time AT the link is down both ways for FOR
//! seconds, and the connection over it is reset, as when a phone loses its cell: what is in
//! flight is lost, the edge sees a reset, and a new connection can only be made once the link
//! is back.
//!
//! [`Outages`] is the schedule, in the link time of the generation (its first connection's
//! link time zero); [`Outages::cut`] resets one emulated link at each outage that starts during
//! its life, and [`Outages::down_until`] tells a reconnecting edge whether the link is up.

use std::time::Duration;

use tokio::time::Instant;

use crate::emulator::LinkCounters;

/// One outage: down from `at` for `duration` (link time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// When the link goes down, from link time zero.
    pub at: Duration,
    /// How long it stays down (> 0).
    pub duration: Duration,
}

impl Outage {
    /// When the link is back.
    pub fn end(&self) -> Duration {
        self.at + self.duration
    }
}

/// Longest outage accepted, and latest start: an hour (a generation does not wait longer).
pub const MAX_OUTAGE_S: f64 = 3600.0;

/// Why an `--outage` value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--outage `{value}`: {why}")]
pub struct OutageError {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl std::str::FromStr for Outage {
    type Err = OutageError;

    /// `AT:FOR`, seconds (decimals allowed): `1.0:2.0` is down from 1 s to 3 s.
    fn from_str(s: &str) -> Result<Self, OutageError> {
        let bad = |why: &str| OutageError {
            value: s.to_string(),
            why: why.to_string(),
        };
        let (at, dur) = s
            .split_once(':')
            .ok_or_else(|| bad("expected AT:FOR in seconds, e.g. 1.0:2.0"))?;
        let secs = |x: &str, what: &str, zero_ok: bool| -> Result<Duration, OutageError> {
            let v: f64 = x
                .trim()
                .parse()
                .map_err(|_| bad(&format!("{what} `{x}` is not a number of seconds")))?;
            let ok = v.is_finite() && v <= MAX_OUTAGE_S && (v > 0.0 || (zero_ok && v == 0.0));
            if !ok {
                let range = if zero_ok { "from 0" } else { "above 0" };
                return Err(bad(&format!(
                    "{what} must be {range} to {MAX_OUTAGE_S} s, got {x}"
                )));
            }
            Ok(Duration::from_secs_f64(v))
        };
        Ok(Outage {
            at: secs(at, "AT", true)?,
            duration: secs(dur, "FOR", false)?,
        })
    }
}

/// A generation's outages, in start order, none overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outages {
    list: Vec<Outage>,
}

impl Outages {
    /// The schedule of `outages` (any order).
    ///
    /// # Errors
    /// Two outages overlap (one starts before the other ends).
    pub fn new(mut outages: Vec<Outage>) -> Result<Self, OutageError> {
        outages.sort_by_key(|o| o.at);
        for w in outages.windows(2) {
            if w[1].at < w[0].end() {
                return Err(OutageError {
                    value: format!("{}:{}", w[1].at.as_secs_f64(), w[1].duration.as_secs_f64()),
                    why: format!(
                        "starts before the outage at {} s ends ({} s)",
                        w[0].at.as_secs_f64(),
                        w[0].end().as_secs_f64()
                    ),
                });
            }
        }
        Ok(Self { list: outages })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The outages, in start order.
    pub fn list(&self) -> &[Outage] {
        &self.list
    }

    /// When the link is back, if it is down at link time `t`.
    pub fn down_until(&self, t: Duration) -> Option<Duration> {
        self.list
            .iter()
            .find(|o| o.at <= t && t < o.end())
            .map(Outage::end)
    }

    /// Resets `link` (a connection made at link time `opened`, measured from `origin`) at the
    /// start of each outage after `opened`: a task on the current runtime that sleeps until
    /// the next one and cuts the link ([`LinkCounters::cut`]); it ends with the link.
    pub fn cut(&self, link: LinkCounters, origin: Instant) {
        let opened = origin.elapsed();
        let Some(next) = self.list.iter().find(|o| o.at >= opened).copied() else {
            return;
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(origin + next.at) => link.cut(format!(
                    "link outage at {:.3} s (down for {:.3} s): connection reset",
                    next.at.as_secs_f64(),
                    next.duration.as_secs_f64()
                )),
                _ = link.closed() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_parse_and_bad_ones_say_why() {
        let o: Outage = "1.0:2.5".parse().unwrap();
        assert_eq!(o.at, Duration::from_secs(1));
        assert_eq!(o.end(), Duration::from_millis(3500));
        let e = |s: &str| s.parse::<Outage>().unwrap_err().to_string();
        assert_eq!(
            e("1"),
            "--outage `1`: expected AT:FOR in seconds, e.g. 1.0:2.0"
        );
        assert_eq!(
            e("x:1"),
            "--outage `x:1`: AT `x` is not a number of seconds"
        );
        assert_eq!(
            e("1:0"),
            "--outage `1:0`: FOR must be above 0 to 3600 s, got 0"
        );
        assert_eq!(
            e("-1:2"),
            "--outage `-1:2`: AT must be from 0 to 3600 s, got -1"
        );
        assert_eq!(
            e("1:inf"),
            "--outage `1:inf`: FOR must be above 0 to 3600 s, got inf"
        );
        let overlap = Outages::new(vec!["1:2".parse().unwrap(), "2.5:1".parse().unwrap()]);
        assert_eq!(
            overlap.unwrap_err().to_string(),
            "--outage `2.5:1`: starts before the outage at 1 s ends (3 s)"
        );
    }

    #[test]
    fn down_until_covers_each_outage_half_open() {
        let o = Outages::new(vec!["3:1".parse().unwrap(), "1:0.5".parse().unwrap()]).unwrap();
        let s = Duration::from_secs_f64;
        assert_eq!(o.down_until(s(0.99)), None);
        assert_eq!(o.down_until(s(1.0)), Some(s(1.5)));
        assert_eq!(o.down_until(s(1.5)), None);
        assert_eq!(o.down_until(s(3.2)), Some(s(4.0)));
    }
}
