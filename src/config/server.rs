//! `[server]`: the process as a whole (its graceful drain).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// On the first SIGTERM (or Ctrl-C) streamd drains: `/readyz` answers
    /// 503, new publishers and new viewers are refused, and the ones
    /// connected carry on until every stream has ended or this long has
    /// passed; then streams end, recordings close and uploads flush, and it
    /// exits 0. A second signal exits at once. Kubernetes'
    /// `terminationGracePeriodSeconds` must be longer than this plus
    /// `http.shutdown_timeout` and `webhooks.drain_timeout`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.drain_timeout > Duration::from_secs(3600) {
            return invalid("server.drain_timeout", "must be at most 1h".into());
        }
        Ok(())
    }
}
