//! The REST API under `/api`: the seed backend's stream management, JSON in
//! and out, `Authorization: Bearer <JWT>` on every route but the OpenAPI
//! document. Errors are `{"error": "...", "status": N}` with a 4xx/5xx.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Access, AuthError};
use crate::bus::{Registry, StreamPath};
use crate::store::{StoreError, StreamRecord};
use crate::viewers::ViewerCounts;

/// Largest request body taken (a stream's fields are far smaller).
const MAX_BODY: usize = 16 * 1024;
const MAX_NAME: usize = 128;
const MAX_DESCRIPTION: usize = 2048;

pub mod ome;

#[derive(Clone)]
pub struct Api {
    pub access: Arc<Access>,
    pub registry: Registry,
    pub viewers: Arc<ViewerCounts>,
    /// Recording, when on.
    pub recorder: Option<Arc<crate::record::service::Recorder>>,
    /// The RTMP port publishers reach (for OBS settings).
    pub rtmp_port: u16,
    /// `http.public_origin`: the origin of the playback URLs, if set.
    pub public_origin: String,
}

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.1, "status": self.0.as_u16()});
        let mut r = (self.0, Json(body)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "api storage error");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage unavailable".into(),
        )
    }
}

fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such stream".into())
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

type Result<T> = std::result::Result<T, ApiError>;

pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/streams", post(create).get(list))
        .route("/api/streams/{id}", get(show).delete(remove))
        .route("/api/streams/{id}/key", get(key))
        .route("/api/streams/{id}/key:rotate", post(rotate))
        .route("/api/streams/{id}/playback", get(playback))
        .route("/api/tokens/playback", post(mint_playback))
        .route("/api/streams/{id}/recordings", get(stream_recordings))
        .route("/api/recordings", get(recordings))
        .route(
            "/api/recordings/{id}",
            get(show_recording).delete(remove_recording),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// The caller's bearer token, checked.
fn authorize(api: &Api, headers: &HeaderMap) -> Result<()> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    api.access
        .auth
        .check_api(bearer)
        .map(|_| ())
        .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.to_string()))
}

/// The stream `id`, for a caller whose token is checked first (401
/// before 404: no probing for ids without a token).
async fn authorized_stream(api: &Api, headers: &HeaderMap, id: &str) -> Result<StreamRecord> {
    authorize(api, headers)?;
    api.access.store.get(id).await?.ok_or_else(not_found)
}

/// A JSON body, with a clear 400 for what does not parse or fit.
fn body<T>(b: std::result::Result<Json<T>, JsonRejection>) -> Result<T> {
    match b {
        Ok(Json(v)) => Ok(v),
        Err(JsonRejection::BytesRejection(_)) => Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY} bytes"),
        )),
        Err(e) => Err(bad(e.body_text())),
    }
}

/// `POST /v1/streams`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewStream {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub is_private: bool,
}

impl NewStream {
    /// The name to store (trimmed), if the body is acceptable.
    pub fn check(&self) -> std::result::Result<&str, String> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return Err(format!("name must be 1 to {MAX_NAME} characters"));
        }
        if self.description.chars().count() > MAX_DESCRIPTION {
            return Err(format!(
                "description must be at most {MAX_DESCRIPTION} characters"
            ));
        }
        if name.chars().any(char::is_control)
            || self
                .description
                .chars()
                .any(|c| c.is_control() && c != '\n')
        {
            return Err("name and description must not contain control characters".into());
        }
        Ok(name)
    }
}

fn view(api: &Api, r: &StreamRecord) -> Value {
    let path = format!("{}/{}", r.app, r.id);
    let live = StreamPath::new(&r.app, &r.id)
        .ok()
        .and_then(|p| api.registry.get(&p))
        .is_some();
    let mut v = serde_json::to_value(r).expect("a record serialises");
    v["live"] = live.into();
    v["viewers"] = api.viewers.get(&path).into();
    v["viewersByProtocol"] = json!({
        "webrtc": api.viewers.webrtc(&path),
        "llhls": api.viewers.hls(&path),
    });
    v
}

async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    b: std::result::Result<Json<NewStream>, JsonRejection>,
) -> Result<Response> {
    authorize(&api, &headers)?;
    let n = body(b)?;
    let name = n.check().map_err(bad)?;
    let app = api.access.auth.config().app.clone();
    let (r, key) = api
        .access
        .store
        .create(&app, name, &n.description, n.is_private)
        .await?;
    let mut v = view(&api, &r);
    v["streamKey"] = key.into();
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn list(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Value>> {
    authorize(&api, &headers)?;
    let all = api.access.store.list().await?;
    Ok(Json(Value::Array(
        all.iter().map(|r| view(&api, r)).collect(),
    )))
}

async fn show(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let r = authorized_stream(&api, &headers, &id).await?;
    Ok(Json(view(&api, &r)))
}

async fn remove(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    authorize(&api, &headers)?;
    let Some(record) = api.access.store.get(&id).await? else {
        return Err(not_found());
    };
    if !api.access.store.delete(&id).await? {
        return Err(not_found());
    }
    // A deleted stream stops being served: its publisher is cut and its
    // viewers see the end.
    if let Ok(path) = StreamPath::new(&record.app, &record.id)
        && api.registry.end(&path)
    {
        tracing::info!(stream = %path, "stream deleted: its broadcast ended");
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn key(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let r = authorized_stream(&api, &headers, &id).await?;
    let key = api.access.store.key(&id).await?.ok_or_else(not_found)?;
    Ok(Json(key_view(&api, &headers, &r, &key)))
}

async fn rotate(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let r = authorized_stream(&api, &headers, &id).await?;
    let key = api
        .access
        .store
        .rotate_key(&id)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(stream = %r.id, "stream key rotated");
    Ok(Json(key_view(&api, &headers, &r, &key)))
}

/// What the key routes answer: the key and the OBS settings using it.
fn key_view(api: &Api, headers: &HeaderMap, r: &StreamRecord, key: &str) -> Value {
    json!({"id": r.id, "streamKey": key, "obs": obs(api, headers, r, key)})
}

/// OBS's settings for a stream: server and key.
fn obs(api: &Api, headers: &HeaderMap, r: &StreamRecord, key: &str) -> Value {
    let port = api.rtmp_port;
    let host = crate::http::request_host(headers);
    let bare = host.rsplit_once(':').map_or(host.as_str(), |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host.as_str()
        }
    });
    json!({
        "server": format!("rtmp://{bare}:{port}/{}", r.app),
        "streamKey": key,
        "url": format!("rtmp://{bare}:{port}/{}/{}?key={key}", r.app, r.id),
    })
}

async fn playback(
    State(api): State<Api>,
    headers: HeaderMap,
    secure: Option<axum::Extension<crate::http::Secure>>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let r = authorized_stream(&api, &headers, &id).await?;
    let origin = crate::http::public_origin(&api.public_origin, &headers, secure.map(|s| s.0));
    let ws = crate::http::ws_origin(&origin);
    let token = r.is_private.then(|| {
        api.access.auth.mint(
            "",
            Some("playback"),
            Some(&format!("{}/{}", r.app, r.id)),
            api.access.auth.config().playback_token_ttl,
        )
    });
    let q = token
        .as_ref()
        .map(|t| format!("?token={t}"))
        .unwrap_or_default();
    Ok(Json(json!({
        "id": r.id,
        "webrtc": format!("{ws}/{}/{}{q}", r.app, r.id),
        "llhls": format!("{origin}/{}/{}/llhls.m3u8{q}", r.app, r.id),
        "token": token,
    })))
}

/// `POST /v1/tokens/playback`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenRequest {
    pub stream_id: String,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

impl TokenRequest {
    /// The token's lifetime: as asked, at most `max`; never zero.
    pub fn ttl(&self, max: Duration) -> std::result::Result<Duration, String> {
        let ttl = self
            .ttl_seconds
            .map_or(max, |s| Duration::from_secs(s).min(max));
        if ttl.is_zero() {
            return Err("ttlSeconds must be more than 0".into());
        }
        Ok(ttl)
    }
}

async fn mint_playback(
    State(api): State<Api>,
    headers: HeaderMap,
    b: std::result::Result<Json<TokenRequest>, JsonRejection>,
) -> Result<Json<Value>> {
    authorize(&api, &headers)?;
    let t = body(b)?;
    let r = api
        .access
        .store
        .get(&t.stream_id)
        .await?
        .ok_or_else(not_found)?;
    let ttl = t
        .ttl(api.access.auth.config().playback_token_ttl)
        .map_err(bad)?;
    let token = api.access.auth.mint(
        "",
        Some("playback"),
        Some(&format!("{}/{}", r.app, r.id)),
        ttl,
    );
    Ok(Json(
        json!({"token": token, "streamId": r.id, "expiresIn": ttl.as_secs()}),
    ))
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError(StatusCode::UNAUTHORIZED, e.to_string())
    }
}

fn no_recording() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such recording".into())
}

fn recordings_json(all: &[crate::store::recordings::Recording]) -> Json<Value> {
    Json(Value::Array(
        all.iter()
            .map(crate::record::service::recording_json)
            .collect(),
    ))
}

/// `GET /api/streams/{id}/recordings`: newest first.
async fn stream_recordings(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let r = authorized_stream(&api, &headers, &id).await?;
    Ok(recordings_json(
        &api.access.store.recordings_of(&r.app, &r.id).await?,
    ))
}

#[derive(Deserialize)]
struct RecordingsQuery {
    stream: Option<String>,
}

/// `GET /api/recordings?stream={app}/{name}`: any stream's, managed or
/// published openly.
async fn recordings(
    State(api): State<Api>,
    headers: HeaderMap,
    q: std::result::Result<
        axum::extract::Query<RecordingsQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Json<Value>> {
    authorize(&api, &headers)?;
    let q = q.map_err(|e| bad(e.body_text()))?;
    let Some((app, name)) = q.stream.as_deref().and_then(|s| s.split_once('/')) else {
        return Err(bad("give ?stream={app}/{name}"));
    };
    let path = StreamPath::new(app, name).map_err(|e| bad(e.to_string()))?;
    Ok(recordings_json(
        &api.access
            .store
            .recordings_of(path.app(), path.stream())
            .await?,
    ))
}

async fn authorized_recording(
    api: &Api,
    headers: &HeaderMap,
    id: &str,
) -> Result<crate::store::recordings::Recording> {
    authorize(api, headers)?;
    api.access
        .store
        .recording(id)
        .await?
        .ok_or_else(no_recording)
}

async fn show_recording(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let r = authorized_recording(&api, &headers, &id).await?;
    Ok(Json(crate::record::service::recording_json(&r)))
}

/// `DELETE /api/recordings/{id}`: its objects, spool and journal. A
/// recording still being made cannot be deleted (409).
async fn remove_recording(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let r = authorized_recording(&api, &headers, &id).await?;
    let Some(recorder) = &api.recorder else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "recording is off on this node".into(),
        ));
    };
    if r.status == crate::store::recordings::RecordingStatus::Recording {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "the recording is still being made; delete it after the stream ends".into(),
        ));
    }
    recorder.delete(&r).await.map_err(|e| {
        tracing::error!(recording = %r.id, error = %e, "cannot delete a recording");
        ApiError(
            StatusCode::BAD_GATEWAY,
            "the recording store did not answer; try again".into(),
        )
    })?;
    tracing::info!(recording = %r.id, "recording deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn openapi() -> Json<Value> {
    let stream = json!({"$ref": "#/components/schemas/Stream"});
    let recording = json!({"$ref": "#/components/schemas/Recording"});
    let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[a-z0-9]{12}$"}}]);
    let ok = |schema: Value| json!({"description": "OK", "content": {"application/json": {"schema": schema}}});
    Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "streamd API", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}],
        "paths": {
            "/api/streams": {
                "post": {"summary": "Create a stream", "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewStream"}}}},
                         "responses": {"201": ok(stream.clone()), "400": error, "401": error}},
                "get": {"summary": "List streams with live status and viewers", "responses": {"200": ok(json!({"type": "array", "items": stream})), "401": error}}
            },
            "/api/streams/{id}": {
                "parameters": id,
                "get": {"summary": "A stream", "responses": {"200": ok(stream.clone()), "401": error, "404": error}},
                "delete": {"summary": "Delete a stream", "responses": {"204": {"description": "deleted"}, "401": error, "404": error}}
            },
            "/api/streams/{id}/key": {"parameters": id, "get": {"summary": "The stream key and OBS settings", "responses": {"200": ok(json!({"$ref": "#/components/schemas/Key"})), "401": error, "404": error}}},
            "/api/streams/{id}/key:rotate": {"parameters": id, "post": {"summary": "A new stream key; the old one stops working", "responses": {"200": ok(json!({"$ref": "#/components/schemas/Key"})), "401": error, "404": error}}},
            "/api/streams/{id}/playback": {"parameters": id, "get": {"summary": "WebRTC and LL-HLS URLs (with a playback token for a private stream)", "responses": {"200": ok(json!({"type": "object", "properties": {"webrtc": {"type": "string"}, "llhls": {"type": "string"}, "token": {"type": "string", "nullable": true}}})), "401": error, "404": error}}},
            "/api/streams/{id}/recordings": {"parameters": id, "get": {"summary": "The stream's recordings, newest first", "responses": {"200": ok(json!({"type": "array", "items": recording})), "401": error, "404": error}}},
            "/api/recordings": {"get": {"summary": "Any stream's recordings (also streams published without the API), newest first", "parameters": [{"name": "stream", "in": "query", "required": true, "schema": {"type": "string", "example": "live/cam1"}}], "responses": {"200": ok(json!({"type": "array", "items": recording})), "400": error, "401": error}}},
            "/api/recordings/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^rec_[a-z0-9]{16}$"}}],
                "get": {"summary": "A recording", "responses": {"200": ok(recording.clone()), "401": error, "404": error}},
                "delete": {"summary": "Delete a recording and its stored objects", "responses": {"204": {"description": "deleted"}, "401": error, "404": error, "409": error, "502": error}}
            },
            "/api/tokens/playback": {"post": {"summary": "A short-lived playback token", "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["streamId"], "properties": {"streamId": {"type": "string"}, "ttlSeconds": {"type": "integer"}}}}}},
                                    "responses": {"200": ok(json!({"type": "object", "properties": {"token": {"type": "string"}, "expiresIn": {"type": "integer"}}})), "400": error, "401": error, "404": error}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "NewStream": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "maxLength": MAX_NAME}, "description": {"type": "string"}, "isPrivate": {"type": "boolean"}}},
                "Stream": {"type": "object", "properties": {"id": {"type": "string"}, "app": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"}, "isPrivate": {"type": "boolean"}, "createdAt": {"type": "integer"}, "live": {"type": "boolean"}, "viewers": {"type": "integer"}, "streamKey": {"type": "string"}}},
                "Recording": {"type": "object", "properties": {"id": {"type": "string"}, "app": {"type": "string"}, "stream": {"type": "string"}, "status": {"type": "string", "enum": ["recording", "uploading", "ready", "failed"]}, "startedAt": {"type": "integer"}, "endedAt": {"type": "integer", "nullable": true}, "durationMs": {"type": "integer"}, "bytes": {"type": "integer"}, "renditions": {"type": "array", "items": {"type": "string"}}, "location": {"type": "string"}, "playbackUrl": {"type": "string"}}},
                "Key": {"type": "object", "properties": {"id": {"type": "string"}, "streamKey": {"type": "string"}, "obs": {"type": "object"}}},
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}}
            }
        }
    }))
}
