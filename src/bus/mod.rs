//! The stream bus: how media gets from a publisher to every consumer.
//!
//! Shaped like moq-lite: a [`Registry`] of live broadcasts, keyed by
//! [`StreamPath`]; a broadcast holds tracks; a track is a sequence of groups
//! (one GOP for video, one frame for audio); a group is a sequence of
//! [`Frame`]s starting with a keyframe.
//!
//! What the bus promises:
//! - a late joiner starts at the newest keyframe;
//! - a slow consumer skips whole groups and counts the frames it lost; it
//!   never blocks the publisher and never makes the track hold more than its
//!   [`Retention`] bounds;
//! - a publisher that reconnects within the grace period continues the same
//!   broadcast and tracks; its first group carries `discontinuity`.
//!
//! The bus never touches the network, never decodes media and never reads a
//! clock: wall-clock times on frames are stamped by ingest.

mod broadcast;
mod catalog;
mod path;
mod registry;
mod supervise;
mod track;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

pub use broadcast::{
    BroadcastConsumer, BroadcastMeta, BroadcastProducer, BroadcastStatus, BroadcastUpdate,
};
pub use catalog::{Catalog, VideoEntry};
pub use path::{PathError, StreamPath};
pub use registry::{DEMAND_WAIT, Demand, Located, PublishError, Registry, Supply};
pub use track::{
    FrameEvent, Retention, StartAt, TrackConsumer, TrackEvent, TrackProducer, TryNext, WriteError,
};

use crate::media::CodecConfig;
use crate::time::MediaTime;

/// One access unit: a video frame (AVCC NAL units) or an audio frame (a raw
/// AAC frame). Cheap to clone: the payload is reference counted.
#[derive(Clone, Debug)]
pub struct Frame {
    pub dts: MediaTime,
    pub pts: MediaTime,
    pub keyframe: bool,
    pub data: Bytes,
    /// When ingest received it (for PROGRAM-DATE-TIME).
    pub wallclock: SystemTime,
    /// When ingest received it, monotonic (for latency measurement).
    pub received: Instant,
}

/// What is common to every frame of a group.
#[derive(Debug)]
pub struct GroupInfo {
    /// Increases by one per group of the track, across publisher sessions.
    pub sequence: u64,
    pub config: Arc<CodecConfig>,
    /// The first group of a new publisher session: timestamps may jump.
    pub discontinuity: bool,
    /// Which publisher session (0 for the first) wrote this group.
    pub session: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    Video,
    Audio,
}

impl TrackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        }
    }
}

/// The name of a publisher's default video track (Enhanced RTMP's track 0;
/// the only one for most publishers). Ingest names a multitrack
/// publisher's other renditions `video1`, `video2`…
pub const SOURCE_VIDEO: &str = "video";

/// What a track is. What it is *for* (which tracks players get) is the
/// broadcast's [`Catalog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackInfo {
    /// Unique within the broadcast; `[a-z0-9_-]+` so it can name files.
    pub name: String,
    pub kind: TrackKind,
    /// Made from other tracks of the broadcast (a transcoder's output),
    /// not sent by the publisher.
    pub derived: bool,
}

impl TrackInfo {
    /// A track as the publisher sent it.
    pub fn source(name: &str, kind: TrackKind) -> TrackInfo {
        TrackInfo {
            name: name.to_owned(),
            kind,
            derived: false,
        }
    }

    /// A track made from the publisher's (see
    /// [`BroadcastConsumer::derived_track`]).
    pub fn derived(name: &str, kind: TrackKind) -> TrackInfo {
        TrackInfo {
            name: name.to_owned(),
            kind,
            derived: true,
        }
    }
}

#[cfg(test)]
mod tests;
