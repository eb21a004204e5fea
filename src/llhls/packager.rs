//! Packages one broadcast: bus frames of every track in, parts and segments
//! per track out.
//!
//! Sans-IO. It owns the decisions that span tracks:
//! - **One output timeline.** Input timestamps are shifted by one offset per
//!   publisher session, chosen so that a reconnecting publisher's timestamps
//!   (which restart at 0) continue where the last session ended; every track
//!   shares it, so A/V sync survives the reconnect.
//! - **Audio by sample count.** AAC frame times are counted in samples at the
//!   track's own rate (exact), re-anchored on a gap, and frames running more
//!   than two frames ahead of their timestamps are dropped, so audio cannot
//!   drift from video.
//! - **Aligned segments.** The first video track leads: its keyframes decide
//!   segment boundaries. Audio is held until video has reached its time, then
//!   cut at the leader's boundaries with the leader's media sequence numbers,
//!   so `audio 17` and `video 17` cover the same time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::segmenter::{InSample, Segmenter, SegmenterError, SegmenterOutput};
use crate::bus::{FrameEvent, TrackKind};
use crate::media::CodecConfig;
use crate::time::{MediaTime, Timescale};

/// Audio held for the leader beyond this span of media is released anyway
/// (video stalled or absent).
const MAX_HOLD: Duration = Duration::from_millis(1000);

#[derive(Debug)]
pub struct Output {
    pub track: usize,
    pub output: SegmenterOutput,
}

/// Things worth a (rate-limited) log line.
#[derive(Debug, PartialEq, Eq)]
pub enum PackagerNotice {
    NonMonotonic { track: usize },
    AudioAhead { track: usize },
}

struct Track {
    kind: TrackKind,
    segmenter: Segmenter,
    config: Option<Arc<CodecConfig>>,
    session: Option<u32>,
    /// Next expected audio decode time (ticks), for sample counting.
    audio_next: Option<i64>,
    samples_per_frame: i64,
    /// The track is flushed (publisher gone) and waits for a new session.
    idle: bool,
}

struct Session {
    id: u32,
    /// Added to input times to place them on the output timeline.
    offset: MediaTime,
    /// Wall clock at ingest of one sample, and its output time: every
    /// track's PROGRAM-DATE-TIME derives from this one mapping.
    anchor: Option<(SystemTime, MediaTime)>,
}

/// A derived wall-clock time further than this from the ingest clock moves
/// the anchor (the publisher paused or burst without reconnecting).
const MAX_CLOCK_DRIFT: Duration = Duration::from_secs(1);

pub struct StreamPackager {
    part_target: Duration,
    segment_target: Duration,
    frame_rate_hint: Option<f64>,
    tracks: Vec<Track>,
    leader: Option<usize>,
    /// The leader's segment starts: (msn, output time), oldest first.
    boundaries: VecDeque<(u64, MediaTime)>,
    session: Option<Session>,
    held: VecDeque<(usize, FrameEvent, MediaTime)>,
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
            segmenter: Segmenter::new(timescale.hz(), self.part_target),
            config: None,
            session: None,
            audio_next: None,
            samples_per_frame: 1024,
            idle: false,
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

    pub fn take_notices(&mut self) -> Vec<PackagerNotice> {
        std::mem::take(&mut self.notices)
    }

    /// Takes one frame of `track`.
    pub fn push(&mut self, track: usize, ev: FrameEvent) -> Result<Vec<Output>, SegmenterError> {
        let mut out = Vec::new();
        let time = self.output_time(&ev);
        if Some(track) != self.leader
            && self.leader.is_some()
            && self.tracks[track].kind == TrackKind::Audio
        {
            self.held.push_back((track, ev, time));
            self.release_held(false, &mut out)?;
        } else {
            let is_leader = Some(track) == self.leader;
            self.process(track, ev, time, &mut out)?;
            if is_leader {
                self.release_held(false, &mut out)?;
            }
        }
        Ok(out)
    }

    /// The publisher left: write out what each track holds.
    pub fn interrupt(&mut self, track: usize) -> Result<Vec<Output>, SegmenterError> {
        let mut out = Vec::new();
        if Some(track) == self.leader {
            // Audio waiting for video that will not come: let it through.
            self.release_held(true, &mut out)?;
        }
        self.flush_track(track, &mut out)?;
        Ok(out)
    }

    /// The broadcast ended: flush every track.
    pub fn finish(&mut self) -> Result<Vec<Output>, SegmenterError> {
        let mut out = Vec::new();
        self.release_held(true, &mut out)?;
        for t in 0..self.tracks.len() {
            self.flush_track(t, &mut out)?;
        }
        Ok(out)
    }

    fn flush_track(&mut self, track: usize, out: &mut Vec<Output>) -> Result<(), SegmenterError> {
        let t = &mut self.tracks[track];
        if t.idle {
            return Ok(());
        }
        t.idle = true;
        t.audio_next = None;
        let mut o = Vec::new();
        t.segmenter.flush(&mut o)?;
        out.extend(o.into_iter().map(|output| Output { track, output }));
        Ok(())
    }

    /// Maps a frame's decode time onto the output timeline, starting a new
    /// session mapping at the first frame of each publisher session.
    fn output_time(&mut self, ev: &FrameEvent) -> MediaTime {
        let session = ev.group.session;
        if self.session.as_ref().is_none_or(|s| s.id != session) {
            let offset = match &self.session {
                None => MediaTime::zero(Timescale::MILLIS),
                Some(_) => {
                    // Continue right after the furthest any track got.
                    let end = self
                        .tracks
                        .iter()
                        .filter_map(|t| {
                            let s = &t.segmenter;
                            s.end_estimate().map(|e| MediaTime::new(e, timescale_of(s)))
                        })
                        .max()
                        .unwrap_or(MediaTime::zero(Timescale::MILLIS));
                    end.rescale(ev.frame.dts.timescale()) - ev.frame.dts
                }
            };
            self.session = Some(Session {
                id: session,
                offset,
                anchor: None,
            });
        }
        let offset = self
            .session
            .as_ref()
            .map_or(MediaTime::zero(Timescale::MILLIS), |s| s.offset);
        ev.frame.dts + offset
    }

    /// The wall-clock time of a sample at output time `time`, ingested at
    /// `wallclock`: derived from the session's anchor, so all tracks agree.
    fn program_date_time(&mut self, wallclock: SystemTime, time: MediaTime) -> SystemTime {
        let Some(session) = self.session.as_mut() else {
            return wallclock;
        };
        if let Some((w0, t0)) = session.anchor {
            let delta = time - t0;
            let derived = if delta.ticks() >= 0 {
                w0.checked_add(delta.to_duration())
            } else {
                w0.checked_sub(MediaTime::new(-delta.ticks(), delta.timescale()).to_duration())
            };
            if let Some(derived) = derived {
                let drift = match derived.duration_since(wallclock) {
                    Ok(d) => d,
                    Err(e) => e.duration(),
                };
                if drift <= MAX_CLOCK_DRIFT {
                    return derived;
                }
            }
        }
        session.anchor = Some((wallclock, time));
        wallclock
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
    /// them when `all`, or when the hold grew past `MAX_HOLD`).
    fn release_held(&mut self, all: bool, out: &mut Vec<Output>) -> Result<(), SegmenterError> {
        while let Some(&(_, _, time)) = self.held.front() {
            let newest = self.held.back().map_or(time, |h| h.2);
            let overdue = newest - time > MediaTime::from_duration(MAX_HOLD, newest.timescale());
            if !(all || overdue || self.leader_at().is_some_and(|at| time <= at)) {
                return Ok(());
            }
            let Some((track, ev, time)) = self.held.pop_front() else {
                return Ok(());
            };
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
                continue;
            }
            self.process(track, ev, time, out)?;
        }
        Ok(())
    }

    fn process(
        &mut self,
        track: usize,
        ev: FrameEvent,
        time: MediaTime,
        out: &mut Vec<Output>,
    ) -> Result<(), SegmenterError> {
        let session = ev.group.session;
        let program_date_time = self.program_date_time(ev.frame.wallclock, time);
        let target_duration = self.segment_target;
        let frame_rate_hint = self.frame_rate_hint;
        let is_leader = Some(track) == self.leader;
        let follows =
            self.leader.is_some() && !is_leader && self.tracks[track].kind == TrackKind::Audio;
        let leader_msn = self.leader.map(|l| self.tracks[l].segmenter.current_msn());
        let boundary = self.passed_boundary(track, time);
        let t = &mut self.tracks[track];
        let scale = timescale_of(&t.segmenter);

        let had_config = t.config.is_some();
        let new_config = t.config.as_ref().is_none_or(|c| **c != *ev.group.config);
        if new_config {
            t.config = Some(ev.group.config.clone());
            match &*ev.group.config {
                CodecConfig::Aac(a) => {
                    t.samples_per_frame = i64::from(a.samples_per_frame);
                    t.segmenter
                        .set_frame_duration(i64::from(a.samples_per_frame));
                }
                CodecConfig::H264(v) => {
                    if let Some(fps) = v.info.frame_rate.or(frame_rate_hint) {
                        t.segmenter
                            .set_frame_duration((f64::from(scale.hz()) / fps).round() as i64);
                    }
                }
            }
        }
        // A new publisher session, or new codec parameters, is a discontinuity.
        let restart = t.session.is_some_and(|s| s != session);
        let discontinuity = restart || (new_config && had_config);
        t.session = Some(session);

        // Decode time on this track's timescale.
        let mut dts = time.rescale(scale).ticks();
        if t.kind == TrackKind::Audio {
            let frame = t.samples_per_frame;
            match t.audio_next {
                Some(next) if !discontinuity && !t.idle => {
                    if dts < next - 2 * frame {
                        // The timestamps say this frame is early: the counted
                        // timeline ran ahead. Drop it to stay in sync.
                        self.notices.push(PackagerNotice::AudioAhead { track });
                        return Ok(());
                    }
                    if dts <= next + frame {
                        dts = next;
                    }
                }
                _ => {}
            }
            t.audio_next = Some(dts + frame);
        }
        let composition_offset = (ev.frame.pts - ev.frame.dts).rescale(scale).ticks();

        let opening = t.idle || !t.segmenter.has_open_segment();
        let elapsed = t.segmenter.open_segment_start().map_or(0, |s| dts - s);
        let target = MediaTime::from_duration(target_duration, scale).ticks();
        let mut msn = None;
        let starts_segment = if !follows {
            ev.frame.keyframe && (opening || discontinuity || elapsed >= target)
        } else if opening || discontinuity {
            msn = leader_msn;
            true
        } else if let Some(b) = boundary {
            msn = Some(b);
            true
        } else {
            // The leader stalled: do not let one audio segment grow forever.
            elapsed >= (3 * target).max(i64::from(scale.hz()) * 10)
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
        match t.segmenter.push(sample, &mut o) {
            Ok(()) => {}
            Err(SegmenterError::NonMonotonic { .. }) => {
                self.notices.push(PackagerNotice::NonMonotonic { track });
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        if is_leader && t.segmenter.open_segment_start() == Some(dts) {
            // This sample opens the leader's next segment: followers cut there.
            let msn = t.segmenter.current_msn();
            if self.boundaries.back().is_none_or(|b| b.0 < msn) {
                self.boundaries.push_back((msn, MediaTime::new(dts, scale)));
                while self.boundaries.len() > 64 {
                    self.boundaries.pop_front();
                }
            }
        }
        out.extend(o.into_iter().map(|output| Output { track, output }));
        Ok(())
    }

    /// For a follower at `time`: the MSN of a leader boundary it has passed.
    fn passed_boundary(&self, track: usize, time: MediaTime) -> Option<u64> {
        let current = self.tracks[track].segmenter.current_msn();
        self.boundaries
            .iter()
            .rev()
            .find(|(msn, start)| *msn > current && *start <= time)
            .map(|(msn, _)| *msn)
    }
}

fn timescale_of(s: &Segmenter) -> Timescale {
    Timescale::new(s.timescale()).unwrap_or(Timescale::MPEG)
}
