//! The session core against rml_rtmp's client session (an independent
//! implementation of the other side), and hostile byte sequences.

use super::*;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

/// A client's C0+C1, then its C2 echoing the server's S1.
fn handshake(conn: &mut RtmpConnection) {
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    let s = conn.feed(&c0c1).unwrap().send;
    assert_eq!(s.len(), 1 + 1536 * 2);
    conn.feed(&s[1..1 + 1536]).unwrap();
    assert!(!conn.is_handshaking());
}

/// rml_rtmp's client, wired to our server core in memory.
struct Pair {
    server: RtmpConnection,
    client: ClientSession,
    events: Vec<RtmpEvent>,
    client_events: Vec<ClientSessionEvent>,
}

impl Pair {
    fn new() -> Pair {
        let mut server = RtmpConnection::new();
        handshake(&mut server);
        let (client, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut p = Pair {
            server,
            client,
            events: vec![],
            client_events: vec![],
        };
        p.send_to_server(initial).unwrap();
        p
    }

    /// Sends the client's packets; feeds the server's answers back.
    fn send_to_server(&mut self, results: Vec<ClientSessionResult>) -> Result<(), RtmpError> {
        for r in results {
            if let ClientSessionResult::OutboundResponse(p) = r {
                let out = self.server.feed(&p.bytes)?;
                self.events.extend(out.events);
                self.send_to_client(&out.send);
            }
        }
        Ok(())
    }

    fn send_to_client(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let results = self.client.handle_input(bytes).unwrap();
        let mut replies = vec![];
        for r in results {
            match r {
                ClientSessionResult::RaisedEvent(e) => self.client_events.push(e),
                other => replies.push(other),
            }
        }
        self.send_to_server(replies).unwrap();
    }

    fn connect_and_request_publish(&mut self, name: &str) -> u32 {
        let r = self.client.request_connection("live".into()).unwrap();
        self.send_to_server(vec![r]).unwrap();
        assert!(
            self.client_events
                .contains(&ClientSessionEvent::ConnectionRequestAccepted)
        );
        assert_eq!(self.events[0], RtmpEvent::Connected { app: "live".into() });
        let r = self
            .client
            .request_publishing(name.into(), PublishRequestType::Live)
            .unwrap();
        self.send_to_server(vec![r]).unwrap();
        match self.events.last() {
            Some(RtmpEvent::PublishRequested { request_id, .. }) => *request_id,
            other => panic!("no publish request: {other:?}"),
        }
    }
}

#[test]
fn publish_session_with_rml_rtmps_client() {
    let mut p = Pair::new();
    let id = p.connect_and_request_publish("cam1?key=abc");
    assert_eq!(
        p.events.last().unwrap(),
        &RtmpEvent::PublishRequested {
            request_id: id,
            app: "live".into(),
            stream: "cam1".into(),
            query: Some("key=abc".into()),
        }
    );
    let bytes = p.server.accept(id).unwrap();
    p.send_to_client(&bytes);
    assert!(
        p.client_events
            .contains(&ClientSessionEvent::PublishRequestAccepted)
    );
    p.events.clear();

    let mut meta = StreamMetadata::new();
    meta.video_width = Some(1280);
    meta.video_frame_rate = Some(30.0);
    meta.video_codec_id = Some(7);
    meta.encoder = Some("test".into());
    let r = p.client.publish_metadata(&meta).unwrap();
    p.send_to_server(vec![r]).unwrap();
    // Video larger than a chunk, audio, with timestamps past 2^24 ms (the
    // extended field).
    let big = Bytes::from(vec![0x17u8; 10_000]);
    for (i, ts) in [0u32, 40, 17_000_000, 17_000_040].into_iter().enumerate() {
        let r = p
            .client
            .publish_video_data(big.clone(), RtmpTimestamp::new(ts), false)
            .unwrap();
        p.send_to_server(vec![r]).unwrap();
        let r = p
            .client
            .publish_audio_data(
                Bytes::from_static(b"\xaf\x01aac"),
                RtmpTimestamp::new(ts + i as u32),
                false,
            )
            .unwrap();
        p.send_to_server(vec![r]).unwrap();
    }
    let r = p.client.stop_publishing().unwrap();
    p.send_to_server(r).unwrap();

    let RtmpEvent::Metadata(m) = &p.events[0] else {
        panic!("{:?}", p.events[0]);
    };
    assert_eq!(m.width, Some(1280));
    assert_eq!(m.frame_rate, Some(30.0));
    assert!(m.declares_video && !m.declares_audio);
    assert_eq!(m.encoder.as_deref(), Some("test"));
    let video: Vec<u32> = p
        .events
        .iter()
        .filter_map(|e| match e {
            RtmpEvent::Video { data, timestamp } => {
                assert_eq!(data, &big);
                Some(*timestamp)
            }
            _ => None,
        })
        .collect();
    assert_eq!(video, [0, 40, 17_000_000, 17_000_040]);
    let audio = p
        .events
        .iter()
        .filter(|e| matches!(e, RtmpEvent::Audio { .. }))
        .count();
    assert_eq!(audio, 4);
    assert_eq!(p.events.last(), Some(&RtmpEvent::PublishFinished));
}

#[test]
fn a_refusal_reaches_the_client_as_its_status_code() {
    let mut p = Pair::new();
    let id = p.connect_and_request_publish("cam1");
    let bytes = p
        .server
        .reject(id, "NetStream.Publish.Unauthorized", "wrong key")
        .unwrap();
    p.send_to_client(&bytes);
    assert!(
        p.client_events
            .contains(&ClientSessionEvent::UnhandleableOnStatusCode {
                code: "NetStream.Publish.Unauthorized".into()
            })
    );
    // Media after a refusal goes nowhere.
    assert!(p.server.accept(id).is_err());
}

/// The raw bytes of one AMF0 command in one chunk (csid 3).
fn command(values: &[Amf0], stream_id: u32) -> Vec<u8> {
    let mut payload = Vec::new();
    for v in values {
        v.encode(&mut payload);
    }
    let mut out = Vec::new();
    let mut w = ChunkWriter::default();
    w.set_chunk_size(65_536, &mut out);
    w.write(3, 0, AMF0_COMMAND, stream_id, &payload, &mut out);
    out
}

fn connected() -> RtmpConnection {
    let mut conn = RtmpConnection::new();
    handshake(&mut conn);
    let out = conn
        .feed(&command(
            &[
                Amf0::string("connect"),
                Amf0::Number(1.0),
                Amf0::object([("app", Amf0::string("live"))]),
            ],
            0,
        ))
        .unwrap();
    assert!(!out.send.is_empty());
    conn
}

/// The attack the hardening issue opens with: after the handshake, a 35 KB
/// AMF0 command whose value nests objects 5,000 levels deep.
#[test]
fn deeply_nested_amf_is_an_error_not_a_stack_overflow() {
    let mut conn = RtmpConnection::new();
    handshake(&mut conn);
    let mut payload = Vec::new();
    Amf0::string("connect").encode(&mut payload);
    Amf0::Number(1.0).encode(&mut payload);
    for _ in 0..5000 {
        payload.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
    }
    assert!(payload.len() > 20_000);
    let mut bytes = Vec::new();
    let mut w = ChunkWriter::default();
    w.set_chunk_size(65_536, &mut bytes);
    w.write(3, 0, AMF0_COMMAND, 0, &payload, &mut bytes);
    let err = conn.feed(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            RtmpError::Amf {
                type_id: 20,
                source: Amf0Error::TooDeep
            }
        ),
        "{err}"
    );
    assert!(matches!(conn.feed(&[0]), Err(RtmpError::Closed)));
}

#[test]
fn each_session_error() {
    // A bad handshake.
    let mut conn = RtmpConnection::new();
    assert!(matches!(
        conn.feed(b"GET / HTTP/1.1"),
        Err(RtmpError::Handshake(_))
    ));
    assert!(matches!(conn.feed(&[3]), Err(RtmpError::Closed)));

    // Commands before connect.
    for name in ["createStream", "publish", "play"] {
        let mut conn = RtmpConnection::new();
        handshake(&mut conn);
        let bytes = command(&[Amf0::string(name), Amf0::Number(2.0), Amf0::Null], 0);
        let err = conn.feed(&bytes).unwrap_err();
        assert!(err.to_string().contains("before connect"), "{err}");
    }

    // connect without an app, with an empty one, with a huge one; twice.
    for object in [
        Amf0::Null,
        Amf0::object([("app", Amf0::string(""))]),
        Amf0::object([("app", Amf0::String("a".repeat(300)))]),
    ] {
        let mut conn = RtmpConnection::new();
        handshake(&mut conn);
        let bytes = command(&[Amf0::string("connect"), Amf0::Number(1.0), object], 0);
        assert!(matches!(conn.feed(&bytes), Err(RtmpError::BadApp)));
    }
    let mut conn = connected();
    let again = command(
        &[
            Amf0::string("connect"),
            Amf0::Number(1.0),
            Amf0::object([("app", Amf0::string("live"))]),
        ],
        0,
    );
    assert!(matches!(conn.feed(&again), Err(RtmpError::Protocol(_))));

    // A command that is not a name.
    let mut conn = connected();
    let bytes = command(&[Amf0::Number(1.0)], 0);
    assert!(matches!(conn.feed(&bytes), Err(RtmpError::Protocol(_))));

    // createStream in a loop: capped.
    let mut conn = connected();
    let create = command(
        &[Amf0::string("createStream"), Amf0::Number(2.0), Amf0::Null],
        0,
    );
    for _ in 0..MAX_MESSAGE_STREAMS {
        conn.feed(&create).unwrap();
    }
    assert!(matches!(conn.feed(&create), Err(RtmpError::TooManyStreams)));

    // publish on a stream never created, and twice while pending.
    let mut conn = connected();
    let publish = |sid| {
        command(
            &[
                Amf0::string("publish"),
                Amf0::Number(3.0),
                Amf0::Null,
                Amf0::string("cam"),
                Amf0::string("live"),
            ],
            sid,
        )
    };
    assert!(matches!(
        conn.feed(&publish(1)),
        Err(RtmpError::Protocol(_))
    ));
    let mut conn = connected();
    conn.feed(&create).unwrap();
    let out = conn.feed(&publish(1)).unwrap();
    assert!(matches!(
        out.events[..],
        [RtmpEvent::PublishRequested { .. }]
    ));
    assert!(matches!(
        conn.feed(&publish(1)),
        Err(RtmpError::Protocol(_))
    ));

    // An AMF3 body.
    let mut conn = connected();
    let mut bytes = Vec::new();
    ChunkWriter::default().write(3, 0, AMF3_COMMAND, 0, &[0x11, 0x02], &mut bytes);
    assert!(matches!(conn.feed(&bytes), Err(RtmpError::Protocol(_))));

    // Truncated AMF (rml_amf0 used to panic on this one).
    let mut conn = connected();
    let mut bytes = Vec::new();
    ChunkWriter::default().write(
        3,
        0,
        AMF0_COMMAND,
        0,
        &[0x02, 0x00, 0x07, b'p', b'u'],
        &mut bytes,
    );
    assert!(matches!(
        conn.feed(&bytes),
        Err(RtmpError::Amf {
            source: Amf0Error::Truncated { .. },
            ..
        })
    ));

    // Short control messages.
    for (type_id, payload) in [(USER_CONTROL, &[0u8][..]), (WINDOW_ACK_SIZE, &[0, 1][..])] {
        let mut conn = connected();
        let mut bytes = Vec::new();
        ChunkWriter::default().write(2, 0, type_id, 0, payload, &mut bytes);
        assert!(matches!(conn.feed(&bytes), Err(RtmpError::Protocol(_))));
    }

    // Chunk-level errors surface as such.
    let mut conn = connected();
    assert!(matches!(
        conn.feed(&[0xc0 | 9, 0]),
        Err(RtmpError::Chunk(ChunkError::NoPreviousHeader { .. }))
    ));
}

#[test]
fn ping_is_answered_and_bytes_acknowledged() {
    let mut conn = connected();
    let mut bytes = Vec::new();
    let w = ChunkWriter::default();
    w.write(2, 0, WINDOW_ACK_SIZE, 0, &100u32.to_be_bytes(), &mut bytes);
    let mut ping = PING_REQUEST.to_be_bytes().to_vec();
    ping.extend_from_slice(&1234u32.to_be_bytes());
    w.write(2, 0, USER_CONTROL, 0, &ping, &mut bytes);
    w.write(2, 0, 6, 0, &[0, 0, 1, 0, 2], &mut bytes); // set peer bandwidth
    let out = conn.feed(&bytes).unwrap();
    let mut reader = ChunkReader::new(Limits::default());
    let mut messages = Vec::new();
    reader.read(&out.send, &mut messages).unwrap();
    let pong = messages
        .iter()
        .find(|m| m.type_id == USER_CONTROL)
        .expect("ping response");
    assert_eq!(&pong.payload[..], &[0, 7, 0, 0, 4, 210]);
    let ack = messages
        .iter()
        .find(|m| m.type_id == ACKNOWLEDGEMENT)
        .expect("acknowledgement");
    let seq = u32::from_be_bytes(ack.payload[..].try_into().unwrap());
    assert!(seq >= 100, "{seq}");
}

#[test]
fn media_before_publish_is_dropped() {
    let mut conn = connected();
    let mut bytes = Vec::new();
    ChunkWriter::default().write(6, 0, VIDEO, 1, &[0x17, 0, 0, 0, 0], &mut bytes);
    let out = conn.feed(&bytes).unwrap();
    assert!(out.events.is_empty());
}

#[test]
fn metadata_numbers_that_are_not_u32_are_dropped() {
    let mut p = Pair::new();
    let id = p.connect_and_request_publish("cam");
    let bytes = p.server.accept(id).unwrap();
    p.send_to_client(&bytes);
    let mut payload = Vec::new();
    for v in [
        Amf0::string("@setDataFrame"),
        Amf0::string("onMetaData"),
        Amf0::object([
            ("width", Amf0::Number(-1.0)),
            ("height", Amf0::Number(1e300)),
            ("framerate", Amf0::Number(f64::NAN)),
            ("videodatarate", Amf0::Number(2499.7)),
        ]),
    ] {
        v.encode(&mut payload);
    }
    let mut bytes = Vec::new();
    let mut w = ChunkWriter::default();
    w.set_chunk_size(4096, &mut bytes);
    w.write(4, 0, AMF0_DATA, 1, &payload, &mut bytes);
    let out = p.server.feed(&bytes).unwrap();
    let [RtmpEvent::Metadata(m)] = &out.events[..] else {
        panic!("{:?}", out.events);
    };
    assert_eq!((m.width, m.height, m.frame_rate), (None, None, None));
    assert_eq!(m.video_bitrate_kbps, Some(2500));
}
