//! Every WHIP publisher's str0m `Rtc`, without a socket, task or clock.
//!
//! The driver ([`super::server`]) passes in offers, datagrams and the time;
//! this answers offers (ICE-lite, our candidates in the answer, so an offer
//! without candidates, as OBS and ffmpeg send, works), routes each datagram
//! to its session (STUN by the ufrag we issued, the rest by the transport
//! and address that STUN came from), and gives back datagrams to send and
//! [`WhipEvent`]s: depacketised media, and sessions that ended.
//!
//! Datagrams come over UDP, or over ICE-TCP (RFC 6544: the viewers' ICE-TCP
//! listener routes a connection here when its first STUN names one of our
//! sessions' ufrags, which this registers there).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::ice::{IceCreds, StunMessage};
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid, Rid, Rids};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::http::sdp::{self, IceAnswer, IceFragment, PatchError};
use crate::ice_tcp::LiveUfrags;

/// A datagram to send: over UDP, or on the ICE-TCP connection from `to`.
pub type Transmit = (Protocol, SocketAddr, Vec<u8>);

/// The ICE-TCP listener's side for WHIP: the passive candidates to offer,
/// and where our sessions' ufrags are registered for it to route.
pub struct IceTcp {
    pub candidates: Vec<SocketAddr>,
    pub ufrags: LiveUfrags,
    /// Our index among the listener's destinations.
    pub destination: usize,
}

pub type SessionId = u64;

/// Our ICE credentials for a session; the ufrag routes its STUN.
fn new_credentials() -> IceCreds {
    IceCreds {
        ufrag: format!("w{}", crate::random::string(7, crate::random::ALPHANUMERIC)),
        pass: crate::random::string(24, crate::random::ALPHANUMERIC),
    }
}

/// A source address may hold this many sessions' worth of ICE paths.
const MAX_ADDRS: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WhipError {
    #[error("the offer is not valid SDP: {0}")]
    BadOffer(String),
    #[error("the offer has no audio or video to send")]
    NoMedia,
    #[error("the offer has no codec this server takes (H.264, HEVC or AV1 video, Opus audio)")]
    NoCodec,
    #[error("the offer sends {0} simulcast layers; this server takes at most {max}", max = super::frames::MAX_LAYERS)]
    TooManyLayers(usize),
    #[error("this server takes at most {0} WHIP publishers")]
    Full(usize),
    #[error("{0}")]
    AlreadyPublishing(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("webrtc: {0}")]
    Rtc(String),
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// No ICE (STUN) from the publisher for the timeout.
    Timeout,
    /// The publisher's DTLS or ICE closed the session.
    Disconnected,
    /// The session failed on its input.
    Error(String),
}

pub enum WhipEvent {
    /// ICE and DTLS are up: media follows.
    Connected(SessionId),
    Media(SessionId, Box<MediaData>),
    Ended(SessionId, Ended),
}

/// An accepted offer.
#[derive(Debug)]
pub struct Accepted {
    pub session: SessionId,
    pub answer: String,
    pub has_video: bool,
    pub has_audio: bool,
    /// The video's simulcast layers (RFC 8853 `a=rid`), in the order the
    /// offer lists them; empty without simulcast.
    pub layers: Vec<Rid>,
}

struct Session {
    rtc: Rtc,
    ufrag: String,
    /// The publisher's ICE credentials (trickled candidates must carry
    /// them; an ICE restart replaces them).
    remote: (String, String),
    /// The answer's first m-line and its mid (an ICE restart's answer).
    first_media: (String, String),
    /// The answer offered ICE-TCP only (`?transport=tcp`).
    tcp_only: bool,
    addrs: Vec<(Protocol, SocketAddr)>,
    video: Option<Mid>,
    last_stun: Instant,
    next_timeout: Option<Instant>,
}

pub struct WhipCore {
    template: RtcConfig,
    candidates: Vec<SocketAddr>,
    tcp: Option<IceTcp>,
    timeout: Duration,
    max_sessions: usize,
    sessions: HashMap<SessionId, Session>,
    by_ufrag: HashMap<String, SessionId>,
    by_addr: HashMap<(Protocol, SocketAddr), SessionId>,
    /// ICE-TCP connections of ended sessions, for the driver to close.
    closed_tcp: Vec<SocketAddr>,
    events: VecDeque<WhipEvent>,
    next_id: SessionId,
}

impl WhipCore {
    /// Sessions answer with `candidates` (the socket's public addresses),
    /// and the passive ICE-TCP candidates of `tcp` when there is one; one
    /// that sends no STUN for `timeout` ends.
    pub fn new(
        candidates: Vec<SocketAddr>,
        tcp: Option<IceTcp>,
        timeout: Duration,
        max_sessions: usize,
    ) -> Result<WhipCore, WhipError> {
        let provider = str0m::crypto::from_feature_flags();
        // One certificate for every session (a key per session costs
        // milliseconds of CPU).
        let cert: DtlsCert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| WhipError::Rtc("cannot generate a DTLS certificate".into()))?;
        let template = RtcConfig::new()
            .set_ice_lite(true)
            .clear_codecs()
            // In this order of preference: H.264 where the publisher offers
            // it (every player takes it as it came), else HEVC or AV1 (the
            // ladder makes H.264 of them).
            .enable_h264(true)
            .enable_h265(true)
            .enable_av1(true)
            .enable_opus(true, false)
            .set_dtls_cert(cert);
        Ok(WhipCore {
            template,
            candidates,
            tcp,
            timeout,
            max_sessions,
            sessions: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            closed_tcp: Vec::new(),
            events: VecDeque::new(),
            next_id: 1,
        })
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Answers a publisher's offer with a new session; `tcp_only` (the
    /// publisher asked `?transport=tcp`) offers only ICE-TCP candidates,
    /// where there are some.
    pub fn accept(
        &mut self,
        offer: &str,
        tcp_only: bool,
        now: Instant,
    ) -> Result<Accepted, WhipError> {
        if self.sessions.len() >= self.max_sessions {
            return Err(WhipError::Full(self.max_sessions));
        }
        let remote = sdp::offer_credentials(offer)
            .ok_or_else(|| WhipError::BadOffer("no a=ice-ufrag and a=ice-pwd".into()))?;
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| WhipError::BadOffer(e.to_string()))?;
        let creds = new_credentials();
        let ufrag = creds.ufrag.clone();
        let mut rtc = self
            .template
            .clone()
            .set_local_ice_credentials(creds)
            .build(now);
        if tcp_only && self.tcp.is_none() {
            tracing::info!(
                "a WHIP publisher asked for ICE-TCP (?transport=tcp), which is off (webrtc.ice_tcp): answering with UDP"
            );
        }
        let tcp_only = tcp_only && self.tcp.is_some();
        for c in self.local_candidates(tcp_only) {
            rtc.add_local_candidate(c);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WhipError::BadOffer(e.to_string()))?;
        // What the publisher will send, in codecs we take: each m-line of
        // the answer, as str0m set it up.
        let answer_sdp = answer.to_sdp_string();
        let mut video = None;
        let mut layers = Vec::new();
        let (mut has_video, mut has_audio, mut any_media) = (false, false, false);
        for mid in answer_sdp.lines().filter_map(|l| l.strip_prefix("a=mid:")) {
            let Some(m) = rtc.media(Mid::from(mid.trim())) else {
                continue;
            };
            if !m.direction().is_receiving() {
                continue;
            }
            any_media = true;
            let usable = !m.remote_pts().is_empty() && !m.disabled();
            match m.kind() {
                MediaKind::Video if usable => {
                    has_video = true;
                    if video.is_none() {
                        video = Some(m.mid());
                        if let Rids::Specific(rids) = m.rids_rx() {
                            layers = rids.clone();
                        }
                    }
                }
                MediaKind::Audio if usable => has_audio = true,
                _ => {}
            }
        }
        if !any_media {
            return Err(WhipError::NoMedia);
        }
        if !has_video && !has_audio {
            return Err(WhipError::NoCodec);
        }
        if layers.len() > super::frames::MAX_LAYERS {
            return Err(WhipError::TooManyLayers(layers.len()));
        }
        let first_media = sdp::first_media(&answer_sdp)
            .ok_or_else(|| WhipError::Rtc("an answer without an m-line".into()))?;
        let id = self.next_id;
        self.next_id += 1;
        self.by_ufrag.insert(ufrag.clone(), id);
        if let Some(tcp) = &self.tcp {
            tcp.ufrags.insert(&ufrag, tcp.destination);
        }
        self.sessions.insert(
            id,
            Session {
                rtc,
                ufrag,
                remote,
                first_media,
                tcp_only,
                addrs: Vec::new(),
                video,
                last_stun: now,
                next_timeout: Some(now),
            },
        );
        Ok(Accepted {
            session: id,
            answer: answer_sdp,
            has_video,
            has_audio,
            layers,
        })
    }

    /// Ends a session (its publisher deleted it, or its stream ended).
    pub fn close(&mut self, id: SessionId) -> bool {
        match self.sessions.remove(&id) {
            Some(mut s) => {
                s.rtc.disconnect();
                self.forget(&s);
                true
            }
            None => false,
        }
    }

    /// Takes a publisher's trickled candidates (RFC 9725 §4.3.1); the
    /// fragment's credentials, if any, must be the session's.
    pub fn trickle(&mut self, id: SessionId, fragment: &IceFragment) -> Result<(), PatchError> {
        let s = self.sessions.get_mut(&id).ok_or(PatchError::NotFound)?;
        if fragment.ufrag.as_ref().is_some_and(|u| *u != s.remote.0)
            || fragment.pwd.as_ref().is_some_and(|p| *p != s.remote.1)
        {
            return Err(PatchError::Credentials);
        }
        for c in fragment.parsed_candidates()? {
            s.rtc.add_remote_candidate(c);
        }
        Ok(())
    }

    /// An ICE restart (RFC 9725 §4.3.2): the publisher's new credentials
    /// and candidates in, new ones of ours out. Media flows on the old
    /// path until the publisher's checks with the new credentials succeed.
    pub fn restart_ice(
        &mut self,
        id: SessionId,
        fragment: &IceFragment,
    ) -> Result<IceAnswer, PatchError> {
        let (Some(ufrag), Some(pwd)) = (&fragment.ufrag, &fragment.pwd) else {
            return Err(PatchError::Bad(
                "an ICE restart carries the new a=ice-ufrag and a=ice-pwd".into(),
            ));
        };
        let candidates = fragment.parsed_candidates()?;
        let s = self.sessions.get_mut(&id).ok_or(PatchError::NotFound)?;
        let creds = new_credentials();
        let mut api = s.rtc.direct_api();
        api.set_local_ice_credentials(creds.clone());
        api.set_remote_ice_credentials(IceCreds {
            ufrag: ufrag.clone(),
            pass: pwd.clone(),
        });
        for c in candidates {
            s.rtc.add_remote_candidate(c);
        }
        s.remote = (ufrag.clone(), pwd.clone());
        self.by_ufrag.remove(&s.ufrag);
        if let Some(tcp) = &self.tcp {
            tcp.ufrags.remove(&s.ufrag);
            tcp.ufrags.insert(&creds.ufrag, tcp.destination);
        }
        s.ufrag = creds.ufrag.clone();
        self.by_ufrag.insert(creds.ufrag.clone(), id);
        let (tcp_only, (media_line, mid)) = (s.tcp_only, s.first_media.clone());
        let ours = self
            .local_candidates(tcp_only)
            .map(|c| c.to_sdp_string().trim_start_matches("a=").to_owned())
            .collect();
        Ok(IceAnswer {
            ufrag: creds.ufrag,
            pwd: creds.pass,
            candidates: ours,
            media_line,
            mid,
        })
    }

    /// Our candidates for an answer: UDP first (publishers prefer it by
    /// priority), then passive ICE-TCP; only ICE-TCP if `tcp_only`.
    fn local_candidates(&self, tcp_only: bool) -> impl Iterator<Item = Candidate> + '_ {
        let udp = self
            .candidates
            .iter()
            .filter(move |_| !tcp_only)
            .filter_map(|a| Candidate::host(*a, "udp").ok());
        let tcp = self.tcp.iter().flat_map(|t| &t.candidates).filter_map(|a| {
            Candidate::builder()
                .tcp()
                .host(*a)
                .tcptype(TcpType::Passive)
                .build()
                .ok()
        });
        udp.chain(tcp)
    }

    /// The ICE-TCP connection from `remote` closed: a session with no
    /// other path times out (ICE).
    pub fn tcp_closed(&mut self, remote: SocketAddr) {
        let path = (Protocol::Tcp, remote);
        if let Some(id) = self.by_addr.remove(&path)
            && let Some(s) = self.sessions.get_mut(&id)
        {
            // Its place among the session's paths is free for a new one.
            s.addrs.retain(|a| *a != path);
        }
    }

    /// The ICE-TCP connections of sessions that ended since the last call:
    /// the driver closes them.
    pub fn take_closed_tcp(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.closed_tcp)
    }

    /// Asks the publisher for a keyframe (PLI) of its video, or of one
    /// simulcast layer of it.
    pub fn request_keyframe(
        &mut self,
        id: SessionId,
        layer: Option<Rid>,
        now: Instant,
        out: &mut Vec<Transmit>,
    ) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(mid) = s.video else { return };
        if let Some(mut w) = s.rtc.writer(mid) {
            let _ = w.request_keyframe(layer, KeyframeRequestKind::Pli);
        }
        self.drive(id, now, out);
    }

    pub fn take_event(&mut self) -> Option<WhipEvent> {
        self.events.pop_front()
    }

    /// The earliest time a session wants [`Self::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions.values().filter_map(|s| s.next_timeout).min()
    }

    /// A datagram from `src` over `proto`; `local` is the UDP socket's
    /// address it reached.
    pub fn handle_datagram(
        &mut self,
        proto: Protocol,
        data: &[u8],
        src: SocketAddr,
        local: SocketAddr,
        now: Instant,
        out: &mut Vec<Transmit>,
    ) {
        let stun = data.first().is_some_and(|b| *b < 2);
        let id = if stun {
            StunMessage::parse(data)
                .ok()
                .and_then(|m| m.split_username().map(|(l, _)| l.to_owned()))
                .and_then(|l| self.by_ufrag.get(&l).copied())
        } else {
            self.by_addr.get(&(proto, src)).copied()
        };
        let Some(id) = id else { return };
        let destination = match (proto, &self.tcp) {
            (Protocol::Tcp, Some(tcp)) => crate::net::candidate_reached(&tcp.candidates, src),
            _ => self.destination_for(src, local),
        };
        let Ok(receive) = Receive::new(proto, src, destination, data) else {
            return;
        };
        let input = Input::Receive(now, receive);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if !s.rtc.accepts(&input) {
            return;
        }
        if stun {
            s.last_stun = now;
            if !s.addrs.contains(&(proto, src)) && s.addrs.len() < MAX_ADDRS {
                s.addrs.push((proto, src));
                self.by_addr.insert((proto, src), id);
            }
        }
        if let Err(e) = s.rtc.handle_input(input) {
            self.end(id, Ended::Error(e.to_string()));
            return;
        }
        self.drive(id, now, out);
    }

    /// Runs due timers and ends sessions that went quiet.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.next_timeout.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(s) = self.sessions.get_mut(&id)
                && s.rtc.handle_input(Input::Timeout(now)).is_err()
            {
                self.end(id, Ended::Disconnected);
                continue;
            }
            self.drive(id, now, out);
        }
        let quiet: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_stun) > self.timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in quiet {
            self.end(id, Ended::Timeout);
        }
    }

    /// The local address the datagram reached, as the candidate offered.
    fn destination_for(&self, src: SocketAddr, local: SocketAddr) -> SocketAddr {
        self.candidates
            .iter()
            .find(|c| {
                c.is_ipv4() == src.is_ipv4()
                    && (c.ip() == local.ip() || local.ip().is_unspecified())
            })
            .or_else(|| {
                self.candidates
                    .iter()
                    .find(|c| c.is_ipv4() == src.is_ipv4())
            })
            .copied()
            .unwrap_or(local)
    }

    /// Polls a session until it waits: datagrams out, events queued.
    fn drive(&mut self, id: SessionId, now: Instant, out: &mut Vec<Transmit>) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let mut ended = None;
        loop {
            match s.rtc.poll_output() {
                Ok(Output::Transmit(t)) => out.push((t.proto, t.destination, t.contents.to_vec())),
                Ok(Output::Timeout(t)) => {
                    s.next_timeout = Some(
                        t.max(now + Duration::from_millis(1))
                            .min(now + Duration::from_secs(1)),
                    );
                    break;
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => self.events.push_back(WhipEvent::Connected(id)),
                    Event::MediaData(m) => self.events.push_back(WhipEvent::Media(id, Box::new(m))),
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        ended = Some(Ended::Disconnected);
                    }
                    _ => {}
                },
                Err(e) => {
                    ended = Some(Ended::Error(e.to_string()));
                    break;
                }
            }
            if !s.rtc.is_alive() {
                ended.get_or_insert(Ended::Disconnected);
                break;
            }
        }
        if let Some(reason) = ended {
            self.end(id, reason);
        }
    }

    fn end(&mut self, id: SessionId, reason: Ended) {
        if let Some(s) = self.sessions.remove(&id) {
            self.forget(&s);
            self.events.push_back(WhipEvent::Ended(id, reason));
        }
    }

    fn forget(&mut self, s: &Session) {
        self.by_ufrag.remove(&s.ufrag);
        if let Some(tcp) = &self.tcp {
            tcp.ufrags.remove(&s.ufrag);
        }
        for a in &s.addrs {
            self.by_addr.remove(a);
            if a.0 == Protocol::Tcp {
                self.closed_tcp.push(a.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::ice::TransId;

    /// FFmpeg 9's WHIP offer, video only.
    const OFFER: &str = "v=0\r\no=FFmpeg 4489045141692799359 2 IN IP4 127.0.0.1\r\n\
s=FFmpegPublishSession\r\nt=0 0\r\na=group:BUNDLE 1\r\na=msid-semantic: WMS\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 106\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:be76892c\r\n\
a=ice-pwd:38769dd066d05368ef6a98cb871ada2b\r\n\
a=fingerprint:sha-256 DB:F1:BE:BB:DD:BE:FB:FE:A3:62:D7:B0:C1:0B:DA:B7:E6:DB:4C:9B:EA:52:23:D9:B0:20:88:A6:E9:8A:8E:22\r\n\
a=setup:passive\r\na=mid:1\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:106 H264/90000\r\n\
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001e\r\n\
a=ssrc:369817149 cname:FFmpeg\r\n";

    fn attr<'a>(sdp: &'a str, name: &str) -> &'a str {
        sdp.lines()
            .find_map(|l| l.strip_prefix(&format!("a={name}:")))
            .unwrap()
            .trim()
    }

    /// A publisher's connectivity check on our ufrag, signed with our
    /// password, as a browser sends it over its ICE-TCP connection.
    fn check(ufrag: &str, pwd: &str) -> Vec<u8> {
        let username = format!("{ufrag}:be76892c");
        let msg = StunMessage::binding_request(&username, TransId::new(), true, 7, 1, true);
        let mut buf = vec![0u8; 512];
        let hmac = |key: &[u8], parts: &[&[u8]]| -> [u8; 20] {
            use aws_lc_rs::hmac;
            let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
            let mut ctx = hmac::Context::with_key(&key);
            parts.iter().for_each(|p| ctx.update(p));
            ctx.sign().as_ref().try_into().unwrap()
        };
        let n = msg.to_bytes(Some(pwd.as_bytes()), &mut buf, hmac).unwrap();
        buf.truncate(n);
        buf
    }

    /// The whip_offer fuzz target's seeds (fuzz/make_seeds.py) are offers
    /// the core takes, so fuzzing starts from inside the accepting path:
    /// a browser's Opus and H.264, and the same with two simulcast layers.
    #[test]
    fn the_fuzz_seed_offers_are_accepted() {
        let mut core = WhipCore::new(
            vec!["127.0.0.1:9".parse().unwrap()],
            None,
            Duration::from_secs(30),
            4,
        )
        .unwrap();
        let now = Instant::now();
        let plain = core
            .accept(
                include_str!("../../../fuzz/corpus/whip_offer/opus-h264"),
                false,
                now,
            )
            .unwrap();
        assert!(plain.has_video && plain.has_audio);
        assert!(plain.layers.is_empty());
        let simulcast = core
            .accept(
                include_str!("../../../fuzz/corpus/whip_offer/simulcast"),
                false,
                now,
            )
            .unwrap();
        let layers: Vec<String> = simulcast.layers.iter().map(|r| r.to_string()).collect();
        assert_eq!(layers, ["h", "l"]);
        assert!(core.close(plain.session) && core.close(simulcast.session));
        assert_eq!(core.sessions(), 0);
    }

    /// `?transport=tcp` answers with the passive ICE-TCP candidate alone
    /// and registers the session's ufrag with the listener. A closed
    /// connection frees its place among the session's paths, so a
    /// publisher that reconnects more often than there are places still
    /// gets through; and when the session ends, its ufrag is dropped and
    /// its open connections are handed back to be closed.
    #[test]
    fn ice_tcp_paths_come_and_go_with_their_connections() {
        let ufrags = LiveUfrags::default();
        let listener: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let udp: SocketAddr = "127.0.0.1:10100".parse().unwrap();
        let tcp = IceTcp {
            candidates: vec![listener],
            ufrags: ufrags.clone(),
            destination: 3,
        };
        let mut core = WhipCore::new(vec![udp], Some(tcp), Duration::from_secs(30), 4).unwrap();
        let now = Instant::now();
        let accepted = core.accept(OFFER, true, now).unwrap();
        let candidates: Vec<&str> = accepted
            .answer
            .lines()
            .filter(|l| l.starts_with("a=candidate"))
            .collect();
        assert_eq!(candidates.len(), 1, "{candidates:?}");
        assert!(
            candidates[0].contains("3478 typ host tcptype passive"),
            "{candidates:?}"
        );
        let (ufrag, pwd) = (
            attr(&accepted.answer, "ice-ufrag"),
            attr(&accepted.answer, "ice-pwd"),
        );
        assert_eq!(ufrags.destination(ufrag), Some(3));
        let mut out = Vec::new();
        for port in 0..(3 * MAX_ADDRS as u16) {
            let remote = SocketAddr::from(([127, 0, 0, 1], 40_000 + port));
            core.handle_datagram(
                Protocol::Tcp,
                &check(ufrag, pwd),
                remote,
                udp,
                now,
                &mut out,
            );
            assert!(
                out.iter()
                    .any(|(p, to, _)| *p == Protocol::Tcp && *to == remote),
                "connection {port} was answered"
            );
            assert_eq!(
                core.by_addr.get(&(Protocol::Tcp, remote)),
                Some(&accepted.session),
                "connection {port} is a path of the session"
            );
            out.clear();
            // All but the last close again.
            if port + 1 < 3 * MAX_ADDRS as u16 {
                core.tcp_closed(remote);
            }
        }
        assert_eq!(core.sessions[&accepted.session].addrs.len(), 1);
        assert!(core.close(accepted.session));
        assert_eq!(ufrags.destination(ufrag), None);
        let last = SocketAddr::from(([127, 0, 0, 1], 40_000 + 3 * MAX_ADDRS as u16 - 1));
        assert_eq!(core.take_closed_tcp(), [last]);
        assert!(core.by_addr.is_empty());
    }
}
