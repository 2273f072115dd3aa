//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the HTTP
//! status OpenAI's clients map to their exception types (400 → BadRequestError, 404 →
//! NotFoundError, 413, 429 → RateLimitError, 503/502 → InternalServerError/APIStatusError).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ecspec_edge::EdgeError;
use ecspec_run::PromptError;
use serde_json::json;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// For people: what was wrong.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, `not_found_error`, `rate_limit_error`,
    /// `server_error`, …).
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, …).
    pub code: Option<&'static str>,
    /// Sent as `Retry-After` (whole seconds, rounded up) with 429 and 503.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// 400: a bad value of request field `param`.
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: Some("invalid_value"),
            retry_after: None,
        }
    }

    /// 400: a request that is wrong as a whole (not JSON, not an object).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            param: None,
            code: None,
            ..Self::bad_param("", message)
        }
    }

    /// 404: a model this server does not serve.
    pub fn unknown_model(model: &str, served: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist; this server serves `{served}`"),
            kind: "not_found_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
            retry_after: None,
        }
    }

    /// 404: a path this server does not have.
    pub fn no_route(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "no route {path}; this server has GET /v1/models, POST /v1/chat/completions, POST /v1/completions"
            ),
            kind: "not_found_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 429: every generation slot of this server is taken.
    pub fn too_many(max: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "this edge is generating {max} requests already (its --max-concurrent); retry shortly"
            ),
            kind: "rate_limit_error",
            param: None,
            code: Some("rate_limit_exceeded"),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    /// 500: this server failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// The error of a failed generation: a prompt over the context window is 413, an empty one
    /// 400, a busy cloud 503 with its Retry-After, a cloud that refused or failed 502.
    pub fn from_generation(e: &anyhow::Error) -> Self {
        if let Some(p) = e.downcast_ref::<PromptError>() {
            return match p {
                PromptError::Empty => Self::bad_param("messages", p.to_string()),
                PromptError::TooLong { .. } => Self {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: Some("context_length_exceeded"),
                    ..Self::bad_param("messages", p.to_string())
                },
            };
        }
        let message = format!("{e:#}");
        match e.downcast_ref::<EdgeError>() {
            Some(EdgeError::Busy { retry_after, .. }) => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message,
                kind: "server_error",
                param: None,
                code: Some("cloud_busy"),
                // The cloud said when, or did not: a second is a fair first wait.
                retry_after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
            },
            Some(EdgeError::Refused(reason)) if reason.contains("context window") => Self {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: Some("context_length_exceeded"),
                ..Self::bad_param("messages", message)
            },
            _ => Self {
                status: StatusCode::BAD_GATEWAY,
                message,
                kind: "server_error",
                param: None,
                code: Some("cloud_error"),
                retry_after: None,
            },
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param.as_deref().filter(|p| !p.is_empty()),
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_openais_four_fields() {
        let e = ApiError::bad_param("temperature", "temperature must be between 0 and 2, got 3");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body(),
            json!({"error": {
                "message": "temperature must be between 0 and 2, got 3",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "invalid_value",
            }})
        );
        assert_eq!(
            ApiError::bad_request("x").body()["error"]["param"],
            json!(null)
        );
    }

    #[test]
    fn generation_errors_map_to_their_statuses() {
        let busy = anyhow::Error::from(EdgeError::Busy {
            message: "all 4 session slots are taken".into(),
            retry_after: Some(Duration::from_millis(2500)),
        })
        .context("generating");
        let e = ApiError::from_generation(&busy);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        let r = e.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        let long = anyhow::Error::from(PromptError::TooLong {
            tokens: 9000,
            window: 8192,
            whose: "target",
        });
        let e = ApiError::from_generation(&long);
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.code, Some("context_length_exceeded"));
        let other = anyhow::Error::from(EdgeError::Cloud("internal".into()));
        assert_eq!(
            ApiError::from_generation(&other).status,
            StatusCode::BAD_GATEWAY
        );
        let r = ApiError::too_many(8).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
