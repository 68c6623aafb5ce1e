//! Binding the addresses minderd serves on.
//!
//! A unix socket is bound under a temporary name, given its mode, then renamed into place, so
//! it is never reachable with the wrong permissions (supervisord does the same). An existing
//! socket is probed: one nobody answers on is stale and replaced; a live one means another
//! daemon is running, which is an error (except for the default socket when none was
//! configured: see [`bind_all`]); anything that is not a socket is never touched.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use minder::address::{default_socket, Address};
use tokio::net::{TcpListener, UnixListener};

/// A bound listener, ready to serve.
#[derive(Debug)]
pub enum Listener {
    Unix {
        listener: UnixListener,
        socket: SocketFile,
    },
    /// `address` is where clients reach it (with the port it got when `configured` asked for
    /// port 0).
    Tcp {
        listener: TcpListener,
        address: Address,
        configured: Address,
    },
}

impl Listener {
    /// The address clients reach this listener at.
    pub fn address(&self) -> Address {
        match self {
            Listener::Unix { socket, .. } => Address::Unix(socket.path.clone()),
            Listener::Tcp { address, .. } => address.clone(),
        }
    }
}

/// A socket file minderd created; removed again when dropped, if it is still the same file.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev_ino: (u64, u64),
}

impl SocketFile {
    /// The socket file an earlier image of this minderd created (an upgrade).
    pub fn adopt(path: PathBuf, dev_ino: (u64, u64)) -> SocketFile {
        SocketFile { path, dev_ino }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dev_ino(&self) -> (u64, u64) {
        self.dev_ino
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.dev_ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Listener {
    /// The listener an earlier image of this minderd handed over (an upgrade), from its
    /// descriptor (already listening, with its backlog of waiting clients).
    pub fn adopt(saved: crate::upgrade::ListenerFd) -> io::Result<Listener> {
        use crate::upgrade::{take_fd, ListenerFd};
        match saved {
            ListenerFd::Unix { fd, path, dev, ino } => {
                let std_listener = std::os::unix::net::UnixListener::from(take_fd(fd)?);
                std_listener.set_nonblocking(true)?;
                Ok(Listener::Unix {
                    listener: UnixListener::from_std(std_listener)?,
                    socket: SocketFile::adopt(path, (dev, ino)),
                })
            }
            ListenerFd::Tcp { fd, address, configured } => {
                let std_listener = std::net::TcpListener::from(take_fd(fd)?);
                std_listener.set_nonblocking(true)?;
                let parse = |a: &str| a.parse::<Address>().map_err(io::Error::other);
                Ok(Listener::Tcp {
                    listener: TcpListener::from_std(std_listener)?,
                    address: parse(&address)?,
                    configured: parse(&configured)?,
                })
            }
        }
    }

    /// What the next image needs to serve this listener: its socket, kept open across exec.
    pub fn for_handover(&self) -> io::Result<(std::os::fd::OwnedFd, crate::upgrade::ListenerFd)> {
        use crate::upgrade::{inheritable, ListenerFd};
        Ok(match self {
            Listener::Unix { listener, socket } => {
                let fd = inheritable(listener)?;
                let (dev, ino) = socket.dev_ino;
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                (fd, ListenerFd::Unix { fd: raw, path: socket.path.clone(), dev, ino })
            }
            Listener::Tcp { listener, address, configured } => {
                let fd = inheritable(listener)?;
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                (
                    fd,
                    ListenerFd::Tcp {
                        fd: raw,
                        address: address.to_string(),
                        configured: configured.to_string(),
                    },
                )
            }
        })
    }
}

/// Why an address could not be bound; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "another minderd is already listening at {0} (stop it first, or choose another socket with --listen)"
    )]
    InUse(Address),
    #[error(
        "{0} exists and is not a socket; minderd will not replace it (remove it, or choose another path)"
    )]
    NotASocket(PathBuf),
    #[error("cannot listen at {address}: {source}")]
    Io { address: Address, source: io::Error },
}

/// Binds every address (the default socket when there are none). Unix sockets get `mode`.
///
/// With no address configured, another live minderd on the default socket does not stop this
/// one from starting (supervisord never fails for want of a server section): it listens on a
/// socket of its own next to the default one, `minder-<pid>.sock`, and warns where. An
/// address that was asked for and is in use stays an error.
pub async fn bind_all(addresses: &[Address], mode: u32) -> Result<Vec<Listener>, BindError> {
    if addresses.is_empty() {
        let default = Address::Unix(default_socket());
        return match bind(&default, mode).await {
            Err(BindError::InUse(_)) => {
                let fallback = Address::Unix(fallback_socket(&default_socket(), std::process::id()));
                let listener = bind(&fallback, mode).await?;
                tracing::warn!(
                    "another minderd is already listening at the default socket {default}; this one \
                     listens at {fallback} instead (minder -s {fallback})"
                );
                Ok(vec![listener])
            }
            other => other.map(|l| vec![l]),
        };
    }
    let mut out = Vec::new();
    for a in addresses {
        out.push(bind(a, mode).await?);
    }
    Ok(out)
}

/// The socket used when the default one is taken: in the same directory, named for the pid.
fn fallback_socket(default: &Path, pid: u32) -> PathBuf {
    default.with_file_name(format!("minder-{pid}.sock"))
}

pub async fn bind(address: &Address, mode: u32) -> Result<Listener, BindError> {
    let io_err = |source| BindError::Io { address: address.clone(), source };
    match address {
        Address::Tcp(hostport) => {
            let listener = TcpListener::bind(hostport.as_str()).await.map_err(io_err)?;
            // Report the real port when bound to port 0.
            let local = listener.local_addr().map_err(io_err)?;
            let reached = match hostport.rsplit_once(':') {
                Some((host, "0")) => Address::Tcp(format!("{host}:{}", local.port())),
                _ => address.clone(),
            };
            Ok(Listener::Tcp { listener, address: reached, configured: address.clone() })
        }
        Address::Unix(path) => bind_unix(path, mode).map_err(|e| match e {
            UnixBind::InUse => BindError::InUse(address.clone()),
            UnixBind::NotASocket => BindError::NotASocket(path.clone()),
            UnixBind::Io(e) => io_err(e),
        }),
    }
}

enum UnixBind {
    InUse,
    NotASocket,
    Io(io::Error),
}

impl From<io::Error> for UnixBind {
    fn from(e: io::Error) -> Self {
        UnixBind::Io(e)
    }
}

fn bind_unix(path: &Path, mode: u32) -> Result<Listener, UnixBind> {
    if let Some(dir) = path.parent() {
        if !dir.exists() && path == default_socket() {
            // The per-user default directory under /tmp: create it private.
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(UnixBind::InUse),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
            Err(e) => return Err(UnixBind::Io(e)),
        },
        Ok(_) => return Err(UnixBind::NotASocket),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(UnixBind::Io(e)),
    }
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let std_listener = std::os::unix::net::UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    let meta = std::fs::symlink_metadata(path)?;
    std_listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std_listener)?;
    Ok(Listener::Unix {
        listener,
        socket: SocketFile { path: path.to_path_buf(), dev_ino: (meta.dev(), meta.ino()) },
    })
}

/// Binds a FastCGI program's socket ([fcgi-program:x] socket=): a TCP address, or a unix
/// socket given its mode and owner. Every process of the program gets it as its stdin.
pub fn bind_fcgi(sock: &minder::config::FcgiSocket) -> Result<std::os::fd::OwnedFd, String> {
    use std::os::fd::OwnedFd;
    let what = |e: &dyn std::fmt::Display| format!("could not create FastCGI socket {}: {e}", sock.address);
    let fd: OwnedFd = match &sock.address {
        Address::Tcp(hostport) => {
            std::net::TcpListener::bind(hostport.as_str()).map_err(|e| what(&e))?.into()
        }
        Address::Unix(path) => {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(|e| what(&e))?,
                Ok(_) => return Err(what(&"the path exists and is not a socket")),
                Err(_) => {}
            }
            let l = std::os::unix::net::UnixListener::bind(path).map_err(|e| what(&e))?;
            if let Some(mode) = sock.mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| what(&e))?;
            }
            if let Some(owner) = &sock.owner {
                nix::unistd::chown(
                    path,
                    Some(nix::unistd::Uid::from_raw(owner.uid)),
                    owner.gid.map(nix::unistd::Gid::from_raw),
                )
                .map_err(|e| what(&e))?;
            }
            l.into()
        }
    };
    if let Some(backlog) = sock.backlog {
        let backlog =
            nix::sys::socket::Backlog::new(backlog.min(i32::MAX as u32) as i32).map_err(|e| what(&e))?;
        nix::sys::socket::listen(&fd, backlog).map_err(|e| what(&e))?;
    }
    Ok(fd)
}
