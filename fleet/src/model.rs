//! The fleet's own model of what it knows: a [`Process`] in the shape of Supervisor's
//! `ProcessInfo` (which is what Cesi's API serves), and a [`NodeView`], what one node task last
//! learnt about its node. Both node kinds convert into these in one place each
//! ([`Process::from_xmlrpc`], [`Process::from_pb`]); protobuf and XML-RPC types go no further.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minder::pb;
use minder::xmlrpc::Value;
use serde::Serialize;

/// Supervisor's process state codes (`supervisor.states.ProcessStates`).
pub mod state {
    pub const STOPPED: i64 = 0;
    pub const STARTING: i64 = 10;
    pub const RUNNING: i64 = 20;
    pub const BACKOFF: i64 = 30;
    pub const STOPPING: i64 = 40;
    pub const EXITED: i64 = 100;
    pub const FATAL: i64 = 200;
    pub const UNKNOWN: i64 = 1000;

    /// The name Supervisor gives a code.
    pub fn name(code: i64) -> &'static str {
        match code {
            STOPPED => "STOPPED",
            STARTING => "STARTING",
            RUNNING => "RUNNING",
            BACKOFF => "BACKOFF",
            STOPPING => "STOPPING",
            EXITED => "EXITED",
            FATAL => "FATAL",
            _ => "UNKNOWN",
        }
    }
}

/// One process on one node, as Supervisor's `getProcessInfo` describes it (Cesi's `P`), plus
/// the readable times Cesi adds and the node it runs on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Process {
    pub name: String,
    pub group: String,
    pub description: String,
    /// Unix seconds of the last start, 0 if never.
    pub start: i64,
    /// Unix seconds of the last stop, 0 if never.
    pub stop: i64,
    /// Unix seconds when the node last described it.
    pub now: i64,
    pub state: i64,
    pub statename: String,
    pub spawnerr: String,
    pub exitstatus: i64,
    pub stdout_logfile: String,
    pub stderr_logfile: String,
    pub pid: i64,
    pub start_hr: String,
    pub stop_hr: String,
    pub now_hr: String,
    /// `H:MM:SS`, or `N days, H:MM:SS` (Cesi shows a wrong one past a day: its #12, #17, #86);
    /// `0` when not running, as Cesi writes it.
    pub uptime: String,
    pub node: String,
    pub environment: String,
}

impl Process {
    /// `group:name`, the name Supervisor's calls take.
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.group, self.name)
    }

    /// Whether `wanted` names this process: `group:name`, or `name` alone.
    pub fn is_named(&self, wanted: &str) -> bool {
        match wanted.split_once(':') {
            Some((g, n)) => g == self.group && n == self.name,
            None => wanted == self.name,
        }
    }

    /// From a struct of `supervisor.getAllProcessInfo`. Missing or mistyped members become
    /// zero or empty: a node's answer never panics the fleet.
    pub fn from_xmlrpc(v: &Value, node: &str, environment: &str) -> Option<Process> {
        let int = |k: &str| match v.member(k) {
            Some(Value::Int(n)) => *n,
            _ => 0,
        };
        let text = |k: &str| match v.member(k) {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let name = text("name");
        if name.is_empty() {
            return None;
        }
        let state = int("state");
        Some(Process::finish(Process {
            name,
            group: text("group"),
            description: text("description"),
            start: int("start"),
            stop: int("stop"),
            now: int("now"),
            state,
            statename: match text("statename") {
                s if s.is_empty() => state::name(state).to_string(),
                s => s,
            },
            spawnerr: text("spawnerr"),
            exitstatus: int("exitstatus"),
            stdout_logfile: text("stdout_logfile"),
            stderr_logfile: text("stderr_logfile"),
            pid: int("pid"),
            start_hr: String::new(),
            stop_hr: String::new(),
            now_hr: String::new(),
            uptime: String::new(),
            node: node.to_string(),
            environment: environment.to_string(),
        }))
    }

    /// From minderd's `ProcessInfo`.
    pub fn from_pb(p: &pb::ProcessInfo, node: &str, environment: &str) -> Process {
        let secs = |t: &Option<prost_types::Timestamp>| t.as_ref().map_or(0, |t| t.seconds);
        let code = state_code(p.state());
        let exitstatus = match p.exit_status.as_ref().and_then(|e| e.how) {
            Some(pb::exit_status::How::Code(c)) => i64::from(c),
            // Supervisor's decode_wait_status gives -1 for a death by signal.
            Some(pb::exit_status::How::Signal(_)) => -1,
            None => 0,
        };
        Process::finish(Process {
            name: p.name.clone(),
            group: p.group.clone(),
            description: p.description.clone(),
            start: secs(&p.start_time),
            stop: secs(&p.stop_time),
            now: unix_now(),
            state: code,
            statename: state::name(code).to_string(),
            spawnerr: p.spawn_error.clone(),
            exitstatus,
            stdout_logfile: p.stdout_logfile.clone(),
            stderr_logfile: p.stderr_logfile.clone(),
            pid: i64::from(p.pid),
            start_hr: String::new(),
            stop_hr: String::new(),
            now_hr: String::new(),
            uptime: String::new(),
            node: node.to_string(),
            environment: environment.to_string(),
        })
    }

    /// Fills in the readable times from the numbers.
    fn finish(mut p: Process) -> Process {
        p.start_hr = clock(p.start);
        p.stop_hr = clock(p.stop);
        p.now_hr = clock(p.now);
        p.uptime = if p.state == state::RUNNING && p.start > 0 && p.now >= p.start {
            uptime(Duration::from_secs((p.now - p.start) as u64))
        } else {
            "0".to_string()
        };
        p
    }
}

/// minderd's state as Supervisor's code.
pub fn state_code(s: pb::ProcessState) -> i64 {
    use pb::ProcessState as S;
    match s {
        S::Stopped => state::STOPPED,
        S::Starting => state::STARTING,
        S::Running => state::RUNNING,
        S::Backoff => state::BACKOFF,
        S::Stopping => state::STOPPING,
        S::Exited => state::EXITED,
        S::Fatal => state::FATAL,
        S::Unknown | S::Unspecified => state::UNKNOWN,
    }
}

/// `HH:MM:SS` local time, as Cesi shows start, stop and now (`00:00:00`-style for 0, as it does).
fn clock(unix: i64) -> String {
    use chrono::TimeZone as _;
    match chrono::Local.timestamp_opt(unix, 0).single() {
        Some(t) => t.format("%H:%M:%S").to_string(),
        None => String::new(),
    }
}

/// Supervisor's uptime: `H:MM:SS`, with `N day(s), ` before it past a day.
pub fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (days, s) = (s / 86_400, s % 86_400);
    let hms = format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        n => format!("{n} days, {hms}"),
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// How a node is, as far as the fleet knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not yet heard from since the fleet started.
    Connecting,
    Connected,
    /// The connection was refused (nothing listens there).
    Refused,
    /// It did not answer within the deadline (a hung node, or a black hole).
    TimedOut,
    /// No route, no such socket, a name that does not resolve, a reset.
    Unreachable,
    /// It refused the fleet's credentials.
    Unauthorized,
    /// It answered something that is not Supervisor's protocol.
    ProtocolError,
}

/// What one node task last learnt about its node. Published whole on a `watch` channel, so a
/// reader never waits for the node and never sees half an update.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub status: Status,
    pub last_error: Option<String>,
    /// When the node last answered.
    pub last_seen: Option<SystemTime>,
    /// The processes, as of `last_seen`; empty unless connected (stale states are not shown as
    /// current).
    pub processes: Arc<Vec<Process>>,
}

impl NodeView {
    pub fn connecting() -> NodeView {
        NodeView {
            status: Status::Connecting,
            last_error: None,
            last_seen: None,
            processes: Arc::new(Vec::new()),
        }
    }

    pub fn connected(&self) -> bool {
        self.status == Status::Connected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_past_a_day_is_right() {
        assert_eq!(uptime(Duration::from_secs(62)), "0:01:02");
        assert_eq!(uptime(Duration::from_secs(86_400 + 3 * 3600 + 5)), "1 day, 3:00:05");
        assert_eq!(uptime(Duration::from_secs(3 * 86_400)), "3 days, 0:00:00");
    }

    #[test]
    fn a_supervisord_struct_converts_and_a_bad_one_does_not_panic() {
        let v = Value::record([
            ("name", Value::from("web")),
            ("group", Value::from("site")),
            ("state", Value::Int(20)),
            ("statename", Value::from("RUNNING")),
            ("start", Value::Int(1000)),
            ("now", Value::Int(1000 + 90_000)),
            ("pid", Value::Int(42)),
        ]);
        let p = Process::from_xmlrpc(&v, "n1", "prod").expect("a process");
        assert_eq!((p.full_name().as_str(), p.pid, p.uptime.as_str()), ("site:web", 42, "1 day, 1:00:00"));
        assert!(p.is_named("site:web") && p.is_named("web") && !p.is_named("other:web"));
        assert_eq!(Process::from_xmlrpc(&Value::Int(3), "n1", "prod"), None);
        let odd = Value::record([("name", Value::from("x")), ("state", Value::from("RUNNING"))]);
        assert_eq!(Process::from_xmlrpc(&odd, "n", "e").map(|p| p.statename), Some("STOPPED".into()));
    }
}
