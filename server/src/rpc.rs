//! The gRPC `minder.v1.Supervisor` service: where protobuf types meet the domain.
//!
//! Conversions between the two live here and nowhere else, with one mapping from
//! [`RequestError`] to `tonic::Status`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use minder::pb;
use minder::signal;
use tonic::{Request, Response, Status};

use crate::lifecycle::{Exit, ExitStatus, Kind};
use crate::process::{Fault, ProcessHandle};
use crate::supervisor::{DaemonState, Outcome, RequestError, Supervisor};

/// The service minderd serves on every listener.
#[derive(Debug, Clone)]
pub struct Service {
    sup: Arc<Supervisor>,
}

impl Service {
    pub fn new(sup: Arc<Supervisor>) -> Self {
        Service { sup }
    }

    /// The tonic server for this service.
    pub fn server(self) -> pb::supervisor_server::SupervisorServer<Service> {
        pb::supervisor_server::SupervisorServer::new(self)
    }
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        match e {
            RequestError::InvalidArgument(m) => Status::invalid_argument(m),
            RequestError::NotFound(name) => Status::not_found(format!("no such process: {name}")),
            RequestError::ShuttingDown => Status::unavailable("minderd is shutting down"),
        }
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
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
    pb::ExitStatus {
        how: Some(how),
        expected: e.expected,
        description: e.status.to_string(),
    }
}

/// A process as the API describes it.
pub fn process_info(h: &ProcessHandle) -> pb::ProcessInfo {
    let snap = h.snapshot();
    let c = &h.config;
    pb::ProcessInfo {
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
        stdout_logfile: h
            .logs
            .stdout
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        stderr_logfile: h
            .logs
            .stderr
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        spawn_count: snap.spawn_count,
    }
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
                    process: Some(process_info(h)),
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

#[tonic::async_trait]
impl pb::supervisor_server::Supervisor for Service {
    async fn get_daemon_info(
        &self,
        _req: Request<pb::GetDaemonInfoRequest>,
    ) -> Result<Response<pb::DaemonInfo>, Status> {
        let f = self.sup.facts();
        let state = match self.sup.state() {
            DaemonState::Running => pb::DaemonState::Running,
            DaemonState::Shutdown => pb::DaemonState::Shutdown,
        };
        Ok(Response::new(pb::DaemonInfo {
            version: minder::VERSION.to_string(),
            api_version: minder::API_VERSION.to_string(),
            pid: f.pid,
            identifier: f.identifier.clone(),
            config_path: f.config_path.display().to_string(),
            state: state.into(),
            start_time: Some(timestamp(f.start_time)),
            hostname: f.hostname.clone(),
        }))
    }

    async fn list_processes(
        &self,
        req: Request<pb::ListProcessesRequest>,
    ) -> Result<Response<pb::ListProcessesResponse>, Status> {
        let (handles, unmatched) = self.sup.list(&req.into_inner().names)?;
        Ok(Response::new(pb::ListProcessesResponse {
            processes: handles.iter().map(process_info).collect(),
            unmatched,
        }))
    }

    async fn get_process(
        &self,
        req: Request<pb::GetProcessRequest>,
    ) -> Result<Response<pb::ProcessInfo>, Status> {
        let h = self.sup.get(&req.into_inner().name)?;
        Ok(Response::new(process_info(&h)))
    }

    async fn start_processes(
        &self,
        req: Request<pb::StartProcessesRequest>,
    ) -> Result<Response<pb::ProcessActionResponse>, Status> {
        let r = req.into_inner();
        let outcomes = self.sup.start(&r.names, !r.no_wait).await?;
        Ok(Response::new(results(outcomes)))
    }

    async fn stop_processes(
        &self,
        req: Request<pb::StopProcessesRequest>,
    ) -> Result<Response<pb::ProcessActionResponse>, Status> {
        let r = req.into_inner();
        let outcomes = self.sup.stop(&r.names, !r.no_wait).await?;
        Ok(Response::new(results(outcomes)))
    }

    async fn restart_processes(
        &self,
        req: Request<pb::RestartProcessesRequest>,
    ) -> Result<Response<pb::ProcessActionResponse>, Status> {
        let r = req.into_inner();
        let outcomes = self.sup.restart(&r.names, !r.no_wait).await?;
        Ok(Response::new(results(outcomes)))
    }

    async fn signal_processes(
        &self,
        req: Request<pb::SignalProcessesRequest>,
    ) -> Result<Response<pb::ProcessActionResponse>, Status> {
        let r = req.into_inner();
        let sig = signal::parse(&r.signal).map_err(Status::invalid_argument)?;
        let outcomes = self.sup.signal(&r.names, sig).await?;
        Ok(Response::new(results(outcomes)))
    }

    async fn shutdown(
        &self,
        _req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        if self.sup.request_shutdown() {
            Ok(Response::new(pb::ShutdownResponse {}))
        } else {
            Err(Status::failed_precondition(
                "minderd is already shutting down",
            ))
        }
    }
}
