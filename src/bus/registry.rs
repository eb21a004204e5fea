//! The registry of live broadcasts: at most one publisher per path, a grace
//! period for reconnects, and announcements for services that start work per
//! broadcast (packagers, recorders).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::StreamPath;
use super::broadcast::{BroadcastConsumer, BroadcastProducer, BroadcastShared, BroadcastStatus};
use super::track::Retention;

/// Announcements buffered per listener before it must resync with
/// [`Registry::list`] (it sees `RecvError::Lagged`).
const ANNOUNCE_CAPACITY: usize = 256;

/// How long a viewer's request waits for a stream that is not here to be
/// brought here (see [`Registry::find`]).
pub const DEMAND_WAIT: Duration = Duration::from_secs(5);

/// A viewer wants `path`, which is not here. The handler answers once the
/// broadcast is in the registry, or where else it is, or that it cannot be
/// had.
#[derive(Debug)]
pub struct Demand {
    pub path: StreamPath,
    /// The viewer's address, when known: one client may not keep the
    /// handler busy with names nobody publishes.
    pub client: Option<std::net::IpAddr>,
    /// The viewer can be sent elsewhere (an HTTP redirect: LL-HLS, WHEP;
    /// not OME signalling's WebSocket).
    pub may_redirect: bool,
    pub reply: oneshot::Sender<Supply>,
}

/// A demand handler's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Supply {
    /// The broadcast is in the registry now.
    Here,
    /// Viewers get it from another node: its public base URL.
    Elsewhere(String),
    /// It cannot be had.
    Absent,
}

/// Where a viewer's stream is.
pub enum Located {
    Here(BroadcastConsumer),
    /// At another node, whose public base URL this is.
    Elsewhere(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("stream {0} already has a publisher")]
    AlreadyPublishing(StreamPath),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the server is full: {0} broadcasts live (bus.max_broadcasts)")]
    Full(usize),
}

pub(crate) struct RegistryInner {
    streams: Mutex<HashMap<StreamPath, Arc<BroadcastShared>>>,
    grace: Duration,
    retention: Retention,
    announce: broadcast::Sender<BroadcastConsumer>,
    next_id: AtomicU64,
    shutting_down: std::sync::atomic::AtomicBool,
    /// New broadcasts beyond this many are refused (a returning publisher
    /// of an interrupted one is not new).
    max_broadcasts: std::sync::atomic::AtomicUsize,
    demand: Mutex<Option<mpsc::Sender<Demand>>>,
}

impl RegistryInner {
    fn lock(&self) -> MutexGuard<'_, HashMap<StreamPath, Arc<BroadcastShared>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The publisher of `session` left: end the broadcast unless another
    /// publisher takes over within the grace period.
    pub(crate) fn interrupted(self: &Arc<Self>, shared: &Arc<BroadcastShared>, session: u32) {
        if self.grace.is_zero() || self.shutting_down.load(Ordering::Acquire) {
            self.end_if_interrupted(shared, session);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let registry = Arc::downgrade(self);
                let shared = shared.clone();
                let grace = self.grace;
                handle.spawn(async move {
                    tokio::time::sleep(grace).await;
                    if let Some(registry) = registry.upgrade() {
                        registry.end_if_interrupted(&shared, session);
                    } else {
                        shared.end();
                    }
                });
            }
            Err(_) => self.end_if_interrupted(shared, session),
        }
    }

    fn end_if_interrupted(&self, shared: &Arc<BroadcastShared>, session: u32) {
        let mut streams = self.lock();
        if shared.lock().status != (BroadcastStatus::Interrupted { session }) {
            return; // a new publisher took over
        }
        if streams
            .get(&shared.path)
            .is_some_and(|s| Arc::ptr_eq(s, shared))
        {
            streams.remove(&shared.path);
        }
        drop(streams);
        tracing::info!(stream = %shared.path, "broadcast ended");
        shared.end();
    }
}

/// Shared handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

impl Registry {
    /// `grace`: how long an interrupted broadcast waits for its publisher to
    /// come back before it ends.
    pub fn new(grace: Duration, retention: Retention) -> Registry {
        Registry {
            inner: Arc::new(RegistryInner {
                streams: Mutex::new(HashMap::new()),
                grace,
                retention,
                announce: broadcast::Sender::new(ANNOUNCE_CAPACITY),
                next_id: AtomicU64::new(1),
                shutting_down: std::sync::atomic::AtomicBool::new(false),
                max_broadcasts: std::sync::atomic::AtomicUsize::new(usize::MAX),
                demand: Mutex::new(None),
            }),
        }
    }

    /// Refuses new broadcasts beyond `max` (the default is no limit).
    pub fn limit_broadcasts(&self, max: usize) {
        self.inner.max_broadcasts.store(max, Ordering::Relaxed);
    }

    /// Becomes the publisher of `path`: a new broadcast, or the continuation
    /// of an interrupted one. Refused while another publisher is live.
    pub fn publish(&self, path: StreamPath) -> Result<BroadcastProducer, PublishError> {
        self.publish_as(path, false)
    }

    /// As [`publish`](Self::publish), for a copy of a stream published on
    /// another node (a cluster edge pulling it): the broadcast is marked
    /// [`relayed`](BroadcastConsumer::relayed). A relay continues only an
    /// interrupted relay; a publisher here ends a relay and starts anew.
    pub fn relay(&self, path: StreamPath) -> Result<BroadcastProducer, PublishError> {
        self.publish_as(path, true)
    }

    fn publish_as(
        &self,
        path: StreamPath,
        relayed: bool,
    ) -> Result<BroadcastProducer, PublishError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(PublishError::ShuttingDown);
        }
        let mut streams = self.inner.lock();
        // A publisher here replaces a copy pulled from elsewhere (its
        // publisher moved here): the copy ends, its viewers with it.
        if !relayed
            && let Some(shared) = streams.get(&path)
            && shared.relayed
        {
            let shared = shared.clone();
            streams.remove(&path);
            shared.end();
            tracing::info!(stream = %path, "a publisher here replaces the copy pulled from another node");
        }
        if let Some(shared) = streams.get(&path) {
            let mut st = shared.lock();
            match st.status {
                BroadcastStatus::Live { .. } => return Err(PublishError::AlreadyPublishing(path)),
                // A relay never takes over what a publisher here left.
                BroadcastStatus::Interrupted { .. } if shared.relayed != relayed => {
                    return Err(PublishError::AlreadyPublishing(path));
                }
                BroadcastStatus::Interrupted { session } => {
                    let session = session + 1;
                    st.status = BroadcastStatus::Live { session };
                    drop(st);
                    shared.notify();
                    tracing::info!(stream = %path, session, "publisher resumed the broadcast");
                    return Ok(BroadcastProducer::new(
                        shared.clone(),
                        session,
                        Arc::downgrade(&self.inner),
                    ));
                }
                BroadcastStatus::Ended => {} // replaced below
            }
        }
        let max = self.inner.max_broadcasts.load(Ordering::Relaxed);
        let live = streams
            .values()
            .filter(|s| s.lock().status != BroadcastStatus::Ended)
            .count();
        // (A returning publisher resumed above: only new broadcasts count.)
        if live >= max {
            return Err(PublishError::Full(max));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = BroadcastShared::new(path.clone(), id, self.inner.retention.clone(), relayed);
        streams.insert(path, shared.clone());
        drop(streams);
        // No listener is fine: nobody wants to know yet.
        let _ = self.inner.announce.send(shared.consumer());
        Ok(BroadcastProducer::new(
            shared,
            0,
            Arc::downgrade(&self.inner),
        ))
    }

    /// The broadcast at `path`, live or waiting for its publisher.
    pub fn get(&self, path: &StreamPath) -> Option<BroadcastConsumer> {
        self.inner.lock().get(path).map(|s| s.consumer())
    }

    /// Where a viewer's request for a stream that is not here goes (a
    /// cluster node pulls it from the node that has it). Without one,
    /// [`find`](Self::find) is [`get`](Self::get).
    pub fn set_demand(&self, demand: mpsc::Sender<Demand>) {
        *self.inner.demand.lock().unwrap_or_else(|e| e.into_inner()) = Some(demand);
    }

    /// The broadcast at `path` for a viewer at `client`: the one here, or
    /// one the demand handler brings here (it answers within
    /// [`DEMAND_WAIT`] or the stream counts as absent). `None` when there
    /// is no such stream.
    pub async fn find(
        &self,
        path: &StreamPath,
        client: Option<std::net::IpAddr>,
    ) -> Option<BroadcastConsumer> {
        match self.locate(path, client, false).await? {
            Located::Here(b) => Some(b),
            Located::Elsewhere(_) => None,
        }
    }

    /// As [`find`](Self::find), for a viewer that can follow a redirect:
    /// the demand handler may answer where else the stream is.
    pub async fn locate(
        &self,
        path: &StreamPath,
        client: Option<std::net::IpAddr>,
        may_redirect: bool,
    ) -> Option<Located> {
        if let Some(b) = self.get(path) {
            return Some(Located::Here(b));
        }
        let demand = self
            .inner
            .demand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let (reply, answer) = oneshot::channel();
        // A full queue is a busy handler: the stream counts as absent now.
        demand
            .try_send(Demand {
                path: path.clone(),
                client,
                may_redirect,
                reply,
            })
            .ok()?;
        match tokio::time::timeout(DEMAND_WAIT, answer).await {
            Ok(Ok(Supply::Here)) => self.get(path).map(Located::Here),
            Ok(Ok(Supply::Elsewhere(url))) if may_redirect => Some(Located::Elsewhere(url)),
            _ => None,
        }
    }

    pub fn list(&self) -> Vec<BroadcastConsumer> {
        self.inner.lock().values().map(|s| s.consumer()).collect()
    }

    /// New broadcasts, as they are created. A listener that falls more than
    /// `ANNOUNCE_CAPACITY` behind gets `Lagged` and should resync with `list`.
    pub fn announcements(&self) -> broadcast::Receiver<BroadcastConsumer> {
        self.inner.announce.subscribe()
    }

    /// Ends the broadcast at `path` now (its stream was deleted): its
    /// publisher is told ([`BroadcastProducer::ended`]) and consumers see the
    /// end. False if there was none.
    pub fn end(&self, path: &StreamPath) -> bool {
        let Some(s) = self.inner.lock().remove(path) else {
            return false;
        };
        s.end();
        true
    }

    /// Ends the broadcast at `path` if it is a relay (see
    /// [`relay`](Self::relay)); a broadcast published here is left alone.
    pub fn end_relay(&self, path: &StreamPath) -> bool {
        let mut streams = self.inner.lock();
        let Some(s) = streams.get(path).filter(|s| s.relayed).cloned() else {
            return false;
        };
        streams.remove(path);
        drop(streams);
        s.end();
        true
    }

    /// Refuses new publishers and ends every broadcast: consumers drain what
    /// is buffered and see the end.
    pub fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        let all: Vec<_> = self.inner.lock().drain().map(|(_, s)| s).collect();
        for s in all {
            s.end();
        }
    }
}
