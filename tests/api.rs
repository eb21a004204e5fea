//! The REST API, publish keys and private playback, end to end over HTTP,
//! RTMP (real ffmpeg) and the WebRTC signalling, against SQLite.

mod common;

use std::time::Duration;

use common::webrtc::{Refused, Viewer};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use streamd::config::PublishPolicy;

/// Publishing and playing take CPU: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server whose publishing needs keys (as shipped).
async fn server() -> TestServer {
    TestServer::start(|c| c.auth.publish = PublishPolicy::Key).await
}

fn token(secret: &str, exp_offset: i64) -> String {
    let exp = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + exp_offset) as u64;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "tester", "exp": exp, "scope": "api"}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// An API token with `header`, HMAC-SHA256-signed with `key` whatever the
/// header says.
fn forged(header: &str, key: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"sub": "forger", "exp": exp, "scope": "api"});
    let input = format!("{}.{}", b64.encode(header), b64.encode(claims.to_string()));
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes());
    let sig = aws_lc_rs::hmac::sign(&k, input.as_bytes());
    format!("{input}.{}", b64.encode(sig.as_ref()))
}

struct Client {
    base: String,
    bearer: String,
}

impl Client {
    fn new(server: &TestServer) -> Client {
        Client {
            base: server.url("/api"),
            bearer: format!("Bearer {}", token(TEST_SECRET, 600)),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let headers = [
            ("authorization", self.bearer.as_str()),
            ("content-type", "application/json"),
        ];
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = request_with(method, &url, &headers, body).await;
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status.as_u16(), v)
    }

    async fn create(&self, name: &str, private: bool) -> Value {
        let (s, v) = self
            .call(
                "POST",
                "/streams",
                Some(json!({"name": name, "description": "d", "isPrivate": private})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }
}

#[tokio::test]
async fn streams_are_created_listed_keyed_rotated_and_deleted() {
    let server = server().await;
    let api = Client::new(&server);
    let a = api.create("Main stage", false).await;
    let id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(a["name"], "Main stage");
    assert_eq!(a["isPrivate"], false);
    assert_eq!(a["live"], false);
    let key = a["streamKey"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_"), "{a}");

    let (s, list) = api.call("GET", "/streams", None).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("streamKey").is_none(), "keys are not listed");
    let (s, one) = api.call("GET", &format!("/streams/{id}"), None).await;
    assert_eq!((s, one["id"].as_str()), (200, Some(id.as_str())));

    let (s, k) = api.call("GET", &format!("/streams/{id}/key"), None).await;
    assert_eq!((s, k["streamKey"].as_str()), (200, Some(key.as_str())));
    assert_eq!(
        k["obs"]["server"],
        format!("rtmp://127.0.0.1:{}/live", server.rtmp.port())
    );
    let (s, r) = api
        .call("POST", &format!("/streams/{id}/key:rotate"), None)
        .await;
    assert_eq!(s, 200);
    assert_ne!(r["streamKey"].as_str(), Some(key.as_str()));

    let (s, p) = api
        .call("GET", &format!("/streams/{id}/playback"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(p["webrtc"], format!("ws://{}/live/{id}", server.http));
    assert_eq!(
        p["llhls"],
        format!("http://{}/live/{id}/llhls.m3u8", server.http)
    );
    assert_eq!(p["token"], Value::Null);

    let (s, _) = api.call("DELETE", &format!("/streams/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, e) = api.call("GET", &format!("/streams/{id}"), None).await;
    assert_eq!(s, 404);
    assert_eq!(e["error"], "no such stream");
    let (s, _) = api.call("DELETE", &format!("/streams/{id}"), None).await;
    assert_eq!(s, 404);

    let (s, doc) = api.call("GET", "/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/api/streams/{id}/key:rotate"].is_object());
    server.stop().await;
}

#[tokio::test]
async fn the_api_needs_a_valid_token() {
    let server = server().await;
    let url = server.url("/api/streams");
    let cases = [
        ("none", None),
        ("another secret", Some(token("not-the-secret", 600))),
        ("expired", Some(token(TEST_SECRET, -120))),
        ("garbage", Some("abc.def.ghi".to_owned())),
        (
            "a playback token",
            Some(server.access.auth.mint(
                "",
                Some("playback"),
                Some("live/x"),
                Duration::from_secs(60),
            )),
        ),
        (
            "a publish token",
            Some(server.access.auth.mint(
                "",
                Some("publish"),
                Some("live/x"),
                Duration::from_secs(60),
            )),
        ),
        (
            "a token without the api scope (auth.api_tokens = \"scoped\")",
            Some(
                server
                    .access
                    .auth
                    .mint("", None, None, Duration::from_secs(60)),
            ),
        ),
        (
            "alg none",
            Some(forged(r#"{"alg":"none","typ":"JWT"}"#, TEST_SECRET)),
        ),
        (
            "RS256 in the header",
            Some(forged(r#"{"alg":"RS256","typ":"JWT"}"#, TEST_SECRET)),
        ),
        (
            "signed with the webhook key",
            Some(forged(
                r#"{"alg":"HS256","typ":"JWT"}"#,
                &streamd::auth::derive_key(TEST_SECRET, "webhooks"),
            )),
        ),
    ];
    // The control: the same forger, honest header and key, is accepted.
    let honest = forged(r#"{"alg":"HS256","typ":"JWT"}"#, TEST_SECRET);
    let r = request(
        "GET",
        &url,
        &[("authorization", &format!("Bearer {honest}"))],
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    for (what, t) in cases {
        let bearer = t.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("authorization", b)])
            .unwrap_or_default();
        let r = request("GET", &url, &headers).await;
        assert_eq!(r.status.as_u16(), 401, "{what}: {}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["error"].is_string(), "{what}: {v}");
        let r = request_with("POST", &url, &headers, r#"{"name":"x"}"#).await;
        assert_eq!(r.status.as_u16(), 401, "{what}");
    }
    // Nothing was created by the refused requests.
    let api = Client::new(&server);
    assert_eq!(api.call("GET", "/streams", None).await.1, json!([]));
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_and_changes_nothing() {
    let server = server().await;
    let api = Client::new(&server);
    let kept = api.create("kept", false).await;
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(100_000));
    let bodies: Vec<(&str, String, u16)> = vec![
        ("huge body", huge, 413),
        ("not JSON", "{name:".into(), 400),
        ("wrong type", r#"{"name": 5}"#.into(), 400),
        (
            "wrong type 2",
            r#"{"name": "a", "isPrivate": "yes"}"#.into(),
            400,
        ),
        (
            "unknown field",
            r#"{"name": "a", "admin": true}"#.into(),
            400,
        ),
        ("empty name", r#"{"name": "  "}"#.into(), 400),
        (
            "long name",
            format!(r#"{{"name": "{}"}}"#, "n".repeat(200)),
            400,
        ),
        ("control chars", r#"{"name": "a\u0000b"}"#.into(), 400),
        ("array", "[]".into(), 400),
    ];
    let bearer = format!("Bearer {}", token(TEST_SECRET, 600));
    for (what, body, status) in bodies {
        let r = request_with(
            "POST",
            &server.url("/api/streams"),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert!(
            v["error"].is_string(),
            "{what}: JSON error body, got {}",
            r.text()
        );
    }
    // SQL-looking names are just names.
    let sql = api.create("x'); DROP TABLE streams; --", false).await;
    assert_eq!(sql["name"], "x'); DROP TABLE streams; --");
    // Hostile ids: 404 (or 400 from the router), never a 5xx, nothing deleted.
    for id in [
        "..%2F..%2Fetc%2Fpasswd",
        "%27%20OR%201%3D1%20--",
        "a",
        &"z".repeat(500),
    ] {
        for (m, p) in [
            ("GET", format!("/streams/{id}")),
            ("DELETE", format!("/streams/{id}")),
            ("GET", format!("/streams/{id}/key")),
            ("POST", format!("/streams/{id}/key:rotate")),
        ] {
            let (s, _) = api.call(m, &p, None).await;
            assert!((400..500).contains(&s), "{m} {p}: {s}");
        }
    }
    let (_, list) = api.call("GET", "/streams", None).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&kept["id"].as_str().unwrap()));
    server.stop().await;
}

/// ffmpeg publishes `seconds` of test video to `url`; whether RTMP
/// accepted it (ffmpeg's exit status) and its stderr.
async fn publish_once(url: &str, seconds: u32) -> (bool, String) {
    let child = Publish {
        url,
        seconds,
        size: "160x120",
        gop: 30,
        copy_to: None,
    }
    .spawn();
    let (status, err) = tokio::time::timeout(Duration::from_secs(30), finish(child))
        .await
        .expect("ffmpeg ends");
    (status.success(), err)
}

#[tokio::test]
async fn publishing_needs_the_current_key() {
    let _one = SERIAL.lock().await;
    let server = server().await;
    let api = Client::new(&server);
    let s = api.create("keyed", false).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let key = s["streamKey"].as_str().unwrap().to_owned();
    let rtmp = |q: &str| format!("rtmp://{}/live/{id}{q}", server.rtmp);

    // Each refused by the server for its reason (ffmpeg prints the
    // onStatus description), not merely a failed ffmpeg.
    let refused = |err: &str, reason: &str| {
        assert!(
            err.contains(&format!("refused: {reason}")),
            "not refused for '{reason}': {err}"
        );
    };
    let (ok, err) = publish_once(&rtmp("?key=sk_wrong"), 1).await;
    assert!(!ok, "a wrong key was accepted: {err}");
    refused(&err, "wrong stream key");
    let (ok, err) = publish_once(&rtmp(""), 1).await;
    assert!(!ok, "no key was accepted: {err}");
    refused(&err, "a token is required");
    // An unregistered name is refused under the key policy.
    let (ok, err) = publish_once(&format!("rtmp://{}/live/whatever", server.rtmp), 1).await;
    assert!(!ok);
    refused(&err, "no such stream");

    // The right key: accepted, and the stream plays (LL-HLS appears).
    let mut publisher = Publish {
        url: &rtmp(&format!("?key={key}")),
        seconds: 30,
        size: "160x120",
        gop: 30,
        copy_to: None,
    }
    .spawn();
    let r = poll(
        &server.url(&format!("/live/{id}/llhls.m3u8")),
        Duration::from_secs(15),
        |r| r.status == 200,
    )
    .await;
    assert_eq!(r.status, 200);
    let (_, shown) = api.call("GET", &format!("/streams/{id}"), None).await;
    assert_eq!(shown["live"], true, "{shown}");
    // Two LL-HLS players (two browsers) polling a media playlist count as
    // two viewers; a third request from the first is the same viewer.
    let media = media_playlists(&r.text());
    let media_url = server.url(&format!("/live/{id}/{}", media[0]));
    for ua in ["player-a", "player-b", "player-a"] {
        let m = request("GET", &media_url, &[("user-agent", ua)]).await;
        assert_eq!(m.status, 200);
    }
    let (_, shown) = api.call("GET", &format!("/streams/{id}"), None).await;
    assert_eq!(shown["viewersByProtocol"]["llhls"], 2, "{shown}");
    assert_eq!(shown["viewers"], 2, "{shown}");
    let _ = publisher.kill().await;

    // OBS style: the key alone as the stream name, in the stream's app.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, rotated) = api
        .call("POST", &format!("/streams/{id}/key:rotate"), None)
        .await;
    let new_key = rotated["streamKey"].as_str().unwrap().to_owned();
    let (ok, err) = publish_once(&rtmp(&format!("?key={key}")), 1).await;
    assert!(!ok, "the rotated-out key was accepted: {err}");
    refused(&err, "wrong stream key");
    let (ok, err) = publish_once(&format!("rtmp://{}/live/{key}", server.rtmp), 1).await;
    assert!(!ok, "the rotated-out key (OBS style) was accepted: {err}");
    refused(&err, "wrong stream key");
    let (ok, err) = publish_once(&format!("rtmp://{}/live/{new_key}", server.rtmp), 2).await;
    assert!(ok, "the new key (OBS style) was refused: {err}");
    // A publish token for the stream works too; one for another does not.
    let t = server.access.auth.mint(
        "",
        Some("publish"),
        Some(&format!("live/{id}")),
        Duration::from_secs(60),
    );
    let (ok, err) = publish_once(&rtmp(&format!("?token={t}")), 2).await;
    assert!(ok, "a publish token was refused: {err}");
    let other = server.access.auth.mint(
        "",
        Some("publish"),
        Some("live/aaaaaaaaaaaa"),
        Duration::from_secs(60),
    );
    let (ok, err) = publish_once(&rtmp(&format!("?token={other}")), 1).await;
    assert!(!ok, "a token for another stream was accepted");
    refused(&err, "the token is not for this stream");
    server.stop().await;
}

#[tokio::test]
async fn private_streams_need_a_playback_token_for_that_stream() {
    let _one = SERIAL.lock().await;
    let server = server().await;
    let api = Client::new(&server);
    let a = api.create("private A", true).await;
    let b = api.create("private B", true).await;
    let (ida, keya) = (a["id"].as_str().unwrap(), a["streamKey"].as_str().unwrap());
    let (idb, keyb) = (b["id"].as_str().unwrap(), b["streamKey"].as_str().unwrap());
    let mut pa = server.publish("live", &format!("{ida}?key={keya}"), 60, "160x120");
    let mut pb = server.publish("live", &format!("{idb}?key={keyb}"), 60, "160x120");
    let (_, playback) = api
        .call("GET", &format!("/streams/{ida}/playback"), None)
        .await;
    let token_a = playback["token"]
        .as_str()
        .expect("a token for a private stream");
    assert!(
        playback["llhls"]
            .as_str()
            .unwrap()
            .ends_with(&format!("?token={token_a}"))
    );

    // LL-HLS: 401 without a token, 403 with another stream's or a bad one.
    let master = |id: &str, q: &str| server.url(&format!("/live/{id}/llhls.m3u8{q}"));
    let ok = poll(
        &master(ida, &format!("?token={token_a}")),
        Duration::from_secs(15),
        |r| r.status == 200,
    )
    .await;
    assert_eq!(ok.status, 200);
    // Every URI in the playlists carries the token, so players follow.
    let text = ok.text();
    let media = media_playlists(&text);
    assert!(media.iter().all(|u| u.contains("token=")), "{text}");
    let m = get(&server.url(&format!("/live/{ida}/{}", media[0]))).await;
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(
        m.text().contains(&format!("?token={token_a}\"")),
        "{}",
        m.text()
    );
    // Private: players may keep it, shared caches may not.
    for r in [&ok, &m] {
        let cc = r.header("cache-control").unwrap_or_default();
        assert!(cc.starts_with("private"), "{cc}");
    }
    // Every file of a private stream needs the token: the init section,
    // a part and a segment the playlist names, fetched without it, are
    // refused; with it they are served, privately.
    let playlist = m.text();
    let uri_of = |tag: &str| {
        playlist
            .lines()
            .find(|l| l.starts_with(tag))
            .and_then(|l| l.split("URI=\"").nth(1))
            .and_then(|u| u.split('"').next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {tag} URI in {playlist}"))
    };
    let init = uri_of("#EXT-X-MAP:");
    let part = uri_of("#EXT-X-PART:");
    let segment = playlist
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .expect("a segment URI")
        .to_owned();
    for uri in [&init, &part, &segment] {
        assert!(uri.contains("token="), "{uri}");
        let with = get(&server.url(&format!("/live/{ida}/{uri}"))).await;
        assert_eq!(with.status, 200, "{uri}: {}", with.text());
        let cc = with.header("cache-control").unwrap_or_default();
        assert!(cc.starts_with("private"), "{uri}: {cc}");
        let bare = uri.split('?').next().unwrap();
        let without = get(&server.url(&format!("/live/{ida}/{bare}"))).await;
        assert_eq!(without.status, 401, "{bare} served without a token");
        let other = get(&server.url(&format!("/live/{ida}/{bare}?token={}", "x.y.z"))).await;
        assert_eq!(other.status, 403, "{bare} served with a bad token");
    }
    assert_eq!(get(&master(ida, "")).await.status, 401);
    assert_eq!(
        get(&master(idb, &format!("?token={token_a}"))).await.status,
        403
    );
    assert_eq!(get(&master(ida, "?token=x.y.z")).await.status, 403);
    let (_, minted) = api
        .call(
            "POST",
            "/tokens/playback",
            Some(json!({"streamId": idb, "ttlSeconds": 30})),
        )
        .await;
    let token_b = minted["token"].as_str().unwrap();
    poll(
        &master(idb, &format!("?token={token_b}")),
        Duration::from_secs(15),
        |r| r.status == 200,
    )
    .await;

    // WebRTC: OME's 404 without a valid token for the stream, plays with one.
    for q in [String::new(), format!("?token={token_b}")] {
        match Viewer::connect(&server.ws_url(&format!("/live/{ida}{q}")), false).await {
            Err(Refused(e)) => assert_eq!(e["code"], 404, "{e}"),
            Ok(_) => panic!("WebRTC playback of a private stream with {q:?} was allowed"),
        }
    }
    let mut viewer = Viewer::connect(
        &server.ws_url(&format!("/live/{ida}?token={token_a}")),
        false,
    )
    .await
    .expect("a token for the stream is accepted");
    assert!(viewer.plays().await);
    viewer.stop().await;
    let _ = pa.kill().await;
    let _ = pb.kill().await;
    server.stop().await;
}

/// Deleting a live stream ends its broadcast: the publisher is cut, a
/// WebRTC viewer is closed, and LL-HLS ends.
#[tokio::test]
async fn deleting_a_live_stream_ends_it() {
    let _one = SERIAL.lock().await;
    let (logs, _guard) = Logs::capture();
    let server = server().await;
    let api = Client::new(&server);
    let s = api.create("doomed", false).await;
    let (id, key) = (s["id"].as_str().unwrap(), s["streamKey"].as_str().unwrap());
    let publisher = server.publish("live", &format!("{id}?key={key}"), 60, "160x120");
    server.master_when_ready("live", id).await;
    let mut viewer = Viewer::connect(&server.ws_url(&format!("/live/{id}")), false)
        .await
        .expect("a viewer of the live stream");
    assert!(viewer.plays().await, "the viewer got no video");
    // The API counts it, by protocol.
    let (_, shown) = api.call("GET", &format!("/streams/{id}"), None).await;
    assert_eq!(shown["viewersByProtocol"]["webrtc"], 1, "{shown}");
    assert_eq!(shown["viewers"], 1, "{shown}");

    let (status, _) = api.call("DELETE", &format!("/streams/{id}"), None).await;
    assert_eq!(status, 204);
    // ffmpeg would publish for a minute: it is cut, and says so.
    let (exit, err) = tokio::time::timeout(Duration::from_secs(20), finish(publisher))
        .await
        .expect("the publisher of a deleted stream was not cut");
    assert!(!exit.success(), "{err}");
    // Cut because the stream was deleted, not for any other failure.
    logs.wait_for(
        &["closing publisher: its broadcast was ended (stream deleted)"],
        Duration::from_secs(5),
    )
    .await;
    assert!(
        viewer
            .run_until(Duration::from_secs(10), |ev| matches!(
                ev,
                common::webrtc::ViewerEvent::Closed
            ))
            .await,
        "the viewer of a deleted stream was not closed"
    );
    // LL-HLS: the stream is gone or its playlists end.
    let master = get(&server.url(&format!("/live/{id}/llhls.m3u8"))).await;
    if master.status == 200 {
        let video = media_playlists(&master.text())
            .into_iter()
            .find(|u| u.starts_with("video"))
            .unwrap();
        let playlist = get(&server.url(&format!("/live/{id}/{video}")))
            .await
            .text();
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    } else {
        assert_eq!(master.status, 404);
    }
    // And it cannot come back with its old key.
    let (ok, _) = publish_once(&server.rtmp_url("live", &format!("{id}?key={key}")), 1).await;
    assert!(!ok, "a deleted stream's key still publishes");
    server.stop().await;
}

/// A playback token stops working when it expires: one expired on
/// arrival is refused (LL-HLS 403, WebRTC 404), and one that worked, and
/// so is cached, is refused once its expiry (and the 5 s leeway) passes.
#[tokio::test]
async fn expired_playback_tokens_are_refused_cached_or_not() {
    let _one = SERIAL.lock().await;
    let server = server().await;
    let api = Client::new(&server);
    let s = api.create("expiring", true).await;
    let (id, key) = (s["id"].as_str().unwrap(), s["streamKey"].as_str().unwrap());
    let mut publisher = server.publish("live", &format!("{id}?key={key}"), 60, "160x120");
    let master = |q: &str| server.url(&format!("/live/{id}/llhls.m3u8?token={q}"));
    let good = server.access.auth.mint(
        "",
        Some("playback"),
        Some(&format!("live/{id}")),
        Duration::from_secs(600),
    );
    poll(&master(&good), Duration::from_secs(15), |r| r.status == 200).await;

    // Expired a minute ago, correctly signed, for this stream.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "", "exp": exp, "scope": "playback", "stream": format!("live/{id}")}),
        &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(get(&master(&expired)).await.status, 403);
    match Viewer::connect(
        &server.ws_url(&format!("/live/{id}?token={expired}")),
        false,
    )
    .await
    {
        Err(Refused(e)) => assert_eq!(e["code"], 404, "{e}"),
        Ok(_) => panic!("an expired token played over WebRTC"),
    }

    // Valid for 2 s: it works (and is cached), then it stops working.
    let short = server.access.auth.mint(
        "",
        Some("playback"),
        Some(&format!("live/{id}")),
        Duration::from_secs(2),
    );
    assert_eq!(get(&master(&short)).await.status, 200);
    let refused = poll(&master(&short), Duration::from_secs(20), |r| {
        r.status != 200
    })
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    // Refused for good, on the media playlists too; the long token still plays.
    assert_eq!(get(&master(&short)).await.status, 403);
    let ok = get(&master(&good)).await;
    assert_eq!(ok.status, 200);
    let media = media_playlists(&ok.text());
    let bare = media[0].split('?').next().unwrap();
    let m = get(&server.url(&format!("/live/{id}/{bare}?token={short}"))).await;
    assert_eq!(m.status, 403);
    let _ = publisher.kill().await;
    server.stop().await;
}
