//! The LL-HLS output of every live stream, in memory: written by one
//! packager task per stream, read by HTTP handlers.
//!
//! Every change bumps a version on a watch channel; blocked requests wait on
//! it. Rendered playlists are cached per version, so a hundred requests
//! woken by the same new part render the playlist once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use super::playlist::{self, MediaContext, Rendition, RenditionReport, UriQuery, ceil_ms, names};
use crate::bus::{StreamPath, TrackKind};

#[derive(Debug, Default)]
pub struct OutputState {
    pub renditions: Vec<Rendition>,
    /// The broadcast is over: playlists end with EXT-X-ENDLIST.
    pub ended: bool,
    /// EXT-X-TARGETDURATION of every playlist, fixed by the packager once
    /// the first segment is complete.
    pub target_duration: Option<u64>,
    version: u64,
    /// When the state last changed (to measure how fast blocked requests
    /// are answered).
    updated_at: Option<std::time::Instant>,
}

impl OutputState {
    /// Ready to serve: the target duration is fixed, the leading rendition
    /// (the first video one, else the first) has a complete segment, and so
    /// has every other video rendition and every audio one that started —
    /// unless the leader is three segments ahead, when a stalled rendition
    /// is left out of the master rather than holding the stream back.
    pub fn ready(&self) -> bool {
        let Some(leading) = self.leading() else {
            return false;
        };
        let complete = |r: &Rendition| r.segments.iter().filter(|s| s.is_complete()).count();
        // Video renditions are known from the start (the ladder's rungs all
        // at once); audio only once its first frame arrived.
        self.target_duration.is_some()
            && complete(leading) >= 1
            && (complete(leading) >= 3
                || self.renditions.iter().all(|r| {
                    r.has_complete_segment()
                        || (r.kind == TrackKind::Audio && r.segments.is_empty())
                }))
    }

    fn leading(&self) -> Option<&Rendition> {
        self.renditions
            .iter()
            .find(|r| r.kind == TrackKind::Video)
            .or(self.renditions.first())
    }

    /// PART-HOLD-BACK: three times the longest part target of the stream,
    /// as the playlists print it (rounded up to the millisecond), so that
    /// it is never under three printed PART-TARGETs.
    pub fn part_hold_back(&self) -> f64 {
        3.0 * self
            .renditions
            .iter()
            .filter_map(|r| r.part_target)
            .map(ceil_ms)
            .fold(0.0, f64::max)
    }

    pub fn rendition_index(&self, name: &str) -> Option<usize> {
        self.renditions.iter().position(|r| r.name == name)
    }

    pub fn target_duration(&self) -> u64 {
        self.target_duration.unwrap_or(1)
    }

    pub fn updated_at(&self) -> Option<std::time::Instant> {
        self.updated_at
    }
}

pub struct StreamOutput {
    pub path: StreamPath,
    /// Random per broadcast; part of every media URI.
    pub instance: String,
    state: Mutex<OutputState>,
    changed: watch::Sender<u64>,
    cache: Mutex<HashMap<(usize, bool), (u64, Bytes)>>,
}

impl StreamOutput {
    pub fn new(path: StreamPath, instance: String) -> StreamOutput {
        StreamOutput {
            path,
            instance,
            state: Mutex::new(OutputState::default()),
            changed: watch::Sender::new(0),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, OutputState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes every waiting request.
    pub fn update(&self, f: impl FnOnce(&mut OutputState)) {
        let version = {
            let mut st = self.lock();
            f(&mut st);
            st.version += 1;
            st.updated_at = Some(std::time::Instant::now());
            st.version
        };
        self.changed.send_replace(version);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The media playlist of rendition `index`, rendered once per version
    /// (every request of a version shares it), or for this request alone
    /// when its URIs carry a query.
    pub fn media_playlist(
        &self,
        st: &OutputState,
        index: usize,
        skip: bool,
        query: UriQuery<'_>,
    ) -> Option<Bytes> {
        let r = st.renditions.get(index)?;
        let key = (index, skip);
        let shared = query.is_none();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if shared
            && let Some((v, bytes)) = cache.get(&key)
            && *v == st.version
        {
            return Some(bytes.clone());
        }
        let reports: Vec<RenditionReport> = st
            .renditions
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .filter_map(|(_, sib)| {
                let (last_msn, last_part) = sib.last_part()?;
                Some(RenditionReport {
                    uri: names::media_playlist(&sib.name, &self.instance),
                    last_msn,
                    last_part,
                })
            })
            .collect();
        let text = playlist::render_media(
            r,
            &MediaContext {
                instance: &self.instance,
                query,
                target_duration: st.target_duration(),
                part_hold_back: st.part_hold_back(),
                reports: &reports,
                ended: st.ended,
                skip,
            },
        );
        let bytes = Bytes::from(text);
        if shared {
            cache.insert(key, (st.version, bytes.clone()));
        }
        Some(bytes)
    }

    pub fn master_playlist(&self, st: &OutputState, query: UriQuery<'_>) -> Bytes {
        let renditions: Vec<&Rendition> = st.renditions.iter().collect();
        Bytes::from(playlist::render_master(&renditions, &self.instance, query))
    }
}

/// Every stream's output, by path.
#[derive(Default)]
pub struct Outputs {
    map: RwLock<HashMap<StreamPath, Arc<StreamOutput>>>,
    changed: watch::Sender<u64>,
}

impl Outputs {
    pub fn get(&self, path: &StreamPath) -> Option<Arc<StreamOutput>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
    }

    /// Adds (or replaces a finished) stream output.
    pub fn insert(&self, output: Arc<StreamOutput>) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(output.path.clone(), output);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Removes `output` unless a newer one replaced it.
    pub fn remove(&self, output: &Arc<StreamOutput>) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&output.path)
            .is_some_and(|o| Arc::ptr_eq(o, output))
        {
            map.remove(&output.path);
        }
    }

    /// Fires whenever an output is added.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
