//! `--daemonize`: detach from the terminal, and tell the waiting parent whether start-up
//! worked, so `minderd --daemonize` exits non-zero with the reason when it did not.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

/// The daemon's end of the start-up report; the parent is waiting on the other end.
#[derive(Debug)]
pub struct Readiness(Option<OwnedFd>);

impl Readiness {
    /// No parent is waiting (minderd runs in the foreground).
    pub fn none() -> Self {
        Readiness(None)
    }

    /// Start-up finished: listeners are up, the pidfile is written.
    pub fn ready(mut self) {
        self.send(b"ok");
    }

    /// Start-up failed: the parent prints `why` and exits 1.
    pub fn failed(mut self, why: &str) {
        self.send(why.as_bytes());
    }

    fn send(&mut self, msg: &[u8]) {
        if let Some(fd) = self.0.take() {
            let mut f = std::fs::File::from(fd);
            let _ = f.write_all(msg);
        }
    }
}

/// Forks into the background. Returns in the daemon only; the original process waits for the
/// daemon's report and exits with it. Must be called before any thread is started.
pub fn daemonize(directory: Option<&std::path::Path>) -> std::io::Result<Readiness> {
    let (r, w) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    // SAFETY: called before the runtime starts any thread, so the child is a full copy.
    match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(w);
            let mut report = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut report);
            match report.as_str() {
                "ok" => std::process::exit(0),
                "" => {
                    eprintln!("minderd: the daemon exited during start-up (see its log)");
                    std::process::exit(1)
                }
                why => {
                    eprintln!("minderd: {why}");
                    std::process::exit(1)
                }
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(r);
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // A second fork, so the daemon is not a session leader and never gets a terminal.
            // SAFETY: still single-threaded.
            if let nix::unistd::ForkResult::Parent { .. } =
                unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)?
            {
                // SAFETY: _exit skips destructors, which belong to the daemon now.
                unsafe { libc::_exit(0) };
            }
            if let Some(dir) = directory {
                std::env::set_current_dir(dir)?;
            }
            let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
            nix::unistd::dup2_stdin(&null).map_err(std::io::Error::from)?;
            nix::unistd::dup2_stdout(&null).map_err(std::io::Error::from)?;
            nix::unistd::dup2_stderr(&null).map_err(std::io::Error::from)?;
            Ok(Readiness(Some(w)))
        }
    }
}
