//! The standard `grpc.health.v1.Health` service: "" is the daemon; every process is a service
//! of its own under its full name ("web", "site:api") and under "group:name" ("web:web"),
//! SERVING while it is RUNNING (and not failing its readiness probe, when it has one:
//! failure_threshold failures in a row) and NOT_SERVING otherwise. Kubernetes' gRPC probes and Envoy's
//! health checks can so watch one supervised program.
//!
//! Statuses are read from what the daemon already keeps (its state and each process's
//! snapshot), so the service holds nothing per process and cannot fall out of step.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::lifecycle::Kind;
use crate::supervisor::{DaemonState, Supervisor};

/// The health service over `sup`.
pub fn service(sup: Arc<Supervisor>) -> HealthServer<HealthService> {
    HealthServer::new(HealthService { sup })
}

pub struct HealthService {
    sup: Arc<Supervisor>,
}

impl std::fmt::Debug for HealthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthService").finish_non_exhaustive()
    }
}

/// What a name is the health of: the daemon's state, or one process's snapshots.
enum Subject {
    Daemon(watch::Receiver<DaemonState>),
    Process(watch::Receiver<crate::process::Snapshot>),
}

impl Subject {
    fn status(&mut self) -> ServingStatus {
        let serving = match self {
            Subject::Daemon(rx) => *rx.borrow_and_update() == DaemonState::Running,
            Subject::Process(rx) => {
                let snap = rx.borrow_and_update();
                // RUNNING, and not failing its readiness probe (if it has one).
                snap.state == Kind::Running
                    && snap.readiness.as_ref().is_none_or(|t| t.healthy != Some(false))
            }
        };
        if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }

    /// Resolves when the subject changes; false once it is gone.
    async fn changed(&mut self) -> bool {
        match self {
            Subject::Daemon(rx) => rx.changed().await.is_ok(),
            Subject::Process(rx) => rx.changed().await.is_ok(),
        }
    }
}

impl HealthService {
    fn subject(&self, service: &str) -> Result<Subject, Status> {
        if service.is_empty() {
            return Ok(Subject::Daemon(self.sup.watch_state()));
        }
        match self.sup.get(service) {
            Ok(h) => Ok(Subject::Process(h.watch())),
            Err(_) => Err(Status::not_found("service not registered")),
        }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let mut subject = self.subject(&request.get_ref().service)?;
        Ok(Response::new(response(subject.status())))
    }

    type WatchStream = Statuses;

    /// The current status, then each change of it (a change of state that leaves the status
    /// as it was is not one); the stream ends if the process is removed.
    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Statuses>, Status> {
        let subject = self.subject(&request.get_ref().service)?;
        let statuses = futures_util::stream::unfold((subject, None), |(mut subject, last)| async move {
            loop {
                let now = subject.status();
                if last != Some(now) {
                    return Some((Ok(response(now)), (subject, Some(now))));
                }
                if !subject.changed().await {
                    return None;
                }
            }
        });
        Ok(Response::new(Box::pin(statuses)))
    }
}
