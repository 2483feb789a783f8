//! The registry client: the distribution API's manifest and blob requests over HTTP(S),
//! with anonymous, basic or bearer-token authentication.

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};
use tokio::sync::Mutex;

use crate::auth::{Challenge, Credentials, parse_challenge};
use crate::digest::Digest;
use crate::error::Error;
use crate::manifest;
use crate::reference::Reference;

/// Manifests larger than this are refused: real ones are a few kilobytes.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
const MAX_TOKEN_RESPONSE_BYTES: u64 = 1 << 20;

/// An HTTP client for registries. Loopback registries (`localhost`, `127.0.0.1`,
/// `[::1]`) and hosts given to [`RegistryClient::with_plain_http`] are spoken to over
/// plain HTTP, every other one over HTTPS with the system's root certificates (which
/// needs this crate's `tls` feature; without it such a pull fails with
/// [`Error::NoTls`]).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    plain_http: Vec<String>,
}

impl RegistryClient {
    pub fn new() -> Result<RegistryClient, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("corral-image/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            // A registry that stops sending fails the pull instead of hanging it.
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(Error::Client)?;
        Ok(RegistryClient {
            http,
            plain_http: Vec::new(),
        })
    }

    /// Also speak plain HTTP to these `host[:port]` registries (an insecure registry).
    pub fn with_plain_http(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        self.plain_http.extend(hosts);
        self
    }

    fn base_url(&self, registry: &str) -> Result<Url, Error> {
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        let plain = matches!(host, "localhost" | "127.0.0.1" | "[::1]")
            || self.plain_http.iter().any(|h| h == registry);
        // Docker Hub's API lives on another host than its name.
        let authority = if registry == crate::reference::DOCKER_HUB || registry == "index.docker.io"
        {
            "registry-1.docker.io"
        } else {
            registry
        };
        if !plain && !cfg!(feature = "tls") {
            return Err(Error::NoTls {
                registry: registry.to_owned(),
            });
        }
        let scheme = if plain { "http" } else { "https" };
        Url::parse(&format!("{scheme}://{authority}/v2/")).map_err(|e| Error::Auth {
            registry: registry.to_owned(),
            reason: format!("cannot form a URL from the registry name: {e}"),
        })
    }

    pub(crate) fn session(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<Session, Error> {
        Ok(Session {
            http: self.http.clone(),
            base: self.base_url(&reference.registry)?,
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            credentials: credentials.clone(),
            authorization: Mutex::new(None),
        })
    }
}

/// Requests to one repository with one set of credentials; remembers the
/// `Authorization` that worked so later requests do not repeat the challenge.
#[derive(Debug)]
pub(crate) struct Session {
    http: reqwest::Client,
    base: Url,
    pub(crate) registry: String,
    pub(crate) repository: String,
    credentials: Credentials,
    authorization: Mutex<Option<HeaderValue>>,
}

/// A manifest as fetched: its bytes, the media type the registry named, and the
/// digest of the bytes.
#[derive(Debug)]
pub(crate) struct FetchedManifest {
    pub(crate) bytes: Vec<u8>,
    pub(crate) content_type: Option<String>,
    pub(crate) digest: Digest,
}

impl Session {
    fn url(&self, kind: &str, target: &str) -> Result<Url, Error> {
        self.base
            .join(&format!("{}/{kind}/{target}", self.repository))
            .map_err(|e| Error::Auth {
                registry: self.registry.clone(),
                reason: format!("cannot form a URL for {kind}/{target}: {e}"),
            })
    }

    /// The digest a tag points to now, from a HEAD request, when the registry says.
    pub(crate) async fn manifest_digest(&self, target: &str) -> Result<Option<Digest>, Error> {
        let url = self.url("manifests", target)?;
        let what = format!("manifest `{target}`");
        let response = self
            .send(Method::HEAD, url, Some(manifest::ACCEPT), &what)
            .await?;
        Ok(response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// Fetches a manifest by tag or digest and checks its digest: against the
    /// reference's digest when fetched by digest, else against the registry's
    /// `Docker-Content-Digest` header when it sent one.
    pub(crate) async fn manifest(&self, target: &str) -> Result<FetchedManifest, Error> {
        let url = self.url("manifests", target)?;
        let what = format!("manifest `{target}`");
        let response = self
            .send(Method::GET, url, Some(manifest::ACCEPT), &what)
            .await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let claimed: Option<Digest> = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = self
            .read_limited(response, &what, MAX_MANIFEST_BYTES)
            .await?;
        let digest = Digest::of(&bytes);
        let expected = target.parse::<Digest>().ok().or(claimed);
        if let Some(expected) = expected {
            expected
                .check(digest.clone())
                .map_err(|mismatch| Error::Corrupt {
                    what: "manifest",
                    digest: expected.clone(),
                    mismatch,
                })?;
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// Starts downloading a blob; the caller streams and verifies the body.
    pub(crate) async fn blob(&self, digest: &Digest) -> Result<Response, Error> {
        let url = self.url("blobs", &digest.to_string())?;
        self.send(Method::GET, url, None, &format!("blob {digest}"))
            .await
    }

    pub(crate) fn http_error(&self, source: reqwest::Error) -> Error {
        Error::Http {
            registry: self.registry.clone(),
            source: source.without_url(),
        }
    }

    pub(crate) async fn read_limited(
        &self,
        mut response: Response,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.http_error(e))? {
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(Error::TooLarge {
                    registry: self.registry.clone(),
                    what: what.to_owned(),
                    limit,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Sends a request, answering one authentication challenge if the registry makes
    /// one, and turns error statuses into errors naming what was asked for.
    async fn send(
        &self,
        method: Method,
        url: Url,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response, Error> {
        let mut retried = false;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(authorization) = self.authorization.lock().await.clone() {
                request = request.header(AUTHORIZATION, authorization);
            }
            let response = request.send().await.map_err(|e| self.http_error(e))?;
            match response.status() {
                status if status.is_success() => return Ok(response),
                StatusCode::UNAUTHORIZED if !retried => {
                    retried = true;
                    let challenge = response
                        .headers()
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .find_map(parse_challenge);
                    let authorization = self.answer(challenge).await?;
                    *self.authorization.lock().await = Some(authorization);
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(Error::Unauthorized {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                        had_credentials: !self.credentials.is_anonymous(),
                    });
                }
                StatusCode::FORBIDDEN => {
                    return Err(Error::Denied {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                    });
                }
                StatusCode::NOT_FOUND => {
                    return Err(Error::NotFound {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                        what: what.to_owned(),
                    });
                }
                status => {
                    return Err(Error::Status {
                        registry: self.registry.clone(),
                        what: what.to_owned(),
                        status: status.as_u16(),
                    });
                }
            }
        }
    }

    /// The `Authorization` value answering a challenge.
    async fn answer(&self, challenge: Option<Challenge>) -> Result<HeaderValue, Error> {
        let unauthorized = || Error::Unauthorized {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            had_credentials: !self.credentials.is_anonymous(),
        };
        match challenge {
            None => Err(Error::Auth {
                registry: self.registry.clone(),
                reason: "it asked for an authentication scheme other than basic or bearer".into(),
            }),
            Some(Challenge::Basic) => match &self.credentials {
                Credentials::Anonymous => Err(unauthorized()),
                Credentials::Basic { username, password } => basic_header(username, password),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let token = self
                    .token(&realm, service.as_deref(), scope.as_deref())
                    .await?;
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::Auth {
                        registry: self.registry.clone(),
                        reason:
                            "the token service returned a token that is not a valid header value"
                                .into(),
                    })?;
                value.set_sensitive(true);
                Ok(value)
            }
        }
    }

    /// Asks the token service named by a bearer challenge for a pull token, with the
    /// basic credentials when there are some.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String, Error> {
        let auth_error = |reason: String| Error::Auth {
            registry: self.registry.clone(),
            reason,
        };
        let mut url =
            Url::parse(realm).map_err(|_| auth_error("the token realm is not a URL".into()))?;
        // Credentials go over plain HTTP only to a realm on the same plain-HTTP registry.
        if url.scheme() != "https" && !(url.scheme() == "http" && self.base.scheme() == "http") {
            return Err(auth_error(format!(
                "the token realm uses `{}`, not https",
                url.scheme()
            )));
        }
        let scope = scope
            .map(str::to_owned)
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &scope);
        }
        let mut request = self.http.get(url);
        if let Credentials::Basic { username, password } = &self.credentials {
            request = request.header(AUTHORIZATION, basic_header(username, password)?);
        }
        let response = request.send().await.map_err(|e| self.http_error(e))?;
        match response.status() {
            status if status.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Error::Unauthorized {
                    registry: self.registry.clone(),
                    repository: self.repository.clone(),
                    had_credentials: !self.credentials.is_anonymous(),
                });
            }
            status => {
                return Err(auth_error(format!(
                    "the token service answered HTTP {}",
                    status.as_u16()
                )));
            }
        }
        let body = self
            .read_limited(response, "token", MAX_TOKEN_RESPONSE_BYTES)
            .await?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            auth_error("the token service's answer is not the expected JSON".into())
        })?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth_error("the token service's answer holds no token".into()))
    }
}

fn basic_header(username: &str, password: &str) -> Result<HeaderValue, Error> {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| Error::Auth {
            registry: String::new(),
            reason: "the credentials cannot be sent in a header".into(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_listed_hosts() {
        let client = RegistryClient::new()
            .expect("client")
            .with_plain_http(["registry.lan:5000".to_owned()]);
        let cases: &[(&str, &str)] = &[
            ("127.0.0.1:5000", "http://127.0.0.1:5000/v2/"),
            ("localhost", "http://localhost/v2/"),
            ("registry.lan:5000", "http://registry.lan:5000/v2/"),
            ("docker.io", "https://registry-1.docker.io/v2/"),
            ("ghcr.io", "https://ghcr.io/v2/"),
        ];
        for (registry, expect) in cases {
            let got = match client.base_url(registry) {
                Ok(url) => url.to_string(),
                Err(Error::NoTls { .. }) if !cfg!(feature = "tls") => expect.to_string(),
                Err(e) => format!("error: {e}"),
            };
            assert_eq!(&got, expect, "registry {registry}");
        }
        if !cfg!(feature = "tls") {
            let error = client
                .base_url("ghcr.io")
                .expect_err("no TLS in this build");
            assert_eq!(
                error.to_string(),
                "registry ghcr.io is reached over HTTPS, and this build has no TLS support (the image crate's `tls` feature)"
            );
        }
    }
}
