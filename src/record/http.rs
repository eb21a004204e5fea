//! VOD playback of recordings over HTTP:
//!
//! - `GET /vod/{recording}/master.m3u8` and `/vod/{recording}/{rendition}.m3u8`,
//!   rendered from the journal;
//! - `GET /vod/{recording}/{rendition}/{init_N.mp4 | N.m4s}`, from the
//!   spool until uploaded, then from the store, with single byte ranges;
//! - `GET /vod/{recording}/recording.mp4`: the whole recording as one MP4
//!   file (the top video rendition and audio), streamed.
//!
//! A private stream's recordings need its playback token (`?token=`), as
//! its live playback does; their responses are never for shared caches.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;

use super::service::Recorder;
use super::vod;
use crate::auth::{Access, AuthError};
use crate::bus::StreamPath;
use crate::llhls::playlist::UriQuery;
use crate::store::recordings::{Recording, RecordingStatus, SegmentKind, SegmentStatus};

#[derive(Clone)]
pub struct VodHttp {
    pub recorder: Arc<Recorder>,
    pub access: Arc<Access>,
}

pub fn routes(state: VodHttp) -> Router {
    Router::new()
        .route("/vod/{id}/{file}", get(playlist))
        .route("/vod/{id}/{rendition}/{file}", get(segment))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    metrics::counter!("streamd_vod_errors_total", "status" => status.as_str().to_owned())
        .increment(1);
    let mut r = (status, message.into()).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The recording, if the request may play it; and whether it is private.
async fn admit(
    state: &VodHttp,
    id: &str,
    query: Option<&str>,
) -> Result<(Recording, bool), Response> {
    let recording = match state.recorder.store().recording(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(error(StatusCode::NOT_FOUND, "no such recording")),
        Err(e) => {
            tracing::error!(error = %e, "vod: storage error");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable",
            ));
        }
    };
    let Ok(path) = StreamPath::new(&recording.app, &recording.stream) else {
        return Err(error(StatusCode::NOT_FOUND, "no such recording"));
    };
    match state
        .access
        .playback(&path, crate::http::token_param(query))
        .await
    {
        Ok(private) => Ok((recording, private)),
        Err(AuthError::Missing) => Err(error(
            StatusCode::UNAUTHORIZED,
            "this recording needs a playback token",
        )),
        Err(AuthError::Storage(_)) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage unavailable",
        )),
        Err(e) => Err(error(StatusCode::FORBIDDEN, e.to_string())),
    }
}

fn cached(mut r: Response, content_type: &'static str, cache: &str, private: bool) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let cache = if private {
        cache.replace("public", "private")
    } else {
        cache.to_owned()
    };
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

async fn playlist(
    State(state): State<VodHttp>,
    Path((id, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let name = match (file.strip_suffix(".m3u8"), file.as_str()) {
        (Some(name), _) => name,
        (None, "recording.mp4") => "",
        _ => return error(StatusCode::NOT_FOUND, "no such file"),
    };
    let (r, private) = match admit(&state, &id, query.as_deref()).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    if name.is_empty() {
        return download(&state, r, private).await;
    }
    let segments = match state.recorder.store().segments(&r.id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "vod: storage error");
            return error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable");
        }
    };
    let token = crate::http::token_param(query.as_deref()).map(UriQuery::token);
    let q = UriQuery::new(token.as_deref());
    let body = if name == "master" {
        vod::master(&r, &segments, q)
    } else {
        match vod::media(&r, name, &segments, q) {
            Some(b) => b,
            None => return error(StatusCode::NOT_FOUND, "no such rendition"),
        }
    };
    // An EVENT playlist grows while the stream is live.
    let cache = if r.status == RecordingStatus::Recording {
        "public, max-age=2"
    } else {
        "public, max-age=3600"
    };
    cached(
        body.into_response(),
        "application/vnd.apple.mpegurl",
        cache,
        private,
    )
}

/// The recording as one MP4 file: the top video rendition and the audio,
/// their inits merged, their fragments interleaved segment by segment.
async fn download(state: &VodHttp, r: Recording, private: bool) -> Response {
    if r.status == RecordingStatus::Recording {
        return error(
            StatusCode::CONFLICT,
            "the recording is still being made; download it after the stream ends",
        );
    }
    let segments = match state.recorder.store().segments(&r.id).await {
        Ok(s) => s,
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable"),
    };
    let chosen: Vec<&str> = ["video", "audio"]
        .iter()
        .filter_map(|kind| {
            r.renditions
                .iter()
                .find(|x| x.kind == *kind && segments.iter().any(|s| s.rendition == x.name))
                .map(|x| x.name.as_str())
        })
        .collect();
    if chosen.is_empty() {
        return error(StatusCode::NOT_FOUND, "nothing was recorded");
    }
    let mut inits = Vec::new();
    let mut media = Vec::new();
    for (i, name) in chosen.iter().enumerate() {
        let of = |kind| {
            segments
                .iter()
                .filter(move |s| s.rendition == *name && s.kind == kind)
        };
        let its_inits: Vec<_> = of(SegmentKind::Init).collect();
        if its_inits.len() != 1 {
            return error(
                StatusCode::CONFLICT,
                "the stream's codec settings changed mid-recording: play it as HLS (master.m3u8)",
            );
        }
        inits.push(its_inits[0].clone());
        media.extend(
            of(SegmentKind::Media)
                .filter(|s| s.status != SegmentStatus::Open)
                .map(|s| (s.seq, i, s.clone())),
        );
    }
    // Segment by segment, video before audio: the renditions' segments
    // cover the same time.
    media.sort_by_key(|(seq, track, _)| (*seq, *track));
    let mut init_bytes = Vec::new();
    for row in &inits {
        match state.recorder.read(&r, row, None).await {
            Ok(b) => init_bytes.push(b),
            Err(e) => {
                tracing::warn!(recording = %r.id, error = %e, "vod: cannot read an init segment");
                return error(
                    StatusCode::BAD_GATEWAY,
                    "the recording store did not answer",
                );
            }
        }
    }
    let head = match super::mp4::merge_inits(&init_bytes) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(recording = %r.id, error = %e, "vod: cannot merge init segments");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot make the MP4");
        }
    };
    let len = head.len() as u64
        + media
            .iter()
            .map(|(_, _, s)| s.bytes.max(0) as u64)
            .sum::<u64>();
    let recorder = state.recorder.clone();
    let rec = r.clone();
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
        futures_util::stream::unfold(
            (media.into_iter(), 0u32),
            move |(mut rest, mut sequence)| {
                let (recorder, rec) = (recorder.clone(), rec.clone());
                async move {
                    let (_, track, row) = rest.next()?;
                    let item = match recorder.read(&rec, &row, None).await {
                        Ok(b) => {
                            let mut b = b.to_vec();
                            super::mp4::retrack(&mut b, track as u32 + 1, &mut sequence);
                            Ok(bytes::Bytes::from(b))
                        }
                        // The client sees a cut download, not a wrong file.
                        Err(e) => Err(std::io::Error::other(e)),
                    };
                    Some((item, (rest, sequence)))
                }
            },
        ),
    );
    let mut resp = axum::body::Body::from_stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, len.into());
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}-{}-{}.mp4\"",
        r.app, r.stream, r.id
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    cached(resp, "video/mp4", "public, max-age=3600", private)
}

/// A single `bytes=` range of a `len`-byte file: Ok(None) for none (or
/// one this server ignores: several ranges), Err for one it cannot meet.
fn byte_range(headers: &HeaderMap, len: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        len.saturating_sub(n)..len
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len
        } else {
            b.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(len)
        };
        start..end
    };
    if range.start >= range.end || range.start >= len {
        return Err(());
    }
    Ok(Some(range))
}

async fn segment(
    State(state): State<VodHttp>,
    Path((id, rendition, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some((kind, seq)) = vod::parse_segment_file(&file) else {
        return error(StatusCode::NOT_FOUND, "no such file");
    };
    let (r, private) = match admit(&state, &id, query.as_deref()).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let segments = match state.recorder.store().segments(&r.id).await {
        Ok(s) => s,
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable"),
    };
    let Some(row) = segments.into_iter().find(|s| {
        s.rendition == rendition
            && s.kind == kind
            && s.seq == seq
            && s.status != SegmentStatus::Open
    }) else {
        return error(StatusCode::NOT_FOUND, "no such segment");
    };
    // The store serves it, through a signed URL, when so configured.
    if let Some(url) = state.recorder.signed_url(&r, &row).await
        && let Ok(location) = HeaderValue::from_str(&url)
    {
        let mut resp = StatusCode::FOUND.into_response();
        resp.headers_mut().insert(header::LOCATION, location);
        // The signature expires: no cache keeps the redirect for long.
        return cached(resp, "video/iso.segment", "private, max-age=60", private);
    }
    let len = row.bytes.max(0) as u64;
    let range = match byte_range(&headers, len) {
        Ok(r) => r,
        Err(()) => {
            let mut resp = error(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let data = match state.recorder.read(&r, &row, range.clone()).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(recording = %r.id, error = %e, "vod: cannot read a segment");
            return error(
                StatusCode::BAD_GATEWAY,
                "the recording store did not answer",
            );
        }
    };
    let expected = range.as_ref().map_or(len, |rg| rg.end - rg.start);
    if data.len() as u64 != expected {
        tracing::error!(recording = %r.id, rendition = %row.rendition, seq = row.seq, journal = len, got = data.len(), "vod: a segment is not the size its journal says");
        return error(StatusCode::INTERNAL_SERVER_ERROR, "the segment is damaged");
    }
    let mut resp = match &range {
        Some(rg) => {
            let mut resp = (StatusCode::PARTIAL_CONTENT, data).into_response();
            if let Ok(v) =
                HeaderValue::from_str(&format!("bytes {}-{}/{len}", rg.start, rg.end - 1))
            {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            resp
        }
        None => data.into_response(),
    };
    resp.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let content_type = match kind {
        SegmentKind::Init => "video/mp4",
        SegmentKind::Media => "video/iso.segment",
    };
    // A closed segment never changes.
    cached(
        resp,
        content_type,
        "public, max-age=31536000, immutable",
        private,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, len: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        byte_range(&h, len)
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(range("bytes=0-99", 1000), Ok(Some(0..100)));
        assert_eq!(range("bytes=900-", 1000), Ok(Some(900..1000)));
        assert_eq!(range("bytes=-100", 1000), Ok(Some(900..1000)));
        assert_eq!(range("bytes=990-5000", 1000), Ok(Some(990..1000)));
        assert_eq!(range("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(range("items=0-1", 1000), Ok(None));
        assert_eq!(range("bytes=1000-", 1000), Err(()));
        assert_eq!(range("bytes=5-2", 1000), Err(()));
        assert_eq!(range("bytes=x-", 1000), Err(()));
        assert_eq!(range("bytes=-18446744073709551616", 1000), Err(()));
    }
}
