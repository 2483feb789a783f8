//! End to end through the router: `corral dev` with its cell (the process backend, and
//! the linux backend when running as root) and its router, LRPs created with the CLI,
//! and traffic sent through the router as a client would: HTTP by hostname to each
//! instance in turn, no failed request while instances die and go, a WebSocket echo, a
//! TCP echo by external port, and the router's own answers when nothing can serve.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::LrpStatus;
use model::InstanceState;

use common::{Answer, DevCell, http_get, json, linux_available, ok, poll, poll_for};

/// Long enough for a cold start of instances on a busy 2-core machine.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// `corral dev` with its cell and router, once the router has loaded its table.
struct DevRouter {
    cell: DevCell,
    router: String,
}

impl DevRouter {
    fn start(args: &[&str]) -> DevRouter {
        let cell = DevCell::start(args);
        let router = cell.dev().router.clone().expect("dev runs a router");
        poll_for("the router to load its table", RUN_DEADLINE, || {
            let (status, _) = get(&router, "127.0.0.1", "/healthz").ok()?;
            (status == 200).then_some(())
        });
        DevRouter { cell, router }
    }

    fn home(&self) -> &Path {
        self.cell.home()
    }

    /// `GET path` with `Host: host` through the router.
    fn get(&self, host: &str, path: &str) -> Result<(u16, String), String> {
        get(&self.router, host, path)
    }
}

/// One `GET` with `Host: host`; the status and body.
fn get(addr: &str, host: &str, path: &str) -> Answer {
    http_get(addr, host, path, None)
}

/// A shell command that serves `instance N` over HTTP on $PORT from a directory whose
/// name holds `marker` and the index, so a test can find each instance's process.
fn web_command(dir: &Path, marker: &str) -> String {
    format!(
        "d={}/{marker}-$INSTANCE_INDEX && mkdir -p $d && echo \"instance $INSTANCE_INDEX\" > $d/index.html \
         && exec python3 -m http.server --bind 127.0.0.1 --directory $d $PORT",
        dir.display()
    )
}

/// Creates `name` with `n` instances of `web_command` routed at `host`.
fn create_web(dev: &DevRouter, name: &str, host: &str, n: u32, marker: &str) {
    ok(
        dev.home(),
        &[
            "create",
            name,
            "-i",
            &n.to_string(),
            "--route",
            host,
            "--check",
            "http:8080/",
            "--",
            "sh",
            "-c",
            &web_command(dev.home(), marker),
        ],
    );
}

/// Waits until requests through the router have reached every one of `indices`.
fn until_all_reached(dev: &DevRouter, host: &str, indices: &[u32]) {
    let mut seen = std::collections::BTreeSet::new();
    poll_for(
        &format!("instances {indices:?} of {host} through the router"),
        RUN_DEADLINE,
        || {
            if let Ok((200, body)) = dev.get(host, "/") {
                seen.insert(body.trim().to_owned());
            }
            indices
                .iter()
                .all(|i| seen.contains(&format!("instance {i}")))
                .then_some(())
        },
    );
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

fn status(home: &Path, name: &str) -> LrpStatus {
    json(home, &["status", name, "--json"])
}

/// Three instances answer in turn through the router by hostname; a host nobody routes
/// is a 404 and an LRP scaled to 0 a 503, each saying why.
#[test]
fn http_reaches_each_instance_in_turn_and_says_why_not() {
    let dev = DevRouter::start(&["--backend", "process"]);
    let marker = format!("turns-{}", std::process::id());
    create_web(&dev, "web", "web.localhost", 3, &marker);
    until_all_reached(&dev, "web.localhost", &[0, 1, 2]);
    in_turn(&dev, "WEB.localhost:8080");

    let (status, body) = dev.get("nope.localhost", "/").expect("an answer");
    assert_eq!(
        (status, body.as_str()),
        (
            404,
            "no route for nope.localhost: no LRP has this hostname\n"
        )
    );

    ok(dev.home(), &["scale", "web", "0"]);
    let (status, body) = poll("the router to answer 503 for web", || {
        dev.get("web.localhost", "/")
            .ok()
            .filter(|(status, _)| *status == 503)
    });
    assert_eq!(
        (status, body.as_str()),
        (503, "no instance of LRP web is running\n")
    );
}

/// Six requests reach three instances in turn: each differs from the one before and
/// equals the one three before.
fn in_turn(dev: &DevRouter, host: &str) {
    let answers: Vec<String> = (0..6)
        .map(|_| {
            let (status, body) = dev.get(host, "/").expect("an answer");
            assert_eq!(status, 200, "{body}");
            body.trim().to_owned()
        })
        .collect();
    for i in 1..answers.len() {
        assert_ne!(answers[i], answers[i - 1], "not in turn: {answers:?}");
    }
    for i in 3..answers.len() {
        assert_eq!(answers[i], answers[i - 3], "not in turn: {answers:?}");
    }
    let mut distinct = answers[..3].to_vec();
    distinct.sort();
    assert_eq!(distinct, ["instance 0", "instance 1", "instance 2"]);
}

/// While a client sends requests in a loop, one instance is killed and the LRP is then
/// scaled from 3 to 1: every request succeeds (the router tries another instance when
/// one cannot be reached, and instances being stopped leave its table).
#[test]
fn no_request_fails_while_instances_die_and_go() {
    let dev = DevRouter::start(&["--backend", "process"]);
    let marker = format!("churn-{}", std::process::id());
    create_web(&dev, "web", "web.localhost", 3, &marker);
    until_all_reached(&dev, "web.localhost", &[0, 1, 2]);

    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // A few clients at once, so that some requests meet an instance in the moment it
    // goes.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let answers = answers.clone();
            let stop = stop.clone();
            let router = dev.router.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answer = get(&router, "web.localhost", "/");
                    answers.lock().expect("not poisoned").push(answer);
                }
            })
        })
        .collect();
    let count = || answers.lock().expect("not poisoned").len();
    let after = |n: usize| {
        let target = count() + n;
        poll_for(&format!("{n} more requests"), RUN_DEADLINE, || {
            (count() >= target).then_some(())
        });
    };
    after(20);

    // Instance 1's process dies at once, as in a crash.
    let victim = format!("{marker}-1 ");
    let pids = pids_with(&victim);
    assert!(!pids.is_empty(), "no process of instance 1");
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    poll_for("instance 1 to be seen crashed", RUN_DEADLINE, || {
        let s = status(dev.home(), "web");
        s.instances
            .iter()
            .any(|i| i.index == 1 && i.crash_count >= 1)
            .then_some(())
    });
    after(20);

    // Then 3 -> 1: instances 1 and 2 are stopped.
    ok(dev.home(), &["scale", "web", "1"]);
    poll_for("instances 1 and 2 to stop", RUN_DEADLINE, || {
        (pids_with(&format!("{marker}-1 ")).is_empty()
            && pids_with(&format!("{marker}-2 ")).is_empty())
        .then_some(())
    });
    // Only instance 0 answers from some point on.
    poll_for("only instance 0 to answer", RUN_DEADLINE, || {
        let answers = answers.lock().expect("not poisoned");
        let last = answers.iter().rev().take(20).collect::<Vec<_>>();
        (last.len() == 20
            && last
                .iter()
                .all(|a| matches!(a, Ok((200, body)) if body.trim() == "instance 0")))
        .then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client thread");
    }

    let answers = answers.lock().expect("not poisoned");
    let failed: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a, Ok((200, body)) if body.starts_with("instance ")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        answers.len()
    );
    eprintln!("{} requests through the router, none failed", answers.len());
    let running = status(dev.home(), "web")
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count();
    assert_eq!(running, 1);
}

/// A WebSocket echo server (Python's standard library only) answers through the
/// router, and so does a TCP echo server by its external port.
#[test]
fn websockets_and_tcp_routes_pass_through() {
    let external = free_port();
    let ports = format!("{external}-{external}");
    let dev = DevRouter::start(&["--backend", "process", "--router-tcp-ports", &ports]);
    let scripts = dev.home().join("scripts");
    std::fs::create_dir_all(&scripts).expect("mkdir scripts");
    let ws = scripts.join("ws_echo.py");
    std::fs::write(&ws, WS_ECHO).expect("write the WebSocket server");
    let tcp = scripts.join("tcp_echo.py");
    std::fs::write(&tcp, TCP_ECHO).expect("write the TCP server");

    ok(
        dev.home(),
        &[
            "create",
            "ws",
            "--route",
            "ws.localhost",
            "--check",
            "tcp:8080",
            "--",
            "python3",
            &ws.display().to_string(),
        ],
    );
    ok(
        dev.home(),
        &[
            "create",
            "echo",
            "-p",
            "9000",
            "--tcp-route",
            &format!("{external}:9000"),
            "--check",
            "tcp:9000",
            "--",
            "python3",
            &tcp.display().to_string(),
        ],
    );

    // WebSocket: the handshake of RFC 6455's example, whose answer is known, then two
    // masked text frames echoed back.
    let (mut stream, head) = poll_for("the WebSocket handshake", RUN_DEADLINE, || {
        let mut stream = TcpStream::connect(&dev.router).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .write_all(
                b"GET /chat HTTP/1.1\r\nHost: ws.localhost\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n\r\n",
            )
            .ok()?;
        let head = read_head(&mut stream)?;
        head.starts_with("HTTP/1.1 101").then_some((stream, head))
    });
    // Header names in any case: HTTP/1.1 does not keep it.
    assert!(
        head.lines().any(
            |l| l.to_ascii_lowercase().starts_with("sec-websocket-accept:")
                && l.ends_with(" s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        ),
        "{head}"
    );
    for message in ["hello", "through the router"] {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![0x81, 0x80 | message.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(message.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        stream.write_all(&frame).expect("send a frame");
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).expect("an echoed frame");
        assert_eq!(header, [0x81, message.len() as u8]);
        let mut payload = vec![0u8; message.len()];
        stream.read_exact(&mut payload).expect("its payload");
        assert_eq!(String::from_utf8_lossy(&payload), message);
    }

    // TCP: the external port echoes once its instance runs.
    let echoed = poll_for("the TCP route to echo", RUN_DEADLINE, || {
        let mut stream = TcpStream::connect(("127.0.0.1", external)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream.write_all(b"ping over tcp\n").ok()?;
        let mut echoed = [0u8; 14];
        stream.read_exact(&mut echoed).ok()?;
        Some(echoed)
    });
    assert_eq!(&echoed, b"ping over tcp\n");
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Reads a response head, through the blank line.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A WebSocket echo server on $PORT with nothing but Python's standard library.
const WS_ECHO: &str = r#"
import base64, hashlib, os, socket, struct, threading

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

def exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

def serve(conn):
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines if ":" in l)}
        key = headers.get("sec-websocket-key")
        if not key:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n").encode())
        while True:
            b1, b2 = exactly(conn, 2)
            opcode, n = b1 & 0x0F, b2 & 0x7F
            if n == 126:
                n = struct.unpack(">H", exactly(conn, 2))[0]
            elif n == 127:
                n = struct.unpack(">Q", exactly(conn, 8))[0]
            mask = exactly(conn, 4) if b2 & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(exactly(conn, n)))
            if opcode == 8:
                conn.sendall(b"\x88\x00")
                return
            conn.sendall(bytes([0x80 | opcode, len(payload)]) + payload)
    except (EOFError, OSError):
        pass
    finally:
        conn.close()

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(os.environ["PORT"])))
server.listen(64)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// A TCP echo server on $PORT.
const TCP_ECHO: &str = r#"
import os, socket, threading

def serve(conn):
    try:
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(os.environ["PORT"])))
server.listen(64)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// Real containers (busybox httpd, each in its own network namespace, published on a
/// host port) reached through the router in turn.
#[test]
fn linux_containers_are_reached_in_turn() {
    if !linux_available() {
        return;
    }
    let dev = DevRouter::start(&["--backend", "linux"]);
    ok(
        dev.home(),
        &[
            "create",
            "web",
            "-i",
            "3",
            "--route",
            "web.localhost",
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
    until_all_reached(&dev, "web.localhost", &[0, 1, 2]);
    in_turn(&dev, "web.localhost");
    ok(dev.home(), &["rm", "web"]);
    poll("the route to go", || {
        dev.get("web.localhost", "/")
            .ok()
            .filter(|(status, _)| *status == 404)
    });
}
