//! The SFU's driver: one task per engine owns a UDP socket and an
//! [`SfuCore`], and feeds the core what arrives (datagrams, ICE-TCP frames,
//! media from the feed tasks, signalling's commands) with the time. What
//! the core writes goes out through [`SendQueue`] (batched `sendmmsg`/GSO)
//! or the viewer's ICE-TCP connection; the feeds it asks for are started
//! and stopped here.
//!
//! The engine never blocks: sends that would block are dropped (UDP), and
//! signalling talks to it through a bounded command channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::net::Protocol;
use str0m::{Candidate, IceCreds};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::feed::FeedMsg;
pub use super::sfu_core::{
    Choice, CloseReason, EventSender, JoinRequest, Joined, SfuError, ViewerEvent, ViewerId,
    viewer_events,
};
use super::sfu_core::{FeedChange, SfuCore, Shared, Sink, Templates};
use super::udp::{Flushed, SendQueue};
use crate::config::WebRtcConfig;
use crate::ice_tcp::TcpEvent;
use crate::ratelimit::LogLimiter;
use crate::shutdown::Shutdown;

/// Bounded control channels.
const COMMANDS: usize = 1024;
const MEDIA: usize = 512;

enum Command {
    Join(JoinRequest, oneshot::Sender<Result<Joined, SfuError>>),
    Answer(ViewerId, String, oneshot::Sender<Result<(), SfuError>>),
    Change(ViewerId, Choice, oneshot::Sender<Result<(), SfuError>>),
    Ice(
        ViewerId,
        Option<IceCreds>,
        Vec<Candidate>,
        oneshot::Sender<Result<Option<IceCreds>, SfuError>>,
    ),
    Leave(ViewerId),
    /// Fault injection: panic while handling this viewer, or (None) the
    /// engine itself.
    Fault(Option<ViewerId>),
}

/// Signalling's handle on the engine. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    /// Each engine's command queue; engine `k` numbers its viewers
    /// `k (mod engines)`, so a viewer id says which engine has it.
    engines: Arc<[mpsc::Sender<Command>]>,
    next: Arc<AtomicUsize>,
}

impl Sfu {
    fn engine(&self, viewer: ViewerId) -> &mpsc::Sender<Command> {
        &self.engines[viewer as usize % self.engines.len()]
    }

    async fn ask<T>(
        &self,
        engine: &mpsc::Sender<Command>,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        engine.send(make(tx)).await.map_err(|_| SfuError::Stopped)?;
        rx.await.map_err(|_| SfuError::Stopped)?
    }

    /// Offers a new viewer a session, on the engines in turn.
    pub async fn join(&self, request: JoinRequest) -> Result<Joined, SfuError> {
        let k = self.next.fetch_add(1, Ordering::Relaxed) % self.engines.len();
        self.ask(&self.engines[k], |tx| Command::Join(request, tx))
            .await
    }

    pub async fn answer(&self, viewer: ViewerId, sdp: String) -> Result<(), SfuError> {
        self.ask(self.engine(viewer), |tx| Command::Answer(viewer, sdp, tx))
            .await
    }

    pub async fn change(&self, viewer: ViewerId, choice: Choice) -> Result<(), SfuError> {
        self.ask(self.engine(viewer), |tx| {
            Command::Change(viewer, choice, tx)
        })
        .await
    }

    /// Trickled candidates, or (with `restart`, the viewer's new
    /// credentials) an ICE restart, which returns ours.
    pub async fn ice(
        &self,
        viewer: ViewerId,
        restart: Option<IceCreds>,
        candidates: Vec<Candidate>,
    ) -> Result<Option<IceCreds>, SfuError> {
        self.ask(self.engine(viewer), |tx| {
            Command::Ice(viewer, restart, candidates, tx)
        })
        .await
    }

    /// The viewer's signalling is gone (stop, or the socket closed).
    pub async fn leave(&self, viewer: ViewerId) {
        let _ = self.engine(viewer).send(Command::Leave(viewer)).await;
    }

    /// Fault injection, for tests and the fault run: makes the engine panic
    /// while it handles `viewer` (only that viewer is closed), or, with
    /// `engine_of` and no viewer, outside any one viewer (that engine's
    /// viewers are closed; it goes on taking new ones). Nothing else uses it.
    pub async fn inject_panic(&self, viewer: Option<ViewerId>, engine_of: ViewerId) {
        let _ = self.engine(engine_of).send(Command::Fault(viewer)).await;
    }
}

/// Send counters, flushed to metrics once a second.
#[derive(Default)]
struct Counters {
    packets: u64,
    bytes: u64,
    send_dropped: u64,
    /// Send system calls (packets / calls is the batching factor).
    send_calls: u64,
    /// The error of the last flush that dropped datagrams, not yet logged
    /// (a push flushes by itself when the queue is full).
    send_error: Option<i32>,
}

impl Counters {
    fn sent(&mut self, f: Flushed) {
        self.packets += f.packets;
        self.bytes += f.bytes;
        self.send_dropped += f.dropped;
        self.send_calls += f.calls;
        if f.dropped > 0 {
            self.send_error = Some(f.error.unwrap_or(0));
        }
    }

    fn report(&mut self) {
        let c = std::mem::take(self);
        metrics::counter!("streamd_webrtc_sent_packets_total").increment(c.packets);
        metrics::counter!("streamd_webrtc_sent_bytes_total").increment(c.bytes);
        metrics::counter!("streamd_webrtc_send_dropped_total").increment(c.send_dropped);
        metrics::counter!("streamd_webrtc_send_calls_total").increment(c.send_calls);
    }
}

/// The core's [`Sink`] on the wire: UDP datagrams into the send queue
/// (flushed as it fills and after each event), ICE-TCP frames to their
/// connection's writer.
struct Wire<'a> {
    socket: &'a UdpSocket,
    queue: &'a mut SendQueue,
    tcp: &'a HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    counters: &'a mut Counters,
}

impl Sink for Wire<'_> {
    fn udp(&mut self, to: SocketAddr, data: &[u8]) {
        let flushed = self.queue.push(self.socket, to, data);
        self.counters.sent(flushed);
    }

    fn tcp(&mut self, to: SocketAddr, data: &[u8]) {
        let sent = self
            .tcp
            .get(&to)
            .is_some_and(|w| w.try_send(Bytes::copy_from_slice(data)).is_ok());
        if sent {
            self.counters.packets += 1;
            self.counters.bytes += data.len() as u64;
        } else {
            self.counters.send_dropped += 1;
        }
    }
}

pub struct Engine {
    core: SfuCore,
    socket: UdpSocket,
    commands: mpsc::Receiver<Command>,
    media_tx: mpsc::Sender<FeedMsg>,
    media_rx: mpsc::Receiver<FeedMsg>,
    /// ICE-TCP connections' write queues, by remote address.
    tcp_conns: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    tcp_rx: mpsc::Receiver<TcpEvent>,
    /// Each watched stream's feed tasks.
    feeds: HashMap<u64, Vec<AbortHandle>>,
    counters: Counters,
    send_log: LogLimiter,
    /// Datagrams produced while handling one event, sent together.
    queue: SendQueue,
}

/// What `Engine::start` makes.
pub struct Started {
    pub engines: Vec<Engine>,
    pub sfu: Sfu,
    /// Each engine's queue for its ICE-TCP connections.
    pub tcp: Vec<mpsc::Sender<TcpEvent>>,
    /// The ufrags of the viewers of every engine, for the ICE-TCP listener.
    pub ufrags: crate::ice_tcp::LiveUfrags,
}

impl Engine {
    /// An engine per socket (each offering its candidates), and the handle
    /// signalling uses to reach them.
    /// With `tcp_candidates`, viewers are also offered those passive
    /// ICE-TCP candidates; the listener hands connections to the engines
    /// through the senders returned.
    pub fn start(
        config: WebRtcConfig,
        sockets: Vec<(UdpSocket, Vec<SocketAddr>)>,
        tcp_candidates: Vec<SocketAddr>,
    ) -> Result<Started, SfuError> {
        let tcp_candidates = Arc::new(tcp_candidates);
        let templates = Templates::new(&config)?;
        let count = sockets.len();
        let shared = Shared::default();
        let mut engines = Vec::new();
        let mut links = Vec::new();
        let mut tcp_links = Vec::new();
        for (index, (socket, candidates)) in sockets.into_iter().enumerate() {
            let (commands_tx, commands) = mpsc::channel(COMMANDS);
            let (media_tx, media_rx) = mpsc::channel(MEDIA);
            let (tcp_tx, tcp_rx) = mpsc::channel(MEDIA);
            links.push(commands_tx);
            tcp_links.push(tcp_tx);
            let core = SfuCore::new(
                config.clone(),
                templates.clone(),
                candidates,
                tcp_candidates.clone(),
                index,
                count,
                shared.clone(),
            );
            engines.push(Engine {
                core,
                socket,
                commands,
                media_tx,
                media_rx,
                tcp_conns: HashMap::new(),
                tcp_rx,
                feeds: HashMap::new(),
                counters: Counters::default(),
                send_log: LogLimiter::new(Duration::from_secs(10)),
                queue: SendQueue::new(),
            });
        }
        let sfu = Sfu {
            engines: links.into(),
            next: Arc::default(),
        };
        Ok(Started {
            engines,
            sfu,
            tcp: tcp_links,
            ufrags: shared.ufrags,
        })
    }

    /// The core, and the wire it writes to.
    fn parts(&mut self) -> (&mut SfuCore, Wire<'_>) {
        (
            &mut self.core,
            Wire {
                socket: &self.socket,
                queue: &mut self.queue,
                tcp: &self.tcp_conns,
                counters: &mut self.counters,
            },
        )
    }

    /// Runs until `shutdown`, then closes every viewer.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut buf = vec![0u8; 2048];
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                        let (core, mut wire) = self.parts();
                        core.handle_datagram(Protocol::Udp, &buf[..n], src, Instant::now(), &mut wire);
                        // Drain what else is waiting before the next select.
                        for _ in 0..64 {
                            match wire.socket.try_recv_from(&mut buf) {
                                Ok((n, src)) => core.handle_datagram(Protocol::Udp, &buf[..n], src, Instant::now(), &mut wire),
                                Err(_) => break,
                            }
                        }
                    }
                }
                Some(ev) = self.tcp_rx.recv() => self.on_tcp(ev),
                Some(msg) = self.media_rx.recv() => {
                    let (core, mut wire) = self.parts();
                    core.handle_media(msg, Instant::now(), &mut wire);
                    for _ in 0..16 {
                        match self.media_rx.try_recv() {
                            Ok(msg) => {
                                let (core, mut wire) = self.parts();
                                core.handle_media(msg, Instant::now(), &mut wire);
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = housekeeping.tick() => {
                    let (core, mut wire) = self.parts();
                    core.housekeeping(Instant::now(), &mut wire);
                    self.counters.report();
                }
            }
            let (core, mut wire) = self.parts();
            core.handle_timeout(Instant::now(), &mut wire);
            self.apply_feed_changes();
            self.flush(Instant::now());
        }
        let (core, mut wire) = self.parts();
        core.close_all(Instant::now(), &mut wire);
        self.apply_feed_changes();
        self.flush(Instant::now());
        for (_, feeds) in self.feeds.drain() {
            for f in feeds {
                f.abort();
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        let (core, mut wire) = self.parts();
        match cmd {
            Command::Join(req, reply) => {
                let _ = reply.send(core.join(req, now, &mut wire));
            }
            Command::Answer(id, sdp, reply) => {
                let _ = reply.send(core.answer(id, &sdp, now, &mut wire));
            }
            Command::Change(id, choice, reply) => {
                let _ = reply.send(core.change(id, choice, now));
            }
            Command::Ice(id, restart, candidates, reply) => {
                let _ = reply.send(core.ice(id, restart, candidates));
            }
            Command::Leave(id) => core.leave(id, now, &mut wire),
            Command::Fault(viewer) => core.inject_fault(viewer),
        }
    }

    fn on_tcp(&mut self, ev: TcpEvent) {
        match ev {
            TcpEvent::Opened { remote, writer } => {
                self.tcp_conns.insert(remote, writer);
            }
            TcpEvent::Packet { remote, data } => {
                let (core, mut wire) = self.parts();
                core.handle_datagram(Protocol::Tcp, &data, remote, Instant::now(), &mut wire);
            }
            TcpEvent::Closed { remote } => {
                self.tcp_conns.remove(&remote);
                self.core.tcp_closed(remote);
            }
        }
    }

    /// Starts and stops the feeds the core asked for.
    fn apply_feed_changes(&mut self) {
        for change in self.core.take_feed_changes() {
            match change {
                FeedChange::Start { broadcast, plan } => {
                    let handles = super::feed::start(&broadcast, &plan, &self.media_tx);
                    if let Some(old) = self.feeds.insert(broadcast.id(), handles) {
                        old.iter().for_each(AbortHandle::abort);
                    }
                }
                FeedChange::Stop(id) => {
                    if let Some(handles) = self.feeds.remove(&id) {
                        handles.iter().for_each(AbortHandle::abort);
                    }
                }
            }
        }
    }

    /// Sends what handling the last event queued.
    fn flush(&mut self, now: Instant) {
        let flushed = self.queue.flush(&self.socket);
        self.counters.sent(flushed);
        // This flush's drops, or those of the flushes the pushes made.
        if let Some(error) = self.counters.send_error.take()
            && let Some(n) = self.send_log.check(now)
        {
            let e = std::io::Error::from_raw_os_error(error);
            tracing::warn!(error = %e, dropped = n, "webrtc send failed");
        }
    }
}
