//! The standard `grpc.health.v1.Health` service: "" is the daemon; every process is a service
//! of its own under its full name ("web", "site:api") and under "group:name" ("web:web"),
//! SERVING while it is RUNNING and NOT_SERVING otherwise. Kubernetes' gRPC probes and Envoy's
//! health checks can so watch one supervised program.
//!
//! A task follows the event history and keeps the statuses current; it never asks a process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::events::{EventKind, Since};
use crate::lifecycle::Kind;
use crate::supervisor::Supervisor;

/// The service names a process answers to.
fn names(group: &str, name: &str) -> Vec<String> {
    let full = minder::config::full_name(group, name);
    let qualified = format!("{group}:{name}");
    if full == qualified {
        vec![full]
    } else {
        vec![full, qualified]
    }
}

fn status(kind: Kind) -> ServingStatus {
    if kind == Kind::Running {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// The reporter, and what it last said for each name: watchers hear only real changes (the
/// reporter itself would repeat NOT_SERVING for STOPPED -> STARTING).
struct Reporter {
    inner: HealthReporter,
    last: BTreeMap<String, ServingStatus>,
}

impl Reporter {
    async fn set(&mut self, name: String, s: ServingStatus) {
        if self.last.get(&name) != Some(&s) {
            self.inner.set_service_status(&name, s).await;
            self.last.insert(name, s);
        }
    }

    async fn clear(&mut self, name: &str) {
        self.inner.clear_service_status(name).await;
        self.last.remove(name);
    }
}

/// Keeps `reporter` in step with the supervisor until the event history ends with it.
pub async fn follow(sup: Arc<Supervisor>, reporter: HealthReporter) {
    let bus = sup.events();
    let mut published = bus.subscribe();
    let mut reporter = Reporter { inner: reporter, last: BTreeMap::new() };
    // Which processes each group had, to clear them when the group goes.
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut next = resync(&sup, &mut reporter, &mut members).await;
    loop {
        published.borrow_and_update();
        match bus.since(next) {
            Since::Events(events) if events.is_empty() => {
                if published.changed().await.is_err() {
                    return;
                }
            }
            Since::Events(events) => {
                for e in events {
                    next = e.seq;
                    match &e.kind {
                        EventKind::Process(c) => {
                            if !members.get(&c.group).is_some_and(|m| m.contains(&c.name)) {
                                members.entry(c.group.clone()).or_default().insert(c.name.clone());
                            }
                            for n in names(&c.group, &c.name) {
                                reporter.set(n, status(c.to)).await;
                            }
                        }
                        EventKind::GroupRemoved(g) => {
                            for name in members.remove(g).unwrap_or_default() {
                                for n in names(g, &name) {
                                    reporter.clear(&n).await;
                                }
                            }
                        }
                        EventKind::GroupAdded(_) => {
                            // Its processes report as they change; until then, their state now.
                            next = resync(&sup, &mut reporter, &mut members).await.max(next);
                        }
                        EventKind::Daemon { to, .. } => {
                            let s = if *to == crate::events::DaemonPhase::Running {
                                ServingStatus::Serving
                            } else {
                                ServingStatus::NotServing
                            };
                            reporter.set(String::new(), s).await;
                        }
                    }
                }
            }
            Since::Lagged { .. } => next = resync(&sup, &mut reporter, &mut members).await,
        }
    }
}

/// Sets every process's status from a snapshot; returns the snapshot's sequence number.
async fn resync(
    sup: &Supervisor,
    reporter: &mut Reporter,
    members: &mut BTreeMap<String, BTreeSet<String>>,
) -> u64 {
    let (seq, states) = sup.events().snapshot_with(|| {
        sup.all()
            .iter()
            .map(|h| (h.config.group.clone(), h.config.name.clone(), h.snapshot().state))
            .collect::<Vec<_>>()
    });
    for (group, name, kind) in states {
        members.entry(group.clone()).or_default().insert(name.clone());
        for n in names(&group, &name) {
            reporter.set(n, status(kind)).await;
        }
    }
    seq
}
