//! A minderd node over gRPC: state is pushed by a `WatchEvents` stream, never polled.
//!
//! The task connects (under `call_timeout`, HTTP/2 handshake included), opens the stream, and
//! publishes the snapshot it starts with; from then on each state change is applied as it
//! arrives, and once the stream has nothing more ready, one `ListProcesses` (under the deadline)
//! brings descriptions and times up to date. While the stream is quiet the task sleeps: only
//! Over TCP, HTTP/2 keep-alive pings (every 30 s) notice a peer that vanished without closing;
//! over a unix socket the peer's end closes when it goes, so there is no ping.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt as _;
use minder::pb;
use minder::pb::supervisor_client::SupervisorClient;
use minder::xmlrpc::Fault;
use tokio::sync::{watch, Notify};
use tonic::transport::Endpoint;

use super::{fail, Action, Backoff, CallError, Logs, ProcessResult, Target, LOG_BYTES};
use crate::config::{NodeConfig, Timing};
use crate::model::{state, state_code, NodeView, Process, Status};

use minder::AuthHeader as Auth;
/// A client of one node (cheap to clone: the channel is shared).
pub use minder::Client;

fn auth(node: &NodeConfig) -> Auth {
    use base64::Engine as _;
    let header = match (&node.token, &node.username) {
        (Some(t), _) => Some(format!("Bearer {}", t.expose())),
        (None, Some(u)) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{u}:{}", node.password.as_ref().map_or("", |p| p.expose())))
        )),
        (None, None) => None,
    };
    Auth(header.and_then(|h| h.parse().ok()))
}

pub(super) fn status_error(s: &tonic::Status, deadline: Duration) -> CallError {
    use tonic::Code;
    match s.code() {
        Code::DeadlineExceeded => CallError::TimedOut(deadline),
        Code::Unauthenticated => CallError::Unauthorized,
        Code::PermissionDenied => CallError::Forbidden(s.message().to_string()),
        Code::NotFound | Code::InvalidArgument => {
            CallError::Fault(Fault { code: 10, string: format!("BAD_NAME: {}", s.message()) })
        }
        Code::FailedPrecondition => {
            CallError::Fault(Fault { code: 30, string: format!("FAILED: {}", s.message()) })
        }
        Code::Unavailable | Code::Unknown | Code::Cancelled => {
            // The transport's error is in the status's source; "connection refused" is there.
            let text = format!("{s:?}");
            if text.contains("Connection refused") || text.contains("ConnectionRefused") {
                CallError::Refused
            } else {
                CallError::Unreachable(s.message().to_string())
            }
        }
        _ => CallError::Protocol(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// Connects under `deadline`: TCP or unix connect, and the HTTP/2 handshake.
async fn connect(node: &NodeConfig, deadline: Duration) -> Result<Client, CallError> {
    let uri = match &node.tls {
        Some(_) => node.address.endpoint_uri().replacen("http://", "https://", 1),
        None => node.address.endpoint_uri(),
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| CallError::Unreachable(format!("bad address {}: {e}", node.address)))?
        .connect_timeout(deadline);
    // Over TCP a peer can vanish without closing (a host gone, a partition, a wedged daemon):
    // an HTTP/2 ping every 30 s notices. A unix socket's peer is on this host, and its end
    // closes when it goes: no ping, so an idle node costs no wake-up at all.
    if !matches!(node.address, minder::address::Address::Unix(_)) {
        endpoint = endpoint
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(deadline)
            .keep_alive_while_idle(true);
    }
    if let Some(tls) = &node.tls {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca));
        if let Some((cert, key)) = &tls.identity {
            cfg = cfg.identity(Identity::from_pem(cert, key.expose()));
        }
        if let Some(d) = &tls.domain {
            cfg = cfg.domain_name(d.clone());
        }
        endpoint = endpoint.tls_config(cfg).map_err(|e| CallError::Protocol(format!("TLS: {e}")))?;
    }
    let channel = match tokio::time::timeout(deadline, endpoint.connect()).await {
        Err(_) => return Err(CallError::TimedOut(deadline)),
        Ok(Err(e)) => return Err(classify(&e)),
        Ok(Ok(c)) => c,
    };
    Ok(SupervisorClient::with_interceptor(channel, auth(node)))
}

/// A transport error, from the io::Error at its root.
fn classify(e: &(dyn std::error::Error + 'static)) -> CallError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return CallError::connect(std::io::Error::new(io.kind(), io.to_string()));
        }
        source = s.source();
    }
    CallError::Unreachable(e.to_string())
}

async fn unary<T, F>(deadline: Duration, f: F) -> Result<T, CallError>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(deadline, f).await {
        Err(_) => Err(CallError::TimedOut(deadline)),
        Ok(Err(s)) => Err(status_error(&s, deadline)),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// The task of a minderd node: connect, watch, reconnect with backoff.
pub async fn watch_node(
    node: NodeConfig,
    timing: Timing,
    tx: watch::Sender<NodeView>,
    slot: Arc<Mutex<Option<Client>>>,
    _refresh: Arc<Notify>,
) {
    let mut backoff = Backoff::new(&node.name);
    loop {
        let e = session(&node, timing, &tx, &slot, &mut backoff).await;
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
        fail(&tx, &node.name, e);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One connection's life; returns why it ended.
async fn session(
    node: &NodeConfig,
    timing: Timing,
    tx: &watch::Sender<NodeView>,
    slot: &Mutex<Option<Client>>,
    backoff: &mut Backoff,
) -> CallError {
    let deadline = timing.call_timeout;
    let mut client = match connect(node, deadline).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut stream = match unary(deadline, client.watch_events(pb::WatchEventsRequest::default())).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let (name, env) = (node.name.as_str(), node.environment.as_str());
    let mut connected = false;
    let mut dirty = false;
    loop {
        // The first message (the snapshot) is awaited under the deadline; later ones as long
        // as they take. With changes applied and nothing more ready, refresh the details.
        let next = if !connected {
            match tokio::time::timeout(deadline, stream.message()).await {
                Ok(r) => r,
                Err(_) => return CallError::TimedOut(deadline),
            }
        } else if dirty {
            match stream.message().now_or_never() {
                Some(r) => r,
                None => {
                    dirty = false;
                    match unary(deadline, client.list_processes(pb::ListProcessesRequest::default())).await {
                        Ok(list) => publish(
                            tx,
                            list.processes.iter().map(|p| Process::from_pb(p, name, env)).collect(),
                        ),
                        Err(e) => return e,
                    }
                    continue;
                }
            }
        } else {
            stream.message().await
        };
        let event = match next {
            Ok(Some(ev)) => ev,
            Ok(None) => return CallError::Unreachable("the node closed its event stream".into()),
            Err(s) => return status_error(&s, deadline),
        };
        use pb::event::Kind;
        match event.kind {
            Some(Kind::Snapshot(s)) => {
                publish(tx, s.processes.iter().map(|p| Process::from_pb(p, name, env)).collect());
                if !connected {
                    connected = true;
                    backoff.reset();
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
                    tracing::info!(node = %name, "connected");
                }
            }
            Some(Kind::Process(change)) => {
                let code = state_code(change.to());
                tx.send_modify(|v| {
                    let mut list = (*v.processes).clone();
                    if let Some(p) =
                        list.iter_mut().find(|p| p.name == change.name && p.group == change.group)
                    {
                        p.state = code;
                        p.statename = state::name(code).to_string();
                        p.pid = i64::from(change.pid);
                        p.spawnerr = change.spawn_error.clone();
                    }
                    v.processes = Arc::new(list);
                    v.last_seen = Some(SystemTime::now());
                });
                dirty = true;
            }
            Some(Kind::Group(_)) => dirty = true,
            // A snapshot follows a Lagged; the daemon's own state is not shown yet; Supervisor's
            // other events (log, tick, ...) come only to watchers that ask, which this is not.
            Some(Kind::Lagged(_)) | Some(Kind::Daemon(_)) | Some(Kind::Supervisor(_)) | None => {}
        }
    }
}

fn publish(tx: &watch::Sender<NodeView>, processes: Vec<Process>) {
    tx.send_replace(NodeView {
        status: Status::Connected,
        last_error: None,
        last_seen: Some(SystemTime::now()),
        processes: Arc::new(processes),
    });
}

/// Start, stop or restart on a minderd node: one call, with a result per process.
pub async fn act(
    mut client: Client,
    action: Action,
    target: &Target,
    deadline: Duration,
) -> Result<Vec<ProcessResult>, CallError> {
    let names = vec![match target {
        Target::Process(full) => full.clone(),
        Target::Group(g) => format!("{g}:*"),
        Target::All => "all".to_string(),
    }];
    let resp = match action {
        Action::Start => {
            unary(deadline, client.start_processes(pb::StartProcessesRequest { names, no_wait: false }))
                .await?
        }
        Action::Stop => {
            unary(deadline, client.stop_processes(pb::StopProcessesRequest { names, no_wait: false })).await?
        }
        Action::Restart => {
            unary(deadline, client.restart_processes(pb::RestartProcessesRequest { names, no_wait: false }))
                .await?
        }
    };
    Ok(resp
        .results
        .iter()
        .map(|r| {
            let code = i64::from(r.code);
            ProcessResult {
                name: r.name.clone(),
                group: r.group.clone(),
                status: if code == 80 { "success" } else { "error" },
                code,
                message: r.message.clone(),
            }
        })
        .collect())
}

/// The last [`LOG_BYTES`] of a process's stdout and stderr.
pub async fn tail(mut client: Client, full: &str, deadline: Duration) -> Result<Logs, CallError> {
    let req = pb::TailLogRequest {
        names: vec![full.to_string()],
        channels: vec![pb::LogChannel::Stdout as i32, pb::LogChannel::Stderr as i32],
        start: Some(pb::tail_log_request::Start::LastBytes(LOG_BYTES)),
        follow: false,
        resume: vec![],
    };
    let work = async {
        let mut stream = match client.tail_log(req).await {
            Ok(r) => r.into_inner(),
            // A process whose output is not in a file has no log to show.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => return Ok(Logs::default()),
            Err(s) => return Err(status_error(&s, deadline)),
        };
        let (mut out, mut err) = ((String::new(), None), (String::new(), None));
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    let slot =
                        if chunk.channel == pb::LogChannel::Stderr as i32 { &mut err } else { &mut out };
                    // The tail starts inside a line unless it starts at the log's beginning.
                    slot.1.get_or_insert(chunk.offset > 0);
                    slot.0.push_str(&String::from_utf8_lossy(&chunk.data));
                }
                Ok(None) => break,
                Err(s) => return Err(status_error(&s, deadline)),
            }
        }
        Ok(Logs {
            stdout: super::lines(&out.0, out.1.unwrap_or(false)),
            stderr: super::lines(&err.0, err.1.unwrap_or(false)),
        })
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(CallError::TimedOut(deadline)),
    }
}
