//! Supervisor's HTTP URLs for logs and liveness, on the same sockets as gRPC and `/RPC2`:
//!
//! - `GET /logtail/NAME`, `/logtail/NAME/stdout`, `/logtail/NAME/stderr` (NAME may be
//!   `GROUP:NAME`, URL-encoded or not) and `GET /mainlogtail` (minderd's own log): the last
//!   [`HEAD`] bytes, then everything written later, as one chunked `text/plain` response that
//!   lasts until the client goes away or the daemon stops. This is what supervisorctl's
//!   `tail -f`, `maintail -f` and `fg` read, and the seed's `curl …/logtail/ping`.
//! - `GET /tail.html?processname=NAME&limit=N`: the last max(N, 1024) bytes of stdout in a small
//!   HTML page (escaped) with a Refresh link, as Supervisor's.
//! - `GET /ok.html`: `OK`.
//!
//! Every one of them asks who is calling as `/RPC2` does ([`super::common::authorize`]): with a
//! username set, Supervisor puts every handler behind its Basic auth, `ok.html` included, and so
//! does minderd; a read-only caller may read.
//!
//! Following is [`LogChannel::stream`]'s: it reads the files (never the pipe), across rotations
//! without a gap; bytes rotated away before the follower got to them are announced with a
//! `==> File truncated … <==` line, as supervisord marks a file that shrank under its reader.
//! A log whose file does not exist yet (a process never started: the file is made at the
//! first spawn) is 404, as supervisord answers, so that supervisorctl prints what it prints
//! there.
//!
//! A client that stops reading costs a bounded amount of memory: the stream reads ahead at most
//! [`FOLLOW_BUFFER`] chunks (and two more in hand) into bounded channels, and hyper stops asking
//! for more once its write buffer is full; the file is then not read until the client reads
//! again. When the daemon stops serving (its processes have stopped), a follower gets what the
//! log holds up to its end and a complete response, instead of a connection cut.

use crate::tail::{self, Output, Start};
use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use super::common::{self, escape_html, percent_decode, percent_encode, plain, query_param, Response};
use crate::auth::{Access, Operation, Shield};
use crate::logs::{Chunk, LogChannel};
use crate::supervisor::Supervisor;

/// How many bytes before the end a follower starts (supervisord's `tail_f_producer` head).
pub const HEAD: u64 = 1024;

/// Chunks (of up to [`crate::logs::CHUNK`] bytes) read ahead of a follower.
pub const FOLLOW_BUFFER: usize = 4;

/// The most `/tail.html` shows, whatever `limit` asks for: the page is built in memory.
pub const TAIL_PAGE_MAX: u64 = 1 << 20;

/// The log URLs of one listener.
#[derive(Debug)]
pub struct Endpoint {
    pub sup: Arc<Supervisor>,
    pub daemon_log: Option<Arc<LogChannel>>,
    pub access: Arc<Access>,
    pub shield: Arc<Shield>,
    /// Turns true when the daemon stops serving (after its processes stopped): followers then
    /// send what is left and end.
    pub stopping: watch::Receiver<bool>,
}

/// Whether `path` is one this module answers.
pub fn serves(path: &str) -> bool {
    matches!(path, "/logtail" | "/mainlogtail" | "/ok.html" | "/tail.html") || path.starts_with("/logtail/")
}

impl Endpoint {
    /// Serves one request to a path [`serves`] accepts.
    pub async fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> Result<Response, Infallible> {
        Ok(self.serve(req).await)
    }

    async fn serve(&self, req: http::Request<Incoming>) -> Response {
        let path = req.uri().path().to_string();
        let head = req.method() == http::Method::HEAD;
        if req.method() != http::Method::GET && !head {
            return common::method_not_allowed(&path, "GET, HEAD");
        }
        let op = if path == "/ok.html" { Operation::ReadState } else { Operation::ReadLogs };
        if let Err(r) = common::authorize(&self.access, &self.shield, &req, op).await {
            return r;
        }
        let r = match path.as_str() {
            "/ok.html" => ok(),
            "/tail.html" => self.tail_page(req.uri().query()).await,
            "/mainlogtail" => match &self.daemon_log {
                Some(log) => follow(log, self.stopping.clone()),
                None => plain(
                    http::StatusCode::NOT_FOUND,
                    "Not Found: minderd logs to standard output; set its logfile to read its log here",
                ),
            },
            _ => self.logtail(&path).await,
        };
        if head {
            // The headers GET would give, without the body (a follow it began ends with it).
            let (parts, _) = r.into_parts();
            return http::Response::from_parts(parts, tonic::body::Body::empty());
        }
        r
    }

    /// `/logtail/NAME[/CHANNEL]`: split as supervisord splits it, after decoding the path.
    async fn logtail(&self, path: &str) -> Response {
        let not_found =
            |why: String| plain(http::StatusCode::NOT_FOUND, &crate::frontend::common::bounded(why));
        let rest = percent_decode(path.strip_prefix("/logtail").unwrap_or(""), false);
        let rest = rest.trim_start_matches('/');
        let (name, channel) = rest.split_once('/').unwrap_or((rest, "stdout"));
        if name.is_empty() {
            return not_found("Not Found: name a process, /logtail/NAME[/stdout|/stderr]".into());
        }
        let Ok(h) = self.sup.get(name) else {
            return not_found(format!("Not Found: no process named {name}"));
        };
        let output = match channel {
            "stdout" => Output::Stdout,
            "stderr" => Output::Stderr,
            _ => return not_found(format!("Not Found: {channel:?} is not a channel; use stdout or stderr")),
        };
        // The same choice as TailLog's (and its reasons for refusing); the start is
        // supervisord's, recomputed by `follow` once it knows the file exists.
        let names = [h.config.full_name()];
        match tail::choose(&self.sup, &names, &[output], Some(Start::LastBytes(HEAD)), |_, _| None).await {
            Ok(t) => match t.sources.first() {
                Some(source) => follow(&source.channel, self.stopping.clone()),
                None => not_found(format!("Not Found: {}", tail::TailError::NothingCaptured)),
            },
            Err(e) => not_found(format!("Not Found: {e}")),
        }
    }

    /// Supervisor's tail page: the last max(limit, 1024) bytes of a process's stdout.
    async fn tail_page(&self, query: Option<&str>) -> Response {
        let Some(name) = query_param(query, "processname").filter(|n| !n.is_empty()) else {
            return tail_html(http::StatusCode::BAD_REQUEST, None, 0, "No process name found");
        };
        let limit = query_param(query, "limit")
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0)
            .clamp(HEAD, TAIL_PAGE_MAX);
        let Ok(h) = self.sup.get(&name) else {
            let text = crate::frontend::common::bounded(format!("No process named {name}"));
            return tail_html(http::StatusCode::NOT_FOUND, Some(&name), limit, &text);
        };
        let Some(log) = h.logs.stdout.as_ref().filter(|l| exists(l)) else {
            return tail_html(
                http::StatusCode::NOT_FOUND,
                Some(&name),
                limit,
                &format!("No file for {name}"),
            );
        };
        match last_bytes(log, limit).await {
            Ok(data) => tail_html(http::StatusCode::OK, Some(&name), limit, &String::from_utf8_lossy(&data)),
            Err(e) => tail_html(http::StatusCode::NOT_FOUND, Some(&name), limit, &e.to_string()),
        }
    }
}

/// Supervisor's `ok.html`: exactly `OK`, for load balancers and probes.
fn ok() -> Response {
    let mut r = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from_static(b"OK"))));
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    r
}

/// The last `n` bytes of `log` (across its rotated files), read on the blocking pool.
async fn last_bytes(log: &Arc<LogChannel>, n: u64) -> Result<Vec<u8>, crate::logs::ReadError> {
    log.readable()?;
    let pos = log.start_for_last_bytes(n);
    let (tx, mut rx) = mpsc::channel(FOLLOW_BUFFER);
    let reader = tokio::spawn(Arc::clone(log).stream(pos, false, tx, |c: Chunk| c.data));
    let mut data = Vec::new();
    // What was written while reading may come too; `n` bytes are enough.
    while let Some(piece) = rx.recv().await {
        data.extend_from_slice(&piece);
        if data.len() as u64 >= n {
            data.truncate(n as usize);
            break;
        }
    }
    drop(rx);
    match reader.await {
        Ok(r) => r?,
        Err(e) => return Err(crate::logs::ReadError::Failed(log.path().to_path_buf(), e.to_string())),
    }
    Ok(data)
}

/// The tail page; `name` and `text` are escaped here.
fn tail_html(status: http::StatusCode, name: Option<&str>, limit: u64, text: &str) -> Response {
    let title = match name {
        Some(n) => format!("Supervisor tail of process {}", escape_html(n)),
        None => "Supervisor tail".to_string(),
    };
    // Relative, so that the page works under a proxy's path prefix.
    let refresh = match name {
        Some(n) => format!(
            "<p><a href=\"tail.html?processname={}&amp;limit={limit}\">Refresh</a></p>\n",
            escape_html(&percent_encode(n))
        ),
        None => String::new(),
    };
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n</head>\n<body>\n<pre>{}</pre>\n{refresh}</body>\n</html>\n",
        escape_html(text)
    );
    let mut r = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from(page))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    r
}

/// Follows `log` from [`HEAD`] bytes before its end, for as long as the response is read.
fn follow(log: &Arc<LogChannel>, stopping: watch::Receiver<bool>) -> Response {
    if !exists(log) {
        return plain(
            http::StatusCode::NOT_FOUND,
            &format!("Not Found: {} does not exist (yet)", log.path().display()),
        );
    }
    if let Err(e) = log.readable() {
        return plain(http::StatusCode::NOT_FOUND, &format!("Not Found: {e}"));
    }
    let pos = log.start_for_last_bytes(HEAD);
    let (tx, rx) = mpsc::channel::<Bytes>(FOLLOW_BUFFER);
    tokio::spawn(relay(Arc::clone(log), pos, tx, stopping));
    let body = StreamBody::new(ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut r = http::Response::new(tonic::body::Body::new(body));
    let h = r.headers_mut();
    // No Content-Length: HTTP/1.1 sends it chunked.
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain;charset=utf-8"));
    // nginx would otherwise buffer the stream; Chrome shows nothing under 1 KiB without nosniff
    // (Supervisor #1681).
    h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    h.insert(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    r
}

/// Streams `log` from `pos` into `tx` until the client goes away (`tx` closes); once the daemon
/// stops serving (`stopping`), sends what the log holds up to its end and ends the response,
/// so that the client sees a complete answer and the daemon's exit waits for nobody.
async fn relay(log: Arc<LogChannel>, pos: u64, tx: mpsc::Sender<Bytes>, mut stopping: watch::Receiver<bool>) {
    // The reader's chunks come through a channel of one, so that `reached` (the end of the last
    // chunk taken from it) is exact when the reader is stopped: a chunk it was sending then is
    // read again, never lost.
    let (chunks, mut from_reader) = mpsc::channel::<Chunk>(1);
    let mut reader = tokio::spawn(Arc::clone(&log).stream(pos, true, chunks, |c| c));
    let mut reached = pos;
    let stopped = loop {
        tokio::select! {
            c = from_reader.recv() => match c {
                Some(c) => {
                    reached = c.offset + c.data.len() as u64;
                    if tx.send(piece(c)).await.is_err() {
                        break false;
                    }
                }
                // The reader ended: only on an error.
                None => break false,
            },
            () = tx.closed() => break false,
            stopped = stops(&mut stopping) => break stopped,
        }
    };
    if !stopped {
        reader.abort();
        if let Ok(Err(e)) = (&mut reader).await {
            let _ = tx.send(Bytes::from(format!("==> {e} <==\n"))).await;
        }
        return;
    }
    reader.abort();
    let _ = reader.await;
    // A chunk still in the channel was read up to `reached`'s successor; send it first.
    while let Ok(c) = from_reader.try_recv() {
        reached = c.offset + c.data.len() as u64;
        if tx.send(piece(c)).await.is_err() {
            return;
        }
    }
    let errors = tx.clone();
    if let Err(e) = log.stream(reached, false, tx, piece).await {
        let _ = errors.send(Bytes::from(format!("==> {e} <==\n"))).await;
    }
}

/// Resolves when `stopping` turns true (true), or its sender is gone (false).
async fn stops(stopping: &mut watch::Receiver<bool>) -> bool {
    stopping.wait_for(|s| *s).await.is_ok()
}

/// Whether the log's file is there (a `stat`, as supervisord's `os.path.exists`).
fn exists(log: &LogChannel) -> bool {
    std::fs::metadata(log.path()).is_ok()
}

/// A chunk as the follower sends it: its bytes, after a line saying how many were lost before
/// them, if any were.
fn piece(c: Chunk) -> Bytes {
    if c.skipped == 0 {
        return Bytes::from(c.data);
    }
    let mut out =
        format!("==> File truncated: {} bytes were rotated away before they could be read <==\n", c.skipped)
            .into_bytes();
    out.extend_from_slice(&c.data);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for p in
            ["/logtail", "/logtail/web", "/logtail/g%3Aweb/stderr", "/mainlogtail", "/ok.html", "/tail.html"]
        {
            assert!(serves(p), "{p}");
        }
        for p in ["/", "/index.html", "/logtailx", "/RPC2", "/minder.v1.Supervisor/TailLog", "/mainlogtail/x"]
        {
            assert!(!serves(p), "{p}");
        }
    }

    #[test]
    fn lost_bytes_are_announced() {
        assert_eq!(piece(Chunk { offset: 0, data: b"abc".to_vec(), skipped: 0 }), Bytes::from_static(b"abc"));
        let p = piece(Chunk { offset: 10, data: b"abc".to_vec(), skipped: 7 });
        assert_eq!(
            p,
            Bytes::from_static(
                b"==> File truncated: 7 bytes were rotated away before they could be read <==\nabc"
            )
        );
    }

    #[test]
    fn the_tail_page_escapes_what_it_shows() {
        let r = tail_html(http::StatusCode::OK, Some("a<b"), 2048, "<script>alert(1)</script>&");
        assert_eq!(r.status(), http::StatusCode::OK);
        let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(r.into_body()))
            .expect("a full body is ready")
            .expect("no error")
            .to_bytes();
        let page = String::from_utf8_lossy(&body);
        assert!(page.contains("<pre>&lt;script&gt;alert(1)&lt;/script&gt;&amp;</pre>"), "{page}");
        assert!(page.contains("<title>Supervisor tail of process a&lt;b</title>"), "{page}");
        assert!(page.contains("href=\"tail.html?processname=a%3Cb&amp;limit=2048\""), "{page}");
        assert!(!page.contains("<script>"), "{page}");
    }
}
