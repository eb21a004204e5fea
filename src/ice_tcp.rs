//! ICE-TCP (RFC 6544): a passive TCP host candidate beside the UDP ones,
//! for peers whose network blocks UDP: WebRTC viewers and WHIP publishers.
//! The browser connects to it and ICE, DTLS and SRTP run over the
//! connection, each packet framed as RFC 4571 says (a two-byte big-endian
//! length before it).
//!
//! One listener serves every destination: each WebRTC engine, and WHIP
//! ingest. A connection's first packet must be a STUN binding request; its
//! USERNAME must name the ICE ufrag of a session that exists now, which its
//! owner registered in [`LiveUfrags`] with its destination. Anything else
//! is closed at once; a connection silent for the idle timeout is closed
//! too. From then on the connection's packets go to that destination, and
//! the destination's packets for it come back through a bounded queue: a
//! peer that cannot keep up loses packets (NACK and keyframes recover), it
//! never holds the engine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use str0m::ice::StunMessage;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::shutdown::Shutdown;

/// A connection must show its STUN request within this time.
const FIRST_PACKET: Duration = Duration::from_secs(10);
/// Packets waiting to be written to one connection.
const WRITE_QUEUE: usize = 1024;

/// What a connection tells its destination.
#[derive(Debug)]
pub enum TcpEvent {
    /// A connection that named one of this destination's ufrags; `writer`
    /// takes packets for it (unframed).
    Opened {
        remote: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
    Packet {
        remote: SocketAddr,
        data: Bytes,
    },
    Closed {
        remote: SocketAddr,
    },
}

/// The ICE ufrags of the sessions that exist now, each with the
/// destination (an index into the listener's senders) that has it: the
/// listener takes a connection only for one of them. Owners keep their
/// ufrags apart: a viewer's starts with its engine's two digits, a WHIP
/// publisher's with `w`.
#[derive(Clone, Debug, Default)]
pub struct LiveUfrags(Arc<Mutex<HashMap<String, usize>>>);

impl LiveUfrags {
    pub fn insert(&self, ufrag: &str, destination: usize) {
        self.0
            .lock()
            .expect("ufrags lock")
            .insert(ufrag.to_owned(), destination);
    }

    pub fn remove(&self, ufrag: &str) {
        self.0.lock().expect("ufrags lock").remove(ufrag);
    }

    /// The destination that has `ufrag`, if a session has it now.
    pub fn destination(&self, ufrag: &str) -> Option<usize> {
        self.0.lock().expect("ufrags lock").get(ufrag).copied()
    }
}

/// The listener's side of one destination: the sender it hands that
/// destination's connections to. Made by [`Listener::route`].
pub struct Route {
    /// The index that destination registers its ufrags with.
    pub destination: usize,
    pub events: mpsc::Receiver<TcpEvent>,
    pub ufrags: LiveUfrags,
    /// The passive candidates to offer (the listener's address as peers
    /// reach it).
    pub candidates: Vec<SocketAddr>,
}

/// The ICE-TCP listener and the destinations it routes to.
pub struct Listener {
    listener: TcpListener,
    destinations: Vec<mpsc::Sender<TcpEvent>>,
    ufrags: LiveUfrags,
    candidates: Vec<SocketAddr>,
}

/// Connection events waiting for a destination.
const EVENT_QUEUE: usize = 1024;

impl Listener {
    /// A bound listener whose passive candidates are `candidates`, with its
    /// first destinations (`destinations[k]` has the ufrags registered with
    /// `k` in `ufrags`); [`Self::route`] adds more.
    pub fn new(
        listener: TcpListener,
        candidates: Vec<SocketAddr>,
        destinations: Vec<mpsc::Sender<TcpEvent>>,
        ufrags: LiveUfrags,
    ) -> Listener {
        Listener {
            listener,
            destinations,
            ufrags,
            candidates,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// A new destination.
    pub fn route(&mut self) -> Route {
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        self.destinations.push(tx);
        Route {
            destination: self.destinations.len() - 1,
            events,
            ufrags: self.ufrags.clone(),
            candidates: self.candidates.clone(),
        }
    }

    /// Accepts connections until `shutdown`, each handled on its own task;
    /// at most `max` at once (more are closed at once). A connection that
    /// sends nothing for `idle` is closed.
    pub async fn serve(self, max: usize, idle: Duration, shutdown: Shutdown) {
        serve(
            self.listener,
            self.destinations,
            self.ufrags,
            max,
            idle,
            shutdown,
        )
        .await
    }
}

async fn serve(
    listener: TcpListener,
    engines: Vec<mpsc::Sender<TcpEvent>>,
    live: LiveUfrags,
    max: usize,
    idle: Duration,
    mut shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(max));
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            r = listener.accept() => match r {
                Ok((stream, remote)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::debug!(%remote, "ice-tcp: too many connections");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (engines, live, shutdown) = (engines.clone(), live.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        connection(stream, remote, engines, &live, idle, shutdown).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "ice-tcp: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// RFC 4571 framing, sans-IO: bytes in as they are read, whole frames out.
/// A frame's two-byte length is all a peer says, so it never holds more
/// than one frame (2 + 65,535 bytes) beyond what it was handed.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: BytesMut,
}

impl Deframer {
    /// Appends bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Option<Bytes> {
        let len = match self.buf.get(..2) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return None,
        };
        if self.buf.len() < 2 + len {
            return None;
        }
        self.buf.advance(2);
        Some(self.buf.split_to(len).freeze())
    }

    /// Bytes of a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Reads until the next whole frame; None at a clean end of stream (not
/// inside a frame).
async fn read_frame(
    r: &mut (impl AsyncRead + Unpin),
    frames: &mut Deframer,
) -> std::io::Result<Option<Bytes>> {
    loop {
        if let Some(frame) = frames.next_frame() {
            return Ok(Some(frame));
        }
        frames.buf.reserve(4096);
        if r.read_buf(&mut frames.buf).await? == 0 {
            return if frames.pending() == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// The destination a connection's first packet is for: a STUN message
/// whose USERNAME starts with the ufrag of a session that exists now.
pub fn route(first: &[u8], destinations: usize, live: &LiveUfrags) -> Option<usize> {
    let msg = StunMessage::parse(first).ok()?;
    let (local, _) = msg.split_username()?;
    live.destination(local).filter(|k| *k < destinations)
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    engines: Vec<mpsc::Sender<TcpEvent>>,
    live: &LiveUfrags,
    idle: Duration,
    mut shutdown: Shutdown,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut frames = Deframer::default();
    let first = tokio::time::timeout(FIRST_PACKET, read_frame(&mut rd, &mut frames)).await;
    let Ok(Ok(Some(first))) = first else {
        return;
    };
    let Some(k) = route(&first, engines.len(), live) else {
        tracing::debug!(%remote, "ice-tcp: first packet is not STUN for a live session of ours");
        return;
    };
    let engine = &engines[k];
    let (writer, mut outgoing) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    if engine
        .send(TcpEvent::Opened { remote, writer })
        .await
        .is_err()
    {
        return;
    }
    let write = async move {
        let mut frame = Vec::with_capacity(1600);
        while let Some(p) = outgoing.recv().await {
            frame.clear();
            let Ok(len) = u16::try_from(p.len()) else {
                continue;
            };
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&p);
            // Whatever else is queued goes out in the same write.
            while frame.len() < 64 * 1024 {
                let Ok(p) = outgoing.try_recv() else { break };
                let Ok(len) = u16::try_from(p.len()) else {
                    continue;
                };
                frame.extend_from_slice(&len.to_be_bytes());
                frame.extend_from_slice(&p);
            }
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    let read = async {
        let mut data = first;
        loop {
            let packet = TcpEvent::Packet { remote, data };
            if engine.send(packet).await.is_err() {
                return;
            }
            data = match tokio::time::timeout(idle, read_frame(&mut rd, &mut frames)).await {
                Ok(Ok(Some(frame))) => frame,
                Err(_) => {
                    tracing::debug!(%remote, ?idle, "ice-tcp: idle connection closed");
                    return;
                }
                _ => return,
            }
        }
    };
    tokio::select! {
        _ = shutdown.wait() => {}
        _ = write => {}
        _ = read => {}
    }
    let _ = engine.send(TcpEvent::Closed { remote }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_whole_and_eof_is_clean() {
        let data: Vec<u8> = [0u8, 3, 1, 2, 3, 0, 1, 9].to_vec();
        let mut r = &data[..];
        let mut frames = Deframer::default();
        let f = read_frame(&mut r, &mut frames).await.unwrap().unwrap();
        assert_eq!(&f[..], [1, 2, 3]);
        let f = read_frame(&mut r, &mut frames).await.unwrap().unwrap();
        assert_eq!(&f[..], [9]);
        assert!(read_frame(&mut r, &mut frames).await.unwrap().is_none());
        // A frame cut short is an error, not a short packet.
        let mut r = &[0u8, 5, 1][..];
        let mut frames = Deframer::default();
        assert!(read_frame(&mut r, &mut frames).await.is_err());
    }

    #[test]
    fn deframer_takes_frames_split_anywhere() {
        let stream: Vec<u8> = [0u8, 3, 1, 2, 3, 0, 0, 0, 2, 7, 8].to_vec();
        for cut in 0..=stream.len() {
            let mut d = Deframer::default();
            let mut got = vec![];
            for part in [&stream[..cut], &stream[cut..]] {
                d.push(part);
                while let Some(f) = d.next_frame() {
                    got.push(f.to_vec());
                }
            }
            assert_eq!(got, vec![vec![1, 2, 3], vec![], vec![7, 8]], "cut at {cut}");
            assert_eq!(d.pending(), 0);
        }
        // A length of 65,535 announced: nothing is reserved for it.
        let mut d = Deframer::default();
        d.push(&[0xff, 0xff, 1]);
        assert!(d.next_frame().is_none());
        assert_eq!(d.pending(), 3);
    }

    /// A STUN binding request whose USERNAME is `username`, with PRIORITY
    /// and a MESSAGE-INTEGRITY attribute (routing does not check it; the
    /// engine does).
    fn binding_request(username: &[u8]) -> Vec<u8> {
        let padded = username.len().div_ceil(4) * 4;
        let mut stun = vec![0x00, 0x01];
        stun.extend_from_slice(&((4 + padded + 8 + 24) as u16).to_be_bytes());
        stun.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        stun.extend_from_slice(&[7; 12]);
        stun.extend_from_slice(&[0x00, 0x06]);
        stun.extend_from_slice(&(username.len() as u16).to_be_bytes());
        stun.extend_from_slice(username);
        stun.resize(20 + 4 + padded, 0);
        stun.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x7f, 0x1e, 0xff]);
        stun.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
        stun.extend_from_slice(&[0u8; 20]);
        stun
    }

    #[test]
    fn only_stun_for_a_live_session_is_routed() {
        let live = LiveUfrags::default();
        assert_eq!(route(b"not stun at all", 2, &live), None);
        assert_eq!(route(&[], 2, &live), None);
        let req = binding_request(b"01abcdef:remote");
        // No such session (yet, or any more).
        assert_eq!(route(&req, 2, &live), None);
        live.insert("01abcdef", 1);
        assert_eq!(route(&req, 2, &live), Some(1));
        // A WHIP session's ufrag, at its own destination.
        live.insert("wxyz", 0);
        assert_eq!(route(&binding_request(b"wxyz:r"), 2, &live), Some(0));
        // A destination this listener does not have.
        live.insert("99abcdef", 7);
        assert_eq!(route(&binding_request(b"99abcdef:r"), 2, &live), None);
        live.remove("01abcdef");
        assert_eq!(route(&req, 2, &live), None);
    }
}
