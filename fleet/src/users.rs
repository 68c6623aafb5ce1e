//! The fleet's users: a SQLite table (Cesi's own `users`, with one more column), passwords as
//! argon2id PHC strings, and the admin routes that manage them.
//!
//! The table is Cesi's — `users(id, username, password, usertype)`, usertype 0 = admin and
//! 1 = normal user — so a `sqlite:///users.db` of Cesi's opens as it is; minder-fleet adds the
//! column `environments` (a JSON list, NULL for every environment) and usertype 2 for a viewer.
//! Cesi stored werkzeug hashes: such a user cannot log in until given a new password
//! (`minder-fleet user passwd NAME`), which the fleet's log says at start.
//!
//! The database is `[cesi] database` (Cesi's `sqlite:///relative` or `sqlite:////absolute`
//! URI, or a plain path; a relative path is relative to the configuration file's directory),
//! by default `fleet.db` beside the configuration file. It is created with mode 0600, and an
//! existing one is narrowed to 0600: it holds password hashes. SQLite's journal files take the
//! database's mode.
//!
//! Every call here is blocking (SQLite, argon2): async code calls it in `spawn_blocking`.

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::{Extension, Json};
use rusqlite::{params, Connection, OptionalExtension as _};
use serde_json::json;

use crate::activity::Entry;
use crate::api::ApiError;
use crate::auth::Caller;
use crate::config::{is_plain_name, FleetConfig};
use crate::Fleet;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: user management and the activity log too (Cesi's usertype 0).
    Admin,
    /// Process, group and node actions, and all a viewer may (Cesi's usertype 1).
    Operator,
    /// Reads only: nodes, processes, logs, streams.
    Viewer,
}

impl Role {
    pub fn usertype(self) -> i64 {
        match self {
            Role::Admin => 0,
            Role::Operator => 1,
            Role::Viewer => 2,
        }
    }

    pub fn from_usertype(t: i64) -> Option<Role> {
        match t {
            0 => Some(Role::Admin),
            1 => Some(Role::Operator),
            2 => Some(Role::Viewer),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

/// One user as stored (the hash never leaves this module but to be verified).
#[derive(Clone)]
pub struct User {
    pub username: String,
    pub role: Role,
    /// The environments the user is restricted to; None for all.
    pub environments: Option<Vec<String>>,
    pub(crate) hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("environments", &self.environments)
            .finish_non_exhaustive()
    }
}

impl User {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "username": self.username,
            "role": self.role,
            "usertype": self.role.usertype(),
            "environments": self.environments,
        })
    }
}

/// Why a user operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("the user database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the user database {0}: {1}")]
    Open(String, String),
    #[error("a user named {0:?} exists already")]
    Exists(String),
    #[error("no user named {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0:?} is the last administrator: add another admin first")]
    LastAdmin(String),
    #[error("hashing the password failed: {0}")]
    Hash(String),
}

/// The shortest password taken (the same bound as `[cesi] admin_password`).
pub const MIN_PASSWORD: usize = 8;
/// The longest password taken: argon2 takes any length, a request body need not.
pub const MAX_PASSWORD: usize = 1024;

/// Checks a new user name: what a path segment and a log line can carry as they are.
pub fn check_username(name: &str) -> Result<(), UserError> {
    if name.len() <= 64 && is_plain_name(name) {
        Ok(())
    } else {
        Err(UserError::Invalid("a user name is 1 to 64 letters, digits, '-', '_', '.', '@' or '+'".into()))
    }
}

pub fn check_password(pw: &str) -> Result<(), UserError> {
    let n = pw.chars().count();
    if n < MIN_PASSWORD || pw.len() > MAX_PASSWORD {
        return Err(UserError::Invalid(format!(
            "a password has at least {MIN_PASSWORD} characters (and at most {MAX_PASSWORD} bytes)"
        )));
    }
    Ok(())
}

pub fn check_environments(envs: &[String]) -> Result<(), UserError> {
    match envs.iter().find(|e| !is_plain_name(e)) {
        Some(e) => Err(UserError::Invalid(format!("{e:?} is not an environment name"))),
        None if envs.len() > 256 => Err(UserError::Invalid("at most 256 environments".into())),
        None => Ok(()),
    }
}

/// An argon2id PHC string of `password` (default parameters, a random 128-bit salt).
pub fn hash_password(password: &str) -> Result<String, UserError> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| UserError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| UserError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// Whether `password` is the one `phc` was made from. Anything that is not an argon2 PHC
/// string (Cesi's werkzeug hashes) verifies nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
    match PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// Where the database is: `[cesi] database`, or `fleet.db` beside the configuration.
pub fn database_path(config: &FleetConfig) -> PathBuf {
    let base = config.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let given = config.database.as_deref().unwrap_or("fleet.db");
    // SQLAlchemy's form, as Cesi writes it: sqlite:///relative or sqlite:////absolute.
    let plain = given.strip_prefix("sqlite:///").unwrap_or(given);
    base.join(plain)
}

/// Opens (creating with mode 0600) the SQLite file at `path`, with the fleet's tables.
pub fn open_connection(path: &Path) -> Result<Connection, UserError> {
    let shown = path.display().to_string();
    let open_err = |e: &dyn std::fmt::Display| UserError::Open(shown.clone(), e.to_string());
    // Never open and close a descriptor of a database this process may have open in SQLite:
    // closing one drops every POSIX lock the process holds on the file, SQLite's included, and
    // another process would then take the database for unused (and checkpoint away its WAL
    // under our feet). So: created here (0600, exclusively) only when it does not exist yet,
    // and an existing one is checked and narrowed by path.
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| open_err(&e))?;
        }
        Err(e) => return Err(open_err(&e)),
        Ok(meta) if !meta.is_file() => return Err(open_err(&"not a regular file")),
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            tracing::warn!("{shown} could be read by others: its mode is now 0600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| open_err(&e))?;
        }
        Ok(_) => {}
    }
    let conn = Connection::open(path).map_err(|e| open_err(&e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: the activity writer and the readers do not wait for each other.
    let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL;
         CREATE TABLE IF NOT EXISTS users (
             id INTEGER PRIMARY KEY,
             username VARCHAR(64) UNIQUE NOT NULL,
             password VARCHAR(255) NOT NULL,
             usertype INTEGER NOT NULL,
             environments TEXT);
         CREATE TABLE IF NOT EXISTS activity (
             id INTEGER PRIMARY KEY,
             at REAL NOT NULL,
             user TEXT NOT NULL,
             source TEXT,
             action TEXT NOT NULL,
             node TEXT,
             process TEXT,
             result TEXT NOT NULL,
             detail TEXT);
         CREATE INDEX IF NOT EXISTS activity_at ON activity(at);",
    )?;
    // Cesi's table has no environments column.
    let has_envs = conn
        .prepare("PRAGMA table_info(users)")?
        .query_map([], |r| r.get::<_, String>(1))?
        .filter_map(Result::ok)
        .any(|c| c == "environments");
    if !has_envs {
        conn.execute_batch("ALTER TABLE users ADD COLUMN environments TEXT")?;
    }
    Ok(conn)
}

/// The users table, behind one connection (each call holds the lock only for its query).
#[derive(Debug)]
pub struct Users {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn row_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64, Option<String>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_user((username, hash, usertype, envs): (String, String, i64, Option<String>)) -> Option<User> {
    let role = Role::from_usertype(usertype)?;
    // A list that does not parse restricts to nothing rather than to everything.
    let environments = envs.map(|text| serde_json::from_str::<Vec<String>>(&text).unwrap_or_default());
    Some(User { username, role, environments, hash })
}

impl Users {
    pub fn open(path: &Path) -> Result<Users, UserError> {
        Ok(Users { conn: Mutex::new(open_connection(path)?), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The user `name`; None when there is none (or its usertype is not one of ours).
    pub fn get(&self, name: &str) -> Result<Option<User>, UserError> {
        Ok(find_user(&self.conn(), name)?)
    }

    pub fn list(&self) -> Result<Vec<User>, UserError> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT username, password, usertype, environments FROM users ORDER BY username")?;
        let rows = st.query_map([], row_user)?;
        Ok(rows.filter_map(Result::ok).filter_map(to_user).collect())
    }

    /// Adds a user (the password hashed here).
    pub fn add(
        &self,
        name: &str,
        password: &str,
        role: Role,
        environments: Option<&[String]>,
    ) -> Result<(), UserError> {
        check_username(name)?;
        check_password(password)?;
        if let Some(e) = environments {
            check_environments(e)?;
        }
        let hash = hash_password(password)?;
        let envs = environments.map(|e| serde_json::Value::from(e.to_vec()).to_string());
        // Checked, not left to a constraint: Cesi's own table may lack the UNIQUE one.
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let exists: bool = tx
            .query_row("SELECT count(*) FROM users WHERE username = ?1", [name], |r| r.get::<_, i64>(0))?
            > 0;
        if exists {
            return Err(UserError::Exists(name.into()));
        }
        tx.execute(
            "INSERT INTO users (username, password, usertype, environments) VALUES (?1, ?2, ?3, ?4)",
            params![name, hash, role.usertype(), envs],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_password(&self, name: &str, password: &str) -> Result<(), UserError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        let n =
            self.conn().execute("UPDATE users SET password = ?1 WHERE username = ?2", params![hash, name])?;
        if n == 0 {
            return Err(UserError::NotFound(name.into()));
        }
        Ok(())
    }

    /// Changes a user's role and/or environments (None leaves it; `Some(None)` lifts a
    /// restriction). The last administrator cannot be demoted.
    pub fn update(
        &self,
        name: &str,
        role: Option<Role>,
        environments: Option<Option<&[String]>>,
    ) -> Result<User, UserError> {
        if let Some(Some(e)) = environments {
            check_environments(e)?;
        }
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let user = find_user(&tx, name)?.ok_or_else(|| UserError::NotFound(name.into()))?;
        if let Some(r) = role {
            if user.role == Role::Admin && r != Role::Admin && admins(&tx)? <= 1 {
                return Err(UserError::LastAdmin(name.into()));
            }
            tx.execute("UPDATE users SET usertype = ?1 WHERE username = ?2", params![r.usertype(), name])?;
        }
        if let Some(e) = environments {
            let text = e.map(|e| serde_json::Value::from(e.to_vec()).to_string());
            tx.execute("UPDATE users SET environments = ?1 WHERE username = ?2", params![text, name])?;
        }
        let user = find_user(&tx, name)?.ok_or_else(|| UserError::NotFound(name.into()))?;
        tx.commit()?;
        Ok(user)
    }

    /// Removes a user; the last administrator cannot be removed.
    pub fn remove(&self, name: &str) -> Result<(), UserError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let usertype: Option<i64> = tx
            .query_row("SELECT usertype FROM users WHERE username = ?1", [name], |r| r.get(0))
            .optional()?;
        match usertype {
            None => return Err(UserError::NotFound(name.into())),
            Some(0) if admins(&tx)? <= 1 => return Err(UserError::LastAdmin(name.into())),
            Some(_) => {}
        }
        tx.execute("DELETE FROM users WHERE username = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    /// The configuration's administrator: made an admin with this password (added if absent;
    /// the hash is rewritten only when the password changed).
    pub fn ensure_admin(&self, name: &str, password: &str) -> Result<&'static str, UserError> {
        check_username(name)?;
        match self.get(name)? {
            None => {
                self.add(name, password, Role::Admin, None)?;
                Ok("added")
            }
            Some(u) => {
                if !verify_password(password, &u.hash) {
                    self.set_password(name, password)?;
                }
                if u.role != Role::Admin || u.environments.is_some() {
                    self.update(name, Some(Role::Admin), Some(None))?;
                }
                Ok("updated")
            }
        }
    }

    /// How many users there are, and the names of those whose hash is not argon2 (Cesi's).
    pub fn census(&self) -> Result<(usize, Vec<String>), UserError> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT username, password FROM users")?;
        let rows: Vec<(String, String)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.filter_map(Result::ok).collect();
        let old = rows.iter().filter(|(_, h)| !h.starts_with("$argon2")).map(|(u, _)| u.clone()).collect();
        Ok((rows.len(), old))
    }
}

/// The user `name`, if there is one (and its role is one this fleet knows).
fn find_user(conn: &Connection, name: &str) -> rusqlite::Result<Option<User>> {
    let row = conn
        .query_row(
            "SELECT username, password, usertype, environments FROM users WHERE username = ?1",
            [name],
            row_user,
        )
        .optional()?;
    Ok(row.and_then(to_user))
}

fn admins(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM users WHERE usertype = 0", [], |r| r.get(0))
}

// ---- the admin routes: /api/v2/users/ ----

impl From<UserError> for ApiError {
    fn from(e: UserError) -> ApiError {
        let code = match e {
            UserError::Exists(_) => StatusCode::CONFLICT,
            UserError::NotFound(_) => StatusCode::NOT_FOUND,
            UserError::Invalid(_) => StatusCode::BAD_REQUEST,
            UserError::LastAdmin(_) => StatusCode::CONFLICT,
            UserError::Sql(_) | UserError::Open(..) | UserError::Hash(_) => {
                tracing::error!("{e}");
                return ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the user database failed: see the fleet's log".into(),
                );
            }
        };
        ApiError(code, e.to_string())
    }
}

/// Runs a blocking user-store call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UserError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("the user database task failed: {e}")))
        }
    }
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError(StatusCode::FORBIDDEN, "only an admin may manage users".into()))
    }
}

/// `POST /users/`: `{username, password, role}` (or Cesi's `usertype` 0|1|2), optional
/// `environments`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    role: Option<String>,
    usertype: Option<serde_json::Value>,
    environments: Option<Vec<String>>,
    /// Cesi's older form sends a confirmation; when given it must match.
    confirmpassword: Option<String>,
}

/// `PUT /users/<u>/`: any of role/usertype, environments (null lifts the restriction), password.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    role: Option<String>,
    usertype: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "some_or_null")]
    environments: Option<Option<Vec<String>>>,
    password: Option<String>,
}

/// Tells a field given as null (`Some(None)`) from one left out (`None`).
fn some_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Vec<String>>>, D::Error> {
    <Option<Vec<String>> as serde::Deserialize>::deserialize(d).map(Some)
}

fn role_of(role: Option<&str>, usertype: Option<&serde_json::Value>) -> Result<Option<Role>, ApiError> {
    let bad = |what: String| ApiError(StatusCode::BAD_REQUEST, what);
    match (role, usertype) {
        (Some(r), _) => Role::parse(r)
            .map(Some)
            .ok_or_else(|| bad(format!("{r:?} is not a role: admin, operator or viewer"))),
        (None, Some(t)) => {
            // Cesi sends usertype as a number or a numeric string.
            let n = t.as_i64().or_else(|| t.as_str().and_then(|s| s.trim().parse().ok()));
            n.and_then(Role::from_usertype)
                .map(Some)
                .ok_or_else(|| bad("usertype is 0 (admin), 1 (operator) or 2 (viewer)".into()))
        }
        (None, None) => Ok(None),
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    what: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("the body is not {what}'s JSON: {e}")))
}

pub(crate) async fn list(State(fleet): State<Arc<Fleet>>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(e) = require_admin(&caller) {
        return e.into_response();
    }
    let users = fleet.auth().users.clone();
    match blocking(move || users.list()).await {
        Ok(list) => {
            Json(json!({"status": "success", "users": list.iter().map(User::json).collect::<Vec<_>>()}))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn add(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let new: NewUser = parse_json(body, "a new user")?;
    let role = role_of(new.role.as_deref(), new.usertype.as_ref())?
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "give a role: admin, operator or viewer".into()))?;
    if new.confirmpassword.as_ref().is_some_and(|c| c != &new.password) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "the passwords do not match".into()));
    }
    let auth = fleet.auth().clone();
    let name = new.username.clone();
    let envs = new.environments.clone();
    let r = {
        let users = auth.users.clone();
        let name = name.clone();
        blocking(move || users.add(&name, &new.password, role, envs.as_deref())).await
    };
    let detail = format!("role {}{}", role.as_str(), envs_detail(new.environments.as_deref()));
    auth.activity
        .record(Entry::new(&caller.username, "user add", result_word(&r)).target_user(&name).detail(detail));
    r?;
    auth.forget_credentials();
    Ok(Json(json!({"status": "success", "message": "User added"})).into_response())
}

fn envs_detail(envs: Option<&[String]>) -> String {
    match envs {
        None => String::new(),
        Some(e) => format!(", environments {}", e.join(",")),
    }
}

fn result_word<T>(r: &Result<T, ApiError>) -> &'static str {
    match r {
        Ok(_) => "success",
        Err(_) => "error",
    }
}

pub(crate) async fn update(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let change: UserChange = parse_json(body, "a user change")?;
    let role = role_of(change.role.as_deref(), change.usertype.as_ref())?;
    let auth = fleet.auth().clone();
    let mut what = Vec::new();
    if let Some(r) = role {
        what.push(format!("role {}", r.as_str()));
    }
    match &change.environments {
        Some(Some(e)) => what.push(format!("environments {}", e.join(","))),
        Some(None) => what.push("every environment".into()),
        None => {}
    }
    if change.password.is_some() {
        what.push("password".into());
    }
    let r = {
        let users = auth.users.clone();
        let name = name.clone();
        blocking(move || {
            if let Some(pw) = &change.password {
                check_password(pw)?;
            }
            let user = users.update(&name, role, change.environments.as_ref().map(|e| e.as_deref()))?;
            if let Some(pw) = &change.password {
                users.set_password(&name, pw)?;
            }
            Ok(user)
        })
        .await
    };
    auth.activity.record(
        Entry::new(&caller.username, "user change", result_word(&r))
            .target_user(&name)
            .detail(what.join(", ")),
    );
    let user = r?;
    auth.forget_credentials();
    Ok(Json(json!({"status": "success", "user": user.json()})).into_response())
}

pub(crate) async fn remove(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let auth = fleet.auth().clone();
    let r = {
        let users = auth.users.clone();
        let name = name.clone();
        blocking(move || users.remove(&name)).await
    };
    auth.activity.record(Entry::new(&caller.username, "user remove", result_word(&r)).target_user(&name));
    r?;
    auth.forget_credentials();
    auth.sessions_end_for(&name);
    Ok(Json(json!({"status": "success"})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cesi_database_opens_and_gets_its_new_column_and_mode() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("users.db");
        {
            let c = Connection::open(&path).expect("open");
            c.execute_batch(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(16), password VARCHAR(64), usertype INTEGER);
                 INSERT INTO users (username, password, usertype) VALUES ('old', 'pbkdf2:sha256:1$x$y', 1);",
            )
            .expect("cesi's table");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let users = Users::open(&path).expect("opens");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        let old = users.get("old").expect("query").expect("the Cesi user");
        assert_eq!((old.role, old.environments.clone()), (Role::Operator, None));
        assert!(!verify_password("anything", &old.hash));
        assert_eq!(users.census().expect("census"), (1, vec!["old".to_string()]));
        users.add("v", "viewer-pw-1", Role::Viewer, Some(&["prod".into()])).expect("add");
        let v = users.get("v").expect("query").expect("v");
        assert_eq!((v.role, v.environments.clone()), (Role::Viewer, Some(vec!["prod".to_string()])));
        assert!(v.hash.starts_with("$argon2id$") && verify_password("viewer-pw-1", &v.hash));
        assert!(!verify_password("viewer-pw-2", &v.hash));
        assert!(matches!(users.add("v", "another-pw", Role::Admin, None), Err(UserError::Exists(_))));
        assert!(matches!(users.add("w", "short", Role::Admin, None), Err(UserError::Invalid(_))));
        assert!(matches!(users.add("../w", "long-enough", Role::Admin, None), Err(UserError::Invalid(_))));
    }

    #[test]
    fn the_last_admin_stays() {
        let dir = tempfile::tempdir().expect("dir");
        let users = Users::open(&dir.path().join("f.db")).expect("opens");
        assert_eq!(users.ensure_admin("root", "first-password").expect("admin"), "added");
        assert!(matches!(users.remove("root"), Err(UserError::LastAdmin(_))));
        assert!(matches!(users.update("root", Some(Role::Viewer), None), Err(UserError::LastAdmin(_))));
        users.add("second", "second-password", Role::Admin, None).expect("add");
        users.update("root", Some(Role::Operator), Some(Some(&["a".into()]))).expect("demoted now");
        // The configuration's admin is made admin again, with its password, at the next start.
        assert_eq!(users.ensure_admin("root", "new-password-1").expect("admin"), "updated");
        let root = users.get("root").expect("q").expect("root");
        assert_eq!((root.role, root.environments.clone()), (Role::Admin, None));
        assert!(verify_password("new-password-1", &root.hash));
        users.remove("second").expect("removed");
        assert!(users.get("second").expect("q").is_none());
    }

    #[test]
    fn database_paths_take_cesis_uri_and_plain_paths_beside_the_configuration() {
        let mut c = crate::config::parse("", Path::new("/etc/fleet/cesi.conf.toml")).expect("empty config");
        assert_eq!(database_path(&c), Path::new("/etc/fleet/fleet.db"));
        c.database = Some("sqlite:///users.db".into());
        assert_eq!(database_path(&c), Path::new("/etc/fleet/users.db"));
        c.database = Some("sqlite:////var/lib/f.db".into());
        assert_eq!(database_path(&c), Path::new("/var/lib/f.db"));
        c.database = Some("db/u.db".into());
        assert_eq!(database_path(&c), Path::new("/etc/fleet/db/u.db"));
    }
}
