//! `MahimahiTrace::parse` on arbitrary text (bytes that are not UTF-8 are replaced, as a file
//! that `from_file` could not read as text never reaches the parser). A trace that parses is
//! then driven a little: a few chunks through `transmit`, looping and stopping, whose delivery
//! times must not go backwards.
#![no_main]

use std::time::Duration;

use ecspec_link::{LinkModel, MahimahiTrace, TraceEnd};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for end in [TraceEnd::Loop, TraceEnd::Stop] {
        let mut trace =
            match MahimahiTrace::parse("fuzz.trace", &text, Duration::from_millis(5), end) {
                Ok(trace) => trace,
                Err(e) => {
                    let _ = e.to_string();
                    return;
                }
            };
        assert!(trace.opportunities() > 0 && trace.period() > Duration::ZERO);
        assert!(trace.mean_rate_bps() > 0.0);
        // Chunk sizes and hand-over times from the input's bytes (times up to ~49 days of
        // link time, sizes up to 64 KiB): deliveries are FIFO.
        let mut last = Duration::ZERO;
        let mut t = Duration::ZERO;
        for w in data.chunks(4).take(8) {
            let step_ms = u64::from(w[0]) * u64::from(w.get(1).copied().unwrap_or(1));
            let bytes =
                usize::from(w.get(2).copied().unwrap_or(0)) << (w.get(3).copied().unwrap_or(0) % 9);
            t += Duration::from_millis(step_ms);
            match trace.transmit(t, bytes) {
                Ok(at) => {
                    assert!(at >= t, "delivered before it was handed over");
                    assert!(at >= last, "deliveries out of order");
                    last = at;
                }
                Err(ended) => {
                    assert_eq!(end, TraceEnd::Stop);
                    let _ = ended.to_string();
                    break;
                }
            }
        }
    }
});
