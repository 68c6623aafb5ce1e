//! Supervisor's event listeners under minderd: a listener written with Supervisor's own
//! `supervisor.childutils` (tests/e2e/listener.py) and superlance 2.0.0's crashmail, memmon
//! and httpok from PyPI, run as `[eventlistener:x]` pools. Both come from a virtualenv that
//! bench/minderbench/prepare.py makes on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{rss_kib, wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);

/// The bin directory of the superlance 2.0.0 virtualenv (with supervisor 4.3.0 in it).
fn superlance_bin() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .current_dir(root)
        .args([
            "-c",
            "import sys; sys.path.insert(0, 'bench'); from minderbench.prepare import superlance_venv; print(superlance_venv())",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "making the superlance virtualenv failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Starts a daemon whose configuration may name `{py}` (the virtualenv's python) and `{bin}`
/// (its bin directory), with listener.py in its directory.
fn daemon(toml: &str, files: &[(&str, &str)]) -> (Daemon, PathBuf) {
    let bin = superlance_bin();
    let toml = toml
        .replace("{py}", &bin.join("python").display().to_string())
        .replace("{bin}", &bin.display().to_string());
    let mut all = vec![("listener.py", include_str!("listener.py"))];
    all.extend_from_slice(files);
    (Daemon::start_with(&toml, &all, &[]), bin)
}

/// Calls minderd's XML-RPC interface through supervisor.childutils, as a listener does.
fn rpc(d: &Daemon, bin: &Path, code: &str) {
    let script = format!(
        "from supervisor import childutils\nr = childutils.getRPCInterface({{'SUPERVISOR_SERVER_URL': 'unix://{}'}})\n{code}\n",
        d.socket.display()
    );
    let out = Command::new(bin.join("python")).arg("-c").arg(script).output().expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The events listener.py recorded so far.
fn recorded(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["headers"]["eventname"] == name).collect()
}

fn pid_of(d: &Daemon, name: &str) -> u64 {
    d.process(name)["pid"].as_u64().unwrap_or(0)
}

const TALK: &str = "import sys, time\n\
sys.stdout.write('before <!--XSUPERVISOR:BEGIN-->hello comm<!--XSUPERVISOR:END--> after\\n')\n\
sys.stdout.flush()\n\
time.sleep(100)\n";

#[test]
fn a_childutils_listener_gets_state_tick_communication_and_remote_events() {
    let (d, bin) = daemon(
        "[daemon]\nidentifier = \"box1\"\n\
         [eventlistener.watch]\ncommand = \"{py} {dir}/listener.py {dir}/events.jsonl ok\"\n\
         events = \"PROCESS_STATE,TICK_5,PROCESS_COMMUNICATION,REMOTE_COMMUNICATION\"\n\
         buffer_size = 100\nstderr_logfile = \"{dir}/watch.err\"\n\
         [program.talk]\ncommand = \"python3 {dir}/talk.py\"\nstartsecs = 0\n\
         stdout_capture_maxbytes = \"1MB\"\nstdout_logfile = \"{dir}/talk.log\"\n",
        &[("talk.py", TALK)],
    );
    // What used to be warned about as not implemented works now, and is not warned about.
    for warned in ["not implemented yet", "not supported yet"] {
        assert!(!d.log().contains(warned), "{}", d.log());
    }
    let record = d.path("events.jsonl");
    wait_for("the communication event", 20 * SECS, || {
        !named(&recorded(&record), "PROCESS_COMMUNICATION_STDOUT").is_empty()
    });
    let talk = pid_of(&d, "talk");
    let events = recorded(&record);
    let comm = named(&events, "PROCESS_COMMUNICATION_STDOUT");
    assert_eq!(comm[0]["payload"], format!("processname:talk groupname:talk pid:{talk}\nhello comm"));
    // What was between the markers is the event's, not the log's; what follows the end
    // marker is held back while it is shorter than a marker, as supervisord holds it (until
    // the pipe closes, below).
    let log = std::fs::read_to_string(d.path("talk.log")).expect("talk's log");
    assert_eq!(log, "before ");

    let state = |name: &str, who: &str| -> Vec<String> {
        named(&recorded(&record), name)
            .iter()
            .filter_map(|e| e["payload"].as_str())
            .filter(|p| p.starts_with(&format!("processname:{who} ")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        state("PROCESS_STATE_STARTING", "talk"),
        ["processname:talk groupname:talk from_state:STOPPED tries:0"]
    );
    assert_eq!(
        state("PROCESS_STATE_RUNNING", "talk"),
        [format!("processname:talk groupname:talk from_state:STARTING pid:{talk}")]
    );
    // As supervisord, a pool hears of its own listeners' state changes.
    wait_for("the listener's own RUNNING event", 10 * SECS, || {
        !state("PROCESS_STATE_RUNNING", "watch").is_empty()
    });

    rpc(&d, &bin, "r.supervisor.sendRemoteCommEvent('greeting', 'hi there')");
    wait_for("the remote event", 10 * SECS, || !named(&recorded(&record), "REMOTE_COMMUNICATION").is_empty());
    assert_eq!(named(&recorded(&record), "REMOTE_COMMUNICATION")[0]["payload"], "type:greeting\nhi there");

    // A stop and the exit it causes: STOPPING then STOPPED, with the pid.
    assert!(d.ctl(&["stop", "talk"]).status.success());
    wait_for("talk's STOPPED event", 10 * SECS, || !state("PROCESS_STATE_STOPPED", "talk").is_empty());
    assert_eq!(
        state("PROCESS_STATE_STOPPING", "talk"),
        [format!("processname:talk groupname:talk from_state:RUNNING pid:{talk}")]
    );
    assert_eq!(
        state("PROCESS_STATE_STOPPED", "talk"),
        [format!("processname:talk groupname:talk from_state:STOPPING pid:{talk}")]
    );
    wait_for("the rest of talk's output in its log", 10 * SECS, || {
        std::fs::read_to_string(d.path("talk.log")).is_ok_and(|l| l == "before  after\n")
    });

    wait_for("a TICK_5", 15 * SECS, || !named(&recorded(&record), "TICK_5").is_empty());
    let events = recorded(&record);
    let tick = named(&events, "TICK_5")[0]["payload"].as_str().expect("a payload").to_string();
    let when: u64 = tick.strip_prefix("when:").and_then(|w| w.parse().ok()).expect("when:N");
    assert_eq!(when % 5, 0, "{tick}");

    // Every envelope: version, this daemon's identifier, the pool, and a length that is the
    // payload's; serials grow one by one in the pool.
    for (i, e) in events.iter().enumerate() {
        let h = &e["headers"];
        assert_eq!(h["ver"], "3.0");
        assert_eq!(h["server"], "box1");
        assert_eq!(h["pool"], "watch");
        let len: usize = h["len"].as_str().and_then(|l| l.parse().ok()).expect("len");
        assert_eq!(len, e["payload"].as_str().expect("payload").chars().count());
        assert_eq!(h["poolserial"], i.to_string(), "{events:#?}");
    }
}

#[test]
fn a_rejected_event_comes_again() {
    let (d, bin) = daemon(
        "[eventlistener.watch]\ncommand = \"{py} {dir}/listener.py {dir}/events.jsonl fail-once REMOTE_COMMUNICATION\"\n\
         events = \"REMOTE_COMMUNICATION\"\nstartsecs = 0\n",
        &[],
    );
    d.wait_state("watch", "RUNNING", 10 * SECS);
    rpc(&d, &bin, "r.supervisor.sendRemoteCommEvent('t', 'again')");
    let record = d.path("events.jsonl");
    wait_for("the event twice", 10 * SECS, || named(&recorded(&record), "REMOTE_COMMUNICATION").len() >= 2);
    let events = recorded(&record);
    let got = named(&events, "REMOTE_COMMUNICATION");
    assert_eq!(got[0]["headers"]["serial"], got[1]["headers"]["serial"], "the same event, sent again");
    assert_eq!(got[1]["payload"], "type:t\nagain");
    assert!(d.log().contains("watch: event was rejected"), "{}", d.log());
}

#[test]
fn a_listener_killed_mid_event_gets_it_again_after_its_restart() {
    let (d, bin) = daemon(
        "[eventlistener.watch]\ncommand = \"{py} {dir}/listener.py {dir}/events.jsonl hang-once REMOTE_COMMUNICATION\"\n\
         events = \"REMOTE_COMMUNICATION\"\nstartsecs = 0\nautorestart = true\n",
        &[],
    );
    d.wait_state("watch", "RUNNING", 10 * SECS);
    rpc(&d, &bin, "r.supervisor.sendRemoteCommEvent('t', 'precious')");
    let record = d.path("events.jsonl");
    wait_for("the listener to have the event", 10 * SECS, || d.path("events.jsonl.hung").exists());
    let first = pid_of(&d, "watch");
    assert!(d.ctl(&["signal", "KILL", "watch"]).status.success());
    wait_for("the event again", 20 * SECS, || named(&recorded(&record), "REMOTE_COMMUNICATION").len() >= 2);
    let events = recorded(&record);
    let got = named(&events, "REMOTE_COMMUNICATION");
    assert_eq!(got[0]["pid"], first);
    assert_ne!(got[1]["pid"], first, "the restarted listener got it");
    assert_eq!(got[0]["headers"]["serial"], got[1]["headers"]["serial"]);
    assert_eq!(got[1]["payload"], "type:t\nprecious");
}

#[test]
fn a_full_buffer_drops_the_oldest_and_says_so() {
    let (d, bin) = daemon(
        "[eventlistener.watch]\ncommand = \"{py} {dir}/listener.py {dir}/events.jsonl wait-for {dir}/go\"\n\
         events = \"REMOTE_COMMUNICATION\"\nstartsecs = 0\nbuffer_size = 2\n",
        &[],
    );
    d.wait_state("watch", "RUNNING", 10 * SECS);
    rpc(&d, &bin, "for i in range(5): r.supervisor.sendRemoteCommEvent('t', 'm%d' % i)");
    for serial in 0..3 {
        let line = format!("pool watch event buffer overflowed, discarding event {serial}");
        wait_for(&line, 10 * SECS, || d.log().contains(&line));
    }
    assert!(!d.log().contains("discarding event 3"), "{}", d.log());
    std::fs::write(d.path("go"), "").expect("write go");
    let record = d.path("events.jsonl");
    wait_for("the two newest", 10 * SECS, || recorded(&record).len() >= 2);
    let payloads: Vec<_> = recorded(&record).iter().map(|e| e["payload"].clone()).collect();
    assert_eq!(payloads, ["type:t\nm3", "type:t\nm4"]);
}

#[test]
fn crashmail_mails_about_a_program_killed_unexpectedly() {
    let (d, _) = daemon(
        "[eventlistener.crashmail]\ncommand = \"{bin}/crashmail -a -m ops@example.com -s 'cat >> {dir}/mail.txt'\"\n\
         events = \"PROCESS_STATE_EXITED\"\nstderr_logfile = \"{dir}/crashmail.err\"\n\
         [program.victim]\ncommand = \"sleep 100\"\nstartsecs = 0\nautorestart = false\n\
         [program.calm]\ncommand = \"sh -c 'exit 0'\"\nstartsecs = 0\nautorestart = false\n",
        &[],
    );
    d.wait_state("victim", "RUNNING", 10 * SECS);
    d.wait_state("crashmail", "RUNNING", 10 * SECS);
    let pid = pid_of(&d, "victim");
    assert!(d.ctl(&["signal", "KILL", "victim"]).status.success());
    let mail = d.path("mail.txt");
    wait_for("crashmail's mail", 20 * SECS, || {
        std::fs::read_to_string(&mail).is_ok_and(|m| m.contains("exited"))
    });
    let text = std::fs::read_to_string(&mail).expect("mail");
    assert!(text.starts_with("To: ops@example.com\nSubject:  victim crashed at "), "{text}");
    assert!(
        text.ends_with(&format!(
            "Process victim in group victim exited unexpectedly (pid {pid}) from state RUNNING"
        )),
        "{text}"
    );
    // calm exited with an expected code: no mail about it.
    assert!(!text.contains("calm"), "{text}");
}

#[test]
fn memmon_restarts_a_program_over_its_memory_limit() {
    let (d, _) = daemon(
        "[eventlistener.memmon]\ncommand = \"{bin}/memmon -p hog=40MB\"\nevents = \"TICK_5\"\n\
         stderr_logfile = \"{dir}/memmon.err\"\n\
         [program.hog]\ncommand = \"python3 -c 'import time; b = b\\\"x\\\" * (80 << 20); time.sleep(1000)'\"\n\
         startsecs = 0\n",
        &[],
    );
    d.wait_state("hog", "RUNNING", 10 * SECS);
    let first = pid_of(&d, "hog");
    wait_for("memmon to restart hog", 30 * SECS, || {
        let now = pid_of(&d, "hog");
        now != 0 && now != first
    });
    let err = std::fs::read_to_string(d.path("memmon.err")).unwrap_or_default();
    assert!(err.contains("Restarting hog"), "{err}");
}

#[test]
fn httpok_restarts_a_program_whose_url_stops_answering() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let (d, _) = daemon(
        &format!(
            "[eventlistener.httpok]\ncommand = \"{{bin}}/httpok -p web -t 3 http://127.0.0.1:{port}/ok.txt\"\n\
             events = \"TICK_5\"\nstderr_logfile = \"{{dir}}/httpok.err\"\n\
             [program.web]\ncommand = \"python3 -m http.server {port} --bind 127.0.0.1 --directory {{dir}}/www\"\n\
             startsecs = 0\n"
        ),
        &[("www/", ""), ("www/ok.txt", "fine\n")],
    );
    d.wait_state("web", "RUNNING", 10 * SECS);
    let first = pid_of(&d, "web");
    wait_for("web to answer", 10 * SECS, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    std::fs::remove_file(d.path("www/ok.txt")).expect("remove ok.txt");
    wait_for("httpok to restart web", 30 * SECS, || {
        let now = pid_of(&d, "web");
        now != 0 && now != first
    });
    let err = std::fs::read_to_string(d.path("httpok.err")).unwrap_or_default();
    assert!(err.contains("web is in RUNNING state, restarting"), "{err}");
}

#[test]
fn group_daemon_and_log_events_as_supervisord_sends_them() {
    let conf = "[eventlistener.watch]\ncommand = \"{py} {dir}/listener.py {dir}/events.jsonl ok\"\n\
         events = \"SUPERVISOR_STATE_CHANGE,PROCESS_GROUP,PROCESS_LOG\"\nstartsecs = 0\n\
         [program.chatty]\ncommand = \"sh -c 'echo hi; echo oops >&2; exec sleep 100'\"\nstartsecs = 0\n\
         stdout_events_enabled = true\nstderr_events_enabled = true\n";
    let (d, _) = daemon(conf, &[]);
    let record = d.path("events.jsonl");
    wait_for("both log events", 20 * SECS, || {
        let events = recorded(&record);
        !named(&events, "PROCESS_LOG_STDOUT").is_empty() && !named(&events, "PROCESS_LOG_STDERR").is_empty()
    });
    let events = recorded(&record);
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["headers"]["eventname"].as_str().unwrap_or("").into(),
                e["payload"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    // At start, each group is added in priority order (the pool first), then the daemon runs.
    let first: Vec<(&str, &str)> = seen.iter().take(3).map(|(n, p)| (n.as_str(), p.as_str())).collect();
    assert_eq!(
        first,
        [
            ("PROCESS_GROUP_ADDED", "groupname:watch\n"),
            ("PROCESS_GROUP_ADDED", "groupname:chatty\n"),
            ("SUPERVISOR_STATE_CHANGE_RUNNING", ""),
        ]
    );
    let pid = pid_of(&d, "chatty");
    assert_eq!(
        named(&events, "PROCESS_LOG_STDOUT")[0]["payload"],
        format!("processname:chatty groupname:chatty pid:{pid} channel:stdout\nhi\n")
    );
    assert_eq!(
        named(&events, "PROCESS_LOG_STDERR")[0]["payload"],
        format!("processname:chatty groupname:chatty pid:{pid} channel:stderr\noops\n")
    );

    // A group added by update, and one removed.
    let toml = std::fs::read_to_string(&d.config).expect("config");
    let toml = toml.replace("[program.chatty]", "[program.late]\ncommand = \"sleep 100\"\n[program.chatty]");
    std::fs::write(&d.config, toml).expect("write");
    assert!(d.ctl(&["update"]).status.success());
    wait_for("the added group", 10 * SECS, || {
        named(&recorded(&record), "PROCESS_GROUP_ADDED").iter().any(|e| e["payload"] == "groupname:late\n")
    });
    let toml = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(&d.config, toml.replace("[program.late]\ncommand = \"sleep 100\"\n", "")).expect("write");
    assert!(d.ctl(&["update"]).status.success());
    wait_for("the removed group", 10 * SECS, || {
        named(&recorded(&record), "PROCESS_GROUP_REMOVED").iter().any(|e| e["payload"] == "groupname:late\n")
    });

    // A pool added by update hears of its own group, as supervisord's does.
    let toml = std::fs::read_to_string(&d.config).expect("config");
    let second = "[eventlistener.second]\ncommand = \"{py} {dir}/listener.py {dir}/second.jsonl ok\"\n\
                  events = \"PROCESS_GROUP\"\nstartsecs = 0\n"
        .replace("{py}", &superlance_bin().join("python").display().to_string())
        .replace("{dir}", &d.dir.path().display().to_string());
    std::fs::write(&d.config, format!("{toml}\n{second}")).expect("write");
    assert!(d.ctl(&["update"]).status.success());
    let second_record = d.path("second.jsonl");
    wait_for("the new pool's own group", 20 * SECS, || {
        named(&recorded(&second_record), "PROCESS_GROUP_ADDED")
            .iter()
            .any(|e| e["payload"] == "groupname:second\n")
    });
}

/// The next Supervisor event a WatchEvents stream carries (state changes skipped).
async fn next_supervisor_event(s: &mut tonic::Streaming<minder::pb::Event>) -> minder::pb::SupervisorEvent {
    loop {
        let e = tokio::time::timeout(20 * SECS, s.message())
            .await
            .expect("an event within 20 s")
            .expect("the stream is ok")
            .expect("the stream goes on");
        if let Some(minder::pb::event::Kind::Supervisor(ev)) = e.kind {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_events_carries_supervisor_events_when_asked_and_send_event_reaches_listeners() {
    use minder::pb;
    let (d, _) = daemon(
        "[eventlistener.watch]\ncommand = \"{py} {dir}/listener.py {dir}/events.jsonl ok\"\n\
         events = \"REMOTE_COMMUNICATION\"\nstartsecs = 0\n\
         [program.chatty]\ncommand = \"sh -c 'read line; echo \\\"got $line\\\"; exec sleep 100'\"\nstartsecs = 0\n\
         stdout_events_enabled = true\n",
        &[],
    );
    d.wait_state("watch", "RUNNING", 10 * SECS);
    let mut c = d.client().await;
    // An unknown type, or a state change (which the stream carries anyway), is refused.
    for bad in ["PROCESS_STATE", "NOPE"] {
        let req = pb::WatchEventsRequest { supervisor_events: vec![bad.into()], ..Default::default() };
        let err = c.watch_events(req).await.expect_err(bad);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
    }
    let req = pb::WatchEventsRequest {
        supervisor_events: vec!["process_log".into(), "REMOTE_COMMUNICATION".into(), "TICK_5".into()],
        ..Default::default()
    };
    let mut s = c.watch_events(req).await.expect("watch").into_inner();
    // A remote event from the CLI reaches the stream and the listener alike.
    let out = d.ctl(&["send-event", "deploy", "v1.2 is out"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut seen = Vec::new();
    let mut remote = None;
    while remote.is_none() {
        let ev = next_supervisor_event(&mut s).await;
        if ev.name == "REMOTE_COMMUNICATION" {
            remote = Some(ev.payload.clone());
        }
        seen.push(ev.name);
    }
    assert_eq!(remote.as_deref(), Some("type:deploy\nv1.2 is out"));
    let record = d.path("events.jsonl");
    wait_for("the listener to get it", 10 * SECS, || {
        !named(&recorded(&record), "REMOTE_COMMUNICATION").is_empty()
    });
    assert_eq!(named(&recorded(&record), "REMOTE_COMMUNICATION")[0]["payload"], "type:deploy\nv1.2 is out");
    // Output, as PROCESS_LOG_STDOUT.
    assert!(d.ctl(&["--json", "status", "chatty"]).status.success());
    let mut stdin = c.clone();
    stdin
        .send_stdin(pb::SendStdinRequest { name: "chatty".into(), data: b"hello\n".to_vec() })
        .await
        .expect("stdin");
    let pid = pid_of(&d, "chatty");
    loop {
        let ev = next_supervisor_event(&mut s).await;
        if ev.name == "PROCESS_LOG_STDOUT" {
            assert_eq!(
                ev.payload,
                format!("processname:chatty groupname:chatty pid:{pid} channel:stdout\ngot hello\n")
            );
            break;
        }
        assert_ne!(ev.name, "PROCESS_LOG_STDERR", "not asked for");
    }
    // And ticks, which run only because this stream asked for them (no pool subscribes).
    loop {
        let ev = next_supervisor_event(&mut s).await;
        if ev.name == "TICK_5" {
            assert!(ev.payload.starts_with("when:"), "{}", ev.payload);
            break;
        }
    }
}

/// Drives a daemon through childutils' XML-RPC: waits for the start-up to settle, sends a
/// remote event, restarts chatty, waits for the output events in the listener's record
/// (argv[2]), and ends with an `end` remote event.
const DRIVE: &str = r#"
import sys, time
from supervisor import childutils
r = childutils.getRPCInterface({'SUPERVISOR_SERVER_URL': 'unix://' + sys.argv[1]})
def state(name):
    try:
        return r.supervisor.getProcessInfo(name)['statename']
    except Exception:
        return None
deadline = time.time() + 60
while (state('chatty'), state('talk'), state('crash'), state('watch')) != ('RUNNING', 'RUNNING', 'FATAL', 'RUNNING'):
    assert time.time() < deadline, 'the start-up did not settle'
    time.sleep(0.05)
r.supervisor.sendRemoteCommEvent('t', 'one')
r.supervisor.stopProcess('chatty')
r.supervisor.startProcess('chatty')
# The output events (chatty's two "hi", talk's message) race the rest: wait for them.
def heard(name):
    try:
        return open(sys.argv[2]).read().count('"eventname": "%s"' % name)
    except OSError:
        return 0
while heard('PROCESS_LOG_STDOUT') < 2 or heard('PROCESS_COMMUNICATION_STDOUT') < 1:
    assert time.time() < deadline, 'the output events did not come'
    time.sleep(0.05)
r.supervisor.sendRemoteCommEvent('end', '')
"#;

/// What a listener heard, in a form two daemons can be compared by: each process's state
/// events in order, its output events in order, and the other events in order; pids as N.
fn digest(events: &[Value]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for e in events {
        let name = e["headers"]["eventname"].as_str().unwrap_or("?");
        let payload = e["payload"].as_str().unwrap_or("?");
        let neutral: String = payload
            .split(' ')
            .map(|w| match w.split_once("pid:") {
                Some(("", rest)) => {
                    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
                    format!("pid:N{}", &rest[digits..])
                }
                _ => w.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let who = payload.strip_prefix("processname:").and_then(|p| p.split(' ').next());
        let key = match (who, name.starts_with("PROCESS_STATE")) {
            (Some(p), true) => format!("state of {p}"),
            (Some(p), false) => format!("output of {p}"),
            (None, _) => "others".to_string(),
        };
        out.entry(key).or_default().push(format!("{name} {neutral}"));
    }
    out
}

#[test]
fn a_listener_hears_what_it_hears_under_supervisord() {
    let bin = superlance_bin();
    let run = |server: &str| {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("listener.py"), include_str!("listener.py")).expect("listener");
        std::fs::write(dir.path().join("talk.py"), TALK).expect("talk");
        let conf = format!(
            "[unix_http_server]\nfile={d}/s.sock\n\
             [supervisord]\nlogfile={d}/daemon.log\npidfile={d}/daemon.pid\nchildlogdir={d}\nnodaemon=true\n\
             [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
             [eventlistener:watch]\ncommand={py} {d}/listener.py {d}/events.jsonl ok\nstartsecs=0\nbuffer_size=100\n\
             events=PROCESS_STATE,PROCESS_GROUP,SUPERVISOR_STATE_CHANGE,REMOTE_COMMUNICATION,PROCESS_COMMUNICATION,PROCESS_LOG\n\
             [program:chatty]\ncommand=sh -c 'echo hi; exec sleep 100'\nstartsecs=0\nstdout_events_enabled=true\n\
             [program:talk]\ncommand=python3 {d}/talk.py\nstartsecs=0\nstdout_capture_maxbytes=1MB\n\
             [program:crash]\ncommand=sh -c 'exit 3'\nstartsecs=1\nstartretries=1\n",
            py = bin.join("python").display()
        );
        let path = dir.path().join("supervisord.conf");
        std::fs::write(&path, conf).expect("conf");
        let mut daemon = Command::new(server)
            .arg("-c")
            .arg(&path)
            .args(if server.ends_with("minderd") { &["-n"][..] } else { &[][..] })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the daemon starts");
        wait_for("the socket", 20 * SECS, || dir.path().join("s.sock").exists());
        let drive = Command::new(bin.join("python"))
            .arg("-c")
            .arg(DRIVE)
            .arg(dir.path().join("s.sock"))
            .arg(dir.path().join("events.jsonl"))
            .output()
            .expect("python runs");
        let record = dir.path().join("events.jsonl");
        if drive.status.success() {
            wait_for("the end event", 20 * SECS, || {
                recorded(&record).iter().any(|e| e["payload"] == "type:end\n")
            });
        }
        crate::harness::sigterm(&daemon);
        let _ = daemon.wait();
        assert!(drive.status.success(), "{server}: {}", String::from_utf8_lossy(&drive.stderr));
        // What follows the end is the shutdown, which races the listener's own stop in both.
        let mut events = recorded(&record);
        if let Some(end) = events.iter().position(|e| e["payload"] == "type:end\n") {
            events.truncate(end + 1);
        }
        digest(&events)
    };
    let theirs = run(&bin.join("supervisord").display().to_string());
    let ours = run(&crate::harness::bin("minderd").display().to_string());
    eprintln!("supervisord's listener heard: {theirs:#?}");
    // Not two failures compared: supervisord's own sequence is what is expected.
    assert!(theirs["state of crash"].iter().any(|e| e.starts_with("PROCESS_STATE_FATAL")), "{theirs:#?}");
    assert_eq!(ours, theirs, "minderd's, then supervisord's");
}

#[test]
fn minder_events_with_prints_supervisor_events() {
    let d = Daemon::start("[program.idle]\ncommand = \"sleep 100\"\nautostart = false\n");
    let mut ev = Command::new(crate::harness::bin("minder"))
        .arg("-s")
        .arg(format!("unix://{}", d.socket.display()))
        .args(["events", "--with", "remote_communication"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("minder events");
    let stdout = ev.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut got = Vec::new();
    // The stream may not be open yet when the first event is sent: send until one is seen.
    wait_for("minder events to print the remote event", 10 * SECS, || {
        assert!(d.ctl(&["send-event", "note", "hello"]).status.success());
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            got.push(l);
        }
        !got.is_empty()
    });
    let _ = ev.kill();
    let _ = ev.wait();
    // The time, the type, then the payload as a listener gets it (its data on the next line).
    assert!(got[0].ends_with(" REMOTE_COMMUNICATION type:note"), "{got:?}");
    assert_eq!(got.get(1).map(String::as_str), Some("hello"), "{got:?}");
}

#[test]
fn a_listener_that_floods_its_result_line_costs_minderd_nothing() {
    // Sent an event, it answers with a "result line" of 64 MB that never ends: four times what
    // the assertion below allows minderd to grow by, so keeping it would fail the test.
    let (d, bin) = daemon(
        "[eventlistener.flood]\n\
         command = \"sh -c 'printf \\\"READY\\\\n\\\"; read header; head -c 64000000 /dev/zero | tr \\\"\\\\000\\\" 7; touch {dir}/flooded; exec sleep 100'\"\n\
         events = \"REMOTE_COMMUNICATION\"\nstartsecs = 0\nstdout_logfile = \"NONE\"\n",
        &[],
    );
    d.wait_state("flood", "RUNNING", 10 * SECS);
    let before = rss_kib(d.pid());
    rpc(&d, &bin, "r.supervisor.sendRemoteCommEvent('t', 'x')");
    wait_for("the flood to be read", 120 * SECS, || d.path("flooded").exists());
    wait_for("the listener to be given up on", 10 * SECS, || d.log().contains("flood: bad result line"));
    let after = rss_kib(d.pid());
    eprintln!("minderd's RSS: {before} KiB before, {after} KiB after a 64 MB result line");
    assert!(after < before + 16 * 1024, "{before} KiB before, {after} KiB after");
    assert!(d.log().contains("flood: has entered the UNKNOWN state"), "{}", d.log());
    // And the daemon still answers.
    assert_eq!(d.state("flood"), "RUNNING");
}
