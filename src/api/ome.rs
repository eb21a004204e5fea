//! OME's REST API v1, the subset an OME backend needs, at OME's paths and
//! with OME's auth and envelope, so such a backend keeps working:
//! - `GET /v1/version`, `/v1/vhosts`, `/v1/vhosts/{vh}`,
//!   `/v1/vhosts/{vh}/apps`, `/v1/vhosts/{vh}/apps/{app}`;
//! - `GET …/apps/{app}/streams` (the live streams' names),
//!   `GET …/streams/{s}` (its input and outputs), `DELETE …/streams/{s}`
//!   (ends it: the publisher is cut, players see the end);
//! - `POST …/apps/{app}:records` (streamd's recordings of the app, as
//!   OME's record infos), `:startRecord` and `:stopRecord` mapped onto
//!   streamd's recordings (see [`start_record`]);
//! - `:startPush`, `:stopPush`, `:pushes`: not supported (501, OME's error
//!   shape).
//!
//! Every answer is `{"statusCode":N,"message":"…","response":…}`. Auth is
//! `Authorization: Basic base64(<access token>)` (`[ome_api]
//! access_token`). Apps are not declared in streamd: an app exists while a
//! stream of it is live or managed.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};

use crate::auth::Access;
use crate::bus::{BroadcastConsumer, BroadcastStatus, Registry, StreamPath, TrackKind};
use crate::config::OmeApiConfig;
use crate::media::CodecConfig;
use crate::record::service::Recorder;
use crate::store::recordings::{Recording, RecordingStatus};

/// Largest request body taken (a record request is far smaller).
const MAX_BODY: usize = 16 * 1024;

#[derive(Clone)]
pub struct OmeApi {
    pub config: OmeApiConfig,
    pub access: Arc<Access>,
    pub registry: Registry,
    pub recorder: Option<Arc<Recorder>>,
    /// The ids backends gave `:startRecord`, and the recordings they name.
    pub aliases: Arc<Mutex<Aliases>>,
}

/// A backend's record ids for streamd's recordings (it asks `:stopRecord`
/// and `:records` with its own), at most [`Aliases::MAX`], oldest
/// forgotten first.
#[derive(Default)]
pub struct Aliases(VecDeque<(String, String)>);

impl Aliases {
    const MAX: usize = 1024;

    fn insert(&mut self, theirs: String, ours: String) {
        self.0.retain(|(t, _)| *t != theirs);
        if self.0.len() >= Self::MAX {
            self.0.pop_front();
        }
        self.0.push_back((theirs, ours));
    }

    /// streamd's recording id for a backend's `id` (or `id` itself).
    fn ours<'a>(&'a self, id: &'a str) -> &'a str {
        self.0
            .iter()
            .find(|(t, _)| t == id)
            .map_or(id, |(_, o)| o.as_str())
    }

    /// The backend's id for one of streamd's recordings, if it gave one.
    fn theirs(&self, ours: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(_, o)| o == ours)
            .map(|(t, _)| t.as_str())
    }
}

/// An answer in OME's envelope.
struct Answer(StatusCode, String, Option<Value>);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut body = json!({"statusCode": self.0.as_u16(), "message": self.1});
        if let Some(v) = self.2 {
            body["response"] = v;
        }
        let mut r = (self.0, axum::Json(body)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"OvenMediaEngine\""),
            );
        }
        r
    }
}

fn ok(v: Value) -> Answer {
    Answer(StatusCode::OK, "OK".into(), Some(v))
}

/// OME's error: the status and a message ending in `(code)`.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Answer {
    Answer(status, format!("{message} ({})", status.as_u16()), None)
}

type Result<T> = std::result::Result<T, Answer>;

fn storage(e: crate::store::StoreError) -> Answer {
    tracing::error!(error = %e, "ome api: storage error");
    error(StatusCode::SERVICE_UNAVAILABLE, "Storage unavailable")
}

pub fn routes(api: OmeApi) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/vhosts", get(vhosts))
        .route("/v1/vhosts/{vh}", get(vhost))
        .route("/v1/vhosts/{vh}/apps", get(apps))
        .route("/v1/vhosts/{vh}/apps/{app}", get(app).post(app_action))
        .route("/v1/vhosts/{vh}/apps/{app}/streams", get(streams))
        .route(
            "/v1/vhosts/{vh}/apps/{app}/streams/{stream}",
            get(stream).delete(delete_stream),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Every call, before its handler (and before a body is read).
        .route_layer(middleware::from_fn_with_state(api.clone(), authorized))
        .with_state(api)
}

async fn authorized(State(api): State<OmeApi>, request: Request, next: Next) -> Result<Response> {
    authorize(&api, request.headers())?;
    Ok(next.run(request).await)
}

/// `Authorization: Basic base64(<access token>)`, compared in constant
/// time.
fn authorize(api: &OmeApi, headers: &HeaderMap) -> Result<()> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let Some(given) = given else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "[HTTP] Authorization header is required to call API",
        ));
    };
    if aws_lc_rs::constant_time::verify_slices_are_equal(&given, api.config.access_token.as_bytes())
        .is_err()
    {
        return Err(error(StatusCode::UNAUTHORIZED, "[HTTP] Invalid credential"));
    }
    Ok(())
}

fn check_vhost(api: &OmeApi, vh: &str) -> Result<()> {
    if vh != api.config.vhost {
        return Err(error(
            StatusCode::NOT_FOUND,
            format_args!("Could not find the virtual host: [{vh:.64}]"),
        ));
    }
    Ok(())
}

async fn version() -> Result<Answer> {
    let v = env!("CARGO_PKG_VERSION");
    Ok(ok(
        json!({"version": v, "gitVersion": format!("streamd-{v}")}),
    ))
}

async fn vhosts(State(api): State<OmeApi>) -> Result<Answer> {
    Ok(ok(json!([api.config.vhost])))
}

async fn vhost(State(api): State<OmeApi>, Path(vh): Path<String>) -> Result<Answer> {
    check_vhost(&api, &vh)?;
    Ok(ok(json!({"name": vh, "host": {"names": ["*"]}})))
}

/// The apps that exist: those of live broadcasts and of managed streams.
async fn app_names(api: &OmeApi) -> Result<BTreeSet<String>> {
    let mut names: BTreeSet<String> = api
        .registry
        .list()
        .iter()
        .map(|b| b.path().app().to_owned())
        .collect();
    let managed = api.access.store.list().await.map_err(storage)?;
    names.extend(managed.into_iter().map(|s| s.app));
    Ok(names)
}

async fn apps(State(api): State<OmeApi>, Path(vh): Path<String>) -> Result<Answer> {
    check_vhost(&api, &vh)?;
    Ok(ok(json!(app_names(&api).await?)))
}

async fn check_app(api: &OmeApi, vh: &str, app: &str) -> Result<()> {
    check_vhost(api, vh)?;
    if !app_names(api).await?.contains(app) {
        return Err(error(
            StatusCode::NOT_FOUND,
            format_args!("Could not find the application: [{vh}/{app:.64}]"),
        ));
    }
    Ok(())
}

async fn app(State(api): State<OmeApi>, Path((vh, app)): Path<(String, String)>) -> Result<Answer> {
    check_app(&api, &vh, &app).await?;
    Ok(ok(json!({
        "name": app,
        "dynamic": true,
        "type": "live",
        "providers": {"rtmp": {}, "srt": {}, "webrtc": {}},
        "publishers": {"llhls": {}, "webrtc": {}},
    })))
}

/// The live broadcasts of `app`.
fn live(api: &OmeApi, app: &str) -> Vec<BroadcastConsumer> {
    let mut list: Vec<BroadcastConsumer> = api
        .registry
        .list()
        .into_iter()
        .filter(|b| b.path().app() == app && b.status() != BroadcastStatus::Ended)
        .collect();
    list.sort_by(|a, b| a.path().stream().cmp(b.path().stream()));
    list
}

async fn streams(
    State(api): State<OmeApi>,
    Path((vh, app)): Path<(String, String)>,
) -> Result<Answer> {
    check_app(&api, &vh, &app).await?;
    let names: Vec<String> = live(&api, &app)
        .iter()
        .map(|b| b.path().stream().to_owned())
        .collect();
    Ok(ok(json!(names)))
}

fn find_stream(api: &OmeApi, vh: &str, app: &str, stream: &str) -> Result<BroadcastConsumer> {
    check_vhost(api, vh)?;
    StreamPath::new(app, stream)
        .ok()
        .and_then(|p| api.registry.get(&p))
        .filter(|b| b.status() != BroadcastStatus::Ended)
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format_args!(
                    "[HTTP] Could not find the stream: [{vh}/#{vh}#{app:.64}/{stream:.64}]"
                ),
            )
        })
}

async fn stream(
    State(api): State<OmeApi>,
    Path((vh, app, name)): Path<(String, String, String)>,
) -> Result<Answer> {
    let b = find_stream(&api, &vh, &app, &name)?;
    Ok(ok(stream_info(&b)))
}

async fn delete_stream(
    State(api): State<OmeApi>,
    Path((vh, app, name)): Path<(String, String, String)>,
) -> Result<Answer> {
    let b = find_stream(&api, &vh, &app, &name)?;
    if api.registry.end(b.path()) {
        tracing::info!(stream = %b.path(), "stream ended through OME's API");
    }
    Ok(Answer(StatusCode::OK, "OK".into(), None))
}

fn iso(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    iso_ms(ms)
}

/// RFC 3339 in UTC with milliseconds, as OME writes times.
fn iso_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// A broadcast as OME describes a stream: its input (the publisher's
/// tracks) and its output (what players get: the ladder's or the source's
/// video, the AAC, the Opus).
fn stream_info(b: &BroadcastConsumer) -> Value {
    let snap = b.snapshot();
    let meta = &snap.meta;
    let catalog = snap.catalog.clone().unwrap_or_default();
    let config = |name: &str| {
        let mut c = b.subscribe(name, None)?;
        match c.try_next() {
            crate::bus::TryNext::Event(crate::bus::TrackEvent::Frame(f)) => {
                Some(f.group.config.clone())
            }
            _ => None,
        }
    };
    let source = catalog.video.iter().find(|v| v.passthrough);
    let mut input = Vec::new();
    for t in snap.tracks.iter().filter(|t| !t.derived) {
        let id = input.len();
        input.push(match (t.kind, config(&t.name).as_deref()) {
            (TrackKind::Video, c) => {
                let (width, height) = c
                    .and_then(CodecConfig::video_size)
                    .unwrap_or_else(|| source.map_or((0, 0), |v| (v.width, v.height)));
                let codec = c.map_or("H264", CodecConfig::name);
                json!({"id": id, "type": "Video", "video": {
                    "codec": codec, "width": width, "height": height,
                    "framerate": meta.frame_rate.unwrap_or(0.0),
                    "bitrate": meta.video_bitrate_kbps.map_or(0, |k| k * 1000).to_string(),
                    "bypass": false, "hasBframes": source.is_some_and(|v| !v.webrtc_safe),
                }})
            }
            (TrackKind::Audio, c) => {
                let (codec, rate, channels) = match c {
                    Some(CodecConfig::Aac(a)) => ("AAC", a.sample_rate, u32::from(a.channels)),
                    Some(CodecConfig::Opus(o)) => ("OPUS", 48_000, u32::from(o.channels)),
                    _ => (if meta.opus_audio { "OPUS" } else { "AAC" }, 0, 0),
                };
                json!({"id": id, "type": "Audio", "audio": {
                    "codec": codec, "samplerate": rate, "channel": channels,
                    "bitrate": meta.audio_bitrate_kbps.map_or(0, |k| k * 1000).to_string(),
                    "bypass": false,
                }})
            }
        });
    }
    let mut output = Vec::new();
    for v in &catalog.video {
        let id = output.len();
        output.push(if v.passthrough {
            json!({"id": id, "type": "Video", "video": {"bypass": true}})
        } else {
            json!({"id": id, "type": "Video", "video": {
                "codec": "H264", "width": v.width, "height": v.height,
                "bitrate": v.bitrate.to_string(), "framerate": meta.frame_rate.unwrap_or(0.0),
                "bypass": false, "hasBframes": false,
            }})
        });
    }
    for (name, codec) in [(&catalog.audio, "AAC"), (&catalog.webrtc_audio, "OPUS")] {
        let Some(name) = name else { continue };
        let id = output.len();
        let source_audio = snap.tracks.iter().any(|t| !t.derived && &t.name == name);
        output.push(if source_audio {
            json!({"id": id, "type": "Audio", "audio": {"bypass": true}})
        } else {
            json!({"id": id, "type": "Audio", "audio": {
                "codec": codec, "bypass": false,
                "samplerate": if codec == "OPUS" { 48_000 } else { 0 },
            }})
        });
    }
    let path = b.path();
    json!({
        "name": path.stream(),
        "input": {
            "sourceType": meta.source.unwrap_or("Rtmp"),
            "createdTime": iso(b.created()),
            "tracks": input,
        },
        "outputs": [{"name": path.stream(), "tracks": output}],
    })
}

/// `POST /v1/vhosts/{vh}/apps/{app}:{action}` (axum cannot split a segment,
/// so the action is read from the app segment here).
async fn app_action(
    State(api): State<OmeApi>,
    Path((vh, segment)): Path<(String, String)>,
    body: Bytes,
) -> Result<Answer> {
    let Some((app, action)) = segment.split_once(':') else {
        return Err(error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"));
    };
    check_app(&api, &vh, app).await?;
    match action {
        "startPush" | "stopPush" | "pushes" => Err(error(
            StatusCode::NOT_IMPLEMENTED,
            "Push is not supported by streamd: pull the stream's LL-HLS or WebRTC instead",
        )),
        "records" => records(&api, &vh, app, &body).await,
        "startRecord" => start_record(&api, &vh, app, &body).await,
        "stopRecord" => stop_record(&api, &vh, app, &body).await,
        other => Err(error(
            StatusCode::NOT_FOUND,
            format_args!("Unknown action: [{other:.32}]"),
        )),
    }
}

/// A record request's `id` and `stream.name`, from untrusted JSON.
fn record_request(body: &[u8]) -> Result<(Option<String>, Option<String>)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format_args!("Invalid request body: {e}"),
        )
    })?;
    let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
    let stream = v
        .pointer("/stream/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if id.as_ref().is_some_and(|i| i.len() > 128) || stream.as_ref().is_some_and(|s| s.len() > 128)
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Invalid request body: id or name too long",
        ));
    }
    Ok((id, stream))
}

/// A streamd recording as OME's record info (the documented examples'
/// fields; states `recording`, `stopping`, `stopped`, `error`). The files
/// are streamd's: an HLS VOD playlist and the recording's API resource.
fn record_info(vh: &str, r: &Recording, theirs: Option<&str>) -> Value {
    let state = match r.status {
        RecordingStatus::Recording => "recording",
        RecordingStatus::Uploading => "stopping",
        RecordingStatus::Ready => "stopped",
        RecordingStatus::Failed => "error",
    };
    let mut info = json!({
        "id": theirs.unwrap_or(&r.id),
        "vhost": vh,
        "app": r.app,
        "stream": {"name": r.stream, "tracks": []},
        "state": state,
        "filePath": format!("/vod/{}/master.m3u8", r.id),
        "infoPath": format!("/api/recordings/{}", r.id),
        "outputFilePath": format!("/vod/{}/master.m3u8", r.id),
        "outputInfoPath": format!("/api/recordings/{}", r.id),
        "sequence": 1,
        "segmentationRule": "discontinuity",
        "recordBytes": r.bytes,
        "recordTime": r.duration_ms,
        "totalRecordBytes": r.bytes,
        "totalRecordTime": r.duration_ms,
        "createdTime": iso_ms(r.started_at),
        "startTime": iso_ms(r.started_at),
    });
    if let Some(end) = r.ended_at {
        info["finishTime"] = json!(iso_ms(end));
    }
    info
}

fn recorder(api: &OmeApi) -> Result<&Arc<Recorder>> {
    api.recorder.as_ref().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Recording is off on this server ([record] enabled)",
        )
    })
}

/// The recordings of `app`: the one the request's `id` names (the
/// backend's own id from `:startRecord`, or streamd's), or those of its
/// `stream.name`, or all of the app's live and managed streams'; newest
/// first.
async fn recordings(api: &OmeApi, app: &str, body: &[u8]) -> Result<Vec<Recording>> {
    let (id, stream) = record_request(body)?;
    let store = recorder(api)?.store();
    if let Some(id) = id {
        let ours = api
            .aliases
            .lock()
            .expect("aliases lock")
            .ours(&id)
            .to_owned();
        let found = store.recording(&ours).await.map_err(storage)?;
        return Ok(found.into_iter().filter(|r| r.app == app).collect());
    }
    let names: Vec<String> = match stream {
        Some(s) => vec![s],
        None => {
            let mut names: BTreeSet<String> = live(api, app)
                .iter()
                .map(|b| b.path().stream().to_owned())
                .collect();
            names.extend(
                api.access
                    .store
                    .list()
                    .await
                    .map_err(storage)?
                    .into_iter()
                    .filter(|s| s.app == app)
                    .map(|s| s.id),
            );
            names.into_iter().collect()
        }
    };
    let mut out = Vec::new();
    for name in names {
        out.extend(store.recordings_of(app, &name).await.map_err(storage)?);
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.started_at));
    Ok(out)
}

/// Record infos, under the ids backends gave them.
fn infos(api: &OmeApi, vh: &str, list: &[Recording]) -> Value {
    let aliases = api.aliases.lock().expect("aliases lock");
    Value::Array(
        list.iter()
            .map(|r| record_info(vh, r, aliases.theirs(&r.id)))
            .collect(),
    )
}

async fn records(api: &OmeApi, vh: &str, app: &str, body: &[u8]) -> Result<Answer> {
    let list = recordings(api, app, body).await?;
    Ok(ok(infos(api, vh, &list)))
}

/// `:startRecord`. streamd records every stream of an app whose recording
/// is on (`[record]`), from its first frame: starting a recording is
/// answered with the stream's recording in progress (`recording`), known
/// from then on by the backend's `id` too; 404 when the stream is not live
/// or its app does not record.
async fn start_record(api: &OmeApi, vh: &str, app: &str, body: &[u8]) -> Result<Answer> {
    let (Some(theirs), Some(stream)) = record_request(body)? else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "There is no required parameter [{id}, {stream.name}]",
        ));
    };
    find_stream(api, vh, app, &stream)?;
    let body = json!({"stream": {"name": stream}}).to_string();
    let current = recordings(api, app, body.as_bytes())
        .await?
        .into_iter()
        .find(|r| r.status == RecordingStatus::Recording);
    let Some(r) = current else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format_args!(
                "No recording of [{vh}/{app:.64}/{stream:.64}]: its app does not record ([record] apps)"
            ),
        ));
    };
    api.aliases
        .lock()
        .expect("aliases lock")
        .insert(theirs, r.id.clone());
    Ok(ok(infos(api, vh, std::slice::from_ref(&r))))
}

/// `:stopRecord`. A recording ends when its publisher does; one in
/// progress cannot be stopped apart from the stream (409). A recording
/// that has ended is answered as it is.
async fn stop_record(api: &OmeApi, vh: &str, app: &str, body: &[u8]) -> Result<Answer> {
    let (Some(id), _) = record_request(body)? else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "There is no required parameter [id]",
        ));
    };
    let Some(r) = recordings(api, app, body).await?.into_iter().next() else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format_args!("There is no record information related to the ID [{id:.128}]"),
        ));
    };
    if r.status == RecordingStatus::Recording {
        return Err(error(
            StatusCode::CONFLICT,
            "streamd records a stream from its start to its end: it stops when the publisher does (DELETE the stream to end both)",
        ));
    }
    Ok(ok(infos(api, vh, std::slice::from_ref(&r))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(iso_ms(951_782_400_123), "2000-02-29T00:00:00.123+00:00");
        assert_eq!(iso_ms(1_796_083_200_000), "2026-12-01T00:00:00.000+00:00");
    }
}
