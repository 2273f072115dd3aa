//! Per-round edge energy (DESIGN.md §3) and a session accumulator.
//!
//! Timeline of one round, from the start of drafting (t = 0):
//! drafting `[0, d)`, uplink `[d, d+u)` with `u = 8·S_u/R_u`, waiting
//! (RTT + verification) `[d+u, d+u+w)`, downlink `[d+u+w, d+u+w+v)` with
//! `v = 8·S_d/R_d`. The round's span is `d+u+w+v`.
//!
//! Energy of the round:
//! - compute = P_c · d;
//! - radio active = Σ over transfers of P(rate) · duration, plus a promotion
//!   (P_pro · T_pro) before any transfer that starts when the radio is idle
//!   (first transfer of the session, or gap since the last transfer > T_tail);
//! - radio tail = P_tail · min(gap, T_tail) for every gap between the end of
//!   one transfer and the start of the next, **charged when the next transfer
//!   starts**. A transfer inside the tail cuts it short (resets the timer),
//!   so each second of tail is charged exactly once. The tail after the
//!   round's last transfer is charged by the next round (through its
//!   `since_prev_transfer_s`) or by [`Session::finish`];
//! - idle = P_idle · span.

use crate::radio::RadioProfile;
use crate::{DeviceProfile, EnergyError};

/// Inputs of one round. Bytes include framing; rates are in bit/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    /// Time spent drafting, s (K·t_d).
    pub drafting_s: f64,
    /// Uplink payload, bytes. Zero means no uplink transfer.
    pub uplink_bytes: u64,
    /// Uplink rate R_u, bit/s.
    pub uplink_rate_bps: f64,
    /// Waiting between the end of the uplink and the start of the downlink
    /// (RTT + cloud verification), s.
    pub waiting_s: f64,
    /// Downlink payload, bytes. Zero means no downlink transfer.
    pub downlink_bytes: u64,
    /// Downlink rate R_d, bit/s.
    pub downlink_rate_bps: f64,
    /// Seconds from the end of the last transfer before this round to the
    /// start of this round's drafting; `None` if there was none (radio idle).
    pub since_prev_transfer_s: Option<f64>,
}

/// Energy of one round, J, split by cause.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RoundEnergy {
    /// Draft compute, J.
    pub compute_j: f64,
    /// Radio while transferring, promotions included, J.
    pub radio_active_j: f64,
    /// Radio tail closed in this round, J.
    pub radio_tail_j: f64,
    /// Idle baseline over the round's span, J.
    pub idle_j: f64,
    /// Span of the round, s.
    pub span_s: f64,
    /// Seconds from the last transfer's end to the end of the round (`None`
    /// if no transfer has happened yet): the next round's
    /// `since_prev_transfer_s` when rounds are back to back.
    pub since_last_transfer_at_end_s: Option<f64>,
}

impl RoundEnergy {
    /// Total, J.
    pub fn total_j(&self) -> f64 {
        self.compute_j + self.radio_active_j + self.radio_tail_j + self.idle_j
    }

    fn add(&mut self, o: &RoundEnergy) {
        self.compute_j += o.compute_j;
        self.radio_active_j += o.radio_active_j;
        self.radio_tail_j += o.radio_tail_j;
        self.idle_j += o.idle_j;
        self.span_s += o.span_s;
    }
}

/// Edge energy model for one device, draft model and radio.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyModel {
    /// P_c while drafting, W above idle.
    pub compute_power_w: f64,
    /// Idle baseline, W.
    pub idle_power_w: f64,
    /// t_d, s/token.
    pub seconds_per_token: f64,
    /// Radio model.
    pub radio: RadioProfile,
}

fn check(field: &'static str, v: f64) -> Result<(), EnergyError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(EnergyError::InvalidInput {
            field,
            value: v,
            reason: "must be a finite number ≥ 0",
        })
    }
}

impl EnergyModel {
    /// Model for `draft_model` on `profile`, using the profile's radio.
    pub fn from_profile(profile: &DeviceProfile, draft_model: &str) -> Result<Self, EnergyError> {
        let timing =
            profile
                .draft
                .get(draft_model)
                .ok_or_else(|| EnergyError::UnknownDraftModel {
                    profile: profile.name.clone(),
                    model: draft_model.to_string(),
                })?;
        Ok(Self {
            compute_power_w: timing.compute_power_w.unwrap_or(profile.compute_power_w),
            idle_power_w: profile.idle_power_w,
            seconds_per_token: timing.seconds_per_token,
            radio: profile.radio_profile(),
        })
    }

    /// The same model with another radio (e.g. a 5G profile).
    pub fn with_radio(mut self, radio: RadioProfile) -> Self {
        self.radio = radio;
        self
    }

    /// Drafting time for `k` tokens, s (K·t_d).
    pub fn draft_time_s(&self, k: u32) -> f64 {
        f64::from(k) * self.seconds_per_token
    }

    /// Energy of one round (see the module doc for the accounting).
    pub fn round(&self, r: &Round) -> Result<RoundEnergy, EnergyError> {
        check("drafting_s", r.drafting_s)?;
        check("waiting_s", r.waiting_s)?;
        if let Some(g) = r.since_prev_transfer_s {
            check("since_prev_transfer_s", g)?;
        }
        let dur = |bytes: u64, rate: f64, field| -> Result<f64, EnergyError> {
            if bytes == 0 {
                return Ok(0.0);
            }
            if !(rate.is_finite() && rate > 0.0) {
                return Err(EnergyError::InvalidInput {
                    field,
                    value: rate,
                    reason: "must be > 0 when bytes > 0",
                });
            }
            Ok(bytes as f64 * 8.0 / rate)
        };
        let up_s = dur(r.uplink_bytes, r.uplink_rate_bps, "uplink_rate_bps")?;
        let down_s = dur(r.downlink_bytes, r.downlink_rate_bps, "downlink_rate_bps")?;
        let span_s = r.drafting_s + up_s + r.waiting_s + down_s;

        // (start, duration, power) of each transfer, times from round start.
        let mut transfers = Vec::with_capacity(2);
        if r.uplink_bytes > 0 {
            transfers.push((
                r.drafting_s,
                up_s,
                self.radio.uplink_power_w(r.uplink_rate_bps),
            ));
        }
        if r.downlink_bytes > 0 {
            let start = r.drafting_s + up_s + r.waiting_s;
            transfers.push((
                start,
                down_s,
                self.radio.downlink_power_w(r.downlink_rate_bps),
            ));
        }

        let mut e = RoundEnergy {
            compute_j: self.compute_power_w * r.drafting_s,
            idle_j: self.idle_power_w * span_s,
            span_s,
            ..RoundEnergy::default()
        };
        // End of the last transfer, relative to the round start (≤ 0 before it).
        let mut last_end = r.since_prev_transfer_s.map(|g| -g);
        for (start, d, p) in transfers {
            match last_end {
                Some(end) => {
                    let gap = start - end;
                    e.radio_tail_j += self.radio.tail_power_w * gap.min(self.radio.tail_s);
                    if gap > self.radio.tail_s {
                        e.radio_active_j += self.radio.promotion_j();
                    }
                }
                None => e.radio_active_j += self.radio.promotion_j(),
            }
            e.radio_active_j += p * d;
            last_end = Some(start + d);
        }
        e.since_last_transfer_at_end_s = last_end.map(|end| span_s - end);
        Ok(e)
    }

    /// Tail energy still owed `after_s` seconds after the last transfer, if
    /// nothing else is sent: P_tail · min(after_s, T_tail), J.
    pub fn trailing_tail_j(&self, after_s: f64) -> f64 {
        self.radio.tail_power_w * after_s.max(0.0).min(self.radio.tail_s)
    }
}

/// Accumulates a session's rounds: energy by cause and J per committed token.
#[derive(Debug, Clone)]
pub struct Session {
    model: EnergyModel,
    total: RoundEnergy,
    committed_tokens: u64,
    rounds: u64,
    since_last_transfer_s: Option<f64>,
}

impl Session {
    /// An empty session (radio idle, nothing sent yet).
    pub fn new(model: EnergyModel) -> Self {
        Self {
            model,
            total: RoundEnergy::default(),
            committed_tokens: 0,
            rounds: 0,
            since_last_transfer_s: None,
        }
    }

    /// The `since_prev_transfer_s` the next round should use if it starts
    /// `gap_s` seconds after the last recorded round ended.
    pub fn next_since_prev(&self, gap_s: f64) -> Option<f64> {
        self.since_last_transfer_s.map(|s| s + gap_s)
    }

    /// Account one round that committed `committed_tokens` tokens. The
    /// round's `since_prev_transfer_s` is used as given (the edge measures it).
    pub fn record(
        &mut self,
        round: &Round,
        committed_tokens: u64,
    ) -> Result<RoundEnergy, EnergyError> {
        let e = self.model.round(round)?;
        self.total.add(&e);
        self.committed_tokens += committed_tokens;
        self.rounds += 1;
        self.since_last_transfer_s = e.since_last_transfer_at_end_s;
        Ok(e)
    }

    /// Account `gap_s` seconds between rounds at idle power (the tail is
    /// charged by the next round, not here).
    pub fn record_gap(&mut self, gap_s: f64) -> Result<(), EnergyError> {
        check("gap_s", gap_s)?;
        self.total.idle_j += self.model.idle_power_w * gap_s;
        self.total.span_s += gap_s;
        self.since_last_transfer_s = self.since_last_transfer_s.map(|s| s + gap_s);
        Ok(())
    }

    /// Energy so far, J by cause; excludes the tail still running after the
    /// last transfer.
    pub fn energy(&self) -> RoundEnergy {
        self.total
    }

    /// Committed tokens so far.
    pub fn committed_tokens(&self) -> u64 {
        self.committed_tokens
    }

    /// Rounds recorded.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// J per committed token so far (`None` before the first token).
    pub fn joules_per_token(&self) -> Option<f64> {
        (self.committed_tokens > 0).then(|| self.total.total_j() / self.committed_tokens as f64)
    }

    /// Close the session: add the tail still owed after the last transfer
    /// (the whole tail: nothing follows) and
    /// return the final totals.
    pub fn finish(mut self) -> RoundEnergy {
        if self.since_last_transfer_s.is_some() {
            // Nothing follows, so the whole tail after the last transfer runs.
            self.total.radio_tail_j += self.model.trailing_tail_j(f64::INFINITY);
        }
        self.total
    }
}
