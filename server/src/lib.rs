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
//! - [`frontend`]: every protocol in front of the supervisor — gRPC, health, metrics,
//!   Supervisor's XML-RPC, its log URLs, the web page; [`listen`]: binding the sockets they are
//!   served on; [`serve`]: the one accept loop every listener (the API's and the metrics port)
//!   is served by.
//! - [`logging`], [`daemonize`]: the daemon's own log, and going into the background.

pub mod auth;
pub mod capture;
pub mod cgroup;
pub mod daemonize;
pub mod events;
pub mod frontend;
pub mod lifecycle;
pub mod listen;
pub mod listener;
pub mod logging;
pub mod logs;
pub mod logzip;
pub mod notify;
pub mod plan;
pub mod probe;
pub mod process;
pub mod readiness;
pub mod reaper;
pub mod serve;
pub mod setup;
pub mod spawn;
pub mod supervisor;
pub mod tail;
pub mod update;
pub mod upgrade;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use minder::config::{Config, DaemonConfig};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic_health::pb::health_server::HealthServer;

use crate::frontend::grpc::Service;
use crate::frontend::{health, metrics};
use crate::listen::Listener;
use crate::logs::LogChannel;
use crate::process::Shared;
use crate::reaper::Reaper;
use crate::serve::{Gates, Limits, Socket};
use crate::spawn::BaseEnv;
use crate::supervisor::Supervisor;

/// How long in-flight requests get to finish once every process has stopped; streams that
/// would never finish are cut after it.
const DRAIN: Duration = Duration::from_secs(2);

/// Everything minderd serves on, set up before it announces it is ready: the API's listeners,
/// the TLS they use, and the metrics port. Any failure here is fatal at start-up, so that a
/// daemon that said it is ready serves everything it was told to.
pub struct Endpoints {
    pub listeners: Vec<Listener>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub metrics: Option<tokio::net::TcpListener>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("listeners", &self.listeners)
            .field("tls", &self.tls.is_some())
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl Endpoints {
    /// Reads the TLS files and binds the metrics port, for `listeners` already bound.
    pub async fn prepare(d: &DaemonConfig, listeners: Vec<Listener>) -> Result<Endpoints, String> {
        Endpoints::prepare_with(d, listeners, None).await
    }

    /// The same, with the metrics port already bound (`metrics`, handed over by an upgrade).
    pub async fn prepare_with(
        d: &DaemonConfig,
        listeners: Vec<Listener>,
        metrics: Option<tokio::net::TcpListener>,
    ) -> Result<Endpoints, String> {
        let tls = d.tls.as_ref().map(serve::tls_acceptor).transpose()?;
        let metrics = match (&d.metrics, metrics) {
            (_, Some(bound)) => Some(bound),
            (Some(addr), None) => Some(
                tokio::net::TcpListener::bind(addr.as_str())
                    .await
                    .map_err(|e| format!("cannot serve metrics at {addr}: {e}"))?,
            ),
            (None, None) => None,
        };
        Ok(Endpoints { listeners, tls, metrics })
    }
}

/// How this run of the daemon began, and whether it can upgrade itself.
#[derive(Debug, Default)]
pub struct Lineage {
    /// The binary an upgrade executes again (none: this daemon cannot upgrade itself, as when
    /// a test runs it inside its own process).
    pub image: Option<upgrade::Image>,
    /// What an earlier image handed over, when this run is an upgrade.
    pub handover: Option<upgrade::Handover>,
    /// Whether the daemon runs in the background.
    pub background: bool,
    /// Why the upgrade that started this image did not take (this is the old binary again).
    pub upgrade_failure: Option<String>,
}

/// How the main loop ended.
enum Ending {
    Shutdown,
    Upgrade(upgrade::Call, String),
}

/// Runs the daemon on `endpoints` until TERM, INT or QUIT, a Shutdown request, or `shutdown`
/// resolves; then stops every process, level by level, and returns. `daemon_log` is minderd's
/// own log channel, when it logs to a file.
pub async fn run(
    config: Arc<Config>,
    endpoints: Endpoints,
    daemon_log: Option<Arc<LogChannel>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_as(config, endpoints, daemon_log, shutdown, Lineage::default()).await
}

/// [`run`], for a daemon that may upgrade itself (`lineage.image`) or is an upgrade
/// (`lineage.handover`): then it carries on with the processes, children and sockets it was
/// handed, and starts nothing on its own.
pub async fn run_as(
    config: Arc<Config>,
    endpoints: Endpoints,
    daemon_log: Option<Arc<LogChannel>>,
    shutdown: impl Future<Output = ()>,
    lineage: Lineage,
) -> std::io::Result<()> {
    let Lineage { image, mut handover, background, upgrade_failure } = lineage;
    // Cgroups first: minderd may move itself into a leaf of its own, and the sentinel the
    // reaper forks should be there with it, not in the subtree it will kill. An upgraded
    // daemon carries on in the subtree it had (or without, if it had none).
    let setup = match &mut handover {
        Some(h) => Ok(h.cgroups.take().map(cgroup::Cgroups::restore)),
        None => cgroup::Cgroups::setup(&config.daemon.cgroup),
    };
    let cgroups = match setup {
        Ok(Some(cg)) => {
            tracing::info!("every process gets a cgroup of its own under {}", cg.root().display());
            Some(cg)
        }
        Ok(None) => {
            tracing::info!("cgroups are off: processes are tracked by process group only");
            None
        }
        Err(cgroup::Unavailable(why)) => {
            tracing::warn!(
                "cgroups are not used ({why}): processes are tracked by process group only, so one that \
                 leaves its group (setsid) is not stopped with it, and kill_mode = \"cgroup\" acts as \"group\""
            );
            None
        }
    };
    let (reaper, adoptions) = match &mut handover {
        // The sentinel is the old image's (it already has every pidfd and the cgroup to kill);
        // the children are registered before anything is reaped.
        Some(h) => {
            let sentinel = h.sentinel.take().and_then(|s| match upgrade::take_fd(s.sock) {
                Ok(fd) => Some((fd, s.pid)),
                Err(e) => {
                    tracing::warn!("the sentinel was not handed over ({e})");
                    None
                }
            });
            let pids: Vec<i32> = h.processes.iter().filter_map(|p| p.state.pid()).map(|p| p as i32).collect();
            let (reaper, mut exits) = Reaper::resume(sentinel, &pids, config.daemon.kill_on_exit)?;
            let fd = |n: Option<std::os::fd::RawFd>, what: &str, name: &str| {
                n.and_then(|n| {
                    upgrade::take_fd(n).map_err(|e| tracing::error!("the {what} of {name}: {e}")).ok()
                })
            };
            let adopted = h
                .processes
                .drain(..)
                .map(|p| upgrade::Adopted {
                    stdin: fd(p.stdin, "stdin", &p.full_name),
                    stdout: fd(p.stdout, "stdout", &p.full_name),
                    stderr: fd(p.stderr, "stderr", &p.full_name),
                    exit: p.state.pid().and_then(|pid| exits.remove(&(pid as i32))),
                    saved: p,
                })
                .collect();
            (reaper, upgrade::Adoptions::new(adopted))
        }
        None => {
            let guard = config.daemon.kill_on_exit;
            if !guard {
                tracing::warn!(
                    "kill_on_exit is off: if minderd is killed, its processes live on, unsupervised"
                );
            }
            let sentinel_cgroup = cgroups.as_ref().and_then(cgroup::Cgroups::daemon_procs);
            let reaper = Reaper::start(sentinel_cgroup.as_ref().map(std::os::fd::AsFd::as_fd), guard)?;
            drop(sentinel_cgroup);
            if let Some(kill) = cgroups.as_ref().and_then(cgroup::Cgroups::kill_file).filter(|_| guard) {
                use std::os::fd::AsFd;
                if !reaper.watch_cgroup(kill.as_fd()) {
                    tracing::warn!(
                        "no sentinel: if minderd is killed, processes that left their group outlive it"
                    );
                }
            }
            (reaper, upgrade::Adoptions::default())
        }
    };
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    // After an upgrade, the signals that arrived during the exec were held: now they can be
    // handled.
    upgrade::release_signals();

    let Endpoints { listeners, tls, metrics } = endpoints;
    // supervisord's form (`unix:///path`, `http://host:port`), which Supervisor's
    // childutils.getRPCInterface and minder's client both accept.
    let server_url = listeners.first().map(|l| l.address().endpoint_uri());
    let mut shared = Shared::new(reaper, BaseEnv::from_process(server_url)).with_cgroups(cgroups);
    shared.adoptions = adoptions;
    if let Some(h) = &handover {
        shared.events = events::EventBus::resumed(h.instance.clone(), h.next_event);
        shared.started = upgrade::from_unix_ms(h.started_ms);
        shared.upgrades = h.upgrades;
        shared.upgrade_failure = upgrade_failure;
    }
    let shared = Arc::new(shared);
    let sup = Supervisor::new(Arc::clone(&config), shared);
    for left in sup.shared.adoptions.leftovers() {
        tracing::error!("{left} was handed over but is not configured: it is left running, unsupervised");
    }
    let (upgrade_tx, mut upgrade_rx) = tokio::sync::mpsc::unbounded_channel::<upgrade::Call>();
    if image.is_some() {
        let _ = sup.shared.upgrade_requests.set(upgrade_tx.clone());
    }
    // Copies of the listening sockets for an upgrade (the serving tasks own the originals, and
    // close them when they end), and their socket files, removed only at shutdown.
    let mut kept = Vec::new();
    let mut kept_names = Vec::new();
    let mut socket_files = Vec::new();

    let routes =
        routes(Service::new(Arc::clone(&sup), daemon_log.clone()), health::service(Arc::clone(&sup)))
            .map_err(std::io::Error::other)?;

    let limits = Limits::for_processes(config.processes().count());
    let gates = Gates::new(&limits);
    tracing::info!(
        "serving at most {} TCP connections ({} per address) and {} unix socket connections at once ({} streams each)",
        limits.tcp,
        limits.tcp_per_peer,
        limits.unix + limits.unix_admin,
        limits.streams_per_connection
    );
    let shield = Arc::new(auth::Shield::default());
    let (stop_serving, serving) = watch::channel(false);
    let mut servers = JoinSet::new();
    for l in listeners {
        tracing::info!("listening at {}", l.address());
        let access = Arc::new(access(&config.daemon, &l));
        let layer = auth::AuthLayer { access: Arc::clone(&access), shield: Arc::clone(&shield) };
        if image.is_some() {
            match l.for_handover() {
                Ok((fd, name)) => {
                    kept.push(fd);
                    kept_names.push(name);
                }
                Err(e) => tracing::warn!("cannot keep {} for an upgrade: {e}", l.address()),
            }
        }
        let (socket, tls) = match l {
            Listener::Unix { listener, socket } => {
                socket_files.push(socket);
                (Socket::Unix(listener), None)
            }
            Listener::Tcp { listener, .. } => (Socket::Tcp(listener), tls.clone()),
        };
        let rpc2 = Arc::new(frontend::rpc2::Endpoint {
            sup: Arc::clone(&sup),
            daemon_log: daemon_log.clone(),
            access: Arc::clone(&access),
            shield: Arc::clone(&shield),
            body_deadline: frontend::common::BODY_DEADLINE,
        });
        let logtail = Arc::new(frontend::logtail::Endpoint {
            sup: Arc::clone(&sup),
            daemon_log: daemon_log.clone(),
            access: Arc::clone(&access),
            shield: Arc::clone(&shield),
            stopping: serving.clone(),
        });
        let web = Arc::new(frontend::web::Endpoint {
            sup: Arc::clone(&sup),
            access: Arc::clone(&access),
            shield: Arc::clone(&shield),
        });
        let app = GrpcApp {
            service: Front { grpc: tower::Layer::layer(&layer, routes.clone()), rpc2, logtail, web },
            access,
            shield: Arc::clone(&shield),
            tls,
        };
        let (gates, limits, serving) = (gates.clone(), limits.clone(), serving.clone());
        servers.spawn(serve::serve(socket, app, gates, limits, serving));
    }
    let mut kept_metrics = None;
    if let Some(listener) = metrics {
        tracing::info!("serving metrics at http://{}/metrics", listener.local_addr()?);
        if image.is_some() {
            match upgrade::inheritable(&listener) {
                Ok(fd) => {
                    kept_metrics = Some(std::os::fd::AsRawFd::as_raw_fd(&fd));
                    kept.push(fd);
                }
                Err(e) => tracing::warn!("cannot keep the metrics port for an upgrade: {e}"),
            }
        }
        let app = metrics::MetricsApp::new(Arc::clone(&sup));
        let (gates, limits, serving) = (gates.clone(), limits.clone(), serving.clone());
        servers.spawn(async move { serve::serve(Socket::Tcp(listener), app, gates, limits, serving).await });
    }
    // From here on the supervisor's copy is the configuration (a reload replaces it).
    drop(config);
    match &handover {
        Some(h) => tracing::info!(
            "minderd {} carries on with pid {} after an upgrade from {} (upgrade {})",
            minder::VERSION,
            std::process::id(),
            h.from_version,
            h.upgrades
        ),
        None => {
            tracing::info!("minderd {} started with pid {}", minder::VERSION, std::process::id());
            sup.autostart().await;
        }
    }
    notify::notify(&format!(
        "READY=1\nSTATUS=supervising {} processes\nMAINPID={}",
        sup.all().len(),
        std::process::id()
    ));

    let (checked_tx, mut checked_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut upgrading = false;
    tokio::pin!(shutdown);
    let ending = loop {
        tokio::select! {
            () = &mut shutdown => break Ending::Shutdown,
            () = sup.shutdown_requested() => break Ending::Shutdown,
            _ = term.recv() => { tracing::warn!("received SIGTERM indicating exit request"); break Ending::Shutdown }
            _ = int.recv() => { tracing::warn!("received SIGINT indicating exit request"); break Ending::Shutdown }
            _ = quit.recv() => { tracing::warn!("received SIGQUIT indicating exit request"); break Ending::Shutdown }
            _ = usr1.recv() => {
                tracing::warn!("received SIGUSR1 indicating upgrade request");
                let (call, answer) = tokio::sync::oneshot::channel();
                if image.is_none() {
                    tracing::error!("upgrade refused: this minderd cannot upgrade itself");
                    continue;
                }
                let _ = upgrade_tx.send(call);
                tokio::spawn(async move {
                    if let Ok(Err(e)) = answer.await {
                        tracing::error!("upgrade refused, minderd carries on: {e}");
                    }
                });
            }
            Some(call) = upgrade_rx.recv() => {
                let Some(target) = image.as_ref().map(upgrade::Image::target).filter(|_| !upgrading) else {
                    let _ = call.send(Err("an upgrade is already under way".into()));
                    continue;
                };
                upgrading = true;
                let (sup, checked) = (Arc::clone(&sup), checked_tx.clone());
                tokio::spawn(async move {
                    let checked_out = upgrade::check(&sup, target).await;
                    let _ = checked.send((call, checked_out));
                });
            }
            Some((call, checked_out)) = checked_rx.recv() => match checked_out {
                Ok(version) => break Ending::Upgrade(call, version),
                Err(e) => {
                    tracing::error!("upgrade refused, minderd carries on: {e}");
                    let _ = call.send(Err(e));
                    upgrading = false;
                }
            },
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
    };
    if let Ending::Upgrade(call, version) = ending {
        let Some(image) = image else {
            return Err(std::io::Error::other("an upgrade without an image to execute"));
        };
        // New connections wait in the listening sockets' backlogs for the next image; requests
        // in flight (this upgrade's answer among them) finish, streams are cut after DRAIN.
        let _ = stop_serving.send(true);
        let _ =
            call.send(Ok(upgrade::Answer { version: version.clone(), upgrades: sup.facts().upgrades + 1 }));
        let drained =
            tokio::time::timeout(upgrade::DRAIN, async { while servers.join_next().await.is_some() {} })
                .await;
        if drained.is_err() {
            servers.abort_all();
            while servers.join_next().await.is_some() {}
        }
        // The socket files stay: the next image serves them.
        std::mem::forget(socket_files);
        let why =
            upgrade::hand_over(&sup, &image, kept, kept_names, kept_metrics, background, &version).await;
        tracing::error!("the upgrade failed once the hand-over had begun ({why}); minderd exits");
        return Err(std::io::Error::other(why));
    }
    drop(kept);
    notify::notify("STOPPING=1");
    sup.shutdown().await;
    if let Some(cg) = &sup.shared.cgroups {
        cg.remove(sup.shared.reaper.sentinel_pid()).await;
    }
    let _ = stop_serving.send(true);
    let drained = tokio::time::timeout(DRAIN, async { while servers.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        servers.abort_all();
        while servers.join_next().await.is_some() {}
    }
    // The socket files go once their listeners are no longer served.
    drop(socket_files);
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

/// Who may use `listener`, from the daemon's settings (users and groups were resolved to
/// ids when the configuration was read).
fn access(d: &DaemonConfig, listener: &Listener) -> auth::Access {
    match listener {
        Listener::Unix { .. } => auth::Access::Unix {
            users: d.socket_uids.clone(),
            groups: d.socket_gids.clone(),
            basic: d.credentials.get(&listener.address()).cloned(),
        },
        // Credentials belong to the address as configured (`tcp://127.0.0.1:0`), not the port
        // it was given.
        Listener::Tcp { configured, .. } => auth::Access::Tcp {
            tokens: d.tokens.clone(),
            basic: d.credentials.get(configured).cloned(),
            client_certs: d.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        },
    }
}

/// What every API listener serves: Supervisor's XML-RPC at `/RPC2`, its log URLs and the web
/// page (over either HTTP version: a browser may speak HTTP/2 over TLS), gRPC over HTTP/2, and
/// 404 for any other HTTP/1 request.
#[derive(Clone)]
struct Front {
    grpc: auth::AuthService<tonic::service::Routes>,
    rpc2: Arc<frontend::rpc2::Endpoint>,
    logtail: Arc<frontend::logtail::Endpoint>,
    web: Arc<frontend::web::Endpoint>,
}

type FrontFuture = std::pin::Pin<
    Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>> + Send>,
>;

impl tower::Service<http::Request<hyper::body::Incoming>> for Front {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = FrontFuture;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<hyper::body::Incoming>>::poll_ready(&mut self.grpc, cx)
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        if req.uri().path() == "/RPC2" {
            return Box::pin(Arc::clone(&self.rpc2).handle(req));
        }
        if frontend::logtail::serves(req.uri().path()) {
            return Box::pin(Arc::clone(&self.logtail).handle(req));
        }
        // gRPC paths are `/package.Service/Method`: never one of the page's.
        if frontend::web::serves(req.uri().path()) {
            return Box::pin(Arc::clone(&self.web).handle(req));
        }
        if req.version() != http::Version::HTTP_2 {
            return Box::pin(async { Ok(frontend::common::not_found()) });
        }
        tower::Service::call(&mut self.grpc, req)
    }
}

/// The API as [`serve`] serves it: HTTP/2 and HTTP/1.1, behind the auth layer.
#[derive(Clone)]
struct GrpcApp {
    service: Front,
    access: Arc<auth::Access>,
    shield: Arc<auth::Shield>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl serve::App for GrpcApp {
    type Service = Front;
    type Body = tonic::body::Body;
    type BodyError = tonic::Status;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>> + Send>,
    >;

    fn service(&self) -> Self::Service {
        self.service.clone()
    }

    fn http2(&self) -> bool {
        true
    }

    fn http1(&self) -> bool {
        true
    }

    fn admitted(&self, uid: u32, gid: u32) -> bool {
        self.access.admits_unix(uid, gid)
    }

    fn tls(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.tls.clone()
    }

    /// Logged and counted as the failed authentication it usually is.
    fn handshake_failed(&self, peer: &serve::Peer, why: &str) {
        self.shield.failed(Some(peer), why);
    }
}
