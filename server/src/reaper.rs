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

use std::collections::HashMap;
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

    /// Forks, runs `child` in the child, and registers the child's pid before any reaping can
    /// see it. Returns the pid and where its exit status will arrive.
    ///
    /// # Safety
    /// `child` runs in a forked copy of a multi-threaded process: it may only make
    /// async-signal-safe calls (no allocation, no locks) and must not return.
    pub unsafe fn fork(
        &self,
        child: impl FnOnce() -> std::convert::Infallible,
    ) -> Result<(i32, oneshot::Receiver<ExitStatus>), Errno> {
        let mut waiting = self.lock();
        // SAFETY: the caller guarantees `child` is async-signal-safe; the parent side only
        // records the pid.
        match unsafe { libc::fork() } {
            -1 => Err(Errno::last()),
            #[allow(unreachable_code)]
            // `child` returns the uninhabited Infallible: it execs or exits
            0 => match child() {},
            pid => {
                let (tx, rx) = oneshot::channel();
                waiting.insert(pid, tx);
                Ok((pid, rx))
            }
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
