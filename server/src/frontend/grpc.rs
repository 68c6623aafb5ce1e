//! The gRPC `minder.v1.Supervisor` service: where protobuf types meet the domain.
//!
//! Conversions between the two live here and nowhere else, with one mapping from
//! [`RequestError`] to `tonic::Status`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use minder::pb;
use minder::signal;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::common::bounded;
use crate::events::{DaemonPhase, Event, EventKind, Since};
use crate::lifecycle::{Exit, ExitStatus, Kind};
use crate::logs::{Chunk, LogChannel, ReadError};
use crate::plan::Plan;
use crate::process::{Fault, ProcessHandle};
use crate::supervisor::{DaemonState, Outcome, RequestError, Supervisor};
use crate::tail::{self, Output, Start, TailError};
use crate::update::{Applied, Change, UpdateError};

/// Writes who asked for what to the daemon log (every request that changes something).
fn audit<T>(req: &Request<T>, what: impl std::fmt::Display) {
    crate::auth::audit_as(&crate::auth::caller(req), &bounded(what.to_string()));
}

/// How many messages a stream buffers for a slow client before its producers wait.
const STREAM_BUFFER: usize = 16;

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The service minderd serves on every listener.
#[derive(Debug, Clone)]
pub struct Service {
    sup: Arc<Supervisor>,
    /// minderd's own log, when it goes to a file.
    daemon_log: Option<Arc<LogChannel>>,
}

impl Service {
    pub fn new(sup: Arc<Supervisor>, daemon_log: Option<Arc<LogChannel>>) -> Self {
        Service { sup, daemon_log }
    }

    /// The tonic server for this service.
    pub fn server(self) -> pb::supervisor_server::SupervisorServer<Service> {
        pb::supervisor_server::SupervisorServer::new(self)
    }
}

impl From<ReadError> for Status {
    fn from(e: ReadError) -> Status {
        match e {
            ReadError::NotRegular(_) => Status::failed_precondition(bounded(e.to_string())),
            ReadError::BeyondEnd { .. } => Status::out_of_range(bounded(e.to_string())),
            ReadError::Failed(..) => Status::internal(bounded(e.to_string())),
        }
    }
}

impl From<UpdateError> for Status {
    fn from(e: UpdateError) -> Status {
        match e {
            // Every configuration error is kept: they come from the operator's own files.
            UpdateError::Config(errors) => Status::failed_precondition(errors.to_string()),
            UpdateError::BadName(m) => Status::not_found(bounded(m)),
            UpdateError::StillRunning(m) => Status::failed_precondition(bounded(m)),
            e @ UpdateError::AlreadyAdded(_) => Status::already_exists(bounded(e.to_string())),
            UpdateError::ShuttingDown => Status::unavailable("minderd is shutting down"),
        }
    }
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        match e {
            RequestError::InvalidArgument(m) => Status::invalid_argument(bounded(m)),
            RequestError::NotFound(name) => Status::not_found(bounded(format!("no such process: {name}"))),
            RequestError::ShuttingDown => Status::unavailable("minderd is shutting down"),
        }
    }
}

impl From<TailError> for Status {
    fn from(e: TailError) -> Status {
        match e {
            TailError::Request(e) => e.into(),
            TailError::Read(e) => e.into(),
            e @ (TailError::NotCaptured(_) | TailError::NothingCaptured) => {
                Status::failed_precondition(bounded(e.to_string()))
            }
        }
    }
}

/// The wire's name for a process output.
fn log_channel(output: Output) -> pb::LogChannel {
    match output {
        Output::Stdout => pb::LogChannel::Stdout,
        Output::Stderr => pb::LogChannel::Stderr,
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

pub fn state(kind: Kind) -> pb::ProcessState {
    match kind {
        Kind::Stopped => pb::ProcessState::Stopped,
        Kind::Starting => pb::ProcessState::Starting,
        Kind::Running => pb::ProcessState::Running,
        Kind::Backoff => pb::ProcessState::Backoff,
        Kind::Stopping => pb::ProcessState::Stopping,
        Kind::Exited => pb::ProcessState::Exited,
        Kind::Fatal => pb::ProcessState::Fatal,
        Kind::Unknown => pb::ProcessState::Unknown,
    }
}

fn exit_status(e: &Exit) -> pb::ExitStatus {
    let how = match e.status {
        ExitStatus::Code(c) => pb::exit_status::How::Code(c),
        ExitStatus::Signal { signal, .. } => pb::exit_status::How::Signal(signal),
    };
    pb::ExitStatus { how: Some(how), expected: e.expected, description: e.status.to_string() }
}

/// A process as the API describes it.
pub fn process_info(h: &ProcessHandle, with_tree: bool) -> pb::ProcessInfo {
    listed(h, with_tree, true)
}

/// [`process_info`], with or without the log file paths (`ListProcessesRequest.brief`).
fn listed(h: &ProcessHandle, with_tree: bool, with_logs: bool) -> pb::ProcessInfo {
    let c = &h.config;
    let tree = if with_tree { h.tree() } else { None };
    let log = |ch: &Option<std::sync::Arc<crate::logs::LogChannel>>| match ch {
        Some(c) if with_logs => c.path().to_string_lossy().into_owned(),
        _ => String::new(),
    };
    h.with_snapshot(|snap| pb::ProcessInfo {
        name: c.name.clone(),
        group: c.group.clone(),
        full_name: c.full_name(),
        program: c.program.clone(),
        state: state(snap.state).into(),
        pid: snap.pid.unwrap_or(0),
        start_time: snap.start.map(timestamp),
        stop_time: snap.stop.map(timestamp),
        uptime: snap.uptime().map(duration),
        exit_status: snap.last_exit.as_ref().map(exit_status),
        spawn_error: snap.spawn_error.clone().unwrap_or_default(),
        description: snap.description(&c.name),
        stdout_logfile: log(&h.logs.stdout),
        stderr_logfile: log(&h.logs.stderr),
        spawn_count: snap.spawn_count,
        tree_pids: tree.as_ref().map(|t| t.pids.clone()).unwrap_or_default(),
        cpu_time: tree.as_ref().and_then(|t| t.cpu).map(duration),
        memory_bytes: tree.and_then(|t| t.memory),
        readiness: probe_status(c.readiness_probe.as_ref(), snap.readiness.as_ref()),
        liveness: probe_status(c.liveness_probe.as_ref(), snap.liveness.as_ref()),
    })
}

/// A probe's results as the API reports them (unset without the probe).
fn probe_status(
    probe: Option<&minder::config::Probe>,
    tally: Option<&crate::probe::Tally>,
) -> Option<pb::ProbeStatus> {
    let probe = probe?;
    let tally = tally.cloned().unwrap_or_else(|| crate::probe::Tally::new(probe, 0));
    Some(pb::ProbeStatus {
        kind: probe.check.kind().to_string(),
        target: probe.check.target().to_string(),
        healthy: tally.healthy,
        consecutive_failures: tally.failures,
        failure_threshold: probe.failure_threshold,
        last_failure: tally.last_failure.unwrap_or_default(),
        failures_total: tally.failures_total,
    })
}

fn result_code(r: &Result<(), Fault>) -> pb::ResultCode {
    match r {
        Ok(()) => pb::ResultCode::Success,
        Err(Fault::BadName(_)) => pb::ResultCode::BadName,
        Err(Fault::NoFile(_)) => pb::ResultCode::NoFile,
        Err(Fault::NotExecutable(_)) => pb::ResultCode::NotExecutable,
        Err(Fault::Failed(_) | Fault::ShuttingDown) => pb::ResultCode::Failed,
        Err(Fault::AbnormalTermination) => pb::ResultCode::AbnormalTermination,
        Err(Fault::SpawnError(_)) => pb::ResultCode::SpawnError,
        Err(Fault::AlreadyStarted) => pb::ResultCode::AlreadyStarted,
        Err(Fault::NotRunning) => pb::ResultCode::NotRunning,
    }
}

fn results(outcomes: Vec<Outcome>) -> pb::ProcessActionResponse {
    let results = outcomes
        .into_iter()
        .map(|o| {
            let code = result_code(&o.result);
            let message = match &o.result {
                Ok(()) => o.done.to_string(),
                Err(f) => f.to_string(),
            };
            match &o.process {
                Some(h) => pb::ProcessResult {
                    name: h.config.name.clone(),
                    group: h.config.group.clone(),
                    full_name: h.config.full_name(),
                    code: code.into(),
                    message,
                    process: Some(process_info(h, false)),
                },
                None => {
                    let (group, name) = match o.selector.split_once(':') {
                        Some((g, n)) => (g.to_string(), n.to_string()),
                        None => (o.selector.clone(), o.selector.clone()),
                    };
                    pb::ProcessResult {
                        name,
                        group,
                        full_name: o.selector.clone(),
                        code: code.into(),
                        message,
                        process: None,
                    }
                }
            }
        })
        .collect();
    pb::ProcessActionResponse { results }
}

fn config_change(group: &str, name: &str, change: &Change) -> pb::ConfigChange {
    let (kind, options) = match change {
        Change::Added => (pb::ChangeKind::Added, vec![]),
        Change::Changed(o) => (pb::ChangeKind::Changed, o.clone()),
        Change::Removed => (pb::ChangeKind::Removed, vec![]),
    };
    pb::ConfigChange {
        name: name.to_string(),
        group: group.to_string(),
        full_name: minder::config::full_name(group, name),
        kind: kind.into(),
        options,
        stopped: false,
        started: false,
        code: pb::ResultCode::Success.into(),
        message: String::new(),
        state: pb::ProcessState::Unspecified.into(),
        spawn_error: String::new(),
    }
}

/// A plan, reported but not applied (Reread).
fn planned(p: &Plan) -> pb::ConfigChanges {
    let mut changes: Vec<pb::ConfigChange> =
        p.remove.iter().map(|(g, n)| config_change(g, n, &Change::Removed)).collect();
    changes
        .extend(p.change.iter().map(|(c, o)| config_change(&c.group, &c.name, &Change::Changed(o.clone()))));
    changes.extend(p.add.iter().map(|c| config_change(&c.group, &c.name, &Change::Added)));
    pb::ConfigChanges { changes, applied: false }
}

fn applied(done: Vec<Applied>, applied: bool) -> pb::ConfigChanges {
    let changes = done
        .into_iter()
        .map(|a| {
            let mut c = config_change(&a.group, &a.name, &a.change);
            match a.result {
                Ok(d) => {
                    c.stopped = d.stopped;
                    c.started = d.started;
                    if let Some((kind, why)) = &a.after_start {
                        c.state = state(*kind).into();
                        c.spawn_error = why.clone().unwrap_or_default();
                    }
                }
                Err(f) => {
                    c.code = result_code(&Err(f.clone())).into();
                    c.message = f.to_string();
                }
            }
            c
        })
        .collect();
    pb::ConfigChanges { changes, applied }
}

fn daemon_state(s: DaemonState) -> pb::DaemonState {
    match s {
        DaemonState::Running => pb::DaemonState::Running,
        DaemonState::Restarting => pb::DaemonState::Restarting,
        DaemonState::Shutdown => pb::DaemonState::Shutdown,
    }
}

fn phase(p: DaemonPhase) -> pb::DaemonState {
    match p {
        DaemonPhase::Running => pb::DaemonState::Running,
        DaemonPhase::Restarting => pb::DaemonState::Restarting,
        DaemonPhase::Shutdown => pb::DaemonState::Shutdown,
    }
}

/// One event as the API describes it.
fn event(e: &Event, instance: &str) -> pb::Event {
    let kind = match &e.kind {
        EventKind::Process(c) => pb::event::Kind::Process(pb::ProcessStateChange {
            name: c.name.clone(),
            group: c.group.clone(),
            full_name: minder::config::full_name(&c.group, &c.name),
            from: state(c.from).into(),
            to: state(c.to).into(),
            pid: c.pid.unwrap_or(0),
            exit_status: c.exit.as_ref().map(exit_status),
            spawn_error: c.spawn_error.clone().unwrap_or_default(),
        }),
        EventKind::GroupAdded(name) => {
            pb::event::Kind::Group(pb::GroupChange { name: name.clone(), added: true })
        }
        EventKind::GroupRemoved(name) => {
            pb::event::Kind::Group(pb::GroupChange { name: name.clone(), added: false })
        }
        EventKind::Daemon { from, to } => pb::event::Kind::Daemon(pb::DaemonStateChange {
            from: phase(*from).into(),
            to: phase(*to).into(),
        }),
    };
    pb::Event { seq: e.seq, time: Some(timestamp(e.time)), instance: instance.to_string(), kind: Some(kind) }
}

/// Every process, with the number of the last change the picture includes.
fn snapshot(sup: &Supervisor) -> pb::Event {
    let (seq, processes) =
        sup.events().snapshot_with(|| sup.all_by_name().iter().map(|h| process_info(h, false)).collect());
    pb::Event {
        seq,
        time: Some(timestamp(SystemTime::now())),
        instance: sup.events().instance.clone(),
        kind: Some(pb::event::Kind::Snapshot(pb::Snapshot {
            processes,
            daemon_state: daemon_state(sup.state()).into(),
        })),
    }
}

/// A Supervisor event from a tap, numbered as the last state change before it.
fn tapped(e: &crate::listener::Tapped, seq: u64, instance: &str) -> pb::Event {
    pb::Event {
        seq,
        time: Some(timestamp(e.time)),
        instance: instance.to_string(),
        kind: Some(pb::event::Kind::Supervisor(pb::SupervisorEvent {
            name: e.name.to_string(),
            payload: e.payload.to_string(),
            dropped_before: e.dropped_before,
        })),
    }
}

/// Streams events to `tx` from after `next`, and what `tap` gets, until the client goes away.
async fn pump_events(
    sup: Arc<Supervisor>,
    mut next: u64,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
    mut tap: Option<crate::listener::Tap>,
) {
    let bus = sup.events();
    let mut published = bus.subscribe();
    loop {
        published.borrow_and_update();
        // What the tap holds first, so that busy state changes cannot hold it back for long.
        while let Some(e) = tap.as_mut().and_then(|t| t.try_recv().ok()) {
            if tx.send(Ok(tapped(&e, next, &bus.instance))).await.is_err() {
                return;
            }
        }
        match bus.since(next) {
            Since::Events(events) if events.is_empty() => {
                tokio::select! {
                    changed = published.changed() => if changed.is_err() { return },
                    e = async { tap.as_mut().expect("guarded by the condition").recv().await }, if tap.is_some() => match e {
                        Some(e) => if tx.send(Ok(tapped(&e, next, &bus.instance))).await.is_err() { return },
                        None => tap = None,
                    },
                    () = tx.closed() => return,
                }
            }
            Since::Events(events) => {
                for e in events {
                    if tx.send(Ok(event(&e, &bus.instance))).await.is_err() {
                        return;
                    }
                    next = e.seq;
                }
            }
            Since::Lagged { missed } => {
                let lagged = pb::Event {
                    seq: next,
                    time: Some(timestamp(SystemTime::now())),
                    instance: bus.instance.clone(),
                    kind: Some(pb::event::Kind::Lagged(pb::Lagged { missed })),
                };
                let snap = snapshot(&sup);
                next = snap.seq;
                if tx.send(Ok(lagged)).await.is_err() || tx.send(Ok(snap)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A tail's response, with its notices (if any) in the `minder-notice` header.
fn tail_response(
    rx: mpsc::Receiver<Result<pb::LogChunk, Status>>,
    notices: &[String],
) -> Response<Stream<pb::LogChunk>> {
    let mut resp: Response<Stream<pb::LogChunk>> = Response::new(Box::pin(ReceiverStream::new(rx)));
    if !notices.is_empty() {
        type Value = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;
        // A header carries visible ASCII only; a name that is not gets the general notice.
        let value = bounded(notices.join("; ")).parse::<Value>().or_else(|_| {
            "the last lines start further back than the scan goes; showing the last bytes".parse::<Value>()
        });
        if let Ok(v) = value {
            resp.metadata_mut().insert("minder-notice", v);
        }
    }
    resp
}

/// Starts streaming `channel` from `pos` into `tx`, each chunk labelled.
fn spawn_tail(
    channel: Arc<LogChannel>,
    pos: u64,
    follow: bool,
    process: String,
    which: pb::LogChannel,
    tx: mpsc::Sender<Result<pb::LogChunk, Status>>,
) {
    tokio::spawn(async move {
        let errors = tx.clone();
        let label = move |c: Chunk| {
            Ok(pb::LogChunk {
                process: process.clone(),
                channel: which.into(),
                offset: c.offset,
                data: c.data,
                skipped: c.skipped,
            })
        };
        if let Err(e) = channel.stream(pos, follow, tx, label).await {
            let _ = errors.send(Err(e.into())).await;
        }
    });
}

#[tonic::async_trait]
impl pb::supervisor_server::Supervisor for Service {
    type TailLogStream = Stream<pb::LogChunk>;
    type TailDaemonLogStream = Stream<pb::LogChunk>;
    type WatchEventsStream = Stream<pb::Event>;

    async fn get_daemon_info(
        &self,
        _req: Request<pb::GetDaemonInfoRequest>,
    ) -> Result<Response<pb::DaemonInfo>, Status> {
        let f = self.sup.facts();
        let state = daemon_state(self.sup.state());
        Ok(Response::new(pb::DaemonInfo {
            version: minder::VERSION.to_string(),
            api_version: minder::API_VERSION.to_string(),
            pid: f.pid,
            identifier: f.identifier.clone(),
            config_path: f.config_path.display().to_string(),
            state: state.into(),
            start_time: Some(timestamp(f.start_time)),
            hostname: f.hostname.clone(),
            upgrades: f.upgrades,
            upgrade_failure: f.upgrade_failure.clone().unwrap_or_default(),
        }))
    }

    async fn list_processes(
        &self,
        req: Request<pb::ListProcessesRequest>,
    ) -> Result<Response<pb::ListProcessesResponse>, Status> {
        let r = req.into_inner();
        let (handles, unmatched) = self.sup.list(&r.names)?;
        Ok(Response::new(pb::ListProcessesResponse {
            processes: handles.iter().map(|h| listed(h, r.with_tree, !r.brief)).collect(),
            unmatched,
        }))
    }

    async fn get_process(
        &self,
        req: Request<pb::GetProcessRequest>,
    ) -> Result<Response<pb::ProcessInfo>, Status> {
        let h = self.sup.get(&req.into_inner().name)?;
        Ok(Response::new(process_info(&h, true)))
    }

    async fn start_processes(
        &self,
        req: Request<pb::StartProcessesRequest>,
    ) -> Result<Response<pb::ProcessActionResponse>, Status> {
        audit(&req, format_args!("start {}", req.get_ref().names.join(" ")));
        let r = req.into_inner();
        let outcomes = self.sup.start(&r.names, !r.no_wait).await?;
        Ok(Response::new(results(outcomes)))
    }

    async fn stop_processes(
        &self,
        req: Request<pb::StopProcessesRequest>,
    ) -> Result<Response<pb::ProcessActionResponse>, Status> {
        audit(&req, format_args!("stop {}", req.get_ref().names.join(" ")));
        let r = req.into_inner();
        let outcomes = self.sup.stop(&r.names, !r.no_wait).await?;
        Ok(Response::new(results(outcomes)))
    }

    async fn restart_processes(
        &self,
        req: Request<pb::RestartProcessesRequest>,
    ) -> Result<Response<pb::ProcessActionResponse>, Status> {
        audit(&req, format_args!("restart {}", req.get_ref().names.join(" ")));
        let r = req.into_inner();
        let outcomes = self.sup.restart(&r.names, !r.no_wait).await?;
        Ok(Response::new(results(outcomes)))
    }

    async fn signal_processes(
        &self,
        req: Request<pb::SignalProcessesRequest>,
    ) -> Result<Response<pb::ProcessActionResponse>, Status> {
        audit(&req, format_args!("signal {} {}", req.get_ref().signal, req.get_ref().names.join(" ")));
        let r = req.into_inner();
        let sig = signal::parse(&r.signal).map_err(|e| Status::invalid_argument(bounded(e)))?;
        let outcomes = self.sup.signal(&r.names, sig).await?;
        Ok(Response::new(results(outcomes)))
    }

    async fn tail_log(
        &self,
        req: Request<pb::TailLogRequest>,
    ) -> Result<Response<Self::TailLogStream>, Status> {
        let r = req.into_inner();
        let mut outputs = Vec::new();
        for c in &r.channels {
            match pb::LogChannel::try_from(*c) {
                Ok(pb::LogChannel::Stdout) => outputs.push(Output::Stdout),
                Ok(pb::LogChannel::Stderr) => outputs.push(Output::Stderr),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "{c} is not a process output; use STDOUT or STDERR"
                    )))
                }
            }
        }
        let start = r.start.map(|s| match s {
            pb::tail_log_request::Start::LastBytes(n) => Start::LastBytes(n),
            pb::tail_log_request::Start::LastLines(n) => Start::LastLines(n),
            pb::tail_log_request::Start::Offset(o) => Start::Offset(o),
        });
        let resume = |process: &str, output: Output| {
            let channel = log_channel(output) as i32;
            r.resume.iter().find(|p| p.process == process && p.channel == channel).map(|p| p.offset)
        };
        let tail = tail::choose(&self.sup, &r.names, &outputs, start, resume).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        for s in tail.sources {
            spawn_tail(s.channel, s.pos, r.follow, s.process, log_channel(s.output), tx.clone());
        }
        Ok(tail_response(rx, &tail.notices))
    }

    async fn tail_daemon_log(
        &self,
        req: Request<pb::TailDaemonLogRequest>,
    ) -> Result<Response<Self::TailDaemonLogStream>, Status> {
        let r = req.into_inner();
        let Some(channel) = &self.daemon_log else {
            return Err(Status::failed_precondition(
                "minderd logs to standard output; set [daemon] logfile to read its log back",
            ));
        };
        let start = r.start.map(|s| match s {
            pb::tail_daemon_log_request::Start::LastBytes(n) => Start::LastBytes(n),
            pb::tail_daemon_log_request::Start::LastLines(n) => Start::LastLines(n),
            pb::tail_daemon_log_request::Start::Offset(o) => Start::Offset(o),
        });
        channel.readable()?;
        let mut notices = Vec::new();
        let pos = tail::start_of(channel, start, "minderd's log", &mut notices).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        spawn_tail(Arc::clone(channel), pos, r.follow, String::new(), pb::LogChannel::Daemon, tx);
        Ok(tail_response(rx, &notices))
    }

    async fn clear_logs(
        &self,
        req: Request<pb::ClearLogsRequest>,
    ) -> Result<Response<pb::ProcessActionResponse>, Status> {
        audit(&req, format_args!("clear {}", req.get_ref().names.join(" ")));
        let outcomes = self.sup.clear_logs(&req.into_inner().names).await?;
        Ok(Response::new(results(outcomes)))
    }

    async fn rotate_logs(
        &self,
        req: Request<pb::RotateLogsRequest>,
    ) -> Result<Response<pb::ProcessActionResponse>, Status> {
        audit(&req, format_args!("rotate {}", req.get_ref().names.join(" ")));
        let outcomes = self.sup.rotate_logs(&req.into_inner().names).await?;
        Ok(Response::new(results(outcomes)))
    }

    async fn send_stdin(
        &self,
        req: Request<pb::SendStdinRequest>,
    ) -> Result<Response<pb::SendStdinResponse>, Status> {
        audit(&req, format_args!("stdin of {} ({} bytes)", req.get_ref().name, req.get_ref().data.len()));
        let r = req.into_inner();
        let h = self.sup.get(&r.name)?;
        match h.send_stdin(&r.data).await {
            Ok(()) => Ok(Response::new(pb::SendStdinResponse {})),
            Err(Fault::NotRunning) => {
                Err(Status::failed_precondition(bounded(format!("{} is not running", r.name))))
            }
            Err(e) => Err(Status::failed_precondition(bounded(e.to_string()))),
        }
    }

    async fn send_remote_comm_event(
        &self,
        req: Request<pb::SendRemoteCommEventRequest>,
    ) -> Result<Response<pb::SendRemoteCommEventResponse>, Status> {
        let r = req.get_ref();
        audit(&req, format_args!("remote event of type {} ({} bytes)", r.r#type, r.data.len()));
        self.sup.send_remote_event(&r.r#type, &r.data);
        Ok(Response::new(pb::SendRemoteCommEventResponse {}))
    }

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let r = req.into_inner();
        let mut kinds = Vec::new();
        for name in &r.supervisor_events {
            let upper = name.trim().to_uppercase();
            if !crate::listener::tappable(&upper) {
                return Err(Status::invalid_argument(bounded(format!(
                    "{name:?} is not an event type WatchEvents streams besides state changes; use {}, their \
                     families (PROCESS_LOG, PROCESS_COMMUNICATION, TICK) or EVENT",
                    crate::listener::TAPPABLE.join(", ")
                ))));
            }
            kinds.push(upper);
        }
        let tap = (!kinds.is_empty()).then(|| self.sup.events().listeners.tap(kinds));
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let sup = Arc::clone(&self.sup);
        tokio::spawn(async move {
            let bus = sup.events();
            let resume = r.since_seq > 0 && r.instance == bus.instance && bus.holds(r.since_seq);
            let next = if resume {
                r.since_seq
            } else {
                let snap = snapshot(&sup);
                let seq = snap.seq;
                if tx.send(Ok(snap)).await.is_err() {
                    return;
                }
                seq
            };
            pump_events(sup, next, tx, tap).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn reread(&self, req: Request<pb::RereadRequest>) -> Result<Response<pb::ConfigChanges>, Status> {
        audit(&req, "reread");
        let plan = self.sup.reread().await?;
        Ok(Response::new(planned(&plan)))
    }

    async fn update(&self, req: Request<pb::UpdateRequest>) -> Result<Response<pb::ConfigChanges>, Status> {
        audit(
            &req,
            format_args!(
                "update{}",
                req.get_ref().groups.iter().map(|g| format!(" {g}")).collect::<String>()
            ),
        );
        let r = req.into_inner();
        let done = self.sup.update(&r.groups, r.dry_run).await?;
        Ok(Response::new(applied(done, !r.dry_run)))
    }

    async fn add_group(
        &self,
        req: Request<pb::AddGroupRequest>,
    ) -> Result<Response<pb::ConfigChanges>, Status> {
        audit(&req, format_args!("add {}", req.get_ref().name));
        let done = self.sup.add_group(&req.into_inner().name).await?;
        Ok(Response::new(applied(done, true)))
    }

    async fn remove_group(
        &self,
        req: Request<pb::RemoveGroupRequest>,
    ) -> Result<Response<pb::ConfigChanges>, Status> {
        audit(&req, format_args!("remove {}", req.get_ref().name));
        let done = self.sup.remove_group(&req.into_inner().name).await?;
        Ok(Response::new(applied(done, true)))
    }

    async fn reload(&self, req: Request<pb::ReloadRequest>) -> Result<Response<pb::ConfigChanges>, Status> {
        audit(&req, format_args!("reload{}", if req.get_ref().restart_all { " --restart-all" } else { "" }));
        let done = self.sup.reload(req.into_inner().restart_all).await?;
        Ok(Response::new(applied(done, true)))
    }

    async fn list_available(
        &self,
        _req: Request<pb::ListAvailableRequest>,
    ) -> Result<Response<pb::ListAvailableResponse>, Status> {
        let processes = self
            .sup
            .available()
            .into_iter()
            .map(|a| pb::AvailableProcess {
                full_name: minder::config::full_name(&a.group, &a.name),
                name: a.name,
                group: a.group,
                in_use: a.in_use,
                autostart: a.autostart,
                group_priority: a.group_priority,
                priority: a.priority,
            })
            .collect();
        Ok(Response::new(pb::ListAvailableResponse { processes }))
    }

    async fn shutdown(
        &self,
        req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        audit(&req, "shutdown");
        if self.sup.request_shutdown() {
            Ok(Response::new(pb::ShutdownResponse {}))
        } else {
            Err(Status::failed_precondition("minderd is already shutting down"))
        }
    }

    async fn upgrade(
        &self,
        req: Request<pb::UpgradeRequest>,
    ) -> Result<Response<pb::UpgradeResponse>, Status> {
        audit(&req, "upgrade");
        match self.sup.upgrade().await {
            Ok(a) => Ok(Response::new(pb::UpgradeResponse { version: a.version, upgrades: a.upgrades })),
            Err(e) => Err(Status::failed_precondition(e)),
        }
    }
}
