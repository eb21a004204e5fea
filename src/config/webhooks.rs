//! `[webhooks]`: stream events POSTed to receivers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where stream events are POSTed (http:// or https://); none: off.
    pub urls: Vec<String>,
    /// HMAC-SHA256 key of the `X-Streamd-Signature` header (at least 32
    /// bytes, never the JWT secret); empty: a key derived from the JWT
    /// secret, which `streamd webhook-secret` prints. A receiver holding it
    /// cannot mint tokens.
    pub secret: String,
    /// Tries per delivery (the first and the retries).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time (at most 60 s).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// A receiver that has not answered in this time has failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often changed viewer counts are sent.
    #[serde(with = "humantime_serde")]
    pub viewers_interval: Duration,
    /// At shutdown, queued events (`stream.stopped` for the streams live
    /// then) get this long to be delivered.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Events waiting for delivery, at most; more are dropped and counted
    /// (`streamd_webhooks_dropped_total`), so media never waits.
    pub queue: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            secret: String::new(),
            attempts: 5,
            retry_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
            viewers_interval: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            queue: 1024,
        }
    }
}

impl WebhookConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for url in &self.urls {
            if !super::is_http_url(url) {
                return invalid("webhooks.urls", format!("{url:?} is not an http(s) URL"));
            }
        }
        if self.attempts == 0 {
            return invalid("webhooks.attempts", "must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.queue) {
            return invalid("webhooks.queue", "must be 1 to 1000000".into());
        }
        if self.timeout.is_zero() || self.viewers_interval.is_zero() {
            return invalid(
                "webhooks.timeout",
                "timeout and viewers_interval must be more than 0".into(),
            );
        }
        if !self.secret.is_empty() && self.secret.len() < super::MIN_SECRET_LEN {
            return invalid(
                "webhooks.secret",
                format!(
                    "must be at least {} bytes (or empty: one is derived from the JWT secret)",
                    super::MIN_SECRET_LEN
                ),
            );
        }
        Ok(())
    }
}
