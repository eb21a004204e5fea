//! Scenarios of the core on simulated time: a str0m client `Rtc` as the
//! viewer, datagrams passed by hand between it and the core, and a clock
//! that moves only when the test moves it. Nothing here binds a socket,
//! spawns a task or sleeps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc;

use super::*;
use crate::bus::{Registry, Retention, StreamPath, TrackInfo, TrackKind, TrackProducer};
use crate::webrtc::feed::{FeedMsg, FeedMsgKind, RtpFrame};
use crate::webrtc::packetize::Payload;

const SERVER: &str = "127.0.0.1:5000";
const CLIENT: &str = "127.0.0.1:6000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// What the core sent, by destination.
#[derive(Default)]
struct Captured(Vec<(Protocol, SocketAddr, Vec<u8>)>);

impl Sink for Captured {
    fn udp(&mut self, to: SocketAddr, data: &[u8]) {
        self.0.push((Protocol::Udp, to, data.to_vec()));
    }
    fn tcp(&mut self, to: SocketAddr, data: &[u8]) {
        self.0.push((Protocol::Tcp, to, data.to_vec()));
    }
}

/// A core with one stream (one rendition, `source`, on the bus track
/// `video`) and one viewer, its str0m client, and the clock.
struct Scene {
    core: SfuCore,
    out: Captured,
    client: Rtc,
    now: Instant,
    viewer: ViewerId,
    broadcast: u64,
    events: mpsc::Receiver<ViewerEvent>,
    /// The publisher's video track: keyframe requests arrive here.
    video: TrackProducer,
    connected: bool,
    /// RTP the client received: (payload type, payload).
    received: Vec<(u8, Vec<u8>)>,
    _registry: Registry,
}

impl Scene {
    fn new() -> Scene {
        let registry = Registry::new(Duration::ZERO, Retention::default());
        let mut b = registry
            .publish(StreamPath::new("live", "scene").unwrap())
            .unwrap();
        let video = b.track(TrackInfo::source("video", TrackKind::Video));
        let broadcast = b.consumer();
        std::mem::forget(b); // the publisher stays for the scene's life
        let plan = StreamPlan {
            renditions: vec![Rendition {
                name: "source".into(),
                track: "video".into(),
                bitrate: 0,
                width: 0,
                height: 0,
            }],
            audio: None,
        };
        let config = WebRtcConfig::default();
        let templates = Templates::new(&config).unwrap();
        let mut core = SfuCore::new(
            config,
            templates,
            vec![addr(SERVER)],
            Arc::new(Vec::new()),
            0,
            1,
            Shared::default(),
        );
        let now = Instant::now();
        let mut out = Captured::default();
        let (events_tx, events) = mpsc::channel(VIEWER_EVENTS);
        let id = broadcast.id();
        let joined = core
            .join(
                JoinRequest {
                    broadcast,
                    plan,
                    pinned: None,
                    tcp_only: false,
                    events: events_tx,
                },
                now,
                &mut out,
            )
            .unwrap();
        let changes = core.take_feed_changes();
        assert!(
            matches!(changes[..], [FeedChange::Start { .. }]),
            "the first viewer starts the stream's feeds"
        );
        let mut client = Rtc::builder().set_rtp_mode(true).build(now);
        client.add_local_candidate(Candidate::host(addr(CLIENT), "udp").unwrap());
        let answer = client
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&joined.sdp).unwrap())
            .unwrap();
        core.answer(joined.viewer, &answer.to_sdp_string(), now, &mut out)
            .unwrap();
        Scene {
            core,
            out,
            client,
            now,
            viewer: joined.viewer,
            broadcast: id,
            events,
            video,
            connected: false,
            received: Vec::new(),
            _registry: registry,
        }
    }

    /// Polls the client until it waits for time: its datagrams go to
    /// the core, its events are noted. Whether it sent anything. (A str0m
    /// client in RTP mode holds one received packet until polled, so it is
    /// polled after every datagram it is given.)
    fn drain_client(&mut self) -> bool {
        let mut sent = false;
        loop {
            match self.client.poll_output().unwrap() {
                Output::Transmit(t) => {
                    sent = true;
                    assert_eq!(t.destination, addr(SERVER));
                    self.core.handle_datagram(
                        Protocol::Udp,
                        &t.contents,
                        addr(CLIENT),
                        self.now,
                        &mut self.out,
                    );
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::RtpPacket(p)) => {
                    self.received
                        .push((*p.header.payload_type, p.payload.to_vec()));
                }
                Output::Event(_) => {}
                Output::Timeout(_) => return sent,
            }
        }
    }

    /// Passes datagrams both ways until neither side has more, then moves
    /// the clock by `step` and fires both sides' timers. With `answering`
    /// false the client is gone: nothing reaches it or comes from it.
    fn tick(&mut self, step: Duration, answering: bool) {
        for _ in 0..16 {
            let mut moved = answering && self.drain_client();
            for (proto, to, data) in std::mem::take(&mut self.out.0) {
                assert_eq!((proto, to), (Protocol::Udp, addr(CLIENT)));
                if !answering {
                    continue;
                }
                moved = true;
                let r = Receive::new(Protocol::Udp, addr(SERVER), addr(CLIENT), &data).unwrap();
                self.client
                    .handle_input(Input::Receive(self.now, r))
                    .unwrap();
                self.drain_client();
            }
            if !moved {
                break;
            }
        }
        self.now += step;
        if answering {
            self.client.handle_input(Input::Timeout(self.now)).unwrap();
        }
        self.core.handle_timeout(self.now, &mut self.out);
    }

    /// Ticks for `span` in steps of 10 ms, with housekeeping every second.
    fn run(&mut self, span: Duration, answering: bool) {
        let step = Duration::from_millis(10);
        let steps = span.as_millis() / step.as_millis();
        for k in 1..=steps {
            self.tick(step, answering);
            if k % 100 == 0 {
                self.core.housekeeping(self.now, &mut self.out);
            }
        }
    }

    fn media(&mut self, ts: i64, keyframe: bool, payload: &[u8]) {
        let frame = RtpFrame {
            ts,
            wallclock: self.now,
            keyframe,
            session: 0,
            payloads: vec![Payload {
                data: payload.into(),
                marker: true,
            }],
        };
        let msg = FeedMsg {
            broadcast: self.broadcast,
            feed: 0,
            kind: FeedMsgKind::Frame(Arc::new(frame)),
        };
        self.core.handle_media(msg, self.now, &mut self.out);
    }

    fn video_payloads(&self) -> Vec<Vec<u8>> {
        self.received
            .iter()
            .filter(|(pt, _)| *pt == super::offer::VIDEO_PT)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

#[test]
fn a_viewer_connects_asks_for_a_keyframe_and_starts_at_one() {
    let mut s = Scene::new();
    assert!(!s.video.keyframe_requested());
    s.run(Duration::from_millis(500), true);
    assert!(s.connected, "ICE and DTLS complete on simulated time");
    assert!(
        s.video.keyframe_requested(),
        "joining asks the publisher's track for a keyframe, upstream on the bus"
    );
    // A frame that is not a keyframe is not the viewer's first.
    s.media(0, false, b"delta");
    s.run(Duration::from_millis(50), true);
    assert!(s.video_payloads().is_empty(), "{:?}", s.received);
    s.media(3000, true, b"key");
    s.media(6000, false, b"next");
    s.run(Duration::from_millis(50), true);
    assert_eq!(s.video_payloads(), [b"key".to_vec(), b"next".to_vec()]);
}

#[test]
fn a_viewer_that_stops_answering_is_dropped_and_its_feeds_stop() {
    let mut s = Scene::new();
    s.run(Duration::from_millis(500), true);
    assert!(s.connected);
    let timeout = WebRtcConfig::default().ice_timeout;
    // Silent for just under the timeout: still there.
    s.run(timeout - Duration::from_secs(1), false);
    assert_eq!(s.core.viewers(), 1);
    assert!(s.events.try_recv().is_err());
    s.run(Duration::from_secs(2), false);
    assert_eq!(s.core.viewers(), 0);
    assert_eq!(
        s.events.try_recv().unwrap(),
        ViewerEvent::Closed(CloseReason::IceTimeout)
    );
    let changes = s.core.take_feed_changes();
    assert!(
        matches!(changes[..], [FeedChange::Stop(id)] if id == s.broadcast),
        "the last viewer gone stops the stream's feeds"
    );
}

#[test]
fn garbage_from_a_connected_viewers_address_changes_nothing() {
    let mut s = Scene::new();
    s.run(Duration::from_millis(500), true);
    assert!(s.connected);
    let mut seed = 7u64;
    for n in 0..2000usize {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = n % 1400;
        let mut data: Vec<u8> = (0..len)
            .map(|i| (seed >> ((i % 8) * 8)) as u8 ^ i as u8)
            .collect();
        // Every demultiplexing class: STUN, DTLS, RTP/RTCP.
        if let Some(b) = data.first_mut() {
            *b = [0u8, 1, 20, 22, 23, 128, 129, 200][n % 8];
        }
        s.core
            .handle_datagram(Protocol::Udp, &data, addr(CLIENT), s.now, &mut s.out);
    }
    s.run(Duration::from_millis(100), true);
    assert_eq!(s.core.viewers(), 1, "the viewer survives");
    assert!(s.events.try_recv().is_err(), "and was not closed");
    s.media(0, true, b"key");
    s.run(Duration::from_millis(50), true);
    assert_eq!(s.video_payloads(), [b"key".to_vec()], "and still plays");
}

#[test]
fn a_viewer_that_leaves_is_forgotten_at_once() {
    let mut s = Scene::new();
    s.run(Duration::from_millis(500), true);
    assert!(s.connected);
    s.core.leave(s.viewer, s.now, &mut s.out);
    assert!(
        !s.out.0.is_empty(),
        "the close (DTLS close_notify) goes out before the session is dropped"
    );
    assert_eq!(s.core.viewers(), 0);
    assert!(matches!(
        s.core.take_feed_changes()[..],
        [FeedChange::Stop(_)]
    ));
    // What the client still sends reaches nobody.
    s.run(Duration::from_millis(200), true);
    assert_eq!(s.core.viewers(), 0);
}
