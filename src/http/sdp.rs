//! What WHIP and WHEP resources share (RFC 9725 and the WHEP draft): the
//! offer read from the request, the `201 Created` answer with its session
//! resource and ICE servers, `OPTIONS`, `PATCH` refused, and plain errors.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::turn::{IceServer, IceServers};

/// An SDP offer is a few kilobytes; a browser's with many codecs under 16.
pub const MAX_OFFER: usize = 64 * 1024;

/// A plain-text error, counted in `metric` by status.
pub fn error(metric: &'static str, status: StatusCode, message: impl Into<String>) -> Response {
    metrics::counter!(metric, "status" => status.as_str().to_owned()).increment(1);
    let mut message = message.into();
    message.push('\n');
    let mut r = (status, message).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A WHIP or WHEP request: its headers, the peer's address and the offer.
pub struct Offer {
    pub headers: HeaderMap,
    pub peer: Option<std::net::SocketAddr>,
    pub sdp: String,
}

/// The offer in a request's body: `application/sdp`, UTF-8, at most
/// [`MAX_OFFER`] bytes; else the error to answer (415, 413, 400).
pub async fn read_offer(metric: &'static str, req: Request) -> Result<Offer, Response> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    if !super::is_sdp(&headers) {
        return Err(error(
            metric,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an offer is sent as Content-Type: application/sdp",
        ));
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_OFFER).await else {
        return Err(error(
            metric,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an offer is at most {MAX_OFFER} bytes"),
        ));
    };
    let sdp = String::from_utf8(body.to_vec()).map_err(|_| {
        error(
            metric,
            StatusCode::BAD_REQUEST,
            "the offer is not UTF-8 text",
        )
    })?;
    Ok(Offer { headers, peer, sdp })
}

/// `201 Created`: the answer, the session's resource (`Location`, and its
/// name as the ETag) and the ICE servers as `Link` headers.
pub fn created(answer: String, location: &str, resource: &str, ice: &[IceServer]) -> Response {
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{resource}\"")) {
        h.insert(header::ETAG, v);
    }
    for link in IceServers::link_headers(ice) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    r
}

/// `OPTIONS`: what the endpoint takes.
pub async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    h.insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, POST, DELETE, PATCH"),
    );
    r
}

/// Trickle ICE and ICE restarts are not taken: the answer carries every
/// candidate of this ICE-lite server, and the peer's are learned from its
/// checks (RFC 9725 §4.3.1: 405 when PATCH is not supported).
pub fn patch_refused(metric: &'static str) -> Response {
    let mut r = error(
        metric,
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE and ICE restarts are not supported: every server candidate is in the answer",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("OPTIONS, DELETE"));
    r
}
