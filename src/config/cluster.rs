//! `[cluster]`: several nodes serving one set of streams. Origins ingest,
//! transcode, package and record, and say in the shared database which
//! streams they have; edges (and origins without the stream) pull a stream
//! from its origin when a viewer asks for it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, MIN_SECRET_LEN, invalid};

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// One node alone (the default): no cluster.
    #[default]
    Standalone,
    /// Takes publishers, lists its streams in the database, serves pulls;
    /// pulls from another origin what a viewer asks for and it lacks.
    Origin,
    /// Takes no publishers: every stream is pulled from its origin.
    Edge,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub role: Role,
    /// This node's name in the database; empty: the host name.
    pub node: String,
    /// How other nodes reach this node's HTTP listener
    /// (`http://10.0.0.5:8080`; a Pod's address). Needed on an origin.
    pub advertise_url: String,
    /// How viewers reach this node (`https://origin-1.example.com`), told
    /// to nodes that redirect viewers here; empty: they pull instead.
    pub public_url: String,
    /// A viewer asking this node for a stream it lacks is sent (HTTP 307)
    /// to the `public_url` of the origin that has it, instead of this
    /// node pulling the stream. Only LL-HLS and WHEP can follow: OME
    /// signalling (a WebSocket), and a stream whose origin has no
    /// `public_url`, are still pulled.
    pub redirect: bool,
    /// The credential nodes show each other on pulls (`Authorization:
    /// Bearer …`); the same on every node, at least 32 characters.
    pub secret: String,
    /// How often an origin renews its streams' rows.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A row not renewed for this long is a dead origin's, and ignored.
    #[serde(with = "humantime_serde")]
    pub expiry: Duration,
    /// A pulled stream is let go this long after its last viewer left (a
    /// WebRTC viewer counts from its offer, so one joining holds it).
    /// (A pull that loses its origin retries, backing off, for as long as
    /// `bus.reconnect_grace`: its viewers wait as for a publisher.)
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            role: Role::Standalone,
            node: String::new(),
            advertise_url: String::new(),
            public_url: String::new(),
            redirect: false,
            secret: String::new(),
            heartbeat: Duration::from_secs(2),
            expiry: Duration::from_secs(6),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        self.role != Role::Standalone
    }

    /// This node's name.
    pub fn node_name(&self) -> String {
        if self.node.is_empty() {
            super::host_name()
        } else {
            self.node.clone()
        }
    }

    pub(super) fn validate(&self, database_url: &str) -> Result<(), ConfigError> {
        // A standalone node may have a secret too: its HTTP cache shows it.
        if (self.enabled() || !self.secret.is_empty()) && self.secret.len() < MIN_SECRET_LEN {
            return invalid(
                "cluster.secret",
                format!(
                    "must be at least {MIN_SECRET_LEN} characters (and is needed in a cluster)"
                ),
            );
        }
        if !self.enabled() {
            return Ok(());
        }
        if self.role == Role::Origin && !super::is_http_url(&self.advertise_url) {
            return invalid(
                "cluster.advertise_url",
                "an origin needs the http(s):// URL other nodes reach it at".into(),
            );
        }
        if !self.public_url.is_empty()
            && (!super::is_http_url(&self.public_url) || self.public_url.contains(['?', '#']))
        {
            return invalid(
                "cluster.public_url",
                "must be the http(s):// URL viewers reach this node at, without a query".into(),
            );
        }
        if !database_url.starts_with("postgres") {
            return invalid(
                "database.url",
                "a cluster shares its state in Postgres: set a postgres:// URL".into(),
            );
        }
        if self.heartbeat.is_zero() || self.expiry < self.heartbeat * 2 {
            return invalid(
                "cluster.expiry",
                "must be at least twice cluster.heartbeat (which must not be 0)".into(),
            );
        }
        Ok(())
    }
}
