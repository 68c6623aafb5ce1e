//! minder-fleet: one place to see and control the processes of many hosts — Cesi, rebuilt.
//!
//! - [`config`]: Cesi's `cesi.conf.toml`, read unmodified, plus native keys for minderd nodes.
//! - [`node`]: one task per node (XML-RPC polled, or gRPC pushed), publishing what it knows.
//! - [`model`]: the fleet's own process and node types, converted from both protocols.
//! - [`api`]: the REST API under `/api/v2` (Cesi's routes and shapes, and group actions).
//!
//! [`run`] is the whole service after start-up: it takes its listener and a shutdown future,
//! so tests drive it as `main` does.

pub mod api;
pub mod config;
pub mod model;
pub mod node;

use std::future::Future;
use std::sync::Arc;

use config::{FleetConfig, Secret, Timing};
use node::Node;

/// The running fleet: its nodes, in configuration order, and the administrator's credentials.
#[derive(Debug)]
pub struct Fleet {
    pub nodes: Vec<Arc<Node>>,
    pub admin: (String, Secret),
    pub timing: Timing,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Fleet {
    /// Starts one task per node.
    pub fn start(config: &FleetConfig) -> Arc<Fleet> {
        let mut nodes = Vec::with_capacity(config.nodes.len());
        let mut tasks = Vec::with_capacity(config.nodes.len());
        for n in &config.nodes {
            let (node, task) = Node::spawn(n.clone(), config.timing);
            nodes.push(node);
            tasks.push(task.abort_handle());
        }
        Arc::new(Fleet {
            nodes,
            admin: (config.admin_username.clone(), config.admin_password.clone()),
            timing: config.timing,
            tasks,
        })
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.iter().find(|n| n.name() == name).cloned()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn run(
    config: FleetConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let fleet = Fleet::start(&config);
    let app = api::router(fleet.clone());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    drop(fleet);
    served
}
