//! minder-fleet end to end: the real `minder-fleet` binary over a fleet of two real minderd
//! nodes (gRPC), one real supervisord 4.3.0 (XML-RPC, from the benchmark's virtualenv, made
//! from PyPI on first use by bench/minderbench/prepare.py), one hung node (a TCP listener that
//! accepts and never answers) and one closed port. Every wait polls a condition up to a
//! deadline; nothing sleeps to synchronise.

mod common;

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const ADMIN: (&str, &str) = ("admin", "fleet-test-pw");

/// One HTTP/1.1 request (JSON if it has a body); the status, the JSON body (Null if none)
/// and how long it took.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    auth: Option<(&str, &str)>,
) -> (u16, Value, Duration) {
    let auth = auth.map(|(u, p)| basic(u, p));
    let mut headers = vec![];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let a = request(addr, method, path, &headers, body);
    (a.status, a.json, a.took)
}

/// What these tests ask the fleet, as its admin.
trait AsAdmin {
    fn node_names(&self) -> Vec<String>;
    fn get(&self, path: &str) -> (u16, Value);
    fn post(&self, path: &str, body: &[u8]) -> (u16, Value);
    fn node(&self, name: &str) -> Value;
    fn statename(&self, node: &str, process: &str) -> String;
}

impl AsAdmin for FleetProc {
    fn node_names(&self) -> Vec<String> {
        let (_, v) = self.get("/api/v2/nodes/");
        v["nodes"].as_array().map_or(vec![], |ns| {
            ns.iter().filter_map(|n| n["general"]["name"].as_str().map(str::to_string)).collect()
        })
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = http(&self.addr, "GET", path, b"", Some(ADMIN));
        (s, v)
    }

    fn post(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let (s, v, _) = http(&self.addr, "POST", path, body, Some(ADMIN));
        (s, v)
    }

    fn node(&self, name: &str) -> Value {
        let (s, v) = self.get(&format!("/api/v2/nodes/{name}/"));
        assert_eq!(s, 200, "{v}");
        v["node"].clone()
    }

    fn statename(&self, node: &str, process: &str) -> String {
        let (_, v) = self.get(&format!("/api/v2/nodes/{node}/processes/{process}/"));
        v["process"]["statename"].as_str().unwrap_or("").to_string()
    }
}

const MINDERD_NODE: &str = r#"
[program.app]
command = "sleep 100"
startsecs = 0

[program.talk]
command = "sh -c 'echo hello from {dir}; exec sleep 100'"
startsecs = 0

[group.web]
programs = ["app"]
"#;

#[test]
fn a_fleet_with_minderd_supervisord_and_a_hung_node() {
    let dir = tempfile::Builder::new().prefix("minder-fleet-").tempdir().expect("a temp dir");
    let d = dir.path();
    let (d1, d2) = (d.join("m1"), d.join("m2"));
    let (_m1, sock1) = minderd(&d1, "m1", MINDERD_NODE);
    let (_m2, sock2) = minderd(&d2, "m2", MINDERD_NODE);
    // A third minderd, watched through its XML-RPC front end as if it were supervisord.
    let d3 = d.join("m3");
    let (_m3, sock3) = minderd(&d3, "m3", MINDERD_NODE);

    // supervisord 4.3.0, with the group `web` too, on TCP with Basic auth (as Cesi drives it).
    let sup_port = free_port();
    let sup_conf = d.join("supervisord.conf");
    std::fs::write(
        &sup_conf,
        format!(
            "[inet_http_server]\nport=127.0.0.1:{sup_port}\nusername=fleet\npassword=node-pw\n\
             [supervisord]\nlogfile={d}/sup.log\npidfile={d}/sup.pid\nchildlogdir={d}\nnodaemon=true\n\
             [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
             [program:app]\ncommand=sleep 100\nstartsecs=0\n\
             [program:talk]\ncommand=sh -c 'echo hello from supervisord; exec sleep 100'\nstartsecs=0\n\
             [group:web]\nprograms=app\n",
            d = d.display()
        ),
    )
    .expect("write supervisord.conf");
    let _sup = Owned(
        Command::new(supervisord_430())
            .arg("-c")
            .arg(&sup_conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("supervisord starts"),
    );

    // A node that accepts TCP (the kernel completes the handshake) and never answers, and a
    // port that refuses.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_port = hung.local_addr().expect("addr").port();
    let closed_port = free_port();

    let conf = d.join("cesi.conf.toml");
    std::fs::write(
        &conf,
        format!(
            r#"[cesi]
database = "sqlite:///{d}/users.db"
activity_log = "{d}/activity.log"
admin_username = "{user}"
admin_password = "{pw}"

[fleet]
poll_interval = 0.5
call_timeout = 1

[[nodes]]
name = "m1"
environment = "prod"
kind = "minderd"
address = "unix://{s1}"

[[nodes]]
name = "m2"
environment = "prod"
kind = "minderd"
address = "unix://{s2}"

[[nodes]]
name = "sup"
environment = "legacy"
host = "127.0.0.1"
port = {sup_port}
username = "fleet"
password = "node-pw"

[[nodes]]
name = "sup-badpw"
environment = "legacy"
host = "127.0.0.1"
port = {sup_port}
username = "fleet"
password = "wrong"

[[nodes]]
name = "m3-xmlrpc"
environment = "prod"
address = "unix://{s3}"

[[nodes]]
name = "hung"
environment = "legacy"
host = "127.0.0.1"
port = {hung_port}
username = ""
password = ""

[[nodes]]
name = "hung-grpc"
environment = "prod"
kind = "minderd"
address = "tcp://127.0.0.1:{hung_port}"

[[nodes]]
name = "closed"
environment = ""
host = "127.0.0.1"
port = {closed_port}
username = ""
password = ""
"#,
            d = d.display(),
            user = ADMIN.0,
            pw = ADMIN.1,
            s1 = sock1.display(),
            s2 = sock2.display(),
            s3 = sock3.display(),
        ),
    )
    .expect("write cesi.conf.toml");
    let f = fleet(&conf);

    // Every live node connects; the hung one is shown timed out, the closed one refused.
    wait_for("m1, m2 and supervisord to connect, hung and closed to fail", 30 * SECS, || {
        let (s, v) = f.get("/api/v2/nodes/");
        s == 200
            && v["nodes"].as_array().is_some_and(|ns| {
                ns.iter().all(|n| {
                    let g = &n["general"];
                    match g["name"].as_str() {
                        Some("hung") | Some("hung-grpc") => g["state"] == "timed_out",
                        Some("closed") => g["state"] == "refused",
                        Some("sup-badpw") => g["state"] == "unauthorized",
                        _ => g["connected"] == true && !n["processes"].as_array().is_none_or(Vec::is_empty),
                    }
                })
            })
    });
    let hung_general = f.node("hung")["general"].clone();
    assert_eq!(hung_general["connected"], false);
    assert!(
        hung_general["last_error"].as_str().is_some_and(|e| e.contains("no answer within")),
        "{hung_general}"
    );
    assert_eq!(f.node("closed")["general"]["last_error"], "connection refused");
    // No node's password is served.
    let (_, all) = f.get("/api/v2/nodes/");
    assert!(!all.to_string().contains("node-pw"), "{all}");

    // /api/v2/nodes/ answers from memory: with the hung node present, well within its deadline
    // (the hung node's own deadline is 1 s).
    let mut times: Vec<Duration> =
        (0..20).map(|_| http(&f.addr, "GET", "/api/v2/nodes/", b"", Some(ADMIN)).2).collect();
    times.sort();
    eprintln!(
        "GET /api/v2/nodes/ with a hung node, 20 requests: median {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(times[times.len() - 1] < Duration::from_millis(500), "{times:?}");

    // Cesi's shapes: a process P, environments, groups.
    for n in ["m1", "m2", "m3-xmlrpc", "sup"] {
        wait_for(&format!("{n}'s web:app RUNNING"), 10 * SECS, || f.statename(n, "web:app") == "RUNNING");
    }
    let (s, v) = f.get("/api/v2/nodes/sup/processes/web:app/");
    assert_eq!(s, 200, "{v}");
    let p = &v["process"];
    assert_eq!(
        (p["group"].as_str(), p["statename"].as_str(), p["state"].as_i64()),
        (Some("web"), Some("RUNNING"), Some(20))
    );
    assert!(
        p["pid"].as_i64().is_some_and(|pid| pid > 0)
            && p["description"].as_str().is_some_and(|d| d.starts_with("pid ")),
        "{p}"
    );
    let (_, v) = f.get("/api/v2/nodes/m1/processes/web:app/");
    assert_eq!(v["process"]["statename"], "RUNNING", "{v}");
    let (_, v) = f.get("/api/v2/nodes/m3-xmlrpc/processes/web:app/");
    let p = &v["process"];
    assert!(
        p["pid"].as_i64().is_some_and(|pid| pid > 0)
            && p["description"].as_str().is_some_and(|d| d.starts_with("pid ")),
        "{p}"
    );
    let (_, envs) = f.get("/api/v2/environments/");
    let names: Vec<&str> =
        envs["environments"].as_array().expect("a list").iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["default", "legacy", "prod"]);
    let (_, groups) = f.get("/api/v2/groups/");
    let web = groups["groups"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|g| g["name"] == "web")
        .expect("group web")
        .clone();
    assert_eq!(
        web["environments"],
        serde_json::json!([{"name": "legacy", "members": ["sup"]}, {"name": "prod", "members": ["m1", "m2", "m3-xmlrpc"]}])
    );

    // Logs: the last 500 bytes as lines, from both kinds of node.
    let (s, v) = f.get("/api/v2/nodes/sup/processes/talk:talk/log/");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["logs"]["stdout"], serde_json::json!(["hello from supervisord"]), "{v}");
    let (s, v) = f.get("/api/v2/nodes/m1/processes/talk/log/");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["logs"]["stdout"], serde_json::json!([format!("hello from {}", d1.display())]), "{v}");

    // A restart of group web across the fleet: each node's result, each process's result;
    // the nodes that are not connected are listed, not waited for.
    let pids_before: Vec<i64> = ["m1", "m2", "m3-xmlrpc", "sup"]
        .iter()
        .map(|n| {
            f.get(&format!("/api/v2/nodes/{n}/processes/web:app/")).1["process"]["pid"].as_i64().unwrap_or(0)
        })
        .collect();
    let started = Instant::now();
    let (s, v) = f.post("/api/v2/groups/web/restart", b"");
    eprintln!(
        "POST /api/v2/groups/web/restart across 4 nodes (4 more not connected): {:?}",
        started.elapsed()
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "success", "{v}");
    let nodes: Vec<&str> =
        v["nodes"].as_array().expect("a list").iter().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(nodes, ["m1", "m2", "m3-xmlrpc", "sup"], "{v}");
    for n in v["nodes"].as_array().expect("a list") {
        let ps = n["processes"].as_array().expect("processes");
        assert!(!ps.is_empty() && ps.iter().all(|p| p["status"] == "success" && p["group"] == "web"), "{n}");
    }
    let skipped: Vec<&str> =
        v["not_connected"].as_array().expect("a list").iter().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(skipped, ["sup-badpw", "hung", "hung-grpc", "closed"]);
    // The new pids show up in the API: pushed by minderd, polled from supervisord.
    for (n, before) in ["m1", "m2", "m3-xmlrpc", "sup"].iter().zip(&pids_before) {
        wait_for(&format!("{n}'s restarted web:app in the API"), 10 * SECS, || {
            let (_, v) = f.get(&format!("/api/v2/nodes/{n}/processes/web:app/"));
            v["process"]["statename"] == "RUNNING"
                && v["process"]["pid"].as_i64().is_some_and(|p| p != *before && p > 0)
        });
    }

    // A change made on a minderd node behind the fleet's back shows up in the API.
    assert!(ctl(&sock1, &["stop", "web:app"]).status.success());
    wait_for("m1's web:app STOPPED in the API", 10 * SECS, || f.statename("m1", "web:app") == "STOPPED");
    // Cesi's GET actions (and POST): one process on one node.
    let (s, v) = f.get("/api/v2/nodes/m1/processes/web:app/start/");
    assert_eq!((s, v["message"].as_str()), (200, Some("m1 web:app start event succesfully")), "{v}");
    wait_for("m1's web:app RUNNING again", 10 * SECS, || f.statename("m1", "web:app") == "RUNNING");
    let (s, v) = f.post("/api/v2/nodes/sup/processes/web:app/stop/", b"");
    assert_eq!(s, 200, "{v}");
    wait_for("sup's web:app STOPPED in the API", 10 * SECS, || f.statename("sup", "web:app") == "STOPPED");
    // A fault is the node's answer, with Cesi's 500 and the fault's text.
    let (s, v) = f.post("/api/v2/nodes/sup/processes/web:app/stop/", b"");
    assert_eq!(
        (s, v["status"].as_str(), v["message"].as_str()),
        (500, Some("error"), Some("NOT_RUNNING: web:app")),
        "{v}"
    );
    let (s, v) = f.get("/api/v2/nodes/sup/all-processes/start/");
    assert_eq!((s, v["message"].as_str()), (200, Some("ok")), "{v}");
    wait_for("sup's web:app RUNNING again", 10 * SECS, || f.statename("sup", "web:app") == "RUNNING");

    // Hostile or wrong input: refused cleanly, in JSON, and nothing reaches a node.
    let big = format!("{{\"environment\": \"{}\"}}", "x".repeat(200_000));
    let (s, v) = f.post("/api/v2/groups/web/restart", big.as_bytes());
    assert_eq!((s, v["status"].as_str()), (413, Some("error")), "{v}");
    let (s, v) = f.post("/api/v2/groups/web/restart", b"{not json");
    assert_eq!((s, v["status"].as_str()), (400, Some("error")), "{v}");
    let (s, v) = f.post("/api/v2/groups/web/restart", b"{\"nodes\": [\"m1\"]}");
    assert_eq!(s, 400, "unknown fields are refused, not ignored: {v}");
    let (s, v) = f.get("/api/v2/nodes/nosuch/");
    assert_eq!((s, v["status"].as_str()), (404, Some("error")), "{v}");
    // What a client sends is not echoed unbounded.
    let long = format!("/api/v2/environments/{}/", "x".repeat(5000));
    let (s, v) = f.get(&long);
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().len() < 200, "{v}");
    let (s, _) = f.get("/api/v2/nodes/m1/processes/web:nosuch/stop/");
    assert_eq!(s, 404);
    for path in [
        "/api/v2/nodes/..%2Fm1/",
        "/api/v2/nodes/m1/processes/..%2F..%2Fetc%2Fpasswd/",
        "/api/v2/nodes/m1/processes/web:..%2Fapp/stop/",
        "/api/v2/nodes/m1/processes/%2e%2e/start/",
        "/api/v2/groups/..%2Fweb/",
        "/api/v2/environments/..%2F..%2Fprod/",
        "/api/v2/nodes/m1/processes/a:b:c/start/",
    ] {
        let (s, v) = f.get(path);
        assert!(s == 400 || s == 404, "{path}: {s} {v}");
        assert_eq!(v["status"], "error", "{path}: {v}");
    }
    let m1_log = std::fs::read_to_string(d1.join("m1.log")).unwrap_or_default();
    assert!(
        !m1_log.contains("nosuch") && !m1_log.contains("passwd") && !m1_log.contains("a:b:c"),
        "{m1_log}"
    );
    // Actions on the unreachable nodes answer at once, with why.
    let started = Instant::now();
    let (s, v) = f.get("/api/v2/nodes/hung/all-processes/stop/");
    assert_eq!(s, 503, "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains("not connected")) && started.elapsed() < SECS,
        "{v}"
    );
    // Without the administrator's credentials, nothing.
    let (s, v, _) = http(&f.addr, "GET", "/api/v2/nodes/", b"", None);
    assert_eq!((s, v["status"].as_str()), (401, Some("error")));
    let (s, _, _) = http(&f.addr, "GET", "/api/v2/nodes/", b"", Some((ADMIN.0, "wrong")));
    assert_eq!(s, 401);

    // The fleet never logged a node's password.
    let log = f.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(!log.contains("node-pw") && !log.contains(ADMIN.1), "{log}");
    drop(hung);
}

#[test]
fn cesis_default_admin_password_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let conf = dir.path().join("cesi.conf.toml");
    // Cesi's shipped defaults/cesi.conf.toml, as it is.
    std::fs::write(
        &conf,
        "[cesi]\ndatabase = \"sqlite:///users.db\"\nactivity_log = \"activity.log\"\nadmin_username = \"admin\"\n\
         admin_password = \"admin\"\n\n[[nodes]]\nname = \"local\"\nenvironment = \"\"\nhost = \"localhost\"\n\
         port = \"9001\"\nusername = \"\"\npassword = \"\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_minder-fleet"))
        .arg("--config-file")
        .arg(&conf)
        .args(["--port", "0"])
        .output()
        .expect("minder-fleet runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5: admin_password: is Cesi's shipped default `admin`, which minder-fleet refuses: set a password of your own",
            conf.display()
        )),
        "{err}"
    );
}

/// A fake node on TCP: for each request, `respond` gets the body and gives the whole HTTP
/// response to write, or None to never answer (the connection is held). Its thread lives as
/// long as the test process.
fn fake_node(respond: impl Fn(&str) -> Option<Vec<u8>> + Send + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut reader = std::io::BufReader::new(c.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            match respond(&String::from_utf8_lossy(&body)) {
                Some(answer) => {
                    let _ = c.write_all(&answer);
                }
                None => held.push(c),
            }
        }
    });
    port
}

/// An HTTP 200 response carrying `xml`.
fn ok_xml(xml: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        xml.len()
    )
    .into_bytes();
    r.extend_from_slice(xml);
    r
}

/// A fake supervisord: it answers `getAllProcessInfo` with one process of group `web`, and
/// never answers any other call (an action that hangs on the node).
fn stalling_node() -> u16 {
    use minder::xmlrpc::{encode_response, Value as X};
    fake_node(|body| {
        body.contains("getAllProcessInfo").then(|| {
            let info = X::Array(vec![X::record([
                ("name", X::from("app")),
                ("group", X::from("web")),
                ("state", X::Int(20)),
                ("statename", X::from("RUNNING")),
                ("pid", X::Int(4242)),
                ("description", X::from("pid 4242, uptime 0:00:01")),
            ])]);
            ok_xml(encode_response(&info).as_bytes())
        })
    })
}

#[test]
fn hostile_nodes_are_shown_as_such_and_hurt_nothing_else() {
    let dir = tempfile::Builder::new().prefix("minder-fleet-").tempdir().expect("a temp dir");
    let d = dir.path();
    let (_m, sock) = minderd(d, "m", MINDERD_NODE);
    // A billion laughs, a body past the 16 MiB bound, nesting past the depth bound, an HTML
    // error page, and a fault-shaped answer with no faultCode.
    let laughs = fake_node(|_| {
        Some(ok_xml(
            b"<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>\
              <methodResponse><params><param><value>&b;</value></param></params></methodResponse>",
        ))
    });
    let huge = fake_node(|_| Some(ok_xml(&vec![b' '; 17 << 20])));
    let deep = fake_node(|_| {
        let n = 10_000;
        let xml = format!(
            "<methodResponse><params><param>{}{}</param></params></methodResponse>",
            "<value><array><data>".repeat(n),
            "</data></array></value>".repeat(n)
        );
        Some(ok_xml(xml.as_bytes()))
    });
    let html =
        fake_node(|_| Some(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 9\r\n\r\n<h1>x</h1>".to_vec()));
    let odd = fake_node(|_| {
        Some(ok_xml(b"<methodResponse><fault><value><struct></struct></value></fault></methodResponse>"))
    });
    let mut conf = format!(
        "[cesi]\nadmin_username = \"{}\"\nadmin_password = \"{}\"\n[fleet]\npoll_interval = 0.5\ncall_timeout = 2\n\
         [[nodes]]\nname = \"m\"\nkind = \"minderd\"\naddress = \"unix://{}\"\n",
        ADMIN.0,
        ADMIN.1,
        sock.display()
    );
    for (name, port) in [("laughs", laughs), ("huge", huge), ("deep", deep), ("html", html), ("odd", odd)] {
        conf.push_str(&format!("[[nodes]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\n"));
    }
    std::fs::write(d.join("fleet.toml"), conf).expect("write");
    let f = fleet(&d.join("fleet.toml"));
    let expected = [
        ("laughs", "document type declarations are not accepted"),
        ("huge", "length limit exceeded"),
        ("deep", "values nest deeper than 32 levels"),
        ("html", "HTTP 502 Bad Gateway from /RPC2"),
        ("odd", "a fault without an integer faultCode"),
    ];
    wait_for("every hostile node to be shown as a protocol error", 20 * SECS, || {
        expected.iter().all(|(n, _)| f.node(n)["general"]["state"] == "protocol_error")
    });
    for (n, why) in expected {
        let g = f.node(n)["general"].clone();
        assert!(g["last_error"].as_str().is_some_and(|e| e.contains(why)), "{n}: {g}");
        assert!(g["last_error"].as_str().is_some_and(|e| e.len() < 300), "{n}: errors do not echo much: {g}");
    }
    // The honest node is unaffected, and the API answers quickly.
    assert_eq!(f.statename("m", "web:app"), "RUNNING");
    let (s, _, took) = http(&f.addr, "GET", "/api/v2/nodes/", b"", Some(ADMIN));
    assert!(s == 200 && took < Duration::from_millis(500), "{s} {took:?}");
}

#[test]
fn a_group_action_fans_out_and_a_hanging_node_does_not_stop_the_rest() {
    let dir = tempfile::Builder::new().prefix("minder-fleet-").tempdir().expect("a temp dir");
    let d = dir.path();
    let (m1, sock1) = minderd(d, "m1", MINDERD_NODE);
    let (slow1, slow2) = (stalling_node(), stalling_node());
    // A minderd on TCP that wants tokens: the fleet has an admin one for node "tcp" and a
    // read-only one for node "tcp-ro" (it may watch, not act).
    let dt = d.join("t");
    std::fs::create_dir_all(&dt).expect("dir");
    std::fs::write(
        dt.join("tokens"),
        "fleet admin admin-token-1-long-enough\nwatcher read-only ro-token-1-long-enough\n",
    )
    .expect("tokens");
    let tcp_conf = format!("[daemon]\ntokens_file = \"{{dir}}/tokens\"\n{MINDERD_NODE}");
    let (_mt, _) = minderd_with(&dt, "t", &tcp_conf, &["--listen", "tcp://127.0.0.1:0"]);
    let mut tcp_addr = None;
    wait_for("the TCP minderd's address", 10 * SECS, || {
        let log = std::fs::read_to_string(dt.join("t.log")).unwrap_or_default();
        tcp_addr =
            log.lines().find_map(|l| l.split("listening at tcp://").nth(1).map(|a| a.trim().to_string()));
        tcp_addr.is_some()
    });
    let tcp_addr = tcp_addr.expect("an address");
    let conf = d.join("fleet.toml");
    std::fs::write(
        &conf,
        format!(
            "[cesi]\nadmin_username = \"{}\"\nadmin_password = \"{}\"\n\
             [fleet]\npoll_interval = 0.5\ncall_timeout = 1\naction_timeout = 1.5\n\
             [[nodes]]\nname = \"m1\"\nkind = \"minderd\"\naddress = \"unix://{}\"\n\
             [[nodes]]\nname = \"slow1\"\nhost = \"127.0.0.1\"\nport = {slow1}\n\
             [[nodes]]\nname = \"slow2\"\nhost = \"127.0.0.1\"\nport = {slow2}\n\
             [[nodes]]\nname = \"tcp\"\nkind = \"minderd\"\naddress = \"tcp://{tcp_addr}\"\ntoken = \"admin-token-1-long-enough\"\n\
             [[nodes]]\nname = \"tcp-ro\"\nkind = \"minderd\"\naddress = \"tcp://{tcp_addr}\"\ntoken = \"ro-token-1-long-enough\"\n",
            ADMIN.0,
            ADMIN.1,
            sock1.display()
        ),
    )
    .expect("write the configuration");
    let f = fleet(&conf);
    wait_for("every node to connect with group web", 20 * SECS, || {
        ["m1", "slow1", "slow2", "tcp", "tcp-ro"].iter().all(|n| f.statename(n, "web:app") == "RUNNING")
    });

    // The restart hangs on two nodes: both time out together (not one after the other), m1's
    // result is there, and the API keeps answering meanwhile.
    let addr = f.addr.clone();
    let action = std::thread::spawn(move || {
        let started = Instant::now();
        let (s, v, _) = http(&addr, "POST", "/api/v2/groups/web/restart/", b"", Some(ADMIN));
        (s, v, started.elapsed())
    });
    let (_, _, during) = http(&f.addr, "GET", "/api/v2/nodes/", b"", Some(ADMIN));
    let (s, v, took) = action.join().expect("the action's thread");
    eprintln!("group restart with two hanging nodes (action deadline 1.5 s): {took:?}; GET /api/v2/nodes/ meanwhile: {during:?}");
    assert!(during < Duration::from_millis(500), "{during:?}");
    assert_eq!((s, v["status"].as_str(), v["failed"].as_u64()), (200, Some("error"), Some(3)), "{v}");
    let by_node = |n: &str| {
        v["nodes"].as_array().and_then(|ns| ns.iter().find(|x| x["node"] == n)).cloned().unwrap_or_default()
    };
    assert_eq!(by_node("m1")["status"], "success", "{v}");
    assert_eq!(by_node("tcp")["status"], "success", "{v}");
    let ro = by_node("tcp-ro")["message"].as_str().unwrap_or("").to_string();
    assert!(ro.starts_with("the node does not allow this:") && ro.contains("read-only"), "{v}");
    for n in ["slow1", "slow2"] {
        assert!(by_node(n)["message"].as_str().is_some_and(|m| m.contains("no answer within 1.5s")), "{v}");
    }
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(2900),
        "concurrent, not serial: {took:?}"
    );
    // An environment that has none of the group's nodes: nothing to do, said as such.
    let (s, v) = f.post("/api/v2/groups/web/restart", b"{\"environment\": \"nowhere\"}");
    assert_eq!((s, v["status"].as_str()), (404, Some("error")), "{v}");

    // A minderd that goes away is shown so, with why and when it was last seen, and is
    // reconnected on its own when it is back (Cesi's #29).
    drop(m1);
    wait_for("m1 shown not connected", 10 * SECS, || f.node("m1")["general"]["connected"] == false);
    let general = f.node("m1")["general"].clone();
    assert!(general["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{general}");
    assert!(general["last_seen"].as_f64().is_some_and(|t| t > 0.0), "{general}");
    let (s, v) = f.get("/api/v2/nodes/m1/processes/");
    assert_eq!((s, v["status"].as_str()), (503, Some("error")), "{v}");
    let (_m1, _) = minderd(d, "m1", MINDERD_NODE);
    wait_for("m1 to reconnect", 20 * SECS, || f.statename("m1", "web:app") == "RUNNING");
}

/// A CA, a server certificate for localhost signed by it, and a client certificate, as PEM
/// files in `dir`: ca.pem, server.pem/.key, client.pem/.key.
fn pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fleet test CA");
    write("ca.pem", ca_params.self_signed(&ca_key).expect("ca").pem());
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    for (names, prefix) in [(vec!["localhost".to_string()], "server"), (vec!["fleet".to_string()], "client")]
    {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names).expect("params").signed_by(&key, &issuer).expect("leaf");
        write(&format!("{prefix}.pem"), cert.pem());
        write(&format!("{prefix}.key"), key.serialize_pem());
    }
}

#[test]
fn a_minderd_node_over_tls_with_a_token() {
    let dir = tempfile::Builder::new().prefix("minder-fleet-").tempdir().expect("a temp dir");
    let d = dir.path();
    pki(d);
    std::fs::write(d.join("tokens"), "fleet admin tls-admin-token-long-enough\n").expect("tokens");
    let conf = format!(
        "[daemon]\ntls_cert = \"{dir}/server.pem\"\ntls_key = \"{dir}/server.key\"\ntokens_file = \"{{dir}}/tokens\"\n{MINDERD_NODE}",
        dir = d.display()
    );
    let (_m, _) = minderd_with(d, "m", &conf, &["--listen", "tcp://127.0.0.1:0"]);
    let mut addr = None;
    wait_for("the TLS minderd's address", 10 * SECS, || {
        let log = std::fs::read_to_string(d.join("m.log")).unwrap_or_default();
        addr = log.lines().find_map(|l| l.split("listening at tcp://").nth(1).map(|a| a.trim().to_string()));
        addr.is_some()
    });
    let addr = addr.expect("an address");
    let port = addr.rsplit(':').next().expect("a port");
    // The same node twice: with the CA that signed its certificate, and with a CA file that is
    // not the one (its own client certificate, which signs nothing).
    std::fs::write(
        d.join("fleet.toml"),
        format!(
            "[cesi]\nadmin_username = \"{}\"\nadmin_password = \"{}\"\n[fleet]\ncall_timeout = 1\n\
             [[nodes]]\nname = \"tls\"\nkind = \"minderd\"\naddress = \"https://localhost:{port}\"\n\
             tls_ca = \"ca.pem\"\ntoken = \"tls-admin-token-long-enough\"\n\
             [[nodes]]\nname = \"wrong-ca\"\nkind = \"minderd\"\naddress = \"https://localhost:{port}\"\n\
             tls_ca = \"client.pem\"\ntoken = \"tls-admin-token-long-enough\"\n",
            ADMIN.0, ADMIN.1
        ),
    )
    .expect("write the configuration");
    let f = fleet(&d.join("fleet.toml"));
    wait_for("the TLS node to connect", 20 * SECS, || f.statename("tls", "web:app") == "RUNNING");
    wait_for("the node with the wrong CA to be refused", 20 * SECS, || {
        f.node("wrong-ca")["general"]["last_error"].as_str().is_some_and(|e| !e.is_empty())
    });
    let wrong = f.node("wrong-ca")["general"].clone();
    eprintln!("a node whose certificate the fleet does not trust: {wrong}");
    assert_eq!(wrong["connected"], false);
    assert!(wrong["last_error"].as_str().is_some_and(|e| e.contains("UnknownIssuer")), "{wrong}");
    assert!(wrong["address"].as_str().is_some_and(|a| a.starts_with("https://localhost:")), "{wrong}");
    let (s, v) = f.post("/api/v2/nodes/tls/processes/web:app/restart/", b"");
    assert_eq!(s, 200, "{v}");
}

#[test]
fn sighup_rereads_the_configuration_and_nodes_come_and_go() {
    let dir = tempfile::Builder::new().prefix("minder-fleet-").tempdir().expect("a temp dir");
    let d = dir.path();
    let (_m, sock) = minderd(d, "m", MINDERD_NODE);
    let head = format!("[cesi]\nadmin_username = \"{}\"\nadmin_password = \"{}\"\n", ADMIN.0, ADMIN.1);
    let grpc =
        format!("[[nodes]]\nname = \"a\"\nkind = \"minderd\"\naddress = \"unix://{}\"\n", sock.display());
    let xml = format!("[[nodes]]\nname = \"b\"\naddress = \"unix://{}\"\n", sock.display());
    let conf = d.join("fleet.toml");
    std::fs::write(&conf, format!("{head}{grpc}")).expect("write");
    let f = fleet(&conf);
    wait_for("a to connect", 10 * SECS, || f.statename("a", "web:app") == "RUNNING");

    // A node added: it starts; the unchanged one keeps its task (and connection).
    std::fs::write(&conf, format!("{head}{grpc}{xml}")).expect("write");
    f.hup();
    wait_for("b to join and connect", 10 * SECS, || f.statename("b", "web:app") == "RUNNING");
    assert_eq!(f.node_names(), ["a", "b"]);
    wait_for("the reload in the log", 10 * SECS, || f.log().contains("kept=1 started=1 stopped=0"));

    // A configuration that does not load changes nothing, and says why.
    std::fs::write(&conf, format!("{head}{grpc}{xml}[[nodes]]\nname = \"c\"\n")).expect("write");
    f.hup();
    wait_for("the refusal in the log", 10 * SECS, || f.log().contains("the configuration was not reloaded"));
    assert!(f.log().contains("every [[nodes]] needs host and port"), "{}", f.log());
    assert_eq!(f.node_names(), ["a", "b"]);

    // A node removed: it is gone from the API, and the other stays.
    std::fs::write(&conf, format!("{head}{xml}")).expect("write");
    f.hup();
    wait_for("a to leave", 10 * SECS, || f.node_names() == ["b"]);
    assert_eq!(f.statename("b", "web:app"), "RUNNING");
    let (s, _) = f.get("/api/v2/nodes/a/");
    assert_eq!(s, 404);
}

#[test]
fn nodes_are_discovered_from_dns_and_leave_with_their_entry() {
    let dir = tempfile::Builder::new().prefix("minder-fleet-").tempdir().expect("a temp dir");
    let d = dir.path();
    let port = free_port();
    let (_m, _sock) = minderd_with(d, "m", MINDERD_NODE, &["--listen", &format!("tcp://127.0.0.1:{port}")]);
    let head = format!("[cesi]\nadmin_username = \"{}\"\nadmin_password = \"{}\"\n", ADMIN.0, ADMIN.1);
    // `localhost` stands for a headless Service: every address it has is a node.
    let discover = format!(
        "[[discover]]\nname = \"lh\"\ndns = \"localhost\"\nport = {port}\nenvironment = \"k8s\"\ninterval = 1\n"
    );
    let conf = d.join("fleet.toml");
    std::fs::write(&conf, format!("{head}{discover}")).expect("write");
    let f = fleet(&conf);
    wait_for("the discovered node to connect", 10 * SECS, || {
        f.statename("lh-127-0-0-1", "web:app") == "RUNNING"
    });
    let node = f.node("lh-127-0-0-1");
    assert_eq!(node["general"]["environment"], "k8s", "{node}");
    assert!(f.log().contains("discovered nodes changed"), "{}", f.log());
    // Only the name's addresses: nothing else appeared.
    assert!(f.node_names().iter().all(|n| n.starts_with("lh-")), "{:?}", f.node_names());

    // The entry removed: its nodes go at the reload.
    std::fs::write(&conf, &head).expect("write");
    f.hup();
    wait_for("the discovered nodes to leave", 10 * SECS, || f.node_names().is_empty());
}
