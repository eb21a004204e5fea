//! A WebRTC viewer for the load tools: a str0m client on its own UDP socket
//! that speaks OME's signalling and does the real ICE, DTLS and SRTP key
//! exchange, then counts media packets from their RTP headers (in the
//! clear in SRTP) without decrypting them; STUN, DTLS and RTCP still go
//! through str0m, so consent checks keep the session alive.
#![allow(dead_code)] // each bench uses a subset

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use str0m::change::SdpOffer;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

/// What viewers saw: one per viewer, or one shared by many (then the gap
/// figures are the largest any of them saw).
#[derive(Default)]
pub struct Seen {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Video sequence numbers skipped.
    pub lost: AtomicU64,
    /// Video packets that came after a later one (reordered on the way):
    /// each was counted in `lost` when its gap was seen, so what never
    /// came is `lost - late`.
    pub late: AtomicU64,
    /// Viewers that received video.
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    /// The longest time between two video packets, in ms.
    pub max_gap_ms: AtomicU64,
    /// Video packets after `mark` was set (see [`Seen::mark`]).
    pub since_mark: AtomicU64,
    mark: AtomicBool,
    /// Per viewer, ms from the start of its join (before signalling) to
    /// the end of the first whole video frame it received.
    pub joins: std::sync::Mutex<Vec<u32>>,
    /// Per viewer, ms from its DTLS handshake's end (str0m's `Connected`)
    /// to the end of that frame: the server's part once the handshakes,
    /// which the load generator's one thread does in turn, are done.
    pub starts: std::sync::Mutex<Vec<u32>>,
}

impl Seen {
    /// Counts video packets from now on in `since_mark`.
    pub fn mark(&self) {
        self.since_mark.store(0, Ordering::Relaxed);
        self.mark.store(true, Ordering::Relaxed);
    }
}

/// One viewer of `url` (OME signalling) until `stop`. With `reading`
/// cleared, it stops reading its socket (a viewer that hangs); media then
/// piles up in (and overflows) its receive buffer.
pub async fn viewer(
    url: &str,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    reading: Arc<AtomicBool>,
) -> Result<(), String> {
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(json!({"command": "request_offer"})))
        .await
        .map_err(|e| e.to_string())?;
    let offer: Value = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                break serde_json::from_str(&t).map_err(|e| e.to_string())?;
            }
            Some(Ok(_)) => continue,
            _ => return Err("no offer".into()),
        }
    };
    let sdp = offer["sdp"]["sdp"]
        .as_str()
        .ok_or_else(|| format!("no sdp: {offer}"))?;
    let (peer, answer) = Peer::accept(sdp, started).await?;
    ws.send(send(
        json!({"command": "answer", "id": offer["id"], "peer_id": 0,
                        "sdp": {"type": "answer", "sdp": answer}}),
    ))
    .await
    .map_err(|e| e.to_string())?;
    // Keep the signalling socket read (pings) without blocking media.
    let signalling = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    let r = peer
        .receive(&seen, &stop, &reading, || signalling.abort())
        .await;
    signalling.abort();
    r
}

/// A viewer's side of the session once it has the server's offer: a str0m
/// client on its own UDP socket.
pub struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: std::net::SocketAddr,
    /// The payload type of the offer's first video format.
    video_pt: u8,
    /// When the viewer began to join (before signalling).
    started: Instant,
}

impl Peer {
    /// Takes `offer` (SDP) and gives the answer to send back.
    pub async fn accept(offer: &str, started: Instant) -> Result<(Peer, String), String> {
        let video_pt = offer
            .lines()
            .find_map(|l| l.strip_prefix("m=video "))
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
            .ok_or_else(|| format!("no video in the offer: {offer}"))?;
        let socket = UdpSocket::bind((crate::net::client_ip(), 0))
            .await
            .map_err(|e| e.to_string())?;
        // The load generator's one thread reads thousands of sockets in
        // turn, and a joining viewer is sent its group at once, which
        // overflowed the default buffer (`UdpRcvbufErrors`) while it waited
        // its turn (past the system's cap, as root may). A real viewer is a
        // machine of its own.
        ::streamd::webrtc::candidates::socket_buffer(
            &socket,
            ::streamd::webrtc::candidates::Buffer::Receive,
            2 << 20,
        );
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let answer = rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(offer).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let peer = Peer {
            rtc,
            socket,
            local,
            video_pt,
            started,
        };
        Ok((peer, answer.to_sdp_string()))
    }

    /// Receives until `stop`, counting into `seen`. With `reading`
    /// cleared, it calls `hang` and stops reading its socket.
    pub async fn receive(
        mut self,
        seen: &Seen,
        stop: &AtomicBool,
        reading: &AtomicBool,
        mut hang: impl FnMut(),
    ) -> Result<(), String> {
        let (rtc, socket, local) = (&mut self.rtc, &self.socket, self.local);
        let mut buf = vec![0u8; 2048];
        // The highest video sequence number so far, and how many below it
        // have not come (yet).
        let mut highest: Option<u16> = None;
        let mut missing: u64 = 0;
        let mut last_at: Option<Instant> = None;
        let mut connected = false;
        let mut first_frame = false;
        let mut handshaken: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            if !reading.load(Ordering::Relaxed) {
                hang();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let wake = loop {
                match rtc.poll_output() {
                    Ok(Output::Transmit(t)) => {
                        let _ = socket.send_to(&t.contents, t.destination).await;
                    }
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Event(Event::Connected)) => {
                        handshaken.get_or_insert_with(Instant::now);
                    }
                    Ok(Output::Event(_)) => {}
                    Err(e) => return Err(e.to_string()),
                }
            };
            let wake = tokio::time::Instant::from_std(wake)
                .min(tokio::time::Instant::now() + Duration::from_millis(500));
            tokio::select! {
                r = socket.recv_from(&mut buf) => {
                    let (n, src) = r.map_err(|e| e.to_string())?;
                    let d = &buf[..n];
                    // SRTP media: version 2, a payload type that is not RTCP.
                    if n >= 12 && d[0] >> 6 == 2 && !(72..=76).contains(&(d[1] & 0x7f)) {
                        let seq = u16::from_be_bytes([d[2], d[3]]);
                        if d[1] & 0x7f == self.video_pt {
                            let now = Instant::now();
                            if !connected {
                                connected = true;
                                seen.connected.fetch_add(1, Ordering::Relaxed);
                            }
                            // The marker bit ends a frame: the first one
                            // complete is the first the viewer could show.
                            if !first_frame && d[1] & 0x80 != 0 {
                                first_frame = true;
                                let ms = now.duration_since(self.started).as_millis() as u32;
                                seen.joins.lock().unwrap().push(ms);
                                if let Some(h) = handshaken {
                                    let ms = now.saturating_duration_since(h).as_millis() as u32;
                                    seen.starts.lock().unwrap().push(ms);
                                }
                            }
                            match highest.map(|h| (seq.wrapping_sub(h), h.wrapping_sub(seq))) {
                                Some((ahead, _)) if (1..1000).contains(&ahead) => {
                                    seen.lost.fetch_add(u64::from(ahead - 1), Ordering::Relaxed);
                                    missing += u64::from(ahead - 1);
                                    highest = Some(seq);
                                }
                                // One of this viewer's missing packets came
                                // after all (with none missing: a repeat).
                                Some((_, behind)) if (1..1000).contains(&behind) => {
                                    if missing > 0 {
                                        missing -= 1;
                                        seen.late.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                // A repeat of the highest.
                                Some((0, _)) => {}
                                // The first packet, or a jump: from here.
                                _ => {
                                    highest = Some(seq);
                                    missing = 0;
                                }
                            }
                            if let Some(t) = last_at {
                                let ms = now.duration_since(t).as_millis() as u64;
                                seen.max_gap_ms.fetch_max(ms, Ordering::Relaxed);
                            }
                            if seen.mark.load(Ordering::Relaxed) {
                                seen.since_mark.fetch_add(1, Ordering::Relaxed);
                            }
                            last_at = Some(now);
                        }
                        seen.packets.fetch_add(1, Ordering::Relaxed);
                        seen.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        continue;
                    }
                    if let Ok(recv) = Receive::new(Protocol::Udp, src, local, d) {
                        let _ = rtc.handle_input(Input::Receive(Instant::now(), recv));
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    let _ = rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
        Ok(())
    }
}
