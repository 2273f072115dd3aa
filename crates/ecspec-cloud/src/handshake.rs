//! The handshake check: is this edge's draft compatible with the served target, and are its
//! session settings valid? Pure: the server turns a refusal into a `HelloAck` saying why. The
//! Hello's rule and sampling settings become domain values through `ecspec_proto::domain`.

use ecspec_model::DraftKind;
use ecspec_proto::{ConversionError, ErrorCode, Hello, PROTOCOL_VERSION};
use ecspec_spec::sampling::SamplingParams;
use ecspec_spec::verify::VerifyRule;

use crate::model::CloudModel;
use crate::wire::MAX_BLOCK_TOKENS;

/// Why a session was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Error class sent on the wire.
    pub code: ErrorCode,
    /// Human-readable reason, naming what was wrong.
    pub message: String,
}

/// A validated session request.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPlan {
    /// Verification rule.
    pub rule: VerifyRule,
    /// Sampling settings.
    pub params: SamplingParams,
    /// Token budget (capped by the server and by the context window).
    pub max_new_tokens: usize,
    /// What cut the budget below the Hello's ask, if anything (told to the edge in the
    /// HelloAck so it can report why its generation ended).
    pub cut: Option<BudgetCut>,
    /// Whether the cloud generates on its own and streams every token (cloud-only baseline).
    pub autoregressive: bool,
    /// Tokens to stream right after the HelloAck (0: none; see [`ecspec_proto::Hello::stream`]).
    pub opening_stream: u32,
    /// The session's K_max: most drafted tokens per block (the Hello's ask capped by the
    /// cloud's [`Limits::max_block_tokens`]), answered in the HelloAck.
    pub max_block_tokens: usize,
}

/// Why a session's budget is below what its Hello asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetCut {
    /// The cloud's per-request budget ([`Limits::max_new_tokens`]).
    Budget,
    /// The target's context window: prompt + answer + one block of drafts.
    Context,
}

/// The cloud's per-session limits a Hello is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Cap on the token budget.
    pub max_new_tokens: usize,
    /// Cap on K_max, 1 ..= [`MAX_BLOCK_TOKENS`].
    pub max_block_tokens: usize,
    /// Longest prompt accepted, in tokens (beside the context window's own bound).
    pub max_prompt_tokens: usize,
}

impl Default for Limits {
    /// 4 096 new tokens, blocks of [`MAX_BLOCK_TOKENS`], prompts bounded by the context only.
    fn default() -> Self {
        Self {
            max_new_tokens: 4096,
            max_block_tokens: MAX_BLOCK_TOKENS,
            max_prompt_tokens: usize::MAX,
        }
    }
}

fn refuse(code: ErrorCode, message: String) -> Refusal {
    Refusal { code, message }
}

fn short(h: &str) -> &str {
    h.char_indices().nth(12).map_or(h, |(i, _)| &h[..i])
}

/// A peer-supplied name, cut for echoing back in a refusal.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Checks a [`Hello`] against the served model and the cloud's [`Limits`].
///
/// # Errors
/// A [`Refusal`] for: another protocol version; another model family; a draft built on another
/// base (shared-backbone) or with another vocabulary (independent); an unknown draft kind or
/// verification mode; invalid sampling settings; an empty or out-of-vocabulary prompt; a
/// prompt over `limits.max_prompt_tokens` or that leaves no room in the context window.
pub fn check_hello(h: &Hello, m: &CloudModel, limits: &Limits) -> Result<SessionPlan, Refusal> {
    if h.protocol_version != PROTOCOL_VERSION as u32 {
        return Err(refuse(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not supported (this cloud speaks {PROTOCOL_VERSION})",
                h.protocol_version
            ),
        ));
    }
    if h.model_family != m.family {
        return Err(refuse(
            ErrorCode::IncompatibleDraft,
            format!(
                "the draft is for model family `{}`, this cloud serves `{}`",
                clip(&h.model_family),
                m.family
            ),
        ));
    }
    let kind = DraftKind::parse(&h.draft_kind).ok_or_else(|| {
        refuse(
            ErrorCode::BadRequest,
            format!(
                "unknown draft kind `{}` (independent, shared-backbone)",
                clip(&h.draft_kind)
            ),
        )
    })?;
    let (expected, what) = match kind {
        DraftKind::SharedBackbone => (&m.base_hash, "base weights"),
        DraftKind::Independent => (&m.vocab_hash, "vocabulary"),
    };
    if !h.base_hash.eq_ignore_ascii_case(expected) {
        return Err(refuse(
            ErrorCode::IncompatibleDraft,
            format!(
                "incompatible {} draft: it was built on {what} {}…, the target's {what} are {}…",
                kind.as_str(),
                short(&h.base_hash),
                short(expected)
            ),
        ));
    }
    // The wire's rule and sampling settings as domain values (`ecspec_proto::domain`).
    let bad_request = |e: ConversionError| refuse(ErrorCode::BadRequest, e.to_string());
    let rule = h.verify_rule().map_err(bad_request)?;
    let params = h.sampling_params().map_err(bad_request)?;
    if h.prompt.is_empty() {
        return Err(refuse(ErrorCode::BadRequest, "the prompt is empty".into()));
    }
    if let Some(&bad) = h.prompt.iter().find(|&&t| t as usize >= m.vocab_size) {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "prompt token id {bad} is outside the target's vocabulary of {}",
                m.vocab_size
            ),
        ));
    }
    let resumed = h.resumed_tokens as usize;
    if resumed >= h.prompt.len() {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "resumed_tokens {resumed} leaves none of the {}-token prompt as the request's own",
                h.prompt.len()
            ),
        ));
    }
    // A re-opened session's generated tokens are not prompt: they count against the budget.
    let asked = h.prompt.len() - resumed;
    if asked > limits.max_prompt_tokens {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "the prompt has {asked} tokens; this cloud accepts at most {} (--max-prompt-tokens)",
                limits.max_prompt_tokens
            ),
        ));
    }
    let budget_left = limits.max_new_tokens.saturating_sub(resumed);
    if budget_left == 0 {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "the request has generated {resumed} tokens, this cloud's budget per request ({})",
                limits.max_new_tokens
            ),
        ));
    }
    if h.max_new_tokens == 0 {
        return Err(refuse(
            ErrorCode::BadRequest,
            "max_new_tokens must be at least 1".into(),
        ));
    }
    // Room for the prompt, the generated tokens and one round of drafts in the window.
    let room = m
        .context_length
        .saturating_sub(h.prompt.len() + MAX_BLOCK_TOKENS);
    if room == 0 {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "the prompt has {} tokens; the target's context window is {}",
                h.prompt.len(),
                m.context_length
            ),
        ));
    }
    let asked = h.max_new_tokens as usize;
    let granted = asked.min(budget_left).min(room);
    let cut = match granted < asked {
        false => None,
        true if granted == room => Some(BudgetCut::Context),
        true => Some(BudgetCut::Budget),
    };
    Ok(SessionPlan {
        rule,
        params,
        max_new_tokens: granted,
        cut,
        autoregressive: h.autoregressive,
        opening_stream: if h.autoregressive || h.stream < 2 {
            0
        } else {
            h.stream
        },
        max_block_tokens: match h.max_block_tokens as usize {
            0 => limits.max_block_tokens,
            asked => asked.min(limits.max_block_tokens),
        },
    })
}
