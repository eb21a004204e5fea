//! Who is watching: viewers per stream, for the API, webhooks and
//! admission. WebRTC sessions are counted by signalling (after the answer);
//! LL-HLS players are seen polling media playlists. A WebRTC viewer between
//! its offer and its answer is not yet watching, but the stream is wanted:
//! an edge keeps pulling it ([`ViewerCounts::wanted`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    /// WebRTC viewers offered a session and not yet answered.
    joining: Mutex<HashMap<String, usize>>,
    hls: Mutex<HlsSeen>,
}

/// A WebRTC viewer joining a stream, from its offer until this is dropped
/// (at the answer, or the session's end): see [`ViewerCounts::joining`].
pub struct Joining {
    counts: Arc<ViewerCounts>,
    path: String,
}

impl Drop for Joining {
    fn drop(&mut self) {
        step(&self.counts.joining, &self.path, false);
    }
}

/// One more (`up`) or one less in `map`'s count for `key`; a count that
/// reaches 0 is removed.
fn step(map: &Mutex<HashMap<String, usize>>, key: &str, up: bool) {
    let mut m = map.lock().expect("counts lock");
    if up {
        *m.entry(key.to_owned()).or_default() += 1;
    } else if let Some(n) = m.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(key);
        }
    }
}

/// `map`'s count for `key`.
fn count(map: &Mutex<HashMap<String, usize>>, key: &str) -> usize {
    map.lock()
        .expect("counts lock")
        .get(key)
        .copied()
        .unwrap_or(0)
}

#[derive(Default)]
struct HlsSeen {
    /// (stream, client) -> last playlist request.
    seen: HashMap<(String, u64), Instant>,
    pruned: Option<Instant>,
}

impl ViewerCounts {
    pub fn add(&self, path: &StreamPath) {
        step(&self.webrtc, &path.to_string(), true);
    }

    pub fn remove(&self, path: &StreamPath) {
        step(&self.webrtc, &path.to_string(), false);
    }

    /// A WebRTC viewer of `path` is joining (offered, not yet answered)
    /// until the returned guard is dropped.
    pub fn joining(self: &Arc<Self>, path: &StreamPath) -> Joining {
        let path = path.to_string();
        step(&self.joining, &path, true);
        Joining {
            counts: self.clone(),
            path,
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
        count(&self.webrtc, path)
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

    /// Every viewer of `path` and every WebRTC viewer joining it: while
    /// this is above 0 the stream is wanted here.
    pub fn wanted(&self, path: &str) -> usize {
        self.get(path) + count(&self.joining, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joining_viewer_makes_the_stream_wanted_not_watched() {
        let counts = Arc::new(ViewerCounts::default());
        let path = StreamPath::new("live", "a").unwrap();
        let joining = counts.joining(&path);
        let other = counts.joining(&path);
        assert_eq!((counts.get("live/a"), counts.wanted("live/a")), (0, 2));
        assert_eq!(counts.wanted("live/b"), 0);
        // Answered: watching, no longer joining.
        counts.add(&path);
        drop(joining);
        assert_eq!((counts.get("live/a"), counts.wanted("live/a")), (1, 2));
        // The other gives up; the viewer leaves.
        drop(other);
        counts.remove(&path);
        assert_eq!((counts.get("live/a"), counts.wanted("live/a")), (0, 0));
        assert!(counts.joining.lock().unwrap().is_empty());
    }
}
