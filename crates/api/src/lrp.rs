//! LRP requests and responses.

use model::{
    Action, Checks, CrashPolicy, Instance, InstanceState, Lrp, LrpSpec, LrpUpdate, Name, Presence,
    Resources, Rootfs, Routes, ValidationError,
};
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_DOMAIN, DEFAULT_ROOTFS};

/// `POST /v1/lrps`. Numbers a user can get wrong in sign are signed here so that the
/// error is a 422 naming the field rather than a parse failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrpCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    /// The registry login for a `docker://` rootfs that needs one; answers show the
    /// username only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_credentials: Option<model::RegistryCredentials>,
    #[serde(default = "one")]
    pub instances: i64,
    #[serde(default)]
    pub resources: ResourcesInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<Action>,
    /// Absent: the image's own command (`run_image`), which needs an image rootfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "model::env_map"
    )]
    pub env: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Routes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_policy: Option<CrashPolicy>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub annotation: String,
}

fn one() -> i64 {
    1
}

/// Resources as requested; absent fields take [`Resources::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pids: Option<i64>,
}

/// `PATCH /v1/lrps/{name}`: change instances, routes or annotation. With `generation`
/// set, the update applies only if the LRP is still at that generation (409 otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrpPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Routes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
}

/// `GET /v1/lrps/{name}/status`: the LRP with its instances and counts by state. The
/// state counts are of ORDINARY rows, one per index; the copies kept during a handoff
/// (on a draining cell, or on a vanished cell that may still be up) are counted apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrpStatus {
    pub lrp: Lrp,
    pub instances: Vec<Instance>,
    pub running: u32,
    pub unclaimed: u32,
    pub claimed: u32,
    pub crashed: u32,
    #[serde(default)]
    pub evacuating: u32,
    #[serde(default)]
    pub suspect: u32,
    /// Instances whose cell is pulling their image, with how far it got.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pulling: Vec<Pulling>,
    /// What the containers of instances use, as their cells last sampled it: only
    /// with `?usage=true`, and only from cells that answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<InstanceUsage>,
}

/// One instance's container's use of its cell, from the cell's last sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceUsage {
    pub index: u32,
    pub instance_id: String,
    /// 100 is one core fully busy; `None` until the cell has sampled it twice.
    pub cpu_percent: Option<f64>,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

/// A cell's pull of an instance's image, as it last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pulling {
    pub index: u32,
    pub instance_id: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

impl LrpStatus {
    pub fn new(lrp: Lrp, instances: Vec<Instance>) -> LrpStatus {
        let count = |state| {
            instances
                .iter()
                .filter(|i| i.presence == Presence::Ordinary && i.state == state)
                .count() as u32
        };
        let presence = |p| instances.iter().filter(|i| i.presence == p).count() as u32;
        LrpStatus {
            running: count(InstanceState::Running),
            unclaimed: count(InstanceState::Unclaimed),
            claimed: count(InstanceState::Claimed),
            crashed: count(InstanceState::Crashed),
            evacuating: presence(Presence::Evacuating),
            suspect: presence(Presence::Suspect),
            lrp,
            instances,
            pulling: Vec::new(),
            usage: Vec::new(),
        }
    }
}

pub(crate) fn bounded(field: &str, value: i64, max: u64) -> Result<u64, ValidationError> {
    u64::try_from(value)
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| {
            ValidationError::new(field, format!("must be between 0 and {max} (got {value})"))
        })
}

impl ResourcesInput {
    pub fn into_resources(self) -> Result<Resources, ValidationError> {
        let d = Resources::default();
        let resources = Resources {
            memory_mb: self
                .memory_mb
                .map_or(Ok(d.memory_mb), |v| bounded("memory_mb", v, u64::MAX >> 1))?,
            disk_mb: self
                .disk_mb
                .map_or(Ok(d.disk_mb), |v| bounded("disk_mb", v, u64::MAX >> 1))?,
            cpu_weight: self
                .cpu_weight
                .map_or(Ok(d.cpu_weight as u64), |v| bounded("cpu_weight", v, 100))?
                as u8,
            max_pids: self.max_pids.map_or(Ok(d.max_pids as u64), |v| {
                bounded("max_pids", v, u32::MAX as u64)
            })? as u32,
        };
        resources.validate()?;
        Ok(resources)
    }
}

impl LrpCreate {
    /// The validated spec, or the first field at fault.
    pub fn into_spec(self) -> Result<LrpSpec, ValidationError> {
        let name = Name::parse("name", &self.name)?;
        let domain = Name::parse("domain", self.domain.as_deref().unwrap_or(DEFAULT_DOMAIN))?;
        let rootfs = Rootfs::parse("rootfs", self.rootfs.as_deref().unwrap_or(DEFAULT_ROOTFS))?;
        let spec = LrpSpec {
            image_credentials: self.image_credentials,
            name,
            domain,
            rootfs: rootfs.clone(),
            instances: bounded("instances", self.instances, model::limits::INSTANCES as u64)?
                as u32,
            resources: self
                .resources
                .into_resources()
                .map_err(|e| e.within("resources"))?,
            setup: self.setup,
            action: crate::default_action(self.action, &rootfs)?,
            env: self.env,
            ports: self.ports,
            checks: self.checks.unwrap_or_default(),
            routes: self.routes.unwrap_or_default(),
            placement_tags: self.placement_tags,
            crash_policy: self.crash_policy.unwrap_or_default(),
            annotation: self.annotation,
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl LrpPatch {
    /// The expected generation, if any, and the update. The update is validated
    /// against the LRP by [`Lrp::updated`].
    pub fn into_update(self) -> Result<(Option<u64>, LrpUpdate), ValidationError> {
        let instances = self
            .instances
            .map(|v| bounded("instances", v, model::limits::INSTANCES as u64).map(|v| v as u32))
            .transpose()?;
        Ok((
            self.generation,
            LrpUpdate {
                instances,
                routes: self.routes,
                annotation: self.annotation,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expect: Result<(), &str>) {
        let create: LrpCreate = serde_json::from_str(json).expect("test input parses");
        let got = create.into_spec().map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(got, expect.map_err(str::to_owned), "input {json}");
    }

    #[test]
    fn create_validation() {
        let action = r#""action": {"run": {"path": "sleep", "args": ["1000"]}}"#;
        check(&format!(r#"{{"name": "web", {action}}}"#), Ok(()));
        check(
            &format!(r#"{{"name": "web", "instances": -1, {action}}}"#),
            Err("instances: must be between 0 and 100000 (got -1)"),
        );
        check(
            &format!(r#"{{"name": "we b", {action}}}"#),
            Err("name: may contain only letters, digits, '_' and '-' (found ' ')"),
        );
        check(
            &format!(r#"{{"name": "web", "resources": {{"memory_mb": -5}}, {action}}}"#),
            Err("resources.memory_mb: must be between 0 and 9223372036854775807 (got -5)"),
        );
        check(
            &format!(r#"{{"name": "web", "rootfs": "ftp://x", {action}}}"#),
            Err("rootfs: must start with preloaded:, docker:// or oci:"),
        );
        check(
            &format!(
                r#"{{"name": "web", "annotation": "{}", {action}}}"#,
                "x".repeat(10241)
            ),
            Err("annotation: is 10241 bytes, more than the limit of 10240"),
        );
        // Without an action, an image runs its own command; anything else has none.
        check(
            r#"{"name": "web", "rootfs": "docker://127.0.0.1:5000/web:1"}"#,
            Ok(()),
        );
        check(
            r#"{"name": "web"}"#,
            Err(
                "action: is required: preloaded:host has no command of its own (a docker:// image does)",
            ),
        );
        check(
            r#"{"name": "web", "rootfs": "preloaded:busybox", "action": {"serial": [{"run_image": {}}]}}"#,
            Err(
                "action: runs the image's command, but preloaded:busybox is not an image: use a docker:// rootfs or name a command",
            ),
        );
        let spec =
            serde_json::from_str::<LrpCreate>(r#"{"name": "web", "rootfs": "docker://redis"}"#)
                .unwrap()
                .into_spec()
                .unwrap();
        assert_eq!(spec.action, model::Action::run_image());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<LrpCreate>(
            r#"{"name": "web", "instancez": 3, "action": {"run": {"path": "a"}}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `instancez`"),
            "{err}"
        );
    }

    #[test]
    fn defaults() {
        let spec = serde_json::from_str::<LrpCreate>(
            r#"{"name": "web", "action": {"run": {"path": "a"}}}"#,
        )
        .unwrap()
        .into_spec()
        .unwrap();
        assert_eq!(
            (
                spec.instances,
                spec.domain.as_str(),
                spec.rootfs.to_string()
            ),
            (1, "default", "preloaded:host".to_owned())
        );
    }
}
