//! Who is calling, and may they: sessions, HTTP Basic, the login rate limit, CSRF, and the
//! login/logout/profile routes.
//!
//! Every request passes [`authenticate`]. It refuses a cross-site request that would change
//! something (403, before anything else: see [`cross_site`]), lets the login page, the assets
//! and the login/logout routes through, and otherwise needs either
//! - the session cookie `minder_fleet_session` (HttpOnly, SameSite=Strict, Path=/, and Secure
//!   when the request came through a TLS proxy that says `X-Forwarded-Proto: https`: the fleet
//!   itself serves plain HTTP, so a cookie marked Secure would never come back over it), or
//! - HTTP Basic with a user's name and password, for scripts.
//!
//! It then puts a [`Caller`] in the request's extensions for the routes, which check the role
//! and the environments themselves. Without credentials an `/api/` path answers 401 JSON (with
//! `WWW-Authenticate: Basic` only when no browser asked: a browser sends `Sec-Fetch-Mode`, and
//! must not pop a Basic dialog), and a page answers 303 to `login`, relative, so the fleet
//! works behind a proxy that strips a prefix.
//!
//! Sessions live in memory (a restart logs everyone out): 256-bit tokens from the OS, ended
//! after [`IDLE`] without use or [`MAX_AGE`] after login, at most [`MAX_SESSIONS`] in all and
//! [`MAX_PER_USER`] per user (the least recently used goes first). Every request looks its user
//! up again, so a user removed or changed — by the API or by `minder-fleet user` while the
//! fleet runs — is removed or changed at once.
//!
//! Failed logins (the login route, a wrong Basic password, a wrong old password) are counted
//! per source address and per user name: after [`MAX_FAILURES`] in [`WINDOW`], that address or
//! name gets 429 with `Retry-After` until the window ends — decided before any argon2 work.
//! argon2 runs in `spawn_blocking` behind a semaphore of about half the cores, so a flood of
//! logins from many addresses still leaves the other cores to the fleet. A Basic password that
//! verified is remembered (a keyed BLAKE2b digest of name and password, for 5 minutes, until
//! any user changes), so a script's every request does not cost an argon2 run. The source
//! address is the TCP peer's: behind a proxy every client shares the proxy's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::{Extension, Json};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::activity::{Activity, Entry};
use crate::api::ApiError;
use crate::config::FleetConfig;
use crate::users::{self, Role, User, UserError, Users};
use crate::Fleet;

/// The session cookie's name.
pub const COOKIE: &str = "minder_fleet_session";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// A session ends this long after its login, used or not.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Live sessions in all, and per user.
pub const MAX_SESSIONS: usize = 10_000;
pub const MAX_PER_USER: usize = 64;
/// Failed logins allowed per address and per name in one window.
pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses and names tracked at once; past that, new ones are refused (429) until the
/// table empties: a flood from countless addresses cannot grow it, nor get unlimited tries.
const MAX_TRACKED: usize = 100_000;
/// How long a verified Basic password is remembered.
const BASIC_TTL: Duration = Duration::from_secs(300);
const MAX_BASIC_CACHE: usize = 4096;

/// Who is calling: put in every authenticated request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub role: Role,
    /// The environments the user may see; None for all.
    pub environments: Option<Vec<String>>,
}

impl Caller {
    /// May start, stop and restart processes (admin or operator).
    pub fn can_act(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Operator)
    }

    /// May manage users and read the activity log.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// May see the nodes of `environment`.
    pub fn sees(&self, environment: &str) -> bool {
        self.environments.as_ref().is_none_or(|e| e.iter().any(|x| x == environment))
    }

    pub fn json(&self) -> serde_json::Value {
        json!({"username": self.username, "role": self.role, "environments": self.environments})
    }

    fn of(u: &User) -> Caller {
        Caller { username: u.username.clone(), role: u.role, environments: u.environments.clone() }
    }
}

/// The client's address (the TCP peer), when the server was given it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl Peer {
    fn ip(&self) -> Option<IpAddr> {
        self.0.map(|a| a.ip())
    }

    fn shown(&self) -> String {
        self.ip().map_or_else(|| "unknown".into(), |a| a.to_string())
    }
}

#[derive(Debug)]
struct Session {
    username: String,
    created: Instant,
    last: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LimitKey {
    Addr(Option<IpAddr>),
    User(String),
}

#[derive(Debug)]
struct Window {
    start: Instant,
    failures: u32,
}

/// Failed logins per address and per name, in fixed windows.
#[derive(Debug, Default)]
struct Limiter {
    map: HashMap<LimitKey, Window>,
    /// When a full table was last emptied of ended windows (at most once a second: it is a
    /// walk over the whole table).
    pruned: Option<Instant>,
}

impl Limiter {
    /// How long until `keys` may try again, if any of them is limited now.
    fn retry_after(&mut self, keys: &[LimitKey], now: Instant) -> Option<Duration> {
        // A full table is emptied of ended windows first: otherwise it would stay full (and
        // refuse every new address) even once the flood that filled it is over.
        self.prune(now);
        keys.iter()
            .filter_map(|k| match self.map.get(k) {
                Some(w) if w.failures >= MAX_FAILURES && now < w.start + WINDOW => {
                    Some(w.start + WINDOW - now)
                }
                None if self.map.len() >= MAX_TRACKED => Some(WINDOW),
                _ => None,
            })
            .max()
    }

    fn prune(&mut self, now: Instant) {
        if self.map.len() >= MAX_TRACKED
            && self.pruned.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.pruned = Some(now);
            self.map.retain(|_, w| now < w.start + WINDOW);
        }
    }

    /// Counts a failure; true when it makes one of `keys` limited.
    fn fail(&mut self, keys: &[LimitKey], now: Instant) -> bool {
        self.prune(now);
        let mut newly = false;
        for k in keys {
            if !self.map.contains_key(k) && self.map.len() >= MAX_TRACKED {
                continue;
            }
            let w = self.map.entry(k.clone()).or_insert(Window { start: now, failures: 0 });
            if now >= w.start + WINDOW {
                *w = Window { start: now, failures: 0 };
            }
            w.failures += 1;
            newly |= w.failures == MAX_FAILURES;
        }
        newly
    }

    fn succeed(&mut self, keys: &[LimitKey]) {
        for k in keys {
            self.map.remove(k);
        }
    }
}

/// The users, their sessions, the limiter and the activity log.
#[derive(Debug)]
pub struct Auth {
    pub users: Arc<Users>,
    pub activity: Activity,
    sessions: Mutex<HashMap<String, Session>>,
    limiter: Mutex<Limiter>,
    argon: Semaphore,
    basic: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    basic_key: [u8; 32],
    /// Verified instead when a name is unknown, so that the answer takes as long.
    dummy_hash: String,
    argon_runs: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random<const N: usize>() -> Result<[u8; N], UserError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| UserError::Hash(format!("the OS's random numbers: {e}")))?;
    Ok(b)
}

impl Auth {
    /// Opens the database, starts the activity log and sets the configuration's admin
    /// (blocking: argon2 and SQLite).
    pub fn open(config: &FleetConfig) -> Result<Arc<Auth>, UserError> {
        let path = users::database_path(config);
        let users = Users::open(&path)?;
        let base = config.path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let activity = Activity::start(&path, config.activity_log.as_ref().map(|f| base.join(f)))?;
        if let Some((name, password)) = &config.admin {
            let how = users.ensure_admin(name, password.expose())?;
            tracing::info!("administrator {name:?} {how} from [cesi] admin_username/admin_password");
        }
        let (count, old) = users.census()?;
        tracing::info!("users and the activity log in {} ({count} users)", path.display());
        if count == 0 {
            tracing::warn!(
                "no users yet, so nobody can log in: add one with `minder-fleet --config-file {} user add NAME \
                 --role admin` (it reads the password from standard input), or set [cesi] admin_username and \
                 admin_password",
                config.path.display()
            );
        }
        if !old.is_empty() {
            tracing::warn!(
                "{} user(s) have a password hash from Cesi that minder-fleet does not read ({}): give each a new \
                 one with `minder-fleet --config-file {} user passwd NAME`",
                old.len(),
                old.join(", "),
                config.path.display()
            );
        }
        let permits = std::thread::available_parallelism().map_or(1, |n| n.get()).div_ceil(2).clamp(1, 4);
        let dummy = hex(&random::<16>()?);
        Ok(Arc::new(Auth {
            users: Arc::new(users),
            activity,
            sessions: Mutex::new(HashMap::new()),
            limiter: Mutex::new(Limiter::default()),
            argon: Semaphore::new(permits),
            basic: Mutex::new(HashMap::new()),
            basic_key: random()?,
            dummy_hash: users::hash_password(&dummy)?,
            argon_runs: AtomicU64::new(0),
        }))
    }

    /// How many argon2 verifications ran since start.
    pub fn argon2_runs(&self) -> u64 {
        self.argon_runs.load(Ordering::Relaxed)
    }

    /// Forgets every remembered Basic password (after any change to users).
    pub fn forget_credentials(&self) {
        lock(&self.basic).clear();
    }

    /// Ends every session of `name`, except the one with token `keep`.
    pub fn sessions_end_for(&self, name: &str) {
        self.end_sessions(name, None);
    }

    fn end_sessions(&self, name: &str, keep: Option<&str>) {
        lock(&self.sessions).retain(|t, s| s.username != name || Some(t.as_str()) == keep);
    }

    /// A new session for `name`: its token.
    fn new_session(&self, name: &str) -> Result<String, UserError> {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>()?);
        let now = Instant::now();
        let mut s = lock(&self.sessions);
        if s.len() >= MAX_SESSIONS {
            s.retain(|_, x| live(x, now));
        }
        let mine: Vec<(&String, Instant)> =
            s.iter().filter(|(_, x)| x.username == name).map(|(t, x)| (t, x.last)).collect();
        let oldest_mine = (mine.len() >= MAX_PER_USER)
            .then(|| mine.iter().min_by_key(|(_, l)| *l).map(|(t, _)| (*t).clone()))
            .flatten();
        if let Some(t) = oldest_mine {
            s.remove(&t);
        }
        if s.len() >= MAX_SESSIONS {
            if let Some(t) = s.iter().min_by_key(|(_, x)| x.last).map(|(t, _)| t.clone()) {
                s.remove(&t);
            }
        }
        s.insert(token.clone(), Session { username: name.into(), created: now, last: now });
        Ok(token)
    }

    /// The user name of a live session (its use noted).
    fn session_user(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut s = lock(&self.sessions);
        match s.get_mut(token) {
            Some(x) if live(x, now) => {
                x.last = now;
                Some(x.username.clone())
            }
            Some(_) => {
                s.remove(token);
                None
            }
            None => None,
        }
    }

    /// Whether `password` is `user`'s (argon2 behind the semaphore; a missing user costs the
    /// same). Err: 503 when the verifications are all taken for too long.
    async fn verify(&self, password: String, user: Option<&User>) -> Result<bool, ApiError> {
        let hash = user.map_or_else(|| self.dummy_hash.clone(), |u| u.hash.clone());
        let permit = tokio::time::timeout(Duration::from_secs(10), self.argon.acquire())
            .await
            .map_err(|_| {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, "too many logins at once: try again".into())
            })?
            .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()))?;
        self.argon_runs.fetch_add(1, Ordering::Relaxed);
        let ok = tokio::task::spawn_blocking(move || users::verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        drop(permit);
        Ok(ok && user.is_some())
    }

    fn limited(&self, keys: &[LimitKey]) -> Option<Duration> {
        lock(&self.limiter).retry_after(keys, Instant::now())
    }

    /// Counts a failed login, and records it (and the moment it gets limited). A name that is
    /// no user's is not recorded as typed: people type their password there by mistake.
    fn failed(&self, keys: &[LimitKey], name: Option<&str>, peer: Peer, how: &str) {
        let newly = lock(&self.limiter).fail(keys, Instant::now());
        let (name, how) = match name {
            Some(n) => (n, how.to_string()),
            None => ("?", format!("{how}: no such user")),
        };
        self.activity.record(Entry::new(name, "login", "failed").source(peer.shown()).detail(how));
        if newly {
            self.activity.record(
                Entry::new(name, "login", "limited")
                    .source(peer.shown())
                    .detail(format!("{MAX_FAILURES} failures within {}s", WINDOW.as_secs())),
            );
        }
    }

    fn basic_digest(&self, name: &str, password: &str) -> [u8; 32] {
        use blake2::digest::Mac as _;
        type Mac32 = blake2::Blake2bMac<blake2::digest::consts::U32>;
        let mut mac = match <Mac32 as blake2::digest::KeyInit>::new_from_slice(&self.basic_key) {
            Ok(m) => m,
            // A 32-byte key is always taken; were it not, no two digests would match.
            Err(_) => return random().unwrap_or([0xff; 32]),
        };
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The caller a request's credentials name. Ok(None): no (usable) credentials.
    async fn caller(&self, headers: &HeaderMap, peer: Peer) -> Result<Option<Caller>, Response> {
        if let Some(token) = cookie(headers, COOKIE) {
            if let Some(name) = self.session_user(&token) {
                let users = self.users.clone();
                let lookup = name.clone();
                match users::blocking(move || users.get(&lookup)).await {
                    Ok(Some(u)) => return Ok(Some(Caller::of(&u))),
                    Ok(None) => self.sessions_end_for(&name),
                    Err(e) => return Err(e.into_response()),
                }
            }
        }
        let Some((name, password)) = basic(headers) else { return Ok(None) };
        let keys = [LimitKey::Addr(peer.ip()), LimitKey::User(limit_name(&name))];
        if let Some(wait) = self.limited(&keys) {
            return Err(too_many(wait));
        }
        let users = self.users.clone();
        let lookup = name.clone();
        let user = users::blocking(move || users.get(&lookup)).await.map_err(|e| e.into_response())?;
        let digest = self.basic_digest(&name, &password);
        if let Some(u) = &user {
            let now = Instant::now();
            let known = lock(&self.basic).get(&digest).is_some_and(|(h, until)| h == &u.hash && now < *until);
            if known {
                return Ok(Some(Caller::of(u)));
            }
        }
        if self.verify(password, user.as_ref()).await.map_err(|e| e.into_response())? {
            let u = user.as_ref().expect("verify is true only for a user that exists");
            lock(&self.limiter).succeed(&keys);
            let mut cache = lock(&self.basic);
            if cache.len() >= MAX_BASIC_CACHE {
                cache.clear();
            }
            cache.insert(digest, (u.hash.clone(), Instant::now() + BASIC_TTL));
            return Ok(Some(Caller::of(u)));
        }
        self.failed(&keys, user.as_ref().map(|_| name.as_str()), peer, "HTTP Basic");
        Err(unauthorized(headers, "Invalid username/password"))
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last) < IDLE && now.duration_since(s.created) < MAX_AGE
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A user name as a limiter key: bounded, so a long name cannot grow the table's memory.
fn limit_name(name: &str) -> String {
    name.chars().take(64).collect()
}

/// The value of cookie `name` among the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// `Authorization: Basic` credentials, when well-formed.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({"status": "error", "message": message}))).into_response()
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r =
        error(StatusCode::TOO_MANY_REQUESTS, &format!("too many failed logins: try again in {secs} s"));
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// 401; with `WWW-Authenticate: Basic` only for clients that are not browsers.
fn unauthorized(headers: &HeaderMap, message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    if !headers.contains_key("sec-fetch-mode") {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"minder-fleet\""));
    }
    r
}

/// Why a request comes from another site, if it does. A browser sends `Sec-Fetch-Site` with
/// every request and a page cannot forge it: anything but `same-origin` or `none` (typed in
/// the address bar) is another site. Without it (older browsers), an `Origin` that names
/// another host than `Host` (or a proxy's `X-Forwarded-Host`) is. Scripts send neither.
pub fn cross_site(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("?");
        return (!matches!(site, "same-origin" | "none")).then(|| format!("Sec-Fetch-Site: {site}"));
    }
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("?");
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    let hosts = [
        headers.get("x-forwarded-host").and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
        uri.authority().map(|a| a.as_str()),
    ];
    let same = origin_host.is_some_and(|o| hosts.iter().flatten().any(|h| h.eq_ignore_ascii_case(o)));
    (!same).then(|| format!("Origin: {}", origin.chars().take(100).collect::<String>()))
}

/// Whether a request may change something: any method but GET/HEAD/OPTIONS, and Cesi's GET
/// actions (`…/start/`, `…/stop/`, `…/restart/` under `/api/v2/nodes/`).
pub fn changes_state(method: &Method, path: &str) -> bool {
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    path.starts_with("/api/v2/nodes/") && matches!(last, "start" | "stop" | "restart")
}

/// Paths served without credentials: the login page, the assets, logging in and out.
fn public(path: &str) -> bool {
    matches!(
        path,
        "/login"
            | "/login/"
            | "/api/v2/auth/login"
            | "/api/v2/auth/login/"
            | "/api/v2/auth/logout"
            | "/api/v2/auth/logout/"
    ) || path.starts_with("/assets/")
}

/// The way from `path` to the login page, relative (`login`, `../login`, …).
fn to_login(path: &str) -> String {
    let depth = path.matches('/').count().saturating_sub(1);
    format!("{}login", "../".repeat(depth))
}

/// The middleware in front of every route (see the module doc).
pub async fn authenticate(State(fleet): State<Arc<Fleet>>, mut req: Request, next: Next) -> Response {
    let peer = Peer(req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0));
    req.extensions_mut().insert(peer);
    let path = req.uri().path().to_string();
    if changes_state(req.method(), &path) {
        if let Some(why) = cross_site(req.headers(), req.uri()) {
            tracing::warn!("a cross-site {} {path} from {} was refused ({why})", req.method(), peer.shown());
            return error(
                StatusCode::FORBIDDEN,
                &format!("a cross-site request cannot change anything ({why})"),
            );
        }
    }
    if public(&path) {
        return next.run(req).await;
    }
    let auth = fleet.auth().clone();
    match auth.caller(req.headers(), peer).await {
        Ok(Some(caller)) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Ok(None) if !path.starts_with("/api/") && matches!(*req.method(), Method::GET | Method::HEAD) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&to_login(&path)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Ok(None) => unauthorized(
            req.headers(),
            "log in: a session cookie, or HTTP Basic with a user's name and password",
        ),
        Err(r) => r,
    }
}

fn session_cookie(headers: &HeaderMap, value: &str, clear: bool) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let mut c = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/");
    if clear {
        c.push_str("; Max-Age=0");
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("minder_fleet_session=; Max-Age=0"))
}

#[derive(Debug, serde::Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

/// The fields of a urlencoded form or a JSON object.
fn login_body(headers: &HeaderMap, body: &[u8]) -> Result<LoginBody, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| body.trim_ascii_start().starts_with(b"{"), |t| t.contains("json"));
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    if json {
        return serde_json::from_slice(body).map_err(|e| bad(format!("the body is not a login's JSON: {e}")));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("the form is not UTF-8".into()))?;
    let fields = crate::activity::query_pairs(text);
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match (get("username"), get("password")) {
        (Some(username), Some(password)) => Ok(LoginBody { username, password }),
        _ => Err(bad("give username and password".into())),
    }
}

/// `POST /auth/login/`: `{username, password}` (JSON or a form) → the session cookie.
pub(crate) async fn login(
    State(fleet): State<Arc<Fleet>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let LoginBody { username, password } = login_body(&headers, &body)?;
    if username.len() > 200 || password.len() > users::MAX_PASSWORD {
        return Err(ApiError(StatusCode::BAD_REQUEST, "the name or the password is too long".into()));
    }
    let auth = fleet.auth().clone();
    let keys = [LimitKey::Addr(peer.ip()), LimitKey::User(limit_name(&username))];
    if let Some(wait) = auth.limited(&keys) {
        return Ok(too_many(wait));
    }
    let users = auth.users.clone();
    let lookup = username.clone();
    let user = users::blocking(move || users.get(&lookup)).await?;
    if !auth.verify(password, user.as_ref()).await? {
        auth.failed(&keys, user.as_ref().map(|_| username.as_str()), peer, "wrong password");
        return Err(ApiError(StatusCode::UNAUTHORIZED, "Invalid username/password".into()));
    }
    let user = user.expect("verify is true only for a user that exists");
    lock(&auth.limiter).succeed(&keys);
    let token = auth.new_session(&user.username).map_err(ApiError::from)?;
    auth.activity.record(Entry::new(&user.username, "login", "success").source(peer.shown()));
    let caller = Caller::of(&user);
    let mut r =
        Json(json!({"status": "success", "message": "Valid username/password", "user": caller.json()}))
            .into_response();
    r.headers_mut().insert(header::SET_COOKIE, session_cookie(&headers, &token, false));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `POST /auth/logout/`: the session ends here, for good, and the cookie is cleared.
pub(crate) async fn logout(
    State(fleet): State<Arc<Fleet>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let auth = fleet.auth();
    if let Some(token) = cookie(&headers, COOKIE) {
        if let Some(s) = lock(&auth.sessions).remove(&token) {
            auth.activity.record(Entry::new(&s.username, "logout", "success").source(peer.shown()));
        }
    }
    let mut r = Json(json!({"status": "success", "message": "Logout"})).into_response();
    r.headers_mut().insert(header::SET_COOKIE, session_cookie(&headers, "", true));
    r
}

/// `GET /profile/`: who the caller is.
pub(crate) async fn profile(Extension(caller): Extension<Caller>) -> Response {
    Json(json!({"status": "success", "user": caller.json()})).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    #[serde(alias = "oldPassword", alias = "oldpassword")]
    old_password: String,
    #[serde(alias = "newPassword", alias = "newpassword")]
    new_password: String,
    /// Cesi's older form sends a confirmation; when given it must match.
    #[serde(alias = "confirmPassword", alias = "confirmpassword")]
    confirm_password: Option<String>,
}

/// `PUT /profile/password/` (or POST): the caller's own password, given the old one. The
/// caller's other sessions end; a wrong old password counts as a failed login.
pub(crate) async fn change_password(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let change: PasswordChange = users::parse_json(body, "a password change")?;
    if change.confirm_password.as_ref().is_some_and(|c| c != &change.new_password) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "the new passwords do not match".into()));
    }
    users::check_password(&change.new_password)?;
    let auth = fleet.auth().clone();
    let keys = [LimitKey::Addr(peer.ip()), LimitKey::User(limit_name(&caller.username))];
    if let Some(wait) = auth.limited(&keys) {
        return Ok(too_many(wait));
    }
    let users = auth.users.clone();
    let name = caller.username.clone();
    let user = users::blocking(move || users.get(&name)).await?;
    if !auth.verify(change.old_password, user.as_ref()).await? {
        auth.failed(&keys, Some(&caller.username), peer, "wrong old password");
        return Err(ApiError(StatusCode::BAD_REQUEST, "Old password is wrong".into()));
    }
    let users = auth.users.clone();
    let name = caller.username.clone();
    users::blocking(move || users.set_password(&name, &change.new_password)).await?;
    auth.forget_credentials();
    auth.end_sessions(&caller.username, cookie(&headers, COOKIE).as_deref());
    auth.activity.record(Entry::new(&caller.username, "password change", "success").source(peer.shown()));
    Ok(Json(json!({"status": "success"})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_per_address_and_name_and_cools_down() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let a = [LimitKey::Addr(Some([127, 0, 0, 1].into())), LimitKey::User("root".into())];
        let other = [LimitKey::Addr(Some([127, 0, 0, 2].into())), LimitKey::User("bob".into())];
        for i in 0..MAX_FAILURES {
            assert_eq!(l.retry_after(&a, t0), None);
            assert_eq!(l.fail(&a, t0), i + 1 == MAX_FAILURES);
        }
        assert_eq!(l.retry_after(&a, t0), Some(WINDOW));
        assert_eq!(l.retry_after(&a, t0 + Duration::from_secs(45)), Some(Duration::from_secs(15)));
        assert_eq!(l.retry_after(&other, t0), None, "another address and name are not limited");
        // The same name from another address is: a flood spread over addresses still stops.
        let same_name = [LimitKey::Addr(Some([127, 0, 0, 3].into())), LimitKey::User("root".into())];
        assert!(l.retry_after(&same_name, t0).is_some());
        assert_eq!(l.retry_after(&a, t0 + WINDOW), None);
        l.fail(&a, t0 + WINDOW);
        assert_eq!(l.retry_after(&a, t0 + WINDOW), None, "a new window starts from one failure");
    }

    #[test]
    fn a_full_limiter_refuses_new_sources_only_while_its_windows_last() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED {
            l.fail(&[LimitKey::User(format!("u{i}"))], t0);
        }
        let new = [LimitKey::User("new".into())];
        assert_eq!(l.retry_after(&new, t0), Some(WINDOW), "full: a new source is refused");
        assert_eq!(l.retry_after(&new, t0 + WINDOW), None, "the windows ended: the table empties");
        assert!(l.map.is_empty());
    }

    #[test]
    fn cross_site_requests_are_told_from_same_site_and_scripts() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        let uri: axum::http::Uri = "/api/v2/users/".parse().expect("uri");
        assert_eq!(cross_site(&h(&[]), &uri), None);
        assert_eq!(cross_site(&h(&[("sec-fetch-site", "same-origin")]), &uri), None);
        for site in ["cross-site", "same-site"] {
            let hm = h(&[("sec-fetch-site", site), ("host", "f:5000"), ("origin", "http://f:5000")]);
            assert!(cross_site(&hm, &uri).is_some());
        }
        assert_eq!(cross_site(&h(&[("host", "f:5000"), ("origin", "http://f:5000")]), &uri), None);
        assert!(cross_site(&h(&[("host", "f:5000"), ("origin", "http://evil.example")]), &uri).is_some());
        assert!(changes_state(&Method::GET, "/api/v2/nodes/n/processes/web:app/stop/"));
        assert!(changes_state(&Method::GET, "/api/v2/nodes/n/all-processes/restart"));
        assert!(!changes_state(&Method::GET, "/api/v2/nodes/n/processes/web:app/log/"));
        assert!(changes_state(&Method::DELETE, "/api/v2/activitylogs/"));
        assert_eq!((to_login("/"), to_login("/a/b")), ("login".to_string(), "../login".to_string()));
    }

    #[test]
    fn sessions_are_random_bounded_per_user_and_end_when_idle() {
        let dir = tempfile::tempdir().expect("dir");
        let cfg = crate::config::parse("", &dir.path().join("f.toml")).expect("config");
        let auth = Auth::open(&cfg).expect("auth");
        let tokens: Vec<String> =
            (0..=MAX_PER_USER).map(|_| auth.new_session("a").expect("a session")).collect();
        assert!(tokens.iter().all(|t| t.len() == 43), "256 bits, base64url");
        let distinct: std::collections::HashSet<&String> = tokens.iter().collect();
        assert_eq!(distinct.len(), tokens.len());
        let live_ones = tokens.iter().filter(|t| auth.session_user(t).as_deref() == Some("a")).count();
        assert_eq!(live_ones, MAX_PER_USER, "one more login ends the least recently used");
        let b = auth.new_session("b").expect("b");
        assert_eq!(auth.session_user(&b).as_deref(), Some("b"), "another user's logins do not count");
        auth.sessions_end_for("b");
        assert_eq!(auth.session_user(&b), None);
        let now = Instant::now();
        if let (Some(idle), Some(old)) = (now.checked_sub(IDLE), now.checked_sub(MAX_AGE)) {
            assert!(!live(&Session { username: "a".into(), created: now, last: idle }, now));
            assert!(!live(&Session { username: "a".into(), created: old, last: now }, now));
        }
        assert!(live(&Session { username: "a".into(), created: now, last: now }, now));
    }

    #[test]
    fn cookies_and_basic_are_read_strictly() {
        let mut m = HeaderMap::new();
        m.append(header::COOKIE, HeaderValue::from_static("a=1; minder_fleet_session=tok; b=2"));
        assert_eq!(cookie(&m, COOKIE).as_deref(), Some("tok"));
        m.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dTpwOnE="));
        assert_eq!(basic(&m), Some(("u".into(), "p:q".into())));
        m.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic(&m), None);
    }
}
