//! Where the CLI finds the API and its token: flags, then environment variables, then
//! the config file that `corral dev` writes (`$CORRAL_HOME/config.json`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cli::{DEFAULT_LISTEN, Global};

/// The CLI config file. Unknown fields are kept out of the way, not refused, so an
/// older CLI can read a newer file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// A file holding the token. Relative paths are relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The token itself, for setups that prefer it inline; `token_file` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The API to talk to, resolved from all sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub api: String,
    pub token: Option<String>,
}

/// Reads environment variables. Empty values count as unset, so `CORRAL_TOKEN=` does not
/// send an empty token. Tests pass a map instead of the process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// `$CORRAL_HOME`, else `~/.corral`.
pub fn corral_home(env: &dyn Env) -> Result<PathBuf> {
    if let Some(home) = env.var("CORRAL_HOME") {
        return Ok(PathBuf::from(home));
    }
    match env.var("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".corral")),
        None => bail!("neither CORRAL_HOME nor HOME is set: set CORRAL_HOME to a directory"),
    }
}

/// The config file to read, and whether the user named it (then it must exist).
fn config_path(global: &Global, env: &dyn Env) -> Option<(PathBuf, bool)> {
    if let Some(path) = &global.config {
        return Some((path.clone(), true));
    }
    if let Some(path) = env.var("CORRAL_CONFIG") {
        return Some((PathBuf::from(path), true));
    }
    corral_home(env)
        .ok()
        .map(|home| (home.join("config.json"), false))
}

/// The config file at `path`, or `None` if it does not exist.
pub fn read(path: &Path) -> Result<Option<ConfigFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("read the CLI config {}", path.display()));
        }
    };
    let config = serde_json::from_str(&text)
        .with_context(|| format!("parse the CLI config {}", path.display()))?;
    Ok(Some(config))
}

/// Writes the config file readable by its owner only (it points at a secret, and may
/// hold one), replacing any old one atomically so that a reader never sees half a file.
pub fn write(path: &Path, config: &ConfigFile) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create the config directory {}", dir.display()))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.json".to_owned());
    let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let json = serde_json::to_string_pretty(config).context("serialize the CLI config")?;
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(json.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.with_context(|| format!("write the CLI config {}", path.display()))
}

/// The API and token from, in order of precedence: the flags, the environment
/// (`CORRAL_API`, `CORRAL_TOKEN`), the config file. Without any, the API is the
/// default local one and there is no token (the server then says one is needed).
pub fn resolve(global: &Global, env: &dyn Env) -> Result<Endpoint> {
    let api_override = global.api.clone().or_else(|| env.var("CORRAL_API"));
    let token_override = global.token.clone().or_else(|| env.var("CORRAL_TOKEN"));
    let (file, file_path) = match (&api_override, &token_override) {
        // Both are given: the file is not needed, and a broken one must not get in
        // the way.
        (Some(_), Some(_)) => (None, None),
        _ => match config_path(global, env) {
            Some((path, explicit)) => match read(&path)? {
                Some(file) => (Some(file), Some(path)),
                None if explicit => bail!("the CLI config {} does not exist", path.display()),
                None => (None, None),
            },
            None => (None, None),
        },
    };
    let file = file.unwrap_or_default();
    let api = api_override
        .or(file.api)
        .unwrap_or_else(|| format!("http://{DEFAULT_LISTEN}"));
    let token = match token_override {
        Some(token) => Some(token),
        None => match &file.token_file {
            Some(token_file) => {
                let base = file_path
                    .as_deref()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new("."));
                let token_path = base.join(token_file);
                let token = std::fs::read_to_string(&token_path).with_context(|| {
                    format!(
                        "read the API token from {} (named in the CLI config {})",
                        token_path.display(),
                        file_path.as_deref().unwrap_or(Path::new("?")).display()
                    )
                })?;
                Some(token.trim().to_owned()).filter(|t| !t.is_empty())
            }
            None => file.token.filter(|t| !t.is_empty()),
        },
    };
    Ok(Endpoint { api, token })
}

/// An environment made of a map, for tests.
#[cfg(test)]
pub struct MapEnv(pub std::collections::HashMap<&'static str, String>);

#[cfg(test)]
impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned().filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A CORRAL_HOME with a config file pointing at a token file, like `corral dev`
    /// leaves it.
    fn home_with_config() -> tempfile::TempDir {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(home.path().join("dev")).expect("mkdir");
        std::fs::write(home.path().join("dev/token"), "file-token\n").expect("write token");
        write(
            &home.path().join("config.json"),
            &ConfigFile {
                api: Some("http://file:1".into()),
                token_file: Some(home.path().join("dev/token")),
                token: None,
            },
        )
        .expect("write config");
        home
    }

    fn check(
        flags: (Option<&str>, Option<&str>),
        env: &[(&'static str, &str)],
        expect: (&str, Option<&str>),
    ) {
        let home = home_with_config();
        let mut vars: HashMap<&'static str, String> =
            env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        vars.insert("CORRAL_HOME", home.path().display().to_string());
        let global = Global {
            api: flags.0.map(str::to_owned),
            token: flags.1.map(str::to_owned),
            config: None,
        };
        let got = resolve(&global, &MapEnv(vars)).expect("resolves");
        assert_eq!(
            (got.api.as_str(), got.token.as_deref()),
            expect,
            "flags {flags:?} env {env:?}"
        );
    }

    #[test]
    fn precedence_is_flag_then_env_then_file() {
        check((None, None), &[], ("http://file:1", Some("file-token")));
        check(
            (None, None),
            &[
                ("CORRAL_API", "http://env:2"),
                ("CORRAL_TOKEN", "env-token"),
            ],
            ("http://env:2", Some("env-token")),
        );
        check(
            (Some("http://flag:3"), Some("flag-token")),
            &[
                ("CORRAL_API", "http://env:2"),
                ("CORRAL_TOKEN", "env-token"),
            ],
            ("http://flag:3", Some("flag-token")),
        );
        // Each setting on its own: a flag API with the file's token.
        check(
            (Some("http://flag:3"), None),
            &[],
            ("http://flag:3", Some("file-token")),
        );
        check(
            (None, Some("flag-token")),
            &[("CORRAL_API", "http://env:2")],
            ("http://env:2", Some("flag-token")),
        );
        // An empty variable counts as unset.
        check(
            (None, None),
            &[("CORRAL_TOKEN", "")],
            ("http://file:1", Some("file-token")),
        );
    }

    #[test]
    fn without_any_source_the_local_default_and_no_token() {
        let home = tempfile::tempdir().expect("tempdir");
        let env = MapEnv(HashMap::from([(
            "CORRAL_HOME",
            home.path().display().to_string(),
        )]));
        let got = resolve(&Global::default(), &env).expect("resolves");
        assert_eq!(
            got,
            Endpoint {
                api: "http://127.0.0.1:7070".into(),
                token: None
            }
        );
    }

    #[test]
    fn a_named_config_must_exist_and_parse() {
        let home = tempfile::tempdir().expect("tempdir");
        let missing = home.path().join("nope.json");
        let global = Global {
            config: Some(missing.clone()),
            ..Global::default()
        };
        let err = resolve(&global, &MapEnv(HashMap::new())).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("the CLI config {} does not exist", missing.display())
        );

        let broken = home.path().join("broken.json");
        std::fs::write(&broken, "{").expect("write");
        let env = MapEnv(HashMap::from([(
            "CORRAL_CONFIG",
            broken.display().to_string(),
        )]));
        let err = resolve(&Global::default(), &env).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(&format!("parse the CLI config {}: ", broken.display())),
            "{err:#}"
        );
    }

    #[test]
    fn token_files_are_relative_to_the_config() {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::write(home.path().join("token"), "  t0k  \n").expect("write");
        let path = home.path().join("c.json");
        std::fs::write(
            &path,
            r#"{"api": "http://x:1", "token_file": "token", "future": 1}"#,
        )
        .expect("write");
        let global = Global {
            config: Some(path),
            ..Global::default()
        };
        let got = resolve(&global, &MapEnv(HashMap::new())).expect("resolves");
        assert_eq!(got.token.as_deref(), Some("t0k"));
    }

    #[test]
    fn the_config_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;

        let home = home_with_config();
        let path = home.path().join("config.json");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read(&path).expect("reads").and_then(|c| c.api).as_deref(),
            Some("http://file:1")
        );
    }
}
