//! Who is watching: viewers per stream, for the API, webhooks and
//! admission. WebRTC sessions are counted by signalling (after the answer);
//! LL-HLS players are seen polling media playlists.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bus::StreamPath;

/// How long an LL-HLS player counts as watching after its last playlist
/// request (players reload playlists every part, blocking, so a live one is
/// seen several times a second).
const HLS_SEEN: Duration = Duration::from_secs(10);
/// LL-HLS players tracked at most.
const MAX_HLS: usize = 200_000;

/// Viewers per stream: WebRTC sessions (counted by signalling after the
/// answer) and LL-HLS players (a client address and user agent that
/// fetched a media playlist in the last few seconds: HLS has no session, so
/// players behind one address with one browser count once).
#[derive(Default)]
pub struct ViewerCounts {
    webrtc: Mutex<HashMap<String, usize>>,
    hls: Mutex<HlsSeen>,
}

#[derive(Default)]
struct HlsSeen {
    /// (stream, client) -> last playlist request.
    seen: HashMap<(String, u64), Instant>,
    pruned: Option<Instant>,
}

impl ViewerCounts {
    pub fn add(&self, path: &StreamPath) {
        *self
            .webrtc
            .lock()
            .expect("counts lock")
            .entry(path.to_string())
            .or_default() += 1;
    }

    pub fn remove(&self, path: &StreamPath) {
        let mut m = self.webrtc.lock().expect("counts lock");
        let key = path.to_string();
        if let Some(n) = m.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&key);
            }
        }
    }

    /// An LL-HLS player (`client`: a hash of its address and user agent)
    /// fetched a media playlist of `path`.
    pub fn hls_seen(&self, path: &StreamPath, client: u64) {
        let now = Instant::now();
        let mut h = self.hls.lock().expect("counts lock");
        if h.pruned
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1))
            || h.seen.len() >= MAX_HLS
        {
            h.seen.retain(|_, t| now.duration_since(*t) < HLS_SEEN);
            h.pruned = Some(now);
            if h.seen.len() >= MAX_HLS {
                return; // full of live players: stop tracking new ones
            }
        }
        h.seen.insert((path.to_string(), client), now);
    }

    /// WebRTC viewers of `path` (`app/stream`).
    pub fn webrtc(&self, path: &str) -> usize {
        self.webrtc
            .lock()
            .expect("counts lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// LL-HLS players of `path` seen lately.
    pub fn hls(&self, path: &str) -> usize {
        let now = Instant::now();
        self.hls
            .lock()
            .expect("counts lock")
            .seen
            .iter()
            .filter(|((p, _), t)| p == path && now.duration_since(**t) < HLS_SEEN)
            .count()
    }

    /// Every viewer of `path`.
    pub fn get(&self, path: &str) -> usize {
        self.webrtc(path) + self.hls(path)
    }
}
