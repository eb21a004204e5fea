//! Webhooks reach a local receiver, signed, and are retried when it fails.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use serde_json::Value;

#[derive(Default)]
struct Received {
    /// (event, signature valid, body) of every request, failed ones too.
    calls: Vec<(String, bool, Value)>,
}

/// A receiver for webhooks (`/hook`, answered 204) and admission requests
/// (`/admission`, answered allowed) that records every body it gets, each
/// after `delay`; its address and the bodies.
async fn recording_receiver(delay: Duration) -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = move |seen: Arc<Mutex<Vec<Value>>>, body: Bytes| async move {
        tokio::time::sleep(delay).await;
        seen.lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
    };
    let (hooks, admissions) = (seen.clone(), seen.clone());
    let app = Router::new()
        .route(
            "/hook",
            post(move |body: Bytes| {
                let seen = hooks.clone();
                async move {
                    record(seen, body).await;
                    StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/admission",
            post(move |body: Bytes| {
                let seen = admissions.clone();
                async move {
                    record(seen, body).await;
                    axum::Json(serde_json::json!({"allowed": true}))
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

#[tokio::test]
async fn stream_events_are_signed_and_retried() {
    let received = Arc::new(Mutex::new(Received::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = {
        let received = received.clone();
        Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let received = received.clone();
                async move {
                    let sig = headers
                        .get("x-streamd-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let valid = sig
                        == streamd::webhooks::signature(
                            b"hook-secret-0123456789abcdef0123456789",
                            &body,
                        );
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let event = v["event"].as_str().unwrap_or("").to_owned();
                    let mut r = received.lock().unwrap();
                    // The first delivery of each event fails: it must come again.
                    let first = !r.calls.iter().any(|(e, _, _)| *e == event);
                    r.calls.push((event, valid, v));
                    if first {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        )
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let server = TestServer::start(|c| {
        c.webhooks.urls = vec![format!("http://{addr}/hook")];
        c.webhooks.secret = "hook-secret-0123456789abcdef0123456789".into();
        c.webhooks.retry_backoff = Duration::from_millis(100);
        c.bus.reconnect_grace = Duration::from_secs(1);
    })
    .await;
    let publisher = server.publish("live", "hooked", 2, "160x120");
    let _ = finish(publisher).await;
    // started (failed, then retried), and stopped after the grace; the
    // recording's start, and its end once uploaded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done = {
            let r = received.lock().unwrap();
            [
                "stream.started",
                "stream.stopped",
                "recording.started",
                "recording.ready",
            ]
            .iter()
            .all(|e| r.calls.iter().filter(|(x, _, _)| x == e).count() >= 2)
        };
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = received.lock().unwrap().calls.clone();
    let of = |prefix: &str| -> Vec<&str> {
        calls
            .iter()
            .map(|(e, _, _)| e.as_str())
            .filter(|e| e.starts_with(prefix))
            .collect()
    };
    assert_eq!(
        of("recording."),
        [
            "recording.started",
            "recording.started",
            "recording.ready",
            "recording.ready"
        ],
        "each delivered once after one failure, in order"
    );
    let events = of("stream.");
    assert_eq!(
        events,
        [
            "stream.started",
            "stream.started",
            "stream.stopped",
            "stream.stopped"
        ],
        "each delivered once after one failure, in order"
    );
    let mut recording_ids = Vec::new();
    for (event, valid, body) in &calls {
        assert!(valid, "{event}: bad signature: {body}");
        if event.starts_with("recording.") {
            assert_eq!(body["data"]["app"], "live", "{body}");
            assert_eq!(body["data"]["stream"], "hooked", "{body}");
            recording_ids.push(body["data"]["id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(body["data"]["stream"], "live/hooked", "{body}");
        }
        assert!(body["time"].as_u64().unwrap() > 0);
    }
    // One recording, and `ready` says so.
    recording_ids.dedup();
    assert_eq!(recording_ids.len(), 1, "{recording_ids:?}");
    let ready = calls
        .iter()
        .rfind(|(e, _, _)| e == "recording.ready")
        .unwrap();
    assert_eq!(ready.2["data"]["status"], "ready");
    assert!(
        ready.2["data"]["durationMs"].as_u64().unwrap() > 1000,
        "{}",
        ready.2
    );
    server.stop().await;
}

/// OME's AdmissionWebhooks: the backend is asked (signed as OME signs)
/// before a publish or a play opens, its refusal holds for RTMP, WebRTC and
/// LL-HLS, its new_url moves a publish, and it hears `closing`.
#[tokio::test]
async fn an_ome_admission_backend_decides() {
    let (logs, _guard) = Logs::capture();
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = {
        let seen = seen.clone();
        Router::new().route(
            "/admission",
            post(move |headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                async move {
                    // Recorded, and checked by the test below: a panic
                    // here would only drop this connection.
                    let sig = headers
                        .get("x-ome-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let signed = sig == streamd::auth::admission::signature(b"ome-secret", &body);
                    let mut v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let url = v["request"]["url"].as_str().unwrap_or("").to_owned();
                    v["signed"] = Value::Bool(signed);
                    seen.lock().unwrap().push(v);
                    let answer = if url.contains("/deny") {
                        serde_json::json!({"allowed": false, "reason": "not on the list"})
                    } else if url.contains("short") {
                        serde_json::json!({"allowed": true, "lifetime": 1500})
                    } else if url.contains("/redirect") {
                        serde_json::json!({"allowed": true, "new_url": "rtmp://elsewhere/live/renamed"})
                    } else {
                        serde_json::json!({"allowed": true, "lifetime": 60000})
                    };
                    axum::Json(answer)
                }
            }),
        )
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let server = TestServer::start(|c| {
        c.admission.url = format!("http://{addr}/admission");
        c.admission.secret = "ome-secret".into();
    })
    .await;

    // RTMP: refused (for the backend's reason), moved, allowed.
    let (status, err) = finish(server.publish("live", "deny", 1, "160x120")).await;
    assert!(!status.success(), "a refused publish went through: {err}");
    assert!(
        err.contains("refused by the admission webhook: not on the list"),
        "{err}"
    );
    let mut moved = server.publish("live", "redirect", 30, "160x120");
    let r = poll(
        &server.url("/live/renamed/llhls.m3u8"),
        Duration::from_secs(15),
        |r| r.status == 200,
    )
    .await;
    assert_eq!(r.status, 200, "the publish was not moved to live/renamed");
    // Playback: WebRTC and LL-HLS of a stream the backend denies.
    let url_deny = server.ws_url("/live/deny");
    match common::webrtc::Viewer::connect(&url_deny, false).await {
        Err(common::webrtc::Refused(e)) => assert_eq!(e["code"], 404, "{e}"),
        Ok(_) => panic!("a denied WebRTC viewer got an offer"),
    }
    // A stream that does not exist is not asked about.
    assert_eq!(get(&server.url("/live/deny/llhls.m3u8")).await.status, 404);
    // Allowed LL-HLS: asked once per client, stream and credential, then
    // cached.
    for _ in 0..3 {
        assert_eq!(
            get(&server.url("/live/renamed/llhls.m3u8")).await.status,
            200
        );
    }
    // Another credential is another question; this one the backend denies.
    assert_eq!(
        get(&server.url("/live/renamed/llhls.m3u8?token=other&why=/deny"))
            .await
            .status,
        403
    );
    // A lifetime ends the session: a WebRTC viewer's socket is closed...
    let mut short = common::webrtc::Viewer::connect(&server.ws_url("/live/renamed?short=1"), false)
        .await
        .expect("an admitted viewer gets an offer");
    let started = tokio::time::Instant::now();
    assert!(
        short
            .run_until(Duration::from_secs(10), |ev| matches!(
                ev,
                common::webrtc::ViewerEvent::Closed
            ))
            .await,
        "the viewer outlived its admission lifetime"
    );
    assert!(started.elapsed() >= Duration::from_millis(1000));
    // ...and an RTMP publish is cut (ffmpeg would run 30 s).
    let cut = server.publish("live", "short", 30, "160x120");
    let (status, _) = tokio::time::timeout(Duration::from_secs(15), finish(cut))
        .await
        .expect("the publish was cut at its lifetime");
    assert!(!status.success());
    logs.wait_for(
        &[
            "closing publisher: its admission lifetime is over",
            "live/short",
        ],
        Duration::from_secs(5),
    )
    .await;
    let _ = moved.kill().await;
    let _ = moved.wait().await;
    // The backend hears the admitted publish close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline
        && seen
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["request"]["status"] == "closing")
            .count()
            < 3
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let closing: Vec<&Value> = seen
        .iter()
        .filter(|v| v["request"]["status"] == "closing")
        .collect();
    // The admitted RTMP publishes (moved, short) and the short WebRTC viewer.
    let protocols: Vec<&str> = closing
        .iter()
        .filter_map(|v| v["request"]["protocol"].as_str())
        .collect();
    assert_eq!(
        protocols.iter().filter(|p| **p == "rtmp").count(),
        2,
        "{seen:?}"
    );
    assert_eq!(
        protocols.iter().filter(|p| **p == "webrtc").count(),
        1,
        "{seen:?}"
    );
    let llhls_asks = seen
        .iter()
        .filter(|v| {
            v["request"]["protocol"] == "llhls"
                && v["request"]["url"]
                    .as_str()
                    .is_some_and(|u| u.contains("/renamed/") && !u.contains("deny"))
        })
        .count();
    assert!(
        !seen.iter().any(|v| v["request"]["url"]
            .as_str()
            .is_some_and(|u| u.contains("/live/deny/"))),
        "the backend was asked about a stream that does not exist: {seen:?}"
    );
    assert_eq!(
        llhls_asks, 1,
        "LL-HLS asks once per client and stream: {seen:?}"
    );
    for v in &seen {
        assert_eq!(v["signed"], true, "a call without a valid signature: {v}");
        assert!(v["client"]["address"].is_string(), "{v}");
        assert!(v["request"]["time"].as_u64().is_some(), "{v}");
    }
    server.stop().await;
}

/// `X-Forwarded-For` is believed only from `http.trusted_proxies`: the
/// admission backend is told the forwarded address when the request comes
/// through a trusted proxy, and the connection's own address otherwise.
/// The client is the rightmost address that is not a trusted proxy: what
/// the client itself wrote to its left is ignored. The LL-HLS admission
/// cache is keyed by that same address: behind a trusted proxy each client
/// is asked about once; from anyone else, the header changes nothing.
#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let (addr, seen) = recording_receiver(Duration::ZERO).await;
    for (trusted, expect, asks) in [
        (vec![], "127.0.0.1", 1),
        (vec!["127.0.0.0/8", "10.0.0.0/8"], "203.0.113.9", 2),
    ] {
        seen.lock().unwrap().clear();
        let server = TestServer::start(|c| {
            c.admission.url = format!("http://{addr}/admission");
            c.admission.secret = "ome-secret".into();
            c.http.trusted_proxies = trusted.iter().map(|s| s.to_string()).collect();
        })
        .await;
        let _witness = common::rtmp::spawn_witness(server.rtmp, "live", "fwd").await;
        server.master_when_ready("live", "fwd").await;
        let r = request(
            "GET",
            &server.url("/live/fwd/llhls.m3u8?token=t"),
            // What the client wrote (a forged address), the client as our
            // first proxy saw it, and that proxy as the next one saw it.
            &[("x-forwarded-for", "198.51.100.66, 203.0.113.9, 10.0.0.1")],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let first = seen.lock().unwrap().clone();
        let asked: Vec<&Value> = first
            .iter()
            .filter(|v| {
                v["request"]["url"]
                    .as_str()
                    .is_some_and(|u| u.contains("token=t"))
            })
            .collect();
        assert_eq!(asked.len(), 1, "{first:?}");
        assert_eq!(asked[0]["client"]["real_ip"], expect, "trusted {trusted:?}");
        // The same client again, then another one behind the same proxy
        // (once with a forged address of its own in front).
        for forwarded in ["203.0.113.9", "1.2.3.4, 203.0.113.10", "203.0.113.10"] {
            let r = request(
                "GET",
                &server.url("/live/fwd/llhls.m3u8?token=t"),
                &[("x-forwarded-for", forwarded)],
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let seen = seen.lock().unwrap().clone();
        let asked = seen
            .iter()
            .filter(|v| {
                v["request"]["url"]
                    .as_str()
                    .is_some_and(|u| u.contains("token=t"))
            })
            .count();
        assert_eq!(asked, asks, "trusted {trusted:?}: {seen:?}");
        server.stop().await;
    }
}

/// Shutdown loses nothing it holds: a stream live at shutdown is reported
/// stopped, and its admitted publish and viewer `closing`, before the server is done
/// stopping (the receivers answer slowly, so nothing arrives by luck).
#[tokio::test]
async fn shutdown_delivers_stopped_events_and_closing_calls() {
    let (addr, seen) = recording_receiver(Duration::from_millis(300)).await;
    let server = TestServer::start(|c| {
        c.webhooks.urls = vec![format!("http://{addr}/hook")];
        c.webhooks.secret = "hook-secret-0123456789abcdef0123456789".into();
        c.admission.url = format!("http://{addr}/admission");
        c.admission.secret = "ome-secret".into();
        // Without a shutdown, the stream would wait a minute for its
        // publisher before it is reported stopped.
        c.bus.reconnect_grace = Duration::from_secs(60);
    })
    .await;
    let _witness = common::rtmp::spawn_witness(server.rtmp, "live", "held").await;
    server.master_when_ready("live", "held").await;
    // A WebRTC viewer the backend admitted, playing at shutdown.
    let mut viewer = common::webrtc::Viewer::connect(&server.ws_url("/live/held"), false)
        .await
        .expect("the viewer is admitted");
    assert!(viewer.plays().await);
    let started = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|v| v["event"] == "stream.started")
    {
        assert!(tokio::time::Instant::now() < started, "no stream.started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|v| v["event"] == "stream.stopped" && v["data"]["stream"] == "live/held"),
        "stream.stopped was not delivered before shutdown finished: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|v| v["request"]["status"] == "closing" && v["request"]["protocol"] == "rtmp"),
        "the admitted publish's closing was not delivered before shutdown finished: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|v| v["request"]["status"] == "closing" && v["request"]["protocol"] == "webrtc"),
        "the admitted viewer's closing was not delivered before shutdown finished: {seen:?}"
    );
    drop(viewer);
}

/// A publish the backend admits but whose name is then refused still ends
/// the backend's session: it hears `closing` for it.
#[tokio::test]
async fn an_admitted_publish_refused_for_its_name_is_closed_at_the_backend() {
    let (addr, seen) = recording_receiver(Duration::ZERO).await;
    let server = TestServer::start(|c| {
        c.admission.url = format!("http://{addr}/admission");
        c.admission.secret = "ome-secret".into();
    })
    .await;
    let mut c = common::rtmp::RtmpClient::connect(server.rtmp, "live")
        .await
        .unwrap();
    match c.publish("bad name!").await {
        Err(common::rtmp::PublishError::Refused(code)) => {
            assert_eq!(code, "NetStream.Publish.BadName")
        }
        other => panic!("not refused: {other:?}"),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let statuses: Vec<Value> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["request"]["status"].clone())
            .collect();
        if statuses == ["opening", "closing"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend heard {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// Waits (bounded) until `done` holds for what the receiver recorded.
async fn recorded_until(
    seen: &Arc<Mutex<Vec<Value>>>,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = seen.lock().unwrap().clone();
        if done(&now) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `stream.viewers` reports a stream's viewer count when it changes, and
/// only then: 0 when it starts, 1 with a WebRTC viewer, 0 once it left.
#[tokio::test]
async fn viewer_counts_are_sent_when_they_change() {
    let (addr, seen) = recording_receiver(Duration::ZERO).await;
    let server = TestServer::start(|c| {
        c.webhooks.urls = vec![format!("http://{addr}/hook")];
        c.webhooks.viewers_interval = Duration::from_millis(200);
    })
    .await;
    let _witness = common::rtmp::spawn_witness(server.rtmp, "live", "counted").await;
    let counts = |all: &[Value]| -> Vec<u64> {
        all.iter()
            .filter(|v| v["event"] == "stream.viewers" && v["data"]["stream"] == "live/counted")
            .filter_map(|v| v["data"]["viewers"].as_u64())
            .collect()
    };
    recorded_until(&seen, "a count of 0", |all| counts(all) == [0]).await;
    let mut viewer = common::webrtc::Viewer::connect(&server.ws_url("/live/counted"), false)
        .await
        .expect("an offer");
    assert!(viewer.plays().await, "the viewer got no video");
    recorded_until(&seen, "a count of 1", |all| counts(all) == [0, 1]).await;
    viewer.stop().await;
    recorded_until(&seen, "a count of 0 again", |all| counts(all) == [0, 1, 0]).await;
    // Unchanged counts are not sent again (ten intervals later).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(counts(&seen.lock().unwrap()), [0, 1, 0]);
    let all = seen.lock().unwrap().clone();
    let last = all
        .iter()
        .rfind(|v| v["event"] == "stream.viewers")
        .unwrap();
    assert_eq!(last["data"]["app"], "live", "{last}");
    assert_eq!(last["data"]["id"], "counted", "{last}");
    server.stop().await;
}

/// A receiver that accepts connections and never answers; its address.
async fn silent_receiver() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

/// With the receiver hung, events beyond the queue are dropped and
/// counted, and publishing goes on undisturbed: 40 publishes (80 events)
/// into a queue of 4 behind 32 deliveries in flight.
#[tokio::test]
async fn a_full_queue_drops_and_counts_and_media_goes_on() {
    let addr = silent_receiver().await;
    let server = TestServer::start(|c| {
        c.webhooks.urls = vec![format!("http://{addr}/hook")];
        c.webhooks.queue = 4;
        c.webhooks.timeout = Duration::from_secs(60);
        c.webhooks.drain_timeout = Duration::from_millis(100);
        c.bus.reconnect_grace = Duration::from_millis(10);
    })
    .await;
    let metric = "streamd_webhooks_dropped_total";
    let before = server.metric(metric).await;
    for i in 0..40 {
        let mut c = common::rtmp::RtmpClient::connect(server.rtmp, "live")
            .await
            .unwrap();
        c.publish(&format!("flood{i}"))
            .await
            .unwrap_or_else(|e| panic!("publish {i} refused: {e:?}"));
    }
    // Every publish above was accepted while the queue was full; a stream
    // still plays.
    let _witness = common::rtmp::spawn_witness(server.rtmp, "live", "w").await;
    let r = poll(
        &server.url("/live/w/llhls.m3u8"),
        Duration::from_secs(10),
        |r| r.status == 200,
    )
    .await;
    assert_eq!(r.status, 200);
    // 80 events (started and stopped), at most 37 held (4 queued, 32 in
    // flight, 1 waiting for a slot): the rest dropped and counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut dropped = 0.0;
    while tokio::time::Instant::now() < deadline {
        dropped = server.metric(metric).await - before;
        if dropped >= 43.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped >= 43.0, "only {dropped} events dropped");
    server.stop().await;
}

/// A delivery is tried `attempts` times and then given up (logged and
/// counted), not retried forever.
#[tokio::test]
async fn a_failing_receiver_is_given_up_after_the_attempts() {
    let (logs, _guard) = Logs::capture();
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = {
        let calls = calls.clone();
        Router::new().route(
            "/hook",
            post(move |body: Bytes| {
                let calls = calls.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    calls
                        .lock()
                        .unwrap()
                        .push(v["event"].as_str().unwrap_or("").to_owned());
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        )
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let server = TestServer::start(|c| {
        c.webhooks.urls = vec![format!("http://{addr}/hook")];
        c.webhooks.attempts = 3;
        c.webhooks.retry_backoff = Duration::from_millis(50);
    })
    .await;
    let failed = "streamd_webhooks_failed_attempts_total";
    let before = server.metric(failed).await;
    let mut c = common::rtmp::RtmpClient::connect(server.rtmp, "live")
        .await
        .unwrap();
    c.publish("given-up").await.expect("publish accepted");
    logs.wait_for(
        &["webhook given up", "stream.started", "attempts=3"],
        Duration::from_secs(10),
    )
    .await;
    // Long enough for a fourth try (backoff 50, 100, then 200 ms): none.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let started = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|e| *e == "stream.started")
        .count();
    assert_eq!(started, 3, "stream.started was tried {started} times");
    assert!(server.metric(failed).await - before >= 3.0);
    drop(c);
    server.stop().await;
}
