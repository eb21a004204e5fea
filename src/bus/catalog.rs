//! A broadcast's catalog: which of its tracks the outputs should serve, and
//! what each is. Tracks say only what they are (a name and a kind); the
//! catalog says what they are for.
//!
//! One stage writes it: the transcoder, which lists its ladder and Opus
//! track, or the source passed through when the app does not transcode or
//! the ladder cannot be built. LL-HLS and WebRTC read it and wait for it
//! to be complete instead of guessing from the tracks that exist so far.

/// A video track players may choose.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VideoEntry {
    /// As players see it (`720p`; `source` for the publisher's video when
    /// the stream is not transcoded).
    pub name: String,
    /// The bus track carrying it.
    pub track: String,
    /// Bits per second (the ladder's configured maximum); 0 if unknown.
    pub bitrate: u32,
    /// 0 when unknown (the source passed through).
    pub width: u32,
    pub height: u32,
    /// The publisher's video as it came, not an encode.
    pub passthrough: bool,
    /// No B-frames: WebRTC can carry it.
    pub webrtc_safe: bool,
}

/// What a broadcast offers. `Default` is the empty catalog: nothing to
/// serve yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Catalog {
    /// Video renditions, largest bitrate first.
    pub video: Vec<VideoEntry>,
    /// The audio for HLS and recording (the publisher's AAC).
    pub audio: Option<String>,
    /// The audio for WebRTC (Opus), when there is one.
    pub webrtc_audio: Option<String>,
    /// Nothing more is expected for this publisher: a consumer waiting for
    /// tracks can stop waiting.
    pub complete: bool,
    /// Why the outputs carry the source rather than the ladder (the
    /// transcoder could not run); `None` when all is as configured.
    pub fallback: Option<String>,
}

impl Catalog {
    /// Whether `track` is one of the tracks to serve.
    pub fn lists(&self, track: &str) -> bool {
        self.video.iter().any(|v| v.track == track)
            || self.audio.as_deref() == Some(track)
            || self.webrtc_audio.as_deref() == Some(track)
    }

    /// The video entry of `track`.
    pub fn video_entry(&self, track: &str) -> Option<&VideoEntry> {
        self.video.iter().find(|v| v.track == track)
    }

    /// Sorts the video renditions largest first: by bitrate, then by
    /// picture size (stable for equal both).
    pub fn sort(&mut self) {
        self.video.sort_by_key(|v| {
            std::cmp::Reverse((v.bitrate, u64::from(v.width) * u64::from(v.height)))
        });
    }
}

#[cfg(test)]
impl VideoEntry {
    /// A rung named as its track, of unknown size; one that is not
    /// WebRTC-safe is the source passed through (for tests).
    pub(crate) fn rung(name: &str, bitrate: u32, webrtc_safe: bool) -> VideoEntry {
        VideoEntry {
            name: name.into(),
            track: name.into(),
            bitrate,
            width: 0,
            height: 0,
            passthrough: !webrtc_safe,
            webrtc_safe,
        }
    }
}
