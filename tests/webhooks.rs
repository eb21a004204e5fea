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
                    let valid = sig == streamd::webhooks::signature(b"hook-secret", &body);
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
        c.webhooks.secret = "hook-secret".into();
        c.webhooks.retry_backoff = Duration::from_millis(100);
        c.bus.reconnect_grace = Duration::from_secs(1);
    })
    .await;
    let publisher = server.publish("live", "hooked", 2, "160x120");
    let _ = finish(publisher).await;
    // started (failed, then retried), and stopped after the grace.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done = {
            let r = received.lock().unwrap();
            ["stream.started", "stream.stopped"]
                .iter()
                .all(|e| r.calls.iter().filter(|(x, _, _)| x == e).count() >= 2)
        };
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = received.lock().unwrap().calls.clone();
    let events: Vec<&str> = calls.iter().map(|(e, _, _)| e.as_str()).collect();
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
    for (event, valid, body) in &calls {
        assert!(valid, "{event}: bad signature: {body}");
        assert_eq!(body["data"]["stream"], "live/hooked", "{body}");
        assert!(body["time"].as_u64().unwrap() > 0);
    }
    server.stop().await;
}
