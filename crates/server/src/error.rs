//! API errors: one type every handler returns, rendered as the JSON envelope
//! `{"error": {"code", "message", "field"}}` with the status its code stands for.

use api::{ErrorBody, ErrorCode};
use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model::{InvalidTransition, ValidationError};
use store::StoreError;

/// Why a request failed, as the client will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// The store refused a compare-and-set because a row moved under the request: the
    /// request may be retried from a fresh read.
    pub(crate) raced: bool,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            field: None,
            raced: false,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message).with_field(field)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Conflict, message)
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> ApiError {
        let body = ErrorBody::from(e);
        ApiError {
            code: body.error.code,
            message: body.error.message,
            field: body.error.field,
            raced: false,
        }
    }
}

impl From<InvalidTransition> for ApiError {
    fn from(e: InvalidTransition) -> ApiError {
        ApiError::conflict(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let message = e.to_string();
        match e {
            StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::StaleGeneration { .. } => ApiError {
                raced: true,
                ..ApiError::new(
                    if matches!(e, StoreError::NotFound { .. }) {
                        ErrorCode::NotFound
                    } else {
                        ErrorCode::Conflict
                    },
                    message,
                )
            },
            StoreError::LockHeld { .. } | StoreError::Fenced { .. } => ApiError::conflict(message),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %message, "store unavailable");
                ApiError::new(ErrorCode::Unavailable, message)
            }
            StoreError::Corrupt { .. } => {
                tracing::error!(error = %message, "store returned a corrupt row");
                ApiError::new(ErrorCode::Internal, message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody::new(self.code, self.message, self.field);
        let mut response = (status, Json(body)).into_response();
        if self.code == ErrorCode::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"corral\""),
            );
        }
        response
    }
}

/// Retries `attempt` while it fails only because a row moved between its read and its
/// commit, so a request without an explicit generation is not refused merely because a
/// cell or the converger wrote at the same moment. Each attempt reads afresh.
pub(crate) async fn retry_raced<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    const ATTEMPTS: usize = 5;
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if e.raced && tries < ATTEMPTS => {
                tracing::debug!(error = %e.message, "retrying after a concurrent write");
                tries += 1;
            }
            result => return result,
        }
    }
}

/// The fallback for paths no route matches.
pub(crate) async fn no_route(request: Request) -> ApiError {
    ApiError::not_found(format!("no route for {}", request.uri().path()))
}

/// Largest error body of axum's own rejections that is carried into the JSON message.
const REJECTION_TEXT_BYTES: usize = 4096;

/// Makes every error response JSON. Handlers already answer with [`ApiError`]; this
/// catches what the framework answers by itself (a wrong method, a path parameter that
/// does not decode) so a client never has to parse anything but the envelope.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        422 => ErrorCode::Invalid,
        503 => ErrorCode::Unavailable,
        400..=499 => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    };
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, REJECTION_TEXT_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let mut converted = ApiError::new(code, message).into_response();
    // Keep what the framework said besides the body (`Allow` on a 405).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().insert(name.clone(), value.clone());
        }
    }
    converted
}

/// An empty response with `status`, for 204s.
pub(crate) fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}
