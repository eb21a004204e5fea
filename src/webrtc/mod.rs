//! WebRTC playback, as OvenMediaEngine serves it: OvenPlayer opens
//! `ws://host:3333/{app}/{stream}[/{playlist}]`, gets an offer, answers, and
//! media flows over one UDP socket shared by every viewer.
//!
//! - [`signal`]: OME's signalling messages (sans-IO: text in, messages out).
//! - [`ws`]: the WebSocket shell around them, on the HTTP listener.
//! - [`whep`]: WHEP, the standard way to the same viewers (the player
//!   offers, we answer).
//! - [`sfu_core`]: every viewer's str0m `Rtc` and what happens to them,
//!   without sockets, tasks or a clock (ICE-lite, no task per viewer);
//!   split by concern into its offer templates, RTP timelines and ABR.
//! - [`sfu`]: its driver, one task per engine owning a UDP socket, the
//!   ICE-TCP connections and the feed tasks.
//! - [`feed`] and [`packetize`]: each rendition packetised once, shared by
//!   all its viewers.
//! - [`candidates`]: which addresses are offered to browsers.
//!
//! Only WebRTC-safe renditions (no B-frames) and the transcoder's Opus
//! track are served; WebRTC carries neither AAC nor B-frames well.

pub mod candidates;
pub mod feed;
pub mod packetize;
pub mod sfu;
pub mod sfu_core;
pub mod signal;
pub mod udp;
pub mod whep;
pub mod ws;

use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};

use crate::bus::Catalog;
use crate::config::WebRtcConfig;
use crate::shutdown::Shutdown;
pub use sfu::{Engine, Sfu, SfuError};

/// A video rendition a viewer can watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendition {
    /// As players see it (`720p`).
    pub name: String,
    /// The bus track carrying it.
    pub track: String,
    /// Bits per second (configured; 0 if unknown).
    pub bitrate: u32,
    pub width: u32,
    pub height: u32,
}

/// What a stream offers over WebRTC: its renditions, largest first, and
/// the Opus track if there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPlan {
    pub renditions: Vec<Rendition>,
    pub audio: Option<String>,
}

impl StreamPlan {
    /// What the broadcast's catalog offers WebRTC: its WebRTC-safe video,
    /// largest first, and its Opus track. A stream that is not transcoded
    /// offers its source video as the one rendition `source`, without
    /// audio (the publisher must then avoid B-frames, as with OME).
    pub fn of(catalog: &Catalog) -> Option<StreamPlan> {
        let renditions: Vec<Rendition> = catalog
            .video
            .iter()
            .filter(|v| v.webrtc_safe)
            .map(|v| Rendition {
                name: v.name.clone(),
                track: v.track.clone(),
                bitrate: v.bitrate,
                width: v.width,
                height: v.height,
            })
            .collect();
        (!renditions.is_empty()).then(|| StreamPlan {
            renditions,
            audio: catalog.webrtc_audio.clone(),
        })
    }
}

/// The bound UDP socket and the engine driving it.
pub struct WebRtcServer {
    engines: Vec<Engine>,
    sfu: Sfu,
    local: Vec<SocketAddr>,
    /// The ICE-TCP listener, routing to each engine (and to whatever else
    /// takes a [`Self::ice_tcp_route`]).
    tcp: Option<crate::ice_tcp::Listener>,
    max_viewers: usize,
    /// An ICE-TCP connection silent this long is closed.
    idle: std::time::Duration,
}

impl WebRtcServer {
    /// Binds a UDP socket per engine (`udp_listen`, then the next ports)
    /// and works out the candidates each offers (logged, since a wrong one
    /// is the most common reason WebRTC plays nothing).
    pub async fn bind(config: WebRtcConfig) -> anyhow::Result<WebRtcServer> {
        let count = config.engine_count();
        let mut sockets = Vec::with_capacity(count);
        let mut local = Vec::with_capacity(count);
        for k in 0..count {
            let mut addr = config.udp_listen;
            if addr.port() != 0 {
                addr.set_port(addr.port() + k as u16); // validated: no overflow
            }
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind WebRTC UDP {addr}: {e}"))?;
            candidates::tune_socket(&socket);
            let bound = socket.local_addr()?;
            let ips =
                candidates::resolve(&config.candidate_ips, bound, candidates::env_override())?;
            let addrs: Vec<SocketAddr> = ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, bound.port()))
                .collect();
            tracing::info!(
                engine = k,
                udp = %bound,
                candidates = ?addrs,
                "webrtc listening; browsers are offered these ICE candidates (set webrtc.candidate_ips or STREAMD_HOST_IP if they are not reachable)"
            );
            sockets.push((socket, addrs));
            local.push(bound);
        }
        let mut tcp_candidates = Vec::new();
        let mut listener = None;
        if config.ice_tcp {
            let l = TcpListener::bind(config.tcp_listen).await.map_err(|e| {
                anyhow::anyhow!("cannot bind WebRTC ICE-TCP {}: {e}", config.tcp_listen)
            })?;
            let bound = l.local_addr()?;
            let ips =
                candidates::resolve(&config.candidate_ips, bound, candidates::env_override())?;
            tcp_candidates = ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, bound.port()))
                .collect();
            tracing::info!(tcp = %bound, candidates = ?tcp_candidates, "webrtc ICE-TCP listening");
            listener = Some(l);
        }
        let max_viewers = config.max_viewers;
        let idle = config.ice_timeout;
        let started = Engine::start(config, sockets, tcp_candidates.clone())?;
        Ok(WebRtcServer {
            engines: started.engines,
            sfu: started.sfu,
            local,
            tcp: listener.map(|l| {
                crate::ice_tcp::Listener::new(l, tcp_candidates, started.tcp, started.ufrags)
            }),
            max_viewers,
            idle,
        })
    }

    /// The ICE-TCP listener's address, if on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A route of the ICE-TCP listener (if on) for another kind of
    /// session: WHIP publishers share the viewers' ICE-TCP port.
    pub fn ice_tcp_route(&mut self) -> Option<crate::ice_tcp::Route> {
        self.tcp.as_mut().map(crate::ice_tcp::Listener::route)
    }

    /// The first engine's UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local[0]
    }

    /// Every engine's UDP address.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    pub fn sfu(&self) -> Sfu {
        self.sfu.clone()
    }

    /// Runs the engines, each on its own task, and the ICE-TCP listener,
    /// until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        let mut tasks: Vec<_> = self
            .engines
            .into_iter()
            .map(|e| tokio::spawn(e.run(shutdown.clone())))
            .collect();
        if let Some(listener) = self.tcp {
            tasks.push(tokio::spawn(listener.serve(
                self.max_viewers,
                self.idle,
                shutdown,
            )));
        }
        futures_util::future::join_all(tasks).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::VideoEntry;

    #[test]
    fn plan_offers_safe_renditions_largest_first_and_opus() {
        let mut c = Catalog {
            video: vec![
                VideoEntry::rung("360p", 600_000, true),
                VideoEntry::rung("1080p", 4_500_000, false),
                VideoEntry::rung("720p", 2_500_000, true),
            ],
            audio: Some("audio".into()),
            webrtc_audio: Some("opus".into()),
            complete: true,
            fallback: None,
        };
        c.sort();
        let p = StreamPlan::of(&c).unwrap();
        let names: Vec<&str> = p.renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["720p", "360p"]);
        assert_eq!(p.audio.as_deref(), Some("opus"));
    }

    #[test]
    fn no_safe_video_is_no_plan() {
        let c = Catalog {
            video: vec![VideoEntry::rung("1080p", 4_500_000, false)],
            webrtc_audio: Some("opus".into()),
            ..Default::default()
        };
        assert_eq!(StreamPlan::of(&c), None);
        assert_eq!(StreamPlan::of(&Catalog::default()), None);
    }
}
