//! `[bus]`: broadcasts and what they keep for late or slow consumers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// How long a stream whose publisher dropped waits for it to come back
    /// before it ends. Viewers see a pause, then the stream continues.
    #[serde(with = "humantime_serde")]
    pub reconnect_grace: Duration,
    /// Media kept per track for consumers that fall behind.
    #[serde(with = "humantime_serde")]
    pub retention_window: Duration,
    /// Hard cap on buffered bytes per track.
    pub retention_max_bytes: usize,
    /// Broadcasts live at once; a publish beyond is refused (RTMP
    /// `NetStream.Publish.Failed`, "the server is full").
    pub max_broadcasts: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            max_broadcasts: 1000,
            reconnect_grace: Duration::from_secs(10),
            retention_window: Duration::from_secs(10),
            retention_max_bytes: 64 << 20,
        }
    }
}

impl BusConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_broadcasts == 0 {
            return invalid("bus.max_broadcasts", "must be at least 1".into());
        }
        if self.retention_window < Duration::from_secs(1) {
            return invalid("bus.retention_window", "must be at least 1s".into());
        }
        if self.retention_max_bytes < 1 << 20 {
            return invalid("bus.retention_max_bytes", "must be at least 1 MiB".into());
        }
        Ok(())
    }
}
