//! Reaps every child minderd has, and tells each process's owner how its child ended.
//!
//! minderd is a child subreaper (Linux), so orphaned grandchildren are re-parented to it and
//! must be reaped too. One task waits for SIGCHLD and calls `waitpid(-1, WNOHANG)` until nothing
//! is left; an exit whose pid was registered by [`Reaper::fork`] goes to that registration,
//! any other (a grandchild) is just reaped.
//!
//! The race between a child exiting and its pid being registered is closed by a lock: `fork`
//! holds it from before the fork until the pid is registered, and the reaper holds it around
//! each `waitpid`, so no child can be reaped before its owner is listening.
//!
//! The same lock makes signals safe from pid reuse: [`Reaper::signal`] signals a pid (or its
//! process group) only while that child's exit has not been reaped, so a signal meant for a
//! child that has ended can never reach a stranger that was given its pid. On Linux a pidfd,
//! taken while the child cannot yet have been reaped, names the process itself.
//!
//! On Linux each child also asks the kernel to SIGKILL it when minderd dies (spawn.rs), but a
//! program that drops privileges itself (setpriv, gosu, su-exec) loses that request when it
//! changes its credentials. For those, a small *sentinel* process, forked at start, holds a
//! copy of every child's pidfd; when minderd's end of their socket closes (minderd exited or
//! was killed), it SIGKILLs whichever of them are still alive, then exits.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::lifecycle::ExitStatus;

#[derive(Debug, Default)]
pub struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
    /// Where each child's pidfd goes, to be ended if minderd is killed (Linux).
    sentinel: Option<Sentinel>,
    /// Set (under the lock) for an upgrade: nothing is reaped any more, so every exit from now
    /// on waits, a zombie, for the next image.
    frozen: std::sync::atomic::AtomicBool,
    /// Children die with minderd (`kill_on_exit`): they ask for a parent-death signal.
    guard: bool,
    /// Pidfds are kept only below this descriptor number (half the descriptor limit).
    pidfd_below: std::os::fd::RawFd,
}

/// Half of this process's descriptor limit: minderd keeps a child's pidfd only while the
/// pidfd's number is below it. A pidfd is a second guard against pid reuse (the first is the
/// lock: a child is signalled only while it is not reaped, so its pid is still its own); with
/// thousands of programs and a tight `ulimit -n`, a descriptor per child would crowd out the
/// pipes and log files that programs cannot start without.
fn pidfd_budget() -> std::os::fd::RawFd {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => std::os::fd::RawFd::try_from(soft / 2).unwrap_or(std::os::fd::RawFd::MAX),
        Err(_) => 512,
    }
}

/// `fd`, if its number is below `below` (see [`pidfd_budget`]).
fn within(fd: Option<OwnedFd>, below: std::os::fd::RawFd) -> Option<OwnedFd> {
    use std::os::fd::AsRawFd;
    fd.filter(|fd| fd.as_raw_fd() < below)
}

impl Reaper {
    /// Makes this process a subreaper (where the OS has them) and starts reaping on SIGCHLD.
    /// Must be called inside the tokio runtime, before any child is spawned.
    /// `sentinel_cgroup`: a `cgroup.procs` the sentinel joins first (see [`crate::cgroup`]).
    /// Without `guard` (`kill_on_exit = false`) there is no sentinel, and children do not ask
    /// to die with minderd.
    pub fn start(sentinel_cgroup: Option<BorrowedFd<'_>>, guard: bool) -> std::io::Result<Arc<Reaper>> {
        #[cfg(target_os = "linux")]
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument and no pointers.
        unsafe {
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let started = if guard { Some(Sentinel::start(sentinel_cgroup)) } else { None };
        let sentinel = match started {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                tracing::warn!(
                    "cannot start the sentinel ({e}): children that drop privileges themselves would outlive a killed minderd"
                );
                None
            }
        };
        Ok(Reaper::launch(sentinel, &[], guard)?.0)
    }

    /// The reaper of an upgraded minderd: it keeps the sentinel the old image started (its
    /// socket and pid), and registers the children the old image handed over (`adopt`) before
    /// anything is reaped, so an exit during the hand-over reaches its process's task. Returns
    /// each adopted child's registration by pid.
    pub fn resume(
        sentinel: Option<(OwnedFd, u32)>,
        adopt: &[i32],
        guard: bool,
    ) -> std::io::Result<(Arc<Reaper>, HashMap<i32, Forked>)> {
        #[cfg(target_os = "linux")]
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument and no pointers.
        unsafe {
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let sentinel = sentinel.map(|(sock, pid)| Sentinel { sock, pid });
        Reaper::launch(sentinel, adopt, guard)
    }

    fn launch(
        sentinel: Option<Sentinel>,
        adopt: &[i32],
        guard: bool,
    ) -> std::io::Result<(Arc<Reaper>, HashMap<i32, Forked>)> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Reaper {
            waiting: Mutex::default(),
            sentinel,
            frozen: Default::default(),
            guard,
            pidfd_below: pidfd_budget(),
        });
        let mut adopted = HashMap::new();
        {
            let mut waiting = reaper.lock();
            for &pid in adopt {
                let (tx, rx) = oneshot::channel();
                waiting.insert(pid, tx);
                // Not reaped yet (nothing has been since the exec): the pid is still this child.
                adopted.insert(
                    pid,
                    Forked { pid, pidfd: within(pidfd_open(pid), reaper.pidfd_below), exit: rx },
                );
            }
        }
        let r = Arc::clone(&reaper);
        tokio::spawn(async move {
            // Children that ended before the handler was installed.
            r.reap();
            while sigchld.recv().await.is_some() {
                r.reap();
            }
        });
        Ok((reaper, adopted))
    }

    /// Stops reaping, for an upgrade: from now on an exit stays a zombie, with its status, until
    /// the next image reaps it.
    pub fn freeze(&self) {
        let _waiting = self.lock();
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The sentinel's socket (kept open across exec) and pid, for the hand-over.
    pub fn sentinel_for_handover(&self) -> Option<(std::os::fd::RawFd, u32)> {
        let s = self.sentinel.as_ref()?;
        crate::upgrade::keep_across_exec(&s.sock);
        Some((std::os::fd::AsRawFd::as_raw_fd(&s.sock), s.pid))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still good.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a child process that runs `job.child()`, and registers its pid before any reaping
    /// can see it. Returns the pid, a pidfd for it where the system has them (taken under the
    /// lock, so it cannot name a stranger), and where its exit status will arrive.
    ///
    /// On Linux the child is made as glibc's posix_spawn makes one: `clone(CLONE_VM |
    /// CLONE_VFORK)` on a stack of its own, sharing minderd's memory until it execs, while the
    /// forking thread waits. A plain fork copies the page tables of the whole daemon, then
    /// takes a copy-on-write fault for every page either side touches, and the exec throws it
    /// all away again: that was more than half of the time `start all` took.
    ///
    /// The fork happens on the forking thread (the main thread: a child's parent-death signal
    /// follows the thread that forked it, and that thread must outlive an upgrade's exec). The
    /// caller does not wait on a runtime thread meanwhile: it awaits the result, so minderd's
    /// own work for the next spawn (its pipes, its environment, the state of the last one)
    /// goes on beside the kernel's work for this one. `job` holds everything the child uses; it
    /// moves to the forking thread and is dropped there once the child has exec'd or exited,
    /// so a caller that gives up waiting frees nothing the child still reads.
    ///
    /// # Safety
    /// `job.child()` runs in a child process that shares (Linux) or copies the memory of a
    /// multi-threaded process: it may only make async-signal-safe calls (no allocation, no
    /// locks), must not write to memory outside `job` (and its own stack), and must exec or
    /// `_exit`, never return. When `prepare` said so, it starts on minderd's own descriptor
    /// table and must unshare it before it changes any descriptor.
    pub async unsafe fn fork<T: Fork>(self: &Arc<Self>, job: T) -> Result<Forked, Errno> {
        #[cfg(target_os = "linux")]
        {
            let reaper = Arc::clone(self);
            let (tx, rx) = oneshot::channel();
            crate::upgrade::to_forker(Box::new(move || {
                let mut job = job;
                // SAFETY: the caller's guarantees on `job` are what `fork_here` needs; `job`
                // lives until the child has exec'd or exited (CLONE_VFORK).
                let forked = unsafe { reaper.fork_here(&mut job) };
                drop(job);
                let _ = tx.send(forked);
            }));
            // Dropped unrun: the forking thread was ending (shutdown or upgrade).
            rx.await.unwrap_or(Err(Errno::EAGAIN))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut job = job;
            // SAFETY: as above; a forked child has its own copy of `job`.
            unsafe { self.fork_here(&mut job) }
        }
    }

    /// The fork itself, on this thread: see [`Reaper::fork`].
    ///
    /// # Safety
    /// As [`Reaper::fork`].
    unsafe fn fork_here<T: Fork>(&self, job: &mut T) -> Result<Forked, Errno> {
        let mut waiting = self.lock();
        #[cfg(target_os = "linux")]
        let pid = {
            let share_files = job.prepare();
            let child: &T = job;
            // SAFETY: the caller's guarantees on `job` are what `clone_vfork` needs. The stack
            // is this thread's, and free again when clone returns (the child has exec'd or
            // exited).
            let pid = CHILD_STACK
                .with_borrow_mut(|stack| unsafe { clone_vfork(move || child.child(), stack, share_files) });
            let errno = Errno::last_raw();
            job.finish();
            Errno::set_raw(errno);
            pid
        };
        #[cfg(not(target_os = "linux"))]
        // SAFETY: the caller guarantees `child` is async-signal-safe; the parent side only
        // records the pid.
        let pid = match unsafe { libc::fork() } {
            #[allow(unreachable_code)]
            // `child` returns the uninhabited Infallible: it execs or exits
            0 => match unsafe { job.child() } {},
            pid => pid,
        };
        match pid {
            -1 => Err(Errno::last()),
            pid => {
                let (tx, rx) = oneshot::channel();
                waiting.insert(pid, tx);
                // Still registered, so not reaped: the pid is this child's (or its zombie's).
                let pidfd = pidfd_open(pid);
                if let (Some(sentinel), Some(fd)) = (&self.sentinel, &pidfd) {
                    use std::os::fd::AsFd;
                    sentinel.watch(fd.as_fd());
                }
                Ok(Forked { pid, pidfd: within(pidfd, self.pidfd_below), exit: rx })
            }
        }
    }

    /// Whether children ask to die with minderd (`kill_on_exit`).
    pub fn guards_children(&self) -> bool {
        self.guard
    }

    /// The sentinel's pid, while there is one.
    pub fn sentinel_pid(&self) -> Option<u32> {
        self.sentinel.as_ref().map(|s| s.pid)
    }

    /// Has the sentinel write `1` to `kill_file` (a `cgroup.kill`) when minderd dies, so that
    /// every process in that cgroup's subtree goes with it. Returns false when there is no
    /// sentinel to do it.
    pub fn watch_cgroup(&self, kill_file: BorrowedFd<'_>) -> bool {
        match &self.sentinel {
            Some(s) => match s.send(b'k', kill_file) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!("the sentinel did not take the cgroup to kill: {e}");
                    false
                }
            },
            None => false,
        }
    }

    /// Sends `signal` to the child `pid` (through `pidfd` when there is one), or to its process
    /// group with `group`, but only while the child's exit has not been reaped. Returns false,
    /// sending nothing, once it has: the pid (and the group id, which is the same number) may
    /// already belong to someone else.
    ///
    /// The check and the signal happen under the lock the reaper holds around `waitpid`, so the
    /// child cannot be reaped (and its pid reused) in between.
    pub fn signal(
        &self,
        pid: i32,
        pidfd: Option<BorrowedFd<'_>>,
        signal: nix::sys::signal::Signal,
        group: bool,
    ) -> Result<bool, Errno> {
        let waiting = self.lock();
        if !waiting.contains_key(&pid) {
            return Ok(false);
        }
        let sent = match pidfd {
            Some(fd) if !group => pidfd_send_signal(fd, signal),
            _ => {
                let target = nix::unistd::Pid::from_raw(if group { -pid } else { pid });
                nix::sys::signal::kill(target, signal)
            }
        };
        drop(waiting);
        match sent {
            Ok(()) => Ok(true),
            // A zombie's group may be empty already: nothing left to signal.
            Err(Errno::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reaps every child that has ended.
    fn reap(&self) {
        loop {
            let waiting = &mut *self.lock();
            if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            match pid {
                0 => return,
                -1 if Errno::last() == Errno::EINTR => continue,
                -1 => return, // ECHILD: no children at all
                pid => {
                    let Some(exit) = decode(status) else { continue };
                    match waiting.remove(&pid) {
                        // The owner may have gone (a failed exec it already reported).
                        Some(tx) => drop(tx.send(exit)),
                        None => tracing::debug!("reaped unknown pid {pid} ({exit})"),
                    }
                }
            }
        }
    }
}

/// A child for [`Reaper::fork`] to start, and what the forking thread does around its fork.
/// It owns everything the child reads, and moves to the forking thread with it.
pub trait Fork: Send + 'static {
    /// On the forking thread, just before the fork. True if the child is to start on
    /// minderd's own descriptor table (`CLONE_FILES`, Linux), which it must then unshare
    /// before it changes any descriptor: copying a table of thousands of descriptors into
    /// every child, only for the child to close them all, costs more than the rest of a
    /// spawn once minderd runs thousands of programs.
    fn prepare(&mut self) -> bool {
        false
    }

    /// The child's side: sets up and execs, or `_exit`s.
    ///
    /// # Safety
    /// Only in the child, as [`Reaper::fork`] says.
    unsafe fn child(&self) -> std::convert::Infallible;

    /// On the forking thread, once the child has exec'd or exited (or the fork failed).
    fn finish(&mut self) {}
}

/// A child just started by [`Reaper::fork`].
#[derive(Debug)]
pub struct Forked {
    pub pid: i32,
    /// A pidfd for the child, where the kernel has them (Linux 5.3) and a descriptor was free.
    pub pidfd: Option<OwnedFd>,
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// A pidfd for `pid`, or none where the kernel has no pidfd_open or no descriptor is free
/// (signals then go by pid, still only while the exit is unseen).
#[cfg(target_os = "linux")]
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor (always close-on-exec) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as libc::c_int) })
}

#[cfg(not(target_os = "linux"))]
fn pidfd_open(_pid: i32) -> Option<OwnedFd> {
    None
}

#[cfg(target_os = "linux")]
fn pidfd_send_signal(fd: BorrowedFd<'_>, signal: nix::sys::signal::Signal) -> Result<(), Errno> {
    // SAFETY: pidfd_send_signal with a null siginfo takes a descriptor and integers only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

#[cfg(not(target_os = "linux"))]
fn pidfd_send_signal(_fd: BorrowedFd<'_>, _signal: nix::sys::signal::Signal) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// The sentinel's side of things, from minderd: a socket to hand it pidfds through.
#[derive(Debug)]
struct Sentinel {
    sock: OwnedFd,
    pid: u32,
}

/// The name minderd's binary runs the sentinel under (its argv[0]).
pub const SENTINEL_ARGV0: &str = "minderd-sentinel";

/// The sentinel in the image `Sentinel::start` execs: `minderd-sentinel SOCKET CGROUP`, the
/// descriptor numbers it inherited (CGROUP -1 for none). Call first thing in `main`: `None`
/// when this process is not the sentinel; otherwise it never returns.
pub fn sentinel_exec(argv: &[std::ffi::OsString]) -> Option<std::convert::Infallible> {
    if argv.len() != 3 || argv[0] != SENTINEL_ARGV0 {
        return None;
    }
    let fd = |a: &std::ffi::OsString| a.to_str().and_then(|s| s.parse::<libc::c_int>().ok());
    let (Some(sock), Some(cgroup)) = (fd(&argv[1]), fd(&argv[2])) else { return None };
    #[cfg(target_os = "linux")]
    {
        let mut slots = vec![-1 as libc::c_int; SENTINEL_SLOTS].into_boxed_slice();
        // SAFETY: a fresh, single-threaded image: `sentinel_main`'s system calls are safe here
        // as in a forked child.
        unsafe { sentinel_main(sock, cgroup, &mut slots) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (sock, cgroup);
        None
    }
}

/// How many children the sentinel keeps track of at once (exited ones are forgotten as it goes).
#[cfg(target_os = "linux")]
const SENTINEL_SLOTS: usize = 4096;

impl Sentinel {
    /// Forks the sentinel, which execs minderd's own binary as `minderd-sentinel` (see
    /// [`sentinel_exec`]): a fresh image holds only the pages the sentinel touches, where a
    /// plain fork's copy of the daemon showed 5 MiB resident for a loop of a few system
    /// calls. If the exec fails the child runs the sentinel as it is. Everything the child
    /// uses (the arguments, the slots for pidfds) is allocated here, before the fork: the
    /// child of a multi-threaded process may only make system calls.
    #[cfg(target_os = "linux")]
    fn start(cgroup: Option<BorrowedFd<'_>>) -> std::io::Result<Sentinel> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsRawFd;
        let cgroup = cgroup.map_or(-1, |fd| fd.as_raw_fd());
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        let mut slots = vec![-1 as libc::c_int; SENTINEL_SLOTS].into_boxed_slice();
        let (sock, cg) = (theirs.as_raw_fd(), cgroup);
        let args = [SENTINEL_ARGV0.to_string(), sock.to_string(), cg.to_string()]
            .map(|a| std::ffi::CString::new(a).unwrap_or_default());
        let argv = [args[0].as_ptr(), args[1].as_ptr(), args[2].as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        // SAFETY: fork has no preconditions; the child makes only system calls on memory
        // allocated above (its own copy), then execs or runs `sentinel_main`, never returning.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            // SAFETY: this is the child of the fork; fcntl and execve are system calls.
            0 => unsafe {
                // Across the exec: the socket and the cgroup descriptor (by number in argv).
                libc::fcntl(sock, libc::F_SETFD, 0);
                if cg >= 0 {
                    libc::fcntl(cg, libc::F_SETFD, 0);
                }
                libc::execve(c"/proc/self/exe".as_ptr(), argv.as_ptr(), envp.as_ptr());
                sentinel_main(sock, cg, &mut slots)
            },
            pid => Ok(Sentinel { sock: ours, pid: pid as u32 }),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn start(_cgroup: Option<BorrowedFd<'_>>) -> std::io::Result<Sentinel> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    /// Hands the sentinel a copy of a child's pidfd. Never waits: if the sentinel cannot take
    /// it now, that child is only covered by its parent-death signal.
    fn watch(&self, pidfd: BorrowedFd<'_>) {
        if let Err(e) = self.send(b'p', pidfd) {
            tracing::debug!("the sentinel did not take a pidfd: {e}");
        }
    }

    /// Sends one descriptor, tagged: `p` a child's pidfd, `k` a `cgroup.kill` to write to.
    fn send(&self, tag: u8, fd: BorrowedFd<'_>) -> nix::Result<usize> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
        use std::os::fd::AsRawFd;
        let fds = [fd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let tag = [tag];
        let iov = [std::io::IoSlice::new(&tag)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        sendmsg::<UnixAddr>(self.sock.as_raw_fd(), &iov, &cmsg, flags, None)
    }
}

/// The sentinel: collects the pidfds minderd sends until minderd's end of the socket closes,
/// then kills the programs' cgroup subtree (when minderd sent its `cgroup.kill`) and SIGKILLs
/// every child that is still alive, and exits.
///
/// # Safety
/// Only in the child of a fork of minderd: it makes nothing but system calls (and libc's
/// pointer arithmetic for control messages), on memory of its own copy.
#[cfg(target_os = "linux")]
unsafe fn sentinel_main(sock: libc::c_int, cgroup: libc::c_int, slots: &mut [libc::c_int]) -> ! {
    // SAFETY: as this function's contract; every pointer is to this stack or to `slots`.
    unsafe {
        // Into minderd's `daemon` cgroup, whose being populated tells other minderds that this
        // subtree's owner is alive (it is cleared with the rest below).
        if cgroup >= 0 {
            libc::write(cgroup, b"0".as_ptr().cast(), 1);
        }
        // Out of minderd's session and process group, so a Ctrl-C or a signal to the group
        // meant for minderd does not end the sentinel first; default handlers, nothing blocked.
        libc::setsid();
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // Nothing of minderd's stays open here: not its listeners, not its end of this socket.
        if sock > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (sock - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (sock + 1) as u32, u32::MAX, 0u32);
        libc::prctl(libc::PR_SET_NAME, c"minderd-sentinel".as_ptr(), 0, 0, 0);
        let mut n = 0usize;
        let mut cgroup_kill: libc::c_int = -1;
        loop {
            let mut byte = 0u8;
            let mut iov = libc::iovec { iov_base: (&raw mut byte).cast(), iov_len: 1 };
            // Room for one descriptor's control message, aligned for cmsghdr.
            let mut control = [0u64; 8];
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let r = libc::recvmsg(sock, &raw mut msg, libc::MSG_CMSG_CLOEXEC);
            if r == 0 {
                break; // minderd is gone
            }
            if r < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            if cmsg.is_null()
                || (*cmsg).cmsg_level != libc::SOL_SOCKET
                || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            {
                continue;
            }
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
            if byte == b'k' {
                if cgroup_kill >= 0 {
                    libc::close(cgroup_kill);
                }
                cgroup_kill = fd;
                continue;
            }
            if n == slots.len() || n % 64 == 63 {
                n = forget_exited(&mut slots[..n]);
            }
            if n < slots.len() {
                slots[n] = fd;
                n += 1;
            } else {
                libc::close(fd);
            }
        }
        // The whole subtree of programs first: it takes grandchildren that left their process
        // group and children that changed credentials alike.
        if cgroup_kill >= 0 {
            libc::write(cgroup_kill, b"1".as_ptr().cast(), 1);
        }
        for &fd in &slots[..n] {
            // Those that have exited answer ESRCH; the others are minderd's orphans.
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            );
        }
        libc::_exit(0)
    }
}

/// Closes the pidfds of children that have exited (a pidfd polls readable then), keeping the
/// rest at the front of `slots`; returns how many are kept.
///
/// # Safety
/// As [`sentinel_main`].
#[cfg(target_os = "linux")]
unsafe fn forget_exited(slots: &mut [libc::c_int]) -> usize {
    let mut kept = 0;
    for i in 0..slots.len() {
        let mut p = libc::pollfd { fd: slots[i], events: libc::POLLIN, revents: 0 };
        // SAFETY: poll reads and writes this one pollfd on the stack; close takes an integer.
        let exited = unsafe { libc::poll(&raw mut p, 1, 0) } == 1 && p.revents != 0;
        if exited {
            // SAFETY: the descriptor is the sentinel's own, and forgotten below.
            unsafe { libc::close(slots[i]) };
        } else {
            slots[kept] = slots[i];
            kept += 1;
        }
    }
    kept
}

#[cfg(target_os = "linux")]
thread_local! {
    /// The children's stack until they exec (they only make a few system calls), one per
    /// forking thread: a child is done with it before the next fork from that thread.
    static CHILD_STACK: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
}

/// Runs `child` in a new process that shares this one's memory, on `stack`, and returns its
/// pid (or -1, with errno set) once it has exec'd or exited.
///
/// # Safety
/// As [`Reaper::fork`].
#[cfg(target_os = "linux")]
unsafe fn clone_vfork<F: FnOnce() -> std::convert::Infallible>(
    child: F,
    stack: &mut [u8],
    share_files: bool,
) -> libc::c_int {
    extern "C" fn trampoline<F: FnOnce() -> std::convert::Infallible>(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `Option<F>` below, alive on the parent's stack while the parent
        // waits for this child to exec or exit.
        let f = unsafe { &mut *arg.cast::<Option<F>>() };
        // Every signal is blocked (inherited from the parent, below). Handlers are this
        // process's own copy (no CLONE_SIGHAND), but they would run on the shared memory:
        // minderd's handlers must never run here, so they go before anything is unblocked.
        // SAFETY: signal() is async-signal-safe.
        unsafe {
            for sig in 1..libc::SIGRTMIN() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
        }
        match f.take() {
            #[allow(unreachable_code)] // `F` returns the uninhabited Infallible
            Some(f) => match f() {},
            // SAFETY: _exit is async-signal-safe.
            None => unsafe { libc::_exit(127) },
        }
    }
    let mut child = Some(child);
    // The stack grows down from its 16-byte-aligned top.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: sigset_t is plain data; the masks are this thread's and restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            trampoline::<F>,
            top as *mut libc::c_void,
            libc::CLONE_VM
                | libc::CLONE_VFORK
                | libc::SIGCHLD
                | if share_files { libc::CLONE_FILES } else { 0 },
            (&raw mut child).cast(),
        );
        let errno = Errno::last_raw();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        Errno::set_raw(errno);
        pid
    }
}

/// How a wait status ended the child; `None` for stop/continue reports.
fn decode(status: libc::c_int) -> Option<ExitStatus> {
    if libc::WIFEXITED(status) {
        Some(ExitStatus::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(ExitStatus::Signal {
            signal: libc::WTERMSIG(status),
            core_dumped: libc::WCOREDUMP(status),
            oom: false,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::process::CommandExt;

    // The reaper running in the test reaps the sleeps it starts (waitpid(-1)).
    #[allow(clippy::zombie_processes)]
    /// Starts `sleep 100` in a process group of its own, as the owner of `pid` if it can: as
    /// root, by setting the kernel's last pid just below it (several tries, as anything else
    /// on the machine may take the pid first).
    fn stranger_with_pid(pid: i32) -> Option<std::process::Child> {
        for _ in 0..200 {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
            let mut child =
                std::process::Command::new("sleep").arg("100").process_group(0).spawn().expect("sleep runs");
            if child.id() as i32 == pid {
                return Some(child);
            }
            let _ = child.kill();
        }
        None
    }

    /// One test, as a process has one reaper: two would reap each other's children.
    #[tokio::test(flavor = "multi_thread")]
    async fn signals_reach_live_children_and_never_a_reaped_childs_pid() {
        let reaper = Reaper::start(None, true).expect("the reaper starts");
        a_live_child_is_signalled(&reaper).await;
        a_reaped_child_is_never_signalled_even_when_its_pid_is_reused(&reaper).await;
    }

    /// Once a child has been reaped its pid may be anyone's: a signal for it (by pidfd, by pid,
    /// or to its process group) must not be sent at all.
    async fn a_reaped_child_is_never_signalled_even_when_its_pid_is_reused(reaper: &Arc<Reaper>) {
        // SAFETY: the child only calls _exit.
        let forked = unsafe { reaper.fork(Exit0) }.await.expect("fork");
        let pid = forked.pid;
        #[cfg(target_os = "linux")]
        assert!(forked.pidfd.is_some(), "a pidfd on Linux");
        forked.exit.await.expect("reaped");
        let stranger = stranger_with_pid(pid);
        if nix::unistd::Uid::current().is_root() && cfg!(target_os = "linux") {
            assert!(stranger.is_some(), "as root the test can hand pid {pid} to a stranger");
        }
        let pidfd = forked.pidfd.as_ref().map(|fd| fd.as_fd());
        for group in [false, true] {
            for fd in [pidfd, None] {
                let sent = reaper.signal(pid, fd, nix::sys::signal::Signal::SIGKILL, group);
                assert_eq!(sent, Ok(false), "group {group}, pidfd {}", fd.is_some());
            }
        }
        if let Some(mut s) = stranger {
            assert!(crate_alive(pid), "the stranger with pid {pid} was killed");
            let _ = s.kill();
        }
    }

    /// A child that exits at once.
    struct Exit0;
    impl Fork for Exit0 {
        unsafe fn child(&self) -> std::convert::Infallible {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) }
        }
    }

    /// A child that runs `sleep 100` in a process group of its own.
    struct Sleep100;
    impl Fork for Sleep100 {
        unsafe fn child(&self) -> std::convert::Infallible {
            let argv = [c"sleep".as_ptr(), c"100".as_ptr(), std::ptr::null()];
            // SAFETY: system calls on static strings and this stack.
            unsafe {
                libc::setpgid(0, 0);
                libc::execv(c"/bin/sleep".as_ptr(), argv.as_ptr());
                libc::_exit(127)
            }
        }
    }

    /// Whether `pid` is a live (not zombie) process.
    fn crate_alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
    }

    /// A live child is signalled, through its pidfd or its group.
    async fn a_live_child_is_signalled(reaper: &Arc<Reaper>) {
        for group in [false, true] {
            // SAFETY: the child makes two system calls, then execs (the parent waits for that:
            // CLONE_VFORK) or exits.
            let forked = unsafe { reaper.fork(Sleep100) }.await.expect("fork");
            let pidfd = forked.pidfd.as_ref().map(|fd| fd.as_fd());
            let sent = reaper.signal(forked.pid, pidfd, nix::sys::signal::Signal::SIGKILL, group);
            assert_eq!(sent, Ok(true), "group {group}");
            let status = forked.exit.await.expect("reaped");
            assert_eq!(status, ExitStatus::Signal { signal: libc::SIGKILL, core_dumped: false, oom: false });
        }
    }
}
