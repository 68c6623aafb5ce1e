//! Starting a child exactly as supervisord sets one up, and knowing why when it cannot start.
//!
//! Everything that can fail is tried in the parent first (finding the executable, the user,
//! opening pipes), so the reason is clear. What can only fail in the child (setuid, chdir,
//! exec) is reported back through a close-on-exec pipe as a stage and an errno: the caller
//! gets "couldn't chdir to /srv/app: ENOENT (No such file or directory)" instead of a
//! mysterious exit 127.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use minder::config::ProcessConfig;
use nix::errno::Errno;
use tokio::sync::oneshot;

use crate::lifecycle::ExitStatus;
use crate::process::Stdio;
use crate::reaper::Reaper;

/// Why a spawn could not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The command's executable does not exist (supervisord's NO_FILE).
    #[error("{0}")]
    NoFile(String),
    /// It exists but cannot be executed (supervisord's NOT_EXECUTABLE).
    #[error("{0}")]
    NotExecutable(String),
    /// minderd has no file descriptors to spare (EMFILE/ENFILE): the daemon's shortage, not
    /// the program's failure.
    #[error("{0}")]
    NoDescriptors(String),
    /// Anything else: the user, pipes, fork, or a failure in the child before exec.
    #[error("{0}")]
    Other(String),
}

/// Whether an errno says the process or the system is out of file descriptors.
fn out_of_descriptors(e: Errno) -> bool {
    e == Errno::EMFILE || e == Errno::ENFILE
}

/// supervisord's words for a spawn that found no descriptors.
fn no_descriptors(name: &str) -> SpawnError {
    SpawnError::NoDescriptors(format!("too many open files to spawn '{name}'"))
}

/// What every child's environment starts from: the daemon's environment when it started, and
/// the address children can reach the daemon at.
#[derive(Debug, Clone)]
pub struct BaseEnv {
    pub vars: BTreeMap<OsString, OsString>,
    /// `unix:///…` or `http://…`; exported as SUPERVISOR_SERVER_URL and MINDER_SERVER.
    pub server_url: Option<String>,
}

impl BaseEnv {
    pub fn from_process(server_url: Option<String>) -> Self {
        // systemd's notify socket is minderd's, not its children's.
        let vars = std::env::vars_os().filter(|(k, _)| k != "NOTIFY_SOCKET").collect();
        BaseEnv { vars, server_url }
    }
}

/// A started child: its pid, where its exit will be reported, and the parent's pipe ends.
#[derive(Debug)]
pub struct Child {
    pub pid: u32,
    /// A pidfd for the child (Linux), to signal it and nobody else.
    pub pidfd: Option<OwnedFd>,
    pub exit: oneshot::Receiver<ExitStatus>,
    /// The write end of the child's stdin (none for a FastCGI program, whose stdin is its
    /// socket).
    pub stdin: Option<OwnedFd>,
    /// The read ends of its stdout and stderr, where they are captured (not NONE).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The credentials to switch to, resolved in the parent.
#[derive(Debug, Clone)]
struct Creds {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

/// The stage of the child's set-up that failed, sent back through the error pipe.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Stage {
    Pgrp = 1,
    Stdio = 2,
    Groups = 3,
    Setgid = 4,
    Setuid = 5,
    Chdir = 6,
    Exec = 7,
    Cgroup = 8,
    Unshare = 9,
}

/// Finds the executable as supervisord's `get_execv_args` does: a name with a `/` is used as
/// it is; a bare name is looked up in the program's PATH, else the daemon's.
pub fn resolve_executable(config: &ProcessConfig, base: &BaseEnv) -> Result<PathBuf, SpawnError> {
    let program = &config.argv[0];
    let found = if program.contains('/') {
        let p = PathBuf::from(program);
        std::fs::metadata(&p).ok().map(|m| (p, m))
    } else {
        let path = config
            .environment
            .get("PATH")
            .map(OsString::from)
            .or_else(|| base.vars.get(OsStr::new("PATH")).cloned())
            .unwrap_or_else(|| "/bin:/usr/bin:/usr/local/bin".into());
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find_map(|p| std::fs::metadata(&p).ok().map(|m| (p, m)))
    };
    let Some((path, meta)) = found else {
        return Err(SpawnError::NoFile(format!("can't find command '{program}'")));
    };
    let shown = path.display();
    if meta.is_dir() {
        return Err(SpawnError::NotExecutable(format!("command at '{shown}' is a directory")));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(SpawnError::NotExecutable(format!("command at '{shown}' is not executable")));
    }
    if nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK).is_err() {
        return Err(SpawnError::NotExecutable(format!("no permission to run command '{shown}'")));
    }
    Ok(path)
}

/// Builds the child's environment: the daemon's, then SUPERVISOR_* and MINDER_*, then the
/// user's HOME/USER/LOGNAME when switching user, then the program's own `environment`.
fn environment(
    config: &ProcessConfig,
    base: &BaseEnv,
    user: Option<&nix::unistd::User>,
    extra: &[(String, String)],
) -> Vec<CString> {
    // The few variables set here, over the daemon's many: only the result is allocated.
    let mut set: BTreeMap<&OsStr, &OsStr> = BTreeMap::new();
    set.insert("SUPERVISOR_ENABLED".as_ref(), "1".as_ref());
    set.insert("SUPERVISOR_PROCESS_NAME".as_ref(), config.name.as_ref());
    set.insert("SUPERVISOR_GROUP_NAME".as_ref(), config.group.as_ref());
    set.insert("MINDER_PROCESS_NAME".as_ref(), config.name.as_ref());
    set.insert("MINDER_GROUP_NAME".as_ref(), config.group.as_ref());
    if let Some(url) = config.serverurl.as_ref().or(base.server_url.as_ref()) {
        set.insert("SUPERVISOR_SERVER_URL".as_ref(), url.as_ref());
        set.insert("MINDER_SERVER".as_ref(), url.as_ref());
    }
    if let Some(u) = user {
        set.insert("HOME".as_ref(), u.dir.as_os_str());
        set.insert("USER".as_ref(), u.name.as_ref());
        set.insert("LOGNAME".as_ref(), u.name.as_ref());
    }
    for (k, v) in &config.environment {
        set.insert(k.as_ref(), v.as_ref());
    }
    // minderd's own (NOTIFY_SOCKET, WATCHDOG_USEC): over the program's, which cannot know them.
    for (k, v) in extra {
        set.insert(k.as_ref(), v.as_ref());
    }
    let inherited = base.vars.iter().filter(|(k, _)| !set.contains_key(k.as_os_str()));
    inherited
        .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
        .chain(set.iter().map(|(k, v)| (*k, *v)))
        .filter_map(|(k, v)| {
            let mut kv = Vec::with_capacity(k.len() + v.len() + 2);
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect()
}

fn cstring(s: impl AsRef<OsStr>, what: &str) -> Result<CString, SpawnError> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| SpawnError::Other(format!("{what} contains a NUL byte")))
}

/// The uid of `user=` (a name or a number), as the spawn will switch to it.
pub fn uid_of(name: &str) -> Result<u32, SpawnError> {
    user_creds(name).map(|(u, _)| u.uid.as_raw())
}

fn user_creds(name: &str) -> Result<(nix::unistd::User, Option<Creds>), SpawnError> {
    let found = match name.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(name),
    };
    let user = match found {
        Ok(Some(u)) => u,
        Ok(None) => return Err(SpawnError::Other(format!("Can't find username '{name}'"))),
        Err(e) => return Err(SpawnError::Other(format!("cannot look up user '{name}': {e}"))),
    };
    let me = nix::unistd::Uid::current();
    if me == user.uid {
        // Already that user: nothing to switch, as in supervisord.
        return Ok((user, None));
    }
    if !me.is_root() {
        return Err(SpawnError::Other(format!(
            "Can't drop privilege as nonroot user (minderd runs as uid {me}; user={name} needs root)"
        )));
    }
    let groups = supplementary_groups(&user)?;
    let creds = Creds { uid: user.uid.as_raw(), gid: user.gid.as_raw(), groups };
    Ok((user, Some(creds)))
}

#[cfg(not(target_vendor = "apple"))]
fn supplementary_groups(user: &nix::unistd::User) -> Result<Vec<libc::gid_t>, SpawnError> {
    let name = cstring(&user.name, "the user name")?;
    let mut groups: Vec<libc::gid_t> = nix::unistd::getgrouplist(&name, user.gid)
        .map_err(|e| SpawnError::Other(format!("cannot list the groups of user '{}': {e}", user.name)))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    // The primary group first, as supervisord does.
    groups.retain(|g| *g != user.gid.as_raw());
    groups.insert(0, user.gid.as_raw());
    Ok(groups)
}

#[cfg(target_vendor = "apple")]
fn supplementary_groups(user: &nix::unistd::User) -> Result<Vec<libc::gid_t>, SpawnError> {
    Ok(vec![user.gid.as_raw()])
}

fn pipe(name: &str) -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
        if out_of_descriptors(e) {
            no_descriptors(name)
        } else {
            SpawnError::Other(format!("cannot make a pipe: {}", errno_text(e)))
        }
    })
}

fn dev_null(name: &str) -> Result<OwnedFd, SpawnError> {
    std::fs::OpenOptions::new().write(true).open("/dev/null").map(OwnedFd::from).map_err(|e| {
        match e.raw_os_error().map(Errno::from_raw) {
            Some(errno) if out_of_descriptors(errno) => no_descriptors(name),
            _ => SpawnError::Other(format!("cannot open /dev/null: {e}")),
        }
    })
}

/// "ENOENT (No such file or directory)".
pub fn errno_text(e: Errno) -> String {
    format!("{e:?} ({})", e.desc())
}

/// Spawns the process described by `config`, running `path` (from [`resolve_executable`],
/// checked just before); its output is piped where `logs` has a channel,
/// and goes to /dev/null where it has none.
pub async fn spawn(
    config: &ProcessConfig,
    path: PathBuf,
    logs: &Stdio,
    base: &BaseEnv,
    reaper: &std::sync::Arc<Reaper>,
    cgroup: Option<&crate::cgroup::ProcessCgroup>,
    extra_env: &[(String, String)],
) -> Result<Child, SpawnError> {
    let (user, creds) = match &config.user {
        Some(name) => {
            let (u, c) = user_creds(name)?;
            (Some(u), c)
        }
        None => (None, None),
    };
    let c_path = cstring(&path, "the command")?;
    let c_argv = config.argv.iter().map(|a| cstring(a, "the command")).collect::<Result<Vec<_>, _>>()?;
    let c_env = environment(config, base, user.as_ref(), extra_env);
    let c_dir = config.directory.as_ref().map(|d| cstring(d, "directory")).transpose()?;

    // The parent's and the child's ends of stdin, stdout and stderr.
    if let Some(why) = &logs.socket_error {
        return Err(SpawnError::Other(why.clone()));
    }
    // stdin: the FastCGI socket, or a pipe minderd keeps the write end of.
    let (stdin_child, stdin_parent) = match &logs.socket {
        Some(sock) => {
            let dup = sock.try_clone().map_err(|e| match e.raw_os_error().map(Errno::from_raw) {
                Some(errno) if out_of_descriptors(errno) => no_descriptors(&config.name),
                _ => SpawnError::Other(format!("cannot pass the socket: {e}")),
            })?;
            (dup, None)
        }
        None => {
            let (r, w) = pipe(&config.name)?;
            (r, Some(w))
        }
    };
    let (stdout_parent, stdout_child) = if logs.reads(config, "stdout") {
        let (r, w) = pipe(&config.name)?;
        (Some(r), w)
    } else {
        (None, dev_null(&config.name)?)
    };
    let (stderr_parent, stderr_child) = if config.redirect_stderr {
        (None, None)
    } else {
        if logs.reads(config, "stderr") {
            let (r, w) = pipe(&config.name)?;
            (Some(r), Some(w))
        } else {
            (None, Some(dev_null(&config.name)?))
        }
    };
    let stdio = [
        stdin_child.as_raw_fd(),
        stdout_child.as_raw_fd(),
        stderr_child.as_ref().map_or(stdout_child.as_raw_fd(), AsRawFd::as_raw_fd),
    ];
    let (err_r, err_w) = pipe(&config.name)?;
    let stdio = Stdio3 { fds: stdio, err_w: err_w.as_raw_fd() };
    let cgroup_procs = match cgroup.map(crate::cgroup::ProcessCgroup::open_procs).transpose() {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error().map(Errno::from_raw).is_some_and(out_of_descriptors) => {
            return Err(no_descriptors(&config.name))
        }
        Err(e) => return Err(SpawnError::Other(format!("cannot open the cgroup of '{}': {e}", config.name))),
    };
    // Read without waiting (spawn_report); a 5-byte report always fits an empty pipe.
    nix::fcntl::fcntl(&err_r, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
        .map_err(|e| SpawnError::Other(format!("cannot make a pipe: {}", errno_text(e))))?;

    // What the child uses moves to the forking thread with it, its ends of the pipes
    // included: they are closed in minderd once the child has them.
    let cgroup_fd = cgroup_procs.as_ref().map(AsRawFd::as_raw_fd);
    let mut held = vec![stdin_child, stdout_child, err_w];
    held.extend(stderr_child);
    held.extend(cgroup_procs);
    let plan =
        ChildPlan::new(c_path, c_argv, c_env, c_dir, config.umask, creds, stdio, cgroup_fd, reaper, held);
    // SAFETY: `exec_child` makes only raw system calls on `plan`, which the forking thread
    // keeps alive until the child has exec'd or exited, and unshares the descriptor table
    // before it changes a descriptor when `prepare` shared it.
    let forked = unsafe { reaper.fork(plan) }.await;
    let crate::reaper::Forked { pid, pidfd, exit } = forked.map_err(|e| {
        SpawnError::Other(if e == Errno::EAGAIN {
            format!("Too many processes in process table to spawn '{}'", config.name)
        } else {
            format!("unknown error during fork for '{}': {}", config.name, errno_text(e))
        })
    })?;

    let report = spawn_report(err_r).await?;
    if report.len() >= 5 {
        let errno = Errno::from_raw(i32::from_ne_bytes([report[1], report[2], report[3], report[4]]));
        let what = match report[0] {
            x if x == Stage::Pgrp as u8 => "couldn't set the process group".to_string(),
            x if x == Stage::Stdio as u8 => "couldn't set up stdin, stdout and stderr".to_string(),
            x if x == Stage::Groups as u8 => {
                format!("couldn't set the groups of user {}", config.user.as_deref().unwrap_or("?"))
            }
            x if x == Stage::Setgid as u8 || x == Stage::Setuid as u8 => {
                format!("couldn't setuid to {}", config.user.as_deref().unwrap_or("?"))
            }
            x if x == Stage::Cgroup as u8 => "couldn't join its cgroup".to_string(),
            x if x == Stage::Unshare as u8 => {
                // The kernel has no CLOSE_RANGE_UNSHARE after all: spawns copy the table again.
                slots::disable();
                "couldn't take a descriptor table of its own".to_string()
            }
            x if x == Stage::Chdir as u8 => format!(
                "couldn't chdir to {}",
                config.directory.as_deref().unwrap_or(Path::new("?")).display()
            ),
            _ => format!("couldn't exec {}", path.display()),
        };
        // The child has exited 127; the reaper reaps it and nobody listens.
        if out_of_descriptors(errno) {
            return Err(no_descriptors(&config.name));
        }
        return Err(SpawnError::Other(format!("{what}: {}", errno_text(errno))));
    }
    Ok(Child {
        pid: pid as u32,
        pidfd,
        exit,
        stdin: stdin_parent,
        stdout: stdout_parent,
        stderr: stderr_parent,
    })
}

/// What the child wrote to the error pipe: nothing after a successful exec, or the stage and
/// errno of a failure.
#[cfg(target_os = "linux")]
async fn spawn_report(err_r: OwnedFd) -> Result<Vec<u8>, SpawnError> {
    // The child was made with CLONE_VFORK, so by now it has exec'd or exited: a failure's report
    // is already in the pipe. Its write end may still be open for a moment (exec closes it
    // after releasing this process), so this reads without waiting for the end of the pipe.
    let mut buf = [0u8; 5];
    match nix::unistd::read(&err_r, &mut buf) {
        Ok(n) => Ok(buf[..n].to_vec()),
        Err(Errno::EAGAIN) => Ok(Vec::new()),
        Err(e) => Err(SpawnError::Other(format!("cannot read the spawn report: {}", errno_text(e)))),
    }
}

/// What the child wrote to the error pipe, read to its end: the pipe closes on a successful
/// exec, or carries the stage and errno of a failure.
#[cfg(not(target_os = "linux"))]
async fn spawn_report(err_r: OwnedFd) -> Result<Vec<u8>, SpawnError> {
    use tokio::io::AsyncReadExt;
    let mut report = Vec::new();
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(err_r)
        .map_err(|e| SpawnError::Other(format!("cannot read the spawn report: {e}")))?;
    reader
        .read_to_end(&mut report)
        .await
        .map_err(|e| SpawnError::Other(format!("cannot read the spawn report: {e}")))?;
    Ok(report)
}

/// The highest descriptor to close in the child when close_range is not available.
fn max_fd() -> libc::c_int {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if n <= 0 {
        1024
    } else {
        n.min(65_536) as libc::c_int
    }
}

/// The descriptors the child's 0, 1 and 2 become, and its error pipe.
#[derive(Debug, Clone, Copy)]
struct Stdio3 {
    fds: [RawFd; 3],
    err_w: RawFd,
}

/// Everything the child uses before exec, owned: it moves to the forking thread, which keeps
/// it alive until the child has exec'd or exited. The child only reads it, through the raw
/// pointers taken here (into heap buffers that do not move with the struct).
struct ChildPlan {
    /// minderd's pid, to notice it died before the child asked to die with it.
    parent: libc::pid_t,
    /// Whether to ask to die with minderd (`kill_on_exit`).
    die_with_parent: bool,
    path: CString,
    /// Kept for `argv_ptrs` and `env_ptrs`, which point into them.
    _strings: (Vec<CString>, Vec<CString>),
    argv_ptrs: Vec<*const libc::c_char>,
    env_ptrs: Vec<*const libc::c_char>,
    dir: Option<CString>,
    umask: Option<libc::mode_t>,
    creds: Option<Creds>,
    stdio: Stdio3,
    /// The `cgroup.procs` of the process's cgroup, to join before anything else runs.
    cgroup: Option<RawFd>,
    max_fd: libc::c_int,
    /// Set by `prepare` when the child shares minderd's descriptor table (its descriptors are
    /// then in the spawn slots): the first descriptor it leaves out of its own copy.
    unshare_from: Option<RawFd>,
    /// The child's ends of its pipes (and its cgroup.procs): open until it has them, then
    /// closed in minderd when the plan is dropped.
    _held: Vec<OwnedFd>,
}

// SAFETY: the raw pointers point into the plan's own heap buffers (`_strings`), which move
// with it as a whole; nothing else shares them.
unsafe impl Send for ChildPlan {}

impl ChildPlan {
    #[allow(clippy::too_many_arguments)] // the pieces of one exec, kept apart so each is typed
    fn new(
        path: CString,
        argv: Vec<CString>,
        env: Vec<CString>,
        dir: Option<CString>,
        umask: Option<u32>,
        creds: Option<Creds>,
        stdio: Stdio3,
        cgroup: Option<RawFd>,
        reaper: &Reaper,
        held: Vec<OwnedFd>,
    ) -> ChildPlan {
        let ptrs =
            |v: &[CString]| v.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        ChildPlan {
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            die_with_parent: reaper.guards_children(),
            path,
            argv_ptrs: ptrs(&argv),
            env_ptrs: ptrs(&env),
            _strings: (argv, env),
            dir,
            umask: umask.map(|m| m as libc::mode_t),
            creds,
            stdio,
            cgroup,
            max_fd: max_fd(),
            unshare_from: None,
            _held: held,
        }
    }
}

impl crate::reaper::Fork for ChildPlan {
    /// Moves the child's descriptors into the spawn slots, when there are slots: the child
    /// then shares minderd's table and copies only the few descriptors below the slots' end.
    fn prepare(&mut self) -> bool {
        let mut fds = [self.stdio.fds[0], self.stdio.fds[1], self.stdio.fds[2], self.stdio.err_w, -1];
        if let Some(cg) = self.cgroup {
            fds[4] = cg;
        }
        let Some(slotted) = slots::take(&fds) else { return false };
        self.stdio = Stdio3 { fds: [slotted.fds[0], slotted.fds[1], slotted.fds[2]], err_w: slotted.fds[3] };
        self.cgroup = self.cgroup.map(|_| slotted.fds[4]);
        self.unshare_from = Some(slotted.end);
        true
    }

    unsafe fn child(&self) -> std::convert::Infallible {
        // SAFETY: as this trait method's contract, which is `exec_child`'s.
        unsafe { exec_child(self) }
    }

    fn finish(&mut self) {
        if self.unshare_from.take().is_some() {
            slots::release();
        }
    }
}

/// The spawn slots (Linux): a few low descriptors, reserved at start-up on /dev/null, that
/// the forking thread points at a child's pipes for the length of its fork. The child starts
/// on minderd's own descriptor table (`CLONE_FILES`: nothing copied) and at once unshares it
/// with `close_range(end, ~0, CLOSE_RANGE_UNSHARE)`, which copies only the descriptors below
/// `end`. Without them every spawn copies minderd's whole table (five descriptors per
/// program: three pipes and two log files) and then closes every copy: at 2,000 programs that
/// was most of the time a spawn took, and it grew with every program.
mod slots {
    use std::os::fd::RawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;

    const COUNT: usize = 5;

    struct Slots {
        /// Where each slot points between forks.
        devnull: RawFd,
        fds: [RawFd; COUNT],
        /// One past the highest slot.
        end: RawFd,
        /// A fork is using the slots (they are the forking thread's, but forks can run
        /// elsewhere when there is no forking thread).
        busy: AtomicBool,
        /// False once a child could not unshare.
        works: AtomicBool,
    }

    static SLOTS: OnceLock<Slots> = OnceLock::new();

    /// The slots a fork uses: `fds[i]` holds what the child's descriptor `i` of
    /// [stdin, stdout, stderr, error pipe, cgroup.procs] was.
    pub(super) struct Slotted {
        pub fds: [RawFd; COUNT],
        pub end: RawFd,
    }

    /// Reserves the slots. Call once, while minderd has a single thread: the check that the
    /// kernel can unshare a table would give the calling thread a table of its own otherwise.
    pub fn reserve() {
        #[cfg(target_os = "linux")]
        {
            let one_thread = std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1);
            // SAFETY: closes an empty range; the table is not shared (one thread), so the
            // unshare copies nothing. It fails (EINVAL, ENOSYS) where the kernel lacks it.
            if !one_thread
                || unsafe {
                    libc::syscall(libc::SYS_close_range, u32::MAX, u32::MAX, libc::CLOSE_RANGE_UNSHARE)
                } != 0
            {
                return;
            }
            let open = || -> Option<RawFd> {
                use std::os::fd::IntoRawFd;
                let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").ok()?;
                Some(f.into_raw_fd())
            };
            let Some(devnull) = open() else { return };
            let mut fds = [-1; COUNT];
            for slot in &mut fds {
                match open() {
                    Some(fd) => *slot = fd,
                    None => return,
                }
            }
            let end = fds.iter().copied().max().unwrap_or(devnull) + 1;
            let _ = SLOTS.set(Slots {
                devnull,
                fds,
                end,
                busy: AtomicBool::new(false),
                works: AtomicBool::new(true),
            });
        }
    }

    /// Points the slots at `fds` (`-1`: left on /dev/null), if they are free and work.
    pub(super) fn take(fds: &[RawFd; COUNT]) -> Option<Slotted> {
        let s = SLOTS.get()?;
        if !s.works.load(Ordering::Relaxed) || s.busy.swap(true, Ordering::Acquire) {
            return None;
        }
        for (i, &fd) in fds.iter().enumerate() {
            if fd < 0 {
                continue;
            }
            // SAFETY: dup3 onto a slot, which only this fork uses now (`busy`).
            if unsafe { libc::dup3(fd, s.fds[i], libc::O_CLOEXEC) } != s.fds[i] {
                release();
                return None;
            }
        }
        Some(Slotted { fds: s.fds, end: s.end })
    }

    /// Points the slots back at /dev/null, so minderd holds no child's end of a pipe, and
    /// frees them.
    pub(super) fn release() {
        let Some(s) = SLOTS.get() else { return };
        for &slot in &s.fds {
            // SAFETY: dup3 onto a slot this fork holds.
            unsafe { libc::dup3(s.devnull, slot, libc::O_CLOEXEC) };
        }
        s.busy.store(false, Ordering::Release);
    }

    /// Stops using the slots: a child could not unshare the table.
    pub(super) fn disable() {
        if let Some(s) = SLOTS.get() {
            s.works.store(false, Ordering::Relaxed);
        }
    }
}

/// Reserves the spawn slots (see `slots`): call once at start-up, before any other thread.
pub fn reserve_spawn_slots() {
    slots::reserve();
}

/// The child side of the fork: set up as supervisord does, then exec. On failure, reports the
/// stage and errno through `err_w` and exits 127.
///
/// # Safety
/// Only for the child between fork (or `clone(CLONE_VM|CLONE_VFORK)`) and exec: `p` must be
/// kept alive by the parent until the child has exec'd or exited. On Linux the child
/// shares the parent's memory, so glibc believes it is multi-threaded: this function therefore
/// makes only raw system calls (and async-signal-safe libc calls that are themselves plain
/// system calls), never glibc's `setuid` family, whose `__nptl_setxid` would try to signal
/// minderd's other threads from a process that does not own them.
unsafe fn exec_child(p: &ChildPlan) -> std::convert::Infallible {
    let fail = |stage: Stage| -> ! {
        let errno = Errno::last_raw().to_ne_bytes();
        let msg = [stage as u8, errno[0], errno[1], errno[2], errno[3]];
        // SAFETY: write and _exit are async-signal-safe; `msg` lives on this stack.
        unsafe {
            libc::write(p.stdio.err_w, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: every call below is a system call (or glibc's async-signal-safe wrapper of one)
    // on memory prepared by the parent, as this function's contract requires.
    unsafe {
        // Signals: nothing blocked, nothing ignored (Rust ignores SIGPIPE; the child must not).
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // (On Linux the clone trampoline has done this already, before unblocking.)
        #[cfg(not(target_os = "linux"))]
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // Into its cgroup first (`0` is the writer itself), while still root: everything it
        // runs from here on is inside, and a child that cannot join does not run at all.
        if let Some(fd) = p.cgroup {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(Stage::Cgroup);
            }
        }
        // Its own process group, so signals to minderd's group (Ctrl-C) do not reach it.
        if libc::setpgid(0, 0) != 0 {
            fail(Stage::Pgrp);
        }
        // A table of its own before any descriptor changes, when it started on minderd's.
        if let Some(end) = p.unshare_from {
            if libc::syscall(libc::SYS_close_range, end as libc::c_uint, u32::MAX, libc::CLOSE_RANGE_UNSHARE)
                != 0
            {
                fail(Stage::Unshare);
            }
        }
        for (target, &fd) in p.stdio.fds.iter().enumerate() {
            let target = target as RawFd;
            let ok = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, target) == target
            };
            if !ok {
                fail(Stage::Stdio);
            }
        }
        close_from_3_except(p.stdio.err_w, p.max_fd);
        if let Some(c) = &p.creds {
            if set_groups(&c.groups) != 0 {
                fail(Stage::Groups);
            }
            if set_gid(c.gid) != 0 {
                fail(Stage::Setgid);
            }
            if set_uid(c.uid) != 0 {
                fail(Stage::Setuid);
            }
        }
        // If minderd itself is killed (SIGKILL: no chance to stop its children), its children
        // go down with it rather than live on orphaned, unsupervised. This comes after the
        // switch of user: the kernel clears the parent-death signal on every change of
        // credentials, so asked for before setuid it would be silently gone. The kernel ties
        // it to the forking thread: minderd's main thread (upgrade.rs), which lives as long as
        // the daemon, across upgrades. A minderd that died before the request took effect is
        // caught by the parent check: the child would have been re-parented by then.
        #[cfg(target_os = "linux")]
        if p.die_with_parent {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != p.parent {
                libc::_exit(127);
            }
        }
        if let Some(dir) = &p.dir {
            if libc::chdir(dir.as_ptr()) != 0 {
                fail(Stage::Chdir);
            }
        }
        if let Some(mask) = p.umask {
            libc::umask(mask);
        }
        libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.env_ptrs.as_ptr());
        fail(Stage::Exec)
    }
}

// The credential switch, as raw system calls on Linux: glibc's own posix_spawn does the same in
// its vfork child, because the wrappers (setgroups, setgid, setuid) broadcast the change to
// every thread of the process through signals (`__nptl_setxid`), which is neither
// async-signal-safe nor meaningful in a child that only shares the parent's memory. The kernel
// calls change only the calling process. Each returns 0 or -1 with errno set.
// (i386 and 32-bit ARM have 16-bit ids on the plain calls; the `32` ones take full ids.)

#[cfg(all(target_os = "linux", not(any(target_arch = "x86", target_arch = "arm"))))]
mod sys {
    pub const SETGROUPS: libc::c_long = libc::SYS_setgroups;
    pub const SETRESGID: libc::c_long = libc::SYS_setresgid;
    pub const SETRESUID: libc::c_long = libc::SYS_setresuid;
}

#[cfg(all(target_os = "linux", any(target_arch = "x86", target_arch = "arm")))]
mod sys {
    pub const SETGROUPS: libc::c_long = libc::SYS_setgroups32;
    pub const SETRESGID: libc::c_long = libc::SYS_setresgid32;
    pub const SETRESUID: libc::c_long = libc::SYS_setresuid32;
}

/// # Safety
/// For the child between fork and exec (see [`exec_child`]).
#[cfg(target_os = "linux")]
unsafe fn set_groups(groups: &[libc::gid_t]) -> libc::c_long {
    // SAFETY: setgroups reads `groups.len()` ids from a live slice.
    unsafe { libc::syscall(sys::SETGROUPS, groups.len(), groups.as_ptr()) }
}

/// # Safety
/// For the child between fork and exec (see [`exec_child`]).
#[cfg(target_os = "linux")]
unsafe fn set_gid(gid: libc::gid_t) -> libc::c_long {
    // SAFETY: setresgid takes integers only.
    unsafe { libc::syscall(sys::SETRESGID, gid, gid, gid) }
}

/// # Safety
/// For the child between fork and exec (see [`exec_child`]).
#[cfg(target_os = "linux")]
unsafe fn set_uid(uid: libc::uid_t) -> libc::c_long {
    // SAFETY: setresuid takes integers only.
    unsafe { libc::syscall(sys::SETRESUID, uid, uid, uid) }
}

// Elsewhere the child is a forked copy with one thread, where the libc calls are plain system
// calls.

/// # Safety
/// For the child between fork and exec (see [`exec_child`]).
#[cfg(not(target_os = "linux"))]
unsafe fn set_groups(groups: &[libc::gid_t]) -> libc::c_long {
    // SAFETY: setgroups reads `groups.len()` ids from a live slice.
    unsafe { libc::setgroups(groups.len() as libc::c_int, groups.as_ptr()).into() }
}

/// # Safety
/// For the child between fork and exec (see [`exec_child`]).
#[cfg(not(target_os = "linux"))]
unsafe fn set_gid(gid: libc::gid_t) -> libc::c_long {
    // SAFETY: setgid takes an integer only.
    unsafe { libc::setgid(gid).into() }
}

/// # Safety
/// For the child between fork and exec (see [`exec_child`]).
#[cfg(not(target_os = "linux"))]
unsafe fn set_uid(uid: libc::uid_t) -> libc::c_long {
    // SAFETY: setuid takes an integer only.
    unsafe { libc::setuid(uid).into() }
}

/// Closes every descriptor from 3 up, except `keep` (the error pipe, closed by exec).
///
/// # Safety
/// Async-signal-safe; for the child between fork and exec only.
unsafe fn close_from_3_except(keep: RawFd, max_fd: libc::c_int) {
    #[cfg(target_os = "linux")]
    // SAFETY: close_range only closes descriptors.
    unsafe {
        let lo = libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        let hi = libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
        if lo == 0 && hi == 0 {
            return;
        }
    }
    for fd in 3..max_fd {
        if fd != keep {
            // SAFETY: closing a descriptor that may not be open is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

/// Makes sure descriptors 0, 1 and 2 are open (on /dev/null if not), so no pipe minderd makes
/// can land on them. Call once at start-up.
pub fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
                let owned = OwnedFd::from(f);
                if owned.as_raw_fd() != fd {
                    // SAFETY: dup2 onto a closed standard descriptor; `owned` is closed after.
                    unsafe { libc::dup2(owned.as_raw_fd(), fd) };
                } else {
                    // It landed on `fd` itself: keep it open for the life of the process.
                    std::mem::forget(owned);
                }
            }
        }
    }
}
