//! Image references: `docker://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]` and Docker-style
//! short names (`redis`, `library/redis:7`) that resolve against a default registry.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Docker Hub, the usual default registry for short names.
pub const DOCKER_HUB: &str = "docker.io";

/// The longest reference text accepted at all, and the longest repository name (the
/// distribution spec's limit).
const MAX_REFERENCE_LEN: usize = 512;
const MAX_REPOSITORY_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, valid image reference. `tag` is `latest` when neither a tag nor a digest
/// was given; when a digest is given it decides what is pulled and the tag is only
/// informative.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host` or `host:port`, as written (Docker Hub is `docker.io`).
    pub registry: String,
    /// Slash-separated lowercase path, e.g. `library/redis`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// An unusable reference: the input (shortened) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference `{input}`: {problem}")]
pub struct ReferenceError {
    pub input: String,
    pub problem: Problem,
}

/// What is wrong with a reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("it is empty")]
    Empty,
    #[error("it is {len} bytes long, more than {max}")]
    TooLong { len: usize, max: usize },
    #[error("scheme `{0}` is not supported (use `docker://` or a short name)")]
    UnsupportedScheme(String),
    #[error("the registry host is empty")]
    EmptyHost,
    #[error("registry host `{0}` is not a valid host name")]
    BadHost(String),
    #[error("registry port `{0}` is not a number from 1 to 65535")]
    BadPort(String),
    #[error("the repository is empty")]
    EmptyRepository,
    #[error("the repository has an empty path component")]
    EmptyComponent,
    #[error("repository component `..` is not allowed")]
    DotDot,
    #[error("repository component `{0}` must be lowercase")]
    Uppercase(String),
    #[error(
        "repository component `{0}` must be lowercase letters and digits separated by `.`, `_`, `__` or dashes"
    )]
    BadComponent(String),
    #[error("the repository name is {len} bytes long, more than {max}")]
    RepositoryTooLong { len: usize, max: usize },
    #[error("the tag is empty")]
    EmptyTag,
    #[error(
        "tag `{0}` must be up to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
    )]
    BadTag(String),
    #[error("{0}")]
    BadDigest(DigestError),
}

impl Reference {
    /// Parses `input`; short names (no `docker://` and no host) and `docker:///REPO`
    /// resolve against `default_registry`, with Docker Hub's rule that a one-component
    /// name is an official image (`redis` is `library/redis`).
    pub fn parse(input: &str, default_registry: &str) -> Result<Reference, ReferenceError> {
        parse(input, default_registry).map_err(|problem| ReferenceError {
            input: input.chars().take(80).collect(),
            problem,
        })
    }

    /// What the manifest is fetched by: the digest when there is one, else the tag.
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_owned(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn parse(input: &str, default_registry: &str) -> Result<Reference, Problem> {
    if input.is_empty() {
        return Err(Problem::Empty);
    }
    if input.len() > MAX_REFERENCE_LEN {
        return Err(Problem::TooLong {
            len: input.len(),
            max: MAX_REFERENCE_LEN,
        });
    }
    let (rest, explicit) = match input.split_once("://") {
        Some(("docker", rest)) => (rest, true),
        Some((scheme, _)) => return Err(Problem::UnsupportedScheme(scheme.to_owned())),
        None => (input, false),
    };
    // `docker:///redis` names the default registry with an empty host.
    let rest = if explicit {
        rest.strip_prefix('/').unwrap_or(rest)
    } else {
        rest
    };
    let (rest, digest) = match rest.split_once('@') {
        Some((name, digest)) => (name, Some(digest.parse().map_err(Problem::BadDigest)?)),
        None => (rest, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
            validate_host(first)?;
            (first.to_owned(), path.to_owned())
        }
        Some(("", _)) => return Err(Problem::EmptyHost),
        _ => {
            if default_registry.is_empty() {
                return Err(Problem::EmptyHost);
            }
            let repository = if name.contains('/') || name.is_empty() {
                name.to_owned()
            } else {
                format!("library/{name}")
            };
            (default_registry.to_owned(), repository)
        }
    };
    validate_repository(&repository)?;
    let tag = match tag {
        Some(tag) => {
            validate_tag(tag)?;
            Some(tag.to_owned())
        }
        None if digest.is_none() => Some("latest".to_owned()),
        None => None,
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

fn validate_host(host: &str) -> Result<(), Problem> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if name.is_empty() {
        return Err(Problem::EmptyHost);
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(Problem::BadHost(name.to_owned()));
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err(Problem::BadPort(port.to_owned()));
        }
    }
    Ok(())
}

fn validate_repository(repository: &str) -> Result<(), Problem> {
    if repository.is_empty() {
        return Err(Problem::EmptyRepository);
    }
    if repository.len() > MAX_REPOSITORY_LEN {
        return Err(Problem::RepositoryTooLong {
            len: repository.len(),
            max: MAX_REPOSITORY_LEN,
        });
    }
    for component in repository.split('/') {
        validate_component(component)?;
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the distribution spec's path component.
fn validate_component(component: &str) -> Result<(), Problem> {
    if component.is_empty() {
        return Err(Problem::EmptyComponent);
    }
    if component == ".." {
        return Err(Problem::DotDot);
    }
    if component.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Problem::Uppercase(component.to_owned()));
    }
    let bad = || Problem::BadComponent(component.to_owned());
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        if i == bytes.len() {
            return Ok(());
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[sep_start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid {
            return Err(bad());
        }
    }
}

fn validate_tag(tag: &str) -> Result<(), Problem> {
    if tag.is_empty() {
        return Err(Problem::EmptyTag);
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = tag.len() <= MAX_TAG_LEN
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Problem::BadTag(tag.chars().take(MAX_TAG_LEN + 1).collect()))
    }
}

#[cfg(test)]
mod tests;
