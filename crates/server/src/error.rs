//! Every error leaves as JSON: `{"error": {"code", "message", "issues"?}}` with a 4xx/5xx status.
//! Codes are stable; messages are for people.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IssueBody {
    pub path: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub issues: Vec<IssueBody>,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), issues: vec![], retry_after_s: None }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what} with id '{id}'"))
    }
    /// Details go to the log, not to the client (they may name files, queries or hosts).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the details are in the server log")
    }
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after_s: u64) -> Self {
        Self { retry_after_s: Some(retry_after_s.max(1)), ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message) }
    }
    pub fn with_issues(mut self, issues: Vec<IssueBody>) -> Self {
        self.issues = issues;
        self
    }
}

impl From<reelsmith_store::StoreError> for ApiError {
    fn from(e: reelsmith_store::StoreError) -> Self {
        match e {
            reelsmith_store::StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            reelsmith_store::StoreError::Quota(m) => Self::too_many("quota_exceeded", m, 5),
            e @ reelsmith_store::StoreError::Budget { .. } => Self::too_many("budget_exceeded", e.to_string(), 3600),
            e => Self::internal(e),
        }
    }
}

impl From<reelsmith_engine::RenderError> for ApiError {
    fn from(e: reelsmith_engine::RenderError) -> Self {
        use reelsmith_engine::RenderError as R;
        match e {
            R::Invalid(v) => {
                let issues: Vec<IssueBody> =
                    v.issues.iter().map(|i| IssueBody { path: i.path.clone(), message: i.message.clone() }).collect();
                let first = issues.first().map(|i| format!("{}: {}", i.path, i.message)).unwrap_or_default();
                let more = if issues.len() > 1 { format!(" (and {} more)", issues.len() - 1) } else { String::new() };
                Self::unprocessable("spec_invalid", format!("invalid spec: {first}{more}")).with_issues(issues)
            }
            R::Parse(p) => Self::unprocessable("spec_parse", p.to_string())
                .with_issues(vec![IssueBody { path: p.path.clone(), message: p.message.clone() }]),
            e => Self::internal(e),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}
#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[IssueBody]>::is_empty")]
    issues: &'a [IssueBody],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            error: Inner { code: self.code, message: &self.message, issues: &self.issues },
        })
        .unwrap_or_default();
        let mut r =
            (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
        if let Some(s) = self.retry_after_s {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        close_if_body_unread(&mut r);
        r
    }
}

/// A refused oversized body is left unread, so its connection cannot carry another request:
/// say so, or a keep-alive client may send its next request into a connection being closed.
pub fn close_if_body_unread(r: &mut Response) {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body as `T`: malformed JSON is 400 `invalid_json`, a value of the wrong shape 422
/// `invalid_request`; either names the JSON path (`$` for the whole body).
pub fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => "$".to_string(),
            p => p,
        };
        let inner = e.into_inner();
        let (status, code) = if inner.is_syntax() || inner.is_eof() {
            (StatusCode::BAD_REQUEST, "invalid_json")
        } else {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        };
        ApiError::new(status, code, format!("{path}: {inner}"))
            .with_issues(vec![IssueBody { path, message: inner.to_string() }])
    })
}
