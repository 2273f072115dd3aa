//! An OpenAI request body → a checked [`Job`]: the model, the prompt, the sampling settings,
//! the budget, the stop strings and how to answer. Every bad field is a 400 naming it; fields
//! ECSpec does not implement (n > 1, logprobs, penalties, tools) are refused, not ignored,
//! since ignoring them would change what the client asked for. Other unknown fields are
//! ignored, as OpenAI-compatible servers do.

use ecspec_model::{ChatMessage, Role};
use ecspec_run::output::{StopStrings, MAX_STOP_STRINGS};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// What a request asks the edge to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum JobPrompt {
    /// `/v1/chat/completions`: the conversation, in the model's chat template.
    Chat(Vec<ChatMessage>),
    /// `/v1/completions`: raw text (special-token markup in it is parsed: a hand-written
    /// template works, as in llama.cpp's and vLLM's completions).
    Text(String),
}

/// A checked request.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The model name as the client gave it (echoed in the response).
    pub model: String,
    /// What to continue.
    pub prompt: JobPrompt,
    /// Token budget (None: the server's default).
    pub max_tokens: Option<usize>,
    /// The field that gave `max_tokens` (`max_tokens` or `max_completion_tokens`), for errors.
    pub max_tokens_field: &'static str,
    /// Top-k cut (vLLM's extension; None: the server's default).
    pub top_k: Option<usize>,
    /// Sampling temperature, 0 ..= 2 (None: the server's default).
    pub temperature: Option<f32>,
    /// Nucleus mass, (0, 1] (None: the server's default).
    pub top_p: Option<f32>,
    /// Seed (None: the server's default); with a seed a sampled answer is reproducible.
    pub seed: Option<u64>,
    /// Stop strings (at most [`MAX_STOP_STRINGS`]).
    pub stop: Vec<String>,
    /// Answer as server-sent events.
    pub stream: bool,
    /// Streamed: send a last chunk with the usage.
    pub include_usage: bool,
}

/// Parses a `/v1/chat/completions` body.
///
/// # Errors
/// 400 naming the field at fault.
pub fn chat(body: &[u8]) -> Result<Job, ApiError> {
    let o = object(body)?;
    let messages = match o.get("messages") {
        None | Some(Value::Null) => {
            return Err(ApiError::bad_param("messages", "`messages` is required"))
        }
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(ApiError::bad_param(
                "messages",
                "`messages` must not be empty",
            ))
        }
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(ApiError::bad_param(
                "messages",
                "`messages` must be an array of {role, content} objects",
            ))
        }
    };
    common(&o, JobPrompt::Chat(messages), "max_completion_tokens")
}

/// Parses a `/v1/completions` body.
///
/// # Errors
/// 400 naming the field at fault.
pub fn completion(body: &[u8]) -> Result<Job, ApiError> {
    let o = object(body)?;
    let prompt = match o.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_param(
                "prompt",
                "`prompt` must be one string (batches of prompts and token-id prompts are not supported)",
            ))
        }
        None | Some(Value::Null) => {
            return Err(ApiError::bad_param("prompt", "`prompt` is required"))
        }
        Some(_) => return Err(ApiError::bad_param("prompt", "`prompt` must be a string")),
    };
    let checks: [FieldCheck; 3] = [
        ("echo", |v| v.is_null() || v == &Value::Bool(false)),
        ("suffix", |v| {
            v.is_null() || v == &Value::String(String::new())
        }),
        ("best_of", |v| v.is_null() || v.as_u64() == Some(1)),
    ];
    for (field, ok) in checks {
        if let Some(v) = o.get(field).filter(|v| !ok(v)) {
            return Err(ApiError::bad_param(
                field,
                format!("`{field}` = {v} is not supported by this server"),
            ));
        }
    }
    common(&o, JobPrompt::Text(prompt), "max_tokens")
}

/// A field's name and whether its value is one this server honours.
type FieldCheck = (&'static str, fn(&Value) -> bool);

fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

fn message(i: usize, m: &Value) -> Result<ChatMessage, ApiError> {
    let param = format!("messages[{i}]");
    let o = m
        .as_object()
        .ok_or_else(|| ApiError::bad_param(&param, format!("`{param}` must be an object")))?;
    let role = match o.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some(other) => {
            return Err(ApiError::bad_param(
                &format!("{param}.role"),
                format!(
                    "`{param}.role` `{other}` is not supported (system, developer, user, assistant)"
                ),
            ))
        }
        None => {
            return Err(ApiError::bad_param(
                &format!("{param}.role"),
                format!("`{param}.role` is required (a string)"),
            ))
        }
    };
    let content = match o.get("content") {
        Some(Value::String(s)) => s.clone(),
        // The assistant's turn may carry only tool calls: no text.
        None | Some(Value::Null) if role == Role::Assistant => String::new(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    _ => {
                        return Err(ApiError::bad_param(
                            &format!("{param}.content[{j}]"),
                            format!(
                                "`{param}.content[{j}]` must be a text part {{\"type\": \"text\", \"text\": …}} (this model reads text only)"
                            ),
                        ))
                    }
                }
            }
            text
        }
        _ => {
            return Err(ApiError::bad_param(
                &format!("{param}.content"),
                format!("`{param}.content` must be a string or an array of text parts"),
            ))
        }
    };
    Ok(ChatMessage { role, content })
}

/// The fields both endpoints share. `budget_field` is the token-budget name the endpoint
/// documents (chat: `max_completion_tokens`, with `max_tokens` as its older name).
fn common(
    o: &Map<String, Value>,
    prompt: JobPrompt,
    budget_field: &'static str,
) -> Result<Job, ApiError> {
    let model = match o.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(ApiError::bad_param(
                "model",
                "`model` is required (a string)",
            ))
        }
    };
    let mut max_tokens = None;
    let mut max_tokens_field = budget_field;
    for field in [budget_field, "max_tokens"] {
        match o.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => {
                    if max_tokens.is_none() {
                        max_tokens = Some(n as usize);
                        max_tokens_field = field;
                    }
                }
                _ => {
                    return Err(ApiError::bad_param(
                        field,
                        format!("`{field}` must be an integer of at least 1, got {v}"),
                    ))
                }
            },
        }
    }
    let temperature = number(o, "temperature", 0.0, 2.0, true)?;
    let top_k = match o.get("top_k") {
        None | Some(Value::Null) => None,
        // vLLM's convention: -1 (or 0) is no cut.
        Some(v) if v.as_i64() == Some(-1) => Some(0),
        Some(v) => match v.as_u64() {
            Some(k) => Some(k as usize),
            None => {
                return Err(ApiError::bad_param(
                    "top_k",
                    format!("`top_k` must be an integer of at least 0 (or -1: no cut), got {v}"),
                ))
            }
        },
    };
    let top_p = number(o, "top_p", 0.0, 1.0, false)?;
    let seed = match o.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => match (v.as_u64(), v.as_i64()) {
            (Some(n), _) => Some(n),
            // OpenAI's seed is an int64: a negative one is a seed like any other.
            (None, Some(n)) => Some(n as u64),
            _ => {
                return Err(ApiError::bad_param(
                    "seed",
                    format!("`seed` must be an integer, got {v}"),
                ))
            }
        },
    };
    let stop = match o.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::bad_param("stop", "`stop` must be a string or an array of strings")
            })?,
        Some(_) => {
            return Err(ApiError::bad_param(
                "stop",
                "`stop` must be a string or an array of strings",
            ))
        }
    };
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::bad_param(
            "stop",
            format!(
                "`stop` may hold at most {MAX_STOP_STRINGS} strings, got {}",
                stop.len()
            ),
        ));
    }
    StopStrings::new(stop.clone()).map_err(|e| ApiError::bad_param("stop", e.to_string()))?;
    let stream = match o.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(ApiError::bad_param(
                "stream",
                format!("`stream` must be true or false, got {v}"),
            ))
        }
    };
    let include_usage = match o.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(so)) if stream => match so.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(ApiError::bad_param(
                    "stream_options.include_usage",
                    format!("`stream_options.include_usage` must be true or false, got {v}"),
                ))
            }
        },
        Some(Value::Object(_)) => {
            return Err(ApiError::bad_param(
                "stream_options",
                "`stream_options` is only allowed when `stream` is true",
            ))
        }
        Some(_) => {
            return Err(ApiError::bad_param(
                "stream_options",
                "`stream_options` must be an object",
            ))
        }
    };
    unsupported(o)?;
    Ok(Job {
        model,
        prompt,
        max_tokens,
        max_tokens_field,
        top_k,
        temperature,
        top_p,
        seed,
        stop,
        stream,
        include_usage,
    })
}

/// A number field in `lo ..= hi` (`lo` excluded unless `lo_ok`).
fn number(
    o: &Map<String, Value>,
    field: &str,
    lo: f64,
    hi: f64,
    lo_ok: bool,
) -> Result<Option<f32>, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (x > lo || (lo_ok && x == lo)) && x <= hi => Ok(Some(x as f32)),
            _ => Err(ApiError::bad_param(
                field,
                format!(
                    "`{field}` must be a number {} {lo} and at most {hi}, got {v}",
                    if lo_ok { "of at least" } else { "above" }
                ),
            )),
        },
    }
}

/// Fields with a meaning this server does not implement, at a value that asks for it.
fn unsupported(o: &Map<String, Value>) -> Result<(), ApiError> {
    fn zero(v: &Value) -> bool {
        v.is_null() || v.as_f64() == Some(0.0)
    }
    fn absent(v: &Value) -> bool {
        v.is_null()
    }
    fn text_only(v: &Value) -> bool {
        v.is_null() || v.as_array().is_some_and(|a| a.iter().all(|m| m == "text"))
    }
    let checks: [FieldCheck; 13] = [
        ("n", |v| v.is_null() || v.as_u64() == Some(1)),
        ("logprobs", |v| v.is_null() || v == &Value::Bool(false)),
        ("top_logprobs", |v| v.is_null() || v.as_u64() == Some(0)),
        ("presence_penalty", zero),
        ("frequency_penalty", zero),
        ("logit_bias", |v| {
            v.is_null() || v.as_object().is_some_and(Map::is_empty)
        }),
        ("tools", |v| {
            v.is_null() || v.as_array().is_some_and(Vec::is_empty)
        }),
        ("tool_choice", |v| v.is_null() || v == "none"),
        ("functions", absent),
        ("function_call", |v| v.is_null() || v == "none"),
        ("audio", absent),
        ("modalities", text_only),
        ("response_format", |v| {
            v.is_null() || v.get("type").and_then(Value::as_str) == Some("text")
        }),
    ];
    for (field, ok) in checks {
        if let Some(v) = o.get(field).filter(|v| !ok(v)) {
            return Err(ApiError::bad_param(
                field,
                format!("`{field}` = {v} is not supported by this server"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    fn err(r: Result<Job, ApiError>) -> (StatusCode, String, String) {
        let e = r.unwrap_err();
        (e.status, e.param.unwrap_or_default(), e.message)
    }

    #[test]
    fn a_full_chat_request_is_read_field_by_field() {
        let body = json!({
            "model": "smollm2-135m",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null},
            ],
            "max_completion_tokens": 12,
            "max_tokens": 99,
            "temperature": 0.7,
            "top_p": 0.9,
            "seed": -1,
            "stop": ["\n\n", "END"],
            "stream": true,
            "stream_options": {"include_usage": true},
            "n": 1,
            "user": "ignored",
        });
        let job = chat(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            job.prompt,
            JobPrompt::Chat(vec![
                ChatMessage {
                    role: Role::System,
                    content: "Be brief.".into()
                },
                ChatMessage {
                    role: Role::User,
                    content: "Hi there".into()
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: String::new()
                },
            ])
        );
        assert_eq!(job.max_tokens, Some(12), "max_completion_tokens wins");
        assert_eq!(job.max_tokens_field, "max_completion_tokens");
        assert_eq!((job.temperature, job.top_p), (Some(0.7), Some(0.9)));
        assert_eq!(job.seed, Some(u64::MAX));
        assert_eq!(job.stop, ["\n\n", "END"]);
        assert!(job.stream && job.include_usage);
    }

    #[test]
    fn bad_fields_are_400s_naming_the_field() {
        let m = json!([{"role": "user", "content": "hi"}]);
        let cases = [
            (json!({"messages": m}), "model", "`model` is required (a string)"),
            (json!({"model": "x"}), "messages", "`messages` is required"),
            (json!({"model": "x", "messages": []}), "messages", "`messages` must not be empty"),
            (
                json!({"model": "x", "messages": [{"role": "tool", "content": "r"}]}),
                "messages[0].role",
                "`messages[0].role` `tool` is not supported (system, developer, user, assistant)",
            ),
            (
                json!({"model": "x", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0]",
                "`messages[0].content[0]` must be a text part {\"type\": \"text\", \"text\": …} (this model reads text only)",
            ),
            (
                json!({"model": "x", "messages": m, "temperature": 2.5}),
                "temperature",
                "`temperature` must be a number of at least 0 and at most 2, got 2.5",
            ),
            (
                json!({"model": "x", "messages": m, "top_p": 0}),
                "top_p",
                "`top_p` must be a number above 0 and at most 1, got 0",
            ),
            (
                json!({"model": "x", "messages": m, "max_tokens": 0}),
                "max_tokens",
                "`max_tokens` must be an integer of at least 1, got 0",
            ),
            (
                json!({"model": "x", "messages": m, "max_completion_tokens": "5"}),
                "max_completion_tokens",
                "`max_completion_tokens` must be an integer of at least 1, got \"5\"",
            ),
            (
                json!({"model": "x", "messages": m, "stop": ["a", "b", "c", "d", "e"]}),
                "stop",
                "`stop` may hold at most 4 strings, got 5",
            ),
            (
                json!({"model": "x", "messages": m, "stop": [""]}),
                "stop",
                "a stop string must not be empty",
            ),
            (
                json!({"model": "x", "messages": m, "stop": 7}),
                "stop",
                "`stop` must be a string or an array of strings",
            ),
            (
                json!({"model": "x", "messages": m, "seed": 1.5}),
                "seed",
                "`seed` must be an integer, got 1.5",
            ),
            (
                json!({"model": "x", "messages": m, "n": 2}),
                "n",
                "`n` = 2 is not supported by this server",
            ),
            (
                json!({"model": "x", "messages": m, "stream_options": {"include_usage": true}}),
                "stream_options",
                "`stream_options` is only allowed when `stream` is true",
            ),
            (
                json!({"model": "x", "messages": m, "logprobs": true}),
                "logprobs",
                "`logprobs` = true is not supported by this server",
            ),
            (
                json!({"model": "x", "messages": m, "tool_choice": "required"}),
                "tool_choice",
                "`tool_choice` = \"required\" is not supported by this server",
            ),
            (
                json!({"model": "x", "messages": m, "modalities": ["text", "audio"]}),
                "modalities",
                "`modalities` = [\"text\",\"audio\"] is not supported by this server",
            ),
            (
                json!({"model": "x", "messages": m, "functions": []}),
                "functions",
                "`functions` = [] is not supported by this server",
            ),
            (
                json!({"model": "x", "messages": m, "top_k": 1.5}),
                "top_k",
                "`top_k` must be an integer of at least 0 (or -1: no cut), got 1.5",
            ),
        ];
        for (body, param, message) in cases {
            let (status, p, msg) = err(chat(body.to_string().as_bytes()));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!((p.as_str(), msg.as_str()), (param, message), "{body}");
        }
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_400s() {
        let (status, param, msg) = err(chat(b"{\"model\": "));
        assert_eq!((status, param.as_str()), (StatusCode::BAD_REQUEST, ""));
        assert!(
            msg.starts_with("the request body is not valid JSON: EOF"),
            "{msg}"
        );
        let (_, _, msg) = err(completion(b"[1, 2]"));
        assert_eq!(msg, "the request body must be a JSON object");
    }

    #[test]
    fn a_completion_takes_one_prompt_string() {
        let job =
            completion(br#"{"model": "x", "prompt": ["once"], "max_tokens": 3, "echo": false}"#)
                .unwrap();
        assert_eq!(job.prompt, JobPrompt::Text("once".into()));
        assert_eq!(job.max_tokens, Some(3));
        let (_, param, msg) = err(completion(br#"{"model": "x", "prompt": [[1, 2]]}"#));
        assert_eq!(param, "prompt");
        assert!(msg.starts_with("`prompt` must be one string"), "{msg}");
        let (_, param, _) = err(completion(
            br#"{"model": "x", "prompt": "a", "echo": true}"#,
        ));
        assert_eq!(param, "echo");
    }
}
