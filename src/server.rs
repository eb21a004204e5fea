//! Wiring: binds every listener, starts every service, stops them in order.
//! `main` and the end-to-end tests both start streamd through [`Server`].

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::Api;
use crate::auth::{Access, Auth};
use crate::bus::{Registry, Retention};
use crate::config::{Config, Role};
use crate::http::HttpServer;
use crate::ingest::RtmpServer;
use crate::ingest::srt::SrtServer;
use crate::ingest::whip::{Whip, WhipServer};
use crate::llhls::http::LlhlsHttp;
use crate::llhls::store::Outputs;
use crate::record::service::Recorder;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::transcode::Transcoders;
use crate::viewers::ViewerCounts;
use crate::webrtc::WebRtcServer;

/// After a drain ends the streams still live, how long HTTP keeps serving
/// so players' reloads see EXT-X-ENDLIST (their reloads come every part
/// target, 200 ms by default).
const END_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// What `streamd check-config` checks beyond the file itself, without
/// binding or opening anything that lasts: the recording location parses
/// and names a store we can talk to, and the TLS certificate and key load,
/// match and are valid now, and the FFmpeg linked has every codec the
/// transcoder opens.
pub fn check(config: &Config) -> anyhow::Result<()> {
    let missing = crate::transcode::codec::missing();
    if !missing.is_empty() {
        anyhow::bail!("transcode: the FFmpeg linked has no {}", missing.join(", "));
    }
    if config.record.enabled || !config.record.apps.is_empty() {
        Recorder::open_store(&config.record, &config.database.data_dir)
            .map_err(|e| anyhow::anyhow!("recording: {e}"))?;
    }
    if config.tls.enabled() {
        crate::http::tls::load(
            &config.tls.cert,
            &config.tls.key,
            std::time::SystemTime::now(),
        )
        .map_err(|e| anyhow::anyhow!("tls: {e}"))?;
    }
    Ok(())
}

/// Binds the WHIP publishers' socket; its candidates are the viewers'
/// addresses (`webrtc.candidate_ips`) at its own port.
async fn bind_whip(
    config: &Config,
    registry: Registry,
    tcp: Option<crate::ice_tcp::Route>,
) -> anyhow::Result<(WhipServer, Whip)> {
    let addr = config.whip.udp_listen;
    let socket = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind WHIP UDP {addr}: {e}"))?;
    let bound = socket.local_addr()?;
    let ips = crate::webrtc::candidates::resolve(
        &config.webrtc.candidate_ips,
        bound,
        crate::webrtc::candidates::env_override(),
    )?;
    let candidates: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, bound.port()))
        .collect();
    let tcp_candidates = tcp.as_ref().map(|t| t.candidates.clone());
    tracing::info!(udp = %bound, ?candidates, ice_tcp = ?tcp_candidates, "whip listening");
    WhipServer::new(socket, candidates, tcp, registry, &config.whip)
        .map_err(|e| anyhow::anyhow!("whip: {e}"))
}

pub struct Server {
    config: Config,
    /// The TLS certificate HTTPS and RTMPS answer with, when on.
    certs: Option<Arc<crate::http::tls::Certs>>,
    access: Arc<Access>,
    /// The webhook signing key.
    hook_secret: String,
    registry: Registry,
    outputs: Arc<Outputs>,
    transcoders: Arc<Transcoders>,
    rtmp: RtmpServer,
    srt: Option<SrtServer>,
    http: HttpServer,
    webrtc: Option<WebRtcServer>,
    whip: Option<(WhipServer, Whip)>,
    recorder: Option<Arc<Recorder>>,
}

impl Server {
    /// Binds the RTMP and HTTP listeners (port 0 picks free ports) and logs
    /// the bound addresses.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let registry = Registry::new(
            config.bus.reconnect_grace,
            Retention {
                window: config.bus.retention_window,
                max_bytes: config.bus.retention_max_bytes,
                ..Retention::default()
            },
        );
        registry.limit_broadcasts(config.bus.max_broadcasts);
        if config.database.url.is_empty() {
            crate::auth::private_dir(&config.database.data_dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the data directory {}: {e}",
                    config.database.data_dir.display()
                )
            })?;
        }
        let secret = crate::auth::secret(&config.auth, &config.database.data_dir)
            .map_err(|e| anyhow::anyhow!("cannot read or create the JWT secret: {e}"))?;
        if config.webhooks.secret == secret {
            anyhow::bail!(
                "webhooks.secret must not be the JWT secret: a webhook receiver could mint tokens with it"
            );
        }
        let db_url = config.database.resolved_url();
        let store = Store::open(&db_url).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open the database ({}): {e}",
                crate::config::DatabaseConfig::redact(&db_url)
            )
        })?;
        tracing::info!(database = %crate::config::DatabaseConfig::redact(&db_url), "database ready");
        let store = Arc::new(store);
        let recorder = if config.record.enabled || !config.record.apps.is_empty() {
            Some(
                Recorder::open(
                    config.record.clone(),
                    &config.database.data_dir,
                    store.clone(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot start recording: {e}"))?,
            )
        } else {
            None
        };
        let access = Arc::new(Access::new(
            store,
            Auth::new(&secret, config.auth.clone()),
            crate::auth::admission::Admission::new(config.admission.clone()).map(Arc::new),
            config.transcode.clone(),
        ));
        let hook_secret = crate::auth::webhook_key(&config.webhooks, &secret);
        // One certificate for HTTPS and RTMPS, loaded (and checked) here.
        let certs = if config.tls.enabled() {
            Some(
                crate::http::tls::Certs::open(&config.tls)
                    .map_err(|e| anyhow::anyhow!("tls: {e}"))?,
            )
        } else {
            None
        };
        let rtmp = RtmpServer::bind(
            config.rtmp.clone(),
            &config.tls.rtmps_listen,
            certs.clone(),
            registry.clone(),
            access.clone(),
        )
        .await?;
        let srt = if config.srt.enabled {
            let srt = SrtServer::bind(config.srt.clone(), registry.clone(), access.clone())?;
            tracing::info!(addr = %srt.local_addr(), "srt listening");
            Some(srt)
        } else {
            None
        };
        let http = HttpServer::bind(config.http.clone(), &config.tls.listen, certs.clone()).await?;
        tracing::info!(addr = %rtmp.local_addr()?, "rtmp listening");
        for addr in rtmp.tls_addrs() {
            tracing::info!(%addr, "rtmps listening");
        }
        for addr in http.local_addrs() {
            tracing::info!(%addr, "http listening");
        }
        for addr in http.tls_addrs() {
            tracing::info!(%addr, "https listening");
        }
        let transcoders = Arc::new(Transcoders::default());
        let mut webrtc = if config.webrtc.enabled {
            Some(WebRtcServer::bind(config.webrtc.clone()).await?)
        } else {
            None
        };
        let whip = if config.whip.enabled {
            // Publishers share the viewers' ICE-TCP port, when it is on.
            let tcp = webrtc.as_mut().and_then(WebRtcServer::ice_tcp_route);
            Some(bind_whip(&config, registry.clone(), tcp).await?)
        } else {
            None
        };
        Ok(Server {
            config,
            certs,
            access,
            hook_secret,
            registry,
            outputs: Arc::new(Outputs::default()),
            transcoders,
            rtmp,
            srt,
            http,
            webrtc,
            whip,
            recorder,
        })
    }

    pub fn rtmp_addr(&self) -> SocketAddr {
        self.rtmp
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Every plain HTTP listener's address.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http.local_addrs()
    }

    /// The first HTTPS listener's address, when TLS is on.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.http.tls_addrs().first().copied()
    }

    /// The SRT listener's address, when SRT is enabled.
    pub fn srt_addr(&self) -> Option<SocketAddr> {
        self.srt.as_ref().map(|s| s.local_addr())
    }

    /// The first RTMPS listener's address, when on.
    pub fn rtmps_addr(&self) -> Option<SocketAddr> {
        self.rtmp.tls_addrs().first().copied()
    }

    /// The WebRTC UDP socket's address, when WebRTC is enabled.
    pub fn webrtc_addr(&self) -> Option<SocketAddr> {
        self.webrtc.as_ref().map(|w| w.local_addr())
    }

    /// The WHIP publishers' UDP socket, when WHIP is enabled.
    pub fn whip_addr(&self) -> Option<SocketAddr> {
        self.whip.as_ref().and_then(|(w, _)| w.local_addr().ok())
    }

    /// The WebRTC ICE-TCP listener, if on.
    pub fn webrtc_tcp_addr(&self) -> Option<SocketAddr> {
        self.webrtc.as_ref().and_then(|w| w.tcp_addr())
    }

    /// The database and tokens (tests mint tokens with it).
    pub fn access(&self) -> &Arc<Access> {
        &self.access
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The WebRTC engines' handle, when WebRTC is enabled.
    pub fn sfu(&self) -> Option<crate::webrtc::Sfu> {
        self.webrtc.as_ref().map(|w| w.sfu())
    }

    /// The transcoders' fault injection (tests and the fault bench).
    pub fn transcoders(&self) -> &Arc<Transcoders> {
        &self.transcoders
    }

    /// Runs until `drain` fires, then drains (see `[server] drain_timeout`):
    /// not ready, new publishers and viewers refused, the connected ones
    /// carrying on until every stream has ended or the deadline; then
    /// stops as [`Server::run`] does. Each phase is logged.
    pub async fn serve(self, mut drain: Shutdown) -> anyhow::Result<()> {
        let access = self.access.clone();
        let registry = self.registry.clone();
        let deadline = self.config.server.drain_timeout;
        let (stop, stopped) = crate::shutdown::channel();
        let mut run = tokio::spawn(self.run(stopped));
        tokio::select! {
            _ = drain.wait() => {}
            r = &mut run => return r?,
        }
        let started = tokio::time::Instant::now();
        access.start_draining();
        metrics::gauge!("streamd_draining").set(1.0);
        tracing::info!(
            streams = registry.list().len(),
            deadline = ?deadline,
            "draining: /readyz answers 503, new publishers and viewers are refused; \
             the connected ones carry on until every stream has ended or the deadline"
        );
        let mut report = started;
        loop {
            let live = registry.list().len();
            if live == 0 {
                tracing::info!(after = ?started.elapsed(), "drain: every stream has ended");
                break;
            }
            if started.elapsed() >= deadline {
                tracing::info!(
                    streams = live,
                    "drain: deadline reached, ending the streams still live"
                );
                break;
            }
            if report.elapsed() >= std::time::Duration::from_secs(5) {
                report = tokio::time::Instant::now();
                tracing::info!(
                    streams = live,
                    left = ?deadline.saturating_sub(started.elapsed()),
                    "drain: waiting for streams to end"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        // End what is still live while HTTP still serves, so players'
        // next (or blocked) reload gets EXT-X-ENDLIST rather than a closed
        // connection; then stop.
        if !registry.list().is_empty() {
            registry.shutdown();
            tracing::info!(linger = ?END_LINGER, "drain: streams ended; serving their end before stopping");
            tokio::time::sleep(END_LINGER).await;
        }
        stop.trigger();
        let r = run.await?;
        tracing::info!(after = ?started.elapsed(), "drained and stopped");
        r
    }

    /// Runs until `shutdown`: stops taking publishers, ends every stream
    /// (players get EXT-X-ENDLIST), then lets HTTP requests in flight finish.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Server {
            config,
            certs,
            access,
            hook_secret,
            registry,
            outputs,
            transcoders,
            rtmp,
            srt,
            http,
            webrtc,
            whip,
            recorder,
        } = self;
        let rtmp_port = rtmp.local_addr().map_or(1935, |a| a.port());
        if let Some(certs) = certs {
            tokio::spawn(certs.watch(config.tls.reload_interval, shutdown.clone()));
        }
        let rtmp_task = tokio::spawn(rtmp.run(shutdown.clone()));
        let srt_task = srt.map(|s| tokio::spawn(s.run(shutdown.clone())));
        let transcode_task = tokio::spawn(crate::transcode::service::run(
            registry.clone(),
            config.transcode.clone(),
            transcoders,
            shutdown.clone(),
        ));
        let llhls_task = tokio::spawn(crate::llhls::service::run(
            registry.clone(),
            outputs.clone(),
            config.llhls.clone(),
            recorder.as_ref().map(|r| r.taps()),
            shutdown.clone(),
        ));
        let upload_task = recorder
            .as_ref()
            .map(|r| tokio::spawn(r.clone().upload(shutdown.clone())));
        if let Some(r) = &recorder {
            tokio::spawn(r.clone().retention(shutdown.clone()));
        }
        let viewers = Arc::new(ViewerCounts::default());
        let mut routes = crate::llhls::http::routes(LlhlsHttp {
            outputs,
            registry: registry.clone(),
            access: access.clone(),
            viewers: viewers.clone(),
            cache_secret: (!config.cluster.secret.is_empty())
                .then(|| config.cluster.secret.as_str().into()),
        });
        // The watcher emits stream events itself: this handle is not
        // needed (holding it would keep delivery waiting at shutdown).
        let (hooks, webhook_delivery) = crate::webhooks::start(
            config.webhooks.clone(),
            hook_secret,
            registry.clone(),
            viewers.clone(),
            shutdown.clone(),
        );
        if let Some(r) = &recorder {
            r.set_webhooks(hooks.clone());
            routes = routes.merge(crate::record::http::routes(crate::record::http::VodHttp {
                recorder: r.clone(),
                access: access.clone(),
            }));
        }
        drop(hooks);
        // A cluster: pull what viewers ask for and this node lacks; an
        // origin also lists its streams and serves pulls.
        if config.cluster.enabled() {
            let (demand, demands) = tokio::sync::mpsc::channel(64);
            registry.set_demand(demand);
            let edge = crate::cluster::edge::Edge {
                registry: registry.clone(),
                store: access.store.clone(),
                viewers: viewers.clone(),
                config: config.cluster.clone(),
                node: config.cluster.node_name(),
                grace: config.bus.reconnect_grace,
                client: crate::http::client::client(),
            };
            tokio::spawn(edge.run(demands, shutdown.clone()));
        }
        match config.cluster.role {
            Role::Origin => {
                tokio::spawn(crate::cluster::directory::announce(
                    registry.clone(),
                    access.store.clone(),
                    crate::cluster::directory::Node {
                        name: config.cluster.node_name(),
                        url: config.cluster.advertise_url.clone(),
                        public_url: config.cluster.public_url.clone(),
                    },
                    config.cluster.heartbeat,
                    shutdown.clone(),
                ));
                routes = routes.merge(crate::cluster::origin::routes(
                    crate::cluster::origin::OriginHttp {
                        registry: registry.clone(),
                        secret: config.cluster.secret.as_str().into(),
                    },
                ));
            }
            Role::Edge => access.refuse_publishers(),
            Role::Standalone => {}
        }
        // The API's routes.
        routes = routes.merge(crate::api::routes(Api {
            access: access.clone(),
            registry: registry.clone(),
            viewers: viewers.clone(),
            recorder: recorder.clone(),
            rtmp_port,
            public_origin: config.http.public_origin.clone(),
        }));
        if config.ome_api.enabled() {
            routes = routes.merge(crate::api::ome::routes(crate::api::ome::OmeApi {
                config: config.ome_api.clone(),
                access: access.clone(),
                registry: registry.clone(),
                recorder: recorder.clone(),
                aliases: Default::default(),
            }));
        }
        let ice = Arc::new(crate::auth::turn::IceServers::new(config.turn.clone()));
        let mut whip_task = None;
        let mut whip_ome = None;
        if let Some((server, handle)) = whip {
            let state = crate::ingest::whip::http::WhipHttp {
                whip: handle,
                per_ip: crate::connlimit::ConnectionLimit::new(
                    config.whip.max_publishers,
                    config.whip.max_publishers_per_ip,
                ),
                access: access.clone(),
                ice: ice.clone(),
            };
            routes = routes.merge(crate::ingest::whip::http::routes(state.clone()));
            whip_ome = Some(state);
            whip_task = Some(tokio::spawn(server.run(shutdown.clone())));
        }
        routes = routes.route(
            "/readyz",
            axum::routing::get(readyz).with_state(Readiness {
                access: access.clone(),
                recorder: recorder.clone(),
            }),
        );
        routes = crate::http::console(routes, &config.http.web_dir);
        // Asked before any route, in this order: WebSocket signalling (an
        // upgrade on `/{app}/{stream}[/{playlist}]`), then OME's WHIP form
        // (`POST /{app}/{stream}?direction=whip`).
        let mut intercepts: Vec<Arc<dyn crate::http::Intercept>> = Vec::new();
        let mut webrtc_task = None;
        let mut signalling_sessions = None;
        if let Some(webrtc) = webrtc {
            let signalling = crate::webrtc::ws::Signalling::new(
                webrtc.sfu(),
                registry.clone(),
                config.webrtc.clone(),
                access.clone(),
                viewers.clone(),
                ice.clone(),
                shutdown.clone(),
            );
            signalling_sessions = Some(signalling.sessions());
            routes = routes.merge(crate::webrtc::whep::routes(signalling.clone()));
            intercepts.push(Arc::new(signalling));
            webrtc_task = Some(tokio::spawn(webrtc.run(shutdown.clone())));
        }
        if let Some(state) = whip_ome {
            intercepts.push(Arc::new(state));
        }
        let collector: crate::http::Collector = {
            let (registry, viewers) = (registry.clone(), viewers.clone());
            Arc::new(move || stream_metrics(&registry, &viewers))
        };
        let app = crate::http::app(routes, intercepts, &config.llhls.cors_origins, collector);
        // Held to the end: sessions, and connections handlers opened, live
        // on the HTTP workers past the HTTP server's own stop.
        let http_workers = http.workers();
        let http_task = tokio::spawn(http.run(app, shutdown.clone()));

        let mut s = shutdown;
        s.wait().await;
        tracing::info!("shutting down");
        let _ = rtmp_task.await;
        if let Some(t) = srt_task {
            let _ = t.await;
        }
        if let Some(t) = whip_task {
            let _ = t.await;
        }
        registry.shutdown();
        let _ = transcode_task.await;
        let _ = llhls_task.await;
        // The packagers are done: every recording closes its segments,
        // and what waits in the spool is uploaded (within its deadline).
        if let Some(t) = upload_task {
            let _ = t.await;
        }
        if let Some(r) = &recorder {
            r.recordings_closed().await;
            tracing::info!("recordings closed");
            r.flush(config.record.flush_timeout).await;
        }
        if let Some(t) = webrtc_task {
            let _ = t.await;
        }
        let http = http_task.await;
        // WebSocket sessions outlive their HTTP request: each ends once its
        // viewer is closed (just above), and its end sends the admission
        // backend `closing`.
        if let Some(sessions) = signalling_sessions {
            sessions.ended(config.http.shutdown_timeout).await;
        }
        // What the server still holds for others: webhooks queued (the
        // streams that just ended) and admission `closing` calls for the
        // sessions just closed, each within its drain deadline.
        let admission_drain = async {
            if let Some(adm) = &access.admission {
                adm.drain(config.admission.timeout).await;
            }
        };
        tokio::join!(webhook_delivery.finished(), admission_drain);
        drop(http_workers);
        http??;
        Ok(())
    }
}

/// What `/readyz` looks at.
#[derive(Clone)]
struct Readiness {
    access: Arc<Access>,
    recorder: Option<Arc<Recorder>>,
}

/// 200 when this node should get traffic: not draining, the database
/// answering, the recording spool taking writes; else 503 naming what is
/// wrong (a load balancer or Kubernetes takes the node out of rotation).
async fn readyz(
    axum::extract::State(r): axum::extract::State<Readiness>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    const CHECK: std::time::Duration = std::time::Duration::from_secs(2);
    let draining = r.access.is_draining();
    let database = match tokio::time::timeout(CHECK, r.access.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => format!("no answer within {CHECK:?}"),
    };
    let spool = match &r.recorder {
        None => "off".to_owned(),
        Some(rec) => match tokio::time::timeout(CHECK, rec.spool_writable()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => format!("no answer within {CHECK:?}"),
        },
    };
    let ready = !draining && database == "ok" && (spool == "ok" || spool == "off");
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({
            "ready": ready,
            "draining": draining,
            "database": database,
            "spool": spool,
        })),
    )
}

/// The per-stream series of `/metrics`, from the streams live now (so a
/// stream's series go when it does): media received per track (bytes and
/// frames: `rate()` gives the bitrate and frame rate), and viewers by
/// protocol.
fn stream_metrics(registry: &Registry, viewers: &ViewerCounts) -> String {
    use std::fmt::Write;
    let streams = registry.list();
    let mut bytes = String::new();
    let mut frames = String::new();
    let mut watching = String::new();
    for b in &streams {
        let path = b.path().to_string();
        for (info, f, n) in b.track_totals() {
            let _ = writeln!(
                bytes,
                "streamd_stream_received_bytes_total{{stream=\"{path}\",track=\"{}\",kind=\"{}\"}} {n}",
                info.name,
                info.kind.as_str()
            );
            let _ = writeln!(
                frames,
                "streamd_stream_frames_total{{stream=\"{path}\",track=\"{}\",kind=\"{}\"}} {f}",
                info.name,
                info.kind.as_str()
            );
        }
        for (protocol, n) in [
            ("webrtc", viewers.webrtc(&path)),
            ("llhls", viewers.hls(&path)),
        ] {
            let _ = writeln!(
                watching,
                "streamd_stream_viewers{{stream=\"{path}\",protocol=\"{protocol}\"}} {n}"
            );
        }
    }
    let mut out = String::new();
    out.push_str(
        "# HELP streamd_streams_live Streams live (publishing or in their reconnect grace).\n",
    );
    out.push_str("# TYPE streamd_streams_live gauge\n");
    let _ = writeln!(out, "streamd_streams_live {}", streams.len());
    for (name, kind, help, body) in [
        (
            "streamd_stream_received_bytes_total",
            "counter",
            "Media payload bytes per stream and track (source and transcoded).",
            bytes,
        ),
        (
            "streamd_stream_frames_total",
            "counter",
            "Frames per stream and track (source and transcoded).",
            frames,
        ),
        (
            "streamd_stream_viewers",
            "gauge",
            "Viewers per stream and protocol.",
            watching,
        ),
    ] {
        if !body.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            out.push_str(&body);
        }
    }
    out
}
