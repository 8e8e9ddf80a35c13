//! Errors as the HTTP API shows them: `{"code": "<PascalCase>", "message": "..."}` with the
//! contract's status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use converge_core::Error;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Cosmos-style code.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// Cosmos's sub-status (`x-ms-substatus`), where one tells an SDK what to do next: 1024
    /// says the container was re-created, so the SDK refreshes its cache of container rids.
    pub substatus: Option<u32>,
}

impl ApiError {
    /// An error of `status`, with the contract's code for it.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::PRECONDITION_FAILED => "PreconditionFailed",
            StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            s if s.is_server_error() => "InternalServerError",
            _ => "BadRequest",
        };
        ApiError {
            status,
            code,
            message: message.into(),
            substatus: None,
        }
    }

    /// The same error with Cosmos's sub-status `substatus` (sent as `x-ms-substatus`).
    pub fn with_substatus(mut self, substatus: u32) -> Self {
        self.substatus = Some(substatus);
        self
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 `NotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 401 `Unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 413 `RequestEntityTooLarge`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 500 `InternalServerError`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e {
            Error::InvalidInput(_)
            | Error::InvalidDefinition(_)
            | Error::InvalidModule(_)
            | Error::InvalidToken(_)
            | Error::CorruptBatch(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnknownContainer { .. }
            | Error::NotFound { .. }
            | Error::UnknownConflict(_)
            | Error::UnknownDatabase(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists { .. } | Error::DatabaseExists(_) | Error::SnapshotNeeded(_) => {
                StatusCode::CONFLICT
            }
            Error::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Error::Retired(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code, "message": self.message});
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(sub) = self.substatus {
            r.headers_mut()
                .insert("x-ms-substatus", axum::http::HeaderValue::from(sub));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // Both SDKs wait this long and retry a 429 on their own.
            r.headers_mut().insert(
                "x-ms-retry-after-ms",
                axum::http::HeaderValue::from_static("10"),
            );
        }
        r
    }
}
