//! OME's REST API v1 subset, against the request and response examples of
//! OME's own documentation (tests/fixtures/ome-api, with their sources):
//! every answer has the documented envelope, and every field the
//! documented example has (but those listed as not offered) is there with
//! the same JSON type. A real ffmpeg publishes the stream it describes.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "ome-access-token-for-tests";

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ome-api")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn basic(token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(token)
    )
}

async fn call(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(server, method, path, body, Some(TOKEN)).await
}

async fn call_as(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let auth = token.map(basic);
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let r = request_with(method, &server.url(path), &headers, text).await;
    let v: Value = serde_json::from_str(&r.text())
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", r.text()));
    // The envelope: statusCode as the HTTP status, and a message.
    let status = r.status.as_u16();
    assert_eq!(v["statusCode"].as_u64(), Some(u64::from(status)), "{v}");
    assert!(v["message"].is_string(), "{v}");
    (status, v)
}

/// Every field of the documented `want` is in `got` with the same JSON
/// type, recursively (arrays by their first element), but for the
/// `skipped` paths (`a.b`, array elements as `[]`).
fn same_shape(want: &Value, got: &Value, at: &str, skipped: &[&str]) {
    if skipped.contains(&at) {
        return;
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if skipped.contains(&here.as_str()) {
                    continue;
                }
                let gv = g
                    .get(k)
                    .unwrap_or_else(|| panic!("`{here}` is missing: {got}"));
                same_shape(wv, gv, &here, skipped);
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if let (Some(w0), Some(g0)) = (w.first(), g.first()) {
                same_shape(w0, g0, &format!("{at}[]"), skipped);
            }
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Null, Value::Null) => {}
        _ => panic!("`{at}`: the docs have {want}, streamd answers {got}"),
    }
}

#[tokio::test]
async fn an_ome_backend_finds_its_api() {
    let server = TestServer::start(|c| c.ome_api.access_token = TOKEN.into()).await;

    // Auth: none, or another token, is the documented 401.
    let (status, v) = call_as(&server, "GET", "/v1/vhosts", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(v, fixture("error-401.response.json"));
    let (status, _) = call_as(&server, "GET", "/v1/vhosts", None, Some("not-the-token")).await;
    assert_eq!(status, 401);
    // Every call, whatever it would do, before it does it.
    for (method, path) in [
        ("GET", "/v1/version"),
        ("GET", "/v1/vhosts/default/apps/live/streams"),
        ("POST", "/v1/vhosts/default/apps/live:startRecord"),
        ("DELETE", "/v1/vhosts/default/apps/live/streams/cam"),
        ("GET", "/v1/vhosts/nowhere"),
    ] {
        let (status, _) = call_as(&server, method, path, None, None).await;
        assert_eq!(status, 401, "{method} {path}");
    }

    let (_, v) = call(&server, "GET", "/v1/vhosts", None).await;
    assert_eq!(v, fixture("vhosts.response.json"));
    let (_, v) = call(&server, "GET", "/v1/vhosts/default", None).await;
    same_shape(
        &fixture("vhost.response.json"),
        &v,
        "",
        &["response.host.tls"],
    );
    let (status, v) = call(&server, "GET", "/v1/vhosts/non-exists", None).await;
    assert_eq!(status, 404);
    assert_eq!(v, fixture("error-404-vhost.response.json"));
    let (status, v) = call(&server, "GET", "/v1/vhosts/default/apps/non-exists", None).await;
    assert_eq!(status, 404);
    assert_eq!(v, fixture("error-404-app.response.json"));

    // A live stream, from ffmpeg.
    let publisher = server.publish("app", "stream", 60, "320x240");
    server.master_when_ready("app", "stream").await;
    let (_, v) = call(&server, "GET", "/v1/vhosts/default/apps", None).await;
    assert_eq!(v["response"], json!(["app"]), "{v}");
    let (_, v) = call(&server, "GET", "/v1/vhosts/default/apps/app", None).await;
    assert_eq!(v["response"]["name"], "app", "{v}");
    let (_, v) = call(&server, "GET", "/v1/vhosts/default/apps/app/streams", None).await;
    assert_eq!(v["response"], json!(["stream"]), "{v}");

    let (_, v) = call(
        &server,
        "GET",
        "/v1/vhosts/default/apps/app/streams/stream",
        None,
    )
    .await;
    eprintln!("stream: {v}");
    // The GOP size is not known to streamd.
    same_shape(
        &fixture("stream.response.json"),
        &v,
        "",
        &["response.input.tracks[].video.keyFrameInterval"],
    );
    let input = &v["response"]["input"];
    assert_eq!(input["sourceType"], "Rtmp");
    let video = &input["tracks"][0]["video"];
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(video["codec"], "H264");
    let audio = &input["tracks"][1]["audio"];
    assert_eq!(audio["codec"], "AAC");
    assert_eq!(audio["samplerate"].as_u64(), Some(44_100));
    assert_eq!(audio["channel"].as_u64(), Some(2));

    // Recordings: streamd records the app's streams; :records lists them
    // in the documented record shape.
    let mut records = Value::Null;
    for _ in 0..100 {
        let (status, v) = call(
            &server,
            "POST",
            "/v1/vhosts/default/apps/app:records",
            Some(json!({})),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        if v["response"].as_array().is_some_and(|a| !a.is_empty()) {
            records = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("records: {records}");
    same_shape(
        &fixture("records.response.json"),
        &records,
        "",
        &["response[].interval"],
    );
    let record = &records["response"][0];
    assert_eq!(record["state"], "recording", "{record}");
    let id = record["id"].as_str().unwrap().to_owned();

    // :startRecord on the live stream answers its recording in progress.
    let mut start = fixture("startRecord.request.json");
    start["stream"]["name"] = json!("stream");
    let (status, v) = call(
        &server,
        "POST",
        "/v1/vhosts/default/apps/app:startRecord",
        Some(start),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    same_shape(
        &fixture("startRecord.response.json"),
        &v,
        "",
        &["response[].interval", "response[].schedule"],
    );
    // Known by the backend's id from now on: :records and :stopRecord
    // take it.
    let theirs = fixture("startRecord.request.json")["id"].clone();
    assert_eq!(v["response"][0]["id"], theirs);
    assert_eq!(v["response"][0]["state"], "recording");
    let (_, v) = call(
        &server,
        "POST",
        "/v1/vhosts/default/apps/app:records",
        Some(json!({"id": theirs})),
    )
    .await;
    assert_eq!(v["response"].as_array().map(Vec::len), Some(1), "{v}");
    let (status, v) = call(
        &server,
        "POST",
        "/v1/vhosts/default/apps/app:stopRecord",
        Some(json!({"id": theirs})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    let (status, v) = call(
        &server,
        "POST",
        "/v1/vhosts/default/apps/app:startRecord",
        Some(json!({"stream": {}})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        v,
        fixture("error-400-startRecord-missing-param.response.json")
    );

    // :stopRecord: one in progress ends with its stream (409), by
    // streamd's id too; an unknown id is the documented 404.
    let (status, v) = call(
        &server,
        "POST",
        "/v1/vhosts/default/apps/app:stopRecord",
        Some(json!({"id": id})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    let (status, v) = call(
        &server,
        "POST",
        "/v1/vhosts/default/apps/app:stopRecord",
        Some(json!({"id": "no-such-record"})),
    )
    .await;
    assert_eq!(status, 404);
    let mut want = fixture("error-404-stopRecord.response.json");
    want["message"] = json!(
        want["message"]
            .as_str()
            .unwrap()
            .replace("{id}", "no-such-record")
    );
    assert_eq!(v, want);
    // Actions on an app that does not exist are OME's 404.
    let (status, v) = call(
        &server,
        "POST",
        "/v1/vhosts/default/apps/non-exists:records",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(v, fixture("error-404-app.response.json"));

    // Push is not offered: 501 in OME's error shape.
    let (status, v) = call(
        &server,
        "POST",
        "/v1/vhosts/default/apps/app:startPush",
        Some(fixture("startPush-rtmp.request.json")),
    )
    .await;
    assert_eq!(status, 501, "{v}");
    assert!(v["message"].as_str().unwrap().ends_with("(501)"), "{v}");

    // DELETE ends the stream: its publisher is cut, and it is gone.
    let (status, v) = call(
        &server,
        "DELETE",
        "/v1/vhosts/default/apps/app/streams/stream",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v, fixture("stream-delete.response.json"));
    let (status, v) = call(
        &server,
        "GET",
        "/v1/vhosts/default/apps/app/streams/stream",
        None,
    )
    .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = call(
        &server,
        "DELETE",
        "/v1/vhosts/default/apps/app/streams/stream",
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(v, fixture("error-404-stream-delete.response.json"));
    let (exit, _) = tokio::time::timeout(Duration::from_secs(10), finish(publisher))
        .await
        .expect("the publisher is cut");
    assert!(!exit.success());
    server.stop().await;
}

/// Off unless a token is set: the paths are not served at all.
#[tokio::test]
async fn without_a_token_there_is_no_ome_api() {
    let server = TestServer::start(|_| {}).await;
    let r = get(&server.url("/v1/vhosts")).await;
    assert_eq!(r.status, 404);
    server.stop().await;
}
