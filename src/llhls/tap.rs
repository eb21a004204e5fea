//! What the packager makes, handed on to an archive (the recorder) as it
//! is made: the very CMAF bytes the live playlists serve, so a recording
//! is byte-identical to live and nothing is muxed twice.
//!
//! The packager never waits for a tap: messages go through a bounded
//! queue, and when it is full they are dropped and counted on the tap
//! ([`Tap::lost`]), which the archive sees and marks as a discontinuity.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bus::{StreamPath, TrackKind};
use crate::media::CodecConfig;

/// Messages a tap holds at most before dropping (at 5 parts a second per
/// track, minutes of media: only a stalled disk fills it).
pub const TAP_QUEUE: usize = 8192;

#[derive(Debug)]
pub enum Packaged {
    /// A track joined the packager.
    Track {
        track: usize,
        name: String,
        kind: TrackKind,
        timescale: u32,
        /// A ladder rung's configured bitrate.
        configured_bps: Option<u64>,
    },
    SegmentStart {
        track: usize,
        msn: u64,
        discontinuity: bool,
        /// A new init segment and the configuration it describes.
        init: Option<(Bytes, Arc<CodecConfig>)>,
    },
    Part {
        track: usize,
        msn: u64,
        /// In the track's timescale.
        duration: i64,
        data: Bytes,
    },
    SegmentEnd {
        track: usize,
        msn: u64,
    },
}

/// One stream's tap; dropping it tells the archive the stream ended.
pub struct Tap {
    tx: mpsc::Sender<Packaged>,
    lost: Arc<AtomicU64>,
}

/// The archive's end of a tap.
pub struct TapReceiver {
    pub rx: mpsc::Receiver<Packaged>,
    lost: Arc<AtomicU64>,
}

impl TapReceiver {
    /// Messages dropped so far because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

pub fn tap() -> (Tap, TapReceiver) {
    let (tx, rx) = mpsc::channel(TAP_QUEUE);
    let lost = Arc::new(AtomicU64::new(0));
    (
        Tap {
            tx,
            lost: lost.clone(),
        },
        TapReceiver { rx, lost },
    )
}

impl Tap {
    pub fn send(&self, p: Packaged) {
        if self.tx.try_send(p).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("streamd_record_tap_dropped_total").increment(1);
        }
    }
}

/// Opens a tap for a stream that starts packaging; None: not archived.
pub type Taps = Arc<dyn Fn(&StreamPath) -> Option<Tap> + Send + Sync>;
