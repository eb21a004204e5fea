//! The signalling WebSocket: `ws://host:3333/{app}/{stream}[/{playlist}]`
//! on the HTTP listener. A request with `Upgrade: websocket` on such a path
//! is taken here; anything else goes on to LL-HLS and the rest.
//!
//! One task per socket, a thin shell: frames in, [`signal::parse`], the
//! engine asked, messages out. Errors are sent as OME sends them
//! (`{"code","error"}`) and the socket is closed. A socket that never asks
//! for an offer, or never answers it, is closed after `ice_timeout`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::sfu::{Choice, CloseReason, EventSender, JoinRequest, ViewerEvent, ViewerId};
use super::signal::{self, ClientMessage, SignalError};
use super::{Sfu, SfuError, StreamPlan};
use crate::auth::turn::IceServers;
use crate::auth::{Access, AccessRequest, Admitted, Client, Protocol, Refusal};
use crate::bus::{BroadcastConsumer, BroadcastStatus, Registry, StreamPath};
use crate::config::WebRtcConfig;
use crate::connlimit::{ConnectionLimit, ConnectionPermit};
use crate::shutdown::Shutdown;
use crate::viewers::{Joining, ViewerCounts};

/// Largest signalling frame accepted (an SDP answer is a few KiB).
const MAX_MESSAGE: usize = 64 << 10;
/// How long `request_offer` waits at most for a stream's catalog to be
/// complete. It normally is within milliseconds of the first frames; this
/// bounds a fault (a publisher that declared audio and sends none, an Opus
/// encoder that cannot start), after which what the catalog lists is
/// served.
const CATALOG_WAIT: Duration = Duration::from_secs(3);
/// Close a socket that has received nothing (not even a pong) for this
/// many ping intervals, as OME does.
const SILENT_PINGS: u32 = 3;
/// How long a closing socket waits for the client's Close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Signalling {
    pub sfu: Sfu,
    pub registry: Registry,
    /// Shared: every signalling session holds a `Signalling`.
    pub config: Arc<WebRtcConfig>,
    pub access: Arc<Access>,
    pub viewers: Arc<ViewerCounts>,
    /// Unanswered offers, per client address.
    pub pending_offers: ConnectionLimit,
    /// The TURN servers viewers are told about.
    pub ice: Arc<IceServers>,
    /// Signalling sessions running now.
    sessions: Arc<watch::Sender<usize>>,
    /// Ends every session at shutdown.
    shutdown: Shutdown,
}

/// Waits for the signalling sessions to end (at shutdown: their ends send
/// the admission backend its `closing` calls, which must be on their way
/// before the server drains them).
#[derive(Clone)]
pub struct Sessions(Arc<watch::Sender<usize>>);

impl Sessions {
    /// Until no session runs, or `timeout`.
    pub async fn ended(&self, timeout: Duration) {
        let mut rx = self.0.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                left = *self.0.borrow(),
                "webrtc signalling sessions still open at the shutdown deadline"
            );
        }
    }
}

/// One running session, counted until dropped (after the session let its
/// admission go).
pub(super) struct Running(Arc<watch::Sender<usize>>);

impl Running {
    fn new(sessions: &Arc<watch::Sender<usize>>) -> Running {
        sessions.send_modify(|n| *n += 1);
        metrics::gauge!("streamd_webrtc_signalling_sockets").increment(1.0);
        Running(sessions.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
        metrics::gauge!("streamd_webrtc_signalling_sockets").decrement(1.0);
    }
}

impl Signalling {
    pub fn new(
        sfu: Sfu,
        registry: Registry,
        config: WebRtcConfig,
        access: Arc<Access>,
        viewers: Arc<ViewerCounts>,
        ice: Arc<IceServers>,
        shutdown: Shutdown,
    ) -> Signalling {
        let pending_offers =
            ConnectionLimit::new(config.max_viewers, config.max_pending_offers_per_ip);
        Signalling {
            sfu,
            registry,
            config: Arc::new(config),
            access,
            viewers,
            pending_offers,
            ice,
            sessions: Arc::new(watch::channel(0).0),
            shutdown,
        }
    }

    /// A handle to wait for the sessions to end.
    pub fn sessions(&self) -> Sessions {
        Sessions(self.sessions.clone())
    }

    /// Counts a session (WHEP's too) until dropped.
    pub(super) fn running(&self) -> Running {
        Running::new(&self.sessions)
    }

    pub(super) fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }
}

/// WebSocket upgrades on `/{app}/{stream}[/{playlist}]` become signalling
/// sessions, whatever the route for the path.
impl crate::http::Intercept for Signalling {
    fn takes(&self, req: &Request) -> bool {
        is_signalling(req)
    }

    fn serve(
        self: Arc<Self>,
        req: Request,
    ) -> std::pin::Pin<Box<dyn Future<Output = Response> + Send>> {
        Box::pin(upgrade(self, req))
    }
}

/// A WebSocket upgrade to a signalling URL, whatever its method or query
/// (the upgrade itself checks the rest).
fn is_signalling(req: &Request) -> bool {
    is_websocket(req.headers()) && signalling_path(req.uri().path()).is_some()
}

/// The stream and playlist a signalling URL's path names: `/{app}/{stream}`
/// or `/{app}/{stream}/{playlist}`.
fn signalling_path(path: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut segments = path.trim_start_matches('/').split('/');
    let (app, stream) = (segments.next()?, segments.next()?);
    match (segments.next(), segments.next()) {
        (None, _) => Some((app, stream, None)),
        (Some(playlist), None) if !playlist.is_empty() => Some((app, stream, Some(playlist))),
        _ => None,
    }
}

/// A signalling session on the upgraded connection.
/// `s` is shared (an `Arc`): only a signalling connection needs its own
/// copy.
async fn upgrade(s: Arc<Signalling>, req: Request) -> Response {
    let Some((app, stream, playlist)) = signalling_path(req.uri().path()) else {
        return (StatusCode::NOT_FOUND, "no such stream\n").into_response();
    };
    let Ok(path) = StreamPath::new(app, stream) else {
        return (StatusCode::NOT_FOUND, "no such stream\n").into_response();
    };
    let playlist = playlist.map(str::to_owned);
    // OvenPlayer's `?transport=tcp`: offer the ICE-TCP candidate alone.
    let tcp_only = crate::http::query_param(req.uri().query(), "transport")
        .is_some_and(|t| t.eq_ignore_ascii_case("tcp"));
    // Who the viewer is, for the admission path.
    let url = format!(
        "ws://{}{}",
        crate::http::request_host(req.headers()),
        req.uri()
    );
    let client = Client::of(&req);
    let query = req.uri().query().map(str::to_owned);
    // Boxed, and moved whole into the session's task: a task keeps what
    // it captured for its life, so a session built inside it would be
    // held twice.
    let session = Box::new(Session::new(
        Signalling::clone(&s),
        path,
        playlist,
        tcp_only,
        query,
        url,
        client,
    ));
    let (mut parts, _body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    // Signalling is a few small frames per viewer: small buffers (the
    // defaults, 128 KiB each way, would dominate a viewer's memory). The
    // read buffer is kept for the session's life, filled whole by each
    // read: 512 bytes (a larger frame grows it to its length).
    upgrade
        .read_buffer_size(512)
        .write_buffer_size(4 << 10)
        .max_write_buffer_size(MAX_MESSAGE * 2)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session.run(socket))
}

fn is_websocket(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

struct Session {
    s: Signalling,
    path: StreamPath,
    playlist: Option<String>,
    viewer: Option<ViewerId>,
    answered: bool,
    plan: Option<StreamPlan>,
    /// The rendition the viewer started on.
    start: Option<String>,
    /// `?transport=tcp`: offer only the ICE-TCP candidate.
    tcp_only: bool,
    /// The signalling URL's query (`?token=`: a playback token, which a
    /// private stream needs).
    query: Option<String>,
    /// Counted in the stream's viewers (after the answer).
    counted: bool,
    /// Counted as joining the stream, from the offer to the answer.
    joining: Option<Joining>,
    /// The URL the viewer used and who it is, for the admission path.
    url: String,
    client: Client,
    /// Held while the viewer is admitted: its drop tells an admission
    /// backend the viewer left; its `until` ends the session.
    admitted: Option<Box<Admitted>>,
    /// This session's slot among its address's unanswered offers, from the
    /// offer to the answer.
    pending: Option<ConnectionPermit>,
    /// Counts the session among the running ones from its start. The last
    /// field, so dropped last, even when the session panics: the drain
    /// waits for the count, and `admitted` must have told the backend
    /// first.
    running: Option<Running>,
}

/// What the session does after a client frame.
enum Next_ {
    Continue,
    Close,
}

impl Session {
    fn new(
        s: Signalling,
        path: StreamPath,
        playlist: Option<String>,
        tcp_only: bool,
        query: Option<String>,
        url: String,
        client: Client,
    ) -> Session {
        Session {
            s,
            path,
            playlist,
            tcp_only,
            query,
            url,
            client,
            admitted: None,
            pending: None,
            running: None,
            counted: false,
            joining: None,
            viewer: None,
            answered: false,
            plan: None,
            start: None,
        }
    }

    /// The session until it ends. Not an `async fn`: that would copy the
    /// session and the socket from its arguments into its own state, and
    /// a viewer's task would hold both twice for its life.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn run(mut self: Box<Self>, mut socket: WebSocket) -> impl Future<Output = ()> + Send {
        async move {
            self.running = Some(Running::new(&self.s.sessions));
            let (events_tx, mut events) = super::sfu::viewer_events();
            let ping_every = self.s.config.ping_interval;
            let mut ping =
                tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
            let mut silent_pings = 0u32;
            // Until answered: a deadline for the offer/answer exchange.
            let handshake = tokio::time::sleep(self.s.config.ice_timeout);
            tokio::pin!(handshake);
            let mut shutdown = self.s.shutdown.clone();
            loop {
                // An admission backend's `lifetime` ends the session.
                let until = self.admitted.as_ref().and_then(|a| a.until);
                tokio::select! {
                    _ = shutdown.wait() => break,
                    frame = socket.recv() => {
                        let Some(Ok(frame)) = frame else { break };
                        silent_pings = 0;
                        let text = match frame {
                            Message::Text(t) => t,
                            Message::Binary(_) => {
                                self.fail(&mut socket, SignalError::new(400, "Invalid JSON")).await;
                                break;
                            }
                            Message::Close(_) => break,
                            _ => continue, // ping/pong
                        };
                        // Boxed: the offer's state lives only while it is
                        // handled, not in every session's task for its life.
                        match Box::pin(self.on_text(&text, &events_tx, &mut socket)).await {
                            Ok(Next_::Continue) => {}
                            Ok(Next_::Close) => break,
                            Err(e) => {
                                tracing::debug!(stream = %self.path, error = %e, "webrtc signalling error");
                                self.fail(&mut socket, e).await;
                                break;
                            }
                        }
                    }
                    Some(event) = events.recv() => match event {
                        ViewerEvent::RenditionChanged { name, auto } => {
                            if self.answered && !send(&mut socket, signal::rendition_changed_json(&name, auto)).await {
                                break;
                            }
                        }
                        ViewerEvent::Closed(reason) => {
                            tracing::debug!(stream = %self.path, ?reason, "webrtc viewer closed");
                            self.viewer = None; // the engine already forgot it
                            if reason == CloseReason::AnswerTimeout {
                                self.fail(&mut socket, SignalError::new(408, "No answer in time")).await;
                            }
                            // Otherwise (stream ended, ICE timeout) the socket
                            // just closes, as OME does.
                            break;
                        }
                    },
                    _ = ping.tick() => {
                        silent_pings += 1;
                        if silent_pings > SILENT_PINGS {
                            break;
                        }
                        if socket.send(Message::Ping("streamd".into())).await.is_err() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)), if until.is_some() => {
                        tracing::info!(stream = %self.path, "webrtc viewer closed: its admission lifetime is over");
                        break;
                    }
                    _ = &mut handshake, if !self.answered => {
                        self.fail(&mut socket, SignalError::new(408, "No answer in time")).await;
                        break;
                    }
                }
            }
            // The ends are boxed, as `on_text` is: their state would
            // otherwise be kept in every session's task for its life.
            if let Some(id) = self.viewer.take() {
                Box::pin(self.s.sfu.leave(id)).await;
            }
            if self.counted {
                self.s.viewers.remove(&self.path);
            }
            // No longer joining either (before the closing handshake's wait).
            self.joining = None;
            // The backend hears `closing` (if it admitted this viewer).
            self.admitted = None;
            // The closing handshake: wait (briefly) for the client's Close, so
            // an error sent just before reaches a client that reads late (a
            // plain TCP close could reset the connection and lose it).
            if socket.send(Message::Close(None)).await.is_ok() {
                let _ = Box::pin(tokio::time::timeout(CLOSE_WAIT, async {
                    while let Some(Ok(m)) = socket.recv().await {
                        if matches!(m, Message::Close(_)) {
                            break;
                        }
                    }
                }))
                .await;
            }
        }
    }

    async fn fail(&self, socket: &mut WebSocket, e: SignalError) {
        let _ = socket.send(Message::Text(e.json().into())).await;
    }

    async fn on_text(
        &mut self,
        text: &str,
        events: &EventSender,
        socket: &mut WebSocket,
    ) -> Result<Next_, SignalError> {
        match signal::parse(text, self.viewer)? {
            ClientMessage::RequestOffer => {
                if self.viewer.is_some() {
                    return Err(SignalError::new(400, "An offer was already made"));
                }
                let ip = self.client_ip();
                let permit = self.s.pending_offers.try_acquire(ip).map_err(|e| {
                    tracing::info!(stream = %self.path, client = %ip, error = %e, "webrtc offer refused: too many unanswered offers");
                    SignalError::new(429, "Too many unanswered offers from this address")
                })?;
                self.pending = Some(permit);
                let joining = self.s.viewers.joining(&self.path);
                let joined = self.offer(events.clone()).await?;
                self.viewer = Some(joined.viewer);
                self.joining = Some(joining);
                let ice = self.s.ice.at(std::time::SystemTime::now());
                let msg = signal::offer_json(joined.viewer, &joined.sdp, &joined.candidates, &ice);
                if !send(socket, msg).await {
                    return Ok(Next_::Close);
                }
            }
            ClientMessage::Answer { sdp } => {
                let id = self
                    .viewer
                    .ok_or_else(|| SignalError::new(400, "Invalid ID"))?;
                if self.answered {
                    return Err(SignalError::new(400, "The answer was already given"));
                }
                match self.s.sfu.answer(id, sdp).await {
                    Ok(()) => {}
                    Err(e) => {
                        self.viewer = None; // the engine dropped it
                        self.joining = None;
                        return Err(match e {
                            SfuError::BadSdp(m) => {
                                SignalError::new(400, format!("Could not parse SDP: {m:.200}"))
                            }
                            SfuError::NoH264 => {
                                SignalError::new(400, "The answer does not accept H.264 video")
                            }
                            SfuError::Stopped => SignalError::new(503, "Server is shutting down"),
                            other => SignalError::new(403, format!("Forbidden: {other}")),
                        });
                    }
                }
                self.answered = true;
                self.pending = None;
                self.s.viewers.add(&self.path);
                self.counted = true;
                self.joining = None;
                let plan = self.plan.as_ref().expect("an offer was made");
                let name = self.playlist.as_deref().unwrap_or("webrtc_default");
                let auto = self.pinned().is_none();
                if !send(
                    socket,
                    signal::playlist_json(name, auto, &plan.renditions, plan.audio.is_some()),
                )
                .await
                {
                    return Ok(Next_::Close);
                }
                let start = self.start.clone().unwrap_or_default();
                if !send(socket, signal::rendition_changed_json(&start, auto)).await {
                    return Ok(Next_::Close);
                }
            }
            ClientMessage::Candidate | ClientMessage::Pong => {}
            ClientMessage::ChangeRendition { rendition, auto } => {
                let id = self
                    .viewer
                    .ok_or_else(|| SignalError::new(400, "Invalid ID"))?;
                if !self.answered {
                    return Ok(Next_::Continue); // as OME: a no-op before the answer
                }
                let choice = match (rendition, auto) {
                    (_, Some(true)) => Choice::Auto,
                    (Some(name), _) => Choice::Rendition(name),
                    (None, _) => return Ok(Next_::Continue),
                };
                match self.s.sfu.change(id, choice).await {
                    // An unknown rendition is ignored, as OME does.
                    Ok(()) | Err(SfuError::UnknownRendition(_)) => {}
                    Err(SfuError::NoSession) => return Ok(Next_::Close),
                    Err(e) => return Err(SignalError::new(403, format!("Forbidden: {e}"))),
                }
            }
            ClientMessage::Stop => return Ok(Next_::Close),
        }
        Ok(Next_::Continue)
    }

    /// The address offers are counted against: the one a trusted proxy
    /// reported, else the peer's.
    fn client_ip(&self) -> IpAddr {
        self.client
            .ip()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    /// A rendition named by the URL's playlist segment.
    fn pinned(&self) -> Option<&str> {
        let plan = self.plan.as_ref()?;
        let p = self.playlist.as_deref()?;
        plan.renditions.iter().any(|r| r.name == p).then_some(p)
    }

    async fn offer(&mut self, events: EventSender) -> Result<super::sfu::Joined, SignalError> {
        let not_found = || SignalError::new(404, "Cannot create offer");
        // One admission path (a private stream's playback token, an
        // admission backend); any refusal is answered as OME answers a
        // denied one. Asked once per signalling session.
        if self.admitted.is_none() {
            let request = AccessRequest {
                protocol: Protocol::WebRtc,
                app: self.path.app().to_owned(),
                stream: self.path.stream().to_owned(),
                query: self.query.clone(),
                url: self.url.clone(),
                client: self.client.clone(),
                new_session: true,
            };
            match self.s.access.admit(request).await {
                Ok(a) => self.admitted = Some(Box::new(a)),
                Err(Refusal::Draining) => {
                    return Err(SignalError::new(
                        503,
                        "the server is shutting down: try another node",
                    ));
                }
                Err(refusal) => {
                    tracing::info!(stream = %self.path, %refusal, "webrtc playback refused");
                    return Err(not_found());
                }
            }
        }
        let (broadcast, plan) = ready_plan(&self.s.registry, &self.path, self.client.ip())
            .await
            .ok_or_else(not_found)?;
        self.plan = Some(plan.clone());
        let pinned = self.pinned().map(str::to_owned);
        let joined = self
            .s
            .sfu
            .join(JoinRequest {
                broadcast,
                plan,
                pinned,
                tcp_only: self.tcp_only,
                events,
                offer: None,
            })
            .await
            .map_err(|e| match e {
                SfuError::Full => SignalError::new(503, "Too many viewers"),
                SfuError::Stopped => SignalError::new(503, "Server is shutting down"),
                _ => not_found(),
            })?;
        self.start = Some(joined.rendition.clone());
        tracing::info!(stream = %self.path, viewer = joined.viewer, rendition = %joined.rendition, "webrtc viewer joined");
        Ok(joined)
    }
}

/// The stream (for a viewer at `client`) and what it offers WebRTC
/// ([`plan_of`]); `None` when there is no such stream or nothing WebRTC
/// can play.
pub(super) async fn ready_plan(
    registry: &Registry,
    path: &StreamPath,
    client: Option<IpAddr>,
) -> Option<(BroadcastConsumer, StreamPlan)> {
    let mut broadcast = registry.find(path, client).await?;
    let plan = plan_of(&mut broadcast).await?;
    Some((broadcast, plan))
}

/// What `broadcast` offers WebRTC once its catalog is complete (a stream
/// that just started may not have its renditions or its audio yet), or
/// after [`CATALOG_WAIT`] what it lists then; `None` when it ended or
/// lists nothing WebRTC can play.
pub(super) async fn plan_of(broadcast: &mut BroadcastConsumer) -> Option<StreamPlan> {
    let deadline = tokio::time::Instant::now() + CATALOG_WAIT;
    let mut update = broadcast.snapshot();
    loop {
        if update.status == BroadcastStatus::Ended {
            return None;
        }
        if update.catalog.as_ref().is_some_and(|c| c.complete) {
            return update.catalog.as_ref().and_then(StreamPlan::of);
        }
        match tokio::time::timeout_at(deadline, broadcast.update()).await {
            Ok(u) => update = u,
            Err(_) => {
                tracing::warn!(stream = %broadcast.path(), catalog = ?update.catalog, "the stream's catalog is not complete; serving what it lists");
                return update.catalog.as_ref().and_then(StreamPlan::of);
            }
        }
    }
}

async fn send(socket: &mut WebSocket, text: String) -> bool {
    socket.send(Message::Text(text.into())).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, upgrade: Option<&str>) -> Request {
        let mut b = Request::builder().uri(uri);
        if let Some(u) = upgrade {
            b = b
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, u);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    /// What the HTTP server hands signalling, before any route: a
    /// WebSocket upgrade to `/{app}/{stream}` or `/{app}/{stream}/{playlist}`
    /// (OME's signalling URLs), never a plain request to the same paths
    /// (LL-HLS, the API, the console) nor an upgrade to another path.
    #[test]
    fn takes_websocket_upgrades_to_signalling_paths() {
        for uri in [
            "/app/stream",
            "/app/stream?transport=tcp",
            "/app/stream/abr",
            "/app/stream/webrtc_default?token=t",
        ] {
            for upgrade in ["websocket", "WebSocket"] {
                assert!(
                    is_signalling(&request(uri, Some(upgrade))),
                    "{uri} {upgrade}"
                );
            }
            assert!(!is_signalling(&request(uri, None)), "{uri} without upgrade");
            assert!(!is_signalling(&request(uri, Some("h2c"))), "{uri} h2c");
        }
        for uri in [
            "/",
            "/app",
            "/app/stream/",
            "/app/stream/abr/x",
            "/app/stream/abr/",
        ] {
            assert!(!is_signalling(&request(uri, Some("websocket"))), "{uri}");
        }
        assert_eq!(
            signalling_path("/app/stream/abr"),
            Some(("app", "stream", Some("abr")))
        );
        assert_eq!(
            signalling_path("/app/stream"),
            Some(("app", "stream", None))
        );
    }
}
