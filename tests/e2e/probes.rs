//! Health probes end to end (issue 16): a readiness probe gates RUNNING, a failing liveness
//! probe restarts the process, the same options from a supervisord.conf, and a bad probe is
//! an error naming its file, line and option.

use std::time::Duration;

use crate::harness::{wait_for, Daemon};

const SECS: Duration = Duration::from_secs(1);

/// A loopback port nobody listens on now (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A command that opens an HTTP server on `port` only after `delay` seconds.
fn late_server(port: u16, delay: f64) -> String {
    format!("sh -c 'sleep {delay}; exec python3 -m http.server {port} --bind 127.0.0.1'")
}

fn spawns(d: &Daemon, name: &str) -> Vec<f64> {
    d.log_lines(&format!("spawned: '{name}'")).iter().map(|(t, _)| *t).collect()
}

#[test]
fn a_readiness_probe_gates_running() {
    let port = free_port();
    let d = Daemon::start(&format!(
        r#"
[program.web]
command = "{}"
startsecs = 0
ready = "probe"
ready_timeout = "20s"
readiness_probe = {{ http = "http://127.0.0.1:{port}/", period = "200ms", timeout = "1s" }}
"#,
        late_server(port, 1.5)
    ));
    // Up (startsecs = 0 would have made it RUNNING at once), but not answering yet: STARTING,
    // saying why.
    wait_for("web to show the failing probe", 10 * SECS, || {
        let p = d.process("web");
        p["state"] == "STARTING"
            && p["description"].as_str().unwrap_or("").starts_with("probe: connect: refused (")
    });
    d.wait_state("web", "RUNNING", 20 * SECS);
    let spawned = spawns(&d, "web")[0];
    let ready = d.log_lines("success: web entered RUNNING state, its readiness probe passed (probe)");
    assert_eq!(ready.len(), 1, "{}", d.log());
    assert!(
        ready[0].0 - spawned >= 1.4,
        "RUNNING {} s after the spawn, before the port opened:\n{}",
        ready[0].0 - spawned,
        d.log()
    );
    // Healthy: nothing extra in the description.
    let desc = d.process("web")["description"].as_str().unwrap_or("").to_string();
    assert!(desc.starts_with("pid ") && !desc.contains("probe"), "{desc}");
}

#[test]
fn a_failing_liveness_probe_restarts_the_process() {
    // The probe runs as the program's user, with its environment and directory: its output
    // (the last line) says so in the reason.
    let d = Daemon::start(
        r#"
[program.web]
command = "sleep 100"
startsecs = 0
user = "nobody"
directory = "/tmp"
environment = { PROBE_VAR = "hello" }
liveness_probe = { exec = "sh -c 'echo starting; echo $(id -u) $PROBE_VAR $(pwd); exit 1'", period = "200ms", failure_threshold = 3 }

[program.slow]
command = "sleep 100"
startsecs = 0
liveness_probe = { exec = "sleep 30", period = "200ms", timeout = "300ms", failure_threshold = 2 }
"#,
    );
    wait_for("web to be restarted", 20 * SECS, || spawns(&d, "web").len() >= 2);
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten().expect("nobody exists");
    let line = format!(
        "liveness probe failed 3 times: web (exit 1: {} hello /tmp); restarting it",
        nobody.uid.as_raw()
    );
    assert!(!d.log_lines(&line).is_empty(), "no {line:?} in:\n{}", d.log());
    let first = d.log_lines("spawned: 'web' with pid")[0].1.clone();
    let second = d.log_lines("spawned: 'web' with pid")[1].1.clone();
    assert_ne!(first.rsplit(' ').next(), second.rsplit(' ').next(), "a new pid");
    // Three failures 200 ms apart: not before about 0.4 s after the spawn.
    let s = spawns(&d, "web");
    let failed = d.log_lines("liveness probe failed 3 times: web")[0].0;
    assert!(failed - s[0] >= 0.35, "{}", d.log());
    // A check that hangs fails on its timeout, and its command is killed.
    wait_for("slow to be restarted", 20 * SECS, || spawns(&d, "slow").len() >= 2);
    assert!(
        !d.log_lines("liveness probe failed 2 times: slow (timed out after 300ms); restarting it").is_empty(),
        "{}",
        d.log()
    );
    wait_for("the timed-out probes to be gone", 10 * SECS, || {
        // `sleep 30` probes left behind would be children of minderd.
        let kids = std::fs::read_to_string(format!("/proc/{}/task/{}/children", d.pid(), d.pid()))
            .unwrap_or_default();
        let sleeps = kids
            .split_whitespace()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\x0030"))
            })
            .count();
        // At most the check in progress.
        sleeps <= 1
    });
}

/// A minderd the test started, ended (SIGTERM, by its pid) and waited for however the test
/// ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        crate::harness::sigterm(&self.0);
        let _ = self.0.wait();
    }
}

#[test]
fn the_same_probes_from_a_supervisord_conf() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("supervisord.conf");
    std::fs::write(
        &conf,
        format!(
            "[supervisord]\nlogfile=%(here)s/d.log\npidfile=%(here)s/d.pid\n[unix_http_server]\nfile=%(here)s/s.sock\n\
             [program:web]\ncommand={}\nstartsecs=0\nready=probe\nready_timeout=20\n\
             readiness_probe = tcp=127.0.0.1:{port}, period=200ms\n\
             [program:sick]\ncommand=sleep 100\nstartsecs=0\n\
             liveness_probe = exec=\"sh -c 'echo bad; exit 3'\", period=200ms, failure_threshold=2\n",
            late_server(port, 1.0)
        ),
    )
    .expect("write");
    let child = Stopped(crate::harness::minderd_on(&conf));
    let sock = dir.path().join("s.sock");
    let status = |name: &str| crate::harness::stdout(&crate::harness::ctl_at(&sock, &["status", name]));
    wait_for("web STARTING on its probe", 10 * SECS, || {
        let s = status("web");
        s.contains("STARTING") && s.contains("probe: connect: refused")
    });
    wait_for("web RUNNING", 20 * SECS, || status("web").contains("RUNNING"));
    let log = || std::fs::read_to_string(dir.path().join("d.log")).unwrap_or_default();
    wait_for("sick restarted", 20 * SECS, || {
        log().contains("liveness probe failed 2 times: sick (exit 3: bad); restarting it")
    });
    assert!(
        log().contains("success: web entered RUNNING state, its readiness probe passed (probe)"),
        "{}",
        log()
    );
    drop(child);
}

#[test]
fn a_bad_probe_names_its_file_line_and_option() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("supervisord.conf");
    std::fs::write(
        &conf,
        "[supervisord]\n[program:web]\ncommand=sleep 1\nready=probe\nreadiness_probe = http=https://127.0.0.1:8443/healthz, period=1s\n\
         liveness_probe = tcp=127.0.0.1:80, exec=true\n",
    )
    .expect("write");
    let out = crate::harness::check_config(&conf);
    assert_ne!(crate::harness::code(&out), 0);
    let err = crate::harness::stderr(&out);
    assert!(
        err.contains("supervisord.conf:5: [program:web] readiness_probe: http: \"https://127.0.0.1:8443/healthz\": https:// is not supported; probe the port with tcp = \"host:port\", or run a checker with exec"),
        "{err}"
    );
    assert!(
        err.contains("supervisord.conf:6: [program:web] liveness_probe: needs exactly one kind of check, exec, http, tcp or grpc; got exec and tcp"),
        "{err}"
    );
}

/// GET /metrics from `port`, the body.
fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics connect");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_results_show_in_status_health_metrics_and_the_api() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    let closed = free_port();
    let metrics_port = free_port();
    // A readiness probe that does not gate (ready = startsecs): web is RUNNING, but its
    // probe fails, so the health service says NOT_SERVING.
    let d = Daemon::start(&format!(
        "[daemon]\nmetrics = \"127.0.0.1:{metrics_port}\"\n\n[program.web]\ncommand = \"sleep 100\"\nstartsecs = 0\n\
         readiness_probe = {{ tcp = \"127.0.0.1:{closed}\", period = \"100ms\", failure_threshold = 2 }}\n\n\
         [program.fine]\ncommand = \"sleep 100\"\nstartsecs = 0\nreadiness_probe = {{ exec = \"true\", period = \"100ms\" }}\n"
    ));
    d.wait_state("web", "RUNNING", 10 * SECS);
    wait_for("web's description to show the failing probe", 10 * SECS, || {
        let desc = d.process("web")["description"].as_str().unwrap_or("").to_string();
        desc.starts_with("pid ")
            && desc.contains(", uptime ")
            && desc.contains(", probe: connect: refused (2/2)")
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("unix://{}", d.socket.display()))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = |name: &str| HealthCheckRequest { service: name.into() };
    assert_eq!(h.check(status("web")).await.expect("web").into_inner().status(), ServingStatus::NotServing);
    wait_for("fine's probe to pass", 10 * SECS, || {
        d.process("fine")["readiness"]["healthy"].as_bool() == Some(true)
    });
    assert_eq!(h.check(status("fine")).await.expect("fine").into_inner().status(), ServingStatus::Serving);
    let fine = d.process("fine")["description"].as_str().unwrap_or("").to_string();
    assert!(!fine.contains("probe"), "healthy: nothing extra: {fine}");
    // The API's fields.
    let mut client = d.client().await;
    let info = client
        .get_process(minder::pb::GetProcessRequest { name: "web".into() })
        .await
        .expect("get")
        .into_inner();
    let r = info.readiness.expect("a readiness probe");
    assert_eq!((r.kind.as_str(), r.healthy, r.failure_threshold), ("tcp", Some(false), 2));
    assert_eq!(r.last_failure, "connect: refused");
    assert!(r.consecutive_failures >= 2 && r.failures_total >= 2, "{r:?}");
    assert!(info.liveness.is_none());
    // /metrics.
    wait_for("the metrics port", 10 * SECS, || d.log().contains("serving metrics at"));
    let m = metrics(metrics_port);
    assert!(m.contains("minder_probe_healthy{process=\"web\",probe=\"readiness\"} 0"), "{m}");
    assert!(m.contains("minder_probe_healthy{process=\"fine\",probe=\"readiness\"} 1"), "{m}");
    let failures: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("minder_probe_failures_total{process=\"web\",probe=\"readiness\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("web's failures");
    assert!(failures >= 2, "{m}");
    assert!(m.contains("minder_probe_failures_total{process=\"fine\",probe=\"readiness\"} 0"), "{m}");
}
