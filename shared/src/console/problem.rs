//! Every error of the self-service API in one shape, RFC 9457 problem
//! details (`application/problem+json`): a type, a title, the status, a
//! detail a person can act on and, for a change that failed validation,
//! each field's path and what is wrong with it. A failed connection test
//! carries each check's result. Nothing here ever holds a credential: the
//! messages come from the tenant parser and the probes, which never echo
//! one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::delivery::connection_probe::ConnectionCheck;

/// One field of a request that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldProblem {
    /// The field's path in the request body (`intervalSeconds`,
    /// `recipients[2]`), or in the tenant document when the rule spans
    /// several of its parts (`feeds`).
    pub path: String,
    pub message: String,
}

/// A check of a connection test, as a problem reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    /// A check that is not required fails with a warning, not the test.
    pub required: bool,
    pub detail: String,
}

impl From<&ConnectionCheck> for CheckResult {
    fn from(check: &ConnectionCheck) -> Self {
        CheckResult { name: check.name.clone(), ok: check.ok, required: check.required, detail: check.detail.clone() }
    }
}

/// RFC 9457 problem details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the kind of problem, relative to the API
    /// (`/problems/validation`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Each field that is wrong (validation problems only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// Each check of a connection test that decided the answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// Warnings of a connection test.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    /// Not this caller's, or not there: the two are never told apart.
    #[error("{0} was not found")]
    NotFound(String),
    #[error("a change needs If-Match with the ETag of the tenant document (GET /v1/me, or the resource, gives it)")]
    PreconditionRequired,
    #[error("the tenant document changed since version {given} (it is at {current} now): read it again and retry")]
    PreconditionFailed { given: String, current: String },
    #[error("{detail}")]
    Validation { detail: String, errors: Vec<FieldProblem> },
    #[error("{detail}")]
    ConnectionTestFailed { detail: String, checks: Vec<CheckResult>, warnings: Vec<String> },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is over {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("{0}")]
    TooManyRequests(String),
    /// Something on our side failed; the detail names what, never a value.
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Timeout(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Validation { .. } | ApiError::ConnectionTestFailed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn kind_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Unauthorized(_) => ("unauthorized", "Sign-in required"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::PreconditionRequired => ("precondition-required", "If-Match required"),
            ApiError::PreconditionFailed { .. } => ("precondition-failed", "Changed meanwhile"),
            ApiError::Validation { .. } => ("validation", "Invalid change"),
            ApiError::ConnectionTestFailed { .. } => ("connection-test-failed", "Connection test failed"),
            ApiError::Conflict(_) => ("conflict", "Conflict"),
            ApiError::BadRequest(_) => ("bad-request", "Bad request"),
            ApiError::BodyTooLarge { .. } => ("body-too-large", "Request body too large"),
            ApiError::TooManyRequests(_) => ("too-many-requests", "Too many requests"),
            ApiError::Internal(_) => ("internal", "Internal error"),
            ApiError::Timeout(_) => ("timeout", "Took too long"),
        }
    }

    /// One field, one message.
    pub fn invalid_field(path: impl Into<String>, message: impl Into<String>) -> ApiError {
        let problem = FieldProblem { path: path.into(), message: message.into() };
        ApiError::Validation { detail: format!("{}: {}", problem.path, problem.message), errors: vec![problem] }
    }

    pub fn problem(&self) -> Problem {
        let (kind, title) = self.kind_and_title();
        let (errors, checks, warnings) = match self {
            ApiError::Validation { errors, .. } => (errors.clone(), Vec::new(), Vec::new()),
            ApiError::ConnectionTestFailed { checks, warnings, .. } => (Vec::new(), checks.clone(), warnings.clone()),
            _ => (Vec::new(), Vec::new(), Vec::new()),
        };
        Problem {
            kind: format!("/problems/{kind}"),
            title: title.to_owned(),
            status: self.status().as_u16(),
            detail: self.to_string(),
            errors,
            checks,
            warnings,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).expect("a problem serialises");
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
