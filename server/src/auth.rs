//! Who may call what, on each listener.
//!
//! A tower layer in front of every listener identifies the caller before any handler runs:
//! on a unix socket by its peer credentials (SO_PEERCRED), checked against `socket_users` and
//! `socket_groups`; on TCP by a bearer token (`authorization: Bearer …`, from `tokens_file`),
//! by supervisord's username and password (`authorization: Basic …`, from
//! `[inet_http_server]`), or by a client certificate verified during the TLS handshake. It then
//! checks the caller's role against the method: read-only callers may look (status, logs,
//! events), only admins may change anything. Health checks need no credentials, so Kubernetes
//! and Envoy probes work. The caller goes on to the handler in the request's extensions, for
//! the audit log.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use minder::config::{Credentials, Password, Role, Token};
use tonic::transport::server::UdsConnectInfo;

/// Who made a request, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub who: String,
    pub role: Role,
}

/// How one listener admits callers.
#[derive(Debug, Clone)]
pub enum Access {
    /// A unix socket: anyone its mode lets in, or only these users and groups.
    Unix { users: Vec<u32>, groups: Vec<u32> },
    /// TCP: whichever of these are configured; with none, everyone (a loopback listener, or
    /// one the operator opened with `insecure`).
    Tcp { tokens: Vec<Token>, basic: Option<Credentials>, client_certs: bool },
}

impl Access {
    fn open(&self) -> bool {
        match self {
            Access::Unix { users, groups } => users.is_empty() && groups.is_empty(),
            Access::Tcp { tokens, basic, client_certs } => {
                tokens.is_empty() && basic.is_none() && !client_certs
            }
        }
    }
}

/// Why a request was turned away.
#[derive(Debug)]
enum Refusal {
    Unauthenticated(String),
    Denied(String),
}

/// The methods a read-only caller may use; everything else of minder.v1 changes something.
const READ_ONLY: &[&str] = &[
    "GetDaemonInfo",
    "ListProcesses",
    "GetProcess",
    "TailLog",
    "TailDaemonLog",
    "WatchEvents",
    "ListAvailable",
];

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
            same(hex.to_ascii_lowercase().as_bytes(), given_hex.as_bytes())
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

/// Identifies the caller of `req` on a listener with `access`.
fn identify<B>(access: &Access, req: &http::Request<B>) -> Result<Caller, Refusal> {
    match access {
        Access::Unix { users, groups } => {
            let cred = req.extensions().get::<UdsConnectInfo>().and_then(|i| i.peer_cred);
            let Some(cred) = cred else {
                return if access.open() {
                    Ok(Caller { who: "unix socket".into(), role: Role::Admin })
                } else {
                    Err(Refusal::Unauthenticated("the peer's credentials are unknown".into()))
                };
            };
            let (uid, gid) = (cred.uid(), cred.gid());
            let who = format!("uid {uid} ({})", user_name(uid));
            if access.open() || users.contains(&uid) || in_groups(uid, gid, groups) {
                Ok(Caller { who, role: Role::Admin })
            } else {
                Err(Refusal::Denied(format!(
                    "{who} is not allowed to use this socket (socket_users, socket_groups)"
                )))
            }
        }
        Access::Tcp { tokens, basic, client_certs } => {
            let header = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            if let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) {
                return match tokens.iter().find(|t| same(t.secret.as_bytes(), token.trim().as_bytes())) {
                    Some(t) => Ok(Caller { who: format!("token {}", t.name), role: t.role }),
                    None => Err(Refusal::Unauthenticated("the token is not valid".into())),
                };
            }
            if let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                let pair = decoded.as_deref().and_then(|d| d.split_once(':'));
                return match (basic, pair) {
                    (Some(c), Some((user, pass)))
                        if same(c.username.as_bytes(), user.as_bytes())
                            && password_matches(&c.password, pass) =>
                    {
                        Ok(Caller { who: format!("user {user}"), role: Role::Admin })
                    }
                    _ => Err(Refusal::Unauthenticated("the username or password is not valid".into())),
                };
            }
            if *client_certs {
                // The TLS handshake already refused anyone without a certificate from the CA.
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

/// Whether `role` may call the method at `path` (`/package.Service/Method`).
fn allowed(role: Role, path: &str) -> bool {
    if role == Role::Admin {
        return true;
    }
    match path.strip_prefix("/minder.v1.Supervisor/") {
        Some(method) => READ_ONLY.contains(&method),
        // Reflection only describes the API.
        None => true,
    }
}

/// Adds [`Access`] checks in front of a service.
#[derive(Debug, Clone)]
pub struct AuthLayer(pub Arc<Access>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, access: Arc::clone(&self.0) }
    }
}

#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    access: Arc<Access>,
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
        let path = req.uri().path().to_string();
        // Probes carry no credentials; health reveals only whether a process runs.
        if path.starts_with("/grpc.health.v1.Health/") {
            return Box::pin(self.inner.call(req));
        }
        let status = match identify(&self.access, &req) {
            Ok(caller) if allowed(caller.role, &path) => {
                req.extensions_mut().insert(caller);
                return Box::pin(self.inner.call(req));
            }
            Ok(caller) => tonic::Status::permission_denied(format!(
                "{} is read-only and may not call {}",
                caller.who,
                path.rsplit('/').next().unwrap_or(&path)
            )),
            Err(Refusal::Unauthenticated(why)) => tonic::Status::unauthenticated(why),
            Err(Refusal::Denied(why)) => tonic::Status::permission_denied(why),
        };
        Box::pin(async move { Ok(status.into_http()) })
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
        assert!(allowed(reader.role, "/minder.v1.Supervisor/ListProcesses"));
        assert!(!allowed(reader.role, "/minder.v1.Supervisor/StopProcesses"));
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
    }
}
