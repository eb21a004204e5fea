//! The one HTTP listener: LL-HLS, WebRTC signalling, the API and the web
//! console. CORS, metrics and health live here; each part of the data
//! flow contributes its routes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method};
use axum::response::Html;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;

use crate::shutdown::Shutdown;

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
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers(tower_http::cors::Any)
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

/// The web console (files in `web_dir`) for every path no route takes.
pub fn console(routes: Router, web_dir: &Path) -> Router {
    if web_dir.join("index.html").is_file() {
        tracing::info!(dir = %web_dir.display(), "web console at /");
        routes.fallback_service(ServeDir::new(web_dir))
    } else {
        tracing::warn!(dir = %web_dir.display(), "web console not built (npm --prefix web ci && npm --prefix web run build)");
        routes.route("/", get(|| std::future::ready(Html(NOT_BUILT))))
    }
}

/// Adds the server-wide routes and layers to the data-flow routes.
pub fn app(routes: Router, cors_origins: &[String]) -> Router {
    let metrics = metrics_handle();
    routes
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route("/healthz", get(|| std::future::ready("ok\n")))
        .layer(cors(cors_origins))
}

const NOT_BUILT: &str = "<!doctype html><title>streamd</title><p>streamd is running. \
The web console is not built: run <code>npm --prefix web ci &amp;&amp; npm --prefix web run build</code> \
(scripts/run.sh does), or set <code>[http] web_dir</code>. The API is at <code>/api</code> \
(<a href=\"/api/openapi.json\">OpenAPI</a>).</p>";

pub struct HttpServer {
    listener: TcpListener,
}

impl HttpServer {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<HttpServer> {
        Ok(HttpServer {
            listener: TcpListener::bind(addr).await?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then lets requests in flight finish.
    pub async fn run(self, app: Router, mut shutdown: Shutdown) -> std::io::Result<()> {
        // Handlers see the peer's address (admission webhooks report it).
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
    }
}
