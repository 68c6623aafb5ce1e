//! Nodes: one task per node owns what the fleet knows about it, and publishes it whole on a
//! `watch` channel ([`NodeView`]); the API only ever reads those, so no request waits for a
//! node to answer a poll. Actions and log reads go to the node directly from the request, each
//! under its own deadline.
//!
//! - [`xmlrpc`]: supervisord (and minderd's XML-RPC): polled every `poll_interval`, each call
//!   under `call_timeout`.
//! - [`grpc`]: minderd: a `WatchEvents` stream (pushed, never polled), with `ListProcesses`
//!   snapshots after changes; connect and every unary call under `call_timeout`.
//!
//! A node that fails is retried with a capped, jittered exponential backoff ([`Backoff`]).

pub mod follow;
pub mod grpc;
pub mod xmlrpc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use minder::xmlrpc::{Fault, Value};
use serde::Serialize;
use tokio::sync::{watch, Notify};

use crate::config::{NodeConfig, NodeKind, Timing};
use crate::model::{NodeView, Process, Status};

/// Why a call to a node did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("connection refused")]
    Refused,
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("the node refused the fleet's credentials")]
    Unauthorized,
    /// The credentials are good, and do not allow this (a read-only token, say).
    #[error("the node does not allow this: {0}")]
    Forbidden(String),
    #[error("not Supervisor's protocol: {0}")]
    Protocol(String),
    /// The node answered with a fault: its `faultString` is the message.
    #[error("{}", .0.string)]
    Fault(Fault),
    #[error("the node is not connected ({0})")]
    NotConnected(String),
}

impl CallError {
    fn connect(e: std::io::Error) -> CallError {
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => CallError::Refused,
            _ => CallError::Unreachable(e.to_string()),
        }
    }

    /// How a node that gave this error is shown.
    pub fn status(&self) -> Status {
        match self {
            CallError::Refused => Status::Refused,
            CallError::TimedOut(_) => Status::TimedOut,
            CallError::Unreachable(_) | CallError::NotConnected(_) => Status::Unreachable,
            CallError::Unauthorized | CallError::Forbidden(_) => Status::Unauthorized,
            CallError::Protocol(_) | CallError::Fault(_) => Status::ProtocolError,
        }
    }
}

/// A capped, jittered exponential backoff: 0.5 s, 1 s, 2 s, … up to 30 s, each ±25 %, so a
/// fleet that lost its network does not reconnect to every node in the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(500);
    pub const CAP: Duration = Duration::from_secs(30);

    pub fn new(seed: &str) -> Backoff {
        use std::hash::BuildHasher as _;
        // A per-process random key (std's RandomState), hashed with the node's name: enough
        // spread for jitter, without a dependency for it.
        Backoff { attempt: 0, seed: std::collections::hash_map::RandomState::new().hash_one(seed) }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = Backoff::FIRST.saturating_mul(1u32 << self.attempt.min(10)).min(Backoff::CAP);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64 on the seed: a fresh fraction in [0, 1) per attempt.
        let mut x = self.seed ^ u64::from(self.attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        let frac = (x >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(0.75 + 0.5 * frac)
    }
}

/// What a process action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "start" => Some(Action::Start),
            "stop" => Some(Action::Stop),
            "restart" => Some(Action::Restart),
            _ => None,
        }
    }
}

/// What an action is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One process, `group:name`.
    Process(String),
    /// Every process of a group.
    Group(String),
    /// Every process of the node.
    All,
}

/// The outcome of an action for one process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessResult {
    pub name: String,
    pub group: String,
    /// `success` or `error`.
    pub status: &'static str,
    /// Supervisor's fault code (80 for success).
    pub code: i64,
    pub message: String,
}

/// Supervisor's `Faults.SUCCESS`, and the two faults a restart's stop may meet harmlessly.
const SUCCESS: i64 = 80;
const NOT_RUNNING: i64 = 70;

/// The last lines of a process's stdout and stderr.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Logs {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// How many bytes of each log Cesi's log view shows.
pub const LOG_BYTES: u64 = 500;

/// The tail of a log as lines: the first line is dropped when the tail starts inside it, and
/// the empty piece after a final newline is not a line.
pub fn lines(text: &str, cut: bool) -> Vec<String> {
    let mut v: Vec<String> = text.split('\n').map(str::to_string).collect();
    if v.last().is_some_and(String::is_empty) {
        v.pop();
    }
    if cut && !v.is_empty() {
        v.remove(0);
    }
    v
}

/// One configured node: its settings, what its task last published, and how to reach it.
#[derive(Debug)]
pub struct Node {
    pub config: NodeConfig,
    view: watch::Receiver<NodeView>,
    /// Tells the node task to look again now (after an action), instead of at its next poll.
    refresh: Arc<Notify>,
    conn: Conn,
    timing: Timing,
}

#[derive(Debug)]
enum Conn {
    XmlRpc(xmlrpc::XmlRpcClient),
    /// The channel of the current connection, when there is one (set by the node task).
    Grpc(Arc<Mutex<Option<grpc::Client>>>),
}

impl Node {
    /// Makes the node and spawns its task; the task ends when `task` is aborted.
    pub fn spawn(config: NodeConfig, timing: Timing) -> (Arc<Node>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(NodeView::connecting());
        let refresh = Arc::new(Notify::new());
        let (conn, task) = match config.kind {
            NodeKind::Supervisord => {
                let client = xmlrpc::XmlRpcClient::new(&config);
                let task = tokio::spawn(poll_xmlrpc(
                    client.clone(),
                    config.name.clone(),
                    config.environment.clone(),
                    timing,
                    tx,
                    refresh.clone(),
                ));
                (Conn::XmlRpc(client), task)
            }
            NodeKind::Minderd => {
                let slot = Arc::new(Mutex::new(None));
                let task =
                    tokio::spawn(grpc::watch_node(config.clone(), timing, tx, slot.clone(), refresh.clone()));
                (Conn::Grpc(slot), task)
            }
        };
        (Arc::new(Node { config, view: rx, refresh, conn, timing }), task)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What the node task last published (never waits for the node).
    pub fn view(&self) -> NodeView {
        self.view.borrow().clone()
    }

    /// The node task's published view, to be told of each change (the fleet's change feed).
    pub fn subscribe(&self) -> watch::Receiver<NodeView> {
        self.view.clone()
    }

    /// Starts following the stdout (or stderr) of the process `full` (`group:name`): the first
    /// read is made here, under the call deadline, so a node that cannot serve it is an error
    /// before anything is streamed.
    pub async fn follow(&self, full: &str, stderr: bool) -> Result<follow::LogSource, CallError> {
        match &self.conn {
            Conn::XmlRpc(c) => follow::LogSource::xmlrpc(c.clone(), full, stderr, self.timing).await,
            Conn::Grpc(slot) => {
                let client = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match client {
                    Some(c) => follow::LogSource::grpc(c, full, stderr, self.timing.call_timeout).await,
                    None => Err(self.not_connected()),
                }
            }
        }
    }

    /// The process `wanted` (`group:name` or `name`) among those the node last reported.
    pub fn find(&self, wanted: &str) -> Option<Process> {
        self.view.borrow().processes.iter().find(|p| p.is_named(wanted)).cloned()
    }

    fn not_connected(&self) -> CallError {
        let v = self.view.borrow();
        CallError::NotConnected(v.last_error.clone().unwrap_or_else(|| "not yet connected".into()))
    }

    /// Carries out `action` on `target`, within the action deadline.
    pub async fn act(&self, action: Action, target: &Target) -> Result<Vec<ProcessResult>, CallError> {
        let r = match &self.conn {
            Conn::XmlRpc(c) => self.act_xmlrpc(c, action, target).await,
            Conn::Grpc(slot) => {
                let client = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match client {
                    Some(c) => grpc::act(c, action, target, self.timing.action_timeout).await,
                    None => Err(self.not_connected()),
                }
            }
        };
        self.refresh.notify_one();
        r
    }

    async fn act_xmlrpc(
        &self,
        c: &xmlrpc::XmlRpcClient,
        action: Action,
        target: &Target,
    ) -> Result<Vec<ProcessResult>, CallError> {
        let deadline = self.timing.action_timeout;
        match target {
            Target::Process(full) => {
                let (group, name) = full.split_once(':').unwrap_or((full, full));
                let one = |code: i64, message: String| ProcessResult {
                    name: name.to_string(),
                    group: group.to_string(),
                    status: if code == SUCCESS { "success" } else { "error" },
                    code,
                    message,
                };
                let arg = [Value::from(full.as_str())];
                let call = |method: &'static str| c.call(method, &arg, deadline);
                if matches!(action, Action::Stop | Action::Restart) {
                    match call("supervisor.stopProcess").await {
                        Ok(_) => {}
                        Err(CallError::Fault(f)) if action == Action::Restart && f.code == NOT_RUNNING => {}
                        Err(CallError::Fault(f)) => return Ok(vec![one(f.code, f.string)]),
                        Err(e) => return Err(e),
                    }
                }
                if matches!(action, Action::Start | Action::Restart) {
                    match call("supervisor.startProcess").await {
                        Ok(_) => {}
                        Err(CallError::Fault(f)) => return Ok(vec![one(f.code, f.string)]),
                        Err(e) => return Err(e),
                    }
                }
                Ok(vec![one(SUCCESS, String::new())])
            }
            Target::Group(_) | Target::All => {
                let (stop, start, args) = match target {
                    Target::Group(g) => (
                        "supervisor.stopProcessGroup",
                        "supervisor.startProcessGroup",
                        vec![Value::from(g.as_str())],
                    ),
                    _ => ("supervisor.stopAllProcesses", "supervisor.startAllProcesses", vec![]),
                };
                let mut results = Vec::new();
                if matches!(action, Action::Stop | Action::Restart) {
                    results.extend(group_results(c.call(stop, &args, deadline).await)?);
                }
                if matches!(action, Action::Start | Action::Restart) {
                    results.extend(group_results(c.call(start, &args, deadline).await)?);
                }
                Ok(results)
            }
        }
    }

    /// The last [`LOG_BYTES`] of the process's stdout and stderr, as lines.
    pub async fn tail(&self, full: &str) -> Result<Logs, CallError> {
        let deadline = self.timing.call_timeout;
        match &self.conn {
            Conn::XmlRpc(c) => {
                let read = |method: &'static str| async move {
                    let args = [Value::from(full), Value::Int(0), Value::Int(LOG_BYTES as i64)];
                    match c.call(method, &args, deadline).await {
                        // [text, offset, overflow]: overflow means the tail starts mid-file.
                        Ok(Value::Array(v)) => {
                            let text = match v.first() {
                                Some(Value::String(s)) => s.clone(),
                                _ => String::new(),
                            };
                            let cut = matches!(v.get(2), Some(Value::Bool(true)));
                            Ok(lines(&text, cut))
                        }
                        Ok(_) => {
                            Err(CallError::Protocol("a tail that is not [text, offset, overflow]".into()))
                        }
                        // No such log (stderr redirected, or not captured): no lines.
                        Err(CallError::Fault(f)) if f.code == 20 || f.string.starts_with("NO_FILE") => {
                            Ok(vec![])
                        }
                        Err(e) => Err(e),
                    }
                };
                let (out, err) = tokio::join!(
                    read("supervisor.tailProcessStdoutLog"),
                    read("supervisor.tailProcessStderrLog")
                );
                Ok(Logs { stdout: out?, stderr: err? })
            }
            Conn::Grpc(slot) => {
                let client = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match client {
                    Some(c) => grpc::tail(c, full, deadline).await,
                    None => Err(self.not_connected()),
                }
            }
        }
    }
}

/// The results of `start/stopProcessGroup` or `start/stopAllProcesses`: an array of
/// `{name, group, status, description}`.
fn group_results(r: Result<Value, CallError>) -> Result<Vec<ProcessResult>, CallError> {
    let v = r?;
    let Value::Array(items) = v else {
        return Err(CallError::Protocol("a group action's answer is not an array".into()));
    };
    Ok(items
        .iter()
        .map(|item| {
            let text = |k: &str| match item.member(k) {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            let code = match item.member("status") {
                Some(Value::Int(n)) => *n,
                _ => 0,
            };
            ProcessResult {
                name: text("name"),
                group: text("group"),
                status: if code == SUCCESS { "success" } else { "error" },
                code,
                message: text("description"),
            }
        })
        .collect())
}

/// The task of a supervisord node: poll `getAllProcessInfo`, publish, wait, again.
async fn poll_xmlrpc(
    client: xmlrpc::XmlRpcClient,
    name: String,
    environment: String,
    timing: Timing,
    tx: watch::Sender<NodeView>,
    refresh: Arc<Notify>,
) {
    let mut backoff = Backoff::new(&name);
    loop {
        let wait = match client.call("supervisor.getAllProcessInfo", &[], timing.call_timeout).await {
            Ok(Value::Array(items)) => {
                let processes: Vec<Process> =
                    items.iter().filter_map(|v| Process::from_xmlrpc(v, &name, &environment)).collect();
                let was = tx.borrow().status;
                if was != Status::Connected {
                    tracing::info!(node = %name, "connected");
                }
                tx.send_replace(NodeView {
                    status: Status::Connected,
                    last_error: None,
                    last_seen: Some(SystemTime::now()),
                    processes: Arc::new(processes),
                });
                backoff.reset();
                timing.poll_interval
            }
            Ok(_) => {
                fail(&tx, &name, CallError::Protocol("getAllProcessInfo did not answer an array".into()));
                backoff.next_delay()
            }
            Err(e) => {
                fail(&tx, &name, e);
                backoff.next_delay()
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = refresh.notified() => {}
        }
    }
}

/// Publishes a failure: the status it means, the error, and no processes.
fn fail(tx: &watch::Sender<NodeView>, name: &str, e: CallError) {
    let message = e.to_string();
    let changed = tx.borrow().last_error.as_deref() != Some(message.as_str());
    if changed {
        tracing::warn!(node = %name, error = %message, "node not connected");
    }
    tx.send_modify(|v| {
        v.status = e.status();
        v.last_error = Some(message);
        v.processes = Arc::new(Vec::new());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new("n1");
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(375) && first <= Duration::from_millis(625), "{first:?}");
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
            assert!(last <= Backoff::CAP.mul_f64(1.25), "{last:?}");
        }
        assert!(last >= Backoff::CAP.mul_f64(0.75), "capped, not stuck low: {last:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(625));
        // Two nodes do not retry in lockstep.
        let (mut x, mut y) = (Backoff::new("a"), Backoff::new("b"));
        let xs: Vec<_> = (0..5).map(|_| x.next_delay()).collect();
        let ys: Vec<_> = (0..5).map(|_| y.next_delay()).collect();
        assert_ne!(xs, ys);
    }

    #[test]
    fn log_tails_become_lines() {
        assert_eq!(lines("a\nb\n", false), vec!["a", "b"]);
        assert_eq!(lines("tial\nb\nc", true), vec!["b", "c"]);
        assert_eq!(lines("", false), Vec::<String>::new());
    }
}
