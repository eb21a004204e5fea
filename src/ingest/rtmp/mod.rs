//! The RTMP protocol core for one connection: handshake, chunk stream and
//! the publisher's commands.
//!
//! Sans-IO: [`RtmpConnection::feed`] takes the bytes read from the socket and
//! returns the bytes to write back and the events the server must decide on
//! (publish requests) or route (media, metadata). It never touches a socket,
//! a clock or the bus.
//!
//! Everything a peer sends after the handshake is read by our own bounded
//! parsers ([`chunk`], [`amf0`]): message sizes are capped by type before
//! anything is kept, AMF nests at most [`amf0::MAX_DEPTH`] deep, and a peer
//! may hold at most [`MAX_MESSAGE_STREAMS`] message streams. rml_rtmp does
//! the handshake only (fixed-size input); its session and AMF decoder are
//! not used on network input: they recurse without bound, reserve what a
//! header claims, and panic on unchecked length arithmetic.

pub mod amf0;
pub mod chunk;

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

use amf0::{Amf0, Amf0Error};
use chunk::{ChunkError, ChunkReader, ChunkWriter, Limits, Message};

/// Largest input accepted in one `feed` call; the caller reads less.
pub const MAX_FEED: usize = 1 << 20;
/// Message streams (`createStream`) a connection may hold at once; a
/// publisher needs one.
pub const MAX_MESSAGE_STREAMS: usize = 8;
/// Longest application name accepted in `connect`.
pub const MAX_APP_NAME: usize = 256;

/// The chunk size we send with (announced at `connect`).
const OUR_CHUNK_SIZE: u32 = 4096;
/// Window Acknowledgement Size and Set Peer Bandwidth we announce.
const WINDOW: u32 = 2_500_000;

// Message types (RTMP 1.0 §5.4, §7.1).
const ACKNOWLEDGEMENT: u8 = 3;
const USER_CONTROL: u8 = 4;
const WINDOW_ACK_SIZE: u8 = 5;
const SET_PEER_BANDWIDTH: u8 = 6;
const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const AMF3_DATA: u8 = 15;
const AMF3_COMMAND: u8 = 17;
const AMF0_DATA: u8 = 18;
const AMF0_COMMAND: u8 = 20;

// User control events (§7.1.7).
const STREAM_BEGIN: u16 = 0;
const PING_REQUEST: u16 = 6;
const PING_RESPONSE: u16 = 7;

// Chunk streams we send on.
const CSID_CONTROL: u8 = 2;
const CSID_COMMAND: u8 = 3;
const CSID_STATUS: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("RTMP chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("malformed AMF0 in a type {type_id} message: {source}")]
    Amf { type_id: u8, source: Amf0Error },
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    #[error("connect request without a valid application name")]
    BadApp,
    #[error("more than {MAX_MESSAGE_STREAMS} message streams created")]
    TooManyStreams,
    #[error("RTMP handshake failed on malformed input ({0})")]
    Internal(String),
    #[error("the connection is closed")]
    Closed,
}

/// What `onMetaData` said, where it said it in a form we can use.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Metadata {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: Option<f64>,
    pub video_bitrate_kbps: Option<u32>,
    pub audio_bitrate_kbps: Option<u32>,
    pub encoder: Option<String>,
    /// Whether `videocodecid` (or `audiocodecid`) was present.
    pub declares_video: bool,
    pub declares_audio: bool,
}

/// What the connection asks of the server.
#[derive(Debug, PartialEq)]
pub enum RtmpEvent {
    /// `connect` was accepted for this application name.
    Connected {
        app: String,
    },
    /// The client wants to publish `stream` (the publish name up to any `?`)
    /// in `app`. Answer with [`RtmpConnection::accept`] or
    /// [`RtmpConnection::reject`].
    PublishRequested {
        request_id: u32,
        app: String,
        stream: String,
        /// Whatever followed `?` in the publish name (key, token).
        query: Option<String>,
    },
    /// The client stopped publishing (`deleteStream`/`closeStream`).
    PublishFinished,
    /// The client asked to play; streamd does not serve RTMP playback, and
    /// has already refused it.
    PlayRefused {
        stream: String,
    },
    Metadata(Metadata),
    Video {
        data: Bytes,
        timestamp: u32,
    },
    Audio {
        data: Bytes,
        timestamp: u32,
    },
}

#[derive(Debug, Default)]
pub struct Output {
    /// Bytes to write to the peer, in order.
    pub send: Vec<u8>,
    pub events: Vec<RtmpEvent>,
}

/// A publish request waiting for the server's answer.
#[derive(Debug, Clone, Copy)]
struct Pending {
    request_id: u32,
    stream_id: u32,
}

struct Session {
    reader: ChunkReader,
    writer: ChunkWriter,
    /// The application `connect` named.
    app: Option<String>,
    /// Message streams created and not deleted.
    streams: Vec<u32>,
    next_stream_id: u32,
    pending: Option<Pending>,
    next_request_id: u32,
    /// The message stream being published on.
    publishing: Option<u32>,
    /// The peer's Window Acknowledgement Size, once it sent one.
    peer_window: Option<u32>,
    received: u64,
    acknowledged: u64,
}

enum State {
    Handshaking(Box<Handshake>),
    Session(Box<Session>),
    Closed,
}

pub struct RtmpConnection {
    state: State,
    limits: Limits,
}

impl Default for RtmpConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl RtmpConnection {
    pub fn new() -> RtmpConnection {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> RtmpConnection {
        RtmpConnection {
            state: State::Handshaking(Box::new(Handshake::new(PeerType::Server))),
            limits,
        }
    }

    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Handshaking(_))
    }

    /// Processes bytes from the peer. After an error the connection is
    /// closed and every later call fails with [`RtmpError::Closed`].
    pub fn feed(&mut self, input: &[u8]) -> Result<Output, RtmpError> {
        let result = self.feed_inner(input);
        if result.is_err() {
            self.state = State::Closed;
        }
        result
    }

    fn feed_inner(&mut self, input: &[u8]) -> Result<Output, RtmpError> {
        debug_assert!(input.len() <= MAX_FEED);
        let mut out = Output::default();
        let input = match &mut self.state {
            State::Closed => return Err(RtmpError::Closed),
            State::Session(session) => {
                session.input(input, &mut out)?;
                return Ok(out);
            }
            State::Handshaking(hs) => {
                let result = guarded("handshake", || hs.process_bytes(input))?
                    .map_err(|e| RtmpError::Handshake(e.to_string()))?;
                match result {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        out.send.extend_from_slice(&response_bytes);
                        return Ok(out);
                    }
                    HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    } => {
                        out.send.extend_from_slice(&response_bytes);
                        remaining_bytes
                    }
                }
            }
        };
        let mut session = Box::new(Session::new(self.limits));
        session.input(&input, &mut out)?;
        self.state = State::Session(session);
        Ok(out)
    }

    fn session(&mut self) -> Result<&mut Session, RtmpError> {
        match &mut self.state {
            State::Session(s) => Ok(s),
            _ => Err(RtmpError::Closed),
        }
    }

    /// Accepts a publish request: the peer gets `NetStream.Publish.Start`.
    pub fn accept(&mut self, request_id: u32) -> Result<Vec<u8>, RtmpError> {
        let session = self.session()?;
        let pending = session.take_pending(request_id)?;
        let mut out = Vec::new();
        session.user_control(STREAM_BEGIN, pending.stream_id, &mut out);
        session.status(
            pending.stream_id,
            "status",
            "NetStream.Publish.Start",
            "Publishing.",
            &mut out,
        );
        session.publishing = Some(pending.stream_id);
        Ok(out)
    }

    /// Refuses a publish request with an `onStatus` of level `error`
    /// (`code` such as `NetStream.Publish.BadName`) the client will show.
    pub fn reject(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<Vec<u8>, RtmpError> {
        let session = self.session()?;
        let pending = session.take_pending(request_id)?;
        let mut out = Vec::new();
        session.status(pending.stream_id, "error", code, description, &mut out);
        Ok(out)
    }
}

impl Session {
    fn new(limits: Limits) -> Session {
        Session {
            reader: ChunkReader::new(limits),
            writer: ChunkWriter::default(),
            app: None,
            streams: Vec::new(),
            next_stream_id: 1,
            pending: None,
            next_request_id: 0,
            publishing: None,
            peer_window: None,
            received: 0,
            acknowledged: 0,
        }
    }

    fn input(&mut self, input: &[u8], out: &mut Output) -> Result<(), RtmpError> {
        if input.is_empty() {
            return Ok(());
        }
        self.received += input.len() as u64;
        let mut messages = Vec::new();
        self.reader.read(input, &mut messages)?;
        for m in messages {
            self.message(m, out)?;
        }
        if let Some(window) = self.peer_window
            && self.received - self.acknowledged >= u64::from(window)
        {
            self.acknowledged = self.received;
            // The sequence number is the byte count modulo 2^32 (§5.4.3).
            let seq = (self.received & u64::from(u32::MAX)) as u32;
            self.writer.write(
                CSID_CONTROL,
                0,
                ACKNOWLEDGEMENT,
                0,
                &seq.to_be_bytes(),
                &mut out.send,
            );
        }
        Ok(())
    }

    fn message(&mut self, m: Message, out: &mut Output) -> Result<(), RtmpError> {
        match m.type_id {
            AUDIO | VIDEO => {
                if self.publishing == Some(m.stream_id) {
                    let (data, timestamp) = (m.payload, m.timestamp);
                    out.events.push(if m.type_id == VIDEO {
                        RtmpEvent::Video { data, timestamp }
                    } else {
                        RtmpEvent::Audio { data, timestamp }
                    });
                }
            }
            AMF0_COMMAND => {
                let values = decode(m.type_id, &m.payload)?;
                self.command(m.stream_id, values, out)?;
            }
            AMF3_COMMAND => {
                // An AMF0 body behind a format byte of 0 (what AMF3-capable
                // clients send for commands).
                let values = decode(m.type_id, amf3_body(&m)?)?;
                self.command(m.stream_id, values, out)?;
            }
            AMF0_DATA => {
                let values = decode(m.type_id, &m.payload)?;
                self.data(m.stream_id, values, out);
            }
            AMF3_DATA => {
                let values = decode(m.type_id, amf3_body(&m)?)?;
                self.data(m.stream_id, values, out);
            }
            USER_CONTROL => {
                let event = match *m.payload {
                    [a, b, ..] => u16::from_be_bytes([a, b]),
                    _ => {
                        return Err(RtmpError::Protocol(
                            "user control message under 2 bytes".into(),
                        ));
                    }
                };
                if event == PING_REQUEST {
                    let mut reply = PING_RESPONSE.to_be_bytes().to_vec();
                    reply.extend_from_slice(m.payload.get(2..6).unwrap_or(&[0; 4]));
                    self.writer
                        .write(CSID_CONTROL, 0, USER_CONTROL, 0, &reply, &mut out.send);
                }
            }
            WINDOW_ACK_SIZE => match *m.payload {
                [a, b, c, d] => {
                    let size = u32::from_be_bytes([a, b, c, d]);
                    self.peer_window = (size > 0).then_some(size);
                }
                _ => {
                    return Err(RtmpError::Protocol(format!(
                        "window acknowledgement size of {} bytes",
                        m.payload.len()
                    )));
                }
            },
            ACKNOWLEDGEMENT | SET_PEER_BANDWIDTH => {}
            other => {
                // Shared objects, aggregate messages and anything newer: no
                // publisher we serve sends them.
                tracing::debug!(
                    type_id = other,
                    len = m.payload.len(),
                    "ignoring RTMP message"
                );
            }
        }
        Ok(())
    }

    fn command(
        &mut self,
        stream_id: u32,
        values: Vec<Amf0>,
        out: &mut Output,
    ) -> Result<(), RtmpError> {
        let mut values = values.into_iter();
        let name = match values.next() {
            Some(Amf0::String(s)) => s,
            _ => return Err(RtmpError::Protocol("a command without a name".into())),
        };
        let txn = values.next().and_then(|v| v.as_number()).unwrap_or(0.0);
        let object = values.next().unwrap_or(Amf0::Null);
        let args: Vec<Amf0> = values.collect();
        match name.as_str() {
            "connect" => self.connect(txn, &object, out),
            "createStream" => {
                self.connected("createStream")?;
                if self.streams.len() >= MAX_MESSAGE_STREAMS {
                    return Err(RtmpError::TooManyStreams);
                }
                let id = self.next_stream_id;
                self.next_stream_id = id
                    .checked_add(1)
                    .ok_or_else(|| RtmpError::Protocol("message stream ids exhausted".into()))?;
                self.streams.push(id);
                self.command_reply(
                    "_result",
                    txn,
                    0,
                    &[Amf0::Null, Amf0::Number(f64::from(id))],
                    &mut out.send,
                );
                Ok(())
            }
            "publish" => {
                let app = self.connected("publish")?.to_owned();
                if !self.streams.contains(&stream_id) {
                    return Err(RtmpError::Protocol(format!(
                        "publish on message stream {stream_id}, which was not created"
                    )));
                }
                if self.pending.is_some() {
                    return Err(RtmpError::Protocol(
                        "publish while another publish awaits its answer".into(),
                    ));
                }
                let Some(name) = args.first().and_then(Amf0::as_str) else {
                    return Err(RtmpError::Protocol("publish without a stream name".into()));
                };
                let (stream, query) = match name.split_once('?') {
                    Some((s, q)) => (s.to_owned(), Some(q.to_owned())),
                    None => (name.to_owned(), None),
                };
                let request_id = self.next_request_id;
                self.next_request_id = request_id.wrapping_add(1);
                self.pending = Some(Pending {
                    request_id,
                    stream_id,
                });
                out.events.push(RtmpEvent::PublishRequested {
                    request_id,
                    app,
                    stream,
                    query,
                });
                Ok(())
            }
            "play" => {
                self.connected("play")?;
                let stream = args
                    .first()
                    .and_then(Amf0::as_str)
                    .unwrap_or_default()
                    .chars()
                    .take(64)
                    .collect();
                self.status(
                    stream_id,
                    "error",
                    "NetStream.Play.Failed",
                    "streamd does not serve RTMP playback; use LL-HLS or WebRTC",
                    &mut out.send,
                );
                out.events.push(RtmpEvent::PlayRefused { stream });
                Ok(())
            }
            "deleteStream" => {
                let id = args.first().and_then(Amf0::as_number).and_then(whole_u32);
                if let Some(id) = id {
                    self.streams.retain(|&s| s != id);
                    self.finish(id, out);
                }
                Ok(())
            }
            "closeStream" => {
                self.finish(stream_id, out);
                Ok(())
            }
            _ => {
                // releaseStream, FCPublish, FCUnpublish, _checkbw and
                // friends need no answer.
                tracing::debug!(command = %name.chars().take(64).collect::<String>(), "RTMP command");
                Ok(())
            }
        }
    }

    fn connect(&mut self, txn: f64, object: &Amf0, out: &mut Output) -> Result<(), RtmpError> {
        if self.app.is_some() {
            return Err(RtmpError::Protocol("a second connect".into()));
        }
        let app = object
            .get("app")
            .and_then(Amf0::as_str)
            .map(|a| a.strip_suffix('/').unwrap_or(a))
            .filter(|a| !a.is_empty() && a.len() <= MAX_APP_NAME)
            .ok_or(RtmpError::BadApp)?
            .to_owned();
        let encoding = object
            .get("objectEncoding")
            .and_then(Amf0::as_number)
            .unwrap_or(0.0);
        let send = &mut out.send;
        self.writer.write(
            CSID_CONTROL,
            0,
            WINDOW_ACK_SIZE,
            0,
            &WINDOW.to_be_bytes(),
            send,
        );
        let mut bandwidth = WINDOW.to_be_bytes().to_vec();
        bandwidth.push(2); // dynamic
        self.writer
            .write(CSID_CONTROL, 0, SET_PEER_BANDWIDTH, 0, &bandwidth, send);
        self.writer.set_chunk_size(OUR_CHUNK_SIZE, send);
        self.command_reply(
            "_result",
            txn,
            0,
            &[
                Amf0::object([
                    ("fmsVer", Amf0::string("FMS/3,0,1,123")),
                    ("capabilities", Amf0::Number(31.0)),
                ]),
                Amf0::object([
                    ("level", Amf0::string("status")),
                    ("code", Amf0::string("NetConnection.Connect.Success")),
                    ("description", Amf0::string("Connection succeeded.")),
                    ("objectEncoding", Amf0::Number(encoding)),
                ]),
            ],
            send,
        );
        self.app = Some(app.clone());
        out.events.push(RtmpEvent::Connected { app });
        Ok(())
    }

    /// `@setDataFrame`/`onMetaData` on the stream being published.
    fn data(&mut self, stream_id: u32, values: Vec<Amf0>, out: &mut Output) {
        if self.publishing != Some(stream_id) {
            return;
        }
        let mut values = values.iter().peekable();
        if values.peek().and_then(|v| v.as_str()) == Some("@setDataFrame") {
            values.next();
        }
        if values.next().and_then(Amf0::as_str) != Some("onMetaData") {
            return;
        }
        let Some(object) = values.next() else { return };
        let number = |k: &str| object.get(k).and_then(Amf0::as_number);
        let whole = |k: &str| number(k).and_then(whole_u32_rounded);
        out.events.push(RtmpEvent::Metadata(Metadata {
            width: whole("width"),
            height: whole("height"),
            frame_rate: number("framerate").filter(|f| f.is_finite() && *f > 0.0),
            video_bitrate_kbps: whole("videodatarate"),
            audio_bitrate_kbps: whole("audiodatarate"),
            encoder: object
                .get("encoder")
                .and_then(Amf0::as_str)
                .map(|e| e.chars().take(128).collect()),
            declares_video: object.get("videocodecid").is_some(),
            declares_audio: object.get("audiocodecid").is_some(),
        }));
    }

    fn finish(&mut self, stream_id: u32, out: &mut Output) {
        if self.publishing == Some(stream_id) {
            self.publishing = None;
            out.events.push(RtmpEvent::PublishFinished);
        }
    }

    fn connected(&self, command: &str) -> Result<&str, RtmpError> {
        self.app
            .as_deref()
            .ok_or_else(|| RtmpError::Protocol(format!("{command} before connect")))
    }

    fn take_pending(&mut self, request_id: u32) -> Result<Pending, RtmpError> {
        match self.pending {
            Some(p) if p.request_id == request_id => {
                self.pending = None;
                Ok(p)
            }
            _ => Err(RtmpError::Protocol(format!(
                "no publish request {request_id} awaits an answer"
            ))),
        }
    }

    fn command_reply(
        &self,
        name: &str,
        txn: f64,
        stream_id: u32,
        args: &[Amf0],
        out: &mut Vec<u8>,
    ) {
        let mut payload = Vec::new();
        Amf0::string(name).encode(&mut payload);
        Amf0::Number(txn).encode(&mut payload);
        for a in args {
            a.encode(&mut payload);
        }
        self.writer
            .write(CSID_COMMAND, 0, AMF0_COMMAND, stream_id, &payload, out);
    }

    fn status(
        &self,
        stream_id: u32,
        level: &str,
        code: &str,
        description: &str,
        out: &mut Vec<u8>,
    ) {
        let mut payload = Vec::new();
        Amf0::string("onStatus").encode(&mut payload);
        Amf0::Number(0.0).encode(&mut payload);
        Amf0::Null.encode(&mut payload);
        Amf0::object([
            ("level", Amf0::string(level)),
            ("code", Amf0::string(code)),
            ("description", Amf0::string(description)),
        ])
        .encode(&mut payload);
        self.writer
            .write(CSID_STATUS, 0, AMF0_COMMAND, stream_id, &payload, out);
    }

    fn user_control(&self, event: u16, value: u32, out: &mut Vec<u8>) {
        let mut payload = event.to_be_bytes().to_vec();
        payload.extend_from_slice(&value.to_be_bytes());
        self.writer
            .write(CSID_CONTROL, 0, USER_CONTROL, 0, &payload, out);
    }
}

fn decode(type_id: u8, payload: &[u8]) -> Result<Vec<Amf0>, RtmpError> {
    amf0::decode_all(payload).map_err(|source| RtmpError::Amf { type_id, source })
}

/// The AMF0 body of an AMF3 command or data message (after its format byte).
fn amf3_body(m: &Message) -> Result<&[u8], RtmpError> {
    match m.payload.split_first() {
        Some((0, rest)) => Ok(rest),
        Some((&b, _)) => Err(RtmpError::Protocol(format!(
            "type {} message with format byte {b} (AMF3 bodies are not supported)",
            m.type_id
        ))),
        None => Ok(&[]),
    }
}

/// `n` as a u32 if it is one exactly (stream ids).
fn whole_u32(n: f64) -> Option<u32> {
    (n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n)).then_some(n as u32)
}

/// `n` rounded, if that is a u32 (sizes and bitrates, which encoders write
/// with fractions).
fn whole_u32_rounded(n: f64) -> Option<u32> {
    whole_u32(n.round())
}

thread_local! {
    /// Set while a guarded call runs, so the panic hook stays quiet about
    /// panics `guarded` turns into errors (they are logged as such).
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs rml_rtmp's handshake, turning a panic on hostile input into an
/// error for this connection.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, RtmpError> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(|g| g.get()) {
                previous(info);
            }
        }));
    });
    GUARDED.with(|g| g.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(false));
    result.map_err(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        RtmpError::Internal(format!("{what}: {msg}"))
    })
}

#[cfg(test)]
mod tests;
