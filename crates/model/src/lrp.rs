//! The desired LRP: a long-running process of N instances.

use serde::{Deserialize, Serialize};

use crate::validate::{ValidationError, check_env, check_len, limits};
use crate::{
    Action, Checks, CrashPolicy, Env, Generation, Name, RegistryCredentials, Resources, Rootfs,
    Routes, Timestamp,
};

/// What a user wants running. Only `instances`, `routes` and `annotation` change after
/// creation (as in Diego): anything that needs a restart is a new LRP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpSpec {
    pub name: Name,
    pub domain: Name,
    pub rootfs: Rootfs,
    /// The registry login for a `docker://` rootfs that needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_credentials: Option<RegistryCredentials>,
    pub instances: u32,
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<Action>,
    pub action: Action,
    #[serde(default, with = "env_map", skip_serializing_if = "Vec::is_empty")]
    pub env: Env,
    /// Container ports the processes listen on; routes and checks refer to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default, skip_serializing_if = "Routes::is_empty")]
    pub routes: Routes,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_tags: Vec<String>,
    #[serde(default)]
    pub crash_policy: CrashPolicy,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub annotation: String,
}

/// A stored LRP: the spec plus what the store keeps about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lrp {
    #[serde(flatten)]
    pub spec: LrpSpec,
    pub generation: Generation,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The parts of an LRP that may change in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LrpUpdate {
    pub instances: Option<u32>,
    pub routes: Option<Routes>,
    pub annotation: Option<String>,
}

impl LrpSpec {
    /// Checks everything the type system does not; errors name the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.instances > limits::INSTANCES {
            return Err(ValidationError::new(
                "instances",
                format!("must be between 0 and {}", limits::INSTANCES),
            ));
        }
        self.resources
            .validate()
            .map_err(|e| e.within("resources"))?;
        if let Some(setup) = &self.setup {
            setup.validate().map_err(|e| e.within("setup"))?;
        }
        self.action.validate().map_err(|e| e.within("action"))?;
        image_only(&self.rootfs, self.setup.as_ref(), &self.action)?;
        check_credentials(&self.rootfs, self.image_credentials.as_ref())?;
        check_env("env", &self.env)?;
        if self.ports.len() > limits::PORTS {
            return Err(ValidationError::new(
                "ports",
                format!("at most {} ports", limits::PORTS),
            ));
        }
        if let Some(i) = self.ports.iter().position(|p| *p == 0) {
            return Err(ValidationError::new(format!("ports[{i}]"), "must not be 0"));
        }
        self.checks
            .validate(&self.ports)
            .map_err(|e| e.within("checks"))?;
        self.routes
            .validate(&self.ports)
            .map_err(|e| e.within("routes"))?;
        validate_tags("placement_tags", &self.placement_tags)?;
        self.crash_policy
            .validate()
            .map_err(|e| e.within("crash_policy"))?;
        check_len("annotation", &self.annotation, limits::ANNOTATION_BYTES)
    }
}

/// Registry credentials go with an image, and are valid.
pub(crate) fn check_credentials(
    rootfs: &Rootfs,
    credentials: Option<&RegistryCredentials>,
) -> Result<(), ValidationError> {
    let Some(credentials) = credentials else {
        return Ok(());
    };
    if !matches!(rootfs, Rootfs::Docker(_)) {
        return Err(ValidationError::new(
            "image_credentials",
            format!("are for a docker:// registry, but the rootfs is {rootfs}"),
        ));
    }
    credentials
        .validate()
        .map_err(|e| e.within("image_credentials"))
}

/// `run_image` needs an image to take the command from.
pub(crate) fn image_only(
    rootfs: &Rootfs,
    setup: Option<&Action>,
    action: &Action,
) -> Result<(), ValidationError> {
    if matches!(rootfs, Rootfs::Preloaded(_)) {
        for (field, action) in [("setup", setup), ("action", Some(action))] {
            if action.is_some_and(Action::uses_image) {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "runs the image's command, but {rootfs} is not an image: use a docker:// rootfs or name a command"
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl Lrp {
    /// The LRP as the API shows it: its registry password left out.
    pub fn redacted(&self) -> Lrp {
        let mut shown = self.clone();
        RegistryCredentials::redact(&mut shown.spec.image_credentials);
        shown
    }

    /// The LRP after `update`, validated, or why the update is refused. The generation
    /// and timestamps are the store's to set.
    pub fn updated(&self, update: &LrpUpdate, now: Timestamp) -> Result<Lrp, ValidationError> {
        let mut next = self.clone();
        if let Some(instances) = update.instances {
            next.spec.instances = instances;
        }
        if let Some(routes) = &update.routes {
            next.spec.routes = routes.clone();
        }
        if let Some(annotation) = &update.annotation {
            next.spec.annotation = annotation.clone();
        }
        next.spec.validate()?;
        next.updated_at = now;
        Ok(next)
    }
}

pub(crate) fn validate_tags(field: &str, tags: &[String]) -> Result<(), ValidationError> {
    if tags.len() > limits::PLACEMENT_TAGS {
        return Err(ValidationError::new(
            field,
            format!("at most {} tags", limits::PLACEMENT_TAGS),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        Name::parse(&format!("{field}[{i}]"), tag)?;
    }
    Ok(())
}

/// Serializes an [`Env`] as a JSON object, keeping the order of its entries.
pub mod env_map {
    use std::fmt;

    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(env: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(env.len()))?;
        for (k, v) in env {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        struct EnvVisitor;
        impl<'de> Visitor<'de> for EnvVisitor {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of environment variables with string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut env = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    env.push(entry);
                }
                Ok(env)
            }
        }
        d.deserialize_map(EnvVisitor)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> LrpSpec {
        LrpSpec {
            image_credentials: None,
            name: Name::parse("name", "web").unwrap(),
            domain: Name::parse("domain", "default").unwrap(),
            rootfs: Rootfs::parse("rootfs", "preloaded:host").unwrap(),
            instances: 3,
            resources: Resources::default(),
            setup: None,
            action: Action::run("sleep", ["1000"]),
            env: vec![("PORT".into(), "8080".into())],
            ports: vec![8080],
            checks: Checks::default(),
            routes: Routes::default(),
            placement_tags: vec![],
            crash_policy: CrashPolicy::default(),
            annotation: String::new(),
        }
    }

    #[test]
    fn validation_names_the_field() {
        type Edit = fn(&mut LrpSpec);
        let cases: &[(Edit, &str)] = &[
            (|s| s.instances = limits::INSTANCES + 1, "instances"),
            (|s| s.resources.cpu_weight = 0, "resources.cpu_weight"),
            (
                |s| s.annotation = "x".repeat(limits::ANNOTATION_BYTES + 1),
                "annotation",
            ),
            (
                |s| s.action = Action::run("", Vec::<String>::new()),
                "action.run.path",
            ),
            (|s| s.ports = vec![0], "ports[0]"),
            (
                |s| s.placement_tags = vec!["a b".into()],
                "placement_tags[0]",
            ),
            (|s| s.env = vec![("A=B".into(), "x".into())], "env.A=B"),
            (
                |s| {
                    s.routes.http.push(crate::HttpRoute {
                        hostname: "w.localhost".into(),
                        port: 1,
                    })
                },
                "routes.http[0].port",
            ),
        ];
        assert_eq!(spec().validate(), Ok(()));
        for (edit, field) in cases {
            let mut s = spec();
            edit(&mut s);
            assert_eq!(s.validate().unwrap_err().field, *field);
        }
        let mut s = spec();
        s.annotation = "x".repeat(limits::ANNOTATION_BYTES);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn env_keeps_its_order_on_the_wire() {
        let mut s = spec();
        s.env = vec![("Z".into(), "1".into()), ("A".into(), "2".into())];
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""env":{"Z":"1","A":"2"}"#), "{json}");
        let back: LrpSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn updates_are_validated() {
        let lrp = Lrp {
            spec: spec(),
            generation: 4,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
        };
        let scaled = lrp
            .updated(
                &LrpUpdate {
                    instances: Some(5),
                    ..Default::default()
                },
                Timestamp(9),
            )
            .unwrap();
        assert_eq!(
            (scaled.spec.instances, scaled.updated_at, scaled.generation),
            (5, Timestamp(9), 4)
        );
        let big = LrpUpdate {
            annotation: Some("x".repeat(limits::ANNOTATION_BYTES + 1)),
            ..Default::default()
        };
        assert_eq!(
            lrp.updated(&big, Timestamp(9)).unwrap_err().field,
            "annotation"
        );
    }
}
