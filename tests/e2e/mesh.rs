//! minderd among gRPC services: health, reflection.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::harness::{code, Daemon};

const SECS: Duration = Duration::from_secs(1);

async fn channel(d: &Daemon) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("unix://{}", d.socket.display()))
        .expect("uri")
        .connect()
        .await
        .expect("connects")
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_a_program_through_start_stop_and_crash() {
    let d = Daemon::start("[program.web]\ncommand = \"sleep 100\"\nstartsecs = 0\nautorestart = false\n");
    d.wait_state("web", "RUNNING", 10 * SECS);
    let mut h = HealthClient::new(channel(&d).await);
    let check = |name: &str| HealthCheckRequest { service: name.into() };
    assert_eq!(h.check(check("")).await.expect("daemon").into_inner().status(), ServingStatus::Serving);
    let mut watch = h.watch(check("web")).await.expect("watch").into_inner();
    async fn next(w: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>) -> ServingStatus {
        tokio::time::timeout(Duration::from_secs(10), w.message())
            .await
            .expect("a status within 10 s")
            .expect("ok")
            .expect("the stream goes on")
            .status()
    }
    assert_eq!(next(&mut watch).await, ServingStatus::Serving);
    assert_eq!(code(&d.ctl(&["stop", "web"])), 0);
    assert_eq!(next(&mut watch).await, ServingStatus::NotServing);
    assert_eq!(code(&d.ctl(&["start", "web"])), 0);
    assert_eq!(next(&mut watch).await, ServingStatus::Serving);
    // A crash (SIGKILL, no autorestart) is NOT_SERVING.
    assert_eq!(code(&d.ctl(&["signal", "KILL", "web"])), 0);
    assert_eq!(next(&mut watch).await, ServingStatus::NotServing);
    // The group:name spelling is the same service.
    assert_eq!(
        h.check(check("web:web")).await.expect("check").into_inner().status(),
        ServingStatus::NotServing
    );
    let err = h.check(check("nope")).await.expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let d = Daemon::start("");
    let mut c = ServerReflectionClient::new(channel(&d).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp =
        c.server_reflection_info(tokio_stream::iter([req])).await.expect("reflection").into_inner();
    let msg = resp.message().await.expect("ok").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("{msg:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["minder.v1.Supervisor", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
}

/// GETs a URL path from `addr` with a plain HTTP/1.1 request.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connects");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

/// The value of the sample `name{labels}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn metrics_report_states_restarts_and_output() {
    let d = Daemon::start_with(
        "[program.run]\ncommand = \"sh -c 'printf hello; exec sleep 100'\"\nstartsecs = 0\n\n[program.idle]\ncommand = \"true\"\nautostart = false\nstartretries = 0\n",
        &[],
        &["--metrics", "127.0.0.1:0"],
    );
    d.wait_state("run", "RUNNING", 10 * SECS);
    let mut addr = None;
    crate::harness::wait_for("the metrics address", 10 * SECS, || {
        addr = d.log().lines().find_map(|l| {
            l.split("serving metrics at http://").nth(1)?.strip_suffix("/metrics").map(String::from)
        });
        addr.is_some()
    });
    let addr = addr.expect("address");
    let run = r#"process="run",group="run""#;
    let mut text = String::new();
    crate::harness::wait_for("the output to be counted", 10 * SECS, || {
        text = http_get(&addr, "/metrics");
        sample(&text, &format!("minder_log_bytes_total{{{run},channel=\"stdout\"}}")) == Some(5.0)
    });
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("# TYPE minder_process_state gauge"));
    assert_eq!(sample(&text, &format!("minder_process_state{{{run},state=\"RUNNING\"}}")), Some(1.0));
    assert_eq!(sample(&text, &format!("minder_process_state{{{run},state=\"STOPPED\"}}")), Some(0.0));
    assert_eq!(
        sample(&text, r#"minder_process_state{process="idle",group="idle",state="STOPPED"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, &format!("minder_process_restarts_total{{{run}}}")), Some(0.0));
    assert!(sample(&text, &format!("minder_process_resident_memory_bytes{{{run}}}")).is_some_and(|v| v > 0.0));
    assert!(sample(&text, &format!("minder_process_cpu_seconds_total{{{run}}}")).is_some());
    assert_eq!(sample(&text, "minder_up"), Some(1.0));
    assert_eq!(code(&d.ctl(&["restart", "run"])), 0);
    assert_eq!(code(&d.ctl(&["start", "idle"])), 7, "idle exits before startsecs");
    let text = http_get(&addr, "/metrics");
    assert_eq!(sample(&text, &format!("minder_process_restarts_total{{{run}}}")), Some(1.0));
    assert_eq!(sample(&text, &format!("minder_process_exit_status{{{run}}}")), None, "reset at each spawn");
    assert!(sample(&text, "minder_spawns_total").is_some_and(|v| v >= 3.0));
    assert!(http_get(&addr, "/nope").starts_with("HTTP/1.1 404"));
}

#[test]
fn sd_notify_says_ready_and_stopping() {
    let dir = tempfile::tempdir().expect("dir");
    let notify = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    std::fs::write(dir.path().join("m.toml"), "[program.s]\ncommand = \"sleep 100\"\nstartsecs = 0\n")
        .expect("write");
    let mut child = std::process::Command::new(crate::harness::bin("minderd"))
        .arg("-c")
        .arg(dir.path().join("m.toml"))
        .arg("--listen")
        .arg(format!("unix://{}/m.sock", dir.path().display()))
        .arg("-l")
        .arg(dir.path().join("d.log"))
        .env("NOTIFY_SOCKET", &notify)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("minderd");
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification within 10 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1") && msg.contains(&format!("MAINPID={}", child.id())), "{msg}");
    // Listening by then: a client gets an answer at once.
    let out = std::process::Command::new(crate::harness::bin("minder"))
        .arg("-s")
        .arg(format!("unix://{}/m.sock", dir.path().display()))
        .arg("version")
        .output()
        .expect("runs");
    assert!(out.status.success());
    crate::harness::sigterm(&child);
    let n = sock.recv(&mut buf).expect("a notification within 10 s");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1");
    assert!(child.wait().expect("exits").success());
}
