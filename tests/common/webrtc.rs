//! A WebRTC viewer for tests and the load tool: str0m as a client (full
//! ICE, DTLS, SRTP, as a browser does them), speaking OME's signalling over
//! a real WebSocket, on its own loopback UDP socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use str0m::change::SdpOffer;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the viewer saw.
#[derive(Debug, Clone)]
pub enum ViewerEvent {
    /// ICE and DTLS are up.
    Connected,
    /// ICE's state changed (`Checking`, `Connected`, `Disconnected`...).
    Ice(String),
    /// A depacketised video frame (Annex B), or, in RTP mode, one packet.
    Video {
        data: Vec<u8>,
        keyframe: bool,
        rtp_time: u64,
        at: Instant,
        /// No RTP packet is missing between this frame and the one before
        /// (str0m's depacketiser: a loss not repaired in time breaks it).
        contiguous: bool,
    },
    Audio {
        data: Vec<u8>,
        rtp_time: u64,
    },
    /// An RTP packet (RTP mode only): sequence number and payload size.
    Rtp {
        video: bool,
        seq: u64,
        bytes: usize,
        marker: bool,
    },
    /// A signalling message from the server.
    Signal(Value),
    /// The server closed the signalling socket.
    Closed,
}

pub struct Viewer {
    /// OME signalling's socket; none for a WHEP viewer.
    ws: Option<Ws>,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pub id: i64,
    pub offer: Value,
    video_mid: Option<Mid>,
    buf: Vec<u8>,
    ws_open: bool,
    /// A WHEP viewer's last answer and the session's entity-tag.
    whep: Option<(String, String)>,
}

/// The error the server answered `request_offer` with.
#[derive(Debug)]
pub struct Refused(pub Value);

impl Viewer {
    /// Connects to `url`, asks for an offer and answers it. `rtp_mode`
    /// skips depacketising (the load tool counts packets instead).
    pub async fn connect(url: &str, rtp_mode: bool) -> Result<Viewer, Refused> {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self::connect_on(url, rtp_mode, socket).await
    }

    /// As `connect`, with media on `socket` (bound where the viewer is,
    /// say inside another network namespace); signalling goes to `url`.
    pub async fn connect_on(
        url: &str,
        rtp_mode: bool,
        socket: UdpSocket,
    ) -> Result<Viewer, Refused> {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("signalling socket connects");
        send(&mut ws, json!({"command": "request_offer"})).await;
        let offer = next_json(&mut ws).await.ok_or(Refused(Value::Null))?;
        if offer.get("error").is_some() {
            return Err(Refused(offer));
        }
        assert_eq!(offer["command"], "offer", "{offer}");
        let id = offer["id"].as_i64().expect("offer id");
        let sdp = offer["sdp"]["sdp"].as_str().expect("offer sdp");
        let local = socket.local_addr().unwrap();
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .set_rtp_mode(rtp_mode)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let answer = rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(sdp).expect("offer parses"))
            .expect("offer accepted");
        send(
            &mut ws,
            json!({"command": "answer", "id": id, "peer_id": 0,
                   "sdp": {"type": "answer", "sdp": answer.to_sdp_string()}}),
        )
        .await;
        // Trickle our candidate as a browser would (the server ignores it).
        send(
            &mut ws,
            json!({"command": "candidate", "id": id, "peer_id": 0,
                   "candidates": [{"candidate": Candidate::host(local, "udp").unwrap().to_sdp_string(),
                                   "sdpMLineIndex": 0}]}),
        )
        .await;
        Ok(Viewer {
            ws: Some(ws),
            rtc,
            socket,
            local,
            id,
            offer,
            video_mid: None,
            buf: vec![0; 2048],
            ws_open: true,
            whep: None,
        })
    }

    /// A WHEP viewer: offers receive-only H.264 video and Opus audio to
    /// `url` (with `bearer`, a playback token), and takes the answer. The
    /// server's response is the error when it is not 201 Created.
    pub async fn whep(
        url: &str,
        bearer: Option<&str>,
    ) -> Result<(Viewer, String), super::Response> {
        use str0m::media::Direction;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let video_mid = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let auth = bearer.map(|b| format!("Bearer {b}"));
        let mut headers = vec![("content-type", "application/sdp")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let mut r = super::request_with("POST", url, &headers, offer.to_sdp_string()).await;
        // A cluster node may send the client to the node that has the
        // stream: a 307, after which the offer is posted again there.
        if r.status == 307 {
            let there = r
                .header("location")
                .expect("a redirect's Location")
                .to_owned();
            r = super::request_with("POST", &there, &headers, offer.to_sdp_string()).await;
        }
        if r.status != 201 {
            return Err(r);
        }
        let location = r.header("location").expect("a Location").to_owned();
        let answer = str0m::change::SdpAnswer::from_sdp_string(&r.text()).expect("an SDP answer");
        assert_eq!(
            r.header("accept-patch"),
            Some("application/trickle-ice-sdpfrag")
        );
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("the answer is accepted");
        Ok((
            Viewer {
                ws: None,
                rtc,
                socket,
                local,
                id: 0,
                offer: Value::Null,
                video_mid: Some(video_mid),
                buf: vec![0; 2048],
                ws_open: false,
                whep: Some((r.text(), r.header("etag").unwrap_or_default().to_owned())),
            },
            location,
        ))
    }

    /// The WHEP session's entity-tag.
    pub fn etag(&self) -> &str {
        &self.whep.as_ref().expect("a WHEP viewer").1
    }

    /// A WHEP ICE restart (RFC 9725 §4.3.2, as a WHIP client does it):
    /// new credentials in a PATCH to `resource_url` with `If-Match: *`,
    /// the server's new ones from its fragment into the answer we hold.
    /// str0m forgets every candidate pair: ICE is up again only if the
    /// server takes checks with the new credentials. The server's answer
    /// is the error when it is not 200.
    pub async fn whep_restart_ice(&mut self, resource_url: &str) -> Result<(), super::Response> {
        let mut api = self.rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api.apply().expect("an ICE restart offer");
        let offer = offer.to_sdp_string();
        let line = |sdp: &str, prefix: &str| {
            sdp.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(|v| v.trim().to_owned())
                .expect(prefix)
        };
        let mut fragment = format!(
            "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
            line(&offer, "a=ice-ufrag:"),
            line(&offer, "a=ice-pwd:")
        );
        for c in offer.lines().filter(|l| l.starts_with("a=candidate:")) {
            fragment.push_str(c.trim());
            fragment.push_str("\r\n");
        }
        let r = super::request_with(
            "PATCH",
            resource_url,
            &[
                ("content-type", "application/trickle-ice-sdpfrag"),
                ("if-match", "*"),
            ],
            fragment,
        )
        .await;
        if r.status != 200 {
            return Err(r);
        }
        let back = r.text();
        let (old, _) = self.whep.take().expect("a WHEP viewer");
        let (ufrag, pwd) = (line(&back, "a=ice-ufrag:"), line(&back, "a=ice-pwd:"));
        // The answer we hold with the new credentials, and the fragment's
        // candidates in place of the old ones (which name the old ufrag).
        let fresh: Vec<&str> = back
            .lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .collect();
        let mut answer = String::new();
        let mut placed = false;
        for l in old.lines().map(str::trim_end) {
            if l.starts_with("a=candidate:") || l == "a=end-of-candidates" {
                continue;
            }
            if l.starts_with("a=ice-ufrag:") {
                answer.push_str(&format!("a=ice-ufrag:{ufrag}\r\n"));
            } else if l.starts_with("a=ice-pwd:") {
                answer.push_str(&format!("a=ice-pwd:{pwd}\r\n"));
            } else {
                answer.push_str(l);
                answer.push_str("\r\n");
            }
            if !placed && l.starts_with("a=mid:") {
                for c in &fresh {
                    answer.push_str(c.trim_end());
                    answer.push_str("\r\n");
                }
                placed = true;
            }
        }
        let parsed = str0m::change::SdpAnswer::from_sdp_string(&answer).expect("an SDP answer");
        self.rtc
            .sdp_api()
            .accept_answer(pending, parsed)
            .expect("the restarted answer is accepted");
        self.whep = Some((answer, r.header("etag").expect("a new ETag").to_owned()));
        Ok(())
    }

    /// Sends a signalling message.
    pub async fn signal(&mut self, v: Value) {
        send(self.ws.as_mut().expect("an OME signalling viewer"), v).await;
    }

    /// Asks the server for a keyframe (PLI).
    pub fn request_keyframe(&mut self) {
        let Some(mid) = self.video_mid else { return };
        if let Some(mut w) = self.rtc.writer(mid) {
            let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
        }
    }

    /// The RTP times of the video frames that arrive while the connection
    /// runs for `span`.
    pub async fn video_times(&mut self, span: Duration) -> Vec<u64> {
        let mut times = Vec::new();
        self.run_until(span, |ev| {
            if let ViewerEvent::Video { rtp_time, .. } = ev {
                times.push(*rtp_time);
            }
            false
        })
        .await;
        times
    }

    /// Whether `frames` video frames arrive within `timeout`.
    pub async fn video_frames(&mut self, frames: usize, timeout: Duration) -> bool {
        let mut n = 0;
        self.run_until(timeout, |ev| {
            if matches!(ev, ViewerEvent::Video { .. }) {
                n += 1;
            }
            n >= frames
        })
        .await
    }

    /// Whether video arrives within 10 s.
    pub async fn plays(&mut self) -> bool {
        self.run_until(Duration::from_secs(10), |ev| {
            matches!(ev, ViewerEvent::Video { .. })
        })
        .await
    }

    /// Runs the connection, handing each event to `f`, until `f` returns
    /// true (then true) or `timeout` passes (then false).
    pub async fn run_until(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&ViewerEvent) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Drain str0m.
            let wake = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => {
                        let _ = self.socket.send_to(&t.contents, t.destination).await;
                    }
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Event(e)) => {
                        if let Some(ev) = self.convert(e)
                            && f(&ev)
                        {
                            return true;
                        }
                    }
                    Err(e) => panic!("webrtc client failed: {e}"),
                }
            };
            let wake = tokio::time::Instant::from_std(wake).min(deadline);
            tokio::select! {
                r = self.socket.recv_from(&mut self.buf) => {
                    let (n, src) = r.expect("udp recv");
                    let now = Instant::now();
                    if let Ok(recv) = Receive::new(Protocol::Udp, src, self.local, &self.buf[..n]) {
                        let _ = self.rtc.handle_input(Input::Receive(now, recv));
                    }
                }
                m = async { self.ws.as_mut().expect("guarded").next().await }, if self.ws_open => {
                    let ev = match m {
                        Some(Ok(Message::Text(t))) => ViewerEvent::Signal(serde_json::from_str(&t).expect("server sends JSON")),
                        Some(Ok(Message::Close(_))) => {
                            // The closing handshake's reply, sent at once
                            // as a browser sends it: tungstenite queued it
                            // when it read the Close, and a flush writes it
                            // (`close` would refuse, "SendAfterClosing",
                            // and leave it unsent).
                            let _ = self.ws.as_mut().expect("guarded").flush().await;
                            self.ws_open = false;
                            ViewerEvent::Closed
                        }
                        None | Some(Err(_)) => {
                            self.ws_open = false;
                            ViewerEvent::Closed
                        }
                        Some(Ok(_)) => continue,
                    };
                    if f(&ev) {
                        return true;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= deadline {
                        return false;
                    }
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
    }

    fn convert(&mut self, e: Event) -> Option<ViewerEvent> {
        match e {
            Event::Connected => Some(ViewerEvent::Connected),
            Event::IceConnectionStateChange(s) => Some(ViewerEvent::Ice(format!("{s:?}"))),
            Event::MediaAdded(m) if m.kind == MediaKind::Video => {
                self.video_mid = Some(m.mid);
                None
            }
            Event::MediaData(d) => {
                let video = Some(d.mid) == self.video_mid;
                let rtp_time = d.time.numer();
                Some(if video {
                    ViewerEvent::Video {
                        keyframe: d.is_keyframe(),
                        data: d.data.to_vec(),
                        rtp_time,
                        at: d.network_time,
                        contiguous: d.contiguous,
                    }
                } else {
                    ViewerEvent::Audio {
                        data: d.data.to_vec(),
                        rtp_time,
                    }
                })
            }
            Event::RtpPacket(p) => Some(ViewerEvent::Rtp {
                video: p.header.payload_type != 111.into(),
                seq: *p.seq_no,
                bytes: p.payload.len(),
                marker: p.header.marker,
            }),
            _ => None,
        }
    }

    /// Sends `stop` and closes, as OvenPlayer does.
    pub async fn stop(mut self) {
        let Some(mut ws) = self.ws.take() else { return };
        send(&mut ws, json!({"command": "stop", "id": self.id})).await;
        let _ = ws.close(None).await;
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("signalling send");
}

/// The next JSON text frame, or `None` when the socket closes.
pub async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("JSON")),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The WebRTC tests' ladder: two small superfast rungs (360p, 180p) and a
/// start bitrate that picks 360p. Transcoding takes most of both cores.
pub fn small_ladder(c: &mut streamd::config::Config) {
    use streamd::config::RungConfig;
    c.transcode.enabled = true;
    c.transcode.ladder = vec![
        RungConfig {
            preset: "superfast".into(),
            ..RungConfig::new("360p", 640, 360, 600)
        },
        RungConfig {
            preset: "superfast".into(),
            ..RungConfig::new("180p", 320, 180, 250)
        },
    ];
    c.webrtc.start_bitrate_kbps = 1000;
}

/// `Content-Type` of a WHIP/WHEP PATCH (RFC 8840 SDP fragments).
pub const FRAGMENT: &str = "application/trickle-ice-sdpfrag";

/// A WHIP/WHEP PATCH to `url` with this type, `If-Match` and body.
pub async fn patch(
    url: String,
    content_type: &str,
    if_match: String,
    body: String,
) -> super::Response {
    super::request_with(
        "PATCH",
        &url,
        &[("content-type", content_type), ("if-match", &if_match)],
        body,
    )
    .await
}

/// Whether the engine has no WebRTC viewer left within 5 s.
pub async fn viewers_gone(server: &super::TestServer) -> bool {
    for _ in 0..100 {
        if server.metric("streamd_webrtc_viewers").await == 0.0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// What a viewer decoded: H.264 pictures (and the last one's size) and
/// Opus samples.
#[derive(Debug, Default)]
pub struct Decoded {
    pub pictures: usize,
    pub samples: usize,
    pub size: (u32, u32),
}

/// A WebRTC viewer of `ws_url` decodes 30 pictures and a second of Opus
/// within 15 s: the ladder's H.264 and the Opus made from the publisher's
/// audio. Panics, saying what it got, otherwise.
pub async fn assert_viewer_decodes(ws_url: &str) {
    let mut viewer = Viewer::connect(ws_url, false).await.expect("an offer");
    ffmpeg_next::init().unwrap();
    let codec = ffmpeg_next::decoder::find(ffmpeg_next::codec::Id::OPUS).unwrap();
    let mut opus = ffmpeg_next::codec::Context::new_with_codec(codec)
        .decoder()
        .audio()
        .unwrap();
    let (ok, got) = decode_until(&mut viewer, &mut opus, 30, 48_000, Duration::from_secs(15)).await;
    assert!(ok, "the WebRTC viewer decoded only {got:?}");
}

/// Decodes what `viewer` receives (every access unit and every Opus packet
/// must decode) until it has `pictures` pictures and `samples` samples, or
/// `timeout` passed; whether it got there, and what it decoded.
pub async fn decode_until(
    viewer: &mut Viewer,
    opus: &mut ffmpeg_next::decoder::Audio,
    pictures: usize,
    samples: usize,
    timeout: Duration,
) -> (bool, Decoded) {
    use ffmpeg_next as ff;
    ff::init().unwrap();
    let codec = ff::decoder::find(ff::codec::Id::H264).unwrap();
    let mut h264 = ff::codec::Context::new_with_codec(codec)
        .decoder()
        .video()
        .unwrap();
    let mut got = Decoded::default();
    let mut picture = ff::frame::Video::empty();
    let mut pcm = ff::frame::Audio::empty();
    let ok = viewer
        .run_until(timeout, |ev| {
            match ev {
                ViewerEvent::Video { data, .. } => {
                    h264.send_packet(&ff::Packet::copy(data))
                        .expect("every access unit decodes");
                    while h264.receive_frame(&mut picture).is_ok() {
                        got.pictures += 1;
                        got.size = (picture.width(), picture.height());
                    }
                }
                ViewerEvent::Audio { data, .. } => {
                    opus.send_packet(&ff::Packet::copy(data))
                        .expect("every Opus packet decodes");
                    while opus.receive_frame(&mut pcm).is_ok() {
                        got.samples += pcm.samples();
                    }
                }
                _ => {}
            }
            got.pictures >= pictures && got.samples >= samples
        })
        .await;
    (ok, got)
}
