//! The HTTP listeners (plain and TLS): LL-HLS, WebRTC signalling, the API
//! and the web console. CORS, metrics and health live here; each part of the data
//! flow contributes its routes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::{TcpListener, TcpStream};
use tower::Service;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;

use crate::config::HttpConfig;
use crate::connlimit::{ConnectionLimit, LimitedListener};
use crate::shutdown::Shutdown;

pub mod client;
pub mod sdp;
pub mod stall;
pub mod tls;
pub mod window;

/// How often histogram samples are folded into their summaries.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder (one per process, shared by every
/// server a test starts).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, in which
            // case ours just renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            // Histogram samples are kept until upkeep folds them into their
            // summaries: without it they piled up for as long as nothing
            // scraped /metrics (a 20-minute soak grew by 5.7%, ~340 kB a
            // minute with 50 LL-HLS players).
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP);
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

pub fn cors(origins: &[String]) -> CorsLayer {
    let origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(origin)
        // POST, PATCH and DELETE for browser WHIP publishers, which
        // authenticate with a bearer token, never a cookie.
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(tower_http::cors::Any)
        .expose_headers([
            axum::http::header::LOCATION,
            axum::http::header::LINK,
            axum::http::header::ETAG,
        ])
        .max_age(Duration::from_secs(86_400))
}

/// The host a client reached us by (its Host header), for URLs we hand
/// back or report; `localhost` if absent or holding anything a host name
/// and port cannot (no injection into the URLs built from it).
pub fn request_host(headers: &axum::http::HeaderMap) -> String {
    let h = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    if h.chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    {
        h.to_owned()
    } else {
        "localhost".into()
    }
}

/// Headers that claim a client address or scheme on a proxy's behalf.
const FORWARDING_HEADERS: [axum::http::HeaderName; 4] = [
    axum::http::HeaderName::from_static("x-forwarded-for"),
    axum::http::HeaderName::from_static("x-real-ip"),
    axum::http::header::FORWARDED,
    axum::http::HeaderName::from_static("x-forwarded-proto"),
];

/// Whether a request came in over TLS (a request extension every listener
/// sets).
#[derive(Clone, Copy, Debug, Default)]
pub struct Secure(pub bool);

/// The origin a client reaches us by, for URLs we hand back: `configured`
/// (`http.public_origin`) if set; else the request's Host with `https` when
/// it came over TLS (or a trusted proxy says `X-Forwarded-Proto: https`),
/// `http` otherwise.
pub fn public_origin(
    configured: &str,
    headers: &axum::http::HeaderMap,
    secure: Option<Secure>,
) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let scheme = if secure.is_some_and(|s| s.0) || forwarded_https {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", request_host(headers))
}

/// The WebSocket origin beside an HTTP one (`https` gives `wss`).
pub fn ws_origin(http_origin: &str) -> String {
    match http_origin.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!(
            "ws://{}",
            http_origin.strip_prefix("http://").unwrap_or(http_origin)
        ),
    }
}

/// The client's own address as a trusted proxy reports it
/// (X-Forwarded-For, or X-Real-IP): the listener drops those headers from
/// anyone not in `http.trusted_proxies`, and leaves in X-Forwarded-For only
/// the address [`forwarded_client`] found.
pub fn real_ip(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .or_else(|| headers.get("x-real-ip").and_then(|v| v.to_str().ok()))
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
}

/// The client behind a chain of proxies: X-Forwarded-For read from the
/// right (each proxy appends the address it was reached from), past the
/// entries that are proxies of ours, to the first that is not. What is to
/// the left of it was written by the client and proves nothing. None when
/// there is no X-Forwarded-For, or an entry on the way is not an address.
pub fn forwarded_client(
    headers: &axum::http::HeaderMap,
    trusted: &[crate::net::IpBlock],
) -> Option<std::net::IpAddr> {
    let mut last = None;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        for entry in value.to_str().ok()?.rsplit(',') {
            let ip: std::net::IpAddr = entry.trim().parse().ok()?;
            if !trusted.iter().any(|b| b.contains(ip)) {
                return Some(ip);
            }
            last = Some(ip);
        }
    }
    // Every hop is a proxy of ours: the first of them is the client.
    last
}

/// The value of `key` in a query string (`a=1&key=value`).
pub fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// An `Authorization` header that is not `Bearer <key or JWT>`.
#[derive(Debug, PartialEq, Eq)]
pub struct BadBearer;

/// An `Authorization: Bearer` token (a stream key or a JWT, so only the
/// characters those use); `Ok(None)` without the header, `Err` when it is
/// there but not such a token.
pub fn bearer(headers: &axum::http::HeaderMap) -> Result<Option<&str>, BadBearer> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && t.len() <= 4096
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
        .map(Some)
        .ok_or(BadBearer)
}

/// A request's query with its bearer token added as a credential, for the
/// one admission path: `token=` for a JWT (or any bearer unless `keys`),
/// `key=` for a stream key; Err for a malformed `Authorization`.
pub fn query_with_bearer(
    query: Option<String>,
    headers: &axum::http::HeaderMap,
    keys: bool,
) -> Result<String, BadBearer> {
    let mut query = query.unwrap_or_default();
    if let Some(token) = bearer(headers)? {
        let name = if keys && !is_jwt(token) {
            "key"
        } else {
            "token"
        };
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("{name}={token}"));
    }
    Ok(query)
}

/// Whether a token is a JWT (three dot-separated parts) rather than a key.
pub fn is_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Whether the request body is declared as SDP (`application/sdp`).
pub fn is_sdp(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
}

/// Sends a viewer to the same path and query at `base`, another node's
/// public URL (`cluster.redirect`): a 307, so a WHEP offer is posted
/// again there, and not stored by a cache (the stream may move).
pub fn redirect_elsewhere(base: &str, path_and_query: &str) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let location = format!("{}{path_and_query}", base.trim_end_matches('/'));
    match HeaderValue::from_str(&location) {
        Ok(v) => (
            StatusCode::TEMPORARY_REDIRECT,
            [
                (header::LOCATION, v),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// The `token` parameter of a query string.
pub fn token_param(query: Option<&str>) -> Option<&str> {
    query_param(query, "token")
}

/// The web console (files in `web_dir`) for every path no route takes.
///
/// Without a built console, `/` says how to build it and other paths are
/// a 404. (OME's WHIP form and WebSocket signalling are taken before
/// routing: see [`Intercept`].)
pub fn console(routes: Router, web_dir: &Path) -> Router {
    if web_dir.join("index.html").is_file() {
        tracing::info!(dir = %web_dir.display(), "web console at /");
        routes.fallback_service(ServeDir::new(web_dir))
    } else {
        tracing::warn!(dir = %web_dir.display(), "web console not built (npm --prefix web ci && npm --prefix web run build)");
        routes
            .route("/", get(|| std::future::ready(Html(NOT_BUILT))))
            .fallback(|| std::future::ready((axum::http::StatusCode::NOT_FOUND, "not found\n")))
    }
}

/// Metrics rendered at scrape time from live state (per-stream series,
/// which exist exactly as long as their stream), appended to `/metrics`.
pub type Collector = Arc<dyn Fn() -> String + Send + Sync>;

/// A request a part of the data flow takes before routing, by what it is
/// rather than by its path alone: OME's WHIP form (`POST
/// /{app}/{stream}?direction=whip`) and WebSocket signalling (an upgrade on
/// `/{app}/{stream}`), on paths the console's files share.
pub trait Intercept: Send + Sync + 'static {
    /// Whether this takes `req` (asked of every request: cheap, and
    /// without allocating).
    fn takes(&self, req: &axum::extract::Request) -> bool;
    /// The response to a request it takes.
    fn serve(self: Arc<Self>, req: axum::extract::Request) -> BoxFuture<'static, Response>;
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything HTTP serves: the intercepts, then the routes; CORS and the
/// timing header over all of it. Wrapped once around the whole router (a
/// layer on the router wraps every route in its own boxed copy, and each
/// request then went through five boxed services).
#[derive(Clone)]
pub struct App {
    service: tower_http::cors::Cors<Dispatch>,
    /// `Timing-Allow-Origin`.
    timing: HeaderValue,
}

#[derive(Clone)]
struct Dispatch {
    router: Router,
    intercepts: Arc<[Arc<dyn Intercept>]>,
}

impl Service<axum::extract::Request> for Dispatch {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = DispatchFuture;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> DispatchFuture {
        match self.intercepts.iter().find(|i| i.takes(&req)) {
            Some(i) => DispatchFuture::Taken(i.clone().serve(req)),
            None => DispatchFuture::Routed(self.router.call(req)),
        }
    }
}

// Routed is nearly every request: boxing its future would allocate for each.
#[allow(clippy::large_enum_variant)]
enum DispatchFuture {
    Routed(axum::routing::future::RouteFuture<std::convert::Infallible>),
    Taken(BoxFuture<'static, Response>),
}

impl Future for DispatchFuture {
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            DispatchFuture::Routed(f) => std::pin::Pin::new(f).poll(cx),
            DispatchFuture::Taken(f) => f.as_mut().poll(cx).map(Ok),
        }
    }
}

/// A response on its way, given the timing header when it comes.
pub struct AppFuture {
    inner: tower_http::cors::ResponseFuture<DispatchFuture>,
    timing: Option<HeaderValue>,
}

impl Future for AppFuture {
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let me = self.get_mut();
        let mut r = std::task::ready!(std::pin::Pin::new(&mut me.inner).poll(cx));
        if let (Ok(r), Some(timing)) = (&mut r, me.timing.take()) {
            r.headers_mut().insert("timing-allow-origin", timing);
        }
        std::task::Poll::Ready(r)
    }
}

impl App {
    /// Serves one request.
    pub fn call(&self, req: axum::extract::Request) -> AppFuture {
        AppFuture {
            inner: self.service.clone().call(req),
            timing: Some(self.timing.clone()),
        }
    }
}

/// Everything HTTP serves: the data flow's routes and intercepts, with the
/// server-wide routes, CORS and timing.
pub fn app(
    routes: Router,
    intercepts: Vec<Arc<dyn Intercept>>,
    cors_origins: &[String],
    collector: Collector,
) -> App {
    let metrics = metrics_handle();
    // The origins CORS lets read our responses may also read their timing
    // (Resource Timing's protocol, sizes and phases: a player's QoE
    // reports), as CDNs allow.
    let timing =
        HeaderValue::from_str(&cors_origins.join(", ")).unwrap_or(HeaderValue::from_static("*"));
    let router = routes
        .route(
            "/metrics",
            // Rendered off the HTTP workers: a busy node's text is long
            // (series per stream and protocol), and a worker serves many
            // connections' requests in the meantime.
            get(move || {
                let (metrics, collector) = (metrics.clone(), collector.clone());
                async move {
                    let rendered = tokio::task::spawn_blocking(move || {
                        let mut text = metrics.render();
                        text.push_str(&collector());
                        text
                    })
                    .await;
                    match rendered {
                        Ok(text) => text.into_response(),
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
                    }
                }
            }),
        )
        .route("/healthz", get(|| std::future::ready("ok\n")));
    let dispatch = Dispatch {
        router,
        intercepts: intercepts.into(),
    };
    App {
        service: tower::Layer::layer(&cors(cors_origins), dispatch),
        timing,
    }
}

const NOT_BUILT: &str = "<!doctype html><title>streamd</title><p>streamd is running. \
The web console is not built: run <code>npm --prefix web ci &amp;&amp; npm --prefix web run build</code> \
(scripts/run.sh does), or set <code>[http] web_dir</code>. The API is at <code>/api</code> \
(<a href=\"/api/openapi.json\">OpenAPI</a>).</p>";

/// The HTTP listeners, plain and TLS. Their own accept loops rather than
/// `axum::serve`, for what a server exposed to the internet needs:
/// connection caps (total and per address, across every listener), a
/// deadline for every request's headers and every TLS handshake (which
/// also closes idle keep-alive connections), and a shutdown that waits for
/// requests in flight only so long.
pub struct HttpServer {
    plain: Vec<TcpListener>,
    tls: Vec<TcpListener>,
    certs: Option<Arc<tls::Certs>>,
    config: HttpConfig,
    workers: Arc<Workers>,
}

/// Keeps the HTTP workers' threads running while held (see
/// [`HttpServer::workers`]).
pub struct HttpWorkers(#[allow(dead_code)] Arc<Workers>);

/// The ALPN protocols HTTPS offers, preferred first.
const HTTPS_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The answer to plain HTTP on a TLS port.
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\
content-length: 50\r\nconnection: close\r\n\r\nThis port speaks HTTPS: use https:// to reach it.\n";

/// HTTP/2 streams a connection may have open at once.
const H2_MAX_STREAMS: u32 = 256;

impl HttpServer {
    /// Binds every plain listener, and the HTTPS ones at `tls` when
    /// `certs` are given.
    pub async fn bind(
        config: HttpConfig,
        tls: &[SocketAddr],
        certs: Option<Arc<tls::Certs>>,
    ) -> anyhow::Result<HttpServer> {
        let plain = crate::net::listen_all(&config.listen, "HTTP").await?;
        let tls_listeners = match certs {
            Some(_) => crate::net::listen_all(tls, "HTTPS").await?,
            None => Vec::new(),
        };
        let workers = Workers::start(config.worker_count(), config.shutdown_timeout)
            .map_err(|e| anyhow::anyhow!("cannot start the HTTP workers: {e}"))?;
        Ok(HttpServer {
            plain,
            tls: tls_listeners,
            certs,
            config,
            workers: Arc::new(workers),
        })
    }

    /// The worker threads connections are served on, kept running while
    /// the returned guard (or the server) is held. What runs on them can
    /// outlive [`HttpServer::run`]: WebSocket and WHEP sessions, and the
    /// connections handlers opened (the database's, the admission
    /// backend's, the object store's). Hold it until the server's last
    /// shutdown step; then each thread finishes what it still runs, for up
    /// to `http.shutdown_timeout`.
    pub fn workers(&self) -> HttpWorkers {
        HttpWorkers(self.workers.clone())
    }

    /// The first plain listener's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.plain[0].local_addr()
    }

    /// Every plain listener's address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.plain
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Every HTTPS listener's address.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown`; then lets requests in flight finish for up
    /// to `shutdown_timeout`, and closes what is left. (The workers keep
    /// running what outlives a request: see [`HttpServer::workers`].)
    pub async fn run(self, app: App, shutdown: Shutdown) -> std::io::Result<()> {
        let limit = ConnectionLimit::new(
            self.config.max_connections,
            self.config.max_connections_per_ip,
        );
        let trusted: Arc<Vec<crate::net::IpBlock>> = Arc::new(
            self.config
                .trusted_proxies
                .iter()
                .filter_map(|p| crate::net::IpBlock::parse(p).ok())
                .collect(),
        );
        let acceptor = self
            .certs
            .as_ref()
            .map(|c| tokio_rustls::TlsAcceptor::from(c.server_config(HTTPS_ALPN)));
        let workers = self.workers.clone();
        let mut loops = tokio::task::JoinSet::new();
        let listeners = self
            .plain
            .into_iter()
            .map(|l| (l, None))
            .chain(self.tls.into_iter().map(|l| (l, acceptor.clone())));
        for (listener, acceptor) in listeners {
            let serve = Serve {
                app: app.clone(),
                trusted: trusted.clone(),
                config: self.config.clone(),
                acceptor,
                workers: workers.clone(),
            };
            let what = if serve.acceptor.is_some() {
                "https"
            } else {
                "http"
            };
            let listener = LimitedListener::new(
                listener,
                limit.clone(),
                what,
                "streamd_http_refused_connections_total",
            );
            loops.spawn(serve.accept_loop(listener, shutdown.clone()));
        }
        while loops.join_next().await.is_some() {}
        Ok(())
    }
}

/// One listener's accept loop and what each connection needs.
struct Serve {
    app: App,
    trusted: Arc<Vec<crate::net::IpBlock>>,
    config: HttpConfig,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    workers: Arc<Workers>,
}

impl Serve {
    async fn accept_loop(self, mut listener: LimitedListener, shutdown: Shutdown) {
        let me = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        let mut stop = shutdown.clone();
        loop {
            let (stream, peer, permit) = tokio::select! {
                _ = stop.wait() => break,
                a = listener.accept() => a,
            };
            // Reap finished connection tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
            // The connection moves to a serving thread's runtime.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot hand a connection over");
                    continue;
                }
            };
            let handle = me.workers.pick().clone();
            let me = me.clone();
            let shutdown = shutdown.clone();
            tasks.spawn_on(
                async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => me.connection(stream, peer, shutdown).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "cannot take a connection over")
                        }
                    }
                    drop(permit);
                },
                &handle,
            );
        }
        let drained = tokio::time::timeout(me.config.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = tasks.len(),
                timeout = ?me.config.shutdown_timeout,
                "closing http connections still open at the shutdown deadline"
            );
            tasks.shutdown().await;
        }
    }

    /// Serves one connection: HTTP/1.1 on a plain listener; on a TLS one,
    /// the handshake (within `header_timeout`), then HTTP/2 or HTTP/1.1 as
    /// ALPN chose.
    async fn connection(&self, stream: TcpStream, peer: SocketAddr, shutdown: Shutdown) {
        let stream = stall::StallGuard::new(stream, stall::WRITE_STALL);
        let Some(acceptor) = &self.acceptor else {
            return self
                .http1(TokioIo::new(stream), peer, false, shutdown)
                .await;
        };
        let deadline = tokio::time::Instant::now() + self.config.header_timeout;
        // A TLS record starts with 0x16; a letter is someone speaking plain
        // HTTP to the TLS port: tell them, as nginx does, instead of a TLS
        // alert their client cannot show.
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, stream.get_ref().peek(&mut first)).await {
            Ok(Ok(1)) if first[0].is_ascii_uppercase() => {
                metrics::counter!("streamd_tls_handshake_failures_total").increment(1);
                let mut stream = stream;
                let _ = tokio::time::timeout_at(
                    deadline,
                    tokio::io::AsyncWriteExt::write_all(&mut stream, PLAIN_ON_TLS),
                )
                .await;
                return;
            }
            Ok(Ok(1)) => {}
            _ => {
                // Silence until the deadline, or closed before a byte.
                metrics::counter!("streamd_tls_handshake_failures_total").increment(1);
                return;
            }
        }
        let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream)).await;
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                metrics::counter!("streamd_tls_handshake_failures_total").increment(1);
                tracing::debug!(%peer, error = %e, "tls handshake failed");
                return;
            }
            Err(_) => {
                metrics::counter!("streamd_tls_handshake_failures_total").increment(1);
                tracing::debug!(%peer, "tls handshake timed out");
                return;
            }
        };
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            self.http2(tls, peer, shutdown).await
        } else {
            self.http1(TokioIo::new(tls), peer, true, shutdown).await
        }
    }

    /// The router as a hyper service for `peer`'s requests.
    fn service(&self, peer: SocketAddr, secure: bool) -> PeerService {
        PeerService {
            app: self.app.clone(),
            peer,
            secure,
            // Only a trusted proxy may say who the client is.
            forwarded_ok: self.trusted.iter().any(|b| b.contains(peer.ip())),
            trusted: self.trusted.clone(),
            last_request: None,
        }
    }

    async fn http1<I>(&self, io: TokioIo<I>, peer: SocketAddr, secure: bool, mut stop: Shutdown)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_timeout)
            .max_headers(100);
        let conn = builder
            .serve_connection(io, self.service(peer, secure))
            .with_upgrades();
        let conn = std::pin::pin!(conn);
        let result = until_stopped(conn, &mut stop, |c| c.graceful_shutdown()).await;
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "http connection ended");
        }
    }

    async fn http2<I>(&self, io: I, peer: SocketAddr, mut stop: Shutdown)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(64 << 10)
            // A peer that stops answering pings is gone.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let frames = Arc::new(std::sync::Mutex::new(window::Frames::default()));
        let io = TokioIo::new(window::Watched::new(io, frames.clone()));
        let mut service = self.service(peer, true);
        let started = tokio::time::Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        service.last_request = Some((started, last.clone()));
        let conn = builder.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        // Idle: no request started for `idle_timeout`. Then GOAWAY, and
        // the requests in flight are served to their end.
        let idle = self.config.idle_timeout;
        let idle_since = || started + Duration::from_millis(last.load(Ordering::Relaxed));
        let mut wake = idle_since() + idle;
        // Stalled: a response the client gives no window takes (almost)
        // none of its data for `send_timeout` (see `window`). Then GOAWAY,
        // counted once, and the connection is closed at any later tick at
        // which it is stalled, even while closing: that response would
        // never end.
        let send_timeout = self.config.send_timeout;
        let mut tick = tokio::time::interval((send_timeout / 4).max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stalled_now = |now| {
            frames
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stalled(now, send_timeout)
        };
        let mut closing = false;
        let mut warned = false;
        let result = loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = stop.wait(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = tokio::time::sleep_until(wake), if !closing => {
                    wake = idle_since() + idle;
                    if wake <= tokio::time::Instant::now() {
                        tracing::debug!(%peer, "closing an idle http/2 connection");
                        metrics::counter!("streamd_http2_idle_closed_total").increment(1);
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                now = tick.tick() => {
                    if stalled_now(now) {
                        if warned {
                            // Stalled at a tick after the GOAWAY.
                            break Ok(());
                        }
                        tracing::debug!(%peer, "closing an http/2 connection whose client takes no data");
                        metrics::counter!("streamd_http2_send_stalls_total").increment(1);
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        warned = true;
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "http/2 connection ended");
        }
    }
}

/// The threads HTTP connections are served on: one single-threaded
/// runtime each, as nginx has worker processes. A connection stays on the
/// thread it is given (the least busy), with its HTTP/2 streams: no
/// wake-ups across threads for a request, as a shared runtime has. (On
/// tokio's shared runtime a tiny HTTP/2 response took 12.6 us of user CPU;
/// here 10.9, see benches/README.md.) As with nginx, one connection's
/// requests are served by one core.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    /// Dropped: the threads stop, once what runs on them has ended (a
    /// WebSocket session outlives its request) or `linger` has passed.
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Workers {
    fn start(n: usize, linger: Duration) -> std::io::Result<Workers> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n.max(1) {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (started, handle) = std::sync::mpsc::channel();
            // The runtime is made, run and dropped on its own thread.
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    let _ = started.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async {
                        let _ = stopped.await;
                        let deadline = tokio::time::Instant::now() + linger;
                        while tokio::runtime::Handle::current()
                            .metrics()
                            .num_alive_tasks()
                            > 0
                            && tokio::time::Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    })
                })?;
            let handle = handle
                .recv()
                .map_err(|_| std::io::Error::other("an HTTP worker thread ended at start"))??;
            handles.push(handle);
            stops.push(stop);
        }
        Ok(Workers {
            handles,
            _stop: stops,
        })
    }

    /// The worker running the fewest tasks: connections, their HTTP/2
    /// streams, and what outlives a request (WebSocket and WHEP sessions).
    fn pick(&self) -> &tokio::runtime::Handle {
        self.handles
            .iter()
            .min_by_key(|h| h.metrics().num_alive_tasks())
            .expect("at least one worker")
    }
}

/// Serves `conn` to its end; at `stop`, `graceful` tells it to finish the
/// requests in flight and take no more, and it is served until then.
async fn until_stopped<C, T>(
    mut conn: std::pin::Pin<&mut C>,
    stop: &mut Shutdown,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) -> T
where
    C: Future<Output = T>,
{
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.wait() => {
            graceful(conn.as_mut());
            conn.await
        }
    }
}

/// The router, serving one peer's requests.
#[derive(Clone)]
struct PeerService {
    app: App,
    peer: SocketAddr,
    secure: bool,
    forwarded_ok: bool,
    /// `http.trusted_proxies`.
    trusted: Arc<Vec<crate::net::IpBlock>>,
    /// HTTP/2: when the last request started, in ms after the instant.
    last_request: Option<(tokio::time::Instant, Arc<AtomicU64>)>,
}

impl hyper::service::Service<Request<Incoming>> for PeerService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = AppFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut req = req.map(axum::body::Body::new);
        if let Some((since, last)) = &self.last_request {
            last.store(since.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        if !self.forwarded_ok {
            for h in FORWARDING_HEADERS {
                req.headers_mut().remove(h);
            }
        } else if req.headers().contains_key("x-forwarded-for") {
            // Handlers read one address: the client's, not what it wrote.
            let client = forwarded_client(req.headers(), &self.trusted);
            let headers = req.headers_mut();
            headers.remove("x-forwarded-for");
            if let Some(ip) = client {
                headers.insert(
                    "x-forwarded-for",
                    HeaderValue::from_str(&ip.to_string()).expect("an address is a header value"),
                );
            }
        }
        // Handlers see the peer's address (admission webhooks report it;
        // viewer counts use it).
        req.extensions_mut().insert(ConnectInfo(self.peer));
        req.extensions_mut().insert(Secure(self.secure));
        // HTTP/2 names the host in `:authority` (the URI), not a Host
        // header: give handlers the header either way.
        if !req.headers().contains_key(axum::http::header::HOST)
            && let Some(host) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(axum::http::header::HOST, host);
        }
        self.app.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;

    /// Takes `POST ...?direction=whip`, as OME's WHIP form is taken.
    struct TakesWhip;

    impl Intercept for TakesWhip {
        fn takes(&self, req: &axum::extract::Request) -> bool {
            req.uri().query() == Some("direction=whip")
        }

        fn serve(self: Arc<Self>, _req: axum::extract::Request) -> BoxFuture<'static, Response> {
            Box::pin(std::future::ready(StatusCode::CREATED.into_response()))
        }
    }

    /// An intercept sees every path, whether or not a route or the
    /// console's files take it, and whether or not the console is built;
    /// what it does not take is routed, CORS and the timing header added
    /// either way.
    #[tokio::test]
    async fn intercepts_see_every_path_before_the_routes() {
        let built = tempfile::tempdir().unwrap();
        std::fs::write(built.path().join("index.html"), "console").unwrap();
        let missing = built.path().join("not-built");
        for dir in [built.path(), missing.as_path()] {
            let routes = console(Router::new(), dir)
                .merge(Router::new().route("/other", get(|| std::future::ready("other"))));
            let app = app(
                routes,
                vec![Arc::new(TakesWhip)],
                &["*".to_owned()],
                Arc::new(String::new),
            );
            let call = |method: Method, uri: &str| {
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .header(header::ORIGIN, "https://player.example")
                    .body(axum::body::Body::empty())
                    .unwrap()
            };
            for uri in ["/live/cam?direction=whip", "/other?direction=whip"] {
                let r = app.call(call(Method::POST, uri)).await.unwrap();
                assert_eq!(r.status(), StatusCode::CREATED, "{uri} {}", dir.display());
                assert_eq!(r.headers()["access-control-allow-origin"], "*");
                assert_eq!(r.headers()["timing-allow-origin"], "*");
            }
            let r = app.call(call(Method::POST, "/live/cam")).await.unwrap();
            assert!(r.status().is_client_error(), "{}", dir.display());
            let r = app.call(call(Method::GET, "/other")).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()["access-control-allow-origin"], "*");
            assert_eq!(r.headers()["timing-allow-origin"], "*");
            // A preflight is CORS's to answer.
            let r = app
                .call(
                    Request::builder()
                        .method(Method::OPTIONS)
                        .uri("/live/cam/whip")
                        .header(header::ORIGIN, "https://player.example")
                        .header("access-control-request-method", "POST")
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert!(r.status().is_success());
            assert!(
                r.headers()["access-control-allow-methods"]
                    .to_str()
                    .unwrap()
                    .contains("POST")
            );
        }
    }

    /// A connection goes to the least busy worker; a worker told to stop
    /// first runs what it still has to its end (a WebSocket session
    /// outlives its request), within the linger time.
    #[test]
    fn workers_take_the_least_busy_and_finish_what_they_run() {
        let workers = Workers::start(2, Duration::from_secs(5)).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let first = workers.pick().clone();
        first.spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            done.send(()).unwrap();
        });
        let second = workers.pick();
        assert_ne!(first.id(), second.id(), "not the least busy worker");
        drop(workers);
        finished
            .recv_timeout(Duration::from_secs(3))
            .expect("a task running when the workers stopped was dropped");
    }

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    /// The client behind proxies is the rightmost X-Forwarded-For entry
    /// that is not one of ours: what the client wrote to its left is
    /// ignored; a broken chain names nobody.
    #[test]
    fn the_forwarded_client_is_read_from_the_right() {
        let trusted = [
            crate::net::IpBlock::parse("10.0.0.0/8").unwrap(),
            crate::net::IpBlock::parse("192.0.2.1").unwrap(),
        ];
        let xff = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            forwarded_client(&h, &trusted).map(|ip| ip.to_string())
        };
        assert_eq!(xff(&["203.0.113.9"]).as_deref(), Some("203.0.113.9"));
        // A forged entry on the left, the real client appended by our proxy.
        assert_eq!(
            xff(&["198.51.100.66, 203.0.113.9"]).as_deref(),
            Some("203.0.113.9")
        );
        // Through two of ours, in one header or two.
        assert_eq!(
            xff(&["198.51.100.66, 203.0.113.9, 10.1.2.3"]).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            xff(&["198.51.100.66, 203.0.113.9", "10.1.2.3"]).as_deref(),
            Some("203.0.113.9")
        );
        // Only proxies of ours: the first is the client.
        assert_eq!(xff(&["10.0.0.1, 192.0.2.1"]).as_deref(), Some("10.0.0.1"));
        // Garbage on the way: nobody.
        assert_eq!(xff(&["203.0.113.9, unknown"]), None);
        assert_eq!(xff(&[]), None);
    }

    /// A bearer joins the query as the credential admission reads: a key
    /// or a token; a malformed header is refused, no header adds nothing.
    #[test]
    fn the_bearer_joins_the_query_as_a_key_or_a_token() {
        let jwt = "e30.e30.c2ln";
        assert_eq!(
            query_with_bearer(Some("a=1".into()), &auth("Bearer k3y"), true).unwrap(),
            "a=1&key=k3y"
        );
        assert_eq!(
            query_with_bearer(None, &auth(&format!("Bearer {jwt}")), true).unwrap(),
            format!("token={jwt}")
        );
        assert_eq!(
            query_with_bearer(None, &auth("Bearer k3y"), false).unwrap(),
            "token=k3y"
        );
        assert_eq!(
            query_with_bearer(None, &HeaderMap::new(), true).unwrap(),
            ""
        );
        for bad in [
            "Basic Zm9vOmJhcg==",
            "Bearer ",
            "Bearer a&key=b",
            "Bearer a b",
        ] {
            assert!(query_with_bearer(None, &auth(bad), true).is_err(), "{bad}");
        }
    }
}
