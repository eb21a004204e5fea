//! Short-lived TURN credentials (the TURN REST API scheme that coturn's
//! `use-auth-secret` implements): the username is `expiry:streamd`, the
//! password base64(HMAC-SHA1(secret, username)), so the TURN server checks
//! them with the shared secret alone, and they stop working at `expiry`.
//!
//! They are handed out where clients look for ICE servers: OME signalling's
//! offer (`iceServers`, and OME's legacy `ice_servers`, which OvenPlayer
//! reads) and WHIP/WHEP `Link` headers (RFC 9725 §4.6).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Value, json};

use crate::config::TurnConfig;

/// One ICE server as a client is told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceServer {
    pub url: String,
    /// For `turn:`/`turns:` URLs.
    pub credentials: Option<(String, String)>,
}

/// Mints the credentials of the configured servers.
#[derive(Clone, Debug, Default)]
pub struct IceServers {
    config: TurnConfig,
}

impl IceServers {
    pub fn new(config: TurnConfig) -> IceServers {
        IceServers { config }
    }

    pub fn is_empty(&self) -> bool {
        self.config.urls.is_empty()
    }

    /// The servers, with credentials valid from `now` for the configured
    /// time.
    pub fn at(&self, now: SystemTime) -> Vec<IceServer> {
        let expiry = (now + self.config.ttl)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let credentials = credentials(&self.config.secret, expiry);
        self.config
            .urls
            .iter()
            .map(|url| IceServer {
                url: url.clone(),
                credentials: url.starts_with("turn").then(|| credentials.clone()),
            })
            .collect()
    }

    /// OME's offer fields: `iceServers` (WebRTC's shape) and the legacy
    /// `ice_servers` (with `user_name`), one entry per URL.
    pub fn ome_json(servers: &[IceServer]) -> (Value, Value) {
        let entry = |s: &IceServer, user: &str| match &s.credentials {
            Some((u, c)) => json!({"urls": [s.url], user: u, "credential": c}),
            None => json!({"urls": [s.url]}),
        };
        (
            Value::Array(servers.iter().map(|s| entry(s, "username")).collect()),
            Value::Array(servers.iter().map(|s| entry(s, "user_name")).collect()),
        )
    }

    /// `Link` header values (RFC 9725 §4.6), one per URL.
    pub fn link_headers(servers: &[IceServer]) -> Vec<String> {
        servers
            .iter()
            .map(|s| match &s.credentials {
                Some((u, c)) => format!(
                    "<{}>; rel=\"ice-server\"; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\"",
                    s.url
                ),
                None => format!("<{}>; rel=\"ice-server\"", s.url),
            })
            .collect()
    }
}

/// The TURN REST API's username and password for `expiry` (Unix seconds).
pub fn credentials(secret: &str, expiry: u64) -> (String, String) {
    use aws_lc_rs::hmac;
    let username = format!("{expiry}:streamd");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_api() {
        // The same computation as coturn's docs give with
        // `echo -n "$user" | openssl dgst -binary -sha1 -hmac "$secret" | base64`,
        // checked here against openssl's output for these values.
        let (user, pass) = credentials("north-wind-shared-secret-0123456789", 1_700_000_000);
        assert_eq!(user, "1700000000:streamd");
        assert_eq!(pass, "JQch8aTXaZzX6WtQyTcvPVUtSJE=");
    }

    #[test]
    fn stun_urls_get_no_credentials_and_link_headers_quote_them() {
        let servers = IceServers::new(TurnConfig {
            urls: vec![
                "stun:stun.example.com:3478".into(),
                "turns:turn.example.com:443?transport=tcp".into(),
            ],
            secret: "s".repeat(32),
            ttl: Duration::from_secs(3600),
        });
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let list = servers.at(now);
        assert_eq!(list[0].credentials, None);
        let (user, _) = list[1].credentials.clone().unwrap();
        assert_eq!(user, "1003600:streamd", "valid for the ttl");
        let links = IceServers::link_headers(&list);
        assert_eq!(links[0], "<stun:stun.example.com:3478>; rel=\"ice-server\"");
        assert!(links[1].starts_with("<turns:turn.example.com:443?transport=tcp>; rel=\"ice-server\"; username=\"1003600:streamd\"; credential=\""));
        let (modern, legacy) = IceServers::ome_json(&list);
        assert_eq!(modern[1]["username"], "1003600:streamd");
        assert_eq!(legacy[1]["user_name"], "1003600:streamd");
        assert_eq!(modern[0], json!({"urls": ["stun:stun.example.com:3478"]}));
    }
}
