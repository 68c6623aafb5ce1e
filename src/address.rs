//! Where minderd listens and where minder connects: `unix:///path` or `tcp://host:port`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A listening or connecting address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// A unix domain socket at an absolute path.
    Unix(PathBuf),
    /// A TCP `host:port`; the host may be a name, an IPv4 address or a bracketed IPv6 address.
    Tcp(String),
}

impl Address {
    /// The URI tonic's client connects to.
    pub fn endpoint_uri(&self) -> String {
        match self {
            Address::Unix(path) => format!("unix://{}", path.display()),
            Address::Tcp(hostport) => format!("http://{hostport}"),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::Tcp(hostport) => write!(f, "tcp://{hostport}"),
        }
    }
}

impl FromStr for Address {
    type Err = String;

    /// Accepts `unix:///abs/path`, `tcp://host:port`, and supervisorctl's `http://host:port`.
    fn from_str(s: &str) -> Result<Self, String> {
        let hint = "use unix:///absolute/path or tcp://host:port";
        if let Some(path) = s.strip_prefix("unix://") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(format!("{s:?}: a unix socket path must be absolute ({hint})"));
            }
            return Ok(Address::Unix(path.to_path_buf()));
        }
        let hostport = s.strip_prefix("tcp://").or_else(|| s.strip_prefix("http://"));
        match hostport {
            Some(hp) => {
                let hp = hp.trim_end_matches('/');
                match hp.rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                        Ok(Address::Tcp(hp.to_string()))
                    }
                    _ => Err(format!("{s:?}: expected host:port after the scheme ({hint})")),
                }
            }
            None => Err(format!("{s:?} is not an address ({hint})")),
        }
    }
}

/// The socket minderd listens on, and minder connects to, when nothing says otherwise:
/// `$XDG_RUNTIME_DIR/minder.sock`; else `/run/minder.sock` for root; else
/// `/tmp/minder-<uid>/minder.sock`, in a directory only that user may enter.
pub fn default_socket() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("minder.sock");
    }
    let uid = nix::unistd::Uid::current();
    if uid.is_root() {
        PathBuf::from("/run/minder.sock")
    } else {
        PathBuf::from(format!("/tmp/minder-{uid}")).join("minder.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("unix:///run/m.sock".parse(), Ok(Address::Unix("/run/m.sock".into())));
        assert_eq!("tcp://127.0.0.1:9001".parse(), Ok(Address::Tcp("127.0.0.1:9001".into())));
        assert_eq!("http://localhost:9001".parse(), Ok(Address::Tcp("localhost:9001".into())));
        assert_eq!("tcp://[::1]:9001".parse(), Ok(Address::Tcp("[::1]:9001".into())));
        assert!("unix://relative.sock".parse::<Address>().is_err());
        assert!("tcp://nohost".parse::<Address>().is_err());
        assert!("tcp://host:99999".parse::<Address>().is_err());
        assert!("/run/m.sock".parse::<Address>().is_err());
    }

    #[test]
    fn round_trips() {
        for s in ["unix:///run/m.sock", "tcp://127.0.0.1:9001"] {
            assert_eq!(s.parse::<Address>().map(|a| a.to_string()).as_deref(), Ok(s));
        }
    }
}
