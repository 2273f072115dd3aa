//! The verifier server end to end on tiny random-weight models: the real [`serve`] on
//! 127.0.0.1:0, the real edge ([`generate`], directly over TCP or through the emulated link),
//! and raw-byte clients for protocol violations.
//!
//! Expected values are computed without the code under test: the target's greedy tokens with
//! a plain [`Session`] fed one token at a time, speculative rounds replayed with a fresh draft
//! session per round, frame sizes with [`frame_len`] of messages built here.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use ecspec_cloud::{serve, serve_stream, CloudModel, CloudServer, ServerConfig};
use ecspec_edge::{generate, DraftSampling, Drafter, EdgeConfig, EdgeError, Mode, Summary};
use ecspec_link::{emulate, LinkConfig};
use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{Draft, DraftSpec, LoadedModel, LogitsFor, Session, Transformer};
use ecspec_proto::{
    decode_frame, encode_frame, frame_len, Close, CompactDist as WireDist, DraftBlock, ErrorCode,
    Hello, HelloAck, Message, Verdict, VerifyMode, MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use ecspec_spec::parse_policy;
use ecspec_spec::sampling::{argmax, SamplingParams};
use ecspec_spec::verify::VerifyRule;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

const FAMILY: &str = "tiny-llama";
const VERSION: &str = "v0";
/// The tiny vocabulary: 256 byte symbols, `ab`, `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`.
const VOCAB: usize = 260;
/// `<|endoftext|>` and `<|im_end|>`.
const STOPS: [u32; 2] = [257, 259];
const LAYERS: usize = 4;
/// Longest any single test may wait for the server.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Fixtures: models, server, edge runs.
// ---------------------------------------------------------------------------------------------

struct Models {
    target: LoadedModel,
    /// Shared-backbone draft with k = layers − 1: its anchor is a copy of the last layer, so it
    /// is the target itself (greedy acceptance 1).
    same: Draft,
    /// Shared-backbone draft with k = 2 of 4 layers: right some of the time.
    partial: Draft,
    /// An independent 2-layer draft with another seed and the same vocabulary (low acceptance).
    indep: Draft,
    /// A model with other base weights: a shared-backbone draft built on it is incompatible.
    other: LoadedModel,
}

fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| {
        // Candle's matmul barrier pool spins its workers, and the attention's rayon pool
        // wakes threads on every layer: with these tiny models and a busy 2-core machine
        // (other builds, two compute threads per session here) a forward pass then waits on
        // descheduled threads and this file takes minutes instead of seconds. Both pools are
        // sized from the environment when first used, which is after this (every test
        // reaches the models before any forward pass); results do not depend on thread counts.
        for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
            if std::env::var_os(var).is_none() {
                std::env::set_var(var, "1");
            }
        }
        let dir =
            std::env::temp_dir().join(format!("ecspec-cloud-server-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |name: &str, spec: TinySpec| {
            let path = dir.join(name);
            write_tiny_model(&path, spec).unwrap();
            LoadedModel::load(&path).unwrap()
        };
        let target = load(
            "target.gguf",
            TinySpec {
                seed: 11,
                layers: LAYERS,
                ..Default::default()
            },
        );
        let indep_model = load(
            "indep.gguf",
            TinySpec {
                seed: 12,
                layers: 2,
                ..Default::default()
            },
        );
        let other = load(
            "other.gguf",
            TinySpec {
                seed: 13,
                layers: LAYERS,
                ..Default::default()
            },
        );
        let _ = std::fs::remove_dir_all(&dir);
        let same = Draft::build(
            &DraftSpec::SharedBackbone {
                shared_layers: LAYERS - 1,
            },
            &target,
        )
        .unwrap();
        let partial =
            Draft::build(&DraftSpec::SharedBackbone { shared_layers: 2 }, &target).unwrap();
        let indep = Draft::build(&DraftSpec::Independent, &indep_model).unwrap();
        assert_eq!(target.transformer.config().vocab_size, VOCAB);
        assert_eq!(target.tokenizer.stop_tokens(), STOPS);
        assert_ne!(
            other.base_hash, target.base_hash,
            "another seed is another base"
        );
        Models {
            target,
            same,
            partial,
            indep,
            other,
        }
    })
}

fn ids(text: &str) -> Vec<u32> {
    // Byte-level symbols are in byte order, so a byte's id is its value.
    text.bytes().map(u32::from).collect()
}

/// Prompts used throughout: plain bytes, a chat-like prompt with control tokens, one token.
fn prompts() -> Vec<Vec<u32>> {
    let mut chat = vec![258];
    chat.extend(ids("user\nWhy is the sky blue?"));
    chat.extend([259, 10, 258]);
    chat.extend(ids("assistant\n"));
    vec![ids("Hello, world! "), chat, vec![256]]
}

/// A server on 127.0.0.1:0, stopped with [`Cloud::stop`].
struct Cloud {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Cloud {
    async fn start(config: ServerConfig) -> Self {
        let server = CloudServer::new(CloudModel::new(FAMILY, VERSION, &models().target), config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, server, async {
            let _ = rx.await;
        }));
        Self { addr, stop, task }
    }

    async fn default() -> Self {
        Self::start(ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            ..Default::default()
        })
        .await
    }

    /// Shuts the server down; it must return within its grace period.
    async fn stop(self) {
        let _ = self.stop.send(());
        timeout(PATIENCE, self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DraftChoice {
    Same,
    Partial,
    Independent,
}

impl DraftChoice {
    fn draft(self) -> &'static Draft {
        match self {
            DraftChoice::Same => &models().same,
            DraftChoice::Partial => &models().partial,
            DraftChoice::Independent => &models().indep,
        }
    }
}

/// One edge generation's settings.
#[derive(Debug, Clone)]
struct Run {
    prompt: Vec<u32>,
    mode: Mode,
    draft: DraftChoice,
    rule: VerifyRule,
    params: SamplingParams,
    policy: &'static str,
    max_new: usize,
    /// Emulated constant link: (uplink Mbit/s, downlink Mbit/s, RTT ms); `None`: plain TCP.
    link: Option<(f64, f64, f64)>,
    /// Rejection mode: compact distribution top-k and bits.
    dist: (usize, u8),
    /// Energy-aware drafting.
    energy: Option<ecspec_edge::EnergyControl>,
    /// Channel-aware match/rejection choice per round.
    verify_switch: Option<ecspec_spec::verify_mode::VerifySelector>,
    /// Pipelined drafting.
    pipeline: bool,
    /// What earlier requests left.
    memory: Option<ecspec_edge::SessionMemory>,
    acceptance_prior: Option<f64>,
    /// Where drafted tokens come from.
    drafter: ecspec_edge::DraftSource,
}

impl Run {
    fn greedy(prompt: &[u32], draft: DraftChoice, policy: &'static str, max_new: usize) -> Self {
        Self {
            prompt: prompt.to_vec(),
            mode: Mode::Speculative,
            draft,
            rule: VerifyRule::Greedy,
            params: SamplingParams::greedy(7),
            policy,
            max_new,
            link: None,
            dist: (16, 8),
            energy: None,
            verify_switch: None,
            pipeline: false,
            memory: None,
            acceptance_prior: None,
            drafter: ecspec_edge::DraftSource::Model,
        }
    }

    fn cloud_only(prompt: &[u32], max_new: usize) -> Self {
        Self {
            mode: Mode::CloudOnly,
            policy: "fixed:0",
            ..Self::greedy(prompt, DraftChoice::Same, "fixed:0", max_new)
        }
    }

    fn sampled(
        prompt: &[u32],
        draft: DraftChoice,
        rule: VerifyRule,
        seed: u64,
        max_new: usize,
    ) -> Self {
        Self {
            rule,
            params: sampled_params(seed),
            ..Self::greedy(prompt, draft, "fixed:4", max_new)
        }
    }

    fn config(&self) -> EdgeConfig {
        let d = self.draft.draft();
        EdgeConfig {
            family: FAMILY.into(),
            draft_kind: d.kind.as_str().into(),
            compat_hash: d.compat_hash.clone(),
            rule: self.rule,
            params: self.params,
            max_new_tokens: self.max_new,
            mode: self.mode,
            policy: match self.policy {
                "test:alternate-stream" => Box::new(AlternateStream(false)),
                p => parse_policy(p).unwrap(),
            },
            timeout: PATIENCE,
            vocab_size: d.transformer.config().vocab_size,
            energy: self.energy.clone(),
            verify_switch: self.verify_switch.clone(),
            pipeline: self.pipeline,
            memory: self.memory.clone(),
            acceptance_prior: self.acceptance_prior,
            virtual_compute: None,
            drafter: self.drafter,
            lookup: ecspec_edge::Lookup::default(),
            load_aware: true,
        }
    }

    fn drafter(&self) -> Option<Drafter> {
        (self.mode == Mode::Speculative).then(|| {
            let sampling = DraftSampling {
                rule: self.rule,
                params: self.params,
                dist_top_k: self.dist.0,
                dist_bits: self.dist.1,
            };
            Drafter::new(
                Session::new(self.draft.draft().transformer.clone()),
                sampling,
            )
        })
    }

    /// The Hello the edge must send for this run.
    fn hello(&self) -> Hello {
        let d = self.draft.draft();
        Hello {
            protocol_version: u32::from(PROTOCOL_VERSION),
            model_family: FAMILY.into(),
            base_hash: d.compat_hash.clone(),
            draft_kind: d.kind.as_str().into(),
            temperature: self.params.temperature,
            top_p: self.params.top_p,
            top_k: self.params.top_k as u32,
            seed: self.params.seed,
            verify_mode: verify_mode(self.rule) as i32,
            max_new_tokens: self.max_new as u32,
            prompt: self.prompt.clone(),
            autoregressive: self.mode == Mode::CloudOnly,
            stream: 0,
        }
    }
}

/// Temperature 0.8, no truncation.
fn sampled_params(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 0.8,
        top_p: 1.0,
        top_k: 0,
        seed,
    }
}

fn verify_mode(rule: VerifyRule) -> VerifyMode {
    match rule {
        VerifyRule::Greedy => VerifyMode::Greedy,
        VerifyRule::Match => VerifyMode::Match,
        VerifyRule::Rejection => VerifyMode::Rejection,
    }
}

/// Records every byte the edge writes and reads, between the edge and its stream.
struct Tap<S> {
    inner: S,
    sent: Arc<Mutex<Vec<u8>>>,
    received: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.received
                .lock()
                .unwrap()
                .extend_from_slice(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.sent.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What one edge generation produced.
struct Outcome {
    result: Result<Summary, EdgeError>,
    /// Tokens handed to the commit callback, in order.
    committed: Vec<u32>,
    /// Bytes the edge wrote / read.
    sent: Vec<u8>,
    received: Vec<u8>,
}

impl Outcome {
    fn summary(&self) -> &Summary {
        match &self.result {
            Ok(s) => s,
            Err(e) => panic!("generation failed: {e}"),
        }
    }
}

async fn run_edge(addr: SocketAddr, run: &Run) -> Outcome {
    run_edge_with(addr, run, |_| {}).await
}

/// Runs one generation against `addr`; `tweak` may change the edge's settings.
async fn run_edge_with(
    addr: SocketAddr,
    run: &Run,
    tweak: impl FnOnce(&mut EdgeConfig),
) -> Outcome {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    run_edge_over(tcp, run, tweak).await
}

/// Runs one generation over `tcp`, any byte stream to a server (an in-memory pipe to
/// [`serve_stream`] on the virtual clock, say).
async fn run_edge_over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    tcp: S,
    run: &Run,
    tweak: impl FnOnce(&mut EdgeConfig),
) -> Outcome {
    let mut cfg = run.config();
    tweak(&mut cfg);
    let (sent, received) = (Arc::default(), Arc::default());
    let mut committed = Vec::new();
    let mut on_commit = |t: &[u32]| committed.extend_from_slice(t);
    let fut = async {
        match run.link {
            Some((up, down, rtt)) => {
                let (s, counters) =
                    emulate(tcp, LinkConfig::constant(up, down, rtt).unwrap()).await;
                let tap = Tap {
                    inner: s,
                    sent: Arc::clone(&sent),
                    received: Arc::clone(&received),
                };
                generate(
                    tap,
                    Some(counters),
                    cfg,
                    run.drafter(),
                    run.prompt.clone(),
                    &mut on_commit,
                )
                .await
            }
            None => {
                let tap = Tap {
                    inner: tcp,
                    sent: Arc::clone(&sent),
                    received: Arc::clone(&received),
                };
                generate(
                    tap,
                    None,
                    cfg,
                    run.drafter(),
                    run.prompt.clone(),
                    &mut on_commit,
                )
                .await
            }
        }
    };
    let result = timeout(PATIENCE * 3, fut)
        .await
        .expect("the generation hung");
    let (sent, received) = (
        sent.lock().unwrap().clone(),
        received.lock().unwrap().clone(),
    );
    if let Ok(s) = &result {
        assert_eq!(
            committed, s.tokens,
            "the callback saw exactly the committed tokens"
        );
    }
    Outcome {
        result,
        committed,
        sent,
        received,
    }
}

// ---------------------------------------------------------------------------------------------
// Independent references.
// ---------------------------------------------------------------------------------------------

/// The target's own greedy continuation of `prompt`: `n` tokens, every token (prompt
/// included) fed on its own; stop tokens are not special here.
fn greedy_reference(model: &Arc<Transformer>, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = Session::new(model.clone());
    let mut row = Vec::new();
    for &t in prompt {
        row = s.forward(&[t], LogitsFor::Last).unwrap().last().to_vec();
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let t = argmax(&row);
        out.push(t);
        row = s.forward(&[t], LogitsFor::Last).unwrap().last().to_vec();
    }
    out
}

/// A reference long enough for any budget up to `max_new` plus a round of drafts.
fn reference(prompt: &[u32], max_new: usize) -> Vec<u32> {
    greedy_reference(&models().target.transformer, prompt, max_new + 70)
}

/// What the cloud commits under a budget: the reference up to the first stop token or
/// `max_new` tokens.
fn expected_output(reference: &[u32], max_new: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for &t in reference {
        out.push(t);
        if STOPS.contains(&t) || out.len() == max_new {
            break;
        }
    }
    out
}

/// The draft's greedy `k` tokens after `context`, from a fresh session.
fn draft_greedy(draft: &Arc<Transformer>, context: &[u32], k: usize) -> Vec<u32> {
    let mut s = Session::new(draft.clone());
    let mut row = s.forward(context, LogitsFor::Last).unwrap().last().to_vec();
    let mut out = Vec::with_capacity(k);
    for i in 0..k {
        let t = argmax(&row);
        out.push(t);
        if i + 1 < k {
            row = s.forward(&[t], LogitsFor::Last).unwrap().last().to_vec();
        }
    }
    out
}

/// One replayed greedy round.
#[derive(Debug, Clone, PartialEq)]
struct Replay {
    drafted: Vec<u32>,
    accepted: usize,
    next_token: u32,
    finished: bool,
}

/// Replays greedy speculative decoding for the draft lengths `ks` the edge chose: each round
/// the draft's greedy tokens after the committed sequence are accepted while they equal the
/// target's greedy tokens, then the target's token; everything cut at the first stop token or
/// at `max_new` (lowering `accepted`).
fn replay_greedy(
    draft: &Arc<Transformer>,
    prompt: &[u32],
    reference: &[u32],
    ks: &[usize],
    max_new: usize,
) -> Vec<Replay> {
    let mut generated = vec![reference[0]];
    let mut finished = STOPS.contains(&reference[0]) || max_new == 1;
    let mut rounds = Vec::new();
    for &k in ks {
        assert!(!finished, "the edge ran a round after the end");
        let g = generated.len();
        let context: Vec<u32> = prompt.iter().chain(&generated).copied().collect();
        let drafted = draft_greedy(draft, &context, k);
        let raw = drafted
            .iter()
            .zip(&reference[g..])
            .take_while(|(d, r)| d == r)
            .count();
        let mut pushed = 0;
        for &t in &reference[g..=g + raw] {
            generated.push(t);
            pushed += 1;
            if STOPS.contains(&t) || generated.len() >= max_new {
                finished = true;
                break;
            }
        }
        rounds.push(Replay {
            drafted,
            accepted: pushed - 1,
            next_token: generated[g + pushed - 1],
            finished,
        });
    }
    assert!(finished, "the edge stopped before the end");
    rounds
}

/// Checks the summary's counters against its own round records.
fn check_counters(s: &Summary) {
    let recs = &s.round_records;
    assert_eq!(s.rounds, recs.len() as u64);
    assert_eq!(s.target_forward_passes, s.rounds + 1);
    assert_eq!(
        s.drafted_tokens,
        recs.iter().map(|r| r.k as u64).sum::<u64>()
    );
    assert_eq!(
        s.accepted_tokens,
        recs.iter().map(|r| r.accepted as u64).sum::<u64>()
    );
    assert!(recs.iter().all(|r| r.accepted <= r.k));
    assert_eq!(s.generated_tokens, s.tokens.len());
    // The first token comes with the HelloAck; every round commits accepted + 1.
    assert_eq!(s.generated_tokens as u64, 1 + s.rounds + s.accepted_tokens);
    assert_eq!(
        recs.iter().map(|r| r.round).collect::<Vec<_>>(),
        (1..=recs.len() as u32).collect::<Vec<_>>()
    );
    if s.accepted_tokens > 0 {
        assert!(
            s.rounds < s.generated_tokens as u64 - 1,
            "accepted drafts save target rounds"
        );
    }
}

fn decode_all(bytes: &[u8]) -> Vec<(u32, Message)> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = decode_frame(&mut buf).expect("valid frames") {
        out.push(f);
    }
    assert!(
        buf.is_empty(),
        "{} bytes after the last whole frame",
        buf.len()
    );
    out
}

/// Compute time the edge recorded, back in the Verdict's microseconds.
fn compute_us(seconds: f64) -> u32 {
    (seconds * 1e6).round() as u32
}

// ---------------------------------------------------------------------------------------------
// 1. Lossless greedy decoding.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_speculative_equals_cloud_only_equals_the_targets_own_greedy_tokens() {
    let cloud = Cloud::default().await;
    let max_new = 40;
    // (drafted, accepted) over all runs of each draft.
    let (mut same, mut partial, mut indep) = ((0, 0), (0, 0), (0, 0));
    // Rounds that accepted some drafts but not all: the draft rolls back to the middle.
    let mut partial_rounds = 0;
    for prompt in prompts() {
        let reference = reference(&prompt, max_new);
        let expected = expected_output(&reference, max_new);

        let c = run_edge(cloud.addr, &Run::cloud_only(&prompt, max_new)).await;
        let s = c.summary();
        assert_eq!(
            s.tokens, expected,
            "cloud-only output is the target's greedy output"
        );
        check_counters(s);
        assert_eq!(
            s.rounds as usize,
            expected.len() - 1,
            "one target pass per token"
        );
        assert_eq!(
            (s.drafted_tokens, s.mode.as_str(), s.target_version.as_str()),
            (0, "cloud-only", VERSION)
        );

        for draft in [
            DraftChoice::Same,
            DraftChoice::Partial,
            DraftChoice::Independent,
        ] {
            for policy in [
                "fixed:1",
                "fixed:4",
                "adaptive",
                "adaptive:6+p-min:0.5",
                "ucb:4",
                "ecspec:4:8",
            ] {
                let run = Run::greedy(&prompt, draft, policy, max_new);
                let o = run_edge(cloud.addr, &run).await;
                let s = o.summary();
                let what = format!("{draft:?} {policy} prompt {prompt:?}");
                assert_eq!(s.tokens, expected, "{what}: speculative output differs");
                check_counters(s);
                let ks: Vec<usize> = s.round_records.iter().map(|r| r.k).collect();
                match policy {
                    "fixed:1" => assert!(ks.iter().all(|&k| k == 1), "{what}: {ks:?}"),
                    "fixed:4" => assert!(ks.iter().all(|&k| k == 4), "{what}: {ks:?}"),
                    "adaptive:6+p-min:0.5" => {
                        assert!(ks.iter().all(|&k| (1..=6).contains(&k)), "{what}: {ks:?}")
                    }
                    "ecspec:4:8" => {
                        assert!(ks.iter().all(|&k| k <= 4), "{what}: {ks:?}")
                    }
                    "ucb:4" => {
                        // The bandit tries every arm first (the budget may cut the last).
                        assert_eq!(&ks[..3], &[1, 2, 3], "{what}");
                        assert!(ks.iter().all(|&k| (1..=4).contains(&k)), "{what}: {ks:?}")
                    }
                    _ => assert!(ks.iter().all(|&k| (1..=8).contains(&k)), "{what}: {ks:?}"),
                }
                // Every round's acceptance is what an independent replay predicts.
                let replay = replay_greedy(
                    &draft.draft().transformer,
                    &prompt,
                    &reference,
                    &ks,
                    max_new,
                );
                let got: Vec<usize> = s.round_records.iter().map(|r| r.accepted).collect();
                let want: Vec<usize> = replay.iter().map(|r| r.accepted).collect();
                assert_eq!(got, want, "{what}: accepted per round");
                if draft == DraftChoice::Same {
                    // The draft is the target: everything accepted but what the budget cut.
                    let (last, full) = s.round_records.split_last().unwrap();
                    assert!(full.iter().all(|r| r.accepted == r.k), "{what}");
                    let remaining =
                        expected.len() - 1 - full.iter().map(|r| r.k + 1).sum::<usize>();
                    assert_eq!(
                        last.accepted,
                        remaining - 1,
                        "{what}: last round cut to the budget"
                    );
                    same = (same.0 + s.drafted_tokens, same.1 + s.accepted_tokens);
                } else if draft == DraftChoice::Partial {
                    partial = (partial.0 + s.drafted_tokens, partial.1 + s.accepted_tokens);
                    partial_rounds += s
                        .round_records
                        .iter()
                        .filter(|r| 0 < r.accepted && r.accepted < r.k)
                        .count();
                } else {
                    indep = (indep.0 + s.drafted_tokens, indep.1 + s.accepted_tokens);
                }
            }
        }
        // Greedy-equivalent rules: match and rejection at temperature 0 are greedy too.
        for rule in [VerifyRule::Match, VerifyRule::Rejection] {
            let run = Run {
                rule,
                ..Run::greedy(&prompt, DraftChoice::Partial, "fixed:3", max_new)
            };
            assert_eq!(
                run_edge(cloud.addr, &run).await.summary().tokens,
                expected,
                "{rule:?} at T = 0"
            );
        }
    }
    let same_rate = same.1 as f64 / same.0 as f64;
    let indep_rate = indep.1 as f64 / indep.0 as f64;
    let partial_rate = partial.1 as f64 / partial.0 as f64;
    assert!(
        same_rate > 0.85,
        "the target as its own draft loses only the cut drafts: {same_rate}"
    );
    assert!(
        indep_rate < 0.05,
        "an unrelated random draft is rarely right: {indep_rate}"
    );
    assert!(
        indep_rate < partial_rate && partial_rate < same_rate,
        "{indep_rate} {partial_rate} {same_rate}"
    );
    assert!(partial_rounds > 0, "some rounds accept part of the block");
    cloud.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Byte accounting.
// ---------------------------------------------------------------------------------------------

/// A fast emulated link: 50 Mbit/s each way, 2 ms RTT.
const FAST_LINK: Option<(f64, f64, f64)> = Some((50.0, 50.0, 2.0));

/// The HelloAck of an accepted session of this server, first token `first`.
fn expected_ack(session_id: u64, first: u32, finished: bool, prefill_us: u32) -> HelloAck {
    HelloAck {
        accepted: true,
        reason: String::new(),
        session_id,
        target_version: VERSION.into(),
        vocab_size: VOCAB as u32,
        eos_token_ids: STOPS.to_vec(),
        first_token: first,
        finished,
        prefill_us,
        queue_us: 0,
    }
}

/// The prefill time the cloud reported, read from the one field of the HelloAck the test
/// cannot know (it is a measurement).
fn prefill_us(received: &[u8]) -> u32 {
    match decode_all(received).first() {
        Some((_, Message::HelloAck(a))) => a.prefill_us,
        other => panic!("expected a HelloAck first, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_byte_counts_equal_the_frames_on_the_wire() {
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let max_new = 23;
    let reference = reference(&prompt, max_new);
    let expected = expected_output(&reference, max_new);
    let mut session_id = 0;

    // Greedy speculative: every frame is predictable from the replay.
    for (draft, policy) in [
        (DraftChoice::Partial, "fixed:3"),
        (DraftChoice::Same, "fixed:5"),
        (DraftChoice::Independent, "adaptive"),
    ] {
        session_id += 1;
        let run = Run {
            link: FAST_LINK,
            ..Run::greedy(&prompt, draft, policy, max_new)
        };
        let o = run_edge(cloud.addr, &run).await;
        let s = o.summary();
        assert_eq!(s.tokens, expected);
        let ks: Vec<usize> = s.round_records.iter().map(|r| r.k).collect();
        let replay = replay_greedy(
            &draft.draft().transformer,
            &prompt,
            &reference,
            &ks,
            max_new,
        );

        let hello = Message::Hello(run.hello());
        let blocks: Vec<Message> = replay
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Message::DraftBlock(DraftBlock {
                    round: i as u32 + 1,
                    tokens: r.drafted.clone(),
                    dists: vec![],
                    stream: 0,
                })
            })
            .collect();
        let close = Message::Close(Close {});
        let up =
            frame_len(&hello) + blocks.iter().map(frame_len).sum::<usize>() + frame_len(&close);
        assert_eq!(
            s.uplink_bytes, up as u64,
            "{draft:?} {policy}: uplink = Hello + DraftBlocks + Close"
        );

        let ack = Message::HelloAck(expected_ack(
            session_id,
            expected[0],
            false,
            prefill_us(&o.received),
        ));
        let verdicts: Vec<Message> = replay
            .iter()
            .zip(&s.round_records)
            .map(|(r, rec)| {
                Message::Verdict(Verdict {
                    round: rec.round,
                    accepted: r.accepted as u32,
                    next_token: r.next_token,
                    finished: r.finished,
                    compute_us: compute_us(rec.cloud_compute_s),
                    row_cost_us: 0,
                })
            })
            .collect();
        let down = frame_len(&ack) + verdicts.iter().map(frame_len).sum::<usize>();
        assert_eq!(
            s.downlink_bytes, down as u64,
            "{draft:?} {policy}: downlink = HelloAck + Verdicts"
        );

        // Per round: exactly that round's DraftBlock up and Verdict down.
        for ((rec, b), v) in s.round_records.iter().zip(&blocks).zip(&verdicts) {
            assert_eq!(
                (rec.uplink_bytes, rec.downlink_bytes),
                (frame_len(b) as u64, frame_len(v) as u64),
                "round {}",
                rec.round
            );
        }
        // And the frames themselves are those messages, byte for byte.
        let sent: Vec<Message> = decode_all(&o.sent).into_iter().map(|(_, m)| m).collect();
        let want: Vec<Message> = std::iter::once(hello)
            .chain(blocks)
            .chain([close])
            .collect();
        assert_eq!(sent, want);
        let got: Vec<Message> = decode_all(&o.received)
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            got,
            std::iter::once(ack).chain(verdicts).collect::<Vec<_>>()
        );
        assert_eq!(
            (o.sent.len() as u64, o.received.len() as u64),
            (s.uplink_bytes, s.downlink_bytes)
        );
    }

    // Cloud-only: Hello and Close up; HelloAck and one Verdict per further token down.
    session_id += 1;
    let run = Run {
        link: FAST_LINK,
        ..Run::cloud_only(&prompt, max_new)
    };
    let o = run_edge(cloud.addr, &run).await;
    let s = o.summary();
    assert_eq!(s.tokens, expected);
    let up = frame_len(&Message::Hello(run.hello())) + frame_len(&Message::Close(Close {}));
    assert_eq!(s.uplink_bytes, up as u64);
    let ack = Message::HelloAck(expected_ack(
        session_id,
        expected[0],
        false,
        prefill_us(&o.received),
    ));
    let n = s.round_records.len();
    let verdicts: usize = s
        .round_records
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            frame_len(&Message::Verdict(Verdict {
                round: rec.round,
                accepted: 0,
                next_token: expected[i + 1],
                finished: i + 1 == n,
                compute_us: compute_us(rec.cloud_compute_s),
                row_cost_us: 0,
            }))
        })
        .sum();
    assert_eq!(s.downlink_bytes, (frame_len(&ack) + verdicts) as u64);

    // Rejection sampling: each block carries one compact distribution per drafted token.
    session_id += 1;
    let run = Run {
        link: FAST_LINK,
        dist: (16, 8),
        ..Run::sampled(
            &prompt,
            DraftChoice::Same,
            VerifyRule::Rejection,
            3,
            max_new,
        )
    };
    let o = run_edge(cloud.addr, &run).await;
    let s = o.summary();
    let sent = decode_all(&o.sent);
    assert_eq!(sent.len(), s.round_records.len() + 2);
    assert_eq!(sent[0].1, Message::Hello(run.hello()));
    assert_eq!(sent.last().unwrap().1, Message::Close(Close {}));
    let mut pos = 1; // the first token came with the HelloAck
    for ((_, m), rec) in sent[1..sent.len() - 1].iter().zip(&s.round_records) {
        let Message::DraftBlock(b) = m else {
            panic!("expected a DraftBlock, got {m:?}")
        };
        assert_eq!(
            (b.round, b.tokens.len(), b.dists.len()),
            (rec.round, rec.k, rec.k)
        );
        for (t, d) in b.tokens.iter().zip(&b.dists) {
            assert!(
                d.ids.contains(t) && d.ids.len() <= 16 && d.bits == 8,
                "{d:?}"
            );
        }
        assert_eq!(
            b.tokens[..rec.accepted],
            s.tokens[pos..pos + rec.accepted],
            "accepted drafts are committed"
        );
        assert_eq!(rec.uplink_bytes, frame_len(m) as u64);
        pos += rec.accepted + 1;
    }
    assert_eq!(pos, s.tokens.len());
    let up: usize = sent.iter().map(|(_, m)| frame_len(m)).sum();
    assert_eq!(s.uplink_bytes, up as u64);
    let received = decode_all(&o.received);
    let ack = Message::HelloAck(expected_ack(
        session_id,
        s.tokens[0],
        false,
        prefill_us(&o.received),
    ));
    assert_eq!(received[0].1, ack);
    let down: usize = received.iter().map(|(_, m)| frame_len(m)).sum();
    assert_eq!(s.downlink_bytes, down as u64);
    assert_eq!(
        (o.sent.len() as u64, o.received.len() as u64),
        (s.uplink_bytes, s.downlink_bytes)
    );
    cloud.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Sampling.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_generation_completes_in_vocabulary_and_is_deterministic_per_seed() {
    let cloud = Cloud::default().await;
    let max_new = 32;
    let prompt = prompts()[0].clone();
    let mut outputs = Vec::new();
    for rule in [VerifyRule::Match, VerifyRule::Rejection] {
        for draft in [DraftChoice::Same, DraftChoice::Independent] {
            let mut run = Run::sampled(&prompt, draft, rule, 42, max_new);
            if (rule, draft) == (VerifyRule::Rejection, DraftChoice::Same) {
                // The whole distribution at 16 bits: q is p up to rounding.
                run.dist = (VOCAB, 16);
            }
            let a = run_edge(cloud.addr, &run).await;
            let b = run_edge(cloud.addr, &run).await;
            let (sa, sb) = (a.summary(), b.summary());
            let what = format!("{rule:?} {draft:?}");
            check_counters(sa);
            assert!(
                sa.tokens.iter().all(|&t| (t as usize) < VOCAB),
                "{what}: {:?}",
                sa.tokens
            );
            let stopped = sa.tokens.last().is_some_and(|t| STOPS.contains(t));
            assert!(
                sa.generated_tokens == max_new || stopped,
                "{what}: ended early without a stop token"
            );
            assert!(
                sa.tokens[..sa.tokens.len() - 1]
                    .iter()
                    .all(|t| !STOPS.contains(t)),
                "{what}: ran past a stop token"
            );
            assert_eq!(sa.tokens, sb.tokens, "{what}: same seed, same tokens");
            let rounds = |s: &Summary| {
                s.round_records
                    .iter()
                    .map(|r| (r.k, r.accepted))
                    .collect::<Vec<_>>()
            };
            assert_eq!(rounds(sa), rounds(sb), "{what}: same seed, same rounds");
            if (rule, draft) == (VerifyRule::Rejection, DraftChoice::Same) {
                // Rejection sampling accepts x with probability min(1, p(x)/q(x)), and q is p
                // up to 16-bit rounding: every draft is accepted but those the budget cut.
                let (_, full) = sa.round_records.split_last().unwrap();
                assert!(
                    full.iter().all(|r| r.accepted == r.k),
                    "{what}: {:?}",
                    rounds(sa)
                );
                assert!(sa.acceptance_rate > 0.8, "{what}: {}", sa.acceptance_rate);
            } else {
                // Match acceptance is Σ p·q: small for this near-flat random model at T = 0.8.
                assert!(sa.acceptance_rate < 0.2, "{what}: {}", sa.acceptance_rate);
            }
            outputs.push((what, sa.tokens.clone()));
        }
    }
    // Match verification draws one target sample per committed token, in order, whatever was
    // drafted: the same seed gives the cloud-only output exactly.
    let cloud_only = Run {
        params: sampled_params(42),
        rule: VerifyRule::Match,
        ..Run::cloud_only(&prompt, max_new)
    };
    let c = run_edge(cloud.addr, &cloud_only).await;
    assert_eq!(
        c.summary().tokens,
        outputs[0].1,
        "match mode follows the target's own sample path"
    );
    assert_eq!(c.summary().tokens, outputs[1].1);
    // The seed matters.
    let other = run_edge(
        cloud.addr,
        &Run::sampled(&prompt, DraftChoice::Same, VerifyRule::Match, 43, max_new),
    )
    .await;
    assert_ne!(
        other.summary().tokens,
        outputs[0].1,
        "another seed, another sample"
    );
    // Sampling differs from greedy decoding.
    assert_ne!(
        outputs[0].1,
        expected_output(&reference(&prompt, max_new), max_new)
    );
    cloud.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Handshake refusals.
// ---------------------------------------------------------------------------------------------

fn refusal(o: &Outcome) -> &str {
    match &o.result {
        Err(EdgeError::Refused(reason)) => reason,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(s) => panic!("expected a refusal, got {} tokens", s.generated_tokens),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_drafts_are_refused_with_the_reason_and_the_server_keeps_serving() {
    let cloud = Cloud::default().await;
    let m = models();
    let prompt = prompts()[0].clone();
    let run = Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 12);
    let short = |h: &str| h[..12].to_string();

    let o = run_edge_with(cloud.addr, &run, |c| c.family = "qwen-9000".into()).await;
    let r = refusal(&o);
    assert!(
        r.contains("`qwen-9000`") && r.contains(&format!("`{FAMILY}`")),
        "{r}"
    );
    assert!(o.committed.is_empty(), "nothing committed on a refusal");

    // A shared-backbone draft built on another base.
    let foreign = Draft::build(&DraftSpec::SharedBackbone { shared_layers: 2 }, &m.other).unwrap();
    let o = run_edge_with(cloud.addr, &run, |c| {
        c.compat_hash = foreign.compat_hash.clone()
    })
    .await;
    let r = refusal(&o);
    assert!(
        r.contains("shared-backbone") && r.contains("base weights"),
        "{r}"
    );
    assert!(
        r.contains(&short(&m.other.base_hash)) && r.contains(&short(&m.target.base_hash)),
        "{r}"
    );

    // An independent draft with another vocabulary.
    let o = run_edge_with(cloud.addr, &run, |c| {
        c.draft_kind = "independent".into();
        c.compat_hash = "0123456789abcdef".repeat(4);
    })
    .await;
    let r = refusal(&o);
    assert!(
        r.contains("vocabulary") && r.contains("0123456789ab"),
        "{r}"
    );

    let o = run_edge_with(cloud.addr, &run, |c| c.draft_kind = "medusa-heads".into()).await;
    let r = refusal(&o);
    assert!(r.contains("unknown draft kind `medusa-heads`"), "{r}");

    // Another protocol version in the Hello (the edge always speaks this one: raw bytes).
    let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
    let hello = Hello {
        protocol_version: 9,
        ..run.hello()
    };
    tcp.write_all(&frame(&Message::Hello(hello), 3))
        .await
        .unwrap();
    let frames = read_until_close(&mut tcp).await;
    match &frames[..] {
        [(3, Message::HelloAck(a))] => {
            assert!(!a.accepted);
            assert!(
                a.reason.contains("protocol version 9")
                    && a.reason.contains(&PROTOCOL_VERSION.to_string()),
                "{}",
                a.reason
            );
        }
        other => panic!("expected one refusing HelloAck then a close, got {other:?}"),
    }

    // Bad session settings are refused too.
    for (hello, why) in [
        (
            Hello {
                prompt: vec![],
                ..run.hello()
            },
            "the prompt is empty",
        ),
        (
            Hello {
                prompt: vec![1, 999],
                ..run.hello()
            },
            "prompt token id 999",
        ),
        (
            Hello {
                max_new_tokens: 0,
                ..run.hello()
            },
            "max_new_tokens",
        ),
        (
            Hello {
                verify_mode: 17,
                ..run.hello()
            },
            "unknown verification mode 17",
        ),
        (
            Hello {
                temperature: -1.0,
                ..run.hello()
            },
            "sampling settings",
        ),
        (
            Hello {
                prompt: vec![65; 500],
                ..run.hello()
            },
            "context window is 512",
        ),
    ] {
        let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
        tcp.write_all(&frame(&Message::Hello(hello), 1))
            .await
            .unwrap();
        match &read_until_close(&mut tcp).await[..] {
            [(1, Message::HelloAck(a))] => {
                assert!(!a.accepted && a.reason.contains(why), "{why}: {}", a.reason)
            }
            other => panic!("{why}: got {other:?}"),
        }
    }

    // The server still serves.
    let o = run_edge(cloud.addr, &run).await;
    assert_eq!(
        o.summary().tokens,
        expected_output(&reference(&prompt, 12), 12)
    );
    cloud.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Bad frames, bad requests, concurrency, limits.
// ---------------------------------------------------------------------------------------------

fn frame(msg: &Message, request_id: u32) -> Vec<u8> {
    encode_frame(msg, request_id).unwrap().to_vec()
}

/// Reads frames until the server closes the connection; a hang fails the test.
async fn read_until_close(tcp: &mut TcpStream) -> Vec<(u32, Message)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    timeout(PATIENCE, async {
        loop {
            while let Some(f) = decode_frame(&mut buf).expect("the server sends valid frames") {
                out.push(f);
            }
            if tcp.read_buf(&mut buf).await.expect("read") == 0 {
                assert!(buf.is_empty(), "the server closed inside a frame");
                return;
            }
        }
    })
    .await
    .expect("the server neither answered nor closed");
    out
}

/// Reads the next frame; a hang fails the test.
async fn read_frame(tcp: &mut TcpStream, buf: &mut BytesMut) -> (u32, Message) {
    timeout(PATIENCE, async {
        loop {
            if let Some(f) = decode_frame(buf).expect("the server sends valid frames") {
                return f;
            }
            assert_ne!(
                tcp.read_buf(buf).await.expect("read"),
                0,
                "closed while a frame was expected"
            );
        }
    })
    .await
    .expect("no frame from the server")
}

/// Sends `bytes` (then half-closes if `close`), and expects one ErrorReply with `code`, then
/// the server's close. Returns the reply's request id and message.
async fn expect_error_then_close(
    addr: SocketAddr,
    bytes: &[u8],
    close: bool,
    code: ErrorCode,
) -> (u32, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    if close {
        tcp.shutdown().await.unwrap();
    }
    match &read_until_close(&mut tcp).await[..] {
        [(req, Message::ErrorReply(e))] => {
            assert_eq!(e.code(), code, "{}", e.message);
            (*req, e.message.clone())
        }
        other => panic!("expected one ErrorReply then a close, got {other:?}"),
    }
}

fn header(len_after_prefix: u32, version: u8, message_type: u8, request_id: u32) -> Vec<u8> {
    let mut h = len_after_prefix.to_be_bytes().to_vec();
    h.extend([version, message_type]);
    h.extend(request_id.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_frame_and_a_close_while_other_sessions_go_on() {
    let cloud = Cloud::default().await;
    let addr = cloud.addr;
    let prompt = prompts()[1].clone();
    let expected = expected_output(&reference(&prompt, 24), 24);
    // A slow session (1 token a round over a 20 ms link) that spans every bad connection.
    let slow = Run {
        link: Some((10.0, 10.0, 20.0)),
        ..Run::greedy(&prompt, DraftChoice::Independent, "fixed:1", 24)
    };
    let before = tokio::spawn(async move { run_edge(addr, &slow).await.summary().tokens.clone() });

    // (a) Garbage: an HTTP request reads as a length prefix far over the maximum.
    let (req, msg) = expect_error_then_close(
        addr,
        b"GET / HTTP/1.1\r\nHost: cloud\r\n\r\n",
        false,
        ErrorCode::BadFrame,
    )
    .await;
    assert!(msg.contains("exceeds the maximum"), "{msg}");
    assert_eq!(req, 0, "an unreadable frame is answered with request id 0");
    // Garbage whose length prefix is shorter than a header.
    let (_, msg) =
        expect_error_then_close(addr, &[0, 0, 0, 2, 0xde, 0xad], false, ErrorCode::BadFrame).await;
    assert!(msg.contains("shorter than"), "{msg}");
    // (b) A length prefix over MAX_FRAME_LEN, and nothing else: answered without waiting.
    let too_long = (MAX_FRAME_LEN as u32 - 4 + 1).to_be_bytes();
    let (_, msg) = expect_error_then_close(addr, &too_long, false, ErrorCode::BadFrame).await;
    assert!(
        msg.contains(&format!(
            "{} bytes exceeds the maximum of {MAX_FRAME_LEN}",
            MAX_FRAME_LEN + 1
        )),
        "{msg}"
    );
    // Another version in the frame header.
    let (_, msg) = expect_error_then_close(
        addr,
        &header(6, 9, 1, 4),
        false,
        ErrorCode::UnsupportedVersion,
    )
    .await;
    assert!(msg.contains("unsupported protocol version 9"), "{msg}");
    // (c) An unknown message type: the reply echoes the frame's request id.
    let (req, msg) = expect_error_then_close(
        addr,
        &header(6, PROTOCOL_VERSION, 99, 77),
        false,
        ErrorCode::BadFrame,
    )
    .await;
    assert!(msg.contains("unknown message type 99"), "{msg}");
    assert_eq!(req, 77);
    // A payload that does not decode as a Hello.
    let mut bad = header(6 + 3, PROTOCOL_VERSION, 1, 78);
    bad.extend([0xff, 0xff, 0xff]);
    let (req, _) = expect_error_then_close(addr, &bad, false, ErrorCode::BadFrame).await;
    assert_eq!(req, 78);
    // (d) Half a frame, then the client closes.
    let hello = frame(
        &Message::Hello(Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 8).hello()),
        1,
    );
    let (_, msg) =
        expect_error_then_close(addr, &hello[..hello.len() / 2], true, ErrorCode::BadFrame).await;
    assert!(msg.contains("stream ended inside a frame"), "{msg}");
    // A close before any byte is a clean end: no reply.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.shutdown().await.unwrap();
    assert!(read_until_close(&mut tcp).await.is_empty());
    // (e) A DraftBlock before the Hello.
    let block = frame(
        &Message::DraftBlock(DraftBlock {
            round: 1,
            tokens: vec![1, 2],
            dists: vec![],
            stream: 0,
        }),
        5,
    );
    let (req, msg) = expect_error_then_close(addr, &block, false, ErrorCode::BadRequest).await;
    assert!(msg.contains("expected Hello"), "{msg}");
    assert_eq!(req, 5);

    // A session started after all that.
    let after = run_edge(
        addr,
        &Run::greedy(&prompt, DraftChoice::Same, "adaptive", 24),
    )
    .await;
    assert_eq!(after.summary().tokens, expected);
    let before = timeout(PATIENCE * 3, before)
        .await
        .expect("the concurrent session finishes")
        .unwrap();
    assert_eq!(
        before, expected,
        "the session that ran through it all is unaffected"
    );
    cloud.stop().await;
}

/// Opens a session with `hello`; returns the connection, its buffer and the HelloAck.
async fn open_session(addr: SocketAddr, hello: Hello) -> (TcpStream, BytesMut, HelloAck) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&frame(&Message::Hello(hello), 1))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    match read_frame(&mut tcp, &mut buf).await {
        (1, Message::HelloAck(a)) if a.accepted => (tcp, buf, a),
        other => panic!("expected an accepting HelloAck, got {other:?}"),
    }
}

async fn send(tcp: &mut TcpStream, msg: Message, request_id: u32) {
    tcp.write_all(&frame(&msg, request_id)).await.unwrap();
}

fn block(round: u32, tokens: Vec<u32>, dists: Vec<WireDist>) -> Message {
    Message::DraftBlock(DraftBlock {
        round,
        tokens,
        dists,
        stream: 0,
    })
}

/// A point mass on `id`: 8-bit level 255 of 255.
fn point_mass(id: u32) -> WireDist {
    WireDist {
        ids: vec![id],
        probs: vec![255],
        bits: 8,
    }
}

fn expect_error(f: (u32, Message), request_id: u32, needle: &str) {
    match f {
        (req, Message::ErrorReply(e)) => {
            assert_eq!(
                (req, e.code()),
                (request_id, ErrorCode::BadRequest),
                "{}",
                e.message
            );
            assert!(
                e.message.contains(needle),
                "expected {needle:?} in {:?}",
                e.message
            );
        }
        other => panic!("expected an ErrorReply about {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_draft_blocks_get_an_error_and_commit_nothing() {
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let r = reference(&prompt, 30);
    assert!(r[..6].iter().all(|t| !STOPS.contains(t)));

    // (g) Greedy: out-of-vocabulary draft ids, then a good block continues where it was.
    let hello = Run::greedy(&prompt, DraftChoice::Same, "fixed:2", 30).hello();
    let (mut tcp, mut buf, ack) = open_session(cloud.addr, hello).await;
    assert_eq!(ack.first_token, r[0]);
    send(&mut tcp, block(1, vec![r[1], 300], vec![]), 10).await;
    expect_error(read_frame(&mut tcp, &mut buf).await, 10, "300");
    send(&mut tcp, block(1, vec![u32::MAX], vec![]), 11).await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        11,
        &u32::MAX.to_string(),
    );
    // Distributions are not allowed in greedy mode.
    send(&mut tcp, block(1, vec![r[1]], vec![point_mass(r[1])]), 12).await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        12,
        "1 draft distributions for 1 drafted tokens",
    );
    send(&mut tcp, block(1, vec![r[1], r[2]], vec![]), 13).await;
    let want = Verdict {
        round: 1,
        accepted: 2,
        next_token: r[3],
        finished: false,
        compute_us: 0,
        row_cost_us: 0,
    };
    match read_frame(&mut tcp, &mut buf).await {
        (13, Message::Verdict(v)) => assert_eq!(Verdict { compute_us: 0, ..v }, want),
        other => panic!("expected the verdict, got {other:?}"),
    }
    // A wrong guess is corrected by the target.
    send(&mut tcp, block(2, vec![(r[4] + 1) % 256, r[5]], vec![]), 14).await;
    match read_frame(&mut tcp, &mut buf).await {
        (14, Message::Verdict(v)) => assert_eq!(
            (v.round, v.accepted, v.next_token, v.finished),
            (2, 0, r[4], false)
        ),
        other => panic!("expected the verdict, got {other:?}"),
    }
    // A second Hello mid-session ends it.
    send(
        &mut tcp,
        Message::Hello(Run::greedy(&prompt, DraftChoice::Same, "fixed:2", 30).hello()),
        15,
    )
    .await;
    let rest = read_until_close(&mut tcp).await;
    assert!(
        matches!(&rest[..], [(15, Message::ErrorReply(e))] if e.code() == ErrorCode::BadRequest),
        "{rest:?}"
    );

    // (f) Rejection sampling: wrong distribution counts and bad distributions are refused,
    // consume no randomness, and the session goes on exactly as one that never saw them.
    let hello = Run::sampled(&prompt, DraftChoice::Same, VerifyRule::Rejection, 5, 30).hello();
    let (mut tcp, mut buf, _) = open_session(cloud.addr, hello.clone()).await;
    let x = [r[1], r[2]];
    send(&mut tcp, block(1, x.to_vec(), vec![point_mass(x[0])]), 20).await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        20,
        "1 draft distributions for 2 drafted tokens",
    );
    send(
        &mut tcp,
        block(1, x.to_vec(), vec![point_mass(x[0]), point_mass(300)]),
        22,
    )
    .await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        22,
        "draft distribution",
    );
    let unpacked = WireDist {
        ids: vec![x[0]],
        probs: vec![255],
        bits: 0,
    };
    send(&mut tcp, block(1, vec![x[0]], vec![unpacked]), 23).await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        23,
        "draft distribution",
    );
    let half = WireDist {
        ids: vec![x[0], 7],
        probs: vec![100, 100],
        bits: 8,
    };
    send(&mut tcp, block(1, vec![x[0]], vec![half]), 24).await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        24,
        "draft distribution",
    );
    // A drafted token its own distribution gives no mass.
    // After the forward pass: the KV cache must be rolled back.
    send(
        &mut tcp,
        block(1, vec![x[0]], vec![point_mass((x[0] + 1) % 256)]),
        25,
    )
    .await;
    expect_error(
        read_frame(&mut tcp, &mut buf).await,
        25,
        "has probability 0 in its draft distribution",
    );
    let good = || block(1, x.to_vec(), vec![point_mass(x[0]), point_mass(x[1])]);
    send(&mut tcp, good(), 26).await;
    let after_errors = match read_frame(&mut tcp, &mut buf).await {
        (26, Message::Verdict(v)) => v,
        other => panic!("expected the verdict, got {other:?}"),
    };
    let (mut fresh, mut fbuf, _) = open_session(cloud.addr, hello).await;
    send(&mut fresh, good(), 1).await;
    let clean = match read_frame(&mut fresh, &mut fbuf).await {
        (1, Message::Verdict(v)) => v,
        other => panic!("expected the verdict, got {other:?}"),
    };
    assert!(after_errors.accepted <= 2 && (after_errors.next_token as usize) < VOCAB);
    assert_eq!(
        (after_errors.accepted, after_errors.next_token),
        (clean.accepted, clean.next_token)
    );
    for mut t in [tcp, fresh] {
        send(&mut t, Message::Close(Close {}), 99).await;
        assert!(
            read_until_close(&mut t).await.is_empty(),
            "Close ends the session without a reply"
        );
    }
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_session_rounds_without_distributions_are_verified_by_match() {
    // The edge's channel-aware choice: a rejection session's block that carries no
    // distributions is verified by match. Same seed, same blocks: the verdicts equal a match
    // session's, round for round, and a later block with distributions is still verified by
    // rejection (a point mass on a token the target never samples is refused only there).
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let r = reference(&prompt, 30);
    let rejection = Run::sampled(&prompt, DraftChoice::Same, VerifyRule::Rejection, 9, 30).hello();
    let matching = Run::sampled(&prompt, DraftChoice::Same, VerifyRule::Match, 9, 30).hello();
    let (mut a, mut abuf, ack_a) = open_session(cloud.addr, rejection).await;
    let (mut b, mut bbuf, ack_b) = open_session(cloud.addr, matching).await;
    assert_eq!(ack_a.first_token, ack_b.first_token);
    for round in 1..=4u32 {
        let tokens = r[round as usize..round as usize + 3].to_vec();
        send(&mut a, block(round, tokens.clone(), vec![]), round).await;
        send(&mut b, block(round, tokens, vec![]), round).await;
        let (va, vb) = match (
            read_frame(&mut a, &mut abuf).await,
            read_frame(&mut b, &mut bbuf).await,
        ) {
            ((_, Message::Verdict(x)), (_, Message::Verdict(y))) => (x, y),
            other => panic!("expected two verdicts, got {other:?}"),
        };
        assert_eq!(
            (va.accepted, va.next_token, va.finished),
            (vb.accepted, vb.next_token, vb.finished),
            "round {round}"
        );
    }
    // Distributions are still read in the rejection session (and refused in the match one).
    send(&mut a, block(5, vec![1], vec![point_mass(2)]), 5).await;
    expect_error(
        read_frame(&mut a, &mut abuf).await,
        5,
        "has probability 0 in its draft distribution",
    );
    send(&mut b, block(5, vec![1], vec![point_mass(1)]), 5).await;
    expect_error(read_frame(&mut b, &mut bbuf).await, 5, "distributions");
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_aware_verification_picks_rejection_on_fast_uplinks_and_match_on_slow_ones() {
    // The Same draft with its whole distribution at 16 bits: rejection accepts every draft,
    // match only Σ p·q of them (small for this near-flat model at T = 0.8). Each rejection
    // token costs 256 × 4 bytes on the uplink.
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let run = |link| Run {
        dist: (VOCAB, 16),
        link,
        verify_switch: Some(ecspec_spec::verify_mode::VerifySelector::new(8, 16)),
        ..Run::sampled(&prompt, DraftChoice::Same, VerifyRule::Rejection, 5, 24)
    };
    let rules = |s: &Summary| {
        s.round_records
            .iter()
            .filter(|r| r.k > 0)
            .map(|r| r.verify)
            .collect::<Vec<_>>()
    };
    let fast = run_edge(cloud.addr, &run(FAST_LINK)).await;
    let f = fast.summary();
    check_counters(f);
    let fr = rules(f);
    let n_rej = fr.iter().filter(|&&r| r == "rejection").count();
    assert!(n_rej * 2 > fr.len(), "fast uplink: {fr:?}");
    assert_eq!(f.verify, "auto");
    // 50 kbit/s uplink: a 1 kB distribution per token costs 160 ms; match wins after the
    // first (exploratory) rejection round teaches the edge the bytes and the rate.
    let slow = run_edge(cloud.addr, &run(Some((0.05, 50.0, 2.0)))).await;
    let s = slow.summary();
    check_counters(s);
    let sr = rules(s);
    let n_rej = sr.iter().filter(|&&r| r == "rejection").count();
    assert!(n_rej * 4 < sr.len(), "slow uplink: {sr:?}");
    // Every round's bytes say which rule it used: ids only in match rounds.
    for r in s.round_records.iter().filter(|r| r.k > 0) {
        let per_token = r.uplink_bytes / r.k as u64;
        match r.verify {
            "match" => assert!(per_token < 10, "{r:?}"),
            "rejection" => assert!(per_token > 500, "{r:?}"),
            other => panic!("unexpected rule {other}"),
        }
    }
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_each_get_their_own_output() {
    let cloud = Cloud::default().await;
    let addr = cloud.addr;
    let p = prompts();
    let runs = vec![
        Run::greedy(&p[0], DraftChoice::Same, "fixed:4", 30),
        Run::greedy(&p[1], DraftChoice::Independent, "adaptive", 30),
        Run {
            link: FAST_LINK,
            ..Run::greedy(&p[2], DraftChoice::Independent, "fixed:2", 30)
        },
        Run::cloud_only(&p[1], 25),
        Run {
            link: FAST_LINK,
            ..Run::greedy(&p[0], DraftChoice::Same, "fixed:1", 17)
        },
    ];
    let expected: Vec<Vec<u32>> = runs
        .iter()
        .map(|r| expected_output(&reference(&r.prompt, r.max_new), r.max_new))
        .collect();
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|run| tokio::spawn(async move { run_edge(addr, &run).await.summary().tokens.clone() }))
        .collect();
    for (task, want) in tasks.into_iter().zip(expected) {
        assert_eq!(
            timeout(PATIENCE * 3, task)
                .await
                .expect("finishes")
                .unwrap(),
            want
        );
    }
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_refuses_with_an_error_frame_until_a_slot_frees() {
    let cloud = Cloud::start(ServerConfig {
        max_sessions: 1,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let prompt = prompts()[0].clone();
    let hello = Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 10).hello();
    let (mut first, _, _) = open_session(cloud.addr, hello.clone()).await;
    // A slot is taken only by an accepted Hello, so the refusal answers the second Hello.
    let (req, msg) = expect_error_then_close(
        cloud.addr,
        &frame(&Message::Hello(hello.clone()), 9),
        false,
        ErrorCode::Busy,
    )
    .await;
    assert!(
        msg.contains("busy") && msg.contains("all 1 session slots"),
        "{msg}"
    );
    assert_eq!(req, 9, "the busy reply answers the Hello");
    send(&mut first, Message::Close(Close {}), 2).await;
    assert!(read_until_close(&mut first).await.is_empty());
    // The slot is released when the first session's task ends, just after its socket closes.
    let mut served = false;
    for _ in 0..100 {
        let o = run_edge(
            cloud.addr,
            &Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 10),
        )
        .await;
        if let Ok(s) = &o.result {
            assert_eq!(s.tokens, expected_output(&reference(&prompt, 10), 10));
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served, "the freed slot serves a new session");
    cloud.stop().await;
}

/// Idle sessions are closed after `idle_timeout`, measured on a paused clock (no real waiting).
#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (idle, handshake) = (Duration::from_secs(30), Duration::from_secs(5));
    let cloud = Cloud::start(ServerConfig {
        idle_timeout: idle,
        handshake_timeout: handshake,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // Before the Hello: the handshake deadline, not the idle timeout, applies.
    let t0 = tokio::time::Instant::now();
    let mut tcp = TcpStream::connect(cloud.addr).await.unwrap();
    let frames = timeout(
        Duration::from_secs(600),
        read_until_close_unbounded(&mut tcp),
    )
    .await
    .expect("closed");
    assert!(frames.is_empty());
    let waited = t0.elapsed();
    assert!(waited >= handshake && waited < handshake * 2, "{waited:?}");
    // Mid-session.
    let hello = Run::greedy(&prompts()[0], DraftChoice::Same, "fixed:4", 10).hello();
    let (mut tcp, _, _) = open_session(cloud.addr, hello).await;
    let t0 = tokio::time::Instant::now();
    let frames = timeout(
        Duration::from_secs(600),
        read_until_close_unbounded(&mut tcp),
    )
    .await
    .expect("closed");
    assert!(frames.is_empty());
    let waited = t0.elapsed();
    assert!(waited >= idle && waited < idle * 2, "{waited:?}");
    cloud.stop().await;
}

/// [`read_until_close`] without its own timer (under a paused clock the caller's timer rules).
async fn read_until_close_unbounded(tcp: &mut TcpStream) -> Vec<(u32, Message)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    loop {
        while let Some(f) = decode_frame(&mut buf).expect("valid frames") {
            out.push(f);
        }
        if tcp.read_buf(&mut buf).await.expect("read") == 0 {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The token budget.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_cuts_the_last_round_exactly() {
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let r = reference(&prompt, 40);
    assert!(
        r[..40].iter().all(|t| !STOPS.contains(t)),
        "this prompt's first 40 greedy tokens have no stop token"
    );
    for max_new in [1, 2, 5, 6, 7, 10, 13, 40] {
        let s = run_edge(
            cloud.addr,
            &Run::greedy(&prompt, DraftChoice::Same, "fixed:4", max_new),
        )
        .await;
        let s = s.summary();
        let c = run_edge(cloud.addr, &Run::cloud_only(&prompt, max_new)).await;
        assert_eq!(s.generated_tokens, max_new);
        assert_eq!(s.tokens, r[..max_new]);
        assert_eq!(
            c.summary().tokens,
            r[..max_new],
            "cloud-only truncated to the budget"
        );
        check_counters(s);
        // Each full round commits 4 drafts + 1; the last commits what is left of the budget.
        let rounds = (max_new - 1).div_ceil(5);
        assert_eq!(s.rounds as usize, rounds, "budget {max_new}");
        if let Some((last, full)) = s.round_records.split_last() {
            assert!(full.iter().all(|r| (r.k, r.accepted) == (4, 4)));
            let left = max_new - 1 - 5 * full.len();
            assert_eq!(
                (last.k, last.accepted),
                (4, left - 1),
                "budget {max_new}: accepted lowered to the cut"
            );
        }
    }
    // The server's own cap cuts the same way.
    let capped = Cloud::start(ServerConfig {
        max_new_tokens: 8,
        shutdown_grace: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let s = run_edge(
        capped.addr,
        &Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 30),
    )
    .await;
    let s = s.summary();
    assert_eq!(s.tokens, r[..8]);
    assert_eq!(
        s.round_records
            .iter()
            .map(|r| r.accepted)
            .collect::<Vec<_>>(),
        [4, 1]
    );
    capped.stop().await;
    cloud.stop().await;
}

/// Alternates a cloud stream of 5 tokens (K = 0) with a round drafting 3.
struct AlternateStream(bool);

impl ecspec_spec::DraftLengthPolicy for AlternateStream {
    fn choose(&mut self, _state: &ecspec_spec::RoundState) -> usize {
        self.0 = !self.0;
        if self.0 {
            0
        } else {
            3
        }
    }
    fn stream_len(&self) -> u32 {
        5
    }
    fn name(&self) -> String {
        "test:alternate-stream".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_cloud_steps_between_drafted_rounds_stay_lossless() {
    let cloud = Cloud::default().await;
    let max_new = 40;
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        for draft in [DraftChoice::Partial, DraftChoice::Independent] {
            let run = Run::greedy(&prompt, draft, "test:alternate-stream", max_new);
            let o = run_edge(cloud.addr, &run).await;
            let s = o.summary();
            assert_eq!(
                s.tokens, expected,
                "{draft:?} prompt {prompt:?}: output differs"
            );
            check_counters(s);
            // Every streamed verdict is its own round of K = 0; a stream of 5 is followed by
            // one drafted round of 3 (the budget may cut either).
            let ks: Vec<usize> = s.round_records.iter().map(|r| r.k).collect();
            let mut i = 0;
            while i < ks.len() {
                let zeros = ks[i..].iter().take_while(|&&k| k == 0).count();
                assert!(zeros == 5 || i + zeros == ks.len(), "{ks:?}");
                i += zeros;
                if i < ks.len() {
                    assert_eq!(ks[i], 3, "{ks:?}");
                    i += 1;
                }
            }
            assert!(ks.iter().filter(|&&k| k == 0).count() >= 5, "{ks:?}");
            assert_eq!(s.rounds as usize, ks.len());
        }
    }
}

/// Context lookup, alone or before the draft model, commits the target's own tokens; its rounds
/// are counted apart, leave the draft model's cache consistent for the rounds after them (with
/// and without pipelining), and go up as ids only, so a sampled rejection session verifies them
/// by match and follows the target's own sample path exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_lookup_rounds_stay_lossless_and_are_counted_apart() {
    use ecspec_edge::DraftSource;
    let cloud = Cloud::default().await;
    let max_new = 48;
    let mut lookup_rounds = 0;
    let mut model_after_lookup = 0;
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        for (drafter, draft, policy, pipeline) in [
            (DraftSource::Lookup, DraftChoice::Same, "fixed:3", false),
            (DraftSource::Hybrid, DraftChoice::Partial, "fixed:3", false),
            (
                DraftSource::Hybrid,
                DraftChoice::Independent,
                "ecspec:4",
                false,
            ),
            (DraftSource::Hybrid, DraftChoice::Partial, "fixed:2", true),
        ] {
            let run = Run {
                drafter,
                pipeline,
                ..Run::greedy(&prompt, draft, policy, max_new)
            };
            let o = run_edge(cloud.addr, &run).await;
            let s = o.summary();
            let what = format!("{drafter} {draft:?} {policy} prompt {prompt:?}");
            assert_eq!(s.tokens, expected, "{what}: output differs");
            check_counters(s);
            let r = &s.round_records;
            let looked: Vec<_> = r.iter().filter(|x| x.source == "lookup").collect();
            assert_eq!(s.lookup_rounds, looked.len() as u64, "{what}");
            assert_eq!(
                s.lookup_drafted_tokens,
                looked.iter().map(|x| x.k as u64).sum::<u64>(),
                "{what}"
            );
            assert_eq!(
                s.lookup_accepted_tokens,
                looked.iter().map(|x| x.accepted as u64).sum::<u64>(),
                "{what}"
            );
            let len = ecspec_edge::Lookup::default().draft_len;
            assert!(
                looked
                    .iter()
                    .all(|x| x.k >= 1 && x.k <= len && x.draft_s == 0.0),
                "{what}"
            );
            assert!(
                r.iter().all(|x| (x.k == 0) == (x.source == "none")),
                "{what}"
            );
            if drafter == DraftSource::Lookup {
                assert!(r.iter().all(|x| x.source != "model"), "{what}");
            }
            lookup_rounds += looked.len();
            model_after_lookup += r
                .windows(2)
                .filter(|w| w[0].source == "lookup" && w[1].source == "model")
                .count();
        }
    }
    // The tiny target's greedy output loops, so lookups happen (75 rounds here), and the model
    // drafts again after them (28 times).
    assert!(lookup_rounds >= 10, "{lookup_rounds} lookup rounds");
    assert!(model_after_lookup >= 3, "{model_after_lookup}");
    // Sampled, rejection session, lookup only: every round is a match round or a plain step,
    // each committing the target's next sample in order, so the output is cloud-only's.
    // T = 0.15: near enough greedy for the output to repeat itself (10 lookup rounds, 15
    // copied tokens accepted).
    let params = SamplingParams {
        temperature: 0.15,
        ..sampled_params(42)
    };
    let prompt = prompts()[0].clone();
    let run = Run {
        drafter: DraftSource::Lookup,
        params,
        ..Run::sampled(
            &prompt,
            DraftChoice::Same,
            VerifyRule::Rejection,
            42,
            max_new,
        )
    };
    let o = run_edge(cloud.addr, &run).await;
    let s = o.summary();
    check_counters(s);
    assert!(
        s.lookup_rounds >= 3 && s.lookup_accepted_tokens >= 3,
        "{} lookup rounds, {} accepted",
        s.lookup_rounds,
        s.lookup_accepted_tokens
    );
    let cloud_only = Run {
        params,
        rule: VerifyRule::Match,
        ..Run::cloud_only(&prompt, max_new)
    };
    let c = run_edge(cloud.addr, &cloud_only).await;
    assert_eq!(s.tokens, c.summary().tokens);
    assert!(
        s.round_records
            .iter()
            .all(|x| x.verify == if x.k > 0 { "match" } else { "none" }),
        "{:?}",
        s.round_records
            .iter()
            .map(|x| (x.k, x.verify))
            .collect::<Vec<_>>()
    );
    cloud.stop().await;
}

/// Lookup rounds leave the draft model's cache at the committed context: with the draft equal
/// to the target, every model round after a lookup — also right after a confirmed pipelined
/// pre-draft — is accepted in full (a wrong cache would show as a rejected perfect draft, which
/// greedy output alone cannot reveal); and the α evidence carried to the next request counts
/// the model's rounds only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_rounds_after_lookup_rounds_draft_from_the_committed_context() {
    use ecspec_edge::DraftSource;
    let cloud = Cloud::default().await;
    let max_new = 48;
    let (mut transitions, mut after_confirmed) = (0, 0);
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        for (pipeline, link) in [(true, Some((50.0, 50.0, 20.0))), (false, None)] {
            // α = 0 known for the model: every lookup that matches is taken.
            let run = Run {
                drafter: DraftSource::Hybrid,
                pipeline,
                link,
                acceptance_prior: Some(0.0),
                ..Run::greedy(&prompt, DraftChoice::Same, "fixed:3", max_new)
            };
            let o = run_edge(cloud.addr, &run).await;
            let s = o.summary();
            let r = &s.round_records;
            let what = format!(
                "pipeline {pipeline} prompt {prompt:?}: {:?}",
                r.iter()
                    .map(|x| (x.source, x.k, x.accepted, x.reused))
                    .collect::<Vec<_>>()
            );
            assert_eq!(s.tokens, expected, "{what}");
            check_counters(s);
            // The budget may cut the last round.
            let (_, full) = r.split_last().unwrap();
            for x in full.iter().filter(|x| x.source == "model") {
                assert_eq!(x.accepted, x.k, "round {}: {what}", x.round);
            }
            let mut e = ecspec_spec::AcceptanceEstimator::from_known(0.0).unwrap();
            for x in r.iter().filter(|x| x.source != "lookup") {
                e.record(x.k, x.accepted).unwrap();
            }
            assert_eq!(
                s.memory.as_ref().unwrap().alpha_evidence,
                e.evidence(),
                "{what}"
            );
            for w in r.windows(3) {
                if w[1].source == "lookup" && w[2].source == "model" {
                    transitions += 1;
                    let confirmed =
                        w[0].source == "model" && w[0].accepted == w[0].k && w[0].pre_draft_s > 0.0;
                    after_confirmed += usize::from(confirmed);
                }
            }
        }
    }
    // 14 and 4 when written.
    assert!(transitions >= 5, "{transitions} lookup → model transitions");
    assert!(
        after_confirmed >= 1,
        "{after_confirmed} after a confirmed pre-draft"
    );
    cloud.stop().await;
}

/// Lookups between cloud streams (lookup-only and hybrid under the `ecspec` policy on a 2 ms
/// link): a verdict inside a stream drafts and sends nothing, the output is the target's, and
/// lookups still happen — declined ones are probed again, so the prior cannot lock them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_interleave_with_cloud_streams_and_are_probed_when_declined() {
    use ecspec_edge::DraftSource;
    let cloud = Cloud::default().await;
    let max_new = 48;
    let (mut streamed, mut looked) = (0, 0);
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        for drafter in [DraftSource::Lookup, DraftSource::Hybrid] {
            let run = Run {
                drafter,
                link: FAST_LINK,
                ..Run::greedy(&prompt, DraftChoice::Partial, "ecspec:4:2", max_new)
            };
            let o = run_edge(cloud.addr, &run).await;
            let s = o.summary();
            let r = &s.round_records;
            let what = format!(
                "{drafter} {prompt:?}: {:?}",
                r.iter()
                    .map(|x| (x.source, x.k, x.accepted, x.uplink_bytes))
                    .collect::<Vec<_>>()
            );
            assert_eq!(s.tokens, expected, "{what}");
            check_counters(s);
            assert!(r.iter().all(|x| x.k == 0 || x.uplink_bytes > 0), "{what}");
            streamed += r.iter().filter(|x| x.uplink_bytes == 0).count();
            looked += s.lookup_rounds;
        }
    }
    // 103 and 13 when written (1 lookup with the declined ones never probed).
    assert!(
        streamed > 0 && looked >= 5,
        "{streamed} streamed, {looked} lookups"
    );
    cloud.stop().await;
}

/// Behind 60 ms of RTT the `ecspec` policy's 16-token cloud stream beats a round trip for two
/// copied tokens, so a lookup-only edge takes a lookup only as a probe: at most one of every
/// four rounds that sent a block (here, with streams of 16, none). A sampled hybrid rejection session mixes model rounds (with
/// distributions) and lookup rounds (ids, verified by match) and reproduces itself per seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_declined_behind_a_long_rtt_and_mix_with_rejection_rounds() {
    use ecspec_edge::DraftSource;
    let cloud = Cloud::default().await;
    let max_new = 48;
    let mut sent_total = 0;
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        let run = Run {
            drafter: DraftSource::Lookup,
            link: Some((10.0, 20.0, 60.0)),
            ..Run::greedy(&prompt, DraftChoice::Partial, "ecspec", max_new)
        };
        let o = run_edge(cloud.addr, &run).await;
        let s = o.summary();
        check_counters(s);
        assert_eq!(s.tokens, expected);
        let sent = s
            .round_records
            .iter()
            .filter(|x| x.uplink_bytes > 0)
            .count() as u64;
        assert!(
            s.lookup_rounds * 4 <= sent + 3,
            "{} lookups in {sent} rounds that sent a block",
            s.lookup_rounds
        );
        sent_total += sent;
    }
    // Lookups forced on fail this: 4 lookups in 7 such rounds on the first prompt.
    assert!(sent_total >= 6, "{sent_total} rounds sent a block");
    cloud.stop().await;
}

/// A sampled hybrid session mixes rejection-verified model rounds and match-verified lookup
/// rounds, and repeats per seed. The hybrid weighs every round on measured timings, and a
/// rejection session's draws depend on its rounds, so the two runs must see the same timings:
/// the virtual clock (modelled compute on a paused clock, the edge and the cloud in this
/// runtime over an in-memory pipe) gives them that on any machine under any load.
#[tokio::test(start_paused = true)]
async fn a_sampled_hybrid_session_mixes_rules_and_repeats_per_seed_on_the_virtual_clock() {
    use ecspec_edge::DraftSource;
    use ecspec_spec::compute::{CloudCompute, EdgeCompute};
    let server = CloudServer::new(
        CloudModel::new(FAMILY, VERSION, &models().target),
        ServerConfig {
            virtual_compute: Some(CloudCompute {
                prefill_s_per_token: 0.000_5,
                verify_base_s: 0.004,
                verify_per_token_s: 0.000_5,
            }),
            ..Default::default()
        },
    );
    let max_new = 48;
    let prompt = prompts()[0].clone();
    let run = Run {
        drafter: DraftSource::Hybrid,
        params: SamplingParams {
            temperature: 0.15,
            ..sampled_params(42)
        },
        ..Run::sampled(
            &prompt,
            DraftChoice::Partial,
            VerifyRule::Rejection,
            42,
            max_new,
        )
    };
    let once = || async {
        let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
        let cloud = tokio::spawn(serve_stream(cloud_end, server.clone()));
        let o = run_edge_over(edge_end, &run, |c| {
            c.virtual_compute = Some(EdgeCompute {
                draft_s_per_token: 0.002,
                prefill_s_per_token: 0.000_2,
            })
        })
        .await;
        cloud.await.unwrap().unwrap();
        o
    };
    let (a, b) = (once().await, once().await);
    let (sa, sb) = (a.summary(), b.summary());
    check_counters(sa);
    assert_eq!(sa.tokens, sb.tokens, "same seed, same tokens");
    assert_eq!(
        sa.round_records.len(),
        sb.round_records.len(),
        "same rounds"
    );
    let verify: Vec<_> = sa
        .round_records
        .iter()
        .map(|x| (x.source, x.verify))
        .collect();
    assert!(verify.contains(&("model", "rejection")), "{verify:?}");
    assert!(verify.contains(&("lookup", "match")), "{verify:?}");
    assert!(
        verify.iter().all(|v| matches!(
            v,
            ("model", "rejection") | ("lookup", "match") | ("none", "none")
        )),
        "{verify:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_drafting_reuses_confirmed_pre_drafts_and_stays_lossless() {
    // A 20 ms RTT leaves the edge time to pre-draft while each round is in flight.
    let cloud = Cloud::default().await;
    let max_new = 40;
    let link = Some((50.0, 50.0, 20.0));
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        for (draft, policy) in [
            (DraftChoice::Same, "fixed:4"),
            (DraftChoice::Partial, "fixed:3"),
            (DraftChoice::Independent, "ecspec:4"),
            (DraftChoice::Partial, "fixed:4+p-min:0.3"),
            (DraftChoice::Same, "test:alternate-stream"),
        ] {
            let run = Run {
                pipeline: true,
                link,
                ..Run::greedy(&prompt, draft, policy, max_new)
            };
            let o = run_edge(cloud.addr, &run).await;
            let s = o.summary();
            let what = format!("{draft:?} {policy} prompt {prompt:?}");
            assert_eq!(s.tokens, expected, "{what}: output differs");
            check_counters(s);
            let r = &s.round_records;
            assert!(r.iter().all(|x| x.reused <= x.k), "{what}");
            assert!(r[0].reused == 0, "{what}: nothing to reuse in round 1");
            if (draft, policy) == (DraftChoice::Same, "fixed:4") {
                // The Same draft is always right, so its guess of the bonus token is too:
                // every round after the first starts from its pre-draft (the budget may cut
                // the last round short).
                let (_, middle) = r.split_last().unwrap();
                assert!(
                    middle
                        .iter()
                        .skip(1)
                        .all(|x| x.reused == 4 && x.pre_draft_s > 0.0),
                    "{what}: {:?}",
                    r.iter().map(|x| (x.k, x.reused)).collect::<Vec<_>>()
                );
            }
        }
    }
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_remembering_that_streaming_pays_opens_with_a_stream_and_stays_lossless() {
    let cloud = Cloud::default().await;
    let max_new = 40;
    let prompt = prompts()[1].clone();
    let expected = expected_output(&reference(&prompt, max_new), max_new);
    // A cold request of the ecspec policy, then one that starts from its memory.
    let cold = Run {
        link: FAST_LINK,
        ..Run::greedy(&prompt, DraftChoice::Independent, "ecspec:4:8", max_new)
    };
    let o = run_edge(cloud.addr, &cold).await;
    let s = o.summary();
    assert_eq!(s.tokens, expected);
    let m = s
        .memory
        .clone()
        .expect("speculative requests leave a memory");
    assert_eq!(m.target_version, "v0");
    assert_eq!(m.alpha_evidence, {
        let mut e = ecspec_spec::AcceptanceEstimator::default();
        for r in &s.round_records {
            e.record(r.k, r.accepted).unwrap();
        }
        e.evidence()
    });
    let p = m.policy.expect("ecspec remembers");
    assert_eq!(p.drafted_tokens, s.drafted_tokens);
    // Memory of a request that ended streaming with 16-token streams: this one opens with the
    // back-off's next step, 32.
    let memory = ecspec_edge::SessionMemory {
        policy: Some(ecspec_spec::policy::PolicyMemory {
            drafted_tokens: 100,
            streaming: true,
            stream_len: 16,
        }),
        ..m
    };
    let warm = Run {
        memory: Some(memory),
        ..cold
    };
    let o = run_edge(cloud.addr, &warm).await;
    let s = o.summary();
    assert_eq!(s.tokens, expected, "opening with a stream is lossless");
    check_counters(s);
    let n = 32.min(s.generated_tokens - 1);
    let (opening, rest) = s.round_records.split_at(n);
    // The stream was asked for in the Hello: no DraftBlock, no uplink bytes in its rounds.
    assert!(
        opening.iter().all(|r| r.k == 0 && r.uplink_bytes == 0),
        "{:?}",
        opening
            .iter()
            .map(|r| (r.k, r.uplink_bytes))
            .collect::<Vec<_>>()
    );
    assert!(
        rest.first().is_none_or(|r| r.k >= 1),
        "a probe round follows the opening stream"
    );
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_acceptance_rate_skips_the_warm_up_and_stays_lossless() {
    let cloud = Cloud::default().await;
    let max_new = 30;
    let prompt = prompts()[0].clone();
    let expected = expected_output(&reference(&prompt, max_new), max_new);
    let cold = Run {
        link: FAST_LINK,
        ..Run::greedy(&prompt, DraftChoice::Independent, "ecspec:4:8", max_new)
    };
    // Uninformed (prior α 0.5): the policy drafts its 8 warm-up tokens first.
    let s = run_edge(cloud.addr, &cold).await.summary().clone();
    assert_eq!(s.tokens, expected);
    assert!(s.round_records[0].k >= 1, "{:?}", s.round_records[0]);
    assert!(s.drafted_tokens >= 8, "{}", s.drafted_tokens);
    // Known α = 0 (a draft that is never accepted): streaming pays from the first round, and
    // the estimate starts at the known rate.
    let known = Run {
        acceptance_prior: Some(0.0),
        ..cold
    };
    let s = run_edge(cloud.addr, &known).await.summary().clone();
    assert_eq!(
        s.tokens, expected,
        "a known α changes the schedule, not the text"
    );
    check_counters(&s);
    let r = &s.round_records;
    assert_eq!((r[0].k, r[0].uplink_bytes > 0), (0, true), "{:?}", r[0]);
    assert!(r[0].alpha_estimate < 0.01, "{}", r[0].alpha_estimate);
    // A stream of 8, then one probe round.
    assert!(r[1..8.min(r.len())].iter().all(|x| x.k == 0), "{r:?}");
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_energy_budget_makes_ecspec_draft_less_and_stays_lossless() {
    let cloud = Cloud::default().await;
    let max_new = 40;
    let ks = |s: &Summary| -> Vec<usize> {
        s.round_records
            .iter()
            .map(|r| r.k)
            .filter(|&k| k > 0)
            .collect()
    };
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        // The Same draft is always accepted, so without a price longer drafts pay; drafting is
        // made absurdly expensive (1 kW) against a budget of 10⁻⁴ J per token, so once the
        // first round has overspent, the cheapest draft per committed token (K = 1) wins.
        let base = Run::greedy(&prompt, DraftChoice::Same, "ecspec:4", max_new);
        let o = run_edge(cloud.addr, &base).await;
        assert_eq!(o.summary().tokens, expected);
        let free = ks(o.summary());
        assert!(free.iter().any(|&k| k > 1), "without a budget: {free:?}");
        let run = Run {
            energy: Some(ecspec_edge::EnergyControl {
                draft_power_w: 1000.0,
                radio_power_w: 0.001,
                budget: Some(ecspec_energy::EnergyBudget::per_token(1e-4, 5e-6).unwrap()),
            }),
            ..base
        };
        let o = run_edge(cloud.addr, &run).await;
        let s = o.summary();
        assert_eq!(s.tokens, expected, "a budget never changes the output");
        assert_eq!(s.energy_budget_j_per_token, Some(1e-4));
        assert!(s.budget_spent_j_per_token.unwrap() > 0.0);
        let priced = ks(s);
        assert!(
            priced[1..].iter().all(|&k| k == 1),
            "with the budget: {priced:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. The shared cloud: batched iterations, chunked prefill, admission, metrics.
// ---------------------------------------------------------------------------------------------

/// A virtual-clock profile for the tiny target: each batched pass costs 4 ms plus 0.5 ms per
/// extra row, prompt rows 0.5 ms each.
fn tiny_profile() -> ecspec_spec::compute::CloudCompute {
    ecspec_spec::compute::CloudCompute {
        prefill_s_per_token: 0.000_5,
        verify_base_s: 0.004,
        verify_per_token_s: 0.000_5,
    }
}

/// A server on the virtual clock (reached over in-memory pipes, see [`over_pipe`]).
fn virtual_server(config: ServerConfig) -> Arc<CloudServer> {
    CloudServer::new(
        CloudModel::new(FAMILY, VERSION, &models().target),
        ServerConfig {
            virtual_compute: Some(tiny_profile()),
            ..config
        },
    )
}

/// Runs `run` against `server` over an in-memory pipe, its edge on the virtual clock too.
async fn over_pipe(server: Arc<CloudServer>, run: Run) -> Outcome {
    let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
    let cloud = tokio::spawn(serve_stream(cloud_end, server));
    let o = run_edge_over(edge_end, &run, |c| {
        c.virtual_compute = Some(ecspec_spec::compute::EdgeCompute {
            draft_s_per_token: 0.002,
            prefill_s_per_token: 0.000_2,
        })
    })
    .await;
    cloud.await.unwrap().unwrap();
    o
}

/// Sessions of every kind — greedy with three drafts and two policies, cloud-only, sampled
/// match and rejection with fixed draft lengths (so their rounds, and with them their draws,
/// do not depend on timing) — served all at once share forward passes, and each commits
/// exactly the tokens it commits served alone.
#[tokio::test(start_paused = true)]
async fn many_concurrent_sessions_share_passes_and_commit_what_each_commits_alone() {
    let server = virtual_server(ServerConfig {
        max_batch_tokens: 24,
        ..Default::default()
    });
    let max_new = 24;
    let mut runs = Vec::new();
    for (i, prompt) in prompts().iter().enumerate() {
        let seed = 100 + i as u64;
        runs.extend([
            Run::greedy(prompt, DraftChoice::Same, "fixed:4", max_new),
            Run::greedy(prompt, DraftChoice::Partial, "fixed:3", max_new),
            Run::greedy(prompt, DraftChoice::Independent, "ecspec", max_new),
            Run::cloud_only(prompt, max_new),
            Run::sampled(
                prompt,
                DraftChoice::Partial,
                VerifyRule::Match,
                seed,
                max_new,
            ),
            Run {
                policy: "fixed:2",
                ..Run::sampled(
                    prompt,
                    DraftChoice::Same,
                    VerifyRule::Rejection,
                    seed,
                    max_new,
                )
            },
            Run {
                mode: Mode::CloudOnly,
                policy: "fixed:0",
                ..Run::sampled(prompt, DraftChoice::Same, VerifyRule::Match, seed, max_new)
            },
        ]);
    }
    let s0 = server.stats();
    let mut alone = Vec::new();
    for run in &runs {
        alone.push(
            over_pipe(server.clone(), run.clone())
                .await
                .summary()
                .tokens
                .clone(),
        );
    }
    let s1 = server.stats();
    let tasks: Vec<_> = runs
        .iter()
        .map(|run| tokio::spawn(over_pipe(server.clone(), run.clone())))
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let o = t.await.unwrap();
        let s = o.summary();
        check_counters(s);
        assert_eq!(
            s.tokens, alone[i],
            "run {i} ({:?}): batched output differs",
            runs[i]
        );
    }
    let s2 = server.stats();
    let (alone_passes, batched_passes) =
        (s1.iterations - s0.iterations, s2.iterations - s1.iterations);
    assert_eq!(
        s2.rows - s1.rows,
        s1.rows - s0.rows,
        "the same rows, batched or not"
    );
    assert!(
        batched_passes * 4 < alone_passes,
        "{batched_passes} batched passes for the work of {alone_passes} alone"
    );
    assert_eq!(s2.kv_bytes_used, 0, "every reservation was returned");
    assert_eq!(s2.sessions_running, 0);
}

/// A long prompt is prefilled in chunks beside other sessions' rounds: a session that was
/// already running finishes its whole generation before the long prompt's first token.
#[tokio::test(start_paused = true)]
async fn a_long_prefill_is_chunked_and_does_not_stall_other_sessions() {
    let server = virtual_server(ServerConfig {
        max_batch_tokens: 16,
        ..Default::default()
    });
    let short = prompts()[0].clone();
    let long: Vec<u32> = ids(&"All work and no play makes a dull model. ".repeat(9));
    assert!(long.len() > 300);
    let running = tokio::spawn(over_pipe(
        server.clone(),
        Run::greedy(&short, DraftChoice::Same, "fixed:4", 40),
    ));
    // The long prompt arrives while the first session runs.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t_long = tokio::time::Instant::now();
    let late = tokio::spawn(over_pipe(
        server.clone(),
        Run::greedy(&long, DraftChoice::Same, "fixed:4", 8),
    ));
    let a = running.await.unwrap();
    let a_done = tokio::time::Instant::now();
    let b = late.await.unwrap();
    let (a, b) = (a.summary(), b.summary());
    assert_eq!(a.tokens, expected_output(&reference(&short, 40), 40));
    assert_eq!(b.tokens, expected_output(&reference(&long, 8), 8));
    assert!(
        a_done - t_long < Duration::from_secs_f64(b.ttft_s),
        "the running session ended {:?} after the long prompt came, its first token took {} s",
        a_done - t_long,
        b.ttft_s
    );
    let s = server.stats();
    assert_eq!(s.prefill_rows as usize, short.len() + long.len());
    // Each pass holds at most the budget (a round of 5 rows plus a prompt chunk).
    let chunks = long.len().div_ceil(16);
    assert!(s.iterations as usize >= chunks, "{} passes", s.iterations);
}

/// An edge that goes away while its long prompt is prefilled stops the prefill at the next
/// chunk boundary: the cloud does not go on computing for nobody.
#[tokio::test(start_paused = true)]
async fn a_prefill_stops_at_the_next_chunk_when_its_edge_leaves() {
    let server = virtual_server(ServerConfig {
        max_batch_tokens: 4,
        ..Default::default()
    });
    let long: Vec<u32> = ids(&"x".repeat(400));
    let hello = Run::greedy(&long, DraftChoice::Same, "fixed:4", 8).hello();
    let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
    let cloud = tokio::spawn(serve_stream(cloud_end, server.clone()));
    let mut conn = ecspec_transport::Connection::new(edge_end);
    conn.write_message(&Message::Hello(hello)).await.unwrap();
    // Each 4-row chunk takes 4 ms + 2 ms on this profile: about 16 chunks in 100 ms.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = server.stats().prefill_rows;
    assert!(
        before > 0 && before < 400,
        "{before} prompt rows after 100 ms"
    );
    drop(conn);
    cloud.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = server.stats();
    assert!(
        after.prefill_rows <= before + 4,
        "{} prompt rows computed after the edge left at {before}",
        after.prefill_rows
    );
    assert_eq!((after.kv_bytes_used, after.sessions_running), (0, 0));
    // The server serves the next request as usual.
    let prompt = prompts()[0].clone();
    let o = over_pipe(
        server,
        Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 10),
    )
    .await;
    assert_eq!(
        o.summary().tokens,
        expected_output(&reference(&prompt, 10), 10)
    );
}

/// Sends a Hello over a new pipe to `server`; returns the edge's end.
async fn hello_over_pipe(
    server: &Arc<CloudServer>,
    hello: Hello,
) -> ecspec_transport::Connection<tokio::io::DuplexStream> {
    let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
    tokio::spawn(serve_stream(cloud_end, server.clone()));
    let mut conn = ecspec_transport::Connection::new(edge_end);
    conn.write_message(&Message::Hello(hello)).await.unwrap();
    conn
}

async fn reply(conn: &mut ecspec_transport::Connection<tokio::io::DuplexStream>) -> Message {
    conn.read_message(None).await.unwrap().expect("a reply").1
}

/// The KV budget: a Hello that does not fit waits for a session to end (its HelloAck says how
/// long it waited), at most `max_waiting` wait, a wait ends `Busy` after `admission_wait`, and a
/// request that could never fit is refused at once with no retry hint.
#[tokio::test(start_paused = true)]
async fn hellos_beyond_the_kv_budget_wait_then_are_refused_busy() {
    let prompt = prompts()[0].clone();
    let hello = Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 10).hello();
    // The tiny target: 4 layers × 2 KV heads × 16 dims × (K and V) × 4 bytes = 1 KiB a position.
    let per = models().target.transformer.kv_bytes_per_position();
    assert_eq!(per, 1024);
    let one = (prompt.len() + 10 + ecspec_cloud::MAX_BLOCK_TOKENS) as u64 * per;
    let server = virtual_server(ServerConfig {
        kv_budget_bytes: one + one / 2,
        max_waiting: 1,
        admission_wait: Duration::from_secs(5),
        ..Default::default()
    });
    assert_eq!(server.kv_reservation(prompt.len(), 10), one);
    let mut a = hello_over_pipe(&server, hello.clone()).await;
    assert!(matches!(reply(&mut a).await, Message::HelloAck(h) if h.accepted && h.queue_us == 0));
    assert_eq!(server.stats().kv_bytes_used, one);
    // B waits; C finds the waiting queue full.
    let mut b = hello_over_pipe(&server, hello.clone()).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(server.stats().sessions_waiting, 1);
    let mut c = hello_over_pipe(&server, hello.clone()).await;
    match reply(&mut c).await {
        Message::ErrorReply(e) => {
            assert_eq!((e.code(), e.retry_after_ms), (ErrorCode::Busy, 1000));
            assert!(
                e.message.contains("1 requests are already waiting"),
                "{}",
                e.message
            );
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // B's wait runs out.
    match reply(&mut b).await {
        Message::ErrorReply(e) => {
            assert_eq!(e.code(), ErrorCode::Busy);
            assert!(e.message.contains("within 5s"), "{}", e.message);
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // D waits until A ends, then is served, and says how long it waited.
    let mut d = hello_over_pipe(&server, hello.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.write_message(&Message::Close(Close {})).await.unwrap();
    match reply(&mut d).await {
        Message::HelloAck(h) => {
            assert!(h.accepted);
            assert!(h.queue_us >= 2_000_000, "waited {} us", h.queue_us);
        }
        other => panic!("expected a HelloAck, got {other:?}"),
    }
    // A request larger than the whole budget can never be served.
    let mut big = hello.clone();
    big.max_new_tokens = 1000;
    let mut e = hello_over_pipe(&server, big).await;
    match reply(&mut e).await {
        Message::ErrorReply(e) => {
            assert_eq!((e.code(), e.retry_after_ms), (ErrorCode::Busy, 0));
            assert!(
                e.message.contains("more than this server's whole budget"),
                "{}",
                e.message
            );
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(server.stats().refused_hellos, 3);
}

/// `GET /metrics` over HTTP, parsed by a Prometheus text parser: the speculative-decoding
/// counters equal what the edges counted, and the pass histogram agrees with the pass count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_the_prometheus_text_format_and_count_the_rounds() {
    let server = CloudServer::new(
        CloudModel::new(FAMILY, VERSION, &models().target),
        ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, server.clone(), async {
        let _ = rx.await;
    }));
    let mlistener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = mlistener.local_addr().unwrap();
    tokio::spawn(ecspec_cloud::serve_metrics(
        mlistener,
        server.metrics().clone(),
        std::future::pending(),
    ));
    let (mut drafts, mut drafted, mut accepted) = (0u64, 0u64, 0u64);
    let mut first_pos = 0u64;
    for prompt in prompts() {
        for (draft, policy) in [
            (DraftChoice::Partial, "fixed:4"),
            (DraftChoice::Same, "fixed:3"),
        ] {
            let o = run_edge(addr, &Run::greedy(&prompt, draft, policy, 20)).await;
            let s = o.summary();
            drafts += s.round_records.iter().filter(|r| r.k > 0).count() as u64;
            drafted += s.drafted_tokens;
            accepted += s.accepted_tokens;
            first_pos += s.round_records.iter().filter(|r| r.accepted > 0).count() as u64;
        }
    }
    let mut tcp = TcpStream::connect(maddr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    timeout(PATIENCE, tcp.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The body is OpenMetrics text (the format Prometheus scrapes), ending with `# EOF`.
    let scrape = openmetrics_parser::openmetrics::parse_openmetrics(body)
        .unwrap_or_else(|e| panic!("{e:?} parsing:\n{body}"));
    use openmetrics_parser::{MetricNumber, OpenMetricsValue as V};
    let sample = |family: &str, labels: &[&str]| -> V {
        let f = scrape
            .families
            .get(family)
            .unwrap_or_else(|| panic!("{family} missing from:\n{body}"));
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        f.get_sample_by_label_values(&labels)
            .unwrap_or_else(|| panic!("{family} {labels:?} missing from:\n{body}"))
            .value
            .clone()
    };
    let value = |family: &str, labels: &[&str]| -> f64 {
        match sample(family, labels) {
            V::Counter(c) => c.value.as_f64(),
            V::Gauge(g) | V::Unknown(g) => g.as_f64(),
            other => panic!("{family}: {other:?}"),
        }
    };
    assert_eq!(value("ecspec:spec_decode_num_drafts", &[]), drafts as f64);
    assert_eq!(
        value("ecspec:spec_decode_num_draft_tokens", &[]),
        drafted as f64
    );
    assert_eq!(
        value("ecspec:spec_decode_num_accepted_tokens", &[]),
        accepted as f64
    );
    assert_eq!(
        value("ecspec:spec_decode_num_accepted_tokens_per_pos", &["0"]),
        first_pos as f64
    );
    let passes = value("ecspec:iterations", &[]);
    assert_eq!(passes, server.stats().iterations as f64);
    match sample("ecspec:iteration_rows", &[]) {
        V::Histogram(h) => {
            assert_eq!(
                h.count,
                Some(passes as u64),
                "every pass is in the histogram"
            );
            let rows = h.sum.as_ref().map(MetricNumber::as_f64);
            assert_eq!(rows, Some(server.stats().rows as f64));
        }
        other => panic!("ecspec:iteration_rows is {other:?}"),
    }
    assert_eq!(
        value("ecspec:kv_cache_budget_bytes", &[]),
        (4u64 << 30) as f64
    );
    let _ = stop.send(());
    serving.await.unwrap();
}

/// Load-aware speculation: when each row of a pass delays the pass's other sessions (the cloud
/// reports the delay in every verdict), load-aware edges ask for fewer rows per committed
/// token than edges blind to it, and both stay lossless. Virtual clock: the rows each pass
/// holds, and so every price, are the same on every machine.
#[tokio::test(start_paused = true)]
async fn load_aware_edges_ask_a_busy_cloud_for_fewer_rows() {
    // A compute-bound cloud: 20 ms a pass plus 10 ms per further row.
    let server = CloudServer::new(
        CloudModel::new(FAMILY, VERSION, &models().target),
        ServerConfig {
            virtual_compute: Some(ecspec_spec::compute::CloudCompute {
                prefill_s_per_token: 0.000_5,
                verify_base_s: 0.020,
                verify_per_token_s: 0.010,
            }),
            ..Default::default()
        },
    );
    let max_new = 32;
    let runs: Vec<Run> = (0..12)
        .map(|i| {
            let p = &prompts()[i % 3];
            Run {
                link: Some((50.0, 50.0, 10.0)),
                acceptance_prior: Some(0.6),
                ..Run::greedy(p, DraftChoice::Partial, "ecspec", max_new)
            }
        })
        .collect();
    let mut rows = Vec::new();
    for aware in [true, false] {
        let tasks: Vec<_> = runs
            .iter()
            .map(|run| {
                let (server, run) = (server.clone(), run.clone());
                tokio::spawn(async move {
                    let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
                    let cloud = tokio::spawn(serve_stream(cloud_end, server));
                    let o = run_edge_over(edge_end, &run, |c| {
                        c.load_aware = aware;
                        c.virtual_compute = Some(ecspec_spec::compute::EdgeCompute {
                            draft_s_per_token: 0.001,
                            prefill_s_per_token: 0.000_1,
                        });
                    })
                    .await;
                    cloud.await.unwrap().unwrap();
                    o
                })
            })
            .collect();
        let mut asked = 0u64;
        for (t, run) in tasks.into_iter().zip(&runs) {
            let o = t.await.unwrap();
            let s = o.summary();
            assert_eq!(
                s.tokens,
                expected_output(&reference(&run.prompt, max_new), max_new)
            );
            // Rows asked of the cloud: K + 1 a drafted round, 1 a streamed token.
            asked += s.round_records.iter().map(|r| r.k as u64 + 1).sum::<u64>();
        }
        rows.push(asked);
    }
    assert!(
        rows[0] < rows[1],
        "load-aware edges asked for {} rows, blind ones for {}",
        rows[0],
        rows[1]
    );
}

/// Streaming sessions keep their place in every pass: eight cloud-only sessions stream while a
/// long prompt arriving later is prefilled beside them (so the scheduler never runs out of
/// work between passes); each gets a token from (nearly) every pass, so its TPOT stays near one
/// pass (16 rows: 4 ms + 15 × 0.5 ms on this profile), not two (a session answered by one pass
/// must be back in time for the next).
#[tokio::test(start_paused = true)]
async fn concurrent_streaming_sessions_share_every_pass() {
    let server = virtual_server(ServerConfig {
        max_batch_tokens: 16,
        ..Default::default()
    });
    let max_new = 24;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            // The prompt whose first 40 greedy tokens hold no stop token (see the budget test).
            let run = Run::cloud_only(&prompts()[0], max_new);
            tokio::spawn(over_pipe(server.clone(), run))
        })
        .collect();
    // The eight prompts take 7 passes; then a long one arrives and is prefilled 8 rows a pass.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let long: Vec<u32> = ids(&"All work and no play makes a dull model. ".repeat(9));
    let prefilling = tokio::spawn(over_pipe(server.clone(), Run::cloud_only(&long, 4)));
    for t in tasks {
        let o = t.await.unwrap();
        let s = o.summary();
        assert_eq!(s.generated_tokens, max_new);
        // One pass a token is 11.5 ms at most; a session that misses every other pass would
        // take 23 ms (21.7 measured without the scheduler's wait for resubmissions).
        assert!(
            s.tpot_s <= 0.0144,
            "TPOT {} s: tokens every other pass",
            s.tpot_s
        );
    }
    assert!(
        server.stats().prefill_rows < (long.len() + 8 * prompts()[0].len()) as u64,
        "the long prompt was still being prefilled: {:?}",
        server.stats()
    );
    prefilling.await.unwrap().summary();
}

/// A scheduler whose loop was cancelled with its runtime (mid-pass, a long prompt half
/// prefilled) serves the next runtime's requests: nothing is left marked running.
#[test]
fn a_scheduler_serves_on_after_its_runtime_was_shut_down_mid_pass() {
    let server = virtual_server(ServerConfig {
        max_batch_tokens: 8,
        ..Default::default()
    });
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let long: Vec<u32> = ids(&"x".repeat(300));
    let rt = paused();
    rt.block_on(async {
        let run = Run::greedy(&long, DraftChoice::Same, "fixed:4", 8);
        tokio::spawn(over_pipe(server.clone(), run));
        tokio::time::sleep(Duration::from_millis(30)).await;
    });
    assert!(server.stats().prefill_rows > 0);
    drop(rt);
    let prompt = prompts()[0].clone();
    let o = paused().block_on(over_pipe(
        server.clone(),
        Run::greedy(&prompt, DraftChoice::Same, "fixed:4", 10),
    ));
    assert_eq!(
        o.summary().tokens,
        expected_output(&reference(&prompt, 10), 10)
    );
}
