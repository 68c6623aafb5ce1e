//! The fleet's live streams, as server-sent events: the change feed behind
//! `GET /api/fleet/events`, and a process's log followed at
//! `GET /api/fleet/nodes/<node>/processes/<group:name>/log/stream?channel=stdout|stderr`.
//!
//! **The change feed.** Each node task publishes its whole [`NodeView`] on a `watch` channel;
//! one small task per node ([`Feed::watch`]) wakes only when that view changes, compares it
//! with the one before, and puts what changed on one fleet-wide `broadcast` channel, already
//! serialised (so a change is turned into JSON once, however many browsers watch):
//! - `event: node`, `{general}` when the node's connection state or error changed, with the
//!   whole `processes` list too when processes came or went;
//! - `event: process`, `{node, process: P}` for a process whose state (or pid, times, error)
//!   changed. Uptimes and `now` move on every poll and are not changes.
//!
//! An idle minderd node (its `WatchEvents` stream quiet) therefore costs no wake-up at all.
//!
//! **A client** first gets `event: snapshot` (what `GET /api/v2/nodes/` answers), then the
//! changes of the nodes it may see (its environments). Its frames go through a bounded
//! channel ([`CLIENT_FRAMES`]); a client that stops reading stalls only its own task, which
//! then finds it lagged behind the broadcast and sends a fresh snapshot (or, with frames
//! still unread, drops the client: its browser reconnects); one that does not take a frame
//! for [`STALL`] is dropped. A node joining or leaving the fleet (SIGHUP) sends
//! every client a fresh snapshot. A comment every [`HEARTBEAT`] of silence keeps proxies from
//! cutting the stream. Every stream ends when the fleet shuts down.
//!
//! **Log follow**: see [`follow_log`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use crate::model::{NodeView, Process};
use crate::node::follow::{LogSource, Note};
use crate::node::Node;
use crate::Fleet;

/// Changes kept for clients that are behind; one further behind gets a fresh snapshot. A
/// restart of a group on 200 nodes is about 1,600 changes (four states and a refresh per
/// process); kept only while a client is connected (a change sent to nobody is not stored):
/// a few MiB at most, for the whole fleet.
pub const FEED_CAPACITY: usize = 4096;

/// Frames buffered for one client before its task waits for it.
pub const CLIENT_FRAMES: usize = 16;

/// How long a client may leave a frame untaken before it is dropped.
pub const STALL: Duration = Duration::from_secs(30);

/// The silence after which a client is sent a comment.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// One change, as every client that may see its node gets it.
#[derive(Debug)]
pub enum Change {
    /// An SSE frame about a node of this environment.
    Frame { environment: String, frame: Bytes },
    /// A node joined or left the fleet: clients take a fresh snapshot.
    Membership,
}

/// The fleet-wide change feed, and the signal that ends every stream at shutdown.
#[derive(Debug)]
pub struct Feed {
    changes: broadcast::Sender<Arc<Change>>,
    closing: watch::Sender<bool>,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed { changes: broadcast::channel(FEED_CAPACITY).0, closing: watch::channel(false).0 }
    }
}

impl Feed {
    /// Starts the task that turns `node`'s published views into changes. It ends (and tells
    /// the clients the fleet changed) when the node's task ends.
    pub fn watch(&self, node: &Arc<Node>) {
        let rx = node.subscribe();
        let changes = self.changes.clone();
        let node = Arc::clone(node);
        tokio::spawn(async move {
            let _ = changes.send(Arc::new(Change::Membership));
            diff_views(&node, rx, &changes).await;
            let _ = changes.send(Arc::new(Change::Membership));
        });
    }

    /// Ends every stream (the server's graceful shutdown waits for them).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

async fn diff_views(node: &Node, mut rx: watch::Receiver<NodeView>, out: &broadcast::Sender<Arc<Change>>) {
    let mut last = rx.borrow_and_update().clone();
    while rx.changed().await.is_ok() {
        let now = rx.borrow_and_update().clone();
        // Nobody watching: nothing to compute (the view is kept to compare the next one).
        if out.receiver_count() > 0 {
            for frame in changes(node, &last, &now) {
                let environment = node.config.environment.clone();
                let _ = out.send(Arc::new(Change::Frame { environment, frame }));
            }
        }
        last = now;
    }
}

/// Whether two descriptions of a process differ in anything but the passing of time.
fn same_process(a: &Process, b: &Process) -> bool {
    a.state == b.state
        && a.pid == b.pid
        && a.start == b.start
        && a.stop == b.stop
        && a.spawnerr == b.spawnerr
        && a.exitstatus == b.exitstatus
        && a.statename == b.statename
        // A running process's description is its uptime, which moves every second.
        && (a.state == crate::model::state::RUNNING || a.description == b.description)
}

/// The SSE frames that take a client from `old` to `new`.
pub fn changes(node: &Node, old: &NodeView, new: &NodeView) -> Vec<Bytes> {
    let mut out = Vec::new();
    let same_set = old.processes.len() == new.processes.len()
        && old
            .processes
            .iter()
            .zip(new.processes.iter())
            .all(|(a, b)| a.name == b.name && a.group == b.group);
    if !same_set {
        let general = crate::api::general(node, new);
        out.push(frame("node", &json!({"general": general, "processes": &*new.processes})));
        return out;
    }
    if old.status != new.status || old.last_error != new.last_error {
        out.push(frame("node", &json!({"general": crate::api::general(node, new)})));
    }
    for (a, b) in old.processes.iter().zip(new.processes.iter()) {
        if !same_process(a, b) {
            out.push(frame("process", &json!({"node": node.config.name, "process": b})));
        }
    }
    out
}

/// One server-sent event. serde_json never writes a raw newline, so `data` is one line.
pub fn frame(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The snapshot a client starts with: every node it may see, as `GET /api/v2/nodes/` has them.
fn snapshot(fleet: &Fleet, sees: &dyn Fn(&str) -> bool) -> Bytes {
    let nodes: Vec<Value> = fleet
        .nodes()
        .iter()
        .filter(|n| sees(&n.config.environment))
        .map(|n| crate::api::node_json(n))
        .collect();
    frame("snapshot", &json!({"status": "success", "nodes": nodes}))
}

/// A response that streams what `rx` is given, as server-sent events.
fn sse(rx: mpsc::Receiver<Bytes>) -> Response {
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = Body::from_stream(futures_util::StreamExt::map(frames, Ok::<Bytes, std::convert::Infallible>));
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx would otherwise hold events back until its buffer fills.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Completes when the fleet shuts down (the guard `wait_for` gives is dropped here: it may
/// not be held across an await).
async fn shutting_down(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await.map(|_| ());
}

/// Sends one frame, waiting at most `stall` ([`STALL`]); false when the client is gone or
/// stalled.
async fn give(tx: &mpsc::Sender<Bytes>, frame: Bytes, stall: Duration) -> bool {
    matches!(tokio::time::timeout(stall, tx.send(frame)).await, Ok(Ok(())))
}

/// One event stream's client end, as both streams use it: where its frames go, how long one
/// may wait to be taken (`stall`), the heartbeat, and the fleet's shutdown.
struct Client {
    tx: mpsc::Sender<Bytes>,
    stall: Duration,
    closing: watch::Receiver<bool>,
    heartbeat: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Client {
    fn new(tx: mpsc::Sender<Bytes>, stall: Duration, closing: watch::Receiver<bool>) -> Client {
        Client { tx, stall, closing, heartbeat: Box::pin(tokio::time::sleep(HEARTBEAT)) }
    }

    /// Sends one frame (see [`give`]); false when the client is gone or stalled. The
    /// heartbeat's silence counts from here.
    async fn send(&mut self, frame: Bytes) -> bool {
        let sent = give(&self.tx, frame, self.stall).await;
        self.heartbeat.as_mut().reset(tokio::time::Instant::now() + HEARTBEAT);
        sent
    }

    /// Races the stream's source in its `select!` (each branch is cancel-safe): a heartbeat
    /// comment to send after [`HEARTBEAT`] of silence, or None when the client has gone or
    /// the fleet shuts down, which ends the stream.
    async fn idle(&mut self) -> Option<Bytes> {
        tokio::select! {
            () = &mut self.heartbeat => Some(Bytes::from_static(b": heartbeat\n\n")),
            () = self.tx.closed() => None,
            () = shutting_down(&mut self.closing) => None,
        }
    }
}

/// Which environments a client may see.
type Sees = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// `GET /api/fleet/events` for a caller who sees the environments `sees` accepts.
pub fn events(fleet: Arc<Fleet>, sees: impl Fn(&str) -> bool + Send + Sync + 'static) -> Response {
    let (tx, rx) = mpsc::channel(CLIENT_FRAMES);
    let sees: Sees = Arc::new(sees);
    // Subscribed before the snapshot is taken: a change in between is sent twice, never lost.
    let (changes, closing) = (fleet.feed().subscribe(), fleet.feed().closing());
    let picture = {
        let sees = sees.clone();
        move || snapshot(&fleet, &*sees)
    };
    tokio::spawn(pump_events(changes, closing, picture, sees, tx, STALL));
    sse(rx)
}

async fn pump_events(
    mut changes: broadcast::Receiver<Arc<Change>>,
    closing: watch::Receiver<bool>,
    snapshot: impl Fn() -> Bytes,
    sees: Sees,
    tx: mpsc::Sender<Bytes>,
    stall: Duration,
) {
    let mut client = Client::new(tx, stall, closing);
    if !client.send(Bytes::from_static(b"retry: 2000\n\n")).await || !client.send(snapshot()).await {
        return;
    }
    loop {
        let out = tokio::select! {
            r = changes.recv() => match r {
                Ok(c) => match &*c {
                    Change::Frame { environment, frame } if sees(environment) => frame.clone(),
                    Change::Frame { .. } => continue,
                    Change::Membership => snapshot(),
                },
                // Behind by the whole feed with frames still unread: a snapshot queued behind
                // them would only add to what it holds. It is dropped (EventSource reconnects
                // on its own, and starts again from a snapshot).
                Err(broadcast::error::RecvError::Lagged(_)) if client.tx.capacity() < client.tx.max_capacity() => {
                    tracing::debug!("an event stream fell behind with frames unread; dropping it");
                    return;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "an event stream fell behind; sending it a new snapshot");
                    // The backlog is older than the snapshot: skip it (from the newest on).
                    changes = changes.resubscribe();
                    snapshot()
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            idle = client.idle() => match idle {
                Some(heartbeat) => heartbeat,
                None => return,
            },
        };
        if !client.send(out).await {
            return;
        }
    }
}

/// The longest line sent whole; a longer one is sent in pieces of this size.
pub const MAX_LINE: usize = 16 * 1024;

/// Whole lines out of pieces of a log.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
    /// Dropping bytes up to the next newline (the piece started inside a line).
    skipping: bool,
}

impl Lines {
    /// The lines `data` completes; a partial last line waits for the next piece.
    pub fn push(&mut self, data: &[u8], cut: bool) -> Vec<String> {
        if cut {
            self.partial.clear();
            self.skipping = true;
        }
        let mut out = Vec::new();
        let mut rest = data;
        if self.skipping {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    rest = &rest[i + 1..];
                    self.skipping = false;
                }
                None => return out,
            }
        }
        for piece in rest.split_inclusive(|&b| b == b'\n') {
            self.partial.extend_from_slice(piece);
            if self.partial.last() == Some(&b'\n') {
                self.partial.pop();
                out.push(String::from_utf8_lossy(&self.partial).into_owned());
                self.partial.clear();
            }
            while self.partial.len() >= MAX_LINE {
                let head: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
                out.push(String::from_utf8_lossy(&head).into_owned());
            }
        }
        out
    }
}

/// `GET …/log/stream`: the process's stdout or stderr, from its last [`FIRST_BYTES`], as
/// `event: line` (data: the line as a JSON string), `event: skipped` (`{"bytes": n}` or
/// `{"rotated": true}`), and a last `event: failed` (`{"message"}`) if the node stops serving
/// it (not `error`, which is the name of EventSource's own event). The node's stream is dropped, and its call cancelled, when the client goes away.
///
/// [`FIRST_BYTES`]: crate::node::follow::FIRST_BYTES
pub fn follow_log(fleet: &Fleet, source: LogSource) -> Response {
    let (tx, rx) = mpsc::channel(CLIENT_FRAMES);
    tokio::spawn(pump_log(source, fleet.feed().closing(), tx));
    sse(rx)
}

async fn pump_log(mut source: LogSource, closing: watch::Receiver<bool>, tx: mpsc::Sender<Bytes>) {
    let mut lines = Lines::default();
    let mut client = Client::new(tx, STALL, closing);
    if !client.send(Bytes::from_static(b"retry: 2000\n\n")).await {
        return;
    }
    loop {
        let out: Bytes = tokio::select! {
            r = source.next() => match r {
                Ok(Some(piece)) => {
                    let mut text = String::new();
                    match piece.note {
                        Some(Note::Skipped(n)) => text.push_str(&format!("event: skipped\ndata: {}\n\n", json!({"bytes": n}))),
                        Some(Note::Rotated) => text.push_str(&format!("event: skipped\ndata: {}\n\n", json!({"rotated": true}))),
                        None => {}
                    }
                    for line in lines.push(&piece.data, piece.cut) {
                        text.push_str(&format!("event: line\ndata: {}\n\n", Value::String(line)));
                    }
                    if text.is_empty() {
                        continue;
                    }
                    Bytes::from(text)
                }
                Ok(None) => {
                    let _ = client.send(frame("failed", &json!({"message": "the node ended the log stream"}))).await;
                    return;
                }
                Err(e) => {
                    let _ = client.send(frame("failed", &json!({"message": e.to_string()}))).await;
                    return;
                }
            },
            idle = client.idle() => match idle {
                Some(heartbeat) => heartbeat,
                None => return,
            },
        };
        if !client.send(out).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(i: usize, environment: &str) -> Arc<Change> {
        Arc::new(Change::Frame { environment: environment.into(), frame: frame("process", &json!({"i": i})) })
    }

    fn kind(f: &Bytes) -> String {
        String::from_utf8_lossy(f).lines().next().unwrap_or("").to_string()
    }

    async fn next(rx: &mut mpsc::Receiver<Bytes>) -> Option<Bytes> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.ok().flatten()
    }

    /// A client of `feed` that sees the environments `sees` accepts, with a 300 ms stall
    /// deadline: its task, and what it is sent.
    fn client(
        feed: &Feed,
        sees: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(CLIENT_FRAMES);
        let picture = || frame("snapshot", &json!({}));
        let stall = Duration::from_millis(300);
        (tokio::spawn(pump_events(feed.subscribe(), feed.closing(), picture, Arc::new(sees), tx, stall)), rx)
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_gets_a_new_snapshot_and_a_stalled_one_is_dropped() {
        let feed = Feed::default();
        let (pump, mut rx) = client(&feed, |e| e == "mine");
        assert_eq!(next(&mut rx).await.map(|f| kind(&f)).as_deref(), Some("retry: 2000"));
        assert_eq!(next(&mut rx).await.map(|f| kind(&f)).as_deref(), Some("event: snapshot"));
        // Another environment's change is not sent; this one's is.
        let _ = feed.changes.send(change(0, "other"));
        let _ = feed.changes.send(change(1, "mine"));
        let got = next(&mut rx).await.expect("a frame");
        assert!(String::from_utf8_lossy(&got).contains("\"i\":1"), "{got:?}");
        // The client reads nothing while far more changes than the feed keeps go by (this
        // runtime has one thread: the pump runs only once this loop is done).
        for i in 0..FEED_CAPACITY * 3 {
            let _ = feed.changes.send(change(i, "mine"));
        }
        let mut frames = Vec::new();
        while let Some(f) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await.ok().flatten() {
            frames.push(kind(&f));
            if frames.last().is_some_and(|k| k == "event: snapshot") {
                break;
            }
        }
        assert_eq!(frames.last().map(String::as_str), Some("event: snapshot"), "{} frames", frames.len());
        assert!(frames.len() <= CLIENT_FRAMES + 1, "buffered beyond its bound: {}", frames.len());
        // The backlog the snapshot replaces is not sent after it.
        assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err(), "stale frames");
        // Behind again, with frames it has not read: dropped at once, no snapshot queued.
        for i in 0..2 {
            let _ = feed.changes.send(change(i, "mine"));
            tokio::task::yield_now().await;
        }
        for i in 0..FEED_CAPACITY * 3 {
            let _ = feed.changes.send(change(i, "mine"));
        }
        let started = std::time::Instant::now();
        assert!(tokio::time::timeout(Duration::from_secs(5), pump).await.is_ok(), "not dropped");
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "waited for the stall: {:?}",
            started.elapsed()
        );
        let mut left = Vec::new();
        while let Ok(f) = rx.try_recv() {
            left.push(kind(&f));
        }
        assert!(!left.iter().any(|k| k == "event: snapshot") && left.len() <= CLIENT_FRAMES, "{left:?}");

        // A client that never reads: once its buffer is full, it is dropped after the stall
        // deadline, and its task ends.
        let (pump, rx) = client(&feed, |_| true);
        for i in 0..CLIENT_FRAMES * 2 {
            let _ = feed.changes.send(change(i, "mine"));
            tokio::task::yield_now().await;
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), pump).await;
        assert!(ended.is_ok(), "a stalled client's task did not end");
        assert!(rx.len() <= CLIENT_FRAMES);
    }

    #[test]
    fn pieces_become_whole_lines() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"tail of a line\nline 1\nline", true), vec!["line 1"]);
        assert_eq!(l.push(b" 2\nline 3\n", false), vec!["line 2", "line 3"]);
        assert_eq!(l.push(b"no newline yet", true), Vec::<String>::new());
        assert_eq!(l.push(b" still\nnext\n", false), vec!["next"]);
        let long = vec![b'x'; MAX_LINE + 10];
        let got = l.push(&long, false);
        assert_eq!(got.len(), 1);
        assert_eq!(l.push(b"\n", false), vec!["x".repeat(10)]);
    }
}
