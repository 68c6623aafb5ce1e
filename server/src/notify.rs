//! systemd's notify protocol (sd_notify), spoken directly: a datagram to `$NOTIFY_SOCKET`.
//! With `Type=notify`, systemd considers minderd started once it has said READY=1 (its
//! listeners are up and the programs are being started), and knows it is stopping when it
//! says STOPPING=1.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. "READY=1") to systemd when minderd runs under it; does nothing
/// otherwise. Failures are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let result = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let path = path.to_string_lossy();
        if let Some(name) = path.strip_prefix('@') {
            // An abstract socket name (Linux).
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                sock.send_to_addr(state.as_bytes(), &addr)?;
            }
            #[cfg(not(target_os = "linux"))]
            let _ = name;
        } else {
            sock.send_to(state.as_bytes(), path.as_ref())?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!("cannot notify systemd ({state}): {e}");
    }
}
