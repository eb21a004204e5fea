//! WHEP playback: `POST /{app}/{stream}/whep` with the player's SDP offer
//! answers `201 Created` with our answer and the session's resource in
//! `Location`; `DELETE` on it ends the session.
//!
//! A WHEP viewer is the same viewer as an OME-signalling one: the same
//! engines, fan-out and server-side ABR (the viewer starts on the largest
//! rendition under `webrtc.start_bitrate_kbps`, then follows its bandwidth
//! estimate; `?rendition=NAME` pins one), the same admission path and the
//! same playback tokens for private streams (`?token=` or the bearer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::{mpsc, oneshot};

use super::SfuError;
use super::sfu::{CloseReason, JoinRequest, ViewerEvent};
use super::ws::{Signalling, ready_plan};
use crate::auth::{AccessRequest, Client, Protocol, Refusal};
use crate::bus::StreamPath;
use crate::http::sdp;

/// WHEP's errors, by status.
const ERRORS: &str = "streamd_whep_errors_total";

/// Live WHEP sessions by resource: their stream, and how to end them.
type Sessions = Arc<Mutex<HashMap<String, (StreamPath, oneshot::Sender<()>)>>>;

#[derive(Clone)]
struct Whep {
    s: Signalling,
    sessions: Sessions,
}

pub fn routes(s: Signalling) -> Router {
    Router::new()
        .route("/{app}/{stream}/whep", post(play).options(sdp::options))
        .route(
            "/{app}/{stream}/whep/{resource}",
            axum::routing::delete(delete)
                .patch(|| async { sdp::patch_refused(ERRORS) })
                .options(sdp::options),
        )
        .with_state(Whep {
            s,
            sessions: Sessions::default(),
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    sdp::error(ERRORS, status, message)
}

async fn delete(
    State(w): State<Whep>,
    Path((app, stream, resource)): Path<(String, String, String)>,
) -> Response {
    let found = {
        let mut sessions = w.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let ours = sessions
            .get(&resource)
            .is_some_and(|(p, _)| p.app() == app && p.stream() == stream);
        if ours {
            sessions.remove(&resource)
        } else {
            None
        }
    };
    match found {
        Some((_, end)) => {
            let _ = end.send(());
            StatusCode::OK.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such WHEP session"),
    }
}

async fn play(
    State(w): State<Whep>,
    Path((app, stream)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let sdp::Offer {
        headers,
        peer: addr,
        sdp: offer,
    } = match sdp::read_offer(ERRORS, req).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Ok(path) = StreamPath::new(&app, &stream) else {
        return error(StatusCode::NOT_FOUND, "no such stream");
    };
    // A playback token may come as the bearer, as WHEP players send it.
    let mut query = query.unwrap_or_default();
    match crate::http::bearer(&headers) {
        Ok(None) => {}
        Ok(Some(token)) => {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&format!("token={token}"));
        }
        Err(crate::http::BadBearer) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "Authorization must be `Bearer <playback token>`",
            );
        }
    }
    let pinned = crate::http::query_param(Some(&query), "rendition").map(str::to_owned);
    let request = AccessRequest {
        protocol: Protocol::WebRtc,
        app: app.clone(),
        stream: stream.clone(),
        query: (!query.is_empty()).then_some(query),
        url: format!(
            "http://{}/{app}/{stream}/whep",
            crate::http::request_host(&headers)
        ),
        new_session: true,
        client: Client {
            addr,
            real_ip: crate::http::real_ip(&headers).map(str::to_owned),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|h| h.to_str().ok())
                .map(|s| s.chars().take(256).collect()),
        },
    };
    let admitted = match w.s.access.admit(request).await {
        Ok(a) => a,
        Err(refusal) => {
            tracing::info!(stream = %path, %refusal, "WHEP playback refused");
            let status = match refusal {
                Refusal::BadName(_) => StatusCode::NOT_FOUND,
                Refusal::Auth(_) => StatusCode::UNAUTHORIZED,
                Refusal::Denied(_) => StatusCode::FORBIDDEN,
                Refusal::Full(_) | Refusal::Draining => StatusCode::SERVICE_UNAVAILABLE,
            };
            return error(status, format!("playback refused: {refusal}"));
        }
    };
    let Some((broadcast, plan)) = ready_plan(&w.s.registry, &path).await else {
        return error(
            StatusCode::NOT_FOUND,
            "no such stream, or nothing WebRTC can play",
        );
    };
    let pinned = pinned.filter(|p| plan.renditions.iter().any(|r| &r.name == p));
    let (events_tx, events) = mpsc::channel(super::sfu::VIEWER_EVENTS);
    let joined = match w
        .s
        .sfu
        .join(JoinRequest {
            broadcast,
            plan,
            pinned,
            tcp_only: false,
            events: events_tx,
            offer: Some(offer),
        })
        .await
    {
        Ok(j) => j,
        Err(e) => {
            let status = match e {
                SfuError::BadSdp(_) => StatusCode::BAD_REQUEST,
                SfuError::NoH264 => StatusCode::NOT_ACCEPTABLE,
                SfuError::Full | SfuError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let message = match e {
                SfuError::NoH264 => "the offer does not receive H.264 video".to_owned(),
                other => other.to_string(),
            };
            return error(status, message);
        }
    };
    let resource = crate::random::string(22, crate::random::ALPHANUMERIC);
    let (end_tx, end) = oneshot::channel();
    w.sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(resource.clone(), (path.clone(), end_tx));
    tracing::info!(stream = %path, viewer = joined.viewer, rendition = %joined.rendition, "WHEP viewer joined");
    // The session lives on its own until the viewer goes (ICE timeout,
    // DTLS close), DELETE, the stream's end, its admission's lifetime or
    // shutdown.
    let running = w.s.running();
    let (s, sessions, viewer, key) = (
        w.s.clone(),
        w.sessions.clone(),
        joined.viewer,
        resource.clone(),
    );
    tokio::spawn(async move {
        let _running = running;
        let mut events = events;
        let mut end = end;
        let mut shutdown = s.shutdown();
        s.viewers.add(&path);
        let until = admitted.until;
        let reason = loop {
            tokio::select! {
                _ = shutdown.wait() => break "server shutting down",
                _ = &mut end => break "DELETE",
                _ = tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)), if until.is_some() => {
                    break "its admission lifetime is over";
                }
                e = events.recv() => match e {
                    Some(ViewerEvent::Closed(r)) => {
                        break match r {
                            CloseReason::StreamEnded => "the stream ended",
                            CloseReason::IceTimeout => "ICE timeout",
                            _ => "closed by the engine",
                        };
                    }
                    Some(ViewerEvent::RenditionChanged { .. }) => {}
                    None => break "the engine stopped",
                },
            }
        };
        s.sfu.leave(viewer).await;
        s.viewers.remove(&path);
        sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        drop(admitted);
        tracing::info!(stream = %path, viewer, reason, "WHEP viewer left");
    });
    let location = format!("/{app}/{stream}/whep/{resource}");
    let ice = w.s.ice.at(std::time::SystemTime::now());
    sdp::created(joined.sdp, &location, &resource, &ice)
}
