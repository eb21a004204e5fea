//! The SRT listener: one thread waits on every SRT socket (libsrt's epoll),
//! reads what arrives and feeds each publisher's [`TsIngest`]. No thread or
//! task per caller.
//!
//! A caller goes through three gates:
//! 1. at the handshake, on libsrt's thread: its stream id must parse and the
//!    connection caps must have room, or it is rejected with an SRT reject
//!    reason it can print (1400 bad request, 1402 overload, 1405 bad mode);
//! 2. once connected, the one admission path every protocol takes (key or
//!    token, admission webhook, the final name), on the runtime; a refusal
//!    closes the connection and is logged with its reason;
//! 3. the registry: a second publisher of a live stream is closed.
//!
//! Bytes that arrive before admission finishes are dropped (MPEG-TS repeats
//! its tables, and video starts at a keyframe anyway).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::ffi::{Epoll, ListenOptions, Ready, Reject, Socket, SrtError};
use super::streamid::StreamId;
use crate::auth::{Access, AccessRequest, Admitted, Client, Protocol};
use crate::bus::{BroadcastStatus, Registry, StreamPath};
use crate::config::SrtConfig;
use crate::connlimit::{ConnectionLimit, ConnectionPermit};
use crate::ingest::mpegts::{TsIngest, TsNotice};
use crate::ingest::tags::Arrival;
use crate::ratelimit::LogLimiter;
use crate::shutdown::Shutdown;

/// An SRT live payload is at most 1456 bytes; 1316 (7 TS packets) is usual.
const RECV_BUFFER: usize = 1500;
/// How long a connected caller may wait for admission.
const ADMISSION_TIMEOUT: Duration = Duration::from_secs(15);
/// A handshake the hook let through but that never completed (a wrong
/// passphrase is refused after the hook) is forgotten after this, and its
/// place under the connection caps freed. A handshake takes milliseconds.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The epoll wait: timers (idle, lifetime, admission) are checked at least
/// this often.
const TICK: Duration = Duration::from_millis(50);
/// At most this many messages are read from one socket per wake, so one
/// busy caller cannot starve the others.
const READS_PER_WAKE: usize = 64;

pub struct SrtServer {
    listener: Socket,
    addr: SocketAddr,
    config: SrtConfig,
    registry: Registry,
    access: Arc<Access>,
    handshakes: Arc<Mutex<HashMap<i32, Handshake>>>,
}

/// What the hook learnt of a caller, for when it is accepted.
struct Handshake {
    id: StreamId,
    permit: ConnectionPermit,
    at: Instant,
}

impl SrtServer {
    /// Binds the listener. Port 0 picks a free port: see
    /// [`Self::local_addr`].
    pub fn bind(
        config: SrtConfig,
        registry: Registry,
        access: Arc<Access>,
    ) -> anyhow::Result<SrtServer> {
        let handshakes: Arc<Mutex<HashMap<i32, Handshake>>> = Arc::default();
        let limit = ConnectionLimit::new(config.max_connections, config.max_connections_per_ip);
        let options = ListenOptions {
            latency_ms: u32::try_from(config.latency.as_millis()).unwrap_or(u32::MAX),
            passphrase: config.passphrase.clone(),
            key_length: config.key_length,
            peer_idle_ms: 5000,
        };
        let hook_handshakes = handshakes.clone();
        // A caller that retries a bad handshake every few ms (as
        // srt-live-transmit does) gets one log line per reason per 5 s.
        let logs: Mutex<HashMap<&'static str, LogLimiter>> = Mutex::default();
        let hook = Box::new(move |socket: i32, raw: &[u8], peer: Option<SocketAddr>| {
            gate(socket, raw, peer, &limit, &hook_handshakes, &logs)
        });
        let listener = Socket::listen(config.listen, &options, 64, hook)
            .map_err(|e| anyhow::anyhow!("cannot listen for SRT on {}: {e}", config.listen))?;
        let addr = listener.local_addr()?;
        Ok(SrtServer {
            listener,
            addr,
            config,
            registry,
            access,
            handshakes,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`; then closes every caller.
    pub async fn run(self, mut shutdown: Shutdown) {
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Handle::current();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("streamd-srt".into())
            .spawn(move || {
                // Dropping an admission (its closing webhook) spawns on the
                // runtime.
                let _runtime = runtime.enter();
                if let Err(e) = self.serve(&thread_stop, &runtime) {
                    tracing::error!(error = %e, "SRT ingest stopped");
                }
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the SRT thread");
                return;
            }
        };
        shutdown.wait().await;
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }

    fn serve(self, stop: &AtomicBool, runtime: &tokio::runtime::Handle) -> Result<(), SrtError> {
        let epoll = Epoll::new()?;
        epoll.add(&self.listener)?;
        let mut callers: HashMap<i32, Caller> = HashMap::new();
        let result = self.serve_until(stop, runtime, &epoll, &mut callers);
        // Every way out closes every caller (and counts them out).
        let why = match &result {
            Ok(()) => "server shutting down",
            Err(_) => "SRT ingest stopped",
        };
        for (_, c) in callers.drain() {
            c.close(why);
            epoll.remove(&c.socket);
        }
        result
    }

    fn serve_until(
        &self,
        stop: &AtomicBool,
        runtime: &tokio::runtime::Handle,
        epoll: &Epoll,
        callers: &mut HashMap<i32, Caller>,
    ) -> Result<(), SrtError> {
        let (admitted_tx, admitted_rx) = mpsc::channel::<Admission>();
        let mut ready: Vec<Ready> = Vec::new();
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut serial = 0u64;
        let remove = |callers: &mut HashMap<i32, Caller>, id: i32, why: &str| {
            if let Some(c) = callers.remove(&id) {
                c.close(why);
                epoll.remove(&c.socket);
            }
        };
        while !stop.load(Ordering::Relaxed) {
            epoll.wait(&mut ready, TICK.as_millis() as i64)?;
            for r in &ready {
                if r.socket == self.listener.id() {
                    self.accept(epoll, callers, &admitted_tx, runtime, &mut serial);
                    continue;
                }
                let Some(caller) = callers.get_mut(&r.socket) else {
                    continue;
                };
                // A bug in one caller's parsing closes that caller only.
                let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    caller.read(&mut buf)
                }))
                .unwrap_or_else(|_| {
                    Err("internal error reading its stream (a bug: see the log)".into())
                });
                if let Err(why) = read {
                    remove(callers, r.socket, &why);
                }
            }
            while let Ok(done) = admitted_rx.try_recv() {
                // A caller gone (or a socket id reused) since: dropped.
                let Some(caller) = callers
                    .get_mut(&done.socket)
                    .filter(|c| c.serial == done.serial)
                else {
                    continue;
                };
                match done.result {
                    Ok(p) => {
                        tracing::info!(peer = ?caller.peer, stream = %p.path, session = p.ingest.broadcast().session(), "SRT publishing");
                        caller.state = State::Publishing(Box::new(p));
                    }
                    Err(why) => remove(callers, done.socket, &why),
                }
            }
            let now = Instant::now();
            let over: Vec<(i32, String)> = callers
                .iter()
                .filter_map(|(id, c)| c.expired(now, &self.config).map(|why| (*id, why)))
                .collect();
            for (id, why) in over {
                remove(callers, id, &why);
            }
            self.handshakes
                .lock()
                .expect("handshakes lock")
                .retain(|_, h| now.duration_since(h.at) < HANDSHAKE_TIMEOUT);
        }
        Ok(())
    }

    fn accept(
        &self,
        epoll: &Epoll,
        callers: &mut HashMap<i32, Caller>,
        admitted_tx: &mpsc::Sender<Admission>,
        runtime: &tokio::runtime::Handle,
        serial: &mut u64,
    ) {
        loop {
            let (socket, peer) = match self.listener.accept() {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "SRT accept failed");
                    return;
                }
            };
            // The hook filed what it learnt under the accepted socket's id.
            let handshake = self
                .handshakes
                .lock()
                .expect("handshakes lock")
                .remove(&socket.id());
            let Some(handshake) = handshake else {
                tracing::warn!(
                    ?peer,
                    "SRT caller accepted without its handshake record; closing"
                );
                continue;
            };
            if let Err(e) = epoll.add(&socket) {
                tracing::warn!(error = %e, "SRT caller cannot be watched; closing");
                continue;
            }
            let id = socket.id();
            metrics::gauge!("streamd_srt_connections").increment(1.0);
            tracing::debug!(?peer, app = %handshake.id.app, "SRT caller connected");
            let request = AccessRequest {
                protocol: Protocol::Srt,
                url: format!(
                    "srt://{}/{}/{}",
                    self.addr, handshake.id.app, handshake.id.stream
                ),
                app: handshake.id.app.clone(),
                stream: handshake.id.stream.clone(),
                query: handshake.id.query.clone(),
                new_session: true,
                client: Client {
                    addr: peer,
                    ..Client::default()
                },
            };
            let shown = format!(
                "{}/{}",
                request.app,
                request.stream.chars().take(64).collect::<String>()
            );
            let (access, registry, tx) = (
                self.access.clone(),
                self.registry.clone(),
                admitted_tx.clone(),
            );
            *serial += 1;
            let serial = *serial;
            let task = runtime.spawn(async move {
                let result = admit(&access, &registry, request, &shown).await;
                let _ = tx.send(Admission {
                    socket: id,
                    serial,
                    result,
                });
            });
            callers.insert(
                id,
                Caller {
                    socket,
                    serial,
                    admission: task.abort_handle(),
                    peer,
                    state: State::Admitting,
                    since: Instant::now(),
                    last_data: Instant::now(),
                    _permit: handshake.permit,
                    dropped_before_admission: 0,
                },
            );
        }
    }
}

/// The handshake gate, on libsrt's thread: the stream id and the caps.
/// What it learns is filed under the socket's id for [`SrtServer::accept`].
fn gate(
    socket: i32,
    raw: &[u8],
    peer: Option<SocketAddr>,
    limit: &ConnectionLimit,
    handshakes: &Mutex<HashMap<i32, Handshake>>,
    logs: &Mutex<HashMap<&'static str, LogLimiter>>,
) -> Result<(), Reject> {
    // Log lines are limited per kind of refusal (a fixed set: the caller
    // cannot make new kinds to get past the limit).
    let refuse = |reason: Reject, kind: &'static str, why: &dyn std::fmt::Display| {
        let code = reason as i32;
        metrics::counter!("streamd_srt_refused_connections_total", "code" => code.to_string())
            .increment(1);
        let allowed = logs
            .lock()
            .expect("log limiter lock")
            .entry(kind)
            .or_insert_with(|| LogLimiter::new(Duration::from_secs(5)))
            .check(Instant::now());
        if let Some(suppressed) = allowed {
            tracing::warn!(
                ?peer,
                code,
                suppressed,
                "SRT caller rejected at the handshake: {why}"
            );
        }
        Err(reason)
    };
    let id = match StreamId::parse(raw) {
        Ok(id) => id,
        Err(e) => return refuse(e.reject(), e.kind(), &e),
    };
    let Some(ip) = peer.map(|p| p.ip()) else {
        return refuse(Reject::BadRequest, "address", &"no caller address");
    };
    let permit = match limit.try_acquire(ip) {
        Ok(p) => p,
        Err(e) => return refuse(Reject::Overload, "caps", &e),
    };
    handshakes.lock().expect("handshakes lock").insert(
        socket,
        Handshake {
            id,
            permit,
            at: Instant::now(),
        },
    );
    Ok(())
}

/// The admission path, then the registry.
async fn admit(
    access: &Access,
    registry: &Registry,
    request: AccessRequest,
    shown: &str,
) -> Result<Publishing, String> {
    let admitted = access
        .admit(request)
        .await
        .map_err(|refusal| format!("publish to {shown} refused: {refusal}"))?;
    let path = admitted.path.clone();
    let producer = registry
        .publish(path.clone())
        .map_err(|e| format!("publish to {path} refused: {e}"))?;
    // Counted from here to its drop, wherever that is (a caller gone
    // before its admission finished drops it unused).
    metrics::gauge!("streamd_srt_publishers").increment(1.0);
    Ok(Publishing {
        ingest: TsIngest::new(producer),
        path,
        admitted,
        log: LogLimiter::new(Duration::from_secs(5)),
    })
}

struct Publishing {
    ingest: TsIngest,
    path: StreamPath,
    /// Held for its drop (the admission backend's closing call); its
    /// `until` ends the publish.
    admitted: Admitted,
    log: LogLimiter,
}

impl Drop for Publishing {
    fn drop(&mut self) {
        metrics::gauge!("streamd_srt_publishers").decrement(1.0);
    }
}

enum State {
    Admitting,
    Publishing(Box<Publishing>),
}

/// An admission's outcome, for the caller `serial` on `socket`.
struct Admission {
    socket: i32,
    serial: u64,
    result: Result<Publishing, String>,
}

struct Caller {
    socket: Socket,
    /// Tells this caller's admission from a former one's on a reused id.
    serial: u64,
    /// Cancelled when the caller goes first: nothing is published for a
    /// caller that left.
    admission: tokio::task::AbortHandle,
    peer: Option<SocketAddr>,
    state: State,
    since: Instant,
    last_data: Instant,
    _permit: ConnectionPermit,
    dropped_before_admission: u64,
}

impl Caller {
    /// Reads what is waiting; `Err` ends the connection (with why).
    fn read(&mut self, buf: &mut [u8]) -> Result<(), String> {
        for _ in 0..READS_PER_WAKE {
            let n = match self.socket.recv(buf) {
                Ok(Some(n)) => n,
                Ok(None) => return Ok(()),
                Err(e) if !self.socket.is_connected() => {
                    return Err(format!("disconnected ({})", e.message));
                }
                Err(e) => return Err(e.to_string()),
            };
            if n == 0 {
                return Err("disconnected".into());
            }
            self.last_data = Instant::now();
            metrics::counter!("streamd_srt_received_bytes_total").increment(n as u64);
            match &mut self.state {
                State::Admitting => self.dropped_before_admission += n as u64,
                State::Publishing(p) => {
                    let notices = p
                        .ingest
                        .push(&buf[..n], Arrival::now())
                        .map_err(|e| format!("stream refused: {e}"))?;
                    for notice in notices {
                        log_notice(p, notice);
                    }
                }
            }
        }
        Ok(())
    }

    /// Why this caller should be closed now, if it should.
    fn expired(&self, now: Instant, config: &SrtConfig) -> Option<String> {
        match &self.state {
            State::Admitting if now.duration_since(self.since) > ADMISSION_TIMEOUT => {
                Some(format!("admission took more than {ADMISSION_TIMEOUT:?}"))
            }
            State::Admitting => None,
            State::Publishing(p) => {
                if now.duration_since(self.last_data) > config.idle_timeout {
                    return Some(format!("no data for {:?}", config.idle_timeout));
                }
                if p.ingest.broadcast().status() == BroadcastStatus::Ended {
                    return Some("its broadcast was ended (stream deleted)".into());
                }
                if p.admitted.until.is_some_and(|u| u.into_std() <= now) {
                    return Some("its admission lifetime is over".into());
                }
                None
            }
        }
    }

    fn close(&self, why: &str) {
        self.admission.abort();
        match &self.state {
            State::Publishing(p) => {
                tracing::info!(peer = ?self.peer, stream = %p.path, stats = ?p.ingest.stats(), "SRT publisher closed: {why}")
            }
            State::Admitting => {
                tracing::warn!(peer = ?self.peer, dropped = self.dropped_before_admission, "SRT caller closed: {why}")
            }
        }
        metrics::gauge!("streamd_srt_connections").decrement(1.0);
    }
}

fn log_notice(p: &mut Publishing, notice: TsNotice) {
    let stream = &p.path;
    match notice {
        TsNotice::Frame(n) => n.log(stream, &mut p.log, Instant::now()),
        TsNotice::Ignored { pid, stream_type } => {
            tracing::warn!(%stream, pid, stream_type = format!("{stream_type:#04x}"), "ignoring an MPEG-TS stream of a type streamd does not read (H.264 or HEVC video and AAC audio are read)")
        }
        other => {
            if let Some(suppressed) = p.log.check(Instant::now()) {
                tracing::warn!(%stream, suppressed, problem = ?other, "damaged MPEG-TS from the publisher: dropped what it cut; video resumes at the next keyframe");
            }
        }
    }
}
