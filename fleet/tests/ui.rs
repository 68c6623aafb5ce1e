//! The fleet's live streams and pages, end to end: the real `minder-fleet` binary over real
//! minderd nodes (gRPC, and one watched through minderd's XML-RPC front end as supervisord
//! would be), read by a raw HTTP client. Every wait polls a condition up to a deadline.
//!
//! The browser test (`fleet_browser.py`, headless Chromium) is at the end.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use serde_json::Value;

const ADMIN: (&str, &str) = ("admin", "ui-test-pw");

/// A program that writes a numbered line every 0.1 s, and one that just runs.
const NODE: &str = r#"
[program.app]
command = "sleep 1000"
startsecs = 0

[program.talk]
command = "sh -c 'i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.1; done'"
startsecs = 0

[group.web]
programs = ["app"]
"#;

/// A fleet of two minderd nodes over gRPC and the second one again over XML-RPC.
struct Setup {
    _dir: tempfile::TempDir,
    _nodes: Vec<Owned>,
    socks: Vec<PathBuf>,
    fleet: FleetProc,
}

fn setup() -> Setup {
    let dir = tempfile::Builder::new().prefix("minder-fleet-ui-").tempdir().expect("a temp dir");
    let d = dir.path().to_path_buf();
    let (m1, s1) = minderd(&d.join("m1"), "m1", NODE);
    let (m2, s2) = minderd(&d.join("m2"), "m2", NODE);
    let conf = d.join("fleet.toml");
    std::fs::write(
        &conf,
        format!(
            r#"[cesi]
database = "sqlite:///{d}/users.db"
admin_username = "{user}"
admin_password = "{pw}"

[fleet]
poll_interval = 0.2
call_timeout = 2

[[nodes]]
name = "m1"
environment = "prod"
kind = "minderd"
address = "unix://{s1}"

[[nodes]]
name = "m2"
environment = "staging"
kind = "minderd"
address = "unix://{s2}"

[[nodes]]
name = "m2-xmlrpc"
environment = "legacy"
address = "unix://{s2}"
"#,
            d = d.display(),
            user = ADMIN.0,
            pw = ADMIN.1,
            s1 = s1.display(),
            s2 = s2.display(),
        ),
    )
    .expect("write the configuration");
    let fleet = fleet(&conf);
    Setup { _dir: dir, _nodes: vec![m1, m2], socks: vec![s1, s2], fleet }
}

/// An `Authorization` header line for Basic auth.
fn auth_line((u, p): (&str, &str)) -> String {
    format!("Authorization: {}\r\n", basic(u, p))
}

/// One GET; the status and the body.
fn http(addr: &str, path: &str, auth: Option<(&str, &str)>) -> (u16, String) {
    let auth = auth.map(|(u, p)| basic(u, p));
    let headers: Vec<_> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let a = request(addr, "GET", path, &headers, b"");
    (a.status, a.body)
}

/// An SSE client: the events it got so far, as (event, data, when), read by a thread.
struct Sse {
    status: u16,
    events: Arc<Mutex<Vec<(String, String, Instant)>>>,
    stream: TcpStream,
}

impl Sse {
    fn open(addr: &str, path: &str, auth: (&str, &str)) -> Sse {
        let mut s = TcpStream::connect(addr).expect("connect to the fleet");
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{}\r\n",
            auth_line(auth)
        );
        s.write_all(head.as_bytes()).expect("write");
        let mut reader = BufReader::new(s.try_clone().expect("clone"));
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("a status line");
        let status = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            // Chunked framing is skipped over: only `event:` and `data:` lines matter.
            let (mut event, mut data) = (String::new(), String::new());
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push((
                            "<end>".into(),
                            String::new(),
                            Instant::now(),
                        ));
                        return;
                    }
                    Ok(_) => {}
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if let Some(e) = l.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = l.strip_prefix("data: ") {
                    data = d.to_string();
                } else if l.is_empty() && !event.is_empty() {
                    let got = (std::mem::take(&mut event), std::mem::take(&mut data), Instant::now());
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(got);
                }
            }
        });
        Sse { status, events, stream: s }
    }

    fn events(&self) -> Vec<(String, Value, Instant)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(e, d, t)| (e.clone(), serde_json::from_str(d).unwrap_or(Value::Null), *t))
            .collect()
    }

    fn ended(&self) -> bool {
        self.events().iter().any(|(e, _, _)| e == "<end>")
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Every node's connection state and process states, replayed from the events.
fn replay(
    events: &[(String, Value, Instant)],
) -> std::collections::BTreeMap<String, (bool, Vec<(String, String)>)> {
    let mut nodes = std::collections::BTreeMap::new();
    let procs = |ps: &Value| -> Vec<(String, String)> {
        ps.as_array().map_or(vec![], |a| {
            a.iter()
                .map(|p| {
                    (
                        format!("{}:{}", p["group"].as_str().unwrap_or(""), p["name"].as_str().unwrap_or("")),
                        p["statename"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
    };
    for (e, v, _) in events {
        match e.as_str() {
            "snapshot" => {
                nodes.clear();
                for n in v["nodes"].as_array().into_iter().flatten() {
                    let name = n["general"]["name"].as_str().unwrap_or("").to_string();
                    nodes.insert(name, (n["general"]["connected"] == true, procs(&n["processes"])));
                }
            }
            "node" => {
                let name = v["general"]["name"].as_str().unwrap_or("").to_string();
                let entry = nodes.entry(name).or_insert((false, vec![]));
                entry.0 = v["general"]["connected"] == true;
                if v.get("processes").is_some() {
                    entry.1 = procs(&v["processes"]);
                }
            }
            "process" => {
                let name = v["node"].as_str().unwrap_or("").to_string();
                let p = &v["process"];
                let full =
                    format!("{}:{}", p["group"].as_str().unwrap_or(""), p["name"].as_str().unwrap_or(""));
                if let Some(entry) = nodes.get_mut(&name) {
                    if let Some(slot) = entry.1.iter_mut().find(|(n, _)| *n == full) {
                        slot.1 = p["statename"].as_str().unwrap_or("").to_string();
                    }
                }
            }
            _ => {}
        }
    }
    nodes
}

fn state_of(events: &[(String, Value, Instant)], node: &str, process: &str) -> Option<String> {
    replay(events).get(node).and_then(|(_, ps)| ps.iter().find(|(n, _)| n == process).map(|(_, s)| s.clone()))
}

#[test]
fn a_state_change_on_a_node_reaches_an_event_stream_client() {
    let mut s = setup();
    let f = &s.fleet;
    let sse = Sse::open(&f.addr, "/api/fleet/events", ADMIN);
    assert_eq!(sse.status, 200);
    wait_for("a snapshot, then every node connected with web:app RUNNING", 20 * SECS, || {
        let ev = sse.events();
        ev.first().is_some_and(|(e, _, _)| e == "snapshot")
            && ["m1", "m2", "m2-xmlrpc"]
                .iter()
                .all(|n| state_of(&ev, n, "web:app").as_deref() == Some("RUNNING"))
    });
    let before = sse.events().len();

    // A stop made behind the fleet's back, on m1 alone: pushed by m1's WatchEvents to the
    // fleet, and by the fleet to this client.
    let out = ctl(&s.socks[0], &["stop", "web:app"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stopped = Instant::now();
    wait_for("m1's web:app STOPPED in the stream", 10 * SECS, || {
        state_of(&sse.events(), "m1", "web:app").as_deref() == Some("STOPPED")
    });
    let ev = sse.events();
    let at = ev[before..]
        .iter()
        .find(|(e, v, _)| e == "process" && v["node"] == "m1" && v["process"]["statename"] == "STOPPED")
        .map(|(_, _, t)| *t)
        .expect("a process event for m1");
    eprintln!(
        "a stop on a minderd node reached an SSE client {:?} after the stop command returned",
        at.saturating_duration_since(stopped)
    );
    // m2 was not touched: no event says it changed, and it is still RUNNING.
    assert!(
        !ev[before..].iter().any(|(e, v, _)| e == "process" && v["node"] == "m2"),
        "an event about m2: {:?}",
        &ev[before..]
    );
    assert_eq!(state_of(&ev, "m2", "web:app").as_deref(), Some("RUNNING"));

    // A change on m2, seen both through gRPC (pushed) and XML-RPC (polled, 0.2 s).
    assert!(ctl(&s.socks[1], &["stop", "web:app"]).status.success());
    wait_for("m2 and m2-xmlrpc's web:app STOPPED in the stream", 10 * SECS, || {
        let ev = sse.events();
        state_of(&ev, "m2", "web:app").as_deref() == Some("STOPPED")
            && state_of(&ev, "m2-xmlrpc", "web:app").as_deref() == Some("STOPPED")
    });

    // A node going away is a node event (disconnected, its processes gone), not silence.
    drop(s._nodes.remove(0));
    wait_for("m1 shown disconnected", 20 * SECS, || {
        replay(&sse.events()).get("m1").is_some_and(|(up, ps)| !up && ps.is_empty())
    });

    // Polled nodes do not flood the stream: in one second of 5 polls of m2-xmlrpc with nothing
    // changing (uptimes move), no process event.
    let quiet = sse.events().len();
    std::thread::sleep(SECS); // a measured window, not synchronisation
    let noise: Vec<_> = sse.events()[quiet..].iter().filter(|(e, _, _)| e == "process").cloned().collect();
    assert!(noise.is_empty(), "events without a change: {noise:?}");

    // SIGHUP: a node leaves and another joins; the client is sent the fleet as it now is.
    let conf = s._dir.path().join("fleet.toml");
    let text = std::fs::read_to_string(&conf).expect("read the configuration");
    let text = text.replace(
        "name = \"m2-xmlrpc\"\nenvironment = \"legacy\"\n",
        "name = \"m2-again\"\nenvironment = \"legacy\"\nkind = \"minderd\"\n",
    );
    std::fs::write(&conf, text).expect("write the configuration");
    f.hup();
    wait_for("m2-xmlrpc gone and m2-again connected in the stream", 20 * SECS, || {
        let nodes = replay(&sse.events());
        !nodes.contains_key("m2-xmlrpc")
            && nodes.get("m2-again").is_some_and(|(up, ps)| *up && !ps.is_empty())
    });

    // Shutdown ends the stream, and the fleet exits promptly though a client still listens.
    let t = Instant::now();
    let child = &mut s.fleet.child;
    child.term();
    wait_for("the stream to end at shutdown", 10 * SECS, || sse.ended());
    wait_for("the fleet to exit", 10 * SECS, || matches!(child.0.try_wait(), Ok(Some(_))));
    eprintln!("the fleet shut down with an open event stream in {:?}", t.elapsed());
}

/// The numbers of `line N` lines among the events.
fn numbers(events: &[(String, Value, Instant)]) -> Vec<u64> {
    events
        .iter()
        .filter(|(e, _, _)| e == "line")
        .filter_map(|(_, v, _)| {
            v.as_str().and_then(|l| l.strip_prefix("line ")).and_then(|n| n.split(' ').next()?.parse().ok())
        })
        .collect()
}

#[test]
fn a_log_is_followed_from_both_kinds_of_node_and_names_are_checked() {
    let s = setup();
    let f = &s.fleet;
    wait_for("the nodes to connect", 20 * SECS, || {
        let (_, body) = http(&f.addr, "/api/v2/nodes/m2-xmlrpc/processes/talk:talk/", Some(ADMIN));
        let (_, b1) = http(&f.addr, "/api/v2/nodes/m1/processes/talk:talk/", Some(ADMIN));
        body.contains("\"RUNNING\"") && b1.contains("\"RUNNING\"")
    });
    for node in ["m1", "m2-xmlrpc"] {
        let sse = Sse::open(
            &f.addr,
            &format!("/api/fleet/nodes/{node}/processes/talk:talk/log/stream?channel=stdout"),
            ADMIN,
        );
        assert_eq!(sse.status, 200, "{node}");
        wait_for(&format!("{node}: the first lines"), 10 * SECS, || !numbers(&sse.events()).is_empty());
        let first = numbers(&sse.events());
        let last_seen = *first.last().expect("a line");
        // Lines the program writes after the view opened arrive, in order, without gaps.
        wait_for(&format!("{node}: line {}", last_seen + 5), 10 * SECS, || {
            numbers(&sse.events()).contains(&(last_seen + 5))
        });
        let all = numbers(&sse.events());
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{node}: lines out of order or missing: {all:?}");
        // The first line shown is whole (the tail starts inside one, which is dropped).
        assert!(first[0] > 0, "{node}: {first:?}");
    }
    // stderr of a program that writes none: a stream with no lines (but a 200).
    let sse = Sse::open(&f.addr, "/api/fleet/nodes/m1/processes/talk:talk/log/stream?channel=stderr", ADMIN);
    assert_eq!(sse.status, 200);

    // Names are checked before anything reaches a node.
    for (path, want) in [
        ("/api/fleet/nodes/nope/processes/talk:talk/log/stream", 404),
        ("/api/fleet/nodes/m1/processes/nope:nope/log/stream", 404),
        ("/api/fleet/nodes/m1/processes/..%2F..%2Fetc%2Fpasswd/log/stream", 400),
        ("/api/fleet/nodes/m1/processes/talk:talk/log/stream?channel=/etc/passwd", 400),
        ("/api/fleet/nodes/m1/processes/talk:talk/log/stream?channel=stdout", 401),
        ("/api/fleet/events", 401),
    ] {
        let auth = if want == 401 { None } else { Some(ADMIN) };
        let (status, body) = http(&f.addr, path, auth);
        assert_eq!(status, want, "{path}: {body}");
    }
    assert!(!f.stderr.lock().unwrap_or_else(|e| e.into_inner()).contains("panicked"));
}

/// Adds a user with the fleet's own command line (the password on standard input).
fn add_user(conf: &std::path::Path, name: &str, password: &str, role: &str, environments: &[&str]) {
    let mut args = vec!["add", name, "--role", role];
    for e in environments {
        args.extend(["--environment", e]);
    }
    let out = user_cli(conf, &args, &format!("{password}\n"));
    assert!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_viewer_streams_only_its_environments_and_its_page_offers_no_action() {
    let s = setup();
    let f = &s.fleet;
    let conf = s._dir.path().join("fleet.toml");
    add_user(&conf, "watcher", "watcher-pw", "viewer", &["prod"]);
    let viewer = ("watcher", "watcher-pw");

    // The page says who may act; its script draws actions only for them.
    let (status, page) = http(&f.addr, "/", Some(viewer));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-readonly=\"true\"") && page.contains("data-mode=\"fleet\""), "{page}");
    let (_, admin_page) = http(&f.addr, "/", Some(ADMIN));
    assert!(admin_page.contains("data-readonly=\"false\""));
    // Without a session, the page sends the browser to the login form (relative), which is
    // served with the shared assets.
    let (status, _) = http(&f.addr, "/", None);
    assert_eq!(status, 303);
    let (status, login) = http(&f.addr, "/login", None);
    assert!(
        status == 200 && login.contains("data-mode=\"login\"") && login.contains("api/v2/auth/login/"),
        "{login}"
    );
    let (status, js) = http(&f.addr, "/assets/minder.js", None);
    assert!(status == 200 && js.contains("dataset.mode !== 'fleet'"), "{status}");

    // The viewer's stream: only prod's node, and only its changes.
    let sse = Sse::open(&f.addr, "/api/fleet/events", viewer);
    assert_eq!(sse.status, 200);
    wait_for("the viewer's snapshot with m1 RUNNING", 20 * SECS, || {
        state_of(&sse.events(), "m1", "web:app").as_deref() == Some("RUNNING")
    });
    assert_eq!(replay(&sse.events()).keys().collect::<Vec<_>>(), ["m1"], "{:?}", sse.events());
    assert!(ctl(&s.socks[1], &["stop", "web:app"]).status.success());
    assert!(ctl(&s.socks[0], &["stop", "web:app"]).status.success());
    wait_for("m1's change in the viewer's stream", 10 * SECS, || {
        state_of(&sse.events(), "m1", "web:app").as_deref() == Some("STOPPED")
    });
    // An admin's stream, opened now, sees m2's stop: it happened, and was not sent to the viewer.
    let all = Sse::open(&f.addr, "/api/fleet/events", ADMIN);
    wait_for("m2 STOPPED in the admin's stream", 10 * SECS, || {
        state_of(&all.events(), "m2", "web:app").as_deref() == Some("STOPPED")
    });
    assert!(
        !sse.events()
            .iter()
            .any(|(e, v, _)| v.to_string().contains("\"m2") || (e == "node" && v["general"]["name"] != "m1")),
        "the viewer was told of another environment: {:?}",
        sse.events()
    );

    // A viewer may follow a log of its environment; another environment's node is not there.
    let log = Sse::open(&f.addr, "/api/fleet/nodes/m1/processes/talk:talk/log/stream", viewer);
    assert_eq!(log.status, 200);
    wait_for("the viewer's log lines", 10 * SECS, || !numbers(&log.events()).is_empty());
    let (status, _) = http(&f.addr, "/api/fleet/nodes/m2/processes/talk:talk/log/stream", Some(viewer));
    assert_eq!(status, 404);
}

/// The UI in a real browser: headless Chromium driven by `fleet_browser.py` (chromedriver's
/// WebDriver API, as tests/e2e/web_browser.py drives minderd's page). scripts/test installs
/// Chromium; without it this test fails and says so.
#[test]
fn the_fleet_in_headless_chromium() {
    let have = |b: &str| {
        Command::new("sh").arg("-c").arg(format!("command -v {b}")).output().is_ok_and(|o| o.status.success())
    };
    assert!(
        have("chromedriver") && have("chromium"),
        "chromium and chromedriver are not installed: scripts/test installs them (apt-get install chromium chromium-driver)"
    );
    let s = setup();
    let f = &s.fleet;
    let dir = s._dir.path();
    add_user(&dir.join("fleet.toml"), "watcher", "watcher-pw", "viewer", &[]);
    let script = dir.join("fleet_browser.py");
    std::fs::write(&script, include_str!("fleet_browser.py")).expect("write the script");
    // Its WebDriver client, shared with minderd's browser test: next to it, for `import`.
    std::fs::write(dir.join("webdriver.py"), include_str!("../../tests/e2e/webdriver.py"))
        .expect("write the module");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&f.addr)
        .arg(bin("minder"))
        .arg(&s.socks[0])
        .arg(&s.socks[1])
        .arg(dir)
        .arg(format!("{}:{}", ADMIN.0, ADMIN.1))
        .arg("watcher:watcher-pw")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "stdout:\n{stdout}\nstderr:\n{}\nfleet log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        f.stderr.lock().unwrap_or_else(|e| e.into_inner())
    );
    print!("{stdout}");
}

#[test]
fn a_real_supervisord_log_is_followed_across_its_rotation() {
    let dir = tempfile::Builder::new().prefix("minder-fleet-ui-sup-").tempdir().expect("a temp dir");
    let d = dir.path();
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port").port();
    let sup_conf = d.join("supervisord.conf");
    // About 100 bytes a line, 20 lines a second, rotated at 4 KB: a rotation every 2 s.
    std::fs::write(
        &sup_conf,
        format!(
            "[inet_http_server]\nport=127.0.0.1:{port}\nusername=fleet\npassword=node-pw\n\
             [supervisord]\nlogfile={d}/sup.log\npidfile={d}/sup.pid\nchildlogdir={d}\nnodaemon=true\n\
             [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
             [program:talk]\ncommand=sh -c 'i=0; while true; do i=$((i+1)); echo \"line $i {pad}\"; sleep 0.05; done'\n\
             startsecs=0\nstdout_logfile={d}/talk.log\nstdout_logfile_maxbytes=4KB\nstdout_logfile_backups=1\n",
            d = d.display(),
            pad = "x".repeat(90),
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
    let conf = d.join("cesi.conf.toml");
    std::fs::write(
        &conf,
        format!(
            "[cesi]\ndatabase = \"sqlite:///{d}/users.db\"\nadmin_username = \"{u}\"\nadmin_password = \"{p}\"\n\
             [fleet]\npoll_interval = 0.2\ncall_timeout = 2\n\
             [[nodes]]\nname = \"sup\"\nenvironment = \"legacy\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             username = \"fleet\"\npassword = \"node-pw\"\n",
            d = d.display(),
            u = ADMIN.0,
            p = ADMIN.1,
        ),
    )
    .expect("write cesi.conf.toml");
    let f = fleet(&conf);
    wait_for("supervisord's talk RUNNING in the fleet", 20 * SECS, || {
        http(&f.addr, "/api/v2/nodes/sup/processes/talk:talk/", Some(ADMIN)).1.contains("\"RUNNING\"")
    });
    let sse = Sse::open(&f.addr, "/api/fleet/nodes/sup/processes/talk:talk/log/stream?channel=stdout", ADMIN);
    assert_eq!(sse.status, 200);
    wait_for("a rotation told, and lines after it", 20 * SECS, || {
        let ev = sse.events();
        ev.iter()
            .position(|(e, v, _)| e == "skipped" && v["rotated"] == true)
            .is_some_and(|i| numbers(&ev[i..]).len() >= 5)
    });
    let ev = sse.events();
    let all = numbers(&ev);
    // In order; a gap only where a rotation or an overflow was told.
    let mut last = 0;
    for (e, v, _) in &ev {
        match e.as_str() {
            "skipped" => last = 0,
            "line" => {
                let n = numbers(&[(e.clone(), v.clone(), Instant::now())])[0];
                assert!(
                    last == 0 || n == last + 1,
                    "line {n} after line {last} with nothing skipped: {all:?}"
                );
                last = n;
            }
            _ => {}
        }
    }
    // Each line is whole: the tail's first, partial line was dropped.
    for (e, v, _) in &ev {
        if e == "line" {
            assert!(v.as_str().is_some_and(|l| l.starts_with("line ") && l.ends_with("xxx")), "{v}");
        }
    }
}
