//! minder's API crate: what the daemon (`minderd`) and the command line (`minder`) share.
//!
//! - [`pb`]: the gRPC contract generated from `proto/minder/v1/*.proto`. Protobuf types stop at
//!   the RPC layer: neither end lets them into its domain code.
//! - [`config`]: the one configuration model, read from native TOML or from supervisord.conf.
//! - [`address`]: where a daemon listens and a client connects, including the default socket.
//! - [`signal`]: signal names and numbers as supervisord spells them.
//! - [`xmlrpc`]: Supervisor's XML-RPC wire format, both halves: minderd decodes calls and
//!   encodes responses; minder-fleet encodes calls and decodes responses.

pub mod address;
pub mod config;
pub mod signal;
pub mod xmlrpc;

/// The generated protobuf messages, client and server for package `minder.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all)] // generated code; its documentation is the .proto
    #![allow(missing_debug_implementations)] // generated service wrappers do not derive Debug
    tonic::include_proto!("minder.v1");

    /// The encoded descriptor set of every `.proto` file, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/minder_descriptor.bin"));
}

/// What a gRPC client of minderd sends with every request: an `authorization` header (a bearer
/// token, or Basic), or nothing. Shared by `minder` and minder-fleet.
#[derive(Debug, Clone)]
pub struct AuthHeader(pub Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for AuthHeader {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A connected client of minderd's Supervisor service, with its [`AuthHeader`].
pub type Client = pb::supervisor_client::SupervisorClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AuthHeader>,
>;

/// The version of the API in `proto/` (the `v1` in `minder.v1`).
pub const API_VERSION: &str = "1";

/// minder's own version, shared by both binaries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
