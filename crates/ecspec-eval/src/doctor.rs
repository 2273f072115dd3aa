//! `ecspec doctor`: what this machine and this setup give ECSpec, one check per line, each
//! `ok`, `missing` or `failed` with why: the CPU and the kernels picked for it, the model
//! cache and which models are in it (sha256-verified), the trained drafts shipped in
//! `families/`, the shared data directory (traces and prompts), the configuration file and the
//! environment variables read as flags, and whether the configured cloud answers.
//!
//! The cloud check opens a TCP connection and sends a version query (`SetVersion` with an
//! empty version, the management request `ecspec cloud set-version` sends): any well-formed
//! ECSpec reply, a `VersionAck` or an `ErrorReply` (a cloud refuses management from another
//! machine), proves an ECSpec cloud answers; the time from the query to its reply is the
//! round-trip time reported. Nothing is downloaded and nothing on the cloud changes.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use ecspec_proto::{Close, Message, SetVersion};
use ecspec_run::config_file::{self, ConfigFile, Source, Value};
use ecspec_transport::{Connection, TransportError};

/// `ecspec doctor`
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Check that an ECSpec cloud answers at HOST:PORT (the command fails if it does not)
    /// [default: the `cloud` that `generate` or `edge serve` is configured with, from
    /// `ECSPEC_CLOUD` or the configuration file; its failure is reported, not fatal].
    #[arg(long, value_name = "HOST:PORT")]
    pub cloud: Option<String>,
    /// Seconds to wait for the cloud's TCP connection, and again for its reply.
    #[arg(long, default_value_t = 5.0, value_parser = parse_timeout)]
    pub timeout_s: f64,
    /// Check cached models by size and by the sha256 marker their fetch wrote, without
    /// hashing them again (a few seconds per GB).
    #[arg(long)]
    pub quick: bool,
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 3600.0 => Ok(x),
        _ => Err(format!("`{s}` is not a number of seconds in (0, 3600]")),
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Present and working.
    Ok,
    /// Absent (optional, or fetched on first use).
    Missing,
    /// Present but broken, or not answering.
    Failed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Failed => "failed",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    /// The outcome.
    pub status: Status,
    /// What was checked (`model smollm2-135m-instruct`).
    pub what: String,
    /// What was found, or why it failed.
    pub detail: String,
    /// Lines under it (a directory's contents).
    pub more: Vec<String>,
    /// Whether the user asked for it on the command line (`--cloud`, `--config`): its
    /// failure fails the command.
    pub asked: bool,
}

impl Check {
    fn new(status: Status, what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            what: what.into(),
            detail: detail.into(),
            more: Vec::new(),
            asked: false,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} {}: {}", self.status, self.what, self.detail)?;
        for l in &self.more {
            write!(f, "\n         {l}")?;
        }
        Ok(())
    }
}

/// Every check, in the order printed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// The checks the user asked for that failed.
    pub fn failed_asked(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|c| c.asked && c.status == Status::Failed)
    }
}

/// Runs every check, writing each line to `out` as it is done. `root` is the binary's command
/// tree (for the configuration), `config` the `--config` flag's file.
///
/// # Errors
/// Only writing to `out`.
pub async fn run(
    args: &DoctorArgs,
    root: clap::Command,
    config: Option<&Path>,
    out: &mut dyn Write,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut emit = |c: Check, report: &mut Report| -> std::io::Result<()> {
        writeln!(out, "{c}")?;
        out.flush()?;
        report.checks.push(c);
        Ok(())
    };
    for c in machine_checks() {
        emit(c, &mut report)?;
    }
    for c in model_checks(args.quick).await {
        emit(c, &mut report)?;
    }
    for c in shipped_draft_checks() {
        emit(c, &mut report)?;
    }
    emit(data_dir_check(), &mut report)?;
    let env = |k: &str| std::env::var_os(k);
    let (config_check, configured_cloud) = config_checks(root, config, &env);
    emit(config_check, &mut report)?;
    let timeout = Duration::from_secs_f64(args.timeout_s);
    let cloud = match (&args.cloud, configured_cloud) {
        (Some(addr), _) => Some((addr.clone(), "--cloud".to_string(), true)),
        (None, Some((addr, source))) => Some((addr, source, false)),
        (None, None) => None,
    };
    let check = match cloud {
        Some((addr, source, asked)) => {
            let what = format!("cloud {addr} ({source})");
            let mut c = match probe_cloud(&addr, timeout).await {
                Ok(a) => Check::new(
                    Status::Ok,
                    what,
                    format!(
                        "an ECSpec cloud answers at {}: {} · RTT {} (TCP connect {})",
                        a.peer,
                        a.reply,
                        ms(a.rtt),
                        ms(a.connect)
                    ),
                ),
                Err(why) => Check::new(Status::Failed, what, why),
            };
            c.asked = asked;
            c
        }
        None => Check::new(
            Status::Ok,
            "cloud",
            "none configured (`generate` starts its own on loopback; check one with --cloud \
             HOST:PORT, or set `cloud` in [generate] or [edge.serve], or ECSPEC_CLOUD)",
        ),
    };
    emit(check, &mut report)?;
    Ok(report)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The CPU, its SIMD features and the kernels picked for it.
fn machine_checks() -> Vec<Check> {
    use ecspec_model::kernels::{cpu_summary, selected, Isa};
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = Check::new(
        Status::Ok,
        "cpu",
        format!("{} · {cores} cores", cpu_summary()),
    );
    let isa = selected();
    let available: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
    let forced = std::env::var("ECSPEC_KERNELS").is_ok_and(|v| v == "scalar");
    let why = if forced {
        " (ECSPEC_KERNELS=scalar asks for the reference)"
    } else if isa == Isa::Scalar {
        " (no SIMD path for this CPU: the portable reference, several times slower)"
    } else {
        ""
    };
    let kernels = Check::new(
        Status::Ok,
        "kernels",
        format!(
            "{}{why} · this CPU runs {}",
            isa.name(),
            available.join(", ")
        ),
    );
    vec![cpu, kernels]
}

/// The model cache and each registry model in it.
async fn model_checks(quick: bool) -> Vec<Check> {
    let root_source =
        if std::env::var_os(ecspec_weights::CACHE_DIR_ENV).is_some_and(|v| !v.is_empty()) {
            "ECSPEC_CACHE_DIR"
        } else if std::env::var_os("XDG_CACHE_HOME").is_some_and(|v| !v.is_empty()) {
            "XDG_CACHE_HOME"
        } else {
            "the home directory"
        };
    let cache = match ecspec_weights::Cache::from_env() {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::new(
                Status::Failed,
                "model cache",
                format!("{e} (set ECSPEC_CACHE_DIR)"),
            )]
        }
    };
    let models_dir = cache.models_dir();
    let mut out = vec![Check::new(
        if models_dir.is_dir() {
            Status::Ok
        } else {
            Status::Missing
        },
        "model cache",
        format!(
            "{} (from {root_source}){}",
            models_dir.display(),
            if models_dir.is_dir() {
                ""
            } else {
                ": not created yet (the first fetch creates it)"
            }
        ),
    )];
    for m in ecspec_weights::MODELS {
        let what = format!("model {}", m.name);
        let path = cache.model_path(m);
        let size = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => {
                out.push(Check::new(
                    Status::Missing,
                    what,
                    format!(
                        "not in the cache ({}; `ecspec models fetch {}`, or the first use fetches it)",
                        ecspec_weights::format_bytes(m.size),
                        m.name
                    ),
                ));
                continue;
            }
        };
        if size != m.size {
            out.push(Check::new(
                Status::Failed,
                what,
                format!(
                    "{} is {size} bytes, expected {}: an interrupted or foreign file (delete it and fetch again)",
                    path.display(),
                    m.size
                ),
            ));
            continue;
        }
        let check = if quick {
            match ecspec_weights::cached_path(m, &cache) {
                Some(p) => Check::new(
                    Status::Ok,
                    what,
                    format!(
                        "{} ({}), sha256 verified when fetched (marker; --quick)",
                        p.display(),
                        ecspec_weights::format_bytes(m.size)
                    ),
                ),
                None => Check::new(
                    Status::Failed,
                    what,
                    format!(
                        "{}: no valid sha256 marker (the next use verifies it; run without --quick to hash it now)",
                        path.display()
                    ),
                ),
            }
        } else {
            let started = Instant::now();
            let (p, sha, size) = (path.clone(), m.sha256, m.size);
            let verified =
                tokio::task::spawn_blocking(move || ecspec_weights::verify_file(&p, sha, size))
                    .await;
            match verified {
                Ok(Ok(())) => Check::new(
                    Status::Ok,
                    what,
                    format!(
                        "{} ({}), sha256 verified ({:.1} s)",
                        path.display(),
                        ecspec_weights::format_bytes(m.size),
                        started.elapsed().as_secs_f64()
                    ),
                ),
                Ok(Err(e)) => Check::new(
                    Status::Failed,
                    what,
                    format!("{e} (delete it and fetch again)"),
                ),
                Err(e) => Check::new(Status::Failed, what, format!("hashing stopped: {e}")),
            }
        };
        out.push(check);
    }
    out
}

/// The trained static drafts shipped in `families/` (sha256 against their manifests), for
/// the default number of shared layers.
fn shipped_draft_checks() -> Vec<Check> {
    use clap::ValueEnum;
    use ecspec_family::{families_dir, info, shipped_draft, FamilyName};
    const SHARED_LAYERS: usize = 4;
    FamilyName::value_variants()
        .iter()
        .filter_map(|&f| {
            let i = info(f);
            if !i.shared_backbone {
                return None;
            }
            let what = format!("shipped draft {}", f.cli_name());
            let dir = families_dir().join(i.wire_name);
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            Some(match shipped_draft(&i, SHARED_LAYERS) {
                Ok(Some(d)) => Check::new(
                    Status::Ok,
                    what,
                    format!(
                        "{} (sha256 verified){}",
                        std::fs::canonicalize(&d.anchor)
                            .unwrap_or(d.anchor)
                            .display(),
                        d.acceptance
                            .map(|a| format!(", measured acceptance {a:.2}"))
                            .unwrap_or_default()
                    ),
                ),
                Ok(None) => Check::new(
                    Status::Missing,
                    what,
                    format!(
                        "no trained anchor for {SHARED_LAYERS} shared layers in {} (the untrained one is used)",
                        dir.display()
                    ),
                ),
                Err(e) => Check::new(Status::Failed, what, e.to_string()),
            })
        })
        .collect()
}

/// The shared data directory and the traces and prompts it holds.
fn data_dir_check() -> Check {
    let dir = crate::prompts::data_dir();
    let source = if std::env::var_os("ECSPEC_DATA_DIR").is_some() {
        "ECSPEC_DATA_DIR"
    } else {
        "default ../shared/data, beside the checkout"
    };
    let shown = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    if !dir.is_dir() {
        return Check::new(
            Status::Missing,
            "shared data",
            format!(
                "{} ({source}) is not there: real link traces and the benchmark prompts come from it (set ECSPEC_DATA_DIR); built-in prompts and synthetic links still work",
                shown.display()
            ),
        );
    }
    let mut c = Check::new(
        Status::Ok,
        "shared data",
        format!("{} ({source})", shown.display()),
    );
    let prompts: Vec<String> = files_in(&dir.join("prompts"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| {
            let lines = std::fs::read_to_string(&p)
                .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
                .unwrap_or(0);
            format!("{} ({lines})", name(&p))
        })
        .collect();
    c.more.push(if prompts.is_empty() {
        "prompts: none".into()
    } else {
        format!("prompts: {}", prompts.join(", "))
    });
    // Trace sets: the directories holding files under channel/ (mahimahi/us_cellular_…).
    let channel = dir.join("channel");
    let mut sets = Vec::new();
    let mut stack = vec![channel.clone()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files = 0;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !name(&p).ends_with(".md") && !name(&p).ends_with(".txt") {
                files += 1;
            }
        }
        if files > 0 {
            let rel = d.strip_prefix(&channel).unwrap_or(&d).display().to_string();
            sets.push(format!("{rel} ({files})"));
        }
    }
    sets.sort();
    c.more.push(if sets.is_empty() {
        "traces: none".into()
    } else {
        format!("traces: {}", sets.join(", "))
    });
    let energy: Vec<String> = std::fs::read_dir(dir.join("energy"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| name(&e.path()))
        .collect();
    if !energy.is_empty() {
        c.more
            .push(format!("energy measurements: {}", energy.join(", ")));
    }
    c
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The configuration file and the environment variables read as flags; and the cloud the
/// configured `generate` or `edge serve` would use, with where it is set.
fn config_checks(
    root: clap::Command,
    flag: Option<&Path>,
    env: config_file::Env<'_>,
) -> (Check, Option<(String, String)>) {
    let mut check = match config_file::config_path(flag, env) {
        None => Check::new(
            Status::Ok,
            "config",
            format!(
                "no configuration file (optional: --config FILE or {})",
                config_file::CONFIG_ENV
            ),
        ),
        Some(path) => {
            let source = if flag.is_some() {
                "--config"
            } else {
                config_file::CONFIG_ENV
            };
            let mut c = match ConfigFile::load(&path, root.clone()) {
                Ok(f) => {
                    let sections: Vec<String> =
                        f.section_names().map(|s| format!("[{s}]")).collect();
                    Check::new(
                        Status::Ok,
                        "config",
                        format!(
                            "{} ({source}): {}",
                            path.display(),
                            if sections.is_empty() {
                                "no sections".into()
                            } else {
                                sections.join(", ")
                            }
                        ),
                    )
                }
                Err(e) => Check::new(Status::Failed, "config", e.to_string()),
            };
            c.asked = flag.is_some();
            c
        }
    };
    // Variables read as flags, per command.
    let mut cloud = None;
    for path in config_file::configurable_commands(root.clone()) {
        let words: Vec<String> = path.clone();
        let Ok((_, flags)) = config_file::effective(root.clone(), &words, flag, env) else {
            continue;
        };
        let vars: Vec<String> = flags
            .iter()
            .filter_map(|e| match &e.setting {
                Some((_, Source::Env { var })) => Some(var.clone()),
                _ => None,
            })
            .collect();
        if !vars.is_empty() {
            check.more.push(format!(
                "{}: environment {}",
                path.join(" "),
                vars.join(", ")
            ));
        }
        if cloud.is_none() && (path == ["generate"] || path == ["edge", "serve"]) {
            cloud = flags.iter().find_map(|e| match (&e.flag[..], &e.setting) {
                ("cloud", Some((Value::Values(v), src))) if !v.is_empty() => {
                    Some((v[0].clone(), src.to_string()))
                }
                _ => None,
            });
        }
    }
    (check, cloud)
}

/// A cloud's answer to the version query.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The address that answered.
    pub peer: SocketAddr,
    /// How long the TCP connection took to open.
    pub connect: Duration,
    /// From sending the query to reading the reply.
    pub rtt: Duration,
    /// The reply in words.
    pub reply: String,
}

/// Sends a version query to the cloud at `addr` (`host:port`) and times its reply; `timeout`
/// bounds the name lookup, the connection and the reply each.
///
/// # Errors
/// Why no ECSpec cloud answered, in words (refused, timed out, not ECSpec, closed).
pub async fn probe_cloud(addr: &str, timeout: Duration) -> Result<Answer, String> {
    let secs = timeout.as_secs_f64();
    let peer = tokio::time::timeout(timeout, tokio::net::lookup_host(addr))
        .await
        .map_err(|_| format!("resolving {addr} took more than {secs} s"))?
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    let started = Instant::now();
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(peer)).await {
        Err(_) => {
            return Err(format!(
                "no TCP answer from {peer} within {secs} s (no host there, or a firewall drops it)"
            ))
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(format!(
                "connection refused by {peer}: nothing listens on that port"
            ))
        }
        Ok(Err(e)) => return Err(format!("connecting to {peer}: {e}")),
        Ok(Ok(s)) => s,
    };
    let connect = started.elapsed();
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(stream);
    let sent = Instant::now();
    let tls_hint = "not an ECSpec cloud, or one serving TLS (this query is plaintext)";
    conn.write_message(&Message::SetVersion(SetVersion {
        version: String::new(),
    }))
    .await
    .map_err(|e| format!("connected, but sending to {peer} failed: {e}"))?;
    let reply = conn.read_message(Some(timeout)).await;
    let rtt = sent.elapsed();
    let _ = conn.write_message(&Message::Close(Close {})).await;
    let reply = match reply {
        Ok(Some((_, Message::VersionAck(ack)))) => format!(
            "active version {}, versions served: {}",
            ack.active,
            ack.versions.join(", ")
        ),
        Ok(Some((_, Message::ErrorReply(e)))) => format!(
            "it refused the version query ({:?}: {}), as a cloud does for management from another machine",
            e.code(),
            e.message
        ),
        Ok(Some((_, other))) => {
            return Err(format!(
                "{peer} answered {:?} to a version query: an ECSpec peer, but not a cloud",
                other.message_type()
            ))
        }
        Ok(None) => {
            return Err(format!(
                "connected, but {peer} closed the connection without a reply: {tls_hint}"
            ))
        }
        Err(TransportError::Timeout(_)) => {
            return Err(format!(
                "connected, but no reply from {peer} within {secs} s: {tls_hint}"
            ))
        }
        Err(TransportError::Frame(e)) => {
            return Err(format!(
                "connected, but {peer} does not answer in ECSpec frames ({e}): {tls_hint}"
            ))
        }
        Err(e) => return Err(format!("connected, but the exchange with {peer} failed: {e}")),
    };
    Ok(Answer {
        peer,
        connect,
        rtt,
        reply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_and_a_silent_peer_are_failures_that_say_why() {
        // Nothing listens: refused.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap().to_string();
        drop(free);
        let e = probe_cloud(&addr, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.contains("connection refused"), "{e}");
        // Accepts and says nothing: no reply in time.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let keep = tokio::spawn(async move {
            let (s, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let e = probe_cloud(&addr, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.contains("no reply") && e.contains("TLS"), "{e}");
        keep.abort();
        // Answers with something that is not ECSpec.
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = http.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = http.accept().await.unwrap();
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let e = probe_cloud(&addr, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.contains("does not answer in ECSpec frames"), "{e}");
    }
}
