//! The RTMP listener: one task per connection, each a thin shell that reads
//! the socket, feeds [`RtmpConnection`], writes its output and hands media to
//! [`TagIngest`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::Instrument;

use super::rtmp::{RtmpConnection, RtmpError, RtmpEvent};
use super::tags::{Arrival, IngestError, Notice, TagIngest};
use crate::auth::{Access, AccessRequest, Admitted, Client, Protocol, Refusal};
use crate::bus::{BroadcastMeta, PublishError, Registry, StreamPath};
use crate::config::RtmpConfig;
use crate::connlimit::{ConnectionLimit, LimitedListener};
use crate::ratelimit::LogLimiter;
use crate::shutdown::Shutdown;

const READ_BUFFER: usize = 64 * 1024;
/// A peer that does not take our (small) responses within this time is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RtmpServer {
    listener: TcpListener,
    /// RTMPS listeners and the certificates they answer with.
    tls: Vec<TcpListener>,
    certs: Option<Arc<crate::http::tls::Certs>>,
    registry: Registry,
    access: Arc<Access>,
    config: RtmpConfig,
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Rtmp(#[from] RtmpError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("no publish request within {0:?} of connecting")]
    PublishTimeout(Duration),
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("write timed out")]
    WriteTimeout,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("publish refused: {0}")]
    Refused(String),
    #[error("tls handshake failed: {0}")]
    Tls(std::io::Error),
}

impl RtmpServer {
    /// Binds the listener, and the RTMPS ones at `tls` with `certs`. Port
    /// 0 picks a free port: see [`Self::local_addr`].
    pub async fn bind(
        config: RtmpConfig,
        tls: &[SocketAddr],
        certs: Option<Arc<crate::http::tls::Certs>>,
        registry: Registry,
        access: Arc<Access>,
    ) -> anyhow::Result<RtmpServer> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for RTMP on {}: {e}", config.listen))?;
        let tls_listeners = match certs {
            Some(_) => crate::net::listen_all(tls, "RTMPS").await?,
            None => Vec::new(),
        };
        Ok(RtmpServer {
            listener,
            tls: tls_listeners,
            certs,
            registry,
            access,
            config,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Every RTMPS listener's address.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Accepts connections on every listener until `shutdown`; then waits
    /// for connection tasks to finish (they stop on the same signal). The
    /// connection caps count RTMP and RTMPS together.
    pub async fn run(self, shutdown: Shutdown) {
        let limit = ConnectionLimit::new(
            self.config.max_connections,
            self.config.max_connections_per_ip,
        );
        let acceptor = self
            .certs
            .as_ref()
            .map(|c| tokio_rustls::TlsAcceptor::from(c.server_config(&[])));
        let shared = Arc::new(Shared {
            registry: self.registry,
            access: self.access,
            config: self.config,
        });
        let mut loops = tokio::task::JoinSet::new();
        let listeners = std::iter::once((self.listener, None))
            .chain(self.tls.into_iter().map(|l| (l, acceptor.clone())));
        for (listener, acceptor) in listeners {
            let what = if acceptor.is_some() { "rtmps" } else { "rtmp" };
            let listener = LimitedListener::new(
                listener,
                limit.clone(),
                what,
                "streamd_rtmp_refused_connections_total",
            );
            loops.spawn(
                shared
                    .clone()
                    .accept_loop(listener, acceptor, shutdown.clone()),
            );
        }
        while loops.join_next().await.is_some() {}
    }
}

/// What every RTMP connection task needs.
struct Shared {
    registry: Registry,
    access: Arc<Access>,
    config: RtmpConfig,
}

impl Shared {
    async fn accept_loop(
        self: Arc<Self>,
        mut listener: LimitedListener,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        mut shutdown: Shutdown,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let (stream, peer, permit) = tokio::select! {
                _ = shutdown.wait() => break,
                a = listener.accept() => a,
            };
            // Reap finished connection tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
            let me = self.clone();
            let acceptor = acceptor.clone();
            let shutdown = shutdown.clone();
            let span = if acceptor.is_some() {
                tracing::info_span!("rtmps", %peer)
            } else {
                tracing::info_span!("rtmp", %peer)
            };
            tasks.spawn(
                async move {
                    metrics::gauge!("streamd_rtmp_connections").increment(1.0);
                    let ends = Ends {
                        local: stream.local_addr().ok(),
                        peer,
                        secure: acceptor.is_some(),
                    };
                    let result = match acceptor {
                        None => {
                            handle(stream, ends, &me, tokio::time::Instant::now(), shutdown).await
                        }
                        Some(acceptor) => {
                            // The TLS handshake counts toward the RTMP
                            // handshake's deadline.
                            let started = tokio::time::Instant::now();
                            match tokio::time::timeout(
                                me.config.handshake_timeout,
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                Ok(Ok(tls)) => handle(tls, ends, &me, started, shutdown).await,
                                Ok(Err(e)) => Err(ConnectionError::Tls(e)),
                                Err(_) => Err(ConnectionError::HandshakeTimeout(
                                    me.config.handshake_timeout,
                                )),
                            }
                        }
                    };
                    match result {
                        Ok(()) => tracing::debug!("rtmp connection closed"),
                        Err(e) => tracing::warn!(error = %e, "rtmp connection closed"),
                    }
                    metrics::gauge!("streamd_rtmp_connections").decrement(1.0);
                    drop(permit);
                }
                .instrument(span),
            );
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// A connection's two addresses, and whether it is RTMPS.
#[derive(Clone, Copy, Debug)]
struct Ends {
    local: Option<SocketAddr>,
    peer: SocketAddr,
    secure: bool,
}

struct Publishing {
    ingest: TagIngest,
    path: StreamPath,
    corrupt_log: LogLimiter,
    /// Held for its drop, which tells an admission backend the publish
    /// ended; its `until` ends the publish.
    admitted: Admitted,
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    ends: Ends,
    shared: &Shared,
    started: tokio::time::Instant,
    mut shutdown: Shutdown,
) -> Result<(), ConnectionError> {
    let (registry, access, config) = (&shared.registry, &*shared.access, &shared.config);
    let mut conn = RtmpConnection::new();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut publishing: Option<Publishing> = None;
    loop {
        // While handshaking, the deadline is absolute; afterwards it is the
        // idle timeout per read, and until a publish, the publish deadline.
        let idle = tokio::time::Instant::now() + config.idle_timeout;
        let (deadline, timeout) = if conn.is_handshaking() {
            (
                started + config.handshake_timeout,
                ConnectionError::HandshakeTimeout(config.handshake_timeout),
            )
        } else if publishing.is_none() && started + config.publish_timeout < idle {
            (
                started + config.publish_timeout,
                ConnectionError::PublishTimeout(config.publish_timeout),
            )
        } else {
            (idle, ConnectionError::Idle(config.idle_timeout))
        };
        // An admission backend's `lifetime` ends the publish.
        let until = publishing.as_ref().and_then(|p| p.admitted.until);
        let read = tokio::select! {
            _ = shutdown.wait() => {
                if let Some(p) = &publishing {
                    tracing::info!(stream = %p.path, "closing publisher: server shutting down");
                }
                return Ok(());
            }
            _ = async { publishing.as_ref().expect("guarded").ingest.broadcast().ended().await }, if publishing.is_some() => {
                let path = publishing.as_ref().map(|p| p.path.to_string()).unwrap_or_default();
                tracing::info!(stream = %path, "closing publisher: its broadcast was ended (stream deleted)");
                return Ok(());
            }
            _ = tokio::time::sleep_until(until.unwrap_or(deadline)), if until.is_some() => {
                let path = publishing.as_ref().map(|p| p.path.to_string()).unwrap_or_default();
                tracing::info!(stream = %path, "closing publisher: its admission lifetime is over");
                return Ok(());
            }
            r = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => r,
        };
        let n = match read {
            Err(_) => return Err(timeout),
            Ok(Ok(0)) => {
                if let Some(p) = &publishing {
                    tracing::info!(stream = %p.path, stats = ?p.ingest.stats(), "publisher disconnected");
                }
                return Ok(());
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.into()),
        };
        metrics::counter!("streamd_rtmp_received_bytes_total").increment(n as u64);
        let out = conn.feed(&buf[..n])?;
        send(&mut stream, &out.send).await?;
        for event in out.events {
            on_event(
                event,
                &mut conn,
                &mut stream,
                ends,
                registry,
                access,
                &mut publishing,
            )
            .await?;
        }
    }
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), ConnectionError> {
    if bytes.is_empty() {
        return Ok(());
    }
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes))
        .await
        .map_err(|_| ConnectionError::WriteTimeout)??;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn on_event<S: AsyncWrite + Unpin>(
    event: RtmpEvent,
    conn: &mut RtmpConnection,
    stream: &mut S,
    ends: Ends,
    registry: &Registry,
    access: &Access,
    publishing: &mut Option<Publishing>,
) -> Result<(), ConnectionError> {
    match event {
        RtmpEvent::Connected { app } => {
            tracing::debug!(app = %app.chars().take(64).collect::<String>(), "rtmp connect")
        }
        RtmpEvent::PublishRequested {
            request_id,
            app,
            stream: name,
            query,
        } => {
            if let Some(p) = publishing {
                let msg = format!("this connection already publishes {}", p.path);
                let bytes = conn.reject(request_id, "NetStream.Publish.BadName", &msg)?;
                send(stream, &bytes).await?;
                return Err(ConnectionError::Refused(msg));
            }
            // One admission path: the key or publish token (which may name
            // the stream), an admission backend (which may move it), and
            // the final name.
            let request = AccessRequest {
                protocol: Protocol::Rtmp,
                url: format!(
                    "{}://{}/{app}/{name}",
                    if ends.secure { "rtmps" } else { "rtmp" },
                    ends.local.map_or("localhost".into(), |a| a.to_string())
                ),
                app,
                stream: name,
                query,
                new_session: true,
                client: Client {
                    addr: Some(ends.peer),
                    ..Client::default()
                },
            };
            let shown = format!(
                "{}/{}",
                request.app,
                request.stream.chars().take(64).collect::<String>()
            );
            let admitted = match access.admit(request).await {
                Ok(a) => a,
                Err(refusal) => {
                    let code = match refusal {
                        Refusal::BadName(_) => "NetStream.Publish.BadName",
                        Refusal::Auth(_) | Refusal::Denied(_) => "NetStream.Publish.Unauthorized",
                        Refusal::Full(_) | Refusal::Draining => "NetStream.Publish.Failed",
                    };
                    let msg = format!("publish to {shown} refused: {refusal}");
                    tracing::warn!("{msg}");
                    let bytes = conn.reject(request_id, code, &msg)?;
                    send(stream, &bytes).await?;
                    return Err(ConnectionError::Refused(msg));
                }
            };
            let path = admitted.path.clone();
            match registry.publish(path.clone()) {
                Ok(producer) => {
                    let bytes = conn.accept(request_id)?;
                    send(stream, &bytes).await?;
                    tracing::info!(stream = %path, session = producer.session(), "publishing");
                    metrics::gauge!("streamd_rtmp_publishers").increment(1.0);
                    let mut ingest = TagIngest::new(producer);
                    // Until (unless) the publisher's metadata says more.
                    ingest.metadata(BroadcastMeta {
                        source: Some("Rtmp"),
                        ..BroadcastMeta::default()
                    });
                    *publishing = Some(Publishing {
                        ingest,
                        path,
                        corrupt_log: LogLimiter::new(Duration::from_secs(5)),
                        admitted,
                    });
                }
                Err(e @ PublishError::AlreadyPublishing(_)) => {
                    let msg = e.to_string();
                    tracing::warn!(stream = %path, "refusing a second publisher: {msg}; the first one continues");
                    let bytes = conn.reject(request_id, "NetStream.Publish.BadName", &msg)?;
                    send(stream, &bytes).await?;
                    return Err(ConnectionError::Refused(msg));
                }
                Err(e) => {
                    let msg = e.to_string();
                    let bytes = conn.reject(request_id, "NetStream.Publish.Failed", &msg)?;
                    send(stream, &bytes).await?;
                    return Err(ConnectionError::Refused(msg));
                }
            }
        }
        RtmpEvent::PublishFinished => {
            if let Some(p) = publishing.take() {
                tracing::info!(stream = %p.path, stats = ?p.ingest.stats(), "publisher stopped");
            }
        }
        RtmpEvent::PlayRefused { stream: name } => {
            tracing::info!(stream = %name.chars().take(64).collect::<String>(), "refused RTMP play request");
        }
        RtmpEvent::Metadata(m) => {
            if let Some(p) = publishing {
                p.ingest.metadata(BroadcastMeta {
                    frame_rate: m.frame_rate,
                    video_bitrate_kbps: m.video_bitrate_kbps,
                    audio_bitrate_kbps: m.audio_bitrate_kbps,
                    encoder: m.encoder,
                    has_video: m.declares_video.then_some(true),
                    has_audio: m.declares_audio.then_some(true),
                    opus_audio: false,
                    source: Some("Rtmp"),
                    simulcast: false,
                });
            }
        }
        RtmpEvent::Video { data, timestamp } => {
            if let Some(p) = publishing {
                let notice = p.ingest.video(data, timestamp, Arrival::now())?;
                log_notice(p, notice);
            }
        }
        RtmpEvent::Audio { data, timestamp } => {
            if let Some(p) = publishing {
                let notice = p.ingest.audio(data, timestamp, Arrival::now())?;
                log_notice(p, notice);
            }
        }
    }
    Ok(())
}

fn log_notice(p: &mut Publishing, notice: Option<Notice>) {
    if let Some(notice) = notice {
        notice.log(&p.path, &mut p.corrupt_log, Instant::now());
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        metrics::gauge!("streamd_rtmp_publishers").decrement(1.0);
    }
}
