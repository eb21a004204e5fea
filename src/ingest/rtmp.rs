//! The RTMP protocol core for one connection: handshake, chunk stream and
//! commands, via rml_rtmp.
//!
//! Sans-IO: [`RtmpConnection::feed`] takes the bytes read from the socket and
//! returns the bytes to write back and the events the server must decide on
//! (publish requests) or route (media, metadata). It never touches a socket,
//! a clock or the bus.
//!
//! rml_rtmp is trusted to parse, not to be total: its chunk reader does
//! unchecked length arithmetic on hostile headers. Each call into it is
//! guarded so that a panic inside it becomes [`RtmpError::Internal`] for this
//! connection only.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
};

/// Largest input accepted in one `feed` call; the caller reads less.
pub const MAX_FEED: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    #[error("RTMP parser failed on malformed input ({0})")]
    Internal(String),
    #[error("connect request without a valid application name")]
    BadApp,
    #[error("the connection is closed")]
    Closed,
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
        /// Whatever followed `?` in the publish name (tokens, later).
        query: Option<String>,
    },
    /// The client stopped publishing (`deleteStream`/`closeStream`).
    PublishFinished,
    /// The client asked to play; streamd does not serve RTMP playback, and
    /// has already refused it.
    PlayRefused {
        stream: String,
    },
    Metadata(StreamMetadata),
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

enum State {
    Handshaking(Box<Handshake>),
    Session(Box<ServerSession>),
    Closed,
}

pub struct RtmpConnection {
    state: State,
}

impl Default for RtmpConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl RtmpConnection {
    pub fn new() -> RtmpConnection {
        RtmpConnection {
            state: State::Handshaking(Box::new(Handshake::new(PeerType::Server))),
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
        if let State::Handshaking(hs) = &mut self.state {
            let result = guarded("handshake", || hs.process_bytes(input))?
                .map_err(|e| RtmpError::Handshake(e.to_string()))?;
            let (response, remaining) = match result {
                HandshakeProcessResult::InProgress { response_bytes } => (response_bytes, None),
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => (response_bytes, Some(remaining_bytes)),
            };
            out.send.extend_from_slice(&response);
            let Some(remaining) = remaining else {
                return Ok(out);
            };
            let (session, initial) = guarded("session start", || {
                ServerSession::new(ServerSessionConfig::new())
            })?
            .map_err(|e| RtmpError::Protocol(e.to_string()))?;
            self.state = State::Session(Box::new(session));
            self.apply(initial, &mut out)?;
            self.session_input(&remaining, &mut out)?;
            return Ok(out);
        }
        self.session_input(input, &mut out)?;
        Ok(out)
    }

    fn session_input(&mut self, input: &[u8], out: &mut Output) -> Result<(), RtmpError> {
        let State::Session(session) = &mut self.state else {
            return Err(RtmpError::Closed);
        };
        if input.is_empty() {
            return Ok(());
        }
        let results = guarded("chunk stream", || session.handle_input(input))?
            .map_err(|e| RtmpError::Protocol(e.to_string()))?;
        self.apply(results, out)
    }

    /// Accepts a publish request: the peer gets `NetStream.Publish.Start`.
    pub fn accept(&mut self, request_id: u32) -> Result<Vec<u8>, RtmpError> {
        let mut out = Output::default();
        let State::Session(session) = &mut self.state else {
            return Err(RtmpError::Closed);
        };
        let results = guarded("accept", || session.accept_request(request_id))?
            .map_err(|e| RtmpError::Protocol(e.to_string()))?;
        self.apply(results, &mut out)?;
        Ok(out.send)
    }

    /// Refuses a request with an RTMP `_error` status (`code` such as
    /// `NetStream.Publish.BadName`) the client will show.
    pub fn reject(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<Vec<u8>, RtmpError> {
        let State::Session(session) = &mut self.state else {
            return Err(RtmpError::Closed);
        };
        let results = guarded("reject", || {
            session.reject_request(request_id, code, description)
        })?
        .map_err(|e| RtmpError::Protocol(e.to_string()))?;
        let mut send = Vec::new();
        for r in results {
            if let ServerSessionResult::OutboundResponse(p) = r {
                send.extend_from_slice(&p.bytes);
            }
        }
        Ok(send)
    }

    fn apply(
        &mut self,
        results: Vec<ServerSessionResult>,
        out: &mut Output,
    ) -> Result<(), RtmpError> {
        let mut pending = std::collections::VecDeque::from(results);
        while let Some(result) = pending.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    out.send.extend_from_slice(&packet.bytes)
                }
                ServerSessionResult::RaisedEvent(event) => {
                    if let Some(more) = self.on_event(event, out)? {
                        // Responses to an accepted request go out in order,
                        // before anything that followed it.
                        for r in more.into_iter().rev() {
                            pending.push_front(r);
                        }
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    tracing::debug!(type_id = payload.type_id, "ignoring RTMP message");
                }
            }
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        event: ServerSessionEvent,
        out: &mut Output,
    ) -> Result<Option<Vec<ServerSessionResult>>, RtmpError> {
        let State::Session(session) = &mut self.state else {
            return Err(RtmpError::Closed);
        };
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.is_empty() || app_name.len() > 256 {
                    return Err(RtmpError::BadApp);
                }
                let results = guarded("accept connect", || session.accept_request(request_id))?
                    .map_err(|e| RtmpError::Protocol(e.to_string()))?;
                out.events.push(RtmpEvent::Connected { app: app_name });
                return Ok(Some(results));
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                let (stream, query) = match stream_key.split_once('?') {
                    Some((s, q)) => (s.to_owned(), Some(q.to_owned())),
                    None => (stream_key, None),
                };
                out.events.push(RtmpEvent::PublishRequested {
                    request_id,
                    app: app_name,
                    stream,
                    query,
                });
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                out.events.push(RtmpEvent::PublishFinished)
            }
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                let results = guarded("reject play", || {
                    session.reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "streamd does not serve RTMP playback; use LL-HLS or WebRTC",
                    )
                })?
                .map_err(|e| RtmpError::Protocol(e.to_string()))?;
                out.events
                    .push(RtmpEvent::PlayRefused { stream: stream_key });
                return Ok(Some(results));
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                out.events.push(RtmpEvent::Metadata(metadata))
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => out.events.push(RtmpEvent::Video {
                data,
                timestamp: timestamp.value,
            }),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => out.events.push(RtmpEvent::Audio {
                data,
                timestamp: timestamp.value,
            }),
            ServerSessionEvent::UnhandleableAmf0Command { command_name, .. } => {
                // releaseStream, FCPublish, FCUnpublish and friends need no answer.
                tracing::debug!(command = %command_name.chars().take(64).collect::<String>(), "RTMP command");
            }
            ServerSessionEvent::ClientChunkSizeChanged { new_chunk_size } => {
                tracing::debug!(new_chunk_size, "client chunk size");
            }
            ServerSessionEvent::ReleaseStreamRequested { .. }
            | ServerSessionEvent::PlayStreamFinished { .. }
            | ServerSessionEvent::AcknowledgementReceived { .. }
            | ServerSessionEvent::PingResponseReceived { .. } => {}
        }
        Ok(None)
    }
}

thread_local! {
    /// Set while a guarded call runs, so the panic hook stays quiet about
    /// panics `guarded` turns into errors (they are logged as such).
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs a call into rml_rtmp, turning a panic on hostile input into an error.
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
mod tests {
    use super::*;

    /// A client's C0+C1, then its C2 echoing the server's S1.
    fn handshake(conn: &mut RtmpConnection) {
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&[0u8; 1536]);
        let s = conn.feed(&c0c1).unwrap().send;
        assert_eq!(s.len(), 1 + 1536 * 2);
        conn.feed(&s[1..1 + 1536]).unwrap();
        assert!(!conn.is_handshaking());
    }

    #[test]
    fn bad_version_byte_fails_the_handshake() {
        let mut conn = RtmpConnection::new();
        assert!(matches!(
            conn.feed(b"GET / HTTP/1.1"),
            Err(RtmpError::Handshake(_))
        ));
        assert!(matches!(conn.feed(&[3]), Err(RtmpError::Closed)));
    }

    #[test]
    fn parser_panic_becomes_an_error_for_this_connection() {
        let mut conn = RtmpConnection::new();
        handshake(&mut conn);
        // A 300-byte message's first 128-byte chunk (the default chunk
        // size), then a new 10-byte message on another chunk stream:
        // rml_rtmp subtracts 128 from 10.
        let mut first = vec![0x04, 0, 0, 0, 0, 0x01, 0x2c, 9, 1, 0, 0, 0];
        first.extend_from_slice(&[0u8; 128]);
        conn.feed(&first).unwrap();
        let second = [
            0x05, 0, 0, 0, 0, 0, 10, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(matches!(conn.feed(&second), Err(RtmpError::Internal(_))));
        assert!(matches!(conn.feed(&[0]), Err(RtmpError::Closed)));
    }
}
