//! Finding the daemon and connecting to it.
//!
//! The address comes from, in order: `-s/--serverurl` (or `MINDER_SERVER`); the configuration
//! given with `-c`; the first configuration on the search path; the default socket. This is
//! how supervisorctl finds supervisord, with minder's own files first.

use std::path::Path;

use minder::address::{default_socket, Address};
use minder::config;
use minder::pb::supervisor_client::SupervisorClient;
use tonic::transport::{Channel, Endpoint};

/// Why the command line could not reach a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing is listening (the socket file is there but refuses, or the port is closed).
    #[error("no minderd at {0}: connection refused — start it with `minderd -c FILE`")]
    Refused(Address),
    /// The socket file does not exist.
    #[error("no minderd at {0}: no such socket — start it with `minderd -c FILE`")]
    NoSocket(Address),
    #[error("cannot connect to minderd at {0}: {1}")]
    Other(Address, String),
    #[error("{0}")]
    BadAddress(String),
    #[error("{0}")]
    Config(String),
}

/// Decides which address to connect to.
pub fn resolve(server: Option<&str>, config_path: Option<&Path>) -> Result<Address, ConnectError> {
    if let Some(s) = server {
        return s.parse().map_err(ConnectError::BadAddress);
    }
    let path = match config_path {
        Some(p) => Some(p.to_path_buf()),
        None => config::find(),
    };
    if let Some(path) = path {
        let cfg = config::load(&path).map_err(|e| ConnectError::Config(e.to_string()))?;
        // A supervisord.conf's [supervisorctl] serverurl says where, as it does for supervisorctl.
        if let Some(client) = &cfg.client {
            return Ok(client.serverurl.clone());
        }
        let listen = &cfg.daemon.listen;
        if let Some(a) = listen.iter().find(|a| matches!(a, Address::Unix(_))).or(listen.first()) {
            return Ok(a.clone());
        }
    }
    Ok(Address::Unix(default_socket()))
}

/// Connects to the daemon at `address`.
pub async fn connect(address: &Address) -> Result<SupervisorClient<Channel>, ConnectError> {
    let endpoint = Endpoint::from_shared(address.endpoint_uri())
        .map_err(|e| ConnectError::BadAddress(format!("{address}: {e}")))?;
    match endpoint.connect().await {
        Ok(channel) => Ok(SupervisorClient::new(channel)),
        Err(e) => Err(classify(address, &e)),
    }
}

/// Turns a transport error into one clear line, from the io::Error at its root.
fn classify(address: &Address, e: &(dyn std::error::Error + 'static)) -> ConnectError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => ConnectError::Refused(address.clone()),
                std::io::ErrorKind::NotFound => ConnectError::NoSocket(address.clone()),
                _ => ConnectError::Other(address.clone(), io.to_string()),
            };
        }
        source = s.source();
    }
    ConnectError::Other(address.clone(), e.to_string())
}
