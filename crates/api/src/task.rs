//! Task and domain requests.

use model::{Action, Name, Rootfs, TaskSpec, ValidationError};
use serde::{Deserialize, Serialize};

use crate::lrp::bounded;
use crate::{DEFAULT_DOMAIN, DEFAULT_ROOTFS, ResourcesInput};

/// `POST /v1/tasks`. Without an `id` the server generates one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCreate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    /// The registry login for a `docker://` rootfs that needs one; answers show the
    /// username only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_credentials: Option<model::RegistryCredentials>,
    #[serde(default)]
    pub resources: ResourcesInput,
    /// Absent: the image's own command (`run_image`), which needs an image rootfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "model::env_map"
    )]
    pub env: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub annotation: String,
}

impl TaskCreate {
    /// The id the request names, if any, and the validated spec.
    pub fn into_spec(self) -> Result<(Option<Name>, TaskSpec), ValidationError> {
        let id = self
            .id
            .as_deref()
            .map(|id| Name::parse("id", id))
            .transpose()?;
        let domain = Name::parse("domain", self.domain.as_deref().unwrap_or(DEFAULT_DOMAIN))?;
        let rootfs = Rootfs::parse("rootfs", self.rootfs.as_deref().unwrap_or(DEFAULT_ROOTFS))?;
        let spec = TaskSpec {
            image_credentials: self.image_credentials,
            domain,
            rootfs: rootfs.clone(),
            resources: self
                .resources
                .into_resources()
                .map_err(|e| e.within("resources"))?,
            action: crate::default_action(self.action, &rootfs)?,
            env: self.env,
            result_file: self.result_file,
            completion_callback_url: self.completion_callback_url,
            placement_tags: self.placement_tags,
            annotation: self.annotation,
        };
        spec.validate()?;
        Ok((id, spec))
    }
}

/// `PUT /v1/domains/{name}`: keeps a domain fresh for `ttl_seconds` (0: forever).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainUpsert {
    pub ttl_seconds: i64,
}

impl DomainUpsert {
    /// The TTL in milliseconds; `None` for a domain that never expires.
    pub fn ttl_ms(&self) -> Result<Option<u64>, ValidationError> {
        let seconds = bounded("ttl_seconds", self.ttl_seconds, 10 * 365 * 24 * 3600)?;
        Ok((seconds > 0).then_some(seconds * 1000))
    }
}
