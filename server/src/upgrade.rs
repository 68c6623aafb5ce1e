//! Upgrading minderd in place: `minder upgrade` (or SIGUSR1) re-executes minderd — the binary
//! now at the path it was started from — without stopping, restarting or losing a child.
//!
//! # How
//! minderd `execve`s itself, so its pid stays the same and its children stay its children: the
//! new image reaps them, and a child that exits during the hand-over is a zombie until the new
//! image reaps it, its exit status intact. Before the exec, the old image:
//! 1. *pre-flights* the new binary: runs it with `--upgrade-check`, which reads the
//!    configuration and prints `minderd-upgrade-ok VERSION`; anything else (it does not run, it
//!    cannot read the configuration) is the caller's error and nothing changes. The
//!    configuration must also be the one applied (an empty `reread`): an upgrade applies no
//!    configuration change silently — `update` first. Event listener pools and FastCGI
//!    programs are refused (their protocol state and sockets are not handed over).
//! 2. stops accepting (connections wait in the listening sockets' backlogs, which stay open),
//!    lets in-flight requests finish for at most [`DRAIN`], and cuts streams still open then;
//! 3. freezes the reaper (no `waitpid` from now on), then each process's task, which hands
//!    over its state (lifecycle state with its timers as durations, start and stop times,
//!    spawn count, last exit, its child's stdin);
//! 4. stops every capture: what was read is already in the log files, what was not waits in
//!    the pipe (enlarged to 1 MiB where the kernel allows), and the read ends are handed over;
//! 5. writes the [`Handover`] (JSON) into a memfd and names it, and a descriptor of the old
//!    image, in `MINDER_HANDOVER`; clears close-on-exec on exactly the descriptors it names
//!    (pipes, listening sockets, the sentinel's socket, the memfd, the old image); and execs.
//!
//! The new image, started with `MINDER_HANDOVER`, does not daemonize, bind, clear AUTO logs or
//! autostart: it adopts the listening sockets, the sentinel (which never noticed: its socket
//! stayed open), the cgroup subtree, the event numbering (and the instance id, so a watcher
//! resumes where it was), registers every child with its reaper *before* the first `waitpid`,
//! and gives each process's task its state and pipes back. If the new image cannot read the
//! hand-over or the configuration, it `fexecve`s the old image with the same hand-over.
//!
//! # Why the exec happens on the main thread
//! Children ask for SIGKILL when their parent *thread* dies (PR_SET_PDEATHSIG), and an exec
//! ends every thread but the one that calls it. So every child is forked by one thread, the
//! main thread ([`serve_forks`]), and the exec is made by that same thread: no parent thread
//! of any child ever ends while minderd lives.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::lifecycle::{AfterStop, Exit, ExitStatus, State};

/// The environment variable that names the hand-over: `MEMFD,OLD_IMAGE_FD`.
pub const HANDOVER_ENV: &str = "MINDER_HANDOVER";
/// Set when the old image is re-executed because the new one could not restore: it must not
/// fall back again.
pub const FALLBACK_ENV: &str = "MINDER_UPGRADE_FALLBACK";
/// The line `--upgrade-check` prints, followed by the version.
pub const CHECK_OK: &str = "minderd-upgrade-ok";

/// How long in-flight requests get to finish before the exec; streams open after it are cut
/// (`minder tail -f` and `minder events` reconnect and resume). Every client waits this long
/// at most while streams are open: it is the pause an upgrade makes.
pub const DRAIN: Duration = Duration::from_millis(500);
/// How long the pre-flight of the new binary may take.
const PREFLIGHT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The thread that forks

/// Work for the forking thread.
enum Work {
    Run(Box<dyn FnOnce() + Send + 'static>),
    Quit,
}

static FORKER: OnceLock<Mutex<mpsc::Sender<Work>>> = OnceLock::new();

/// Makes the calling thread (the main thread) the one every child is forked from, and the one
/// that execs on upgrade; returns what [`serve_forks`] runs. Call once, before any child.
pub fn install_forker() -> ForkQueue {
    let (tx, rx) = mpsc::channel();
    // A second call keeps the first forker: the queue returned then is never fed.
    let _ = FORKER.set(Mutex::new(tx));
    ForkQueue(rx)
}

/// The forking thread's queue of work.
pub struct ForkQueue(mpsc::Receiver<Work>);

impl std::fmt::Debug for ForkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForkQueue")
    }
}

/// Runs fork (and exec) work on this thread until [`quit_forker`].
pub fn serve_forks(queue: ForkQueue) {
    for work in queue.0 {
        match work {
            Work::Run(job) => job(),
            Work::Quit => return,
        }
    }
}

/// Ends [`serve_forks`] once the work queued before has run.
pub fn quit_forker() {
    if let Some(tx) = FORKER.get() {
        let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(Work::Quit);
    }
}

/// A value moved to the forking thread for the length of one call. The callers' values (a
/// child closure with raw pointers into memory the caller keeps alive) are used only while the
/// caller waits in [`on_forker`].
pub struct AssertSend<T>(pub T);
// SAFETY: the value is used on one other thread while its owner waits for that use to end
// (on_forker blocks), so it is never used from two threads at once.
unsafe impl<T> Send for AssertSend<T> {}

impl<T> std::fmt::Debug for AssertSend<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AssertSend")
    }
}

impl<T> AssertSend<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Runs `f` on the forking thread and waits for it, or runs it here when there is none (tests,
/// or a daemon run from a library). `None` if the forking thread dropped it unrun (it was
/// ending).
pub fn on_forker<R: Send>(f: impl FnOnce() -> R + Send) -> Option<R> {
    let Some(tx) = FORKER.get() else { return Some(f()) };
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let job: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
        let _ = done_tx.send(f());
    });
    // SAFETY: only the lifetime changes. The job borrows from this frame, and this function
    // does not return until the job has run or been dropped: the reply sender lives inside the
    // job, so `recv` below returns only after one or the other.
    let job: Box<dyn FnOnce() + Send + 'static> = unsafe { std::mem::transmute(job) };
    let sent = tx.lock().unwrap_or_else(|e| e.into_inner()).send(Work::Run(job));
    if let Err(mpsc::SendError(Work::Run(job))) = sent {
        job();
    }
    done_rx.recv().ok()
}

/// Runs `job` on the forking thread without waiting for it, or here when there is none (tests,
/// or a daemon run from a library) or it has ended. Queued behind a quit, it is dropped unrun.
pub fn to_forker(job: Box<dyn FnOnce() + Send + 'static>) {
    let Some(tx) = FORKER.get() else { return job() };
    let sent = tx.lock().unwrap_or_else(|e| e.into_inner()).send(Work::Run(job));
    if let Err(mpsc::SendError(Work::Run(job))) = sent {
        job();
    }
}

/// The signals that end or steer minderd. Their default action ends a process, and between
/// an upgrade's exec and the new image's handlers there are none: so they are blocked across
/// the exec (a blocked signal waits, pending), and the new image lets them through once its
/// handlers are in place ([`release_signals`]).
fn steering_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, set up by sigemptyset and sigaddset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

fn hold_signals(hold: bool) {
    let set = steering_signals();
    let how = if hold { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
    // SAFETY: changes this thread's mask only, from a set on the stack.
    unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
}

/// Lets through the signals an upgrade's exec held back (see [`steering_signals`]), on the
/// forking thread (which made the exec, and where those that waited are delivered) and this
/// one. Call once the handlers are installed. Nothing is blocked outside an upgrade.
pub fn release_signals() {
    let _ = on_forker(|| hold_signals(false));
    hold_signals(false);
}

// ---------------------------------------------------------------------------------------------
// The hand-over

/// Everything the new image needs, written as JSON into a memfd. Descriptors are numbers that
/// stay open across the exec.
#[derive(Debug, Serialize, Deserialize)]
pub struct Handover {
    /// The path minderd was first started from, which every upgrade executes again.
    pub exe: PathBuf,
    /// The version of the image that wrote this.
    pub from_version: String,
    /// The arguments it runs with (each as bytes), for going back to it.
    #[serde(default)]
    pub argv: Vec<Vec<u8>>,
    /// How many upgrades this daemon has been through, this one included.
    pub upgrades: u32,
    /// When the daemon first started (Unix milliseconds).
    pub started_ms: u64,
    /// Whether the daemon runs in the background (no echo of its log to stdout).
    pub background: bool,
    /// The event history's instance id and next sequence number.
    pub instance: String,
    pub next_event: u64,
    pub sentinel: Option<SentinelFd>,
    pub cgroups: Option<crate::cgroup::Saved>,
    pub listeners: Vec<ListenerFd>,
    pub metrics: Option<RawFd>,
    pub processes: Vec<ProcessState>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SentinelFd {
    pub sock: RawFd,
    pub pid: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ListenerFd {
    Unix { fd: RawFd, path: PathBuf, dev: u64, ino: u64 },
    Tcp { fd: RawFd, address: String, configured: String },
}

/// One process's state, as its task hands it over.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessState {
    /// `group:name`.
    pub full_name: String,
    pub state: Saved,
    pub start_ms: Option<u64>,
    /// How long ago `up_since` was.
    pub up_for_ms: Option<u64>,
    pub stop_ms: Option<u64>,
    pub spawn_count: u32,
    pub last_exit: Option<SavedExit>,
    pub spawn_error: Option<String>,
    pub stdin: Option<RawFd>,
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
}

/// A lifecycle state, its instants as durations from the hand-over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Saved {
    Stopped,
    /// Waiting for its dependencies: the next image's supervisor starts it when they are met.
    Waiting,
    Starting {
        pid: u32,
        age_ms: u64,
        attempt: u32,
    },
    Running {
        pid: u32,
        age_ms: u64,
        #[serde(default)]
        attempt: u32,
        #[serde(default)]
        watchdog_left_ms: Option<u64>,
    },
    Backoff {
        attempt: u32,
        left_ms: u64,
    },
    Stopping {
        pid: u32,
        age_ms: u64,
        kill_left_ms: Option<u64>,
        #[serde(default)]
        then: SavedAfter,
    },
    Exited,
    Fatal,
    Unknown {
        pid: u32,
    },
}

/// What follows a stop in progress ([`AfterStop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SavedAfter {
    #[default]
    Stay,
    Restart,
    Backoff {
        attempt: u32,
    },
}

impl SavedAfter {
    fn of(a: AfterStop) -> SavedAfter {
        match a {
            AfterStop::Stay => SavedAfter::Stay,
            AfterStop::Restart => SavedAfter::Restart,
            AfterStop::Backoff { attempt } => SavedAfter::Backoff { attempt },
        }
    }

    fn after(self) -> AfterStop {
        match self {
            SavedAfter::Stay => AfterStop::Stay,
            SavedAfter::Restart => AfterStop::Restart,
            SavedAfter::Backoff { attempt } => AfterStop::Backoff { attempt },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedExit {
    /// The exit code, or the signal when `signal`.
    pub value: i32,
    pub signal: bool,
    pub core_dumped: bool,
    pub oom: bool,
    pub expected: bool,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Saved {
    pub fn of(state: &State, now: Instant) -> Saved {
        let age = |t: Instant| ms(now.saturating_duration_since(t));
        let left = |t: Instant| ms(t.saturating_duration_since(now));
        match *state {
            State::Stopped => Saved::Stopped,
            State::Waiting => Saved::Waiting,
            State::Starting { pid, since, attempt } => Saved::Starting { pid, age_ms: age(since), attempt },
            State::Running { pid, since, attempt, watchdog_at } => {
                Saved::Running { pid, age_ms: age(since), attempt, watchdog_left_ms: watchdog_at.map(left) }
            }
            State::Backoff { attempt, retry_at } => Saved::Backoff { attempt, left_ms: left(retry_at) },
            State::Stopping { pid, since, kill_at, then } => Saved::Stopping {
                pid,
                age_ms: age(since),
                kill_left_ms: kill_at.map(left),
                then: SavedAfter::of(then),
            },
            State::Exited => Saved::Exited,
            State::Fatal => Saved::Fatal,
            State::Unknown { pid } => Saved::Unknown { pid },
        }
    }

    pub fn state(&self, now: Instant) -> State {
        let ago = |m: u64| now.checked_sub(Duration::from_millis(m)).unwrap_or(now);
        let after = |m: u64| now + Duration::from_millis(m);
        match *self {
            Saved::Stopped => State::Stopped,
            Saved::Waiting => State::Waiting,
            Saved::Starting { pid, age_ms, attempt } => State::Starting { pid, since: ago(age_ms), attempt },
            Saved::Running { pid, age_ms, attempt, watchdog_left_ms } => {
                State::Running { pid, since: ago(age_ms), attempt, watchdog_at: watchdog_left_ms.map(after) }
            }
            Saved::Backoff { attempt, left_ms } => State::Backoff { attempt, retry_at: after(left_ms) },
            Saved::Stopping { pid, age_ms, kill_left_ms, then } => State::Stopping {
                pid,
                since: ago(age_ms),
                kill_at: kill_left_ms.map(after),
                then: then.after(),
            },
            Saved::Exited => State::Exited,
            Saved::Fatal => State::Fatal,
            Saved::Unknown { pid } => State::Unknown { pid },
        }
    }

    /// The child this state has, if any.
    pub fn pid(&self) -> Option<u32> {
        match *self {
            Saved::Starting { pid, .. }
            | Saved::Running { pid, .. }
            | Saved::Stopping { pid, .. }
            | Saved::Unknown { pid } => Some(pid),
            _ => None,
        }
    }
}

impl SavedExit {
    pub fn of(e: &Exit) -> SavedExit {
        let (value, signal, core_dumped, oom) = match e.status {
            ExitStatus::Code(c) => (c, false, false, false),
            ExitStatus::Signal { signal, core_dumped, oom } => (signal, true, core_dumped, oom),
        };
        SavedExit { value, signal, core_dumped, oom, expected: e.expected }
    }

    pub fn exit(&self) -> Exit {
        let status = if self.signal {
            ExitStatus::Signal { signal: self.value, core_dumped: self.core_dumped, oom: self.oom }
        } else {
            ExitStatus::Code(self.value)
        };
        Exit { status, expected: self.expected }
    }
}

/// Unix milliseconds of `t`.
pub fn unix_ms(t: SystemTime) -> u64 {
    ms(t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

/// The time `ms` Unix milliseconds name.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// A process's state as the new image restores it: the saved state with its descriptors.
#[derive(Debug)]
pub struct Adopted {
    pub saved: ProcessState,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Where the child's exit arrives, and its pidfd, from the reaper's registration.
    pub exit: Option<crate::reaper::Forked>,
}

/// What the new image restores, found by each process's task by its full name.
#[derive(Debug, Default)]
pub struct Adoptions(Mutex<HashMap<String, Adopted>>);

impl Adoptions {
    pub fn new(list: Vec<Adopted>) -> Adoptions {
        Adoptions(Mutex::new(list.into_iter().map(|a| (a.saved.full_name.clone(), a)).collect()))
    }

    pub fn take(&self, full_name: &str) -> Option<Adopted> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(full_name)
    }

    /// Those no task took (processes no longer configured): their children are left running,
    /// and named in the log.
    pub fn leftovers(&self) -> Vec<String> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(|a| format!("{} (pid {:?})", a.saved.full_name, a.saved.state.pid())).collect()
    }
}

/// Takes a descriptor named in the hand-over: it must be open; it is made close-on-exec again
/// at once, so nothing minderd starts later inherits it.
pub fn take_fd(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(std::io::Error::other(format!("descriptor {fd} of the hand-over is not open")));
    }
    // SAFETY: F_SETFD with FD_CLOEXEC changes only the descriptor's flag.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open and was handed to this image to own; nothing else in
    // this process knows its number.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A copy of `fd` for the hand-over. It stays close-on-exec (the pre-flight must not inherit
/// it) until [`keep_across_exec`] just before the exec.
pub fn inheritable(fd: &impl AsRawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: dup just made this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Leaves `fd` open across exec.
pub fn keep_across_exec(fd: &impl AsRawFd) {
    // SAFETY: F_SETFD with 0 clears FD_CLOEXEC on this descriptor only.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
}

// ---------------------------------------------------------------------------------------------
// Reading the hand-over (the new image)

/// The hand-over this image was started with.
#[derive(Debug)]
pub struct Resumed {
    pub handover: Result<Handover, String>,
    /// The memfd, kept open for a fall-back to the old image.
    memfd: Option<OwnedFd>,
    /// The old image, to fall back to and to keep for the next upgrade.
    pub old: Option<OwnedFd>,
    /// This image is already the fall-back (and why): it must not fall back again.
    pub fallback: Option<String>,
}

/// The hand-over this image was started with, if any, read and removed from the environment
/// (children must not inherit it). Call first thing in `main`, before any thread starts.
pub fn take_handover() -> Option<Resumed> {
    let value = std::env::var_os(HANDOVER_ENV)?;
    let fallback = std::env::var_os(FALLBACK_ENV).map(|v| v.to_string_lossy().into_owned());
    std::env::remove_var(HANDOVER_ENV);
    std::env::remove_var(FALLBACK_ENV);
    let text = value.to_string_lossy().into_owned();
    let (memfd, old) = text.split_once(',').unwrap_or((text.as_str(), ""));
    let old = old.parse().ok().and_then(|fd| take_fd(fd).ok());
    let memfd = memfd.parse().ok().and_then(|fd| take_fd(fd).ok());
    let handover = match &memfd {
        None => Err(format!("{HANDOVER_ENV}={text} names no open descriptor")),
        Some(fd) => read_handover(fd),
    };
    Some(Resumed { handover, memfd, old, fallback })
}

fn read_handover(fd: &OwnedFd) -> Result<Handover, String> {
    let mut json = Vec::new();
    let mut at = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let file = std::fs::File::from(inheritable(fd).map_err(|e| e.to_string())?);
    loop {
        use std::os::unix::fs::FileExt;
        let n = file.read_at(&mut buf, at).map_err(|e| format!("cannot read the hand-over: {e}"))?;
        if n == 0 {
            break;
        }
        json.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    serde_json::from_slice(&json).map_err(|e| format!("cannot read the hand-over: {e}"))
}

impl Resumed {
    /// Executes the old image again with the same hand-over, when this image cannot restore
    /// it (before it has taken any of its descriptors). Returns only if it cannot, with why.
    pub fn fall_back(self, why: &str) -> String {
        if self.fallback.is_some() {
            return format!("{why}, and this is already the old image");
        }
        // The arguments the old image ran with (this image may have been given others).
        let argv = match &self.handover {
            Ok(h) if !h.argv.is_empty() => {
                h.argv.iter().map(|a| OsString::from(std::ffi::OsStr::from_bytes(a))).collect()
            }
            _ => std::env::args_os().collect(),
        };
        let (Some(memfd), Some(old)) = (self.memfd, self.old) else {
            return format!("{why}, and there is no old image to go back to");
        };
        let image = Image { exe: PathBuf::new(), old, argv };
        let reason = format!("the new binary could not take over: {why}");
        format!("{why}; {}", image.exec(&memfd, Some(&reason)))
    }
}

/// The binary to execute on upgrade, and the old image to fall back to.
#[derive(Debug)]
pub struct Image {
    /// The path minderd was started from.
    pub exe: PathBuf,
    /// This image, open, for falling back to when the new one cannot restore.
    pub old: OwnedFd,
    argv: Vec<OsString>,
}

impl Image {
    /// This image: started from `exe` (from the hand-over), or from what /proc/self/exe names
    /// on a first start.
    pub fn current(exe: Option<PathBuf>, old: Option<OwnedFd>) -> std::io::Result<Image> {
        let exe = match exe {
            Some(p) => p,
            None => std::fs::read_link("/proc/self/exe")?,
        };
        let old = match old {
            Some(fd) => fd,
            None => std::fs::File::open("/proc/self/exe")?.into(),
        };
        Ok(Image { exe, old, argv: std::env::args_os().collect() })
    }

    /// What the pre-flight runs: the path, and the arguments this image was given.
    pub fn target(&self) -> Target {
        Target { exe: self.exe.clone(), args: self.argv.iter().skip(1).cloned().collect() }
    }

    /// Replaces this image with the binary at `exe`, handing over `memfd`; if that exec fails,
    /// with the old image. Returns only if both fail.
    /// `fallback`: straight to the old image, saying why.
    pub fn exec(&self, memfd: &OwnedFd, fallback: Option<&str>) -> String {
        let value = format!("{},{}", memfd.as_raw_fd(), self.old.as_raw_fd());
        let cstr = |s: &[u8]| CString::new(s.to_vec()).ok();
        let argv: Vec<CString> = self.argv.iter().filter_map(|a| cstr(a.as_bytes())).collect();
        let env = |fallback: Option<&str>| -> Vec<CString> {
            let mut env: Vec<CString> = std::env::vars_os()
                .filter(|(k, _)| k != HANDOVER_ENV && k != FALLBACK_ENV)
                .filter_map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
                .collect();
            env.extend(cstr(format!("{HANDOVER_ENV}={value}").as_bytes()));
            if let Some(why) = fallback {
                let why: String = why.chars().filter(|c| *c != '\0').take(1000).collect();
                env.extend(cstr(format!("{FALLBACK_ENV}={why}").as_bytes()));
            }
            env
        };
        let exec_failed = format!("the new binary {} could not be executed", self.exe.display());
        let (env_new, env_old) = (env(None), env(Some(fallback.unwrap_or(&exec_failed))));
        let fallback = fallback.is_some();
        let Some(path) = cstr(self.exe.as_os_str().as_bytes()) else {
            return "the path has a NUL byte".into();
        };
        let old = self.old.as_raw_fd();
        keep_across_exec(memfd);
        keep_across_exec(&self.old);
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
        };
        let (argv_p, new_p, old_p) = (ptrs(&argv), ptrs(&env_new), ptrs(&env_old));
        let job = AssertSend((path, argv_p, new_p, old_p));
        let failed = on_forker(move || {
            let (path, argv_p, new_p, old_p) = job.into_inner();
            let mut why = String::new();
            hold_signals(true);
            if !fallback {
                // SAFETY: every pointer is to a NUL-terminated string or array kept alive
                // above; execve returns only on failure.
                unsafe { libc::execve(path.as_ptr(), argv_p.as_ptr(), new_p.as_ptr()) };
                why = format!("cannot execute the new binary: {}", std::io::Error::last_os_error());
            }
            // SAFETY: as above; fexecve executes the open old image.
            unsafe { libc::fexecve(old, argv_p.as_ptr(), old_p.as_ptr()) };
            let e = std::io::Error::last_os_error();
            hold_signals(false);
            format!("{why}; nor the old image: {e}")
        });
        failed.unwrap_or_else(|| "the forking thread has ended".into())
    }
}

/// The binary an upgrade runs, and its arguments.
#[derive(Debug, Clone)]
pub struct Target {
    exe: PathBuf,
    args: Vec<OsString>,
}

/// A request to upgrade, answered once the new binary has passed its pre-flight (the exec
/// follows) or with why not.
pub type Call = tokio::sync::oneshot::Sender<Result<Answer, String>>;

/// What an accepted upgrade answers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The new binary's version.
    pub version: String,
    /// The upgrade count the daemon reports once the new image serves.
    pub upgrades: u32,
}

impl crate::supervisor::Supervisor {
    /// Upgrades minderd in place (see the module doc): answers once the new binary has passed
    /// its pre-flight and the hand-over begins, or with why it cannot.
    pub async fn upgrade(&self) -> Result<Answer, String> {
        let gone = || "minderd is shutting down".to_string();
        let Some(tx) = self.shared.upgrade_requests.get() else {
            return Err(
                "this minderd cannot upgrade itself (it was not started as the minderd program)".into()
            );
        };
        let (call, rx) = tokio::sync::oneshot::channel();
        tx.send(call).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// Whether the daemon may upgrade to `target` now: nothing it cannot hand over, no
/// configuration change waiting, and a new binary that can take over. Its version if so.
pub async fn check(sup: &crate::supervisor::Supervisor, target: Target) -> Result<String, String> {
    if sup.shared.shutting_down() {
        return Err("minderd is shutting down".into());
    }
    let unsupported: Vec<String> = sup
        .all()
        .iter()
        .filter(|h| h.logs.pool.is_some() || h.logs.socket.is_some())
        .map(|h| h.config.full_name())
        .collect();
    if !unsupported.is_empty() {
        return Err(format!(
            "cannot upgrade in place with event listeners or FastCGI programs ({}): their protocol state \
             and sockets are not handed over; restart minderd instead",
            unsupported.join(", ")
        ));
    }
    // A start waiting for its dependencies is the supervisor's to resume, not the process's:
    // it is not handed over.
    let waiting: Vec<String> =
        sup.all().iter().filter(|h| h.snapshot().waiting.is_some()).map(|h| h.config.full_name()).collect();
    if !waiting.is_empty() {
        return Err(format!(
            "cannot upgrade while processes wait for their dependencies ({}): start or stop them first",
            waiting.join(", ")
        ));
    }
    match sup.reread().await {
        Err(e) => return Err(format!("the configuration cannot be read: {e}")),
        Ok(plan) if !plan.is_empty() => {
            return Err("the configuration has changes that are not applied (`minder reread` lists them): \
                        an upgrade applies none silently; apply them with `minder update`, or undo them, \
                        then upgrade"
                .into())
        }
        Ok(_) => {}
    }
    let what = target.exe.display().to_string();
    let run = tokio::task::spawn_blocking(move || preflight(&target.exe, &target.args));
    match tokio::time::timeout(PREFLIGHT, run).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("the pre-flight failed: {e}")),
        Err(_) => Err(format!("{what} --upgrade-check did not finish in {PREFLIGHT:?}")),
    }
}

/// Hands everything over to the new image and execs it (see the module doc); the
/// listeners are already stopped. Returns only if no image could be executed, with why.
/// `keep`: descriptors the hand-over names (the listeners' copies), kept open across exec.
pub async fn hand_over(
    sup: &crate::supervisor::Supervisor,
    image: &Image,
    mut keep: Vec<OwnedFd>,
    listeners: Vec<ListenerFd>,
    metrics: Option<RawFd>,
    background: bool,
    version: &str,
) -> String {
    sup.shared.reaper.freeze();
    let mut processes = Vec::new();
    for h in sup.all() {
        match tokio::time::timeout(Duration::from_secs(5), h.hand_over()).await {
            Ok(Some(handed)) => {
                keep.extend(handed.fds);
                processes.push(handed.state);
            }
            _ => tracing::error!(
                "{} did not hand over its state: the next image leaves it alone",
                h.config.name
            ),
        }
    }
    // A pipe of a child that has gone (a grandchild may still hold it) is not handed over.
    for p in crate::capture::pause_all(Duration::from_secs(2)).await {
        let Some(state) = processes.iter_mut().find(|s| s.state.pid() == Some(p.pid)) else { continue };
        let raw = p.pipe.as_raw_fd();
        match p.stream {
            "stdout" => state.stdout = Some(raw),
            _ => state.stderr = Some(raw),
        }
        keep.push(p.pipe);
    }
    let (instance, next_event) = sup.shared.events.resume_point();
    let sentinel = sup.shared.reaper.sentinel_for_handover().map(|(sock, pid)| SentinelFd { sock, pid });
    let running = processes.iter().filter(|p| p.state.pid().is_some()).count();
    let handover = Handover {
        exe: image.exe.clone(),
        from_version: minder::VERSION.to_string(),
        argv: image.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        upgrades: sup.facts().upgrades + 1,
        started_ms: unix_ms(sup.facts().start_time),
        background,
        instance,
        next_event,
        sentinel,
        cgroups: sup.shared.cgroups.as_ref().map(crate::cgroup::Cgroups::save),
        listeners,
        metrics,
        processes,
    };
    let memfd = match write_memfd(&handover) {
        Ok(fd) => fd,
        Err(e) => return format!("cannot write the hand-over: {e}"),
    };
    for fd in &keep {
        keep_across_exec(fd);
    }
    tracing::info!(
        "upgrading: executing {} (version {version}) with {running} running process(es)",
        image.exe.display()
    );
    image.exec(&memfd, None)
}

fn preflight(exe: &std::path::Path, args: &[OsString]) -> Result<String, String> {
    use std::io::Read;
    let mut child = std::process::Command::new(exe)
        .arg("--upgrade-check")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.by_ref().take(64 * 1024).read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.by_ref().take(64 * 1024).read_to_string(&mut err);
    }
    // minderd's reaper may have reaped it already (waitpid(-1)): then the status is unknown,
    // and the line it printed decides.
    let status = child.wait().ok();
    let version = out.lines().find_map(|l| l.strip_prefix(CHECK_OK)).map(|v| v.trim().to_string());
    match (version, status) {
        (Some(v), None) => Ok(v),
        (Some(v), Some(s)) if s.success() => Ok(v),
        (_, status) => {
            let said: String = err.trim().chars().take(2000).collect();
            let how = status.map_or_else(|| "it failed".to_string(), |s| s.to_string());
            Err(format!(
                "the new binary at {} cannot take over ({how}){}",
                exe.display(),
                if said.is_empty() { String::new() } else { format!(": {said}") }
            ))
        }
    }
}

/// Writes the hand-over into a new memfd (which stays open across exec).
pub fn write_memfd(h: &Handover) -> std::io::Result<OwnedFd> {
    use std::io::Write;
    let json = serde_json::to_vec(h).map_err(std::io::Error::other)?;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new descriptor
    // (not close-on-exec: it is for the next image) or -1.
    let fd = unsafe { libc::memfd_create(c"minder-handover".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just created; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(&json)?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_survive_the_hand_over_with_their_timers() {
        let now = Instant::now();
        let later = now + Duration::from_millis(1500);
        let states = [
            State::Stopped,
            State::Starting { pid: 7, since: now, attempt: 2 },
            State::Running {
                pid: 8,
                since: now,
                attempt: 2,
                watchdog_at: Some(now + Duration::from_secs(3)),
            },
            State::Backoff { attempt: 1, retry_at: now + Duration::from_secs(3) },
            State::Stopping {
                pid: 9,
                since: now,
                kill_at: Some(now + Duration::from_secs(10)),
                then: AfterStop::Backoff { attempt: 1 },
            },
            State::Waiting,
            State::Stopping { pid: 9, since: now, kill_at: None, then: AfterStop::Restart },
            State::Exited,
            State::Fatal,
            State::Unknown { pid: 10 },
        ];
        for s in states {
            let saved = Saved::of(&s, later);
            let json = serde_json::to_string(&saved).expect("serializes");
            let back: Saved = serde_json::from_str(&json).expect("parses");
            // Restored 1.5 s after it was saved: ages grow by that, deadlines stay where they were.
            let restored = back.state(later);
            assert_eq!(restored, s, "{json}");
        }
    }

    #[test]
    fn exits_survive_the_hand_over() {
        for e in [
            Exit { status: ExitStatus::Code(3), expected: false },
            Exit { status: ExitStatus::Signal { signal: 9, core_dumped: false, oom: true }, expected: false },
        ] {
            assert_eq!(SavedExit::of(&e).exit(), e);
        }
    }
}
