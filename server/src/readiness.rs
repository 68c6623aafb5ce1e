//! systemd's notify protocol for children (`ready = "notify"`): each such process gets a
//! datagram socket of its own, named to it in `NOTIFY_SOCKET`, on which it sends `READY=1`,
//! `STATUS=…`, `STOPPING=1`, `WATCHDOG=1` and `MAINPID=…` (sd_notify(3)).
//!
//! (minderd's own notifications *to* systemd are `notify.rs`: a different job.)
//!
//! The sockets live in one directory minderd makes at first use (mode 0711: reachable, not
//! listable). A socket is owned by the program's user (mode 0600), so another user's
//! programs cannot write to it; and every datagram carries its sender's credentials
//! (SO_PASSCRED), so a message counts only if it comes from the process minderd spawned,
//! from its process group (a shell and what it runs), or from the pid it named in MAINPID.
//! One program can therefore never mark another ready. Reads are bounded: a datagram of more
//! than [`MAX_DATAGRAM`] bytes is dropped, and a STATUS is cut at [`MAX_STATUS`] characters.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::Interest;
use tokio::net::UnixDatagram;

/// The largest datagram read; systemd's own limit is about this size too.
pub const MAX_DATAGRAM: usize = 4096;
/// The longest STATUS kept, in characters.
pub const MAX_STATUS: usize = 200;

/// One notification, as sd_notify sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ready,
    Status(String),
    Stopping,
    Watchdog,
    MainPid(u32),
}

/// The notifications in one datagram (newline-separated `KEY=VALUE`; unknown keys ignored,
/// as systemd ignores them).
pub fn parse(datagram: &[u8]) -> Vec<Message> {
    let text = String::from_utf8_lossy(datagram);
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        match key {
            "READY" if value == "1" => out.push(Message::Ready),
            "STOPPING" if value == "1" => out.push(Message::Stopping),
            "WATCHDOG" if value == "1" => out.push(Message::Watchdog),
            "STATUS" => {
                let status: String = value.chars().filter(|c| !c.is_control()).take(MAX_STATUS).collect();
                out.push(Message::Status(status));
            }
            "MAINPID" => {
                if let Some(pid) = value.trim().parse::<u32>().ok().filter(|p| *p > 1) {
                    out.push(Message::MainPid(pid));
                }
            }
            _ => {}
        }
    }
    out
}

/// The directory of every process's notify socket, made on first use.
pub fn make_dir() -> io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("minderd-notify-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
    Ok(dir)
}

/// A process's notify socket; its file is removed when it is dropped.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds `dir/<name>.sock`, owned by `uid` (the program's user) when given, mode 0600,
    /// passing its senders' credentials.
    pub fn bind(dir: &Path, name: &str, uid: Option<u32>) -> io::Result<NotifySocket> {
        let file = format!("{}.sock", name.replace([':', '/'], "_"));
        let path = dir.join(file);
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        if let Some(uid) = uid {
            std::os::unix::fs::chown(&path, Some(uid), None)?;
        }
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::PassCred, &true)
            .map_err(io::Error::from)?;
        Ok(NotifySocket { socket, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram and its sender's pid (`None` if the kernel gave no credentials).
    /// A datagram longer than [`MAX_DATAGRAM`] comes back empty (truncated: not trusted).
    pub async fn recv(&self) -> io::Result<(Option<u32>, Vec<u8>)> {
        self.socket
            .async_io(Interest::READABLE, || {
                use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
                let mut buf = vec![0u8; MAX_DATAGRAM];
                let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
                let (len, pid, truncated) = {
                    let mut iov = [io::IoSliceMut::new(&mut buf)];
                    let msg = recvmsg::<UnixAddr>(
                        self.socket.as_raw_fd(),
                        &mut iov,
                        Some(&mut cmsg),
                        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
                    )
                    .map_err(io::Error::from)?;
                    let mut pid = None;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmCredentials(cred) = c {
                                pid = u32::try_from(cred.pid()).ok();
                            }
                        }
                    }
                    (msg.bytes, pid, msg.flags.contains(MsgFlags::MSG_TRUNC))
                };
                buf.truncate(if truncated { 0 } else { len });
                Ok((pid, buf))
            })
            .await
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a datagram from `sender` speaks for the child `child`: the child itself, one of
/// its process group (minderd makes each child a group leader), or the MAINPID it named.
pub fn trusted(sender: Option<u32>, child: u32, main_pid: Option<u32>) -> bool {
    let Some(sender) = sender else { return false };
    if sender == child || Some(sender) == main_pid {
        return true;
    }
    let Ok(pid) = i32::try_from(sender) else { return false };
    nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).is_ok_and(|g| g.as_raw() as u32 == child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_sd_notify_sends() {
        assert_eq!(
            parse(b"READY=1\nSTATUS=Serving 3 clients\nMAINPID=4242\nWATCHDOG=1\nSTOPPING=1\nX_OTHER=2\nREADY=0"),
            vec![
                Message::Ready,
                Message::Status("Serving 3 clients".into()),
                Message::MainPid(4242),
                Message::Watchdog,
                Message::Stopping
            ]
        );
        let long = format!("STATUS={}\x1b[31m", "x".repeat(1000));
        assert_eq!(parse(long.as_bytes()), vec![Message::Status("x".repeat(MAX_STATUS))]);
        assert!(parse(b"MAINPID=1\nMAINPID=abc").is_empty(), "pid 1 and garbage are refused");
    }

    #[tokio::test]
    async fn credentials_tell_who_sent_it() -> anyhow::Result<()> {
        let dir = make_dir()?;
        let sock = NotifySocket::bind(dir.path(), "g:web", None)?;
        assert!(sock.path().ends_with("g_web.sock"));
        let client = std::os::unix::net::UnixDatagram::unbound()?;
        client.send_to(b"READY=1", sock.path())?;
        let (pid, data) = sock.recv().await?;
        assert_eq!(pid, Some(std::process::id()));
        assert_eq!(data, b"READY=1");
        // Too long: dropped whole, not read in part.
        client.send_to(&vec![b'x'; MAX_DATAGRAM + 10], sock.path())?;
        let (_, data) = sock.recv().await?;
        assert!(data.is_empty());
        // Us, as the "child": trusted; a pid of another group (pid 1's): not.
        let me = std::process::id();
        assert!(trusted(Some(me), me, None));
        assert!(!trusted(Some(me), 1, None));
        assert!(trusted(Some(me), 1, Some(me)), "the MAINPID it named");
        assert!(!trusted(None, me, None));
        let path = sock.path().to_path_buf();
        drop(sock);
        assert!(!path.exists(), "the socket file goes with it");
        Ok(())
    }
}
