//! What a conventional draft's re-sync costs: when a new target version goes live, a draft
//! with its own embedding and head must be downloaded again (the shared-backbone static draft
//! need not; design.md §1).

/// Seconds to download a re-synced draft of `bytes` over a downlink of `down_bps` bit/s
/// (mean rate) with round-trip time `rtt_s`: 0 when there is nothing to download, else the
/// request's round trip plus the serialization, `rtt_s + bytes · 8 / down_bps` (an infinite
/// rate, an unshaped link, costs the round trip alone).
pub fn resync_seconds(bytes: u64, down_bps: f64, rtt_s: f64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        rtt_s + bytes as f64 * 8.0 / down_bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_time_is_rtt_plus_serialization() {
        // 70 786 512 bytes at 10 Mbit/s: 56.6292096 s of serialization, plus 60 ms RTT.
        let s = resync_seconds(70_786_512, 10e6, 0.060);
        assert!((s - 56.689_209_6).abs() < 1e-9, "{s}");
        assert_eq!(resync_seconds(0, 10e6, 0.060), 0.0);
        assert_eq!(resync_seconds(1_000, f64::INFINITY, 0.060), 0.060);
    }
}
