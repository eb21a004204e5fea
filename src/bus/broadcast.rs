//! A broadcast: the tracks of one live stream, and whether its publisher is
//! there. Producers and consumers are handed out by the [`super::Registry`].

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::registry::RegistryInner;
use super::track::{Retention, StartAt, TrackConsumer, TrackProducer, TrackShared};
use super::{Catalog, StreamPath, TrackInfo};

/// What the publisher said about its stream (RTMP `onMetaData`). Hints only:
/// packagers trust the media itself first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BroadcastMeta {
    pub frame_rate: Option<f64>,
    pub video_bitrate_kbps: Option<u32>,
    pub audio_bitrate_kbps: Option<u32>,
    pub encoder: Option<String>,
    /// `Some(false)` when the publisher declared no audio (or no video).
    pub has_audio: Option<bool>,
    pub has_video: Option<bool>,
    /// The publisher's audio is Opus (WHIP), not AAC: WebRTC can carry it
    /// as it is, LL-HLS cannot.
    pub opus_audio: bool,
    /// How it is published, as OME's API names it (`sourceType`: `Rtmp`,
    /// `WebRTC`, `SRT`).
    pub source: Option<&'static str>,
    /// The publisher sends its own renditions (WHIP simulcast): they are
    /// served as they came, never transcoded.
    pub simulcast: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BroadcastStatus {
    /// A publisher is attached; `session` counts reconnects from 0.
    Live { session: u32 },
    /// The publisher of `session` left; a new one may take over until the
    /// grace period ends.
    Interrupted { session: u32 },
    /// Over for good. Tracks are closed.
    Ended,
}

pub(crate) struct BroadcastState {
    pub(crate) tracks: Vec<Arc<TrackShared>>,
    pub(crate) status: BroadcastStatus,
    pub(crate) meta: BroadcastMeta,
    /// `None` until the stage that shapes the outputs publishes one.
    pub(crate) catalog: Option<Catalog>,
}

pub(crate) struct BroadcastShared {
    pub(crate) path: StreamPath,
    /// Unique per broadcast in this process: a broadcast that ends and a new
    /// one on the same path have different ids.
    pub(crate) id: u64,
    /// When it was first published.
    pub(crate) created: std::time::SystemTime,
    /// Pulled from another node, not published here (see
    /// [`super::Registry::relay`]).
    pub(crate) relayed: bool,
    retention: Retention,
    state: Mutex<BroadcastState>,
    changed: watch::Sender<u64>,
}

impl BroadcastShared {
    pub(crate) fn new(
        path: StreamPath,
        id: u64,
        retention: Retention,
        relayed: bool,
    ) -> Arc<BroadcastShared> {
        Arc::new(BroadcastShared {
            path,
            id,
            created: std::time::SystemTime::now(),
            relayed,
            retention,
            state: Mutex::new(BroadcastState {
                tracks: Vec::new(),
                status: BroadcastStatus::Live { session: 0 },
                meta: BroadcastMeta::default(),
                catalog: None,
            }),
            changed: watch::Sender::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BroadcastState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Ends the broadcast: tracks close, consumers drain and stop.
    pub(crate) fn end(&self) {
        let tracks = {
            let mut st = self.lock();
            st.status = BroadcastStatus::Ended;
            st.tracks.clone()
        };
        for t in tracks {
            t.close();
        }
        self.notify();
    }

    pub(crate) fn consumer(self: &Arc<Self>) -> BroadcastConsumer {
        BroadcastConsumer {
            changed: self.changed.subscribe(),
            shared: self.clone(),
        }
    }
}

/// Held by the publisher. Dropping it interrupts the broadcast; the registry
/// ends it if nobody takes over within the grace period.
pub struct BroadcastProducer {
    shared: Arc<BroadcastShared>,
    session: u32,
    registry: Weak<RegistryInner>,
}

impl BroadcastProducer {
    pub(crate) fn new(
        shared: Arc<BroadcastShared>,
        session: u32,
        registry: Weak<RegistryInner>,
    ) -> Self {
        BroadcastProducer {
            shared,
            session,
            registry,
        }
    }

    pub fn path(&self) -> &StreamPath {
        &self.shared.path
    }

    /// Which publisher session this is (0 for the first, +1 per reconnect).
    pub fn session(&self) -> u32 {
        self.session
    }

    /// A producer for the named track: the existing track when a reconnecting
    /// publisher resumes it, or a new one.
    pub fn track(&mut self, info: TrackInfo) -> TrackProducer {
        let mut st = self.shared.lock();
        if let Some(t) = st.tracks.iter().find(|t| t.info == info) {
            return TrackProducer::new(t.clone(), self.session, self.session > 0);
        }
        let t = TrackShared::new(info, self.shared.retention.clone());
        st.tracks.push(t.clone());
        drop(st);
        self.shared.notify();
        TrackProducer::new(t, self.session, false)
    }

    pub fn set_meta(&mut self, meta: BroadcastMeta) {
        self.shared.lock().meta = meta;
        self.shared.notify();
    }

    /// A consumer of this same broadcast.
    pub fn consumer(&self) -> BroadcastConsumer {
        self.shared.consumer()
    }

    /// Its status (Ended: it was ended under its publisher), without a
    /// consumer's registration.
    pub fn status(&self) -> BroadcastStatus {
        self.shared.lock().status
    }

    /// Whether the catalog serves the publisher's video track `track` as
    /// it comes (not transcoded): its keyframes are then the outputs'.
    pub fn passed_through(&self, track: &str) -> bool {
        self.shared
            .lock()
            .catalog
            .as_ref()
            .and_then(|c| c.video_entry(track))
            .is_some_and(|v| v.passthrough)
    }

    /// Resolves when the broadcast was ended under its publisher (the
    /// stream was deleted, or the server stops): the publisher should go.
    pub async fn ended(&self) {
        let mut changed = self.shared.changed.subscribe();
        loop {
            if self.shared.lock().status == BroadcastStatus::Ended {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Drop for BroadcastProducer {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            if st.status
                == (BroadcastStatus::Live {
                    session: self.session,
                })
            {
                st.status = BroadcastStatus::Interrupted {
                    session: self.session,
                };
            }
        }
        self.shared.notify();
        match self.registry.upgrade() {
            Some(registry) => registry.interrupted(&self.shared, self.session),
            None => self.shared.end(),
        }
    }
}

/// Watches one broadcast and subscribes to its tracks.
#[derive(Clone)]
pub struct BroadcastConsumer {
    shared: Arc<BroadcastShared>,
    changed: watch::Receiver<u64>,
}

/// What [`BroadcastConsumer::update`] saw.
#[derive(Clone, Debug, PartialEq)]
pub struct BroadcastUpdate {
    pub status: BroadcastStatus,
    pub tracks: Vec<TrackInfo>,
    pub meta: BroadcastMeta,
    pub catalog: Option<Catalog>,
}

impl BroadcastConsumer {
    pub fn path(&self) -> &StreamPath {
        &self.shared.path
    }

    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Each track's info with the frames and payload bytes written to it
    /// so far (the per-stream metrics).
    pub fn track_totals(&self) -> Vec<(TrackInfo, u64, u64)> {
        let tracks = self.shared.lock().tracks.clone();
        tracks
            .iter()
            .map(|t| {
                let (frames, bytes) = t.written();
                (t.info.clone(), frames, bytes)
            })
            .collect()
    }

    pub fn snapshot(&self) -> BroadcastUpdate {
        let st = self.shared.lock();
        BroadcastUpdate {
            status: st.status,
            tracks: st.tracks.iter().map(|t| t.info.clone()).collect(),
            meta: st.meta.clone(),
            catalog: st.catalog.clone(),
        }
    }

    /// When the broadcast was first published (reconnects keep it).
    pub fn created(&self) -> std::time::SystemTime {
        self.shared.created
    }

    /// Pulled from another node (an edge's copy of an origin's stream):
    /// its tracks are already the outputs, so it is not transcoded,
    /// recorded or announced to the cluster again.
    pub fn relayed(&self) -> bool {
        self.shared.relayed
    }

    /// The catalog, once one is published.
    pub fn catalog(&self) -> Option<Catalog> {
        self.shared.lock().catalog.clone()
    }

    /// Publishes the broadcast's catalog (its video sorted largest first),
    /// for the stage that shapes the outputs. Consumers waiting in
    /// [`update`](Self::update) wake only when it changed. Ignored once
    /// the broadcast has ended.
    pub fn publish_catalog(&self, catalog: Catalog) {
        self.update_catalog(|c| *c = catalog);
    }

    /// Changes the published catalog (the empty one if none was) in place,
    /// under the broadcast's lock, so that two writers (the transcoder's
    /// video and audio sides) cannot undo each other's change.
    pub fn update_catalog(&self, f: impl FnOnce(&mut Catalog)) {
        {
            let mut st = self.shared.lock();
            if st.status == BroadcastStatus::Ended {
                return;
            }
            let mut catalog = st.catalog.clone().unwrap_or_default();
            f(&mut catalog);
            catalog.sort();
            if st.catalog.as_ref() == Some(&catalog) {
                return;
            }
            st.catalog = Some(catalog);
        }
        self.shared.notify();
    }

    pub fn status(&self) -> BroadcastStatus {
        self.shared.lock().status
    }

    /// Subscribes to a track from its newest keyframe (a live viewer).
    /// `max_lag` makes the consumer jump to the newest group when it falls
    /// further behind than that (real-time consumers); `None` only skips
    /// what retention evicted.
    pub fn subscribe(&self, name: &str, max_lag: Option<Duration>) -> Option<TrackConsumer> {
        self.subscribe_at(name, StartAt::Newest, max_lag)
    }

    /// Asks the producer of track `name` for a keyframe (see
    /// [`TrackConsumer::request_keyframe`]); false if there is no such track.
    pub fn request_keyframe(&self, name: &str) -> bool {
        let st = self.shared.lock();
        match st.tracks.iter().find(|t| t.info.name == name) {
            Some(t) => {
                t.request_keyframe();
                true
            }
            None => false,
        }
    }

    /// Subscribes from the newest or the oldest keyframe held.
    pub fn subscribe_at(
        &self,
        name: &str,
        start: StartAt,
        max_lag: Option<Duration>,
    ) -> Option<TrackConsumer> {
        let st = self.shared.lock();
        st.tracks
            .iter()
            .find(|t| t.info.name == name)
            .map(|t| t.subscribe(start, max_lag))
    }

    /// A producer for a track derived from this broadcast (a transcoder's
    /// output), written on behalf of publisher session `session`: the
    /// existing track of that name (whose first group in a later session
    /// then carries a discontinuity), or a new one. `None` once the broadcast
    /// has ended.
    pub fn derived_track(&self, mut info: TrackInfo, session: u32) -> Option<TrackProducer> {
        info.derived = true;
        let mut st = self.shared.lock();
        if st.status == BroadcastStatus::Ended {
            return None;
        }
        if let Some(t) = st.tracks.iter().find(|t| t.info.name == info.name) {
            return Some(TrackProducer::new(t.clone(), session, session > 0));
        }
        let t = TrackShared::new(info, self.shared.retention.clone());
        st.tracks.push(t.clone());
        drop(st);
        self.shared.notify();
        Some(TrackProducer::new(t, session, false))
    }

    /// Waits until something about the broadcast changes (a track appears,
    /// the publisher leaves or returns, metadata), then returns the new state.
    pub async fn update(&mut self) -> BroadcastUpdate {
        // The sender lives as long as the shared state we hold, so this only
        // returns on a real change.
        let _ = self.changed.changed().await;
        self.snapshot()
    }
}
