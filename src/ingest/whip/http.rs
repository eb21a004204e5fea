//! WHIP's HTTP side (RFC 9725): `POST /{app}/{stream}/whip` with an SDP
//! offer (or OME's `POST /{app}/{stream}?direction=whip`) answers `201
//! Created` with the SDP answer and the session's resource in `Location`;
//! `DELETE` on that resource ends the session.
//!
//! The bearer token is the stream key or a publish token, checked through
//! the same admission as RTMP (`?key=`/`?token=` in the URL work too), and a
//! stream that is live refuses a second publisher as RTMP does.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::server::{PublishRequest, Whip};
use super::session::WhipError;
use crate::auth::turn::IceServers;
use crate::auth::{Access, AccessRequest, Client, Protocol, Refusal};
use crate::bus::StreamPath;
use crate::connlimit::ConnectionLimit;
use std::sync::Arc;

/// An SDP offer is a few kilobytes; a browser's with many codecs under 16.
const MAX_OFFER: usize = 64 * 1024;

#[derive(Clone)]
pub struct WhipHttp {
    pub whip: Whip,
    /// WHIP sessions per client address (the socket's peer).
    pub per_ip: ConnectionLimit,
    /// The TURN servers publishers are told about (`Link` headers).
    pub ice: Arc<IceServers>,
    pub access: Arc<Access>,
}

pub fn routes(state: WhipHttp) -> Router {
    Router::new()
        .route("/{app}/{stream}/whip", post(publish).options(options))
        .route(
            "/{app}/{stream}/whip/{resource}",
            axum::routing::delete(delete).patch(patch).options(options),
        )
        .layer(DefaultBodyLimit::max(MAX_OFFER))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    metrics::counter!("streamd_whip_errors_total", "status" => status.as_str().to_owned())
        .increment(1);
    let mut message = message.into();
    message.push('\n');
    let mut r = (status, message).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn options() -> Response {
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
/// candidate of this ICE-lite server, and the publisher's are learned from
/// its checks (RFC 9725 §4.3.1: 405 when PATCH is not supported).
async fn patch() -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE and ICE restarts are not supported: every server candidate is in the answer",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("OPTIONS, DELETE"));
    r
}

async fn delete(
    State(state): State<WhipHttp>,
    Path((app, stream, resource)): Path<(String, String, String)>,
) -> Response {
    let Ok(path) = StreamPath::new(&app, &stream) else {
        return error(StatusCode::NOT_FOUND, "no such WHIP session");
    };
    if state.whip.delete(path, resource).await {
        StatusCode::OK.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such WHIP session")
    }
}

/// Middleware for OME's form, `POST /{app}/{stream}?direction=whip`: a
/// layer rather than a route, so other methods on two-segment paths (the
/// console's files) still reach their handlers.
pub async fn intercept(State(state): State<WhipHttp>, req: Request, next: Next) -> Response {
    let ome_form = req.method() == Method::POST
        && crate::http::query_param(req.uri().query(), "direction") == Some("whip");
    let segments: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    match segments.as_slice() {
        [app, stream] if ome_form => {
            let query = req.uri().query().map(str::to_owned);
            publish(
                State(state),
                Path((app.clone(), stream.clone())),
                RawQuery(query),
                req,
            )
            .await
        }
        _ => next.run(req).await,
    }
}

async fn publish(
    State(state): State<WhipHttp>,
    Path((app, stream)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let connect = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let Ok(body) = axum::body::to_bytes(body, MAX_OFFER).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an offer is at most {MAX_OFFER} bytes"),
        );
    };
    if !crate::http::is_sdp(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a WHIP offer is sent as Content-Type: application/sdp",
        );
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text");
    };
    // The bearer token joins the URL's credentials: a JWT is a publish
    // token, anything else a stream key.
    let mut query = query.unwrap_or_default();
    match crate::http::bearer(&headers) {
        Ok(None) => {}
        Ok(Some(token)) => {
            let key = if crate::http::is_jwt(token) {
                "token"
            } else {
                "key"
            };
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&format!("{key}={token}"));
        }
        Err(crate::http::BadBearer) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "Authorization must be `Bearer <stream key or publish token>`",
            );
        }
    }
    // A session, connected or not, holds its place from the offer on.
    let ip = connect.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let Ok(permit) = state.per_ip.try_acquire(ip) else {
        tracing::info!(client = %ip, "WHIP offer refused: too many sessions from this address");
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many WHIP sessions from this address",
        );
    };
    let host = crate::http::request_host(&headers);
    let user_agent: Option<String> = headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    let request = AccessRequest {
        protocol: Protocol::Whip,
        url: format!("http://{host}/{app}/{stream}?direction=whip"),
        app,
        stream,
        query: (!query.is_empty()).then_some(query),
        new_session: true,
        client: Client {
            addr: connect,
            real_ip: crate::http::real_ip(&headers).map(str::to_owned),
            user_agent: user_agent.clone(),
        },
    };
    let admitted = match state.access.admit(request).await {
        Ok(a) => a,
        Err(refusal) => {
            let status = match refusal {
                Refusal::BadName(_) => StatusCode::BAD_REQUEST,
                Refusal::Auth(_) => StatusCode::UNAUTHORIZED,
                Refusal::Denied(_) => StatusCode::FORBIDDEN,
                Refusal::Full(_) | Refusal::Draining => StatusCode::SERVICE_UNAVAILABLE,
            };
            tracing::warn!(%refusal, "WHIP publish refused");
            return error(status, format!("publish refused: {refusal}"));
        }
    };
    let path = admitted.path.clone();
    let published = state
        .whip
        .publish(PublishRequest {
            offer: offer.to_owned(),
            admitted,
            permit,
            user_agent,
        })
        .await;
    match published {
        Ok(p) => {
            let location = format!("/{}/{}/whip/{}", path.app(), path.stream(), p.resource);
            let mut r = (StatusCode::CREATED, p.answer).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", p.resource)) {
                h.insert(header::ETAG, v);
            }
            for link in IceServers::link_headers(&state.ice.at(std::time::SystemTime::now())) {
                if let Ok(v) = HeaderValue::from_str(&link) {
                    h.append(header::LINK, v);
                }
            }
            r
        }
        Err(e) => {
            let status = match e {
                WhipError::BadOffer(_) | WhipError::NoMedia => StatusCode::BAD_REQUEST,
                WhipError::NoCodec => StatusCode::NOT_ACCEPTABLE,
                WhipError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
                WhipError::AlreadyPublishing(_) => StatusCode::CONFLICT,
                WhipError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                WhipError::Rtc(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::info!(stream = %path, error = %e, "WHIP offer refused");
            error(status, e.to_string())
        }
    }
}
