//! Nodes found in DNS: every address of a name becomes a node, re-resolved on an interval.
//!
//! This is how the fleet grows with a Kubernetes cluster: the headless Service in front of the
//! minderd DaemonSet (deploy/kubernetes) answers with one A/AAAA record per ready pod, so a pod
//! that appears becomes a node at the next resolution and one that goes away stops being one.
//!
//! A `[[discover]]` entry names a prefix, the DNS name, the port, and the settings every node it
//! finds shares (kind, environment, credentials, TLS). Each address gives a node named
//! `PREFIX-ADDRESS` with the address's dots and colons as dashes (`k8s-10-1-2-3`), so a node's
//! name is stable for as long as its address is.
//!
//! A resolution that fails (timeout, no server, no such name) changes nothing: a DNS outage must
//! not empty the dashboard. Only an answer replaces the set, so a node leaves when the name no
//! longer lists its address.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use minder::address::Address;

use crate::config::NodeConfig;

/// One `[[discover]]` entry.
#[derive(Debug, Clone)]
pub struct DiscoverConfig {
    /// The prefix of the nodes' names.
    pub name: String,
    /// The DNS name resolved.
    pub dns: String,
    pub port: u16,
    /// How often the name is resolved again.
    pub interval: Duration,
    /// What every node found shares; its `name` and `address` are replaced per address.
    pub template: NodeConfig,
}

/// A node's name for an address: `PREFIX-10-1-2-3`, `PREFIX-fd00--1` — a plain name.
pub fn node_name(prefix: &str, ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    format!("{prefix}-{}", ip.to_string().replace(['.', ':'], "-"))
}

/// The nodes an answer gives: one per distinct address, in address order.
pub fn nodes_for(d: &DiscoverConfig, answer: &[SocketAddr]) -> Vec<NodeConfig> {
    let ips: BTreeSet<IpAddr> = answer.iter().map(SocketAddr::ip).collect();
    ips.into_iter()
        .map(|ip| {
            let mut n = d.template.clone();
            n.name = node_name(&d.name, ip);
            n.address = Address::Tcp(SocketAddr::new(ip, d.port).to_string());
            n.origin = format!("{} (discovered from {}:{})", d.template.origin, d.dns, d.port);
            n
        })
        .collect()
}

/// Resolves `d.dns` once, within `deadline`: Some(the nodes) for an answer, None otherwise
/// (logged).
pub async fn resolve(d: &DiscoverConfig, deadline: Duration) -> Option<Vec<NodeConfig>> {
    match tokio::time::timeout(deadline, tokio::net::lookup_host((d.dns.as_str(), d.port))).await {
        Ok(Ok(addrs)) => Some(nodes_for(d, &addrs.collect::<Vec<_>>())),
        Ok(Err(e)) => {
            tracing::warn!(discover = %d.name, dns = %d.dns, "resolving failed; the nodes stay as they were: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(
                discover = %d.name, dns = %d.dns,
                "resolving took longer than {deadline:?}; the nodes stay as they were"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{is_plain_name, NodeKind};

    fn entry() -> DiscoverConfig {
        DiscoverConfig {
            name: "k8s".into(),
            dns: "minder-nodes.minder.svc".into(),
            port: 9090,
            interval: Duration::from_secs(30),
            template: NodeConfig {
                name: String::new(),
                environment: "prod".into(),
                kind: NodeKind::Minderd,
                address: Address::Tcp("0.0.0.0:0".into()),
                username: None,
                password: None,
                token: None,
                tls: None,
                origin: "fleet.toml:7".into(),
            },
        }
    }

    #[test]
    fn every_distinct_address_is_one_node_with_a_plain_stable_name() {
        let answer: Vec<SocketAddr> = ["10.1.2.3:9090", "10.1.2.4:9090", "10.1.2.3:9090", "[fd00::1]:9090"]
            .iter()
            .map(|s| s.parse().expect("address"))
            .collect();
        let nodes = nodes_for(&entry(), &answer);
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["k8s-10-1-2-3", "k8s-10-1-2-4", "k8s-fd00--1"]);
        assert!(names.iter().all(|n| is_plain_name(n)));
        assert_eq!(nodes[2].address, Address::Tcp("[fd00::1]:9090".into()));
        assert!(nodes.iter().all(|n| n.environment == "prod" && n.kind == NodeKind::Minderd));
        assert_eq!(nodes[0].origin, "fleet.toml:7 (discovered from minder-nodes.minder.svc:9090)");
        // An IPv4 address seen through an IPv6 socket is the same node.
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:9090".parse().expect("address");
        assert_eq!(nodes_for(&entry(), &[mapped])[0].name, "k8s-10-1-2-3");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_changes_nothing() {
        let mut d = entry();
        d.dns = "no-such-name.invalid".into();
        assert!(resolve(&d, Duration::from_secs(5)).await.is_none());
        d.dns = "localhost".into();
        let nodes = resolve(&d, Duration::from_secs(5)).await.expect("localhost resolves");
        assert!(nodes.iter().any(|n| n.name == "k8s-127-0-0-1" || n.name == "k8s--1"), "{nodes:?}");
    }
}
