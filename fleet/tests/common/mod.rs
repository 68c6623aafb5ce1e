//! What the fleet's end-to-end tests share: the workspace's binaries, children ended by pid,
//! a minderd on a socket in a temp dir, a running minder-fleet, and raw HTTP/1.1 requests
//! with any headers (cookies, Sec-Fetch-*, Origin) — nothing that hides what goes on the wire.

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECS: Duration = Duration::from_secs(1);

/// The workspace's binaries (minderd, minder): next to the directory of this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process the test started, ended by its pid (SIGTERM, then reaped) when dropped.
pub struct Owned(pub Child);

impl Owned {
    /// SIGTERM, without waiting (a test that watches the shutdown waits itself).
    pub fn term(&self) {
        let _ = self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) -> nix::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), sig)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.term();
        let deadline = Instant::now() + 10 * SECS;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minderd on a unix socket in `dir` (made if missing), with this native configuration,
/// in which `{dir}` stands for `dir`.
pub fn minderd(dir: &Path, name: &str, toml: &str) -> (Owned, PathBuf) {
    minderd_with(dir, name, toml, &[])
}

/// As [`minderd`], with more arguments (another `--listen`).
pub fn minderd_with(dir: &Path, name: &str, toml: &str, extra: &[&str]) -> (Owned, PathBuf) {
    std::fs::create_dir_all(dir).expect("the node's directory");
    let conf = dir.join(format!("{name}.toml"));
    std::fs::write(&conf, toml.replace("{dir}", &dir.display().to_string())).expect("write config");
    let sock = dir.join(format!("{name}.sock"));
    let child = Command::new(bin("minderd"))
        .arg("-c")
        .arg(&conf)
        .arg("--listen")
        .arg(format!("unix://{}", sock.display()))
        .arg("-l")
        .arg(dir.join(format!("{name}.log")))
        .args(extra)
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("minderd starts");
    let owned = Owned(child);
    wait_for("minderd to answer", 10 * SECS, || ctl(&sock, &["version"]).status.success());
    (owned, sock)
}

pub fn ctl(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("minder"))
        .arg("-s")
        .arg(format!("unix://{}", sock.display()))
        .args(args)
        .output()
        .expect("minder runs")
}

/// The pid of `process` as minderd itself says (not through the fleet).
pub fn pid_on(sock: &Path, process: &str) -> String {
    String::from_utf8_lossy(&ctl(sock, &["pid", process]).stdout).trim().to_string()
}

/// supervisord 4.3.0 from the benchmark's virtualenv (made from PyPI on first use by
/// bench/minderbench/prepare.py).
pub fn supervisord_430() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let out = Command::new("python3")
        .current_dir(root)
        .args([
            "-c",
            "import sys; sys.path.insert(0, 'bench'); from minderbench.prepare import supervisor_venv; print(supervisor_venv()[0])",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "making the supervisor 4.3.0 virtualenv failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port").port()
}

/// `minder-fleet --config-file F user …`, with the password on standard input.
pub fn user_cli(conf: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_minder-fleet"))
        .arg("--config-file")
        .arg(conf)
        .arg("user")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("minder-fleet runs");
    let _ = child.stdin.take().expect("stdin").write_all(stdin.as_bytes());
    child.wait_with_output().expect("it ends")
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub json: Value,
    pub took: Duration,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The session cookie's value from `Set-Cookie`.
    pub fn session(&self) -> Option<String> {
        self.header("set-cookie")
            .and_then(|c| c.strip_prefix("minder_fleet_session="))
            .and_then(|c| c.split(';').next())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }
}

/// One HTTP/1.1 request with these extra headers.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let started = Instant::now();
    let s = TcpStream::connect(addr).expect("connect to the fleet");
    request_on(s, started, addr, method, path, headers, body)
}

/// As [`request`], from the loopback address `source` (any of 127.0.0.0/8 is this machine),
/// so that a test can be many clients.
pub fn request_from(
    source: [u8; 4],
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let started = Instant::now();
    let to: std::net::SocketAddrV4 = addr.parse().expect("an IPv4 address");
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("a socket");
    let [a, b, c, d] = source;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::new(a, b, c, d, 0)).expect("bind the source");
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)).expect("connect to the fleet");
    request_on(TcpStream::from(fd), started, addr, method, path, headers, body)
}

fn request_on(
    mut s: TcpStream,
    started: Instant,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    s.set_read_timeout(Some(30 * SECS)).expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write");
    // The server may answer (413) before reading a large body; a failed write is not a failure.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b > a => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    Answer { status, headers, body: body.to_string(), json, took }
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A running minder-fleet, and what it wrote to stderr so far.
pub struct FleetProc {
    pub child: Owned,
    pub addr: String,
    pub stderr: Arc<Mutex<String>>,
}

pub fn fleet(conf: &Path) -> FleetProc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_minder-fleet"))
        .arg("--config-file")
        .arg(conf)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .env("MINDER_FLEET_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("minder-fleet starts");
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().expect("stderr");
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
            s.push_str(&line);
            s.push('\n');
        }
    });
    let mut child = Owned(child);
    let mut addr = None;
    wait_for("minder-fleet to listen", 20 * SECS, || {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "minder-fleet exited with {status}:\n{}",
                stderr.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
        let text = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
        addr = text
            .split("listening at http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string);
        addr.is_some()
    });
    FleetProc { child, addr: addr.expect("an address"), stderr }
}

impl FleetProc {
    /// SIGHUP: the fleet rereads its configuration.
    pub fn hup(&self) {
        self.child.signal(nix::sys::signal::Signal::SIGHUP).expect("SIGHUP the fleet");
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        request(&self.addr, method, path, headers, body)
    }

    /// Logs in with JSON; the session cookie's value.
    pub fn login(&self, user: &str, password: &str) -> String {
        let body = serde_json::json!({"username": user, "password": password}).to_string();
        let a =
            self.req("POST", "/api/v2/auth/login/", &[("Content-Type", "application/json")], body.as_bytes());
        assert_eq!(a.status, 200, "login of {user}: {}", a.body);
        a.session().expect("a session cookie")
    }
}

/// A `Cookie` header's value for a session.
pub fn cookie(session: &str) -> String {
    format!("minder_fleet_session={session}")
}
