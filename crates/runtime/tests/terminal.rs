//! The process backend's terminals (`exec -it` on a cell without root): a shell on a
//! new terminal sees its size and a resize, and exits with the status it is told to.

#[path = "support/terminal.rs"]
mod terminal_support;

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use runtime::process::ProcessBackend;
use runtime::{Backend, ContainerSpec, Limits, ProcessSpec, RootfsSpec, TtySize};
use terminal_support::{Terminal, has_line};

fn wait(pid: Pid) -> WaitStatus {
    let start = Instant::now();
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(status) => return status,
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{pid} did not exit"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_shell_runs_on_a_terminal_that_resizes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut backend = ProcessBackend::new(dir.path()).expect("process backend");
    let created = backend
        .create(&ContainerSpec {
            id: "tty".to_owned(),
            rootfs: RootfsSpec::Host,
            limits: Limits {
                memory_bytes: 0,
                cpu_weight: 50,
                pids: 0,
                disk_bytes: 0,
            },
            env: vec![],
            mounts: vec![],
            ports: vec![],
            hostname: String::new(),
        })
        .expect("creating a container");
    let process = ProcessSpec {
        path: "sh".to_owned(),
        args: vec![],
        dir: None,
        env: vec![("PS1".to_owned(), "$ ".to_owned())],
        user: None,
        nofile: None,
        nproc: None,
        tty: Some(TtySize {
            rows: 30,
            cols: 100,
        }),
        log: false,
    };
    let (pid, master) = backend
        .spawn_terminal(
            &created.info,
            &process,
            TtySize {
                rows: 30,
                cols: 100,
            },
        )
        .expect("starting a shell on a terminal");
    let mut tty = Terminal::new(master);
    // A controlling terminal: /dev/tty opens.
    tty.type_in("stty size; echo hi > /dev/tty\n");
    tty.read_until("the terminal's size", |out| {
        has_line(out, "30 100") && has_line(out, "hi")
    });
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
    backend.destroy(&created.info.id).expect("destroy");
}
