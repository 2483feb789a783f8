//! The action tree: what a cell runs inside a container.

use serde::{Deserialize, Serialize};

use crate::Env;
use crate::validate::{ValidationError, check_env, check_len, limits};

/// One node of the action tree. On the wire each node is an object with exactly one
/// key naming its kind, as in Diego: `{"run": {"path": "sleep", "args": ["10"]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Runs a process and succeeds when it exits 0.
    Run(RunAction),
    /// Runs the image's own command (its ENTRYPOINT and CMD, in its working directory,
    /// as its user) and succeeds when it exits 0; only with an image rootfs
    /// (`docker://`, `oci:`). What the image leaves open, the cell fills in before it
    /// runs anything: this node never reaches a process.
    RunImage(RunImageAction),
    /// Fetches a file into the container.
    Download(DownloadAction),
    /// Runs the children one after another, stopping at the first failure.
    Serial(Vec<Action>),
    /// Runs the children at once; waits for all, fails with the first failure.
    Parallel(Vec<Action>),
    /// Runs the children at once; when any of them exits, the rest are stopped.
    Codependent(Vec<Action>),
    /// Fails the child if it has not finished within `timeout_ms`.
    Timeout {
        action: Box<Action>,
        timeout_ms: u64,
    },
    /// Runs the child and ignores its failure.
    Try(Box<Action>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAction {
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(
        default,
        with = "crate::lrp::env_map",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Env,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "ResourceLimits::is_empty")]
    pub limits: ResourceLimits,
}

/// The image's command, with `args` in place of its CMD when given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunImageAction {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(
        default,
        with = "crate::lrp::env_map",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Env,
}

/// An image's command and settings, as its config gives them (ENTRYPOINT, CMD,
/// WorkingDir, User).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCommand {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// Per-process rlimits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc: Option<u64>,
}

impl ResourceLimits {
    fn is_empty(&self) -> bool {
        self.nofile.is_none() && self.nproc.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadAction {
    /// An `http://` or `https://` URL.
    pub from: String,
    /// Absolute path inside the container.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    /// Lowercase hex.
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlgorithm {
    Sha256,
    Sha512,
}

impl Action {
    /// A single `run` of `path args...`.
    pub fn run(
        path: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Action {
        Action::Run(RunAction {
            path: path.into(),
            args: args.into_iter().map(Into::into).collect(),
            dir: None,
            env: Vec::new(),
            user: None,
            limits: ResourceLimits::default(),
        })
    }

    /// The image's own command, as `corral create` without a command asks for.
    pub fn run_image() -> Action {
        Action::RunImage(RunImageAction::default())
    }

    /// The first `run` of the tree, depth first: the app's main process for an action,
    /// whose user and directory an exec session into its container takes.
    pub fn first_run(&self) -> Option<&RunAction> {
        match self {
            Action::Run(run) => Some(run),
            Action::RunImage(_) | Action::Download(_) => None,
            Action::Serial(children)
            | Action::Parallel(children)
            | Action::Codependent(children) => children.iter().find_map(Action::first_run),
            Action::Timeout { action, .. } | Action::Try(action) => action.first_run(),
        }
    }

    /// Whether a node of the tree runs the image's command.
    pub fn uses_image(&self) -> bool {
        match self {
            Action::RunImage(_) => true,
            Action::Run(_) | Action::Download(_) => false,
            Action::Serial(children)
            | Action::Parallel(children)
            | Action::Codependent(children) => children.iter().any(Action::uses_image),
            Action::Timeout { action, .. } | Action::Try(action) => action.uses_image(),
        }
    }

    /// The tree with each `run_image` node made a `run` of `image`'s command, and
    /// every `run` without a user or a directory given the image's, as `docker run`
    /// does; an image without a command (neither ENTRYPOINT nor CMD nor args) is an
    /// error that says so.
    pub fn with_image(&self, image: &ImageCommand) -> Result<Action, String> {
        let each = |children: &[Action]| -> Result<Vec<Action>, String> {
            children.iter().map(|c| c.with_image(image)).collect()
        };
        Ok(match self {
            Action::RunImage(run) => {
                let cmd = if run.args.is_empty() {
                    &image.cmd
                } else {
                    &run.args
                };
                let mut argv = image.entrypoint.iter().chain(cmd.iter()).cloned();
                let Some(path) = argv.next() else {
                    return Err(
                        "the image names no command (no ENTRYPOINT or CMD): give one".to_owned(),
                    );
                };
                Action::Run(RunAction {
                    path,
                    args: argv.collect(),
                    dir: image.working_dir.clone().filter(|d| !d.is_empty()),
                    env: run.env.clone(),
                    user: image.user.clone().filter(|u| !u.is_empty()),
                    limits: ResourceLimits::default(),
                })
            }
            Action::Run(run) => Action::Run(RunAction {
                dir: run
                    .dir
                    .clone()
                    .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty())),
                user: run
                    .user
                    .clone()
                    .or_else(|| image.user.clone().filter(|u| !u.is_empty())),
                ..run.clone()
            }),
            Action::Download(_) => self.clone(),
            Action::Serial(children) => Action::Serial(each(children)?),
            Action::Parallel(children) => Action::Parallel(each(children)?),
            Action::Codependent(children) => Action::Codependent(each(children)?),
            Action::Timeout { action, timeout_ms } => Action::Timeout {
                action: Box::new(action.with_image(image)?),
                timeout_ms: *timeout_ms,
            },
            Action::Try(action) => Action::Try(Box::new(action.with_image(image)?)),
        })
    }

    /// Checks the whole tree; errors name the path to the bad node, such as
    /// `action.serial[1].run.path`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut nodes = 0;
        self.validate_at(0, &mut nodes)
    }

    fn validate_at(&self, depth: usize, nodes: &mut usize) -> Result<(), ValidationError> {
        *nodes += 1;
        if *nodes > limits::ACTION_NODES {
            return Err(ValidationError::new(
                "",
                format!("has more than {} actions", limits::ACTION_NODES),
            ));
        }
        if depth >= limits::ACTION_DEPTH {
            return Err(ValidationError::new(
                "",
                format!("is nested deeper than {} levels", limits::ACTION_DEPTH),
            ));
        }
        let children = |kind: &str, children: &[Action], nodes: &mut usize| {
            if children.is_empty() {
                return Err(ValidationError::new(kind, "needs at least one action"));
            }
            for (i, child) in children.iter().enumerate() {
                child
                    .validate_at(depth + 1, nodes)
                    .map_err(|e| e.within(&format!("[{i}]")).within(kind))?;
            }
            Ok(())
        };
        match self {
            Action::Run(run) => run.validate().map_err(|e| e.within("run")),
            Action::RunImage(run) => run.validate().map_err(|e| e.within("run_image")),
            Action::Download(download) => download.validate().map_err(|e| e.within("download")),
            Action::Serial(actions) => children("serial", actions, nodes),
            Action::Parallel(actions) => children("parallel", actions, nodes),
            Action::Codependent(actions) => children("codependent", actions, nodes),
            Action::Timeout { action, timeout_ms } => {
                if *timeout_ms == 0 || *timeout_ms > limits::TIMEOUT_MS {
                    return Err(ValidationError::new(
                        "timeout.timeout_ms",
                        format!("must be between 1 and {}", limits::TIMEOUT_MS),
                    ));
                }
                action
                    .validate_at(depth + 1, nodes)
                    .map_err(|e| e.within("timeout.action"))
            }
            Action::Try(action) => action
                .validate_at(depth + 1, nodes)
                .map_err(|e| e.within("try")),
        }
    }
}

impl RunAction {
    fn validate(&self) -> Result<(), ValidationError> {
        if self.path.is_empty() {
            return Err(ValidationError::new("path", "must not be empty"));
        }
        check_len("path", &self.path, limits::ACTION_STRING_BYTES)?;
        for (i, arg) in self.args.iter().enumerate() {
            check_len(&format!("args[{i}]"), arg, limits::ACTION_STRING_BYTES)?;
        }
        if let Some(dir) = &self.dir {
            check_len("dir", dir, limits::ACTION_STRING_BYTES)?;
        }
        check_env("env", &self.env)
    }
}

impl RunImageAction {
    fn validate(&self) -> Result<(), ValidationError> {
        for (i, arg) in self.args.iter().enumerate() {
            check_len(&format!("args[{i}]"), arg, limits::ACTION_STRING_BYTES)?;
        }
        check_env("env", &self.env)
    }
}

impl DownloadAction {
    fn validate(&self) -> Result<(), ValidationError> {
        check_len("from", &self.from, limits::ACTION_STRING_BYTES)?;
        if !(self.from.starts_with("http://") || self.from.starts_with("https://")) {
            return Err(ValidationError::new(
                "from",
                "must be an http:// or https:// URL",
            ));
        }
        check_len("to", &self.to, limits::ACTION_STRING_BYTES)?;
        if !self.to.starts_with('/') {
            return Err(ValidationError::new("to", "must be an absolute path"));
        }
        if self.to.split('/').any(|part| part == "..") {
            return Err(ValidationError::new("to", "must not contain '..'"));
        }
        if let Some(checksum) = &self.checksum {
            let hex_len = match checksum.algorithm {
                ChecksumAlgorithm::Sha256 => 64,
                ChecksumAlgorithm::Sha512 => 128,
            };
            if checksum.value.len() != hex_len
                || !checksum
                    .value
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            {
                return Err(ValidationError::new(
                    "checksum.value",
                    format!("must be {hex_len} lowercase hex digits"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expect: Result<(), &str>) {
        let action: Action = serde_json::from_str(json).expect("test input parses");
        let got = action.validate().map_err(|e| e.to_string());
        assert_eq!(got, expect.map_err(str::to_owned), "input {json}");
    }

    #[test]
    fn image_commands_fill_run_image_nodes() {
        let image = ImageCommand {
            entrypoint: vec!["/bin/httpd".into(), "-f".into()],
            cmd: vec!["-p".into(), "80".into()],
            working_dir: Some("/www".into()),
            user: Some("nobody".into()),
        };
        let cases: &[(&str, Result<&str, &str>)] = &[
            (
                r#"{"run_image": {}}"#,
                Ok(
                    r#"{"run":{"path":"/bin/httpd","args":["-f","-p","80"],"dir":"/www","user":"nobody"}}"#,
                ),
            ),
            // Args replace CMD, not ENTRYPOINT.
            (
                r#"{"run_image": {"args": ["-p", "8080"]}}"#,
                Ok(
                    r#"{"run":{"path":"/bin/httpd","args":["-f","-p","8080"],"dir":"/www","user":"nobody"}}"#,
                ),
            ),
            (
                r#"{"serial": [{"run": {"path": "true"}}, {"try": {"run_image": {}}}]}"#,
                Ok(
                    r#"{"serial":[{"run":{"path":"true","args":[],"dir":"/www","user":"nobody"}},{"try":{"run":{"path":"/bin/httpd","args":["-f","-p","80"],"dir":"/www","user":"nobody"}}}]}"#,
                ),
            ),
            // A run's own user and directory stay.
            (
                r#"{"serial": [{"run": {"path": "id", "user": "root", "dir": "/"}}, {"run_image": {}}]}"#,
                Ok(
                    r#"{"serial":[{"run":{"path":"id","args":[],"dir":"/","user":"root"}},{"run":{"path":"/bin/httpd","args":["-f","-p","80"],"dir":"/www","user":"nobody"}}]}"#,
                ),
            ),
        ];
        for (input, expect) in cases {
            let action: Action = serde_json::from_str(input).unwrap();
            assert!(action.uses_image(), "{input}");
            let got = action
                .with_image(&image)
                .map(|a| serde_json::to_string(&a).unwrap());
            assert_eq!(got.as_deref().map_err(|e| e.as_str()), *expect, "{input}");
        }
        let bare = ImageCommand::default();
        assert_eq!(
            Action::run_image().with_image(&bare).unwrap_err(),
            "the image names no command (no ENTRYPOINT or CMD): give one"
        );
        // With args, an image without a command still runs.
        let args: Action = serde_json::from_str(r#"{"run_image": {"args": ["sh"]}}"#).unwrap();
        assert_eq!(
            args.with_image(&bare).unwrap(),
            Action::run("sh", Vec::<String>::new())
        );
        assert!(!Action::run("true", Vec::<String>::new()).uses_image());
    }

    #[test]
    fn validation_names_the_node() {
        check(r#"{"run": {"path": "sleep", "args": ["1"]}}"#, Ok(()));
        check(
            r#"{"run": {"path": ""}}"#,
            Err("run.path: must not be empty"),
        );
        check(
            r#"{"serial": [{"run": {"path": "a"}}, {"run": {"path": ""}}]}"#,
            Err("serial[1].run.path: must not be empty"),
        );
        check(
            r#"{"parallel": []}"#,
            Err("parallel: needs at least one action"),
        );
        check(
            r#"{"timeout": {"action": {"run": {"path": "a"}}, "timeout_ms": 0}}"#,
            Err("timeout.timeout_ms: must be between 1 and 86400000"),
        );
        check(
            r#"{"try": {"download": {"from": "ftp://x", "to": "/tmp/x"}}}"#,
            Err("try.download.from: must be an http:// or https:// URL"),
        );
        check(
            r#"{"codependent": [{"download": {"from": "http://x", "to": "rel"}}]}"#,
            Err("codependent[0].download.to: must be an absolute path"),
        );
        check(
            r#"{"download": {"from": "http://x", "to": "/app/../../etc/passwd"}}"#,
            Err("download.to: must not contain '..'"),
        );
        check(
            r#"{"download": {"from": "http://x", "to": "/x", "checksum": {"algorithm": "sha256", "value": "ab"}}}"#,
            Err("download.checksum.value: must be 64 lowercase hex digits"),
        );
    }

    #[test]
    fn depth_is_bounded() {
        let mut action = Action::run("true", Vec::<String>::new());
        for _ in 0..limits::ACTION_DEPTH {
            action = Action::Try(Box::new(action));
        }
        assert!(
            action
                .validate()
                .unwrap_err()
                .reason
                .contains("nested deeper")
        );
    }

    #[test]
    fn unknown_kinds_and_fields_are_refused() {
        assert!(serde_json::from_str::<Action>(r#"{"upload": {}}"#).is_err());
        assert!(serde_json::from_str::<Action>(r#"{"run": {"path": "a", "bogus": 1}}"#).is_err());
    }

    #[test]
    fn the_first_run_is_found_depth_first_past_downloads() {
        let app = RunAction {
            path: "app".into(),
            args: vec![],
            dir: Some("/app".into()),
            env: vec![],
            user: Some("vcap".into()),
            limits: ResourceLimits::default(),
        };
        let tree = Action::Serial(vec![
            Action::Download(DownloadAction {
                from: "http://x/a.tgz".into(),
                to: "/app".into(),
                checksum: None,
                cache_key: None,
                user: None,
            }),
            Action::Try(Box::new(Action::Codependent(vec![
                Action::Run(app.clone()),
                Action::run("sidecar", ["x"]),
            ]))),
        ]);
        assert_eq!(tree.first_run(), Some(&app));
        assert_eq!(Action::run_image().first_run(), None);
    }
}
