//! Packages one broadcast: bus frames of every track in, parts and segments
//! per track out.
//!
//! Sans-IO. It owns the decisions that span tracks:
//! - **One output timeline.** Input timestamps are shifted by one offset per
//!   publisher session, chosen so that a reconnecting publisher's timestamps
//!   (which restart at 0) continue after the last session; every track
//!   shares it, so A/V sync survives the reconnect. A jump inside a session
//!   (a paused encoder, a reset clock) is folded out of the timeline the
//!   same way.
//! - **Audio by sample count.** AAC frame times are counted in samples
//!   (exact), re-anchored on a gap, and frames running more than two frames
//!   ahead of their timestamps are dropped, so audio cannot drift from video.
//! - **Aligned, contiguous segments.** The first video track leads: its
//!   group starts (keyframes) decide segment boundaries. Every other track
//!   (audio, and the other rungs of a transcoded ladder) is held until the
//!   leader has reached its time, then cut at the leader's boundaries. Every track's
//!   media sequence numbers are contiguous; a follower takes the leader's
//!   number for its first segment and then cuts at each next boundary, so
//!   `audio 17` and `video 17` cover the same time.
//! - **One target duration, never exceeded.** It is fixed from the first
//!   segment (at least the segment target, at most [`MAX_TARGET_DURATION`])
//!   and shared by every playlist. A track whose keyframes are further apart
//!   is cut without one before a segment would round above it, and so is a
//!   segment over [`MAX_SEGMENT_BYTES`]: memory stays bounded whatever the
//!   publisher sends.
//!
//! Nothing here fails: a frame that cannot be packaged is dropped with a
//! [`PackagerNotice`], and other tracks carry on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::segmenter::{InSample, Segmenter, SegmenterOutput};
use crate::bus::{FrameEvent, TrackKind};
use crate::media::CodecConfig;
use crate::time::{MediaTime, Timescale};

/// Audio held for the leader beyond this span of media is released anyway
/// (video stalled or absent).
const MAX_HOLD: Duration = Duration::from_millis(1000);
/// ...and beyond this many frames, whatever their timestamps say.
const MAX_HELD_FRAMES: usize = 1024;
/// The longest target duration: a source with keyframes further apart gets
/// segments cut between keyframes.
pub const MAX_TARGET_DURATION: u64 = 10;
/// A segment is cut (at any frame) before it holds more than this.
pub const MAX_SEGMENT_BYTES: usize = 32 << 20;
/// A reconnecting publisher's frames start this far after the last session
/// ended, so its tracks' slightly different first timestamps all land after
/// every track's end.
const RECONNECT_GAP: Duration = Duration::from_secs(1);
/// A forward step larger than this inside one session is a jump, folded out.
const MAX_FORWARD_STEP: Duration = Duration::from_secs(5);
/// A backward step larger than this inside one session is a clock reset.
const MAX_BACKWARD_STEP: Duration = Duration::from_secs(1);
/// A derived wall-clock time further than this from the ingest clock moves
/// the anchor (the publisher paused or burst without reconnecting).
const MAX_CLOCK_DRIFT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Output {
    pub track: usize,
    pub output: SegmenterOutput,
}

/// A dropped frame or a repaired timeline, worth a (rate-limited) log line.
#[derive(Debug, PartialEq)]
pub enum PackagerNotice {
    /// A frame was dropped: its time went backwards, or it could not be written.
    Dropped { track: usize, reason: String },
    /// An audio frame was dropped to keep audio in sync with its timestamps.
    AudioAhead { track: usize },
    /// The publisher's timestamps jumped; the gap was folded out.
    TimestampJump { track: usize, seconds: f64 },
}

struct Track {
    kind: TrackKind,
    segmenter: Segmenter,
    config: Option<Arc<CodecConfig>>,
    session: Option<u32>,
    /// Next expected audio decode time (ticks), for sample counting.
    audio_next: Option<i64>,
    /// One AAC frame in this track's ticks.
    audio_frame: i64,
    /// The track is flushed (publisher gone) and waits for a new session.
    idle: bool,
    /// Interrupted while frames of it were held for the leader: flushed
    /// once the last of them is released.
    flush_when_released: bool,
}

struct Session {
    id: u32,
    /// Added to input times to place them on the output timeline.
    offset: MediaTime,
    /// Wall clock at ingest of one sample, and its output time: every
    /// track's PROGRAM-DATE-TIME derives from this one mapping.
    anchor: Option<(SystemTime, MediaTime)>,
}

impl Session {
    /// The wall-clock time of a sample decoded at output time `time`,
    /// ingested at `wallclock`: derived from the session's anchor, so all
    /// tracks agree.
    fn date(&mut self, wallclock: SystemTime, time: MediaTime) -> SystemTime {
        if let Some((w0, t0)) = self.anchor {
            let delta = nanos(time) - nanos(t0);
            if let Some(derived) = offset_nanos(w0, delta) {
                let drift = match derived.duration_since(wallclock) {
                    Ok(d) => d,
                    Err(e) => e.duration(),
                };
                if drift <= MAX_CLOCK_DRIFT {
                    return derived;
                }
            }
        }
        self.anchor = Some((wallclock, time));
        wallclock
    }
}

/// A leader segment start: followers cut at the same time, with the same
/// number and discontinuity.
#[derive(Clone, Copy, Debug)]
struct Boundary {
    msn: u64,
    time: MediaTime,
    discontinuity: bool,
}

pub struct StreamPackager {
    part_target: Duration,
    segment_target: Duration,
    frame_rate_hint: Option<f64>,
    tracks: Vec<Track>,
    leader: Option<usize>,
    boundaries: VecDeque<Boundary>,
    session: Option<Session>,
    held: VecDeque<(usize, FrameEvent, MediaTime)>,
    target_duration: Option<u64>,
    notices: Vec<PackagerNotice>,
}

impl StreamPackager {
    pub fn new(part_target: Duration, segment_target: Duration) -> StreamPackager {
        StreamPackager {
            part_target,
            segment_target,
            frame_rate_hint: None,
            tracks: Vec::new(),
            leader: None,
            boundaries: VecDeque::new(),
            session: None,
            held: VecDeque::new(),
            target_duration: None,
            notices: Vec::new(),
        }
    }

    /// The publisher's stated frame rate, used when the SPS has none.
    pub fn set_frame_rate_hint(&mut self, fps: Option<f64>) {
        self.frame_rate_hint = fps.filter(|f| (1.0..=240.0).contains(f));
    }

    /// Adds a track; returns its index. The first video track leads.
    pub fn add_track(&mut self, kind: TrackKind, timescale: Timescale) -> usize {
        let idx = self.tracks.len();
        self.tracks.push(Track {
            kind,
            segmenter: Segmenter::new(timescale.hz(), self.part_target, kind == TrackKind::Video),
            config: None,
            session: None,
            audio_next: None,
            audio_frame: 1024,
            idle: false,
            flush_when_released: false,
        });
        if kind == TrackKind::Video && self.leader.is_none() {
            self.leader = Some(idx);
        }
        idx
    }

    /// The decoder configuration a track is currently packaged with.
    pub fn config(&self, track: usize) -> Option<&Arc<CodecConfig>> {
        self.tracks.get(track)?.config.as_ref()
    }

    pub fn segmenter(&self, track: usize) -> &Segmenter {
        &self.tracks[track].segmenter
    }

    /// EXT-X-TARGETDURATION for every playlist of the stream, once the first
    /// segment is complete.
    pub fn target_duration(&self) -> Option<u64> {
        self.target_duration
    }

    #[cfg(test)]
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }

    pub fn take_notices(&mut self) -> Vec<PackagerNotice> {
        std::mem::take(&mut self.notices)
    }

    /// Takes one frame of `track`.
    pub fn push(&mut self, track: usize, ev: FrameEvent) -> Vec<Output> {
        let mut out = Vec::new();
        let time = self.output_time(track, &ev);
        let follows = self.follows(track);
        if follows {
            self.held.push_back((track, ev, time));
            self.release_held(false, &mut out);
        } else {
            self.process(track, ev, time, &mut out);
            if Some(track) == self.leader {
                self.release_held(false, &mut out);
            }
        }
        self.fix_target_duration(&out);
        out
    }

    /// The publisher left: write out what each track holds.
    pub fn interrupt(&mut self, track: usize) -> Vec<Output> {
        let mut out = Vec::new();
        if Some(track) == self.leader {
            // Audio waiting for video that will not come: let it through.
            self.release_held(true, &mut out);
        } else if self.held.iter().any(|h| h.0 == track) {
            // This track's frames still held for the leader are its last
            // ones: it is flushed once they are released, in their place,
            // so they end its last segment rather than follow its flush.
            self.tracks[track].flush_when_released = true;
            return out;
        }
        self.flush_track(track, &mut out);
        out
    }

    /// The broadcast ended: flush every track.
    pub fn finish(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        self.release_held(true, &mut out);
        for t in 0..self.tracks.len() {
            self.flush_track(t, &mut out);
        }
        // A stream that ended before its first cut still gets a target
        // duration, so its (ended) playlists can be served.
        self.fix_target_duration(&out);
        out
    }

    /// Every track but the leader follows it: audio, and the other rungs of
    /// a transcoded ladder (whose IDRs sit at the leader's boundaries).
    fn follows(&self, track: usize) -> bool {
        self.leader.is_some_and(|l| l != track)
    }

    /// Fixes the target duration from the first segment of the leader (or
    /// of any track when there is no leader) that ended at a cut, not at a
    /// flush: a publisher that drops after a moment must not fix it.
    fn fix_target_duration(&mut self, out: &[Output]) {
        if self.target_duration.is_some() {
            return;
        }
        for o in out {
            if let SegmenterOutput::SegmentEnd { duration, .. } = o.output
                && self.leader.is_none_or(|l| l == o.track)
            {
                let secs = duration as f64 / f64::from(self.tracks[o.track].segmenter.timescale());
                let min = self.segment_target.as_secs_f64().ceil().max(1.0) as u64;
                let max = MAX_TARGET_DURATION.max(min);
                self.target_duration = Some((secs.round() as u64).clamp(min, max));
                return;
            }
        }
    }

    /// The longest a segment may grow (in ticks of `scale`) before it is cut
    /// without a keyframe: its duration must round to at most the target.
    fn segment_cap(&self, scale: Timescale) -> i64 {
        let td = self.target_duration.unwrap_or_else(|| {
            MAX_TARGET_DURATION.max(self.segment_target.as_secs_f64().ceil() as u64)
        });
        let secs = td as f64 + 0.49;
        (secs * f64::from(scale.hz())) as i64
    }

    fn flush_track(&mut self, track: usize, out: &mut Vec<Output>) {
        let t = &mut self.tracks[track];
        if t.idle {
            return;
        }
        t.idle = true;
        t.audio_next = None;
        let mut o = Vec::new();
        let result = t.segmenter.flush(&mut o);
        out.extend(o.into_iter().map(|output| Output { track, output }));
        if let Err(e) = result {
            self.notices.push(PackagerNotice::Dropped {
                track,
                reason: e.to_string(),
            });
        }
    }

    /// The furthest any track got, on the output timeline.
    fn timeline_end(&self) -> Option<MediaTime> {
        self.tracks
            .iter()
            .filter_map(|t| {
                let s = &t.segmenter;
                s.end_estimate().map(|e| MediaTime::new(e, timescale_of(s)))
            })
            .max()
    }

    /// Maps a frame's decode time onto the output timeline: a new mapping at
    /// the first frame of each publisher session, and a corrected one when
    /// the timestamps jump inside a session.
    fn output_time(&mut self, track: usize, ev: &FrameEvent) -> MediaTime {
        let session = ev.group.session;
        let input = ev.frame.dts;
        if self.session.as_ref().is_none_or(|s| s.id != session) {
            let offset = match (&self.session, self.timeline_end()) {
                (Some(_), Some(end)) => {
                    let gap = MediaTime::from_duration(RECONNECT_GAP, end.timescale());
                    (end + gap).rescale(input.timescale()) - input
                }
                _ => MediaTime::zero(input.timescale()),
            };
            self.session = Some(Session {
                id: session,
                offset,
                anchor: None,
            });
        }
        let Some(s) = self.session.as_mut() else {
            unreachable!("set above");
        };
        let time = input + s.offset;
        // A jump within the session: only judged against this track's own
        // progress in this session.
        let t = &self.tracks[track];
        if t.idle || t.session != Some(session) {
            return time;
        }
        let (Some(last), Some(end)) = (t.segmenter.last_dts(), t.segmenter.end_estimate()) else {
            return time;
        };
        let scale = timescale_of(&t.segmenter);
        let last = MediaTime::new(last, scale);
        let end = MediaTime::new(end, scale);
        let forward = time > end + MediaTime::from_duration(MAX_FORWARD_STEP, scale);
        let backward = time + MediaTime::from_duration(MAX_BACKWARD_STEP, scale) < last;
        if !(forward || backward) {
            return time;
        }
        // Continue right where this track ends; every track shares the
        // correction, as they share the clock that jumped.
        let correction = end.rescale(input.timescale()) - time.rescale(input.timescale());
        s.offset = s.offset + correction;
        self.notices.push(PackagerNotice::TimestampJump {
            track,
            seconds: (time - end).as_secs_f64(),
        });
        input + s.offset
    }

    /// Where the leader has got to, if it is running.
    fn leader_at(&self) -> Option<MediaTime> {
        let l = self.leader?;
        let t = &self.tracks[l];
        if t.idle {
            return None;
        }
        let s = &t.segmenter;
        s.last_dts().map(|d| MediaTime::new(d, timescale_of(s)))
    }

    /// Processes held follower frames the leader has caught up with (all of
    /// them when `all`, or when the hold grew past its bounds).
    fn release_held(&mut self, all: bool, out: &mut Vec<Output>) {
        while let Some(&(_, _, time)) = self.held.front() {
            let newest = self.held.back().map_or(time, |h| h.2);
            let overdue = newest - time > MediaTime::from_duration(MAX_HOLD, newest.timescale())
                || self.held.len() > MAX_HELD_FRAMES;
            if !(all || overdue || self.leader_at().is_some_and(|at| time <= at)) {
                return;
            }
            let Some((track, ev, time)) = self.held.pop_front() else {
                return;
            };
            // An interrupted follower is flushed after its last held frame.
            let flush_after =
                self.tracks[track].flush_when_released && !self.held.iter().any(|h| h.0 == track);
            // At the start of a session, audio from before the leader's first
            // keyframe is dropped so both tracks start together.
            let follower_starting = self.tracks[track].segmenter.open_segment_start().is_none();
            if follower_starting
                && !all
                && !overdue
                && let Some(l) = self.leader
                && let Some(start) = self.tracks[l].segmenter.open_segment_start()
                && time < MediaTime::new(start, timescale_of(&self.tracks[l].segmenter))
            {
                if flush_after {
                    self.tracks[track].flush_when_released = false;
                    self.flush_track(track, out);
                }
                continue;
            }
            self.process(track, ev, time, out);
            if flush_after {
                self.tracks[track].flush_when_released = false;
                self.flush_track(track, out);
            }
        }
    }

    fn process(&mut self, track: usize, ev: FrameEvent, time: MediaTime, out: &mut Vec<Output>) {
        let session = ev.group.session;
        let frame_rate_hint = self.frame_rate_hint;
        let is_leader = Some(track) == self.leader;
        let follows = self.follows(track);
        let leader_msn = self.leader.map(|l| self.tracks[l].segmenter.current_msn());
        let cap = self.segment_cap(timescale_of(&self.tracks[track].segmenter));
        let boundary = self.passed_boundary(track, time);
        let t = &mut self.tracks[track];
        let scale = timescale_of(&t.segmenter);

        let had_config = t.config.is_some();
        let new_config = t.config.as_ref().is_none_or(|c| **c != *ev.group.config);
        if new_config {
            t.config = Some(ev.group.config.clone());
            match &*ev.group.config {
                CodecConfig::Aac(a) => {
                    // One AAC frame in this track's ticks (the timescale was
                    // fixed by the first configuration; a later one may have
                    // another sample rate).
                    let ticks = i64::from(a.samples_per_frame) * i64::from(scale.hz())
                        / i64::from(a.sample_rate.max(1));
                    t.audio_frame = ticks.max(1);
                    t.segmenter.set_frame_duration(t.audio_frame);
                }
                CodecConfig::Opus(_) => {}
                video => {
                    let parsed = match video {
                        CodecConfig::H264(v) => v.info.frame_rate,
                        _ => None,
                    };
                    if let Some(fps) = parsed.or(frame_rate_hint) {
                        t.segmenter
                            .set_frame_duration((f64::from(scale.hz()) / fps).round() as i64);
                    }
                }
            }
        }
        // A new publisher session, or new codec parameters, is a discontinuity.
        let restart = t.session.is_some_and(|s| s != session);
        let mut discontinuity = restart || (new_config && had_config);
        t.session = Some(session);

        // Decode time on this track's timescale.
        let mut dts = time.rescale(scale).ticks();
        if t.kind == TrackKind::Audio {
            let frame = t.audio_frame;
            match t.audio_next {
                Some(next) if !discontinuity && !t.idle => {
                    if dts < next.saturating_sub(2 * frame) {
                        // The timestamps say this frame is early: the counted
                        // timeline ran ahead. Drop it to stay in sync.
                        self.notices.push(PackagerNotice::AudioAhead { track });
                        return;
                    }
                    if dts <= next.saturating_add(frame) {
                        dts = next;
                    }
                }
                _ => {}
            }
            t.audio_next = Some(dts.saturating_add(frame));
        }
        let composition_offset = (ev.frame.pts - ev.frame.dts).rescale(scale).ticks();
        // A segment's date is that of its first presentation time, the time
        // players place it by (for video that reorders, after its decode
        // time), from the decode time it is written with (for audio, counted
        // in samples, not the publisher's rounded timestamp).
        let program_date_time = match self.session.as_mut() {
            Some(s) => {
                let decoded_at = s.date(ev.frame.wallclock, MediaTime::new(dts, scale));
                let reorder = nanos(MediaTime::new(composition_offset, scale));
                let presented_at = offset_nanos(decoded_at, reorder).unwrap_or(decoded_at);
                whole_millis(presented_at, t.kind)
            }
            None => ev.frame.wallclock,
        };

        let opening = t.idle || !t.segmenter.has_open_segment();
        let open_start = t.segmenter.open_segment_start();
        // Cut before the segment would round above the target duration, or
        // grow past the byte cap, keyframe or not.
        let too_long = open_start.is_some_and(|s| {
            dts.saturating_sub(s)
                .saturating_add(t.segmenter.frame_estimate())
                > cap
        });
        let too_big = t.segmenter.open_bytes() + ev.frame.data.len() > MAX_SEGMENT_BYTES;
        let forced = !opening && (too_long || too_big);
        // Half a frame of tolerance: a GOP of 0.99 s meets a 1 s target.
        let elapsed = open_start.map_or(0, |s| dts - s) + t.segmenter.frame_estimate() / 2;
        let target = MediaTime::from_duration(self.segment_target, scale).ticks();
        let part_target = MediaTime::from_duration(self.part_target, scale).ticks();
        let mut msn = None;
        if follows && t.kind == TrackKind::Video && (opening || discontinuity) && !ev.frame.keyframe
        {
            // A video follower starts at a keyframe, like the leader.
            self.notices.push(PackagerNotice::Dropped {
                track,
                reason: "waiting for a keyframe to start".into(),
            });
            return;
        }
        let starts_segment = if !follows {
            // Groups start at the source's keyframes, or at a transcoded
            // ladder's aligned IDRs (not at an on-demand one).
            forced || (ev.group_start && (opening || discontinuity || elapsed >= target))
        } else if opening || discontinuity {
            // A follower's first segment takes the leader's number; later
            // ones continue its own (numbers never skip).
            msn = leader_msn;
            true
        } else if let Some(b) = boundary
            && match t.kind {
                TrackKind::Video => ev.group_start,
                TrackKind::Audio => {
                    t.segmenter.part_ends_before(dts)
                        || dts - b.time.rescale(scale).ticks() > part_target
                }
            }
        {
            // A video follower (another rung) cuts at its own IDR for the
            // boundary, which may come a frame or two after the leader's
            // keyframe decode time (a bypassed leader with B-frames): never
            // on the P-frames in between.
            //
            // Audio cuts at the first part boundary from the leader's on
            // (at most a part later), so its segments are whole parts: a
            // short tail part (a frame or two of AAC where 1 s is not a
            // whole number of frames) is one hls.js skips when the next
            // segment's first part is out, leaving a hole in the audio
            // buffer that can stall playback.
            discontinuity |= b.discontinuity;
            true
        } else {
            forced
        };
        t.idle = false;

        let sample = InSample {
            dts,
            composition_offset: i32::try_from(composition_offset).unwrap_or(0),
            keyframe: ev.frame.keyframe,
            data: ev.frame.data,
            program_date_time,
            received: ev.frame.received,
            starts_segment,
            discontinuity: discontinuity && starts_segment,
            config: ev.group.config.clone(),
            msn,
        };
        let mut o = Vec::new();
        let result = t.segmenter.push(sample, &mut o);
        if let Err(e) = result {
            self.notices.push(PackagerNotice::Dropped {
                track,
                reason: e.to_string(),
            });
        } else if is_leader && t.segmenter.open_segment_start() == Some(dts) {
            // This sample opens the leader's next segment: followers cut there.
            let msn = t.segmenter.current_msn();
            if self.boundaries.back().is_none_or(|b| b.msn < msn) {
                self.boundaries.push_back(Boundary {
                    msn,
                    time: MediaTime::new(dts, scale),
                    discontinuity: discontinuity && !restart,
                });
                while self.boundaries.len() > 64 {
                    self.boundaries.pop_front();
                }
            }
        }
        out.extend(o.into_iter().map(|output| Output { track, output }));
    }

    /// For a follower at `time`: the leader boundary that starts its next
    /// segment, if `time` has reached it.
    fn passed_boundary(&self, track: usize, time: MediaTime) -> Option<Boundary> {
        let next = self.tracks[track].segmenter.current_msn() + 1;
        self.boundaries
            .iter()
            .find(|b| b.msn == next)
            .filter(|b| b.time <= time)
            .copied()
    }
}

/// A date on a whole millisecond, the precision of the playlists (and of
/// hls.js, which places audio against video by the two dates): audio's
/// rounded down, video's up, so audio is never placed after its media. A
/// segment placed later than its media ends after the audio buffer does,
/// and hls.js, having skipped the segment's first part at start-up, waits
/// for that part instead of loading the next segment: a stall.
fn whole_millis(at: SystemTime, kind: TrackKind) -> SystemTime {
    let Ok(since) = at.duration_since(SystemTime::UNIX_EPOCH) else {
        return at;
    };
    let sub_milli = Duration::from_nanos(u64::from(since.subsec_nanos() % 1_000_000));
    if sub_milli.is_zero() {
        return at;
    }
    let floor = at - sub_milli;
    match kind {
        TrackKind::Audio => floor,
        TrackKind::Video => floor + Duration::from_millis(1),
    }
}

/// A media time in nanoseconds, exact to the nanosecond whatever its
/// timescale.
fn nanos(t: MediaTime) -> i128 {
    i128::from(t.ticks()) * 1_000_000_000 / i128::from(t.timescale().hz())
}

/// `at` moved by a signed number of nanoseconds.
fn offset_nanos(at: SystemTime, delta: i128) -> Option<SystemTime> {
    let d = Duration::from_nanos(u64::try_from(delta.unsigned_abs()).ok()?);
    if delta >= 0 {
        at.checked_add(d)
    } else {
        at.checked_sub(d)
    }
}

fn timescale_of(s: &Segmenter) -> Timescale {
    Timescale::new(s.timescale()).unwrap_or(Timescale::MPEG)
}
