//! minderd among gRPC services: health, reflection.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::harness::{code, Daemon};

const SECS: Duration = Duration::from_secs(1);

async fn channel(d: &Daemon) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("unix://{}", d.socket.display()))
        .expect("uri")
        .connect()
        .await
        .expect("connects")
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_a_program_through_start_stop_and_crash() {
    let d = Daemon::start("[program.web]\ncommand = \"sleep 100\"\nstartsecs = 0\nautorestart = false\n");
    d.wait_state("web", "RUNNING", 10 * SECS);
    let mut h = HealthClient::new(channel(&d).await);
    let check = |name: &str| HealthCheckRequest { service: name.into() };
    assert_eq!(h.check(check("")).await.expect("daemon").into_inner().status(), ServingStatus::Serving);
    let mut watch = h.watch(check("web")).await.expect("watch").into_inner();
    async fn next(w: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>) -> ServingStatus {
        tokio::time::timeout(Duration::from_secs(10), w.message())
            .await
            .expect("a status within 10 s")
            .expect("ok")
            .expect("the stream goes on")
            .status()
    }
    assert_eq!(next(&mut watch).await, ServingStatus::Serving);
    assert_eq!(code(&d.ctl(&["stop", "web"])), 0);
    assert_eq!(next(&mut watch).await, ServingStatus::NotServing);
    assert_eq!(code(&d.ctl(&["start", "web"])), 0);
    assert_eq!(next(&mut watch).await, ServingStatus::Serving);
    // A crash (SIGKILL, no autorestart) is NOT_SERVING.
    assert_eq!(code(&d.ctl(&["signal", "KILL", "web"])), 0);
    assert_eq!(next(&mut watch).await, ServingStatus::NotServing);
    // The group:name spelling is the same service.
    assert_eq!(
        h.check(check("web:web")).await.expect("check").into_inner().status(),
        ServingStatus::NotServing
    );
    let err = h.check(check("nope")).await.expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let d = Daemon::start("");
    let mut c = ServerReflectionClient::new(channel(&d).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp =
        c.server_reflection_info(tokio_stream::iter([req])).await.expect("reflection").into_inner();
    let msg = resp.message().await.expect("ok").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("{msg:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["minder.v1.Supervisor", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
}
