//! Who may call what, on each listener.
//!
//! A tower layer in front of every listener identifies the caller before any handler runs:
//! on a unix socket by its peer credentials (SO_PEERCRED), checked against `socket_users` and
//! `socket_groups`; on TCP by a bearer token (`authorization: Bearer …`, from `tokens_file`),
//! by supervisord's username and password (`authorization: Basic …`, from
//! `[inet_http_server]`), or by a client certificate verified during the TLS handshake. It then
//! checks the caller's role against the method: read-only callers may look (status, logs,
//! events), only admins may change anything. Health checks need no credentials, so Kubernetes
//! and Envoy probes work; each peer may hold at most [`HEALTH_STREAMS_PER_PEER`] of them open.
//! The caller goes on to the handler in the request's extensions, for the audit log.
//!
//! Failures are logged with the peer, at most once per [`LOG_EVERY`] per peer (with a count
//! of those not logged). A TCP peer with more than [`FREE_FAILURES`] failures in a minute is
//! slowed down: its requests are then checked one at a time, [`PENALTY`] apart, and refused
//! unchecked (RESOURCE_EXHAUSTED) when more than [`MAX_WAIT`] of them are queued. A minute
//! without a failure forgives it.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use minder::config::{Credentials, Password, Role, Token};
use tokio::time::Instant;

use crate::serve::{Guarded, Peer, Trust};

/// Failures a TCP peer may make in [`WINDOW`] before it is slowed down.
pub const FREE_FAILURES: u32 = 10;
/// How long a peer's failures are remembered after its last one.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Once slowed down, a peer's requests are checked this far apart.
pub const PENALTY: Duration = Duration::from_millis(500);
/// The longest a slowed-down peer's request waits; beyond it, it is refused unchecked.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// A peer's failures are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Health streams (Check or Watch) one peer may have open at once.
pub const HEALTH_STREAMS_PER_PEER: usize = 256;
/// Peers remembered at once; beyond it the stalest are forgotten.
const MAX_PEERS: usize = 4096;

/// Who made a request, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub who: String,
    pub role: Role,
}

/// How one listener admits callers.
#[derive(Debug, Clone)]
pub enum Access {
    /// A unix socket: anyone its mode lets in, or only these users and groups; and, when
    /// `[unix_http_server]` sets a username and password, only with them (as supervisord).
    Unix { users: Vec<u32>, groups: Vec<u32>, basic: Option<Credentials> },
    /// TCP: whichever of these are configured; with none, everyone (a loopback listener, or
    /// one the operator opened with `insecure`).
    Tcp { tokens: Vec<Token>, basic: Option<Credentials>, client_certs: bool },
}

impl Access {
    /// Whether a unix caller is let in (root always is: it could change the socket anyway).
    pub fn admits_unix(&self, uid: u32, gid: u32) -> bool {
        match self {
            Access::Unix { users, groups, .. } => {
                uid == 0 || self.open() || users.contains(&uid) || in_groups(uid, gid, groups)
            }
            Access::Tcp { .. } => false,
        }
    }

    fn open(&self) -> bool {
        match self {
            // Peers only: a password, if set, is checked after the peer is let in.
            Access::Unix { users, groups, .. } => users.is_empty() && groups.is_empty(),
            Access::Tcp { tokens, basic, client_certs } => {
                tokens.is_empty() && basic.is_none() && !client_certs
            }
        }
    }
}

/// Why a request was turned away.
#[derive(Debug)]
pub enum Refusal {
    /// No credentials, or wrong ones.
    Unauthenticated(String),
    /// A unix caller the socket does not admit.
    Denied(String),
    /// Too many failures from this peer lately; not checked.
    Throttled,
}

/// What a request does, whichever front end it came through: authorisation asks about the
/// operation, not about a protocol's method names, so gRPC and XML-RPC cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Daemon facts, process states, configuration listings, method descriptions.
    ReadState,
    /// Process and daemon logs, and the event stream.
    ReadLogs,
    Start,
    Stop,
    Restart,
    Signal,
    ClearLogs,
    SendStdin,
    /// Reread, update, add, remove, reload, restart of the daemon.
    Configure,
    Shutdown,
    /// An event sent in by a client (sendRemoteCommEvent).
    SendEvent,
}

impl Operation {
    /// Whether a read-only caller may do it.
    pub fn read_only(self) -> bool {
        matches!(self, Operation::ReadState | Operation::ReadLogs)
    }

    /// The operation of a gRPC method path (`/package.Service/Method`). Reflection only
    /// describes the API; an unknown method of minder.v1 is taken as a change.
    pub fn of_grpc_path(path: &str) -> Operation {
        let Some(method) = path.strip_prefix("/minder.v1.Supervisor/") else {
            return Operation::ReadState;
        };
        match method {
            "GetDaemonInfo" | "ListProcesses" | "GetProcess" | "ListAvailable" => Operation::ReadState,
            "TailLog" | "TailDaemonLog" | "WatchEvents" => Operation::ReadLogs,
            "StartProcesses" => Operation::Start,
            "StopProcesses" => Operation::Stop,
            "RestartProcesses" => Operation::Restart,
            "SignalProcesses" => Operation::Signal,
            "ClearLogs" | "RotateLogs" => Operation::ClearLogs,
            "SendStdin" => Operation::SendStdin,
            "SendRemoteCommEvent" => Operation::SendEvent,
            // Replacing the daemon's binary is the daemon's end as far as roles go.
            "Shutdown" | "Upgrade" => Operation::Shutdown,
            _ => Operation::Configure,
        }
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn password_matches(stored: &Password, given: &str) -> bool {
    match stored {
        Password::Plain(p) => same(p.as_bytes(), given.as_bytes()),
        Password::Sha1(hex) => {
            use sha1::Digest;
            let digest = sha1::Sha1::digest(given.as_bytes());
            let given_hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            // Exactly as Supervisor compares: its lowercase hex digest against what follows {SHA}.
            same(hex.as_bytes(), given_hex.as_bytes())
        }
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| "?".to_string(), |u| u.name)
}

/// Whether `uid`, whose primary group is `gid`, is in one of `groups`.
fn in_groups(uid: u32, gid: u32, groups: &[u32]) -> bool {
    if groups.contains(&gid) {
        return true;
    }
    #[cfg(not(target_vendor = "apple"))]
    if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        if let Ok(name) = std::ffi::CString::new(u.name) {
            if let Ok(list) = nix::unistd::getgrouplist(&name, u.gid) {
                return list.iter().any(|g| groups.contains(&g.as_raw()));
            }
        }
    }
    false
}

/// The request's `authorization` header, if it is text.
fn header<B>(req: &http::Request<B>) -> Option<&str> {
    req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// Checks `Basic` credentials in `header` against `c`: `None` when the header carries none,
/// else the username or why it was refused.
fn basic_auth(c: &Credentials, header: Option<&str>) -> Option<Result<String, Refusal>> {
    let encoded = header?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Some(match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((user, pass))
            if same(c.username.as_bytes(), user.as_bytes()) && password_matches(&c.password, pass) =>
        {
            Ok(user.to_string())
        }
        _ => Err(Refusal::Unauthenticated("the username or password is not valid".into())),
    })
}

/// Identifies the caller of `req` on a listener with `access`.
fn identify<B>(access: &Access, req: &http::Request<B>) -> Result<Caller, Refusal> {
    match access {
        Access::Unix { users, groups, basic } => {
            let cred = match req.extensions().get::<Peer>() {
                Some(Peer::Unix { uid: Some(uid), gid: Some(gid) }) => Some((*uid, *gid)),
                _ => None,
            };
            let peer = match cred {
                None if access.open() => Caller { who: "unix socket".into(), role: Role::Admin },
                None => return Err(Refusal::Unauthenticated("the peer's credentials are unknown".into())),
                Some((uid, gid)) => {
                    let who = format!("uid {uid} ({})", user_name(uid));
                    if !(access.open() || users.contains(&uid) || in_groups(uid, gid, groups)) {
                        return Err(Refusal::Denied(format!(
                            "{who} is not allowed to use this socket (socket_users, socket_groups)"
                        )));
                    }
                    Caller { who, role: Role::Admin }
                }
            };
            match basic {
                None => Ok(peer),
                // supervisord asks everyone on the socket for its username and password; a
                // socket opened wider (chmod = 0777) relies on that.
                Some(c) => match basic_auth(c, header(req)) {
                    Some(Ok(user)) => {
                        Ok(Caller { who: format!("{} as {user}", peer.who), role: Role::Admin })
                    }
                    Some(Err(r)) => Err(r),
                    None => Err(Refusal::Unauthenticated(
                        "this socket requires a username and password (authorization: Basic …)".into(),
                    )),
                },
            }
        }
        Access::Tcp { tokens, basic, client_certs } => {
            let header = header(req);
            if let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) {
                return match tokens.iter().find(|t| same(t.secret.as_bytes(), token.trim().as_bytes())) {
                    Some(t) => Ok(Caller { who: format!("token {}", t.name), role: t.role }),
                    None => Err(Refusal::Unauthenticated("the token is not valid".into())),
                };
            }
            if header.is_some_and(|h| h.starts_with("Basic ")) {
                let refused = || Refusal::Unauthenticated("the username or password is not valid".into());
                return match basic.as_ref().map(|c| basic_auth(c, header)) {
                    Some(Some(Ok(user))) => Ok(Caller { who: format!("user {user}"), role: Role::Admin }),
                    _ => Err(refused()),
                };
            }
            let verified =
                matches!(req.extensions().get::<Peer>(), Some(Peer::Tcp { client_cert: true, .. }));
            if *client_certs && verified {
                // The TLS handshake verified the certificate against the configured CA.
                return Ok(Caller { who: "client certificate".into(), role: Role::Admin });
            }
            if access.open() {
                return Ok(Caller { who: "tcp".into(), role: Role::Admin });
            }
            Err(Refusal::Unauthenticated(
                "credentials are required: a bearer token (authorization: Bearer …) or a username and password".into(),
            ))
        }
    }
}

/// Whether `role` may do `op`.
pub fn allowed(role: Role, op: Operation) -> bool {
    role == Role::Admin || op.read_only()
}

/// Writes who asked for what to the daemon log: every request that changes something, from
/// any front end, goes through here.
pub fn audit(caller: &Caller, what: &str) {
    audit_as(&caller.who, what);
}

/// [`audit`], for a caller known only by name.
pub fn audit_as(who: &str, what: &str) {
    tracing::info!("{who} requested {what}");
}

/// Whom failures and health streams are counted against: a TCP peer's address (an IPv6
/// address by its /64, which one host usually holds whole), or a unix caller's uid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PeerKey {
    Ip(IpAddr),
    Uid(Option<u32>),
}

impl PeerKey {
    fn of(peer: Option<&Peer>) -> PeerKey {
        match peer {
            Some(Peer::Tcp { addr, .. }) => match addr.ip() {
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    PeerKey::Ip(IpAddr::V6(bits.into()))
                }
                IpAddr::V6(v6) => {
                    PeerKey::Ip(IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)))
                }
                ip => PeerKey::Ip(ip),
            },
            Some(Peer::Unix { uid, .. }) => PeerKey::Uid(*uid),
            None => PeerKey::Uid(None),
        }
    }
}

/// One peer's recent failures.
#[derive(Debug)]
struct Record {
    failures: u32,
    last_failure: Instant,
    /// When the next of its requests may be checked, once it is slowed down.
    next_slot: Instant,
    /// When a failure of it was last logged, and how many came since.
    logged: Option<Instant>,
    unlogged: u32,
}

/// What a listener's layer shares with every other: failed authentications and open health
/// streams, per peer.
#[derive(Debug, Default)]
pub struct Shield {
    failures: Mutex<HashMap<PeerKey, Record>>,
    health: Mutex<HashMap<PeerKey, usize>>,
}

/// What to do with a request before checking its credentials.
enum Admission {
    Now,
    At(Instant),
    Refuse,
}

impl Shield {
    /// Whether a request from `key` may be checked now, later, or not at all.
    fn admission(&self, key: &PeerKey, now: Instant) -> Admission {
        if !matches!(key, PeerKey::Ip(_)) {
            return Admission::Now;
        }
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(r) = map.get_mut(key) else { return Admission::Now };
        if r.failures <= FREE_FAILURES || now.duration_since(r.last_failure) >= WINDOW {
            return Admission::Now;
        }
        let slot = r.next_slot.max(now);
        if slot.duration_since(now) > MAX_WAIT {
            r.unlogged += 1;
            return Admission::Refuse;
        }
        r.next_slot = slot + PENALTY;
        Admission::At(slot)
    }

    /// Counts and (rate-limited) logs a failed authentication of `peer`: a refused request, or
    /// a TLS handshake that failed (a client certificate from another CA, say).
    pub fn failed(&self, peer: Option<&Peer>, why: &str) {
        self.failed_at(PeerKey::of(peer), peer, why, Instant::now());
    }

    fn failed_at(&self, key: PeerKey, peer: Option<&Peer>, why: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_PEERS && !map.contains_key(&key) {
            map.retain(|_, r| now.duration_since(r.last_failure) < WINDOW);
            if map.len() >= MAX_PEERS {
                // Forget the stalest half rather than grow without bound.
                let mut times: Vec<Instant> = map.values().map(|r| r.last_failure).collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                map.retain(|_, r| r.last_failure > cut);
            }
        }
        let r = map.entry(key.clone()).or_insert(Record {
            failures: 0,
            last_failure: now,
            next_slot: now,
            logged: None,
            unlogged: 0,
        });
        if now.duration_since(r.last_failure) >= WINDOW {
            r.failures = 0;
        }
        r.failures += 1;
        r.last_failure = now;
        let peer = peer.map_or_else(|| "an unknown peer".to_string(), ToString::to_string);
        if r.logged.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            r.unlogged += 1;
            return;
        }
        let more = match std::mem::take(&mut r.unlogged) {
            0 => String::new(),
            n => format!(" ({n} more failed attempts from it not logged)"),
        };
        let slowed = if matches!(key, PeerKey::Ip(_)) && r.failures > FREE_FAILURES {
            format!("; {} failures in a row, so its requests are now answered {PENALTY:?} apart", r.failures)
        } else {
            String::new()
        };
        r.logged = Some(now);
        tracing::warn!("authentication failed for {peer}: {why}{more}{slowed}");
    }

    /// Counts a health stream of `key`; None when it has too many open.
    fn health_stream(self: &Arc<Self>, key: PeerKey) -> Option<HealthGuard> {
        let mut map = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= HEALTH_STREAMS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(HealthGuard { shield: Arc::clone(self), key })
    }
}

/// One open health stream of a peer; uncounted when dropped (with the response body).
#[derive(Debug)]
pub struct HealthGuard {
    shield: Arc<Shield>,
    key: PeerKey,
}

impl Drop for HealthGuard {
    fn drop(&mut self) {
        let mut map = self.shield.health.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Adds [`Access`] checks in front of a service.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    pub access: Arc<Access>,
    pub shield: Arc<Shield>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, access: Arc::clone(&self.access), shield: Arc::clone(&self.shield) }
    }
}

#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    access: Arc<Access>,
    shield: Arc<Shield>,
}

type BoxFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was not polled ready stays; the ready one serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path().to_string();
        let peer = req.extensions().get::<Peer>().cloned();
        let key = PeerKey::of(peer.as_ref());
        // Probes carry no credentials; health reveals only whether a process runs. Its
        // streams are bounded per peer, as nothing else bounds an unauthenticated caller.
        if path.starts_with("/grpc.health.v1.Health/") {
            let Some(guard) = self.shield.health_stream(key) else {
                let status = tonic::Status::resource_exhausted(format!(
                    "too many health streams open from this peer (at most {HEALTH_STREAMS_PER_PEER})"
                ));
                return Box::pin(async move { Ok(status.into_http()) });
            };
            return Box::pin(async move {
                let resp = inner.call(req).await?;
                Ok(resp.map(|body| tonic::body::Body::new(Guarded { body, guard })))
            });
        }
        let access = Arc::clone(&self.access);
        let shield = Arc::clone(&self.shield);
        Box::pin(async move {
            let checked = match admit(&shield, peer.as_ref()).await {
                Ok(()) => check(&access, &shield, &req),
                Err(r) => Err(r),
            };
            let status = match checked {
                Ok(caller) if allowed(caller.role, Operation::of_grpc_path(&path)) => {
                    req.extensions_mut().insert(caller);
                    return inner.call(req).await;
                }
                Ok(caller) => tonic::Status::permission_denied(format!(
                    "{} is read-only and may not call {}",
                    caller.who,
                    path.rsplit('/').next().unwrap_or(&path)
                )),
                Err(Refusal::Unauthenticated(why)) => tonic::Status::unauthenticated(why),
                Err(Refusal::Denied(why)) => tonic::Status::permission_denied(why),
                Err(Refusal::Throttled) => tonic::Status::resource_exhausted(THROTTLED),
            };
            Ok(status.into_http())
        })
    }
}

/// What a peer slowed down past [`MAX_WAIT`] is told.
pub const THROTTLED: &str =
    "too many failed authentication attempts from this address; try again in a minute";

/// Lets a request from `peer` be checked now, after its turn (a peer with many recent
/// failures is checked one request at a time), or refuses it unchecked. Every front end calls
/// this, then [`check`].
pub async fn admit(shield: &Shield, peer: Option<&Peer>) -> Result<(), Refusal> {
    match shield.admission(&PeerKey::of(peer), Instant::now()) {
        Admission::Now => Ok(()),
        Admission::At(t) => {
            tokio::time::sleep_until(t).await;
            Ok(())
        }
        Admission::Refuse => Err(Refusal::Throttled),
    }
}

/// Identifies the caller of `req` on a listener with `access`, as every front end does: a
/// failure is counted and logged, and a success marks the connection as trusted.
pub fn check<B>(access: &Access, shield: &Shield, req: &http::Request<B>) -> Result<Caller, Refusal> {
    match identify(access, req) {
        Ok(caller) => {
            if let Some(trust) = req.extensions().get::<Trust>() {
                trust.mark();
            }
            Ok(caller)
        }
        Err(r) => {
            let peer = req.extensions().get::<Peer>();
            let why = match &r {
                Refusal::Unauthenticated(w) | Refusal::Denied(w) => w.as_str(),
                Refusal::Throttled => THROTTLED,
            };
            shield.failed_at(PeerKey::of(peer), peer, why, Instant::now());
            Err(r)
        }
    }
}

/// The caller of a request, for the audit log ("unknown" when no layer set one).
pub fn caller<T>(req: &tonic::Request<T>) -> String {
    req.extensions().get::<Caller>().map_or_else(|| "unknown caller".to_string(), |c| c.who.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: Role, secret: &str) -> Token {
        Token { name: name.into(), role, secret: secret.into() }
    }

    fn request(auth: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri("/minder.v1.Supervisor/StopProcesses");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn tokens_and_roles() {
        let access = Access::Tcp {
            tokens: vec![
                token("ops", Role::Admin, "s3cret-admin-token"),
                token("grafana", Role::ReadOnly, "s3cret-read-token"),
            ],
            basic: None,
            client_certs: false,
        };
        let admin = identify(&access, &request(Some("Bearer s3cret-admin-token"))).expect("admin");
        assert_eq!(admin, Caller { who: "token ops".into(), role: Role::Admin });
        let reader = identify(&access, &request(Some("Bearer s3cret-read-token"))).expect("reader");
        assert!(allowed(reader.role, Operation::of_grpc_path("/minder.v1.Supervisor/ListProcesses")));
        assert!(!allowed(reader.role, Operation::of_grpc_path("/minder.v1.Supervisor/StopProcesses")));
        assert!(allowed(reader.role, Operation::of_grpc_path("/grpc.reflection.v1.ServerReflection/X")));
        assert!(allowed(admin.role, Operation::Shutdown));
        assert!(matches!(
            identify(&access, &request(Some("Bearer wrong"))),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(identify(&access, &request(None)), Err(Refusal::Unauthenticated(_))));
    }

    #[test]
    fn supervisord_passwords() {
        // SHA-1 of "thepassword".
        let sha = Password::Sha1("82ab876d1387bfafe46cc1c8a2ef074eae50cb1d".into());
        assert!(password_matches(&sha, "thepassword"));
        assert!(!password_matches(&sha, "thepasswor"));
        let access = Access::Tcp {
            tokens: vec![],
            basic: Some(Credentials { username: "user".into(), password: Password::Plain("123".into()) }),
            client_certs: false,
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode("user:123");
        assert!(identify(&access, &request(Some(&format!("Basic {b64}")))).is_ok());
        let bad = base64::engine::general_purpose::STANDARD.encode("user:124");
        assert!(identify(&access, &request(Some(&format!("Basic {bad}")))).is_err());
        // Supervisor compares the lowercase hex digest as text: an uppercase one never matches.
        let upper = Password::Sha1("82AB876D1387BFAFE46CC1C8A2EF074EAE50CB1D".into());
        assert!(!password_matches(&upper, "thepassword"));
    }

    fn tcp_peer(ip: &str) -> Peer {
        Peer::Tcp { addr: format!("{ip}:4000").parse().expect("addr"), client_cert: false }
    }

    #[test]
    fn a_peer_is_slowed_down_after_its_free_failures() {
        let shield = Shield::default();
        let peer = tcp_peer("192.0.2.7");
        let key = PeerKey::of(Some(&peer));
        let t0 = Instant::now();
        for _ in 0..=FREE_FAILURES {
            assert!(matches!(shield.admission(&key, t0), Admission::Now));
            shield.failed_at(key.clone(), Some(&peer), "the token is not valid", t0);
        }
        // Past the free failures: one check per PENALTY, the first at once.
        assert!(matches!(shield.admission(&key, t0), Admission::At(t) if t == t0));
        assert!(matches!(shield.admission(&key, t0), Admission::At(t) if t == t0 + PENALTY));
        // Queued beyond MAX_WAIT: refused unchecked.
        let mut refused = false;
        for _ in 0..100 {
            if matches!(shield.admission(&key, t0), Admission::Refuse) {
                refused = true;
                break;
            }
        }
        assert!(refused);
        // Another peer is not affected; nor is a unix caller ever delayed.
        let other = PeerKey::of(Some(&tcp_peer("192.0.2.8")));
        assert!(matches!(shield.admission(&other, t0), Admission::Now));
        assert!(matches!(shield.admission(&PeerKey::Uid(Some(0)), t0), Admission::Now));
        // A quiet WINDOW forgives.
        assert!(matches!(shield.admission(&key, t0 + WINDOW + MAX_WAIT), Admission::Now));
    }

    #[test]
    fn failures_are_logged_at_most_once_per_interval() {
        let shield = Shield::default();
        let peer = tcp_peer("192.0.2.9");
        let key = PeerKey::of(Some(&peer));
        let t0 = Instant::now();
        for i in 0..50 {
            shield.failed_at(key.clone(), Some(&peer), "x", t0 + Duration::from_millis(i));
        }
        let map = shield.failures.lock().expect("lock");
        let r = &map[&key];
        assert_eq!((r.failures, r.unlogged, r.logged), (50, 49, Some(t0)));
    }

    #[test]
    fn ipv6_peers_are_counted_by_their_64_bit_prefix() {
        let a = PeerKey::of(Some(&tcp_peer("[2001:db8:1:2::1]")));
        let b = PeerKey::of(Some(&tcp_peer("[2001:db8:1:2:ffff::9]")));
        let c = PeerKey::of(Some(&tcp_peer("[2001:db8:1:3::1]")));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = PeerKey::of(Some(&tcp_peer("[::ffff:192.0.2.1]")));
        assert_eq!(mapped, PeerKey::of(Some(&tcp_peer("192.0.2.1"))));
    }

    #[test]
    fn health_streams_are_bounded_per_peer() {
        let shield = Arc::new(Shield::default());
        let key = PeerKey::Uid(Some(1000));
        let held: Vec<_> =
            (0..HEALTH_STREAMS_PER_PEER).map(|_| shield.health_stream(key.clone()).expect("room")).collect();
        assert!(shield.health_stream(key.clone()).is_none());
        assert!(shield.health_stream(PeerKey::Uid(Some(1001))).is_some(), "another peer has its own");
        drop(held);
        assert!(shield.health_stream(key).is_some());
        assert!(shield.health.lock().expect("lock").len() <= 1, "emptied entries go");
    }

    #[test]
    fn a_unix_socket_with_a_password_asks_every_peer_for_it() {
        let access = Access::Unix {
            users: vec![],
            groups: vec![],
            basic: Some(Credentials { username: "user".into(), password: Password::Plain("123".into()) }),
        };
        let with_peer = |auth: Option<&str>| {
            let mut r = request(auth);
            r.extensions_mut().insert(Peer::Unix { uid: Some(0), gid: Some(0) });
            r
        };
        assert!(matches!(identify(&access, &with_peer(None)), Err(Refusal::Unauthenticated(_))));
        let bad = base64::engine::general_purpose::STANDARD.encode("user:124");
        assert!(matches!(
            identify(&access, &with_peer(Some(&format!("Basic {bad}")))),
            Err(Refusal::Unauthenticated(_))
        ));
        let good = base64::engine::general_purpose::STANDARD.encode("user:123");
        let caller = identify(&access, &with_peer(Some(&format!("Basic {good}")))).expect("let in");
        assert_eq!(caller.who, "uid 0 (root) as user");
        // Without a password the peer's credentials are enough.
        let open = Access::Unix { users: vec![], groups: vec![], basic: None };
        assert_eq!(identify(&open, &with_peer(None)).expect("let in").who, "uid 0 (root)");
    }
}
