//! `ecspec`: the command-line front end. Parses arguments, dispatches, maps errors to exit
//! codes; everything else lives in the library crates under `crates/`.

mod cli;

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser};

use cli::{
    Cli, CloudCommand, Command, ConfigCommand, EdgeCommand, GenerateArgs, ModelsCommand, ServeArgs,
};
use ecspec_eval::{bench, demo, family_eval, family_tasks, profile};
use ecspec_run::{energy, run, ModeArg};

fn main() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // Training runs alone: it uses every core unless told otherwise.
    let default_threads = match cli.command {
        Command::Family {
            command: family_tasks::FamilyCommand::Eval(_),
        } => 1,
        Command::Family { .. } => std::thread::available_parallelism().map_or(1, |n| n.get()),
        // On the virtual clock compute speed does not change the results, only the wall time.
        Command::Bench(ref b) if b.clock == bench::ClockArg::Virtual => {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
        _ => 1,
    };
    let threads = match threads_setting(cli.threads, default_threads) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ecspec: error: {e}");
            return ExitCode::from(2);
        }
    };
    // candle's kernels and rayon both read this before their thread pools start.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ecspec: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(dispatch(cli.command, cli.config));
    // Model work on blocking threads whose request is gone (a client that left an edge
    // server mid-prefill) is abandoned at exit, not waited for.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`| head`, `| true`): a normal end, as for any Unix
        // tool, not an error to report.
        Err(e) if reader_gone(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ecspec: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The command line, with the settings of `ECSPEC_<FLAG>` environment variables and of the
/// configuration file under it (`ecspec_run::config_file`). On an error, the exit code after
/// the message (and a note naming a flag's source when it came from either).
fn parse_command_line() -> Result<Cli, ExitCode> {
    let env = |k: &str| std::env::var_os(k);
    let layered =
        ecspec_run::config_file::layer(Cli::command(), std::env::args_os().collect(), &env)
            .map_err(|e| {
                eprintln!("ecspec: error: {e}");
                ExitCode::from(2)
            })?;
    Cli::try_parse_from(&layered.args).map_err(|e| {
        let _ = e.print();
        if let Some(note) = layered.explain(&e) {
            eprintln!("{note}");
        }
        ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
    })
}

/// Whether `e` (or one of its causes) is a write to a stdout whose reader has closed it.
fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `line` and a newline to stdout. Unlike `println!`, a closed stdout is an error
/// (`reader_gone`), not a panic.
fn say(line: impl std::fmt::Display) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Most compute threads accepted (beyond the cores they only cost memory and stalls).
const MAX_THREADS: usize = 256;

/// The compute thread count: `--threads`, else `ECSPEC_THREADS`, else `default`.
fn threads_setting(flag: Option<usize>, default: usize) -> Result<usize> {
    let n = match (flag, std::env::var("ECSPEC_THREADS")) {
        (Some(n), _) => n,
        (None, Ok(v)) => v
            .trim()
            .parse()
            .with_context(|| format!("ECSPEC_THREADS={v:?} is not a number of threads"))?,
        (None, Err(_)) => default,
    };
    if !(1..=MAX_THREADS).contains(&n) {
        bail!("compute threads must be between 1 and {MAX_THREADS}, got {n}");
    }
    Ok(n)
}

/// An error and its causes on one line, leaving out a cause its parent already quotes.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !last.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
        last = c;
    }
    out
}

async fn dispatch(cmd: Command, config: Option<std::path::PathBuf>) -> Result<()> {
    match cmd {
        Command::Demo(a) => demo::run(a).await,
        Command::Generate(a) => generate(a).await,
        Command::Edge {
            command: EdgeCommand::Serve(a),
        } => ecspec_openai::server::run(a).await,
        Command::Cloud {
            command: CloudCommand::Serve(a),
        } => serve(*a).await,
        Command::Cloud {
            command: CloudCommand::SetVersion { cloud, version },
        } => set_version(&cloud, version).await,
        Command::Profile(a) => profile::run(a),
        Command::Soak(a) => ecspec_eval::soak::run(a).await,
        Command::Bench(a) => tokio::task::block_in_place(|| bench::run(a)),
        Command::Load(a) => bench::load::run(a).await,
        Command::Models { command } => models(command),
        Command::Family {
            command: family_tasks::FamilyCommand::Eval(a),
        } => family_eval::run(a).await,
        Command::Family { command } => family_tasks::run(command),
        Command::Config {
            command: ConfigCommand::Print { command },
        } => config_print(&command, config.as_deref()),
        Command::Doctor(a) => doctor(&a, config.as_deref()).await,
    }
}

/// Longest prompt read from a file or stdin (far beyond any context window; a bound so that
/// `--prompt-file /dev/zero` is an error, not an endless read).
const MAX_PROMPT_BYTES: u64 = 16 << 20;

fn read_bounded(r: impl Read, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    r.take(MAX_PROMPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the prompt from {what}"))?;
    if bytes.len() as u64 > MAX_PROMPT_BYTES {
        bail!(
            "the prompt in {what} is longer than {} MiB",
            MAX_PROMPT_BYTES >> 20
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "the prompt in {what} is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

fn read_prompt(a: &GenerateArgs) -> Result<String> {
    if let Some(p) = &a.prompt {
        return Ok(p.clone());
    }
    match &a.prompt_file {
        Some(f) if f.as_os_str() != "-" => {
            let file = std::fs::File::open(f)
                .with_context(|| format!("opening the prompt file {}", f.display()))?;
            read_bounded(file, &f.display().to_string())
        }
        _ => {
            if std::io::stdin().is_terminal() && a.prompt_file.is_none() {
                bail!("no prompt: give --prompt TEXT, --prompt-file FILE, or pipe it on stdin");
            }
            read_bounded(std::io::stdin(), "stdin")
        }
    }
}

async fn generate(a: GenerateArgs) -> Result<()> {
    let prompt = read_prompt(&a)?;
    let (_, _) = run::sampling(&a.sampling)?;
    ecspec_run::output::StopStrings::new(a.stop.clone()).context("--stop")?;
    let link = run::link_config(&a.link)?;
    let outages = run::Outages::new(a.link.outage.clone())?;
    if a.mode == ModeArg::EdgeOnly && !outages.is_empty() {
        bail!("--outage cuts the link to the cloud; --mode edge-only has none");
    }
    let remote = a.cloud.remote().await?;
    let need_target = remote.is_none() && a.mode != ModeArg::EdgeOnly;
    let budget = run::in_process_budget();
    if need_target && a.max_tokens as usize > budget {
        bail!(
            "--max-tokens {} is above the in-process cloud's budget of {budget} tokens per request",
            a.max_tokens
        );
    }
    // The in-process cloud closes a connection whose first frame arrives after its handshake
    // deadline; a Hello needs at least half the RTT to cross: say so now, not 10 s later as
    // "the cloud closed the connection during the handshake".
    if let (true, Some(l)) = (need_target, &link) {
        let deadline = ecspec_cloud::ServerConfig::default().handshake_timeout;
        if l.rtt() / 2 >= deadline {
            bail!(
                "a link RTT of {} ms: the Hello would reach the in-process cloud after its first-frame deadline of {} s (one way is half the RTT)",
                l.rtt().as_secs_f64() * 1e3,
                deadline.as_secs_f64()
            );
        }
    }
    let loaded = ecspec_run::load_family(&a.models, need_target)?;
    if !a.json && a.mode != ModeArg::CloudOnly {
        eprintln!("ecspec: draft {}", loaded.draft_desc);
    }
    let ids = match a.raw {
        true => run::prompt_tokens(
            &loaded,
            &run::Prompt::Raw {
                text: &prompt,
                special: a.special,
            },
        )?,
        false => run::prompt_tokens(&loaded, &run::Prompt::User(&prompt))?,
    };
    let local = if need_target {
        Some(run::LocalCloud::start(&loaded).await?)
    } else {
        None
    };
    let profile = energy::load_profile(&a.energy.energy_profile)?;
    let spec = run::RunSpec {
        outages,
        mode: a.mode,
        draft_len: &a.draft_len,
        sampling: &a.sampling,
        max_tokens: a.max_tokens as usize,
        stop: a.stop.clone(),
        link,
        cloud: remote
            .or(local.as_ref().map(|c| c.addr.into()))
            .map(run::CloudEndpoint::Tcp),
        virtual_compute: None,
        memory: None,
        // No emulated link, no radio to model.
        energy: (!a.link.no_link).then_some(&profile),
        energy_budget: a.energy.energy_budget,
    };
    let json = a.json;
    let mut echo = |s: &str| {
        if !json {
            run::print_now(s)
        }
    };
    if let (Some(t), Some(p)) = (&a.trace_out, &a.prompt_file) {
        let same = match (std::fs::canonicalize(t), std::fs::canonicalize(p)) {
            (Ok(x), Ok(y)) => x == y,
            _ => t == p,
        };
        if same {
            bail!(
                "--trace-out {} is the prompt file; give another path",
                t.display()
            );
        }
    }
    let mut trace = a.trace_out.as_deref().map(run::create_trace).transpose()?;
    let result = run::run_one(&loaded, ids, spec, &mut echo).await;
    if let (Some(t), Ok(s)) = (trace.as_mut(), &result) {
        run::write_round_trace(
            t,
            s,
            &serde_json::json!({ "mode": s.mode, "policy": s.draft_len }),
        )?;
        std::io::Write::flush(t)?;
    }
    if let Some(c) = local {
        c.stop().await;
    }
    if let Ok(s) = &result {
        if let Some(n) = s.max_tokens_granted {
            eprintln!(
                "ecspec: the cloud granted {n} of the {} tokens asked ({})",
                a.max_tokens,
                match s.finish_reason {
                    ecspec_run::FinishReason::Context => "its context window is full",
                    _ => "its budget per request",
                }
            );
        }
    }
    match result {
        Ok(summary) if json => say(serde_json::to_string(&summary)?)?,
        Ok(summary) => {
            // The text on stdout ends with its line; the summary goes to stderr.
            say("")?;
            eprint!("{}", run::format_summary(&summary));
        }
        Err(e) => {
            // What was committed before the failure is kept: streamed already, or in the JSON.
            if json {
                let partial = serde_json::json!({
                    "error": format!("{:#}", e.error),
                    "finish_reason": "error",
                    "text": e.partial_text,
                    "tokens": e.partial_tokens,
                    "generated_tokens": e.partial_tokens.len(),
                });
                say(partial)?;
            } else if !e.partial_tokens.is_empty() {
                say("")?;
            }
            return Err(e.error);
        }
    }
    Ok(())
}

async fn set_version(cloud: &str, version: Option<String>) -> Result<()> {
    let addr = tokio::net::lookup_host(cloud)
        .await
        .with_context(|| format!("resolving --cloud {cloud}"))?
        .next()
        .with_context(|| format!("--cloud {cloud} resolves to no address"))?;
    let ack = ecspec_cloud::set_version(
        addr,
        version.as_deref().unwrap_or(""),
        std::time::Duration::from_secs(10),
    )
    .await?;
    say(format_args!(
        "active version: {} (was {}) · versions served: {}",
        ack.active,
        ack.previous,
        ack.versions.join(", ")
    ))
}

/// The served model: every version of a manifest, or one model file.
fn cloud_model(a: &ServeArgs) -> Result<(ecspec_cloud::CloudModel, String)> {
    if let Some(path) = &a.manifest {
        let fam = ecspec_run::open_family(path, a.models.model.as_deref(), a.models.family)?;
        let model = ecspec_run::family_cloud_model(&fam, fam.manifest.active_version())?;
        return Ok((model, fam.base.name.clone()));
    }
    let loaded = ecspec_run::load_family(&a.models, true)?;
    let target = loaded.target.as_ref().context("no target model")?;
    Ok((
        ecspec_cloud::CloudModel::new(loaded.info.wire_name, &a.version, target),
        target.name.clone(),
    ))
}

async fn serve(a: ServeArgs) -> Result<()> {
    let stop = shutdown_signal();
    let (model, model_name) = cloud_model(&a)?;
    // A prompt limit the window can never reach would be a promise the cloud cannot keep.
    let room = model
        .context_length
        .saturating_sub(ecspec_cloud::MAX_BLOCK_TOKENS + 1);
    if let Some(n) = a.max_prompt_tokens.filter(|&n| n as usize > room) {
        bail!(
            "--max-prompt-tokens {n} does not fit the target's context window of {} positions (at most {room}: one block of drafts and one answer token must fit after the prompt)",
            model.context_length
        );
    }
    // Bind before saying "serving": an address in use is reported as the error it is.
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let metrics_listener = match &a.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}"))?,
        ),
        None => None,
    };
    let config = ecspec_cloud::ServerConfig {
        max_sessions: a.max_sessions as usize,
        max_batch_tokens: a.max_batch_tokens as usize,
        kv_budget_bytes: a.kv_budget.unwrap_or_else(default_kv_budget),
        max_waiting: a.max_waiting,
        admission_wait: std::time::Duration::from_secs_f64(a.admission_wait_s),
        max_block_tokens: a.max_block_tokens as usize,
        max_prompt_tokens: a.max_prompt_tokens.map_or(usize::MAX, |n| n as usize),
        max_new_tokens: a.max_new_tokens as usize,
        max_sessions_per_client: a.max_sessions_per_client as usize,
        max_rounds_per_s: a.max_rounds_per_s,
        shutdown_grace: config_grace(&a),
        auth: a
            .auth_token_file
            .as_deref()
            .map(ecspec_cloud::AuthTokens::from_file)
            .transpose()?,
        tls: match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => {
                Some(ecspec_transport::tls::TlsServer::from_pem_files(cert, key)?)
            }
            _ => None,
        },
        ..Default::default()
    };
    eprintln!(
        "ecspec cloud: serving {} ({model_name}) versions [{}], active {}, on {} · base {}… · vocab {}…",
        model.family,
        model.version_names().join(", "),
        model.active_name(),
        listener.local_addr()?,
        &model.base_hash[..12],
        &model.vocab_hash[..12]
    );
    eprintln!(
        "ecspec cloud: batches of up to {} rows · KV budget {:.1} MiB ({} KiB a position)",
        config.max_batch_tokens,
        config.kv_budget_bytes as f64 / (1u64 << 20) as f64,
        model.active().transformer.kv_bytes_per_position() / 1024
    );
    let server = ecspec_cloud::CloudServer::new(model, config);
    if let Some(ml) = metrics_listener {
        eprintln!(
            "ecspec cloud: metrics at http://{}/metrics",
            ml.local_addr()?
        );
        tokio::spawn(ecspec_cloud::serve_metrics(
            ml,
            server.metrics().clone(),
            std::future::pending(),
        ));
    }
    let grace = config_grace(&a);
    ecspec_cloud::serve(listener, server, async move {
        stop.await;
        eprintln!(
            "ecspec cloud: shutting down: no new sessions; running ones get up to {:.1} s to finish, \
             then their edges reconnect and re-open elsewhere",
            grace.as_secs_f64()
        );
    })
    .await;
    Ok(())
}

fn config_grace(a: &ServeArgs) -> std::time::Duration {
    std::time::Duration::from_secs_f64(a.shutdown_grace_s)
}

/// Ctrl-C, or SIGTERM (how service managers and orchestrators stop a server). Installed
/// before the server says it is serving, so a SIGTERM right after that line is caught.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate())
            .map_err(|e| eprintln!("ecspec cloud: cannot watch SIGTERM ({e}); Ctrl-C still stops"))
            .ok()
    };
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A quarter of this machine's memory (`/proc/meminfo`'s MemTotal), else 4 GiB: what the
/// cloud's KV caches may take together when `--kv-budget` is not given.
fn default_kv_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024 / 4)
        })
        .unwrap_or(4 << 30)
}

fn models(cmd: ModelsCommand) -> Result<()> {
    let cache = ecspec_weights::Cache::from_env().context("finding the model cache directory")?;
    match cmd {
        ModelsCommand::List => {
            for m in ecspec_weights::MODELS {
                let cached = ecspec_weights::cached_path(m, &cache).is_some();
                say(format_args!(
                    "{:<30} {:>10}  {}  {}",
                    m.name,
                    ecspec_weights::format_bytes(m.size),
                    if cached { "cached " } else { "missing" },
                    cache.model_path(m).display()
                ))?;
            }
            Ok(())
        }
        ModelsCommand::Fetch { name } => {
            let names: Vec<&str> = match name.as_deref() {
                None | Some("all") => ecspec_weights::MODELS.iter().map(|m| m.name).collect(),
                Some("smollm2") => vec!["smollm2-135m-instruct"],
                Some("qwen2.5-coder") => {
                    vec!["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
                }
                Some(n) => vec![n],
            };
            for n in names {
                let path = ecspec_run::model_path(None, n)?;
                say(format_args!("{n}: {}", path.display()))?;
            }
            Ok(())
        }
    }
}

/// `ecspec config print [COMMAND [FLAGS…]]`: each configurable command's effective settings.
fn config_print(words: &[String], config: Option<&std::path::Path>) -> Result<()> {
    let env = |k: &str| std::env::var_os(k);
    let commands = if words.is_empty() {
        ecspec_run::config_file::configurable_commands(Cli::command())
    } else {
        vec![words.to_vec()]
    };
    for (i, words) in commands.iter().enumerate() {
        let (path, flags) =
            ecspec_run::config_file::effective(Cli::command(), words, config, &env)?;
        // `--config FILE` among the command's own words counts as given there.
        let given = words
            .iter()
            .position(|w| w == "--config")
            .and_then(|i| words.get(i + 1).cloned())
            .or_else(|| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix("--config=").map(str::to_string))
            })
            .map(std::path::PathBuf::from);
        let file = ecspec_run::config_file::config_path(given.as_deref().or(config), &env);
        if i > 0 {
            say("")?;
        }
        say(ecspec_run::config_file::format_effective(&path, file.as_deref(), &flags).trim_end())?;
    }
    Ok(())
}

/// `ecspec doctor`: fails only when a check asked for on the command line failed.
async fn doctor(
    a: &ecspec_eval::doctor::DoctorArgs,
    config: Option<&std::path::Path>,
) -> Result<()> {
    let report =
        ecspec_eval::doctor::run(a, Cli::command(), config, &mut std::io::stdout()).await?;
    let failed: Vec<String> = report.failed_asked().map(|c| c.what.clone()).collect();
    if !failed.is_empty() {
        bail!("doctor: {} failed", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn no_configurable_flag_is_shadowed_by_a_variable_ecspec_reads_for_something_else() {
        // ECSPEC_DATA_DIR, ECSPEC_CACHE_DIR, …: a flag of `generate`, `cloud serve` or
        // `edge serve` with such a name would not be read from the environment.
        assert_eq!(
            ecspec_run::config_file::env_collisions(Cli::command()),
            Vec::<(String, String, String)>::new()
        );
    }
}
