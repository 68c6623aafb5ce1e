//! Finding the daemon and connecting to it.
//!
//! The address comes from, in order: `-s/--serverurl` (or `MINDER_SERVER`); the configuration
//! given with `-c`; the first configuration on the search path; the default socket. This is
//! how supervisorctl finds supervisord, with minder's own files first.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use minder::address::{default_socket, Address};
use minder::config;
use minder::pb::supervisor_client::SupervisorClient;
use tonic::transport::Endpoint;

/// How to authenticate to the daemon, for TCP listeners (a unix socket needs none of this:
/// the daemon knows who connects).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectOptions {
    /// A bearer token for minderd's tokens_file [env: MINDER_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The username of an [inet_http_server] (as supervisorctl's -u).
    #[arg(short = 'u', long, global = true, value_name = "USER")]
    pub username: Option<String>,
    /// Its password (as supervisorctl's -p).
    #[arg(short = 'p', long, global = true, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Connect with TLS, trusting this CA certificate (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Present this client certificate (PEM), for mutual TLS.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name to expect in the daemon's certificate (default: the host connected to).
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_domain: Option<String>,
}

use minder::AuthHeader as Auth;
/// A connected client.
pub use minder::Client;

/// Where the daemon is, and the credentials its configuration gives for it.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: Address,
    pub username: Option<String>,
    pub password: Option<String>,
}

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
    resolve_target(server, config_path).map(|t| t.address)
}

/// Decides which address to connect to, and with which configured credentials.
pub fn resolve_target(server: Option<&str>, config_path: Option<&Path>) -> Result<Target, ConnectError> {
    if let Some(s) = server {
        let address = s.parse().map_err(ConnectError::BadAddress)?;
        return Ok(Target { address, username: None, password: None });
    }
    let path = match config_path {
        Some(p) => Some(p.to_path_buf()),
        None => config::find(),
    };
    if let Some(path) = path {
        let cfg = config::load(&path).map_err(|e| ConnectError::Config(e.to_string()))?;
        // A supervisord.conf's [supervisorctl] serverurl says where, as it does for supervisorctl.
        if let Some(client) = &cfg.client {
            return Ok(Target {
                address: client.serverurl.clone(),
                username: client.username.clone(),
                password: client.password.clone(),
            });
        }
        let listen = &cfg.daemon.listen;
        if let Some(a) = listen.iter().find(|a| matches!(a, Address::Unix(_))).or(listen.first()) {
            // The daemon's own configuration: its credentials for that address are the ones
            // to use (a {SHA} password cannot be sent, so it is asked for).
            let creds = cfg.daemon.credentials.get(a);
            return Ok(Target {
                address: a.clone(),
                username: creds.map(|c| c.username.clone()),
                password: creds.and_then(|c| match &c.password {
                    config::Password::Plain(p) => Some(p.clone()),
                    config::Password::Sha1(_) => None,
                }),
            });
        }
    }
    Ok(Target { address: Address::Unix(default_socket()), username: None, password: None })
}

/// Connects to the daemon at `address`, with no credentials.
pub async fn connect(address: &Address) -> Result<Client, ConnectError> {
    let target = Target { address: address.clone(), username: None, password: None };
    connect_to(&target, &ConnectOptions::default()).await
}

/// Connects to `target`, authenticating as `opts` (or the configuration) say.
pub async fn connect_to(target: &Target, opts: &ConnectOptions) -> Result<Client, ConnectError> {
    let address = &target.address;
    let tls = opts.tls_ca.is_some() || opts.tls_cert.is_some();
    let mut uri = address.endpoint_uri();
    if tls {
        uri = uri.replacen("http://", "https://", 1);
    }
    let mut endpoint =
        Endpoint::from_shared(uri).map_err(|e| ConnectError::BadAddress(format!("{address}: {e}")))?;
    if tls {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| ConnectError::Config(format!("cannot read {}: {e}", p.display())))
        };
        let mut cfg = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &opts.tls_ca {
            cfg = cfg.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) {
            cfg = cfg.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &opts.tls_domain {
            cfg = cfg.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(cfg).map_err(|e| ConnectError::Config(format!("TLS: {e}")))?;
    }
    let token = opts.token.clone().or_else(|| std::env::var("MINDER_TOKEN").ok().filter(|t| !t.is_empty()));
    let username = opts.username.clone().or_else(|| target.username.clone());
    let password = opts.password.clone().or_else(|| target.password.clone());
    let header = match (token, username) {
        (Some(t), _) => Some(format!("Bearer {t}")),
        (None, Some(u)) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", password.unwrap_or_default()))
        )),
        (None, None) => None,
    };
    let header = header
        .map(|h| {
            h.parse().map_err(|_| {
                ConnectError::Config("the credentials contain characters a header cannot".into())
            })
        })
        .transpose()?;
    match endpoint.connect().await {
        Ok(channel) => Ok(SupervisorClient::with_interceptor(channel, Auth(header))),
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
