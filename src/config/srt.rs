//! `[srt]`: the SRT ingest listener (MPEG-TS inside).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrtConfig {
    /// Whether to listen for SRT publishers at all.
    pub enabled: bool,
    /// Where publishers connect (UDP), as OME's 9999. Port 0 picks a free
    /// port (logged at start).
    pub listen: SocketAddr,
    /// The receiver's latency (SRT's TSBPD delay): time to recover lost
    /// packets. Callers may ask for more; the larger wins.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Callers must encrypt with this passphrase (10 to 79 characters);
    /// unset, encryption is off and encrypted callers are refused.
    pub passphrase: Option<String>,
    /// The AES key length with a passphrase: 16, 24 or 32 bytes.
    pub key_length: u32,
    /// Connections beyond this are refused at the handshake.
    pub max_connections: usize,
    /// Connections from one client address beyond this are refused.
    pub max_connections_per_ip: usize,
    /// A caller that sends nothing for this long is closed (SRT's own
    /// keepalives do not count).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for SrtConfig {
    fn default() -> Self {
        SrtConfig {
            enabled: true,
            listen: ([0, 0, 0, 0], 9999).into(),
            latency: Duration::from_millis(120),
            passphrase: None,
            key_length: 16,
            max_connections: 200,
            max_connections_per_ip: 32,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

impl SrtConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.passphrase
            && !(10..=79).contains(&p.len())
        {
            return invalid(
                "srt.passphrase",
                format!("must be 10 to 79 characters (SRT's rule), not {}", p.len()),
            );
        }
        if ![16, 24, 32].contains(&self.key_length) {
            return invalid("srt.key_length", "must be 16, 24 or 32".into());
        }
        if self.latency > Duration::from_secs(10) {
            return invalid("srt.latency", "must be at most 10s".into());
        }
        if self.max_connections == 0 {
            return invalid("srt.max_connections", "must be at least 1".into());
        }
        if self.max_connections_per_ip == 0 {
            return invalid("srt.max_connections_per_ip", "must be at least 1".into());
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return invalid("srt.idle_timeout", "must be at least 1s".into());
        }
        Ok(())
    }
}
