//! streamd's configuration: one serde tree read from TOML.
//!
//! Every section has defaults that run out of the box (`streamd` with no
//! `--config` uses them), unknown keys are errors that name the key, and
//! [`Config::validate`] names the key of any value out of range. The shipped
//! `config/streamd.toml` documents each key and is parsed by a test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub rtmp: RtmpConfig,
    pub http: HttpConfig,
    pub bus: BusConfig,
    pub llhls: LlhlsConfig,
    pub transcode: TranscodeConfig,
    pub webrtc: WebRtcConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub webhooks: WebhookConfig,
    pub admission: AdmissionConfig,
    pub record: RecordConfig,
}

/// Which renditions a recording keeps.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecordRenditions {
    /// The top video rendition (the source, or the ladder's first rung)
    /// and audio.
    Top,
    /// Every rendition LL-HLS serves: an ABR VOD.
    All,
}

/// Recording: every live stream archived to a store and played back as
/// HLS VOD (record/).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Record every stream (apps may say otherwise in `apps`).
    pub enabled: bool,
    /// Where recordings go: `gs://BUCKET[/PREFIX]`, `s3://BUCKET[/PREFIX]`
    /// or `file:///DIR`; empty: `file://{data_dir}/recordings`, or
    /// `gs://$STORAGE_BUCKET` when that variable is set.
    pub location: String,
    /// An S3-compatible server's URL (MinIO and the like) for `s3://`.
    pub s3_endpoint: String,
    /// S3 credentials and region; empty: from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (or the instance's role).
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    pub s3_region: String,
    /// A GCS service account's JSON key file; empty: the environment's
    /// (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`), else
    /// the metadata server (GKE Workload Identity).
    pub gcs_credentials: PathBuf,
    /// Where segments wait for upload; empty: `{data_dir}/spool`.
    pub spool_dir: PathBuf,
    /// The most the spool may hold (bytes). A store outage grows it; at
    /// the budget, new segments are not recorded (logged and counted)
    /// until uploads make room. A warning is logged at 80%.
    pub spool_budget: u64,
    /// Archive segments are cut at the first live segment boundary at
    /// least this far into them.
    #[serde(with = "humantime_serde")]
    pub segment_target: Duration,
    /// `top` or `all`.
    pub renditions: RecordRenditions,
    /// Per app: `[record.apps.NAME] enabled = false`, `renditions = "all"`.
    pub apps: BTreeMap<String, AppRecordConfig>,
    /// This node's name in the journal (a node uploads and recovers only
    /// its own spool); empty: the host name.
    pub node: String,
    /// Uploads in flight at once.
    pub upload_concurrency: usize,
    /// Recordings older than this are deleted (objects and all); 0: kept.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// VOD segments already uploaded are answered with a redirect to a
    /// URL signed for this long (GCS, S3), so the store serves them; 0:
    /// streamd serves them.
    #[serde(with = "humantime_serde")]
    pub signed_urls: Duration,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppRecordConfig {
    pub enabled: Option<bool>,
    pub renditions: Option<RecordRenditions>,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            enabled: true,
            location: String::new(),
            s3_endpoint: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_region: String::new(),
            gcs_credentials: PathBuf::new(),
            spool_dir: PathBuf::new(),
            spool_budget: 20 << 30,
            segment_target: Duration::from_secs(6),
            renditions: RecordRenditions::Top,
            apps: BTreeMap::new(),
            node: String::new(),
            upload_concurrency: 4,
            max_age: Duration::ZERO,
            signed_urls: Duration::ZERO,
        }
    }
}

impl RecordConfig {
    /// Whether streams of `app` are recorded, and which renditions.
    pub fn rule_for(&self, app: &str) -> Option<RecordRenditions> {
        let a = self.apps.get(app);
        let enabled = a.and_then(|a| a.enabled).unwrap_or(self.enabled);
        enabled.then(|| a.and_then(|a| a.renditions).unwrap_or(self.renditions))
    }

    pub fn spool_dir(&self, data_dir: &Path) -> PathBuf {
        if self.spool_dir.as_os_str().is_empty() {
            data_dir.join("spool")
        } else {
            self.spool_dir.clone()
        }
    }

    /// The location URL, with the embedded default.
    pub fn location_url(&self, data_dir: &Path) -> String {
        if !self.location.is_empty() {
            return self.location.clone();
        }
        let dir = std::path::absolute(data_dir.join("recordings"))
            .unwrap_or_else(|_| data_dir.join("recordings"));
        format!("file://{}", dir.display())
    }

    /// This node's name.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "streamd".to_owned())
    }
}

/// OME's AdmissionWebhooks (see OME-COMPAT.md): a backend that decides who
/// may publish and play.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// The backend's URL; empty: off.
    pub url: String,
    /// The HMAC-SHA1 key of `X-OME-Signature`.
    pub secret: String,
    /// An answer later than this denies.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            url: String::new(),
            secret: String::new(),
            timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where stream events are POSTed (http:// or https://); none: off.
    pub urls: Vec<String>,
    /// HMAC-SHA256 key of the `X-Streamd-Signature` header (at least 32
    /// bytes, never the JWT secret); empty: a key derived from the JWT
    /// secret, which `streamd webhook-secret` prints. A receiver holding it
    /// cannot mint tokens.
    pub secret: String,
    /// Tries per delivery (the first and the retries).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time (at most 60 s).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// A receiver that has not answered in this time has failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often changed viewer counts are sent.
    #[serde(with = "humantime_serde")]
    pub viewers_interval: Duration,
    /// At shutdown, queued events (`stream.stopped` for the streams live
    /// then) get this long to be delivered.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Events waiting for delivery, at most; more are dropped and counted
    /// (`streamd_webhooks_dropped_total`), so media never waits.
    pub queue: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            secret: String::new(),
            attempts: 5,
            retry_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
            viewers_interval: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            queue: 1024,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Where streamd keeps its state: the SQLite database (unless `url`
    /// says otherwise) and a generated JWT secret (if none is given).
    pub data_dir: PathBuf,
    /// `postgres://user:pass@host/db` when several nodes share state;
    /// empty: SQLite at `{data_dir}/streamd.db`.
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            data_dir: PathBuf::from("data"),
            url: String::new(),
        }
    }
}

impl DatabaseConfig {
    /// The database URL, SQLite in the data directory by default.
    pub fn resolved_url(&self) -> String {
        if self.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("streamd.db").display()
            )
        } else {
            self.url.clone()
        }
    }
}

/// Who may publish.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PublishPolicy {
    /// Only streams created through the API, with their key or a publish
    /// token.
    Key,
    /// Any name (as OME without access control); streams created through
    /// the API still need their key.
    Open,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret of every token (API, publish, playback). The
    /// `JWT_SECRET` environment variable overrides it; with neither, one is
    /// generated into `{data_dir}/jwt_secret` at first start.
    pub jwt_secret: String,
    pub publish: PublishPolicy,
    /// Lifetime of playback tokens minted by the API (at most).
    #[serde(with = "humantime_serde")]
    pub playback_token_ttl: Duration,
    /// The application streams created through the API live in
    /// (`rtmp://host:1935/{app}/{id}`).
    pub app: String,
    /// Which tokens the API accepts: `scoped` (default) only tokens with
    /// `scope: "api"` (what `streamd token` mints); `any` also tokens
    /// without a scope, as the seed's backend minted them with
    /// `JWT_SECRET`. Publish and playback tokens are refused either way.
    pub api_tokens: ApiTokens,
    /// When set, every token must carry this `aud` (and tokens streamd
    /// mints do).
    pub audience: String,
    /// When set, every token must carry this `iss` (and tokens streamd
    /// mints do).
    pub issuer: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: String::new(),
            publish: PublishPolicy::Key,
            playback_token_ttl: Duration::from_secs(3600),
            app: "live".into(),
            api_tokens: ApiTokens::Scoped,
            audience: String::new(),
            issuer: String::new(),
        }
    }
}

/// Which tokens the API accepts (see [`AuthConfig::api_tokens`]).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApiTokens {
    Scoped,
    Any,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Where publishers connect. Port 0 picks a free port (logged at start).
    pub listen: SocketAddr,
    /// Connections beyond this are closed at accept.
    pub max_connections: usize,
    /// Connections from one client address beyond this are closed at accept.
    pub max_connections_per_ip: usize,
    /// A client must finish the RTMP handshake within this time.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A client must ask to publish within this time of connecting (RTMP
    /// serves publishers only).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            listen: ([0, 0, 0, 0], 1935).into(),
            max_connections: 1000,
            max_connections_per_ip: 32,
            handshake_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The one HTTP listener: LL-HLS, WebRTC signalling, the API and the
    /// console. Port 0 picks a free port (logged at start).
    pub listen: SocketAddr,
    /// The built web console (`npm --prefix web ci && npm --prefix web run
    /// build`), served at `/`.
    pub web_dir: PathBuf,
    /// Connections beyond this are closed at accept.
    pub max_connections: usize,
    /// Connections from one client address beyond this are closed at
    /// accept (players behind one NAT share an address; behind a reverse
    /// proxy every client does: raise it there).
    pub max_connections_per_ip: usize,
    /// A request's headers must arrive within this time of the connection
    /// opening or the previous response ending; an idle keep-alive
    /// connection is closed after it too.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// At shutdown, requests in flight get this long to finish; then their
    /// connections are closed.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For`
    /// and `X-Real-IP` are believed; from anyone else those headers are
    /// dropped on arrival.
    pub trusted_proxies: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: ([0, 0, 0, 0], 3333).into(),
            web_dir: PathBuf::from("web/dist"),
            max_connections: 10_000,
            max_connections_per_ip: 500,
            header_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// How long a stream whose publisher dropped waits for it to come back
    /// before it ends. Viewers see a pause, then the stream continues.
    #[serde(with = "humantime_serde")]
    pub reconnect_grace: Duration,
    /// Media kept per track for consumers that fall behind.
    #[serde(with = "humantime_serde")]
    pub retention_window: Duration,
    /// Hard cap on buffered bytes per track.
    pub retention_max_bytes: usize,
    /// Broadcasts live at once; a publish beyond is refused (RTMP
    /// `NetStream.Publish.Failed`, "the server is full").
    pub max_broadcasts: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            max_broadcasts: 1000,
            reconnect_grace: Duration::from_secs(10),
            retention_window: Duration::from_secs(10),
            retention_max_bytes: 64 << 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LlhlsConfig {
    /// Aim for partial segments of about this duration. The advertised
    /// PART-TARGET is the nearest whole number of frames at or below it.
    #[serde(with = "humantime_serde")]
    pub part_target: Duration,
    /// A segment ends at the first keyframe at least this far into it.
    #[serde(with = "humantime_serde")]
    pub segment_target: Duration,
    /// Complete segments listed in each media playlist.
    pub segments_kept: usize,
    /// Origins allowed by CORS: `["*"]`, or a list such as
    /// `["https://example.com"]`.
    pub cors_origins: Vec<String>,
    /// How long a finished stream's playlists (with EXT-X-ENDLIST) stay
    /// available so players see the end.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
}

impl Default for LlhlsConfig {
    fn default() -> Self {
        LlhlsConfig {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(1),
            segments_kept: 10,
            cors_origins: vec!["*".to_owned()],
            linger: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Serve WebRTC playback (signalling on the HTTP listener).
    pub enabled: bool,
    /// The UDP socket of the first media engine. Each engine (one event
    /// loop on its own socket, see `engines`) takes the next port: open
    /// `port ..= port + engines - 1` (as OME's 10000-10004). Port 0 gives
    /// every engine a free port (logged at start).
    pub udp_listen: SocketAddr,
    /// Media engines, each driving its share of the viewers on its own
    /// socket and thread of work; 0 = one per CPU core.
    pub engines: usize,
    /// Also offer a passive ICE-TCP candidate (RFC 6544), for viewers whose
    /// network blocks UDP; `?transport=tcp` on the signalling URL offers
    /// it alone.
    pub ice_tcp: bool,
    /// The ICE-TCP listener (OME's TURN port by default, so existing
    /// firewall rules for 3478/tcp keep working).
    pub tcp_listen: SocketAddr,
    /// Addresses put in the ICE candidates offered to viewers: IPs, or
    /// `"*"` for every address of this host's interfaces. The environment
    /// variable `STREAMD_HOST_IP` (or OME's `OME_HOST_IP`), a comma
    /// separated list, replaces this.
    pub candidate_ips: Vec<String>,
    /// A viewer that sends no STUN for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub ice_timeout: Duration,
    /// WebSocket ping interval.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A viewer starts on the largest rendition at or below this bitrate,
    /// then adapts to its bandwidth.
    pub start_bitrate_kbps: u32,
    /// Viewers beyond this many are refused (503 in the signalling).
    pub max_viewers: usize,
    /// Offers a client address may hold unanswered at once; more are
    /// refused (429 in the signalling). Each offer holds an ICE/DTLS session
    /// until it is answered or `ice_timeout` ends it.
    pub max_pending_offers_per_ip: usize,
    /// Video RTP packets each viewer keeps for retransmission on NACK.
    pub nack_buffer_packets: usize,
}

impl WebRtcConfig {
    /// `engines`, with 0 resolved to the number of CPU cores.
    pub fn engine_count(&self) -> usize {
        match self.engines {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            enabled: true,
            udp_listen: ([0, 0, 0, 0], 10000).into(),
            engines: 0,
            ice_tcp: true,
            tcp_listen: ([0, 0, 0, 0], 3478).into(),
            candidate_ips: vec!["*".to_owned()],
            ice_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            start_bitrate_kbps: 2500,
            max_viewers: 10_000,
            max_pending_offers_per_ip: 16,
            nack_buffer_packets: 512,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TranscodeConfig {
    /// Transcode every stream into the ladder (apps may opt out below).
    pub enabled: bool,
    /// Encoded rungs get an IDR at every multiple of this (by PTS from the
    /// stream's start), whatever the source's keyframe interval.
    #[serde(with = "humantime_serde")]
    pub keyframe_interval: Duration,
    /// Publish an Opus 48 kHz stereo track for WebRTC.
    pub opus: bool,
    pub opus_bitrate_kbps: u32,
    /// The rungs, largest first.
    pub ladder: Vec<RungConfig>,
    /// Per-app overrides: `[transcode.apps.raw] enabled = false`.
    pub apps: BTreeMap<String, AppTranscodeConfig>,
    /// Streams transcoded at once; a publisher beyond it is refused
    /// (NetStream.Publish.Failed). 0: one per two CPU cores, at least one
    /// (the default 1080p ladder takes about two cores in real time).
    pub max_streams: usize,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Names the rung's track and playlist: `[a-z0-9_-]`.
    pub name: String,
    /// The box the picture is fitted into, keeping its aspect ratio.
    pub width: u32,
    pub height: u32,
    /// Target and VBV maximum (kbit/s).
    pub bitrate_kbps: u32,
    /// Frames above this rate are dropped (0: keep the source's rate).
    #[serde(default = "default_max_fps")]
    pub max_fps: f64,
    /// An x264 preset.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// baseline, main or high.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Pass the source through instead of encoding when it already fits
    /// (H.264, no larger than the box, no higher bitrate). Top rung only.
    #[serde(default)]
    pub bypass: bool,
    /// x264 threads for this rung (0: one per core for the largest encoded
    /// rung, one for the others).
    #[serde(default)]
    pub threads: usize,
}

fn default_max_fps() -> f64 {
    60.0
}
fn default_preset() -> String {
    "veryfast".to_owned()
}
fn default_profile() -> String {
    "high".to_owned()
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppTranscodeConfig {
    pub enabled: bool,
}

impl RungConfig {
    pub fn new(name: &str, width: u32, height: u32, bitrate_kbps: u32) -> RungConfig {
        RungConfig {
            name: name.to_owned(),
            width,
            height,
            bitrate_kbps,
            max_fps: default_max_fps(),
            preset: default_preset(),
            profile: default_profile(),
            bypass: false,
            threads: 0,
        }
    }
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        TranscodeConfig {
            enabled: true,
            keyframe_interval: Duration::from_secs(2),
            opus: true,
            opus_bitrate_kbps: 128,
            ladder: vec![
                RungConfig::new("1080p", 1920, 1080, 4500),
                RungConfig::new("720p", 1280, 720, 2500),
                RungConfig::new("480p", 854, 480, 1200),
                RungConfig::new("360p", 640, 360, 600),
            ],
            apps: BTreeMap::new(),
            max_streams: 0,
        }
    }
}

impl TranscodeConfig {
    /// `max_streams`, with 0 resolved from the CPU cores.
    pub fn stream_limit(&self) -> usize {
        match self.max_streams {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }

    /// Whether streams of `app` are transcoded (else passed through).
    pub fn enabled_for(&self, app: &str) -> bool {
        self.apps.get(app).map_or(self.enabled, |a| a.enabled) && !self.ladder.is_empty()
    }
}

/// The shortest secret accepted for signing tokens or webhooks (HS256 keys
/// shorter than its output are guessable offline from one signed token).
pub const MIN_SECRET_LEN: usize = 32;

/// x264's presets, fastest first.
pub const X264_PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
];

impl Config {
    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if crate::bus::StreamPath::new(&self.auth.app, "x").is_err() {
            return invalid(
                "auth.app",
                format!("{:?} is not a valid app name", self.auth.app),
            );
        }
        for url in &self.webhooks.urls {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.parse::<axum::http::Uri>().is_err()
            {
                return invalid("webhooks.urls", format!("{url:?} is not an http(s) URL"));
            }
        }
        if !self.admission.url.is_empty()
            && (!(self.admission.url.starts_with("http://")
                || self.admission.url.starts_with("https://"))
                || self.admission.url.parse::<axum::http::Uri>().is_err())
        {
            return invalid(
                "admission.url",
                format!("{:?} is not an http(s) URL", self.admission.url),
            );
        }
        if self.webhooks.attempts == 0 {
            return invalid("webhooks.attempts", "must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.webhooks.queue) {
            return invalid("webhooks.queue", "must be 1 to 1000000".into());
        }
        if self.webhooks.timeout.is_zero() || self.webhooks.viewers_interval.is_zero() {
            return invalid(
                "webhooks.timeout",
                "timeout and viewers_interval must be more than 0".into(),
            );
        }
        if self.auth.playback_token_ttl < Duration::from_secs(10) {
            return invalid("auth.playback_token_ttl", "must be at least 10s".into());
        }
        if !self.database.url.is_empty()
            && !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
            && !self.database.url.starts_with("sqlite:")
        {
            return invalid(
                "database.url",
                "must be postgres://…, sqlite:… or empty (SQLite in data_dir)".into(),
            );
        }
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < MIN_SECRET_LEN {
            return invalid(
                "auth.jwt_secret",
                format!("must be at least {MIN_SECRET_LEN} bytes (or empty: one is generated)"),
            );
        }
        if !self.webhooks.secret.is_empty() {
            if self.webhooks.secret.len() < MIN_SECRET_LEN {
                return invalid(
                    "webhooks.secret",
                    format!(
                        "must be at least {MIN_SECRET_LEN} bytes (or empty: one is derived from the JWT secret)"
                    ),
                );
            }
            if self.webhooks.secret == self.auth.jwt_secret {
                return invalid(
                    "webhooks.secret",
                    "must not be the JWT secret: a webhook receiver could mint tokens with it"
                        .into(),
                );
            }
        }
        if self.rtmp.max_connections == 0 {
            return invalid("rtmp.max_connections", "must be at least 1".into());
        }
        if self.http.max_connections == 0 {
            return invalid("http.max_connections", "must be at least 1".into());
        }
        if self.http.max_connections_per_ip == 0 {
            return invalid("http.max_connections_per_ip", "must be at least 1".into());
        }
        for p in &self.http.trusted_proxies {
            if let Err(e) = crate::net::IpBlock::parse(p) {
                return invalid("http.trusted_proxies", e);
            }
        }
        if self.http.header_timeout < Duration::from_millis(100) {
            return invalid("http.header_timeout", "must be at least 100ms".into());
        }
        if self.rtmp.max_connections_per_ip == 0 {
            return invalid("rtmp.max_connections_per_ip", "must be at least 1".into());
        }
        if self.rtmp.handshake_timeout.is_zero() {
            return invalid("rtmp.handshake_timeout", "must be more than 0".into());
        }
        if self.rtmp.publish_timeout < self.rtmp.handshake_timeout {
            return invalid(
                "rtmp.publish_timeout",
                "must be at least rtmp.handshake_timeout".into(),
            );
        }
        if self.rtmp.idle_timeout < Duration::from_secs(1) {
            return invalid("rtmp.idle_timeout", "must be at least 1s".into());
        }
        if self.bus.max_broadcasts == 0 {
            return invalid("bus.max_broadcasts", "must be at least 1".into());
        }
        if self.bus.retention_window < Duration::from_secs(1) {
            return invalid("bus.retention_window", "must be at least 1s".into());
        }
        if self.bus.retention_max_bytes < 1 << 20 {
            return invalid("bus.retention_max_bytes", "must be at least 1 MiB".into());
        }
        let r = &self.record;
        // record.location is read (and refused with its key named) when
        // recording starts: the parser is the recorder's.
        if !r.s3_endpoint.is_empty()
            && (!(r.s3_endpoint.starts_with("http://") || r.s3_endpoint.starts_with("https://"))
                || r.s3_endpoint.parse::<axum::http::Uri>().is_err())
        {
            return invalid(
                "record.s3_endpoint",
                format!("{:?} is not an http(s) URL", r.s3_endpoint),
            );
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&r.segment_target) {
            return invalid("record.segment_target", "must be between 1s and 60s".into());
        }
        if r.spool_budget < 1 << 20 {
            return invalid("record.spool_budget", "must be at least 1 MiB".into());
        }
        if !(1..=64).contains(&r.upload_concurrency) {
            return invalid("record.upload_concurrency", "must be 1 to 64".into());
        }
        if r.signed_urls > Duration::from_secs(7 * 86_400) {
            return invalid(
                "record.signed_urls",
                "must be at most 7 days (S3's limit)".into(),
            );
        }
        if !r.max_age.is_zero() && r.max_age < Duration::from_secs(60) {
            return invalid("record.max_age", "must be 0 (keep) or at least 1m".into());
        }
        let l = &self.llhls;
        if !(Duration::from_millis(50)..=Duration::from_secs(5)).contains(&l.part_target) {
            return invalid(
                "llhls.part_target",
                format!("must be between 50ms and 5s, got {:?}", l.part_target),
            );
        }
        if l.segment_target < l.part_target || l.segment_target > Duration::from_secs(60) {
            return invalid(
                "llhls.segment_target",
                format!(
                    "must be between llhls.part_target and 60s, got {:?}",
                    l.segment_target
                ),
            );
        }
        if !(3..=1000).contains(&l.segments_kept) {
            return invalid(
                "llhls.segments_kept",
                format!("must be between 3 and 1000, got {}", l.segments_kept),
            );
        }
        if l.cors_origins.is_empty() {
            return invalid(
                "llhls.cors_origins",
                "must list \"*\" or at least one origin".into(),
            );
        }
        for origin in &l.cors_origins {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && origin.bytes().all(|b| b.is_ascii_graphic()));
            if !ok {
                return invalid(
                    "llhls.cors_origins",
                    format!("{origin:?} is not \"*\" or an origin like \"https://example.com\""),
                );
            }
        }
        self.validate_transcode()?;
        self.validate_webrtc()
    }

    fn validate_webrtc(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let w = &self.webrtc;
        if w.engines > 64 {
            return invalid("webrtc.engines", format!("{} is more than 64", w.engines));
        }
        if w.udp_listen.port() != 0
            && usize::from(w.udp_listen.port()) + w.engine_count() - 1 > usize::from(u16::MAX)
        {
            return invalid(
                "webrtc.udp_listen",
                format!(
                    "port {} + {} engines runs past 65535",
                    w.udp_listen.port(),
                    w.engine_count()
                ),
            );
        }
        for ip in &w.candidate_ips {
            if ip != "*" && ip.parse::<std::net::IpAddr>().is_err() {
                return invalid(
                    "webrtc.candidate_ips",
                    format!("{ip:?} is not an IP address or \"*\""),
                );
            }
        }
        if w.enabled && w.candidate_ips.is_empty() {
            return invalid(
                "webrtc.candidate_ips",
                "must list at least one IP or \"*\"".into(),
            );
        }
        if !(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&w.ice_timeout) {
            return invalid(
                "webrtc.ice_timeout",
                format!("must be between 2s and 300s, got {:?}", w.ice_timeout),
            );
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&w.ping_interval) {
            return invalid(
                "webrtc.ping_interval",
                format!("must be between 1s and 300s, got {:?}", w.ping_interval),
            );
        }
        if !(50..=100_000).contains(&w.start_bitrate_kbps) {
            return invalid(
                "webrtc.start_bitrate_kbps",
                format!(
                    "must be between 50 and 100000, got {}",
                    w.start_bitrate_kbps
                ),
            );
        }
        if w.max_viewers == 0 {
            return invalid("webrtc.max_viewers", "must be at least 1".into());
        }
        if w.max_pending_offers_per_ip == 0 {
            return invalid(
                "webrtc.max_pending_offers_per_ip",
                "must be at least 1".into(),
            );
        }
        if !(64..=16_384).contains(&w.nack_buffer_packets) {
            return invalid(
                "webrtc.nack_buffer_packets",
                format!(
                    "must be between 64 and 16384, got {}",
                    w.nack_buffer_packets
                ),
            );
        }
        Ok(())
    }

    fn validate_transcode(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let t = &self.transcode;
        if !(Duration::from_millis(500)..=Duration::from_secs(10)).contains(&t.keyframe_interval) {
            return invalid(
                "transcode.keyframe_interval",
                format!(
                    "must be between 500ms and 10s, got {:?}",
                    t.keyframe_interval
                ),
            );
        }
        if !(6..=510).contains(&t.opus_bitrate_kbps) {
            return invalid(
                "transcode.opus_bitrate_kbps",
                format!("must be between 6 and 510, got {}", t.opus_bitrate_kbps),
            );
        }
        for (i, r) in t.ladder.iter().enumerate() {
            let name_ok = !r.name.is_empty()
                && r.name.len() <= 32
                && r.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                })
                && !["video", "audio", "opus"].contains(&r.name.as_str());
            if !name_ok {
                return invalid(
                    "transcode.ladder.name",
                    format!(
                        "{:?} must be 1-32 characters of a-z, 0-9, _ and -, and not video, audio or opus",
                        r.name
                    ),
                );
            }
            if t.ladder[..i].iter().any(|o| o.name == r.name) {
                return invalid(
                    "transcode.ladder.name",
                    format!("{:?} is used twice", r.name),
                );
            }
            let dim_ok = |d: u32| (16..=7680).contains(&d) && d.is_multiple_of(2);
            if !dim_ok(r.width) || !dim_ok(r.height) {
                return invalid(
                    "transcode.ladder.width",
                    format!(
                        "rung {:?}: {}x{} must be even and between 16 and 7680",
                        r.name, r.width, r.height
                    ),
                );
            }
            if let Some(prev) = i.checked_sub(1).map(|p| &t.ladder[p])
                && (r.width > prev.width || r.height > prev.height)
            {
                return invalid(
                    "transcode.ladder",
                    format!(
                        "rungs go largest first: {:?} is larger than {:?}",
                        r.name, prev.name
                    ),
                );
            }
            if !(50..=100_000).contains(&r.bitrate_kbps) {
                return invalid(
                    "transcode.ladder.bitrate_kbps",
                    format!("rung {:?}: must be between 50 and 100000", r.name),
                );
            }
            if !(r.max_fps == 0.0 || (1.0..=240.0).contains(&r.max_fps)) {
                return invalid(
                    "transcode.ladder.max_fps",
                    format!("rung {:?}: must be 0 or between 1 and 240", r.name),
                );
            }
            if !X264_PRESETS.contains(&r.preset.as_str()) {
                return invalid(
                    "transcode.ladder.preset",
                    format!("rung {:?}: {:?} is not an x264 preset", r.name, r.preset),
                );
            }
            if !["baseline", "main", "high"].contains(&r.profile.as_str()) {
                return invalid(
                    "transcode.ladder.profile",
                    format!("rung {:?}: must be baseline, main or high", r.name),
                );
            }
            if r.bypass && i > 0 {
                return invalid(
                    "transcode.ladder.bypass",
                    format!("rung {:?}: only the top rung may bypass", r.name),
                );
            }
            if r.threads > 16 {
                return invalid(
                    "transcode.ladder.threads",
                    format!("rung {:?}: at most 16", r.name),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no configs in {}", dir.display());
        // The documented file states the defaults, so a reader can trust it.
        let shipped = Config::load(&dir.join("streamd.toml")).unwrap();
        assert_eq!(shipped, Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[llhls]\npart_targte = \"200ms\"\n").unwrap_err();
        assert!(err.to_string().contains("part_targte"), "{err}");
        let err = Config::parse("[rtmpp]\n").unwrap_err();
        assert!(err.to_string().contains("rtmpp"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[llhls]\npart_target = \"10ms\"", "llhls.part_target"),
            (
                "[llhls]\nsegment_target = \"100ms\"",
                "llhls.segment_target",
            ),
            ("[llhls]\nsegments_kept = 1", "llhls.segments_kept"),
            (
                "[llhls]\ncors_origins = [\"example.com\"]",
                "llhls.cors_origins",
            ),
            ("[rtmp]\nmax_connections = 0", "rtmp.max_connections"),
            (
                "[rtmp]\nmax_connections_per_ip = 0",
                "rtmp.max_connections_per_ip",
            ),
            ("[rtmp]\npublish_timeout = \"1s\"", "rtmp.publish_timeout"),
            (
                "[[transcode.ladder]]\nname = \"Big\"\nwidth = 640\nheight = 360\nbitrate_kbps = 600",
                "transcode.ladder.name",
            ),
            (
                "[[transcode.ladder]]\nname = \"a\"\nwidth = 641\nheight = 360\nbitrate_kbps = 600",
                "transcode.ladder.width",
            ),
            (
                "[[transcode.ladder]]\nname = \"a\"\nwidth = 640\nheight = 360\nbitrate_kbps = 600\npreset = \"turbo\"",
                "transcode.ladder.preset",
            ),
            (
                "[[transcode.ladder]]\nname = \"a\"\nwidth = 640\nheight = 360\nbitrate_kbps = 600\n[[transcode.ladder]]\nname = \"b\"\nwidth = 1280\nheight = 720\nbitrate_kbps = 600",
                "transcode.ladder",
            ),
            (
                "[transcode]\nkeyframe_interval = \"100ms\"",
                "transcode.keyframe_interval",
            ),
            (
                "[webrtc]\ncandidate_ips = [\"my-host\"]",
                "webrtc.candidate_ips",
            ),
            ("[webrtc]\nice_timeout = \"1s\"", "webrtc.ice_timeout"),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let err = Config::parse("[rtmp]\nlisten = \"nonsense\"").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn port_zero_is_accepted() {
        let c = Config::parse("[rtmp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"")
            .unwrap();
        assert_eq!(c.rtmp.listen.port(), 0);
    }
}
