//! The protocols in front of the supervision core. Each front end only translates its wire
//! format into calls on the core ([`crate::supervisor`]) and back; none implements an operation
//! of its own.
//!
//! - [`xmlrpc`]: Supervisor's XML-RPC wire format (the codec; the `/RPC2` dispatcher that uses
//!   it is not built yet).
//!
//! The gRPC front end is still [`crate::rpc`].

pub mod xmlrpc;
