//! minder-fleet: one place to see and control the processes of many hosts — Cesi, rebuilt.
//!
//! - [`config`]: Cesi's `cesi.conf.toml`, read unmodified, plus native keys for minderd nodes.
//! - [`discover`]: nodes found in DNS (every address of a name), re-resolved on an interval.
//! - [`node`]: one task per node (XML-RPC polled, or gRPC pushed), publishing what it knows.
//! - [`model`]: the fleet's own process and node types, converted from both protocols.
//! - [`api`]: the REST API under `/api/v2` (Cesi's routes and shapes, and group actions).
//! - [`auth`]: who is calling (sessions, HTTP Basic), the login rate limit, CSRF, and the
//!   login/logout/profile routes; [`users`]: the users in SQLite (argon2); [`activity`]: the
//!   activity log.
//!
//! [`run`] is the whole service after start-up: it takes its listener and a shutdown future,
//! so tests drive it as `main` does. SIGHUP re-reads the configuration ([`Fleet::reload`]):
//! nodes come and go without a restart, and a node whose settings did not change keeps its
//! task and its connection. Discovered nodes come and go the same way ([`Fleet::reconcile`]),
//! whenever a `[[discover]]` name's answer changes.

pub mod activity;
pub mod api;
pub mod auth;
pub mod config;
pub mod discover;
pub mod model;
pub mod node;
pub mod stream;
pub mod users;
pub mod web;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};

use config::{FleetConfig, NodeConfig, Timing};
use discover::DiscoverConfig;
use node::Node;

/// One node and its task, which is aborted when the node leaves the fleet.
#[derive(Debug)]
struct Member {
    node: Arc<Node>,
    task: tokio::task::AbortHandle,
}

/// What a configuration gives the running fleet (replaced whole by a reload).
#[derive(Debug)]
struct Current {
    members: Vec<Member>,
    nodes: Arc<Vec<Arc<Node>>>,
    /// The `[[nodes]]` of the configuration (discovered nodes are added to these).
    configured: Vec<NodeConfig>,
    timing: Timing,
}

/// The running fleet: its nodes, in configuration order, and its users.
#[derive(Debug)]
pub struct Fleet {
    path: PathBuf,
    /// Users, sessions and the activity log: opened at start, not changed by a reload.
    auth: Arc<auth::Auth>,
    /// Held only to clone an `Arc` out or to swap in a new configuration, never across an await.
    current: RwLock<Current>,
    /// The nodes each `[[discover]]` prefix last found. Never locked while `current` is.
    discovered: Mutex<BTreeMap<String, Vec<NodeConfig>>>,
    /// The discovery tasks, one per `[[discover]]`, replaced by a reload.
    discoverers: Mutex<Vec<tokio::task::AbortHandle>>,
    /// What changed on the nodes, for the live streams.
    feed: stream::Feed,
}

/// Whether two configurations of a node would make the same task (its place in the file aside).
fn same_node(a: &NodeConfig, b: &NodeConfig) -> bool {
    let tls = |n: &NodeConfig| {
        n.tls.as_ref().map(|t| {
            (t.ca.clone(), t.identity.as_ref().map(|(c, k)| (c.clone(), k.clone())), t.domain.clone())
        })
    };
    a.name == b.name
        && a.environment == b.environment
        && a.kind == b.kind
        && a.address == b.address
        && a.username == b.username
        && a.password == b.password
        && a.token == b.token
        && tls(a) == tls(b)
}

impl Fleet {
    /// Starts one task per node, and one per `[[discover]]` name.
    pub fn start(config: &FleetConfig, auth: Arc<auth::Auth>) -> Arc<Fleet> {
        let fleet = Arc::new(Fleet {
            path: config.path.clone(),
            auth,
            current: RwLock::new(Current {
                members: Vec::new(),
                nodes: Arc::new(Vec::new()),
                configured: config.nodes.clone(),
                timing: config.timing,
            }),
            discovered: Mutex::new(BTreeMap::new()),
            discoverers: Mutex::new(Vec::new()),
            feed: stream::Feed::default(),
        });
        fleet.reconcile(false);
        fleet.discover(&config.discover);
        fleet
    }

    /// The users, sessions and activity log.
    pub fn auth(&self) -> &Arc<auth::Auth> {
        &self.auth
    }

    /// The change feed of the live streams.
    pub fn feed(&self) -> &stream::Feed {
        &self.feed
    }

    /// The nodes, in configuration order (a snapshot: a reload does not change it).
    pub fn nodes(&self) -> Arc<Vec<Arc<Node>>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).nodes.clone()
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes().iter().find(|n| n.name() == name).cloned()
    }

    pub fn timing(&self) -> Timing {
        self.current.read().unwrap_or_else(|e| e.into_inner()).timing
    }

    /// Re-reads the configuration file and applies it: new nodes start, removed ones stop,
    /// changed ones restart, unchanged ones keep their task and connection. A configuration
    /// that does not load changes nothing.
    pub async fn reload(self: &Arc<Self>) -> Result<(), config::ConfigError> {
        let path = self.path.clone();
        let config = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| config::ConfigError(vec![format!("reading the configuration: {e}")]))??;
        let restart_all = {
            let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
            let restart_all = cur.timing != config.timing;
            cur.configured = config.nodes.clone();
            cur.timing = config.timing;
            restart_all
        };
        {
            // What a prefix no longer configured found goes with it.
            let mut found = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
            found.retain(|prefix, _| config.discover.iter().any(|d| &d.name == prefix));
        }
        self.reconcile(restart_all);
        self.discover(&config.discover);
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Makes the running node tasks match the configured and discovered nodes: new ones start,
    /// gone ones stop, changed ones (or all, with `restart_all`) restart, the rest keep their
    /// task and connection. A discovered node named like a configured one is left out.
    pub fn reconcile(&self, restart_all: bool) {
        let found: Vec<NodeConfig> = {
            let found = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
            found.values().flatten().cloned().collect()
        };
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut wanted: Vec<NodeConfig> = cur.configured.clone();
        for n in found {
            if wanted.iter().any(|w| w.name == n.name) {
                tracing::warn!(node = %n.name, "a discovered node has the name of another node; it is left out");
            } else {
                wanted.push(n);
            }
        }
        let timing = cur.timing;
        let mut old: Vec<Member> = std::mem::take(&mut cur.members);
        let mut members = Vec::with_capacity(wanted.len());
        let (mut kept, mut started) = (0usize, 0usize);
        for n in &wanted {
            match old.iter().position(|m| !restart_all && same_node(&m.node.config, n)) {
                Some(i) => {
                    members.push(old.swap_remove(i));
                    kept += 1;
                }
                None => {
                    members.push(spawn(n, timing, &self.feed));
                    started += 1;
                }
            }
        }
        for m in &old {
            m.task.abort();
        }
        if started > 0 || !old.is_empty() {
            tracing::info!(kept, started, stopped = old.len(), "nodes updated");
        }
        cur.nodes = Arc::new(members.iter().map(|m| m.node.clone()).collect());
        cur.members = members;
    }

    /// Replaces the discovery tasks with one per entry of `entries`.
    fn discover(self: &Arc<Self>, entries: &[DiscoverConfig]) {
        let mut tasks = self.discoverers.lock().unwrap_or_else(|e| e.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
        let deadline = self.timing().call_timeout;
        for d in entries {
            let fleet = Arc::downgrade(self);
            tasks.push(tokio::spawn(discovery(fleet, d.clone(), deadline)).abort_handle());
        }
    }
}

/// Resolves `d` now and every `d.interval`, and reconciles the fleet when the answer changes.
async fn discovery(fleet: Weak<Fleet>, d: DiscoverConfig, deadline: std::time::Duration) {
    loop {
        if let Some(nodes) = discover::resolve(&d, deadline).await {
            let Some(fleet) = fleet.upgrade() else { return };
            let changed = {
                let mut found = fleet.discovered.lock().unwrap_or_else(|e| e.into_inner());
                let names = |v: &[NodeConfig]| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
                let before = found.get(&d.name).map(|v| names(v));
                if before.as_deref() != Some(&names(&nodes)[..]) {
                    tracing::info!(discover = %d.name, dns = %d.dns, nodes = nodes.len(), "discovered nodes changed");
                    found.insert(d.name.clone(), nodes);
                    true
                } else {
                    false
                }
            };
            if changed {
                fleet.reconcile(false);
            }
        }
        tokio::time::sleep(d.interval).await;
    }
}

fn spawn(n: &NodeConfig, timing: Timing, feed: &stream::Feed) -> Member {
    let (node, task) = Node::spawn(n.clone(), timing);
    feed.watch(&node);
    Member { node, task: task.abort_handle() }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for m in &self.current.read().unwrap_or_else(|e| e.into_inner()).members {
            m.task.abort();
        }
        for t in self.discoverers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            t.abort();
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes; SIGHUP re-reads the configuration
/// (the nodes and timings; the database, the activity file and the first admin are read at
/// start only). Fails when the user database cannot be opened.
pub async fn run(
    config: FleetConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Before any node is started: once one is seen connected, SIGHUP is handled.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let auth = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || auth::Auth::open(&config))
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?
    };
    let fleet = Fleet::start(&config, auth);
    let reloader = {
        let fleet = Arc::downgrade(&fleet);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let Some(fleet) = fleet.upgrade() else { break };
                if let Err(e) = fleet.reload().await {
                    tracing::error!(
                        "SIGHUP: the configuration was not reloaded; the fleet runs as it was:\n{e}"
                    );
                }
            }
        })
    };
    let app = api::router(fleet.clone());
    // The live streams never end on their own: the shutdown ends them, so that the graceful
    // shutdown, which waits for every response, can finish.
    let closer = fleet.clone();
    let shutdown = async move {
        shutdown.await;
        closer.feed().close();
    };
    // The peer's address: the login rate limit and the activity log use it.
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await;
    reloader.abort();
    drop(fleet);
    served
}
