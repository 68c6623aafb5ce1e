//! Copies a child's output from its pipe into its log channel.
//!
//! minderd reads the pipe itself (the child is never handed the file) so that it can rotate,
//! count and stream what the child writes. One task per output per spawn; it ends when the
//! child (and anything it forked that kept the pipe) closes its end. The child never waits on
//! minderd's disk: a failed write is reported and the bytes dropped. The log file is opened
//! (created) when the child is spawned, as supervisord does, and closed when the last output
//! writing to it ends (processes may share a file).
//!
//! With the daemon's log at `debug`, each chunk read is also written into the daemon's log as
//! supervisord writes it (`DEBG 'web' stdout output:` then the data on the next line; bytes
//! that are not UTF-8 as `Undecodable: b'...'`, Python's repr). Whether to is decided once per
//! spawn, so an info-level daemon pays nothing per byte.

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

/// Starts copying `pipe` (the process's `stream`: "stdout" or "stderr") into `channel` until
/// the pipe closes. The log file is opened (created) now, when the process is spawned, as
/// supervisord does.
pub fn spawn(pipe: OwnedFd, channel: Arc<LogChannel>, process: String, stream: &'static str) {
    channel.attach();
    // Checked once here, not per read: the daemon's level is fixed when its log is set up.
    let to_daemon_log = tracing::enabled!(tracing::Level::DEBUG);
    let quoted = python_str_repr(&process);
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
                    Ok(n) => {
                        channel.write(&buf[..n]);
                        if to_daemon_log {
                            log_output(&quoted, stream, &buf[..n]);
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
                break;
            }
        }
        channel.detach();
    });
}

/// Writes one chunk of a child's output into the daemon's log as supervisord's dispatcher
/// does: `'name' stdout output:`, a newline, then the text (or `Undecodable: b'...'`).
fn log_output(quoted_name: &str, stream: &str, data: &[u8]) {
    match std::str::from_utf8(data) {
        Ok(text) => tracing::debug!("{quoted_name} {stream} output:\n{text}"),
        Err(_) => tracing::debug!("{quoted_name} {stream} output:\nUndecodable: {}", python_bytes_repr(data)),
    }
}

/// Python's `repr()` of a str, for a process name: in single quotes, or double quotes when it
/// holds a single quote and no double quote (the name is never escaped further: names cannot
/// hold control characters).
fn python_str_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\'', "\\'"))
    }
}

/// Python's `repr()` of bytes: `b'...'` with printable ASCII as is, `\t \n \r \\` and the
/// quote escaped, and every other byte as `\xNN`; double quotes when the data holds a single
/// quote and no double quote, as Python chooses.
fn python_bytes_repr(data: &[u8]) -> String {
    let quote = if data.contains(&b'\'') && !data.contains(&b'"') { '"' } else { '\'' };
    let mut out = String::with_capacity(data.len() + 3);
    out.push('b');
    out.push(quote);
    for &b in data {
        match b {
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\\' => out.push_str("\\\\"),
            _ if b as char == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprs_are_pythons() {
        // Each expected value is what Python 3 prints for repr() of the same value.
        assert_eq!(python_str_repr("web"), "'web'");
        assert_eq!(python_str_repr("it's"), "\"it's\"");
        assert_eq!(python_bytes_repr(b"ok\n"), "b'ok\\n'");
        assert_eq!(python_bytes_repr(b"\xff\x00a\tb\\"), "b'\\xff\\x00a\\tb\\\\'");
        assert_eq!(python_bytes_repr(b"it's"), "b\"it's\"");
        assert_eq!(python_bytes_repr(b"'\""), "b'\\'\"'");
    }
}
