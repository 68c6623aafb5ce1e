//! minderd's web page: Supervisor's status page (`/`, `/index.html`) with its GET actions, made
//! live by server-sent events, on the same sockets and behind the same authentication as
//! XML-RPC and gRPC.
//!
//! What is served:
//! - `GET /` and `/index.html`: the status table, rendered on the server so it works without
//!   JavaScript (rows sorted by group then name, Supervisor's state classes, the description
//!   supervisorctl prints, pid, uptime, the exit status or spawn error), with per-process,
//!   per-group, selection and global actions for callers allowed to change things, and none
//!   for a read-only caller.
//! - `?processname=NAME&action=start|stop|restart|clearlog` and `?action=refresh|stopall|
//!   restartall`, as query string (Supervisor's GET actions, which the seed's `curl -L` uses)
//!   or as a form POST (what the page sends): the action runs, then a `303 See Other` to
//!   `./?message=…` in Supervisor's words (`Process ping started`). 303 rather than
//!   Supervisor's 301, which browsers cache: a cached redirect would skip the next action.
//!   A POST with `Accept: application/json` (the page's script) gets `{"message", "ok"}`.
//!   HEAD never acts (it shows the page). The message, and the audit line, name what the
//!   client sent only up to the echo bound.
//! - `GET /status.json`: the table as JSON; `GET /events`: server-sent events — a `snapshot`
//!   of every row first, a `process` row for each change of state, a new `snapshot` when
//!   groups come or go, the daemon's state changes, or the watcher lagged behind the event
//!   history; a keep-alive comment every [`KEEPALIVE`].
//! - `GET /assets/…`: the page's CSS and script, compiled into the binary (no CDN).
//!
//! Cross-site requests cannot change state. A browser sends `Sec-Fetch-Site` with every
//! request and a page cannot forge it, so an action (GET or POST) carrying `Sec-Fetch-Site`
//! other than `same-origin` or `none` (typed in the address bar) is refused with 403, before
//! anything is done. Without it (older browsers), an `Origin` that names another host than
//! `Host` (or `X-Forwarded-Host`) is refused the same way. A request with neither is not from
//! a page (curl, scripts), so the seed's `curl -L "…/index.html?processname=ping&action=start"`
//! keeps working; it still needs the credentials every other request needs. Pages are sent
//! with a Content-Security-Policy that allows only their own assets and no framing.
//!
//! Nothing secret goes into a URL or a page: credentials stay in the `Authorization` header,
//! which is never echoed, and the message shown comes from the query string only after HTML
//! escaping. Every link, form, script and fetch in the page is relative, so the page works
//! behind a reverse proxy under a path prefix (Supervisor issue #29); so is the redirect after
//! an action.
//!
//! Every action calls the same [`Supervisor`] code as XML-RPC and gRPC, is authorised by its
//! [`Operation`] and written to the audit log with its caller.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use http_body_util::{Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use minder::config::Role;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::common::{
    authenticate, escape_html as escape, percent_decode, percent_encode as quote, plain, read_body, Response,
    BODY_DEADLINE,
};
use crate::auth::{self, Access, Caller, Operation, Shield};
use crate::events::{EventKind, Since};
use crate::lifecycle::Kind;
use crate::process::{Fault, ProcessHandle};
use crate::supervisor::{DaemonState, Outcome, Supervisor};

/// How often an idle event stream gets a comment, so that proxies do not cut it.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// The largest form body read from a POST.
pub const MAX_FORM: usize = 64 * 1024;

/// Events buffered for one slow page before its producer waits (and, if the page never reads,
/// falls behind the history and is sent a fresh snapshot).
const EVENT_BUFFER: usize = 64;

const PAGE: &str = include_str!("../../../assets/index.html");
const CSS: &str = include_str!("../../../assets/minder.css");
const JS: &str = include_str!("../../../assets/minder.js");

/// The web page's endpoint on one listener.
#[derive(Debug)]
pub struct Endpoint {
    pub sup: Arc<Supervisor>,
    pub access: Arc<Access>,
    pub shield: Arc<Shield>,
}

/// Whether `path` is one the web page serves.
pub fn serves(path: &str) -> bool {
    matches!(
        path,
        "/" | "/index.html" | "/status.json" | "/events" | "/assets/minder.css" | "/assets/minder.js"
    )
}

/// One of the page's actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Start,
    Stop,
    Restart,
    ClearLog,
    StopAll,
    RestartAll,
    StartAll,
    Refresh,
}

impl Verb {
    fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "start" => Verb::Start,
            "stop" => Verb::Stop,
            "restart" => Verb::Restart,
            "clearlog" => Verb::ClearLog,
            "stopall" => Verb::StopAll,
            "restartall" => Verb::RestartAll,
            "startall" => Verb::StartAll,
            "refresh" => Verb::Refresh,
            _ => return None,
        })
    }

    fn operation(self) -> Operation {
        match self {
            Verb::Start | Verb::StartAll => Operation::Start,
            Verb::Stop | Verb::StopAll => Operation::Stop,
            Verb::Restart | Verb::RestartAll => Operation::Restart,
            Verb::ClearLog => Operation::ClearLogs,
            Verb::Refresh => Operation::ReadState,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::ClearLog => "clearlog",
            Verb::StopAll => "stopall",
            Verb::RestartAll => "restartall",
            Verb::StartAll => "startall",
            Verb::Refresh => "refresh",
        }
    }
}

/// The answer to an action: the message, and whether everything went well.
struct Done {
    message: String,
    ok: bool,
}

impl Endpoint {
    /// Serves one request for a path [`serves`] accepts.
    pub async fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> Result<Response, Infallible> {
        Ok(self.serve(req).await)
    }

    async fn serve(&self, req: http::Request<Incoming>) -> Response {
        let path = req.uri().path().to_string();
        let page = path == "/" || path == "/index.html";
        let method = req.method().clone();
        let allowed = method == http::Method::GET
            || method == http::Method::HEAD
            || (page && method == http::Method::POST);
        if !allowed {
            let mut r = plain(http::StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            let allow = if page { "GET, HEAD, POST" } else { "GET, HEAD" };
            r.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
            return r;
        }
        let caller = match authenticate(&self.access, &self.shield, &req).await {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        match path.as_str() {
            "/assets/minder.css" => return asset(CSS, "text/css; charset=utf-8"),
            "/assets/minder.js" => return asset(JS, "text/javascript; charset=utf-8"),
            "/status.json" => return json_response(http::StatusCode::OK, &status(&self.sup, &caller).1),
            "/events" => return self.events(&caller),
            _ => {}
        }
        let mut fields = form(req.uri().query().unwrap_or(""));
        let wants_json = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
        let cross = cross_site(&req);
        if method == http::Method::POST {
            let body = match read_body(req, MAX_FORM, BODY_DEADLINE).await {
                Ok(b) => b,
                Err(refused) => return refused,
            };
            // As Supervisor: the form's fields, then the query string's.
            let mut posted = form(&String::from_utf8_lossy(&body));
            posted.append(&mut fields);
            fields = posted;
        }
        let first = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        // HEAD is safe: it shows the page and never acts.
        let action = first("action").filter(|a| !a.is_empty() && method != http::Method::HEAD);
        let Some(action) = action else {
            if method == http::Method::POST {
                return plain(http::StatusCode::BAD_REQUEST, "Bad Request: no action");
            }
            return self.page(&caller, first("message").as_deref());
        };
        // "VERB TARGET" (the page's per-process and per-group buttons) or VERB with the
        // processname fields (Supervisor's links, and the page's selection).
        let (verb, targets) = match action.split_once(' ') {
            Some((v, t)) => (v.to_string(), vec![t.to_string()]),
            None => (
                action.clone(),
                fields
                    .iter()
                    .filter(|(n, v)| n == "processname" && !v.is_empty())
                    .map(|(_, v)| v.clone())
                    .collect(),
            ),
        };
        let Some(verb) = Verb::parse(&verb) else {
            return plain(http::StatusCode::BAD_REQUEST, "Bad Request: unknown action");
        };
        if verb != Verb::Refresh {
            if let Some(why) = cross {
                tracing::warn!("{} was refused a cross-site {} ({why})", caller.who, verb.word());
                return plain(
                    http::StatusCode::FORBIDDEN,
                    &format!("Forbidden: a cross-site request cannot change anything ({why})"),
                );
            }
            if !auth::allowed(caller.role, verb.operation()) {
                return plain(
                    http::StatusCode::FORBIDDEN,
                    &format!("Forbidden: {} is read-only and may not {}", caller.who, verb.word()),
                );
            }
            // Names come from the client: the line is bounded, as every echo is.
            auth::audit(
                &caller,
                &crate::frontend::common::bounded(format!(
                    "web {}{}",
                    verb.word(),
                    targets.iter().map(|t| format!(" {t}")).collect::<String>()
                )),
            );
        }
        let mut done = self.act(verb, &targets).await;
        // It names what the client sent, and goes into a header and the next page.
        done.message = crate::frontend::common::bounded(done.message);
        if wants_json {
            return json_response(http::StatusCode::OK, &json!({ "message": done.message, "ok": done.ok }));
        }
        let mut r = plain(http::StatusCode::SEE_OTHER, &done.message);
        let location = format!("./?message={}", quote(&done.message));
        if let Ok(v) = http::HeaderValue::from_str(&location) {
            r.headers_mut().insert(http::header::LOCATION, v);
        }
        r
    }

    /// Runs `verb` on `targets` and says what happened in Supervisor's words.
    async fn act(&self, verb: Verb, targets: &[String]) -> Done {
        let sup = &self.sup;
        let all = ["all".to_string()];
        let at = || chrono::Local::now().format("%a %b %e %H:%M:%S %Y").to_string();
        let fine = |message: String| Done { message, ok: true };
        match verb {
            Verb::Refresh => return fine(format!("Page refreshed at {}", at())),
            Verb::StopAll => {
                let r = sup.stop(&all, true).await;
                return outcome_failures(r).unwrap_or_else(|| fine(format!("All stopped at {}", at())));
            }
            Verb::RestartAll => {
                // Supervisor's multicall of stopAllProcesses then startAllProcesses.
                let stopped = sup.stop(&all, true).await;
                let started = sup.start(&all, true).await;
                return outcome_failures(stopped)
                    .or_else(|| outcome_failures(started))
                    .unwrap_or_else(|| fine(format!("All restarted at {}", at())));
            }
            Verb::StartAll => {
                let r = sup.start(&all, true).await;
                return outcome_failures(r).unwrap_or_else(|| fine(format!("All started at {}", at())));
            }
            _ => {}
        }
        if targets.is_empty() {
            return Done { message: "Nothing selected".into(), ok: false };
        }
        let mut messages = Vec::new();
        let mut ok = true;
        for target in targets {
            // Supervisor's first check, in its words.
            if sup
                .list(std::slice::from_ref(target))
                .map(|(found, bad)| found.is_empty() || !bad.is_empty())
                .unwrap_or(true)
            {
                messages.push(format!("No such process named {target}"));
                ok = false;
                continue;
            }
            let sel = std::slice::from_ref(target);
            let outcomes = match verb {
                Verb::Start => sup.start(sel, true).await,
                Verb::Stop => sup.stop(sel, true).await,
                Verb::Restart => sup.restart(sel, true).await,
                _ => sup.clear_logs(sel).await,
            };
            let outcomes = match outcomes {
                Ok(o) => o,
                Err(e) => {
                    messages.push(format!("ERROR: {target}: {e}"));
                    ok = false;
                    continue;
                }
            };
            let group = !matches!(
                crate::supervisor::Target::parse(target),
                Ok(crate::supervisor::Target::Process { .. })
            );
            let failed: Vec<&Outcome> = outcomes
                .iter()
                .filter(|o| match &o.result {
                    Ok(()) => false,
                    // A restart starts what was not running; a group's stop skips it.
                    Err(Fault::NotRunning) => !(verb == Verb::Restart || group),
                    Err(_) => true,
                })
                .collect();
            if failed.is_empty() {
                messages.push(match verb {
                    Verb::Start => format!("Process {target} started"),
                    Verb::Stop => format!("Process {target} stopped"),
                    Verb::Restart => format!("Process {target} restarted"),
                    _ => format!("Log for {target} cleared"),
                });
                continue;
            }
            ok = false;
            for o in failed {
                let name = o.process.as_ref().map_or_else(|| o.selector.clone(), |h| h.config.full_name());
                let Err(f) = &o.result else { continue };
                messages.push(failure(verb, &name, f));
            }
        }
        Done { message: messages.join("; "), ok }
    }

    fn page(&self, caller: &Caller, message: Option<&str>) -> Response {
        let admin = caller.role == Role::Admin;
        let handles = self.sup.all_by_name();
        let mut rows = String::new();
        let mut last_group: Option<&str> = None;
        for h in &handles {
            let group = h.config.group.as_str();
            if last_group != Some(group) && is_real_group(&handles, group) {
                rows.push_str(&group_row(group, admin));
            }
            last_group = Some(group);
            rows.push_str(&row_html(&row(h), admin));
        }
        if handles.is_empty() {
            rows.push_str("<tr class=\"empty\"><td colspan=\"8\">No programs to manage</td></tr>\n");
        }
        let global = if admin {
            "<button name=\"action\" value=\"restartall\">Restart all</button>\n  \
             <button name=\"action\" value=\"stopall\">Stop all</button>\n  \
             <span class=\"selection\">Selected:\n   \
             <button name=\"action\" value=\"start\">Start</button>\n   \
             <button name=\"action\" value=\"stop\">Stop</button>\n   \
             <button name=\"action\" value=\"restart\">Restart</button>\n   \
             <button name=\"action\" value=\"clearlog\">Clear log</button></span>"
        } else {
            "<span class=\"readonly\">read-only</span>"
        };
        let facts = self.sup.facts();
        let title = format!("minderd on {}", facts.hostname);
        let message_html = message
            .filter(|m| !m.is_empty())
            .map(|m| format!("<div id=\"message\" class=\"status_msg\" role=\"status\">{}</div>", escape(m)))
            .unwrap_or_else(|| {
                "<div id=\"message\" class=\"status_msg\" role=\"status\" hidden></div>".into()
            });
        let html = PAGE
            .replace("{{title}}", &escape(&title))
            .replace("{{mode}}", "minderd")
            .replace("{{account}}", "")
            .replace("{{panels}}", "")
            .replace("{{nodehead}}", "")
            .replace("{{product}}", "minderd")
            .replace("{{readonly}}", if admin { "false" } else { "true" })
            .replace("{{message}}", &message_html)
            .replace("{{global}}", global)
            .replace("{{selhead}}", if admin { "<th class=\"sel\"><input type=\"checkbox\" id=\"selectall\" aria-label=\"select all\"></th>" } else { "" })
            .replace("{{rows}}", &rows)
            .replace("{{version}}", &escape(minder::VERSION));
        let mut r = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from(html))));
        let h = r.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/html; charset=utf-8"));
        secure(h);
        r
    }

    /// `GET /events`: a snapshot, then each change, as server-sent events.
    fn events(&self, caller: &Caller) -> Response {
        let (tx, rx) = mpsc::channel::<Bytes>(EVENT_BUFFER);
        tokio::spawn(pump(Arc::clone(&self.sup), caller.clone(), tx));
        let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
        let mut r = http::Response::new(tonic::body::Body::new(StreamBody::new(stream)));
        let h = r.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
        // nginx would otherwise hold events back until its buffer fills.
        h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
        secure(h);
        r
    }
}

/// Feeds one page's event stream until the page goes away or the daemon shuts down. The
/// stream is bounded: a page that stops reading stalls only this task, which then finds that
/// it lagged behind the history and sends a fresh snapshot.
async fn pump(sup: Arc<Supervisor>, caller: Caller, tx: mpsc::Sender<Bytes>) {
    let bus = sup.events();
    let mut published = bus.subscribe();
    let mut state = sup.watch_state();
    let send =
        |kind: &str, id: u64, data: &Value| Bytes::from(format!("id: {id}\nevent: {kind}\ndata: {data}\n\n"));
    let (mut next, snap) = status(&sup, &caller);
    if tx.send(Bytes::from_static(b"retry: 2000\n\n")).await.is_err()
        || tx.send(send("snapshot", next, &snap)).await.is_err()
    {
        return;
    }
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        if *state.borrow_and_update() == DaemonState::Shutdown {
            // A last picture; the page then sees the stream end.
            let (seq, snap) = status(&sup, &caller);
            let _ = tx.send(send("snapshot", seq, &snap)).await;
            return;
        }
        published.borrow_and_update();
        let events = match bus.since(next) {
            Since::Events(events) if events.is_empty() => {
                tokio::select! {
                    changed = published.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    _ = keepalive.tick() => if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() { return },
                    changed = state.changed() => if changed.is_err() { return },
                }
                continue;
            }
            Since::Events(events) => events,
            Since::Lagged { missed } => {
                tracing::debug!("a web page fell {missed} events behind; sending it a new snapshot");
                let (seq, snap) = status(&sup, &caller);
                next = seq;
                if tx.send(send("snapshot", seq, &snap)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let mut whole = false;
        // Each process changed, once, with the time of its last change.
        let mut changed: Vec<(String, SystemTime)> = Vec::new();
        for e in &events {
            next = e.seq;
            match &e.kind {
                EventKind::Process(c) => {
                    let name = minder::config::full_name(&c.group, &c.name);
                    match changed.iter_mut().find(|(n, _)| *n == name) {
                        Some(entry) => entry.1 = e.time,
                        None => changed.push((name, e.time)),
                    }
                }
                _ => whole = true,
            }
        }
        if whole {
            let (seq, snap) = status(&sup, &caller);
            next = next.max(seq);
            if tx.send(send("snapshot", seq, &snap)).await.is_err() {
                return;
            }
            continue;
        }
        for (name, at) in changed {
            // The row as it is now, which includes this change and maybe later ones (their
            // events follow and send it again).
            let mut data = match sup.get(&name) {
                Ok(h) => row(&h),
                Err(_) => continue,
            };
            // When the daemon saw the change (ms since the epoch): the page measures its
            // event-to-screen latency from it.
            let ms = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            data["at"] = json!(ms);
            if tx.send(send("process", next, &data)).await.is_err() {
                return;
            }
        }
    }
}

/// Every row, with the number of the last change the picture includes.
fn status(sup: &Supervisor, caller: &Caller) -> (u64, Value) {
    let (seq, rows) = sup.events().snapshot_with(|| sup.all_by_name().iter().map(row).collect::<Vec<_>>());
    (
        seq,
        json!({
            "seq": seq,
            "instance": sup.events().instance,
            "readonly": caller.role != Role::Admin,
            "processes": rows,
        }),
    )
}

/// One process as the page shows it.
fn row(h: &ProcessHandle) -> Value {
    let snap = h.snapshot();
    let c = &h.config;
    // Its whole tree, from its cgroup (where minderd uses cgroups), as `status --json` has it.
    let tree = h.tree();
    json!({
        "name": c.full_name(),
        "group": c.group,
        "process": c.name,
        "state": snap.state.name(),
        "class": class(snap.state),
        "description": snap.description(&c.name),
        "pid": snap.pid,
        "uptime": snap.uptime().map(|d| d.as_secs()),
        "exit": snap.last_exit.map(|e| e.status.to_string()),
        "expected": snap.last_exit.map(|e| e.expected),
        "spawnerr": snap.spawn_error.as_ref().filter(|e| !e.is_empty()),
        "problem": problem(&snap),
        "tree_pids": tree.as_ref().map(|t| t.pids.clone()),
        "cpu_seconds": tree.as_ref().and_then(|t| t.cpu).map(|d| d.as_secs_f64()),
        "memory_bytes": tree.as_ref().and_then(|t| t.memory),
    })
}

/// The other processes of a process's tree (beyond its main one), as the pid cell shows them:
/// `+N`, with every pid in its title.
fn tree_note(r: &Value) -> String {
    let pids: Vec<u64> =
        r["tree_pids"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    if pids.len() < 2 {
        return String::new();
    }
    let all = pids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    format!(" <span class=\"tree\" title=\"its cgroup: {all}\">+{}</span>", pids.len() - 1)
}

/// What the page shows in its "Exit / error" column, beside the description: how the child
/// last ended, for a process that ended on its own (in BACKOFF and FATAL the description is
/// already the spawn error); otherwise a spawn error the description does not show.
fn problem(snap: &crate::process::Snapshot) -> Option<String> {
    let exit = snap.last_exit.map(|e| {
        if e.expected {
            format!("{} (expected)", e.status)
        } else {
            e.status.to_string()
        }
    });
    match snap.state {
        Kind::Exited | Kind::Backoff | Kind::Fatal => exit,
        _ => snap.spawn_error.clone().filter(|e| !e.is_empty()),
    }
}

/// Supervisor's CSS class for a state.
fn class(k: Kind) -> &'static str {
    match k {
        Kind::Running => "statusrunning",
        Kind::Fatal | Kind::Backoff => "statuserror",
        _ => "statusnominal",
    }
}

/// Whether `group` is a group of its own (not just one program's homogeneous group).
fn is_real_group(handles: &[ProcessHandle], group: &str) -> bool {
    handles.iter().any(|h| h.config.group == group && h.config.name != group)
}

fn group_row(group: &str, admin: bool) -> String {
    let g = escape(group);
    let mut s =
        format!("<tr class=\"group\" data-group=\"{g}\"><th colspan=\"8\"><span class=\"gname\">{g}</span>");
    if admin {
        for (verb, label) in [("start", "Start group"), ("stop", "Stop group"), ("restart", "Restart group")]
        {
            let _ = write!(s, " <button name=\"action\" value=\"{verb} {g}:*\">{label}</button>");
        }
    }
    s.push_str("</th></tr>\n");
    s
}

/// The actions a process in `state` offers, as Supervisor's page offers them (plus Stop for a
/// process still STARTING or in BACKOFF).
fn actions(state: &str) -> &'static [(&'static str, &'static str)] {
    match state {
        "RUNNING" => &[("restart", "Restart"), ("stop", "Stop"), ("clearlog", "Clear log")],
        "STARTING" | "BACKOFF" => &[("stop", "Stop"), ("clearlog", "Clear log")],
        "STOPPED" | "EXITED" | "FATAL" => &[("start", "Start"), ("clearlog", "Clear log")],
        _ => &[("clearlog", "Clear log")],
    }
}

/// A row as HTML; the page's script builds the same from the JSON.
fn row_html(r: &Value, admin: bool) -> String {
    let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
    let name = escape(&text("name"));
    let q = quote(&text("name"));
    let state = text("state");
    let mut s =
        format!("<tr data-name=\"{name}\" data-group=\"{}\" data-state=\"{state}\">", escape(&text("group")));
    if admin {
        let _ = write!(s, "<td class=\"sel\"><input type=\"checkbox\" name=\"processname\" value=\"{name}\" aria-label=\"select {name}\"></td>");
    }
    let pid = r["pid"].as_u64().map(|p| p.to_string()).unwrap_or_default();
    let uptime = r["uptime"].as_u64().map(crate::process::python_timedelta).unwrap_or_default();
    let problem = r["problem"].as_str().unwrap_or("");
    let _ = write!(
        s,
        "<td class=\"state\"><span class=\"{}\">{}</span></td><td class=\"desc\">{}</td>\
         <td class=\"name\"><a href=\"tail.html?processname={q}\" data-tail=\"{name}\">{name}</a></td>\
         <td class=\"pid\">{pid}{}<span class=\"res\">{}</span></td><td class=\"uptime\">{uptime}</td><td class=\"problem\">{}</td><td class=\"actions\">",
        text("class"),
        escape(&state.to_lowercase()),
        escape(&text("description")),
        tree_note(r),
        // Memory where it is measured; CPU needs two samples, which the script takes.
        r["memory_bytes"].as_u64().filter(|_| !pid.is_empty()).map(|m| format!(" · {:.1} MiB", m as f64 / 1_048_576.0)).unwrap_or_default(),
        escape(problem),
    );
    if admin {
        for (verb, label) in actions(&state) {
            let _ = write!(s, "<button name=\"action\" value=\"{verb} {name}\">{label}</button> ");
        }
    }
    let _ = writeln!(
        s,
        "<a href=\"logtail/{q}/stdout\" target=\"_blank\" data-tail=\"{name}\" data-stream=\"stdout\">stdout</a> \
         <a href=\"logtail/{q}/stderr\" target=\"_blank\" data-tail=\"{name}\" data-stream=\"stderr\">stderr</a></td></tr>"
    );
    s
}

/// Supervisor's message for an action on `name` that failed with `f`.
fn failure(verb: Verb, name: &str, f: &Fault) -> String {
    let rpc = super::rpc2::fault(f, name);
    match (verb, f) {
        (Verb::Start | Verb::Restart, Fault::NoFile(_)) => format!("ERROR: Process {name}: no such file"),
        (Verb::Start | Verb::Restart, Fault::NotExecutable(_)) => {
            format!("ERROR: Process {name}: file not executable")
        }
        (Verb::Start | Verb::Restart, Fault::AlreadyStarted) => {
            format!("ERROR: Process {name}: already started")
        }
        (Verb::Start | Verb::Restart, Fault::SpawnError(_)) => format!("ERROR: Process {name}: spawn error"),
        (Verb::Start | Verb::Restart, Fault::AbnormalTermination) => {
            format!("ERROR: Process {name}: abnormal termination")
        }
        _ => format!("unexpected rpc fault [{}] {}", rpc.code.number(), rpc.text),
    }
}

/// The failures among the outcomes of an action on all, as a message; None when all went well.
fn outcome_failures(r: Result<Vec<Outcome>, crate::supervisor::RequestError>) -> Option<Done> {
    let outcomes = match r {
        Ok(o) => o,
        Err(e) => return Some(Done { message: format!("ERROR: {e}"), ok: false }),
    };
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match &o.result {
            Err(f) if *f != Fault::NotRunning && *f != Fault::AlreadyStarted => {
                let name = o.process.as_ref().map_or_else(|| o.selector.clone(), |h| h.config.full_name());
                Some(format!("ERROR: Process {name}: {f}"))
            }
            _ => None,
        })
        .collect();
    (!failed.is_empty()).then(|| Done { message: failed.join("; "), ok: false })
}

/// Headers every page and stream carries: nothing but its own assets runs or loads, it is
/// never framed (clickjacking) and never cached, and it sends no Referer (which would carry
/// the page's URL and its message elsewhere).
fn secure(h: &mut http::HeaderMap) {
    h.insert(
        "content-security-policy",
        http::HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert("x-frame-options", http::HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", http::HeaderValue::from_static("no-referrer"));
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from_static(body.as_bytes()))));
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    h.insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    // Revalidated each time: an upgraded daemon serves its own script at once.
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    r
}

fn json_response(status: http::StatusCode, v: &Value) -> Response {
    let mut r = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    secure(h);
    r
}

/// Why `req` comes from another site, if it does (see the module doc).
fn cross_site<B>(req: &http::Request<B>) -> Option<String> {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("?");
        return (!matches!(site, "same-origin" | "none")).then(|| format!("Sec-Fetch-Site: {site}"));
    }
    let origin = h.get(http::header::ORIGIN)?.to_str().unwrap_or("?");
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    let hosts = [
        h.get("x-forwarded-host").and_then(|v| v.to_str().ok()),
        h.get(http::header::HOST).and_then(|v| v.to_str().ok()),
        req.uri().authority().map(|a| a.as_str()),
    ];
    let same = origin_host.is_some_and(|o| hosts.iter().flatten().any(|h| h.eq_ignore_ascii_case(o)));
    (!same).then(|| format!("Origin: {origin}"))
}

/// The fields of an `application/x-www-form-urlencoded` string, in order.
fn form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().uri("/index.html?action=stop&processname=a");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        // curl: neither header.
        assert_eq!(cross_site(&req(&[("host", "h:9001")])), None);
        // The page itself, and the address bar.
        assert_eq!(cross_site(&req(&[("host", "h:9001"), ("sec-fetch-site", "same-origin")])), None);
        assert_eq!(cross_site(&req(&[("sec-fetch-site", "none")])), None);
        // Another site, or a sibling subdomain, even with a matching Origin.
        for site in ["cross-site", "same-site"] {
            assert!(cross_site(&req(&[
                ("host", "h:9001"),
                ("origin", "http://h:9001"),
                ("sec-fetch-site", site)
            ]))
            .is_some());
        }
        // Older browsers: Origin against Host (or the proxy's X-Forwarded-Host).
        assert_eq!(cross_site(&req(&[("host", "h:9001"), ("origin", "http://h:9001")])), None);
        assert!(cross_site(&req(&[("host", "h:9001"), ("origin", "http://evil.example")])).is_some());
        assert!(cross_site(&req(&[("host", "h:9001"), ("origin", "null")])).is_some());
        assert_eq!(
            cross_site(&req(&[
                ("host", "127.0.0.1:9001"),
                ("x-forwarded-host", "proxy.example"),
                ("origin", "https://proxy.example")
            ])),
            None
        );
    }

    #[test]
    fn forms_and_quoting_round_trip() {
        let f = form("action=stop+web%3Aweb_00&processname=a&processname=b%20c&x=%zz&y=%4");
        assert_eq!(
            f,
            [
                ("action".to_string(), "stop web:web_00".to_string()),
                ("processname".into(), "a".into()),
                ("processname".into(), "b c".into()),
                ("x".into(), "%zz".into()),
                ("y".into(), "%4".into()),
            ]
        );
        assert_eq!(quote("Process ping started"), "Process%20ping%20started");
        assert_eq!(percent_decode(&quote("<b>&\"é:/?"), true), "<b>&\"é:/?");
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn every_link_in_the_page_is_relative() {
        let admin = row_html(
            &json!({"name": "g:a b", "group": "g", "state": "RUNNING", "class": "statusrunning", "description": "pid 1, uptime 0:00:01", "pid": 1, "uptime": 1}),
            true,
        );
        let page = format!("{PAGE}{admin}{}", group_row("g", true));
        for attr in ["href=\"", "src=\"", "action=\""] {
            for (i, _) in page.match_indices(attr) {
                let url = &page[i + attr.len()..];
                assert!(
                    !url.starts_with('/') && !url.contains("://"),
                    "{attr}{} is not relative",
                    &url[..url.find('"').unwrap_or(0)]
                );
            }
        }
        for (i, _) in JS.match_indices("fetch(") {
            let arg = &JS[i + 6..];
            assert!(
                !arg.starts_with("'/") && !arg.starts_with("`/") && !arg.starts_with("\"/"),
                "fetch{}",
                &arg[..20.min(arg.len())]
            );
        }
        assert!(JS.contains("new EventSource(url('events'))"), "the event stream is relative");
        assert!(JS.contains("new URL(path, document.baseURI)"), "url() resolves against the page");
        assert!(
            !PAGE.contains("<script>") && !PAGE.contains("style=\""),
            "no inline script or style: the CSP forbids them"
        );
    }

    #[test]
    fn a_read_only_row_has_no_buttons() {
        let r = json!({"name": "a", "group": "a", "state": "STOPPED", "class": "statusnominal", "description": "Not started"});
        assert!(!row_html(&r, false).contains("<button"));
        assert!(!row_html(&r, false).contains("checkbox"));
        assert!(row_html(&r, true).contains("value=\"start a\""));
    }
}
