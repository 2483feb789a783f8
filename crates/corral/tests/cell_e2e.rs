//! End to end with real cells: `corral dev` with its own cell (the process backend, and
//! the linux backend when running as root), driven by the CLI as a user would, with
//! results checked from outside: HTTP on host ports, task results, crash reasons, the
//! cell's processes, and what is left on the machine afterwards.

mod common;
// The image tests' registry and pusher.
#[path = "../../image/tests/support/mod.rs"]
mod image_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use api::LrpStatus;
use model::{InstanceState, Task, TaskState};

use common::{
    Daemon, Dev, DevCell, corral, json, linux_available, ok, poll, poll_for, poll_for_explained,
};

/// Long enough for a cold start of containers on a busy 2-core machine.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `name` has `n` RUNNING instances and returns its status.
fn running(home: &Path, name: &str, n: usize) -> LrpStatus {
    poll_for(
        &format!("{n} RUNNING instances of {name}"),
        RUN_DEADLINE,
        || {
            let status: LrpStatus = json(home, &["status", name, "--json"]);
            let up = status
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .count();
            (up == n).then_some(status)
        },
    )
}

fn get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn host_port(status: &LrpStatus, index: u32, container_port: u16) -> u16 {
    let instance = status
        .instances
        .iter()
        .find(|i| i.index == index && i.state == InstanceState::Running)
        .unwrap_or_else(|| panic!("instance {index} is not running: {status:?}"));
    instance
        .ports
        .iter()
        .find(|p| p.container_port == container_port)
        .unwrap_or_else(|| panic!("instance {index} has no port {container_port}"))
        .host_port
}

fn task(home: &Path, id: &str) -> Task {
    json(home, &["task", "get", id, "--json"])
}

fn completed(home: &Path, id: &str) -> Task {
    poll_for_explained(
        &format!("task {id} to complete"),
        RUN_DEADLINE,
        || {
            let task = task(home, id);
            (task.state == TaskState::Completed).then_some(task)
        },
        // What the task and the cell were doing is what tells why it never finished.
        || {
            format!(
                "task: {:?}\ncells: {}",
                task(home, id),
                String::from_utf8_lossy(&corral(home, &["cells"]).stdout)
            )
        },
    )
}

/// Pids of host processes whose command line holds `marker`.
fn pids_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline: Vec<u8> = cmdline
            .into_iter()
            .map(|b| if b == 0 { b' ' } else { b })
            .collect();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

fn kill_all(marker: &str) -> usize {
    let pids = pids_with(marker);
    for pid in &pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    pids.len()
}

/// The process backend, which needs no root: an LRP answers on its host ports, a task
/// returns its result file, a failing task says why, and a killed process is a crash
/// that the crash policy restarts.
#[test]
fn process_backend_runs_lrps_and_tasks() {
    let cell = DevCell::start(&["--backend", "process"]);
    let home = cell.home();

    // The process backend cannot remap ports: the process listens on the host port the
    // cell gives it in $PORT.
    ok(
        home,
        &[
            "create",
            "web",
            "-i",
            "3",
            "-p",
            "8080",
            "--check",
            "http:8080/",
            "--",
            "sh",
            "-c",
            "exec python3 -m http.server --bind 127.0.0.1 \"$PORT\"",
        ],
    );
    let status = running(home, "web", 3);
    let mut ports = std::collections::BTreeSet::new();
    for index in 0..3 {
        let port = host_port(&status, index, 8080);
        ports.insert(port);
        let page = get(&format!("http://127.0.0.1:{port}/"))
            .unwrap_or_else(|| panic!("instance {index} does not answer on port {port}"));
        assert!(page.contains("Directory listing"), "{page}");
    }
    assert_eq!(ports.len(), 3, "each instance has its own host port");

    let marker = format!("marker-{}", std::process::id());
    let result = home.join("result.txt");
    let script = format!("printf forty-two > {}", result.display());
    ok(
        home,
        &[
            "task",
            "submit",
            "--id",
            "answer",
            "--result-file",
            &result.display().to_string(),
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let answer = completed(home, "answer");
    assert!(!answer.failed, "{answer:?}");
    assert_eq!(answer.result.as_deref(), Some("forty-two"));

    ok(
        home,
        &[
            "task", "submit", "--id", "broken", "--", "sh", "-c", "exit 3",
        ],
    );
    let broken = completed(home, "broken");
    assert!(broken.failed);
    assert!(
        broken
            .failure_reason
            .as_deref()
            .is_some_and(|r| r.contains("exited with status 3")),
        "{broken:?}"
    );

    ok(
        home,
        &[
            "create",
            "sleeper",
            "--",
            "sh",
            "-c",
            "sleep 1000; true",
            &marker,
        ],
    );
    running(home, "sleeper", 1);
    poll("the sleeper's process", || {
        (!pids_with(&marker).is_empty()).then_some(())
    });
    assert!(kill_all(&marker) > 0);
    let crashed = poll_for("the killed instance to be restarted", RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", "sleeper", "--json"]);
        let i = status.instances.first()?;
        (i.crash_count >= 1 && i.state == InstanceState::Running).then(|| i.clone())
    });
    assert!(
        crashed
            .crash_reason
            .as_deref()
            .is_some_and(|r| r.contains("signal 9")),
        "{crashed:?}"
    );
    ok(home, &["rm", "sleeper"]);
    poll("the sleeper's processes to go", || {
        pids_with(&marker).is_empty().then_some(())
    });
}

/// Runs a task on `rootfs` whose result file is `/tmp/out`, and returns the result.
fn task_output(home: &Path, id: &str, rootfs: &str, script: &str) -> String {
    ok(
        home,
        &[
            "task",
            "submit",
            "--id",
            id,
            "--rootfs",
            rootfs,
            "--result-file",
            "/tmp/out",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let task = completed(home, id);
    assert!(!task.failed, "task {id} failed: {task:?}");
    task.result.unwrap_or_default()
}

/// The bridge a cell with this state directory uses (`corral cell` derives it from the
/// directory unless told; the same FNV-1a as there).
fn bridge_of(state_dir: &Path) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in state_dir.display().to_string().bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("corral{:04x}", (hash ^ (hash >> 16)) as u16)
}

/// What the cell left on the machine, by the names it gives things: mounts under its
/// state directory, cgroup directories under its bridge's name, veths on its bridge.
fn traces(state_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let state = state_dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    found.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&state) && l.contains("containers"))
            .map(|l| format!("mount: {l}")),
    );
    let bridge = bridge_of(state_dir);
    let roots = std::fs::read_dir("/sys/fs/cgroup").expect("/sys/fs/cgroup");
    for root in roots.flatten() {
        let dir = root.path().join("corral").join(&bridge);
        for c in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if c.path().is_dir() {
                found.push(format!("cgroup: {}", c.path().display()));
            }
        }
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show", "master", &bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    found.extend(links.lines().map(|l| format!("veth: {l}")));
    found
}

/// The linux backend: three busybox httpd instances answer on their host ports, each
/// with its own index; containers see only their own processes and files; a memory
/// hog is killed and reported as out of memory; a fork bomb stops at the pids limit
/// and the cell stays healthy; a killed process is a crash that is restarted; and
/// nothing is left behind.
#[test]
fn linux_backend_isolates_and_limits() {
    if !linux_available() {
        return;
    }
    let cell = DevCell::start(&["--backend", "linux"]);
    let home = cell.home();
    let state_dir = home.join("dev").join("cell");

    ok(
        home,
        &[
            "create",
            "web",
            "-i",
            "3",
            "-p",
            "8080",
            "--rootfs",
            "preloaded:busybox",
            "--check",
            "http:8080/",
            "--",
            "sh",
            "-c",
            "mkdir -p /www && echo \"instance $INSTANCE_INDEX\" > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    );
    let status = running(home, "web", 3);
    for index in 0..3 {
        let port = host_port(&status, index, 8080);
        let page = poll(&format!("instance {index} on port {port}"), || {
            get(&format!("http://127.0.0.1:{port}/"))
        });
        assert_eq!(page.trim(), format!("instance {index}"));
    }

    // Its own processes only: init, the shell and ps.
    let ps = task_output(home, "ps", "preloaded:busybox", "ps -o pid,args > /tmp/out");
    assert!(
        !ps.contains("httpd"),
        "another container's process is visible:\n{ps}"
    );
    assert!(
        ps.lines().count() <= 5,
        "more processes than its own:\n{ps}"
    );

    // A marker outside the stack is invisible; writes stay in the container.
    let marker = home.join("marker");
    std::fs::write(&marker, "host").expect("write the marker");
    let script = format!(
        "if [ -e {m} ]; then echo visible; else echo hidden; fi > /tmp/out; \
         echo changed > /bin/corral-written; echo root >> /etc/passwd",
        m = marker.display()
    );
    assert_eq!(
        task_output(home, "marker", "preloaded:busybox", &script).trim(),
        "hidden"
    );
    let stack = state_dir.join("stacks").join("busybox");
    assert!(
        stack.join("bin").is_dir(),
        "the busybox stack is at {}",
        stack.display()
    );
    assert!(
        !stack.join("bin/corral-written").exists(),
        "a write reached the stack"
    );
    let host_file = format!("/tmp/corral-written-{}", std::process::id());
    let script = format!("echo changed > {host_file}; echo ok > /tmp/out");
    assert_eq!(
        task_output(home, "host-write", "preloaded:host", &script).trim(),
        "ok"
    );
    assert!(
        !Path::new(&host_file).exists(),
        "a write on preloaded:host reached the host"
    );

    // Beyond its memory limit: killed, and the crash says why.
    ok(
        home,
        &[
            "create",
            "hog",
            "--memory",
            "32",
            "--rootfs",
            "preloaded:busybox",
            "--",
            "sh",
            "-c",
            "head -c 256m /dev/zero | tail",
        ],
    );
    let hog = poll_for("the memory hog to crash", RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", "hog", "--json"]);
        status.instances.into_iter().find(|i| i.crash_count >= 1)
    });
    assert!(
        hog.crash_reason
            .as_deref()
            .is_some_and(|r| r.contains("out of memory")),
        "{hog:?}"
    );
    ok(home, &["rm", "hog"]);

    // A fork bomb stops at the pids limit; the cell still runs work.
    let before = std::fs::read_dir("/proc").expect("/proc").count();
    ok(
        home,
        &[
            "create",
            "bomb",
            "--max-pids",
            "64",
            "--rootfs",
            "preloaded:busybox",
            "--",
            "sh",
            "-c",
            "b() { b | b & }; b; sleep 1000",
        ],
    );
    poll_for("the fork bomb to start", RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", "bomb", "--json"]);
        status
            .instances
            .iter()
            .any(|i| i.state == InstanceState::Running || i.crash_count > 0)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let during = std::fs::read_dir("/proc").expect("/proc").count();
    assert!(
        during < before + 200,
        "processes went from {before} to {during}"
    );
    assert_eq!(
        task_output(
            home,
            "after-bomb",
            "preloaded:busybox",
            "echo alive > /tmp/out"
        )
        .trim(),
        "alive"
    );
    ok(home, &["rm", "bomb"]);

    // A killed process is a crash; the crash policy restarts it at once.
    let marker = format!("marker-linux-{}", std::process::id());
    ok(
        home,
        &[
            "create",
            "sleeper",
            "--rootfs",
            "preloaded:busybox",
            "--",
            "sh",
            "-c",
            "sleep 1000; true",
            &marker,
        ],
    );
    running(home, "sleeper", 1);
    poll("the sleeper's process", || {
        (!pids_with(&marker).is_empty()).then_some(())
    });
    assert!(kill_all(&marker) > 0);
    let restarted = poll_for("the killed instance to be restarted", RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", "sleeper", "--json"]);
        let i = status.instances.first()?;
        (i.crash_count >= 1 && i.state == InstanceState::Running).then(|| i.clone())
    });
    assert!(restarted.crash_reason.is_some(), "{restarted:?}");

    // Nothing left once the LRPs are gone.
    ok(home, &["rm", "web"]);
    ok(home, &["rm", "sleeper"]);
    poll_for("the containers to be destroyed", RUN_DEADLINE, || {
        (pids_with(&marker).is_empty() && traces(&state_dir).is_empty()).then_some(())
    });
}

/// A `corral cell` process of its own, with its own state directory and network.
/// Its runtime helper outlives it by design; dropping this stops the helper, which
/// destroys the containers, so a failing test leaks nothing.
struct CellProcess {
    agent: Daemon,
    state: String,
}

impl std::ops::Deref for CellProcess {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.agent
    }
}

impl std::ops::DerefMut for CellProcess {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.agent
    }
}

impl Drop for CellProcess {
    fn drop(&mut self) {
        let helper = format!("cell-helper --state-dir {} ", self.state);
        for pid in pids_with(&helper) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

fn start_cell(home: &Path, id: &str, ports: &str) -> CellProcess {
    let state = home.join("cells").join(id);
    let state = state.display().to_string();
    let agent = Daemon::start(
        home,
        &[
            "cell",
            "--id",
            id,
            "--backend",
            "linux",
            "--state-dir",
            &state,
            "--host-ports",
            ports,
            "--grace-ms",
            "2000",
        ],
    );
    CellProcess { agent, state }
}

fn wait_for_cells(home: &Path, ids: &[&str]) {
    poll_for(&format!("cells {ids:?} to join"), RUN_DEADLINE, || {
        let cells: api::List<model::Cell> = json(home, &["cells", "--json"]);
        ids.iter()
            .all(|id| cells.items.iter().any(|c| c.id.as_str() == *id))
            .then_some(())
    });
}

/// Two cells and an LRP of two instances: draining one moves its instance to the
/// other, and at no moment does the LRP have zero RUNNING instances.
#[test]
fn linux_drain_keeps_an_instance_running() {
    if !linux_available() {
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let mut dev = Dev::start(home);
    let mut a = start_cell(home, "drain-a", "41100-41199");
    let mut b = start_cell(home, "drain-b", "41200-41299");
    wait_for_cells(home, &["drain-a", "drain-b"]);
    ok(
        home,
        &[
            "create",
            "web",
            "-i",
            "2",
            "-p",
            "8080",
            "--rootfs",
            "preloaded:busybox",
            "--check",
            "tcp:8080",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
        ],
    );
    let status = running(home, "web", 2);
    let cells: std::collections::BTreeSet<String> = status
        .instances
        .iter()
        .filter_map(|i| i.key.as_ref().map(|k| k.cell_id.to_string()))
        .collect();
    assert_eq!(
        cells.len(),
        2,
        "the instances spread over both cells: {status:?}"
    );

    // Watch the LRP through the drain from another thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let home = home.to_path_buf();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut lowest = usize::MAX;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status: LrpStatus = json(&home, &["status", "web", "--json"]);
                let up = status
                    .instances
                    .iter()
                    .filter(|i| i.state == InstanceState::Running)
                    .count();
                lowest = lowest.min(up);
            }
            lowest
        })
    };
    ok(home, &["cell", "drain", "drain-a"]);
    let status = running(home, "web", 2);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let lowest = watcher.join().expect("the watcher");
    assert!(
        lowest >= 1,
        "the LRP had {lowest} RUNNING instances during the drain"
    );
    for i in &status.instances {
        let cell = i.key.as_ref().map(|k| k.cell_id.to_string());
        assert_eq!(cell.as_deref(), Some("drain-b"), "{i:?}");
    }
    // The drained agent exits by itself.
    poll("the drained cell's agent to exit", || a.try_exit());
    ok(home, &["rm", "web"]);
    b.stop();
    dev.stop();
    assert!(traces(&home.join("cells").join("drain-a")).is_empty());
    assert!(traces(&home.join("cells").join("drain-b")).is_empty());
}

/// SIGKILL the cell agent and start it again: its containers are re-adopted, none
/// duplicated, and none leaked once the LRP is removed.
#[test]
fn linux_agent_restart_readopts_containers() {
    if !linux_available() {
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let mut dev = Dev::start(home);
    let mut cell = start_cell(home, "phoenix", "41300-41399");
    wait_for_cells(home, &["phoenix"]);
    let marker = format!("marker-phoenix-{}", std::process::id());
    ok(
        home,
        &[
            "create",
            "web",
            "-i",
            "2",
            "-p",
            "8080",
            "--rootfs",
            "preloaded:busybox",
            "--check",
            "tcp:8080",
            "--",
            // The realm is a marker that tells these httpds from other tests' ones.
            "httpd",
            "-f",
            "-p",
            "8080",
            "-r",
            &marker,
        ],
    );
    let before = running(home, "web", 2);
    let ids = |s: &LrpStatus| -> Vec<String> {
        let mut ids: Vec<String> = s
            .instances
            .iter()
            .filter_map(|i| i.key.as_ref().map(|k| k.instance_id.clone()))
            .collect();
        ids.sort();
        ids
    };
    // httpd forks a child per connection (health checks connect), and a child may be
    // reparented to the container's init: count the containers holding one, by cgroup.
    let httpds = || {
        let containers: std::collections::BTreeSet<String> = pids_with(&marker)
            .into_iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok())
            .filter_map(|cgroups| {
                cgroups
                    .lines()
                    .find_map(|l| l.split_once("/corral/").map(|(_, path)| path.to_owned()))
            })
            .collect();
        containers.len()
    };
    let ps = Command::new("ps")
        .args(["axo", "pid,args"])
        .output()
        .expect("ps");
    assert_eq!(httpds(), 2, "{}", String::from_utf8_lossy(&ps.stdout));

    cell.kill();
    let mut cell = start_cell(home, "phoenix", "41300-41399");
    cell.wait_for_log("the restarted agent to re-adopt", "re-adopted containers");
    let after = running(home, "web", 2);
    assert_eq!(ids(&before), ids(&after), "the same containers run");
    for index in 0..2 {
        let port = host_port(&after, index, 8080);
        std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("instance {index} on port {port} after the restart: {e}"));
    }
    assert_eq!(httpds(), 2, "no container was duplicated");

    ok(home, &["rm", "web"]);
    let state = home.join("cells").join("phoenix");
    poll_for("the containers to be destroyed", RUN_DEADLINE, || {
        (httpds() == 0 && traces(&state).is_empty()).then_some(())
    });
    // A cell that leaves removes its bridge and firewall table too.
    cell.stop();
    let bridge = bridge_of(&state);
    poll("the cell's bridge and table to go", || {
        let links = Command::new("ip")
            .args(["link", "show", &bridge])
            .output()
            .expect("ip");
        let tables = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .expect("nft");
        (!links.status.success() && !String::from_utf8_lossy(&tables.stdout).contains(&bridge))
            .then_some(())
    });
    dev.stop();
}

/// Flips the last byte of a blob in the registry's storage: the registry serves it, and
/// its digest no longer matches.
fn corrupt(registry: &image_support::registry::Registry, digest: &image::Digest) {
    let stored = registry.blob_file(digest);
    let mut bytes = std::fs::read(&stored).expect("the stored blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&stored, bytes).expect("corrupt the stored blob");
}

/// Images from a registry on 127.0.0.1 (Debian's docker-registry), pushed by the test:
/// an LRP with no command runs the image's own, on its own port; a corrupted layer
/// fails the instance with the reason and leaves nothing in the cell's cache; a second
/// start of the same image downloads no blob.
#[test]
fn linux_cells_run_images_from_a_registry() {
    if !linux_available() {
        return;
    }
    if let Some(reason) = image_support::registry::skip_reason() {
        eprintln!("{reason}");
        return;
    }
    use image_support::push::{Entry, Pusher, busybox_layer};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let registry = rt.block_on(image_support::registry::Registry::start(None));
    let addr = registry.addr.clone();
    let good = busybox_layer(&[]);
    rt.block_on(
        Pusher::new(&addr, "test/busybox-httpd", None).image("1", std::slice::from_ref(&good)),
    );
    let broken = busybox_layer(&[Entry::File("www/broken", b"x\n", 0o644)]);
    rt.block_on(Pusher::new(&addr, "test/broken", None).image("1", std::slice::from_ref(&broken)));
    corrupt(&registry, &broken.digest());

    let cell = DevCell::start(&["--backend", "linux"]);
    let home = cell.home();
    let images = home.join("dev").join("cell").join("images");
    let image = format!("docker://{addr}/test/busybox-httpd:1");

    // No command and no port: the image's ENTRYPOINT, CMD and ExposedPorts.
    ok(home, &["create", "web", "--rootfs", &image]);
    let status = running(home, "web", 1);
    let port = host_port(&status, 0, 8080);
    let page = poll("the image's web server", || {
        get(&format!("http://127.0.0.1:{port}/"))
    });
    assert_eq!(page, "hello from the image\n");
    let status_text =
        String::from_utf8_lossy(&corral(home, &["status", "web"]).stdout).into_owned();
    assert!(status_text.contains("the image's command"), "{status_text}");

    // On a terminal, `create` follows the start (the pull, then the instances running).
    let on_tty = Command::new("script")
        .args(["-qec"])
        .arg(format!("{} create web3 --rootfs {image}", common::CORRAL))
        .arg("/dev/null")
        .env("CORRAL_HOME", home)
        .env_remove("CORRAL_API")
        .env_remove("CORRAL_TOKEN")
        .output()
        .expect("run script");
    let shown = String::from_utf8_lossy(&on_tty.stdout);
    assert!(on_tty.status.success(), "{on_tty:?}");
    assert!(
        shown.contains("Starting") && shown.contains("1 instance running"),
        "{shown}"
    );

    // The same image again: everything comes from the cell's cache. The registry's
    // copies of the layer and the config are corrupted first, so a download of either
    // would fail the start.
    corrupt(&registry, &good.digest());
    corrupt(
        &registry,
        &image::Digest::of(&image_support::push::config(std::slice::from_ref(&good))),
    );
    ok(home, &["create", "web2", "--rootfs", &image]);
    let status = running(home, "web2", 1);
    let port = host_port(&status, 0, 8080);
    let page = poll("the second instance's web server", || {
        get(&format!("http://127.0.0.1:{port}/"))
    });
    assert_eq!(page, "hello from the image\n");

    // A corrupted layer: the instance crashes and says why; nothing is cached.
    ok(
        home,
        &[
            "create",
            "broken",
            "--rootfs",
            &format!("docker://{addr}/test/broken:1"),
        ],
    );
    let crashed = poll_for("the corrupted image to fail", RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", "broken", "--json"]);
        status.instances.into_iter().find(|i| i.crash_count >= 1)
    });
    let reason = crashed.crash_reason.unwrap_or_default();
    assert!(
        reason.contains(&broken.digest().to_string()) && reason.contains("digest mismatch"),
        "{reason}"
    );
    // A registry that wants a login: a wrong password fails with the reason, the right
    // one runs; the password shows in no API answer, event and log.
    const PASSWORD: &str = "pw-e2e-7c1f9a";
    let private = rt.block_on(image_support::registry::Registry::start(Some(
        image_support::registry::Htpasswd {
            username: "ci",
            password: PASSWORD,
        },
    )));
    let login = Some(("ci", PASSWORD));
    rt.block_on(
        Pusher::new(&private.addr, "test/private", login).image("1", std::slice::from_ref(&good)),
    );
    let private_image = format!("docker://{}/test/private:1", private.addr);
    let with_password = |password: &str, name: &str| {
        let out = Command::new(common::CORRAL)
            .args([
                "create",
                name,
                "--rootfs",
                &private_image,
                "--registry-username",
                "ci",
            ])
            .env("CORRAL_HOME", home)
            .env("CORRAL_REGISTRY_PASSWORD", password)
            .env_remove("CORRAL_API")
            .env_remove("CORRAL_TOKEN")
            .output()
            .expect("run corral");
        assert!(out.status.success(), "{out:?}");
    };
    with_password("not-the-password", "private-bad");
    let refused = poll_for("the wrong login to fail", RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", "private-bad", "--json"]);
        status.instances.into_iter().find(|i| i.crash_count >= 1)
    });
    let reason = refused.crash_reason.unwrap_or_default();
    assert!(reason.contains("wrong credentials"), "{reason}");
    assert!(!reason.contains("not-the-password"), "{reason}");
    with_password(PASSWORD, "private");
    let status = running(home, "private", 1);
    let port = host_port(&status, 0, 8080);
    let page = poll("the private image's web server", || {
        get(&format!("http://127.0.0.1:{port}/"))
    });
    assert_eq!(page, "hello from the image\n");
    let api = cell.dev().api.clone();
    let token = std::fs::read_to_string(home.join("dev").join("token")).expect("the token");
    let mut shown = vec![
        ok(home, &["status", "private", "--json"]),
        ok(home, &["ls", "--json"]),
    ];
    for path in ["/v1/lrps/private", "/v1/lrps", "/v1/events?after=0"] {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "2", "-H"])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("{api}{path}"))
            .output()
            .expect("curl");
        shown.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert!(
        shown[0].contains("\"username\": \"ci\"") || shown[0].contains("\"username\":\"ci\""),
        "{}",
        shown[0]
    );
    assert!(shown[4].contains("lrp_created"), "{}", shown[4]);
    for text in &shown {
        assert!(
            !text.contains(PASSWORD),
            "the password in an answer: {text}"
        );
    }
    let log = cell.dev().log();
    assert!(log.contains("image ready"), "the dev log is read");
    assert!(!log.contains(PASSWORD) && !log.contains("not-the-password"));

    // The crash policy pulls again at once: once the LRP is gone, so are its pulls.
    for name in ["web", "web2", "web3", "broken", "private-bad", "private"] {
        ok(home, &["rm", name]);
    }
    poll_for(
        "the image cache's temporary files to go",
        RUN_DEADLINE,
        || {
            let partial = std::fs::read_dir(images.join("tmp")).map_or(0, |d| d.count());
            (partial == 0).then_some(())
        },
    );
    let hex = broken.digest().to_string().replace("sha256:", "");
    assert!(!images.join("blobs/sha256").join(&hex).exists());
    assert!(!images.join("layers/sha256").join(&hex).exists());
}
