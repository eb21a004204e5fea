//! LL-HLS over HTTP: `GET /{app}/{stream}/llhls.m3u8` and the files beside
//! it, all served from memory.
//!
//! - Blocking playlist reload: `_HLS_msn`/`_HLS_part` requests wait for that
//!   part (400 when too far ahead, 503 after three target durations).
//! - Delta updates: `_HLS_skip=YES` (or `v2`) gives `EXT-X-SKIP`.
//! - The part named by the preload hint, and the next few, are held until
//!   they exist.
//! - Cache lifetimes follow the spec's CDN guidance (rfc8216bis §B.1).
//!
//! File names are parsed strictly; anything else is 404. Nothing here
//! touches the filesystem, so `..` and friends are just names that do not
//! match.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawPathParams, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use super::playlist::{UriQuery, advance_part_limit};
use super::request::{Directives, File, parse_directives, parse_file};
use super::store::{OutputState, Outputs, StreamOutput};
use crate::auth::{Access, AccessRequest, AuthError, Client, Protocol, Refusal};
use crate::bus::{Located, Registry, StreamPath, TrackKind};

/// How long a request for a stream that exists but has no complete segment
/// yet is held before a 503.
const READY_WAIT: Duration = Duration::from_secs(6);
/// How long to wait for a just-announced stream's packager to appear.
const STARTING_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct LlhlsHttp {
    pub outputs: Arc<Outputs>,
    pub registry: Registry,
    pub access: Arc<crate::auth::Access>,
    pub viewers: Arc<crate::viewers::ViewerCounts>,
    /// `cluster.secret`, which the cluster's HTTP cache shows (see
    /// [`CACHE_SECRET_HEADER`]); `None`: no cache is trusted.
    pub cache_secret: Option<Arc<str>>,
}

pub fn routes(state: LlhlsHttp) -> Router {
    // The recorder first, so the counter is its own (not a no-op).
    crate::http::metrics_handle();
    Router::new()
        .route("/{app}/{stream}/{file}", get(serve))
        .route("/cluster/v1/authorize", get(authorize))
        // Shared: each request clones only the Arc.
        .with_state(Arc::new(Served {
            http: state,
            requests: metrics::counter!("streamd_llhls_requests_total"),
        }))
}

/// What the handlers share: the state, and the counter every request
/// increments (registered once, not looked up per request).
struct Served {
    http: LlhlsHttp,
    requests: metrics::Counter,
}

impl std::ops::Deref for Served {
    type Target = LlhlsHttp;

    fn deref(&self) -> &LlhlsHttp {
        &self.http
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    metrics::counter!("streamd_llhls_errors_total", "status" => status.as_str().to_owned())
        .increment(1);
    let mut r = (status, message.into()).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn with_headers(mut r: Response, content_type: &'static str, max_age: u64) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, cache_control(max_age));
    r
}

/// `public, max-age=N`: made once for the lifetimes a stream uses (a few
/// target durations), not formatted for every response.
fn cache_control(max_age: u64) -> HeaderValue {
    const KEPT: u64 = 128;
    static VALUES: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let make = |n: u64| {
        HeaderValue::from_str(&format!("public, max-age={n}")).expect("digits are a header value")
    };
    match max_age {
        n if n < KEPT => VALUES.get_or_init(|| (0..KEPT).map(make).collect())[n as usize].clone(),
        n => make(n),
    }
}

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

fn media_type(kind: TrackKind) -> &'static str {
    match kind {
        TrackKind::Video => "video/mp4",
        TrackKind::Audio => "audio/mp4",
    }
}

/// Waits until `check` gives a value, the output changes no more, or the
/// deadline passes. A request that has to wait is counted in
/// `streamd_llhls_held_requests_total`.
async fn wait_for<T>(
    out: &StreamOutput,
    deadline: tokio::time::Instant,
    mut check: impl FnMut(&OutputState) -> Option<T>,
) -> Option<T> {
    // Nearly every request finds what it asks for at once: it need not
    // subscribe (a subscription and its drop touch the stream's shared
    // counters and its sender's waiters, from every worker's requests).
    if let Some(v) = check(&out.lock()) {
        return Some(v);
    }
    // Held: not there at once (as a blocking playlist request's wait is
    // timed from here).
    metrics::counter!("streamd_llhls_held_requests_total").increment(1);
    let mut rx = out.subscribe();
    loop {
        rx.borrow_and_update();
        if let Some(v) = check(&out.lock()) {
            return Some(v);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return check(&out.lock()),
        }
    }
}

/// `path`'s output: `found` (what `Outputs::get` gave), else one that is
/// starting for a broadcast here.
async fn find_output(
    state: &LlhlsHttp,
    path: &StreamPath,
    found: Option<Arc<StreamOutput>>,
) -> Option<Arc<StreamOutput>> {
    if found.is_some() {
        return found;
    }
    state.registry.get(path)?;
    // The broadcast exists and its packager is starting.
    let mut rx = state.outputs.subscribe();
    let deadline = tokio::time::Instant::now() + STARTING_WAIT;
    loop {
        rx.borrow_and_update();
        if let Some(o) = state.outputs.get(path) {
            return Some(o);
        }
        if !matches!(
            tokio::time::timeout_at(deadline, rx.changed()).await,
            Ok(Ok(()))
        ) {
            return state.outputs.get(path);
        }
    }
}

async fn serve(
    State(state): State<Arc<Served>>,
    params: RawPathParams,
    req: axum::extract::Request,
) -> Response {
    // Every LL-HLS request that reaches this node (behind a cache, the
    // ones the cache did not answer).
    state.requests.increment(1);
    // The route's three parameters, percent-decoded (as `Path` gives them,
    // without copying each into a String).
    let mut params = params.iter().map(|(_, v)| v);
    let (Some(app), Some(stream), Some(file)) = (params.next(), params.next(), params.next())
    else {
        return error(StatusCode::NOT_FOUND, "no such stream");
    };
    let query = req.uri().query();
    let Ok(path) = StreamPath::new(app, stream) else {
        return error(StatusCode::NOT_FOUND, "no such stream");
    };
    let directives = match parse_directives(query) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let token = crate::http::token_param(query);
    // A request from the cluster's HTTP cache (it shows the cluster
    // secret) was authorised there (`/cluster/v1/authorize`): the
    // response is for every player behind it. A private stream's
    // playlists then name a placeholder where the cache puts each
    // player's own token.
    let from_cache = state.is_cache_request(req.headers());
    // Only streams that exist are asked about (no backend call for random
    // names). A cluster node brings a stream another node has here first
    // (`Registry::find`: a directory query), and only for a request that
    // may see it: a private stream's token is checked before.
    // Looked up once, before admission: a republish while this request
    // is admitted (an admission backend's first answer for this client,
    // or the stream store on a cache miss) answers it from the output
    // being replaced, as it would any request racing the republish; the
    // player's next request finds the new one.
    let found = state.outputs.get(&path);
    if found.is_none() && state.registry.get(&path).is_none() {
        if !from_cache && let Err(e) = state.access.playback(&path, token).await {
            return refused(Refusal::Auth(e));
        }
        let client = Client::of(&req).ip();
        match state.registry.locate(&path, client, true).await {
            Some(Located::Here(_)) => {}
            // The cluster sends viewers to the node that has it.
            Some(Located::Elsewhere(base)) => {
                let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
                return crate::http::redirect_elsewhere(&base, target);
            }
            None => return error(StatusCode::NOT_FOUND, "no such stream"),
        }
    }
    let private = if from_cache {
        // The cache's players start sessions too: not while draining.
        if file == "llhls.m3u8" && state.access.is_draining() {
            return refused(Refusal::Draining);
        }
        match state.access.is_private(&path).await {
            Ok(p) => p,
            Err(e) => return refused(Refusal::Auth(e)),
        }
    } else {
        // One admission path: a private stream's playback token
        // (`?token=`, verified once, then found in the session cache),
        // and an OME admission backend (asked once per client, stream
        // and token).
        let request = access_request(&state.access, app, stream, file, query, &req);
        match state.access.admit(request).await {
            Ok(a) => a.private,
            Err(refusal) => return refused(refusal),
        }
    };
    let Some(out) = find_output(&state, &path, found).await else {
        return error(StatusCode::NOT_FOUND, "no such stream");
    };
    let Some(file) = parse_file(file, &out.instance) else {
        return error(StatusCode::NOT_FOUND, "no such file");
    };
    // Nothing is served before the first complete segment: until then the
    // target duration and part target are unknown.
    if wait_for(&out, tokio::time::Instant::now() + READY_WAIT, |st| {
        st.ready().then_some(())
    })
    .await
    .is_none()
    {
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "stream is starting");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    if matches!(file, File::Media { .. }) {
        state.viewers.hls_seen(&path, client_key(&req));
    }
    // A token in the request goes into every URI the playlist names.
    let token_query = if from_cache {
        private.then(|| UriQuery::token(CACHE_TOKEN))
    } else {
        token.map(UriQuery::token)
    };
    let uri_query = UriQuery::new(token_query.as_deref());
    let response = match file {
        File::Master => master(&out, uri_query),
        File::Media { track } => media(&out, &track, directives, uri_query).await,
        File::Init { track, id } => init(&out, &track, id),
        File::Segment { track, msn } => segment(&out, &track, msn).await,
        File::Part { track, msn, index } => part(&out, &track, msn, index).await,
    };
    if private && !from_cache {
        private_response(response)
    } else {
        response
    }
}

/// What stands for a player's token in the playlists of a private stream
/// served to the cluster's cache (the shipped nginx configuration
/// replaces it with the token of the player it answers).
pub const CACHE_TOKEN: &str = "__streamd_token__";

/// The header a cache shows the cluster secret in.
pub const CACHE_SECRET_HEADER: &str = "x-streamd-cluster-secret";

impl LlhlsHttp {
    /// Whether the request comes from the cluster's cache.
    fn is_cache_request(&self, headers: &axum::http::HeaderMap) -> bool {
        let (Some(secret), Some(given)) = (&self.cache_secret, headers.get(CACHE_SECRET_HEADER))
        else {
            return false;
        };
        aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), secret.as_bytes())
            .is_ok()
    }
}

/// The admission question for an LL-HLS request of `file` in
/// `app/stream` with `query`, asked by `req`'s client. The URL, and the
/// client's forwarded address and user agent, are what an admission
/// backend is told: without one they are not made (every part and
/// playlist request of every player comes here).
fn access_request(
    access: &Access,
    app: &str,
    stream: &str,
    file: &str,
    query: Option<&str>,
    req: &axum::extract::Request,
) -> AccessRequest {
    let backend = access.admission.is_some();
    AccessRequest {
        protocol: Protocol::LlHls,
        app: app.to_owned(),
        stream: stream.to_owned(),
        query: query.map(str::to_owned),
        url: if backend {
            format!(
                "http://{}/{app}/{stream}/{file}{}",
                crate::http::request_host(req.headers()),
                query.map(|q| format!("?{q}")).unwrap_or_default()
            )
        } else {
            String::new()
        },
        new_session: file == "llhls.m3u8",
        client: if backend {
            Client::of(req)
        } else {
            Client::peer(req)
        },
    }
}

/// The answer to a refused request.
fn refused(refusal: Refusal) -> Response {
    let status = match &refusal {
        Refusal::Auth(AuthError::Missing) => StatusCode::UNAUTHORIZED,
        Refusal::Auth(AuthError::Storage(_)) => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::BadName(_) => StatusCode::NOT_FOUND,
        Refusal::Auth(_) | Refusal::Denied(_) => StatusCode::FORBIDDEN,
        Refusal::Full(_) | Refusal::Draining => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut r = error(status, refusal.to_string());
    if refusal == Refusal::Draining {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    r
}

/// `GET /cluster/v1/authorize`, for a cache's `auth_request`: would the
/// LL-HLS request in `X-Original-URI` be admitted? 401 or 403 when the
/// player is refused (no token, a bad one, an admission backend's no),
/// else 204. Only the cache may ask (it shows the cluster secret): the
/// answer is the same admission path as a player's own request.
async fn authorize(State(state): State<Arc<Served>>, req: axum::extract::Request) -> Response {
    if !state.is_cache_request(req.headers()) {
        return error(StatusCode::UNAUTHORIZED, "the cluster secret is required");
    }
    let Some(original) = req
        .headers()
        .get("x-original-uri")
        .and_then(|v| v.to_str().ok())
    else {
        return error(StatusCode::BAD_REQUEST, "X-Original-URI is required");
    };
    let (path, query) = match original.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (original, None),
    };
    let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
    let (Some(app), Some(stream), Some(file), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return error(StatusCode::NOT_FOUND, "not an LL-HLS URI");
    };
    if StreamPath::new(app, stream).is_err() {
        return error(StatusCode::NOT_FOUND, "no such stream");
    }
    let request = access_request(&state.access, app, stream, file, query, &req);
    match state.access.admit(request).await {
        // Only the player's own refusals are the cache's to give (nginx
        // passes 401 and 403 on and turns anything else into a 500): a
        // stream that does not exist, a full or draining server, or a
        // database that does not answer are the request's to learn from
        // streamd itself, which the cache then asks.
        Err(refusal @ (Refusal::Auth(_) | Refusal::Denied(_)))
            if !matches!(refusal, Refusal::Auth(AuthError::Storage(_))) =>
        {
            refused(refusal)
        }
        Ok(_) | Err(_) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
    }
}

/// A private stream's response: for the player only, never a shared cache
/// (which would serve it to anyone, token or not).
fn private_response(mut r: Response) -> Response {
    let h = r.headers_mut();
    let value = h
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.replace("public", "private"))
        .unwrap_or_else(|| "private".into());
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

/// Who is asking, for the viewer count: a hash of the peer address (or
/// the address a proxy forwards) and the user agent.
fn client_key(req: &axum::extract::Request) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    crate::http::real_ip(req.headers()).hash(&mut h);
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .hash(&mut h);
    req.headers()
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes())
        .hash(&mut h);
    h.finish()
}

fn master(out: &StreamOutput, query: UriQuery<'_>) -> Response {
    let st = out.lock();
    let td = st.target_duration();
    let body = out.master_playlist(&st, query);
    with_headers(body.into_response(), PLAYLIST_TYPE, td / 2)
}

fn rendition(st: &OutputState, track: &str) -> Option<(usize, u64, TrackKind)> {
    let i = st.rendition_index(track)?;
    Some((i, st.target_duration(), st.renditions[i].kind))
}

async fn media(out: &StreamOutput, track: &str, d: Directives, query: UriQuery<'_>) -> Response {
    let Some((index, td, _)) = rendition(&out.lock(), track) else {
        return error(StatusCode::NOT_FOUND, "no such rendition");
    };
    let blocking = d.msn.is_some();
    // Requests that reach this node (behind a cache, the ones it let by).
    metrics::counter!(
        "streamd_llhls_media_playlist_requests_total",
        "blocking" => if blocking { "yes" } else { "no" }
    )
    .increment(1);
    if let Some(msn) = d.msn {
        {
            let st = out.lock();
            let r = &st.renditions[index];
            if !st.ended {
                let last_msn = r.last_msn().unwrap_or(0);
                if msn > last_msn.saturating_add(2) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("_HLS_msn {msn} is beyond the live edge ({last_msn})"),
                    );
                }
                if let (Some(p), Some(pt)) = (d.part, r.part_target) {
                    let limit = advance_part_limit(pt);
                    let (lm, lp) = r.last_part().unwrap_or((last_msn, 0));
                    let ahead = if msn > lm {
                        p.saturating_add(1)
                    } else if msn == lm {
                        p.saturating_sub(lp)
                    } else {
                        0
                    };
                    if ahead > limit {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("_HLS_part {p} is beyond the advance part limit"),
                        );
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3 * td);
        let mut waited = false;
        let ready = wait_for(out, deadline, |st| {
            let ok = st.ended || st.renditions[index].has(msn, d.part);
            waited |= !ok;
            ok.then(|| st.updated_at())
        })
        .await;
        match ready {
            None => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the requested part did not appear in time",
                );
            }
            // How long a held request took to wake after its part appeared.
            Some(Some(at)) if waited => metrics::histogram!("streamd_llhls_blocking_wake_seconds")
                .record(at.elapsed().as_secs_f64()),
            Some(_) => {}
        }
    }
    let st = out.lock();
    let td = st.target_duration();
    let Some(body) = out.media_playlist(&st, index, d.skip, query) else {
        return error(StatusCode::NOT_FOUND, "no such rendition");
    };
    let max_age = if blocking && !st.ended {
        6 * td
    } else {
        td / 2
    };
    with_headers(body.into_response(), PLAYLIST_TYPE, max_age)
}

fn init(out: &StreamOutput, track: &str, id: u32) -> Response {
    let st = out.lock();
    let Some((index, td, kind)) = rendition(&st, track) else {
        return error(StatusCode::NOT_FOUND, "no such rendition");
    };
    match st.renditions[index].init(id) {
        Some(bytes) => with_headers(bytes.clone().into_response(), media_type(kind), 6 * td),
        None => error(StatusCode::NOT_FOUND, "no such init segment"),
    }
}

enum Lookup {
    Found(Vec<Bytes>),
    NotYet,
    Never(&'static str),
}

fn body_of(chunks: Vec<Bytes>) -> (Body, usize) {
    let body = Chunks::new(chunks);
    let len = body.left as usize;
    (Body::new(body), len)
}

/// A response body of the pieces a part or segment is kept in, sent as
/// they are (no copy). It knows its length and says it is done with its
/// last piece, so HTTP/2 ends the stream on that piece's DATA frame. A
/// body that learns it is done only when asked once more (a stream) ends
/// with an empty DATA frame of its own, written separately: one more TLS
/// record and write per response, which cost small parts a quarter of
/// their HTTP/2 rate (benches/README.md, http_serve).
struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    left: u64,
}

impl Chunks {
    fn new(chunks: Vec<Bytes>) -> Chunks {
        let chunks: std::collections::VecDeque<Bytes> =
            chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let left = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks { chunks, left }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let me = self.get_mut();
        let next = me.chunks.pop_front().map(|c| {
            me.left -= c.len() as u64;
            Ok(http_body::Frame::data(c))
        });
        std::task::Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

async fn serve_lookup(
    out: &StreamOutput,
    track: &str,
    lookup: impl Fn(&OutputState, usize) -> Lookup,
) -> Response {
    let Some((index, td, kind)) = rendition(&out.lock(), track) else {
        return error(StatusCode::NOT_FOUND, "no such rendition");
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3 * td);
    let found = wait_for(out, deadline, |st| match lookup(st, index) {
        Lookup::NotYet if !st.ended => None,
        Lookup::NotYet => Some(Err("the stream ended")),
        Lookup::Found(c) => Some(Ok(c)),
        Lookup::Never(why) => Some(Err(why)),
    })
    .await;
    match found {
        Some(Ok(chunks)) => {
            let (body, len) = body_of(chunks);
            let mut r = with_headers(body.into_response(), media_type(kind), 6 * td);
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
        Some(Err(why)) => error(StatusCode::NOT_FOUND, why),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "not available in time"),
    }
}

async fn segment(out: &StreamOutput, track: &str, msn: u64) -> Response {
    serve_lookup(out, track, |st, index| {
        let r = &st.renditions[index];
        match r.segment(msn) {
            Some(s) if s.is_complete() => {
                Lookup::Found(s.parts.iter().map(|p| p.data.clone()).collect())
            }
            Some(_) => Lookup::NotYet,
            None if r.last_msn().is_some_and(|last| msn == last + 1) => Lookup::NotYet,
            None => Lookup::Never("no such segment"),
        }
    })
    .await
}

async fn part(out: &StreamOutput, track: &str, msn: u64, index: u32) -> Response {
    serve_lookup(out, track, |st, i| {
        let r = &st.renditions[i];
        // Hold requests for the hinted part and a few beyond it (the spec's
        // advance part limit); anything further is a 404.
        let limit = r.part_target.map_or(3, advance_part_limit);
        match r.segment(msn) {
            Some(s) => match s.parts.get(index as usize) {
                Some(p) => Lookup::Found(vec![p.data.clone()]),
                None if s.is_complete() => Lookup::Never("no such part"),
                None if index <= s.parts.len() as u32 + limit => Lookup::NotYet,
                None => Lookup::Never("part is too far ahead"),
            },
            None if r.last_msn().is_some_and(|last| msn == last + 1) && index <= limit => {
                Lookup::NotYet
            }
            None => Lookup::Never("no such part"),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_chunked_body_knows_its_length_and_ends_with_its_last_piece() {
        let mut body = Chunks::new(vec![
            Bytes::from_static(b"moof"),
            Bytes::new(),
            Bytes::from_static(b"mdat!"),
        ]);
        assert_eq!(body.size_hint().exact(), Some(9));
        assert!(!body.is_end_stream());
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"moof");
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(5));
        // The empty piece was left out: the next is the last, and with it
        // the body says it is done (HTTP/2 sets END_STREAM on its frame).
        let last = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&last[..], b"mdat!");
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
    }
}
