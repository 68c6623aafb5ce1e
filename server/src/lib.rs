//! minderd: supervises programs as supervisord does and serves the `minder.v1.Supervisor` gRPC
//! API.
//!
//! `main` parses arguments, reads the configuration and binds the listeners; [`run`] does the
//! rest until the daemon is told to stop. Tests drive [`run`] with their own listeners.
//!
//! - [`lifecycle`]: the process state machine, a pure function.
//! - [`process`]: one task per process, owning its machine, child and timers.
//! - [`supervisor`]: the registry of groups and processes; selection; ordered start and stop.
//! - [`spawn`], [`reaper`], [`capture`]: children — starting, reaping, their output.
//! - [`rpc`]: the gRPC service; [`listen`]: the sockets it is served on.
//! - [`logging`], [`daemonize`]: the daemon's own log, and going into the background.

pub mod auth;
pub mod capture;
pub mod daemonize;
pub mod events;
pub mod frontend;
pub mod health;
pub mod lifecycle;
pub mod listen;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod process;
pub mod reaper;
pub mod rpc;
pub mod setup;
pub mod spawn;
pub mod supervisor;
pub mod update;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use minder::config::Config;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic_health::pb::health_server::HealthServer;

use crate::listen::Listener;
use crate::logs::LogChannel;
use crate::process::Shared;
use crate::reaper::Reaper;
use crate::rpc::Service;
use crate::spawn::BaseEnv;
use crate::supervisor::Supervisor;

/// How long in-flight requests get to finish once every process has stopped; streams that
/// would never finish are cut after it.
const DRAIN: Duration = Duration::from_secs(2);

/// Runs the daemon on `listeners` until TERM, INT or QUIT, a Shutdown request, or `shutdown`
/// resolves; then stops every process, level by level, and returns. `daemon_log` is minderd's
/// own log channel, when it logs to a file.
pub async fn run(
    config: Arc<Config>,
    listeners: Vec<Listener>,
    daemon_log: Option<Arc<LogChannel>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let reaper = Reaper::start()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;

    let server_url = listeners.first().map(|l| l.address().to_string());
    let shared = Arc::new(Shared::new(reaper, BaseEnv::from_process(server_url)));
    let sup = Supervisor::new(Arc::clone(&config), shared);

    let routes =
        routes(Service::new(Arc::clone(&sup), daemon_log.clone()), health::service(Arc::clone(&sup)))
            .map_err(std::io::Error::other)?;

    let security = Security::new(&config.daemon)?;
    let (stop_serving, serving) = watch::channel(false);
    let mut servers = JoinSet::new();
    for l in listeners {
        tracing::info!("listening at {}", l.address());
        servers.spawn(serve(l, routes.clone(), security.clone(), serving.clone()));
    }
    if let Some(addr) = &config.daemon.metrics {
        let listener = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot serve metrics at {addr}: {e}")))?;
        tracing::info!("serving metrics at http://{}/metrics", listener.local_addr()?);
        tokio::spawn(metrics::serve(listener, Arc::clone(&sup), serving.clone()));
    }
    // From here on the supervisor's copy is the configuration (a reload replaces it).
    drop(config);
    tracing::info!("minderd {} started with pid {}", minder::VERSION, std::process::id());
    sup.autostart().await;
    notify::notify(&format!(
        "READY=1\nSTATUS=supervising {} processes\nMAINPID={}",
        sup.all().len(),
        std::process::id()
    ));

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = sup.shutdown_requested() => break,
            _ = term.recv() => { tracing::warn!("received SIGTERM indicating exit request"); break }
            _ = int.recv() => { tracing::warn!("received SIGINT indicating exit request"); break }
            _ = quit.recv() => { tracing::warn!("received SIGQUIT indicating exit request"); break }
            _ = usr2.recv() => {
                tracing::info!("received SIGUSR2 indicating log reopen request");
                if let Some(l) = &daemon_log {
                    l.reopen();
                }
                sup.reopen_logs();
            }
            _ = hup.recv() => {
                tracing::warn!("received SIGHUP indicating restart request");
                // Applied in the background so signals and requests keep being answered.
                let sup = Arc::clone(&sup);
                tokio::spawn(async move {
                    match sup.reload(false).await {
                        Ok(done) => tracing::info!("configuration reloaded: {} process(es) added, changed or removed", done.len()),
                        Err(e) => tracing::error!("reload refused, nothing changed: {e}"),
                    }
                });
            }
        }
    }
    notify::notify("STOPPING=1");
    sup.shutdown().await;
    let _ = stop_serving.send(true);
    let drained = tokio::time::timeout(DRAIN, async { while servers.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        servers.abort_all();
    }
    tracing::info!("minderd stopped");
    Ok(())
}

/// Every service minderd serves on each listener: the Supervisor API, health, and reflection
/// (so grpcurl and grpcui need no .proto).
fn routes(
    supervisor: Service,
    health: HealthServer<health::HealthService>,
) -> Result<tonic::service::Routes, String> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(minder::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection().build_v1().map_err(|e| e.to_string())?;
    let v1alpha = reflection().build_v1alpha().map_err(|e| e.to_string())?;
    Ok(tonic::service::Routes::new(health)
        .add_service(supervisor.server())
        .add_service(v1)
        .add_service(v1alpha))
}

/// Accepted connections, riding out failures to accept: out of descriptors (EMFILE, ENFILE)
/// the listener stays readable and would be retried in a tight loop, so minderd pauses a
/// moment, says so (once per episode), and goes on; other errors are skipped.
fn patient<S, T>(incoming: S) -> impl tokio_stream::Stream<Item = std::io::Result<T>>
where
    S: tokio_stream::Stream<Item = std::io::Result<T>> + Unpin,
{
    futures_util::stream::unfold((incoming, false), |(mut incoming, mut warned)| async move {
        use tokio_stream::StreamExt as _;
        loop {
            match incoming.next().await? {
                Ok(conn) => {
                    if warned {
                        tracing::info!("accepting connections again");
                    }
                    return Some((Ok(conn), (incoming, false)));
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !warned {
                        tracing::warn!("cannot accept connections: {e}; waiting for descriptors to free up");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => tracing::debug!("error accepting a connection: {e}"),
            }
        }
    })
}

/// How each kind of listener is secured, from the daemon's settings.
#[derive(Clone)]
struct Security {
    /// TLS for TCP listeners, if configured.
    tls: Option<tonic::transport::ServerTlsConfig>,
    daemon: minder::config::DaemonConfig,
}

impl Security {
    fn new(d: &minder::config::DaemonConfig) -> std::io::Result<Security> {
        let tls = match &d.tls {
            None => None,
            Some(files) => {
                let read = |p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display()))
                    })
                };
                let identity = tonic::transport::Identity::from_pem(read(&files.cert)?, read(&files.key)?);
                let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
                if let Some(ca) = &files.client_ca {
                    tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
                }
                Some(tls)
            }
        };
        Ok(Security { tls, daemon: d.clone() })
    }

    fn access(&self, listener: &Listener) -> auth::Access {
        let d = &self.daemon;
        match listener {
            Listener::Unix { .. } => auth::Access::Unix {
                users: d
                    .socket_users
                    .iter()
                    .filter_map(|u| nix::unistd::User::from_name(u).ok().flatten().map(|u| u.uid.as_raw()))
                    .collect(),
                groups: d
                    .socket_groups
                    .iter()
                    .filter_map(|g| nix::unistd::Group::from_name(g).ok().flatten().map(|g| g.gid.as_raw()))
                    .collect(),
            },
            Listener::Tcp { address, .. } => auth::Access::Tcp {
                tokens: d.tokens.clone(),
                basic: d.credentials.get(address).cloned(),
                client_certs: d.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            },
        }
    }
}

/// Serves `routes` on one listener, secured as `security` says, until `stop` turns true.
async fn serve(
    listener: Listener,
    routes: tonic::service::Routes,
    security: Security,
    mut stop: watch::Receiver<bool>,
) {
    let signal = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let access = std::sync::Arc::new(security.access(&listener));
    let mut builder = tonic::transport::Server::builder();
    if let (Listener::Tcp { .. }, Some(tls)) = (&listener, security.tls) {
        builder = match builder.tls_config(tls) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot set up TLS for {}: {e}", listener.address());
                return;
            }
        };
    }
    let router = builder.layer(auth::AuthLayer(access)).add_routes(routes);
    let result = match listener {
        Listener::Unix { listener, socket } => {
            let r =
                router.serve_with_incoming_shutdown(patient(UnixListenerStream::new(listener)), signal).await;
            drop(socket);
            r
        }
        Listener::Tcp { listener, .. } => {
            router.serve_with_incoming_shutdown(patient(TcpListenerStream::new(listener)), signal).await
        }
    };
    if let Err(e) = result {
        tracing::error!("the API server stopped: {e}");
    }
}
