//! One task per process owns its state: the lifecycle [`Machine`], the child, its timers.
//!
//! Everyone else holds a [`ProcessHandle`]: requests go to the task as [`Command`]s with a
//! `oneshot` reply, and the current state is read from a `watch` channel the task publishes
//! after every change — so reading status never waits on a busy process, and nothing but the
//! task ever changes its state.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use minder::config::{KillMode, ProcessConfig};
use minder::signal::Signal;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::capture;
use crate::cgroup::{Cgroups, ProcessCgroup};
use crate::events::{EventBus, EventKind, ProcessChange};
use crate::lifecycle::{self, Action, Ctx, Event, Exit, ExitStatus, Kind, Level, Machine, Policy, Refusal};
use crate::logs::LogChannel;
use crate::reaper::Reaper;
use crate::spawn::{self, BaseEnv, SpawnError};

/// Why a request about a process failed; each maps to one supervisord fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// No such process or group; says which, and suggests the right spelling when it can.
    #[error("{0}")]
    BadName(String),
    #[error("{0}")]
    NoFile(String),
    #[error("{0}")]
    NotExecutable(String),
    #[error("{0}")]
    Failed(String),
    #[error("exited before it was running")]
    AbnormalTermination,
    #[error("{0}")]
    SpawnError(String),
    #[error("already started")]
    AlreadyStarted,
    #[error("not running")]
    NotRunning,
    #[error("minderd is shutting down")]
    ShuttingDown,
}

/// What the process tasks share with the daemon.
#[derive(Debug)]
pub struct Shared {
    pub reaper: Arc<Reaper>,
    pub base_env: BaseEnv,
    /// The history of state changes, for event watchers.
    pub events: EventBus,
    /// Spawns attempted and spawns that failed, since minderd started (for metrics).
    pub spawns: std::sync::atomic::AtomicU64,
    pub spawn_failures: std::sync::atomic::AtomicU64,
    /// minderd's cgroup subtree, when processes get a cgroup each.
    pub cgroups: Option<Cgroups>,
    shutting_down: AtomicBool,
    /// The directory of the notify sockets (`ready = "notify"`), made at first use.
    notify_dir: std::sync::OnceLock<Result<tempfile::TempDir, String>>,
    /// After an upgrade: each process's state and child, for its task to take back.
    pub adoptions: crate::upgrade::Adoptions,
    /// When the daemon first started (before any upgrade), and how many upgrades since.
    pub started: SystemTime,
    pub upgrades: u32,
    pub upgrade_failure: Option<String>,
    /// Where `Supervisor::upgrade` sends its requests (to `run`), when this daemon can upgrade.
    pub(crate) upgrade_requests:
        std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<crate::upgrade::Call>>,
}

impl Shared {
    pub fn new(reaper: Arc<Reaper>, base_env: BaseEnv) -> Self {
        Shared {
            reaper,
            base_env,
            events: EventBus::new(),
            spawns: std::sync::atomic::AtomicU64::new(0),
            spawn_failures: std::sync::atomic::AtomicU64::new(0),
            cgroups: None,
            shutting_down: AtomicBool::new(false),
            notify_dir: std::sync::OnceLock::new(),
            adoptions: crate::upgrade::Adoptions::default(),
            started: SystemTime::now(),
            upgrades: 0,
            upgrade_failure: None,
            upgrade_requests: std::sync::OnceLock::new(),
        }
    }

    /// The notify sockets' directory, made on first use.
    fn notify_dir(&self) -> Result<&Path, String> {
        let dir = self.notify_dir.get_or_init(|| {
            crate::readiness::make_dir()
                .map_err(|e| format!("cannot make a directory for notify sockets: {e}"))
        });
        dir.as_ref().map(tempfile::TempDir::path).map_err(Clone::clone)
    }

    /// The same, with a cgroup per process under `cgroups`.
    pub fn with_cgroups(mut self, cgroups: Option<Cgroups>) -> Self {
        self.cgroups = cgroups;
        self
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// From now on nothing is started or restarted on its own. Returns false if it already was.
    pub fn begin_shutdown(&self) -> bool {
        !self.shutting_down.swap(true, Ordering::SeqCst)
    }
}

/// A process's standard descriptors: where its output goes (a log channel per captured output,
/// none where it is discarded or merged into stdout), and what its stdin is.
#[derive(Debug, Clone)]
pub struct Stdio {
    pub stdout: Option<Arc<LogChannel>>,
    pub stderr: Option<Arc<LogChannel>>,
    /// For a FastCGI program, the listening socket every process gets as its stdin; otherwise
    /// stdin is a pipe minderd writes to (SendStdin).
    pub socket: Option<Arc<std::os::fd::OwnedFd>>,
    /// Why the FastCGI socket could not be bound: every spawn fails with it.
    pub socket_error: Option<String>,
    /// For a process of an `[eventlistener:x]` pool, the pool's name: its stdout is the
    /// event listener protocol, and its stdin carries events.
    pub pool: Option<String>,
}

impl Stdio {
    /// Whether minderd reads the process's `stream` ("stdout" or "stderr") through a pipe: to
    /// its log file, as a listener's protocol, for capture mode and log events, or into the
    /// daemon's log at debug level (all of which want the output even when no file keeps it,
    /// as supervisord always reads it).
    pub fn reads(&self, config: &ProcessConfig, stream: &str) -> bool {
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        match stream {
            "stdout" => {
                self.stdout.is_some()
                    || self.pool.is_some()
                    || config.stdout_capture_maxbytes > 0
                    || config.stdout_events_enabled
                    || debug
            }
            _ => {
                !config.redirect_stderr
                    && (self.stderr.is_some()
                        || config.stderr_capture_maxbytes > 0
                        || config.stderr_events_enabled
                        || debug)
            }
        }
    }
}

/// A process as everyone but its task sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub state: Kind,
    pub pid: Option<u32>,
    /// When it was last spawned, and since when (monotonic) for uptime.
    pub start: Option<SystemTime>,
    pub up_since: Option<Instant>,
    /// When it last exited.
    pub stop: Option<SystemTime>,
    pub last_exit: Option<Exit>,
    pub spawn_error: Option<String>,
    pub spawn_count: u32,
    /// While STARTING without a child: what it waits for (`waiting for db`).
    pub waiting: Option<String>,
    /// The last STATUS=… the child sent on its notify socket (cleared at each spawn).
    pub status: Option<String>,
    /// Its probes' results for the current child (counts reset at each spawn; the totals
    /// of failures are kept), when it has those probes.
    pub readiness: Option<crate::probe::Tally>,
    pub liveness: Option<crate::probe::Tally>,
}

impl Snapshot {
    fn new() -> Self {
        Snapshot {
            state: Kind::Stopped,
            pid: None,
            start: None,
            up_since: None,
            stop: None,
            last_exit: None,
            spawn_error: None,
            spawn_count: 0,
            waiting: None,
            status: None,
            readiness: None,
            liveness: None,
        }
    }

    /// `probe: http 503 (2/3)` while a probe of the current child is failing: the liveness
    /// probe first (it is the one that restarts), else the readiness probe.
    fn probe_note(&self) -> Option<String> {
        let live = self.liveness.as_ref().filter(|_| self.state == Kind::Running).and_then(|t| t.failing());
        let failing = live.or_else(|| self.readiness.as_ref().and_then(|t| t.failing()))?;
        Some(format!("probe: {failing}"))
    }

    /// How long it has been up, while it has a child.
    pub fn uptime(&self) -> Option<Duration> {
        match self.state {
            Kind::Starting | Kind::Running | Kind::Stopping => self.up_since.map(|t| t.elapsed()),
            _ => None,
        }
    }

    /// The description supervisorctl prints (rpcinterface's `_interpretProcessInfo`).
    pub fn description(&self, name: &str) -> String {
        match self.state {
            Kind::Running => {
                let up = self.uptime().unwrap_or_default().as_secs();
                let mut d = format!("pid {}, uptime {}", self.pid.unwrap_or(0), python_timedelta(up));
                for note in [self.status.clone(), self.probe_note()].into_iter().flatten() {
                    d.push_str(", ");
                    d.push_str(&note);
                }
                d
            }
            Kind::Backoff | Kind::Fatal => match &self.spawn_error {
                Some(e) if !e.is_empty() => e.clone(),
                _ => format!("unknown error (try \"tail {name}\")"),
            },
            Kind::Stopped | Kind::Exited => match self.stop.or(self.start) {
                Some(t) if self.start.is_some() => {
                    chrono::DateTime::<chrono::Local>::from(t).format("%b %d %I:%M %p").to_string()
                }
                _ => "Not started".to_string(),
            },
            Kind::Starting => self
                .waiting
                .clone()
                .or_else(|| self.status.clone())
                .or_else(|| self.probe_note())
                .unwrap_or_default(),
            Kind::Stopping => self.status.clone().unwrap_or_default(),
            _ => String::new(),
        }
    }
}

/// Python's `str(timedelta(seconds=n))`: "0:01:02", "1 day, 2:03:04", "3 days, 0:00:00".
pub fn python_timedelta(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let hms = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        d => format!("{d} days, {hms}"),
    }
}

/// How often a stop a client waits for is reported while the process is STOPPING
/// (supervisord's `stop_report`).
const STOP_REPORT_EVERY: Duration = Duration::from_secs(2);

/// How long a write to a child's stdin may wait for the child to read.
const STDIN_PATIENCE: Duration = Duration::from_secs(2);

/// Requests to a process's task.
#[derive(Debug)]
enum Command {
    Start {
        /// A request from a client (refused with NO_FILE/NOT_EXECUTABLE before anything
        /// changes) rather than autostart (whose spawn errors go through BACKOFF to FATAL).
        explicit: bool,
        /// Answered once the spawn has been tried.
        spawned: oneshot::Sender<Result<(), Fault>>,
        /// Answered once it is RUNNING or has failed to get there.
        settled: Option<oneshot::Sender<Result<(), Fault>>>,
        /// Its dependencies are not met: wait (STARTING without a child), saying this.
        wait_for: Option<String>,
    },
    /// The dependencies of a waiting process are met: spawn it (only if still waiting).
    Proceed,
    /// What a waiting process waits for now.
    Waiting {
        reason: String,
    },
    Stop {
        wait: bool,
        reply: oneshot::Sender<Result<(), Fault>>,
    },
    Signal {
        signal: Signal,
        reply: oneshot::Sender<Result<(), Fault>>,
    },
    /// Hands out the running child's stdin.
    Stdin {
        reply: oneshot::Sender<Result<Stdin, Fault>>,
    },
    /// An upgrade: the task hands over its state and does nothing more (the exec follows).
    HandOver {
        reply: oneshot::Sender<Handed>,
    },
}

/// A process's state for the next image, and the descriptors it names (kept open until the
/// exec; their numbers are in the state).
#[derive(Debug)]
pub struct Handed {
    pub state: crate::upgrade::ProcessState,
    pub fds: Vec<std::os::fd::OwnedFd>,
}

/// The write end of a running child's stdin. Writers queue on the lock in order; the process's
/// task never waits for the child to read.
pub type Stdin = Arc<tokio::sync::Mutex<tokio::net::unix::pipe::Sender>>;

/// The parent's end of a child's stdin pipe: registered with the reactor only when something
/// is first written, as most children never get a byte (no epoll entry to add and remove for
/// every spawn and exit).
#[derive(Debug)]
enum StdinEnd {
    Unused(std::os::fd::OwnedFd),
    Open(Stdin),
}

/// A handle on a process's task: cheap to clone, never blocks on the task to read state.
#[derive(Debug, Clone)]
pub struct ProcessHandle {
    pub config: Arc<ProcessConfig>,
    pub logs: Arc<Stdio>,
    tx: Outbox,
    snapshot: watch::Receiver<Snapshot>,
    /// Its cgroup's directory, when minderd uses cgroups (it exists from the first spawn).
    cgroup: Option<Arc<Path>>,
}

/// A process task's commands: a queue and a wake-up. (A tokio mpsc channel would allocate a
/// block of 32 slots, about 1.5 KB, for every process, busy or not.) It is unbounded, but
/// every sender waits for its reply, so it holds at most one command per request in flight.
#[derive(Debug, Default)]
struct Mailbox {
    queue: std::sync::Mutex<VecDeque<Command>>,
    ready: tokio::sync::Notify,
    /// Live [`Outbox`]es; at zero the task learns that every handle is gone.
    senders: AtomicUsize,
    /// The task has ended: nothing more is taken.
    closed: AtomicBool,
}

impl Mailbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Command>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side, one per handle.
#[derive(Debug)]
struct Outbox(Arc<Mailbox>);

impl Outbox {
    fn new() -> (Outbox, Inbox) {
        let mailbox = Arc::new(Mailbox { senders: AtomicUsize::new(1), ..Mailbox::default() });
        (Outbox(Arc::clone(&mailbox)), Inbox(mailbox))
    }

    /// Queues `cmd`, or hands it back if the task has ended.
    fn send(&self, cmd: Command) -> Result<(), Command> {
        let mut queue = self.0.queue();
        if self.0.closed.load(Ordering::Acquire) {
            return Err(cmd);
        }
        queue.push_back(cmd);
        drop(queue);
        self.0.ready.notify_one();
        Ok(())
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Outbox(Arc::clone(&self.0))
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ready.notify_one();
        }
    }
}

/// The task's side. Dropped (the task ended, even by a panic), it refuses further commands
/// and drops the queued ones, so their senders hear that the process is gone.
struct Inbox(Arc<Mailbox>);

impl Inbox {
    /// The next command, or None once every handle is gone. Cancel-safe: a command is taken
    /// from the queue only when it is returned.
    async fn recv(&self) -> Option<Command> {
        loop {
            if let Some(cmd) = self.0.queue().pop_front() {
                return Some(cmd);
            }
            if self.0.senders.load(Ordering::Acquire) == 0 {
                return None;
            }
            // notify_one keeps a permit when nobody waits, so a send between the checks
            // above and this wait is not missed.
            self.0.ready.notified().await;
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut queue = self.0.queue();
        self.0.closed.store(true, Ordering::Release);
        let pending = std::mem::take(&mut *queue);
        drop(queue);
        drop(pending);
    }
}

/// A start that has spawned and may still be on its way to RUNNING.
#[derive(Debug)]
pub struct Started(Option<oneshot::Receiver<Result<(), Fault>>>);

impl Started {
    /// Waits until the process is RUNNING or has failed (immediately if not waiting).
    pub async fn settled(self) -> Result<(), Fault> {
        match self.0 {
            Some(rx) => rx.await.unwrap_or(Err(gone())),
            None => Ok(()),
        }
    }
}

fn gone() -> Fault {
    Fault::Failed("the process was removed".into())
}

impl ProcessHandle {
    /// Starts the task that owns the process. It runs until every handle is dropped and the
    /// process has no child.
    pub fn spawn(config: Arc<ProcessConfig>, logs: Stdio, shared: Arc<Shared>) -> ProcessHandle {
        let logs = Arc::new(logs);
        let cgroup = shared.cgroups.as_ref().and_then(|c| c.dir_for(&config.full_name())).map(Arc::from);
        let (tx, rx) = Outbox::new();
        let (snap_tx, snapshot) = watch::channel(Snapshot::new());
        let adopted = shared.adoptions.take(&config.full_name());
        let mut actor = Actor {
            policy: policy(&config),
            config: Arc::clone(&config),
            logs: Arc::clone(&logs),
            machine: Machine::new(),
            shared,
            child: None,
            pidfd: None,
            stdin: None,
            snapshot: snap_tx,
            start_wall: None,
            up_since: None,
            stop_wall: None,
            spawn_count: 0,
            start_waiters: Vec::new(),
            stop_waiters: Vec::new(),
            checked_path: None,
            cgroup: None,
            oom_kills: 0,
            limits_warned: false,
            listener_pid: None,
            waiting: None,
            notify: None,
            status: None,
            main_pid: None,
            probing: None,
            readiness: None,
            liveness: None,
        };
        if let Some(adopted) = adopted {
            actor.adopt(adopted);
        }
        tokio::spawn(actor.run(rx));
        ProcessHandle { config, logs, tx, snapshot, cgroup }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Reads the current snapshot in place, without copying it (listings of thousands).
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.snapshot.borrow())
    }

    /// For an upgrade, once the reaper is frozen: the process's state, after which its task
    /// does nothing more. `None` if the task has ended.
    pub async fn hand_over(&self) -> Option<Handed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::HandOver { reply }).ok()?;
        rx.await.ok()
    }

    /// The process's snapshots as they change; the receiver closes when the process's task
    /// ends (the process was removed and has no child).
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    /// Starts the process as a client asked; answers once the spawn was tried. With `wait`,
    /// the returned [`Started`] settles when it is RUNNING or has failed.
    pub async fn start(&self, wait: bool) -> Result<Started, Fault> {
        self.start_as(true, wait, None).await
    }

    /// Starts the process because it is configured to autostart.
    pub async fn autostart(&self) -> Result<Started, Fault> {
        self.start_as(false, false, None).await
    }

    /// Starts the process once its dependencies are met: until [`ProcessHandle::proceed`], it
    /// is STARTING without a child, its description `reason`.
    pub async fn start_waiting(&self, explicit: bool, wait: bool, reason: String) -> Result<Started, Fault> {
        self.start_as(explicit, wait, Some(reason)).await
    }

    /// Its dependencies are met: spawns it if it is still waiting for them (a stop since then
    /// wins).
    pub fn proceed(&self) {
        let _ = self.tx.send(Command::Proceed);
    }

    /// Says what a waiting process waits for now.
    pub fn set_waiting(&self, reason: String) {
        let _ = self.tx.send(Command::Waiting { reason });
    }

    async fn start_as(&self, explicit: bool, wait: bool, wait_for: Option<String>) -> Result<Started, Fault> {
        let (spawned, spawned_rx) = oneshot::channel();
        let (settled, settled_rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.tx.send(Command::Start { explicit, spawned, settled, wait_for }).map_err(|_| gone())?;
        spawned_rx.await.unwrap_or(Err(gone()))?;
        Ok(Started(settled_rx))
    }

    /// Stops the process; with `wait`, answers once it has stopped.
    pub async fn stop(&self, wait: bool) -> Result<(), Fault> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Stop { wait, reply }).map_err(|_| gone())?;
        rx.await.unwrap_or(Err(gone()))
    }

    /// Stops the process and waits until it has stopped, logging `waiting for NAME to stop`
    /// meanwhile (once the stop signal is sent, then every 2 s while it is STOPPING), as
    /// supervisord does while a client waits for a stop.
    pub async fn stop_and_report(&self) -> Result<(), Fault> {
        // Answered once the stop signal has been sent: the process is STOPPING (or stopped).
        self.stop(false).await?;
        let mut snapshot = self.snapshot.clone();
        let mut report = tokio::time::interval(STOP_REPORT_EVERY);
        loop {
            let state = snapshot.borrow_and_update().state;
            if state.is_stopped() {
                return Ok(());
            }
            tokio::select! {
                _ = report.tick() => {
                    if state == Kind::Stopping {
                        tracing::info!("waiting for {} to stop", self.config.name);
                    }
                }
                changed = snapshot.changed() => {
                    if changed.is_err() {
                        return Err(gone());
                    }
                }
            }
        }
    }

    /// What its cgroup holds now: every pid of its tree, and what they use. `None` without
    /// cgroups, or before its first spawn.
    pub fn tree(&self) -> Option<crate::cgroup::Tree> {
        crate::cgroup::tree(self.cgroup.as_deref()?)
    }

    /// Sends a signal without changing the process's state.
    pub async fn signal(&self, signal: Signal) -> Result<(), Fault> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Signal { signal, reply }).map_err(|_| gone())?;
        rx.await.unwrap_or(Err(gone()))
    }

    /// Writes `data` to the running child's stdin. A child that does not read its stdin must
    /// not hold the caller (or later writers) forever: if the pipe cannot take the data within
    /// [`STDIN_PATIENCE`], the write fails, saying how much was written.
    pub async fn send_stdin(&self, data: &[u8]) -> Result<(), Fault> {
        use tokio::io::AsyncWriteExt;
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Stdin { reply }).map_err(|_| gone())?;
        let stdin = rx.await.unwrap_or(Err(gone()))?;
        let name = &self.config.name;
        let write = async {
            let mut pipe = stdin.lock().await;
            let mut written = 0;
            while written < data.len() {
                match pipe.write(&data[written..]).await {
                    Ok(n) => written += n,
                    Err(e) => return Err((written, e.to_string())),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(STDIN_PATIENCE, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((n, e))) => Err(Fault::Failed(format!(
                "cannot write to the stdin of {name} ({n} of {} bytes written): {e}",
                data.len()
            ))),
            Err(_) => Err(Fault::Failed(format!(
                "{name} is not reading its stdin (the pipe stayed full for {} s)",
                STDIN_PATIENCE.as_secs()
            ))),
        }
    }
}

fn policy(c: &ProcessConfig) -> Policy {
    Policy {
        startsecs: c.startsecs,
        startretries: c.startretries,
        backoff: c.backoff,
        autorestart: c.autorestart,
        exitcodes: c.exitcodes.clone(),
        oneshot: c.oneshot,
        notify: c.ready == minder::config::Ready::Notify,
        probe: c.ready == minder::config::Ready::Probe,
        ready_timeout: c.ready_timeout,
        watchdog: c.watchdog_sec,
        stopsignal: c.stopsignal,
        stopwaitsecs: c.stopwaitsecs,
        // kill_mode, when set, decides; `cgroup` falls back to the process group where there
        // is no cgroup (and the group is also where the stop signal goes first).
        stopasgroup: c.kill_mode.map_or(c.stopasgroup, |m| m != KillMode::Process),
        killasgroup: c.kill_mode.map_or(c.killasgroup, |m| m != KillMode::Process),
    }
}

/// A sample in [0, 1) for the backoff's jitter. Not cryptographic, need not be: it only
/// keeps programs that fail together from retrying in step. std's `RandomState` is seeded
/// per instance from the OS, so each call gets fresh bits without a crate for it.
fn jitter_sample() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn refusal_fault(r: Refusal) -> Fault {
    match r {
        Refusal::AlreadyStarted => Fault::AlreadyStarted,
        Refusal::NotRunning => Fault::NotRunning,
        Refusal::Stopping => Fault::Failed("it is stopping; start it once it has stopped".into()),
        Refusal::Unknown => Fault::Failed("it is in an unknown state".into()),
    }
}

/// The task that owns one process.
struct Actor {
    config: Arc<ProcessConfig>,
    logs: Arc<Stdio>,
    policy: Policy,
    machine: Machine,
    shared: Arc<Shared>,
    /// The current child's pid and where its exit will arrive.
    child: Option<(u32, oneshot::Receiver<ExitStatus>)>,
    /// A pidfd for the current child, until its exit has arrived.
    pidfd: Option<std::os::fd::OwnedFd>,
    /// The write end of the current child's stdin (closed when the child is gone).
    stdin: Option<StdinEnd>,
    snapshot: watch::Sender<Snapshot>,
    start_wall: Option<SystemTime>,
    up_since: Option<Instant>,
    stop_wall: Option<SystemTime>,
    spawn_count: u32,
    start_waiters: Vec<oneshot::Sender<Result<(), Fault>>>,
    stop_waiters: Vec<oneshot::Sender<Result<(), Fault>>>,
    /// The executable an explicit start has just checked, for the spawn that follows it.
    checked_path: Option<PathBuf>,
    /// The process's cgroup, made at its first spawn (when minderd uses cgroups).
    cgroup: Option<ProcessCgroup>,
    /// Its cgroup's OOM kills so far, to tell an OOM kill from another SIGKILL.
    oom_kills: u64,
    /// Limits without cgroups have been warned of.
    limits_warned: bool,
    /// For a listener, the child its pool was told of (until the pool hears it is gone).
    listener_pid: Option<u32>,
    /// While waiting for dependencies, what for.
    waiting: Option<String>,
    /// Its notify socket (`ready = "notify"`), bound at its first spawn.
    notify: Option<Arc<crate::readiness::NotifySocket>>,
    /// The child's STATUS=… and MAINPID=…, for this spawn.
    status: Option<String>,
    main_pid: Option<u32>,
    /// The probe tasks of the current child, when the program has probes.
    probing: Option<Probing>,
    /// The probes' results (see [`Snapshot::readiness`]).
    readiness: Option<crate::probe::Tally>,
    liveness: Option<crate::probe::Tally>,
}

/// The probe tasks of one child, and where their results arrive.
struct Probing {
    pid: u32,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    reports: tokio::sync::mpsc::UnboundedReceiver<crate::probe::Report>,
}

impl Drop for Probing {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Actor {
    async fn run(mut self, rx: Inbox) {
        let mut handles_gone = false;
        loop {
            if handles_gone && self.machine.state.pid().is_none() {
                break;
            }
            let deadline = lifecycle::deadline(&self.machine.state, &self.policy);
            let notify = self.notify.clone();
            tokio::select! {
                msg = async { notify.as_ref().expect("guarded by the condition").recv().await }, if notify.is_some() => {
                    match msg {
                        Ok((sender, datagram)) => Box::pin(self.notified(sender, &datagram)).await,
                        Err(e) => {
                            // A socket that fails to read will not recover: stop listening.
                            tracing::warn!("{}: the notify socket failed: {e}", self.config.name);
                            self.notify = None;
                        }
                    }
                }
                report = async { self.probing.as_mut().expect("guarded by the condition").reports.recv().await },
                    if self.probing.is_some() =>
                {
                    if let Some(report) = report {
                        Box::pin(self.probed(report)).await;
                    }
                }
                cmd = rx.recv(), if !handles_gone => match cmd {
                    Some(cmd) => Box::pin(self.command(cmd)).await,
                    None => handles_gone = true,
                },
                status = async { self.child.as_mut().map(|(_, rx)| rx).expect("guarded by the condition").await },
                    if self.child.is_some() =>
                {
                    let (pid, _) = self.child.take().expect("guarded by the condition");
                    Box::pin(self.exited(pid, status.ok())).await;
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let _ = Box::pin(self.feed(Event::Timer)).await;
                }
            }
        }
    }

    /// The child `pid` has ended (`None`: its registration was dropped, which the reaper
    /// never does).
    async fn exited(&mut self, pid: u32, status: Option<ExitStatus>) {
        self.pidfd = None;
        match status {
            Some(mut status) => {
                self.drain_cgroup().await;
                self.mark_oom(&mut status);
                self.stop_wall = Some(SystemTime::now());
                self.stdin = None;
                let _ = Box::pin(self.feed(Event::Exited { pid, status })).await;
            }
            None => tracing::error!("lost track of {} (pid {pid})", self.config.name),
        }
    }

    /// The process's state for the next image. The reaper is frozen by now; an exit it reaped
    /// before is taken first, so the state never names a child that is gone.
    async fn save(&mut self) -> Handed {
        if let Some((pid, rx)) = &mut self.child {
            let pid = *pid;
            match rx.try_recv() {
                Ok(status) => {
                    self.child = None;
                    Box::pin(self.exited(pid, Some(status))).await;
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.child = None;
                    Box::pin(self.exited(pid, None)).await;
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        let now = Instant::now();
        let mut fds = Vec::new();
        let mut keep = |fd: std::io::Result<std::os::fd::OwnedFd>| match fd {
            Ok(fd) => {
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                fds.push(fd);
                Some(raw)
            }
            Err(e) => {
                tracing::error!("cannot hand over the stdin of {}: {e}", self.config.name);
                None
            }
        };
        let stdin = match &self.stdin {
            Some(StdinEnd::Unused(fd)) => keep(crate::upgrade::inheritable(fd)),
            // A write in progress finishes first (it has STDIN_PATIENCE at most).
            Some(StdinEnd::Open(pipe)) => {
                let pipe = Arc::clone(pipe);
                let pipe = pipe.lock().await;
                keep(crate::upgrade::inheritable(&*pipe))
            }
            None => None,
        };
        use crate::upgrade::{unix_ms, Saved, SavedExit};
        let state = crate::upgrade::ProcessState {
            full_name: self.config.full_name(),
            state: Saved::of(&self.machine.state, now),
            start_ms: self.start_wall.map(unix_ms),
            up_for_ms: self
                .up_since
                .map(|t| u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)),
            stop_ms: self.stop_wall.map(unix_ms),
            spawn_count: self.spawn_count,
            last_exit: self.machine.last_exit.as_ref().map(SavedExit::of),
            spawn_error: self.machine.spawn_error.clone(),
            stdin,
            stdout: None,
            stderr: None,
        };
        Handed { state, fds }
    }

    /// Takes back the state and child an earlier image handed over (an upgrade).
    fn adopt(&mut self, a: crate::upgrade::Adopted) {
        let now = Instant::now();
        let saved = a.saved;
        self.machine.state = saved.state.state(now);
        self.machine.last_exit = saved.last_exit.map(|e| e.exit());
        self.machine.spawn_error = saved.spawn_error;
        self.start_wall = saved.start_ms.map(crate::upgrade::from_unix_ms);
        self.up_since = saved.up_for_ms.map(|m| now.checked_sub(Duration::from_millis(m)).unwrap_or(now));
        self.stop_wall = saved.stop_ms.map(crate::upgrade::from_unix_ms);
        self.spawn_count = saved.spawn_count;
        if self.spawn_count > 0 {
            // Its cgroup exists, and its child is in it.
            if let Err(e) = self.cgroup() {
                tracing::error!("{e}");
            }
        }
        if let Some(pid) = saved.state.pid() {
            match a.exit {
                Some(forked) => {
                    self.child = Some((pid, forked.exit));
                    self.pidfd = forked.pidfd;
                }
                None => tracing::error!("lost track of {} (pid {pid}) in the upgrade", self.config.name),
            }
            self.stdin = a.stdin.map(StdinEnd::Unused);
            self.capture(pid, a.stdout, a.stderr);
        }
        self.publish(Vec::new());
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::HandOver { reply } => {
                let handed = self.save().await;
                let _ = reply.send(handed);
                // Nothing more: the exec follows, and the next image carries on.
                std::future::pending::<()>().await;
            }
            Command::Start { explicit, spawned, settled, wait_for } => {
                // As supervisord's startProcess: a command that cannot run is refused before
                // anything changes.
                if explicit {
                    match spawn::resolve_executable(&self.config, &self.shared.base_env) {
                        Ok(path) => self.checked_path = Some(path),
                        Err(e) => {
                            let fault = match e {
                                SpawnError::NoFile(m) => Fault::NoFile(m),
                                SpawnError::NotExecutable(m) => Fault::NotExecutable(m),
                                SpawnError::NoDescriptors(m) | SpawnError::Other(m) => Fault::Failed(m),
                            };
                            let _ = spawned.send(Err(fault));
                            return;
                        }
                    }
                }
                let waiting = wait_for.is_some();
                if let Some(reason) = wait_for {
                    self.waiting = Some(reason);
                }
                let fed = self.feed(if waiting { Event::Wait } else { Event::Start }).await;
                // Only the spawn this start made (if any) may use the checked path.
                self.checked_path = None;
                if let Err(r) = fed {
                    if waiting && self.machine.state != lifecycle::State::Waiting {
                        self.waiting = None;
                    }
                    let _ = spawned.send(Err(refusal_fault(r)));
                    return;
                }
                match self.machine.state.kind() {
                    Kind::Starting | Kind::Running => {
                        let _ = spawned.send(Ok(()));
                        if let Some(s) = settled {
                            self.start_waiters.push(s);
                            self.settle();
                        }
                    }
                    _ => {
                        let why = self.machine.spawn_error.clone().unwrap_or_default();
                        let _ = spawned.send(Err(Fault::SpawnError(why)));
                    }
                }
            }
            Command::Proceed => {
                if self.machine.state == lifecycle::State::Waiting && !self.shared.shutting_down() {
                    let _ = self.feed(Event::Start).await;
                }
            }
            Command::Waiting { reason } => {
                if self.machine.state == lifecycle::State::Waiting && self.waiting.as_ref() != Some(&reason) {
                    self.waiting = Some(reason);
                    self.publish(Vec::new());
                }
            }
            Command::Stop { wait, reply } => match self.feed(Event::Stop).await {
                Err(r) => drop(reply.send(Err(refusal_fault(r)))),
                Ok(()) if !wait => drop(reply.send(Ok(()))),
                Ok(()) => {
                    self.stop_waiters.push(reply);
                    self.settle();
                }
            },
            Command::Signal { signal, reply } => {
                let result = match self.feed(Event::Signal(signal)).await {
                    Err(r) => Err(refusal_fault(r)),
                    Ok(()) if self.machine.state.kind() == Kind::Unknown => {
                        Err(Fault::Failed(format!("could not signal {}", self.config.name)))
                    }
                    Ok(()) => Ok(()),
                };
                let _ = reply.send(result);
            }
            Command::Stdin { reply } => {
                let result = match self.machine.state.kind() {
                    Kind::Starting | Kind::Running | Kind::Stopping => self.open_stdin(),
                    _ => Err(Fault::NotRunning),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Runs `event` through the machine, carries out the actions (feeding back what they
    /// cause), then answers waiters and publishes the new state. Only the first event can be
    /// refused.
    async fn feed(&mut self, event: Event) -> Result<(), Refusal> {
        let mut queue = VecDeque::from([event]);
        let mut first = true;
        let mut changes = Vec::new();
        while let Some(ev) = queue.pop_front() {
            let ctx = Ctx {
                now: Instant::now(),
                name: &self.config.name,
                policy: &self.policy,
                shutting_down: self.shared.shutting_down(),
                jitter: jitter_sample(),
            };
            let step = match lifecycle::step(&self.machine, ev, &ctx) {
                Ok(step) => step,
                Err(r) if first => return Err(r),
                Err(_) => continue,
            };
            first = false;
            let now = ctx.now;
            // Events name the child concerned: the new one, or the one that just ended.
            let pid = step.machine.state.pid().or(self.machine.state.pid());
            self.machine = step.machine;
            for action in step.actions {
                match action {
                    Action::Spawn => {
                        let ev = self.spawn().await;
                        queue.push_back(ev);
                    }
                    Action::Kill { signal, group } => {
                        if let Some(ev) = self.kill(signal, group) {
                            queue.push_back(ev);
                        }
                    }
                    Action::Transition { from, to } => {
                        if to == Kind::Starting {
                            self.start_wall = Some(SystemTime::now());
                            self.up_since = Some(now);
                        }
                        // Failed starts so far, as supervisord's `backoff` counts them. A
                        // step that gives up goes through BACKOFF to FATAL at once: that
                        // BACKOFF was failure number startretries + 1.
                        let tries = match self.machine.state {
                            lifecycle::State::Starting { attempt, .. }
                            | lifecycle::State::Backoff { attempt, .. } => attempt,
                            lifecycle::State::Fatal if to == Kind::Backoff => {
                                self.policy.startretries.saturating_add(1)
                            }
                            _ => 0,
                        };
                        changes.push(ProcessChange {
                            tries,
                            name: self.config.name.clone(),
                            group: self.config.group.clone(),
                            from,
                            to,
                            pid,
                            exit: if matches!(to, Kind::Exited | Kind::Stopped) {
                                self.machine.last_exit
                            } else {
                                None
                            },
                            spawn_error: if matches!(to, Kind::Backoff | Kind::Fatal) {
                                self.machine.spawn_error.clone()
                            } else {
                                None
                            },
                        });
                    }
                    Action::Log { level, message } => match level {
                        Level::Debug => tracing::debug!("{message}"),
                        Level::Info => tracing::info!("{message}"),
                        Level::Warn => tracing::warn!("{message}"),
                    },
                }
            }
        }
        self.settle();
        self.publish(changes);
        Ok(())
    }

    /// A datagram on the notify socket: acted on only if it comes from this process's child.
    async fn notified(&mut self, sender: Option<u32>, datagram: &[u8]) {
        let Some(child) = self.machine.state.pid() else { return };
        if !crate::readiness::trusted(sender, child, self.main_pid) {
            tracing::debug!(
                "{}: notify message from pid {sender:?} ignored: not the child ({child}) or its group",
                self.config.name
            );
            return;
        }
        for msg in crate::readiness::parse(datagram) {
            match msg {
                crate::readiness::Message::Ready => {
                    let _ = self.feed(Event::Ready).await;
                }
                crate::readiness::Message::Watchdog => {
                    let _ = self.feed(Event::Watchdog).await;
                }
                crate::readiness::Message::Status(s) => {
                    self.status = Some(s);
                    self.publish(Vec::new());
                }
                crate::readiness::Message::Stopping => {
                    tracing::info!("{}: the program says it is stopping (STOPPING=1)", self.config.name);
                    self.status = Some("stopping".into());
                    self.publish(Vec::new());
                }
                crate::readiness::Message::MainPid(pid) => {
                    tracing::info!("{}: main pid is now {pid} (MAINPID)", self.config.name);
                    self.main_pid = Some(pid);
                }
            }
        }
    }

    /// The notify socket's environment for the next spawn (binding the socket the first
    /// time), or why there can be none.
    fn notify_env(&mut self) -> Result<Vec<(String, String)>, SpawnError> {
        if !self.policy.notify {
            return Ok(Vec::new());
        }
        if self.notify.is_none() {
            let dir = self.shared.notify_dir().map_err(SpawnError::Other)?;
            let uid = match &self.config.user {
                Some(u) => Some(spawn::uid_of(u)?),
                None => None,
            };
            let sock =
                crate::readiness::NotifySocket::bind(dir, &self.config.full_name(), uid).map_err(|e| {
                    SpawnError::Other(format!("cannot make the notify socket of '{}': {e}", self.config.name))
                })?;
            self.notify = Some(Arc::new(sock));
        }
        let mut env = Vec::new();
        if let Some(sock) = &self.notify {
            env.push(("NOTIFY_SOCKET".to_string(), sock.path().display().to_string()));
        }
        if let Some(w) = self.policy.watchdog {
            env.push(("WATCHDOG_USEC".to_string(), w.as_micros().to_string()));
        }
        Ok(env)
    }

    /// Answers start and stop waiters whose outcome is now known (supervisord's `onwait`).
    fn settle(&mut self) {
        let kind = self.machine.state.kind();
        let outcome = match kind {
            Kind::Starting => None,
            Kind::Running => Some(Ok(())),
            // A one-shot program that completed did what a start asked of it.
            Kind::Exited if self.policy.oneshot && self.machine.last_exit.is_some_and(|e| e.expected) => {
                Some(Ok(()))
            }
            Kind::Backoff | Kind::Fatal if self.machine.spawn_error.is_some() => {
                Some(Err(Fault::SpawnError(self.machine.spawn_error.clone().unwrap_or_default())))
            }
            _ => Some(Err(Fault::AbnormalTermination)),
        };
        if let Some(outcome) = outcome {
            for w in self.start_waiters.drain(..) {
                let _ = w.send(outcome.clone());
            }
        }
        if kind.is_stopped() {
            for w in self.stop_waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
        }
    }

    /// Starts probing a new child (at its spawn, or adopted after an upgrade), and stops once
    /// the child has left STARTING/RUNNING.
    fn sync_probes(&mut self) {
        let pid = match self.machine.state {
            lifecycle::State::Starting { pid, .. } | lifecycle::State::Running { pid, .. } => Some(pid),
            _ => None,
        };
        if self.probing.as_ref().map(|p| p.pid) == pid {
            return;
        }
        self.probing = None;
        let Some(pid) = pid else { return };
        let probes = [
            (crate::probe::Which::Readiness, self.config.readiness_probe.clone()),
            (crate::probe::Which::Liveness, self.config.liveness_probe.clone()),
        ];
        if probes.iter().all(|(_, p)| p.is_none()) {
            return;
        }
        let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
        let ctx = crate::probe::Context {
            config: Arc::clone(&self.config),
            shared: Arc::clone(&self.shared),
            cgroup: self.cgroup.as_ref().map(|c| c.dir.clone()),
        };
        let mut tasks = Vec::new();
        for (which, probe) in probes {
            let Some(probe) = probe else { continue };
            let slot = match which {
                crate::probe::Which::Readiness => &mut self.readiness,
                crate::probe::Which::Liveness => &mut self.liveness,
            };
            let total = slot.as_ref().map_or(0, |t| t.failures_total);
            *slot = Some(crate::probe::Tally::new(&probe, total));
            tasks.push(tokio::spawn(crate::probe::run(which, pid, probe, ctx.clone(), tx.clone())));
        }
        self.probing = Some(Probing { pid, tasks, reports });
    }

    /// A probe's result: counted, and acted on (readiness gates STARTING with
    /// `ready = "probe"`; liveness restarts a RUNNING process that failed it too often).
    async fn probed(&mut self, report: crate::probe::Report) {
        use crate::probe::Which;
        if self.probing.as_ref().map(|p| p.pid) != Some(report.pid) {
            return;
        }
        let kind = self.machine.state.kind();
        let (probe, slot) = match report.which {
            Which::Readiness => (self.config.readiness_probe.as_ref(), &mut self.readiness),
            // Liveness counts only while RUNNING: a slow start is readiness's business.
            Which::Liveness if kind != Kind::Running => return,
            Which::Liveness => (self.config.liveness_probe.as_ref(), &mut self.liveness),
        };
        let (Some(probe), Some(tally)) = (probe, slot.as_mut()) else { return };
        let before = (tally.failures, tally.healthy, tally.last_failure.clone());
        tally.record(probe, &report.outcome);
        let (failures, healthy) = (tally.failures, tally.healthy);
        let changed = before != (tally.failures, tally.healthy, tally.last_failure.clone());
        let reason = tally.last_failure.clone().unwrap_or_default();
        let name = &self.config.name;
        match report.which {
            Which::Readiness if kind == Kind::Starting && self.policy.probe && healthy == Some(true) => {
                self.publish(Vec::new());
                let _ = self.feed(Event::Ready).await;
                return;
            }
            Which::Readiness if changed && before.1 == Some(true) && healthy == Some(false) => {
                tracing::warn!("readiness probe failed {failures} times: {name} ({reason}); not ready");
            }
            Which::Readiness if changed && before.1 == Some(false) && healthy == Some(true) => {
                tracing::info!("readiness probe passes again: {name}");
            }
            Which::Liveness if failures >= probe.failure_threshold => {
                self.publish(Vec::new());
                let _ = self.feed(Event::Unhealthy { failures, reason }).await;
                return;
            }
            _ => {}
        }
        if changed {
            self.publish(Vec::new());
        }
    }

    /// Publishes the state changes of one step, and the new snapshot with them, atomically
    /// with respect to event watchers.
    fn publish(&mut self, changes: Vec<ProcessChange>) {
        if self.machine.state != lifecycle::State::Waiting {
            self.waiting = None;
        }
        self.sync_probes();
        let snapshot = Snapshot {
            waiting: self.waiting.clone(),
            state: self.machine.state.kind(),
            pid: self.machine.state.pid(),
            start: self.start_wall,
            up_since: self.up_since,
            stop: self.stop_wall,
            last_exit: self.machine.last_exit,
            spawn_error: self.machine.spawn_error.clone(),
            spawn_count: self.spawn_count,
            status: self.status.clone(),
            readiness: self.readiness.clone(),
            liveness: self.liveness.clone(),
        };
        let (pid, running) = (snapshot.pid, snapshot.state == Kind::Running);
        let events = changes.into_iter().map(EventKind::Process);
        self.shared.events.publish_with(events, || self.snapshot.send_replace(snapshot));
        // A listener is sent events only while RUNNING; once its child is gone, the event it
        // had not answered goes back to its pool.
        if let (Some(pool), Some(child)) = (&self.logs.pool, self.listener_pid) {
            let alive = pid == Some(child);
            self.shared.events.listeners.process_state(pool, &self.config.name, child, alive, running);
            if !alive {
                self.listener_pid = None;
            }
        }
    }

    /// Spawns the child and starts capturing its output into its log channels.
    async fn spawn(&mut self) -> Event {
        self.shared.spawns.fetch_add(1, Ordering::Relaxed);
        let path = match self.checked_path.take() {
            Some(path) => Ok(path),
            None => spawn::resolve_executable(&self.config, &self.shared.base_env),
        };
        let path = path.and_then(|path| self.cgroup().map(|()| path));
        let env = path.and_then(|path| self.notify_env().map(|env| (path, env)));
        self.status = None;
        self.main_pid = None;
        let spawned = match env {
            Ok((path, env)) => {
                let (shared, cgroup) = (&self.shared, self.cgroup.as_ref());
                spawn::spawn(&self.config, path, &self.logs, &shared.base_env, &shared.reaper, cgroup, &env)
                    .await
            }
            Err(e) => Err(e),
        };
        match spawned {
            Ok(child) => {
                let hub = Arc::clone(&self.shared.events.listeners);
                // A listener is attached to its pool before its output is read: the READY it
                // writes at once must find the pool expecting it.
                self.stdin = child.stdin.map(StdinEnd::Unused);
                if let Some(pool) = self.logs.pool.clone() {
                    // A listener's stdin carries its events from now on.
                    match self.open_stdin() {
                        Ok(stdin) => {
                            hub.attach(&pool, &self.config.name, child.pid, stdin);
                            self.listener_pid = Some(child.pid);
                        }
                        Err(e) => tracing::error!("{}: {e}", self.config.name),
                    }
                }
                self.capture(child.pid, child.stdout, child.stderr);
                self.child = Some((child.pid, child.exit));
                self.pidfd = child.pidfd;
                self.spawn_count += 1;
                Event::Spawned { pid: child.pid }
            }
            Err(e) => {
                self.shared.spawn_failures.fetch_add(1, Ordering::Relaxed);
                let out_of_descriptors = matches!(e, SpawnError::NoDescriptors(_));
                Event::SpawnFailed { reason: e.to_string(), out_of_descriptors }
            }
        }
    }

    /// Starts capturing the child `pid`'s output pipes into its log channels.
    fn capture(&self, pid: u32, stdout: Option<std::os::fd::OwnedFd>, stderr: Option<std::os::fd::OwnedFd>) {
        let hub = &self.shared.events.listeners;
        let c = &self.config;
        let outputs = [
            ("stdout", stdout, &self.logs.stdout, c.stdout_events_enabled, c.stdout_capture_maxbytes),
            ("stderr", stderr, &self.logs.stderr, c.stderr_events_enabled, c.stderr_capture_maxbytes),
        ];
        for (stream, pipe, channel, events, capture_maxbytes) in outputs {
            let Some(pipe) = pipe else { continue };
            let mode = match &self.logs.pool {
                Some(pool) if stream == "stdout" => capture::Mode::Listener { pool: pool.clone() },
                _ => capture::Mode::Plain { events, capture_maxbytes },
            };
            let output = capture::Output {
                process: c.name.clone(),
                group: c.group.clone(),
                pid,
                stream,
                channel: channel.clone(),
                hub: Arc::clone(hub),
                mode,
            };
            capture::spawn(pipe, output);
        }
    }

    /// Makes the process's cgroup before its first spawn, when minderd uses cgroups. A
    /// process whose cgroup cannot be made is not started outside it.
    /// Its limits are set then, and a limit that cannot be enforced is warned of, once.
    fn cgroup(&mut self) -> Result<(), SpawnError> {
        if self.cgroup.is_some() {
            return Ok(());
        }
        let limits = &self.config.limits;
        match &self.shared.cgroups {
            Some(cgroups) => {
                let cg = cgroups.for_process(&self.config.full_name()).map_err(|e| {
                    SpawnError::Other(format!("cannot make the cgroup of '{}': {e}", self.config.name))
                })?;
                for (option, why) in cgroups.apply(&cg.dir, limits) {
                    tracing::warn!("{option} of {} is not enforced: {why}", self.config.name);
                }
                self.oom_kills = cg.oom_kills();
                self.cgroup = Some(cg);
            }
            None if !limits.is_empty() && !self.limits_warned => {
                self.limits_warned = true;
                for (option, ..) in limits.files() {
                    tracing::warn!(
                        "{option} of {} is not enforced: minderd uses no cgroups",
                        self.config.name
                    );
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Marks a SIGKILL as the OOM killer's when its cgroup counted a new OOM kill.
    fn mark_oom(&mut self, status: &mut ExitStatus) {
        let Some(cg) = &self.cgroup else { return };
        let kills = cg.oom_kills();
        if kills > self.oom_kills {
            self.oom_kills = kills;
            if let ExitStatus::Signal { signal, oom, .. } = status {
                *oom = *signal == libc::SIGKILL;
            }
        }
    }

    /// The process's cgroup, when it is stopped as a cgroup (`kill_mode = "cgroup"`).
    fn cgroup_mode(&self) -> Option<&ProcessCgroup> {
        self.cgroup.as_ref().filter(|_| self.config.kill_mode == Some(KillMode::Cgroup))
    }

    /// In kill_mode cgroup, once the main process has exited: what is left in its cgroup gets
    /// until the stop's SIGKILL deadline (none if it was not being stopped), then SIGKILL, and
    /// the exit counts only once the cgroup is empty — so a restart starts clean.
    async fn drain_cgroup(&self) {
        let Some(cg) = self.cgroup_mode() else { return };
        if !cg.populated() {
            return;
        }
        if let lifecycle::State::Stopping { kill_at: Some(at), .. } = self.machine.state {
            let left = at.saturating_duration_since(Instant::now());
            if cg.emptied(left).await {
                return;
            }
        }
        let left = cg.pids();
        tracing::info!(
            "killing what is left of {} in its cgroup: {} process(es), pids {:?}",
            self.config.name,
            left.len(),
            left
        );
        cg.kill();
        if !cg.emptied(Duration::from_secs(5)).await {
            tracing::warn!("the cgroup of {} is still not empty 5 s after SIGKILL", self.config.name);
        }
    }

    /// The running child's stdin, registered with the reactor on first use.
    fn open_stdin(&mut self) -> Result<Stdin, Fault> {
        match self.stdin.take() {
            Some(StdinEnd::Open(stdin)) => {
                self.stdin = Some(StdinEnd::Open(Arc::clone(&stdin)));
                Ok(stdin)
            }
            Some(StdinEnd::Unused(fd)) => match tokio::net::unix::pipe::Sender::from_owned_fd(fd) {
                Ok(pipe) => {
                    let stdin = Arc::new(tokio::sync::Mutex::new(pipe));
                    self.stdin = Some(StdinEnd::Open(Arc::clone(&stdin)));
                    Ok(stdin)
                }
                Err(e) => {
                    Err(Fault::Failed(format!("cannot write to the stdin of {}: {e}", self.config.name)))
                }
            },
            None => Err(Fault::NotRunning),
        }
    }

    /// Signals the child (or its process group), only while its exit has not been reaped:
    /// the pid, and the group id that is the same number, may belong to someone else after.
    /// A child already gone is not a failure: its exit is on its way through the reaper.
    fn kill(&self, signal: Signal, group: bool) -> Option<Event> {
        let pid = self.machine.state.pid()?;
        // A stop in kill_mode cgroup: the stop signal to every process of the cgroup, SIGKILL
        // to all of them at once. (A signal request is the main process's only, as ever.)
        if let Some(cg) = self.cgroup_mode().filter(|_| self.machine.state.kind() == Kind::Stopping) {
            if signal == Signal::SIGKILL {
                cg.kill();
                return None;
            }
            cg.signal_each(signal, Some(pid));
            // The main process below, alone: its group is in the cgroup, so each gets one.
            return self.signal_main(pid, signal, false);
        }
        self.signal_main(pid, signal, group)
    }

    /// Signals the main process (or its group) through its pidfd, only while unreaped.
    fn signal_main(&self, pid: u32, signal: Signal, group: bool) -> Option<Event> {
        let pidfd = self.pidfd.as_ref().map(std::os::fd::AsFd::as_fd);
        match self.shared.reaper.signal(pid as i32, pidfd, signal, group) {
            Ok(true) => None,
            Ok(false) => {
                tracing::debug!(
                    "unable to signal {} (pid {pid}), it probably just exited on its own",
                    self.config.name
                );
                None
            }
            Err(e) => Some(Event::SignalFailed { reason: spawn::errno_text(e) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timedelta_like_python() {
        assert_eq!(python_timedelta(0), "0:00:00");
        assert_eq!(python_timedelta(62), "0:01:02");
        assert_eq!(python_timedelta(3600 * 25 + 1), "1 day, 1:00:01");
        assert_eq!(python_timedelta(86_400 * 3), "3 days, 0:00:00");
    }
}
