//! `[http]`: the HTTP listener (LL-HLS, signalling, API, console).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where HTTP is served: LL-HLS, WebRTC signalling, the API and the
    /// console, alike on each address (`"0.0.0.0:3333"` or a list, such as
    /// `["0.0.0.0:3333", "0.0.0.0:8080"]`). Port 0 picks a free port
    /// (logged at start).
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// The origin viewers reach this server by, such as
    /// `https://live.example.com` behind a TLS-terminating proxy: the API's
    /// playback URLs and the console use it (`https` gives `wss` signalling).
    /// Empty: the request's own host and scheme.
    pub public_origin: String,
    /// The built web console (`npm --prefix web ci && npm --prefix web run
    /// build`), served at `/`.
    pub web_dir: PathBuf,
    /// Connections beyond this are closed at accept.
    pub max_connections: usize,
    /// Connections from one client address beyond this are closed at
    /// accept (players behind one NAT share an address; behind a reverse
    /// proxy every client does: raise it there).
    pub max_connections_per_ip: usize,
    /// A request's headers must arrive within this time of the connection
    /// opening or the previous response ending; an idle keep-alive
    /// connection is closed after it too.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// An HTTP/2 connection on which no request started for this long is
    /// closed: GOAWAY, with the requests in flight served to their end.
    /// (HTTP/2 answers pings, so without it a client that makes no
    /// requests could hold its connection for ever.)
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// An HTTP/2 connection with a response its client grants no window
    /// (under 16 KiB of it sent meanwhile) for this long is closed. (A client can
    /// keep the socket busy while granting a stream no window; HTTP/1.1's
    /// stalled socket is dropped after 10 s.)
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// At shutdown, requests in flight get this long to finish; then their
    /// connections are closed. What outlives a request on the HTTP workers
    /// (WebSocket and WHEP sessions) gets as long again once the server's
    /// last shutdown step is done.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For`
    /// and `X-Real-IP` are believed: the client is the rightmost
    /// `X-Forwarded-For` address that is not one of them. From anyone else
    /// those headers are dropped on arrival.
    pub trusted_proxies: Vec<String>,
    /// Threads HTTP connections are served on, each with its own event
    /// loop (as nginx has worker processes); a connection stays on one,
    /// with its requests and sessions. 0: one per CPU core.
    pub workers: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: vec![([0, 0, 0, 0], 3333).into()],
            public_origin: String::new(),
            web_dir: PathBuf::from("web/dist"),
            max_connections: 10_000,
            max_connections_per_ip: 500,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            workers: 0,
        }
    }
}

impl HttpConfig {
    /// `workers`, with 0 resolved to the number of CPU cores.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return invalid("http.listen", "must list at least one address".into());
        }
        if !self.public_origin.is_empty() && !is_origin(&self.public_origin) {
            return invalid(
                "http.public_origin",
                format!(
                    "{:?} is not an origin like \"https://live.example.com\"",
                    self.public_origin
                ),
            );
        }
        if self.max_connections == 0 {
            return invalid("http.max_connections", "must be at least 1".into());
        }
        if self.max_connections_per_ip == 0 {
            return invalid("http.max_connections_per_ip", "must be at least 1".into());
        }
        for p in &self.trusted_proxies {
            if let Err(e) = crate::net::IpBlock::parse(p) {
                return invalid("http.trusted_proxies", e);
            }
        }
        if self.workers > 256 {
            return invalid("http.workers", format!("{} is more than 256", self.workers));
        }
        if self.header_timeout < Duration::from_millis(100) {
            return invalid("http.header_timeout", "must be at least 100ms".into());
        }
        if self.send_timeout < Duration::from_millis(100) {
            return invalid("http.send_timeout", "must be at least 100ms".into());
        }
        if self.idle_timeout < Duration::from_millis(100) {
            return invalid("http.idle_timeout", "must be at least 100ms".into());
        }
        Ok(())
    }
}

/// `scheme://host[:port]` with nothing after it.
fn is_origin(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

/// An address, or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "an address such as \"0.0.0.0:3333\", or a list of them"
    )]
    enum OneOrMany {
        One(SocketAddr),
        Many(Vec<SocketAddr>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(v) => v,
    })
}

/// `[tls]`: HTTPS and WSS on listeners of their own (OME's TLS port is
/// 3334), and RTMPS ingest if asked for. Off until `cert` and `key` are set.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first; empty: no TLS.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// HTTPS listeners: everything the HTTP listeners serve, over HTTP/2 or
    /// HTTP/1.1 (ALPN), with WebSocket signalling on `wss://`.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// RTMPS ingest listeners (RTMP inside TLS); none: off.
    #[serde(deserialize_with = "one_or_many")]
    pub rtmps_listen: Vec<SocketAddr>,
    /// How often `cert` and `key` are checked for a change. A changed pair
    /// is served to new connections without a restart; a pair that does not
    /// load is logged and the one in use kept.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            listen: vec![([0, 0, 0, 0], 3334).into()],
            rtmps_listen: Vec::new(),
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.cert.as_os_str().is_empty() != self.key.as_os_str().is_empty() {
            return invalid("tls.key", "tls.cert and tls.key go together".into());
        }
        if self.enabled() && self.listen.is_empty() && self.rtmps_listen.is_empty() {
            return invalid("tls.listen", "TLS is on but nothing listens".into());
        }
        if self.reload_interval < Duration::from_secs(1) {
            return invalid("tls.reload_interval", "must be at least 1s".into());
        }
        Ok(())
    }
}
