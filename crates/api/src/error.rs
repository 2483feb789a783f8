//! The error envelope: `{"error": {"code", "message", "field"}}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault, as a dotted path (`resources.memory_mb`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What went wrong, stable for scripts. Each code has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not JSON of the right shape, or a query parameter is malformed.
    BadRequest,
    /// 401: no bearer token, or the wrong one.
    Unauthorized,
    /// 404: no such LRP, task, route or domain.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the row already exists, or has moved past the generation given.
    Conflict,
    /// 413: the body is larger than the server accepts.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: well-formed, but a value is not allowed (invalid name, too large...).
    Invalid,
    /// 500: the server failed in a way the request could not cause (a corrupt row).
    Internal,
    /// 503: the store cannot be reached; retry later.
    Unavailable,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Invalid => 422,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>, field: Option<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                field,
            },
        }
    }
}

impl From<model::ValidationError> for ErrorBody {
    fn from(e: model::ValidationError) -> ErrorBody {
        let field = (!e.field.is_empty()).then(|| e.field.clone());
        ErrorBody::new(ErrorCode::Invalid, e.to_string(), field)
    }
}
