//! Parsing requests at the boundary: JSON bodies, query strings and path names, with
//! errors that say which field is at fault.

use api::{ErrorCode, MAX_BODY_BYTES};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use model::Name;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body of type `T`, at most `LIMIT` bytes. Unlike axum's `Json`, its
/// errors are the API's envelope and name the field at fault (`resources.memory_mb`).
#[derive(Debug)]
pub struct JsonBody<T, const LIMIT: usize = MAX_BODY_BYTES>(pub T);

impl<S: Send + Sync, T: DeserializeOwned, const LIMIT: usize> FromRequest<S>
    for JsonBody<T, LIMIT>
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody<T, LIMIT>, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        if !content_type.as_deref().is_some_and(is_json) {
            let got = content_type.map_or("none".to_owned(), |t| format!("{t:?}"));
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("the body must be Content-Type: application/json (got {got})"),
            ));
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > LIMIT as u64) {
            return Err(too_large(LIMIT));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large(LIMIT)
                } else {
                    ApiError::new(ErrorCode::BadRequest, rejection.body_text())
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the body is larger than {limit} bytes"),
    )
}

/// `application/json`, with or without parameters, or a `+json` type.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a whole JSON document as `T`, refusing trailing data. The error names the
/// path to the value at fault where serde knows it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            shape_error(&path, &inner.to_string())
        } else {
            // Broken JSON is at a position, not in a field.
            ApiError::new(ErrorCode::BadRequest, inner.to_string())
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    Ok(value)
}

/// A 400 for a value of the wrong shape at `path` (`.` for the top level). An unknown
/// field is named in full (`resources.memroy_mb`) whether or not the path has it.
fn shape_error(path: &str, message: &str) -> ApiError {
    let path = (path != "." && !path.is_empty()).then_some(path);
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    let field = match (path, unknown) {
        (Some(path), Some(name)) if !path.ends_with(name) => Some(format!("{path}.{name}")),
        (None, Some(name)) => Some(name.to_owned()),
        (path, _) => path.map(str::to_owned),
    };
    let error = ApiError::new(ErrorCode::BadRequest, message);
    match field {
        Some(field) => error.with_field(field),
        None => error,
    }
}

/// The query string as `T`; unknown parameters are refused, naming them.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<QueryParams<T>, ApiError> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(value)) => Ok(QueryParams(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                // axum puts the parameter's name in front: `domian: unknown field ...`.
                match detail.split_once(": ") {
                    Some((param, rest)) if !param.contains(char::is_whitespace) => {
                        Err(shape_error(param, rest))
                    }
                    _ => Err(shape_error(".", detail)),
                }
            }
        }
    }
}

/// A name given as a query parameter; a malformed one is a 400 naming the parameter.
pub fn query_name(param: &str, value: Option<&str>) -> Result<Option<Name>, ApiError> {
    value
        .map(|v| Name::parse(param, v).map_err(|e| ApiError::bad_request(param, e.to_string())))
        .transpose()
}

/// A yes-or-no query parameter: absent, `false` or `0` is no; `true`, `1` or a bare
/// `?param` is yes; anything else is a 400 naming the parameter.
pub fn query_bool(param: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            param,
            format!("{param} must be true or false (got {other:?})"),
        )),
    }
}

/// The name in a path such as `/v1/lrps/{name}`. A malformed name cannot name anything
/// stored, so it is reported as not found.
pub fn path_name(what: &str, raw: &str) -> Result<Name, ApiError> {
    Name::parse("name", raw)
        .map_err(|e| ApiError::not_found(format!("no {what} named {raw:?} ({})", e.reason)))
}

/// A `docker://` rootfs names an image a registry could have: refused here, with the
/// reason, rather than crash-looping on a cell. The grammar is the cells' own
/// (`image::Reference`); the registry short names resolve to does not matter for it.
pub(crate) fn check_image(rootfs: &model::Rootfs) -> Result<(), ApiError> {
    if let model::Rootfs::Docker(reference) = rootfs {
        image::Reference::parse(reference, image::DOCKER_HUB)
            .map_err(|e| model::ValidationError::new("rootfs", e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
        list: Option<Vec<u8>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    #[test]
    fn shape_errors_name_the_field() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                r#"{"inner": {"n": 1}, "x": 1}"#,
                Some("x"),
                "unknown field `x`",
            ),
            (
                r#"{"inner": {"m": 1}}"#,
                Some("inner.m"),
                "unknown field `m`",
            ),
            (r#"{"inner": {"n": "a"}}"#, Some("inner.n"), "invalid type"),
            (
                r#"{"inner": {"n": 1}, "list": [1, -1]}"#,
                Some("list[1]"),
                "invalid value",
            ),
            (r#"{"inner": "#, None, "EOF while parsing"),
            (r#"{"inner": {"n": 1}} x"#, None, "trailing characters"),
            (r#"{}"#, None, "missing field `inner`"),
            ("", None, "EOF while parsing"),
        ];
        for (input, field, message) in cases {
            let err = parse_json::<Outer>(input.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{input}");
            assert_eq!(err.field.as_deref(), *field, "{input}: {err:?}");
            assert!(err.message.contains(message), "{input}: {err:?}");
        }
    }

    #[test]
    fn json_content_types() {
        for (content_type, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("", false),
        ] {
            assert_eq!(is_json(content_type), ok, "{content_type}");
        }
    }
}
