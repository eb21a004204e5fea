//! `[transcode]`: the ABR ladder and the Opus track.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscodeConfig {
    /// Transcode every stream into the ladder (apps may opt out below).
    pub enabled: bool,
    /// Encoded rungs get an IDR at every multiple of this (by PTS from the
    /// stream's start), whatever the source's keyframe interval.
    #[serde(with = "humantime_serde")]
    pub keyframe_interval: Duration,
    /// Publish an Opus 48 kHz stereo track for WebRTC.
    pub opus: bool,
    pub opus_bitrate_kbps: u32,
    /// The rungs, largest first.
    pub ladder: Vec<RungConfig>,
    /// Per-app overrides: `[transcode.apps.raw] enabled = false`.
    pub apps: BTreeMap<String, AppTranscodeConfig>,
    /// Streams transcoded at once; a publisher beyond it is refused
    /// (NetStream.Publish.Failed). 0: one per two CPU cores, at least one
    /// (the default 1080p ladder takes about two cores in real time).
    pub max_streams: usize,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Names the rung's track and playlist: `[a-z0-9_-]`.
    pub name: String,
    /// The box the picture is fitted into, keeping its aspect ratio.
    pub width: u32,
    pub height: u32,
    /// Target and VBV maximum (kbit/s).
    pub bitrate_kbps: u32,
    /// Frames above this rate are dropped (0: keep the source's rate).
    #[serde(default = "default_max_fps")]
    pub max_fps: f64,
    /// An x264 preset.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// baseline, main or high.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Pass the source through instead of encoding when it already fits
    /// (H.264, no larger than the box, no higher bitrate). Top rung only.
    #[serde(default)]
    pub bypass: bool,
    /// x264 threads for this rung (0: one per core for the largest encoded
    /// rung, one for the others).
    #[serde(default)]
    pub threads: usize,
}

fn default_max_fps() -> f64 {
    60.0
}
fn default_preset() -> String {
    "veryfast".to_owned()
}
fn default_profile() -> String {
    "high".to_owned()
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppTranscodeConfig {
    pub enabled: bool,
}

impl RungConfig {
    pub fn new(name: &str, width: u32, height: u32, bitrate_kbps: u32) -> RungConfig {
        RungConfig {
            name: name.to_owned(),
            width,
            height,
            bitrate_kbps,
            max_fps: default_max_fps(),
            preset: default_preset(),
            profile: default_profile(),
            bypass: false,
            threads: 0,
        }
    }
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        TranscodeConfig {
            enabled: true,
            keyframe_interval: Duration::from_secs(2),
            opus: true,
            opus_bitrate_kbps: 128,
            ladder: vec![
                RungConfig::new("1080p", 1920, 1080, 4500),
                RungConfig::new("720p", 1280, 720, 2500),
                RungConfig::new("480p", 854, 480, 1200),
                RungConfig::new("360p", 640, 360, 600),
            ],
            apps: BTreeMap::new(),
            max_streams: 0,
        }
    }
}

impl TranscodeConfig {
    /// `max_streams`, with 0 resolved from the CPU cores.
    pub fn stream_limit(&self) -> usize {
        match self.max_streams {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }

    /// Whether streams of `app` are transcoded (else passed through).
    pub fn enabled_for(&self, app: &str) -> bool {
        self.apps.get(app).map_or(self.enabled, |a| a.enabled) && !self.ladder.is_empty()
    }
}

/// x264's presets, fastest first.
pub const X264_PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
];

impl TranscodeConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let t = self;
        if !(Duration::from_millis(500)..=Duration::from_secs(10)).contains(&t.keyframe_interval) {
            return invalid(
                "transcode.keyframe_interval",
                format!(
                    "must be between 500ms and 10s, got {:?}",
                    t.keyframe_interval
                ),
            );
        }
        if !(6..=510).contains(&t.opus_bitrate_kbps) {
            return invalid(
                "transcode.opus_bitrate_kbps",
                format!("must be between 6 and 510, got {}", t.opus_bitrate_kbps),
            );
        }
        for (i, r) in t.ladder.iter().enumerate() {
            let name_ok = !r.name.is_empty()
                && r.name.len() <= 32
                && r.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                })
                && !["video", "audio", "opus"].contains(&r.name.as_str());
            if !name_ok {
                return invalid(
                    "transcode.ladder.name",
                    format!(
                        "{:?} must be 1-32 characters of a-z, 0-9, _ and -, and not video, audio or opus",
                        r.name
                    ),
                );
            }
            if t.ladder[..i].iter().any(|o| o.name == r.name) {
                return invalid(
                    "transcode.ladder.name",
                    format!("{:?} is used twice", r.name),
                );
            }
            let dim_ok = |d: u32| (16..=7680).contains(&d) && d.is_multiple_of(2);
            if !dim_ok(r.width) || !dim_ok(r.height) {
                return invalid(
                    "transcode.ladder.width",
                    format!(
                        "rung {:?}: {}x{} must be even and between 16 and 7680",
                        r.name, r.width, r.height
                    ),
                );
            }
            if let Some(prev) = i.checked_sub(1).map(|p| &t.ladder[p])
                && (r.width > prev.width || r.height > prev.height)
            {
                return invalid(
                    "transcode.ladder",
                    format!(
                        "rungs go largest first: {:?} is larger than {:?}",
                        r.name, prev.name
                    ),
                );
            }
            if !(50..=100_000).contains(&r.bitrate_kbps) {
                return invalid(
                    "transcode.ladder.bitrate_kbps",
                    format!("rung {:?}: must be between 50 and 100000", r.name),
                );
            }
            if !(r.max_fps == 0.0 || (1.0..=240.0).contains(&r.max_fps)) {
                return invalid(
                    "transcode.ladder.max_fps",
                    format!("rung {:?}: must be 0 or between 1 and 240", r.name),
                );
            }
            if !X264_PRESETS.contains(&r.preset.as_str()) {
                return invalid(
                    "transcode.ladder.preset",
                    format!("rung {:?}: {:?} is not an x264 preset", r.name, r.preset),
                );
            }
            if !["baseline", "main", "high"].contains(&r.profile.as_str()) {
                return invalid(
                    "transcode.ladder.profile",
                    format!("rung {:?}: must be baseline, main or high", r.name),
                );
            }
            if r.bypass && i > 0 {
                return invalid(
                    "transcode.ladder.bypass",
                    format!("rung {:?}: only the top rung may bypass", r.name),
                );
            }
            if r.threads > 16 {
                return invalid(
                    "transcode.ladder.threads",
                    format!("rung {:?}: at most 16", r.name),
                );
            }
        }
        Ok(())
    }
}
