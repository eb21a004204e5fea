//! Bad signalling gets OME's error (`{"code","error"}`, then the socket
//! closes) or a timeout, and leaves nothing behind: no viewer, no socket.

mod common;

use std::time::Duration;

use common::webrtc::{Viewer, next_json, send};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use str0m::Rtc;
use str0m::change::SdpOffer;
use tokio_tungstenite::tungstenite::Message;

/// These tests read process-wide gauges: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn connect(url: &str) -> common::webrtc::Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("signalling socket connects")
        .0
}

/// The error frame, then the end of the socket.
async fn expect_error(ws: &mut common::webrtc::Ws, code: u16, message: &str) {
    let v = tokio::time::timeout(Duration::from_secs(10), next_json(ws))
        .await
        .expect("an answer in time")
        .expect("an error frame before the close");
    assert_eq!(v["code"], code, "{v}");
    let text = v["error"].as_str().unwrap();
    assert!(text.starts_with(message), "{v}");
    let end = tokio::time::timeout(Duration::from_secs(10), next_json(ws))
        .await
        .expect("the server closes");
    assert!(end.is_none(), "nothing after the error: {end:?}");
}

async fn publishing(server: &TestServer, stream: &str) -> tokio::process::Child {
    let p = server.publish("live", stream, 60, "320x180");
    server.master_when_ready("live", stream).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_omes_errors() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|_| {}).await;
    let url = server.ws_url("/live/cam");

    let mut ws = connect(&url).await;
    send_text(&mut ws, "this is not json").await;
    expect_error(&mut ws, 400, "Invalid JSON").await;

    let mut ws = connect(&url).await;
    send(&mut ws, json!({"command": "dance"})).await;
    expect_error(&mut ws, 400, "Invalid ID").await;

    // Candidates for a session that does not exist.
    let mut ws = connect(&url).await;
    send(
        &mut ws,
        json!({"command": "candidate", "id": 12345, "peer_id": 0, "candidates": []}),
    )
    .await;
    expect_error(&mut ws, 400, "Invalid ID").await;

    // An unknown stream.
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"command": "request_offer"})).await;
    expect_error(&mut ws, 404, "Cannot create offer").await;

    // Hostile paths are not streams: no upgrade at all.
    for path in ["/..%2F../cam", "/live/%00", "/live/cam/x/y"] {
        let refused = tokio_tungstenite::connect_async(server.ws_url(path)).await;
        assert!(refused.is_err(), "{path} was upgraded");
    }

    // The HTTP routes are untouched by the WebSocket handler.
    assert_eq!(get(&server.url("/live/cam")).await.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_refused_and_forgotten() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|_| {}).await;
    let mut publisher = publishing(&server, "cam").await;
    let url = server.ws_url("/live/cam");

    // The right command with the wrong id.
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"command": "request_offer"})).await;
    let offer = next_json(&mut ws).await.unwrap();
    let id = offer["id"].as_i64().unwrap();
    send(
        &mut ws,
        json!({"command": "answer", "id": id + 1, "peer_id": 0, "sdp": {"type": "answer", "sdp": "v=0"}}),
    )
    .await;
    expect_error(&mut ws, 400, "Invalid ID").await;

    // An unknown command with the right id; then garbage SDP.
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"command": "request_offer"})).await;
    let id = next_json(&mut ws).await.unwrap()["id"].clone();
    send(&mut ws, json!({"command": "dance", "id": id})).await;
    expect_error(&mut ws, 400, "Unknown command: dance").await;
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"command": "request_offer"})).await;
    let id = next_json(&mut ws).await.unwrap()["id"].clone();
    send(
        &mut ws,
        json!({"command": "answer", "id": id, "sdp": {"type": "answer", "sdp": "not sdp"}}),
    )
    .await;
    expect_error(&mut ws, 400, "Could not parse SDP").await;

    // A client that cannot take H.264.
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"command": "request_offer"})).await;
    let offer = next_json(&mut ws).await.unwrap();
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_vp8(true)
        .build(std::time::Instant::now());
    let answer = rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(offer["sdp"]["sdp"].as_str().unwrap()).unwrap())
        .unwrap();
    send(
        &mut ws,
        json!({"command": "answer", "id": offer["id"], "sdp": {"type": "answer", "sdp": answer.to_sdp_string()}}),
    )
    .await;
    expect_error(&mut ws, 400, "The answer does not accept H.264").await;

    // Every refused session was dropped; a good viewer still plays.
    assert_eq!(server.metric("streamd_webrtc_viewers").await, 0.0);
    let mut viewer = Viewer::connect(&url, false).await.expect("an offer");
    assert!(viewer.plays().await);
    viewer.stop().await;
    let _ = publisher.kill().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_that_never_answer_time_out_and_leak_nothing() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|c| {
        c.webrtc.ice_timeout = Duration::from_secs(2);
        c.webrtc.ping_interval = Duration::from_secs(1);
        // All from one address: this test is about timeouts, not the cap
        // (unanswered_offers_are_capped_per_address).
        c.webrtc.max_pending_offers_per_ip = 1000;
    })
    .await;
    let mut publisher = publishing(&server, "cam").await;
    let url = server.ws_url("/live/cam");
    let sockets_before = server.metric("streamd_webrtc_signalling_sockets").await;

    // 500 that never speak, 500 that ask for an offer and never answer.
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut ws = connect(&url).await;
        if i % 2 == 1 {
            send(&mut ws, json!({"command": "request_offer"})).await;
        }
        idle.push(ws);
    }
    // The server still serves a real viewer meanwhile.
    let mut viewer = Viewer::connect(&url, false).await.expect("an offer");
    assert!(viewer.plays().await);
    assert!(server.metric("streamd_webrtc_viewers").await >= 1.0);

    // Each of the thousand gets its offer (if it asked), pings, then 408
    // and the close.
    let mut pinged = 0;
    for (i, mut ws) in idle.into_iter().enumerate() {
        let mut last: Option<Value> = None;
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(m) = ws.next().await {
                match m {
                    Ok(Message::Text(t)) => last = Some(serde_json::from_str(&t).unwrap()),
                    Ok(Message::Ping(_)) => pinged += 1,
                    Ok(Message::Close(_)) => break,
                    Err(e) => panic!("socket {i}: {e} after {last:?}"),
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "socket {i} was never closed");
        let last = last.unwrap_or_else(|| panic!("socket {i} got no error"));
        assert_eq!(last["code"], 408, "{last}");
    }
    assert!(pinged > 0, "WebSocket pings are sent");
    // Only the real viewer is left.
    assert_eq!(server.metric("streamd_webrtc_viewers").await, 1.0);
    viewer.stop().await;
    for _ in 0..100 {
        if server.metric("streamd_webrtc_viewers").await == 0.0
            && server.metric("streamd_webrtc_signalling_sockets").await == sockets_before
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.metric("streamd_webrtc_viewers").await, 0.0);
    assert_eq!(
        server.metric("streamd_webrtc_signalling_sockets").await,
        sockets_before
    );
    let _ = publisher.kill().await;
    server.stop().await;
}

async fn send_text(ws: &mut common::webrtc::Ws, text: &str) {
    use futures_util::SinkExt;
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// The ICE-TCP port takes only ICE: a connection whose first packet is not
/// a STUN request for a viewer that exists now, or that ends mid-frame, is
/// closed at once, and viewers keep playing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_connections_that_are_not_ice_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|_| {}).await;
    let mut publisher = publishing(&server, "tcp").await;
    let tcp = server.webrtc_tcp.expect("ICE-TCP is on by default");

    // Well-formed STUN binding requests (USERNAME, PRIORITY,
    // MESSAGE-INTEGRITY): one naming engine 99, which does not exist, one
    // naming engine 0 but a ufrag no viewer has.
    let stun_for = |username: &[u8; 12]| {
        let mut stun = vec![0x00, 0x01, 0x00, 0x30, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[7; 12]);
        stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x0c]);
        stun.extend_from_slice(username);
        stun.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x7f, 0x1e, 0xff]);
        stun.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
        stun.extend_from_slice(&[0u8; 20]);
        stun
    };
    let stun = stun_for(b"99zzzzzz:abc");
    let no_viewer = stun_for(b"00zzzzzz:abc");
    let framed = |p: &[u8]| {
        let mut f = (p.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(p);
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not STUN", framed(b"GET / HTTP/1.1\r\n\r\n")),
        ("STUN for no engine of ours", framed(&stun)),
        ("STUN for no viewer of ours", framed(&no_viewer)),
        ("a frame cut short", vec![0xff, 0xff, 1, 2, 3]),
        ("an empty frame", vec![0, 0]),
    ];
    for (what, bytes) in cases {
        let mut c = tokio::net::TcpStream::connect(tcp).await.unwrap();
        c.write_all(&bytes).await.unwrap();
        if what == "a frame cut short" {
            c.shutdown().await.unwrap();
        }
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: still open after 5 s"));
        assert!(matches!(n, Ok(0) | Err(_)), "{what}: got {n:?}");
    }

    // Signalling and UDP playback are unaffected.
    let mut viewer = Viewer::connect(&server.ws_url("/live/tcp"), false)
        .await
        .expect("an offer");
    let sdp = viewer.offer["sdp"]["sdp"].as_str().unwrap().to_owned();
    assert!(sdp.contains("tcptype passive"), "{sdp}");
    assert!(viewer.plays().await);
    viewer.stop().await;
    let _ = publisher.kill().await;
    server.stop().await;
}

/// One address cannot hold more than `max_pending_offers_per_ip` offers
/// unanswered (each holds an ICE/DTLS session): the next gets a 429, and a
/// slot comes back when an offer is answered or its socket closes. Another
/// address is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_offers_are_capped_per_address() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|c| c.webrtc.max_pending_offers_per_ip = 3).await;
    let mut publisher = publishing(&server, "cam").await;
    let url = server.ws_url("/live/cam");
    let mut held = vec![];
    for _ in 0..3 {
        let mut ws = connect(&url).await;
        send(&mut ws, json!({"command": "request_offer"})).await;
        let offer = next_json(&mut ws).await.unwrap();
        assert_eq!(offer["command"], "offer", "{offer}");
        held.push(ws);
    }
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"command": "request_offer"})).await;
    expect_error(&mut ws, 429, "Too many unanswered offers").await;
    assert!(
        server.metric("streamd_webrtc_viewers").await.eq(&3.0),
        "the refused offer made no viewer"
    );

    // Another address is not affected.
    let mut ws = connect_from(&url, [127, 0, 0, 2]).await;
    send(&mut ws, json!({"command": "request_offer"})).await;
    assert_eq!(next_json(&mut ws).await.unwrap()["command"], "offer");
    drop(ws);

    // A held offer's socket closes: its slot comes back.
    let mut closed = held.pop().unwrap();
    closed.close(None).await.unwrap();
    drop(closed);
    let retried = offer_when_free(&url).await;

    // An answered offer frees its slot: with every slot free again, a
    // viewer answers and plays, and three more offers are still taken.
    drop(held);
    drop(retried);
    let mut viewer = None;
    for _ in 0..50 {
        match Viewer::connect(&url, false).await {
            Ok(v) => {
                viewer = Some(v);
                break;
            }
            Err(refused) => assert_eq!(refused.0["code"], 429, "{:?}", refused.0),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut viewer = viewer.expect("a slot came back");
    assert!(viewer.plays().await, "the viewer plays");
    let mut more = vec![];
    for _ in 0..3 {
        more.push(offer_when_free(&url).await);
    }
    viewer.stop().await;
    drop(more);
    publisher.kill().await.ok();
    server.stop().await;
}

/// A signalling socket from `ip` (a loopback address other than 127.0.0.1).
async fn connect_from(url: &str, ip: [u8; 4]) -> common::webrtc::Ws {
    let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().unwrap();
    let port = uri.port_u16().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((std::net::Ipv4Addr::from(ip), 0).into())
        .unwrap();
    let tcp = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connects");
    tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
        .await
        .expect("upgrades")
        .0
}

/// An offer on a new socket, retried while the address's slots are full
/// (a closed socket's slot comes back when the server sees it close).
async fn offer_when_free(url: &str) -> common::webrtc::Ws {
    for _ in 0..50 {
        let mut ws = connect(url).await;
        send(&mut ws, json!({"command": "request_offer"})).await;
        let v = next_json(&mut ws).await.unwrap();
        if v["command"] == "offer" {
            return ws;
        }
        assert_eq!(v["code"], 429, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no slot came back in 5 s");
}

/// A panic inside an engine (str0m on network input could raise one; a
/// fault hook raises it here) is contained: in one viewer's handling, only
/// that viewer is closed and told; outside any viewer, that engine's
/// viewers are closed and told and the engine goes on taking new ones. The
/// other engine's viewers keep playing throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_an_engine_closes_only_what_it_touched() {
    use common::webrtc::ViewerEvent;
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|c| c.webrtc.engines = 2).await;
    let mut publisher = publishing(&server, "cam").await;
    let url = server.ws_url("/live/cam");
    let sfu = server.sfu.clone().expect("webrtc is on");
    let panics = |scope: &str| format!("streamd_webrtc_panics_total{{scope=\"{scope}\"}}");
    let (viewer_before, engine_before) = (
        server.metric(&panics("viewer")).await,
        server.metric(&panics("engine")).await,
    );
    let mut viewers = vec![];
    for _ in 0..4 {
        let mut v = Viewer::connect(&url, false).await.expect("joins");
        assert!(v.plays().await);
        viewers.push(v);
    }
    // Engine k numbers its viewers k (mod 2).
    let (mut first, mut second): (Vec<_>, Vec<_>) =
        viewers.into_iter().partition(|v| v.id % 2 == 0);
    assert_eq!((first.len(), second.len()), (2, 2));
    let closed = |ev: &ViewerEvent| matches!(ev, ViewerEvent::Closed);

    // A panic while handling one viewer: that viewer alone is closed.
    let mut victim = first.pop().unwrap();
    sfu.inject_panic(Some(victim.id as u32), victim.id as u32)
        .await;
    assert!(
        victim.run_until(Duration::from_secs(10), closed).await,
        "the viewer is told"
    );
    for v in first.iter_mut().chain(second.iter_mut()) {
        assert!(v.plays().await, "viewer {} still plays", v.id);
    }
    assert_eq!(server.metric(&panics("viewer")).await - viewer_before, 1.0);

    // A panic in the engine itself: its viewers are closed and told, the
    // other engine's keep playing.
    sfu.inject_panic(None, first[0].id as u32).await;
    assert!(
        first[0].run_until(Duration::from_secs(10), closed).await,
        "the engine's viewer is told"
    );
    for v in second.iter_mut() {
        assert!(v.plays().await, "viewer {} on the other engine plays", v.id);
    }
    assert_eq!(server.metric(&panics("engine")).await - engine_before, 1.0);

    // The engine goes on: new viewers land on it (joins alternate) and play.
    let mut fresh = vec![];
    while !fresh.iter().any(|v: &Viewer| v.id % 2 == 0) {
        assert!(fresh.len() < 4, "no viewer joined the first engine");
        let mut v = Viewer::connect(&url, false).await.expect("joins");
        assert!(v.plays().await, "viewer {} plays after the panic", v.id);
        fresh.push(v);
    }
    // Only the two closed viewers left the count.
    assert_eq!(
        server.metric("streamd_webrtc_viewers").await,
        (second.len() + fresh.len()) as f64
    );
    for v in second.into_iter().chain(fresh) {
        v.stop().await;
    }
    drop(victim);
    drop(first);
    publisher.kill().await.ok();
    server.stop().await;
}
