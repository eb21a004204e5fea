//! `[record]`: recording to a store, and VOD (record/).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Which renditions a recording keeps.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Serialize, Eq)]
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
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
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
    /// At shutdown, segments still waiting are uploaded for up to this
    /// long (a store that is down leaves them in the spool for the next
    /// start).
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Recordings older than this are deleted (objects and all); 0: kept.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// VOD segments already uploaded are answered with a redirect to a
    /// URL signed for this long (GCS, S3), so the store serves them; 0:
    /// streamd serves them.
    #[serde(with = "humantime_serde")]
    pub signed_urls: Duration,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppRecordConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
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
            flush_timeout: Duration::from_secs(20),
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
        super::host_name()
    }
}

impl RecordConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
        // record.location is read (and refused with its key named) when
        // recording starts: the parser is the recorder's.
        if !r.s3_endpoint.is_empty() && !super::is_http_url(&r.s3_endpoint) {
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
        if r.flush_timeout > Duration::from_secs(3600) {
            return invalid("record.flush_timeout", "must be at most 1h".into());
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
        Ok(())
    }
}
