//! The SFU core's own cost per viewer, with no socket, kernel or load
//! generator in the figure: N viewers join one core, connect (ICE, DTLS and
//! SRTP with str0m clients, datagrams passed in memory) and are fed one
//! 600 kbps rendition for some seconds of a simulated clock.
//!
//! Reported per viewer, counting only what happens inside the core's calls:
//! - heap bytes the core holds (a counting allocator, switched on around
//!   each call into the core; what the test's sink copies is not counted),
//!   after the join and after the media;
//! - core CPU (the thread's CPU clock around each call) per viewer-second
//!   of media, and the viewers per core that makes.
//!
//! Both are set against the targets (50 KB and 2,000 viewers per
//! core), the baseline of this component; Janus, side by side, is in
//! `webrtc_load`, which measures the whole server.
//!
//! Clients decrypt nothing once connected: media datagrams are counted
//! from their RTP headers (in the clear in SRTP) and dropped, while STUN,
//! DTLS and RTCP still reach them, so consent checks keep sessions alive.
//!
//! `cargo bench --bench webrtc_core` runs 100, 500, 1,000 and 2,000 viewers
//! for 5 s each (`WEBRTC_CORE_STEPS=100,200` for other counts,
//! `WEBRTC_CORE_SECONDS=20` for longer, `WEBRTC_CORE_NACK_BUFFER=128` for
//! another `webrtc.nack_buffer_packets`, `WEBRTC_CORE_PREROLL=45` to have
//! the viewers join 45 frames into a group and start from it,
//! `WEBRTC_CORE_ABR=1` to add a 200 kbps rendition and put every viewer on
//! automatic ABR, with str0m's estimator and pacer). Run by `cargo
//! test` (no `--bench`), it is a smoke run: 4 viewers, 1 s, checked and not
//! reported.

#[path = "common/proc.rs"]
mod proc;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use proc::thread_cpu;

use str0m::change::SdpOffer;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use streamd::bus::{Registry, Retention, StreamPath, TrackInfo, TrackKind};
use streamd::config::WebRtcConfig;
use streamd::webrtc::feed::{FeedMsg, FeedMsgKind, RtpFrame};
use streamd::webrtc::packetize::Payload;
use streamd::webrtc::sfu_core::{
    EventReceiver, JoinRequest, SfuCore, Shared, Sink, Templates, viewer_events,
};
use streamd::webrtc::{Rendition, StreamPlan};

/// Counts heap bytes allocated less freed while `IN_CORE` is set.
struct Counting;
static LIVE: AtomicI64 = AtomicI64::new(0);
thread_local!(static IN_CORE: Cell<bool> = const { Cell::new(false) });

fn counting() -> bool {
    IN_CORE.try_with(Cell::get).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if counting() {
            LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if counting() {
            LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if counting() {
            LIVE.fetch_add(n as i64 - l.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The core, the sink it writes to, and the CPU spent in its calls.
struct Core {
    core: SfuCore,
    out: Captured,
    cpu: Duration,
}

impl Core {
    /// Runs `f` on the core, counted.
    fn call<R>(&mut self, f: impl FnOnce(&mut SfuCore, &mut Captured) -> R) -> R {
        IN_CORE.with(|c| c.set(true));
        let t = thread_cpu();
        let r = f(&mut self.core, &mut self.out);
        self.cpu += thread_cpu() - t;
        IN_CORE.with(|c| c.set(false));
        r
    }
}

#[derive(Default)]
struct Captured(Vec<(SocketAddr, Vec<u8>)>);

impl Sink for Captured {
    fn udp(&mut self, to: SocketAddr, data: &[u8]) {
        let was = IN_CORE.with(|c| c.replace(false));
        self.0.push((to, data.to_vec()));
        IN_CORE.with(|c| c.set(was));
    }
    fn tcp(&mut self, _to: SocketAddr, _data: &[u8]) {}
}

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    connected: bool,
    media_packets: u64,
    _events: EventReceiver,
}

const SERVER: &str = "10.0.0.1:5000";
const VIDEO_PT: u8 = 102;

struct Figures {
    viewers: usize,
    connected: usize,
    join_bytes: f64,
    bytes: f64,
    cpu_per_viewer_second: f64,
    delivered: f64,
    /// Core CPU per viewer for its offer and answer.
    join_cpu: Duration,
    /// ... and up to its connection (ICE, DTLS, SRTP keys) too.
    connect_cpu: Duration,
}

fn run(viewers: usize, seconds: u64) -> Figures {
    let server: SocketAddr = SERVER.parse().unwrap();
    let registry = Registry::new(Duration::ZERO, Retention::default());
    let mut publisher = registry
        .publish(StreamPath::new("live", "bench").unwrap())
        .unwrap();
    let _video = publisher.track(TrackInfo::source("video", TrackKind::Video));
    let broadcast = publisher.consumer();
    let abr = abr();
    let mut plan = StreamPlan {
        renditions: vec![Rendition {
            name: "source".into(),
            track: "video".into(),
            bitrate: 600_000,
            width: 640,
            height: 360,
        }],
        audio: None,
    };
    // WEBRTC_CORE_ABR=1: a second, smaller rendition, so every viewer is
    // on automatic ABR with str0m's bandwidth estimation and pacer.
    if abr {
        plan.renditions.push(Rendition {
            name: "low".into(),
            track: "video_low".into(),
            bitrate: 200_000,
            width: 320,
            height: 180,
        });
    }
    let mut config = WebRtcConfig {
        max_viewers: viewers + 1,
        ..WebRtcConfig::default()
    };
    if let Some(n) = env("WEBRTC_CORE_NACK_BUFFER") {
        config.nack_buffer_packets = n as usize;
    }
    let templates = Templates::new(&config).unwrap();
    let mut core = Core {
        core: SfuCore::new(
            config,
            templates,
            vec![server],
            Arc::new(Vec::new()),
            0,
            1,
            Shared::default(),
        ),
        out: Captured::default(),
        cpu: Duration::ZERO,
    };
    let mut now = Instant::now();
    let start = LIVE.load(Ordering::Relaxed);
    let mut clients: Vec<Client> = Vec::with_capacity(viewers);
    for k in 0..viewers {
        let (tx, rx) = viewer_events();
        let request = JoinRequest {
            broadcast: broadcast.clone(),
            plan: plan.clone(),
            pinned: None,
            tcp_only: false,
            events: tx,
            offer: None,
        };
        let joined = core.call(|c, out| c.join(request, now, out)).unwrap();
        let addr = SocketAddr::from(([10, 1, (k >> 8) as u8, k as u8], 6000));
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let answer = rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&joined.sdp).unwrap())
            .unwrap();
        let sdp = answer.to_sdp_string();
        core.call(|c, out| c.answer(joined.viewer, &sdp, now, out))
            .unwrap();
        clients.push(Client {
            rtc,
            addr,
            connected: false,
            media_packets: 0,
            _events: rx,
        });
    }
    let join_bytes = (LIVE.load(Ordering::Relaxed) - start) as f64 / viewers as f64;
    let join_cpu = core.cpu;
    let _ = core.core.take_feed_changes();
    let by_addr: std::collections::HashMap<SocketAddr, usize> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.addr, i))
        .collect();

    // Media: 30 fps, two packets of 1,250 B a frame (600 kbps), a
    // keyframe every 60. WEBRTC_CORE_PREROLL=N: the stream's first N frames
    // come before the viewers connect, so they join N frames into a group
    // and start from it (the core's catch-up).
    let full: Arc<[u8]> = vec![0x41u8; 1250].into();
    // The small rendition: one 800 B packet a frame.
    let small: Arc<[u8]> = vec![0x41u8; 800].into();
    // Frame n of rendition `feed`, made of these packets.
    let feed_frame = |feed: usize, n: u64, now: Instant, packets: &[&Arc<[u8]>]| FeedMsg {
        broadcast: broadcast.id(),
        feed,
        kind: FeedMsgKind::Frame(Arc::new(RtpFrame {
            ts: n as i64 * 3000,
            wallclock: now,
            keyframe: n.is_multiple_of(60),
            session: 0,
            payloads: packets
                .iter()
                .enumerate()
                .map(|(i, data)| Payload {
                    data: Arc::clone(data),
                    marker: i + 1 == packets.len(),
                })
                .collect(),
        })),
    };
    let frame = |n: u64, now: Instant| feed_frame(0, n, now, &[&full, &full]);
    let frame_low = |n: u64, now: Instant| feed_frame(1, n, now, &[&small]);
    let preroll = env("WEBRTC_CORE_PREROLL").unwrap_or(0);
    for n in 0..preroll {
        let msg = frame(n, now);
        core.call(|c, out| c.handle_media(msg, now, out));
    }
    let step = Duration::from_millis(10);
    // Connect: a second of exchanges.
    for _ in 0..100 {
        pump(&mut core, &mut clients, &by_addr, server, now);
        now += step;
        tick(&mut core, &mut clients, now);
    }
    let connected = clients.iter().filter(|c| c.connected).count();
    // The joins (offer and answer) and the connects (ICE, DTLS, SRTP).
    let connect_cpu = core.cpu;
    let frames = seconds * 30;
    for n in preroll..preroll + frames {
        let msg = frame(n, now);
        core.call(|c, out| c.handle_media(msg, now, out));
        if abr {
            let msg = frame_low(n, now);
            core.call(|c, out| c.handle_media(msg, now, out));
        }
        // 33 ms a frame, in steps of 11 ms.
        for _ in 0..3 {
            pump(&mut core, &mut clients, &by_addr, server, now);
            now += Duration::from_millis(11);
            tick(&mut core, &mut clients, now);
        }
        if n % 30 == 29 {
            core.call(|c, out| c.housekeeping(now, out));
        }
    }
    pump(&mut core, &mut clients, &by_addr, server, now);
    let media_cpu = core.cpu - connect_cpu;
    let bytes = (LIVE.load(Ordering::Relaxed) - start) as f64 / viewers as f64;
    let received: u64 = clients.iter().map(|c| c.media_packets).sum();
    let expected = (frames * 2) as f64 * connected as f64;
    drop(publisher);
    Figures {
        viewers,
        connected,
        join_bytes,
        bytes,
        cpu_per_viewer_second: media_cpu.as_secs_f64() / (viewers as f64 * seconds as f64),
        join_cpu: join_cpu / viewers as u32,
        connect_cpu: connect_cpu / viewers as u32,
        delivered: received as f64 / expected.max(1.0),
    }
}

/// Passes datagrams both ways until neither side has more.
fn pump(
    core: &mut Core,
    clients: &mut [Client],
    by_addr: &std::collections::HashMap<SocketAddr, usize>,
    server: SocketAddr,
    now: Instant,
) {
    for _ in 0..8 {
        let mut moved = false;
        for c in clients.iter_mut() {
            moved |= drain(core, c, now);
        }
        for (to, data) in std::mem::take(&mut core.out.0) {
            let Some(&i) = by_addr.get(&to) else { continue };
            let c = &mut clients[i];
            // Media: counted from the RTP header and dropped.
            if data.len() >= 12 && data[0] >> 6 == 2 && data[1] & 0x7f == VIDEO_PT {
                c.media_packets += 1;
                continue;
            }
            moved = true;
            if let Ok(r) = Receive::new(Protocol::Udp, server, c.addr, &data) {
                let _ = c.rtc.handle_input(Input::Receive(now, r));
            }
            drain(core, c, now);
        }
        if !moved {
            return;
        }
    }
}

/// Polls a client until it waits for time; its datagrams go to the core.
fn drain(core: &mut Core, c: &mut Client, now: Instant) -> bool {
    let mut sent = false;
    loop {
        match c.rtc.poll_output() {
            Ok(Output::Transmit(t)) => {
                sent = true;
                let src = c.addr;
                core.call(|k, out| k.handle_datagram(Protocol::Udp, &t.contents, src, now, out));
            }
            Ok(Output::Event(Event::Connected)) => c.connected = true,
            Ok(Output::Event(_)) => {}
            Ok(Output::Timeout(_)) | Err(_) => return sent,
        }
    }
}

fn tick(core: &mut Core, clients: &mut [Client], now: Instant) {
    for c in clients.iter_mut() {
        let _ = c.rtc.handle_input(Input::Timeout(now));
    }
    core.call(|k, out| k.handle_timeout(now, out));
}

/// Viewers on automatic ABR (`WEBRTC_CORE_ABR=1`).
fn abr() -> bool {
    env("WEBRTC_CORE_ABR") == Some(1)
}

/// A number from the environment.
fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        let f = run(4, 1);
        assert_eq!(f.connected, 4, "every viewer connects on simulated time");
        assert!(
            f.delivered > 0.95,
            "delivered {:.3} of the media",
            f.delivered
        );
        assert!(f.bytes > 0.0 && f.cpu_per_viewer_second > 0.0);
        println!("smoke run: figures not reported (cargo bench --bench webrtc_core measures)");
        return;
    }
    let steps: Vec<usize> = std::env::var("WEBRTC_CORE_STEPS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 500, 1000, 2000]);
    let seconds = env("WEBRTC_CORE_SECONDS").unwrap_or(5);
    println!(
        "SFU core, {}, {seconds} s of simulated media per step, \
         NACK buffer {} packets",
        if abr() {
            "600 and 200 kbps renditions, every viewer on automatic ABR"
        } else {
            "one 600 kbps rendition"
        },
        env("WEBRTC_CORE_NACK_BUFFER")
            .unwrap_or(WebRtcConfig::default().nack_buffer_packets as u64)
    );
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>10} {:>14} {:>12} {:>10} {:>18}",
        "viewers",
        "connected",
        "KB/viewer",
        "(at join)",
        "x target",
        "CPU µs/v-s",
        "viewers/core",
        "x target",
        "join/connect µs"
    );
    for n in steps {
        let f = run(n, seconds);
        if f.connected != f.viewers || f.delivered < 0.95 {
            println!(
                "{:>8}: run failed ({} of {} connected, {:.1}% delivered); no figures",
                n,
                f.connected,
                f.viewers,
                f.delivered * 100.0
            );
            continue;
        }
        let per_core = 1.0 / f.cpu_per_viewer_second;
        println!(
            "{:>8} {:>10} {:>12.1} {:>12.1} {:>10.2} {:>14.0} {:>12.0} {:>10.2} {:>18}",
            f.viewers,
            f.connected,
            f.bytes / 1000.0,
            f.join_bytes / 1000.0,
            f.bytes / 50_000.0,
            f.cpu_per_viewer_second * 1e6,
            per_core,
            per_core / 2000.0,
            format!("{} / {}", f.join_cpu.as_micros(), f.connect_cpu.as_micros())
        );
    }
}
