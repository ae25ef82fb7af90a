//! A node in a cluster: its membership, its tables and its registrations shared through
//! etcd ([`limes_cluster::etcd`]). Every change this node makes to its tables or its
//! bindings (as its journals record them) is queued to the store; every change the store
//! reports is applied here on a thread of its own ("cluster-apply": applying may wait on
//! an address group's actor, never on a tokio worker) and journaled, so the node restarts
//! with it even if etcd is away then. A binding says which node its REGISTER came
//! through. `cluster.members` and `cluster.status` show the rest.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use limes_actors::proxy::edge::ClusterPeer;
use limes_actors::proxy::Proxy;
use limes_actors::settings::Listen;
use limes_cluster::etcd::{EtcdSettings, EtcdStore};
use limes_cluster::index::Change;
use limes_cluster::keys;
use limes_cluster::ClusterStore;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::exposition::encode_each;
use crate::rpc::{Node, RpcError};

/// Batches of changes waiting to be applied, at most.
const APPLY_QUEUE: usize = 10_000;

/// Joins the cluster: membership, the tables read from the store (waited for a few
/// seconds: a node should not answer with tables it is about to learn), and both
/// directions of table changes.
pub async fn join(
    mut settings: EtcdSettings,
    proxy: &Arc<Proxy>,
    sip: &[String],
    admin: &str,
) -> anyhow::Result<Arc<EtcdStore>> {
    settings.member = json!({ "name": settings.node, "sip": sip, "admin": admin });
    let name = settings.node.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Change>>(APPLY_QUEUE);
    let applier = proxy.clone();
    std::thread::Builder::new()
        .name("cluster-apply".into())
        .spawn(move || {
            for batch in rx {
                for change in batch {
                    apply(&applier, &change);
                }
            }
        })
        .context("starting the cluster-apply thread")?;
    let on_tables = Box::new(move |changes: &[Change]| {
        if tx.try_send(changes.to_vec()).is_err() {
            warn!(
                changes = changes.len(),
                "cluster changes not applied: the apply queue is full"
            );
        }
    });
    let store = EtcdStore::start(settings, &tokio::runtime::Handle::current(), on_tables)
        .map_err(anyhow::Error::msg)?;
    let edge = proxy.edge();
    edge.location.set_node_name(&name);
    edge.tables.share(store.clone());
    edge.location.share(store.clone());
    tokio::spawn(follow_peers(store.clone(), proxy.clone(), name.clone()));
    if store.loaded(Duration::from_secs(5)).await {
        info!(members = store.members().len(), "joined the cluster");
    } else {
        warn!("etcd did not answer: running on the tables this node has; they follow once it does");
    }
    Ok(store)
}

/// Keeps the edge's list of the other nodes (name and SIP sockets) as the membership
/// says, on each change: calls for bindings whose flow another node holds go to it.
async fn follow_peers(store: Arc<EtcdStore>, proxy: Arc<Proxy>, me: String) {
    loop {
        store.members_changed().await;
        let peers: Vec<ClusterPeer> = store
            .members()
            .into_iter()
            .filter(|m| m.name != me)
            .map(|m| ClusterPeer {
                sip: m.info["sip"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|l| l.as_str()?.parse::<Listen>().ok())
                            .collect()
                    })
                    .unwrap_or_default(),
                name: m.name,
            })
            .collect();
        let edge = proxy.edge();
        if **edge.peers.load() != peers {
            info!(peers = %peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "), "cluster peers");
            edge.peers.store(Arc::new(peers));
        }
    }
}

fn apply(proxy: &Proxy, change: &Change) {
    let (key, value) = match change {
        Change::Put { key, value } => (key, Some(value.as_str())),
        Change::Delete { key } => (key, None),
    };
    let applied = if let Some(k) = keys::table_key(key) {
        proxy.edge().apply_shared(k, value)
    } else if let Some(k) = keys::location_key(key) {
        proxy.edge().location.apply_shared(k, value)
    } else {
        return;
    };
    if let Err(e) = applied {
        warn!(%key, error = %e, "a change from the cluster was not applied");
    }
}

/// The store's figures, read when Prometheus scrapes.
#[derive(Debug)]
struct ClusterCollector(Arc<dyn ClusterStore>);

impl prometheus_client::collector::Collector for ClusterCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let s = self.0.status();
        let gauges = [
            (
                "limes_cluster_members",
                "Nodes whose membership lease is alive",
                self.0.members().len() as i64,
            ),
            (
                "limes_cluster_write_queue",
                "Table changes waiting to be written to etcd",
                s.queued as i64,
            ),
            (
                "limes_cluster_degraded",
                "1 while etcd does not answer (the node goes on with what it has)",
                i64::from(s.degraded),
            ),
            (
                "limes_cluster_confirming",
                "REGISTERs whose 200 waits for the store to have their bindings",
                s.confirming as i64,
            ),
            (
                "limes_cluster_binding_leases",
                "Leases this node holds in etcd for bindings (one per step of expiries)",
                s.binding_leases as i64,
            ),
            (
                "limes_cluster_revision",
                "The newest etcd revision this node has seen",
                s.revision,
            ),
            (
                "limes_cluster_watch_age_seconds",
                "Seconds since the watch last heard from etcd (an event or a progress notice)",
                s.watch_age_s as i64,
            ),
        ];
        encode_each(
            &mut encoder,
            gauges.map(|(n, h, v)| (n, h, ConstGauge::new(v))),
        )?;
        let counters = [
            (
                "limes_cluster_writes",
                "Table changes written to etcd",
                s.written,
            ),
            (
                "limes_cluster_writes_refused",
                "Table changes refused on a full write queue",
                s.refused,
            ),
            (
                "limes_cluster_confirmed_locally",
                "REGISTERs answered from the local journal alone: the store did not answer in time",
                s.confirmed_locally,
            ),
            (
                "limes_cluster_failures",
                "etcd operations that failed (each then tried on the next member)",
                s.failures,
            ),
        ];
        encode_each(
            &mut encoder,
            counters.map(|(n, h, v)| (n, h, ConstCounter::new(v))),
        )?;
        self.encode_operations(&mut encoder, &s)
    }
}

/// Every kind of store operation, each with its series from the start.
const OPERATION_KINDS: [&str; 7] = [
    "txn",
    "range",
    "watch",
    "put",
    "delete",
    "lease_grant",
    "lease_keep_alive",
];

impl ClusterCollector {
    /// Store operations by kind: latency histograms and failure counters.
    fn encode_operations(
        &self,
        encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
        s: &limes_cluster::store::Status,
    ) -> Result<(), std::fmt::Error> {
        use limes_cluster::store::{Operations, LATENCY_BUCKETS};
        use prometheus_client::encoding::NoLabelSet;
        use prometheus_client::metrics::MetricType;
        let none = Operations::default();
        let of = |kind: &str| s.operations.get(kind).unwrap_or(&none);
        let mut family = encoder.encode_descriptor(
            "limes_cluster_operation_seconds",
            "etcd operations by kind, and how long each took (a failure included)",
            None,
            MetricType::Histogram,
        )?;
        for kind in OPERATION_KINDS {
            let o = of(kind);
            let within: u64 = o.buckets.iter().sum();
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .zip(o.buckets)
                .chain([(f64::MAX, o.count.saturating_sub(within))])
                .collect();
            family
                .encode_family(&vec![("kind", kind)])?
                .encode_histogram::<NoLabelSet>(o.seconds, o.count, &buckets, None)?;
        }
        let mut failures = encoder.encode_descriptor(
            "limes_cluster_operation_failures",
            "etcd operations that failed or timed out, by kind",
            None,
            MetricType::Counter,
        )?;
        for kind in OPERATION_KINDS {
            use prometheus_client::encoding::EncodeMetric;
            prometheus_client::metrics::counter::ConstCounter::new(of(kind).failed)
                .encode(failures.encode_family(&vec![("kind", kind)])?)?;
        }
        Ok(())
    }
}

/// Registers the cluster metrics (a node alone has them too: one member, never degraded).
pub fn register_metrics(
    registry: &mut prometheus_client::registry::Registry,
    store: Arc<dyn ClusterStore>,
) {
    registry.register_collector(Box::new(ClusterCollector(store)));
}

/// `cluster.members`: every node whose membership lease is alive, with its addresses
/// and how long it has been a member.
pub fn members(node: &Node, _: &crate::rpc_params::Args) -> Result<Value, RpcError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let members: Vec<Value> = node
        .cluster
        .members()
        .into_iter()
        .map(|m| {
            let since = m.info["since"].as_u64().unwrap_or(now);
            json!({
                "name": m.name,
                "sip": m.info["sip"],
                "admin": m.info["admin"],
                "member_for_s": now.saturating_sub(since),
                "lease_ttl_s": m.info["lease_ttl_s"],
                "self": m.name == node.name,
            })
        })
        .collect();
    Ok(json!({ "members": members }))
}

/// `cluster.status`: the backend, the revision seen, the write queue, the last error.
pub fn status(node: &Node, _: &crate::rpc_params::Args) -> Result<Value, RpcError> {
    let s = &node.cluster;
    Ok(json!({
        "backend": s.backend(),
        "node": node.name,
        "members": s.members().len(),
        "status": s.status(),
    }))
}
