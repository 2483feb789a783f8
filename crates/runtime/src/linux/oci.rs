//! The OCI runtime configuration of a container (`config.json`, read by libcontainer to
//! make it) and of each process started in it (`process.json` of an exec).
//!
//! The defaults follow runc's and Docker's: Docker's default capabilities, runc's
//! default mounts and masked and read-only paths, no new privileges, a device cgroup
//! that denies everything but the standard devices.

use std::path::Path;

use anyhow::{Context, bail};
use oci_spec::runtime::{Process, Spec};
use serde_json::{Value, json};

use crate::spec::{ContainerSpec, Limits, ProcessSpec};

use super::rootfs::User;

/// Where the container init is bind-mounted inside every container.
pub(super) const INIT_PATH: &str = "/.corral/init";

/// `PATH` for processes whose environment has none.
pub(super) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// runc's default masked paths: files bind-mounted over with /dev/null, directories
/// with an empty read-only tmpfs.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What `config.json` is made from besides the agent's spec.
#[derive(Debug)]
pub(super) struct Container<'a> {
    pub spec: &'a ContainerSpec,
    /// The merged rootfs on the host.
    pub root: &'a Path,
    /// The init binary on the host.
    pub init: &'a Path,
    /// libcontainer's `cgroupsPath`, e.g. `/corral/br0/web-0`.
    pub cgroup: &'a str,
    /// The environment of the container's init (and base of every process's).
    pub env: &'a [(String, String)],
    /// The container's cgroup directories on the host and where it sees them.
    pub cgroup_binds: &'a [(std::path::PathBuf, String)],
    /// Whether the device cgroup limits which devices the container may use.
    pub devices_enforced: bool,
}

/// The runtime configuration of a container whose pid 1 is the Corral init.
pub(super) fn container_spec(c: &Container<'_>) -> anyhow::Result<Spec> {
    let hostname = if c.spec.hostname.is_empty() {
        c.spec.id.as_str()
    } else {
        c.spec.hostname.as_str()
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": INIT_PATH, "type": "bind", "source": c.init,
               "options": ["bind", "ro", "nosuid", "nodev"]}),
    ];
    // The container's own cgroups, read-only, where runtimes such as the JVM look for
    // their limits. libcontainer's `cgroup` mount type would mount v1 hierarchies
    // writable (the container could lift its own limits), so they are bind mounts.
    if c.cgroup_binds.len() > 1
        || c.cgroup_binds
            .first()
            .is_some_and(|(_, d)| d != "/sys/fs/cgroup")
    {
        mounts.push(
            json!({"destination": "/sys/fs/cgroup", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "noexec", "nodev", "mode=755", "size=64k"]}),
        );
    }
    for (source, destination) in c.cgroup_binds {
        mounts.push(
            json!({"destination": destination, "type": "bind", "source": source,
                           "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}),
        );
    }
    for m in &c.spec.mounts {
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", if m.read_only { "ro" } else { "rw" }, "nosuid", "nodev"],
        }));
    }
    let mut readonly_paths: Vec<&str> = READONLY_PATHS.to_vec();
    if !c.cgroup_binds.is_empty() {
        readonly_paths.push("/sys/fs/cgroup");
    }
    let config = json!({
        "ociVersion": "1.0.2",
        "root": {"path": c.root, "readonly": false},
        "hostname": hostname,
        "mounts": mounts,
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": [INIT_PATH],
            "env": env_strings(c.env),
            "cwd": "/",
            "capabilities": capabilities(c.devices_enforced),
            "noNewPrivileges": true,
        },
        "linux": {
            "cgroupsPath": c.cgroup,
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"},
            ],
            "resources": resources(&c.spec.limits),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": readonly_paths,
            "rootfsPropagation": "private",
        },
    });
    serde_json::from_value(config).context("making the OCI runtime configuration")
}

/// Docker's capabilities; without CAP_MKNOD where the device cgroup cannot stop a
/// container from using the device nodes it makes (cgroup v2 needs eBPF for that, which
/// this build leaves out).
fn capabilities(devices_enforced: bool) -> Value {
    let caps: Vec<&str> = CAPABILITIES
        .iter()
        .copied()
        .filter(|c| devices_enforced || *c != "CAP_MKNOD")
        .collect();
    json!({
        "bounding": caps,
        "effective": caps,
        "permitted": caps,
    })
}

fn resources(limits: &Limits) -> Value {
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    // Diego's weight 1-100 as cpu shares: 100 is the kernel's default 1024.
    let shares = (1024 * u64::from(limits.cpu_weight.clamp(1, 100)) / 100).max(2);
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "cpu": {"shares": shares},
        "pids": {"limit": if limits.pids == 0 { -1 } else { i64::from(limits.pids) }},
    });
    if memory > 0 {
        // Memory + swap = memory: the container cannot swap.
        resources["memory"] = json!({"limit": memory, "swap": memory});
    }
    resources
}

/// The runtime configuration of one process started in a running container.
pub(super) fn process(
    spec: &ProcessSpec,
    user: &User,
    env: &[(String, String)],
    devices_enforced: bool,
    terminal: bool,
) -> anyhow::Result<Process> {
    let cwd = spec.dir.as_deref().unwrap_or("/");
    if !cwd.starts_with('/') {
        bail!("the working directory {cwd:?} is not an absolute path");
    }
    if spec.path.is_empty() {
        bail!("the process has no path");
    }
    let mut args = vec![spec.path.clone()];
    args.extend(spec.args.iter().cloned());
    let mut rlimits = Vec::new();
    if let Some(n) = spec.nofile {
        rlimits.push(json!({"type": "RLIMIT_NOFILE", "hard": n, "soft": n}));
    }
    if let Some(n) = spec.nproc {
        rlimits.push(json!({"type": "RLIMIT_NPROC", "hard": n, "soft": n}));
    }
    let mut user_json = json!({"uid": user.uid, "gid": user.gid});
    if !user.groups.is_empty() {
        user_json["additionalGids"] = json!(user.groups);
    }
    let process = json!({
        "terminal": terminal,
        "user": user_json,
        "args": args,
        "env": env_strings(env),
        "cwd": cwd,
        "capabilities": capabilities(devices_enforced),
        "rlimits": rlimits,
        "noNewPrivileges": true,
    });
    serde_json::from_value(process).context("making the OCI process configuration")
}

fn env_strings(env: &[(String, String)]) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Merges environments: later layers override earlier ones, the first occurrence keeps
/// its position. `PATH` is added when no layer sets it.
pub(super) fn merge_env(layers: &[&[(String, String)]]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for layer in layers {
        for (k, v) in *layer {
            match out.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.clone(),
                None => out.push((k.clone(), v.clone())),
            }
        }
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.insert(0, ("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RootfsSpec;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn later_environments_win() {
        let merged = merge_env(&[
            &[pair("A", "1"), pair("B", "1")],
            &[pair("B", "2"), pair("PATH", "/bin")],
        ]);
        assert_eq!(
            merged,
            vec![pair("A", "1"), pair("B", "2"), pair("PATH", "/bin")]
        );
        assert_eq!(merge_env(&[])[0].0, "PATH");
    }

    #[test]
    fn the_configuration_parses_with_limits() {
        let spec = ContainerSpec {
            id: "web-0".to_owned(),
            rootfs: RootfsSpec::Host,
            limits: Limits {
                memory_bytes: 64 << 20,
                cpu_weight: 50,
                pids: 100,
                disk_bytes: 0,
            },
            env: vec![],
            mounts: vec![],
            ports: vec![8080],
            hostname: String::new(),
        };
        let config = container_spec(&Container {
            spec: &spec,
            root: Path::new("/r"),
            init: Path::new("/s/init"),
            cgroup: "/corral/br/web-0",
            env: &[pair("PATH", "/bin")],
            cgroup_binds: &[],
            devices_enforced: true,
        })
        .unwrap();
        assert_eq!(config.hostname().as_deref(), Some("web-0"));
        let linux = config.linux().as_ref().unwrap();
        let resources = linux.resources().as_ref().unwrap();
        let memory = resources.memory().as_ref().unwrap();
        assert_eq!(memory.limit(), Some(64 << 20));
        assert_eq!(memory.swap(), Some(64 << 20));
        assert_eq!(resources.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 100);
        let caps = config.process().as_ref().unwrap().capabilities().as_ref();
        assert_eq!(caps.unwrap().bounding().as_ref().unwrap().len(), 14);
    }
}
