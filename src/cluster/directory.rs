//! An origin's rows in the shared database: each stream published here and
//! live is claimed, renewed every heartbeat, and released when it ends or
//! its publisher leaves (a publisher that comes back here, or to another
//! origin, claims it again).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::bus::{BroadcastStatus, Registry, StreamPath};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// This node's identity in the directory.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    /// Where other nodes reach its HTTP listener.
    pub url: String,
    /// Where viewers reach it (empty: not said).
    pub public_url: String,
}

/// Runs until `shutdown`, then releases what it claimed.
pub async fn announce(
    registry: Registry,
    store: Arc<Store>,
    node: Node,
    heartbeat: Duration,
    mut shutdown: Shutdown,
) {
    // Rows a previous run of this node left: none of those streams is live.
    match store.release_node(&node.name).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "released the streams a previous run listed"),
        Err(e) => tracing::warn!(error = %e, "cannot clear this node's old cluster rows"),
    }
    // Heartbeats are read on the database's clock; a node's own clock far
    // from it is worth knowing about (its logs and recordings use it).
    if let Ok(db) = store.clock_ms().await {
        let skew = crate::store::now_ms() - db;
        if skew.abs() > 1000 {
            tracing::warn!(skew_ms = skew, "this node's clock is off the database's");
        }
    }
    let mut announcements = registry.announcements();
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut claimed: HashSet<StreamPath> = HashSet::new();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {}
            // A new stream is listed at once, not at the next heartbeat.
            _ = announcements.recv() => {}
        }
        let live: HashSet<StreamPath> = registry
            .list()
            .into_iter()
            .filter(|b| !b.relayed() && matches!(b.status(), BroadcastStatus::Live { .. }))
            .map(|b| b.path().clone())
            .collect();
        let mut errors = Vec::new();
        // One statement renews every row this node holds and says which
        // those are: a row for a stream no longer live here is released
        // (one left by a run that could not clear its rows, too), and a
        // live stream without a row (new, or taken over and let go by
        // another origin) is claimed.
        let held: HashSet<StreamPath> = match store.renew_node(&node.name).await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(app, stream)| StreamPath::new(&app, &stream).ok())
                .collect(),
            Err(e) => {
                // Not known: release what ended, claim every live stream.
                errors.push(e.to_string());
                claimed.clone()
            }
        };
        claimed = held.intersection(&live).cloned().collect();
        for path in held.difference(&live) {
            if let Err(e) = store
                .release_stream(path.app(), path.stream(), &node.name)
                .await
            {
                errors.push(e.to_string());
            }
        }
        let fresh: Vec<StreamPath> = if errors.is_empty() {
            live.difference(&held).cloned().collect()
        } else {
            live.iter().cloned().collect()
        };
        for path in fresh {
            if let Err(e) = store
                .claim_stream(
                    path.app(),
                    path.stream(),
                    &node.name,
                    &node.url,
                    &node.public_url,
                )
                .await
            {
                errors.push(e.to_string());
            } else {
                claimed.insert(path);
            }
        }
        // Logged when it starts failing and when it recovers, not per beat.
        match (errors.first(), failing) {
            (Some(e), false) => {
                failing = true;
                tracing::warn!(error = %e, "cannot update this origin's streams in the cluster directory; edges may not find them");
            }
            (None, true) => {
                failing = false;
                tracing::info!("the cluster directory is updated again");
            }
            _ => {}
        }
        metrics::gauge!("streamd_cluster_streams_listed").set(claimed.len() as f64);
    }
    for path in claimed {
        let _ = store
            .release_stream(path.app(), path.stream(), &node.name)
            .await;
    }
}
