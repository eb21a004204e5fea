//! The SFU's core, without sockets, tasks or a clock: every viewer's str0m
//! [`Rtc`], the streams they watch, and what happens to them. The driver
//! ([`super::sfu`]) feeds it datagrams, media, commands and the time, and
//! sends what it writes to a [`Sink`]; tests do the same on simulated time.
//!
//! - Datagrams are routed to a viewer by the ICE ufrag of a STUN request
//!   (verified by str0m's HMAC check), then by the remote address that
//!   request came from. Nothing else is accepted from an unknown address.
//! - Each rendition's frames are packetised once, by a feed per track (the
//!   driver starts and stops them as [`FeedChange`]s say); the core writes
//!   the shared payloads into every viewer of that rendition (per viewer:
//!   RTP header, SRTP).
//! - Viewers' timers live in one heap ([`SfuCore::poll_timeout`]).
//! - A viewer whose queue backs up skips video to the next keyframe; a
//!   viewer that sends no STUN for `ice_timeout` is dropped. Neither
//!   affects anyone else.
//! - A panic while handling one viewer closes that viewer; one outside any
//!   viewer closes this core's viewers, and the core goes on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::ice::StunMessage;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{RtpWrite, StreamTx};
use str0m::{Candidate, Event, IceCreds, Input, Output, Rtc};

use super::feed::{FeedMsg, FeedMsgKind, RtpFrame};
use super::packetize::Payload;
use super::{Rendition, StreamPlan};
use crate::bus::BroadcastConsumer;
use crate::config::WebRtcConfig;
use crate::ratelimit::TokenBucket;

mod abr;
mod catch_up;
mod events;
mod offer;
mod timeline;

use abr::{Abr, start_rendition};
use catch_up::{Gop, burst_ts};
pub use events::{EventReceiver, EventSender, VIEWER_EVENTS, channel as viewer_events};
pub use offer::Templates;
use offer::VIDEO_PT;
use timeline::RtpClock;

/// Where the core's datagrams go: the driver's UDP socket and ICE-TCP
/// connections, or a test's buffer. Sends never wait; the sink counts and
/// drops what it cannot send.
pub trait Sink {
    fn udp(&mut self, to: SocketAddr, data: &[u8]);
    fn tcp(&mut self, to: SocketAddr, data: &[u8]);
}

/// Feeds the driver should start or stop: a feed task per rendition (and
/// the Opus track) of a stream, from its first viewer to its last.
pub enum FeedChange {
    Start {
        broadcast: BroadcastConsumer,
        plan: StreamPlan,
    },
    Stop(u64),
}

/// A viewer's number, unique for the engine's life (it is also the `id` of
/// OME's signalling).
pub type ViewerId = u32;

/// A viewer whose oldest unsent packet is older than this skips video to
/// the next keyframe.
const MAX_QUEUE_AGE: Duration = Duration::from_millis(500);
/// How long a paced viewer's pacer may take to send a group it starts
/// from (see `group_budget`).
const PACED_GROUP: Duration = Duration::from_millis(300);
/// Keyframe requests per viewer: at most one per this (the encoder
/// coalesces across viewers to one per second per rung).
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// Remote addresses remembered per viewer (ICE may try several).
const MAX_ADDRS: usize = 8;
/// How long sent video is kept for retransmission (NACK). str0m keeps 3 s
/// by default; a live viewer has no use for a packet resent later than
/// this (libwebrtc's sender keeps at least 1 s too), and each cached
/// packet costs about 340 B of the viewer's state (benches/README.md).
const NACK_WINDOW: Duration = Duration::from_secs(1);
/// The cap on retransmissions: resends stop while they are over this share
/// of the bytes sent to the viewer in the last second (resends included).
/// At 0.5 a viewer is resent at most as much media as it is sent (one
/// packet more), to its own verified address. That is what a second
/// session would cost, except that resends do not count against
/// `webrtc.max_viewers`: a viewer asking for everything can make its video
/// cost up to twice its rate. str0m's default, 0.15, could not resend a
/// keyframe lost whole where a keyframe is a quarter of a second's bytes or
/// more, as at low bitrates with short groups (scenario
/// `a_keyframe_lost_whole_is_resent_whole`: any cap from about 0.17 passes
/// it; 0.5 leaves room for other losses in the same second).
const RTX_RATIO_CAP: f32 = 0.5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SfuError {
    #[error("the server has too many WebRTC viewers")]
    Full,
    #[error("invalid SDP: {0}")]
    BadSdp(String),
    #[error("the answer does not accept H.264 video")]
    NoH264,
    #[error("no such session")]
    NoSession,
    #[error("the answer was already given")]
    AlreadyAnswered,
    #[error("unknown rendition {0:?}")]
    UnknownRendition(String),
    #[error("WebRTC error: {0}")]
    Rtc(String),
    #[error("the WebRTC engine has stopped")]
    Stopped,
}

/// A viewer's ICE credentials on core `index` (its ufrag starts with the
/// core's two digits, which the logs show).
fn new_credentials(index: usize) -> IceCreds {
    IceCreds {
        ufrag: format!(
            "{:02}{}",
            index % 100,
            crate::random::string(6, crate::random::ALPHANUMERIC)
        ),
        pass: crate::random::string(24, crate::random::ALPHANUMERIC),
    }
}

/// Why the engine let a viewer go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    StreamEnded,
    IceTimeout,
    AnswerTimeout,
    Error(String),
    Shutdown,
}

/// What the engine tells a viewer's signalling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewerEvent {
    RenditionChanged { name: String, auto: bool },
    Closed(CloseReason),
}

/// The offer for a new viewer.
#[derive(Debug)]
pub struct Joined {
    pub viewer: ViewerId,
    pub sdp: String,
    /// `a=candidate` values, also in the SDP.
    pub candidates: Vec<String>,
    /// The mid of the first m-line (where the candidates apply).
    pub mid: String,
    /// The rendition the viewer starts on, and whether it adapts.
    pub rendition: String,
    pub auto: bool,
}

/// What a viewer asks to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Rendition(String),
}

pub struct JoinRequest {
    pub broadcast: BroadcastConsumer,
    pub plan: StreamPlan,
    /// A rendition named by the URL's playlist segment: pinned, no ABR.
    pub pinned: Option<String>,
    /// Offer only ICE-TCP candidates (OvenPlayer's `?transport=tcp`).
    pub tcp_only: bool,
    pub events: EventSender,
    /// The viewer's own offer (WHEP): it is answered, where OME's
    /// signalling has the server offer.
    pub offer: Option<String>,
}

struct Viewer {
    broadcast: u64,
    rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    connected: bool,
    video_mid: Mid,
    audio_mid: Option<Mid>,
    /// The payload types media is written with: ours in our offer, the
    /// viewer's in an answer to its offer.
    video_pt: Pt,
    audio_pt: Pt,
    ufrag: String,
    addrs: Vec<(Protocol, SocketAddr)>,
    events: EventSender,
    current: usize,
    target: Option<usize>,
    auto: bool,
    /// Video waits for a keyframe (start, or after a skip).
    need_keyframe: bool,
    /// Video has been written (a viewer that has none yet may start from
    /// the group in progress: see [`catch_up`]).
    video_started: bool,
    /// Ask the encoder for one (join, PLI/FIR, skip).
    keyframe_wanted: bool,
    video: RtpClock,
    audio: RtpClock,
    created: Instant,
    last_stun: Instant,
    /// Keyframe requests this viewer may still make (PLI, FIR, skips and
    /// rendition switches alike).
    keyframe_budget: TokenBucket,
    abr: Abr,
    /// The timer in the heap this viewer waits for (older entries of it
    /// are stale and skipped).
    scheduled: Option<Instant>,
}

struct Stream {
    plan: StreamPlan,
    /// Where keyframe requests go (to each rendition's track producer).
    broadcast: BroadcastConsumer,
    viewers: Vec<ViewerId>,
    /// Each rendition's group in progress, for joiners.
    gops: Vec<Gop>,
}

/// Everything a viewer's `drive` needs besides the viewer.
struct Io<'a> {
    out: &'a mut dyn Sink,
    timers: &'a mut BinaryHeap<Reverse<(Instant, ViewerId)>>,
}

pub struct SfuCore {
    config: WebRtcConfig,
    candidates: Arc<Vec<SocketAddr>>,
    /// What every viewer's Rtc starts from: `plain` for viewers that stay
    /// on one rendition, `estimating` (TWCC bandwidth estimation and the
    /// pacer it needs) for viewers on automatic ABR.
    templates: Templates,
    /// Boxed: a `Viewer` is about 10 KB (its `Rtc` inline), and a table
    /// holding them inline wastes its empty slots' worth and moves every
    /// viewer when it grows.
    viewers: HashMap<ViewerId, Box<Viewer>>,
    by_ufrag: HashMap<String, ViewerId>,
    /// Remote addresses learnt from verified STUN, per transport.
    by_addr: HashMap<(Protocol, SocketAddr), ViewerId>,
    /// The passive TCP candidates offered (empty: no ICE-TCP).
    tcp_candidates: Arc<Vec<SocketAddr>>,
    /// This core's number (in its viewers' ufrags).
    index: usize,
    streams: HashMap<u64, Stream>,
    timers: BinaryHeap<Reverse<(Instant, ViewerId)>>,
    next_id: ViewerId,
    /// Cores in all: this one's ids step by it (see `Sfu::engine`).
    id_step: ViewerId,
    /// Viewers on every core (for max_viewers and the gauge).
    total: Arc<AtomicUsize>,
    /// Every core's viewers' ufrags, each with its core's index (ICE-TCP
    /// admits only these, and routes each to its core).
    ufrags: crate::ice_tcp::LiveUfrags,
    /// Video frames skipped to a keyframe since the last housekeeping.
    keyframe_skips: u64,
    feed_changes: Vec<FeedChange>,
}

/// What a core shares with the others of the server.
#[derive(Clone, Default)]
pub struct Shared {
    /// Viewers on every core.
    pub total: Arc<AtomicUsize>,
    /// Their ufrags.
    pub ufrags: crate::ice_tcp::LiveUfrags,
}

impl SfuCore {
    /// Core `index` of `count`, offering `candidates` (and, if any, the
    /// passive ICE-TCP `tcp_candidates`) to its viewers.
    pub fn new(
        config: WebRtcConfig,
        templates: Templates,
        candidates: Vec<SocketAddr>,
        tcp_candidates: Arc<Vec<SocketAddr>>,
        index: usize,
        count: usize,
        shared: Shared,
    ) -> SfuCore {
        let count = count.max(1) as ViewerId;
        SfuCore {
            config,
            candidates: Arc::new(candidates),
            templates,
            viewers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            tcp_candidates,
            index,
            streams: HashMap::new(),
            timers: BinaryHeap::new(),
            next_id: index as ViewerId + count,
            id_step: count,
            total: shared.total,
            ufrags: shared.ufrags,
            keyframe_skips: 0,
            feed_changes: Vec::new(),
        }
    }

    /// Runs `f` on the engine. A panic in it (str0m on hostile input, or a
    /// bug here) does not end the engine: its viewers are closed and told,
    /// what they held is cleared, and the engine goes on with new viewers.
    /// Other engines are untouched. (A panic that `viewer_contained`
    /// caught only closes its viewer.)
    fn contained(&mut self, during: &'static str, f: impl FnOnce(&mut Self)) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(self))) {
            tracing::error!(
                engine = self.index,
                during,
                panic = panic_message(&panic),
                viewers = self.viewers.len(),
                "webrtc engine panicked; closing its viewers and going on"
            );
            metrics::counter!("streamd_webrtc_panics_total", "scope" => "engine").increment(1);
            self.reset();
        }
    }

    /// Runs `f` for viewer `id`; a panic in it closes that viewer alone.
    fn viewer_contained(&mut self, id: ViewerId, during: &'static str, f: impl FnOnce(&mut Self)) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(self))) {
            tracing::error!(
                engine = self.index,
                viewer = id,
                during,
                panic = panic_message(&panic),
                "webrtc session panicked; closing it"
            );
            metrics::counter!("streamd_webrtc_panics_total", "scope" => "viewer").increment(1);
            self.close_after_panic(id);
        }
    }

    /// Closes a viewer whose state a panic may have left half-changed.
    fn close_after_panic(&mut self, id: ViewerId) {
        let closed = catch_unwind(AssertUnwindSafe(|| {
            self.remove(id, CloseReason::Error("internal error".into()))
        }));
        if closed.is_err()
            && let Some(v) = self.viewers.remove(&id)
        {
            // Even closing it panicked: tell its signalling, and leak the
            // session rather than run more of its code.
            let _ = v.events.try_send(ViewerEvent::Closed(CloseReason::Error(
                "internal error".into(),
            )));
            self.ufrags.remove(&v.ufrag);
            self.by_ufrag.remove(&v.ufrag);
            self.by_addr.retain(|_, x| *x != id);
            self.total.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("streamd_webrtc_viewers").decrement(1.0);
            std::mem::forget(v);
        }
    }

    /// After a panic outside any one viewer: every viewer closed and told,
    /// every index and queue cleared.
    fn reset(&mut self) {
        let ids: Vec<ViewerId> = self.viewers.keys().copied().collect();
        for id in ids {
            self.close_after_panic(id);
        }
        for ufrag in self.by_ufrag.keys() {
            self.ufrags.remove(ufrag);
        }
        self.by_ufrag.clear();
        self.by_addr.clear();
        let streams: Vec<u64> = self.streams.keys().copied().collect();
        for id in streams {
            self.drop_stream(id);
        }
        self.timers.clear();
    }

    /// Forgets a stream and has the driver stop its feeds.
    fn drop_stream(&mut self, id: u64) {
        if self.streams.remove(&id).is_some() {
            self.feed_changes.push(FeedChange::Stop(id));
        }
    }

    fn io<'a>(
        &'a mut self,
        out: &'a mut dyn Sink,
    ) -> (&'a mut HashMap<ViewerId, Box<Viewer>>, Io<'a>) {
        (
            &mut self.viewers,
            Io {
                out,
                timers: &mut self.timers,
            },
        )
    }

    /// The earliest time a viewer's timer is due, if any is set.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Feeds to start or stop since the last call.
    pub fn take_feed_changes(&mut self) -> Vec<FeedChange> {
        std::mem::take(&mut self.feed_changes)
    }

    /// Viewers on this core.
    pub fn viewers(&self) -> usize {
        self.viewers.len()
    }

    /// A datagram (or an ICE-TCP frame) from `src`.
    pub fn handle_datagram(
        &mut self,
        proto: Protocol,
        data: &[u8],
        src: SocketAddr,
        now: Instant,
        out: &mut dyn Sink,
    ) {
        self.contained("a datagram", |e| e.on_packet(proto, data, src, now, out));
    }

    /// A frame (or the end) of a feed.
    pub fn handle_media(&mut self, msg: FeedMsg, now: Instant, out: &mut dyn Sink) {
        self.contained("media", |e| e.on_media(msg, now, out));
    }

    /// Runs the viewers' timers due by `now`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut dyn Sink) {
        self.contained("timers", |e| e.fire_timers(now, out));
    }

    /// Once a second: timeouts, ABR decisions, metrics.
    pub fn housekeeping(&mut self, now: Instant, out: &mut dyn Sink) {
        self.contained("housekeeping", |e| e.check_viewers(now, out));
    }

    /// The ICE-TCP connection from `remote` closed: a viewer with no other
    /// path times out (ICE).
    pub fn tcp_closed(&mut self, remote: SocketAddr) {
        let path = (Protocol::Tcp, remote);
        if let Some(id) = self.by_addr.remove(&path)
            && let Some(v) = self.viewers.get_mut(&id)
        {
            // Its place among the viewer's paths is free for a new one.
            v.addrs.retain(|a| *a != path);
        }
    }

    /// Offers a new viewer a session.
    pub fn join(
        &mut self,
        req: JoinRequest,
        now: Instant,
        out: &mut dyn Sink,
    ) -> Result<Joined, SfuError> {
        let broadcast = req.broadcast.id();
        let mut result = Err(SfuError::Rtc("internal error".into()));
        self.contained("a join", |e| result = e.offer(req, now, out));
        // A refused join (a bad WHEP offer, an unknown rendition) leaves no
        // stream behind for nobody to watch, nor its feeds running.
        if result.is_err()
            && self
                .streams
                .get(&broadcast)
                .is_some_and(|s| s.viewers.is_empty())
        {
            self.drop_stream(broadcast);
        }
        result
    }

    /// The viewer's SDP answer (from the network).
    pub fn answer(
        &mut self,
        id: ViewerId,
        sdp: &str,
        now: Instant,
        out: &mut dyn Sink,
    ) -> Result<(), SfuError> {
        let mut result = Err(SfuError::Rtc("internal error".into()));
        self.viewer_contained(id, "an answer", |e| {
            result = e.accept_answer(id, sdp, now, out);
        });
        result
    }

    /// The viewer's trickled candidates (WHEP `PATCH`), or with `restart`
    /// its new ICE credentials: the viewer's session takes them, and for a
    /// restart answers with new credentials of ours (returned). Media
    /// flows on the old path until the viewer's new checks succeed.
    pub fn ice(
        &mut self,
        id: ViewerId,
        restart: Option<IceCreds>,
        candidates: Vec<Candidate>,
    ) -> Result<Option<IceCreds>, SfuError> {
        let mut result = Err(SfuError::Rtc("internal error".into()));
        self.viewer_contained(id, "an ICE update", |e| {
            result = e.update_ice(id, restart, candidates);
        });
        result
    }

    fn update_ice(
        &mut self,
        id: ViewerId,
        restart: Option<IceCreds>,
        candidates: Vec<Candidate>,
    ) -> Result<Option<IceCreds>, SfuError> {
        let v = self.viewers.get_mut(&id).ok_or(SfuError::NoSession)?;
        let ours = restart.map(|remote| {
            let creds = new_credentials(self.index);
            let mut api = v.rtc.direct_api();
            api.set_local_ice_credentials(creds.clone());
            api.set_remote_ice_credentials(remote);
            self.by_ufrag.remove(&v.ufrag);
            self.ufrags.remove(&v.ufrag);
            v.ufrag = creds.ufrag.clone();
            self.by_ufrag.insert(v.ufrag.clone(), id);
            self.ufrags.insert(&v.ufrag, self.index);
            creds
        });
        for c in candidates {
            v.rtc.add_remote_candidate(c);
        }
        Ok(ours)
    }

    /// The viewer chose a rendition, or automatic.
    pub fn change(&mut self, id: ViewerId, choice: Choice, now: Instant) -> Result<(), SfuError> {
        let mut result = Err(SfuError::Rtc("internal error".into()));
        self.viewer_contained(id, "a change", |e| result = e.choose(id, choice, now));
        result
    }

    /// The viewer's signalling is gone: its session closes politely (RTCP
    /// BYE and DTLS close_notify go out first).
    pub fn leave(&mut self, id: ViewerId, now: Instant, out: &mut dyn Sink) {
        self.viewer_contained(id, "a leave", |e| {
            let (viewers, mut io) = e.io(out);
            if let Some(v) = viewers.get_mut(&id) {
                let _ = v.rtc.close();
                drive(id, v, &mut io, now);
            }
            e.forget(id);
        });
    }

    /// Closes every viewer (the server stops); polite, as [`leave`](Self::leave).
    pub fn close_all(&mut self, now: Instant, out: &mut dyn Sink) {
        let ids: Vec<ViewerId> = self.viewers.keys().copied().collect();
        for id in ids {
            self.viewer_contained(id, "closing", |e| {
                let (viewers, mut io) = e.io(out);
                if let Some(v) = viewers.get_mut(&id) {
                    let _ = v.rtc.close();
                    drive(id, v, &mut io, now);
                }
                e.remove(id, CloseReason::Shutdown);
            });
        }
    }

    /// Fault injection (tests and the fault run): a panic while handling
    /// `viewer`, or (None) outside any one viewer.
    pub fn inject_fault(&mut self, viewer: Option<ViewerId>) {
        match viewer {
            Some(id) => {
                self.viewer_contained(id, "an injected fault", |_| panic!("injected fault"))
            }
            None => self.contained("an injected fault", |_| panic!("injected fault")),
        }
    }

    fn offer(
        &mut self,
        req: JoinRequest,
        now: Instant,
        out: &mut dyn Sink,
    ) -> Result<Joined, SfuError> {
        if self.total.load(Ordering::Relaxed) >= self.config.max_viewers {
            return Err(SfuError::Full);
        }
        let broadcast_id = req.broadcast.id();
        let changes = &mut self.feed_changes;
        let stream = self.streams.entry(broadcast_id).or_insert_with(|| {
            changes.push(FeedChange::Start {
                broadcast: req.broadcast.clone(),
                plan: req.plan.clone(),
            });
            Stream {
                plan: req.plan.clone(),
                broadcast: req.broadcast.clone(),
                viewers: Vec::new(),
                gops: req.plan.renditions.iter().map(|_| Gop::default()).collect(),
            }
        });
        let renditions = &stream.plan.renditions;
        let (current, auto) = match &req.pinned {
            Some(name) => match renditions.iter().position(|r| &r.name == name) {
                Some(i) => (i, false),
                None => return Err(SfuError::UnknownRendition(name.clone())),
            },
            None => (
                start_rendition(renditions, self.config.start_bitrate_kbps),
                true,
            ),
        };

        let id = self.next_id;
        self.next_id = match self.next_id.checked_add(self.id_step) {
            Some(n) => n,
            None => self.id_step + id % self.id_step,
        };
        let creds = new_credentials(self.index);
        let ufrag = creds.ufrag.clone();
        // Bandwidth estimation (TWCC feedback, the delay estimator and the
        // pacer that releases packets at the estimated rate) costs a viewer
        // about half again its CPU (benches/README.md), so only a viewer
        // whose automatic ABR can act on it gets one.
        let estimating = auto && renditions.len() > 1;
        let template = if estimating {
            &self.templates.estimating
        } else {
            &self.templates.plain
        };
        let mut rtc = template.clone().set_local_ice_credentials(creds).build(now);
        let mut candidates = Vec::new();
        let rtc_error = |e: str0m::error::IceError| SfuError::Rtc(e.to_string());
        // UDP first (browsers prefer it by priority), then ICE-TCP; a viewer
        // that asked for TCP (`?transport=tcp`) gets TCP only.
        let tcp_only = req.tcp_only && !self.tcp_candidates.is_empty();
        if !tcp_only {
            for addr in self.candidates.iter() {
                let c = Candidate::host(*addr, "udp").map_err(rtc_error)?;
                candidates.push(c.to_sdp_string());
                rtc.add_local_candidate(c);
            }
        }
        for addr in self.tcp_candidates.iter() {
            let c = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(rtc_error)?;
            candidates.push(c.to_sdp_string());
            rtc.add_local_candidate(c);
        }
        let (sdp, pending, video_mid, audio_mid, video_pt, audio_pt) = match &req.offer {
            None => {
                let stream_id = format!("streamd-{broadcast_id}");
                let mut api = rtc.sdp_api();
                let video_mid = api.add_media(
                    MediaKind::Video,
                    Direction::SendOnly,
                    Some(stream_id.clone()),
                    Some("video".into()),
                    None,
                );
                let audio_mid = stream.plan.audio.is_some().then(|| {
                    api.add_media(
                        MediaKind::Audio,
                        Direction::SendOnly,
                        Some(stream_id.clone()),
                        Some("audio".into()),
                        None,
                    )
                });
                let (offer, pending) = api
                    .apply()
                    .ok_or_else(|| SfuError::Rtc("no offer to make".into()))?;
                (
                    offer.to_sdp_string(),
                    Some(pending),
                    video_mid,
                    audio_mid,
                    Pt::from(VIDEO_PT),
                    Pt::from(super::feed::OPUS_PT),
                )
            }
            Some(offer) => {
                let a = answer_offer(&mut rtc, offer, stream.plan.audio.is_some())?;
                (
                    a.sdp,
                    None,
                    a.video_mid,
                    a.audio_mid,
                    a.video_pt,
                    a.audio_pt,
                )
            }
        };
        let rendition = renditions[current].name.clone();
        stream.viewers.push(id);
        self.by_ufrag.insert(ufrag.clone(), id);
        self.ufrags.insert(&ufrag, self.index);
        let answered = pending.is_none();
        if answered && let Some(tx) = rtc.direct_api().stream_tx_by_mid(video_mid, None) {
            tx.set_rtx_cache(
                self.config.nack_buffer_packets,
                NACK_WINDOW,
                Some(RTX_RATIO_CAP),
            );
        }
        let mut viewer = Viewer {
            broadcast: broadcast_id,
            rtc,
            pending,
            connected: false,
            video_mid,
            audio_mid,
            video_pt,
            audio_pt,
            ufrag,
            addrs: Vec::new(),
            events: req.events,
            current,
            target: None,
            auto,
            need_keyframe: true,
            video_started: false,
            keyframe_wanted: false,
            video: RtpClock::new(rand::random(), 3000, 90_000),
            audio: RtpClock::new(rand::random(), 960, 48_000),
            created: now,
            last_stun: now,
            keyframe_budget: keyframe_budget(),
            abr: Abr::default(),
            scheduled: None,
        };
        let (_, mut io) = self.io(out);
        drive(id, &mut viewer, &mut io, now);
        self.viewers.insert(id, Box::new(viewer));
        self.total.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("streamd_webrtc_viewers").increment(1.0);
        tracing::debug!(viewer = id, %rendition, "webrtc viewer offered");
        Ok(Joined {
            viewer: id,
            sdp,
            candidates,
            mid: video_mid.to_string(),
            rendition,
            auto,
        })
    }

    fn accept_answer(
        &mut self,
        id: ViewerId,
        sdp: &str,
        now: Instant,
        out: &mut dyn Sink,
    ) -> Result<(), SfuError> {
        let v = self.viewers.get_mut(&id).ok_or(SfuError::NoSession)?;
        let pending = v.pending.take().ok_or(SfuError::AlreadyAnswered)?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()));
        let result = answer.and_then(|a| {
            v.rtc
                .sdp_api()
                .accept_answer(pending, a)
                .map_err(|e| SfuError::BadSdp(e.to_string()))
        });
        let result = result.and_then(|()| {
            let h264 = v
                .rtc
                .media(v.video_mid)
                .is_some_and(|m| m.remote_pts().contains(&Pt::from(VIDEO_PT)));
            if h264 { Ok(()) } else { Err(SfuError::NoH264) }
        });
        if let Err(e) = result {
            self.forget(id);
            return Err(e);
        }
        v.last_stun = now;
        if let Some(tx) = v.rtc.direct_api().stream_tx_by_mid(v.video_mid, None) {
            tx.set_rtx_cache(
                self.config.nack_buffer_packets,
                NACK_WINDOW,
                Some(RTX_RATIO_CAP),
            );
        }
        let (viewers, mut io) = self.io(out);
        if let Some(v) = viewers.get_mut(&id) {
            drive(id, v, &mut io, now);
        }
        Ok(())
    }

    fn choose(&mut self, id: ViewerId, choice: Choice, now: Instant) -> Result<(), SfuError> {
        let v = self.viewers.get_mut(&id).ok_or(SfuError::NoSession)?;
        let stream = self.streams.get(&v.broadcast).ok_or(SfuError::NoSession)?;
        let renditions = &stream.plan.renditions;
        match choice {
            Choice::Auto => {
                // A viewer that joined pinned (or on a stream of one
                // rendition) has no bandwidth estimate: it holds its
                // rendition, as a player's "auto" on such a stream would.
                v.auto = true;
                notify(
                    v,
                    ViewerEvent::RenditionChanged {
                        name: renditions[v.target.unwrap_or(v.current)].name.clone(),
                        auto: true,
                    },
                );
            }
            Choice::Rendition(name) => {
                let i = renditions
                    .iter()
                    .position(|r| r.name == name)
                    .ok_or(SfuError::UnknownRendition(name))?;
                v.auto = false;
                switch_to(v, i, renditions, &stream.broadcast, now);
            }
        }
        Ok(())
    }

    fn on_packet(
        &mut self,
        proto: Protocol,
        data: &[u8],
        src: SocketAddr,
        now: Instant,
        out: &mut dyn Sink,
    ) {
        let stun = data.first().is_some_and(|b| *b < 2);
        let id = if stun {
            StunMessage::parse(data)
                .ok()
                .and_then(|m| m.split_username().map(|(local, _)| local.to_owned()))
                .and_then(|local| self.by_ufrag.get(&local).copied())
        } else {
            self.by_addr.get(&(proto, src)).copied()
        };
        let Some(id) = id else { return };
        let candidates = match proto {
            Protocol::Tcp => &self.tcp_candidates,
            _ => &self.candidates,
        };
        let destination = crate::net::candidate_reached(candidates, src);
        let Ok(receive) = Receive::new(proto, src, destination, data) else {
            return;
        };
        let input = Input::Receive(now, receive);
        let Some(v) = self.viewers.get_mut(&id) else {
            return;
        };
        if !v.rtc.accepts(&input) {
            return;
        }
        if stun {
            v.last_stun = now;
            if !v.addrs.contains(&(proto, src)) && v.addrs.len() < MAX_ADDRS {
                v.addrs.push((proto, src));
                self.by_addr.insert((proto, src), id);
            }
        }
        self.viewer_contained(id, "a packet", |e| {
            let Some(v) = e.viewers.get_mut(&id) else {
                return;
            };
            if let Err(err) = v.rtc.handle_input(input) {
                tracing::debug!(viewer = id, error = %err, "webrtc input refused");
                e.remove(id, CloseReason::Error(err.to_string()));
                return;
            }
            let (viewers, mut io) = e.io(out);
            if let Some(v) = viewers.get_mut(&id) {
                drive(id, v, &mut io, now);
            }
            e.after_drive(id, now);
        });
    }

    fn on_media(&mut self, msg: FeedMsg, now: Instant, out: &mut dyn Sink) {
        let Some(stream) = self.streams.get_mut(&msg.broadcast) else {
            return;
        };
        let frame = match msg.kind {
            FeedMsgKind::Frame(f) => f,
            FeedMsgKind::Ended => {
                let ids = stream.viewers.clone();
                for id in ids {
                    self.remove(id, CloseReason::StreamEnded);
                }
                self.drop_stream(msg.broadcast);
                return;
            }
        };
        if let Some(gop) = stream.gops.get_mut(msg.feed) {
            gop.push(&frame);
        }
        let ids = stream.viewers.clone();
        for id in ids {
            self.viewer_contained(id, "media", |e| {
                e.media_to(id, msg.broadcast, msg.feed, &frame, now, out);
            });
        }
    }

    /// Writes one frame of `feed` to viewer `id` and sends what it makes.
    fn media_to(
        &mut self,
        id: ViewerId,
        broadcast: u64,
        feed: usize,
        frame: &RtpFrame,
        now: Instant,
        out: &mut dyn Sink,
    ) {
        let Some(stream) = self.streams.get(&broadcast) else {
            return;
        };
        let renditions = &stream.plan.renditions;
        // The feed after the renditions' is the audio.
        let audio_feed = renditions.len();
        let Self {
            viewers,
            timers,
            keyframe_skips,
            config,
            ..
        } = self;
        let Some(v) = viewers.get_mut(&id) else {
            return;
        };
        if !v.connected {
            return;
        }
        let wrote = if feed == audio_feed {
            write_audio(v, frame)
        } else {
            if v.target == Some(feed) && frame.keyframe {
                v.current = feed;
                v.target = None;
                v.need_keyframe = false;
                notify(
                    v,
                    ViewerEvent::RenditionChanged {
                        name: renditions[feed].name.clone(),
                        auto: v.auto,
                    },
                );
            }
            let start_kbps = config.start_bitrate_kbps;
            let gop = stream.gops.get(feed);
            if let Some(group) = joinable_group(v, feed, frame, gop, renditions.len(), start_kbps) {
                let mut io = Io { out, timers };
                start_from_group(id, v, group, frame, &mut io, now);
                self.after_drive(id, now);
                return;
            }
            write_video(v, feed, frame, keyframe_skips, now)
        };
        // A keyframe wanted (a group that stopped being usable) is asked
        // for now, not at the viewer's next timer.
        let wanted = v.keyframe_wanted;
        if wrote {
            let mut io = Io { out, timers };
            drive(id, v, &mut io, now);
        }
        if wrote || wanted {
            self.after_drive(id, now);
        }
    }

    /// Applies what `drive` left for the engine: keyframe requests go to
    /// the encoder; a dead Rtc is removed.
    fn after_drive(&mut self, id: ViewerId, now: Instant) {
        let Some(v) = self.viewers.get_mut(&id) else {
            return;
        };
        if !v.rtc.is_alive() {
            self.remove(id, CloseReason::Error("the connection closed".into()));
            return;
        }
        if v.keyframe_wanted
            && let Some(stream) = self.streams.get(&v.broadcast)
        {
            let r = v.target.unwrap_or(v.current);
            let budget = group_budget(
                v,
                stream.plan.renditions.len(),
                self.config.start_bitrate_kbps,
            );
            if !v.video_started
                && v.target.is_none()
                && stream.gops.get(r).is_some_and(|g| g.usable(budget))
            {
                // It starts from the group in progress with the next frame:
                // no keyframe of its own.
                v.keyframe_wanted = false;
            } else {
                request_keyframe(v, &stream.plan.renditions[r], &stream.broadcast, now);
            }
        }
    }

    fn fire_timers(&mut self, now: Instant, out: &mut dyn Sink) {
        // At most the timers there were on entry: a viewer still due after
        // its rounds (`drive`) is scheduled at `now` again and waits for the
        // next call, or a session that keeps asking for `now` (str0m's pacer
        // with a backlog did, on simulated time) would spin here for good.
        let mut left = self.timers.len();
        while left > 0
            && let Some(Reverse((t, id))) = self.timers.peek().copied()
        {
            if t > now {
                break;
            }
            left -= 1;
            self.timers.pop();
            let Some(v) = self.viewers.get_mut(&id) else {
                continue;
            };
            if v.scheduled != Some(t) {
                continue; // superseded by an earlier timer
            }
            v.scheduled = None;
            self.viewer_contained(id, "a timer", |e| {
                let (viewers, mut io) = e.io(out);
                let Some(v) = viewers.get_mut(&id) else {
                    return;
                };
                if v.rtc.handle_input(Input::Timeout(now)).is_err() {
                    e.remove(id, CloseReason::Error("timer failed".into()));
                    return;
                }
                drive(id, v, &mut io, now);
                e.after_drive(id, now);
            });
        }
    }

    fn check_viewers(&mut self, now: Instant, out: &mut dyn Sink) {
        let timeout = self.config.ice_timeout;
        let mut expired = Vec::new();
        let mut switches = Vec::new();
        for (id, v) in &mut self.viewers {
            if v.pending.is_some() && now.duration_since(v.created) > timeout {
                expired.push((*id, CloseReason::AnswerTimeout));
            } else if v.pending.is_none() && now.duration_since(v.last_stun) > timeout {
                expired.push((*id, CloseReason::IceTimeout));
            } else if v.auto
                && v.connected
                && let Some(stream) = self.streams.get(&v.broadcast)
            {
                let current = v.target.unwrap_or(v.current);
                if let Some(next) = v.abr.decide(&stream.plan.renditions, current, now) {
                    switches.push((*id, next));
                }
            }
        }
        for (id, reason) in expired {
            tracing::debug!(viewer = id, ?reason, "webrtc viewer timed out");
            self.remove(id, reason);
        }
        for (id, next) in switches {
            let Some(v) = self.viewers.get_mut(&id) else {
                continue;
            };
            let Some(stream) = self.streams.get(&v.broadcast) else {
                continue;
            };
            switch_to(v, next, &stream.plan.renditions, &stream.broadcast, now);
            let (min, max) = abr::probe_range(&stream.plan.renditions, next);
            v.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(min), Bitrate::bps(max));
            let (viewers, mut io) = self.io(out);
            if let Some(v) = viewers.get_mut(&id) {
                drive(id, v, &mut io, now);
            }
        }
        metrics::counter!("streamd_webrtc_keyframe_skips_total")
            .increment(std::mem::take(&mut self.keyframe_skips));
    }

    /// Closes a viewer's session and tells its signalling why.
    fn remove(&mut self, id: ViewerId, reason: CloseReason) {
        if let Some(v) = self.viewers.get(&id) {
            let _ = v.events.try_send(ViewerEvent::Closed(reason));
        }
        self.forget(id);
    }

    fn forget(&mut self, id: ViewerId) {
        let Some(mut v) = self.viewers.remove(&id) else {
            return;
        };
        v.rtc.disconnect();
        self.by_ufrag.remove(&v.ufrag);
        self.ufrags.remove(&v.ufrag);
        for a in &v.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        if let Some(s) = self.streams.get_mut(&v.broadcast) {
            s.viewers.retain(|x| *x != id);
            if s.viewers.is_empty() {
                self.drop_stream(v.broadcast);
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("streamd_webrtc_viewers").decrement(1.0);
    }
}

/// A panic's message, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Polls the viewer's Rtc until it has nothing more to do now: sends its
/// datagrams, handles its events, schedules its next timer.
fn drive(id: ViewerId, v: &mut Viewer, io: &mut Io<'_>, now: Instant) {
    // Writes only go out once time is fed again; bound the rounds so a
    // misbehaving state cannot spin.
    for _ in 0..4 {
        let next = loop {
            match v.rtc.poll_output() {
                Ok(Output::Transmit(t)) if t.proto == Protocol::Tcp => {
                    io.out.tcp(t.destination, &t.contents);
                }
                Ok(Output::Transmit(t)) => io.out.udp(t.destination, &t.contents),
                Ok(Output::Event(e)) => on_event(id, v, e, now),
                Ok(Output::Timeout(t)) => break Some(t),
                Err(e) => {
                    tracing::debug!(viewer = id, error = %e, "webrtc session failed");
                    v.rtc.disconnect();
                    break None;
                }
            }
        };
        let Some(next) = next else { return };
        if next > now {
            // A later deadline replaces an earlier one too: the session
            // no longer wants the earlier wake (a write moved its pacer and
            // estimator timers on), and the old heap entry is skipped when
            // it comes due (`fire_timers`). Keeping the earliest woke every
            // ABR viewer once a frame for nothing.
            if v.scheduled != Some(next) {
                v.scheduled = Some(next);
                io.timers.push(Reverse((next, id)));
            }
            return;
        }
        if v.rtc.handle_input(Input::Timeout(now)).is_err() {
            v.rtc.disconnect();
            return;
        }
    }
    // Still due: come back on the next loop turn.
    v.scheduled = Some(now);
    io.timers.push(Reverse((now, id)));
}

fn on_event(id: ViewerId, v: &mut Viewer, e: Event, _now: Instant) {
    match e {
        Event::Connected => {
            tracing::debug!(viewer = id, "webrtc viewer connected");
            v.connected = true;
            v.need_keyframe = true;
            v.keyframe_wanted = true;
        }
        Event::IceConnectionStateChange(s) => {
            tracing::debug!(viewer = id, state = ?s, "webrtc ice state");
        }
        Event::KeyframeRequest(r) if r.mid == v.video_mid => {
            v.keyframe_wanted = true;
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            v.abr.estimate = Some(estimate.as_u64());
        }
        _ => {}
    }
}

/// A viewer's keyframe requests: two at once (a join and a switch), then
/// one per [`KEYFRAME_REQUEST_INTERVAL`], however they are asked for.
fn keyframe_budget() -> TokenBucket {
    TokenBucket::new(2, KEYFRAME_REQUEST_INTERVAL)
}

/// Asks the rendition's track, upstream on the bus, for a keyframe if the
/// viewer's budget allows (the bus coalesces requests per track, and an
/// encoder spaces its answers). Switching renditions does not refill the
/// budget: a viewer cannot make every rung's encoder spend IDRs by switching
/// back and forth.
fn request_keyframe(v: &mut Viewer, r: &Rendition, broadcast: &BroadcastConsumer, now: Instant) {
    v.keyframe_wanted = false;
    if !v.keyframe_budget.take(now) {
        return;
    }
    broadcast.request_keyframe(&r.track);
}

/// Starts a switch to rendition `to`: it takes effect at that rendition's
/// next keyframe, which is requested now.
fn switch_to(
    v: &mut Viewer,
    to: usize,
    renditions: &[Rendition],
    broadcast: &BroadcastConsumer,
    now: Instant,
) {
    if to == v.current {
        v.target = None;
        notify(
            v,
            ViewerEvent::RenditionChanged {
                name: renditions[to].name.clone(),
                auto: v.auto,
            },
        );
        return;
    }
    v.target = Some(to);
    request_keyframe(v, &renditions[to], broadcast, now);
}

fn notify(v: &Viewer, e: ViewerEvent) {
    // A signalling socket that is this far behind misses a notification;
    // the media is unaffected.
    let _ = v.events.try_send(e);
}

/// The most bytes of a group viewer `v` can start from. A viewer that
/// estimates bandwidth has str0m's pacer, which releases packets at about
/// the estimate (at first, `start_kbps`): a group must drain in
/// [`PACED_GROUP`], well inside [`MAX_QUEUE_AGE`], or the live frames
/// behind it would find the queue backed up and the viewer would skip to
/// the next keyframe. Others are not paced: any group the core keeps.
fn group_budget(v: &Viewer, renditions: usize, start_kbps: u32) -> usize {
    if !(v.auto && renditions > 1) {
        return usize::MAX;
    }
    let bps = v.abr.estimate.unwrap_or(u64::from(start_kbps) * 1000);
    usize::try_from(bps * PACED_GROUP.as_millis() as u64 / 8000).unwrap_or(usize::MAX)
}

/// The group a viewer that has had no video yet starts from when `frame`
/// of rendition `feed` comes: the rendition's group in progress, if `frame`
/// is its newest, the viewer watches that rendition, and the group fits
/// the viewer's [`group_budget`].
fn joinable_group<'g>(
    v: &Viewer,
    feed: usize,
    frame: &RtpFrame,
    gop: Option<&'g Gop>,
    renditions: usize,
    start_kbps: u32,
) -> Option<&'g [Arc<RtpFrame>]> {
    if v.current != feed || !v.need_keyframe || v.video_started || frame.keyframe {
        return None;
    }
    let budget = group_budget(v, renditions, start_kbps);
    gop.filter(|g| g.usable(budget))?.ending_with(frame)
}

/// Starts viewer `id` from `group` (keyframe first, `newest` last): each
/// frame written with its timestamp pressed behind the newest's (see
/// [`catch_up`]) and sent before the next is written, so the send queue
/// never holds the group. Only the newest frame is kept for
/// retransmission: the older ones would double the retransmission cache a
/// viewer keeps for good (a lost one makes the player ask for a keyframe).
fn start_from_group(
    id: ViewerId,
    v: &mut Viewer,
    group: &[Arc<RtpFrame>],
    newest: &RtpFrame,
    io: &mut Io<'_>,
    now: Instant,
) {
    for (i, f) in group.iter().enumerate() {
        if !v.rtc.is_alive() {
            return;
        }
        let ts = v.video.map(burst_ts(newest.ts, i, group.len()), f.session);
        let last = i + 1 == group.len();
        {
            let mut api = v.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(v.video_mid, None) else {
                return;
            };
            if i == 0 {
                v.need_keyframe = false;
                v.video_started = true;
                metrics::counter!("streamd_webrtc_group_starts_total").increment(1);
            }
            let frame = VideoWrite {
                pt: v.video_pt,
                ts,
                wallclock: newest.wallclock,
                nackable: last,
            };
            frame.write(tx, &mut v.video, &f.payloads);
        }
        drive(id, v, io, now);
    }
}

/// Writes one video frame of rendition `feed`, if it is the viewer's.
fn write_video(
    v: &mut Viewer,
    feed: usize,
    frame: &RtpFrame,
    keyframe_skips: &mut u64,
    now: Instant,
) -> bool {
    if v.current != feed {
        return false;
    }
    let mut api = v.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(v.video_mid, None) else {
        return false;
    };
    let backed_up = tx
        .queue_info()
        .and_then(|q| q.first_unsent())
        .is_some_and(|t| now.saturating_duration_since(t) > MAX_QUEUE_AGE);
    if backed_up && !v.need_keyframe {
        v.need_keyframe = true;
        *keyframe_skips += 1;
    }
    if v.need_keyframe {
        if !frame.keyframe || backed_up {
            if !backed_up {
                v.keyframe_wanted = true;
            }
            return false;
        }
        v.need_keyframe = false;
    }
    v.video_started = true;
    let ts = v.video.map(frame.ts, frame.session);
    VideoWrite {
        pt: v.video_pt,
        ts,
        wallclock: frame.wallclock,
        nackable: true,
    }
    .write(tx, &mut v.video, &frame.payloads);
    true
}

/// How one video frame goes out to a viewer.
struct VideoWrite {
    pt: Pt,
    /// On the viewer's timeline.
    ts: u32,
    wallclock: Instant,
    /// Kept for retransmission.
    nackable: bool,
}

impl VideoWrite {
    /// Writes `payloads` (the frame's packets) on `clock`'s sequence.
    fn write(&self, tx: &mut StreamTx, clock: &mut RtpClock, payloads: &[Payload]) {
        for p in payloads {
            let seq = clock.next_seq();
            tx.write_rtp(
                RtpWrite::new(self.pt, seq.into(), self.ts, self.wallclock, p.data.clone())
                    .marker(p.marker)
                    .nackable(self.nackable),
            );
        }
    }
}

fn write_audio(v: &mut Viewer, frame: &RtpFrame) -> bool {
    let Some(mid) = v.audio_mid else {
        return false;
    };
    let ts = v.audio.map(frame.ts, frame.session);
    let mut api = v.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
        return false;
    };
    for p in &frame.payloads {
        let seq = v.audio.next_seq();
        tx.write_rtp(
            RtpWrite::new(v.audio_pt, seq.into(), ts, frame.wallclock, p.data.clone())
                .marker(p.marker),
        );
    }
    true
}

/// What answering a viewer's offer set up.
struct Answered {
    sdp: String,
    video_mid: Mid,
    audio_mid: Option<Mid>,
    video_pt: Pt,
    audio_pt: Pt,
}

/// Answers a viewer's own offer (WHEP): its first m-line that receives
/// H.264 video, and one that receives Opus when the stream has audio, with
/// the payload types it chose. An offer without H.264 video is refused.
fn answer_offer(rtc: &mut Rtc, offer: &str, with_audio: bool) -> Result<Answered, SfuError> {
    let offer = SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| SfuError::BadSdp(e.to_string()))?;
    let sdp = answer.to_sdp_string();
    let pt_of = |rtc: &Rtc, mid: Mid, codec: Codec| {
        let m = rtc.media(mid)?;
        rtc.codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == codec && m.remote_pts().contains(&p.pt()))
            .map(|p| p.pt())
    };
    let (mut video, mut audio) = (None, None);
    for mid in sdp.lines().filter_map(|l| l.strip_prefix("a=mid:")) {
        let mid = Mid::from(mid.trim());
        let Some(m) = rtc.media(mid) else { continue };
        if !m.direction().is_sending() || m.disabled() {
            continue;
        }
        match m.kind() {
            MediaKind::Video if video.is_none() => {
                video = pt_of(rtc, mid, Codec::H264).map(|pt| (mid, pt));
            }
            MediaKind::Audio if audio.is_none() && with_audio => {
                audio = pt_of(rtc, mid, Codec::Opus).map(|pt| (mid, pt));
            }
            _ => {}
        }
    }
    let (video_mid, video_pt) = video.ok_or(SfuError::NoH264)?;
    Ok(Answered {
        sdp,
        video_mid,
        audio_mid: audio.map(|a| a.0),
        video_pt,
        audio_pt: audio.map_or(Pt::from(super::feed::OPUS_PT), |a| a.1),
    })
}

#[cfg(test)]
mod scenario;
