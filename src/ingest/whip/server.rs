//! The WHIP driver: one task owns the publishers' UDP socket and their
//! [`WhipCore`], and writes each publisher's media to its broadcast through
//! an [`RtpIngest`]. The HTTP side reaches it through [`Whip`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use str0m::net::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use str0m::media::Rid;

use super::frames::{MAX_LAYERS, Payload, RtpIngest};
use super::session::{Ended, IceTcp, SessionId, Transmit, WhipCore, WhipError, WhipEvent};
use crate::auth::Admitted;
use crate::bus::{BroadcastStatus, PublishError, Registry, StreamPath};
use crate::config::WhipConfig;
use crate::connlimit::ConnectionPermit;
use crate::http::sdp::{self, IceAnswer, IceChange, IceFragment, PatchError};
use crate::ice_tcp::{Route, TcpEvent};
use crate::ingest::tags::{Arrival, Notice};
use crate::media::VideoCodec;
use crate::ratelimit::LogLimiter;
use crate::shutdown::Shutdown;

/// A publisher is asked for a keyframe at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// A new publisher, admitted and holding its broadcast.
pub struct PublishRequest {
    pub offer: String,
    pub admitted: Admitted,
    /// The client address's place among its WHIP sessions.
    pub permit: ConnectionPermit,
    pub user_agent: Option<String>,
    /// The publisher asked for ICE-TCP only (`?transport=tcp`).
    pub tcp_only: bool,
}

/// What the publisher is told.
#[derive(Debug)]
pub struct Published {
    pub answer: String,
    /// The session's resource name: unguessable, it is what lets a client
    /// end the session.
    pub resource: String,
    /// Its entity-tag, which an ICE restart changes.
    pub etag: String,
}

/// A PATCH's outcome: None for candidates taken, or a restart's answer and
/// new entity-tag.
pub type Patched = Result<Option<(IceAnswer, String)>, PatchError>;

enum Command {
    Publish(
        Box<PublishRequest>,
        oneshot::Sender<Result<Published, WhipError>>,
    ),
    /// Ends the session of this resource on this stream; false if none.
    Delete(StreamPath, String, oneshot::Sender<bool>),
    /// Trickle ICE or an ICE restart on this resource of this stream.
    Patch(Box<PatchRequest>, oneshot::Sender<Patched>),
}

pub struct PatchRequest {
    pub path: StreamPath,
    pub resource: String,
    pub change: IceChange,
    pub fragment: IceFragment,
}

/// The HTTP side's handle on the driver. Cheap to clone.
#[derive(Clone)]
pub struct Whip {
    commands: mpsc::Sender<Command>,
}

impl Whip {
    pub async fn publish(&self, request: PublishRequest) -> Result<Published, WhipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish(Box::new(request), tx))
            .await
            .map_err(|_| WhipError::Rtc("WHIP ingest has stopped".into()))?;
        rx.await
            .map_err(|_| WhipError::Rtc("WHIP ingest has stopped".into()))?
    }

    pub async fn patch(&self, request: PatchRequest) -> Patched {
        let (tx, rx) = oneshot::channel();
        let stopped = || PatchError::Bad("WHIP ingest has stopped".into());
        self.commands
            .send(Command::Patch(Box::new(request), tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    pub async fn delete(&self, path: StreamPath, resource: String) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Delete(path, resource, tx))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

struct Publisher {
    ingest: RtpIngest,
    path: StreamPath,
    resource: String,
    etag: String,
    /// Held for its drop (tells an admission backend the publish ended);
    /// its `until` ends the publish.
    admitted: Admitted,
    /// Held for its drop: the address's place among its sessions.
    _permit: ConnectionPermit,
    /// The simulcast layers' rids, by layer (bus track `video`, `video1`…);
    /// empty without simulcast.
    layers: Vec<Rid>,
    /// When each layer was last asked for a keyframe.
    last_keyframe_request: [Option<Instant>; MAX_LAYERS],
    log: LogLimiter,
}

pub struct WhipServer {
    socket: UdpSocket,
    registry: Registry,
    core: WhipCore,
    commands: mpsc::Receiver<Command>,
    publishers: HashMap<SessionId, Publisher>,
    out: Vec<Transmit>,
    /// ICE-TCP connections routed here, and their write queues by remote
    /// address.
    tcp_events: Option<mpsc::Receiver<TcpEvent>>,
    tcp_conns: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    /// `whip.keyframe_interval`.
    keyframe_interval: Duration,
}

impl WhipServer {
    /// Takes the bound socket and the addresses its ICE candidates name,
    /// and a route of the ICE-TCP listener, if it runs.
    pub fn new(
        socket: UdpSocket,
        candidates: Vec<SocketAddr>,
        tcp: Option<Route>,
        registry: Registry,
        config: &WhipConfig,
    ) -> Result<(WhipServer, Whip), WhipError> {
        let (tcp_events, tcp) = match tcp {
            Some(r) => (
                Some(r.events),
                Some(IceTcp {
                    candidates: r.candidates,
                    ufrags: r.ufrags,
                    destination: r.destination,
                }),
            ),
            None => (None, None),
        };
        let core = WhipCore::new(candidates, tcp, config.ice_timeout, config.max_publishers)?;
        let (tx, commands) = mpsc::channel(64);
        Ok((
            WhipServer {
                socket,
                registry,
                core,
                commands,
                publishers: HashMap::new(),
                out: Vec::new(),
                tcp_events,
                tcp_conns: HashMap::new(),
                keyframe_interval: config.keyframe_interval,
            },
            Whip { commands: tx },
        ))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Runs until `shutdown`; every publisher is then let go.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let local = self.socket.local_addr().unwrap_or(([0, 0, 0, 0], 0).into());
        let mut buf = vec![0u8; 2048];
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self
                .core
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = shutdown.wait() => break,
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, src)) = r {
                        self.core.handle_datagram(Protocol::Udp, &buf[..n], src, local, Instant::now(), &mut self.out);
                        for _ in 0..64 {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, src)) => self.core.handle_datagram(Protocol::Udp, &buf[..n], src, local, Instant::now(), &mut self.out),
                                Err(_) => break,
                            }
                        }
                    }
                }
                Some(ev) = recv(&mut self.tcp_events) => self.on_tcp(ev, local),
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = tick.tick() => self.housekeeping(Instant::now()),
            }
            self.core.handle_timeout(Instant::now(), &mut self.out);
            self.on_events(Instant::now());
            self.flush();
            // An ended session's ICE-TCP connections close with it (its
            // writer dropped ends the connection).
            for remote in self.core.take_closed_tcp() {
                self.tcp_conns.remove(&remote);
            }
        }
        for (_, p) in self.publishers.drain() {
            tracing::info!(stream = %p.path, stats = ?p.ingest.stats(), "closing WHIP publisher: server shutting down");
        }
    }

    fn flush(&mut self) {
        for (proto, to, data) in self.out.drain(..) {
            // A send that would block (a full socket or connection queue)
            // is a lost packet, as on the wire.
            match proto {
                Protocol::Udp => {
                    let _ = self.socket.try_send_to(&data, to);
                }
                _ => {
                    if let Some(w) = self.tcp_conns.get(&to) {
                        let _ = w.try_send(Bytes::from(data));
                    }
                }
            }
        }
    }

    fn on_tcp(&mut self, ev: TcpEvent, local: SocketAddr) {
        match ev {
            TcpEvent::Opened { remote, writer } => {
                self.tcp_conns.insert(remote, writer);
            }
            TcpEvent::Packet { remote, data } => {
                self.core.handle_datagram(
                    Protocol::Tcp,
                    &data,
                    remote,
                    local,
                    Instant::now(),
                    &mut self.out,
                );
            }
            TcpEvent::Closed { remote } => {
                self.tcp_conns.remove(&remote);
                self.core.tcp_closed(remote);
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish(req, reply) => {
                let _ = reply.send(self.publish(*req));
            }
            Command::Delete(path, resource, reply) => {
                let found = self
                    .publishers
                    .iter()
                    .find(|(_, p)| p.path == path && p.resource == resource)
                    .map(|(id, _)| *id);
                if let Some(id) = found {
                    self.core.close(id);
                    self.remove(id, "the publisher ended the session (DELETE)");
                }
                let _ = reply.send(found.is_some());
            }
            Command::Patch(req, reply) => {
                let _ = reply.send(self.patch(*req));
            }
        }
    }

    fn patch(&mut self, req: PatchRequest) -> Patched {
        let Some((&id, p)) = self
            .publishers
            .iter_mut()
            .find(|(_, p)| p.path == req.path && p.resource == req.resource)
        else {
            return Err(PatchError::NotFound);
        };
        match req.change {
            IceChange::Trickle { if_match } => {
                if !sdp::matches(if_match.as_deref(), &p.etag) {
                    return Err(PatchError::Stale);
                }
                self.core.trickle(id, &req.fragment)?;
                Ok(None)
            }
            IceChange::Restart => {
                let answer = self.core.restart_ice(id, &req.fragment)?;
                p.etag = crate::random::string(16, crate::random::ALPHANUMERIC);
                tracing::info!(stream = %p.path, "WHIP publisher restarted ICE");
                metrics::counter!("streamd_whip_ice_restarts_total").increment(1);
                Ok(Some((answer, p.etag.clone())))
            }
        }
    }

    /// Answers the offer, then takes the stream: a refused offer never
    /// shows as a broadcast, and a stream already live keeps its publisher.
    fn publish(&mut self, req: PublishRequest) -> Result<Published, WhipError> {
        let now = Instant::now();
        let PublishRequest {
            offer,
            admitted,
            permit,
            user_agent,
            tcp_only,
        } = req;
        let accepted = self.core.accept(&offer, tcp_only, now)?;
        let path = admitted.path.clone();
        let broadcast = match self.registry.publish(path.clone()) {
            Ok(b) => b,
            Err(e) => {
                self.core.close(accepted.session);
                return Err(match e {
                    PublishError::AlreadyPublishing(_) => {
                        WhipError::AlreadyPublishing(e.to_string())
                    }
                    _ => WhipError::Unavailable(e.to_string()),
                });
            }
        };
        let resource = crate::random::string(22, crate::random::ALPHANUMERIC);
        let etag = crate::random::string(16, crate::random::ALPHANUMERIC);
        let layers: Vec<String> = accepted.layers.iter().map(|r| r.to_string()).collect();
        tracing::info!(stream = %path, session = broadcast.session(), video = accepted.has_video, audio = accepted.has_audio, simulcast = ?layers, "WHIP publishing");
        metrics::gauge!("streamd_whip_publishers").increment(1.0);
        self.publishers.insert(
            accepted.session,
            Publisher {
                ingest: RtpIngest::new(
                    broadcast,
                    now,
                    accepted.has_video,
                    accepted.has_audio,
                    user_agent,
                    accepted.layers.len(),
                ),
                path,
                resource: resource.clone(),
                etag: etag.clone(),
                admitted,
                _permit: permit,
                layers: accepted.layers,
                last_keyframe_request: [None; MAX_LAYERS],
                log: LogLimiter::new(Duration::from_secs(5)),
            },
        );
        Ok(Published {
            answer: accepted.answer,
            resource,
            etag,
        })
    }

    /// Ends publishers whose broadcast was ended under them (the stream was
    /// deleted) or whose admission lifetime is over, and passes keyframe
    /// requests from the bus on to publishers.
    fn housekeeping(&mut self, now: Instant) {
        let mut gone = Vec::new();
        let mut keyframes = Vec::new();
        for (id, p) in &self.publishers {
            if p.ingest.broadcast().status() == BroadcastStatus::Ended {
                gone.push((*id, "its broadcast was ended (stream deleted)"));
            } else if p.admitted.until.is_some_and(|u| u.into_std() <= now) {
                gone.push((*id, "its admission lifetime is over"));
            } else {
                let asked = p.ingest.keyframes_requested();
                keyframes.extend(asked.map(|layer| (*id, layer, KEYFRAME_REQUEST_INTERVAL)));
                if !self.keyframe_interval.is_zero() {
                    // 10% of slack: a publisher whose own keyframes come at
                    // the interval is not asked just before one. One that
                    // does not answer is asked once per interval.
                    let interval = self.keyframe_interval;
                    let long = p.ingest.long_groups(now, interval + interval / 10);
                    keyframes.extend(long.map(|layer| (*id, layer, interval)));
                }
            }
        }
        for (id, why) in gone {
            self.core.close(id);
            self.remove(id, why);
        }
        for (id, layer, every) in keyframes {
            self.keyframe(id, layer, now, every);
        }
    }

    /// Asks for a keyframe of video layer `layer`, unless one was asked
    /// for within `every`.
    fn keyframe(&mut self, id: SessionId, layer: usize, now: Instant, every: Duration) {
        let Some(p) = self.publishers.get_mut(&id) else {
            return;
        };
        let Some(last) = p.last_keyframe_request.get_mut(layer) else {
            return;
        };
        if last.is_some_and(|t| now.saturating_duration_since(t) < every) {
            return;
        }
        *last = Some(now);
        let rid = p.layers.get(layer).copied();
        self.core.request_keyframe(id, rid, now, &mut self.out);
    }

    fn on_events(&mut self, now: Instant) {
        while let Some(ev) = self.core.take_event() {
            match ev {
                WhipEvent::Connected(id) => {
                    if let Some(p) = self.publishers.get(&id) {
                        tracing::info!(stream = %p.path, "WHIP publisher connected");
                    }
                }
                WhipEvent::Ended(id, why) => {
                    let why = match why {
                        Ended::Timeout => "no ICE from the publisher".to_owned(),
                        Ended::Disconnected => "the publisher disconnected".to_owned(),
                        Ended::Error(e) => format!("session failed: {e}"),
                    };
                    self.remove(id, &why);
                }
                WhipEvent::Media(id, m) => {
                    let Some(p) = self.publishers.get_mut(&id) else {
                        continue;
                    };
                    let spec = m.params.spec();
                    // A simulcast layer by its rid (one the offer did not
                    // list is dropped); without simulcast, the one video
                    // track.
                    let layer = match (&p.layers[..], m.rid) {
                        ([], _) => Some(0),
                        (rids, Some(rid)) => rids.iter().position(|r| *r == rid),
                        (_, None) => None,
                    };
                    let video = |codec| {
                        layer.map(|layer| Payload::Video {
                            codec,
                            data: &m.data,
                            layer,
                        })
                    };
                    let payload = match spec.codec {
                        str0m::format::Codec::H264 => video(VideoCodec::H264),
                        str0m::format::Codec::H265 => video(VideoCodec::Hevc),
                        str0m::format::Codec::Av1 => video(VideoCodec::Av1),
                        str0m::format::Codec::Opus => Some(Payload::Opus {
                            data: &m.data,
                            channels: spec.channels.unwrap_or(2),
                        }),
                        _ => None,
                    };
                    let Some(payload) = payload else {
                        continue;
                    };
                    let at = Arrival {
                        wallclock: SystemTime::now()
                            - now.saturating_duration_since(m.network_time),
                        instant: m.network_time,
                    };
                    match p
                        .ingest
                        .frame(payload, m.time.numer() as u32, m.contiguous, at)
                    {
                        Ok(step) => {
                            if let Some(n) = step.notice {
                                log_notice(p, n, now);
                            }
                            if step.need_keyframe
                                && let Some(layer) = layer
                            {
                                self.keyframe(id, layer, now, KEYFRAME_REQUEST_INTERVAL);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(stream = %p.path, error = %e, "closing WHIP publisher: its media cannot be used");
                            self.core.close(id);
                            self.remove(id, "bad media");
                        }
                    }
                }
            }
        }
    }

    fn remove(&mut self, id: SessionId, why: &str) {
        if let Some(p) = self.publishers.remove(&id) {
            tracing::info!(stream = %p.path, stats = ?p.ingest.stats(), "WHIP publisher gone: {why}");
            metrics::gauge!("streamd_whip_publishers").decrement(1.0);
        }
    }
}

fn log_notice(p: &mut Publisher, notice: Notice, now: Instant) {
    let stream = &p.path;
    match notice {
        Notice::ConfigChanged { kind, description } => {
            tracing::info!(%stream, kind = kind.as_str(), %description, "codec parameters changed")
        }
        Notice::KeyframeAfterDrops { dropped } => {
            tracing::info!(%stream, dropped, "keyframe arrived; video starts here")
        }
        other => {
            if let Some(suppressed) = p.log.check(now) {
                tracing::debug!(%stream, notice = ?other, suppressed, "WHIP media");
            }
        }
    }
}

/// The next event of an optional receiver; never, without one.
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
