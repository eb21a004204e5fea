//! `[turn]`: the TURN (and STUN) servers players and publishers are told
//! about, and the secret their short-lived credentials are minted with.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, MIN_SECRET_LEN, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// `turn:`, `turns:` and `stun:` URLs (RFC 7065), e.g.
    /// `"turns:turn.example.com:443?transport=tcp"` for networks that allow
    /// only TLS. Empty: no ICE servers are handed out.
    pub urls: Vec<String>,
    /// The TURN server's shared secret (coturn's `static-auth-secret` with
    /// `use-auth-secret`): credentials are minted with the TURN REST API
    /// scheme, HMAC-SHA1 over `expiry:streamd`
    /// (or `STREAMD_TURN__SECRET`).
    pub secret: String,
    /// How long a minted credential is valid.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            urls: Vec::new(),
            secret: String::new(),
            ttl: Duration::from_secs(6 * 3600),
        }
    }
}

impl TurnConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for url in &self.urls {
            let scheme = url.split(':').next().unwrap_or("");
            if !matches!(scheme, "turn" | "turns" | "stun" | "stuns")
                || url.len() <= scheme.len() + 1
                || url
                    .chars()
                    .any(|c| c.is_whitespace() || c == '>' || c == '"')
            {
                return invalid(
                    "turn.urls",
                    format!("{url:?} is not a turn:, turns:, stun: or stuns: URL"),
                );
            }
        }
        let relays = self.urls.iter().any(|u| u.starts_with("turn"));
        if relays && self.secret.len() < MIN_SECRET_LEN {
            return invalid(
                "turn.secret",
                format!(
                    "TURN URLs need the TURN server's shared secret, at least {MIN_SECRET_LEN} bytes"
                ),
            );
        }
        if self.ttl < Duration::from_secs(60) {
            return invalid("turn.ttl", "must be at least 60s".into());
        }
        Ok(())
    }
}
