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
//!
//! Events, as supervisord's output dispatcher makes them: with `*_events_enabled`, each chunk
//! logged is also a PROCESS_LOG event; with `*_capture_maxbytes`, text between
//! `<!--XSUPERVISOR:BEGIN-->` and `<!--XSUPERVISOR:END-->` goes into a bounded buffer instead
//! of the log and becomes a PROCESS_COMMUNICATION event at the end marker (output that may be
//! the start of a marker is held back until it is known not to be, as supervisord holds it).
//! An event listener's stdout is logged and handed to [`crate::listener`] as the protocol.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::listener::Hub;
use crate::logs::LogChannel;

/// How much is read from a pipe at once.
const CHUNK: usize = 64 * 1024;

thread_local! {
    /// One read buffer per runtime thread, shared by every pipe: an idle pipe holds no memory,
    /// so a thousand quiet programs cost nothing here. It is used only between an await and the
    /// next, never across one.
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; CHUNK]);
}

/// Capture mode's markers (supervisord's `ProcessCommunicationEvent` tokens).
const BEGIN_TOKEN: &[u8] = b"<!--XSUPERVISOR:BEGIN-->";
const END_TOKEN: &[u8] = b"<!--XSUPERVISOR:END-->";

/// One output of one spawned process, and what becomes of what it writes.
#[derive(Debug)]
pub struct Output {
    /// The process's name and group, and the child's pid, for events.
    pub process: String,
    pub group: String,
    pub pid: u32,
    /// "stdout" or "stderr".
    pub stream: &'static str,
    /// Its log file, unless NONE.
    pub channel: Option<Arc<LogChannel>>,
    pub hub: Arc<Hub>,
    pub mode: Mode,
}

/// How an output is read.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Logged; with `events`, each chunk is also a PROCESS_LOG event, and with
    /// `capture_maxbytes` > 0 what is between the capture markers is a PROCESS_COMMUNICATION
    /// event instead of log text.
    Plain { events: bool, capture_maxbytes: u64 },
    /// An event listener's stdout: logged, and read as the protocol for pool `pool`.
    Listener { pool: String },
}

/// A capture stopped for an upgrade: the read end of its pipe, for the next image.
#[derive(Debug)]
pub struct Paused {
    pub pid: u32,
    pub stream: &'static str,
    pub pipe: OwnedFd,
}

/// The upgrade's stop: captures stop reading and give their pipes back ([`pause_all`]).
struct Pause {
    on: watch::Sender<bool>,
    /// Captures still reading.
    live: AtomicUsize,
    /// Told whenever a capture ends or pauses.
    changed: Notify,
    paused: Mutex<Vec<Paused>>,
}

fn pause() -> &'static Pause {
    static PAUSE: OnceLock<Pause> = OnceLock::new();
    PAUSE.get_or_init(|| Pause {
        on: watch::channel(false).0,
        live: AtomicUsize::new(0),
        changed: Notify::new(),
        paused: Mutex::new(Vec::new()),
    })
}

/// Stops every capture for an upgrade, and returns their pipes. What each has read is in its
/// log file by then; what it has not stays in the pipe, enlarged (to 1 MiB where the kernel
/// allows) so a busy child does not block for the hand-over's length. Captures that do not
/// stop within `within` (none should: each stops between two reads) are left out.
pub async fn pause_all(within: Duration) -> Vec<Paused> {
    let p = pause();
    p.on.send_replace(true);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let changed = p.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if p.live.load(Ordering::SeqCst) == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            tracing::warn!("{} capture(s) did not stop for the upgrade", p.live.load(Ordering::SeqCst));
            break;
        }
    }
    std::mem::take(&mut *p.paused.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Ends the count of a live capture, whichever way its task ends.
struct Live;

impl Drop for Live {
    fn drop(&mut self) {
        let p = pause();
        p.live.fetch_sub(1, Ordering::SeqCst);
        p.changed.notify_waiters();
    }
}

/// Starts copying `pipe` into `out`'s channel until the pipe closes. The log file is opened
/// (created) now, when the process is spawned, as supervisord does.
pub fn spawn(pipe: OwnedFd, out: Output) {
    if let Some(channel) = &out.channel {
        channel.attach();
    }
    // Checked once here, not per read: the daemon's level is fixed when its log is set up.
    let to_daemon_log = tracing::enabled!(tracing::Level::DEBUG);
    let quoted = python_str_repr(&out.process);
    let mut sink = Sink { capture: None, out, quoted, to_daemon_log };
    if let Mode::Plain { capture_maxbytes, .. } = sink.out.mode {
        if capture_maxbytes > 0 {
            sink.capture = Some(Capture {
                pending: Vec::new(),
                capturing: false,
                captured: Vec::new(),
                maxbytes: capture_maxbytes as usize,
            });
        }
    }
    pause().live.fetch_add(1, Ordering::SeqCst);
    let live = Live;
    tokio::spawn(async move {
        let _live = live;
        let process = sink.out.process.clone();
        let reader = match tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read the output of {process}: {e}");
                sink.close();
                return;
            }
        };
        let mut paused = pause().on.subscribe();
        loop {
            let readable = tokio::select! {
                biased;
                _ = paused.wait_for(|p| *p) => None,
                r = reader.readable() => Some(r),
            };
            let Some(readable) = readable else {
                hand_over(&reader, &sink.out);
                sink.close();
                return;
            };
            if let Err(e) = readable {
                tracing::error!("cannot read the output of {process}: {e}");
                break;
            }
            // Drain what is there without awaiting, into this thread's buffer.
            let done = BUFFER.with_borrow_mut(|buf| loop {
                match reader.try_read(buf) {
                    Ok(0) => return true,
                    Ok(n) => sink.take(&buf[..n]),
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
        sink.close();
    });
}

/// Keeps a copy of a paused capture's pipe for the next image, enlarged.
fn hand_over(reader: &tokio::net::unix::pipe::Receiver, out: &Output) {
    match crate::upgrade::inheritable(reader) {
        Ok(pipe) => {
            #[cfg(target_os = "linux")]
            // SAFETY: F_SETPIPE_SZ takes an integer; failing (a limit) leaves the pipe as it was.
            unsafe {
                libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&pipe), libc::F_SETPIPE_SZ, 1 << 20);
            }
            let paused = Paused { pid: out.pid, stream: out.stream, pipe };
            pause().paused.lock().unwrap_or_else(|e| e.into_inner()).push(paused);
        }
        Err(e) => {
            tracing::error!("cannot keep the {} pipe of {} for the upgrade: {e}", out.stream, out.process)
        }
    }
}

/// Capture mode's state (supervisord's `POutputDispatcher.record_output`): output not yet
/// known to hold no marker, whether between markers, and what was captured so far.
#[derive(Debug)]
struct Capture {
    /// At most a marker's length short of a whole marker.
    pending: Vec<u8>,
    capturing: bool,
    /// Keeps about the last `maxbytes` captured (supervisord's `BoundIO`).
    captured: Vec<u8>,
    maxbytes: usize,
}

/// Where one output's bytes go.
struct Sink {
    out: Output,
    capture: Option<Capture>,
    quoted: String,
    to_daemon_log: bool,
}

impl Sink {
    /// One chunk read from the pipe.
    fn take(&mut self, data: &[u8]) {
        if let Mode::Listener { pool } = &self.out.mode {
            if let Some(channel) = &self.out.channel {
                channel.write(data);
            }
            if self.to_daemon_log {
                // supervisord's listener dispatcher logs the bytes' repr (`b'READY\n'`).
                tracing::debug!("{} {} output:\n{}", self.quoted, self.out.stream, python_bytes_repr(data));
            }
            self.out.hub.heard(pool, &self.out.process, self.out.pid, data);
            return;
        }
        if self.capture.is_none() {
            self.log(data);
            return;
        }
        let Some(mut c) = self.capture.take() else { return };
        c.pending.extend_from_slice(data);
        self.record(&mut c);
        self.capture = Some(c);
    }

    /// supervisord's `record_output`: logs what cannot be part of a marker, switching in and
    /// out of capture at each.
    fn record(&mut self, c: &mut Capture) {
        loop {
            let token = if c.capturing { END_TOKEN } else { BEGIN_TOKEN };
            if c.pending.len() <= token.len() {
                return;
            }
            let data = std::mem::take(&mut c.pending);
            match find(&data, token) {
                Some(at) => {
                    self.log_or_capture(c, &data[..at]);
                    self.toggle(c);
                    c.pending = data[at + token.len()..].to_vec();
                    if c.pending.is_empty() {
                        return;
                    }
                }
                None => {
                    let keep = prefix_at_end(&data, token);
                    c.pending = data[data.len() - keep..].to_vec();
                    self.log_or_capture(c, &data[..data.len() - keep]);
                    return;
                }
            }
        }
    }

    fn log_or_capture(&mut self, c: &mut Capture, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if c.capturing {
            if c.captured.len() + data.len() > c.maxbytes {
                let drop = data.len().min(c.captured.len());
                c.captured.drain(..drop);
            }
            c.captured.extend_from_slice(data);
            self.log_elsewhere(data);
        } else {
            self.log(data);
        }
    }

    fn toggle(&mut self, c: &mut Capture) {
        c.capturing = !c.capturing;
        if c.capturing {
            return;
        }
        let data = std::mem::take(&mut c.captured);
        let name = match self.out.stream {
            "stdout" => "PROCESS_COMMUNICATION_STDOUT",
            _ => "PROCESS_COMMUNICATION_STDERR",
        };
        let out = &self.out;
        out.hub.notify(name, || {
            format!("processname:{} groupname:{} pid:{}\n{}", out.process, out.group, out.pid, text(&data))
        });
        tracing::debug!("{} {} emitted a comm event", self.quoted, self.out.stream);
    }

    /// supervisord's `_log`: the log file, the daemon's log at debug, and PROCESS_LOG events.
    fn log(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Some(channel) = &self.out.channel {
            channel.write_output(data, &self.out.process, self.out.stream);
        }
        self.log_elsewhere(data);
    }

    /// What `_log` does besides the log file (which capture mode replaces).
    fn log_elsewhere(&self, data: &[u8]) {
        if self.to_daemon_log {
            log_output(&self.quoted, self.out.stream, data);
        }
        if let Mode::Plain { events: true, .. } = self.out.mode {
            let name = match self.out.stream {
                "stdout" => "PROCESS_LOG_STDOUT",
                _ => "PROCESS_LOG_STDERR",
            };
            let out = &self.out;
            out.hub.notify(name, || {
                format!(
                    "processname:{} groupname:{} pid:{} channel:{}\n{}",
                    out.process,
                    out.group,
                    out.pid,
                    out.stream,
                    text(data)
                )
            });
        }
    }

    /// The pipe closed: what capture mode still held back is logged (supervisord loses it),
    /// and the log file is let go.
    fn close(&mut self) {
        if let Some(mut c) = self.capture.take() {
            let rest = std::mem::take(&mut c.pending);
            self.log_or_capture(&mut c, &rest);
        }
        if let Some(channel) = &self.out.channel {
            channel.detach();
        }
    }
}

/// Output as an event payload carries it: the text, or `Undecodable: b'...'`.
fn text(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(t) => t.to_string(),
        Err(_) => format!("Undecodable: {}", python_bytes_repr(data)),
    }
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The length of the longest proper prefix of `needle` that `hay` ends with (medusa's
/// `find_prefix_at_end`): bytes that may be the start of a marker, held back.
fn prefix_at_end(hay: &[u8], needle: &[u8]) -> usize {
    let mut l = needle.len() - 1;
    while l > 0 && !hay.ends_with(&needle[..l]) {
        l -= 1;
    }
    l
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
pub(crate) fn python_bytes_repr(data: &[u8]) -> String {
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
