//! A supervisord node (or minderd's XML-RPC front end): Supervisor's XML-RPC at `POST /RPC2`
//! over HTTP/1.1 with Basic auth, on TCP or a unix socket.
//!
//! One connection per call, the whole call (connect, request, response, body) under one
//! deadline: a node that accepts and never answers costs one timer and one socket for at most
//! that long, and nothing else waits for it. The response body is read up to [`MAX_BODY`]; the
//! document is decoded by the same bounded codec as minderd's server half.

use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use minder::address::Address;
use minder::xmlrpc::{self, Value};

use super::CallError;
use crate::config::NodeConfig;

/// The largest response read (getAllProcessInfo of 10,000 processes is about 8 MiB).
pub const MAX_BODY: usize = 16 << 20;

/// How to reach one node's `/RPC2`.
#[derive(Debug, Clone)]
pub struct XmlRpcClient {
    address: Address,
    /// `Basic …`, when the node has credentials.
    auth: Option<http::HeaderValue>,
}

/// Aborts a spawned task when dropped (the connection driver of a call that timed out).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl XmlRpcClient {
    pub fn new(node: &NodeConfig) -> XmlRpcClient {
        let auth = node.username.as_ref().and_then(|u| {
            let pass = node.password.as_ref().map_or("", |p| p.expose());
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pass}"));
            let mut v = http::HeaderValue::from_str(&format!("Basic {token}")).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        XmlRpcClient { address: node.address.clone(), auth }
    }

    /// Calls `method` with `params`, all of it within `deadline`.
    pub async fn call(&self, method: &str, params: &[Value], deadline: Duration) -> Result<Value, CallError> {
        match tokio::time::timeout(deadline, self.call_inner(method, params)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::TimedOut(deadline)),
        }
    }

    async fn call_inner(&self, method: &str, params: &[Value]) -> Result<Value, CallError> {
        let body = xmlrpc::encode_call(method, params);
        let (host, sender) = match &self.address {
            Address::Tcp(hostport) => {
                let stream =
                    tokio::net::TcpStream::connect(hostport.as_str()).await.map_err(CallError::connect)?;
                let _ = stream.set_nodelay(true);
                (hostport.clone(), handshake(stream).await?)
            }
            Address::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(CallError::connect)?;
                ("localhost".to_string(), handshake(stream).await?)
            }
        };
        let (mut sender, _driver) = sender;
        let mut req = http::Request::post("/RPC2")
            .header(http::header::HOST, host)
            .header(http::header::CONTENT_TYPE, "text/xml")
            .header(http::header::USER_AGENT, concat!("minder-fleet/", env!("CARGO_PKG_VERSION")));
        if let Some(a) = &self.auth {
            req = req.header(http::header::AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Protocol(format!("cannot build the request: {e}")))?;
        let resp = sender.send_request(req).await.map_err(|e| CallError::Unreachable(e.to_string()))?;
        let status = resp.status();
        if status == http::StatusCode::UNAUTHORIZED {
            return Err(CallError::Unauthorized);
        }
        if status != http::StatusCode::OK {
            return Err(CallError::Protocol(format!("HTTP {status} from /RPC2")));
        }
        let bytes = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| CallError::Protocol(format!("reading the response: {e}")))?
            .to_bytes();
        match xmlrpc::decode_response(&bytes) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(fault)) => Err(CallError::Fault(fault)),
            Err(e) => Err(CallError::Protocol(e.to_string())),
        }
    }
}

type Sender = (hyper::client::conn::http1::SendRequest<Full<Bytes>>, AbortOnDrop);

async fn handshake<S>(stream: S) -> Result<Sender, CallError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, AbortOnDrop(driver.abort_handle())))
}
