//! `[llhls]`: the LL-HLS packager and its HTTP answers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
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

impl LlhlsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
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
        Ok(())
    }
}
