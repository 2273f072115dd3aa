//! The JSON bodies this server answers, in OpenAI's shapes (chat completion, chat completion
//! chunk, text completion, model list), plus ECSpec's own numbers in an `ecspec` extension
//! object that OpenAI clients ignore and keep (`response.model_extra` in the Python client).

use ecspec_run::{FinishReason, Summary};
use serde_json::{json, Value};

/// Which endpoint a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Completion,
}

/// One response's identity: its id, creation time (Unix seconds) and model name.
#[derive(Debug, Clone)]
pub struct Head {
    /// `chatcmpl-…` or `cmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model name the client asked for.
    pub model: String,
    /// The endpoint.
    pub endpoint: Endpoint,
}

/// OpenAI's `finish_reason` for ours: `context` (the window filled) is OpenAI's `length`
/// (the extension keeps the exact reason).
pub fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Context | FinishReason::Error => "length",
    }
}

/// `usage`: prompt, completion and total tokens.
pub fn usage(s: &Summary) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.generated_tokens,
        "total_tokens": s.prompt_tokens + s.generated_tokens,
    })
}

/// The `ecspec` extension: how the answer was made (rounds, drafted and accepted tokens,
/// acceptance rate, bytes each way, latency, edge energy), with the summary's names.
pub fn extension(s: &Summary) -> Value {
    json!({
        "finish_reason": s.finish_reason,
        "mode": s.mode,
        "verify": s.verify,
        "draft_len": s.draft_len,
        "target_version": s.target_version,
        "rounds": s.rounds,
        "target_forward_passes": s.target_forward_passes,
        "drafted_tokens": s.drafted_tokens,
        "accepted_tokens": s.accepted_tokens,
        "acceptance_rate": s.acceptance_rate,
        "mean_accepted_tokens": s.mean_accepted_tokens,
        "uplink_bytes": s.uplink_bytes,
        "downlink_bytes": s.downlink_bytes,
        "ttft_s": s.ttft_s,
        "tpot_s": s.tpot_s,
        "goodput_tok_s": s.goodput_tok_s,
        "edge_energy_j": s.edge_energy_j,
        "energy_per_token_j": s.energy_per_token_j,
        "reconnects": s.reconnects,
        "max_tokens_granted": s.max_tokens_granted,
    })
}

/// The whole (non-streamed) response for `text`.
pub fn response(head: &Head, text: &str, s: &Summary) -> Value {
    let finish = finish_reason(s.finish_reason);
    let choice = match head.endpoint {
        Endpoint::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish,
        }),
        Endpoint::Completion => json!({
            "index": 0,
            "text": text,
            "logprobs": null,
            "finish_reason": finish,
        }),
    };
    json!({
        "id": head.id,
        "object": object(head.endpoint, false),
        "created": head.created,
        "model": head.model,
        "system_fingerprint": null,
        "choices": [choice],
        "usage": usage(s),
        "ecspec": extension(s),
    })
}

fn object(e: Endpoint, chunk: bool) -> &'static str {
    match (e, chunk) {
        (Endpoint::Chat, false) => "chat.completion",
        (Endpoint::Chat, true) => "chat.completion.chunk",
        (Endpoint::Completion, _) => "text_completion",
    }
}

/// One streamed chunk: `delta` text (chat: the first chunk also carries the role), or the
/// last one with `finish`. With `include_usage` every chunk has `"usage": null` (the usage
/// comes in [`usage_chunk`]), as OpenAI sends it.
pub fn chunk(
    head: &Head,
    delta: &str,
    first: bool,
    finish: Option<&str>,
    include_usage: bool,
) -> Value {
    let choice = match head.endpoint {
        Endpoint::Chat => {
            let d = match (first, finish) {
                (_, Some(_)) => json!({}),
                (true, None) => json!({"role": "assistant", "content": delta}),
                (false, None) => json!({"content": delta}),
            };
            json!({"index": 0, "delta": d, "logprobs": null, "finish_reason": finish})
        }
        Endpoint::Completion => {
            json!({"index": 0, "text": delta, "logprobs": null, "finish_reason": finish})
        }
    };
    let mut v = json!({
        "id": head.id,
        "object": object(head.endpoint, true),
        "created": head.created,
        "model": head.model,
        "system_fingerprint": null,
        "choices": [choice],
    });
    if include_usage {
        v["usage"] = Value::Null;
    }
    v
}

/// The streamed usage chunk (`stream_options.include_usage`): no choices, the usage and the
/// extension.
pub fn usage_chunk(head: &Head, s: &Summary) -> Value {
    json!({
        "id": head.id,
        "object": object(head.endpoint, true),
        "created": head.created,
        "model": head.model,
        "system_fingerprint": null,
        "choices": [],
        "usage": usage(s),
        "ecspec": extension(s),
    })
}

/// `GET /v1/models`: the one model this edge serves (its family), with the family's target
/// versions seen and its draft in the extension.
pub fn models(id: &str, versions: &[String], draft: &str, target: &str) -> Value {
    json!({
        "object": "list",
        "data": [{
            "id": id,
            "object": "model",
            "created": 0,
            "owned_by": "ecspec",
            "ecspec": {
                "target": target,
                "target_versions": versions,
                "draft": draft,
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(endpoint: Endpoint) -> Head {
        Head {
            id: "chatcmpl-7".into(),
            created: 1_700_000_000,
            model: "smollm2-135m".into(),
            endpoint,
        }
    }

    #[test]
    fn a_chat_response_has_openais_fields_and_the_extension() {
        let s = Summary {
            prompt_tokens: 30,
            generated_tokens: 5,
            rounds: 2,
            drafted_tokens: 6,
            accepted_tokens: 3,
            acceptance_rate: 0.5,
            uplink_bytes: 120,
            downlink_bytes: 40,
            finish_reason: FinishReason::Context,
            ..Default::default()
        };
        let v = response(&head(Endpoint::Chat), "Hello", &s);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(
            v["choices"][0]["message"],
            json!({"role": "assistant", "content": "Hello"})
        );
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35})
        );
        assert_eq!(v["ecspec"]["finish_reason"], "context");
        assert_eq!(v["ecspec"]["rounds"], 2);
        assert_eq!(v["ecspec"]["acceptance_rate"], 0.5);
        assert_eq!(v["ecspec"]["uplink_bytes"], 120);
        let c = response(&head(Endpoint::Completion), "Hello", &s);
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["choices"][0]["text"], "Hello");
    }

    #[test]
    fn chunks_carry_the_role_first_and_the_finish_last() {
        let h = head(Endpoint::Chat);
        let first = chunk(&h, "", true, None, false);
        assert_eq!(
            first["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert!(first.get("usage").is_none());
        let mid = chunk(&h, "lo", false, None, true);
        assert_eq!(mid["choices"][0]["delta"], json!({"content": "lo"}));
        assert_eq!(mid["usage"], Value::Null);
        let last = chunk(&h, "", false, Some("stop"), false);
        assert_eq!(last["choices"][0]["delta"], json!({}));
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        let u = usage_chunk(&h, &Summary::default());
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 0);
    }
}
