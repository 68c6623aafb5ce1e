//! Log files: one [`LogChannel`] per log file a process output goes to (and one for the
//! daemon's own log).
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
//! file with `pread` outside it — and off the async workers (`spawn_blocking`), as the backward
//! scan of `tail -n` is, which stops after [`LINES_SCAN_LIMIT`] bytes. Rotation renames files
//! and `backups = 0` unlinks the old file rather than truncating it, so a reader that already
//! holds a file keeps its bytes. A write that the disk takes only in part (it filled up) is
//! counted for what it wrote, so offsets always match what the files hold.
//!
//! **Sharing.** Outputs that name the same file (two programs, or `numprocs` without
//! `%(process_num)s`) share one channel ([`LogChannel::shared`]), so clearing or rotating it
//! acts for all of them and nobody keeps writing into a file that was cleared or rotated away.
//! The channel lives as long as any process uses it. Its settings (maxbytes, backups,
//! timestamps) are those of the process configured last: on start-up the last one in the
//! configuration, after an update the process just (re)installed; a change is logged, and
//! `--check-config` notes files that are shared (and settings that differ).
//!
//! **Who can redirect a log file.** minderd runs as root and appends children's output to
//! paths in directories that may belong to the children's users. Every open goes through the
//! log file's directory ([`open_in_dir`]):
//! - A directory that only root or minderd's own user can change (owned by one of them, not
//!   group- or world-writable) is trusted: the path is opened as given, symbolic links
//!   included — only they could have put a link there. This is how `/dev/stdout` (a link to
//!   `/proc/self/fd/1`), `/dev/null` and links an operator made keep working.
//! - In any other directory (another user or a group can add, remove or rename entries, sticky
//!   or not), the last component is opened with `O_NOFOLLOW`, and what was opened must be a
//!   regular file with a single link: a symbolic link, a hard link to someone else's file, a
//!   FIFO or a device planted there is refused, and the refusal is written to the daemon log
//!   (once, until a write succeeds again). The output is then dropped, never written elsewhere.
//!   What remains possible is what the directory's owner could do anyway: replace the log with
//!   a regular file of their own.
//! - Every open is `O_NONBLOCK` (so a FIFO cannot hang the daemon: with no reader it fails
//!   with ENXIO) and `O_NOCTTY`; writes are made blocking again afterwards.
//! - Readers (`tail`) open backups the same way and check that the file has the device and
//!   inode the segment recorded, so a link swapped in later is never read from.
//! - Only regular files that are the path itself (not a link's target) are rotated, cleared,
//!   renamed or unlinked; `clear` on anything else does nothing and says so.
//! - The directories *above* the log's own directory are trusted as they are: a user must not
//!   own an ancestor of a log directory it does not own.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::Write;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;
use tokio::sync::{mpsc, Notify};

pub use crate::logzip::Compress;

/// How much a reader reads, and sends, at once.
pub const CHUNK: usize = 64 * 1024;

/// How far back `tail -n` looks for the start of the last lines (supervisorctl's tail reads
/// 1600 bytes; 1 MiB holds thousands of ordinary lines, and scanning it takes a millisecond
/// from the page cache). Beyond it, the last bytes are shown instead, with a notice.
pub const LINES_SCAN_LIMIT: u64 = 1 << 20;

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
    /// `log_format = "json"`: every line captured becomes one JSON object on a line of its
    /// own (`time`, `process`, `channel`, `line`), [`LogChannel::write_output`].
    pub json: bool,
    /// `*_logfile_compress`: rotated backups are compressed ([`crate::logzip`]).
    pub compress: Option<Compress>,
}

impl LogSpec {
    /// Whether `self` and `other` keep their files the same way (paths aside).
    fn same_settings(&self, other: &LogSpec) -> bool {
        (self.maxbytes, self.backups, self.timestamps, self.strip_ansi, self.json, self.compress)
            == (other.maxbytes, other.backups, other.timestamps, other.strip_ansi, other.json, other.compress)
    }
}

/// A file's device and inode.
type Ident = (u64, u64);

fn ident(meta: &Metadata) -> Ident {
    (meta.dev(), meta.ino())
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
    /// The file's identity, when known: a reader opens only that file.
    ident: Option<Ident>,
    /// A backup compressed: its file is `.i.gz` or `.i.zst`, and holds `len` bytes decoded.
    compressed: Option<Compress>,
}

#[derive(Debug)]
struct State {
    /// How the file is kept: the last configured sharer's settings.
    spec: LogSpec,
    /// The append handle of the current file; opened when a process that writes here is
    /// spawned (as supervisord does) or on the first write, closed when the last writer's
    /// output ends, so quiet stopped processes hold no descriptors.
    file: Option<File>,
    /// How many captured outputs write here now.
    writers: usize,
    /// The current file's device and inode, to notice that someone replaced it.
    identity: Option<Ident>,
    /// Whether the target is a regular file, so it can be read back (/dev/stdout is not).
    regular: bool,
    /// Whether the path itself is that regular file (not a link to it): only then is it
    /// rotated or cleared.
    direct: bool,
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
    /// For json: the start of a line not yet ended, and whose output it is.
    partial: Vec<u8>,
    partial_from: Option<(String, &'static str)>,
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
    #[error("reading {0} failed: {1}")]
    Failed(PathBuf, String),
}

/// Why a channel was not cleared.
#[derive(Debug, thiserror::Error)]
pub enum ClearError {
    #[error("{path} is {what}, not a regular file: it was left as it is, nothing was cleared")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("cannot clear {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Where the last lines of a log start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinesStart {
    pub offset: u64,
    /// The scan stopped at [`LINES_SCAN_LIMIT`] before finding them all: `offset` is where the
    /// bound is, and fewer lines (or a piece of one) follow.
    pub bounded: bool,
}

/// One process output's log file.
#[derive(Debug)]
pub struct LogChannel {
    path: PathBuf,
    /// Itself, for the compressing thread to find it again (and to let it go).
    me: Weak<LogChannel>,
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
    /// For a compressed backup: its decoder (`file` is then the compressed file).
    decoded: Option<Arc<Mutex<crate::logzip::Decoded>>>,
    ident: Option<Ident>,
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
        let at = self.file_start + (pos - self.start);
        match &self.decoded {
            Some(d) => d.lock().unwrap_or_else(|e| e.into_inner()).read_at(buf, at),
            None => self.file.read_at(buf, at).unwrap_or(0),
        }
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

/// A reader's place in a channel, carried to and from the blocking pool.
struct Cursor {
    pos: u64,
    held: Option<Held>,
    /// Bytes lost before `pos`, not yet reported.
    skipped: u64,
    buf: Vec<u8>,
}

/// A compressed backup's name: `NAME.i.gz`, `NAME.i.zst`.
fn compressed_path(base: &Path, index: u32, algo: Compress) -> PathBuf {
    let mut p = path_for(base, index).into_os_string();
    p.push(algo.ext());
    PathBuf::from(p)
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

/// What kind of file `meta` describes, for messages.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a regular file"
    }
}

/// A log file's directory, open, and whether anyone but root or minderd's user can change it.
struct Dir {
    fd: File,
    path: PathBuf,
    trusted: bool,
}

/// Opens the directory holding `path`; returns it with the file's name in it.
fn open_dir(path: &Path) -> std::io::Result<(Dir, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fd = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(parent)?;
    let meta = fd.metadata()?;
    let euid = nix::unistd::geteuid().as_raw();
    let trusted = (meta.uid() == 0 || meta.uid() == euid) && meta.mode() & 0o022 == 0;
    Ok((Dir { fd, path: parent.to_path_buf(), trusted }, name))
}

/// A refusal to open a log file, as the daemon log and clients see it.
fn refused(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
}

/// Opens `path` as the module doc says: through its directory, not following a symbolic link
/// that another user could have made, never hanging on a FIFO. `write` opens it for appending
/// (creating it), otherwise for reading.
fn open_in_dir(path: &Path, write: bool) -> std::io::Result<(File, Metadata, bool)> {
    let (dir, name) = open_dir(path)?;
    let mut flags = OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    flags |= if write { OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT } else { OFlag::O_RDONLY };
    if !dir.trusted {
        flags |= OFlag::O_NOFOLLOW;
    }
    let untrusted = || format!("in {}, a directory other users can write", dir.path.display());
    let fd = match nix::fcntl::openat(&dir.fd, name, flags, Mode::from_bits_truncate(0o666)) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) if !dir.trusted => {
            return Err(refused(format!(
                "refused: it is a symbolic link {}; minderd does not follow it (whoever made it could point it at any file)",
                untrusted()
            )))
        }
        Err(Errno::ENXIO) => {
            return Err(std::io::Error::other("nothing reads it (a FIFO with no reader, or a device that is not there)"))
        }
        Err(e) => return Err(e.into()),
    };
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !dir.trusted {
        if !meta.is_file() {
            return Err(refused(format!(
                "refused: it is {} {}, not a regular file",
                kind(&meta),
                untrusted()
            )));
        }
        if meta.nlink() > 1 {
            return Err(refused(format!(
                "refused: it has {} hard links {}; another of its names may be a file it must not change",
                meta.nlink(),
                untrusted()
            )));
        }
    }
    // Non-blocking only so that opening a FIFO cannot hang; writes block as they always did.
    let flags = nix::fcntl::fcntl(&file, FcntlArg::F_GETFL)?;
    nix::fcntl::fcntl(&file, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK))?;
    // In an untrusted directory O_NOFOLLOW made sure the path is the file itself; in a trusted
    // one it may have been a link.
    let direct = meta.is_file()
        && (!dir.trusted || std::fs::symlink_metadata(path).is_ok_and(|m| ident(&m) == ident(&meta)));
    Ok((file, meta, direct))
}

/// Opens `path` for appending, creating it, as every log file is opened: for files of the
/// daemon's own (its log, its pidfile) that may sit in a directory other users can write.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    open_in_dir(path, true).map(|(file, _, _)| file)
}

/// Opens `path` for reading as log files are read (Supervisor's `readLog`, `tailProcessLog`, …
/// read a log by its path): no link another user planted is followed, a FIFO cannot hang the
/// reader, and only a regular file is read.
pub fn open_read(path: &Path) -> std::io::Result<File> {
    let (file, meta, _) = open_in_dir(path, false)?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is {}, not a regular file",
            path.display(),
            kind(&meta)
        )));
    }
    Ok(file)
}

/// What is at `path`, looked at as [`open_in_dir`] would open it (a link is followed only in a
/// trusted directory).
fn probe(path: &Path) -> std::io::Result<Metadata> {
    let (dir, _) = open_dir(path)?;
    if dir.trusted {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
}

/// The identity of the regular file that is `path` itself (not a link's target), if it is one.
fn regular_entry(path: &Path) -> Option<Ident> {
    std::fs::symlink_metadata(path).ok().filter(Metadata::is_file).map(|m| ident(&m))
}

/// Writes as much of `data` as `w` takes, and says how much that was even when it then fails:
/// a disk that fills up takes part of a write before refusing the rest, and that part is in
/// the file (and must be counted, or offsets drift from what the file holds).
fn append(w: &mut impl Write, data: &[u8]) -> (usize, Option<std::io::Error>) {
    let mut done = 0;
    while done < data.len() {
        match w.write(&data[done..]) {
            Ok(0) => return (done, Some(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

/// How many log reads run on the blocking pool at once: a write wakes every follower of a
/// channel, and without a bound a hundred followers would each get a thread of their own.
static READERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

/// The channels open now, by path, so that outputs naming the same file share one.
static SHARED: Mutex<Open> = Mutex::new(Open { channels: BTreeMap::new(), added: 0 });

/// [`SHARED`]: the channels by path, and how many were added since the last sweep of those
/// that are gone. The sweep is O(channels), so it runs once the additions since the last one
/// reach half the map: a daemon that opens 20,000 channels at start-up did 20,000 sweeps.
struct Open {
    channels: BTreeMap<PathBuf, Weak<LogChannel>>,
    added: usize,
}

/// `path` made absolute, with `.` components dropped, to compare paths that name one file.
fn share_key(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).components().collect()
}

impl LogChannel {
    /// Sets up a channel for `spec`, counting what its files already hold (backups oldest
    /// first, then the current file) as offsets 0 onwards. Opens no file. A channel made this
    /// way is not shared; processes' outputs use [`LogChannel::shared`].
    pub fn new(spec: LogSpec) -> Arc<LogChannel> {
        // Most channels only ever have their current file: room for one, not the default four
        // (a fifth of a kilobyte per output, for thousands of outputs).
        let mut segments = VecDeque::with_capacity(1);
        let mut end = 0;
        let mut next_id = 0;
        let mut regular = true;
        let mut direct = true;
        let mut identity = None;
        let mut size = 0;
        for index in (0..=spec.backups).rev() {
            // (its metadata, its length in the stream, how it is compressed)
            let (meta, len, compressed) = match probe(&path_for(&spec.path, index)) {
                Ok(meta) => {
                    if index == 0 {
                        regular = meta.is_file();
                        direct = regular && regular_entry(&spec.path) == Some(ident(&meta));
                        identity = Some(ident(&meta));
                        size = if regular { meta.len() } else { 0 };
                    } else if !meta.is_file() {
                        continue;
                    }
                    let len = if meta.is_file() { meta.len() } else { 0 };
                    (meta, len, None)
                }
                // A backup may be compressed (whatever the setting is now).
                Err(_) if index > 0 => {
                    let found = Compress::ALL.into_iter().find_map(|algo| {
                        let path = compressed_path(&spec.path, index, algo);
                        let (file, meta, _) = open_in_dir(&path, false).ok()?;
                        let len = crate::logzip::decoded_len(&file, algo)?;
                        Some((meta, len, Some(algo)))
                    });
                    let Some(found) = found else { continue };
                    found
                }
                Err(_) => continue,
            };
            let ident = Some(ident(&meta));
            segments.push_back(Segment {
                id: next_id,
                start: end,
                file_start: 0,
                len,
                index,
                ident,
                compressed,
            });
            next_id += 1;
            end += len;
        }
        if segments.back().is_none_or(|s| s.index != 0) {
            segments.push_back(Segment {
                id: next_id,
                start: end,
                file_start: 0,
                len: 0,
                index: 0,
                ident: None,
                compressed: None,
            });
            next_id += 1;
        }
        let state = State {
            spec: spec.clone(),
            file: None,
            writers: 0,
            identity,
            regular,
            direct,
            segments,
            end,
            size,
            next_id,
            at_line_start: true,
            in_escape: Escape::No,
            partial: Vec::new(),
            partial_from: None,
            failing: false,
            pending: Vec::new(),
        };
        Arc::new_cyclic(|me| LogChannel {
            path: spec.path,
            me: me.clone(),
            written: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(state),
            grown: Notify::new(),
        })
    }

    /// The channel for `spec`'s file: the one already open for that path if there is one (its
    /// settings become `spec`'s, as the module doc says), else a new one. `owner` names the
    /// process, for the log.
    pub fn shared(spec: LogSpec, owner: &str) -> Arc<LogChannel> {
        let key = share_key(&spec.path);
        let mut open = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = open.channels.get(&key).and_then(Weak::upgrade) {
            let mut st = ch.lock();
            if !st.spec.same_settings(&spec) {
                tracing::info!(
                    "{}: now kept as {owner} asks (maxbytes {}, backups {}, timestamps {}), for every process writing it",
                    ch.path.display(),
                    spec.maxbytes,
                    spec.backups,
                    spec.timestamps
                );
                st.spec = LogSpec { path: ch.path.clone(), ..spec };
            }
            drop(st);
            return ch;
        }
        let ch = LogChannel::new(spec);
        open.channels.insert(key, Arc::downgrade(&ch));
        open.added += 1;
        if open.added > open.channels.len() / 2 {
            open.channels.retain(|_, w| w.strong_count() > 0);
            open.added = 0;
        }
        ch
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the file is kept now.
    pub fn spec(&self) -> LogSpec {
        self.lock().spec.clone()
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

    /// A process that writes here was spawned: opens (creates) the file now, as supervisord
    /// does, so it exists while the process runs even if it writes nothing (logrotate rules and
    /// watchers expect it), and a refusal is reported at once.
    pub fn attach(&self) {
        let mut st = self.lock();
        st.writers += 1;
        if st.file.is_none() {
            if let Err(e) = self.open_current(&mut st) {
                self.report(&mut st, &format!("cannot open {}: {e}", self.path.display()));
            }
        }
        self.unlock(st);
    }

    /// A writer's output ended. The last one closes the append handle; the next write (or
    /// [`attach`](Self::attach)) reopens it.
    pub fn detach(&self) {
        let mut st = self.lock();
        // A JSON line the output did not end is written now, marked partial.
        if st.partial_from.is_some() {
            let mut out = Vec::new();
            flush_partial(&mut st, &mut out);
            self.append_locked(st, &out);
            st = self.lock();
        }
        st.writers = st.writers.saturating_sub(1);
        if st.writers == 0 {
            st.file = None;
        }
    }

    /// A process's output: as [`write`](Self::write), or with `log_format = "json"` one JSON
    /// object per line (docker's json-file habit: a line is written once its newline has come,
    /// one longer than [`JSON_LINE_MAX`] in pieces marked `"partial": true`, and what is left
    /// when the output ends or another process writes is written as a partial line).
    pub fn write_output(&self, data: &[u8], process: &str, stream: &'static str) {
        let mut st = self.lock();
        if !st.spec.json {
            drop(st);
            return self.write(data);
        }
        let data = if st.spec.strip_ansi { strip_ansi(data, &mut st.in_escape) } else { data.to_vec() };
        let mut out = Vec::new();
        if st.partial_from.as_ref().is_some_and(|(p, s)| p != process || *s != stream) {
            flush_partial(&mut st, &mut out);
        }
        st.partial_from = Some((process.to_string(), stream));
        let mut rest = &data[..];
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let line = if st.partial.is_empty() {
                        &rest[..i]
                    } else {
                        st.partial.extend_from_slice(&rest[..i]);
                        &st.partial[..]
                    };
                    json_record(&mut out, line, process, stream, false);
                    st.partial.clear();
                    rest = &rest[i + 1..];
                }
                None => {
                    st.partial.extend_from_slice(rest);
                    rest = &[];
                }
            }
            while st.partial.len() >= JSON_LINE_MAX {
                let piece: Vec<u8> = st.partial.drain(..JSON_LINE_MAX).collect();
                json_record(&mut out, &piece, process, stream, true);
            }
        }
        if st.partial.is_empty() {
            st.partial_from = None;
        }
        self.append_locked(st, &out);
    }

    /// Appends `data`, rotating as configured. Errors are reported once (to the daemon log)
    /// until a write succeeds again; what could not be written is lost, never blocks the child.
    pub fn write(&self, data: &[u8]) {
        let st = self.lock();
        self.append_locked(st, data);
    }

    fn append_locked(&self, mut st: MutexGuard<'_, State>, data: &[u8]) {
        if data.is_empty() {
            return self.unlock(st);
        }
        let (maxbytes, strip, timestamps) = (st.spec.maxbytes, st.spec.strip_ansi, st.spec.timestamps);
        // A JSON record is made whole by write_output; nothing is stripped or stamped again.
        let (strip, timestamps) = if st.spec.json { (false, false) } else { (strip, timestamps) };
        let stripped;
        let data = if strip {
            stripped = strip_ansi(data, &mut st.in_escape);
            &stripped[..]
        } else {
            data
        };
        let stamped;
        let data = if timestamps {
            stamped = stamp(data, &mut st.at_line_start);
            &stamped[..]
        } else {
            data
        };
        let mut rest = data;
        // A rotation that fails is tried once per write, not forever.
        let mut may_rotate = true;
        while !rest.is_empty() {
            if st.file.is_none() {
                if let Err(e) = self.open_current(&mut st) {
                    self.report(&mut st, &format!("cannot open {}: {e}", self.path.display()));
                    break;
                }
            }
            let rotating = may_rotate && st.direct && maxbytes > 0;
            if rotating && st.size >= maxbytes {
                may_rotate = self.rotate(&mut st);
                continue;
            }
            let room = if rotating { (maxbytes - st.size) as usize } else { rest.len() };
            let (now, later) = rest.split_at(room.min(rest.len()));
            let file = st.file.as_mut().expect("opened above");
            let (done, failed) = append(file, now);
            if done > 0 {
                self.written.fetch_add(done as u64, std::sync::atomic::Ordering::Relaxed);
                self.wrote(&mut st, done as u64);
            }
            if let Some(e) = failed {
                self.report(&mut st, &format!("cannot write to {}: {e}", self.path.display()));
                // Try a fresh handle next time (the file may have been removed or fixed).
                st.file = None;
                break;
            }
            st.failing = false;
            rest = later;
            if rotating && st.size >= maxbytes {
                may_rotate = self.rotate(&mut st);
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
            let ident = st.identity;
            st.segments.push_back(Segment {
                id,
                start,
                file_start: actual.saturating_sub(n),
                len: n,
                index: 0,
                ident,
                compressed: None,
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
        let (file, meta, direct) = open_in_dir(&self.path, true)?;
        let identity = ident(&meta);
        st.regular = meta.is_file();
        st.direct = direct;
        if st.identity != Some(identity) {
            // A different file than before (first open, or replaced by someone else): what was
            // known of the old one is no longer reachable by this path.
            st.segments.retain(|s| s.index != 0);
            let id = st.next_id;
            st.next_id += 1;
            let file_start = if st.regular { meta.len() } else { 0 };
            st.segments.push_back(Segment {
                id,
                start: st.end,
                file_start,
                len: 0,
                index: 0,
                ident: Some(identity),
                compressed: None,
            });
            st.identity = Some(identity);
            st.size = file_start;
        }
        st.file = Some(file);
        Ok(())
    }

    /// supervisord's rollover: `.i` → `.i+1`, the file → `.1`, a new empty file. With no
    /// backups the file is replaced by an empty one. Only regular files are renamed or
    /// unlinked. Returns false if the files could not be rotated (reported).
    fn rotate(&self, st: &mut State) -> bool {
        st.file = None;
        let base = self.path.clone();
        let backups = st.spec.backups;
        if st.identity.is_none() || regular_entry(&base) != st.identity {
            // Someone replaced or moved the file: it is not ours to rename. Start on what is
            // there now, as a reopen would.
            st.segments.retain(|s| s.index != 0);
            st.identity = None;
            if let Err(e) = self.open_current(st) {
                self.report(st, &format!("cannot open {}: {e}", base.display()));
                return false;
            }
            return st.size < st.spec.maxbytes;
        }
        let result = if backups > 0 {
            // Each backup moves up one, under whichever name it has (plain or compressed); a
            // file of the other kind left at the new place is removed, so no index has two.
            let names = |i: u32| {
                let mut v = vec![path_for(&base, i)];
                v.extend(Compress::ALL.into_iter().map(|a| compressed_path(&base, i, a)));
                v
            };
            (1..backups)
                .rev()
                .try_for_each(|i| {
                    let (from, to) = (names(i), names(i + 1));
                    if !from.iter().any(|f| regular_entry(f).is_some()) {
                        return Ok(());
                    }
                    for (f, t) in from.iter().zip(&to) {
                        if regular_entry(f).is_some() {
                            std::fs::rename(f, t)?;
                        } else if regular_entry(t).is_some() {
                            std::fs::remove_file(t)?;
                        }
                    }
                    Ok(())
                })
                .and_then(|()| {
                    for t in &names(1)[1..] {
                        if regular_entry(t).is_some() {
                            std::fs::remove_file(t)?;
                        }
                    }
                    std::fs::rename(&base, path_for(&base, 1))
                })
        } else {
            // Unlink rather than truncate: a reader that has the file open keeps its bytes.
            std::fs::remove_file(&base)
        };
        if let Err(e) = result {
            self.report(st, &format!("cannot rotate {}: {e}", base.display()));
            if let Err(e) = self.open_current(st) {
                self.report(st, &format!("cannot open {}: {e}", base.display()));
            }
            return false;
        }
        for seg in st.segments.iter_mut() {
            seg.index += 1;
        }
        st.segments.retain(|s| s.index <= backups && backups > 0);
        if let (Some(algo), Some(old), true) = (st.spec.compress, st.identity, backups > 0) {
            crate::logzip::queue(crate::logzip::Job { channel: self.me.clone(), ident: old, algo });
        }
        st.identity = None;
        st.size = 0;
        if let Err(e) = self.open_current(st) {
            self.report(st, &format!("cannot open {}: {e}", base.display()));
            return false;
        }
        true
    }

    /// Rotates now, whatever the size (`minder rotate`, supervisor #273): as a rotation at
    /// maxbytes would, keeping `backups` files (none: the file is begun anew). Only a regular
    /// file that is the path itself is rotated; a missing file has nothing to rotate.
    pub fn rotate_now(&self) -> Result<(), ClearError> {
        let mut st = self.lock();
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if !meta.is_file() => {
                return Err(ClearError::NotRegular { path: self.path.clone(), what: kind(&meta) });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ClearError::Io(self.path.clone(), e)),
        }
        if st.identity.is_none() {
            if let Err(e) = self.open_current(&mut st) {
                return Err(ClearError::Io(self.path.clone(), e));
            }
        }
        let rotated = self.rotate(&mut st);
        if st.writers == 0 {
            // Nobody writes here now: hold no descriptor (the next writer reopens it).
            st.file = None;
        }
        let why = st.pending.last().cloned();
        self.unlock(st);
        self.grown.notify_waiters();
        match (rotated, why) {
            (true, _) => Ok(()),
            (false, why) => Err(ClearError::Io(
                self.path.clone(),
                std::io::Error::other(why.unwrap_or_else(|| "the files could not be renamed".into())),
            )),
        }
    }

    /// Compresses the backup whose plain file has identity `plain` (the compressing thread's
    /// job, [`crate::logzip`]): compressed beside it without the lock, then renamed to the
    /// backup's name at that moment, under the lock, and the plain file removed.
    pub(crate) fn compress_backup(&self, plain: Ident, algo: Compress) {
        let find = |st: &State| {
            st.segments.iter().find(|s| s.ident == Some(plain) && s.compressed.is_none()).copied()
        };
        let Some(seg) = find(&self.lock()) else { return };
        let path = path_for(&self.path, seg.index);
        let file = match open_in_dir(&path, false) {
            Ok((f, meta, true)) if ident(&meta) == plain => f,
            // Moved, replaced or a link now: not ours to compress.
            _ => return,
        };
        let tmp = crate::logzip::temp_name(&path);
        let _ = std::fs::remove_file(&tmp);
        let made = match crate::logzip::compress_file(&file, &tmp, algo, seg.len) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("{}: not compressed ({e}); it stays as it is", path.display());
                return;
            }
        };
        let mut st = self.lock();
        let renamed = match find(&st) {
            // Where the backup is now (another rotation may have moved it on).
            Some(now) if regular_entry(&path_for(&self.path, now.index)) == Some(plain) => {
                let plain_path = path_for(&self.path, now.index);
                let dest = compressed_path(&self.path, now.index, algo);
                match std::fs::rename(&tmp, &dest).and_then(|()| std::fs::remove_file(&plain_path)) {
                    Ok(()) => {
                        if let Some(s) = st.segments.iter_mut().find(|s| s.id == now.id) {
                            s.compressed = Some(algo);
                            s.ident = Some(made);
                        }
                        true
                    }
                    Err(e) => {
                        st.pending.push(format!(
                            "cannot put the compressed {} in place: {e}",
                            plain_path.display()
                        ));
                        false
                    }
                }
            }
            _ => false,
        };
        self.unlock(st);
        if !renamed {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Reopens the file by its path (SIGUSR2, after logrotate moved it away).
    pub fn reopen(&self) {
        let mut st = self.lock();
        let was_open = st.file.take().is_some();
        let moved = probe(&self.path).map(|m| Some(ident(&m)) != st.identity).unwrap_or(true);
        if moved {
            // Where the old file went is logrotate's business; its bytes are no longer ours.
            st.segments.clear();
            st.identity = None;
        }
        if was_open || moved {
            if let Err(e) = self.open_current(&mut st) {
                self.report(&mut st, &format!("cannot reopen {}: {e}", self.path.display()));
            }
        }
        self.unlock(st);
    }

    /// Empties the log (supervisord's clearLog: the file is removed and begun anew; backups
    /// stay). Only a regular file is removed: a device, a FIFO, a link (`/dev/stdout`) is
    /// left alone, and the error says so.
    pub fn clear(&self) -> Result<(), ClearError> {
        let mut st = self.lock();
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if !meta.is_file() => {
                return Err(ClearError::NotRegular { path: self.path.clone(), what: kind(&meta) });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ClearError::Io(self.path.clone(), e)),
        }
        let was_open = st.file.take().is_some();
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ClearError::Io(self.path.clone(), e)),
        }
        st.segments.retain(|s| s.index != 0);
        st.identity = None;
        st.size = 0;
        let end = st.end;
        if was_open {
            let opened = self.open_current(&mut st);
            self.unlock(st);
            opened.map_err(|e| ClearError::Io(self.path.clone(), e))?;
        } else {
            let id = st.next_id;
            st.next_id += 1;
            st.segments.push_back(Segment {
                id,
                start: end,
                file_start: 0,
                len: 0,
                index: 0,
                ident: None,
                compressed: None,
            });
        }
        Ok(())
    }

    /// Finds `pos`, reusing `held` (a file already open) when it is the segment's file.
    fn locate(&self, pos: u64, held: &Option<Held>) -> Result<Located, ReadError> {
        let st = self.lock();
        if !st.regular {
            return Err(ReadError::NotRegular(self.path.clone()));
        }
        if pos >= st.end {
            return Ok(Located::End);
        }
        let Some(seg) = st.segments.iter().find(|s| s.start + s.len > pos).copied() else {
            return Ok(Located::End);
        };
        if seg.start > pos {
            return Ok(Located::Gap { next: seg.start });
        }
        let held = match held {
            Some(h) if h.seg == seg.id => h.clone(),
            _ => {
                // Opened outside the lock: it may take a while (a slow disk), and writers wait
                // for the lock.
                drop(st);
                let path = match seg.compressed {
                    Some(algo) => compressed_path(&self.path, seg.index, algo),
                    None => path_for(&self.path, seg.index),
                };
                match open_in_dir(&path, false) {
                    Ok((f, meta, _)) if seg.ident.is_none_or(|i| i == ident(&meta)) => {
                        let (file, decoded) = match seg.compressed {
                            Some(algo) => match f.try_clone() {
                                Ok(dup) => (
                                    Arc::new(f),
                                    Some(Arc::new(Mutex::new(crate::logzip::Decoded::new(dup, algo)))),
                                ),
                                Err(e) => return Err(ReadError::Failed(path, e.to_string())),
                            },
                            None => (Arc::new(f), None),
                        };
                        Held {
                            seg: seg.id,
                            file,
                            decoded,
                            ident: Some(ident(&meta)),
                            start: seg.start,
                            file_start: seg.file_start,
                        }
                    }
                    // Removed or replaced behind our back (or rotated while we opened it: the
                    // next look finds it under its new name): skip to what follows only if the
                    // segment is still where it was.
                    _ => {
                        let st = self.lock();
                        return Ok(match st.segments.iter().find(|s| s.id == seg.id) {
                            Some(s) if s.index != seg.index => Located::Gap { next: pos },
                            _ => Located::Gap { next: seg.start + seg.len },
                        });
                    }
                }
            }
        };
        Ok(Located::Data { held, avail: seg.start + seg.len - pos })
    }

    /// How much may be read from `held` at `pos` without looking at the segments again: up to
    /// its segment's end while it is listed; nothing more if it is the current file but no
    /// longer listed (someone changed it, and what it holds now is accounted elsewhere);
    /// everything it has if it was rotated away or unlinked (`None`).
    fn held_limit(&self, held: &Held, pos: u64) -> Option<u64> {
        let st = self.lock();
        match st.segments.iter().find(|s| s.id == held.seg) {
            Some(s) => Some((s.start + s.len).saturating_sub(pos)),
            None if held.ident.is_some() && held.ident == st.identity => Some(0),
            None => None,
        }
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

    /// [`start_for_last_lines`](Self::start_for_last_lines) on the blocking pool: it reads
    /// files, which must not hold up an async worker.
    pub async fn last_lines(self: &Arc<Self>, n: u64) -> Result<LinesStart, ReadError> {
        let this = Arc::clone(self);
        let _permit =
            READERS.acquire().await.map_err(|e| ReadError::Failed(self.path.clone(), e.to_string()))?;
        tokio::task::spawn_blocking(move || this.start_for_last_lines(n))
            .await
            .map_err(|e| ReadError::Failed(self.path.clone(), e.to_string()))?
    }

    /// Where to start reading to get the last `n` lines (a final newline ends the last line,
    /// it does not start an empty one). Reads at most [`LINES_SCAN_LIMIT`] bytes back. Blocks:
    /// call it through [`last_lines`](Self::last_lines) from async code.
    pub fn start_for_last_lines(&self, n: u64) -> Result<LinesStart, ReadError> {
        let end = self.end();
        let oldest = self.oldest();
        if n == 0 {
            return Ok(LinesStart { offset: end, bounded: false });
        }
        let bound = end.saturating_sub(LINES_SCAN_LIMIT).max(oldest);
        let mut newlines = 0u64;
        let mut pos = end;
        let mut held = None;
        let mut buf = vec![0u8; 8192];
        let mut first = true;
        while pos > bound {
            let from = pos.saturating_sub(buf.len() as u64).max(bound);
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
                            return Ok(LinesStart { offset: at + 1, bounded: false });
                        }
                    }
                }
                first = false;
            }
            pos = from;
        }
        Ok(LinesStart { offset: bound, bounded: bound > oldest })
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
            Err(ReadError::NotRegular(self.path.clone()))
        }
    }

    /// The next chunk from `c.pos` on, or `None` at the end. Reads files: runs on the
    /// blocking pool.
    fn next_chunk(&self, c: &mut Cursor) -> Result<Option<Chunk>, ReadError> {
        loop {
            // The file already open may hold more than the segments now say: it may have been
            // rotated away or unlinked since. Read it to its end before looking elsewhere.
            let n = match c.held.as_ref() {
                Some(h) => {
                    let want =
                        self.held_limit(h, c.pos).map_or(c.buf.len(), |l| l.min(c.buf.len() as u64) as usize);
                    h.read_at(&mut c.buf[..want], c.pos)
                }
                None => 0,
            };
            if n > 0 {
                return Ok(Some(c.take(n)));
            }
            match self.locate(c.pos, &c.held)? {
                Located::Data { held: h, avail } => {
                    let want = (avail as usize).min(c.buf.len());
                    let n = h.read_at(&mut c.buf[..want], c.pos);
                    let same = c.held.as_ref().is_some_and(|old| old.seg == h.seg);
                    c.held = Some(h);
                    if n == 0 {
                        if same {
                            // The segment says there are bytes its file no longer has (someone
                            // truncated it): they are lost.
                            c.skipped += avail;
                            c.pos += avail;
                        }
                        continue;
                    }
                    return Ok(Some(c.take(n)));
                }
                Located::Gap { next } => {
                    c.skipped += next - c.pos;
                    c.pos = next;
                }
                Located::End => return Ok(None),
            }
        }
    }

    /// Streams the log from `pos` into `tx` as [`Chunk`]s (each passed through `wrap`); with
    /// `follow`, keeps streaming what is written later until `tx` is closed. Bytes that were
    /// rotated away before they could be read are reported in the next chunk's `skipped`,
    /// never silently. Files are read on the blocking pool, a chunk at a time.
    pub async fn stream<T>(
        self: Arc<Self>,
        pos: u64,
        follow: bool,
        tx: mpsc::Sender<T>,
        wrap: impl Fn(Chunk) -> T,
    ) -> Result<(), ReadError> {
        let end = self.end();
        if pos > end {
            return Err(ReadError::BeyondEnd { offset: pos, end });
        }
        let mut cursor = Some(Cursor { pos, held: None, skipped: 0, buf: vec![0u8; CHUNK] });
        loop {
            // Made before looking, so a write from here on wakes it (notify_waiters reaches
            // every Notified made before the call, polled yet or not).
            let grown = self.grown.notified();
            let this = Arc::clone(&self);
            let mut c = cursor.take().expect("put back after every step");
            // Never closed, so acquiring cannot fail; held for this step only.
            let permit =
                READERS.acquire().await.map_err(|e| ReadError::Failed(self.path.clone(), e.to_string()))?;
            let (c, step) = tokio::task::spawn_blocking(move || {
                let step = this.next_chunk(&mut c);
                (c, step)
            })
            .await
            .map_err(|e| ReadError::Failed(self.path.clone(), e.to_string()))?;
            drop(permit);
            let skipped = c.skipped;
            let at = c.pos;
            cursor = Some(c);
            match step? {
                Some(chunk) => {
                    if tx.send(wrap(chunk)).await.is_err() {
                        return Ok(());
                    }
                }
                None if !follow => {
                    if skipped > 0 {
                        let _ = tx.send(wrap(Chunk { offset: at, data: Vec::new(), skipped })).await;
                    }
                    return Ok(());
                }
                None => {
                    tokio::select! {
                        () = grown => {},
                        () = tx.closed() => return Ok(()),
                    }
                }
            }
        }
    }
}

impl Cursor {
    /// The `n` bytes just read into the buffer, as a chunk; moves past them.
    fn take(&mut self, n: usize) -> Chunk {
        let chunk = Chunk { offset: self.pos, data: self.buf[..n].to_vec(), skipped: self.skipped };
        self.skipped = 0;
        self.pos += n as u64;
        chunk
    }
}

/// Notes for `--check-config`: log files that several outputs name. They share one channel
/// (clear and rotation act for all); where their settings differ, the last one's apply.
pub fn sharing_notes(config: &minder::config::Config) -> Vec<String> {
    use minder::config::LogTarget;
    let mut by_path: BTreeMap<PathBuf, Vec<(String, LogSpec)>> = BTreeMap::new();
    for p in config.processes() {
        let mut outputs = vec![(
            "stdout",
            &p.stdout_logfile,
            p.stdout_logfile_maxbytes,
            p.stdout_logfile_backups,
            p.stdout_logfile_compress,
        )];
        if !p.redirect_stderr {
            outputs.push((
                "stderr",
                &p.stderr_logfile,
                p.stderr_logfile_maxbytes,
                p.stderr_logfile_backups,
                p.stderr_logfile_compress,
            ));
        }
        for (which, target, maxbytes, backups, compress) in outputs {
            if let LogTarget::File(path) = target {
                let spec = LogSpec {
                    path: path.clone(),
                    maxbytes,
                    backups,
                    timestamps: p.log_timestamps,
                    strip_ansi: false,
                    json: p.log_format == minder::config::LogFormat::Json,
                    compress,
                };
                by_path
                    .entry(share_key(path))
                    .or_default()
                    .push((format!("{} ({which})", p.full_name()), spec));
            }
        }
    }
    by_path
        .into_iter()
        .filter(|(_, users)| users.len() > 1)
        .map(|(path, users)| {
            let names: Vec<&str> = users.iter().map(|(n, _)| n.as_str()).collect();
            let mut note = format!(
                "{} is written by {}: they share one log, so clear and rotation act for all of them",
                path.display(),
                names.join(", ")
            );
            let (last, spec) = users.last().expect("more than one");
            if users.iter().any(|(_, s)| !s.same_settings(spec)) {
                note.push_str(&format!(
                    "; their log settings differ, and the last one's apply (maxbytes {}, backups {}, timestamps {} from {last})",
                    spec.maxbytes, spec.backups, spec.timestamps
                ));
            }
            note
        })
        .collect()
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
/// The longest line written as one JSON record (docker's json-file splits at 16 KiB too).
pub const JSON_LINE_MAX: usize = 16 * 1024;

/// Writes the pending partial line, if any, as a record marked partial.
fn flush_partial(st: &mut State, out: &mut Vec<u8>) {
    if let Some((process, stream)) = st.partial_from.take() {
        if !st.partial.is_empty() {
            json_record(out, &st.partial, &process, stream, true);
        }
    }
    st.partial.clear();
}

/// One `log_format = "json"` record: `{"time":…,"process":…,"channel":…,"line":…}` and a
/// newline. Bytes that are not UTF-8 become U+FFFD.
fn json_record(out: &mut Vec<u8>, line: &[u8], process: &str, stream: &str, partial: bool) {
    let time = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let line = String::from_utf8_lossy(line);
    let mut record = serde_json::json!({"time": time, "process": process, "channel": stream, "line": line});
    if partial {
        record["partial"] = serde_json::Value::Bool(true);
    }
    // Serializing a json! value of strings cannot fail.
    if serde_json::to_writer(&mut *out, &record).is_ok() {
        out.push(b'\n');
    }
}

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
        LogSpec {
            path: dir.join("out.log"),
            maxbytes,
            backups,
            timestamps: false,
            strip_ansi: false,
            json: false,
            compress: None,
        }
    }

    #[test]
    fn json_format_writes_one_object_per_line_and_never_half_a_record() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(LogSpec { json: true, strip_ansi: true, ..spec(dir.path(), 0, 0) });
        ch.attach();
        ch.write_output(b"first\nsec", "web", "stdout");
        ch.write_output(b"ond \"quoted\" \x1b[1mbold\x1b[0m \xff\n", "web", "stdout");
        // Another output's line: web's unfinished one is written first, marked partial.
        ch.write_output(b"pending", "web", "stdout");
        ch.write_output(b"err line\n", "web", "stderr");
        ch.write_output(&vec![b'x'; JSON_LINE_MAX + 10], "db", "stdout");
        ch.detach();
        let text = read(dir.path().join("out.log"));
        let records: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect();
        let lines: Vec<(&str, &str, &str, bool)> = records
            .iter()
            .map(|r| {
                (
                    r["process"].as_str().expect("process"),
                    r["channel"].as_str().expect("channel"),
                    r["line"].as_str().expect("line"),
                    r["partial"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        let long = "x".repeat(JSON_LINE_MAX);
        assert_eq!(
            lines,
            [
                ("web", "stdout", "first", false),
                ("web", "stdout", "second \"quoted\" bold \u{fffd}", false),
                ("web", "stdout", "pending", true),
                ("web", "stderr", "err line", false),
                ("db", "stdout", long.as_str(), true),
                ("db", "stdout", "xxxxxxxxxx", true),
            ]
        );
        assert!(records.iter().all(|r| r["time"].as_str().is_some_and(|t| t.contains('T'))));
    }

    #[test]
    fn rotate_now_keeps_backups_and_offsets() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 0, 2));
        ch.attach();
        ch.write(b"one\n");
        ch.rotate_now().expect("rotated");
        ch.write(b"two\n");
        ch.rotate_now().expect("rotated");
        ch.write(b"three\n");
        ch.rotate_now().expect("rotated");
        assert_eq!(read(dir.path().join("out.log")), "");
        assert_eq!(read(dir.path().join("out.log.1")), "three\n");
        assert_eq!(read(dir.path().join("out.log.2")), "two\n");
        assert!(!dir.path().join("out.log.3").exists());
        assert_eq!(ch.end(), 14, "offsets keep counting across rotations");
        ch.detach();
        // Not a regular file: left alone, and said so.
        let ln = LogChannel::new(LogSpec { path: dir.path().join("link"), ..spec(dir.path(), 0, 2) });
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link")).expect("link");
        let e = ln.rotate_now().expect_err("a link is not rotated").to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    /// Reads the whole channel from `from` to its end.
    fn read_all(ch: &LogChannel, from: u64) -> Vec<u8> {
        let mut c = Cursor { pos: from, held: None, skipped: 0, buf: vec![0; CHUNK] };
        let mut out = Vec::new();
        while let Some(chunk) = ch.next_chunk(&mut c).expect("readable") {
            assert_eq!(chunk.skipped, 0, "nothing skipped");
            out.extend_from_slice(&chunk.data);
        }
        out
    }

    #[test]
    fn compressed_backups_keep_every_byte_readable_at_the_same_offsets() {
        for algo in Compress::ALL {
            let dir = tempfile::tempdir().expect("dir");
            let spec = LogSpec { compress: Some(algo), ..spec(dir.path(), 10_000, 3) };
            let ch = LogChannel::new(spec.clone());
            ch.attach();
            let mut all = Vec::new();
            for i in 0..5000 {
                let line = format!("line {i:06}\n");
                ch.write(line.as_bytes());
                all.extend_from_slice(line.as_bytes());
            }
            ch.detach();
            // Backups .1 … .3 become compressed in the background; poll until they are.
            let z = |i: u32| compressed_path(&dir.path().join("out.log"), i, algo);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !(1..=3).all(|i| z(i).exists() && !path_for(&dir.path().join("out.log"), i).exists()) {
                assert!(std::time::Instant::now() < deadline, "{algo:?}: backups not compressed");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // What is on disk (3 backups and the current file) reads back exactly, from the
            // same offsets, with this channel and with a new one (minderd restarted).
            let oldest = ch.oldest();
            assert_eq!(read_all(&ch, oldest), &all[oldest as usize..], "{algo:?}");
            let again = LogChannel::new(spec);
            let kept = all.len() as u64 - oldest;
            assert_eq!(again.end(), kept, "{algo:?}: a restart counts the decoded bytes");
            assert_eq!(read_all(&again, 0), &all[oldest as usize..], "{algo:?}");
            // tail -n reaches into a compressed backup.
            let from = again.start_for_last_lines(2000).expect("lines").offset;
            let text = read_all(&again, from);
            assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), 2000, "{algo:?}");
            assert!(all.ends_with(&text));
            // No temporary file is left behind.
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .expect("dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().all(|n| !n.contains("compressing")), "{names:?}");
        }
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
        assert_eq!(ch.start_for_last_lines(1).expect("ok").offset, 14);
        assert_eq!(ch.start_for_last_lines(2).expect("ok").offset, 8);
        assert_eq!(ch.start_for_last_lines(4).expect("ok").offset, 0);
        assert_eq!(ch.start_for_last_lines(10).expect("ok").offset, 0);
        ch.write(b"partial");
        assert_eq!(ch.start_for_last_lines(1).expect("ok").offset, 19);
        assert_eq!(ch.start_for_last_lines(2).expect("ok").offset, 14);
    }

    #[test]
    fn existing_files_count_as_the_start_of_the_stream() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("out.log.1"), "old\n").expect("write");
        std::fs::write(dir.path().join("out.log"), "new\n").expect("write");
        let ch = LogChannel::new(spec(dir.path(), 100, 3));
        assert_eq!(ch.end(), 8);
        assert_eq!(ch.start_for_last_lines(2).expect("ok").offset, 0);
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
        assert!(ch.clear().is_ok());
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

    /// A writer that takes `room` bytes in all, then fails as a full disk does.
    struct FillsUp {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for FillsUp {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room).min(7);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_the_disk_takes_in_part_is_counted_for_that_part() {
        let mut w = FillsUp { room: 20, got: Vec::new() };
        let (done, err) = append(&mut w, b"0123456789abcdefghijKLMNOP");
        assert_eq!(done, 20, "what went into the file before the disk filled up");
        assert_eq!(w.got, b"0123456789abcdefghij");
        assert_eq!(err.and_then(|e| e.raw_os_error()), Some(libc::ENOSPC));
        let mut w = FillsUp { room: 100, got: Vec::new() };
        assert_eq!(append(&mut w, b"short").0, 5);
    }

    #[test]
    fn the_backward_scan_is_bounded() {
        let dir = tempfile::tempdir().expect("dir");
        // 3 MiB without a newline (sparse, so cheap), then the channel counts it as offsets.
        let f = File::create(dir.path().join("out.log")).expect("create");
        f.set_len(3 << 20).expect("set_len");
        let ch = LogChannel::new(spec(dir.path(), 0, 0));
        let started = std::time::Instant::now();
        let found = ch.start_for_last_lines(5).expect("ok");
        assert_eq!(found, LinesStart { offset: (3 << 20) - LINES_SCAN_LIMIT, bounded: true });
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Lines within the bound are found as before.
        ch.write(b"one\ntwo\n");
        let found = ch.start_for_last_lines(1).expect("ok");
        assert_eq!(found, LinesStart { offset: (3 << 20) + 4, bounded: false });
        // A log shorter than the bound is never "bounded".
        let small = LogChannel::new(spec(&dir.path().join("none"), 0, 0));
        assert_eq!(small.start_for_last_lines(3).expect("ok"), LinesStart { offset: 0, bounded: false });
    }

    #[test]
    fn clear_leaves_a_link_to_a_device_alone_and_says_so() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("out.log");
        std::os::unix::fs::symlink("/dev/null", &log).expect("symlink");
        let ch = LogChannel::new(spec(dir.path(), 0, 0));
        ch.write(b"into /dev/null\n");
        let err = ch.clear().expect_err("not a regular file");
        assert!(err.to_string().contains("is a symbolic link, not a regular file"), "{err}");
        assert!(std::fs::symlink_metadata(&log).expect("still there").file_type().is_symlink());
        assert!(std::fs::metadata("/dev/null").expect("dev null").file_type().is_char_device());
        // Rotation does not touch it either.
        let ch = LogChannel::new(spec(dir.path(), 4, 2));
        ch.write(b"0123456789");
        assert!(std::fs::symlink_metadata(&log).expect("there").file_type().is_symlink());
        assert!(!dir.path().join("out.log.1").exists());
    }

    /// A directory anyone can write (0777, not sticky), as a program's own log directory is
    /// to its user.
    fn open_dir_for_all() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        dir
    }

    #[test]
    fn in_a_directory_others_can_write_links_and_fifos_are_refused() {
        let secret_dir = tempfile::tempdir().expect("dir");
        let secret = secret_dir.path().join("secret");
        std::fs::write(&secret, "root only\n").expect("write");
        let dir = open_dir_for_all();
        let log = dir.path().join("out.log");
        // A symbolic link to someone else's file.
        std::os::unix::fs::symlink(&secret, &log).expect("symlink");
        let err = open_in_dir(&log, true).expect_err("refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let ch = LogChannel::new(spec(dir.path(), 0, 0));
        ch.write(b"child output\n");
        assert_eq!(std::fs::read_to_string(&secret).expect("read"), "root only\n");
        // A hard link to it.
        std::fs::remove_file(&log).expect("rm");
        std::fs::hard_link(&secret, &log).expect("link");
        let err = open_in_dir(&log, true).expect_err("refused");
        assert!(err.to_string().contains("hard links"), "{err}");
        // A FIFO.
        std::fs::remove_file(&log).expect("rm");
        nix::unistd::mkfifo(&log, Mode::from_bits_truncate(0o666)).expect("mkfifo");
        let err = open_in_dir(&log, true).expect_err("refused");
        assert!(err.to_string().contains("FIFO"), "{err}");
        // A plain file is fine, and so is a link in a directory only root can change.
        std::fs::remove_file(&log).expect("rm");
        assert!(open_in_dir(&log, true).is_ok());
        let trusted = secret_dir.path().join("link.log");
        std::os::unix::fs::symlink("/dev/null", &trusted).expect("symlink");
        let (_, meta, direct) = open_in_dir(&trusted, true).expect("followed");
        assert!(meta.file_type().is_char_device() && !direct);
    }

    #[tokio::test]
    async fn a_backup_swapped_for_a_link_is_not_read() {
        let secret_dir = tempfile::tempdir().expect("dir");
        let secret = secret_dir.path().join("secret");
        std::fs::write(&secret, "0123456789").expect("write");
        let dir = open_dir_for_all();
        let ch = LogChannel::new(spec(dir.path(), 10, 2));
        ch.write(b"abcdefghijKLM");
        let backup = dir.path().join("out.log.1");
        std::fs::remove_file(&backup).expect("rm");
        std::os::unix::fs::symlink(&secret, &backup).expect("symlink");
        let (data, skipped) = collect(&ch, 0).await;
        assert_eq!((data.as_slice(), skipped), (&b"KLM"[..], 10));
    }

    #[test]
    fn outputs_naming_one_file_share_its_channel() {
        let dir = tempfile::tempdir().expect("dir");
        let a = LogChannel::shared(spec(dir.path(), 0, 0), "a");
        let mut other = spec(dir.path(), 0, 0);
        other.path = dir.path().join(".").join("out.log");
        let b = LogChannel::shared(other, "b");
        assert!(Arc::ptr_eq(&a, &b), "the same file, spelled differently, is one channel");
        a.attach();
        b.attach();
        a.write(b"from a\n");
        b.write(b"from b\n");
        a.clear().expect("cleared");
        // b writes into the new file, not into the one cleared away.
        b.write(b"b again\n");
        assert_eq!(read(dir.path().join("out.log")), "b again\n");
        // a's output ending does not close the file b still writes.
        a.detach();
        assert!(b.lock().file.is_some());
        b.detach();
        assert!(b.lock().file.is_none());
        // The last configured settings apply to every sharer.
        let c = LogChannel::shared(spec(dir.path(), 5, 1), "c");
        assert!(Arc::ptr_eq(&a, &c));
        assert_eq!((a.spec().maxbytes, a.spec().backups), (5, 1));
        drop((a, b, c));
        // Once nobody uses it, a new channel is made.
        let d = LogChannel::shared(spec(dir.path(), 0, 0), "d");
        assert_eq!(d.spec().maxbytes, 0);
    }

    #[test]
    fn attach_creates_the_file_before_any_output() {
        let dir = tempfile::tempdir().expect("dir");
        let ch = LogChannel::new(spec(dir.path(), 0, 0));
        assert!(!dir.path().join("out.log").exists());
        ch.attach();
        assert!(dir.path().join("out.log").exists());
    }
}
