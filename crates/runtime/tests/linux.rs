//! The linux backend against the real kernel: busybox containers made, run, limited,
//! networked and destroyed by `LinuxBackend` directly, the way the runtime helper does.
//!
//! These tests need root, overlayfs, cgroups, `nft` (Debian package nftables) and
//! `/bin/busybox` (busybox-static); without root they are skipped. libcontainer forks
//! the caller and changes its working directory, so tests sharing a process take turns;
//! `cargo nextest run` gives each its own process, and as each test has its own bridge,
//! subnet, port range and state directory, they run at once.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};
use runtime::linux::{LinuxBackend, LinuxConfig, check_supported, prepare_busybox_stack};
use runtime::{
    Backend, ContainerInfo, ContainerSpec, Limits, ProcessSpec, RootfsSpec, Stdio, TtySize,
};

#[path = "support/terminal.rs"]
mod terminal_support;
use terminal_support::{Terminal, has_line};

const DEADLINE: Duration = Duration::from_secs(30);

/// libcontainer changes the working directory of the whole process while it works, so
/// tests that share a process (`cargo test`) take turns; nextest gives each its own.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cell for one test: a backend on its own bridge, and the busybox stack.
struct Cell {
    backend: Option<LinuxBackend>,
    stack: PathBuf,
    state_dir: PathBuf,
    bridge: String,
    _dir: tempfile::TempDir,
}

impl Cell {
    /// A cell numbered `n` (unique per test), or None when not running as root.
    fn new(n: u8) -> Option<Cell> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: the linux backend needs root");
            return None;
        }
        if let Err(missing) = check_supported() {
            panic!("this host cannot run the linux backend: {missing}");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let stack = prepare_busybox_stack(dir.path())
            .expect("building the busybox stack")
            .expect("/bin/busybox is missing: apt-get install busybox-static");
        let state_dir = dir.path().join("state");
        let bridge = format!("crltest{n}");
        let base = 42000 + u16::from(n) * 20;
        let backend = LinuxBackend::new(LinuxConfig {
            state_dir: state_dir.clone(),
            bridge: bridge.clone(),
            subnet: Ipv4Addr::new(10, 201, n, 0),
            host_ports: base..=base + 19,
        })
        .expect("starting the linux backend");
        Some(Cell {
            backend: Some(backend),
            stack,
            state_dir,
            bridge,
            _dir: dir,
        })
    }

    fn backend(&mut self) -> &mut LinuxBackend {
        self.backend.as_mut().expect("the backend is running")
    }

    fn spec(&self, id: &str) -> ContainerSpec {
        ContainerSpec {
            id: id.to_owned(),
            rootfs: RootfsSpec::Layers {
                lower: vec![self.stack.clone()],
            },
            limits: Limits {
                memory_bytes: 256 << 20,
                cpu_weight: 50,
                pids: 256,
                disk_bytes: 0,
            },
            env: vec![("GREETING".to_owned(), "hello".to_owned())],
            mounts: vec![],
            ports: vec![],
            hostname: String::new(),
        }
    }

    fn create(&mut self, spec: &ContainerSpec) -> (ContainerInfo, Pid) {
        let created = self.backend().create(spec).expect("creating a container");
        let init = created.init.expect("a linux container has an init");
        (created.info, init)
    }

    /// Runs `sh -c script` in the container to its end.
    fn sh(&mut self, info: &ContainerInfo, script: &str) -> Output {
        self.run(info, process("/bin/sh", &["-c", script]))
    }

    fn run(&mut self, info: &ContainerInfo, spec: ProcessSpec) -> Output {
        let (pid, out, err) = self.start(info, &spec);
        let (stdout, stderr) = read_all(out, err);
        let status = wait(pid);
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Tries to start a process that cannot start; returns the error.
    fn spawn_error(&mut self, info: &ContainerInfo, spec: &ProcessSpec) -> String {
        let (stdin, _w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let (_r1, stdout) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let (_r2, stderr) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let stdio = Stdio {
            stdin,
            stdout,
            stderr,
        };
        match self.backend().spawn(info, spec, stdio) {
            Ok(pid) => panic!("{} started as {pid}", spec.path),
            Err(e) => format!("{e:#}"),
        }
    }

    /// Starts a process; returns it and the read ends of its stdout and stderr.
    fn start(&mut self, info: &ContainerInfo, spec: &ProcessSpec) -> (Pid, OwnedFd, OwnedFd) {
        let (stdin_r, stdin_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        drop(stdin_w);
        let pid = self
            .backend()
            .spawn(
                info,
                spec,
                Stdio {
                    stdin: stdin_r,
                    stdout: out_w,
                    stderr: err_w,
                },
            )
            .unwrap_or_else(|e| panic!("starting {}: {e:#}", spec.path));
        (pid, out_r, err_r)
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        if let Some(mut backend) = self.backend.take()
            && let Err(e) = backend.teardown()
        {
            eprintln!("tearing down the test cell: {e:#}");
        }
        reap_all_now();
    }
}

#[derive(Debug)]
struct Output {
    status: WaitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn code(&self) -> Option<i32> {
        match self.status {
            WaitStatus::Exited(_, code) => Some(code),
            _ => None,
        }
    }

    fn expect_ok(self) -> Output {
        assert_eq!(
            self.code(),
            Some(0),
            "{:?}; stderr: {}",
            self.status,
            self.stderr
        );
        self
    }
}

fn process(path: &str, args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        path: path.to_owned(),
        args: args.iter().map(|s| s.to_string()).collect(),
        dir: None,
        env: vec![],
        user: None,
        nofile: None,
        nproc: None,
        tty: None,
        log: false,
    }
}

/// Reads both pipes to their end (or the deadline), without threads: libcontainer forks
/// this process, which must stay single-threaded.
fn read_all(out: OwnedFd, err: OwnedFd) -> (String, String) {
    let mut files = [
        Some(std::fs::File::from(out)),
        Some(std::fs::File::from(err)),
    ];
    let mut bufs = [Vec::new(), Vec::new()];
    let start = Instant::now();
    while files.iter().any(Option::is_some) {
        assert!(start.elapsed() < DEADLINE, "output did not end in time");
        let open: Vec<usize> = (0..2).filter(|&i| files[i].is_some()).collect();
        let mut fds: Vec<PollFd> = open
            .iter()
            .map(|&i| PollFd::new(files[i].as_ref().unwrap().as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (k, &i) in open.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let mut chunk = [0u8; 4096];
            match files[i].as_mut().unwrap().read(&mut chunk) {
                Ok(0) | Err(_) => files[i] = None,
                Ok(n) => bufs[i].extend_from_slice(&chunk[..n]),
            }
        }
    }
    let [out, err] = bufs;
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Waits for child `pid` to end, with a deadline.
fn wait(pid: Pid) -> WaitStatus {
    let start = Instant::now();
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return status,
            Err(Errno::EINTR) => {}
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
        assert!(start.elapsed() < DEADLINE, "{pid} did not exit in time");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls `check` until it returns Some, or panics at the deadline.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The directories a container's cgroup may have, in every hierarchy of this host.
fn cgroup_dirs(bridge: &str, id: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup").expect("/sys/fs/cgroup") {
        let entry = entry.expect("cgroup entry");
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path().join("corral").join(bridge).join(id));
        }
    }
    dirs.push(Path::new("/sys/fs/cgroup/corral").join(bridge).join(id));
    dirs
}

/// The first cgroup file called `name` of the container, in whichever hierarchy has it.
fn cgroup_file(bridge: &str, id: &str, name: &str) -> Option<String> {
    cgroup_dirs(bridge, id)
        .into_iter()
        .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
}

/// The links in directory `dir`, such as a bridge's ports in `/sys/class/net/<bridge>/brif`.
fn links(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("a directory of links")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn http_get(addr: (Ipv4Addr, u16)) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn echo_runs_with_the_containers_environment() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(1) else { return };
    let mut spec = cell.spec("echo");
    spec.ports = vec![8080];
    spec.hostname = "echo-host".to_owned();
    let (info, _init) = cell.create(&spec);
    assert!(info.root.is_dir(), "{info:?}");
    assert_eq!(info.ports.len(), 1);

    let out = cell
        .run(&info, process("echo", &["hello", "world"]))
        .expect_ok();
    assert_eq!(out.stdout, "hello world\n");

    let out = cell
        .sh(
            &info,
            "echo $GREETING $PORT $MEMORY_LIMIT $CF_INSTANCE_IP $(hostname) $HOME $PATH",
        )
        .expect_ok();
    assert_eq!(
        out.stdout.trim(),
        format!(
            "hello 8080 256m {} echo-host /root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            info.address
        )
    );
    assert!(
        info.env.contains(&("PORT".to_owned(), "8080".to_owned())),
        "{:?}",
        info.env
    );

    let mut as_nobody = process("/bin/sh", &["-c", "id -u; id -g; ulimit -n; pwd"]);
    as_nobody.user = Some("nobody".to_owned());
    as_nobody.nofile = Some(321);
    as_nobody.dir = Some("/tmp".to_owned());
    as_nobody.env = vec![("GREETING".to_owned(), "overridden".to_owned())];
    let out = cell.run(&info, as_nobody).expect_ok();
    assert_eq!(out.stdout, "65534\n65534\n321\n/tmp\n");

    // Root in the container has Docker's capabilities, not all of them, no new
    // privileges, and none of the helper's blocked or ignored signals.
    let out = cell
        .run(
            &info,
            process(
                "grep",
                &[
                    "-E",
                    "^(CapEff|NoNewPrivs|SigBlk|SigIgn)",
                    "/proc/self/status",
                ],
            ),
        )
        .expect_ok();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        [
            "SigBlk:",
            "0000000000000000",
            "SigIgn:",
            "0000000000000000",
            "CapEff:",
            "00000000a80425fb",
            "NoNewPrivs:",
            "1"
        ],
        "{out:?}"
    );

    let mut unknown = process("/bin/true", &[]);
    unknown.user = Some("nosuchuser".to_owned());
    let err = cell.spawn_error(&info, &unknown);
    assert!(err.contains("nosuchuser"), "{err}");
    let err = cell.spawn_error(&info, &process("/no/such/program", &[]));
    assert!(err.contains("/no/such/program"), "{err}");
    // The container still works after failed starts.
    cell.run(&info, process("true", &[])).expect_ok();
    cell.backend().destroy(&info.id).expect("destroy");
}

/// A shell on a terminal (`exec -it`): it sees the terminal's size and a resize, runs
/// what is typed, and its exit status is the one it exits with.
#[test]
fn a_shell_runs_on_a_terminal_that_resizes() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(14) else {
        return;
    };
    let spec = cell.spec("tty");
    let (info, _init) = cell.create(&spec);
    let size = TtySize {
        rows: 30,
        cols: 100,
    };
    let (pid, master) = cell
        .backend()
        .spawn_terminal(&info, &process("/bin/sh", &[]), size)
        .expect("starting a shell on a terminal");
    let mut tty = Terminal::new(master);
    tty.type_in("tty; stty size; echo hi\n");
    tty.read_until("the terminal's size", |out| {
        has_line(out, "30 100") && has_line(out, "hi")
    });
    assert!(has_line(&tty.output, "/dev/pts/0"), "{:?}", tty.output);

    runtime::terminal::set_size(
        tty.master(),
        TtySize {
            rows: 40,
            cols: 120,
        },
    )
    .expect("resizing");
    tty.type_in("stty size; exit 3\n");
    let out = tty.read_to_end().to_owned();
    assert!(has_line(&out, "40 120"), "{out:?}");
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 3), "{out:?}");

    // The container still runs processes without terminals.
    cell.run(&info, process("true", &[])).expect_ok();
    cell.backend().destroy(&info.id).expect("destroy");
}

#[test]
fn ps_sees_only_the_containers_processes() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(2) else { return };
    let spec = cell.spec("ps");
    let (info, _init) = cell.create(&spec);
    // The container's own cgroups are mounted, read-only, with its limits ...
    let out = cell
        .sh(
            &info,
            "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null; \
             mkdir /sys/fs/cgroup/pids/x 2>/dev/null || mkdir /sys/fs/cgroup/x 2>/dev/null \
             || echo read-only",
        )
        .expect_ok();
    assert_eq!(out.stdout, "256\nread-only\n", "{out:?}");
    let out = cell
        .sh(
            &info,
            "echo -1 > /sys/fs/cgroup/memory/memory.limit_in_bytes || echo refused",
        )
        .expect_ok();
    assert!(out.stdout.ends_with("refused\n"), "{out:?}");
    // ... and only its own: the cgroup namespace roots them at /.
    let out = cell
        .run(&info, process("cat", &["/proc/self/cgroup"]))
        .expect_ok();
    assert!(!out.stdout.contains("corral"), "{}", out.stdout);

    let out = cell
        .run(&info, process("ps", &["-o", "pid,comm"]))
        .expect_ok();
    let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    assert!(
        rows[0].split_whitespace().eq(["1", "init"]),
        "{}",
        out.stdout
    );
    assert!(rows[1].ends_with("ps"), "{}", out.stdout);
    cell.backend().destroy(&info.id).expect("destroy");
}

#[test]
fn the_host_is_invisible_and_writes_stay_inside() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(3) else { return };
    let marker = cell.state_dir.parent().unwrap().join("host-marker");
    std::fs::write(&marker, "secret").unwrap();
    let shared = cell.state_dir.parent().unwrap().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("config"), "from the cell").unwrap();
    let mut spec = cell.spec("fs");
    spec.mounts = vec![runtime::Mount {
        source: shared.clone(),
        destination: "/data".to_owned(),
        read_only: true,
    }];
    let (info, _init) = cell.create(&spec);
    let out = cell
        .sh(
            &info,
            "cat /data/config; echo x > /data/new || echo refused",
        )
        .expect_ok();
    assert_eq!(out.stdout, "from the cellrefused\n", "{out:?}");
    assert!(!shared.join("new").exists());

    let out = cell.sh(
        &info,
        &format!(
            "test -e {m} && echo visible || echo invisible",
            m = marker.display()
        ),
    );
    assert_eq!(out.expect_ok().stdout, "invisible\n");

    let before = dir_listing(&cell.stack);
    cell.sh(
        &info,
        "echo inside > /etc/written && rm /bin/ls && echo x > /tmp/x",
    )
    .expect_ok();
    assert_eq!(dir_listing(&cell.stack), before, "the stack changed");
    assert!(!cell.stack.join("etc/written").exists());
    assert!(cell.stack.join("bin/ls").symlink_metadata().is_ok());
    // The cell sees the container's files at its root, and the container sees the
    // cell's writes there (downloads).
    assert_eq!(
        std::fs::read_to_string(info.root.join("etc/written")).unwrap(),
        "inside\n"
    );
    std::fs::write(info.root.join("tmp/download"), "payload").unwrap();
    assert_eq!(
        cell.sh(&info, "cat /tmp/download").expect_ok().stdout,
        "payload"
    );

    // The host rootfs: the host's files read-only below, private writes on top, the
    // host's /tmp and the cell's state hidden.
    let host_tmp_file = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let host_marker = format!("/etc/corral-test-{}", std::process::id());
    let mut host = cell.spec("host");
    host.rootfs = RootfsSpec::Host;
    let (host_info, _) = cell.create(&host);
    let out = cell
        .sh(
            &host_info,
            &format!(
                "test -e /etc/os-release && echo written > {host_marker} && cat {host_marker} \
                 && ls -A {state} | wc -l && test ! -e {marker} && test ! -e /tmp/{tmp} \
                 && test ! -e /etc/shadow && ls -A /root | wc -l",
                state = cell.state_dir.display(),
                marker = marker.display(),
                tmp = host_tmp_file.path().file_name().unwrap().to_string_lossy(),
            ),
        )
        .expect_ok();
    assert_eq!(out.stdout, "written\n0\n0\n", "{out:?}");
    assert!(
        !Path::new(&host_marker).exists(),
        "a write reached the host"
    );
    cell.backend().destroy(&host_info.id).expect("destroy");
    cell.backend().destroy(&info.id).expect("destroy");
}

fn dir_listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((entry.path(), meta.len()));
        }
    }
    out.sort();
    out
}

#[test]
fn memory_limit_kills_and_is_counted() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(4) else { return };
    let mut spec = cell.spec("oom");
    spec.limits.memory_bytes = 32 << 20;
    let (info, _init) = cell.create(&spec);
    assert_eq!(cell.backend().oom_kills(&info.id), 0);
    // tail buffers its whole input looking for the last lines: 200 MB without one.
    let out = cell.sh(&info, "head -c 209715200 /dev/zero | tail > /dev/null");
    // The OOM killer takes tail (the shell exits 137) or, now and then, the shell too.
    assert!(
        matches!(
            out.status,
            WaitStatus::Exited(_, 137) | WaitStatus::Signaled(..)
        ),
        "{out:?}"
    );
    assert!(cell.backend().oom_kills(&info.id) > 0);
    let stats = cell.backend().stats(&info.id).expect("stats");
    assert!(stats.memory_bytes <= 32 << 20, "{stats:?}");
    cell.backend().destroy(&info.id).expect("destroy");
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(5) else { return };
    let mut spec = cell.spec("bomb");
    spec.limits.pids = 16;
    let (info, _init) = cell.create(&spec);
    let (pid, out, err) = cell.start(
        &info,
        &process(
            "/bin/sh",
            &[
                "-c",
                "i=0; while [ $i -lt 100 ]; do sleep 600 & i=$((i+1)); done",
            ],
        ),
    );
    // The shell gives up when a fork fails. The sleeps hold its output pipes open until
    // the container dies, so wait for the shell rather than its output.
    let status = wait(pid);
    assert_ne!(status, WaitStatus::Exited(pid, 0));
    // The limit's 16 are init, the shell and 14 sleeps; the shell has exited since.
    let stats = cell.backend().stats(&info.id).expect("stats");
    assert_eq!(stats.pids, 15, "{stats:?}");
    let events = cgroup_file(&cell.bridge, &info.id, "pids.events").unwrap_or_default();
    let refused: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused > 0, "pids.events: {events:?}");
    cell.backend().destroy(&info.id).expect("destroy");
    let (_, stderr) = read_all(out, err);
    assert!(stderr.contains("fork"), "{stderr}");
}

#[test]
fn a_published_port_reaches_the_container() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(6) else { return };
    let mut spec = cell.spec("web");
    spec.ports = vec![8080];
    let (web, _init) = cell.create(&spec);
    std::fs::create_dir_all(web.root.join("www")).unwrap();
    std::fs::write(web.root.join("www/index.html"), "hello from web\n").unwrap();
    let (httpd, out, err) =
        cell.start(&web, &process("httpd", &["-f", "-p", "8080", "-h", "/www"]));
    let host_port = web.ports[0].host_port;

    let body = eventually("httpd behind 127.0.0.1", || {
        http_get((Ipv4Addr::LOCALHOST, host_port))
    });
    assert!(body.contains("hello from web"), "{body}");
    // The bridge address is one of the host's own, like its external ones.
    let gateway = Ipv4Addr::new(10, 201, 6, 1);
    let body = http_get((gateway, host_port)).expect("GET via the bridge address");
    assert!(body.contains("hello from web"), "{body}");

    // Another container reaches it directly and through the published port.
    let client_spec = cell.spec("client");
    let (client, _) = cell.create(&client_spec);
    let direct = cell
        .sh(
            &client,
            &format!("wget -q -O - http://{}:8080/", web.address),
        )
        .expect_ok();
    assert_eq!(direct.stdout, "hello from web\n");
    let published = cell
        .sh(
            &client,
            &format!("wget -q -O - http://{gateway}:{host_port}/"),
        )
        .expect_ok();
    assert_eq!(published.stdout, "hello from web\n");

    cell.backend().destroy(&client.id).expect("destroy");
    cell.backend().destroy(&web.id).expect("destroy");
    assert!(matches!(wait(httpd), WaitStatus::Signaled(..)));
    drop(read_all(out, err));
    assert!(http_get((Ipv4Addr::LOCALHOST, host_port)).is_none());
}

#[test]
fn destroy_leaves_nothing_behind() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(7) else { return };
    let ports = Path::new("/sys/class/net").join(&cell.bridge).join("brif");
    let mut spec = cell.spec("gone");
    spec.ports = vec![80];
    let (info, init) = cell.create(&spec);
    let netns = std::fs::read_link(format!("/proc/{init}/ns/net")).expect("init's netns");
    assert_eq!(links(&ports).len(), 1, "no veth was made");
    assert!(
        cgroup_dirs(&cell.bridge, &info.id)
            .iter()
            .any(|d| d.exists())
    );
    let (sleeper, out, err) = cell.start(&info, &process("sleep", &["1000"]));

    cell.backend().destroy(&info.id).expect("destroy");

    assert!(matches!(wait(sleeper), WaitStatus::Signaled(..)));
    assert!(matches!(wait(init), WaitStatus::Signaled(..)));
    drop(read_all(out, err));
    for dir in cgroup_dirs(&cell.bridge, &info.id) {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let state = cell.state_dir.to_string_lossy().into_owned();
    assert!(!mountinfo.contains(&state), "a mount is left:\n{mountinfo}");
    assert!(links(&ports).is_empty(), "a link is left");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(ns) = std::fs::read_link(entry.path().join("ns/net")) {
            assert_ne!(
                ns,
                netns,
                "process {:?} is left in the netns",
                entry.file_name()
            );
        }
    }
    let map = std::process::Command::new("nft")
        .args([
            "list",
            "map",
            "ip",
            &format!("corral_{}", cell.bridge),
            "ports",
        ])
        .output()
        .expect("nft");
    assert!(
        !String::from_utf8_lossy(&map.stdout).contains("elements"),
        "{}",
        String::from_utf8_lossy(&map.stdout)
    );
    assert!(!cell.state_dir.join("containers").join(&info.id).exists());
    // Idempotent.
    cell.backend().destroy(&info.id).expect("second destroy");
    cell.backend()
        .destroy(&"never-made".to_owned())
        .expect("destroying nothing");
}

#[test]
fn a_later_helper_finds_and_removes_leftovers() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(8) else { return };
    let spec = cell.spec("left");
    let (info, init) = cell.create(&spec);
    let config = cell.backend().config().clone();
    // The helper dies: its backend is gone without destroying anything.
    drop(cell.backend.take());

    let mut later = LinuxBackend::new(config.clone()).expect("a new helper's backend");
    let leftovers = later.leftovers(&config.state_dir);
    assert_eq!(leftovers, vec![info.id.clone()]);
    // The address is still taken until the leftover is destroyed.
    cell.backend = Some(later);
    let other_spec = cell.spec("other");
    let (other, _) = cell.create(&other_spec);
    assert_ne!(other.address, info.address);
    for id in leftovers {
        cell.backend().destroy(&id).expect("destroying a leftover");
    }
    assert!(matches!(wait(init), WaitStatus::Signaled(..)));
    for dir in cgroup_dirs(&cell.bridge, &info.id) {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    assert!(cell.backend().leftovers(&config.state_dir).is_empty());
}

#[test]
fn layers_stack_bottom_first_and_their_devices_are_inert() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(13) else {
        return;
    };
    let top = cell.state_dir.parent().unwrap().join("top-layer");
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("etc/motd"), "from the top layer\n").unwrap();
    // A device node shipped in an image layer must not give access to the device.
    nix::sys::stat::mknod(
        &top.join("null-device"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let mut spec = cell.spec("layers");
    spec.rootfs = RootfsSpec::Layers {
        lower: vec![cell.stack.clone(), top.clone()],
    };
    let (info, _) = cell.create(&spec);
    let out = cell
        .sh(
            &info,
            "cat /etc/motd; ls /bin/sh; cat /null-device || echo denied",
        )
        .expect_ok();
    assert_eq!(
        out.stdout, "from the top layer\n/bin/sh\ndenied\n",
        "{out:?}"
    );
    cell.backend().destroy(&info.id).expect("destroy");
}

#[test]
fn two_cells_run_side_by_side() {
    let _serial = serial();
    let Some(mut first) = Cell::new(11) else {
        return;
    };
    let Some(mut second) = Cell::new(12) else {
        return;
    };
    let mut infos = Vec::new();
    for cell in [&mut first, &mut second] {
        let mut spec = cell.spec("web");
        spec.ports = vec![8080];
        let (info, _) = cell.create(&spec);
        std::fs::create_dir_all(info.root.join("www")).unwrap();
        std::fs::write(info.root.join("www/index.html"), &cell.bridge).unwrap();
        let (pid, out, err) = cell.start(
            &info,
            &process("httpd", &["-f", "-p", "8080", "-h", "/www"]),
        );
        infos.push((info, pid, out, err));
    }
    for (info, ..) in &infos {
        let port = info.ports[0].host_port;
        let body = eventually("httpd", || http_get((Ipv4Addr::LOCALHOST, port)));
        let expected = if info.address.starts_with("10.201.11.") {
            "crltest11"
        } else {
            "crltest12"
        };
        assert!(body.ends_with(expected), "{body}");
    }
    // Taking one cell down leaves the other working.
    let (second_info, ..) = infos.pop().unwrap();
    drop(second);
    let (first_info, ..) = &infos[0];
    let body = http_get((Ipv4Addr::LOCALHOST, first_info.ports[0].host_port)).expect("GET");
    assert!(body.ends_with("crltest11"), "{body}");
    assert!(http_get((Ipv4Addr::LOCALHOST, second_info.ports[0].host_port)).is_none());
    first.backend().destroy(&first_info.id).expect("destroy");
}

#[test]
fn a_failed_create_leaves_nothing_and_names_the_cause() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(9) else { return };
    let mut spec = cell.spec("broken");
    spec.rootfs = RootfsSpec::Layers {
        lower: vec![PathBuf::from("/no/such/layer")],
    };
    spec.ports = vec![8080];
    let err = format!("{:#}", cell.backend().create(&spec).unwrap_err());
    assert!(err.contains("creating container broken"), "{err}");
    assert!(err.contains("/no/such/layer"), "{err}");
    assert!(!cell.state_dir.join("containers/broken").exists());
    for dir in cgroup_dirs(&cell.bridge, "broken") {
        assert!(!dir.exists(), "{} is left", dir.display());
    }

    // The address and port it had are free again, and a good create works.
    let mut good = cell.spec("good");
    good.ports = vec![8080];
    let (info, _) = cell.create(&good);
    assert_eq!(info.address, "10.201.9.3");
    let err = format!("{:#}", cell.backend().create(&good).unwrap_err());
    assert!(err.contains("already exists"), "{err}");
    let mut bad_id = cell.spec("Bad_Id");
    bad_id.id = "Bad_Id".to_owned();
    assert!(cell.backend().create(&bad_id).is_err());
}

/// Start latency, printed: `cargo nextest run -p runtime --test linux --run-ignored
/// only --no-capture start_latency`.
#[test]
#[ignore = "a measurement, not a check"]
fn start_latency() {
    let _serial = serial();
    let Some(mut cell) = Cell::new(10) else {
        return;
    };
    let _guard = tracing::subscriber::set_default(timings::Recorder);
    let runs = 50;
    let mut create = Vec::new();
    let mut exec = Vec::new();
    let mut destroy = Vec::new();
    for i in 0..runs {
        let mut spec = cell.spec(&format!("lat-{i}"));
        spec.ports = vec![8080];
        let t0 = Instant::now();
        let (info, _) = cell.create(&spec);
        let t1 = Instant::now();
        cell.run(&info, process("/bin/true", &[])).expect_ok();
        let t2 = Instant::now();
        cell.backend().destroy(&info.id).expect("destroy");
        let t3 = Instant::now();
        reap_all_now();
        create.push(t1 - t0);
        exec.push(t2 - t1);
        destroy.push(t3 - t2);
    }
    // Each phase is logged once per create and once per destroy, in order.
    let phases = timings::take();
    println!("over {runs} runs, p50:");
    println!("  create (whole)               {:?}", p50(&mut create));
    for (name, mut values) in phases.iter().take(4).cloned() {
        println!("    {name:<28} {:?}", p50(&mut values));
    }
    println!("  exec /bin/true to its exit   {:?}", p50(&mut exec));
    println!("  destroy (whole)              {:?}", p50(&mut destroy));
    for (name, mut values) in phases.iter().skip(4).cloned() {
        println!("    {name:<28} {:?}", p50(&mut values));
    }
}

/// Reaps every child that has already ended.
fn reap_all_now() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

fn p50(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Collects the phase timings the backend logs at debug level.
mod timings {
    use std::cell::RefCell;
    use std::time::Duration;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    thread_local! {
        static PHASES: RefCell<Vec<(String, Vec<Duration>)>> = const { RefCell::new(Vec::new()) };
    }

    pub fn take() -> Vec<(String, Vec<Duration>)> {
        PHASES.with(|p| std::mem::take(&mut *p.borrow_mut()))
    }

    pub struct Recorder;

    struct Fields;

    impl Visit for Fields {
        fn record_u64(&mut self, field: &Field, value: u64) {
            if let Some(name) = field.name().strip_suffix("_us") {
                PHASES.with(|p| {
                    let mut p = p.borrow_mut();
                    let d = Duration::from_micros(value);
                    match p.iter_mut().find(|(n, _)| n == name) {
                        Some((_, v)) => v.push(d),
                        None => p.push((name.to_owned(), vec![d])),
                    }
                });
            }
        }

        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    impl Subscriber for Recorder {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.target().starts_with("runtime") || *metadata.level() <= tracing::Level::WARN
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let target = event.metadata().target();
            if *event.metadata().level() <= tracing::Level::WARN
                && (target.starts_with("runtime") || target.starts_with("libcontainer"))
            {
                eprintln!("{}: {event:?}", event.metadata().level());
            }
            event.record(&mut Fields);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}
