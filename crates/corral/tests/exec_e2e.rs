//! `corral exec` end to end: `corral dev` with a linux cell, an LRP on the busybox
//! stack, and commands run in its container through the CLI, the server and the cell:
//! output and exit codes, stdout and stderr apart, input, an interactive shell on a
//! terminal driven through a pty, and clear refusals.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use api::LrpStatus;
use model::InstanceState;

use common::{CORRAL, DevCell, command, corral, fails, json, linux_available, ok, poll_for};

/// Long enough for a cold start of containers on a busy 2-core machine.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `corral` with `stdin` as its input.
fn corral_with_input(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(home, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run corral");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("write corral's stdin");
    child.wait_with_output().expect("wait for corral")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Drives `corral exec -it web/0 sh` through a pty (python3's pty module) sized 33x101:
/// types `script`, reads the terminal until it closes; returns what it showed and the
/// exit code.
fn interactive(home: &Path, script: &str) -> (String, i32) {
    const DRIVER: &str = r#"
import fcntl, os, pty, select, struct, sys, termios, time
corral, script = sys.argv[1], sys.argv[2].encode()
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    os.execv(corral, [corral, "exec", "-it", "web/0", "sh"])
os.write(fd, script)
out = b""
deadline = time.time() + 60
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 1)
    if not ready:
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.stdout.flush()
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .args(["-c", DRIVER, CORRAL, script])
        .env("CORRAL_HOME", home)
        .env_remove("CORRAL_API")
        .env_remove("CORRAL_TOKEN")
        .env_remove("CORRAL_CONFIG")
        .output()
        .expect("run python3's pty driver");
    let code = out.status.code().expect("the driver exits");
    (format!("{}{}", text(&out.stdout), text(&out.stderr)), code)
}

fn wait_running(home: &Path) {
    poll_for("web/0 to run", RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", "web", "--json"]);
        status
            .instances
            .iter()
            .any(|i| i.index == 0 && i.state == InstanceState::Running)
            .then_some(())
    });
}

/// Whether `output` has `line` as a line of its own, or after a shell prompt: the
/// shell may print its prompt before or after the terminal echoes what was typed ahead,
/// so a command's output can share a line with the prompt.
fn has_line(output: &str, line: &str) -> bool {
    output.lines().any(|l| {
        let l = l.trim_end_matches('\r');
        l == line
            || l.strip_suffix(line)
                .is_some_and(|before| before.ends_with("$ ") || before.ends_with("# "))
    })
}

#[test]
fn exec_runs_commands_in_an_instance() {
    if !linux_available() {
        return;
    }
    let cell = DevCell::start(&["--backend", "linux", "--no-router"]);
    let home = cell.home();
    ok(
        home,
        &[
            "create",
            "web",
            "--rootfs",
            "preloaded:busybox",
            "--",
            "sleep",
            "1000001",
        ],
    );
    wait_running(home);

    // The container's processes: its init, the app, and ps itself.
    let out = corral(home, &["exec", "web/0", "--", "ps", "-o", "pid,args"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("sleep 1000001"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["1", "/.corral/init"])),
        "{stdout}"
    );
    assert!(
        stdout.lines().count() <= 5,
        "only the container's: {stdout}"
    );

    // The exit code is corral's; stdout and stderr stay apart.
    let out = corral(home, &["exec", "web/0", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = corral(
        home,
        &[
            "exec",
            "web/0",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    // -e adds to the environment; -i passes stdin, whose end is the command's.
    let out = corral(
        home,
        &[
            "exec",
            "-e",
            "GREETING=hi",
            "web/0",
            "--",
            "sh",
            "-c",
            "echo $GREETING",
        ],
    );
    assert_eq!(text(&out.stdout), "hi\n", "{out:?}");
    let out = corral_with_input(
        home,
        &["exec", "-i", "web/0", "--", "wc", "-l"],
        b"a\nb\nc\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), "3");
    // Without -i the command reads nothing.
    let out = corral_with_input(home, &["exec", "web/0", "--", "cat"], b"ignored\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "");

    // An interactive shell on a terminal of our size.
    let (shown, code) = interactive(home, "stty size; echo $((6*7)); exit 5\n");
    assert_eq!(code, 5, "{shown}");
    assert!(has_line(&shown, "42"), "{shown:?}");
    assert!(has_line(&shown, "33 101"), "{shown:?}");

    // Refusals name what is wrong and exit nonzero.
    for (args, says) in [
        (&["exec", "web/4", "--", "ps"][..], "no index 4"),
        (&["exec", "nope/0", "--", "ps"][..], "no LRP named nope"),
        (&["exec", "web", "--", "ps"][..], "is not NAME/INDEX"),
        (
            &["exec", "web/0", "--", "/no/such/program"][..],
            "/no/such/program",
        ),
    ] {
        let out = corral(home, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    // A session runs as the app's main process does: its user, in its directory, with
    // its environment (an LRP whose run names them, created through the API).
    let api = cell.dev().api.clone();
    let token = std::fs::read_to_string(home.join("dev").join("token")).expect("the token");
    let lrp = r#"{"name": "asuser", "rootfs": "preloaded:busybox", "env": {"TEAM": "blue"},
        "action": {"run": {"path": "sleep", "args": ["1000004"], "user": "1000", "dir": "/bin"}}}"#;
    let created = Command::new("curl")
        .args(["-sf", "--max-time", "5", "-X", "POST", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .args(["-H", "Content-Type: application/json", "-d", lrp])
        .arg(format!("{api}/v1/lrps"))
        .output()
        .expect("curl");
    assert!(created.status.success(), "{created:?}");
    poll_for("asuser/0 to run", RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", "asuser", "--json"]);
        (status.running == 1).then_some(())
    });
    let out = corral(
        home,
        &[
            "exec",
            "asuser/0",
            "--",
            "sh",
            "-c",
            "id -u; pwd; echo $TEAM $INSTANCE_INDEX",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "1000\n/bin\nblue 0\n");
}

/// The process backend (no root): the same commands and terminal, on the host.
#[test]
fn exec_runs_commands_on_the_process_backend() {
    let cell = DevCell::start(&["--backend", "process", "--no-router"]);
    let home = cell.home();
    ok(home, &["create", "web", "--", "sleep", "1000002"]);
    wait_running(home);

    let out = corral(
        home,
        &[
            "exec",
            "web/0",
            "--",
            "sh",
            "-c",
            "echo $((6*7)); echo err >&2; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(text(&out.stdout), "42\n");
    assert_eq!(text(&out.stderr), "err\n");

    // Input a command does not read at once waits for it, beyond what a pipe holds.
    let input = vec![b'x'; 1 << 20];
    let out = corral_with_input(
        home,
        &["exec", "-i", "web/0", "--", "sh", "-c", "sleep 1; wc -c"],
        &input,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), "1048576");

    let (shown, code) = interactive(home, "stty size; echo $((6*7)); exit 5\n");
    assert_eq!(code, 5, "{shown}");
    assert!(has_line(&shown, "42"), "{shown:?}");
    assert!(has_line(&shown, "33 101"), "{shown:?}");

    // A running task's container too; one that is not running is named as such.
    ok(
        home,
        &["task", "submit", "--id", "job", "--", "sleep", "1000003"],
    );
    poll_for("the task to run", RUN_DEADLINE, || {
        let task: model::Task = json(home, &["task", "get", "job", "--json"]);
        (task.state == model::TaskState::Running).then_some(())
    });
    let out = corral(
        home,
        &[
            "task",
            "exec",
            "job",
            "--",
            "sh",
            "-c",
            "echo $CORRAL_TASK; exit 6",
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert_eq!(text(&out.stdout), "job\n");
    ok(home, &["task", "cancel", "job"]);
    poll_for("the task to end", RUN_DEADLINE, || {
        let task: model::Task = json(home, &["task", "get", "job", "--json"]);
        (task.state != model::TaskState::Running).then_some(())
    });
    let err = fails(home, &["task", "exec", "job", "--", "true"]);
    assert!(err.contains("task job is not running"), "{err}");
    let err = fails(home, &["task", "exec", "nope", "--", "true"]);
    assert!(err.contains("no task with id nope"), "{err}");
}
