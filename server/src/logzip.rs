//! Compressed log backups (`stdout_logfile_compress = "gzip"|"zstd"`, Supervisor #322).
//!
//! A rotation renames the file to `NAME.1` at once, under the channel's lock, as it always
//! did; compressing it is queued to one background thread ([`queue`]), so neither the child
//! nor minderd waits for it, and only one backup is compressed at a time. The job compresses
//! `NAME.k` into a temporary file beside it, then — under the channel's lock again, where the
//! backups may meanwhile have moved on to `NAME.k+1` — renames the result to the backup's
//! current name plus `.gz`/`.zst` and removes the plain one ([`crate::logs::LogChannel`]
//! does that part, as it owns the names). A reader that already had the plain file open keeps
//! reading it; the next one opens the compressed file.
//!
//! Reading a compressed backup ([`Decoded`]) decodes from its start, keeping the last
//! [`WINDOW`] bytes decoded: readers go forward, and the backward scan of `tail -n` stays
//! within one window, so a backup is decoded at most once per reader. Offsets are unchanged:
//! a compressed backup holds the same logical bytes.
//!
//! Its uncompressed length, needed for offsets when minderd starts, is in the file: gzip's
//! trailer (ISIZE, modulo 4 GiB: backups are at most `maxbytes`) and zstd's frame header (the
//! content size, always written here).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock, Weak};

use crate::logs::LogChannel;

/// How a channel's backups are compressed (the configuration's type).
pub use minder::config::LogCompress as Compress;

/// How much decoded text a reader of a compressed backup keeps: the backward scan of `tail -n`
/// (at most `LINES_SCAN_LIMIT`) plus one chunk.
pub const WINDOW: usize = crate::logs::LINES_SCAN_LIMIT as usize + crate::logs::CHUNK;

/// Backups waiting to be compressed; beyond this, a backup stays plain (and it is logged).
const QUEUE: usize = 256;

/// A backup to compress: the channel, and the identity of the plain file (it may be renamed
/// meanwhile; the channel finds it again by its identity).
#[derive(Debug)]
pub struct Job {
    pub channel: Weak<LogChannel>,
    pub ident: (u64, u64),
    pub algo: Compress,
}

/// Queues `job` for the compressing thread (started on first use).
pub fn queue(job: Job) {
    static SENDER: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();
    let sender = SENDER.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let spawned = std::thread::Builder::new().name("minderd-logzip".into()).spawn(move || {
            for job in rx {
                if let Some(ch) = job.channel.upgrade() {
                    ch.compress_backup(job.ident, job.algo);
                }
            }
        });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::error!("cannot start the thread that compresses log backups ({e}): they stay plain");
                None
            }
        }
    });
    let Some(tx) = sender else { return };
    if let Err(TrySendError::Full(job)) = tx.try_send(job) {
        if let Some(ch) = job.channel.upgrade() {
            tracing::warn!(
                "{}: {QUEUE} log backups are waiting to be compressed already; this one stays plain",
                ch.path().display()
            );
        }
    }
}

/// Compresses `src` (open, read from its start) into a new file `tmp` (created exclusively, not
/// following a link, with `src`'s permissions); returns the new file's identity.
pub fn compress_file(src: &File, tmp: &Path, algo: Compress, len: u64) -> std::io::Result<(u64, u64)> {
    let mode = src.metadata()?.permissions().mode() & 0o777;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(mode)
        .open(tmp)?;
    let done = (|| {
        let mut reader = PRead { file: src, pos: 0 };
        let buffered = std::io::BufWriter::with_capacity(crate::logs::CHUNK, &out);
        match algo {
            Compress::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(buffered, flate2::Compression::default());
                std::io::copy(&mut reader, &mut enc)?;
                enc.finish()?.flush()?;
            }
            Compress::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(buffered, 3)?;
                enc.include_contentsize(true)?;
                enc.set_pledged_src_size(Some(len))?;
                std::io::copy(&mut reader, &mut enc)?;
                enc.finish()?.flush()?;
            }
        }
        out_ident(&out)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    done
}

fn out_ident(f: &File) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// The uncompressed length of a compressed backup, from its trailer or header.
pub fn decoded_len(file: &File, algo: Compress) -> Option<u64> {
    let size = file.metadata().ok()?.len();
    match algo {
        Compress::Gzip => {
            let mut isize = [0u8; 4];
            file.read_exact_at(&mut isize, size.checked_sub(4)?).ok()?;
            Some(u64::from(u32::from_le_bytes(isize)))
        }
        Compress::Zstd => {
            let mut head = [0u8; 18];
            let n = file.read_at(&mut head, 0).ok()?;
            match zstd::zstd_safe::get_frame_content_size(&head[..n]) {
                Ok(Some(len)) => Some(len),
                _ => None,
            }
        }
    }
}

/// A temporary name for compressing `plain`, beside it (hidden, with minderd's pid).
pub fn temp_name(plain: &Path) -> PathBuf {
    let name = plain.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    plain.with_file_name(format!(".{name}.compressing-{}", std::process::id()))
}

/// Reads a file with `pread`, from its start, whatever else shares its descriptor.
struct PRead<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for PRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// An owned [`PRead`], for the decoders (which must own their reader).
struct OwnedPRead {
    file: Arc<File>,
    pos: u64,
}

impl Read for OwnedPRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A reader's view of one compressed backup: decoded forward, the last [`WINDOW`] bytes kept.
pub struct Decoded {
    file: Arc<File>,
    algo: Compress,
    reader: Option<Box<dyn Read + Send>>,
    /// Decoded bytes so far; `window` holds the last of them, from `pos - window.len()`.
    pos: u64,
    window: Vec<u8>,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoded").field("algo", &self.algo).field("pos", &self.pos).finish()
    }
}

impl Decoded {
    pub fn new(file: File, algo: Compress) -> Decoded {
        Decoded { file: Arc::new(file), algo, reader: None, pos: 0, window: Vec::new() }
    }

    fn restart(&mut self) -> std::io::Result<()> {
        let src = std::io::BufReader::with_capacity(
            crate::logs::CHUNK,
            OwnedPRead { file: Arc::clone(&self.file), pos: 0 },
        );
        self.reader = Some(match self.algo {
            Compress::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(src)),
            Compress::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(src)?),
        });
        self.pos = 0;
        self.window.clear();
        Ok(())
    }

    /// Reads decoded bytes at `off` into `buf`; 0 at the end (or on a damaged file).
    pub fn read_at(&mut self, buf: &mut [u8], off: u64) -> usize {
        let start = self.pos - self.window.len() as u64;
        if (off < start || self.reader.is_none()) && self.restart().is_err() {
            return 0;
        }
        let mut chunk = vec![0u8; crate::logs::CHUNK];
        while self.pos <= off {
            let Some(reader) = self.reader.as_mut() else { return 0 };
            let n = match reader.read(&mut chunk) {
                Ok(0) | Err(_) => return 0,
                Ok(n) => n,
            };
            self.window.extend_from_slice(&chunk[..n]);
            self.pos += n as u64;
            if self.window.len() > WINDOW + crate::logs::CHUNK {
                let drop = self.window.len() - WINDOW;
                self.window.drain(..drop);
            }
        }
        let start = self.pos - self.window.len() as u64;
        let i = (off - start) as usize;
        let n = buf.len().min(self.window.len() - i);
        buf[..n].copy_from_slice(&self.window[i..i + n]);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_round_trip_and_tell_their_length_and_read_backwards() {
        let dir = tempfile::tempdir().expect("dir");
        let text: Vec<u8> = (0..200_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let plain = dir.path().join("out.log.1");
        std::fs::write(&plain, &text).expect("write");
        for algo in Compress::ALL {
            let src = File::open(&plain).expect("open");
            let tmp = temp_name(&plain);
            compress_file(&src, &tmp, algo, text.len() as u64).expect("compressed");
            let z = File::open(&tmp).expect("open");
            assert!(z.metadata().expect("meta").len() < text.len() as u64 / 3, "{algo:?} compresses");
            assert_eq!(decoded_len(&z, algo), Some(text.len() as u64), "{algo:?}");
            let mut d = Decoded::new(z, algo);
            // Forward, then backwards within the window (tail -n), then from the start again.
            let mut buf = vec![0u8; 1000];
            for off in [0u64, 5000, 1_500_000, 1_499_000, 1_000_000, 10, text.len() as u64 - 3] {
                let n = d.read_at(&mut buf, off);
                let want = &text[off as usize..(off as usize + 1000).min(text.len())];
                assert_eq!(&buf[..n], want, "{algo:?} at {off}");
            }
            assert_eq!(d.read_at(&mut buf, text.len() as u64), 0, "the end");
            std::fs::remove_file(&tmp).expect("rm");
        }
    }
}
