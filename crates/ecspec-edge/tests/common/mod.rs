//! Fixtures of the end-to-end tests: tiny random-weight models, the real server on
//! 127.0.0.1:0 (or over an in-memory pipe), the real edge ([`generate`], directly over TCP or
//! through the emulated link), and references computed without the code under test: the
//! target's greedy tokens with a plain [`Session`] fed one token at a time, speculative rounds
//! replayed with a fresh draft session per round.
//!
//! The edge's tests (`crates/ecspec-edge/tests/*.rs`) and the cloud's
//! (`crates/ecspec-cloud/tests/server.rs`, through `#[path]`) share this one copy. Each test
//! binary uses part of it.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use ecspec_cloud::{serve, CloudModel, CloudServer, ServerConfig};
use ecspec_edge::{generate, DraftSampling, Drafter, EdgeConfig, EdgeError, Mode, Summary};
use ecspec_link::{emulate, LinkConfig};
use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{Draft, DraftSpec, LoadedModel, LogitsFor, Session, Transformer};
use ecspec_proto::{Hello, VerifyMode, PROTOCOL_VERSION};
use ecspec_spec::parse_policy;
use ecspec_spec::sampling::{argmax, SamplingParams};
use ecspec_spec::verify::VerifyRule;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

pub const FAMILY: &str = "tiny-llama";
pub const VERSION: &str = "v0";
/// The tiny vocabulary: 256 byte symbols, `ab`, `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`.
pub const VOCAB: usize = 260;
/// `<|endoftext|>` and `<|im_end|>`.
pub const STOPS: [u32; 2] = [257, 259];
pub const LAYERS: usize = 4;
/// Longest any single test may wait for the server.
pub const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Fixtures: models, server, edge runs.
// ---------------------------------------------------------------------------------------------

pub struct Models {
    pub target: LoadedModel,
    /// Shared-backbone draft with k = layers − 1: its anchor is a copy of the last layer, so it
    /// is the target itself (greedy acceptance 1).
    pub same: Draft,
    /// Shared-backbone draft with k = 2 of 4 layers: right some of the time.
    pub partial: Draft,
    /// An independent 2-layer draft with another seed and the same vocabulary (low acceptance).
    pub indep: Draft,
    /// A model with other base weights: a shared-backbone draft built on it is incompatible.
    pub other: LoadedModel,
}

pub fn models() -> &'static Models {
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

pub fn ids(text: &str) -> Vec<u32> {
    // Byte-level symbols are in byte order, so a byte's id is its value.
    text.bytes().map(u32::from).collect()
}

/// Prompts used throughout: plain bytes, a chat-like prompt with control tokens, one token.
pub fn prompts() -> Vec<Vec<u32>> {
    let mut chat = vec![258];
    chat.extend(ids("user\nWhy is the sky blue?"));
    chat.extend([259, 10, 258]);
    chat.extend(ids("assistant\n"));
    vec![ids("Hello, world! "), chat, vec![256]]
}

/// A virtual-clock profile for the tiny target: each batched pass costs 4 ms plus 0.5 ms per
/// extra row, prompt rows 0.5 ms each.
pub fn tiny_profile() -> ecspec_spec::compute::CloudCompute {
    ecspec_spec::compute::CloudCompute {
        prefill_s_per_token: 0.000_5,
        verify_base_s: 0.004,
        verify_per_token_s: 0.000_5,
    }
}

/// A server on the virtual clock (modelled compute slept on tokio's paused clock), reached
/// over in-memory pipes ([`ecspec_cloud::serve_stream`]).
pub fn virtual_server(config: ServerConfig) -> Arc<CloudServer> {
    CloudServer::new(
        CloudModel::new(FAMILY, VERSION, &models().target),
        ServerConfig {
            virtual_compute: Some(tiny_profile()),
            ..config
        },
    )
}

/// A server on 127.0.0.1:0, stopped with [`Cloud::stop`].
pub struct Cloud {
    pub addr: SocketAddr,
    pub stop: oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Cloud {
    pub async fn start(config: ServerConfig) -> Self {
        let server = CloudServer::new(CloudModel::new(FAMILY, VERSION, &models().target), config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, server, async {
            let _ = rx.await;
        }));
        Self { addr, stop, task }
    }

    pub async fn default() -> Self {
        Self::start(ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            ..Default::default()
        })
        .await
    }

    /// Shuts the server down; it must return within its grace period.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        timeout(PATIENCE, self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftChoice {
    Same,
    Partial,
    Independent,
}

impl DraftChoice {
    pub fn draft(self) -> &'static Draft {
        match self {
            DraftChoice::Same => &models().same,
            DraftChoice::Partial => &models().partial,
            DraftChoice::Independent => &models().indep,
        }
    }
}

/// One edge generation's settings.
#[derive(Debug, Clone)]
pub struct Run {
    pub prompt: Vec<u32>,
    pub mode: Mode,
    pub draft: DraftChoice,
    pub rule: VerifyRule,
    pub params: SamplingParams,
    pub policy: &'static str,
    pub max_new: usize,
    /// Emulated constant link: (uplink Mbit/s, downlink Mbit/s, RTT ms); `None`: plain TCP.
    pub link: Option<(f64, f64, f64)>,
    /// Rejection mode: compact distribution top-k and bits.
    pub dist: (usize, u8),
    /// Energy-aware drafting.
    pub energy: Option<ecspec_edge::EnergyControl>,
    /// Channel-aware match/rejection choice per round.
    pub verify_switch: Option<ecspec_spec::verify_mode::VerifySelector>,
    /// Pipelined drafting.
    pub pipeline: bool,
    /// What earlier requests left.
    pub memory: Option<ecspec_edge::SessionMemory>,
    pub acceptance_prior: Option<f64>,
    /// Where drafted tokens come from.
    pub drafter: ecspec_edge::DraftSource,
}

impl Run {
    pub fn greedy(
        prompt: &[u32],
        draft: DraftChoice,
        policy: &'static str,
        max_new: usize,
    ) -> Self {
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

    pub fn cloud_only(prompt: &[u32], max_new: usize) -> Self {
        Self {
            mode: Mode::CloudOnly,
            policy: "fixed:0",
            ..Self::greedy(prompt, DraftChoice::Same, "fixed:0", max_new)
        }
    }

    pub fn sampled(
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

    pub fn config(&self) -> EdgeConfig {
        let d = self.draft.draft();
        EdgeConfig {
            family: FAMILY.into(),
            draft_kind: d.kind,
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
            auth_token: None,
            max_block_tokens: 0,
            stop: Default::default(),
        }
    }

    pub fn drafter(&self) -> Option<Drafter> {
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
    pub fn hello(&self) -> Hello {
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
            auth_token: String::new(),
            max_block_tokens: 0,
            resumed_tokens: 0,
        }
    }
}

/// Temperature 0.8, no truncation.
pub fn sampled_params(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 0.8,
        top_p: 1.0,
        top_k: 0,
        seed,
    }
}

pub fn verify_mode(rule: VerifyRule) -> VerifyMode {
    match rule {
        VerifyRule::Greedy => VerifyMode::Greedy,
        VerifyRule::Match => VerifyMode::Match,
        VerifyRule::Rejection => VerifyMode::Rejection,
    }
}

/// Records every byte the edge writes and reads, between the edge and its stream.
pub struct Tap<S> {
    pub inner: S,
    pub sent: Arc<Mutex<Vec<u8>>>,
    pub received: Arc<Mutex<Vec<u8>>>,
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
pub struct Outcome {
    pub result: Result<Summary, EdgeError>,
    /// Tokens handed to the commit callback, in order.
    pub committed: Vec<u32>,
    /// Bytes the edge wrote / read.
    pub sent: Vec<u8>,
    pub received: Vec<u8>,
}

impl Outcome {
    pub fn summary(&self) -> &Summary {
        match &self.result {
            Ok(s) => s,
            Err(e) => panic!("generation failed: {e}"),
        }
    }
}

pub async fn run_edge(addr: SocketAddr, run: &Run) -> Outcome {
    run_edge_with(addr, run, |_| {}).await
}

/// Runs one generation against `addr`; `tweak` may change the edge's settings.
pub async fn run_edge_with(
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
pub async fn run_edge_over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
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
pub fn greedy_reference(model: &Arc<Transformer>, prompt: &[u32], n: usize) -> Vec<u32> {
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
pub fn reference(prompt: &[u32], max_new: usize) -> Vec<u32> {
    greedy_reference(&models().target.transformer, prompt, max_new + 70)
}

/// What the cloud commits under a budget: the reference up to the first stop token or
/// `max_new` tokens.
pub fn expected_output(reference: &[u32], max_new: usize) -> Vec<u32> {
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
pub fn draft_greedy(draft: &Arc<Transformer>, context: &[u32], k: usize) -> Vec<u32> {
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
pub struct Replay {
    pub drafted: Vec<u32>,
    pub accepted: usize,
    pub next_token: u32,
    pub finished: bool,
}

/// Replays greedy speculative decoding for the draft lengths `ks` the edge chose: each round
/// the draft's greedy tokens after the committed sequence are accepted while they equal the
/// target's greedy tokens, then the target's token; everything cut at the first stop token or
/// at `max_new` (lowering `accepted`).
pub fn replay_greedy(
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
pub fn check_counters(s: &Summary) {
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

/// Compute time the edge recorded, back in the Verdict's microseconds.
pub fn compute_us(seconds: f64) -> u32 {
    (seconds * 1e6).round() as u32
}

/// A fast emulated link: 50 Mbit/s each way, 2 ms RTT.
pub const FAST_LINK: Option<(f64, f64, f64)> = Some((50.0, 50.0, 2.0));

/// Alternates a cloud stream of 5 tokens (K = 0) with a round drafting 3.
pub struct AlternateStream(pub bool);

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
