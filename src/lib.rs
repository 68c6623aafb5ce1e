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

/// The version of the API in `proto/` (the `v1` in `minder.v1`).
pub const API_VERSION: &str = "1";

/// minder's own version, shared by both binaries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
