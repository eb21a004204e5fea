//! streamd's configuration: one serde tree read from TOML, then from the
//! environment.
//!
//! Every section has defaults that run out of the box (`streamd` with no
//! `--config` uses them), unknown keys are errors that name the key, and
//! each section's `validate` names the key of any value out of range. Any
//! key can also be set as `STREAMD_SECTION__KEY` (see [`Config::from_sources`]),
//! the way container platforms pass configuration. The shipped
//! `config/streamd.toml` documents each key and is parsed by a test.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod auth;
mod bus;
mod cluster;
mod database;
mod http;
mod llhls;
mod log;
mod ome_api;
mod record;
mod rtmp;
mod server;
mod srt;
mod transcode;
mod turn;
mod webhooks;
mod webrtc;
mod whip;

pub use auth::{AdmissionConfig, ApiTokens, AuthConfig, PublishPolicy};
pub use bus::BusConfig;
pub use cluster::{ClusterConfig, Role};
pub use database::DatabaseConfig;
pub use http::{HttpConfig, TlsConfig};
pub use llhls::LlhlsConfig;
pub use log::{LogConfig, LogFormat};
pub use ome_api::OmeApiConfig;
pub use record::{AppRecordConfig, RecordConfig, RecordRenditions};
pub use rtmp::RtmpConfig;
pub use server::ServerConfig;
pub use srt::SrtConfig;
pub use transcode::{AppTranscodeConfig, RungConfig, TranscodeConfig, X264_PRESETS};
pub use turn::TurnConfig;
pub use webhooks::WebhookConfig;
pub use webrtc::WebRtcConfig;
pub use whip::WhipConfig;

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
    /// A `STREAMD_…` variable that names no key or holds a bad value.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A value out of range that came from the environment.
    #[error("config key `{key}` (set by {var}): {reason}")]
    InvalidEnv {
        key: &'static str,
        var: String,
        reason: String,
    },
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub rtmp: RtmpConfig,
    pub srt: SrtConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    pub bus: BusConfig,
    pub llhls: LlhlsConfig,
    pub transcode: TranscodeConfig,
    pub webrtc: WebRtcConfig,
    pub whip: WhipConfig,
    pub turn: TurnConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub webhooks: WebhookConfig,
    pub admission: AdmissionConfig,
    pub record: RecordConfig,
    pub ome_api: OmeApiConfig,
    pub cluster: ClusterConfig,
}

/// The shortest secret accepted for signing tokens or webhooks (HS256 keys
/// shorter than its output are guessable offline from one signed token).
pub const MIN_SECRET_LEN: usize = 32;

/// Environment variables `STREAMD_SECTION__KEY` set configuration keys.
pub const ENV_PREFIX: &str = "STREAMD_";

/// Keys whose values `streamd config` does not print.
const SECRET_KEYS: &[&str] = &[
    "auth.jwt_secret",
    "webhooks.secret",
    "admission.secret",
    "record.s3_secret_access_key",
    "turn.secret",
    "srt.passphrase",
    "ome_api.access_token",
    "cluster.secret",
];

fn invalid(key: &'static str, reason: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid { key, reason })
}

/// The host's name (`HOSTNAME`, else `/etc/hostname`, else `streamd`):
/// a node's name when none is configured.
pub(crate) fn host_name() -> String {
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

fn is_http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<axum::http::Uri>().is_ok()
}

impl Config {
    /// Reads, parses and validates a TOML file (no environment).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_sources(Some(path), std::iter::empty())
    }

    /// Parses and validates TOML text (no environment).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config = deserialize(text, Path::new("<text>"))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration streamd runs with: the file (or the defaults),
    /// then every `STREAMD_SECTION__KEY` variable of `env` on top, in name
    /// order. `STREAMD_RTMP__LISTEN=0.0.0.0:1935` sets `[rtmp] listen`;
    /// deeper keys take more `__` (`STREAMD_RECORD__APPS__LIVE__ENABLED`).
    /// Names are matched in lower case. A value is taken as text where the
    /// key holds text (a list of text also takes `a,b,c`), otherwise as a
    /// TOML value (`5`, `true`, `["a"]`, `[{ name = "720p", … }]`). A
    /// variable that names no key or holds a bad value is an error that
    /// names the variable. Variables without `__` are not config keys
    /// (`STREAMD_HOST_IP` is read by WebRTC).
    pub fn from_sources(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?,
                path,
            ),
            None => (String::new(), Path::new("<defaults>")),
        };
        let mut config = deserialize(&text, origin)?;
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        vars.sort();
        if !vars.is_empty() {
            let mut table = text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::Parse {
                    path: origin.to_owned(),
                    message: e.to_string(),
                })?;
            let defaults =
                toml::Table::try_from(Config::default()).expect("the default config serializes");
            for (var, value) in &vars {
                apply_env(&mut table, &defaults, var, value)?;
                config = toml::Value::Table(table.clone()).try_into().map_err(
                    |e: toml::de::Error| ConfigError::Env {
                        var: var.clone(),
                        message: e.message().trim().to_owned(),
                    },
                )?;
            }
        }
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, reason } => match vars.iter().rev().find(|(var, _)| {
                let path = env_path(var).join(".");
                key == path || key.starts_with(&format!("{path}.")) || path.starts_with(key)
            }) {
                Some((var, _)) => ConfigError::InvalidEnv {
                    key,
                    var: var.clone(),
                    reason,
                },
                None => ConfigError::Invalid { key, reason },
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Every section's checks, then those across sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.log.validate()?;
        self.rtmp.validate()?;
        self.srt.validate()?;
        self.http.validate()?;
        self.tls.validate()?;
        self.bus.validate()?;
        self.llhls.validate()?;
        self.transcode.validate()?;
        self.webrtc.validate()?;
        self.whip.validate()?;
        self.turn.validate()?;
        self.database.validate()?;
        self.auth.validate()?;
        self.webhooks.validate()?;
        self.admission.validate()?;
        self.record.validate()?;
        self.ome_api.validate()?;
        self.cluster.validate(&self.database.url)?;
        if !self.webhooks.secret.is_empty() && self.webhooks.secret == self.auth.jwt_secret {
            return invalid(
                "webhooks.secret",
                "must not be the JWT secret: a webhook receiver could mint tokens with it".into(),
            );
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets replaced by
    /// `"<redacted>"` and the database password by `***`
    /// (`streamd config`).
    pub fn redacted_toml(&self) -> String {
        let mut table = toml::Table::try_from(self).expect("a config serializes");
        for key in SECRET_KEYS {
            let (section, name) = key.split_once('.').expect("section.key");
            if let Some(toml::Value::Table(s)) = table.get_mut(section)
                && let Some(v) = s.get_mut(name)
                && v.as_str().is_some_and(|v| !v.is_empty())
            {
                *v = toml::Value::String("<redacted>".into());
            }
        }
        if let Some(toml::Value::Table(db)) = table.get_mut("database")
            && let Some(toml::Value::String(url)) = db.get_mut("url")
        {
            *url = DatabaseConfig::redact(url);
        }
        toml::to_string(&table).expect("a table prints")
    }
}

/// The text as a config: the parser's errors name the key and line.
fn deserialize(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: e.to_string(),
    })
}

/// `STREAMD_RECORD__APPS__LIVE` → `["record", "apps", "live"]`.
fn env_path(var: &str) -> Vec<String> {
    var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Sets the key `var` names in `table` to `value`, typed by what the
/// default config holds there.
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    var: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    let path = env_path(var);
    if path.len() < 2 || path.iter().any(|p| p.is_empty()) {
        return Err(err(
            "expected STREAMD_SECTION__KEY (two underscores between the names)".into(),
        ));
    }
    let (leaf, parents) = path.split_last().expect("two or more parts");
    let mut default: Option<&toml::Value> = defaults.get(&path[0]);
    for p in &path[1..] {
        default = default.and_then(|d| d.get(p.as_str()));
    }
    let typed = match default {
        Some(toml::Value::String(_)) => toml::Value::String(value.to_owned()),
        Some(toml::Value::Array(a))
            if a.first().is_none_or(|v| v.is_str()) && !value.trim_start().starts_with('[') =>
        {
            toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| toml::Value::String(v.to_owned()))
                    .collect(),
            )
        }
        _ => match format!("v = {value}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").expect("parsed v"),
            // Not a TOML value: as text, for deserialization to judge.
            Err(_) => toml::Value::String(value.to_owned()),
        },
    };
    let mut at = table;
    for (i, p) in parents.iter().enumerate() {
        let next = at
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = match next {
            toml::Value::Table(t) => t,
            _ => {
                return Err(err(format!("`{}` is not a section", path[..=i].join("."))));
            }
        };
    }
    at.insert(leaf.clone(), typed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
            (
                "[whip]\nkeyframe_interval = \"100ms\"",
                "whip.keyframe_interval",
            ),
            (
                "[database]\nurl = \"postgres://u@db/s\"\n[cluster]\nrole = \"edge\"\n\
                 secret = \"0123456789abcdef0123456789abcdef\"\npublic_url = \"ftp://x\"",
                "cluster.public_url",
            ),
            (
                "[database]\nurl = \"postgres://u@db/s\"\n[cluster]\nrole = \"edge\"\n\
                 secret = \"0123456789abcdef0123456789abcdef\"\npublic_url = \"https://x/?a=1\"",
                "cluster.public_url",
            ),
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

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_section_is_settable_from_the_environment() {
        let c = Config::from_sources(
            None,
            env(&[
                ("STREAMD_SERVER__DRAIN_TIMEOUT", "45s"),
                ("STREAMD_LOG__FORMAT", "json"),
                ("STREAMD_RTMP__LISTEN", "127.0.0.1:1940"),
                ("STREAMD_HTTP__LISTEN", "127.0.0.1:3333, 127.0.0.1:8080"),
                ("STREAMD_HTTP__PUBLIC_ORIGIN", "https://live.example.com"),
                ("STREAMD_TLS__RELOAD_INTERVAL", "30s"),
                ("STREAMD_BUS__MAX_BROADCASTS", "7"),
                (
                    "STREAMD_LLHLS__CORS_ORIGINS",
                    "https://a.example,https://b.example",
                ),
                (
                    "STREAMD_TRANSCODE__LADDER",
                    r#"[{ name = "720p", width = 1280, height = 720, bitrate_kbps = 2500 }]"#,
                ),
                ("STREAMD_TRANSCODE__APPS__RAW__ENABLED", "false"),
                ("STREAMD_WEBRTC__ICE_TCP", "false"),
                ("STREAMD_DATABASE__URL", "postgres://u:p@db/streamd"),
                (
                    "STREAMD_AUTH__JWT_SECRET",
                    "0123456789abcdef0123456789abcdef!",
                ),
                ("STREAMD_WEBHOOKS__URLS", "https://hooks.example/a"),
                ("STREAMD_ADMISSION__TIMEOUT", "1500ms"),
                ("STREAMD_RECORD__LOCATION", "gs://bucket/prefix"),
                ("STREAMD_RECORD__APPS__LIVE__RENDITIONS", "all"),
                ("STREAMD_RECORD__SPOOL_BUDGET", "1073741824"),
                // Not config keys: no `__`, or not ours.
                ("STREAMD_HOST_IP", "192.0.2.1"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.drain_timeout, Duration::from_secs(45));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.rtmp.listen, "127.0.0.1:1940".parse().unwrap());
        assert_eq!(
            c.http.listen,
            vec![
                "127.0.0.1:3333".parse().unwrap(),
                "127.0.0.1:8080".parse().unwrap()
            ]
        );
        assert_eq!(c.http.public_origin, "https://live.example.com");
        assert_eq!(c.tls.reload_interval, Duration::from_secs(30));
        assert_eq!(c.bus.max_broadcasts, 7);
        assert_eq!(
            c.llhls.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.transcode.ladder.len(), 1);
        assert_eq!(c.transcode.ladder[0].preset, "veryfast");
        assert!(!c.transcode.enabled_for("raw"));
        assert!(!c.webrtc.ice_tcp);
        assert_eq!(c.database.url, "postgres://u:p@db/streamd");
        assert_eq!(c.auth.jwt_secret.len(), 33);
        assert_eq!(c.webhooks.urls, ["https://hooks.example/a"]);
        assert_eq!(c.admission.timeout, Duration::from_millis(1500));
        assert_eq!(c.record.location, "gs://bucket/prefix");
        assert_eq!(c.record.rule_for("live"), Some(RecordRenditions::All));
        assert_eq!(c.record.spool_budget, 1 << 30);
    }

    #[test]
    fn the_environment_goes_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "[bus]\nmax_broadcasts = 3\nreconnect_grace = \"4s\"\n",
        )
        .unwrap();
        let c = Config::from_sources(Some(&file), env(&[("STREAMD_BUS__MAX_BROADCASTS", "9")]))
            .unwrap();
        assert_eq!(c.bus.max_broadcasts, 9);
        assert_eq!(c.bus.reconnect_grace, Duration::from_secs(4));
    }

    #[test]
    fn a_bad_variable_is_named() {
        for (var, value, says) in [
            (
                "STREAMD_RTMP__MAX_CONNECTIONS",
                "many",
                "STREAMD_RTMP__MAX_CONNECTIONS",
            ),
            ("STREAMD_RTMP__LISTEN", "nowhere", "STREAMD_RTMP__LISTEN"),
            ("STREAMD_RTMP__MAX_CONECTIONS", "5", "max_conections"),
            ("STREAMD_RTMPP__LISTEN", "127.0.0.1:1", "rtmpp"),
            (
                "STREAMD_RTMP__LISTEN__PORT",
                "1",
                "STREAMD_RTMP__LISTEN__PORT",
            ),
            ("STREAMD_RTMP__", "1", "STREAMD_RTMP__"),
            (
                "STREAMD_LLHLS__PART_TARGET",
                "soon",
                "STREAMD_LLHLS__PART_TARGET",
            ),
        ] {
            let err = Config::from_sources(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{var}={value}: {err}");
            assert!(err.contains("environment variable"), "{var}={value}: {err}");
        }
        // In range for its type but not for streamd: the key and the
        // variable are named.
        let err = Config::from_sources(None, env(&[("STREAMD_LLHLS__PART_TARGET", "10ms")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("llhls.part_target") && err.contains("STREAMD_LLHLS__PART_TARGET"),
            "{err}"
        );
        let err = Config::from_sources(
            None,
            env(&[(
                "STREAMD_TRANSCODE__LADDER",
                r#"[{ name = "A", width = 1280, height = 720, bitrate_kbps = 2500 }]"#,
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("STREAMD_TRANSCODE__LADDER"), "{err}");
    }

    #[test]
    fn the_printed_config_hides_secrets_and_reads_back() {
        let mut c = Config::default();
        c.auth.jwt_secret = "s3cret-s3cret-s3cret-s3cret-s3cret".into();
        c.webhooks.secret = "w3bhook-w3bhook-w3bhook-w3bhook-w3".into();
        c.admission.secret = "adm1ssion".into();
        c.record.s3_secret_access_key = "AKIASECRET".into();
        c.database.url = "postgres://streamd:hunter2@db:5432/streamd".into();
        let text = c.redacted_toml();
        for secret in ["s3cret", "w3bhook", "adm1ssion", "AKIASECRET", "hunter2"] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert!(
            text.contains("postgres://streamd:***@db:5432/streamd"),
            "{text}"
        );
        // Without secrets, what is printed is the config itself.
        let plain = Config::default();
        assert_eq!(Config::parse(&plain.redacted_toml()).unwrap(), plain);
    }

    #[test]
    fn http_listen_takes_one_address_or_several() {
        let c = Config::parse("[http]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:2\"]").unwrap();
        assert_eq!(c.http.listen.len(), 2);
        let err = Config::parse("[http]\nlisten = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.listen"), "{err}");
        let err = Config::parse("[http]\nlisten = 5").unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
    }
}
