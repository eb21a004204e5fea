//! Cuts one track into LL-HLS partial segments and segments.
//!
//! Sans-IO: samples in (already on the track's output timeline), parts and
//! segment boundaries out. The caller decides where segments may start (a
//! video keyframe past the segment target, or the leader's boundary for a
//! follower track); this decides where parts end.
//!
//! A sample's duration is only known when the next sample arrives, so the
//! newest sample is held back (one frame of latency). A part closes as soon
//! as the next sample is predicted not to fit, so it is servable the moment
//! its last sample's duration is known.
//!
//! The part target is a whole number of frames: LL-HLS requires every part
//! (but a segment's last, or an independent one) to last at least 85% of
//! PART-TARGET and at most PART-TARGET, which only frame-aligned targets can
//! meet at every frame rate.
//!
//! Frames go missing (an overloaded encoder drops pictures, a publisher skips
//! frames), and then no run of whole frames may fit between 85% and 100% of
//! the target. A part that reaches the next frame's decode time past its
//! limit ends exactly at the limit (its last frame lasts longer), and for
//! video the next frame is written at that limit: decoded and shown a little
//! early (never more than one part target), so the timeline stays gapless
//! and no playlist breaks the rule. A longer hole (a stall) stays a hole
//! rather than shift pictures further; audio is never shifted (its parts
//! are all independent, which the rule exempts). A segment's EXTINF is the
//! sum of its parts.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use crate::media::CodecConfig;
use crate::media::cmaf::{self, Sample};

/// Parts get `n` frames, `n = floor(configured / frame + PART_ROUNDING)`, so
/// a configured 200 ms at a measured 34 ms frame (29.97 fps rounded to ms)
/// still gives 6 frames.
const PART_ROUNDING: f64 = 0.15;

/// One sample on its way in.
#[derive(Clone, Debug)]
pub struct InSample {
    /// Decode time in the track's output timescale.
    pub dts: i64,
    pub composition_offset: i32,
    pub keyframe: bool,
    pub data: Bytes,
    /// Wall-clock time of this sample (for EXT-X-PROGRAM-DATE-TIME).
    pub program_date_time: SystemTime,
    /// When ingest received it.
    pub received: Instant,
    /// The caller decided this sample starts a new segment.
    pub starts_segment: bool,
    /// ...and that segment follows a discontinuity (publisher reconnect,
    /// codec change).
    pub discontinuity: bool,
    /// The decoder configuration in force for this sample.
    pub config: Arc<CodecConfig>,
    /// The MSN for the first segment this track ever opens, when the caller
    /// aligns numbering with another track. Later segments are always
    /// numbered one more than the last: numbers never skip.
    pub msn: Option<u64>,
}

#[derive(Debug)]
pub enum SegmenterOutput {
    SegmentStart {
        msn: u64,
        discontinuity: bool,
        /// Wall-clock time of the segment's first sample.
        program_date_time: SystemTime,
        /// A new init segment, when the decoder configuration changed.
        init: Option<Bytes>,
        /// The decode time of the first sample, in the track's timescale.
        start: i64,
    },
    Part {
        msn: u64,
        index: u32,
        /// In the track's timescale.
        duration: i64,
        independent: bool,
        data: Bytes,
        /// When ingest received each sample in the part.
        received: Vec<Instant>,
    },
    SegmentEnd {
        msn: u64,
        duration: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SegmenterError {
    #[error("decode time went from {previous} to {next}; dropped the sample")]
    NonMonotonic { previous: i64, next: i64 },
    #[error("decode time {0} is negative; dropped the sample")]
    NegativeTime(i64),
    #[error(transparent)]
    Cmaf(#[from] cmaf::CmafError),
}

struct OpenSegment {
    msn: u64,
    start: i64,
    parts: u32,
    /// The durations of its closed parts, summed (its EXTINF).
    duration: i64,
}

pub struct Segmenter {
    timescale: u32,
    configured_part: f64,
    /// Known frame duration (from the stream's parameters), in ticks.
    frame_hint: Option<i64>,
    /// The advertised PART-TARGET in ticks, fixed once known.
    part_target: Option<i64>,
    /// The frame duration the part target was made of, in ticks.
    nominal_frame: i64,
    /// A part shorter than this (in ticks) may only end its segment or be
    /// independent: 85% of the advertised (millisecond-rounded) target.
    min_part: i64,
    /// Frames after a short hole are moved back to close it (video).
    close_holes: bool,
    /// Where the held sample will be written when it was moved back.
    moved: Option<i64>,
    next_msn: u64,
    next_fragment: u32,
    segment: Option<OpenSegment>,
    part: Vec<Sample>,
    part_received: Vec<Instant>,
    part_start: i64,
    part_duration: i64,
    pending: Option<InSample>,
    last_duration: Option<i64>,
    last_dts: Option<i64>,
    config: Option<Arc<CodecConfig>>,
    /// The end of the last sample written.
    end: Option<i64>,
    /// A segment has been opened (its MSN fixed the numbering).
    numbered: bool,
    /// Payload bytes in the open segment.
    open_bytes: usize,
}

impl Segmenter {
    /// A segmenter for a track with `timescale`. `close_holes` (for video)
    /// moves a frame after a short hole back to the end of the part before it.
    pub fn new(
        timescale: u32,
        configured_part: std::time::Duration,
        close_holes: bool,
    ) -> Segmenter {
        Segmenter {
            timescale,
            configured_part: configured_part.as_secs_f64(),
            frame_hint: None,
            part_target: None,
            nominal_frame: 1,
            min_part: 1,
            close_holes,
            moved: None,
            next_msn: 0,
            next_fragment: 1,
            segment: None,
            part: Vec::new(),
            part_received: Vec::new(),
            part_start: 0,
            part_duration: 0,
            pending: None,
            last_duration: None,
            last_dts: None,
            config: None,
            end: None,
            numbered: false,
            open_bytes: 0,
        }
    }

    pub fn timescale(&self) -> u32 {
        self.timescale
    }

    /// Tells the segmenter the frame duration when the stream states it
    /// (AAC frame size, H.264 VUI timing, onMetaData frame rate).
    pub fn set_frame_duration(&mut self, ticks: i64) {
        if ticks > 0 && self.frame_hint.is_none() {
            self.frame_hint = Some(ticks);
        }
    }

    /// PART-TARGET in seconds, once known.
    pub fn part_target_secs(&self) -> Option<f64> {
        self.part_target
            .map(|t| t as f64 / f64::from(self.timescale))
    }

    /// The MSN of the open segment, or of the next one.
    /// The number of the segment the newest sample belongs to: the held
    /// sample's when it opens a segment (it is only written out once the
    /// next one gives its duration), else the open segment's.
    pub fn current_msn(&self) -> u64 {
        if let Some(p) = self.pending.as_ref().filter(|p| p.starts_segment) {
            return match (self.numbered, p.msn) {
                (false, Some(first)) => first,
                _ => self.next_msn,
            };
        }
        self.segment.as_ref().map_or(self.next_msn, |s| s.msn)
    }

    pub fn has_open_segment(&self) -> bool {
        self.segment.is_some() || self.pending.is_some()
    }

    /// Start time of the open segment (or of the held sample that will open one).
    pub fn open_segment_start(&self) -> Option<i64> {
        self.segment.as_ref().map(|s| s.start).or_else(|| {
            self.pending
                .as_ref()
                .filter(|p| p.starts_segment)
                .map(|p| p.dts)
        })
    }

    /// The decode time of the newest sample taken in.
    pub fn last_dts(&self) -> Option<i64> {
        self.last_dts
    }

    /// Where the track will end if flushed now, on the output timeline (the
    /// held sample counted with its estimated duration).
    pub fn end_estimate(&self) -> Option<i64> {
        match &self.pending {
            Some(p) => Some(p.dts.saturating_add(self.estimated_duration())),
            None => self.end,
        }
    }

    fn estimated_duration(&self) -> i64 {
        self.last_duration
            .or(self.frame_hint)
            .unwrap_or(i64::from(self.timescale) / 30)
            .max(1)
    }

    /// Payload bytes of the open segment, the held sample included.
    pub fn open_bytes(&self) -> usize {
        self.open_bytes + self.pending.as_ref().map_or(0, |p| p.data.len())
    }

    /// The duration the next sample is expected to have, in ticks.
    /// Whether a sample at `dts` would begin a new part: nothing is held,
    /// or the open part closes before it (it is long enough and one more
    /// frame would not fit, or `dts` is past its limit).
    pub fn part_ends_before(&self, dts: i64) -> bool {
        let (Some(held), Some(target)) = (&self.pending, self.part_target) else {
            return true;
        };
        let start = if self.part.is_empty() {
            self.moved.unwrap_or(held.dts)
        } else {
            self.part_start
        };
        let len = dts - start;
        len > target || (len >= self.min_part && len + self.nominal_frame > target)
    }

    pub fn frame_estimate(&self) -> i64 {
        self.estimated_duration()
    }

    fn fix_part_target(&mut self, measured: i64) -> i64 {
        if let Some(t) = self.part_target {
            return t;
        }
        // Without a stated frame duration, trust the first step only if it
        // looks like one (1/240 s to 1/5 s); a stalled start would otherwise
        // fix a huge PART-TARGET for the whole stream.
        let scale = i64::from(self.timescale);
        let plausible = (scale / 240).max(1)..=scale / 5;
        let frame = match self.frame_hint {
            Some(f) => f,
            None if plausible.contains(&measured) => measured,
            None => (scale / 30).max(1),
        }
        .max(1);
        let frame_secs = frame as f64 / f64::from(self.timescale);
        let n = ((self.configured_part / frame_secs) + PART_ROUNDING)
            .floor()
            .max(1.0) as i64;
        // Slack for timestamp jitter (ms-rounded input): a quarter frame,
        // or an eighth when a part is one frame, so that one frame still
        // lasts 85% of the target.
        let slack = if n >= 2 { frame / 4 } else { frame / 8 };
        let target = n * frame + slack;
        self.part_target = Some(target);
        self.nominal_frame = frame;
        // 85% of PART-TARGET as the playlist prints it (rounded up to the
        // millisecond), plus a margin for DURATION's five decimals.
        let scale = f64::from(self.timescale);
        let advertised = (target as f64 / scale * 1000.0 - 1e-9).ceil() / 1000.0;
        self.min_part = ((0.85 * advertised + 1e-5) * scale).ceil() as i64;
        target
    }

    /// Takes a sample. `out` receives what became final. A refused sample
    /// (negative or backwards decode time) changes nothing.
    pub fn push(
        &mut self,
        mut sample: InSample,
        out: &mut Vec<SegmenterOutput>,
    ) -> Result<(), SegmenterError> {
        if sample.dts < 0 {
            return Err(SegmenterError::NegativeTime(sample.dts));
        }
        // Decode times only go forward: past the held sample, and after a
        // flush past the end of what was written.
        let floor = match &self.pending {
            Some(p) => Some(p.dts + 1),
            None => self.end,
        };
        if let Some(floor) = floor
            && sample.dts < floor
        {
            return Err(SegmenterError::NonMonotonic {
                previous: floor,
                next: sample.dts,
            });
        }
        self.last_dts = Some(sample.dts);
        match self.pending.take() {
            Some(p) => {
                self.append(p, Some((sample.dts, sample.starts_segment)), out)?;
                if sample.starts_segment {
                    self.close_segment(out)?;
                }
            }
            None => {
                // First sample, or the first after a flush: it opens a segment.
                sample.starts_segment = true;
            }
        }
        self.pending = Some(sample);
        Ok(())
    }

    /// Writes out the held sample (its duration estimated) and closes the
    /// open part and segment: the publisher left, or the stream ended.
    pub fn flush(&mut self, out: &mut Vec<SegmenterOutput>) -> Result<(), SegmenterError> {
        if let Some(p) = self.pending.take() {
            self.append(p, None, out)?;
        }
        self.close_segment(out)
    }

    /// Writes out `s`, now that `next` (the next sample's decode time, and
    /// whether it starts a segment) is known, or `None` at a flush.
    fn append(
        &mut self,
        s: InSample,
        next: Option<(i64, bool)>,
        out: &mut Vec<SegmenterOutput>,
    ) -> Result<(), SegmenterError> {
        let step = next.map_or_else(|| self.estimated_duration(), |(n, _)| n - s.dts);
        let target = self.fix_part_target(step);
        let mut start = s.dts;
        if s.starts_segment {
            self.moved = None;
            self.close_segment(out)?;
            let init = if self.config.as_ref() != Some(&s.config) {
                self.config = Some(s.config.clone());
                Some(cmaf::init_segment(&s.config, self.timescale)?)
            } else {
                None
            };
            let msn = match (self.numbered, s.msn) {
                (false, Some(first)) => first,
                _ => self.next_msn,
            };
            self.numbered = true;
            self.next_msn = msn + 1;
            self.segment = Some(OpenSegment {
                msn,
                start: s.dts,
                parts: 0,
                duration: 0,
            });
            self.open_bytes = 0;
            out.push(SegmenterOutput::SegmentStart {
                msn,
                discontinuity: s.discontinuity,
                program_date_time: s.program_date_time,
                init,
                start: s.dts,
            });
        } else if let Some(m) = self.moved.take() {
            start = m;
        }
        if self.part.is_empty() {
            self.part_start = start;
        }
        // The part may not end later than this.
        let limit = self.part_start + target;
        let (end, close) = match next {
            // The stream pauses or ends: the held sample gets its estimated
            // duration, within the part.
            None => ((start + self.estimated_duration()).min(limit), true),
            // The segment's last part may be short; past the limit, a hole.
            Some((n, true)) => (n.min(limit), true),
            Some((n, false)) if n <= limit => {
                // Close once the part is long enough and one more frame
                // would not fit.
                let len = n - self.part_start;
                (n, len >= self.min_part && len + self.nominal_frame > target)
            }
            Some((n, false)) => {
                // The next frame starts past the limit (frames are missing):
                // this part ends at its limit, and the next frame is moved
                // back to it unless that would move it by more than a part.
                if self.close_holes && n - limit <= target {
                    self.moved = Some(limit);
                }
                (limit, true)
            }
        };
        let duration = (end - start).max(1);
        let shift = s.dts - start;
        // A moved frame keeps its composition offset (it is shown as early
        // as it is decoded) unless it has one: then its presentation time
        // stays, so B-frame order is never changed.
        let composition_offset = if shift != 0 && s.composition_offset != 0 {
            i32::try_from(i64::from(s.composition_offset) + shift).unwrap_or(i32::MAX)
        } else {
            s.composition_offset
        };
        self.part.push(Sample {
            duration: u32::try_from(duration).unwrap_or(u32::MAX),
            composition_offset,
            keyframe: s.keyframe,
            data: s.data,
        });
        self.part_received.push(s.received);
        self.open_bytes += self.part.last().map_or(0, |p| p.data.len());
        self.part_duration += duration;
        if next.is_some() {
            self.last_duration = Some(step.clamp(1, target));
        }
        self.end = Some(start + duration);
        if close {
            self.close_part(out)?;
        }
        Ok(())
    }

    fn close_part(&mut self, out: &mut Vec<SegmenterOutput>) -> Result<(), SegmenterError> {
        if self.part.is_empty() {
            return Ok(());
        }
        let Some(segment) = self.segment.as_mut() else {
            unreachable!("samples are only appended inside an open segment");
        };
        let data = cmaf::fragment(self.next_fragment, self.part_start, &self.part);
        self.next_fragment = self.next_fragment.wrapping_add(1);
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                // Drop what cannot be written rather than retry it forever.
                self.part.clear();
                self.part_received.clear();
                self.part_duration = 0;
                return Err(e.into());
            }
        };
        out.push(SegmenterOutput::Part {
            msn: segment.msn,
            index: segment.parts,
            duration: self.part_duration,
            independent: self.part[0].keyframe,
            data,
            received: std::mem::take(&mut self.part_received),
        });
        segment.parts += 1;
        segment.duration += self.part_duration;
        self.part.clear();
        self.part_duration = 0;
        Ok(())
    }

    fn close_segment(&mut self, out: &mut Vec<SegmenterOutput>) -> Result<(), SegmenterError> {
        self.close_part(out)?;
        if let Some(seg) = self.segment.take() {
            out.push(SegmenterOutput::SegmentEnd {
                msn: seg.msn,
                duration: seg.duration,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::media::AvcConfig;

    pub(super) fn config() -> Arc<CodecConfig> {
        Arc::new(CodecConfig::H264(
            AvcConfig::parse(Bytes::from_static(crate::media::h264::tests::AVCC_320X240)).unwrap(),
        ))
    }

    pub(super) fn sample(
        dts: i64,
        keyframe: bool,
        starts: bool,
        cfg: &Arc<CodecConfig>,
    ) -> InSample {
        InSample {
            dts,
            composition_offset: 0,
            keyframe,
            data: Bytes::from_static(&[1, 2, 3]),
            program_date_time: SystemTime::UNIX_EPOCH,
            received: Instant::now(),
            starts_segment: starts,
            discontinuity: false,
            config: cfg.clone(),
            msn: None,
        }
    }

    /// 30 fps in 90 kHz from millisecond timestamps (33/34 ms steps).
    fn dts_30fps(i: i64) -> i64 {
        (i * 1000 / 30) * 90
    }

    #[test]
    fn parts_are_whole_frames_within_target() {
        let cfg = config();
        let mut seg = Segmenter::new(90_000, Duration::from_millis(200), true);
        let mut out = vec![];
        // 2 s of 30 fps video, keyframe every 30 frames, 1 s segments.
        for i in 0..61 {
            let key = i % 30 == 0;
            seg.push(sample(dts_30fps(i), key, key && i > 0, &cfg), &mut out)
                .unwrap();
        }
        let target = seg.part_target_secs().unwrap();
        // 6 frames of ~33 ms (measured from the first step, 33 ms) plus a
        // quarter-frame of slack.
        assert!((0.2..0.21).contains(&target), "{target}");
        let parts: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                SegmenterOutput::Part {
                    msn,
                    index,
                    duration,
                    independent,
                    ..
                } => Some((*msn, *index, *duration, *independent)),
                _ => None,
            })
            .collect();
        // Two complete segments of 5 parts each (30 frames = 5 x 6).
        assert_eq!(parts.iter().filter(|p| p.0 == 0).count(), 5);
        assert_eq!(parts.iter().filter(|p| p.0 == 1).count(), 5);
        for (msn, index, duration, independent) in &parts {
            let secs = *duration as f64 / 90_000.0;
            assert!(secs <= target, "part {msn}.{index} {secs}");
            assert!(secs >= 0.85 * target, "part {msn}.{index} {secs}");
            assert_eq!(*independent, *index == 0);
        }
        let ends: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                SegmenterOutput::SegmentEnd { msn, duration } => Some((*msn, *duration)),
                _ => None,
            })
            .collect();
        assert_eq!(ends, vec![(0, 90_000), (1, 90_000)]);
    }

    #[test]
    fn part_closes_when_its_last_frame_duration_is_known() {
        let cfg = config();
        let mut seg = Segmenter::new(90_000, Duration::from_millis(200), true);
        let mut out = vec![];
        for i in 0..6 {
            seg.push(sample(dts_30fps(i), i == 0, false, &cfg), &mut out)
                .unwrap();
        }
        // Frames 0..=4 are in the open part, frame 5 is held.
        assert!(
            !out.iter()
                .any(|o| matches!(o, SegmenterOutput::Part { .. }))
        );
        // Frame 6 arrives: frame 5's duration is known, the part is full.
        seg.push(sample(dts_30fps(6), false, false, &cfg), &mut out)
            .unwrap();
        assert!(matches!(
            out.last(),
            Some(SegmenterOutput::Part { index: 0, .. })
        ));
    }

    #[test]
    fn flush_closes_everything_and_next_sample_opens_a_segment() {
        let cfg = config();
        let mut seg = Segmenter::new(90_000, Duration::from_millis(200), true);
        let mut out = vec![];
        for i in 0..4 {
            seg.push(sample(dts_30fps(i), i == 0, false, &cfg), &mut out)
                .unwrap();
        }
        seg.flush(&mut out).unwrap();
        let Some(SegmenterOutput::SegmentEnd { msn: 0, duration }) = out.last() else {
            panic!("{out:?}")
        };
        // Steps of 33, 33, 34 ms; the held 4th frame is given the last
        // known duration (34 ms).
        assert_eq!(*duration, 9000 + 3060);
        out.clear();
        // After a flush nothing may start before what was written...
        assert!(matches!(
            seg.push(sample(0, true, false, &cfg), &mut out),
            Err(SegmenterError::NonMonotonic { .. })
        ));
        // ...and the next session continues after it.
        let mut s = sample(20_000, true, false, &cfg);
        s.discontinuity = true;
        seg.push(s, &mut out).unwrap();
        seg.push(sample(23_000, false, false, &cfg), &mut out)
            .unwrap();
        assert!(matches!(
            out.first(),
            Some(SegmenterOutput::SegmentStart {
                msn: 1,
                discontinuity: true,
                init: None,
                ..
            })
        ));
    }

    #[test]
    fn backwards_timestamps_are_refused() {
        let cfg = config();
        let mut seg = Segmenter::new(90_000, Duration::from_millis(200), true);
        let mut out = vec![];
        seg.push(sample(9000, true, false, &cfg), &mut out).unwrap();
        assert!(matches!(
            seg.push(sample(9000, false, false, &cfg), &mut out),
            Err(SegmenterError::NonMonotonic { .. })
        ));
    }

    #[test]
    fn audio_parts_at_44k() {
        let cfg = config(); // the codec does not matter to the cutting
        let mut seg = Segmenter::new(44_100, Duration::from_millis(200), false);
        seg.set_frame_duration(1024);
        let mut out = vec![];
        for i in 0..100 {
            seg.push(sample(i * 1024, true, false, &cfg), &mut out)
                .unwrap();
        }
        let target = seg.part_target_secs().unwrap();
        // 8 frames of 23.2 ms.
        assert!((target - (8.0 * 1024.0 + 256.0) / 44_100.0).abs() < 1e-9);
        for o in &out {
            if let SegmenterOutput::Part { duration, .. } = o {
                assert_eq!(*duration, 8 * 1024);
            }
        }
    }
}

#[cfg(test)]
mod gap_tests {
    use std::time::Duration;

    use super::*;

    fn sample(dts: i64, keyframe: bool) -> InSample {
        super::tests::sample(dts, keyframe, false, &super::tests::config())
    }

    #[test]
    fn a_gap_does_not_make_a_part_longer_than_the_target() {
        let mut seg = Segmenter::new(90_000, Duration::from_millis(200), true);
        seg.set_frame_duration(3000);
        let mut out = vec![];
        // Frames 0..3, a 2 s hole, frames again.
        for dts in [0, 3000, 6000, 186_000, 189_000, 192_000, 195_000] {
            seg.push(sample(dts, dts == 0), &mut out).unwrap();
        }
        seg.flush(&mut out).unwrap();
        let target = seg.part_target.unwrap();
        let mut starts = vec![];
        for o in &out {
            if let SegmenterOutput::Part { duration, data, .. } = o {
                assert!(*duration <= target, "{duration} > {target}");
                let mut buf = &data[..];
                let mp4_atom::Any::Moof(moof) =
                    <mp4_atom::Any as mp4_atom::Decode>::decode(&mut buf).unwrap()
                else {
                    panic!()
                };
                starts.push(moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time);
            }
        }
        // The part after the hole starts at its true decode time.
        assert!(starts.contains(&186_000), "{starts:?}");
    }

    #[test]
    fn an_implausible_first_step_does_not_fix_the_part_target() {
        let mut seg = Segmenter::new(90_000, Duration::from_millis(200), true);
        let mut out = vec![];
        // No frame rate known; the first two frames are 5 s apart.
        seg.push(sample(0, true), &mut out).unwrap();
        seg.push(sample(450_000, false), &mut out).unwrap();
        let t = seg.part_target_secs().unwrap();
        assert!((0.19..0.22).contains(&t), "{t}");
    }
}

/// Frames missing the way an overloaded encoder or a publisher loses them:
/// every part the segmenter writes still follows LL-HLS's duration rules,
/// its segments' EXTINFs are the sums of their parts, no frame is lost, and
/// a moved frame is never moved by more than one part target.
#[cfg(test)]
mod overload_tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    /// What the segmenter wrote for one part: its sample's written decode
    /// times and composition offsets, read back from the fragment.
    struct Written {
        msn: u64,
        index: u32,
        duration: i64,
        independent: bool,
        samples: Vec<(i64, i64, u32)>,
    }

    fn read_part(msn: u64, index: u32, duration: i64, independent: bool, data: &[u8]) -> Written {
        let mut buf = data;
        let mp4_atom::Any::Moof(moof) =
            <mp4_atom::Any as mp4_atom::Decode>::decode(&mut buf).unwrap()
        else {
            panic!("not a moof")
        };
        let traf = &moof.traf[0];
        let mut t = traf.tfdt.as_ref().unwrap().base_media_decode_time as i64;
        let mut samples = vec![];
        for e in traf.trun[0].samples.iter() {
            let d = e.duration.unwrap();
            samples.push((t, e.cts.unwrap(), d));
            t += i64::from(d);
        }
        assert_eq!(t - samples[0].0, duration, "trun sums to the part");
        Written {
            msn,
            index,
            duration,
            independent,
            samples,
        }
    }

    /// One input frame: decode time, keyframe, starts a segment.
    type Frame = (i64, bool, bool);

    /// `count` frames of `frame` ticks (optionally rounded to whole
    /// milliseconds, as RTMP does), a keyframe every `gop`; `drops` says
    /// which frames the encoder dropped. A dropped keyframe passes its
    /// boundary to the next frame kept, as the transcoder does.
    fn frames(frame: i64, ms_rounded: bool, gop: usize, drops: &[bool]) -> Vec<Frame> {
        let mut out = vec![];
        let mut boundary = false;
        for (i, &dropped) in drops.iter().enumerate() {
            boundary |= i % gop == 0;
            if dropped && i > 0 {
                continue;
            }
            let exact = i as i64 * frame;
            let dts = if ms_rounded {
                (exact as f64 / 90.0).round() as i64 * 90
            } else {
                exact
            };
            out.push((dts, boundary, boundary && !out.is_empty()));
            boundary = false;
        }
        out
    }

    fn run(frames: &[Frame], hint: Option<i64>, cto: i32) -> (Segmenter, Vec<SegmenterOutput>) {
        let cfg = super::tests::config();
        let mut seg = Segmenter::new(90_000, Duration::from_millis(200), true);
        if let Some(h) = hint {
            seg.set_frame_duration(h);
        }
        let mut out = vec![];
        for &(dts, key, starts) in frames {
            let mut sample = super::tests::sample(dts, key, starts, &cfg);
            sample.composition_offset = cto;
            seg.push(sample, &mut out).unwrap();
        }
        seg.flush(&mut out).unwrap();
        (seg, out)
    }

    fn check(frames: &[Frame], hint: Option<i64>, cto: i32) {
        let (seg, out) = run(frames, hint, cto);
        let target = seg.part_target.unwrap();
        let advertised = playlist_ceil_ms(target as f64 / 90_000.0);
        let mut parts: Vec<Written> = vec![];
        let mut extinf = vec![];
        for o in &out {
            match o {
                SegmenterOutput::Part {
                    msn,
                    index,
                    duration,
                    independent,
                    data,
                    ..
                } => parts.push(read_part(*msn, *index, *duration, *independent, data)),
                SegmenterOutput::SegmentEnd { msn, duration } => extinf.push((*msn, *duration)),
                SegmenterOutput::SegmentStart { .. } => {}
            }
        }
        // Nothing lost, in order.
        let written: Vec<_> = parts.iter().flat_map(|p| p.samples.iter()).collect();
        assert_eq!(written.len(), frames.len(), "every frame is written once");
        for (w, f) in written.iter().zip(frames) {
            let moved = f.0 - w.0;
            assert!(
                (0..=target).contains(&moved),
                "frame at {} written at {}: moved by more than a part",
                f.0,
                w.0
            );
            // The presentation time moves with a frame without a
            // composition offset, and stays for one with.
            if cto == 0 {
                assert_eq!(w.1, 0);
            } else {
                assert_eq!(w.0 + w.1, f.0 + i64::from(cto));
            }
        }
        for pair in written.windows(2) {
            assert!(pair[0].0 < pair[1].0, "decode times go forward");
            assert!(pair[0].0 + i64::from(pair[0].2) <= pair[1].0, "no overlap");
        }
        for (msn, duration) in &extinf {
            let of: Vec<_> = parts.iter().filter(|p| p.msn == *msn).collect();
            let sum: i64 = of.iter().map(|p| p.duration).sum();
            assert_eq!(
                sum, *duration,
                "segment {msn}: EXTINF is the sum of its parts"
            );
            for (i, p) in of.iter().enumerate() {
                assert_eq!(p.index as usize, i);
                let secs = p.duration as f64 / 90_000.0;
                // As a validator sees the playlist: DURATION printed to five
                // decimals against PART-TARGET printed to three.
                let printed = (secs * 1e5).round() / 1e5;
                assert!(
                    printed <= advertised,
                    "part {msn}.{i}: {printed} > {advertised}"
                );
                let last = i + 1 == of.len();
                if !last && !p.independent {
                    assert!(
                        printed >= 0.85 * advertised,
                        "part {msn}.{i}: {printed} < 85% of {advertised}"
                    );
                }
            }
        }
    }

    fn playlist_ceil_ms(secs: f64) -> f64 {
        super::super::playlist::ceil_ms(secs)
    }

    #[test]
    fn every_other_frame_dropped() {
        let drops: Vec<bool> = (0..300).map(|i| i % 2 == 1).collect();
        check(&frames(3000, true, 60, &drops), Some(3000), 0);
    }

    #[test]
    fn three_of_four_frames_dropped() {
        let drops: Vec<bool> = (0..300).map(|i| i % 4 != 0).collect();
        check(&frames(3000, true, 60, &drops), Some(3000), 0);
    }

    #[test]
    fn a_short_hole_is_closed_by_moving_the_next_frame_back() {
        // Frames 5 and 6 dropped: the first part reaches frame 7 past its
        // limit, ends at the limit, and frame 7 is written there.
        let drops: Vec<bool> = (0..60).map(|i| i == 5 || i == 6).collect();
        let (seg, out) = run(&frames(3000, false, 60, &drops), Some(3000), 0);
        let target = seg.part_target.unwrap();
        let starts: Vec<i64> = out
            .iter()
            .filter_map(|o| match o {
                SegmenterOutput::Part { data, duration, .. } => {
                    Some(read_part(0, 0, *duration, false, data).samples[0].0)
                }
                _ => None,
            })
            .collect();
        assert_eq!(starts[1], target, "{starts:?}");
        check(&frames(3000, false, 60, &drops), Some(3000), 0);
    }

    #[test]
    fn a_stall_longer_than_a_part_stays_a_hole() {
        // One second without frames mid-segment.
        let drops: Vec<bool> = (0..120).map(|i| (10..40).contains(&i)).collect();
        let f = frames(3000, false, 120, &drops);
        let (_, out) = run(&f, Some(3000), 0);
        // Frame 40 is written at its own time: nothing is moved a second.
        assert!(out.iter().any(|o| matches!(o,
            SegmenterOutput::Part { data, duration, .. }
                if read_part(0, 0, *duration, false, data).samples[0].0 == 40 * 3000)));
        check(&f, Some(3000), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn parts_stay_conformant_when_frames_go_missing(
            frame in prop::sample::select(vec![1500i64, 3000, 3003, 3600, 6000, 18_000]),
            ms_rounded in any::<bool>(),
            hinted in any::<bool>(),
            gop in prop::sample::select(vec![15usize, 30, 48, 60, 120]),
            // Runs of kept and dropped frames.
            runs in prop::collection::vec((1usize..20, 0usize..12), 1..40),
            cto in prop::sample::select(vec![0i32, 6000]),
        ) {
            let mut drops = vec![];
            for (kept, dropped) in runs {
                drops.extend(std::iter::repeat_n(false, kept));
                drops.extend(std::iter::repeat_n(true, dropped));
            }
            let f = frames(frame, ms_rounded, gop, &drops);
            check(&f, hinted.then_some(frame), cto);
        }
    }
}
