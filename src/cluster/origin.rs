//! The origin's side of a pull: a stream's description, each track as one
//! long response of CMAF (see [`super::wire`]), and keyframe requests from
//! edges' viewers. Only nodes holding the cluster secret are answered, and
//! only streams published here: a node never serves what it pulled, so
//! pulls cannot chain or loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::wire::{MetaEntry, StreamInfo, TrackEntry, TrackWriter};
use crate::bus::{BroadcastConsumer, BroadcastStatus, Registry, StreamPath, TrackEvent};
use crate::ratelimit::LogLimiter;

/// How long a description waits for a stream's catalog to be complete (a
/// stream that just started).
const CATALOG_WAIT: Duration = Duration::from_secs(5);
/// A pull further behind than this skips to the newest keyframe (the bus
/// does it: a slow edge never holds the origin back).
const PULL_MAX_LAG: Duration = Duration::from_secs(2);
/// Frames queued per pull beyond what the socket takes. With the socket's
/// own write deadline ([`crate::http::stall`]) this bounds a stalled edge.
const PULL_QUEUE: usize = 64;
/// A pull whose queue stays full this long is ended. Over HTTP/1.1 the
/// socket's write deadline sees a reader that stopped; over HTTP/2 the
/// socket keeps moving (other streams, pings) while an edge that grants
/// the stream no window stops this one alone, and only this sees it.
const PULL_STALL: Duration = crate::http::stall::WRITE_STALL;

/// Repeated warnings are logged once per this.
const LOG_EVERY: Duration = Duration::from_secs(10);

fn allowed(limiter: &Mutex<LogLimiter>) -> Option<u64> {
    limiter
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(std::time::Instant::now())
}

#[derive(Clone)]
pub struct OriginHttp {
    pub registry: Registry,
    /// The cluster secret.
    pub secret: Arc<str>,
}

pub fn routes(state: OriginHttp) -> Router {
    Router::new()
        .route("/cluster/v1/streams/{app}/{stream}", get(describe))
        .route(
            "/cluster/v1/streams/{app}/{stream}/tracks/{track}",
            get(pull),
        )
        .route(
            "/cluster/v1/streams/{app}/{stream}/tracks/{track}/keyframe",
            post(keyframe),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        format!("{message}\n"),
    )
        .into_response()
}

/// Only a node with the cluster secret (`Authorization: Bearer …`).
async fn authorize(State(o): State<OriginHttp>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), o.secret.as_bytes())
        .is_err()
    {
        static LOG: Mutex<LogLimiter> = Mutex::new(LogLimiter::new(LOG_EVERY));
        if let Some(suppressed) = allowed(&LOG) {
            tracing::warn!(uri = %req.uri(), suppressed, "a cluster request without the cluster secret was refused");
        }
        return error(StatusCode::UNAUTHORIZED, "the cluster secret is required");
    }
    next.run(req).await
}

/// The broadcast at `app/stream` if it is published here.
fn published(o: &OriginHttp, app: &str, stream: &str) -> Option<BroadcastConsumer> {
    let path = StreamPath::new(app, stream).ok()?;
    o.registry.get(&path).filter(|b| !b.relayed())
}

/// What the stream is, once its publisher is live and its catalog complete.
async fn describe(
    State(o): State<OriginHttp>,
    Path((app, stream)): Path<(String, String)>,
) -> Response {
    let Some(mut b) = published(&o, &app, &stream) else {
        return error(StatusCode::NOT_FOUND, "no such stream on this origin");
    };
    let deadline = tokio::time::Instant::now() + CATALOG_WAIT;
    let mut update = b.snapshot();
    loop {
        if let BroadcastStatus::Live { session } = update.status
            && let Some(catalog) = update.catalog.as_ref().filter(|c| c.complete)
        {
            let tracks = update
                .tracks
                .iter()
                .filter(|t| catalog.lists(&t.name))
                .map(TrackEntry::from)
                .collect();
            let info = StreamInfo {
                session,
                catalog: catalog.clone(),
                tracks,
                meta: MetaEntry::from(&update.meta),
            };
            return ([(header::CACHE_CONTROL, "no-store")], axum::Json(info)).into_response();
        }
        if update.status == BroadcastStatus::Ended {
            return error(StatusCode::NOT_FOUND, "the stream ended");
        }
        match tokio::time::timeout_at(deadline, b.update()).await {
            Ok(u) => update = u,
            Err(_) => {
                let why = if matches!(update.status, BroadcastStatus::Interrupted { .. }) {
                    "the publisher is away (reconnect grace)"
                } else {
                    "the stream's outputs are not ready"
                };
                return error(StatusCode::SERVICE_UNAVAILABLE, why);
            }
        }
    }
}

#[derive(Deserialize)]
struct PullQuery {
    /// The publisher session the edge described: frames of earlier ones
    /// are skipped, and a later one ends the response (the edge describes
    /// the stream again and continues with a discontinuity).
    session: u32,
}

/// One track, from its newest keyframe on, for as long as the session
/// lasts and the edge reads.
async fn pull(
    State(o): State<OriginHttp>,
    Path((app, stream, track)): Path<(String, String, String)>,
    Query(q): Query<PullQuery>,
) -> Response {
    let Some(b) = published(&o, &app, &stream) else {
        return error(StatusCode::NOT_FOUND, "no such stream on this origin");
    };
    if !b.catalog().is_some_and(|c| c.lists(&track)) {
        return error(
            StatusCode::NOT_FOUND,
            "no such track in the stream's catalog",
        );
    }
    let Some(mut consumer) = b.subscribe(&track, Some(PULL_MAX_LAG)) else {
        return error(StatusCode::NOT_FOUND, "no such track");
    };
    let (tx, rx) = mpsc::channel::<Bytes>(PULL_QUEUE);
    let path = b.path().clone();
    let session = q.session;
    metrics::gauge!("streamd_cluster_pulls_served").increment(1.0);
    tokio::spawn(async move {
        let mut writer = TrackWriter::default();
        let why = loop {
            let ev = tokio::select! {
                ev = consumer.next() => ev,
                () = tx.closed() => break "the edge went away",
            };
            let f = match ev {
                None => break "the stream ended",
                Some(TrackEvent::Interrupted) => break "the publisher left",
                Some(TrackEvent::Frame(f)) => f,
            };
            if f.group.session < session {
                continue;
            }
            if f.group.session > session {
                break "a new publisher session began";
            }
            let bytes = match writer.frame(&f.group.config, &f.frame, f.group_start) {
                Ok(b) => b,
                Err(e) => {
                    static LOG: Mutex<LogLimiter> = Mutex::new(LogLimiter::new(LOG_EVERY));
                    if let Some(suppressed) = allowed(&LOG) {
                        tracing::warn!(stream = %path, %track, error = %e, suppressed, "a frame cannot be sent to an edge; skipped");
                    }
                    continue;
                }
            };
            metrics::counter!("streamd_cluster_pull_bytes_total").increment(bytes.len() as u64);
            // A full queue waits for the socket (or, over HTTP/2, for the
            // stream's window), for at most PULL_STALL; the body then ends.
            match tokio::time::timeout(PULL_STALL, tx.send(bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break "the edge went away",
                Err(_) => {
                    metrics::counter!("streamd_cluster_pull_stalls_total").increment(1);
                    break "the edge read nothing of it for a while";
                }
            }
        };
        metrics::gauge!("streamd_cluster_pulls_served").decrement(1.0);
        tracing::debug!(stream = %path, %track, why, "a pull ended");
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(b), rx))
    });
    (
        [
            (header::CONTENT_TYPE, "video/mp4"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// A viewer on an edge waits for a keyframe of `track`.
async fn keyframe(
    State(o): State<OriginHttp>,
    Path((app, stream, track)): Path<(String, String, String)>,
) -> Response {
    match published(&o, &app, &stream) {
        Some(b) if b.catalog().is_some_and(|c| c.lists(&track)) && b.request_keyframe(&track) => {
            metrics::counter!("streamd_cluster_keyframe_requests_total").increment(1);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such stream or track on this origin",
        ),
    }
}
