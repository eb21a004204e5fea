//! `[webrtc]`: the SFU's sockets, ICE and viewer limits.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Serve WebRTC playback (signalling on the HTTP listener).
    pub enabled: bool,
    /// The UDP socket of the first media engine. Each engine (one event
    /// loop on its own socket, see `engines`) takes the next port: open
    /// `port ..= port + engines - 1` (as OME's 10000-10004). Port 0 gives
    /// every engine a free port (logged at start).
    pub udp_listen: SocketAddr,
    /// Media engines, each driving its share of the viewers on its own
    /// socket and thread of work; 0 = one per CPU core.
    pub engines: usize,
    /// Also offer a passive ICE-TCP candidate (RFC 6544), for viewers whose
    /// network blocks UDP; `?transport=tcp` on the signalling URL offers
    /// it alone.
    pub ice_tcp: bool,
    /// The ICE-TCP listener (OME's TURN port by default, so existing
    /// firewall rules for 3478/tcp keep working).
    pub tcp_listen: SocketAddr,
    /// Addresses put in the ICE candidates offered to viewers: IPs, or
    /// `"*"` for every address of this host's interfaces. The environment
    /// variable `STREAMD_HOST_IP` (or OME's `OME_HOST_IP`), a comma
    /// separated list, replaces this.
    pub candidate_ips: Vec<String>,
    /// A viewer that sends no STUN for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub ice_timeout: Duration,
    /// WebSocket ping interval.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A viewer starts on the largest rendition at or below this bitrate,
    /// then adapts to its bandwidth.
    pub start_bitrate_kbps: u32,
    /// Viewers beyond this many are refused (503 in the signalling).
    pub max_viewers: usize,
    /// Offers a client address may hold unanswered at once; more are
    /// refused (429 in the signalling). Each offer holds an ICE/DTLS session
    /// until it is answered or `ice_timeout` ends it.
    pub max_pending_offers_per_ip: usize,
    /// Video RTP packets each viewer keeps for retransmission on NACK.
    pub nack_buffer_packets: usize,
}

impl WebRtcConfig {
    /// `engines`, with 0 resolved to the number of CPU cores.
    pub fn engine_count(&self) -> usize {
        match self.engines {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            enabled: true,
            udp_listen: ([0, 0, 0, 0], 10000).into(),
            engines: 0,
            ice_tcp: true,
            tcp_listen: ([0, 0, 0, 0], 3478).into(),
            candidate_ips: vec!["*".to_owned()],
            ice_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            start_bitrate_kbps: 2500,
            max_viewers: 10_000,
            max_pending_offers_per_ip: 16,
            nack_buffer_packets: 512,
        }
    }
}

impl WebRtcConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let w = self;
        if w.engines > 64 {
            return invalid("webrtc.engines", format!("{} is more than 64", w.engines));
        }
        if w.udp_listen.port() != 0
            && usize::from(w.udp_listen.port()) + w.engine_count() - 1 > usize::from(u16::MAX)
        {
            return invalid(
                "webrtc.udp_listen",
                format!(
                    "port {} + {} engines runs past 65535",
                    w.udp_listen.port(),
                    w.engine_count()
                ),
            );
        }
        for ip in &w.candidate_ips {
            if ip != "*" && ip.parse::<std::net::IpAddr>().is_err() {
                return invalid(
                    "webrtc.candidate_ips",
                    format!("{ip:?} is not an IP address or \"*\""),
                );
            }
        }
        if w.enabled && w.candidate_ips.is_empty() {
            return invalid(
                "webrtc.candidate_ips",
                "must list at least one IP or \"*\"".into(),
            );
        }
        if !(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&w.ice_timeout) {
            return invalid(
                "webrtc.ice_timeout",
                format!("must be between 2s and 300s, got {:?}", w.ice_timeout),
            );
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&w.ping_interval) {
            return invalid(
                "webrtc.ping_interval",
                format!("must be between 1s and 300s, got {:?}", w.ping_interval),
            );
        }
        if !(50..=100_000).contains(&w.start_bitrate_kbps) {
            return invalid(
                "webrtc.start_bitrate_kbps",
                format!(
                    "must be between 50 and 100000, got {}",
                    w.start_bitrate_kbps
                ),
            );
        }
        if w.max_viewers == 0 {
            return invalid("webrtc.max_viewers", "must be at least 1".into());
        }
        if w.max_pending_offers_per_ip == 0 {
            return invalid(
                "webrtc.max_pending_offers_per_ip",
                "must be at least 1".into(),
            );
        }
        if !(64..=16_384).contains(&w.nack_buffer_packets) {
            return invalid(
                "webrtc.nack_buffer_packets",
                format!(
                    "must be between 64 and 16384, got {}",
                    w.nack_buffer_packets
                ),
            );
        }
        Ok(())
    }
}
