//! A cloud serving several target versions of one family (a base and a LoRA version sharing its
//! weights): switching the active version at run time by a management request does not drop
//! or disturb running sessions, and each session's output is exactly the greedy output of the
//! version that verified it, the one its `HelloAck` named.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ecspec_cloud::{
    management_allowed, serve, set_version, AdminError, CloudModel, CloudServer, ServerConfig,
    TargetVersion,
};
use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{
    Draft, DraftSpec, LoadedModel, LogitsFor, LoraAdapter, LoraTarget, Session, Transformer,
};
use ecspec_proto::{
    DraftBlock, ErrorCode, Hello, HelloAck, Message, SetVersion, Verdict, VerifyMode,
    PROTOCOL_VERSION,
};
use ecspec_spec::sampling::argmax;
use ecspec_transport::Connection;
use tokio::net::{TcpListener, TcpStream};

const FAMILY: &str = "tiny-llama";
const MAX_NEW: usize = 40;
const PATIENCE: Duration = Duration::from_secs(20);

struct Fixture {
    base: LoadedModel,
    v1: Arc<Transformer>,
}

fn fixture() -> Fixture {
    // One directory per call: tests run in parallel in this process.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("ecspec-cloud-versions-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("base.gguf");
    write_tiny_model(
        &path,
        TinySpec {
            seed: 21,
            ..Default::default()
        },
    )
    .unwrap();
    let base = LoadedModel::load(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = base.transformer.config().clone();
    let mut adapter =
        LoraAdapter::init(&cfg, 4, 8.0, 0..cfg.num_layers, &LoraTarget::ALL, 5, "tiny").unwrap();
    for layer in 0..cfg.num_layers {
        for t in LoraTarget::ALL {
            for (i, b) in adapter
                .pair_mut(layer, t)
                .unwrap()
                .b_mut()
                .iter_mut()
                .enumerate()
            {
                *b = ((i * 7 + layer * 13 + t as usize) as f32 * 0.61).sin() * 0.2;
            }
        }
    }
    let v1 = Arc::new(Transformer::with_adapter(&base.transformer, &adapter).unwrap());
    Fixture { base, v1 }
}

/// The target's greedy output, one token at a time with a plain session: up to `n` tokens,
/// ending early at (and including) a stop token.
fn greedy(t: &Arc<Transformer>, prompt: &[u32], stops: &[u32], n: usize) -> Vec<u32> {
    let mut s = Session::new(t.clone());
    let mut next = argmax(s.forward(prompt, LogitsFor::Last).unwrap().last());
    let mut out = vec![next];
    while out.len() < n && !stops.contains(&next) {
        next = argmax(s.forward(&[next], LogitsFor::Last).unwrap().last());
        out.push(next);
    }
    out
}

fn hello(prompt: &[u32], base_hash: &str) -> Message {
    Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION as u32,
        model_family: FAMILY.into(),
        base_hash: base_hash.into(),
        draft_kind: "shared-backbone".into(),
        verify_mode: VerifyMode::Greedy as i32,
        max_new_tokens: MAX_NEW as u32,
        prompt: prompt.to_vec(),
        seed: 1,
        top_p: 1.0,
        ..Default::default()
    })
}

/// One edge session driven by hand: drafts come from a list of guesses, so the test decides
/// which rounds are accepted and which are corrected.
struct Edge {
    conn: Connection<TcpStream>,
    out: Vec<u32>,
    round: u32,
    finished: bool,
    version: String,
}

impl Edge {
    async fn open(addr: SocketAddr, prompt: &[u32], base_hash: &str) -> Self {
        let mut conn = Connection::new(TcpStream::connect(addr).await.unwrap());
        conn.write_message(&hello(prompt, base_hash)).await.unwrap();
        let ack: HelloAck = match conn.read_message(Some(PATIENCE)).await.unwrap() {
            Some((_, Message::HelloAck(a))) => a,
            other => panic!("expected HelloAck, got {other:?}"),
        };
        assert!(ack.accepted, "{}", ack.reason);
        Self {
            conn,
            out: vec![ack.first_token],
            round: 0,
            finished: ack.finished,
            version: ack.target_version,
        }
    }

    /// One round drafting `guess[len..len + k]` (the guess's continuation of what is committed).
    async fn round(&mut self, guess: &[u32], k: usize) {
        if self.finished {
            return;
        }
        self.round += 1;
        let n = self.out.len();
        let tokens: Vec<u32> = guess.iter().skip(n).take(k).copied().collect();
        let block = DraftBlock {
            round: self.round,
            tokens: tokens.clone(),
            dists: vec![],
            stream: 0,
        };
        self.conn
            .write_message(&Message::DraftBlock(block))
            .await
            .unwrap();
        let v: Verdict = match self.conn.read_message(Some(PATIENCE)).await.unwrap() {
            Some((_, Message::Verdict(v))) => v,
            other => panic!("expected Verdict, got {other:?}"),
        };
        assert_eq!(v.round, self.round);
        self.out.extend_from_slice(&tokens[..v.accepted as usize]);
        self.out.push(v.next_token);
        self.finished = v.finished;
    }
}

async fn start(model: CloudModel) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let server = CloudServer::new(
        model,
        ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, server, async {
        let _ = rx.await;
    }));
    (addr, stop)
}

fn versions(fx: &Fixture) -> Vec<TargetVersion> {
    vec![
        TargetVersion {
            name: "v0".into(),
            transformer: fx.base.transformer.clone(),
        },
        TargetVersion {
            name: "v1".into(),
            transformer: fx.v1.clone(),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_versions_mid_session_keeps_each_session_lossless_for_its_version() {
    let fx = fixture();
    // No stop tokens: where a random-weight model first emits one depends on the CPU's
    // rounding, and this test needs both sessions to run MAX_NEW tokens on every CPU.
    let prompt: Vec<u32> = "The quick brown fox ".bytes().map(u32::from).collect();
    let ref_v0 = greedy(&fx.base.transformer, &prompt, &[], MAX_NEW);
    let ref_v1 = greedy(&fx.v1, &prompt, &[], MAX_NEW);
    assert_ne!(
        ref_v0, ref_v1,
        "the adapter must change the greedy output for this test to mean anything"
    );
    assert_eq!((ref_v0.len(), ref_v1.len()), (MAX_NEW, MAX_NEW));

    let mut model = CloudModel::with_versions(FAMILY, &fx.base, versions(&fx), "v0").unwrap();
    model.stop_tokens.clear();
    let (addr, stop) = start(model).await;
    // A shared-backbone draft's identity: the base hash (every version shares the base).
    let draft = Draft::build(&DraftSpec::SharedBackbone { shared_layers: 2 }, &fx.base).unwrap();

    // Session A starts under v0 and runs a few rounds: right guesses (v0's own tokens, all
    // accepted) and wrong ones (v1's, corrected).
    let mut a = Edge::open(addr, &prompt, &draft.compat_hash).await;
    assert_eq!(a.version, "v0");
    a.round(&ref_v0, 3).await;
    a.round(&ref_v1, 3).await;
    assert!(!a.finished);

    // The operator switches to v1 while A is running.
    let ack = set_version(addr, "v1", PATIENCE).await.unwrap();
    assert_eq!((ack.active.as_str(), ack.previous.as_str()), ("v1", "v0"));
    assert_eq!(ack.versions, ["v0", "v1"]);

    // Session B starts under v1; A keeps v0. Interleave their rounds to the end, drafting
    // from both references in turn.
    let mut b = Edge::open(addr, &prompt, &draft.compat_hash).await;
    assert_eq!(b.version, "v1");
    let mut i = 0;
    while !(a.finished && b.finished) {
        let (ga, gb) = if i % 2 == 0 {
            (&ref_v1, &ref_v0)
        } else {
            (&ref_v0, &ref_v1)
        };
        a.round(ga, 1 + i % 4).await;
        b.round(gb, 1 + (i + 1) % 4).await;
        i += 1;
        assert!(i < 200, "sessions must finish");
    }
    assert_eq!(
        a.out, ref_v0,
        "session A was verified by v0 from start to end"
    );
    assert_eq!(b.out, ref_v1, "session B was verified by v1");

    // Switching back: a query changes nothing; new sessions get v0 again.
    let q = set_version(addr, "", PATIENCE).await.unwrap();
    assert_eq!((q.active.as_str(), q.previous.as_str()), ("v1", "v1"));
    let back = set_version(addr, "v0", PATIENCE).await.unwrap();
    assert_eq!((back.active.as_str(), back.previous.as_str()), ("v0", "v1"));
    let c = Edge::open(addr, &prompt, &draft.compat_hash).await;
    assert_eq!((c.version.as_str(), c.out[0]), ("v0", ref_v0[0]));
    let _ = stop.send(());
}

#[tokio::test]
async fn unknown_version_is_refused_and_changes_nothing() {
    let fx = fixture();
    let model = CloudModel::with_versions(FAMILY, &fx.base, versions(&fx), "v1").unwrap();
    let (addr, stop) = start(model).await;
    match set_version(addr, "v9", PATIENCE).await {
        Err(AdminError::Refused {
            code: ErrorCode::BadRequest,
            message,
            ..
        }) => {
            assert!(
                message.contains("`v9`") && message.contains("[\"v0\", \"v1\"]"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(set_version(addr, "", PATIENCE).await.unwrap().active, "v1");

    // Several requests on one management connection; anything else ends it with BadRequest.
    let mut conn = Connection::new(TcpStream::connect(addr).await.unwrap());
    for (v, active) in [("v0", "v0"), ("v1", "v1")] {
        conn.write_message(&Message::SetVersion(SetVersion { version: v.into() }))
            .await
            .unwrap();
        match conn.read_message(Some(PATIENCE)).await.unwrap() {
            Some((_, Message::VersionAck(ack))) => assert_eq!(ack.active, active),
            other => panic!("expected VersionAck, got {other:?}"),
        }
    }
    conn.write_message(&hello(&[72], "x")).await.unwrap();
    match conn.read_message(Some(PATIENCE)).await.unwrap() {
        Some((_, Message::ErrorReply(e))) => {
            assert_eq!(e.code(), ErrorCode::BadRequest, "{}", e.message)
        }
        other => panic!("expected ErrorReply, got {other:?}"),
    }
    let _ = stop.send(());
}

#[test]
fn only_loopback_may_manage() {
    for ok in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
        assert!(management_allowed(ok.parse::<IpAddr>().unwrap()), "{ok}");
    }
    for no in [
        "10.0.0.1",
        "192.168.1.20",
        "0.0.0.0",
        "::ffff:10.0.0.1",
        "2001:db8::1",
    ] {
        assert!(!management_allowed(no.parse::<IpAddr>().unwrap()), "{no}");
    }
}

#[test]
fn cloud_model_versions_are_checked() {
    let fx = fixture();
    let e = CloudModel::with_versions(FAMILY, &fx.base, versions(&fx), "v2")
        .err()
        .unwrap();
    assert_eq!(
        (e.requested.as_str(), e.available.clone()),
        ("v2", vec!["v0".to_string(), "v1".to_string()])
    );
    let mut dup = versions(&fx);
    dup[1].name = "v0".into();
    let e = CloudModel::with_versions(FAMILY, &fx.base, dup, "v0")
        .err()
        .unwrap();
    assert!(e.requested.contains("listed twice"), "{e}");
    let m = CloudModel::with_versions(FAMILY, &fx.base, versions(&fx), "v0").unwrap();
    assert_eq!(m.set_active("v1").unwrap(), "v0");
    assert_eq!(m.active_name(), "v1");
    assert!(Arc::ptr_eq(&m.active().transformer, &fx.v1));
    assert!(m.set_active("nope").is_err());
    assert_eq!(m.active_name(), "v1", "a refused switch changes nothing");
    // The single-model constructor still serves one version.
    let single = CloudModel::new(FAMILY, "v0", &fx.base);
    assert_eq!(single.version_names(), ["v0"]);
}

/// Sessions of both versions running at once share the cloud's batched passes (each version's
/// LoRA applied to its own rows of the base's matmuls), and each stays exactly its version's
/// greedy output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_two_versions_batched_together_each_stay_lossless() {
    let fx = fixture();
    let prompts: Vec<Vec<u32>> = ["The quick brown fox ", "Lorem ipsum ", "0123"]
        .iter()
        .map(|p| p.bytes().map(u32::from).collect())
        .collect();
    let mut model = CloudModel::with_versions(FAMILY, &fx.base, versions(&fx), "v0").unwrap();
    model.stop_tokens.clear();
    let (addr, stop) = start(model).await;
    let draft = Draft::build(&DraftSpec::SharedBackbone { shared_layers: 2 }, &fx.base).unwrap();
    let mut sessions = Vec::new();
    for version in ["v0", "v1"] {
        set_version(addr, version, PATIENCE).await.unwrap();
        for (i, prompt) in prompts.iter().enumerate() {
            let t = if version == "v0" {
                &fx.base.transformer
            } else {
                &fx.v1
            };
            let own = greedy(t, prompt, &[], MAX_NEW);
            let e = Edge::open(addr, prompt, &draft.compat_hash).await;
            assert_eq!(e.version, version);
            sessions.push((e, own, i));
        }
    }
    // Every session drafts from the other version's output at its own K: some rounds are
    // accepted, some corrected; all run concurrently.
    let refs: Vec<Vec<u32>> = sessions.iter().map(|(_, own, _)| own.clone()).collect();
    let n = prompts.len();
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(s, (mut e, own, i))| {
            let guess = refs[(s + n) % (2 * n)].clone();
            tokio::spawn(async move {
                let mut r = 0;
                while !e.finished {
                    let g = if r % 2 == 0 { &guess } else { &own };
                    e.round(g, 1 + (r + i) % 4).await;
                    r += 1;
                    assert!(r < 200, "sessions must finish");
                }
                (e.out, own)
            })
        })
        .collect();
    for (s, t) in tasks.into_iter().enumerate() {
        let (out, own) = t.await.unwrap();
        assert_eq!(
            out, own,
            "session {s}: batched output differs from its version's"
        );
    }
    let _ = stop.send(());
}
