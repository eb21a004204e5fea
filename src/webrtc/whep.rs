//! WHEP playback: `POST /{app}/{stream}/whep` with the player's SDP offer
//! answers `201 Created` with our answer and the session's resource in
//! `Location`; `PATCH` on it carries trickle ICE and ICE restarts, and
//! `DELETE` on it ends the session.
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
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::oneshot;

use super::SfuError;
use super::sfu::{CloseReason, JoinRequest, ViewerEvent, ViewerId};
use super::ws::{Signalling, plan_of};
use crate::auth::{AccessRequest, Client, Protocol, Refusal};
use crate::bus::{Located, StreamPath};
use crate::http::sdp::{self, IceAnswer, IceChange, PatchError};
use str0m::IceCreds;

/// WHEP's errors, by status.
const ERRORS: &str = "streamd_whep_errors_total";

/// A live WHEP session.
struct Session {
    path: StreamPath,
    /// Ends it (DELETE).
    end: oneshot::Sender<()>,
    viewer: ViewerId,
    /// Its entity-tag, which an ICE restart changes.
    etag: String,
    /// The viewer's ICE credentials (trickled candidates carry them).
    remote: (String, String),
    /// Our answer's first m-line and mid, and our candidates: an ICE
    /// restart's answer.
    first_media: (String, String),
    candidates: Vec<String>,
}

/// Live WHEP sessions by resource.
type Sessions = Arc<Mutex<HashMap<String, Session>>>;

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
                .patch(patch)
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

fn lock(sessions: &Sessions) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
    sessions.lock().unwrap_or_else(|e| e.into_inner())
}

async fn delete(
    State(w): State<Whep>,
    Path((app, stream, resource)): Path<(String, String, String)>,
) -> Response {
    let found = {
        let mut sessions = lock(&w.sessions);
        let ours = sessions
            .get(&resource)
            .is_some_and(|s| s.path.app() == app && s.path.stream() == stream);
        if ours {
            sessions.remove(&resource)
        } else {
            None
        }
    };
    match found {
        Some(s) => {
            let _ = s.end.send(());
            StatusCode::OK.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such WHEP session"),
    }
}

/// Trickle ICE or an ICE restart (as WHIP's, RFC 9725 §4.3).
async fn patch(
    State(w): State<Whep>,
    Path((app, stream, resource)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let (change, fragment) = match sdp::read_patch(ERRORS, req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let checked = {
        let sessions = lock(&w.sessions);
        match sessions.get(&resource) {
            Some(s) if s.path.app() == app && s.path.stream() == stream => match &change {
                IceChange::Trickle { if_match } => {
                    if !sdp::matches(if_match.as_deref(), &s.etag) {
                        Err(PatchError::Stale)
                    } else if fragment.ufrag.as_ref().is_some_and(|u| *u != s.remote.0)
                        || fragment.pwd.as_ref().is_some_and(|p| *p != s.remote.1)
                    {
                        Err(PatchError::Credentials)
                    } else {
                        Ok(s.viewer)
                    }
                }
                IceChange::Restart => Ok(s.viewer),
            },
            _ => Err(PatchError::NotFound),
        }
    };
    let result = async {
        let viewer = checked?;
        let candidates = fragment.parsed_candidates()?;
        let restart = match (&change, &fragment.ufrag, &fragment.pwd) {
            (IceChange::Restart, Some(u), Some(p)) => Some(IceCreds {
                ufrag: u.clone(),
                pass: p.clone(),
            }),
            _ => None,
        };
        let ours =
            w.s.sfu
                .ice(viewer, restart, candidates)
                .await
                .map_err(|e| match e {
                    SfuError::NoSession => PatchError::NotFound,
                    other => PatchError::Bad(other.to_string()),
                })?;
        let Some(ours) = ours else { return Ok(None) };
        let mut sessions = lock(&w.sessions);
        let s = sessions.get_mut(&resource).ok_or(PatchError::NotFound)?;
        s.etag = crate::random::string(16, crate::random::ALPHANUMERIC);
        s.remote = (
            fragment.ufrag.clone().unwrap_or_default(),
            fragment.pwd.clone().unwrap_or_default(),
        );
        tracing::info!(stream = %s.path, viewer, "WHEP viewer restarted ICE");
        metrics::counter!("streamd_whep_ice_restarts_total").increment(1);
        Ok(Some((
            IceAnswer {
                ufrag: ours.ufrag,
                pwd: ours.pass,
                candidates: s.candidates.clone(),
                media_line: s.first_media.0.clone(),
                mid: s.first_media.1.clone(),
            },
            s.etag.clone(),
        )))
    }
    .await;
    sdp::patched(ERRORS, result)
}

async fn play(
    State(w): State<Whep>,
    Path((app, stream)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
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
    let Some(remote) = sdp::offer_credentials(&offer) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the offer has no a=ice-ufrag and a=ice-pwd",
        );
    };
    // A playback token may come as the bearer, as WHEP players send it.
    let Ok(query) = crate::http::query_with_bearer(query, &headers, false) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "Authorization must be `Bearer <playback token>`",
        );
    };
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
        client: Client::from_headers(addr, &headers),
    };
    let client = request.client.ip();
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
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "no such stream, or nothing WebRTC can play",
        )
    };
    let mut broadcast = match w.s.registry.locate(&path, client, true).await {
        Some(Located::Here(b)) => b,
        // The cluster sends viewers to the node that has the stream: the
        // client posts its offer again there.
        Some(Located::Elsewhere(base)) => {
            return crate::http::redirect_elsewhere(&base, &target);
        }
        None => return not_found(),
    };
    let Some(plan) = plan_of(&mut broadcast).await else {
        return not_found();
    };
    let pinned = pinned.filter(|p| plan.renditions.iter().any(|r| &r.name == p));
    let (events_tx, events) = super::sfu::viewer_events();
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
    let etag = crate::random::string(16, crate::random::ALPHANUMERIC);
    let (end_tx, end) = oneshot::channel();
    let Some(first_media) = sdp::first_media(&joined.sdp) else {
        w.s.sfu.leave(joined.viewer).await;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "an answer without an m-line",
        );
    };
    lock(&w.sessions).insert(
        resource.clone(),
        Session {
            path: path.clone(),
            end: end_tx,
            viewer: joined.viewer,
            etag: etag.clone(),
            remote,
            first_media,
            candidates: joined
                .candidates
                .iter()
                .map(|c| c.trim_start_matches("a=").to_owned())
                .collect(),
        },
    );
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
        lock(&sessions).remove(&key);
        drop(admitted);
        tracing::info!(stream = %path, viewer, reason, "WHEP viewer left");
    });
    let location = format!("/{app}/{stream}/whep/{resource}");
    let ice = w.s.ice.at(std::time::SystemTime::now());
    sdp::created(joined.sdp, &location, &etag, &ice)
}
