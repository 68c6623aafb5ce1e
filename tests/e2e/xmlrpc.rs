//! Supervisor's XML-RPC interface at /RPC2, driven by Python's own `xmlrpc.client` (as
//! supervisorctl, dashboards and `supervisor.childutils` drive supervisord) and by hostile raw
//! HTTP/1.1: every method's answer, faults, authentication and roles, and bodies meant to hurt.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::harness::{wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);
const READER: &str = "reader-token-0123456789";

/// A program that asks minderd about itself through SUPERVISOR_SERVER_URL, as a program using
/// `childutils.getRPCInterface(os.environ)` does (over the unix socket: the first listener).
const PROBE: &str = r#"
import http.client, os, socket, time, xmlrpc.client as x
url = os.environ["SUPERVISOR_SERVER_URL"]
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(url[len("unix://"):])
class T(x.Transport):
    def make_connection(self, host):
        return C("localhost")
p = x.ServerProxy("http://localhost/RPC2", transport=T())
info = p.supervisor.getProcessInfo(os.environ["SUPERVISOR_GROUP_NAME"] + ":" + os.environ["SUPERVISOR_PROCESS_NAME"])
print("probe url %s pid %d me %d enabled %s group %s" % (url, info["pid"], os.getpid(), os.environ["SUPERVISOR_ENABLED"], os.environ["SUPERVISOR_GROUP_NAME"]), flush=True)
time.sleep(100)
"#;

const TALK: &str = "import sys, time\nprint('hello', flush=True)\nprint('oops', file=sys.stderr, flush=True)\ntime.sleep(100)\n";

fn daemon() -> Daemon {
    let tokens = format!("grafana read-only {READER}\n");
    Daemon::start_with(
        "[daemon]\ntokens_file = \"{dir}/tokens\"\n\
         [daemon.credentials.\"tcp://127.0.0.1:0\"]\nusername = \"u\"\npassword = \"p\"\n\
         [program.web]\ncommand = \"sleep 100\"\nstartsecs = 0\n\
         [program.idle]\ncommand = \"sleep 100\"\nstartsecs = 0\nautostart = false\n\
         [program.talk]\ncommand = \"python3 {dir}/talk.py\"\nstartsecs = 0\n\
         [program.cat]\ncommand = \"cat\"\nstartsecs = 0\n\
         [program.probe]\ncommand = \"python3 {dir}/probe.py\"\nstartsecs = 0\n",
        &[("tokens", &tokens), ("probe.py", PROBE), ("talk.py", TALK)],
        &["--listen", "tcp://127.0.0.1:0"],
    )
}

#[test]
fn pythons_xmlrpc_client_gets_supervisors_answers() {
    let mut d = daemon();
    let addr = d.tcp_address();
    let port = addr.rsplit(':').next().expect("a port").to_string();
    let script = d.path("xmlrpc_client.py");
    std::fs::write(&script, include_str!("xmlrpc_client.py")).expect("write the script");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&port)
        .arg(&d.socket)
        .arg(&d.config)
        .arg(d.pid().to_string())
        .arg(&d.log)
        .arg(READER)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "stdout:\n{}\nstderr:\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    // The script's last call was shutdown: the daemon stops on its own.
    assert!(d.wait_exit(20 * SECS).success());
}

/// Sends `head` (and `body`) on a fresh connection and returns the status code and the
/// response, read until the server closes or `Content-Length` is met.
fn raw(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(10 * SECS)).expect("timeout");
    s.write_all(head.as_bytes()).expect("write the head");
    // The server may answer and close before it has read all of a refused body.
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the answer to {head:?}: {e}"),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some((h, rest)) = text.split_once("\r\n\r\n") {
            let len = h
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|n| rest.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

fn post(addr: &str, body: &[u8]) -> (u16, String) {
    // "u:p" in base64.
    let head = format!(
        "POST /RPC2 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    raw(addr, &head, body)
}

const GET_STATE: &str =
    "<?xml version='1.0'?><methodCall><methodName>supervisor.getState</methodName><params></params></methodCall>";

#[test]
fn hostile_requests_are_refused_cleanly_and_the_daemon_is_unharmed() {
    let d = daemon();
    let addr = d.tcp_address();
    let (code, text) = post(&addr, GET_STATE.as_bytes());
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("<name>statename</name>\n<value><string>RUNNING</string>"), "{text}");
    // Billion laughs: no entity is ever defined.
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><methodCall><methodName>&lol3;</methodName></methodCall>"#;
    let (code, text) = post(&addr, laughs.as_bytes());
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("document type declarations are not accepted"), "{text}");
    // Deep nesting.
    let deep = format!(
        "<methodCall><methodName>system.multicall</methodName><params><param>{}{}</param></params></methodCall>",
        "<value><array><data>".repeat(10_000),
        "</data></array></value>".repeat(10_000)
    );
    let (code, text) = post(&addr, deep.as_bytes());
    assert_eq!(code, 400, "{text}");
    // A 100 MB body is refused on its declared length, before it is sent: only 1 KiB follows.
    let head =
        "POST /RPC2 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\nContent-Length: 104857600\r\n\r\n";
    let started = std::time::Instant::now();
    let (code, text) = raw(&addr, head, &[b' '; 1024]);
    assert_eq!(code, 413, "{text}");
    assert!(started.elapsed() < 5 * SECS, "answered without waiting for the body");
    // Without credentials: 401 before the body is looked at, asking for Basic.
    let (code, text) =
        raw(&addr, "POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n", &[b' '; 1024]);
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("www-authenticate: Basic realm=\"default\""), "{text}");
    // Other methods and paths.
    let (code, _) = raw(&addr, "GET /RPC2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"");
    assert_eq!(code, 405);
    let (code, _) = raw(&addr, "GET /secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"");
    assert_eq!(code, 404);
    // Not XML at all.
    let (code, _) = post(&addr, b"\x00\xff not xml");
    assert_eq!(code, 400);
    // The daemon still answers, on both protocols.
    let (code, text) = post(&addr, GET_STATE.as_bytes());
    assert_eq!(code, 200, "{text}");
    assert_eq!(d.state("web"), "RUNNING");
}

/// The real supervisorctl of Supervisor 4.3.0, from the benchmark's virtualenv (made on first
/// use from PyPI by bench/minderbench/prepare.py, which the test runs itself).
pub(crate) fn supervisorctl_430() -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .current_dir(root)
        .args([
            "-c",
            "import sys; sys.path.insert(0, 'bench'); from minderbench.prepare import supervisor_venv; print(supervisor_venv()[1])",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "making the supervisor 4.3.0 virtualenv failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The sections every supervisord.conf of these tests starts with: a unix socket, the daemon's
/// files in `dir`, the RPC interface and supervisorctl's server URL.
pub(crate) fn supervisord_head(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        "[unix_http_server]\nfile={d}/s.sock\n\
         [supervisord]\nlogfile={d}/daemon.log\npidfile={d}/daemon.pid\nchildlogdir={d}\nnodaemon=true\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
         [supervisorctl]\nserverurl=unix://{d}/s.sock\n"
    )
}

/// One supervisord.conf, served by `server` (minderd or supervisord) from `dir`.
fn supervisord_conf(dir: &std::path::Path) -> std::path::PathBuf {
    let conf = format!(
        "{}[program:web]\ncommand=sleep 100\nstartsecs=0\n\
         [program:talk]\ncommand=sh -c 'echo hello; exec sleep 100'\nstartsecs=0\n\
         [program:idle]\ncommand=sleep 100\nstartsecs=0\nautostart=false\n\
         [program:crash]\ncommand=false\nstartsecs=1\nstartretries=0\nautostart=false\n\
         [program:missing]\ncommand=/nonexistent/program\nautostart=false\n",
        supervisord_head(dir)
    );
    let path = dir.join("supervisord.conf");
    std::fs::write(&path, conf).expect("write supervisord.conf");
    path
}

/// What supervisorctl printed and its exit code, with pids, uptimes and times made neutral.
fn ctl_run(ctl: &std::path::Path, conf: &std::path::Path, args: &[&str]) -> (String, i32) {
    let out = Command::new(ctl).arg("-c").arg(conf).args(args).output().expect("supervisorctl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut neutral = String::new();
    for word in text.split_inclusive([' ', '\n', ',']) {
        let core = word.trim_end_matches([' ', '\n', ',']);
        let rest = &word[core.len()..];
        let is_num = !core.is_empty() && core.bytes().all(|b| b.is_ascii_digit() || b == b':');
        neutral.push_str(if is_num { "N" } else { core });
        neutral.push_str(rest);
    }
    // Column padding depends on nothing but names; times of day ("Dec 01 11:47 PM") are N.
    (neutral, out.status.code().unwrap_or(-1))
}

/// Runs `commands` through supervisorctl against the server started by `start`, returning
/// each one's neutral output and exit code.
fn session(
    ctl: &std::path::Path,
    server: &mut std::process::Child,
    conf: &std::path::Path,
) -> Vec<(String, i32)> {
    wait_for("the server to answer supervisorctl", 20 * SECS, || {
        assert!(server.try_wait().expect("wait").is_none(), "the server exited");
        ctl_run(ctl, conf, &["status", "web"]).1 == 0
    });
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "web"],
        &["status", "nope"],
        &["stop", "web"],
        &["stop", "web"],
        &["start", "web"],
        &["start", "web"],
        &["start", "nope"],
        &["restart", "web"],
        &["signal", "CONT", "web"],
        &["signal", "CONT", "idle"],
        &["tail", "talk"],
        &["clear", "talk"],
        &["tail", "talk"],
        &["pid", "web"],
        &["avail"],
        &["reread"],
        &["start", "idle"],
        &["status", "idle"],
        &["stop", "idle"],
        &["start", "crash"],
        &["status", "crash"],
        &["start", "missing"],
        &["status", "missing"],
        &["stop", "crash"],
        &["remove", "web"],
        &["remove", "idle"],
        &["add", "idle"],
        &["add", "idle"],
        &["add", "nope"],
        &["update"],
        &["status", "idle"],
        &["shutdown"],
    ];
    let out = commands.iter().map(|c| ctl_run(ctl, conf, c)).collect();
    crate::harness::sigterm(server);
    let deadline = std::time::Instant::now() + 20 * SECS;
    while server.try_wait().expect("wait").is_none() {
        assert!(std::time::Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    out
}

#[test]
fn the_real_supervisorctl_prints_what_it_prints_against_supervisord() {
    let ctl = supervisorctl_430();
    let supervisord = ctl.with_file_name("supervisord");
    let theirs = {
        let dir = tempfile::tempdir().expect("dir");
        let conf = supervisord_conf(dir.path());
        let mut s = Command::new(&supervisord)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("supervisord starts");
        session(&ctl, &mut s, &conf)
    };
    let ours = {
        let dir = tempfile::tempdir().expect("dir");
        let conf = supervisord_conf(dir.path());
        let mut m = Command::new(crate::harness::bin("minderd"))
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("minderd starts");
        session(&ctl, &mut m, &conf)
    };
    assert_eq!(theirs.len(), ours.len());
    // Not a comparison of two failures: supervisord's own answers are what is expected.
    assert_eq!(theirs[3], ("web: stopped\n".to_string(), 0), "{theirs:?}");
    assert_eq!(theirs[11].1, 0, "{theirs:?}");
    eprintln!("supervisord's answers: {theirs:#?}");
    for (i, (t, o)) in theirs.iter().zip(&ours).enumerate() {
        assert_eq!(o, t, "command {i}: minderd's answer, then supervisord's");
    }
}

#[test]
fn the_real_supervisorctl_over_tcp_with_a_password() {
    let ctl = supervisorctl_430();
    let d = daemon();
    let addr = d.tcp_address();
    let url = format!("http://{addr}");
    let run = |user: &[&str], args: &[&str]| {
        let out =
            Command::new(&ctl).args(["-s", &url]).args(user).args(args).output().expect("supervisorctl runs");
        (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code().unwrap_or(-1))
    };
    let admin = ["-u", "u", "-p", "p"];
    let (out, code) = run(&admin, &["status", "web"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("web ") && out.contains("RUNNING   pid "), "{out}");
    assert_eq!(run(&admin, &["stop", "web"]), ("web: stopped\n".to_string(), 0));
    assert_eq!(run(&admin, &["start", "web"]), ("web: started\n".to_string(), 0));
    let (out, code) = run(&admin, &["tail", "talk"]);
    // supervisorctl ends what it read with a newline of its own.
    assert_eq!((out.as_str(), code), ("hello\n\n", 0));
    let (out, code) = run(&[], &["status"]);
    assert!(out.contains("Server requires authentication"), "{out}");
    assert_ne!(code, 0);
    let (out, _) = run(&["-u", "u", "-p", "wrong"], &["status"]);
    assert!(out.contains("Server requires authentication"), "{out}");
}

#[test]
fn xmlrpc_over_tls_beside_grpc_on_the_same_port() {
    let pki = crate::security::Pki::new();
    let admin = "admin-token-0123456789";
    let d = Daemon::start_with(
        &format!(
            "[daemon]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntokens_file = \"{{dir}}/tokens\"\n\
             [program.web]\ncommand = \"sleep 100\"\nstartsecs = 0\n",
            pki.path("server.pem"),
            pki.path("server.key"),
        ),
        &[("tokens", &format!("ops admin {admin}\n"))],
        &["--listen", "tcp://127.0.0.1:0"],
    );
    let addr = d.tcp_address();
    // Python's client, verifying the server against the test CA, offering http/1.1 by ALPN.
    let script = r#"
import ssl, sys, xmlrpc.client as x
addr, ca, token = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
class T(x.SafeTransport):
    def send_headers(self, connection, headers):
        connection.putheader("Authorization", "Bearer " + token)
        super().send_headers(connection, headers)
p = x.ServerProxy("https://%s/RPC2" % addr, transport=T(context=ctx))
print(p.supervisor.getProcessInfo("web")["statename"])
"#;
    let out = Command::new("python3")
        .args(["-c", script, &addr, &pki.path("ca.pem"), admin])
        .output()
        .expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "RUNNING",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // gRPC (HTTP/2 by ALPN) on the same port still works.
    let out = Command::new(crate::harness::bin("minder"))
        .args(["-s", &format!("tcp://{addr}"), "--tls-ca", &pki.path("ca.pem"), "--tls-domain", "localhost"])
        .args(["--token", admin, "status", "web"])
        .env_remove("MINDER_TOKEN")
        .output()
        .expect("minder runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_child_reaches_the_daemon_at_its_http_supervisor_server_url() {
    // Only a TCP listener: SUPERVISOR_SERVER_URL is http://host:port, as supervisord writes it
    // and as Supervisor's childutils (SupervisorTransport) requires; tcp:// it rejects.
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().display();
    let child = "import os, xmlrpc.client as x\nurl = os.environ['SUPERVISOR_SERVER_URL']\n\
                 print('url', url, 'daemon', x.ServerProxy(url + '/RPC2').supervisor.getPID(), flush=True)\n\
                 import time; time.sleep(100)\n";
    std::fs::write(dir.path().join("child.py"), child).expect("write");
    std::fs::write(
        dir.path().join("m.toml"),
        format!(
            "[program.child]\ncommand = \"python3 {d}/child.py\"\nstartsecs = 0\nstdout_logfile = \"{d}/out.log\"\n"
        ),
    )
    .expect("write");
    let mut m = Command::new(crate::harness::bin("minderd"))
        .arg("-c")
        .arg(dir.path().join("m.toml"))
        .args(["--listen", "tcp://127.0.0.1:0", "-s", "-l"])
        .arg(dir.path().join("d.log"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("minderd starts");
    let out = dir.path().join("out.log");
    let mut text = String::new();
    wait_for("the child's report", 20 * SECS, || {
        assert!(m.try_wait().expect("wait").is_none(), "minderd exited");
        text = std::fs::read_to_string(&out).unwrap_or_default();
        text.contains("daemon")
    });
    crate::harness::sigterm(&m);
    let _ = m.wait();
    assert!(text.starts_with("url http://127.0.0.1:"), "{text}");
    assert!(text.trim_end().ends_with(&format!("daemon {}", m.id())), "{text}");
}

#[test]
fn xmlrpc_answers_are_supervisords_for_the_same_configuration() {
    let ctl = supervisorctl_430();
    let supervisord = ctl.with_file_name("supervisord");
    let (theirs_dir, ours_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (theirs_conf, ours_conf) = (supervisord_conf(theirs_dir.path()), supervisord_conf(ours_dir.path()));
    let quiet = || std::process::Stdio::null();
    let mut theirs = Command::new(&supervisord)
        .arg("-c")
        .arg(&theirs_conf)
        .stdout(quiet())
        .stderr(quiet())
        .spawn()
        .expect("supervisord starts");
    let mut ours = Command::new(crate::harness::bin("minderd"))
        .arg("-c")
        .arg(&ours_conf)
        .arg("-s")
        .stdout(quiet())
        .stderr(quiet())
        .spawn()
        .expect("minderd starts");
    for (server, conf) in [(&mut theirs, &theirs_conf), (&mut ours, &ours_conf)] {
        wait_for("the server to answer", 20 * SECS, || {
            assert!(server.try_wait().expect("wait").is_none(), "the server exited");
            ctl_run(&ctl, conf, &["status", "web"]).1 == 0
        });
    }
    let script = theirs_dir.path().join("xmlrpc_compare.py");
    std::fs::write(&script, include_str!("xmlrpc_compare.py")).expect("write the script");
    let out = Command::new("python3")
        .arg(&script)
        .arg(theirs_dir.path().join("s.sock"))
        .arg(ours_dir.path().join("s.sock"))
        .output()
        .expect("python3 runs");
    for server in [&mut theirs, &mut ours] {
        crate::harness::sigterm(server);
        let _ = server.wait();
    }
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn infinite_startretries_is_the_largest_xmlrpc_int() {
    // startretries = "infinite" is kept as u32::MAX, which XML-RPC's 32-bit <int> cannot
    // carry (Python's marshaller refuses it, other clients fail to parse it): 2147483647.
    let d = Daemon::start_with(
        "[daemon.credentials.\"tcp://127.0.0.1:0\"]\nusername = \"u\"\npassword = \"p\"\n\
         [program.forever]\ncommand = \"sleep 100\"\nautostart = false\nstartretries = \"infinite\"\n\
         stdout_logfile_maxbytes = \"3GB\"\n",
        &[],
        &["--listen", "tcp://127.0.0.1:0"],
    );
    let call = "<?xml version='1.0'?><methodCall><methodName>supervisor.getAllConfigInfo</methodName><params></params></methodCall>";
    let (code, body) = post(&d.tcp_address(), call.as_bytes());
    assert_eq!(code, 200, "{body}");
    let after = |key: &str| {
        let at = body.find(&format!("<name>{key}</name>")).unwrap_or_else(|| panic!("{key} in {body}"));
        body[at..].split("<int>").nth(1).and_then(|v| v.split('<').next()).unwrap_or("").to_string()
    };
    assert_eq!(after("startretries"), "2147483647", "{body}");
    assert_eq!(after("stdout_logfile_maxbytes"), "2147483647", "{body}");
    assert!(!body.contains("4294967295"), "{body}");
}
