//! The lifecycle of one process, as supervisord defines it, written as a pure function.
//!
//! [`step`] takes the current [`Machine`], one [`Event`] and the time, and returns the next
//! machine and the [`Action`]s the caller must carry out (spawn, signal, log). It never touches a
//! process, a clock or a channel, so every transition is tested without real children (see the
//! table in the tests, which is tied to the diagram in `docs/ARCHITECTURE.md`).
//!
//! Readiness is an event of its own ([`Event::Ready`]): the startsecs timer produces it, or,
//! with `ready = "notify"`, a READY=1 on the process's notify socket (then `ready_timeout` and
//! the watchdog are the machine's deadlines instead), or with `ready = "probe"` the readiness
//! probe (`ready_timeout` again). A liveness probe that failed too often is
//! [`Event::Unhealthy`]: a restart, as the watchdog's. WAITING is STARTING without a child, for
//! dependencies.

use std::fmt;
use std::time::Duration;

use minder::config::{AutoRestart, Backoff};
use minder::signal::{self, Signal};
use tokio::time::Instant;

/// The states of reference §2, with the data each one needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running: never started, or stopped on request.
    Stopped,
    /// Asked to start, waiting for its dependencies (`depends_on`): STARTING without a child.
    /// The supervisor, which sees every process, sends [`Event::Start`] once they are met.
    Waiting,
    /// Spawned; not yet ready. `attempt` counts the failed starts before this one.
    Starting { pid: u32, since: Instant, attempt: u32 },
    /// Ready and running. `attempt` is the failed starts before it, kept until it has been
    /// RUNNING for `backoff_reset` (0 at once without one, as in supervisord).
    /// `watchdog_at`: with `watchdog_sec`, when it is restarted unless a WATCHDOG=1 comes first.
    Running { pid: u32, since: Instant, attempt: u32, watchdog_at: Option<Instant> },
    /// The last start failed; the next attempt is at `retry_at`.
    Backoff { attempt: u32, retry_at: Instant },
    /// The stop signal has been sent. `kill_at` is when SIGKILL follows; `None` once it has.
    /// `then`: what follows once it has exited.
    Stopping { pid: u32, since: Instant, kill_at: Option<Instant>, then: AfterStop },
    /// Exited on its own after it was running.
    Exited,
    /// Gave up after startretries failed starts.
    Fatal,
    /// A signal could not be delivered for a reason other than "no such process".
    Unknown { pid: u32 },
}

/// What a stop leads to once the child has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// STOPPED: a stop was asked for.
    Stay,
    /// Started again at once: the watchdog expired, or the liveness probe failed.
    Restart,
    /// Failed start number `attempt`: it was not ready within ready_timeout.
    Backoff { attempt: u32 },
}

/// A state without its data: what events and the API report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Stopped,
    Starting,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
    Unknown,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Stopped,
        Kind::Starting,
        Kind::Running,
        Kind::Backoff,
        Kind::Stopping,
        Kind::Exited,
        Kind::Fatal,
        Kind::Unknown,
    ];

    /// supervisord's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Stopped => "STOPPED",
            Kind::Starting => "STARTING",
            Kind::Running => "RUNNING",
            Kind::Backoff => "BACKOFF",
            Kind::Stopping => "STOPPING",
            Kind::Exited => "EXITED",
            Kind::Fatal => "FATAL",
            Kind::Unknown => "UNKNOWN",
        }
    }

    /// supervisord's RUNNING_STATES: a start is refused as "already started".
    pub fn is_running(self) -> bool {
        matches!(self, Kind::Starting | Kind::Running | Kind::Backoff)
    }

    /// supervisord's STOPPED_STATES: `stop` has finished; `status` exits 3.
    pub fn is_stopped(self) -> bool {
        matches!(self, Kind::Stopped | Kind::Exited | Kind::Fatal | Kind::Unknown)
    }

    /// supervisord's SIGNALLABLE_STATES: there is a child to signal.
    pub fn is_signallable(self) -> bool {
        matches!(self, Kind::Starting | Kind::Running | Kind::Stopping)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl State {
    pub fn kind(&self) -> Kind {
        match self {
            State::Stopped => Kind::Stopped,
            State::Waiting | State::Starting { .. } => Kind::Starting,
            State::Running { .. } => Kind::Running,
            State::Backoff { .. } => Kind::Backoff,
            State::Stopping { .. } => Kind::Stopping,
            State::Exited => Kind::Exited,
            State::Fatal => Kind::Fatal,
            State::Unknown { .. } => Kind::Unknown,
        }
    }

    /// The child's pid, in the states that have a child.
    pub fn pid(&self) -> Option<u32> {
        match self {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. }
            | State::Unknown { pid } => Some(*pid),
            _ => None,
        }
    }
}

/// How a child ended, as waitpid reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    /// Killed by a signal; `oom` when it was the kernel's OOM killer (seen in its cgroup).
    Signal {
        signal: i32,
        core_dumped: bool,
        oom: bool,
    },
}

impl ExitStatus {
    /// supervisord's value for exitcodes matching: the code, or -1 for death by a signal (so
    /// it is never expected).
    fn code_or_minus_one(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal { .. } => -1,
        }
    }
}

impl fmt::Display for ExitStatus {
    /// supervisord's `decode_wait_status` text: "exit status 1", "terminated by SIGKILL".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signal { oom: true, .. } => f.write_str("killed by the OOM killer"),
            ExitStatus::Signal { signal: s, core_dumped, .. } => {
                write!(f, "terminated by {}", signal::name_of(*s))?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// The last exit of a process and whether it was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: ExitStatus,
    pub expected: bool,
}

/// What the machine remembers: the state, and what the API reports beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub state: State,
    /// How the child last ended; cleared at each spawn (as supervisord's exitstatus).
    pub last_exit: Option<Exit>,
    /// Why the last start failed, or "Bad exit code N"; cleared at each spawn.
    pub spawn_error: Option<String>,
}

impl Machine {
    pub fn new() -> Self {
        Machine { state: State::Stopped, last_exit: None, spawn_error: None }
    }
}

impl Default for Machine {
    fn default() -> Self {
        Machine::new()
    }
}

/// The program settings the machine obeys.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub startsecs: Duration,
    /// [`minder::config::INFINITE_RETRIES`] never gives up.
    pub startretries: u32,
    /// How long to wait after each failed start.
    pub backoff: Backoff,
    pub autorestart: AutoRestart,
    pub exitcodes: Vec<i32>,
    /// Expected to exit: an exit in exitcodes is success (completed), never restarted.
    pub oneshot: bool,
    /// Ready on READY=1 ([`Event::Ready`] from the notify socket), not after startsecs.
    pub notify: bool,
    /// Ready when the readiness probe has passed ([`Event::Ready`] from the probe task).
    pub probe: bool,
    /// With `notify` or `probe`: a start not ready this long after its spawn is a failed start.
    pub ready_timeout: Option<Duration>,
    /// With `notify`: RUNNING must send WATCHDOG=1 at least this often.
    pub watchdog: Option<Duration>,
    pub stopsignal: Signal,
    pub stopwaitsecs: Duration,
    pub stopasgroup: bool,
    pub killasgroup: bool,
}

/// Everything that can happen to a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request to start (from a client, or autostart at daemon start); from WAITING, the
    /// dependencies are met.
    Start,
    /// A request to start that must first wait for dependencies.
    Wait,
    /// A request to stop.
    Stop,
    /// A request to send a signal without changing state.
    Signal(Signal),
    /// The spawn the machine asked for succeeded.
    Spawned { pid: u32 },
    /// The spawn the machine asked for failed, for this reason. `out_of_descriptors`: minderd
    /// had no file descriptors to spare (EMFILE/ENFILE) — the daemon's shortage, not a failure
    /// of the program, so it does not count against startretries.
    SpawnFailed { reason: String, out_of_descriptors: bool },
    /// The child was reaped.
    Exited { pid: u32, status: ExitStatus },
    /// The deadline from [`deadline`] has passed.
    Timer,
    /// The child is ready (startsecs elapsed, or — later — a notify socket or probe said so).
    Ready,
    /// Signalling the child failed with something other than ESRCH.
    SignalFailed { reason: String },
    /// WATCHDOG=1: the child is alive (pushes the watchdog deadline back).
    Watchdog,
    /// The liveness probe failed `failures` times in a row, the last for `reason`: while
    /// RUNNING, it is stopped and started again.
    Unhealthy { failures: u32, reason: String },
}

impl Policy {
    /// Whether readiness is something the child must show (READY=1 or a probe), not the
    /// startsecs timer: startsecs is then not a deadline, and ready_timeout is.
    pub fn gated(&self) -> bool {
        self.notify || self.probe
    }
}

/// What the caller must do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fork and exec the program, then feed back [`Event::Spawned`] or [`Event::SpawnFailed`].
    Spawn,
    /// Send `signal` to the child, or to its process group.
    Kill { signal: Signal, group: bool },
    /// The state changed (possibly more than once in one step: BACKOFF then FATAL).
    Transition { from: Kind, to: Kind },
    /// A line for the daemon log, in supervisord's words.
    Log { level: Level, message: String },
}

/// Log levels the machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// Why a request was refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    AlreadyStarted,
    NotRunning,
    /// The process is stopping; a start must wait until it has stopped.
    Stopping,
    /// The process is in UNKNOWN state.
    Unknown,
}

/// The context of one step.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub now: Instant,
    pub name: &'a str,
    pub policy: &'a Policy,
    /// The daemon is shutting down: nothing is started or restarted on its own any more.
    pub shutting_down: bool,
    /// A sample in [0, 1) for the backoff's jitter (the caller draws it; tests pin it).
    pub jitter: f64,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub machine: Machine,
    pub actions: Vec<Action>,
}

/// When the machine next needs an [`Event::Timer`]: the end of startsecs while STARTING, the
/// end of the wait while in BACKOFF, the SIGKILL deadline while STOPPING.
pub fn deadline(state: &State, policy: &Policy) -> Option<Instant> {
    match state {
        State::Starting { since, .. } if policy.gated() => policy.ready_timeout.map(|t| *since + t),
        State::Starting { since, .. } => Some(*since + policy.startsecs),
        State::Running { watchdog_at, .. } => *watchdog_at,
        State::Backoff { retry_at, .. } => Some(*retry_at),
        State::Stopping { kill_at, .. } => *kill_at,
        _ => None,
    }
}

/// One transition. Requests that make no sense in the current state are refused with the
/// reason supervisord gives; other events that do not apply (a stale exit, an early timer) leave
/// the machine as it is.
pub fn step(m: &Machine, event: Event, ctx: &Ctx<'_>) -> Result<Step, Refusal> {
    let mut out = Out { machine: m.clone(), actions: Vec::new(), from: m.state.kind() };
    let p = ctx.policy;
    let name = ctx.name;
    match (&m.state, event) {
        // --- requests -------------------------------------------------------------------
        (State::Stopped | State::Exited | State::Fatal | State::Waiting, Event::Start) => {
            out.actions.push(Action::Spawn);
        }
        (State::Stopped | State::Exited | State::Fatal, Event::Wait) => {
            out.machine.spawn_error = None;
            out.go(State::Waiting);
        }
        (
            State::Starting { .. } | State::Running { .. } | State::Backoff { .. } | State::Waiting,
            Event::Start | Event::Wait,
        ) => return Err(Refusal::AlreadyStarted),
        (State::Stopping { .. }, Event::Start | Event::Wait) => return Err(Refusal::Stopping),
        (State::Unknown { .. }, Event::Start | Event::Wait) => return Err(Refusal::Unknown),

        (State::Waiting, Event::Stop) => {
            out.log(Level::Debug, format!("{name} was waiting for its dependencies; not started"));
            out.go(State::Stopped);
        }

        (State::Starting { pid, .. } | State::Running { pid, .. }, Event::Stop) => {
            let pid = *pid;
            out.log(
                Level::Debug,
                format!(
                    "killing {name} (pid {pid}) {}with signal {}",
                    if p.stopasgroup { "process group " } else { "" },
                    signal::name(p.stopsignal)
                ),
            );
            out.stop(pid, AfterStop::Stay, ctx);
        }
        (State::Backoff { .. }, Event::Stop) => {
            out.log(Level::Debug, format!("Attempted to kill {name}, which is in BACKOFF state."));
            out.go(State::Stopped);
        }
        // A stop asked for while the watchdog or ready_timeout stops it: it stays stopped.
        (State::Stopping { pid, since, kill_at, then }, Event::Stop) if *then != AfterStop::Stay => {
            out.machine.state =
                State::Stopping { pid: *pid, since: *since, kill_at: *kill_at, then: AfterStop::Stay };
        }
        (State::Stopping { .. }, Event::Stop) => {}
        (_, Event::Stop) => return Err(Refusal::NotRunning),

        (
            State::Starting { pid, .. } | State::Running { pid, .. } | State::Stopping { pid, .. },
            Event::Signal(sig),
        ) => {
            out.log(Level::Debug, format!("sending {name} (pid {pid}) sig {}", signal::name(sig)));
            out.actions.push(Action::Kill { signal: sig, group: false });
        }
        (_, Event::Signal(_)) => return Err(Refusal::NotRunning),

        // --- spawning -------------------------------------------------------------------
        (
            State::Stopped | State::Exited | State::Fatal | State::Backoff { .. } | State::Waiting,
            Event::Spawned { pid },
        ) => {
            let attempt = match m.state {
                State::Backoff { attempt, .. } => attempt,
                _ => 0,
            };
            out.machine.last_exit = None;
            out.machine.spawn_error = None;
            out.log(Level::Info, format!("spawned: '{name}' with pid {pid}"));
            // From WAITING it was STARTING already: the same state, now with a child.
            out.go_quietly(State::Starting { pid, since: ctx.now, attempt });
            if p.startsecs.is_zero() && !p.gated() {
                out.ready(pid, attempt, ctx);
            }
        }
        (
            State::Stopped | State::Exited | State::Fatal | State::Backoff { .. } | State::Waiting,
            Event::SpawnFailed { reason, out_of_descriptors },
        ) => {
            let attempt = match m.state {
                State::Backoff { attempt, .. } => attempt,
                _ => 0,
            };
            out.machine.last_exit = None;
            if out.from != Kind::Starting {
                out.transition(Kind::Starting);
            }
            if out_of_descriptors {
                // minderd ran short, not the program: wait and try again, as often as it takes,
                // without spending one of the program's startretries (a daemon short of
                // descriptors for a moment must not leave its programs FATAL for good).
                let wait = Duration::from_secs(attempt.max(1).into());
                out.log(
                    Level::Warn,
                    format!(
                        "spawnerr: {reason}; retrying in {} s (not counted against startretries)",
                        wait.as_secs()
                    ),
                );
                out.machine.spawn_error = Some(reason);
                out.go(State::Backoff { attempt, retry_at: ctx.now + wait });
            } else {
                out.log(Level::Info, format!("spawnerr: {reason}"));
                out.machine.spawn_error = Some(reason);
                out.backoff(attempt.saturating_add(1), ctx);
            }
        }

        // --- readiness ------------------------------------------------------------------
        (State::Starting { pid, since, attempt }, Event::Timer) if p.gated() => {
            if let Some(timeout) = p.ready_timeout.filter(|t| ctx.now >= *since + *t) {
                let why =
                    format!("not ready within ready_timeout ({} s)", format_secs(timeout.as_secs_f64()));
                out.log(Level::Warn, format!("{name} was {why}; stopping it (a failed start)"));
                out.machine.spawn_error = Some(format!(
                    "Not ready within ready_timeout ({} s)",
                    format_secs(timeout.as_secs_f64())
                ));
                out.stop(*pid, AfterStop::Backoff { attempt: *attempt }, ctx);
            }
        }
        (State::Starting { pid, since, attempt }, Event::Timer) if ctx.now >= *since + p.startsecs => {
            out.ready(*pid, *attempt, ctx);
        }
        (State::Running { pid, since, attempt, watchdog_at: Some(_) }, Event::Watchdog) => {
            let watchdog_at = p.watchdog.map(|w| ctx.now + w);
            out.machine.state = State::Running { pid: *pid, since: *since, attempt: *attempt, watchdog_at };
        }
        (State::Running { pid, watchdog_at: Some(at), .. }, Event::Timer) if ctx.now >= *at => {
            let secs = format_secs(p.watchdog.unwrap_or_default().as_secs_f64());
            out.log(
                Level::Warn,
                format!("watchdog: {name} (pid {pid}) sent no WATCHDOG=1 within watchdog_sec ({secs} s); restarting it"),
            );
            out.stop(*pid, AfterStop::Restart, ctx);
        }
        (State::Starting { pid, attempt, .. }, Event::Ready) => {
            out.ready(*pid, *attempt, ctx);
        }
        (State::Running { pid, .. }, Event::Unhealthy { failures, reason }) => {
            out.log(
                Level::Warn,
                format!("liveness probe failed {failures} times: {name} ({reason}); restarting it"),
            );
            out.stop(*pid, AfterStop::Restart, ctx);
        }
        (State::Backoff { retry_at, .. }, Event::Timer) if ctx.now >= *retry_at && !ctx.shutting_down => {
            out.actions.push(Action::Spawn);
        }
        (State::Stopping { pid, since, kill_at: Some(at), then }, Event::Timer) if ctx.now >= *at => {
            out.log(Level::Warn, format!("killing '{name}' ({pid}) with SIGKILL"));
            out.actions.push(Action::Kill { signal: Signal::SIGKILL, group: p.killasgroup });
            out.machine.state = State::Stopping { pid: *pid, since: *since, kill_at: None, then: *then };
        }

        // --- exits ----------------------------------------------------------------------
        (state, Event::Exited { pid, .. }) if state.pid() != Some(pid) => {}
        (State::Stopping { then: AfterStop::Backoff { attempt }, .. }, Event::Exited { status, .. }) => {
            // Stopped because it was not ready in time: a failed start.
            let attempt = *attempt;
            out.machine.last_exit = None;
            out.log(Level::Info, format!("stopped: {name} ({status}), not ready in time"));
            out.backoff(attempt.saturating_add(1), ctx);
        }
        (State::Stopping { then, .. }, Event::Exited { status, .. }) => {
            let restart = *then == AfterStop::Restart;
            // The log line's level follows exitcodes, as supervisord's does; but an exit that
            // was asked for is expected whatever its status (supervisord reports no "not
            // expected" for a stopped process).
            let in_exitcodes = p.exitcodes.contains(&status.code_or_minus_one());
            out.machine.last_exit = Some(Exit { status, expected: true });
            out.log(
                if in_exitcodes { Level::Info } else { Level::Warn },
                format!("stopped: {name} ({status})"),
            );
            out.go(State::Stopped);
            if restart && !ctx.shutting_down {
                out.actions.push(Action::Spawn);
            }
        }
        (State::Starting { .. } | State::Running { .. }, Event::Exited { status, .. })
            if p.oneshot && p.exitcodes.contains(&status.code_or_minus_one()) =>
        {
            // A one-shot program did its job: completed, however soon, and not restarted.
            out.machine.last_exit = Some(Exit { status, expected: true });
            out.machine.spawn_error = None;
            out.log(Level::Info, format!("exited: {name} ({status}; expected, completed)"));
            out.go(State::Exited);
        }
        (State::Starting { since, attempt, .. }, Event::Exited { status, .. })
            if ctx.now < *since + p.startsecs || p.gated() =>
        {
            // Did not stay up for startsecs: a failed start.
            let attempt = *attempt;
            out.machine.last_exit = None;
            out.machine.spawn_error = Some("Exited too quickly (process log may have details)".into());
            out.log(Level::Warn, format!("exited: {name} ({status}; not expected)"));
            out.backoff(attempt.saturating_add(1), ctx);
        }
        (
            State::Starting { .. } | State::Running { .. } | State::Unknown { .. },
            Event::Exited { status, .. },
        ) => {
            // The failed starts behind it, while they still count (see backoff_reset).
            let mut failures = match m.state {
                State::Running { attempt, .. } => attempt,
                _ => 0,
            };
            let running_since = match m.state {
                State::Running { since, .. } => Some(since),
                State::Starting { since, .. } => Some(since + p.startsecs),
                _ => None,
            };
            if let State::Starting { attempt, .. } = m.state {
                // Up for startsecs, but the exit arrived before the timer: it did run.
                out.transition(Kind::Running);
                failures = attempt;
            }
            let expected = p.exitcodes.contains(&status.code_or_minus_one());
            out.machine.last_exit = Some(Exit { status, expected });
            if expected {
                out.log(Level::Info, format!("exited: {name} ({status}; expected)"));
            } else {
                out.machine.spawn_error = Some(format!("Bad exit code {}", status.code_or_minus_one()));
                out.log(Level::Warn, format!("exited: {name} ({status}; not expected)"));
            }
            out.go(State::Exited);
            let restart = match p.autorestart {
                AutoRestart::True => true,
                AutoRestart::Unexpected => !expected,
                AutoRestart::False => false,
            };
            if restart && !ctx.shutting_down {
                match (p.backoff.reset, running_since) {
                    // Up for less than backoff_reset: one more failed start, with its wait.
                    (Some(reset), Some(since)) if ctx.now < since + reset => {
                        out.machine.spawn_error = Some(format!(
                            "Exited ({status}) within backoff_reset ({} s) of RUNNING",
                            format_secs(reset.as_secs_f64())
                        ));
                        out.backoff(failures.saturating_add(1), ctx);
                    }
                    _ => out.actions.push(Action::Spawn),
                }
            }
        }

        (
            State::Starting { pid, .. } | State::Running { pid, .. } | State::Stopping { pid, .. },
            Event::SignalFailed { reason },
        ) => {
            let pid = *pid;
            out.log(Level::Warn, format!("unknown problem signalling {name} ({pid}): {reason}"));
            out.go(State::Unknown { pid });
        }

        // Anything else (a timer that fired early, readiness after the fact, ...) changes
        // nothing.
        _ => {}
    }
    Ok(Step { machine: out.machine, actions: out.actions })
}

/// Builds one step's result.
struct Out {
    machine: Machine,
    actions: Vec<Action>,
    /// The kind the last transition left from.
    from: Kind,
}

impl Out {
    fn log(&mut self, level: Level, message: String) {
        self.actions.push(Action::Log { level, message });
    }

    /// Records a transition to `to` without setting the state's data.
    fn transition(&mut self, to: Kind) {
        self.actions.push(Action::Transition { from: self.from, to });
        self.from = to;
    }

    fn go(&mut self, state: State) {
        self.transition(state.kind());
        self.machine.state = state;
    }

    /// As [`Out::go`], without a transition when the kind stays the same (WAITING to a
    /// STARTING with a child).
    fn go_quietly(&mut self, state: State) {
        if state.kind() != self.from {
            self.transition(state.kind());
        }
        self.machine.state = state;
    }

    fn ready(&mut self, pid: u32, attempt: u32, ctx: &Ctx<'_>) {
        let secs = ctx.policy.startsecs.as_secs_f64();
        let message = if ctx.policy.notify {
            format!("success: {} entered RUNNING state, process reported READY=1 (notify)", ctx.name)
        } else if ctx.policy.probe {
            format!("success: {} entered RUNNING state, its readiness probe passed (probe)", ctx.name)
        } else {
            format!(
                "success: {} entered RUNNING state, process has stayed up for > than {} seconds (startsecs)",
                ctx.name,
                format_secs(secs)
            )
        };
        self.log(Level::Info, message);
        // Without backoff_reset, reaching RUNNING forgives the failures (supervisord).
        let attempt = if ctx.policy.backoff.reset.is_some() { attempt } else { 0 };
        let watchdog_at = ctx.policy.watchdog.filter(|_| ctx.policy.notify).map(|w| ctx.now + w);
        self.go(State::Running { pid, since: ctx.now, attempt, watchdog_at });
    }

    /// Sends the stop signal and enters STOPPING, to go on to `then` once it has exited.
    fn stop(&mut self, pid: u32, then: AfterStop, ctx: &Ctx<'_>) {
        let p = ctx.policy;
        self.actions.push(Action::Kill { signal: p.stopsignal, group: p.stopasgroup });
        self.go(State::Stopping { pid, since: ctx.now, kill_at: Some(ctx.now + p.stopwaitsecs), then });
    }

    /// Enters BACKOFF for failed start number `attempt`, and FATAL at once when that was the
    /// last one allowed: startretries = 3 allows four attempts, waiting 1, 2 and 3 s between
    /// (the default backoff; see [`Backoff::wait`]). Infinite retries never give up.
    fn backoff(&mut self, attempt: u32, ctx: &Ctx<'_>) {
        let retry_at = ctx.now + ctx.policy.backoff.wait(attempt, ctx.jitter);
        self.go(State::Backoff { attempt, retry_at });
        if attempt > ctx.policy.startretries {
            self.log(
                Level::Info,
                format!("gave up: {} entered FATAL state, too many start retries too quickly", ctx.name),
            );
            self.go(State::Fatal);
        }
    }
}

/// Seconds as supervisord prints its integer startsecs, and fractions as they are.
fn format_secs(secs: f64) -> String {
    if secs.fract() == 0.0 {
        format!("{secs:.0}")
    } else {
        format!("{secs}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            startsecs: Duration::from_secs(1),
            startretries: 3,
            backoff: Backoff::default(),
            autorestart: AutoRestart::Unexpected,
            exitcodes: vec![0],
            oneshot: false,
            notify: false,
            probe: false,
            ready_timeout: None,
            watchdog: None,
            stopsignal: Signal::SIGTERM,
            stopwaitsecs: Duration::from_secs(10),
            stopasgroup: false,
            killasgroup: false,
        }
    }

    /// A fixed origin of time for the table; every row is relative to it.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn at(ms: u64) -> Instant {
        t0() + Duration::from_millis(ms)
    }

    fn run(state: State, event: Event, now_ms: u64, p: &Policy) -> Result<Step, Refusal> {
        let m = Machine { state, last_exit: None, spawn_error: None };
        step(&m, event, &Ctx { now: at(now_ms), name: "web", policy: p, shutting_down: false, jitter: 0.0 })
    }

    fn transitions(s: &Step) -> Vec<(Kind, Kind)> {
        s.actions
            .iter()
            .filter_map(|a| match a {
                Action::Transition { from, to } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    fn has(s: &Step, a: &Action) -> bool {
        s.actions.contains(a)
    }

    fn logs(s: &Step) -> Vec<String> {
        s.actions
            .iter()
            .filter_map(|a| match a {
                Action::Log { level, message } if *level != Level::Debug => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    #[allow(non_snake_case)] // reads like the state it builds, as in the table below
    fn STARTING(attempt: u32) -> State {
        State::Starting { pid: 7, since: at(0), attempt }
    }

    fn running() -> State {
        State::Running { pid: 7, since: at(0), attempt: 0, watchdog_at: None }
    }

    fn stopping() -> State {
        State::Stopping { pid: 7, since: at(0), kill_at: Some(at(10_000)), then: AfterStop::Stay }
    }

    fn exit(code: i32) -> Event {
        Event::Exited { pid: 7, status: ExitStatus::Code(code) }
    }

    /// The policy the table's rows run under: the default, with a backoff_reset short enough
    /// (0.4 s) to leave the rows that run longer as supervisord has them.
    fn table_policy() -> Policy {
        Policy {
            backoff: Backoff { reset: Some(Duration::from_millis(400)), ..Backoff::default() },
            ..policy()
        }
    }

    /// One row: why, from, event, time (ms), the kinds visited, the policy.
    type Row = (&'static str, State, Event, u64, Vec<Kind>, Policy);

    /// Every edge of the lifecycle, as (from, event, time, to-kinds visited). This table is the
    /// single source the diagram in docs/ARCHITECTURE.md is checked against. Rows run under
    /// [`table_policy`] unless they name a policy of their own.
    fn table() -> Vec<Row> {
        use Kind::*;
        let mut rows: Vec<_> =
            plain_rows().into_iter().map(|(w, s, e, n, k)| (w, s, e, n, k, table_policy())).collect();
        let oneshot = Policy { oneshot: true, ..table_policy() };
        rows.push(("a oneshot completed", STARTING(0), exit(0), 100, vec![Exited], oneshot));
        let n = notify_policy();
        let stopping = |then| State::Stopping { pid: 7, since: at(0), kill_at: Some(at(10_000)), then };
        rows.extend([
            ("not ready within ready_timeout", STARTING(0), Event::Timer, 5000, vec![Stopping], n.clone()),
            (
                "stopped for ready_timeout",
                stopping(AfterStop::Backoff { attempt: 0 }),
                exit(0),
                6000,
                vec![Backoff],
                n.clone(),
            ),
            (
                "stopped for ready_timeout, last retry",
                stopping(AfterStop::Backoff { attempt: 3 }),
                exit(0),
                6000,
                vec![Backoff, Fatal],
                n.clone(),
            ),
            ("watchdog expired", watched(), Event::Timer, 2000, vec![Stopping], n.clone()),
            (
                "liveness probe failed",
                running(),
                Event::Unhealthy { failures: 3, reason: "http 503".into() },
                5000,
                vec![Stopping],
                table_policy(),
            ),
            (
                "probe not ready within ready_timeout",
                STARTING(0),
                Event::Timer,
                5000,
                vec![Stopping],
                probe_policy(),
            ),
            (
                "stopped for the watchdog",
                stopping(AfterStop::Restart),
                exit(0),
                3000,
                vec![Stopped],
                n.clone(),
            ),
        ]);
        rows
    }

    /// `ready = "notify"`, `ready_timeout = 5`, `watchdog_sec = 2`.
    fn notify_policy() -> Policy {
        Policy {
            notify: true,
            ready_timeout: Some(Duration::from_secs(5)),
            watchdog: Some(Duration::from_secs(2)),
            ..table_policy()
        }
    }

    /// `ready = "probe"`, `ready_timeout = 5`.
    fn probe_policy() -> Policy {
        Policy { probe: true, ready_timeout: Some(Duration::from_secs(5)), ..table_policy() }
    }

    /// RUNNING since 0 with its watchdog due at 2 s.
    fn watched() -> State {
        State::Running { pid: 7, since: at(0), attempt: 0, watchdog_at: Some(at(2000)) }
    }

    fn plain_rows() -> Vec<(&'static str, State, Event, u64, Vec<Kind>)> {
        use Kind::*;
        let backoff1 = State::Backoff { attempt: 1, retry_at: at(1000) };
        let backoff3 = State::Backoff { attempt: 3, retry_at: at(3000) };
        vec![
            ("start", State::Stopped, Event::Spawned { pid: 7 }, 0, vec![Starting]),
            ("start", State::Exited, Event::Spawned { pid: 7 }, 0, vec![Starting]),
            ("start", State::Fatal, Event::Spawned { pid: 7 }, 0, vec![Starting]),
            ("retry", backoff1.clone(), Event::Spawned { pid: 7 }, 1000, vec![Starting]),
            (
                "spawn error",
                State::Stopped,
                Event::SpawnFailed { reason: "x".into(), out_of_descriptors: false },
                0,
                vec![Starting, Backoff],
            ),
            (
                "spawn error, last retry",
                backoff3.clone(),
                Event::SpawnFailed { reason: "x".into(), out_of_descriptors: false },
                3000,
                vec![Starting, Backoff, Fatal],
            ),
            (
                "no descriptors, last retry: not counted",
                backoff3.clone(),
                Event::SpawnFailed { reason: "x".into(), out_of_descriptors: true },
                3000,
                vec![Starting, Backoff],
            ),
            ("startsecs elapsed", STARTING(0), Event::Timer, 1000, vec![Running]),
            ("ready", STARTING(0), Event::Ready, 10, vec![Running]),
            ("exit before startsecs", STARTING(0), exit(0), 500, vec![Backoff]),
            ("exit before startsecs, last retry", STARTING(3), exit(1), 500, vec![Backoff, Fatal]),
            ("exit after startsecs, before the timer", STARTING(0), exit(1), 1500, vec![Running, Exited]),
            ("exit", running(), exit(0), 5000, vec![Exited]),
            ("stop", running(), Event::Stop, 5000, vec![Stopping]),
            ("stop", STARTING(0), Event::Stop, 500, vec![Stopping]),
            ("stop", backoff1, Event::Stop, 500, vec![Stopped]),
            ("exit while stopping", stopping(), exit(0), 5000, vec![Stopped]),
            ("signal fails", running(), Event::SignalFailed { reason: "EPERM".into() }, 5000, vec![Unknown]),
            ("signal fails", STARTING(0), Event::SignalFailed { reason: "EPERM".into() }, 500, vec![Unknown]),
            ("signal fails", stopping(), Event::SignalFailed { reason: "EPERM".into() }, 5000, vec![Unknown]),
            ("exit while unknown", State::Unknown { pid: 7 }, exit(0), 5000, vec![Exited]),
            ("start, waiting for dependencies", State::Stopped, Event::Wait, 0, vec![Starting]),
            ("start, waiting for dependencies", State::Exited, Event::Wait, 0, vec![Starting]),
            ("start, waiting for dependencies", State::Fatal, Event::Wait, 0, vec![Starting]),
            ("stop while waiting", State::Waiting, Event::Stop, 0, vec![Stopped]),
            (
                "exit within backoff_reset",
                State::Running { pid: 7, since: at(0), attempt: 3, watchdog_at: None },
                exit(1),
                300,
                vec![Exited, Backoff, Fatal],
            ),
        ]
    }

    #[test]
    fn transition_table() {
        for (what, state, event, now, want, p) in table() {
            let s = run(state.clone(), event.clone(), now, &p)
                .unwrap_or_else(|r| panic!("{what}: refused {r:?}"));
            let got: Vec<Kind> = transitions(&s).into_iter().map(|(_, to)| to).collect();
            assert_eq!(got, want, "{what}: {state:?} + {event:?}");
            assert_eq!(s.machine.state.kind(), *want.last().expect("rows list at least one kind"), "{what}");
        }
    }

    /// The edges the diagram in docs/ARCHITECTURE.md lists as `FROM -> TO: why` lines between
    /// its `lifecycle-diagram` markers.
    fn documented_edges() -> std::collections::BTreeSet<(Kind, Kind)> {
        let doc = include_str!("../../docs/ARCHITECTURE.md");
        let start = doc.find("<!-- lifecycle-diagram -->").expect("diagram start marker");
        let end = doc.find("<!-- /lifecycle-diagram -->").expect("diagram end marker");
        let mut documented = std::collections::BTreeSet::new();
        for line in doc[start..end].lines() {
            let Some((edge, _why)) = line.trim().trim_start_matches("- ").split_once(':') else {
                continue;
            };
            let Some((from, to)) = edge.split_once("->") else {
                continue;
            };
            let kind = |s: &str| Kind::ALL.into_iter().find(|k| k.name() == s.trim());
            if let (Some(f), Some(t)) = (kind(from), kind(to)) {
                documented.insert((f, t));
            }
        }
        documented
    }

    /// Every state (each with the data that changes what it does) and every event (each
    /// variant, at times before and after every deadline, under policies that restart and
    /// that do not): not only the table's rows.
    fn every_state_and_event() -> Vec<(State, Event, u64, Policy)> {
        let states = [
            State::Stopped,
            State::Waiting,
            STARTING(0),
            STARTING(3),
            running(),
            State::Backoff { attempt: 1, retry_at: at(1000) },
            State::Backoff { attempt: 3, retry_at: at(3000) },
            stopping(),
            State::Stopping { pid: 7, since: at(0), kill_at: None, then: AfterStop::Stay },
            State::Exited,
            State::Fatal,
            State::Unknown { pid: 7 },
            watched(),
            State::Stopping { pid: 7, since: at(0), kill_at: Some(at(10_000)), then: AfterStop::Restart },
            State::Stopping {
                pid: 7,
                since: at(0),
                kill_at: Some(at(10_000)),
                then: AfterStop::Backoff { attempt: 3 },
            },
        ];
        let events = [
            Event::Start,
            Event::Wait,
            Event::Stop,
            Event::Signal(Signal::SIGHUP),
            Event::Spawned { pid: 7 },
            Event::SpawnFailed { reason: "x".into(), out_of_descriptors: false },
            Event::SpawnFailed { reason: "x".into(), out_of_descriptors: true },
            exit(0),
            exit(1),
            Event::Exited {
                pid: 7,
                status: ExitStatus::Signal { signal: 9, core_dumped: false, oom: false },
            },
            Event::Exited { pid: 8, status: ExitStatus::Code(0) },
            Event::Timer,
            Event::Ready,
            Event::SignalFailed { reason: "EPERM".into() },
            Event::Watchdog,
        ];
        let policies = [
            policy(),
            Policy { autorestart: AutoRestart::True, ..policy() },
            Policy { autorestart: AutoRestart::False, startsecs: Duration::ZERO, ..policy() },
            Policy { autorestart: AutoRestart::True, ..table_policy() },
            Policy { autorestart: AutoRestart::True, oneshot: true, ..policy() },
            notify_policy(),
        ];
        let mut all = Vec::new();
        for state in &states {
            for event in &events {
                for now in [0, 500, 1000, 1500, 3000, 5000, 20_000] {
                    for p in &policies {
                        all.push((state.clone(), event.clone(), now, p.clone()));
                    }
                }
            }
        }
        all
    }

    /// Every transition any state and event can produce is an edge of the diagram, and every
    /// edge of the diagram is produced by some state and event: the two cannot drift apart.
    #[test]
    fn diagram_matches_every_transition() {
        let documented = documented_edges();
        let mut produced = std::collections::BTreeSet::new();
        for (state, event, now, p) in every_state_and_event() {
            let Ok(s) = run(state.clone(), event.clone(), now, &p) else { continue };
            let edges = transitions(&s);
            for &(from, to) in &edges {
                assert!(
                    documented.contains(&(from, to)),
                    "{from} -> {to} ({state:?} + {event:?} at {now} ms) is not in docs/ARCHITECTURE.md's diagram"
                );
            }
            // A change of state always comes with the transitions that lead to it.
            let (before, after) = (state.kind(), s.machine.state.kind());
            match edges.last() {
                Some(&(_, to)) => assert_eq!(to, after, "{state:?} + {event:?}: ends elsewhere"),
                None => assert_eq!(before, after, "{state:?} + {event:?}: changed state silently"),
            }
            if let Some(&(from, _)) = edges.first() {
                assert_eq!(from, before, "{state:?} + {event:?}: starts elsewhere");
            }
            produced.extend(edges);
        }
        let never: Vec<_> = documented.difference(&produced).collect();
        assert!(never.is_empty(), "edges in the diagram that nothing produces: {never:?}");
    }

    /// The table's rows are edges of the diagram too (they name why each edge exists).
    #[test]
    fn diagram_matches_table() {
        let documented = documented_edges();
        let mut produced = std::collections::BTreeSet::new();
        for (_, state, event, now, _, p) in table() {
            let s = run(state, event, now, &p).expect("table rows are accepted");
            produced.extend(transitions(&s));
        }
        // Autorestart (EXITED -> STARTING) and the retry (BACKOFF -> STARTING) go through a
        // Spawn action first; the table covers them as Spawned events from those states.
        assert_eq!(documented, produced, "docs/ARCHITECTURE.md's diagram and the table differ");
    }

    #[test]
    fn backoff_waits_one_two_three_seconds_then_fatal() {
        let p = policy();
        let mut m = Machine::new();
        let mut now = 0u64;
        let mut waits = Vec::new();
        let mut attempts = 0;
        loop {
            let ctx = |now| Ctx { now: at(now), name: "web", policy: &p, shutting_down: false, jitter: 0.0 };
            let s = step(&m, Event::Spawned { pid: 7 }, &ctx(now)).expect("spawn accepted");
            attempts += 1;
            m = step(&s.machine, exit(1), &ctx(now + 10)).expect("exit accepted").machine;
            match m.state {
                State::Backoff { retry_at, .. } => {
                    waits.push(retry_at.duration_since(at(now + 10)).as_secs());
                    now = retry_at.duration_since(t0()).as_millis() as u64;
                    let s = step(&m, Event::Timer, &ctx(now)).expect("timer");
                    assert!(has(&s, &Action::Spawn), "retry spawns");
                }
                State::Fatal => break,
                ref other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(waits, vec![1, 2, 3]);
        assert_eq!(attempts, 4, "startretries=3 means four attempts");
        assert_eq!(m.spawn_error.as_deref(), Some("Exited too quickly (process log may have details)"));
    }

    /// The waits of one policy from the first failure until FATAL (or `limit` failures).
    fn waits(p: &Policy, jitter: f64, limit: usize) -> (Vec<f64>, bool) {
        let mut m = Machine::new();
        let mut now = 0u64;
        let mut waits = Vec::new();
        for _ in 0..limit {
            let ctx = |now| Ctx { now: at(now), name: "web", policy: p, shutting_down: false, jitter };
            let s = step(&m, Event::Spawned { pid: 7 }, &ctx(now)).expect("spawn accepted");
            m = step(&s.machine, exit(1), &ctx(now + 10)).expect("exit accepted").machine;
            match m.state {
                State::Backoff { retry_at, .. } => {
                    waits.push(retry_at.duration_since(at(now + 10)).as_secs_f64());
                    now = retry_at.duration_since(t0()).as_millis() as u64;
                }
                State::Fatal => return (waits, true),
                ref other => panic!("unexpected {other:?}"),
            }
        }
        (waits, false)
    }

    #[test]
    fn exponential_backoff_doubles_up_to_its_cap() {
        let backoff = Backoff {
            kind: minder::config::BackoffKind::Exponential,
            initial: Duration::from_millis(500),
            max: Some(Duration::from_secs(3)),
            ..Backoff::default()
        };
        let p = Policy { startretries: 6, backoff, ..policy() };
        let (w, fatal) = waits(&p, 0.0, 20);
        assert_eq!(w, vec![0.5, 1.0, 2.0, 3.0, 3.0, 3.0]);
        assert!(fatal, "startretries = 6: the seventh failure is FATAL");
        // Jitter takes off up to its fraction, never adds: with the largest sample, 20 % off.
        let p = Policy { backoff: Backoff { jitter: 0.2, ..backoff }, ..p };
        let (w, _) = waits(&p, 0.999_999, 3);
        let want = [0.4, 0.8, 1.6];
        for (got, want) in w.iter().zip(want) {
            assert!((got - want).abs() < 0.001, "{w:?}");
        }
        assert_eq!(waits(&p, 0.0, 3).0, vec![0.5, 1.0, 2.0], "a zero sample takes nothing off");
    }

    #[test]
    fn infinite_retries_never_give_up() {
        let p = Policy { startretries: minder::config::INFINITE_RETRIES, ..policy() };
        let (w, fatal) = waits(&p, 0.0, 50);
        assert!(!fatal);
        assert_eq!(w.len(), 50);
        assert_eq!(w[49], 50.0, "linear without a cap, as supervisord");
        let capped =
            Policy { backoff: Backoff { max: Some(Duration::from_secs(5)), ..Backoff::default() }, ..p };
        assert_eq!(waits(&capped, 0.0, 50).0[49], 5.0);
    }

    #[test]
    fn backoff_reset_counts_quick_exits_from_running() {
        let backoff = Backoff { reset: Some(Duration::from_secs(10)), ..Backoff::default() };
        let p = Policy { autorestart: AutoRestart::True, startretries: 2, backoff, ..policy() };
        let ctx = |ms| Ctx { now: at(ms), name: "web", policy: &p, shutting_down: false, jitter: 0.0 };
        // RUNNING after a failed start: the failure is still counted.
        let m = Machine { state: State::Backoff { attempt: 1, retry_at: at(0) }, ..Machine::new() };
        let s = step(&m, Event::Spawned { pid: 7 }, &ctx(0)).expect("spawn");
        let s = step(&s.machine, Event::Timer, &ctx(1000)).expect("timer");
        assert!(matches!(s.machine.state, State::Running { attempt: 1, .. }), "{:?}", s.machine.state);
        // An exit 2 s later (within backoff_reset): EXITED, then failure number two waits 2 s.
        let s = step(&s.machine, exit(1), &ctx(3000)).expect("exit");
        assert_eq!(transitions(&s), vec![(Kind::Running, Kind::Exited), (Kind::Exited, Kind::Backoff)]);
        assert!(!has(&s, &Action::Spawn), "no immediate restart");
        assert_eq!(deadline(&s.machine.state, &p), Some(at(5000)));
        // The third: FATAL (startretries = 2).
        let s = step(&s.machine, Event::Spawned { pid: 8 }, &ctx(5000)).expect("spawn");
        let s = step(&s.machine, Event::Timer, &ctx(6000)).expect("timer");
        let s = step(&s.machine, Event::Exited { pid: 8, status: ExitStatus::Code(1) }, &ctx(7000))
            .expect("exit");
        assert_eq!(s.machine.state, State::Fatal);
        // Up for backoff_reset: restarted at once, the count forgiven.
        let m = Machine {
            state: State::Running { pid: 7, since: at(0), attempt: 2, watchdog_at: None },
            ..Machine::new()
        };
        let s = step(&m, exit(1), &ctx(10_000)).expect("exit");
        assert!(has(&s, &Action::Spawn));
        let s = step(&s.machine, Event::Spawned { pid: 9 }, &ctx(10_000)).expect("spawn");
        assert!(matches!(s.machine.state, State::Starting { attempt: 0, .. }));
        // Without backoff_reset (supervisord), a quick exit from RUNNING restarts at once.
        let plain = Policy { backoff: Backoff::default(), ..p.clone() };
        let s = run(
            State::Running { pid: 7, since: at(0), attempt: 0, watchdog_at: None },
            exit(1),
            1500,
            &plain,
        )
        .expect("exit");
        assert!(has(&s, &Action::Spawn));
    }

    #[test]
    fn a_oneshot_that_exits_as_expected_has_completed() {
        let p = Policy { oneshot: true, autorestart: AutoRestart::True, exitcodes: vec![0, 3], ..policy() };
        // Before startsecs: completed, not a failed start.
        let s = run(STARTING(0), exit(3), 100, &p).expect("exit");
        assert_eq!(transitions(&s), vec![(Kind::Starting, Kind::Exited)]);
        assert_eq!(s.machine.last_exit, Some(Exit { status: ExitStatus::Code(3), expected: true }));
        assert!(!has(&s, &Action::Spawn), "never restarted, whatever autorestart says");
        assert_eq!(logs(&s), vec!["exited: web (exit status 3; expected, completed)"]);
        let s = run(running(), exit(0), 5000, &p).expect("exit");
        assert_eq!(s.machine.state, State::Exited);
        assert!(!has(&s, &Action::Spawn));
        // An unexpected code follows the usual rules: a quick one is a failed start...
        let s = run(STARTING(0), exit(1), 100, &p).expect("exit");
        assert_eq!(s.machine.state.kind(), Kind::Backoff);
        // ...a later one an exit that autorestart restarts.
        let s = run(running(), exit(1), 5000, &p).expect("exit");
        assert!(has(&s, &Action::Spawn));
    }

    #[test]
    fn waiting_for_dependencies_is_starting_without_a_child() {
        let p = policy();
        let s = run(State::Stopped, Event::Wait, 0, &p).expect("wait");
        assert_eq!(s.machine.state, State::Waiting);
        assert_eq!(s.machine.state.kind(), Kind::Starting);
        assert_eq!(s.machine.state.pid(), None);
        assert!(!has(&s, &Action::Spawn), "nothing is spawned yet");
        assert_eq!(deadline(&State::Waiting, &p), None, "no timer: the supervisor says when");
        // Met: spawned, and still STARTING (no second STARTING event).
        let s = run(State::Waiting, Event::Start, 0, &p).expect("met");
        assert!(has(&s, &Action::Spawn));
        let s = run(State::Waiting, Event::Spawned { pid: 7 }, 0, &p).expect("spawned");
        assert!(transitions(&s).is_empty(), "{:?}", s.actions);
        assert!(matches!(s.machine.state, State::Starting { pid: 7, attempt: 0, .. }));
        let s =
            run(State::Waiting, Event::SpawnFailed { reason: "x".into(), out_of_descriptors: false }, 0, &p)
                .expect("failed");
        assert_eq!(transitions(&s), vec![(Kind::Starting, Kind::Backoff)]);
        // A second start while waiting is "already started"; a signal has nobody to go to.
        assert_eq!(run(State::Waiting, Event::Wait, 0, &p), Err(Refusal::AlreadyStarted));
        assert_eq!(run(State::Waiting, Event::Signal(Signal::SIGHUP), 0, &p), Err(Refusal::NotRunning));
    }

    #[test]
    fn notify_readiness_ignores_startsecs_and_times_out() {
        let p = notify_policy();
        let ctx = |ms| Ctx { now: at(ms), name: "web", policy: &p, shutting_down: false, jitter: 0.0 };
        // Up for startsecs is not ready: only READY=1 is.
        let s = run(
            State::Stopped,
            Event::Spawned { pid: 7 },
            0,
            &Policy { startsecs: Duration::ZERO, ..p.clone() },
        )
        .expect("spawn");
        assert_eq!(s.machine.state.kind(), Kind::Starting, "startsecs = 0 does not make it RUNNING");
        assert_eq!(deadline(&STARTING(0), &p), Some(at(5000)), "the deadline is ready_timeout");
        assert!(step(&Machine { state: STARTING(0), ..Machine::new() }, Event::Timer, &ctx(1000))
            .expect("timer")
            .actions
            .is_empty());
        let s = run(STARTING(0), Event::Ready, 3000, &p).expect("ready");
        assert_eq!(logs(&s), vec!["success: web entered RUNNING state, process reported READY=1 (notify)"]);
        assert_eq!(
            s.machine.state,
            State::Running { pid: 7, since: at(3000), attempt: 0, watchdog_at: Some(at(5000)) }
        );
        // An exit before READY=1 is a failed start, however long it ran.
        let s = run(STARTING(0), exit(0), 4000, &p).expect("exit");
        assert_eq!(s.machine.state.kind(), Kind::Backoff);
        // Not ready in time: stopped, then a failed start with its reason.
        let s = run(STARTING(1), Event::Timer, 5000, &p).expect("timeout");
        assert!(has(&s, &Action::Kill { signal: Signal::SIGTERM, group: false }));
        assert_eq!(s.machine.spawn_error.as_deref(), Some("Not ready within ready_timeout (5 s)"));
        let s = step(&s.machine, exit(0), &ctx(5100)).expect("exit");
        assert_eq!(s.machine.state, State::Backoff { attempt: 2, retry_at: at(7100) });
        assert_eq!(s.machine.spawn_error.as_deref(), Some("Not ready within ready_timeout (5 s)"));
    }

    #[test]
    fn a_silent_watchdog_restarts_and_a_stop_wins() {
        let p = notify_policy();
        let ctx = |ms| Ctx { now: at(ms), name: "web", policy: &p, shutting_down: false, jitter: 0.0 };
        let m = Machine { state: watched(), ..Machine::new() };
        // WATCHDOG=1 pushes the deadline back by watchdog_sec.
        let s = step(&m, Event::Watchdog, &ctx(1500)).expect("keep-alive");
        assert_eq!(deadline(&s.machine.state, &p), Some(at(3500)));
        assert!(step(&s.machine, Event::Timer, &ctx(2000)).expect("early").actions.is_empty());
        // Silence past it: a log line saying why, the stop signal, then a restart.
        let s = step(&s.machine, Event::Timer, &ctx(3500)).expect("expired");
        assert_eq!(
            logs(&s),
            vec!["watchdog: web (pid 7) sent no WATCHDOG=1 within watchdog_sec (2 s); restarting it"]
        );
        assert!(has(&s, &Action::Kill { signal: Signal::SIGTERM, group: false }));
        let restarted = step(&s.machine, exit(0), &ctx(3600)).expect("exit");
        assert_eq!(restarted.machine.state, State::Stopped);
        assert!(has(&restarted, &Action::Spawn));
        // A stop asked for meanwhile: stopped, not restarted.
        let stopped = step(&s.machine, Event::Stop, &ctx(3550)).expect("stop");
        let stopped = step(&stopped.machine, exit(0), &ctx(3600)).expect("exit");
        assert_eq!(stopped.machine.state, State::Stopped);
        assert!(!has(&stopped, &Action::Spawn));
        // Without notify the watchdog does not exist.
        let plain = Policy { notify: false, ..p.clone() };
        let s = run(STARTING(0), Event::Timer, 1000, &plain).expect("startsecs");
        assert!(matches!(s.machine.state, State::Running { watchdog_at: None, .. }));
    }

    #[test]
    fn probe_readiness_ignores_startsecs_and_liveness_restarts() {
        let p = probe_policy();
        let ctx = |ms| Ctx { now: at(ms), name: "web", policy: &p, shutting_down: false, jitter: 0.0 };
        // Up for startsecs (even 0) is not ready: only the probe's Ready is.
        let zero = Policy { startsecs: Duration::ZERO, ..p.clone() };
        let s = run(State::Stopped, Event::Spawned { pid: 7 }, 0, &zero).expect("spawn");
        assert_eq!(s.machine.state.kind(), Kind::Starting);
        assert!(step(&Machine { state: STARTING(0), ..Machine::new() }, Event::Timer, &ctx(1000))
            .expect("timer")
            .actions
            .is_empty());
        let s = run(STARTING(0), Event::Ready, 2500, &p).expect("ready");
        assert_eq!(logs(&s), vec!["success: web entered RUNNING state, its readiness probe passed (probe)"]);
        assert!(matches!(s.machine.state, State::Running { watchdog_at: None, .. }), "no watchdog");
        // An exit before the probe passed is a failed start, however long it ran.
        assert_eq!(run(STARTING(0), exit(0), 4000, &p).expect("exit").machine.state.kind(), Kind::Backoff);
        // Liveness: the line that says why, the stop signal, and a new spawn once it exited.
        let m = Machine { state: running(), ..Machine::new() };
        let s = step(&m, Event::Unhealthy { failures: 3, reason: "http 503".into() }, &ctx(6000))
            .expect("unhealthy");
        assert_eq!(logs(&s), vec!["liveness probe failed 3 times: web (http 503); restarting it"]);
        assert!(has(&s, &Action::Kill { signal: Signal::SIGTERM, group: false }));
        let s = step(&s.machine, exit(0), &ctx(6100)).expect("exit");
        assert!(has(&s, &Action::Spawn));
        // Not while STARTING (readiness decides there) or STOPPING.
        for state in [STARTING(0), stopping()] {
            let s = run(state.clone(), Event::Unhealthy { failures: 3, reason: "x".into() }, 500, &p)
                .expect("ignored");
            assert!(s.actions.is_empty(), "{state:?}");
        }
    }

    #[test]
    fn running_resets_the_attempts() {
        let p = Policy { autorestart: AutoRestart::True, ..policy() };
        let ctx = |ms| Ctx { now: at(ms), name: "web", policy: &p, shutting_down: false, jitter: 0.0 };
        // Two failed starts behind it, the third attempt gets to RUNNING...
        let m = Machine { state: State::Backoff { attempt: 2, retry_at: at(0) }, ..Machine::new() };
        let s = step(&m, Event::Spawned { pid: 7 }, &ctx(0)).expect("spawn");
        assert!(matches!(s.machine.state, State::Starting { attempt: 2, .. }), "{:?}", s.machine.state);
        let s = step(&s.machine, Event::Timer, &ctx(1000)).expect("timer");
        assert_eq!(s.machine.state.kind(), Kind::Running);
        // ...then exits and is restarted; a quick exit now is failure number one, not three.
        let s = step(&s.machine, exit(1), &ctx(5000)).expect("exit");
        assert!(has(&s, &Action::Spawn), "autorestart");
        let s = step(&s.machine, Event::Spawned { pid: 8 }, &ctx(5000)).expect("respawn");
        assert!(matches!(s.machine.state, State::Starting { attempt: 0, .. }), "{:?}", s.machine.state);
        let quick = Event::Exited { pid: 8, status: ExitStatus::Code(1) };
        let s = step(&s.machine, quick, &ctx(5100)).expect("quick exit");
        assert!(matches!(s.machine.state, State::Backoff { attempt: 1, .. }), "{:?}", s.machine.state);
        assert_eq!(deadline(&s.machine.state, &p), Some(at(6100)), "waits 1 s, as after a first failure");
    }

    #[test]
    fn running_out_of_descriptors_never_makes_it_fatal() {
        let p = Policy { startretries: 0, ..policy() };
        let ctx = |ms| Ctx { now: at(ms), name: "web", policy: &p, shutting_down: false, jitter: 0.0 };
        let short = || Event::SpawnFailed {
            reason: "too many open files to spawn 'web'".into(),
            out_of_descriptors: true,
        };
        let mut m = Machine::new();
        let mut now = 0;
        for _ in 0..10 {
            let s = step(&m, short(), &ctx(now)).expect("spawn failure");
            assert_eq!(
                transitions(&s),
                vec![(m.state.kind(), Kind::Starting), (Kind::Starting, Kind::Backoff)]
            );
            assert_eq!(s.machine.spawn_error.as_deref(), Some("too many open files to spawn 'web'"));
            m = s.machine;
            let State::Backoff { attempt: 0, retry_at } = m.state else { panic!("{:?}", m.state) };
            assert_eq!(retry_at, at(now + 1000), "retries every second");
            now += 1000;
            assert!(has(&step(&m, Event::Timer, &ctx(now)).expect("timer"), &Action::Spawn));
        }
        // The program's own failure still counts: with startretries = 0 the first is fatal.
        let s = step(&m, Event::SpawnFailed { reason: "x".into(), out_of_descriptors: false }, &ctx(now))
            .expect("spawn failure");
        assert_eq!(s.machine.state, State::Fatal);
    }

    #[test]
    fn a_requested_stop_is_an_expected_exit() {
        let p = policy();
        let sigterm = ExitStatus::Signal { signal: libc::SIGTERM, core_dumped: false, oom: false };
        let s = run(stopping(), Event::Exited { pid: 7, status: sigterm }, 5000, &p).expect("exit");
        assert_eq!(s.machine.state, State::Stopped);
        assert_eq!(s.machine.last_exit, Some(Exit { status: sigterm, expected: true }));
        // The log line is supervisord's, at its level (WARN: not in exitcodes).
        assert!(has(
            &s,
            &Action::Log { level: Level::Warn, message: "stopped: web (terminated by SIGTERM)".into() }
        ));
        // Dying of SIGTERM unasked is still unexpected.
        let s = run(running(), Event::Exited { pid: 7, status: sigterm }, 5000, &p).expect("exit");
        assert_eq!(s.machine.last_exit, Some(Exit { status: sigterm, expected: false }));
    }

    #[test]
    fn autorestart_follows_exitcodes() {
        for (autorestart, code, restarts) in [
            (AutoRestart::True, 0, true),
            (AutoRestart::True, 1, true),
            (AutoRestart::False, 1, false),
            (AutoRestart::Unexpected, 0, false),
            (AutoRestart::Unexpected, 1, true),
            (AutoRestart::Unexpected, 2, false),
        ] {
            let p = Policy { autorestart, exitcodes: vec![0, 2], ..policy() };
            let s = run(running(), exit(code), 5000, &p).expect("exit");
            assert_eq!(has(&s, &Action::Spawn), restarts, "{autorestart:?} exit {code}");
            assert_eq!(s.machine.last_exit.map(|e| e.expected), Some(code != 1));
        }
        // Death by a signal is never expected.
        let p = Policy { autorestart: AutoRestart::Unexpected, ..policy() };
        let s = run(
            running(),
            Event::Exited {
                pid: 7,
                status: ExitStatus::Signal { signal: 9, core_dumped: false, oom: false },
            },
            5000,
            &p,
        )
        .expect("exit");
        assert!(has(&s, &Action::Spawn));
        assert_eq!(logs(&s), vec!["exited: web (terminated by SIGKILL; not expected)".to_string()]);
    }

    #[test]
    fn nothing_restarts_while_shutting_down() {
        let p = Policy { autorestart: AutoRestart::True, ..policy() };
        let ctx = Ctx { now: at(5000), name: "web", policy: &p, shutting_down: true, jitter: 0.0 };
        let s = step(&Machine { state: running(), last_exit: None, spawn_error: None }, exit(1), &ctx)
            .expect("exit");
        assert!(!has(&s, &Action::Spawn));
        let b = Machine {
            state: State::Backoff { attempt: 1, retry_at: at(0) },
            last_exit: None,
            spawn_error: None,
        };
        assert!(!has(&step(&b, Event::Timer, &ctx).expect("timer"), &Action::Spawn));
    }

    #[test]
    fn stop_signals_then_kills_after_stopwaitsecs() {
        let p = Policy { stopasgroup: true, killasgroup: true, ..policy() };
        let s = run(running(), Event::Stop, 5000, &p).expect("stop");
        assert!(has(&s, &Action::Kill { signal: Signal::SIGTERM, group: true }));
        assert_eq!(deadline(&s.machine.state, &p), Some(at(15_000)));
        let ctx = |ms| Ctx { now: at(ms), name: "web", policy: &p, shutting_down: false, jitter: 0.0 };
        // A timer before the deadline does nothing.
        let early = step(&s.machine, Event::Timer, &ctx(14_999)).expect("timer");
        assert!(early.actions.is_empty());
        let late = step(&s.machine, Event::Timer, &ctx(15_000)).expect("timer");
        assert!(has(&late, &Action::Kill { signal: Signal::SIGKILL, group: true }));
        assert_eq!(deadline(&late.machine.state, &p), None, "SIGKILL is sent once");
        let done = step(
            &late.machine,
            Event::Exited {
                pid: 7,
                status: ExitStatus::Signal { signal: 9, core_dumped: false, oom: false },
            },
            &ctx(15_001),
        )
        .expect("exit");
        assert_eq!(done.machine.state, State::Stopped);
        assert_eq!(logs(&done), vec!["stopped: web (terminated by SIGKILL)".to_string()]);
    }

    #[test]
    fn refusals() {
        let p = policy();
        assert_eq!(run(running(), Event::Start, 0, &p), Err(Refusal::AlreadyStarted));
        assert_eq!(run(STARTING(0), Event::Start, 0, &p), Err(Refusal::AlreadyStarted));
        assert_eq!(
            run(State::Backoff { attempt: 1, retry_at: at(0) }, Event::Start, 0, &p),
            Err(Refusal::AlreadyStarted)
        );
        assert_eq!(run(stopping(), Event::Start, 0, &p), Err(Refusal::Stopping));
        assert_eq!(run(State::Unknown { pid: 7 }, Event::Start, 0, &p), Err(Refusal::Unknown));
        for s in [State::Stopped, State::Exited, State::Fatal] {
            assert_eq!(run(s.clone(), Event::Stop, 0, &p), Err(Refusal::NotRunning));
            assert_eq!(run(s, Event::Signal(Signal::SIGHUP), 0, &p), Err(Refusal::NotRunning));
        }
        assert!(run(stopping(), Event::Stop, 0, &p).is_ok(), "a second stop waits for the first");
    }

    #[test]
    fn stale_exits_are_ignored() {
        let p = policy();
        let s = run(running(), Event::Exited { pid: 8, status: ExitStatus::Code(0) }, 5000, &p).expect("ok");
        assert_eq!(s.machine.state, running());
        assert!(s.actions.is_empty());
    }

    #[test]
    fn an_oom_kill_says_so() {
        let oom = ExitStatus::Signal { signal: 9, core_dumped: false, oom: true };
        assert_eq!(oom.to_string(), "killed by the OOM killer");
        let plain = ExitStatus::Signal { signal: 9, core_dumped: false, oom: false };
        assert_eq!(plain.to_string(), "terminated by SIGKILL");
    }

    #[test]
    fn supervisord_log_lines() {
        let p = policy();
        let s = run(State::Stopped, Event::Spawned { pid: 20535 }, 0, &p).expect("spawn");
        assert_eq!(logs(&s), vec!["spawned: 'web' with pid 20535"]);
        let s = step(
            &s.machine,
            Event::Timer,
            &Ctx { now: at(1000), name: "web", policy: &p, shutting_down: false, jitter: 0.0 },
        )
        .expect("timer");
        assert_eq!(
            logs(&s),
            vec![
                "success: web entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)"
            ]
        );
        let s = run(STARTING(3), exit(1), 10, &p).expect("exit");
        assert_eq!(
            logs(&s),
            vec![
                "exited: web (exit status 1; not expected)",
                "gave up: web entered FATAL state, too many start retries too quickly"
            ]
        );
    }

    #[test]
    fn startsecs_zero_is_running_at_once() {
        let p = Policy { startsecs: Duration::ZERO, ..policy() };
        let s = run(State::Stopped, Event::Spawned { pid: 7 }, 0, &p).expect("spawn");
        assert_eq!(transitions(&s), vec![(Kind::Stopped, Kind::Starting), (Kind::Starting, Kind::Running)]);
        // And an immediate exit is then an exit from RUNNING, as in supervisord.
        let s = step(
            &s.machine,
            exit(0),
            &Ctx { now: at(0), name: "web", policy: &p, shutting_down: false, jitter: 0.0 },
        )
        .expect("exit");
        assert_eq!(s.machine.state, State::Exited);
    }
}
