//! Bearer-token authentication: the middleware that guards the API, and the token file
//! the server creates on first start and reuses afterwards.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use api::ErrorCode;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// Lets the request through only with `Authorization: Bearer <token>`.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(api::bearer_token);
    match given {
        None => ApiError::new(
            ErrorCode::Unauthorized,
            "missing bearer token: send Authorization: Bearer <token> (the server writes it to <data dir>/token)",
        )
        .into_response(),
        Some(token) if !api::same_token(token, &state.token) => {
            ApiError::new(ErrorCode::Unauthorized, "wrong bearer token").into_response()
        }
        Some(_) => next.run(request).await,
    }
}

/// The API token in `data_dir/token`: read if it is there, created otherwise (with the
/// directory, mode 0700, and the file, mode 0600). Returns the file's path and the token.
pub(crate) fn load_or_create_token(data_dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("create data directory {}", data_dir.display()))?;
    let path = data_dir.join("token");
    match read_token(&path)? {
        Some(token) => Ok((path, token)),
        None => {
            let token = new_token();
            write_token(&path, &token)?;
            tracing::info!(path = %path.display(), "created API token");
            Ok((path, token))
        }
    }
}

/// The token in `path`, or `None` when there is no usable one yet.
fn read_token(path: &Path) -> anyhow::Result<Option<String>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read token file {}", path.display())),
    };
    let mode = fs::metadata(path)
        .with_context(|| format!("inspect token file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "token file was readable by others; setting mode 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restrict token file {}", path.display()))?;
    }
    let token = text.trim();
    if token.is_empty() {
        // A start that died between creating and writing the file leaves it empty.
        tracing::warn!(path = %path.display(), "token file is empty; writing a new token");
        fs::remove_file(path)
            .with_context(|| format!("remove empty token file {}", path.display()))?;
        return Ok(None);
    }
    Ok(Some(token.to_owned()))
}

fn write_token(path: &Path, token: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create token file {}", path.display()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write token file {}", path.display()))
}

/// 32 random bytes as 64 hex digits.
fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let (path, token) = load_or_create_token(&data_dir).unwrap();
        assert_eq!(path, data_dir.join("token"));
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&data_dir), 0o700);
        let (_, again) = load_or_create_token(&data_dir).unwrap();
        assert_eq!(again, token);
    }

    #[test]
    fn an_empty_or_open_token_file_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "").unwrap();
        let (_, token) = load_or_create_token(dir.path()).unwrap();
        assert_eq!(token.len(), 64);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let (_, again) = load_or_create_token(dir.path()).unwrap();
        assert_eq!(again, token);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
