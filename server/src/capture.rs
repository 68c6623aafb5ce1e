//! Copies a child's output from its pipe into its log file.
//!
//! minderd reads the pipe itself (the child is never handed the file) so that it can rotate,
//! count and stream what the child writes. One task per channel per spawn; it ends when the
//! child (and anything it forked that kept the pipe) closes its end.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

/// Opens a log file for appending, creating it if needed.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Starts copying `pipe` into `file` until the pipe closes.
pub fn spawn(pipe: OwnedFd, mut file: File, path: PathBuf, process: String) {
    tokio::spawn(async move {
        let mut reader = match tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read the output of {process}: {e}");
                return;
            }
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut failed = false;
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => break,
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
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("cannot read the output of {process}: {e}");
                    break;
                }
            }
        }
    });
}
