//! `[ome_api]`: OME's REST API v1 (a subset), for backends written for OME.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OmeApiConfig {
    /// OME's `<AccessToken>`: callers send `Authorization: Basic
    /// base64(token)`. Empty (the default), the API is off. Served under
    /// `/v1` on every `[http] listen` address: add OME's port 8081 there
    /// for backends that call it.
    pub access_token: String,
    /// The one virtual host streamd answers for (OME's default: `default`).
    pub vhost: String,
}

impl Default for OmeApiConfig {
    fn default() -> Self {
        OmeApiConfig {
            access_token: String::new(),
            vhost: "default".into(),
        }
    }
}

impl OmeApiConfig {
    pub fn enabled(&self) -> bool {
        !self.access_token.is_empty()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled() && self.access_token.len() < 16 {
            return invalid(
                "ome_api.access_token",
                "must be at least 16 characters (it is the API's only credential)".into(),
            );
        }
        if self.vhost.is_empty()
            || !self
                .vhost
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return invalid(
                "ome_api.vhost",
                "must be letters, digits, '-', '_' or '.'".into(),
            );
        }
        Ok(())
    }
}
