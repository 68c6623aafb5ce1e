//! The protocols in front of the supervision core. Each front end only translates its wire
//! format into calls on the core ([`crate::supervisor`]) and back; none implements an operation
//! of its own.
//!
//! - [`xmlrpc`]: Supervisor's XML-RPC wire format (the codec), which lives in the API crate
//!   ([`minder::xmlrpc`]) because minder-fleet's client speaks it too.
//! - [`rpc2`]: Supervisor's XML-RPC interface at `POST /RPC2`, built on that codec.
//! - [`logtail`]: Supervisor's log URLs (`/logtail/…`, `/mainlogtail`, `/tail.html`) and
//!   `/ok.html`.
//! - [`web`]: the web page (`/`, `/index.html`), Supervisor's GET actions, its live events.
//! - [`common`]: what those share: identifying the caller, reading a body under a bound and a
//!   deadline, plain answers, URL and HTML escaping.
//!
//! - [`grpc`]: the gRPC `minder.v1.Supervisor` service (where protobuf types meet the domain),
//!   [`health`]: `grpc.health.v1`, and [`metrics`]: Prometheus metrics over HTTP.

pub mod common;
pub mod grpc;
pub mod health;
pub mod logtail;
pub mod metrics;
pub mod rpc2;
pub mod web;
pub use minder::xmlrpc;
