//! Health probes (`readiness_probe`, `liveness_probe`): one check at a time, each under its
//! timeout, and the tally of results against the thresholds.
//!
//! A process's task starts a [`run`] task per spawn when the program has probes, and aborts it
//! when the child leaves STARTING/RUNNING; results come back to the process's task as
//! [`Report`]s, and only that task acts on them (readiness: `Event::Ready`; liveness:
//! `Event::Unhealthy`), so the probe task changes no state.
//!
//! The kinds: `exec` runs a command through `spawn.rs` (as the program's user, with its
//! environment and directory, in its cgroup, a process group of its own, reaped by the
//! reaper like every child) and kills its group on timeout or when the check is dropped;
//! `http` is a GET over hyper's HTTP/1.1 client with the body read at most [`MAX_BODY`]
//! bytes; `tcp` is a connect; `grpc` is grpc.health.v1's Check through tonic-health's client.

use std::sync::Arc;
use std::time::Duration;

use minder::config::{Probe, ProbeCheck, ProcessConfig};
use tokio::io::AsyncReadExt;

use crate::process::Shared;

/// How much of an HTTP probe's body is read (and of an exec probe's output kept).
pub const MAX_BODY: usize = 64 * 1024;
/// The longest failure reason kept, in characters.
const MAX_REASON: usize = 200;

/// Which of a process's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Which {
    Readiness,
    Liveness,
}

impl Which {
    pub fn name(self) -> &'static str {
        match self {
            Which::Readiness => "readiness",
            Which::Liveness => "liveness",
        }
    }
}

/// One check's result, for the process's task.
#[derive(Debug, Clone)]
pub struct Report {
    pub which: Which,
    /// The child probed (a report about an earlier child is dropped).
    pub pid: u32,
    pub outcome: Result<(), String>,
}

/// A probe's results so far, for one child.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Consecutive passes and failures (one of them is 0 once anything was checked).
    pub successes: u32,
    pub failures: u32,
    /// Failures since minderd started, across spawns.
    pub failures_total: u64,
    /// `Some(true)` once success_threshold passes in a row, `Some(false)` once
    /// failure_threshold failures in a row; `None` before either.
    pub healthy: Option<bool>,
    /// Why the last failing check failed (`http 503`, `connect: refused`).
    pub last_failure: Option<String>,
    /// The probe's failure_threshold, for "(2/3)".
    pub failure_threshold: u32,
}

impl Tally {
    pub fn new(probe: &Probe, failures_total: u64) -> Tally {
        Tally { failure_threshold: probe.failure_threshold, failures_total, ..Tally::default() }
    }

    /// Counts one result.
    pub fn record(&mut self, probe: &Probe, outcome: &Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                if self.successes >= probe.success_threshold {
                    self.healthy = Some(true);
                }
            }
            Err(why) => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                self.failures_total = self.failures_total.saturating_add(1);
                self.last_failure = Some(why.clone());
                if self.failures >= probe.failure_threshold {
                    self.healthy = Some(false);
                }
            }
        }
    }

    /// `http 503 (2/3)` while the last check failed; `None` while it passes.
    pub fn failing(&self) -> Option<String> {
        if self.failures == 0 {
            return None;
        }
        let why = self.last_failure.as_deref().unwrap_or("failed");
        Some(format!("{why} ({}/{})", self.failures, self.failure_threshold))
    }
}

/// What an exec probe runs with: the program's settings and the daemon's spawning machinery.
#[derive(Clone, Debug)]
pub struct Context {
    pub config: Arc<ProcessConfig>,
    pub shared: Arc<Shared>,
    /// The process's cgroup directory, which the probe's command joins too.
    pub cgroup: Option<std::path::PathBuf>,
}

/// Probes the child `pid` with `probe` for ever: first after initial_delay, then every
/// period (from the start of one check to the start of the next, or at once after a check
/// that took longer), sending each result to `out`. Ends when `out` is closed; the process's
/// task aborts it when the child leaves STARTING/RUNNING.
pub async fn run(
    which: Which,
    pid: u32,
    probe: Probe,
    ctx: Context,
    out: tokio::sync::mpsc::UnboundedSender<Report>,
) {
    tokio::time::sleep(probe.initial_delay).await;
    let mut ticks = tokio::time::interval(probe.period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = check(&probe, Some(&ctx)).await;
        if out.send(Report { which, pid, outcome }).is_err() {
            return;
        }
    }
}

/// One check under the probe's timeout.
pub async fn check(probe: &Probe, ctx: Option<&Context>) -> Result<(), String> {
    let timeout = probe.timeout;
    let run = async {
        match &probe.check {
            ProbeCheck::Exec { argv, .. } => match ctx {
                Some(ctx) => exec(argv, ctx).await,
                None => Err("exec: no process to run it for".into()),
            },
            ProbeCheck::Http { host, port, path, .. } => http(host, *port, path, probe.status).await,
            ProbeCheck::Tcp { address } => {
                tokio::net::TcpStream::connect(address.as_str()).await.map_err(connect_error).map(drop)
            }
            ProbeCheck::Grpc { address, service } => grpc(address, service).await,
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(outcome) => outcome.map_err(|e| e.chars().filter(|c| !c.is_control()).take(MAX_REASON).collect()),
        Err(_) => Err(format!("timed out after {}", human(timeout))),
    }
}

/// `1s`, `500ms`, `1.5s`.
fn human(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{s:.0}s")
        } else {
            format!("{s}s")
        }
    }
}

fn connect_error(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: refused".into(),
        _ => format!("connect: {e}"),
    }
}

async fn http(host: &str, port: u16, path: &str, status: (u16, u16)) -> Result<(), String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(connect_error)?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("http: {e}"))?;
    // The connection's driver; it ends with the check (dropped with this future).
    let driver = tokio::spawn(conn);
    let _abort = AbortOnDrop(driver);
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "minderd-probe")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| format!("http: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("http: {e}"))?;
    let code = response.status().as_u16();
    // Read (at most MAX_BODY of) the body, so a server that writes it is not cut off rudely.
    let mut body = response.into_body();
    let mut read = 0;
    while read < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
    if (status.0..=status.1).contains(&code) {
        Ok(())
    } else {
        Err(format!("http {code}"))
    }
}

/// Aborts a spawned task when dropped (the check timed out or finished).
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn grpc(address: &str, service: &str) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("grpc: {e}"))?;
    let channel = endpoint.connect().await.map_err(|e| {
        let refused = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused {
            "connect: refused".to_string()
        } else {
            format!("connect: {e}")
        }
    })?;
    let mut client = HealthClient::new(channel);
    let answer = client
        .check(HealthCheckRequest { service: service.to_string() })
        .await
        .map_err(|s| format!("grpc {:?}: {}", s.code(), s.message()))?;
    match ServingStatus::try_from(answer.get_ref().status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!("grpc {}", other.as_str_name())),
        Err(_) => Err(format!("grpc status {}", answer.get_ref().status)),
    }
}

/// Kills an exec probe's process group unless it has been reaped (a timeout, or the probe
/// task aborted mid-check): no probe outlives its check.
struct Running {
    shared: Arc<Shared>,
    pid: u32,
    pidfd: Option<std::os::fd::OwnedFd>,
    done: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            let pidfd = self.pidfd.as_ref().map(std::os::fd::AsFd::as_fd);
            let _ = self.shared.reaper.signal(self.pid as i32, pidfd, nix::sys::signal::SIGKILL, true);
        }
    }
}

async fn exec(argv: &[String], ctx: &Context) -> Result<(), String> {
    // The probe runs as the program would, with its argv; its output (stdout and stderr
    // together) comes back through a pipe for the failure reason, never into the program's
    // log. `stdout_capture_maxbytes` is what makes spawn.rs pipe stdout when no log channel is
    // given (its value is not used here).
    let mut config = (*ctx.config).clone();
    config.argv = argv.to_vec();
    config.redirect_stderr = true;
    config.stdout_capture_maxbytes = 1;
    config.stdout_events_enabled = false;
    let stdio =
        crate::process::Stdio { stdout: None, stderr: None, socket: None, socket_error: None, pool: None };
    let shared = &ctx.shared;
    let path =
        crate::spawn::resolve_executable(&config, &shared.base_env).map_err(|e| format!("exec: {e}"))?;
    let cgroup = ctx.cgroup.clone().map(|dir| crate::cgroup::ProcessCgroup { dir });
    let child =
        crate::spawn::spawn(&config, path, &stdio, &shared.base_env, &shared.reaper, cgroup.as_ref(), &[])
            .await
            .map_err(|e| format!("exec: {e}"))?;
    drop(child.stdin);
    let mut guard = Running { shared: Arc::clone(shared), pid: child.pid, pidfd: child.pidfd, done: false };
    // Read the output while it runs (a full pipe would block it), keeping the last MAX_BODY
    // bytes; then its exit.
    let mut output = Vec::new();
    if let Some(fd) = child.stdout {
        if let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        output.extend_from_slice(&buf[..n]);
                        if output.len() > MAX_BODY {
                            output.drain(..output.len() - MAX_BODY);
                        }
                    }
                }
            }
        }
    }
    let status = child.exit.await.map_err(|_| "exec: lost track of the probe".to_string())?;
    guard.done = true;
    match status {
        crate::lifecycle::ExitStatus::Code(0) => Ok(()),
        status => {
            let text = String::from_utf8_lossy(&output);
            let last = text.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
            let head = match status {
                crate::lifecycle::ExitStatus::Code(c) => format!("exit {c}"),
                other => other.to_string(),
            };
            Err(if last.is_empty() { head } else { format!("{head}: {last}") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(check: ProbeCheck) -> Probe {
        Probe {
            check,
            period: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            failure_threshold: 3,
            success_threshold: 2,
            initial_delay: Duration::ZERO,
            status: (200, 399),
        }
    }

    #[test]
    fn the_tally_counts_runs_against_the_thresholds() {
        let p = probe(ProbeCheck::Tcp { address: "x:1".into() });
        let mut t = Tally::new(&p, 5);
        t.record(&p, &Ok(()));
        assert_eq!(t.healthy, None, "one pass of two");
        t.record(&p, &Ok(()));
        assert_eq!(t.healthy, Some(true));
        assert_eq!(t.failing(), None);
        t.record(&p, &Err("http 503".into()));
        t.record(&p, &Err("http 502".into()));
        assert_eq!(t.healthy, Some(true), "two failures of three");
        assert_eq!(t.failing().as_deref(), Some("http 502 (2/3)"));
        t.record(&p, &Ok(()));
        assert_eq!(t.failures, 0, "a pass breaks the run");
        for _ in 0..3 {
            t.record(&p, &Err("http 503".into()));
        }
        assert_eq!(t.healthy, Some(false));
        assert_eq!(t.failures_total, 5 + 5);
    }

    #[tokio::test]
    async fn tcp_connects_or_says_refused() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let p = probe(ProbeCheck::Tcp { address: addr.clone() });
        assert_eq!(check(&p, None).await, Ok(()));
        drop(listener);
        assert_eq!(check(&p, None).await, Err("connect: refused".into()));
        Ok(())
    }

    /// A one-connection-at-a-time HTTP server answering `status`, or never answering.
    async fn server(status: Option<u16>) -> anyhow::Result<String> {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                match status {
                    Some(code) => {
                        let body = "x".repeat(200_000);
                        let head = format!("HTTP/1.1 {code} X\r\ncontent-length: {}\r\n\r\n", body.len());
                        let _ = s.write_all(head.as_bytes()).await;
                        let _ = s.write_all(body.as_bytes()).await;
                    }
                    None => {
                        // Holds the connection without answering.
                        tokio::spawn(async move {
                            let _ = s.read(&mut buf).await;
                        });
                    }
                }
            }
        });
        Ok(format!("http://{addr}/healthz"))
    }

    fn http_probe(url: &str) -> Probe {
        let rest = url.trim_start_matches("http://");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = authority.rsplit_once(':').expect("port");
        probe(ProbeCheck::Http {
            url: url.into(),
            host: host.into(),
            port: port.parse().expect("port"),
            path: path.into(),
        })
    }

    #[tokio::test]
    async fn http_checks_the_status_range_and_times_out() -> anyhow::Result<()> {
        let ok = http_probe(&server(Some(204)).await?);
        assert_eq!(check(&ok, None).await, Ok(()));
        let bad = http_probe(&server(Some(503)).await?);
        assert_eq!(check(&bad, None).await, Err("http 503".into()));
        let narrow = Probe { status: (200, 200), ..http_probe(&server(Some(302)).await?) };
        assert_eq!(check(&narrow, None).await, Err("http 302".into()));
        let silent = http_probe(&server(None).await?);
        assert_eq!(check(&silent, None).await, Err("timed out after 500ms".into()));
        Ok(())
    }

    #[tokio::test]
    async fn grpc_asks_the_health_service() -> anyhow::Result<()> {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("api", tonic_health::ServingStatus::NotServing).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let whole = probe(ProbeCheck::Grpc { address: addr.clone(), service: String::new() });
        assert_eq!(check(&whole, None).await, Ok(()));
        let api = probe(ProbeCheck::Grpc { address: addr.clone(), service: "api".into() });
        assert_eq!(check(&api, None).await, Err("grpc NOT_SERVING".into()));
        Ok(())
    }
}
