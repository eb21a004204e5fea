//! Several nodes: origins and edges, each streamd run as its own process,
//! sharing the test Postgres (scripts/lib.sh starts it; without it these
//! tests fail, as tests/postgres.rs explains). A real ffmpeg publishes to
//! an origin; str0m WebRTC viewers and LL-HLS requests play on the edges.
//!
//! These nodes share loopback: each is its own process, with its own
//! ports, bus and metrics, and they meet only through HTTP and Postgres.

mod common;

use std::time::Duration;

use common::cluster::{CLUSTER_SECRET, Node, Place};
use common::webrtc::{Viewer, ViewerEvent};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One node at a time: each test runs a transcoding origin, which takes
/// most of both cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A GET with headers.
async fn get_with(url: &str, headers: &[(&str, &str)]) -> Response {
    request("GET", url, headers).await
}

/// A GET of `path` from the loopback address `src`: the response's head.
/// One client asking `node` for many names no origin lists: all 404, and
/// past its share (16 looked for or remembered as not found) without a
/// directory query; another client's lookups go on.
async fn flood_of_unknown_names_is_bounded_per_client(node: &Node) {
    let lookups_refused = "streamd_cluster_lookups_refused_total";
    let names: Vec<String> = (0..60)
        .map(|i| node.url(&format!("/live/nobody{i}/llhls.m3u8")))
        .collect();
    let answers = futures_util::future::join_all(names.iter().map(|u| get(u))).await;
    assert!(answers.iter().all(|r| r.status == 404));
    let refused = node.metric(lookups_refused).await;
    assert!(refused >= 20.0, "{refused} of 60 lookups refused");
    let other = raw_get_from([127, 0, 0, 7], &node.http, "/live/nobody-else/llhls.m3u8").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert_eq!(node.metric(lookups_refused).await, refused);
}

async fn raw_get_from(src: [u8; 4], to: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind((std::net::Ipv4Addr::from(src), 0).into()).unwrap();
    let mut c = s.connect(to.parse().unwrap()).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_and_two_edges_serve_one_publish() {
    let Some(db) = postgres_database().await else {
        return;
    };
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = tls::make_cert(dir.path(), "origin", tls::in_a_month());
    let origin =
        Node::start_tls(dir.path(), "origin", "origin", &db, &Place::Loopback, &cert).await;
    let edge1 = Node::start(dir.path(), "edge1", "edge", &db, "5s", &Place::Loopback).await;
    let edge2 = Node::start(dir.path(), "edge2", "edge", &db, "5s", &Place::Loopback).await;
    let _publisher = origin.publish("cl1", 120);
    let on_origin = origin.master("cl1", "").await;
    assert_eq!(on_origin.status, 200, "{}", origin.logs());

    // LL-HLS on edge 1: the origin's ladder, pulled on the first request.
    let m = edge1.master("cl1", "").await;
    assert_eq!(m.status, 200, "{}", edge1.logs());
    let text = m.text();
    assert!(text.contains("RESOLUTION=640x360"), "{text}");
    assert!(text.contains("RESOLUTION=320x180"), "{text}");
    let top = variant(&text, "avc1").expect("an H.264 variant");
    let (codec, width, height, frames) = probe_video(&edge1.url(&format!("/live/cl1/{top}"))).await;
    assert_eq!((codec.as_str(), width, height), ("h264", 640, 360));
    assert!(frames > 0);
    // Its playlist advances on the edge.
    let playlist = edge1.url(&format!("/live/cl1/{top}"));
    let first = llhls::parse_media(&get(&playlist).await.text());
    let later = poll(&playlist, Duration::from_secs(10), |r| {
        let m = llhls::parse_media(&r.text());
        m.media_sequence + m.segments.len() as u64
            > first.media_sequence + first.segments.len() as u64
    })
    .await;
    llhls::check_rules(&llhls::parse_media(&later.text()));

    // WebRTC on both edges: the ladder's H.264 and the origin's Opus decode.
    common::webrtc::assert_viewer_decodes(&edge2.ws("/live/cl1")).await;
    // WHEP on an edge, by aiortc.
    let whep = aiortc(&edge1.url("/live/cl1/whep"), 5, &[]).await;
    assert_eq!(whep["errors"].as_array().map(Vec::len), Some(0), "{whep}");
    assert!(whep["video_frames"].as_u64().unwrap() >= 50, "{whep}");
    assert!(whep["audio_frames"].as_u64().unwrap() >= 100, "{whep}");
    let mut v1 = Viewer::connect(&edge1.ws("/live/cl1"), false)
        .await
        .expect("an offer on edge 1");
    let mut v2 = Viewer::connect(&edge2.ws("/live/cl1"), false)
        .await
        .expect("an offer on edge 2");
    assert!(v1.video_frames(30, Duration::from_secs(15)).await);
    assert!(v2.video_frames(30, Duration::from_secs(15)).await);
    // Each edge pulls the stream once, whatever its viewers: 4 tracks
    // (two rungs, AAC for LL-HLS, Opus for WebRTC) per edge.
    let served = origin.metric("streamd_cluster_pulls_served").await;
    assert_eq!(served, 8.0, "pulls the origin serves");
    // The viewers' keyframe requests reached the origin.
    let asked = origin
        .metric_reaches(
            "streamd_cluster_keyframe_requests_total",
            Duration::from_secs(5),
            |v| v > 0.0,
        )
        .await;
    assert!(asked > 0.0, "no keyframe request reached the origin");
    // Throttled: both viewers ask for a keyframe every 50 ms for 4 s; each
    // edge passes at most one a second per track to the origin.
    let flood = std::time::Instant::now();
    while flood.elapsed() < Duration::from_secs(4) {
        v1.request_keyframe();
        v2.request_keyframe();
        v1.run_until(Duration::from_millis(25), |_| false).await;
        v2.run_until(Duration::from_millis(25), |_| false).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = origin
        .metric("streamd_cluster_keyframe_requests_total")
        .await;
    assert!(
        (2.0..=2.0 * 5.0).contains(&(after - asked)),
        "{} keyframe requests reached the origin from 160 in 4 s",
        after - asked
    );

    // A stream nobody publishes: 404 from the edge, quickly.
    let started = std::time::Instant::now();
    let r = get(&edge1.url("/live/nobody/llhls.m3u8")).await;
    assert_eq!(r.status, 404);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // A flood of names nobody publishes is bounded per client.
    flood_of_unknown_names_is_bounded_per_client(&edge1).await;
    // An edge takes no publishers.
    let mut refused = edge1.publish("oops", 5);
    let status = tokio::time::timeout(Duration::from_secs(15), refused.wait())
        .await
        .expect("the publisher was refused")
        .unwrap();
    assert!(!status.success());
    assert!(edge1.logs().contains("cluster edge"), "{}", edge1.logs());

    // The origin's pull API: the secret is required, and only what it has.
    let base = origin.url("/cluster/v1/streams/live");
    let bearer = format!("Bearer {CLUSTER_SECRET}");
    let auth = [("authorization", bearer.as_str())];
    assert_eq!(get(&format!("{base}/cl1")).await.status, 401);
    let wrong = [("authorization", "Bearer not-the-secret")];
    assert_eq!(get_with(&format!("{base}/cl1"), &wrong).await.status, 401);
    let described = get_with(&format!("{base}/cl1"), &auth).await;
    assert_eq!(described.status, 200);
    let info: serde_json::Value = serde_json::from_slice(&described.body).unwrap();
    assert_eq!(info["tracks"].as_array().unwrap().len(), 4, "{info}");
    assert_eq!(get_with(&format!("{base}/nobody"), &auth).await.status, 404);
    assert_eq!(
        get_with(&format!("{base}/cl1/tracks/nope?session=0"), &auth)
            .await
            .status,
        404
    );
    // An edge serves no pulls: it never passes on what it pulled.
    let from_edge = get_with(&edge1.url("/cluster/v1/streams/live/cl1"), &auth).await;
    assert_eq!(from_edge.status, 404);

    // A pull that stops reading is dropped by the origin; the edges'
    // viewers play on meanwhile.
    let stalls = origin.metric("streamd_http_write_stalls_total").await;
    let stalled = stalled_pull(
        &origin.http,
        "/cluster/v1/streams/live/cl1/tracks/360p?session=0",
    )
    .await;
    let started = std::time::Instant::now();
    loop {
        assert!(v1.video_frames(15, Duration::from_secs(5)).await);
        assert!(v2.video_frames(15, Duration::from_secs(5)).await);
        if origin.metric("streamd_http_write_stalls_total").await > stalls {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the origin did not drop a pull that reads nothing"
        );
    }
    println!("the stalled pull was dropped after {:?}", started.elapsed());
    drop(stalled);

    // Over HTTP/2 a pull can stall while its socket does not: the client
    // reads every frame, answers pings, and grants the stream no window.
    // The origin ends that pull itself, and the connection serves on.
    let https = origin
        .https
        .as_deref()
        .expect("the origin listens for HTTPS");
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(1024)
        .handshake::<_, bytes::Bytes>(tls::h2_tls(https, &cert.cert).await)
        .await
        .expect("an HTTP/2 connection");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req =
        hyper::Request::get("https://localhost/cluster/v1/streams/live/cl1/tracks/360p?session=0")
            .header("authorization", format!("Bearer {CLUSTER_SECRET}"))
            .body(())
            .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    let response = response.await.expect("the pull's response head");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Its first bytes arrive, and then no more: nothing is released.
    let first = tokio::time::timeout(Duration::from_secs(10), body.data())
        .await
        .expect("the pull's first bytes")
        .expect("a DATA frame")
        .unwrap();
    assert!(!first.is_empty());
    let socket_stalls = origin.metric("streamd_http_write_stalls_total").await;
    let started = std::time::Instant::now();
    loop {
        assert!(v1.video_frames(15, Duration::from_secs(5)).await);
        if origin.metric("streamd_cluster_pull_stalls_total").await >= 1.0 {
            break;
        }
        assert!(
            // Under http.send_timeout (30 s), which would close the
            // whole connection.
            started.elapsed() < Duration::from_secs(25),
            "the origin kept a pull over HTTP/2 that got no window: {}",
            origin.logs()
        );
    }
    println!(
        "the HTTP/2 pull with no window was ended after {:?}",
        started.elapsed()
    );
    assert_eq!(
        origin.metric("streamd_http_write_stalls_total").await,
        socket_stalls,
        "the socket never stalled: the pull itself saw it"
    );
    // The same connection serves another request...
    let mut client = client.ready().await.expect("the connection is open");
    let (health, _) = client
        .send_request(
            hyper::Request::get("https://localhost/healthz")
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    assert_eq!(health.await.unwrap().status(), 200);
    // ...and the stalled response ends once its window opens.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut got = first.len();
        body.flow_control().release_capacity(got).unwrap();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("an ended body, not a reset");
            got += chunk.len();
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
        got
    })
    .await
    .expect("the stalled response ends");
    println!("the stalled HTTP/2 pull ended after {ended} bytes");
    drop(client);
    conn.abort();

    // A viewer joining edge 2 (offered, not answering yet) keeps its pull:
    // the last watching viewers leave, and edge 2 still has the stream
    // after edge 1 has let it go (3 s after its last viewer). The joiner's
    // session ends at `webrtc.ice_timeout` (30 s) without an answer, so
    // edge 1 gets 20 s.
    let (mut joiner, _) = tokio_tungstenite::connect_async(edge2.ws("/live/cl1"))
        .await
        .expect("signalling connects");
    common::webrtc::send(&mut joiner, serde_json::json!({"command": "request_offer"})).await;
    let offer = common::webrtc::next_json(&mut joiner)
        .await
        .expect("an offer");
    assert_eq!(offer["command"], "offer", "{offer}");
    let let_go = |n: &Node| n.logs().matches("its last viewer left").count();
    let (let_go1, let_go2) = (let_go(&edge1), let_go(&edge2));
    v1.stop().await;
    v2.stop().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let_go(&edge1) == let_go1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "edge 1 kept the stream: {}",
            edge1.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past edge 2's next checks too (one a second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(edge2.metric("streamd_streams_live").await, 1.0);
    assert_eq!(
        let_go(&edge2),
        let_go2,
        "edge 2 let the stream go under a joining viewer: {}",
        edge2.logs()
    );
    // The joiner goes too: each edge lets the stream go, and the origin
    // serves no pulls.
    drop(joiner);
    let left = origin
        .metric_reaches(
            "streamd_cluster_pulls_served",
            Duration::from_secs(40),
            |v| v == 0.0,
        )
        .await;
    assert_eq!(left, 0.0, "pulls still served after the viewers left");
    assert_eq!(edge2.metric("streamd_streams_live").await, 0.0);
    assert!(
        edge2.logs().contains("its last viewer left"),
        "{}",
        edge2.logs()
    );
}

/// A pull whose reader reads the response head and then nothing, on a
/// socket with a small receive buffer.
async fn stalled_pull(addr: &str, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr.parse().unwrap()).await.unwrap();
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {CLUSTER_SECRET}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 64];
    let n = s.read(&mut head).await.unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_streams_are_refused_on_edges_without_a_token() {
    let Some(db) = postgres_database().await else {
        return;
    };
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = Node::start(dir.path(), "origin", "origin", &db, "5s", &Place::Loopback).await;
    let edge = Node::start(dir.path(), "edge", "edge", &db, "5s", &Place::Loopback).await;
    // The stream and its token come from the origin's API; the edge
    // checks them against the same database and secret.
    let (id, key, token) = origin.private_stream().await;
    let id = id.as_str();
    let _publisher = origin.publish(&format!("{id}?key={key}"), 120);

    let ok = edge.master(id, &format!("?token={token}")).await;
    assert_eq!(ok.status, 200, "{}", edge.logs());
    assert_eq!(
        get(&edge.url(&format!("/live/{id}/llhls.m3u8")))
            .await
            .status,
        401
    );
    assert_eq!(
        get(&edge.url(&format!("/live/{id}/llhls.m3u8?token=bogus")))
            .await
            .status,
        403
    );
    // WebRTC: OME's 404 without a valid token, as on a single node.
    match Viewer::connect(&edge.ws(&format!("/live/{id}")), false).await {
        Ok(_) => panic!("a WebRTC viewer without a token was let in"),
        Err(common::webrtc::Refused(e)) => assert_eq!(e["code"], 404, "{e}"),
    }
    let mut viewer = Viewer::connect(&edge.ws(&format!("/live/{id}?token={token}")), false)
        .await
        .expect("an offer with the token");
    assert!(viewer.video_frames(30, Duration::from_secs(15)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_viewers_follow_the_publisher_to_another_origin() {
    let Some(db) = postgres_database().await else {
        return;
    };
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut origin1 = Node::start(
        dir.path(),
        "origin1",
        "origin",
        &db,
        "20s",
        &Place::Loopback,
    )
    .await;
    let origin2 = Node::start(
        dir.path(),
        "origin2",
        "origin",
        &db,
        "20s",
        &Place::Loopback,
    )
    .await;
    let edge = Node::start(dir.path(), "edge", "edge", &db, "20s", &Place::Loopback).await;
    let mut publisher = origin1.publish("moves", 120);
    assert_eq!(origin1.master("moves", "").await.status, 200);
    let mut viewer = Viewer::connect(&edge.ws("/live/moves"), false)
        .await
        .expect("an offer on the edge");
    assert!(viewer.video_frames(30, Duration::from_secs(15)).await);
    // An origin that lacks a stream pulls it too.
    let mut on_origin2 = Viewer::connect(&origin2.ws("/live/moves"), false)
        .await
        .expect("an offer on the other origin");
    assert!(on_origin2.video_frames(30, Duration::from_secs(15)).await);
    on_origin2.stop().await;

    // The origin dies with its publisher.
    origin1.child.start_kill().unwrap();
    let _ = origin1.child.wait().await;
    let _ = publisher.start_kill();
    let _ = publisher.wait().await;
    // The edge sees the stream interrupted: its viewer gets nothing.
    let killed = std::time::Instant::now();
    let mut seen = Vec::new();
    viewer
        .run_until(Duration::from_secs(6), |ev| {
            if let ViewerEvent::Video {
                rtp_time, keyframe, ..
            } = ev
            {
                seen.push((killed.elapsed().as_millis(), *rtp_time, *keyframe));
            }
            false
        })
        .await;
    // What was in flight arrives at once; no new media follows (at most
    // 2 s of media time in 6 s of waiting).
    let media_ms = match (seen.first(), seen.last()) {
        (Some((_, a, _)), Some((_, b, _))) => b.saturating_sub(*a) / 90,
        _ => 0,
    };
    assert!(
        media_ms < 2000,
        "{media_ms} ms of media came after the origin died: {seen:?}\n{}",
        edge.logs()
    );
    let waiting = edge.logs();
    assert!(
        waiting.contains("lost the origin") || waiting.contains("pull from the origin ended"),
        "{waiting}"
    );

    // The publisher comes back on the other origin: the edge finds it
    // there and its viewer plays on, in the same session.
    let _publisher = origin2.publish("moves", 120);
    assert!(
        viewer.video_frames(60, Duration::from_secs(30)).await,
        "the edge's viewer did not continue: {}",
        edge.logs()
    );
    assert!(edge.logs().contains("origin=origin2"), "{}", edge.logs());
    // origin2's publisher replaced the copy it had pulled, if it still
    // had it (it lets a copy go 3 s after its last viewer).
    let logs = origin2.logs();
    assert!(
        !logs.contains("cannot relay") && !logs.contains("already has a publisher"),
        "{logs}"
    );
}

/// `cluster.redirect`: a node that lacks a stream sends the viewers that
/// can follow an HTTP redirect (LL-HLS players, WHEP clients) to the
/// public URL of the origin that has it, and still pulls the stream for
/// OME signalling's WebSocket, which cannot follow one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_node_sends_hls_and_whep_viewers_to_the_origin() {
    let Some(db) = postgres_database().await else {
        return;
    };
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = Node::start(dir.path(), "origin", "origin", &db, "5s", &Place::Loopback).await;
    let edge = Node::start_env(
        dir.path(),
        "edge",
        "edge",
        &db,
        &Place::Loopback,
        &[("STREAMD_CLUSTER__REDIRECT", "true")],
    )
    .await;
    let _publisher = origin.publish("moved", 120);
    assert_eq!(origin.master("moved", "").await.status, 200);

    // LL-HLS: a 307 to the same path and query at the origin, which no
    // cache keeps (the stream may move), and the origin serves it.
    let asked = "/live/moved/llhls.m3u8?player=1";
    let r = get(&edge.url(asked)).await;
    assert_eq!(r.status, 307, "{}", edge.logs());
    assert_eq!(r.header("location"), Some(origin.url(asked).as_str()));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let there = get(r.header("location").unwrap()).await;
    assert_eq!(there.status, 200);
    assert!(there.text().starts_with("#EXTM3U"), "{}", there.text());
    assert_eq!(edge.metric("streamd_cluster_redirects_total").await, 1.0);
    // Many players behind one address (a NAT) asking at once: all sent on,
    // none refused as past the address's share of lookups (those asking
    // while a lookup is under way wait on its answer).
    let url = edge.url(asked);
    let crowd = futures_util::future::join_all((0..40).map(|_| get(&url))).await;
    assert!(
        crowd.iter().all(|r| r.status == 307),
        "{:?}",
        crowd.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        edge.metric("streamd_cluster_lookups_refused_total").await,
        0.0
    );
    let redirected = edge.metric("streamd_cluster_redirects_total").await;
    // A name no origin lists is not found, not redirected.
    assert_eq!(get(&edge.url("/live/nobody/llhls.m3u8")).await.status, 404);
    // WHEP: the client posts its offer again at the origin, and plays.
    let (mut whep, _) = Viewer::whep(&edge.url("/live/moved/whep"), None)
        .await
        .unwrap_or_else(|r| panic!("WHEP through the redirect: {} {}", r.status, r.text()));
    assert!(whep.video_frames(30, Duration::from_secs(15)).await);
    assert_eq!(
        edge.metric("streamd_cluster_redirects_total").await,
        redirected + 1.0
    );

    // OME signalling: the edge pulls the stream and plays it itself...
    let mut viewer = Viewer::connect(&edge.ws("/live/moved"), false)
        .await
        .expect("an offer from the edge");
    assert!(viewer.video_frames(30, Duration::from_secs(15)).await);
    // ...and, having it, serves LL-HLS itself rather than redirecting.
    assert_eq!(edge.master("moved", "").await.status, 200);
    assert_eq!(
        edge.metric("streamd_cluster_redirects_total").await,
        redirected + 1.0
    );

    // The same bound on a node that redirects.
    flood_of_unknown_names_is_bounded_per_client(&edge).await;
}
