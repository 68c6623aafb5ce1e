//! The protocols in front of the supervision core. Each front end only translates its wire
//! format into calls on the core ([`crate::supervisor`]) and back; none implements an operation
//! of its own.
//!
//! - [`xmlrpc`]: Supervisor's XML-RPC wire format (the codec).
//! - [`rpc2`]: Supervisor's XML-RPC interface at `POST /RPC2`, built on that codec.
//! - [`web`]: the web page (`/`, `/index.html`), Supervisor's GET actions, its live events.
//!
//! The gRPC front end is still [`crate::rpc`]. What the HTTP/1 front ends share (identifying
//! the caller and the answers to a refused one) is here.

pub mod rpc2;
pub mod web;
pub mod xmlrpc;

use http_body_util::Full;
use hyper::body::Bytes;

use crate::auth::{self, Access, Caller, Refusal, Shield};

/// An answer from an HTTP/1 front end.
pub type Response = http::Response<tonic::body::Body>;

/// A short plain-text answer.
pub fn plain(status: http::StatusCode, text: &str) -> Response {
    let mut r = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from(format!("{text}\n")))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Identifies the caller of `req` as every front end does ([`auth::admit`], then
/// [`auth::check`]), or answers the refusal: 401 with Supervisor's `WWW-Authenticate` (so
/// supervisorctl says "Server requires authentication" and a browser asks for a password),
/// 403 for a unix peer the socket does not admit, 429 for a throttled peer.
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
    checked.map_err(|refusal| match refusal {
        Refusal::Unauthenticated(why) => {
            let mut r = plain(http::StatusCode::UNAUTHORIZED, &format!("Unauthorized: {why}"));
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"default\""),
            );
            r
        }
        Refusal::Denied(why) => plain(http::StatusCode::FORBIDDEN, &format!("Forbidden: {why}")),
        Refusal::Throttled => plain(http::StatusCode::TOO_MANY_REQUESTS, auth::THROTTLED),
    })
}
