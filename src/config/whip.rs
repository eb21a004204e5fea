//! `[whip]`: WebRTC ingest (WHIP, RFC 9725).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhipConfig {
    /// Take WHIP publishers at `POST /{app}/{stream}/whip` on the HTTP
    /// listener.
    pub enabled: bool,
    /// The UDP socket publishers' media arrives on. It is not the viewers'
    /// (`webrtc.udp_listen`): a publisher's packets never queue behind
    /// thousands of viewers', and the playback engines can restart without
    /// cutting a publisher. Its ICE candidates use `webrtc.candidate_ips`.
    pub udp_listen: SocketAddr,
    /// Publishers beyond this many are refused (503).
    pub max_publishers: usize,
    /// WHIP sessions one client address may hold at once (counted from
    /// the offer, connected or not); more are refused (429). Behind a
    /// reverse proxy every publisher shares its address, unless the proxy
    /// is in `http.trusted_proxies` (then the address it forwards counts).
    pub max_publishers_per_ip: usize,
    /// A publisher that sends no ICE (STUN) for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub ice_timeout: Duration,
    /// When a publisher's video is served as it comes (an app that does
    /// not transcode, or simulcast layers), it is asked for a keyframe
    /// (PLI) once its group has run 10% past this (and again every this
    /// long until one comes): browsers send one only every 100 s or when
    /// asked, and LL-HLS segments start at keyframes.
    /// 0 never asks.
    #[serde(with = "humantime_serde")]
    pub keyframe_interval: Duration,
}

impl Default for WhipConfig {
    fn default() -> Self {
        WhipConfig {
            enabled: true,
            udp_listen: ([0, 0, 0, 0], 10100).into(),
            max_publishers: 100,
            max_publishers_per_ip: 8,
            ice_timeout: Duration::from_secs(30),
            keyframe_interval: Duration::from_secs(2),
        }
    }
}

impl WhipConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_publishers == 0 {
            return invalid("whip.max_publishers", "must be at least 1".into());
        }
        if self.max_publishers_per_ip == 0 {
            return invalid("whip.max_publishers_per_ip", "must be at least 1".into());
        }
        if self.ice_timeout < Duration::from_secs(5) {
            return invalid(
                "whip.ice_timeout",
                "must be at least 5s (browsers send consent checks every 5s)".into(),
            );
        }
        if !self.keyframe_interval.is_zero()
            && !(Duration::from_millis(500)..=Duration::from_secs(10))
                .contains(&self.keyframe_interval)
        {
            return invalid(
                "whip.keyframe_interval",
                format!(
                    "must be 0 (never ask) or between 500ms and 10s, got {:?}",
                    self.keyframe_interval
                ),
            );
        }
        Ok(())
    }
}
