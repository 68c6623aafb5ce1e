//! What Supervisor's HTTP front ends (`/RPC2`, the log URLs, the web page) share: who is
//! calling, reading a request body under a bound and a deadline, and plain answers.
//!
//! The caller is identified by the same [`auth::admit`] and [`auth::check`] gRPC's layer uses,
//! and authorised by [`Operation`], so a front end cannot let in someone another would refuse.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};

use crate::auth::{self, Access, Caller, Operation, Refusal, Shield};

/// What every front end answers with.
pub type Response = http::Response<tonic::body::Body>;

/// How long a request body may take to arrive, once its headers have: a client that trickles
/// a body a byte at a time would otherwise hold its connection (and its slot under the
/// connection cap) for as long as it likes. hyper's header deadline ends at the headers, and
/// `serve.rs`'s idle deadline does not run while a request is open.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// A response of `status` with `text` (and a newline) as plain text.
pub fn plain(status: http::StatusCode, text: &str) -> Response {
    let mut r = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from(format!("{text}\n")))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Answers a request for a path no front end serves.
pub fn not_found() -> Response {
    plain(http::StatusCode::NOT_FOUND, "Not Found")
}

/// 405, naming the methods the path takes (the path as sent, bounded).
pub fn method_not_allowed(path: &str, allow: &'static str) -> Response {
    let text = crate::frontend::common::bounded(format!("Method Not Allowed: {path} takes {allow}"));
    let mut r = plain(http::StatusCode::METHOD_NOT_ALLOWED, &text);
    r.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// Identifies the caller of `req`; otherwise the answer to give: 401 asking for Basic
/// credentials (supervisorctl prints "Server requires authentication" on it, browsers ask for
/// a password), 403 for a unix caller the socket does not admit, or 429 when the peer failed
/// too often lately.
pub async fn authenticate<B>(
    access: &Access,
    shield: &Shield,
    req: &http::Request<B>,
) -> Result<Caller, Response> {
    let peer = req.extensions().get::<crate::serve::Peer>().cloned();
    let checked = match auth::admit(shield, peer.as_ref()).await {
        Ok(()) => auth::check(access, shield, req),
        Err(r) => Err(r),
    };
    match checked {
        Ok(caller) => Ok(caller),
        Err(Refusal::Unauthenticated(why)) => {
            let mut r = plain(http::StatusCode::UNAUTHORIZED, &format!("Unauthorized: {why}"));
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"default\""),
            );
            Err(r)
        }
        Err(Refusal::Denied(why)) => Err(plain(http::StatusCode::FORBIDDEN, &format!("Forbidden: {why}"))),
        Err(Refusal::Throttled) => Err(plain(http::StatusCode::TOO_MANY_REQUESTS, auth::THROTTLED)),
    }
}

/// [`authenticate`], and then checks that the caller may do `op` (403 if not).
pub async fn authorize<B>(
    access: &Access,
    shield: &Shield,
    req: &http::Request<B>,
    op: Operation,
) -> Result<Caller, Response> {
    let caller = authenticate(access, shield, req).await?;
    if !auth::allowed(caller.role, op) {
        return Err(plain(
            http::StatusCode::FORBIDDEN,
            &format!("Forbidden: {} is read-only and may not do this", caller.who),
        ));
    }
    Ok(caller)
}

/// Reads a request body of at most `max` bytes within `deadline`; otherwise the answer to
/// give: 413 (on the declared length, before any of it is read, or once it goes past), 408
/// (and the connection closed: the rest of the body would be taken for a request), or 400.
pub async fn read_body(
    req: http::Request<Incoming>,
    max: usize,
    deadline: Duration,
) -> Result<Bytes, Response> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let http1 = req.version() < http::Version::HTTP_2;
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max, http1));
    }
    match tokio::time::timeout(deadline, Limited::new(req.into_body(), max).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(too_large(max, http1))
        }
        Ok(Err(e)) => {
            tracing::debug!("reading a request body failed: {e}");
            Err(plain(http::StatusCode::BAD_REQUEST, "Bad Request: the body could not be read"))
        }
        Err(_) => {
            let mut r = plain(
                http::StatusCode::REQUEST_TIMEOUT,
                &format!("Request Timeout: the body did not arrive within {} s", deadline.as_secs()),
            );
            close(&mut r, http1);
            Err(r)
        }
    }
}

fn too_large(max: usize, http1: bool) -> Response {
    let mut r = plain(
        http::StatusCode::PAYLOAD_TOO_LARGE,
        &format!("Payload Too Large: a request body may hold at most {max} bytes"),
    );
    close(&mut r, http1);
    r
}

/// Over HTTP/1, closes the connection after `r`: the rest of the body is not read, so the
/// connection cannot carry another request. (HTTP/2 has no such header: each request is a
/// stream of its own.)
fn close(r: &mut Response, http1: bool) {
    if http1 {
        r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
}

/// Decodes `%XX` escapes (and, in a query string, `+` as a space), as Python's `unquote` and
/// `parse_qs` do: an escape that is not two hex digits is kept as it is; bytes that are not
/// UTF-8 become U+FFFD.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16);
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(Some(h)), Some(Some(l))) =
                (b.get(i + 1).map(|&c| hex(c)), b.get(i + 2).map(|&c| hex(c)))
            {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if plus_is_space && b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `key` in a query string (the first, decoded), as `parse_qs` would give it.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true) == key).then(|| percent_decode(v, true))
    })
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, for HTML text and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` escaped for a URL's query string (every byte but unreserved ones).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The most of a client's input an error message or log line repeats: messages travel in
/// HTTP/2 headers, and an echoed 200 KB name would get the connection torn down.
const ECHO_LIMIT: usize = 512;

/// `text`, cut to [`ECHO_LIMIT`] bytes (at a character boundary) with a note of the rest.
pub fn bounded(mut text: String) -> String {
    if text.len() > ECHO_LIMIT {
        let mut cut = ECHO_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let rest = text.len() - cut;
        text.truncate(cut);
        text.push_str(&format!("… ({rest} more bytes)"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_pythons() {
        assert_eq!(percent_decode("grp%3Aweb", false), "grp:web");
        assert_eq!(percent_decode("a+b%20c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        // Not an escape: kept.
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%ff", false), "\u{fffd}");
        assert_eq!(query_param(Some("processname=a%3Ab&limit=2048"), "limit").as_deref(), Some("2048"));
        assert_eq!(query_param(Some("processname=a%3Ab&limit=2048"), "processname").as_deref(), Some("a:b"));
        assert_eq!(query_param(Some("x"), "processname"), None);
        assert_eq!(query_param(None, "processname"), None);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_html("<script>alert('x&y')</script>\""),
            "&lt;script&gt;alert(&#39;x&amp;y&#39;)&lt;/script&gt;&quot;"
        );
        assert_eq!(percent_encode("grp:web 1&x"), "grp:web%201%26x");
    }
}
