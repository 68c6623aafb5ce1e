//! One accept loop for every listener minderd serves on: the API's unix sockets and TCP
//! addresses, and the metrics port.
//!
//! The shape is mini-redis's `Listener` and tonic's `axum-share-tcp-port` example: accept
//! (with backoff when out of descriptors) → TLS handshake under a deadline (TCP, when
//! configured) → one hyper-util `auto` connection serving a tower service, with who is calling
//! ([`Peer`]) in every request's extensions for `auth.rs`. HTTP/2 only for the API today; the
//! same loop will serve HTTP/1 (XML-RPC, the web page) on the same sockets.
//!
//! What keeps an unauthenticated client from hurting the daemon:
//! - **A connection cap per kind of listener**, sized from RLIMIT_NOFILE ([`Limits`]): every
//!   TCP listener (API and metrics) shares one cap, which leaves a reserve of descriptors for
//!   spawning (5 per process) and the daemon's own files, and of which one address may hold a
//!   quarter (more are closed at once); the unix sockets have an allowance of
//!   their own, plus a few connections kept for callers the socket admits as admins. A TCP
//!   listener at its cap stops accepting (clients wait in the kernel's backlog) rather than
//!   accepting and closing.
//! - **Deadlines**: the TLS handshake and the first request must come within
//!   [`Limits::first_request`] of the accept, and a connection with no open stream is closed
//!   after [`Limits::idle`] — unless a request on it was authenticated ([`Trust`]): an
//!   operator's `minder` shell may sit idle for hours, and a tonic client fails the first
//!   request after its connection was closed under it. A connection told to close that does not finish within
//!   [`CLOSE_GRACE`] is dropped.
//! - **A bound on streams per connection** (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a client
//!   that opens more gets REFUSED_STREAM from the HTTP/2 layer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Notify, Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tokio_rustls::rustls;

/// How long a connection told to close (idle, or the daemon stopping) gets to say goodbye
/// before it is dropped: an HTTP/2 graceful close waits for the client's answer to a PING,
/// which a stalled client never sends.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Descriptors kept for each configured process: its two log files and the three pipes of a
/// running child.
const FDS_PER_PROCESS: usize = 5;
/// Descriptors kept for the daemon itself: its log, the runtime, signals, the reaper, the
/// listeners, the pidfile, /proc reads for metrics, spawn's report pipes.
const FDS_MARGIN: usize = 64;
/// Unix socket connections anyone the socket's mode lets in may hold at once.
const UNIX_CONNECTIONS: usize = 64;
/// Further unix socket connections kept for callers the socket admits (root, `socket_users`,
/// `socket_groups`, or anyone when neither is set): so that the administrator's `minder
/// status` works while others hold the first [`UNIX_CONNECTIONS`].
const UNIX_ADMIN_RESERVE: usize = 16;
/// The most TCP connections at once, whatever the descriptor limit.
const TCP_CONNECTIONS_MAX: usize = 4096;
/// The fewest TCP connections at once, even when the descriptor limit leaves less: probes and
/// an operator must still get in.
const TCP_CONNECTIONS_MIN: usize = 8;

/// The bounds every connection is served under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// TCP connections at once, over every TCP listener (API and metrics).
    pub tcp: usize,
    /// TCP connections at once from one address: a quarter of `tcp`, so that one client
    /// cannot take them all.
    pub tcp_per_peer: usize,
    /// Unix socket connections at once for anyone the mode lets in ([`UNIX_CONNECTIONS`]).
    pub unix: usize,
    /// Extra unix socket connections for admitted callers.
    pub unix_admin: usize,
    /// From the accept to the first request (the TLS handshake included).
    pub first_request: Duration,
    /// How long a connection with no open stream is kept.
    pub idle: Duration,
    /// HTTP/2 streams open at once on one connection.
    pub streams_per_connection: u32,
}

impl Limits {
    /// The limits for a daemon with `processes` configured processes, from the descriptor limit
    /// it runs under (after `minfds` raised it).
    pub fn for_processes(processes: usize) -> Limits {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
            .unwrap_or(1024);
        Limits::from_nofile(nofile, processes)
    }

    /// TCP gets what the descriptor limit leaves after the reserve for processes, the daemon
    /// and the unix sockets.
    pub fn from_nofile(nofile: usize, processes: usize) -> Limits {
        let reserve =
            processes.saturating_mul(FDS_PER_PROCESS) + FDS_MARGIN + UNIX_CONNECTIONS + UNIX_ADMIN_RESERVE;
        let tcp = nofile.saturating_sub(reserve).clamp(TCP_CONNECTIONS_MIN, TCP_CONNECTIONS_MAX);
        Limits {
            tcp,
            tcp_per_peer: (tcp / 4).max(TCP_CONNECTIONS_MIN),
            unix: UNIX_CONNECTIONS,
            unix_admin: UNIX_ADMIN_RESERVE,
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            streams_per_connection: 128,
        }
    }
}

/// Who is at the other end of a connection; in every request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A unix socket, with the caller's credentials as the kernel gives them.
    Unix { uid: Option<u32>, gid: Option<u32> },
    /// TCP, with whether the caller presented a client certificate the TLS handshake verified.
    Tcp { addr: SocketAddr, client_cert: bool },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Unix { uid: Some(uid), .. } => write!(f, "uid {uid} on the unix socket"),
            Peer::Unix { uid: None, .. } => f.write_str("an unknown user on the unix socket"),
            Peer::Tcp { addr, .. } => write!(f, "{}", addr.ip()),
        }
    }
}

/// A bound listener, with what it serves.
#[derive(Debug)]
pub enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// The connection caps, shared by every listener of a kind.
#[derive(Debug, Clone)]
pub struct Gates {
    tcp: Arc<Semaphore>,
    tcp_peers: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    unix: Arc<Semaphore>,
    unix_admin: Arc<Semaphore>,
}

impl Gates {
    pub fn new(limits: &Limits) -> Gates {
        Gates {
            tcp: Arc::new(Semaphore::new(limits.tcp)),
            tcp_peers: Arc::default(),
            unix: Arc::new(Semaphore::new(limits.unix)),
            unix_admin: Arc::new(Semaphore::new(limits.unix_admin)),
        }
    }

    /// One more connection from `ip`, unless it already has `limit`.
    fn peer_permit(&self, ip: std::net::IpAddr, limit: usize) -> Option<PeerPermit> {
        let mut peers = self.tcp_peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = peers.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PeerPermit { peers: Arc::clone(&self.tcp_peers), ip })
    }
}

/// A connection counted against its address's share of the TCP cap.
#[derive(Debug)]
struct PeerPermit {
    peers: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = peers.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

/// What to do with each accepted connection: which service, over which protocol, and (for
/// the unix socket's admin reserve) who counts as admitted.
pub trait App: Clone + Send + Sync + 'static {
    type Service: tower::Service<
            http::Request<Incoming>,
            Response = http::Response<Self::Body>,
            Error = Self::Error,
            Future = Self::Future,
        > + Clone
        + Send
        + 'static;
    type Body: hyper::body::Body<Data = Bytes, Error = Self::BodyError> + Send + Unpin + 'static;
    type BodyError: Into<Box<dyn std::error::Error + Send + Sync>>;
    type Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send;
    type Future: Future<Output = Result<http::Response<Self::Body>, Self::Error>> + Send + 'static;

    /// The service for one connection.
    fn service(&self) -> Self::Service;
    /// Whether it serves HTTP/2 (the API's gRPC).
    fn http2(&self) -> bool;
    /// Whether it serves HTTP/1.1 (metrics; the API's XML-RPC); by default, when not HTTP/2.
    fn http1(&self) -> bool {
        !self.http2()
    }
    /// Whether a unix caller may use the admin reserve.
    fn admitted(&self, uid: u32, gid: u32) -> bool;
    /// The TLS acceptor, for TCP connections.
    fn tls(&self) -> Option<tokio_rustls::TlsAcceptor>;
    /// A TLS handshake with `peer` failed (not timed out): `why`.
    fn handshake_failed(&self, peer: &Peer, why: &str) {
        tracing::debug!("TLS handshake with {peer} failed: {why}");
    }
}

/// Accepts on `socket` and serves `app` until `stop` turns true; then lets open connections
/// close gracefully for as long as the caller waits for this to return.
pub async fn serve<A: App>(
    socket: Socket,
    app: A,
    gates: Gates,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut backoff = Backoff::default();
    let mut stopping = stop.clone();
    loop {
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
        let next = async {
            match &socket {
                Socket::Tcp(l) => {
                    // At the cap, stop accepting: clients wait in the kernel's backlog.
                    let permit = Arc::clone(&gates.tcp).acquire_owned().await.ok()?;
                    let accepted = l
                        .accept()
                        .await
                        .map(|(s, addr)| (Io::Tcp(s), Peer::Tcp { addr, client_cert: false }));
                    Some((accepted, Some(permit)))
                }
                Socket::Unix(l) => {
                    let accepted = l.accept().await.map(|(s, _)| {
                        let cred = s.peer_cred().ok();
                        let peer = Peer::Unix { uid: cred.map(|c| c.uid()), gid: cred.map(|c| c.gid()) };
                        (Io::Unix(s), peer)
                    });
                    Some((accepted, None))
                }
            }
        };
        let (accepted, permit) = tokio::select! {
            n = next => match n { Some(n) => n, None => break },
            _ = stopping.wait_for(|s| *s) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (io, peer) = match accepted {
            Ok(a) => {
                backoff.reset();
                a
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        let mut per_peer = None;
        let permit = match (permit, &peer) {
            (Some(p), Peer::Tcp { addr, .. }) => match gates.peer_permit(addr.ip(), limits.tcp_per_peer) {
                Some(pp) => {
                    per_peer = Some(pp);
                    p
                }
                None => {
                    tracing::debug!("refused a connection from {peer}: it has {} open", limits.tcp_per_peer);
                    continue;
                }
            },
            (Some(p), _) => p,
            (None, Peer::Unix { uid, gid }) => {
                let admitted = matches!((uid, gid), (Some(u), Some(g)) if app.admitted(*u, *g));
                match unix_permit(&gates, admitted) {
                    Some(p) => p,
                    None => {
                        tracing::debug!("refused a connection from {peer}: too many unix socket connections");
                        continue;
                    }
                }
            }
            (None, Peer::Tcp { .. }) => continue,
        };
        let app = app.clone();
        let limits = limits.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            connection(io, peer, app, limits, stop).await;
            drop((permit, per_peer));
        });
    }
    while conns.join_next().await.is_some() {}
}

/// A permit for a unix connection: the shared allowance, or the admins' reserve.
fn unix_permit(gates: &Gates, admitted: bool) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match Arc::clone(&gates.unix).try_acquire_owned() {
        Ok(p) => Some(p),
        Err(TryAcquireError::NoPermits) if admitted => Arc::clone(&gates.unix_admin).try_acquire_owned().ok(),
        Err(_) => None,
    }
}

/// An accepted stream.
enum Io {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// Accept failures: out of descriptors (EMFILE, ENFILE) or memory, the listener stays readable
/// and accepting again at once would spin, so minderd waits, longer each time up to a second,
/// and says so once per episode. Other errors (a client that reset before the accept) are
/// skipped.
#[derive(Default)]
struct Backoff {
    delay: Option<Duration>,
}

impl Backoff {
    async fn failed(&mut self, e: &std::io::Error) {
        if !matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) {
            tracing::debug!("error accepting a connection: {e}");
            return;
        }
        let delay = match self.delay {
            None => {
                tracing::warn!("cannot accept connections: {e}; waiting for descriptors to free up");
                Duration::from_millis(10)
            }
            Some(d) => (d * 2).min(Duration::from_secs(1)),
        };
        self.delay = Some(delay);
        tokio::time::sleep(delay).await;
    }

    fn reset(&mut self) {
        if self.delay.take().is_some() {
            tracing::info!("accepting connections again");
        }
    }
}

/// Serves one connection: the TLS handshake if any, then HTTP, under the deadlines.
async fn connection<A: App>(io: Io, mut peer: Peer, app: A, limits: Limits, stop: watch::Receiver<bool>) {
    let deadline = tokio::time::Instant::now() + limits.first_request;
    match io {
        Io::Unix(s) => http(s, peer, app, limits, stop).await,
        Io::Tcp(s) => {
            let _ = s.set_nodelay(true);
            match app.tls() {
                None => http(s, peer, app, limits, stop).await,
                Some(acceptor) => {
                    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(s)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            app.handshake_failed(&peer, &format!("TLS handshake failed: {e}"));
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {peer} did not finish in time; closed");
                            return;
                        }
                    };
                    if let Peer::Tcp { client_cert, .. } = &mut peer {
                        *client_cert = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                    }
                    http(tls, peer, app, limits, stop).await
                }
            }
        }
    }
}

/// Serves HTTP on `io`: closes it when no request came within the first-request deadline (from
/// the accept), after `idle` with no open stream, or when the daemon stops.
async fn http<I, A>(io: I, peer: Peer, app: A, limits: Limits, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: App,
{
    let activity = Arc::new(Activity::default());
    let service = Tracked { inner: app.service(), peer: peer.clone(), activity: Arc::clone(&activity) };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let (h1, h2) = (app.http1(), app.http2());
    if h2 {
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.streams_per_connection)
            .max_header_list_size(64 * 1024)
            // An HTTP/2 client's ping keeps nothing alive by itself; ours find dead peers.
            .keep_alive_interval(Some(Duration::from_secs(60)))
            .keep_alive_timeout(Duration::from_secs(20));
    }
    if h1 {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.first_request)
            .max_buf_size(64 * 1024)
            .keep_alive(true);
    }
    match (h1, h2) {
        (false, _) => builder = builder.http2_only(),
        (true, false) => builder = builder.http1_only(),
        // Both: the auto builder reads the first bytes and picks.
        (true, true) => {}
    }
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut deadline = tokio::time::Instant::now() + limits.first_request;
    let closing = loop {
        // Before the first request, the deadline always runs; after it, only while no stream
        // is open and no request has been authenticated.
        let first = activity.served.load(Ordering::Relaxed) == 0;
        let idle = activity.open.load(Ordering::Acquire) == 0 && (first || !activity.trust.is_marked());
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection from {peer} ended: {e}");
                }
                break false;
            }
            () = activity.changed.notified() => {
                if activity.open.load(Ordering::Acquire) == 0 {
                    deadline = tokio::time::Instant::now() + limits.idle;
                }
            }
            () = tokio::time::sleep_until(deadline), if idle => {
                if activity.served.load(Ordering::Relaxed) == 0 {
                    tracing::debug!("closing a connection from {peer}: no request within {:?}", limits.first_request);
                } else {
                    tracing::debug!("closing a connection from {peer}: idle for {:?}", limits.idle);
                }
                break true;
            }
            _ = stop.wait_for(|s| *s) => break true,
        }
    };
    if closing {
        conn.as_mut().graceful_shutdown();
        // With streams still open (the daemon stopping), they get the time the caller allows;
        // an idle or stalled connection only the grace.
        if activity.open.load(Ordering::Acquire) == 0 {
            let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
        } else {
            let _ = conn.as_mut().await;
        }
    }
    if activity.served.load(Ordering::Relaxed) >= 64 {
        release_memory();
    }
}

/// Gives freed heap back to the system after a connection that had many streams: glibc keeps
/// it otherwise, and a stream flood would leave the daemon's RSS high for good.
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
        let now = std::time::Instant::now();
        let mut last = LAST.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        *last = Some(now);
        drop(last);
        // SAFETY: malloc_trim has no preconditions; it only returns free heap memory.
        unsafe { libc::malloc_trim(0) };
    }
}

/// How many streams a connection has open, and how many it has served.
#[derive(Debug, Default)]
struct Activity {
    open: AtomicUsize,
    served: AtomicUsize,
    changed: Notify,
    trust: Trust,
}

/// Whether a request on this connection was authenticated (set by `auth.rs`, through the
/// request's extensions): such a connection is not closed for being idle.
#[derive(Debug, Clone, Default)]
pub struct Trust(Arc<std::sync::atomic::AtomicBool>);

impl Trust {
    /// A request on this connection proved who sent it.
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts a stream as open from its request until its response body is dropped.
#[derive(Debug)]
pub struct StreamGuard(Arc<Activity>);

impl StreamGuard {
    fn new(a: &Arc<Activity>) -> StreamGuard {
        a.open.fetch_add(1, Ordering::AcqRel);
        a.served.fetch_add(1, Ordering::Relaxed);
        a.changed.notify_one();
        StreamGuard(Arc::clone(a))
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// The connection's service: puts the [`Peer`] into each request and tracks open streams.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    peer: Peer,
    activity: Arc<Activity>,
}

impl<S, B, E> hyper::service::Service<http::Request<Incoming>> for Tracked<S>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = E>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Unpin,
    E: Send,
{
    type Response = http::Response<Guarded<B, StreamGuard>>;
    type Error = E;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, E>> + Send>>;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        let guard = StreamGuard::new(&self.activity);
        req.extensions_mut().insert(self.peer.clone());
        req.extensions_mut().insert(self.activity.trust.clone());
        let mut inner = self.inner.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            let resp = inner.call(req).await?;
            Ok(resp.map(|body| Guarded { body, guard }))
        })
    }
}

/// A response body that holds `guard` (a count of open streams) until it is dropped.
#[derive(Debug)]
pub struct Guarded<B, G> {
    pub body: B,
    pub guard: G,
}

impl<B: hyper::body::Body + Unpin, G: Unpin> hyper::body::Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Reads the TLS files and builds the acceptor: any error here stops start-up.
pub fn tls_acceptor(files: &minder::config::TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let certs = |p: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
        let pem = read(p)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not a PEM certificate: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", p.display()));
        }
        Ok(certs)
    };
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| format!("{}: not a PEM private key: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs(ca)?);
            if added == 0 {
                return Err(format!("{}: no usable CA certificate in it", ca.display()));
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("{}: cannot verify clients with it: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!("{} and {} do not make a TLS identity: {e}", files.cert.display(), files.key.display())
    })?;
    // h2 first: gRPC clients ask for it; Supervisor's clients (Python's http.client) for
    // neither or http/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_gets_what_the_reserve_leaves() {
        // 1024 descriptors, 100 processes: 500 for them, 64 for the daemon, 80 for unix.
        let l = Limits::from_nofile(1024, 100);
        assert_eq!(l.tcp, 1024 - 500 - 64 - 80);
        assert_eq!(l.tcp_per_peer, l.tcp / 4);
        // A tiny limit still lets a few in; a huge one is capped.
        assert_eq!(Limits::from_nofile(64, 100).tcp, TCP_CONNECTIONS_MIN);
        assert_eq!(Limits::from_nofile(1 << 20, 1).tcp, TCP_CONNECTIONS_MAX);
    }

    #[test]
    fn one_address_gets_a_share_of_the_tcp_cap() {
        let limits = Limits::from_nofile(1024, 100);
        let gates = Gates::new(&limits);
        let ip: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        let held: Vec<_> = (0..limits.tcp_per_peer)
            .map(|_| gates.peer_permit(ip, limits.tcp_per_peer).expect("room"))
            .collect();
        assert!(gates.peer_permit(ip, limits.tcp_per_peer).is_none());
        let other: std::net::IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(gates.peer_permit(other, limits.tcp_per_peer).is_some());
        drop(held);
        assert!(gates.peer_permit(ip, limits.tcp_per_peer).is_some());
        assert!(gates.tcp_peers.lock().expect("lock").is_empty(), "counted down to nothing, and forgotten");
    }

    /// A service that trusts the connection when the request says `authorized`.
    #[derive(Clone)]
    struct Marks;

    impl tower::Service<http::Request<Incoming>> for Marks {
        type Response = http::Response<http_body_util::Full<Bytes>>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
            if req.headers().contains_key("authorized") {
                if let Some(t) = req.extensions().get::<Trust>() {
                    t.mark();
                }
            }
            std::future::ready(Ok(http::Response::new(http_body_util::Full::new(Bytes::new()))))
        }
    }

    impl App for Marks {
        type Service = Marks;
        type Body = http_body_util::Full<Bytes>;
        type BodyError = std::convert::Infallible;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<http::Response<Self::Body>, Self::Error>>;

        fn service(&self) -> Marks {
            Marks
        }
        fn http2(&self) -> bool {
            true
        }
        fn admitted(&self, _: u32, _: u32) -> bool {
            false
        }
        fn tls(&self) -> Option<tokio_rustls::TlsAcceptor> {
            None
        }
    }

    /// Serves one in-memory connection, sends one request (`authorized` or not), then lets
    /// twice the idle timeout pass: whether the server closed the connection.
    async fn closed_when_idle(authorized: bool) -> bool {
        let limits = Limits::from_nofile(1024, 0);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (_stop, stop) = watch::channel(false);
        let peer = Peer::Unix { uid: Some(0), gid: Some(0) };
        let served = tokio::spawn(http(server, peer, Marks, limits.clone(), stop));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .expect("h2");
        tokio::spawn(conn);
        let mut req = http::Request::builder().uri("http://x/");
        if authorized {
            req = req.header("authorized", "yes");
        }
        let resp = send.send_request(req.body(http_body_util::Empty::<Bytes>::new()).expect("request")).await;
        assert_eq!(resp.expect("answered").status(), 200);
        tokio::time::sleep(limits.idle * 2).await;
        served.is_finished()
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_unless_a_request_was_authenticated() {
        assert!(closed_when_idle(false).await, "an idle unauthenticated connection is closed");
        assert!(!closed_when_idle(true).await, "an authenticated one is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_no_request_is_closed_at_the_first_request_deadline() {
        let limits = Limits::from_nofile(1024, 0);
        let (_client, server) = tokio::io::duplex(64 * 1024);
        let (_stop, stop) = watch::channel(false);
        let peer = Peer::Unix { uid: Some(0), gid: Some(0) };
        let served = tokio::spawn(http(server, peer, Marks, limits.clone(), stop));
        tokio::time::sleep(limits.first_request - Duration::from_secs(1)).await;
        assert!(!served.is_finished(), "not before the deadline");
        tokio::time::sleep(Duration::from_secs(1) + CLOSE_GRACE + Duration::from_millis(10)).await;
        assert!(served.is_finished(), "closed after it (with the grace)");
    }

    #[test]
    fn the_admin_reserve_is_only_for_admitted_callers() {
        let limits = Limits { unix: 1, unix_admin: 1, ..Limits::from_nofile(1024, 0) };
        let gates = Gates::new(&limits);
        let first = unix_permit(&gates, false).expect("the shared allowance");
        assert!(unix_permit(&gates, false).is_none(), "the shared allowance is used up");
        let admin = unix_permit(&gates, true).expect("the reserve");
        assert!(unix_permit(&gates, true).is_none());
        drop(first);
        assert!(unix_permit(&gates, false).is_some());
        drop(admin);
    }
}
