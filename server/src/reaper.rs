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
}

impl Reaper {
    /// Makes this process a subreaper (where the OS has them) and starts reaping on SIGCHLD.
    /// Must be called inside the tokio runtime, before any child is spawned.
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        #[cfg(target_os = "linux")]
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument and no pointers.
        unsafe {
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Reaper::default());
        let r = Arc::clone(&reaper);
        tokio::spawn(async move {
            // Children that ended before the handler was installed.
            r.reap();
            while sigchld.recv().await.is_some() {
                r.reap();
            }
        });
        Ok(reaper)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still good.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a child process that runs `child`, and registers its pid before any reaping can
    /// see it. Returns the pid, a pidfd for it where the system has them (taken under the lock,
    /// so it cannot name a stranger), and where its exit status will arrive.
    ///
    /// On Linux the child is made as glibc's posix_spawn makes one: `clone(CLONE_VM |
    /// CLONE_VFORK)` on a stack of its own, sharing minderd's memory until it execs, while the
    /// calling thread waits. A plain fork copies the page tables of the whole daemon, then
    /// takes a copy-on-write fault for every page either side touches, and the exec throws it
    /// all away again: that was more than half of the time `start all` took.
    ///
    /// # Safety
    /// `child` runs in a child process that shares (Linux) or copies the memory of a
    /// multi-threaded process: it may only make async-signal-safe calls (no allocation, no
    /// locks), must not write to memory it did not get from the parent for the purpose, and
    /// must exec or `_exit`, never return.
    pub unsafe fn fork(&self, child: impl FnOnce() -> std::convert::Infallible) -> Result<Forked, Errno> {
        #[cfg(target_os = "linux")]
        let mut stack = vec![0u8; CHILD_STACK];
        let mut waiting = self.lock();
        #[cfg(target_os = "linux")]
        // SAFETY: the caller's guarantees on `child` are what `clone_vfork` needs.
        let pid = unsafe { clone_vfork(child, &mut stack) };
        #[cfg(not(target_os = "linux"))]
        // SAFETY: the caller guarantees `child` is async-signal-safe; the parent side only
        // records the pid.
        let pid = match unsafe { libc::fork() } {
            #[allow(unreachable_code)]
            // `child` returns the uninhabited Infallible: it execs or exits
            0 => match child() {},
            pid => pid,
        };
        match pid {
            -1 => Err(Errno::last()),
            pid => {
                let (tx, rx) = oneshot::channel();
                waiting.insert(pid, tx);
                // Still registered, so not reaped: the pid is this child's (or its zombie's).
                let pidfd = pidfd_open(pid);
                Ok(Forked { pid, pidfd, exit: rx })
            }
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
    // SAFETY: pidfd_open takes integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::O_CLOEXEC as libc::c_uint) };
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

/// The child's stack until it execs: it only makes a few system calls.
#[cfg(target_os = "linux")]
const CHILD_STACK: usize = 64 * 1024;

/// Runs `child` in a new process that shares this one's memory, on `stack`, and returns its
/// pid (or -1, with errno set) once it has exec'd or exited.
///
/// # Safety
/// As [`Reaper::fork`].
#[cfg(target_os = "linux")]
unsafe fn clone_vfork<F: FnOnce() -> std::convert::Infallible>(child: F, stack: &mut [u8]) -> libc::c_int {
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
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
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
        Some(ExitStatus::Signal { signal: libc::WTERMSIG(status), core_dumped: libc::WCOREDUMP(status) })
    } else {
        None
    }
}
