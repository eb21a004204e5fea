//! Joining mid-group: each rendition's latest group of pictures, kept from
//! its keyframe, so a viewer that connects between keyframes starts at
//! once instead of waiting for the next one (up to a GOP, 2 s with OBS's
//! defaults) or making the encoder spend an IDR on every wave of joins.
//!
//! The group goes to the new viewer at once (frame by frame, each sent
//! before the next is written), its timestamps pressed together just behind
//! the newest frame's (one tick apart), so the decoder has every reference
//! and the player reaches live within a few pictures rather than replaying
//! the group at its own pace, which would leave the viewer a group's length
//! behind live for good.
//!
//! A group is kept only while it is small enough to burst (frames and
//! bytes below); past that, or across a publisher session change, it is
//! dropped and joiners wait for the next keyframe, as before.

use std::sync::Arc;

use crate::webrtc::feed::RtpFrame;

/// The most frames a burst carries: 2 s at 30 fps, or 1 s at 60.
pub(super) const MAX_FRAMES: usize = 64;
/// The most payload bytes a burst carries, about 2 Mbit: a 2 s group at
/// 600 kbps, 0.8 s at 2.5 Mbps. More at once would overrun a viewer's
/// link (viewers without an estimator are not paced).
pub(super) const MAX_BYTES: usize = 256 * 1024;

/// One rendition's group in progress, from its keyframe.
#[derive(Default)]
pub(super) struct Gop {
    frames: Vec<Arc<RtpFrame>>,
    bytes: usize,
}

impl Gop {
    /// Takes the rendition's next frame: a keyframe starts a new group; a
    /// frame that would make the group too big, or comes from another
    /// publisher session, drops it until the next keyframe.
    pub(super) fn push(&mut self, frame: &Arc<RtpFrame>) {
        let size: usize = frame.payloads.iter().map(|p| p.data.len()).sum();
        if frame.keyframe {
            self.frames.clear();
            self.bytes = 0;
        } else if self.frames.is_empty() {
            return; // no keyframe since the last drop
        } else if self.frames.len() >= MAX_FRAMES
            || self.bytes + size > MAX_BYTES
            || self.frames[0].session != frame.session
        {
            self.frames.clear();
            self.bytes = 0;
            return;
        }
        if size > MAX_BYTES {
            return; // a keyframe too big to burst
        }
        self.frames.push(frame.clone());
        self.bytes += size;
    }

    /// Whether a joiner that can take `budget` bytes at once can start
    /// from the group now.
    pub(super) fn usable(&self, budget: usize) -> bool {
        !self.frames.is_empty() && self.bytes <= budget
    }

    /// The group, keyframe first, if its newest frame is `frame`: what a
    /// viewer that needs a start writes when `frame` comes.
    pub(super) fn ending_with(&self, frame: &RtpFrame) -> Option<&[Arc<RtpFrame>]> {
        let last = self.frames.last()?;
        std::ptr::eq(Arc::as_ptr(last), frame).then_some(&self.frames[..])
    }
}

/// The timestamp burst frame `i` of `n` goes out with: the newest frame's
/// own (`newest`), the others one tick apart before it.
pub(super) fn burst_ts(newest: i64, i: usize, n: usize) -> i64 {
    newest - (n - 1 - i) as i64
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::webrtc::packetize::Payload;

    fn frame(ts: i64, keyframe: bool, session: u32, size: usize) -> Arc<RtpFrame> {
        Arc::new(RtpFrame {
            ts,
            wallclock: Instant::now(),
            keyframe,
            session,
            payloads: vec![Payload {
                data: vec![0u8; size].into(),
                marker: true,
            }],
        })
    }

    #[test]
    fn a_group_starts_at_a_keyframe_and_ends_when_too_big_or_another_session() {
        let mut g = Gop::default();
        let d = frame(0, false, 0, 100);
        g.push(&d);
        assert!(!g.usable(usize::MAX), "no keyframe yet");
        let k = frame(3000, true, 0, 1000);
        g.push(&k);
        let d1 = frame(6000, false, 0, 100);
        g.push(&d1);
        let group = g.ending_with(&d1).unwrap();
        assert_eq!(group.len(), 2);
        assert!(group[0].keyframe);
        assert!(g.ending_with(&k).is_none(), "only the newest frame ends it");
        assert!(
            g.usable(1100) && !g.usable(1099),
            "1,100 bytes: over a smaller budget"
        );
        // Another publisher session: dropped until its keyframe.
        g.push(&frame(9000, false, 1, 100));
        assert!(!g.usable(usize::MAX));
        g.push(&frame(12000, false, 1, 100));
        assert!(!g.usable(usize::MAX));
        g.push(&frame(15000, true, 1, 100));
        assert!(g.usable(usize::MAX));
        // Too many frames.
        for i in 1..MAX_FRAMES {
            g.push(&frame(15000 + i as i64 * 3000, false, 1, 10));
        }
        assert!(g.usable(usize::MAX));
        g.push(&frame(999_000, false, 1, 10));
        assert!(!g.usable(usize::MAX));
        // Too many bytes, and a keyframe too big to burst alone.
        g.push(&frame(0, true, 1, MAX_BYTES / 2));
        g.push(&frame(1, false, 1, MAX_BYTES / 2 + 1));
        assert!(!g.usable(usize::MAX));
        g.push(&frame(2, true, 1, MAX_BYTES + 1));
        assert!(!g.usable(usize::MAX));
    }

    #[test]
    fn a_burst_ends_on_the_newest_frames_timestamp_one_tick_apart() {
        let ts: Vec<i64> = (0..4).map(|i| burst_ts(90_000, i, 4)).collect();
        assert_eq!(ts, [89_997, 89_998, 89_999, 90_000]);
    }
}
