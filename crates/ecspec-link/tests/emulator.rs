//! The real-time emulator: exact timing under tokio's paused clock (an in-memory pipe stands
//! in for the socket), then real TCP on 127.0.0.1 in real time.

use std::num::NonZeroU64;
use std::time::Duration;

use ecspec_link::{emulate, ChunkStats, ConstantRate, LinkConfig, MahimahiTrace, TraceEnd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn constant(rate_bps: u64, one_way: Duration) -> Box<ConstantRate> {
    Box::new(ConstantRate::new(
        NonZeroU64::new(rate_bps).unwrap(),
        one_way,
    ))
}

/// Under the paused clock, time only moves to timer deadlines, so every delivery happens at
/// exactly the model's time (all times here are whole ms, the timer's resolution).
#[tokio::test(start_paused = true)]
async fn deliveries_happen_at_the_model_times_pipelined() {
    let (socket, mut peer) = tokio::io::duplex(1 << 20);
    // Up: 1 Mbit/s, 10 ms. Down: 8 Mbit/s, 10 ms.
    let cfg = LinkConfig::new(constant(1_000_000, ms(10)), constant(8_000_000, ms(10)));
    let t0 = Instant::now();
    let (mut edge, counters) = emulate(socket, cfg).await;

    // t = 0: 1250 B = 10 ms of serialization, delivered at 20 ms.
    edge.write_all(&[1; 1250]).await.unwrap();
    // t = 5 ms: 1250 B wait for the link (free at 10 ms): 10..20 ms, delivered at 30 ms.
    tokio::time::sleep(ms(5)).await;
    edge.write_all(&[2; 1250]).await.unwrap();
    let mut buf = vec![0; 1250];
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!((t0.elapsed(), buf[0]), (ms(20), 1));
    // Serial sleeping would give 5 + 20 = 25 ms after the first, i.e. 45 ms; pipelined: 30.
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!((t0.elapsed(), buf[0]), (ms(30), 2));
    let up = counters.uplink();
    assert_eq!((up.bytes, up.chunks, up.in_flight_bytes), (2500, 2, 0));
    let last = up.last_chunk.unwrap();
    assert_eq!(
        last,
        ChunkStats {
            bytes: 1250,
            handed_at: ms(5),
            delivered_at: ms(30),
            backlog_bytes: 1250
        }
    );
    assert_eq!(last.transit(), ms(25));

    // Down, t = 30 ms: 1000 B = 1 ms at 8 Mbit/s, delivered at 41 ms.
    peer.write_all(&[3; 1000]).await.unwrap();
    let mut down = vec![0; 1000];
    edge.read_exact(&mut down).await.unwrap();
    assert_eq!(t0.elapsed(), ms(41));
    assert_eq!(counters.downlink_bytes(), 1000);

    // One 3000 B write leaves as two 1500 B segments of 12 ms each: 41+12+10 = 63 ms and
    // 75 ms; the receiver gets the first half before the second has been serialized.
    edge.write_all(&[4; 3000]).await.unwrap();
    let mut half = vec![0; 1500];
    peer.read_exact(&mut half).await.unwrap();
    assert_eq!(t0.elapsed(), ms(63));
    peer.read_exact(&mut half).await.unwrap();
    assert_eq!(t0.elapsed(), ms(75));
    assert_eq!(counters.uplink_bytes(), 5500);
    assert_eq!(counters.uplink().last_chunk.unwrap().transit(), ms(34));

    // Half-closes pass through, after the data.
    edge.write_all(&[5; 125]).await.unwrap(); // 1 ms: delivered at 86 ms
    edge.shutdown().await.unwrap();
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).await.unwrap();
    assert_eq!((rest.len(), t0.elapsed()), (125, ms(86)));
    peer.write_all(&[6; 10]).await.unwrap();
    drop(peer);
    let mut rest = Vec::new();
    edge.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, vec![6; 10]);
    counters.closed().await;
    assert!(counters.is_closed());
    assert_eq!(
        (counters.uplink_bytes(), counters.downlink_bytes()),
        (5625, 1010)
    );
}

/// A link with no delay and a rate beyond any message (the unshaped link of `--no-link`)
/// delivers at once: a segment already due is not put through the timer, which would round its
/// deadline up to the next millisecond tick in each direction.
#[tokio::test(start_paused = true)]
async fn an_unshaped_link_adds_no_timer_tick() {
    let (socket, mut peer) = tokio::io::duplex(1 << 20);
    let cfg = LinkConfig::constant(1e6, 1e6, 0.0).unwrap();
    let (mut edge, _counters) = emulate(socket, cfg).await;
    let t0 = Instant::now();
    for round in 0..5u8 {
        edge.write_all(&[round; 18]).await.unwrap();
        let mut buf = [0u8; 18];
        peer.read_exact(&mut buf).await.unwrap();
        peer.write_all(&buf[..10]).await.unwrap();
        let mut back = [0u8; 10];
        edge.read_exact(&mut back).await.unwrap();
        assert_eq!(back, [round; 10]);
    }
    // Five round trips in no virtual time (one timer tick each way: 10 ms).
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_mahimahi_link_delivers_at_opportunities() {
    let (socket, mut peer) = tokio::io::duplex(1 << 20);
    // Opportunities at 0, 0, 1, 2 ms, looping every 2 ms; 5 ms one way.
    let up = MahimahiTrace::parse("tiny.up", "0\n0\n1\n2\n", ms(5), TraceEnd::Loop).unwrap();
    let cfg = LinkConfig::new(Box::new(up), constant(1_000_000_000, ms(5)));
    let t0 = Instant::now();
    let (mut edge, counters) = emulate(socket, cfg).await;
    // 7500 B = 5 opportunities: 0, 0, 1, 2 and 2 (+0) ms. Segments deliver at 5, 5, 6, 7, 7.
    edge.write_all(&[7; 7500]).await.unwrap();
    let mut buf = vec![0; 3000];
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(t0.elapsed(), ms(5));
    peer.read_exact(&mut buf[..1500]).await.unwrap();
    assert_eq!(t0.elapsed(), ms(6));
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(t0.elapsed(), ms(7));
    assert_eq!(counters.uplink_bytes(), 7500);
}

#[tokio::test(start_paused = true)]
async fn a_trace_that_runs_out_fails_the_link_with_an_error() {
    let (socket, mut peer) = tokio::io::duplex(1 << 20);
    // Two opportunities (1 and 3 ms), played once: 3000 bytes in all.
    let up = MahimahiTrace::parse("short.up", "1\n3\n", ms(1), TraceEnd::Stop).unwrap();
    let cfg = LinkConfig::new(Box::new(up), constant(1_000_000, ms(1)));
    let (mut edge, counters) = emulate(socket, cfg).await;
    edge.write_all(&[0; 4000]).await.unwrap();
    let mut buf = [0; 16];
    let err = edge.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    assert!(err.to_string().contains("short.up"), "{err}");
    assert!(edge.write_all(&[0; 10]).await.is_err());
    counters.closed().await;
    // Nothing was delivered: the link failed before the first opportunity.
    assert_eq!(counters.uplink_bytes(), 0);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_edge_stream_delivers_the_uplink_then_ends_everything() {
    let (socket, mut peer) = tokio::io::duplex(1 << 20);
    let (mut edge, counters) = emulate(socket, LinkConfig::default()).await;
    edge.write_all(b"last words").await.unwrap();
    drop(edge);
    // The peer stays open and silent; the emulator still ends.
    timeout(Duration::from_secs(1), counters.closed())
        .await
        .unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last words");
    assert_eq!(counters.uplink_bytes(), 10);
}

/// An echo server on 127.0.0.1:0 for one connection: echoes what it reads as it reads it,
/// and closes after the client does.
async fn echo_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        let (mut r, mut w) = socket.split();
        let echoed = tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
        echoed
    });
    (addr, server)
}

/// Sends 12,500 B through an emulated link to an echo server and times the full echo.
async fn echo_12500(up_mbps: f64, down_mbps: f64, rtt_ms: f64) -> Duration {
    let (addr, server) = echo_server().await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut link, counters) = emulate(
        tcp,
        LinkConfig::constant(up_mbps, down_mbps, rtt_ms).unwrap(),
    )
    .await;
    let msg: Vec<u8> = (0..12_500u32).map(|i| (i % 251) as u8).collect();
    let t0 = std::time::Instant::now();
    link.write_all(&msg).await.unwrap();
    let mut back = vec![0; msg.len()];
    link.read_exact(&mut back).await.unwrap();
    let elapsed = t0.elapsed();
    assert_eq!(back, msg);
    assert_eq!(
        (counters.uplink_bytes(), counters.downlink_bytes()),
        (12_500, 12_500)
    );

    link.shutdown().await.unwrap();
    let mut rest = Vec::new();
    link.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(server.await.unwrap(), 12_500);
    timeout(Duration::from_secs(2), counters.closed())
        .await
        .unwrap();
    assert_eq!(
        (counters.uplink_bytes(), counters.downlink_bytes()),
        (12_500, 12_500)
    );
    elapsed
}

/// Tolerance for real-time measurements: a delivery is never early, and late by the timer
/// tick (1 ms) per hop plus scheduling; 15 ms covers a loaded 2-core machine.
const LATE_TOLERANCE: Duration = Duration::from_millis(15);

fn assert_close(measured: Duration, expected: Duration) {
    eprintln!("measured {measured:?}, expected {expected:?}");
    assert!(
        measured + ms(1) >= expected && measured <= expected + LATE_TOLERANCE,
        "measured {measured:?}, expected {expected:?} (−1 ms / +{LATE_TOLERANCE:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tcp_echo_takes_serialization_plus_rtt() {
    // 12,500 B at 1 Mbit/s = 100 ms up; 20 ms RTT; the downlink (1 Gbit/s) adds 12 µs for
    // the last 1500-byte segment: 120.012 ms.
    let measured = echo_12500(1.0, 1000.0, 20.0).await;
    assert_close(measured, Duration::from_micros(120_012));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tcp_echo_pipelines_both_directions() {
    // 1 Mbit/s both ways, 20 ms RTT. Up: segments of 1500 B leave every 12 ms, the last
    // (500 B) at 100 ms, each arriving 10 ms later. Down: segment k arrives at 12(k+1)+10 ms
    // and the downlink is free then, except for the last, which arrives at 110 ms, waits for
    // segment 7 to finish at 106+12 = 118 ms, takes 4 ms, and arrives 10 ms later: 132 ms.
    // (Store-and-forward of the whole message each way would take 220 ms.)
    let measured = echo_12500(1.0, 1.0, 20.0).await;
    assert_close(measured, ms(132));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_from_the_peer_reaches_the_edge_as_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        // Wait for the first bytes (so the client's connect has completed), then reset.
        let mut first = [0; 5];
        socket.read_exact(&mut first).await.unwrap();
        socket.set_zero_linger().unwrap();
        drop(socket); // sends RST
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut link, counters) = emulate(tcp, LinkConfig::constant(100.0, 100.0, 2.0).unwrap()).await;
    link.write_all(b"hello").await.unwrap();
    server.await.unwrap();
    let mut buf = [0; 16];
    let read = timeout(Duration::from_secs(2), async {
        // Keep writing so the reset is seen whichever way it arrives.
        loop {
            if link.write_all(b"hello").await.is_err() {
                return link.read(&mut buf).await;
            }
            tokio::select! {
                r = link.read(&mut buf) => return r,
                () = tokio::time::sleep(ms(5)) => {}
            }
        }
    })
    .await
    .unwrap();
    let err = read.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{err:?}"
    );
    timeout(Duration::from_secs(2), counters.closed())
        .await
        .unwrap();
}
