//! The one admission path. Every way in (RTMP publish, WebRTC and LL-HLS
//! playback; WHIP and SRT later) asks [`Access::admit`] and gets either an
//! [`Admitted`] (the final stream path and how long the session may last; a
//! guard that tells an admission backend when the session ends) or a
//! [`Refusal`] saying why. A protocol only maps a refusal onto its own answer
//! (an RTMP status, an HTTP status, OME's signalling error).
//!
//! The sequence, in order:
//! 1. publish: the stream key or a publish token (which may name the stream:
//!    OBS's key field holding the key alone); play: a private stream's
//!    playback token;
//! 2. an OME admission backend, when configured: it may refuse, move a
//!    publish elsewhere (`new_url`), or limit the session (`lifetime`);
//! 3. the final name must be a valid stream path.
//!
//! LL-HLS has no session: its admission answers are kept per client address,
//! stream and credential (bounded, least recently used first out) for their
//! lifetime, so parts cost no backend call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::admission::{self, Admission, Decision, Direction};
use super::{Auth, AuthError};
use crate::bus::StreamPath;
use crate::store::Store;

/// LL-HLS admission answers kept at most.
const MAX_LLHLS_ADMISSIONS: usize = 100_000;
/// How long an LL-HLS admission is kept when the answer gives no lifetime.
const LLHLS_KEEP: Duration = Duration::from_secs(60);
/// How long an LL-HLS refusal is kept (a player retries; the backend is not
/// asked at every retry).
const LLHLS_REFUSAL_KEEP: Duration = Duration::from_secs(5);

/// An LL-HLS admission answer's key: client address, stream, credential.
type LlhlsKey = (Option<std::net::IpAddr>, String, String);

/// The store, the tokens and the admission backend: what every way in asks
/// before serving.
pub struct Access {
    pub store: Arc<Store>,
    pub auth: Auth,
    /// OME's AdmissionWebhooks, when configured.
    pub admission: Option<Arc<Admission>>,
    llhls: Mutex<crate::cache::Lru<LlhlsKey, bool>>,
    transcoding: TranscodeSlots,
    /// Set when the server drains: requests that would open a session are
    /// refused ([`Refusal::Draining`]); sessions open keep going.
    draining: std::sync::atomic::AtomicBool,
    /// A cluster edge: viewers only, publishers go to origins.
    edge: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rtmp,
    /// SRT ingest (MPEG-TS).
    Srt,
    /// WebRTC ingest (WHIP): OME calls it `webrtc`, incoming.
    Whip,
    WebRtc,
    LlHls,
}

impl Protocol {
    /// OME's name for it, in admission requests.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Srt => "srt",
            Protocol::Whip | Protocol::WebRtc => "webrtc",
            Protocol::LlHls => "llhls",
        }
    }

    fn direction(self) -> Direction {
        match self {
            Protocol::Rtmp | Protocol::Srt | Protocol::Whip => Direction::Incoming,
            Protocol::WebRtc | Protocol::LlHls => Direction::Outgoing,
        }
    }
}

/// Who asks, as far as the connection tells.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub addr: Option<SocketAddr>,
    /// The address a proxy reports (X-Forwarded-For, X-Real-IP).
    pub real_ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Client {
    /// The client of an HTTP request: the peer's address (the HTTP server
    /// puts it in the request), what a trusted proxy forwards, and the
    /// user agent (its first 256 characters).
    pub fn of<B>(req: &axum::http::Request<B>) -> Client {
        let addr = req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Client::from_headers(addr, req.headers())
    }

    /// The peer alone, without what its headers say: for a request no
    /// admission backend is told of.
    pub fn peer<B>(req: &axum::http::Request<B>) -> Client {
        Client {
            addr: req
                .extensions()
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            real_ip: None,
            user_agent: None,
        }
    }

    /// As [`of`](Self::of), from the peer's address and the headers.
    pub fn from_headers(addr: Option<SocketAddr>, headers: &axum::http::HeaderMap) -> Client {
        Client {
            addr,
            real_ip: crate::http::real_ip(headers).map(str::to_owned),
            user_agent: headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|h| h.to_str().ok())
                .map(|s| s.chars().take(256).collect()),
        }
    }

    /// The client's address: what a trusted proxy forwards (the listener
    /// keeps those headers only from `http.trusted_proxies`), else the
    /// peer's.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.real_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .or(self.addr.map(|a| a.ip()))
    }
}

/// One request to publish or play.
#[derive(Debug, Clone)]
pub struct AccessRequest {
    pub protocol: Protocol,
    pub app: String,
    /// The stream as asked for: for a publish, possibly a stream key.
    pub stream: String,
    /// What followed `?` (`key=`, `token=`).
    pub query: Option<String>,
    /// The URL the client used, as an admission backend is told it (a
    /// way in may leave it empty, and the client's headers out, when
    /// there is no backend: `Access::admission`).
    pub url: String,
    pub client: Client,
    /// Whether this request opens a session: a publish, a WebRTC offer, an
    /// LL-HLS master playlist (a player starting). While the server drains,
    /// these are refused and the rest (sessions already open) admitted.
    pub new_session: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("invalid stream name: {0}")]
    BadName(String),
    #[error(transparent)]
    Auth(AuthError),
    #[error("refused by the admission webhook: {0:.200}")]
    Denied(String),
    /// A capacity limit of this server is reached.
    #[error("the server is full: {0}")]
    Full(String),
    /// The server is shutting down: try another node.
    #[error("the server is shutting down: try another node")]
    Draining,
}

/// A request let in: where to, for how long. Dropping it tells an admission
/// backend the session ended.
pub struct Admitted {
    pub path: StreamPath,
    /// A private managed stream (playback needed a token): responses must
    /// not be kept by shared caches.
    pub private: bool,
    /// When an admission backend's `lifetime` ends the session.
    pub until: Option<tokio::time::Instant>,
    closing: Option<Closing>,
    /// A publisher's transcoding slot, while it publishes.
    transcoding: Option<Slot>,
}

/// Streams that may be transcoded at once.
struct TranscodeSlots {
    config: crate::config::TranscodeConfig,
    limit: usize,
    used: Arc<AtomicUsize>,
}

/// One transcoded stream's slot, freed on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl TranscodeSlots {
    /// A slot for a publisher to `app`: None if the app is not transcoded,
    /// an error if every slot is taken.
    fn take(&self, app: &str) -> Result<Option<Slot>, Refusal> {
        if !self.config.enabled_for(app) {
            return Ok(None);
        }
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Some(Slot(self.used.clone()))),
            Err(n) => Err(Refusal::Full(format!(
                "{n} streams are being transcoded (transcode.max_streams)"
            ))),
        }
    }
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("path", &self.path)
            .field("private", &self.private)
            .field("until", &self.until)
            .field("backend", &self.closing.is_some())
            .field("transcoding", &self.transcoding.is_some())
            .finish()
    }
}

struct Closing {
    admission: Arc<Admission>,
    protocol: Protocol,
    url: String,
    client: Client,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(c) = &self.closing {
            c.admission
                .closing(&backend_request(c.protocol, &c.url, &c.client));
        }
    }
}

fn backend_request<'a>(
    protocol: Protocol,
    url: &'a str,
    client: &'a Client,
) -> admission::Request<'a> {
    admission::Request {
        direction: protocol.direction(),
        protocol: protocol.name(),
        url,
        client: client.addr,
        real_ip: client.real_ip.as_deref(),
        user_agent: client.user_agent.as_deref(),
    }
}

impl Access {
    /// `transcode` says which apps are transcoded and how many streams may
    /// be at once (publishers beyond are refused here).
    pub fn new(
        store: Arc<Store>,
        auth: Auth,
        admission: Option<Arc<Admission>>,
        transcode: crate::config::TranscodeConfig,
    ) -> Access {
        Access {
            store,
            auth,
            admission,
            llhls: Mutex::new(crate::cache::Lru::new(MAX_LLHLS_ADMISSIONS)),
            transcoding: TranscodeSlots {
                limit: transcode.stream_limit(),
                config: transcode,
                used: Arc::default(),
            },
            draining: Default::default(),
            edge: Default::default(),
        }
    }

    /// This node is a cluster edge: publishers are refused (they belong on
    /// an origin), as a full server refuses them.
    pub fn refuse_publishers(&self) {
        self.edge.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on, requests that open a session are refused.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Decides `r`. See the module's documentation for the sequence.
    pub async fn admit(&self, r: AccessRequest) -> Result<Admitted, Refusal> {
        if r.new_session && self.is_draining() {
            return Err(Refusal::Draining);
        }
        match r.protocol.direction() {
            Direction::Incoming if self.edge.load(std::sync::atomic::Ordering::SeqCst) => Err(
                Refusal::Full("this node is a cluster edge: publish to an origin".into()),
            ),
            Direction::Incoming => self.admit_publish(r).await,
            Direction::Outgoing => self.admit_play(r).await,
        }
    }

    async fn admit_publish(&self, r: AccessRequest) -> Result<Admitted, Refusal> {
        let name = self
            .auth
            .authorize_publish(&self.store, &r.app, &r.stream, r.query.as_deref())
            .await
            .map_err(Refusal::Auth)?;
        let (mut app, mut name, mut until, mut closing) = (r.app, name, None, None);
        if let Some(adm) = &self.admission {
            match adm
                .opening(&backend_request(r.protocol, &r.url, &r.client))
                .await
            {
                Decision::Allowed { new_url, lifetime } => {
                    if let Some((a, n)) = new_url.as_deref().and_then(app_and_stream) {
                        (app, name) = (a, n);
                    }
                    until = lifetime.map(|l| tokio::time::Instant::now() + l);
                    closing = Some(Closing {
                        admission: adm.clone(),
                        protocol: r.protocol,
                        url: r.url,
                        client: r.client,
                    });
                }
                Decision::Denied(reason) => return Err(Refusal::Denied(reason)),
            }
        }
        match StreamPath::new(&app, &name) {
            Ok(path) => {
                let mut admitted = Admitted {
                    path,
                    private: false,
                    until,
                    closing,
                    transcoding: None,
                };
                // Refused for capacity after a backend let it open: the
                // guard's drop tells the backend it closed.
                admitted.transcoding = self.transcoding.take(admitted.path.app())?;
                Ok(admitted)
            }
            Err(e) => {
                // The backend admitted a session that ends here: it hears so.
                if let Some(c) = &closing {
                    c.admission
                        .closing(&backend_request(c.protocol, &c.url, &c.client));
                }
                Err(Refusal::BadName(e.to_string()))
            }
        }
    }

    async fn admit_play(&self, r: AccessRequest) -> Result<Admitted, Refusal> {
        let path =
            StreamPath::new(&r.app, &r.stream).map_err(|e| Refusal::BadName(e.to_string()))?;
        let token = crate::http::token_param(r.query.as_deref());
        let private = self.playback(&path, token).await.map_err(Refusal::Auth)?;
        let Some(adm) = &self.admission else {
            return Ok(Admitted {
                path,
                private,
                until: None,
                closing: None,
                transcoding: None,
            });
        };
        if r.protocol == Protocol::LlHls {
            // Per client (behind a trusted proxy, the one it forwards),
            // stream and credential: a new token is a new question.
            let key = (
                r.client.ip(),
                path.to_string(),
                token.unwrap_or_default().to_owned(),
            );
            let now = Instant::now();
            let cached = self.llhls.lock().expect("admission cache").get(&key, now);
            let allowed = match cached {
                Some(allowed) => allowed,
                None => {
                    let decision = adm
                        .opening(&backend_request(r.protocol, &r.url, &r.client))
                        .await;
                    let (allowed, keep) = match &decision {
                        Decision::Allowed { lifetime, .. } => {
                            (true, lifetime.unwrap_or(LLHLS_KEEP))
                        }
                        Decision::Denied(_) => (false, LLHLS_REFUSAL_KEEP),
                    };
                    self.llhls
                        .lock()
                        .expect("admission cache")
                        .insert(key, allowed, now + keep);
                    if let Decision::Denied(reason) = decision {
                        return Err(Refusal::Denied(reason));
                    }
                    allowed
                }
            };
            return if allowed {
                Ok(Admitted {
                    path,
                    private,
                    until: None,
                    closing: None,
                    transcoding: None,
                })
            } else {
                Err(Refusal::Denied("denied (cached)".into()))
            };
        }
        match adm
            .opening(&backend_request(r.protocol, &r.url, &r.client))
            .await
        {
            Decision::Allowed { lifetime, .. } => Ok(Admitted {
                path,
                private,
                transcoding: None,
                until: lifetime.map(|l| tokio::time::Instant::now() + l),
                closing: Some(Closing {
                    admission: adm.clone(),
                    protocol: r.protocol,
                    url: r.url,
                    client: r.client,
                }),
            }),
            Decision::Denied(reason) => Err(Refusal::Denied(reason)),
        }
    }

    /// Whether `token` may play `path`: yes for a stream that is not a
    /// private managed one; else a playback token for it is needed. `Ok`
    /// says whether the stream is private.
    /// Whether `path` is a private managed stream (its playback needs a
    /// token).
    pub async fn is_private(&self, path: &StreamPath) -> Result<bool, AuthError> {
        let record = self
            .store
            .lookup(path.app(), path.stream())
            .await
            .map_err(|e| AuthError::Storage(e.to_string()))?;
        Ok(record.is_some_and(|r| r.is_private))
    }

    pub async fn playback(
        &self,
        path: &StreamPath,
        token: Option<&str>,
    ) -> Result<bool, AuthError> {
        if self.is_private(path).await? {
            self.auth.check_playback(token, path).map(|()| true)
        } else {
            Ok(false)
        }
    }
}

/// The app and stream an admission `new_url` names (its last two path
/// segments), if valid.
pub fn app_and_stream(url: &str) -> Option<(String, String)> {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let mut segments = path.rsplit('/').filter(|s| !s.is_empty());
    let stream = segments.next()?;
    let app = segments.next()?;
    StreamPath::new(app, stream)
        .ok()
        .map(|_| (app.to_owned(), stream.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_url_names_app_and_stream() {
        assert_eq!(
            app_and_stream("rtmp://host:1935/app2/stream2?x=1"),
            Some(("app2".into(), "stream2".into()))
        );
        assert_eq!(
            app_and_stream("rtmp://host/only"),
            Some(("host".into(), "only".into()))
        );
        assert_eq!(app_and_stream("rtmp://host/a/../.."), None);
        assert_eq!(app_and_stream(""), None);
    }
}
