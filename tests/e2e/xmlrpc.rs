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

/// The TCP address a daemon reports listening at (it binds port 0).
fn tcp_address(d: &Daemon) -> String {
    let mut found = None;
    wait_for("the TCP listener", 10 * SECS, || {
        found =
            d.log().lines().find_map(|l| l.split("listening at tcp://").nth(1).map(|a| a.trim().to_string()));
        found.is_some()
    });
    found.expect("an address")
}

#[test]
fn pythons_xmlrpc_client_gets_supervisors_answers() {
    let mut d = daemon();
    let addr = tcp_address(&d);
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
    let addr = tcp_address(&d);
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
