//! Prometheus metrics over HTTP (`[daemon] metrics = "127.0.0.1:9100"`, GET /metrics).
//!
//! Everything is computed when scraped, from the processes' snapshots, the daemon's counters
//! and /proc: nothing runs between scrapes.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `minder_up` | gauge | | 1 while minderd runs |
//! | `minder_start_time_seconds` | gauge | | when minderd started (Unix time) |
//! | `minder_spawns_total` | counter | | spawns attempted since start |
//! | `minder_spawn_failures_total` | counter | | spawns that failed before exec succeeded |
//! | `minder_process_state` | gauge | process, group, state | 1 for the current state, 0 for the others |
//! | `minder_process_start_time_seconds` | gauge | process, group | when it was last spawned |
//! | `minder_process_restarts_total` | counter | process, group | spawns after the first |
//! | `minder_process_exit_status` | gauge | process, group | how it last ended: the exit code, or 128 + the signal |
//! | `minder_process_cpu_seconds_total` | counter | process, group | user + system CPU of the running child |
//! | `minder_process_resident_memory_bytes` | gauge | process, group | resident memory of the running child |
//! | `minder_log_bytes_total` | counter | process, group, channel | bytes of output written to its log |
//! | `minder_probe_failures_total` | counter | process, probe | failed checks of its readiness or liveness probe |
//! | `minder_probe_healthy` | gauge | process, probe | 1 once the probe passed success_threshold times in a row, 0 otherwise |

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use http_body_util::Full;
use hyper::body::Bytes;

use crate::lifecycle::{ExitStatus, Kind};
use crate::supervisor::Supervisor;

/// Label values as Prometheus's text format wants them.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// What /proc says of a running child: CPU seconds and resident bytes.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (rest.get(11)?.parse().ok()?, rest.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(((utime + stime) as f64 / ticks.max(1) as f64, rss_pages * page.max(1) as u64))
}

/// Prometheus text, written family by family.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }
}

/// The metrics, in Prometheus's text format.
pub fn render(sup: &Supervisor) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut t = Text(String::new());
    let started = sup.facts().start_time.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    t.family("minder_up", "gauge", "1 while minderd runs.");
    t.sample("minder_up", "", 1);
    t.family("minder_start_time_seconds", "gauge", "When minderd started, in Unix time.");
    t.sample("minder_start_time_seconds", "", started);
    t.family("minder_spawns_total", "counter", "Spawns attempted since minderd started.");
    t.sample("minder_spawns_total", "", sup.shared.spawns.load(Relaxed));
    t.family("minder_spawn_failures_total", "counter", "Spawns that failed before the program ran.");
    t.sample("minder_spawn_failures_total", "", sup.shared.spawn_failures.load(Relaxed));

    let procs = sup.all_by_name();
    let snaps: Vec<_> = procs
        .iter()
        .map(|h| {
            let id = format!(
                "process=\"{}\",group=\"{}\"",
                escape(&h.config.full_name()),
                escape(&h.config.group)
            );
            (h, id, h.snapshot())
        })
        .collect();
    t.family("minder_process_state", "gauge", "1 for the process's current state, 0 for the others.");
    for (_, id, s) in &snaps {
        for k in Kind::ALL {
            t.sample(
                "minder_process_state",
                &format!("{{{id},state=\"{}\"}}", k.name()),
                u8::from(s.state == k),
            );
        }
    }
    t.family(
        "minder_process_start_time_seconds",
        "gauge",
        "When the process was last spawned, in Unix time.",
    );
    for (_, id, s) in &snaps {
        if let Some(d) = s.start.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
            t.sample("minder_process_start_time_seconds", &format!("{{{id}}}"), d.as_secs_f64());
        }
    }
    t.family("minder_process_restarts_total", "counter", "Spawns of the process after its first.");
    for (_, id, s) in &snaps {
        t.sample("minder_process_restarts_total", &format!("{{{id}}}"), s.spawn_count.saturating_sub(1));
    }
    t.family(
        "minder_process_exit_status",
        "gauge",
        "How the process last ended: its exit code, or 128 + the signal that killed it.",
    );
    for (_, id, s) in &snaps {
        if let Some(e) = s.last_exit {
            let v = match e.status {
                ExitStatus::Code(c) => c,
                ExitStatus::Signal { signal, .. } => 128 + signal,
            };
            t.sample("minder_process_exit_status", &format!("{{{id}}}"), v);
        }
    }
    let probes: Vec<_> = snaps
        .iter()
        .flat_map(|(h, _, s)| {
            let name = escape(&h.config.full_name());
            [
                ("readiness", h.config.readiness_probe.is_some(), s.readiness.clone()),
                ("liveness", h.config.liveness_probe.is_some(), s.liveness.clone()),
            ]
            .into_iter()
            .filter(|(_, configured, _)| *configured)
            .map(move |(which, _, tally)| {
                (format!("{{process=\"{name}\",probe=\"{which}\"}}"), tally.unwrap_or_default())
            })
        })
        .collect();
    t.family(
        "minder_probe_failures_total",
        "counter",
        "Failed checks of the process's probe since minderd started.",
    );
    for (labels, tally) in &probes {
        t.sample("minder_probe_failures_total", labels, tally.failures_total);
    }
    t.family(
        "minder_probe_healthy",
        "gauge",
        "1 once the probe passed success_threshold checks in a row (and has not failed failure_threshold since), else 0.",
    );
    for (labels, tally) in &probes {
        t.sample("minder_probe_healthy", labels, u8::from(tally.healthy == Some(true)));
    }
    let usage: Vec<_> =
        snaps.iter().filter_map(|(_, id, s)| s.pid.and_then(proc_usage).map(|u| (id, u))).collect();
    t.family(
        "minder_process_cpu_seconds_total",
        "counter",
        "User and system CPU time of the running process.",
    );
    for (id, (cpu, _)) in &usage {
        t.sample("minder_process_cpu_seconds_total", &format!("{{{id}}}"), cpu);
    }
    t.family("minder_process_resident_memory_bytes", "gauge", "Resident memory of the running process.");
    for (id, (_, rss)) in &usage {
        t.sample("minder_process_resident_memory_bytes", &format!("{{{id}}}"), rss);
    }
    // The whole tree, from the process's cgroup (where minderd uses cgroups).
    let trees: Vec<_> = snaps.iter().filter_map(|(h, id, _)| h.tree().map(|t| (id, t))).collect();
    t.family(
        "minder_cgroup_cpu_seconds_total",
        "counter",
        "CPU time of every process that has run in the process's cgroup.",
    );
    for (id, tree) in &trees {
        if let Some(cpu) = tree.cpu {
            t.sample("minder_cgroup_cpu_seconds_total", &format!("{{{id}}}"), cpu.as_secs_f64());
        }
    }
    t.family("minder_cgroup_processes", "gauge", "Processes in the process's cgroup: its whole tree.");
    for (id, tree) in &trees {
        t.sample("minder_cgroup_processes", &format!("{{{id}}}"), tree.pids.len());
    }
    t.family(
        "minder_cgroup_memory_bytes",
        "gauge",
        "Memory of the process's cgroup, where the memory controller is on.",
    );
    for (id, tree) in &trees {
        if let Some(m) = tree.memory {
            t.sample("minder_cgroup_memory_bytes", &format!("{{{id}}}"), m);
        }
    }
    t.family(
        "minder_log_bytes_total",
        "counter",
        "Bytes of the process's output written to its log since minderd started.",
    );
    for (h, id, _) in &snaps {
        for (channel, ch) in [("stdout", &h.logs.stdout), ("stderr", &h.logs.stderr)] {
            if let Some(ch) = ch {
                t.sample("minder_log_bytes_total", &format!("{{{id},channel=\"{channel}\"}}"), ch.written());
            }
        }
    }
    t.0
}

/// The metrics endpoint as [`crate::serve`] serves it: HTTP/1, GET /metrics, no
/// credentials, on the same accept loop (and under the same TCP connection cap) as the API.
#[derive(Clone)]
pub struct MetricsApp {
    sup: Arc<Supervisor>,
}

impl std::fmt::Debug for MetricsApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsApp").finish_non_exhaustive()
    }
}

impl MetricsApp {
    pub fn new(sup: Arc<Supervisor>) -> MetricsApp {
        MetricsApp { sup }
    }
}

impl crate::serve::App for MetricsApp {
    type Service = MetricsApp;
    type Body = Full<Bytes>;
    type BodyError = Infallible;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<Full<Bytes>>, Infallible>>;

    fn service(&self) -> MetricsApp {
        self.clone()
    }

    fn http2(&self) -> bool {
        false
    }

    fn admitted(&self, _uid: u32, _gid: u32) -> bool {
        false
    }

    fn tls(&self) -> Option<tokio_rustls::TlsAcceptor> {
        None
    }
}

impl<B> tower::Service<http::Request<B>> for MetricsApp {
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let resp = if req.uri().path() == "/metrics" && req.method() == http::Method::GET {
            let mut r = http::Response::new(Full::new(Bytes::from(render(&self.sup))));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        } else {
            let mut r = http::Response::new(Full::new(Bytes::from_static(b"see /metrics\n")));
            *r.status_mut() = http::StatusCode::NOT_FOUND;
            r
        };
        std::future::ready(Ok(resp))
    }
}
