//! The activity log: who did what, to which node and process, from where, and how it ended.
//!
//! Every login (success, failure, and the moment a source or name gets rate-limited), logout,
//! process/group/node action (denied ones too), log read and user change is recorded — never a
//! password. Entries go to the `activity` table of the fleet's database and, when
//! `[cesi] activity_log` is set, as Cesi-style lines to that file too (appended, created 0600,
//! never through a symbolic link; relative to the configuration's directory).
//!
//! One thread owns the writing connection and the file: [`Activity::record`] never waits (a
//! bounded queue; when it is full the entry is counted and reported in the fleet's log, not
//! waited for). Queries and clearing go through the same queue, so they see every entry
//! recorded before them. The table keeps the newest [`MAX_ROWS`] entries; the file is the
//! long-term trail (rotate it with logrotate's copytruncate).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::{Extension, Json};
use rusqlite::{params, Connection};
use serde_json::json;

use crate::api::ApiError;
use crate::auth::Caller;
use crate::Fleet;

/// How many entries the table keeps (older ones are pruned; the file keeps everything).
pub const MAX_ROWS: i64 = 100_000;
/// How many entries may wait for the writer.
const QUEUE: usize = 8192;
/// The most entries one query returns.
pub const MAX_LIMIT: usize = 10_000;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    /// Unix time, in seconds.
    pub at: f64,
    pub user: String,
    /// The client's address, for logins.
    pub source: Option<String>,
    /// `login`, `logout`, `start`, `stop`, `restart`, `log`, `user add`, …
    pub action: String,
    pub node: Option<String>,
    pub process: Option<String>,
    /// `success`, `error`, `denied`, `failed`, `limited`, or a count of failures.
    pub result: String,
    pub detail: Option<String>,
}

impl Entry {
    pub fn new(user: &str, action: &str, result: &str) -> Entry {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Entry {
            at,
            user: bounded(user),
            source: None,
            action: action.into(),
            node: None,
            process: None,
            result: result.into(),
            detail: None,
        }
    }

    pub fn source(mut self, s: impl ToString) -> Entry {
        self.source = Some(bounded(&s.to_string()));
        self
    }

    pub fn node(mut self, n: &str) -> Entry {
        self.node = Some(bounded(n));
        self
    }

    pub fn process(mut self, p: &str) -> Entry {
        self.process = Some(bounded(p));
        self
    }

    pub fn detail(mut self, d: impl Into<String>) -> Entry {
        let d: String = d.into();
        self.detail = (!d.is_empty()).then(|| bounded(&d));
        self
    }

    /// The user an admin acted on (kept as the entry's detail prefix).
    pub fn target_user(self, name: &str) -> Entry {
        let name = bounded(name);
        self.detail(format!("user {name}"))
    }

    /// Cesi's text line: `2026-12-02 04:00:00,123 - INFO - …`.
    pub fn line(&self) -> String {
        let when = chrono::DateTime::from_timestamp(self.at as i64, ((self.at.fract()) * 1e9) as u32)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S,%3f").to_string())
            .unwrap_or_default();
        let level = if matches!(self.result.as_str(), "success") { "INFO" } else { "ERROR" };
        let mut s = format!("{when} - {level} - {} {}", self.user, self.action);
        if let Some(p) = &self.process {
            s.push_str(&format!(" {p}"));
        }
        if let Some(n) = &self.node {
            s.push_str(&format!(" on {n}"));
        }
        s.push_str(&format!(": {}", self.result));
        if let Some(d) = &self.detail {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(src) = &self.source {
            s.push_str(&format!(" from {src}"));
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        let time = chrono::DateTime::from_timestamp(self.at as i64, 0).map(|t| t.to_rfc3339());
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("time".into(), time.into());
        }
        v
    }
}

/// What a client wrote, bounded and on one line: an entry can neither grow without end nor
/// forge a line of its own in the text file.
fn bounded(s: &str) -> String {
    s.chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Which entries a query wants (all given fields must match), newest first.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub user: Option<String>,
    pub node: Option<String>,
    pub action: Option<String>,
    pub result: Option<String>,
    /// Unix seconds: entries at or after.
    pub since: Option<f64>,
    pub limit: usize,
}

enum Msg {
    Record(Entry),
    Query(Filter, tokio::sync::oneshot::Sender<rusqlite::Result<Vec<Entry>>>),
    Clear(tokio::sync::oneshot::Sender<rusqlite::Result<usize>>),
}

/// The log's handle: cheap to share, never blocks.
#[derive(Debug, Clone)]
pub struct Activity {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Record(_) => "Record",
            Msg::Query(..) => "Query",
            Msg::Clear(_) => "Clear",
        })
    }
}

/// Opens Cesi's activity text file: appended, made 0600 if new, never a link or a non-file.
pub fn open_text_file(path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

impl Activity {
    /// Starts the writer thread on its own connection to `db`, and on `file` if given.
    pub fn start(db: &Path, file: Option<PathBuf>) -> Result<Activity, crate::users::UserError> {
        let conn = crate::users::open_connection(db)?;
        let text = match &file {
            None => None,
            Some(p) => match open_text_file(p) {
                Ok(f) => Some(f),
                Err(e) => {
                    return Err(crate::users::UserError::Open(p.display().to_string(), e.to_string()));
                }
            },
        };
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        std::thread::Builder::new()
            .name("fleet-activity".into())
            .spawn(move || writer(conn, text, rx))
            .map_err(|e| crate::users::UserError::Open("the activity writer".into(), e.to_string()))?;
        Ok(Activity { tx, dropped: Arc::new(AtomicU64::new(0)) })
    }

    /// Records `e` (never waits: a full queue drops it, counted and logged).
    pub fn record(&self, e: Entry) {
        tracing::info!(target: "minder_fleet::activity", "{}", e.line());
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Record(e)) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!("the activity log's queue is full: {n} entries not stored");
            }
        }
    }

    pub async fn query(&self, f: Filter) -> Result<Vec<Entry>, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::Query(f, tx))?;
        rx.await
            .map_err(|_| busy())?
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("the activity log: {e}")))
    }

    pub async fn clear(&self) -> Result<usize, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::Clear(tx))?;
        rx.await
            .map_err(|_| busy())?
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("the activity log: {e}")))
    }

    fn send(&self, m: Msg) -> Result<(), ApiError> {
        self.tx.try_send(m).map_err(|_| busy())
    }
}

/// Records `e` at once, from a process that runs no writer thread (the `user` command line).
pub fn record_now(db: &Path, file: Option<&Path>, e: &Entry) -> Result<(), crate::users::UserError> {
    if let Some(p) = file {
        let mut f = open_text_file(p)
            .map_err(|err| crate::users::UserError::Open(p.display().to_string(), err.to_string()))?;
        writeln!(f, "{}", e.line())
            .map_err(|err| crate::users::UserError::Open(p.display().to_string(), err.to_string()))?;
    }
    let conn = crate::users::open_connection(db)?;
    conn.execute(
        "INSERT INTO activity (at, user, source, action, node, process, result, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![e.at, e.user, e.source, e.action, e.node, e.process, e.result, e.detail],
    )?;
    Ok(())
}

fn busy() -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, "the activity log is busy: try again".into())
}

fn writer(conn: Connection, mut file: Option<std::fs::File>, rx: std::sync::mpsc::Receiver<Msg>) {
    let mut since_prune = 0u32;
    while let Ok(m) = rx.recv() {
        match m {
            Msg::Record(e) => {
                if let Some(f) = &mut file {
                    if let Err(err) = writeln!(f, "{}", e.line()) {
                        tracing::warn!("the activity log file: {err}");
                    }
                }
                let r = conn.execute(
                    "INSERT INTO activity (at, user, source, action, node, process, result, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![e.at, e.user, e.source, e.action, e.node, e.process, e.result, e.detail],
                );
                if let Err(err) = r {
                    tracing::warn!("the activity table: {err}");
                }
                since_prune += 1;
                if since_prune >= 1000 {
                    since_prune = 0;
                    let _ = conn.execute(
                        "DELETE FROM activity WHERE id <= (SELECT max(id) FROM activity) - ?1",
                        [MAX_ROWS],
                    );
                }
            }
            Msg::Query(f, reply) => {
                let _ = reply.send(query(&conn, &f));
            }
            Msg::Clear(reply) => {
                let _ = reply.send(conn.execute("DELETE FROM activity", []));
            }
        }
    }
}

fn query(conn: &Connection, f: &Filter) -> rusqlite::Result<Vec<Entry>> {
    let mut st = conn.prepare(
        "SELECT at, user, source, action, node, process, result, detail FROM activity
         WHERE (?1 IS NULL OR user = ?1) AND (?2 IS NULL OR node = ?2) AND (?3 IS NULL OR action = ?3)
           AND (?4 IS NULL OR result = ?4) AND (?5 IS NULL OR at >= ?5)
         ORDER BY id DESC LIMIT ?6",
    )?;
    let rows = st.query_map(
        params![f.user, f.node, f.action, f.result, f.since, f.limit.min(MAX_LIMIT) as i64],
        |r| {
            Ok(Entry {
                at: r.get(0)?,
                user: r.get(1)?,
                source: r.get(2)?,
                action: r.get(3)?,
                node: r.get(4)?,
                process: r.get(5)?,
                result: r.get(6)?,
                detail: r.get(7)?,
            })
        },
    )?;
    rows.collect()
}

/// The fields of a query string (`a=1&b=x%20y`), decoded.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `+` and `%XX` decoded; what does not decode stays as it is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_since(s: &str) -> Option<f64> {
    if let Ok(n) = s.parse::<f64>() {
        return n.is_finite().then_some(n);
    }
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp() as f64)
}

fn filter_from(query: Option<&str>, limit: Option<usize>) -> Result<Filter, ApiError> {
    let mut f = Filter { limit: limit.unwrap_or(1000), ..Filter::default() };
    for (k, v) in query_pairs(query.unwrap_or("")) {
        let bad = |what: &str| ApiError(StatusCode::BAD_REQUEST, what.to_string());
        match k.as_str() {
            "user" => f.user = Some(v),
            "node" => f.node = Some(v),
            "action" => f.action = Some(v),
            "result" => f.result = Some(v),
            "since" => {
                f.since =
                    Some(parse_since(&v).ok_or_else(|| bad("since is unix seconds or an RFC 3339 time"))?)
            }
            "limit" => f.limit = v.parse().map_err(|_| bad("limit is a number"))?,
            _ => return Err(bad("filters are user, node, action, result, since and limit")),
        }
    }
    f.limit = f.limit.min(MAX_LIMIT);
    Ok(f)
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError(StatusCode::FORBIDDEN, "only an admin may read or clear the activity log".into()))
    }
}

async fn answer(
    fleet: &Fleet,
    caller: &Caller,
    query: Option<&str>,
    limit: Option<usize>,
) -> Result<Response, ApiError> {
    require_admin(caller)?;
    let f = filter_from(query, limit)?;
    let entries = fleet.auth().activity.query(f).await?;
    // Cesi's `logs` are its text lines, newest first; `entries` are the same as objects.
    Ok(Json(json!({
        "status": "success",
        "logs": entries.iter().map(Entry::line).collect::<Vec<_>>(),
        "entries": entries.iter().map(Entry::json).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /activitylogs/?user=&node=&action=&result=&since=&limit=`.
pub(crate) async fn list(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    answer(&fleet, &caller, q.as_deref(), None).await
}

/// `GET /activitylogs/<limit>/` (Cesi's), filters as above.
pub(crate) async fn list_limit(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
    UrlPath(limit): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let limit: usize =
        limit.parse().map_err(|_| ApiError(StatusCode::BAD_REQUEST, "the limit is a number".into()))?;
    answer(&fleet, &caller, q.as_deref(), Some(limit)).await
}

/// `DELETE /activitylogs/`: empties the table (the file keeps its lines), and records that.
pub(crate) async fn clear(
    State(fleet): State<Arc<Fleet>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let activity = &fleet.auth().activity;
    let n = activity.clear().await?;
    activity.record(Entry::new(&caller.username, "activity clear", "success").detail(format!("{n} entries")));
    Ok(Json(json!({"status": "success"})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cesis_and_cannot_be_forged() {
        let e = Entry { at: 0.5, ..Entry::new("bob\nfake - INFO - root logged in", "start", "success") }
            .node("n1")
            .process("web:app")
            .source("127.0.0.1:5");
        assert_eq!(
            e.line(),
            "1970-01-01 00:00:00,500 - INFO - bob?fake - INFO - root logged in start web:app on n1: success from 127.0.0.1:5"
        );
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[tokio::test]
    async fn entries_are_stored_filtered_and_cleared_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let a =
            Activity::start(&dir.path().join("f.db"), Some(dir.path().join("activity.log"))).expect("start");
        a.record(Entry::new("alice", "login", "success").source("127.0.0.1"));
        a.record(Entry::new("bob", "stop", "denied").node("n1").process("web:app"));
        a.record(Entry::new("alice", "stop", "success").node("n2").process("web:app"));
        let all = a.query(Filter { limit: 10, ..Filter::default() }).await.expect("query");
        assert_eq!(all.iter().map(|e| e.user.as_str()).collect::<Vec<_>>(), ["alice", "bob", "alice"]);
        let f = filter_from(Some("user=alice&action=stop"), None).expect("filter");
        let some = a.query(f).await.expect("query");
        assert_eq!((some.len(), some[0].node.as_deref()), (1, Some("n2")));
        assert!(filter_from(Some("password=x"), None).is_err());
        assert_eq!(a.clear().await.expect("clear"), 3);
        assert!(a.query(Filter { limit: 10, ..Filter::default() }).await.expect("query").is_empty());
        let text = std::fs::read_to_string(dir.path().join("activity.log")).expect("the file");
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
