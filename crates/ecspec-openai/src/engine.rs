//! The server's shared state and one request's generation. Every request is its own edge
//! session against the cloud; the draft's weights are loaded once and shared (each session
//! has its own KV cache). Drafting runs on tokio's blocking threads, one per session drafting
//! at that moment, so concurrent sessions share the cores rather than queue behind a lock
//! (BENCHMARKS.md, "The edge as an OpenAI-compatible server", measures what that costs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ecspec_edge::SessionMemory;
use ecspec_energy::DeviceProfile;
use ecspec_link::LinkConfig;
use ecspec_run::run::{self, Outages};
use ecspec_run::{
    CloudEndpoint, Loaded, LocalCloud, ModeArg, PolicySpec, Prompt, RunSpec, SamplingArgs, Summary,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::args::EdgeServeArgs;
use crate::error::ApiError;
use crate::request::{Job, JobPrompt};

/// A generation that failed, with the text committed before the failure (never lost: a
/// streamed answer already carried it; a whole one reports it beside the error).
#[derive(Debug)]
pub struct Failure {
    /// The error to answer.
    pub error: ApiError,
    /// Text committed before the failure.
    pub partial_text: String,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            partial_text: String::new(),
        }
    }
}

/// The edge's memory across requests, and where it is kept (`--edge-memory`: the file, its
/// key, its other entries).
struct MemoryState {
    memory: Option<SessionMemory>,
    file: Option<(
        std::path::PathBuf,
        String,
        ecspec_run::edge_memory::MemoryFile,
    )>,
}

/// What every request shares: the models, the cloud, the link, the defaults and the limits.
pub struct Engine {
    loaded: Arc<Loaded>,
    /// The in-process cloud (None with `--cloud`); kept here so it lives as long as the server.
    local: Option<LocalCloud>,
    cloud: Option<CloudEndpoint>,
    /// Cloned for each request (a link model is `Send`, not `Sync`: hence the lock).
    link: Mutex<Option<LinkConfig>>,
    outages: Outages,
    mode: ModeArg,
    policy: PolicySpec,
    sampling: SamplingArgs,
    profile: Option<DeviceProfile>,
    energy_budget: Option<f64>,
    default_max_tokens: usize,
    /// The in-process cloud's budget per request (None: a remote cloud's grant is reported).
    max_tokens_cap: Option<usize>,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    /// What earlier requests learnt about the draft's acceptance (speculative mode), and the
    /// `--edge-memory` file it is kept in.
    memory: Mutex<MemoryState>,
    /// Target versions that answered so far (the in-process cloud's from the start).
    versions: Mutex<Vec<String>>,
    next_id: AtomicU64,
}

impl Engine {
    /// Loads the models, starts the in-process cloud when there is no `--cloud`, checks every
    /// setting.
    ///
    /// # Errors
    /// Invalid flags, a model that cannot be loaded, a cloud address that does not resolve.
    pub async fn start(a: &EdgeServeArgs) -> Result<Self> {
        run::sampling(&a.sampling)?;
        let link = run::link_config(&a.link)?;
        let outages = Outages::new(a.link.outage.clone())?;
        let remote = a.cloud.remote().await?;
        let need_target = remote.is_none() && a.mode != ModeArg::EdgeOnly;
        let loaded = ecspec_run::load_family(&a.models, need_target)?;
        let local = match need_target {
            true => Some(LocalCloud::start(&loaded).await?),
            false => None,
        };
        let profile = ecspec_run::energy::load_profile(&a.energy.energy_profile)?;
        let cloud = remote
            .or(local.as_ref().map(|c| c.addr.into()))
            .map(CloudEndpoint::Tcp);
        let cap = run::in_process_budget();
        // `--edge-memory`: read once here, written after each request (the requests share one
        // memory in the process; a file per request would race).
        let memory_file = match &a.sampling.edge_memory {
            Some(path) => {
                let file = ecspec_run::edge_memory::load(path)?;
                ecspec_run::edge_memory::check_writable(path)?;
                let key = ecspec_run::edge_memory::key(
                    loaded.info.wire_name,
                    &loaded.draft.compat_hash,
                    &a.draft_len.build().name(),
                );
                Some((path.clone(), key, file))
            }
            None => None,
        };
        let memory = memory_file
            .as_ref()
            .and_then(|(_, key, file)| file.get(key).cloned());
        let mut sampling = a.sampling.clone();
        sampling.edge_memory = None;
        Ok(Self {
            loaded: Arc::new(loaded),
            versions: Mutex::new(match local {
                Some(_) => vec!["v0".to_string()],
                None => Vec::new(),
            }),
            local,
            cloud,
            link: Mutex::new(link),
            outages,
            mode: a.mode,
            policy: a.draft_len.clone(),
            sampling,
            // No emulated link, no radio to model.
            profile: (!a.link.no_link).then_some(profile),
            energy_budget: a.energy.energy_budget,
            default_max_tokens: a.default_max_tokens as usize,
            max_tokens_cap: need_target.then_some(cap),
            slots: Arc::new(Semaphore::new(a.max_concurrent as usize)),
            max_concurrent: a.max_concurrent as usize,
            memory: Mutex::new(MemoryState {
                memory,
                file: memory_file,
            }),
            next_id: AtomicU64::new(1),
        })
    }

    /// The name clients use for the model: the family's (`smollm2-135m`, `qwen2.5-coder`).
    pub fn model_name(&self) -> &str {
        self.loaded.info.wire_name
    }

    /// The loaded models.
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// The in-process cloud's address, if it runs here.
    pub fn local_cloud(&self) -> Option<std::net::SocketAddr> {
        self.local.as_ref().map(|c| c.addr)
    }

    /// `GET /v1/models`.
    pub fn models(&self) -> serde_json::Value {
        let versions = self.versions.lock().map(|v| v.clone()).unwrap_or_default();
        crate::api::models(
            self.model_name(),
            &versions,
            &self.loaded.draft_desc,
            self.loaded.info.target,
        )
    }

    /// A fresh response id number.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// 404 unless `job` names this server's model.
    ///
    /// # Errors
    /// [`ApiError::unknown_model`].
    pub fn check_model(&self, job: &Job) -> Result<(), ApiError> {
        match job.model == self.model_name() {
            true => Ok(()),
            false => Err(ApiError::unknown_model(&job.model, self.model_name())),
        }
    }

    /// A generation slot, or 429 when all `--max-concurrent` are taken (held until dropped).
    ///
    /// # Errors
    /// [`ApiError::too_many`].
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| ApiError::too_many(self.max_concurrent))
    }

    /// The job's prompt tokens, its budget and its sampling settings, checked before anything
    /// is sent: errors here are the request's (400, 413), not the cloud's.
    ///
    /// # Errors
    /// A bad budget, bad sampling settings, an empty prompt, a prompt over the window.
    pub fn prepare(&self, job: &Job) -> Result<(Vec<u32>, usize, SamplingArgs), ApiError> {
        let ids = match &job.prompt {
            JobPrompt::Chat(m) => ecspec_run::prompt_tokens(&self.loaded, &Prompt::Chat(m)),
            JobPrompt::Text(t) => ecspec_run::prompt_tokens(
                &self.loaded,
                &Prompt::Raw {
                    text: t,
                    special: true,
                },
            ),
        }
        .map_err(|e| {
            let mut err = ApiError::from_generation(&e);
            if matches!(job.prompt, JobPrompt::Text(_)) && err.param.is_some() {
                err.param = Some("prompt".into());
            }
            err
        })?;
        let max_tokens = job.max_tokens.unwrap_or(self.default_max_tokens);
        if let Some(cap) = self.max_tokens_cap.filter(|&c| max_tokens > c) {
            let field = job.max_tokens_field;
            return Err(ApiError::bad_param(
                field,
                format!(
                    "{field} {max_tokens} is above the cloud's budget of {cap} tokens per request"
                ),
            ));
        }
        let mut sampling = self.sampling.clone();
        if let Some(t) = job.temperature {
            sampling.temperature = t;
        }
        if let Some(p) = job.top_p {
            sampling.top_p = p;
        }
        if let Some(k) = job.top_k {
            sampling.top_k = k;
        }
        sampling.seed = match (job.seed, self.sampling.seed) {
            (Some(s), _) => Some(s),
            // OpenAI's semantics: no seed, fresh randomness (the server's --seed, when given,
            // makes every unseeded request reproducible instead).
            (None, None) if sampling.temperature > 0.0 => {
                // A fresh draw needs no reproducing: keep the per-round rule choice that
                // `auto` makes for unseeded sampling.
                if sampling.verify == ecspec_run::VerifyArg::Auto {
                    sampling.verify = ecspec_run::VerifyArg::Switch;
                }
                Some(rand::random())
            }
            (None, s) => s,
        };
        run::sampling(&sampling)
            .map_err(|e| ApiError::bad_param("temperature", format!("{e:#}")))?;
        Ok((ids, max_tokens, sampling))
    }

    /// Runs `job` (prepared by [`Self::prepare`]); `echo` receives the text as it is
    /// committed (complete characters, cut before a stop string).
    ///
    /// # Errors
    /// A [`Failure`] with the text committed before it.
    pub async fn generate(
        &self,
        job: &Job,
        prepared: (Vec<u32>, usize, SamplingArgs),
        echo: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Summary, Failure> {
        let (ids, max_tokens, sampling) = prepared;
        let memory = self.memory.lock().ok().and_then(|m| m.memory.clone());
        let spec = RunSpec {
            mode: self.mode,
            draft_len: &self.policy,
            sampling: &sampling,
            max_tokens,
            stop: job.stop.clone(),
            link: self.link.lock().ok().and_then(|l| l.clone()),
            outages: self.outages.clone(),
            cloud: self.cloud.clone(),
            virtual_compute: None,
            memory,
            energy: self.profile.as_ref(),
            energy_budget: self.energy_budget,
        };
        match ecspec_run::run_one(&self.loaded, ids, spec, echo).await {
            Ok(s) => {
                if let (Some(m), Ok(mut state)) = (s.memory.clone(), self.memory.lock()) {
                    if let Some((path, key, file)) = state.file.as_mut() {
                        file.insert(key.clone(), m.clone());
                        if let Err(e) = ecspec_run::edge_memory::save(path, file) {
                            tracing::warn!("--edge-memory: {e:#}");
                        }
                    }
                    state.memory = Some(m);
                }
                if let Ok(mut v) = self.versions.lock() {
                    if !s.target_version.is_empty() && !v.contains(&s.target_version) {
                        v.push(s.target_version.clone());
                    }
                }
                Ok(s)
            }
            Err(e) => Err(Failure {
                error: ApiError::from_generation(&e.error),
                partial_text: e.partial_text,
            }),
        }
    }

    /// Stops the in-process cloud.
    pub async fn stop(self) {
        if let Some(c) = self.local {
            c.stop().await;
        }
    }
}

/// Checks a `--listen` address.
///
/// # Errors
/// Not `host:port`.
pub fn listen_addr(s: &str) -> Result<String> {
    s.rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .with_context(|| format!("--listen {s}: expected HOST:PORT"))?;
    Ok(s.to_string())
}
