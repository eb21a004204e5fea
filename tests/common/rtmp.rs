//! A scriptable RTMP publisher for tests (rml_rtmp's client session), and
//! an FLV file reader, so tests can send exactly the bytes they mean to:
//! valid streams replayed from a fixture, or hostile ones.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One FLV tag: 8 audio, 9 video, 18 script data.
#[derive(Clone, Debug)]
pub struct Tag {
    pub kind: u8,
    pub timestamp: u32,
    pub body: Bytes,
}

pub fn read_flv(path: &Path) -> Vec<Tag> {
    let d = std::fs::read(path).unwrap();
    assert_eq!(&d[..3], b"FLV");
    let mut pos = 13;
    let mut tags = vec![];
    while pos + 11 <= d.len() {
        let kind = d[pos];
        let size = u32::from_be_bytes([0, d[pos + 1], d[pos + 2], d[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([d[pos + 7], d[pos + 4], d[pos + 5], d[pos + 6]]);
        let body = Bytes::copy_from_slice(&d[pos + 11..pos + 11 + size]);
        tags.push(Tag {
            kind,
            timestamp: ts,
            body,
        });
        pos += 11 + size + 4;
    }
    tags
}

pub fn fixture() -> Vec<Tag> {
    read_flv(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-160x120-2s.flv"))
}

/// Is this tag a sequence header (AVC or AAC config)?
pub fn is_sequence_header(t: &Tag) -> bool {
    (t.kind == 9 || t.kind == 8) && t.body.len() > 1 && t.body[1] == 0
}

/// A video frame (not a sequence header) marked as a keyframe.
pub fn is_keyframe(t: &Tag) -> bool {
    t.kind == 9 && t.body.len() > 1 && t.body[0] >> 4 == 1 && t.body[1] == 1
}

/// Completes the RTMP handshake as a client; returns bytes the server sent
/// after it.
pub async fn handshake(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs.generate_outbound_p0_and_p1().unwrap();
    stream.write_all(&p0p1).await?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// Why a publish did not start.
#[derive(Debug)]
pub enum PublishError {
    /// The server answered with this `onStatus` code (level `error`).
    Refused(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for PublishError {
    fn from(e: std::io::Error) -> Self {
        PublishError::Io(e)
    }
}

pub struct RtmpClient {
    pub stream: TcpStream,
    session: ClientSession,
}

impl RtmpClient {
    /// Handshakes and connects to `app`.
    pub async fn connect(addr: SocketAddr, app: &str) -> std::io::Result<RtmpClient> {
        Self::connect_with_chunk_size(addr, app, ClientSessionConfig::new().chunk_size).await
    }

    /// Connects, announcing (and then using) `chunk_size` for what it sends.
    pub async fn connect_with_chunk_size(
        addr: SocketAddr,
        app: &str,
        chunk_size: u32,
    ) -> std::io::Result<RtmpClient> {
        let mut stream = TcpStream::connect(addr).await?;
        let leftover = handshake(&mut stream).await?;
        let mut config = ClientSessionConfig::new();
        config.chunk_size = chunk_size;
        let (session, initial) = ClientSession::new(config).unwrap();
        let mut c = RtmpClient { stream, session };
        c.send_results(initial).await?;
        c.feed(&leftover).await?;
        let r = c.session.request_connection(app.to_owned()).unwrap();
        c.send_results(vec![r]).await?;
        c.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
            .await?;
        Ok(c)
    }

    /// Asks to publish. A refusal is `Err(Refused(status code))`; a
    /// connection closed without one, or any other failure, is `Err(Io)`.
    pub async fn publish(&mut self, stream_key: &str) -> Result<(), PublishError> {
        let r = self
            .session
            .request_publishing(stream_key.to_owned(), PublishRequestType::Live)
            .unwrap();
        self.send_results(vec![r]).await?;
        let mut refused = None;
        let accepted = self
            .wait_for(|e| match e {
                ClientSessionEvent::PublishRequestAccepted => true,
                ClientSessionEvent::UnhandleableOnStatusCode { code } => {
                    refused = Some(code.clone());
                    true
                }
                _ => false,
            })
            .await;
        match (refused, accepted) {
            (Some(code), _) => Err(PublishError::Refused(code)),
            (None, r) => Ok(r?),
        }
    }

    pub async fn send(&mut self, tag: &Tag) -> std::io::Result<()> {
        let ts = RtmpTimestamp::new(tag.timestamp);
        let r = match tag.kind {
            9 => self.session.publish_video_data(tag.body.clone(), ts, false),
            8 => self.session.publish_audio_data(tag.body.clone(), ts, false),
            _ => return Ok(()),
        }
        .unwrap();
        self.send_results(vec![r]).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// True when the server closes the connection within `timeout`.
    pub async fn closed_by_server(&mut self, timeout: Duration) -> bool {
        closed_by_server(&mut self.stream, timeout).await
    }

    async fn send_results(&mut self, results: Vec<ClientSessionResult>) -> std::io::Result<()> {
        for r in results {
            if let ClientSessionResult::OutboundResponse(p) = r {
                self.stream.write_all(&p.bytes).await?;
            }
        }
        Ok(())
    }

    async fn feed(&mut self, bytes: &[u8]) -> std::io::Result<Vec<ClientSessionEvent>> {
        if bytes.is_empty() {
            return Ok(vec![]);
        }
        let results = self
            .session
            .handle_input(bytes)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut events = vec![];
        let mut out = vec![];
        for r in results {
            match r {
                ClientSessionResult::RaisedEvent(e) => events.push(e),
                other => out.push(other),
            }
        }
        self.send_results(out).await?;
        Ok(events)
    }

    async fn wait_for(
        &mut self,
        mut want: impl FnMut(&ClientSessionEvent) -> bool,
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if n == 0 {
                return Err(std::io::ErrorKind::ConnectionAborted.into());
            }
            let events = self.feed(&buf[..n]).await?;
            if events.iter().any(&mut want) {
                return Ok(());
            }
        }
    }
}

/// True when the peer closes (EOF or reset) within `timeout`.
pub async fn closed_by_server(stream: &mut TcpStream, timeout: Duration) -> bool {
    let mut buf = vec![0u8; 8192];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Publishes the fixture in a loop, in real time, until dropped: a cheap
/// live stream that other tests can watch while they misbehave.
pub async fn spawn_witness(
    addr: SocketAddr,
    app: &str,
    stream: &str,
) -> tokio::task::JoinHandle<()> {
    let mut client = RtmpClient::connect(addr, app)
        .await
        .expect("witness connects");
    client.publish(stream).await.expect("witness publishes");
    tokio::spawn(async move {
        let tags = fixture();
        let clip_ms = 2000;
        let start = tokio::time::Instant::now();
        for (round, _) in (0u32..).zip(std::iter::repeat(())) {
            for t in &tags {
                if is_sequence_header(t) && round > 0 {
                    continue;
                }
                // The clip's audio runs a little past 2 s; looping it as is
                // would overlap audio and the server would (rightly) drop
                // frames to stay in sync.
                if t.kind == 8 && t.timestamp + 24 > clip_ms {
                    continue;
                }
                let ts = t.timestamp + round * clip_ms;
                tokio::time::sleep_until(start + Duration::from_millis(u64::from(ts))).await;
                let mut t = t.clone();
                t.timestamp = ts;
                if client.send(&t).await.is_err() {
                    return;
                }
            }
        }
    })
}
