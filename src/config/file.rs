//! Reading one configuration file (the main file, an include, a tokens file) without letting
//! the file decide how long that takes or how much memory it costs.
//!
//! A configuration is read at start and again on every reread, update and reload. A named
//! pipe in its place would block `open(2)` and then `read(2)` until some writer came, and a
//! device such as `/dev/zero` would be read forever into memory. So a file is opened with
//! `O_NONBLOCK` (an open that cannot wait for a writer), checked with `fstat` on the open
//! descriptor (no window for the path to be swapped after the check), refused unless it is
//! a regular file, and read only up to [`MAX_BYTES`].

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The largest configuration file minder reads: 16 MiB, far above any real configuration
/// (supervisord.conf files are a few KiB) and small enough that a mistake cannot exhaust
/// memory.
pub const MAX_BYTES: u64 = 16 << 20;

/// Why a file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file is not something minder reads as a configuration: not a regular file, or
    /// larger than [`MAX_BYTES`]. Always an error, even where an unreadable file is skipped.
    Refused(String),
    /// The operating system's error (no such file, permission denied, ...).
    Io(std::io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Refused(why) => f.write_str(why),
            ReadError::Io(e) => write!(f, "cannot read: {e}"),
        }
    }
}

/// Reads a whole configuration file, refusing anything but a regular file of at most
/// [`MAX_BYTES`].
pub fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    let mut file = open_regular(path)?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file that grew past the limit after fstat.
    (&mut file).take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path) -> Result<String, ReadError> {
    String::from_utf8(read(path)?).map_err(|e| {
        ReadError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8: {e}")))
    })
}

fn open_regular(path: &Path) -> Result<File, ReadError> {
    // O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer
    // (it has no effect on reading a regular file). O_NOCTTY: a terminal device named here
    // must not become minderd's controlling terminal before it is refused.
    let flags = nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY;
    let file = OpenOptions::new().read(true).custom_flags(flags.bits()).open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    };
    if let Some(what) = what {
        return Err(ReadError::Refused(format!(
            "is {what}, not a regular file; minder reads its configuration only from regular files"
        )));
    }
    if meta.len() > MAX_BYTES {
        return Err(too_large());
    }
    Ok(file)
}

fn too_large() -> ReadError {
    ReadError::Refused(format!(
        "is larger than {} MiB, the most minder reads as a configuration file",
        MAX_BYTES >> 20
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU)?;
        // Without O_NONBLOCK this would wait forever for a writer.
        let err = read(&fifo).expect_err("a FIFO is refused");
        assert!(err.to_string().contains("named pipe"), "{err}");
        assert!(matches!(read(dir.path()), Err(ReadError::Refused(m)) if m.contains("directory")));
        assert!(
            matches!(read(Path::new("/dev/null")), Err(ReadError::Refused(m)) if m.contains("character device"))
        );
        assert!(matches!(read(&dir.path().join("missing")), Err(ReadError::Io(_))));
        Ok(())
    }

    #[test]
    fn caps_the_size() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let big = dir.path().join("big.conf");
        let f = File::create(&big)?;
        f.set_len(MAX_BYTES + 1)?;
        assert!(matches!(read(&big), Err(ReadError::Refused(m)) if m.contains("16 MiB")));
        f.set_len(MAX_BYTES)?;
        assert_eq!(read(&big).map(|b| b.len() as u64).ok(), Some(MAX_BYTES));
        Ok(())
    }
}
