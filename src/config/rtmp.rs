//! `[rtmp]`: the RTMP ingest listener.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Where publishers connect. Port 0 picks a free port (logged at start).
    pub listen: SocketAddr,
    /// Connections beyond this are closed at accept.
    pub max_connections: usize,
    /// Connections from one client address beyond this are closed at accept.
    pub max_connections_per_ip: usize,
    /// A client must finish the RTMP handshake within this time.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A client must ask to publish within this time of connecting (RTMP
    /// serves publishers only).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            listen: ([0, 0, 0, 0], 1935).into(),
            max_connections: 1000,
            max_connections_per_ip: 32,
            handshake_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

impl RtmpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return invalid("rtmp.max_connections", "must be at least 1".into());
        }
        if self.max_connections_per_ip == 0 {
            return invalid("rtmp.max_connections_per_ip", "must be at least 1".into());
        }
        if self.handshake_timeout.is_zero() {
            return invalid("rtmp.handshake_timeout", "must be more than 0".into());
        }
        if self.publish_timeout < self.handshake_timeout {
            return invalid(
                "rtmp.publish_timeout",
                "must be at least rtmp.handshake_timeout".into(),
            );
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return invalid("rtmp.idle_timeout", "must be at least 1s".into());
        }
        Ok(())
    }
}
