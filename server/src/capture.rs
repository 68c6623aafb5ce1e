//! Copies a child's output from its pipe into its log channel.
//!
//! minderd reads the pipe itself (the child is never handed the file) so that it can rotate,
//! count and stream what the child writes. One task per output per spawn; it ends when the
//! child (and anything it forked that kept the pipe) closes its end. The child never waits on
//! minderd's disk: a failed write is reported and the bytes dropped. The log file is opened
//! (created) when the child is spawned, as supervisord does, and closed when the last output
//! writing to it ends (processes may share a file).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::logs::LogChannel;

/// How much is read from a pipe at once.
const CHUNK: usize = 64 * 1024;

thread_local! {
    /// One read buffer per runtime thread, shared by every pipe: an idle pipe holds no memory,
    /// so a thousand quiet programs cost nothing here. It is used only between an await and the
    /// next, never across one.
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; CHUNK]);
}

/// Starts copying `pipe` into `channel` until the pipe closes. The log file is opened (created)
/// now, when the process is spawned, as supervisord does.
pub fn spawn(pipe: OwnedFd, channel: Arc<LogChannel>, process: String) {
    channel.attach();
    tokio::spawn(async move {
        let reader = match tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read the output of {process}: {e}");
                channel.detach();
                return;
            }
        };
        loop {
            if let Err(e) = reader.readable().await {
                tracing::error!("cannot read the output of {process}: {e}");
                break;
            }
            // Drain what is there without awaiting, into this thread's buffer.
            let done = BUFFER.with_borrow_mut(|buf| loop {
                match reader.try_read(buf) {
                    Ok(0) => return true,
                    Ok(n) => channel.write(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::error!("cannot read the output of {process}: {e}");
                        return true;
                    }
                }
            });
            if done {
                break;
            }
        }
        channel.detach();
    });
}
