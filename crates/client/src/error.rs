//! What can go wrong talking to the API, split by what a caller does about it.

use api::{ErrorCode, ErrorDetail};

/// An error from [`crate::Client`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with its JSON error envelope: the request was understood and
    /// refused. `error.field` names the request field at fault, when there is one.
    #[error("{}", show_detail(.error))]
    Api { status: u16, error: ErrorDetail },
    /// The server could not be reached, or the connection broke. The message names the
    /// address that was tried.
    #[error("{0}")]
    Transport(String),
    /// The server answered, but not with what the API promises for this route.
    #[error("{0}")]
    Decode(String),
    /// The API URL the client was given is not an `http://` or `https://` URL.
    #[error("invalid API URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

impl ClientError {
    /// The error code of an [`ClientError::Api`] error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == Some(ErrorCode::Conflict)
    }
}

/// The server's message, and the field at fault unless the message already starts
/// with it (the model's validation errors do: `instances: must be ...`).
fn show_detail(error: &ErrorDetail) -> String {
    match &error.field {
        Some(field) if !error.message.starts_with(&format!("{field}:")) => {
            format!("{} (field: {field})", error.message)
        }
        _ => error.message.clone(),
    }
}
