//! WHIP's HTTP side (RFC 9725): `POST /{app}/{stream}/whip` with an SDP
//! offer (or OME's `POST /{app}/{stream}?direction=whip`) answers `201
//! Created` with the SDP answer and the session's resource in `Location`;
//! `PATCH` on that resource carries trickle ICE and ICE restarts, and
//! `DELETE` on it ends the session.
//!
//! The bearer token is the stream key or a publish token, checked through
//! the same admission as RTMP (`?key=`/`?token=` in the URL work too), and a
//! stream that is live refuses a second publisher as RTMP does.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::sdp;
use axum::routing::post;

use super::server::{PatchRequest, PublishRequest, Whip};
use super::session::WhipError;
use crate::auth::turn::IceServers;
use crate::auth::{Access, AccessRequest, Client, Protocol, Refusal};
use crate::bus::StreamPath;
use crate::connlimit::ConnectionLimit;
use std::sync::Arc;

/// WHIP's errors, by status.
const ERRORS: &str = "streamd_whip_errors_total";

#[derive(Clone)]
pub struct WhipHttp {
    pub whip: Whip,
    /// WHIP sessions per client address (the peer's, or the one a trusted
    /// proxy forwards).
    pub per_ip: ConnectionLimit,
    /// The TURN servers publishers are told about (`Link` headers).
    pub ice: Arc<IceServers>,
    pub access: Arc<Access>,
}

pub fn routes(state: WhipHttp) -> Router {
    Router::new()
        .route("/{app}/{stream}/whip", post(publish).options(sdp::options))
        .route(
            "/{app}/{stream}/whip/{resource}",
            axum::routing::delete(delete)
                .patch(patch)
                .options(sdp::options),
        )
        .layer(DefaultBodyLimit::max(sdp::MAX_OFFER))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    sdp::error(ERRORS, status, message)
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

/// Trickle ICE or an ICE restart (RFC 9725 §4.3).
async fn patch(
    State(state): State<WhipHttp>,
    Path((app, stream, resource)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let Ok(path) = StreamPath::new(&app, &stream) else {
        return error(StatusCode::NOT_FOUND, "no such WHIP session");
    };
    let (change, fragment) = match sdp::read_patch(ERRORS, req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = state
        .whip
        .patch(PatchRequest {
            path,
            resource,
            change,
            fragment,
        })
        .await;
    sdp::patched(ERRORS, result)
}

/// OME's form, `POST /{app}/{stream}?direction=whip`: taken before
/// routing rather than a route, so other methods on two-segment paths (the
/// console's files) still reach their handlers.
impl crate::http::Intercept for WhipHttp {
    fn takes(&self, req: &Request) -> bool {
        is_ome_whip(req)
    }

    fn serve(
        self: Arc<Self>,
        req: Request,
    ) -> std::pin::Pin<Box<dyn Future<Output = Response> + Send>> {
        Box::pin(async move {
            let Some((app, stream)) = ome_path(req.uri().path()) else {
                return error(StatusCode::NOT_FOUND, "no such stream");
            };
            let (app, stream) = (app.to_owned(), stream.to_owned());
            let query = req.uri().query().map(str::to_owned);
            publish(
                State(WhipHttp::clone(&self)),
                Path((app, stream)),
                RawQuery(query),
                req,
            )
            .await
        })
    }
}

/// OME's WHIP form: `POST /{app}/{stream}?direction=whip`.
fn is_ome_whip(req: &Request) -> bool {
    req.method() == Method::POST
        && crate::http::query_param(req.uri().query(), "direction") == Some("whip")
        && ome_path(req.uri().path()).is_some()
}

/// `/{app}/{stream}`, the path of OME's WHIP form.
fn ome_path(path: &str) -> Option<(&str, &str)> {
    let mut segments = path.trim_matches('/').split('/');
    match (segments.next(), segments.next(), segments.next()) {
        (Some(app), Some(stream), None) => Some((app, stream)),
        _ => None,
    }
}

async fn publish(
    State(state): State<WhipHttp>,
    Path((app, stream)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let sdp::Offer {
        headers,
        peer: connect,
        sdp: offer,
    } = match sdp::read_offer(ERRORS, req).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    // OME's `?transport=tcp`: answer with ICE-TCP candidates only.
    let tcp_only = crate::http::query_param(query.as_deref(), "transport") == Some("tcp");
    // The bearer token joins the URL's credentials: a JWT is a publish
    // token, anything else a stream key.
    let Ok(query) = crate::http::query_with_bearer(query, &headers, true) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "Authorization must be `Bearer <stream key or publish token>`",
        );
    };
    // A session, connected or not, holds its place from the offer on,
    // counted against the client's address (the one a trusted proxy
    // forwards, when it came through one).
    let client = Client::from_headers(connect, &headers);
    let ip = client.ip().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let Ok(permit) = state.per_ip.try_acquire(ip) else {
        tracing::info!(client = %ip, "WHIP offer refused: too many sessions from this address");
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many WHIP sessions from this address",
        );
    };
    let host = crate::http::request_host(&headers);
    let user_agent = client.user_agent.clone();
    let request = AccessRequest {
        protocol: Protocol::Whip,
        url: format!("http://{host}/{app}/{stream}?direction=whip"),
        app,
        stream,
        query: (!query.is_empty()).then_some(query),
        new_session: true,
        client,
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
            offer,
            admitted,
            permit,
            user_agent,
            tcp_only,
        })
        .await;
    match published {
        Ok(p) => {
            let location = format!("/{}/{}/whip/{}", path.app(), path.stream(), p.resource);
            let ice = state.ice.at(std::time::SystemTime::now());
            sdp::created(p.answer, &location, &p.etag, &ice)
        }
        Err(e) => {
            let status = match e {
                WhipError::BadOffer(_) | WhipError::NoMedia | WhipError::TooManyLayers(_) => {
                    StatusCode::BAD_REQUEST
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    /// What the HTTP server hands OME's WHIP form, before any route: only
    /// a POST with `direction=whip` to `/{app}/{stream}`; the rest (this
    /// server's own `/{app}/{stream}/whip`, WHEP, a playlist, other
    /// methods) goes on to the routes.
    #[test]
    fn takes_only_omes_whip_form() {
        for uri in [
            "/app/stream?direction=whip",
            "/app/stream/?direction=whip",
            "//app/stream//?direction=whip",
            "/app/stream?token=t&direction=whip",
            "/app/stream?direction=whip&transport=tcp",
        ] {
            assert!(is_ome_whip(&request(Method::POST, uri)), "{uri}");
        }
        for (method, uri) in [
            (Method::GET, "/app/stream?direction=whip"),
            (Method::PATCH, "/app/stream?direction=whip"),
            (Method::DELETE, "/app/stream?direction=whip"),
            (Method::POST, "/app/stream"),
            (Method::POST, "/app/stream?direction=whep"),
            (Method::POST, "/app/stream?direction=WHIP"),
            (Method::POST, "/app/stream?xdirection=whip"),
            (Method::POST, "/app/stream/whip?direction=whip"),
            (Method::POST, "/app/stream/whip"),
            (Method::POST, "/app?direction=whip"),
            (Method::POST, "/?direction=whip"),
            (Method::POST, "/a//b?direction=whip"),
            (Method::POST, "/app/stream/llhls.m3u8?direction=whip"),
        ] {
            assert!(
                !is_ome_whip(&request(method.clone(), uri)),
                "{method} {uri}"
            );
        }
    }
}
