//! Copies a child's output from its pipe into its log file.
//!
//! minderd reads the pipe itself (the child is never handed the file) so that it can rotate,
//! count and stream what the child writes. One task per channel per spawn; it ends when the
//! child (and anything it forked that kept the pipe) closes its end.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Opens a log file for appending, creating it if needed.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// How much is read from a pipe at once.
const CHUNK: usize = 64 * 1024;

thread_local! {
    /// One read buffer per runtime thread, shared by every pipe: an idle pipe holds no memory,
    /// so a thousand quiet programs cost nothing here. It is used only between an await and the
    /// next, never across one.
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; CHUNK]);
}

/// Starts copying `pipe` into `file` until the pipe closes.
pub fn spawn(pipe: OwnedFd, mut file: File, path: PathBuf, process: String) {
    tokio::spawn(async move {
        let reader = match tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read the output of {process}: {e}");
                return;
            }
        };
        let mut failed = false;
        loop {
            if let Err(e) = reader.readable().await {
                tracing::error!("cannot read the output of {process}: {e}");
                return;
            }
            // Drain what is there without awaiting, into this thread's buffer.
            let done = BUFFER.with_borrow_mut(|buf| loop {
                match reader.try_read(buf) {
                    Ok(0) => return true,
                    Ok(n) => {
                        // A failed write is reported once; reading goes on so the child never
                        // blocks on a full pipe.
                        if let Err(e) = file.write_all(&buf[..n]) {
                            if !failed {
                                tracing::error!(
                                    "cannot write the log of {process} to {}: {e}",
                                    path.display()
                                );
                                failed = true;
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::error!("cannot read the output of {process}: {e}");
                        return true;
                    }
                }
            });
            if done {
                return;
            }
        }
    });
}
