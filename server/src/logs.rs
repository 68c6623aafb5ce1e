//! Log files: one [`LogChannel`] per process output (and one for the daemon's own log).
//!
//! A channel owns the file a process's stdout or stderr is appended to, rotates it, reopens it
//! on SIGUSR2, clears it, and lets any number of readers tail it — without ever holding data in
//! memory for them.
//!
//! Every byte written gets a *logical offset*: its position in the concatenation of the
//! backups (oldest first) and the current file as they were when minderd started, continued by
//! everything written since. Offsets only grow, across rotations, so a client that reconnects
//! with the offset it reached resumes with no gap and no duplicate. The channel maps offsets to
//! files with a list of [`Segment`]s; a reader locates its offset under the lock, then reads the
//! file with `pread` outside it. Rotation renames files and `backups = 0` unlinks the old file
//! rather than truncating it, so a reader that already holds a file keeps its bytes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

/// How much a reader reads, and sends, at once.
pub const CHUNK: usize = 64 * 1024;

/// How a channel's file is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    pub path: PathBuf,
    /// Rotate when the file reaches this size; 0 never rotates.
    pub maxbytes: u64,
    /// How many rotated files (`.1` … `.N`) to keep; 0 means the file is emptied instead.
    pub backups: u32,
    /// Prefix every line with the time it was captured (minder's extension, supervisor #553).
    pub timestamps: bool,
    /// Remove ANSI escape sequences first (`[supervisord] strip_ansi`).
    pub strip_ansi: bool,
}

/// A stretch of the logical stream that is in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    /// Unique within the channel; a reader keeps its open file while the id matches.
    id: u64,
    /// The logical offset of the segment's first byte.
    start: u64,
    /// Where that byte is in the file.
    file_start: u64,
    len: u64,
    /// 0 for the current file, i for `.i`.
    index: u32,
}

#[derive(Debug)]
struct State {
    /// The append handle of the current file; opened on the first write, closed when the
    /// process's output ends, so quiet stopped processes hold no descriptors.
    file: Option<File>,
    /// The current file's device and inode, to notice that someone replaced it.
    identity: Option<(u64, u64)>,
    /// Whether the target is a regular file (rotation and reading back need one; /dev/stdout
    /// is not).
    regular: bool,
    /// Oldest first; the last one, if it has index 0, is the current file.
    segments: VecDeque<Segment>,
    /// The logical offset just past the last byte written.
    end: u64,
    /// The current file's size.
    size: u64,
    next_id: u64,
    /// For timestamps: the next byte starts a line.
    at_line_start: bool,
    /// For strip_ansi: inside an escape sequence (it may span writes).
    in_escape: Escape,
    /// A write failed and was reported; the next failure is not reported again.
    failing: bool,
    /// Errors to report once the lock is released: the daemon's own log is a channel too, and
    /// reporting under the lock would write to it re-entrantly.
    pending: Vec<String>,
}

/// Why a channel cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("{0} is not a regular file, so it cannot be read back")]
    NotRegular(PathBuf),
    #[error("offset {offset} is beyond the end of the log ({end} bytes so far)")]
    BeyondEnd { offset: u64, end: u64 },
}

/// One process output's log file.
#[derive(Debug)]
pub struct LogChannel {
    spec: LogSpec,
    /// Bytes written to the files since minderd started (for metrics).
    written: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
    /// Woken after every write, for followers at the end to look again. (A `watch` channel
    /// would allocate about 450 bytes per channel, for every process, followed or not.)
    grown: Notify,
}

/// A file a reader has open, and where in the logical stream it begins.
#[derive(Debug, Clone)]
struct Held {
    seg: u64,
    file: Arc<File>,
    /// The logical offset of the file's byte `file_start`.
    start: u64,
    file_start: u64,
}

impl Held {
    /// Reads at logical `pos` from the held file, if `pos` is in it; 0 at its end.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> usize {
        if pos < self.start {
            return 0;
        }
        self.file.read_at(buf, self.file_start + (pos - self.start)).unwrap_or(0)
    }
}

/// Where a reader's offset is.
enum Located {
    /// Bytes are available in `held`: up to `avail` of them from `pos`.
    Data { held: Held, avail: u64 },
    /// The offset is no longer on disk; the next byte that is, is at `next`.
    Gap { next: u64 },
    /// Nothing more has been written yet.
    End,
}

fn path_for(base: &Path, index: u32) -> PathBuf {
    if index == 0 {
        base.to_path_buf()
    } else {
        let mut p = base.as_os_str().to_owned();
        p.push(format!(".{index}"));
        PathBuf::from(p)
    }
}

impl LogChannel {
    /// Sets up a channel for `spec`, counting what its files already hold (backups oldest
    /// first, then the current file) as offsets 0 onwards. Opens no file.
    pub fn new(spec: LogSpec) -> Arc<LogChannel> {
        let mut segments = VecDeque::new();
        let mut end = 0;
        let mut next_id = 0;
        let mut regular = true;
        let mut identity = None;
        let mut size = 0;
        for index in (0..=spec.backups).rev() {
            let Ok(meta) = std::fs::metadata(path_for(&spec.path, index)) else { continue };
            if index == 0 {
                regular = meta.is_file();
                identity = Some((meta.dev(), meta.ino()));
                size = if regular { meta.len() } else { 0 };
            } else if !meta.is_file() {
                continue;
            }
            let len = if meta.is_file() { meta.len() } else { 0 };
            segments.push_back(Segment { id: next_id, start: end, file_start: 0, len, index });
            next_id += 1;
            end += len;
        }
        if segments.back().is_none_or(|s| s.index != 0) {
            segments.push_back(Segment { id: next_id, start: end, file_start: 0, len: 0, index: 0 });
            next_id += 1;
        }
        let state = State {
            file: None,
            identity,
            regular,
            segments,
            end,
            size,
            next_id,
            at_line_start: true,
            in_escape: Escape::No,
            failing: false,
            pending: Vec::new(),
        };
        Arc::new(LogChannel {
            spec,
            written: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(state),
            grown: Notify::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.spec.path
    }

    pub fn spec(&self) -> &LogSpec {
        &self.spec
    }

    /// Bytes written since minderd started.
    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent before anything that can fail, so a poisoned
        // lock is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The logical offset just past the last byte written.
    pub fn end(&self) -> u64 {
        self.lock().end
    }

    /// Appends `data`, rotating as configured. Errors are reported once (to the daemon log)
    /// until a write succeeds again; what could not be written is lost, never blocks the child.
    pub fn write(&self, data: &[u8]) {
        let mut st = self.lock();
        let stripped;
        let data = if self.spec.strip_ansi {
            stripped = strip_ansi(data, &mut st.in_escape);
            &stripped[..]
        } else {
            data
        };
        let stamped;
        let data = if self.spec.timestamps {
            stamped = stamp(data, &mut st.at_line_start);
            &stamped[..]
        } else {
            data
        };
        let mut rest = data;
        while !rest.is_empty() {
            if st.file.is_none() {
                if let Err(e) = self.open_current(&mut st) {
                    self.report(&mut st, &format!("cannot open {}: {e}", self.spec.path.display()));
                    break;
                }
            }
            let rotating = st.regular && self.spec.maxbytes > 0;
            if rotating && st.size >= self.spec.maxbytes {
                self.rotate(&mut st);
                continue;
            }
            let room = if rotating { (self.spec.maxbytes - st.size) as usize } else { rest.len() };
            let (now, later) = rest.split_at(room.min(rest.len()));
            let file = st.file.as_mut().expect("opened above");
            if let Err(e) = file.write_all(now) {
                self.report(&mut st, &format!("cannot write to {}: {e}", self.spec.path.display()));
                // Try a fresh handle next time (the file may have been removed or fixed).
                st.file = None;
                break;
            }
            st.failing = false;
            self.written.fetch_add(now.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.wrote(&mut st, now.len() as u64);
            rest = later;
            if rotating && st.size >= self.spec.maxbytes {
                self.rotate(&mut st);
            }
        }
        self.unlock(st);
        self.grown.notify_waiters();
    }

    /// Accounts for `n` bytes appended to the current file, and notices if someone else
    /// truncated or replaced it meanwhile (logrotate's copytruncate).
    fn wrote(&self, st: &mut State, n: u64) {
        st.end += n;
        st.size += n;
        if let Some(seg) = st.segments.back_mut().filter(|s| s.index == 0) {
            seg.len += n;
        }
        if !st.regular {
            return;
        }
        let actual = st.file.as_ref().and_then(|f| f.metadata().ok()).map(|m| m.len());
        if let Some(actual) = actual.filter(|&a| a != st.size) {
            // The file changed under us: only what we just wrote is known to be where we
            // think it is.
            st.segments.retain(|s| s.index != 0);
            let id = st.next_id;
            st.next_id += 1;
            let start = st.end - n;
            st.segments.push_back(Segment {
                id,
                start,
                file_start: actual.saturating_sub(n),
                len: n,
                index: 0,
            });
            st.size = actual;
        }
    }

    fn report(&self, st: &mut State, msg: &str) {
        if !st.failing {
            st.pending.push(msg.to_string());
            st.failing = true;
        }
    }

    /// Releases the lock, then reports what went wrong while it was held.
    fn unlock(&self, mut st: MutexGuard<'_, State>) {
        let errors = std::mem::take(&mut st.pending);
        drop(st);
        for e in errors {
            tracing::error!("{e}");
        }
    }

    /// Opens the current file for appending (creating it), and checks it is still the file the
    /// segments describe.
    fn open_current(&self, st: &mut State) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.spec.path)?;
        let meta = file.metadata()?;
        let identity = (meta.dev(), meta.ino());
        st.regular = meta.is_file();
        if st.identity != Some(identity) {
            // A different file than before (first open, or replaced by someone else): what was
            // known of the old one is no longer reachable by this path.
            st.segments.retain(|s| s.index != 0);
            let id = st.next_id;
            st.next_id += 1;
            let file_start = if st.regular { meta.len() } else { 0 };
            st.segments.push_back(Segment { id, start: st.end, file_start, len: 0, index: 0 });
            st.identity = Some(identity);
            st.size = file_start;
        }
        st.file = Some(file);
        Ok(())
    }

    /// supervisord's rollover: `.i` → `.i+1`, the file → `.1`, a new empty file. With no
    /// backups the file is replaced by an empty one.
    fn rotate(&self, st: &mut State) {
        st.file = None;
        let base = &self.spec.path;
        let result = if self.spec.backups > 0 {
            (1..self.spec.backups)
                .rev()
                .map(|i| (path_for(base, i), path_for(base, i + 1)))
                .filter(|(from, _)| from.exists())
                .try_for_each(|(from, to)| std::fs::rename(from, to))
                .and_then(|()| std::fs::rename(base, path_for(base, 1)))
        } else {
            // Unlink rather than truncate: a reader that has the file open keeps its bytes.
            std::fs::remove_file(base)
        };
        if let Err(e) = result {
            self.report(st, &format!("cannot rotate {}: {e}", base.display()));
        }
        for seg in st.segments.iter_mut() {
            seg.index += 1;
        }
        let keep = self.spec.backups;
        st.segments.retain(|s| s.index <= keep && keep > 0);
        st.identity = None;
        st.size = 0;
        if let Err(e) = self.open_current(st) {
            self.report(st, &format!("cannot open {}: {e}", base.display()));
        }
    }

    /// Closes the append handle (the process's output has ended). The next write reopens it.
    pub fn close(&self) {
        self.lock().file = None;
    }

    /// Reopens the file by its path (SIGUSR2, after logrotate moved it away).
    pub fn reopen(&self) {
        let mut st = self.lock();
        let was_open = st.file.take().is_some();
        let moved = std::fs::metadata(&self.spec.path)
            .map(|m| Some((m.dev(), m.ino())) != st.identity)
            .unwrap_or(true);
        if moved {
            // Where the old file went is logrotate's business; its bytes are no longer ours.
            st.segments.clear();
            st.identity = None;
        }
        if was_open || moved {
            if let Err(e) = self.open_current(&mut st) {
                self.report(&mut st, &format!("cannot reopen {}: {e}", self.spec.path.display()));
            }
        }
        self.unlock(st);
    }

    /// Empties the log (supervisord's clearLog: the file is removed and begun anew; backups
    /// stay).
    pub fn clear(&self) -> std::io::Result<()> {
        let mut st = self.lock();
        let was_open = st.file.take().is_some();
        match std::fs::remove_file(&self.spec.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        st.segments.retain(|s| s.index != 0);
        st.identity = None;
        st.size = 0;
        let end = st.end;
        if was_open {
            self.open_current(&mut st)?;
            self.unlock(st);
        } else {
            let id = st.next_id;
            st.next_id += 1;
            st.segments.push_back(Segment { id, start: end, file_start: 0, len: 0, index: 0 });
        }
        Ok(())
    }

    /// Finds `pos`, reusing `held` (a file already open) when it is the segment's file.
    fn locate(&self, pos: u64, held: &Option<Held>) -> Result<Located, ReadError> {
        let st = self.lock();
        if !st.regular {
            return Err(ReadError::NotRegular(self.spec.path.clone()));
        }
        if pos >= st.end {
            return Ok(Located::End);
        }
        let Some(seg) = st.segments.iter().find(|s| s.start + s.len > pos) else {
            return Ok(Located::End);
        };
        if seg.start > pos {
            return Ok(Located::Gap { next: seg.start });
        }
        let held = match held {
            Some(h) if h.seg == seg.id => h.clone(),
            _ => match File::open(path_for(&self.spec.path, seg.index)) {
                Ok(f) => {
                    Held { seg: seg.id, file: Arc::new(f), start: seg.start, file_start: seg.file_start }
                }
                // Removed behind our back: skip to what follows.
                Err(_) => return Ok(Located::Gap { next: seg.start + seg.len }),
            },
        };
        Ok(Located::Data { held, avail: seg.start + seg.len - pos })
    }

    /// The oldest offset still on disk.
    fn oldest(&self) -> u64 {
        let st = self.lock();
        st.segments.iter().find(|s| s.len > 0).map_or(st.end, |s| s.start)
    }

    /// Where to start reading to get the last `n` bytes.
    pub fn start_for_last_bytes(&self, n: u64) -> u64 {
        self.end().saturating_sub(n).max(self.oldest())
    }

    /// Where to start reading to get the last `n` lines (a final newline ends the last line,
    /// it does not start an empty one).
    pub fn start_for_last_lines(&self, n: u64) -> Result<u64, ReadError> {
        let end = self.end();
        let oldest = self.oldest();
        if n == 0 {
            return Ok(end);
        }
        let mut newlines = 0u64;
        let mut pos = end;
        let mut held = None;
        let mut buf = vec![0u8; 8192];
        let mut first = true;
        while pos > oldest {
            let from = pos.saturating_sub(buf.len() as u64).max(oldest);
            let want = (pos - from) as usize;
            let bytes = self.read_range(from, want, &mut held, &mut buf)?;
            for (i, &b) in bytes.iter().enumerate().rev() {
                let at = from + i as u64;
                if b == b'\n' {
                    if first && at + 1 == end {
                        // The newline that ends the last line.
                    } else {
                        newlines += 1;
                        if newlines == n {
                            return Ok(at + 1);
                        }
                    }
                }
                first = false;
            }
            pos = from;
        }
        Ok(oldest)
    }

    /// Reads up to `want` bytes from `from` (all in one segment or fewer), for the backward
    /// scan. Returns fewer bytes at a segment boundary or gap; never blocks on followers.
    fn read_range<'b>(
        &self,
        from: u64,
        want: usize,
        held: &mut Option<Held>,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], ReadError> {
        let mut got = 0;
        let mut pos = from;
        while got < want {
            match self.locate(pos, held)? {
                Located::Data { held: h, avail } => {
                    let n = (avail as usize).min(want - got);
                    let read = h.read_at(&mut buf[got..got + n], pos);
                    *held = Some(h);
                    if read == 0 {
                        break;
                    }
                    got += read;
                    pos += read as u64;
                }
                Located::Gap { next } => {
                    // Treat missing bytes as not newlines: fill with zeros.
                    let skip = ((next - pos) as usize).min(want - got);
                    buf[got..got + skip].fill(0);
                    got += skip;
                    pos += skip as u64;
                }
                Located::End => break,
            }
        }
        Ok(&buf[..got])
    }

    /// Whether the channel's file can be read back at all.
    pub fn readable(&self) -> Result<(), ReadError> {
        if self.lock().regular {
            Ok(())
        } else {
            Err(ReadError::NotRegular(self.spec.path.clone()))
        }
    }

    /// Streams the log from `pos` into `tx` as [`Chunk`]s (each passed through `wrap`); with
    /// `follow`, keeps streaming what is written later until `tx` is closed. Bytes that were
    /// rotated away before they could be read are reported in the next chunk's `skipped`,
    /// never silently.
    pub async fn stream<T>(
        self: Arc<Self>,
        mut pos: u64,
        follow: bool,
        tx: mpsc::Sender<T>,
        wrap: impl Fn(Chunk) -> T,
    ) -> Result<(), ReadError> {
        let end = self.end();
        if pos > end {
            return Err(ReadError::BeyondEnd { offset: pos, end });
        }
        let mut held: Option<Held> = None;
        let mut skipped = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            // Made before looking, so a write from here on wakes it (notify_waiters reaches
            // every Notified made before the call, polled yet or not).
            let grown = self.grown.notified();
            // The file already open may hold more than the segments now say: it may have been
            // rotated away or unlinked since. Read it to its end before looking elsewhere.
            let n = held.as_ref().map_or(0, |h| h.read_at(&mut buf, pos));
            if n > 0 {
                let chunk = Chunk { offset: pos, data: buf[..n].to_vec(), skipped };
                skipped = 0;
                pos += n as u64;
                if tx.send(wrap(chunk)).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            match self.locate(pos, &held)? {
                Located::Data { held: h, avail } => {
                    let want = (avail as usize).min(CHUNK);
                    let n = h.read_at(&mut buf[..want], pos);
                    let same = held.as_ref().is_some_and(|old| old.seg == h.seg);
                    held = Some(h);
                    if n == 0 {
                        if same {
                            // The segment says there are bytes its file no longer has (someone
                            // truncated it): they are lost.
                            skipped += avail;
                            pos += avail;
                        }
                        continue;
                    }
                    let chunk = Chunk { offset: pos, data: buf[..n].to_vec(), skipped };
                    skipped = 0;
                    pos += n as u64;
                    if tx.send(wrap(chunk)).await.is_err() {
                        return Ok(());
                    }
                }
                Located::Gap { next } => {
                    skipped += next - pos;
                    pos = next;
                }
                Located::End => {
                    if !follow {
                        if skipped > 0 {
                            let _ = tx.send(wrap(Chunk { offset: pos, data: Vec::new(), skipped })).await;
                        }
                        return Ok(());
                    }
                    tokio::select! {
                        () = grown => {},
                        () = tx.closed() => return Ok(()),
                    }
                }
            }
        }
    }
}

/// A piece of a log, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The logical offset of `data[0]`.
    pub offset: u64,
    pub data: Vec<u8>,
    /// Bytes just before `offset` that were no longer on disk when this reader got there.
    pub skipped: u64,
}

/// Where strip_ansi is in an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    No,
    /// Just after ESC.
    Esc,
    /// After `ESC [`, until a terminator.
    Csi,
}

/// Removes ANSI escape sequences as supervisord's `strip_escapes` does: from `ESC [` up to and
/// including the first of `HfABCDRsuJKhlpm`. The state carries sequences across writes.
fn strip_ansi(data: &[u8], state: &mut Escape) -> Vec<u8> {
    const TERMINATORS: &[u8] = b"HfABCDRsuJKhlpm";
    let mut out = Vec::with_capacity(data.len());
    for &b in data {
        *state = match (*state, b) {
            (Escape::No, 0x1b) => Escape::Esc,
            (Escape::No, b) => {
                out.push(b);
                Escape::No
            }
            (Escape::Esc, b'[') => Escape::Csi,
            (Escape::Esc, b) => {
                // Not a CSI sequence: keep the ESC and this byte, as supervisord does.
                out.extend_from_slice(&[0x1b, b]);
                Escape::No
            }
            (Escape::Csi, b) if TERMINATORS.contains(&b) => Escape::No,
            (Escape::Csi, _) => Escape::Csi,
        };
    }
    out
}

/// Prefixes each line of `data` with the current time, `YYYY-MM-DD HH:MM:SS,mmm `, tracking
/// across calls whether the next byte starts a line.
fn stamp(data: &[u8], at_line_start: &mut bool) -> Vec<u8> {
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S,%3f ").to_string();
    let mut out = Vec::with_capacity(data.len() + 32);
    for &b in data {
        if *at_line_start {
            out.extend_from_slice(now.as_bytes());
        }
        out.push(b);
        *at_line_start = b == b'\n';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, maxbytes: u64, backups: u32) -> LogSpec {
        LogSpec { path: dir.join("out.log"), maxbytes, backups, timestamps: false, strip_ansi: false }
    }

    #[test]
    fn ansi_sequences_are_stripped_across_writes() {
        let mut st = Escape::No;
        let mut out = strip_ansi(b"\x1b[1;31mred\x1b[", &mut st);
        out.extend(strip_ansi(b"0m plain \x1bx", &mut st));
        assert_eq!(out, b"red plain \x1bx");
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    async fn collect(ch: &Arc<LogChannel>, from: u64) -> (Vec<u8>, u64) {
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(Arc::clone(ch).stream(from, false, tx, |c| c));
        let mut data = Vec::new();
        let mut skipped = 0;
        while let Some(c) = rx.recv().await {
            assert_eq!(c.offset, from + data.len() as u64 + skipped + c.skipped, "chunks are contiguous");
            skipped += c.skipped;
            data.extend(c.data);
        }
        task.await.expect("joined").expect("readable");
        (data, skipped)
    }

    #[test]
    fn rotation_splits_at_exactly_maxbytes_and_shifts_backups() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 10, 2));
        ch.write(b"0123456789abcdefghij"); // exactly two files' worth
        ch.write(b"KLMNOPQRSTuvw");
        let base = dir.path().join("out.log");
        assert_eq!(read(base.clone()), "uvw");
        assert_eq!(read(path_for(&base, 1)), "KLMNOPQRST");
        assert_eq!(read(path_for(&base, 2)), "abcdefghij");
        assert!(!path_for(&base, 3).exists(), "only two backups are kept");
        assert_eq!(ch.end(), 33);
    }

    #[test]
    fn no_backups_empties_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 4, 0));
        ch.write(b"abcdef");
        assert_eq!(read(dir.path().join("out.log")), "ef");
        assert!(!dir.path().join("out.log.1").exists());
    }

    #[test]
    fn zero_maxbytes_never_rotates() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 0, 3));
        for _ in 0..100 {
            ch.write(b"0123456789");
        }
        assert_eq!(read(dir.path().join("out.log")).len(), 1000);
        assert!(!dir.path().join("out.log.1").exists());
    }

    #[tokio::test]
    async fn reading_spans_backups_by_offset() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 10, 3));
        ch.write(b"0123456789abcdefghijKLMNO");
        let (all, skipped) = collect(&ch, 0).await;
        assert_eq!((all.as_slice(), skipped), (&b"0123456789abcdefghijKLMNO"[..], 0));
        let (tail, _) = collect(&ch, 15).await;
        assert_eq!(tail, b"fghijKLMNO");
        assert_eq!(ch.start_for_last_bytes(4), 21);
        assert_eq!(ch.start_for_last_bytes(1000), 0);
    }

    #[tokio::test]
    async fn bytes_rotated_away_are_reported_as_skipped() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 10, 1));
        ch.write(b"0123456789abcdefghijKLMNOPQRST");
        // Each write that fills the file rotates it at once (as supervisord does), so only the
        // last ten bytes are in .1 and the current file is empty; offsets 0..20 are gone.
        let (data, skipped) = collect(&ch, 0).await;
        assert_eq!(skipped, 20);
        assert_eq!(data, b"KLMNOPQRST");
    }

    #[test]
    fn last_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 8, 5));
        ch.write(b"one\ntwo\nthree\nfour\n");
        assert_eq!(ch.start_for_last_lines(1).expect("ok"), 14);
        assert_eq!(ch.start_for_last_lines(2).expect("ok"), 8);
        assert_eq!(ch.start_for_last_lines(4).expect("ok"), 0);
        assert_eq!(ch.start_for_last_lines(10).expect("ok"), 0);
        ch.write(b"partial");
        assert_eq!(ch.start_for_last_lines(1).expect("ok"), 19);
        assert_eq!(ch.start_for_last_lines(2).expect("ok"), 14);
    }

    #[test]
    fn existing_files_count_as_the_start_of_the_stream() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("out.log.1"), "old\n").expect("write");
        std::fs::write(dir.path().join("out.log"), "new\n").expect("write");
        let ch = LogChannel::new(spec(dir.path(), 100, 3));
        assert_eq!(ch.end(), 8);
        assert_eq!(ch.start_for_last_lines(2).expect("ok"), 0);
        ch.write(b"more\n");
        assert_eq!(read(dir.path().join("out.log")), "new\nmore\n");
    }

    #[tokio::test]
    async fn a_follower_keeps_a_rotated_file_and_loses_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 10, 0));
        let (tx, mut rx) = mpsc::channel(1);
        let follower = tokio::spawn(Arc::clone(&ch).stream(0, true, tx, |c| c));
        ch.write(b"0123456");
        let first = rx.recv().await.expect("a chunk");
        assert_eq!(first.data, b"0123456");
        // The file is emptied (backups = 0) twice before the follower reads again.
        ch.write(b"789abcdefghijklmnopqrstu");
        let mut got = first.data;
        let mut skipped = 0;
        while got.len() + skipped < 31 {
            let c = rx.recv().await.expect("a chunk");
            skipped += c.skipped as usize;
            got.extend(c.data);
        }
        // What it had open (the first file) it read to the end; the file in between was
        // unlinked before it could open it, and that is reported.
        assert_eq!(&got[..10], b"0123456789");
        assert_eq!(skipped + got.len(), 31);
        drop(rx);
        ch.write(b"x");
        follower.await.expect("joined").expect("ok");
    }

    #[test]
    fn clear_removes_the_file_and_keeps_offsets_growing() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 0, 0));
        ch.write(b"abc");
        ch.clear().expect("cleared");
        assert_eq!(read(dir.path().join("out.log")), "");
        ch.write(b"de");
        assert_eq!(read(dir.path().join("out.log")), "de");
        assert_eq!(ch.end(), 5);
    }

    #[test]
    fn reopen_follows_a_file_moved_away() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 0, 0));
        ch.write(b"before\n");
        std::fs::rename(dir.path().join("out.log"), dir.path().join("moved.log")).expect("mv");
        ch.write(b"still-old\n");
        ch.reopen();
        ch.write(b"after\n");
        assert_eq!(read(dir.path().join("moved.log")), "before\nstill-old\n");
        assert_eq!(read(dir.path().join("out.log")), "after\n");
    }

    #[test]
    fn timestamps_prefix_each_line() {
        let mut at_start = true;
        let out = String::from_utf8(stamp(b"a\nb", &mut at_start)).expect("utf8");
        let more = String::from_utf8(stamp(b"c\n", &mut at_start)).expect("utf8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" a") && lines[0].len() == "2026-11-24 05:07:01,123 a".len(), "{out:?}");
        assert!(lines[1].ends_with(" b"));
        assert_eq!(more, "c\n", "the line started in the previous write is not stamped again");
        assert!(at_start);
    }
}
