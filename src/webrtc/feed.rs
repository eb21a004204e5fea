//! Feeds: one task per track a WebRTC stream serves, per media engine with
//! viewers of it. Each reads the bus, packetises every frame once and hands
//! it to its engine, shared by all of that engine's viewers of the
//! rendition (so a frame is packetised at most once per core, whatever the
//! audience).
//!
//! A feed reads with a lag bound: when the engine falls behind, the feed
//! waits, the bus skips it to a newer keyframe, and the publisher never
//! notices.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::StreamPlan;
use super::packetize::{self, MAX_PAYLOAD, Payload};
use crate::bus::{BroadcastConsumer, TrackEvent};
use crate::media::CodecConfig;
use crate::ratelimit::LogLimiter;
use crate::time::Timescale;

/// Opus's payload type in the offer.
pub const OPUS_PT: u8 = 111;
/// A feed further behind live than this jumps to the newest keyframe.
const MAX_LAG: Duration = Duration::from_secs(1);

/// One frame, packetised, with its RTP clock time.
#[derive(Debug)]
pub struct RtpFrame {
    /// Ticks of the codec clock (90 kHz video, 48 kHz Opus), on the
    /// publisher session's timeline.
    pub ts: i64,
    /// When ingest received the frame: sender reports map RTP time to it.
    pub wallclock: Instant,
    pub keyframe: bool,
    pub session: u32,
    pub payloads: Vec<Payload>,
}

#[derive(Debug)]
pub enum FeedMsgKind {
    Frame(Arc<RtpFrame>),
    /// The broadcast has ended (the track closed).
    Ended,
}

#[derive(Debug)]
pub struct FeedMsg {
    pub broadcast: u64,
    /// Index into the plan's renditions; `renditions.len()` is the audio.
    pub feed: usize,
    pub kind: FeedMsgKind,
}

/// Starts a feed for every rendition of `plan` and its audio.
pub fn start(
    broadcast: &BroadcastConsumer,
    plan: &StreamPlan,
    tx: &mpsc::Sender<FeedMsg>,
) -> Vec<AbortHandle> {
    let tracks = plan
        .renditions
        .iter()
        .map(|r| r.track.clone())
        .chain(plan.audio.clone());
    tracks
        .enumerate()
        .map(|(feed, track)| {
            tokio::spawn(run(broadcast.clone(), track, feed, tx.clone())).abort_handle()
        })
        .collect()
}

async fn run(broadcast: BroadcastConsumer, track: String, feed: usize, tx: mpsc::Sender<FeedMsg>) {
    let id = broadcast.id();
    let send = |kind| FeedMsg {
        broadcast: id,
        feed,
        kind,
    };
    let Some(mut consumer) = broadcast.subscribe(&track, Some(MAX_LAG)) else {
        let _ = tx.send(send(FeedMsgKind::Ended)).await;
        return;
    };
    let mut log = LogLimiter::new(Duration::from_secs(10));
    while let Some(event) = consumer.next().await {
        let TrackEvent::Frame(fe) = event else {
            continue; // an interruption: viewers keep their session
        };
        let frame = &fe.frame;
        let (payloads, scale) = match &*fe.group.config {
            CodecConfig::H264(avc) => match packetize::h264(avc, &frame.data, MAX_PAYLOAD) {
                Ok(p) => (p, Timescale::MPEG),
                Err(e) => {
                    if let Some(n) = log.check(Instant::now()) {
                        tracing::warn!(stream = %broadcast.path(), %track, error = %e, skipped = n, "frame not sent over WebRTC");
                    }
                    continue;
                }
            },
            CodecConfig::Opus(_) => (
                vec![Payload {
                    data: Arc::from(&frame.data[..]),
                    marker: false,
                }],
                Timescale::new(48_000).expect("non-zero"),
            ),
            CodecConfig::Aac(_) => continue, // never planned: WebRTC has no AAC
            // Never planned either: WebRTC plays the ladder's H.264 rungs.
            CodecConfig::Hevc(_) | CodecConfig::Av1(_) => continue,
        };
        let rtp = RtpFrame {
            ts: frame.pts.rescale(scale).ticks(),
            wallclock: frame.received,
            keyframe: frame.keyframe,
            session: fe.group.session,
            payloads,
        };
        if tx
            .send(send(FeedMsgKind::Frame(Arc::new(rtp))))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = tx.send(send(FeedMsgKind::Ended)).await;
}
