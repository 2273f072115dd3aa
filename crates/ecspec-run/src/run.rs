//! Runs generations: starts the in-process cloud when no `--cloud` is given, connects the
//! edge through the emulated link, streams committed text, returns the summary.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ecspec_cloud::{serve, CloudModel, CloudServer, ServerConfig};
use ecspec_edge::{
    generate_edge_only, generate_resilient, DraftSampling, Drafter, EdgeConfig, EnergyControl,
    FinishReason, Mode, Resilience, StopSignal, Summary, Verification,
};
use ecspec_link::{CsvFormat, LinkConfig, LinkOptions};
use ecspec_model::{encode_chat, ChatMessage, LoadedModel, Role, Session};
use ecspec_spec::sampling::SamplingParams;
use ecspec_spec::verify::VerifyRule;
use ecspec_spec::verify_mode::VerifySelector;
use ecspec_spec::PolicySpec;
use tokio::sync::oneshot;

use crate::connect::Connector;
use crate::output::TextOutput;

use crate::models::Loaded;
use crate::options::{LinkArgs, ModeArg, SamplingArgs, VerifyArg};
pub use ecspec_link::Outages;

/// A cloud server running inside this process on loopback.
pub struct LocalCloud {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalCloud {
    /// Starts a server for the loaded target on 127.0.0.1 (a real TCP listener).
    pub async fn start(loaded: &Loaded) -> Result<Self> {
        Self::start_with(loaded, ServerConfig::default()).await
    }

    /// [`Self::start`] with the server's limits `config`.
    pub async fn start_with(loaded: &Loaded, config: ServerConfig) -> Result<Self> {
        let target = loaded
            .target
            .as_ref()
            .context("the in-process cloud needs the target model")?;
        Self::start_model_with(CloudModel::new(loaded.info.wire_name, "v0", target), config).await
    }

    /// Starts a server for `model` (one or several target versions) on 127.0.0.1.
    pub async fn start_model(model: CloudModel) -> Result<Self> {
        Self::start_model_with(model, ServerConfig::default()).await
    }

    /// [`Self::start_model`] with the server's limits `config`.
    pub async fn start_model_with(model: CloudModel, config: ServerConfig) -> Result<Self> {
        let server = CloudServer::new(model, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the loopback cloud")?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, server, async {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            stop: Some(tx),
            task,
        })
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

/// The in-process cloud's budget of new tokens per request ([`ServerConfig`]'s default):
/// `--max-tokens` above it is refused up front.
pub fn in_process_budget() -> usize {
    ServerConfig::default().max_new_tokens
}

/// Validated sampling settings and verification rule.
pub fn sampling(args: &SamplingArgs) -> Result<(SamplingParams, VerifyRule)> {
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed.unwrap_or(0),
    };
    params.validate().context("invalid sampling settings")?;
    args.lookup.lookup()?;
    let rule = match args.verify {
        VerifyArg::Auto | VerifyArg::Switch if params.is_greedy() => VerifyRule::Greedy,
        // A seeded sample reproduces only under match (rejection's draws depend on the draft).
        VerifyArg::Auto if args.seed.is_some() => VerifyRule::Match,
        VerifyArg::Auto | VerifyArg::Switch => VerifyRule::Rejection,
        VerifyArg::Greedy if !params.is_greedy() => {
            bail!("--verify greedy needs --temperature 0 (use match or rejection to sample)")
        }
        VerifyArg::Greedy => VerifyRule::Greedy,
        VerifyArg::Match => VerifyRule::Match,
        VerifyArg::Rejection => VerifyRule::Rejection,
    };
    if !(1..=16).contains(&args.dist_bits) {
        bail!(
            "--dist-bits must be between 1 and 16, got {}",
            args.dist_bits
        );
    }
    if args.dist_top_k == 0 {
        bail!("--dist-top-k must be at least 1");
    }
    Ok((params, rule))
}

/// The link configuration from the command line. `--no-link` still passes the bytes through
/// the link (at 1 Tbit/s and no delay, i.e. no emulation) so they are counted in one place.
pub fn link_config(args: &LinkArgs) -> Result<Option<LinkConfig>> {
    if args.no_link {
        let shaped = args.link_up_mbps.is_some()
            || args.link_down_mbps.is_some()
            || args.rtt_ms.is_some()
            || args.link_trace_up.is_some()
            || args.link_trace_down.is_some()
            || args.link_csv.is_some()
            || args.link_model_up.is_some()
            || args.link_model_down.is_some()
            || args.delay_jitter_ms.is_some()
            || args.rtt_from_trace
            || args.link_start_s.is_some();
        if shaped {
            bail!("--no-link cannot be combined with link settings (--link-*, --rtt-ms)");
        }
        return Ok(Some(
            LinkConfig::constant(1e6, 1e6, 0.0).context("the unshaped link")?,
        ));
    }
    if args.link_trace_up.is_some() != args.link_trace_down.is_some() {
        bail!("give both --link-trace-up and --link-trace-down (a trace for each direction)");
    }
    let model = |spec: &Option<String>| {
        spec.as_deref()
            .map(ecspec_link::Synthetic::parse)
            .transpose()
    };
    let (up_csv, down_csv) = match &args.link_csv {
        None if args.link_csv_format != CsvFormat::Irish5g => {
            bail!(
                "--link-csv-format {} needs --link-csv FILE",
                args.link_csv_format
            )
        }
        None => (None, None),
        Some(path) => {
            let src = |columns| ecspec_link::CsvSource {
                path: path.clone(),
                columns,
            };
            let (up, down) = args.link_csv_format.columns();
            (up.map(src), down.map(src))
        }
    };
    let opts = LinkOptions {
        up_mbps: args.link_up_mbps,
        down_mbps: args.link_down_mbps,
        rtt_ms: args.rtt_ms,
        up_trace: args.link_trace_up.clone(),
        down_trace: args.link_trace_down.clone(),
        up_csv,
        down_csv,
        up_model: model(&args.link_model_up)?,
        down_model: model(&args.link_model_down)?,
        delay_jitter_ms: args.delay_jitter_ms,
        jitter_seed: args.jitter_seed,
        rtt_from_trace: args.rtt_from_trace,
        start_s: args.link_start_s,
        ..Default::default()
    };
    Ok(Some(
        LinkConfig::from_options(&opts).context("invalid link settings")?,
    ))
}

/// Token ids of a user prompt (chat template applied unless `raw`). Control tokens come only
/// from the template's markup, never from what the user typed.
///
/// # Errors
/// An empty prompt, or one that leaves no room in the draft's context window.
pub fn prompt_ids(loaded: &Loaded, prompt: &str, raw: bool) -> Result<Vec<u32>> {
    let p = match raw {
        true => Prompt::Raw {
            text: prompt,
            special: false,
        },
        false => Prompt::User(prompt),
    };
    prompt_tokens(loaded, &p)
}

/// What a generation continues.
#[derive(Debug, Clone, Copy)]
pub enum Prompt<'a> {
    /// One user message, in the chat template (raw text when the model has none).
    User(&'a str),
    /// A conversation, in the chat template, ending with the assistant's turn to speak.
    Chat(&'a [ChatMessage]),
    /// Text as is. `special`: special-token markup in it (`<|im_start|>`…) becomes those
    /// tokens (a hand-written chat template); otherwise it is text like any other.
    Raw {
        /// The text.
        text: &'a str,
        /// Parse special tokens.
        special: bool,
    },
}

/// A prompt that cannot be generated from (a typed error inside the `anyhow` error of
/// [`prompt_tokens`], so servers can answer 400 or 413).
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// Nothing but white space.
    #[error("the prompt is empty")]
    Empty,
    /// Prompt + answer do not fit the window.
    #[error("the prompt is {tokens} tokens; the {whose} model's context window is {window} (including the answer)")]
    TooLong {
        /// Prompt tokens.
        tokens: usize,
        /// Context window, positions.
        window: usize,
        /// `target` or `draft`.
        whose: &'static str,
    },
}

/// Token ids of `prompt`, checked against the context window that bounds the generation.
///
/// # Errors
/// [`PromptError`] (empty, too long for the window) or tokenizer errors.
pub fn prompt_tokens(loaded: &Loaded, prompt: &Prompt<'_>) -> Result<Vec<u32>> {
    let m = &loaded.edge_model;
    let ids = match *prompt {
        Prompt::User(text) | Prompt::Raw { text, .. } if text.trim().is_empty() => {
            return Err(PromptError::Empty.into())
        }
        Prompt::Chat(msgs) if msgs.iter().all(|m| m.content.trim().is_empty()) => {
            return Err(PromptError::Empty.into())
        }
        Prompt::User(text) => chat_ids(m, text, false)?,
        Prompt::Raw { text, special } => m.tokenizer.encode(text, special)?,
        Prompt::Chat(msgs) => match &m.chat_template {
            Some(t) => encode_chat(&m.tokenizer, &t.render_parts(msgs, true))?,
            // No template: the turns' text, one after another.
            None => {
                let text: Vec<&str> = msgs.iter().map(|m| m.content.as_str()).collect();
                m.tokenizer.encode(&text.join("\n"), false)?
            }
        },
    };
    // Leave room for generation and one round of drafts in the window that bounds the
    // generation: the target's when it runs here (the edge streams from the cloud once the
    // draft's own window is full), else the draft's (edge-only, or a remote cloud, which
    // checks its own window too).
    let (window, whose) = match &loaded.target {
        Some(t) => (t.transformer.config().context_length, "target"),
        None => (loaded.draft.transformer.config().context_length, "draft"),
    };
    if ids.len() + 64 >= window {
        return Err(PromptError::TooLong {
            tokens: ids.len(),
            window,
            whose,
        }
        .into());
    }
    Ok(ids)
}

/// `prompt` as one user turn in `m`'s chat template (raw text when `raw` or when the model
/// has none), ready for generation.
///
/// # Errors
/// Tokenizer errors.
pub fn chat_ids(m: &LoadedModel, prompt: &str, raw: bool) -> Result<Vec<u32>> {
    let msgs = [ChatMessage {
        role: Role::User,
        content: prompt.to_string(),
    }];
    Ok(match (&m.chat_template, raw) {
        (Some(t), false) => encode_chat(&m.tokenizer, &t.render_parts(&msgs, true))?,
        _ => m.tokenizer.encode(prompt, false)?,
    })
}

/// Appends `summary`'s round records to `out` as JSON lines, each tagged with `tags`.
///
/// # Errors
/// I/O errors writing `out`.
pub fn write_round_trace(
    out: &mut dyn Write,
    summary: &Summary,
    tags: &serde_json::Value,
) -> Result<()> {
    for r in &summary.round_records {
        let mut v = serde_json::to_value(r)?;
        if let (serde_json::Value::Object(m), serde_json::Value::Object(t)) = (&mut v, tags) {
            for (k, x) in t {
                m.insert(k.clone(), x.clone());
            }
        }
        writeln!(out, "{v}")?;
    }
    Ok(())
}

/// Creates a `--trace-out` file.
///
/// # Errors
/// The file cannot be created.
pub fn create_trace(path: &std::path::Path) -> Result<std::io::BufWriter<std::fs::File>> {
    Ok(std::io::BufWriter::new(
        std::fs::File::create(path)
            .with_context(|| format!("creating the round trace {}", path.display()))?,
    ))
}

/// One generation's settings.
pub struct RunSpec<'a> {
    /// Mode.
    pub mode: ModeArg,
    /// Draft-length policy (a fresh one is built for the generation).
    pub draft_len: &'a PolicySpec,
    /// Sampling.
    pub sampling: &'a SamplingArgs,
    /// Token budget.
    pub max_tokens: usize,
    /// Stop strings (at most [`crate::output::MAX_STOP_STRINGS`]): the generation ends when
    /// its text contains one; the text is cut before it and the finish reason is `stop`.
    pub stop: Vec<String>,
    /// Link (None: direct).
    pub link: Option<LinkConfig>,
    /// Outages of the link (`--outage`): each resets the connection; the edge reconnects.
    pub outages: ecspec_link::Outages,
    /// The cloud.
    pub cloud: Option<CloudEndpoint>,
    /// Virtual clock: the edge's modelled compute times (the caller runs the generation on a
    /// paused tokio clock, and the in-memory cloud has its own). None: the live clock.
    pub virtual_compute: Option<ecspec_spec::compute::EdgeCompute>,
    /// What earlier requests left (`--edge-memory FILE` takes precedence). The summary
    /// returns the updated memory.
    pub memory: Option<ecspec_edge::SessionMemory>,
    /// Device profile the edge energy is computed with (None: not computed).
    pub energy: Option<&'a ecspec_energy::DeviceProfile>,
    /// Edge energy budget, J per committed token, that the `ecspec` policy keeps on average
    /// (needs `energy`).
    pub energy_budget: Option<f64>,
}

/// Where the cloud is.
#[derive(Clone)]
pub enum CloudEndpoint {
    /// A server reached over TCP.
    Tcp(Remote),
    /// A server in this process, reached over an in-memory pipe (no sockets: what the virtual
    /// clock needs, since only tokio timers may advance its time).
    InMemory(Arc<CloudServer>),
}

/// A cloud reached over TCP: its address, the token it may require, and TLS.
#[derive(Clone, Debug)]
pub struct Remote {
    /// The cloud's address.
    pub addr: SocketAddr,
    /// Auth token sent in the Hello (`--auth-token-file`: its first token).
    pub auth_token: Option<String>,
    /// TLS to the cloud (`--tls-ca`); None: plaintext.
    pub tls: Option<ecspec_transport::tls::TlsClient>,
}

impl Remote {
    /// The cloud at `cloud` (host:port, resolved now) with the edge's `--auth-token-file` (its
    /// first token) and `--tls-ca` (the certificate is checked against the host of `cloud`).
    ///
    /// # Errors
    /// `cloud` does not resolve; the token file or the CA cannot be read.
    pub async fn resolve(
        cloud: &str,
        auth_token_file: Option<&std::path::Path>,
        tls_ca: Option<&std::path::Path>,
    ) -> Result<Self> {
        let addr = tokio::net::lookup_host(cloud)
            .await
            .with_context(|| format!("resolving --cloud {cloud}"))?
            .next()
            .with_context(|| format!("--cloud {cloud} resolves to no address"))?;
        let auth_token = auth_token_file.map(read_auth_token).transpose()?;
        let tls = match tls_ca {
            Some(ca) => {
                let host = cloud
                    .rsplit_once(':')
                    .map_or(cloud, |(h, _)| h)
                    .trim_matches(['[', ']']);
                Some(ecspec_transport::tls::TlsClient::from_ca_file(ca, host)?)
            }
            None => None,
        };
        Ok(Self {
            addr,
            auth_token,
            tls,
        })
    }
}

impl From<SocketAddr> for Remote {
    /// Plaintext, no token.
    fn from(addr: SocketAddr) -> Self {
        Self {
            addr,
            auth_token: None,
            tls: None,
        }
    }
}

/// The first token of an auth token file (one per line; blank lines and `#` comments
/// skipped), for the edge's `--auth-token-file`.
///
/// # Errors
/// The file cannot be read or holds no token.
pub fn read_auth_token(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--auth-token-file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "--auth-token-file {} holds no token (one per line; # comments skipped)",
                path.display()
            )
        })
}

/// A failed generation, with what was committed before the failure (never lost).
#[derive(Debug)]
pub struct RunError {
    /// What went wrong.
    pub error: anyhow::Error,
    /// Tokens committed before the failure.
    pub partial_tokens: Vec<u32>,
    /// Their text.
    pub partial_text: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for RunError {}

impl From<anyhow::Error> for RunError {
    fn from(error: anyhow::Error) -> Self {
        Self {
            error,
            partial_tokens: Vec::new(),
            partial_text: String::new(),
        }
    }
}

/// Runs one generation; `echo` receives the text as it is committed: complete characters
/// only, cut before the first of `spec.stop` (which then ends the generation). The summary's
/// `text` is exactly what `echo` received.
///
/// # Errors
/// A [`RunError`] holding the tokens committed before the failure.
pub async fn run_one(
    loaded: &Loaded,
    prompt: Vec<u32>,
    spec: RunSpec<'_>,
    echo: &mut (dyn FnMut(&str) + Send),
) -> Result<Summary, RunError> {
    let tokenizer = loaded.edge_model.tokenizer.clone();
    let mut output = TextOutput::new(spec.stop.clone()).context("--stop")?;
    let stop = StopSignal::default();
    let mut partial = Vec::new();
    let mut on_commit = |ids: &[u32]| {
        partial.extend_from_slice(ids);
        for &id in ids {
            let s = output.push(&tokenizer, id);
            if !s.is_empty() {
                echo(&s);
            }
            if output.stopped() {
                stop.raise();
                break;
            }
        }
    };
    let result = run_inner(loaded, prompt, spec, stop.clone(), &mut on_commit).await;
    let tail = output.finish();
    match result {
        Ok(mut summary) => {
            if !tail.is_empty() {
                echo(&tail);
            }
            summary.text = output.text().to_string();
            Ok(summary)
        }
        Err(error) => Err(RunError {
            error,
            partial_tokens: partial,
            partial_text: output.text().to_string(),
        }),
    }
}

/// The edge's draft model session for `sampling`'s draft distribution settings.
fn drafter(
    loaded: &Loaded,
    sampling: &SamplingArgs,
    rule: VerifyRule,
    params: SamplingParams,
) -> Drafter {
    Drafter::new(
        Session::new(loaded.draft.transformer.clone()),
        DraftSampling {
            rule,
            params,
            dist_top_k: sampling.dist_top_k,
            dist_bits: sampling.dist_bits,
        },
    )
}

/// The edge's settings of one speculative or cloud-only generation (`spec.memory` included,
/// `--edge-memory` not read) and, when speculative, its drafter: what [`run_one`] runs and what
/// `ecspec load` builds for every request.
///
/// # Errors
/// Invalid sampling, policy or energy settings; edge-only mode (it has no cloud session).
pub fn edge_setup(loaded: &Loaded, spec: &RunSpec<'_>) -> Result<(EdgeConfig, Option<Drafter>)> {
    let (params, rule) = sampling(spec.sampling)?;
    let tokenizer = &loaded.edge_model.tokenizer;
    let mode = match spec.mode {
        ModeArg::Speculative => Mode::Speculative,
        ModeArg::CloudOnly => Mode::CloudOnly,
        ModeArg::EdgeOnly => bail!("edge-only generation has no cloud session to set up"),
    };
    // `--verify switch` (and `auto` without a seed) at temperature > 0: match or rejection
    // per round, by the channel.
    let switch = rule == VerifyRule::Rejection
        && matches!(spec.sampling.verify, VerifyArg::Auto | VerifyArg::Switch);
    let cfg = EdgeConfig {
        verify_switch: switch.then(VerifySelector::default),
        pipeline: spec.sampling.pipeline_draft,
        memory: spec.memory.clone(),
        acceptance_prior: loaded.acceptance_prior,
        virtual_compute: spec.virtual_compute,
        drafter: spec.sampling.lookup.drafter,
        lookup: spec.sampling.lookup.lookup()?,
        load_aware: true,
        auth_token: match &spec.cloud {
            Some(CloudEndpoint::Tcp(r)) => r.auth_token.clone(),
            _ => None,
        },
        max_block_tokens: 0,
        stop: Default::default(),
        family: loaded.info.wire_name.to_string(),
        draft_kind: loaded.draft.kind,
        compat_hash: loaded.draft.compat_hash.clone(),
        rule,
        params,
        max_new_tokens: spec.max_tokens,
        mode,
        policy: spec.draft_len.build(),
        timeout: Duration::from_secs(120),
        vocab_size: tokenizer.vocab_size(),
        energy: match spec.energy {
            Some(p) => Some(EnergyControl {
                draft_power_w: p.compute_power_w,
                radio_power_w: p.radio_profile().active_base_w,
                budget: spec
                    .energy_budget
                    // V = b/20: overspending one token's budget prices energy at 20 tok/s per J/token.
                    .map(|b| ecspec_energy::EnergyBudget::per_token(b, b / 20.0))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--energy-budget: {e}"))?,
            }),
            None if spec.energy_budget.is_some() => {
                bail!("--energy-budget needs an emulated link and a device profile (not --no-link)")
            }
            None => None,
        },
    };
    let d = (mode == Mode::Speculative).then(|| drafter(loaded, spec.sampling, rule, params));
    Ok((cfg, d))
}

async fn run_inner(
    loaded: &Loaded,
    prompt: Vec<u32>,
    spec: RunSpec<'_>,
    stop: StopSignal,
    on_commit: &mut (dyn FnMut(&[u32]) + Send),
) -> Result<Summary> {
    if spec.mode == ModeArg::EdgeOnly {
        let (params, rule) = sampling(spec.sampling)?;
        let mut d = drafter(loaded, spec.sampling, rule, params);
        let stops = loaded.edge_model.tokenizer.stop_tokens().to_vec();
        let p = prompt.clone();
        let mut decode =
            || generate_edge_only(&mut d, &p, spec.max_tokens, &stops, &stop, on_commit);
        // A single-thread runtime (the virtual clock) has nothing else to run meanwhile.
        let (tokens, ttft, total) = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => decode(),
            _ => tokio::task::block_in_place(decode),
        }?;
        let finish = if stop.is_raised() || tokens.last().is_some_and(|t| stops.contains(t)) {
            FinishReason::Stop
        } else if tokens.len() >= spec.max_tokens {
            FinishReason::Length
        } else {
            FinishReason::Context
        };
        let mut summary = edge_only_summary(loaded, &prompt, tokens, ttft, total);
        summary.finish_reason = finish;
        return Ok(summary);
    }
    let (mut cfg, d) = edge_setup(loaded, &spec)?;
    cfg.stop = stop;
    let mode = cfg.mode;
    let memory = match (&spec.sampling.edge_memory, mode) {
        (Some(path), Mode::Speculative) => {
            let file = crate::edge_memory::load(path)?;
            crate::edge_memory::check_writable(path)?;
            let key = crate::edge_memory::key(&cfg.family, &cfg.compat_hash, &cfg.policy.name());
            cfg.memory = file.get(&key).cloned();
            Some((path, file, key))
        }
        _ => None,
    };
    let rates = spec
        .link
        .as_ref()
        .map(|l| (l.uplink.mean_rate_bps(), l.downlink.mean_rate_bps()));
    let endpoint = spec.cloud.clone().context("no cloud address")?;
    let (tcp_addr, tls) = match &endpoint {
        CloudEndpoint::Tcp(r) => (Some(r.addr), r.tls.is_some()),
        CloudEndpoint::InMemory(_) => (None, false),
    };
    let connector = Connector::new(endpoint, spec.link.clone(), spec.outages.clone());
    let stream = connector
        .connect_first()
        .await
        .with_context(|| match (tcp_addr, tls) {
            (Some(addr), true) => format!(
                "connecting to the cloud at {addr} (a TLS handshake failure means it does not \
             serve TLS with a certificate from --tls-ca for this name)"
            ),
            (Some(addr), false) => format!("connecting to the cloud at {addr}"),
            (None, _) => "connecting to the in-process cloud".into(),
        })?;
    let counter = connector.counter();
    let counter = counter
        .as_deref()
        .map(|c| c as &dyn ecspec_edge::ByteCounter);
    let resilience = Resilience::new(connector.reconnect());
    let result = generate_resilient(stream, counter, cfg, d, prompt, on_commit, resilience).await;
    connector.finish(result.is_err()).await;
    let mut summary = result?;
    if let (Some(profile), Some((up, down))) = (spec.energy, rates) {
        crate::energy::account(&mut summary, profile, up, down)?;
    }
    if let (Some((path, mut file, key)), Some(m)) = (memory, summary.memory.clone()) {
        file.insert(key, m);
        crate::edge_memory::save(path, &file)?;
    }
    Ok(summary)
}

fn edge_only_summary(
    loaded: &Loaded,
    prompt: &[u32],
    tokens: Vec<u32>,
    ttft: Duration,
    total: Duration,
) -> Summary {
    let n = tokens.len();
    Summary {
        text: loaded.edge_model.tokenizer.decode(&tokens),
        tokens,
        generated_tokens: n,
        prompt_tokens: prompt.len(),
        rounds: 0,
        target_forward_passes: 0,
        drafted_tokens: 0,
        accepted_tokens: 0,
        mean_accepted_tokens: 0.0,
        acceptance_rate: 0.0,
        goodput_tok_s: n as f64 / total.as_secs_f64(),
        ttft_s: ttft.as_secs_f64(),
        tpot_s: if n > 1 {
            (total - ttft).as_secs_f64() / (n - 1) as f64
        } else {
            0.0
        },
        total_s: total.as_secs_f64(),
        draft_s: total.as_secs_f64(),
        uplink_bytes: 0,
        downlink_bytes: 0,
        uplink_bytes_per_token: 0.0,
        downlink_bytes_per_token: 0.0,
        mode: Mode::EdgeOnly,
        verify: Verification::None,
        draft_len: "none".into(),
        model_family: loaded.info.wire_name.into(),
        target_version: "none".into(),
        round_records: Vec::new(),
        ..Default::default()
    }
}

/// Prints text to stdout immediately.
pub fn print_now(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// The human-readable summary block.
pub fn format_summary(s: &Summary) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "--- {} · verify {} · draft length {} · {} (target {})\n",
        s.mode, s.verify, s.draft_len, s.model_family, s.target_version
    ));
    o.push_str(&format!(
        "generated tokens {:>6}   rounds {:>5}   target forward passes {:>5}\n",
        s.generated_tokens, s.rounds, s.target_forward_passes
    ));
    if s.drafted_tokens > 0 {
        o.push_str(&format!(
            "mean accepted tokens {:.2}/round   acceptance rate {:.3} ({} of {} drafted)\n",
            s.mean_accepted_tokens, s.acceptance_rate, s.accepted_tokens, s.drafted_tokens
        ));
    } else if s.rounds > 0 {
        o.push_str(&format!(
            "mean accepted tokens {:.2}/round   acceptance rate n/a (nothing drafted)\n",
            s.mean_accepted_tokens
        ));
    }
    o.push_str(&format!(
        "goodput {:.1} tok/s   TTFT {:.3} s   TPOT {:.4} s   total {:.2} s   drafting {:.2} s\n",
        s.goodput_tok_s, s.ttft_s, s.tpot_s, s.total_s, s.draft_s
    ));
    o.push_str(&format!(
        "uplink {} B ({:.1} B/token)   downlink {} B ({:.1} B/token)\n",
        s.uplink_bytes, s.uplink_bytes_per_token, s.downlink_bytes, s.downlink_bytes_per_token
    ));
    if let (Some(b), Some(spent)) = (s.energy_budget_j_per_token, s.budget_spent_j_per_token) {
        o.push_str(&format!(
            "energy budget {b:.3} J/token · the policy's energy model spent {spent:.3} J/token\n"
        ));
    }
    if let (Some(e), Some(per), Some(p)) =
        (s.edge_energy_j, s.energy_per_token_j, &s.energy_profile)
    {
        o.push_str(&format!(
            "edge energy {e:.2} J ({per:.3} J/token, device profile {p})\n"
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecspec_edge::RoundRecord;

    #[test]
    fn round_trace_has_one_tagged_line_per_round() {
        let rec = |round, k, accepted| RoundRecord {
            round,
            t_s: 0.5 * round as f64,
            k,
            verify: ecspec_edge::RoundVerify::Greedy,
            source: ecspec_edge::RoundSource::Model,
            reused: 0,
            pre_draft_s: 0.0,
            accepted,
            draft_s: 0.01,
            wait_s: 0.07,
            cloud_compute_s: 0.02,
            uplink_bytes: 20,
            downlink_bytes: 19,
            alpha_estimate: 0.5,
            uplink_bps_estimate: 1e7,
            rtt_s_estimate: 0.06,
            energy_j: Some(0.25),
        };
        let s = Summary {
            round_records: vec![rec(1, 4, 2), rec(2, 3, 3)],
            ..Default::default()
        };
        let mut out = Vec::new();
        write_round_trace(&mut out, &s, &serde_json::json!({"prompt": 7})).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["round"], 2);
        assert_eq!(lines[1]["k"], 3);
        assert_eq!(lines[1]["accepted"], 3);
        assert_eq!(lines[1]["t_s"], 1.0);
        assert_eq!(lines[0]["prompt"], 7);
        assert_eq!(lines[0]["uplink_bps_estimate"], 1e7);
        assert_eq!(lines[0]["energy_j"], 0.25);
        assert_eq!(lines[0]["verify"], "greedy");
        assert_eq!(lines[0]["source"], "model");
    }

    /// The typed labels reach JSON as the names the string fields had.
    #[test]
    fn summary_labels_serialize_as_their_names() {
        use ecspec_edge::{RoundSource, RoundVerify};
        fn json(v: &impl serde::Serialize) -> serde_json::Value {
            serde_json::to_value(v).unwrap()
        }
        for m in [Mode::Speculative, Mode::CloudOnly, Mode::EdgeOnly] {
            assert_eq!(json(&m), serde_json::json!(m.as_str()));
        }
        for v in [
            Verification::None,
            Verification::Greedy,
            Verification::Match,
            Verification::Rejection,
            Verification::Auto,
        ] {
            assert_eq!(json(&v), serde_json::json!(v.as_str()));
        }
        for v in [
            RoundVerify::None,
            RoundVerify::Greedy,
            RoundVerify::Match,
            RoundVerify::Rejection,
        ] {
            assert_eq!(json(&v), serde_json::json!(v.as_str()));
        }
        for s in [RoundSource::None, RoundSource::Model, RoundSource::Lookup] {
            assert_eq!(json(&s), serde_json::json!(s.as_str()));
        }
        assert_eq!(json(&Mode::CloudOnly), serde_json::json!("cloud-only"));
    }
}
