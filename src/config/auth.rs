//! `[auth]` (tokens, who may publish) and `[admission]` (OME's admission webhooks).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Who may publish.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Serialize, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PublishPolicy {
    /// Only streams created through the API, with their key or a publish
    /// token.
    Key,
    /// Any name (as OME without access control); streams created through
    /// the API still need their key.
    Open,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret of every token (API, publish, playback). The
    /// `JWT_SECRET` environment variable overrides it; with neither, one is
    /// generated into `{data_dir}/jwt_secret` at first start.
    pub jwt_secret: String,
    pub publish: PublishPolicy,
    /// Lifetime of playback tokens minted by the API (at most).
    #[serde(with = "humantime_serde")]
    pub playback_token_ttl: Duration,
    /// The application streams created through the API live in
    /// (`rtmp://host:1935/{app}/{id}`).
    pub app: String,
    /// Which tokens the API accepts: `scoped` (default) only tokens with
    /// `scope: "api"` (what `streamd token` mints); `any` also tokens
    /// without a scope, as the seed's backend minted them with
    /// `JWT_SECRET`. Publish and playback tokens are refused either way.
    pub api_tokens: ApiTokens,
    /// When set, every token must carry this `aud` (and tokens streamd
    /// mints do).
    pub audience: String,
    /// When set, every token must carry this `iss` (and tokens streamd
    /// mints do).
    pub issuer: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: String::new(),
            publish: PublishPolicy::Key,
            playback_token_ttl: Duration::from_secs(3600),
            app: "live".into(),
            api_tokens: ApiTokens::Scoped,
            audience: String::new(),
            issuer: String::new(),
        }
    }
}

/// Which tokens the API accepts (see [`AuthConfig::api_tokens`]).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Serialize, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApiTokens {
    Scoped,
    Any,
}

/// OME's AdmissionWebhooks (see OME-COMPAT.md): a backend that decides who
/// may publish and play.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// The backend's URL; empty: off.
    pub url: String,
    /// The HMAC-SHA1 key of `X-OME-Signature`.
    pub secret: String,
    /// An answer later than this denies.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            url: String::new(),
            secret: String::new(),
            timeout: Duration::from_secs(3),
        }
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if crate::bus::StreamPath::new(&self.app, "x").is_err() {
            return invalid(
                "auth.app",
                format!("{:?} is not a valid app name", self.app),
            );
        }
        if self.playback_token_ttl < Duration::from_secs(10) {
            return invalid("auth.playback_token_ttl", "must be at least 10s".into());
        }
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < super::MIN_SECRET_LEN {
            return invalid(
                "auth.jwt_secret",
                format!(
                    "must be at least {} bytes (or empty: one is generated)",
                    super::MIN_SECRET_LEN
                ),
            );
        }
        Ok(())
    }
}

impl AdmissionConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.url.is_empty() && !super::is_http_url(&self.url) {
            return invalid(
                "admission.url",
                format!("{:?} is not an http(s) URL", self.url),
            );
        }
        Ok(())
    }
}
